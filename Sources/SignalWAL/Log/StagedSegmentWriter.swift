/// The ``IOBackend/uring`` writer: records are staged in the ``DirectWriter``'s ring and the
/// committer writes them to their segment with O_DIRECT.
///
/// Each segment is *placed* at an aligned stream position (its file offset 0). Its header is
/// staged there by ``begin(_:firstLSN:committed:)``, before its first record, and the
/// ``DirectWriter``'s `stagedTo` watermark only ever moves over whole staged headers and
/// records, so a flush can never write a range nothing was staged in. (When the header was
/// staged after a wait for room that had already claimed its block, a flush wrote stale ring
/// bytes over the new segment's header, and the next open quarantined the segment.)
final class StagedSegmentWriter: SegmentWriter {
    private(set) var active: Segment?
    private(set) var offset: Int
    var streamPosition: UInt64? { streamBase + UInt64(offset) }
    private let direct: DirectWriter
    private let committer: GroupCommitter
    /// The stream position of the active segment's offset 0.
    private var streamBase: UInt64
    /// How far the ring is known to be zero past the last record: the rest of the block each
    /// record ends in is zeroed once, so a rewrite of that block never carries stale bytes.
    private var zeroedTo: UInt64

    init(active: Segment?, offset: Int, direct: DirectWriter, committer: GroupCommitter) {
        self.active = active
        self.offset = offset
        self.direct = direct
        self.committer = committer
        streamBase = 0
        zeroedTo = DirectWriter.alignUp(UInt64(offset) + 1)
    }

    func prepare(_ segment: Segment) throws -> SpareSegment {
        SpareSegment(segment: segment, directFile: try direct.openFile(for: segment))
    }

    func seal() {
        guard let sealed = active else { return }
        direct.seal(sealed.sequence, at: streamBase + UInt64(offset))
        active = nil
    }

    func begin(_ spare: SpareSegment, firstLSN: LSN, committed: LogEnd) throws {
        precondition(active == nil, "a segment began before the previous one was sealed")
        let segment = spare.segment
        // The padding before an aligned start is zeros already (see `zeroedTo`).
        let base = DirectWriter.alignUp(streamBase + UInt64(offset))
        try makeRoom(upTo: base + UInt64(Format.segmentHeaderBlock), committed: committed)
        direct.place(segment, file: spare.directFile!, at: base)
        direct.stageSegmentHeader(SegmentHeader(sequence: segment.sequence, firstLSN: firstLSN, segmentSize: UInt64(segment.size),
                                                epoch: segment.epoch, flags: segment.flags), at: base)
        streamBase = base
        offset = Format.segmentHeaderBlock
        zeroedTo = max(zeroedTo, base + UInt64(Format.segmentHeaderBlock))
        active = segment
        direct.markStaged(through: base + UInt64(Format.segmentHeaderBlock))
    }

    func append(_ header: RecordHeader, payload: UnsafeRawBufferPointer, committed: LogEnd) throws {
        let segment = active!
        let span = Format.recordSpan(payloadLength: payload.count)
        precondition(offset >= Format.segmentHeaderBlock && offset % Format.recordAlignment == 0 && offset + span <= segment.size,
                     "record placement out of bounds")
        let position = streamBase + UInt64(offset)
        let end = position + UInt64(span)
        try makeRoom(upTo: end, committed: committed)
        direct.stageRecord(header, payload: payload, span: span, at: position)
        let blockEnd = DirectWriter.alignUp(end)
        if blockEnd > zeroedTo {
            direct.ring.zero(at: end, count: Int(blockEnd - end))
            zeroedTo = blockEnd
        }
        offset += span
        direct.markStaged(through: end)
    }

    /// Waits until staging up to `end` overwrites nothing that is not on disk yet. Before it
    /// waits it lets the committer flush everything staged so far, whole records only, and
    /// publish `committed`: the bytes of the batch being copied reach the disk but not the
    /// durable (or visible) LSN.
    private func makeRoom(upTo end: UInt64, committed: LogEnd) throws {
        guard !direct.hasRoom(upTo: end) else { return }
        committer.noteWritten(committed, stagedTo: direct.stagedTo)
        try direct.waitForRoom(end: end) { committer.requestFlush() }
    }

    func end(lsn: LSN, bytes: UInt64) -> LogEnd {
        LogEnd(lsn: lsn, segment: active?.sequence ?? 0, offset: offset, bytes: bytes, stream: streamBase + UInt64(offset))
    }

    func finishBatch() {}

    func close() {
        active?.close()
        active = nil
    }
}
