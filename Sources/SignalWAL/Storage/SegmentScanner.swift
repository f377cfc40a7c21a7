/// Walks the records of one segment, validating each, and says exactly where the valid records,
/// the damaged bytes and the end are. Recovery and readers share it, so both see a segment the
/// same way: the same corruption always gives the same outcome.
///
/// A slot holds a valid record when its epoch is the segment's, its length fits, its LSN is
/// above the previous record's, and its CRC matches. At a slot that is not valid, the scanner
/// looks ahead (8 bytes at a time) for the next valid record:
/// - found: the bytes between are ``Event/damaged(offset:length:resumeOffset:allZero:)``;
/// - not found, and the slot is all zero or carries another epoch (stale bytes from an earlier
///   life of a reused file): ``Event/end(offset:torn:)`` with `torn == false`, a clean end;
/// - not found, and the slot carries this segment's epoch (or a zero epoch with other non-zero
///   fields, a header cut short): `torn == true`, a record that was being written when the
///   process or machine stopped (or a damaged last record).
struct SegmentScanner {
    enum Event: Equatable {
        case record(offset: Int, header: RecordHeader)
        case damaged(offset: Int, length: Int, resumeOffset: Int, allZero: Bool)
        case end(offset: Int, torn: Bool)
    }

    let bytes: UnsafeRawBufferPointer
    let epoch: UInt64
    let maxPayload: Int
    /// Records must end at or before this offset (the segment size, or what is durable).
    let limit: Int
    /// When false, a damaged slot ends the scan instead of looking ahead (readers of the active
    /// segment stop at the durable end and never need to).
    let resynchronize: Bool
    /// The segment header's first LSN (0 when unknown), for the plausibility filter.
    let firstLSN: UInt64
    /// A floor the LSNs jump to without loss (``CheckpointRecord/floorGapUnissued``), or 0.
    let unissuedFloor: UInt64
    private(set) var offset: Int
    private(set) var lastLSN: UInt64
    /// Where and at which LSN the last record of this segment was found, for the filter.
    private var anchor: (offset: Int, lsn: UInt64)?
    private var finished = false
    /// CRC bytes one resynchronisation may spend, as a multiple of the bytes it may search:
    /// without a cap, a crafted segment whose every word carries the epoch costs a CRC of up
    /// to the largest payload at every 8-byte step (hours for 64 MiB).
    static let resyncBudgetFactor = 8

    init(bytes: UnsafeRawBufferPointer, epoch: UInt64, maxPayload: Int, start: Int = Format.segmentHeaderBlock,
         limit: Int? = nil, previousLSN: UInt64 = 0, resynchronize: Bool = true, firstLSN: UInt64 = 0, unissuedFloor: UInt64 = 0) {
        self.unissuedFloor = unissuedFloor
        self.bytes = bytes
        self.epoch = epoch
        self.maxPayload = maxPayload
        self.limit = min(limit ?? bytes.count, bytes.count)
        self.offset = start
        self.lastLSN = previousLSN
        self.resynchronize = resynchronize
        self.firstLSN = firstLSN
        if firstLSN > 0 { anchor = (Format.segmentHeaderBlock, firstLSN - 1) }
    }

    /// Whether a record claiming `lsn` at `position` is possible at all: every record takes at
    /// least 24 bytes, so between the last record found (or the segment's first slot) and
    /// `position` at most that many LSNs can have gone by.
    private func plausible(_ header: RecordHeader, at position: Int) -> Bool {
        guard header.lsn > lastLSN, Int(header.length) <= limit - position - Format.recordHeaderSize else { return false }
        guard let anchor else { return true }
        let slots = UInt64((position - anchor.offset) / Format.recordHeaderSize + 1)
        // Past an unissued floor (a restore's), LSNs went on from the floor, not the anchor.
        if unissuedFloor > 0, anchor.lsn < unissuedFloor, header.lsn >= unissuedFloor {
            return header.lsn - (unissuedFloor - 1) <= slots
        }
        return header.lsn > anchor.lsn && header.lsn - anchor.lsn <= slots
    }

    /// Whether the slot at `at` holds a valid record following `after`.
    func validRecord(at position: Int, after previous: UInt64) -> RecordHeader? {
        guard position + Format.recordHeaderSize <= limit else { return nil }
        let header = RecordHeader.load(from: UnsafeRawBufferPointer(rebasing: bytes[position..<position + Format.recordHeaderSize]))
        guard header.epoch == epoch, header.lsn > previous, Int(header.length) <= maxPayload,
              position + Format.recordSpan(payloadLength: Int(header.length)) <= limit else { return nil }
        let payloadStart = position + Format.recordHeaderSize
        let payloadCRC = CRC32C.checksum(UnsafeRawBufferPointer(rebasing: bytes[payloadStart..<payloadStart + Int(header.length)]))
        let expected = RecordHeader.checksum(payloadCRC: payloadCRC, length: header.length, flags: header.flags, lsn: header.lsn, epoch: header.epoch)
        return expected == header.crc ? header : nil
    }

    /// True when `found` is `epoch` with its last bytes (on disk) not yet written: some prefix
    /// of the little-endian bytes matches and the rest is zero. A header torn inside or before
    /// its epoch field looks like this in a zero-filled segment.
    static func isCutShort(_ found: UInt64, of epoch: UInt64) -> Bool {
        var matched = 0
        while matched < 8 && (found >> (8 * matched)) & 0xFF == (epoch >> (8 * matched)) & 0xFF { matched += 1 }
        return matched == 8 || found >> (8 * matched) == 0
    }

    mutating func next() -> Event? {
        guard !finished else { return nil }
        if let header = validRecord(at: offset, after: lastLSN) {
            let event = Event.record(offset: offset, header: header)
            anchor = (offset, header.lsn)
            offset += Format.recordSpan(payloadLength: Int(header.length))
            lastLSN = header.lsn
            return event
        }
        let start = offset
        if resynchronize {
            var probe = start + Format.recordAlignment
            var budget = Self.resyncBudgetFactor * max(0, limit - start)
            while probe + Format.recordHeaderSize <= limit, budget > 0 {
                // Cheap filters first: only slots carrying this epoch, with an LSN and length
                // that could be there, are worth a CRC.
                if UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: probe + 16, as: UInt64.self)) == epoch,
                   case let candidate = RecordHeader.load(from: UnsafeRawBufferPointer(rebasing: bytes[probe..<probe + Format.recordHeaderSize])),
                   plausible(candidate, at: probe),
                   { budget -= Int(candidate.length) + Format.recordHeaderSize; return true }(),
                   validRecord(at: probe, after: lastLSN) != nil {
                    offset = probe
                    let gap = UnsafeRawBufferPointer(rebasing: bytes[start..<probe])
                    return .damaged(offset: start, length: probe - start, resumeOffset: probe,
                                    allZero: gap.allSatisfy { $0 == 0 })
                }
                probe += Format.recordAlignment
            }
        }
        finished = true
        guard start + Format.recordHeaderSize <= limit else { return .end(offset: start, torn: false) }
        let header = RecordHeader.load(from: UnsafeRawBufferPointer(rebasing: bytes[start..<start + Format.recordHeaderSize]))
        // A header cut short before its epoch field was written still has a zero epoch; a
        // stale record from an earlier life of the file carries a different, non-zero one.
        return .end(offset: start, torn: !header.isZero && Self.isCutShort(header.epoch, of: epoch))
    }
}
