import CoreMetrics

/// The WAL's counters and timers, through swift-metrics, so a service exports them with whatever
/// backend it bootstrapped (the ingestion services use Prometheus). Every metric carries the
/// dimension `wal` = the WAL directory, plus the configuration's `metricDimensions` (the
/// services add `service`).
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
/// | `signalwal_backlog_full_errors_total` | counter | appends refused with `backlogFull` (past `maxLiveBytes`) |
/// | `signalwal_live_segments` | gauge | segments holding records after the checkpoint, plus the active one |
/// | `signalwal_live_bytes` | gauge | their bytes (what `maxLiveBytes` bounds) |
/// | `signalwal_max_live_bytes` | gauge | `maxLiveBytes` (absent when unbounded) |
/// | `signalwal_backlog_records` | gauge | records after the checkpoint |
/// | `signalwal_oldest_unprocessed_age_seconds` | gauge | age of the oldest record after the checkpoint |
/// | `signalwal_filesystem_used_bytes` | gauge | bytes used on the WAL directory's filesystem (size minus free) |
/// | `signalwal_filesystem_size_bytes` | gauge | size of that filesystem |
/// | `signalwal_recovery_lost_records` | gauge | records the last open's recovery found lost to damage |
/// | `signalwal_recovery_damaged_ranges` | gauge | damaged stretches it skipped or quarantined (crash leftovers excluded) |
/// | `signalwal_failed` | gauge | 1 once a flush failed (the WAL refuses appends until reopened), else 0 |
/// | `signalwal_segment_files` | gauge | segment files in the directory: live, spares, kept for reuse |
/// | `wal_flush_duration_seconds` | gauge | the longest flush of the last 15 to 30 s, or a running one's age (`FlushLatencyWindow`) |
/// | `disk_used_bytes` | gauge | as `signalwal_filesystem_used_bytes`, with `mountpoint` = the filesystem's mount point |
/// | `disk_size_bytes` | gauge | as `signalwal_filesystem_size_bytes`, with `mountpoint` |
///
/// The last three have no `signalwal_` prefix: they are the names the SignalDB operators'
/// guide's alerts use (`(disk_used_bytes{mountpoint="/data/wal"} / disk_size_bytes{...}) > 0.85`,
/// `wal_flush_duration_seconds > 1.0`), so those alerts work unchanged.
///
/// The gauges are recorded at open, after each checkpoint and on ``WAL/refreshMetrics()``.
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
    let backlogFullErrors: Counter
    let liveSegments: Gauge
    let liveBytes: Gauge
    let maxLiveBytes: Gauge
    let backlogRecords: Gauge
    let oldestRecordAge: Gauge
    let filesystemUsed: Gauge
    let filesystemSize: Gauge
    let recoveryLostRecords: Gauge
    let recoveryDamagedRanges: Gauge
    let failed: Gauge
    let segmentFiles: Gauge
    let flushLatency: Gauge
    let diskUsed: Gauge
    let diskSize: Gauge
    let flushWindow = FlushLatencyWindow()

    init(directory: String, extraDimensions: [(String, String)] = [], factory: (any MetricsFactory)?) {
        let dimensions = [("wal", directory)] + extraDimensions
        let factory = factory ?? MetricsSystem.factory
        segmentFiles = Gauge(label: "signalwal_segment_files", dimensions: dimensions, factory: factory)
        flushLatency = Gauge(label: "wal_flush_duration_seconds", dimensions: dimensions, factory: factory)
        // The mount point is read once: a WAL directory does not move to another filesystem
        // while it is open.
        let disk = dimensions + [("mountpoint", MountTable.mountPoint(containing: directory) ?? "unknown")]
        diskUsed = Gauge(label: "disk_used_bytes", dimensions: disk, factory: factory)
        diskSize = Gauge(label: "disk_size_bytes", dimensions: disk, factory: factory)
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
        backlogFullErrors = Counter(label: "signalwal_backlog_full_errors_total", dimensions: dimensions, factory: factory)
        liveSegments = Gauge(label: "signalwal_live_segments", dimensions: dimensions, factory: factory)
        liveBytes = Gauge(label: "signalwal_live_bytes", dimensions: dimensions, factory: factory)
        maxLiveBytes = Gauge(label: "signalwal_max_live_bytes", dimensions: dimensions, factory: factory)
        backlogRecords = Gauge(label: "signalwal_backlog_records", dimensions: dimensions, factory: factory)
        oldestRecordAge = Gauge(label: "signalwal_oldest_unprocessed_age_seconds", dimensions: dimensions, factory: factory)
        filesystemUsed = Gauge(label: "signalwal_filesystem_used_bytes", dimensions: dimensions, factory: factory)
        filesystemSize = Gauge(label: "signalwal_filesystem_size_bytes", dimensions: dimensions, factory: factory)
        recoveryLostRecords = Gauge(label: "signalwal_recovery_lost_records", dimensions: dimensions, factory: factory)
        recoveryDamagedRanges = Gauge(label: "signalwal_recovery_damaged_ranges", dimensions: dimensions, factory: factory)
        failed = Gauge(label: "signalwal_failed", dimensions: dimensions, factory: factory)
    }
}
