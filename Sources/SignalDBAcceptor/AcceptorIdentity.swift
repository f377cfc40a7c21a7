import Foundation
import SignalWAL

/// The acceptor's id: a UUID created the first time a WAL directory is used and kept in it as
/// `acceptor-id`, so the writer can tell this acceptor's LSNs from another's across restarts.
/// Written to a temporary file, fsynced, renamed, and the directory fsynced.
enum AcceptorIdentity {
    static let fileName = "acceptor-id"

    static func loadOrCreate(directory: String) throws -> String {
        let path = directory + "/" + fileName
        if access(path, F_OK) == 0 || errno != ENOENT {
            // It exists (or cannot be checked): never replace it. A new id would make the writer
            // take this WAL's backlog for another acceptor's data and store it again.
            let text: String
            do { text = try String(contentsOfFile: path, encoding: .utf8) } catch {
                throw ServiceStartError("cannot read \(path): \(error.localizedDescription). It names this acceptor to the writer; fix its owner or mode (the service user must read it), or restore it from a backup.")
            }
            let id = text.trimmingCharacters(in: .whitespacesAndNewlines)
            guard UUID(uuidString: id) != nil else {
                throw ServiceStartError("\(path) holds '\(id.prefix(40))', not a UUID. It names this acceptor to the writer: restore it from a backup, or delete it only if this WAL's records were never forwarded.")
            }
            return id
        }
        let id = UUID().uuidString.lowercased()
        try DurableFile.write(Array((id + "\n").utf8), to: path)
        return id
    }
}

/// A start-up failure with a message that names the path, the cause and the fix.
public struct ServiceStartError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Writes a small file so it survives a crash once the call returns: temp file, fsync,
/// rename, fsync of the directory.
enum DurableFile {
    static func write(_ bytes: [UInt8], to path: String, mode: mode_t = 0o600) throws {
        let temp = path + ".tmp"
        let fd = open(temp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode)
        guard fd >= 0 else { throw ServiceStartError("cannot create \(temp): \(String(cString: strerror(errno))). Check the directory's owner and permissions.") }
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
        let dfd = open(directory.isEmpty ? "." : directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard dfd >= 0 else { throw ServiceStartError("cannot open \(directory) to fsync it: \(String(cString: strerror(errno)))") }
        defer { close(dfd) }
        guard fsync(dfd) == 0 else { throw ServiceStartError("cannot fsync \(directory): \(String(cString: strerror(errno)))") }
    }
}
