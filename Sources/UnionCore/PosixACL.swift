import Glibc

/// POSIX ACLs as their xattrs carry them (`system.posix_acl_access`, `system.posix_acl_default`):
/// the kernel's `posix_acl_xattr` format, a little-endian version word (2) and then 8-byte
/// entries `{ tag: u16, perm: u16, id: u32 }`. Only `ACL_USER` and `ACL_GROUP` entries hold an
/// id; the others hold (u32)-1.
///
/// The kernel checks ACLs itself on this mount (FUSE_POSIX_ACL): it reads them with getxattr
/// and hands new ones over with setxattr, with ids as the daemon sees them, exactly like the
/// owners of `getattr`. So under `uidmapping=`/`gidmapping=` the ids of named entries are
/// mapped the same way: stored → shown on get, shown → stored on set (an id without a stored
/// id is EINVAL, as chown(2) answers). Squashing is about owners and leaves named entries
/// mapped, not squashed: `ACL_USER_OBJ`/`ACL_GROUP_OBJ` follow the owner already.
public enum PosixACL {
    public static let accessName = Name(Array("system.posix_acl_access".utf8))
    public static let defaultName = Name(Array("system.posix_acl_default".utf8))

    static let version: UInt32 = 2
    static let tagUser: UInt16 = 0x02
    static let tagGroup: UInt16 = 0x08
    static let entrySize = 8
    static let headerSize = 4

    public static func isACL(_ name: Name) -> Bool { name == accessName || name == defaultName }

    /// `value` with the ids of named user and group entries replaced by `user(id)` /
    /// `group(id)`; nil from either, or a value that is not an ACL, is EINVAL.
    public static func mapIDs(_ value: [UInt8], user: (UInt32) -> UInt32?, group: (UInt32) -> UInt32?) throws(Errno) -> [UInt8] {
        guard value.count >= headerSize, (value.count - headerSize) % entrySize == 0,
              le32(value, 0) == version else { throw Errno.invalid }
        var out = value
        var at = headerSize
        while at < out.count {
            let tag = UInt16(out[at]) | UInt16(out[at + 1]) << 8
            if tag == tagUser || tag == tagGroup {
                let old = le32(out, at + 4)
                guard let id = tag == tagUser ? user(old) : group(old) else { throw Errno.invalid }
                for i in 0..<4 { out[at + 4 + i] = UInt8(truncatingIfNeeded: id >> (8 * UInt32(i))) }
            }
            at += entrySize
        }
        return out
    }

    /// The ACL as shown: stored ids mapped to the ids the union shows. A stored value that
    /// is not an ACL is shown as it is (the kernel refuses it with EINVAL, as it would
    /// refuse it on the layer's own filesystem).
    static func shown(_ value: [UInt8], _ config: UnionConfig) -> [UInt8] {
        if config.uidMap.isIdentity && config.gidMap.isIdentity { return value }
        return (try? mapIDs(value, user: { config.uidMap.toContainer($0) }, group: { config.gidMap.toContainer($0) })) ?? value
    }

    /// The ACL as stored, from the ids a caller gave.
    static func stored(_ value: [UInt8], _ config: UnionConfig) throws(Errno) -> [UInt8] {
        if config.uidMap.isIdentity && config.gidMap.isIdentity { return value }
        return try mapIDs(value, user: { config.uidMap.toHost($0) }, group: { config.gidMap.toHost($0) })
    }

    /// The access ACL a new object inherits from its directory's default ACL, for the
    /// permission bits `mode` it is created with: the kernel's `posix_acl_create_masq`
    /// (the owner, other and mask — or owning group — entries cut to `mode`'s classes).
    /// Setting it on the object makes its filesystem set the mode to match.
    static func inherited(_ defaultACL: [UInt8], mode: mode_t) throws(Errno) -> [UInt8] {
        guard defaultACL.count >= headerSize, (defaultACL.count - headerSize) % entrySize == 0,
              le32(defaultACL, 0) == version else { throw Errno.io }
        var out = defaultACL
        var m = UInt16(truncatingIfNeeded: mode & 0o777)
        var group: Int?, mask: Int?
        func perm(_ at: Int) -> UInt16 { UInt16(out[at + 2]) | UInt16(out[at + 3]) << 8 }
        func setPerm(_ at: Int, _ p: UInt16) { out[at + 2] = UInt8(p & 0xff); out[at + 3] = UInt8(p >> 8) }
        var at = headerSize
        while at < out.count {
            switch UInt16(out[at]) | UInt16(out[at + 1]) << 8 {
            case 0x01:  // ACL_USER_OBJ
                setPerm(at, perm(at) & ((m >> 6) | ~0o7))
                m &= (perm(at) << 6) | ~0o700
            case tagUser, tagGroup: break
            case 0x04: group = at  // ACL_GROUP_OBJ
            case 0x10: mask = at   // ACL_MASK
            case 0x20:  // ACL_OTHER
                setPerm(at, perm(at) & (m | ~0o7))
                m &= perm(at) | ~0o7
            default: throw Errno.io
            }
            at += entrySize
        }
        guard let g = mask ?? group else { throw Errno.io }
        setPerm(g, perm(g) & ((m >> 3) | ~0o7))
        return out
    }

    private static func le32(_ b: [UInt8], _ at: Int) -> UInt32 {
        UInt32(b[at]) | UInt32(b[at + 1]) << 8 | UInt32(b[at + 2]) << 16 | UInt32(b[at + 3]) << 24
    }
}
