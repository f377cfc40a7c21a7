import Foundation
import Logging
import SignalDBService
import SignalDBWriter

// signaldb-writer: takes the acceptors' forwarded records into a durable WAL, acknowledges,
// stores them (embedded SQLite), and only then checkpoints. Settings come from the
// environment (and an optional JSON file); --help lists them.
let arguments = Array(CommandLine.arguments.dropFirst())
if arguments.contains("--help") || arguments.contains("-h") {
    print(Settings.helpText(service: "signaldb-writer",
                            summary: "makes forwarded records durable in its WAL, acknowledges, stores them exactly once, then checkpoints.",
                            specs: WriterSettings.specs))
    print("\nCOMMANDS:\n  signaldb-writer dead-letters list | show <lsn> | replay   records the writer could never store (WRITER_WAL_DIR/dead-letters)")
    exit(0)
}

do {
    let settings = try WriterSettings(try await Settings.load(configFileSpec: WriterSettings.configFile))
    if arguments.first == "dead-letters" {
        exit(await DeadLetterCommands.run(Array(arguments.dropFirst()), settings: settings))
    }
    if let unknown = arguments.first {
        FileHandle.standardError.write(Data("signaldb-writer: unknown argument '\(unknown)'. Settings are environment variables; see --help.\n".utf8))
        exit(64)
    }
    let registry = try Telemetry.bootstrap(service: "signaldb-writer", logLevel: settings.logLevel,
                                           logFile: settings.common.logFile, access: settings.common.fileAccess)
    let logger = Logger(label: "signaldb.writer")
    do {
        try await Writer.run(settings: settings, registry: registry, logger: logger)
    } catch {
        logger.critical("signaldb-writer failed", metadata: ["error": "\(error)"])
        exit(1)
    }
} catch {
    FileHandle.standardError.write(Data("signaldb-writer: \(error)\n".utf8))
    exit(78)
}
