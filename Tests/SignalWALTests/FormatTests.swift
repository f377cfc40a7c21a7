import XCTest
@testable import SignalWAL

final class FormatTests: XCTestCase {
    func testSegmentFileNamesArePaddedAndParsed() {
        XCTAssertEqual(Format.segmentFileName(1), "segment-000001.wal")
        XCTAssertEqual(Format.segmentFileName(1_234_567), "segment-1234567.wal")
        XCTAssertEqual(Format.segmentSequence(fromFileName: "segment-000042.wal"), 42)
        XCTAssertEqual(Format.segmentSequence(fromFileName: "segment-1234567.wal"), 1_234_567)
        XCTAssertNil(Format.segmentSequence(fromFileName: "segment-42.wal"))
        XCTAssertNil(Format.segmentSequence(fromFileName: "segment-000042.wal.tmp"))
        XCTAssertEqual(Format.quarantineFileName(sequence: 3, offset: 8192), "segment-000003-offset-8192.bin")
    }

    func testSegmentHeaderRoundTripsAndDetectsDamage() throws {
        let header = SegmentHeader(sequence: 9, firstLSN: 1234, segmentSize: 1 << 20, epoch: 0xDEAD_BEEF_F00D)
        let bytes = header.encoded()
        XCTAssertEqual(bytes.count, 64)
        XCTAssertEqual(try bytes.withUnsafeBytes { try SegmentHeader.decode($0).get() }, header)
        for index in 0..<60 {
            var damaged = bytes
            damaged[index] ^= 0x10
            XCTAssertThrowsError(try damaged.withUnsafeBytes { try SegmentHeader.decode($0).get() }, "byte \(index)")
        }
    }

    func testRecordSpanIsAlignedToEightBytes() {
        XCTAssertEqual(Format.recordSpan(payloadLength: 0), 24)
        XCTAssertEqual(Format.recordSpan(payloadLength: 1), 32)
        XCTAssertEqual(Format.recordSpan(payloadLength: 8), 32)
        XCTAssertEqual(Format.recordSpan(payloadLength: 9), 40)
    }

    func testRecordChecksumCoversEveryHeaderField() {
        let base = RecordHeader.checksum(payloadCRC: 77, length: 10, lsn: 5, epoch: 9)
        XCTAssertNotEqual(base, RecordHeader.checksum(payloadCRC: 78, length: 10, lsn: 5, epoch: 9))
        XCTAssertNotEqual(base, RecordHeader.checksum(payloadCRC: 77, length: 11, lsn: 5, epoch: 9))
        XCTAssertNotEqual(base, RecordHeader.checksum(payloadCRC: 77, length: 10, lsn: 6, epoch: 9))
        XCTAssertNotEqual(base, RecordHeader.checksum(payloadCRC: 77, length: 10, lsn: 5, epoch: 10))
    }

    func testCheckpointRecordRoundTrips() throws {
        let bytes = CheckpointRecord(lsn: 987_654).encoded()
        XCTAssertEqual(try bytes.withUnsafeBytes { try CheckpointRecord.decode($0).get() }.lsn, 987_654)
        var damaged = bytes
        damaged[17] ^= 1
        XCTAssertThrowsError(try damaged.withUnsafeBytes { try CheckpointRecord.decode($0).get() })
    }
}
