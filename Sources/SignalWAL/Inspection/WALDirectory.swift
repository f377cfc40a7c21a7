#if canImport(Glibc)
import Glibc
#endif

/// A read-only view of a WAL directory for tools (the `signalwal` command) and for looking at
/// a directory while a service writes it. It never takes the lock and never writes: segments
/// are mapped read-only and scanned with the same scanner recovery uses, so a tool sees each
/// segment exactly as the next open would.
///
/// On a WAL that is being written, the newest records may be mid-write: read as a torn tail,
/// or, because pages are read at slightly different moments, as a zeroed stretch with records
/// after it. Everything durable before the scan began is exact.
public struct WALDirectory: Sendable {
    public let path: String

    /// Checks that `path` is a readable directory that holds a WAL (segment files, a
    /// checkpoint or a lock file). Throws a ``WALError`` that names the path and the fix.
    public init(path: String) throws {
        let trimmed = path.count > 1 && path.hasSuffix("/") ? String(path.dropLast()) : path
        self.path = trimmed
        let kind = FileSystem.kind(of: trimmed)
        guard kind.exists else {
            throw WALError(.notFound, path: trimmed, operation: "open", errno: ENOENT,
                           hint: "There is no such directory: check the path (the services default to .wal/acceptor and .wal/writer).")
        }
        guard kind.isDirectory else {
            throw WALError(.notADirectory, path: trimmed, operation: "open", errno: ENOTDIR,
                           hint: "This is a file, not a WAL directory: pass the directory that holds segment-*.wal.")
        }
        guard access(trimmed, R_OK | X_OK) == 0 else {
            throw WALError(.permissionDenied, path: trimmed, operation: "open", errno: errno,
                           hint: WALError.permissionHint(path: trimmed, readOnly: false))
        }
        let names = try FileSystem.list(trimmed)
        guard names.contains(where: { Format.segmentSequence(fromFileName: $0) != nil || $0 == Format.checkpointFileName
                                       || $0 == Format.lockFileName }) else {
            throw WALError(.notFound, path: trimmed, operation: "open",
                           hint: "This directory holds no WAL (no segment-*.wal, .checkpoint or .lock): check the path.")
        }
    }

    /// Segment files by sequence number, oldest first.
    public func segmentFiles() throws -> [(sequence: UInt64, path: String)] {
        try FileSystem.list(path).compactMap { name in
            Format.segmentSequence(fromFileName: name).map { ($0, path + "/" + name) }
        }.sorted { $0.sequence < $1.sequence }
    }

    /// The segment size the WAL was written with, from the first segment header that decodes
    /// (nil when none does), so tools open a WAL as it is rather than with the default size.
    public func writtenSegmentSize() -> Int? {
        for file in (try? segmentFiles()) ?? [] {
            if let header = header(of: file.path) { return Int(header.segmentSize) }
        }
        return nil
    }

    /// A segment file's header, read alone (64 bytes), or nil when it does not decode.
    public func header(of path: String) -> SegmentHeader? {
        guard let handle = try? OpenFile.open(path, writable: false) else { return nil }
        defer { handle.closeQuietly() }
        var bytes = [UInt8](repeating: 0, count: Format.segmentHeaderSize)
        guard (try? bytes.withUnsafeMutableBytes({ try handle.read(into: $0, at: 0) })) == bytes.count,
              case .success(let header) = bytes.withUnsafeBytes({ SegmentHeader.decode($0) }) else { return nil }
        return header
    }

    /// What the `.checkpoint` file says.
    public enum CheckpointState: Sendable, Equatable {
        case found(LSN)
        case missing
        case corrupt(String)
    }

    /// Reads `.checkpoint`. Throws ``WALError/Kind/unsupportedVersion(found:supported:)`` for a
    /// newer format.
    public func checkpoint() throws -> CheckpointState {
        switch try CheckpointFile.load(directory: path) {
        case .found(let record): return .found(record.lsn)
        case .missing: return .missing
        case .corrupt(let reason): return .corrupt(reason)
        }
    }

    /// What opening this WAL would do, decided by the engine's own recovery without changing
    /// anything (see ``RecoveryPlan``). Takes no lock: on a WAL that is being written, the plan
    /// describes the moment it was made.
    public func recoveryPlan(configuration: Configuration = Configuration()) throws -> RecoveryPlan {
        try Recovery(directory: path, configuration: configuration).analyze()
    }

    /// Files in `quarantine/`, sorted.
    public func quarantinedFiles() -> [String] {
        let directory = path + "/" + Format.quarantineDirectoryName
        guard FileSystem.kind(of: directory).isDirectory else { return [] }
        return ((try? FileSystem.list(directory)) ?? []).sorted().map { directory + "/" + $0 }
    }

    /// The PID of the process holding the directory's lock, if one does. Read from
    /// `/proc/locks` (the flock on `.lock`'s inode), so asking never takes the lock.
    public func lockHolder() -> Int32? {
        var st = stat()
        guard stat(path + "/" + Format.lockFileName, &st) == 0,
              let text = try? readWholeFile("/proc/locks") else { return nil }
        for line in text.split(separator: "\n") {
            // "1: FLOCK  ADVISORY  WRITE 1234 08:01:123456 0 EOF"
            let fields = line.split(separator: " ")
            guard fields.count >= 6, fields[1] == "FLOCK", let pid = Int32(fields[4]) else { continue }
            // The file is "major:minor:inode", the device numbers in hex.
            let id = fields[5].split(separator: ":")
            guard id.count == 3, UInt64(id[2]) == UInt64(st.st_ino),
                  UInt64(id[0], radix: 16) == Self.major(UInt64(st.st_dev)),
                  UInt64(id[1], radix: 16) == Self.minor(UInt64(st.st_dev)) else { continue }
            return pid
        }
        return nil
    }

    /// Bytes the WAL's files take on disk (allocated blocks, so preallocated segments count
    /// whole), and the free and total bytes of the filesystem it is on.
    public func diskUsage() -> (used: Int, free: Int, total: Int) {
        var used = 0
        var names = (try? FileSystem.list(path)) ?? []
        names += quarantinedFiles().map { String($0.dropFirst(path.count + 1)) }
        for name in names {
            var st = stat()
            if lstat(path + "/" + name, &st) == 0 && (st.st_mode & S_IFMT) == S_IFREG { used += Int(st.st_blocks) * 512 }
        }
        var fs = statvfs()
        guard statvfs(path, &fs) == 0 else { return (used, 0, 0) }
        return (used, Int(fs.f_bavail) * Int(fs.f_frsize), Int(fs.f_blocks) * Int(fs.f_frsize))
    }

    /// One record as a scan found it.
    public struct ScannedRecord: Sendable, Equatable {
        public var segment: UInt64
        public var offset: Int
        public var lsn: LSN
        public var length: Int
        public var crc: UInt32
        /// The segment's epoch, which the record carries.
        public var epoch: UInt64
        /// The batch flags: with the fields above, the record header byte for byte.
        public var flags: RecordFlags = []
    }

    /// Damage a scan found.
    public struct ScannedDamage: Sendable, Equatable {
        public enum Kind: String, Sendable, Equatable {
            /// A partial record at the end of a segment.
            case tornTail = "torn-tail"
            /// Bytes that are not a valid record, with valid records after them.
            case corruptRecords = "corrupt-records"
            /// A header that cannot be used: the whole segment is unreadable.
            case corruptHeader = "corrupt-header"
        }
        public var kind: Kind
        public var segment: UInt64
        public var offset: Int
        public var length: Int
        /// The record before the damage, when there is one: the lost LSNs follow it.
        public var afterLSN: LSN?
        /// The first valid record after the damage in the same segment, when there is one.
        public var beforeLSN: LSN?
        public var detail: String
    }

    /// What one segment file holds.
    public struct SegmentSummary: Sendable {
        public var sequence: UInt64
        public var path: String
        public var fileSize: Int
        /// Nil when the header is unusable (then `damage` says why).
        public var header: SegmentHeader?
        public var records = 0
        public var payloadBytes = 0
        public var firstLSN: LSN?
        public var lastLSN: LSN?
        /// Offset just past the last valid record.
        public var endOffset = 0
        public var damage: [ScannedDamage] = []
    }

    /// Scans one segment file, calling `visit` for each valid record with its payload (return
    /// false to stop early) and `progress` with the bytes scanned so far. Throws only when the
    /// file cannot be opened or mapped; damage is reported in the summary.
    public func scan(_ file: (sequence: UInt64, path: String),
                     visit: (ScannedRecord, UnsafeRawBufferPointer) -> Bool = { _, _ in true },
                     progress: (Int) -> Void = { _ in }) throws -> SegmentSummary {
        let handle = try OpenFile.open(file.path, writable: false)
        defer { handle.closeQuietly() }
        let size = try handle.size()
        guard size >= Format.segmentHeaderBlock else {
            var summary = SegmentSummary(sequence: file.sequence, path: file.path, fileSize: size)
            summary.damage.append(ScannedDamage(kind: .corruptHeader, segment: file.sequence, offset: 0, length: size, afterLSN: nil,
                                                beforeLSN: nil, detail: "the file is \(size) bytes, shorter than a segment header block"))
            return summary
        }
        let mapping = try MappedRegion(file: handle, length: size, writable: false, readahead: true)
        return try Self.scan(image: mapping.bytes, sequence: file.sequence, path: file.path, checkSize: true, visit: visit, progress: progress)
    }

    /// ``scan(_:visit:progress:)`` over bytes already in memory: a segment file's image. With
    /// `checkSize` false, an image shorter or longer than its header's segment size is scanned
    /// as it is (the recovery fuzzer feeds arbitrary lengths this way).
    public static func scan(image bytes: UnsafeRawBufferPointer, sequence: UInt64, path: String, checkSize: Bool,
                            visit: (ScannedRecord, UnsafeRawBufferPointer) -> Bool = { _, _ in true },
                            progress: (Int) -> Void = { _ in }) throws -> SegmentSummary {
        let size = bytes.count
        var summary = SegmentSummary(sequence: sequence, path: path, fileSize: size)
        func headerDamage(_ detail: String) -> SegmentSummary {
            summary.damage.append(ScannedDamage(kind: .corruptHeader, segment: sequence, offset: 0, length: min(size, Format.segmentHeaderBlock),
                                                afterLSN: nil, beforeLSN: nil, detail: detail))
            return summary
        }
        guard size >= Format.segmentHeaderBlock else { return headerDamage("the file is \(size) bytes, shorter than a segment header block") }
        let header: SegmentHeader
        switch SegmentHeader.decode(UnsafeRawBufferPointer(rebasing: bytes[0..<Format.segmentHeaderSize])) {
        case .success(let decoded): header = decoded
        case .failure(.unsupportedVersion(let version)):
            throw WALError(.unsupportedVersion(found: version, supported: Format.version), path: path, operation: "read",
                           hint: "The segment was written by a newer SignalWAL (format \(version)); this build reads formats \(Format.readableVersions.lowerBound)-\(Format.version). Use the newer version.")
        case .failure(let failure): return headerDamage("the segment header is corrupt (\(failure))")
        }
        guard !checkSize || Int(header.segmentSize) == size else {
            return headerDamage("the header says \(header.segmentSize) bytes, the file has \(size)")
        }
        summary.header = header
        var scanner = SegmentScanner(bytes: bytes, epoch: header.epoch, maxPayload: Format.largestPayload(segmentSize: size))
        var pendingDamage: ScannedDamage?
        var lastReported = 0
        while let event = scanner.next() {
            switch event {
            case .record(let offset, let record):
                if var damage = pendingDamage {
                    damage.beforeLSN = record.lsn
                    summary.damage.append(damage)
                    pendingDamage = nil
                }
                summary.records += 1
                summary.payloadBytes += Int(record.length)
                if summary.firstLSN == nil { summary.firstLSN = record.lsn }
                summary.lastLSN = record.lsn
                summary.endOffset = offset + Format.recordSpan(payloadLength: Int(record.length))
                let scanned = ScannedRecord(segment: sequence, offset: offset, lsn: record.lsn, length: Int(record.length),
                                            crc: record.crc, epoch: record.epoch, flags: record.flags)
                let payloadStart = offset + Format.recordHeaderSize
                if !visit(scanned, UnsafeRawBufferPointer(rebasing: bytes[payloadStart..<payloadStart + Int(record.length)])) { return summary }
                if summary.endOffset - lastReported >= 1 << 20 {
                    progress(summary.endOffset)
                    lastReported = summary.endOffset
                }
            case .damaged(let offset, let length, _, let allZero):
                pendingDamage = ScannedDamage(kind: .corruptRecords, segment: sequence, offset: offset, length: length,
                                              afterLSN: summary.lastLSN, beforeLSN: nil,
                                              detail: allZero ? "zeroed bytes between records" : "bytes that are not a valid record")
            case .end(let offset, let torn):
                if torn {
                    let zeroFrom = bytes[offset...].lastIndex { $0 != 0 }.map { $0 + 1 } ?? offset
                    summary.damage.append(ScannedDamage(kind: .tornTail, segment: sequence, offset: offset, length: zeroFrom - offset,
                                                        afterLSN: summary.lastLSN, beforeLSN: nil,
                                                        detail: "a partial record at the end (a write cut short)"))
                }
            }
        }
        progress(size)
        return summary
    }

    // glibc's major()/minor() are macros Swift does not import; this is their encoding.
    private static func major(_ device: UInt64) -> UInt64 { ((device >> 8) & 0xFFF) | ((device >> 32) & ~0xFFF) }
    private static func minor(_ device: UInt64) -> UInt64 { (device & 0xFF) | ((device >> 12) & ~0xFF) }

    private func readWholeFile(_ path: String) throws -> String {
        let file = try OpenFile.open(path, writable: false)
        defer { file.closeQuietly() }
        var result: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        var offset = 0
        while true {
            let n = try chunk.withUnsafeMutableBytes { try file.read(into: $0, at: offset) }
            result += chunk[0..<n]
            offset += n
            if n < chunk.count { break }
        }
        return String(decoding: result, as: UTF8.self)
    }
}

