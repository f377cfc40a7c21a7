#if canImport(Glibc)
import Glibc
#endif
import Logging
import Synchronization

/// Where the log ends: the last LSN and the byte just past it in its segment.
struct LogPosition: Sendable, Equatable {
    var lsn: LSN
    var segment: UInt64
    var offset: Int
    /// Bytes appended (record spans) since the WAL opened, for ``Configuration/maxBatchBytes``.
    var bytes: UInt64 = 0
    /// Under the io_uring backend, the staging stream position just past the last record.
    var stream: UInt64 = 0
}

/// Flushes appended records on a dedicated thread and wakes whoever waits for them.
///
/// While one flush (fdatasync of each segment written since the last one) is in flight, later
/// appends accumulate, and the next flush covers all of them: that is group commit. The durable
/// LSN only moves after a flush has completed, and only to what that flush covered.
///
/// A failed flush is final (PostgreSQL's "fsyncgate" lesson): the kernel may already have
/// dropped the dirty pages, so retrying could report success for data that is gone. Every
/// waiter and every later append gets ``WALError/Kind/flushFailed`` until the WAL is reopened
/// and recovery re-reads what is really on disk.
final class GroupCommitter: Sendable {
    struct Waiter {
        var lsn: LSN
        var continuation: CheckedContinuation<Void, any Error>
    }
    struct Follower {
        var id: UInt64
        var after: LSN
        var continuation: CheckedContinuation<Bool, Never>
    }
    struct State {
        var written: LogPosition
        var durable: LogPosition
        /// Files of sealed segments written since the last flush started, oldest first (usually
        /// none), and of the active one. Kept apart so a flush needs no allocation. Files, not
        /// segments: holding a segment would keep its writable mapping alive after the writer
        /// has moved on, and every later write-back of a still-mapped page costs a TLB
        /// shoot-down on every CPU.
        var dirtySealed: [OpenFile] = []
        var dirtyActive: OpenFile?
        var failure: WALError?
        var stopping = false
        var stopped = false
        /// An appender is waiting for unflushed bytes to drop below `maxBatchBytes`: flush now,
        /// whatever the policy's schedule.
        var roomWanted = false
        var waiters: [Waiter] = []
        var followers: [Follower] = []
        var nextFollowerID: UInt64 = 0
        var flushes = 0
        var recordsFlushed: UInt64 = 0
        /// Blocked appenders: the LSN each waits for and the condition it sleeps on. Keeps its
        /// capacity, so parking allocates nothing in steady state.
        var parked: [(lsn: LSN, parker: Int)] = []
        /// Under the io_uring backend and `.none`, whether the closing flush has synced what
        /// earlier flushes only wrote.
        var finalSynced = false
    }

    let policy: DurabilityPolicy
    let logger: Logger
    let metrics: WALMetrics
    /// See ``Configuration/maxBatchDelay`` and ``Configuration/maxBatchBytes``.
    let batchDelayNanoseconds: Int
    let maxUnflushedBytes: UInt64?
    /// Mirrors of `written.bytes` and `durable.bytes`, stored under the lock and read without
    /// it, so the common case of `waitForRoom` (far below the limit) costs two loads, not a lock.
    private let writtenBytes = Atomic<UInt64>(0)
    private let durableBytes = Atomic<UInt64>(0)
    let directory: String
    /// The io_uring backend's write path, or nil under the mmap backend.
    let direct: DirectWriter?
    private let state: ConditionLock<State>
    /// The flush thread waits on this for new work; nobody else does.
    private static let work = 0
    /// Close and flush failures are announced here.
    private static let flushed = 1
    /// A blocked appender sleeps on a condition chosen by its thread, so a flush wakes only the
    /// appenders it covered. Broadcasting one shared condition woke all 64 appenders of a
    /// 64-appender run after every flush, most of them to go back to sleep, and that churn on two
    /// cores kept batches small (see docs/DESIGN.md). Two threads may share a parker; each
    /// re-checks its own LSN, so sharing costs a spurious wake-up, never a missed one.
    private static let parkers = 256
    private let thread = ConditionLock<BackgroundThread?>(nil)

    init(start: LogPosition, policy: DurabilityPolicy, directory: String, logger: Logger, metrics: WALMetrics,
         batchDelay: Duration = .zero, maxBatchBytes: Int? = nil, direct: DirectWriter? = nil) {
        self.policy = policy
        self.direct = direct
        self.metrics = metrics
        let parts = batchDelay.components
        batchDelayNanoseconds = Int(parts.seconds) * 1_000_000_000 + Int(parts.attoseconds / 1_000_000_000)
        // `.none` never flushes on its own schedule, so it has nothing to bound.
        maxUnflushedBytes = policy == .none ? nil : maxBatchBytes.map { UInt64($0) }
        self.logger = logger
        self.directory = directory
        var initial = State(written: start, durable: start)
        initial.parked.reserveCapacity(Self.parkers)
        state = ConditionLock(initial, conditions: 2 + Self.parkers)
    }

    func start() {
        let started = BackgroundThread.start(name: "signalwal-flush") { self.run() }
        thread.withLock { $0 = started }
    }

    /// Whether readers see records as soon as they are copied: only under `.none` with the mmap
    /// backend, where the copy is in the file's page cache. Staged records (io_uring backend)
    /// become visible once written to the file.
    private var visibleOnCopy: Bool { policy == .none && direct == nil }

    /// What readers may see: flushed records, or under `.none` every copied record.
    var visible: LogPosition {
        state.withLock { visibleOnCopy ? $0.written : $0.durable }
    }

    var durable: LogPosition { state.withLock { $0.durable } }

    var statistics: (flushes: Int, recordsFlushed: UInt64) { state.withLock { ($0.flushes, $0.recordsFlushed) } }

    /// The sticky flush failure, if any.
    var failure: WALError? { state.withLock { $0.failure } }

    /// Called by an appender after its copy, for the last record it copied. Called outside the
    /// append lock, so calls can arrive out of order: the position only moves forward. That is
    /// safe because every copy completes under the append lock before a later LSN is handed out,
    /// so all records up to the highest noted LSN are already in place.
    func noteWritten(_ position: LogPosition, in segment: Segment) {
        var wake: [Follower] = []
        var sealedWaiting = false
        state.withLock { value in
            guard position.lsn > value.written.lsn else { return }
            value.written = position
            writtenBytes.store(position.bytes, ordering: .releasing)
            if direct == nil && value.dirtyActive !== segment.file {
                if let previous = value.dirtyActive { value.dirtySealed.append(previous) }
                value.dirtyActive = segment.file
                // Under `.none` sealed files are flushed in the background as they appear.
                if policy == .none && !value.dirtySealed.isEmpty { sealedWaiting = true }
            }
            if visibleOnCopy { wake = takeFollowers(&value, upTo: position.lsn) }
        }
        if policy == .groupCommit || sealedWaiting || (direct != nil && policy == .none) { state.signal(Self.work) }
        for follower in wake { follower.continuation.resume(returning: true) }
    }

    /// Asks for a flush now, whatever the policy's schedule (an appender needs staging room).
    /// Returns the sticky failure instead when there is one.
    func requestFlush() -> WALError? {
        let failure = state.withLock { value -> WALError? in
            if let failure = value.failure { return failure }
            if value.stopped { return closedError() }
            value.roomWanted = true
            return nil
        }
        if failure == nil { state.signal(Self.work) }
        return failure
    }

    /// Blocks while more than `maxBatchBytes` appended bytes are unflushed, asking the flusher to
    /// flush now. Appenders call it before copying, so unflushed data stays within the limit
    /// plus one record per concurrent appender.
    func waitForRoom() throws {
        guard let limit = maxUnflushedBytes else { return }
        // Durable first: it only grows, so this can overstate the backlog, never understate it.
        let durableSoFar = durableBytes.load(ordering: .acquiring)
        if writtenBytes.load(ordering: .acquiring) &- durableSoFar < limit { return }
        let needsFlush = state.withLock { value -> Bool in
            guard value.written.bytes - value.durable.bytes >= limit, value.failure == nil, !value.stopped else { return false }
            value.roomWanted = true
            return true
        }
        guard needsFlush else { return }
        state.signal(Self.work)
        let failure: WALError? = state.wait(until: { value in
            value.written.bytes - value.durable.bytes < limit || value.failure != nil || value.stopped
        }, on: Self.flushed) { value in
            value.failure ?? (value.stopped ? closedError() : nil)
        }
        if let failure { throw failure }
    }

    /// Blocks the calling thread until `lsn` is durable (or the flush failed, or the WAL closed).
    func waitDurable(_ lsn: LSN) throws {
        let parker = 2 + ThreadIndex.current % Self.parkers
        var registered = false
        let failure: WALError? = state.wait(until: { value in
            if value.durable.lsn >= lsn || value.failure != nil || value.stopped { return true }
            if !registered {
                value.parked.append((lsn, parker))
                registered = true
            }
            return false
        }, on: parker) { value in
            if registered, value.durable.lsn < lsn,
               let index = value.parked.firstIndex(where: { $0.parker == parker && $0.lsn == lsn }) {
                // Woken by a failure or by close, which leave the list alone.
                value.parked.remove(at: index)
            }
            if value.durable.lsn >= lsn { return nil }
            return value.failure ?? closedError()
        }
        if let failure { throw failure }
    }

    /// Moves the parkers of appenders covered by `durable` (all of them when `all`) into
    /// `buffer`, a buffer the flusher thread owns. Called with the lock held; ``signalParkers(_:)``
    /// signals them after it is released.
    private func collectParked(_ value: inout State, all: Bool, into buffer: inout [Int]) {
        guard !value.parked.isEmpty else { return }
        let durable = value.durable.lsn
        for entry in value.parked where all || entry.lsn <= durable { buffer.append(entry.parker) }
        if all { value.parked.removeAll(keepingCapacity: true) } else { value.parked.removeAll { $0.lsn <= durable } }
    }

    /// Signals collected parkers outside the lock, so a woken appender does not block on the
    /// lock the flusher still holds; keeps the buffer's capacity.
    private func signalParkers(_ buffer: inout [Int]) {
        for parker in buffer { state.broadcast(parker) }
        buffer.removeAll(keepingCapacity: true)
    }

    /// Suspends until `lsn` is durable, without blocking a thread of the cooperative pool.
    func durable(_ lsn: LSN) async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            let outcome: Result<Void, WALError>? = state.withLock { value in
                if value.durable.lsn >= lsn { return .success(()) }
                if let failure = value.failure { return .failure(failure) }
                if value.stopped { return .failure(closedError()) }
                value.waiters.append(Waiter(lsn: lsn, continuation: continuation))
                return nil
            }
            if let outcome { continuation.resume(with: outcome) }
        }
    }

    /// Suspends until a record after `lsn` is visible to readers. Returns false when the WAL
    /// closed or the task was cancelled.
    func waitVisible(after lsn: LSN) async -> Bool {
        let id = state.withLock { value -> UInt64 in value.nextFollowerID += 1; return value.nextFollowerID }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Bool, Never>) in
                let immediate: Bool? = state.withLock { value in
                    let visibleLSN = visibleOnCopy ? value.written.lsn : value.durable.lsn
                    if visibleLSN > lsn { return true }
                    if value.stopped || value.failure != nil || Task.isCancelled { return false }
                    value.followers.append(Follower(id: id, after: lsn, continuation: continuation))
                    return nil
                }
                if let immediate { continuation.resume(returning: immediate) }
            }
        } onCancel: {
            let cancelled = state.withLock { value -> Follower? in
                guard let index = value.followers.firstIndex(where: { $0.id == id }) else { return nil }
                return value.followers.remove(at: index)
            }
            cancelled?.continuation.resume(returning: false)
        }
    }

    private static func monotonicNanoseconds() -> Int {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return now.tv_sec * 1_000_000_000 + now.tv_nsec
    }

    private func closedError() -> WALError {
        WALError(.closed, path: directory, operation: "append", hint: "The WAL was closed: open it again to continue.")
    }

    private func takeFollowers(_ value: inout State, upTo lsn: LSN) -> [Follower] {
        guard !value.followers.isEmpty else { return [] }
        let ready = value.followers.filter { $0.after < lsn }
        value.followers.removeAll { $0.after < lsn }
        return ready
    }

    /// Flushes everything written, then stops the thread. Returns the final flush's failure.
    func stop() -> WALError? {
        state.withLock { $0.stopping = true }
        state.signal(Self.work)
        thread.withLock { $0 }?.join()
        return state.withLock { $0.failure }
    }

    private func run() {
        var toWake: [Int] = []
        toWake.reserveCapacity(Self.parkers)
        // Under `.interval`, flushes are paced from start to start, and each starts early by
        // the previous flush's duration, so it *ends* about one interval after the previous
        // one began: a record acknowledged just after a flush took its snapshot is durable
        // within one interval (waiting a full interval after each flush ended made it up to an
        // interval plus two flushes, measured in the power-cut test).
        var intervalNanoseconds: Int? = nil
        if case .interval(let duration) = policy {
            let parts = duration.components
            intervalNanoseconds = Int(parts.seconds) * 1_000_000_000 + Int(parts.attoseconds / 1_000_000_000)
        }
        var lastFlushStart = Self.monotonicNanoseconds()
        var lastFlushDuration = 0
        while true {
            var interval: Int? = nil
            if let intervalNanoseconds {
                let elapsed = Self.monotonicNanoseconds() - lastFlushStart
                interval = max(0, intervalNanoseconds - lastFlushDuration - elapsed)
            }
            let delayed = state.wait(until: { value in
                if value.roomWanted && value.written.lsn > value.durable.lsn { return true }
                switch policy {
                case .groupCommit: return value.stopping || value.written.lsn > value.durable.lsn
                case .interval: return value.stopping
                case .none:
                    if direct != nil { return value.stopping || value.written.lsn > value.durable.lsn }
                    return value.stopping || !value.dirtySealed.isEmpty
                }
            }, on: Self.work, timeoutNanoseconds: interval) { value in
                policy == .groupCommit && batchDelayNanoseconds > 0 && !value.stopping && !value.roomWanted
            }
            if delayed {
                // commit_delay: let more appends join this flush.
                var pause = timespec(tv_sec: batchDelayNanoseconds / 1_000_000_000, tv_nsec: batchDelayNanoseconds % 1_000_000_000)
                nanosleep(&pause, nil)
            }
            let flushStart = Self.monotonicNanoseconds()
            if let direct { flushStaged(direct, toWake: &toWake) } else { flushMapped(toWake: &toWake) }
            // Bounded so one stalled flush cannot make the next ones start back to back.
            lastFlushDuration = min(Self.monotonicNanoseconds() - flushStart, (intervalNanoseconds ?? 0) / 2)
            lastFlushStart = flushStart
            let done = state.withLock { value -> Bool in
                guard value.stopping else { return false }
                // Leave only when everything written has been flushed (or flushing failed), and,
                // for staged `.none` records, the closing flush has synced them.
                return value.failure != nil
                    || (value.written.lsn == value.durable.lsn && value.dirtyActive == nil
                        && (direct == nil || policy != .none || value.finalSynced))
            }
            if done { break }
        }
        let (waiters, followers) = state.withLock { value -> ([Waiter], [Follower]) in
            value.stopped = true
            collectParked(&value, all: true, into: &toWake)
            defer { value.waiters = []; value.followers = [] }
            return (value.waiters, value.followers)
        }
        signalParkers(&toWake)
        state.broadcast(Self.flushed)
        let error = failure ?? closedError()
        for waiter in waiters { waiter.continuation.resume(throwing: error) }
        for follower in followers { follower.continuation.resume(returning: false) }
    }

    /// mmap backend: fdatasync every file written since the last flush (under `.none`, only
    /// sealed ones, without claiming the durable LSN moved).
    private func flushMapped(toWake: inout [Int]) {
        let job: (target: LogPosition, sealed: [OpenFile], active: OpenFile?)? = state.withLock { value in
            value.roomWanted = false
            guard value.failure == nil, value.written.lsn > value.durable.lsn || value.dirtyActive != nil else { return nil }
            if policy == .none && !value.stopping {
                // Only sealed files; the durable LSN is not claimed to move.
                guard !value.dirtySealed.isEmpty else { return nil }
                let sealed = value.dirtySealed
                value.dirtySealed = []
                return (value.durable, sealed, nil)
            }
            // The next copy into the active segment lists it again (see noteWritten).
            let job = (value.written, value.dirtySealed, value.dirtyActive)
            if !value.dirtySealed.isEmpty { value.dirtySealed = [] }
            value.dirtyActive = nil
            return job
        }
        if let job {
            flush(job.target, toWake: &toWake) {
                for segment in job.sealed { try segment.dataSync() }
                if let active = job.active { try active.dataSync() }
            }
        }
    }

    /// io_uring backend: write the staged bytes and, unless the policy is `.none` (before close),
    /// sync them.
    private func flushStaged(_ direct: DirectWriter, toWake: inout [Int]) {
        let job = state.withLock { value -> (target: LogPosition, sync: Bool)? in
            value.roomWanted = false
            guard value.failure == nil else { return nil }
            if value.written.lsn > value.durable.lsn { return (value.written, policy != .none || value.stopping) }
            if value.stopping && policy == .none && !value.finalSynced { return (value.written, true) }
            return nil
        }
        guard let job else { return }
        flush(job.target, toWake: &toWake) {
            try direct.flush(upTo: job.target.stream, sync: job.sync)
        }
        if job.sync { state.withLock { $0.finalSynced = $0.stopping } }
    }

    /// Runs `io` (the writes and syncs that make `target` durable), then publishes `target` as
    /// durable and wakes whoever it covers; or, when `io` throws, makes the failure final.
    private func flush(_ target: LogPosition, toWake: inout [Int], io: () throws -> Void) {
        var failed: WALError? = nil
        let started = ContinuousClock.now
        do {
            try io()
        } catch {
            let cause = error as? WALError
            failed = WALError(.flushFailed, path: cause?.path ?? directory, operation: cause?.operation ?? "flush", errno: cause?.errno ?? 0,
                              hint: "Flushing the WAL failed, so nothing written since the last good flush is acknowledged; the kernel may have dropped those pages, so SignalWAL will not retry. Check the device (dmesg), then reopen the WAL: recovery keeps everything that is really on disk.")
        }
        let took = ContinuousClock.now - started
        var resume: [Waiter] = []
        var fail: [Waiter] = []
        var wake: [Follower] = []
        var dropped: [Follower] = []
        state.withLock { value in
            if let failed {
                metrics.flushFailures.increment()
                value.failure = failed
                collectParked(&value, all: true, into: &toWake)
                fail = value.waiters
                value.waiters = []
                dropped = value.followers
                value.followers = []
                return
            }
            value.flushes += 1
            let covered = target.lsn - value.durable.lsn
            metrics.flushes.increment()
            metrics.flushDuration.recordNanoseconds(took.components.seconds * 1_000_000_000 + took.components.attoseconds / 1_000_000_000)
            if covered > 0 { metrics.recordsPerFlush.record(covered) }
            metrics.durableLag.record(value.written.lsn - target.lsn)
            value.recordsFlushed += covered
            value.durable = target
            durableBytes.store(target.bytes, ordering: .releasing)
            collectParked(&value, all: false, into: &toWake)
            resume = value.waiters.filter { $0.lsn <= target.lsn }
            value.waiters.removeAll { $0.lsn <= target.lsn }
            if !visibleOnCopy { wake = takeFollowers(&value, upTo: target.lsn) }
        }
        signalParkers(&toWake)
        state.broadcast(Self.flushed)
        if let failed {
            logger.critical("a flush failed; the WAL refuses appends until it is reopened", metadata: ["error": "\(failed)"])
        }
        for waiter in resume { waiter.continuation.resume() }
        for waiter in fail { waiter.continuation.resume(throwing: failed!) }
        for follower in wake { follower.continuation.resume(returning: true) }
        for follower in dropped { follower.continuation.resume(returning: false) }
    }
}
