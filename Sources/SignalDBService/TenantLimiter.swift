import SignalDBIngest
import Synchronization

/// Per-tenant limits, so one tenant's flood cannot take the shared WAL from the others:
/// requests per second and bytes per second (token buckets with one second of burst), and
/// bytes not yet forwarded (the tenant's share of the backlog). Zero turns a limit off.
///
/// Backlog bytes are charged when a request is appended and released when the forwarder's
/// checkpoint passes it; records recovered at start-up are charged as the forwarder reads them.
/// The table of pending records is bounded by the WAL's own bound (one entry per record), and
/// kept only when the backlog limit is on.
public final class TenantLimiter: Sendable {
    public struct Limits: Sendable {
        public var requestsPerSecond: Double
        public var bytesPerSecond: Double
        public var backlogBytes: Int
        public init(requestsPerSecond: Double, bytesPerSecond: Double, backlogBytes: Int) {
            self.requestsPerSecond = requestsPerSecond
            self.bytesPerSecond = bytesPerSecond
            self.backlogBytes = backlogBytes
        }
    }

    struct Bucket {
        var tokens: Double
        var updated: ContinuousClock.Instant
        mutating func take(_ amount: Double, rate: Double, now: ContinuousClock.Instant) -> Double? {
            let elapsed = Double((now - updated).components.attoseconds) / 1e18 + Double((now - updated).components.seconds)
            tokens = min(rate, tokens + elapsed * rate)
            updated = now
            if tokens >= amount || (tokens >= rate && amount > rate) {
                tokens -= amount
                return nil
            }
            return (amount - tokens) / rate
        }
    }

    struct State {
        var requests: [String: Bucket] = [:]
        var bytes: [String: Bucket] = [:]
        var backlog: [String: Int] = [:]
        /// LSN -> (tenant, bytes), for records charged and not yet released.
        var pending: [UInt64: (String, Int)] = [:]
    }

    public let limits: Limits
    private let state = Mutex(State())

    public init(limits: Limits) { self.limits = limits }

    /// Throws `.rateLimited` when the tenant is over a rate or its backlog share. Consumes
    /// tokens only when it admits.
    public func admit(tenant: String, bytes: Int) throws(IngestError) {
        let now = ContinuousClock.now
        let limits = self.limits
        let wait: Double? = state.withLock { s in
            if limits.backlogBytes > 0, s.backlog[tenant, default: 0] + bytes > limits.backlogBytes { return -1 }
            if limits.requestsPerSecond > 0 {
                var b = s.requests[tenant] ?? Bucket(tokens: limits.requestsPerSecond, updated: now)
                if let w = b.take(1, rate: limits.requestsPerSecond, now: now) { s.requests[tenant] = b; return w }
                s.requests[tenant] = b
            }
            if limits.bytesPerSecond > 0 {
                var b = s.bytes[tenant] ?? Bucket(tokens: limits.bytesPerSecond, updated: now)
                if let w = b.take(Double(bytes), rate: limits.bytesPerSecond, now: now) { s.bytes[tenant] = b; return w }
                s.bytes[tenant] = b
            }
            return nil
        }
        guard let wait else { return }
        if wait < 0 {
            throw IngestError(.rateLimited(retryAfterSeconds: 5),
                              "tenant '\(tenant)' has \(limits.backlogBytes) bytes waiting to be forwarded (ACCEPTOR_TENANT_MAX_BACKLOG_BYTES); retry later",
                              reason: "tenant_backlog")
        }
        throw IngestError(.rateLimited(retryAfterSeconds: max(1, Int(wait.rounded(.up)))),
                          "tenant '\(tenant)' is over its rate limit (ACCEPTOR_TENANT_MAX_REQUESTS_PER_SECOND / _BYTES_PER_SECOND)",
                          reason: "tenant_rate")
    }

    /// Charges an appended record to its tenant's backlog (idempotent per LSN).
    public func charge(lsn: UInt64, tenant: String, bytes: Int) {
        guard limits.backlogBytes > 0 else { return }
        state.withLock { s in
            guard s.pending[lsn] == nil else { return }
            s.pending[lsn] = (tenant, bytes)
            s.backlog[tenant, default: 0] += bytes
        }
    }

    /// Releases every charged record at or below `lsn` (the checkpoint).
    public func release(through lsn: UInt64) {
        guard limits.backlogBytes > 0 else { return }
        state.withLock { s in
            for (key, value) in s.pending where key <= lsn {
                s.pending[key] = nil
                s.backlog[value.0, default: 0] -= value.1
                if s.backlog[value.0] == 0 { s.backlog[value.0] = nil }
            }
        }
    }

    public func backlogBytes(tenant: String) -> Int { state.withLock { $0.backlog[tenant] ?? 0 } }
}
