import Foundation
import XCTest
@testable import SignalWAL

/// Issue 4's exhaustive corruption cases over a WAL with two sealed segments and an active one:
/// every bit of sampled record headers, sampled payload bits, every byte of a segment header,
/// a torn write at every byte of the last record, overwritten ranges. Each case checks that
/// open succeeds, exactly the damaged records are missing and reported (count and LSNs), every
/// other record comes back byte for byte, quarantine files appear where docs/FORMAT.md says, and
/// a second open gives the same records and adds no quarantine file.
extension RecoveryTests {
    /// Opens `directory` twice and checks the outcome against `lost`.
    func assertDamage(_ directory: String, lost: Set<LSN>, quarantined expected: [String], context: String,
                      file: StaticString = #filePath, line: UInt = #line) throws {
        var quarantineAfterFirst: [String] = []
        for pass in 1...2 {
            let wal = try open(directory)
            let report = wal.recoveryReport
            let reported = Set(report.damage.compactMap(\.lostLSNs).flatMap { Array($0) })
            XCTAssertEqual(reported, lost, "\(context), pass \(pass): lost LSNs reported \(report.damage)", file: file, line: line)
            XCTAssertEqual(report.recordsLost, UInt64(lost.count), "\(context), pass \(pass)", file: file, line: line)
            assertRecords(wal, (1...Self.recordCount).filter { !lost.contains($0) }, file: file, line: line)
            try wal.close()
            let present = quarantineFiles(directory)
            for name in expected {
                XCTAssertTrue(present.contains(name), "\(context): expected quarantine/\(name), found \(present)", file: file, line: line)
            }
            if pass == 1 { quarantineAfterFirst = present }
            else { XCTAssertEqual(present, quarantineAfterFirst, "\(context): the second open quarantined again", file: file, line: line) }
        }
    }

    /// Records to damage: the first and a middle record of the first segment, a middle record of
    /// the second (last records of sealed segments have their own case below).
    func sampleVictims(_ template: String) -> [(segment: UInt64, path: String, offset: Int, lsn: LSN, length: Int)] {
        let segments = dataSegments(template)
        return [(0, 0), (0, 1), (1, 1)].map { index, where_ in
            let layout = recordLayout(segments[index])
            let record = where_ == 0 ? layout[0] : layout[layout.count / 2]
            return (UInt64(index + 1), segments[index], record.offset, record.lsn, record.length)
        }
    }

    func testEveryBitOfSampledRecordHeadersIsCaught() throws {
        let template = try makeWAL()
        var cases = 0
        for victim in sampleVictims(template) {
            for bit in stride(from: 0, to: Format.recordHeaderSize * 8, by: reducedIterations ? 7 : 1) {
                let directory = try copy(template)
                let name = String(victim.path.split(separator: "/").last!)
                flipBit(directory + "/" + name, at: victim.offset + bit / 8, bit: bit % 8)
                try assertDamage(directory, lost: [victim.lsn],
                                 quarantined: [Format.quarantineFileName(sequence: victim.segment, offset: victim.offset)],
                                 context: "segment \(victim.segment) LSN \(victim.lsn) header bit \(bit)")
                try FileManager.default.removeItem(atPath: directory)
                cases += 1
            }
        }
        XCTAssertEqual(cases, reducedIterations ? 3 * 28 : 3 * 192)
    }

    func testSampledPayloadBitsAreCaught() throws {
        let template = try makeWAL()
        for victim in sampleVictims(template) {
            let bits = victim.length * 8
            // The first and last bits, and 30 spread between.
            let sample = [0, bits - 1] + (1...(reducedIterations ? 4 : 30)).map { $0 * bits / 31 }
            for bit in sample {
                let directory = try copy(template)
                let name = String(victim.path.split(separator: "/").last!)
                flipBit(directory + "/" + name, at: victim.offset + Format.recordHeaderSize + bit / 8, bit: bit % 8)
                try assertDamage(directory, lost: [victim.lsn],
                                 quarantined: [Format.quarantineFileName(sequence: victim.segment, offset: victim.offset)],
                                 context: "segment \(victim.segment) LSN \(victim.lsn) payload bit \(bit)")
                try FileManager.default.removeItem(atPath: directory)
            }
        }
    }

    func testEveryByteOfASegmentHeaderIsCaught() throws {
        let template = try makeWAL()
        let victim = dataSegments(template)[1]
        let lost = Set(recordLayout(victim).map(\.lsn))
        for byte in stride(from: 0, to: Format.segmentHeaderSize, by: reducedIterations ? 5 : 1) {
            let directory = try copy(template)
            flipBit(directory + "/" + victim.split(separator: "/").last!, at: byte, bit: byte % 8)
            try assertDamage(directory, lost: lost, quarantined: [Format.segmentFileName(2)], context: "segment header byte \(byte)")
            try FileManager.default.removeItem(atPath: directory)
        }
    }

    func testTornWriteAtEveryByteOfTheLastRecordIsTruncated() throws {
        let template = try makeWAL()
        let newest = dataSegments(template).last!
        let last = recordLayout(newest).last!
        let span = Format.recordSpan(payloadLength: last.length)
        let directory = try copy(template)
        let path = directory + "/" + newest.split(separator: "/").last!
        let original = readBytes(path, at: last.offset, count: span)
        // In place: recovery only zeroes this record's slot, so restoring it resets the case.
        for cut in stride(from: 0, to: span, by: reducedIterations ? 37 : 1) {
            writeBytes(path, at: last.offset + cut, [UInt8](repeating: 0, count: span - cut))
            for pass in 1...2 {
                let wal = try open(directory)
                let report = wal.recoveryReport
                // Nothing written at all is a clean end, not a torn record.
                let torn = pass == 1 && cut > 0
                XCTAssertEqual(report.damage.map(\.kind), torn ? [.tornTail] : [], "cut \(cut) pass \(pass)")
                if torn { XCTAssertEqual(report.damage.first?.offset, last.offset, "cut \(cut)") }
                XCTAssertEqual(report.recordsLost, 0)
                assertRecords(wal, Array(1..<Self.recordCount))
                XCTAssertEqual(wal.nextLSN, Self.recordCount, "the dropped record was never acknowledged; its LSN is reused")
                try wal.close()
            }
            writeBytes(path, at: last.offset, original)
        }
        // Torn bytes are copied aside once (a torn write and a damaged, acknowledged last record
        // look alike, so the bytes are kept for an operator), under the record's offset.
        let sequence = Format.segmentSequence(fromFileName: String(newest.split(separator: "/").last!))!
        XCTAssertEqual(quarantineFiles(directory).map { String($0.split(separator: "/").last!) },
                       [Format.quarantineFileName(sequence: sequence, offset: last.offset)])
    }

    func testOverwrittenRangesLoseExactlyTheRecordsTheyTouch() throws {
        let template = try makeWAL()
        let sealed = dataSegments(template)[0]
        let layout = recordLayout(sealed)
        let name = String(sealed.split(separator: "/").last!)
        var generator = SystemRandomNumberGenerator()
        // (first byte, length): inside one record, across a boundary, over several records,
        // a single byte, a page, and up to the end of the segment's last record.
        let middle = layout[layout.count / 2]
        let ranges = [
            (middle.offset + 30, 100), (middle.offset + 20, 3000), (layout[10].offset, 10_000),
            (layout[200].offset + 7, 1), (layout[300].offset - 100, 4096), (layout[5].offset, 24),
            (layout[layout.count - 3].offset + 50, layout.last!.offset + 24 + layout.last!.length - layout[layout.count - 3].offset - 50),
        ]
        for (start, length) in ranges {
            for fill in ["zeros", "random"] {
                let touched = layout.filter { $0.offset < start + length && start < $0.offset + Format.recordHeaderSize + $0.length }
                XCTAssertFalse(touched.isEmpty)
                let directory = try copy(template)
                let bytes = fill == "zeros" ? [UInt8](repeating: 0, count: length)
                                            : (0..<length).map { _ in UInt8.random(in: 0...255, using: &generator) }
                writeBytes(directory + "/" + name, at: start, bytes)
                try assertDamage(directory, lost: Set(touched.map(\.lsn)),
                                 quarantined: [Format.quarantineFileName(sequence: 1, offset: touched[0].offset)],
                                 context: "\(fill) over [\(start), \(start + length))")
                try FileManager.default.removeItem(atPath: directory)
            }
        }
    }
}
