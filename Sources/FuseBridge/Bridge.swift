import CFuse
import CLinux
import Glibc
import Synchronization
import UnionCore

/// The filesystem operations as the trace and statistics name them.
public enum Op: Int, CaseIterable, Sendable {
    case lookup, getattr, setattr, readlink, mknod, mkdir, symlink, unlink, rmdir, rename, link
    case open, create, read, write, fsync, opendir, readdir, readdirplus, fsyncdir, statfs
    case setxattr, getxattr, listxattr, removexattr, fallocate, lseek, copyFileRange

    public var name: String {
        switch self {
        case .copyFileRange: return "copy_file_range"
        default: return String(describing: self)
        }
    }

    public static func named(_ s: String) -> Op? { allCases.first { $0.name == s } }

    var changesNames: Bool { [.unlink, .rmdir, .rename].contains(self) }
}

/// What the bridge holds: the union, the kernel caching policy, and the observers.
public final class Bridge: Sendable {
    public let union: Union
    let entryTimeout: Double
    let attrTimeout: Double
    /// The cache time where edits to a lower layer may go unreported (an unwatched directory).
    let revalidateTimeout: Double
    public let tracer: Tracer?
    public let stats: Statistics?
    let log: DaemonLog
    /// `writeback=1`: ask the kernel for its writeback cache at INIT.
    let writebackWanted: Bool
    /// Whether the kernel granted it (set once, at INIT, before any open).
    let writebackCache = Atomic<Bool>(false)
    /// FUSE passthrough of file data (Passthrough.swift); inactive unless the kernel agreed at INIT.
    public let passthrough: Passthrough
    /// Reads up to this size are copied through a buffer; larger ones are spliced.
    static let spliceThreshold = 32 << 10
    /// Set at INIT when the kernel took KILLPRIV_V2 (3.16+ build): the daemon then clears set-id
    /// bits on daemon-served writes too (KillPriv.swift).
    let killPriv = Atomic<Bool>(false)
    /// Whether to offer the kernel POSIX ACLs (`noacl` turns them off).
    let posixACL: Bool
    /// Set at INIT when the kernel took FUSE_POSIX_ACL with FUSE_DONT_MASK: modes of new
    /// objects then arrive without the umask applied (see `Union.creationMode`).
    let umaskHere = Atomic<Bool>(false)

    public init(union: Union, timeout: Double, writeback: Bool = false, tracer: Tracer?, stats: Statistics?, log: DaemonLog,
                posixACL: Bool = true, passthrough: Passthrough.Request = .off) {
        self.union = union
        self.writebackWanted = writeback
        self.posixACL = posixACL && !union.config.noXattrs
        self.entryTimeout = timeout
        self.attrTimeout = timeout
        self.revalidateTimeout = min(timeout, LowerWatch.revalidateSeconds)
        self.tracer = tracer
        self.stats = stats
        self.log = log
        self.passthrough = Passthrough(request: passthrough, lowerFiles: union.isReadOnly)
    }

    /// Capabilities asked of the kernel at INIT.
    func negotiate(_ conn: UnsafeMutablePointer<fuse_conn_info>) {
        // Reads spliced from the layer's file straight into the kernel's pipe.
        suf_conn_want(conn, UInt32(FUSE_CAP_SPLICE_WRITE) | UInt32(FUSE_CAP_SPLICE_MOVE))
        // Attributes with every chunk of a listing, not only the first (the kernel's AUTO
        // heuristic): readers that take a whole directory before they stat any of it (fts:
        // find, tar, du, rsync) would otherwise pay one LOOKUP round trip for every entry past
        // the first chunk. A reader of names only pays the daemon's lookups instead, which
        // cost a fraction of a round trip (docs/performance.md, "readdirplus").
        suf_conn_want(conn, UInt32(FUSE_CAP_READDIRPLUS))
        suf_conn_unwant(conn, UInt32(FUSE_CAP_READDIRPLUS_AUTO))
        suf_conn_want(conn, UInt32(FUSE_CAP_ATOMIC_O_TRUNC))
        suf_conn_want(conn, UInt32(FUSE_CAP_PARALLEL_DIROPS))
        suf_conn_want(conn, UInt32(FUSE_CAP_CACHE_SYMLINKS))
        suf_conn_want(conn, UInt32(FUSE_CAP_ASYNC_READ))
        if writebackWanted {
            // Writes gather in the page cache; the kernel owns the size and mtime of regular
            // files from then on (docs/design.md, "Writeback cache"). See openFlags for its rules.
            suf_conn_want(conn, UInt32(FUSE_CAP_WRITEBACK_CACHE))
            let granted = conn.pointee.want & UInt32(FUSE_CAP_WRITEBACK_CACHE) != 0
            writebackCache.store(granted, ordering: .relaxed)
            if !granted { log.report("writeback=1: the kernel offers no writeback cache; writes go through") }
        }
        // POSIX ACLs checked and cached by the kernel (it asks getxattr once per inode, not
        // on every `ls -l` and access check): the union maps their ids (PosixACL). The kernel
        // then leaves the umask to the filesystem (DONT_MASK), because a directory's default
        // ACL replaces it; without DONT_MASK an inherited ACL's mask would be cut by the umask.
        // default_permissions, which POSIX_ACL implies, is on every mount already.
        let acl = UInt32(FUSE_CAP_POSIX_ACL) | UInt32(FUSE_CAP_DONT_MASK)
        if posixACL, conn.pointee.capable & acl == acl {
            conn.pointee.want |= acl
            umaskHere.store(true, ordering: .relaxed)
        }
        // SB_NOSEC on the superblock: a write no longer costs a getxattr("security.capability")
        // round trip; set-id bits are then ours to clear (KillPriv.swift).
        killPriv.store(suf_conn_killpriv_v2(conn) != 0, ordering: .relaxed)
        // Locks stay in the kernel: one host, one mount, the kernel's own lock tables are right.
        suf_conn_unwant(conn, UInt32(FUSE_CAP_FLOCK_LOCKS) | UInt32(FUSE_CAP_POSIX_LOCKS))
        passthrough.negotiate(conn, log: log)
    }

    /// The flags the daemon opens a file with, from the flags the kernel passed.
    /// Under the writeback cache:
    /// - O_WRONLY becomes O_RDWR: the kernel reads a page before a partial write into it,
    ///   with the handle of the file being written (libfuse's passthrough_hp does the same);
    /// - O_APPEND is dropped: the kernel places appends at its own end of file, and sends the
    ///   dirty pages with their offsets, which a pwrite on an O_APPEND descriptor would ignore
    ///   (Linux appends whatever the offset), writing them past the end.
    func openFlags(_ flags: Int32) -> Int32 {
        guard writebackCache.load(ordering: .relaxed) else { return flags }
        var f = flags & ~O_APPEND
        if f & O_ACCMODE == O_WRONLY { f = (f & ~O_ACCMODE) | O_RDWR }
        return f
    }

    /// Runs one request: the body replies on success; a thrown errno is replied here.
    /// Timing, statistics and the trace hook in at this single point.
    /// The body can only throw `Errno` (the core's typed throws prove it), so every
    /// failure reaches the kernel as the errno the layer gave.
    @inline(__always)
    func serve(_ req: fuse_req_t?, _ op: Op, _ ino: UInt64, name: Name? = nil,
               args: () -> String = { "" }, replyError: ((Errno) -> Bool)? = nil, _ body: () throws(Errno) -> Void) {
        let start = stats != nil || tracer != nil ? Clock.nanoseconds() : 0
        var result: Int32 = 0
        do {
            try body()
        } catch {
            result = error.rawValue
            if DaemonLog.isSerious(error) {
                log.report("\(op.name) \(Bytes.display(union.displayPath(ino, child: name))): \(error)")
            }
            if !(replyError?(error) ?? false) { fuse_reply_err(req, error.rawValue) }
        }
        guard start != 0 else { return }
        let elapsed = Clock.nanoseconds() - start
        stats?.record(op, result: result, nanos: elapsed)
        if let tracer, tracer.wants(op) {
            let path = union.displayPath(ino, child: name)
            guard tracer.wants(path: path) else { return }
            // A removed or moved name has no node left to ask: its change went to upper.
            let layer = union.servingLayer(ino, child: name) ?? (result == 0 && op.changesNames ? union.upper : nil)
            tracer.operation(op, path: path, args: args(), layer: layer.map { "\($0.label) \($0.displayPath)" } ?? "-",
                             result: result, micros: elapsed / 1000)
        }
    }

    /// The entry of node `id` in directory `parent`. Cached for the whole timeout where
    /// every lower edit to it is reported (and then invalidated), briefly where not.
    func entry(_ id: UInt64, _ st: stat, parent: UInt64) -> fuse_entry_param {
        let reported = union.lowerEditsReported(parent, id)
        var e = fuse_entry_param()
        e.ino = fuse_ino_t(id)
        e.generation = 1
        e.attr = st
        e.attr_timeout = reported ? attrTimeout : revalidateTimeout
        e.entry_timeout = reported ? entryTimeout : revalidateTimeout
        return e
    }

    /// A missing name, cached by the kernel as a negative entry: the kernel drops it when
    /// it creates the name through this mount, and a lower layer that gains the name
    /// reports it (or, in an unwatched directory, the entry expires soon).
    func replyNegative(_ req: fuse_req_t?, _ e: Errno, parent: UInt64) -> Bool {
        guard e.rawValue == ENOENT else { return false }
        var entry = fuse_entry_param()
        entry.entry_timeout = union.lowerEditsReported(parent) ? entryTimeout : revalidateTimeout
        fuse_reply_entry(req, &entry)
        return true
    }

    /// The mode a create, mkdir or mknod makes its object with: as the kernel sent it, or,
    /// when the kernel left the umask to us, with the umask unless a default ACL decides.
    func creationMode(_ parent: UInt64, _ mode: mode_t, _ caller: Caller) throws(Errno) -> mode_t {
        guard umaskHere.load(ordering: .relaxed) else { return mode }
        return try union.creationMode(parent, mode, umask: caller.umask)
    }

    func replyEntry(_ req: fuse_req_t?, _ id: UInt64, _ st: stat, parent: UInt64) {
        var e = entry(id, st, parent: parent)
        if fuse_reply_entry(req, &e) != 0 { union.forget(id, 1) }
    }

    func replyAttr(_ req: fuse_req_t?, _ st: stat, of id: UInt64) {
        var s = st
        fuse_reply_attr(req, &s, union.lowerEditsReported(attributesOf: id) ? attrTimeout : revalidateTimeout)
    }

    /// Fills one readdir(plus) reply from the handle's snapshot; offsets are indices + 1.
    func replyDirectory(_ req: fuse_req_t?, _ ino: UInt64, _ size: Int, _ offset: off_t,
                        _ fi: UnsafeMutablePointer<fuse_file_info>, plus: Bool) throws(Errno) {
        let dir = Unmanaged<MergedDirectory>.fromOpaque(UnsafeRawPointer(bitPattern: UInt(fi.pointee.fh))!).takeUnretainedValue()
        let epoch = plus ? union.lowerEditEpoch : 0
        let entries = try dir.entries(at: Int(offset)) { () throws(Errno) -> [DirectoryEntry] in try union.list(ino) }
        let buf = UnsafeMutablePointer<CChar>.allocate(capacity: size)
        defer { buf.deallocate() }
        var used = 0
        var index = Int(offset)
        while index < entries.count {
            let e = entries[index]
            let next = off_t(index + 1)
            let room = size - used
            var n: Int
            if plus {
                var param = fuse_entry_param()
                var looked: UInt64 = 0
                if e.name.isDotOrDotDot {
                    param.attr.st_ino = ino_t(e.ino)
                    param.attr.st_mode = mode_t(e.type) << 12
                } else {
                    do throws(Errno) {
                        let (node, st) = try union.lookupListed(ino, e)
                        param = entry(node.id, st, parent: ino)
                        looked = node.id
                    } catch where error.rawValue == ENOENT {
                        // Removed since the listing was taken.
                        index += 1
                        continue
                    } catch {
                        // Never drop an entry silently: answer what is filled so far, and the
                        // kernel's next read (from this entry) gets the error.
                        if used == 0 { throw error }
                        break
                    }
                }
                n = e.name.withCString { fuse_add_direntry_plus(req, buf + used, room, $0, &param, next) }
                if n > room {
                    if looked != 0 { union.forget(looked, 1) }
                    break
                }
            } else {
                var st = stat()
                st.st_ino = ino_t(e.ino)
                st.st_mode = mode_t(e.type) << 12
                n = e.name.withCString { fuse_add_direntry(req, buf + used, room, $0, &st, next) }
                if n > room { break }
            }
            used += n
            index += 1
        }
        fuse_reply_buf(req, buf, used)
        // Entries handed over while lower edits were being applied are invalidated again.
        if plus, union.lowerEditEpoch != epoch {
            union.repliedEntries(ino, entries[Int(offset)..<index].map(\.name).filter { !$0.isDotOrDotDot }, since: epoch)
        }
    }
}

public enum Clock {
    public static func nanoseconds() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }
}

extension Bridge {
    /// The backing id for an open of `ino` through `fd`, nil when the daemon serves it.
    /// Opens that write were copied up by `Union.open`: their file is the upper one.
    func attachBacking(_ req: fuse_req_t?, _ ino: UInt64, fd: Int32, flags: Int32) throws(Errno) -> Int32? {
        guard passthrough.isActive else { return nil }
        let writing = (flags & O_ACCMODE) != O_RDONLY || (flags & O_TRUNC) != 0
        let upper = writing || (union.servingLayer(ino)?.isUpper ?? false)
        let id = try passthrough.attach(req, ino, fd: fd, upper: upper, writing: writing, stats: stats)
        return id > 0 ? id : nil
    }
}
