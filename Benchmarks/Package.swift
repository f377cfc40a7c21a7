// swift-tools-version: 6.1
// Micro-benchmarks for SignalWAL (ordo-one/benchmark). A separate package so that the main
// package's `swift build` and `swift test` do not build the benchmark framework.
//   swift package --package-path Benchmarks benchmark
import PackageDescription

let package = Package(
    name: "SignalWALBenchmarks",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "SignalWAL", path: ".."),
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.1", traits: ["MallocInterposer"]),
    ],
    targets: [
        .executableTarget(
            name: "SignalWALMicro",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "SignalWAL", package: "SignalWAL"),
            ],
            path: "Benchmarks/SignalWALMicro",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
    ],
    swiftLanguageModes: [.v6]
)
