#if canImport(Glibc)
import Glibc
#endif
import Synchronization
import XCTest
@testable import SignalWAL

final class AppendReadTests: XCTestCase {
    /// Mostly small records, some up to 4 KiB, a few up to the maximum, plus 0 and the maximum
    /// themselves: many segment boundaries without writing gigabytes.
    private func recordLength(_ index: Int, max: Int) -> Int {
        if index == 10 { return 0 }
        if index == 11 { return max }
        var state = UInt64(index) &* 0x2545_F491_4F6C_DD1D &+ 7
        state ^= state >> 29
        switch state % 100 {
        case 0: return Int(state >> 8) % (max + 1)
        case 1...9: return Int(state >> 8) % 4097
        default: return Int(state >> 8) % 257
        }
    }

    func testHundredThousandRecordsOfRandomSizesRoundTripAcrossSegmentsAndReopen() throws {
        for backend in IOBackend.allCases { try roundTrip(backend: backend) }
    }

    private func roundTrip(backend: IOBackend) throws {
        let directory = makeTemporaryDirectory(self)
        let configuration = testConfiguration(backend: backend)
        let max = configuration.effectiveMaxRecordSize
        // 30,000 under the sanitizers: still dozens of segments, at a third of the time.
        let total = reducedIterations ? 30_000 : 100_000
        var lengths: [Int] = []
        do {
            let wal = try WAL.open(directory: directory, configuration: configuration)
            var index = 0
            while index < total {
                let batch = (index..<min(total, index + 100)).map { testPayload($0, length: recordLength($0, max: max)) }
                let range = try wal.append(contentsOf: batch)
                XCTAssertEqual(range, LSN(index + 1)...LSN(index + batch.count))
                lengths += batch.map(\.count)
                index += batch.count
            }
            XCTAssertEqual(wal.durableLSN, LSN(total))
            try verify(wal, total: total, lengths: lengths)
            try wal.close()
        }
        XCTAssertGreaterThan(segmentFiles(directory).count, 20, "the test should cross many segment boundaries")
        XCTAssertTrue(lengths.contains(0) && lengths.contains(max))
        let reopened = try WAL.open(directory: directory, configuration: configuration)
        defer { try? reopened.close() }
        XCTAssertTrue(reopened.recoveryReport.isClean || reopened.recoveryReport.checkpointProblem == "missing")
        XCTAssertEqual(reopened.recoveryReport.recordsRecovered, total)
        XCTAssertEqual(reopened.nextLSN, LSN(total + 1))
        try verify(reopened, total: total, lengths: lengths)
        XCTAssertEqual(try reopened.append([1, 2, 3]), LSN(total + 1), "\(backend)")
    }

    private func verify(_ wal: WAL, total: Int, lengths: [Int]) throws {
        var expected: LSN = 1
        for record in try wal.records(from: 1) {
            XCTAssertEqual(record.lsn, expected)
            let index = Int(record.lsn) - 1
            if record.payload.count != lengths[index] || record.payload != testPayload(index, length: lengths[index]) {
                XCTFail("record \(record.lsn) differs")
                return
            }
            expected += 1
        }
        XCTAssertEqual(expected, LSN(total + 1))
    }

    func testSixtyFourConcurrentAppendersEachRecordOnceInLSNOrder() throws {
        for backend in IOBackend.allCases { try concurrentAppenders(backend: backend) }
    }

    private func concurrentAppenders(backend: IOBackend) throws {
        let directory = makeTemporaryDirectory(self)
        let wal = try WAL.open(directory: directory, configuration: testConfiguration(backend: backend))
        defer { try? wal.close() }
        let appenders = 64
        let perAppender = 300
        let collected = ConditionLock([LSN](repeating: 0, count: appenders * perAppender))
        DispatchQueue.concurrentPerform(iterations: appenders) { appender in
            for index in 0..<perAppender {
                let id = appender * perAppender + index
                let lsn = (try? wal.append(testPayload(id, length: 16 + id % 300))) ?? 0
                collected.withLock { $0[id] = lsn }
            }
        }
        let results = collected.withLock { $0 }
        XCTAssertFalse(results.contains(0), "every append succeeded")
        XCTAssertEqual(Set(results).count, appenders * perAppender, "LSNs are unique")
        let lsnToID = Dictionary(uniqueKeysWithValues: results.enumerated().map { ($1, $0) })
        var previous: LSN = 0
        var seen = 0
        for record in try wal.records(from: 1) {
            XCTAssertGreaterThan(record.lsn, previous, "LSNs increase in file order")
            previous = record.lsn
            guard let id = lsnToID[record.lsn] else { XCTFail("record \(record.lsn) was never appended"); continue }
            XCTAssertEqual(record.payload, testPayload(id, length: 16 + id % 300))
            seen += 1
        }
        XCTAssertEqual(seen, appenders * perAppender)
        XCTAssertLessThan(wal.flushCount, appenders * perAppender, "group commit shared flushes")
    }

    func testConcurrentAsyncAppendersAreAllDurable() async throws {
        let directory = makeTemporaryDirectory(self)
        let wal = try await WAL.open(directory: directory, configuration: testConfiguration())
        let lsns = try await withThrowingTaskGroup(of: LSN.self) { group in
            for task in 0..<200 { group.addTask { try await wal.append(testPayload(task, length: 100)) } }
            return try await group.reduce(into: [LSN]()) { $0.append($1) }
        }
        XCTAssertEqual(Set(lsns).count, 200)
        XCTAssertGreaterThanOrEqual(wal.durableLSN, lsns.max()!)
        try await wal.close()
    }

    func testTailingReaderSeesNewRecordsOnlyOnceDurable() async throws {
        for backend in IOBackend.allCases { try await tailingReader(backend: backend) }
    }

    private func tailingReader(backend: IOBackend) async throws {
        let directory = makeTemporaryDirectory(self)
        let wal = try await WAL.open(directory: directory, configuration: testConfiguration(backend: backend))
        let count = 500
        let reader = Task { () -> [LSN] in
            var seen: [LSN] = []
            for try await record in wal.tail(from: 1) {
                // A visible record must already be durable.
                XCTAssertLessThanOrEqual(record.lsn, wal.durableLSN)
                seen.append(record.lsn)
                if seen.count == count { break }
            }
            return seen
        }
        for index in 0..<count {
            try await wal.append(testPayload(index, length: 64))
        }
        let seen = try await reader.value
        XCTAssertEqual(seen, (1...LSN(count)).map { $0 })
        try await wal.close()
    }

    func testSynchronousReaderStopsAtTheEndAndResumesLater() throws {
        let directory = makeTemporaryDirectory(self)
        let wal = try WAL.open(directory: directory, configuration: testConfiguration())
        defer { try? wal.close() }
        try wal.append(contentsOf: [[1], [2], [3]])
        var iterator = try wal.records(from: 2).makeIterator()
        XCTAssertEqual(iterator.next()?.lsn, 2)
        XCTAssertEqual(iterator.next()?.lsn, 3)
        XCTAssertNil(iterator.next())
        try wal.append([4])
        XCTAssertEqual(iterator.next()?.payload, [4])
    }

    func testIntervalAndNonePoliciesAcknowledgeAfterCopyAndPersistOnClose() throws {
        for policy in [DurabilityPolicy.interval(.milliseconds(5)), .none] {
            for backend in IOBackend.allCases {
                let directory = makeTemporaryDirectory(self)
                let wal = try WAL.open(directory: directory, configuration: testConfiguration(durability: policy, backend: backend))
                for index in 0..<1000 { try wal.append(testPayload(index, length: 50)) }
                try wal.close()
                let reopened = try WAL.open(directory: directory, configuration: testConfiguration())
                XCTAssertEqual(readAll(reopened).map(\.payload), (0..<1000).map { testPayload($0, length: 50) }, "\(policy) \(backend)")
                try reopened.close()
            }
        }
    }

    /// The io_uring backend stages records in a ring of 16 MiB or more: writing several times
    /// that, in records up to the maximum size, must wrap it many times, make appenders wait
    /// for room, and lose or garble nothing.
    func testStagingRingWrapsManyTimesAndEveryRecordSurvives() throws {
        let directory = makeTemporaryDirectory(self)
        let configuration = testConfiguration(durability: .interval(.milliseconds(50)), backend: .uring)
        let max = configuration.effectiveMaxRecordSize
        var lengths: [Int] = []
        do {
            let wal = try WAL.open(directory: directory, configuration: configuration)
            var bytes = 0
            var index = 0
            while bytes < 80 << 20 {
                let length = index % 7 == 0 ? max : 1 + (index * 7919) % 9000
                try wal.append(testPayload(index, length: length))
                lengths.append(length)
                bytes += length
                index += 1
            }
            try wal.close()
        }
        let reopened = try WAL.open(directory: directory, configuration: configuration)
        defer { try? reopened.close() }
        XCTAssertEqual(reopened.recoveryReport.recordsRecovered, lengths.count)
        try verify(reopened, total: lengths.count, lengths: lengths)
    }

    /// Reopening lands the next record in the middle of a block the first session wrote; the
    /// io_uring backend reloads that block into staging so its rewrite keeps the old records.
    func testAppendsAfterReopenKeepThePartlyFilledBlock() throws {
        let directory = makeTemporaryDirectory(self)
        var lengths: [Int] = []
        for session in 0..<6 {
            let backend: IOBackend = session % 3 == 2 ? .mmap : .uring
            let wal = try WAL.open(directory: directory, configuration: testConfiguration(backend: backend))
            for _ in 0..<(1 + session * 3) {
                let index = lengths.count
                let length = 1 + (index * 613) % 700
                XCTAssertEqual(try wal.append(testPayload(index, length: length)), LSN(index + 1))
                lengths.append(length)
            }
            try wal.close()
        }
        let wal = try WAL.open(directory: directory, configuration: testConfiguration())
        defer { try? wal.close() }
        XCTAssertTrue(wal.recoveryReport.recordsLost == 0, "\(wal.recoveryReport.damage)")
        try verify(wal, total: lengths.count, lengths: lengths)
    }

    func testIntervalPolicyFlushesWithinTheInterval() throws {
        let directory = makeTemporaryDirectory(self)
        let wal = try WAL.open(directory: directory, configuration: testConfiguration(durability: .interval(.milliseconds(20))))
        defer { try? wal.close() }
        let lsn = try wal.append([9, 9])
        let deadline = ContinuousClock.now + .seconds(5)
        while wal.durableLSN < lsn && ContinuousClock.now < deadline { usleep(2000) }
        XCTAssertGreaterThanOrEqual(wal.durableLSN, lsn)
    }
}
