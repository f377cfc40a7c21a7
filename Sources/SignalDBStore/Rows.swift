/// One stored span: a row of `spans` (docs/WRITER.md, "Schema"). Ids are lowercase hex;
/// the JSON columns hold ``JSONText`` output.
public struct SpanRow: Sendable, Equatable {
    public var tenant: String
    public var dataset: String
    public var traceID: String
    public var spanID: String
    public var parentSpanID: String?
    public var traceState: String
    public var name: String
    public var kind: Int
    public var startTimeUnixNano: UInt64
    public var endTimeUnixNano: UInt64
    public var statusCode: Int
    public var statusMessage: String
    public var serviceName: String?
    public var scopeName: String
    public var scopeVersion: String
    public var attributes: String
    public var resourceAttributes: String
    public var events: String
    public var links: String
    public var receivedAtUnixNano: UInt64
}

/// One stored log record: a row of `logs`.
public struct LogRow: Sendable, Equatable {
    public var tenant: String
    public var dataset: String
    public var timeUnixNano: UInt64
    public var observedTimeUnixNano: UInt64
    public var severityNumber: Int
    public var severityText: String
    public var body: String?
    public var traceID: String?
    public var spanID: String?
    public var eventName: String
    public var serviceName: String?
    public var scopeName: String
    public var attributes: String
    public var resourceAttributes: String
    public var receivedAtUnixNano: UInt64
}

/// One stored metric data point: a row of `metric_points`. Gauges and sums fill `value`
/// (and `intValue` when the point was an integer); histograms, exponential histograms and
/// summaries fill `histogram` with their buckets or quantiles as JSON.
public struct MetricPointRow: Sendable, Equatable {
    public var tenant: String
    public var dataset: String
    public var metricName: String
    public var description: String
    public var unit: String
    /// `gauge`, `sum`, `histogram`, `exponential_histogram` or `summary`.
    public var type: String
    public var aggregationTemporality: Int
    public var isMonotonic: Bool
    public var timeUnixNano: UInt64
    public var startTimeUnixNano: UInt64
    public var value: Double?
    public var intValue: Int64?
    public var histogram: String?
    public var attributes: String
    public var resourceAttributes: String
    public var serviceName: String?
    public var scopeName: String
    public var receivedAtUnixNano: UInt64
}

/// The rows of one or more envelopes, in the order they arrived.
public struct StoreRows: Sendable, Equatable {
    public var spans: [SpanRow] = []
    public var logs: [LogRow] = []
    public var metricPoints: [MetricPointRow] = []

    public init() {}

    public var count: Int { spans.count + logs.count + metricPoints.count }

    public mutating func append(_ other: StoreRows) {
        spans += other.spans
        logs += other.logs
        metricPoints += other.metricPoints
    }
}
