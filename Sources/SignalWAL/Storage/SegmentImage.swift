#if canImport(Glibc)
import Glibc
#endif
import CShims

/// A segment file read into private memory with `pread`, for recovery and the tools.
///
/// Not a mapping of the file: a medium error (EIO) on a mapped page is a SIGBUS, which would
/// make every open die at the same place. Here an unreadable 4 KiB block is filled with
/// ``poison`` (which never parses as a record) and listed in ``unreadable``. The memory is
/// anonymous and released with the image, so recovery holds one segment at a time (no
/// `vm.max_map_count` limit on the segment count).
///
/// `@unchecked Sendable`: the memory is written only in `init`, then read-only.
final class SegmentImage: @unchecked Sendable {
    let path: String
    private let base: UnsafeMutableRawPointer?
    let count: Int
    /// 4 KiB blocks that could not be read, merged into ranges, ascending.
    let unreadable: [Range<Int>]
    /// The byte unreadable blocks are filled with: a header of it has a length beyond any
    /// payload and an epoch that is never generated in practice.
    static let poison: UInt8 = 0xFF
    static let chunk = 1 << 20
    static let block = 4096

    /// Reads `length` bytes of `file` (fewer when the file is shorter). With `dropCache`, the
    /// file's cached pages are dropped first, so what is read is what the disk holds, not pages
    /// a failed write-back left in the cache marked clean.
    init(file: OpenFile, length: Int, dropCache: Bool) throws {
        path = file.path
        count = length
        guard length > 0 else {
            base = nil
            unreadable = []
            return
        }
        if dropCache { _ = try? Syscall.run(.fadvise, path: file.path) { Int(sw_fadvise_dontneed(file.fd, 0, 0)) } }
        var memory: UnsafeMutableRawPointer?
        try Syscall.run(.mmap, path: file.path) {
            let result = mmap(nil, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
            if result == MAP_FAILED { return -Int(errno) }
            memory = result
            return 0
        }
        base = memory!
        var bad: [Range<Int>] = []
        func mark(_ range: Range<Int>) {
            (memory! + range.lowerBound).initializeMemory(as: UInt8.self, repeating: Self.poison, count: range.count)
            if let last = bad.last, last.upperBound == range.lowerBound { bad[bad.count - 1] = last.lowerBound..<range.upperBound } else { bad.append(range) }
        }
        var offset = 0
        while offset < length {
            let size = min(Self.chunk, length - offset)
            do {
                let got = try file.read(into: UnsafeMutableRawBufferPointer(start: memory! + offset, count: size), at: offset)
                if got < size { break }   // past the end of the file: the rest stays zero
                offset += size
                continue
            } catch let error as WALError where error.errno == EIO {
                // Block by block, to keep every readable one.
            }
            var block = offset
            while block < offset + size {
                let piece = min(Self.block, offset + size - block)
                do {
                    _ = try file.read(into: UnsafeMutableRawBufferPointer(start: memory! + block, count: piece), at: block)
                } catch let error as WALError where error.errno == EIO {
                    mark(block..<block + piece)
                }
                block += piece
            }
            offset += size
        }
        unreadable = bad
    }

    deinit { if let base { _ = munmap(base, count) } }

    var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base, count: count) }
}
