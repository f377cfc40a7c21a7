import Foundation
import Logging
import SignalDBIngest
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

    struct Letter {
        var lsn: LSN
        var json: [String: Any]
        var envelopePath: String
        var jsonPath: String
    }

    static func letters(in folder: String) throws -> [Letter] {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: folder) else { return [] }
        return names.filter { $0.hasPrefix("lsn-") && $0.hasSuffix(".json") }.sorted().compactMap { name in
            let base = String(name.dropLast(".json".count))
            guard let lsn = LSN(base.dropFirst("lsn-".count)),
                  let data = FileManager.default.contents(atPath: folder + "/" + name),
                  let json = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else { return nil }
            return Letter(lsn: lsn, json: json, envelopePath: folder + "/" + base + ".envelope", jsonPath: folder + "/" + name)
        }
    }

    /// Runs one command; returns the process exit code.
    public static func run(_ arguments: [String], settings: WriterSettings) async -> Int32 {
        let walDirectory = settings.walDirectory
        let folder = walDirectory + "/" + DeadLetters.folder
        do {
            switch arguments.first {
            case "list":
                let all = try letters(in: folder)
                print("\(all.count) dead letter(s) in \(folder)")
                for l in all {
                    print("lsn \(l.lsn)  tenant=\(l.json["tenant"] ?? "")  dataset=\(l.json["dataset"] ?? "")  signal=\(l.json["signal"] ?? "")  items=\(l.json["items"] ?? 0)  at=\(l.json["dead_lettered_at"] ?? "")  reason: \(l.json["reason"] ?? "")")
                }
                return 0
            case "show":
                guard arguments.count == 2, let lsn = LSN(arguments[1]) else {
                    print("usage: signaldb-writer dead-letters show <lsn>")
                    return 64
                }
                guard let letter = try letters(in: folder).first(where: { $0.lsn == lsn }) else {
                    print("no dead letter with LSN \(lsn) in \(folder) (see: signaldb-writer dead-letters list)")
                    return 1
                }
                let data = try JSONSerialization.data(withJSONObject: letter.json, options: [.prettyPrinted, .sortedKeys])
                print(String(decoding: data, as: UTF8.self))
                let bytes = FileManager.default.contents(atPath: letter.envelopePath).map { [UInt8]($0) } ?? []
                if let envelope = try? Envelope(decoding: bytes) {
                    print("envelope: \(envelope.signal), \(envelope.itemCount) items, tenant \(envelope.tenant), dataset \(envelope.dataset), \(envelope.payload.count) payload bytes, received at \(envelope.receivedAtUnixNano) ns")
                } else {
                    print("\(letter.envelopePath): \(bytes.count) bytes that are not a valid envelope")
                }
                return 0
            case "replay":
                let all = try letters(in: folder)
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
                let done = folder + "/replayed"
                if mkdir(done, 0o700) != 0 && errno != EEXIST { throw ServiceStartError("cannot create \(done): \(String(cString: strerror(errno)))") }
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
