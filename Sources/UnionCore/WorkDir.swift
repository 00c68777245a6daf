import CFuse
import Glibc
import Synchronization

/// `workdir/work`: the staging area where copy-ups and replacements are built
/// before one rename makes them visible, so a crash leaves the old view or the new.
///
/// The directory name is the kernel's, so the kernel and swiftunionfs can take
/// turns on the same upper and workdir.
final class WorkDir: @unchecked Sendable {
    let fd: Int32
    /// The workdir itself, held with an exclusive lock while mounted.
    private let lockFD: Int32
    private let upperLockFD: Int32
    private let counter = Atomic<UInt64>(0)

    /// Takes `opened`, the workdir opened for reading from the upper layer's mount (see
    /// PrivateMount: staged objects are renamed into upper, which needs one mount).
    init(opened: Int32, upper: Layer) throws(Errno) {
        // Both upper and workdir are held exclusively, as the kernel marks them in use.
        let upperLock: Int32
        do {
            upperLock = try Self.lock(try Sys.openBeneath(upper.rootFD, ".", O_RDONLY | O_DIRECTORY))
        } catch {
            Sys.close(opened)
            throw error
        }
        let top: Int32
        do {
            top = try Self.lock(opened)
        } catch {
            Sys.close(upperLock)
            throw error
        }
        self.upperLockFD = upperLock
        lockFD = top
        do {
            if try Sys.statIfPresent(top, "work") == nil { try Sys.mkdir(top, "work", 0o700) }
            fd = try Sys.openBeneath(top, "work", O_PATH | O_DIRECTORY)
        } catch {
            Sys.close(top)
            throw error
        }
        // The kernel's volatile mounts leave work/incompat/volatile: the upper may have lost
        // writes in a crash and must not be reused. Refuse as the kernel does.
        if (try? Sys.openBeneath(fd, "incompat/volatile", O_PATH)).map({ Sys.close($0) }) != nil {
            throw Errno.invalid
        }
        try? Self.removeContents(of: fd)
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
        while suf_flock(fd, LOCK_EX | LOCK_NB) != 0 {
            guard waited < 2000 else {
                Sys.close(fd)
                throw Errno.busy
            }
            usleep(20_000)
            waited += 20
        }
        return fd
    }

    /// A fresh name for a staged object; unique within this mount, and leftovers of
    /// earlier mounts are removed at start, so no collision is possible.
    func tempName() -> String {
        "#suf.\(getpid()).\(counter.wrappingAdd(1, ordering: .relaxed).newValue)"
    }

    /// Which marker format the upper filesystem accepts: a 0/0 device needs
    /// CAP_MKNOD (or a user namespace on Linux 5.8+), trusted.* xattrs need
    /// CAP_SYS_ADMIN in the initial namespace.
    func detectFormat() throws(Errno) -> MarkerFormat {
        var format = MarkerFormat()
        let probe = tempName()
        if (try? Sys.mknod(fd, probe, S_IFCHR | 0o000, 0)) != nil {
            try? Sys.unlink(fd, probe)
        } else {
            format.whiteout = .ociFile
        }
        if (try? Sys.mkdir(fd, probe, 0o700)) != nil {
            defer { try? Sys.unlink(fd, probe, directory: true) }
            if let d = try? Sys.openAt(fd, probe, O_PATH | O_DIRECTORY) {
                defer { Sys.close(d) }
                if (try? Sys.setxattr(d, "trusted.overlay.suf-probe", Array("y".utf8))) == nil {
                    format.xattrNamespace = "user"
                    // Without any xattrs an opaque directory cannot be written: refuse the upper.
                    if (try? Sys.setxattr(d, "user.overlay.suf-probe", Array("y".utf8))) == nil {
                        throw Errno.notSupported
                    }
                }
            }
        }
        return format
    }

    /// Removes everything below `dir`, never following a symlink.
    static func removeContents(of dir: Int32) throws(Errno) {
        guard let list = try? Sys.openBeneath(dir, ".", O_RDONLY | O_DIRECTORY) else { return }
        var names: [(String, Bool)] = []
        try Sys.readDirectory(list) { name, type, _ in names.append((name, type == UInt8(DT_DIR))) }
        for (name, isDir) in names {
            if isDir {
                // The kernel leaves some work dirs mode 000: make them removable.
                try? Sys.chmodAt(dir, name, 0o700)
                if let sub = try? Sys.openAt(dir, name, O_PATH | O_DIRECTORY) {
                    try? removeContents(of: sub)
                    Sys.close(sub)
                }
                try Sys.unlink(dir, name, directory: true)
            } else {
                try Sys.unlink(dir, name)
            }
        }
    }
}
