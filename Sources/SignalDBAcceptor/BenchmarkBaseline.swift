import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import Logging
import Prometheus
import ServiceLifecycle
import SignalDBIngest
import SignalDBService
import SignalWAL
import Synchronization

/// Benchmark-only (the hidden `signaldb-bench-baseline` executable, `make bench-services`):
/// the acceptor's own HTTP and gRPC receivers and its ``Ingestor`` (headers, body collection,
/// decompression, decoding and validation, the envelope), with the envelope discarded instead
/// of appended to the WAL, so a benchmark can measure the request path without the WAL on the
/// same binary code. Nothing is stored and nothing is forwarded: never a service.
///
/// The Ingestor still holds a WAL (opened in ACCEPTOR_WAL_DIR, never appended to) for the
/// checks it makes before the append.
public enum BenchmarkBaseline {
    final class Discarded: Sendable {
        let count = Atomic<UInt64>(0)
    }

    public static func run(settings: AcceptorSettings, registry: PrometheusCollectorRegistry, logger: Logger) async throws {
        let health = Health()
        let metrics = AcceptorMetrics()
        metrics.exportZeros()
        try ServiceDirectory.ensure(settings.walDirectory, setting: "ACCEPTOR_WAL_DIR", access: settings.common.fileAccess, logger: logger)
        try await AdminServer.running(address: settings.adminAddress, setting: "ACCEPTOR_ADMIN_ADDR", health: health, registry: registry,
                                      beforeScrape: { metrics.ready(health.isReady) }, logger: logger) { watch in
            let wal = try await WAL.open(directory: settings.walDirectory, configuration: Acceptor.walConfiguration(settings))
            let discarded = Discarded()
            let ingestor = Ingestor(wal: wal, keys: nil, limiter: TenantLimiter(limits: settings.tenantLimits),
                                    space: FreeSpaceGuard(path: settings.walDirectory, reserve: settings.minFreeBytes), health: health, metrics: metrics,
                                    maxRequestBytes: settings.maxRequestBytes, decodeBudget: DecodeBudget(bytes: settings.decodeBudgetBytes),
                                    logger: logger,
                                    append: { _ in discarded.count.add(1, ordering: .relaxed).newValue })
            let http = HTTPReceiver.make(address: settings.httpAddress, ingestor: ingestor, maxRequestBytes: settings.maxRequestBytes,
                                         idleTimeout: settings.httpIdleTimeout, logger: logger)
            let grpcServer = Acceptor.grpcReceiver(settings: settings, ingestor: ingestor)
            let group = ServiceGroup(configuration: .init(
                services: [.init(service: watch), .init(service: GRPCServerService(grpcServer)), .init(service: http)],
                gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
            health.setReady(true, detail: "benchmark baseline: envelopes are discarded, not stored")
            metrics.ready(true)
            logger.warning("signaldb-bench-baseline: a benchmark baseline, NOT an acceptor: every request is decoded and then discarded",
                           metadata: ["http": "\(settings.httpAddress)", "grpc": "\(settings.grpcAddress)", "admin": "\(settings.adminAddress)"])
            var failure: (any Error)?
            do { try await group.run() } catch { failure = error }
            try await wal.close()
            if let failure { throw failure }
        }
    }
}
