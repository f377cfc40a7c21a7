import ArgumentParser
import SignalWAL

struct Repair: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Offline: truncate torn tails and move corrupt records and segments to quarantine/.",
        discussion: """
        Without --apply, prints what it would do and changes nothing. With --apply it takes the \
        WAL's lock (refusing while another process holds it, naming the PID) and runs the \
        engine's own recovery, which: zeroes a torn tail; copies each corrupt stretch of records \
        to quarantine/segment-<seq>-offset-<offset>.bin (the records there are lost; later opens \
        skip the stretch); moves a segment with an unusable header to quarantine/. LSNs lost to \
        damage stay lost, so `verify` keeps reporting them after a repair; it no longer reports a \
        torn tail or a corrupt header.

        Exit status: 0 nothing to repair or done, 2 usage or I/O error (a held lock included).
        """)

    @Argument(help: "The WAL directory.") var directory: String
    @Flag(help: "Do it (by default only print the plan).") var apply = false

    func run() throws {
        let wal = try WALDirectory(path: directory)
        if let pid = wal.lockHolder() {
            throw WALError(.locked(pid: pid), path: wal.path + "/" + Format.lockFileName, operation: "repair",
                           hint: "Process \(pid) has this WAL open (PID \(pid)): repair works offline; stop that process first.")
        }
        var configuration = Configuration()
        configuration.segmentSize = wal.writtenSegmentSize() ?? configuration.segmentSize
        configuration.spareSegments = 1
        configuration.logger.logLevel = .critical
        // The engine's own plan: what the next open would do, to the byte.
        let plan = try wal.recoveryPlan(configuration: configuration)
        guard plan.changesFiles else {
            print("nothing to repair: \(plan.report.recordsRecovered) records, every CRC matches")
            return
        }
        for line in Self.describe(plan) { print(line) }
        guard apply else {
            print("dry run: nothing changed; run again with --apply to do this")
            return
        }
        configuration.logger.logLevel = .warning
        let opened = try WAL.open(directory: wal.path, configuration: configuration)
        let report = opened.recoveryReport
        try opened.close()
        print("repaired: \(report.tornTails) torn tail\(report.tornTails == 1 ? "" : "s") truncated (\(report.truncatedBytes) bytes zeroed); \(report.incompleteBatches) incomplete batch\(report.incompleteBatches == 1 ? "" : "es") dropped; \(report.quarantinedFiles.count) file\(report.quarantinedFiles.count == 1 ? "" : "s") quarantined; \(report.recordsLost) records lost to damage")
        for file in report.quarantinedFiles { print("  quarantined \(file)") }
    }

    /// One line per change the plan makes, in the order recovery makes them.
    static func describe(_ plan: RecoveryPlan) -> [String] {
        func name(_ path: String) -> String { path.split(separator: "/").last.map(String.init) ?? path }
        var lines = plan.temporaryFiles.map { "delete: \(name($0)) (a leftover of an interrupted write)" }
        for preserve in plan.preserves {
            let damage = plan.report.damage[preserve.damageIndex]
            var line = "quarantine: copy \(preserve.length) bytes of \(name(preserve.path)) at offset \(preserve.offset) to \(Format.quarantineDirectoryName)/\(Format.quarantineFileName(sequence: preserve.segment, offset: preserve.offset)) (\(damage.kind.rawValue)"
            if let lost = damage.lostLSNs { line += ", LSNs \(lost.lowerBound)-\(lost.upperBound) lost" }
            lines.append(line + ")")
        }
        for file in plan.files {
            switch file.fate {
            case .quarantine(let reason):
                lines.append("quarantine: move \(name(file.path)) to \(Format.quarantineDirectoryName)/ (\(reason.text))")
            case .discard:
                lines.append("delete: \(name(file.path)) (it holds only the rest of an incomplete last batch)")
            case .live, .reuse:
                break
            }
        }
        if let tail = plan.tail {
            lines.append("truncate: zero \(name(tail.path)) from offset \(tail.offset) (\(tail.reason.rawValue)); the next record goes there")
        }
        for damage in plan.report.damage where damage.kind == .incompleteBatch {
            if let lost = damage.lostLSNs { lines.append("drop: LSNs \(lost.lowerBound)-\(lost.upperBound), a batch whose last record never reached the disk (never acknowledged)") }
        }
        return lines
    }
}
