import Synchronization

/// When records were appended and how fast consumers checkpoint, kept cheaply enough for the
/// append path: the age of the oldest unprocessed record and the drain rate a service needs to
/// answer `Retry-After` come from here.
///
/// Append times are sampled: the first append after each millisecond records (its first LSN,
/// now). Every record from one sample's LSN to the next was appended within a millisecond after
/// that sample (an append later than that would have taken a sample itself), so the age read
/// from the sample at or below a record overstates it by at most that step (more once the
/// bounded list has halved its resolution, and by the width of a race between two appenders
/// reporting out of order). Records recovered at open count as appended at open.
final class BacklogTracker: Sendable {
    private struct State {
        /// (first LSN of an append, monotonic nanoseconds when it was sampled), oldest first.
        var appends: [(lsn: LSN, at: Int)] = []
        /// (checkpoint LSN, monotonic nanoseconds) of recent checkpoints, oldest first.
        var checkpoints: [(lsn: LSN, at: Int)] = []
    }
    /// Bound on both lists.
    static let appendSamples = 4096
    static let checkpointSamples = 64
    /// Checkpoints older than this do not count towards the drain rate.
    static let rateWindowNanoseconds = 30_000_000_000
    private let state: ConditionLock<State>
    private let lastSample = Atomic<Int>(0)

    init(recoveredThrough lsn: LSN, checkpoint: LSN) {
        let now = MonotonicClock.nanoseconds()
        var initial = State()
        if lsn > checkpoint { initial.appends.append((checkpoint + 1, now)) }
        initial.checkpoints.append((checkpoint, now))
        state = ConditionLock(initial)
    }

    /// Called after each append with its first LSN; takes the lock at most once a millisecond.
    func noteAppended(_ lsn: LSN) {
        let now = MonotonicClock.nanoseconds()
        let last = lastSample.load(ordering: .relaxed)
        guard now - last >= 1_000_000, lastSample.compareExchange(expected: last, desired: now, ordering: .relaxed).exchanged else { return }
        state.withLock { value in
            if let newest = value.appends.last, newest.lsn >= lsn { return }
            if value.appends.count >= Self.appendSamples {
                // Halve the resolution, keeping the oldest sample (it dates the backlog's start).
                value.appends = value.appends.enumerated().filter { $0.offset % 2 == 0 }.map(\.element)
            }
            value.appends.append((lsn, now))
        }
    }

    func noteCheckpoint(_ lsn: LSN) {
        let now = MonotonicClock.nanoseconds()
        state.withLock { value in
            // Keep the last sample at or below the first unprocessed record: it dates it.
            let atOrBelow = value.appends.partitionPoint { $0.lsn <= lsn + 1 }
            if atOrBelow > 1 { value.appends.removeFirst(atOrBelow - 1) }
            if value.checkpoints.count >= Self.checkpointSamples { value.checkpoints.removeFirst() }
            value.checkpoints.append((lsn, now))
        }
    }

    /// Seconds since the oldest record after `checkpoint` was appended (0 when there is none).
    func oldestUnprocessedAge(checkpoint: LSN, next: LSN) -> Double {
        guard next > checkpoint + 1 else { return 0 }
        let now = MonotonicClock.nanoseconds()
        return state.withLock { value in
            let atOrBelow = value.appends.partitionPoint { $0.lsn <= checkpoint + 1 }
            guard let dating = atOrBelow > 0 ? value.appends[atOrBelow - 1] : value.appends.first else { return 0 }
            return Double(now - dating.at) / 1e9
        }
    }

    /// Records checkpointed per second over the last 30 seconds of checkpoints (nil until
    /// there are two in that window).
    func checkpointRate() -> Double? {
        let now = MonotonicClock.nanoseconds()
        return state.withLock { value in
            let recent = value.checkpoints.filter { now - $0.at <= Self.rateWindowNanoseconds }
            guard let first = recent.first, let last = recent.last, last.at > first.at else { return nil }
            // Measured to now, so a consumer that stopped shows a falling rate, not its last one.
            return Double(last.lsn - first.lsn) / (Double(now - first.at) / 1e9)
        }
    }
}
