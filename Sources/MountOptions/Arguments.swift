/// The mount's argv (without the program name), bytes as the kernel gave them:
///
///     [-f] [-d] [-s] [-v] -o OPTIONS [-o OPTIONS ...] MOUNTPOINT
///     SOURCE MOUNTPOINT -o OPTIONS          (the form mount.fuse3 and /etc/fstab use)
///
/// `-o` may repeat (`-oOPTIONS` too); the lists are applied in order, with the rule for a
/// setting given twice (`Settings.swift`) across them.
extension MountCommand {
    public static func parse(arguments: [[UInt8]]) throws(UsageError) -> MountCommand {
        var cmd = MountCommand()
        var positional: [[UInt8]] = []
        var i = 0
        while i < arguments.count {
            let a = arguments[i]
            if a.elementsEqual("-o".utf8) {
                i += 1
                guard i < arguments.count else { throw UsageError(message: "-o needs a list of options") }
                try cmd.apply(optionList: arguments[i])
            } else if a.count > 2 && a.starts(with: "-o".utf8) {
                try cmd.apply(optionList: Array(a.dropFirst(2)))
            } else if try cmd.apply(flag: a) {
                // done
            } else if a.first == UInt8(ascii: "-") && a.count > 1 {
                throw UsageError(message: "unknown flag \(Printable.text(a)) (see --help)")
            } else {
                guard !a.isEmpty else { throw UsageError(message: "an empty argument where a path was expected") }
                positional.append(a)
            }
            i += 1
        }
        switch positional.count {
        case 1: cmd.mountpoint = positional[0]
        case 2: cmd.source = positional[0]; cmd.mountpoint = positional[1]
        case 0: throw UsageError(message: "no mountpoint given (see --help)")
        default:
            throw UsageError(message: "too many arguments: \(positional.map { Printable.text($0, limit: 80) }.joined(separator: " "))")
        }
        guard !cmd.lowerDirs.isEmpty else { throw UsageError(message: "lowerdir= is required (-o lowerdir=TOP:...:BOTTOM)") }
        try cmd.resolveFeatures()
        return cmd
    }

    /// Applies one `-o` list: `key=value,flag,...`.
    public mutating func apply(optionList: [UInt8]) throws(UsageError) {
        for item in try OptionList.split(optionList) {
            try OptionTable.apply(item, to: &self)
        }
    }

    /// The single-letter flags a mount takes (`-f`, `-d`/`--debug`, `-s`, `-v`/`--verbose`);
    /// false when `argument` is none of them.
    public mutating func apply(flag argument: [UInt8]) throws(UsageError) -> Bool {
        func `is`(_ s: String) -> Bool { argument.elementsEqual(s.utf8) }
        if `is`("-f") {
            foreground = true
        } else if `is`("-d") || `is`("--debug") {
            debug = true
            foreground = true
        } else if `is`("-s") {
            try assign(\.singleThreaded, true, setting: "threaded", written: argument)
        } else if `is`("-v") || `is`("--verbose") {
            verbose = true
        } else {
            return false
        }
        return true
    }
}
