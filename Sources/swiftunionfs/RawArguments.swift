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
