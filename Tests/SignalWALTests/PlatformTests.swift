#if canImport(Glibc)
import Glibc
#endif
import CShims
import XCTest
@testable import SignalWAL

/// The C shim's io_uring and file functions, exercised directly against a real file.
final class PlatformTests: XCTestCase {
    private func scratchFile() throws -> OpenFile {
        let directory = makeTemporaryDirectory(self)
        try FileSystem.createDirectories(directory)
        return try OpenFile.open(directory + "/scratch", writable: true, create: true)
    }

    func testIOURingWriteWritevReadFallocateAndLinkedDataSync() throws {
        do { _ = try IOURing.open(entries: 2, path: "/tmp") } catch { throw XCTSkip("io_uring unavailable here: \(error)") }
        let file = try scratchFile()
        defer { file.closeQuietly() }
        var error: Int32 = 0
        let ring = try XCTUnwrap(sw_uring_create(16, &error), "errno \(error)")
        defer { sw_uring_destroy(ring) }
        let first = [UInt8](repeating: 0xA1, count: 4096)
        let second = [UInt8](repeating: 0xB2, count: 4096)
        let third = [UInt8](repeating: 0xC3, count: 4096)
        try first.withUnsafeBytes { a in
            try second.withUnsafeBytes { b in
                try third.withUnsafeBytes { c in
                    var vectors = [iovec(iov_base: UnsafeMutableRawPointer(mutating: b.baseAddress), iov_len: 4096),
                                   iovec(iov_base: UnsafeMutableRawPointer(mutating: c.baseAddress), iov_len: 4096)]
                    // fallocate -> write -> writev -> fdatasync, linked: each runs only if the one before succeeded.
                    XCTAssertEqual(sw_uring_prep_fallocate(ring, file.fd, 0, 1 << 20, 1, 1), 0)
                    XCTAssertEqual(sw_uring_prep_write(ring, file.fd, a.baseAddress, 4096, 0, 2, 1), 0)
                    XCTAssertEqual(vectors.withUnsafeMutableBufferPointer {
                        sw_uring_prep_writev(ring, file.fd, $0.baseAddress, 2, 4096, 3, 1)
                    }, 0)
                    XCTAssertEqual(sw_uring_prep_fsync(ring, file.fd, 1, 4, 0), 0)
                    XCTAssertEqual(sw_uring_submit(ring, 4), 4)
                    var tags = [UInt64](repeating: 0, count: 4)
                    var results = [Int32](repeating: 0, count: 4)
                    var reaped = 0
                    while reaped < 4 {
                        let n = tags.withUnsafeMutableBufferPointer { t in
                            results.withUnsafeMutableBufferPointer { r in
                                sw_uring_reap(ring, t.baseAddress! + reaped, r.baseAddress! + reaped, UInt32(4 - reaped), 1)
                            }
                        }
                        XCTAssertGreaterThan(n, 0)
                        reaped += Int(n)
                    }
                    let byTag = Dictionary(uniqueKeysWithValues: zip(tags, results))
                    XCTAssertEqual(byTag[1], 0, "fallocate")
                    XCTAssertEqual(byTag[2], 4096, "write")
                    XCTAssertEqual(byTag[3], 8192, "writev")
                    XCTAssertEqual(byTag[4], 0, "fdatasync")
                }
            }
        }
        XCTAssertEqual(try file.size(), 1 << 20)
        // Read back through the ring.
        var back = [UInt8](repeating: 0, count: 12288)
        back.withUnsafeMutableBytes { raw in
            XCTAssertEqual(sw_uring_prep_read(ring, file.fd, raw.baseAddress, 12288, 0, 9, 0), 0)
            XCTAssertEqual(sw_uring_submit(ring, 1), 1)
            var tag: UInt64 = 0
            var result: Int32 = 0
            XCTAssertEqual(sw_uring_reap(ring, &tag, &result, 1, 1), 1)
            XCTAssertEqual(tag, 9)
            XCTAssertEqual(result, 12288)
        }
        XCTAssertEqual(Array(back[0..<4096]), first)
        XCTAssertEqual(Array(back[4096..<8192]), second)
        XCTAssertEqual(Array(back[8192...]), third)
    }

    func testZeroRangeSyncFileRangeFadviseAndMsync() throws {
        let file = try scratchFile()
        defer { file.closeQuietly() }
        try file.allocate(offset: 0, length: 1 << 16)
        try file.write([UInt8](repeating: 0xFF, count: 1 << 16), at: 0)
        let zeroed = sw_fallocate_zero_range(file.fd, 4096, 8192)
        if zeroed == -EOPNOTSUPP { throw XCTSkip("this filesystem lacks FALLOC_FL_ZERO_RANGE") }
        XCTAssertEqual(zeroed, 0)
        XCTAssertEqual(sw_sync_file_range_write(file.fd, 0, 1 << 16), 0)
        XCTAssertEqual(sw_fdatasync(file.fd), 0)
        XCTAssertEqual(sw_fadvise_dontneed(file.fd, 0, 1 << 16), 0)
        let mapping = try MappedRegion(file: file, length: 1 << 16, writable: true)
        XCTAssertTrue(mapping.slice(4096, 8192).allSatisfy { $0 == 0 })
        XCTAssertTrue(mapping.slice(0, 4096).allSatisfy { $0 == 0xFF })
        // MADV_POPULATE_WRITE pre-faults the pages (kernels before 5.14 answer EINVAL).
        let populated = sw_madvise_populate_write(mapping.base, 1 << 16)
        XCTAssertTrue(populated == 0 || populated == -EINVAL, "\(populated)")
        [UInt8](repeating: 7, count: 16).withUnsafeBytes { mapping.store($0, at: 100) }
        try mapping.sync(100, 16)
        var check = [UInt8](repeating: 0, count: 16)
        _ = try check.withUnsafeMutableBytes { try file.read(into: $0, at: 100) }
        XCTAssertEqual(check, [UInt8](repeating: 7, count: 16))
    }

    func testDirectIOOpenWritesAlignedBlocks() throws {
        let directory = makeTemporaryDirectory(self)
        try FileSystem.createDirectories(directory)
        let path = directory + "/direct"
        let fd = sw_open(path, O_RDWR | O_CREAT, 1, 0o644)
        if fd == -EINVAL { throw XCTSkip("this filesystem refuses O_DIRECT") }
        XCTAssertGreaterThanOrEqual(fd, 0)
        defer { close(fd) }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 4096)
        defer { buffer.deallocate() }
        buffer.initializeMemory(as: UInt8.self, repeating: 0x42)
        XCTAssertEqual(sw_pwrite(fd, buffer.baseAddress, 4096, 0), 4096)
        XCTAssertEqual(sw_fdatasync(fd), 0)
    }

    func testFlockIsExclusiveAcrossOpenFileDescriptions() throws {
        let file = try scratchFile()
        defer { file.closeQuietly() }
        let other = try OpenFile.open(file.path, writable: false)
        defer { other.closeQuietly() }
        XCTAssertTrue(try file.tryLockExclusive())
        XCTAssertFalse(try other.tryLockExclusive())
        XCTAssertEqual(sw_flock_unlock(file.fd), 0)
        XCTAssertTrue(try other.tryLockExclusive())
    }

    func testSyscallErrorsCarryOperationPathAndErrno() {
        XCTAssertThrowsError(try OpenFile.open("/nonexistent/dir/file", writable: false)) { error in
            let error = error as! WALError
            XCTAssertEqual(error.kind, .notFound)
            XCTAssertEqual(error.operation, "open")
            XCTAssertEqual(error.errno, ENOENT)
            XCTAssertTrue(error.description.contains("/nonexistent/dir/file"))
        }
    }
}
