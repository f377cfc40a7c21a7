import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import Logging
import Prometheus
import ServiceLifecycle
import SignalDBIngest
import SignalDBProto
import SignalDBService
import SignalDBStore
import SignalWAL

/// The writer process: opens (recovers) its WAL and its store, rebuilds the per-acceptor
/// marks, then runs the Forward listener and the store committer in one ServiceGroup beside the
/// admin listener. SIGTERM or SIGINT turns readiness off, lets the in-flight forwards finish
/// (new ones are refused), commits everything the WAL holds, checkpoints, and closes the WAL
/// and the store, within WRITER_SHUTDOWN_TIMEOUT_SECONDS.
public enum Writer {
    public static func run(settings: WriterSettings, registry: PrometheusCollectorRegistry, logger: Logger) async throws {
        let health = Health()
        let metrics = WriterMetrics()
        metrics.exportZeros()
        metrics.ready(false)
        if settings.walDirectoryIsDefault {
            logger.warning("WRITER_WAL_DIR is not set: using the default relative directory, which will not persist across container restarts. Set it to a path on a persistent volume.",
                           metadata: ["path": "\(settings.walDirectory)"])
        } else if !settings.walDirectory.hasPrefix("/") {
            logger.warning("WRITER_WAL_DIR is a relative path: it resolves against the working directory, which in a container is not a persistent volume. Use an absolute path on one.",
                           metadata: ["path": "\(settings.walDirectory)"])
        }
        if settings.storeIsDefault {
            logger.warning("WRITER_STORE is not set: using the default relative path, which will not persist across container restarts. Set it to sqlite:<path on a persistent volume>.",
                           metadata: ["path": "\(settings.sqlitePath)"])
        }
        if settings.internalKey == nil {
            logger.notice("SIGNALDB_INTERNAL_KEY is not set: any client that reaches WRITER_GRPC_ADDR may forward records")
        }
        try ServiceDirectory.ensure(settings.walDirectory, setting: "WRITER_WAL_DIR", access: settings.common.fileAccess, logger: logger)
        let storeDirectory = (settings.sqlitePath as NSString).deletingLastPathComponent
        try ServiceDirectory.ensure(storeDirectory.isEmpty ? "." : storeDirectory, setting: "WRITER_STORE",
                                    access: settings.common.fileAccess, logger: logger)

        let scrape = ScrapeHook()
        try await AdminServer.running(address: settings.adminAddress, setting: "WRITER_ADMIN_ADDR", health: health, registry: registry,
                                      beforeScrape: { scrape.run(); metrics.ready(health.isReady) }, logger: logger) { watch in
            try await runAfterAdmin(settings: settings, health: health, metrics: metrics, scrape: scrape, adminWatch: watch, logger: logger)
        }
    }

    static func runAfterAdmin(settings: WriterSettings, health: Health, metrics: WriterMetrics, scrape: ScrapeHook,
                              adminWatch: AdminWatch, logger: Logger) async throws {
        health.setDetail("recovering the WAL in \(settings.walDirectory)")
        var walConfiguration = Configuration()
        walConfiguration.segmentSize = settings.walSegmentBytes
        walConfiguration.maxRecordSize = settings.maxRecordBytes
        walConfiguration.spareSegments = settings.walSpareSegments
        // Group commit only: the committer stores what it reads, so the store must never get
        // ahead of what the WAL has on disk (docs/WRITER.md, "Why group commit only").
        walConfiguration.durability = .groupCommit
        walConfiguration.maxLiveBytes = settings.walMaxBytes
        walConfiguration.maxBatchBytes = settings.walBatchBytes
        walConfiguration.logger = Telemetry.walLogger(service: "writer")
        walConfiguration.fileAccess = settings.common.fileAccess
        walConfiguration.metricDimensions = [("service", "signaldb-writer")]
        let started = ContinuousClock.now
        let wal = try await WAL.open(directory: settings.walDirectory, configuration: walConfiguration)
        let report = wal.recoveryReport
        if !report.isClean {
            logger.error("WAL recovery found damage; see the quarantine folder and signalwal_recovery_* metrics", metadata: ["report": "\(report)"])
        }
        let store: SQLiteStore
        let resume: (committed: LSN, progress: StoreProgress, walRecords: [(acceptor: String, lsn: LSN)])
        do {
            health.setDetail("opening the store \(settings.sqlitePath)")
            let path = settings.sqlitePath, timeout = settings.storeBusyTimeout
            let access = settings.common.fileAccess
            store = try await Blocking.run { try SQLiteStore(path: path, busyTimeout: timeout, fileMode: access.fileMode) }
            health.setDetail("rebuilding the per-acceptor marks from the store and the WAL")
            resume = try await Blocking.run { [store] in
                let resume = try reconcile(wal: wal, store: store, logger: logger)
                if resume.corrected {
                    // Stored before anything is served, so a crash before the first commit does
                    // not make the next start trust the old progress again (and skip new
                    // records that reuse its writer LSNs).
                    _ = try store.commit(StoreRows(), progress: resume.progress)
                }
                return (resume.committed, resume.progress, resume.walRecords)
            }
        } catch {
            try? await wal.close()
            throw error
        }
        let marks = AcceptorMarks()
        marks.restore(from: resume.progress, walRecords: resume.walRecords)
        logger.info("WAL and store open", metadata: [
            "wal": "\(settings.walDirectory)", "store": "\(settings.sqlitePath)", "recoveredIn": "\(ContinuousClock.now - started)",
            "checkpoint": "\(wal.checkpointLSN)", "storedThrough": "\(resume.committed)", "toStore": "\(wal.nextLSN - 1 - resume.committed)",
            "acceptors": "\(resume.progress.acceptors.count)", "clean": "\(report.isClean)",
        ])

        let committer = StoreCommitter(
            wal: wal, store: store, marks: marks, batching: settings.batch,
            deadLetters: DeadLetters(walDirectory: settings.walDirectory, access: settings.common.fileAccess, logger: logger), health: health, metrics: metrics,
            maxBacklogBytes: settings.walMaxBytes, committed: resume.committed, progress: resume.progress, logger: logger)
        let forward = ForwardService(wal: wal, marks: marks, gate: AsyncLock(), maxBacklogBytes: settings.walMaxBytes,
                                     maxRecordBytes: settings.maxRecordBytes, internalKey: settings.internalKey, health: health,
                                     metrics: metrics, logger: logger, backpressure: BackpressureLog(logger: logger))
        let server = GRPCServer(
            transport: .http2NIOPosix(
                address: settings.grpcAddress.grpcBindAddress, transportSecurity: .plaintext,
                config: .defaults { $0.rpc.maxRequestPayloadSize = settings.maxForwardBytes }),
            services: [forward])
        scrape.set { wal.refreshMetrics(); committer.updateLag(); committer.refreshReadiness() }

        // Shutdown runs in reverse: readiness off, the listener finishes its in-flight forwards,
        // then the committer stores everything the WAL holds.
        var groupConfiguration = ServiceGroupConfiguration(
            services: [
                .drainingOnFailure(adminWatch),
                .drainingOnFailure(committer),
                .drainingOnFailure(GRPCServerService(server)),
                .drainingOnFailure(ReadinessService(health: health, drainDelay: .zero)),
            ],
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger)
        // A store that does not answer cannot hold the shutdown: past the bound the committer is
        // cancelled and what it had not stored stays in the WAL for the next start.
        groupConfiguration.maximumGracefulShutdownDuration = settings.shutdownTimeout
        // A commit in flight cannot be cancelled: give it its busy timeout to end before
        // ServiceLifecycle gives up on the group.
        groupConfiguration.maximumCancellationDuration = .seconds(10) + .milliseconds(Int64(settings.storeBusyTimeout * 1000))
        let group = ServiceGroup(configuration: groupConfiguration)
        health.setReady(true, detail: "storing; WAL \(settings.walDirectory), store \(settings.sqlitePath)")
        metrics.ready(true)
        logger.info("signaldb-writer ready", metadata: [
            "grpc": "\(settings.grpcAddress)", "admin": "\(settings.adminAddress)", "store": "\(settings.sqlitePath)",
        ])
        var failure: (any Error)?
        do {
            try await group.run()
        } catch {
            failure = error
            logger.error("a service failed; shutting down", metadata: ["error": "\(error)"])
        }
        metrics.ready(false)
        do {
            try await wal.close()
        } catch {
            logger.error("closing the WAL failed", metadata: ["error": "\(error)"])
            failure = failure ?? error
        }
        try? await Blocking.run { try store.close() }
        logger.info("signaldb-writer stopped", metadata: ["checkpoint": "\(wal.checkpointLSN)", "storedThrough": "\(committer.committedLSN.load(ordering: .relaxed))"])
        if let failure { throw failure }
    }

    /// Where storing resumes, and the acceptor LSNs the WAL holds (W3). Blocking.
    ///
    /// - The store is ahead of the WAL's end: the WAL directory was replaced (or damage cost it
    ///   its tail; group commit never stores what is not on disk). Storing resumes from the
    ///   WAL's checkpoint. For a replaced WAL its records are new to the store; if the same WAL
    ///   lost its tail, the records between its checkpoint and its end are stored again (spans
    ///   are caught by their natural key, logs and points are not). Logged as an error.
    /// - The store is behind the WAL's checkpoint: the store was replaced or restored from an
    ///   older backup. What lies between is gone from both; storing resumes at the checkpoint.
    /// `corrected` says the progress was changed here and must be stored before serving.
    static func reconcile(wal: WAL, store: any Store, logger: Logger) throws
        -> (committed: LSN, progress: StoreProgress, walRecords: [(acceptor: String, lsn: LSN)], corrected: Bool)
    {
        var progress = try store.progress()
        let end = wal.nextLSN - 1, checkpoint = wal.checkpointLSN
        var committed = progress.writerLSN
        var corrected = false
        if committed > end {
            corrected = true
            logger.error("the store has rows through writer LSN \(committed) but the WAL ends at \(end): the WAL directory was replaced or lost records; storing resumes from the WAL's checkpoint",
                         metadata: ["checkpoint": "\(checkpoint)"])
            committed = checkpoint
            progress.writerLSN = checkpoint
        } else if committed < checkpoint {
            corrected = true
            logger.error("the store has rows only through writer LSN \(committed) but the WAL was checkpointed at \(checkpoint): the store was replaced or restored from an older backup, and the records between are in neither",
                         metadata: ["missing": "\(committed + 1)...\(checkpoint)"])
            committed = checkpoint
            progress.writerLSN = checkpoint
        }
        var walRecords: [(acceptor: String, lsn: LSN)] = []
        var next = checkpoint + 1
        while next <= end {
            do {
                var last = next - 1
                for record in try wal.records(from: next, limit: 4096) {
                    last = record.lsn
                    if let header = try? WriterRecord.decodeHeader(record.payload) { walRecords.append((header.acceptorID, header.acceptorLSN)) }
                }
                if last < next { break }
                next = last + 1
            } catch let error as WALError {
                guard case .gap(let missing) = error.kind else { throw error }
                next = missing.upperBound + 1
            }
        }
        return (committed, progress, walRecords, corrected)
    }
}
