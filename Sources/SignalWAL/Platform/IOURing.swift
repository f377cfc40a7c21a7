#if canImport(Glibc)
import Glibc
#endif
import CShims

/// An io_uring instance owned by one thread at a time (the segment allocator's thread).
///
/// Rings are optional: container seccomp profiles commonly deny `io_uring_setup` (or let it
/// succeed and refuse `io_uring_enter`), and the engine then uses plain system calls for the same
/// work. ``open(entries:path:)`` therefore proves a ring works before handing it out.
final class IOURing {
    private let ring: OpaquePointer
    let entries: Int

    /// Creates a ring and runs a no-op through it, so a ring that cannot submit is refused here
    /// rather than on first use. Goes through the syscall funnel, so tests can make it fail as a
    /// seccomp profile would.
    static func open(entries: Int, path: String) throws -> IOURing {
        let ring = try IOURing(entries: entries, path: path)
        _ = sw_uring_prep_nop(ring.ring, 1)
        _ = try ring.submitAndReap(count: 1, path: path)
        return ring
    }

    private init(entries: Int, path: String) throws {
        var err: Int32 = 0
        var made: OpaquePointer?
        try Syscall.run(.uringSetup, path: path) {
            made = sw_uring_create(UInt32(entries), &err)
            return made == nil ? -Int(err) : 0
        }
        ring = made!
        self.entries = entries
    }

    deinit { sw_uring_destroy(ring) }

    func prepareWrite(fd: Int32, _ buffer: UnsafeRawBufferPointer, offset: Int, tag: UInt64, link: Bool) -> Bool {
        sw_uring_prep_write(ring, fd, buffer.baseAddress, UInt32(buffer.count), UInt64(offset), tag, link ? 1 : 0) == 0
    }

    /// Submits everything queued and waits until `count` completions have arrived, returning
    /// each completion's tag and result (a byte count, 0, or -errno).
    ///
    /// The kernel may accept fewer entries than were queued (request allocation fails under
    /// memory pressure): waiting for `count` completions would then wait forever. So a short
    /// submission reaps what was accepted and throws, and the caller drops the ring.
    func submitAndReap(count: Int, path: String) throws -> [(tag: UInt64, result: Int32)] {
        let submitted = try Syscall.transfer(.uringSubmit, path: path, count: count) { ask in
            let result = Int(sw_uring_submit(ring, 0))
            // An injected short submission reports fewer than the kernel took (tests).
            return result < 0 ? result : min(result, ask)
        }
        let reaped = try reap(submitted, path: path)
        guard submitted >= count else {
            throw WALError.system(.uringSubmit, path: path, errno: EAGAIN)
        }
        return reaped
    }

    private func reap(_ count: Int, path: String) throws -> [(tag: UInt64, result: Int32)] {
        var out: [(UInt64, Int32)] = []
        out.reserveCapacity(count)
        var tags = [UInt64](repeating: 0, count: max(count, 1))
        var results = [Int32](repeating: 0, count: max(count, 1))
        while out.count < count {
            let want = count - out.count
            let n = try Syscall.run(.uringComplete, path: path) {
                Int(sw_uring_reap(ring, &tags, &results, UInt32(want), 1))
            }
            for i in 0..<n { out.append((tags[i], results[i])) }
        }
        return out
    }
}
