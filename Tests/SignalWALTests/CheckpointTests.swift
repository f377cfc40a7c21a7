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

/// A floor `signalwal restore` raised (``CheckpointRecord/floorGapUnissued``): the LSNs below it
/// were never handed out by this WAL, so the jump to it is not damage, on every later open; and
/// a damaged record past it is found and reported alone, the records after it kept.
final class UnissuedFloorTests: XCTestCase {
    func testRestoredFloorGapIsNotDamageAndOnlyRecordsPastItCanBeLost() throws {
        let directory = makeTemporaryDirectory(self)
        var wal = try WAL.open(directory: directory, configuration: testConfiguration())
        for i in 0..<10 { _ = try wal.append(testPayload(i, length: 300)) }
        try wal.close()
        let floor: LSN = 11 + (1 << 40)
        try CheckpointFile.store(0, floor: floor, floorGapUnissued: true, directory: directory)

        wal = try WAL.open(directory: directory, configuration: testConfiguration())
        XCTAssertEqual(wal.nextLSN, floor)
        for i in 0..<20 { XCTAssertEqual(try wal.append(testPayload(100 + i, length: 300)), floor + LSN(i)) }
        _ = try wal.checkpoint(upTo: 5)   // a later checkpoint keeps the floor and its flag
        try wal.close()

        for pass in 1...2 {
            wal = try WAL.open(directory: directory, configuration: testConfiguration())
            XCTAssertEqual(wal.recoveryReport.damage, [], "pass \(pass): the jump to the floor is not damage")
            XCTAssertEqual(wal.recoveryReport.recordsLost, 0)
            XCTAssertEqual(wal.nextLSN, floor + 20)
            // A reader stops at the gap (the forwarder reads it as one and steps over it).
            XCTAssertEqual(Array(try wal.records(from: 6)).map(\.lsn), Array(6...10))
            XCTAssertEqual(Array(try wal.records(from: floor)).map(\.lsn), (0..<20).map { floor + LSN($0) })
            try wal.close()
        }

        // Damage the record at the floor: it alone is lost; the scanner resynchronizes past it
        // (a jump of 2^40 from the last record before the floor is plausible there).
        wal = try WAL.open(directory: directory, configuration: testConfiguration())
        let victim = try XCTUnwrap(Array(try wal.records(from: floor, limit: 1)).first)
        let path = try XCTUnwrap(wal.liveSegmentPaths.first { $0.hasSuffix(Format.segmentFileName(victim.segment)) })
        try wal.close()
        flipBit(path, at: victim.offset + Format.recordHeaderSize + 7)
        wal = try WAL.open(directory: directory, configuration: testConfiguration())
        XCTAssertEqual(wal.recoveryReport.damage.compactMap(\.lostLSNs), [floor...floor], "\(wal.recoveryReport.damage)")
        XCTAssertEqual(wal.recoveryReport.recordsLost, 1)
        XCTAssertEqual(Array(try wal.records(from: floor + 1)).count, 19, "the records after it are kept")
        XCTAssertEqual(wal.nextLSN, floor + 20)
        try wal.close()
    }

    /// A floor recovery raised over lost records is not unissued: the same jump is damage.
    func testRecoveryFloorGapIsStillReportedLost() throws {
        let directory = makeTemporaryDirectory(self)
        var wal = try WAL.open(directory: directory, configuration: testConfiguration())
        for i in 0..<10 { _ = try wal.append(testPayload(i, length: 300)) }
        try wal.close()
        try CheckpointFile.store(0, floor: 100, floorGapUnissued: false, directory: directory)
        wal = try WAL.open(directory: directory, configuration: testConfiguration())
        XCTAssertEqual(try wal.append([1]), 100)
        try wal.close()
        wal = try WAL.open(directory: directory, configuration: testConfiguration())
        XCTAssertEqual(wal.recoveryReport.damage.compactMap(\.lostLSNs), [11...99])
        try wal.close()
    }

    func testCheckpointRecordCarriesTheUnissuedFlag() {
        for flag in [false, true] {
            let bytes = CheckpointRecord(lsn: 7, floor: 99, floorGapUnissued: flag).encoded()
            XCTAssertEqual(bytes.withUnsafeBytes { CheckpointRecord.decode($0) }, .success(CheckpointRecord(lsn: 7, floor: 99, floorGapUnissued: flag)))
        }
    }
}
