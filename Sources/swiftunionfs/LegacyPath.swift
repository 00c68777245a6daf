import Glibc

/// argv as the kernel gave it, without the program name: bytes, never through `String`
/// (which would repair bytes that are not UTF-8 in a path).
func rawArguments() -> [[UInt8]] {
    let argv = CommandLine.unsafeArgv
    return (1..<Int(CommandLine.argc)).map { i in
        guard let arg = argv[i] else { return [] }
        return Array(UnsafeRawBufferPointer(start: arg, count: strlen(arg)))
    }
}

// The union core, the bridge and the rest of the CLI still take `String` paths. Every
// conversion between a byte path from the command line and those goes through one of these
// two, so that each is found (grep legacyPath/legacyBytes) and removed when they take bytes.
// Until then a path that is not valid UTF-8 is repaired here (U+FFFD) and will not be found.

/// A byte path (or other argv bytes) for a `String` API.
func legacyPath(_ bytes: [UInt8]) -> String { String(decoding: bytes, as: UTF8.self) }

/// A `String` path from a `String` API (realpath's result, a temporary directory) back to bytes.
func legacyBytes(_ path: String) -> [UInt8] { Array(path.utf8) }
