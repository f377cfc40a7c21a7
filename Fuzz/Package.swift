// swift-tools-version: 6.1
// The libFuzzer build of the recovery fuzz target. Separate from the main package because it
// is compiled with -parse-as-library (libFuzzer supplies main) and -sanitize=fuzzer,address.
// Built and run by `make fuzz` (FUZZ_SECONDS, default 60) and `make fuzz-ingest`.
import PackageDescription

let package = Package(
    name: "SignalWALFuzz",
    dependencies: [.package(name: "SignalWAL", path: "..")],
    targets: [
        .executableTarget(
            name: "signalwal-fuzz",
            dependencies: [.product(name: "SignalWALFuzzing", package: "SignalWAL")]
        ),
        // Request decoding, bounded inflate and the envelope (`make fuzz-ingest`).
        .executableTarget(
            name: "signaldb-ingest-fuzz",
            dependencies: [.product(name: "SignalDBIngestFuzzing", package: "SignalWAL")]
        ),
    ],
    swiftLanguageModes: [.v6]
)
