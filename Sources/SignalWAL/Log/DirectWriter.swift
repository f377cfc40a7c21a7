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
/// The *device* assumption behind that rewrite (invariant I4 in docs/DESIGN.md): a write of
/// one aligned unit leaves it old or new, never a mix. So the unit is the larger of the
/// O_DIRECT alignment and the device's *physical* block size (`STATX_DIOALIGN` reports the
/// logical one, 512 on 512e drives, whose 4 KiB physical sectors are rewritten by the drive
/// itself), and never more than 4096, the block ``fits(_:onDisk:)`` keeps appenders out of.
///
/// Appenders never overwrite staged bytes that are not yet on disk: ``waitForRoom(end:_:)``
/// holds an appender while its record would wrap onto them. A flush never writes past
/// `stagedTo`, the end of the last whole header or record staged.
final class DirectWriter: Sendable {
    struct Placement {
        let sequence: UInt64
        /// Opened with O_DIRECT where the filesystem allows it.
        let file: OpenFile
        /// Stream position of file offset 0.
        let base: UInt64
        let size: Int
        /// Set by ``seal(_:at:)``: the stream position just past the segment's last record.
        var sealedAt: UInt64?
    }
    struct State {
        /// Segments with staged bytes not yet on disk, or sealed and not yet synced, oldest first.
        var placements: [Placement] = []
        /// Every staged byte below this stream position has been written to its file...
        var onDisk: UInt64
        /// ...and below this one, also made durable by fdatasync.
        var synced: UInt64
        /// The filesystem refused O_DIRECT once; later segments are opened buffered straight away.
        var directRefused = false
        /// The file offset and length unit writes use (see the type's comment); 4096 until a
        /// segment has been opened.
        var alignment = DirectWriter.block
    }

    let ring: StagingRing
    /// Segments start at stream positions aligned to this, the largest write unit used, so
    /// any smaller unit also holds.
    static let block = 4096
    let directory: String
    let logger: Logger
    private let state: ConditionLock<State>
    /// `onDisk`, readable without the lock: appenders check for room on every record.
    private let onDiskMirror: Atomic<UInt64>
    /// The end of the last whole header or record staged (set under the append lock, after the
    /// bytes are in the ring). A flush asserts it never writes beyond it.
    private let stagedMirror: Atomic<UInt64>

    /// Async appenders waiting for room, keyed by the aligned `onDisk` position they need
    /// (``roomThreshold(upTo:)``); advanced after every flush, terminated by the committer on
    /// failure and close.
    let stagingWaiters = ProgressWaitlist()

    /// See ``Configuration/directWriteUnit`` (benchmarks only).
    let unitOverride: Int?

    init(directory: String, capacity: Int, start: UInt64, logger: Logger, unitOverride: Int? = nil) throws {
        ring = try StagingRing(capacity: capacity, path: directory)
        self.unitOverride = unitOverride
        self.directory = directory
        self.logger = logger
        state = ConditionLock(State(onDisk: start, synced: start))
        onDiskMirror = Atomic(start)
        stagedMirror = Atomic(start)
    }


    /// The unit flushes write `file` in: the O_DIRECT alignment the kernel reports, raised to
    /// the device's physical block size, 512 to 4096; 4096 when neither is known.
    static func alignment(of file: OpenFile) -> Int {
        let reported = Int(sw_direct_io_alignment(file.fd))
        let physical = physicalBlockSize(of: file) ?? 4096
        let unit = max(reported, physical)
        guard unit >= 512, unit <= 4096, unit & (unit - 1) == 0 else { return 4096 }
        return unit
    }

    /// The physical block size of the device holding `file`, from sysfs (a partition's is its
    /// disk's), or nil when the device has none (tmpfs, overlay) or it cannot be read.
    static func physicalBlockSize(of file: OpenFile) -> Int? {
        var st = stat()
        guard (try? Syscall.run(.fstat, path: file.path, { Syscall.errnoResult(fstat(file.fd, &st)) })) != nil else { return nil }
        let device = UInt64(st.st_dev)
        let major = ((device >> 8) & 0xFFF) | ((device >> 32) & ~0xFFF)
        let minor = (device & 0xFF) | ((device >> 12) & ~0xFF)
        guard major != 0 else { return nil }
        for path in ["/sys/dev/block/\(major):\(minor)/queue/physical_block_size",
                     "/sys/dev/block/\(major):\(minor)/../queue/physical_block_size"] {
            guard let handle = try? OpenFile.open(path, writable: false) else { continue }
            var bytes = [UInt8](repeating: 0, count: 32)
            let count = (try? bytes.withUnsafeMutableBytes { try handle.read(into: $0, at: 0) }) ?? 0
            handle.closeQuietly()
            let digits = bytes[0..<count].prefix { $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }
            if let value = Int(String(decoding: digits, as: UTF8.self)), value > 0 { return value }
        }
        return nil
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
        let alignment = unitOverride ?? Self.alignment(of: file)
        state.withLock { value in
            if !value.directRefused { value.alignment = max(alignment, 512) }
            precondition(value.placements.last.map { $0.sealedAt.map { base >= $0 } ?? false } ?? true,
                         "a segment was placed before the previous one was sealed")
            value.placements.append(Placement(sequence: segment.sequence, file: file, base: base, size: segment.size))
        }
    }

    /// Marks segment `sequence` sealed: its last record ends at stream position `end`. The next
    /// flush that reaches `end` writes and syncs it (whatever the policy), and then lets it go.
    func seal(_ sequence: UInt64, at end: UInt64) {
        state.withLock { value in
            if let index = value.placements.lastIndex(where: { $0.sequence == sequence }) {
                value.placements[index].sealedAt = end
            }
        }
    }

    /// Moves the staged watermark to `end`: every byte below it belongs to a whole staged header
    /// or record.
    func markStaged(through end: UInt64) {
        stagedMirror.store(end, ordering: .releasing)
    }

    var stagedTo: UInt64 { stagedMirror.load(ordering: .acquiring) }

    /// Whether staging up to stream position `end` would overwrite bytes not yet on disk.
    func hasRoom(upTo end: UInt64) -> Bool {
        fits(end, onDisk: onDiskMirror.load(ordering: .acquiring))
    }

    /// The aligned `onDisk` position at which staging up to `end` has room (what an async
    /// appender waits for in ``stagingWaiters``).
    func roomThreshold(upTo end: UInt64) -> UInt64 {
        let top = Self.alignUp(end)
        return top > UInt64(ring.capacity) ? top - UInt64(ring.capacity) : 0
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
    /// A sealed segment whose last record is below `end` is synced either way (under `.none`
    /// too), so no file the writer has moved past is left unsynced, and is then let go.
    /// Runs on the committer thread only. Throws the first failure; the caller makes it final.
    ///
    /// Plain pwrite and fdatasync on the O_DIRECT descriptor, not io_uring: submitting the same
    /// writes through io_uring, with a linked fdatasync or with RWF_DSYNC, was measured slower
    /// on every appender count (docs/DESIGN.md, "Flushing staged records").
    func flush(upTo end: UInt64, sync: Bool) throws {
        precondition(end <= stagedTo, "a flush asked for bytes that were never staged")
        let (placements, onDisk, synced, alignment) = state.withLock { ($0.placements, $0.onDisk, $0.synced, $0.alignment) }
        let start = Self.alignDown(onDisk, alignment)
        let stop = Self.alignUp(end, alignment)
        let syncFrom = sync ? Self.alignDown(synced, alignment) : stop
        var finished: Set<UInt64> = []
        for (index, placement) in placements.enumerated() {
            let limit = index + 1 < placements.count ? placements[index + 1].base : placement.base + UInt64(placement.size)
            let low = max(start, placement.base)
            let high = min(stop, limit)
            if high > low {
                precondition(high <= placement.base + UInt64(placement.size), "staged bytes beyond the end of a segment")
                let (head, tail) = ring.pieces(low, high)
                let offset = Int(low - placement.base)
                try placement.file.write(head, at: offset)
                if let tail { try placement.file.write(tail, at: offset + head.count) }
            }
            let sealedAndCovered = placement.sealedAt.map { $0 <= end } ?? false
            let needsSync = (sync && max(syncFrom, placement.base) < min(stop, limit)) || sealedAndCovered
            if needsSync { try placement.file.dataSync() }
            if sealedAndCovered { finished.insert(placement.sequence) }
        }

        state.withLock { value in
            value.onDisk = max(value.onDisk, end)
            onDiskMirror.store(value.onDisk, ordering: .releasing)
            if sync { value.synced = max(value.synced, end) }
            // Sealed segments written and synced through their end are done with (their files
            // close when the last reference goes).
            while let oldest = value.placements.first, finished.contains(oldest.sequence) {
                value.placements.removeFirst()
            }
        }
        state.broadcast()
        stagingWaiters.advance(to: Self.alignDown(onDiskMirror.load(ordering: .acquiring)))
    }

    /// Closes every placement's descriptor (at close, after the final flush).
    func closeFiles() {
        let placements = state.withLock { value -> [Placement] in
            defer { value.placements = [] }
            return value.placements
        }
        for placement in placements { placement.file.closeQuietly() }
    }

    /// Placements held (for tests: a bounded number, however many segments were written).
    var placementCount: Int { state.withLock { $0.placements.count } }
}
