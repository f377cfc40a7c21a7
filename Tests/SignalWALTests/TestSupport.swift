#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Logging
import XCTest
@testable import SignalWAL

/// Set (SIGNALWAL_REDUCED=1) for the sanitizer runs: the exhaustive and looping tests sample
/// fewer cases, so ASan and TSan can run the whole suite within the CI budget.
let reducedIterations = ProcessInfo.processInfo.environment["SIGNALWAL_REDUCED"] != nil

/// A fresh directory under /tmp, removed when the test ends.
func makeTemporaryDirectory(_ test: XCTestCase, function: String = #function) -> String {
    let base = "/tmp/signalwal-tests"
    try? FileManager.default.createDirectory(atPath: base, withIntermediateDirectories: true)
    let path = base + "/" + function.filter { $0.isLetter || $0.isNumber } + "-" + String(UInt32.random(in: 0 ... .max), radix: 16)
    test.addTeardownBlock { try? FileManager.default.removeItem(atPath: path) }
    return path
}

/// Small segments so tests cross many boundaries quickly; quiet logs.
func testConfiguration(segmentSize: Int = 1 << 20, durability: DurabilityPolicy = .groupCommit,
                       spares: Int = 2, maxRecordSize: Int? = nil, backend: IOBackend = .uring) -> Configuration {
    // SIGNALWAL_TEST_LOG=1 shows the engine's logs; by default tests are quiet.
    var logger = Logger(label: "signalwal-test")
    if ProcessInfo.processInfo.environment["SIGNALWAL_TEST_LOG"] == nil {
        logger = Logger(label: "signalwal-test", factory: { _ in SwiftLogNoOpLogHandler() })
    } else {
        logger.logLevel = .trace
    }
    return Configuration(segmentSize: segmentSize, maxRecordSize: maxRecordSize, spareSegments: spares,
                         durability: durability, backend: backend, logger: logger)
}

/// Deterministic payload for record `index` of a test, `length` bytes.
func testPayload(_ index: Int, length: Int) -> [UInt8] {
    var state = UInt64(index) &* 0x9E37_79B9_7F4A_7C15 &+ 1
    return [UInt8](unsafeUninitializedCapacity: length) { buffer, count in
        let raw = UnsafeMutableRawBufferPointer(buffer)
        var position = 0
        while position < length {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17
            let take = min(8, length - position)
            withUnsafeBytes(of: state) { word in
                raw.baseAddress!.advanced(by: position).copyMemory(from: word.baseAddress!, byteCount: take)
            }
            position += take
        }
        count = length
    }
}

/// Every visible record from `lsn` on, stepping over missing LSNs (the damage tests check
/// what survived; the gap tests check the gaps themselves).
func readAll(_ wal: WAL, from lsn: LSN = 1) -> [Record] {
    (try? wal.readVisible(from: lsn).records) ?? []
}

func segmentFiles(_ directory: String) -> [String] {
    ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [])
        .filter { Format.segmentSequence(fromFileName: $0) != nil }.sorted()
        .map { directory + "/" + $0 }
}

func quarantineFiles(_ directory: String) -> [String] {
    ((try? FileManager.default.contentsOfDirectory(atPath: directory + "/quarantine")) ?? []).sorted()
}

/// Raw access to a file's bytes, for damaging segments on purpose.
func readBytes(_ path: String, at offset: Int, count: Int) -> [UInt8] {
    let fd = open(path, O_RDONLY)
    defer { close(fd) }
    var bytes = [UInt8](repeating: 0, count: count)
    let n = pread(fd, &bytes, count, off_t(offset))
    precondition(n == count, "short read of \(path)")
    return bytes
}

func writeBytes(_ path: String, at offset: Int, _ bytes: [UInt8]) {
    let fd = open(path, O_WRONLY)
    defer { close(fd) }
    let n = pwrite(fd, bytes, bytes.count, off_t(offset))
    precondition(n == bytes.count, "short write of \(path)")
    fsync(fd)
}

func flipBit(_ path: String, at offset: Int, bit: Int = 0) {
    var byte = readBytes(path, at: offset, count: 1)
    byte[0] ^= UInt8(1 << bit)
    writeBytes(path, at: offset, byte)
}

/// Where each record sits, read straight from a segment file: (offset, LSN, payload length).
func recordLayout(_ path: String) -> [(offset: Int, lsn: LSN, length: Int)] {
    let size = (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0
    let bytes = readBytes(path, at: 0, count: size)
    return bytes.withUnsafeBytes { raw in
        guard case .success(let header) = SegmentHeader.decode(raw) else { return [] }
        var scanner = SegmentScanner(bytes: raw, epoch: header.epoch, maxPayload: Format.largestPayload(segmentSize: size),
                                     resynchronize: false)
        var out: [(Int, LSN, Int)] = []
        while case .record(let offset, let record)? = scanner.next() { out.append((offset, record.lsn, Int(record.length))) }
        return out
    }
}

/// The built `signalwal-demo` executable, which the tests use as a child process.
var demoExecutable: String { builtExecutable("signalwal-demo") }

/// A product of this package, from the build folder the tests run from.
func builtExecutable(_ name: String) -> String {
    let me = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
    var directory = me.deletingLastPathComponent()
    while !directory.path.hasSuffix("/debug") && !directory.path.hasSuffix("/release") && directory.path != "/" {
        directory = directory.deletingLastPathComponent()
    }
    return directory.appendingPathComponent(name).path
}

/// Runs a command to completion and returns its exit status and standard output.
@discardableResult
/// Runs a program to completion; `output` is its standard output and error together.
func runCommand(_ executable: String, _ arguments: [String]) throws -> (status: Int32, output: String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = pipe
    try process.run()
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: data, as: UTF8.self))
}

func openFileDescriptorCount() -> Int {
    ((try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []).count
}

func mappingCount(containing text: String) -> Int {
    let maps = (try? String(contentsOfFile: "/proc/self/maps", encoding: .utf8)) ?? ""
    return maps.split(separator: "\n").filter { $0.contains(text) }.count
}

/// Byte equality through memcmp: `==` on arrays is element by element, slow in debug builds.
func sameBytes(_ a: [UInt8], _ b: [UInt8]) -> Bool {
    a.count == b.count && (a.isEmpty || a.withUnsafeBytes { x in b.withUnsafeBytes { y in memcmp(x.baseAddress!, y.baseAddress!, a.count) == 0 } })
}
