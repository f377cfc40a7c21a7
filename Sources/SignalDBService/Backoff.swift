import Foundation

/// Exponential backoff from 100 ms, doubling to `max`, with full jitter in its upper half.
public enum Backoff {
    public static func delay(attempt: Int, max: Duration) -> Duration {
        let base = 0.1 * pow(2.0, Double(min(attempt - 1, 20)))
        let capped = min(base, Double(max.components.seconds) + Double(max.components.attoseconds) / 1e18)
        return .milliseconds(Int64(capped * Double.random(in: 0.5...1.0) * 1000))
    }
}
