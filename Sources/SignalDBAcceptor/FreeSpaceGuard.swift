import Glibc
import Synchronization

/// Keeps the free-space reserve on the WAL's filesystem: a background check (once a second,
/// statvfs) so requests never pay for the syscall. Below the reserve the acceptor answers 503
/// + Retry-After instead of filling the disk; it resumes by itself when space returns.
final class FreeSpaceGuard: Sendable {
    let path: String
    let reserve: Int
    private let free = Atomic<Int>(Int.max)

    init(path: String, reserve: Int) {
        self.path = path
        self.reserve = reserve
        refresh()
    }

    /// Free bytes and the reserve, when under it.
    var shortfall: (free: Int, reserve: Int)? {
        let f = free.load(ordering: .relaxed)
        return f < reserve ? (f, reserve) : nil
    }

    func refresh() {
        var st = statvfs()
        guard statvfs(path, &st) == 0 else { return }
        free.store(Int(st.f_bavail) * Int(st.f_frsize), ordering: .relaxed)
    }

    /// Runs until cancelled.
    func run() async {
        while !Task.isCancelled {
            try? await Task.sleep(for: .seconds(1))
            refresh()
        }
    }
}
