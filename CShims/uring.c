// io_uring through liburing. struct io_uring lives on the heap behind an opaque pointer
// because its fields point into memory shared with the kernel and it must never move.
#include "CShims.h"
#include <errno.h>
#include <stdlib.h>
#include <liburing.h>

struct sw_ring { struct io_uring ring; };

sw_ring *sw_uring_create(unsigned entries, int *err) {
    sw_ring *r = calloc(1, sizeof(*r));
    if (!r) { *err = ENOMEM; return NULL; }
    int rc = io_uring_queue_init(entries, &r->ring, 0);
    if (rc < 0) { free(r); *err = -rc; return NULL; }
    *err = 0;
    return r;
}

void sw_uring_destroy(sw_ring *r) {
    if (!r) return;
    io_uring_queue_exit(&r->ring);
    free(r);
}

unsigned sw_uring_space_left(sw_ring *r) { return io_uring_sq_space_left(&r->ring); }

static struct io_uring_sqe *sw_sqe(sw_ring *r, uint64_t user_data, int link) {
    (void)user_data; (void)link;
    struct io_uring_sqe *sqe = io_uring_get_sqe(&r->ring);
    if (!sqe) return NULL;
    return sqe;
}

#define SW_FINISH(sqe, ud, link) do { \
    io_uring_sqe_set_data64((sqe), (ud)); \
    if (link) io_uring_sqe_set_flags((sqe), IOSQE_IO_LINK); \
    return 0; } while (0)

int sw_uring_prep_write(sw_ring *r, int fd, const void *buf, unsigned len, uint64_t offset,
                        uint64_t ud, int link) {
    struct io_uring_sqe *sqe = sw_sqe(r, ud, link);
    if (!sqe) return -EBUSY;
    io_uring_prep_write(sqe, fd, buf, len, offset);
    SW_FINISH(sqe, ud, link);
}
int sw_uring_prep_writev(sw_ring *r, int fd, const struct iovec *iov, unsigned count,
                         uint64_t offset, uint64_t ud, int link) {
    struct io_uring_sqe *sqe = sw_sqe(r, ud, link);
    if (!sqe) return -EBUSY;
    io_uring_prep_writev(sqe, fd, iov, count, offset);
    SW_FINISH(sqe, ud, link);
}
int sw_uring_prep_read(sw_ring *r, int fd, void *buf, unsigned len, uint64_t offset,
                       uint64_t ud, int link) {
    struct io_uring_sqe *sqe = sw_sqe(r, ud, link);
    if (!sqe) return -EBUSY;
    io_uring_prep_read(sqe, fd, buf, len, offset);
    SW_FINISH(sqe, ud, link);
}
int sw_uring_prep_fsync(sw_ring *r, int fd, int datasync, uint64_t ud, int link) {
    struct io_uring_sqe *sqe = sw_sqe(r, ud, link);
    if (!sqe) return -EBUSY;
    io_uring_prep_fsync(sqe, fd, datasync ? IORING_FSYNC_DATASYNC : 0);
    SW_FINISH(sqe, ud, link);
}
int sw_uring_prep_fallocate(sw_ring *r, int fd, int64_t offset, int64_t length,
                            uint64_t ud, int link) {
    struct io_uring_sqe *sqe = sw_sqe(r, ud, link);
    if (!sqe) return -EBUSY;
    io_uring_prep_fallocate(sqe, fd, 0, offset, length);
    SW_FINISH(sqe, ud, link);
}
int sw_uring_prep_nop(sw_ring *r, uint64_t ud) {
    struct io_uring_sqe *sqe = sw_sqe(r, ud, 0);
    if (!sqe) return -EBUSY;
    io_uring_prep_nop(sqe);
    SW_FINISH(sqe, ud, 0);
}

int sw_uring_submit(sw_ring *r, unsigned wait_nr) {
    return wait_nr ? io_uring_submit_and_wait(&r->ring, wait_nr) : io_uring_submit(&r->ring);
}

int sw_uring_reap(sw_ring *r, uint64_t *ud, int32_t *res, unsigned max, int wait) {
    unsigned n = 0;
    struct io_uring_cqe *cqe;
    if (wait && max > 0) {
        int rc = io_uring_wait_cqe(&r->ring, &cqe);
        if (rc < 0) return rc;
    }
    while (n < max && io_uring_peek_cqe(&r->ring, &cqe) == 0) {
        ud[n] = io_uring_cqe_get_data64(cqe);
        res[n] = cqe->res;
        io_uring_cqe_seen(&r->ring, cqe);
        n++;
    }
    return (int)n;
}
