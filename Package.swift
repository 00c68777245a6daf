// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "swiftunionfs",
    products: [
        .executable(name: "swiftunionfs", targets: ["swiftunionfs"]),
        .library(name: "UnionCore", targets: ["UnionCore"]),
    ],
    targets: [
        // libfuse3 and the syscalls Glibc hides behind _GNU_SOURCE; the only C in the project.
        .systemLibrary(name: "CFuse", pkgConfig: "fuse3", providers: [.apt(["libfuse3-dev"])]),
        // The union: layers, resolution, markers, merged directories, inodes, copy-up. No FUSE types.
        .target(name: "UnionCore", dependencies: ["CFuse"]),
        // The thin bridge from libfuse's low-level callbacks to UnionCore.
        .target(name: "FuseBridge", dependencies: ["UnionCore", "CFuse"]),
        // The command line of a mount, parsed and checked from argv's bytes. No FUSE, no syscalls.
        .target(name: "MountOptions", dependencies: ["UnionCore"]),
        .executableTarget(name: "swiftunionfs", dependencies: ["FuseBridge", "UnionCore", "MountOptions"]),
        .testTarget(name: "UnionCoreTests", dependencies: ["UnionCore", "CFuse"]),
        .testTarget(name: "MountOptionsTests", dependencies: ["MountOptions", "UnionCore"]),
    ]
)
