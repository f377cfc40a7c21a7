import SignalDBLayout
import SignalDBStore
import SignalWAL
import Synchronization

/// Which acceptor LSNs the writer already holds, per acceptor: the exactly-once filter in
/// front of the WAL (docs/WRITER.md, "Exactly once", rules W1 to W4).
///
/// A single high-water mark is not enough: an acceptor keeps several batches in flight, so
/// batch 2 can be appended before batch 1 arrives, and a mark at batch 2's end would make
/// batch 1 look already held. So each acceptor has
/// - `floor`: the acceptor's checkpoint, sent with every forward. Every LSN at or below it was
///   acknowledged earlier and is never sent again, so nothing below it needs remembering;
/// - `durable`: LSNs above the floor known durable (restored from the store's progress and
///   from the WAL records after the checkpoint);
/// - `appended`: LSNs above the floor appended by this process, with the writer LSN that
///   holds each, which an acknowledgement waits for.
/// The sets above the floor stay as small as the acceptor's in-flight window.
final class AcceptorMarks: Sendable {
    struct Mark {
        var floor: LSN = 0
        var durable = LSNRanges()
        var appended: [LSN: LSN] = [:]

        var count: Int { Int(clamping: durable.count) + appended.count }
    }

    /// How far above an acceptor's floor a new LSN may be: the memory for one acceptor's marks
    /// is bounded by this span, not by a count. A bound on the count could lock an acceptor out
    /// for good (a stuck record below a million acknowledged ones could never get in, so the
    /// checkpoint could never move); with a span the record at `floor + 1` is always taken.
    /// 64 batches in flight of 65,536 records, the acceptor's largest settings, fit.
    static let maxSpanAboveFloor: LSN = ServiceLayout.writerSpanAboveFloor

    private let state = Mutex<[String: Mark]>([:])

    init() {}

    /// What a forward's records are, against the marks: `fresh` (indices into `lsns`) must be
    /// appended; the rest are held, and may be acknowledged once the writer LSN `waitFor` is
    /// durable (0: they already are). Moves the acceptor's floor to `settled` first (W2).
    /// `beyond` lists the fresh indices past ``maxSpanAboveFloor``: not taken this time.
    func classify(acceptor: String, settled: LSN, lsns: [LSN]) -> (fresh: [Int], waitFor: LSN, beyond: [Int]) {
        state.withLock { marks in
            var mark = marks[acceptor] ?? Mark()
            if settled > mark.floor {
                mark.floor = settled
                mark.durable.removeAll(atOrBelow: settled)
                mark.appended = mark.appended.filter { $0.key > settled }
            }
            var fresh: [Int] = [], beyond: [Int] = []
            var waitFor: LSN = 0
            let limit = mark.floor > LSN.max - Self.maxSpanAboveFloor ? LSN.max : mark.floor + Self.maxSpanAboveFloor
            for (i, lsn) in lsns.enumerated() {
                if lsn <= mark.floor || mark.durable.contains(lsn) { continue }
                if let writerLSN = mark.appended[lsn] {
                    waitFor = max(waitFor, writerLSN)
                    continue
                }
                if lsn > limit { beyond.append(i) } else { fresh.append(i) }
            }
            marks[acceptor] = mark
            return (fresh, waitFor, beyond)
        }
    }

    /// Records that `pairs` (acceptor LSN, writer LSN) are appended. Called under the same
    /// ordering lock as ``classify(acceptor:settled:lsns:)``, before any other forward can
    /// classify the same LSNs (W1).
    func appended(acceptor: String, _ pairs: [(LSN, LSN)]) {
        state.withLock { marks in
            for (acceptorLSN, writerLSN) in pairs { marks[acceptor, default: Mark()].appended[acceptorLSN] = writerLSN }
        }
    }

    /// Rebuilds the marks on open (W3): the store's progress, then the WAL's records after its
    /// checkpoint (all durable: they survived recovery).
    func restore(from progress: StoreProgress, walRecords: [(acceptor: String, lsn: LSN)]) {
        state.withLock { marks in
            for (id, p) in progress.acceptors {
                marks[id] = Mark(floor: p.floor, durable: p.held, appended: [:])
            }
            for r in walRecords {
                var mark = marks[r.acceptor] ?? Mark()
                if r.lsn > mark.floor { mark.durable.insert(r.lsn) }
                marks[r.acceptor] = mark
            }
        }
    }

    /// Each acceptor's floor, for the progress the committer stores.
    func floors() -> [String: LSN] {
        state.withLock { $0.mapValues(\.floor) }
    }

    /// The number of acceptors and LSNs remembered, for the metrics.
    func size() -> (acceptors: Int, lsns: Int) {
        state.withLock { marks in (marks.count, marks.values.reduce(0) { $0 + $1.count }) }
    }
}

/// A FIFO lock for async code: waiters suspend (no thread blocks). It orders the forwards'
/// classify-then-append steps (W1); the wait for durability happens after it is released, so
/// forwards still share flushes. The queue is bounded by count and by the bytes the waiting
/// forwards hold: past either a forward is refused at once (the acceptor retries), so a stalled
/// holder cannot make waiting requests pile up. A waiter whose task is cancelled leaves the
/// queue (ForwardService cancels it when the RPC is: a deadline passed, the client reset).
final class AsyncLock: Sendable {
    private struct Waiter {
        var id: Int
        var bytes: Int
        var continuation: CheckedContinuation<Void, any Error>
    }
    private struct State {
        var locked = false
        var nextID = 0
        var waitingBytes = 0
        var waiters: [Waiter] = []
    }
    private let state = Mutex(State())
    let maxWaiters: Int
    let maxWaitingBytes: Int

    init(maxWaiters: Int = 1024, maxWaitingBytes: Int = 512 << 20) {
        self.maxWaiters = maxWaiters
        self.maxWaitingBytes = maxWaitingBytes
    }

    struct QueueFull: Error {}

    /// Throws ``QueueFull`` when the queue is at a bound, `CancellationError` when cancelled
    /// while waiting. `bytes`: what the waiter holds in memory (its request).
    func lock(bytes: Int = 0) async throws {
        let id = state.withLock { s -> Int? in
            if !s.locked {
                s.locked = true
                return nil
            }
            s.nextID += 1
            return s.nextID
        }
        guard let id else { return }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                let outcome = state.withLock { s -> Result<Void, any Error>? in
                    if !s.locked {
                        s.locked = true
                        return .success(())
                    }
                    if Task.isCancelled { return .failure(CancellationError()) }
                    // One waiter is always let in whatever its size, so a large forward is never
                    // refused for being large alone.
                    if s.waiters.count >= maxWaiters || (!s.waiters.isEmpty && s.waitingBytes + bytes > maxWaitingBytes) {
                        return .failure(QueueFull())
                    }
                    s.waiters.append(Waiter(id: id, bytes: bytes, continuation: continuation))
                    s.waitingBytes += bytes
                    return nil
                }
                if let outcome { continuation.resume(with: outcome) }
            }
        } onCancel: {
            let cancelled = state.withLock { s -> CheckedContinuation<Void, any Error>? in
                guard let index = s.waiters.firstIndex(where: { $0.id == id }) else { return nil }
                let waiter = s.waiters.remove(at: index)
                s.waitingBytes -= waiter.bytes
                return waiter.continuation
            }
            cancelled?.resume(throwing: CancellationError())
        }
    }

    /// Waiters queued now (for tests and metrics).
    var waiting: Int { state.withLock { $0.waiters.count } }

    /// Hands the lock to the next waiter, if any.
    func unlock() {
        let next = state.withLock { s -> CheckedContinuation<Void, any Error>? in
            if s.waiters.isEmpty {
                s.locked = false
                return nil
            }
            let waiter = s.waiters.removeFirst()
            s.waitingBytes -= waiter.bytes
            return waiter.continuation
        }
        next?.resume()
    }

    func withLock<T>(bytes: Int = 0, _ body: () async throws -> T) async throws -> T {
        try await lock(bytes: bytes)
        defer { unlock() }
        return try await body()
    }
}
