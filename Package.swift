// swift-tools-version:6.0
import PackageDescription

/// FeatureStream: distributed frozen-backbone feature extraction and head training.
///
/// C libraries are wrapped in `C*` system-library targets; everything above them is Swift.
let package = Package(
    name: "FeatureStream",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "featstream", targets: ["featstream"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-protobuf", from: "1.39.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/LebJe/TOMLKit", from: "0.6.0"),
    ],
    targets: [
        // The data path, Dataset → Decode → Backbone → Codec → Wire → Store → Head, one section per step,
        // each with its C libraries (Debian -dev packages, `C*` targets); the roles follow, beside it.

        // MARK: Durable files (under the journal, the store, the keys, the index and image reads)
        // Exact, fsync'd, locked file I/O: the one home of that POSIX glue.
        .target(name: "DurableFile"),

        // MARK: Dataset
        // The coordinator's on-disk dataset index (Protocols/INDEX.md); featstream-index drives it for benchmarks.
        .target(name: "DatasetIndex", dependencies: ["DurableFile", "WireProtocol"]),
        .executableTarget(name: "featstream-index", dependencies: ["DatasetIndex"]),

        // MARK: Decode
        .systemLibrary(name: "CJPEG", path: "Sources/CJPEG"),
        .systemLibrary(name: "CPNG", path: "Sources/CPNG"),
        // libpng reports errors by longjmp, which Swift cannot catch: the decode loop lives in C.
        .target(name: "CPNGShim", dependencies: ["CPNG"], path: "Sources/CPNGShim"),
        // TIFF, GIF, WebP and BMP decoders (libtiff, giflib, libwebp, stb_image); error callbacks and
        // variadic handlers live in C, as for libpng.
        .systemLibrary(name: "CTIFF", path: "Sources/CTIFF"),
        .systemLibrary(name: "CGIF", path: "Sources/CGIF"),
        .systemLibrary(name: "CWebP", path: "Sources/CWebP"),
        .systemLibrary(name: "CSTBImage", path: "Sources/CSTBImage"),
        .target(name: "CImageCodecs", dependencies: ["CJPEG", "CTIFF", "CGIF", "CWebP", "CSTBImage"], path: "Sources/CImageCodecs"),
        .target(name: "ImageInput", dependencies: ["DurableFile", "CJPEG", "CPNGShim", "CImageCodecs", "CTIFF", "CGIF", "CWebP", "CSTBImage"]),

        // MARK: Backbone
        .systemLibrary(name: "CDNNL", path: "Sources/CDNNL"),
        .target(
            name: "ONNXProto",
            dependencies: [.product(name: "SwiftProtobuf", package: "swift-protobuf")],
            exclude: ["regenerate.sh"]
        ),
        .target(name: "Backbone", dependencies: ["CDNNL", "ONNXProto"]),
        .target(name: "NumpyFormat"),
        .target(name: "Extraction", dependencies: ["Backbone", "DatasetIndex", "ImageInput", "NumpyFormat", "WireProtocol"]),

        // MARK: Codec
        // SSE4.2 CRC-32C and F16C half conversion: instruction sets Swift cannot enable per function.
        .target(name: "CSIMDKernels", path: "Sources/CSIMDKernels"),
        .systemLibrary(name: "CLZ4", path: "Sources/CLZ4"),
        .target(name: "FeatureCodec", dependencies: ["CLZ4", "CSIMDKernels", "WireProtocol"]),

        // MARK: Wire
        .target(name: "WireProtocol", dependencies: ["CSIMDKernels"]),
        // libFuzzer target for the frame decoder: Protocols/fuzz.sh builds it with -sanitize=fuzzer.
        .executableTarget(name: "FrameFuzz", dependencies: ["WireProtocol"]),
        .systemLibrary(name: "CZMQ", path: "Sources/CZMQ"),
        .target(name: "Transport", dependencies: ["CZMQ", "DurableFile"]),

        // MARK: Store
        // fallocate(2), which Swift's Glibc module does not declare.
        .target(name: "CFileSpace", path: "Sources/CFileSpace"),
        .target(name: "FeatureStore", dependencies: ["CFileSpace", "DurableFile", "WireProtocol", "FeatureCodec"]),

        // MARK: Head: training, exports and reports
        .systemLibrary(name: "COpenBLAS", path: "Sources/COpenBLAS"),
        .target(name: "HeadTraining", dependencies: ["COpenBLAS", "CSIMDKernels"]),
        // Exports run the trainer's forward pass (one home for the head's maths) and NumpyFormat's writer.
        .target(name: "HeadExport", dependencies: ["ONNXProto", "HeadTraining", "NumpyFormat"]),
        .target(name: "HeadJob", dependencies: ["HeadTraining", "HeadExport", "FeatureStore", "FeatureCodec", "Extraction", "ImageInput"]),

        // MARK: The roles, beside the path: sans-I/O cores, then the ZeroMQ shell around them
        .target(name: "Coordination", dependencies: ["DatasetIndex", "DurableFile", "WireProtocol"]),
        // The protocol rules of each role as pure state machines (no sockets, clocks or files).
        .target(name: "ClusterSessions", dependencies: ["Coordination", "FeatureStore", "WireProtocol"]),
        // A deterministic simulator of a whole job over the real sessions, journal, ledger and store.
        .target(name: "ClusterSimulation",
                dependencies: ["ClusterSessions", "Coordination", "FeatureStore", "FeatureCodec", "WireProtocol", "FeatStreamTestSupport"]),
        .executableTarget(name: "featstream-sim", dependencies: ["ClusterSimulation"]),
        .target(name: "RoleMetrics", dependencies: [.product(name: "Prometheus", package: "swift-prometheus")]),
        .target(name: "ClusterLaunch", dependencies: [.product(name: "TOMLKit", package: "TOMLKit")]),
        .target(
            name: "ClusterRoles",
            dependencies: ["DatasetIndex", "ClusterSessions", "Coordination", "FeatureStore", "FeatureCodec", "Transport", "WireProtocol", "Extraction",
                           "RoleMetrics", .product(name: "Prometheus", package: "swift-prometheus"),
                           .product(name: "Logging", package: "swift-log")]
        ),
        // Benchmark code, out of the product modules: `featstream bench` calls it; results print as JSON.
        .target(name: "Benchmarks", dependencies: ["Backbone", "DatasetIndex", "Extraction", "ImageInput", "FeatureCodec", "WireProtocol", "HeadTraining",
                                                   "HeadJob", "ClusterSessions", "ClusterRoles", "FeatureStore", "Transport"]),
        .executableTarget(
            name: "featstream",
            dependencies: [
                "Benchmarks", "DatasetIndex", "Extraction", "Backbone", "ImageInput", "ClusterRoles", "FeatureStore", "FeatureCodec", "WireProtocol", "NumpyFormat",
                "HeadJob", "HeadTraining", "HeadExport", "Transport", "RoleMetrics", "ClusterLaunch",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),

        // MARK: Tests
        .target(name: "FeatStreamTestSupport", path: "Sources/FeatStreamTestSupport"),
        .testTarget(name: "BackboneTests", dependencies: ["Backbone", "NumpyFormat"]),
        .testTarget(name: "ImageInputTests", dependencies: ["ImageInput", "DatasetIndex", "CPNG", "CJPEG"], exclude: ["Fixtures"]),
        .testTarget(name: "ExtractionTests", dependencies: ["Extraction", "DatasetIndex", "NumpyFormat", "FeatStreamTestSupport"]),
        .testTarget(name: "DurableFileTests", dependencies: ["DurableFile"]),
        .testTarget(name: "WireProtocolTests", dependencies: ["WireProtocol", "FeatStreamTestSupport"]),
        .testTarget(name: "FeatureCodecTests", dependencies: ["FeatureCodec", "WireProtocol", "FeatStreamTestSupport"]),
        .testTarget(name: "ClusterSessionsTests", dependencies: ["ClusterSessions", "ClusterSimulation", "Coordination", "FeatureCodec", "FeatureStore", "WireProtocol"]),
        .testTarget(name: "CoordinationTests", dependencies: ["Coordination", "DatasetIndex", "WireProtocol", "FeatStreamTestSupport"]),
        .testTarget(name: "FeatureStoreTests", dependencies: ["FeatureStore", "WireProtocol", "FeatStreamTestSupport"]),
        .testTarget(name: "HeadExportTests", dependencies: ["HeadExport", "ONNXProto", "NumpyFormat", "FeatStreamTestSupport"]),
        .testTarget(name: "HeadTrainingTests", dependencies: ["HeadTraining"]),
        .testTarget(name: "TransportTests", dependencies: ["Transport"]),
        .testTarget(name: "DatasetIndexTests", dependencies: ["DatasetIndex", "WireProtocol", "FeatStreamTestSupport"]),
        .testTarget(name: "LaunchTests", dependencies: ["ClusterLaunch", "Transport", "FeatStreamTestSupport", "FeatureStore", "RoleMetrics"]),
        .testTarget(
            name: "TrainingTests",
            dependencies: ["Extraction", "FeatureStore", "ImageInput", "NumpyFormat", "WireProtocol", "FeatStreamTestSupport"]
        ),
        .testTarget(
            name: "ClusterTests",
            dependencies: ["ClusterRoles", "FeatureStore", "FeatureCodec", "Transport", "WireProtocol", "NumpyFormat", "FeatStreamTestSupport", "RoleMetrics",
                           "ClusterLaunch", "Coordination", "DatasetIndex", .product(name: "Prometheus", package: "swift-prometheus")]
        ),
    ]
)
