import ArgumentParser
import CSQLite
import Foundation
import SignalDBLayout
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

        The service's view too: for an acceptor's WAL (it holds an acceptor-id), the acceptor \
        id and its forward position (the checkpoint: every record at or below it the writer has \
        acknowledged as durable); for either service, the dead letters waiting and replayed. \
        With --store (the writer's SQLite file, WRITER_STORE), the store's progress: for the \
        writer's own WAL the last LSN stored, and for each acceptor the floor (its checkpoint \
        as last sent), the high-water mark (the highest of its LSNs stored) and the LSNs \
        stored above the floor. The store is opened read-only.
        """)

    @Argument(help: "The WAL directory.") var directory: String
    @Flag(help: "Print one JSON object instead of text.") var json = false
    @Option(help: "The writer's SQLite store, to show its progress (read-only).") var store: String?

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
        var acceptorID: String?
        var forwardedThroughLSN: LSN?
        var deadLetters: Int
        var deadLettersReplayed: Int
        var storeProgress: [StoreProgress]?
    }

    /// One row of the store's `ingest_progress`.
    struct StoreProgress: Codable {
        var source: String
        var writerLSN: Int64?
        var floorLSN: Int64?
        var highWaterLSN: Int64?
        var heldRanges: String?
        var updatedAtUnixNano: Int64?
    }

    func run() throws {
        let wal = try WALDirectory(path: directory)
        let scan = try DirectoryScan(wal, plan: true)
        let usage = wal.diskUsage()
        let idPath = wal.path + "/" + ServiceLayout.acceptorIDFileName
        let acceptorID = Files.exists(idPath)
            ? String(decoding: try Files.readAll(idPath, limit: 256), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines) : nil
        let letters = wal.path + "/" + ServiceLayout.deadLetterFolder
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
            lockHolderPID: wal.lockHolder(),
            acceptorID: acceptorID, forwardedThroughLSN: acceptorID == nil ? nil : checkpointLSN ?? 0,
            deadLetters: Self.letterCount(letters), deadLettersReplayed: Self.letterCount(letters + "/" + ServiceLayout.replayedFolder),
            storeProgress: try store.map { try Self.readProgress($0) })
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
        if let id = output.acceptorID {
            print("acceptor        id \(id); forwarded (acknowledged by the writer) through LSN \(output.forwardedThroughLSN ?? 0); \(output.pendingRecords) record(s) still to forward")
        }
        print("dead letters    \(output.deadLetters) waiting, \(output.deadLettersReplayed) replayed (signalwal dlq list \(output.directory))")
        if let progress = output.storeProgress, let store {
            print("store           \(store): progress of \(progress.count) source(s)")
            for row in progress {
                if row.source == Self.writerSource {
                    print("  writer WAL    stored through writer LSN \(row.writerLSN ?? 0)")
                } else {
                    print("  \(row.source)  floor \(row.floorLSN ?? 0), high-water \(row.highWaterLSN ?? 0), stored above the floor: \(row.heldRanges.map { $0.isEmpty ? "none" : $0 } ?? "none")")
                }
            }
        }
    }

    /// The store's progress row for the writer's own WAL (SQLiteSchema.walSource).
    static let writerSource = ServiceLayout.progressWriterSource

    static func letterCount(_ folder: String) -> Int {
        ((try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []).filter {
            $0.hasSuffix(ServiceLayout.metadataSuffix) && ServiceLayout.deadLetterLSN(fileName: $0) != nil
        }.count
    }

    /// Reads `ingest_progress` through the SQLite C API, read-only, so this tool does not link
    /// the store (GRDB) or lock the writer out.
    static func readProgress(_ path: String) throws -> [StoreProgress] {
        guard Files.exists(path) else {
            throw WALError(.notFound, path: path, operation: "inspect --store", errno: ENOENT, hint: "There is no such store: pass the path in WRITER_STORE (without sqlite:).")
        }
        var db: OpaquePointer?
        defer { sqlite3_close(db) }
        func failure(_ what: String) -> WALError {
            WALError(.io, path: path, operation: "inspect --store",
                     hint: "\(what): \(db.map { String(cString: sqlite3_errmsg($0)) } ?? "cannot open"). Check that it is the writer's SQLite store and readable by uid \(getuid()).")
        }
        guard sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, nil) == SQLITE_OK else { throw failure("cannot open the store") }
        sqlite3_busy_timeout(db, 2000)
        var statement: OpaquePointer?
        defer { sqlite3_finalize(statement) }
        let sql = "SELECT \(ServiceLayout.progressColumns.joined(separator: ", ")) FROM \(ServiceLayout.progressTable) ORDER BY source"
        guard sqlite3_prepare_v2(db, sql, -1, &statement, nil) == SQLITE_OK else { throw failure("cannot read \(ServiceLayout.progressTable)") }
        func integer(_ column: Int32) -> Int64? {
            sqlite3_column_type(statement, column) == SQLITE_NULL ? nil : sqlite3_column_int64(statement, column)
        }
        func text(_ column: Int32) -> String? {
            sqlite3_column_text(statement, column).map { String(cString: $0) }
        }
        var rows: [StoreProgress] = []
        while true {
            let step = sqlite3_step(statement)
            if step == SQLITE_DONE { break }
            guard step == SQLITE_ROW else { throw failure("cannot read \(ServiceLayout.progressTable)") }
            rows.append(StoreProgress(source: text(0) ?? "", writerLSN: integer(1), floorLSN: integer(2), highWaterLSN: integer(3),
                                      heldRanges: text(4), updatedAtUnixNano: integer(5)))
            // Bounded: one row per acceptor; a store with more than this is not one to print.
            if rows.count >= 100_000 { break }
        }
        return rows
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
