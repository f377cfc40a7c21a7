import GRPCCore
import ServiceLifecycle

/// Runs a grpc-swift server as a ServiceLifecycle service: a graceful shutdown of the group
/// begins the server's graceful shutdown (it stops accepting RPCs and finishes the ones in
/// flight). Without this a gRPC server beside Hummingbird keeps serving after SIGTERM.
public struct GRPCServerService<Transport: ServerTransport>: Service {
    let server: GRPCServer<Transport>

    public init(_ server: GRPCServer<Transport>) { self.server = server }

    public func run() async throws {
        try await withGracefulShutdownHandler {
            try await server.serve()
        } onGracefulShutdown: {
            server.beginGracefulShutdown()
        }
    }
}

/// The first service to stop in a graceful shutdown (it is last in the group): turns readiness
/// off, then waits `drainDelay` so load balancers see it before the listeners close.
public struct ReadinessService: Service {
    let health: Health
    let drainDelay: Duration

    public init(health: Health, drainDelay: Duration) {
        self.health = health
        self.drainDelay = drainDelay
    }

    public func run() async throws {
        try? await gracefulShutdown()
        health.beginShutdown()
        if drainDelay > .zero { try? await Task.sleep(for: drainDelay) }
    }
}

/// Runs a grpc-swift client's connections for the life of the group.
public struct GRPCClientService<Transport: ClientTransport>: Service {
    let client: GRPCClient<Transport>

    public init(_ client: GRPCClient<Transport>) { self.client = client }

    public func run() async throws {
        try await withGracefulShutdownHandler {
            try await client.runConnections()
        } onGracefulShutdown: {
            client.beginGracefulShutdown()
        }
    }
}

/// Background loops that run until the group shuts down (cancelled then).
public struct BackgroundTasks: Service {
    let tasks: [@Sendable () async -> Void]

    public init(tasks: [@Sendable () async -> Void]) { self.tasks = tasks }

    public func run() async throws {
        // Ending by cancellation is how these stop, not a failure.
        try? await cancelWhenGracefulShutdown {
            await withDiscardingTaskGroup { group in
                for task in tasks { group.addTask { await task() } }
            }
        }
    }
}
