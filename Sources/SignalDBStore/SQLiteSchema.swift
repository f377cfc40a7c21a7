import SignalDBLayout
/// The embedded store's schema, fixed here and in docs/WRITER.md ("Schema"). Version 1 is
/// recorded in `PRAGMA user_version`; a database with a newer version is refused at start-up.
///
/// Times are Unix nanoseconds (INTEGER, clamped to 2^63-1), ids lowercase hex TEXT, enums
/// their OTLP numbers, attributes and other structures JSON TEXT (SQLite's `json_extract`
/// reads them).
enum SQLiteSchema {
    static let version = 1

    static let statements: [String] = [
        """
        CREATE TABLE IF NOT EXISTS spans (
          id INTEGER PRIMARY KEY,
          tenant TEXT NOT NULL, dataset TEXT NOT NULL,
          trace_id TEXT NOT NULL, span_id TEXT NOT NULL, parent_span_id TEXT, trace_state TEXT NOT NULL,
          name TEXT NOT NULL, kind INTEGER NOT NULL,
          start_time_unix_nano INTEGER NOT NULL, end_time_unix_nano INTEGER NOT NULL,
          status_code INTEGER NOT NULL, status_message TEXT NOT NULL,
          service_name TEXT, scope_name TEXT NOT NULL, scope_version TEXT NOT NULL,
          attributes TEXT NOT NULL, resource_attributes TEXT NOT NULL, events TEXT NOT NULL, links TEXT NOT NULL,
          received_at_unix_nano INTEGER NOT NULL
        )
        """,
        // The natural key: one row per span however often a client resends it. It also serves
        // "the spans of trace X" within a tenant and dataset.
        "CREATE UNIQUE INDEX IF NOT EXISTS spans_natural_key ON spans(tenant, dataset, trace_id, span_id)",
        "CREATE INDEX IF NOT EXISTS spans_by_time ON spans(tenant, dataset, start_time_unix_nano)",
        """
        CREATE TABLE IF NOT EXISTS logs (
          id INTEGER PRIMARY KEY,
          tenant TEXT NOT NULL, dataset TEXT NOT NULL,
          time_unix_nano INTEGER NOT NULL, observed_time_unix_nano INTEGER NOT NULL,
          severity_number INTEGER NOT NULL, severity_text TEXT NOT NULL,
          body TEXT, trace_id TEXT, span_id TEXT, event_name TEXT NOT NULL,
          service_name TEXT, scope_name TEXT NOT NULL,
          attributes TEXT NOT NULL, resource_attributes TEXT NOT NULL,
          received_at_unix_nano INTEGER NOT NULL
        )
        """,
        "CREATE INDEX IF NOT EXISTS logs_by_time ON logs(tenant, dataset, time_unix_nano)",
        "CREATE INDEX IF NOT EXISTS logs_by_trace ON logs(trace_id) WHERE trace_id IS NOT NULL",
        """
        CREATE TABLE IF NOT EXISTS metric_points (
          id INTEGER PRIMARY KEY,
          tenant TEXT NOT NULL, dataset TEXT NOT NULL,
          metric_name TEXT NOT NULL, description TEXT NOT NULL, unit TEXT NOT NULL, type TEXT NOT NULL,
          aggregation_temporality INTEGER NOT NULL, is_monotonic INTEGER NOT NULL,
          time_unix_nano INTEGER NOT NULL, start_time_unix_nano INTEGER NOT NULL,
          value REAL, int_value INTEGER, histogram TEXT,
          attributes TEXT NOT NULL, resource_attributes TEXT NOT NULL,
          service_name TEXT, scope_name TEXT NOT NULL,
          received_at_unix_nano INTEGER NOT NULL
        )
        """,
        "CREATE INDEX IF NOT EXISTS metric_points_by_name_time ON metric_points(tenant, dataset, metric_name, time_unix_nano)",
        // The writer's bookkeeping. One row `writer-wal` (the last writer WAL LSN stored) and one
        // row `acceptor:<id>` per acceptor (its floor, high-water mark and held LSNs above the
        // floor, see AcceptorProgress). Written in the same transaction as the rows.
        """
        CREATE TABLE IF NOT EXISTS ingest_progress (
          source TEXT PRIMARY KEY,
          writer_lsn INTEGER, floor_lsn INTEGER, high_water_lsn INTEGER, held_ranges TEXT,
          updated_at_unix_nano INTEGER NOT NULL
        )
        """,
    ]

    static let insertSpan = """
        INSERT INTO spans (tenant, dataset, trace_id, span_id, parent_span_id, trace_state, name, kind,
          start_time_unix_nano, end_time_unix_nano, status_code, status_message, service_name, scope_name, scope_version,
          attributes, resource_attributes, events, links, received_at_unix_nano)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
        ON CONFLICT (tenant, dataset, trace_id, span_id) DO NOTHING
        """
    static let insertLog = """
        INSERT INTO logs (tenant, dataset, time_unix_nano, observed_time_unix_nano, severity_number, severity_text, body,
          trace_id, span_id, event_name, service_name, scope_name, attributes, resource_attributes, received_at_unix_nano)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
        """
    static let insertMetricPoint = """
        INSERT INTO metric_points (tenant, dataset, metric_name, description, unit, type, aggregation_temporality, is_monotonic,
          time_unix_nano, start_time_unix_nano, value, int_value, histogram, attributes, resource_attributes, service_name,
          scope_name, received_at_unix_nano)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
        """
    static let upsertProgress = """
        INSERT INTO ingest_progress (source, writer_lsn, floor_lsn, high_water_lsn, held_ranges, updated_at_unix_nano)
        VALUES (?, ?, ?, ?, ?, ?)
        ON CONFLICT (source) DO UPDATE SET writer_lsn = excluded.writer_lsn, floor_lsn = excluded.floor_lsn,
          high_water_lsn = excluded.high_water_lsn, held_ranges = excluded.held_ranges,
          updated_at_unix_nano = excluded.updated_at_unix_nano
        """
    static let walSource = ServiceLayout.progressWriterSource
    static let acceptorPrefix = ServiceLayout.progressAcceptorPrefix
}
