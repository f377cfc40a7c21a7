#if canImport(Glibc)
import Glibc
#endif
import Foundation
import SignalWAL

/// `signalwal-bench compare`: the disk's limits (fio), RocksDB's `db_bench`, and SignalWAL at
/// 1/16/64 appenders for each policy and backend, all in one run on one machine, so that the
/// ratios mean something on a shared, noisy host.
public struct CompareBenchmark {
    public var seconds: Double
    public var directory: String
    public var appenderCounts = [1, 16, 64]
    public var policies = ["group", "interval:10ms", "none"]
    /// The default backend first: the fio batch size is taken from its 64-appender run.
    public var backends = [IOBackend.uring.rawValue, IOBackend.mmap.rawValue]
    public var log: (String) -> Void

    public init(seconds: Double, directory: String, log: @escaping (String) -> Void) {
        self.seconds = seconds
        self.directory = directory
        self.log = log
    }

    public struct FioResult: Codable, Sendable {
        public var name: String
        public var blockSize: Int
        public var opsPerSecond: Double
        public var mbPerSecond: Double
        /// p50 of one write plus its fdatasync, microseconds.
        public var p50Us: Double
    }

    public struct RocksDBResult: Codable, Sendable {
        public var threads: Int
        public var opsPerSecond: Double
    }

    public struct Results: Codable, Sendable {
        public var date: String
        public var machine: String
        public var seconds: Double
        public var fioSync4k: FioResult?
        public var fioBatch: FioResult?
        public var rocksdb: [RocksDBResult]
        public var signalwal: [DurableBenchmark.Result]
        public var replay: ReplayBenchmark.Result?
        /// P3: one appender, `.none` and `.interval`, 4 KiB and 128 B records.
        public var small: [DurableBenchmark.Result]
        /// P5: a separate process writing at least 10 GiB under `.none` (its own peak RSS).
        public var tenGiB: DurableBenchmark.Result?
        public var notes: [String]
    }

    public func run() throws -> Results {
        var notes: [String] = []
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        ensureTools(&notes)

        var signalwal: [DurableBenchmark.Result] = []
        for backend in backends {
            for policy in policies {
                for appenders in appenderCounts {
                    log("SignalWAL \(backend) \(policy) \(appenders) appenders...")
                    var benchmark = DurableBenchmark(appenders: appenders, recordSize: 1024, seconds: seconds,
                                                     policy: DurabilityPolicy(argument: policy)!, backend: backend,
                                                     directory: directory + "/signalwal")
                    benchmark.checkpointIntervalMs = 50
                    signalwal.append(try benchmark.run())
                }
            }
        }

        log("fio: 4 KiB write + fdatasync, queue depth 1, pre-written file...")
        let sync4k = fio(name: "write+fdatasync 4 KiB", blockSize: 4096, notes: &notes)
        // The bytes per flush SignalWAL reached with 64 durable appenders, rounded up to 4 KiB.
        let durable64 = signalwal.first { $0.policy == "group" && $0.appenders == appenderCounts.last! && $0.backend == backends[0] }
        let span = Format.recordSpan(payloadLength: 1024)
        let batchBytes = max(4096, Int(((durable64?.meanRecordsPerFlush ?? 1) * Double(span) / 4096).rounded(.up)) * 4096)
        log("fio: sequential write + fdatasync at \(batchBytes / 1024) KiB per flush...")
        let batch = fio(name: "write+fdatasync \(batchBytes / 1024) KiB", blockSize: batchBytes, notes: &notes)

        var rocksdb: [RocksDBResult] = []
        for threads in appenderCounts {
            log("RocksDB db_bench fillrandom --sync=1 --threads=\(threads)...")
            if let result = dbBench(threads: threads, notes: &notes) { rocksdb.append(result) }
        }

        var small: [DurableBenchmark.Result] = []
        for backend in backends {
            for (policy, size) in [("none", 4096), ("interval:10ms", 4096), ("none", 128), ("interval:10ms", 128)] {
                log("SignalWAL \(backend) \(policy), 1 appender, \(size) B records...")
                var benchmark = DurableBenchmark(appenders: 1, recordSize: size, seconds: seconds,
                                                 policy: DurabilityPolicy(argument: policy)!, backend: backend, directory: directory + "/signalwal")
                benchmark.checkpointIntervalMs = 50
                small.append(try benchmark.run())
            }
        }

        log("SignalWAL replay of 1 GB...")
        let replay = try? ReplayBenchmark(sizeMB: 1024, directory: directory + "/replay").run()

        log("SignalWAL writing 10 GiB in a separate process (peak RSS)...")
        let tenGiB = tenGiBRun(notes: &notes)
        try? FileManager.default.removeItem(atPath: directory)
        return Results(date: ISO8601DateFormatter().string(from: Date()), machine: machineDescription(), seconds: seconds,
                       fioSync4k: sync4k, fioBatch: batch, rocksdb: rocksdb, signalwal: signalwal, replay: replay,
                       small: small, tenGiB: tenGiB, notes: notes)
    }

    /// Runs this executable's `durable` command in a child process long enough to write 10 GiB
    /// of 4 KiB records under `.none`, so its peak RSS is its own.
    private func tenGiBRun(notes: inout [String]) -> DurableBenchmark.Result? {
        let executable = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().path
        var seconds = 10.0
        for _ in 0..<3 {
            let command = "'\(executable)' durable --appenders 1 --record-size 4096 --policy none --seconds \(Int(seconds)) " +
                "--dir '\(directory)/tengib' --json"
            guard let output = shell(command), let data = output.split(separator: "\n").last.map({ Data($0.utf8) }),
                  let result = try? JSONDecoder.snakeCase.decode(DurableBenchmark.Result.self, from: data) else {
                notes.append("the 10 GiB run failed")
                return nil
            }
            if result.bytesAppended >= 10 << 30 { return result }
            // Too slow to reach 10 GiB in that time: run longer, sized from the rate seen.
            seconds = min(120, Double(10 << 30) / max(1, result.mbPerSecond * 1e6) * 1.2 + 2)
        }
        notes.append("could not write 10 GiB within the time allowed")
        return nil
    }

    /// Installs fio and rocksdb-tools with apt-get when they are missing and we are root.
    private func ensureTools(_ notes: inout [String]) {
        let missing = [("fio", "fio"), ("db_bench", "rocksdb-tools")].filter { !commandExists($0.0) }.map(\.1)
        guard !missing.isEmpty else { return }
        if getuid() == 0 {
            log("installing \(missing.joined(separator: " "))...")
            _ = shell("DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \(missing.joined(separator: " "))")
        }
        for tool in missing where !commandExists(tool == "rocksdb-tools" ? "db_bench" : tool) {
            notes.append("\(tool) is missing and could not be installed: run `sudo apt-get install -y \(tool)`")
        }
    }

    private func fio(name: String, blockSize: Int, notes: inout [String]) -> FioResult? {
        guard commandExists("fio") else { return nil }
        let file = directory + "/fio.dat"
        defer { try? FileManager.default.removeItem(atPath: file) }
        // --overwrite=1 writes the whole file before the timed part: a pre-written file, as
        // SignalWAL's segments are.
        let command = "fio --name=sw --filename='\(file)' --size=256M --rw=write --bs=\(blockSize) --ioengine=psync " +
            "--fdatasync=1 --overwrite=1 --runtime=\(Int(seconds.rounded(.up))) --time_based --output-format=json"
        guard let output = shell(command), let data = output.data(using: .utf8),
              let json = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
              let job = (json["jobs"] as? [[String: Any]])?.first,
              let write = job["write"] as? [String: Any], let iops = write["iops"] as? Double,
              let bandwidth = write["bw_bytes"] as? Double else {
            notes.append("fio \(name) failed")
            return nil
        }
        func p50(_ section: [String: Any]?) -> Double {
            let latency = (section?["lat_ns"] as? [String: Any]) ?? (section?["clat_ns"] as? [String: Any])
            return ((latency?["percentile"] as? [String: Any])?["50.000000"] as? Double) ?? 0
        }
        let p50us = (p50(write) + p50(job["sync"] as? [String: Any])) / 1000
        return FioResult(name: name, blockSize: blockSize, opsPerSecond: iops, mbPerSecond: bandwidth / 1e6, p50Us: p50us)
    }

    private func dbBench(threads: Int, notes: inout [String]) -> RocksDBResult? {
        guard commandExists("db_bench") else { return nil }
        let database = directory + "/rocksdb"
        defer { try? FileManager.default.removeItem(atPath: database) }
        let command = "db_bench --benchmarks=fillrandom --sync=1 --threads=\(threads) --num=\(1_000_000 / threads) " +
            "--duration=\(Int(seconds.rounded(.up))) --value_size=1024 --key_size=16 --compression_type=none --db='\(database)' 2>&1"
        guard let output = shell(command),
              let line = output.split(separator: "\n").first(where: { $0.hasPrefix("fillrandom") }) else {
            notes.append("db_bench with \(threads) threads failed")
            return nil
        }
        // fillrandom   :     386.852 micros/op 2584 ops/sec 38.685 seconds 100000 operations;    2.6 MB/s
        let fields = line.split(separator: " ", omittingEmptySubsequences: true)
        guard let index = fields.firstIndex(of: "ops/sec"), index > 0, let ops = Double(fields[index - 1]) else {
            notes.append("could not read db_bench's output: \(line)")
            return nil
        }
        return RocksDBResult(threads: threads, opsPerSecond: ops)
    }
}

func commandExists(_ name: String) -> Bool {
    shell("command -v \(name)")?.isEmpty == false
}

/// Runs a shell command, returning its standard output (nil when it exits non-zero).
@discardableResult
func shell(_ command: String) -> String? {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/bin/bash")
    process.arguments = ["-c", command]
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = FileHandle.nullDevice
    do { try process.run() } catch { return nil }
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return process.terminationStatus == 0 ? String(decoding: data, as: UTF8.self) : nil
}

func machineDescription() -> String {
    let cores = sysconf(Int32(_SC_NPROCESSORS_ONLN))
    let memory = sysconf(Int32(_SC_PHYS_PAGES)) * sysconf(Int32(_SC_PAGESIZE))
    var name = utsname()
    uname(&name)
    let release = withUnsafeBytes(of: name.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
    return "\(cores) cores, \(memory >> 30) GiB, Linux \(release)"
}

extension JSONDecoder {
    static var snakeCase: JSONDecoder {
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        return decoder
    }
}
