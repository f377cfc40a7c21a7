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
        let scan = try DirectoryScan(wal)
        let problems = scan.problems
        guard !problems.isEmpty else {
            print("nothing to repair: \(scan.segments.reduce(0) { $0 + $1.records }) records, every CRC matches")
            return
        }
        for problem in problems { print(plan(for: problem)) }
        guard apply else {
            print("dry run: nothing changed; run again with --apply to do this")
            return
        }
        var configuration = Configuration()
        configuration.segmentSize = wal.writtenSegmentSize() ?? configuration.segmentSize
        configuration.spareSegments = 1
        configuration.logger.logLevel = .warning
        let opened = try WAL.open(directory: wal.path, configuration: configuration)
        let report = opened.recoveryReport
        try opened.close()
        print("repaired: \(report.tornTails) torn tail\(report.tornTails == 1 ? "" : "s") truncated (\(report.truncatedBytes) bytes zeroed); \(report.quarantinedFiles.count) file\(report.quarantinedFiles.count == 1 ? "" : "s") quarantined; \(report.recordsLost) records lost to damage")
        for file in report.quarantinedFiles { print("  quarantined \(file)") }
    }

    private func plan(for problem: DirectoryScan.Problem) -> String {
        let name = problem.file.split(separator: "/").last.map(String.init) ?? problem.file
        switch problem.kind {
        case "torn-tail":
            return "truncate: zero \(problem.length) bytes of \(name) from offset \(problem.offset) (a partial record after LSN \(problem.afterLSN ?? 0))"
        case "corrupt-records":
            return "quarantine: copy \(problem.length) bytes of \(name) at offset \(problem.offset) to \(Format.quarantineDirectoryName)/\(Format.quarantineFileName(sequence: problem.segment, offset: problem.offset)); " + problem.line
        case "corrupt-header":
            return "quarantine: move \(name) to \(Format.quarantineDirectoryName)/ (\(problem.detail))"
        default:
            return "report only: " + problem.line
        }
    }
}

