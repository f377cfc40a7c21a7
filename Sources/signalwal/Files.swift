import ArgumentParser
import Foundation
#if canImport(Glibc)
import Glibc
#endif
import SignalWAL

/// The few file operations backup and restore need, each throwing a ``WALError`` that names the
/// path, the errno and what to do.
enum Files {
    static func error(_ operation: String, _ path: String, _ code: Int32 = errno) -> WALError {
        let kind: WALError.Kind
        let hint: String
        switch code {
        case ENOSPC, EDQUOT: (kind, hint) = (.outOfSpace, "The destination's filesystem is full: free space or choose another destination.")
        case EACCES, EPERM: (kind, hint) = (.permissionDenied, "This process (uid \(getuid())) may not write there: choose another destination or fix its permissions.")
        case ENOENT: (kind, hint) = (.notFound, "A directory on the way does not exist: create it first.")
        default: (kind, hint) = (.io, "Check the path and the filesystem it is on.")
        }
        return WALError(kind, path: path, operation: operation, errno: code, hint: hint)
    }

    /// A new file (refusing to replace one), written whole, then zero-filled to `size` with
    /// real writes, fsynced. Not sparse: the engine stores into segments through a mapping, and
    /// a store into a hole on a full disk is a SIGBUS, so every block must be allocated and
    /// written before a WAL opens it (a full disk fails the restore instead, naming the file).
    static func create(_ path: String, writing chunks: [UnsafeRawBufferPointer], size: Int? = nil,
                       mode: mode_t = FileAccess.owner.fileMode) throws {
        let file = try Writer(creating: path, mode: mode)
        for chunk in chunks { try file.write(chunk) }
        if let size { try file.zeroFill(to: size) }
        try file.sync()
    }

    /// A new file written front to back in pieces, then fsynced: for archives larger than memory.
    final class Writer {
        let path: String
        private let fd: Int32
        private var offset = 0

        /// `mode`: private by default, as the WAL's own files (telemetry can hold personal data).
        init(creating path: String, mode: mode_t = FileAccess.owner.fileMode) throws {
            self.path = path
            fd = open(path, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, mode)
            guard fd >= 0 else { throw Files.error("create", path) }
            _ = fchmod(fd, mode)  // exactly: the umask may strip group bits asked for
        }

        deinit { close(fd) }

        func write(_ bytes: [UInt8]) throws {
            try bytes.withUnsafeBytes { try write($0) }
        }

        func write(_ bytes: UnsafeRawBufferPointer) throws {
            var done = 0
            while done < bytes.count {
                let n = pwrite(fd, bytes.baseAddress! + done, bytes.count - done, off_t(offset + done))
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else { throw Files.error("write", path) }
                done += n
            }
            offset += bytes.count
        }

        /// Writes zeros from the current end to `size`, 1 MiB at a time.
        func zeroFill(to size: Int) throws {
            let zeros = [UInt8](repeating: 0, count: 1 << 20)
            try zeros.withUnsafeBytes { raw in
                while offset < size {
                    try write(UnsafeRawBufferPointer(rebasing: raw[0..<min(raw.count, size - offset)]))
                }
            }
        }

        func sync() throws {
            guard fsync(fd) == 0 else { throw Files.error("fsync", path) }
        }
    }

    /// Exactly `count` bytes at `offset`.
    static func read(_ path: String, at offset: Int, count: Int) throws -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw error("open", path) }
        defer { close(fd) }
        var bytes = [UInt8](repeating: 0, count: count)
        var done = 0
        while done < count {
            let n = bytes.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + done, count - done, off_t(offset + done)) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw error("read", path, n == 0 ? EIO : errno) }
            done += n
        }
        return bytes
    }

    static func readAll(_ path: String, limit: Int? = nil) throws -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw error("open", path) }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw error("fstat", path) }
        let count = min(Int(st.st_size), limit ?? .max)
        var bytes = [UInt8](repeating: 0, count: count)
        var done = 0
        while done < count {
            let n = bytes.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + done, count - done, off_t(done)) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw error("read", path) }
            done += n
        }
        return bytes
    }

    /// Creates `path`, and its missing parents, with `mode`; the parents' entries are fsynced.
    static func makeDirectory(_ path: String, mode: mode_t = FileAccess.owner.directoryMode) throws {
        let parent = (path as NSString).deletingLastPathComponent
        if !parent.isEmpty, parent != path, !exists(parent) { try makeDirectory(parent, mode: mode) }
        guard mkdir(path, mode) == 0 else { throw error("mkdir", path) }
        _ = chmod(path, mode)
        try syncDirectory(parent.isEmpty ? "." : parent)
    }

    static func syncDirectory(_ path: String) throws {
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw error("open", path) }
        defer { close(fd) }
        guard fsync(fd) == 0 else { throw error("fsync", path) }
    }

    static func exists(_ path: String) -> Bool {
        var st = stat()
        return lstat(path, &st) == 0
    }

    static func isDirectory(_ path: String) -> Bool {
        var st = stat()
        return stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR
    }

    static func list(_ path: String) throws -> [String] {
        guard let dir = opendir(path) else { throw error("opendir", path) }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
            if name != "." && name != ".." { names.append(name) }
        }
        return names.sorted()
    }

    /// `rm -rf` for a directory this tool made (files and one level of subdirectories).
    static func removeTree(_ path: String) {
        for name in (try? list(path)) ?? [] {
            let child = path + "/" + name
            if unlink(child) != 0 { removeTree(child) }
        }
        rmdir(path)
    }
}

// `--access owner|group`, parsed by FileAccess's own `init?(argument:)`.
extension FileAccess: ExpressibleByArgument {}
