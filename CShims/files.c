// Thin wrappers over file and mapping syscalls; each returns -errno on failure.
#include "CShims.h"
#include <errno.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <unistd.h>
#include <pthread.h>
#include <linux/falloc.h>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

#define SW_RET(expr) do { int _r = (expr); return _r < 0 ? -errno : _r; } while (0)

int sw_open(const char *path, int flags, int direct, mode_t mode) {
    int f = flags | O_CLOEXEC | (direct ? O_DIRECT : 0);
    SW_RET(open(path, f, mode));
}
int sw_fallocate(int fd, int64_t offset, int64_t length) { SW_RET(fallocate(fd, 0, offset, length)); }
int sw_fallocate_zero_range(int fd, int64_t offset, int64_t length) {
    SW_RET(fallocate(fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, offset, length));
}
int sw_sync_file_range_write(int fd, int64_t offset, int64_t length) {
    SW_RET(sync_file_range(fd, offset, length, SYNC_FILE_RANGE_WRITE));
}
int sw_fdatasync(int fd) { SW_RET(fdatasync(fd)); }
int sw_fsync(int fd) { SW_RET(fsync(fd)); }
int sw_fadvise_dontneed(int fd, int64_t offset, int64_t length) {
    int r = posix_fadvise(fd, offset, length, POSIX_FADV_DONTNEED);
    return r == 0 ? 0 : -r;
}
int sw_flock_exclusive_nonblocking(int fd) { SW_RET(flock(fd, LOCK_EX | LOCK_NB)); }
int sw_flock_unlock(int fd) { SW_RET(flock(fd, LOCK_UN)); }

void *sw_mmap_shared(int fd, size_t length, int writable, int *err) {
    int prot = PROT_READ | (writable ? PROT_WRITE : 0);
    void *p = mmap(NULL, length, prot, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) { *err = errno; return NULL; }
    *err = 0;
    return p;
}
int sw_munmap(void *addr, size_t length) { SW_RET(munmap(addr, length)); }
int sw_msync(void *addr, size_t length) { SW_RET(msync(addr, length, MS_SYNC)); }
int sw_madvise_random(void *addr, size_t length) { SW_RET(madvise(addr, length, MADV_RANDOM)); }
int sw_madvise_sequential(void *addr, size_t length) { SW_RET(madvise(addr, length, MADV_SEQUENTIAL)); }
int sw_madvise_populate_write(void *addr, size_t length) { SW_RET(madvise(addr, length, MADV_POPULATE_WRITE)); }
int sw_madvise_dontneed(void *addr, size_t length) { SW_RET(madvise(addr, length, MADV_DONTNEED)); }

int sw_set_thread_name(const char *name) { return -pthread_setname_np(pthread_self(), name); }

ssize_t sw_pread(int fd, void *buf, size_t len, int64_t offset) {
    ssize_t r = pread(fd, buf, len, offset);
    return r < 0 ? -errno : r;
}
ssize_t sw_pwrite(int fd, const void *buf, size_t len, int64_t offset) {
    ssize_t r = pwrite(fd, buf, len, offset);
    return r < 0 ? -errno : r;
}

#include <sys/stat.h>
int sw_direct_io_alignment(int fd) {
#ifdef STATX_DIOALIGN
    struct statx st;
    if (statx(fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &st) < 0) return -errno;
    if (!(st.stx_mask & STATX_DIOALIGN)) return 0;
    return (int)st.stx_dio_offset_align;
#else
    (void)fd;
    return 0;
#endif
}
