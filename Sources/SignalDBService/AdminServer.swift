import HTTPTypes
import Hummingbird
import Logging
import Prometheus
import ServiceLifecycle

/// The admin listener: `GET /metrics` (Prometheus text), `/livez` (the process answers) and
/// `/readyz` (200 only while ``Health`` says ready; the body says why not, including replay
/// progress). It stays up until the very end of a shutdown so the last scrape sees it.
public enum AdminServer {
    public static func make(address: ListenAddress, health: Health, registry: PrometheusCollectorRegistry,
                            beforeScrape: @escaping @Sendable () -> Void, logger: Logger) -> some ApplicationProtocol {
        let responder = CallbackResponder<BasicRequestContext> { request, _ in
            guard request.method == .get || request.method == .head else {
                return Response(status: .methodNotAllowed, headers: [.allow: "GET"], body: .init(byteBuffer: ByteBuffer(string: "use GET\n")))
            }
            switch request.uri.path {
            case "/metrics":
                beforeScrape()
                var headers = HTTPFields()
                headers[.contentType] = "text/plain; version=0.0.4; charset=utf-8"
                return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: registry.emitToBuffer())))
            case "/livez":
                return Response(status: .ok, body: .init(byteBuffer: ByteBuffer(string: "ok\n")))
            case "/readyz":
                let ready = health.isReady
                return Response(status: ready ? .ok : .serviceUnavailable,
                                body: .init(byteBuffer: ByteBuffer(string: (ready ? "ready: " : "not ready: ") + health.detail + "\n")))
            default:
                return Response(status: .notFound, body: .init(byteBuffer: ByteBuffer(string: "admin paths: /metrics /livez /readyz\n")))
            }
        }
        return Application(responder: responder,
                           configuration: .init(address: .hostname(address.host, port: address.port), serverName: "signaldb-admin"),
                           logger: logger)
    }
}

extension AdminServer {
    /// Runs the admin listener in a group of its own for the whole of `body`, so `/livez`,
    /// `/readyz` (with what recovery is doing) and `/metrics` answer while the service recovers,
    /// and stop only after it. `body` gets an ``AdminWatch`` to put in its own group: a failed
    /// admin listener then ends the service.
    public static func running(address: ListenAddress, setting: String, health: Health, registry: PrometheusCollectorRegistry,
                               beforeScrape: @escaping @Sendable () -> Void, logger: Logger,
                               _ body: (AdminWatch) async throws -> Void) async throws {
        let admin = make(address: address, health: health, registry: registry, beforeScrape: beforeScrape, logger: logger)
        let group = ServiceGroup(configuration: .init(services: [.init(service: admin)], logger: logger))
        let (failures, failed) = AsyncStream<String>.makeStream()
        let task = Task {
            do { try await group.run() } catch {
                failed.yield("\(error)")
                throw error
            }
        }
        do {
            try await body(AdminWatch(failures: failures, setting: setting))
        } catch {
            await group.triggerGracefulShutdown()
            _ = await task.result
            throw error
        }
        await group.triggerGracefulShutdown()
        if case .failure(let error) = await task.result { throw error }
    }
}
