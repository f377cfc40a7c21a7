#if canImport(Glibc)
import Glibc
#endif
import SignalWAL

/// Payloads that can be checked without storing them, and the appending child process that
/// crash tests kill.
///
/// A payload is `[thread: UInt32][index: UInt32][filler]`, where the filler and the length are
/// derived from (seed, thread, index). A verifier can therefore tell a genuine record from an
/// invented or damaged one by regenerating it from its first eight bytes.
public enum Workload {
    /// Largest payload the workload generates.
    public static let maxPayload = 2048

    /// The payload of record `index` of `thread`. With `maxLength` above ``maxPayload`` (the
    /// batch mode), one record in sixteen is up to `maxLength` bytes, so batches cross
    /// segments and fill the staging ring.
    public static func payload(seed: UInt64, thread: UInt32, index: UInt32, maxLength: Int = maxPayload) -> [UInt8] {
        var state = seed ^ (UInt64(thread) << 32 | UInt64(index)) &* 0x9E37_79B9_7F4A_7C15
        var length = 8 + Int(splitmix(&state) % UInt64(maxPayload - 8 + 1))
        if maxLength > maxPayload, splitmix(&state) % 16 == 0 {
            length = 8 + Int(splitmix(&state) % UInt64(maxLength - 8 + 1))
        }
        var bytes = [UInt8](repeating: 0, count: length)
        withUnsafeBytes(of: thread.littleEndian) { bytes.replaceSubrange(0..<4, with: $0) }
        withUnsafeBytes(of: index.littleEndian) { bytes.replaceSubrange(4..<8, with: $0) }
        var position = 8
        while position < length {
            var word = splitmix(&state)
            let take = min(8, length - position)
            withUnsafeBytes(of: &word) { bytes.replaceSubrange(position..<position + take, with: $0[0..<take]) }
            position += take
        }
        return bytes
    }

    /// The (thread, index) a genuine payload was generated from, or nil for any other bytes.
    public static func identify(_ payload: [UInt8], seed: UInt64, maxLength: Int = maxPayload) -> (thread: UInt32, index: UInt32)? {
        guard payload.count >= 8 else { return nil }
        let thread = payload[0..<4].withUnsafeBytes { UInt32(littleEndian: $0.loadUnaligned(as: UInt32.self)) }
        let index = payload[4..<8].withUnsafeBytes { UInt32(littleEndian: $0.loadUnaligned(as: UInt32.self)) }
        return self.payload(seed: seed, thread: thread, index: index, maxLength: maxLength) == payload ? (thread, index) : nil
    }

    /// How many records batch number `batch` of `thread` holds: 1 to `maxRecords`, from
    /// (seed, thread, batch), so a verifier can rebuild every batch's bounds without being told.
    public static func batchCount(seed: UInt64, thread: UInt32, batch: UInt32, maxRecords: Int) -> Int {
        var state = seed ^ 0x5BA7_C0DE ^ (UInt64(thread) << 32 | UInt64(batch)) &* 0xD1B5_4A32_D192_ED03
        return 1 + Int(splitmix(&state) % UInt64(max(1, maxRecords)))
    }

    /// The index ranges of `thread`'s batches, in order, until they cover `through`.
    public static func batches(seed: UInt64, thread: UInt32, maxRecords: Int, through index: UInt32) -> [Range<UInt32>] {
        var result: [Range<UInt32>] = []
        var start: UInt32 = 0
        var batch: UInt32 = 0
        while start <= index {
            let count = UInt32(batchCount(seed: seed, thread: thread, batch: batch, maxRecords: maxRecords))
            result.append(start..<start + count)
            start += count
            batch += 1
        }
        return result
    }

    private static func splitmix(_ state: inout UInt64) -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// One acknowledged record as the child prints it: `ack <lsn> <thread> <index> <at>`, where
    /// `at` is CLOCK_MONOTONIC in nanoseconds when the append returned (the same clock in every
    /// process, so a parent can compare it with the moment it cut the power).
    public struct Ack: Sendable, Equatable {
        public var lsn: LSN
        public var thread: UInt32
        public var index: UInt32
        public var at: UInt64

        public init(lsn: LSN, thread: UInt32, index: UInt32, at: UInt64) {
            self.lsn = lsn
            self.thread = thread
            self.index = index
            self.at = at
        }

        public init?(line: Substring) {
            let parts = line.split(separator: " ")
            guard parts.count == 5, parts[0] == "ack", let lsn = LSN(parts[1]), let thread = UInt32(parts[2]),
                  let index = UInt32(parts[3]), let at = UInt64(parts[4]) else { return nil }
            self.init(lsn: lsn, thread: thread, index: index, at: at)
        }
    }

    /// One acknowledged batch as the child prints it (one write, one line):
    /// `batch <first lsn> <count> <thread> <first index> <at>`.
    public struct BatchAck: Sendable, Equatable {
        public var firstLSN: LSN
        public var count: Int
        public var thread: UInt32
        public var firstIndex: UInt32
        public var at: UInt64

        public init?(line: Substring) {
            let parts = line.split(separator: " ")
            guard parts.count == 6, parts[0] == "batch", let lsn = LSN(parts[1]), let count = Int(parts[2]),
                  let thread = UInt32(parts[3]), let index = UInt32(parts[4]), let at = UInt64(parts[5]) else { return nil }
            firstLSN = lsn
            self.count = count
            self.thread = thread
            firstIndex = index
            self.at = at
        }

        /// One ``Ack`` per record of the batch.
        public var records: [Ack] {
            (0..<count).map { Ack(lsn: firstLSN + LSN($0), thread: thread, index: firstIndex + UInt32($0), at: at) }
        }
    }

    /// A completed checkpoint as the child prints it: `checkpoint <lsn> <at>`.
    public struct CheckpointAck: Sendable, Equatable {
        public var lsn: LSN
        public var at: UInt64

        public init?(line: Substring) {
            let parts = line.split(separator: " ")
            guard parts.count == 3, parts[0] == "checkpoint", let lsn = LSN(parts[1]), let at = UInt64(parts[2]) else { return nil }
            self.lsn = lsn
            self.at = at
        }
    }

    /// CLOCK_MONOTONIC in nanoseconds.
    public static func monotonicNanoseconds() -> UInt64 {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
    }

    /// Writes one line with a single write(2), so a kill never leaves half a line that claims
    /// an acknowledgement.
    public static func emit(_ line: String, to fd: Int32 = 1) {
        _ = line.withCString { write(fd, $0, strlen($0)) }
    }

    /// Appends from `threads` threads until killed (or until `limit` records per thread), writing
    /// one `ack` line to standard output after each append returns, that is, after the record is
    /// durable under the policy. With `checkpointEvery`, one more thread checkpoints half of what is
    /// not yet consumed at that period, as a lagging consumer would, and prints a `checkpoint`
    /// line after each.
    ///
    /// With `batchRecords`, each thread appends batches instead (``batchCount(seed:thread:batch:maxRecords:)``
    /// records each, payloads up to `maxLength` bytes) with `append(contentsOf:)` and prints one
    /// `batch` line after each.
    public static func appendUntilKilled(wal: WAL, seed: UInt64, threads: Int, limit: Int = .max,
                                         checkpointEvery: Duration? = nil, batchRecords: Int? = nil,
                                         maxLength: Int = maxPayload) {
        onThreads(threads + (checkpointEvery == nil ? 0 : 1)) { thread in
            if thread == threads, let period = checkpointEvery {
                checkpointUntilKilled(wal: wal, every: period)
                return
            }
            let thread = UInt32(thread)
            if let batchRecords {
                appendBatches(wal: wal, seed: seed, thread: thread, maxRecords: batchRecords, maxLength: maxLength, limit: limit)
                return
            }
            var index: UInt32 = 0
            while Int(index) < limit {
                let bytes = Workload.payload(seed: seed, thread: thread, index: index)
                do {
                    let lsn = try wal.append(bytes)
                    emit("ack \(lsn) \(thread) \(index) \(monotonicNanoseconds())\n")
                } catch {
                    emit("error \(thread) \(index) \(error)\n", to: 2)
                    usleep(1000)
                    continue
                }
                index += 1
            }
        }
    }

    private static func appendBatches(wal: WAL, seed: UInt64, thread: UInt32, maxRecords: Int, maxLength: Int, limit: Int) {
        var index: UInt32 = 0
        var batch: UInt32 = 0
        while Int(index) < limit {
            let count = batchCount(seed: seed, thread: thread, batch: batch, maxRecords: maxRecords)
            let payloads = (0..<count).map { payload(seed: seed, thread: thread, index: index + UInt32($0), maxLength: maxLength) }
            do {
                let lsns = try wal.append(contentsOf: payloads)
                emit("batch \(lsns.lowerBound) \(count) \(thread) \(index) \(monotonicNanoseconds())\n")
            } catch {
                // The same batch again: its bounds are fixed by its number.
                emit("error \(thread) \(index) \(error)\n", to: 2)
                usleep(1000)
                continue
            }
            index += UInt32(count)
            batch += 1
        }
    }

    private static func checkpointUntilKilled(wal: WAL, every period: Duration) {
        let parts = period.components
        let micros = UInt32(parts.seconds) * 1_000_000 + UInt32(parts.attoseconds / 1_000_000_000_000)
        while true {
            usleep(micros)
            // Half of what is unconsumed, like a consumer that lags: segments still fall below
            // the checkpoint and get reused, and the newer half stays for the verifier to check.
            let consumed = wal.checkpointLSN
            let lsn = consumed + (wal.visibleLSN - consumed) / 2
            guard lsn > consumed else { continue }
            do {
                try wal.checkpoint(upTo: lsn)
                emit("checkpoint \(lsn) \(monotonicNanoseconds())\n")
            } catch {
                emit("error checkpoint \(lsn) \(error)\n", to: 2)
            }
        }
    }
}

/// Runs `body(index)` on `count` new OS threads (not the cooperative pool: appenders block in
/// `append`) and waits for all of them. Shared by the crash child and the benchmark harness.
public func onThreads(_ count: Int, _ body: @escaping @Sendable (Int) -> Void) {
    final class Job: @unchecked Sendable {
        // @unchecked: handed to exactly one thread, which consumes it.
        let index: Int
        let body: @Sendable (Int) -> Void
        init(index: Int, body: @escaping @Sendable (Int) -> Void) { self.index = index; self.body = body }
    }
    var handles: [pthread_t] = []
    for index in 0..<count {
        var handle = pthread_t()
        let rc = pthread_create(&handle, nil, { raw in
            let job = Unmanaged<Job>.fromOpaque(raw!).takeRetainedValue()
            job.body(job.index)
            return nil
        }, Unmanaged.passRetained(Job(index: index, body: body)).toOpaque())
        precondition(rc == 0, "pthread_create failed: \(rc)")
        handles.append(handle)
    }
    for handle in handles { pthread_join(handle, nil) }
}
