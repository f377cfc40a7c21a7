import ServiceLifecycle

/// Ends the service when the admin listener fails (a port in use, say): without it there would
/// be no /livez, /readyz or /metrics, and nothing would notice until the next shutdown.
public struct AdminWatch: Service {
    let failures: AsyncStream<String>
    let setting: String

    public init(failures: AsyncStream<String>, setting: String) {
        self.failures = failures
        self.setting = setting
    }

    public func run() async throws {
        do {
            try await cancelWhenGracefulShutdown {
                for await failure in failures {
                    throw ServiceStartError("the admin listener stopped: \(failure). Check \(setting) (a port in use?)")
                }
            }
        } catch is CancellationError {
            return  // the graceful shutdown
        }
    }
}
