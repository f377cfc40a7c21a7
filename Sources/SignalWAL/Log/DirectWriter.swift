#if canImport(Glibc)
import Glibc
#endif
import CShims
import Logging
import Synchronization

/// The write path of ``IOBackend/uring``: appenders copy records into a ``StagingRing``, and the
/// committer writes the staged bytes to their segment with O_DIRECT, then fdatasyncs it. The
/// page cache is not involved, so a flush writes what was appended and nothing more.
///
/// Stream positions (see ``StagingRing``) map to files through *placements*: each segment the
/// appenders have used starts at an aligned stream position (its file offset 0, the header
/// block). A flush writes `[alignDown(onDisk), alignUp(end))`: whole aligned blocks, so the last
/// partly filled block is written again, with more records, by the next flush. That rewrite is
/// safe because the staged block only ever grows: bytes past the last record are zeros (the
/// appender that ends a record in a block zeroes the rest of it) or a record still being copied,
/// which is not acknowledged and which recovery would treat as a torn tail.
///
/// Appenders never overwrite staged bytes that are not yet on disk: ``waitForRoom(end:_:)``
/// holds an appender while its record would wrap onto them.
final class DirectWriter: Sendable {
    struct Placement {
        let sequence: UInt64
        /// Opened with O_DIRECT where the filesystem allows it.
        let file: OpenFile
        /// Stream position of file offset 0.
        let base: UInt64
        let size: Int
    }
    struct State {
        /// Segments with staged bytes not yet on disk or not yet synced, oldest first.
        var placements: [Placement] = []
        /// Every staged byte below this stream position has been written to its file...
        var onDisk: UInt64
        /// ...and below this one, also made durable by fdatasync.
        var synced: UInt64
        /// The filesystem refused O_DIRECT once; later segments are opened buffered straight away.
        var directRefused = false
        /// The file offset and length alignment writes use: what the kernel reports O_DIRECT
        /// needs on this filesystem (512 on most disks), 4096 until a segment has been opened
        /// or when it does not say.
        var alignment = DirectWriter.block
    }

    let ring: StagingRing
    /// Segments start at stream positions aligned to this, the largest O_DIRECT alignment
    /// accepted, so any smaller alignment the filesystem reports also holds.
    static let block = 4096
    let directory: String
    let logger: Logger
    private let state: ConditionLock<State>
    /// `onDisk`, readable without the lock: appenders check for room on every record.
    private let onDiskMirror: Atomic<UInt64>

    init(directory: String, capacity: Int, start: UInt64, logger: Logger) throws {
        ring = try StagingRing(capacity: capacity, path: directory)
        self.directory = directory
        self.logger = logger
        state = ConditionLock(State(onDisk: start, synced: start))
        onDiskMirror = Atomic(start)
    }

    /// The staging capacity for a configuration: room for two of the largest records, and at
    /// least 16 MiB so that a large batch does not wait for room.
    static func capacity(maxRecordSize: Int) -> Int {
        let twoRecords = 2 * Format.recordSpan(payloadLength: maxRecordSize) + 2 * 4096
        return max(16 << 20, (twoRecords + 4095) / 4096 * 4096)
    }

    /// The O_DIRECT alignment the kernel reports for the file, or 4096 when it does not say.
    static func alignment(of file: OpenFile) -> Int {
        if let forced = getenv("SW_ALIGN") { return Int(atoi(forced)) }
        let reported = Int(sw_direct_io_alignment(file.fd))
        guard reported >= 512, reported <= 4096, reported & (reported - 1) == 0 else { return 4096 }
        return reported
    }

    static func alignDown(_ position: UInt64, _ alignment: Int = block) -> UInt64 {
        position / UInt64(alignment) * UInt64(alignment)
    }
    static func alignUp(_ position: UInt64, _ alignment: Int = block) -> UInt64 {
        (position + UInt64(alignment) - 1) / UInt64(alignment) * UInt64(alignment)
    }

    // MARK: Appender side (under the WAL's append lock)

    /// Makes `segment` the target of stream positions from `base` on.
    func place(_ segment: Segment, at base: UInt64) throws {
        place(segment, file: try openFile(for: segment), at: base)
    }

    /// Opens the descriptor flushes will write `segment` through: O_DIRECT where the filesystem
    /// allows it. Separate from ``place(_:file:at:)`` so a batch can open every file it needs
    /// before it writes anything.
    func openFile(for segment: Segment) throws -> OpenFile {
        let refused = state.withLock { $0.directRefused }
        var file: OpenFile
        if refused {
            file = try OpenFile.open(segment.path, writable: true)
        } else {
            do {
                file = try OpenFile.open(segment.path, writable: true, direct: true)
            } catch let error as WALError where error.errno == EINVAL {
                // The filesystem does not do O_DIRECT (some FUSE and older tmpfs): the same
                // writes through the page cache, then fdatasync, keep the same promise.
                logger.notice("the filesystem refuses O_DIRECT, so the uring backend writes through the page cache",
                              metadata: ["path": "\(segment.path)"])
                state.withLock { $0.directRefused = true }
                file = try OpenFile.open(segment.path, writable: true)
            }
        }
        return file
    }

    func place(_ segment: Segment, file: OpenFile, at base: UInt64) {
        precondition(base % UInt64(Self.block) == 0, "a segment must start at an aligned stream position")
        let alignment = Self.alignment(of: file)
        state.withLock { value in
            if !value.directRefused { value.alignment = alignment }
            precondition(value.placements.last.map { base >= $0.base + UInt64($0.size) || base >= value.onDisk } ?? true)
            value.placements.append(Placement(sequence: segment.sequence, file: file, base: base, size: segment.size))
        }
    }

    /// Whether staging up to stream position `end` would overwrite bytes not yet on disk.
    func hasRoom(upTo end: UInt64) -> Bool {
        fits(end, onDisk: onDiskMirror.load(ordering: .acquiring))
    }

    /// Staging up to `end` leaves every block from the one holding `onDisk` untouched.
    private func fits(_ end: UInt64, onDisk: UInt64) -> Bool {
        Self.alignUp(end) - Self.alignDown(onDisk) <= UInt64(ring.capacity)
    }

    /// Stages a segment header at `base`, the rest of its block zeros.
    func stageSegmentHeader(_ header: SegmentHeader, at base: UInt64) {
        let encoded = header.encoded()
        encoded.withUnsafeBytes { ring.store($0, at: base) }
        ring.zero(at: base + UInt64(encoded.count), count: Format.segmentHeaderBlock - encoded.count)
    }

    /// Stages one record at `position`: header, payload, zero padding to its span. Checks the
    /// header reads back as written.
    func stageRecord(_ header: RecordHeader, payload: UnsafeRawBufferPointer, span: Int, at position: UInt64) {
        withUnsafeTemporaryAllocation(byteCount: Format.recordHeaderSize, alignment: 8) { buffer in
            header.store(to: buffer)
            ring.store(UnsafeRawBufferPointer(buffer), at: position)
        }
        ring.store(payload, at: position + UInt64(Format.recordHeaderSize))
        let padding = span - Format.recordHeaderSize - payload.count
        if padding > 0 { ring.zero(at: position + UInt64(Format.recordHeaderSize + payload.count), count: padding) }
        assert(ring.copy(position, count: Format.recordHeaderSize).withUnsafeBytes { RecordHeader.load(from: $0) } == header,
               "a staged record header failed its own check right after being written")
    }

    /// Blocks until staging up to `end` is safe, calling `requestFlush` (which must not take
    /// the append lock) each time it has to wait. Returns a failure `requestFlush` reports.
    func waitForRoom(end: UInt64, _ requestFlush: () -> WALError?) throws {
        while !hasRoom(upTo: end) {
            if let failure = requestFlush() { throw failure }
            state.wait(until: { fits(end, onDisk: $0.onDisk) },
                       timeoutNanoseconds: 1_000_000) { _ in }
        }
    }

    // MARK: Committer side

    /// Writes every staged byte below `end` to its file and, when `sync`, makes it durable.
    /// Runs on the committer thread only. Throws the first failure; the caller makes it final.
    ///
    /// Plain pwrite and fdatasync on the O_DIRECT descriptor, not io_uring: submitting the same
    /// writes through io_uring, with a linked fdatasync or with RWF_DSYNC, was measured slower
    /// on every appender count (docs/DESIGN.md, "Flushing staged records").
    func flush(upTo end: UInt64, sync: Bool) throws {
        let (placements, onDisk, synced, alignment) = state.withLock { ($0.placements, $0.onDisk, $0.synced, $0.alignment) }
        let start = Self.alignDown(onDisk, alignment)
        let stop = Self.alignUp(end, alignment)
        let syncFrom = sync ? Self.alignDown(synced, alignment) : stop
        var syncedSequences: (UInt64, UInt64)? = nil
        for (index, placement) in placements.enumerated() {
            let limit = index + 1 < placements.count ? placements[index + 1].base : placement.base + UInt64(placement.size)
            let low = max(start, placement.base)
            let high = min(stop, limit)
            // A sealed segment whose last bytes this flush writes is synced even when the
            // policy does not sync (`.none`), as under the mmap backend, so no file the writer
            // has moved past is left unsynced.
            let sealedNow = index + 1 < placements.count && limit <= stop && high > low
            let needsSync = sync ? max(syncFrom, placement.base) < min(stop, limit) : sealedNow
            if high > low {
                precondition(high <= placement.base + UInt64(placement.size), "staged bytes beyond the end of a segment")
                let (head, tail) = ring.pieces(low, high)
                let offset = Int(low - placement.base)
                try placement.file.write(head, at: offset)
                if let tail { try placement.file.write(tail, at: offset + head.count) }
            }
            if needsSync {
                try placement.file.dataSync()
                syncedSequences = (syncedSequences?.0 ?? placement.sequence, placement.sequence)
            }
        }

        state.withLock { value in
            value.onDisk = max(value.onDisk, end)
            onDiskMirror.store(value.onDisk, ordering: .releasing)
            if sync { value.synced = max(value.synced, end) }
            // Placements wholly on disk and synced are done with (their files close when the
            // last reference goes); the newest stays for the next flush.
            let writtenOut = Self.alignDown(value.onDisk, alignment)
            let settled = Self.alignDown(min(value.onDisk, value.synced), alignment)
            while value.placements.count > 1, value.placements[1].base <= writtenOut {
                let oldest = value.placements[0].sequence
                let syncedNow = syncedSequences.map { oldest >= $0.0 && oldest <= $0.1 } ?? false
                guard syncedNow || value.placements[1].base <= settled else { break }
                value.placements.removeFirst()
            }
        }
        state.broadcast()
    }
}
