import ArgumentParser
import FuseBridge
import Glibc
import MountOptions
import UnionCore

/// argv as bytes, `image=` and `run --image` expanded (ImageOption).
let argv = ImageOption.expandOrExit(rawArguments())


/// The mount itself: parse, check, mount; every mistake one line and exit status 2.
func mountMain(_ argv: [[UInt8]]) -> Int32 {
    do throws(UsageError) {
        var cmd = try MountCommand.parse(arguments: argv)
        try Validation.check(&cmd)
        return try Mounter.mount(cmd)
    } catch {
        fail(error.message)
        exit(2)
    }
}

// The shape of the line, help and completion scripts first (Commands.swift); then the
// command reads its values from argv's bytes.
switch CommandShape.parse(argv) {
case is MountCLI:
    // `swiftunionfs mount ...` is `swiftunionfs ...`
    exit(mountMain(argv.first?.elementsEqual("mount".utf8) == true ? Array(argv.dropFirst()) : argv))
case is InspectCLI: exit(Inspect.main(Array(argv.dropFirst())))
case is RunCLI: exit(RunCommand.main(Array(argv.dropFirst())))
case is DiffCLI: exit(DiffCommand.main(Array(argv.dropFirst())))
case is CommitCLI: exit(CommitCommand.main(Array(argv.dropFirst())))
case is ImageCLI, is ImageImportCLI, is ImageListCLI, is ImageInspectCLI, is ImageCommitCLI:
    exit(ImageCommand.main(Array(argv.dropFirst())))
default:
    fail("internal error: no command for this line")
    exit(2)
}
