import Logging
import SignalWAL

/// The settings both services read the same way: log level, the log file, and who may read the
/// files they create.
public struct CommonSettings: Sendable {
    public static let fileAccess = SettingSpec("signaldb.file.access", default: "owner",
        "who may read the WAL and store files created: owner (directories 0700, files 0600) or group (0750 / 0640, for a group of operators); existing directories keep their mode, with a warning when it is wider")
    public static let logFile = SettingSpec("signaldb.log.file", default: "",
        "also append every log line to this file (stdout always gets them); its directory must exist")
    public static let logLevel = SettingSpec("log.level", default: "info", "trace, debug, info, notice, warning, error or critical")
    public static let specs = [fileAccess, logFile, logLevel]

    public var fileAccess: FileAccess
    public var logFile: String?
    public var logLevel: Logger.Level

    public init(_ s: Settings) throws {
        let access = s.string(Self.fileAccess)
        guard let fileAccess = FileAccess(argument: access) else { throw SettingError(Self.fileAccess, access, "owner or group") }
        self.fileAccess = fileAccess
        logFile = s.optionalString(Self.logFile)
        let level = s.string(Self.logLevel)
        guard let logLevel = Logger.Level(rawValue: level) else { throw SettingError(Self.logLevel, level, "trace, debug, info, notice, warning, error or critical") }
        self.logLevel = logLevel
    }
}
