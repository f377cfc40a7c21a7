import Dispatch

/// Runs blocking work (fsyncs, recovery) on a Dispatch global queue, whose threads are not the
/// cooperative pool's, and suspends the calling task until it is done: the `async` forms of
/// `WAL.open`, `checkpoint` and `close` never block a thread of the pool. Dispatch starts
/// threads for such work on demand and keeps none while idle, so an open WAL costs no thread
/// here.
enum Offload {
    static func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
            DispatchQueue.global().async {
                continuation.resume(with: Result { try body() })
            }
        }
    }
}
