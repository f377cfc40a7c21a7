#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Logging
@_spi(Benchmarks) import SignalWAL
import SignalWALWorkload
import Synchronization

/// `signalwal-bench durable`: N appender threads append fixed-size records for S seconds, each
/// timing its own appends (which return once durable under the policy).
public struct DurableBenchmark: Sendable {
    public var appenders: Int
    public var recordSize: Int
    public var seconds: Double
    public var policy: DurabilityPolicy
    public var backend: String
    public var directory: String
    public var segmentSize: Int = Format.defaultSegmentSize
    /// A consumer checkpoints everything visible this often (as the services do once records
    /// are stored), so segments are recycled as in production. 0 disables it: every segment
    /// is then new and zero-filled, which roughly doubles what the disk writes.
    public var checkpointIntervalMs: Int = 50
    /// The staged backend's write unit, forced (nil: the device's).
    public var writeUnit: Int?

    public init(appenders: Int, recordSize: Int, seconds: Double, policy: DurabilityPolicy, backend: String, directory: String) {
        self.appenders = appenders
        self.recordSize = recordSize
        self.seconds = seconds
        self.policy = policy
        self.backend = backend
        self.directory = directory
    }

    public struct Result: Codable, Sendable {
        public var checkpointIntervalMs: Int
        public var appenders: Int
        public var recordSize: Int
        public var policy: String
        public var backend: String
        public var seconds: Double
        public var records: Int
        public var recordsPerSecond: Double
        public var mbPerSecond: Double
        public var p50Us: Double
        public var p99Us: Double
        public var p999Us: Double
        public var flushes: Int
        public var meanRecordsPerFlush: Double
        /// Bytes the block device wrote per payload byte appended (nil when the device's
        /// counters cannot be read).
        public var writeAmplification: Double?
        public var diskBytesWritten: UInt64?
        public var bytesAppended: Int
        public var maxRssBytes: Int
    }

    public func run() throws -> Result {
        guard let ioBackend = IOBackend(rawValue: backend) else {
            throw WALError(.invalidArgument, path: directory, operation: "bench",
                           hint: "unknown backend \(backend); use mmap or uring")
        }
        _ = system("rm -rf '\(directory)'")
        defer { _ = system("rm -rf '\(directory)'") }
        var configuration = Configuration()
        configuration.segmentSize = segmentSize
        configuration.durability = policy
        configuration.backend = ioBackend
        configuration.directWriteUnit = writeUnit
        configuration.logger = Logger(label: "signalwal-bench", factory: { _ in SwiftLogNoOpLogHandler() })
        let wal = try WAL.open(directory: directory, configuration: configuration)
        let counters = DiskCounters(directory: directory)

        final class RunState: Sendable {
            let measuring = Atomic<Bool>(false)
            let stop = Atomic<Bool>(false)
            let failures = Atomic<Int>(0)
            let results = ResultsBox()
        }
        /// Per-appender results, behind a pthread lock (see WAL.catalog for why not `Mutex`).
        final class ResultsBox: @unchecked Sendable {
            // @unchecked: `items` is only touched with `lock` held.
            private let lock = NSLock()
            private var items: [(count: Int, latencies: [UInt64])] = []
            func append(_ item: (count: Int, latencies: [UInt64])) { lock.lock(); items.append(item); lock.unlock() }
            var all: [(count: Int, latencies: [UInt64])] { lock.lock(); defer { lock.unlock() }; return items }
        }
        let state = RunState()
        let size = recordSize
        let appenderCount = appenders
        // Bounded: at most this many latency samples per appender are kept.
        let sampleLimit = 2_000_000 / max(1, appenders) + 1000

        let done = DispatchSemaphore(value: 0)
        let interval = checkpointIntervalMs
        let consumer = Thread {
            while interval > 0 && !state.stop.load(ordering: .relaxed) {
                usleep(UInt32(interval * 1000))
                try? wal.checkpoint(upTo: wal.visibleLSN)
            }
        }
        consumer.start()
        let runner = Thread {
            onThreads(appenderCount) { index in
                let payload = [UInt8](repeating: UInt8(truncatingIfNeeded: index), count: size)
                var latencies: [UInt64] = []
                latencies.reserveCapacity(sampleLimit)
                var count = 0
                while !state.stop.load(ordering: .relaxed) {
                    let started = Workload.monotonicNanoseconds()
                    do {
                        _ = try wal.append(payload)
                    } catch {
                        state.failures.add(1, ordering: .relaxed)
                        continue
                    }
                    if state.measuring.load(ordering: .relaxed) {
                        count += 1
                        if latencies.count < sampleLimit { latencies.append(Workload.monotonicNanoseconds() - started) }
                    }
                }
                state.results.append((count, latencies))
            }
            done.signal()
        }
        runner.start()

        // Warm up (first segments mapped, spares prepared), then measure.
        usleep(UInt32(min(1.0, max(0.2, seconds / 5)) * 1_000_000))
        let before = wal.statistics
        let diskBefore = counters?.bytesWritten()
        let started = Workload.monotonicNanoseconds()
        state.measuring.store(true, ordering: .relaxed)
        usleep(UInt32(seconds * 1_000_000))
        state.stop.store(true, ordering: .relaxed)
        done.wait()
        let elapsed = Double(Workload.monotonicNanoseconds() - started) / 1e9
        let after = wal.statistics
        try wal.close()
        let diskAfter = counters?.bytesWritten()
        guard state.failures.load(ordering: .relaxed) == 0 else {
            throw WALError(.io, path: directory, operation: "bench", hint: "\(state.failures.load(ordering: .relaxed)) appends failed")
        }

        let collected = state.results.all
        let records = collected.reduce(0) { $0 + $1.count }
        let samples = collected.flatMap(\.latencies).sorted()
        let flushes = after.flushes - before.flushes
        let flushed = after.recordsFlushed - before.recordsFlushed
        let appended = records * recordSize
        var amplification: Double? = nil
        var diskBytes: UInt64? = nil
        if let diskBefore, let diskAfter, appended > 0 {
            diskBytes = diskAfter - diskBefore
            amplification = Double(diskAfter - diskBefore) / Double(appended)
        }
        let rate = Double(records) / elapsed
        return Result(checkpointIntervalMs: checkpointIntervalMs, appenders: appenders, recordSize: recordSize, policy: policy.argument, backend: backend,
                      seconds: elapsed, records: records, recordsPerSecond: rate,
                      mbPerSecond: rate * Double(recordSize) / 1e6,
                      p50Us: Double(percentile(samples, 0.5)) / 1000, p99Us: Double(percentile(samples, 0.99)) / 1000,
                      p999Us: Double(percentile(samples, 0.999)) / 1000, flushes: flushes,
                      meanRecordsPerFlush: flushes > 0 ? Double(flushed) / Double(flushes) : 0,
                      writeAmplification: amplification, diskBytesWritten: diskBytes, bytesAppended: appended,
                      maxRssBytes: maxResidentBytes())
    }
}

/// `signalwal-bench replay`: writes `sizeMB` of 1 KiB records, reopens (recovery), then reads and
/// CRC-verifies every record from a warm page cache.
public struct ReplayBenchmark: Sendable {
    public var sizeMB: Int
    public var directory: String

    public init(sizeMB: Int, directory: String) {
        self.sizeMB = sizeMB
        self.directory = directory
    }

    public struct Result: Codable, Sendable {
        public var records: Int
        public var bytes: Int
        public var openMs: Double
        public var seconds: Double
        public var mbPerSecond: Double
    }

    public func run() throws -> Result {
        _ = system("rm -rf '\(directory)'")
        defer { _ = system("rm -rf '\(directory)'") }
        var configuration = Configuration()
        configuration.durability = .none
        configuration.logger = Logger(label: "signalwal-bench", factory: { _ in SwiftLogNoOpLogHandler() })
        let payload = [UInt8](repeating: 0x42, count: 1024)
        let count = sizeMB * 1_000_000 / payload.count
        do {
            let wal = try WAL.open(directory: directory, configuration: configuration)
            var written = 0
            while written < count {
                let batch = min(1000, count - written)
                try wal.append(contentsOf: Array(repeating: payload, count: batch))
                written += batch
            }
            try wal.close()
        }
        let openStarted = Workload.monotonicNanoseconds()
        let wal = try WAL.open(directory: directory, configuration: configuration)
        let openMs = Double(Workload.monotonicNanoseconds() - openStarted) / 1e6
        let started = Workload.monotonicNanoseconds()
        var records = 0
        var bytes = 0
        for record in try wal.records(from: 1) {
            records += 1
            bytes += record.payload.count
        }
        let seconds = Double(Workload.monotonicNanoseconds() - started) / 1e9
        try wal.close()
        guard records == count else {
            throw WALError(.io, path: directory, operation: "replay", hint: "read \(records) records, wrote \(count)")
        }
        return Result(records: records, bytes: bytes, openMs: openMs, seconds: seconds, mbPerSecond: Double(bytes) / seconds / 1e6)
    }
}

public func jsonLine<T: Encodable>(_ value: T) -> String {
    let encoder = JSONEncoder()
    encoder.keyEncodingStrategy = .convertToSnakeCase
    encoder.outputFormatting = [.sortedKeys]
    return String(decoding: (try? encoder.encode(value)) ?? Data(), as: UTF8.self)
}
