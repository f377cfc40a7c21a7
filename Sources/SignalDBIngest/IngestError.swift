/// Why a request was not accepted, in the terms both receivers answer with: HTTP status codes
/// and gRPC status codes follow from ``Kind``, and ``message`` names the field, the cause and
/// the fix.
public struct IngestError: Error, Sendable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable {
        /// Undecodable or invalid data: 400 / INVALID_ARGUMENT. Never retried by clients.
        case invalid
        /// The body is larger than the limit, before or after decompression: 413.
        case tooLarge
        /// A content type other than protobuf or JSON: 415.
        case unsupportedMediaType
        /// A path other than the three OTLP ones: 404.
        case notFound
        /// A method other than POST: 405.
        case methodNotAllowed
        /// No or unknown credentials: 401 / UNAUTHENTICATED.
        case unauthenticated
        /// The key may not write this tenant or signal: 403 / PERMISSION_DENIED.
        case forbidden
        /// A per-tenant limit: 429 with Retry-After / RESOURCE_EXHAUSTED with RetryInfo.
        case rateLimited(retryAfterSeconds: Int)
        /// The acceptor cannot take data now (WAL bound, disk full, WAL failed, shutting down):
        /// 503 with Retry-After / UNAVAILABLE with RetryInfo.
        case unavailable(retryAfterSeconds: Int)
    }

    public let kind: Kind
    public let message: String
    /// A short label for the `reason` dimension of the request metrics.
    public let reason: String

    public init(_ kind: Kind, _ message: String, reason: String? = nil) {
        self.kind = kind
        self.message = message
        self.reason = reason ?? {
            switch kind {
            case .invalid: "invalid"
            case .tooLarge: "too_large"
            case .unsupportedMediaType: "unsupported_media_type"
            case .notFound: "not_found"
            case .methodNotAllowed: "method_not_allowed"
            case .unauthenticated: "unauthenticated"
            case .forbidden: "forbidden"
            case .rateLimited: "rate_limited"
            case .unavailable: "unavailable"
            }
        }()
    }

    public var httpStatus: Int {
        switch kind {
        case .invalid: 400
        case .tooLarge: 413
        case .unsupportedMediaType: 415
        case .notFound: 404
        case .methodNotAllowed: 405
        case .unauthenticated: 401
        case .forbidden: 403
        case .rateLimited: 429
        case .unavailable: 503
        }
    }

    /// The google.rpc.Code for the body's `code` and for gRPC.
    public var rpcCode: Int32 {
        switch kind {
        case .invalid, .unsupportedMediaType: 3  // INVALID_ARGUMENT
        case .tooLarge, .rateLimited: 8          // RESOURCE_EXHAUSTED
        case .notFound: 5                         // NOT_FOUND
        case .methodNotAllowed: 12                // UNIMPLEMENTED
        case .unauthenticated: 16                 // UNAUTHENTICATED
        case .forbidden: 7                        // PERMISSION_DENIED
        case .unavailable: 14                     // UNAVAILABLE
        }
    }

    public var retryAfterSeconds: Int? {
        switch kind {
        case .rateLimited(let s), .unavailable(let s): s
        default: nil
        }
    }

    public var description: String { message }
}
