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
        --access their mode (owner: 0700/0600, the default; group: 0750/0640). The acceptor's \
        acceptor-id is restored with the segments. \
        Everything is fsynced, the result verified, and the LSN range restored printed.

        Exit status: 0 restored and verified, 1 restored but the verification found damage, \
        2 usage or I/O error.
        """)

    @Argument(help: "The backup: a directory or a .tar file.") var backup: String
    @Argument(help: "The WAL directory to restore into.") var directory: String
    @Option(help: "UID:GID to own the restored files.") var owner: String?
    @Option(help: "Who may read the restored files: owner (0700/0600) or group (0750/0640).") var access: FileAccess = .owner
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
        let entries = isTar ? try tarEntries() : try directoryEntries()
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
                for name in present where Format.segmentSequence(fromFileName: name) != nil || name.hasPrefix(Format.checkpointFileName)
                    || ServiceLayout.identityFiles.contains(name) {
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
        // One file at a time: a backup can be far larger than memory.
        for entry in entries {
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

    /// The files a restore writes: segments, the checkpoint, the services' identity files.
    static func restores(_ name: String) -> Bool {
        Format.segmentSequence(fromFileName: name) != nil || name == Format.checkpointFileName || ServiceLayout.identityFiles.contains(name)
    }
}
