#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Logging
import SignalWAL
import SignalWALWorkload
import Synchronization

/// `signalwal-bench async`: N tasks loop `try await wal.append(_:)` for S seconds on the
/// cooperative pool, beside a 1 ms heartbeat task that records how late it wakes (a pool
/// blocked inside the WAL shows up there) and a consumer task that checkpoints what is durable
/// every 50 ms (so segments recycle, as in the services).
public struct AsyncBenchmark: Sendable {
    public var tasks: Int
    public var recordSize: Int
    public var seconds: Double
    public var directory: String
    public var segmentSize: Int = Format.defaultSegmentSize
    /// The heartbeat task's priority (nil: the default, the same as the appenders').
    public var heartbeatPriority: TaskPriority? = nil

    public init(tasks: Int, recordSize: Int, seconds: Double, directory: String) {
        self.tasks = tasks
        self.recordSize = recordSize
        self.seconds = seconds
        self.directory = directory
    }

    public struct Result: Codable, Sendable {
        public var tasks: Int
        public var recordSize: Int
        public var seconds: Double
        public var records: Int
        public var recordsPerSecond: Double
        public var mbPerSecond: Double
        public var p50Us: Double
        public var p99Us: Double
        /// How late the 1 ms heartbeat woke, 99th percentile and worst, in microseconds.
        public var heartbeatP99LatenessUs: Double
        public var heartbeatMaxLatenessUs: Double
        public var heartbeatTicks: Int
        /// The most live segments the consumer saw (the backlog the run built up).
        public var maxLiveSegments: Int
        public var flushes: Int
        public var maxRssBytes: Int
    }

    private final class Shared: Sendable {
        let measuring = Atomic<Bool>(false)
        let stop = Atomic<Bool>(false)
    }

    public func run() async throws -> Result {
        _ = system("rm -rf '\(directory)'")
        defer { _ = system("rm -rf '\(directory)'") }
        var configuration = Configuration()
        configuration.segmentSize = segmentSize
        configuration.logger = Logger(label: "signalwal-bench", factory: { _ in SwiftLogNoOpLogHandler() })
        let wal = try await WAL.open(directory: directory, configuration: configuration)
        let shared = Shared()
        let size = recordSize
        let duration = seconds
        // Bounded: at most this many latency samples per task.
        let sampleLimit = 2_000_000 / max(1, tasks) + 100

        let heartbeat = Task(priority: heartbeatPriority) { () -> [UInt64] in
            var lateness: [UInt64] = []
            while !shared.stop.load(ordering: .relaxed) {
                let before = Workload.monotonicNanoseconds()
                try? await Task.sleep(for: .milliseconds(1))
                let late = Workload.monotonicNanoseconds() - before
                if shared.measuring.load(ordering: .relaxed), lateness.count < 1_000_000 {
                    lateness.append(late > 1_000_000 ? late - 1_000_000 : 0)
                }
            }
            return lateness
        }
        let consumer = Task { () -> Int in
            var most = 0
            while !shared.stop.load(ordering: .relaxed) {
                try? await Task.sleep(for: .milliseconds(50))
                most = max(most, wal.liveSegmentPaths.count)
                _ = try? await wal.checkpoint(upTo: wal.visibleLSN)
            }
            return most
        }
        let clock = Task {
            try? await Task.sleep(for: .milliseconds(500))
            shared.measuring.store(true, ordering: .relaxed)
            let startFlushes = wal.flushCount
            let started = Workload.monotonicNanoseconds()
            try? await Task.sleep(for: .milliseconds(Int(duration * 1000)))
            shared.measuring.store(false, ordering: .relaxed)
            let elapsed = Double(Workload.monotonicNanoseconds() - started) / 1e9
            shared.stop.store(true, ordering: .relaxed)
            return (elapsed, wal.flushCount - startFlushes)
        }
        let perTask = try await withThrowingTaskGroup(of: (count: Int, latencies: [UInt64]).self) { group in
            for index in 0..<tasks {
                group.addTask {
                    let payload = [UInt8](repeating: UInt8(truncatingIfNeeded: index), count: size)
                    var latencies: [UInt64] = []
                    var count = 0
                    while !shared.stop.load(ordering: .relaxed) {
                        let started = Workload.monotonicNanoseconds()
                        try await wal.append(payload)
                        guard shared.measuring.load(ordering: .relaxed) else { continue }
                        count += 1
                        if latencies.count < sampleLimit { latencies.append(Workload.monotonicNanoseconds() - started) }
                    }
                    return (count, latencies)
                }
            }
            return try await group.reduce(into: [(count: Int, latencies: [UInt64])]()) { $0.append($1) }
        }
        let (elapsed, flushes) = await clock.value
        let lateness = await heartbeat.value.sorted()
        let maxLive = await consumer.value
        try await wal.close()
        let records = perTask.reduce(0) { $0 + $1.count }
        let latencies = perTask.flatMap(\.latencies).sorted()
        return Result(tasks: tasks, recordSize: recordSize, seconds: elapsed, records: records,
                      recordsPerSecond: Double(records) / elapsed,
                      mbPerSecond: Double(records * recordSize) / elapsed / 1e6,
                      p50Us: Double(percentile(latencies, 0.5)) / 1000, p99Us: Double(percentile(latencies, 0.99)) / 1000,
                      heartbeatP99LatenessUs: Double(percentile(lateness, 0.99)) / 1000,
                      heartbeatMaxLatenessUs: Double(lateness.last ?? 0) / 1000, heartbeatTicks: lateness.count,
                      maxLiveSegments: maxLive, flushes: flushes, maxRssBytes: maxResidentBytes())
    }
}
