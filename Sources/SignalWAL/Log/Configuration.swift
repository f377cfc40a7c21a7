import CoreMetrics
import Logging

/// A log sequence number: 1 for the first record ever appended, then one more per record.
public typealias LSN = UInt64

/// When an append is acknowledged, and so what a crash can take away.
public enum DurabilityPolicy: Sendable, Equatable {
    /// Acknowledge after a flush (fdatasync) covering the record has completed. Many appenders
    /// share one flush. A crash, power cut included, loses nothing acknowledged. The default.
    case groupCommit
    /// Acknowledge after the record is copied into the segment; flush every `interval`.
    /// A power cut can lose what was acknowledged within the last interval; a process crash
    /// loses nothing (the page cache survives it).
    case interval(Duration)
    /// Acknowledge after the copy and never flush explicitly; the kernel writes back when it
    /// likes. For benchmarks and throwaway data.
    case none
}

extension DurabilityPolicy {
    /// Parses the spelling command lines use: `group`, `interval:<n>ms` (also `us` and `s`),
    /// `none`. Returns nil for anything else, including a zero interval.
    public init?(argument text: String) {
        switch text {
        case "group", "groupCommit": self = .groupCommit
        case "none": self = .none
        default:
            guard text.hasPrefix("interval:") else { return nil }
            let value = text.dropFirst("interval:".count)
            for (suffix, scale) in [("ms", 1_000_000), ("us", 1_000), ("s", 1_000_000_000)] where value.hasSuffix(suffix) {
                guard let number = Int(value.dropLast(suffix.count)), number > 0 else { return nil }
                self = .interval(.nanoseconds(number * scale))
                return
            }
            return nil
        }
    }

    /// The spelling ``init(argument:)`` reads, in milliseconds for intervals.
    public var argument: String {
        switch self {
        case .groupCommit: return "group"
        case .none: return "none"
        case .interval(let interval):
            let parts = interval.components
            let ms = Int(parts.seconds) * 1000 + Int(parts.attoseconds / 1_000_000_000_000_000)
            return "interval:\(ms)ms"
        }
    }
}

/// How appended records reach the segment files. Readers (replay, tailing) always read through
/// a read-only memory mapping, whichever backend writes.
public enum IOBackend: String, Sendable, Equatable, CaseIterable {
    /// Appenders copy records into a shared writable mapping of the segment; a flush is an
    /// fdatasync of the file. Under `.interval` and `.none` an acknowledged record is in the
    /// page cache, so it survives a crash of the process (not of the machine).
    case mmap
    /// Direct I/O: appenders copy records into an aligned staging buffer in the process; the
    /// committer writes it to the segment with O_DIRECT, then fdatasyncs. The page cache is
    /// bypassed, so a flush writes what was appended (rounded to the device's 512-byte or 4 KiB
    /// blocks) and no large folio. Segments are still prepared through io_uring. (The name is
    /// the benchmark interface's; the flushes themselves were measured faster as pwrite and
    /// fdatasync than through io_uring, see docs/DESIGN.md.) Under `.interval` and `.none` an
    /// acknowledged record may still be in the staging buffer: a crash of the process, not only
    /// of the machine, can lose it. Falls back to buffered writes where O_DIRECT is refused.
    case uring
}

/// How a ``WAL`` lays out and flushes its segments.
public struct Configuration: Sendable {
    /// Size of every segment file, from 1 MiB to 1 GiB, a multiple of 4 KiB. Default 64 MiB.
    public var segmentSize: Int = Format.defaultSegmentSize
    /// Largest payload one record may carry. Default: a quarter of the segment size. At most
    /// the segment size minus its header block and one record header.
    public var maxRecordSize: Int?
    /// Prepared segments kept ready ahead of need, so appends never wait for allocation in
    /// steady state. Up to as many segments below the checkpoint are also kept for reuse.
    /// Default 2.
    public var spareSegments: Int = 2
    public var durability: DurabilityPolicy = .groupCommit
    /// Under `.groupCommit`, how long the flusher waits after the first append of a batch before
    /// flushing, so more appends can join (PostgreSQL's `commit_delay`). Default zero: measured
    /// on disks that flush in about 0.1 ms, any fixed wait costs more than it gathers at
    /// moderate concurrency.
    public var maxBatchDelay: Duration = .zero
    /// The most appended bytes that may be waiting for a flush under `.groupCommit` and
    /// `.interval`. An appender that would exceed it waits, and asks for a flush at once. This
    /// bounds the dirty data in the page cache and what `.interval` can lose in a power cut.
    /// Overshoot is at most one batch per concurrent appender. It also bounds one
    /// `append(contentsOf:)` batch (record spans), under every policy: a larger batch is
    /// refused. Default 64 MiB; nil for no limit on unflushed bytes (batches are then bounded
    /// by 1 GiB).
    public var maxBatchBytes: Int? = 64 << 20
    /// The most bytes of live segments the WAL may hold: the segments with records after the
    /// checkpoint, plus the active one. An append that would begin a segment beyond it fails at
    /// once with the retryable ``WALError/Kind/backlogFull(liveBytes:limit:)``, without
    /// waiting, so a service can answer 503 or 429 with `Retry-After` while its consumers catch
    /// up; a checkpoint that releases segments lets appends in again. The bound is checked in
    /// whole segments: records fill the active segment before it counts, so at least one segment
    /// must fit (the smallest accepted value is `2 * segmentSize`). Nil (the default) for no
    /// bound; the filesystem then bounds it (``WALError/Kind/outOfSpace``).
    public var maxLiveBytes: Int? = nil
    /// Bytes of the `.uring` backend's staging ring, allocated once at open and held until
    /// close (it is most of a WAL's memory). Nil for the default: 16 MiB, or room for two of
    /// the largest records when that is more. The smallest accepted is room for two of the
    /// largest records plus 64 KiB (``minimumStagingBytes``). Under `.uring` a batch is also
    /// bounded by half the ring (``effectiveMaxBatchBytes``), so it is always staged whole,
    /// never in parts with the append lock held across flushes, and gets in while other
    /// appenders keep half the ring busy.
    public var stagingBytes: Int? = nil
    /// Which write path appends take. Default `.uring` (direct I/O), measured faster at 1, 16 and
    /// 64 durable appenders; see docs/DESIGN.md.
    public var backend: IOBackend = .uring
    /// Use io_uring where the kernel allows it (segment preparation, and the flushes of the
    /// `.uring` backend). Falls back to plain
    /// system calls, with one log line saying why, when it does not.
    public var useIOURing: Bool = true
    public var logger: Logger = Logger(label: "signalwal")
    /// Permissions of the directories and files the WAL creates. Default ``FileAccess/owner``
    /// (0700 / 0600).
    public var fileAccess: FileAccess = .owner
    /// Dimensions added to every metric besides `wal` (a service adds `service`).
    public var metricDimensions: [(String, String)] = []
    /// Where counters and timers go (see `WALMetrics` for the names). Nil uses the factory the
    /// process bootstrapped with `MetricsSystem.bootstrap` (a no-op one if it did not).
    public var metricsFactory: (any MetricsFactory)? = nil

    /// Benchmarks only: forces the staged backend's write unit (512 to 4096, a power of two)
    /// instead of the device's (see `DirectWriter`). Below the physical block size a torn
    /// rewrite can destroy acknowledged records, which is what the benchmark compares against.
    @_spi(Benchmarks) public var directWriteUnit: Int? = nil

    public init() {}

    public init(segmentSize: Int = Format.defaultSegmentSize, maxRecordSize: Int? = nil, spareSegments: Int = 2,
                durability: DurabilityPolicy = .groupCommit, backend: IOBackend = .uring,
                maxLiveBytes: Int? = nil, stagingBytes: Int? = nil, maxBatchBytes: Int? = 64 << 20,
                maxBatchDelay: Duration = .zero, useIOURing: Bool = true,
                logger: Logger = Logger(label: "signalwal"), metricsFactory: (any MetricsFactory)? = nil) {
        self.backend = backend
        self.maxLiveBytes = maxLiveBytes
        self.stagingBytes = stagingBytes
        self.maxBatchBytes = maxBatchBytes
        self.maxBatchDelay = maxBatchDelay
        self.useIOURing = useIOURing
        self.metricsFactory = metricsFactory
        self.segmentSize = segmentSize
        self.maxRecordSize = maxRecordSize
        self.spareSegments = spareSegments
        self.durability = durability
        self.logger = logger
    }

    /// The record size limit in force.
    public var effectiveMaxRecordSize: Int { maxRecordSize ?? segmentSize / 4 }
    /// The batch size limit in force (record spans of one `append(contentsOf:)`): `maxBatchBytes`
    /// (1 GiB when nil) and, under `.uring`, half the staging ring less the alignment and
    /// segment headers such a batch can need (so a batch always fits the ring whole).
    public var effectiveMaxBatchBytes: Int {
        let configured = maxBatchBytes ?? Format.maximumSegmentSize
        guard backend == .uring else { return configured }
        let half = effectiveStagingBytes / 2
        // Each segment a batch begins costs up to two blocks of stream (alignment, header),
        // and the first and last block may be partial.
        let slack = 4 * 4096 + 2 * 4096 * (half / max(1, segmentSize - Format.segmentHeaderBlock) + 1)
        return min(configured, max(half - slack, Format.recordSpan(payloadLength: effectiveMaxRecordSize)))
    }
    /// The smallest staging ring accepted: two of the largest records plus 64 KiB, so half of it
    /// holds one of the largest records with its alignment and header blocks.
    public var minimumStagingBytes: Int {
        (2 * Format.recordSpan(payloadLength: effectiveMaxRecordSize) + (64 << 10) + 4095) / 4096 * 4096
    }
    /// The staging ring size in force (see ``stagingBytes``).
    public var effectiveStagingBytes: Int {
        stagingBytes.map { ($0 + 4095) / 4096 * 4096 } ?? max(16 << 20, minimumStagingBytes)
    }

    func validate(directory: String) throws {
        func invalid(_ hint: String) -> WALError {
            WALError(.invalidArgument, path: directory, operation: "open", hint: hint)
        }
        guard segmentSize >= Format.minimumSegmentSize, segmentSize <= Format.maximumSegmentSize,
              segmentSize % 4096 == 0 else {
            throw invalid("segmentSize \(segmentSize) is out of range: use a multiple of 4096 from \(Format.minimumSegmentSize) (1 MiB) to \(Format.maximumSegmentSize) (1 GiB).")
        }
        let largest = Format.largestPayload(segmentSize: segmentSize)
        guard effectiveMaxRecordSize > 0, effectiveMaxRecordSize <= largest else {
            throw invalid("maxRecordSize \(effectiveMaxRecordSize) is out of range: use 1 to \(largest) bytes for \(segmentSize)-byte segments.")
        }
        guard spareSegments >= 1, spareSegments <= 64 else {
            throw invalid("spareSegments \(spareSegments) is out of range: use 1 to 64.")
        }
        if case .interval(let interval) = durability, interval <= .zero {
            throw invalid("the flush interval must be positive.")
        }
        guard maxBatchDelay >= .zero, maxBatchDelay <= .seconds(1) else {
            throw invalid("maxBatchDelay must be from 0 to 1 second.")
        }
        if let unit = directWriteUnit, unit < 512 || unit > 4096 || unit & (unit - 1) != 0 {
            throw invalid("directWriteUnit \(unit) must be a power of two from 512 to 4096.")
        }
        if let stagingBytes, stagingBytes < minimumStagingBytes || stagingBytes > 4 << 30 {
            throw invalid("stagingBytes \(stagingBytes) is out of range: use \(minimumStagingBytes) (two of the largest records, \(effectiveMaxRecordSize) bytes, plus two blocks) to 4 GiB, or nil for the default.")
        }
        if let maxLiveBytes, maxLiveBytes < 2 * segmentSize {
            throw invalid("maxLiveBytes \(maxLiveBytes) is below two segments (\(2 * segmentSize) bytes for \(segmentSize)-byte segments): raise it, lower segmentSize, or use nil for no bound.")
        }
        if let maxBatchBytes, maxBatchBytes < 4096 {
            throw invalid("maxBatchBytes \(maxBatchBytes) is below 4096: use at least one page, or nil for no limit.")
        }
    }
}
