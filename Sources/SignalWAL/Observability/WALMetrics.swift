import CoreMetrics

/// The WAL's counters and timers, through swift-metrics, so a service exports them with whatever
/// backend it bootstrapped (the ingestion services use Prometheus). Every metric carries the
/// dimension `wal` = the WAL directory.
///
/// | name | kind | meaning |
/// |---|---|---|
/// | `signalwal_records_appended_total` | counter | records copied into the log |
/// | `signalwal_bytes_appended_total` | counter | payload bytes copied into the log |
/// | `signalwal_flushes_total` | counter | completed flushes |
/// | `signalwal_flush_failures_total` | counter | failed flushes (each makes the WAL refuse appends until reopened) |
/// | `signalwal_flush_duration_seconds` | timer | one flush: fdatasync of every file written since the last |
/// | `signalwal_records_per_flush` | recorder | records each flush made durable |
/// | `signalwal_durable_lag_records` | gauge | appended minus durable LSN, after each flush |
/// | `signalwal_segments_allocated_total` | counter | new segments prepared |
/// | `signalwal_segments_recycled_total` | counter | segments reused from below the checkpoint |
/// | `signalwal_out_of_space_errors_total` | counter | appends refused with `outOfSpace` |
final class WALMetrics: Sendable {
    let recordsAppended: Counter
    let bytesAppended: Counter
    let flushes: Counter
    let flushFailures: Counter
    let flushDuration: Timer
    let recordsPerFlush: Recorder
    let durableLag: Gauge
    let segmentsAllocated: Counter
    let segmentsRecycled: Counter
    let outOfSpaceErrors: Counter

    init(directory: String, factory: (any MetricsFactory)?) {
        let dimensions = [("wal", directory)]
        let factory = factory ?? MetricsSystem.factory
        recordsAppended = Counter(label: "signalwal_records_appended_total", dimensions: dimensions, factory: factory)
        bytesAppended = Counter(label: "signalwal_bytes_appended_total", dimensions: dimensions, factory: factory)
        flushes = Counter(label: "signalwal_flushes_total", dimensions: dimensions, factory: factory)
        flushFailures = Counter(label: "signalwal_flush_failures_total", dimensions: dimensions, factory: factory)
        flushDuration = Timer(label: "signalwal_flush_duration_seconds", dimensions: dimensions, factory: factory)
        recordsPerFlush = Recorder(label: "signalwal_records_per_flush", dimensions: dimensions, aggregate: true, factory: factory)
        durableLag = Gauge(label: "signalwal_durable_lag_records", dimensions: dimensions, factory: factory)
        segmentsAllocated = Counter(label: "signalwal_segments_allocated_total", dimensions: dimensions, factory: factory)
        segmentsRecycled = Counter(label: "signalwal_segments_recycled_total", dimensions: dimensions, factory: factory)
        outOfSpaceErrors = Counter(label: "signalwal_out_of_space_errors_total", dimensions: dimensions, factory: factory)
    }
}
