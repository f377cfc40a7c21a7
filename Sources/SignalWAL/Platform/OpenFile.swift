#if canImport(Glibc)
import Glibc
#endif
import CShims
import Synchronization

/// An open file descriptor that remembers its path for error messages and closes exactly once.
final class OpenFile: Sendable {
    let fd: Int32
    let path: String
    private let isClosed = Atomic<Bool>(false)

    private init(fd: Int32, path: String) {
        self.fd = fd
        self.path = path
    }

    /// Opens `path`; `create` adds `O_CREAT`, and a file this call creates gets exactly the
    /// permission bits `mode` (``FileAccess``; the umask would strip group bits an operator
    /// asked for), while an existing one keeps its mode; `exclusive` adds `O_EXCL`.
    static func open(_ path: String, writable: Bool, create: Bool = false, exclusive: Bool = false,
                     direct: Bool = false, mode: mode_t = FileAccess.owner.fileMode) throws -> OpenFile {
        if create && !exclusive {
            // Created or opened: try creating first, so only a new file's mode is set.
            do {
                return try open(path, writable: writable, create: true, exclusive: true, direct: direct, mode: mode)
            } catch let error as WALError where error.errno == EEXIST {
                return try open(path, writable: writable, direct: direct)
            }
        }
        var flags = writable ? O_RDWR : O_RDONLY
        if create { flags |= O_CREAT }
        if exclusive { flags |= O_EXCL }
        let fd = try Syscall.run(.open, path: path) { Int(sw_open(path, flags, direct ? 1 : 0, mode)) }
        if create { _ = fchmod(Int32(fd), mode) }
        return OpenFile(fd: Int32(fd), path: path)
    }

    /// Opens a directory read-only so it can be fsynced.
    static func openDirectory(_ path: String) throws -> OpenFile {
        let fd = try Syscall.run(.open, path: path) { Int(sw_open(path, O_RDONLY | O_DIRECTORY, 0, 0)) }
        return OpenFile(fd: Int32(fd), path: path)
    }

    deinit { closeQuietly() }

    /// Closes the descriptor. Errors from close(2) are reported but the descriptor is gone
    /// either way (Linux frees it even when close fails), so a retry would be wrong.
    func close() throws {
        guard !isClosed.exchange(true, ordering: .acquiringAndReleasing) else { return }
        let result = Glibc.close(fd)
        if result < 0 {
            let code = Glibc.errno
            if code != EINTR { throw WALError.system(.close, path: path, errno: code) }
        }
    }

    func closeQuietly() {
        try? close()
    }

    func size() throws -> Int {
        var st = stat()
        try Syscall.run(.fstat, path: path) { Syscall.errnoResult(fstat(fd, &st)) }
        return Int(st.st_size)
    }

    /// Reads exactly `buffer.count` bytes at `offset`, or fewer only at end of file.
    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int) throws -> Int {
        var done = 0
        while done < buffer.count {
            let n = try Syscall.transfer(.pread, path: path, count: buffer.count - done) { ask in
                sw_pread(fd, buffer.baseAddress! + done, ask, Int64(offset + done))
            }
            if n == 0 { break }
            done += n
        }
        return done
    }

    /// Writes all of `bytes` at `offset`, continuing after short writes.
    func write(_ bytes: UnsafeRawBufferPointer, at offset: Int) throws {
        var done = 0
        while done < bytes.count {
            let n = try Syscall.transfer(.pwrite, path: path, count: bytes.count - done) { ask in
                sw_pwrite(fd, bytes.baseAddress! + done, ask, Int64(offset + done))
            }
            if n == 0 {
                throw WALError.system(.pwrite, path: path, errno: EIO)
            }
            done += n
        }
    }

    func write(_ bytes: [UInt8], at offset: Int) throws {
        try bytes.withUnsafeBytes { (raw) throws in try write(raw, at: offset) }
    }

    func dataSync() throws {
        try Syscall.run(.fdatasync, path: path) { Int(sw_fdatasync(fd)) }
    }

    func sync() throws {
        try Syscall.run(.fsync, path: path) { Int(sw_fsync(fd)) }
    }

    /// Allocates blocks for `[offset, offset + length)` so later stores cannot hit ENOSPC.
    func allocate(offset: Int, length: Int) throws {
        try Syscall.run(.fallocate, path: path) { Int(sw_fallocate(fd, Int64(offset), Int64(length))) }
    }

    func truncate(to length: Int) throws {
        try Syscall.run(.ftruncate, path: path) { Syscall.errnoResult(ftruncate(fd, off_t(length))) }
    }

    /// Takes an exclusive, non-blocking flock. Returns false when another holder has it.
    func tryLockExclusive() throws -> Bool {
        do {
            try Syscall.run(.flock, path: path) { Int(sw_flock_exclusive_nonblocking(fd)) }
            return true
        } catch let error as WALError where error.errno == EWOULDBLOCK {
            return false
        }
    }
}
