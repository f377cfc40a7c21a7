import XCTest
@testable import SignalDBAcceptor
@testable import SignalDBService
@testable import SignalDBIngest

final class ServiceTests: XCTestCase {
    func testByteSizes() {
        XCTAssertEqual(Settings.parseBytes("1GiB"), 1 << 30)
        XCTAssertEqual(Settings.parseBytes("64MiB"), 64 << 20)
        XCTAssertEqual(Settings.parseBytes(" 512 KiB "), 512 << 10)
        XCTAssertEqual(Settings.parseBytes("4096"), 4096)
        XCTAssertNil(Settings.parseBytes("lots"))
        XCTAssertNil(Settings.parseBytes("99999999999999GiB"))
    }

    func testSettingsFromTheEnvironmentNameTheVariableOnError() async throws {
        let ok = try await Settings.load(configFileSpec: AcceptorSettings.configFile,
                                         environment: ["ACCEPTOR_HTTP_ADDR": "0.0.0.0:1234", "ACCEPTOR_WAL_MAX_BYTES": "2GiB"])
        let settings = try AcceptorSettings(ok)
        XCTAssertEqual(settings.httpAddress, ListenAddress(host: "0.0.0.0", port: 1234))
        XCTAssertEqual(settings.walMaxBytes, 2 << 30)
        XCTAssertEqual(settings.grpcAddress.port, 4317)
        XCTAssertTrue(settings.walDirectoryIsDefault)
        for (name, value) in [("ACCEPTOR_HTTP_ADDR", "nope"), ("ACCEPTOR_WAL_MAX_BYTES", "1MiB"), ("ACCEPTOR_WAL_DURABILITY", "sometimes"),
                              ("ACCEPTOR_FORWARD_IN_FLIGHT", "0"), ("LOG_LEVEL", "loud")] {
            let s = try await Settings.load(configFileSpec: AcceptorSettings.configFile, environment: [name: value])
            XCTAssertThrowsError(try AcceptorSettings(s)) { error in
                XCTAssertTrue("\(error)".contains(name), "\(error) should name \(name)")
            }
        }
    }

    func testConfigFileUnderTheEnvironment() async throws {
        let path = NSTemporaryDirectory() + "acceptor-\(UInt64.random(in: 0...UInt64.max)).json"
        try #"{"acceptor": {"grpc": {"addr": "127.0.0.1:7777"}, "http": {"addr": "127.0.0.1:8888"}}}"#.write(toFile: path, atomically: true, encoding: .utf8)
        defer { unlink(path) }
        let s = try await Settings.load(configFileSpec: AcceptorSettings.configFile,
                                        environment: ["ACCEPTOR_CONFIG_FILE": path, "ACCEPTOR_HTTP_ADDR": "127.0.0.1:9999"])
        let settings = try AcceptorSettings(s)
        XCTAssertEqual(settings.grpcAddress.port, 7777)
        XCTAssertEqual(settings.httpAddress.port, 9999)
    }

    /// Done LSNs arriving in random order: the checkpoint is always the longest contiguous run.
    func testDoneTrackerCheckpointsOnlyTheContiguousPrefix() {
        for _ in 0..<200 {
            let start = LSNValue.random(in: 0...1000)
            let n = Int.random(in: 1...300)
            let tracker = DoneTracker(checkpoint: start)
            var order = Array((start + 1)...(start + UInt64(n))).shuffled()
            var done = Set<UInt64>()
            var checkpoint = start
            while !order.isEmpty {
                let chunk = Array(order.prefix(Int.random(in: 1...10)))
                order.removeFirst(chunk.count)
                tracker.markDone(chunk)
                done.formUnion(chunk)
                while done.contains(checkpoint + 1) { checkpoint += 1 }
                if let advanced = tracker.takeAdvance() { XCTAssertEqual(advanced, checkpoint) }
            }
            XCTAssertEqual(checkpoint, start + UInt64(n))
            tracker.markDone([start])  // at or below the checkpoint: ignored
            XCTAssertNil(tracker.takeAdvance())
        }
    }

    /// After a restore raised the LSN floor, the WAL reports a gap of 2^40 LSNs above the
    /// backlog: it must stay a range (expanding it would need terabytes) and be passed once
    /// the records before it are done; gaps mixed with records in random order too.
    func testDoneTrackerKeepsGapsWholeAndPassesThemInOrder() {
        let tracker = DoneTracker(checkpoint: 10)
        let floor: LSNValue = 20 + (1 << 40)
        tracker.markDone(21...(floor - 1))       // the gap, seen before the backlog is done
        XCTAssertNil(tracker.takeAdvance())
        tracker.markDone(Array(11...19))
        XCTAssertEqual(tracker.takeAdvance(), 19, "LSN 20 is not done yet")
        tracker.markDone([20])
        XCTAssertEqual(tracker.takeAdvance(), floor - 1)
        tracker.markDone([floor + 1])
        XCTAssertNil(tracker.takeAdvance())
        tracker.markDone([floor])
        XCTAssertEqual(tracker.takeAdvance(), floor + 1)
        for _ in 0..<200 {
            let start = LSNValue.random(in: 0...1000)
            let tracker = DoneTracker(checkpoint: start)
            // Cut start+1...start+n into pieces: some single records, some gaps.
            var pieces: [[LSNValue]] = [], gaps: [ClosedRange<LSNValue>] = []
            var next = start + 1
            for _ in 0..<Int.random(in: 1...40) {
                let length = LSNValue.random(in: 1...20)
                if Bool.random() { gaps.append(next...(next + length - 1)) } else { pieces.append(Array(next...(next + length - 1))) }
                next += length
            }
            var work: [Either] = pieces.map { .records($0) } + gaps.map { .gap($0) }
            work.shuffle()
            var done = Set<LSNValue>()
            var checkpoint = start
            for item in work {
                switch item {
                case .records(let lsns): tracker.markDone(lsns); done.formUnion(lsns)
                case .gap(let range): tracker.markDone(range); done.formUnion(range)
                }
                while done.contains(checkpoint + 1) { checkpoint += 1 }
                if let advanced = tracker.takeAdvance() { XCTAssertEqual(advanced, checkpoint) }
            }
            XCTAssertEqual(checkpoint, next - 1)
        }
    }

    enum Either { case records([LSNValue]), gap(ClosedRange<LSNValue>) }

    func testBackoffGrowsWithJitterAndStaysUnderItsCap() {
        for attempt in 1...40 {
            let d = Backoff.delay(attempt: attempt, max: .seconds(5))
            XCTAssertLessThanOrEqual(d, .seconds(5))
            let floor = min(0.1 * pow(2, Double(attempt - 1)), 5) * 0.5
            XCTAssertGreaterThanOrEqual(d, .milliseconds(Int64(floor * 1000) - 1))
        }
    }

    func testTenantRateLimitAdmitsItsRateThenRefusesWithRetryAfter() {
        let limiter = TenantLimiter(limits: .init(requestsPerSecond: 5, bytesPerSecond: 0, backlogBytes: 0))
        var admitted = 0
        for _ in 0..<20 {
            do { try limiter.admit(tenant: "a", bytes: 10); admitted += 1 } catch {
                XCTAssertEqual(error.httpStatus, 429)
                XCTAssertGreaterThanOrEqual(error.retryAfterSeconds ?? 0, 1)
            }
        }
        XCTAssertTrue((5...6).contains(admitted), "\(admitted)")
        XCTAssertNoThrow(try limiter.admit(tenant: "b", bytes: 10))
    }

    func testTenantBacklogChargesAndReleases() throws {
        let limiter = TenantLimiter(limits: .init(requestsPerSecond: 0, bytesPerSecond: 0, backlogBytes: 100))
        limiter.charge(lsn: 1, tenant: "a", bytes: 60)
        limiter.charge(lsn: 1, tenant: "a", bytes: 60)  // the same LSN again: once
        XCTAssertEqual(limiter.backlogBytes(tenant: "a"), 60)
        XCTAssertThrowsError(try limiter.admit(tenant: "a", bytes: 50))
        XCTAssertNoThrow(try limiter.admit(tenant: "b", bytes: 50))
        limiter.release(through: 1)
        XCTAssertEqual(limiter.backlogBytes(tenant: "a"), 0)
        XCTAssertNoThrow(try limiter.admit(tenant: "a", bytes: 50))
    }

    func testAPIKeys() throws {
        let keys = APIKeys(grants: ["k-12345678": .init(tenant: "acme", signals: [.traces])])
        XCTAssertEqual(try keys.authorize(authorization: "Bearer k-12345678", requestedTenant: nil, signal: .traces), "acme")
        XCTAssertEqual(try keys.authorize(authorization: "bearer k-12345678", requestedTenant: "acme", signal: .traces), "acme")
        for (auth, tenant, signal, status) in [(nil, nil, Signal.traces, 401), ("Bearer x", nil, .traces, 401),
                                               ("Bearer k-12345678", "other", .traces, 403), ("Bearer k-12345678", nil, .logs, 403)] {
            XCTAssertThrowsError(try keys.authorize(authorization: auth, requestedTenant: tenant, signal: signal)) {
                XCTAssertEqual(($0 as! IngestError).httpStatus, status)
            }
        }
    }
}

typealias LSNValue = UInt64

final class BudgetTests: XCTestCase {
    func testDecodeBudgetRefusesPastItsCapacityAndReleases() throws {
        let budget = DecodeBudget(bytes: 100)
        try budget.acquire(60)
        XCTAssertThrowsError(try budget.acquire(41)) { XCTAssertEqual(($0 as! IngestError).httpStatus, 503) }
        try budget.acquire(40)
        budget.release(60)
        try budget.acquire(60)
        budget.release(100)
        XCTAssertEqual(budget.inUse, 0)
    }

    /// Charges arriving out of LSN order, late ones after a release, and releases in steps:
    /// the backlog is always the sum of charged records above the release point.
    func testTenantBacklogWithRandomOrderAndLateCharges() {
        for _ in 0..<100 {
            let limiter = TenantLimiter(limits: .init(requestsPerSecond: 0, bytesPerSecond: 0, backlogBytes: 1 << 40))
            var expected: [UInt64: Int] = [:]
            var released: UInt64 = 0
            var lsns = Array(UInt64(1)...UInt64(200)).shuffled()
            while !lsns.isEmpty {
                let lsn = lsns.removeLast()
                limiter.charge(lsn: lsn, tenant: "t", bytes: Int(lsn))
                if lsn > released { expected[lsn] = Int(lsn) }
                if Int.random(in: 0...9) == 0 {
                    released += UInt64.random(in: 0...30)
                    limiter.release(through: released)
                    expected = expected.filter { $0.key > released }
                }
                XCTAssertEqual(limiter.backlogBytes(tenant: "t"), expected.values.reduce(0, +))
            }
        }
    }
}
