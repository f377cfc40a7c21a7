#if canImport(Glibc)
import Glibc
#endif
import Synchronization
import XCTest
@testable import SignalWAL

/// The acknowledgement invariant, checked through the syscall funnel's hook: an appender under
/// `.groupCommit` never returns before a flush that covers its record has been issued, and the
/// durable LSN never passes what issued flushes could cover.
final class DurabilityInvariantTests: XCTestCase {
    override func tearDown() { Syscall.setFaultHook(nil) }

    final class Flushes: @unchecked Sendable {
        // @unchecked: every field is behind `lock`.
        private let lock = NSLock()
        private var issuedCover: LSN = 0
        private var count = 0
        /// Called from the hook right before the real fdatasync, with the highest LSN copied so
        /// far (an upper bound of what this flush covers). The flush runs after the hook returns.
        func issue(cover: LSN) { lock.lock(); issuedCover = max(issuedCover, cover); count += 1; lock.unlock() }
        var cover: LSN { lock.lock(); defer { lock.unlock() }; return issuedCover }
        var flushes: Int { lock.lock(); defer { lock.unlock() }; return count }
    }

    private func run(policy: DurabilityPolicy, backend: IOBackend, appenders: Int, perAppender: Int) throws -> (violations: Int, flushes: Flushes, wal: WAL) {
        let directory = makeTemporaryDirectory(self)
        let flushes = Flushes()
        let box = ConditionLock<WAL?>(nil)
        let wal = try WAL.open(directory: directory, configuration: testConfiguration(durability: policy, backend: backend))
        box.withLock { $0 = wal }
        Syscall.setFaultHook { operation, path in
            guard operation == .fdatasync, path.hasSuffix(".wal"), let wal = box.withLock({ $0 }) else { return nil }
            // Hold the flush open, so an implementation that acknowledged early would be caught.
            let cover = wal.nextLSN - 1
            usleep(20_000)
            flushes.issue(cover: cover)
            return nil
        }
        let violations = Atomic<Int>(0)
        DispatchQueue.concurrentPerform(iterations: appenders) { index in
            for record in 0..<perAppender {
                guard let lsn = try? wal.append(testPayload(index * 1000 + record, length: 100)) else {
                    violations.add(1, ordering: .relaxed)
                    continue
                }
                if policy == .groupCommit && lsn > flushes.cover { violations.add(1, ordering: .relaxed) }
                if wal.durableLSN > flushes.cover { violations.add(1, ordering: .relaxed) }
            }
        }
        return (violations.load(ordering: .relaxed), flushes, wal)
    }

    func testGroupCommitAcknowledgesOnlyAfterACoveringFlush() throws {
        for backend in IOBackend.allCases {
            let (violations, flushes, wal) = try run(policy: .groupCommit, backend: backend, appenders: 16, perAppender: 20)
            XCTAssertEqual(violations, 0, "\(backend)")
            XCTAssertGreaterThan(flushes.flushes, 0, "\(backend): the hook saw the flushes")
            XCTAssertLessThan(flushes.flushes, 16 * 20, "\(backend): flushes were shared")
            XCTAssertEqual(wal.durableLSN, 16 * 20)
            Syscall.setFaultHook(nil)
            try wal.close()
        }
    }

    func testIntervalPolicyNeverReportsMoreDurableThanFlushed() throws {
        for backend in IOBackend.allCases {
            let (violations, _, wal) = try run(policy: .interval(.milliseconds(5)), backend: backend, appenders: 8, perAppender: 50)
            XCTAssertEqual(violations, 0, "\(backend)")
            Syscall.setFaultHook(nil)
            try wal.close()
        }
    }

    /// The tests above check that *some* fdatasync ran; this one checks which files: no
    /// append returns before every file holding one of its records was synced after the
    /// append began.
    func testEveryFileHoldingARecordIsSyncedBeforeItsAppendReturns() throws {
        for backend in IOBackend.allCases {
            let directory = makeTemporaryDirectory(self)
            let wal = try WAL.open(directory: directory, configuration: testConfiguration(backend: backend))
            let clock = Atomic<Int>(0)
            let syncs = ConditionLock<[(path: String, at: Int)]>([])
            Syscall.setFaultHook { operation, path in
                if operation == .fdatasync, path.hasSuffix(".wal") {
                    syncs.withLock { $0.append((path, clock.add(1, ordering: .relaxed).newValue)) }
                }
                return nil
            }
            let appends = ConditionLock<[(range: ClosedRange<LSN>, began: Int, returned: Int)]>([])
            DispatchQueue.concurrentPerform(iterations: 8) { thread in
                var generator = SystemRandomNumberGenerator()
                for batch in 0..<(reducedIterations ? 15 : 40) {
                    let count = Int.random(in: 1...6, using: &generator)
                    let payloads = (0..<count).map { testPayload(thread * 10_000 + batch * 10 + $0, length: Int.random(in: 1...120_000, using: &generator)) }
                    let began = clock.add(1, ordering: .relaxed).newValue
                    guard let range = try? wal.append(contentsOf: payloads) else { continue }
                    let returned = clock.add(1, ordering: .relaxed).newValue
                    appends.withLock { $0.append((range, began, returned)) }
                }
            }
            Syscall.setFaultHook(nil)
            let segmentOf = Dictionary(readAll(wal).map { ($0.lsn, $0.segment) }, uniquingKeysWith: { a, _ in a })
            let log = syncs.withLock { $0 }
            var violations = 0
            for append in appends.withLock({ $0 }) {
                let files = Set(append.range.compactMap { segmentOf[$0] }.map { directory + "/" + Format.segmentFileName($0) })
                for file in files where !log.contains(where: { $0.path == file && $0.at > append.began && $0.at < append.returned }) {
                    violations += 1
                    if violations <= 3 { XCTFail("\(backend): LSNs \(append.range) returned before \(file) was synced") }
                }
            }
            XCTAssertEqual(violations, 0, "\(backend)")
            try wal.close()
        }
    }
}
