#if canImport(Glibc)
import Glibc
#endif

/// A mutex with a condition variable, for the few places where a thread must block until
/// another thread changes shared state (waiting for a flush, for a prepared segment).
///
/// `Synchronization.Mutex` has no condition variable, so this wraps pthreads. The protected
/// state lives inside, reachable only through ``withLock(_:)`` and ``wait(_:until:)``.
final class ConditionLock<State>: @unchecked Sendable {
    // @unchecked: `state` is only touched with `mutex` held, which is what makes sharing safe.
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let condition = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private var state: State

    init(_ initial: State) {
        state = initial
        pthread_mutex_init(mutex, nil)
        var attributes = pthread_condattr_t()
        pthread_condattr_init(&attributes)
        pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC)
        pthread_cond_init(condition, &attributes)
        pthread_condattr_destroy(&attributes)
    }

    deinit {
        pthread_cond_destroy(condition)
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
        condition.deallocate()
    }

    func withLock<R>(_ body: (inout State) throws -> R) rethrows -> R {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body(&state)
    }

    /// Blocks until `ready` holds, then runs `body` with the lock still held. `timeout` bounds
    /// each wait in nanoseconds; `ready` is re-checked after every wake-up.
    func wait<R>(until ready: (inout State) -> Bool, timeoutNanoseconds: Int? = nil,
                           _ body: (inout State) throws -> R) rethrows -> R {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        if let timeout = timeoutNanoseconds {
            var deadline = timespec()
            clock_gettime(CLOCK_MONOTONIC, &deadline)
            let total = Int(deadline.tv_nsec) + timeout
            deadline.tv_sec += total / 1_000_000_000
            deadline.tv_nsec = total % 1_000_000_000
            while !ready(&state) {
                if pthread_cond_timedwait(condition, mutex, &deadline) == ETIMEDOUT { break }
            }
        } else {
            while !ready(&state) { pthread_cond_wait(condition, mutex) }
        }
        return try body(&state)
    }

    /// Wakes every waiter so each re-checks its condition.
    func broadcast() {
        pthread_cond_broadcast(condition)
    }
}
