import ArgumentParser
import Foundation
import SignalDBLayout
import SignalWAL

/// `signalwal dlq`: the dead letters a service keeps beside its WAL (`DIR/dead-letters/`).
/// list, show and purge work on the files; replay is the owning service's own command, run
/// with DIR as its WAL directory, because only the service can send a letter back through its
/// path (the acceptor's forwarder, the writer's store) exactly once.
struct DeadLetterQueue: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dlq",
        abstract: "List, show, replay or purge the dead letters of a service's WAL directory.",
        discussion: """
        A dead letter is a record its service could never deliver: the writer refused it for \
        good (acceptor), or it could not become rows (writer). Each is two files in \
        DIR/dead-letters/: lsn-<LSN>.envelope (the record) and lsn-<LSN>.json (why, tenant, \
        dataset, signal, items, when). Replayed letters move to dead-letters/replayed/.
        """,
        subcommands: [List.self, Show.self, Replay.self, Purge.self])

    static func folder(_ directory: String) -> String { directory + "/" + ServiceLayout.deadLetterFolder }

    struct Letter {
        var lsn: UInt64
        var metadata: [String: Any]
        var base: String
    }

    static func letters(in folder: String) -> [Letter] {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: folder) else { return [] }
        return names.filter { $0.hasSuffix(ServiceLayout.metadataSuffix) }.sorted().compactMap { name in
            guard let lsn = ServiceLayout.deadLetterLSN(fileName: name) else { return nil }
            let data = FileManager.default.contents(atPath: folder + "/" + name) ?? Data()
            let json = (try? JSONSerialization.jsonObject(with: data) as? [String: Any]) ?? ["reason": "(metadata unreadable)"]
            return Letter(lsn: lsn, metadata: json, base: folder + "/" + ServiceLayout.deadLetterBaseName(lsn: lsn))
        }
    }

    static func requireDirectory(_ directory: String) throws {
        guard Files.isDirectory(directory) else {
            throw WALError(.notFound, path: directory, operation: "dlq", errno: ENOENT, hint: "There is no such WAL directory: check the path (ACCEPTOR_WAL_DIR or WRITER_WAL_DIR).")
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "One line per dead letter.")
        @Argument(help: "The service's WAL directory.") var directory: String

        func run() throws {
            try requireDirectory(directory)
            let all = letters(in: folder(directory))
            let replayed = letters(in: folder(directory) + "/" + ServiceLayout.replayedFolder).count
            print("\(all.count) dead letter(s) in \(folder(directory))" + (replayed > 0 ? " (and \(replayed) replayed)" : ""))
            for l in all {
                let m = l.metadata
                print("lsn \(l.lsn)  tenant=\(m["tenant"] ?? "")  dataset=\(m["dataset"] ?? "")  signal=\(m["signal"] ?? "")  items=\(m["items"] ?? 0)  at=\(m["dead_lettered_at"] ?? "")  reason: \(m["reason"] ?? "")")
            }
        }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "One dead letter's metadata and size.")
        @Argument(help: "The service's WAL directory.") var directory: String
        @Argument(help: "The letter's LSN (from list).") var lsn: UInt64

        func run() throws {
            try requireDirectory(directory)
            guard let letter = letters(in: folder(directory)).first(where: { $0.lsn == lsn }) else {
                writeError("signalwal: no dead letter with LSN \(lsn) in \(folder(directory)) (see: signalwal dlq list \(directory))")
                throw ExitCode(1)
            }
            let data = try JSONSerialization.data(withJSONObject: letter.metadata, options: [.prettyPrinted, .sortedKeys])
            print(String(decoding: data, as: UTF8.self))
            let envelope = letter.base + ServiceLayout.envelopeSuffix
            var st = stat()
            print(stat(envelope, &st) == 0 ? "envelope: \(envelope), \(st.st_size) bytes" : "envelope: \(envelope) is missing")
        }
    }

    struct Replay: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Send the dead letters back through their service, each once (the service must be stopped).",
            discussion: """
            Runs the owning service's replay with DIR as its WAL directory: \
            `signaldb-acceptor dead-letters replay` for an acceptor's WAL (each letter is \
            appended to the acceptor's WAL again, and forwarded on its next start), \
            `signaldb-writer dead-letters replay` for a writer's (each letter goes back to the \
            writer's WAL and into the store on its next start; WRITER_STORE must name the same \
            store). An acceptor's WAL holds an acceptor-id and a writer's letters name their \
            acceptor; when neither tells (an acceptor restored with --new-identity that has not \
            started yet), --service says. The \
            service binary is looked up next to signalwal, then on PATH. Other settings come \
            from the environment, as for the service.
            """)
        @Argument(help: "The service's WAL directory.") var directory: String
        @Option(help: "acceptor or writer, when DIR does not tell.") var service: String?

        func validate() throws {
            if let service, service != "acceptor" && service != "writer" { throw ValidationError("--service must be acceptor or writer") }
        }

        func run() throws {
            try requireDirectory(directory)
            let hasID = Files.exists(directory + "/" + ServiceLayout.acceptorIDFileName)
            let namesAcceptor = letters(in: folder(directory)).contains { $0.metadata["acceptor_id"] != nil }
            let detected: String? = hasID ? "acceptor" : namesAcceptor ? "writer" : nil
            if let service, let detected, service != detected {
                writeError("signalwal: \(directory) is a \(detected)'s WAL (\(hasID ? "it holds acceptor-id" : "its letters name their acceptor")), not a \(service)'s")
                throw ExitCode(2)
            }
            guard let owner = detected ?? service else {
                writeError("signalwal: cannot tell which service owns \(directory) (no acceptor-id, and no letter names an acceptor): pass --service acceptor or --service writer")
                throw ExitCode(2)
            }
            let isAcceptor = owner == "acceptor"
            let binary = isAcceptor ? "signaldb-acceptor" : "signaldb-writer"
            setenv(isAcceptor ? "ACCEPTOR_WAL_DIR" : "WRITER_WAL_DIR", directory, 1)
            let beside = (Self.ownPath() as NSString).deletingLastPathComponent + "/" + binary
            let path = access(beside, X_OK) == 0 ? beside : binary
            let arguments = [path, "dead-letters", "replay"]
            var argv = arguments.map { strdup($0) } + [nil]
            // Replaces this process: the service's output and exit status are the command's.
            execvp(path, &argv)
            writeError("signalwal: cannot run \(binary) (\(String(cString: strerror(errno)))): install it next to signalwal or on PATH, or run `\(binary) dead-letters replay` with \(isAcceptor ? "ACCEPTOR_WAL_DIR" : "WRITER_WAL_DIR")=\(directory)")
            throw ExitCode(2)
        }

        static func ownPath() -> String {
            var buffer = [Int8](repeating: 0, count: 4096)
            let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
            return n > 0 ? String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self) : CommandLine.arguments[0]
        }
    }

    struct Purge: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Delete dead letters for good: one (--lsn) or all (--all), replayed ones included with --all.")
        @Argument(help: "The service's WAL directory.") var directory: String
        @Option(help: "The LSN of the letter to delete.") var lsn: UInt64?
        @Flag(help: "Delete every letter, and the replayed ones.") var all = false

        func validate() throws {
            guard (lsn != nil) != all else { throw ValidationError("say which: --lsn <LSN> for one letter, or --all") }
        }

        func run() throws {
            try requireDirectory(directory)
            let folders = [folder(directory)] + (all ? [folder(directory) + "/" + ServiceLayout.replayedFolder] : [])
            var removed = 0
            for folder in folders {
                var changed = false
                for letter in letters(in: folder) where all || letter.lsn == lsn {
                    for suffix in [ServiceLayout.envelopeSuffix, ServiceLayout.metadataSuffix] {
                        let path = letter.base + suffix
                        if unlink(path) != 0 && errno != ENOENT { throw Files.error("unlink", path) }
                    }
                    removed += 1
                    changed = true
                }
                if changed { try Files.syncDirectory(folder) }
            }
            if let lsn, removed == 0 {
                writeError("signalwal: no dead letter with LSN \(lsn) in \(folder(directory)) (see: signalwal dlq list \(directory))")
                throw ExitCode(1)
            }
            print("purged \(removed) dead letter(s) from \(folder(directory))")
        }
    }
}
