import OTLPProto
import SignalDBIngest
import SwiftProtobuf

/// The body of the ingest fuzz target (`Fuzz/`, `make fuzz-ingest`), also replayed by the
/// tests over `Fuzz/ingest-corpus`. The first byte picks what the rest is fed to; each path
/// checks a property that must hold for every input, and returns the broken ones.
///
/// - 0: the envelope parser. A record that parses must re-encode to the same bytes.
/// - 1: bounded inflate (gzip and deflate, 64 KiB limit). Output never passes the limit; a
///   failure is 400 or 413, never anything else.
/// - 2...7: the OTLP decoder (signal and encoding from the byte). A request it accepts stores
///   a payload that decodes again as protobuf with the same accepted items and none rejected;
///   a refusal is a 400.
public enum IngestFuzzInput {
    public static func run(_ input: UnsafeRawBufferPointer) -> [String] {
        guard let selector = input.first else { return [] }
        let rest = Array(input.dropFirst())
        var problems: [String] = []
        switch selector % 8 {
        case 0:
            if let envelope = try? Envelope(decoding: rest), envelope.encoded() != rest {
                problems.append("an envelope did not re-encode to its bytes")
            }
        case 1:
            let limit = 64 << 10
            for coding in [BodyDecompression.Coding.gzip, .deflate] {
                do {
                    let out = try BodyDecompression.decode(rest, coding: coding, limit: limit)
                    if out.count > limit { problems.append("inflate produced \(out.count) bytes past the \(limit) limit") }
                } catch {
                    if error.httpStatus != 400 && error.httpStatus != 413 { problems.append("inflate failed with \(error.httpStatus)") }
                }
            }
        default:
            let signal = Signal.allCases[Int(selector >> 3) % 3]
            let encoding: Envelope.Encoding = selector & 4 == 0 ? .protobuf : .json
            do {
                let decoded = try OTLPDecoder.decode(rest, signal: signal, encoding: encoding)
                if decoded.acceptedItems > 0 {
                    do {
                        let again = try OTLPDecoder.decode(decoded.payload, signal: signal, encoding: .protobuf)
                        if again.acceptedItems != decoded.acceptedItems || again.rejectedItems != 0 {
                            problems.append("the stored payload decodes to \(again.acceptedItems)/\(again.rejectedItems) items, not \(decoded.acceptedItems)/0")
                        }
                    } catch {
                        problems.append("the stored payload no longer decodes: \(error)")
                    }
                }
            } catch {
                if error.httpStatus != 400 { problems.append("decoding failed with \(error.httpStatus), not 400") }
            }
        }
        return problems
    }
}
