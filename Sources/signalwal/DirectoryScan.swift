import Foundation
import SignalWAL

/// Every segment of a WAL directory scanned once, read-only, with what `inspect` and `verify`
/// derive from it: segment states, pending records, damage and LSN gaps between segments.
struct DirectoryScan {
    let directory: WALDirectory
    let checkpoint: WALDirectory.CheckpointState
    var segments: [WALDirectory.SegmentSummary] = []
    var pendingRecords = 0
    var pendingBytes = 0
    var totalBytes = 0
    /// What the next open would do with each file: the engine's own plan (nil when it cannot
    /// be made, for example a newer format version).
    var plan: RecoveryPlan? = nil

    var checkpointLSN: LSN {
        if case .found(let lsn) = checkpoint { return lsn }
        return 0
    }

    /// Scans every segment; `progress(scannedBytes, totalBytes)` is called as it goes.
    /// With `plan`, also asks the engine what the next open would do with each file (which
    /// reads every live segment once more), for ``state(of:)``.
    init(_ directory: WALDirectory, plan withPlan: Bool = false, progress: (Int, Int) -> Void = { _, _ in }) throws {
        self.directory = directory
        checkpoint = try directory.checkpoint()
        let files = try directory.segmentFiles()
        let sizes = files.map { file -> Int in
            var st = stat()
            return stat(file.path, &st) == 0 ? Int(st.st_size) : 0
        }
        totalBytes = sizes.reduce(0, +)
        var done = 0
        let consumed = checkpointLSN
        var pendingRecords = 0
        var pendingBytes = 0
        for (file, size) in zip(files, sizes) {
            let summary = try directory.scan(file, visit: { record, _ in
                if record.lsn > consumed {
                    pendingRecords += 1
                    pendingBytes += record.length
                }
                return true
            }, progress: { progress(done + $0, totalBytes) })
            segments.append(summary)
            done += size
            progress(done, totalBytes)
        }
        self.pendingRecords = pendingRecords
        self.pendingBytes = pendingBytes
        if withPlan {
            var configuration = Configuration()
            configuration.logger.logLevel = .critical
            plan = try? directory.recoveryPlan(configuration: configuration)
        }
    }

    /// The newest segment holding records: the one being appended to.
    var activeSequence: UInt64? { segments.last { $0.records > 0 }?.sequence }

    /// active / sealed / spare / reusable / corrupt / discard: the fate the engine's recovery
    /// plan gives the file (from the scan alone when there is no plan).
    func state(of segment: WALDirectory.SegmentSummary) -> String {
        if let plan, let file = plan.files.first(where: { $0.path == segment.path }) {
            switch file.fate {
            case .live: return plan.files.last(where: { $0.fate == .live })?.path == segment.path ? "active" : "sealed"
            case .reuse(.spare): return "spare"
            case .reuse: return "reusable"
            case .quarantine: return "corrupt"
            case .discard: return "discard"
            }
        }
        guard segment.header != nil else { return "corrupt" }
        let active = activeSequence
        if segment.records > 0 {
            if segment.sequence == active { return "active" }
            return (segment.lastLSN ?? 0) <= checkpointLSN ? "reusable" : "sealed"
        }
        return active.map { segment.sequence > $0 } ?? true ? "spare" : "reusable"
    }

    /// Records missing between consecutive segments with no damage inside either to explain
    /// them (a segment lost or quarantined, for example).
    var gaps: [(after: LSN, before: LSN, segment: UInt64)] {
        var result: [(LSN, LSN, UInt64)] = []
        var previous: LSN?
        for segment in segments where segment.records > 0 {
            if let previous, let first = segment.firstLSN, first > previous + 1, previous >= checkpointLSN {
                result.append((previous, first, segment.sequence))
            }
            previous = segment.lastLSN
        }
        return result
    }

    /// Every problem found: damage inside segments, then gaps between them.
    var problems: [Problem] {
        var result = segments.flatMap { segment in
            segment.damage.map { damage in
                // Recovery copies a corrupt stretch here the first time it meets it.
                let copy = directory.path + "/" + Format.quarantineDirectoryName + "/"
                    + Format.quarantineFileName(sequence: damage.segment, offset: damage.offset)
                return Problem(kind: damage.kind.rawValue, segment: damage.segment, file: segment.path, offset: damage.offset,
                               length: damage.length, afterLSN: damage.afterLSN, beforeLSN: damage.beforeLSN, detail: damage.detail,
                               quarantined: damage.kind == .corruptRecords && access(copy, F_OK) == 0 ? copy : nil)
            }
        }
        for gap in gaps {
            let path = segments.first { $0.sequence == gap.segment }?.path ?? ""
            result.append(Problem(kind: "missing-records", segment: gap.segment, file: path, offset: 0, length: 0,
                                  afterLSN: gap.after, beforeLSN: gap.before,
                                  detail: "LSNs \(gap.after + 1)-\(gap.before - 1) are in no segment"))
        }
        return result
    }

    struct Problem: Codable, Equatable {
        var kind: String
        var segment: UInt64
        var file: String
        var offset: Int
        var length: Int
        /// The last good record before the problem.
        var afterLSN: LSN?
        /// The first good record after it, in the same segment.
        var beforeLSN: LSN?
        var detail: String
        /// Where recovery already set these bytes aside, if it has.
        var quarantined: String? = nil

        /// One line for people.
        var line: String {
            var text = "\(kind) in segment \(segment) (\(file)) at offset \(offset)"
            if length > 0 { text += ", \(length) bytes" }
            switch (afterLSN, beforeLSN) {
            case let (after?, before?) where before > after + 1: text += ", LSNs \(after + 1)-\(before - 1) lost"
            case let (after?, _): text += ", after LSN \(after)"
            case let (nil, before?): text += ", before LSN \(before)"
            default: break
            }
            return text + ": " + detail + (quarantined.map { " (already quarantined: \($0))" } ?? "")
        }
    }
}

/// JSON with sorted keys, one object, for `--json`.
func printJSON<T: Encodable>(_ value: T) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]
    print(String(decoding: try encoder.encode(value), as: UTF8.self))
}
