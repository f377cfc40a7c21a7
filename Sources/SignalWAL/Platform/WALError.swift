#if canImport(Glibc)
import Glibc
#endif

/// The one error type SignalWAL throws.
///
/// Every error names what failed (``operation``), where (``path``), the `errno` when the
/// kernel reported one, and a sentence a person can act on (``description``).
public struct WALError: Error, Sendable, CustomStringConvertible, Equatable {
    /// What went wrong, in a form code can switch on.
    public enum Kind: Sendable, Equatable {
        /// The process may not read or write the path.
        case permissionDenied
        /// A path that must be a directory is something else.
        case notADirectory
        /// The filesystem is full or the quota is exhausted. Retry after a checkpoint frees
        /// segments or after space is freed.
        case outOfSpace
        /// Another process holds the WAL directory's lock; `pid` is the holder if known.
        case locked(pid: Int32?)
        /// This process already has the directory open as a ``WAL``: use that instance (or close
        /// it first). Not retryable: waiting does not release it.
        case alreadyOpen
        /// The process (EMFILE) or the system (ENFILE) is out of file descriptors. Each open WAL
        /// holds a few (see the README); raise `ulimit -n`, or close WALs.
        case tooManyOpenFiles
        /// The live segments would exceed ``Configuration/maxLiveBytes``: consumers are behind.
        /// Retry after they checkpoint; ``WAL/backlogStatus`` says when (`suggestedRetryAfter`).
        case backlogFull(liveBytes: Int, limit: Int)
        /// LSNs a reader asked for are not in the log: `missing` were checkpointed and released
        /// (below ``WAL/oldestLSN``, or recycled while the reader was behind), or lost to damage
        /// recovery reported. The hint says which. Read on from `missing.upperBound + 1`.
        case gap(missing: ClosedRange<LSN>)
        /// A record is larger than ``Configuration/maxRecordSize``.
        case recordTooLarge(size: Int, limit: Int)
        /// The WAL was closed; reopen it.
        case closed
        /// A header (segment or checkpoint) failed its checks.
        case corruptHeader
        /// Files were written by a newer SignalWAL format than this build reads.
        case unsupportedVersion(found: UInt32, supported: UInt32)
        /// A flush failed; the WAL refuses further appends until it is reopened, because
        /// the kernel may have dropped the dirty pages that flush was meant to persist.
        case flushFailed
        /// A configuration value or argument is out of range.
        case invalidArgument
        /// The path does not exist.
        case notFound
        /// Any other I/O failure.
        case io
    }

    public let kind: Kind
    /// The file or directory involved.
    public let path: String
    /// The system call or step that failed, for example `"fdatasync"`.
    public let operation: String
    /// The `errno` the kernel returned, or 0 when the error is not from a system call.
    public let errno: Int32
    /// What to do about it.
    public let hint: String

    public init(_ kind: Kind, path: String, operation: String, errno: Int32 = 0, hint: String) {
        self.kind = kind
        self.path = path
        self.operation = operation
        self.errno = errno
        self.hint = hint
    }

    /// Whether retrying the same call later can succeed without reopening the WAL.
    public var isRetryable: Bool {
        switch kind {
        case .outOfSpace, .locked, .backlogFull, .tooManyOpenFiles: return true
        default: return false
        }
    }

    public var description: String {
        var text = "\(operation) failed for \(path)"
        if errno != 0 {
            text += ": \(String(cString: strerror(errno))) (errno \(errno))"
        }
        return text + ". " + hint
    }

    /// Builds the error for a failed system call, choosing the kind and the hint from errno.
    static func system(_ operation: SyscallOperation, path: String, errno code: Int32) -> WALError {
        switch code {
        case EACCES, EPERM, EROFS:
            return WALError(.permissionDenied, path: path, operation: operation.rawValue, errno: code,
                            hint: permissionHint(path: path, readOnly: code == EROFS))
        case ENOSPC, EDQUOT:
            return WALError(.outOfSpace, path: path, operation: operation.rawValue, errno: code,
                            hint: "The filesystem is full or over quota: free space, or checkpoint consumed records so segments can be reused, then retry.")
        case ENOTDIR:
            return WALError(.notADirectory, path: path, operation: operation.rawValue, errno: code,
                            hint: "A component of the path is a file, not a directory: choose another WAL directory or move the file away.")
        case ENOENT:
            return WALError(.notFound, path: path, operation: operation.rawValue, errno: code,
                            hint: "The path does not exist: check the spelling, or let SignalWAL create it by opening its parent path.")
        case EMFILE, ENFILE:
            return WALError(.tooManyOpenFiles, path: path, operation: operation.rawValue, errno: code,
                            hint: code == EMFILE
                                ? "This process has used up its file descriptors: raise the limit (ulimit -n, or LimitNOFILE= in the systemd unit; each open WAL holds about 6) or close WALs it no longer needs."
                                : "The system's file table is full (fs.file-max): close files elsewhere or raise fs.file-max.")
        case EIO:
            return WALError(.io, path: path, operation: operation.rawValue, errno: code,
                            hint: "The storage device reported an I/O error: check the kernel log (dmesg) and the disk's health.")
        default:
            return WALError(.io, path: path, operation: operation.rawValue, errno: code,
                            hint: "Check the path and the filesystem it is on.")
        }
    }

    /// Names the owner and mode of the nearest existing ancestor and the process's uid, since
    /// that is what an operator needs to fix a permission problem.
    static func permissionHint(path: String, readOnly: Bool) -> String {
        if readOnly {
            return "The filesystem is mounted read-only: remount it read-write or pick a WAL directory on a writable filesystem."
        }
        // The nearest ancestor that exists is the one whose permissions matter.
        var probe = path
        var st = stat()
        while stat(probe, &st) != 0 {
            let parent = FileSystem.parentDirectory(of: probe)
            if parent == probe { break }
            probe = parent
        }
        let mode = String(st.st_mode & 0o7777, radix: 8)
        return "\(probe) is owned by uid \(st.st_uid) gid \(st.st_gid) with mode \(mode), and this process runs as uid \(getuid()) gid \(getgid()): run as the owner, or chown/chmod the directory (the services run as uid 1000)."
    }
}
