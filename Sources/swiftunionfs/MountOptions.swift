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
    /// fuse-overlayfs's squash_to_root / squash_to_uid= / squash_to_gid=: every owner shown as
    /// root / as this id (squash_to_uid/gid win over squash_to_root). Parsed here; the core applies them.
    var squashToRoot = false
    var squashToUID: UInt32?
    var squashToGID: UInt32?
    /// fuse-overlayfs's noxattrs=1: every xattr call answers ENOTSUP. Parsed here; the core applies it.
    var noXattrs = false
    /// fuse-overlayfs's static_nlink: every directory reports st_nlink 1. Parsed here; the core applies it.
    var staticNlink = false
    var verbose = false
}

struct UsageError: Error { let message: String }

/// Options passed to libfuse and the kernel unchanged (each one libfuse 3 takes for a FUSE mount).
let passthroughFlags: Set<String> = [
    "allow_other", "allow_root", "default_permissions", "ro", "rw", "suid", "nosuid", "dev", "nodev",
    "exec", "noexec", "atime", "noatime", "sync", "async", "dirsync", "auto_unmount",
]
let passthroughValued: Set<String> = ["fsname", "subtype"]
/// Accepted and ignored: mount(8) and fstab words that mean nothing to a FUSE daemon, and
/// fuse-overlayfs / kernel-overlay options whose behaviour is already ours or that only tune a
/// mechanism swiftunionfs does not have (see docs/podman.md, "Options from fuse-overlayfs"):
/// redirect_dir, index, metacopy, xino, nfs_export: kernel-overlay features; the view is the same without them.
/// noacl: swiftunionfs never asks the kernel for FUSE_POSIX_ACL. fast_ino: inode numbers are chosen by
/// the layers' filesystems. writeback: the kernel writeback cache is never enabled.
/// context=...: SELinux labels; the kernel refuses them on a FUSE mount without SELinux, and the layers keep theirs.
/// plugins=: fuse-overlayfs layer plugins are only used by "//plugin/..." lowerdirs, which are refused as missing.
/// relatime, strictatime, diratime, nodiratime, lazytime (and no-forms), iversion, mand: mount(8) words libfuse 3
/// refuses on a FUSE mount; access times are what the layers' filesystems record, i_version and mandatory
/// locks do not exist on FUSE (mand is gone from Linux since 5.15).
let ignoredFlags: Set<String> = [
    "auto", "noauto", "user", "nouser", "users", "_netdev", "nofail", "defaults", "x-systemd.automount",
    "relatime", "norelatime", "strictatime", "nostrictatime", "diratime", "nodiratime", "lazytime", "nolazytime",
    "iversion", "noiversion", "mand", "nomand",
    "noacl", "ino32_t", "fast_ino=0", "fast_ino=1", "writeback=0", "writeback=1",
]
let ignoredValued: Set<String> = ["context", "fscontext", "defcontext", "rootcontext", "plugins", "redirect_dir",
                                  "index", "metacopy", "xino", "nfs_export"]

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

    /// fuse-overlayfs's `uidmapping=`/`gidmapping=`: `LAYER:SHOWN:COUNT` triples, colon-separated: the id
    /// stored in the layers comes first, the id shown through the mount second (stored 0 shows as 100000
    /// with `0:100000:65536`; a chown to 100005 stores 5). Empty items are skipped as fuse-overlayfs's
    /// strtok skips them: containers/storage writes `uidmapping=:0:100000:65536`.
    static func idMapping(_ key: String, _ text: String) throws -> IDMap {
        let nums = text.split(separator: ":").map(String.init)
        var shownFirst: [String] = []  // IDMap.parse takes SHOWN:LAYER:COUNT
        if nums.count % 3 == 0 {
            for i in stride(from: 0, to: nums.count, by: 3) { shownFirst += [nums[i + 1], nums[i], nums[i + 2]] }
        }
        guard !shownFirst.isEmpty, let m = IDMap.parse(shownFirst.joined(separator: ":")) else {
            throw UsageError(message: "\(key) must be LAYER-ID:SHOWN-ID:COUNT triples separated by ':' (fuse-overlayfs syntax), not \(text)")
        }
        return m
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
            case "uidmapping": cmd.uidMap = try idMapping(key, try need())
            case "gidmapping": cmd.gidMap = try idMapping(key, try need())
            case "squash_to_root":
                guard value == nil else { throw UsageError(message: "squash_to_root takes no value") }
                cmd.squashToRoot = true
            case "squash_to_uid", "squash_to_gid":
                guard let id = UInt32(try need()), id != UInt32.max else {
                    throw UsageError(message: "\(key) must be a numeric id, not \(value!)")
                }
                if key == "squash_to_uid" { cmd.squashToUID = id } else { cmd.squashToGID = id }
            case "static_nlink":
                guard value == nil else { throw UsageError(message: "static_nlink takes no value") }
                cmd.staticNlink = true
            case "noxattrs":
                switch try need() {
                case "0": cmd.noXattrs = false
                case "1": cmd.noXattrs = true
                default: throw UsageError(message: "noxattrs must be 0 or 1")
                }
            case "threaded":
                // fuse-overlayfs serves on one thread unless threaded=1; we serve on several unless told -s.
                switch try need() {
                case "0": cmd.singleThreaded = true
                case "1": cmd.singleThreaded = false
                default: throw UsageError(message: "threaded must be 0 or 1")
                }
            case "xattr_permissions":
                let v = try need()
                guard v == "0" else {
                    throw UsageError(message: "xattr_permissions=\(v) (owners and modes kept in xattrs: containers/storage's force_mask) is not supported; only xattr_permissions=0")
                }
            case "debug": cmd.debug = true; cmd.foreground = true
            case "max_read", "blksize":
                throw UsageError(message: "\(key)= is not supported (blksize is for block-device FUSE filesystems; max_read must match the daemon's own limit)")
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
