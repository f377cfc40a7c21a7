import ArgumentParser
#if canImport(Glibc)
import Glibc
#endif
import SignalDBLayout
import SignalWAL

struct Backup: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Copy a WAL consistently while a service keeps writing it (no stop needed).",
        discussion: """
        Copies, without taking the lock: every segment that holds records, each up to its last \
        valid record (for the segment being written, its last complete record at that moment), \
        then the checkpoint, read last. Segments whose records are all at or below that \
        checkpoint were consumed and are left out (one of them may have been recycled mid-copy). \
        Every record acknowledged before the backup began is in it. The services' identity \
        file (the acceptor's acceptor-id) is copied too; dead letters are not (back up \
        dead-letters/ with cp if you keep them). DEST is a new directory, \
        or a tar archive when it ends in .tar; it must not exist. Everything is fsynced, the copy \
        is verified, and the LSN range copied is printed. Works on a stopped WAL too.

        Exit status: 0 done and verified, 1 the copy is complete but the source had damage \
        (listed), 2 usage or I/O error.
        """)

    @Argument(help: "The WAL directory to back up.") var directory: String
    @Argument(help: "Where to write the backup: a new directory, or a file ending in .tar.") var destination: String
    @Option(help: "Who may read the backup: owner (0700/0600) or group (0750/0640).") var access: FileAccess = .owner

    func run() throws {
        let wal = try WALDirectory(path: directory)
        let destination = self.destination.count > 1 && self.destination.hasSuffix("/") ? String(self.destination.dropLast()) : self.destination
        guard !Files.exists(destination) else {
            throw WALError(.invalidArgument, path: destination, operation: "backup",
                           hint: "The backup destination exists: backup never overwrites; choose a new path or remove it first.")
        }
        let tar = destination.hasSuffix(".tar")
        let staging = tar ? destination + ".partial-\(getpid())" : destination
        try Files.makeDirectory(staging, mode: access.directoryMode)
        var finished = false
        defer { if !finished || tar { Files.removeTree(staging) } }

        // 1. Segments with records, each up to its last valid record.
        var copied: [(name: String, lastLSN: LSN, end: Int)] = []
        var previous: (sequence: UInt64, path: String)?
        for file in try wal.segmentFiles() {
            let name = String(file.path.split(separator: "/").last!)
            guard let snapshot = try snapshot(file, wal: wal) else { continue }
            // The previous segment was still being written when it was copied, and the writer
            // has since moved on to this one: copy it again, now that it is sealed, so the
            // backup has no gap between the two. (A gap that remains is the source's own.)
            if let previous, let last = copied.last, snapshot.firstLSN > last.lastLSN + 1,
               let again = try self.snapshot(previous, wal: wal), again.lastLSN > last.lastLSN {
                unlink(staging + "/" + last.name)
                try again.image.withUnsafeBytes { try Files.create(staging + "/" + last.name, writing: [$0], size: again.segmentSize, mode: access.fileMode) }
                copied[copied.count - 1] = (last.name, again.lastLSN, again.image.count)
            }
            try snapshot.image.withUnsafeBytes { try Files.create(staging + "/" + name, writing: [$0], size: snapshot.segmentSize, mode: access.fileMode) }
            copied.append((name, snapshot.lastLSN, snapshot.image.count))
            previous = file
            // Everything after a stretch that was still being written was appended after it:
            // the backup ends there, so it never holds a gap.
            if snapshot.cut { break }
        }

        // 2. The checkpoint, last: every record a recycled segment held is at or below it.
        let checkpointPath = wal.path + "/" + Format.checkpointFileName
        var checkpointLSN: LSN = 0
        if Files.exists(checkpointPath) {
            let bytes = try Files.readAll(checkpointPath)
            if case .success(let record) = bytes.withUnsafeBytes({ CheckpointRecord.decode($0) }) { checkpointLSN = record.lsn }
            try bytes.withUnsafeBytes { try Files.create(staging + "/" + Format.checkpointFileName, writing: [$0], mode: access.fileMode) }
        }
        // The services' identity files: a restored acceptor must keep its id, or the writer
        // would take its records for a new acceptor's and store them again.
        for name in ServiceLayout.identityFiles where Files.exists(wal.path + "/" + name) {
            let bytes = try Files.readAll(wal.path + "/" + name, limit: 4096)
            try bytes.withUnsafeBytes { try Files.create(staging + "/" + name, writing: [$0], mode: access.fileMode) }
        }
        // 3. Consumed segments are not needed (keep the newest, which carries the LSN sequence).
        for segment in copied.dropLast() where segment.lastLSN <= checkpointLSN {
            unlink(staging + "/" + segment.name)
        }
        try Files.syncDirectory(staging)

        // 4. Verify the copy.
        let scan = try DirectoryScan(try WALDirectory(path: staging))
        let records = scan.segments.reduce(0) { $0 + $1.records }
        let first = scan.segments.compactMap(\.firstLSN).min()
        let last = scan.segments.compactMap(\.lastLSN).max()
        let problems = scan.problems

        if tar {
            try writeTar(from: staging, ends: Dictionary(uniqueKeysWithValues: copied.map { ($0.name, $0.end) }), to: destination)
        }
        finished = true
        let range = first.map { "LSNs \($0)-\(last ?? $0)" } ?? "no records"
        print("backed up \(range) (\(records) records in \(scan.segments.count) segments; checkpoint LSN \(checkpointLSN)) to \(destination)")
        if !problems.isEmpty {
            for problem in problems { print("source damage: " + problem.line) }
            throw ExitCode(1)
        }
    }

    /// A consistent copy of one segment: the header block, then each valid record at its own
    /// offset, rebuilt from the validated fields so it is byte for byte what was on disk.
    ///
    /// Reading a file while it is written is not atomic: a page read before a record landed
    /// and a later page read after the next ones did look like a zeroed stretch with records
    /// after it. So a segment with such a stretch is scanned again (up to three times, 20 ms
    /// apart): damage that stays put is real and reported, and every valid record around it is
    /// copied; damage that moves or vanishes is the writer at work, and the copy is cut before
    /// the first stretch (`cut`). No record acknowledged before the backup began can be there:
    /// it was on disk, and so in every read, before the backup started, and so was every
    /// record before it.
    private func snapshot(_ file: (sequence: UInt64, path: String), wal: WALDirectory)
        throws -> (image: [UInt8], segmentSize: Int, firstLSN: LSN, lastLSN: LSN, cut: Bool)? {
        var previousGaps: [Int]?
        for attempt in 1...3 {
            // The header block is filled in from the header the scan validated the records with.
            var image = [UInt8](repeating: 0, count: Format.segmentHeaderBlock)
            var records: [(offset: Int, lsn: LSN)] = []
            let scanned: WALDirectory.SegmentSummary
            do {
                scanned = try wal.scan(file, visit: { record, payload in
                    let end = record.offset + Format.recordSpan(payloadLength: record.length)
                    if image.count < end { image += [UInt8](repeating: 0, count: end - image.count) }
                    image.withUnsafeMutableBytes { raw in
                        RecordHeader(length: UInt32(record.length), crc: record.crc, lsn: record.lsn, epoch: record.epoch, flags: record.flags)
                            .store(to: UnsafeMutableRawBufferPointer(rebasing: raw[record.offset..<record.offset + Format.recordHeaderSize]))
                        if record.length > 0 {
                            (raw.baseAddress! + record.offset + Format.recordHeaderSize).copyMemory(from: payload.baseAddress!, byteCount: record.length)
                        }
                    }
                    records.append((record.offset, record.lsn))
                    return true
                })
            } catch let error as WALError where error.kind == .notFound {
                // Recycled (renamed) or deleted since the listing: all its records were at or
                // below the checkpoint, which is copied last and covers them.
                return nil
            }
            let summary = scanned
            // Spares and unreadable headers have nothing to copy.
            guard let header = summary.header, summary.records > 0, let firstLSN = summary.firstLSN,
                  let lastLSN = summary.lastLSN else { return nil }
            image.replaceSubrange(0..<Format.segmentHeaderSize, with: header.encoded())
            let segmentSize = Int(header.segmentSize)
            // A torn tail is not copied anyway (only whole records are); gaps between records are
            // what needs a second look.
            let gaps = summary.damage.filter { $0.kind == .corruptRecords }.map(\.offset)
            if gaps.isEmpty || gaps == previousGaps { return (image, segmentSize, firstLSN, lastLSN, false) }
            if attempt == 3 {
                let first = gaps[0]
                let kept = records.filter { $0.offset < first }
                guard let last = kept.last else { return nil }
                return (Array(image.prefix(first)), segmentSize, firstLSN, last.lsn, true)
            }
            previousGaps = gaps
            usleep(20_000)
        }
        return nil
    }

    private func writeTar(from staging: String, ends: [String: Int], to destination: String) throws {
        let temporary = destination + ".tmp-\(getpid())"
        do {
            // One file at a time: an archive can be larger than memory.
            let archive = try Files.Writer(creating: temporary, mode: access.fileMode)
            for name in try Files.list(staging) {
                // Segments are stored up to their last record; restore extends them again.
                let bytes = try Files.readAll(staging + "/" + name, limit: ends[name])
                try archive.write(Tar.header(name: name, size: bytes.count, mode: Int(access.fileMode)))
                try archive.write(bytes)
                try archive.write([UInt8](repeating: 0, count: (Tar.block - bytes.count % Tar.block) % Tar.block))
            }
            try archive.write([UInt8](repeating: 0, count: 2 * Tar.block))
            try archive.sync()
            guard rename(temporary, destination) == 0 else { throw Files.error("rename", destination) }
        } catch {
            unlink(temporary)
            throw error
        }
        let parent = destination.contains("/") ? String(destination[..<destination.lastIndex(of: "/")!]) : "."
        try Files.syncDirectory(parent.isEmpty ? "/" : parent)
    }
}
