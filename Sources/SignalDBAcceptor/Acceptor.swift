import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import Logging
import Prometheus
import ServiceLifecycle
import SignalDBIngest
import SignalDBProto
import SignalDBService
import SignalWAL

/// The acceptor process: opens (recovers) its WAL, then runs the OTLP listeners, the
/// forwarder and the admin listener in one ServiceGroup. SIGTERM or SIGINT turns readiness off
/// first, then stops the HTTP and gRPC listeners (in-flight requests finish), then the
/// forwarder, then the admin listener; the WAL closes last.
public enum Acceptor {
    public static func run(settings: AcceptorSettings, registry: PrometheusCollectorRegistry, logger: Logger) async throws {
        let health = Health()
        let metrics = AcceptorMetrics()
        metrics.exportZeros()
        metrics.ready(false)
        if settings.durability == .none {
            logger.warning("ACCEPTOR_WAL_DURABILITY=none: requests are acknowledged before any fsync. A power cut loses what the page cache held, and the WAL may then hand out LSNs again that the writer already holds, so it can drop records acknowledged after the restart too. Use group for the durability promise.")
        }
        if settings.walDirectoryIsDefault {
            logger.warning("ACCEPTOR_WAL_DIR is not set: using the default relative directory, which will not persist across container restarts. Set it to a path on a persistent volume.",
                           metadata: ["path": "\(settings.walDirectory)"])
        } else if !settings.walDirectory.hasPrefix("/") {
            logger.warning("ACCEPTOR_WAL_DIR is a relative path: it resolves against the working directory, which in a container is not a persistent volume. Use an absolute path on one.",
                           metadata: ["path": "\(settings.walDirectory)"])
        }
        let keys = try settings.apiKeysFile.map { try APIKeys.load(path: $0) }
        if let keys {
            logger.info("authentication on", metadata: ["keys": "\(keys.count)"])
        } else {
            logger.warning("authentication is off: ACCEPTOR_API_KEYS_FILE is not set, so any client may write any tenant")
        }
        try ServiceDirectory.ensure(settings.walDirectory, setting: "ACCEPTOR_WAL_DIR", access: settings.common.fileAccess, logger: logger)

        let scrape = ScrapeHook()
        try await AdminServer.running(address: settings.adminAddress, setting: "ACCEPTOR_ADMIN_ADDR", health: health, registry: registry,
                                      beforeScrape: { scrape.run(); metrics.ready(health.isReady) }, logger: logger) { watch in
            try await runAfterAdmin(settings: settings, health: health, metrics: metrics, keys: keys, scrape: scrape,
                                    adminWatch: watch, logger: logger)
        }
    }

    /// The WAL's configuration, for the service and for the dead-letter replay.
    static func walConfiguration(_ settings: AcceptorSettings) -> Configuration {
        var walConfiguration = Configuration()
        walConfiguration.segmentSize = settings.walSegmentBytes
        walConfiguration.maxRecordSize = settings.maxRequestBytes + Envelope.Constants.fixedHeaderSize + 2 * Envelope.Constants.maxNameLength + 4096
        walConfiguration.spareSegments = settings.walSpareSegments
        walConfiguration.durability = settings.durability
        walConfiguration.maxLiveBytes = settings.walMaxBytes
        // One record of the largest request must fit a batch (the default, 64 MiB, is just
        // under a 64 MiB request with its envelope and record headers).
        walConfiguration.maxBatchBytes = max(64 << 20, Format.recordSpan(payloadLength: walConfiguration.effectiveMaxRecordSize))
        walConfiguration.logger = Telemetry.walLogger(service: "acceptor")
        walConfiguration.fileAccess = settings.common.fileAccess
        walConfiguration.metricDimensions = [("service", "signaldb-acceptor")]
        return walConfiguration
    }

    /// The OTLP/gRPC listener over an ingestor; the benchmarks' baseline serves the same one
    /// over a discarding ingestor.
    static func grpcReceiver(settings: AcceptorSettings, ingestor: Ingestor) -> GRPCServer<HTTP2ServerTransport.Posix> {
        GRPCServer(
            transport: .http2NIOPosix(
                address: settings.grpcAddress.grpcBindAddress,
                transportSecurity: .plaintext,
                config: .defaults {
                    // Without this the Python SDK's gzip gets UNIMPLEMENTED.
                    $0.compression.enabledAlgorithms = .all
                    $0.rpc.maxRequestPayloadSize = settings.maxRequestBytes
                }),
            services: [OTLPGRPCService(ingestor: ingestor)])
    }

    static func runAfterAdmin(settings: AcceptorSettings, health: Health, metrics: AcceptorMetrics, keys: APIKeys?,
                              scrape: ScrapeHook, adminWatch: AdminWatch, logger: Logger) async throws {
        health.setDetail("recovering the WAL in \(settings.walDirectory)")
        let started = ContinuousClock.now
        let wal = try await WAL.open(directory: settings.walDirectory, configuration: walConfiguration(settings))
        // After the lock: a replay holding the WAL cannot be between its marker and its append.
        do {
            try AcceptorDeadLetterCommands.checkNoReplayInProgress(walDirectory: settings.walDirectory)
        } catch {
            try? await wal.close()
            throw error
        }
        let report = wal.recoveryReport
        logger.info("WAL open", metadata: [
            "path": "\(settings.walDirectory)", "recoveredIn": "\(ContinuousClock.now - started)",
            "backlogRecords": "\(wal.backlogStatus.records)", "clean": "\(report.isClean)",
        ])
        if !report.isClean {
            logger.error("WAL recovery found damage; see the quarantine folder and signalwal_recovery_* metrics",
                         metadata: ["report": "\(report)"])
        }
        let acceptorID = try AcceptorIdentity.loadOrCreate(directory: settings.walDirectory, access: settings.common.fileAccess)
        let limiter = TenantLimiter(limits: settings.tenantLimits)
        let space = FreeSpaceGuard(path: settings.walDirectory, reserve: settings.minFreeBytes)
        let ingestor = Ingestor(wal: wal, keys: keys, limiter: limiter, space: space, health: health, metrics: metrics,
                                maxRequestBytes: settings.maxRequestBytes, decodeBudget: DecodeBudget(bytes: settings.decodeBudgetBytes), logger: logger)

        let http = HTTPReceiver.make(address: settings.httpAddress, ingestor: ingestor, maxRequestBytes: settings.maxRequestBytes,
                                     idleTimeout: settings.httpIdleTimeout, logger: logger)
        let grpcServer = grpcReceiver(settings: settings, ingestor: ingestor)

        let writerTransport = try HTTP2ClientTransport.Posix(
            target: .dns(host: settings.writerAddress.host, port: settings.writerAddress.port),
            transportSecurity: .plaintext,
            config: .defaults { $0.compression.enabledAlgorithms = .none })
        let grpcClient = GRPCClient(transport: writerTransport)
        let writer = Signaldb_Internal_V1_Writer.Client(wrapping: grpcClient)
        let forwarder = Forwarder(
            wal: wal, send: { request, metadata, options in try await writer.forward(request, metadata: metadata, options: options) },
            acceptorID: acceptorID, settings: settings.forward, deadLetters: DeadLetters(walDirectory: settings.walDirectory, access: settings.common.fileAccess, logger: logger),
            limiter: limiter, metrics: metrics, internalKey: settings.internalKey, health: health, logger: logger)

        scrape.set { wal.refreshMetrics(); forwarder.updateLag() }
        let background = BackgroundTasks(tasks: [{ await space.run() }])
        // Shutdown runs in reverse: readiness off, then the listeners drain, then the forwarder
        // and the gRPC client; the WAL closes, then the admin listener stops.
        var groupConfiguration = ServiceGroupConfiguration(
            services: [
                .drainingOnFailure(background),
                .drainingOnFailure(adminWatch),
                .drainingOnFailure(GRPCClientService(grpcClient)),
                .drainingOnFailure(forwarder),
                .drainingOnFailure(GRPCServerService(grpcServer)),
                .drainingOnFailure(http),
                .drainingOnFailure(ReadinessService(health: health, drainDelay: settings.drainDelay)),
            ],
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger)
        // A client that never finishes its request cannot hold the shutdown: past the bound the
        // remaining services are cancelled (their unanswered requests were never acknowledged).
        groupConfiguration.maximumGracefulShutdownDuration = settings.drainDelay + settings.shutdownTimeout
        groupConfiguration.maximumCancellationDuration = .seconds(10)
        let group = ServiceGroup(configuration: groupConfiguration)
        health.setReady(true, detail: "accepting; WAL \(settings.walDirectory), acceptor id \(acceptorID)")
        metrics.ready(true)
        logger.info("signaldb-acceptor ready", metadata: [
            "http": "\(settings.httpAddress)", "grpc": "\(settings.grpcAddress)", "admin": "\(settings.adminAddress)",
            "writer": "\(settings.writerAddress)", "acceptorID": "\(acceptorID)", "durability": "\(settings.durability)",
        ])
        var failure: (any Error)?
        do {
            try await group.run()
        } catch {
            failure = error
            logger.error("a service failed; shutting down", metadata: ["error": "\(error)"])
        }
        metrics.ready(false)
        try await wal.close()
        logger.info("signaldb-acceptor stopped", metadata: ["checkpoint": "\(wal.checkpointLSN)"])
        if let failure { throw failure }
    }
}
