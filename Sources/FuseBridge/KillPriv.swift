import CFuse
import Glibc
import UnionCore

/// Clearing set-id bits the way the VFS does (fs/attr.c: setattr_should_drop_suidgid,
/// setattr_should_drop_sgid; fs/open.c: chown_common), for the cases where the kernel leaves
/// it to the daemon.
///
/// The daemon writes, truncates and chowns the real files as root, and the layer's filesystem
/// judges set-id bits by the daemon's credentials: root keeps them (CAP_FSETID). So wherever
/// the caller's credentials decide, the daemon decides, with the caller's:
/// - SETATTR with nothing to set: the kernel's `file_remove_privs` before a write (any mode,
///   passthrough included). With KILLPRIV_V2 (and for setgid without group-exec, always) the
///   FUSE kernel drops the mode it computed and sends just this;
/// - truncate (FATTR_KILL_SUIDGID, which libfuse 3.17 passes as FUSE_SET_ATTR_KILL_SUID, only
///   says the caller lacks CAP_FSETID; the setgid rule also needs its groups);
/// - open with O_TRUNC: the kernel truncates through OPEN (atomic_o_trunc) and sends no
///   SETATTR; FUSE_OPEN_KILL_SUIDGID never reaches fuse_file_info;
/// - chown: the FUSE kernel sends no mode under KILLPRIV_V2, and even without it, it keeps
///   setgid-without-group-exec, which the VFS clears for a caller outside the file's group;
/// - a daemon-served write under KILLPRIV_V2 (FUSE_WRITE_KILL_SUIDGID is not passed to the
///   write callback either): checked again, in case a write comes without the SETATTR.
/// security.capability needs nothing: the layer's filesystem removes it on every write and
/// truncate whoever writes (cap_inode_need_killpriv), and the kernel's own removexattr for it
/// comes through the mount.
enum SetID {
    /// The bits a write or truncate by `caller` takes from a file of `st` (setattr_should_drop_suidgid).
    static func droppedByWrite(_ st: stat, _ caller: () -> Credentials) -> mode_t {
        guard st.st_mode & S_IFMT == S_IFREG, st.st_mode & (S_ISUID | S_ISGID) != 0 else { return 0 }
        let c = caller()
        guard !c.canKeepSetID else { return 0 }
        return (st.st_mode & S_ISUID) | droppedSetGID(st, c)
    }

    /// The bits a chown by `caller` takes from a non-directory: setuid always, even for root.
    static func droppedByChown(_ st: stat, _ caller: () -> Credentials) -> mode_t {
        guard st.st_mode & S_IFMT != S_IFDIR, st.st_mode & (S_ISUID | S_ISGID) != 0 else { return 0 }
        return (st.st_mode & S_ISUID) | (st.st_mode & S_ISGID != 0 ? droppedSetGID(st, caller()) : 0)
    }

    /// setattr_should_drop_sgid: group-executable, or a caller outside the file's group.
    private static func droppedSetGID(_ st: stat, _ c: Credentials) -> mode_t {
        guard st.st_mode & S_ISGID != 0 else { return 0 }
        if st.st_mode & S_IXGRP != 0 { return S_ISGID }
        return c.inGroup(st.st_gid) || c.canKeepSetID ? 0 : S_ISGID
    }
}

/// What the VFS asks of the caller of a request: CAP_FSETID in the initial user namespace
/// (`capable()`), and its groups, from /proc (`ProcessCredentials`); whatever cannot be read
/// counts as unprivileged, so that a set-id bit is cleared rather than kept.
struct Credentials {
    var fsgid: gid_t
    var groups: [gid_t] = []
    var canKeepSetID = false

    func inGroup(_ gid: gid_t) -> Bool { gid == fsgid || groups.contains(gid) }

    static let capFSetID: UInt64 = 1 << 4

    static func of(_ req: fuse_req_t?) -> Credentials {
        let ctx = fuse_req_ctx(req)!.pointee
        var c = Credentials(fsgid: ctx.gid)
        guard let p = ProcessCredentials.of(tid: ctx.pid) else { return c }
        c.groups = p.groups
        c.canKeepSetID = p.effectiveCapabilities & capFSetID != 0 && p.inInitialUserNamespace
        return c
    }
}

extension Bridge {
    /// The mode a setattr of `ino` must set so that the set-id bits go where the VFS would take
    /// them; nil when nothing goes (the common case costs one getattr, and only on the kinds of
    /// setattr that may clear bits).
    func setIDMode(_ req: fuse_req_t?, _ ino: UInt64, _ toSet: Int32, _ change: AttributeChange, fd: Int32?) throws(Errno) -> mode_t? {
        let chown = change.uid != nil || change.gid != nil
        let removePrivs = toSet == 0
        guard chown || change.size != nil || removePrivs else { return nil }
        let st = try union.getattr(ino, fd: fd)
        let caller = { Credentials.of(req) }
        let dropped = chown ? SetID.droppedByChown(st, caller) : SetID.droppedByWrite(st, caller)
        guard dropped != 0 else { return nil }
        return (change.mode ?? st.st_mode) & 0o7777 & ~dropped
    }

    /// After an open with O_TRUNC, or before a daemon-served write: clears what a write by the
    /// caller clears.
    func dropSetIDForWrite(_ req: fuse_req_t?, _ ino: UInt64, fd: Int32) throws(Errno) {
        let st = try union.getattr(ino, fd: fd)
        let dropped = SetID.droppedByWrite(st, { Credentials.of(req) })
        guard dropped != 0 else { return }
        var c = AttributeChange()
        c.mode = st.st_mode & 0o7777 & ~dropped
        _ = try union.setattr(ino, c, fd: fd)
    }
}
