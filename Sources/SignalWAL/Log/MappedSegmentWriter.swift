/// The ``IOBackend/mmap`` writer: records are stored straight into the active segment's shared
/// writable mapping, so they are in the page cache once copied, and a flush is an fdatasync of
/// each file written since the last one.
///
/// The committer learns which files those are from this writer, under the append lock, before
/// any later LSN exists: the active file when a segment begins, the sealed file when it is
/// sealed. (Learning them from the positions appenders report after the lock lost a sealed
/// segment's last records when a batch crossed segments: they were acknowledged and never
/// synced.)
final class MappedSegmentWriter: SegmentWriter {
    private(set) var active: Segment?
    private(set) var offset: Int
    var streamPosition: UInt64? { nil }
    private let committer: GroupCommitter
    private let allocator: SegmentAllocator
    /// The offset at which the next window request goes to the allocator thread, and how far
    /// page-table entries have been dropped behind the cursor.
    private var windowMark = 0
    private var releasedUpTo = Format.segmentHeaderBlock

    init(active: Segment?, offset: Int, committer: GroupCommitter, allocator: SegmentAllocator) {
        self.active = active
        self.offset = offset
        self.committer = committer
        self.allocator = allocator
        if let active { committer.noteActive(active.file) }
    }

    func prepare(_ segment: Segment) throws -> SpareSegment { SpareSegment(segment: segment, directFile: nil) }

    func seal() {
        guard let sealed = active else { return }
        // The committer keeps the file (not the segment: holding the writable mapping after the
        // writer moved on would make every write-back of a mapped page a TLB shoot-down) until
        // it has synced it. Readers map their own.
        committer.noteSealed(sealed.file)
        active = nil
    }

    func begin(_ spare: SpareSegment, firstLSN: LSN, committed: LogEnd) throws {
        precondition(active == nil, "a segment began before the previous one was sealed")
        let segment = spare.segment
        // The header shares the file, and so every flush that covers the first record (I2).
        segment.writeHeader(firstLSN: firstLSN)
        committer.noteActive(segment.file)
        active = segment
        offset = Format.segmentHeaderBlock
        windowMark = 0
        releasedUpTo = Format.segmentHeaderBlock
    }

    func append(_ header: RecordHeader, payload: UnsafeRawBufferPointer, committed: LogEnd) throws {
        let segment = active!
        let span = Format.recordSpan(payloadLength: payload.count)
        let mapping = segment.mapping
        precondition(offset >= Format.segmentHeaderBlock && offset % Format.recordAlignment == 0 && offset + span <= segment.size,
                     "record placement out of bounds")
        header.store(to: mapping.mutableSlice(offset, Format.recordHeaderSize))
        mapping.store(payload, at: offset + Format.recordHeaderSize)
        let padding = span - Format.recordHeaderSize - payload.count
        if padding > 0 { mapping.zero(offset + Format.recordHeaderSize + payload.count, padding) }
        // Check after writing (debug builds): the bytes must read back as this very record
        // through the scanner recovery and readers use.
        assert(SegmentScanner(bytes: mapping.bytes, epoch: segment.epoch, maxPayload: Format.largestPayload(segmentSize: segment.size),
                              limit: offset + span).validRecord(at: offset, after: header.lsn - 1) == header,
               "a record failed its own check right after being written")
        offset += span
    }

    func end(lsn: LSN, bytes: UInt64) -> LogEnd {
        LogEnd(lsn: lsn, segment: active?.sequence ?? 0, offset: offset, bytes: bytes)
    }

    /// Every `window` bytes of progress: fault in the next stretch ahead (for the policies that
    /// pre-fault) and drop page-table entries more than one window behind, through the
    /// allocator thread, so resident memory stays near two windows, not a whole segment.
    func finishBatch() {
        guard let segment = active, offset >= windowMark else { return }
        let window = 2 << 20
        let page = 4096
        let behind = max(Format.segmentHeaderBlock, (offset - window) / page * page)
        let release = releasedUpTo < behind ? releasedUpTo..<behind : nil
        releasedUpTo = max(releasedUpTo, behind)
        windowMark = offset + window
        allocator.requestWindow(segment, populate: offset..<min(segment.size, offset + SegmentAllocator.populateAhead),
                                release: release)
    }

    func close() {
        active?.close()
        active = nil
    }
}
