import Logging
import Synchronization

/// One log line when a service starts refusing writes because its WAL is full (backlog bound
/// or disk), and one when it takes them again, instead of a line per refused request: an
/// operator's `grep WAL` shows when backpressure began and ended, and a flood of clients
/// retrying cannot flood the log.
public final class BackpressureLog: Sendable {
    private struct State {
        var on = false
        var refused = 0
        var since = ContinuousClock.now
    }

    private let state = Mutex(State())
    private let isOn = Atomic<Bool>(false)
    private let logger: Logger

    public init(logger: Logger) {
        self.logger = logger
    }

    /// A write was refused for `reason` (`backlog_full`, `out_of_space`, `disk_reserve`);
    /// `bound` names what bounds it (a setting, or the disk), for the message.
    public func refused(reason: String, bound: String, detail: String) {
        let first = state.withLock { value -> Bool in
            value.refused += 1
            guard !value.on else { return false }
            value.on = true
            value.since = .now
            // Inside the lock, so the flag and the state never disagree.
            isOn.store(true, ordering: .releasing)
            return true
        }
        guard first else { return }
        logger.warning("WAL backpressure on: refusing writes until the backlog drains", metadata: [
            "reason": "\(reason)", "bound": "\(bound)", "detail": "\(detail)"])
    }

    /// A write was accepted. Cheap while backpressure is off (one atomic load).
    public func accepted() {
        guard isOn.load(ordering: .acquiring) else { return }
        let ended = state.withLock { value -> (Int, Duration)? in
            guard value.on else { return nil }
            value.on = false
            isOn.store(false, ordering: .releasing)
            defer { value.refused = 0 }
            return (value.refused, ContinuousClock.now - value.since)
        }
        guard let (refused, lasted) = ended else { return }
        logger.notice("WAL backpressure off: accepting writes again", metadata: [
            "refused_while_on": "\(refused)", "lasted": "\(lasted)"])
    }
}
