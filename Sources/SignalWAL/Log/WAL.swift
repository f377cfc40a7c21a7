import Logging
import Synchronization

/// A write-ahead log in one directory of fixed-size, preallocated, memory-mapped segment files.
///
/// ```swift
/// let wal = try WAL.open(directory: ".wal/acceptor")
/// let lsn = try wal.append(Array("hello".utf8))     // returns once durable (group commit)
/// for record in wal.records(from: wal.checkpointLSN + 1) { handle(record) }
/// try wal.checkpoint(upTo: lsn)                       // consumers are done up to here
/// try wal.close()
/// ```
///
/// Appends are safe from any number of threads and tasks. The synchronous `append` blocks the
/// calling thread until the record is durable under ``Configuration/durability``; the `async`
/// form suspends instead. Readers only ever see records that are durable (under `.none`, that
/// have been copied).
public final class WAL: Sendable {
    struct AppendState {
        var active: Segment?
        var offset: Int
        /// The offset at which the next window request goes to the allocator thread, and how far
        /// page-table entries have been dropped behind the cursor.
        var windowMark = 0
        var releasedUpTo = Format.segmentHeaderBlock
        var nextLSN: LSN
        var closed = false
        /// Record bytes appended since open (see ``Configuration/maxBatchBytes``).
        var bytesAppended: UInt64 = 0
        /// io_uring backend: the staging stream position of the active segment's offset 0, and
        /// how far the staging buffer is known to be zero past the last record.
        var streamBase: UInt64 = 0
        var zeroedTo: UInt64 = 0
    }
    struct Catalog {
        /// Segments holding live records, oldest first; the last is the active segment.
        var segments: [SegmentInfo]
        var checkpoint: LSN
    }

    /// The directory this WAL lives in.
    public let directory: String
    public let configuration: Configuration
    /// What recovery found when this WAL opened.
    public let recoveryReport: RecoveryReport

    let committer: GroupCommitter
    let allocator: SegmentAllocator
    /// The io_uring backend's staging and write path; nil under the mmap backend.
    let direct: DirectWriter?
    let metrics: WALMetrics
    private let lock: DirectoryLock
    /// The append lock. A plain pthread mutex rather than `Synchronization.Mutex`: on Linux the
    /// latter spins and then sleeps on a priority-inheritance futex, and with 64 appenders on two
    /// cores its slow path took a third of all CPU time (docs/DESIGN.md has the profile).
    private let appendState: ConditionLock<AppendState>
    /// pthread-based like every lock in the engine: ThreadSanitizer cannot see
    /// `Synchronization.Mutex`'s synchronization in this toolchain (it reported races on
    /// accesses that were all inside `withLock`), and a lock the race checker cannot see is a
    /// lock it cannot check.
    let catalog: ConditionLock<Catalog>
    private let checkpointGate = ConditionLock<Void>(())
    private let isClosed = Atomic<Bool>(false)
    let maxRecordSize: Int
    /// Bound on records per `append(contentsOf:)` call, so one call cannot hold the append lock
    /// for an unbounded time.
    public static let maxBatchCount = 65_536

    private init(directory: String, configuration: Configuration, lock: DirectoryLock, recovered: RecoveredState,
                 direct: DirectWriter?) {
        self.directory = directory
        self.configuration = configuration
        self.lock = lock
        self.recoveryReport = recovered.report
        self.maxRecordSize = configuration.effectiveMaxRecordSize
        let activeInfo = recovered.segments.last
        let offset = recovered.active != nil ? activeInfo!.endOffset : Format.segmentHeaderBlock
        // Staging past the recovered end is zero up to the end of its block (see stagedWriter).
        appendState = ConditionLock(AppendState(active: recovered.active, offset: offset, nextLSN: recovered.nextLSN,
                                                zeroedTo: DirectWriter.alignUp(UInt64(offset) + 1)))
        catalog = ConditionLock(Catalog(segments: recovered.segments, checkpoint: recovered.checkpointLSN))
        self.direct = direct
        let start = LogPosition(lsn: recovered.nextLSN - 1, segment: activeInfo?.sequence ?? 0, offset: offset, stream: UInt64(offset))
        metrics = WALMetrics(directory: directory, factory: configuration.metricsFactory)
        committer = GroupCommitter(start: start, policy: configuration.durability, directory: directory,
                                   logger: configuration.logger, metrics: metrics,
                                   batchDelay: configuration.maxBatchDelay, maxBatchBytes: configuration.maxBatchBytes,
                                   direct: direct)
        allocator = SegmentAllocator(directory: directory, segmentSize: configuration.segmentSize,
                                     spares: configuration.spareSegments, nextSequence: recovered.nextSequence,
                                     ready: recovered.spares, reusable: recovered.reusable,
                                     useIOURing: configuration.useIOURing,
                                     prefault: configuration.durability != .groupCommit && configuration.backend == .mmap,
                                     logger: configuration.logger,
                                     metrics: metrics)
    }

    /// Opens (creating if needed) the WAL in `directory` and recovers it.
    ///
    /// Creates missing directories (fsyncing each parent), takes an exclusive lock on
    /// `<directory>/.lock`, recovers (see ``RecoveryReport``) and starts the background segment
    /// allocator and committer. Throws ``WALError`` naming the path and the fix when the
    /// directory cannot be used, another process holds it, or its files need a newer version.
    public static func open(directory: String, configuration: Configuration = Configuration()) throws -> WAL {
        var path = directory.isEmpty ? "." : directory
        while path.count > 1 && path.hasSuffix("/") { path.removeLast() }
        try configuration.validate(directory: path)
        try FileSystem.createDirectories(path)
        let lock = try DirectoryLock.acquire(directory: path)
        do {
            let recovered = try Recovery(directory: path, configuration: configuration).run()
            // So that a checkpoint, the way a full WAL frees space, never needs a new block.
            if !FileSystem.kind(of: path + "/" + CheckpointFile.standbyName).exists {
                CheckpointFile.prepareStandby(directory: path)
            }
            let direct = try configuration.backend == .uring ? stagedWriter(recovered, configuration: configuration, directory: path) : nil
            let wal = WAL(directory: path, configuration: configuration, lock: lock, recovered: recovered, direct: direct)
            wal.allocator.start()
            wal.committer.start()
            configuration.logger.info("opened WAL", metadata: [
                "directory": "\(path)", "next_lsn": "\(recovered.nextLSN)", "checkpoint": "\(recovered.checkpointLSN)",
                "segments": "\(recovered.segments.count)", "records_recovered": "\(recovered.report.recordsRecovered)",
                "clean": "\(recovered.report.isClean)"])
            return wal
        } catch {
            lock.release()
            throw error
        }
    }

    /// The io_uring backend's writer, with the active segment placed at stream position 0 and
    /// the partly filled block its next record lands in loaded into staging, so the first flush
    /// writes that block back whole.
    private static func stagedWriter(_ recovered: RecoveredState, configuration: Configuration, directory: String) throws -> DirectWriter {
        let offset = recovered.active != nil ? recovered.segments.last!.endOffset : Format.segmentHeaderBlock
        // A segment with no record yet gets its header written with its first record, so its
        // staging starts at 0 and the first flush writes the header block too.
        let start = UInt64(recovered.active != nil && offset > Format.segmentHeaderBlock ? offset : 0)
        let writer = try DirectWriter(directory: directory, capacity: DirectWriter.capacity(maxRecordSize: configuration.effectiveMaxRecordSize),
                                  start: start, logger: configuration.logger)
        if let active = recovered.active {
            try writer.place(active, at: 0)
            let block = DirectWriter.alignDown(UInt64(offset))
            let count = min(DirectWriter.block, active.size - Int(block))
            try writer.ring.load(from: active.file, offset: Int(block), at: block, count: count)
            // Past the last record the block must be zeros, whatever the file held there.
            writer.ring.zero(at: UInt64(offset), count: Int(block) + count - offset)
        }
        return writer
    }

    deinit {
        if !isClosed.load(ordering: .acquiring) { try? close() }
    }

    // MARK: Appending

    /// Appends one record and returns its LSN once it is durable under the configured policy.
    /// Blocks the calling thread while it waits; use the `async` overload from tasks.
    @discardableResult
    public func append<Bytes: Collection>(_ payload: Bytes) throws -> LSN where Bytes.Element == UInt8 {
        let lsn = try enqueue(payload)
        try waitUntilDurable(lsn)
        return lsn
    }

    /// Appends one record and returns its LSN once it is durable under the configured policy,
    /// suspending (not blocking a thread) while the flush runs.
    @discardableResult
    public func append<Bytes: Collection>(_ payload: Bytes) async throws -> LSN where Bytes.Element == UInt8 {
        let lsn = try enqueue(payload)
        try await waitUntilDurable(lsn)
        return lsn
    }

    /// Appends records with consecutive LSNs in one call, all or none, and returns their range
    /// once the last is durable under the configured policy.
    @discardableResult
    public func append<Bytes: Collection>(contentsOf payloads: [Bytes]) throws -> ClosedRange<LSN> where Bytes.Element == UInt8 {
        let range = try enqueue(contentsOf: payloads)
        try waitUntilDurable(range.upperBound)
        return range
    }

    @discardableResult
    public func append<Bytes: Collection>(contentsOf payloads: [Bytes]) async throws -> ClosedRange<LSN> where Bytes.Element == UInt8 {
        let range = try enqueue(contentsOf: payloads)
        try await waitUntilDurable(range.upperBound)
        return range
    }

    /// Copies a record into the log and returns its LSN without waiting for it to be durable.
    /// Pair with ``waitUntilDurable(_:)``; nothing is acknowledged until that returns.
    public func enqueue<Bytes: Collection>(_ payload: Bytes) throws -> LSN where Bytes.Element == UInt8 {
        if let range = try payload.withContiguousStorageIfAvailable({ buffer in
            try copyIn(count: 1) { _ in UnsafeRawBufferPointer(buffer) }
        }) {
            return range.lowerBound
        }
        return try Array(payload).withUnsafeBytes { raw in try copyIn(count: 1) { _ in raw } }.lowerBound
    }

    /// Copies a batch of records with consecutive LSNs, all or none, without waiting.
    public func enqueue<Bytes: Collection>(contentsOf payloads: [Bytes]) throws -> ClosedRange<LSN> where Bytes.Element == UInt8 {
        // One contiguous copy of the batch, so every payload can be viewed without nesting.
        var joined: [UInt8] = []
        var bounds: [Int] = [0]
        bounds.reserveCapacity(payloads.count + 1)
        for payload in payloads {
            joined.append(contentsOf: payload)
            bounds.append(joined.count)
        }
        return try joined.withUnsafeBytes { raw in
            try copyIn(count: payloads.count) { UnsafeRawBufferPointer(rebasing: raw[bounds[$0]..<bounds[$0 + 1]]) }
        }
    }

    /// Blocks until `lsn` is durable under the configured policy (at once for `.interval` and
    /// `.none`, which acknowledge after the copy).
    public func waitUntilDurable(_ lsn: LSN) throws {
        guard configuration.durability == .groupCommit else { return }
        try committer.waitDurable(lsn)
    }

    /// Suspends until `lsn` is durable under the configured policy.
    public func waitUntilDurable(_ lsn: LSN) async throws {
        guard configuration.durability == .groupCommit else { return }
        try await committer.durable(lsn)
    }

    /// Reserves space, copies and checksums `count` records under the append lock, and tells
    /// the committer. Space for the whole batch (new segments included) is secured before any
    /// byte is written, so a full disk fails the batch without writing part of it.
    private func copyIn(count: Int, payload: (Int) -> UnsafeRawBufferPointer) throws -> ClosedRange<LSN> {
        guard count > 0, count <= WAL.maxBatchCount else {
            throw WALError(.invalidArgument, path: directory, operation: "append",
                           hint: "A batch must hold 1 to \(WAL.maxBatchCount) records; this one has \(count). Split it.")
        }
        // Check before writing: sizes, then the payload CRCs, outside the lock.
        var single: UInt32 = 0
        var payloadBytes = 0
        var crcs: [UInt32] = []
        if count > 1 { crcs.reserveCapacity(count) }
        for index in 0..<count {
            let bytes = payload(index)
            guard bytes.count <= maxRecordSize else {
                throw WALError(.recordTooLarge(size: bytes.count, limit: maxRecordSize), path: directory, operation: "append",
                               hint: "The record is \(bytes.count) bytes; the limit is \(maxRecordSize) bytes (maxRecordSize, at most a quarter of the \(configuration.segmentSize)-byte segment by default). Split the record or raise maxRecordSize.")
            }
            let crc = CRC32C.checksum(bytes)
            payloadBytes += bytes.count
            if count == 1 { single = crc } else { crcs.append(crc) }
        }
        // Bounded unflushed data: wait (and ask for a flush) before copying more.
        try committer.waitForRoom()
        let written = try appendState.withLock { state throws -> (range: ClosedRange<LSN>, position: LogPosition, segment: Segment) in
            guard !state.closed else { throw closedError(operation: "append") }
            if let failure = committer.failure { throw failure }
            // Segments this batch will need beyond the active one, taken before writing.
            var spares: [Segment] = []
            // io_uring backend: the descriptors flushes will write the spares through.
            var spareFiles: [OpenFile] = []
            var probe = state.active == nil ? Int.max : state.offset
            var probeSize = state.active?.size ?? 0
            for index in 0..<count {
                let span = Format.recordSpan(payloadLength: payload(index).count)
                if probe == Int.max || probe + span > probeSize {
                    do {
                        spares.append(try allocator.takeSpare())
                        if let direct { spareFiles.append(try direct.openFile(for: spares.last!)) }
                    } catch {
                        allocator.giveBack(spares)
                        if (error as? WALError)?.kind == .outOfSpace { metrics.outOfSpaceErrors.increment() }
                        throw error
                    }
                    probe = Format.segmentHeaderBlock
                    probeSize = spares.last!.size
                }
                probe += span
            }
            let first = state.nextLSN
            for index in 0..<count {
                let bytes = payload(index)
                let span = Format.recordSpan(payloadLength: bytes.count)
                if state.active == nil || state.offset + span > state.active!.size {
                    let next = spares.removeFirst()
                    if let direct {
                        // The next segment starts at an aligned stream position; the padding
                        // before it is zeros already (see stage).
                        let base = DirectWriter.alignUp(state.streamBase + UInt64(state.offset))
                        direct.place(next, file: spareFiles.removeFirst(), at: base)
                        state.streamBase = base
                    }
                    switchSegment(&state, to: next)
                }
                let segment = state.active!
                let lsn = state.nextLSN
                if let direct {
                    let end = state.streamBase + UInt64(state.offset + span)
                    if !direct.hasRoom(upTo: end) {
                        // Let the flusher take what this batch copied so far, then wait for
                        // the staged bytes this record would overwrite to reach the disk.
                        if lsn > first { committer.noteWritten(endPosition(state), in: segment) }
                        try direct.waitForRoom(end: end) { committer.requestFlush() }
                    }
                }
                if state.offset == Format.segmentHeaderBlock {
                    if let direct {
                        direct.stageSegmentHeader(SegmentHeader(sequence: segment.sequence, firstLSN: lsn, segmentSize: UInt64(segment.size),
                                                                epoch: segment.epoch), at: state.streamBase)
                        state.zeroedTo = max(state.zeroedTo, state.streamBase + UInt64(Format.segmentHeaderBlock))
                    } else {
                        segment.writeHeader(firstLSN: lsn)
                    }
                    setFirstLSN(lsn, of: segment.sequence)
                }
                let crc = RecordHeader.checksum(payloadCRC: count == 1 ? single : crcs[index], length: UInt32(bytes.count),
                                                lsn: lsn, epoch: segment.epoch)
                let header = RecordHeader(length: UInt32(bytes.count), crc: crc, lsn: lsn, epoch: segment.epoch)
                if let direct {
                    stage(header, payload: bytes, span: span, into: direct, state: &state)
                } else {
                    write(header, payload: bytes, span: span, into: segment, at: state.offset)
                }
                state.offset += span
                state.nextLSN += 1
                state.bytesAppended += UInt64(span)
            }
            precondition(spares.isEmpty, "batch layout and segment switches disagree")
            if direct == nil && state.offset >= state.windowMark { moveWindow(&state) }
            return (first...(state.nextLSN - 1), endPosition(state), state.active!)
        }
        // Outside the append lock, so appenders do not queue behind the committer's lock.
        committer.noteWritten(written.position, in: written.segment)
        metrics.recordsAppended.increment(by: count)
        metrics.bytesAppended.increment(by: payloadBytes)
        return written.range
    }

    private func write(_ header: RecordHeader, payload: UnsafeRawBufferPointer, span: Int, into segment: Segment, at offset: Int) {
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
    }

    /// Where the log ends after the last record copied, for the committer.
    private func endPosition(_ state: AppendState) -> LogPosition {
        LogPosition(lsn: state.nextLSN - 1, segment: state.active!.sequence, offset: state.offset,
                    bytes: state.bytesAppended, stream: state.streamBase + UInt64(state.offset))
    }

    /// Stages a record for the io_uring backend and zeroes the rest of the block it ends in,
    /// unless that was done already, so a flush of that block never carries stale bytes.
    private func stage(_ header: RecordHeader, payload: UnsafeRawBufferPointer, span: Int, into direct: DirectWriter,
                       state: inout AppendState) {
        precondition(state.offset >= Format.segmentHeaderBlock && state.offset % Format.recordAlignment == 0
                     && state.offset + span <= state.active!.size, "record placement out of bounds")
        let position = state.streamBase + UInt64(state.offset)
        direct.stageRecord(header, payload: payload, span: span, at: position)
        let end = position + UInt64(span)
        let blockEnd = DirectWriter.alignUp(end)
        if blockEnd > state.zeroedTo {
            direct.ring.zero(at: end, count: Int(blockEnd - end))
            state.zeroedTo = blockEnd
        }
    }

    /// Seals the active segment (its catalog entry gets its final end) and makes `next` active.
    private func switchSegment(_ state: inout AppendState, to next: Segment) {
        let sealedOffset = state.offset
        let lastLSN = state.nextLSN - 1
        catalog.withLock { catalog in
            if let sealed = state.active, let index = catalog.segments.lastIndex(where: { $0.sequence == sealed.sequence }) {
                catalog.segments[index].endOffset = sealedOffset
                catalog.segments[index].lastLSN = lastLSN
            }
            catalog.segments.append(SegmentInfo(sequence: next.sequence, path: next.path, epoch: next.epoch, size: next.size,
                                                firstLSN: 0, lastLSN: 0, endOffset: Format.segmentHeaderBlock))
        }
        // The sealed segment is already on the committer's dirty list if it holds unflushed
        // records; the committer drops its mapping after flushing it. Readers map their own.
        state.active = next
        state.offset = Format.segmentHeaderBlock
        state.windowMark = 0
        state.releasedUpTo = Format.segmentHeaderBlock
    }

    /// Every `window` bytes of progress: fault in the next stretch ahead (for the policies that
    /// pre-fault) and drop page-table entries more than one window behind, through the
    /// allocator thread, so resident memory stays near two windows, not a whole segment.
    private func moveWindow(_ state: inout AppendState) {
        guard let segment = state.active else { return }
        let window = 2 << 20
        let page = 4096
        let behind = max(Format.segmentHeaderBlock, (state.offset - window) / page * page)
        let release = state.releasedUpTo < behind ? state.releasedUpTo..<behind : nil
        state.releasedUpTo = max(state.releasedUpTo, behind)
        state.windowMark = state.offset + window
        allocator.requestWindow(segment, populate: state.offset..<min(segment.size, state.offset + SegmentAllocator.populateAhead),
                                release: release)
    }

    private func setFirstLSN(_ lsn: LSN, of sequence: UInt64) {
        catalog.withLock { catalog in
            if let index = catalog.segments.lastIndex(where: { $0.sequence == sequence }) {
                catalog.segments[index].firstLSN = lsn
            }
        }
    }

    // MARK: State

    /// The LSN the next record will get.
    public var nextLSN: LSN { appendState.withLock { $0.nextLSN } }
    /// The highest LSN on stable storage. (Under `.none` with the `.uring` backend, which never
    /// syncs on its own, the highest LSN written to the file.)
    public var durableLSN: LSN { committer.durable.lsn }
    /// The highest LSN readers may see.
    public var visibleLSN: LSN { committer.visible.lsn }
    /// The highest LSN consumers have checkpointed.
    public var checkpointLSN: LSN { catalog.withLock { $0.checkpoint } }
    /// The segment files holding live records, oldest first.
    public var liveSegmentPaths: [String] { catalog.withLock { $0.segments.map(\.path) } }
    /// Flushes done since open.
    public var flushCount: Int { committer.statistics.flushes }

    /// Counters since open, for benchmarks and metrics.
    public struct Statistics: Sendable, Equatable {
        /// Completed flushes (each an fdatasync of every segment written since the one before).
        public var flushes: Int
        /// Records made durable by those flushes.
        public var recordsFlushed: UInt64
        /// Segments prepared new, and recycled from below the checkpoint.
        public var segmentsPrepared: Int
        public var segmentsRecycled: Int
    }

    public var statistics: Statistics {
        let committed = committer.statistics
        let allocated = allocator.statistics
        return Statistics(flushes: committed.flushes, recordsFlushed: committed.recordsFlushed,
                          segmentsPrepared: allocated.prepared, segmentsRecycled: allocated.recycled)
    }

    // MARK: Checkpoint

    /// Records that consumers have processed every record up to and including `lsn`.
    ///
    /// The checkpoint is written atomically (temporary file, fsync, rename, fsync of the
    /// directory) before any segment is released. Segments whose records are all at or below
    /// it are then reused for new records or deleted. Lower values than the current checkpoint
    /// are ignored. Throws when `lsn` is beyond what readers can see.
    public func checkpoint(upTo lsn: LSN) throws {
        try ensureOpen(operation: "checkpoint")
        let visible = committer.visible.lsn
        guard lsn <= visible else {
            throw WALError(.invalidArgument, path: directory, operation: "checkpoint",
                           hint: "Cannot checkpoint up to LSN \(lsn): only records up to \(visible) are durable. Checkpoint only what consumers have read.")
        }
        try checkpointGate.withLock { _ in
            guard lsn > checkpointLSN else { return }
            try CheckpointFile.store(lsn, directory: directory)
            let freed = catalog.withLock { catalog -> [String] in
                catalog.checkpoint = lsn
                var count = 0
                while count + 1 < catalog.segments.count {
                    let next = catalog.segments[count + 1].firstLSN
                    guard next != 0, next <= lsn + 1 else { break }
                    count += 1
                }
                let paths = catalog.segments.prefix(count).map(\.path)
                catalog.segments.removeFirst(count)
                return paths
            }
            allocator.addReusable(freed)
        }
    }

    // MARK: Closing

    /// Flushes everything appended, stops the background threads, and releases the lock.
    /// Later calls on this WAL throw ``WALError/Kind/closed``. Closing twice is harmless.
    public func close() throws {
        guard !isClosed.exchange(true, ordering: .acquiringAndReleasing) else { return }
        let active = appendState.withLock { state -> Segment? in
            state.closed = true
            defer { state.active = nil }
            return state.active
        }
        let flushFailure = committer.stop()
        allocator.stop()
        active?.close()
        lock.release()
        if let flushFailure { throw flushFailure }
    }

    func ensureOpen(operation: String) throws {
        if isClosed.load(ordering: .acquiring) { throw closedError(operation: operation) }
    }

    func closedError(operation: String) -> WALError {
        WALError(.closed, path: directory, operation: operation, hint: "This WAL was closed: open it again to continue.")
    }
}
