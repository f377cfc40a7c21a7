import Logging
import Metrics
import Prometheus

/// The process's logging and metrics, bootstrapped once at start-up: swift-log to stdout
/// (level from `LOG_LEVEL`), swift-metrics into one Prometheus registry that `/metrics` emits.
/// The engine's own metrics (`signalwal_*`) land in the same registry.
public enum Telemetry {
    /// Bootstraps both systems and returns the registry `/metrics` serves.
    public static func bootstrap(service: String, logLevel: Logger.Level) -> PrometheusCollectorRegistry {
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardOutput(label: label)
            handler.logLevel = logLevel
            handler[metadataKey: "service"] = .string(service)
            return handler
        }
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
        return registry
    }
}
