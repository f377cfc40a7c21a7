import Foundation
import Logging
import SignalDBIngest
import SignalDBLayout
import SignalDBService
import SignalDBStore
import SignalWAL

/// `signaldb-writer dead-letters list|show|replay`: the records the writer could never turn
/// into rows, kept in `<WRITER_WAL_DIR>/dead-letters/` (see ``DeadLetters``).
///
/// `replay` appends each one back to the writer's WAL under the acceptor id
/// `dead-letter-replay` and its old writer LSN, then moves its files to
/// `dead-letters/replayed/`; the writer stores it on its next start (or dead-letters it again,
/// under its new LSN, if it still cannot). A letter whose (`dead-letter-replay`, LSN) the WAL or
/// the store's progress already holds (a replay interrupted between the append and the move)
/// is only moved, so each letter is replayed once. It needs the writer stopped: the WAL's lock
/// tells.
public enum DeadLetterCommands {
    public static let replayAcceptorID = "dead-letter-replay"

    /// Runs one command; returns the process exit code.
    public static func run(_ arguments: [String], settings: WriterSettings) async -> Int32 {
        let walDirectory = settings.walDirectory
        let folder = walDirectory + "/" + DeadLetters.folder
        if let code = DeadLetters.runReadOnly(arguments, walDirectory: walDirectory, tool: "signaldb-writer") { return code }
        do {
            switch arguments.first {
            case "replay":
                let all = DeadLetters.letters(in: folder)
                guard !all.isEmpty else {
                    print("no dead letters in \(folder)")
                    return 0
                }
                let wal: WAL
                do {
                    var configuration = Configuration()
                    configuration.segmentSize = settings.walSegmentBytes
                    configuration.maxRecordSize = settings.maxRecordBytes
                    configuration.spareSegments = settings.walSpareSegments
                    configuration.maxBatchBytes = settings.walBatchBytes
                    configuration.fileAccess = settings.common.fileAccess
                    wal = try await WAL.open(directory: walDirectory, configuration: configuration)
                } catch let error as WALError {
                    if case .locked = error.kind {
                        print("\(walDirectory) is in use: stop signaldb-writer first, then replay")
                        return 1
                    }
                    throw error
                }
                // What an interrupted replay already appended: in the WAL after its checkpoint, or
                // stored (the store's progress for the replay id).
                var already = Set<LSN>()
                let store = try SQLiteStore(path: settings.sqlitePath, busyTimeout: settings.storeBusyTimeout)
                defer { try? store.close() }
                let records = try Writer.reconcile(wal: wal, store: store, logger: Logger(label: "signaldb.writer.dead-letters"))
                for r in records.walRecords where r.acceptor == replayAcceptorID { already.insert(r.lsn) }
                let stored = records.progress.acceptors[replayAcceptorID]
                // A letter above what the store passed is still in the WAL too: the writer reads
                // that record again on its next start, and a replay would store it twice if it
                // maps then (a newer build). Those wait until the writer has stored past them.
                let pending = all.filter { $0.lsn > records.committed }
                if !pending.isEmpty {
                    print("\(pending.count) dead letter(s) above LSN \(records.committed), the last the store holds, are left in place: the WAL still holds them and the writer retries them on its next start. Start the writer, let it catch up, then replay again")
                }
                let done = folder + "/" + ServiceLayout.replayedFolder
                if mkdir(done, settings.common.fileAccess.directoryMode) == 0 {
                    _ = chmod(done, settings.common.fileAccess.directoryMode)
                    try DurableFile.fsyncDirectory(folder)
                } else if errno != EEXIST {
                    throw ServiceStartError("cannot create \(done): \(String(cString: strerror(errno)))")
                }
                var replayed = 0
                for letter in all where letter.lsn <= records.committed {
                    guard let bytes = FileManager.default.contents(atPath: letter.envelopePath).map({ [UInt8]($0) }) else { continue }
                    let held = already.contains(letter.lsn) || stored.map { letter.lsn <= $0.floor || $0.held.contains(letter.lsn) } == true
                    if !held {
                        _ = try await wal.append(WriterRecord(acceptorID: replayAcceptorID, acceptorLSN: letter.lsn, envelope: bytes).encoded())
                    }
                    for path in [letter.envelopePath, letter.jsonPath] {
                        let target = done + "/" + (path as NSString).lastPathComponent
                        guard rename(path, target) == 0 else { throw ServiceStartError("cannot move \(path) to \(target): \(String(cString: strerror(errno)))") }
                    }
                    try DurableFile.fsyncDirectory(done)
                    try DurableFile.fsyncDirectory(folder)
                    replayed += 1
                    print("replayed lsn \(letter.lsn) (\(letter.json["reason"] ?? ""))")
                }
                try await wal.close()
                print("\(replayed) dead letter(s) appended to \(walDirectory); start signaldb-writer to store them")
                return 0
            default:
                print("usage: signaldb-writer dead-letters list | show <lsn> | replay")
                return 64
            }
        } catch {
            print("signaldb-writer dead-letters: \(error)")
            return 1
        }
    }
}
