/// OTLP/JSON writes trace and span ids as hex strings, but swift-protobuf reads `bytes` fields
/// as base64, and its base64 decoder skips spaces: a `spanId` of `" abab…"` decoded, and
/// `OTLPDecoder.hexID` then recovered the id without its spaces, answering 200 for a malformed
/// id (found by the HTTP fuzzer, `Tests/services/test_badinput.py`). This pass over the raw body
/// refuses, before decoding, any id member whose value is not only hex digits, so the error is a
/// 400 that names the field.
///
/// It is a lexer for strings only: it walks the body string by string (escapes included), so a
/// key or value that merely contains the text `"spanId"` inside another string is not mistaken
/// for a member. Malformed JSON is left to the real decoder. It allocates nothing.
enum JSONHexIDs {
    /// The id members of every OTLP/JSON signal, by their JSON and their proto names.
    static let members: [[UInt8]] = ["traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id"].map { Array($0.utf8) }

    static func check(_ body: [UInt8]) throws(IngestError) {
        var i = 0
        var key: Range<Int>? = nil  // the last string, while only whitespace and one ':' follow it
        var sawColon = false
        while i < body.count {
            switch body[i] {
            case UInt8(ascii: "\""):
                let content = string(body, from: i + 1)
                if sawColon, let key, let member = members.first(where: { body[key].elementsEqual($0) }),
                   !body[content].allSatisfy({ OTLPDecoder.hexValue($0) != nil }) {
                    throw OTLPDecoder.badHex(String(decoding: member, as: UTF8.self))
                }
                key = content
                sawColon = false
                i = content.upperBound + 1
                continue
            case UInt8(ascii: " "), UInt8(ascii: "\t"), UInt8(ascii: "\n"), UInt8(ascii: "\r"):
                break
            case UInt8(ascii: ":") where key != nil && !sawColon:
                sawColon = true
            default:
                key = nil
                sawColon = false
            }
            i += 1
        }
    }

    /// The raw content of the string whose opening quote is just before `start` (escapes kept as
    /// written, so an escaped character is never taken for a hex digit), up to its closing quote
    /// or the end of the body.
    static func string(_ body: [UInt8], from start: Int) -> Range<Int> {
        var i = start
        while i < body.count {
            switch body[i] {
            case UInt8(ascii: "\\"): i += 2
            case UInt8(ascii: "\""): return start..<i
            default: i += 1
            }
        }
        return start..<body.count
    }
}
