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

    /// A second open in this process is not "another process" and not worth retrying.
    func testSecondOpenInTheSameProcessIsRefusedAsAlreadyOpen() throws {
        let directory = makeTemporaryDirectory(self)
        let wal = try WAL.open(directory: directory, configuration: testConfiguration())
        XCTAssertThrowsError(try WAL.open(directory: directory, configuration: testConfiguration())) { error in
            let error = error as! WALError
            XCTAssertEqual(error.kind, .alreadyOpen)
            XCTAssertFalse(error.isRetryable)
            XCTAssertTrue(error.description.contains(directory) && error.description.contains("already has this WAL open"), error.description)
        }
        try wal.close()
        let again = try WAL.open(directory: directory, configuration: testConfiguration())
        try again.close()
    }

    func testEINTROnEveryCallIsRetried() throws {
        for backend in IOBackend.allCases {
            let directory = makeTemporaryDirectory(self)
            // Every call's first attempt is interrupted (per thread, so concurrent threads do not
            // steal each other's turn); each must be retried transparently.
            let interrupted = PerThreadToggle()
            Syscall.setFaultHook { _, _ in interrupted.flip() ? .fail(errno: EINTR) : nil }
            let wal = try WAL.open(directory: directory, configuration: testConfiguration(backend: backend))
            let payload = [UInt8](repeating: 7, count: 100_000)
            for index in 0..<50 { try wal.append(index % 10 == 0 ? payload : testPayload(index, length: 100)) }
            try wal.checkpoint(upTo: 10)
            try wal.close()
            Syscall.setFaultHook(nil)
            XCTAssertGreaterThan(interrupted.flips, 100, "\(backend)")
            let reopened = try WAL.open(directory: directory, configuration: testConfiguration(backend: backend))
            XCTAssertEqual(readAll(reopened, from: 11).count, 40, "\(backend)")
            try reopened.close()
        }
    }

    func testShortReadsAndWritesAreContinued() throws {
        for backend in IOBackend.allCases {
            let directory = makeTemporaryDirectory(self)
            // Every read and write moves at most one to four 512-byte blocks: block multiples,
            // as the kernel returns them for direct I/O.
            Syscall.setFaultHook { operation, _ in
                operation == .pwrite || operation == .pread ? .short(bytes: 512 * Int.random(in: 1...4)) : nil
            }
            let wal = try WAL.open(directory: directory, configuration: testConfiguration(backend: backend))
            var expected: [[UInt8]] = []
            for index in 0..<400 {
                let payload = testPayload(index, length: index % 7 == 0 ? 40_000 : 1 + index * 13 % 3000)
                try wal.append(payload)
                expected.append(payload)
            }
            try wal.checkpoint(upTo: 100)
            try wal.close()
            let reopened = try WAL.open(directory: directory, configuration: testConfiguration(backend: backend))
            Syscall.setFaultHook(nil)
            XCTAssertEqual(reopened.checkpointLSN, 100)
            XCTAssertEqual(readAll(reopened, from: 101).map(\.payload), Array(expected[100...]), "\(backend)")
            XCTAssertTrue(reopened.recoveryReport.isClean, "\(reopened.recoveryReport)")
            try reopened.close()
        }
    }

    func testIOURingSubmissionFailingWithENOMEMFallsBackToPlainWrites() throws {
        let directory = makeTemporaryDirectory(self)
        let failures = Counter()
        // The probe at start-up succeeds; every later submission fails as under memory pressure.
        Syscall.setFaultHook { operation, _ in
            operation == .uringSubmit && failures.increment() > 1 ? .fail(errno: ENOMEM) : nil
        }
        let wal = try WAL.open(directory: directory, configuration: testConfiguration(spares: 1))
        let payload = [UInt8](repeating: 9, count: 200_000)
        for _ in 0..<20 { try wal.append(payload) } // four segments' worth: several preparations
        try wal.close()
        Syscall.setFaultHook(nil)
        XCTAssertGreaterThan(failures.value, 1, "the allocator submitted through io_uring and was refused")
        let reopened = try WAL.open(directory: directory, configuration: testConfiguration())
        XCTAssertEqual(readAll(reopened).map(\.payload), Array(repeating: payload, count: 20))
        XCTAssertEqual(reopened.recoveryReport.damage, [])
        XCTAssertEqual(reopened.recoveryReport.quarantinedSegments, [])
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

    func testFailedCheckpointSyncKeepsTheOldCheckpoint() throws {
        let directory = makeTemporaryDirectory(self)
        let wal = try WAL.open(directory: directory, configuration: testConfiguration())
        for index in 0..<20 { try wal.append(testPayload(index, length: 500)) }
        try wal.checkpoint(upTo: 5)
        Syscall.setFaultHook { operation, path in operation == .fsync && path.hasSuffix(".checkpoint.next") ? .fail(errno: EIO) : nil }
        XCTAssertThrowsError(try wal.checkpoint(upTo: 15)) { XCTAssertEqual(($0 as? WALError)?.errno, EIO) }
        XCTAssertEqual(wal.checkpointLSN, 5, "a checkpoint that is not durable is not taken")
        Syscall.setFaultHook(nil)
        // Appends are unaffected, and the next checkpoint writes the whole file again.
        try wal.append([1])
        try wal.checkpoint(upTo: 12)
        try wal.close()
        let reopened = try WAL.open(directory: directory, configuration: testConfiguration())
        XCTAssertEqual(reopened.checkpointLSN, 12)
        XCTAssertEqual(readAll(reopened, from: 13).count, 9)
        try reopened.close()
    }

    func testFailedSyncWhilePreparingASegmentIsRetriedWithAFreshFile() throws {
        let directory = makeTemporaryDirectory(self)
        let wal = try WAL.open(directory: directory, configuration: testConfiguration(spares: 1))
        let payload = [UInt8](repeating: 4, count: 200_000)
        try wal.append(payload)
        let failures = Counter()
        // The first two syncs of a new segment fail: that file is abandoned (its pages may be
        // gone), and a later preparation starts over.
        Syscall.setFaultHook { operation, path in
            operation == .fdatasync && path.hasSuffix(".wal.tmp") && failures.increment() <= 2 ? .fail(errno: EIO) : nil
        }
        var appended = 1
        var errors: [WALError] = []
        let deadline = Date().addingTimeInterval(10)
        while appended < 15 && Date() < deadline {
            do { try wal.append(payload); appended += 1 } catch let error as WALError {
                errors.append(error)
                usleep(10_000)
            }
        }
        Syscall.setFaultHook(nil)
        XCTAssertEqual(appended, 15, "appends go on once a preparation succeeds: \(errors)")
        XCTAssertGreaterThanOrEqual(failures.value, 2)
        for error in errors { XCTAssertTrue(error.description.contains(".wal.tmp"), error.description) }
        try wal.close()
        let reopened = try WAL.open(directory: directory, configuration: testConfiguration())
        XCTAssertEqual(readAll(reopened).count, 15)
        XCTAssertEqual(reopened.recoveryReport.damage, [])
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
        for code in [ENOSPC, EDQUOT] { try outOfSpaceWhilePreparing(errno: code) }
    }

    private func outOfSpaceWhilePreparing(errno code: Int32) throws {
        let directory = makeTemporaryDirectory(self)
        let wal = try WAL.open(directory: directory, configuration: testConfiguration(spares: 1))
        defer { try? wal.close() }
        let payload = [UInt8](repeating: 5, count: 200_000)
        try wal.append(payload)
        Syscall.setFaultHook { operation, _ in operation == .fallocate ? .fail(errno: code) : nil }
        var failure: WALError?
        for _ in 0..<20 {
            do { try wal.append(payload) } catch { failure = error as? WALError; break }
        }
        XCTAssertEqual(failure?.kind, .outOfSpace)
        XCTAssertEqual(failure?.errno, code)
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

/// Answers true and false alternately, separately for each thread: "interrupt this thread's next
/// call, then let its retry through".
final class PerThreadToggle: @unchecked Sendable {
    // @unchecked: every access holds the lock.
    private var next: [pthread_t: Bool] = [:]
    private var count = 0
    private let lock = NSLock()
    func flip() -> Bool {
        lock.lock(); defer { lock.unlock() }
        let me = pthread_self()
        let value = next[me] ?? true
        next[me] = !value
        if value { count += 1 }
        return value
    }
    var flips: Int { lock.lock(); defer { lock.unlock() }; return count }
}
