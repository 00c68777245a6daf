import CFuse
import Glibc
import Testing
@testable import UnionCore

/// A layer stack in a temp dir, driven through `Union` without any mount.
final class Stack {
    let root: String
    init(_ lowers: Int = 2) {
        var template = Array("/tmp/suf-unit-XXXXXX".utf8CString)
        root = String(cString: mkdtemp(&template)!)
        for d in ["u", "w"] + (1...lowers).map({ "l\($0)" }) { mkdir("\(root)/\(d)", 0o755) }
    }
    deinit { _ = system("rm -rf '\(root)'") }

    func file(_ path: String, _ content: String = "x") {
        let full = "\(root)/\(path)"
        var dir = full
        while dir.last != "/" { dir.removeLast() }
        _ = system("mkdir -p '\(dir)'")
        let fd = open(full, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        _ = content.withCString { write(fd, $0, strlen($0)) }
        close(fd)
    }
    func mkdirs(_ path: String) { _ = system("mkdir -p '\(root)/\(path)'") }
    func whiteout(_ path: String) { mknod("\(root)/\(path)", S_IFCHR, 0) }
    func exists(_ path: String) -> stat? {
        var st = stat()
        return lstat("\(root)/\(path)", &st) == 0 ? st : nil
    }
    func union(upper: Bool = true) throws -> Union {
        let lowers = (1...2).map { "\(root)/l\($0)" }
        return try Union(config: UnionConfig(lowerDirs: lowers, upperDir: upper ? "\(root)/u" : nil,
                                             workDir: upper ? "\(root)/w" : nil))
    }
}

extension Union {
    func names(_ id: UInt64) throws -> [String] {
        try list(id).map(\.name).filter { $0 != "." && $0 != ".." }.sorted()
    }
    func id(_ path: String) throws -> UInt64 {
        var cur = NodeTable.rootID
        for part in path.split(separator: "/") { cur = try lookup(cur, String(part)).0.id }
        return cur
    }
}

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
        #expect(setxattr("\(s.root)/l1/d", "trusted.overlay.opaque", "y", 1, 0) == 0)
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
        chmod("\(s.root)/l2/a", 0o711)
        chmod("\(s.root)/l2/a/b/f", 0o640)
        let u = try s.union()
        let id = try u.id("a/b/f")
        let fd = try u.open(id, flags: O_WRONLY | O_APPEND)
        _ = try "+".withCString { try u.write(fd, UnsafeRawBufferPointer(start: $0, count: 1), at: 5) }
        u.release(id, fd)
        #expect(s.exists("u/a")?.st_mode == S_IFDIR | 0o711)
        #expect(s.exists("u/a/b/f")?.st_mode == S_IFREG | 0o640)
        #expect(s.exists("u/a/b/f")?.st_size == 6)
        #expect(s.exists("l2/a/b/f")?.st_size == 5)
        #expect(try u.names(u.id("a/b")) == ["f"])
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
        #expect(getxattr("\(s.root)/u/d", "trusted.overlay.opaque", &v, 4) == 1)
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
        symlink("\(s.root)/outside", "\(s.root)/l1/escape")
        let u = try s.union()
        let (n, st) = try u.lookup(NodeTable.rootID, "escape")
        #expect(st.fileType == S_IFLNK)
        #expect(throws: Errno.notDirectory) { try u.lookup(n.id, "secret") }
    }
}
