import ArgumentParser
import Foundation
import SignalWAL

struct Verify: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Read every record and check its CRC; report torn tails, corrupt records and corrupt headers.",
        discussion: """
        Read-only and lock-free. On a terminal, standard error shows a progress bar with the rate \
        and the time left; otherwise a plain progress line about once a second. Each problem is \
        reported with its segment, file, offset and the LSNs around it. Run it on a stopped WAL for \
        an exact answer: on one being written, the newest records may be mid-write and read as a \
        torn tail or a zeroed stretch (pages are read at slightly different moments).

        Exit status: 0 when clean, 1 when damage was found, 2 for a usage or I/O error.
        """)

    @Argument(help: "The WAL directory.") var directory: String
    @Flag(help: "Print one JSON object instead of text.") var json = false

    struct Output: Codable {
        var directory: String
        var clean: Bool
        var segments: Int
        var records: Int
        var payloadBytes: Int
        var problems: [DirectoryScan.Problem]
    }

    func run() throws {
        let wal = try WALDirectory(path: directory)
        let meter = ProgressMeter(label: "verify")
        let scan = try DirectoryScan(wal) { done, total in meter.update(done: done, total: total) }
        meter.finish()
        let problems = scan.problems
        let output = Output(directory: wal.path, clean: problems.isEmpty, segments: scan.segments.count,
                            records: scan.segments.reduce(0) { $0 + $1.records },
                            payloadBytes: scan.segments.reduce(0) { $0 + $1.payloadBytes }, problems: problems)
        if json {
            try printJSON(output)
        } else {
            for problem in problems { print(problem.line) }
            print(problems.isEmpty
                  ? "clean: \(output.records) records in \(output.segments) segments, every CRC matches"
                  : "damaged: \(problems.count) problem\(problems.count == 1 ? "" : "s") in \(output.segments) segments (\(output.records) good records)")
        }
        if !problems.isEmpty { throw ExitCode(1) }
    }
}

/// Progress on standard error: a redrawn bar with rate and ETA on a terminal, otherwise a plain
/// line about once a second (so logs stay readable).
final class ProgressMeter {
    let label: String
    let terminal = isatty(2) == 1
    private let started = Date()
    private var lastPrinted = Date.distantPast
    private var drewBar = false
    private var lastDone = -1

    init(label: String) { self.label = label }

    func update(done: Int, total: Int) {
        let now = Date()
        guard done != lastDone, now.timeIntervalSince(lastPrinted) >= (terminal ? 0.1 : 1.0) || done == total else { return }
        lastDone = done
        lastPrinted = now
        let elapsed = max(now.timeIntervalSince(started), 0.001)
        let rate = Double(done) / elapsed
        let eta = rate > 0 ? Double(total - done) / rate : 0
        let fraction = total > 0 ? Double(done) / Double(total) : 1
        let stats = "\(Int(fraction * 100))% \(bytes(done))/\(bytes(total)) \(bytes(Int(rate)))/s ETA \(String(format: "%.0f", eta))s"
        if terminal {
            let width = 30
            let filled = Int(fraction * Double(width))
            writeRaw("\r\(label) [" + String(repeating: "#", count: filled) + String(repeating: " ", count: width - filled) + "] " + stats + "   ")
            drewBar = true
        } else {
            writeError("\(label): \(stats)")
        }
    }

    func finish() {
        if drewBar { writeRaw("\n") }
    }

    private func writeRaw(_ text: String) {
        _ = text.withCString { write(2, $0, strlen($0)) }
    }
}
