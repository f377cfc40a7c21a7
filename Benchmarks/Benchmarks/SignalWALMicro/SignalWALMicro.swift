#if canImport(Glibc)
import Glibc
#endif
import Benchmark
import Logging
import SignalWAL

/// Micro level: CRC32C throughput, and what one append costs under each policy, including
/// allocations (the steady-state target for part 2 is zero).
let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration.maxDuration = .seconds(3)

    for size in [4096, 65536] {
        let data = [UInt8](repeating: 0x5A, count: size)
        Benchmark("CRC32C \(size / 1024) KiB",
                  configuration: .init(metrics: [.wallClock, .throughput], scalingFactor: .kilo)) { benchmark in
            for _ in benchmark.scaledIterations { blackHole(CRC32C.checksum(data)) }
        }
    }

    let policies: [(String, DurabilityPolicy)] = [("groupCommit", .groupCommit), ("interval 10ms", .interval(.milliseconds(10))), ("none", .none)]
    for (name, policy) in policies {
        for size in [128, 1024] {
            let payload = [UInt8](repeating: 7, count: size)
            let box = WALBox()
            Benchmark("append \(size) B, 1 appender, \(name)",
                      configuration: .init(metrics: [.wallClock, .throughput, .mallocCountTotal],
                                           scalingFactor: policy == .groupCommit ? .one : .kilo,
                                           setup: { box.wal = try WAL.open(directory: box.directory(name, size), configuration: quiet(policy)) },
                                           teardown: { try box.wal?.close(); box.cleanUp() })) { benchmark in
                let wal = box.wal!
                for _ in benchmark.scaledIterations { blackHole(try wal.append(payload)) }
            }
        }
    }
}

func quiet(_ policy: DurabilityPolicy) -> Configuration {
    var configuration = Configuration()
    configuration.durability = policy
    configuration.logger = Logger(label: "bench", factory: { _ in SwiftLogNoOpLogHandler() })
    return configuration
}

/// Holds the WAL between setup, the measured body and teardown (which run one after another).
final class WALBox: @unchecked Sendable {
    var wal: WAL?
    var path = ""
    func directory(_ name: String, _ size: Int) -> String {
        path = "/tmp/signalwal-bench-\(getpid())-\(name.filter { $0.isLetter })-\(size)"
        return path
    }
    func cleanUp() {
        _ = path.withCString { _ in system("rm -rf '\(path)'") }
    }
}
