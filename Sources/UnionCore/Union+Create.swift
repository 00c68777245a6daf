import Glibc

/// New names: create, mkdir, mknod, symlink, link. Each lands in upper, over a
/// whiteout when the name was deleted from a lower layer.
extension Union {
    /// What is in upper at a name the merged view shows as absent.
    struct Vacancy {
        var deviceWhiteout = false
        var ociWhiteout = false
        var hidesLower: Bool { deviceWhiteout || ociWhiteout }
    }

    /// Checks that `name` is free in `parent`, copies `parent` up, and tells what
    /// marker occupies the name in upper.
    func vacancy(_ parent: Node, _ name: Name) throws(Errno) -> Vacancy {
        guard parent.isDirectory else { throw Errno.notDirectory }
        guard name.count <= Int(NAME_MAX) else { throw Errno.nameTooLong }
        if Markers.isOCIMarkerName(name) { throw Errno.permission }
        let (upper, _, _) = try requireUpper()
        if try resolver.resolve(parent, name) != nil { throw Errno.exists }
        try copyUp(parent)
        return try resolver.withDirectory(parent, in: upper.index) { (dfd: Int32) throws(Errno) -> Vacancy in
            var v = Vacancy()
            if let st = try Sys.statIfPresent(dfd, name) {
                guard st.isWhiteoutDevice else { throw Errno.exists }
                v.deviceWhiteout = true
            }
            v.ociWhiteout = try Markers.hasOCIWhiteout(dir: dfd, name: name)
            return v
        }
    }

    /// Creates a new object at `name` in `parent`: directly in upper when the name is
    /// free there, else built in workdir and renamed over the whiteout in one step.
    /// `make` creates the object at (dir, name) with the permission bits it is given; the
    /// object gets the caller as owner and `mode`'s bits (07777) — on its inode, or in
    /// upper's owner xattr with the inode the daemon's (`OwnerXattr`).
    func createEntry(_ parentID: UInt64, _ name: Name, _ caller: Caller, type: mode_t, mode: mode_t,
                     make: (Int32, Name, mode_t) throws(Errno) -> Void) throws(Errno) -> (Node, stat) {
        namespace.begin()
        defer { namespace.end() }
        let parent = try node(parentID)
        let v = try vacancy(parent, name)
        let (upper, work, markers) = try requireUpper()
        let inXattr = upper.keepsOwnerInXattr(type)
        let st = try resolver.withDirectory(parent, in: upper.index) { (dfd: Int32) throws(Errno) -> stat in
            let parentStat = try upper.withOwnerXattr(try Sys.fstat(dfd), .fd(dfd))
            let (dir, entry) = v.deviceWhiteout ? (work.fd, work.tempName()) : (dfd, name)
            try make(dir, entry, inXattr ? OwnerXattr.inodeMode(mode, type: type) : mode & 0o7777)
            do throws(Errno) {
                // Made in workdir, the object missed its directory's default ACL: set what it inherits.
                if v.deviceWhiteout && !inXattr && type != S_IFLNK { try inheritACLs(from: dfd, to: dir, entry, type: type, mode: mode) }
                let (uid, gid) = presenter.storedOwner(caller, parent: parentStat)
                if inXattr {
                    // What the filesystem would have done: a directory in a set-group-id one is too.
                    let sgid: mode_t = type == S_IFDIR && parentStat.st_mode & S_ISGID != 0 ? S_ISGID : 0
                    try upper.writeOwnerXattr(.entry(dir, entry), OwnerXattr.Value(uid: uid, gid: gid, mode: mode | sgid))
                } else {
                    let made = try Sys.stat(dir, entry)
                    if made.st_uid != uid || made.st_gid != gid {
                        do throws(Errno) { try Sys.lchownAt(dir, entry, uid, gid) } catch where upper.ownerXattr != nil && Union.refusedOwner(error) {
                            // Owners kept in xattrs: the filesystem cannot take them, and this
                            // type cannot carry the xattr. It stays the daemon's, as under fuse-overlayfs.
                        }
                    }
                }
                // With redirect_dir=on the kernel also makes every new directory in a merged
                // parent opaque (ovl_create_upper): lookups below it never search the lowers.
                let merged = config.redirectDir.creates && nodes.layers(of: parent).contains { !layers[$0].isUpper }
                if type == S_IFDIR && (v.hidesLower || merged) {
                    try markers.markOpaque(dir, entry, path: displayPath(parentID, child: name))
                }
                if v.deviceWhiteout {
                    if type == S_IFDIR {
                        // A directory cannot be renamed over a device: swap, then drop the whiteout.
                        try Sys.rename(dir, entry, dfd, name, flags: Sys.renameExchange)
                        try Sys.unlink(dir, entry)
                    } else {
                        try Sys.rename(dir, entry, dfd, name)
                    }
                }
            } catch {
                try? Sys.unlink(dir, entry, directory: type == S_IFDIR)
                throw error
            }
            if v.ociWhiteout { try markers.clearOCIWhiteout(dfd, name) }
            return try upper.withOwnerXattr(try Sys.stat(dfd, name), .entry(dfd, name))
        }
        let n = nodes.remember(parent: parent, name: name, type: st.fileType, placement: .only(upper.index)) {
            presenter.mapIno(UInt64(st.st_ino), layer: upper.index)
        }
        return (n, present(n, st))
    }

    public func create(_ parentID: UInt64, _ name: Name, mode: mode_t, flags: Int32, caller: Caller) throws(Errno) -> (Node, stat, Int32) {
        namespace.begin()
        defer { namespace.end() }
        var fd: Int32 = -1
        let accmode = flags & O_ACCMODE
        let openFlags = (flags & ~(O_CREAT | O_EXCL | O_TRUNC | O_DIRECT | O_ACCMODE)) | (accmode == O_RDONLY ? O_RDWR : accmode)
        do throws(Errno) {
            let (n, st) = try createEntry(parentID, name, caller, type: S_IFREG, mode: mode) { (dir: Int32, entry: Name, m: mode_t) throws(Errno) in
                fd = try Sys.openAt(dir, entry, openFlags | O_CREAT | O_EXCL, mode: m)
            }
            nodes.locked { n.openCount += 1 }
            return (n, st, fd)
        } catch {
            if fd >= 0 { Sys.close(fd) }
            throw error
        }
    }

    public func mkdir(_ parentID: UInt64, _ name: Name, mode: mode_t, caller: Caller) throws(Errno) -> (Node, stat) {
        try createEntry(parentID, name, caller, type: S_IFDIR, mode: mode) { (dir: Int32, entry: Name, m: mode_t) throws(Errno) in
            try Sys.mkdir(dir, entry, m)
        }
    }

    public func mknod(_ parentID: UInt64, _ name: Name, mode: mode_t, rdev: dev_t, caller: Caller) throws(Errno) -> (Node, stat) {
        // A 0/0 device is a whiteout on disk: the kernel's overlay refuses to make one, so do we.
        if mode & S_IFMT == S_IFCHR && rdev == 0 { throw Errno.permission }
        return try createEntry(parentID, name, caller, type: mode & S_IFMT, mode: mode) { (dir: Int32, entry: Name, m: mode_t) throws(Errno) in
            try Sys.mknod(dir, entry, (mode & S_IFMT) | m, rdev)
        }
    }

    public func symlink(_ parentID: UInt64, _ name: Name, target: [UInt8], caller: Caller) throws(Errno) -> (Node, stat) {
        try createEntry(parentID, name, caller, type: S_IFLNK, mode: 0o777) { (dir: Int32, entry: Name, _: mode_t) throws(Errno) in
            try Sys.symlink(target, dir, entry)
        }
    }

    public func link(_ id: UInt64, _ newParentID: UInt64, _ newName: Name) throws(Errno) -> (Node, stat) {
        namespace.begin()
        defer { namespace.end() }
        let src = try node(id)
        guard !src.isDirectory else { throw Errno.permission }
        let (upper, work, markers) = try requireUpper()
        try copyUpMetadata(src)
        // Two names of a metacopy file must both find its data: an absolute redirect (the
        // kernel's ovl_set_link_redirect).
        try setLinkRedirect(src)
        let newParent = try node(newParentID)
        let v = try vacancy(newParent, newName)
        let (srcParent, srcName) = nodes.locked { (src.parent, src.name) }
        guard let srcParent else { throw Errno.noEntry }
        var st = stat()
        // An indexed file's count is kept relative to upper's, which the link changes with it.
        try withIndexLock { () throws(Errno) in
            st = try resolver.withDirectory(srcParent, in: upper.index) { (sdir: Int32) throws(Errno) -> stat in
                try resolver.withDirectory(newParent, in: upper.index) { (ddir: Int32) throws(Errno) -> stat in
                    _ = try indexedLinks(sdir, srcName)
                    if v.deviceWhiteout {
                        let tmp = work.tempName()
                        try Sys.link(sdir, srcName, work.fd, tmp)
                        do throws(Errno) { try Sys.rename(work.fd, tmp, ddir, newName) } catch { try? Sys.unlink(work.fd, tmp); throw error }
                    } else {
                        try Sys.link(sdir, srcName, ddir, newName)
                    }
                    if v.ociWhiteout { try markers.clearOCIWhiteout(ddir, newName) }
                    return try upper.withOwnerXattr(try Sys.stat(ddir, newName), .entry(ddir, newName))
                }
            }
        }
        nodes.addAlias(src, parent: newParent, name: newName, key: InodeKey(device: UInt64(st.st_dev), inode: UInt64(st.st_ino)))
        return (src, present(src, st))
    }
}
