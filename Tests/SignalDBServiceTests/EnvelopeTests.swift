import XCTest
@testable import SignalDBIngest

final class EnvelopeTests: XCTestCase {
    func randomName(_ rng: inout SystemRandomNumberGenerator) -> String {
        let alphabet = Array("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
        return String((0..<Int.random(in: 1...128, using: &rng)).map { _ in alphabet.randomElement(using: &rng)! })
    }

    func testRandomEnvelopesRoundTrip() throws {
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<500 {
            let e = Envelope(signal: Signal.allCases.randomElement()!, encoding: Bool.random() ? .protobuf : .json,
                             filtered: Bool.random(), receivedAtUnixNano: UInt64.random(in: 0...UInt64.max),
                             tenant: randomName(&rng), dataset: randomName(&rng), itemCount: UInt32.random(in: 0...UInt32.max),
                             payload: (0..<Int.random(in: 0...3000)).map { _ in UInt8.random(in: 0...255) })
            let bytes = e.encoded()
            XCTAssertEqual(bytes.count, Envelope.headerSize(tenant: e.tenant, dataset: e.dataset) + e.payload.count)
            XCTAssertEqual(try Envelope(decoding: bytes), e)
        }
    }

    func testEveryTruncatedHeaderIsRefused() {
        let e = Envelope(signal: .logs, encoding: .protobuf, receivedAtUnixNano: 1, tenant: "acme", dataset: "prod", itemCount: 3, payload: [1, 2, 3])
        let bytes = e.encoded()
        let payloadStart = Envelope.headerSize(tenant: "acme", dataset: "prod")
        for cut in 0..<payloadStart {
            XCTAssertThrowsError(try Envelope(decoding: bytes[0..<cut]), "cut at \(cut)")
        }
        // Cutting inside the payload is a shorter payload: the WAL's CRC, not the envelope, guards that.
        XCTAssertEqual(try Envelope(decoding: bytes[0..<payloadStart]).payload, [])
    }

    func testCorruptFieldsAreNamed() {
        let good = Envelope(signal: .traces, encoding: .json, receivedAtUnixNano: 1, tenant: "t", dataset: "d", itemCount: 1, payload: []).encoded()
        let cases: [(Int, UInt8, String)] = [(0, 0x41, "magic"), (4, 9, "version"), (5, 7, "signal"), (6, 0, "encoding"),
                                             (7, 0x80, "flags"), (16, 0, "tenant length"), (18, 200, "dataset length")]
        for (offset, value, word) in cases {
            var b = good
            b[offset] = value
            XCTAssertThrowsError(try Envelope(decoding: b)) { error in
                XCTAssertTrue("\(error)".contains(word), "\(error) should name \(word)")
            }
        }
    }

    func testTenantNames() {
        for ok in ["default", "a", "Acme-prod_1.eu", String(repeating: "x", count: 128)] {
            XCTAssertNoThrow(try TenantName.validate(ok, field: "X-Tenant-ID"))
        }
        for bad in ["", "a/b", "a b", "é", "../x", String(repeating: "x", count: 129), "a\u{0}"] {
            XCTAssertThrowsError(try TenantName.validate(bad, field: "X-Tenant-ID")) { error in
                XCTAssertTrue("\(error)".contains("X-Tenant-ID"))
            }
        }
    }
}
