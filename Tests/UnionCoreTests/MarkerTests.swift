import Glibc
import Testing
@testable import UnionCore

/// Marker names and xattr escaping, compared as bytes. No filesystem, no root.
@Suite struct MarkerTests {
    let trusted = MarkerFormat(whiteout: .device, xattrNamespace: .trusted)
    let user = MarkerFormat(whiteout: .device, xattrNamespace: .user)
    let latin1: [UInt8] = [0x72, 0xE9, 0x73, 0x75, 0x6D, 0xE9]   // "résumé" in Latin-1
    let nfc: [UInt8] = [0xC3, 0xA9], nfd: [UInt8] = [0x65, 0xCC, 0x81]

    /// A caller's `trusted.overlay.*` is stored as `trusted.overlay.overlay.*` (the kernel's
    /// escape since 6.7) and shown back under its own name; the overlay's own markers
    /// never show.
    @Test func trustedFormatEscapesOnlyTrustedOverlay() {
        #expect(Markers.xattrToLayer("trusted.overlay.opaque", format: trusted) == "trusted.overlay.overlay.opaque")
        #expect(Markers.xattrFromLayer("trusted.overlay.overlay.opaque", format: trusted) == "trusted.overlay.opaque")
        #expect(Markers.xattrFromLayer("trusted.overlay.opaque", format: trusted) == nil)
        #expect(Markers.xattrFromLayer("trusted.overlay.origin", format: trusted) == nil)
        // user.overlay.* belongs to the overlay only in the user-xattr format.
        #expect(Markers.xattrToLayer("user.overlay.opaque", format: trusted) == "user.overlay.opaque")
        #expect(Markers.xattrFromLayer("user.overlay.opaque", format: trusted) == "user.overlay.opaque")
        for plain: Name in ["user.mime_type", "security.capability", "system.posix_acl_access",
                            "trusted.overlayfoo", "trusted.overla", "user.overlay"] {
            #expect(Markers.xattrToLayer(plain, format: trusted) == plain)
            #expect(Markers.xattrFromLayer(plain, format: trusted) == plain)
        }
    }

    @Test func userFormatEscapesBothNamespaces() {
        #expect(Markers.xattrToLayer("user.overlay.opaque", format: user) == "user.overlay.overlay.opaque")
        #expect(Markers.xattrFromLayer("user.overlay.overlay.opaque", format: user) == "user.overlay.opaque")
        #expect(Markers.xattrFromLayer("user.overlay.opaque", format: user) == nil)
        #expect(Markers.xattrToLayer("trusted.overlay.x", format: user) == "trusted.overlay.overlay.x")
        #expect(Markers.xattrFromLayer("trusted.overlay.x", format: user) == nil)
        #expect(Markers.xattrToLayer("user.other", format: user) == "user.other")
    }

    /// Escaping works on the bytes after the prefix, whatever they are.
    @Test func escapingKeepsNonUTF8Bytes() {
        let tail = Name(latin1 + [0xFF, 0x01])
        for (format, prefix) in [(trusted, Name("trusted.overlay.")), (user, Name("user.overlay."))] {
            let stored = Markers.xattrToLayer(prefix + tail, format: format)
            #expect(stored == prefix + "overlay." + tail)
            #expect(Markers.xattrFromLayer(stored, format: format) == prefix + tail)
        }
        // The two spellings of "é" stay two xattr names.
        let a = Markers.xattrToLayer(Name(Array("user.".utf8) + nfc), format: user)
        let b = Markers.xattrToLayer(Name(Array("user.".utf8) + nfd), format: user)
        #expect(a != b)
    }

    /// Whatever a caller names an xattr, it comes back under that name.
    @Test func callerNamesRoundTrip() {
        var rng = SplitMix(seed: 31)
        let prefixes: [[UInt8]] = [Array("trusted.overlay.".utf8), Array("user.overlay.".utf8), Array("user.".utf8),
                                   Array("trusted.overlay.overlay.".utf8), []]
        for format in [trusted, user] {
            for _ in 0..<500 {
                let name = Name(prefixes.randomElement(using: &rng)! + randomName(&rng, maxCount: 40))
                #expect(Markers.xattrFromLayer(Markers.xattrToLayer(name, format: format), format: format) == name)
            }
        }
    }

    @Test func ociWhiteoutNamesAreBytes() {
        #expect(Markers.ociWhiteoutTarget(Name(Array(".wh.".utf8) + latin1)) == Name(latin1))
        #expect(Markers.ociWhiteoutTarget(Name(Array(".wh.".utf8) + nfd)) == Name(nfd))
        #expect(Markers.ociWhiteoutTarget(Name(Array(".wh.".utf8) + nfd)) != Name(nfc))
        #expect(Markers.ociWhiteoutTarget(".wh..wh..opq") == nil)
        #expect(Markers.ociWhiteoutTarget(".wh..wh..opqx") == ".wh..opqx")
        #expect(Markers.ociWhiteoutTarget(Name(latin1)) == nil)
        #expect(Markers.ociWhiteoutTarget(".wh") == nil)
        #expect(Markers.ociWhiteoutTarget("x.wh.y") == nil)
        #expect(Markers.isOCIMarkerName(".wh.") && Markers.isOCIMarkerName(".wh..wh..opq"))
        #expect(!Markers.isOCIMarkerName(Name([0x2E, 0x77, 0x68, 0xAE])))  // ".wh" + 0xAE, not "."
        // 251 bytes + ".wh." is NAME_MAX: a long target keeps its every byte.
        let long = Name(Array(repeating: 0xE9, count: 251))
        #expect(Markers.ociWhiteoutTarget(".wh." + long) == long)
    }

    /// Whiteouts in a listing hide exactly the name they spell, byte for byte.
    @Test func listingWhiteoutsMatchBytes() throws {
        let reg = UInt8(DT_REG), chr = UInt8(DT_CHR)
        var l = MergedListing()
        try l.add(layer: 0, isUpper: true, entries: raw([
            (Name(latin1), chr, 1),                                // device whiteout of the Latin-1 name
            (Name(Array(".wh.".utf8) + nfd), reg, 2),              // OCI whiteout of the NFD name
        ])) { _ in true }
        try l.add(layer: 1, isUpper: false, entries: raw([
            (Name(latin1), reg, 10), (Name(Array("r\u{e9}sum\u{e9}".utf8)), reg, 11),
            (Name(nfc), reg, 12), (Name(nfd), reg, 13),
        ])) { _ in false }
        #expect(l.merged().map(\.name) == [Name(Array("r\u{e9}sum\u{e9}".utf8)), Name(nfc)])
        // The upper layer held a .wh. name: lookups there may not skip the OCI check.
        #expect(l.markerFreeLayers == 0b10)
    }

    /// A whiteout check that fails ends the listing with its errno: the merge never
    /// goes on as if the device were an ordinary entry (which would show a deleted name)
    /// or absent (which would let the lower copy through).
    @Test func failingWhiteoutCheckFailsTheListing() {
        var l = MergedListing()
        #expect(throws: Errno.io) {
            try l.add(layer: 0, isUpper: true, entries: raw([("gone", UInt8(DT_CHR), 1)])) { (_: Name) throws(Errno) -> Bool in
                throw Errno.io
            }
        }
        // Only character devices are asked about.
        var asked: [Name] = []
        var m = MergedListing()
        #expect(throws: Never.self) {
            try m.add(layer: 0, isUpper: true, entries: raw([("f", UInt8(DT_REG), 1), ("d", UInt8(DT_DIR), 2),
                                                             ("c", UInt8(DT_CHR), 3)])) { (n: Name) throws(Errno) -> Bool in
                asked.append(n)
                return false
            }
        }
        #expect(asked == ["c"])
    }

    /// Only ENOENT and ENOTDIR mean "not in this layer"; ENODATA and EOPNOTSUPP mean
    /// "no such xattr". Everything else is an answer.
    @Test func whichErrnosMeanAbsent() {
        #expect(Errno(ENOENT).meansAbsent && Errno(ENOTDIR).meansAbsent)
        for e in [EACCES, EIO, EMFILE, ENFILE, ENOMEM, EPERM, ELOOP, ENAMETOOLONG, ESTALE, ENODATA] {
            #expect(!Errno(e).meansAbsent, "\(Errno(e))")
        }
        #expect(Errno(ENODATA).meansNoXattr && Errno(EOPNOTSUPP).meansNoXattr)
        for e in [EACCES, EIO, EMFILE, ENOENT, ERANGE, E2BIG] { #expect(!Errno(e).meansNoXattr) }
        #expect((try? ifPresent { () throws(Errno) -> Int in throw Errno.noEntry }) == .some(nil))
        #expect((try? ifPresent { () throws(Errno) -> Int in throw Errno.notDirectory }) == .some(nil))
        #expect(throws: Errno.tooManyFiles) { try ifPresent { () throws(Errno) -> Int in throw Errno.tooManyFiles } }
        #expect(throws: Errno.access) { try ifPresent { () throws(Errno) -> Int in throw Errno.access } }
    }

    /// The probes say the same against real syscalls (no special rights needed).
    @Test func probesOnRealFiles() throws {
        let s = Stack(1)
        s.file("l1/f")
        let dir = try Sys.openPath(s.path(b("l1")), O_PATH | O_DIRECTORY)
        defer { Sys.close(dir) }
        #expect(try Sys.statIfPresent(dir, "missing") == nil)
        #expect(try Sys.statIfPresent(dir, "f/below") == nil)                   // ENOTDIR
        #expect(try Sys.statIfPresent(dir, "f") != nil)
        #expect(throws: Errno.nameTooLong) { try Sys.statIfPresent(dir, Name(Array(repeating: 0x61, count: 256))) }
        #expect(try Sys.getxattrIfPresent(.entry(dir, "f"), "user.nothing") == nil)  // ENODATA
        // No OCI whiteout can exist for a name of 252 bytes or more: no syscall, no error.
        #expect(try Markers.hasOCIWhiteout(dir: dir, name: Name(Array(repeating: 0x61, count: 252))) == false)
        #expect(try Markers.hasOCIWhiteout(dir: dir, name: Name(Array(repeating: 0x61, count: 251))) == false)
    }
}
