#if canImport(Glibc)
import Glibc
#endif
import Logging
import SignalWAL

/// The fuzz target's body, kept in the main package so the test suite replays the committed
/// corpus through exactly the code the fuzzer ran (`Fuzz/` holds the libFuzzer entry point).
///
/// An input becomes a WAL directory and recovery runs on it through the public API:
///
/// ```
/// byte 0          bit 6:    image mode (below)
///                 bits 0-1: number of segment files (value % 3 + 1)
///                 bit 7:    the last 32 bytes are a `.checkpoint` file
/// bytes 1...      split evenly into the segment files, each padded with zeros to 1 MiB
///                 (the segment size the engine is configured with)
/// ```
///
/// In image mode the bytes after the first are one segment image scanned in memory, exactly as
/// long as the input (no padding, no size check), so AddressSanitizer sees any read past its
/// end, and thousands of inputs run each second instead of dozens.
///
/// Recovery must never crash, hang or read out of bounds (AddressSanitizer and libFuzzer check
/// those); this body checks what recovery returns: LSNs strictly increasing, nothing returned
/// at or below the checkpoint, and a second open returning the same records and report
/// (recovery is idempotent). Open may throw a ``WALError`` (a newer format version, say); it
/// must not throw anything else.
public enum RecoveryFuzzInput {
    public static let segmentSize = 1 << 20

    /// Runs one input in a fresh directory under `scratch` and returns the broken invariants
    /// (empty when recovery behaved).
    public static func run(_ input: UnsafeRawBufferPointer, scratch: String) -> [String] {
        let directory = scratch + "/wal-\(getpid())"
        removeTree(directory)
        defer { removeTree(directory) }
        guard mkdir(scratch, 0o755) == 0 || errno == EEXIST, mkdir(directory, 0o755) == 0 else {
            return ["cannot create \(directory): \(String(cString: strerror(errno)))"]
        }
        guard let selector = input.first else { return [] }
        var body = UnsafeRawBufferPointer(rebasing: input[1...])
        if selector & 0x40 != 0 { return scanImage(body) }
        if selector & 0x80 != 0 && body.count >= Format.checkpointSize {
            let split = body.count - Format.checkpointSize
            writeFile(directory + "/" + Format.checkpointFileName, UnsafeRawBufferPointer(rebasing: body[split...]), padTo: 0)
            body = UnsafeRawBufferPointer(rebasing: body[..<split])
        }
        let files = Int(selector & 0x03) % 3 + 1
        let share = body.count / files
        for index in 0..<files {
            let end = index == files - 1 ? body.count : (index + 1) * share
            writeFile(directory + "/" + Format.segmentFileName(UInt64(index + 1)),
                      UnsafeRawBufferPointer(rebasing: body[index * share..<end]), padTo: segmentSize)
        }

        var problems: [String] = []
        var first: (records: [(LSN, Int)], report: RecoveryReport)?
        for pass in 1...2 {
            do {
                let wal = try WAL.open(directory: directory, configuration: configuration())
                var records: [(LSN, Int)] = []
                var previous = wal.checkpointLSN
                for record in try wal.readVisible(from: wal.checkpointLSN + 1).records {
                    if record.lsn <= previous { problems.append("pass \(pass): LSN \(record.lsn) after \(previous)") }
                    previous = record.lsn
                    records.append((record.lsn, record.payload.count))
                }
                let report = wal.recoveryReport
                try wal.close()
                if let first {
                    if !first.records.elementsEqual(records, by: { $0 == $1 }) {
                        problems.append("the second open returned other records (\(first.records.count) then \(records.count))")
                    }
                    if first.report.lsnRange != report.lsnRange || first.report.checkpointLSN != report.checkpointLSN {
                        problems.append("the second open reported differently: \(first.report) then \(report)")
                    }
                } else {
                    first = (records, report)
                }
            } catch let error as WALError {
                if error.description.isEmpty { problems.append("an error without a message") }
                break
            } catch {
                problems.append("pass \(pass): open threw something other than WALError: \(error)")
                break
            }
        }
        return problems
    }

    /// Scans `image` twice in memory and checks what the scanner reports: records in bounds,
    /// in increasing offset and LSN order, damage in bounds, the same answer both times.
    static func scanImage(_ image: UnsafeRawBufferPointer) -> [String] {
        var problems: [String] = []
        var passes: [[WALDirectory.ScannedRecord]] = []
        for _ in 1...2 {
            var records: [WALDirectory.ScannedRecord] = []
            do {
                let summary = try WALDirectory.scan(image: image, sequence: 1, path: "fuzz-image", checkSize: false, visit: { record, payload in
                    if payload.count != record.length { problems.append("payload of \(payload.count) bytes for a \(record.length)-byte record") }
                    records.append(record)
                    return true
                })
                for (previous, next) in zip(records, records.dropFirst()) where next.offset <= previous.offset || next.lsn <= previous.lsn {
                    problems.append("record at \(next.offset) (LSN \(next.lsn)) after \(previous.offset) (LSN \(previous.lsn))")
                }
                for record in records where record.offset < Format.segmentHeaderBlock
                    || record.offset + Format.recordHeaderSize + record.length > image.count {
                    problems.append("record at \(record.offset) of \(record.length) bytes outside a \(image.count)-byte image")
                }
                for damage in summary.damage where damage.offset < 0 || damage.length < 0 || damage.offset + damage.length > image.count {
                    problems.append("damage \(damage) outside a \(image.count)-byte image")
                }
                if summary.endOffset > image.count { problems.append("end offset \(summary.endOffset) past \(image.count)") }
            } catch let error as WALError {
                if error.description.isEmpty { problems.append("an error without a message") }
            } catch {
                problems.append("scan threw something other than WALError: \(error)")
            }
            passes.append(records)
        }
        if passes[0] != passes[1] { problems.append("two scans of the same bytes disagree") }
        return problems
    }

    /// The fuzzed WAL: 1 MiB segments, the mmap backend (tmpfs refuses O_DIRECT), no logs.
    static func configuration() -> Configuration {
        Configuration(segmentSize: segmentSize, spareSegments: 1, durability: .groupCommit, backend: .mmap,
                      logger: Logger(label: "signalwal-fuzz", factory: { _ in SwiftLogNoOpLogHandler() }))
    }

    private static func writeFile(_ path: String, _ bytes: UnsafeRawBufferPointer, padTo size: Int) {
        let fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0o644)
        precondition(fd >= 0, "cannot create \(path): \(String(cString: strerror(errno)))")
        defer { close(fd) }
        var done = 0
        while done < bytes.count {
            let n = write(fd, bytes.baseAddress! + done, bytes.count - done)
            precondition(n > 0, "cannot write \(path): \(String(cString: strerror(errno)))")
            done += n
        }
        if size > bytes.count { precondition(ftruncate(fd, off_t(size)) == 0) }
    }

    /// `rm -rf` for the small trees this makes (one level of subdirectories: quarantine/).
    private static func removeTree(_ path: String) {
        guard let dir = opendir(path) else { return }
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
            if name == "." || name == ".." { continue }
            let child = path + "/" + name
            if unlink(child) != 0 { removeTree(child) }
        }
        closedir(dir)
        rmdir(path)
    }

    /// Seed inputs made by the engine itself: the first 16 KiB of real segments (valid header,
    /// valid records), alone, in pairs and with a checkpoint, so the fuzzer starts from bytes
    /// that get past the CRCs.
    public static func seeds(scratch: String) throws -> [[UInt8]] {
        let directory = scratch + "/seed-wal-\(getpid())"
        removeTree(directory)
        defer { removeTree(directory) }
        let wal = try WAL.open(directory: directory, configuration: configuration())
        var next: UInt8 = 0
        for count in [1, 7, 60, 200, 700, 1500, 3000] {
            for _ in 0..<12 {
                next &+= 1
                try wal.append([UInt8](repeating: next, count: count))
            }
        }
        for _ in 0..<900 { try wal.append([UInt8](repeating: 0xEE, count: 1200)) } // into a second segment
        try wal.checkpoint(upTo: 30)
        try wal.close()
        func prefix(_ name: String, _ count: Int) -> [UInt8] {
            var bytes = [UInt8](repeating: 0, count: count)
            let fd = open(directory + "/" + name, O_RDONLY)
            defer { close(fd) }
            let n = pread(fd, &bytes, count, 0)
            return Array(bytes.prefix(max(0, n)))
        }
        let first = prefix(Format.segmentFileName(1), 16_384)
        let second = prefix(Format.segmentFileName(2), 16_384)
        let checkpoint = prefix(Format.checkpointFileName, Format.checkpointSize)
        return [
            [0x40] + first,
            [0x40] + Array(second.prefix(6000)),
            [0] + first,
            [0] + Array(first.prefix(4096 + 200)),
            [1] + Array(first.prefix(8192)) + Array(second.prefix(8192)),
            [0x80] + first + checkpoint,
            [0x81] + Array(first.prefix(8192)) + Array(second.prefix(8192)) + checkpoint,
        ]
    }
}
