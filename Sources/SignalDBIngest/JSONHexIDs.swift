/// OTLP/JSON writes trace and span ids as hex strings, but swift-protobuf reads `bytes` fields
/// as base64, and its base64 decoder skips spaces: a `spanId` of `" abab…"` decoded, and
/// `OTLPDecoder.hexID` then recovered the id without its spaces, answering 200 for a malformed
/// id (found by the HTTP fuzzer, `Tests/services/test_badinput.py`). This pass over the raw body
/// refuses, before decoding, any id member whose value is not only hex digits, so the error is a
/// 400 that names the field.
///
/// It is a lexer for strings only: it walks the body string by string (escapes included), so a
/// key or value that merely contains the text `"spanId"` inside another string is not mistaken
/// for a member, and unescapes a key that has escapes as swift-protobuf does. Malformed JSON is
/// left to the real decoder. It allocates only for an escaped key.
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
                if sawColon, let key, let member = member(named: body[key]),
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

    /// The id member a key names, if any. swift-protobuf unescapes keys, so `"span\u0049d"` is
    /// `spanId` to it and must be here too; only a key with a backslash is unescaped (and copied).
    static func member(named key: ArraySlice<UInt8>) -> [UInt8]? {
        if let plain = members.first(where: { key.elementsEqual($0) }) { return plain }
        guard key.contains(UInt8(ascii: "\\")), key.count <= 6 * 14 else { return nil }
        var unescaped: [UInt8] = []
        var i = key.startIndex
        while i < key.endIndex {
            if key[i] == UInt8(ascii: "\\"), i + 1 < key.endIndex {
                if key[i + 1] == UInt8(ascii: "u"), i + 6 <= key.endIndex,
                   let scalar = UInt32(String(decoding: key[(i + 2)..<(i + 6)], as: UTF8.self), radix: 16) {
                    guard scalar < 0x80 else { return nil }  // every member name is ASCII
                    unescaped.append(UInt8(scalar))
                    i += 6
                } else {
                    switch key[i + 1] {
                    case UInt8(ascii: "n"), UInt8(ascii: "t"), UInt8(ascii: "r"), UInt8(ascii: "b"), UInt8(ascii: "f"):
                        unescaped.append(0x0A)  // a control character: never part of a member name
                    default:
                        unescaped.append(key[i + 1])  // \" \\ \/ stand for themselves
                    }
                    i += 2
                }
            } else {
                unescaped.append(key[i])
                i += 1
            }
        }
        return members.first(where: { unescaped.elementsEqual($0) })
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
