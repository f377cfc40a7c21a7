import Foundation
import Logging
import SignalDBAcceptor
import SignalDBIngest
import SignalDBService
import SignalDBStore

// signaldb-bench-baseline: benchmark-only (`make bench-services`, scripts/bench_services.py),
// never a service. Two modes:
//
//   signaldb-bench-baseline
//       The acceptor's HTTP and gRPC receivers, on the acceptor's settings (ACCEPTOR_*), with
//       every decoded envelope discarded instead of appended to the WAL: the "no-WAL handler"
//       the acceptor's throughput is compared with.
//
//   signaldb-bench-baseline sqlite-ceiling <store path> <seconds> <rows per tx> <records per tx> <body file>...
//       The writer's store ceiling: the request bodies (OTLP/protobuf trace exports) decoded,
//       wrapped and mapped to rows as the writer does, committed to a new SQLiteStore (the
//       writer's schema, indexes and pragmas) in transactions of the writer's committer size,
//       round-robin over the bodies, for <seconds>. Each request gets a unique trace id: the
//       8 bytes after every "SWBENCH!" in a body are replaced by a counter, as the benchmark's
//       wrk script does. Prints one JSON object.
let arguments = Array(CommandLine.arguments.dropFirst())

if arguments.first == "sqlite-ceiling" {
    guard arguments.count >= 6, let seconds = Double(arguments[2]), let maxRows = Int(arguments[3]), let maxRecords = Int(arguments[4]) else {
        FileHandle.standardError.write(Data("usage: signaldb-bench-baseline sqlite-ceiling <store path> <seconds> <rows per tx> <records per tx> <body file>...\n".utf8))
        exit(64)
    }
    let bodies = try arguments[5...].map { [UInt8](try Data(contentsOf: URL(fileURLWithPath: $0))) }
    let marker = Array("SWBENCH!".utf8)
    let markerOffsets: [[Int]] = bodies.map { body in
        var found: [Int] = []
        var i = 0
        while i + marker.count + 8 <= body.count {
            if body[i..<(i + marker.count)].elementsEqual(marker) { found.append(i + marker.count); i += marker.count + 8 } else { i += 1 }
        }
        return found
    }
    let store = try SQLiteStore(path: arguments[1])
    var counter: UInt64 = 1 << 62  // apart from the wrk script's counters
    var lsn: UInt64 = 0
    var spans = 0, requests = 0, commits = 0
    var commitTime = Duration.zero, mapTime = Duration.zero
    let clock = ContinuousClock()
    let started = clock.now
    let end = started + .milliseconds(Int(seconds * 1000))
    var next = 0
    while clock.now < end {
        var rows = StoreRows()
        var records = 0
        let mapStart = clock.now
        while rows.count < maxRows && records < maxRecords {
            let index = next % bodies.count
            next += 1
            var body = bodies[index]
            counter += 1
            for offset in markerOffsets[index] {
                for k in 0..<8 { body[offset + k] = UInt8(truncatingIfNeeded: counter >> (8 * (7 - k))) }
            }
            let decoded = try OTLPDecoder.decode(body, signal: .traces, encoding: .protobuf)
            let envelope = Envelope(signal: .traces, encoding: .protobuf, filtered: decoded.filtered,
                                    receivedAtUnixNano: UInt64(Date().timeIntervalSince1970 * 1e9), tenant: "default", dataset: "default",
                                    itemCount: UInt32(decoded.acceptedItems), payload: decoded.payload).encoded()
            rows.append(try RowMapper.rows(for: try Envelope(decoding: envelope)))
            records += 1
        }
        mapTime += clock.now - mapStart
        lsn += UInt64(records)
        let commitStart = clock.now
        let outcome = try store.commit(rows, progress: StoreProgress(writerLSN: lsn, acceptors: ["bench": AcceptorProgress(floor: lsn, held: LSNRanges())]))
        commitTime += clock.now - commitStart
        precondition(outcome.duplicateSpans == 0, "duplicate spans: the trace ids are not unique")
        spans += rows.spans.count
        requests += records
        commits += 1
    }
    let elapsed = clock.now - started
    try store.close()
    func s(_ d: Duration) -> Double { Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18 }
    let result: [String: Any] = [
        "seconds": s(elapsed), "spans": spans, "requests": requests, "transactions": commits,
        "commit_seconds": s(commitTime), "map_seconds": s(mapTime),
        "spans_per_second": Double(spans) / s(elapsed),
        "spans_per_commit_second": Double(spans) / s(commitTime),
    ]
    print(String(decoding: try JSONSerialization.data(withJSONObject: result, options: [.sortedKeys]), as: UTF8.self))
    exit(0)
}

if let unknown = arguments.first {
    FileHandle.standardError.write(Data("signaldb-bench-baseline: unknown argument '\(unknown)'\n".utf8))
    exit(64)
}
do {
    let settings = try AcceptorSettings(try await Settings.load(configFileSpec: AcceptorSettings.configFile))
    let registry = try Telemetry.bootstrap(service: "signaldb-bench-baseline", logLevel: settings.logLevel,
                                           logFile: settings.common.logFile, access: settings.common.fileAccess)
    try await BenchmarkBaseline.run(settings: settings, registry: registry, logger: Logger(label: "signaldb.bench-baseline"))
} catch {
    FileHandle.standardError.write(Data("signaldb-bench-baseline: \(error)\n".utf8))
    exit(1)
}
