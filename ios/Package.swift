// swift-tools-version:5.9
// The edgeloop Swift package: the Swift API generated from edgeloop-ffi by
// UniFFI, a few conveniences on top, and the Rust library as an
// XCFramework. Run ./build-xcframework.sh first (on a Mac with Xcode).
import PackageDescription

let package = Package(
    name: "Edgeloop",
    platforms: [.iOS(.v15), .macOS(.v12)],
    products: [
        .library(name: "Edgeloop", targets: ["Edgeloop"]),
    ],
    targets: [
        .binaryTarget(name: "EdgeloopFFI", path: "build/EdgeloopFFI.xcframework"),
        .target(
            name: "Edgeloop",
            dependencies: ["EdgeloopFFI"],
            path: "Sources/Edgeloop",
            // The trace store uses the SDK's SQLite.
            linkerSettings: [.linkedLibrary("sqlite3")]
        ),
        .testTarget(name: "EdgeloopTests", dependencies: ["Edgeloop"], path: "Tests/EdgeloopTests"),
    ]
)
