/// Tasks suspended until a position that only grows reaches what each of them needs: the async
/// appenders' way to wait for staging room, for unflushed bytes to drain, or for a spare
/// segment, without blocking a thread of the cooperative pool.
///
/// The waiter states what it needs (`needed`); the producer reports how far it got
/// (``advance(to:)``) and resumes exactly the waiters it satisfied, so a flush wakes the tasks
/// it made room for, not every suspended appender (with 1,000 of them, waking all after every
/// flush would cost more CPU than the copies). A registration made after the position already
/// passed `needed` returns at once, so no wake-up is lost between a check and the wait.
///
/// ``terminate()`` (a failed flush, close) resumes every waiter now and every later one at
/// once; waiters re-check the WAL's state and throw. Bounded by the number of suspended tasks.
final class ProgressWaitlist: Sendable {
    private struct Waiter {
        let id: UInt64
        let needed: UInt64
        let continuation: CheckedContinuation<Void, Never>
    }
    private struct State {
        var reached: UInt64
        /// Sorted by `needed`, so an advance resumes a prefix.
        var waiters: [Waiter] = []
        var nextID: UInt64 = 0
        var terminated = false
    }
    private let state: ConditionLock<State>

    init(reached: UInt64 = 0) { state = ConditionLock(State(reached: reached)) }

    /// Suspends until the position reaches `needed`, the list is terminated, or the task is
    /// cancelled. Callers re-check what they waited for (and `Task.isCancelled`) afterwards.
    func wait(until needed: UInt64) async {
        let id = state.withLock { value -> UInt64 in
            value.nextID += 1
            return value.nextID
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let now = state.withLock { value -> Bool in
                    if value.terminated || value.reached >= needed || Task.isCancelled { return true }
                    let index = value.waiters.partitionPoint { $0.needed <= needed }
                    value.waiters.insert(Waiter(id: id, needed: needed, continuation: continuation), at: index)
                    return false
                }
                if now { continuation.resume() }
            }
        } onCancel: {
            let waiter = state.withLock { value -> Waiter? in
                guard let index = value.waiters.firstIndex(where: { $0.id == id }) else { return nil }
                return value.waiters.remove(at: index)
            }
            waiter?.continuation.resume()
        }
    }

    /// Records that the position reached `position` (lower values are ignored) and resumes the
    /// waiters that needed no more, outside the lock.
    func advance(to position: UInt64) {
        let ready = state.withLock { value -> [Waiter] in
            guard position > value.reached else { return [] }
            value.reached = position
            let count = value.waiters.partitionPoint { $0.needed <= position }
            guard count > 0 else { return [] }
            let ready = Array(value.waiters[..<count])
            value.waiters.removeFirst(count)
            return ready
        }
        for waiter in ready { waiter.continuation.resume() }
    }

    /// Resumes every waiter, now and from now on.
    func terminate() {
        let all = state.withLock { value -> [Waiter] in
            value.terminated = true
            defer { value.waiters = [] }
            return value.waiters
        }
        for waiter in all { waiter.continuation.resume() }
    }
}

extension Array {
    /// The index of the first element for which `belongs` is false, in an array where every
    /// element it holds for comes first (binary search).
    func partitionPoint(_ belongs: (Element) -> Bool) -> Int {
        var low = 0
        var high = count
        while low < high {
            let middle = (low + high) / 2
            if belongs(self[middle]) { low = middle + 1 } else { high = middle }
        }
        return low
    }
}
