import Foundation
import OTLPProto
import SwiftProtobuf

typealias TraceRequest = Opentelemetry_Proto_Collector_Trace_V1_ExportTraceServiceRequest
typealias MetricsRequest = Opentelemetry_Proto_Collector_Metrics_V1_ExportMetricsServiceRequest
typealias LogsRequest = Opentelemetry_Proto_Collector_Logs_V1_ExportLogsServiceRequest

/// A request that passed validation, ready to be wrapped in an ``Envelope``.
public struct DecodedRequest: Sendable {
    /// The OTLP export request to store, protobuf: the received bytes when nothing was removed
    /// and the client sent protobuf; otherwise our encoding of what was accepted.
    public var payload: [UInt8]
    public var acceptedItems: Int
    public var rejectedItems: Int
    /// Why items were rejected, for `partial_success.error_message`.
    public var rejectionMessage: String
    public var filtered: Bool { rejectedItems > 0 }
}

/// Decodes and validates OTLP export requests (protobuf and OTLP/JSON) for all three signals.
///
/// Validation is what the writer needs to store an item: spans need a 16-byte non-zero trace id
/// and an 8-byte non-zero span id (parents and links: 8 and 16 bytes when present); log records
/// and exemplars need ids of the right length when present; metrics need a name. Items that
/// fail are removed and counted (OTLP's partial success); a request with none left is invalid.
///
/// OTLP/JSON differs from the proto3 JSON mapping: trace and span ids are hex, not base64.
/// swift-protobuf reads 32 hex digits as base64 without complaint (24 bytes instead of 16), so
/// after decoding every id field is turned back into its text (base64 of the decoded bytes is
/// exactly the hex text, as 32 and 16 digits are whole base64 groups) and read as hex.
/// Unknown fields are ignored, as the spec requires; enums as names or numbers and 64-bit
/// integers as strings or numbers are the stock decoder's own behaviour.
public enum OTLPDecoder {
    /// How deep messages may nest (AnyValue lists and maps nest): deeper is invalid.
    public static let depthLimit = 64

    static var binaryOptions: BinaryDecodingOptions {
        var o = BinaryDecodingOptions()
        o.messageDepthLimit = depthLimit
        return o
    }

    static var jsonOptions: JSONDecodingOptions {
        var o = JSONDecodingOptions()
        o.ignoreUnknownFields = true
        o.messageDepthLimit = depthLimit
        return o
    }

    public static func decode(_ body: [UInt8], signal: Signal, encoding: Envelope.Encoding) throws(IngestError) -> DecodedRequest {
        switch signal {
        case .traces: try decodeTraces(body, encoding)
        case .metrics: try decodeMetrics(body, encoding)
        case .logs: try decodeLogs(body, encoding)
        }
    }

    static func parse<M: SwiftProtobuf.Message>(_ type: M.Type, _ body: [UInt8], _ encoding: Envelope.Encoding) throws(IngestError) -> M {
        if encoding == .json { try JSONHexIDs.check(body) }
        do {
            switch encoding {
            case .protobuf: return try M(serializedBytes: body, options: binaryOptions)
            case .json: return try M(jsonUTF8Bytes: body, options: jsonOptions)
            }
        } catch {
            let format = encoding == .json ? "OTLP/JSON" : "protobuf"
            throw IngestError(.invalid, "the body is not a valid \(format) \(String(describing: M.self).split(separator: "_").last ?? ""): \(error)", reason: "undecodable")
        }
    }

    static func serialize(_ message: some SwiftProtobuf.Message) throws(IngestError) -> [UInt8] {
        do { return try message.serializedBytes() } catch {
            throw IngestError(.invalid, "the request could not be re-encoded: \(error)", reason: "undecodable")
        }
    }

    /// The body to store: the original protobuf when nothing changed.
    static func payload(_ message: some SwiftProtobuf.Message, original: [UInt8], encoding: Envelope.Encoding, changed: Bool) throws(IngestError) -> [UInt8] {
        encoding == .protobuf && !changed ? original : try serialize(message)
    }

    // MARK: traces

    static func decodeTraces(_ body: [UInt8], _ encoding: Envelope.Encoding) throws(IngestError) -> DecodedRequest {
        var request = try parse(TraceRequest.self, body, encoding)
        var accepted = 0, rejected = 0
        var firstProblem = ""
        for r in request.resourceSpans.indices {
            for s in request.resourceSpans[r].scopeSpans.indices {
                var kept: [Opentelemetry_Proto_Trace_V1_Span] = []
                for var span in request.resourceSpans[r].scopeSpans[s].spans {
                    if encoding == .json { try fixSpanIDs(&span) }
                    if let problem = spanProblem(span) {
                        rejected += 1
                        if firstProblem.isEmpty { firstProblem = problem }
                    } else {
                        accepted += 1
                        kept.append(span)
                    }
                }
                request.resourceSpans[r].scopeSpans[s].spans = kept
            }
        }
        return try finish(request, body, encoding, accepted, rejected, firstProblem, .traces)
    }

    static func spanProblem(_ span: Opentelemetry_Proto_Trace_V1_Span) -> String? {
        if let p = idProblem(span.traceID, length: 16, field: "span.trace_id", required: true) { return p }
        if let p = idProblem(span.spanID, length: 8, field: "span.span_id", required: true) { return p }
        if let p = idProblem(span.parentSpanID, length: 8, field: "span.parent_span_id", required: false) { return p }
        for link in span.links {
            if let p = idProblem(link.traceID, length: 16, field: "span.links.trace_id", required: true) { return p }
            if let p = idProblem(link.spanID, length: 8, field: "span.links.span_id", required: true) { return p }
        }
        return nil
    }

    static func fixSpanIDs(_ span: inout Opentelemetry_Proto_Trace_V1_Span) throws(IngestError) {
        span.traceID = try hexID(span.traceID, field: "traceId")
        span.spanID = try hexID(span.spanID, field: "spanId")
        span.parentSpanID = try hexID(span.parentSpanID, field: "parentSpanId")
        for l in span.links.indices {
            span.links[l].traceID = try hexID(span.links[l].traceID, field: "links.traceId")
            span.links[l].spanID = try hexID(span.links[l].spanID, field: "links.spanId")
        }
    }

    // MARK: metrics

    static func decodeMetrics(_ body: [UInt8], _ encoding: Envelope.Encoding) throws(IngestError) -> DecodedRequest {
        var request = try parse(MetricsRequest.self, body, encoding)
        var accepted = 0, rejected = 0
        var firstProblem = ""
        func note(_ problem: String) { if firstProblem.isEmpty { firstProblem = problem } }
        for r in request.resourceMetrics.indices {
            for s in request.resourceMetrics[r].scopeMetrics.indices {
                var kept: [Opentelemetry_Proto_Metrics_V1_Metric] = []
                for var metric in request.resourceMetrics[r].scopeMetrics[s].metrics {
                    let named = !metric.name.isEmpty
                    if !named { note("metric.name is empty") }
                    // Filters one kind of data point: a point is kept when the metric is named
                    // and its exemplars' ids are valid.
                    func filter<P>(_ points: inout [P], _ exemplars: WritableKeyPath<P, [Opentelemetry_Proto_Metrics_V1_Exemplar]>?) throws(IngestError) {
                        var keptPoints: [P] = []
                        for var point in points {
                            var problem: String? = named ? nil : "metric.name is empty"
                            if let exemplars, problem == nil {
                                for e in point[keyPath: exemplars].indices {
                                    if encoding == .json {
                                        point[keyPath: exemplars][e].traceID = try hexID(point[keyPath: exemplars][e].traceID, field: "exemplars.traceId")
                                        point[keyPath: exemplars][e].spanID = try hexID(point[keyPath: exemplars][e].spanID, field: "exemplars.spanId")
                                    }
                                    let ex = point[keyPath: exemplars][e]
                                    problem = problem ?? idProblem(ex.traceID, length: 16, field: "exemplar.trace_id", required: false)
                                        ?? idProblem(ex.spanID, length: 8, field: "exemplar.span_id", required: false)
                                }
                            }
                            if let problem {
                                rejected += 1
                                note(problem)
                            } else {
                                accepted += 1
                                keptPoints.append(point)
                            }
                        }
                        points = keptPoints
                    }
                    switch metric.data {
                    case .gauge(var g): try filter(&g.dataPoints, \.exemplars); metric.data = .gauge(g)
                    case .sum(var g): try filter(&g.dataPoints, \.exemplars); metric.data = .sum(g)
                    case .histogram(var g): try filter(&g.dataPoints, \.exemplars); metric.data = .histogram(g)
                    case .exponentialHistogram(var g): try filter(&g.dataPoints, \.exemplars); metric.data = .exponentialHistogram(g)
                    case .summary(var g): try filter(&g.dataPoints, nil); metric.data = .summary(g)
                    case nil: break
                    }
                    if named { kept.append(metric) }
                }
                request.resourceMetrics[r].scopeMetrics[s].metrics = kept
            }
        }
        return try finish(request, body, encoding, accepted, rejected, firstProblem, .metrics)
    }

    // MARK: logs

    static func decodeLogs(_ body: [UInt8], _ encoding: Envelope.Encoding) throws(IngestError) -> DecodedRequest {
        var request = try parse(LogsRequest.self, body, encoding)
        var accepted = 0, rejected = 0
        var firstProblem = ""
        for r in request.resourceLogs.indices {
            for s in request.resourceLogs[r].scopeLogs.indices {
                var kept: [Opentelemetry_Proto_Logs_V1_LogRecord] = []
                for var record in request.resourceLogs[r].scopeLogs[s].logRecords {
                    if encoding == .json {
                        record.traceID = try hexID(record.traceID, field: "logRecords.traceId")
                        record.spanID = try hexID(record.spanID, field: "logRecords.spanId")
                    }
                    if let problem = idProblem(record.traceID, length: 16, field: "log_record.trace_id", required: false)
                        ?? idProblem(record.spanID, length: 8, field: "log_record.span_id", required: false) {
                        rejected += 1
                        if firstProblem.isEmpty { firstProblem = problem }
                    } else {
                        accepted += 1
                        kept.append(record)
                    }
                }
                request.resourceLogs[r].scopeLogs[s].logRecords = kept
            }
        }
        return try finish(request, body, encoding, accepted, rejected, firstProblem, .logs)
    }

    // MARK: shared

    static func finish(_ request: some SwiftProtobuf.Message, _ body: [UInt8], _ encoding: Envelope.Encoding,
                       _ accepted: Int, _ rejected: Int, _ firstProblem: String, _ signal: Signal) throws(IngestError) -> DecodedRequest {
        if accepted == 0 && rejected > 0 {
            throw IngestError(.invalid, "all \(rejected) \(signal.itemName) were invalid; the first: \(firstProblem)", reason: "invalid_items")
        }
        let message = rejected > 0 ? "\(rejected) \(signal.itemName) rejected; the first: \(firstProblem)" : ""
        return DecodedRequest(payload: try payload(request, original: body, encoding: encoding, changed: rejected > 0),
                              acceptedItems: accepted, rejectedItems: rejected, rejectionMessage: message)
    }

    static func idProblem(_ id: Data, length: Int, field: String, required: Bool) -> String? {
        if id.isEmpty { return required ? "\(field) is missing" : nil }
        if id.count != length { return "\(field) is \(id.count) bytes, not \(length)" }
        if id.allSatisfy({ $0 == 0 }) { return "\(field) is all zeros" }
        return nil
    }

    /// Recovers an OTLP/JSON hex id that the stock decoder read as base64.
    static func hexID(_ misread: Data, field: String) throws(IngestError) -> Data {
        if misread.isEmpty { return misread }
        let text = Array(misread.base64EncodedString().utf8)
        guard text.count % 2 == 0 else { throw badHex(field) }
        var out = Data(capacity: text.count / 2)
        var i = 0
        while i < text.count {
            guard let hi = hexValue(text[i]), let lo = hexValue(text[i + 1]) else { throw badHex(field) }
            out.append(hi << 4 | lo)
            i += 2
        }
        return out
    }

    static func badHex(_ field: String) -> IngestError {
        IngestError(.invalid, "\(field) is not a hex string (OTLP/JSON ids are 32 or 16 hex digits)", reason: "undecodable")
    }

    static func hexValue(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}
