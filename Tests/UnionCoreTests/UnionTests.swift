import CLinux
import Glibc
import Testing
@testable import UnionCore

@Suite(.serialized) struct UnionTests {
    let me = Caller(uid: geteuid(), gid: getegid())

    @Test func mergesDirectoriesAndHonoursWhiteouts() throws {
        let s = Stack()
        s.file("l1/d/a"); s.file("l2/d/b"); s.file("l2/d/c"); s.mkdirs("u/d"); s.whiteout("u/d/c")
        let u = try s.union()
        #expect(try u.names(u.id("d")) == ["a", "b"])
        #expect(throws: Errno.noEntry) { try u.lookup(u.id("d"), "c") }
    }

    @Test func opaqueDirectoryHidesLowerContent() throws {
        let s = Stack()
        s.file("l2/d/old"); s.file("l1/d/new")
        #expect(withPath(s.path(b("l1/d"))) { setxattr($0, "trusted.overlay.opaque", "y", 1, 0) } == 0)
        let u = try s.union()
        #expect(try u.names(u.id("d")) == ["new"])
    }

    @Test func unlinkOfLowerFileLeavesDeviceWhiteout() throws {
        let s = Stack()
        s.file("l1/f")
        let u = try s.union()
        try u.unlink(NodeTable.rootID, "f")
        let st = try #require(s.exists("u/f"))
        #expect(st.isWhiteoutDevice)
        #expect(s.exists("l1/f") != nil)
        #expect(try u.names(NodeTable.rootID).isEmpty)
    }

    @Test func openForWriteCopiesUpWithMetadata() throws {
        let s = Stack()
        s.file("l2/a/b/f", "lower")
        s.chmod(b("l2/a"), 0o711)
        s.chmod(b("l2/a/b/f"), 0o640)
        let u = try s.union()
        let id = try u.id("a", "b", "f")
        let fd = try u.open(id, flags: O_WRONLY | O_APPEND)
        _ = try "+".withCString { try u.write(fd, UnsafeRawBufferPointer(start: $0, count: 1), at: 5) }
        u.release(id, fd)
        #expect(s.exists("u/a")?.st_mode == S_IFDIR | 0o711)
        #expect(s.exists("u/a/b/f")?.st_mode == S_IFREG | 0o640)
        #expect(s.exists("u/a/b/f")?.st_size == 6)
        #expect(s.exists("l2/a/b/f")?.st_size == 5)
        #expect(try u.names(u.id("a", "b")) == ["f"])
    }

    @Test func mkdirOverRemovedDirectoryIsOpaque() throws {
        let s = Stack()
        s.file("l1/d/x")
        let u = try s.union()
        try u.unlink(u.id("d"), "x")
        try u.rmdir(NodeTable.rootID, "d")
        #expect(s.exists("u/d")?.isWhiteoutDevice == true)
        _ = try u.mkdir(NodeTable.rootID, "d", mode: 0o755, caller: me)
        var v = [CChar](repeating: 0, count: 4)
        #expect(withPath(s.path(b("u/d"))) { getxattr($0, "trusted.overlay.opaque", &v, 4) } == 1)
        #expect(try u.names(u.id("d")).isEmpty)
    }

    @Test func rmdirRefusesWhatStillShows() throws {
        let s = Stack()
        s.file("l1/d/x")
        let u = try s.union()
        #expect(throws: Errno.notEmpty) { try u.rmdir(NodeTable.rootID, "d") }
    }

    @Test func renamingMergedDirectoryIsCrossDevice() throws {
        let s = Stack()
        s.file("l1/d/x")
        let u = try s.union()
        _ = try u.id("d")
        #expect(throws: Errno.crossDevice) { try u.rename(NodeTable.rootID, "d", NodeTable.rootID, "e", flags: 0) }
    }

    @Test func readOnlyWithoutUpper() throws {
        let s = Stack()
        s.file("l1/f")
        let u = try s.union(upper: false)
        #expect(throws: Errno.readOnly) { try u.unlink(NodeTable.rootID, "f") }
        #expect(throws: Errno.readOnly) { _ = try u.open(u.id("f"), flags: O_RDWR) }
    }

    @Test func unlinkedOpenFileKeepsItsAttributes() throws {
        let s = Stack()
        let u = try s.union()
        let (n, _, fd) = try u.create(NodeTable.rootID, "tmp", mode: 0o600, flags: O_RDWR, caller: me)
        _ = try "data".withCString { try u.write(fd, UnsafeRawBufferPointer(start: $0, count: 4), at: 0) }
        try u.unlink(NodeTable.rootID, "tmp")
        #expect(try u.getattr(n.id).st_size == 4)
        var change = AttributeChange()
        change.mode = 0o640
        #expect(try u.setattr(n.id, change, fd: nil).st_mode == S_IFREG | 0o640)
        u.release(n.id, fd)
        #expect(s.exists("u/tmp") == nil)
    }

    @Test func symlinkInLayerCannotLeadOutside() throws {
        let s = Stack()
        s.mkdirs("outside")
        s.file("outside/secret")
        s.symlink(s.path(b("outside")), at: b("l1/escape"))
        let u = try s.union()
        let (n, st) = try u.lookup(NodeTable.rootID, "escape")
        #expect(st.fileType == S_IFLNK)
        #expect(throws: Errno.notDirectory) { try u.lookup(n.id, "secret") }
    }
}
