/// Where the writer puts rows. The embedded default is ``SQLiteStore``; a second store (a
/// distributed one) is another type conforming to this, not a change to the writer.
///
/// The contract the writer's exactly-once promise rests on:
/// 1. ``commit(_:progress:)`` makes the rows and the progress durable in **one** transaction:
///    after a crash either both are there or neither is.
/// 2. A span whose (tenant, dataset, trace id, span id) the store already holds is not stored
///    again; it is counted in ``CommitOutcome/duplicateSpans``.
/// 3. ``progress()`` returns what the last successful commit recorded.
/// 4. Every error from `commit` is taken as transient (busy, disk full, I/O): the writer keeps
///    the data in its WAL and retries the same commit with backoff; except
///    ``StoreCommitError/Kind/conflict``, which stops the writer.
/// 5. A commit whose `progress.writerLSN` equals the stored one is a retry of a commit that
///    landed (its success was lost): its rows are not inserted again.
///
/// Calls block: the writer makes them off the cooperative pool, one at a time.
public protocol Store: Sendable {
    /// What the last commit recorded; ``StoreProgress/empty`` for a new store.
    func progress() throws -> StoreProgress
    /// Stores `rows` and `progress` atomically (contract 1 and 2).
    func commit(_ rows: StoreRows, progress: StoreProgress) throws -> CommitOutcome
    /// Releases the store's files. No call may follow.
    func close() throws
}

/// The writer's bookkeeping, stored with the rows: how far through its own WAL the store is,
/// and which acceptor LSNs the store holds.
public struct StoreProgress: Sendable, Equatable {
    /// The last writer WAL LSN whose rows (or dead letter) are in the store.
    public var writerLSN: UInt64
    public var acceptors: [String: AcceptorProgress]

    public init(writerLSN: UInt64, acceptors: [String: AcceptorProgress]) {
        self.writerLSN = writerLSN
        self.acceptors = acceptors
    }

    public static let empty = StoreProgress(writerLSN: 0, acceptors: [:])
}

/// One acceptor's marks: every acceptor LSN at or below `floor` is settled (the acceptor has
/// checkpointed past it and will never send it again), and `held` lists the LSNs above it the
/// store holds. The high-water mark is the largest of them.
public struct AcceptorProgress: Sendable, Equatable {
    public var floor: UInt64
    public var held: LSNRanges

    public init(floor: UInt64, held: LSNRanges) {
        self.floor = floor
        self.held = held
    }

    public var highWater: UInt64 { max(floor, held.last ?? 0) }
}

/// What one commit did.
public struct CommitOutcome: Sendable, Equatable {
    public var inserted: Int
    /// Spans not stored because the store already held their natural key (contract 2).
    public var duplicateSpans: Int

    public init(inserted: Int, duplicateSpans: Int) {
        self.inserted = inserted
        self.duplicateSpans = duplicateSpans
    }
}

/// A commit that failed; every kind is transient to the writer (contract 4). `kind` feeds the
/// `reason` label of the failure metric.
public struct StoreCommitError: Error, Sendable, CustomStringConvertible {
    public enum Kind: String, Sendable {
        /// Another connection holds the lock (SQLITE_BUSY, SQLITE_LOCKED).
        case busy
        /// The disk or the database is full (SQLITE_FULL).
        case full
        /// The file or its filesystem is read-only (SQLITE_READONLY).
        case readonly
        /// The disk failed a read or write (SQLITE_IOERR).
        case io
        /// The store already holds progress past this commit: another writer uses the same
        /// database, or the progress was changed behind the writer's back. Not transient: the
        /// writer stops (exit 1) so its start-up reconciles again.
        case conflict
        case other
    }
    public let kind: Kind
    public let description: String
    public init(_ kind: Kind, _ description: String) {
        self.kind = kind
        self.description = description
    }
}

/// A store that cannot be opened: names the path, the cause and the fix.
public struct StoreError: Error, Sendable, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
