import Foundation
import SignalDBService
import SignalWAL

/// The acceptor's id: a UUID created the first time a WAL directory is used and kept in it as
/// `acceptor-id`, so the writer can tell this acceptor's LSNs from another's across restarts.
/// Written to a temporary file, fsynced, renamed, and the directory fsynced.
enum AcceptorIdentity {
    static let fileName = "acceptor-id"

    static func loadOrCreate(directory: String, access: FileAccess = .owner) throws -> String {
        let path = directory + "/" + fileName
        if Glibc.access(path, F_OK) == 0 || errno != ENOENT {
            // It exists (or cannot be checked): never replace it. A new id would make the writer
            // take this WAL's backlog for another acceptor's data and store it again.
            let text: String
            do { text = try String(contentsOfFile: path, encoding: .utf8) } catch {
                throw ServiceStartError("cannot read \(path): \(error.localizedDescription). It names this acceptor to the writer; fix its owner or mode (the service user must read it), or restore it from a backup.")
            }
            let id = text.trimmingCharacters(in: .whitespacesAndNewlines)
            guard UUID(uuidString: id) != nil else {
                throw ServiceStartError("\(path) holds '\(id.prefix(40))', not a UUID. It names this acceptor to the writer: restore it from a backup, or delete it only if this WAL's records were never forwarded.")
            }
            return id
        }
        let id = UUID().uuidString.lowercased()
        try DurableFile.write(Array((id + "\n").utf8), to: path, mode: access.fileMode)
        return id
    }
}
