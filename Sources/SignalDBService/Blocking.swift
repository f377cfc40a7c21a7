import Dispatch

/// Runs blocking work (SQLite calls, WAL reads, file writes) on a Dispatch global queue and
/// suspends the calling task until it is done, so async code never blocks a thread of the
/// cooperative pool.
public enum Blocking {
    public static func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
            DispatchQueue.global().async {
                continuation.resume(with: Result { try body() })
            }
        }
    }
}
