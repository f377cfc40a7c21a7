import Foundation
import SignalDBIngest
import SignalDBLayout
import SignalDBService
import SignalWAL

/// `signaldb-acceptor dead-letters list|show|replay`: the records the writer refused for good,
/// kept in `<ACCEPTOR_WAL_DIR>/dead-letters/` (see ``DeadLetters``).
///
/// `replay` sends each letter back through the forwarder, once: it appends the envelope to the
/// acceptor's WAL as a new record (the forwarder sends it to the writer on the acceptor's next
/// start), then moves the letter's files to `dead-letters/replayed/`. Before each append it
/// writes `replay-in-progress.json` with the letter's LSN and the WAL LSN the append will get;
/// the acceptor refuses to start while that file exists. So a replay stopped between the
/// append and the move is finished by running it again, which sees from the WAL's next LSN
/// whether the append happened, and never appends a letter twice. It needs the acceptor
/// stopped: the WAL's lock tells.
public enum AcceptorDeadLetterCommands {
    /// Runs one command; returns the process exit code.
    public static func run(_ arguments: [String], settings: AcceptorSettings) async -> Int32 {
        let walDirectory = settings.walDirectory
        if let code = DeadLetters.runReadOnly(arguments, walDirectory: walDirectory, tool: "signaldb-acceptor") { return code }
        guard arguments == ["replay"] else {
            print("usage: signaldb-acceptor dead-letters list | show <lsn> | replay")
            return 64
        }
        do {
            return try await replay(settings: settings)
        } catch {
            print("signaldb-acceptor dead-letters replay: \(error)")
            return 1
        }
    }

    struct Marker: Codable {
        var letterLSN: LSN
        var walLSN: LSN
    }

    static func markerPath(_ walDirectory: String) -> String {
        walDirectory + "/" + ServiceLayout.deadLetterFolder + "/" + ServiceLayout.replayMarkerFileName
    }

    /// Thrown by start-up while an interrupted replay's marker exists.
    static func checkNoReplayInProgress(walDirectory: String) throws {
        let path = markerPath(walDirectory)
        guard !FileManager.default.fileExists(atPath: path) else {
            throw ServiceStartError("\(path) exists: a dead-letter replay was interrupted. Run `signaldb-acceptor dead-letters replay` (same ACCEPTOR_WAL_DIR) to finish it, then start the acceptor")
        }
    }

    static func replay(settings: AcceptorSettings) async throws -> Int32 {
        let walDirectory = settings.walDirectory
        let folder = walDirectory + "/" + ServiceLayout.deadLetterFolder
        let markerPath = markerPath(walDirectory)
        var marker = FileManager.default.contents(atPath: markerPath).flatMap { try? JSONDecoder().decode(Marker.self, from: $0) }
        if FileManager.default.fileExists(atPath: markerPath) && marker == nil {
            print("\(markerPath) cannot be read: check it by hand (it names the letter being replayed), remove it, then replay again")
            return 1
        }
        var all = DeadLetters.letters(in: folder)
        guard !all.isEmpty || marker != nil else {
            print("no dead letters in \(folder)")
            return 0
        }
        let wal: WAL
        do {
            var configuration = Acceptor.walConfiguration(settings)
            // Group commit whatever the service uses: a letter is moved out of dead-letters/
            // only once its record is on disk.
            configuration.durability = .groupCommit
            wal = try await WAL.open(directory: walDirectory, configuration: configuration)
        } catch let error as WALError {
            if case .locked = error.kind {
                print("\(walDirectory) is in use: stop signaldb-acceptor first, then replay")
                return 1
            }
            throw error
        }
        // Again, now that the lock is held: another replay may have written its marker, or
        // moved letters, between the first look and the open.
        marker = FileManager.default.contents(atPath: markerPath).flatMap { try? JSONDecoder().decode(Marker.self, from: $0) }
        all = DeadLetters.letters(in: folder)
        if FileManager.default.fileExists(atPath: markerPath) && marker == nil {
            try await wal.close()
            print("\(markerPath) cannot be read: check it by hand (it names the letter being replayed), remove it, then replay again")
            return 1
        }
        let access = settings.common.fileAccess
        let done = folder + "/" + ServiceLayout.replayedFolder
        if mkdir(done, access.directoryMode) == 0 {
            _ = chmod(done, access.directoryMode)
            try DurableFile.fsyncDirectory(folder)
        } else if errno != EEXIST {
            throw ServiceStartError("cannot create \(done): \(String(cString: strerror(errno)))")
        }
        func move(_ letter: DeadLetters.Letter) throws {
            for path in [letter.envelopePath, letter.jsonPath] {
                let target = done + "/" + (path as NSString).lastPathComponent
                guard rename(path, target) == 0 else {
                    // Moved by an interrupted run that stopped between the two renames.
                    if errno == ENOENT, FileManager.default.fileExists(atPath: target) { continue }
                    throw ServiceStartError("cannot move \(path) to \(target): \(String(cString: strerror(errno)))")
                }
            }
            try DurableFile.fsyncDirectory(done)
            unlink(markerPath)
            try DurableFile.fsyncDirectory(folder)
            print("replayed lsn \(letter.lsn) (\(letter.json["reason"] ?? ""))")
        }
        // The interrupted run's letter first. Its append happened when the WAL holds, at the
        // LSN the marker names, a record equal to the letter (the acceptor refuses to start
        // while the marker exists, so nothing has forwarded or checkpointed it since).
        var pending = all
        if let marker, let index = pending.firstIndex(where: { $0.lsn == marker.letterLSN }) {
            let letter = pending.remove(at: index)
            let bytes = FileManager.default.contents(atPath: letter.envelopePath).map { [UInt8]($0) }
                ?? FileManager.default.contents(atPath: done + "/" + (letter.envelopePath as NSString).lastPathComponent).map { [UInt8]($0) }
            let held = marker.walLSN < wal.nextLSN ? try? wal.records(from: marker.walLSN, limit: 1).first(where: { _ in true }) : nil
            if let held, held.lsn == marker.walLSN, bytes.map({ held.payload.elementsEqual($0) }) == true {
                print("lsn \(marker.letterLSN) was appended by the interrupted replay as WAL LSN \(marker.walLSN)")
                try move(letter)
            } else {
                pending.insert(letter, at: 0)
            }
        }
        var replayed = 0
        for letter in pending {
            guard let bytes = FileManager.default.contents(atPath: letter.envelopePath).map({ [UInt8]($0) }) else {
                print("lsn \(letter.lsn): \(letter.envelopePath) is missing; left in place")
                continue
            }
            let expected = wal.nextLSN
            let data = try JSONEncoder().encode(Marker(letterLSN: letter.lsn, walLSN: expected))
            try DurableFile.write([UInt8](data), to: markerPath, mode: access.fileMode)
            let lsn: LSN
            do {
                lsn = try await wal.append(bytes)
            } catch {
                // Refused before anything was written (the backlog bound, a full disk, a record
                // over the limit): the marker has nothing to guard, and must not block start-up.
                if wal.nextLSN == expected {
                    unlink(markerPath)
                    try? DurableFile.fsyncDirectory(folder)
                }
                throw error
            }
            guard lsn == expected else {
                throw ServiceStartError("the WAL gave LSN \(lsn), not \(expected): another writer appended during the replay; stop it and replay again")
            }
            try move(letter)
            replayed += 1
        }
        // A marker whose letter is already gone (moved, and the run stopped before removing it).
        if FileManager.default.fileExists(atPath: markerPath) {
            unlink(markerPath)
            try DurableFile.fsyncDirectory(folder)
        }
        try await wal.close()
        print("\(replayed) dead letter(s) appended to \(walDirectory); start signaldb-acceptor to forward them")
        return 0
    }
}
