import ArgumentParser
#if canImport(Glibc)
import Glibc
#endif
import SignalWAL
import SignalWALBench

/// `signalwal`: the operators' tool for a WAL directory.
///
/// Exit statuses: 0 success (for `verify`: no damage), 1 damage found or some input refused,
/// 2 a usage error or an I/O error (a missing directory, permission denied, a held lock, an
/// unknown format version). Errors are one line on standard error, never a stack trace.
@main
struct SignalWALTool: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "signalwal",
        abstract: "Inspect, verify, dump, append to, back up, restore and repair a SignalWAL write-ahead-log directory.",
        discussion: """
        A WAL directory holds fixed-size segment files (segment-000001.wal, ...), a .checkpoint \
        (the highest LSN every consumer has processed), a .lock held by the process writing it, \
        and quarantine/ for damaged bytes recovery set aside. inspect, verify and dump only read: \
        they never take the lock and are safe while a service writes the directory (the newest \
        records may then still be mid-write); so is backup, which copies around that. append and repair --apply open the WAL \
        and need its lock.

        Exit status: 0 success, 1 damage found (verify, backup, restore) or input refused \
        (append), 2 usage or I/O error.
        """,
        subcommands: [Inspect.self, Verify.self, Dump.self, Append.self, Backup.self, Restore.self, Repair.self, DeadLetterQueue.self, Bench.self])

    static func main() {
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch let code as ExitCode {
            Glibc.exit(code.rawValue)
        } catch let error as WALError {
            fail(error.description)
        } catch {
            let code = exitCode(for: error)
            // --help and --version are not errors.
            if code == .success { exit(withError: error) }
            fail(fullMessage(for: error).split(separator: "\n").first.map(String.init) ?? "\(error)", showUsage: true)
        }
    }

    /// One line on standard error, then exit status 2.
    static func fail(_ message: String, showUsage: Bool = false) -> Never {
        writeError("signalwal: \(message)" + (showUsage ? " (see signalwal --help)" : ""))
        Glibc.exit(2)
    }
}

/// Writes a line to standard error at once (unbuffered).
func writeError(_ line: String) {
    let text = line.hasSuffix("\n") ? line : line + "\n"
    _ = text.withCString { write(2, $0, strlen($0)) }
}

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Benchmarks: the same harness as signalwal-bench.", subcommands: BenchCommands.subcommands)
}
