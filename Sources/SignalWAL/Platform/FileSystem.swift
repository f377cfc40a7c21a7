#if canImport(Glibc)
import Glibc
#endif

/// Directory-level operations, each through the syscall funnel, each durable when it says so.
enum FileSystem {
    /// Whether `path` exists, and whether it is a directory.
    static func kind(of path: String) -> (exists: Bool, isDirectory: Bool) {
        var st = stat()
        guard stat(path, &st) == 0 else { return (false, false) }
        return (true, (st.st_mode & S_IFMT) == S_IFDIR)
    }

    /// Creates `path` and any missing parents (with `mode`, exactly: see ``FileAccess``),
    /// fsyncing each parent after creating a child in it so the new directories survive a power
    /// cut. Existing directories keep their mode.
    static func createDirectories(_ path: String, mode: mode_t = FileAccess.owner.directoryMode) throws {
        let state = kind(of: path)
        if state.exists {
            guard state.isDirectory else {
                throw WALError(.notADirectory, path: path, operation: "open", errno: ENOTDIR,
                               hint: "The WAL path exists but is a file, not a directory: move the file away or choose another WAL directory.")
            }
            return
        }
        let parent = parentDirectory(of: path)
        if parent != path { try createDirectories(parent, mode: mode) }
        do {
            try Syscall.run(.mkdir, path: path) { Syscall.errnoResult(mkdir(path, mode)) }
            _ = chmod(path, mode)
        } catch let error as WALError where error.errno == EEXIST {
            guard kind(of: path).isDirectory else {
                throw WALError(.notADirectory, path: path, operation: "mkdir", errno: ENOTDIR,
                               hint: "The WAL path exists but is not a directory: move it away or choose another WAL directory.")
            }
            return
        }
        try syncDirectory(parent)
    }

    static func parentDirectory(of path: String) -> String {
        var trimmed = path
        while trimmed.count > 1 && trimmed.hasSuffix("/") { trimmed.removeLast() }
        guard let slash = trimmed.lastIndex(of: "/") else { return "." }
        if slash == trimmed.startIndex { return "/" }
        return String(trimmed[..<slash])
    }

    /// fsyncs a directory so that entries created, renamed or removed in it are durable.
    static func syncDirectory(_ path: String) throws {
        let handle = try OpenFile.openDirectory(path)
        defer { handle.closeQuietly() }
        try handle.sync()
    }

    static func rename(_ from: String, to: String) throws {
        try Syscall.run(.rename, path: from) { Syscall.errnoResult(Glibc.rename(from, to)) }
    }

    static func remove(_ path: String) throws {
        try Syscall.run(.unlink, path: path) { Syscall.errnoResult(unlink(path)) }
    }

    /// Names of the entries in `path`, without "." and "..".
    static func list(_ path: String) throws -> [String] {
        guard let dir = opendir(path) else {
            throw WALError.system(.readdir, path: path, errno: Glibc.errno)
        }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafePointer(to: entry.pointee.d_name) { pointer in
                pointer.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    /// The size of the filesystem holding `path`, the bytes in use on it (size minus free, as
    /// `df` and node_exporter count them), and the bytes available to this process.
    static func usage(_ path: String) -> (size: Int, used: Int, available: Int)? {
        var st = statvfs()
        guard statvfs(path, &st) == 0 else { return nil }
        let unit = Int(st.f_frsize)
        return (Int(st.f_blocks) * unit, Int(st.f_blocks - st.f_bfree) * unit, Int(st.f_bavail) * unit)
    }

    /// Bytes available to this process on the filesystem holding `path`.
    static func freeBytes(_ path: String) -> Int? {
        var st = statvfs()
        guard statvfs(path, &st) == 0 else { return nil }
        return Int(st.f_bavail) * Int(st.f_frsize)
    }
}
