import CLinux
import Glibc
import Testing
@testable import UnionCore

/// Owners and modes kept in xattrs (xattr_permissions=1|2), without a mount.
@Suite(.serialized) struct OwnerXattrTests {
    typealias V = OwnerXattr.Value

    @Test func readsEveryFormInUse() {
        #expect(V(parsing: b("0:0:40755")) == V(uid: 0, gid: 0, mode: 0o755))          // fuse-overlayfs, with the type bits
        #expect(V(parsing: b("5:6:100600")) == V(uid: 5, gid: 6, mode: 0o600))
        #expect(V(parsing: b("1000:100:0644")) == V(uid: 1000, gid: 100, mode: 0o644))  // containers/storage 1.43
        #expect(V(parsing: b("7:7:0750:dir")) == V(uid: 7, gid: 7, mode: 0o750))        // newer, with a type
        #expect(V(parsing: b("0:0:4755")) == V(uid: 0, gid: 0, mode: 0o4755))
        #expect(V(parsing: b("-1:5:0644")) == V(uid: uid_t.max, gid: 5, mode: 0o644))   // old fuse-overlayfs chown bug
        #expect(V(parsing: b("4294967295:0:0")) == V(uid: uid_t.max, gid: 0, mode: 0))
    }

    @Test func refusesWhatIsNotAnOwnerAndMode() {
        for bad in ["", "0:0", "0:0:", "a:0:0644", "0:0:0648", "0:0:0644:", " 0:0:0644", "0:0:0644 ", "4294967296:0:0644",
                    "0:-2:0644", "0:0:1777777", "0x1:0:0644"] {
            #expect(V(parsing: Array(bad.utf8)) == nil, "\(bad)")
        }
    }

    @Test func writesContainersStoragesForm() {
        #expect(V(uid: 1000, gid: 100, mode: 0o100644).encoded == b("1000:100:0644"))
        #expect(V(uid: 0, gid: 0, mode: 0o4755).encoded == b("0:0:04755"))
        #expect(V(parsing: V(uid: 3, gid: 4, mode: 0o1777).encoded) == V(uid: 3, gid: 4, mode: 0o1777))
    }

    @Test func inodeModeIsTheDaemonsAndNeverSetID() {
        #expect(OwnerXattr.inodeMode(0o4755, type: S_IFREG) == 0o755)
        #expect(OwnerXattr.inodeMode(0o000, type: S_IFREG) == 0o600)
        #expect(OwnerXattr.inodeMode(0o1777, type: S_IFDIR) == 0o777)
        #expect(OwnerXattr.inodeMode(0o055, type: S_IFDIR) == 0o755)
    }

    @Test func upperNameFollowsFuseOverlayfs() {
        #expect(OwnerXattr.upperName(.user, detected: nil) == OwnerXattr.containers)
        #expect(OwnerXattr.upperName(.user, detected: OwnerXattr.fuseOverlayfsUser) == OwnerXattr.fuseOverlayfsUser)
        #expect(OwnerXattr.upperName(.user, detected: OwnerXattr.security) == OwnerXattr.containers)
        #expect(OwnerXattr.upperName(.security, detected: nil) == OwnerXattr.security)
        #expect(OwnerXattr.upperName(.off, detected: nil) == nil)
        #expect(OwnerXattr.upperName(.off, detected: OwnerXattr.containers) == OwnerXattr.containers)
    }

    func xattr(_ s: Stack, _ rel: [UInt8], _ name: String) -> [UInt8]? {
        var buf = [UInt8](repeating: 0, count: 256)
        let n = withPath(s.path(rel)) { lgetxattr($0, name, &buf, buf.count) }
        return n < 0 ? nil : Array(buf[0..<n])
    }

    func setXattr(_ s: Stack, _ rel: [UInt8], _ name: String, _ value: String) {
        let rc = withPath(s.path(rel)) { p in value.withCString { lsetxattr(p, name, $0, strlen($0), 0) } }
        precondition(rc == 0, "setxattr \(name) failed")
    }

    func union(_ s: Stack, _ mode: UnionConfig.XattrPermissions) throws(Errno) -> Union {
        var c = UnionConfig(lowerDirs: (1...s.lowers).map { s.path(Array("l\($0)".utf8)) }, upperDir: s.path(b("u")), workDir: s.path(b("w")))
        c.xattrPermissions = mode
        return try Union(config: c)
    }

    @Test func newObjectsAndChangesGoToTheXattr() throws {
        guard geteuid() == 0 else { return }
        let s = Stack(1)
        let u = try union(s, .user)
        // The upper root gets its value at mount, from its own inode (no lower has one).
        #expect(xattr(s, b("u"), "user.containers.override_stat") == b("0:0:0755"))
        let caller = Caller(uid: 1000, gid: 1000)
        let (f, st, fd) = try u.create(NodeTable.rootID, "f", mode: S_IFREG | 0o4750, flags: O_WRONLY, caller: caller)
        u.release(f.id, fd)
        #expect(st.st_uid == 1000 && st.st_gid == 1000 && st.st_mode == S_IFREG | 0o4750)
        #expect(xattr(s, b("u/f"), "user.containers.override_stat") == b("1000:1000:04750"))
        let inode = try #require(s.exists("u/f"))
        #expect(inode.st_uid == 0 && inode.st_mode == S_IFREG | 0o750)   // the daemon's, no set-uid bit
        var change = AttributeChange()
        change.uid = 5
        let after = try u.setattr(f.id, change, fd: nil)
        #expect(after.st_uid == 5 && after.st_gid == 1000 && after.st_mode == S_IFREG | 0o4750)
        change = AttributeChange()
        change.mode = S_IFREG | 0o600
        #expect(try u.setattr(f.id, change, fd: nil).st_mode == S_IFREG | 0o600)
        #expect(xattr(s, b("u/f"), "user.containers.override_stat") == b("5:1000:0600"))
        #expect(s.exists("u/f")?.st_uid == 0)
        // Hidden from listings and lookups, and refused to callers.
        #expect(try u.listxattr(f.id).isEmpty)
        #expect(throws: Errno.noData) { try u.getxattr(f.id, "user.containers.override_stat") }
        #expect(throws: Errno.permission) {
            try [UInt8](b("0:0:04755")).withUnsafeBytes { (raw: UnsafeRawBufferPointer) -> Result<Void, Errno> in
                Result { () throws(Errno) in try u.setxattr(f.id, "user.containers.override_stat", raw, flags: 0) }
            }.get()
        }
        // A directory made in a set-group-id directory is one too, with the parent's group.
        let (d, _) = try u.mkdir(NodeTable.rootID, "d", mode: 0o2775, caller: Caller(uid: 7, gid: 70))
        let (sub, subSt) = try u.mkdir(d.id, "sub", mode: 0o755, caller: Caller(uid: 8, gid: 80))
        #expect(subSt.st_uid == 8 && subSt.st_gid == 70 && subSt.st_mode == S_IFDIR | 0o2755)
        _ = sub
    }

    @Test func lowerOwnersFromContainersStorageSurviveCopyUp() throws {
        guard geteuid() == 0 else { return }
        let s = Stack(1)
        s.file(b("l1/bin/tool"), b("x"), mode: 0o700)
        s.chmod(b("l1/bin"), 0o700)
        setXattr(s, b("l1"), "user.containers.override_stat", "0:0:0555")
        setXattr(s, b("l1/bin"), "user.containers.override_stat", "0:0:0755:dir")
        setXattr(s, b("l1/bin/tool"), "user.containers.override_stat", "0:2:02755")
        setXattr(s, b("l1/bin/tool"), "user.keep", "1")
        let u = try union(s, .user)
        #expect(xattr(s, b("u"), "user.containers.override_stat") == b("0:0:0555"))   // from the lower root
        #expect(try u.getattr(NodeTable.rootID).st_mode == S_IFDIR | 0o555)
        let tool = try u.id("bin", "tool")
        #expect(try u.getattr(tool).st_mode == S_IFREG | 0o2755)
        #expect(try u.getattr(tool).st_gid == 2)
        var change = AttributeChange()
        change.uid = 9
        let st = try u.setattr(tool, change, fd: nil)
        #expect(st.st_uid == 9 && st.st_gid == 2 && st.st_mode == S_IFREG | 0o2755)
        #expect(xattr(s, b("u/bin/tool"), "user.containers.override_stat") == b("9:2:02755"))
        #expect(xattr(s, b("u/bin"), "user.containers.override_stat") == b("0:0:0755"))
        #expect(xattr(s, b("u/bin/tool"), "user.keep") == b("1"))
        #expect(try u.listxattr(tool) == ["user.keep"])
    }

    @Test func anOrdinaryUpperGetsTheShownOwnerOnItsInodes() throws {
        guard geteuid() == 0 else { return }
        let s = Stack(1)
        s.file(b("l1/f"), b("x"), mode: 0o700)
        setXattr(s, b("l1"), "user.containers.override_stat", "0:0:0755")
        setXattr(s, b("l1/f"), "user.containers.override_stat", "12:34:0640")
        let u = try union(s, .off)
        let f = try u.id("f")
        #expect(try u.getattr(f).st_uid == 12)
        var change = AttributeChange()
        change.atime = .now
        _ = try u.setattr(f, change, fd: nil)
        let inode = try #require(s.exists("u/f"))
        #expect(inode.st_uid == 12 && inode.st_gid == 34 && inode.st_mode == S_IFREG | 0o640)
        #expect(xattr(s, b("u/f"), "user.containers.override_stat") == nil)
        #expect(xattr(s, b("u"), "user.containers.override_stat") == nil)
    }

    @Test func aValueThatCannotBeReadFailsTheLookup() throws {
        guard geteuid() == 0 else { return }
        let s = Stack(1)
        s.file("l1/f")
        setXattr(s, b("l1"), "user.containers.override_stat", "0:0:0755")
        setXattr(s, b("l1/f"), "user.containers.override_stat", "garbage")
        let u = try union(s, .user)
        #expect(throws: Errno.io) { try u.lookup(NodeTable.rootID, "f") }
    }
}
