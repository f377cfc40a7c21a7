import Logging
import Synchronization

/// A write-ahead log in one directory of fixed-size, preallocated segment files.
///
/// ```swift
/// let wal = try await WAL.open(directory: ".wal/acceptor")
/// let lsn = try await wal.append(Array("hello".utf8))   // returns once durable (group commit)
/// for record in try wal.records(from: wal.checkpointLSN + 1) { handle(record) }  // visible now
/// for try await record in wal.tail(from: lsn + 1, limit: 1) { handle(record) }   // follows
/// try await wal.checkpoint(upTo: lsn)                     // consumers are done up to here
/// try await wal.close()
/// ```
///
/// Appends are safe from any number of threads and tasks. The `async` forms suspend and never
/// block a thread of the cooperative pool (the append lock is held only for the copy; waits for
/// staging room, spare segments and the flush are continuations); the synchronous forms block
/// the calling thread and are unavailable from async code. Readers only ever see records that
/// are durable (under `.none`, that have been copied), and never skip an LSN silently.
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
        /// Whether that floor's gap was never handed out (``CheckpointRecord/floorGapUnissued``).
        var floorGapUnissued = false
        /// What ``Configuration/maxLiveBytes`` bounds.
        var liveBytes: Int { segments.reduce(0) { $0 + $1.size } }
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
    /// See ``Configuration/maxLiveBytes``.
    let maxLiveBytes: Int?
    let backlog: BacklogTracker
    /// The last time the filesystem gauges were read (monotonic nanoseconds), so refreshing
    /// metrics after every checkpoint costs a `statvfs` at most once a second.
    private let filesystemSampledAt = Atomic<Int>(0)
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
        self.maxLiveBytes = configuration.maxLiveBytes
        backlog = BacklogTracker(recoveredThrough: recovered.nextLSN - 1, checkpoint: recovered.checkpointLSN)
        // The recovered active segment, when it holds a record; an empty one is begun afresh
        // below, as if it were a spare.
        let activeInfo = recovered.segments.last
        let resumed = recovered.active.flatMap { activeInfo!.endOffset > Format.segmentHeaderBlock ? $0 : nil }
        let offset = resumed != nil ? activeInfo!.endOffset : 0
        // Readers read every segment up to the visible one, so it names the active segment even
        // when that holds no record yet (then nothing of it is visible).
        let start = LogEnd(lsn: recovered.nextLSN - 1, segment: activeInfo?.sequence ?? 0,
                           offset: activeInfo?.endOffset ?? Format.segmentHeaderBlock, stream: UInt64(offset))
        catalog = ConditionLock(Catalog(segments: recovered.segments, checkpoint: recovered.checkpointLSN, lsnFloor: recovered.lsnFloor,
                                        floorGapUnissued: recovered.floorGapUnissued))
        self.direct = direct
        metrics = WALMetrics(directory: directory, extraDimensions: configuration.metricDimensions, factory: configuration.metricsFactory)
        committer = GroupCommitter(start: start, policy: configuration.durability, directory: directory,
                                   logger: configuration.logger, metrics: metrics,
                                   batchDelay: configuration.maxBatchDelay, maxBatchBytes: configuration.maxBatchBytes,
                                   direct: direct)
        allocator = SegmentAllocator(directory: directory, segmentSize: configuration.segmentSize,
                                     spares: configuration.spareSegments, nextSequence: recovered.nextSequence,
                                     ready: [], reusable: recovered.reusable,
                                     useIOURing: configuration.useIOURing,
                                     prefault: configuration.durability != .groupCommit && configuration.backend == .mmap,
                                     access: configuration.fileAccess, logger: configuration.logger,
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

    /// Opens (creating if needed) the WAL in `directory` and recovers it, without blocking a
    /// thread of the cooperative pool: the work (recovery reads every live segment) runs on a
    /// Dispatch queue. See ``open(directory:configuration:)-(_,_)``.
    public static func open(directory: String, configuration: Configuration = Configuration()) async throws -> WAL {
        try await Offload.run { try openBlocking(directory: directory, configuration: configuration) }
    }

    /// Opens (creating if needed) the WAL in `directory` and recovers it, blocking the calling
    /// thread.
    ///
    /// Creates missing directories (fsyncing each parent), takes an exclusive lock on
    /// `<directory>/.lock`, recovers (see ``RecoveryReport``) and starts the background segment
    /// allocator and committer. Throws ``WALError`` naming the path and the fix when the
    /// directory cannot be used, another process holds it (``WALError/Kind/locked(pid:)``) or
    /// this one does (``WALError/Kind/alreadyOpen``), its files need a newer version, the
    /// process is out of descriptors (``WALError/Kind/tooManyOpenFiles``), or the filesystem
    /// cannot hold the active segment and its spares (``WALError/Kind/outOfSpace``, naming both
    /// numbers).
    ///
    /// The first append may wait for the first segment to be prepared (zero-filled): about a
    /// segment's worth of sequential writes.
    @available(*, noasync, message: "recovery blocks the thread: use the async WAL.open from tasks")
    public static func open(directory: String, configuration: Configuration = Configuration()) throws -> WAL {
        try openBlocking(directory: directory, configuration: configuration)
    }

    private static func openBlocking(directory: String, configuration: Configuration) throws -> WAL {
        var path = directory.isEmpty ? "." : directory
        while path.count > 1 && path.hasSuffix("/") { path.removeLast() }
        try configuration.validate(directory: path)
        try FileSystem.createDirectories(path, mode: configuration.fileAccess.directoryMode)
        let lock = try DirectoryLock.acquire(directory: path, access: configuration.fileAccess)
        do {
            let recovered = try Recovery(directory: path, configuration: configuration).run()
            try checkSpace(directory: path, configuration: configuration, recovered: recovered)
            // So that a checkpoint, the way a full WAL frees space, never needs a new block.
            if !FileSystem.kind(of: path + "/" + CheckpointFile.standbyName).exists {
                CheckpointFile.prepareStandby(directory: path, access: configuration.fileAccess)
            }
            let direct = try configuration.backend == .uring ? stagedWriter(recovered, configuration: configuration, directory: path) : nil
            let wal = try WAL(directory: path, configuration: configuration, lock: lock, recovered: recovered, direct: direct)
            wal.allocator.start()
            wal.committer.start()
            if let limit = configuration.maxLiveBytes { wal.metrics.maxLiveBytes.record(limit) }
            wal.metrics.recoveryLostRecords.record(Int64(clamping: recovered.report.recordsLost))
            wal.metrics.recoveryDamagedRanges.record(recovered.report.skippedRanges + recovered.report.quarantinedSegments.count)
            wal.refreshMetrics()
            configuration.logger.info("opened WAL", metadata: [
                "directory": "\(path)", "next_lsn": "\(recovered.nextLSN)", "checkpoint": "\(recovered.checkpointLSN)",
                "segments": "\(recovered.segments.count)", "records_recovered": "\(recovered.report.recordsRecovered)",
                "clean": "\(recovered.report.isClean)", "crash_leftovers": "\(recovered.report.crashLeftovers)"])
            return wal
        } catch {
            lock.release()
            throw error
        }
    }

    /// Refuses a configuration whose active segment and spares cannot fit: the free space plus
    /// the segment files recovery found (live ones, and the reusable ones recycling turns into
    /// spares) must hold `1 + spareSegments` segments. Otherwise every append would fail later,
    /// one failed preparation at a time.
    private static func checkSpace(directory: String, configuration: Configuration, recovered: RecoveredState) throws {
        guard let usage = FileSystem.usage(directory) else { return }
        let held = recovered.segments.reduce(0) { $0 + $1.size } + recovered.reusable.count * configuration.segmentSize
        let needed = configuration.segmentSize * (1 + configuration.spareSegments)
        guard usage.available + held < needed else { return }
        throw WALError(.outOfSpace, path: directory, operation: "open",
                       hint: "The WAL needs \(needed) bytes for its active segment and \(configuration.spareSegments) spare(s) of \(configuration.segmentSize) bytes, but the filesystem has \(usage.available) bytes free (of \(usage.size)) and the WAL's segment files hold \(held): free space, use a smaller segmentSize or fewer spareSegments, or a larger filesystem.")
    }

    /// The io_uring backend's writer. An active segment that holds records is placed at stream
    /// position 0, and the partly filled block its next record lands in is loaded into staging,
    /// so the first flush writes that block back whole. (An empty one is begun like a spare.)
    private static func stagedWriter(_ recovered: RecoveredState, configuration: Configuration, directory: String) throws -> DirectWriter {
        let offset = recovered.active != nil ? recovered.segments.last!.endOffset : 0
        let resumes = offset > Format.segmentHeaderBlock
        let writer = try DirectWriter(directory: directory, capacity: configuration.effectiveStagingBytes,
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
        if !isClosed.load(ordering: .acquiring) { try? closeBlocking() }
    }

    // MARK: Appending

    /// Appends one record and returns its LSN once it is durable under the configured policy.
    /// Blocks the calling thread while it waits (for staging room, a spare segment, the flush);
    /// from a task use the `async` overload, which suspends instead.
    @available(*, noasync, message: "blocks the thread until the record is durable: use the async append from tasks")
    @discardableResult
    public func append<Bytes: Collection>(_ payload: Bytes) throws -> LSN where Bytes.Element == UInt8 {
        let lsn = try copyInBlocking(SinglePayload(payload: payload)).lowerBound
        try waitUntilDurable(lsn)
        return lsn
    }

    /// Appends one record and returns its LSN once it is durable under the configured policy.
    ///
    /// Never blocks a thread: while staging room, a spare segment or unflushed room is lacking,
    /// and while the flush runs, the task is suspended. The append lock is held only for the
    /// copy. Cancelling the task before the record is copied throws `CancellationError` and
    /// appends nothing; once it is copied the call waits for durability and returns its LSN.
    /// Throws ``WALError/Kind/backlogFull(liveBytes:limit:)`` at once when the record would
    /// need a segment beyond ``Configuration/maxLiveBytes``.
    @discardableResult
    public func append<Bytes: Collection>(_ payload: Bytes) async throws -> LSN where Bytes.Element == UInt8 {
        let lsn = try await copyInSuspending(SinglePayload(payload: payload)).lowerBound
        try await waitUntilDurable(lsn)
        return lsn
    }

    /// Appends records with consecutive LSNs as one batch and returns their range once the last
    /// is durable under the configured policy. Blocks the calling thread; see the `async` form.
    ///
    /// The batch is all or none, across crashes too: readers see none of it until all of it is
    /// visible, and recovery drops a batch whose last record did not reach the disk. At most
    /// ``maxBatchCount`` records and ``Configuration/effectiveMaxBatchBytes`` bytes (record spans).
    @available(*, noasync, message: "blocks the thread until the batch is durable: use the async append(contentsOf:) from tasks")
    @discardableResult
    public func append<Bytes: Collection>(contentsOf payloads: [Bytes]) throws -> ClosedRange<LSN> where Bytes.Element == UInt8 {
        let range = try copyInBlocking(PayloadArray(payloads: payloads))
        try waitUntilDurable(range.upperBound)
        return range
    }

    /// The `async` form of ``append(contentsOf:)-(_)``: suspends, never blocks, as
    /// ``append(_:)-(_)`` does.
    @discardableResult
    public func append<Bytes: Collection>(contentsOf payloads: [Bytes]) async throws -> ClosedRange<LSN> where Bytes.Element == UInt8 {
        let range = try await copyInSuspending(PayloadArray(payloads: payloads))
        try await waitUntilDurable(range.upperBound)
        return range
    }

    /// Copies a record into the log and returns its LSN without waiting for it to be durable.
    /// Pair with ``waitUntilDurable(_:)``; nothing is acknowledged until that returns. May block
    /// while room or a spare segment is lacking.
    @available(*, noasync, message: "may block for room or a spare segment: use enqueue(_:) async from tasks")
    public func enqueue<Bytes: Collection>(_ payload: Bytes) throws -> LSN where Bytes.Element == UInt8 {
        try copyInBlocking(SinglePayload(payload: payload)).lowerBound
    }

    /// The `async` form of ``enqueue(_:)-(_)``: suspends while room or a spare is lacking.
    public func enqueue<Bytes: Collection>(_ payload: Bytes) async throws -> LSN where Bytes.Element == UInt8 {
        try await copyInSuspending(SinglePayload(payload: payload)).lowerBound
    }

    /// Copies a batch of records with consecutive LSNs, all or none, without waiting for it to
    /// be durable.
    @available(*, noasync, message: "may block for room or a spare segment: use enqueue(contentsOf:) async from tasks")
    public func enqueue<Bytes: Collection>(contentsOf payloads: [Bytes]) throws -> ClosedRange<LSN> where Bytes.Element == UInt8 {
        try copyInBlocking(PayloadArray(payloads: payloads))
    }

    /// The `async` form of ``enqueue(contentsOf:)-(_)``.
    public func enqueue<Bytes: Collection>(contentsOf payloads: [Bytes]) async throws -> ClosedRange<LSN> where Bytes.Element == UInt8 {
        try await copyInSuspending(PayloadArray(payloads: payloads))
    }

    /// Blocks until `lsn` is durable under the configured policy (at once for `.interval` and
    /// `.none`, which acknowledge after the copy).
    @available(*, noasync, message: "blocks the thread: use the async waitUntilDurable(_:) from tasks")
    public func waitUntilDurable(_ lsn: LSN) throws {
        guard configuration.durability == .groupCommit else { return }
        try committer.waitDurable(lsn)
    }

    /// Suspends until `lsn` is durable under the configured policy.
    public func waitUntilDurable(_ lsn: LSN) async throws {
        guard configuration.durability == .groupCommit else { return }
        try await committer.durable(lsn)
    }

    /// The sizes and CRCs of a batch, worked out outside the append lock.
    struct CheckedBatch {
        var single: (crc: UInt32, length: Int) = (0, 0)
        var records: [(crc: UInt32, length: Int)] = []
        var count = 0
        var payloadBytes = 0
        var batchBytes = 0
        func record(_ index: Int) -> (crc: UInt32, length: Int) { count == 1 ? single : records[index] }
        func span(_ index: Int) -> Int { Format.recordSpan(payloadLength: record(index).length) }
    }

    /// What one try at copying a batch did: copied it, or found something lacking and wrote
    /// nothing.
    enum CopyOutcome {
        case copied(ClosedRange<LSN>)
        /// The staging ring has no room up to stream position `end` yet (a flush was asked for).
        case needsRoom(end: UInt64)
        /// Spare segments are being prepared; wait past `events`, then try again with
        /// `failures` (see ``SegmentAllocator/takeSpares(_:waitedSince:)``).
        case needsSpares(events: UInt64, failures: Int)
    }

    /// The blocking append path: tries the copy, and while something is lacking blocks this
    /// thread until it may be there, then tries again.
    private func copyInBlocking<Source: PayloadSource>(_ batch: Source) throws -> ClosedRange<LSN> {
        let checked = try check(batch)
        var waitedSince: Int? = nil
        while true {
            // Bounded unflushed data: wait (and ask for a flush) before copying more.
            try committer.waitForRoom()
            switch try tryCopy(batch, checked, waitedSince: waitedSince) {
            case .copied(let range):
                return range
            case .needsRoom(let end):
                try direct!.waitForRoom(end: end) { committer.requestFlush() }
            case .needsSpares(let events, let failures):
                waitedSince = failures
                allocator.waitForEvent(after: events)
            }
        }
    }

    /// The async append path: the same tries, suspending on the waitlists in between, so no
    /// thread of the cooperative pool is ever blocked waiting.
    private func copyInSuspending<Source: PayloadSource>(_ batch: Source) async throws -> ClosedRange<LSN> {
        let checked = try check(batch)
        var waitedSince: Int? = nil
        while true {
            try Task.checkCancellation()
            if let needed = try committer.roomNeeded() {
                await committer.roomWaiters.wait(until: needed)
                continue
            }
            switch try tryCopy(batch, checked, waitedSince: waitedSince) {
            case .copied(let range):
                return range
            case .needsRoom(let end):
                // tryCopy has asked for the flush that makes the room.
                await direct!.stagingWaiters.wait(until: direct!.roomThreshold(upTo: end))
            case .needsSpares(let events, let failures):
                waitedSince = failures
                await allocator.spareWaiters.wait(until: events + 1)
            }
        }
    }

    /// Checks a batch before anything is written: count, sizes, then the payload CRCs.
    private func check<Source: PayloadSource>(_ batch: Source) throws -> CheckedBatch {
        let count = batch.count
        guard count > 0, count <= WAL.maxBatchCount else {
            throw WALError(.invalidArgument, path: directory, operation: "append",
                           hint: count == 0 ? "The batch is empty: pass at least one record."
                                : "A batch may hold at most \(WAL.maxBatchCount) records; this one has \(count). Split it.")
        }
        var checked = CheckedBatch()
        checked.count = count
        if count > 1 { checked.records.reserveCapacity(count) }
        for index in 0..<count {
            let record = try batch.with(index) { bytes -> (crc: UInt32, length: Int) in
                guard bytes.count <= maxRecordSize else {
                    throw WALError(.recordTooLarge(size: bytes.count, limit: maxRecordSize), path: directory, operation: "append",
                                   hint: "Record \(index) of the batch is \(bytes.count) bytes; the limit is \(maxRecordSize) bytes (maxRecordSize, at most a quarter of the \(configuration.segmentSize)-byte segment by default). Split the record or raise maxRecordSize.")
                }
                return (CRC32C.checksum(bytes), bytes.count)
            }
            checked.payloadBytes += record.length
            checked.batchBytes += Format.recordSpan(payloadLength: record.length)
            if count == 1 { checked.single = record } else { checked.records.append(record) }
        }
        guard checked.batchBytes <= maxBatchBytes else {
            throw WALError(.invalidArgument, path: directory, operation: "append",
                           hint: "The batch is \(checked.batchBytes) bytes (\(count) records with their headers); a batch may be at most \(maxBatchBytes) bytes (maxBatchBytes\(configuration.backend == .uring ? ", and under the uring backend half the staging ring, stagingBytes" : "")). Split it, or raise them.")
        }
        return checked
    }

    /// One try at the append path, the same for both backends, under the append lock. First,
    /// before any byte is written: work out where the batch goes, refuse it when it would
    /// exceed ``Configuration/maxLiveBytes``, and check that the staging ring has room for all
    /// of it and that the spare segments it needs are prepared, taking them; when either is
    /// lacking, return what to wait for, having written nothing. Then, for each record, seal
    /// and begin segments as needed and write it; publish the end of the batch.
    private func tryCopy<Source: PayloadSource>(_ batch: Source, _ checked: CheckedBatch, waitedSince: Int?) throws -> CopyOutcome {
        let count = checked.count
        let result = try appendState.withLock { state throws -> (outcome: CopyOutcome, end: LogEnd?) in
            guard !state.closed else { throw closedError(operation: "append") }
            if let failure = committer.failure { throw failure }
            let writer = state.writer
            let layout = plan(checked, writer: writer)
            if layout.segments > 0, let limit = maxLiveBytes {
                guard (1 + layout.segments) * configuration.segmentSize <= limit else {
                    throw WALError(.invalidArgument, path: directory, operation: "append",
                                   hint: "The batch needs \(layout.segments) new \(configuration.segmentSize)-byte segments beside the active one, more than maxLiveBytes (\(limit)) can ever hold: split it, or raise maxLiveBytes.")
                }
                let live = liveBytes
                if live + layout.segments * configuration.segmentSize > limit {
                    metrics.backlogFullErrors.increment()
                    throw WALError(.backlogFull(liveBytes: live, limit: limit), path: directory, operation: "append",
                                   hint: "The WAL holds \(live) bytes of live segments and this append needs \(layout.segments) more \(configuration.segmentSize)-byte segment(s), past maxLiveBytes (\(limit)): consumers are behind. Retry after they checkpoint (answer 503 or 429 with Retry-After), or raise maxLiveBytes.")
                }
            }
            if let end = layout.streamEnd, let direct, !direct.hasRoom(upTo: end) {
                // effectiveMaxBatchBytes keeps every batch within half the ring; this is the
                // backstop that turns a violation into an error rather than a wait forever.
                guard direct.roomThreshold(upTo: end) <= DirectWriter.alignDown(writer.streamPosition ?? 0) else {
                    throw WALError(.invalidArgument, path: directory, operation: "append",
                                   hint: "The batch needs \(end - (writer.streamPosition ?? 0)) bytes of staging, more than the \(direct.ring.capacity)-byte staging ring holds: split it, or raise stagingBytes.")
                }
                // Let the committer flush everything staged so far (whole batches only).
                committer.noteWritten(state.end, stagedTo: direct.stagedTo)
                return (.needsRoom(end: end), nil)
            }
            var spares: [SpareSegment] = []
            switch allocator.takeSpares(layout.segments, waitedSince: waitedSince) {
            case .pending(let events, let failures):
                return (.needsSpares(events: events, failures: failures), nil)
            case .failed(let error):
                if error.kind == .outOfSpace { metrics.outOfSpaceErrors.increment() }
                throw error
            case .ready(let segments):
                do {
                    for segment in segments { spares.append(try writer.prepare(segment)) }
                } catch {
                    allocator.giveBack(segments)
                    throw error
                }
            }
            let first = state.nextLSN
            var bytes = state.end.bytes
            do {
                for index in 0..<count {
                    let (crc, length) = checked.record(index)
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
            return (.copied(first...(state.nextLSN - 1)), state.end)
        }
        guard case .copied(let range) = result.outcome, let end = result.end else {
            if case .needsRoom = result.outcome, let failure = committer.requestFlush() { throw failure }
            return result.outcome
        }
        // Outside the append lock, so appenders do not queue behind the committer's lock.
        committer.noteWritten(end)
        backlog.noteAppended(range.lowerBound)
        metrics.recordsAppended.increment(by: count)
        metrics.bytesAppended.increment(by: checked.payloadBytes)
        return .copied(range)
    }

    /// Where a batch goes: how many new segments it begins, and (staged writer) the stream
    /// position just past it. Every spare is `segmentSize` bytes (the allocator recycles only
    /// files of that size).
    private func plan(_ checked: CheckedBatch, writer: any SegmentWriter) -> (segments: Int, streamEnd: UInt64?) {
        var segments = 0
        var offset = writer.active == nil ? nil : writer.offset
        var size = writer.active?.size ?? 0
        var stream = writer.streamPosition
        for index in 0..<checked.count {
            let span = checked.span(index)
            if offset.map({ $0 + span > size }) ?? true {
                segments += 1
                offset = Format.segmentHeaderBlock
                size = configuration.segmentSize
                // A segment starts at an aligned stream position, its header block first.
                stream = stream.map { DirectWriter.alignUp($0) + UInt64(Format.segmentHeaderBlock) }
            }
            offset! += span
            stream = stream.map { $0 + UInt64(span) }
        }
        return (segments, stream)
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
        let (count, bytes) = catalog.withLock { catalog -> (Int, Int) in
            catalog.segments.append(SegmentInfo(sequence: segment.sequence, path: segment.path, epoch: segment.epoch, size: segment.size,
                                                firstLSN: firstLSN, lastLSN: 0, endOffset: Format.segmentHeaderBlock))
            return (catalog.segments.count, catalog.liveBytes)
        }
        metrics.liveSegments.record(count)
        metrics.liveBytes.record(bytes)
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
    /// The lowest LSN a reader can still get: the first record of the oldest live segment
    /// (checkpointed records stay readable until their segment is released). ``nextLSN`` when
    /// the log holds no record. Reading from below it throws ``WALError/Kind/gap(missing:)``.
    public var oldestLSN: LSN {
        let oldest = catalog.withLock { $0.segments.first(where: { $0.firstLSN != 0 })?.firstLSN }
        return oldest.map { min($0, nextLSN) } ?? nextLSN
    }
    /// The sticky failure that stopped this WAL (a failed flush, ``WALError/Kind/flushFailed``),
    /// or nil while it is healthy. Once set, appends and tailing readers throw it; reopen the
    /// directory to go on (recovery keeps what is on disk).
    public var failure: WALError? { committer.failure }
    /// Bytes of live segments (see ``Configuration/maxLiveBytes``).
    public var liveBytes: Int { catalog.withLock { $0.liveBytes } }

    /// How far consumers are behind, and how fast they catch up: what a service needs for its
    /// gauges and to answer `Retry-After` when appends fail with
    /// ``WALError/Kind/backlogFull(liveBytes:limit:)``.
    public struct Backlog: Sendable, Equatable {
        /// Records after the checkpoint (`nextLSN - 1 - checkpointLSN`).
        public var records: UInt64
        /// Segments holding them, the active one included, and their bytes.
        public var liveSegments: Int
        public var liveBytes: Int
        /// ``Configuration/maxLiveBytes``.
        public var limit: Int?
        /// Seconds since the oldest record after the checkpoint was appended (to within a
        /// millisecond; records recovered at open count from the open). 0 when there is none.
        public var oldestRecordAge: Double
        /// Records checkpointed per second over the last 30 seconds, or nil before there are
        /// two checkpoints in that window.
        public var checkpointRate: Double?

        /// A `Retry-After` for an append refused for backlog: the time the measured checkpoint
        /// rate takes to free one segment (records per live segment over the rate), from 1 to
        /// 60 seconds; 5 seconds when no rate is known yet.
        public var suggestedRetryAfter: Duration {
            guard let rate = checkpointRate, rate > 0, liveSegments > 0 else { return .seconds(5) }
            let perSegment = Double(records) / Double(liveSegments)
            let seconds = (perSegment / rate).rounded(.up)
            return .seconds(Int(min(60, max(1, seconds.isFinite ? seconds : 60))))
        }
    }

    /// The backlog now: records and segments after the checkpoint, the oldest record's age, the
    /// checkpoint rate (see ``Backlog``).
    public var backlogStatus: Backlog {
        let next = nextLSN
        let (checkpoint, segments, bytes) = catalog.withLock { catalog in
            (catalog.checkpoint, catalog.segments.count, catalog.liveBytes)
        }
        return Backlog(records: next - 1 > checkpoint ? next - 1 - checkpoint : 0, liveSegments: segments, liveBytes: bytes,
                       limit: maxLiveBytes, oldestRecordAge: backlog.oldestUnprocessedAge(checkpoint: checkpoint, next: next),
                       checkpointRate: backlog.checkpointRate())
    }

    /// Records the gauges (live segments and bytes, backlog, oldest record's age, the
    /// filesystem's used and total bytes; see `WALMetrics`) now. The WAL records them after
    /// each checkpoint; a service calls this before each scrape so that ages stay current
    /// while nothing is checkpointed.
    public func refreshMetrics() {
        let status = backlogStatus
        metrics.liveSegments.record(status.liveSegments)
        metrics.liveBytes.record(status.liveBytes)
        metrics.backlogRecords.record(Int64(clamping: status.records))
        metrics.oldestRecordAge.record(status.oldestRecordAge)
        metrics.failed.record(failure == nil ? 0 : 1)
        metrics.flushLatency.record(metrics.flushWindow.longestSeconds())
        metrics.segmentFiles.record(catalog.withLock { $0.segments.count } + allocator.heldFiles)
        let now = MonotonicClock.nanoseconds()
        let last = filesystemSampledAt.load(ordering: .relaxed)
        if now - last >= 1_000_000_000, filesystemSampledAt.compareExchange(expected: last, desired: now, ordering: .relaxed).exchanged,
           let usage = FileSystem.usage(directory) {
            metrics.filesystemUsed.record(usage.used)
            metrics.filesystemSize.record(usage.size)
            metrics.diskUsed.record(usage.used)
            metrics.diskSize.record(usage.size)
        }
    }

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

    /// Records that consumers have processed every record up to and including `lsn`, and
    /// returns the checkpoint in force after the call.
    ///
    /// The checkpoint is written atomically (temporary file, fsync, rename, fsync of the
    /// directory) before any segment is released; segments whose records are all at or below
    /// it are then reused for new records or deleted. A value at or below the current
    /// checkpoint (a repeat, or a consumer behind another) changes nothing and returns the
    /// current one, which is higher: compare the result to see. Throws
    /// ``WALError/Kind/invalidArgument`` when `lsn` is beyond what readers can see, and
    /// `closed` after ``close()``. Costs a few fsyncs: blocks the calling thread; from a task
    /// use the `async` form.
    @available(*, noasync, message: "does fsyncs on the calling thread: use the async checkpoint(upTo:) from tasks")
    @discardableResult
    public func checkpoint(upTo lsn: LSN) throws -> LSN {
        try checkpointBlocking(lsn)
    }

    /// The `async` form of ``checkpoint(upTo:)-(_)``: the fsyncs run on a Dispatch queue, not a
    /// thread of the cooperative pool.
    @discardableResult
    public func checkpoint(upTo lsn: LSN) async throws -> LSN {
        try ensureOpen(operation: "checkpoint")
        // The cheap answers without a thread hop.
        if lsn <= checkpointLSN { return checkpointLSN }
        return try await Offload.run { try self.checkpointBlocking(lsn) }
    }

    private func checkpointBlocking(_ lsn: LSN) throws -> LSN {
        try ensureOpen(operation: "checkpoint")
        let visible = committer.visible.lsn
        guard lsn <= visible else {
            throw WALError(.invalidArgument, path: directory, operation: "checkpoint",
                           hint: "Cannot checkpoint up to LSN \(lsn): only records up to \(visible) are durable. Checkpoint only what consumers have read.")
        }
        let effective = try checkpointGate.withLock { _ -> LSN in
            let current = checkpointLSN
            guard lsn > current else { return current }
            let (floor, unissued) = catalog.withLock { ($0.lsnFloor, $0.floorGapUnissued) }
            try CheckpointFile.store(lsn, floor: floor, floorGapUnissued: unissued, directory: directory, access: configuration.fileAccess)
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
            backlog.noteCheckpoint(lsn)
            allocator.addReusable(freed)
            return lsn
        }
        refreshMetrics()
        return effective
    }

    // MARK: Closing

    /// The `async` form of ``close()-(_)``: the final flush and the joins run on a Dispatch
    /// queue, not a thread of the cooperative pool.
    public func close() async throws {
        try await Offload.run { try self.closeBlocking() }
    }

    /// Flushes everything appended, stops the background threads, and releases the lock.
    /// Later calls on this WAL throw ``WALError/Kind/closed``; tailing readers throw it too.
    /// Closing twice is harmless. Blocks the calling thread for the final flush.
    @available(*, noasync, message: "blocks for the final flush: use the async close() from tasks")
    public func close() throws {
        try closeBlocking()
    }

    private func closeBlocking() throws {
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
