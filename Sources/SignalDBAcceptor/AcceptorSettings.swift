import Logging
import SignalDBService
import SignalWAL

/// Everything the acceptor reads at start-up. `signaldb-acceptor --help` prints ``specs``.
public struct AcceptorSettings: Sendable {
    public static let configFile = SettingSpec("acceptor.config.file", default: "", "JSON file with any of these settings (keys nested by dots: {\"acceptor\": {\"http\": {\"addr\": ...}}})")
    static let httpAddr = SettingSpec("acceptor.http.addr", default: "127.0.0.1:4318", "OTLP/HTTP listener (POST /v1/traces, /v1/metrics, /v1/logs)")
    static let grpcAddr = SettingSpec("acceptor.grpc.addr", default: "127.0.0.1:4317", "OTLP/gRPC listener (Trace, Metrics and Logs Export)")
    static let adminAddr = SettingSpec("acceptor.admin.addr", default: "127.0.0.1:9464", "admin listener: /metrics, /livez, /readyz")
    static let walDir = SettingSpec("acceptor.wal.dir", default: ".wal/acceptor", "WAL directory; put it on a persistent volume")
    static let walMaxBytes = SettingSpec("acceptor.wal.max.bytes", default: "1GiB", "most WAL bytes not yet forwarded (the engine's maxLiveBytes); past it requests get 503 + Retry-After")
    static let walSegmentBytes = SettingSpec("acceptor.wal.segment.bytes", default: "128MiB", "size of each WAL segment file (must hold the largest request: ACCEPTOR_MAX_REQUEST_BYTES plus 64 KiB)")
    static let walSpares = SettingSpec("acceptor.wal.spare.segments", default: "2", "segments kept preallocated ahead of need")
    static let walDurability = SettingSpec("acceptor.wal.durability", default: "group", "when a request counts as durable: group (fsync before each answer, shared), interval:5ms (answer before the fsync; a crash or power cut loses up to that much), none (no fsync; a power cut loses the page cache)")
    static let minFreeBytes = SettingSpec("acceptor.wal.min.free.bytes", default: "256MiB", "free space to leave on the WAL's filesystem; below it requests get 503 + Retry-After")
    static let maxRequestBytes = SettingSpec("acceptor.max.request.bytes", default: "64MiB", "largest request body after decompression (413 past it)")
    static let writerAddr = SettingSpec("acceptor.writer.addr", default: "127.0.0.1:50061", "the writer's gRPC address")
    static let forwardBatchRecords = SettingSpec("acceptor.forward.batch.records", default: "256", "most WAL records per forwarded batch")
    static let forwardBatchBytes = SettingSpec("acceptor.forward.batch.bytes", default: "4MiB", "most bytes per forwarded batch (a larger single record goes alone)")
    static let forwardInFlight = SettingSpec("acceptor.forward.in.flight", default: "4", "forwarded batches awaiting the writer's answer at once")
    static let forwardTimeout = SettingSpec("acceptor.forward.timeout.seconds", default: "30", "deadline of one forward call")
    static let forwardBackoffMax = SettingSpec("acceptor.forward.backoff.max.seconds", default: "30", "longest wait between retries of a failed forward (exponential from 0.1 s, with jitter)")
    static let breakerFailures = SettingSpec("acceptor.forward.breaker.failures", default: "5", "consecutive forward failures that open the circuit breaker (sends pause for the backoff, then one probe)")
    static let apiKeysFile = SettingSpec("acceptor.api.keys.file", default: "", "JSON file of API keys; when set every request needs Authorization: Bearer <key>")
    static let tenantRequests = SettingSpec("acceptor.tenant.max.requests.per.second", default: "0", "per-tenant request rate (0: no limit); 429 + Retry-After past it")
    static let tenantBytes = SettingSpec("acceptor.tenant.max.bytes.per.second", default: "0", "per-tenant decoded bytes per second (0: no limit)")
    static let tenantBacklog = SettingSpec("acceptor.tenant.max.backlog.bytes", default: "0", "per-tenant bytes appended and not yet forwarded (0: no limit)")
    static let drainSeconds = SettingSpec("acceptor.shutdown.drain.seconds", default: "0", "on SIGTERM, seconds /readyz reports not ready before the listeners close")
    static let shutdownTimeout = SettingSpec("acceptor.shutdown.timeout.seconds", default: "30", "on SIGTERM, the longest the listeners may take to finish in-flight requests before they are cancelled")
    static let decodeBudget = SettingSpec("acceptor.decode.budget.bytes", default: "256MiB", "request bytes being read and decoded at once, across all connections; past it requests get 503 + Retry-After")
    static let idleTimeout = SettingSpec("acceptor.http.idle.timeout.seconds", default: "60", "an HTTP connection that sends nothing for this long is closed (slow or stuck clients)")
    static let internalKey = SettingSpec("signaldb.internal.key", default: "", "shared key for the acceptor-to-writer link; when set on both sides an unauthenticated forward is refused")

    public static let specs: [SettingSpec] = [
        configFile, httpAddr, grpcAddr, adminAddr, walDir, walMaxBytes, walSegmentBytes, walSpares, walDurability, minFreeBytes,
        maxRequestBytes, writerAddr, forwardBatchRecords, forwardBatchBytes, forwardInFlight, forwardTimeout, forwardBackoffMax,
        breakerFailures, apiKeysFile, tenantRequests, tenantBytes, tenantBacklog, drainSeconds, shutdownTimeout, decodeBudget,
        idleTimeout, internalKey,
    ] + CommonSettings.specs

    public var httpAddress: ListenAddress
    public var grpcAddress: ListenAddress
    public var adminAddress: ListenAddress
    public var walDirectory: String
    public var walDirectoryIsDefault: Bool
    public var walMaxBytes: Int
    public var walSegmentBytes: Int
    public var walSpareSegments: Int
    public var durability: DurabilityPolicy
    public var minFreeBytes: Int
    public var maxRequestBytes: Int
    public var writerAddress: ListenAddress
    public var forward: ForwardSettings
    public var apiKeysFile: String?
    public var tenantLimits: TenantLimiter.Limits
    public var drainDelay: Duration
    public var shutdownTimeout: Duration
    public var decodeBudgetBytes: Int
    public var httpIdleTimeout: Duration
    public var internalKey: String?
    /// Log level, log file, file access (shared with the other service).
    public var common: CommonSettings
    public var logLevel: Logger.Level { common.logLevel }

    public init(_ s: Settings) throws {
        httpAddress = try s.address(Self.httpAddr)
        grpcAddress = try s.address(Self.grpcAddr)
        adminAddress = try s.address(Self.adminAddr)
        walDirectory = s.string(Self.walDir)
        walDirectoryIsDefault = walDirectory == Self.walDir.defaultValue
        walSegmentBytes = try s.bytes(Self.walSegmentBytes, in: (1 << 20)...(1 << 30))
        walMaxBytes = try s.bytes(Self.walMaxBytes, in: (2 << 20)...Int.max)
        walSpareSegments = try s.int(Self.walSpares, in: 1...64)
        let policy = s.string(Self.walDurability)
        guard let durability = DurabilityPolicy(argument: policy) else {
            throw SettingError(Self.walDurability, policy, "group, interval:5ms (any ms, us or s) or none")
        }
        self.durability = durability
        minFreeBytes = try s.bytes(Self.minFreeBytes)
        maxRequestBytes = try s.bytes(Self.maxRequestBytes, in: 1024...(512 << 20))
        guard maxRequestBytes + (64 << 10) <= walSegmentBytes else {
            throw SettingError(Self.walSegmentBytes, s.string(Self.walSegmentBytes),
                               "at least ACCEPTOR_MAX_REQUEST_BYTES (\(maxRequestBytes)) plus 64 KiB, so the largest request fits a segment")
        }
        guard walMaxBytes >= 2 * walSegmentBytes else {
            throw SettingError(Self.walMaxBytes, s.string(Self.walMaxBytes), "at least two segments (2 x ACCEPTOR_WAL_SEGMENT_BYTES = \(2 * walSegmentBytes))")
        }
        writerAddress = try s.address(Self.writerAddr)
        forward = ForwardSettings(
            batchRecords: try s.int(Self.forwardBatchRecords, in: 1...65_536),
            batchBytes: try s.bytes(Self.forwardBatchBytes, in: 1024...(256 << 20)),
            inFlight: try s.int(Self.forwardInFlight, in: 1...64),
            timeout: try s.seconds(Self.forwardTimeout, in: 0.1...3600),
            backoffMax: try s.seconds(Self.forwardBackoffMax, in: 0.1...3600),
            breakerFailures: try s.int(Self.breakerFailures, in: 1...1000))
        apiKeysFile = s.optionalString(Self.apiKeysFile)
        tenantLimits = .init(requestsPerSecond: try s.double(Self.tenantRequests, in: 0...1e9),
                             bytesPerSecond: try s.double(Self.tenantBytes, in: 0...1e12),
                             backlogBytes: try s.bytes(Self.tenantBacklog))
        drainDelay = try s.seconds(Self.drainSeconds, in: 0...300)
        shutdownTimeout = try s.seconds(Self.shutdownTimeout, in: 1...3600)
        httpIdleTimeout = try s.seconds(Self.idleTimeout, in: 1...3600)
        decodeBudgetBytes = try s.bytes(Self.decodeBudget, in: 1...Int.max)
        guard decodeBudgetBytes >= 2 * maxRequestBytes + (1 << 20) else {
            throw SettingError(Self.decodeBudget, s.string(Self.decodeBudget),
                               "at least twice ACCEPTOR_MAX_REQUEST_BYTES plus 1 MiB (\(2 * maxRequestBytes + (1 << 20))): the largest compressed request and its inflated body must fit at once")
        }
        internalKey = s.optionalString(Self.internalKey)
        common = try CommonSettings(s)
    }
}

/// How the forwarder batches and retries.
public struct ForwardSettings: Sendable {
    public var batchRecords: Int
    public var batchBytes: Int
    public var inFlight: Int
    public var timeout: Duration
    public var backoffMax: Duration
    public var breakerFailures: Int
}
