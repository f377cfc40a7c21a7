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

    /// The operators' guide's alert, `wal_flush_duration_seconds > 1.0`, needs a gauge a slow
    /// flush raises for a while and a stuck one raises while it hangs.
    func testFlushLatencyGaugeHoldsTheLongestRecentFlushAndAStuckOne() {
        let second = 1_000_000_000
        let window = FlushLatencyWindow(now: 0)
        XCTAssertEqual(window.longestSeconds(now: 0), 0)
        window.flushStarted(now: 1 * second)
        window.flushFinished(now: 1 * second + second / 2)        // 0.5 s
        window.flushStarted(now: 2 * second)
        window.flushFinished(now: 2 * second + second / 10)       // 0.1 s: the longest stays
        XCTAssertEqual(window.longestSeconds(now: 3 * second), 0.5, accuracy: 1e-9)
        // Into the next 15 s window, the previous one still counts ...
        XCTAssertEqual(window.longestSeconds(now: 20 * second), 0.5, accuracy: 1e-9)
        // ... and two windows on, it is gone.
        XCTAssertEqual(window.longestSeconds(now: 36 * second), 0)
        // A flush that has not returned shows its age.
        window.flushStarted(now: 40 * second)
        XCTAssertEqual(window.longestSeconds(now: 42 * second), 2, accuracy: 1e-9)
        window.flushFinished(now: 43 * second)
        XCTAssertEqual(window.longestSeconds(now: 44 * second), 3, accuracy: 1e-9)
    }

    func testSeedGuideMetricsAreExportedWithTheirLabels() throws {
        let directory = makeTemporaryDirectory(self)
        let metrics = TestMetrics()
        var configuration = testConfiguration(spares: 1)
        configuration.metricsFactory = metrics
        configuration.metricDimensions = [("service", "test-service")]
        let wal = try WAL.open(directory: directory, configuration: configuration)
        try wal.append([UInt8](repeating: 7, count: 1000))
        wal.refreshMetrics()
        let dimensions = [("wal", directory), ("service", "test-service")]
        let mount = try XCTUnwrap(MountTable.mountPoint(containing: directory))
        XCTAssertTrue(directory.hasPrefix(mount), "\(mount) does not hold \(directory)")
        let used = try metrics.expectGauge("disk_used_bytes", dimensions + [("mountpoint", mount)]).lastValue ?? -1
        let size = try metrics.expectGauge("disk_size_bytes", dimensions + [("mountpoint", mount)]).lastValue ?? -1
        XCTAssertGreaterThan(used, 0)
        XCTAssertGreaterThan(size, used)
        let flush = try metrics.expectGauge("wal_flush_duration_seconds", dimensions).lastValue ?? -1
        XCTAssertGreaterThan(flush, 0, "a flush just ran")
        XCTAssertLessThan(flush, 10)
        // The active segment and its spare, once the allocator has prepared it: the gauge
        // agrees with the files on disk.
        func onDisk() throws -> Int {
            try FileManager.default.contentsOfDirectory(atPath: directory).filter { Format.segmentSequence(fromFileName: $0) != nil }.count
        }
        let deadline = ContinuousClock.now + .seconds(5)
        var gauge: Double? = nil
        while ContinuousClock.now < deadline {
            wal.refreshMetrics()
            gauge = try metrics.expectGauge("signalwal_segment_files", dimensions).lastValue
            if try onDisk() == 2, gauge == 2 { break }
            Thread.sleep(forTimeInterval: 0.01)
        }
        XCTAssertEqual(gauge, 2)
        XCTAssertEqual(try onDisk(), 2)
        XCTAssertEqual(try metrics.expectCounter("signalwal_records_appended_total", dimensions).totalValue, 1)
        try wal.close()
    }

    func testMountTableUnescapesOctalSpaces() {
        XCTAssertEqual(MountTable.unescape("/data/my\\040wal"), "/data/my wal")
        XCTAssertEqual(MountTable.unescape("/plain"), "/plain")
        XCTAssertEqual(MountTable.mountPoint(containing: "/"), "/")
        XCTAssertNil(MountTable.mountPoint(containing: "/no/such/path/here"))
    }
}
