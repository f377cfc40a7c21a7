// swift-tools-version: 6.1
import PackageDescription

// SIGNALWAL_ENGINE_ONLY=1 leaves out the services and their dependencies (Hummingbird, gRPC,
// SwiftProtobuf): `make sanitize` sets it, so the sanitizer builds of the engine do not compile
// the network stack twice more. Everything else builds the whole package.
let engineOnly = Context.environment["SIGNALWAL_ENGINE_ONLY"] != nil

var package = Package(
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
        // The names the services give their files beside the WAL (acceptor id, dead letters),
        // shared with `signalwal`, which is built without the services.
        .target(name: "SignalDBLayout"),
        // The system SQLite (libsqlite3-dev), for `signalwal inspect --store`: it reads the
        // writer's progress without linking the store's code.
        .systemLibrary(name: "CSQLite", path: "Sources/CSQLite", providers: [.apt(["libsqlite3-dev"])]),
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
            dependencies: ["SignalWAL", "SignalWALBench", "SignalWALWorkload", "SignalDBLayout", "CSQLite",
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

// The services: generated protobuf code (Generated/), the shared service libraries, and one
// folder per executable.
if !engineOnly {
    package.products += [
        .executable(name: "signaldb-acceptor", targets: ["signaldb-acceptor"]),
        .executable(name: "signaldb-writer", targets: ["signaldb-writer"]),
        .library(name: "SignalDBIngest", targets: ["SignalDBIngest"]),
        .library(name: "SignalDBIngestFuzzing", targets: ["SignalDBIngestFuzzing"]),
    ]
    package.dependencies += [
        .package(url: "https://github.com/apple/swift-protobuf", from: "1.39.0"),
        .package(url: "https://github.com/apple/swift-configuration", from: "1.4.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-system", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-http-types", from: "1.0.0"),
        .package(url: "https://github.com/grpc/grpc-swift-2", from: "2.4.3"),
        .package(url: "https://github.com/grpc/grpc-swift-nio-transport", from: "2.9.2"),
        .package(url: "https://github.com/grpc/grpc-swift-protobuf", from: "2.4.1"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
    ]
    let protobuf: Target.Dependency = .product(name: "SwiftProtobuf", package: "swift-protobuf")
    let grpcCore: Target.Dependency = .product(name: "GRPCCore", package: "grpc-swift-2")
    let grpcProtobuf: Target.Dependency = .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf")
    let grpcTransport: Target.Dependency = .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport")
    package.targets += [
        // Generated by Generated/regenerate.sh and committed: the OTLP messages and services.
        .target(name: "OTLPProto", dependencies: [protobuf, grpcCore, grpcProtobuf], path: "Generated/Sources/OTLPProto"),
        // Generated too: the acceptor-to-writer link (Generated/protos/signaldb).
        .target(name: "SignalDBProto", dependencies: [protobuf, grpcCore, grpcProtobuf], path: "Generated/Sources/SignalDBProto"),
        // What a request becomes before it touches the network stack: OTLP decoding and
        // validation (protobuf and OTLP/JSON), bounded decompression, the WAL envelope, status
        // bodies. No listeners, so the fuzz target and the unit tests build it alone.
        .target(
            name: "SignalDBIngest",
            dependencies: ["OTLPProto", protobuf, grpcCore, grpcProtobuf,
                           "CZlib"]
        ),
        // The system zlib (zlib1g-dev), for bounded gzip and deflate inflation.
        .systemLibrary(name: "CZlib", path: "Sources/CZlib", providers: [.apt(["zlib1g-dev"])]),
        // The ingest fuzz target's body (Fuzz/ has the libFuzzer entry point); the tests replay
        // Fuzz/ingest-corpus through it.
        .target(name: "SignalDBIngestFuzzing", dependencies: ["SignalDBIngest", "OTLPProto", protobuf]),
        // Shared by both services: settings, metrics, the admin listener, health, lifecycle,
        // authentication and per-tenant limits.
        .target(
            name: "SignalDBService",
            dependencies: ["SignalDBIngest", "SignalWAL", "SignalDBLayout",
                           .product(name: "Logging", package: "swift-log"),
                           .product(name: "Metrics", package: "swift-metrics"),
                           .product(name: "Configuration", package: "swift-configuration"),
                           .product(name: "SystemPackage", package: "swift-system"),
                           .product(name: "Hummingbird", package: "hummingbird"),
                           .product(name: "HTTPTypes", package: "swift-http-types"),
                           .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                           .product(name: "Prometheus", package: "swift-prometheus"),
                           grpcCore, grpcProtobuf, grpcTransport]
        ),
        // The acceptor: OTLP over HTTP and gRPC into its WAL, and the forwarder to the writer.
        .target(
            name: "SignalDBAcceptor",
            dependencies: ["SignalDBService", "SignalDBIngest", "SignalDBProto", "OTLPProto", "SignalWAL", "SignalDBLayout",
                           grpcCore, grpcProtobuf, grpcTransport,
                           .product(name: "Hummingbird", package: "hummingbird"),
                           .product(name: "HTTPTypes", package: "swift-http-types"),
                           .product(name: "NIOCore", package: "swift-nio"),
                           .product(name: "ServiceLifecycle", package: "swift-service-lifecycle")]
        ),
        .executableTarget(name: "signaldb-acceptor", dependencies: ["SignalDBAcceptor", "SignalDBService"]),
        // Where rows go: the Store protocol, OTLP-to-row mapping, and the embedded SQLite store
        // (GRDB). No network code and no WAL: a second store is a new type here.
        .target(
            name: "SignalDBStore",
            dependencies: ["SignalDBIngest", "SignalDBLayout", "OTLPProto", protobuf, .product(name: "GRDB", package: "GRDB.swift")]
        ),
        // The writer: the Forward listener into its WAL, the per-acceptor marks, and the
        // committer from the WAL into the store.
        .target(
            name: "SignalDBWriter",
            dependencies: ["SignalDBService", "SignalDBIngest", "SignalDBStore", "SignalDBProto", "SignalWAL", "SignalDBLayout",
                           grpcCore, grpcProtobuf, grpcTransport,
                           .product(name: "ServiceLifecycle", package: "swift-service-lifecycle")]
        ),
        .executableTarget(name: "signaldb-writer", dependencies: ["SignalDBWriter", "SignalDBService"]),
        // Benchmark-only, not a product (`make bench-services`): the acceptor's receivers with a
        // discarding sink instead of the WAL, and the store's direct-insert ceiling.
        .executableTarget(name: "signaldb-bench-baseline",
                          dependencies: ["SignalDBAcceptor", "SignalDBService", "SignalDBIngest", "SignalDBStore"]),
        .testTarget(
            name: "SignalDBServiceTests",
            dependencies: ["SignalDBIngest", "SignalDBService", "SignalDBAcceptor", "OTLPProto", "SignalDBProto", "SignalWAL", "CZlib",
                           "SignalDBIngestFuzzing", "SignalDBStore", "SignalDBWriter",
                           .product(name: "SwiftProtobuf", package: "swift-protobuf")]
        ),
    ]
}
