#if canImport(Glibc)
import Glibc
#endif

/// The exclusive `flock` on `<dir>/.lock` that keeps two processes from owning one WAL.
///
/// flock locks belong to the open file description, so a second `WAL.open` of the same
/// directory in the same process is refused too, as ``WALError/Kind/alreadyOpen`` (the PID the
/// holder wrote into the file is this process's). The holder writes its PID into the file so
/// the refusal can name it.
final class DirectoryLock: Sendable {
    let path: String
    private let file: OpenFile

    private init(path: String, file: OpenFile) {
        self.path = path
        self.file = file
    }

    static func acquire(directory: String, access: FileAccess = .owner) throws -> DirectoryLock {
        let path = directory + "/" + Format.lockFileName
        let existed = FileSystem.kind(of: path).exists
        let file = try OpenFile.open(path, writable: true, create: true, mode: access.fileMode)
        do {
            guard try file.tryLockExclusive() else {
                let pid = holderPID(file)
                if pid == getpid() {
                    throw WALError(.alreadyOpen, path: directory, operation: "open",
                                   hint: "This process already has this WAL open: share that WAL instance (it is safe from any thread or task), or close it before opening the directory again.")
                }
                throw WALError(.locked(pid: pid), path: path, operation: "flock", errno: EWOULDBLOCK,
                               hint: "Another process\(pid.map { " (PID \($0))" } ?? "") has this WAL open: stop it first, or use a different WAL directory.")
            }
            try file.write(Self.record("\(getpid())"), at: 0)
            if !existed { try FileSystem.syncDirectory(directory) }
            return DirectoryLock(path: path, file: file)
        } catch {
            file.closeQuietly()
            throw error
        }
    }

    /// The PID written by the current holder, if it can be read.
    static func holderPID(_ file: OpenFile) -> Int32? {
        var bytes = [UInt8](repeating: 0, count: 32)
        guard let count = try? bytes.withUnsafeMutableBytes({ try file.read(into: $0, at: 0) }), count > 0 else { return nil }
        let digits = bytes[0..<count].prefix { $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }
        return Int32(String(decoding: digits, as: UTF8.self))
    }

    /// The file's contents: the PID (or nothing) padded to a fixed width. Always the same
    /// size and rewritten in place, never truncated: on a full filesystem a truncate frees the
    /// block and ext4 cannot hand it back until its journal commits, so the rewrite would fail
    /// with ENOSPC and the WAL could not open (found by the full-ext4 test).
    private static func record(_ text: String) -> [UInt8] {
        Array(text.utf8) + [UInt8](repeating: UInt8(ascii: " "), count: max(0, 15 - text.utf8.count)) + [UInt8(ascii: "\n")]
    }

    func release() {
        try? file.write(Self.record(""), at: 0)
        file.closeQuietly()
    }
}
