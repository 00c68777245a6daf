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
    /// `redirect_dir=`: whether renamed directories record `overlay.redirect`, and whether
    /// lookups follow the redirects they meet (see `RedirectMode`).
    public var redirectDir: RedirectMode = .off
    /// `metacopy=on`: chown, chmod, utimes and setxattr on a lower file copy up its
    /// metadata only; metacopy files in the layers are served from their lower data.
    public var metacopy = false
    /// `index=on`: a lower file with several links is copied up once, into workdir/index,
    /// and every name of it shows that one copy (`InodeIndex`).
    public var index = false
    /// How many of `lowerDirs`, at the end, are data-only layers (`lowerdir=L1::D1::D2`).
    public var dataLayerCount = 0

    public init(lowerDirs: [[UInt8]], upperDir: [UInt8]? = nil, workDir: [UInt8]? = nil) {
        self.lowerDirs = lowerDirs
        self.upperDir = upperDir
        self.workDir = workDir
    }
}

/// `redirect_dir=`, with the kernel's meanings (Documentation/filesystems/overlayfs.rst).
public enum RedirectMode: String, Sendable, CaseIterable {
    /// Neither created nor followed: the default, as in a kernel built without
    /// CONFIG_OVERLAY_FS_REDIRECT_DIR and CONFIG_OVERLAY_FS_REDIRECT_ALWAYS_FOLLOW. A lookup
    /// that meets a redirect fails with EPERM, as the kernel's does ("refusing to follow
    /// redirect"): never a silently different view.
    case off
    /// Followed, not created: renaming a directory with lower content gets EXDEV.
    case follow
    /// Neither created nor followed (as `off`).
    case nofollow
    /// Created on directory rename, and followed.
    case on

    public var follows: Bool { self == .on || self == .follow }
    public var creates: Bool { self == .on }
}
