// swift-tools-version:6.0
import PackageDescription

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
    ],
    targets: [
        // libfuse3 and the syscalls Glibc hides behind _GNU_SOURCE; the only C in the project.
        .systemLibrary(name: "CFuse", pkgConfig: "fuse3", providers: [.apt(["libfuse3-dev"])]),
        // The union: layers, resolution, markers, merged directories, inodes, copy-up. No FUSE types.
        .target(name: "UnionCore", dependencies: ["CFuse"]),
        // The thin bridge from libfuse's low-level callbacks to UnionCore.
        .target(name: "FuseBridge", dependencies: ["UnionCore", "CFuse"]),
        // libarchive (tar/pax, gzip, zstd) and the two Linux calls Glibc hides that layer work needs.
        .systemLibrary(name: "CArchive", pkgConfig: "libarchive", providers: [.apt(["libarchive-dev"])]),
        // Images: digests, manifests, the layer store, safe extraction, diff, reproducible layers. No FUSE.
        .target(name: "Layers", dependencies: ["UnionCore", "CArchive", .product(name: "Crypto", package: "swift-crypto")]),
        .executableTarget(name: "swiftunionfs", dependencies: ["FuseBridge", "UnionCore", "Layers"]),
        .testTarget(name: "UnionCoreTests", dependencies: ["UnionCore", "CFuse"]),
        .testTarget(name: "LayersTests", dependencies: ["Layers", "UnionCore"]),
    ]
)
