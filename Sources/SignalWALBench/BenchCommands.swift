import ArgumentParser
import Foundation
import SignalWAL

/// The benchmark commands, shared by `signalwal-bench` and `signalwal bench`: one
/// implementation, two entry points.
public enum BenchCommands {
    public static let abstract = "Measure SignalWAL: durable appends, replay, and a side-by-side comparison with fio and RocksDB."
    public static let subcommands: [any ParsableCommand.Type] = [Durable.self, AsyncAppends.self, Replay.self, Compare.self]
}

public struct Durable: ParsableCommand {
    public init() {}
    public static let configuration = CommandConfiguration(
        abstract: "N appenders append fixed-size records for S seconds; each append returns once durable under the policy.")

    @Option(help: "Concurrent appender threads.") var appenders: Int = 1
    @Option(name: .customLong("record-size"), help: "Payload bytes per record.") var recordSize: Int = 1024
    @Option(help: "Measured seconds (after a short warm-up).") var seconds: Double = 5
    @Option(help: "group | interval:10ms | none") var policy: String = "group"
    @Option(help: "mmap | uring (the library's default)") var backend: String = IOBackend.uring.rawValue
    @Option(help: "WAL directory (removed before and after).") var dir: String = ".wal/bench"
    @Option(name: .customLong("checkpoint-interval-ms"),
            help: "A consumer checkpoints what is durable this often, so segments are recycled as in production; 0 turns it off.")
    var checkpointIntervalMs: Int = 50
    @Option(name: .customLong("write-unit"),
            help: "uring only: force the flush write unit (512-4096) instead of the device's physical block size, to measure what it costs.")
    var writeUnit: Int?
    @Flag(help: "Print one JSON object.") var json = false

    public func validate() throws {
        guard appenders >= 1, appenders <= 1024 else { throw ValidationError("--appenders must be 1 to 1024") }
        guard recordSize >= 0, recordSize <= 16 << 20 else { throw ValidationError("--record-size must be 0 to 16 MiB") }
        guard seconds > 0, seconds <= 3600 else { throw ValidationError("--seconds must be above 0 and at most 3600") }
        guard DurabilityPolicy(argument: policy) != nil else { throw ValidationError("--policy must be group, interval:<n>ms or none") }
    }

    public func run() throws {
        var benchmark = DurableBenchmark(appenders: appenders, recordSize: recordSize, seconds: seconds,
                                         policy: DurabilityPolicy(argument: policy)!, backend: backend, directory: dir)
        benchmark.checkpointIntervalMs = checkpointIntervalMs
        benchmark.writeUnit = writeUnit
        let result = try benchmark.run()
        if json {
            print(jsonLine(result))
        } else {
            print("""
            \(result.appenders) appenders, \(result.recordSize) B, \(result.policy), \(result.backend): \
            \(Int(result.recordsPerSecond)) records/s, \(String(format: "%.1f", result.mbPerSecond)) MB/s, \
            p50 \(String(format: "%.0f", result.p50Us)) us, p99 \(String(format: "%.0f", result.p99Us)) us, \
            \(String(format: "%.1f", result.meanRecordsPerFlush)) records/flush, \
            write amplification \(result.writeAmplification.map { String(format: "%.2f", $0) } ?? "n/a")
            """)
        }
    }
}

public struct AsyncAppends: ParsableCommand {
    public init() {}
    public static let configuration = CommandConfiguration(
        commandName: "async",
        abstract: "N tasks `try await append` on the cooperative pool for S seconds, beside a 1 ms heartbeat task; optionally after the same load from threads, for the ratio.",
        discussion: """
        Prints records_per_second, p50_us, p99_us, heartbeat_p99_lateness_us and max_live_segments. \
        With --threads N, first runs `durable --appenders N` (threads, same record size and time) and \
        prints the async run's throughput as a fraction of it.
        """)

    @Option(help: "Concurrent appending tasks.") var tasks: Int = 1000
    @Option(name: .customLong("record-size"), help: "Payload bytes per record.") var recordSize: Int = 1024
    @Option(help: "Measured seconds (after a 0.5 s warm-up).") var seconds: Double = 5
    @Option(help: "Also run this many appender threads first, for the ratio (0: off).") var threads: Int = 0
    @Option(name: .customLong("heartbeat-priority"), help: "default | high: the heartbeat task's priority.")
    var heartbeatPriority: String = "default"
    @Option(help: "WAL directory (removed before and after).") var dir: String = ".wal/bench"
    @Flag(help: "Print one JSON object.") var json = false

    public func validate() throws {
        guard tasks >= 1, tasks <= 100_000 else { throw ValidationError("--tasks must be 1 to 100000") }
        guard recordSize >= 0, recordSize <= 16 << 20 else { throw ValidationError("--record-size must be 0 to 16 MiB") }
        guard seconds > 0, seconds <= 3600 else { throw ValidationError("--seconds must be above 0 and at most 3600") }
        guard threads >= 0, threads <= 1024 else { throw ValidationError("--threads must be 0 to 1024") }
        guard ["default", "high"].contains(heartbeatPriority) else { throw ValidationError("--heartbeat-priority must be default or high") }
    }

    struct Combined: Encodable {
        var async: AsyncBenchmark.Result
        var threads: DurableBenchmark.Result?
        var asyncOverThreads: Double?
    }

    public func run() throws {
        var baseline: DurableBenchmark.Result? = nil
        if threads > 0 {
            baseline = try DurableBenchmark(appenders: threads, recordSize: recordSize, seconds: seconds, policy: .groupCommit,
                                            backend: IOBackend.uring.rawValue, directory: dir).run()
        }
        // The main thread is not one of the pool's: it may wait here for the tasks.
        var benchmark = AsyncBenchmark(tasks: tasks, recordSize: recordSize, seconds: seconds, directory: dir)
        benchmark.heartbeatPriority = heartbeatPriority == "high" ? .high : nil
        let outcome = ResultSlot()
        let done = DispatchSemaphore(value: 0)
        Task {
            do { outcome.value = .success(try await benchmark.run()) } catch { outcome.value = .failure(error) }
            done.signal()
        }
        done.wait()
        let result = try outcome.value!.get()
        let ratio = baseline.map { result.recordsPerSecond / $0.recordsPerSecond }
        if json {
            print(jsonLine(Combined(async: result, threads: baseline, asyncOverThreads: ratio)))
        } else {
            print("""
            \(result.tasks) tasks, \(result.recordSize) B: \(Int(result.recordsPerSecond)) records/s, \
            \(String(format: "%.1f", result.mbPerSecond)) MB/s, p50 \(String(format: "%.0f", result.p50Us)) us, \
            p99 \(String(format: "%.0f", result.p99Us)) us, heartbeat lateness p99 \(String(format: "%.0f", result.heartbeatP99LatenessUs)) us \
            (max \(String(format: "%.0f", result.heartbeatMaxLatenessUs)) us, \(result.heartbeatTicks) ticks), \
            max live segments \(result.maxLiveSegments)
            """)
            if let baseline, let ratio {
                print("\(threads) threads: \(Int(baseline.recordsPerSecond)) records/s; async / threads = \(String(format: "%.2f", ratio))")
            }
        }
    }

    /// Written once by the task, read by the main thread after the semaphore.
    private final class ResultSlot: @unchecked Sendable {
        var value: Swift.Result<AsyncBenchmark.Result, any Error>?
    }
}

public struct Replay: ParsableCommand {
    public init() {}
    public static let configuration = CommandConfiguration(abstract: "Write M MB of 1 KiB records, reopen, then read and CRC-verify them all.")

    @Option(name: .customLong("size-mb"), help: "Megabytes to write and replay.") var sizeMB: Int = 1024
    @Option(help: "WAL directory (removed before and after).") var dir: String = ".wal/bench-replay"
    @Flag(help: "Print one JSON object.") var json = false

    public func run() throws {
        let result = try ReplayBenchmark(sizeMB: sizeMB, directory: dir).run()
        print(json ? jsonLine(result) : "replayed \(result.records) records (\(result.bytes / 1_000_000) MB) at \(Int(result.mbPerSecond)) MB/s; open took \(String(format: "%.1f", result.openMs)) ms")
    }
}

public struct Compare: ParsableCommand {
    public init() {}
    public static let configuration = CommandConfiguration(
        abstract: "Run fio, RocksDB's db_bench and SignalWAL side by side; print a Markdown table with ratios; write bench-results.json and bench-results.svg.")

    @Option(help: "Seconds per measurement.") var seconds: Double = 5
    @Option(help: "Scratch directory on the disk to measure (removed afterwards).") var dir: String = ".wal/compare"
    @Option(help: "Where to write the JSON and SVG.") var output: String = "."

    public func run() throws {
        let results = try CompareBenchmark(seconds: seconds, directory: dir) { message in
            FileHandle.standardError.write(Data((message + "\n").utf8))
        }.run()
        try Data(jsonLine(results).utf8).write(to: URL(fileURLWithPath: output + "/bench-results.json"))
        try Data(CompareReport.svg(results).utf8).write(to: URL(fileURLWithPath: output + "/bench-results.svg"))
        print(CompareReport.markdown(results))
    }
}
