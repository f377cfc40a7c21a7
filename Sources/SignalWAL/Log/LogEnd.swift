/// Where the log ends, as one stage of the write path knows it: the last record of the last
/// *complete* batch, and the byte just past it.
///
/// Each stage owns its own value and hands it on (invariants I1 and I3 in `docs/DESIGN.md`):
/// the appender publishes one after every batch it copied, the committer keeps the newest it
/// was told of (`written`) and the newest a flush made durable (`durable`), and readers stop at
/// the visible one. A `LogEnd` never describes part of a batch or a byte that was not staged.
struct LogEnd: Sendable, Equatable {
    /// The last LSN of the last complete batch (0 when the log is empty).
    var lsn: LSN
    /// The segment holding that record (0 before the first segment).
    var segment: UInt64
    /// The offset just past that record in its segment.
    var offset: Int
    /// Record bytes (spans) appended since the WAL opened, for ``Configuration/maxBatchBytes``.
    var bytes: UInt64 = 0
    /// The staged backend's stream position just past that record (see ``StagingRing``); 0
    /// under the mapped backend.
    var stream: UInt64 = 0
}
