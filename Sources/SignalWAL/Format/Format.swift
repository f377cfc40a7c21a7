/// The on-disk format, in one place: shared by the writer, the recovery scanner and the reader.
/// `docs/FORMAT.md` describes the same bytes for people; keep the two in step.
///
/// All integers are little-endian.
///
/// A WAL directory:
///
///     segment-000001.wal      fixed-size segment files, numbered without reuse
///     segment-000002.wal
///     .checkpoint             consumer progress and the LSN floor (40 bytes; 32 in version 1)
///     .checkpoint.next        the next checkpoint's file, allocated ahead (see CheckpointFile)
///     .lock                   flock'ed by the owning process; holds its PID as text
///     quarantine/             damaged bytes and segments moved aside by recovery
///     segment-000003.wal.quarantined   a segment quarantined in place (quarantine/ unusable)
///
/// A segment file (``Format/segmentHeaderBlock`` bytes of header block, then records):
///
///     0                 64                4096                                      size
///     +-----------------+-----------------+------------+------------+-----+-------+
///     | segment header  | zero            | record     | record     | ... | zeros |
///     +-----------------+-----------------+------------+------------+-----+-------+
///
/// Segment header (64 bytes):
///
///     0       8       12      16              24              32              40
///     +-------+-------+-------+---------------+---------------+---------------+
///     | magic "SGWALSEG"      |version|hdr len| sequence      | first LSN     |
///     +-------+-------+-------+---------------+---------------+---------------+
///     40              48              56      60      64
///     +---------------+---------------+-------+-------+
///     | segment size  | epoch         | flags | CRC32C|   CRC over bytes 0..<60
///     +---------------+---------------+-------+-------+
///
/// Record (8-byte aligned; occupies align8(24 + length) bytes):
///
///     0       4       8               16              24
///     +-------+-------+---------------+---------------+-----------------+-----+
///     |len+flg| CRC32C| LSN           | epoch         | payload         | pad |
///     +-------+-------+---------------+---------------+-----------------+-----+
///
/// The first word is the payload length in its low 30 bits and two batch flags in its top two
/// (version 2; see ``RecordFlags``). The record CRC is CRC32C over the payload, then header
/// bytes 0..<4, then 8..<24, so the payload's share can be computed before the LSN is known
/// (the flags are covered: a flipped flag fails the CRC). An all-zero header ends the log.
///
/// Version 1 (still read): the same bytes with the flags always clear, so every record was
/// its own batch, and segment header bytes 56..<60 zero (no flags).
public enum Format {
    /// The format version this build writes.
    public static let version: UInt32 = 2
    /// The segment format versions this build reads.
    public static let readableVersions: ClosedRange<UInt32> = 1...2
    /// The `.checkpoint` file's own version: 2 adds the LSN floor (version 1, 32 bytes, is
    /// still read).
    public static let checkpointVersion: UInt32 = 2
    /// Mask of the record length word that holds the payload length; the top two bits are
    /// ``RecordFlags``. Every payload is below 1 GiB (the largest segment), so they are free.
    public static let recordLengthMask: UInt32 = 0x3FFF_FFFF

    // MARK: Segment

    /// "SGWALSEG" read as a little-endian UInt64.
    public static let segmentMagic: UInt64 = 0x4745_534C_4157_4753
    /// Bytes at the start of each segment reserved for the header, so records start page-aligned
    /// (which O_DIRECT writes need).
    public static let segmentHeaderBlock = 4096
    /// Bytes of the header that carry data; the rest of the block is zero.
    public static let segmentHeaderSize = 64
    public static let minimumSegmentSize = 1 << 20
    public static let maximumSegmentSize = 1 << 30
    public static let defaultSegmentSize = 64 << 20

    // MARK: Record

    public static let recordHeaderSize = 24
    public static let recordAlignment = 8

    /// Bytes a record with `payloadLength` bytes of payload occupies in a segment.
    @inlinable
    public static func recordSpan(payloadLength: Int) -> Int {
        (recordHeaderSize + payloadLength + recordAlignment - 1) & ~(recordAlignment - 1)
    }

    /// The largest payload any segment of `segmentSize` bytes can hold.
    public static func largestPayload(segmentSize: Int) -> Int {
        segmentSize - segmentHeaderBlock - recordHeaderSize
    }

    // MARK: Checkpoint

    /// "SGWALCKP" read as a little-endian UInt64.
    public static let checkpointMagic: UInt64 = 0x504B_434C_4157_4753
    /// The size of a version 2 `.checkpoint`; version 1 files are ``checkpointSizeV1``.
    public static let checkpointSize = 40
    public static let checkpointSizeV1 = 32

    // MARK: Names

    public static let checkpointFileName = ".checkpoint"
    public static let lockFileName = ".lock"
    public static let quarantineDirectoryName = "quarantine"
    static let segmentPrefix = "segment-"
    static let segmentSuffix = ".wal"
    public static let temporarySuffix = ".tmp"

    /// `segment-000042.wal`: at least six digits, more when the sequence needs them.
    public static func segmentFileName(_ sequence: UInt64) -> String {
        var digits = String(sequence)
        if digits.count < 6 { digits = String(repeating: "0", count: 6 - digits.count) + digits }
        return segmentPrefix + digits + segmentSuffix
    }

    /// The sequence in a segment file name, or nil for any other name.
    public static func segmentSequence(fromFileName name: String) -> UInt64? {
        guard name.hasPrefix(segmentPrefix), name.hasSuffix(segmentSuffix) else { return nil }
        let digits = name.dropFirst(segmentPrefix.count).dropLast(segmentSuffix.count)
        guard digits.count >= 6, digits.allSatisfy({ $0.isASCII && $0.isNumber }) else { return nil }
        return UInt64(digits)
    }

    /// Appended to a segment's name when recovery quarantines it where it is (the quarantine
    /// directory could not be used, a full disk).
    public static let quarantinedInPlaceSuffix = ".quarantined"

    /// The sequence of a segment quarantined in place, or nil for any other name.
    public static func quarantinedInPlaceSequence(fromFileName name: String) -> UInt64? {
        guard name.hasSuffix(quarantinedInPlaceSuffix) else { return nil }
        return segmentSequence(fromFileName: String(name.dropLast(quarantinedInPlaceSuffix.count)))
    }

    /// Where recovery puts the bytes of a damaged range of a segment.
    public static func quarantineFileName(sequence: UInt64, offset: Int) -> String {
        let name = segmentFileName(sequence)
        return String(name.dropLast(segmentSuffix.count)) + "-offset-\(offset).bin"
    }
}

/// The 64-byte header at the start of every segment file.
public struct SegmentHeader: Sendable, Equatable {
    public var version: UInt32 = Format.version
    public var sequence: UInt64
    /// LSN of the first record; 0 while the segment is a spare with no records yet.
    public var firstLSN: UInt64
    public var segmentSize: UInt64
    /// Random per preparation of the file; records carry it so a stale record left from an
    /// earlier life of a reused file never matches.
    public var epoch: UInt64
    /// Version 2: bytes 56..<60 (zero in version 1).
    public var flags: SegmentFlags = []

    public init(sequence: UInt64, firstLSN: UInt64, segmentSize: UInt64, epoch: UInt64, flags: SegmentFlags = []) {
        self.sequence = sequence
        self.firstLSN = firstLSN
        self.segmentSize = segmentSize
        self.epoch = epoch
        self.flags = flags
    }

    /// Whether bytes after the last record may be stale records of an earlier life of the file
    /// (so non-zero bytes there are not damage). Version 1 did not record it: assume so.
    public var mayHoldStaleBytes: Bool { version == 1 || flags.contains(.recycled) }

    /// Why a header could not be decoded.
    public enum DecodeFailure: Error, Equatable {
        case badMagic
        case badChecksum
        case unsupportedVersion(UInt32)
    }

    public func encoded() -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: Format.segmentHeaderSize)
        bytes.withUnsafeMutableBytes { raw in
            raw.storeBytes(of: Format.segmentMagic.littleEndian, toByteOffset: 0, as: UInt64.self)
            raw.storeBytes(of: version.littleEndian, toByteOffset: 8, as: UInt32.self)
            raw.storeBytes(of: UInt32(Format.segmentHeaderSize).littleEndian, toByteOffset: 12, as: UInt32.self)
            raw.storeBytes(of: sequence.littleEndian, toByteOffset: 16, as: UInt64.self)
            raw.storeBytes(of: firstLSN.littleEndian, toByteOffset: 24, as: UInt64.self)
            raw.storeBytes(of: segmentSize.littleEndian, toByteOffset: 32, as: UInt64.self)
            raw.storeBytes(of: epoch.littleEndian, toByteOffset: 40, as: UInt64.self)
            raw.storeBytes(of: flags.rawValue.littleEndian, toByteOffset: 56, as: UInt32.self)
            let crc = CRC32C.checksum(UnsafeRawBufferPointer(rebasing: raw[0..<60]))
            raw.storeBytes(of: crc.littleEndian, toByteOffset: 60, as: UInt32.self)
        }
        return bytes
    }

    public static func decode(_ raw: UnsafeRawBufferPointer) -> Result<SegmentHeader, DecodeFailure> {
        guard raw.count >= Format.segmentHeaderSize else { return .failure(.badMagic) }
        func u64(_ o: Int) -> UInt64 { UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: o, as: UInt64.self)) }
        func u32(_ o: Int) -> UInt32 { UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: o, as: UInt32.self)) }
        guard u64(0) == Format.segmentMagic else { return .failure(.badMagic) }
        guard CRC32C.checksum(UnsafeRawBufferPointer(rebasing: raw[0..<60])) == u32(60) else {
            return .failure(.badChecksum)
        }
        // Checked after the CRC: a version number is only believable in an intact header.
        guard Format.readableVersions.contains(u32(8)), u32(12) == UInt32(Format.segmentHeaderSize) else {
            return .failure(.unsupportedVersion(u32(8)))
        }
        var header = SegmentHeader(sequence: u64(16), firstLSN: u64(24), segmentSize: u64(32), epoch: u64(40),
                                   flags: SegmentFlags(rawValue: u32(56)))
        header.version = u32(8)
        return .success(header)
    }
}

/// Flags in a segment header (version 2, bytes 56..<60).
public struct SegmentFlags: OptionSet, Sendable, Hashable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    /// The file was recycled from an earlier segment: bytes after the last record may be that
    /// segment's stale records. Clear in a freshly zero-filled file, where anything non-zero
    /// after the last record is damage.
    public static let recycled = SegmentFlags(rawValue: 1)
}

/// The batch flags in the top two bits of a record's length word. A batch written by one
/// `append(contentsOf:)` is all or none: its records have consecutive LSNs, every record but the
/// last has ``continues``, every record but the first has ``continuation``. A single record has
/// neither (which is also how every version 1 record reads). Readers and recovery drop a batch
/// whose last record is missing.
public struct RecordFlags: OptionSet, Sendable, Hashable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    /// More records of this batch follow.
    public static let continues = RecordFlags(rawValue: 1 << 31)
    /// This record is not the first of its batch.
    public static let continuation = RecordFlags(rawValue: 1 << 30)

    /// The flags of record `index` of a batch of `count`.
    @inlinable
    public static func forRecord(_ index: Int, of count: Int) -> RecordFlags {
        var flags: RecordFlags = []
        if index > 0 { flags.insert(.continuation) }
        if index + 1 < count { flags.insert(.continues) }
        return flags
    }
}

/// The 24-byte header in front of every record's payload.
public struct RecordHeader: Sendable, Equatable {
    /// Payload bytes (the low 30 bits of the stored length word).
    public var length: UInt32
    public var crc: UInt32
    public var lsn: UInt64
    public var epoch: UInt64
    /// The batch flags (the top two bits of the stored length word).
    public var flags: RecordFlags

    public init(length: UInt32, crc: UInt32, lsn: UInt64, epoch: UInt64, flags: RecordFlags = []) {
        self.length = length
        self.crc = crc
        self.lsn = lsn
        self.epoch = epoch
        self.flags = flags
    }

    /// The length word as stored: length and flags.
    @inlinable
    public var lengthWord: UInt32 { length | flags.rawValue }

    /// Reads a header from the first 24 bytes of `raw` (no validation).
    @inlinable
    public static func load(from raw: UnsafeRawBufferPointer) -> RecordHeader {
        let word = UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: 0, as: UInt32.self))
        return RecordHeader(
            length: word & Format.recordLengthMask,
            crc: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: 4, as: UInt32.self)),
            lsn: UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: 8, as: UInt64.self)),
            epoch: UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: 16, as: UInt64.self)),
            flags: RecordFlags(rawValue: word & ~Format.recordLengthMask))
    }

    @inlinable
    public func store(to raw: UnsafeMutableRawBufferPointer) {
        raw.storeBytes(of: lengthWord.littleEndian, toByteOffset: 0, as: UInt32.self)
        raw.storeBytes(of: crc.littleEndian, toByteOffset: 4, as: UInt32.self)
        raw.storeBytes(of: lsn.littleEndian, toByteOffset: 8, as: UInt64.self)
        raw.storeBytes(of: epoch.littleEndian, toByteOffset: 16, as: UInt64.self)
    }

    /// All-zero: the end of the log (preallocated space reads this way).
    @inlinable
    public var isZero: Bool { length == 0 && flags.isEmpty && crc == 0 && lsn == 0 && epoch == 0 }

    /// The record CRC: the payload's CRC32C (computed by the caller, perhaps outside any lock)
    /// extended over the header's length word (length and flags), LSN and epoch fields.
    @inlinable
    public static func checksum(payloadCRC: UInt32, length: UInt32, flags: RecordFlags = [], lsn: UInt64, epoch: UInt64) -> UInt32 {
        var fields: (UInt32, UInt64, UInt64) = ((length | flags.rawValue).littleEndian, lsn.littleEndian, epoch.littleEndian)
        return withUnsafeBytes(of: &fields) { raw in
            // The tuple is laid out as 4 bytes, 4 of padding, 8, 8: hash around the padding.
            let crc = CRC32C.checksum(UnsafeRawBufferPointer(rebasing: raw[0..<4]), extending: payloadCRC)
            return CRC32C.checksum(UnsafeRawBufferPointer(rebasing: raw[8..<24]), extending: crc)
        }
    }
}

/// The `.checkpoint` file: the highest LSN every consumer has processed, and the lowest LSN
/// the next record may get.
///
/// Version 2 (40 bytes): magic (8), version (4), reserved (4), LSN (8), LSN floor (8), CRC32C
/// over bytes 0..<32 (4), reserved (4). Version 1 (32 bytes, read): magic, version, reserved,
/// LSN, CRC over 0..<24, reserved; its floor is 0.
public struct CheckpointRecord: Sendable, Equatable {
    public var lsn: UInt64
    /// Recovery raises it past LSNs that may have been acknowledged but whose records it could
    /// not keep (a newest segment with an unusable header, garbage over the last records), so
    /// they are never handed out again, even after the evidence is quarantined.
    public var floor: UInt64
    /// The LSNs between the last record below the floor and the floor were never handed out:
    /// the floor was raised by `signalwal restore` (so a restored acceptor starts above every
    /// LSN its writer holds), not by recovery over lost records. Recovery then reads a jump
    /// from the last record to one at the floor as that, not as damage. Bit 0 of the word at
    /// offset 12 (zero before; older readers ignore it).
    public var floorGapUnissued: Bool

    public init(lsn: UInt64, floor: UInt64 = 0, floorGapUnissued: Bool = false) {
        self.lsn = lsn
        self.floor = floor
        self.floorGapUnissued = floorGapUnissued
    }

    public func encoded() -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: Format.checkpointSize)
        bytes.withUnsafeMutableBytes { raw in
            raw.storeBytes(of: Format.checkpointMagic.littleEndian, toByteOffset: 0, as: UInt64.self)
            raw.storeBytes(of: Format.checkpointVersion.littleEndian, toByteOffset: 8, as: UInt32.self)
            raw.storeBytes(of: UInt32(floorGapUnissued ? 1 : 0).littleEndian, toByteOffset: 12, as: UInt32.self)
            raw.storeBytes(of: lsn.littleEndian, toByteOffset: 16, as: UInt64.self)
            raw.storeBytes(of: floor.littleEndian, toByteOffset: 24, as: UInt64.self)
            let crc = CRC32C.checksum(UnsafeRawBufferPointer(rebasing: raw[0..<32]))
            raw.storeBytes(of: crc.littleEndian, toByteOffset: 32, as: UInt32.self)
        }
        return bytes
    }

    public static func decode(_ raw: UnsafeRawBufferPointer) -> Result<CheckpointRecord, SegmentHeader.DecodeFailure> {
        guard raw.count == Format.checkpointSize || raw.count == Format.checkpointSizeV1,
              UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: 0, as: UInt64.self)) == Format.checkpointMagic
        else { return .failure(.badMagic) }
        let covered = raw.count == Format.checkpointSizeV1 ? 24 : 32
        let crc = UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: covered, as: UInt32.self))
        guard CRC32C.checksum(UnsafeRawBufferPointer(rebasing: raw[0..<covered])) == crc else { return .failure(.badChecksum) }
        let version = UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: 8, as: UInt32.self))
        guard version == (raw.count == Format.checkpointSizeV1 ? 1 : Format.checkpointVersion) else {
            return .failure(.unsupportedVersion(version))
        }
        let lsn = UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: 16, as: UInt64.self))
        let floor = covered == 32 ? UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: 24, as: UInt64.self)) : 0
        let flags = covered == 32 ? UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: 12, as: UInt32.self)) : 0
        return .success(CheckpointRecord(lsn: lsn, floor: floor, floorGapUnissued: flags & 1 != 0))
    }
}
