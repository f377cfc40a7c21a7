import XCTest
@testable import SignalWAL

final class CheckpointTests: XCTestCase {
    func testCheckpointReopenResumesAfterIt() throws {
        let directory = makeTemporaryDirectory(self)
        let configuration = testConfiguration()
        do {
            let wal = try WAL.open(directory: directory, configuration: configuration)
            for index in 0..<100 { try wal.append(testPayload(index, length: 10)) }
            try wal.checkpoint(upTo: 60)
            XCTAssertEqual(wal.checkpointLSN, 60)
            try wal.checkpoint(upTo: 40) // lower: ignored
            XCTAssertEqual(wal.checkpointLSN, 60)
            XCTAssertThrowsError(try wal.checkpoint(upTo: 101)) { error in
                XCTAssertEqual((error as? WALError)?.kind, .invalidArgument)
            }
            try wal.close()
        }
        let wal = try WAL.open(directory: directory, configuration: configuration)
        defer { try? wal.close() }
        XCTAssertEqual(wal.checkpointLSN, 60)
        XCTAssertEqual(wal.recoveryReport.checkpointLSN, 60)
        let resumed = readAll(wal, from: wal.checkpointLSN + 1)
        XCTAssertEqual(resumed.map(\.lsn), Array(61...100))
        XCTAssertEqual(resumed.first?.payload, testPayload(60, length: 10))
    }

    func testSegmentsBelowTheCheckpointAreReusedAndDiskUseStaysBounded() throws {
        for backend in IOBackend.allCases { try reuse(backend: backend) }
    }

    private func reuse(backend: IOBackend) throws {
        let directory = makeTemporaryDirectory(self)
        let wal = try WAL.open(directory: directory, configuration: testConfiguration(spares: 2, backend: backend))
        defer { try? wal.close() }
        let payload = [UInt8](repeating: 7, count: 60_000) // ~17 records per 1 MiB segment
        var maxFiles = 0
        for round in 0..<40 {
            let range = try wal.append(contentsOf: Array(repeating: payload, count: 20))
            try wal.checkpoint(upTo: range.upperBound)
            maxFiles = max(maxFiles, segmentFiles(directory).count)
            if round == 39 { usleep(200_000) }
        }
        let stats = wal.allocator.statistics
        XCTAssertGreaterThan(stats.recycled, 10, "segments below the checkpoint were reused")
        // live (at most 2 while a batch spans a boundary) + 2 spares + up to 2 kept for reuse
        XCTAssertLessThanOrEqual(maxFiles, 2 + 2 + 2 + 1)
        let numbers = segmentFiles(directory).compactMap { Format.segmentSequence(fromFileName: String($0.split(separator: "/").last!)) }
        XCTAssertEqual(numbers, numbers.sorted())
        XCTAssertEqual(readAll(wal, from: wal.checkpointLSN + 1).count, 0, "everything was checkpointed")
    }

    func testReusedSegmentNumbersAreNeverReusedForDifferentContent() throws {
        let directory = makeTemporaryDirectory(self)
        var seen = Set<String>()
        let wal = try WAL.open(directory: directory, configuration: testConfiguration())
        defer { try? wal.close() }
        let payload = [UInt8](repeating: 1, count: 100_000)
        var lastLive: [String] = []
        for _ in 0..<20 {
            let range = try wal.append(contentsOf: Array(repeating: payload, count: 12))
            let live = wal.liveSegmentPaths
            for path in live where !lastLive.contains(path) {
                XCTAssertFalse(seen.contains(path), "\(path) held live records twice")
                seen.insert(path)
            }
            lastLive = live
            try wal.checkpoint(upTo: range.upperBound)
        }
    }
}
