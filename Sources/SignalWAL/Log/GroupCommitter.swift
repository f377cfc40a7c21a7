#if canImport(Glibc)
import Glibc
#endif
import Logging
import Synchronization

/// Flushes appended records on a dedicated thread and wakes whoever waits for them.
///
/// While one flush is in flight, later appends accumulate, and the next flush covers all of
/// them: that is group commit. The durable LSN only moves after a flush has completed, and only
/// to what that flush covered. *When* to flush is ``FlushScheduler``'s table, *how* is the
/// backend's ``Flusher``, and *who* to wake is ``DurabilityWaiters``; this type owns the state
/// they share and the thread.
///
/// A failed flush is final (PostgreSQL's "fsyncgate" lesson): the kernel may already have
/// dropped the dirty pages, so retrying could report success for data that is gone. Every
/// waiter and every later append gets ``WALError/Kind/flushFailed`` until the WAL is reopened
/// and recovery re-reads what is really on disk.
final class GroupCommitter: Sendable {
    struct State {
        /// The end of the last complete batch an appender reported (the appenders' stage).
        var written: LogEnd
        /// Staged backend: how far whole records are staged, possibly inside a batch still
        /// being copied (an appender waiting for room reports it).
        var stagedTo: UInt64
        /// What the last completed flush made durable (the committer's stage).
        var durable: LogEnd
        /// Staged backend: the stream position the last flush wrote through.
        var flushedStream: UInt64
        /// Mapped backend: files of sealed segments not yet synced, oldest first (usually none;
        /// bounded by the segments one batch can span), and the active segment's file. Files,
        /// not segments: holding a segment would keep its writable mapping alive after the
        /// writer has moved on, and every later write-back of a still-mapped page costs a TLB
        /// shoot-down on every CPU.
        var sealedFiles: [OpenFile] = []
        var activeFile: OpenFile?
        var failure: WALError?
        var stopping = false
        var stopped = false
        /// An appender is waiting for unflushed bytes to drop (below `maxBatchBytes`, or out of
        /// its way in the staging ring): flush now, whatever the policy's schedule.
        var roomWanted = false
        var waiters: DurabilityWaiters
        var flushes = 0
        var recordsFlushed: UInt64 = 0
        /// Staged `.none`: whether the closing flush has synced what earlier flushes only wrote.
        var finalSynced = false
    }

    let policy: DurabilityPolicy
    let logger: Logger
    let metrics: WALMetrics
    let scheduler: FlushScheduler
    let flusher: any Flusher
    /// See ``Configuration/maxBatchDelay`` and ``Configuration/maxBatchBytes``.
    let batchDelayNanoseconds: Int
    let maxUnflushedBytes: UInt64?
    /// Mirrors of `written.bytes` and `durable.bytes`, stored under the lock and read without
    /// it, so the common case of `waitForRoom` (far below the limit) costs two loads, not a lock.
    private let writtenBytes = Atomic<UInt64>(0)
    private let durableBytes = Atomic<UInt64>(0)
    let directory: String
    /// Async appenders waiting for unflushed bytes to drain below `maxUnflushedBytes`, keyed by
    /// the durable byte count they need.
    let roomWaiters = ProgressWaitlist()
    /// The staged backend's writer, whose room waiters this type terminates on failure and close.
    private let direct: DirectWriter?
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

    init(start: LogEnd, policy: DurabilityPolicy, directory: String, logger: Logger, metrics: WALMetrics,
         batchDelay: Duration = .zero, maxBatchBytes: Int? = nil, direct: DirectWriter? = nil) {
        self.policy = policy
        self.metrics = metrics
        scheduler = FlushScheduler(policy: policy, staged: direct != nil)
        flusher = direct.map { StagedFlusher(direct: $0) as any Flusher } ?? MappedFlusher()
        self.direct = direct
        let parts = batchDelay.components
        batchDelayNanoseconds = Int(parts.seconds) * 1_000_000_000 + Int(parts.attoseconds / 1_000_000_000)
        // `.none` never flushes on its own schedule, so it has nothing to bound.
        maxUnflushedBytes = policy == .none ? nil : maxBatchBytes.map { UInt64($0) }
        self.logger = logger
        self.directory = directory
        state = ConditionLock(State(written: start, stagedTo: start.stream, durable: start, flushedStream: start.stream,
                                    waiters: DurabilityWaiters(parkers: Self.parkers)),
                              conditions: 2 + Self.parkers)
    }

    func start() {
        let started = BackgroundThread.start(name: "signalwal-flush") { self.run() }
        thread.withLock { $0 = started }
    }

    /// Whether readers see records as soon as they are copied: only under `.none` with the mmap
    /// backend, where the copy is in the file's page cache. Staged records (io_uring backend)
    /// become visible once written to the file.
    private var visibleOnCopy: Bool { policy == .none && !scheduler.staged }

    /// What readers may see: flushed records, or under `.none` every copied record. Always the
    /// end of a complete batch.
    var visible: LogEnd {
        state.withLock { visibleOnCopy ? $0.written : $0.durable }
    }

    var durable: LogEnd { state.withLock { $0.durable } }

    var statistics: (flushes: Int, recordsFlushed: UInt64) { state.withLock { ($0.flushes, $0.recordsFlushed) } }

    /// The sticky flush failure, if any.
    var failure: WALError? { state.withLock { $0.failure } }

    private func inputs(_ value: State) -> FlushScheduler.Inputs {
        FlushScheduler.Inputs(written: value.written, stagedTo: value.stagedTo, durable: value.durable,
                              flushedStream: value.flushedStream, sealedWaiting: !value.sealedFiles.isEmpty,
                              roomWanted: value.roomWanted, stopping: value.stopping, failed: value.failure != nil,
                              finalSynced: value.finalSynced)
    }

    // MARK: From the appenders

    /// Mapped backend, under the append lock: `file` was sealed; it must be synced by the flush
    /// that covers any later LSN (I1). Under `.none` it is synced in the background now.
    func noteSealed(_ file: OpenFile) {
        state.withLock { value in
            value.sealedFiles.append(file)
            if value.activeFile === file { value.activeFile = nil }
        }
        if policy == .none { state.signal(Self.work) }
    }

    /// Mapped backend, under the append lock: records now go to `file`.
    func noteActive(_ file: OpenFile) {
        state.withLock { $0.activeFile = file }
    }

    /// Called by an appender after a batch, with the end of the log it left (and, from a
    /// staged writer waiting for room, how far it has staged inside the batch it is copying).
    /// Calls arrive out of order (outside the append lock): each value only moves forward.
    /// That is safe because every batch completes under the append lock before a later LSN is
    /// handed out, so all records up to the highest reported end are in place.
    func noteWritten(_ end: LogEnd, stagedTo: UInt64? = nil) {
        var wake: [DurabilityWaiters.Follower] = []
        let work = state.withLock { value -> Bool in
            if end.lsn > value.written.lsn {
                value.written = end
                writtenBytes.store(end.bytes, ordering: .releasing)
                if visibleOnCopy { wake = value.waiters.takeFollowers(upTo: end.lsn) }
            }
            value.stagedTo = max(value.stagedTo, stagedTo ?? end.stream, value.written.stream)
            return scheduler.shouldWake(inputs(value))
        }
        if work { state.signal(Self.work) }
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
    /// plus one batch per concurrent appender.
    func waitForRoom() throws {
        guard let needed = try roomNeeded() else { return }
        let failure: WALError? = state.wait(until: { value in
            value.durable.bytes >= needed || value.failure != nil || value.stopped
        }, on: Self.flushed) { value in
            value.failure ?? (value.stopped ? closedError() : nil)
        }
        if let failure { throw failure }
    }

    /// The non-blocking half of ``waitForRoom()``: nil when an appender may copy now; otherwise
    /// it has asked for a flush and returns the durable byte count (``roomWaiters``' position)
    /// at which there is room. Throws the sticky failure, or `closed`.
    func roomNeeded() throws -> UInt64? {
        guard let limit = maxUnflushedBytes else { return nil }
        if writtenBytes.load(ordering: .acquiring) &- durableBytes.load(ordering: .acquiring) < limit { return nil }
        let needed = try state.withLock { value throws -> UInt64? in
            if let failure = value.failure { throw failure }
            if value.stopped { throw closedError() }
            guard value.written.bytes - value.durable.bytes >= limit else { return nil }
            value.roomWanted = true
            return value.written.bytes - limit + 1
        }
        if needed != nil { state.signal(Self.work) }
        return needed
    }

    /// Resumes every async appender waiting for room, for good (after a failure, at stop):
    /// they re-check and throw.
    private func terminateRoomWaiters() {
        roomWaiters.terminate()
        direct?.stagingWaiters.terminate()
    }

    /// Blocks the calling thread until `lsn` is durable (or the flush failed, or the WAL closed).
    func waitDurable(_ lsn: LSN) throws {
        let parker = 2 + ThreadIndex.current % Self.parkers
        var registered = false
        let failure: WALError? = state.wait(until: { value in
            if value.durable.lsn >= lsn || value.failure != nil || value.stopped { return true }
            if !registered {
                value.waiters.park(lsn, on: parker)
                registered = true
            }
            return false
        }, on: parker) { value in
            // Woken by a failure or by close, which leave the list alone.
            if registered, value.durable.lsn < lsn { value.waiters.unpark(lsn, from: parker) }
            if value.durable.lsn >= lsn { return nil }
            return value.failure ?? closedError()
        }
        if let failure { throw failure }
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
                value.waiters.add(DurabilityWaiters.Waiter(lsn: lsn, continuation: continuation))
                return nil
            }
            if let outcome { continuation.resume(with: outcome) }
        }
    }

    /// Suspends until a record after `lsn` is visible to readers. Returns false when the WAL
    /// closed or the task was cancelled.
    func waitVisible(after lsn: LSN) async -> Bool {
        let id = state.withLock { $0.waiters.newFollowerID() }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Bool, Never>) in
                let immediate: Bool? = state.withLock { value in
                    let visibleLSN = visibleOnCopy ? value.written.lsn : value.durable.lsn
                    if visibleLSN > lsn { return true }
                    if value.stopped || value.failure != nil || Task.isCancelled { return false }
                    value.waiters.add(DurabilityWaiters.Follower(id: id, after: lsn, continuation: continuation))
                    return nil
                }
                if let immediate { continuation.resume(returning: immediate) }
            }
        } onCancel: {
            let cancelled = state.withLock { $0.waiters.removeFollower(id) }
            cancelled?.continuation.resume(returning: false)
        }
    }

    private func closedError() -> WALError {
        WALError(.closed, path: directory, operation: "append", hint: "The WAL was closed: open it again to continue.")
    }

    /// Flushes everything written, then stops the thread. Returns the final flush's failure.
    func stop() -> WALError? {
        state.withLock { $0.stopping = true }
        state.signal(Self.work)
        thread.withLock { $0 }?.join()
        return state.withLock { $0.failure }
    }

    // MARK: The flush thread

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
        var lastFlushStart = MonotonicClock.nanoseconds()
        var lastFlushDuration = 0
        while true {
            var interval: Int? = nil
            if let intervalNanoseconds, failure == nil {
                let elapsed = MonotonicClock.nanoseconds() - lastFlushStart
                interval = max(0, intervalNanoseconds - lastFlushDuration - elapsed)
            }
            let delayed = state.wait(until: { value in scheduler.shouldWake(inputs(value)) },
                                     on: Self.work, timeoutNanoseconds: interval) { value in
                policy == .groupCommit && batchDelayNanoseconds > 0 && !value.stopping && !value.roomWanted && value.failure == nil
            }
            if delayed {
                // commit_delay: let more appends join this flush.
                var pause = timespec(tv_sec: batchDelayNanoseconds / 1_000_000_000, tv_nsec: batchDelayNanoseconds % 1_000_000_000)
                nanosleep(&pause, nil)
            }
            let flushStart = MonotonicClock.nanoseconds()
            let job = state.withLock { value -> (job: FlushScheduler.Job, sealed: [OpenFile], active: OpenFile?)? in
                value.roomWanted = false
                guard let job = scheduler.job(inputs(value)) else { return nil }
                let sealed = value.sealedFiles
                if !sealed.isEmpty { value.sealedFiles = [] }
                return (job, sealed, value.activeFile)
            }
            if let job { flush(job.job, sealed: job.sealed, active: job.active, toWake: &toWake) }
            // Bounded so one stalled flush cannot make the next ones start back to back.
            lastFlushDuration = min(MonotonicClock.nanoseconds() - flushStart, (intervalNanoseconds ?? 0) / 2)
            lastFlushStart = flushStart
            let done = state.withLock { value in value.stopping && scheduler.mayStop(inputs(value)) }
            if done { break }
        }
        let (waiters, followers) = state.withLock { value -> ([DurabilityWaiters.Waiter], [DurabilityWaiters.Follower]) in
            value.stopped = true
            value.waiters.collectParked(upTo: value.durable.lsn, all: true, into: &toWake)
            return value.waiters.takeAll()
        }
        signalParkers(&toWake)
        state.broadcast(Self.flushed)
        terminateRoomWaiters()
        let error = failure ?? closedError()
        for waiter in waiters { waiter.continuation.resume(throwing: error) }
        for follower in followers { follower.continuation.resume(returning: false) }
    }

    /// Runs the job's I/O, then publishes its target as durable and wakes whoever it covers;
    /// or, when the I/O throws, makes the failure final.
    private func flush(_ job: FlushScheduler.Job, sealed: [OpenFile], active: OpenFile?, toWake: inout [Int]) {
        var failed: WALError? = nil
        let started = ContinuousClock.now
        metrics.flushWindow.flushStarted()
        defer { metrics.flushWindow.flushFinished() }
        do {
            try flusher.run(job, sealed: sealed, active: active)
        } catch {
            let cause = error as? WALError
            failed = WALError(.flushFailed, path: cause?.path ?? directory, operation: cause?.operation ?? "flush", errno: cause?.errno ?? 0,
                              hint: "Flushing the WAL failed, so nothing written since the last good flush is acknowledged; the kernel may have dropped those pages, so SignalWAL will not retry. Check the device (dmesg), then reopen the WAL: recovery keeps everything that is really on disk.")
        }
        let took = ContinuousClock.now - started
        var resume: [DurabilityWaiters.Waiter] = []
        var fail: [DurabilityWaiters.Waiter] = []
        var wake: [DurabilityWaiters.Follower] = []
        var dropped: [DurabilityWaiters.Follower] = []
        state.withLock { value in
            if let failed {
                metrics.flushFailures.increment()
                value.failure = failed
                value.waiters.collectParked(upTo: value.durable.lsn, all: true, into: &toWake)
                (fail, dropped) = value.waiters.takeAll()
                return
            }
            value.flushes += 1
            metrics.flushes.increment()
            metrics.flushDuration.recordNanoseconds(took.components.seconds * 1_000_000_000 + took.components.attoseconds / 1_000_000_000)
            value.flushedStream = max(value.flushedStream, job.stream)
            if value.stopping && job.sync { value.finalSynced = true }
            guard job.publish, job.target.lsn >= value.durable.lsn else { return }
            let covered = job.target.lsn - value.durable.lsn
            if covered > 0 { metrics.recordsPerFlush.record(covered) }
            metrics.durableLag.record(value.written.lsn - job.target.lsn)
            value.recordsFlushed += covered
            value.durable = job.target
            durableBytes.store(job.target.bytes, ordering: .releasing)
            value.waiters.collectParked(upTo: job.target.lsn, all: false, into: &toWake)
            resume = value.waiters.takeWaiters(upTo: job.target.lsn)
            if !visibleOnCopy { wake = value.waiters.takeFollowers(upTo: job.target.lsn) }
        }
        signalParkers(&toWake)
        state.broadcast(Self.flushed)
        roomWaiters.advance(to: durableBytes.load(ordering: .acquiring))
        if let failed {
            terminateRoomWaiters()
            logger.critical("a flush failed; the WAL refuses appends until it is reopened", metadata: ["error": "\(failed)"])
        }
        for waiter in resume { waiter.continuation.resume() }
        for waiter in fail { waiter.continuation.resume(throwing: failed!) }
        for follower in wake { follower.continuation.resume(returning: true) }
        for follower in dropped { follower.continuation.resume(returning: false) }
    }
}
