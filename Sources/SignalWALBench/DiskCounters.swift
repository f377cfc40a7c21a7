#if canImport(Glibc)
import Glibc
#endif

/// Bytes the block device under a directory has written, from `/sys/dev/block/MAJ:MIN/stat`
/// (field 7: sectors written, 512 bytes each). Used for `write_amplification`: what the disk
/// wrote divided by what was appended. Includes every writer on that device, so it is an
/// upper bound on a shared machine.
public struct DiskCounters: Sendable {
    public let statPath: String

    public init?(directory: String) {
        var st = stat()
        guard stat(directory, &st) == 0 else { return nil }
        let device = st.st_dev
        let major = (device >> 8) & 0xfff | (device >> 32) & ~0xfff
        let minor = device & 0xff | (device >> 12) & ~0xff
        let path = "/sys/dev/block/\(major):\(minor)/stat"
        guard access(path, R_OK) == 0 else { return nil }
        statPath = path
    }

    public func bytesWritten() -> UInt64? {
        guard let file = fopen(statPath, "r") else { return nil }
        defer { fclose(file) }
        var buffer = [CChar](repeating: 0, count: 512)
        guard fgets(&buffer, Int32(buffer.count), file) != nil else { return nil }
        let fields = String(cString: buffer).split(separator: " ", omittingEmptySubsequences: true)
        guard fields.count > 6, let sectors = UInt64(fields[6]) else { return nil }
        return sectors * 512
    }
}

/// Peak resident set size of this process, in bytes: `VmHWM` from `/proc/self/status`.
/// Not `getrusage`'s `ru_maxrss`: Linux carries that across `execve`, so a benchmark started
/// from a large parent process would report the parent's peak as its own.
public func maxResidentBytes() -> Int {
    if let file = fopen("/proc/self/status", "r") {
        defer { fclose(file) }
        var line = [CChar](repeating: 0, count: 256)
        while fgets(&line, Int32(line.count), file) != nil {
            let text = String(cString: line)
            if text.hasPrefix("VmHWM:"), let kib = Int(text.dropFirst(6).filter(\.isNumber)) { return kib * 1024 }
        }
    }
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    return Int(usage.ru_maxrss) * 1024
}

/// Percentile of sorted samples (nearest rank).
func percentile(_ sorted: [UInt64], _ fraction: Double) -> UInt64 {
    guard !sorted.isEmpty else { return 0 }
    let rank = Int((fraction * Double(sorted.count)).rounded(.up)) - 1
    return sorted[min(max(rank, 0), sorted.count - 1)]
}
