import CLinux
import Glibc
import Testing
@testable import UnionCore

/// A layer that cannot be read must fail the operation, never count as "absent": a
/// listing that skipped an unreadable upper would bring deleted files back, an emptiness
/// check that skipped an unreadable lower would let rmdir remove a full directory, and a
/// copy-up that skipped an unreadable xattr would produce a file without it.
///
/// The fault is EACCES from a directory the union may not read. Root reads everything
/// (CAP_DAC_OVERRIDE), so each union here runs on a thread acting as an unprivileged
/// user (`asUnprivileged`, see Support.swift). Building the layers needs root (mknod of
/// whiteouts, chown to that user); as non-root the tests still run, as the caller.
@Suite(.serialized) struct FailClosedTests {
    let me = Caller(uid: geteuid() == 0 ? unprivilegedUID : geteuid(), gid: 0)

    /// upper/d holds the whiteout of lower's d/x and upper's own d/z; once upper/d cannot
    /// be read, listing d, looking names up in it and answering readdirplus all fail with
    /// EACCES instead of serving lower's view of d.
    @Test func unreadableUpperFailsListingAndLookups() throws {
        let s = Stack(1)
        s.file("l1/d/x", "deleted")
        s.file("l1/d/y", "lower")
        s.mkdirs("u/d")
        s.whiteout("u/d/x")
        s.file("u/d/z", "upper")
        if geteuid() == 0 { s.chownAll(unprivilegedUID) }
        struct Outcome {
            var before: Result<[Name], Errno>
            var refused = false
            var lookupD: Result<UInt64, Errno>?
            var list: Result<[Name], Errno>?
            var lookupX: Result<UInt64, Errno>?
            var lookupY: Result<UInt64, Errno>?
            var listed: Result<UInt64, Errno>?
        }
        let path = s.path(b("u/d"))
        let o = asUnprivileged { () -> Outcome in
            let u: Union
            let d: UInt64, z: Node
            do throws(Errno) {
                u = try s.union()
                d = try u.id("d")
                z = try u.lookup(d, "z").0
            } catch { return Outcome(before: .failure(error)) }
            var o = Outcome(before: attempt { () throws(Errno) -> [Name] in try u.names(d) })
            s.chmod(b("u/d"), 0)
            o.refused = isRefused(path)
            // The kernel still holds d: what it asks next reaches the unreadable layer.
            o.list = attempt { () throws(Errno) -> [Name] in try u.names(d) }
            o.lookupX = attempt { () throws(Errno) -> UInt64 in try u.lookup(d, "x").0.id }
            o.lookupY = attempt { () throws(Errno) -> UInt64 in try u.lookup(d, "y").0.id }
            o.listed = attempt { () throws(Errno) -> UInt64 in
                try u.lookupListed(d, DirectoryEntry(name: "z", type: UInt8(DT_REG), ino: 0)).0.id
            }
            _ = z
            // A fresh lookup of d itself fails too (its opaque xattr cannot be read).
            o.lookupD = attempt { () throws(Errno) -> UInt64 in try u.lookup(NodeTable.rootID, "d").0.id }
            return o
        }
        #expect(try o.before.get() == ["y", "z"])
        try #require(o.refused, "the fault is not in place: u/d is still readable")
        #expect(o.list?.errno == Errno.access, "listing: \(String(describing: o.list))")
        #expect(o.lookupX?.errno == Errno.access, "lookup of the whited-out name: \(String(describing: o.lookupX))")
        #expect(o.lookupY?.errno == Errno.access, "lookup of the lower name: \(String(describing: o.lookupY))")
        #expect(o.listed?.errno == Errno.access, "readdirplus entry: \(String(describing: o.listed))")
        #expect(o.lookupD?.errno == Errno.access, "lookup of d: \(String(describing: o.lookupD))")
    }

    /// d's only copy is in the bottom layer and holds a file, but cannot be read: rmdir
    /// must fail, and write no whiteout. A readable empty directory beside it is removed
    /// by the same user (so the failure is the fault's, not a lack of rights).
    @Test func rmdirOfUnprovableDirectoryFails() throws {
        let s = Stack(2)
        s.file("l2/d/keep", "still here")
        s.mkdirs("l2/empty")
        if geteuid() == 0 { s.chownAll(unprivilegedUID) }
        let path = s.path(b("l2/d"))
        let (refused, rmdirFull, rmdirEmpty, after) = asUnprivileged { () -> (Bool, Result<Void, Errno>, Result<Void, Errno>, Result<[Name], Errno>) in
            s.chmod(b("l2/d"), 0)
            let r = isRefused(path)
            let u: Union
            do throws(Errno) { u = try s.union() } catch { return (r, .failure(error), .failure(error), .failure(error)) }
            return (r, attempt { () throws(Errno) in try u.rmdir(NodeTable.rootID, "d") },
                    attempt { () throws(Errno) in try u.rmdir(NodeTable.rootID, "empty") },
                    attempt { () throws(Errno) -> [Name] in try u.names(NodeTable.rootID) })
        }
        try #require(refused, "the fault is not in place: l2/d is still readable")
        if geteuid() == 0 { #expect(!isRefused(path), "the test's own thread lost root's override") }
        #expect(rmdirFull.errno == Errno.access, "rmdir of an unreadable full directory: \(rmdirFull)")
        #expect(s.exists("u/d") == nil && s.exists("u/.wh.d") == nil, "a marker for d was written")
        #expect(s.exists("l2/d/keep") != nil)
        #expect(throws: Never.self) { try rmdirEmpty.get() }
        #expect(try after.get() == ["d"])
        #expect(s.exists("u/empty")?.isWhiteoutDevice == true || s.exists("u/.wh.empty") != nil)
    }

    /// A lower directory whose user.* xattr its reader may not read (mode 0300: no read
    /// permission, so getxattr gives EACCES) is never copied up without it: creating an
    /// entry inside fails with EACCES, upper gains nothing and workdir keeps no leftover.
    /// With read permission the same copy-up carries the xattr.
    @Test func copyUpNeverDropsAnUnreadableXattr() throws {
        let s = Stack(1)
        s.mkdirs("l1/d")
        s.mkdirs("l1/ok")
        for dir in [b("l1/d"), b("l1/ok")] {
            #expect(withPath(s.path(dir)) { setxattr($0, "user.keep", "v", 1, 0) } == 0)
        }
        if geteuid() == 0 { s.chownAll(unprivilegedUID) }
        s.chmod(b("l1/d"), 0o300)
        let caller = me
        let (created, control) = asUnprivileged { () -> (Result<Void, Errno>, Result<Void, Errno>) in
            let u: Union
            do throws(Errno) { u = try s.union() } catch { return (.failure(error), .failure(error)) }
            let a = attempt { () throws(Errno) in _ = try u.mkdir(u.id("d"), "new", mode: 0o755, caller: caller) }
            let c = attempt { () throws(Errno) in _ = try u.mkdir(u.id("ok"), "new", mode: 0o755, caller: caller) }
            return (a, c)
        }
        #expect(created.errno == Errno.access, "copy-up of a directory with an unreadable xattr: \(created)")
        #expect(s.exists("u/d") == nil, "d was copied up without its xattr")
        #expect(s.entries(b("w/work")).isEmpty, "a staged copy was left in workdir: \(s.entries(b("w/work")))")
        #expect(throws: Never.self) { try control.get() }
        var v = [CChar](repeating: 0, count: 4)
        #expect(withPath(s.path(b("u/ok"))) { getxattr($0, "user.keep", &v, 4) } == 1)
    }
}
