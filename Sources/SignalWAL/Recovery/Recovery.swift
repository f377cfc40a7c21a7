#if canImport(Glibc)
import Glibc
#endif
import Logging

/// Describes one segment that holds (or held) records, as the WAL's catalog keeps it.
struct SegmentInfo: Sendable, Equatable {
    var sequence: UInt64
    var path: String
    var epoch: UInt64
    var size: Int
    /// LSN of the first record (0 while none has been written).
    var firstLSN: LSN
    /// LSN of the last valid record (0 while none).
    var lastLSN: LSN
    /// Offset just past the last record; where the next record goes while the segment is active.
    var endOffset: Int
    /// Ranges recovery found damaged (or unreadable), ascending: readers skip them without
    /// touching their pages, so a bad block cannot fault a reader either.
    var damaged: [Range<Int>] = []
}

/// What recovery hands to the WAL.
struct RecoveredState {
    var checkpointLSN: LSN
    /// Carried into every later checkpoint file.
    var lsnFloor: LSN
    var floorGapUnissued = false
    /// Segments with records, oldest first; the last one is the active segment.
    var segments: [SegmentInfo]
    /// The active segment, mapped writable, when there is one.
    var active: Segment?
    var reusable: [String]
    var nextSequence: UInt64
    var nextLSN: LSN
    var report: RecoveryReport
}

/// Recovery on open, in two steps: ``analyze()`` reads the directory and returns a
/// ``RecoveryPlan`` without changing anything; ``apply(_:)`` carries it out. Each case has a
/// name, a rule and a test (docs/RECOVERY.md). Recovery reads segments with `pread`
/// (``SegmentImage``), never through a mapping, so a bad block is damage, not a SIGBUS; it
/// rewrites bytes only at the tail; and applying the same plan twice does the same thing, so a
/// crash during recovery and the next open end in the same state (no crash loop).
struct Recovery {
    let directory: String
    let configuration: Configuration
    var logger: Logger { configuration.logger }
    /// The largest copy of tail bytes kept in quarantine.
    static let tailCopyLimit = 1 << 20

    func run() throws -> RecoveredState {
        try apply(try analyze())
    }

    private struct Examined {
        var header: SegmentHeader
        var size: Int
        var hasRecords: Bool
    }

    // MARK: Analysis

    /// Reads headers, the checkpoint and every live segment, and decides. Writes nothing.
    func analyze() throws -> RecoveryPlan {
        var plan = RecoveryPlan()
        let quarantineDirectory = Quarantine(directory: directory, access: configuration.fileAccess)
        var highestSequence: UInt64 = 0

        var named: [(UInt64, String)] = []
        for name in try FileSystem.list(directory) {
            if name.hasSuffix(Format.temporarySuffix) {
                plan.temporaryFiles.append(directory + "/" + name)
            } else if let sequence = Format.segmentSequence(fromFileName: name) {
                named.append((sequence, directory + "/" + name))
            } else if let sequence = Format.quarantinedInPlaceSequence(fromFileName: name) {
                highestSequence = max(highestSequence, sequence)
            }
        }
        plan.report.temporaryFilesRemoved = plan.temporaryFiles.count
        if FileSystem.kind(of: quarantineDirectory.path).isDirectory {
            for name in try FileSystem.list(quarantineDirectory.path) where name.hasPrefix("segment-") {
                let digits = name.dropFirst("segment-".count).prefix { $0.isNumber }
                highestSequence = max(highestSequence, UInt64(digits) ?? 0)
            }
        }
        named.sort { $0.0 < $1.0 }

        // Headers: every segment file is classified before any record is read.
        var data: [(file: Int, examined: Examined)] = []
        for (sequence, path) in named {
            highestSequence = max(highestSequence, sequence)
            switch try examine(path: path) {
            case .failure(let reason):
                setAside(&plan, RecoveryPlan.SegmentFile(sequence: sequence, path: path, header: nil, fate: .quarantine(reason)))
            case .success(let examined):
                let header = examined.header
                highestSequence = max(highestSequence, header.sequence)
                if header.sequence != sequence {
                    if examined.hasRecords {
                        setAside(&plan, RecoveryPlan.SegmentFile(sequence: sequence, path: path, header: header,
                                                                   fate: .quarantine(.copy(headerSequence: header.sequence))))
                    } else {
                        plan.files.append(.init(sequence: sequence, path: path, header: header, fate: .reuse(.interruptedReuse)))
                    }
                } else if examined.hasRecords {
                    plan.files.append(.init(sequence: sequence, path: path, header: header, fate: .live))
                    data.append((plan.files.count - 1, examined))
                } else {
                    plan.files.append(.init(sequence: sequence, path: path, header: header, fate: .reuse(.spare)))
                }
            }
        }
        plan.nextSequence = highestSequence + 1

        // The checkpoint, or the oldest record when it cannot be read.
        switch try CheckpointFile.load(directory: directory) {
        case .found(let record):
            plan.checkpointLSN = record.lsn
            plan.storedFloor = record.floor
            plan.storedFloorGapUnissued = record.floorGapUnissued
        case .missing:
            if !data.isEmpty {
                plan.report.checkpointProblem = "missing"
                logger.warning("no checkpoint file: replaying from the oldest record (records may be delivered again)",
                               metadata: ["path": "\(directory)/\(Format.checkpointFileName)"])
            }
        case .corrupt(let why):
            plan.report.checkpointProblem = "corrupt: \(why)"
            logger.warning("the checkpoint file is corrupt: replaying from the oldest record (records may be delivered again)",
                           metadata: ["path": "\(directory)/\(Format.checkpointFileName)", "problem": "\(why)"])
        }
        let checkpoint = plan.checkpointLSN
        plan.report.checkpointLSN = checkpoint

        // Segments wholly below the checkpoint are not scanned: they go to the reuse pool.
        var firstLive = 0
        while firstLive + 1 < data.count && data[firstLive + 1].examined.header.firstLSN <= checkpoint + 1 {
            plan.files[data[firstLive].file].fate = .reuse(.belowCheckpoint)
            firstLive += 1
        }
        plan.report.segmentsReusable = firstLive
        let live = Array(data[firstLive...])

        let scanned = try scanLive(live.map { (plan.files[$0.file], $0.examined) }, plan: &plan)
        let scannedLast = scanned.last
        var lastLSN = max(scannedLast, scanned.floor > 0 ? scanned.floor - 1 : 0)

        // Bad headers newer than every live segment: their LSNs must not be handed out again.
        let newestLive = live.last.map { plan.files[$0.file].sequence } ?? 0
        var floor: LSN = scanned.floor
        for file in plan.files where file.sequence > newestLive && file.header == nil {
            guard case .quarantine = file.fate, let bound = try salvageBound(path: file.path, after: max(lastLSN, checkpoint)) else { continue }
            plan.report.damage.append(.init(kind: .missingRecords, segment: file.sequence, offset: 0, length: 0,
                                            lostLSNs: bound, quarantineFile: nil))
            logDamage(plan.report.damage.last!)
            floor = max(floor, bound.upperBound + 1)
            lastLSN = max(lastLSN, bound.upperBound)
        }

        var nextLSN = max(scannedLast + 1, checkpoint + 1, floor, plan.storedFloor)
        if floor > plan.storedFloor { plan.newFloor = floor }
        if let active = plan.activeHeader { nextLSN = max(nextLSN, active.firstLSN) }
        plan.nextLSN = nextLSN
        if let first = plan.live.first(where: { $0.firstLSN > 0 })?.firstLSN,
           let last = plan.live.last(where: { $0.lastLSN > 0 })?.lastLSN, last >= first {
            plan.report.lsnRange = first...last
        }
        return plan
    }

    private func setAside(_ plan: inout RecoveryPlan, _ file: RecoveryPlan.SegmentFile) {
        plan.files.append(file)
        guard case .quarantine(let reason) = file.fate else { return }
        let target = directory + "/" + Format.quarantineDirectoryName + "/" + Format.segmentFileName(file.sequence)
        plan.report.quarantinedSegments.append(.init(segment: file.sequence, path: target, reason: reason.text))
    }

    /// Reads and checks one segment's header and first slot with pread. `.failure` carries why
    /// the file is unusable; a newer format version throws.
    private func examine(path: String) throws -> Result<Examined, RecoveryPlan.QuarantineReason> {
        let file = try OpenFile.open(path, writable: false)
        defer { file.closeQuietly() }
        let size = try file.size()
        guard size >= Format.segmentHeaderBlock + Format.recordHeaderSize else { return .failure(.tooShort(size: size)) }
        var raw = [UInt8](repeating: 0, count: Format.segmentHeaderSize)
        do {
            _ = try raw.withUnsafeMutableBytes { try file.read(into: $0, at: 0) }
        } catch let error as WALError where error.errno == EIO {
            return .failure(.unreadableHeader(errno: EIO))
        }
        let header: SegmentHeader
        switch raw.withUnsafeBytes({ SegmentHeader.decode($0) }) {
        case .success(let decoded): header = decoded
        case .failure(.badMagic): return .failure(.badMagic)
        case .failure(.badChecksum): return .failure(.badChecksum)
        case .failure(.unsupportedVersion(let version)):
            throw WALError(.unsupportedVersion(found: version, supported: Format.version), path: path, operation: "open",
                           hint: "This segment was written by a SignalWAL with format version \(version); this build reads versions \(Format.readableVersions.lowerBound)-\(Format.version). Run the newer build (a downgrade cannot read it), or restore a backup made by this version.")
        }
        guard header.segmentSize == UInt64(size), size <= Format.maximumSegmentSize, size >= Format.minimumSegmentSize else {
            return .failure(.sizeMismatch(header: header.segmentSize, file: size))
        }
        // Records exist when the header says so, or when the first slot carries this epoch
        // (the header's first LSN may not have reached the disk with the first flush).
        var slot = [UInt8](repeating: 0, count: Format.recordHeaderSize)
        let slotEpoch = (try? slot.withUnsafeMutableBytes { try file.read(into: $0, at: Format.segmentHeaderBlock) })
            .map { _ in slot.withUnsafeBytes { RecordHeader.load(from: $0).epoch } }
        let hasRecords = header.firstLSN != 0 || slotEpoch == nil || slotEpoch == header.epoch
        return .success(Examined(header: header, size: size, hasRecords: hasRecords))
    }

    /// Scans the live segments oldest first: damage, the batch each record belongs to, and the
    /// tail. Fills `plan.live`, `plan.activeHeader`, the report, the preserves and the tail.
    private func scanLive(_ live: [(file: RecoveryPlan.SegmentFile, examined: Examined)],
                          plan: inout RecoveryPlan) throws -> (last: LSN, floor: LSN) {
        var infos: [SegmentInfo] = []
        var lastLSN: LSN = 0
        var expected: LSN? = nil
        // Damage whose lost LSNs are known only when the next valid record shows up, which may
        // be in the next segment.
        var pending: Int? = nil
        var batches = BatchAssembler()
        var lsnFloor: LSN = 0
        // For a last batch whose first records are missing behind zeros (a flush whose later
        // pages reached the disk first): the first zeroed range since the last complete batch.
        var zeroedSinceBatch: (damage: Int, start: BatchAssembler.Start)? = nil
        var headlessTail: (lsns: ClosedRange<LSN>, start: BatchAssembler.Start)? = nil
        var lastLSNSeen: LSN = 0
        var newestJunk: (offset: Int, length: Int, torn: Bool)? = nil
        for (index, entry) in live.enumerated() {
            let isNewest = index == live.count - 1
            let header = entry.examined.header
            let file = try OpenFile.open(entry.file.path, writable: false)
            let image = try SegmentImage(file: file, length: entry.examined.size, dropCache: true)
            file.closeQuietly()
            let bytes = image.bytes
            plan.report.segmentsScanned += 1
            var info = SegmentInfo(sequence: header.sequence, path: entry.file.path, epoch: header.epoch, size: entry.examined.size,
                                   firstLSN: 0, lastLSN: 0, endOffset: Format.segmentHeaderBlock)
            for range in image.unreadable {
                plan.report.damage.append(.init(kind: .unreadable, segment: header.sequence, offset: range.lowerBound,
                                                length: range.count, lostLSNs: nil, quarantineFile: nil))
                logDamage(plan.report.damage.last!)
            }
            var unreadable = image.unreadable
            var scanner = SegmentScanner(bytes: bytes, epoch: header.epoch, maxPayload: Format.largestPayload(segmentSize: entry.examined.size),
                                         previousLSN: lastLSN, firstLSN: header.firstLSN,
                                         unissuedFloor: plan.storedFloorGapUnissued ? plan.storedFloor : 0)
            if expected == nil, header.firstLSN > 0 { expected = header.firstLSN }
            while let event = scanner.next() {
                switch event {
                case .record(let offset, let record):
                    // A jump to or past an unissued floor: only LSNs from the floor up to this
                    // record were ever handed out, so only they can be lost.
                    var want = expected
                    let floor = plan.storedFloor
                    if plan.storedFloorGapUnissued, let w = want, w < floor, record.lsn >= floor { want = floor }
                    if let want, record.lsn == want, want != expected, let damage = pending {
                        // Junk between the last record and the first at the floor lost nothing.
                        logDamage(plan.report.damage[damage])
                    } else if let want = want, record.lsn > want {
                        let lost = want...(record.lsn - 1)
                        if let damage = pending {
                            plan.report.damage[damage].lostLSNs = lost
                        } else {
                            plan.report.damage.append(.init(kind: .missingRecords, segment: header.sequence, offset: offset,
                                                            length: 0, lostLSNs: lost, quarantineFile: nil))
                        }
                        logDamage(plan.report.damage[pending ?? plan.report.damage.count - 1])
                    } else if let damage = pending {
                        logDamage(plan.report.damage[damage])
                    }
                    pending = nil
                    expected = record.lsn + 1
                    lastLSNSeen = record.lsn
                    if info.firstLSN == 0 { info.firstLSN = record.lsn }
                    info.lastLSN = record.lsn
                    plan.report.recordsRecovered += 1
                    // Only the last batch can be incomplete after a crash. Mid-log, a batch
                    // that lost a record to damage keeps its surviving records: they were
                    // acknowledged, and dropping them would only lose more.
                    headlessTail = nil
                    for outcome in batches.add(record, segment: header.sequence, offset: offset) {
                        switch outcome {
                        case .complete:
                            zeroedSinceBatch = nil
                        case .incomplete(let lsns, let start) where lsns.upperBound == record.lsn:
                            // A batch that ends here without its first records.
                            headlessTail = (lsns, start)
                        case .incomplete:
                            break
                        }
                    }
                case .damaged(let offset, let length, let resume, let allZero):
                    plan.report.damage.append(.init(kind: allZero ? .zeroedRange : .corruptRecords, segment: header.sequence,
                                                    offset: offset, length: length, lostLSNs: nil, quarantineFile: nil))
                    pending = plan.report.damage.count - 1
                    // Where the next record should start there is a zero header: the log's end
                    // as the writer left it, with later pages of the same flush on disk.
                    let zeroHeader = UnsafeRawBufferPointer(rebasing: bytes[offset..<min(bytes.count, offset + Format.recordHeaderSize)])
                        .allSatisfy { $0 == 0 }
                    if (allZero || zeroHeader) && zeroedSinceBatch == nil {
                        zeroedSinceBatch = (pending!, BatchAssembler.Start(lsn: lastLSNSeen + 1, segment: header.sequence, offset: offset))
                    }
                    info.damaged.append(offset..<resume)
                    unreadable.removeAll { $0.lowerBound >= offset && $0.upperBound <= resume }
                    plan.preserves.append(.init(segment: header.sequence, path: entry.file.path, offset: offset, length: length,
                                                damageIndex: pending!))
                case .end(let offset, let torn):
                    info.endOffset = offset
                    if isNewest {
                        // Bytes after the last record: a torn record, or (in a file never
                        // recycled, where nothing but zeros can follow) damage.
                        let rest = UnsafeRawBufferPointer(rebasing: bytes[offset...])
                        let junk = (rest.lastIndex { $0 != 0 }).map { $0 + 1 } ?? 0
                        // A zero slot with the first non-zero byte in a later 4 KiB block is a
                        // flush whose later pages reached the disk before this one (writeback
                        // or device order): a torn write, not damage over records.
                        let firstNonZero = rest.firstIndex { $0 != 0 } ?? 0
                        let reordered = offset + firstNonZero >= (offset / 4096 + 1) * 4096
                        if junk > 0 && (torn || !header.mayHoldStaleBytes) { newestJunk = (offset, junk, torn || reordered) }
                    } else if torn {
                        let slot = RecordHeader.load(from: UnsafeRawBufferPointer(rebasing: bytes[offset..<offset + Format.recordHeaderSize]))
                        let span = Int(slot.length) <= entry.examined.size - offset - Format.recordHeaderSize
                            ? Format.recordSpan(payloadLength: Int(slot.length)) : Format.recordHeaderSize
                        let length = min(span, entry.examined.size - offset)
                        plan.report.damage.append(.init(kind: .corruptTail, segment: header.sequence, offset: offset, length: length,
                                                        lostLSNs: nil, quarantineFile: nil))
                        pending = plan.report.damage.count - 1
                        plan.preserves.append(.init(segment: header.sequence, path: entry.file.path, offset: offset, length: length,
                                                    damageIndex: pending!))
                    }
                }
            }
            // Unreadable blocks outside any damaged range (after the last record, say) are
            // stepped over by readers too.
            info.damaged = (info.damaged + unreadable).sorted { $0.lowerBound < $1.lowerBound }
            if info.lastLSN > 0 { lastLSN = info.lastLSN }
            infos.append(info)
            if isNewest { plan.activeHeader = header }
        }
        if let damage = pending, !plan.report.damage[damage].isCrashLeftover, !live.isEmpty {
            logDamage(plan.report.damage[damage])
        }

        // The end of the log: the newest segment's junk, then an incomplete last batch.
        if let junk = newestJunk, let newest = live.last {
            let sequence = newest.examined.header.sequence
            // Garbage (not a torn write) may have destroyed acknowledged records: as many as
            // fit in it are counted lost, and their LSNs are never handed out again.
            let lost: ClosedRange<LSN>? = junk.torn ? nil
                : (lastLSN + 1)...(lastLSN + UInt64(max(1, junk.length / Format.recordHeaderSize)))
            plan.report.damage.append(.init(kind: junk.torn ? .tornTail : .corruptTail, segment: sequence, offset: junk.offset,
                                            length: junk.length, lostLSNs: lost, quarantineFile: nil))
            if let lost { lsnFloor = lost.upperBound + 1 }
            plan.preserves.append(.init(segment: sequence, path: newest.file.path, offset: junk.offset,
                                        length: min(junk.length, Self.tailCopyLimit), damageIndex: plan.report.damage.count - 1))
            plan.tail = .init(segment: sequence, path: newest.file.path, offset: junk.offset,
                              reason: junk.torn ? .tornRecord : .garbageAfterEnd)
            if junk.torn {
                logger.warning("dropped a torn record at the end of the log (a write cut short by a crash); its bytes were copied to quarantine and zeroed",
                               metadata: ["segment": "\(sequence)", "offset": "\(junk.offset)", "bytes": "\(junk.length)"])
            } else {
                logDamage(plan.report.damage.last!)
            }
        }
        var unfinished: (lsns: ClosedRange<LSN>, start: BatchAssembler.Start)? = nil
        if case .incomplete(let lsns, let start)? = batches.finish() {
            unfinished = (lsns, start)
            plan.report.damage.append(.init(kind: .incompleteBatch, segment: start.segment, offset: start.offset, length: 0,
                                            lostLSNs: lsns, quarantineFile: nil))
            plan.report.recordsRecovered -= lsns.count
        } else if let headless = headlessTail, let zeroed = zeroedSinceBatch {
            // The log ends with a batch whose first records are zeros: it never reached the
            // disk whole (never acknowledged). The zeroed range is part of it, not damage.
            let lsns = zeroed.start.lsn...headless.lsns.upperBound
            plan.report.damage[zeroed.damage].kind = .incompleteBatch
            plan.report.damage[zeroed.damage].lostLSNs = lsns
            plan.preserves.removeAll { $0.damageIndex == zeroed.damage }
            plan.report.recordsRecovered -= headless.lsns.count
            unfinished = (lsns, zeroed.start)
        }
        if let (lsns, start) = unfinished {
            // Never acknowledged (a batch is acknowledged once its last record is durable) and
            // never visible: dropped whole, from its first record on, and its LSNs reused.
            logger.warning("dropped the last batch of the log: its final record never reached the disk (a crash during the append), so none of it was acknowledged",
                           metadata: ["segment": "\(start.segment)", "offset": "\(start.offset)", "lsns": "\(lsns.lowerBound)-\(lsns.upperBound)"])
            guard let keep = infos.firstIndex(where: { $0.sequence == start.segment }) else { preconditionFailure("batch outside the scan") }
            // Later segments hold only the rest of this batch: deleted (their tail bytes were
            // copied aside first, see apply).
            for later in infos[(keep + 1)...] {
                if let index = plan.files.firstIndex(where: { $0.path == later.path }) { plan.files[index].fate = .discard }
            }
            infos.removeSubrange((keep + 1)...)
            infos[keep].endOffset = start.offset
            if infos[keep].firstLSN == 0 || infos[keep].firstLSN >= start.lsn {
                infos[keep].firstLSN = 0
                infos[keep].lastLSN = 0
            } else {
                infos[keep].lastLSN = start.lsn - 1
            }
            infos[keep].damaged.removeAll { $0.lowerBound >= start.offset }
            plan.tail = .init(segment: start.segment, path: infos[keep].path, offset: start.offset, reason: .incompleteBatch)
            plan.activeHeader = live.first { $0.examined.header.sequence == start.segment }?.examined.header
            lastLSN = lsns.lowerBound - 1
        }
        if let newest = infos.indices.last, infos[newest].lastLSN == 0 {
            // The newest segment lost every record: its first record will be the next one.
            infos[newest].firstLSN = 0
        }
        plan.live = infos
        return (lastLSN, lsnFloor)
    }

    /// For a segment with an unusable header newer than every live segment: the LSNs it may
    /// have held, so none is handed out again. Its records are found with the epoch of the
    /// record in its first slot; when that slot is zero it never held a record (nil); when the
    /// slot is not a valid record, the most a segment can hold is assumed.
    private func salvageBound(path: String, after last: LSN) throws -> ClosedRange<LSN>? {
        guard let file = try? OpenFile.open(path, writable: false) else { return nil }
        defer { file.closeQuietly() }
        let size = (try? file.size()) ?? 0
        guard size >= Format.segmentHeaderBlock + Format.recordHeaderSize else { return nil }
        guard let image = try? SegmentImage(file: file, length: min(size, Format.maximumSegmentSize), dropCache: true) else {
            return (last + 1)...(last + UInt64(size / Format.recordHeaderSize))
        }
        let slot = UnsafeRawBufferPointer(rebasing: image.bytes[Format.segmentHeaderBlock..<Format.segmentHeaderBlock + Format.recordHeaderSize])
        if slot.allSatisfy({ $0 == 0 }) { return nil }
        let first = RecordHeader.load(from: slot)
        var scanner = SegmentScanner(bytes: image.bytes, epoch: first.epoch, maxPayload: Format.largestPayload(segmentSize: size),
                                     previousLSN: last)
        var highest: LSN? = nil
        if scanner.validRecord(at: Format.segmentHeaderBlock, after: 0) != nil {
            scanner = SegmentScanner(bytes: image.bytes, epoch: first.epoch, maxPayload: Format.largestPayload(segmentSize: size), previousLSN: 0)
            while let event = scanner.next() {
                if case .record(_, let record) = event { highest = max(highest ?? 0, record.lsn) }
            }
        }
        if let highest, highest <= last { return nil }
        let upper = highest ?? (last + UInt64((size - Format.segmentHeaderBlock) / Format.recordHeaderSize))
        return (last + 1)...upper
    }

    private func logDamage(_ damage: RecoveryReport.Damage) {
        logger.error("skipped damaged bytes in a segment", metadata: [
            "kind": "\(damage.kind.rawValue)", "segment": "\(damage.segment)", "offset": "\(damage.offset)",
            "length": "\(damage.length)",
            "lost_lsns": "\(damage.lostLSNs.map { "\($0.lowerBound)-\($0.upperBound)" } ?? "unknown")",
            "quarantine_file": "\(damage.quarantineFile ?? "none")"])
    }

    // MARK: Application

    /// Carries out `plan`: deletes leftovers, copies damaged ranges aside, moves unusable
    /// segments to quarantine, deletes discarded segments, zeroes the tail, and maps the active
    /// segment. Every step can be repeated, so a crash in the middle leaves a directory the
    /// next open plans the rest of.
    func apply(_ plan: RecoveryPlan) throws -> RecoveredState {
        var report = plan.report
        let quarantine = Quarantine(directory: directory, access: configuration.fileAccess)
        for path in plan.temporaryFiles {
            try FileSystem.remove(path)
            logger.notice("removed a leftover temporary file from an interrupted write", metadata: ["file": "\(path)"])
        }
        if !plan.temporaryFiles.isEmpty { try FileSystem.syncDirectory(directory) }
        // Made while there is space, so a later quarantine on a full disk needs only a rename.
        quarantine.prepareDirectory(logger: logger)

        for preserve in plan.preserves {
            do {
                let file = try OpenFile.open(preserve.path, writable: false)
                defer { file.closeQuietly() }
                var bytes = [UInt8](repeating: 0, count: preserve.length)
                let count = try bytes.withUnsafeMutableBytes { try file.read(into: $0, at: preserve.offset) }
                let copy = try bytes[0..<count].withUnsafeBytes {
                    try quarantine.preserve($0, sequence: preserve.segment, offset: preserve.offset)
                }
                report.damage[preserve.damageIndex].quarantineFile = copy
                report.quarantinedFiles.append(copy)
            } catch {
                logger.error("could not copy damaged bytes to quarantine; recovery goes on without the copy", metadata: [
                    "segment": "\(preserve.segment)", "offset": "\(preserve.offset)", "error": "\(error)"])
            }
        }

        // The floor first: once the evidence is quarantined or zeroed, nothing else remembers
        // that those LSNs may have been acknowledged.
        var floorStored = true
        if let floor = plan.newFloor {
            do {
                // A floor over lost records: LSNs below it may have been handed out.
                try CheckpointFile.store(plan.checkpointLSN, floor: floor, floorGapUnissued: false, directory: directory, access: configuration.fileAccess)
            } catch {
                // Not fatal (a WAL that cannot open helps nobody): this run still starts above
                // the floor, and the evidence is left in place (below) so the next open finds
                // the same damage and raises the floor again.
                floorStored = false
                logger.error("could not store the LSN floor in the checkpoint file; the damaged files are left where they are", metadata: [
                    "floor": "\(floor)", "error": "\(error)"])
            }
        }
        var reusable: [String] = []
        var quarantined = 0
        var discarded = false
        for file in plan.files {
            switch file.fate {
            case .live:
                break
            case .reuse:
                reusable.append(file.path)
            case .quarantine(let reason):
                if !floorStored && file.header == nil && file.sequence > (plan.live.last?.sequence ?? 0) {
                    // Its LSNs are remembered only by this file until the floor is stored.
                    quarantined += 1
                    continue
                }
                let moved = try quarantine.moveSegment(file.path, fileName: Format.segmentFileName(file.sequence), logger: logger)
                if quarantined < report.quarantinedSegments.count { report.quarantinedSegments[quarantined].path = moved }
                quarantined += 1
                report.quarantinedFiles.append(moved)
                logger.error("quarantined a whole segment: its records are skipped", metadata: [
                    "segment": "\(file.sequence)", "file": "\(file.path)", "moved_to": "\(moved)", "reason": "\(reason.text)"])
            case .discard:
                try FileSystem.remove(file.path)
                discarded = true
            }
        }
        if discarded { try FileSystem.syncDirectory(directory) }
        // Whether the writer may go on in the newest segment: not when its tail could not be
        // made zero (an unreadable block), nor when garbage there is the only record of LSNs
        // the floor could not be stored for. It is then kept as a sealed segment, and the next
        // record starts a fresh one.
        var resumable = true
        if let tail = plan.tail {
            if tail.reason == .garbageAfterEnd && !floorStored {
                resumable = false
            } else {
                let (zeroed, complete) = try zeroTail(path: tail.path, from: tail.offset)
                if !complete { resumable = false }
                if let index = report.damage.lastIndex(where: { $0.kind == .tornTail && $0.segment == tail.segment }) {
                    report.damage[index].length = max(report.damage[index].length, zeroed)
                }
            }
        }
        if let last = plan.live.last, last.damaged.contains(where: { $0.upperBound > last.endOffset }) {
            // Unreadable blocks past the end: writing there would fault (mapped) or hide
            // records from readers, who step over damaged ranges.
            resumable = false
        }

        var active: Segment?
        if resumable, let last = plan.live.last, let header = plan.activeHeader {
            active = try Segment.open(path: last.path, header: header, writable: true)
        }
        return RecoveredState(checkpointLSN: plan.checkpointLSN, lsnFloor: max(plan.storedFloor, plan.newFloor ?? 0),
                              floorGapUnissued: plan.newFloor == nil && plan.storedFloorGapUnissued,
                              segments: plan.live, active: active, reusable: reusable,
                              nextSequence: plan.nextSequence, nextLSN: plan.nextLSN, report: report)
    }

    /// Zeroes every 4 KiB page of `path` from `offset` to the end that holds a non-zero byte
    /// (with pread and pwrite, never through a mapping), and makes it durable. The pages after
    /// the first are zeroed and synced before the first one, so a crash in the middle leaves
    /// the tail's start as it was and the next open plans the same tail (zeroing the first
    /// page first would leave zeros with records after them: a false mid-log loss). A page
    /// that cannot be read (EIO) is overwritten with zeros anyway (a write lets the drive remap
    /// it). Returns the bytes zeroed, and false when some page could not be zeroed.
    private func zeroTail(path: String, from offset: Int) throws -> (zeroed: Int, complete: Bool) {
        let file = try OpenFile.open(path, writable: true)
        defer { file.closeQuietly() }
        let size = try file.size()
        let page = 4096
        var buffer = [UInt8](repeating: 0, count: page)
        let zeros = [UInt8](repeating: 0, count: page)
        var zeroed = 0
        var complete = true
        func zeroPage(_ start: Int) {
            let end = min(size, (start / page + 1) * page)
            let count = end - start
            do {
                let read = try buffer.withUnsafeMutableBytes { try file.read(into: UnsafeMutableRawBufferPointer(rebasing: $0[0..<count]), at: start) }
                guard buffer[0..<read].contains(where: { $0 != 0 }) else { return }
            } catch {
                logger.error("a page of the tail cannot be read; writing zeros over it", metadata: [
                    "file": "\(path)", "offset": "\(start)", "error": "\(error)"])
            }
            do {
                try zeros.withUnsafeBytes { try file.write(UnsafeRawBufferPointer(rebasing: $0[0..<count]), at: start) }
                zeroed += count
            } catch {
                complete = false
                logger.error("could not zero a page of the tail", metadata: ["file": "\(path)", "offset": "\(start)", "error": "\(error)"])
            }
        }
        let firstPageEnd = min(size, (offset / page + 1) * page)
        var start = firstPageEnd
        while start < size {
            zeroPage(start)
            start += page
        }
        if zeroed > 0 { try file.dataSync() }
        let before = zeroed
        if offset < firstPageEnd { zeroPage(offset) }
        if zeroed > before { try file.dataSync() }
        return (zeroed, complete)
    }
}
