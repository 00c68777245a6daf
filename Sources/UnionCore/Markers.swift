import Glibc

/// How whiteouts and opaque directories are written.
///
/// Reading accepts every format in use (see `Markers`); writing uses one format,
/// chosen at mount.
public struct MarkerFormat: Sendable, Equatable, CustomStringConvertible {
    public enum Whiteout: String, Sendable { case device, ociFile = "oci" }
    public enum Namespace: String, Sendable { case trusted, user }

    public var whiteout: Whiteout
    /// The xattr namespace opaque directories are marked in.
    public var xattrNamespace: Namespace

    public init(whiteout: Whiteout = .device, xattrNamespace: Namespace = .trusted) {
        self.whiteout = whiteout
        self.xattrNamespace = xattrNamespace
    }

    public var opaqueXattr: Name { xattrNamespace == .user ? Markers.userOpaque : Markers.trustedOpaque }
    public var description: String { "whiteout=\(whiteout.rawValue), xattr=\(xattrNamespace.rawValue).overlay.*" }
}

/// The on-disk markers of every format in use: the kernel's (a 0/0 character device,
/// `trusted.overlay.opaque` or `user.overlay.opaque`) and the OCI/AUFS one (`.wh.NAME`,
/// `.wh..wh..opq`). Names are compared as bytes.
public enum Markers {
    public static let ociWhiteoutPrefix: Name = ".wh."
    public static let ociOpaqueName: Name = ".wh..wh..opq"
    public static let trustedOpaque: Name = "trusted.overlay.opaque"
    public static let userOpaque: Name = "user.overlay.opaque"
    /// What fuse-overlayfs marks an opaque directory with where `trusted.*` is refused (it
    /// writes `.wh..wh..opq` too, but only the xattr when that file cannot be made).
    public static let fuseOverlayfsOpaque: Name = "user.fuseoverlayfs.opaque"
    /// Every xattr that marks a directory opaque when it is `y`.
    public static let opaqueXattrs: [Name] = [trustedOpaque, userOpaque, fuseOverlayfsOpaque]
    /// Other programs' bookkeeping on the same layers: fuse-overlayfs's own namespace
    /// (origin, opaque, override_stat) and containers/storage's owner xattr and the names
    /// fuse-overlayfs 1.14+ stores refused xattrs under (`user.containers.override_*`).
    /// Never shown through the mount and never set or removed by a caller: the owners and
    /// modes they hold are shown as the attributes themselves (see `OwnerXattr`), and a
    /// caller who could write them could give itself any owner and mode.
    static let foreignPrivatePrefixes: [Name] = ["user.fuseoverlayfs.", "security.fuseoverlayfs.", "user.containers.override_"]
    static let trustedPrivate: Name = "trusted.overlay."
    static let userPrivate: Name = "user.overlay."
    static let escape: Name = "overlay."

    /// True for names that only ever carry markers and never show in the merged view.
    public static func isOCIMarkerName(_ name: Name) -> Bool { name.hasPrefix(ociWhiteoutPrefix) }

    /// The name `.wh.NAME` hides, for an OCI whiteout name.
    public static func ociWhiteoutTarget(_ name: Name) -> Name? {
        guard name.hasPrefix(ociWhiteoutPrefix), name != ociOpaqueName else { return nil }
        return name.dropFirst(ociWhiteoutPrefix.count)
    }

    /// Prefixes of the xattrs that belong to the overlay itself. `user.overlay.*` is the
    /// overlay's only in the user-xattr format, as in the kernel.
    static func privatePrefixes(_ format: MarkerFormat) -> [Name] {
        format.xattrNamespace == .user ? [trustedPrivate, userPrivate] : [trustedPrivate]
    }

    /// The name a caller's xattr is stored under in a layer. A caller's own
    /// `trusted.overlay.X` is escaped to `trusted.overlay.overlay.X`, as the kernel
    /// does since Linux 6.7, so it can never be taken for a marker.
    public static func xattrToLayer(_ name: Name, format: MarkerFormat) -> Name {
        for p in privatePrefixes(format) where name.hasPrefix(p) {
            return p + escape + name.dropFirst(p.count)
        }
        return name
    }

    /// Whether `name` is another program's bookkeeping (`foreignPrivatePrefixes`).
    public static func isForeignPrivate(_ name: Name) -> Bool {
        foreignPrivatePrefixes.contains { name.hasPrefix($0) }
    }

    /// The name a layer's xattr shows under, or nil for the overlay's own markers and
    /// other programs' bookkeeping.
    public static func xattrFromLayer(_ name: Name, format: MarkerFormat) -> Name? {
        if isForeignPrivate(name) { return nil }
        for p in privatePrefixes(format) where name.hasPrefix(p) {
            let rest = name.dropFirst(p.count)
            return rest.hasPrefix(escape) ? p + rest.dropFirst(escape.count) : nil
        }
        return name
    }

    /// Whether directory `dir` of a layer holds an OCI whiteout `.wh.NAME` for `name`.
    /// A name of 252 bytes or more cannot have one (it would pass NAME_MAX).
    public static func hasOCIWhiteout(dir: Int32, name: Name) throws(Errno) -> Bool {
        guard name.count + ociWhiteoutPrefix.count <= Int(NAME_MAX) else { return false }
        return try Sys.statIfPresent(dir, ociWhiteoutPrefix + name) != nil
    }

    static func isOpaqueValue(_ v: [UInt8]?) -> Bool { v == [UInt8(ascii: "y")] }

    /// Whether the directory open at `fd` (O_PATH) hides the layers below it. An xattr or
    /// marker that cannot be read is an error, never "not opaque": that would let the
    /// layers below show through.
    public static func isOpaque(directory fd: Int32) throws(Errno) -> Bool {
        for x in opaqueXattrs where isOpaqueValue(try Sys.getxattrIfPresent(.fd(fd), x)) { return true }
        return try Sys.statIfPresent(fd, ociOpaqueName) != nil
    }

    /// Whether directory `name` in `dir` (known to be a directory) is opaque, without
    /// opening it: xattrs through /proc/self/fd/DIR/NAME, the OCI marker by a two-name
    /// fstatat (lower layers do not change under a mount, so NAME stays the directory
    /// the caller found). Lookups pay this for every merged directory.
    public static func isOpaque(in dir: Int32, _ name: Name) throws(Errno) -> Bool {
        let target = Sys.XattrTarget.entry(dir, name)
        for x in opaqueXattrs where isOpaqueValue(try Sys.getxattrIfPresent(target, x)) { return true }
        return try Sys.statIfPresent(dir, name + "/" + ociOpaqueName) != nil
    }
}
