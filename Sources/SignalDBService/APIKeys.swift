import Foundation
import SignalDBIngest

/// The API keys file (`ACCEPTOR_API_KEYS_FILE`): JSON mapping each key to the tenant it writes
/// and the signals it may send:
///
/// ```json
/// {"keys": [{"key": "s3cr3t", "tenant": "acme", "signals": ["traces", "metrics", "logs"]}]}
/// ```
///
/// With keys configured every request needs `Authorization: Bearer <key>`: an unknown key is
/// 401, a key used for another tenant (`X-Tenant-ID`) or a signal it does not list is 403.
public struct APIKeys: Sendable {
    public struct Grant: Sendable, Equatable {
        public let tenant: String
        public let signals: Set<Signal>
    }

    let grants: [String: Grant]

    public var count: Int { grants.count }

    public init(grants: [String: Grant]) { self.grants = grants }

    public static func load(path: String) throws -> APIKeys {
        struct File: Decodable {
            struct Entry: Decodable { let key: String; let tenant: String; let signals: [String]? }
            let keys: [Entry]
        }
        let data: Data
        do { data = try Data(contentsOf: URL(fileURLWithPath: path)) } catch {
            throw KeysError("cannot read the API keys file \(path): \(error.localizedDescription). Check the path (ACCEPTOR_API_KEYS_FILE) and that the service user may read it.")
        }
        let file: File
        do { file = try JSONDecoder().decode(File.self, from: data) } catch {
            throw KeysError("the API keys file \(path) is not valid: \(error). Expected {\"keys\": [{\"key\": \"...\", \"tenant\": \"...\", \"signals\": [\"traces\"]}]}.")
        }
        var grants: [String: Grant] = [:]
        for (i, entry) in file.keys.enumerated() {
            guard entry.key.count >= 8 else { throw KeysError("\(path): keys[\(i)].key is shorter than 8 characters") }
            do { try TenantName.validate(entry.tenant, field: "\(path): keys[\(i)].tenant") } catch { throw KeysError(error.message) }
            var signals = Set<Signal>()
            for name in entry.signals ?? Signal.allCases.map(\.description) {
                guard let s = Signal(name: name) else { throw KeysError("\(path): keys[\(i)].signals has '\(name)'; use traces, metrics or logs") }
                signals.insert(s)
            }
            guard grants[entry.key] == nil else { throw KeysError("\(path): keys[\(i)].key appears twice") }
            grants[entry.key] = Grant(tenant: entry.tenant, signals: signals)
        }
        return APIKeys(grants: grants)
    }

    /// The tenant the request writes, or the error to answer with.
    public func authorize(authorization: String?, requestedTenant: String?, signal: Signal) throws(IngestError) -> String {
        guard let authorization, authorization.lowercased().hasPrefix("bearer ") else {
            throw IngestError(.unauthenticated, "this acceptor needs 'Authorization: Bearer <key>'")
        }
        let key = String(authorization.dropFirst("bearer ".count)).trimmingCharacters(in: .whitespaces)
        guard let grant = grants[key] else { throw IngestError(.unauthenticated, "the API key is not known to this acceptor") }
        if let requestedTenant, requestedTenant != grant.tenant {
            throw IngestError(.forbidden, "this API key writes tenant '\(grant.tenant)', not '\(requestedTenant)' (X-Tenant-ID)")
        }
        guard grant.signals.contains(signal) else {
            throw IngestError(.forbidden, "this API key may not send \(signal)")
        }
        return grant.tenant
    }
}

public struct KeysError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}
