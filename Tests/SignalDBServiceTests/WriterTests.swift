import Foundation
import GRPCCore
import Logging
import OTLPProto
import SignalDBProto
import SignalWAL
import Synchronization
import XCTest
@testable import SignalDBIngest
@testable import SignalDBService
@testable import SignalDBStore
@testable import SignalDBWriter
import GRDB

/// The writer's pieces in process: the held-LSN sets, the writer record, the marks, the
/// Forward path against a real WAL (random batch shapes, out of order, retried, racing), the
/// SQLite store's contract, and the row mapping.
final class WriterTests: XCTestCase {
    var directory = ""

    override func setUp() {
        directory = NSTemporaryDirectory() + "writer-tests-\(UInt64.random(in: 0...UInt64.max))"
        try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    override func tearDown() {
        try? FileManager.default.removeItem(atPath: directory)
    }

    // MARK: LSNRanges

    func testLSNRangesAgreeWithASetOnRandomOperations() {
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<200 {
            var ranges = LSNRanges()
            var model = Set<UInt64>()
            for _ in 0..<Int.random(in: 1...300, using: &rng) {
                switch Int.random(in: 0..<10, using: &rng) {
                case 0:
                    let floor = UInt64.random(in: 0...120, using: &rng)
                    ranges.removeAll(atOrBelow: floor)
                    model = model.filter { $0 > floor }
                case 1:
                    let other = LSNRanges((0..<Int.random(in: 0...20, using: &rng)).map { _ in UInt64.random(in: 1...150, using: &rng) })
                    ranges.formUnion(other)
                    for r in other.ranges { model.formUnion(r) }
                default:
                    let lsn = UInt64.random(in: 1...150, using: &rng)
                    ranges.insert(lsn)
                    model.insert(lsn)
                }
            }
            for lsn in 0...151 as ClosedRange<UInt64> { XCTAssertEqual(ranges.contains(lsn), model.contains(lsn), "\(lsn) in \(ranges)") }
            XCTAssertEqual(ranges.count, UInt64(model.count))
            XCTAssertEqual(ranges.last, model.max())
            // Disjoint, sorted, never adjacent: the canonical form, which the text form keeps.
            for (a, b) in zip(ranges.ranges, ranges.ranges.dropFirst()) { XCTAssertLessThan(a.upperBound + 1, b.lowerBound) }
            XCTAssertEqual(LSNRanges(parsing: ranges.description), ranges)
        }
    }

    func testLSNRangesTextThatDoesNotParseIsRefused() {
        for text in ["x", "5-", "-5", "9-5", "1-3,2-8", "1-3,4", "3,1", "1,,2"] {
            XCTAssertNil(LSNRanges(parsing: text), text)
        }
        XCTAssertEqual(LSNRanges(parsing: ""), LSNRanges())
        XCTAssertEqual(LSNRanges(parsing: "5-9,12")?.count, 6)
    }

    // MARK: The writer record

    func testWriterRecordRoundTripsAndNamesWhatIsWrong() throws {
        let envelope = Envelope(signal: .logs, encoding: .json, receivedAtUnixNano: 42, tenant: "t", dataset: "d", itemCount: 3,
                                payload: [1, 2, 3]).encoded()
        let record = WriterRecord(acceptorID: "0b7c-acceptor", acceptorLSN: 9_000_000_001, envelope: envelope)
        let bytes = record.encoded()
        XCTAssertEqual(bytes.count, WriterRecord.headerSize(acceptorID: "0b7c-acceptor") + envelope.count)
        XCTAssertEqual(try WriterRecord(decoding: bytes), record)
        var badMagic = bytes
        badMagic[0] = 0x58
        var badVersion = bytes
        badVersion[4] = 9
        var badLength = bytes
        badLength[6] = 0xFF
        for (bytes, field) in [(Array(bytes.prefix(10)), "shorter"), (badMagic, "magic"), (badVersion, "version"), (badLength, "acceptor id length")] {
            XCTAssertThrowsError(try WriterRecord(decoding: bytes)) { XCTAssertTrue("\($0)".contains(field), "\($0)") }
        }
        XCTAssertTrue(WriterRecord.isValidAcceptorID(UUID().uuidString.lowercased()))
        for id in ["", "a b", String(repeating: "x", count: 129), "é"] { XCTAssertFalse(WriterRecord.isValidAcceptorID(id), id) }
    }

    // MARK: Marks

    func testABatchArrivingBeforeAnEarlierOneIsNotMistakenForHeld() {
        let marks = AcceptorMarks()
        // Batch 2 (LSNs 11...20) is appended before batch 1 (1...10) arrives.
        let second = marks.classify(acceptor: "a", settled: 0, lsns: Array(11...20))
        XCTAssertEqual(second.fresh.count, 10)
        marks.appended(acceptor: "a", (11...20).map { ($0, $0 + 100) })
        let first = marks.classify(acceptor: "a", settled: 0, lsns: Array(1...10))
        XCTAssertEqual(first.fresh.count, 10, "a high-water mark at 20 would have called these held and lost them")
        marks.appended(acceptor: "a", (1...10).map { ($0, $0 + 200) })
        // A retry of batch 2 is held, and its acknowledgement waits for writer LSN 120.
        let retry = marks.classify(acceptor: "a", settled: 0, lsns: Array(11...20))
        XCTAssertEqual(retry.fresh, [])
        XCTAssertEqual(retry.waitFor, 120)
        // Another acceptor's LSNs are its own.
        XCTAssertEqual(marks.classify(acceptor: "b", settled: 0, lsns: Array(1...20)).fresh.count, 20)
        // The acceptor checkpointed 15: LSNs up to it are forgotten, yet still held.
        let afterSettle = marks.classify(acceptor: "a", settled: 15, lsns: Array(1...21))
        XCTAssertEqual(afterSettle.fresh, [20], "only LSN 21 (index 20) is new")
        XCTAssertEqual(afterSettle.beyond, [])
    }

    /// The bound is a span above the floor, not a count: records far above a stuck one are
    /// refused, and the stuck one (just above the floor) always gets in, so the checkpoint can
    /// move again.
    func testRecordsFarAboveTheFloorWaitAndTheNextOneAlwaysGetsIn() {
        let marks = AcceptorMarks()
        let span = AcceptorMarks.maxSpanAboveFloor
        let far = marks.classify(acceptor: "a", settled: 10, lsns: [11, 10 + span, 11 + span, 12 + span])
        XCTAssertEqual(far.fresh, [0, 1])
        XCTAssertEqual(far.beyond, [2, 3])
        marks.appended(acceptor: "a", [(10 + span, 1)])
        XCTAssertEqual(marks.classify(acceptor: "a", settled: 10, lsns: [11]).fresh, [0], "the record above the floor is never refused")
        XCTAssertEqual(marks.classify(acceptor: "a", settled: 12, lsns: [12 + span]).fresh, [0], "in reach once the floor moved")
    }

    func testTheOrderingLockIsFIFOBoundedAndCancellable() async throws {
        let lock = AsyncLock(maxWaiters: 2)
        try await lock.lock()
        final class Order: Sendable { let list = Mutex<[Int]>([]) }
        let order = Order()
        let first = Task { try await lock.withLock { order.list.withLock { $0.append(1) } } }
        while lock.waiting < 1 { await Task.yield() }
        let second = Task { try await lock.withLock { order.list.withLock { $0.append(2) } } }
        while lock.waiting < 2 { await Task.yield() }
        do {
            try await lock.lock()
            XCTFail("a third waiter must be refused")
        } catch is AsyncLock.QueueFull {}
        let cancelled = Task { try await lock.lock() }
        cancelled.cancel()
        if case .success = await cancelled.result { lock.unlock() }  // it may have been refused as full instead: either way it holds nothing
        lock.unlock()
        try await first.value
        try await second.value
        XCTAssertEqual(order.list.withLock { $0 }, [1, 2])
        try await lock.lock()  // free again
        lock.unlock()
    }

    func testMarksRestoreFromTheStoreAndTheWAL() {
        let marks = AcceptorMarks()
        marks.restore(from: StoreProgress(writerLSN: 7, acceptors: ["a": AcceptorProgress(floor: 4, held: LSNRanges([6, 7]))]),
                      walRecords: [("a", 8), ("a", 3), ("c", 1)])
        let a = marks.classify(acceptor: "a", settled: 0, lsns: [1, 4, 5, 6, 7, 8, 9])
        XCTAssertEqual(a.fresh.map { [1, 4, 5, 6, 7, 8, 9][$0] }, [5, 9])
        XCTAssertEqual(a.waitFor, 0, "restored LSNs are durable: nothing to wait for")
        XCTAssertEqual(marks.classify(acceptor: "c", settled: 0, lsns: [1, 2]).fresh, [1])
        XCTAssertEqual(marks.floors()["a"], 4)
    }

    // MARK: The Forward path against a real WAL

    func openWAL(segmentSize: Int = 1 << 20) async throws -> WAL {
        var configuration = SignalWAL.Configuration()
        configuration.segmentSize = segmentSize
        configuration.maxRecordSize = 256 << 10
        return try await WAL.open(directory: directory + "/wal", configuration: configuration)
    }

    func forwardService(_ wal: WAL, marks: AcceptorMarks, maxBacklog: Int = 1 << 30) -> ForwardService {
        ForwardService(wal: wal, marks: marks, gate: AsyncLock(), maxBacklogBytes: maxBacklog, maxRecordBytes: 256 << 10,
                       internalKey: nil, health: Health(), metrics: WriterMetrics(), logger: Logger(label: "test"),
                       backpressure: BackpressureLog(logger: Logger(label: "test")))
    }

    static func envelope(_ lsn: LSN, size: Int) -> Data {
        Data(Envelope(signal: .logs, encoding: .protobuf, receivedAtUnixNano: lsn, tenant: "t", dataset: "d", itemCount: 1,
                      payload: [UInt8](repeating: UInt8(truncatingIfNeeded: lsn), count: size)).encoded())
    }

    static func request(_ acceptor: String, _ lsns: [LSN], settled: LSN = 0, sizes: (LSN) -> Int) -> Signaldb_Internal_V1_ForwardRequest {
        .with {
            $0.acceptorID = acceptor
            $0.settledLsn = settled
            $0.records = lsns.map { lsn in .with { $0.lsn = lsn; $0.envelope = envelope(lsn, size: sizes(lsn)) } }
        }
    }

    /// Random batch sizes and record sizes (some crossing 1 MiB segments), sent out of order,
    /// with retries racing their originals, from two acceptors: every LSN is acknowledged and
    /// the WAL holds each (acceptor, LSN) exactly once, with the bytes sent.
    func testRandomBatchesOutOfOrderRetriedAndRacingAreAppendedOnce() async throws {
        let wal = try await openWAL()
        let marks = AcceptorMarks()
        let service = forwardService(wal, marks: marks)
        var rng = SystemRandomNumberGenerator()
        let sizes: [LSN: Int] = Dictionary(uniqueKeysWithValues: (1...1500 as ClosedRange<LSN>).map {
            ($0, [10, 300, 4000, 70_000, 200_000].randomElement(using: &rng)!)
        })
        var batches: [(String, [LSN])] = []
        for acceptor in ["a", "b"] {
            var next: LSN = 1
            while next <= 1500 {
                let count = LSN(Int.random(in: 1...60, using: &rng))
                let lsns = Array(next...min(1500, next + count - 1))
                batches.append((acceptor, lsns))
                if Int.random(in: 0..<3, using: &rng) == 0 { batches.append((acceptor, lsns)) }  // a retry
                if Int.random(in: 0..<5, using: &rng) == 0 { batches.append((acceptor, Array(lsns.prefix(lsns.count / 2 + 1)))) }  // a partial resend
                next += count
            }
        }
        batches.shuffle(using: &rng)
        let acknowledged = try await withThrowingTaskGroup(of: (String, [LSN]).self) { group in
            var running = 0
            var out: [(String, [LSN])] = []
            for (acceptor, lsns) in batches {
                if running == 8, let done = try await group.next() { out.append(done); running -= 1 }
                let request = Self.request(acceptor, lsns) { sizes[$0]! }
                group.addTask {
                    let response = try await service.take(request)
                    return (acceptor, response.durableLsns)
                }
                running += 1
            }
            for try await done in group { out.append(done) }
            return out
        }
        for (acceptor, lsns) in batches {
            // Every call acknowledged every LSN it carried.
            XCTAssertTrue(acknowledged.contains { $0.0 == acceptor && Set($0.1).isSuperset(of: lsns) })
        }
        XCTAssertEqual(wal.durableLSN, wal.nextLSN - 1)
        var seen: [String: Set<LSN>] = [:]
        for record in try wal.records(from: 1) {
            let r = try WriterRecord(decoding: record.payload)
            XCTAssertTrue(seen[r.acceptorID, default: []].insert(r.acceptorLSN).inserted, "\(r.acceptorID) LSN \(r.acceptorLSN) appended twice")
            XCTAssertEqual(Data(r.envelope), Self.envelope(r.acceptorLSN, size: sizes[r.acceptorLSN]!))
        }
        XCTAssertEqual(seen["a"], Set(1...1500))
        XCTAssertEqual(seen["b"], Set(1...1500))
        try await wal.close()
    }

    func testASettledLSNAtOrAboveARecordIsRefused() async throws {
        let wal = try await openWAL()
        let service = forwardService(wal, marks: AcceptorMarks())
        let request = Self.request("a", [5, 6], settled: 5) { _ in 10 }
        let error = await assertForwardFails(service, request)
        XCTAssertEqual(error?.code, .invalidArgument)
        XCTAssertEqual(wal.nextLSN, 1, "nothing appended")
        try await wal.close()
    }

    func assertForwardFails(_ service: ForwardService, _ request: Signaldb_Internal_V1_ForwardRequest) async -> RPCError? {
        do {
            _ = try await service.forward(request: ServerRequest(metadata: [:], message: request), context: Self.context())
            XCTFail("expected an error")
            return nil
        } catch {
            return error as? RPCError
        }
    }

    static func context() -> ServerContext {
        ServerContext(descriptor: Signaldb_Internal_V1_Writer.Method.Forward.descriptor, remotePeer: "test", localPeer: "test",
                      cancellation: ServerContext.RPCCancellationHandle())
    }

    func testInvalidEnvelopesAreRejectedAndTheRestTaken() async throws {
        let wal = try await openWAL()
        let service = forwardService(wal, marks: AcceptorMarks())
        var request = Self.request("a", [1, 2, 3]) { _ in 10 }
        request.records[1].envelope = Data("not an envelope, though long enough".utf8)
        request.records.append(.with { $0.lsn = 0; $0.envelope = Self.envelope(0, size: 1) })
        let response = try await service.take(request)
        XCTAssertEqual(response.durableLsns, [1, 3])
        XCTAssertEqual(response.rejected.map(\.lsn).sorted(), [0, 2])
        XCTAssertTrue(response.rejected.first { $0.lsn == 2 }!.reason.contains("magic"))
        XCTAssertEqual(wal.nextLSN - 1, 2)
        try await wal.close()
    }

    func testBacklogAtItsBoundIsUnavailableWithRetryInfoAndTakesNothing() async throws {
        let wal = try await openWAL()
        let service = forwardService(wal, marks: AcceptorMarks(), maxBacklog: 1)  // any backlog is too much
        _ = try await service.take(Self.request("a", [1]) { _ in 10 })  // the first segment opens
        do {
            _ = try await service.take(Self.request("a", [2]) { _ in 10 })
            XCTFail("expected UNAVAILABLE")
        } catch let error as RPCError {
            XCTAssertEqual(error.code, .unavailable)
            XCTAssertTrue(error.message.contains("WRITER_WAL_MAX_BYTES"))
        }
        XCTAssertEqual(wal.nextLSN - 1, 1)
        // Resent after the backlog drains, it is taken.
        let retry = forwardService(wal, marks: AcceptorMarks())
        let taken = try await retry.take(Self.request("a", [2]) { _ in 10 })
        XCTAssertEqual(taken.durableLsns, [2])
        try await wal.close()
    }

    // MARK: The SQLite store

    static func spanRow(_ i: Int, tenant: String = "t") -> SpanRow {
        SpanRow(tenant: tenant, dataset: "d", traceID: String(format: "%032x", i / 3), spanID: String(format: "%016x", i), parentSpanID: nil,
                traceState: "", name: "s\(i)", kind: 2, startTimeUnixNano: UInt64(i), endTimeUnixNano: UInt64(i + 1), statusCode: 0,
                statusMessage: "", serviceName: "svc", scopeName: "sc", scopeVersion: "", attributes: "{}", resourceAttributes: "{}",
                events: "[]", links: "[]", receivedAtUnixNano: 1)
    }

    /// A store whose every commit fails, counting the attempts.
    final class FailingStore: Store {
        let commits = Atomic<Int>(0)
        func progress() throws -> StoreProgress { .empty }
        func commit(_ rows: StoreRows, progress: StoreProgress) throws -> CommitOutcome {
            commits.add(1, ordering: .relaxed)
            throw CocoaError(.fileWriteUnknown)
        }
        func close() throws {}
    }

    /// S4's retries end when the WAL fails: with the WAL and the store on one dead disk the
    /// committer retried the store forever, a writer that took nothing and never exited (the
    /// pipeline's power-cut soak). The batch is not checkpointed, so the next start stores it.
    func testAFailedWALEndsTheCommitterWhileTheStoreFails() async throws {
        let wal = try await openWAL()
        defer { Syscall.setFaultHook(nil) }
        _ = try await wal.append(WriterRecord(acceptorID: "a", acceptorLSN: 1, envelope: Array(Self.envelope(1, size: 100))).encoded())
        let store = FailingStore()
        let committer = StoreCommitter(wal: wal, store: store, marks: AcceptorMarks(),
                                       batching: CommitBatching(rows: 100, records: 10, interval: .milliseconds(10), backoffMax: .milliseconds(200)),
                                       deadLetters: DeadLetters(walDirectory: directory + "/wal", logger: Logger(label: "test")),
                                       health: Health(), metrics: WriterMetrics(), maxBacklogBytes: 1 << 30,
                                       committed: 0, progress: .empty, logger: Logger(label: "test"))
        let run = Task { try await committer.run() }
        let deadline = ContinuousClock.now + .seconds(30)
        while store.commits.load(ordering: .relaxed) < 2 && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
        XCTAssertGreaterThanOrEqual(store.commits.load(ordering: .relaxed), 2, "the store's commit was retried")
        Syscall.setFaultHook { operation, _ in operation == .fdatasync || operation == .pwrite ? .fail(errno: EIO) : nil }
        do {
            _ = try await wal.append([1, 2, 3])
            XCTFail("the append after EIO must fail")
        } catch {}
        XCTAssertNotNil(wal.failure)
        let ended = Task {
            try await Task.sleep(for: .seconds(20))
            run.cancel()
        }
        do {
            try await run.value
            XCTFail("the committer returned instead of throwing the WAL's failure")
        } catch let error as WALError {
            XCTAssertEqual(error, wal.failure, "it ends with the WAL's failure")
        } catch {
            XCTFail("the committer ended with \(error), not the WAL's failure (cancelled after 20 s: it kept retrying the store)")
        }
        ended.cancel()
        Syscall.setFaultHook(nil)
        try? await wal.close()
    }

    func testStoreCommitsRowsAndProgressTogetherAndSkipsRepeatedSpans() throws {
        let path = directory + "/s.sqlite"
        var store: SQLiteStore? = try SQLiteStore(path: path)
        XCTAssertEqual(try store!.progress(), .empty)
        var rows = StoreRows()
        rows.spans = (0..<10).map { Self.spanRow($0) }
        rows.spans.append(Self.spanRow(3))  // a client's resend within the batch
        rows.spans.append(Self.spanRow(3, tenant: "other"))  // same ids, another tenant: a different span
        let progress = StoreProgress(writerLSN: 5, acceptors: ["a": AcceptorProgress(floor: 2, held: LSNRanges([4, 5, 9]))])
        let outcome = try store!.commit(rows, progress: progress)
        XCTAssertEqual(outcome, CommitOutcome(inserted: 11, duplicateSpans: 1))
        // The next batch repeats spans already stored.
        var again = StoreRows()
        again.spans = (8..<12).map { Self.spanRow($0) }
        XCTAssertEqual(try store!.commit(again, progress: StoreProgress(writerLSN: 6, acceptors: progress.acceptors)),
                       CommitOutcome(inserted: 2, duplicateSpans: 2))
        try store!.close()
        store = try SQLiteStore(path: path)
        let reopened = try store!.progress()
        XCTAssertEqual(reopened.writerLSN, 6)
        XCTAssertEqual(reopened.acceptors["a"], AcceptorProgress(floor: 2, held: LSNRanges([4, 5, 9])))
        XCTAssertEqual(reopened.acceptors["a"]?.highWater, 9)
        try store!.close()
    }

    /// Contract 5: a retry of a commit that landed inserts nothing; a commit behind the stored
    /// progress is a conflict (another writer on the database), not a silent skip.
    func testARetriedCommitInsertsNothingAndOneBehindTheStoreIsAConflict() throws {
        let store = try SQLiteStore(path: directory + "/retry.sqlite")
        var rows = StoreRows()
        rows.logs = [LogRow(tenant: "t", dataset: "d", timeUnixNano: 1, observedTimeUnixNano: 1, severityNumber: 9, severityText: "INFO",
                            body: "\"a\"", traceID: nil, spanID: nil, eventName: "", serviceName: nil, scopeName: "", attributes: "{}",
                            resourceAttributes: "{}", receivedAtUnixNano: 1)]
        let progress = StoreProgress(writerLSN: 10, acceptors: [:])
        XCTAssertEqual(try store.commit(rows, progress: progress).inserted, 1)
        XCTAssertEqual(try store.commit(rows, progress: progress).inserted, 0, "the same commit again: a retry")
        XCTAssertThrowsError(try store.commit(rows, progress: StoreProgress(writerLSN: 5, acceptors: [:]))) {
            XCTAssertEqual(($0 as? StoreCommitError)?.kind, .conflict, "\($0)")
        }
        // An empty commit may lower the progress: start-up's reconciling does.
        XCTAssertEqual(try store.commit(StoreRows(), progress: StoreProgress(writerLSN: 3, acceptors: [:])).inserted, 0)
        XCTAssertEqual(try store.commit(rows, progress: StoreProgress(writerLSN: 4, acceptors: [:])).inserted, 1)
        XCTAssertEqual(try store.queue.read { try Int.fetchOne($0, sql: "SELECT COUNT(*) FROM logs") }, 2)
        try store.close()
    }

    /// Contract 1 and 4: a commit that fails (another connection holds the write lock: the
    /// SQLITE_BUSY of a store outage) stores neither rows nor progress, and the same commit
    /// succeeds once the lock is gone.
    func testABusyStoreFailsTheWholeCommitAndTheRetrySucceeds() throws {
        let path = directory + "/busy.sqlite"
        let store = try SQLiteStore(path: path, busyTimeout: 0.05)
        // Another program on the same file (not a writer: a second writer is refused, below).
        let blocker = try DatabaseQueue(path: path)
        var rows = StoreRows()
        rows.spans = (0..<5).map { Self.spanRow($0) }
        let progress = StoreProgress(writerLSN: 3, acceptors: [:])
        XCTAssertThrowsError(try SQLiteStore(path: path)) { XCTAssertTrue("\($0)".contains("in use by another signaldb-writer"), "\($0)") }
        try blocker.writeWithoutTransaction { db in
            try db.execute(sql: "BEGIN EXCLUSIVE")
            XCTAssertThrowsError(try store.commit(rows, progress: progress)) { XCTAssertEqual(StoreCommitter.reason($0), "busy", "\($0)") }
            try db.execute(sql: "ROLLBACK")
        }
        XCTAssertEqual(try store.progress().writerLSN, 0)
        XCTAssertEqual(try store.commit(rows, progress: progress).inserted, 5)
        XCTAssertEqual(try store.progress().writerLSN, 3)
        try blocker.close()
        try store.close()
    }

    func testAStoreWithANewerSchemaIsRefusedWithTheFix() throws {
        let path = directory + "/new.sqlite"
        let store = try SQLiteStore(path: path)
        try store.queue.writeWithoutTransaction { try $0.execute(sql: "PRAGMA user_version = 99") }
        try store.close()
        XCTAssertThrowsError(try SQLiteStore(path: path)) { XCTAssertTrue("\($0)".contains("newer"), "\($0)") }
        XCTAssertThrowsError(try SQLiteStore(path: directory + "/missing/dir/x.sqlite")) { XCTAssertTrue("\($0)".contains("writable"), "\($0)") }
    }

    // MARK: Row mapping

    func testEverySignalMapsToRowsWithItsFields() throws {
        typealias KV = Opentelemetry_Proto_Common_V1_KeyValue
        func kv(_ key: String, _ value: Opentelemetry_Proto_Common_V1_AnyValue.OneOf_Value) -> KV {
            .with { $0.key = key; $0.value = .with { $0.value = value } }
        }
        let resource = Opentelemetry_Proto_Resource_V1_Resource.with { $0.attributes = [kv("service.name", .stringValue("checkout"))] }
        let traces = Opentelemetry_Proto_Collector_Trace_V1_ExportTraceServiceRequest.with {
            $0.resourceSpans = [.with {
                $0.resource = resource
                $0.scopeSpans = [.with {
                    $0.scope = .with { $0.name = "lib"; $0.version = "1.2" }
                    $0.spans = [.with {
                        $0.traceID = Data((1...16).map { UInt8($0) })
                        $0.spanID = Data((1...8).map { UInt8($0) })
                        $0.parentSpanID = Data(repeating: 0xAB, count: 8)
                        $0.name = "GET /\"x\"\n"
                        $0.kind = .server
                        $0.startTimeUnixNano = 10
                        $0.endTimeUnixNano = 20
                        $0.status = .with { $0.code = .error; $0.message = "boom" }
                        $0.attributes = [kv("n", .intValue(-7)), kv("f", .doubleValue(.nan)), kv("b", .bytesValue(Data([0xFF]))),
                                         kv("l", .arrayValue(.with { $0.values = [.with { $0.value = .boolValue(true) }] })),
                                         kv("n", .intValue(8))]
                        $0.events = [.with { $0.name = "e"; $0.timeUnixNano = 15 }]
                        $0.links = [.with { $0.traceID = Data(repeating: 1, count: 16); $0.spanID = Data(repeating: 2, count: 8) }]
                    }]
                }]
            }]
        }
        let envelope = Envelope(signal: .traces, encoding: .protobuf, receivedAtUnixNano: 99, tenant: "acme", dataset: "prod", itemCount: 1,
                                payload: try traces.serializedBytes() as [UInt8])
        let span = try XCTUnwrap(RowMapper.rows(for: envelope).spans.first)
        XCTAssertEqual(span.traceID, "0102030405060708090a0b0c0d0e0f10")
        XCTAssertEqual(span.spanID, "0102030405060708")
        XCTAssertEqual(span.parentSpanID, "abababababababab")
        XCTAssertEqual(span.serviceName, "checkout")
        XCTAssertEqual(span.scopeName, "lib")
        XCTAssertEqual(span.kind, 2)
        XCTAssertEqual(span.statusCode, 2)
        XCTAssertEqual(span.tenant, "acme")
        XCTAssertEqual(span.dataset, "prod")
        XCTAssertEqual(span.receivedAtUnixNano, 99)
        let attributes = try JSONSerialization.jsonObject(with: Data(span.attributes.utf8)) as! [String: Any]
        XCTAssertEqual(attributes["n"] as? Int, 8, "the last value of a repeated key wins")
        XCTAssertEqual(attributes["f"] as? String, "NaN")
        XCTAssertEqual(attributes["b"] as? String, "/w==")
        XCTAssertEqual(attributes["l"] as? [Bool], [true])
        let events = try JSONSerialization.jsonObject(with: Data(span.events.utf8)) as? [[String: Any]]
        XCTAssertEqual(events?.first?["name"] as? String, "e")
        let links = try JSONSerialization.jsonObject(with: Data(span.links.utf8)) as! [[String: Any]]
        XCTAssertEqual(links.first?["span_id"] as? String, "0202020202020202")

        let metrics = Opentelemetry_Proto_Collector_Metrics_V1_ExportMetricsServiceRequest.with {
            $0.resourceMetrics = [.with {
                $0.resource = resource
                $0.scopeMetrics = [.with {
                    $0.metrics = [
                        .with { $0.name = "g"; $0.unit = "1"; $0.gauge = .with { $0.dataPoints = [.with { $0.asInt = 5; $0.timeUnixNano = 3 }] } },
                        .with { $0.name = "c"; $0.sum = .with { $0.isMonotonic = true; $0.aggregationTemporality = .cumulative; $0.dataPoints = [.with { $0.asDouble = 1.5 }] } },
                        .with { $0.name = "h"; $0.histogram = .with { $0.dataPoints = [.with { $0.count = 3; $0.sum = 6; $0.bucketCounts = [1, 2]; $0.explicitBounds = [5] }] } },
                        .with { $0.name = "e"; $0.exponentialHistogram = .with { $0.dataPoints = [.with { $0.count = 2; $0.scale = 3; $0.positive = .with { $0.offset = 1; $0.bucketCounts = [2] } }] } },
                        .with { $0.name = "s"; $0.summary = .with { $0.dataPoints = [.with { $0.count = 4; $0.sum = 8; $0.quantileValues = [.with { $0.quantile = 0.5; $0.value = 2 }] }] } },
                    ]
                }]
            }]
        }
        let points = try RowMapper.rows(for: Envelope(signal: .metrics, encoding: .protobuf, receivedAtUnixNano: 1, tenant: "t", dataset: "d",
                                                      itemCount: 5, payload: try metrics.serializedBytes() as [UInt8])).metricPoints
        XCTAssertEqual(points.map { $0.type }, ["gauge", "sum", "histogram", "exponential_histogram", "summary"])
        XCTAssertEqual(points[0].intValue, 5)
        XCTAssertEqual(points[0].value, 5)
        XCTAssertEqual(points[1].value, 1.5)
        XCTAssertTrue(points[1].isMonotonic)
        XCTAssertEqual(points[1].aggregationTemporality, 2)
        for point in points[2...] {
            let parsed = try JSONSerialization.jsonObject(with: Data(point.histogram!.utf8)) as? [String: Any]
            XCTAssertNotNil(parsed, point.histogram!)
        }
        let histogram = try JSONSerialization.jsonObject(with: Data(points[2].histogram!.utf8)) as! [String: Any]
        XCTAssertEqual(histogram["bucket_counts"] as? [Int], [1, 2])

        let logs = Opentelemetry_Proto_Collector_Logs_V1_ExportLogsServiceRequest.with {
            $0.resourceLogs = [.with {
                $0.resource = resource
                $0.scopeLogs = [.with {
                    $0.logRecords = [.with {
                        $0.timeUnixNano = 7
                        $0.severityNumber = .warn
                        $0.severityText = "WARN"
                        $0.body = .with { $0.value = .kvlistValue(.with { $0.values = [kv("msg", .stringValue("hi"))] }) }
                        $0.traceID = Data(repeating: 3, count: 16)
                    }]
                }]
            }]
        }
        let log = try XCTUnwrap(RowMapper.rows(for: Envelope(signal: .logs, encoding: .protobuf, receivedAtUnixNano: 1, tenant: "t", dataset: "d",
                                                             itemCount: 1, payload: try logs.serializedBytes() as [UInt8])).logs.first)
        XCTAssertEqual(log.body, #"{"msg":"hi"}"#)
        XCTAssertEqual(log.traceID, String(repeating: "03", count: 16))
        XCTAssertNil(log.spanID)
        XCTAssertEqual(log.severityNumber, 13)

        // A payload that is not the envelope's signal can never become rows.
        XCTAssertThrowsError(try RowMapper.rows(for: Envelope(signal: .traces, encoding: .protobuf, receivedAtUnixNano: 1, tenant: "t",
                                                              dataset: "d", itemCount: 1, payload: [0xFF, 0xFF, 0xFF])))
    }
}
