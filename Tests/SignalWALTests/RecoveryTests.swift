import XCTest
@testable import SignalWAL

/// One test per row of the recovery table in docs/RECOVERY.md, each at several byte offsets,
/// each opened twice: the same damage must give the same outcome on every open.
final class RecoveryTests: XCTestCase {
    static let recordCount: LSN = 2000

    static func length(_ lsn: LSN) -> Int { 1000 + Int(lsn &* 37 % 1000) }
    static func payload(_ lsn: LSN) -> [UInt8] {
        lsn >= 1 && lsn <= recordCount ? payloads[Int(lsn - 1)] : testPayload(Int(lsn), length: length(lsn))
    }
    /// Generated once: the exhaustive cases compare every record thousands of times.
    static let payloads: [[UInt8]] = (1...recordCount).map { testPayload(Int($0), length: length($0)) }

    /// A closed WAL with `recordCount` records over two sealed segments and an active one.
    func makeWAL(count: LSN = recordCount) throws -> String {
        let directory = makeTemporaryDirectory(self)
        let wal = try WAL.open(directory: directory, configuration: testConfiguration())
        // Batches of 100, and the last record alone, so damage to it is damage to one record
        // (the batch cases have tests of their own).
        var next: LSN = 1
        while next < count {
            let batch = (next...min(count - 1, next + 99)).map(Self.payload)
            try wal.append(contentsOf: batch)
            next += LSN(batch.count)
        }
        try wal.append(Self.payload(count))
        try wal.close()
        return directory
    }

    func open(_ directory: String) throws -> WAL {
        try WAL.open(directory: directory, configuration: testConfiguration())
    }

    /// Checks every returned record's bytes and that exactly `expected` LSNs come back.
    func assertRecords(_ wal: WAL, _ expected: [LSN], file: StaticString = #filePath, line: UInt = #line) {
        let records = readAll(wal)
        XCTAssertEqual(records.map(\.lsn), expected, file: file, line: line)
        for record in records where !sameBytes(record.payload, Self.payload(record.lsn)) {
            XCTFail("record \(record.lsn) has the wrong bytes", file: file, line: line)
        }
    }

    /// Segment files holding records: the data segments, in order.
    func dataSegments(_ directory: String) -> [String] {
        segmentFiles(directory).filter { !recordLayout($0).isEmpty }
    }

    // MARK: Torn tail

    func testTornWriteAtTailIsTruncated() throws {
        let template = try makeWAL()
        let newest = dataSegments(template).last!
        let last = recordLayout(newest).last!
        let span = Format.recordSpan(payloadLength: last.length)
        XCTAssertEqual(last.lsn, Self.recordCount)
        for cut in [1, 4, 8, 15, 16, 23, 24, 25, span / 2, span - 1] {
            let directory = try copy(template)
            let path = directory + "/" + newest.split(separator: "/").last!
            // The write reached `cut` bytes; what followed never made it.
            writeBytes(path, at: last.offset + cut, [UInt8](repeating: 0, count: span - cut))
            for pass in 1...2 {
                let wal = try open(directory)
                let report = wal.recoveryReport
                XCTAssertEqual(report.tornTails, pass == 1 ? 1 : 0, "cut \(cut) pass \(pass)")
                if pass == 1 {
                    XCTAssertEqual(report.damage.first?.offset, last.offset, "cut \(cut)")
                    XCTAssertEqual(report.damage.first?.kind, .tornTail)
                    // An ordinary crash leftover: clean (nothing acknowledged lost), not pristine.
                    XCTAssertTrue(report.isClean, "cut \(cut): a torn tail is not damage")
                    XCTAssertFalse(report.isPristine)
                    XCTAssertEqual(report.crashLeftovers, 1)
                }
                XCTAssertEqual(report.quarantinedSegments.count, 0)
                assertRecords(wal, Array(1..<Self.recordCount))
                XCTAssertEqual(wal.nextLSN, Self.recordCount)
                try wal.close()
            }
            XCTAssertTrue(readBytes(path, at: last.offset, count: span).allSatisfy { $0 == 0 }, "rest zeroed, cut \(cut)")
        }
    }

    func testGarbageAfterATornWriteAtTailIsTruncated() throws {
        let template = try makeWAL()
        let newest = dataSegments(template).last!
        let last = recordLayout(newest).last!
        let span = Format.recordSpan(payloadLength: last.length)
        for cut in [24, 100, span - 8] {
            let directory = try copy(template)
            let path = directory + "/" + newest.split(separator: "/").last!
            writeBytes(path, at: last.offset + cut, (0..<(span - cut + 4096)).map { _ in UInt8.random(in: 1...255) })
            let wal = try open(directory)
            XCTAssertEqual(wal.recoveryReport.tornTails, 1, "cut \(cut)")
            assertRecords(wal, Array(1..<Self.recordCount))
            // Appending after recovery works and survives another reopen.
            try wal.append(Self.payload(Self.recordCount))
            try wal.close()
            let again = try open(directory)
            XCTAssertTrue(again.recoveryReport.damage.isEmpty, "cut \(cut)")
            assertRecords(again, Array(1...Self.recordCount))
            try again.close()
        }
    }

    // MARK: Damage in the middle

    func testBitFlipInSealedSegmentIsQuarantined() throws {
        let template = try makeWAL()
        let sealed = dataSegments(template)[0]
        let layout = recordLayout(sealed)
        let victim = layout[layout.count / 2]
        // length, CRC, LSN, epoch, first payload byte, last payload byte
        let positions = [0, 5, 9, 17, 24, 24 + victim.length - 1]
        for position in positions {
            let directory = try copy(template)
            let path = directory + "/" + sealed.split(separator: "/").last!
            flipBit(path, at: victim.offset + position, bit: position % 8)
            for pass in 1...2 {
                let wal = try open(directory)
                let report = wal.recoveryReport
                XCTAssertEqual(report.damage.count, 1, "position \(position) pass \(pass): \(report.damage)")
                let damage = try XCTUnwrap(report.damage.first)
                XCTAssertEqual(damage.kind, .corruptRecords)
                XCTAssertEqual(damage.segment, 1)
                XCTAssertEqual(damage.offset, victim.offset)
                XCTAssertEqual(damage.lostLSNs, victim.lsn...victim.lsn)
                XCTAssertEqual(report.recordsLost, 1)
                let quarantined = directory + "/quarantine/" + Format.quarantineFileName(sequence: 1, offset: victim.offset)
                XCTAssertEqual(damage.quarantineFile, quarantined)
                XCTAssertTrue(FileManager.default.fileExists(atPath: quarantined))
                assertRecords(wal, (1...Self.recordCount).filter { $0 != victim.lsn })
                try wal.close()
            }
            XCTAssertEqual(quarantineFiles(directory).count, 1, "one quarantine file, not one per open")
        }
    }

    func testGarbageInTheMiddleOfTheActiveSegmentIsSkipped() throws {
        let template = try makeWAL()
        let active = dataSegments(template).last!
        let layout = recordLayout(active)
        let victims = Array(layout[(layout.count / 2)..<(layout.count / 2 + 3)])
        let directory = try copy(template)
        let path = directory + "/" + active.split(separator: "/").last!
        let start = victims.first!.offset + 10
        let end = victims.last!.offset + 30
        writeBytes(path, at: start, (start..<end).map { _ in UInt8.random(in: 0...255) })
        for _ in 1...2 {
            let wal = try open(directory)
            let lost = Set(victims.map(\.lsn))
            XCTAssertEqual(wal.recoveryReport.tornTails, 0)
            XCTAssertEqual(wal.recoveryReport.recordsLost, 3)
            assertRecords(wal, (1...Self.recordCount).filter { !lost.contains($0) })
            try wal.close()
        }
    }

    func testZeroedRangeInSealedSegmentIsSkipped() throws {
        let template = try makeWAL()
        let sealed = dataSegments(template)[1]
        let layout = recordLayout(sealed)
        for (first, count) in [(0, 1), (10, 4), (layout.count - 6, 5)] {
            let directory = try copy(template)
            let path = directory + "/" + sealed.split(separator: "/").last!
            let victims = Array(layout[first..<(first + count)])
            let end = victims.last!.offset + Format.recordSpan(payloadLength: victims.last!.length)
            writeBytes(path, at: victims.first!.offset, [UInt8](repeating: 0, count: end - victims.first!.offset))
            let wal = try open(directory)
            XCTAssertEqual(wal.recoveryReport.damage.first?.kind, .zeroedRange, "first \(first)")
            XCTAssertEqual(wal.recoveryReport.recordsLost, UInt64(count))
            let lost = Set(victims.map(\.lsn))
            assertRecords(wal, (1...Self.recordCount).filter { !lost.contains($0) })
            try wal.close()
        }
    }

    func testDamagedLastRecordOfSealedSegmentIsReportedAsLost() throws {
        let template = try makeWAL()
        let sealed = dataSegments(template)[0]
        let last = recordLayout(sealed).last!
        let directory = try copy(template)
        let path = directory + "/" + sealed.split(separator: "/").last!
        flipBit(path, at: last.offset + 30)
        let wal = try open(directory)
        XCTAssertEqual(wal.recoveryReport.damage.first?.kind, .corruptTail)
        XCTAssertEqual(wal.recoveryReport.damage.first?.lostLSNs, last.lsn...last.lsn)
        assertRecords(wal, (1...Self.recordCount).filter { $0 != last.lsn })
        try wal.close()
    }

    // MARK: Whole segments

    func testCorruptSegmentHeaderIsQuarantined() throws {
        let template = try makeWAL()
        let victim = dataSegments(template)[1]
        let lost = Set(recordLayout(victim).map(\.lsn))
        for byte in [0, 8, 16, 24, 32, 40, 60] {
            let directory = try copy(template)
            let path = directory + "/" + victim.split(separator: "/").last!
            flipBit(path, at: byte, bit: 3)
            for pass in 1...2 {
                let wal = try open(directory)
                if pass == 1 {
                    XCTAssertEqual(wal.recoveryReport.quarantinedSegments.map(\.segment), [2], "byte \(byte)")
                    XCTAssertTrue(FileManager.default.fileExists(atPath: directory + "/quarantine/segment-000002.wal"))
                    XCTAssertFalse(FileManager.default.fileExists(atPath: path))
                    XCTAssertEqual(wal.recoveryReport.recordsLost, UInt64(lost.count), "the gap is counted")
                }
                assertRecords(wal, (1...Self.recordCount).filter { !lost.contains($0) })
                try wal.close()
            }
        }
    }

    func testCopiedSegmentUnderANewNameIsQuarantinedNotReplayed() throws {
        let directory = try makeWAL()
        let first = dataSegments(directory)[0]
        try FileManager.default.copyItem(atPath: first, toPath: directory + "/segment-000050.wal")
        let wal = try open(directory)
        XCTAssertEqual(wal.recoveryReport.quarantinedSegments.map(\.segment), [50])
        assertRecords(wal, Array(1...Self.recordCount))
        // Spares prepared earlier (4 and 5) are used first; after them, new segments are numbered
        // past the quarantined copy's name, so number 50 is never reused for other content.
        for _ in 0..<5 { try wal.append(contentsOf: (1...700).map { _ in [UInt8](repeating: 1, count: 1500) }) }
        let numbers = wal.liveSegmentPaths.compactMap { Format.segmentSequence(fromFileName: String($0.split(separator: "/").last!)) }
        XCTAssertFalse(numbers.contains(50))
        XCTAssertGreaterThan(numbers.last!, 50, "\(numbers)")
        try wal.close()
    }

    func testInterruptedReuseIsCompleted() throws {
        let directory = try makeWAL()
        // A spare whose file name and header disagree and which holds no records: what a crash
        // between writing a recycled segment's new header and renaming it leaves.
        let spare = segmentFiles(directory).first { recordLayout($0).isEmpty }!
        let moved = directory + "/segment-000040.wal"
        try FileManager.default.moveItem(atPath: spare, toPath: moved)
        let wal = try open(directory)
        XCTAssertTrue(wal.recoveryReport.quarantinedSegments.isEmpty)
        assertRecords(wal, Array(1...Self.recordCount))
        try wal.close()
    }

    // MARK: Stale records

    func testStaleRecordsInReusedSegmentAreNeverReturned() throws {
        let directory = makeTemporaryDirectory(self)
        let wal = try WAL.open(directory: directory, configuration: testConfiguration(spares: 1))
        // Fill several segments, consume them all, so the next segments are recycled files
        // whose bodies are full of records from their previous life.
        for round in 0..<6 {
            let range = try wal.append(contentsOf: (0..<600).map { testPayload(round * 1000 + $0, length: 1500) })
            try wal.checkpoint(upTo: range.upperBound)
        }
        XCTAssertGreaterThan(wal.allocator.statistics.recycled, 0)
        let start = wal.nextLSN
        let fresh = try wal.append(contentsOf: (0..<5).map { testPayload(99_000 + $0, length: 700) })
        XCTAssertEqual(readAll(wal, from: start).map(\.lsn), Array(fresh))
        let active = wal.liveSegmentPaths.last!
        try wal.close()
        let layout = recordLayout(active)
        let end = layout.last!.offset + Format.recordSpan(payloadLength: layout.last!.length)
        XCTAssertFalse(readBytes(active, at: end, count: 4096).allSatisfy { $0 == 0 },
                       "the active segment is a reused file with stale bytes after its last record")
        for _ in 1...2 {
            let reopened = try WAL.open(directory: directory, configuration: testConfiguration(spares: 1))
            XCTAssertEqual(reopened.recoveryReport.damage, [], "stale records are the end of the log, not damage")
            XCTAssertEqual(readAll(reopened, from: 1).map(\.lsn).filter { $0 >= start }, Array(fresh))
            XCTAssertEqual(readAll(reopened, from: start).map(\.payload), (0..<5).map { testPayload(99_000 + $0, length: 700) })
            XCTAssertEqual(reopened.nextLSN, fresh.upperBound + 1)
            try reopened.close()
        }
    }

    // MARK: Checkpoint file

    private func makeCheckpointedWAL() throws -> String {
        let directory = try makeWAL()
        let wal = try open(directory)
        try wal.checkpoint(upTo: 100)
        try wal.close()
        return directory
    }

    func testMissingCheckpointFallsBackToOldestRecord() throws {
        let directory = try makeCheckpointedWAL()
        try FileManager.default.removeItem(atPath: directory + "/.checkpoint")
        let wal = try open(directory)
        XCTAssertEqual(wal.recoveryReport.checkpointProblem, "missing")
        XCTAssertEqual(wal.checkpointLSN, 0)
        XCTAssertEqual(readAll(wal, from: wal.checkpointLSN + 1).first?.lsn, 1, "at-least-once: replay from the oldest")
        try wal.close()
    }

    func testCorruptCheckpointFallsBackToOldestRecord() throws {
        let directory = try makeCheckpointedWAL()
        for byte in [0, 16, 24] {
            flipBit(directory + "/.checkpoint", at: byte)
            let wal = try open(directory)
            XCTAssertNotNil(wal.recoveryReport.checkpointProblem, "byte \(byte)")
            XCTAssertEqual(wal.checkpointLSN, 0)
            XCTAssertEqual(readAll(wal, from: 1).count, Int(Self.recordCount))
            try wal.close()
            flipBit(directory + "/.checkpoint", at: byte)
        }
        // Truncated to a few bytes.
        writeBytes(directory + "/.checkpoint", at: 0, [1, 2, 3])
        truncate(directory + "/.checkpoint", 3)
        let wal = try open(directory)
        XCTAssertNotNil(wal.recoveryReport.checkpointProblem)
        try wal.close()
    }

    // MARK: Versions and leftovers

    func testUnknownFormatVersionIsRefused() throws {
        let directory = try makeWAL()
        let path = dataSegments(directory)[0]
        var header = readBytes(path, at: 0, count: 64)
        header[8] = UInt8(Format.version + 1) // a newer version, with a valid CRC: a newer writer, not damage
        let crc = header.withUnsafeBytes { CRC32C.checksum(UnsafeRawBufferPointer(rebasing: $0[0..<60])) }
        withUnsafeBytes(of: crc.littleEndian) { header.replaceSubrange(60..<64, with: $0) }
        writeBytes(path, at: 0, header)
        for _ in 1...2 {
            XCTAssertThrowsError(try open(directory)) { error in
                let error = error as! WALError
                XCTAssertEqual(error.kind, .unsupportedVersion(found: Format.version + 1, supported: Format.version))
                XCTAssertTrue(error.description.contains(path), error.description)
            }
        }
        XCTAssertTrue(FileManager.default.fileExists(atPath: path), "refusing leaves the files alone")
    }

    func testLeftoverTemporaryFilesAreRemoved() throws {
        let directory = try makeWAL()
        for name in ["segment-000099.wal.tmp", ".checkpoint.tmp"] {
            XCTAssertTrue(FileManager.default.createFile(atPath: directory + "/" + name, contents: Data([1, 2, 3])))
        }
        let wal = try open(directory)
        XCTAssertEqual(wal.recoveryReport.temporaryFilesRemoved, 2)
        XCTAssertFalse(FileManager.default.fileExists(atPath: directory + "/segment-000099.wal.tmp"))
        assertRecords(wal, Array(1...Self.recordCount))
        try wal.close()
    }

    func copy(_ template: String) throws -> String {
        let directory = makeTemporaryDirectory(self)
        try FileManager.default.copyItem(atPath: template, toPath: directory)
        return directory
    }
}
