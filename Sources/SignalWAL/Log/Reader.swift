/// One record read back from the log.
public struct Record: Sendable, Equatable {
    public let lsn: LSN
    public let payload: [UInt8]
    /// The segment sequence and byte offset the record was read from.
    public let segment: UInt64
    public let offset: Int
}

/// The records of a ``WAL`` from a starting LSN, as a `Sequence` and as an `AsyncSequence`.
///
/// Either way, only records readers may see (durable ones; under `.none`, copied ones) are
/// returned, in LSN order, each checked against its CRC after it is copied out. Records lost to
/// damage that recovery reported are skipped.
///
/// - The synchronous iterator never blocks: it ends when it reaches the last visible record.
/// - The asynchronous iterator ends there too, unless `follow` is true: then it waits for new
///   records as they become visible, until the WAL closes or the task is cancelled.
public struct RecordSequence: Sequence, AsyncSequence, Sendable {
    public typealias Element = Record
    let wal: WAL
    let start: LSN
    let follow: Bool

    public func makeIterator() -> Iterator { Iterator(cursor: RecordCursor(wal: wal, start: start)) }
    public func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(cursor: RecordCursor(wal: wal, start: start), follow: follow)
    }

    public struct Iterator: IteratorProtocol {
        let cursor: RecordCursor
        public mutating func next() -> Record? { cursor.next() }
    }

    public struct AsyncIterator: AsyncIteratorProtocol {
        let cursor: RecordCursor
        let follow: Bool
        public mutating func next() async throws -> Record? {
            while true {
                if let record = cursor.next() { return record }
                guard follow, !Task.isCancelled else { return nil }
                guard await cursor.wal.committer.waitVisible(after: cursor.seenVisible) else { return nil }
            }
        }
    }
}

extension WAL {
    /// The records from `lsn` on (use `checkpointLSN + 1` to resume after the checkpoint).
    /// With `follow`, iterating with `for try await` keeps waiting for new records.
    public func records(from lsn: LSN, follow: Bool = false) -> RecordSequence {
        RecordSequence(wal: self, start: max(lsn, 1), follow: follow)
    }
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
    /// ends rather than spin. The error is logged.
    private var stuck = false

    init(wal: WAL, start: LSN) {
        self.wal = wal
        self.wanted = start
    }

    func next() -> Record? {
        while !stuck {
            // Visible position first, then the catalog: a segment is sealed in the catalog
            // before the visible position can move past it.
            let visible = wal.committer.visible
            seenVisible = visible.lsn
            guard visible.lsn >= wanted, visible.segment != 0 else { return nil }
            let segments = wal.catalog.withLock { $0.segments }
            if segment == nil {
                guard let info = startingSegment(in: segments, visible: visible) else { return nil }
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
                let payloadStart = at + Format.recordHeaderSize
                let payload = Array(current.mapping.slice(payloadStart, Int(header.length)))
                // Check after reading: the copy is what we return, so the copy is what we verify.
                let crc = RecordHeader.checksum(payloadCRC: CRC32C.checksum(payload), length: header.length, flags: header.flags,
                                                lsn: header.lsn, epoch: current.epoch)
                guard crc == header.crc else { continue }
                wanted = header.lsn + 1
                return Record(lsn: header.lsn, payload: payload, segment: current.sequence, offset: at)
            }
            if stop < limit, let range = damaged.first(where: { $0.lowerBound == stop }) {
                // Resume after the damaged range, at the valid record recovery found there.
                offset = range.upperBound
                continue
            }
            if current.sequence == visible.segment { return nil }
            // Done with this segment: move to the next one by sequence.
            guard let following = segments.first(where: { $0.sequence > current.sequence }),
                  following.sequence <= visible.segment else { return nil }
            segment = nil
            guard open(following) else { continue }
        }
        return nil
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
                stuck = true
            }
            return false
        }
    }
}
