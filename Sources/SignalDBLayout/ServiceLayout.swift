/// What the services keep in a WAL directory besides the engine's own files (docs/FORMAT.md
/// lists those: segments, `.checkpoint`, `.lock`, `quarantine/`). Fixed here, in a module with
/// no dependencies, so the services and the `signalwal` tool (which is built without the
/// services' network stack) name them the same way.
///
/// ```
/// <WAL dir>/
///   acceptor-id                  the acceptor's UUID (acceptor only; backed up and restored)
///   dead-letters/
///     lsn-<20 digits>.envelope   the record as it was in the WAL
///     lsn-<20 digits>.json       why, tenant, dataset, signal, items, when
///     replay-in-progress.json    an acceptor replay between its append and its move
///     replayed/                  letters replayed, kept for the operator
/// ```
public enum ServiceLayout {
    /// The acceptor's identity file. The writer knows an acceptor's records by this id, so a
    /// restore without it would make the acceptor look new and its records be stored again.
    public static let acceptorIDFileName = "acceptor-id"
    /// Files a backup carries besides the engine's.
    public static let identityFiles = [acceptorIDFileName]
    public static let deadLetterFolder = "dead-letters"
    public static let replayedFolder = "replayed"
    /// Written by `signaldb-acceptor dead-letters replay` before each append and removed after
    /// the letter is moved; while it exists the acceptor refuses to start (so the replay can
    /// tell, when run again, whether its append happened).
    public static let replayMarkerFileName = "replay-in-progress.json"
    public static let envelopeSuffix = ".envelope"
    public static let metadataSuffix = ".json"

    /// `lsn-00000000000000000042`: zero-padded so names sort by LSN.
    public static func deadLetterBaseName(lsn: UInt64) -> String {
        let digits = String(lsn)
        return "lsn-" + String(repeating: "0", count: max(0, 20 - digits.count)) + digits
    }

    /// The LSN of a dead letter's file (`.envelope` or `.json`), nil for other names.
    public static func deadLetterLSN(fileName: String) -> UInt64? {
        guard fileName.hasPrefix("lsn-") else { return nil }
        for suffix in [envelopeSuffix, metadataSuffix] where fileName.hasSuffix(suffix) {
            let digits = fileName.dropFirst(4).dropLast(suffix.count)
            guard digits.count == 20, digits.allSatisfy(\.isNumber) else { return nil }
            return UInt64(digits)
        }
        return nil
    }

    /// The writer's store: the table of per-source progress, and its columns, for tools that
    /// read it without the store's code (`signalwal inspect --store`).
    public static let progressTable = "ingest_progress"
    public static let progressColumns = ["source", "writer_lsn", "floor_lsn", "high_water_lsn", "held_ranges", "updated_at_unix_nano"]
    /// The progress row of the writer's own WAL.
    public static let progressWriterSource = "writer-wal"
    /// The progress row of an acceptor is this prefix and its id.
    public static let progressAcceptorPrefix = "acceptor:"
    /// The writer holds an acceptor's LSNs only up to this far above the floor that acceptor
    /// last sent (its checkpoint); the rest it takes once the checkpoint moves.
    public static let writerSpanAboveFloor: UInt64 = 1 << 22
}
