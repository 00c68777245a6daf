import CFuse
import Glibc
import Synchronization
import UnionCore

/// FUSE passthrough (libfuse 3.16+, Linux 6.9+, CAP_SYS_ADMIN): an open file is bound to a
/// backing file, the real file in its layer, and the kernel reads, writes and maps that file
/// itself; those requests never reach the daemon.
///
/// The kernel's rules shape everything here (fs/fuse/iomode.c):
/// - one backing file per FUSE inode: while any file of the inode is open in passthrough mode,
///   every new open must be passthrough too, to the same backing inode (else the open fails EIO);
/// - an inode with files open in cached mode (the daemon serves the data) refuses passthrough opens.
///
/// A union inode changes backing file when it is copied up, and overlay semantics keep a file
/// opened read-only before the copy-up reading the lower data. Passthrough to a lower file would
/// therefore make the writable open that copies the file up impossible (its upper file is a second
/// backing inode). So, on a writable union, only files already in the upper layer are served by
/// passthrough (all their opens: created files, copied-up files); lower files stay daemon-served
/// (cached mode) until copied up. A read-only union (no upperdir) never copies up, and passes
/// through every file.
///
/// Per node the mode of its open files is tracked, so that a node never mixes the two modes; a
/// node switches mode only when its last open file is released.
public final class Passthrough: Sendable {
    public enum Request: String, Sendable, CaseIterable { case auto, on, off }

    /// Whether this binary has the libfuse calls (3.16+), and which libfuse it was built with.
    public static var built: Bool { suf_passthrough_built() != 0 }
    public static var libfuseVersion: String { let v = suf_fuse_version(); return "\(v / 100).\(v % 100)" }

    struct Backing { var id: Int32; var dev: UInt64; var ino: UInt64; var opens: Int }
    enum Mode { case cached(Int), passthrough(Backing) }

    let request: Request
    /// Lower files too (a read-only union: nothing is ever copied up).
    let lowerFiles: Bool
    /// Set at INIT when the kernel agreed.
    private let active = Atomic<Bool>(false)
    private let modes = Mutex<[UInt64: Mode]>([:])

    init(request: Request, lowerFiles: Bool) {
        self.request = request
        self.lowerFiles = lowerFiles
    }

    public var isActive: Bool { active.load(ordering: .relaxed) }

    /// At INIT: asks the kernel for passthrough unless off, not built, or not root.
    func negotiate(_ conn: UnsafeMutablePointer<fuse_conn_info>, log: DaemonLog) {
        guard request != .off, Passthrough.built, geteuid() == 0 else { return }
        if suf_conn_passthrough(conn) != 0 {
            active.store(true, ordering: .relaxed)
        } else if request == .on {
            log.report("passthrough=on: the kernel does not offer FUSE passthrough (Linux 6.9+ with CONFIG_FUSE_PASSTHROUGH); file data is served by the daemon")
        }
    }

    /// The backing id to reply an open of node `ino` with (0: daemon-served), after the union
    /// opened `fd`; `upper` says whether that file is in the upper layer. Throws EBUSY for the
    /// one case the kernel cannot serve: a writable open of a node whose open files are bound
    /// to another backing file (a race with a copy-up; see above).
    func attach(_ req: fuse_req_t?, _ ino: UInt64, fd: Int32, upper: Bool, writing: Bool, stats: Statistics?) throws(Errno) -> Int32 {
        guard isActive else { return 0 }
        let eligible = upper || lowerFiles
        return try modes.withLock { (m: inout [UInt64: Mode]) throws(Errno) -> Int32 in
            switch m[ino] {
            case .cached(let n)?:
                m[ino] = .cached(n + 1)
                return 0
            case .passthrough(var b)?:
                if !writing || identity(fd).map({ $0 == (b.dev, b.ino) }) ?? false {
                    // Same backing file; or a read-only open of a node whose files are bound to
                    // the file it had when first opened (the kernel allows no other answer).
                    b.opens += 1
                    m[ino] = .passthrough(b)
                    stats?.addPassthroughOpen(registered: false)
                    return b.id
                }
                throw Errno(EBUSY)
            case nil:
                guard eligible, let (dev, ino2) = identity(fd) else {
                    m[ino] = .cached(1)
                    return 0
                }
                let id = suf_passthrough_open(req, fd)
                guard id > 0 else {
                    // A layer on a stacked filesystem, or out of backing ids: served by the daemon.
                    m[ino] = .cached(1)
                    return 0
                }
                m[ino] = .passthrough(Backing(id: id, dev: dev, ino: ino2, opens: 1))
                stats?.addPassthroughOpen(registered: true)
                return id
            }
        }
    }

    /// One open file of `ino` is gone (released, or its open reply failed).
    func detach(_ req: fuse_req_t?, _ ino: UInt64) {
        guard isActive else { return }
        let close: Int32 = modes.withLock { m in
            switch m[ino] {
            case .cached(let n)?:
                m[ino] = n > 1 ? .cached(n - 1) : nil
            case .passthrough(var b)?:
                b.opens -= 1
                if b.opens > 0 { m[ino] = .passthrough(b) } else { m[ino] = nil; return b.id }
            case nil:
                break
            }
            return 0
        }
        if close > 0 { _ = suf_passthrough_close(req, close) }
    }

    private func identity(_ fd: Int32) -> (UInt64, UInt64)? {
        guard let st = try? Sys.fstat(fd) else { return nil }
        return (UInt64(st.st_dev), UInt64(st.st_ino))
    }
}
