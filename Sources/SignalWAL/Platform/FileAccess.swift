#if canImport(Glibc)
import Glibc
#endif

/// Who may read the files a ``WAL`` creates: its directory (and missing parents), segments,
/// `.checkpoint`, `.lock` and `quarantine/`.
///
/// Telemetry can carry personal data, so the default is ``owner``: directories 0700, files
/// 0600. ``group`` lets a group of operators read (0750 / 0640), for backups or inspection by
/// a separate account. The mode is set exactly (the process's umask does not strip the group
/// bits asked for). Directories and files that already exist keep their mode; a service checks
/// them with ``grantsMore(thanDirectoryMode:)`` and warns.
public struct FileAccess: Sendable, Equatable, CustomStringConvertible {
    /// Mode of directories the WAL creates.
    public var directoryMode: mode_t
    /// Mode of files the WAL creates.
    public var fileMode: mode_t

    public init(directoryMode: mode_t, fileMode: mode_t) {
        self.directoryMode = directoryMode
        self.fileMode = fileMode
    }

    /// Only the owning user: directories 0700, files 0600. The default.
    public static let owner = FileAccess(directoryMode: 0o700, fileMode: 0o600)
    /// The owner, and its group read-only: directories 0750, files 0640.
    public static let group = FileAccess(directoryMode: 0o750, fileMode: 0o640)

    /// Parses `owner` or `group` (the services' `SIGNALDB_FILE_ACCESS`); nil for anything else.
    public init?(argument: String) {
        switch argument {
        case "owner": self = .owner
        case "group": self = .group
        default: return nil
        }
    }

    /// `owner`, `group`, or the two octal modes.
    public var description: String {
        switch self {
        case .owner: return "owner"
        case .group: return "group"
        default: return "0" + String(directoryMode, radix: 8) + "/0" + String(fileMode, radix: 8)
        }
    }

    /// Whether an existing directory with permission bits `mode` lets more users in than this
    /// setting would give a new one (for example 0755 under ``owner``).
    public func grantsMore(thanDirectoryMode mode: mode_t) -> Bool {
        mode & 0o777 & ~directoryMode != 0
    }
}
