#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// A small, stable number per thread (0, 1, 2, ... in order of first use), kept in
/// thread-specific storage. The committer uses it to give each blocked appender its own
/// condition variable without allocating.
enum ThreadIndex {
    private static let next = Atomic<Int>(0)
    private static let key: pthread_key_t = {
        var key = pthread_key_t()
        precondition(pthread_key_create(&key, nil) == 0, "pthread_key_create failed")
        return key
    }()

    static var current: Int {
        if let stored = pthread_getspecific(key) {
            return Int(bitPattern: stored) - 1
        }
        let index = next.add(1, ordering: .relaxed).oldValue
        // Stored plus one, so that index 0 is not a null pointer.
        pthread_setspecific(key, UnsafeRawPointer(bitPattern: index + 1))
        return index
    }
}
