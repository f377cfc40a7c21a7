import Foundation
import OTLPProto
import SwiftProtobuf

/// Response bodies in the request's encoding: the `Export*ServiceResponse` on success (with
/// `partial_success` when items were rejected) and a `google.rpc.Status` on failure.
public enum Responses {
    public static func success(signal: Signal, rejected: Int, message: String, encoding: Envelope.Encoding) -> [UInt8] {
        func encode(_ m: some SwiftProtobuf.Message) -> [UInt8] {
            switch encoding {
            case .protobuf: return (try? m.serializedBytes()) ?? []
            case .json: return (try? m.jsonUTF8Bytes()) ?? Array("{}".utf8)
            }
        }
        switch signal {
        case .traces:
            var r = Opentelemetry_Proto_Collector_Trace_V1_ExportTraceServiceResponse()
            if rejected > 0 { r.partialSuccess.rejectedSpans = Int64(rejected); r.partialSuccess.errorMessage = message }
            return encode(r)
        case .metrics:
            var r = Opentelemetry_Proto_Collector_Metrics_V1_ExportMetricsServiceResponse()
            if rejected > 0 { r.partialSuccess.rejectedDataPoints = Int64(rejected); r.partialSuccess.errorMessage = message }
            return encode(r)
        case .logs:
            var r = Opentelemetry_Proto_Collector_Logs_V1_ExportLogsServiceResponse()
            if rejected > 0 { r.partialSuccess.rejectedLogRecords = Int64(rejected); r.partialSuccess.errorMessage = message }
            return encode(r)
        }
    }

    /// A `google.rpc.Status` with the error's code and message (no details: HTTP clients get
    /// the retry delay from `Retry-After`).
    public static func status(_ error: IngestError, encoding: Envelope.Encoding) -> [UInt8] {
        switch encoding {
        case .protobuf:
            // google.rpc.Status: field 1 code (varint), field 2 message (string).
            var out: [UInt8] = [0x08]
            appendVarint(UInt64(UInt32(bitPattern: error.rpcCode)), to: &out)
            let text = Array(error.message.utf8)
            out.append(0x12)
            appendVarint(UInt64(text.count), to: &out)
            out += text
            return out
        case .json:
            struct Status: Encodable { let code: Int32; let message: String }
            return Array((try? JSONEncoder().encode(Status(code: error.rpcCode, message: error.message))) ?? Data("{}".utf8))
        }
    }

    static func appendVarint(_ value: UInt64, to out: inout [UInt8]) {
        var v = value
        while v >= 0x80 {
            out.append(UInt8(v & 0x7F) | 0x80)
            v >>= 7
        }
        out.append(UInt8(v))
    }
}
