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
}

/// What recovery hands to the WAL.
struct RecoveredState {
    var checkpointLSN: LSN
    /// Segments with records, oldest first; the last one is the active segment.
    var segments: [SegmentInfo]
    /// The active segment, mapped writable, when there is one.
    var active: Segment?
    var spares: [Segment]
    var reusable: [String]
    var nextSequence: UInt64
    var nextLSN: LSN
    var report: RecoveryReport
}

/// Recovery on open. Each case has a name, a rule and a test (see `docs/RECOVERY.md`):
///
/// | case | rule |
/// |---|---|
/// | leftover `*.tmp` | an interrupted preparation or checkpoint write: deleted |
/// | torn tail | partial record at the end of the newest segment: dropped, rest zeroed, warning |
/// | corrupt record mid-segment | skipped, bytes copied to quarantine, scan resumes at the next valid record, error |
/// | corrupt segment header | whole file moved to quarantine, error, the rest opens |
/// | header/file-name mismatch | an empty leftover of an interrupted reuse: reused; with records (a copy): quarantined |
/// | stale records in a reused segment | carry an old epoch: never returned, read as the end |
/// | missing or corrupt checkpoint | replay from the oldest record (at-least-once), warning |
/// | unknown format version | open refused with ``WALError/Kind/unsupportedVersion(found:supported:)`` |
///
/// Recovery only rewrites bytes for a torn tail (zeroing it), so the same corruption gives the
/// same outcome on every open and recovery never crash-loops.
struct Recovery {
    let directory: String
    let configuration: Configuration
    var logger: Logger { configuration.logger }

    private struct Candidate {
        var nameSequence: UInt64
        var path: String
        var header: SegmentHeader
        var segment: Segment
        var firstLSN: LSN
        var hasRecords: Bool
    }

    func run() throws -> RecoveredState {
        var report = RecoveryReport()
        let quarantine = Quarantine(directory: directory)
        var highestSequence: UInt64 = 0
        var reusable: [String] = []

        // Leftover temporary files and the sequence numbers already used.
        var named: [(UInt64, String)] = []
        for name in try FileSystem.list(directory) {
            if name.hasSuffix(Format.temporarySuffix) {
                try FileSystem.remove(directory + "/" + name)
                report.temporaryFilesRemoved += 1
                logger.notice("removed a leftover temporary file from an interrupted write", metadata: ["file": "\(directory)/\(name)"])
            } else if let sequence = Format.segmentSequence(fromFileName: name) {
                named.append((sequence, directory + "/" + name))
            }
        }
        if report.temporaryFilesRemoved > 0 { try FileSystem.syncDirectory(directory) }
        if FileSystem.kind(of: quarantine.path).isDirectory {
            for name in try FileSystem.list(quarantine.path) where name.hasPrefix("segment-") {
                let digits = name.dropFirst("segment-".count).prefix { $0.isNumber }
                highestSequence = max(highestSequence, UInt64(digits) ?? 0)
            }
        }
        named.sort { $0.0 < $1.0 }

        // Headers: every segment file is classified before any record is read.
        var data: [Candidate] = []
        var spares: [Candidate] = []
        for (sequence, path) in named {
            highestSequence = max(highestSequence, sequence)
            switch try examine(path: path, nameSequence: sequence) {
            case .success(let candidate):
                highestSequence = max(highestSequence, candidate.header.sequence)
                if candidate.header.sequence != sequence {
                    if candidate.hasRecords {
                        candidate.segment.close()
                        let reason = "its header says segment \(candidate.header.sequence) but its name says \(sequence): a copy or a misplaced file"
                        try quarantineSegment(path, sequence: sequence, reason: reason, quarantine: quarantine, report: &report)
                    } else {
                        // An interrupted reuse: the new header was written, the rename was not.
                        candidate.segment.close()
                        reusable.append(path)
                    }
                } else if candidate.hasRecords {
                    data.append(candidate)
                } else {
                    spares.append(candidate)
                }
            case .failure(let reason):
                try quarantineSegment(path, sequence: sequence, reason: reason.text, quarantine: quarantine, report: &report)
            }
        }

        // The checkpoint, or the oldest record when it cannot be read.
        var checkpoint: LSN = 0
        switch try CheckpointFile.load(directory: directory) {
        case .found(let lsn):
            checkpoint = lsn
        case .missing:
            if !data.isEmpty {
                report.checkpointProblem = "missing"
                logger.warning("no checkpoint file: replaying from the oldest record (records may be delivered again)",
                               metadata: ["path": "\(directory)/\(Format.checkpointFileName)"])
            }
        case .corrupt(let why):
            report.checkpointProblem = "corrupt: \(why)"
            logger.warning("the checkpoint file is corrupt: replaying from the oldest record (records may be delivered again)",
                           metadata: ["path": "\(directory)/\(Format.checkpointFileName)", "problem": "\(why)"])
        }
        report.checkpointLSN = checkpoint

        // Segments wholly below the checkpoint are not scanned: they go to the reuse pool.
        var firstLive = 0
        while firstLive + 1 < data.count && data[firstLive + 1].firstLSN <= checkpoint + 1 {
            data[firstLive].segment.close()
            reusable.append(data[firstLive].path)
            firstLive += 1
        }
        report.segmentsReusable = firstLive
        let live = Array(data[firstLive...])

        // Scan what is live, oldest first.
        var infos: [SegmentInfo] = []
        var active: Segment?
        var lastLSN: LSN = 0
        var expected: LSN? = nil
        // Damage whose lost LSNs are known only when the next valid record shows up, which may
        // be in the next segment.
        var pending: Int? = nil
        for (index, candidate) in live.enumerated() {
            let isNewest = index == live.count - 1
            var segment = candidate.segment
            if isNewest {
                // The newest segment becomes the active one: map it writable.
                segment.close()
                segment = try Segment.open(path: candidate.path, header: candidate.header, writable: true)
                active = segment
            }
            let info = try scan(segment: segment, candidate: candidate, isNewest: isNewest, previousLSN: lastLSN,
                                expected: &expected, pending: &pending, quarantine: quarantine, report: &report)
            if info.lastLSN > 0 { lastLSN = info.lastLSN }
            infos.append(info)
            if !isNewest { segment.close() }
        }

        // Spares: those numbered after the newest data segment are ready; any other is reused.
        let newestData = live.last?.header.sequence ?? 0
        var ready: [Segment] = []
        for spare in spares {
            if spare.header.sequence > newestData && spare.header.segmentSize == UInt64(configuration.segmentSize) {
                spare.segment.close()
                ready.append(try Segment.open(path: spare.path, header: spare.header, writable: true))
            } else {
                spare.segment.close()
                reusable.append(spare.path)
            }
        }

        var nextLSN = max(lastLSN + 1, checkpoint + 1)
        if let newest = live.last { nextLSN = max(nextLSN, newest.header.firstLSN) }
        if let first = infos.first?.firstLSN, first > 0, let last = infos.last(where: { $0.lastLSN > 0 })?.lastLSN {
            report.lsnRange = first...last
        }
        if let newest = infos.indices.last, infos[newest].lastLSN == 0 {
            // The newest segment lost every record: its first record will be the next one.
            infos[newest].firstLSN = 0
        }
        return RecoveredState(checkpointLSN: checkpoint, segments: infos, active: active, spares: ready,
                              reusable: reusable, nextSequence: highestSequence + 1, nextLSN: nextLSN, report: report)
    }

    /// Reads and checks one segment's header. `.failure` carries why the file is unusable.
    private func examine(path: String, nameSequence: UInt64) throws -> Result<Candidate, QuarantineReason> {
        let file = try OpenFile.open(path, writable: false)
        defer { file.closeQuietly() }
        let size = try file.size()
        guard size >= Format.segmentHeaderBlock else {
            return .failure(QuarantineReason("the file is \(size) bytes, too short for a segment header"))
        }
        var raw = [UInt8](repeating: 0, count: Format.segmentHeaderSize)
        _ = try raw.withUnsafeMutableBytes { try file.read(into: $0, at: 0) }
        let header: SegmentHeader
        switch raw.withUnsafeBytes({ SegmentHeader.decode($0) }) {
        case .success(let decoded): header = decoded
        case .failure(.badMagic): return .failure(QuarantineReason("the segment header's magic number is wrong"))
        case .failure(.badChecksum): return .failure(QuarantineReason("the segment header's CRC does not match"))
        case .failure(.unsupportedVersion(let version)):
            throw WALError(.unsupportedVersion(found: version, supported: Format.version), path: path, operation: "open",
                           hint: "This segment was written by a SignalWAL with format version \(version); this build reads version \(Format.version). Run the newer build (a downgrade cannot read it), or restore a backup made by this version.")
        }
        guard header.segmentSize == UInt64(size), size <= Format.maximumSegmentSize,
              size >= Format.minimumSegmentSize else {
            return .failure(QuarantineReason("the header says \(header.segmentSize) bytes but the file is \(size) bytes"))
        }
        let segment = try Segment.openForReading(path: path, sequence: header.sequence, epoch: header.epoch, size: size,
                                                 readahead: configuration.backend == .uring)
        var scanner = SegmentScanner(bytes: segment.mapping.bytes, epoch: header.epoch,
                                     maxPayload: Format.largestPayload(segmentSize: size), resynchronize: false)
        var firstLSN = header.firstLSN
        var hasRecords = header.firstLSN != 0
        if case .record(_, let first)? = scanner.next() {
            hasRecords = true
            if firstLSN == 0 { firstLSN = first.lsn }
        }
        return .success(Candidate(nameSequence: nameSequence, path: path, header: header, segment: segment,
                                  firstLSN: firstLSN, hasRecords: hasRecords))
    }

    struct QuarantineReason: Error { let text: String; init(_ text: String) { self.text = text } }

    private func quarantineSegment(_ path: String, sequence: UInt64, reason: String,
                                   quarantine: Quarantine, report: inout RecoveryReport) throws {
        let moved = try quarantine.moveSegment(path, fileName: Format.segmentFileName(sequence))
        report.quarantinedSegments.append(.init(segment: sequence, path: moved, reason: reason))
        report.quarantinedFiles.append(moved)
        logger.error("quarantined a whole segment: its records are skipped", metadata: [
            "segment": "\(sequence)", "file": "\(path)", "moved_to": "\(moved)", "reason": "\(reason)"])
    }

    /// Scans one live segment, recording damage, quarantining damaged bytes, and zeroing a torn
    /// tail of the newest segment.
    private func scan(segment: Segment, candidate: Candidate, isNewest: Bool, previousLSN: LSN, expected: inout LSN?,
                      pending: inout Int?, quarantine: Quarantine, report: inout RecoveryReport) throws -> SegmentInfo {
        report.segmentsScanned += 1
        let bytes = segment.mapping.bytes
        var info = SegmentInfo(sequence: segment.sequence, path: candidate.path, epoch: segment.epoch, size: segment.size,
                               firstLSN: 0, lastLSN: 0, endOffset: Format.segmentHeaderBlock)
        var scanner = SegmentScanner(bytes: bytes, epoch: segment.epoch,
                                     maxPayload: Format.largestPayload(segmentSize: segment.size), previousLSN: previousLSN)
        if expected == nil, candidate.header.firstLSN > 0 { expected = candidate.header.firstLSN }
        while let event = scanner.next() {
            switch event {
            case .record(let offset, let header):
                if let want = expected, header.lsn > want {
                    let lost = want...(header.lsn - 1)
                    if let index = pending {
                        report.damage[index].lostLSNs = lost
                    } else {
                        report.damage.append(.init(kind: .missingRecords, segment: segment.sequence, offset: offset,
                                                   length: 0, lostLSNs: lost, quarantineFile: nil))
                    }
                    logDamage(report.damage[pending ?? report.damage.count - 1])
                } else if let index = pending {
                    logDamage(report.damage[index])
                }
                pending = nil
                expected = header.lsn + 1
                if info.firstLSN == 0 { info.firstLSN = header.lsn }
                info.lastLSN = header.lsn
                report.recordsRecovered += 1
            case .damaged(let offset, let length, _, let allZero):
                let file = preserve(bytes, segment: segment.sequence, offset: offset, length: length, quarantine: quarantine, report: &report)
                report.damage.append(.init(kind: allZero ? .zeroedRange : .corruptRecords, segment: segment.sequence,
                                           offset: offset, length: length, lostLSNs: nil, quarantineFile: file))
                pending = report.damage.count - 1
            case .end(let offset, let torn):
                info.endOffset = offset
                guard torn else { break }
                if isNewest {
                    let zeroed = zeroTail(segment, from: offset)
                    try segment.flush()
                    report.damage.append(.init(kind: .tornTail, segment: segment.sequence, offset: offset, length: zeroed,
                                               lostLSNs: nil, quarantineFile: nil))
                    logger.warning("dropped a torn record at the end of the log (a write cut short by a crash); the rest of the segment was zeroed",
                                   metadata: ["segment": "\(segment.sequence)", "offset": "\(offset)", "bytes_zeroed": "\(zeroed)"])
                } else {
                    let header = RecordHeader.load(from: UnsafeRawBufferPointer(rebasing: bytes[offset..<offset + Format.recordHeaderSize]))
                    let span = Int(header.length) <= segment.size - offset - Format.recordHeaderSize
                        ? Format.recordSpan(payloadLength: Int(header.length)) : Format.recordHeaderSize
                    let length = min(span, segment.size - offset)
                    let file = preserve(bytes, segment: segment.sequence, offset: offset, length: length, quarantine: quarantine, report: &report)
                    report.damage.append(.init(kind: .corruptTail, segment: segment.sequence, offset: offset, length: length,
                                               lostLSNs: nil, quarantineFile: file))
                    pending = report.damage.count - 1
                }
            }
        }
        if let index = pending, report.damage[index].kind != .tornTail, isNewest {
            logDamage(report.damage[index])
        }
        return info
    }

    private func logDamage(_ damage: RecoveryReport.Damage) {
        logger.error("skipped damaged bytes in a segment", metadata: [
            "kind": "\(damage.kind.rawValue)", "segment": "\(damage.segment)", "offset": "\(damage.offset)",
            "length": "\(damage.length)",
            "lost_lsns": "\(damage.lostLSNs.map { "\($0.lowerBound)-\($0.upperBound)" } ?? "unknown")",
            "quarantine_file": "\(damage.quarantineFile ?? "none")"])
    }

    private func preserve(_ bytes: UnsafeRawBufferPointer, segment: UInt64, offset: Int, length: Int,
                          quarantine: Quarantine, report: inout RecoveryReport) -> String? {
        do {
            let path = try quarantine.preserve(UnsafeRawBufferPointer(rebasing: bytes[offset..<offset + length]),
                                               sequence: segment, offset: offset)
            report.quarantinedFiles.append(path)
            return path
        } catch {
            logger.error("could not copy damaged bytes to quarantine; recovery goes on without the copy", metadata: [
                "segment": "\(segment)", "offset": "\(offset)", "error": "\(error)"])
            return nil
        }
    }

    /// Zeroes every page from `offset` to the end of the segment that holds a non-zero byte, so
    /// no remnant of the torn record (or of records after it) can parse later. Returns the bytes
    /// zeroed.
    private func zeroTail(_ segment: Segment, from offset: Int) -> Int {
        let mapping = segment.mapping
        let page = 4096
        var zeroed = 0
        var start = offset
        while start < segment.size {
            let end = min(segment.size, (start / page + 1) * page)
            if !mapping.slice(start, end - start).allSatisfy({ $0 == 0 }) {
                mapping.zero(start, end - start)
                zeroed += end - start
            }
            start = end
        }
        return zeroed
    }
}
