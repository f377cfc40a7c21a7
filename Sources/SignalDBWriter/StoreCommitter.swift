import Foundation
import Logging
import ServiceLifecycle
import SignalDBIngest
import SignalDBLayout
import SignalDBService
import SignalDBStore
import SignalWAL
import Synchronization

/// Moves what the WAL holds into the store, and only then lets the WAL go.
///
/// Rules (docs/WRITER.md, "Storing"):
/// - S1. Records are read in writer-LSN order from the one after the last stored, in
///   transactions of at most `rows` rows and `records` records; a record waits at most
///   `interval` for others to share its transaction.
/// - S2. One transaction holds the rows **and** the progress: the last writer LSN stored and,
///   per acceptor, the floor and the acceptor LSNs stored above it.
/// - S3. The WAL is checkpointed only up to a committed writer LSN.
/// - S4. A failed commit is retried, the same rows and progress, with backoff and forever: the
///   WAL keeps the data, readiness goes off, and the forward path pushes back once the backlog
///   reaches its bound. Only a record that can never become rows is dead-lettered (durably,
///   before the commit that passes it), never by attempt count.
/// - S5. On graceful shutdown it commits everything the WAL holds, then returns.
final class StoreCommitter: Service, Sendable {
    let wal: WAL
    let store: any Store
    let marks: AcceptorMarks
    let batching: CommitBatching
    let deadLetters: DeadLetters
    let health: Health
    let metrics: WriterMetrics
    let maxBacklogBytes: Int
    let logger: Logger
    /// Where storing resumes: the store's progress, reconciled with the WAL at open.
    let start: (committed: LSN, progress: StoreProgress)
    private let stopping = Atomic<Bool>(false)
    private let failing = Atomic<Bool>(false)
    /// The last writer LSN in the store, for the lag gauges.
    let committedLSN = Atomic<UInt64>(0)

    init(wal: WAL, store: any Store, marks: AcceptorMarks, batching: CommitBatching, deadLetters: DeadLetters, health: Health,
         metrics: WriterMetrics, maxBacklogBytes: Int, committed: LSN, progress: StoreProgress, logger: Logger) {
        self.wal = wal
        self.store = store
        self.marks = marks
        self.batching = batching
        self.deadLetters = deadLetters
        self.health = health
        self.metrics = metrics
        self.maxBacklogBytes = maxBacklogBytes
        self.start = (committed, progress)
        self.logger = logger
        committedLSN.store(committed, ordering: .relaxed)
    }

    func run() async throws {
        do {
            try await withGracefulShutdownHandler {
                try await self.commitForever()
            } onGracefulShutdown: {
                self.stopping.store(true, ordering: .relaxed)
            }
        } catch is CancellationError {
            // Past the shutdown bound (a store that does not answer): what was not stored stays
            // in the WAL for the next start. Not a failure of the process.
            logger.warning("shutdown bound reached before everything was stored; the rest stays in the WAL",
                           metadata: ["storedThrough": "\(committedLSN.load(ordering: .relaxed))", "walEnd": "\(wal.nextLSN - 1)"])
        } catch {
            // The WAL failed under the committer, or the store's progress conflicts with it:
            // ending the group makes the process exit 1, so its supervisor restarts it and
            // recovery and reconciling run.
            logger.critical("the committer stopped", metadata: ["error": "\(error)"])
            health.setReady(false, detail: "committer stopped: \(error)")
            throw error
        }
    }

    var isFailing: Bool { failing.load(ordering: .relaxed) }

    /// Ready while commits succeed and the backlog is below its bound.
    func refreshReadiness() {
        let full = wal.liveBytes >= maxBacklogBytes
        if let failure = wal.failure {
            health.setReady(false, detail: "the WAL failed: \(failure)")
        } else if isFailing {
            return  // the failure's own detail stays
        } else if full {
            health.setReady(false, detail: "the WAL backlog (\(wal.liveBytes) bytes) is at WRITER_WAL_MAX_BYTES (\(maxBacklogBytes)): the store is behind")
        } else if !health.isReady {
            health.setReady(true, detail: "storing; WAL \(wal.directory)")
        }
    }

    func updateLag() {
        let backlog = wal.backlogStatus
        metrics.storeLag(records: backlog.records, seconds: backlog.oldestRecordAge)
        let size = marks.size()
        metrics.marks(acceptors: size.acceptors, lsns: size.lsns)
    }

    /// One transaction's worth of decoded records.
    struct Batch: Sendable {
        var rows = StoreRows()
        /// (acceptor, acceptor LSN) of every record in it, rows or dead letter.
        var sources: [(String, LSN)] = []
        var deadLetters: [(lsn: LSN, bytes: [UInt8], reason: String, acceptor: String?, acceptorLSN: LSN?)] = []
        var records = 0
        var lost = 0
        var last: LSN = 0
        /// Writer LSNs of the records in it (rows or dead letter).
        var storedLSNs: [LSN] = []
    }

    func commitForever() async throws {
        var next = start.committed + 1
        var stored = start.progress.acceptors
        while !Task.isCancelled {
            var batch = Batch()
            let deadline = ContinuousClock.now + batching.interval
            // S1: gather until the batch is full, the interval is up, or nothing more comes.
            while batch.rows.count < batching.rows && batch.records < batching.records {
                let read = try await readAndDecode(from: next, limit: batching.records - batch.records, into: &batch)
                if read { next = batch.last + 1; continue }
                if stopping.load(ordering: .relaxed) || Task.isCancelled { break }
                if let failure = wal.failure { throw failure }
                if batch.records == 0 && batch.lost == 0 {
                    updateLag()
                    await waitForRecord(next, timeout: .milliseconds(100))
                    continue
                }
                let now = ContinuousClock.now
                if now >= deadline { break }
                await waitForRecord(next, timeout: deadline - now)
            }
            if batch.records == 0 && batch.lost == 0 {
                if stopping.load(ordering: .relaxed) || Task.isCancelled { return }  // S5: all stored
                continue
            }
            try await writeDeadLetters(batch)
            // S2: the progress that goes in the same transaction.
            for (acceptor, lsn) in batch.sources {
                var p = stored[acceptor] ?? AcceptorProgress(floor: 0, held: LSNRanges())
                if lsn > p.floor { p.held.insert(lsn) }
                stored[acceptor] = p
            }
            for (acceptor, floor) in marks.floors() {
                var p = stored[acceptor] ?? AcceptorProgress(floor: 0, held: LSNRanges())
                if floor > p.floor {
                    p.floor = floor
                    p.held.removeAll(atOrBelow: floor)
                }
                stored[acceptor] = p
            }
            let progress = StoreProgress(writerLSN: batch.last, acceptors: stored)
            try await commit(batch, progress)
            try? await removeStaleDeadLetters(batch)
            // S3.
            _ = try await retrying("checkpointing the WAL") { try await self.wal.checkpoint(upTo: batch.last) }
            committedLSN.store(batch.last, ordering: .relaxed)
            updateLag()
            refreshReadiness()
        }
    }

    /// Reads and decodes the records from `lsn` on (off the cooperative pool). False when there
    /// was nothing to read.
    func readAndDecode(from lsn: LSN, limit: Int, into batch: inout Batch) async throws -> Bool {
        let wal = self.wal, maxRows = batching.rows - batch.rows.count
        let outcome = try await retrying("reading the WAL") {
            try await Blocking.run { () throws -> ReadOutcome in
                do {
                    var out = Batch()
                    for record in try wal.records(from: lsn, limit: limit) {
                        Self.decode(record, into: &out)
                        if out.rows.count >= maxRows { break }
                    }
                    return .records(out)
                } catch let error as WALError {
                    if case .gap(let missing) = error.kind { return .gap(missing) }
                    throw error
                }
            }
        }
        switch outcome {
        case .records(let more):
            guard more.records > 0 else { return false }
            batch.rows.append(more.rows)
            batch.sources += more.sources
            batch.deadLetters += more.deadLetters
            batch.storedLSNs += more.storedLSNs
            batch.records += more.records
            batch.last = more.last
            return true
        case .gap(let missing):
            let count = Int(missing.upperBound - missing.lowerBound + 1)
            logger.error("writer WAL records are missing (lost to damage that recovery reported); stepping over them",
                         metadata: ["lsns": "\(missing)", "count": "\(count)"])
            metrics.lost(count: count)
            batch.lost += count
            batch.last = missing.upperBound
            return true
        }
    }

    enum ReadOutcome: Sendable { case records(Batch), gap(ClosedRange<LSN>) }

    static func decode(_ record: Record, into batch: inout Batch) {
        batch.records += 1
        batch.last = record.lsn
        batch.storedLSNs.append(record.lsn)
        let source: WriterRecord
        do {
            source = try WriterRecord(decoding: record.payload)
        } catch {
            batch.deadLetters.append((record.lsn, record.payload, "\(error)", nil, nil))
            return
        }
        batch.sources.append((source.acceptorID, source.acceptorLSN))
        do {
            let envelope = try Envelope(decoding: source.envelope)
            batch.rows.append(try RowMapper.rows(for: envelope))
        } catch {
            batch.deadLetters.append((record.lsn, source.envelope, "\(error)", source.acceptorID, source.acceptorLSN))
        }
    }

    /// S4: dead letters are durable before the commit whose progress passes them.
    func writeDeadLetters(_ batch: Batch) async throws {
        for letter in batch.deadLetters {
            let deadLetters = self.deadLetters
            let acceptor = letter.acceptor, acceptorLSN = letter.acceptorLSN
            try await retrying("writing a dead letter") {
                try await Blocking.run {
                    var extra: [String: Any] = [:]
                    if let acceptor { extra["acceptor_id"] = acceptor }
                    if let acceptorLSN { extra["acceptor_lsn"] = acceptorLSN }
                    try deadLetters.write(lsn: letter.lsn, envelope: letter.bytes, reason: letter.reason, extra: extra)
                }
            }
            metrics.deadLettered(count: 1)
        }
    }

    /// A dead letter whose record was just stored as rows is stale: it was written before a
    /// commit that never landed, and a newer build has mapped the record since. Left in place,
    /// a replay would store the record a second time.
    func removeStaleDeadLetters(_ batch: Batch) async throws {
        let folder = deadLetters.directory
        guard FileManager.default.fileExists(atPath: folder) else { return }
        let dead = Set(batch.deadLetters.map(\.lsn))
        let stored = batch.storedLSNs.filter { !dead.contains($0) }
        let logger = self.logger
        try await Blocking.run {
            var removed = 0
            for lsn in stored {
                let base = folder + "/" + ServiceLayout.deadLetterBaseName(lsn: lsn)
                if unlink(base + ServiceLayout.metadataSuffix) == 0 {
                    unlink(base + ServiceLayout.envelopeSuffix)
                    removed += 1
                    logger.notice("removed a stale dead letter: its record is now stored", metadata: ["lsn": "\(lsn)"])
                }
            }
            if removed > 0 { try DurableFile.fsyncDirectory(folder) }
        }
    }

    /// S2 and S4: one transaction, retried until it succeeds.
    func commit(_ batch: Batch, _ progress: StoreProgress) async throws {
        let store = self.store, rows = batch.rows
        var attempt = 0
        while true {
            let began = ContinuousClock.now
            do {
                let outcome = try await Blocking.run { try store.commit(rows, progress: progress) }
                metrics.commit(rows: StoreRowCounts(spans: rows.spans.count - outcome.duplicateSpans, logs: rows.logs.count,
                                                    metricPoints: rows.metricPoints.count),
                               duration: ContinuousClock.now - began)
                metrics.duplicates(kind: "span", count: outcome.duplicateSpans)
                if attempt > 0 {
                    logger.notice("the store takes commits again", metadata: ["attempts": "\(attempt + 1)"])
                    failing.store(false, ordering: .relaxed)
                    metrics.storeFailing(false)
                    health.setReady(false, detail: "store recovered; catching up")
                }
                return
            } catch {
                if Task.isCancelled { throw CancellationError() }
                attempt += 1
                metrics.commitFailure(reason: Self.reason(error))
                if (error as? StoreCommitError)?.kind == .conflict {
                    logger.critical("the store's progress is past the writer's: stopping so that start-up reconciles again", metadata: ["error": "\(error)"])
                    throw error
                }
                // A failed WAL is final until the process reopens it: retrying the store here
                // (on the same dead disk, often) would leave a writer that can take nothing and
                // never exits. The batch is not checkpointed, so the next start commits it.
                if let failure = wal.failure { throw failure }
                if attempt == 1 {
                    failing.store(true, ordering: .relaxed)
                    metrics.storeFailing(true)
                }
                health.setReady(false, detail: "the store is failing (\(error)); the WAL holds the data and commits are retried")
                let delay = Backoff.delay(attempt: attempt, max: batching.backoffMax)
                if attempt == 1 || attempt % 20 == 0 {
                    logger.error("store commit failed; retrying (the WAL keeps the records)",
                                 metadata: ["error": "\(error)", "attempt": "\(attempt)", "retryIn": "\(delay)", "rows": "\(rows.count)",
                                            "throughLSN": "\(batch.last)"])
                }
                updateLag()
                try await Task.sleep(for: delay)
            }
        }
    }

    /// The failure metric's `reason` label: busy, full, readonly, io or other.
    static func reason(_ error: any Error) -> String {
        (error as? StoreCommitError)?.kind.rawValue ?? "other"
    }

    func retrying<T>(_ what: String, _ body: () async throws -> T) async throws -> T {
        try await Backoff.retrying("committer: " + what, max: batching.backoffMax, wal: wal, logger: logger, body)
    }

    /// Suspends until `lsn` is visible, `timeout` passes, or the task is cancelled (the record
    /// itself is read afterwards, off the cooperative pool).
    func waitForRecord(_ lsn: LSN, timeout: Duration) async {
        let wal = self.wal
        await withTaskGroup(of: Void.self) { group in
            group.addTask { _ = await wal.waitForRecord(after: lsn - 1) }
            group.addTask { try? await Task.sleep(for: timeout) }
            await group.next()
            group.cancelAll()
        }
    }
}
