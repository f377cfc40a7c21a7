/// The three OTLP signals the services take.
public enum Signal: UInt8, Sendable, CaseIterable, CustomStringConvertible {
    case traces = 1
    case metrics = 2
    case logs = 3

    /// The OTLP/HTTP path, `/v1/traces` and so on.
    public var httpPath: String { "/v1/\(self)" }

    /// What one item is called in responses and metrics.
    public var itemName: String {
        switch self {
        case .traces: "spans"
        case .metrics: "data points"
        case .logs: "log records"
        }
    }

    public var description: String {
        switch self {
        case .traces: "traces"
        case .metrics: "metrics"
        case .logs: "logs"
        }
    }

    public init?(name: String) {
        guard let signal = Self.allCases.first(where: { $0.description == name }) else { return nil }
        self = signal
    }

    public init?(httpPath: String) {
        guard let signal = Self.allCases.first(where: { $0.httpPath == httpPath }) else { return nil }
        self = signal
    }
}

/// Tenant and dataset names: 1 to 128 bytes of letters, digits, `.`, `_` and `-`, so they are
/// safe in file names, metric labels and SQL.
public enum TenantName {
    public static func validate(_ name: String, field: String) throws(IngestError) {
        let bytes = Array(name.utf8)
        guard !bytes.isEmpty, bytes.count <= Envelope.Constants.maxNameLength else {
            throw IngestError(.invalid, "\(field) must be 1 to \(Envelope.Constants.maxNameLength) characters, got \(bytes.count)")
        }
        for byte in bytes {
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                 UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "-"):
                continue
            default:
                throw IngestError(.invalid, "\(field) may hold only letters, digits, '.', '_' and '-'")
            }
        }
    }
}
