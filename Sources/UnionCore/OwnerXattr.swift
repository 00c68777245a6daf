import Glibc

/// Owners and modes kept in an xattr instead of the inode: fuse-overlayfs's
/// `xattr_permissions=1|2`, which containers/storage asks for whenever `force_mask` is set
/// (a filesystem that cannot store the container's owners, such as an NFS home).
///
/// The value is text, `UID:GID:MODE[:TYPE]`: decimal ids, the mode in octal — fuse-overlayfs
/// writes it with the file-type bits (`0:0:40755`), containers/storage without and with a
/// leading 0 (`0:0:0755`, newer versions `0:0:0755:dir`). Only directories and regular
/// files carry it (Linux allows `user.*` xattrs on nothing else), and a layer uses it only
/// when its root does: the root is where fuse-overlayfs and containers/storage look.
public enum OwnerXattr {
    /// `xattr_permissions=1`: in the security namespace (a privileged daemon).
    public static let security: Name = "security.fuseoverlayfs.override_stat"
    /// containers/storage's own name, which fuse-overlayfs 1.14 and later write for
    /// `xattr_permissions=2` and which containers/storage reads back.
    public static let containers: Name = "user.containers.override_stat"
    /// What fuse-overlayfs before 1.14 wrote for `xattr_permissions=2`.
    public static let fuseOverlayfsUser: Name = "user.fuseoverlayfs.override_stat"

    /// The owner and the permission bits (07777) an object is shown with.
    public struct Value: Equatable, Sendable {
        public var uid: uid_t
        public var gid: gid_t
        public var mode: mode_t

        public init(uid: uid_t, gid: gid_t, mode: mode_t) {
            self.uid = uid
            self.gid = gid
            self.mode = mode & 0o7777
        }

        /// What is written: containers/storage's form, which every reader takes.
        public var encoded: [UInt8] { Array("\(uid):\(gid):0\(String(mode, radix: 8))".utf8) }

        /// Reads `UID:GID:MODE[:TYPE]`; nil for anything else. The type field is not
        /// used: the object's own type is shown (a regular file shown as a device would
        /// need the device emulated). An id of -1 is what fuse-overlayfs before 1.14 could
        /// write for an owner a chown left unchanged: it reads as (uid_t)-1, unmapped.
        public init?(parsing bytes: [UInt8]) {
            let fields = bytes.split(separator: UInt8(ascii: ":"), maxSplits: 3, omittingEmptySubsequences: false)
            guard fields.count >= 3, let uid = Self.id(fields[0]), let gid = Self.id(fields[1]),
                  let mode = Self.octal(fields[2]) else { return nil }
            if fields.count == 4 && fields[3].isEmpty { return nil }
            self.init(uid: uid, gid: gid, mode: mode)
        }

        private static func id(_ s: ArraySlice<UInt8>) -> uid_t? {
            if s.elementsEqual("-1".utf8) { return uid_t.max }
            guard !s.isEmpty, s.count <= 10, s.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }) else { return nil }
            let v = s.reduce(UInt64(0)) { $0 * 10 + UInt64($1 - UInt8(ascii: "0")) }
            return v <= UInt64(uid_t.max) ? uid_t(v) : nil
        }

        /// Octal, the file-type bits allowed (and dropped).
        private static func octal(_ s: ArraySlice<UInt8>) -> mode_t? {
            guard !s.isEmpty, s.count <= 12, s.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "7") }) else { return nil }
            let v = s.reduce(UInt64(0)) { $0 * 8 + UInt64($1 - UInt8(ascii: "0")) }
            guard v <= 0o177777 else { return nil }
            return mode_t(v) & 0o7777
        }
    }

    /// Directories and regular files carry the xattr; other types show their own inode.
    public static func applies(to type: mode_t) -> Bool { type == S_IFDIR || type == S_IFREG }

    /// Names a layer root is checked for, in fuse-overlayfs's order (1.14 and later).
    static let detectionOrder: [Name] = [security, containers, fuseOverlayfsUser]

    /// The name a layer keeps owners in, from its root; nil for an ordinary layer. An
    /// xattr that cannot be read is an error: guessing would show the wrong owners.
    public static func detect(root fd: Int32) throws(Errno) -> Name? {
        for name in detectionOrder where try Sys.getxattrIfPresent(.fd(fd), name) != nil { return name }
        return nil
    }

    /// The name the upper layer writes for `xattr_permissions=` (as fuse-overlayfs 1.14+):
    /// 1 the security name; 2 containers/storage's, unless the upper was written by an
    /// older fuse-overlayfs and its root already has that one's name. Without the option,
    /// an upper whose root carries a name goes on in it: writing owners to the inodes
    /// while they are read from the xattr would make every chown and chmod invisible.
    static func upperName(_ setting: UnionConfig.XattrPermissions, detected: Name?) -> Name? {
        switch setting {
        case .off: return detected
        case .security: return security
        case .user: return detected == fuseOverlayfsUser ? fuseOverlayfsUser : containers
        }
    }

    /// The mode of the inode behind an object whose real mode is in the xattr: the
    /// permission bits asked for, never a set-id or sticky bit (the inode belongs to the
    /// daemon: a set-uid file of its would be one for whoever reaches the layer), and
    /// always readable and writable (directories: searchable) by the daemon.
    static func inodeMode(_ mode: mode_t, type: mode_t) -> mode_t {
        (mode & 0o777) | (type == S_IFDIR ? 0o700 : 0o600)
    }
}

extension Layer {
    /// `st` with the owner and mode this layer keeps in its xattr for the object at
    /// `target`, when it keeps one; an object without the xattr shows its inode's.
    /// A value that cannot be parsed fails the call (EIO) rather than show wrong owners.
    public func withOwnerXattr(_ st: stat, _ target: Sys.XattrTarget) throws(Errno) -> stat {
        guard let name = ownerXattr, OwnerXattr.applies(to: st.fileType),
              let raw = try Sys.getxattrIfPresent(target, name) else { return st }
        guard let v = OwnerXattr.Value(parsing: raw) else { throw Errno.io }
        var out = st
        out.st_uid = v.uid
        out.st_gid = v.gid
        out.st_mode = st.fileType | v.mode
        return out
    }

    /// Records the owner and mode of the object at `target` in this layer's xattr.
    func writeOwnerXattr(_ target: Sys.XattrTarget, _ v: OwnerXattr.Value) throws(Errno) {
        guard let name = ownerXattr else { return }
        try Bytes.withUnsafeBytes(v.encoded) { (raw: UnsafeRawBufferPointer) throws(Errno) in
            try Sys.setxattr(target, name, raw)
        }
    }

    /// Whether an object of `type` in this layer has its owner and mode in the xattr.
    func keepsOwnerInXattr(_ type: mode_t) -> Bool { ownerXattr != nil && OwnerXattr.applies(to: type) }
}

extension Union {
    /// A chown the upper filesystem refuses because it cannot store that owner (EPERM on
    /// NFS or in a user namespace, EINVAL for an id it cannot map).
    static func refusedOwner(_ e: Errno) -> Bool { e.rawValue == EPERM || e.rawValue == EINVAL }
}
