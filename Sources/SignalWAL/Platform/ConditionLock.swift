#if canImport(Glibc)
import Glibc
#endif

/// A mutex with condition variables, for the few places where a thread must block until
/// another thread changes shared state (waiting for a flush, for a prepared segment).
///
/// `Synchronization.Mutex` has no condition variable, so this wraps pthreads. The protected
/// state lives inside, reachable only through ``withLock(_:)`` and ``wait(until:on:_:)``.
/// Several conditions share the one mutex so that each kind of waiter is woken only by the
/// event it waits for (a flusher by new work, appenders by a completed flush).
final class ConditionLock<State>: @unchecked Sendable {
    // @unchecked: `state` is only touched with `mutex` held, which is what makes sharing safe.
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let conditions: UnsafeMutablePointer<pthread_cond_t>
    private let conditionCount: Int
    private var state: State

    init(_ initial: State, conditions count: Int = 1) {
        precondition(count >= 1)
        state = initial
        conditionCount = count
        conditions = .allocate(capacity: count)
        pthread_mutex_init(mutex, nil)
        var attributes = pthread_condattr_t()
        pthread_condattr_init(&attributes)
        pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC)
        for index in 0..<count { pthread_cond_init(conditions + index, &attributes) }
        pthread_condattr_destroy(&attributes)
    }

    deinit {
        for index in 0..<conditionCount { pthread_cond_destroy(conditions + index) }
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
        conditions.deallocate()
    }

    func withLock<R>(_ body: (inout State) throws -> R) rethrows -> R {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body(&state)
    }

    /// Blocks until `ready` holds, then runs `body` with the lock still held. `timeout` bounds
    /// each wait in nanoseconds; `ready` is re-checked after every wake-up.
    func wait<R>(until ready: (inout State) -> Bool, on condition: Int = 0, timeoutNanoseconds: Int? = nil,
                           _ body: (inout State) throws -> R) rethrows -> R {
        precondition(condition >= 0 && condition < conditionCount)
        let condition = conditions + condition
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

    /// Wakes every waiter on `condition` so each re-checks its predicate.
    func broadcast(_ condition: Int = 0) {
        precondition(condition >= 0 && condition < conditionCount)
        pthread_cond_broadcast(conditions + condition)
    }

    /// Wakes one waiter on `condition` (for a condition only one thread waits on).
    func signal(_ condition: Int = 0) {
        precondition(condition >= 0 && condition < conditionCount)
        pthread_cond_signal(conditions + condition)
    }
}
