import Foundation
import OTLPProto
import SwiftProtobuf
import XCTest
@testable import SignalDBIngest

final class DecoderTests: XCTestCase {
    func hex(_ bytes: [UInt8], upper: Bool = false) -> String {
        bytes.map { String(format: upper ? "%02X" : "%02x", $0) }.joined()
    }

    func randomID(_ n: Int) -> [UInt8] {
        var id = (0..<n).map { _ in UInt8.random(in: 0...255) }
        if !id.isEmpty { id[0] |= 1 }  // never all zeros
        return id
    }

    /// OTLP/JSON hex ids, in every message that has them, come out as the bytes they spell.
    func testHexIDsInSpansLinksLogsAndExemplars() throws {
        for _ in 0..<200 {
            let trace = randomID(16), span = randomID(8), parent = randomID(8), upper = Bool.random()
            let spans = """
            {"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"\(hex(trace, upper: upper))","spanId":"\(hex(span))",
             "parentSpanId":"\(hex(parent))","name":"n","links":[{"traceId":"\(hex(trace))","spanId":"\(hex(parent))"}]}]}]}]}
            """
            let decoded = try OTLPDecoder.decode(Array(spans.utf8), signal: .traces, encoding: .json)
            let request = try Opentelemetry_Proto_Collector_Trace_V1_ExportTraceServiceRequest(serializedBytes: decoded.payload)
            let s = request.resourceSpans[0].scopeSpans[0].spans[0]
            XCTAssertEqual([UInt8](s.traceID), trace)
            XCTAssertEqual([UInt8](s.spanID), span)
            XCTAssertEqual([UInt8](s.parentSpanID), parent)
            XCTAssertEqual([UInt8](s.links[0].traceID), trace)
            XCTAssertEqual([UInt8](s.links[0].spanID), parent)

            let logs = """
            {"resourceLogs":[{"scopeLogs":[{"logRecords":[{"traceId":"\(hex(trace))","spanId":"\(hex(span))","body":{"stringValue":"x"}}]}]}]}
            """
            let l = try Opentelemetry_Proto_Collector_Logs_V1_ExportLogsServiceRequest(
                serializedBytes: OTLPDecoder.decode(Array(logs.utf8), signal: .logs, encoding: .json).payload)
            XCTAssertEqual([UInt8](l.resourceLogs[0].scopeLogs[0].logRecords[0].traceID), trace)
            XCTAssertEqual([UInt8](l.resourceLogs[0].scopeLogs[0].logRecords[0].spanID), span)

            let metrics = """
            {"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"m","histogram":{"dataPoints":[{"count":"1",
             "exemplars":[{"asDouble":1,"traceId":"\(hex(trace))","spanId":"\(hex(span))"}]}]}}]}]}]}
            """
            let m = try Opentelemetry_Proto_Collector_Metrics_V1_ExportMetricsServiceRequest(
                serializedBytes: OTLPDecoder.decode(Array(metrics.utf8), signal: .metrics, encoding: .json).payload)
            guard case .histogram(let h) = m.resourceMetrics[0].scopeMetrics[0].metrics[0].data else { return XCTFail("no histogram") }
            XCTAssertEqual([UInt8](h.dataPoints[0].exemplars[0].traceID), trace)
            XCTAssertEqual([UInt8](h.dataPoints[0].exemplars[0].spanID), span)
        }
    }

    func testMalformedHexIDsAreInvalid() {
        for bad in ["zz" + String(repeating: "a", count: 30), String(repeating: "a", count: 24), "abc", "!!!!"] {
            let doc = #"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"\#(bad)","spanId":"0102030405060708","name":"n"}]}]}]}"#
            XCTAssertThrowsError(try OTLPDecoder.decode(Array(doc.utf8), signal: .traces, encoding: .json), bad) { error in
                XCTAssertEqual((error as! IngestError).httpStatus, 400)
            }
        }
    }

    /// swift-protobuf's base64 decoder skips spaces, so before JSONHexIDs an id with a space
    /// anywhere in it decoded to the id without the space (answered 200). Every id member, by its
    /// JSON or proto name, in every signal, with whitespace at a random place, is refused; text
    /// that only looks like an id member inside a string value or key is left alone.
    func testHexIDsWithWhitespaceAnywhereAreInvalid() throws {
        let members: [(name: String, length: Int, signal: Signal, wrap: (String) -> String)] = [
            ("traceId", 16, .traces, { #"{"resourceSpans":[{"scopeSpans":[{"spans":[{\#($0),"name":"n"}]}]}]}"# }),
            ("span_id", 8, .traces, { #"{"resourceSpans":[{"scopeSpans":[{"spans":[{\#($0),"name":"n"}]}]}]}"# }),
            ("parentSpanId", 8, .traces, { #"{"resourceSpans":[{"scopeSpans":[{"spans":[{\#($0),"name":"n"}]}]}]}"# }),
            ("spanId", 8, .logs, { #"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{\#($0)}]}]}]}"# }),
            ("traceId", 16, .metrics, { #"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"m","gauge":{"dataPoints":[{"asDouble":1,"exemplars":[{"asDouble":1,\#($0)}]}]}}]}]}]}"# }),
        ]
        for _ in 0..<300 {
            let m = members.randomElement()!
            var digits = Array(hex(randomID(m.length)))
            digits.insert(" ", at: Int.random(in: 0...digits.count))
            let doc = m.wrap("\"\(m.name)\" : \"\(String(digits))\"")
            XCTAssertThrowsError(try OTLPDecoder.decode(Array(doc.utf8), signal: m.signal, encoding: .json), doc) { error in
                XCTAssertEqual((error as! IngestError).httpStatus, 400)
                XCTAssertTrue((error as! IngestError).message.hasPrefix(m.name + " is not a hex string"), "\(error)")
            }
        }
        // swift-protobuf unescapes keys: an escaped member name is the member.
        for (key, id) in [(#"span\u0049d"#, "eee19b7ec3c1b174"), (#"\u0074raceId"#, "5b8efff798038103d269b633813fc60c"),
                          (#"parent\u0053pan\u0049d"#, "eee19b7ec3c1b174")] {
            let doc = #"{"resourceSpans":[{"scopeSpans":[{"spans":[{"\#(key)":" \#(id)","name":"n"}]}]}]}"#
            XCTAssertThrowsError(try OTLPDecoder.decode(Array(doc.utf8), signal: .traces, encoding: .json), doc) { error in
                XCTAssertTrue((error as! IngestError).message.contains("is not a hex string"), "\(error)")
            }
        }
        let lookalike = #"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"n","#
            + #""attributes":[{"key":"spanId","value":{"stringValue":" not hex \"spanId\": \" ab\""}},{"key":"x\"spanId","value":{"stringValue":" ab"}}]}]}]}]}"#
        XCTAssertEqual(try OTLPDecoder.decode(Array(lookalike.utf8), signal: .traces, encoding: .json).acceptedItems, 1)
    }

    func testUnknownFieldsEnumNamesAndStringInt64s() throws {
        let doc = """
        {"resourceSpans":[{"newThing":1,"scopeSpans":[{"spans":[{"traceId":"0102030405060708090a0b0c0d0e0f10","spanId":"0102030405060708",
         "name":"n","kind":"SPAN_KIND_PRODUCER","startTimeUnixNano":"123","endTimeUnixNano":456,"status":{"code":2},"extra":{"a":[1]}}]}]}]}
        """
        let r = try Opentelemetry_Proto_Collector_Trace_V1_ExportTraceServiceRequest(
            serializedBytes: OTLPDecoder.decode(Array(doc.utf8), signal: .traces, encoding: .json).payload)
        let s = r.resourceSpans[0].scopeSpans[0].spans[0]
        XCTAssertEqual(s.kind, .producer)
        XCTAssertEqual(s.startTimeUnixNano, 123)
        XCTAssertEqual(s.endTimeUnixNano, 456)
        XCTAssertEqual(s.status.code, .error)
    }

    func makeSpans(_ ids: [(trace: [UInt8], span: [UInt8])]) -> [UInt8] {
        var r = Opentelemetry_Proto_Collector_Trace_V1_ExportTraceServiceRequest()
        var rs = Opentelemetry_Proto_Trace_V1_ResourceSpans()
        var ss = Opentelemetry_Proto_Trace_V1_ScopeSpans()
        for (i, id) in ids.enumerated() {
            var s = Opentelemetry_Proto_Trace_V1_Span()
            s.traceID = Data(id.trace)
            s.spanID = Data(id.span)
            s.name = "s\(i)"
            ss.spans.append(s)
        }
        rs.scopeSpans = [ss]
        r.resourceSpans = [rs]
        return try! r.serializedBytes()
    }

    /// Random mixes of valid and invalid spans: the valid ones are stored (the original bytes
    /// when none was invalid), the rest counted; a request with no valid span is invalid.
    func testRandomMixesOfValidAndInvalidSpans() throws {
        for _ in 0..<300 {
            var ids: [(trace: [UInt8], span: [UInt8])] = []
            var valid: [String] = []
            for i in 0..<Int.random(in: 1...12) {
                switch Int.random(in: 0...5) {
                case 0: ids.append(([UInt8](repeating: 0, count: 16), randomID(8)))
                case 1: ids.append((randomID(Int.random(in: 0...15)), randomID(8)))
                case 2: ids.append((randomID(16), [UInt8](repeating: 0, count: 8)))
                default: ids.append((randomID(16), randomID(8))); valid.append("s\(i)")
                }
            }
            let body = makeSpans(ids)
            if valid.isEmpty {
                XCTAssertThrowsError(try OTLPDecoder.decode(body, signal: .traces, encoding: .protobuf))
                continue
            }
            let decoded = try OTLPDecoder.decode(body, signal: .traces, encoding: .protobuf)
            XCTAssertEqual(decoded.acceptedItems, valid.count)
            XCTAssertEqual(decoded.rejectedItems, ids.count - valid.count)
            if decoded.rejectedItems == 0 { XCTAssertEqual(decoded.payload, body) }
            let stored = try Opentelemetry_Proto_Collector_Trace_V1_ExportTraceServiceRequest(serializedBytes: decoded.payload)
            XCTAssertEqual(stored.resourceSpans[0].scopeSpans[0].spans.map(\.name), valid)
        }
    }

    func testDeepNestingIsInvalidNotACrash() {
        var value = #"{"stringValue":"x"}"#
        for _ in 0..<300 { value = #"{"arrayValue":{"values":[\#(value)]}}"# }
        let doc = #"{"resourceSpans":[{"resource":{"attributes":[{"key":"k","value":\#(value)}]}}]}"#
        XCTAssertThrowsError(try OTLPDecoder.decode(Array(doc.utf8), signal: .traces, encoding: .json)) { error in
            XCTAssertEqual((error as! IngestError).httpStatus, 400)
        }
    }

    func testRandomBytesNeverCrashTheDecoder() {
        for _ in 0..<2000 {
            let body = (0..<Int.random(in: 0...300)).map { _ in UInt8.random(in: 0...255) }
            for signal in Signal.allCases {
                for encoding in [Envelope.Encoding.protobuf, .json] {
                    do {
                        let d = try OTLPDecoder.decode(body, signal: signal, encoding: encoding)
                        XCTAssertGreaterThanOrEqual(d.acceptedItems, 0)
                    } catch {
                        XCTAssertEqual(error.httpStatus, 400)
                    }
                }
            }
        }
    }

    func testResponsesInTheRequestEncoding() throws {
        let json = Responses.success(signal: .traces, rejected: 2, message: "m", encoding: .json)
        let doc = try JSONSerialization.jsonObject(with: Data(json)) as! [String: Any]
        XCTAssertEqual((doc["partialSuccess"] as! [String: Any])["errorMessage"] as? String, "m")
        XCTAssertEqual(Responses.success(signal: .logs, rejected: 0, message: "", encoding: .json), Array("{}".utf8))
        XCTAssertEqual(Responses.success(signal: .metrics, rejected: 0, message: "", encoding: .protobuf), [])
        let status = Responses.status(IngestError(.invalid, "bad field"), encoding: .protobuf)
        XCTAssertEqual(status, [0x08, 3, 0x12, 9] + Array("bad field".utf8))
    }
}
