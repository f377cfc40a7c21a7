import ServiceLifecycle

extension ServiceGroupConfiguration.ServiceConfiguration {
    /// A service whose end, by failure or (unexpectedly) by returning, shuts its group down
    /// gracefully instead of cancelling it: the listeners stop accepting, answer what is in
    /// flight, and close; the process then exits with the service's error, as before.
    ///
    /// Why not the default (`.cancelGroup`): cancelling a NIO server task can drop a connection
    /// it accepted but had not started to serve, and NIO traps on that ("Deinited NIOAsyncWriter
    /// without calling finish()", apple/swift-nio#3481), so a service whose WAL failed crashed
    /// instead of exiting. The pipeline's power-cut soak (a disk returning EIO under load) found it.
    /// `maximumGracefulShutdownDuration` still bounds the drain; past it the group is cancelled,
    /// so a client that holds a request open that long can still meet the trap.
    public static func drainingOnFailure(_ service: some Service) -> Self {
        .init(service: service, successTerminationBehavior: .gracefullyShutdownGroup, failureTerminationBehavior: .gracefullyShutdownGroup)
    }
}
