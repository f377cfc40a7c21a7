import ArgumentParser
import Foundation
import SignalWAL

struct Dump: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print records in LSN order.",
        discussion: """
        Read-only and lock-free. Formats:
          jsonl  one object per record:
                 {"lsn":..,"segment":..,"offset":..,"size":..,"crc":..,"payload":"<base64>"}
          hex    a header line per record, then the payload as a hex dump
          raw    the payloads' bytes back to back, nothing else (with --limit 1, one record)
        Records below the checkpoint are included (they are still on disk until their segment
        is reused); pass --from to start elsewhere.
        """)

    enum OutputFormat: String, ExpressibleByArgument, CaseIterable { case jsonl, hex, raw }

    @Argument(help: "The WAL directory.") var directory: String
    @Option(help: "The first LSN to print.") var from: LSN = 1
    @Option(help: "Print at most this many records.") var limit: Int?
    @Option(help: "jsonl, hex or raw.") var format: OutputFormat = .jsonl

    func validate() throws {
        if let limit, limit < 0 { throw ValidationError("--limit must be 0 or more") }
    }

    func run() throws {
        let wal = try WALDirectory(path: directory)
        let files = try wal.segmentFiles()
        let out = BufferedOutput()
        defer { out.flush() }
        var printed = 0
        let limit = self.limit ?? .max
        guard limit > 0 else { return }
        var lastLSN: LSN = 0
        for file in files {
            var done = false
            _ = try wal.scan(file, visit: { record, payload in
                // Segments are scanned in file order; a copy or a quarantine leftover could
                // repeat LSNs, so print each LSN once, in increasing order.
                guard record.lsn >= from, record.lsn > lastLSN else { return true }
                lastLSN = record.lsn
                emit(record, payload, to: out)
                printed += 1
                done = printed >= limit
                return !done
            })
            if done { break }
        }
    }

    private func emit(_ record: WALDirectory.ScannedRecord, _ payload: UnsafeRawBufferPointer, to out: BufferedOutput) {
        switch format {
        case .jsonl:
            let base64 = Data(payload).base64EncodedString()
            out.write("{\"lsn\":\(record.lsn),\"segment\":\(record.segment),\"offset\":\(record.offset),\"size\":\(record.length),\"crc\":\(record.crc),\"payload\":\"\(base64)\"}\n")
        case .hex:
            out.write("lsn \(record.lsn) segment \(record.segment) offset \(record.offset) size \(record.length) crc \(String(format: "%08x", record.crc))\n")
            var line = 0
            while line < payload.count {
                let end = min(line + 16, payload.count)
                let hex = (line..<end).map { String(format: "%02x", payload[$0]) }.joined(separator: " ")
                let text = (line..<end).map { (0x20..<0x7F).contains(payload[$0]) ? String(UnicodeScalar(payload[$0])) : "." }.joined()
                out.write("  " + String(format: "%08x", line) + "  " + hex.padding(toLength: 47, withPad: " ", startingAt: 0) + "  " + text + "\n")
                line = end
            }
        case .raw:
            out.write(payload)
        }
    }
}

/// Standard output through one buffer, written with write(2) in large pieces.
final class BufferedOutput {
    private var buffer: [UInt8] = []

    func write(_ text: String) { buffer.append(contentsOf: text.utf8); if buffer.count >= 1 << 16 { flush() } }
    func write(_ bytes: UnsafeRawBufferPointer) { buffer.append(contentsOf: bytes); if buffer.count >= 1 << 16 { flush() } }

    func flush() {
        var done = 0
        while done < buffer.count {
            let n = buffer.withUnsafeBytes { Glibc.write(1, $0.baseAddress! + done, $0.count - done) }
            if n <= 0 { break }
            done += n
        }
        buffer.removeAll(keepingCapacity: true)
    }
}
