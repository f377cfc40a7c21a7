import Synchronization

/// The longest recent flush, for the `wal_flush_duration_seconds` gauge: an alert such as
/// `wal_flush_duration_seconds > 1.0` needs one number per scrape that a slow flush raises,
/// which a histogram's sum or count does not give.
///
/// The value is the longest flush that completed in the current or the previous 15-second
/// window (so every flush of the last 15 to 30 seconds counts, whatever the scrape interval up
/// to 15 s), or the age of the flush still running when that is longer: a flush stuck on a
/// dying disk shows up while it hangs, not only once it returns.
final class FlushLatencyWindow: Sendable {
    static let window = 15_000_000_000

    private struct State {
        var windowStart: Int
        var currentMax = 0
        var previousMax = 0
        var runningSince: Int? = nil

        mutating func roll(now: Int) {
            guard now - windowStart >= FlushLatencyWindow.window else { return }
            previousMax = now - windowStart < 2 * FlushLatencyWindow.window ? currentMax : 0
            currentMax = 0
            windowStart = now
        }
    }

    private let state: Mutex<State>

    init(now: Int = MonotonicClock.nanoseconds()) {
        state = Mutex(State(windowStart: now))
    }

    func flushStarted(now: Int = MonotonicClock.nanoseconds()) {
        state.withLock { $0.runningSince = now }
    }

    func flushFinished(now: Int = MonotonicClock.nanoseconds()) {
        state.withLock { value in
            value.roll(now: now)
            if let since = value.runningSince { value.currentMax = max(value.currentMax, now - since) }
            value.runningSince = nil
        }
    }

    /// Seconds: the gauge's value now.
    func longestSeconds(now: Int = MonotonicClock.nanoseconds()) -> Double {
        state.withLock { value in
            value.roll(now: now)
            let running = value.runningSince.map { now - $0 } ?? 0
            return Double(max(value.currentMax, value.previousMax, running)) / 1e9
        }
    }
}
