/// Follows the batch flags of records in log order (across segments) and says which records
/// belong to complete batches. Recovery, readers of damaged logs and the tools share it, so a
/// batch is all-or-none the same way everywhere (see ``RecordFlags``).
///
/// Holds only the open batch's bounds, never the records.
struct BatchAssembler: Sendable {
    /// Where a batch starts, for the tail action that drops an incomplete one.
    struct Start: Sendable, Equatable {
        var lsn: LSN
        var segment: UInt64
        var offset: Int
    }
    enum Outcome: Sendable, Equatable {
        /// Every record of this range is part of a complete batch.
        case complete(ClosedRange<LSN>)
        /// Records of a batch that never completed (its last record is missing).
        case incomplete(ClosedRange<LSN>, start: Start)
    }

    /// The batch being followed; `headless` when its first record is missing (it began with
    /// a continuation), so it cannot complete.
    private(set) var open: (start: Start, last: LSN, headless: Bool)?

    /// Feeds the next valid record. Returns what it settles (an earlier batch found incomplete,
    /// then this record's batch if it ends here).
    mutating func add(_ header: RecordHeader, segment: UInt64, offset: Int) -> [Outcome] {
        var settled: [Outcome] = []
        if header.flags.contains(.continuation), let current = open, header.lsn == current.last + 1 {
            open!.last = header.lsn
        } else {
            if let current = open { settled.append(.incomplete(current.start.lsn...current.last, start: current.start)) }
            open = (Start(lsn: header.lsn, segment: segment, offset: offset), header.lsn, header.flags.contains(.continuation))
        }
        if !header.flags.contains(.continues), let current = open {
            let range = current.start.lsn...current.last
            settled.append(current.headless ? .incomplete(range, start: current.start) : .complete(range))
            open = nil
        }
        return settled
    }

    /// At the end of the log: the batch still open, if any, is incomplete.
    mutating func finish() -> Outcome? {
        defer { open = nil }
        return open.map { .incomplete($0.start.lsn...$0.last, start: $0.start) }
    }
}
