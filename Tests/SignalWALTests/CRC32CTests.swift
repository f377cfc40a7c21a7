import CShims
import XCTest
@testable import SignalWAL

final class CRC32CTests: XCTestCase {
    func testStandardCheckValue() {
        let input = Array("123456789".utf8)
        XCTAssertEqual(CRC32C.checksum(input), 0xE306_9283)
        XCTAssertEqual(input.withUnsafeBytes { sw_crc32c_sw(0, $0.baseAddress, $0.count) }, 0xE306_9283)
        XCTAssertEqual(input.withUnsafeBytes { sw_crc32c_hw(0, $0.baseAddress, $0.count) }, 0xE306_9283)
    }

    func testHardwareIsUsedWhereAvailable() {
        // These machines have SSE4.2; if this fails the fast path silently went away.
        XCTAssertTrue(CRC32C.usesHardware)
    }

    func testHardwareAndTableAgreeOnOddLengthsAndAlignments() {
        var generator = SystemRandomNumberGenerator()
        let buffer = (0..<9000).map { _ in UInt8.random(in: 0 ... 255, using: &generator) }
        buffer.withUnsafeBytes { raw in
            for _ in 0..<2000 {
                let start = Int.random(in: 0..<64)
                let length = Int.random(in: 0...(raw.count - start))
                let seed = UInt32.random(in: 0 ... .max)
                let hardware = sw_crc32c_hw(seed, raw.baseAddress! + start, length)
                let table = sw_crc32c_sw(seed, raw.baseAddress! + start, length)
                XCTAssertEqual(hardware, table, "start \(start) length \(length)")
            }
        }
    }

    func testExtendingEqualsOneShot() {
        let data = testPayload(7, length: 1000)
        for split in [0, 1, 7, 8, 9, 500, 999, 1000] {
            let first = CRC32C.checksum(data[0..<split])
            XCTAssertEqual(CRC32C.checksum(data[split...], extending: first), CRC32C.checksum(data), "split \(split)")
        }
    }
}
