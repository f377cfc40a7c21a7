#if canImport(Glibc)
import Glibc
#endif
import Foundation
import XCTest
import SignalWALWorkload
@testable import SignalWAL

/// Tests that need another process: crashes, a second owner, another user.
final class ProcessTests: XCTestCase {
    /// The kill -9 loop: each policy with each backend, reopened with the other backend (both
    /// write the same format), a checkpointing consumer in half the cycles. `make crash-test
    /// COUNT=n` runs it alone; `make test` runs 100 cycles.
    func testKilledWriterLosesNothingAcknowledged() throws {
        let iterations = Int(ProcessInfo.processInfo.environment["SIGNALWAL_CRASH_ITERATIONS"] ?? "") ?? (reducedIterations ? 12 : 100)
        let directory = makeTemporaryDirectory(self)
        try FileSystem.createDirectories(directory)
        var checks: [CrashCheck] = []
        for iteration in 0..<iterations {
            let seed = UInt64.random(in: 1 ... .max)
            let (policy, backend) = crashMatrix[iteration % crashMatrix.count]
            let reopenBackend: IOBackend = backend == .uring ? .mmap : .uring
            var options = ["backend=\(backend.rawValue)", "policy=\(policy.argument)"]
            if iteration / crashMatrix.count % 2 == 1 { options.append("checkpoint-ms=20") }
            // Every other round of the matrix appends batches of random shapes: 1-24 records,
            // payloads up to the largest record, so batches cross segments and the ring's end.
            let batchMode = iteration / (2 * crashMatrix.count) % 2 == 1 ? nil : BatchMode(maxRecords: 24, maxLength: 256 << 10)
            options += batchMode?.options ?? []
            let context = "kill \(iteration) (\(options.joined(separator: " ")))"
            let child = try AppendingChild(directory: directory, seed: seed, threads: 4, options: options)
            XCTAssertNotNil(child.waitForLine(startingWith: batchMode == nil ? "ack" : "batch", timeout: .seconds(10)),
                            "\(context): the child acknowledged nothing")
            usleep(UInt32.random(in: 10_000...300_000))
            let stoppedAt = Workload.monotonicNanoseconds()
            child.kill()
            XCTAssertEqual(child.process.terminationReason, .uncaughtSignal, context)
            checks.append(try CrashVerifier.verify(directory: directory, seed: seed, child: child, policy: policy, backend: backend,
                                                   reopenBackend: reopenBackend, powerCut: false, stoppedAt: stoppedAt,
                                                   batchMode: batchMode, context: context))
        }
        print(crashSummary("crash test (SIGKILL)", checks))
    }

    func testSecondProcessIsRefusedWithTheHoldersPID() throws {
        let directory = makeTemporaryDirectory(self)
        let wal = try WAL.open(directory: directory, configuration: testConfiguration())
        defer { try? wal.close() }
        let result = try runCommand(demoExecutable, ["open-as", "0", directory])
        XCTAssertEqual(result.status, 3, result.output)
        XCTAssertTrue(result.output.contains("kind=locked(pid: Optional(\(getpid())))"), result.output)
        XCTAssertTrue(result.output.contains("\(directory)/.lock") && result.output.contains("PID \(getpid())"), result.output)
    }

    func testPermissionDeniedNamesOwnerModeAndUID() throws {
        guard getuid() == 0 else { throw XCTSkip("needs root to switch to an unprivileged uid; running as uid \(getuid())") }
        let base = makeTemporaryDirectory(self)
        // Enterable by the unprivileged uid (new WAL directories are 0700 by default).
        try FileSystem.createDirectories(base, mode: 0o755)
        // A parent only root may enter: the WAL directory cannot be created.
        let closed = base + "/closed"
        try FileManager.default.createDirectory(atPath: closed, withIntermediateDirectories: false,
                                                attributes: [.posixPermissions: 0o700])
        var result = try runCommand(demoExecutable, ["open-as", "65534", closed + "/wal"])
        XCTAssertEqual(result.status, 3, result.output)
        XCTAssertTrue(result.output.contains("kind=permissionDenied"), result.output)
        XCTAssertTrue(result.output.contains("\(closed) is owned by uid 0") && result.output.contains("mode 700")
                      && result.output.contains("runs as uid 65534"), result.output)
        // An existing WAL directory the user cannot write: the lock file cannot be created.
        let readOnly = base + "/readonly"
        try FileManager.default.createDirectory(atPath: readOnly, withIntermediateDirectories: false,
                                                attributes: [.posixPermissions: 0o755])
        result = try runCommand(demoExecutable, ["open-as", "65534", readOnly])
        XCTAssertEqual(result.status, 3, result.output)
        XCTAssertTrue(result.output.contains("kind=permissionDenied") && result.output.contains("mode 755"), result.output)
        XCTAssertTrue(result.output.contains(readOnly), result.output)
    }
}

/// Out of space on real, size-limited filesystems: a tmpfs and a loop-mounted ext4 image.
final class FullDiskTests: XCTestCase {
    var mountPoints: [String] = []
    var images: [String] = []

    override func tearDown() {
        for mountPoint in mountPoints { _ = try? runCommand("/bin/umount", ["-l", mountPoint]) }
        for image in images { try? FileManager.default.removeItem(atPath: image) }
    }

    func testFullTmpfsGivesRetryableErrorNoSIGBUSAndAppendsResumeAfterCheckpoint() throws {
        // tmpfs refuses O_DIRECT, so the uring backend runs its buffered fallback here.
        for backend in IOBackend.allCases {
            let directory = makeTemporaryDirectory(self)
            try FileSystem.createDirectories(directory)
            try mount(["-t", "tmpfs", "-o", "size=8m", "tmpfs", directory], what: "a tmpfs")
            try fillUpAndRecover(directory, backend: backend)
        }
    }

    func testFullExt4ImageGivesRetryableErrorNoSIGBUSAndAppendsResumeAfterCheckpoint() throws {
        for backend in IOBackend.allCases {
            let directory = makeTemporaryDirectory(self)
            try FileSystem.createDirectories(directory)
            let image = directory + ".img"
            images.append(image)
            XCTAssertTrue(FileManager.default.createFile(atPath: image, contents: nil))
            XCTAssertEqual(truncate(image, 12 << 20), 0)
            // -m 0: no blocks reserved for root, so "full" means full for this root-run test too.
            let mkfs = try runCommand("/sbin/mkfs.ext4", ["-q", "-F", "-m", "0", image])
            guard mkfs.status == 0 else { throw XCTSkip("mkfs.ext4 failed: \(mkfs.output)") }
            try mount(["-o", "loop", image, directory], what: "an ext4 image through a loop device")
            try fillUpAndRecover(directory, backend: backend)
        }
    }

    private func mount(_ arguments: [String], what: String) throws {
        let result = try runCommand("/bin/mount", arguments)
        guard result.status == 0 else {
            print("skipping: the kernel refused to mount \(what) here (status \(result.status)): \(result.output)")
            throw XCTSkip("mount refused: \(result.output)")
        }
        mountPoints.append(arguments.last!)
    }

    private func fillUpAndRecover(_ directory: String, backend: IOBackend) throws {
        let walDirectory = directory + "/wal"
        var wal = try WAL.open(directory: walDirectory, configuration: testConfiguration(spares: 2, backend: backend))
        let payload = [UInt8](repeating: 0xAB, count: 100_000)
        var appended: [LSN] = []
        var failure: WALError?
        for _ in 0..<400 {
            do { appended.append(try wal.append(payload)) } catch { failure = error as? WALError; break }
        }
        let failed = try XCTUnwrap(failure, "\(backend): a small filesystem must fill up")
        XCTAssertEqual(failed.kind, .outOfSpace, failed.description)
        XCTAssertTrue(failed.isRetryable)
        XCTAssertTrue(failed.description.contains(walDirectory), failed.description)
        XCTAssertGreaterThan(appended.count, 40)
        // Everything acknowledged is there.
        XCTAssertEqual(readAll(wal, from: 1).map(\.lsn), appended, "\(backend)")

        // Take the last bytes too: zero bytes free.
        let filler = directory + "/filler"
        let fd = open(filler, O_CREAT | O_WRONLY, 0o644)
        // Large writes first, then smaller ones for the last partial blocks.
        for size in [65536, 4096, 512, 1] {
            let block = [UInt8](repeating: 1, count: size)
            while write(fd, block, block.count) > 0 {}
        }
        fsync(fd)
        close(fd)
        XCTAssertEqual(FileSystem.freeBytes(directory), 0, "\(backend)")

        // Close and reopen on the full disk: recovery needs no space.
        try wal.close()
        wal = try WAL.open(directory: walDirectory, configuration: testConfiguration(spares: 2, backend: backend))
        XCTAssertEqual(readAll(wal, from: 1).map(\.lsn), appended, "\(backend)")
        // Checkpointing works with zero bytes free, and frees segments for reuse.
        try wal.checkpoint(upTo: appended.last!)
        var resumed = 0
        let deadline = Date().addingTimeInterval(10)
        while resumed < 30 && Date() < deadline {
            do { try wal.append(payload); resumed += 1 } catch let error as WALError where error.kind == .outOfSpace {
                usleep(10_000)
            }
        }
        XCTAssertEqual(resumed, 30, "\(backend): appends resume into recycled segments")
        try wal.close()
    }
}

/// Opening, appending, reading, checkpointing and closing leak neither descriptors nor mappings.
final class LeakTests: XCTestCase {
    func testThousandOpenCloseCyclesLeakNothing() throws {
        let directory = makeTemporaryDirectory(self)
        let cycles = reducedIterations ? 100 : 1000
        // One warm-up cycle so lazily created process-wide state is not counted.
        try cycle(directory, 0)
        let descriptors = openFileDescriptorCount()
        let mappings = mappingCount(containing: directory)
        for index in 1...cycles { try cycle(directory, index) }
        XCTAssertEqual(openFileDescriptorCount(), descriptors, "file descriptors leaked over \(cycles) cycles")
        XCTAssertEqual(mappingCount(containing: directory), mappings, "mappings leaked over \(cycles) cycles")
        XCTAssertEqual(mappings, 0)
    }

    private func cycle(_ directory: String, _ index: Int) throws {
        let wal = try WAL.open(directory: directory, configuration: testConfiguration())
        let range = try wal.append(contentsOf: (0..<20).map { testPayload(index * 20 + $0, length: 3000) })
        var count = 0
        for _ in try wal.records(from: range.lowerBound) { count += 1 }
        XCTAssertEqual(count, 20)
        try wal.checkpoint(upTo: range.upperBound)
        try wal.close()
    }
}
