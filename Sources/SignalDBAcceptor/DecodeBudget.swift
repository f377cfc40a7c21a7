import SignalDBIngest
import Synchronization

/// Bounds the request bytes the acceptor holds while reading, inflating and decoding, across
/// all connections (`ACCEPTOR_DECODE_BUDGET_BYTES`). A request that would pass it is refused at
/// once with 503 + Retry-After instead of queueing, so a burst of large requests cannot run the
/// process out of memory. It counts body bytes (the read body, then the inflated one), not the
/// decoded message tree, which can be several times larger for requests of many tiny items.
final class DecodeBudget: Sendable {
    let capacity: Int
    private let used = Mutex(0)

    init(bytes: Int) { capacity = bytes }

    func acquire(_ bytes: Int) throws(IngestError) {
        let granted = used.withLock { used -> Bool in
            guard used + bytes <= capacity else { return false }
            used += bytes
            return true
        }
        guard granted else {
            throw IngestError(.unavailable(retryAfterSeconds: 1),
                              "the acceptor is already decoding \(capacity) bytes of requests (ACCEPTOR_DECODE_BUDGET_BYTES); retry shortly",
                              reason: "decode_budget")
        }
    }

    func release(_ bytes: Int) {
        used.withLock { $0 -= bytes }
    }

    var inUse: Int { used.withLock { $0 } }
}
