import Foundation
import Logging
import SignalDBIngest
import SignalWAL

/// Records that can never be stored: each goes to `<wal>/dead-letters/` as two files,
/// `lsn-<LSN>.envelope` (the envelope as it was in the WAL) and `lsn-<LSN>.json` (reason, tenant,
/// dataset, signal, LSN, time), both durable before the caller's checkpoint passes the record.
/// The acceptor writes one when the writer rejects a record; the writer when a record it holds
/// cannot be decoded into rows. Transient failures are never dead-lettered: only a verdict that
/// the data itself is bad is.
public final class DeadLetters: Sendable {
    public static let folder = "dead-letters"
    public let directory: String
    let logger: Logger

    let access: FileAccess

    public init(walDirectory: String, access: FileAccess = .owner, logger: Logger) {
        directory = walDirectory + "/" + Self.folder
        self.access = access
        self.logger = logger
    }

    /// Writes both files durably. `extra` adds fields to the JSON (the writer adds the acceptor id and LSN).
    public func write(lsn: LSN, envelope: [UInt8], reason: String, extra: [String: Any] = [:]) throws {
        if !FileManager.default.fileExists(atPath: directory) {
            guard mkdir(directory, access.directoryMode) == 0 || errno == EEXIST else {
                throw ServiceStartError("cannot create \(directory): \(String(cString: strerror(errno)))")
            }
            try DurableFile.fsyncDirectory((directory as NSString).deletingLastPathComponent)
        }
        let name = String(format: "lsn-%020llu", lsn)
        let decoded = try? Envelope(decoding: envelope)
        var meta: [String: Any] = [
            "lsn": lsn, "reason": reason, "tenant": decoded?.tenant ?? "", "dataset": decoded?.dataset ?? "",
            "signal": decoded.map { "\($0.signal)" } ?? "", "items": decoded?.itemCount ?? 0,
            "dead_lettered_at": ISO8601DateFormatter().string(from: Date()),
        ]
        meta.merge(extra) { a, _ in a }
        let json = try JSONSerialization.data(withJSONObject: meta, options: [.sortedKeys])
        try DurableFile.write(envelope, to: directory + "/" + name + ".envelope", mode: access.fileMode)
        try DurableFile.write(Array(json) + [10], to: directory + "/" + name + ".json", mode: access.fileMode)
        logger.warning("dead-lettered a record that can never be stored",
                       metadata: ["lsn": "\(lsn)", "tenant": "\(decoded?.tenant ?? "?")", "reason": "\(reason)", "path": "\(directory)/\(name).envelope"])
    }
}
