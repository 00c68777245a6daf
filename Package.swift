// swift-tools-version:6.0
import PackageDescription

// The layers, bottom up, each allowed to import only the ones below it:
//   CLinux (C: syscalls Glibc hides) -> UnionCore (the union, no FUSE)
//   CFuse (C: libfuse3)              -> FuseBridge (callbacks, session, trace)
//   swiftunionfs (the command)
let package = Package(
    name: "swiftunionfs",
    products: [
        .executable(name: "swiftunionfs", targets: ["swiftunionfs"]),
        .library(name: "UnionCore", targets: ["UnionCore"]),
    ],
    targets: [
        // The Linux calls Glibc hides behind _GNU_SOURCE; no libfuse.
        .systemLibrary(name: "CLinux"),
        // libfuse3's low-level API; imported by FuseBridge alone.
        .systemLibrary(name: "CFuse", pkgConfig: "fuse3", providers: [.apt(["libfuse3-dev"])]),
        // The union: names, layers, resolution, markers, merged directories, nodes, copy-up.
        .target(name: "UnionCore", dependencies: ["CLinux"]),
        // The thin bridge from libfuse's low-level callbacks to UnionCore.
        .target(name: "FuseBridge", dependencies: ["UnionCore", "CFuse", "CLinux"]),
        .executableTarget(name: "swiftunionfs", dependencies: ["FuseBridge", "UnionCore", "CLinux"]),
        // Calls only the tests make (per-thread setfsuid), kept out of the shipped modules.
        .systemLibrary(name: "CTestSupport", path: "Tests/CTestSupport"),
        .testTarget(name: "UnionCoreTests", dependencies: ["UnionCore", "CLinux", "CTestSupport"]),
    ]
)
