import Glibc
import Testing
@testable import UnionCore

/// The pieces of the kernel's index format that need no mount (tests/test_index.py
/// compares the whole with the kernel).
@Suite struct InodeIndexTests {
    @Test func nlinkValuesParseAndPrintAsTheKernelsPrintf() {
        // ovl_set_nlink_common: snprintf("U%+i") / ("L%+i").
        #expect(InodeIndex.NlinkValue(relativeToLower: false, diff: 1).bytes == Array("U+1".utf8))
        #expect(InodeIndex.NlinkValue(relativeToLower: false, diff: 0).bytes == Array("U+0".utf8))
        #expect(InodeIndex.NlinkValue(relativeToLower: true, diff: -2).bytes == Array("L-2".utf8))
        #expect(InodeIndex.NlinkValue(parsing: Array("U-1".utf8)) == .init(relativeToLower: false, diff: -1))
        #expect(InodeIndex.NlinkValue(parsing: Array("L+12".utf8)) == .init(relativeToLower: true, diff: 12))
        for bad in ["", "U", "U+", "X+1", "U1", "U+1x", "u+1", "U++1"] {
            #expect(InodeIndex.NlinkValue(parsing: Array(bad.utf8)) == nil, "\(bad)")
        }
    }

    @Test func unionCountsFollowOvlGetNlink() {
        let u = InodeIndex.NlinkValue(relativeToLower: false, diff: 1)
        #expect(u.unionCount(upper: 2, lower: nil) == 3)
        #expect(InodeIndex.NlinkValue(relativeToLower: false, diff: -2).unionCount(upper: 2, lower: nil) == nil)
        let l = InodeIndex.NlinkValue(relativeToLower: true, diff: 0)
        #expect(l.unionCount(upper: 2, lower: 3) == 3)
        // Without the lower count (nothing is decoded): the names upper holds.
        #expect(l.unionCount(upper: 3, lower: nil) == 2)
    }

    @Test func entryNamesAreTheHandlesInLowerCaseHex() {
        #expect(InodeIndex.entryName([0x00, 0xfb, 0x1d, 0x0a]).bytes == Array("00fb1d0a".utf8))
    }
}

/// A copy-up of a lower hard link through `Union` with index=on (as root: trusted.overlay.*).
@Suite(.serialized) struct InodeIndexUnionTests {
    func union(_ s: Stack) throws(Errno) -> Union {
        var c = UnionConfig(lowerDirs: [s.path(b("l1"))], upperDir: s.path(b("u")), workDir: s.path(b("w")))
        c.index = true
        return try Union(config: c)
    }

    @Test(.enabled(if: geteuid() == 0)) func everyNameShowsTheOneIndexedCopy() throws {
        let s = Stack(1)
        s.file("l1/a", "A")
        s.mkdirs("l1/d")
        _ = withPath(s.path(b("l1/a"))) { a in withPath(s.path(b("l1/b"))) { Glibc.link(a, $0) } }
        _ = withPath(s.path(b("l1/a"))) { a in withPath(s.path(b("l1/d/c"))) { Glibc.link(a, $0) } }
        do {
            let u = try union(s)
            let (a, _) = try u.lookup(NodeTable.rootID, "a")
            let (bNode, _) = try u.lookup(NodeTable.rootID, "b")
            #expect(a.id == bNode.id)  // one node per lower inode, as the kernel hashes it
            var chmod = AttributeChange()
            chmod.mode = 0o600
            let st = try u.setattr(a.id, chmod, fd: nil)
            #expect(st.st_nlink == 3)
            // Both names the kernel held are links of the index entry now; d/c is not yet.
            let entry = try #require(s.exists("u/a"))
            #expect(s.exists("u/b")?.st_ino == entry.st_ino)
            #expect(entry.st_nlink == 3)
            #expect(s.entries(b("w/index")).count == 1)
            // The name looked up later is linked when resolved.
            let (c, cst) = try u.lookup(try u.id("d"), "c")
            #expect(c.id == a.id && cst.st_mode & 0o777 == 0o600 && cst.st_nlink == 3)
            #expect(s.exists("u/d/c")?.st_ino == entry.st_ino)
            // Unlinking all three takes the index entry along.
            try u.unlink(NodeTable.rootID, "a")
            try u.unlink(NodeTable.rootID, "b")
            #expect(try u.getattr(c.id).st_nlink == 1)
            try u.unlink(try u.id("d"), "c")
            #expect(s.entries(b("w/index")).isEmpty)
        }
        // A remount sees the whiteouts: nothing left.
        let v = try union(s)
        #expect(throws: Errno.noEntry) { try v.lookup(NodeTable.rootID, "a") }
    }
}
