#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// The system calls SignalWAL makes, named for errors and for fault injection.
public enum SyscallOperation: String, Sendable, CaseIterable {
    case open, close, pread, pwrite, fdatasync, fsync, fallocate, syncFileRange
    case fadvise, mmap, munmap, msync, madvise, flock, rename, unlink, mkdir, fstat, stat
    case ftruncate, readdir, uringSetup, uringSubmit, uringComplete
}

/// What a fault hook asks the funnel to do instead of (or before) the real call.
public enum InjectedFault: Sendable, Equatable {
    /// Fail the call with this errno without making it. `EINTR` is retried like a real one.
    case fail(errno: Int32)
    /// Make a read or write transfer at most this many bytes (at least one), as the kernel may
    /// on a signal or a nearly full device. Other calls run normally.
    case short(bytes: Int)
}

/// The single funnel every system call goes through.
///
/// It retries `EINTR`, turns a negative return into a ``WALError`` carrying the operation and
/// the path, and lets tests inject failures through ``setFaultHook(_:)`` (the reliability
/// suite uses it to make `fdatasync` return `EIO`, `fallocate` return `ENOSPC`, and so on).
public enum Syscall {
    /// Decides, for one call, whether to inject a fault. Runs on the calling thread.
    public typealias FaultHook = @Sendable (_ operation: SyscallOperation, _ path: String) -> InjectedFault?

    // A pthread-based lock rather than `Mutex`: ThreadSanitizer reported races on this global
    // through `Mutex.withLock` (it does not see that lock here), and a test-only hook is no
    // place to fight the tool. Instance `Mutex`es elsewhere are reported clean.
    private static let hook = ConditionLock<FaultHook?>(nil)
    // Read on every call; the mutex is only touched when a hook is installed.
    private static let hookInstalled = Atomic<Bool>(false)

    /// Installs (or with `nil`, removes) the process-wide fault hook. For tests.
    public static func setFaultHook(_ newHook: FaultHook?) {
        hook.withLock { $0 = newHook }
        hookInstalled.store(newHook != nil, ordering: .releasing)
    }

    /// Runs `body`, which follows the shim convention (a negative return is `-errno`),
    /// retrying `EINTR`, and returns its non-negative result.
    @discardableResult
    static func run(_ operation: SyscallOperation, path: String, _ body: () -> Int) throws -> Int {
        try transfer(operation, path: path, count: 0) { _ in body() }
    }

    /// ``run(_:path:_:)`` for a read or a write of `count` bytes: `body` is given the number of
    /// bytes to ask for, which an injected ``InjectedFault/short(bytes:)`` lowers. Callers loop
    /// until everything is transferred, as they must for real short transfers.
    static func transfer(_ operation: SyscallOperation, path: String, count: Int, _ body: (Int) -> Int) throws -> Int {
        while true {
            var ask = count
            if hookInstalled.load(ordering: .acquiring),
               let installed = hook.withLock({ $0 }),
               let fault = installed(operation, path) {
                switch fault {
                case .fail(let code):
                    if code == EINTR { continue }
                    throw WALError.system(operation, path: path, errno: code)
                case .short(let bytes):
                    ask = min(count, max(bytes, 1))
                }
            }
            let result = body(ask)
            if result >= 0 { return result }
            let code = Int32(-result)
            if code == EINTR { continue }
            throw WALError.system(operation, path: path, errno: code)
        }
    }

    /// Consults the fault hook for an operation the kernel runs on our behalf through io_uring
    /// rather than through ``run(_:path:_:)``, so injected faults reach that path too. An
    /// injected `EINTR` means "go ahead", as a retried call would.
    static func injectFault(_ operation: SyscallOperation, path: String) throws {
        guard hookInstalled.load(ordering: .acquiring), let installed = hook.withLock({ $0 }),
              let fault = installed(operation, path) else { return }
        switch fault {
        case .fail(let code):
            if code == EINTR { return }
            throw WALError.system(operation, path: path, errno: code)
        case .short:
            return
        }
    }

    /// Adapts a libc call that returns -1 and sets errno to the shim convention.
    static func errnoResult(_ value: Int32) -> Int {
        value < 0 ? -Int(Glibc.errno) : Int(value)
    }
}
