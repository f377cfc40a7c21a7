/// The services' record format: one acceptor WAL record per accepted request, and the unit
/// forwarded to the writer. Fixed here and in docs/ENVELOPE.md; the writer and every tool read
/// it through this type only.
///
/// Layout (little-endian), a 24-byte fixed header, then the tenant and dataset names, then the
/// payload to the end of the record:
///
/// | offset | size | field |
/// |---|---|---|
/// | 0 | 4 | magic `SDBE` |
/// | 4 | 1 | version (1) |
/// | 5 | 1 | signal: 1 traces, 2 metrics, 3 logs |
/// | 6 | 1 | encoding the client sent: 1 protobuf, 2 JSON |
/// | 7 | 1 | flags: bit 0, items were rejected and the payload was re-encoded without them |
/// | 8 | 8 | receive time, Unix nanoseconds |
/// | 16 | 2 | tenant length T (1 to 128) |
/// | 18 | 2 | dataset length D (1 to 128) |
/// | 20 | 4 | items in the payload (spans, data points or log records) |
/// | 24 | T | tenant, UTF-8 |
/// | 24+T | D | dataset, UTF-8 |
/// | 24+T+D | rest | the OTLP `Export*ServiceRequest`, protobuf |
public struct Envelope: Sendable, Equatable {
    public enum Constants {
        public static let magic: [UInt8] = Array("SDBE".utf8)
        public static let version: UInt8 = 1
        public static let fixedHeaderSize = 24
        public static let maxNameLength = 128
        public static let flagFiltered: UInt8 = 1
    }

    public enum Encoding: UInt8, Sendable, Equatable {
        case protobuf = 1
        case json = 2
    }

    public var signal: Signal
    public var encoding: Encoding
    /// True when the acceptor removed rejected items and re-encoded the request.
    public var filtered: Bool
    public var receivedAtUnixNano: UInt64
    public var tenant: String
    public var dataset: String
    public var itemCount: UInt32
    /// The OTLP export request, protobuf-encoded.
    public var payload: [UInt8]

    public init(signal: Signal, encoding: Encoding, filtered: Bool = false, receivedAtUnixNano: UInt64,
                tenant: String, dataset: String, itemCount: UInt32, payload: [UInt8]) {
        self.signal = signal
        self.encoding = encoding
        self.filtered = filtered
        self.receivedAtUnixNano = receivedAtUnixNano
        self.tenant = tenant
        self.dataset = dataset
        self.itemCount = itemCount
        self.payload = payload
    }

    /// Bytes the header takes for these names.
    public static func headerSize(tenant: String, dataset: String) -> Int {
        Constants.fixedHeaderSize + tenant.utf8.count + dataset.utf8.count
    }

    /// The record bytes. The names must already be valid (``TenantName/validate(_:field:)``).
    public func encoded() -> [UInt8] {
        var out: [UInt8] = []
        let tenantBytes = Array(tenant.utf8), datasetBytes = Array(dataset.utf8)
        out.reserveCapacity(Constants.fixedHeaderSize + tenantBytes.count + datasetBytes.count + payload.count)
        out += Constants.magic
        out.append(Constants.version)
        out.append(signal.rawValue)
        out.append(encoding.rawValue)
        out.append(filtered ? Constants.flagFiltered : 0)
        appendLittleEndian(receivedAtUnixNano, to: &out)
        appendLittleEndian(UInt16(tenantBytes.count), to: &out)
        appendLittleEndian(UInt16(datasetBytes.count), to: &out)
        appendLittleEndian(itemCount, to: &out)
        out += tenantBytes
        out += datasetBytes
        out += payload
        return out
    }

    /// Parses record bytes; every malformed field is an ``EnvelopeError`` naming it.
    public init(decoding bytes: some Collection<UInt8>) throws(EnvelopeError) {
        let b = Array(bytes)
        guard b.count >= Constants.fixedHeaderSize else {
            throw EnvelopeError("record is \(b.count) bytes, shorter than the \(Constants.fixedHeaderSize)-byte envelope header")
        }
        guard Array(b[0..<4]) == Constants.magic else { throw EnvelopeError("magic is not SDBE: not a SignalDB envelope") }
        guard b[4] == Constants.version else { throw EnvelopeError("version \(b[4]) is not supported (this build reads version \(Constants.version))") }
        guard let signal = Signal(rawValue: b[5]) else { throw EnvelopeError("signal \(b[5]) is unknown (1 traces, 2 metrics, 3 logs)") }
        guard let encoding = Encoding(rawValue: b[6]) else { throw EnvelopeError("encoding \(b[6]) is unknown (1 protobuf, 2 JSON)") }
        guard b[7] & ~Constants.flagFiltered == 0 else { throw EnvelopeError("flags \(b[7]) has unknown bits") }
        let tenantLength = Int(readLittleEndian(b, 16, as: UInt16.self))
        let datasetLength = Int(readLittleEndian(b, 18, as: UInt16.self))
        guard (1...Constants.maxNameLength).contains(tenantLength), (1...Constants.maxNameLength).contains(datasetLength) else {
            throw EnvelopeError("tenant length \(tenantLength) or dataset length \(datasetLength) is outside 1...\(Constants.maxNameLength)")
        }
        let payloadStart = Constants.fixedHeaderSize + tenantLength + datasetLength
        guard payloadStart <= b.count else {
            throw EnvelopeError("names end at byte \(payloadStart), past the \(b.count)-byte record")
        }
        guard let tenant = String(validating: b[24..<(24 + tenantLength)], as: UTF8.self),
              let dataset = String(validating: b[(24 + tenantLength)..<payloadStart], as: UTF8.self) else {
            throw EnvelopeError("tenant or dataset is not valid UTF-8")
        }
        self.init(signal: signal, encoding: encoding, filtered: b[7] & Constants.flagFiltered != 0,
                  receivedAtUnixNano: readLittleEndian(b, 8, as: UInt64.self), tenant: tenant, dataset: dataset,
                  itemCount: readLittleEndian(b, 20, as: UInt32.self), payload: Array(b[payloadStart...]))
    }
}

/// A record that is not a valid envelope.
public struct EnvelopeError: Error, Sendable, Equatable, CustomStringConvertible {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { "invalid envelope: \(message)" }
}

func appendLittleEndian<T: FixedWidthInteger>(_ value: T, to out: inout [UInt8]) {
    withUnsafeBytes(of: value.littleEndian) { out.append(contentsOf: $0) }
}

func readLittleEndian<T: FixedWidthInteger>(_ bytes: [UInt8], _ offset: Int, as: T.Type) -> T {
    var value: T = 0
    for i in 0..<MemoryLayout<T>.size { value |= T(bytes[offset + i]) << (8 * i) }
    return value
}
