#if canImport(Glibc)
import Glibc
#endif
import Foundation
import XCTest
import SignalWALWorkload
@testable import SignalWAL

/// Runs the built `signalwal` binary as an operator would, against WALs made by the engine.
final class CommandLineToolTests: XCTestCase {
    struct Run {
        var status: Int32
        var stdout: [UInt8]
        var stderr: String
        var text: String { String(decoding: stdout, as: UTF8.self) }
        var json: [String: Any] { (try? JSONSerialization.jsonObject(with: Data(stdout))) as? [String: Any] ?? [:] }
    }

    /// Runs `signalwal ARGS` (or `executable ARGS`) with `input` on standard input.
    func tool(_ arguments: [String], input: [UInt8] = [], executable: String? = nil) throws -> Run {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable ?? builtExecutable("signalwal"))
        process.arguments = arguments
        let output = Pipe(), errors = Pipe(), stdin = Pipe()
        process.standardOutput = output
        process.standardError = errors
        process.standardInput = stdin
        try process.run()
        let writer = Thread { try? stdin.fileHandleForWriting.write(contentsOf: Data(input)); try? stdin.fileHandleForWriting.close() }
        writer.start()
        let errorData = Data.Sendable(errors.fileHandleForReading)
        let out = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return Run(status: process.terminationStatus, stdout: [UInt8](out), stderr: errorData.text())
    }

    /// A closed WAL: 3,000 records of 1-1,500 bytes over several 1 MiB segments, checkpointed
    /// at 1,000.
    func makeWAL() throws -> (directory: String, payloads: [[UInt8]]) {
        let directory = makeTemporaryDirectory(self)
        let wal = try WAL.open(directory: directory, configuration: testConfiguration())
        let payloads = (0..<3000).map { testPayload($0, length: 1 + $0 * 7 % 1500) }
        for start in stride(from: 0, to: payloads.count, by: 100) { try wal.append(contentsOf: Array(payloads[start..<start + 100])) }
        try wal.checkpoint(upTo: 1000)
        try wal.close()
        return (directory, payloads)
    }

    func testInspectJSONDescribesSegmentsCheckpointPendingAndTheLockHolder() throws {
        let (directory, payloads) = try makeWAL()
        let wal = try WAL.open(directory: directory, configuration: testConfiguration())
        defer { try? wal.close() }
        let run = try tool(["inspect", directory, "--json"])
        XCTAssertEqual(run.status, 0, run.stderr)
        let json = run.json
        XCTAssertEqual(json["formatVersion"] as? Int, Int(Format.version))
        XCTAssertEqual(json["checkpointLSN"] as? Int, 1000)
        XCTAssertEqual(json["pendingRecords"] as? Int, 2000)
        XCTAssertEqual(json["pendingBytes"] as? Int, payloads[1000...].reduce(0) { $0 + $1.count })
        XCTAssertEqual(json["lockHolderPID"] as? Int, Int(getpid()), "read from /proc/locks without taking the lock")
        let segments = try XCTUnwrap(json["segments"] as? [[String: Any]])
        XCTAssertEqual(segments.count, segmentFiles(directory).count)
        let states = segments.compactMap { $0["state"] as? String }
        XCTAssertEqual(states.filter { $0 == "active" }.count, 1, "\(states)")
        XCTAssertEqual(states.filter { $0 == "sealed" }.count, withRecordsCount(segments) - 1, "\(states)")
        XCTAssertTrue(states.contains("spare"), "\(states)")
        let withRecords = segments.filter { ($0["records"] as? Int ?? 0) > 0 }
        XCTAssertEqual(withRecords.first?["firstLSN"] as? Int, 1)
        XCTAssertEqual(withRecords.last?["lastLSN"] as? Int, 3000)
        XCTAssertGreaterThan(json["walBytes"] as? Int ?? 0, 3 << 20)
        let percent = try XCTUnwrap(json["filesystemUsedPercent"] as? Double)
        XCTAssertTrue((0...100).contains(percent))
        // Text mode says the same for people, and the lock holder by PID.
        let text = try tool(["inspect", directory])
        XCTAssertEqual(text.status, 0)
        XCTAssertTrue(text.text.contains("held by PID \(getpid())") && text.text.contains("LSN 1000"), text.text)
    }

    func testVerifyExitsZeroWhenCleanOneOnDamageTwoOnUsageErrors() throws {
        let (directory, _) = try makeWAL()
        var run = try tool(["verify", directory])
        XCTAssertEqual(run.status, 0, run.stderr)
        XCTAssertTrue(run.text.contains("clean: 3000 records"), run.text)

        let sealed = segmentFiles(directory)[0]
        let victim = recordLayout(sealed)[100]
        flipBit(sealed, at: victim.offset + 40)
        run = try tool(["verify", directory])
        XCTAssertEqual(run.status, 1)
        XCTAssertTrue(run.text.contains("corrupt-records in segment 1") && run.text.contains("offset \(victim.offset)")
                      && run.text.contains("LSNs \(victim.lsn)-\(victim.lsn) lost"), run.text)
        run = try tool(["verify", directory, "--json"])
        XCTAssertEqual(run.status, 1)
        let problems = try XCTUnwrap(run.json["problems"] as? [[String: Any]])
        XCTAssertEqual(problems.count, 1)
        XCTAssertEqual(problems.first?["kind"] as? String, "corrupt-records")
        XCTAssertEqual(problems.first?["offset"] as? Int, victim.offset)
        XCTAssertEqual(run.json["clean"] as? Bool, false)

        // A torn tail in the newest segment is reported with the LSN before it.
        let newest = segmentFiles(directory).filter { !recordLayout($0).isEmpty }.last!
        let last = recordLayout(newest).last!
        writeBytes(newest, at: last.offset + 30, [UInt8](repeating: 0, count: last.length - 6))
        run = try tool(["verify", directory])
        XCTAssertEqual(run.status, 1)
        XCTAssertTrue(run.text.contains("torn-tail") && run.text.contains("after LSN \(last.lsn - 1)"), run.text)

        run = try tool(["verify", directory + "/missing"])
        XCTAssertEqual(run.status, 2)
        XCTAssertEqual(run.stderr.split(separator: "\n").count, 1, run.stderr)
        run = try tool(["verify"])
        XCTAssertEqual(run.status, 2, "a missing argument is a usage error")
        XCTAssertEqual(run.stderr.split(separator: "\n").count, 1, run.stderr)
    }

    func testVerifyProgressIsPlainLinesOffATerminalAndABarOnOne() throws {
        let (directory, _) = try makeWAL()
        let plain = try tool(["verify", directory])
        XCTAssertTrue(plain.stderr.contains("verify: 100%"), plain.stderr)
        XCTAssertFalse(plain.stderr.contains("\r"), "no carriage returns in logs")
        // On a terminal: script(1) gives the tool a pseudo-terminal.
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/script") else { throw XCTSkip("script(1) from util-linux is missing") }
        let tty = try tool(["-qec", "\(builtExecutable("signalwal")) verify \(directory)", "/dev/null"], executable: "/usr/bin/script")
        XCTAssertEqual(tty.status, 0, tty.stderr)
        XCTAssertTrue(tty.text.contains("\rverify [") && tty.text.contains("ETA") && tty.text.contains("#"), tty.text)
    }

    func testDumpPrintsRecordsAsJSONLinesHexAndRaw() throws {
        let (directory, payloads) = try makeWAL()
        var run = try tool(["dump", directory])
        XCTAssertEqual(run.status, 0, run.stderr)
        let lines = run.text.split(separator: "\n")
        XCTAssertEqual(lines.count, 3000, "records below the checkpoint are still on disk and printed")
        for (index, line) in lines.enumerated() {
            let object = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
            XCTAssertEqual(object["lsn"] as? Int, index + 1)
            XCTAssertEqual(object["size"] as? Int, payloads[index].count)
            XCTAssertNotNil(object["segment"] as? Int)
            XCTAssertNotNil(object["offset"] as? Int)
            XCTAssertNotNil(object["crc"] as? Int)
            XCTAssertEqual(Data(base64Encoded: object["payload"] as? String ?? "").map { [UInt8]($0) }, payloads[index], "LSN \(index + 1)")
        }
        run = try tool(["dump", directory, "--from", "2990", "--limit", "5"])
        XCTAssertEqual(run.text.split(separator: "\n").compactMap { line -> Int? in
            (try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])?["lsn"] as? Int
        }, [2990, 2991, 2992, 2993, 2994])
        run = try tool(["dump", directory, "--from", "1234", "--limit", "1", "--format", "raw"])
        XCTAssertEqual(run.stdout, payloads[1233])
        run = try tool(["dump", directory, "--from", "7", "--limit", "1", "--format", "hex"])
        XCTAssertTrue(run.text.hasPrefix("lsn 7 segment 1 offset "), run.text)
        XCTAssertTrue(run.text.contains(payloads[6].prefix(4).map { String(format: "%02x", $0) }.joined(separator: " ")), run.text)
        run = try tool(["dump", directory, "--format", "xml"])
        XCTAssertEqual(run.status, 2)
    }

    func testAppendAcknowledgesEachLineWithItsLSNUnderEachPolicy() throws {
        for (policy, backend) in [("group", "uring"), ("interval:10ms", "mmap"), ("none", "uring")] {
            let directory = makeTemporaryDirectory(self)
            // Empty lines, bytes that are not UTF-8, and a last line without a newline.
            var lines: [[UInt8]] = (1...500).map { Array("line \($0) \(String(repeating: "x", count: $0 % 50))".utf8) }
            lines[10] = []
            lines[20] = [0xFF, 0xFE, 0x00, 0x80]
            let input = lines.map { $0 + [UInt8(ascii: "\n")] }.joined().dropLast()
            // 1 MiB segments: zero-filling three default 64 MiB ones per policy was most of this
            // test's time (minutes under AddressSanitizer).
            let run = try tool(["append", directory, "--policy", policy, "--backend", backend, "--segment-size", "1048576"], input: Array(input))
            XCTAssertEqual(run.status, 0, run.stderr)
            XCTAssertEqual(run.stderr, "", "nothing on standard error when all goes well")
            var lsnOfLine: [Int: LSN] = [:]
            for line in run.text.split(separator: "\n") {
                let fields = line.split(separator: "\t")
                XCTAssertEqual(fields.count, 2, String(line))
                lsnOfLine[Int(fields[0])!] = LSN(fields[1])!
            }
            XCTAssertEqual(Set(lsnOfLine.keys), Set(1...500), policy)
            XCTAssertEqual(Set(lsnOfLine.values).count, 500, "distinct LSNs")
            let wal = try WAL.open(directory: directory, configuration: testConfiguration())
            let records = Dictionary(uniqueKeysWithValues: readAll(wal).map { ($0.lsn, $0.payload) })
            for (number, lsn) in lsnOfLine { XCTAssertEqual(records[lsn], lines[number - 1], "\(policy): line \(number)") }
            try wal.close()
        }
        let bad = try tool(["append", makeTemporaryDirectory(self), "--policy", "sometimes"])
        XCTAssertEqual(bad.status, 2)
        XCTAssertTrue(bad.stderr.contains("--policy"), bad.stderr)
        XCTAssertEqual(bad.stderr.split(separator: "\n").count, 1, bad.stderr)
    }

    func testBadPathsGetOneClearLineAndStatusTwo() throws {
        let base = makeTemporaryDirectory(self)
        try FileSystem.createDirectories(base + "/empty")
        FileManager.default.createFile(atPath: base + "/file", contents: Data([1]))
        for (path, expected) in [(base + "/missing", "no such directory"), (base + "/file", "not a wal directory"),
                                 (base + "/empty", "holds no wal")] {
            for command in ["inspect", "verify", "dump"] {
                let run = try tool([command, path])
                XCTAssertEqual(run.status, 2, "\(command) \(path)")
                XCTAssertEqual(run.stderr.split(separator: "\n").count, 1, run.stderr)
                XCTAssertTrue(run.stderr.lowercased().contains(expected) && run.stderr.contains(path), "\(command): \(run.stderr)")
            }
        }
        // A lock held by another process: append names its PID.
        let (directory, _) = try makeWAL()
        let wal = try WAL.open(directory: directory, configuration: testConfiguration())
        let locked = try tool(["append", directory], input: Array("x\n".utf8))
        try wal.close()
        XCTAssertEqual(locked.status, 2)
        XCTAssertTrue(locked.stderr.contains("PID \(getpid())"), locked.stderr)
        // A format this build does not read: a valid header with version 99.
        let first = segmentFiles(directory)[0]
        var header = readBytes(first, at: 0, count: Format.segmentHeaderSize)
        header.withUnsafeMutableBytes { raw in
            raw.storeBytes(of: UInt32(99).littleEndian, toByteOffset: 8, as: UInt32.self)
            raw.storeBytes(of: CRC32C.checksum(UnsafeRawBufferPointer(rebasing: raw[0..<60])).littleEndian, toByteOffset: 60, as: UInt32.self)
        }
        writeBytes(first, at: 0, header)
        let newer = try tool(["inspect", directory])
        XCTAssertEqual(newer.status, 2)
        XCTAssertTrue(newer.stderr.contains("format 99") && newer.stderr.contains(first), newer.stderr)
    }

    func testPermissionDeniedNamesTheUIDAndMode() throws {
        guard getuid() == 0, FileManager.default.isExecutableFile(atPath: "/usr/bin/setpriv") else {
            throw XCTSkip("needs root and setpriv(1) to run the tool as another user")
        }
        let (directory, _) = try makeWAL()
        XCTAssertEqual(chmod(directory, 0o700), 0)
        let run = try tool(["--reuid=65534", "--regid=65534", "--clear-groups", builtExecutable("signalwal"), "inspect", directory],
                           executable: "/usr/bin/setpriv")
        XCTAssertEqual(run.status, 2, run.stderr)
        XCTAssertTrue(run.stderr.contains("uid 65534") && run.stderr.contains("mode 700") && run.stderr.contains(directory), run.stderr)
        XCTAssertEqual(run.stderr.split(separator: "\n").count, 1, run.stderr)
    }

    func testHotBackupHoldsEveryRecordAcknowledgedBeforeItBeganAndRestores() throws {
        // A consumer that does not checkpoint during the run: every record acknowledged before
        // the backup began must be in it, byte for byte.
        try backupWhileAppending(options: ["checkpoint-ms=5000"], everyAckAboveCheckpoint: true)
        // A lagging consumer checkpointing every 20 ms, so segments are consumed and recycled
        // while the backup copies: the copy must still be consistent (verifies clean, LSNs
        // contiguous above its checkpoint, reaching past every earlier acknowledgement).
        try backupWhileAppending(options: ["checkpoint-ms=20"], everyAckAboveCheckpoint: false)
    }

    private func backupWhileAppending(options: [String], everyAckAboveCheckpoint: Bool) throws {
        let source = makeTemporaryDirectory(self)
        let seed = UInt64.random(in: 1 ... .max)
        let child = try AppendingChild(directory: source, seed: seed, threads: 4, options: options)
        XCTAssertNotNil(child.waitForLine(startingWith: "ack", timeout: .seconds(10)))
        usleep(400_000)
        let before = child.acks
        XCTAssertGreaterThan(before.count, 100)
        let base = makeTemporaryDirectory(self)
        try FileSystem.createDirectories(base)
        let backups = [base + "/backup", base + "/backup.tar"]
        for destination in backups {
            let run = try tool(["backup", source, destination])
            XCTAssertEqual(run.status, 0, run.stderr + run.text)
            XCTAssertTrue(run.text.hasPrefix("backed up LSNs "), run.text)
        }
        child.kill()

        for (index, backup) in backups.enumerated() {
            let restored = base + "/restored-\(index)"
            let run = try tool(["restore", backup, restored, "--owner", "1000:1000"])
            XCTAssertEqual(run.status, 0, run.stderr + run.text)
            XCTAssertTrue(run.text.hasPrefix("restored LSNs "), run.text)
            var st = stat()
            XCTAssertEqual(stat(segmentFiles(restored)[0], &st), 0)
            XCTAssertEqual(st.st_uid, 1000)
            // L3: every block of a restored segment is allocated and written, never a hole a
            // store through the mapping could SIGBUS on when the disk is full.
            for segment in segmentFiles(restored) {
                XCTAssertEqual(stat(segment, &st), 0)
                XCTAssertGreaterThanOrEqual(Int(st.st_blocks) * 512, Int(st.st_size), "\(segment) is sparse")
            }
            XCTAssertEqual(try tool(["verify", restored]).status, 0)
            let wal = try WAL.open(directory: restored, configuration: testConfiguration())
            XCTAssertTrue(wal.recoveryReport.damage.isEmpty, "\(wal.recoveryReport)")
            let restoredRecords = Array(try wal.records(from: wal.checkpointLSN + 1))
            XCTAssertEqual(restoredRecords.map(\.lsn), Array((wal.checkpointLSN + 1)..<(wal.checkpointLSN + 1 + LSN(restoredRecords.count))),
                           "\(options): contiguous above the checkpoint")
            XCTAssertGreaterThanOrEqual(restoredRecords.last?.lsn ?? wal.checkpointLSN, before.map(\.lsn).max()!)
            let records = Dictionary(uniqueKeysWithValues: restoredRecords.map { ($0.lsn, $0.payload) })
            var checked = 0
            for ack in before where ack.lsn > wal.checkpointLSN {
                XCTAssertEqual(records[ack.lsn], Workload.payload(seed: seed, thread: ack.thread, index: ack.index),
                               "\(backup): record \(ack.lsn), acknowledged before the backup began")
                checked += 1
            }
            if everyAckAboveCheckpoint { XCTAssertEqual(checked, before.count, "\(options): nothing was consumed, so every record is checked") }
            try wal.close()
        }
        // A destination that exists is refused; so is restoring over a non-empty directory.
        var run = try tool(["backup", source, backups[0]])
        XCTAssertEqual(run.status, 2)
        XCTAssertTrue(run.stderr.contains("exists") && run.stderr.contains(backups[0]), run.stderr)
        run = try tool(["restore", backups[0], base + "/restored-0"])
        XCTAssertEqual(run.status, 2)
        XCTAssertTrue(run.stderr.contains("not empty") && run.stderr.contains("--force"), run.stderr)
        run = try tool(["restore", backups[1], base + "/restored-0", "--force"])
        XCTAssertEqual(run.status, 0, run.stderr)
    }

    func testBackupOfADamagedWALCopiesEveryValidRecordAndReportsTheDamage() throws {
        let (directory, payloads) = try makeWAL()
        let sealed = segmentFiles(directory)[0]
        let victim = recordLayout(sealed)[200]
        flipBit(sealed, at: victim.offset + 40)
        let backup = makeTemporaryDirectory(self)
        let run = try tool(["backup", directory, backup])
        XCTAssertEqual(run.status, 1, "complete, but the source was damaged")
        XCTAssertTrue(run.text.contains("source damage: corrupt-records in segment 1") && run.text.contains("LSNs \(victim.lsn)-\(victim.lsn) lost"), run.text)
        // Damage that stays put is real: every other record is copied, the ones after it too.
        let wal = try WAL.open(directory: backup, configuration: testConfiguration())
        let records = readAll(wal, from: 1)
        XCTAssertEqual(records.map(\.lsn), (1...3000).filter { $0 != victim.lsn })
        for record in records { XCTAssertEqual(record.payload, payloads[Int(record.lsn) - 1]) }
        try wal.close()
    }

    func testRepairDryRunChangesNothingAndApplyQuarantinesAndTruncates() throws {
        let (directory, _) = try makeWAL()
        let sealed = segmentFiles(directory)[0]
        let victim = recordLayout(sealed)[50]
        flipBit(sealed, at: victim.offset + 30)
        let newest = segmentFiles(directory).filter { !recordLayout($0).isEmpty }.last!
        let last = recordLayout(newest).last!
        writeBytes(newest, at: last.offset + 28, [UInt8](repeating: 0, count: last.length - 4))
        let snapshot = segmentFiles(directory).map { readBytes($0, at: 0, count: 1 << 20) }

        var run = try tool(["repair", directory])
        XCTAssertEqual(run.status, 0, run.stderr)
        XCTAssertTrue(run.text.contains("quarantine: copy") && run.text.contains("truncate: zero") && run.text.contains("dry run"), run.text)
        XCTAssertEqual(segmentFiles(directory).map { readBytes($0, at: 0, count: 1 << 20) }, snapshot, "a dry run changes nothing")
        XCTAssertTrue(quarantineFiles(directory).isEmpty)

        // Not while the WAL is open elsewhere.
        let wal = try WAL.open(directory: directory, configuration: testConfiguration())
        run = try tool(["repair", directory, "--apply"])
        XCTAssertEqual(run.status, 2)
        XCTAssertTrue(run.stderr.contains("PID \(getpid())"), run.stderr)
        try wal.close()
        // The open above was recovery too; start from the damaged copy again.
        for (path, bytes) in zip(segmentFiles(directory), snapshot) { writeBytes(path, at: 0, bytes) }
        try? FileManager.default.removeItem(atPath: directory + "/quarantine")

        run = try tool(["repair", directory, "--apply"])
        XCTAssertEqual(run.status, 0, run.stderr)
        XCTAssertTrue(run.text.contains("1 torn tail truncated") && run.text.contains("2 files quarantined"), run.text)
        // The corrupt record, and the torn tail's bytes (kept: a torn write and a damaged last
        // record look alike).
        let newestSequence = Format.segmentSequence(fromFileName: String(newest.split(separator: "/").last!))!
        XCTAssertEqual(quarantineFiles(directory), [Format.quarantineFileName(sequence: 1, offset: victim.offset),
                                                    Format.quarantineFileName(sequence: newestSequence, offset: last.offset)].sorted())
        run = try tool(["verify", directory])
        XCTAssertEqual(run.status, 1, "the lost LSN stays lost and reported")
        XCTAssertFalse(run.text.contains("torn-tail"), run.text)
        XCTAssertTrue(run.text.contains("LSNs \(victim.lsn)-\(victim.lsn) lost") && run.text.contains("already quarantined"), run.text)
    }

    func testBenchIsTheSameHarnessAsSignalWALBench() throws {
        let run = try tool(["bench", "durable", "--seconds", "0.3", "--dir", makeTemporaryDirectory(self), "--json"])
        XCTAssertEqual(run.status, 0, run.stderr)
        XCTAssertGreaterThan(run.json["records_per_second"] as? Double ?? 0, 0, run.text)
    }
}

private func withRecordsCount(_ segments: [[String: Any]]) -> Int {
    segments.filter { ($0["records"] as? Int ?? 0) > 0 }.count
}

extension Data {
    /// Reads a pipe to its end on another thread, so a child that fills both pipes cannot
    /// block on the one not being read.
    final class Sendable: @unchecked Swift.Sendable {
        // @unchecked: `data` is written once by the reader thread before `done` is signalled.
        private var data = Data()
        private let done = DispatchSemaphore(value: 0)
        init(_ handle: FileHandle) {
            Thread.detachNewThread { [self] in
                data = handle.readDataToEndOfFile()
                done.signal()
            }
        }
        func text() -> String {
            done.wait()
            return String(decoding: data, as: UTF8.self)
        }
    }

}

extension CommandLineToolTests {
    func fileMode(_ path: String) -> (mode: mode_t, uid: uid_t) {
        var st = stat()
        XCTAssertEqual(stat(path, &st), 0, path)
        return (st.st_mode & 0o7777, st.st_uid)
    }

    /// A restored acceptor must keep its id (the writer knows its records by it), land with the
    /// owner the container runs as, and be no more readable than asked.
    func testBackupAndRestoreKeepTheAcceptorIDWithTheOwnerAndModeAskedFor() throws {
        let (directory, _) = try makeWAL()
        let id = "0f6d3c1e-6a57-4c39-9d2b-1c4f0e1f7a21\n"
        XCTAssertTrue(FileManager.default.createFile(atPath: directory + "/acceptor-id", contents: Data(id.utf8)))
        let base = makeTemporaryDirectory(self)
        try FileSystem.createDirectories(base)
        for destination in [base + "/backup", base + "/backup.tar"] {
            let run = try tool(["backup", directory, destination])
            XCTAssertEqual(run.status, 0, run.stderr + run.text)
        }
        // Private by default: the backup holds the same telemetry as the WAL.
        XCTAssertEqual(fileMode(base + "/backup").mode, 0o700)
        XCTAssertEqual(fileMode(base + "/backup/acceptor-id").mode, 0o600)
        XCTAssertEqual(fileMode(base + "/backup.tar").mode, 0o600)
        // The writer's store says it holds this acceptor's LSNs up to 5,000, more than the
        // backup has (1 to 3,000): the restored acceptor must start its LSNs above those.
        let store = base + "/store.sqlite"
        let shell = try tool([store, """
            CREATE TABLE ingest_progress (source TEXT PRIMARY KEY, writer_lsn INTEGER, floor_lsn INTEGER, high_water_lsn INTEGER, held_ranges TEXT, updated_at_unix_nano INTEGER NOT NULL);
            INSERT INTO ingest_progress VALUES ('acceptor:\(id.trimmingCharacters(in: .whitespacesAndNewlines))', NULL, 4990, 5000, '4991-5000', 1);
            """], executable: "/usr/bin/sqlite3")
        XCTAssertEqual(shell.status, 0, shell.stderr)
        // Neither option: refused, naming both, and DIR is not created.
        var refused = try tool(["restore", base + "/backup", base + "/refused"])
        XCTAssertEqual(refused.status, 2)
        XCTAssertTrue(refused.stderr.contains("--store") && refused.stderr.contains("--new-identity"), refused.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: base + "/refused"))
        refused = try tool(["restore", base + "/backup", base + "/refused", "--store", base + "/missing.sqlite"])
        XCTAssertEqual(refused.status, 2)
        XCTAssertFalse(FileManager.default.fileExists(atPath: base + "/refused"))
        // A store that never heard of this acceptor is the wrong one: refused, not a floor of 0.
        let other = base + "/other.sqlite"
        XCTAssertEqual(try tool([other, "CREATE TABLE ingest_progress (source TEXT PRIMARY KEY, writer_lsn INTEGER, floor_lsn INTEGER, high_water_lsn INTEGER, held_ranges TEXT, updated_at_unix_nano INTEGER NOT NULL);"],
                                executable: "/usr/bin/sqlite3").status, 0)
        refused = try tool(["restore", base + "/backup", base + "/refused", "--store", other])
        XCTAssertEqual(refused.status, 2)
        XCTAssertTrue(refused.stderr.contains("no progress for acceptor"), refused.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: base + "/refused"))
        // --new-identity: no id, so the acceptor makes a new one.
        let fresh = base + "/nested/missing/fresh"
        var run = try tool(["restore", base + "/backup.tar", fresh, "--new-identity"])
        XCTAssertEqual(run.status, 0, run.stderr + run.text)
        XCTAssertFalse(FileManager.default.fileExists(atPath: fresh + "/acceptor-id"))
        XCTAssertEqual(fileMode(base + "/nested").mode, 0o700, "missing parents are created, private")
        for (index, backup) in [base + "/backup", base + "/backup.tar"].enumerated() {
            let restored = base + "/restored-\(index)"
            let run = try tool(["restore", backup, restored, "--owner", "1000:1000", "--access", "group", "--store", store])
            XCTAssertEqual(run.status, 0, run.stderr + run.text)
            XCTAssertEqual(try String(contentsOfFile: restored + "/acceptor-id", encoding: .utf8), id, backup)
            let floor = LSN(5000) + (1 << 40) + 1
            XCTAssertTrue(run.text.contains("next LSN will be at least \(floor)"), run.text)
            XCTAssertEqual(fileMode(restored).mode, 0o750)
            XCTAssertEqual(fileMode(restored).uid, 1000)
            for name in try FileManager.default.contentsOfDirectory(atPath: restored) {
                XCTAssertEqual(fileMode(restored + "/" + name).mode, 0o640, name)
                XCTAssertEqual(fileMode(restored + "/" + name).uid, 1000, name)
            }
            let wal = try WAL.open(directory: restored, configuration: testConfiguration())
            XCTAssertEqual(Array(try wal.records(from: 1001)).count, 2000, "the backlog is kept")
            XCTAssertEqual(try wal.append([9]), floor, "no LSN the writer holds is handed out again")
            try wal.close()
        }
        run = try tool(["restore", base + "/backup", base + "/bad", "--access", "world"])
        XCTAssertEqual(run.status, 2)
        XCTAssertTrue(run.stderr.contains("--access"), run.stderr)
    }

    func writeLetter(_ folder: String, lsn: Int, reason: String) throws {
        try FileSystem.createDirectories(folder)
        let base = folder + "/lsn-" + String(repeating: "0", count: 20 - String(lsn).count) + String(lsn)
        XCTAssertTrue(FileManager.default.createFile(atPath: base + ".envelope", contents: Data([1, 2, 3])))
        XCTAssertTrue(FileManager.default.createFile(atPath: base + ".json", contents: Data(#"{"lsn":\#(lsn),"reason":"\#(reason)","tenant":"acme","items":2}"#.utf8)))
    }

    func testDeadLetterQueueListsShowsAndPurgesOnlyWhatIsAsked() throws {
        let (directory, _) = try makeWAL()
        try writeLetter(directory + "/dead-letters", lsn: 7, reason: "writer refused: bad span")
        try writeLetter(directory + "/dead-letters", lsn: 12, reason: "writer refused: bad log")
        try writeLetter(directory + "/dead-letters/replayed", lsn: 3, reason: "old")
        var run = try tool(["dlq", "list", directory])
        XCTAssertEqual(run.status, 0, run.stderr)
        XCTAssertTrue(run.text.contains("2 dead letter(s)") && run.text.contains("(and 1 replayed)"), run.text)
        XCTAssertTrue(run.text.contains("lsn 7 ") && run.text.contains("bad span") && run.text.contains("lsn 12 "), run.text)
        run = try tool(["dlq", "show", directory, "12"])
        XCTAssertEqual(run.status, 0, run.stderr)
        XCTAssertTrue(run.text.contains("bad log") && run.text.contains("3 bytes"), run.text)
        run = try tool(["dlq", "show", directory, "99"])
        XCTAssertEqual(run.status, 1)
        XCTAssertTrue(run.stderr.contains("no dead letter with LSN 99"), run.stderr)
        run = try tool(["dlq", "purge", directory])
        XCTAssertEqual(run.status, 2, "purge must say which")
        run = try tool(["inspect", directory])
        XCTAssertTrue(run.text.contains("dead letters    2 waiting, 1 replayed"), run.text)
        run = try tool(["dlq", "purge", directory, "--lsn", "7"])
        XCTAssertEqual(run.status, 0, run.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: directory + "/dead-letters/lsn-00000000000000000007.json"))
        XCTAssertTrue(FileManager.default.fileExists(atPath: directory + "/dead-letters/lsn-00000000000000000012.envelope"))
        run = try tool(["dlq", "purge", directory, "--all"])
        XCTAssertEqual(run.status, 0, run.stderr)
        XCTAssertTrue(run.text.contains("purged 2"), run.text)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: directory + "/dead-letters/replayed"), [])
        run = try tool(["dlq", "list", base(directory) + "/missing"])
        XCTAssertEqual(run.status, 2)
    }

    func base(_ path: String) -> String { (path as NSString).deletingLastPathComponent }

    /// `inspect` shows the acceptor's id and forward position, and with --store the writer's
    /// per-acceptor progress (a store made with the sqlite3 shell, the schema's progress table).
    func testInspectShowsTheServicesViewAndTheStoresProgress() throws {
        let (directory, _) = try makeWAL()
        XCTAssertTrue(FileManager.default.createFile(atPath: directory + "/acceptor-id", contents: Data("acc-1\n".utf8)))
        var run = try tool(["inspect", directory, "--json"])
        XCTAssertEqual(run.json["acceptorID"] as? String, "acc-1")
        XCTAssertEqual(run.json["forwardedThroughLSN"] as? Int, 1000)
        let store = makeTemporaryDirectory(self) + ".sqlite"
        let sql = """
            CREATE TABLE ingest_progress (source TEXT PRIMARY KEY, writer_lsn INTEGER, floor_lsn INTEGER, high_water_lsn INTEGER, held_ranges TEXT, updated_at_unix_nano INTEGER NOT NULL);
            INSERT INTO ingest_progress VALUES ('writer-wal', 4242, NULL, NULL, NULL, 1);
            INSERT INTO ingest_progress VALUES ('acceptor:acc-1', NULL, 990, 1005, '991-1005', 1);
            """
        let shell = try tool([store, sql], executable: "/usr/bin/sqlite3")
        XCTAssertEqual(shell.status, 0, shell.stderr)
        run = try tool(["inspect", directory, "--store", store])
        XCTAssertEqual(run.status, 0, run.stderr)
        XCTAssertTrue(run.text.contains("acceptor        id acc-1; forwarded (acknowledged by the writer) through LSN 1000"), run.text)
        XCTAssertTrue(run.text.contains("stored through writer LSN 4242"), run.text)
        XCTAssertTrue(run.text.contains("acceptor:acc-1  floor 990, high-water 1005, stored above the floor: 991-1005"), run.text)
        run = try tool(["inspect", directory, "--store", store + ".missing"])
        XCTAssertEqual(run.status, 2)
        XCTAssertTrue(run.stderr.contains("WRITER_STORE"), run.stderr)
    }
}
