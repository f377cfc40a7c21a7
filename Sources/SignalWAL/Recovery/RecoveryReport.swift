/// What recovery found and did when a ``WAL`` opened. Returned by ``WAL/recoveryReport``.
public struct RecoveryReport: Sendable, Equatable {
    /// One damaged stretch of a segment.
    public struct Damage: Sendable, Equatable {
        public enum Kind: String, Sendable, Equatable {
            /// Bytes that are not a valid record, with valid records after them: skipped.
            case corruptRecords = "corrupt-records"
            /// Zeroed bytes with valid records after them (an overwritten range, or a record that
            /// was reserved but never written before a crash): skipped.
            case zeroedRange = "zeroed-range"
            /// A partial record at the end of the newest segment: copied to quarantine, dropped
            /// and zeroed. Never acknowledged (its flush did not complete).
            case tornTail = "torn-tail"
            /// A damaged last record of a sealed segment, or non-zero bytes after the last
            /// record of a never-recycled newest segment: copied to quarantine and skipped.
            case corruptTail = "corrupt-tail"
            /// LSNs missing between two segments with no visible damage (a zeroed tail, a
            /// quarantined segment).
            case missingRecords = "missing-records"
            /// The log's last batch, whose final record never reached the disk: dropped whole
            /// (never acknowledged), its LSNs given out again.
            case incompleteBatch = "incomplete-batch"
            /// 4 KiB blocks the device could not read (EIO): treated as damage.
            case unreadable = "unreadable"
        }

        /// Damage a crash leaves routinely, with nothing acknowledged in it.
        public var isCrashLeftover: Bool { kind == .tornTail || kind == .incompleteBatch }
        public var kind: Kind
        public var segment: UInt64
        public var offset: Int
        public var length: Int
        /// The LSNs that were lost, when the records on either side tell.
        public var lostLSNs: ClosedRange<LSN>?
        /// Where the damaged bytes were copied, if they were.
        public var quarantineFile: String?
    }

    /// A whole segment moved to `quarantine/`.
    public struct QuarantinedSegment: Sendable, Equatable {
        public var segment: UInt64
        public var path: String
        public var reason: String
    }

    /// The checkpoint recovery resumed from (0 when there was none).
    public var checkpointLSN: LSN = 0
    /// Why the checkpoint could not be used, when it could not.
    public var checkpointProblem: String?
    /// Segments whose records were scanned.
    public var segmentsScanned = 0
    /// Valid records found in the scanned segments.
    public var recordsRecovered = 0
    /// LSN range of the records found (nil when there are none).
    public var lsnRange: ClosedRange<LSN>?
    public var damage: [Damage] = []
    public var quarantinedSegments: [QuarantinedSegment] = []
    /// Files moved or copied into `quarantine/` during this open.
    public var quarantinedFiles: [String] = []
    /// Leftovers of interrupted segment preparations that were removed.
    public var temporaryFilesRemoved = 0
    /// Segments wholly below the checkpoint, kept for reuse or deleted.
    public var segmentsReusable = 0

    /// Torn tails truncated.
    public var tornTails: Int { damage.filter { $0.kind == .tornTail }.count }
    /// Bytes zeroed at torn tails.
    public var truncatedBytes: Int { damage.filter { $0.kind == .tornTail }.reduce(0) { $0 + $1.length } }
    /// Damaged stretches skipped (everything but torn tails and incomplete batches).
    public var skippedRanges: Int { damage.filter { !$0.isCrashLeftover }.count }
    /// Records known to be lost to damage (LSN gaps), torn tails and incomplete batches
    /// excluded (nothing in them was acknowledged).
    public var recordsLost: UInt64 {
        damage.filter { !$0.isCrashLeftover }.reduce(0) { $0 + ($1.lostLSNs.map { $0.upperBound - $0.lowerBound + 1 } ?? 0) }
    }
    /// Incomplete batches dropped from the end of the log.
    public var incompleteBatches: Int { damage.filter { $0.kind == .incompleteBatch }.count }
    /// Torn tails and incomplete batches: what a crash (kill -9, power cut) leaves routinely,
    /// never holding an acknowledged record. Expected after any crash; not damage.
    public var crashLeftovers: Int { damage.filter(\.isCrashLeftover).count }
    /// True when recovery found no damage: nothing beyond ``crashLeftovers``, no quarantined
    /// segment, no corrupt checkpoint. An ordinary crash leaves a clean report, and so does a
    /// WAL whose consumer never checkpointed (`checkpointProblem == "missing"`: it replays from
    /// the oldest record, which redelivers but loses nothing), so "alert when not clean" pages
    /// on real damage only.
    public var isClean: Bool {
        damage.allSatisfy(\.isCrashLeftover) && quarantinedSegments.isEmpty && (checkpointProblem ?? "missing") == "missing"
    }
    /// True when recovery found nothing at all, crash leftovers included (a clean shutdown).
    public var isPristine: Bool { damage.isEmpty && quarantinedSegments.isEmpty && checkpointProblem == nil }
}
