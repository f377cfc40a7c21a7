#if canImport(Glibc)
import Glibc
#endif

/// Which mount point holds a path, from `/proc/self/mountinfo`, for the `mountpoint` label of
/// the disk gauges (so an alert can name the volume, as in `disk_used_bytes{mountpoint="/data/wal"}`).
enum MountTable {
    /// The mount point whose path is the longest prefix of `path` resolved (symlinks and `..`
    /// removed). Nil when either cannot be read.
    static func mountPoint(containing path: String) -> String? {
        guard let resolved = realpath(path, nil) else { return nil }
        let target = String(cString: resolved)
        free(resolved)
        guard let text = readAll("/proc/self/mountinfo") else { return nil }
        var best: String? = nil
        for line in text.split(separator: "\n") {
            // Field 5 is the mount point, with space, tab, newline and backslash octal-escaped.
            let fields = line.split(separator: " ", omittingEmptySubsequences: false)
            guard fields.count > 4 else { continue }
            let point = unescape(String(fields[4]))
            let inside = point == "/" || target == point || target.hasPrefix(point + "/")
            if inside, point.count >= (best?.count ?? 0) { best = point }
        }
        return best
    }

    static func unescape(_ field: String) -> String {
        guard field.contains("\\") else { return field }
        var bytes: [UInt8] = []
        var utf8 = Array(field.utf8)[...]
        while let byte = utf8.popFirst() {
            if byte == UInt8(ascii: "\\"), utf8.count >= 3,
               let value = UInt8(String(decoding: utf8.prefix(3), as: UTF8.self), radix: 8) {
                bytes.append(value)
                utf8 = utf8.dropFirst(3)
            } else {
                bytes.append(byte)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    private static func readAll(_ path: String) -> String? {
        guard let file = try? OpenFile.open(path, writable: false) else { return nil }
        defer { file.closeQuietly() }
        var data: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        // Bounded: a mount table past 16 MiB is not one we can label from.
        while data.count < 16 << 20 {
            guard let n = try? chunk.withUnsafeMutableBytes({ try file.read(into: $0, at: data.count) }), n > 0 else { break }
            data.append(contentsOf: chunk[0..<n])
        }
        return String(decoding: data, as: UTF8.self)
    }
}
