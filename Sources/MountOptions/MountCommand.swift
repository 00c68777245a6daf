import UnionCore

/// The command line of a mount, parsed and checked for form (not yet against the filesystem).
///
/// Every path is the exact bytes given, after unescaping: never a `String`, which would repair
/// bytes that are not UTF-8 and compare by canonical equivalence.
public struct MountCommand: Sendable {
    /// Where trace lines go: `trace` alone is stderr, `trace=FILE` a file.
    public enum TraceTarget: Sendable, Equatable {
        case stderr
        case file([UInt8])
    }

    public enum TraceFormat: String, Sendable, Equatable, CaseIterable {
        case text, json
    }

    /// Where the daemon reports what it meets after daemonizing (`log=`).
    public enum LogTarget: Sendable, Equatable {
        case syslog
        case stderr
        case file([UInt8])
    }

    public enum XattrNamespace: String, Sendable, Equatable, CaseIterable {
        case trusted, user
    }

    /// The first positional argument of the two-argument form (what mount.fuse3 passes).
    public var source: [UInt8]?
    public var mountpoint: [UInt8]?
    public var foreground = false
    public var debug = false
    public var singleThreaded = false
    public var verbose = false

    /// Top first, as many as `-o lowerdir=` named (1 to `maxLowerDirs`), the data-only
    /// layers (after `::`) last.
    public var lowerDirs: [[UInt8]] = []
    /// How many of `lowerDirs`, at the end, are data-only layers.
    public var dataLayerCount = 0
    public var upperDir: [UInt8]?
    public var workDir: [UInt8]?
    /// Items for libfuse and the kernel, each exactly as written (libfuse undoes the escapes itself).
    public var fuseOptions: [[UInt8]] = []

    public var trace: TraceTarget?
    public var traceFormat: TraceFormat = .text
    /// Operation names (ASCII letters, digits, '_'); checked against the bridge's list when mounting.
    public var traceOps: [String]?
    public var tracePath: [UInt8]?
    public var statsFile: [UInt8]?
    /// nil: not given, the daemon decides.
    public var log: LogTarget?

    /// Kernel entry and attribute cache time, seconds (0 ... `maxTimeout`).
    public var timeout: Double = 3600
    public var skipSync = false
    /// The kernel's writeback cache (`writeback=1`): writes gather in the page cache and reach
    /// the daemon in batches; the kernel then owns the size and mtime of open files.
    public var writeback = false
    public var whiteout: MarkerFormat.Whiteout?
    public var xattrNamespace: XattrNamespace?
    public var uidMap = IDMap.identity
    public var gidMap = IDMap.identity
    /// fuse-overlayfs's squash_to_root / squash_to_uid= / squash_to_gid=: every owner shown as
    /// root / as this id (squash_to_uid/gid win over squash_to_root).
    public var squashToRoot = false
    public var squashToUID: UInt32?
    public var squashToGID: UInt32?
    /// fuse-overlayfs's noxattrs=1: every xattr call answers ENOTSUP.
    public var noXattrs = false
    /// The kernel overlay's noacl: POSIX ACLs are not offered to the kernel, which then
    /// checks mode bits only (ACL xattrs are still stored and copied up).
    public var noACL = false
    /// fuse-overlayfs's static_nlink: every directory reports st_nlink 1.
    public var staticNlink = false
    /// fuse-overlayfs's xattr_permissions=0|1|2: owners and modes kept in an xattr.
    public var xattrPermissions: UnionConfig.XattrPermissions = .off
    /// How edits made to the lower layers while mounted are noticed (`watch=`).
    public var watch: LowerWatchMode = .auto
    /// inotify's budget of watched directories (`watch_limit=`); nil: the default.
    public var watchLimit: Int?
    /// `redirect_dir=` and `metacopy=` as given (nil: not given); `features` resolves them.
    public var redirectDir: RedirectMode?
    public var metacopy: Bool?
    /// FUSE passthrough of file data (`passthrough=`): auto uses it where the libfuse, the kernel
    /// and root allow; on requires the libfuse and root (checked before mounting); off never.
    public var passthrough: PassthroughMode = .auto
    public enum PassthroughMode: String, Sendable, Equatable, CaseIterable { case auto, on, off }
    /// `index=on`: lower hard links kept across copy-up, in the kernel's workdir/index.
    public var index = false

    /// The kernel overlay's limit on lower layers (OVL_MAX_STACK).
    public static let maxLowerDirs = 500
    public static var maxTimeout: Double { Double(Numbers.maxSeconds) }
    /// The largest `squash_to_uid=`/`squash_to_gid=`: 4294967295 is (uid_t)-1, not an id.
    public static let maxID = IDMap.lastID
    /// The largest `watch_limit=`: the kernel's own ceiling on inotify watches per user.
    public static let maxWatchLimit: UInt64 = 1 << 20

    /// The settings already given, by name, with the item that gave them: a setting given again
    /// must have the same value (see `OptionTable.assign`).
    var given: [String: [UInt8]] = [:]
    /// Values of options kept as written (passed to libfuse, or accepted and ignored), by key.
    var rawValues: [String: [UInt8]] = [:]

    public init() {}
}
