/// What recovery will do to a WAL directory, decided before anything is changed (as etcd
/// separates its decoder from its repair): for each segment file its fate and the reason, the
/// tail action, the damaged ranges to copy aside, and the LSN and sequence the WAL continues
/// from. ``WAL/open(directory:configuration:)`` applies it; `signalwal repair` prints it as
/// its dry run and `signalwal inspect` shows the fates. Each reason is a row of the table in
/// docs/RECOVERY.md.
public struct RecoveryPlan: Sendable {
    /// What happens to one segment file.
    public enum Fate: Sendable, Equatable {
        /// It holds records above the checkpoint: scanned and kept (the newest is the active
        /// segment).
        case live
        /// Recycled into a spare (new epoch) or deleted when surplus.
        case reuse(ReuseReason)
        /// Moved whole into `quarantine/`.
        case quarantine(QuarantineReason)
        /// Deleted: it held nothing but the rest of an incomplete batch at the end of the log.
        case discard
    }

    public enum ReuseReason: String, Sendable, Equatable {
        /// Every record in it is at or below the checkpoint.
        case belowCheckpoint = "below-checkpoint"
        /// A prepared spare with no records. Recycled rather than used as it is, so it gets a
        /// new epoch: records of its old epoch that a cut during its first flush left past the
        /// first slot can never come back.
        case spare
        /// A spare whose header names another sequence: a reuse interrupted between writing
        /// the header and renaming the file.
        case interruptedReuse = "interrupted-reuse"
    }

    public enum QuarantineReason: Error, Sendable, Equatable {
        case tooShort(size: Int)
        case badMagic
        case badChecksum
        /// The header could not be read (EIO).
        case unreadableHeader(errno: Int32)
        case sizeMismatch(header: UInt64, file: Int)
        /// A valid header for another sequence, with records: a copy or a misplaced file.
        case copy(headerSequence: UInt64)

        /// For logs and reports.
        public var text: String {
            switch self {
            case .tooShort(let size): return "the file is \(size) bytes, too short for a segment header"
            case .badMagic: return "the segment header's magic number is wrong"
            case .badChecksum: return "the segment header's CRC does not match"
            case .unreadableHeader(let code): return "the segment header cannot be read (errno \(code))"
            case .sizeMismatch(let header, let file): return "the header says \(header) bytes but the file is \(file) bytes"
            case .copy(let sequence): return "its header says segment \(sequence) but its name says otherwise: a copy or a misplaced file"
            }
        }
    }

    /// Why the end of the newest segment is rewritten.
    public enum TailReason: String, Sendable, Equatable {
        /// A record cut short by a crash: dropped and zeroed.
        case tornRecord = "torn-record"
        /// Non-zero bytes after the last record of a never-recycled segment, which can only be
        /// damage (perhaps over acknowledged records): copied to quarantine, zeroed, reported.
        case garbageAfterEnd = "garbage-after-end"
        /// The last batch's final record never reached the disk: the whole batch is dropped.
        case incompleteBatch = "incomplete-batch"
    }

    public struct SegmentFile: Sendable, Equatable {
        /// The sequence in the file name.
        public var sequence: UInt64
        public var path: String
        /// Nil when the header could not be used.
        public var header: SegmentHeader?
        public var fate: Fate
    }

    /// The rewrite at the end of the log: every non-zero page of `path` from `offset` on is
    /// zeroed, and the next record goes at `offset`.
    public struct Tail: Sendable, Equatable {
        public var segment: UInt64
        public var path: String
        public var offset: Int
        public var reason: TailReason
    }

    /// A damaged range copied to `quarantine/segment-<seq>-offset-<offset>.bin`.
    public struct Preserve: Sendable, Equatable {
        public var segment: UInt64
        public var path: String
        public var offset: Int
        public var length: Int
        /// The damage entry in ``report`` the copy belongs to.
        public internal(set) var damageIndex: Int
    }

    /// Leftover `*.tmp` files, deleted.
    public internal(set) var temporaryFiles: [String] = []
    /// Every segment file, by sequence.
    public internal(set) var files: [SegmentFile] = []
    public internal(set) var tail: Tail?
    public internal(set) var preserves: [Preserve] = []
    public internal(set) var checkpointLSN: LSN = 0
    /// The LSN floor the checkpoint file holds.
    public internal(set) var storedFloor: LSN = 0
    /// Whether the stored floor's gap was never handed out (``CheckpointRecord/floorGapUnissued``).
    public internal(set) var storedFloorGapUnissued = false
    /// A higher floor to store before the tail is rewritten (damage destroyed records whose
    /// LSNs may have been acknowledged), or nil.
    public internal(set) var newFloor: LSN?
    public internal(set) var nextLSN: LSN = 1
    public internal(set) var nextSequence: UInt64 = 1
    /// What opening reports (the quarantine paths are the intended ones until applied).
    public internal(set) var report = RecoveryReport()
    /// The live segments as the catalog will hold them, oldest first.
    var live: [SegmentInfo] = []
    /// The active (newest live) segment's header.
    var activeHeader: SegmentHeader?

    /// Whether applying this plan changes any file.
    public var changesFiles: Bool {
        !temporaryFiles.isEmpty || tail != nil || !preserves.isEmpty || newFloor != nil
            || files.contains { if case .quarantine = $0.fate { return true }; return $0.fate == .discard }
    }
}
