import ArgumentParser
import Foundation
import SignalWAL

struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show what a WAL directory holds: segments, checkpoint, pending records, disk use, lock holder.",
        discussion: """
        Read-only and lock-free: safe while a service writes the directory. Prints the format \
        version; every segment with its sequence, file, size, LSN range and state (active: \
        being appended to; sealed: full, holds unconsumed records; spare: prepared, empty; \
        reusable: everything in it is below the checkpoint, or an empty file numbered below the \
        active one; corrupt: its header is unusable); the checkpoint LSN; the pending \
        (unprocessed) records and bytes above it; quarantined files; the bytes the WAL's files \
        occupy, the free space of their filesystem and the percentage used \
        (100 * (1 - available / size), as node_exporter's filesystem metrics give it); and the \
        PID holding the lock, if any (from /proc/locks).
        """)

    @Argument(help: "The WAL directory.") var directory: String
    @Flag(help: "Print one JSON object instead of text.") var json = false

    struct Output: Codable {
        struct Segment: Codable {
            var sequence: UInt64
            var file: String
            var size: Int
            var firstLSN: LSN?
            var lastLSN: LSN?
            var records: Int
            var state: String
        }
        var directory: String
        var formatVersion: UInt32
        var segments: [Segment]
        var checkpointLSN: LSN?
        var checkpointProblem: String?
        var pendingRecords: Int
        var pendingBytes: Int
        var quarantinedFiles: [String]
        var walBytes: Int
        var filesystemFreeBytes: Int
        var filesystemSizeBytes: Int
        var filesystemUsedPercent: Double
        var lockHolderPID: Int32?
    }

    func run() throws {
        let wal = try WALDirectory(path: directory)
        let scan = try DirectoryScan(wal, plan: true)
        let usage = wal.diskUsage()
        var checkpointLSN: LSN?
        var checkpointProblem: String?
        switch scan.checkpoint {
        case .found(let lsn): checkpointLSN = lsn
        case .missing: checkpointProblem = "missing"
        case .corrupt(let reason): checkpointProblem = "corrupt: \(reason)"
        }
        let output = Output(
            directory: wal.path, formatVersion: Format.version,
            segments: scan.segments.map {
                .init(sequence: $0.sequence, file: $0.path, size: $0.fileSize, firstLSN: $0.firstLSN, lastLSN: $0.lastLSN,
                      records: $0.records, state: scan.state(of: $0))
            },
            checkpointLSN: checkpointLSN, checkpointProblem: checkpointProblem,
            pendingRecords: scan.pendingRecords, pendingBytes: scan.pendingBytes,
            quarantinedFiles: wal.quarantinedFiles(), walBytes: usage.used,
            filesystemFreeBytes: usage.free, filesystemSizeBytes: usage.total,
            filesystemUsedPercent: usage.total > 0 ? (100 * (1 - Double(usage.free) / Double(usage.total)) * 10).rounded() / 10 : 0,
            lockHolderPID: wal.lockHolder())
        if json { try printJSON(output); return }

        print("WAL directory   \(output.directory)")
        print("format version  \(output.formatVersion)")
        print("checkpoint      " + (checkpointLSN.map { "LSN \($0)" } ?? "none (\(checkpointProblem ?? "missing")): consumers replay from the oldest record"))
        print("pending         \(output.pendingRecords) records, \(bytes(output.pendingBytes)) of payload above the checkpoint")
        print("lock            " + (output.lockHolderPID.map { "held by PID \($0)" } ?? "not held (no process has this WAL open)"))
        print("disk            the WAL uses \(bytes(output.walBytes)); its filesystem has \(bytes(output.filesystemFreeBytes)) free of \(bytes(output.filesystemSizeBytes)) (\(output.filesystemUsedPercent)% used)")
        print("segments        \(output.segments.count)")
        for segment in output.segments {
            let range = segment.firstLSN.map { "LSN \($0)-\(segment.lastLSN ?? $0) (\(segment.records) records)" } ?? "no records"
            print("  \(String(segment.sequence).padding(toLength: 8, withPad: " ", startingAt: 0)) \(segment.state.padding(toLength: 9, withPad: " ", startingAt: 0)) \(bytes(segment.size).padding(toLength: 10, withPad: " ", startingAt: 0)) \(range)  \(segment.file)")
        }
        print("quarantined     \(output.quarantinedFiles.isEmpty ? "none" : output.quarantinedFiles.joined(separator: "\n                "))")
    }
}

/// Bytes for people: "1.5 MiB".
func bytes(_ count: Int) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"]
    var value = Double(count)
    var unit = 0
    while value >= 1024 && unit < units.count - 1 { value /= 1024; unit += 1 }
    return unit == 0 ? "\(count) B" : String(format: "%.1f %@", value, units[unit])
}
