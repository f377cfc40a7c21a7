import Synchronization

/// What `/livez` and `/readyz` report. One owner per process; the service flips readiness on
/// after recovery, off on shutdown or when its WAL fails, and publishes replay progress while
/// it is not ready.
public final class Health: Sendable {
    struct State {
        var ready = false
        var shuttingDown = false
        var detail = "starting"
    }

    private let state = Mutex(State())

    public init() {}

    public var isReady: Bool { state.withLock { $0.ready && !$0.shuttingDown } }

    /// Why the service is or is not ready, for the `/readyz` body.
    public var detail: String { state.withLock { $0.shuttingDown ? "shutting down" : $0.detail } }

    public func setReady(_ ready: Bool, detail: String) {
        state.withLock {
            $0.ready = ready
            $0.detail = detail
        }
    }

    /// Progress while not ready (recovery, replay); leaves readiness as it is.
    public func setDetail(_ detail: String) {
        state.withLock { $0.detail = detail }
    }

    /// Readiness goes false for good: the first step of a graceful shutdown, so load balancers
    /// stop sending before the listeners close.
    public func beginShutdown() {
        state.withLock { $0.shuttingDown = true }
    }
}

/// What `/metrics` refreshes before it renders (gauges that are read, not pushed). Set once the
/// things it reads exist; until then a scrape shows what is already recorded.
public final class ScrapeHook: Sendable {
    private let hook = Mutex<(@Sendable () -> Void)?>(nil)

    public init() {}

    public func set(_ body: @escaping @Sendable () -> Void) { hook.withLock { $0 = body } }

    public func run() { hook.withLock { $0 }?() }
}
