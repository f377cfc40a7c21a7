#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Synchronization
import XCTest
@testable import SignalWAL

/// Recovery's defects (issue 10), one test each, named after the failure, over the same
/// template WAL as `RecoveryTests` (fresh, never-recycled segments).
extension RecoveryTests {
    /// R2: garbage over the newest segment's last record header read as a clean end: no
    /// report, no copy, the LSN handed out again.
    func testGarbageOverTheLastRecordOfAFreshSegmentIsReportedAndItsLSNNotReused() throws {
        let template = try makeWAL()
        let newest = dataSegments(template).last!
        let last = recordLayout(newest).last!
        for length in [24, 200, 5000] {
            let directory = try copy(template)
            let path = directory + "/" + newest.split(separator: "/").last!
            writeBytes(path, at: last.offset, (0..<length).map { _ in UInt8.random(in: 1...255) })
            for pass in 1...2 {
                let wal = try open(directory)
                let report = wal.recoveryReport
                XCTAssertEqual(report.isClean, pass == 2, "length \(length) pass \(pass): damaged, then repaired")
                if pass == 1 {
                    XCTAssertEqual(report.damage.map(\.kind), [.corruptTail], "length \(length): \(report.damage)")
                    XCTAssertNotNil(report.damage.first?.quarantineFile)
                    XCTAssertGreaterThan(report.recordsLost, 0, "the record the garbage replaced is counted")
                }
                XCTAssertGreaterThan(wal.nextLSN, Self.recordCount, "length \(length): LSN \(Self.recordCount) may have been acknowledged; never again")
                assertRecords(wal, Array(1..<Self.recordCount))
                try wal.close()
            }
            XCTAssertEqual(quarantineFiles(directory).count, 1)
        }
    }

    /// R3: a newest segment with a bad header was quarantined and its LSNs given out again,
    /// with `recordsLost` 0.
    func testNewestSegmentWithABadHeaderDoesNotGiveItsLSNsOut() throws {
        let template = try makeWAL()
        let segments = dataSegments(template)
        XCTAssertGreaterThan(segments.count, 1)
        let newestLayout = recordLayout(segments.last!)
        let highest = newestLayout.last!.lsn
        for damage in ["magic", "header CRC", "header and first record"] {
            let directory = try copy(template)
            let path = directory + "/" + segments.last!.split(separator: "/").last!
            flipBit(path, at: damage == "magic" ? 0 : 30)
            if damage == "header and first record" { flipBit(path, at: Format.segmentHeaderBlock + 30) }
            let wal = try open(directory)
            let report = wal.recoveryReport
            XCTAssertEqual(report.quarantinedSegments.count, 1, damage)
            XCTAssertGreaterThanOrEqual(report.recordsLost, UInt64(newestLayout.count), "\(damage): the quarantined records count as lost")
            XCTAssertGreaterThan(wal.nextLSN, highest, "\(damage): no LSN of the quarantined segment is given out again")
            let lsn = try wal.append([9])
            XCTAssertGreaterThan(lsn, highest, damage)
            try wal.close()
        }
    }

    /// R4: quarantining on a disk where `quarantine/` cannot be created failed the open.
    func testQuarantineWhenTheQuarantineDirectoryCannotBeMadeRenamesInPlace() throws {
        let template = try makeWAL()
        let sealed = dataSegments(template)[0]
        let directory = try copy(template)
        let name = String(sealed.split(separator: "/").last!)
        flipBit(directory + "/" + name, at: 0)
        // A file where the directory should be: mkdir fails as it would on a full disk.
        try? FileManager.default.removeItem(atPath: directory + "/quarantine")
        XCTAssertTrue(FileManager.default.createFile(atPath: directory + "/quarantine", contents: Data([1])))
        let wal = try open(directory)
        XCTAssertEqual(wal.recoveryReport.quarantinedSegments.first?.path, directory + "/" + name + Format.quarantinedInPlaceSuffix)
        XCTAssertTrue(FileManager.default.fileExists(atPath: directory + "/" + name + Format.quarantinedInPlaceSuffix))
        XCTAssertFalse(FileManager.default.fileExists(atPath: directory + "/" + name))
        try wal.close()
        // The renamed file is neither read as a segment nor given its number again.
        let again = try open(directory)
        XCTAssertTrue(again.recoveryReport.quarantinedSegments.isEmpty)
        try again.append([1])
        XCTAssertFalse(again.liveSegmentPaths.contains(directory + "/" + name))
        try again.close()
    }

    func testQuarantineDirectoryExistsFromTheFirstOpen() throws {
        let directory = makeTemporaryDirectory(self)
        let wal = try open(directory)
        try wal.close()
        XCTAssertTrue(FileSystem.kind(of: directory + "/quarantine").isDirectory, "made while there is space")
    }

    /// D5: a spare found at recovery kept its epoch, so records of that epoch past its first
    /// slot (a cut during its first flush) came back later as log records.
    func testRecoveredSpareHoldingRecordsOfItsEpochNeverReturnsThem() throws {
        let directory = makeTemporaryDirectory(self)
        var wal = try open(directory)
        try wal.append([1])
        try wal.close()
        // The spares the allocator prepared: plant a valid record of the spare's epoch at 8192.
        let spare = try XCTUnwrap(segmentFiles(directory).first { path in
            let header = readBytes(path, at: 0, count: 64).withUnsafeBytes { try? SegmentHeader.decode($0).get() }
            return header?.firstLSN == 0
        })
        let header = try readBytes(spare, at: 0, count: 64).withUnsafeBytes { try SegmentHeader.decode($0).get() }
        let payload: [UInt8] = Array(repeating: 0xAB, count: 40)
        let record = RecordHeader(length: 40, crc: RecordHeader.checksum(payloadCRC: CRC32C.checksum(payload), length: 40, lsn: 50,
                                                                          epoch: header.epoch), lsn: 50, epoch: header.epoch)
        var bytes = [UInt8](repeating: 0, count: 24)
        bytes.withUnsafeMutableBytes { record.store(to: $0) }
        writeBytes(spare, at: 8192, bytes + payload)
        wal = try open(directory)
        for index in 0..<200 { try wal.append(testPayload(index, length: 100)) }
        try wal.close()
        wal = try open(directory)
        XCTAssertEqual(readAll(wal).map(\.lsn), Array(1...201), "\(wal.recoveryReport.damage)")
        try wal.close()
    }

    /// R5: resynchronisation cost O(segment x maxPayload) of CRC on a crafted segment (hours
    /// for 64 MiB). A hang guard, not a benchmark: the unbounded scan of this 1 MiB image
    /// spends about 34 GB of CRC.
    func testCraftedSegmentCannotMakeResynchronisationQuadratic() throws {
        let size = 1 << 20
        let epoch: UInt64 = 0x0000_0001_0007_FF00
        var image = [UInt8](repeating: 0, count: size)
        image.withUnsafeMutableBytes { raw in
            var offset = Format.segmentHeaderBlock
            while offset + 8 <= size {
                raw.storeBytes(of: epoch.littleEndian, toByteOffset: offset, as: UInt64.self)
                offset += 8
            }
        }
        let header = SegmentHeader(sequence: 1, firstLSN: 1, segmentSize: UInt64(size), epoch: epoch)
        image.replaceSubrange(0..<64, with: header.encoded())
        let started = ContinuousClock.now
        let summary = try image.withUnsafeBytes {
            try WALDirectory.scan(image: $0, sequence: 1, path: "crafted", checkSize: true)
        }
        let took = ContinuousClock.now - started
        XCTAssertEqual(summary.records, 0)
        XCTAssertLessThan(took, .seconds(5), "the scan took \(took)")
    }

    /// R1: recovery read segments through a mapping, so an unreadable block (EIO) was a SIGBUS
    /// on every open. Now the block is damage, and readers step over it.
    func testUnreadableBlockIsDamageNotACrash() throws {
        let template = try makeWAL()
        let sealed = dataSegments(template)[0]
        let directory = try copy(template)
        let name = String(sealed.split(separator: "/").last!)
        let layout = recordLayout(directory + "/" + name)
        let badBlock = 3 * 4096 ..< 4 * 4096
        // The open's reads of this file: header, first slot, the first 1 MiB chunk (fails),
        // then block by block; the fourth block fails.
        let reads = Atomic<Int>(0)
        let dropped = Atomic<Int>(0)
        Syscall.setFaultHook { operation, path in
            guard path.hasSuffix(name) else { return nil }
            if operation == .fadvise { dropped.add(1, ordering: .relaxed) }
            guard operation == .pread else { return nil }
            let call = reads.add(1, ordering: .relaxed).newValue
            return call == 3 || call == 3 + 1 + badBlock.lowerBound / 4096 ? .fail(errno: EIO) : nil
        }
        let wal = try open(directory)
        Syscall.setFaultHook(nil)
        let report = wal.recoveryReport
        XCTAssertGreaterThan(dropped.load(ordering: .relaxed), 0, "cached pages are dropped before the scan")
        XCTAssertTrue(report.damage.contains { $0.kind == .unreadable && $0.offset == badBlock.lowerBound && $0.length == 4096 }, "\(report.damage)")
        let touched = Set(layout.filter { $0.offset < badBlock.upperBound && $0.offset + Format.recordSpan(payloadLength: $0.length) > badBlock.lowerBound }.map(\.lsn))
        XCTAssertFalse(touched.isEmpty)
        let lost = Set(report.damage.compactMap(\.lostLSNs).flatMap { Array($0) })
        XCTAssertTrue(touched.isSubset(of: lost), "every record on the bad block is reported lost: \(touched.sorted()) vs \(lost.sorted())")
        assertRecords(wal, (1...Self.recordCount).filter { !lost.contains($0) })
        try wal.close()
    }

    /// D3 at recovery: the last batch whose final record never reached the disk is dropped
    /// whole, as never acknowledged, and its LSNs are given out again.
    func testIncompleteBatchAtTheTailIsDroppedWhole() throws {
        let directory = makeTemporaryDirectory(self)
        var wal = try open(directory)
        try wal.append(contentsOf: (1...50).map(Self.payload))
        try wal.append(contentsOf: (51...60).map(Self.payload))
        try wal.close()
        let newest = dataSegments(directory).last!
        let last = recordLayout(newest).last!
        XCTAssertEqual(last.lsn, 60)
        writeBytes(newest, at: last.offset, [UInt8](repeating: 0, count: Format.recordSpan(payloadLength: last.length)))
        for pass in 1...2 {
            wal = try open(directory)
            let report = wal.recoveryReport
            if pass == 1 {
                XCTAssertEqual(report.damage.map(\.kind), [.incompleteBatch], "\(report.damage)")
                XCTAssertEqual(report.damage.first?.lostLSNs, 51...59)
            } else {
                XCTAssertTrue(report.damage.isEmpty, "dropped and zeroed the first time: \(report.damage)")
            }
            XCTAssertEqual(report.recordsLost, 0, "never acknowledged")
            assertRecords(wal, Array(1...50))
            XCTAssertEqual(wal.nextLSN, 51)
            try wal.close()
        }
        wal = try open(directory)
        XCTAssertEqual(try wal.append(contentsOf: (51...53).map(Self.payload)), 51...53)
        try wal.close()
        wal = try open(directory)
        assertRecords(wal, Array(1...53))
        try wal.close()
    }

    func testIncompleteBatchSpanningSegmentsDropsTheLaterSegment() throws {
        let directory = makeTemporaryDirectory(self)
        var wal = try open(directory)
        try wal.append(contentsOf: (1...900).map(Self.payload))
        // Records of about 1 KiB: 1,000 of them span two 1 MiB segments at least.
        try wal.append(contentsOf: (901...1900).map(Self.payload))
        try wal.close()
        let segments = dataSegments(directory)
        XCTAssertGreaterThanOrEqual(segments.count, 3)
        let last = recordLayout(segments.last!).last!
        XCTAssertEqual(last.lsn, 1900)
        writeBytes(segments.last!, at: last.offset, [UInt8](repeating: 0, count: Format.recordSpan(payloadLength: last.length)))
        wal = try open(directory)
        XCTAssertEqual(wal.recoveryReport.damage.filter { $0.kind == .incompleteBatch }.first?.lostLSNs, 901...1899)
        XCTAssertFalse(FileManager.default.fileExists(atPath: segments.last!), "a segment holding only the dropped batch is deleted")
        assertRecords(wal, Array(1...900))
        XCTAssertEqual(wal.nextLSN, 901)
        XCTAssertEqual(try wal.append(Self.payload(901)), 901)
        try wal.close()
        wal = try open(directory)
        XCTAssertTrue(wal.recoveryReport.damage.isEmpty, "\(wal.recoveryReport.damage)")
        assertRecords(wal, Array(1...901))
        try wal.close()
    }

    /// `signalwal repair`'s dry run is the engine's plan: making it changes no byte.
    func testRecoveryPlanChangesNothing() throws {
        let template = try makeWAL()
        let directory = try copy(template)
        let newest = dataSegments(directory).last!
        let last = recordLayout(newest).last!
        writeBytes(newest, at: last.offset + 30, [1, 2, 3])
        flipBit(dataSegments(directory)[0], at: Format.segmentHeaderBlock + 100)
        let before = segmentFiles(directory).map { readBytes($0, at: 0, count: 1 << 20) }
        let plan = try WALDirectory(path: directory).recoveryPlan(configuration: testConfiguration())
        XCTAssertTrue(plan.changesFiles)
        XCTAssertEqual(plan.tail?.reason, .tornRecord)
        XCTAssertEqual(plan.preserves.count, 2)
        XCTAssertEqual(segmentFiles(directory).map { readBytes($0, at: 0, count: 1 << 20) }, before)
        XCTAssertTrue(quarantineFiles(directory).isEmpty)
        // Applying it (an open) does what it said.
        let wal = try open(directory)
        XCTAssertEqual(wal.recoveryReport.damage.map(\.kind), plan.report.damage.map(\.kind))
        XCTAssertEqual(quarantineFiles(directory).count, 2)
        try wal.close()
    }
}

extension RecoveryTests {
    /// When the dropped batch was all the newest segment held, that segment is active and
    /// empty, and every earlier record must still be readable.
    func testRecordsBeforeADroppedBatchThatFilledTheNewestSegmentAreReadable() throws {
        let directory = makeTemporaryDirectory(self)
        var wal = try open(directory)
        let payload = [UInt8](repeating: 5, count: 1000)
        // 1,020 records of span 1,024 fill the first 1 MiB segment exactly.
        for _ in 0..<1020 { try wal.append(payload) }
        XCTAssertEqual(try wal.append(contentsOf: Array(repeating: payload, count: 5)), 1021...1025)
        try wal.close()
        let newest = dataSegments(directory).last!
        let layout = recordLayout(newest)
        XCTAssertEqual(layout.first?.lsn, 1021, "the batch starts the second segment")
        writeBytes(newest, at: layout.last!.offset, [UInt8](repeating: 0, count: 1024))
        wal = try open(directory)
        XCTAssertEqual(wal.recoveryReport.damage.map(\.kind), [.incompleteBatch])
        XCTAssertEqual(readAll(wal).map(\.lsn), Array(1...1020))
        XCTAssertEqual(try wal.append(payload), 1021)
        XCTAssertEqual(readAll(wal).map(\.lsn), Array(1...1021))
        try wal.close()
    }
}

extension RecoveryTests {
    /// A flush whose later pages reached the disk before its first (writeback or device
    /// order), cut by a power loss: the last batch starts with zeros. It was never
    /// acknowledged; it is dropped whole, not reported as mid-log loss with its rest kept.
    func testLastBatchWhoseFirstPageNeverReachedTheDiskIsDroppedWhole() throws {
        let directory = makeTemporaryDirectory(self)
        var wal = try open(directory)
        try wal.append(contentsOf: (1...20).map(Self.payload))
        try wal.append(contentsOf: (21...40).map(Self.payload))
        try wal.close()
        let newest = dataSegments(directory).last!
        let layout = recordLayout(newest)
        let batchStart = try XCTUnwrap(layout.first { $0.lsn == 21 }).offset
        let pageEnd = (batchStart / 4096 + 1) * 4096
        writeBytes(newest, at: batchStart, [UInt8](repeating: 0, count: pageEnd - batchStart))
        XCTAssertTrue(layout.contains { $0.offset > pageEnd }, "records of the batch survive past the zeroed page")
        for pass in 1...2 {
            wal = try open(directory)
            let report = wal.recoveryReport
            XCTAssertEqual(report.damage.map(\.kind), pass == 1 ? [.incompleteBatch] : [], "pass \(pass): \(report.damage)")
            XCTAssertEqual(report.recordsLost, 0)
            assertRecords(wal, Array(1...20))
            XCTAssertEqual(wal.nextLSN, 21)
            try wal.close()
        }
    }

    /// The same ordering after the end of the log: zeros, then a later page of the last flush.
    /// A torn write (nothing acknowledged), not garbage over records.
    func testReorderedPagesAfterTheEndAreATornWriteNotGarbage() throws {
        let template = try makeWAL()
        let directory = try copy(template)
        let newest = dataSegments(directory).last!
        let last = recordLayout(newest).last!
        let end = last.offset + Format.recordSpan(payloadLength: last.length)
        let nextPage = (end / 4096 + 1) * 4096
        writeBytes(newest, at: nextPage, (0..<3000).map { _ in UInt8.random(in: 1...255) })
        let wal = try open(directory)
        XCTAssertEqual(wal.recoveryReport.damage.map(\.kind), [.tornTail], "\(wal.recoveryReport.damage)")
        XCTAssertEqual(wal.recoveryReport.recordsLost, 0)
        XCTAssertEqual(wal.nextLSN, Self.recordCount + 1, "no LSN floor for a torn write")
        assertRecords(wal, Array(1...Self.recordCount))
        try wal.close()
    }
}
