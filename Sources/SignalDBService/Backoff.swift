import Foundation
import Logging
import SignalWAL

/// Exponential backoff from 100 ms, doubling to `max`, with full jitter in its upper half.
public enum Backoff {
    public static func delay(attempt: Int, max: Duration) -> Duration {
        let base = 0.1 * pow(2.0, Double(min(attempt - 1, 20)))
        let capped = min(base, Double(max.components.seconds) + Double(max.components.attoseconds) / 1e18)
        return .milliseconds(Int64(capped * Double.random(in: 0.5...1.0) * 1000))
    }
}

extension Backoff {
    /// Runs `body` until it succeeds: an error is retried after ``delay(attempt:max:)`` and
    /// logged on the first attempt and every 20th, unless the WAL has failed (then the WAL's
    /// failure is thrown: it is fatal) or the task is cancelled (`CancellationError`).
    public static func retrying<T>(_ what: String, max: Duration, wal: WAL, logger: Logger,
                                   _ body: () async throws -> T) async throws -> T {
        var attempt = 0
        while true {
            do {
                return try await body()
            } catch {
                if error is CancellationError || Task.isCancelled { throw CancellationError() }
                if let failure = wal.failure { throw failure }
                attempt += 1
                let wait = delay(attempt: attempt, max: max)
                if attempt == 1 || attempt % 20 == 0 {
                    logger.error("\(what) failed; retrying", metadata: ["error": "\(error)", "attempt": "\(attempt)", "retryIn": "\(wait)"])
                }
                try await Task.sleep(for: wait)
            }
        }
    }
}
