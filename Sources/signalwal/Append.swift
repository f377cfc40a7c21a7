import ArgumentParser
import Foundation
import SignalWAL
import SignalWALWorkload

struct Append: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Append standard input to the WAL, one record per line.",
        discussion: """
        Each line, without its newline, becomes one record. Once a record is acknowledged under \
        the policy, `<line number>\\t<LSN>` is printed on standard output (line numbers start at 1), \
        flushed at once; lines may be acknowledged out of order, because they are appended by \
        several threads at once so that group commit batches them. Opens the WAL for writing: \
        the directory is created if missing, and another process holding it is an error naming \
        its PID. A line longer than the WAL's record limit is reported on standard error and \
        skipped; the exit status is then 1.
        """)

    @Argument(help: "The WAL directory.") var directory: String
    @Option(help: "group, interval:<n>ms or none.") var policy: String = "group"
    @Option(help: "mmap or uring.") var backend: String = IOBackend.uring.rawValue
    @Option(help: "Concurrent appender threads.") var threads: Int = 16
    @Option(help: "Segment size in bytes for a new WAL (1 MiB to 1 GiB, a multiple of 4096; an existing WAL keeps its own). Default 64 MiB.")
    var segmentSize: Int?

    func validate() throws {
        guard DurabilityPolicy(argument: policy) != nil else { throw ValidationError("--policy must be group, interval:<n>ms (or us, s) or none, not \(policy)") }
        guard IOBackend(rawValue: backend) != nil else { throw ValidationError("--backend must be mmap or uring, not \(backend)") }
        guard (1...256).contains(threads) else { throw ValidationError("--threads must be 1 to 256") }
    }

    func run() throws {
        var configuration = Configuration()
        // An existing WAL keeps the segment size it was written with.
        if let size = (try? WALDirectory(path: directory))?.writtenSegmentSize() {
            configuration.segmentSize = size
        } else if let segmentSize {
            configuration.segmentSize = segmentSize
        }
        configuration.durability = DurabilityPolicy(argument: policy)!
        configuration.backend = IOBackend(rawValue: backend)!
        // A tool's standard error is for problems, not for the engine's notices.
        configuration.logger.logLevel = .warning
        let wal = try WAL.open(directory: directory, configuration: configuration)
        let queue = LineQueue(capacity: 4096)
        let refused = LockedCounter()
        let limit = wal.configuration.effectiveMaxRecordSize
        // Thread 0 reads standard input; the others append, so group commit batches them.
        onThreads(threads + 1) { index in
            if index == 0 {
                readLines { number, line in queue.put((number, line)) }
                queue.close()
                return
            }
            while let (number, line) = queue.take() {
                guard line.count <= limit else {
                    writeError("signalwal: line \(number) is \(line.count) bytes, over the record limit of \(limit) bytes: skipped")
                    refused.increment()
                    continue
                }
                do {
                    let lsn = try wal.append(line)
                    let text = "\(number)\t\(lsn)\n"
                    _ = text.withCString { write(1, $0, strlen($0)) }
                } catch {
                    writeError("signalwal: line \(number) was not appended: \(error)")
                    refused.increment()
                }
            }
        }
        try wal.close()
        if refused.value > 0 { throw ExitCode(1) }
    }
}

/// Reads standard input as bytes (not as text: a record is the line's exact bytes, valid
/// UTF-8 or not) and calls `body` with each line's number and bytes, without the newline. A
/// last line without a newline counts.
func readLines(_ body: (Int, [UInt8]) -> Void) {
    var buffer = [UInt8](repeating: 0, count: 1 << 16)
    var pending: [UInt8] = []
    var number = 0
    while true {
        let n = buffer.withUnsafeMutableBytes { read(0, $0.baseAddress!, $0.count) }
        if n < 0 && errno == EINTR { continue }
        if n <= 0 { break }
        var start = 0
        for index in 0..<n where buffer[index] == UInt8(ascii: "\n") {
            pending += buffer[start..<index]
            number += 1
            body(number, pending)
            pending.removeAll(keepingCapacity: true)
            start = index + 1
        }
        pending += buffer[start..<n]
    }
    if !pending.isEmpty { body(number + 1, pending) }
}

/// A bounded queue of input lines: the reader blocks when appenders fall behind.
final class LineQueue: @unchecked Sendable {
    // @unchecked: every access holds `condition`.
    private let condition = NSCondition()
    private var items: [(Int, [UInt8])] = []
    private var closed = false
    private let capacity: Int

    init(capacity: Int) { self.capacity = capacity }

    func put(_ item: (Int, [UInt8])) {
        condition.lock(); defer { condition.unlock() }
        while items.count >= capacity { condition.wait() }
        items.append(item)
        condition.broadcast()
    }

    func take() -> (Int, [UInt8])? {
        condition.lock(); defer { condition.unlock() }
        while items.isEmpty && !closed { condition.wait() }
        guard !items.isEmpty else { return nil }
        condition.broadcast()
        return items.removeFirst()
    }

    func close() {
        condition.lock(); defer { condition.unlock() }
        closed = true
        condition.broadcast()
    }
}

final class LockedCounter: @unchecked Sendable {
    // @unchecked: every access holds `lock`.
    private let lock = NSLock()
    private var count = 0
    func increment() { lock.lock(); count += 1; lock.unlock() }
    var value: Int { lock.lock(); defer { lock.unlock() }; return count }
}
