import Foundation
import Logging
import SignalDBIngest
import SignalWAL

/// Records the writer says it can never store: each goes to `<wal>/dead-letters/` as two files,
/// `lsn-<LSN>.envelope` (the record as it was in the WAL) and `lsn-<LSN>.json` (reason, tenant,
/// dataset, signal, LSN, time), both durable before the forwarder's checkpoint passes the
/// record. Transient failures are never dead-lettered: only an explicit rejection is.
final class DeadLetters: Sendable {
    static let folder = "dead-letters"
    let directory: String
    let logger: Logger

    init(walDirectory: String, logger: Logger) {
        directory = walDirectory + "/" + Self.folder
        self.logger = logger
    }

    func write(lsn: LSN, envelope: [UInt8], reason: String) throws {
        if !FileManager.default.fileExists(atPath: directory) {
            guard mkdir(directory, 0o700) == 0 || errno == EEXIST else {
                throw ServiceStartError("cannot create \(directory): \(String(cString: strerror(errno)))")
            }
            try DurableFile.fsyncDirectory((directory as NSString).deletingLastPathComponent)
        }
        let name = String(format: "lsn-%020llu", lsn)
        let decoded = try? Envelope(decoding: envelope)
        let meta: [String: Any] = [
            "lsn": lsn, "reason": reason, "tenant": decoded?.tenant ?? "", "dataset": decoded?.dataset ?? "",
            "signal": decoded.map { "\($0.signal)" } ?? "", "items": decoded?.itemCount ?? 0,
            "dead_lettered_at": ISO8601DateFormatter().string(from: Date()),
        ]
        let json = try JSONSerialization.data(withJSONObject: meta, options: [.sortedKeys])
        try DurableFile.write(envelope, to: directory + "/" + name + ".envelope")
        try DurableFile.write(Array(json) + [10], to: directory + "/" + name + ".json")
        logger.warning("dead-lettered a record the writer rejected",
                       metadata: ["lsn": "\(lsn)", "tenant": "\(decoded?.tenant ?? "?")", "reason": "\(reason)", "path": "\(directory)/\(name).envelope"])
    }
}
