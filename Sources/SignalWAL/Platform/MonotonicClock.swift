#if canImport(Glibc)
import Glibc
#endif

/// CLOCK_MONOTONIC in nanoseconds, as an `Int`: cheap enough for the append path (the backlog
/// tracker samples it on every append) and comparable across threads (the committer paces
/// `.interval` flushes with it).
enum MonotonicClock {
    static func nanoseconds() -> Int {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return now.tv_sec * 1_000_000_000 + now.tv_nsec
    }
}
