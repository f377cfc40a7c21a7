import Foundation
import Logging
import SignalDBIngest
import SignalDBService
import SignalWAL

/// The one path every request takes after its listener has read it (HTTP and gRPC alike):
/// authenticate, decode and validate, check the tenant's limits and the WAL's room, append the
/// envelope, and return only once the WAL says it is durable under the configured policy.
/// Nothing is appended for a request that fails any step.
public final class Ingestor: Sendable {
    let wal: WAL
    let keys: APIKeys?
    let limiter: TenantLimiter
    let space: FreeSpaceGuard
    let health: Health
    let metrics: AcceptorMetrics
    let maxRequestBytes: Int
    let maxRecordBytes: Int
    let decodeBudget: DecodeBudget
    let logger: Logger
    let backpressure: BackpressureLog
    /// Where an accepted envelope goes: the WAL's append, which returns once the envelope is
    /// durable under the configured policy. Only the benchmarks' baseline
    /// (``BenchmarkBaseline``, `make bench-services`) passes another, which discards it.
    let append: @Sendable ([UInt8]) async throws -> LSN

    init(wal: WAL, keys: APIKeys?, limiter: TenantLimiter, space: FreeSpaceGuard, health: Health,
         metrics: AcceptorMetrics, maxRequestBytes: Int, decodeBudget: DecodeBudget, logger: Logger,
         append: (@Sendable ([UInt8]) async throws -> LSN)? = nil) {
        self.decodeBudget = decodeBudget
        self.wal = wal
        self.append = append ?? { envelope in try await wal.append(envelope) }
        self.keys = keys
        self.limiter = limiter
        self.space = space
        self.health = health
        self.metrics = metrics
        self.maxRequestBytes = maxRequestBytes
        self.maxRecordBytes = wal.configuration.effectiveMaxRecordSize
        self.logger = logger
        backpressure = BackpressureLog(logger: logger)
    }

    /// Who is sending, from the request's headers or metadata.
    public struct Caller: Sendable {
        public var authorization: String?
        public var tenant: String?
        public var dataset: String?
    }

    /// What the receiver answers with on success.
    public struct Accepted: Sendable {
        public var accepted: Int
        public var rejected: Int
        public var message: String
        public var lsn: LSN?
    }

    /// Resolves the tenant; cheap, so receivers call it before reading the body.
    public func authorize(_ caller: Caller, signal: Signal) throws(IngestError) -> (tenant: String, dataset: String) {
        let tenant: String
        if let keys {
            tenant = try keys.authorize(authorization: caller.authorization, requestedTenant: caller.tenant, signal: signal)
        } else {
            tenant = caller.tenant ?? "default"
        }
        let dataset = caller.dataset ?? "default"
        try TenantName.validate(tenant, field: "X-Tenant-ID")
        try TenantName.validate(dataset, field: "X-Dataset-ID")
        return (tenant, dataset)
    }

    /// Decodes, validates and appends one request body (already decompressed), returning once
    /// it is durable.
    public func ingest(signal: Signal, body: [UInt8], encoding: Envelope.Encoding, tenant: String, dataset: String) async throws(IngestError) -> Accepted {
        metrics.bytesReceived(signal: signal, count: body.count)
        if let failure = wal.failure {
            throw IngestError(.unavailable(retryAfterSeconds: 30), "the acceptor's WAL failed (\(failure.kind)); an operator must look at it: \(failure.hint)", reason: "wal_failed")
        }
        let decoded = try OTLPDecoder.decode(body, signal: signal, encoding: encoding)
        if decoded.acceptedItems == 0 {
            // An empty export: valid, and nothing to store.
            return Accepted(accepted: 0, rejected: 0, message: "", lsn: nil)
        }
        try limiter.admit(tenant: tenant, bytes: decoded.payload.count)
        if let shortfall = space.shortfall {
            metrics.backpressure(reason: "disk_reserve")
            backpressure.refused(reason: "disk_reserve", bound: "ACCEPTOR_WAL_MIN_FREE_BYTES",
                                 detail: "\(shortfall.free) bytes free, under the \(shortfall.reserve)-byte reserve")
            throw IngestError(.unavailable(retryAfterSeconds: 10),
                              "the WAL's filesystem has \(shortfall.free) bytes free, under the \(shortfall.reserve)-byte reserve (ACCEPTOR_WAL_MIN_FREE_BYTES); free space or grow the volume",
                              reason: "disk_reserve")
        }
        let envelope = Envelope(signal: signal, encoding: encoding, filtered: decoded.filtered,
                                receivedAtUnixNano: UInt64(max(0, Date().timeIntervalSince1970 * 1e9)),
                                tenant: tenant, dataset: dataset, itemCount: UInt32(clamping: decoded.acceptedItems),
                                payload: decoded.payload).encoded()
        guard envelope.count <= maxRecordBytes else {
            throw IngestError(.tooLarge, "the request is \(envelope.count) bytes stored, over the WAL's \(maxRecordBytes)-byte record limit: send smaller batches")
        }
        let lsn: LSN
        do {
            lsn = try await append(envelope)
        } catch let error as WALError {
            throw mapWALError(error)
        } catch is CancellationError {
            throw IngestError(.unavailable(retryAfterSeconds: 1), "the request was cancelled before it was durable", reason: "cancelled")
        } catch {
            throw IngestError(.unavailable(retryAfterSeconds: 5), "the WAL append failed: \(error)", reason: "wal_error")
        }
        backpressure.accepted()
        limiter.charge(lsn: lsn, tenant: tenant, bytes: envelope.count)
        metrics.items(signal: signal, accepted: decoded.acceptedItems, rejected: decoded.rejectedItems)
        return Accepted(accepted: decoded.acceptedItems, rejected: decoded.rejectedItems, message: decoded.rejectionMessage, lsn: lsn)
    }

    func mapWALError(_ error: WALError) -> IngestError {
        let retry = max(1, Int(wal.backlogStatus.suggestedRetryAfter.components.seconds))
        switch error.kind {
        case .backlogFull(let live, let limit):
            metrics.backpressure(reason: "backlog_full")
            backpressure.refused(reason: "backlog_full", bound: "ACCEPTOR_WAL_MAX_BYTES", detail: "\(live) of \(limit) bytes not yet forwarded")
            return IngestError(.unavailable(retryAfterSeconds: retry),
                               "the acceptor's WAL holds \(live) bytes not yet forwarded, its bound (ACCEPTOR_WAL_MAX_BYTES=\(limit)); the writer is behind or down. Retry after \(retry) s",
                               reason: "backlog_full")
        case .outOfSpace:
            metrics.backpressure(reason: "out_of_space")
            backpressure.refused(reason: "out_of_space", bound: "the disk", detail: "\(error.path)")
            logger.error("WAL append: out of space", metadata: ["path": "\(error.path)", "hint": "\(error.hint)"])
            return IngestError(.unavailable(retryAfterSeconds: max(retry, 10)), "the acceptor's disk is full (\(error.path)); retry later", reason: "out_of_space")
        case .recordTooLarge(let size, let limit):
            return IngestError(.tooLarge, "the request is \(size) bytes stored, over the \(limit)-byte record limit")
        case .invalidArgument:
            return IngestError(.tooLarge, "the request cannot fit the WAL: \(error.hint)")
        case .locked, .tooManyOpenFiles:
            return IngestError(.unavailable(retryAfterSeconds: 5), "the WAL is busy (\(error.kind)); retry", reason: "wal_busy")
        default:
            logger.error("WAL append failed", metadata: ["error": "\(error)"])
            health.setReady(false, detail: "WAL failed: \(error)")
            return IngestError(.unavailable(retryAfterSeconds: 30), "the acceptor's WAL failed: \(error.kind)", reason: "wal_failed")
        }
    }
}
