#if canImport(Glibc)
import Glibc
#endif
import CShims

/// A dedicated, named OS thread running one closure, outside Swift's cooperative pool (the
/// committer blocks in fdatasync and the allocator in zero-fill writes; neither may take a pool
/// thread). Joined once by ``join()``.
final class BackgroundThread: Sendable {
    private let handle: ConditionLock<pthread_t?>

    private init(handle: pthread_t) {
        self.handle = ConditionLock(handle)
    }

    /// Starts `body` on a new thread named `name` (at most 15 characters, shown by `top -H`,
    /// `perf` and `gdb`).
    static func start(name: String, _ body: @escaping @Sendable () -> Void) -> BackgroundThread {
        final class Box: @unchecked Sendable {
            // @unchecked: handed to exactly one thread, which consumes it.
            let name: String
            let body: @Sendable () -> Void
            init(name: String, body: @escaping @Sendable () -> Void) { self.name = name; self.body = body }
        }
        var handle = pthread_t()
        let rc = pthread_create(&handle, nil, { raw in
            let box = Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue()
            _ = sw_set_thread_name(String(box.name.prefix(15)))
            box.body()
            return nil
        }, Unmanaged.passRetained(Box(name: name, body: body)).toOpaque())
        precondition(rc == 0, "pthread_create failed for \(name): \(rc)")
        return BackgroundThread(handle: handle)
    }

    /// Waits for the thread to finish. Later calls return at once.
    func join() {
        if let thread = handle.withLock({ value -> pthread_t? in defer { value = nil }; return value }) {
            pthread_join(thread, nil)
        }
    }
}
