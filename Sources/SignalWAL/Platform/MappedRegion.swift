#if canImport(Glibc)
import Glibc
#endif
import CShims

/// A shared memory mapping of a whole file, unmapped when the last reference goes away.
///
/// This is one of the few types that holds a raw pointer. It is `@unchecked Sendable` because
/// the mapping is shared by design: the WAL's append lock gives each writer a disjoint byte
/// range, and readers only read below the durable offset the committer publishes, so no byte is
/// read while it is written. Every access is bounds-checked against ``length``.
final class MappedRegion: @unchecked Sendable {
    let base: UnsafeMutableRawPointer
    let length: Int
    let path: String

    /// Maps `length` bytes of `file`. Callers must have allocated (fallocate) and written every
    /// block first: a store into a hole on a full filesystem is a SIGBUS, not an error.
    /// `readahead` lets the kernel read ahead on faults; only for read-only mappings of files
    /// that are never stored into through a mapping (the direct-I/O backend's segments).
    init(file: OpenFile, length: Int, writable: Bool, readahead: Bool = false) throws {
        var err: Int32 = 0
        let path = file.path
        var pointer: UnsafeMutableRawPointer?
        try Syscall.run(.mmap, path: path) {
            pointer = sw_mmap_shared(file.fd, length, writable ? 1 : 0, &err)
            return pointer == nil ? -Int(err) : 0
        }
        self.base = pointer!
        self.length = length
        self.path = path
        // Appends and scans are sequential, but readahead would build large page-cache folios,
        // and a store into a large folio makes the next flush write the whole folio. Files the
        // direct-I/O backend writes are never stored into through a mapping (and its O_DIRECT
        // writes drop cached folios), so their scans read ahead: without it, a cold scan faults
        // 4 KiB at a time (about 50 MB/s on the benchmark disk).
        if readahead && !writable {
            _ = sw_madvise_sequential(base, length)
        } else {
            _ = sw_madvise_random(base, length)
        }
    }

    deinit {
        _ = sw_munmap(base, length)
    }

    var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base, count: length) }

    func slice(_ offset: Int, _ count: Int) -> UnsafeRawBufferPointer {
        precondition(offset >= 0 && count >= 0 && offset + count <= length, "mapping access out of bounds")
        return UnsafeRawBufferPointer(start: base + offset, count: count)
    }

    /// A writable view of `[offset, offset + count)`, bounds-checked.
    func mutableSlice(_ offset: Int, _ count: Int) -> UnsafeMutableRawBufferPointer {
        precondition(offset >= 0 && count >= 0 && offset + count <= length, "mapping access out of bounds")
        return UnsafeMutableRawBufferPointer(start: base + offset, count: count)
    }

    func store(_ source: UnsafeRawBufferPointer, at offset: Int) {
        precondition(offset >= 0 && offset + source.count <= length, "mapping store out of bounds")
        guard let from = source.baseAddress, source.count > 0 else { return }
        (base + offset).copyMemory(from: from, byteCount: source.count)
    }

    func zero(_ offset: Int, _ count: Int) {
        precondition(offset >= 0 && count >= 0 && offset + count <= length, "mapping zero out of bounds")
        (base + offset).initializeMemory(as: UInt8.self, repeating: 0, count: count)
    }

    func loadLE<T: FixedWidthInteger>(_ type: T.Type, at offset: Int) -> T {
        precondition(offset >= 0 && offset + MemoryLayout<T>.size <= length, "mapping load out of bounds")
        return T(littleEndian: (base + offset).loadUnaligned(as: T.self))
    }

    /// Faults `[offset, offset + count)` in, writable, ahead of use (MADV_POPULATE_WRITE).
    /// Best effort; the range must be page-aligned at its start.
    func populate(_ offset: Int, _ count: Int) {
        precondition(offset >= 0 && count >= 0 && offset + count <= length && offset % 4096 == 0)
        _ = sw_madvise_populate_write(base + offset, count)
    }

    /// Drops this mapping's page-table entries for a page-aligned range (MADV_DONTNEED). For a
    /// shared file mapping the page cache keeps the data, and a dirty page stays dirty.
    func dropPages(_ offset: Int, _ count: Int) {
        precondition(offset >= 0 && count >= 0 && offset + count <= length && offset % 4096 == 0 && count % 4096 == 0)
        _ = sw_madvise_dontneed(base + offset, count)
    }

    /// Writes dirty pages of `[offset, offset + count)` to stable storage (msync MS_SYNC).
    func sync(_ offset: Int, _ count: Int) throws {
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let start = offset / page * page
        let end = min(length, offset + count)
        guard end > start else { return }
        try Syscall.run(.msync, path: path) { Int(sw_msync(base + start, end - start)) }
    }
}
