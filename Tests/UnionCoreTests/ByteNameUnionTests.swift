import CLinux
import Glibc
import Testing
@testable import UnionCore

/// Names that are not plain ASCII through a whole `Union`: listing, lookup, content,
/// readlink, copy-up, rename and whiteouts keep every byte, and canonically equivalent
/// spellings stay two files. Needs root (whiteouts are 0/0 devices, trusted.* xattrs).
@Suite(.serialized) struct ByteNameUnionTests {
    let me = Caller(uid: geteuid(), gid: getegid())
    let nfc: [UInt8] = Array("caf".utf8) + [0xC3, 0xA9]           // "café", é = U+00E9
    let nfd: [UInt8] = Array("caf".utf8) + [0x65, 0xCC, 0x81]     // "café", e + U+0301
    let latin1: [UInt8] = [0x72, 0xE9, 0x70, 0x65, 0x72, 0x74, 0x6F, 0x69, 0x72, 0x65]  // "répertoire" in Latin-1
    let file1: [UInt8] = [0x66, 0xE9, 0x74, 0xE9]                  // "fété" in Latin-1
    let target: [UInt8] = Array("../".utf8) + [0xFF, 0xFE, 0x80] + Array("/x".utf8)

    @Test func nfcAndNFDTwinsInOneLayerAreTwoFiles() throws {
        let s = Stack(1)
        s.file(Array("l1/".utf8) + nfc, Array("composed".utf8))
        s.file(Array("l1/".utf8) + nfd, Array("decomposed".utf8))
        let u = try s.union()
        #expect(try u.names(NodeTable.rootID) == [Name(nfd), Name(nfc)])
        let (a, sa) = try u.lookup(NodeTable.rootID, Name(nfc))
        let (d, sd) = try u.lookup(NodeTable.rootID, Name(nfd))
        #expect(a.id != d.id && sa.st_ino != sd.st_ino)
        #expect(try u.contents(a.id) == Array("composed".utf8))
        #expect(try u.contents(d.id) == Array("decomposed".utf8))
    }

    /// One spelling in each layer: neither hides the other, and a whiteout of one in
    /// upper hides only that one.
    @Test func twinsInDifferentLayersDoNotShadowEachOther() throws {
        let s = Stack(2)
        s.file(Array("l1/".utf8) + nfc, Array("top".utf8))
        s.file(Array("l2/".utf8) + nfd, Array("bottom".utf8))
        let u = try s.union()
        #expect(try u.names(NodeTable.rootID) == [Name(nfd), Name(nfc)])
        #expect(try u.contents(u.id(Name(nfd))) == Array("bottom".utf8))
        try u.unlink(NodeTable.rootID, Name(nfc))
        #expect(s.exists(Array("u/".utf8) + nfc)?.isWhiteoutDevice == true)
        #expect(s.entries(b("u")) == [nfc])
        #expect(try u.names(NodeTable.rootID) == [Name(nfd)])
        #expect(try u.contents(u.id(Name(nfd))) == Array("bottom".utf8))
    }

    @Test func everyByteInNamesLists() throws {
        let s = Stack(2)
        var expected: [Name] = []
        for byte in UInt8(1)...UInt8(255) where byte != UInt8(ascii: "/") {
            let name = byte == UInt8(ascii: ".") ? [byte, byte, byte] : [byte]
            s.file((byte % 2 == 0 ? b("l1/") : b("l2/")) + name, [byte])
            expected.append(Name(name))
        }
        let u = try s.union()
        #expect(try u.names(NodeTable.rootID) == expected.sorted())
        for name in expected {
            #expect(try u.contents(u.id(name)) == [name.bytes[0]], "\(name)")
        }
    }

    /// Latin-1 names and a symlink whose target is not UTF-8, through lookup, readlink,
    /// copy-up (data and symlink), rename and unlink; upper ends up with the exact bytes.
    @Test func nonUTF8NamesThroughEveryChange() throws {
        let s = Stack(1)
        let dir = Array("l1/".utf8) + latin1
        s.file(dir + [0x2F] + file1, Array("data".utf8))
        s.symlink(target, at: dir + Array("/lien".utf8))
        s.file(dir + Array("/gone".utf8) + [0xE9], Array("bye".utf8))
        let u = try s.union()
        let d = try u.id(Name(latin1))
        #expect(try u.names(NodeTable.rootID) == [Name(latin1)])
        #expect(Set(try u.names(d)) == [Name(file1), "lien", Name(Array("gone".utf8) + [0xE9])])
        // readlink and the copy-up of the symlink (a chown copies it up) keep the target.
        let link = try u.id(Name(latin1), "lien")
        #expect(try u.readlink(link) == target)
        var change = AttributeChange()
        change.uid = me.uid
        _ = try u.setattr(link, change, fd: nil)
        #expect(s.readlink(Array("u/".utf8) + latin1 + Array("/lien".utf8)) == target)
        // Data copy-up by an append.
        let f = try u.id(Name(latin1), Name(file1))
        let fd = try u.open(f, flags: O_WRONLY | O_APPEND)
        _ = try "+".withCString { try u.write(fd, UnsafeRawBufferPointer(start: $0, count: 1), at: 4) }
        u.release(f, fd)
        #expect(s.read(Array("u/".utf8) + latin1 + [0x2F] + file1) == Array("data+".utf8))
        // Rename to the NFD name: the old name gets a whiteout, the new one the file.
        try u.rename(d, Name(file1), d, Name(nfd), flags: 0)
        #expect(s.read(Array("u/".utf8) + latin1 + [0x2F] + nfd) == Array("data+".utf8))
        #expect(s.exists(Array("u/".utf8) + latin1 + [0x2F] + file1)?.isWhiteoutDevice == true)
        #expect(s.exists(Array("u/".utf8) + latin1 + [0x2F] + nfc) == nil)
        // Unlink of a lower-only Latin-1 name: a whiteout with exactly its bytes.
        try u.unlink(d, Name(Array("gone".utf8) + [0xE9]))
        #expect(s.exists(Array("u/".utf8) + latin1 + Array("/gone".utf8) + [0xE9])?.isWhiteoutDevice == true)
        #expect(s.entries(Array("u/".utf8) + latin1) == [Array("gone".utf8) + [0xE9], file1, nfd, Array("lien".utf8)])
        #expect(Set(try u.names(d)) == [Name(nfd), "lien"])
        #expect(s.read(dir + [0x2F] + file1) == Array("data".utf8))     // lower untouched
    }

    /// 255 bytes of two-, three- and four-byte characters: listed, created over, removed
    /// to a whiteout of that exact name; one byte more is ENAMETOOLONG.
    @Test func longestNamesOfMultiByteCharacters() throws {
        let s = Stack(1)
        let names: [[UInt8]] = [
            Array(String(repeating: "é", count: 127).utf8) + Array("a".utf8),
            Array(String(repeating: "€", count: 85).utf8),
            Array(String(repeating: "😀", count: 63).utf8) + Array("abc".utf8),
            Array(repeating: 0xE9, count: 255),
        ]
        for n in names {
            #expect(n.count == 255)
            s.file(Array("l1/".utf8) + n, n)
        }
        let u = try s.union()
        #expect(try u.names(NodeTable.rootID) == names.map { Name($0) }.sorted())
        for n in names { #expect(try u.contents(u.id(Name(n))) == n) }
        try u.unlink(NodeTable.rootID, Name(names[0]))
        #expect(s.exists(Array("u/".utf8) + names[0])?.isWhiteoutDevice == true)
        let (created, _, fd) = try u.create(NodeTable.rootID, Name(names[0]), mode: 0o644, flags: O_RDWR, caller: me)
        u.release(created.id, fd)
        #expect(s.exists(Array("u/".utf8) + names[0])?.fileType == S_IFREG)
        let tooLong = Name(names[1] + [0x61])
        #expect(throws: Errno.nameTooLong) { try u.lookup(NodeTable.rootID, tooLong) }
        #expect(throws: Errno.nameTooLong) { try u.mkdir(NodeTable.rootID, tooLong, mode: 0o755, caller: me) }
    }

    /// A non-UTF-8 OCI whiteout in a lower layer hides exactly its name.
    @Test func ociWhiteoutWithNonUTF8Name() throws {
        let s = Stack(2)
        s.file(Array("l1/.wh.".utf8) + file1, [])
        s.file(Array("l2/".utf8) + file1)
        s.file(Array("l2/".utf8) + Array("f\u{e9}t\u{e9}".utf8))    // the UTF-8 spelling stays
        let u = try s.union()
        #expect(try u.names(NodeTable.rootID) == [Name(Array("f\u{e9}t\u{e9}".utf8))])
        #expect(throws: Errno.noEntry) { try u.lookup(NodeTable.rootID, Name(file1)) }
        #expect(throws: Errno.permission) { try u.mkdir(NodeTable.rootID, Name(Array(".wh.".utf8) + file1), mode: 0o755, caller: me) }
    }
}
