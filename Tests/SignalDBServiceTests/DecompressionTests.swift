import CZlib
import XCTest
@testable import SignalDBIngest

/// Compresses with the system zlib: windowBits 31 for gzip, 15 for zlib, -15 for raw deflate.
func compress(_ input: [UInt8], windowBits: Int32) -> [UInt8] {
    var stream = z_stream()
    precondition(deflateInit2_(&stream, 6, Z_DEFLATED, windowBits, 8, Z_DEFAULT_STRATEGY, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK)
    defer { deflateEnd(&stream) }
    var out = [UInt8](repeating: 0, count: Int(deflateBound(&stream, UInt(input.count))) + 64)
    var input = input
    let produced: Int = input.withUnsafeMutableBufferPointer { inBuf in
        out.withUnsafeMutableBufferPointer { outBuf in
            stream.next_in = inBuf.baseAddress
            stream.avail_in = UInt32(inBuf.count)
            stream.next_out = outBuf.baseAddress
            stream.avail_out = UInt32(outBuf.count)
            precondition(deflate(&stream, Z_FINISH) == Z_STREAM_END)
            return outBuf.count - Int(stream.avail_out)
        }
    }
    return Array(out[0..<produced])
}

final class DecompressionTests: XCTestCase {
    func testRandomSizesAcrossTheLimitForEveryCoding() throws {
        let limit = 200_000
        for _ in 0..<60 {
            let size = [Int.random(in: 0...400_000), limit - Int.random(in: 0...3), limit + Int.random(in: 1...3),
                        Int.random(in: 1...70_000)].randomElement()!
            // Compressible and incompressible bodies both.
            let body: [UInt8] = Bool.random() ? (0..<size).map { UInt8($0 % 7) } : (0..<size).map { _ in UInt8.random(in: 0...255) }
            for (coding, bits) in [(BodyDecompression.Coding.gzip, Int32(31)), (.deflate, 15), (.deflate, -15)] {
                let compressed = compress(body, windowBits: bits)
                if body.count <= limit {
                    XCTAssertEqual(try BodyDecompression.decode(compressed, coding: coding, limit: limit), body, "\(coding) \(size)")
                } else {
                    XCTAssertThrowsError(try BodyDecompression.decode(compressed, coding: coding, limit: limit)) { error in
                        XCTAssertEqual((error as! IngestError).httpStatus, 413)
                    }
                }
            }
            let identity = Result { try BodyDecompression.decode(body, coding: .identity, limit: limit) }
            XCTAssertEqual(body.count <= limit, (try? identity.get()) != nil)
        }
    }

    func testEveryTruncationOfAGzipBodyIsInvalid() {
        let body = (0..<5000).map { UInt8($0 % 251) }
        let compressed = compress(body, windowBits: 31)
        for cut in 0..<compressed.count {
            XCTAssertThrowsError(try BodyDecompression.decode(Array(compressed[0..<cut]), coding: .gzip, limit: 1 << 20), "cut \(cut)") { error in
                XCTAssertEqual((error as! IngestError).httpStatus, 400)
            }
        }
    }

    func testTrailingBytesAndGarbageAreInvalid() {
        let compressed = compress(Array("hello".utf8), windowBits: 31)
        XCTAssertThrowsError(try BodyDecompression.decode(compressed + [1, 2, 3], coding: .gzip, limit: 1 << 20))
        XCTAssertThrowsError(try BodyDecompression.decode((0..<100).map { _ in UInt8.random(in: 0...255) }, coding: .gzip, limit: 1 << 20))
        XCTAssertThrowsError(try BodyDecompression.decode([], coding: .deflate, limit: 1 << 20))
    }

    func testABombStopsAtTheLimit() {
        let bomb = compress([UInt8](repeating: 0, count: 64 << 20), windowBits: 31)
        XCTAssertLessThan(bomb.count, 100_000)
        XCTAssertThrowsError(try BodyDecompression.decode(bomb, coding: .gzip, limit: 1 << 20)) { error in
            XCTAssertEqual((error as! IngestError).httpStatus, 413)
        }
    }

    /// The reserve callback sees every growth before it happens: the total it is asked for
    /// stays within the limit plus one chunk, and its refusal stops inflation with its error.
    func testInflateChargesItsGrowthThroughReserve() throws {
        let limit = 1 << 20
        for size in [0, 1000, 300_000, limit, limit + 1] {
            let body = (0..<size).map { UInt8($0 % 13) }
            var charged = 0
            let result = Result { () throws(IngestError) -> [UInt8] in
                try BodyDecompression.decode(compress(body, windowBits: 31), coding: .gzip, limit: limit) { charged += $0 }
            }
            XCTAssertLessThanOrEqual(charged, limit + (64 << 10), "\(size)")
            XCTAssertEqual(size <= limit, (try? result.get()) == body)
        }
        var charged = 0
        XCTAssertThrowsError(try BodyDecompression.decode(compress([UInt8](repeating: 7, count: 1 << 20), windowBits: 31), coding: .gzip, limit: 4 << 20) {
            (bytes: Int) throws(IngestError) in
            charged += bytes
            if charged > 300_000 { throw IngestError(.unavailable(retryAfterSeconds: 1), "budget", reason: "decode_budget") }
        }) { XCTAssertEqual(($0 as! IngestError).httpStatus, 503) }
    }

    func testContentEncodingHeader() throws {
        XCTAssertEqual(try BodyDecompression.Coding(header: nil), .identity)
        XCTAssertEqual(try BodyDecompression.Coding(header: " GZIP "), .gzip)
        XCTAssertEqual(try BodyDecompression.Coding(header: "deflate"), .deflate)
        XCTAssertThrowsError(try BodyDecompression.Coding(header: "br")) { XCTAssertEqual(($0 as! IngestError).httpStatus, 415) }
    }
}
