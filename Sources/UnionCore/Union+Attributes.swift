import Glibc

/// setattr: chown, chmod, truncate, utimes — after a copy-up (without data when
/// truncating to zero).
extension Union {
    public func setattr(_ id: UInt64, _ change: AttributeChange, fd: Int32?) throws(Errno) -> stat {
        namespace.begin()
        defer { namespace.end() }
        let n = try node(id)
        let (upper, _, _) = try requireUpper()
        if change.uid != nil || change.gid != nil || change.mode != nil {
            // The kernel lets namespace root chown a file whose owner it cannot map (FUSE
            // reports it as unmapped); the overlay answers EPERM, and so do we.
            let st = try topStat(n)
            if userNamespace.isUnmapped(uid: st.st_uid) || userNamespace.isUnmapped(gid: st.st_gid) {
                throw Errno.permission
            }
        }
        if change.size == nil { try copyUpMetadata(n) } else { try copyUp(n, withData: change.size != 0) }
        var uid: uid_t = UInt32.max, gid: gid_t = UInt32.max
        if let u = change.uid { guard let h = config.uidMap.toHost(u) else { throw Errno.invalid }; uid = h }
        if let g = change.gid { guard let h = config.gidMap.toHost(g) else { throw Errno.invalid }; gid = h }
        // Owner and mode kept in upper's xattr: one write of the new value, the inode untouched.
        var ownerChange = change
        if (change.uid != nil || change.gid != nil || change.mode != nil), upper.keepsOwnerInXattr(n.type) {
            let now = try topStat(n)
            let v = OwnerXattr.Value(uid: change.uid == nil ? now.st_uid : uid, gid: change.gid == nil ? now.st_gid : gid,
                                     mode: change.mode ?? now.st_mode)
            try withXattrs(n) { (t: Sys.XattrTarget) throws(Errno) in try upper.writeOwnerXattr(t, v) }
            (ownerChange.uid, ownerChange.gid, ownerChange.mode) = (nil, nil, nil)
        }
        let change = ownerChange
        if let orphan = orphan(n) {
            try setattrOrphan(orphan, change, uid, gid, fd)
            return try getattr(id, fd: fd)
        }
        try resolver.withEntry(n) { (dir: Int32, name: Name) throws(Errno) in
            if change.uid != nil || change.gid != nil { try Sys.lchownAt(dir, name, uid, gid) }
            if let mode = change.mode { try Sys.chmodAt(dir, name, mode & 0o7777) }
            if let size = change.size {
                if let fd { try Sys.truncate(fd, size) } else {
                    let f = try Sys.openAt(dir, name, O_WRONLY)
                    defer { Sys.close(f) }
                    try Sys.truncate(f, size)
                }
            }
            if change.atime != nil || change.mtime != nil {
                try Sys.utimensAt(dir, name, (change.atime.spec, change.mtime.spec))
            }
        }
        return try getattr(id, fd: fd)
    }

    /// setattr on a file whose name is gone: through its kept descriptor.
    private func setattrOrphan(_ orphan: Int32, _ change: AttributeChange, _ uid: uid_t, _ gid: gid_t, _ fd: Int32?) throws(Errno) {
        if change.uid != nil || change.gid != nil { try Sys.chownProc(orphan, uid, gid) }
        if let mode = change.mode { try Sys.chmodProc(orphan, mode & 0o7777) }
        if let size = change.size {
            let f: Int32
            if let fd { f = fd } else { f = try Sys.openProc(orphan, O_WRONLY) }
            defer { if fd == nil { Sys.close(f) } }
            try Sys.truncate(f, size)
        }
        if change.atime != nil || change.mtime != nil {
            try Sys.utimensProc(orphan, (change.atime.spec, change.mtime.spec))
        }
    }
}

extension Optional where Wrapped == AttributeChange.Time {
    /// The timespec utimensat takes: unchanged, now, or a given time.
    var spec: timespec {
        switch self {
        case nil: return timespec(tv_sec: 0, tv_nsec: Int(UTIME_OMIT))
        case .now: return timespec(tv_sec: 0, tv_nsec: Int(UTIME_NOW))
        case .at(let ts): return ts
        }
    }
}
