/// Everyone waiting on the committer: blocked appender threads (parked on a condition of the
/// committer's lock), suspended async appenders, and tailing readers. Lives inside the
/// committer's locked state; every method runs with that lock held, and what it returns is
/// woken by the caller after the lock is released.
struct DurabilityWaiters {
    struct Waiter {
        var lsn: LSN
        var continuation: CheckedContinuation<Void, any Error>
    }
    struct Follower {
        var id: UInt64
        var after: LSN
        var continuation: CheckedContinuation<Bool, Never>
    }

    /// Blocked appenders: the LSN each waits for and the condition it sleeps on. Keeps its
    /// capacity, so parking allocates nothing in steady state. Bounded by the number of
    /// threads appending.
    private(set) var parked: [(lsn: LSN, parker: Int)] = []
    /// Bounded by the number of tasks appending.
    private(set) var waiters: [Waiter] = []
    /// Bounded by the number of readers following the log.
    private(set) var followers: [Follower] = []
    private var nextFollowerID: UInt64 = 0

    init(parkers: Int) { parked.reserveCapacity(parkers) }

    mutating func park(_ lsn: LSN, on parker: Int) { parked.append((lsn, parker)) }

    /// Removes a parked entry after a wake-up that did not cover it (a failure or close).
    mutating func unpark(_ lsn: LSN, from parker: Int) {
        if let index = parked.firstIndex(where: { $0.parker == parker && $0.lsn == lsn }) { parked.remove(at: index) }
    }

    mutating func add(_ waiter: Waiter) { waiters.append(waiter) }

    mutating func newFollowerID() -> UInt64 {
        nextFollowerID += 1
        return nextFollowerID
    }

    mutating func add(_ follower: Follower) { followers.append(follower) }

    mutating func removeFollower(_ id: UInt64) -> Follower? {
        guard let index = followers.firstIndex(where: { $0.id == id }) else { return nil }
        return followers.remove(at: index)
    }

    /// Moves the parkers of appenders covered by `durable` (all of them when `all`) into
    /// `buffer`, a buffer the flusher thread owns.
    mutating func collectParked(upTo durable: LSN, all: Bool, into buffer: inout [Int]) {
        guard !parked.isEmpty else { return }
        for entry in parked where all || entry.lsn <= durable { buffer.append(entry.parker) }
        if all { parked.removeAll(keepingCapacity: true) } else { parked.removeAll { $0.lsn <= durable } }
    }

    /// Async appenders covered by `durable`.
    mutating func takeWaiters(upTo durable: LSN) -> [Waiter] {
        guard !waiters.isEmpty else { return [] }
        let ready = waiters.filter { $0.lsn <= durable }
        waiters.removeAll { $0.lsn <= durable }
        return ready
    }

    /// Followers waiting for a record at or below `visible`.
    mutating func takeFollowers(upTo visible: LSN) -> [Follower] {
        guard !followers.isEmpty else { return [] }
        let ready = followers.filter { $0.after < visible }
        followers.removeAll { $0.after < visible }
        return ready
    }

    /// Every async waiter and follower (on a failure or at close).
    mutating func takeAll() -> (waiters: [Waiter], followers: [Follower]) {
        defer { waiters = []; followers = [] }
        return (waiters, followers)
    }
}
