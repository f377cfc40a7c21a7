import ArgumentParser
#if canImport(Glibc)
import Glibc
#endif
import SignalDBLayout
import SignalWAL

struct Restore: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Restore a backup made by `signalwal backup` into a WAL directory.",
        discussion: """
        BACKUP is a backup directory or .tar archive. DIR is created if missing; a non-empty DIR \
        is refused unless --force, which first removes the WAL files there (segments, \
        checkpoint, quarantine/; never while a process holds its lock). --owner sets the \
        files' owner and group (the services' containers run as uid 1000: --owner 1000:1000); \
        --access their mode (owner: 0700/0600, the default; group: 0750/0640). \
        An acceptor's WAL (it holds acceptor-id) needs one of two more options, because a \
        restored acceptor must never give a new record an LSN the writer already holds from it \
        (the writer would drop it as a resend): --store PATH (the writer's SQLite store) keeps \
        the acceptor's id and sets the restored WAL's LSN floor 2^40 above every LSN the store \
        holds from it (past anything the writer can hold only in its WAL, or the acceptor in its \
        backlog), so records the writer already has are not stored twice; --new-identity leaves the \
        id out, and the acceptor starts as a new one (the writer stores the backup's records \
        again: spans are deduplicated, logs and metric points are not). \
        Everything is fsynced, the result verified, and the LSN range restored printed.

        Exit status: 0 restored and verified, 1 restored but the verification found damage, \
        2 usage or I/O error.
        """)

    @Argument(help: "The backup: a directory or a .tar file.") var backup: String
    @Argument(help: "The WAL directory to restore into.") var directory: String
    @Option(help: "UID:GID to own the restored files.") var owner: String?
    @Option(help: "Who may read the restored files: owner (0700/0600) or group (0750/0640).") var access: FileAccess = .owner
    @Option(help: "An acceptor's WAL: the writer's SQLite store, to start the restored LSNs above every one the writer holds.") var store: String?
    @Flag(help: "An acceptor's WAL: restore without its id, so it starts as a new acceptor.") var newIdentity = false
    @Flag(help: "Replace the WAL files in a non-empty DIR.") var force = false

    func validate() throws {
        if let owner {
            let parts = owner.split(separator: ":")
            guard parts.count == 2, UInt32(parts[0]) != nil, UInt32(parts[1]) != nil else {
                throw ValidationError("--owner must be UID:GID in numbers, for example 1000:1000")
            }
        }
    }

    func run() throws {
        let isTar = !Files.isDirectory(backup)
        guard Files.exists(backup) else {
            throw WALError(.notFound, path: backup, operation: "restore", errno: ENOENT, hint: "There is no such backup: check the path.")
        }
        // Read what to restore before touching DIR.
        var entries = isTar ? try tarEntries() : try directoryEntries()
        let isAcceptor = entries.contains { $0.name == ServiceLayout.acceptorIDFileName }
        if isAcceptor {
            guard store != nil || newIdentity else {
                throw WALError(.invalidArgument, path: backup, operation: "restore",
                               hint: "This is an acceptor's WAL (it holds acceptor-id): a restored acceptor must never reuse an LSN the writer already holds from it, or the writer drops its new records as resends. Pass --store <the writer's SQLite store> (the restored LSNs start above every one the writer holds), or --new-identity (it starts as a new acceptor; the writer stores the backup's records again).")
            }
            if newIdentity { entries.removeAll { $0.name == ServiceLayout.acceptorIDFileName } }
        }
        // Read the writer's progress before touching DIR, so a wrong --store changes nothing.
        var floorAbove: LSN? = nil
        if let entry = entries.first(where: { $0.name == ServiceLayout.acceptorIDFileName }) {
            guard entry.size <= 4096 else {
                throw WALError(.invalidArgument, path: backup, operation: "restore", hint: "Its acceptor-id is \(entry.size) bytes, not an acceptor id: this is not a backup signalwal made.")
            }
            if let store {
                let id = String(decoding: try Files.read(entry.source, at: entry.offset, count: entry.size), as: UTF8.self)
                    .trimmingCharacters(in: .whitespacesAndNewlines)
                guard let row = try Inspect.readProgress(store).first(where: { $0.source == ServiceLayout.progressAcceptorPrefix + id }) else {
                    throw WALError(.notFound, path: store, operation: "restore",
                                   hint: "The store holds no progress for acceptor \(id): it is not the store this acceptor's writer uses, or nothing from it was ever stored. Pass the right --store, or --new-identity.")
                }
                // Past what the store holds, the writer may hold more of this acceptor's LSNs
                // only in its own WAL, and the acceptor may have handed out more still in its
                // backlog: both are bounded by their *_WAL_MAX_BYTES, and a record takes at
                // least 48 bytes, so 2^40 LSNs is beyond anything either can hold.
                floorAbove = LSN(max(0, row.highWaterLSN ?? 0, row.floorLSN ?? 0)) + Self.floorMargin
            }
        }
        guard entries.contains(where: { Format.segmentSequence(fromFileName: $0.name) != nil }) else {
            throw WALError(.notFound, path: backup, operation: "restore", hint: "This backup holds no segment files: check the path.")
        }

        if Files.exists(directory) {
            guard Files.isDirectory(directory) else {
                throw WALError(.notADirectory, path: directory, operation: "restore", errno: ENOTDIR,
                               hint: "This is a file: restore into a directory.")
            }
            let present = try Files.list(directory)
            if !present.isEmpty {
                guard force else {
                    throw WALError(.invalidArgument, path: directory, operation: "restore",
                                   hint: "The directory is not empty (\(present.count) entries): restore refuses to overwrite; pass --force to replace its WAL files.")
                }
                if Files.exists(directory + "/" + Format.lockFileName), let pid = try WALDirectory(path: directory).lockHolder() {
                    throw WALError(.locked(pid: pid), path: directory + "/" + Format.lockFileName, operation: "restore",
                                   hint: "Process \(pid) has this WAL open (PID \(pid)): stop it before restoring over it.")
                }
                let marker = directory + "/" + ServiceLayout.deadLetterFolder + "/" + ServiceLayout.replayMarkerFileName
                guard !Files.exists(marker) else {
                    throw WALError(.invalidArgument, path: marker, operation: "restore",
                                   hint: "A dead-letter replay into this WAL was interrupted: finish it (signaldb-acceptor dead-letters replay) or remove the marker, then restore.")
                }
                // The identity first: a forced restore cut short must not leave the old id beside
                // segments without the checkpoint (and floor) that went with them.
                for name in present where ServiceLayout.identityFiles.contains(name) {
                    guard unlink(directory + "/" + name) == 0 else { throw Files.error("unlink", directory + "/" + name) }
                }
                try Files.syncDirectory(directory)
                for name in present where Format.segmentSequence(fromFileName: name) != nil || name.hasPrefix(Format.checkpointFileName) {
                    guard unlink(directory + "/" + name) == 0 else { throw Files.error("unlink", directory + "/" + name) }
                }
                Files.removeTree(directory + "/" + Format.quarantineDirectoryName)
            }
        } else {
            try Files.makeDirectory(directory, mode: access.directoryMode)
        }

        let ownerIDs = owner.map { text -> (uid_t, gid_t) in
            let parts = text.split(separator: ":")
            return (uid_t(parts[0])!, gid_t(parts[1])!)
        }
        // One file at a time: a backup can be far larger than memory. The identity file last,
        // after the checkpoint with its floor: a restore cut short leaves no id, so the acceptor
        // would start as a new one rather than reuse LSNs under the old.
        let ordered = entries.filter { !ServiceLayout.identityFiles.contains($0.name) } + entries.filter { ServiceLayout.identityFiles.contains($0.name) }
        var floorRaised = false
        for entry in ordered {
            if let floorAbove, !floorRaised, ServiceLayout.identityFiles.contains(entry.name) {
                try raiseFloor(above: floorAbove, ownerIDs: ownerIDs)
                floorRaised = true
            }
            let path = directory + "/" + entry.name
            var bytes = try Files.read(entry.source, at: entry.offset, count: entry.size)
            // Segments are read up to the last non-zero byte, then zero-filled with real writes.
            if Format.segmentSequence(fromFileName: entry.name) != nil {
                bytes.removeSubrange(((bytes.lastIndex { $0 != 0 } ?? -1) + 1)...)
            }
            var size: Int?
            if Format.segmentSequence(fromFileName: entry.name) != nil,
               case .success(let header) = bytes.withUnsafeBytes({ SegmentHeader.decode($0) }) {
                size = Int(header.segmentSize)
            }
            try bytes.withUnsafeBytes { try Files.create(path, writing: [$0], size: size, mode: access.fileMode) }
            if let (uid, gid) = ownerIDs, chown(path, uid, gid) != 0 { throw Files.error("chown", path) }
        }
        if let (uid, gid) = ownerIDs, chown(directory, uid, gid) != 0 { throw Files.error("chown", directory) }
        try Files.syncDirectory(directory)

        let scan = try DirectoryScan(try WALDirectory(path: directory))
        let first = scan.segments.compactMap(\.firstLSN).min()
        let last = scan.segments.compactMap(\.lastLSN).max()
        let records = scan.segments.reduce(0) { $0 + $1.records }
        print("restored \(first.map { "LSNs \($0)-\(last ?? $0)" } ?? "no records") (\(records) records; checkpoint LSN \(scan.checkpointLSN)) into \(directory)")
        let problems = scan.problems
        if !problems.isEmpty {
            for problem in problems { print("damage: " + problem.line) }
            throw ExitCode(1)
        }
    }

    /// Where each file to restore is: (name, file to read, offset, size).
    typealias Entry = (name: String, source: String, offset: Int, size: Int)

    private func directoryEntries() throws -> [Entry] {
        try Files.list(backup).filter { Self.restores($0) }.map { name in
            var st = stat()
            guard stat(backup + "/" + name, &st) == 0 else { throw Files.error("stat", backup + "/" + name) }
            return (name, backup + "/" + name, 0, Int(st.st_size))
        }
    }

    private func tarEntries() throws -> [Entry] {
        var st = stat()
        guard stat(backup, &st) == 0 else { throw Files.error("stat", backup) }
        let length = Int(st.st_size)
        var entries: [Entry] = []
        var offset = 0
        while offset + Tar.block <= length {
            guard let (name, size) = try Tar.parse(try Files.read(backup, at: offset, count: Tar.block), path: backup) else { break }
            offset += Tar.block
            guard offset + size <= length else {
                throw WALError(.corruptHeader, path: backup, operation: "restore", hint: "The archive is cut short inside \(name): it is incomplete.")
            }
            // Plain names only: nothing may land outside DIR.
            guard !name.contains("/"), name != "..", name != "." else {
                throw WALError(.invalidArgument, path: backup, operation: "restore", hint: "The archive holds \(name), which is not a WAL file name: refusing it.")
            }
            if Self.restores(name) {
                entries.append((name, backup, offset, size))
            }
            offset += (size + Tar.block - 1) / Tar.block * Tar.block
        }
        return entries
    }

    /// How far past the store's high-water mark a restored acceptor's LSNs start (see run()).
    static let floorMargin: LSN = 1 << 40

    /// The files a restore writes: segments, the checkpoint, the services' identity files.
    static func restores(_ name: String) -> Bool {
        Format.segmentSequence(fromFileName: name) != nil || name == Format.checkpointFileName || ServiceLayout.identityFiles.contains(name)
    }

    /// Rewrites the restored checkpoint with an LSN floor past `lsn`: the acceptor's next record
    /// gets an LSN above it (recovery starts new LSNs at the floor).
    private func raiseFloor(above lsn: LSN, ownerIDs: (uid_t, gid_t)?) throws {
        let path = directory + "/" + Format.checkpointFileName
        var record = CheckpointRecord(lsn: 0)
        if Files.exists(path) {
            let bytes = try Files.readAll(path)
            if case .success(let existing) = bytes.withUnsafeBytes({ CheckpointRecord.decode($0) }) { record = existing }
        }
        record.floor = max(record.floor, lsn + 1)
        // Nothing between the backup's last record and the floor was handed out by this copy:
        // recovery reads the jump as that, not as lost records.
        record.floorGapUnissued = true
        // A new file renamed over the old one: a failure leaves the old checkpoint whole.
        let temporary = path + Format.temporarySuffix
        unlink(temporary)
        try record.encoded().withUnsafeBytes { try Files.create(temporary, writing: [$0], mode: access.fileMode) }
        if let (uid, gid) = ownerIDs, chown(temporary, uid, gid) != 0 { throw Files.error("chown", temporary) }
        guard rename(temporary, path) == 0 else { throw Files.error("rename", path) }
        try Files.syncDirectory(directory)
        print("the acceptor's next LSN will be at least \(record.floor): far above every LSN the writer's store holds from it")
    }
}
