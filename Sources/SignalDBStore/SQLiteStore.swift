import Foundation
import GRDB

/// The embedded store: one SQLite database (GRDB), WAL journal mode, `synchronous = FULL`.
///
/// FULL, not NORMAL: in WAL mode NORMAL may lose the last commits on a power cut, and the
/// writer checkpoints its own WAL right after a commit, so a commit that is lost after the
/// writer's WAL has let go of the records would lose them for good.
public final class SQLiteStore: Store {
    let queue: DatabaseQueue
    public let path: String
    /// `<path>.lock`, held (flock) while open: two writers storing into one database would each
    /// trust the other's progress and skip records.
    private let lockDescriptor: Int32

    /// Opens (creating) the database at `path` and brings its schema to ``SQLiteSchema/version``.
    /// `busyTimeout`: how long a commit waits for another connection's lock before it fails
    /// (and the writer retries it). `fileMode`: the permission bits of the files created (the
    /// database and its lock; SQLite gives its `-wal` and `-shm` files the database's).
    public init(path: String, busyTimeout: Double = 1.0, fileMode: mode_t = 0o600) throws {
        self.path = path
        let lockPath = path + ".lock"
        // Created here, not by SQLite: SQLite would use 0644 (less the umask), and its journal
        // files copy the database's mode.
        let created = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, fileMode)
        if created >= 0 {
            _ = fchmod(created, fileMode)
            _ = fsync(created)
            Glibc.close(created)
            let directory = (path as NSString).deletingLastPathComponent
            let dfd = open(directory.isEmpty ? "." : directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
            if dfd >= 0 { _ = fsync(dfd); Glibc.close(dfd) }
        }
        var fd = open(lockPath, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, fileMode)
        if fd >= 0 {
            _ = fchmod(fd, fileMode)
        } else if errno == EEXIST {
            fd = open(lockPath, O_RDWR | O_CLOEXEC)
        }
        guard fd >= 0 else {
            throw StoreError("cannot open \(lockPath): \(String(cString: strerror(errno))). Check that the store's directory exists and is writable by the service user")
        }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            Glibc.close(fd)
            throw StoreError("\(path) is in use by another signaldb-writer (\(lockPath) is locked): give each writer its own WRITER_STORE")
        }
        lockDescriptor = fd
        var configuration = GRDB.Configuration()
        configuration.busyMode = .timeout(busyTimeout)
        configuration.label = "signaldb-store"
        configuration.prepareDatabase { db in
            try db.execute(sql: "PRAGMA synchronous = FULL")
        }
        do {
            queue = try DatabaseQueue(path: path, configuration: configuration)
            try queue.writeWithoutTransaction { db in
                let mode = try String.fetchOne(db, sql: "PRAGMA journal_mode = WAL")
                guard mode?.lowercased() == "wal" else {
                    throw StoreError("\(path): SQLite refused WAL journal mode (it reports '\(mode ?? "nil")'); put the store on a local filesystem")
                }
                let version = try Int.fetchOne(db, sql: "PRAGMA user_version") ?? 0
                guard version <= SQLiteSchema.version else {
                    throw StoreError("\(path) has schema version \(version), newer than this build's \(SQLiteSchema.version): run the newer signaldb-writer, or point WRITER_STORE at another file")
                }
                try db.inTransaction(.immediate) {
                    for statement in SQLiteSchema.statements { try db.execute(sql: statement) }
                    try db.execute(sql: "PRAGMA user_version = \(SQLiteSchema.version)")
                    return .commit
                }
            }
        } catch let error as StoreError {
            Glibc.close(fd)
            throw error
        } catch {
            Glibc.close(fd)
            throw StoreError("cannot open the SQLite store \(path): \(error). Check that its directory exists and is writable by the service user, and that the disk has room")
        }
    }

    public func progress() throws -> StoreProgress {
        try queue.read { db in
            var progress = StoreProgress.empty
            for row in try Row.fetchAll(db, sql: "SELECT source, writer_lsn, floor_lsn, held_ranges FROM ingest_progress") {
                let source: String = row["source"]
                if source == SQLiteSchema.walSource {
                    progress.writerLSN = UInt64(max(0, row["writer_lsn"] as Int64? ?? 0))
                } else if source.hasPrefix(SQLiteSchema.acceptorPrefix) {
                    let id = String(source.dropFirst(SQLiteSchema.acceptorPrefix.count))
                    let text: String = row["held_ranges"] ?? ""
                    guard let held = LSNRanges(parsing: text) else {
                        throw StoreError("\(path): ingest_progress row \(source) has held_ranges '\(text.prefix(60))', which does not parse; restore the database from a backup")
                    }
                    progress.acceptors[id] = AcceptorProgress(floor: UInt64(max(0, row["floor_lsn"] as Int64? ?? 0)), held: held)
                }
            }
            return progress
        }
    }

    public func commit(_ rows: StoreRows, progress: StoreProgress) throws -> CommitOutcome {
        do {
            return try insert(rows, progress: progress)
        } catch let error as StoreCommitError {
            throw error
        } catch let error as DatabaseError {
            let kind: StoreCommitError.Kind
            switch error.resultCode {
            case .SQLITE_BUSY, .SQLITE_LOCKED: kind = .busy
            case .SQLITE_FULL: kind = .full
            case .SQLITE_READONLY: kind = .readonly
            case .SQLITE_IOERR: kind = .io
            default: kind = .other
            }
            throw StoreCommitError(kind, "\(path): \(error)")
        } catch {
            throw StoreCommitError(.other, "\(path): \(error)")
        }
    }

    private func insert(_ rows: StoreRows, progress: StoreProgress) throws -> CommitOutcome {
        try queue.writeWithoutTransaction { db in
            var outcome = CommitOutcome(inserted: 0, duplicateSpans: 0)
            try db.inTransaction(.immediate) {
                outcome = CommitOutcome(inserted: 0, duplicateSpans: 0)
                // A retry of a commit that did land (its success was lost to an error after the
                // sync) must not insert the rows again.
                let stored = try Int64.fetchOne(db, sql: "SELECT writer_lsn FROM ingest_progress WHERE source = ?", arguments: [SQLiteSchema.walSource]) ?? 0
                if rows.count > 0 && stored == Int64(clamping: progress.writerLSN) { return .rollback }
                if rows.count > 0 && stored > Int64(clamping: progress.writerLSN) {
                    throw StoreCommitError(.conflict, "\(path) already holds rows through writer LSN \(stored), past this commit's \(progress.writerLSN): is another signaldb-writer using this database?")
                }
                let span = try db.cachedStatement(sql: SQLiteSchema.insertSpan)
                for r in rows.spans {
                    try span.execute(arguments: [
                        r.tenant, r.dataset, r.traceID, r.spanID, r.parentSpanID, r.traceState, r.name, r.kind,
                        Int64(clamping: r.startTimeUnixNano), Int64(clamping: r.endTimeUnixNano), r.statusCode, r.statusMessage,
                        r.serviceName, r.scopeName, r.scopeVersion, r.attributes, r.resourceAttributes, r.events, r.links,
                        Int64(clamping: r.receivedAtUnixNano),
                    ])
                    if db.changesCount == 0 { outcome.duplicateSpans += 1 } else { outcome.inserted += 1 }
                }
                let log = try db.cachedStatement(sql: SQLiteSchema.insertLog)
                for r in rows.logs {
                    try log.execute(arguments: [
                        r.tenant, r.dataset, Int64(clamping: r.timeUnixNano), Int64(clamping: r.observedTimeUnixNano), r.severityNumber,
                        r.severityText, r.body, r.traceID, r.spanID, r.eventName, r.serviceName, r.scopeName, r.attributes,
                        r.resourceAttributes, Int64(clamping: r.receivedAtUnixNano),
                    ])
                }
                let point = try db.cachedStatement(sql: SQLiteSchema.insertMetricPoint)
                for r in rows.metricPoints {
                    try point.execute(arguments: [
                        r.tenant, r.dataset, r.metricName, r.description, r.unit, r.type, r.aggregationTemporality, r.isMonotonic,
                        Int64(clamping: r.timeUnixNano), Int64(clamping: r.startTimeUnixNano), r.value, r.intValue, r.histogram,
                        r.attributes, r.resourceAttributes, r.serviceName, r.scopeName, Int64(clamping: r.receivedAtUnixNano),
                    ])
                }
                outcome.inserted += rows.logs.count + rows.metricPoints.count
                let now = Int64(max(0, Date().timeIntervalSince1970) * 1e9)
                let upsert = try db.cachedStatement(sql: SQLiteSchema.upsertProgress)
                try upsert.execute(arguments: [SQLiteSchema.walSource, Int64(clamping: progress.writerLSN), nil, nil, nil, now])
                for (id, mark) in progress.acceptors {
                    try upsert.execute(arguments: [SQLiteSchema.acceptorPrefix + id, nil, Int64(clamping: mark.floor),
                                                   Int64(clamping: mark.highWater), mark.held.description, now])
                }
                return .commit
            }
            return outcome
        }
    }

    public func close() throws {
        defer { Glibc.close(lockDescriptor) }
        try queue.close()
    }
}
