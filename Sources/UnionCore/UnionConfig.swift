/// What the union is made of and how it behaves; filled from the command line.
/// Paths are bytes, exactly as given.
public struct UnionConfig: Sendable {
    /// Lower directories, top first.
    public var lowerDirs: [[UInt8]]
    public var upperDir: [UInt8]?
    public var workDir: [UInt8]?
    /// Marker format to write; nil detects it from what the upper filesystem allows.
    public var markerFormat: MarkerFormat?
    /// `volatile` / `fsync=0`: skip every fsync to upper (containers/storage's throwaway layers).
    public var skipSync: Bool = false
    /// Upper for `uidmapping=` / `gidmapping=`: ids in the layers shown shifted.
    public var uidMap: IDMap = .identity
    public var gidMap: IDMap = .identity
    /// fuse-overlayfs's squash_to_root / squash_to_uid / squash_to_gid: every owner shown as this id.
    public var squashUID: UInt32?
    public var squashGID: UInt32?
    /// fuse-overlayfs's noxattrs=1: no extended attributes through the union (ENOTSUP).
    public var noXattrs = false
    /// fuse-overlayfs's static_nlink: every directory reports one link.
    public var staticNlink = false
    /// fuse-overlayfs's xattr_permissions=0|1|2: owners and modes written to an xattr of the
    /// upper layer's objects instead of their inodes (see `OwnerXattr`).
    public var xattrPermissions: XattrPermissions = .off

    public enum XattrPermissions: Int, Sendable {
        /// Owners and modes on the inodes (unless upper's root says otherwise).
        case off = 0
        /// In `security.fuseoverlayfs.override_stat`.
        case security = 1
        /// In `user.containers.override_stat` (or an older fuse-overlayfs's user name).
        case user = 2
    }
    /// How edits made to the lower layers while mounted are noticed (`watch=`); `off` for
    /// unions that are not mounted (inspect, unit tests) unless asked.
    public var watch: LowerWatchMode = .off
    /// inotify's budget of watched directories (`watch_limit=`); nil: the default.
    public var watchLimit: Int?

    public init(lowerDirs: [[UInt8]], upperDir: [UInt8]? = nil, workDir: [UInt8]? = nil) {
        self.lowerDirs = lowerDirs
        self.upperDir = upperDir
        self.workDir = workDir
    }
}
