import Logging
import SignalDBService
import SignalWAL

/// Everything the writer reads at start-up. `signaldb-writer --help` prints ``specs``.
public struct WriterSettings: Sendable {
    public static let configFile = SettingSpec("writer.config.file", default: "", "JSON file with any of these settings (keys nested by dots: {\"writer\": {\"grpc\": {\"addr\": ...}}})")
    static let grpcAddr = SettingSpec("writer.grpc.addr", default: "127.0.0.1:50061", "gRPC listener for the acceptors' Forward calls")
    static let adminAddr = SettingSpec("writer.admin.addr", default: "127.0.0.1:9465", "admin listener: /metrics, /livez, /readyz")
    static let walDir = SettingSpec("writer.wal.dir", default: ".wal/writer", "WAL directory; put it on a persistent volume")
    static let walMaxBytes = SettingSpec("writer.wal.max.bytes", default: "1GiB", "most WAL bytes not yet in the store; past it forwards get UNAVAILABLE + RetryInfo and /readyz says not ready")
    static let walSegmentBytes = SettingSpec("writer.wal.segment.bytes", default: "128MiB", "size of each WAL segment file (must hold the largest record: WRITER_MAX_RECORD_BYTES plus 64 KiB)")
    static let walSpares = SettingSpec("writer.wal.spare.segments", default: "2", "segments kept preallocated ahead of need")
    static let maxRecordBytes = SettingSpec("writer.max.record.bytes", default: "65MiB", "largest forwarded record (an acceptor envelope); keep it at least ACCEPTOR_MAX_REQUEST_BYTES plus 1 MiB")
    static let maxForwardBytes = SettingSpec("writer.max.forward.bytes", default: "80MiB", "largest Forward message the listener takes: at least ACCEPTOR_FORWARD_BATCH_BYTES and WRITER_MAX_RECORD_BYTES, plus 1 MiB (a larger one is refused by the transport and retried forever)")
    static let store = SettingSpec("writer.store", default: "sqlite:.data/signaldb.sqlite", "where rows go: sqlite:<path> (the embedded store)")
    static let storeBatchRows = SettingSpec("writer.store.batch.rows", default: "10000", "rows per store transaction at most (a larger single record goes alone)")
    static let storeBatchRecords = SettingSpec("writer.store.batch.records", default: "1024", "WAL records per store transaction at most")
    static let storeBatchInterval = SettingSpec("writer.store.batch.interval.seconds", default: "0.1", "longest a record waits for others to share its transaction")
    static let storeBusyTimeout = SettingSpec("writer.store.busy.timeout.seconds", default: "1", "how long a commit waits for another connection's lock before it counts as failed (and is retried)")
    static let storeBackoffMax = SettingSpec("writer.store.backoff.max.seconds", default: "10", "longest wait between retries of a failed commit (exponential from 0.1 s, with jitter)")
    static let shutdownTimeout = SettingSpec("writer.shutdown.timeout.seconds", default: "30", "on SIGTERM, the longest the writer takes to finish in-flight forwards and commit what is durable")
    static let internalKey = SettingSpec("signaldb.internal.key", default: "", "shared key for the acceptor-to-writer link; when set, a forward without it gets UNAUTHENTICATED")

    public static let specs: [SettingSpec] = [
        configFile, grpcAddr, adminAddr, walDir, walMaxBytes, walSegmentBytes, walSpares, maxRecordBytes, maxForwardBytes, store, storeBatchRows,
        storeBatchRecords, storeBatchInterval, storeBusyTimeout, storeBackoffMax, shutdownTimeout, internalKey,
    ] + CommonSettings.specs

    public var grpcAddress: ListenAddress
    public var adminAddress: ListenAddress
    public var walDirectory: String
    public var walDirectoryIsDefault: Bool
    public var walMaxBytes: Int
    public var walSegmentBytes: Int
    public var walSpareSegments: Int
    public var maxRecordBytes: Int
    public var maxForwardBytes: Int
    /// The WAL's batch limit: at least one record of ``maxRecordBytes`` (the engine's default,
    /// 64 MiB, is just under one 64 MiB envelope with its headers).
    public var walBatchBytes: Int { max(64 << 20, Format.recordSpan(payloadLength: maxRecordBytes)) }
    /// The SQLite database file (`WRITER_STORE` without its `sqlite:` scheme).
    public var sqlitePath: String
    public var storeIsDefault: Bool
    public var batch: CommitBatching
    public var storeBusyTimeout: Double
    public var shutdownTimeout: Duration
    public var internalKey: String?
    /// Log level, log file, file access (shared with the other service).
    public var common: CommonSettings
    public var logLevel: Logger.Level { common.logLevel }

    public init(_ s: Settings) throws {
        grpcAddress = try s.address(Self.grpcAddr)
        adminAddress = try s.address(Self.adminAddr)
        walDirectory = s.string(Self.walDir)
        walDirectoryIsDefault = walDirectory == Self.walDir.defaultValue
        walSegmentBytes = try s.bytes(Self.walSegmentBytes, in: (1 << 20)...(1 << 30))
        walMaxBytes = try s.bytes(Self.walMaxBytes, in: (2 << 20)...Int.max)
        walSpareSegments = try s.int(Self.walSpares, in: 1...64)
        maxRecordBytes = try s.bytes(Self.maxRecordBytes, in: 4096...(768 << 20))
        guard maxRecordBytes + (64 << 10) <= walSegmentBytes else {
            throw SettingError(Self.walSegmentBytes, s.string(Self.walSegmentBytes),
                               "at least WRITER_MAX_RECORD_BYTES (\(maxRecordBytes)) plus 64 KiB, so the largest record fits a segment")
        }
        maxForwardBytes = try s.bytes(Self.maxForwardBytes, in: (1 << 20)...(1 << 30))
        guard maxForwardBytes >= maxRecordBytes + (1 << 20) else {
            throw SettingError(Self.maxForwardBytes, s.string(Self.maxForwardBytes),
                               "at least WRITER_MAX_RECORD_BYTES (\(maxRecordBytes)) plus 1 MiB, so a forward of the largest record fits")
        }
        guard walMaxBytes >= 2 * walSegmentBytes else {
            throw SettingError(Self.walMaxBytes, s.string(Self.walMaxBytes), "at least two segments (2 x WRITER_WAL_SEGMENT_BYTES = \(2 * walSegmentBytes))")
        }
        let store = s.string(Self.store)
        guard store.hasPrefix("sqlite:"), store.count > "sqlite:".count else {
            throw SettingError(Self.store, store, "sqlite:<path to the database file>, for example sqlite:/data/signaldb.sqlite")
        }
        sqlitePath = String(store.dropFirst("sqlite:".count))
        storeIsDefault = store == Self.store.defaultValue
        batch = CommitBatching(
            rows: try s.int(Self.storeBatchRows, in: 1...1_000_000),
            records: try s.int(Self.storeBatchRecords, in: 1...65_536),
            interval: try s.seconds(Self.storeBatchInterval, in: 0...60),
            backoffMax: try s.seconds(Self.storeBackoffMax, in: 0.1...3600))
        storeBusyTimeout = try s.double(Self.storeBusyTimeout, in: 0...600)
        shutdownTimeout = try s.seconds(Self.shutdownTimeout, in: 1...3600)
        internalKey = s.optionalString(Self.internalKey)
        common = try CommonSettings(s)
    }
}

/// How the committer groups WAL records into store transactions.
public struct CommitBatching: Sendable {
    public var rows: Int
    public var records: Int
    public var interval: Duration
    public var backoffMax: Duration
}
