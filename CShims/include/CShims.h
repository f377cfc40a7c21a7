// CShims: the few things SignalWAL needs from C that Swift cannot import well.
// Every function is prefixed `sw_` and says in one line why it lives here.
// Functions return -errno on failure unless noted, so Swift never has to read a thread-local
// errno after some other call may have overwritten it.
#ifndef SIGNALWAL_CSHIMS_H
#define SIGNALWAL_CSHIMS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#ifdef __cplusplus
extern "C" {
#endif

// ---- CRC32C (Castagnoli) ----------------------------------------------------------------

// Why C: the SSE4.2 crc32 instruction is an intrinsic that Swift cannot call.
// Extends a finished CRC32C value `crc` (0 to start) over `len` bytes; picks the hardware
// path when the CPU has SSE4.2, else the table.
uint32_t sw_crc32c(uint32_t crc, const void *data, size_t len);
// Why C: exposes the two implementations separately so tests can cross-check them.
uint32_t sw_crc32c_hw(uint32_t crc, const void *data, size_t len);
uint32_t sw_crc32c_sw(uint32_t crc, const void *data, size_t len);
// Why C: __builtin_cpu_supports is a compiler builtin. Returns 1 when SSE4.2 is usable.
int sw_crc32c_has_hw(void);

// ---- files and mappings ------------------------------------------------------------------

// Why C: O_DIRECT and O_CLOEXEC combinations need _GNU_SOURCE and the variadic open(2).
int sw_open(const char *path, int flags, int direct, mode_t mode);
// Why C: fallocate(2) and its FALLOC_FL_* flags are GNU extensions.
int sw_fallocate(int fd, int64_t offset, int64_t length);
// Why C: FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE; -EOPNOTSUPP where the filesystem lacks it.
int sw_fallocate_zero_range(int fd, int64_t offset, int64_t length);
// Why C: sync_file_range(2) and its SYNC_FILE_RANGE_* flags are GNU extensions.
int sw_sync_file_range_write(int fd, int64_t offset, int64_t length);
// Why C: single place that maps fdatasync's errno to a return value.
int sw_fdatasync(int fd);
int sw_fsync(int fd);
// Why C: posix_fadvise returns the error instead of setting errno; keep one convention.
int sw_fadvise_dontneed(int fd, int64_t offset, int64_t length);
// Why C: flock(2) with LOCK_NB; returns -EWOULDBLOCK when another holder has it.
int sw_flock_exclusive_nonblocking(int fd);
int sw_flock_unlock(int fd);
// Why C: MAP_FAILED is a macro cast Swift cannot express; returns NULL and sets *err.
void *sw_mmap_shared(int fd, size_t length, int writable, int *err);
int sw_munmap(void *addr, size_t length);
// Why C: msync(MS_SYNC) over a page-aligned range.
int sw_msync(void *addr, size_t length);
// Why C: MADV_* values (MADV_POPULATE_WRITE is newer than some headers) as named calls.
int sw_madvise_random(void *addr, size_t length);
int sw_madvise_sequential(void *addr, size_t length);
int sw_madvise_populate_write(void *addr, size_t length);
// Why C: MADV_DONTNEED by name; on a shared file mapping it drops page-table entries only.
int sw_madvise_dontneed(void *addr, size_t length);
// Why C: pthread_setname_np is a GNU extension Swift's Glibc module does not expose. Names the
// calling thread (at most 15 characters) for top -H, perf and gdb.
int sw_set_thread_name(const char *name);
// Why C: statx(STATX_DIOALIGN) and its struct fields need _GNU_SOURCE and a 6.1+ header.
// The file offset alignment O_DIRECT needs for `fd`; 0 when the kernel or filesystem does not
// say (callers then assume 4096), -errno on failure.
int sw_direct_io_alignment(int fd);
// Why C: pread/pwrite with the -errno convention.
ssize_t sw_pread(int fd, void *buf, size_t len, int64_t offset);
ssize_t sw_pwrite(int fd, const void *buf, size_t len, int64_t offset);

// ---- io_uring via liburing ---------------------------------------------------------------
// Why C: liburing's prep/submit/completion functions are static inline, and struct io_uring
// holds pointers into shared ring memory that must not be copied; Swift sees an opaque handle.

typedef struct sw_ring sw_ring;

// Creates a ring with `entries` submission slots. NULL and *err = errno when unavailable
// (ENOSYS on old kernels, EPERM under a seccomp profile or io_uring_disabled).
sw_ring *sw_uring_create(unsigned entries, int *err);
void sw_uring_destroy(sw_ring *ring);
// Free submission slots right now.
unsigned sw_uring_space_left(sw_ring *ring);
// Each prep_* queues one operation tagged with `user_data`; `link` chains it to the next one
// (IOSQE_IO_LINK) so the next runs only if this one succeeds. -EBUSY when the ring is full.
int sw_uring_prep_write(sw_ring *ring, int fd, const void *buf, unsigned len, uint64_t offset,
                        uint64_t user_data, int link);
int sw_uring_prep_writev(sw_ring *ring, int fd, const struct iovec *iov, unsigned count,
                         uint64_t offset, uint64_t user_data, int link);
int sw_uring_prep_read(sw_ring *ring, int fd, void *buf, unsigned len, uint64_t offset,
                       uint64_t user_data, int link);
int sw_uring_prep_fsync(sw_ring *ring, int fd, int datasync, uint64_t user_data, int link);
int sw_uring_prep_fallocate(sw_ring *ring, int fd, int64_t offset, int64_t length,
                            uint64_t user_data, int link);
int sw_uring_prep_nop(sw_ring *ring, uint64_t user_data);
// Submits what is queued; with wait_nr > 0 also waits for that many completions.
// Returns the number submitted or -errno.
int sw_uring_submit(sw_ring *ring, unsigned wait_nr);
// Reaps up to `max` completions into the arrays; with `wait` blocks for at least one.
// Returns the number reaped or -errno.
int sw_uring_reap(sw_ring *ring, uint64_t *user_data, int32_t *results, unsigned max, int wait);

#ifdef __cplusplus
}
#endif

#endif
