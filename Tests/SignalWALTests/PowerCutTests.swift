#if canImport(Glibc)
import Glibc
#endif
import Foundation
import XCTest
import SignalWALWorkload
@testable import SignalWAL

/// Simulated power cuts: the appending child runs on a loop-mounted ext4 image, and the test
/// shuts the filesystem down with `EXT4_IOC_SHUTDOWN` and `EXT4_GOING_FLAGS_NOLOGFLUSH`, which
/// drops everything not yet made durable (unsynced writes, unsynced mmap stores, the journal's
/// tail) as a power loss would. Then unmount, remount, recover, verify. Unlike a SIGKILL, this
/// catches a missing or misplaced flush.
final class PowerCutTests: XCTestCase {
    /// `_IOR('X', 125, __u32)` from linux/ext4.h.
    static let shutdownRequest: UInt = 0x8004_587D
    /// Drop the journal's unwritten tail too: the harshest of the three shutdown modes.
    static let noLogFlush: UInt32 = 2

    /// Where a cut can be aimed: the child pauses before the chosen call (`OP:SUFFIX`), the
    /// test cuts. Segment preparation, segment reuse, checkpoint writes, directory syncs.
    static let cutPoints: [(step: String, pause: String)] = [
        ("prepare: allocate", "fallocate:.wal.tmp"),
        ("prepare: zero-fill", "uringSubmit:.wal.tmp"),
        ("prepare: sync", "fdatasync:.wal.tmp"),
        ("prepare: rename", "rename:.wal.tmp"),
        ("reuse: header (mmap) / flush write (uring)", "pwrite:.wal"),
        ("reuse: rename", "rename:.wal"),
        ("checkpoint: write", "pwrite:.checkpoint.next"),
        ("checkpoint: sync", "fsync:.checkpoint.next"),
        ("checkpoint: rename", "rename:.checkpoint.next"),
        ("directory sync", "fsync:/wal"),
    ]

    private var image = ""
    private var mountPoint = ""
    private var mounted = false

    override func tearDown() {
        if mounted { _ = try? runCommand("/bin/umount", ["-l", mountPoint]) }
        if !image.isEmpty { try? FileManager.default.removeItem(atPath: image) }
    }

    func testPowerCutLosesNothingAcknowledged() throws {
        let iterations = Int(ProcessInfo.processInfo.environment["SIGNALWAL_CUT_ITERATIONS"] ?? "") ?? (reducedIterations ? 12 : 60)
        try makeFilesystem()
        let directory = mountPoint + "/wal"
        var checks: [CrashCheck] = []
        var aimed: [String: Int] = [:]
        var missedAims = 0
        for iteration in 0..<iterations {
            let seed = UInt64.random(in: 1 ... .max)
            let (policy, backend) = crashMatrix[iteration % crashMatrix.count]
            let reopenBackend: IOBackend = iteration / crashMatrix.count % 2 == 0 ? backend : (backend == .uring ? .mmap : .uring)
            var options = ["backend=\(backend.rawValue)", "policy=\(policy.argument)"]
            // Every third cut is aimed at a step of segment preparation, reuse or checkpointing,
            // with a consumer checkpointing. The others run without one, so every acknowledged
            // record stays above the checkpoint and is checked. (Segments are reused in both:
            // each verification consumes everything, and the next child recycles those files.)
            var aim: (step: String, pause: String)?
            if iteration % 3 == 2 {
                aim = Self.cutPoints[(iteration / 3) % Self.cutPoints.count]
                options += ["checkpoint-ms=20", "pause=\(aim!.pause):\(Int.random(in: 1...2))"]
            }
            // Half the cuts (alternating rounds of the matrix) hit a child appending batches of
            // random shapes, which cross segments and the staging ring's end.
            let batchMode = iteration / (2 * crashMatrix.count) % 2 == 1 ? nil : BatchMode(maxRecords: 24, maxLength: 256 << 10)
            options += batchMode?.options ?? []
            let context = "cut \(iteration) (\(options.joined(separator: " ")))"
            let child = try AppendingChild(directory: directory, seed: seed, threads: 4, options: options)
            XCTAssertNotNil(child.waitForLine(startingWith: batchMode == nil ? "ack" : "batch", timeout: .seconds(10)),
                            "\(context): the child acknowledged nothing")
            if let aim {
                if child.waitForLine(startingWith: "pause", timeout: .seconds(5)) != nil {
                    aimed[aim.step, default: 0] += 1
                } else {
                    missedAims += 1
                }
            } else {
                usleep(UInt32.random(in: 20_000...500_000))
            }
            let stoppedAt = Workload.monotonicNanoseconds()
            try cutPower()
            child.kill()
            try remount()
            checks.append(try CrashVerifier.verify(directory: directory, seed: seed, child: child, policy: policy, backend: backend,
                                                   reopenBackend: reopenBackend, powerCut: true, stoppedAt: stoppedAt,
                                                   batchMode: batchMode, context: context))
        }
        print(crashSummary("power cuts", checks))
        print("  aimed cuts: \(aimed.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")); \(missedAims) aims not reached")
    }

    /// The review's second reproduction (D1), both backends: 1 MiB segments, 1,019 records of
    /// 1,000 bytes (one slot left), then a batch of three, then the power is cut at once. On
    /// e4db963 the mapped backend lost LSN 1020 in 3 runs of 3.
    func testPowerCutRightAfterABatchAcrossSegmentsLosesNothing() throws {
        try makeFilesystem()
        for (run, backend) in [IOBackend.mmap, .uring, .mmap, .uring].enumerated() {
            let directory = mountPoint + "/wal-\(run)"
            let payload = [UInt8](repeating: UInt8(run + 1), count: 1000)
            var wal: WAL? = try WAL.open(directory: directory, configuration: testConfiguration(backend: backend))
            for _ in 0..<1019 { try wal!.append(payload) }
            XCTAssertEqual(try wal!.append(contentsOf: [payload, payload, payload]), 1020...1022)
            try cutPower()
            try? wal!.close()
            wal = nil
            try remount()
            let reopened = try WAL.open(directory: directory, configuration: testConfiguration(backend: backend))
            let records = readAll(reopened)
            XCTAssertEqual(records.map(\.lsn), Array(1...1022), "\(backend) run \(run): \(reopened.recoveryReport.damage)")
            XCTAssertTrue(records.allSatisfy { $0.payload == payload }, "\(backend) run \(run)")
            try reopened.close()
        }
    }

    /// A 128 MiB ext4 image mounted through a loop device, or a skip that says why not.
    private func makeFilesystem() throws {
        let base = makeTemporaryDirectory(self)
        try FileSystem.createDirectories(base)
        image = base + ".img"
        mountPoint = base
        guard FileManager.default.createFile(atPath: image, contents: nil), truncate(image, 128 << 20) == 0 else {
            XCTFail("cannot create \(image)"); return
        }
        let mkfs = try runCommand("/sbin/mkfs.ext4", ["-q", "-F", image])
        guard mkfs.status == 0 else {
            print("skipping power cuts: mkfs.ext4 failed (\(mkfs.status)): \(mkfs.output); install e2fsprogs")
            throw XCTSkip("mkfs.ext4 failed: \(mkfs.output)")
        }
        let mount = try runCommand("/bin/mount", ["-o", "loop", image, mountPoint])
        guard mount.status == 0 else {
            print("skipping power cuts: the kernel refused a loop mount (status \(mount.status)): \(mount.output)")
            throw XCTSkip("loop mount refused: \(mount.output)")
        }
        mounted = true
    }

    /// The power cut: everything the filesystem has not made durable is gone.
    private func cutPower() throws {
        let fd = open(mountPoint, O_RDONLY | O_DIRECTORY)
        XCTAssertGreaterThanOrEqual(fd, 0, "open \(mountPoint): \(String(cString: strerror(errno)))")
        defer { close(fd) }
        var flags = Self.noLogFlush
        let result = withUnsafeMutablePointer(to: &flags) { ioctl(fd, Self.shutdownRequest, $0) }
        guard result == 0 else {
            let reason = String(cString: strerror(errno))
            print("skipping power cuts: EXT4_IOC_SHUTDOWN refused: \(reason)")
            throw XCTSkip("EXT4_IOC_SHUTDOWN refused: \(reason)")
        }
    }

    private func remount() throws {
        let umount = try runCommand("/bin/umount", [mountPoint])
        XCTAssertEqual(umount.status, 0, "umount: \(umount.output)")
        mounted = umount.status != 0
        let mount = try runCommand("/bin/mount", ["-o", "loop", image, mountPoint])
        XCTAssertEqual(mount.status, 0, "mount: \(mount.output)")
        mounted = mount.status == 0
    }
}
