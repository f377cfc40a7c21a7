#if canImport(Glibc)
import Glibc
#endif

/// The aligned memory the io_uring backend stages records in before the committer writes them
/// to their segment with O_DIRECT.
///
/// Bytes are addressed by *stream position*: a byte offset that grows for the life of the WAL
/// and that ``DirectWriter`` maps to (segment, file offset). Position `p` lives at
/// `p % capacity`. Because the capacity and every segment's starting position are multiples of
/// the direct-I/O alignment, an aligned file offset is always an aligned address here, which is
/// what O_DIRECT requires of both.
///
/// `@unchecked Sendable` for the same reason as ``MappedRegion``: the memory is shared by
/// design. Appenders write disjoint ranges under the WAL's append lock; the committer only
/// reads ranges below the written position it was told about, and ``DirectWriter`` keeps
/// appenders out of ranges that have not been written to disk yet. Every access is bounds-
/// checked against the capacity.
final class StagingRing: @unchecked Sendable {
    let capacity: Int
    private let base: UnsafeMutableRawPointer

    /// Maps `capacity` bytes (a multiple of 4096) of anonymous memory: page-aligned, as O_DIRECT
    /// needs, and zero-filled by the kernel on first touch, so an idle WAL costs no resident
    /// memory and opening one costs no memset.
    init(capacity: Int, path: String) throws {
        precondition(capacity > 0 && capacity % 4096 == 0, "staging capacity must be a positive multiple of 4096")
        var memory: UnsafeMutableRawPointer?
        try Syscall.run(.mmap, path: path) {
            let result = mmap(nil, capacity, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
            if result == MAP_FAILED { return -Int(errno) }
            memory = result
            return 0
        }
        base = memory!
        self.capacity = capacity
    }

    deinit { _ = munmap(base, capacity) }

    /// Copies `source` to stream position `position`, wrapping at the end of the buffer.
    func store(_ source: UnsafeRawBufferPointer, at position: UInt64) {
        precondition(source.count <= capacity, "staged write larger than the staging buffer")
        guard let from = source.baseAddress, source.count > 0 else { return }
        let start = Int(position % UInt64(capacity))
        let first = min(source.count, capacity - start)
        (base + start).copyMemory(from: from, byteCount: first)
        if first < source.count { base.copyMemory(from: from + first, byteCount: source.count - first) }
    }

    /// Zeroes `count` bytes from stream position `position`, wrapping like ``store(_:at:)``.
    func zero(at position: UInt64, count: Int) {
        precondition(count >= 0 && count <= capacity, "staged zero-fill larger than the staging buffer")
        guard count > 0 else { return }
        let start = Int(position % UInt64(capacity))
        let first = min(count, capacity - start)
        (base + start).initializeMemory(as: UInt8.self, repeating: 0, count: first)
        if first < count { base.initializeMemory(as: UInt8.self, repeating: 0, count: count - first) }
    }

    /// The memory holding `[start, end)` as one or two pieces (two when it wraps).
    func pieces(_ start: UInt64, _ end: UInt64) -> (UnsafeRawBufferPointer, UnsafeRawBufferPointer?) {
        precondition(end >= start && end - start <= UInt64(capacity), "staged range larger than the staging buffer")
        let offset = Int(start % UInt64(capacity))
        let count = Int(end - start)
        let first = min(count, capacity - offset)
        let head = UnsafeRawBufferPointer(start: base + offset, count: first)
        return first < count ? (head, UnsafeRawBufferPointer(start: base, count: count - first)) : (head, nil)
    }

    /// Fills stream positions `[start, start + buffer.count)` by reading the file at `offset`.
    /// Used once at open to stage the partly filled block the next record lands in.
    func load(from file: OpenFile, offset: Int, at start: UInt64, count: Int) throws {
        let (head, tail) = pieces(start, start + UInt64(count))
        var done = try file.read(into: UnsafeMutableRawBufferPointer(mutating: head), at: offset)
        if let tail, done == head.count {
            done += try file.read(into: UnsafeMutableRawBufferPointer(mutating: tail), at: offset + head.count)
        }
        if done < count { zero(at: start + UInt64(done), count: count - done) }
    }

    /// Copies `[start, start + count)` out, for checks.
    func copy(_ start: UInt64, count: Int) -> [UInt8] {
        let (head, tail) = pieces(start, start + UInt64(count))
        return Array(head) + (tail.map(Array.init) ?? [])
    }
}
