import Foundation

/// Creates a service's data directory (and missing parents) and checks that the process may
/// write it, failing start-up with the path, the cause and the fix instead of a Foundation
/// error. New directories get mode 0700: telemetry can hold personal data.
public enum ServiceDirectory {
    public static func ensure(_ path: String, setting: String) throws {
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) {
            guard isDirectory.boolValue else {
                throw DirectoryError("\(path) (\(setting)) exists and is not a directory: point \(setting) at a directory")
            }
        } else {
            var prefix = path.hasPrefix("/") ? "" : "."
            for component in path.split(separator: "/") {
                prefix += "/" + component
                if mkdir(prefix, 0o700) != 0 && errno != EEXIST {
                    let cause = String(cString: strerror(errno))
                    throw DirectoryError("cannot create \(prefix) for \(setting)=\(path): \(cause). Create it (owned by the service user, mode 0700) or point \(setting) at a writable path")
                }
            }
        }
        guard access(path, W_OK | X_OK) == 0 else {
            let cause = String(cString: strerror(errno))
            throw DirectoryError("\(path) (\(setting)) is not writable by this process (uid \(getuid())): \(cause). chown it to the service user or fix its mode")
        }
    }
}

public struct DirectoryError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}
