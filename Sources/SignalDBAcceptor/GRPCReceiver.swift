import GRPCCore
import GRPCProtobuf
import SignalDBIngest

/// OTLP/gRPC: the Trace, Metrics and Logs `Export` methods. They are registered with a
/// pass-through deserializer, so the request's protobuf bytes go through the same decoder,
/// validation and envelope as OTLP/HTTP (and are stored as received). Errors carry RetryInfo
/// when the client should retry: UNAVAILABLE when the acceptor cannot take data now,
/// RESOURCE_EXHAUSTED for a tenant's rate limit (without RetryInfo OTLP clients drop it).
struct OTLPGRPCService: RegistrableRPCService {
    let ingestor: Ingestor

    static func method(_ signal: Signal) -> MethodDescriptor {
        switch signal {
        case .traces: MethodDescriptor(fullyQualifiedService: "opentelemetry.proto.collector.trace.v1.TraceService", method: "Export")
        case .metrics: MethodDescriptor(fullyQualifiedService: "opentelemetry.proto.collector.metrics.v1.MetricsService", method: "Export")
        case .logs: MethodDescriptor(fullyQualifiedService: "opentelemetry.proto.collector.logs.v1.LogsService", method: "Export")
        }
    }

    func registerMethods<Transport: ServerTransport>(with router: inout RPCRouter<Transport>) {
        for signal in Signal.allCases {
            router.registerHandler(forMethod: Self.method(signal), deserializer: PassThroughBytes(), serializer: PassThroughBytes()) { request, _ in
                let result: Result<Ingestor.Accepted, IngestError>
                do throws(IngestError) {
                    result = .success(try await handle(signal: signal, request: request))
                } catch {
                    result = .failure(error)
                }
                switch result {
                case .success(let answer):
                    ingestor.metrics.request(signal: signal, transport: "grpc", status: 200, reason: answer.rejected > 0 ? "partial" : "ok")
                    return StreamingServerResponse(single: ServerResponse(message: Responses.success(
                        signal: signal, rejected: answer.rejected, message: answer.message, encoding: .protobuf)))
                case .failure(let error):
                    ingestor.metrics.request(signal: signal, transport: "grpc", status: error.httpStatus, reason: error.reason)
                    return StreamingServerResponse(error: Self.rpcError(error))
                }
            }
        }
    }

    func handle(signal: Signal, request: StreamingServerRequest<[UInt8]>) async throws(IngestError) -> Ingestor.Accepted {
        func first(_ key: String) -> String? { request.metadata[stringValues: key].first(where: { _ in true }) }
        let who = try ingestor.authorize(.init(authorization: first("authorization"), tenant: first("x-tenant-id"), dataset: first("x-dataset-id")),
                                         signal: signal)
        var body: [UInt8]?
        do {
            for try await message in request.messages {
                guard body == nil else { throw IngestError(.invalid, "Export is unary: the call sent more than one message") }
                body = message
            }
        } catch let error as IngestError {
            throw error
        } catch {
            throw IngestError(.invalid, "the request could not be read: \(error)", reason: "body_read")
        }
        guard let body else { throw IngestError(.invalid, "the call sent no request message") }
        try ingestor.decodeBudget.acquire(body.count)
        defer { ingestor.decodeBudget.release(body.count) }
        return try await ingestor.ingest(signal: signal, body: body, encoding: .protobuf, tenant: who.tenant, dataset: who.dataset)
    }

    static func rpcError(_ error: IngestError) -> RPCError {
        switch error.kind {
        case .invalid, .unsupportedMediaType, .notFound, .methodNotAllowed:
            return RPCError(code: .invalidArgument, message: error.message)
        case .tooLarge:
            return RPCError(code: .resourceExhausted, message: error.message)
        case .unauthenticated:
            return RPCError(code: .unauthenticated, message: error.message)
        case .forbidden:
            return RPCError(code: .permissionDenied, message: error.message)
        case .rateLimited(let seconds):
            return RPCError(GoogleRPCStatus(code: .resourceExhausted, message: error.message, details: [.retryInfo(delay: .seconds(seconds))]))
        case .unavailable(let seconds):
            return RPCError(GoogleRPCStatus(code: .unavailable, message: error.message, details: [.retryInfo(delay: .seconds(seconds))]))
        }
    }
}

/// Hands the message bytes through untouched, in both directions.
struct PassThroughBytes: MessageSerializer, MessageDeserializer {
    typealias Message = [UInt8]
    func serialize<Bytes: GRPCContiguousBytes>(_ message: [UInt8]) throws -> Bytes { Bytes(message) }
    func deserialize<Bytes: GRPCContiguousBytes>(_ bytes: Bytes) throws -> [UInt8] { bytes.withUnsafeBytes { Array($0) } }
}
