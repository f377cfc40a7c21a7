#if canImport(Glibc)
import Glibc
#endif
import XCTest
@testable import SignalWAL

final class ErrorTests: XCTestCase {
    override func tearDown() {
        Syscall.setFaultHook(nil)
    }

    func testRecordOverTheLimitFailsNamingTheLimit() throws {
        let directory = makeTemporaryDirectory(self)
        let wal = try WAL.open(directory: directory, configuration: testConfiguration())
        defer { try? wal.close() }
        let limit = wal.configuration.effectiveMaxRecordSize
        XCTAssertEqual(limit, (1 << 20) / 4)
        XCTAssertNoThrow(try wal.append([UInt8](repeating: 0, count: limit)))
        XCTAssertThrowsError(try wal.append([UInt8](repeating: 0, count: limit + 1))) { error in
            let error = error as! WALError
            XCTAssertEqual(error.kind, .recordTooLarge(size: limit + 1, limit: limit))
            XCTAssertTrue(error.description.contains("\(limit)"), error.description)
        }
        // A batch with one oversized record writes nothing.
        let before = wal.nextLSN
        XCTAssertThrowsError(try wal.append(contentsOf: [[1], [UInt8](repeating: 0, count: limit + 1)]))
        XCTAssertEqual(wal.nextLSN, before)
    }

    func testClosedWALThrowsOnUse() throws {
        let directory = makeTemporaryDirectory(self)
        let wal = try WAL.open(directory: directory, configuration: testConfiguration())
        try wal.append([1])
        try wal.close()
        try wal.close() // harmless
        XCTAssertThrowsError(try wal.append([2])) { XCTAssertEqual(($0 as? WALError)?.kind, .closed) }
        XCTAssertThrowsError(try wal.checkpoint(upTo: 1)) { XCTAssertEqual(($0 as? WALError)?.kind, .closed) }
    }

    func testConfigurationOutOfRangeIsRefused() {
        let directory = makeTemporaryDirectory(self)
        for size in [1 << 19, (1 << 30) + 4096, (1 << 20) + 1] {
            XCTAssertThrowsError(try WAL.open(directory: directory, configuration: testConfiguration(segmentSize: size))) {
                XCTAssertEqual(($0 as? WALError)?.kind, .invalidArgument)
            }
        }
        XCTAssertThrowsError(try WAL.open(directory: directory, configuration: testConfiguration(maxRecordSize: 1 << 20)))
    }

    func testAFileWhereTheDirectoryShouldBeIsNotADirectory() throws {
        let directory = makeTemporaryDirectory(self)
        try FileSystem.createDirectories(directory)
        let file = directory + "/plain-file"
        XCTAssertTrue(FileManager.default.createFile(atPath: file, contents: Data([1])))
        for path in [file, file + "/wal"] {
            XCTAssertThrowsError(try WAL.open(directory: path, configuration: testConfiguration())) { error in
                let error = error as! WALError
                XCTAssertEqual(error.kind, .notADirectory, "\(path): \(error)")
                XCTAssertTrue(error.description.contains(file), error.description)
            }
        }
    }

    func testOpenCreatesMissingParents() throws {
        let directory = makeTemporaryDirectory(self) + "/a/b/c"
        let wal = try WAL.open(directory: directory, configuration: testConfiguration())
        try wal.append([1])
        try wal.close()
        XCTAssertTrue(FileSystem.kind(of: directory).isDirectory)
    }

    func testSecondOpenInTheSameProcessIsRefusedWithThePID() throws {
        let directory = makeTemporaryDirectory(self)
        let wal = try WAL.open(directory: directory, configuration: testConfiguration())
        XCTAssertThrowsError(try WAL.open(directory: directory, configuration: testConfiguration())) { error in
            let error = error as! WALError
            XCTAssertEqual(error.kind, .locked(pid: getpid()))
            XCTAssertTrue(error.description.contains(".lock") && error.description.contains("PID \(getpid())"), error.description)
        }
        try wal.close()
        let again = try WAL.open(directory: directory, configuration: testConfiguration())
        try again.close()
    }

    func testEINTROnEveryCallIsRetried() throws {
        let directory = makeTemporaryDirectory(self)
        let interrupted = Counter()
        Syscall.setFaultHook { _, _ in
            // Interrupt every other call: each must be retried transparently.
            interrupted.increment() % 2 == 0 ? .fail(errno: EINTR) : nil
        }
        let wal = try WAL.open(directory: directory, configuration: testConfiguration())
        for index in 0..<50 { try wal.append(testPayload(index, length: 100)) }
        try wal.checkpoint(upTo: 10)
        try wal.close()
        Syscall.setFaultHook(nil)
        XCTAssertGreaterThan(interrupted.value, 50)
        let reopened = try WAL.open(directory: directory, configuration: testConfiguration())
        XCTAssertEqual(readAll(reopened, from: 11).count, 40)
        try reopened.close()
    }

    func testFailedFlushFailsWaitersAndLaterAppendsUntilReopen() throws {
        for backend in IOBackend.allCases { try failedFlush(backend: backend, failing: .fdatasync) }
        // The io_uring backend writes before it syncs: a failed write is a failed flush too.
        try failedFlush(backend: .uring, failing: .pwrite)
    }

    private func failedFlush(backend: IOBackend, failing: SyscallOperation) throws {
        let directory = makeTemporaryDirectory(self)
        let wal = try WAL.open(directory: directory, configuration: testConfiguration(backend: backend))
        let good = try wal.append([1, 1, 1])
        Syscall.setFaultHook { operation, path in
            operation == failing && path.hasSuffix(".wal") ? .fail(errno: EIO) : nil
        }
        XCTAssertThrowsError(try wal.append([2, 2, 2])) { error in
            let error = error as! WALError
            XCTAssertEqual(error.kind, .flushFailed)
            XCTAssertEqual(error.errno, EIO)
        }
        XCTAssertEqual(wal.durableLSN, good, "the durable LSN did not move past the failed flush")
        Syscall.setFaultHook(nil)
        // Even with the disk healthy again, the WAL does not pretend: it refuses until reopened.
        XCTAssertThrowsError(try wal.append([3])) { XCTAssertEqual(($0 as? WALError)?.kind, .flushFailed) }
        XCTAssertThrowsError(try wal.close())
        let reopened = try WAL.open(directory: directory, configuration: testConfiguration())
        XCTAssertEqual(readAll(reopened).first?.payload, [1, 1, 1], "\(backend), \(failing)")
        try reopened.append([4])
        try reopened.close()
    }

    func testIOURingUnavailableFallsBackToPlainSystemCalls() throws {
        let directory = makeTemporaryDirectory(self)
        Syscall.setFaultHook { operation, _ in operation == .uringSetup ? .fail(errno: EPERM) : nil }
        let wal = try WAL.open(directory: directory, configuration: testConfiguration())
        let payload = [UInt8](repeating: 3, count: 200_000)
        for _ in 0..<12 { try wal.append(payload) } // needs several prepared segments
        try wal.close()
        Syscall.setFaultHook(nil)
        let reopened = try WAL.open(directory: directory, configuration: testConfiguration())
        XCTAssertEqual(readAll(reopened).count, 12)
        try reopened.close()
    }

    func testOutOfSpaceWhilePreparingASegmentIsTypedAndRetryable() throws {
        let directory = makeTemporaryDirectory(self)
        let wal = try WAL.open(directory: directory, configuration: testConfiguration(spares: 1))
        defer { try? wal.close() }
        let payload = [UInt8](repeating: 5, count: 200_000)
        try wal.append(payload)
        Syscall.setFaultHook { operation, _ in operation == .fallocate ? .fail(errno: ENOSPC) : nil }
        var failure: WALError?
        for _ in 0..<20 {
            do { try wal.append(payload) } catch { failure = error as? WALError; break }
        }
        XCTAssertEqual(failure?.kind, .outOfSpace)
        XCTAssertEqual(failure?.isRetryable, true)
        Syscall.setFaultHook(nil)
        XCTAssertNoThrow(try wal.append(payload), "appends resume once space is back")
    }
}

final class Counter: @unchecked Sendable {
    // @unchecked: every access holds the lock.
    private var count = 0
    private let lock = NSLock()
    func increment() -> Int { lock.lock(); defer { lock.unlock() }; count += 1; return count }
    var value: Int { lock.lock(); defer { lock.unlock() }; return count }
}
