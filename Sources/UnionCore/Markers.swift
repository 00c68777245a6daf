import CFuse
import Glibc

/// How whiteouts and opaque directories are recognised and written.
///
/// Reading accepts every format in use: the kernel's (a 0/0 character device,
/// `trusted.overlay.opaque` or `user.overlay.opaque`) and the OCI/AUFS one
/// (`.wh.NAME`, `.wh..wh..opq`). Writing uses one format, chosen at mount.
public struct MarkerFormat: Sendable, Equatable, CustomStringConvertible {
    public enum Whiteout: String, Sendable { case device, ociFile = "oci" }

    public var whiteout: Whiteout
    /// The xattr namespace opaque directories are marked in: "trusted" or "user".
    public var xattrNamespace: String

    public init(whiteout: Whiteout = .device, xattrNamespace: String = "trusted") {
        self.whiteout = whiteout
        self.xattrNamespace = xattrNamespace
    }

    public var opaqueXattr: String { "\(xattrNamespace).overlay.opaque" }
    public var description: String { "whiteout=\(whiteout.rawValue), xattr=\(xattrNamespace).overlay.*" }
}

public enum Markers {
    public static let ociWhiteoutPrefix = ".wh."
    public static let ociOpaqueName = ".wh..wh..opq"
    public static let trustedOpaque = "trusted.overlay.opaque"
    public static let userOpaque = "user.overlay.opaque"

    /// True for names that only ever carry markers and never show in the merged view.
    public static func isOCIMarkerName(_ name: String) -> Bool { name.hasPrefix(ociWhiteoutPrefix) }

    /// Prefixes of the xattrs that belong to the overlay itself. `user.overlay.*` is the
    /// overlay's only in the user-xattr format, as in the kernel.
    static func privatePrefixes(_ format: MarkerFormat) -> [String] {
        format.xattrNamespace == "user" ? ["trusted.overlay.", "user.overlay."] : ["trusted.overlay."]
    }

    /// The name a caller's xattr is stored under in a layer. A caller's own
    /// `trusted.overlay.X` is escaped to `trusted.overlay.overlay.X`, as the kernel
    /// does since Linux 6.7, so it can never be taken for a marker.
    public static func xattrToLayer(_ name: String, format: MarkerFormat) -> String {
        for p in privatePrefixes(format) where name.hasPrefix(p) {
            return p + "overlay." + name.dropFirst(p.count)
        }
        return name
    }

    /// The name a layer's xattr shows under, or nil for the overlay's own markers.
    public static func xattrFromLayer(_ name: String, format: MarkerFormat) -> String? {
        for p in privatePrefixes(format) where name.hasPrefix(p) {
            let rest = name.dropFirst(p.count)
            return rest.hasPrefix("overlay.") ? p + rest.dropFirst("overlay.".count) : nil
        }
        return name
    }

    /// Whether directory `dir` of a layer holds an OCI whiteout `.wh.NAME` for `name`.
    /// A name of 252 bytes or more cannot have one (it would pass NAME_MAX).
    public static func hasOCIWhiteout(dir: Int32, name: String) throws(Errno) -> Bool {
        guard name.utf8.count + ociWhiteoutPrefix.utf8.count <= Int(NAME_MAX) else { return false }
        return try Sys.statIfPresent(dir, ociWhiteoutPrefix + name) != nil
    }

    /// Whether the directory open at `fd` (O_PATH) hides the layers below it.
    public static func isOpaque(directory fd: Int32) -> Bool {
        for name in [trustedOpaque, userOpaque] {
            if let v = Sys.getxattrIfPresent(fd, name), v == Array("y".utf8) { return true }
        }
        return (try? Sys.statIfPresent(fd, ociOpaqueName)) != nil
    }

    /// Whether directory `name` in `dir` (known to be a directory) is opaque, without
    /// opening it: xattrs through /proc/self/fd/DIR/NAME, the OCI marker by a two-name
    /// fstatat. Lookups pay this for every merged directory.
    public static func isOpaque(in dir: Int32, _ name: String) -> Bool {
        let target = Sys.XattrTarget.entry(dir, name)
        for x in [trustedOpaque, userOpaque] {
            if let v = try? Sys.getxattr(target, x), v == Array("y".utf8) { return true }
        }
        return (try? Sys.statIfPresent(dir, name + "/" + ociOpaqueName)) != nil
    }
}
