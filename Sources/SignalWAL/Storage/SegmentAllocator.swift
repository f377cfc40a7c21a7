#if canImport(Glibc)
import Glibc
#endif
import CShims
import Logging

/// Prepares segment files ahead of need on a background thread and hands them out ready to map.
///
/// A prepared segment has every block allocated (fallocate) and written (zero-filled, 4 KiB at
/// a time), then a durable header, then a durable name. Writing the blocks first matters twice:
/// a flush on written blocks costs about half of one on fallocate'd-only (unwritten) extents,
/// and stores through a mapping into allocated blocks can never SIGBUS on a full disk. Writing
/// in 4 KiB units keeps page-cache folios small, so a store dirties 4 KiB, not a whole large
/// folio.
///
/// Segments wholly below the checkpoint are recycled first: a new header (new sequence, new
/// epoch) is written in place and made durable, then the file is renamed to its new number and
/// the directory fsynced. Recycled files are already written, so they cost no zero-fill.
final class SegmentAllocator: Sendable {
    struct State {
        var ready: [Segment] = []
        /// Files whose records are all below the checkpoint, oldest first.
        var reusable: [String] = []
        var nextSequence: UInt64
        var failure: WALError?
        /// Bumped after each failed attempt, so a waiter can tell a new failure from an old one.
        var failureGeneration = 0
        var retryRequested = false
        var stopping = false
        var prepared = 0
        var recycled = 0
        /// Spares a batch waits for beyond `target` (a batch may span more segments than
        /// are kept ready); cleared when a batch takes them.
        var demand = 0
        /// Finished preparations (either way) and stops: what spare waiters wait on.
        var events: UInt64 = 0
        /// Failures in a row; only the first of a streak is logged as an error.
        var failuresInARow = 0
        /// The latest request to fault pages in ahead of the append cursor and to drop this
        /// process's page-table entries behind it (see ``requestWindow(_:populate:release:)``).
        var window: (segment: Segment, populate: Range<Int>?, release: Range<Int>?)?
    }

    let directory: String
    let segmentSize: Int
    let target: Int
    let logger: Logger
    let useIOURing: Bool
    /// Fault pages in, writable, a few MiB ahead of the append cursor (MADV_POPULATE_WRITE), so
    /// the append path takes no page faults. That marks the pages dirty, which costs nothing
    /// extra when the log is written back once (`.none`, `.interval`), but under group commit
    /// a flush would write pre-faulted pages ahead of the cursor and then write them again with
    /// data, so it is off there.
    let prefault: Bool
    let metrics: WALMetrics?
    let access: FileAccess
    /// How far ahead of the cursor pages are faulted in.
    static let populateAhead = 4 << 20
    fileprivate let state: ConditionLock<State>
    private let thread = ConditionLock<BackgroundThread?>(nil)
    /// Async appenders waiting for spares wait here on `events`.
    let spareWaiters = ProgressWaitlist()

    init(directory: String, segmentSize: Int, spares: Int, nextSequence: UInt64, ready: [Segment],
         reusable: [String], useIOURing: Bool, prefault: Bool = false, access: FileAccess = .owner, logger: Logger,
         metrics: WALMetrics? = nil) {
        self.directory = directory
        self.access = access
        self.segmentSize = segmentSize
        self.target = spares
        self.logger = logger
        self.useIOURing = useIOURing
        self.prefault = prefault
        self.metrics = metrics
        var initial = State(nextSequence: nextSequence)
        initial.ready = ready.sorted { $0.sequence < $1.sequence }
        initial.reusable = reusable
        state = ConditionLock(initial)
    }

    /// Segment files the allocator holds: spares ready for use, and files kept for reuse.
    var heldFiles: Int { state.withLock { $0.ready.count + $0.reusable.count } }

    /// Starts the background thread.
    func start() {
        let started = BackgroundThread.start(name: "signalwal-alloc") { self.run() }
        thread.withLock { $0 = started }
    }

    /// Stops the thread, waits for it, and unmaps the spares it holds.
    func stop() {
        state.withLock { $0.stopping = true; $0.events += 1 }
        state.broadcast()
        spareWaiters.terminate()
        thread.withLock { $0 }?.join()
        let spares = state.withLock { value -> [Segment] in defer { value.ready = [] }; return value.ready }
        spares.forEach { $0.close() }
    }

    var statistics: (ready: Int, reusable: Int, prepared: Int, recycled: Int) {
        state.withLock { ($0.ready.count, $0.reusable.count, $0.prepared, $0.recycled) }
    }

    /// What ``takeSpares(_:waitedSince:)`` found.
    enum Take {
        case ready([Segment])
        /// Not enough prepared yet: wait until ``State/events`` passes `events`, then ask again
        /// with `failures`.
        case pending(events: UInt64, failures: Int)
        case failed(WALError)
    }

    /// Takes `count` prepared segments, lowest-numbered first, all or none, without waiting.
    /// When they are not ready, asks the thread to prepare them (retrying after a failure) and
    /// says what to wait for. `waitedSince` is the failure generation a previous `pending`
    /// returned: when an attempt made since then failed and still nothing is ready, that
    /// failure is thrown (``WALError/Kind/outOfSpace`` on a full disk), so a full disk fails an
    /// append instead of parking it.
    func takeSpares(_ count: Int, waitedSince: Int?) -> Take {
        guard count > 0 else { return .ready([]) }
        let taken = state.withLock { value -> Take in
            if value.ready.count >= count {
                let segments = Array(value.ready.prefix(count))
                value.ready.removeFirst(count)
                // Only a taker that covers the demand ends it: a small batch taking one spare
                // must not cancel a larger batch's request (it would wait for a preparation the
                // thread, seeing enough spares, never starts).
                if count >= value.demand { value.demand = 0 }
                return .ready(segments)
            }
            if value.stopping {
                return .failed(WALError(.closed, path: directory, operation: "append", hint: "The WAL is closing."))
            }
            if let waitedSince, value.failureGeneration != waitedSince, let failure = value.failure { return .failed(failure) }
            value.demand = max(value.demand, count)
            if value.failure != nil { value.retryRequested = true }
            return .pending(events: value.events, failures: value.failureGeneration)
        }
        state.broadcast()
        return taken
    }

    /// Blocks the calling thread until a preparation finishes (or the allocator stops) after
    /// `events`.
    func waitForEvent(after events: UInt64) {
        state.wait(until: { $0.events > events || $0.stopping }) { _ in }
    }

    /// Adds files wholly below the checkpoint; they become spares before anything new is
    /// allocated. Surplus beyond the spare count is deleted, so disk use stays bounded.
    func addReusable(_ paths: [String]) {
        guard !paths.isEmpty else { return }
        state.withLock { value in
            value.reusable.append(contentsOf: paths)
            value.retryRequested = true
        }
        state.broadcast()
    }

    private func run() {
        var uring: IOURing?
        if useIOURing {
            do {
                uring = try IOURing.open(entries: 64, path: directory)
            } catch {
                logger.notice("io_uring is unavailable, preparing segments with plain system calls", metadata: [
                    "directory": "\(directory)", "reason": "\(error)"])
            }
        }
        while true {
            enum Job {
                case recycle(String, UInt64), allocate(UInt64), trim([String]), stop
                case window(Segment, Range<Int>?, Range<Int>?)
            }
            let job: Job = state.wait(until: { value in
                value.stopping || value.window != nil || value.reusable.count > target ||
                    (value.ready.count < max(target, value.demand) && (value.failure == nil || value.retryRequested))
            }) { value in
                if value.stopping { return .stop }
                if let window = value.window {
                    // First: the appenders are about to reach these pages.
                    value.window = nil
                    return .window(window.segment, window.populate, window.release)
                }
                if value.ready.count < max(target, value.demand) {
                    value.retryRequested = false
                    let sequence = value.nextSequence
                    value.nextSequence += 1
                    if !value.reusable.isEmpty { return .recycle(value.reusable.removeFirst(), sequence) }
                    return .allocate(sequence)
                }
                let surplus = Array(value.reusable.prefix(value.reusable.count - target))
                value.reusable.removeFirst(surplus.count)
                return .trim(surplus)
            }
            switch job {
            case .stop:
                return
            case .window(let segment, let populate, let release):
                adjustWindow(segment, populate: populate, release: release)
            case .trim(let paths):
                for path in paths { try? FileSystem.remove(path) }
                try? FileSystem.syncDirectory(directory)
            case .recycle(let path, let sequence):
                finish(Result { try recycle(path, as: sequence) }, sequence: sequence, recycled: true)
            case .allocate(let sequence):
                finish(Result { try allocate(sequence, uring: &uring) }, sequence: sequence, recycled: false)
            }
        }
    }

    private func finish(_ result: Result<Segment, any Error>, sequence: UInt64, recycled: Bool) {
        if prefault, case .success(let segment) = result {
            // The first stretch now, so the first appends into this spare do not fault.
            let start = Format.segmentHeaderBlock
            adjustWindow(segment, populate: start..<min(segment.size, start + Self.populateAhead), release: nil)
        }
        let events = state.withLock { value -> UInt64 in
            switch result {
            case .success(let segment):
                value.ready.append(segment)
                value.ready.sort { $0.sequence < $1.sequence }
                value.failure = nil
                if value.failuresInARow > 0 {
                    logger.notice("segment preparation works again", metadata: [
                        "directory": "\(directory)", "failed_attempts": "\(value.failuresInARow)"])
                }
                value.failuresInARow = 0
                if recycled { value.recycled += 1 } else { value.prepared += 1 }
                logger.info(recycled ? "recycled a WAL segment from below the checkpoint" : "allocated a new WAL segment",
                            metadata: ["segment": "\(segment.sequence)", "path": "\(segment.path)"])
                (recycled ? metrics?.segmentsRecycled : metrics?.segmentsAllocated)?.increment()
            case .failure(let error):
                let walError = error as? WALError ?? WALError(.io, path: directory, operation: "prepare segment", hint: "\(error)")
                value.failure = walError
                value.failureGeneration += 1
                // A failed allocation removed its file, so its number was never used: give it to
                // the next try, so retries on a full disk do not use up segment numbers.
                if !recycled, value.nextSequence == sequence + 1 { value.nextSequence = sequence }
                // One error per streak, not one per retry: appends retried every few
                // milliseconds on a full disk must not flood the log.
                if value.failuresInARow == 0 {
                    logger.error("could not prepare a segment; appends that need one fail until it can be prepared", metadata: [
                        "segment": "\(sequence)", "error": "\(walError)"])
                } else {
                    logger.debug("could not prepare a segment again", metadata: ["segment": "\(sequence)", "error": "\(walError)"])
                }
                value.failuresInARow += 1
            }
            value.events += 1
            return value.events
        }
        state.broadcast()
        spareWaiters.advance(to: events)
    }

    private func newEpoch() -> UInt64 {
        var epoch: UInt64 = 0
        while epoch == 0 { epoch = UInt64.random(in: .min ... .max) }
        return epoch
    }

    /// Creates `segment-<sequence>.wal`: a temporary file, allocated, zero-filled, headed,
    /// flushed, then renamed into place with the directory fsynced.
    func allocate(_ sequence: UInt64, uring: inout IOURing?) throws -> Segment {
        let path = directory + "/" + Format.segmentFileName(sequence)
        let temporary = path + Format.temporarySuffix
        let file = try OpenFile.open(temporary, writable: true, create: true, mode: access.fileMode)
        do {
            try file.truncate(to: 0)
            try file.allocate(offset: 0, length: segmentSize)
            try zeroFill(file, uring: &uring)
            let header = SegmentHeader(sequence: sequence, firstLSN: 0, segmentSize: UInt64(segmentSize), epoch: newEpoch())
            try file.write(header.encoded(), at: 0)
            try file.dataSync()
            try file.close()
            try FileSystem.rename(temporary, to: path)
            try FileSystem.syncDirectory(directory)
            return try Segment.open(path: path, header: header, writable: true)
        } catch {
            file.closeQuietly()
            try? FileSystem.remove(temporary)
            throw error
        }
    }

    /// Writes zeros over the whole file in 4 KiB units: through io_uring in batches when a ring
    /// is available, else with pwrite. When the ring itself fails (ENOMEM or EAGAIN from
    /// submission under memory pressure, for example) the ring is dropped for good and the rest
    /// is written with pwrite: a ring whose submission failed may still hold queued entries,
    /// and preparing segments must not depend on it.
    private func zeroFill(_ file: OpenFile, uring: inout IOURing?) throws {
        let page = 4096
        let zeros = UnsafeMutableRawBufferPointer.allocate(byteCount: page, alignment: page)
        defer { zeros.deallocate() }
        zeros.initializeMemory(as: UInt8.self, repeating: 0)
        let pages = segmentSize / page
        var next = 0
        if let ring = uring {
            do {
                while next < pages {
                    let batch = min(ring.entries, pages - next)
                    for index in 0..<batch {
                        let queued = ring.prepareWrite(fd: file.fd, UnsafeRawBufferPointer(zeros), offset: (next + index) * page,
                                                       tag: UInt64(next + index), link: false)
                        precondition(queued, "io_uring submission queue smaller than its batch")
                    }
                    let completions = try ring.submitAndReap(count: batch, path: file.path)
                    for completion in completions where completion.result != Int32(page) {
                        let code = completion.result < 0 ? -completion.result : EIO
                        throw WALError.system(.pwrite, path: file.path, errno: code)
                    }
                    next += batch
                }
            } catch let error as WALError where error.operation.hasPrefix("uring") {
                logger.warning("io_uring failed while preparing a segment; preparing segments with plain system calls from now on",
                               metadata: ["file": "\(file.path)", "reason": "\(error)"])
                uring = nil
            }
        }
        // Pages the ring did not confirm are (re)written here; rewriting zeros is harmless.
        for index in next..<pages {
            try file.write(UnsafeRawBufferPointer(zeros), at: index * page)
        }
    }

    /// Turns a file below the checkpoint into spare `sequence`: new header with a new epoch
    /// (so its old records read as stale), flushed, then renamed, then the directory fsynced.
    func recycle(_ oldPath: String, as sequence: UInt64) throws -> Segment {
        let file = try OpenFile.open(oldPath, writable: true)
        guard (try? file.size()) == segmentSize else {
            // Written with another segment size: not reusable as it is.
            file.closeQuietly()
            try FileSystem.remove(oldPath)
            try FileSystem.syncDirectory(directory)
            var noRing: IOURing? = nil
            return try allocate(sequence, uring: &noRing)
        }
        let path = directory + "/" + Format.segmentFileName(sequence)
        do {
            let header = SegmentHeader(sequence: sequence, firstLSN: 0, segmentSize: UInt64(segmentSize), epoch: newEpoch(),
                                       flags: .recycled)
            var block = header.encoded()
            block += [UInt8](repeating: 0, count: Format.segmentHeaderBlock - block.count)
            try file.write(block, at: 0)
            try file.dataSync()
            try file.close()
            try FileSystem.rename(oldPath, to: path)
            try FileSystem.syncDirectory(directory)
            return try Segment.open(path: path, header: header, writable: true)
        } catch {
            file.closeQuietly()
            throw error
        }
    }
}

extension SegmentAllocator {
    /// Asks the allocator thread to fault in `populate` (when pre-faulting is on) and to drop
    /// this process's page-table entries for `release` in the active segment, off the append
    /// path. Dropping entries behind the cursor keeps resident memory to a window instead of a
    /// whole segment: the data stays in the page cache, dirty pages stay dirty and are still
    /// written back, and nothing is ever written there again. A newer request replaces an
    /// older one that has not run yet.
    func requestWindow(_ segment: Segment, populate: Range<Int>?, release: Range<Int>?) {
        state.withLock { value in
            value.window = (segment, prefault ? populate : nil, release)
        }
        state.broadcast()
    }

    fileprivate func adjustWindow(_ segment: Segment, populate: Range<Int>?, release: Range<Int>?) {
        let mapping = segment.mapping
        let page = 4096
        if let release, release.lowerBound % page == 0, release.upperBound % page == 0, !release.isEmpty {
            mapping.dropPages(release.lowerBound, release.count)
        }
        if let populate, !populate.isEmpty {
            let start = populate.lowerBound / page * page
            // Best effort: a kernel without MADV_POPULATE_WRITE just takes the faults later.
            mapping.populate(start, min(mapping.length, populate.upperBound) - start)
        }
    }

    /// Returns spares taken for a batch that could not get all it needed.
    func giveBack(_ segments: [Segment]) {
        guard !segments.isEmpty else { return }
        state.withLock { value in
            value.ready.append(contentsOf: segments)
            value.ready.sort { $0.sequence < $1.sequence }
        }
        state.broadcast()
    }
}
