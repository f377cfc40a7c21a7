import CoreMetrics

/// The writer's own metrics (the engine adds `signalwal_*`). Names are listed in
/// docs/WRITER.md, "Metrics".
struct WriterMetrics: Sendable {
    /// Exports the counters alerts watch at zero from start-up: Prometheus's `increase()` does
    /// not count a series' first sample, so a counter born at 1 would never fire an alert.
    func exportZeros() {
        for name in ["signaldb_writer_dead_letters_total", "signaldb_writer_unreadable_records_total", "signaldb_writer_backpressure_total",
                     "signaldb_writer_rejected_records_total", "signaldb_writer_store_commits_total", "signaldb_writer_records_appended_total"] {
            Counter(label: name).increment(by: 0)
        }
        Gauge(label: "signaldb_writer_store_failing").record(0)
        for reason in ["busy", "full", "readonly", "io", "conflict", "other"] {
            Counter(label: "signaldb_writer_store_commit_failures_total", dimensions: [("reason", reason)]).increment(by: 0)
        }
    }

    func forward(result: String, records: Int) {
        Counter(label: "signaldb_writer_forward_batches_total", dimensions: [("result", result)]).increment()
        if records > 0 { Counter(label: "signaldb_writer_forward_records_total").increment(by: records) }
    }

    func appended(records: Int) {
        Counter(label: "signaldb_writer_records_appended_total").increment(by: records)
    }

    func duplicates(kind: String, count: Int) {
        if count > 0 { Counter(label: "signaldb_writer_duplicates_skipped_total", dimensions: [("kind", kind)]).increment(by: count) }
    }

    func rejected(count: Int) {
        if count > 0 { Counter(label: "signaldb_writer_rejected_records_total").increment(by: count) }
    }

    func commit(rows: StoreRowCounts, duration: Duration) {
        Counter(label: "signaldb_writer_store_commits_total").increment()
        Recorder(label: "signaldb_writer_store_rows_per_commit", aggregate: true).record(rows.total)
        Timer(label: "signaldb_writer_store_commit_duration_seconds").recordNanoseconds(
            duration.components.seconds * 1_000_000_000 + duration.components.attoseconds / 1_000_000_000)
        for (table, count) in [("spans", rows.spans), ("logs", rows.logs), ("metric_points", rows.metricPoints)] where count > 0 {
            Counter(label: "signaldb_writer_store_rows_total", dimensions: [("table", table)]).increment(by: count)
        }
    }

    func commitFailure(reason: String) {
        Counter(label: "signaldb_writer_store_commit_failures_total", dimensions: [("reason", reason)]).increment()
    }

    func storeFailing(_ failing: Bool) {
        Gauge(label: "signaldb_writer_store_failing").record(failing ? 1 : 0)
    }

    func storeLag(records: UInt64, seconds: Double) {
        Gauge(label: "signaldb_writer_store_lag_records").record(records)
        Gauge(label: "signaldb_writer_store_lag_seconds").record(seconds)
    }

    func deadLettered(count: Int) {
        Counter(label: "signaldb_writer_dead_letters_total").increment(by: count)
    }

    func lost(count: Int) {
        Counter(label: "signaldb_writer_unreadable_records_total").increment(by: count)
    }

    func backpressure() {
        Counter(label: "signaldb_writer_backpressure_total").increment()
    }

    func marks(acceptors: Int, lsns: Int) {
        Gauge(label: "signaldb_writer_acceptors").record(acceptors)
        Gauge(label: "signaldb_writer_held_lsns").record(lsns)
    }

    func ready(_ ready: Bool) {
        Gauge(label: "signaldb_writer_ready").record(ready ? 1 : 0)
    }
}

struct StoreRowCounts: Sendable {
    var spans = 0, logs = 0, metricPoints = 0
    var total: Int { spans + logs + metricPoints }
}
