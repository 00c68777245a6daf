import CLinux
import Glibc
import Testing
@testable import UnionCore

/// redirect_dir, metacopy, data-only layers and xattr whiteouts, driven through `Union`
/// without a mount. (tests/test_kernel_features.py compares the same with the kernel.)
@Suite(.serialized) struct KernelFeatureTests {
    let me = Caller(uid: geteuid(), gid: getegid())

    func union(_ s: Stack, redirect: RedirectMode = .on, metacopy: Bool = false, data: Int = 0,
               extraLowers: [[UInt8]] = []) throws(Errno) -> Union {
        var c = UnionConfig(lowerDirs: (1...s.lowers).map { s.path(Array("l\($0)".utf8)) } + extraLowers,
                            upperDir: s.path(b("u")), workDir: s.path(b("w")))
        c.redirectDir = redirect
        c.metacopy = metacopy
        c.dataLayerCount = data
        return try Union(config: c)
    }

    /// A second look at the same layers (a remount) while the first union holds the
    /// workdir: upper without a workdir, read-only.
    func reader(_ s: Stack, redirect: RedirectMode = .on, metacopy: Bool = false) throws(Errno) -> Union {
        var c = UnionConfig(lowerDirs: (1...s.lowers).map { s.path(Array("l\($0)".utf8)) }, upperDir: s.path(b("u")))
        c.redirectDir = redirect
        c.metacopy = metacopy
        return try Union(config: c)
    }

    func xattr(_ s: Stack, _ rel: StaticString, _ name: String) -> [UInt8]? {
        var buf = [UInt8](repeating: 0, count: 4096)
        let n = withPath(s.path(b(rel))) { lgetxattr($0, name, &buf, buf.count) }
        return n < 0 ? nil : Array(buf[0..<n])
    }

    func setXattr(_ s: Stack, _ rel: StaticString, _ name: String, _ value: [UInt8]) {
        let rc = withPath(s.path(b(rel))) { p in value.withUnsafeBytes { lsetxattr(p, name, $0.baseAddress, $0.count, 0) } }
        precondition(rc == 0, "setxattr \(name) failed")
    }

    // MARK: the redirect value

    @Test func redirectValuesParseAsTheKernelParsesThem() throws {
        #expect(try Redirect(parsing: b("a")) == .relative("a"))
        #expect(try Redirect(parsing: b("/a/b")) == .absolute(["a", "b"]))
        #expect(try Redirect(parsing: b("/a")).bytes == b("/a"))
        for bad in ["", "/", "//a", "a/", "/a/", "a/b", "../../etc"] {
            #expect(throws: Errno.invalid) { try Redirect(parsing: Array(bad.utf8)) }
        }
        #expect(throws: Errno.invalid) { try Redirect(parsing: [UInt8(ascii: "a"), 0, UInt8(ascii: "b")]) }
        // Dot components parse; the lookup refuses them (EACCES).
        #expect(try Redirect(parsing: b("/../..")) == .absolute(["..", ".."]))
        #expect(LookupName.absolute(["a", "b", "c"]).redirected(.relative("x"), at: 1) == .absolute(["a", "x", "c"]))
        #expect(LookupName.absolute(["a", "b", "c"]).redirected(.absolute(["y"]), at: 1) == .absolute(["y", "c"]))
        #expect(LookupName.relative("a").redirected(.absolute(["p", "q"]), at: 0) == .absolute(["p", "q"]))
    }

    // MARK: writing redirects

    @Test func renamingAMergedDirectoryRecordsARedirect() throws {
        let s = Stack()
        s.file("l1/d/a", "A"); s.file("l2/d/b", "B"); s.mkdirs("l1/e")
        let u = try union(s)
        try u.rename(NodeTable.rootID, "d", NodeTable.rootID, "d2", flags: 0)
        #expect(xattr(s, "u/d2", "trusted.overlay.redirect") == b("d"))
        #expect(s.exists("u/d")?.isWhiteoutDevice == true)
        #expect(try u.names(u.id("d2")) == ["a", "b"])
        #expect(try u.contents(u.id("d2", "b")) == b("B"))
        // Again in the same directory: the redirect still names the lower one.
        try u.rename(NodeTable.rootID, "d2", NodeTable.rootID, "d3", flags: 0)
        #expect(xattr(s, "u/d3", "trusted.overlay.redirect") == b("d"))
        #expect(s.exists("u/d2") == nil)
        // Into another directory: absolute.
        try u.rename(NodeTable.rootID, "d3", u.id("e"), "d4", flags: 0)
        #expect(xattr(s, "u/e/d4", "trusted.overlay.redirect") == b("/d"))
        // A fresh union (a remount) finds the same content.
        let v = try reader(s)
        #expect(try v.names(v.id("e", "d4")) == ["a", "b"])
        #expect(throws: Errno.noEntry) { try v.lookup(NodeTable.rootID, "d") }
    }

    @Test func withoutRedirectDirOnAMergedDirectoryRenameIsEXDEV() throws {
        let s = Stack()
        s.file("l1/d/a")
        for mode in [RedirectMode.off, .follow, .nofollow] {
            let u = try union(s, redirect: mode)
            #expect(throws: Errno.crossDevice) { try u.rename(NodeTable.rootID, "d", NodeTable.rootID, "d2", flags: 0) }
        }
    }

    @Test func aDirectoryMovedOutOfARenamedOneGetsTheLowerPath() throws {
        let s = Stack()
        s.file("l1/a/sub/g", "G"); s.mkdirs("l1/c")
        let u = try union(s)
        try u.rename(NodeTable.rootID, "a", NodeTable.rootID, "a2", flags: 0)
        try u.rename(u.id("a2"), "sub", u.id("c"), "sub2", flags: 0)
        #expect(xattr(s, "u/c/sub2", "trusted.overlay.redirect") == b("/a/sub"))
        let v = try reader(s)
        #expect(try v.contents(v.id("c", "sub2", "g")) == b("G"))
        #expect(try v.names(v.id("a2")) == [])
    }

    // MARK: following redirects

    @Test func redirectsAreFollowedOnlyWhenAsked() throws {
        let s = Stack()
        s.file("l1/old/f", "F"); s.mkdirs("u/new"); s.whiteout("u/old")
        setXattr(s, "u/new", "trusted.overlay.redirect", b("old"))
        let f = try reader(s, redirect: .follow)
        #expect(try f.names(f.id("new")) == ["f"])
        for mode in [RedirectMode.off, .nofollow] {
            let u = try reader(s, redirect: mode)
            // Never a silently different view: the kernel's "refusing to follow redirect".
            #expect(throws: Errno.permission) { try u.lookup(NodeTable.rootID, "new") }
        }
    }

    @Test func hostileRedirectsStayInsideTheLayers() throws {
        let s = Stack()
        s.mkdirs("l1/a"); s.file("l1/a/secret", "no"); s.mkdirs("u/x")
        s.symlink(b("/etc"), at: b("l1/etc"))
        for (value, expected) in [("../../etc", Errno.invalid), ("/../..", Errno.access), ("..", Errno.access),
                                  ("/a/../etc", Errno.access), ("/", Errno.invalid), ("a/", Errno.invalid)] {
            setXattr(s, "u/x", "trusted.overlay.redirect", Array(value.utf8))
            let u = try reader(s)
            #expect(throws: expected) { try u.lookup(NodeTable.rootID, "x") }
        }
        // A symlink is never followed: a directory redirected onto one merges nothing.
        setXattr(s, "u/x", "trusted.overlay.redirect", b("/etc"))
        let u = try reader(s)
        #expect(try u.names(u.id("x")) == [])
    }

    @Test func aRedirectLoopEnds() throws {
        let s = Stack(3)
        // Each redirect applies one layer down, so every chain ends.
        s.mkdirs("u/a"); s.mkdirs("u/b")
        setXattr(s, "u/a", "trusted.overlay.redirect", b("/b"))
        setXattr(s, "u/b", "trusted.overlay.redirect", b("/a"))
        s.mkdirs("l1/a"); s.mkdirs("l1/b")
        setXattr(s, "l1/a", "trusted.overlay.redirect", b("b"))
        setXattr(s, "l1/b", "trusted.overlay.redirect", b("a"))
        s.file("l2/a/from-l2-a"); s.file("l2/b/from-l2-b")
        s.file("l3/a/from-l3-a"); s.file("l3/b/from-l3-b")
        let u = try union(s)
        // /a: upper a -> l1 /b -> (b's redirect "a") l2 /a -> l3 /a.
        #expect(try u.names(u.id("a")) == ["from-l2-a", "from-l3-a"])
        #expect(try u.names(u.id("b")) == ["from-l2-b", "from-l3-b"])
    }

    // MARK: metacopy

    @Test func chownCopiesUpMetadataOnlyAndAWriteBringsTheData() throws {
        let s = Stack()
        let big = [UInt8](repeating: 7, count: 300_000)
        s.file(b("l1/d/f"), big)
        let u = try union(s, metacopy: true)
        let id = try u.id("d", "f")
        var chown = AttributeChange()
        chown.uid = 1234
        _ = try u.setattr(id, chown, fd: nil)
        let up = try #require(s.exists("u/d/f"))
        #expect(up.st_uid == 1234 && up.st_size == big.count)
        #expect(up.st_blocks < 16)  // no data blocks (at most an xattr block)
        #expect(xattr(s, "u/d/f", "trusted.overlay.metacopy") == [])
        #expect(try u.getattr(id).st_blocks == s.exists("l1/d/f")!.st_blocks)
        #expect(try u.contents(id) == big)
        // The first open for writing brings the data and drops the mark.
        let fd = try u.open(id, flags: O_WRONLY | O_APPEND)
        _ = try "+".withCString { try u.write(fd, UnsafeRawBufferPointer(start: $0, count: 1), at: Int64(big.count)) }
        u.release(id, fd)
        #expect(xattr(s, "u/d/f", "trusted.overlay.metacopy") == nil)
        #expect(try u.contents(id) == big + b("+"))
        #expect(s.read(b("l1/d/f"))?.count == 1 << 16)  // the lower file is untouched (read caps at 64 KiB)
    }

    @Test func metacopyFilesAreRefusedWithoutMetacopy() throws {
        let s = Stack()
        s.file("l1/f", "lower data")
        s.file(b("u/f"), [])
        _ = withPath(s.path(b("u/f"))) { truncate($0, 10) }
        setXattr(s, "u/f", "trusted.overlay.metacopy", [])
        #expect(throws: Errno.permission) { try reader(s, metacopy: false).lookup(NodeTable.rootID, "f") }
        let u = try reader(s, metacopy: true)
        #expect(try u.contents(u.id("f")) == b("lower data"))
        // Metacopy without any data below: EIO, as the kernel.
        s.file(b("u/g"), [])
        setXattr(s, "u/g", "trusted.overlay.metacopy", [])
        #expect(throws: Errno.io) { try u.lookup(NodeTable.rootID, "g") }
    }

    @Test func aRenamedOrLinkedMetacopyFileKeepsItsData() throws {
        let s = Stack()
        s.file("l1/a/f", "F"); s.mkdirs("l1/b")
        let u = try union(s, metacopy: true)
        try u.rename(u.id("a"), "f", u.id("b"), "g", flags: 0)
        #expect(xattr(s, "u/b/g", "trusted.overlay.redirect") == b("/a/f"))
        #expect(xattr(s, "u/b/g", "trusted.overlay.metacopy") == [])
        _ = try u.link(u.id("b", "g"), u.id("a"), "h")
        let v = try reader(s, metacopy: true)
        #expect(try v.contents(v.id("b", "g")) == b("F"))
        #expect(try v.contents(v.id("a", "h")) == b("F"))
    }

    // MARK: data-only layers and xattr whiteouts

    @Test func dataOnlyLayersServeMetacopyDataByAbsoluteRedirect() throws {
        let s = Stack(1)
        s.mkdirs("data/objects")
        s.file("data/objects/0a", "content of x")
        s.file("data/visible", "never by name")
        s.file(b("l1/x"), [])
        _ = withPath(s.path(b("l1/x"))) { truncate($0, 12) }
        setXattr(s, "l1/x", "trusted.overlay.metacopy", [])
        setXattr(s, "l1/x", "trusted.overlay.redirect", b("/objects/0a"))
        let u = try union(s, metacopy: true, data: 1, extraLowers: [s.path(b("data"))])
        #expect(try u.names(NodeTable.rootID) == ["x"])
        #expect(throws: Errno.noEntry) { try u.lookup(NodeTable.rootID, "visible") }
        #expect(try u.contents(u.id("x")) == b("content of x"))
    }

    @Test func xattrWhiteoutsHideInDirectoriesMarkedX() throws {
        let s = Stack()
        s.file("l2/d/gone", "old"); s.file("l2/d/kept", "k")
        s.file(b("l1/d/gone"), [])
        setXattr(s, "l1/d/gone", "trusted.overlay.whiteout", [])
        setXattr(s, "l1/d", "trusted.overlay.opaque", b("x"))
        let u = try union(s, redirect: .off)
        #expect(try u.names(u.id("d")) == ["kept"])
        #expect(throws: Errno.noEntry) { try u.lookup(u.id("d"), "gone") }
    }
}
