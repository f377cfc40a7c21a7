import ArgumentParser
import SignalWALBench

@main
struct SignalWALBenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "signalwal-bench", abstract: BenchCommands.abstract, subcommands: BenchCommands.subcommands)
}
