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
    /// Everything the append lock guards. The writer owns where records go; this owns the LSNs.
    struct AppendState {
        let writer: any SegmentWriter
        var nextLSN: LSN
        /// The end of the last complete batch.
        var end: LogEnd
        var closed = false
    }
    struct Catalog {
        /// Segments holding live records, oldest first; the last is the active segment.
        var segments: [SegmentInfo]
        var checkpoint: LSN
        /// The LSN floor recovery stored (see ``CheckpointRecord/floor``), kept in every
        /// checkpoint written after.
        var lsnFloor: LSN = 0
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
    /// The most record bytes one `append(contentsOf:)` may carry (``Configuration/maxBatchBytes``).
    let maxBatchBytes: Int
    /// Bound on records per `append(contentsOf:)` call, so one call cannot hold the append lock
    /// for an unbounded time.
    public static let maxBatchCount = 65_536

    private init(directory: String, configuration: Configuration, lock: DirectoryLock, recovered: RecoveredState,
                 direct: DirectWriter?) throws {
        self.directory = directory
        self.configuration = configuration
        self.lock = lock
        self.recoveryReport = recovered.report
        self.maxRecordSize = configuration.effectiveMaxRecordSize
        self.maxBatchBytes = configuration.effectiveMaxBatchBytes
        // The recovered active segment, when it holds a record; an empty one is begun afresh
        // below, as if it were a spare.
        let activeInfo = recovered.segments.last
        let resumed = recovered.active.flatMap { activeInfo!.endOffset > Format.segmentHeaderBlock ? $0 : nil }
        let offset = resumed != nil ? activeInfo!.endOffset : 0
        // Readers read every segment up to the visible one, so it names the active segment even
        // when that holds no record yet (then nothing of it is visible).
        let start = LogEnd(lsn: recovered.nextLSN - 1, segment: activeInfo?.sequence ?? 0,
                           offset: activeInfo?.endOffset ?? Format.segmentHeaderBlock, stream: UInt64(offset))
        catalog = ConditionLock(Catalog(segments: recovered.segments, checkpoint: recovered.checkpointLSN, lsnFloor: recovered.lsnFloor))
        self.direct = direct
        metrics = WALMetrics(directory: directory, factory: configuration.metricsFactory)
        committer = GroupCommitter(start: start, policy: configuration.durability, directory: directory,
                                   logger: configuration.logger, metrics: metrics,
                                   batchDelay: configuration.maxBatchDelay, maxBatchBytes: configuration.maxBatchBytes,
                                   direct: direct)
        allocator = SegmentAllocator(directory: directory, segmentSize: configuration.segmentSize,
                                     spares: configuration.spareSegments, nextSequence: recovered.nextSequence,
                                     ready: [], reusable: recovered.reusable,
                                     useIOURing: configuration.useIOURing,
                                     prefault: configuration.durability != .groupCommit && configuration.backend == .mmap,
                                     logger: configuration.logger,
                                     metrics: metrics)
        let committer = committer
        let writer: any SegmentWriter
        if let direct {
            writer = StagedSegmentWriter(active: resumed, offset: offset, direct: direct, committer: committer)
        } else {
            writer = MappedSegmentWriter(active: resumed, offset: offset, committer: committer, allocator: allocator)
        }
        appendState = ConditionLock(AppendState(writer: writer, nextLSN: recovered.nextLSN, end: start))
        if let empty = recovered.active, resumed == nil {
            try writer.begin(writer.prepare(empty), firstLSN: recovered.nextLSN, committed: start)
            catalog.withLock { catalog in
                if let index = catalog.segments.lastIndex(where: { $0.sequence == empty.sequence }) {
                    catalog.segments[index].firstLSN = recovered.nextLSN
                }
            }
        }
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
            let wal = try WAL(directory: path, configuration: configuration, lock: lock, recovered: recovered, direct: direct)
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

    /// The io_uring backend's writer. An active segment that holds records is placed at stream
    /// position 0, and the partly filled block its next record lands in is loaded into staging,
    /// so the first flush writes that block back whole. (An empty one is begun like a spare.)
    private static func stagedWriter(_ recovered: RecoveredState, configuration: Configuration, directory: String) throws -> DirectWriter {
        let offset = recovered.active != nil ? recovered.segments.last!.endOffset : 0
        let resumes = offset > Format.segmentHeaderBlock
        let writer = try DirectWriter(directory: directory, capacity: DirectWriter.capacity(maxRecordSize: configuration.effectiveMaxRecordSize),
                                      start: resumes ? UInt64(offset) : 0, logger: configuration.logger,
                                      unitOverride: configuration.directWriteUnit)
        if let active = recovered.active, resumes {
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

    /// Appends records with consecutive LSNs as one batch and returns their range once the last
    /// is durable under the configured policy.
    ///
    /// The batch is all or none, across crashes too: readers see none of it until all of it is
    /// visible, and recovery drops a batch whose last record did not reach the disk. At most
    /// ``maxBatchCount`` records and ``Configuration/maxBatchBytes`` bytes (record spans).
    @discardableResult
    public func append<Bytes: Collection>(contentsOf payloads: [Bytes]) throws -> ClosedRange<LSN> where Bytes.Element == UInt8 {
        let range = try enqueue(contentsOf: payloads)
        try waitUntilDurable(range.upperBound)
        return range
    }

    /// The `async` form of ``append(contentsOf:)-(_)``: suspends instead of blocking while the
    /// flush runs.
    @discardableResult
    public func append<Bytes: Collection>(contentsOf payloads: [Bytes]) async throws -> ClosedRange<LSN> where Bytes.Element == UInt8 {
        let range = try enqueue(contentsOf: payloads)
        try await waitUntilDurable(range.upperBound)
        return range
    }

    /// Copies a record into the log and returns its LSN without waiting for it to be durable.
    /// Pair with ``waitUntilDurable(_:)``; nothing is acknowledged until that returns.
    public func enqueue<Bytes: Collection>(_ payload: Bytes) throws -> LSN where Bytes.Element == UInt8 {
        try copyIn(SinglePayload(payload: payload)).lowerBound
    }

    /// Copies a batch of records with consecutive LSNs, all or none, without waiting.
    public func enqueue<Bytes: Collection>(contentsOf payloads: [Bytes]) throws -> ClosedRange<LSN> where Bytes.Element == UInt8 {
        try copyIn(PayloadArray(payloads: payloads))
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

    /// The append path, the same for both backends: check the batch, reserve the segments it
    /// needs (prepared for writing) before any byte is written, then for each record seal and
    /// begin segments as needed and write it, and publish the end of the batch.
    private func copyIn<Source: PayloadSource>(_ batch: Source) throws -> ClosedRange<LSN> {
        let count = batch.count
        guard count > 0, count <= WAL.maxBatchCount else {
            throw WALError(.invalidArgument, path: directory, operation: "append",
                           hint: "A batch must hold 1 to \(WAL.maxBatchCount) records; this one has \(count). Split it.")
        }
        // Check before writing: sizes, then the payload CRCs, outside the lock.
        var single: (crc: UInt32, length: Int) = (0, 0)
        var records: [(crc: UInt32, length: Int)] = []
        if count > 1 { records.reserveCapacity(count) }
        var payloadBytes = 0
        var batchBytes = 0
        for index in 0..<count {
            let checked = try batch.with(index) { bytes -> (crc: UInt32, length: Int) in
                guard bytes.count <= maxRecordSize else {
                    throw WALError(.recordTooLarge(size: bytes.count, limit: maxRecordSize), path: directory, operation: "append",
                                   hint: "Record \(index) of the batch is \(bytes.count) bytes; the limit is \(maxRecordSize) bytes (maxRecordSize, at most a quarter of the \(configuration.segmentSize)-byte segment by default). Split the record or raise maxRecordSize.")
                }
                return (CRC32C.checksum(bytes), bytes.count)
            }
            payloadBytes += checked.length
            batchBytes += Format.recordSpan(payloadLength: checked.length)
            if count == 1 { single = checked } else { records.append(checked) }
        }
        guard batchBytes <= maxBatchBytes else {
            throw WALError(.invalidArgument, path: directory, operation: "append",
                           hint: "The batch is \(batchBytes) bytes (\(count) records with their headers); a batch may be at most \(maxBatchBytes) bytes (maxBatchBytes). Split it.")
        }
        func record(_ index: Int) -> (crc: UInt32, length: Int) { count == 1 ? single : records[index] }
        // Bounded unflushed data: wait (and ask for a flush) before copying more.
        try committer.waitForRoom()
        let end = try appendState.withLock { state throws -> (range: ClosedRange<LSN>, end: LogEnd) in
            guard !state.closed else { throw closedError(operation: "append") }
            if let failure = committer.failure { throw failure }
            let writer = state.writer
            var spares = try reserveSpares(for: count, writer: writer) { Format.recordSpan(payloadLength: record($0).length) }
            let first = state.nextLSN
            var bytes = state.end.bytes
            do {
                for index in 0..<count {
                    let (crc, length) = record(index)
                    let span = Format.recordSpan(payloadLength: length)
                    if writer.active.map({ writer.offset + span > $0.size }) ?? true {
                        sealInCatalog(writer, lastLSN: state.nextLSN - 1)
                        writer.seal()
                        let next = spares.removeFirst()
                        try writer.begin(next, firstLSN: state.nextLSN, committed: state.end)
                        beginInCatalog(next.segment, firstLSN: state.nextLSN)
                    }
                    let segment = writer.active!
                    let flags = RecordFlags.forRecord(index, of: count)
                    let header = RecordHeader(length: UInt32(length),
                                              crc: RecordHeader.checksum(payloadCRC: crc, length: UInt32(length), flags: flags,
                                                                         lsn: state.nextLSN, epoch: segment.epoch),
                                              lsn: state.nextLSN, epoch: segment.epoch, flags: flags)
                    try batch.with(index) { try writer.append(header, payload: $0, committed: state.end) }
                    state.nextLSN += 1
                    bytes += UInt64(span)
                }
            } catch {
                // Only a failed flush (sticky: the WAL takes no more appends) gets here. The
                // partial batch is never published, and recovery drops it.
                allocator.giveBack(spares.map(\.segment))
                throw error
            }
            precondition(spares.isEmpty, "batch layout and segment switches disagree")
            writer.finishBatch()
            state.end = writer.end(lsn: state.nextLSN - 1, bytes: bytes)
            return (first...(state.nextLSN - 1), state.end)
        }
        // Outside the append lock, so appenders do not queue behind the committer's lock.
        committer.noteWritten(end.end)
        metrics.recordsAppended.increment(by: count)
        metrics.bytesAppended.increment(by: payloadBytes)
        return end.range
    }

    /// The segments a batch of `count` records needs beyond the active one, taken from the
    /// allocator and prepared for writing, so a full disk fails the batch before any byte of it
    /// is written.
    private func reserveSpares(for count: Int, writer: any SegmentWriter, span: (Int) -> Int) throws -> [SpareSegment] {
        var spares: [SpareSegment] = []
        var probe = writer.active == nil ? nil : writer.offset
        var probeSize = writer.active?.size ?? 0
        do {
            for index in 0..<count {
                let span = span(index)
                if probe.map({ $0 + span > probeSize }) ?? true {
                    let segment = try allocator.takeSpare()
                    do {
                        spares.append(try writer.prepare(segment))
                    } catch {
                        allocator.giveBack([segment])
                        throw error
                    }
                    probe = Format.segmentHeaderBlock
                    probeSize = segment.size
                }
                probe! += span
            }
        } catch {
            allocator.giveBack(spares.map(\.segment))
            if (error as? WALError)?.kind == .outOfSpace { metrics.outOfSpaceErrors.increment() }
            throw error
        }
        return spares
    }

    /// Records the end of the active segment, about to be sealed, in the catalog: readers read
    /// a sealed segment to its recorded end.
    private func sealInCatalog(_ writer: any SegmentWriter, lastLSN: LSN) {
        guard let sealed = writer.active else { return }
        let endOffset = writer.offset
        catalog.withLock { catalog in
            if let index = catalog.segments.lastIndex(where: { $0.sequence == sealed.sequence }) {
                catalog.segments[index].endOffset = endOffset
                catalog.segments[index].lastLSN = lastLSN
            }
        }
    }

    private func beginInCatalog(_ segment: Segment, firstLSN: LSN) {
        catalog.withLock { catalog in
            catalog.segments.append(SegmentInfo(sequence: segment.sequence, path: segment.path, epoch: segment.epoch, size: segment.size,
                                                firstLSN: firstLSN, lastLSN: 0, endOffset: Format.segmentHeaderBlock))
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
            try CheckpointFile.store(lsn, floor: catalog.withLock { $0.lsnFloor }, directory: directory)
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
        let writer = appendState.withLock { state -> any SegmentWriter in
            state.closed = true
            return state.writer
        }
        let flushFailure = committer.stop()
        allocator.stop()
        appendState.withLock { _ in writer.close() }
        direct?.closeFiles()
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

/// The payloads of one append call, read without copying them first (a `[UInt8]` is read in
/// place; any other collection is copied once per pass).
protocol PayloadSource {
    var count: Int { get }
    func with<R>(_ index: Int, _ body: (UnsafeRawBufferPointer) throws -> R) throws -> R
}

struct SinglePayload<Bytes: Collection>: PayloadSource where Bytes.Element == UInt8 {
    let payload: Bytes
    var count: Int { 1 }
    func with<R>(_ index: Int, _ body: (UnsafeRawBufferPointer) throws -> R) throws -> R {
        if let result = try payload.withContiguousStorageIfAvailable({ try body(UnsafeRawBufferPointer($0)) }) { return result }
        return try Array(payload).withUnsafeBytes(body)
    }
}

struct PayloadArray<Bytes: Collection>: PayloadSource where Bytes.Element == UInt8 {
    let payloads: [Bytes]
    var count: Int { payloads.count }
    func with<R>(_ index: Int, _ body: (UnsafeRawBufferPointer) throws -> R) throws -> R {
        try SinglePayload(payload: payloads[index]).with(0, body)
    }
}
