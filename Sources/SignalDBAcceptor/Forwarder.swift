import Dispatch
import Foundation
import GRPCCore
import Logging
import ServiceLifecycle
import SignalDBIngest
import SignalDBProto
import SignalDBService
import SignalWAL
import Synchronization

/// One call to the writer's `Forward` (a closure so the forwarder does not carry the gRPC
/// transport's type).
typealias ForwardCall = @Sendable (Signaldb_Internal_V1_ForwardRequest, Metadata, CallOptions) async throws -> Signaldb_Internal_V1_ForwardResponse

/// Sends the WAL's records to the writer and checkpoints what the writer made durable.
///
/// Rules (docs/ACCEPTOR.md, "Forwarding"):
/// 1. Records are read from the checkpoint on, in LSN order, in batches bounded by
///    `batchRecords` and `batchBytes` (a larger single record goes alone).
/// 2. At most `inFlight` batches await the writer at once.
/// 3. A record is done when the writer lists it as durable, or rejects it and it has been
///    written durably to the dead-letter folder. Nothing else makes it done: transient failures
///    are retried forever, with exponential backoff and jitter, behind a circuit breaker.
/// 4. The checkpoint moves only over a contiguous run of done LSNs, so a crash at any point
///    resends (never skips) a record; the writer drops what it already holds, by
///    (acceptor id, LSN).
/// 5. LSNs the WAL reports as a gap (lost to damage; recovery has reported them) are counted
///    and stepped over, so they cannot stall the rest.
final class Forwarder: Service {
    let wal: WAL
    let send: ForwardCall
    let acceptorID: String
    let settings: ForwardSettings
    let deadLetters: DeadLetters
    let limiter: TenantLimiter
    let metrics: AcceptorMetrics
    let internalKey: String?
    let logger: Logger
    let breaker: CircuitBreaker
    let health: Health

    init(wal: WAL, send: @escaping ForwardCall, acceptorID: String, settings: ForwardSettings, deadLetters: DeadLetters,
         limiter: TenantLimiter, metrics: AcceptorMetrics, internalKey: String?, health: Health, logger: Logger) {
        self.health = health
        self.wal = wal
        self.send = send
        self.acceptorID = acceptorID
        self.settings = settings
        self.deadLetters = deadLetters
        self.limiter = limiter
        self.metrics = metrics
        self.internalKey = internalKey
        self.logger = logger
        self.breaker = CircuitBreaker(threshold: settings.breakerFailures, maxOpen: settings.backoffMax, metrics: metrics, logger: logger)
    }

    func run() async throws {
        // In-flight sends and the wait for new records end on graceful shutdown; what was not
        // acknowledged is sent again after the restart.
        do {
            try await cancelWhenGracefulShutdown {
                try await self.forwardForever()
            }
        } catch is CancellationError {
            return  // the graceful shutdown itself
        } catch {
            // The WAL failed under the forwarder (transient read and checkpoint errors are
            // retried in place). Throwing ends the service group, so the process exits 1 and
            // its supervisor restarts it: recovery then runs on the WAL.
            logger.critical("the forwarder stopped: the WAL failed", metadata: ["error": "\(error)"])
            health.setReady(false, detail: "forwarder stopped: \(error)")
            throw error
        }
    }

    /// Runs `body` until it succeeds; errors are retried with backoff unless the WAL itself has
    /// failed (then they are fatal) or the task is cancelled.
    func retrying<T>(_ what: String, _ body: () async throws -> T) async throws -> T {
        try await Backoff.retrying("forwarder: " + what, max: settings.backoffMax, wal: wal, logger: logger, body)
    }

    func forwardForever() async throws {
        let tracker = DoneTracker(checkpoint: wal.checkpointLSN)
        let recoveredThrough = wal.nextLSN - 1
        var next = wal.checkpointLSN + 1
        try await withThrowingTaskGroup(of: Void.self) { group in
            var running = 0
            while !Task.isCancelled {
                let batch = try await retrying("reading the WAL") { try await readBatch(from: next, tracker: tracker) }
                switch batch {
                case .records(let records):
                    for r in records where r.lsn <= recoveredThrough {
                        // Appended before this start: charge its tenant's backlog share now.
                        if let e = try? Envelope(decoding: r.payload) { limiter.charge(lsn: r.lsn, tenant: e.tenant, bytes: r.payload.count) }
                    }
                    next = records.last!.lsn + 1
                    if running == settings.inFlight {
                        try await group.next()
                        running -= 1
                        try await advanceCheckpoint(tracker)
                    }
                    running += 1
                    group.addTask { await self.deliver(records, tracker: tracker) }
                case .skipped(let range):
                    next = range.upperBound + 1
                    try await advanceCheckpoint(tracker)
                case .none:
                    if running > 0 {
                        // Caught up while sends run: settle one, then look again.
                        try await group.next()
                        running -= 1
                        try await advanceCheckpoint(tracker)
                    } else {
                        try await advanceCheckpoint(tracker)
                        try await waitForRecord(next)
                    }
                }
            }
            group.cancelAll()
        }
    }

    enum Batch { case records([Record]), skipped(ClosedRange<LSN>), none }

    /// Reads the next batch off the cooperative pool (it copies from the page cache or disk).
    func readBatch(from lsn: LSN, tracker: DoneTracker) async throws -> Batch {
        let wal = self.wal, limit = settings.batchRecords, maxBytes = settings.batchBytes
        let result: Result<Batch, any Error> = await withCheckedContinuation { continuation in
            DispatchQueue.global().async {
                do {
                    var records: [Record] = []
                    var bytes = 0
                    for record in try wal.records(from: lsn, limit: limit) {
                        if !records.isEmpty && bytes + record.payload.count > maxBytes { break }
                        records.append(record)
                        bytes += record.payload.count
                    }
                    continuation.resume(returning: .success(records.isEmpty ? .none : .records(records)))
                } catch let error as WALError {
                    if case .gap(let missing) = error.kind {
                        continuation.resume(returning: .success(.skipped(missing)))
                    } else {
                        continuation.resume(returning: .failure(error))
                    }
                } catch {
                    continuation.resume(returning: .failure(error))
                }
            }
        }
        let batch = try result.get()
        if case .skipped(let missing) = batch {
            // Only the LSNs recovery reported lost are lost; the rest of a gap was never handed
            // out (the LSN floor: raised by a restore, or by recovery past what it could not keep).
            // Crash leftovers were never acknowledged; overlapping entries count once.
            let overlaps = wal.recoveryReport.damage.filter { !$0.isCrashLeftover }.compactMap(\.lostLSNs).compactMap { range -> ClosedRange<LSN>? in
                let low = max(range.lowerBound, missing.lowerBound), high = min(range.upperBound, missing.upperBound)
                return low <= high ? low...high : nil
            }.sorted { $0.lowerBound < $1.lowerBound }
            var lost: UInt64 = 0, covered: LSN = 0  // up to `covered`, counted
            for range in overlaps where range.upperBound > covered || covered == 0 {
                let low = covered == 0 ? range.lowerBound : max(range.lowerBound, covered + 1)
                if low <= range.upperBound { lost += range.upperBound - low + 1 }
                covered = max(covered, range.upperBound)
            }
            if lost > 0 {
                logger.error("WAL records are missing (lost to damage that recovery reported); stepping over them",
                             metadata: ["lsns": "\(missing)", "count": "\(lost)"])
                metrics.lost(count: Int(clamping: lost))
            } else {
                logger.notice("stepping over LSNs the WAL never handed out (its LSN floor, raised by a restore or by recovery)",
                              metadata: ["lsns": "\(missing)"])
            }
            tracker.markDone(missing)
        }
        return batch
    }

    /// Suspends until `lsn` is visible (or the WAL reports a gap there, which the next read
    /// steps over).
    func waitForRecord(_ lsn: LSN) async throws {
        updateLag()
        var iterator = wal.tail(from: lsn, limit: 1).makeAsyncIterator()
        do {
            _ = try await iterator.next()
        } catch is CancellationError {
            throw CancellationError()
        } catch {
            // A gap, or a transient read error (say EMFILE mapping a segment): the next read,
            // which retries, reports and handles it. Only a failed WAL ends the forwarder.
            if let failure = wal.failure { throw failure }
            if Task.isCancelled { throw CancellationError() }
            try await Task.sleep(for: .milliseconds(100))
        }
    }

    func advanceCheckpoint(_ tracker: DoneTracker) async throws {
        guard let through = tracker.takeAdvance() else { return }
        _ = try await retrying("checkpointing") { try await wal.checkpoint(upTo: through) }
        limiter.release(through: through)
        updateLag()
    }

    func updateLag() {
        let backlog = wal.backlogStatus
        metrics.forwardLag(records: backlog.records, seconds: backlog.oldestRecordAge)
    }

    /// Sends one batch until every record in it is done (rule 3). Returns early only when
    /// cancelled.
    func deliver(_ records: [Record], tracker: DoneTracker) async {
        var pending = [LSN: Record](uniqueKeysWithValues: records.map { ($0.lsn, $0) })
        // A record that is not an envelope can never be stored: dead-letter it here.
        for record in records where (try? Envelope(decoding: record.payload)) == nil {
            if deadLetter(record, reason: "not a valid envelope") { pending[record.lsn] = nil; tracker.markDone([record.lsn]) }
        }
        var attempt = 0
        while !pending.isEmpty && !Task.isCancelled {
            await breaker.waitUntilClosed()
            if Task.isCancelled { return }
            var request = Signaldb_Internal_V1_ForwardRequest()
            request.acceptorID = acceptorID
            // Lets the writer forget everything at or below it (its marks stay small).
            request.settledLsn = wal.checkpointLSN
            request.records = pending.keys.sorted().map { lsn in
                var r = Signaldb_Internal_V1_ForwardedRecord()
                r.lsn = lsn
                r.envelope = Data(pending[lsn]!.payload)
                return r
            }
            var metadata: Metadata = [:]
            if let internalKey { metadata.addString(internalKey, forKey: "x-signaldb-internal-key") }
            var options = CallOptions.defaults
            options.timeout = settings.timeout
            do {
                let response = try await send(request, metadata, options)
                breaker.succeeded()
                var done: [LSN] = []
                for lsn in response.durableLsns where pending[lsn] != nil {
                    pending[lsn] = nil
                    done.append(lsn)
                }
                for rejection in response.rejected {
                    guard let record = pending[rejection.lsn] else { continue }
                    if deadLetter(record, reason: rejection.reason) {
                        pending[rejection.lsn] = nil
                        done.append(rejection.lsn)
                    }
                }
                tracker.markDone(done)
                metrics.forwarded(records: done.count)
                if pending.isEmpty { return }
                // The writer took part of the batch (it was busy), or a dead letter could not be
                // written: resend the rest after a backoff that grows while nothing moves.
                attempt = done.isEmpty ? attempt + 1 : 0
                try? await Task.sleep(for: Backoff.delay(attempt: max(1, attempt), max: settings.backoffMax))
            } catch {
                if Task.isCancelled { return }
                attempt += 1
                let reason = (error as? RPCError).map { "\($0.code)" } ?? "transport"
                metrics.forwardFailure(reason: reason)
                breaker.failed(error: error)
                let delay = Backoff.delay(attempt: attempt, max: settings.backoffMax)
                if attempt == 1 || attempt % 20 == 0 {
                    logger.warning("forward to the writer failed; retrying (the records stay in the WAL)",
                                   metadata: ["error": "\(error)", "attempt": "\(attempt)", "retryIn": "\(delay)", "records": "\(pending.count)"])
                }
                try? await Task.sleep(for: delay)
            }
        }
    }

    /// True once the record is durably in the dead-letter folder.
    func deadLetter(_ record: Record, reason: String) -> Bool {
        do {
            try deadLetters.write(lsn: record.lsn, envelope: record.payload, reason: reason)
            metrics.deadLettered(count: 1)
            return true
        } catch {
            logger.error("cannot write a dead letter; the record stays in the WAL and will be sent again",
                         metadata: ["lsn": "\(record.lsn)", "error": "\(error)"])
            return false
        }
    }
}

/// The done LSNs above the checkpoint, and the contiguous prefix that can be checkpointed
/// (rule 4). Records are kept one by one (bounded by the records in flight); gaps (LSNs with no
/// record: damage recovery reported, or the LSN floor a restore raised, which can be 2^40 LSNs
/// wide) are kept whole as ranges, never expanded, and there are only ever a few.
final class DoneTracker: Sendable {
    struct State {
        var checkpoint: LSN
        var done = Set<LSN>()
        var gaps: [ClosedRange<LSN>] = []
        var advanced = false

        mutating func advance() {
            var moved = false
            while true {
                if done.remove(checkpoint + 1) != nil {
                    checkpoint += 1
                } else if let i = gaps.firstIndex(where: { $0.lowerBound <= checkpoint + 1 }) {
                    checkpoint = max(checkpoint, gaps.remove(at: i).upperBound)
                } else {
                    break
                }
                moved = true
            }
            guard moved else { return }
            advanced = true
            // After a jump over a gap, what it passed is settled.
            if done.contains(where: { $0 <= checkpoint }) { done = done.filter { $0 > checkpoint } }
            gaps.removeAll { $0.upperBound <= checkpoint }
        }
    }
    private let state: Mutex<State>

    init(checkpoint: LSN) { state = Mutex(State(checkpoint: checkpoint)) }

    func markDone(_ range: ClosedRange<LSN>) {
        state.withLock { s in
            guard range.upperBound > s.checkpoint else { return }
            s.gaps.append(max(range.lowerBound, s.checkpoint + 1)...range.upperBound)
            s.advance()
        }
    }

    func markDone(_ lsns: [LSN]) {
        state.withLock { s in
            for lsn in lsns where lsn > s.checkpoint { s.done.insert(lsn) }
            s.advance()
        }
    }

    /// The new checkpoint, once, if it moved since the last call.
    func takeAdvance() -> LSN? {
        state.withLock { s in
            guard s.advanced else { return nil }
            s.advanced = false
            return s.checkpoint
        }
    }
}

/// Opens after `threshold` consecutive failures: sends wait (the backoff, up to `maxOpen`), then
/// one goes through as a probe; a success closes it.
final class CircuitBreaker: Sendable {
    struct State {
        var failures = 0
        var openUntil: ContinuousClock.Instant?
        var opens = 0
    }
    private let state = Mutex(State())
    let threshold: Int
    let maxOpen: Duration
    let metrics: AcceptorMetrics
    let logger: Logger

    init(threshold: Int, maxOpen: Duration, metrics: AcceptorMetrics, logger: Logger) {
        self.threshold = threshold
        self.maxOpen = maxOpen
        self.metrics = metrics
        self.logger = logger
    }

    func waitUntilClosed() async {
        while let until = state.withLock({ $0.openUntil }), until > .now {
            try? await Task.sleep(until: until, clock: .continuous)
            if Task.isCancelled { return }
        }
    }

    func succeeded() {
        let wasOpen = state.withLock { s -> Bool in
            let open = s.opens > 0
            s = State()
            return open
        }
        if wasOpen {
            metrics.circuit(open: false)
            logger.notice("the writer answers again; forwarding resumed")
        }
    }

    func failed(error: any Error) {
        let opened = state.withLock { s -> Duration? in
            s.failures += 1
            guard s.failures >= threshold else { return nil }
            s.opens += 1
            let wait = Backoff.delay(attempt: s.opens, max: maxOpen)
            s.openUntil = .now + wait
            s.failures = 0
            return wait
        }
        if let opened {
            metrics.circuit(open: true)
            logger.warning("circuit breaker open: the writer failed \(threshold) times in a row; pausing sends",
                           metadata: ["pause": "\(opened)", "error": "\(error)"])
        }
    }
}
