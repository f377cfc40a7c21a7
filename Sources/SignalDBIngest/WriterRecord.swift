/// The writer's WAL record: one forwarded acceptor record and where it came from, so the
/// writer can rebuild its per-acceptor marks from its WAL after a crash. Fixed here and in
/// docs/ENVELOPE.md; the writer and the `signalwal` tool read it through this type only.
///
/// Layout (little-endian), a 16-byte fixed header, the acceptor id, then the acceptor's
/// envelope (``Envelope``) to the end of the record:
///
/// | offset | size | field |
/// |---|---|---|
/// | 0 | 4 | magic `SDBW` |
/// | 4 | 1 | version (1) |
/// | 5 | 1 | reserved, 0 |
/// | 6 | 2 | acceptor id length A (1 to 128) |
/// | 8 | 8 | the record's LSN in the acceptor's WAL |
/// | 16 | A | acceptor id, UTF-8 |
/// | 16+A | rest | the envelope, byte for byte as the acceptor stored it |
public struct WriterRecord: Sendable, Equatable {
    public enum Constants {
        public static let magic: [UInt8] = Array("SDBW".utf8)
        public static let version: UInt8 = 1
        public static let fixedHeaderSize = 16
        public static let maxAcceptorIDLength = 128
    }

    public var acceptorID: String
    public var acceptorLSN: UInt64
    /// The acceptor's envelope bytes (decode with ``Envelope/init(decoding:)``).
    public var envelope: [UInt8]

    public init(acceptorID: String, acceptorLSN: UInt64, envelope: [UInt8]) {
        self.acceptorID = acceptorID
        self.acceptorLSN = acceptorLSN
        self.envelope = envelope
    }

    /// True when `id` can be stored: 1 to 128 bytes of `[A-Za-z0-9._-]` (the acceptor's UUID is).
    public static func isValidAcceptorID(_ id: String) -> Bool {
        let bytes = Array(id.utf8)
        return (1...Constants.maxAcceptorIDLength).contains(bytes.count) && bytes.allSatisfy {
            ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x41 && $0 <= 0x5A) || ($0 >= 0x61 && $0 <= 0x7A) || $0 == 0x2E || $0 == 0x5F || $0 == 0x2D
        }
    }

    /// Bytes the header takes for this acceptor id.
    public static func headerSize(acceptorID: String) -> Int { Constants.fixedHeaderSize + acceptorID.utf8.count }

    /// The record bytes. The id must be valid (``isValidAcceptorID(_:)``).
    public func encoded() -> [UInt8] {
        let id = Array(acceptorID.utf8)
        var out: [UInt8] = []
        out.reserveCapacity(Constants.fixedHeaderSize + id.count + envelope.count)
        out += Constants.magic
        out.append(Constants.version)
        out.append(0)
        appendLittleEndian(UInt16(id.count), to: &out)
        appendLittleEndian(acceptorLSN, to: &out)
        out += id
        out += envelope
        return out
    }

    /// Parses record bytes; every malformed field is an ``EnvelopeError`` naming it.
    public init(decoding bytes: [UInt8]) throws(EnvelopeError) {
        let header = try Self.decodeHeader(bytes)
        self.init(acceptorID: header.acceptorID, acceptorLSN: header.acceptorLSN, envelope: Array(bytes[header.envelopeOffset...]))
    }

    /// Only the header (the envelope is not copied): what rebuilding the marks needs.
    public static func decodeHeader(_ b: [UInt8]) throws(EnvelopeError) -> (acceptorID: String, acceptorLSN: UInt64, envelopeOffset: Int) {
        guard b.count >= Constants.fixedHeaderSize else {
            throw EnvelopeError("writer record is \(b.count) bytes, shorter than its \(Constants.fixedHeaderSize)-byte header")
        }
        guard Array(b[0..<4]) == Constants.magic else { throw EnvelopeError("magic is not SDBW: not a SignalDB writer record") }
        guard b[4] == Constants.version else { throw EnvelopeError("writer record version \(b[4]) is not supported (this build reads version \(Constants.version))") }
        let idLength = Int(readLittleEndian(b, 6, as: UInt16.self))
        guard (1...Constants.maxAcceptorIDLength).contains(idLength), Constants.fixedHeaderSize + idLength <= b.count else {
            throw EnvelopeError("acceptor id length \(idLength) is outside 1...\(Constants.maxAcceptorIDLength) or past the record")
        }
        guard let id = String(validating: b[16..<(16 + idLength)], as: UTF8.self) else {
            throw EnvelopeError("acceptor id is not valid UTF-8")
        }
        return (id, readLittleEndian(b, 8, as: UInt64.self), Constants.fixedHeaderSize + idLength)
    }
}
