import Foundation
import Logging
import Metrics
import Prometheus
import SignalWAL

/// The process's logging and metrics, bootstrapped once at start-up: swift-log to stdout
/// (level from `LOG_LEVEL`) and, with `SIGNALDB_LOG_FILE`, the same lines appended to that
/// file; swift-metrics into one Prometheus registry that `/metrics` emits. The engine's own
/// metrics (`signalwal_*`, `disk_*`, `wal_flush_duration_seconds`) land in the same registry.
public enum Telemetry {
    /// Bootstraps both systems and returns the registry `/metrics` serves. Throws
    /// ``ServiceStartError`` naming `SIGNALDB_LOG_FILE` when the log file cannot be opened.
    public static func bootstrap(service: String, logLevel: Logger.Level, logFile: String? = nil,
                                 access: FileAccess = .owner) throws -> PrometheusCollectorRegistry {
        let file = try logFile.map { try LogFile(path: $0, mode: access.fileMode) }
        LoggingSystem.bootstrap { label in
            var stdout = StreamLogHandler.standardOutput(label: label)
            stdout.logLevel = logLevel
            stdout[metadataKey: "service"] = .string(service)
            guard let file else { return stdout }
            var toFile = FileLogHandler(label: label, file: file)
            toFile.logLevel = logLevel
            toFile[metadataKey: "service"] = .string(service)
            return MultiplexLogHandler([stdout, toFile])
        }
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
        return registry
    }

    /// The logger the engine logs through: label `signaldb.<service>.WAL`, so every WAL event
    /// (open, recovery, segments, flush failures, quarantine) matches `grep WAL`.
    public static func walLogger(service: String) -> Logger {
        Logger(label: "signaldb.\(service).WAL")
    }
}

/// A log file opened for appending. Each line is one `write(2)` with `O_APPEND`, so lines from
/// concurrent tasks never interleave, and `logrotate`'s `copytruncate` works.
public final class LogFile: Sendable {
    let fd: Int32
    public let path: String

    init(path: String, mode: mode_t) throws {
        // A new file gets exactly `mode` (the umask may strip group bits); an existing one keeps
        // its own.
        var fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_EXCL | O_CLOEXEC, mode)
        if fd >= 0 {
            _ = fchmod(fd, mode)
        } else if errno == EEXIST {
            fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC)
        }
        guard fd >= 0 else {
            let cause = String(cString: strerror(errno))
            throw ServiceStartError("SIGNALDB_LOG_FILE=\(path) cannot be opened for appending: \(cause). Create its directory, writable by the service user (uid \(getuid())), or unset SIGNALDB_LOG_FILE to log to stdout only")
        }
        self.fd = fd
        self.path = path
    }

    func append(_ line: String) {
        var bytes = Array(line.utf8)
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeMutableBytes { write(fd, $0.baseAddress! + done, $0.count - done) }
            if n < 0 && errno == EINTR { continue }
            // A full disk or a removed file: the line still went to stdout; dropping it here
            // must not stop the service.
            guard n > 0 else { return }
            done += n
        }
    }

    deinit { close(fd) }
}

/// Writes the lines `StreamLogHandler` writes to stdout, in the same format, to a ``LogFile``.
struct FileLogHandler: LogHandler {
    let label: String
    let file: LogFile
    var logLevel: Logger.Level = .info
    var metadata: Logger.Metadata = [:]
    var metadataProvider: Logger.MetadataProvider?

    init(label: String, file: LogFile) {
        self.label = label
        self.file = file
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        var merged = metadata
        if let provided = metadataProvider?.get() { merged.merge(provided) { _, new in new } }
        if let extra = event.metadata { merged.merge(extra) { _, new in new } }
        let pretty = merged.isEmpty ? "" : " " + merged.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
        file.append("\(Self.timestamp()) \(event.level)\(label.isEmpty ? "" : " ")\(label):\(pretty) [\(event.source)] \(event.message)\n")
    }

    static func timestamp() -> String {
        var buffer = [Int8](repeating: 0, count: 64)
        var now = time(nil)
        var local = tm()
        localtime_r(&now, &local)
        let count = strftime(&buffer, buffer.count, "%Y-%m-%dT%H:%M:%S%z", &local)
        return String(decoding: buffer[0..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
