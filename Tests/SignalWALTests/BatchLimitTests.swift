import XCTest
@testable import SignalWAL

final class BatchLimitTests: XCTestCase {
    func testMaxBatchBytesBoundsUnflushedDataEvenUnderALongInterval() throws {
        let directory = makeTemporaryDirectory(self)
        var configuration = testConfiguration(durability: .interval(.seconds(1)))
        configuration.maxBatchBytes = 64 << 10
        let wal = try WAL.open(directory: directory, configuration: configuration)
        defer { try? wal.close() }
        let span = Format.recordSpan(payloadLength: 4096)
        var worst: LSN = 0
        for index in 0..<100 {
            let lsn = try wal.append(testPayload(index, length: 4096))
            worst = max(worst, lsn - wal.durableLSN)
        }
        // Without the limit nothing would be flushed for a second and the lag would reach 100.
        XCTAssertLessThanOrEqual(Int(worst) * span, (64 << 10) + span, "unflushed records: \(worst)")
        XCTAssertGreaterThan(wal.flushCount, 3)
    }

    func testMaxBatchDelayLetsAppendsGatherIntoFewerFlushes() throws {
        let directory = makeTemporaryDirectory(self)
        var configuration = testConfiguration()
        configuration.maxBatchDelay = .milliseconds(20)
        let wal = try WAL.open(directory: directory, configuration: configuration)
        defer { try? wal.close() }
        let started = ContinuousClock.now
        DispatchQueue.concurrentPerform(iterations: 8) { thread in
            for index in 0..<10 { _ = try? wal.append(testPayload(thread * 100 + index, length: 200)) }
        }
        let elapsed = ContinuousClock.now - started
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        XCTAssertEqual(wal.durableLSN, 80)
        // Every flush waited 20 ms first, so there cannot be more flushes than 20 ms periods.
        XCTAssertLessThanOrEqual(wal.flushCount, Int(seconds / 0.020) + 2, "\(wal.flushCount) flushes in \(seconds) s")
    }

    func testBatchLimitsOutOfRangeAreRefused() {
        let directory = makeTemporaryDirectory(self)
        var configuration = testConfiguration()
        configuration.maxBatchBytes = 100
        XCTAssertThrowsError(try WAL.open(directory: directory, configuration: configuration)) {
            XCTAssertEqual(($0 as? WALError)?.kind, .invalidArgument)
        }
        configuration.maxBatchBytes = nil
        configuration.maxBatchDelay = .seconds(5)
        XCTAssertThrowsError(try WAL.open(directory: directory, configuration: configuration))
    }
}
