#if canImport(Glibc)
import Glibc
#endif
import SignalWAL

/// Just enough of POSIX ustar for backups: regular files in one directory, names under 100
/// bytes. Written and read by this tool; `tar -xf` reads it too.
enum Tar {
    static let block = 512

    static func header(name: String, size: Int, mode: Int = 0o644) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: block)
        func put(_ text: String, at offset: Int, width: Int) {
            for (index, byte) in text.utf8.prefix(width).enumerated() { bytes[offset + index] = byte }
        }
        func octal(_ value: Int, at offset: Int, width: Int) {
            put(String(String(value, radix: 8).suffix(width - 1)).leftPadded(width - 1, with: "0"), at: offset, width: width - 1)
        }
        put(name, at: 0, width: 100)
        octal(mode, at: 100, width: 8)
        octal(Int(getuid()), at: 108, width: 8)
        octal(Int(getgid()), at: 116, width: 8)
        octal(size, at: 124, width: 12)
        octal(Int(time(nil)), at: 136, width: 12)
        bytes[156] = UInt8(ascii: "0")
        put("ustar", at: 257, width: 6)
        put("00", at: 263, width: 2)
        // The checksum is computed with its own field as spaces.
        for index in 148..<156 { bytes[index] = UInt8(ascii: " ") }
        let sum = bytes.reduce(0) { $0 + Int($1) }
        put(String(String(sum, radix: 8)).leftPadded(6, with: "0"), at: 148, width: 6)
        bytes[154] = 0
        bytes[155] = UInt8(ascii: " ")
        return bytes
    }

    /// Parses a header block: nil at the end-of-archive (a zero block). Throws on a bad checksum.
    static func parse(_ bytes: [UInt8], path: String) throws -> (name: String, size: Int)? {
        guard bytes.count == block, !bytes.allSatisfy({ $0 == 0 }) else { return nil }
        func field(_ offset: Int, _ width: Int) -> String {
            String(decoding: bytes[offset..<offset + width].prefix { $0 != 0 }, as: UTF8.self)
        }
        var check = bytes
        for index in 148..<156 { check[index] = UInt8(ascii: " ") }
        let stored = Int(field(148, 8).trimmingCharacters(in: " "), radix: 8)
        guard stored == check.reduce(0, { $0 + Int($1) }), let size = Int(field(124, 12).trimmingCharacters(in: " "), radix: 8) else {
            throw WALError(.corruptHeader, path: path, operation: "restore",
                           hint: "This is not a tar archive written by signalwal backup (a header checksum does not match): check the file.")
        }
        return (field(0, 100), size)
    }
}

extension String {
    func leftPadded(_ width: Int, with pad: Character) -> String { String(repeating: pad, count: max(0, width - count)) + self }
    func trimmingCharacters(in set: Character) -> String {
        String(drop { $0 == set }.reversed().drop { $0 == set }.reversed())
    }
}
