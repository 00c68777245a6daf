import Glibc
import UnionCore

/// The two marker vocabularies a layer can use, and the conversion between them.
///
/// OCI layer tars (image-spec layer.md) mark deletions with `.wh.NAME` files and opaque
/// directories with a `.wh..wh..opq` entry. Unpacked for an overlay, they become the
/// kernel's format: a 0/0 character device at NAME and `trusted.overlay.opaque=y`, or,
/// where the store's owner may not use those, the forms swiftunionfs writes unprivileged
/// (docs/format.md): `user.overlay.opaque=y`, and `.wh.NAME` files where mknod is refused.
public enum Whiteouts {
    public static let prefix = Array(".wh.".utf8)
    public static let metaPrefix = Array(".wh..wh.".utf8)
    public static let opaqueName = Array(".wh..wh..opq".utf8)

    public static func isMarkerName(_ name: [UInt8]) -> Bool { name.starts(with: prefix) }

    /// The name a `.wh.NAME` entry deletes, or nil for other names and `.wh..wh.*` metadata.
    public static func deletedName(_ name: [UInt8]) -> [UInt8]? {
        guard name.starts(with: prefix), !name.starts(with: metaPrefix), name.count > prefix.count else { return nil }
        return Array(name[prefix.count...])
    }

    static let trustedOverlay = Array("trusted.overlay.".utf8)
    static let userOverlay = Array("user.overlay.".utf8)
    static let escape = Array("overlay.".utf8)

    /// Prefixes of the overlay's own xattrs in a layer written in `format`.
    static func privatePrefixes(_ format: MarkerFormat) -> [[UInt8]] {
        format.xattrNamespace == .user ? [trustedOverlay, userOverlay] : [trustedOverlay]
    }

    /// An archive's xattr as stored in a layer: `trusted.overlay.X` becomes
    /// `trusted.overlay.overlay.X`, as the kernel escapes it, so an archive can never forge a marker.
    static func xattrToLayer(_ name: [UInt8], _ format: MarkerFormat) -> [UInt8] {
        for p in privatePrefixes(format) where name.starts(with: p) {
            return p + escape + name[p.count...]
        }
        return name
    }

    /// A layer's xattr as written to an archive, or nil for the overlay's own markers.
    static func xattrFromLayer(_ name: [UInt8]) -> [UInt8]? {
        for p in [trustedOverlay, userOverlay] where name.starts(with: p) {
            let rest = Array(name[p.count...])
            return rest.starts(with: escape) ? p + rest[escape.count...] : nil
        }
        return name
    }

    /// Whether the directory `name` in `dir` is opaque in any form swiftunionfs reads.
    static func isOpaque(_ dir: Int32, _ name: [UInt8]) throws(Errno) -> Bool {
        for x in [Markers.trustedOpaque, Markers.userOpaque] {
            if try FS.getXattr(dir, name, x.bytes) == [0x79] { return true }
        }
        let fd = try FS.openDirectory(dir, name)
        defer { FS.close(fd) }
        return try FS.lstat(fd, opaqueName) != nil
    }

    /// Whether `name` in `dir` is a whiteout: a 0/0 character device, or a `.wh.NAME` sibling
    /// when the name itself is absent.
    static func isWhiteout(_ dir: Int32, _ name: [UInt8], _ st: stat?) throws(Errno) -> Bool {
        if let st { return st.type == S_IFCHR && st.st_rdev == 0 }
        guard name.count + prefix.count <= Int(NAME_MAX) else { return false }
        return try FS.lstat(dir, prefix + name) != nil
    }

    /// The marker format a layer written under `dir` can use: 0/0 devices if mknod works,
    /// `trusted.overlay.*` if it may be set, else the unprivileged forms.
    public static func probe(_ dir: Int32) throws -> MarkerFormat {
        let name = Array("#probe.\(getpid())".utf8)
        var format = MarkerFormat(whiteout: .device, xattrNamespace: .trusted)
        do {
            try FS.mknod(dir, name, S_IFCHR, major: 0, minor: 0)
            try? FS.unlink(dir, name)
        } catch {
            format.whiteout = .ociFile
        }
        do throws(Errno) {
            try FS.mkdir(dir, name, 0o700)
            defer { try? FS.unlink(dir, name, directory: true) }
            do {
                try FS.setXattr(dir, name, Array("trusted.overlay.suf-probe".utf8), [0x79])
            } catch {
                format.xattrNamespace = .user
                try FS.setXattr(dir, name, Array("user.overlay.suf-probe".utf8), [0x79])
            }
        } catch {
            throw LayersError.io("the store cannot record opaque directories (no trusted.* or user.* xattrs)", error)
        }
        return format
    }
}
