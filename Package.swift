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
        .library(name: "Layers", targets: ["Layers"]),
    ],
    dependencies: [
        // SHA-256 for digests, diff IDs and chain IDs.
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
        // Subcommands, --help, completion scripts; the byte-exact values come from argv itself.
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
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
        // The command line of a mount, parsed and checked from argv's bytes. No FUSE, no syscalls.
        .target(name: "MountOptions", dependencies: ["UnionCore"]),
        // libarchive (tar/pax, gzip, zstd) and the two Linux calls Glibc hides that layer work needs.
        .systemLibrary(name: "CArchive", pkgConfig: "libarchive", providers: [.apt(["libarchive-dev"])]),
        // Images: digests, manifests, the layer store, safe extraction, diff, reproducible layers. No FUSE.
        .target(name: "Layers", dependencies: ["UnionCore", "CArchive", .product(name: "Crypto", package: "swift-crypto")]),
        .executableTarget(name: "swiftunionfs", dependencies: [
            "FuseBridge", "UnionCore", "MountOptions", "Layers", "CLinux",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        // Calls only the tests make (per-thread setfsuid), kept out of the shipped modules.
        .systemLibrary(name: "CTestSupport", path: "Tests/CTestSupport"),
        .testTarget(name: "UnionCoreTests", dependencies: ["UnionCore", "CLinux", "CTestSupport"]),
        .testTarget(name: "MountOptionsTests", dependencies: ["MountOptions", "UnionCore"]),
        .testTarget(name: "LayersTests", dependencies: ["Layers", "UnionCore"]),
    ]
)
