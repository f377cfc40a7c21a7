import Foundation
import OTLPProto
import SignalDBIngest
import SwiftProtobuf

/// Turns a stored envelope into rows: one per span, log record or metric data point, with the
/// resource's `service.name` lifted into its own column. Fails (the record can never be
/// stored, so it is dead-lettered) only when the payload does not parse as the envelope's
/// signal or an item lacks what a row needs, which the acceptor's validation already checks.
public enum RowMapper {
    public static func rows(for envelope: Envelope) throws(RowMappingError) -> StoreRows {
        var options = BinaryDecodingOptions()
        options.messageDepthLimit = OTLPDecoder.depthLimit
        var rows = StoreRows()
        do {
            switch envelope.signal {
            case .traces:
                let request = try Opentelemetry_Proto_Collector_Trace_V1_ExportTraceServiceRequest(serializedBytes: envelope.payload, options: options)
                try spans(request, envelope, into: &rows)
            case .logs:
                let request = try Opentelemetry_Proto_Collector_Logs_V1_ExportLogsServiceRequest(serializedBytes: envelope.payload, options: options)
                logs(request, envelope, into: &rows)
            case .metrics:
                let request = try Opentelemetry_Proto_Collector_Metrics_V1_ExportMetricsServiceRequest(serializedBytes: envelope.payload, options: options)
                metrics(request, envelope, into: &rows)
            }
        } catch let error as RowMappingError {
            throw error
        } catch {
            throw RowMappingError("the payload is not a valid \(envelope.signal) export request: \(error)")
        }
        return rows
    }

    static func serviceName(_ resource: Opentelemetry_Proto_Resource_V1_Resource) -> String? {
        resource.attributes.last(where: { $0.key == "service.name" }).flatMap {
            if case .stringValue(let s)? = $0.value.value { return s }
            return nil
        }
    }

    static func spans(_ request: Opentelemetry_Proto_Collector_Trace_V1_ExportTraceServiceRequest, _ e: Envelope, into rows: inout StoreRows) throws(RowMappingError) {
        for rs in request.resourceSpans {
            let resource = JSONText.attributes(rs.resource.attributes)
            let service = serviceName(rs.resource)
            for ss in rs.scopeSpans {
                for span in ss.spans {
                    guard span.traceID.count == 16, span.spanID.count == 8 else {
                        throw RowMappingError("a span has a \(span.traceID.count)-byte trace id or a \(span.spanID.count)-byte span id (16 and 8 needed)")
                    }
                    var events = "["
                    for (i, event) in span.events.enumerated() {
                        if i > 0 { events += "," }
                        events += "{\"time_unix_nano\":\(event.timeUnixNano),\"name\":"
                        JSONText.writeString(event.name, to: &events)
                        events += ",\"attributes\":"
                        JSONText.writeObject(event.attributes, to: &events)
                        events += "}"
                    }
                    events += "]"
                    var links = "["
                    for (i, link) in span.links.enumerated() {
                        if i > 0 { links += "," }
                        links += "{\"trace_id\":\"\(JSONText.hex(link.traceID))\",\"span_id\":\"\(JSONText.hex(link.spanID))\",\"trace_state\":"
                        JSONText.writeString(link.traceState, to: &links)
                        links += ",\"attributes\":"
                        JSONText.writeObject(link.attributes, to: &links)
                        links += "}"
                    }
                    links += "]"
                    rows.spans.append(SpanRow(
                        tenant: e.tenant, dataset: e.dataset, traceID: JSONText.hex(span.traceID), spanID: JSONText.hex(span.spanID),
                        parentSpanID: JSONText.optionalHex(span.parentSpanID), traceState: span.traceState, name: span.name,
                        kind: span.kind.rawValue, startTimeUnixNano: span.startTimeUnixNano, endTimeUnixNano: span.endTimeUnixNano,
                        statusCode: span.status.code.rawValue, statusMessage: span.status.message, serviceName: service,
                        scopeName: ss.scope.name, scopeVersion: ss.scope.version, attributes: JSONText.attributes(span.attributes),
                        resourceAttributes: resource, events: events, links: links, receivedAtUnixNano: e.receivedAtUnixNano))
                }
            }
        }
    }

    static func logs(_ request: Opentelemetry_Proto_Collector_Logs_V1_ExportLogsServiceRequest, _ e: Envelope, into rows: inout StoreRows) {
        for rl in request.resourceLogs {
            let resource = JSONText.attributes(rl.resource.attributes)
            let service = serviceName(rl.resource)
            for sl in rl.scopeLogs {
                for record in sl.logRecords {
                    rows.logs.append(LogRow(
                        tenant: e.tenant, dataset: e.dataset, timeUnixNano: record.timeUnixNano, observedTimeUnixNano: record.observedTimeUnixNano,
                        severityNumber: record.severityNumber.rawValue, severityText: record.severityText,
                        body: record.hasBody ? JSONText.value(record.body) : nil,
                        traceID: JSONText.optionalHex(record.traceID), spanID: JSONText.optionalHex(record.spanID),
                        eventName: record.eventName, serviceName: service, scopeName: sl.scope.name,
                        attributes: JSONText.attributes(record.attributes), resourceAttributes: resource,
                        receivedAtUnixNano: e.receivedAtUnixNano))
                }
            }
        }
    }

    static func metrics(_ request: Opentelemetry_Proto_Collector_Metrics_V1_ExportMetricsServiceRequest, _ e: Envelope, into rows: inout StoreRows) {
        for rm in request.resourceMetrics {
            let resource = JSONText.attributes(rm.resource.attributes)
            let service = serviceName(rm.resource)
            for sm in rm.scopeMetrics {
                for metric in sm.metrics {
                    func row(_ type: String, temporality: Int = 0, monotonic: Bool = false, time: UInt64, start: UInt64,
                             attributes: [Opentelemetry_Proto_Common_V1_KeyValue], value: Double? = nil, int: Int64? = nil,
                             histogram: String? = nil) -> MetricPointRow {
                        MetricPointRow(
                            tenant: e.tenant, dataset: e.dataset, metricName: metric.name, description: metric.description_p, unit: metric.unit,
                            type: type, aggregationTemporality: temporality, isMonotonic: monotonic, timeUnixNano: time, startTimeUnixNano: start,
                            value: value, intValue: int, histogram: histogram, attributes: JSONText.attributes(attributes),
                            resourceAttributes: resource, serviceName: service, scopeName: sm.scope.name, receivedAtUnixNano: e.receivedAtUnixNano)
                    }
                    func number(_ p: Opentelemetry_Proto_Metrics_V1_NumberDataPoint, _ type: String, temporality: Int = 0, monotonic: Bool = false) -> MetricPointRow {
                        switch p.value {
                        case .asInt(let i)?:
                            return row(type, temporality: temporality, monotonic: monotonic, time: p.timeUnixNano, start: p.startTimeUnixNano,
                                       attributes: p.attributes, value: Double(i), int: i)
                        case .asDouble(let d)?:
                            return row(type, temporality: temporality, monotonic: monotonic, time: p.timeUnixNano, start: p.startTimeUnixNano,
                                       attributes: p.attributes, value: d)
                        case nil:
                            return row(type, temporality: temporality, monotonic: monotonic, time: p.timeUnixNano, start: p.startTimeUnixNano,
                                       attributes: p.attributes)
                        }
                    }
                    switch metric.data {
                    case .gauge(let g)?:
                        for p in g.dataPoints { rows.metricPoints.append(number(p, "gauge")) }
                    case .sum(let s)?:
                        for p in s.dataPoints {
                            rows.metricPoints.append(number(p, "sum", temporality: s.aggregationTemporality.rawValue, monotonic: s.isMonotonic))
                        }
                    case .histogram(let h)?:
                        for p in h.dataPoints {
                            var json = "{\"count\":\(p.count)"
                            if p.hasSum { json += ",\"sum\":"; JSONText.writeDouble(p.sum, to: &json) }
                            if p.hasMin { json += ",\"min\":"; JSONText.writeDouble(p.min, to: &json) }
                            if p.hasMax { json += ",\"max\":"; JSONText.writeDouble(p.max, to: &json) }
                            json += ",\"bucket_counts\":[\(p.bucketCounts.map(String.init).joined(separator: ","))]"
                            json += ",\"explicit_bounds\":["
                            for (i, b) in p.explicitBounds.enumerated() {
                                if i > 0 { json += "," }
                                JSONText.writeDouble(b, to: &json)
                            }
                            json += "]}"
                            rows.metricPoints.append(row("histogram", temporality: h.aggregationTemporality.rawValue, time: p.timeUnixNano,
                                                         start: p.startTimeUnixNano, attributes: p.attributes,
                                                         value: p.hasSum ? p.sum : nil, histogram: json))
                        }
                    case .exponentialHistogram(let h)?:
                        for p in h.dataPoints {
                            var json = "{\"count\":\(p.count),\"scale\":\(p.scale),\"zero_count\":\(p.zeroCount)"
                            if p.hasSum { json += ",\"sum\":"; JSONText.writeDouble(p.sum, to: &json) }
                            if p.hasMin { json += ",\"min\":"; JSONText.writeDouble(p.min, to: &json) }
                            if p.hasMax { json += ",\"max\":"; JSONText.writeDouble(p.max, to: &json) }
                            json += ",\"zero_threshold\":"
                            JSONText.writeDouble(p.zeroThreshold, to: &json)
                            json += ",\"positive\":{\"offset\":\(p.positive.offset),\"bucket_counts\":[\(p.positive.bucketCounts.map(String.init).joined(separator: ","))]}"
                            json += ",\"negative\":{\"offset\":\(p.negative.offset),\"bucket_counts\":[\(p.negative.bucketCounts.map(String.init).joined(separator: ","))]}}"
                            rows.metricPoints.append(row("exponential_histogram", temporality: h.aggregationTemporality.rawValue, time: p.timeUnixNano,
                                                         start: p.startTimeUnixNano, attributes: p.attributes,
                                                         value: p.hasSum ? p.sum : nil, histogram: json))
                        }
                    case .summary(let s)?:
                        for p in s.dataPoints {
                            var json = "{\"count\":\(p.count),\"sum\":"
                            JSONText.writeDouble(p.sum, to: &json)
                            json += ",\"quantile_values\":["
                            for (i, q) in p.quantileValues.enumerated() {
                                if i > 0 { json += "," }
                                json += "{\"quantile\":"
                                JSONText.writeDouble(q.quantile, to: &json)
                                json += ",\"value\":"
                                JSONText.writeDouble(q.value, to: &json)
                                json += "}"
                            }
                            json += "]}"
                            rows.metricPoints.append(row("summary", time: p.timeUnixNano, start: p.startTimeUnixNano, attributes: p.attributes,
                                                         value: p.sum, histogram: json))
                        }
                    case nil:
                        continue  // a metric without data: nothing to store
                    }
                }
            }
        }
    }
}

/// A record that can never become rows (it is dead-lettered with this reason).
public struct RowMappingError: Error, Sendable, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
