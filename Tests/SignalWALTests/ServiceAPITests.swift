#if canImport(Glibc)
import Glibc
#endif
import Foundation
import MetricsTestKit
import Synchronization
import XCTest
@testable import SignalWAL

/// The API the services embed (issue 11): async appends that never block the cooperative pool,
/// a bounded WAL that pushes back, readers that say what happened, and the health, metrics and
/// errors a service needs. Named after the failure each test guards against.
final class ServiceAPITests: XCTestCase {
    override func tearDown() { Syscall.setFaultHook(nil) }

    // MARK: Never blocking the pool

    /// With every spare segment's fallocate delayed by a second, 1,000 tasks appending must
    /// still leave the pool free: before, appenders waited for the spare in a condition wait
    /// under the append lock, both pool threads blocked, and a 1 ms heartbeat woke a few times
    /// a second.
    func testHeartbeatKeepsRunningWhileAThousandTasksAppendAndASpareIsSlow() async throws {
        for backend in IOBackend.allCases {
            let directory = makeTemporaryDirectory(self)
            var configuration = testConfiguration(spares: 1, backend: backend)
            configuration.useIOURing = false
            let wal = try await WAL.open(directory: directory, configuration: configuration)
            let slowed = SharedCount()
            Syscall.setFaultHook { operation, path in
                if operation == .fallocate && path.hasSuffix(Format.temporarySuffix) {
                    slowed.value.add(1, ordering: .relaxed)
                    usleep(1_000_000)
                }
                return nil
            }
            let tasks = 1_000
            let perTask = reducedIterations ? 2 : 3
            let stop = SharedFlag()
            // The heartbeat: how late each 1 ms sleep wakes.
            let heartbeat = Task { () -> (ticks: Int, worst: Duration) in
                var ticks = 0
                var worst = Duration.zero
                let clock = ContinuousClock()
                while !stop.value.load(ordering: .relaxed) {
                    let before = clock.now
                    try? await Task.sleep(for: .milliseconds(1))
                    worst = max(worst, clock.now - before - .milliseconds(1))
                    ticks += 1
                }
                return (ticks, worst)
            }
            let started = ContinuousClock.now
            let lsns = try await withThrowingTaskGroup(of: [LSN].self) { group in
                for task in 0..<tasks {
                    group.addTask {
                        var mine: [LSN] = []
                        for index in 0..<perTask { mine.append(try await wal.append(testPayload(task * 10 + index, length: 1000))) }
                        return mine
                    }
                }
                return try await group.reduce(into: [LSN]()) { $0 += $1 }
            }
            let elapsed = ContinuousClock.now - started
            stop.value.store(true, ordering: .relaxed)
            let beat = await heartbeat.value
            Syscall.setFaultHook(nil)
            XCTAssertEqual(Set(lsns).count, tasks * perTask, "\(backend): every append got its own LSN")
            XCTAssertGreaterThanOrEqual(slowed.value.load(ordering: .relaxed), 1, "\(backend): a spare was slow while tasks appended")
            XCTAssertGreaterThan(elapsed, .milliseconds(900), "\(backend): the appends did wait for the slow spare")
            // A pool blocked behind the spare would leave the heartbeat a second late; sanitizer
            // builds and a shared machine get a generous margin, far below that second.
            XCTAssertLessThan(beat.worst, .milliseconds(400), "\(backend): the heartbeat was held up \(beat.worst)")
            XCTAssertGreaterThan(beat.ticks, 50, "\(backend): the heartbeat kept running (\(beat.ticks) ticks in \(elapsed))")
            let records = try wal.readVisible(from: 1).records
            XCTAssertEqual(records.count, tasks * perTask, "\(backend)")
            try await wal.close()
        }
    }

    // MARK: Tailing readers never end silently

    func testTailThrowsTheFlushFailureAfterAnInjectedFdatasyncEIO() async throws {
        for backend in IOBackend.allCases {
            let directory = makeTemporaryDirectory(self)
            let wal = try await WAL.open(directory: directory, configuration: testConfiguration(backend: backend))
            let good = try await wal.append([1])
            let reader = tailInTask(wal)
            try await Task.sleep(for: .milliseconds(50))
            Syscall.setFaultHook { operation, path in
                (operation == .fdatasync || operation == .pwrite) && path.hasSuffix(".wal") ? .fail(errno: EIO) : nil
            }
            do {
                try await wal.append([2])
                XCTFail("\(backend): the append after the failed flush succeeded")
            } catch let error as WALError {
                XCTAssertEqual(error.kind, .flushFailed, "\(backend)")
            }
            Syscall.setFaultHook(nil)
            let outcome = await reader.value
            XCTAssertEqual(outcome.seen, [good], "\(backend): the durable record, then the failure")
            XCTAssertEqual((outcome.error as? WALError)?.kind, .flushFailed, "\(backend): \(String(describing: outcome.error))")
            XCTAssertEqual(wal.failure?.kind, .flushFailed, "\(backend): the failure is public")
            try? await wal.close()
        }
    }

    /// Tails `wal` from LSN 1 in a task: the LSNs it yielded and the error that ended it.
    private func tailInTask(_ wal: WAL) -> Task<(seen: [LSN], error: (any Error)?), Never> {
        Task {
            var seen: [LSN] = []
            do {
                for try await record in wal.tail(from: 1) { seen.append(record.lsn) }
            } catch { return (seen, error) }
            return (seen, nil)
        }
    }

    func testTailThrowsClosedAfterTheWALCloses() async throws {
        let directory = makeTemporaryDirectory(self)
        let wal = try await WAL.open(directory: directory, configuration: testConfiguration())
        XCTAssertNil(wal.failure, "a healthy WAL has no failure")
        try await wal.append([1])
        let reader = tailInTask(wal)
        try await Task.sleep(for: .milliseconds(100))
        try await wal.close()
        let outcome = await reader.value
        XCTAssertEqual(outcome.seen, [1], "what was visible is read first")
        XCTAssertEqual((outcome.error as? WALError)?.kind, .closed, "\(String(describing: outcome.error))")
        XCTAssertThrowsError(try wal.records(from: 1)) { XCTAssertEqual(($0 as? WALError)?.kind, .closed) }
    }

    func testTailThrowsCancellationErrorWhenItsTaskIsCancelled() async throws {
        let directory = makeTemporaryDirectory(self)
        let wal = try await WAL.open(directory: directory, configuration: testConfiguration())
        try await wal.append([1])
        let reader = tailInTask(wal)
        try await Task.sleep(for: .milliseconds(100))
        reader.cancel()
        let outcome = await reader.value
        XCTAssertEqual(outcome.seen, [1])
        XCTAssertTrue(outcome.error is CancellationError, "\(String(describing: outcome.error))")
        try await wal.close()
    }

    func testTailWithALimitEndsAfterThatManyRecords() async throws {
        let directory = makeTemporaryDirectory(self)
        let wal = try await WAL.open(directory: directory, configuration: testConfiguration())
        try await wal.append(contentsOf: (0..<10).map { testPayload($0, length: 10) })
        var seen: [LSN] = []
        for try await record in wal.tail(from: 3, limit: 4) { seen.append(record.lsn) }
        XCTAssertEqual(seen, [3, 4, 5, 6])
        XCTAssertEqual(Array(try wal.records(from: 8, limit: 2)).map(\.lsn), [8, 9])
        try await wal.close()
    }

    // MARK: Gaps are reported, never skipped

    /// 1 MiB segments, 64 KiB records: 15 per segment.
    private func filledWAL(_ directory: String, records: Int) async throws -> WAL {
        let wal = try await WAL.open(directory: directory, configuration: testConfiguration(spares: 1))
        for index in 0..<records { try await wal.append(testPayload(index, length: 64 << 10)) }
        return wal
    }

    func testReadingBelowTheOldestRetainedRecordThrowsTheMissingRange() async throws {
        let directory = makeTemporaryDirectory(self)
        let wal = try await filledWAL(directory, records: 100)
        try await wal.checkpoint(upTo: 60)
        let oldest = wal.oldestLSN
        XCTAssertGreaterThan(oldest, 1, "segments below the checkpoint were released")
        XCTAssertLessThanOrEqual(oldest, 61, "the record after the checkpoint is still held")
        XCTAssertThrowsError(try wal.records(from: 1)) { error in
            XCTAssertEqual((error as? WALError)?.kind, .gap(missing: 1...(oldest - 1)), "\(error)")
            XCTAssertTrue("\(error)".contains("checkpointed"), "\(error)")
        }
        do {
            for try await _ in wal.tail(from: 1) { XCTFail("the tail yielded a record past a gap") }
        } catch let error as WALError {
            XCTAssertEqual(error.kind, .gap(missing: 1...(oldest - 1)))
        }
        // From the oldest on, everything is there.
        XCTAssertEqual(Array(try wal.records(from: oldest)).map(\.lsn), Array(oldest...100))
        try await wal.close()
    }

    func testAReaderOvertakenByRecyclingIsToldTheMissingRange() async throws {
        let directory = makeTemporaryDirectory(self)
        let wal = try await filledWAL(directory, records: 40)
        // A slow tail: reads five records, then the log moves on and its segments are recycled.
        var iterator = wal.tail(from: 1).makeAsyncIterator()
        for expected in LSN(1)...5 {
            let lsn = try await iterator.next()?.lsn
            XCTAssertEqual(lsn, expected)
        }
        var sync = try wal.records(from: 1).makeIterator()
        for expected in LSN(1)...5 { XCTAssertEqual(sync.next()?.lsn, expected) }
        // A consumer that is ahead (one checkpoint per WAL) releases segments as the log grows,
        // so they are recycled for the new records.
        for index in 40..<100 {
            try await wal.append(testPayload(index, length: 64 << 10))
            if index % 10 == 0 { try await wal.checkpoint(upTo: LSN(index)) }
        }
        try await wal.checkpoint(upTo: 90)
        // Recycled: segments were reused for the records after 40.
        XCTAssertGreaterThan(wal.statistics.segmentsRecycled, 0)
        let oldest = wal.oldestLSN
        XCTAssertGreaterThan(oldest, 6)
        do {
            let next = try await iterator.next()
            XCTFail("the overtaken tail yielded \(String(describing: next?.lsn)) instead of a gap")
        } catch let error as WALError {
            XCTAssertEqual(error.kind, .gap(missing: 6...(oldest - 1)), "\(error)")
        }
        // The synchronous sequence stops at the gap instead of jumping over it...
        XCTAssertNil(sync.next(), "the sequence stops where records are missing")
        // ...and asking again from there says why.
        XCTAssertThrowsError(try wal.records(from: 6)) { XCTAssertEqual(($0 as? WALError)?.kind, .gap(missing: 6...(oldest - 1))) }
        try await wal.close()
    }

    func testRecordsLostToDamageAreAGapNotASkip() throws {
        let directory = makeTemporaryDirectory(self)
        var wal = try WAL.open(directory: directory, configuration: testConfiguration())
        for index in 0..<60 { try wal.append(testPayload(index, length: 40_000)) }
        try wal.close()
        // Damage a record in the middle of the oldest segment.
        let first = segmentFiles(directory).sorted().first!
        let layout = recordLayout(first)
        let victim = layout[layout.count / 2]
        writeBytes(first, at: victim.offset + 40, [UInt8](repeating: 0xA5, count: 64))
        wal = try WAL.open(directory: directory, configuration: testConfiguration())
        XCTAssertFalse(wal.recoveryReport.isClean, "real damage is not clean")
        let sequence = try wal.records(from: 1)
        XCTAssertEqual(Array(sequence).map(\.lsn), Array(1..<victim.lsn), "the sequence stops at the damage")
        XCTAssertThrowsError(try wal.records(from: victim.lsn)) { error in
            XCTAssertEqual((error as? WALError)?.kind, .gap(missing: victim.lsn...victim.lsn), "\(error)")
            XCTAssertTrue("\(error)".contains("damage"), "\(error)")
        }
        let all = try wal.readVisible(from: 1)
        XCTAssertEqual(all.gaps, [victim.lsn...victim.lsn])
        XCTAssertEqual(all.records.count, 59)
        try wal.close()
    }

    // MARK: A bounded WAL

    func testAppendsPastMaxLiveBytesFailWithBacklogFullAndResumeAfterACheckpoint() async throws {
        for backend in IOBackend.allCases {
            let directory = makeTemporaryDirectory(self)
            var configuration = testConfiguration(spares: 1, backend: backend)
            configuration.maxLiveBytes = 4 << 20
            let metrics = TestMetrics()
            configuration.metricsFactory = metrics
            let wal = try await WAL.open(directory: directory, configuration: configuration)
            var acknowledged: [LSN: [UInt8]] = [:]
            var refusal: WALError?
            var refused: [[UInt8]] = []
            var index = 0
            // Random sizes and batches, so the bound is met by records and batches that cross
            // segment boundaries.
            var generator = SystemRandomNumberGenerator()
            while refusal == nil && index < 10_000 {
                let batch = (0..<Int.random(in: 1...8, using: &generator)).map { _ -> [UInt8] in
                    index += 1
                    return testPayload(index, length: Int.random(in: 1...120_000, using: &generator))
                }
                do {
                    let range = try await wal.append(contentsOf: batch)
                    for (offset, lsn) in range.enumerated() { acknowledged[lsn] = batch[offset] }
                } catch let error as WALError {
                    refusal = error
                    refused = batch
                }
            }
            guard let refusal, case .backlogFull(let live, let limit) = refusal.kind else {
                return XCTFail("\(backend): no backlogFull refusal: \(String(describing: refusal))")
            }
            XCTAssertTrue(refusal.isRetryable)
            XCTAssertEqual(limit, 4 << 20)
            XCTAssertLessThanOrEqual(live, limit, "\(backend): the live bytes never passed the bound")
            XCTAssertLessThanOrEqual(wal.liveBytes, limit)
            XCTAssertTrue(refusal.description.contains("maxLiveBytes"), refusal.description)
            let status = wal.backlogStatus
            XCTAssertEqual(status.records, wal.nextLSN - 1)
            XCTAssertEqual(status.limit, limit)
            XCTAssertGreaterThan(status.oldestRecordAge, 0)
            let dimensions = [("wal", directory)]
            XCTAssertEqual(try metrics.expectCounter("signalwal_backlog_full_errors_total", dimensions).totalValue, 1)
            // Refused at once, again, without a wait.
            let clock = ContinuousClock()
            let before = clock.now
            do {
                try await wal.append(contentsOf: refused)
                XCTFail("\(backend): an append past the bound succeeded")
            } catch let error as WALError {
                if case .backlogFull = error.kind {} else { XCTFail("\(error)") }
            }
            XCTAssertLessThan(clock.now - before, .milliseconds(500))
            // Consumers catch up: appends go in again.
            let caughtUp = wal.durableLSN
            try await wal.checkpoint(upTo: caughtUp)
            XCTAssertNotNil(wal.backlogStatus.checkpointRate.map { $0 >= 0 } ?? true)
            for _ in 0..<10 {
                let payload = testPayload(index, length: 100_000)
                index += 1
                acknowledged[try await wal.append(payload)] = payload
            }
            wal.refreshMetrics()
            XCTAssertEqual(try metrics.expectGauge("signalwal_live_bytes", dimensions).lastValue, Double(wal.liveBytes))
            XCTAssertEqual(try metrics.expectGauge("signalwal_backlog_records", dimensions).lastValue, Double(wal.nextLSN - 1 - caughtUp))
            XCTAssertEqual(try metrics.expectGauge("signalwal_max_live_bytes", dimensions).lastValue, Double(limit))
            XCTAssertGreaterThan(try metrics.expectGauge("signalwal_filesystem_size_bytes", dimensions).lastValue ?? 0, 0)
            try await wal.close()
            // Nothing acknowledged is lost.
            let reopened = try await WAL.open(directory: directory, configuration: configuration)
            let found = Dictionary(uniqueKeysWithValues: try reopened.readVisible(from: 1).records.map { ($0.lsn, $0.payload) })
            for (lsn, payload) in acknowledged where lsn > caughtUp {
                XCTAssertEqual(found[lsn], payload, "\(backend): acknowledged LSN \(lsn)")
            }
            try await reopened.close()
        }
    }

    /// A batch that needs more segments than maxLiveBytes can ever hold is not "retry later".
    func testABatchThatCanNeverFitMaxLiveBytesIsInvalidNotBacklogFull() throws {
        let directory = makeTemporaryDirectory(self)
        var configuration = testConfiguration()
        configuration.maxLiveBytes = 2 << 20
        let wal = try WAL.open(directory: directory, configuration: configuration)
        let batch = (0..<6).map { testPayload($0, length: 250_000) }
        XCTAssertThrowsError(try wal.append(contentsOf: batch)) { error in
            let error = error as! WALError
            XCTAssertEqual(error.kind, .invalidArgument)
            XCTAssertFalse(error.isRetryable)
            XCTAssertTrue(error.description.contains("maxLiveBytes"), error.description)
        }
        XCTAssertEqual(try wal.append(contentsOf: Array(batch.prefix(3))), 1...3, "a batch that fits goes in")
        try wal.close()
    }

    func testMaxLiveBytesBelowTwoSegmentsIsRefused() {
        var configuration = testConfiguration()
        configuration.maxLiveBytes = 1 << 20
        XCTAssertThrowsError(try WAL.open(directory: makeTemporaryDirectory(self), configuration: configuration)) { error in
            XCTAssertEqual((error as? WALError)?.kind, .invalidArgument)
            XCTAssertTrue("\(error)".contains("maxLiveBytes"), "\(error)")
        }
    }

    // MARK: Checkpoints

    func testABackwardsOrRepeatedCheckpointReturnsTheCheckpointInForce() async throws {
        let directory = makeTemporaryDirectory(self)
        let wal = try await WAL.open(directory: directory, configuration: testConfiguration())
        try await wal.append(contentsOf: (0..<20).map { testPayload($0, length: 10) })
        let first = try await wal.checkpoint(upTo: 12)
        let repeated = try await wal.checkpoint(upTo: 12)
        let backwards = try await wal.checkpoint(upTo: 5)
        XCTAssertEqual(first, 12)
        XCTAssertEqual(repeated, 12)
        XCTAssertEqual(backwards, 12, "a lower checkpoint changes nothing and says so")
        XCTAssertEqual(wal.checkpointLSN, 12)
        do {
            try await wal.checkpoint(upTo: 21)
            XCTFail("a checkpoint beyond the visible log succeeded")
        } catch let error as WALError {
            XCTAssertEqual(error.kind, .invalidArgument)
        }
        try await wal.close()
        do {
            try await wal.checkpoint(upTo: 20)
            XCTFail("a checkpoint on a closed WAL succeeded")
        } catch let error as WALError {
            XCTAssertEqual(error.kind, .closed)
        }
    }

    // MARK: What one WAL costs

    /// The README's per-WAL figures: at most 3 threads (flush, allocator, and the kernel's
    /// io_uring worker) and about 6 descriptors; the staging ring as configured.
    func testOneOpenWALCostsWhatTheREADMESays() throws {
        func count(_ path: String) -> Int { ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).count }
        let threadsBefore = count("/proc/self/task")
        let descriptorsBefore = count("/proc/self/fd")
        let directory = makeTemporaryDirectory(self)
        var configuration = testConfiguration()
        configuration.stagingBytes = configuration.minimumStagingBytes
        // Synchronous, so no Dispatch or pool thread is started by the test itself.
        let wal = try WAL.open(directory: directory, configuration: configuration)
        for index in 0..<40 { try wal.append(testPayload(index, length: 60_000)) } // crosses segments
        usleep(200_000)
        let threads = count("/proc/self/task") - threadsBefore
        let descriptors = count("/proc/self/fd") - descriptorsBefore
        XCTAssertLessThanOrEqual(threads, 3, "threads per WAL")
        XCTAssertLessThanOrEqual(descriptors, 8, "descriptors per WAL")
        XCTAssertEqual(wal.direct?.ring.capacity, configuration.minimumStagingBytes)
        try wal.close()
        XCTAssertLessThanOrEqual(count("/proc/self/fd"), descriptorsBefore, "close gave every descriptor back")
    }

    // MARK: Errors at open

    func testOutOfDescriptorsIsTooManyOpenFilesWithTheUlimitHint() {
        let directory = makeTemporaryDirectory(self)
        Syscall.setFaultHook { operation, path in operation == .open && path.hasSuffix(".lock") ? .fail(errno: EMFILE) : nil }
        XCTAssertThrowsError(try WAL.open(directory: directory, configuration: testConfiguration())) { error in
            let error = error as! WALError
            XCTAssertEqual(error.kind, .tooManyOpenFiles)
            XCTAssertTrue(error.description.contains("ulimit -n"), error.description)
        }
        Syscall.setFaultHook(nil)
    }

    /// Appends retried on a full disk fail fast and typed, and the failed preparations neither
    /// use up segment numbers nor log an error each (before: 622 numbers and 622 error lines in
    /// 20 s of retries).
    func testRetriesOnAFullDiskDoNotUseUpSegmentNumbers() async throws {
        let directory = makeTemporaryDirectory(self)
        let wal = try await WAL.open(directory: directory, configuration: testConfiguration(spares: 1))
        try await wal.append([0])
        Syscall.setFaultHook { operation, _ in operation == .fallocate ? .fail(errno: ENOSPC) : nil }
        var refusals = 0
        for index in 0..<200 {
            do {
                try await wal.append(testPayload(index, length: 200_000))
            } catch let error as WALError where error.kind == .outOfSpace {
                XCTAssertTrue(error.isRetryable)
                refusals += 1
            }
        }
        Syscall.setFaultHook(nil)
        XCTAssertGreaterThan(refusals, 150, "once the spares ran out, every append needing a segment was refused")
        for index in 0..<20 { try await wal.append(testPayload(index, length: 200_000)) }
        let highest = segmentFiles(directory).compactMap { Format.segmentSequence(fromFileName: String($0.split(separator: "/").last!)) }.max() ?? 0
        XCTAssertLessThan(highest, 12, "segment numbers were used up by failed preparations: \(highest)")
        try await wal.close()
    }

    /// A segment size the filesystem cannot hold with its spares is refused at open, naming
    /// both numbers, instead of every append failing later and using up a segment number.
    func testASegmentSizeTheFilesystemCannotHoldIsRefusedAtOpen() throws {
        guard getuid() == 0 else { throw XCTSkip("needs root to mount a small tmpfs") }
        let mountPoint = makeTemporaryDirectory(self)
        try FileManager.default.createDirectory(atPath: mountPoint, withIntermediateDirectories: true)
        guard (try? runCommand("/bin/mount", ["-t", "tmpfs", "-o", "size=8m", "tmpfs", mountPoint]))?.status == 0 else {
            throw XCTSkip("cannot mount tmpfs here")
        }
        defer { _ = try? runCommand("/bin/umount", ["-l", mountPoint]) }
        var configuration = testConfiguration(segmentSize: 4 << 20, spares: 2)
        XCTAssertThrowsError(try WAL.open(directory: mountPoint + "/wal", configuration: configuration)) { error in
            let error = error as! WALError
            XCTAssertEqual(error.kind, .outOfSpace)
            XCTAssertTrue(error.description.contains("\(12 << 20) bytes") && error.description.contains("free"), error.description)
        }
        configuration.segmentSize = 1 << 20
        let wal = try WAL.open(directory: mountPoint + "/wal", configuration: configuration)
        try wal.append([1])
        try wal.close()
    }
}

private final class SharedCount: Sendable { let value = Atomic<Int>(0) }
private final class SharedFlag: Sendable { let value = Atomic<Bool>(false) }

