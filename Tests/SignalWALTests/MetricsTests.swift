#if canImport(Glibc)
import Glibc
#endif
import MetricsTestKit
import XCTest
@testable import SignalWAL

final class MetricsTests: XCTestCase {
    override func tearDown() { Syscall.setFaultHook(nil) }

    func testAppendsFlushesSegmentsAndOutOfSpaceAreCounted() throws {
        let directory = makeTemporaryDirectory(self)
        let metrics = TestMetrics()
        var configuration = testConfiguration(spares: 1)
        configuration.metricsFactory = metrics
        let wal = try WAL.open(directory: directory, configuration: configuration)
        let payload = [UInt8](repeating: 1, count: 100_000)
        for _ in 0..<25 { try wal.append(payload) } // more than two 1 MiB segments
        let dimensions = [("wal", directory)]
        XCTAssertEqual(try metrics.expectCounter("signalwal_records_appended_total", dimensions).totalValue, 25)
        XCTAssertEqual(try metrics.expectCounter("signalwal_bytes_appended_total", dimensions).totalValue, 25 * 100_000)
        let flushes = try metrics.expectCounter("signalwal_flushes_total", dimensions).totalValue
        XCTAssertEqual(Int(flushes), wal.flushCount)
        XCTAssertGreaterThan(flushes, 0)
        XCTAssertEqual(try metrics.expectTimer("signalwal_flush_duration_seconds", dimensions).values.count, Int(flushes))
        XCTAssertEqual(try metrics.expectRecorder("signalwal_records_per_flush", dimensions).values.reduce(0, +), 25)
        XCTAssertEqual(try metrics.expectGauge("signalwal_durable_lag_records", dimensions).lastValue, 0)
        XCTAssertGreaterThanOrEqual(try metrics.expectCounter("signalwal_segments_allocated_total", dimensions).totalValue, 3)

        Syscall.setFaultHook { operation, _ in operation == .fallocate ? .fail(errno: ENOSPC) : nil }
        var refused = 0
        for _ in 0..<30 {
            do { try wal.append(payload) } catch let error as WALError where error.kind == .outOfSpace { refused += 1; break }
        }
        XCTAssertEqual(refused, 1)
        XCTAssertEqual(try metrics.expectCounter("signalwal_out_of_space_errors_total", dimensions).totalValue, 1)
        Syscall.setFaultHook(nil)
        try wal.close()
    }

    func testFailedFlushIsCounted() throws {
        let directory = makeTemporaryDirectory(self)
        let metrics = TestMetrics()
        var configuration = testConfiguration()
        configuration.metricsFactory = metrics
        let wal = try WAL.open(directory: directory, configuration: configuration)
        Syscall.setFaultHook { operation, path in operation == .fdatasync && path.hasSuffix(".wal") ? .fail(errno: EIO) : nil }
        XCTAssertThrowsError(try wal.append([1]))
        Syscall.setFaultHook(nil)
        XCTAssertEqual(try metrics.expectCounter("signalwal_flush_failures_total", [("wal", directory)]).totalValue, 1)
        XCTAssertThrowsError(try wal.close())
    }
}
