import Glibc
import Synchronization

/// `workdir/work`: the staging area where copy-ups and replacements are built
/// before one rename makes them visible, so a crash leaves the old view or the new.
///
/// The directory name is the kernel's, so the kernel and swiftunionfs can take
/// turns on the same upper and workdir.
final class WorkDir: Sendable {
    let fd: Int32
    /// The workdir itself (`workdir/index` is opened from it), held with an exclusive lock while mounted.
    let lockFD: Int32
    private let upperLockFD: Int32
    private let counter = Atomic<UInt64>(0)

    static let workName: Name = "work"

    /// Fails with EBUSY when another mount holds upper or workdir, EINVAL when the
    /// workdir carries the kernel's volatile marker.
    /// Takes `opened`, the workdir opened for reading from the upper layer's mount (see
    /// PrivateMount: staged objects are renamed into upper, which needs one mount).
    init(opened: Int32, path: [UInt8], upper: Layer, diagnostics: Diagnostics) throws(Errno) {
        // Both upper and workdir are held exclusively, as the kernel marks them in use.
        let upperLock: Int32
        do throws(Errno) { upperLock = try Self.lock(try Sys.reopen(upper.rootFD, O_RDONLY | O_DIRECTORY)) } catch {
            Sys.close(opened)
            throw error
        }
        let top: Int32
        do throws(Errno) {
            top = try Self.lock(opened)
        } catch {
            Sys.close(upperLock)
            throw error
        }
        let work: Int32
        do throws(Errno) {
            if try Sys.statIfPresent(top, Self.workName) == nil { try Sys.mkdir(top, Self.workName, 0o700) }
            work = try Sys.openAt(top, Self.workName, O_PATH | O_DIRECTORY)
        } catch {
            Sys.close(top)
            Sys.close(upperLock)
            throw error
        }
        // The kernel's volatile mounts leave work/incompat/volatile: the upper may have lost
        // writes in a crash and must not be reused. Refuse as the kernel does.
        let volatileMark: Int32?
        do throws(Errno) {
            volatileMark = try ifPresent { () throws(Errno) -> Int32 in
                try Sys.openBeneath(work, Array("incompat/volatile".utf8), O_PATH)
            }
        } catch {
            [work, top, upperLock].forEach(Sys.close)
            throw error
        }
        if let volatileMark {
            Sys.close(volatileMark)
            [work, top, upperLock].forEach(Sys.close)
            throw Errno.invalid
        }
        self.upperLockFD = upperLock
        self.lockFD = top
        self.fd = work
        // Leftovers of an earlier mount (a crash mid copy-up) are never visible; removing
        // them only frees space, so a failure is reported, not fatal.
        do throws(Errno) { try Self.removeContents(of: work) } catch {
            diagnostics.report("cannot clean \(Bytes.display(path))/work: \(error)")
        }
    }

    deinit {
        Sys.close(fd)
        Sys.close(lockFD)
        Sys.close(upperLockFD)
    }

    /// Takes an exclusive lock on `fd` (consumed on failure). A daemon whose mount was
    /// just unmounted may still be on its way out: give it two seconds to let go before
    /// calling the directory busy, so `umount; mount` works.
    private static func lock(_ fd: Int32) throws(Errno) -> Int32 {
        var waited = 0
        do throws(Errno) {
            while try !Sys.tryLockExclusive(fd) {
                guard waited < 2000 else { throw Errno.busy }
                Sys.sleep(milliseconds: 20)
                waited += 20
            }
        } catch {
            Sys.close(fd)
            throw error
        }
        return fd
    }

    /// A fresh name for a staged object; unique within this mount, and leftovers of
    /// earlier mounts are removed at start, so no collision is possible.
    func tempName() -> Name {
        Name("#suf.\(getpid()).\(counter.wrappingAdd(1, ordering: .relaxed).newValue)".utf8)
    }

    /// Which marker format the upper filesystem accepts: a 0/0 device needs
    /// CAP_MKNOD (or a user namespace on Linux 5.8+), trusted.* xattrs need
    /// CAP_SYS_ADMIN in the initial namespace. EOPNOTSUPP when it takes no xattrs at all.
    func detectFormat() throws(Errno) -> MarkerFormat {
        var format = MarkerFormat()
        let probe = tempName()
        do throws(Errno) {
            try Sys.mknod(fd, probe, S_IFCHR | 0o000, 0)
            try Sys.unlink(fd, probe)
        } catch where error.rawValue == EPERM || error.rawValue == EOPNOTSUPP {
            format.whiteout = .ociFile
        }
        try Sys.mkdir(fd, probe, 0o700)
        defer { try? Sys.unlink(fd, probe, directory: true) }
        let d = try Sys.openAt(fd, probe, O_PATH | O_DIRECTORY)
        defer { Sys.close(d) }
        do throws(Errno) {
            try Sys.setxattr(d, "trusted.overlay.suf-probe", [UInt8(ascii: "y")])
        } catch where error.rawValue == EPERM || error.rawValue == EOPNOTSUPP {
            format.xattrNamespace = .user
            // Without any xattrs an opaque directory cannot be written: refuse the upper.
            try Sys.setxattr(d, "user.overlay.suf-probe", [UInt8(ascii: "y")])
        }
        return format
    }

    /// Removes everything below `dir`, never following a symlink.
    static func removeContents(of dir: Int32) throws(Errno) {
        let list = try Sys.reopen(dir, O_RDONLY | O_DIRECTORY)
        var names: [(Name, Bool)] = []
        try Sys.readDirectory(list) { (name: Name, type: UInt8, _: UInt64) throws(Errno) in
            names.append((name, type == UInt8(DT_DIR)))
        }
        for (name, isDir) in names {
            if isDir {
                // The kernel leaves some work dirs mode 000: make them removable.
                try Sys.chmodAt(dir, name, 0o700)
                let sub = try Sys.openAt(dir, name, O_PATH | O_DIRECTORY)
                defer { Sys.close(sub) }
                try removeContents(of: sub)
                try Sys.unlink(dir, name, directory: true)
            } else {
                try Sys.unlink(dir, name)
            }
        }
    }
}
