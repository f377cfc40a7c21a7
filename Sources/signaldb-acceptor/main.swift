import Foundation
import Logging
import SignalDBAcceptor
import SignalDBService

// signaldb-acceptor: OTLP over HTTP and gRPC into a durable WAL, forwarded to the writer.
// Settings come from the environment (and an optional JSON file); --help lists them.
let arguments = Array(CommandLine.arguments.dropFirst())
if arguments.contains("--help") || arguments.contains("-h") {
    print(Settings.helpText(service: "signaldb-acceptor",
                            summary: "receives OTLP (HTTP and gRPC), makes each request durable in its WAL, acknowledges, then forwards it to the writer.",
                            specs: AcceptorSettings.specs))
    print("\nCOMMANDS:\n  signaldb-acceptor dead-letters list | show <lsn> | replay   records the writer refused for good (ACCEPTOR_WAL_DIR/dead-letters); replay sends them again")
    exit(0)
}
if let unknown = arguments.first, unknown != "dead-letters" {
    FileHandle.standardError.write(Data("signaldb-acceptor: unknown argument '\(unknown)'. Settings are environment variables; see --help.\n".utf8))
    exit(64)
}

do {
    let settings = try AcceptorSettings(try await Settings.load(configFileSpec: AcceptorSettings.configFile))
    if arguments.first == "dead-letters" {
        exit(await AcceptorDeadLetterCommands.run(Array(arguments.dropFirst()), settings: settings))
    }
    let registry = try Telemetry.bootstrap(service: "signaldb-acceptor", logLevel: settings.logLevel,
                                           logFile: settings.common.logFile, access: settings.common.fileAccess)
    let logger = Logger(label: "signaldb.acceptor")
    do {
        try await Acceptor.run(settings: settings, registry: registry, logger: logger)
    } catch {
        logger.critical("signaldb-acceptor failed", metadata: ["error": "\(error)"])
        exit(1)
    }
} catch {
    FileHandle.standardError.write(Data("signaldb-acceptor: \(error)\n".utf8))
    exit(78)
}
