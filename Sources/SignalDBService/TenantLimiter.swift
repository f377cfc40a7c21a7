import SignalDBIngest
import Synchronization

/// Per-tenant limits, so one tenant's flood cannot take the shared WAL from the others:
/// requests per second and bytes per second (token buckets with one second of burst), and
/// bytes not yet forwarded (the tenant's share of the backlog). Zero turns a limit off.
///
/// Backlog bytes are charged when a request is appended and released when the forwarder's
/// checkpoint passes it; records recovered at start-up are charged as the forwarder reads them.
/// The table of pending records is bounded by the WAL's own bound (one entry per record), and
/// kept only when the backlog limit is on. Rate buckets are dropped once full (a full bucket
/// is the same as none) when more than 10,000 tenants have one.
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
        /// Records charged and not yet released, in LSN order (charges arrive nearly in order,
        /// so insertion is from the back and release pops from the front).
        var pending: [(lsn: UInt64, tenant: String, bytes: Int)] = []
        var pendingHead = 0
        /// Everything at or below was released: a charge that arrives late is ignored.
        var releasedThrough: UInt64 = 0
    }

    /// Buckets kept before full ones (the same as none) are dropped.
    static let maxBuckets = 10_000

    public let limits: Limits
    private let state = Mutex(State())

    public init(limits: Limits) { self.limits = limits }

    /// Throws `.rateLimited` when the tenant is over a rate or its backlog share. Consumes
    /// tokens only when it admits.
    public func admit(tenant: String, bytes: Int) throws(IngestError) {
        let now = ContinuousClock.now
        let limits = self.limits
        let wait: Double? = state.withLock { s in
            // A tenant with nothing waiting is always let in, so a request larger than the
            // limit is not refused forever.
            if limits.backlogBytes > 0, let waiting = s.backlog[tenant], waiting + bytes > limits.backlogBytes { return -1 }
            if s.requests.count > Self.maxBuckets || s.bytes.count > Self.maxBuckets { Self.dropFullBuckets(&s, limits: limits, now: now) }
            // Both buckets are checked on copies and committed only when both admit.
            var requestBucket = s.requests[tenant] ?? Bucket(tokens: limits.requestsPerSecond, updated: now)
            var byteBucket = s.bytes[tenant] ?? Bucket(tokens: limits.bytesPerSecond, updated: now)
            if limits.requestsPerSecond > 0, let w = requestBucket.take(1, rate: limits.requestsPerSecond, now: now) { return w }
            if limits.bytesPerSecond > 0, let w = byteBucket.take(Double(bytes), rate: limits.bytesPerSecond, now: now) { return w }
            if limits.requestsPerSecond > 0 { s.requests[tenant] = requestBucket }
            if limits.bytesPerSecond > 0 { s.bytes[tenant] = byteBucket }
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

    static func dropFullBuckets(_ s: inout State, limits: Limits, now: ContinuousClock.Instant) {
        func full(_ b: Bucket, _ rate: Double) -> Bool {
            var b = b
            return b.take(0, rate: rate, now: now) == nil && b.tokens >= rate
        }
        s.requests = s.requests.filter { !full($0.value, limits.requestsPerSecond) }
        s.bytes = s.bytes.filter { !full($0.value, limits.bytesPerSecond) }
    }

    /// Charges an appended record to its tenant's backlog (once per LSN; ignored when the
    /// checkpoint already passed it).
    public func charge(lsn: UInt64, tenant: String, bytes: Int) {
        guard limits.backlogBytes > 0 else { return }
        state.withLock { s in
            guard lsn > s.releasedThrough else { return }
            var i = s.pending.count
            while i > s.pendingHead && s.pending[i - 1].lsn > lsn { i -= 1 }
            if i > s.pendingHead && s.pending[i - 1].lsn == lsn { return }
            s.pending.insert((lsn, tenant, bytes), at: i)
            s.backlog[tenant, default: 0] += bytes
        }
    }

    /// Releases every charged record at or below `lsn` (the checkpoint).
    public func release(through lsn: UInt64) {
        guard limits.backlogBytes > 0 else { return }
        state.withLock { s in
            s.releasedThrough = max(s.releasedThrough, lsn)
            while s.pendingHead < s.pending.count && s.pending[s.pendingHead].lsn <= lsn {
                let entry = s.pending[s.pendingHead]
                s.pendingHead += 1
                s.backlog[entry.tenant, default: 0] -= entry.bytes
                if s.backlog[entry.tenant] == 0 { s.backlog[entry.tenant] = nil }
            }
            if s.pendingHead > 1024 && s.pendingHead * 2 > s.pending.count {
                s.pending.removeFirst(s.pendingHead)
                s.pendingHead = 0
            }
        }
    }

    public func backlogBytes(tenant: String) -> Int { state.withLock { $0.backlog[tenant] ?? 0 } }
}
