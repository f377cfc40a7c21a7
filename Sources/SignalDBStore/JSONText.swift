import Foundation
import OTLPProto

/// OTLP values as JSON text for the store's JSON columns, written by hand (no Foundation
/// round trip per value): attributes become an object `{"key": value}`, AnyValue maps to the
/// JSON value of its kind (bytes as base64, as OTLP/JSON does), ids as lowercase hex.
/// A repeated key keeps the last value, as the OTLP spec says a receiver may.
enum JSONText {
    static func attributes(_ kvs: [Opentelemetry_Proto_Common_V1_KeyValue]) -> String {
        var out = ""
        writeObject(kvs, to: &out)
        return out
    }

    static func value(_ value: Opentelemetry_Proto_Common_V1_AnyValue) -> String {
        var out = ""
        write(value, to: &out)
        return out
    }

    static func writeObject(_ kvs: [Opentelemetry_Proto_Common_V1_KeyValue], to out: inout String) {
        out += "{"
        var seen = Set<String>()
        var first = true
        // Last value wins for a repeated key: walk backwards, keep the first seen, then the
        // object lists keys in their last position's reverse order, which JSON does not mind.
        for kv in kvs.reversed() where seen.insert(kv.key).inserted {
            if !first { out += "," }
            first = false
            writeString(kv.key, to: &out)
            out += ":"
            if kv.hasValue { write(kv.value, to: &out) } else { out += "null" }
        }
        out += "}"
    }

    static func write(_ value: Opentelemetry_Proto_Common_V1_AnyValue, to out: inout String) {
        switch value.value {
        case .stringValue(let s)?: writeString(s, to: &out)
        case .boolValue(let b)?: out += b ? "true" : "false"
        case .intValue(let i)?: out += String(i)
        case .doubleValue(let d)?: writeDouble(d, to: &out)
        case .bytesValue(let b)?: writeString(b.base64EncodedString(), to: &out)
        case .arrayValue(let a)?:
            out += "["
            for (i, v) in a.values.enumerated() {
                if i > 0 { out += "," }
                write(v, to: &out)
            }
            out += "]"
        case .kvlistValue(let kv)?: writeObject(kv.values, to: &out)
        // An index into a profiles dictionary, which the other signals do not carry: kept as is.
        case .stringValueStrindex(let i)?: out += "{\"strindex\":\(i)}"
        case nil: out += "null"
        }
    }

    /// JSON has no NaN or infinities: they are written as strings, as OTLP/JSON does.
    static func writeDouble(_ d: Double, to out: inout String) {
        if d.isNaN { out += "\"NaN\"" } else if d.isInfinite { out += d > 0 ? "\"Infinity\"" : "\"-Infinity\"" } else { out += "\(d)" }
    }

    static func writeString(_ s: String, to out: inout String) {
        out += "\""
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if scalar.value < 0x20 {
                    out += "\\u" + String(format: "%04x", scalar.value)
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        out += "\""
    }

    static func hex(_ data: Data) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var bytes = [UInt8]()
        bytes.reserveCapacity(data.count * 2)
        for b in data {
            bytes.append(digits[Int(b >> 4)])
            bytes.append(digits[Int(b & 0xF)])
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Hex, or nil for an absent (empty) id, so the column is NULL.
    static func optionalHex(_ data: Data) -> String? { data.isEmpty ? nil : hex(data) }
}
