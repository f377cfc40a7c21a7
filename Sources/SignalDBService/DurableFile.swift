import Foundation

/// Writes a small file so it survives a crash once the call returns: temp file, fsync,
/// rename, fsync of the directory.
public enum DurableFile {
    public static func write(_ bytes: [UInt8], to path: String, mode: mode_t = 0o600) throws {
        let temp = path + ".tmp"
        let fd = open(temp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode)
        guard fd >= 0 else { throw ServiceStartError("cannot create \(temp): \(String(cString: strerror(errno))). Check the directory's owner and permissions.") }
        _ = fchmod(fd, mode)  // exactly `mode`: the umask may strip group bits asked for
        var ok = bytes.withUnsafeBytes { buffer -> Bool in
            var offset = 0
            while offset < buffer.count {
                let n = Glibc.write(fd, buffer.baseAddress! + offset, buffer.count - offset)
                if n < 0 { if errno == EINTR { continue }; return false }
                offset += n
            }
            return true
        }
        ok = ok && fsync(fd) == 0
        let failure = errno
        close(fd)
        guard ok else {
            unlink(temp)
            throw ServiceStartError("cannot write \(temp): \(String(cString: strerror(failure))) (a full disk?)")
        }
        guard rename(temp, path) == 0 else { throw ServiceStartError("cannot rename \(temp) to \(path): \(String(cString: strerror(errno)))") }
        let directory = (path as NSString).deletingLastPathComponent
        try fsyncDirectory(directory.isEmpty ? "." : directory)
    }

    /// Makes entries created or renamed in `directory` durable.
    public static func fsyncDirectory(_ directory: String) throws {
        let dfd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard dfd >= 0 else { throw ServiceStartError("cannot open \(directory) to fsync it: \(String(cString: strerror(errno)))") }
        defer { close(dfd) }
        guard fsync(dfd) == 0 else { throw ServiceStartError("cannot fsync \(directory): \(String(cString: strerror(errno)))") }
    }
}
