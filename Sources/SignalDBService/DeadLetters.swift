import Foundation
import Logging
import SignalDBIngest
import SignalDBLayout
import SignalWAL

/// Records that can never be stored: each goes to `<wal>/dead-letters/` as two files,
/// `lsn-<LSN>.envelope` (the envelope as it was in the WAL) and `lsn-<LSN>.json` (reason, tenant,
/// dataset, signal, LSN, time), both durable before the caller's checkpoint passes the record.
/// The acceptor writes one when the writer rejects a record; the writer when a record it holds
/// cannot be decoded into rows. Transient failures are never dead-lettered: only a verdict that
/// the data itself is bad is.
public final class DeadLetters: Sendable {
    public static let folder = ServiceLayout.deadLetterFolder
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
            if mkdir(directory, access.directoryMode) == 0 {
                _ = chmod(directory, access.directoryMode)  // exactly: the umask may strip group bits
            } else if errno != EEXIST {
                throw ServiceStartError("cannot create \(directory): \(String(cString: strerror(errno)))")
            }
            try DurableFile.fsyncDirectory((directory as NSString).deletingLastPathComponent)
        }
        let name = ServiceLayout.deadLetterBaseName(lsn: lsn)
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

    /// One dead letter on disk.
    public struct Letter {
        public var lsn: LSN
        public var json: [String: Any]
        public var envelopePath: String
        public var jsonPath: String
    }

    /// The letters in `folder`, by LSN. A letter whose JSON is unreadable is left out (its
    /// envelope stays on disk for the operator).
    public static func letters(in folder: String) -> [Letter] {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: folder) else { return [] }
        return names.filter { $0.hasSuffix(ServiceLayout.metadataSuffix) }.sorted().compactMap { name in
            guard let lsn = ServiceLayout.deadLetterLSN(fileName: name),
                  let data = FileManager.default.contents(atPath: folder + "/" + name),
                  let json = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else { return nil }
            let base = folder + "/" + ServiceLayout.deadLetterBaseName(lsn: lsn)
            return Letter(lsn: lsn, json: json, envelopePath: base + ServiceLayout.envelopeSuffix, jsonPath: folder + "/" + name)
        }
    }

    /// `dead-letters list` and `dead-letters show <lsn>`, the same for both services. Returns
    /// the exit code, or nil when `arguments` is neither.
    public static func runReadOnly(_ arguments: [String], walDirectory: String, tool: String) -> Int32? {
        let folder = walDirectory + "/" + folder
        switch arguments.first {
        case "list":
            let all = letters(in: folder)
            print("\(all.count) dead letter(s) in \(folder)")
            for l in all {
                print("lsn \(l.lsn)  tenant=\(l.json["tenant"] ?? "")  dataset=\(l.json["dataset"] ?? "")  signal=\(l.json["signal"] ?? "")  items=\(l.json["items"] ?? 0)  at=\(l.json["dead_lettered_at"] ?? "")  reason: \(l.json["reason"] ?? "")")
            }
            return 0
        case "show":
            guard arguments.count == 2, let lsn = LSN(arguments[1]) else {
                print("usage: \(tool) dead-letters show <lsn>")
                return 64
            }
            guard let letter = letters(in: folder).first(where: { $0.lsn == lsn }) else {
                print("no dead letter with LSN \(lsn) in \(folder) (see: \(tool) dead-letters list)")
                return 1
            }
            guard let data = try? JSONSerialization.data(withJSONObject: letter.json, options: [.prettyPrinted, .sortedKeys]) else { return 1 }
            print(String(decoding: data, as: UTF8.self))
            let bytes = FileManager.default.contents(atPath: letter.envelopePath).map { [UInt8]($0) } ?? []
            if let envelope = try? Envelope(decoding: bytes) {
                print("envelope: \(envelope.signal), \(envelope.itemCount) items, tenant \(envelope.tenant), dataset \(envelope.dataset), \(envelope.payload.count) payload bytes, received at \(envelope.receivedAtUnixNano) ns")
            } else {
                print("\(letter.envelopePath): \(bytes.count) bytes that are not a valid envelope")
            }
            return 0
        default:
            return nil
        }
    }
}
