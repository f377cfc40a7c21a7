/// One record read back from the log.
public struct Record: Sendable, Equatable {
    public let lsn: LSN
    public let payload: [UInt8]
    /// The segment sequence and byte offset the record was read from.
    public let segment: UInt64
    public let offset: Int
}

/// The records of a ``WAL`` that are visible now, from a starting LSN, in LSN order: a
/// synchronous `Sequence` that never blocks and ends at the last visible record (durable ones;
/// under `.none`, copied ones). Each record is checked against its CRC after it is copied out.
///
/// It yields a contiguous run of LSNs and never skips one: at LSNs that are not in the log
/// (released by a checkpoint while this sequence was behind, or lost to damage recovery
/// reported) it ends early, and ``WAL/records(from:limit:)`` from the next wanted LSN then
/// throws ``WALError/Kind/gap(missing:)`` with the missing range. To follow new records as
/// they arrive, use ``WAL/tail(from:limit:)``.
public struct RecordSequence: Sequence, Sendable {
    public typealias Element = Record
    let wal: WAL
    let start: LSN
    let limit: Int?

    public func makeIterator() -> Iterator { Iterator(cursor: RecordCursor(wal: wal, start: start), remaining: limit) }

    public struct Iterator: IteratorProtocol {
        let cursor: RecordCursor
        var remaining: Int?
        public mutating func next() -> Record? {
            if let left = remaining {
                guard left > 0 else { return nil }
                remaining = left - 1
            }
            guard case .record(let record) = cursor.next() else { return nil }
            return record
        }
    }
}

/// The records of a ``WAL`` from a starting LSN, following the log as records become visible:
/// an `AsyncSequence` only (`for try await`), so it cannot be iterated by mistake without
/// following.
///
/// It never ends silently. After yielding every visible record it throws:
/// - ``WALError/Kind/gap(missing:)`` at LSNs that are not in the log (below ``WAL/oldestLSN``,
///   released while the reader was behind, or lost to damage recovery reported); iterate again
///   from `missing.upperBound + 1` to go on past it;
/// - the WAL's ``WAL/failure`` (``WALError/Kind/flushFailed``) once a flush failed;
/// - ``WALError/Kind/closed`` once the WAL is closed;
/// - `CancellationError` when the task is cancelled.
///
/// It ends normally only after `limit` records, when a limit was given.
public struct RecordTail: AsyncSequence, Sendable {
    public typealias Element = Record
    let wal: WAL
    let start: LSN
    let limit: Int?

    public func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(cursor: RecordCursor(wal: wal, start: start), remaining: limit)
    }

    public struct AsyncIterator: AsyncIteratorProtocol {
        let cursor: RecordCursor
        var remaining: Int?

        public mutating func next() async throws -> Record? {
            if let left = remaining {
                guard left > 0 else { return nil }
                remaining = left - 1
            }
            let wal = cursor.wal
            while true {
                try Task.checkCancellation()
                switch cursor.next() {
                case .record(let record): return record
                case .gap(let missing): throw wal.gapError(missing)
                case .failed(let error): throw error
                case .end: break
                }
                // Everything visible has been read: say why nothing more will come, or wait.
                if let failure = wal.failure { throw failure }
                try wal.ensureOpen(operation: "tail")
                if await !wal.committer.waitVisible(after: cursor.seenVisible) {
                    try Task.checkCancellation()
                    if let failure = wal.failure { throw failure }
                    // The committer stopped: the WAL is closing. Drain what became visible.
                    if case .record(let record) = cursor.next() { return record }
                    throw wal.closedError(operation: "tail")
                }
            }
        }
    }
}

extension WAL {
    /// The records visible now from `lsn` on (use `checkpointLSN + 1` to resume after the
    /// checkpoint), at most `limit` of them. Throws ``WALError/Kind/gap(missing:)`` when `lsn`
    /// itself is not in the log (below ``oldestLSN``, or lost to damage), and `closed` after
    /// ``close()``. See ``RecordSequence`` for where it ends.
    public func records(from lsn: LSN, limit: Int? = nil) throws -> RecordSequence {
        try ensureOpen(operation: "read")
        let start = max(lsn, 1)
        // Look at the start now, so a missing one throws here rather than ending the sequence.
        switch RecordCursor(wal: self, start: start).next() {
        case .gap(let missing): throw gapError(missing)
        case .failed(let error): throw error
        case .record, .end: break
        }
        return RecordSequence(wal: self, start: start, limit: limit)
    }

    /// Suspends until a record after `lsn` is visible to readers, without reading it (a
    /// consumer that reads in batches waits with this, then reads with ``records(from:limit:)``
    /// off the cooperative pool). Returns false when the WAL closed or failed, or the task was
    /// cancelled.
    public func waitForRecord(after lsn: LSN) async -> Bool {
        await committer.waitVisible(after: lsn)
    }

    /// The records from `lsn` on, following the log: see ``RecordTail`` for what it throws.
    /// At most `limit` records, when given.
    public func tail(from lsn: LSN, limit: Int? = nil) -> RecordTail {
        RecordTail(wal: self, start: max(lsn, 1), limit: limit)
    }

    /// Every record visible now from `lsn` on, stepping over missing LSNs and listing them
    /// (for tools, replays that report damage, and tests that must see all that survived).
    /// Throws when a live segment cannot be read, and `closed` after ``close()``.
    public func readVisible(from lsn: LSN, limit: Int? = nil) throws -> (records: [Record], gaps: [ClosedRange<LSN>]) {
        try ensureOpen(operation: "read")
        let cursor = RecordCursor(wal: self, start: max(lsn, 1))
        var records: [Record] = []
        var gaps: [ClosedRange<LSN>] = []
        while limit.map({ records.count < $0 }) ?? true {
            switch cursor.next() {
            case .record(let record): records.append(record)
            case .gap(let missing): gaps.append(missing)
            case .failed(let error): throw error
            case .end: return (records, gaps)
            }
        }
        return (records, gaps)
    }

    func gapError(_ missing: ClosedRange<LSN>) -> WALError {
        let oldest = oldestLSN
        let why = missing.lowerBound < oldest
            ? "were checkpointed and their segments released or recycled (the oldest record still held is \(oldest)): a reader that must see every record has to keep the checkpoint behind it"
            : "are not in the log: recovery found them lost to damage (see the recovery report and quarantine/)"
        return WALError(.gap(missing: missing), path: directory, operation: "read",
                        hint: "LSNs \(missing.lowerBound)...\(missing.upperBound) \(why). Read on from \(missing.upperBound + 1).")
    }
}

/// What a cursor found next.
enum CursorEvent {
    case record(Record)
    /// The LSNs the cursor wanted are not in the log; it moves past them.
    case gap(ClosedRange<LSN>)
    /// A live segment cannot be read.
    case failed(WALError)
    /// Nothing more is visible now.
    case end
}

/// Reads forward through the segments. Holds a read-only mapping of the segment it is in, so a
/// segment recycled or deleted underneath it stays mapped (and its records stop validating,
/// because a recycled segment gets a new epoch).
final class RecordCursor {
    let wal: WAL
    private var wanted: LSN
    private var segment: Segment?
    private var offset = Format.segmentHeaderBlock
    private var lastLSN: LSN = 0
    /// The visible LSN when the cursor last ran out of records.
    private(set) var seenVisible: LSN = 0
    /// Set when a live segment cannot be mapped (it is listed but will not open): the cursor
    /// reports it rather than spin. The error is logged.
    private var stuck: WALError?

    init(wal: WAL, start: LSN) {
        self.wal = wal
        self.wanted = start
    }

    func next() -> CursorEvent {
        while stuck == nil {
            // Visible position first, then the catalog: a segment is sealed in the catalog
            // before the visible position can move past it.
            let visible = wal.committer.visible
            seenVisible = visible.lsn
            guard visible.lsn >= wanted, visible.segment != 0 else { return .end }
            let segments = wal.catalog.withLock { $0.segments }
            if segment == nil {
                guard let info = startingSegment(in: segments, visible: visible) else {
                    // No live segment holds a visible record: a checkpoint released them all
                    // (the next segment is not visible yet).
                    let missing = wanted...visible.lsn
                    wanted = visible.lsn + 1
                    return .gap(missing)
                }
                guard open(info) else { continue }
            }
            let current = segment!
            let limit: Int
            if current.sequence == visible.segment {
                limit = visible.offset
            } else if let info = segments.first(where: { $0.sequence == current.sequence }) {
                limit = info.endOffset
            } else {
                // Checkpointed away while we read it: go on from the oldest live segment.
                segment = nil
                continue
            }
            // Damaged ranges recovery found are stepped over, never read: a page of one may be
            // unreadable, and touching it through the mapping would be a SIGBUS.
            let damaged = segments.first(where: { $0.sequence == current.sequence })?.damaged ?? []
            if let range = damaged.first(where: { $0.contains(offset) }) { offset = range.upperBound }
            let stop = min(limit, damaged.first(where: { $0.lowerBound >= offset })?.lowerBound ?? limit)
            var scanner = SegmentScanner(bytes: current.mapping.bytes, epoch: current.epoch,
                                         maxPayload: Format.largestPayload(segmentSize: current.size),
                                         start: offset, limit: stop, previousLSN: lastLSN)
            while let event = scanner.next() {
                guard case .record(let at, let header) = event else { continue }
                offset = scanner.offset
                lastLSN = header.lsn
                guard header.lsn >= wanted, header.lsn <= visible.lsn else { continue }
                if header.lsn > wanted {
                    // Never skip silently: report what is missing, then read on from here.
                    let missing = wanted...(header.lsn - 1)
                    wanted = header.lsn
                    offset = at
                    lastLSN = header.lsn - 1
                    return .gap(missing)
                }
                let payloadStart = at + Format.recordHeaderSize
                let payload = Array(current.mapping.slice(payloadStart, Int(header.length)))
                // Check after reading: the copy is what we return, so the copy is what we verify.
                let crc = RecordHeader.checksum(payloadCRC: CRC32C.checksum(payload), length: header.length, flags: header.flags,
                                                lsn: header.lsn, epoch: current.epoch)
                guard crc == header.crc else { continue }
                wanted = header.lsn + 1
                return .record(Record(lsn: header.lsn, payload: payload, segment: current.sequence, offset: at))
            }
            if stop < limit, let range = damaged.first(where: { $0.lowerBound == stop }) {
                // Resume after the damaged range, at the valid record recovery found there.
                offset = range.upperBound
                continue
            }
            if current.sequence == visible.segment {
                // Read to the visible end: LSNs up to the visible one that were not found are
                // missing (lost at the end of the log, under recovery's floor).
                guard wanted <= visible.lsn else { return .end }
                let missing = wanted...visible.lsn
                wanted = visible.lsn + 1
                return .gap(missing)
            }
            // Done with this segment: move to the next one by sequence.
            guard let following = segments.first(where: { $0.sequence > current.sequence }),
                  following.sequence <= visible.segment else { return .end }
            segment = nil
            guard open(following) else { continue }
        }
        return .failed(stuck!)
    }

    private func startingSegment(in segments: [SegmentInfo], visible: LogEnd) -> SegmentInfo? {
        let candidates = segments.filter { $0.sequence <= visible.segment }
        return candidates.last(where: { $0.firstLSN != 0 && $0.firstLSN <= wanted }) ?? candidates.first
    }

    /// Maps `info`'s file. Returns false (after dropping it from consideration) when the file
    /// is gone, which happens when a checkpoint recycled it a moment ago.
    private func open(_ info: SegmentInfo) -> Bool {
        do {
            segment = try Segment.openForReading(path: info.path, sequence: info.sequence, epoch: info.epoch, size: info.size,
                                                 readahead: wal.configuration.backend == .uring)
            offset = Format.segmentHeaderBlock
            lastLSN = 0
            return true
        } catch {
            segment = nil
            if wal.catalog.withLock({ $0.segments.contains { $0.sequence == info.sequence } }) {
                wal.configuration.logger.error("cannot map a live segment; the reader stops here", metadata: [
                    "path": "\(info.path)", "error": "\(error)"])
                stuck = error as? WALError ?? WALError(.io, path: info.path, operation: "read", hint: "\(error)")
            }
            return false
        }
    }
}
