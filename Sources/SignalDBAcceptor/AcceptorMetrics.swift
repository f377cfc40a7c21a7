import CoreMetrics
import SignalDBIngest

/// The acceptor's own metrics (the engine adds `signalwal_*` with `wal="acceptor"`). Names are
/// listed in docs/ACCEPTOR.md.
struct AcceptorMetrics: Sendable {
    /// Exports the counters alerts watch at zero from start-up: Prometheus's `increase()` does
    /// not count a series' first sample, so a counter born at 1 would never fire an alert.
    func exportZeros() {
        for name in ["signaldb_acceptor_dead_letters_total", "signaldb_acceptor_unreadable_records_total",
                     "signaldb_acceptor_forwarded_batches_total", "signaldb_acceptor_forwarded_records_total"] {
            Counter(label: name).increment(by: 0)
        }
        Gauge(label: "signaldb_acceptor_forward_circuit_open").record(0)
        // The reasons a forward fails for most (gRPC codes as RPCError names them, and a
        // transport error); a rarer code's series starts at its first failure.
        for reason in ["unavailable", "deadlineExceeded", "resourceExhausted", "unauthenticated", "internal", "transport"] {
            Counter(label: "signaldb_acceptor_forward_failures_total", dimensions: [("reason", reason)]).increment(by: 0)
        }
        for reason in ["backlog_full", "out_of_space", "disk_reserve"] {
            Counter(label: "signaldb_acceptor_backpressure_total", dimensions: [("reason", reason)]).increment(by: 0)
        }
    }

    func request(signal: Signal?, transport: String, status: Int, reason: String) {
        Counter(label: "signaldb_acceptor_requests_total",
                dimensions: [("signal", signal?.description ?? "none"), ("transport", transport), ("status", String(status)), ("reason", reason)]).increment()
    }

    func bytesReceived(signal: Signal, count: Int) {
        Counter(label: "signaldb_acceptor_received_bytes_total", dimensions: [("signal", signal.description)]).increment(by: count)
    }

    func items(signal: Signal, accepted: Int, rejected: Int) {
        Counter(label: "signaldb_acceptor_items_accepted_total", dimensions: [("signal", signal.description)]).increment(by: accepted)
        if rejected > 0 {
            Counter(label: "signaldb_acceptor_items_rejected_total", dimensions: [("signal", signal.description)]).increment(by: rejected)
        }
    }

    func backpressure(reason: String) {
        Counter(label: "signaldb_acceptor_backpressure_total", dimensions: [("reason", reason)]).increment()
    }

    func forwarded(records: Int) {
        Counter(label: "signaldb_acceptor_forwarded_batches_total").increment()
        Counter(label: "signaldb_acceptor_forwarded_records_total").increment(by: records)
    }

    func forwardFailure(reason: String) {
        Counter(label: "signaldb_acceptor_forward_failures_total", dimensions: [("reason", reason)]).increment()
    }

    func deadLettered(count: Int) {
        Counter(label: "signaldb_acceptor_dead_letters_total").increment(by: count)
    }

    func lost(count: Int) {
        Counter(label: "signaldb_acceptor_unreadable_records_total").increment(by: count)
    }

    func forwardLag(records: UInt64, seconds: Double) {
        Gauge(label: "signaldb_acceptor_forward_lag_records").record(records)
        Gauge(label: "signaldb_acceptor_forward_lag_seconds").record(seconds)
    }

    func circuit(open: Bool) {
        Gauge(label: "signaldb_acceptor_forward_circuit_open").record(open ? 1 : 0)
    }

    func ready(_ ready: Bool) {
        Gauge(label: "signaldb_acceptor_ready").record(ready ? 1 : 0)
    }
}
