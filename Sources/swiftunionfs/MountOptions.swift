import Glibc
import UnionCore

/// The command line of a mount, parsed; every mistake is a `UsageError` with one line.
struct MountCommand {
    var source: String?
    var mountpoint: String?
    var foreground = false
    var debug = false
    var singleThreaded = false
    var lowerDirs: [String] = []
    var upperDir: String?
    var workDir: String?
    var fuseOptions: [String] = []
    var trace: String?          // "" = stderr, else a file
    var traceFormat = "text"
    var traceOps: [String]?
    var tracePath: String?
    var statsFile: String?
    var timeout: Double = 3600
    var skipSync = false
    var whiteout: MarkerFormat.Whiteout?
    var xattrNamespace: String?
    var uidMap = IDMap.identity
    var gidMap = IDMap.identity
    var squashToRoot = false
    var verbose = false
}

struct UsageError: Error { let message: String }

/// Options passed to libfuse and the kernel unchanged.
let passthroughFlags: Set<String> = [
    "allow_other", "allow_root", "default_permissions", "ro", "rw", "suid", "nosuid", "dev", "nodev",
    "exec", "noexec", "atime", "noatime", "relatime", "norelatime", "strictatime", "nodiratime", "diratime",
    "sync", "async", "dirsync", "auto_unmount", "lazytime", "nolazytime", "iversion", "noiversion", "mand", "nomand",
]
let passthroughValued: Set<String> = ["fsname", "subtype", "max_read", "blksize"]
/// Accepted and ignored: mount(8) and fstab words that mean nothing to a FUSE daemon,
/// and fuse-overlayfs options whose behaviour is already ours (see docs/options.md).
let ignoredFlags: Set<String> = [
    "auto", "noauto", "user", "nouser", "users", "_netdev", "nofail", "defaults", "x-systemd.automount",
    "redirect_dir=off", "index=off", "metacopy=off", "xino=off", "xino=auto", "nfs_export=off",
    "noacl", "threaded=1", "static_nlink", "ino32_t", "xattr_permissions=0", "fast_ino=0", "fast_ino=1",
]
let ignoredValued: Set<String> = ["context", "fscontext", "defcontext", "rootcontext", "plugins", "redirect_dir",
                                  "index", "metacopy", "xino", "threaded", "xattr_permissions"]

enum CommandLineParser {
    static func parse(_ args: [String]) throws -> MountCommand {
        var cmd = MountCommand()
        var positional: [String] = []
        var i = 0
        while i < args.count {
            let a = args[i]
            switch a {
            case "-f": cmd.foreground = true
            case "-d", "--debug": cmd.debug = true; cmd.foreground = true
            case "-s": cmd.singleThreaded = true
            case "-v", "--verbose": cmd.verbose = true
            case "-o":
                i += 1
                guard i < args.count else { throw UsageError(message: "-o needs a list of options") }
                try apply(args[i], to: &cmd)
            default:
                if a.hasPrefix("-o") && a.count > 2 {
                    try apply(String(a.dropFirst(2)), to: &cmd)
                } else if a.hasPrefix("-") && a != "-" {
                    throw UsageError(message: "unknown flag \(a) (see --help)")
                } else {
                    positional.append(a)
                }
            }
            i += 1
        }
        switch positional.count {
        case 1: cmd.mountpoint = positional[0]
        case 2: cmd.source = positional[0]; cmd.mountpoint = positional[1]
        case 0: throw UsageError(message: "no mountpoint given (see --help)")
        default: throw UsageError(message: "too many arguments: \(positional.joined(separator: " "))")
        }
        return cmd
    }

    /// Splits "a,b=c,context=\"x,y\"" on commas outside quotes; empty items are dropped.
    static func splitOptions(_ text: String) -> [String] {
        var items: [String] = [], cur = "", quoted = false, escaped = false
        for ch in text {
            if escaped { cur.append(ch); escaped = false; continue }
            if ch == "\\" { cur.append(ch); escaped = true; continue }
            if ch == "\"" { quoted.toggle(); cur.append(ch); continue }
            if ch == "," && !quoted { items.append(cur); cur = ""; continue }
            cur.append(ch)
        }
        items.append(cur)
        return items.filter { !$0.isEmpty }
    }

    /// Splits a lowerdir list on ':' except where written as "\:".
    static func splitLowerDirs(_ text: String) -> [String] {
        var dirs: [String] = [], cur = "", escaped = false
        for ch in text {
            if escaped { cur.append(ch); escaped = false; continue }
            if ch == "\\" { escaped = true; continue }
            if ch == ":" { dirs.append(cur); cur = ""; continue }
            cur.append(ch)
        }
        dirs.append(cur)
        return dirs
    }

    static func apply(_ list: String, to cmd: inout MountCommand) throws {
        for item in splitOptions(list) {
            let (key, value): (String, String?) = {
                guard let eq = item.firstIndex(of: "=") else { return (item, nil) }
                return (String(item[..<eq]), String(item[item.index(after: eq)...]))
            }()
            func need() throws -> String {
                guard let value, !value.isEmpty else { throw UsageError(message: "option \(key) needs a value") }
                return value
            }
            switch key {
            case "lowerdir":
                let dirs = splitLowerDirs(try need())
                guard !dirs.contains(where: \.isEmpty) else { throw UsageError(message: "lowerdir has an empty entry: \(value!)") }
                cmd.lowerDirs = dirs
            case "upperdir": cmd.upperDir = try need()
            case "workdir": cmd.workDir = try need()
            case "trace": cmd.trace = value ?? ""
            case "trace_format":
                let v = try need()
                guard v == "text" || v == "json" else { throw UsageError(message: "trace_format must be text or json, not \(v)") }
                cmd.traceFormat = v
            case "trace_ops": cmd.traceOps = try need().split(separator: ":").flatMap { $0.split(separator: "+") }.map(String.init)
            case "trace_path": cmd.tracePath = try need()
            case "stats": cmd.statsFile = try need()
            case "timeout":
                guard let t = Double(try need()), t >= 0 else { throw UsageError(message: "timeout must be a number of seconds") }
                cmd.timeout = t
            case "volatile": cmd.skipSync = true
            case "fsync":
                switch try need() {
                case "0": cmd.skipSync = true
                case "1": cmd.skipSync = false
                default: throw UsageError(message: "fsync must be 0 or 1")
                }
            case "whiteout":
                guard let w = MarkerFormat.Whiteout(rawValue: try need()) else {
                    throw UsageError(message: "whiteout must be device or oci")
                }
                cmd.whiteout = w
            case "xattr_namespace":
                let v = try need()
                guard v == "trusted" || v == "user" else { throw UsageError(message: "xattr_namespace must be trusted or user") }
                cmd.xattrNamespace = v
            case "userxattr": cmd.xattrNamespace = "user"
            case "uidmapping":
                guard let m = IDMap.parse(try need()) else { throw UsageError(message: "uidmapping must be CONTAINER:HOST:LEN triples") }
                cmd.uidMap = m
            case "gidmapping":
                guard let m = IDMap.parse(try need()) else { throw UsageError(message: "gidmapping must be CONTAINER:HOST:LEN triples") }
                cmd.gidMap = m
            case "squash_to_root": cmd.squashToRoot = true
            case "debug": cmd.debug = true; cmd.foreground = true
            default:
                if value == nil && passthroughFlags.contains(key) {
                    cmd.fuseOptions.append(key)
                } else if value != nil && passthroughValued.contains(key) {
                    cmd.fuseOptions.append(item)
                } else if ignoredFlags.contains(item) || (value != nil && ignoredValued.contains(key)) {
                    continue
                } else {
                    throw UsageError(message: "unknown option '\(item)' (see --help)")
                }
            }
        }
    }
}
