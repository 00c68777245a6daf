import Glibc
import Testing
@testable import UnionCore

/// POSIX ACL xattr values: ids mapped under uidmapping=/gidmapping=, and what a new object
/// inherits from a default ACL (the kernel's posix_acl_create_masq), without a mount.
@Suite struct PosixACLTests {
    /// An ACL as the kernel encodes it: version 2, then (tag, perm, id) entries, little-endian.
    static func acl(_ entries: [(UInt16, UInt16, UInt32)]) -> [UInt8] {
        var out: [UInt8] = [2, 0, 0, 0]
        for (tag, perm, id) in entries {
            out += [UInt8(tag & 0xff), UInt8(tag >> 8), UInt8(perm & 0xff), UInt8(perm >> 8)]
            out += (0..<4).map { UInt8(truncatingIfNeeded: id >> (8 * UInt32($0))) }
        }
        return out
    }
    static let none = UInt32.max
    static let userObj: UInt16 = 1, user: UInt16 = 2, groupObj: UInt16 = 4, group: UInt16 = 8, mask: UInt16 = 0x10, other: UInt16 = 0x20

    func config(uid: String, gid: String) -> UnionConfig {
        var c = UnionConfig(lowerDirs: [])
        c.uidMap = IDMap.parse(uid)!
        c.gidMap = IDMap.parse(gid)!
        return c
    }

    @Test func namedEntriesAreMappedBothWays() throws {
        typealias T = PosixACLTests
        let stored = T.acl([(T.userObj, 6, T.none), (T.user, 6, 100005), (T.groupObj, 4, T.none),
                            (T.group, 4, 100007), (T.mask, 6, T.none), (T.other, 0, T.none)])
        let shownIDs = T.acl([(T.userObj, 6, T.none), (T.user, 6, 5), (T.groupObj, 4, T.none),
                              (T.group, 4, 7), (T.mask, 6, T.none), (T.other, 0, T.none)])
        // SHOWN:STORED:COUNT, as IDMap.parse reads it.
        let c = config(uid: "0:100000:65536", gid: "0:100000:65536")
        #expect(PosixACL.shown(stored, c) == shownIDs)
        #expect(try PosixACL.stored(shownIDs, c) == stored)
        // An id the map cannot store is refused; one it cannot show shows as the overflow id.
        let outside = T.acl([(T.userObj, 6, T.none), (T.user, 4, 70000), (T.groupObj, 0, T.none), (T.other, 0, T.none)])
        #expect(throws: Errno.invalid) { try PosixACL.stored(outside, c) }
        let unmapped = T.acl([(T.userObj, 6, T.none), (T.user, 4, 5), (T.groupObj, 0, T.none), (T.other, 0, T.none)])
        #expect(PosixACL.shown(unmapped, c) == T.acl([(T.userObj, 6, T.none), (T.user, 4, IDMap.overflow),
                                                     (T.groupObj, 0, T.none), (T.other, 0, T.none)]))
        // Without a mapping the bytes pass untouched, malformed ones too.
        let identity = UnionConfig(lowerDirs: [])
        #expect(PosixACL.shown([1, 2, 3], identity) == [1, 2, 3])
        #expect(throws: Errno.invalid) { try PosixACL.mapIDs([2, 0, 0, 0, 1], user: { $0 }, group: { $0 }) }
        #expect(throws: Errno.invalid) { try PosixACL.mapIDs([3, 0, 0, 0], user: { $0 }, group: { $0 }) }
    }

    @Test func inheritedAccessACLIsCutToTheMode() throws {
        typealias T = PosixACLTests
        // setfacl -d -m u:12345:rwx on a 0755 directory.
        let dflt = T.acl([(T.userObj, 7, T.none), (T.user, 7, 12345), (T.groupObj, 5, T.none),
                          (T.mask, 7, T.none), (T.other, 5, T.none)])
        // open(..., 0666): owner rw-, mask rw- (the named entry keeps rwx, effective rw-), other r--.
        #expect(try PosixACL.inherited(dflt, mode: 0o666) == T.acl([(T.userObj, 6, T.none), (T.user, 7, 12345),
            (T.groupObj, 5, T.none), (T.mask, 6, T.none), (T.other, 4, T.none)]))
        // mkdir 0750: other gets nothing, the mask r-x.
        #expect(try PosixACL.inherited(dflt, mode: 0o750) == T.acl([(T.userObj, 7, T.none), (T.user, 7, 12345),
            (T.groupObj, 5, T.none), (T.mask, 5, T.none), (T.other, 0, T.none)]))
        // Without a mask the owning group's entry is cut.
        let plain = T.acl([(T.userObj, 7, T.none), (T.groupObj, 7, T.none), (T.other, 7, T.none)])
        #expect(try PosixACL.inherited(plain, mode: 0o640) == T.acl([(T.userObj, 6, T.none), (T.groupObj, 4, T.none),
            (T.other, 0, T.none)]))
        #expect(throws: Errno.io) { try PosixACL.inherited(T.acl([(T.userObj, 7, T.none), (T.other, 7, T.none)]), mode: 0o644) }
    }
}
