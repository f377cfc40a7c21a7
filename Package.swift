// swift-tools-version: 6.1
import PackageDescription

let package = Package(
    name: "SignalWAL",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "SignalWAL", targets: ["SignalWAL"]),
        .library(name: "SignalWALFuzzing", targets: ["SignalWALFuzzing"]),
        .executable(name: "signalwal-demo", targets: ["signalwal-demo"]),
        .executable(name: "signalwal-bench", targets: ["signalwal-bench"]),
        .executable(name: "signalwal", targets: ["signalwal"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.5.0"),
    ],
    targets: [
        // Only what Swift cannot import well: liburing's inline functions, fallocate flags,
        // O_DIRECT, and the SSE4.2 CRC32C intrinsic.
        .target(
            name: "CShims",
            path: "CShims",
            cSettings: [.define("_GNU_SOURCE")],
            linkerSettings: [.linkedLibrary("uring")]
        ),
        .target(
            name: "SignalWAL",
            dependencies: [
                "CShims",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
            ]
        ),
        // Deterministic payloads and the appending child process shared by the demo and the
        // crash tests (and later the reliability suite).
        .target(
            name: "SignalWALWorkload",
            dependencies: ["SignalWAL"]
        ),
        // The benchmark harness: one implementation behind `signalwal-bench` (and later
        // `signalwal bench`).
        .target(
            name: "SignalWALBench",
            dependencies: ["SignalWAL", "SignalWALWorkload", .product(name: "Logging", package: "swift-log"),
                           .product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),
        // The recovery fuzz target's body (Fuzz/ has the libFuzzer entry point); the tests
        // replay the committed corpus through it.
        .target(
            name: "SignalWALFuzzing",
            dependencies: ["SignalWAL", .product(name: "Logging", package: "swift-log")]
        ),
        .executableTarget(
            name: "signalwal-bench",
            dependencies: ["SignalWALBench", .product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),
        // The operators' tool: inspect, verify, dump, append, bench.
        .executableTarget(
            name: "signalwal",
            dependencies: ["SignalWAL", "SignalWALBench", "SignalWALWorkload",
                           .product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),
        // `make run`: appends, crashes itself, recovers and reports. The tests also use it as the
        // child process of their crash and permission tests.
        .executableTarget(
            name: "signalwal-demo",
            dependencies: ["SignalWAL", "SignalWALWorkload", "SignalWALFuzzing"]
        ),
        .testTarget(
            name: "SignalWALTests",
            dependencies: [
                "SignalWAL", "SignalWALWorkload", "SignalWALFuzzing", "CShims",
                .product(name: "MetricsTestKit", package: "swift-metrics"),
            ]
        ),
    ],
    swiftLanguageModes: [.v6]
)
