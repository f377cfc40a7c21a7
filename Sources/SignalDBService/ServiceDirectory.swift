import Foundation
import Logging
import SignalWAL

/// Creates a service's data directory (and missing parents) and checks that the process may
/// write it, failing start-up with the path, the cause and the fix instead of a Foundation
/// error. New directories get the mode `SIGNALDB_FILE_ACCESS` asks for (0700 by default:
/// telemetry can hold personal data); an existing one keeps its mode, with a warning when it
/// lets in more users than the setting would.
public enum ServiceDirectory {
    public static func ensure(_ path: String, setting: String, access: FileAccess = .owner, logger: Logger? = nil) throws {
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) {
            guard isDirectory.boolValue else {
                throw DirectoryError("\(path) (\(setting)) exists and is not a directory: point \(setting) at a directory")
            }
            var st = stat()
            if stat(path, &st) == 0, access.grantsMore(thanDirectoryMode: st.st_mode), let logger {
                let mode = "0" + String(st.st_mode & 0o777, radix: 8), wanted = "0" + String(access.directoryMode, radix: 8)
                logger.warning("\(path) (\(setting)) has mode \(mode), wider than SIGNALDB_FILE_ACCESS=\(access) (\(wanted)): other users may read its telemetry. It keeps its mode; to restrict it: chmod \(wanted) \(path)",
                               metadata: ["path": "\(path)", "mode": "\(mode)", "expected": "\(wanted)"])
            }
        } else {
            var prefix = path.hasPrefix("/") ? "" : "."
            for component in path.split(separator: "/") {
                prefix += "/" + component
                if mkdir(prefix, access.directoryMode) == 0 {
                    _ = chmod(prefix, access.directoryMode)  // exactly: the umask may strip group bits
                    // The new entry must survive a power cut, or the WAL inside could vanish
                    // with it after its records were acknowledged.
                    try DurableFile.fsyncDirectory((prefix as NSString).deletingLastPathComponent)
                } else if errno != EEXIST {
                    let cause = String(cString: strerror(errno))
                    throw DirectoryError("cannot create \(prefix) for \(setting)=\(path): \(cause). Create it (owned by the service user, mode 0\(String(access.directoryMode, radix: 8))) or point \(setting) at a writable path")
                }
            }
        }
        guard Glibc.access(path, W_OK | X_OK) == 0 else {
            let cause = String(cString: strerror(errno))
            throw DirectoryError("\(path) (\(setting)) is not writable by this process (uid \(getuid())): \(cause). chown it to the service user or fix its mode")
        }
    }
}

public struct DirectoryError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}
