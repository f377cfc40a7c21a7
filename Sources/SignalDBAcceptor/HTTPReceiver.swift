import HTTPTypes
import NIOCore
import Hummingbird
import Logging
import SignalDBIngest
import SignalDBService

/// OTLP/HTTP: `POST /v1/traces`, `/v1/metrics`, `/v1/logs` with protobuf or JSON bodies,
/// optionally gzip or deflate. Status codes follow the OTLP spec: 200 (with partial success),
/// 400 for bad data (a google.rpc.Status body in the request's encoding), 401/403, 404, 405,
/// 413, 415, 429 and 503 with Retry-After. Every error, including unexpected ones, is answered
/// here, so Hummingbird never turns one into a 500 for bad data.
enum HTTPReceiver {
    static let tenantHeader = HTTPField.Name("X-Tenant-ID")!
    static let datasetHeader = HTTPField.Name("X-Dataset-ID")!

    static func make(address: ListenAddress, ingestor: Ingestor, maxRequestBytes: Int, idleTimeout: Duration, logger: Logger) -> some ApplicationProtocol {
        let metrics = ingestor.metrics
        let responder = CallbackResponder<BasicRequestContext> { request, _ in
            let encoding = contentEncoding(request.headers[.contentType]) ?? .protobuf
            let signal = Signal(httpPath: request.uri.path)
            let result: Result<Ingestor.Accepted, IngestError>
            do throws(IngestError) {
                result = .success(try await handle(request, signal: signal, ingestor: ingestor, maxRequestBytes: maxRequestBytes))
            } catch {
                result = .failure(error)
            }
            switch result {
            case .success(let answer):
                metrics.request(signal: signal, transport: "http", status: 200, reason: answer.rejected > 0 ? "partial" : "ok")
                return respond(status: .ok, body: Responses.success(signal: signal!, rejected: answer.rejected, message: answer.message, encoding: encoding), encoding: encoding)
            case .failure(let error):
                metrics.request(signal: signal, transport: "http", status: error.httpStatus, reason: error.reason)
                if case .unavailable = error.kind { logger.debug("request refused", metadata: ["reason": "\(error.reason)", "message": "\(error.message)"]) }
                var response = respond(status: .init(code: error.httpStatus), body: Responses.status(error, encoding: encoding), encoding: encoding)
                if let seconds = error.retryAfterSeconds { response.headers[.retryAfter] = String(seconds) }
                if error.httpStatus == 405 { response.headers[.allow] = "POST" }
                return response
            }
        }
        let idle = TimeAmount.nanoseconds(Int64(idleTimeout.components.seconds) * 1_000_000_000 + idleTimeout.components.attoseconds / 1_000_000_000)
        return Application(responder: responder,
                           server: .http1(configuration: .init(idleTimeout: idle)),
                           configuration: .init(address: .hostname(address.host, port: address.port), serverName: "signaldb-acceptor"),
                           logger: logger)
    }

    static func handle(_ request: Request, signal: Signal?, ingestor: Ingestor, maxRequestBytes: Int) async throws(IngestError) -> Ingestor.Accepted {
        guard let signal else {
            throw IngestError(.notFound, "no such path \(request.uri.path): OTLP/HTTP uses /v1/traces, /v1/metrics and /v1/logs", reason: "not_found")
        }
        guard request.method == .post else {
            throw IngestError(.methodNotAllowed, "\(request.method) is not allowed on \(request.uri.path): use POST", reason: "method_not_allowed")
        }
        guard let encoding = contentEncoding(request.headers[.contentType]) else {
            throw IngestError(.unsupportedMediaType,
                              "Content-Type '\(request.headers[.contentType] ?? "")' is not supported: use application/x-protobuf or application/json")
        }
        let coding = try BodyDecompression.Coding(header: request.headers[.contentEncoding])
        let who = try ingestor.authorize(.init(authorization: request.headers[.authorization],
                                               tenant: request.headers[tenantHeader], dataset: request.headers[datasetHeader]),
                                         signal: signal)
        let declared = request.headers[.contentLength].flatMap(Int.init)
        if let declared, declared > maxRequestBytes {
            throw BodyDecompression.tooLarge(maxRequestBytes)
        }
        // Reserve what reading can hold (all of the limit when the length is not declared),
        // then what inflating adds.
        let reserved = min(maxRequestBytes, declared ?? maxRequestBytes)
        try ingestor.decodeBudget.acquire(reserved)
        defer { ingestor.decodeBudget.release(reserved) }
        var raw: ByteBuffer
        do {
            raw = try await request.body.collect(upTo: maxRequestBytes)
        } catch let error as HTTPError where error.status == .contentTooLarge {
            throw BodyDecompression.tooLarge(maxRequestBytes)
        } catch {
            throw IngestError(.invalid, "the request body could not be read: \(error)", reason: "body_read")
        }
        // Inflating charges the budget as its output grows.
        var inflated = 0
        defer { ingestor.decodeBudget.release(inflated) }
        let body = try BodyDecompression.decode(raw.readBytes(length: raw.readableBytes) ?? [], coding: coding, limit: maxRequestBytes) {
            (bytes: Int) throws(IngestError) in
            try ingestor.decodeBudget.acquire(bytes)
            inflated += bytes
        }
        return try await ingestor.ingest(signal: signal, body: body, encoding: encoding, tenant: who.tenant, dataset: who.dataset)
    }

    /// protobuf or JSON from `Content-Type` (parameters such as charset ignored); nil for others.
    static func contentEncoding(_ header: String?) -> Envelope.Encoding? {
        guard let header else { return nil }
        let type = header.split(separator: ";").first.map { $0.trimmingCharacters(in: .whitespaces).lowercased() } ?? ""
        switch type {
        case "application/x-protobuf", "application/protobuf": return .protobuf
        case "application/json": return .json
        default: return nil
        }
    }

    static func respond(status: HTTPResponse.Status, body: [UInt8], encoding: Envelope.Encoding) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = encoding == .json ? "application/json" : "application/x-protobuf"
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: body)))
    }
}
