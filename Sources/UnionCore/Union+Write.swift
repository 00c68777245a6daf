import CFuse
import Glibc

/// The write side: every change lands in upper, in the kernel's on-disk format.
extension Union {
    func requireUpper() throws(Errno) -> (Layer, WorkDir) {
        guard let upper, let work else { throw Errno.readOnly }
        return (upper, work)
    }

    /// Whether any lower layer under `parent` shows `name`: if so, removing it from
    /// upper must leave a whiteout, and a directory made there must be opaque.
    func lowerShows(_ parent: Node, _ name: String) throws -> Bool {
        guard let upper else { return false }
        let below = nodes.layers(of: parent).filter { $0 != upper.index }
        return try resolve(parent, name, layers: below) != nil
    }

    /// What is in upper at a name the merged view shows as absent.
    struct Vacancy {
        var deviceWhiteout = false
        var ociWhiteout = false
        var hidesLower: Bool { deviceWhiteout || ociWhiteout }
    }

    /// Checks that `name` is free in `parent`, copies `parent` up, and tells what
    /// marker occupies the name in upper.
    func vacancy(_ parent: Node, _ name: String) throws -> Vacancy {
        guard parent.isDirectory else { throw Errno.notDirectory }
        guard name.utf8.count <= Int(NAME_MAX) else { throw Errno.nameTooLong }
        if Markers.isOCIMarkerName(name) { throw Errno.permission }
        let (upper, _) = try requireUpper()
        if try resolve(parent, name) != nil { throw Errno.exists }
        try copyUp(parent)
        return try withDirectory(parent, in: upper.index) { dfd in
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
    /// `make` creates the object at (dir, name); the object gets the caller as owner.
    func createEntry(_ parentID: UInt64, _ name: String, _ caller: Caller, type: mode_t,
                     make: (Int32, String) throws -> Void) throws -> (Node, stat) {
        let parent = try node(parentID)
        let v = try vacancy(parent, name)
        let (upper, work) = try requireUpper()
        let st: stat = try withDirectory(parent, in: upper.index) { dfd in
            let parentStat = try Sys.fstat(dfd)
            let (dir, entry) = v.deviceWhiteout ? (work.fd, work.tempName()) : (dfd, name)
            try make(dir, entry)
            do {
                try own(dir, entry, caller, parentStat)
                if type == S_IFDIR && v.hidesLower { try markOpaque(dir, entry, path: displayPath(parentID, child: name)) }
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
            if v.ociWhiteout { try Sys.unlink(dfd, Markers.ociWhiteoutPrefix + name) }
            return try Sys.stat(dfd, name)
        }
        let layers = [upper.index]
        let n = nodes.remember(parent: parent, name: name, type: st.fileType, layers: layers) {
            mapIno(UInt64(st.st_ino), layer: upper.index)
        }
        return (n, present(n, st))
    }

    /// Gives a new object the caller's ids (mapped to the layer's), honouring a
    /// set-group-id parent as the filesystem would.
    private func own(_ dir: Int32, _ name: String, _ caller: Caller, _ parent: stat) throws {
        // A caller outside the mapping creates files owned by the overflow id, as fuse-overlayfs does.
        let uid = config.uidMap.toHost(caller.uid) ?? IDMap.overflow
        let callerGid = config.gidMap.toHost(caller.gid) ?? IDMap.overflow
        let gid = parent.st_mode & S_ISGID != 0 ? parent.st_gid : callerGid
        let st = try Sys.stat(dir, name)
        if st.st_uid != uid || st.st_gid != gid { try Sys.lchownAt(dir, name, uid, gid) }
    }

    func markOpaque(_ dir: Int32, _ name: String, path: String) throws {
        let fd = try Sys.openAt(dir, name, O_PATH | O_DIRECTORY)
        defer { Sys.close(fd) }
        try Sys.setxattr(fd, format.opaqueXattr, Array("y".utf8))
        if events.isEnabled { events.record(.opaque(path: path, xattr: format.opaqueXattr)) }
    }

    /// Writes a whiteout for `name` in upper directory `dir`, in the mount's format.
    func writeWhiteout(_ dir: Int32, _ name: String, path: String) throws {
        switch format.whiteout {
        case .device:
            try Sys.mknod(dir, name, S_IFCHR, 0)
        case .ociFile:
            let fd = try Sys.openAt(dir, Markers.ociWhiteoutPrefix + name, O_WRONLY | O_CREAT | O_TRUNC, mode: 0)
            Sys.close(fd)
        }
        if events.isEnabled { events.record(.whiteout(path: path, format: format.whiteout.rawValue)) }
    }

    /// Moves the upper object at `name` out of the way into workdir, leaving a whiteout
    /// behind when a lower layer would otherwise show through. Returns its name in workdir.
    func evict(_ dir: Int32, _ name: String, leaveWhiteout: Bool, path: String) throws -> String {
        let (_, work) = try requireUpper()
        let tmp = work.tempName()
        // RENAME_WHITEOUT swaps in the whiteout atomically; where it is refused, rename then mknod.
        if leaveWhiteout && format.whiteout == .device,
           (try? Sys.rename(dir, name, work.fd, tmp, flags: Sys.renameWhiteout)) != nil {
            if events.isEnabled { events.record(.whiteout(path: path, format: "device")) }
            return tmp
        }
        try Sys.rename(dir, name, work.fd, tmp)
        if leaveWhiteout { try writeWhiteout(dir, name, path: path) }
        return tmp
    }

    // MARK: operations

    public func create(_ parentID: UInt64, _ name: String, mode: mode_t, flags: Int32, caller: Caller) throws -> (Node, stat, Int32) {
        var fd: Int32 = -1
        let accmode = flags & O_ACCMODE
        let openFlags = (flags & ~(O_CREAT | O_EXCL | O_TRUNC | O_DIRECT | O_ACCMODE)) | (accmode == O_RDONLY ? O_RDWR : accmode)
        do {
            let (n, st) = try createEntry(parentID, name, caller, type: S_IFREG) { dir, entry in
                fd = try Sys.openAt(dir, entry, openFlags | O_CREAT | O_EXCL, mode: mode & 0o7777)
            }
            nodes.locked { n.openCount += 1 }
            return (n, st, fd)
        } catch {
            if fd >= 0 { Sys.close(fd) }
            throw error
        }
    }

    public func mkdir(_ parentID: UInt64, _ name: String, mode: mode_t, caller: Caller) throws -> (Node, stat) {
        try createEntry(parentID, name, caller, type: S_IFDIR) { try Sys.mkdir($0, $1, mode & 0o7777) }
    }

    public func mknod(_ parentID: UInt64, _ name: String, mode: mode_t, rdev: dev_t, caller: Caller) throws -> (Node, stat) {
        // A 0/0 device is a whiteout on disk: the kernel's overlay refuses to make one, so do we.
        if mode & S_IFMT == S_IFCHR && rdev == 0 { throw Errno.permission }
        return try createEntry(parentID, name, caller, type: mode & S_IFMT) { try Sys.mknod($0, $1, mode, rdev) }
    }

    public func symlink(_ parentID: UInt64, _ name: String, target: String, caller: Caller) throws -> (Node, stat) {
        try createEntry(parentID, name, caller, type: S_IFLNK) { try Sys.symlink(target, $0, $1) }
    }

    public func link(_ id: UInt64, _ newParentID: UInt64, _ newName: String) throws -> (Node, stat) {
        let src = try node(id)
        guard !src.isDirectory else { throw Errno.permission }
        let (upper, work) = try requireUpper()
        try copyUp(src)
        let newParent = try node(newParentID)
        let v = try vacancy(newParent, newName)
        let (srcParent, srcName) = nodes.locked { (src.parent, src.name) }
        guard let srcParent else { throw Errno.noEntry }
        let st: stat = try withDirectory(srcParent, in: upper.index) { sdir in
            try withDirectory(newParent, in: upper.index) { ddir in
                if v.deviceWhiteout {
                    let tmp = work.tempName()
                    try Sys.link(sdir, srcName, work.fd, tmp)
                    do { try Sys.rename(work.fd, tmp, ddir, newName) } catch { try? Sys.unlink(work.fd, tmp); throw error }
                } else {
                    try Sys.link(sdir, srcName, ddir, newName)
                }
                if v.ociWhiteout { try Sys.unlink(ddir, Markers.ociWhiteoutPrefix + newName) }
                return try Sys.stat(ddir, newName)
            }
        }
        nodes.addAlias(src, parent: newParent, name: newName, key: InodeKey(device: UInt64(st.st_dev), inode: UInt64(st.st_ino)))
        return (src, present(src, st))
    }

    public func unlink(_ parentID: UInt64, _ name: String) throws {
        try remove(parentID, name, directory: false)
    }

    public func rmdir(_ parentID: UInt64, _ name: String) throws {
        try remove(parentID, name, directory: true)
    }

    private func remove(_ parentID: UInt64, _ name: String, directory: Bool) throws {
        let parent = try node(parentID)
        let (upper, work) = try requireUpper()
        guard let r = try resolve(parent, name) else { throw Errno.noEntry }
        if directory {
            guard r.type == S_IFDIR else { throw Errno.notDirectory }
            if try listing(stack: r.layers, open: { openForListing(parent, name, in: $0) }).count > 0 { throw Errno.notEmpty }
        } else if r.type == S_IFDIR {
            throw Errno.isDirectory
        }
        try copyUp(parent)
        let whiteout = try lowerShows(parent, name)
        let path = displayPath(parentID, child: name)
        if !directory { keepIfOpen(parent, name) }
        try withDirectory(parent, in: upper.index) { dfd in
            if r.layers[0] == upper.index {
                let tmp = try evict(dfd, name, leaveWhiteout: whiteout, path: path)
                if directory {
                    // What is left inside is only markers: the merged view was empty.
                    if let sub = try? Sys.openAt(work.fd, tmp, O_PATH | O_DIRECTORY) {
                        try? WorkDir.removeContents(of: sub)
                        Sys.close(sub)
                    }
                }
                try Sys.unlink(work.fd, tmp, directory: directory)
            } else {
                try writeWhiteout(dfd, name, path: path)
            }
        }
        nodes.detach(parent, name)
    }

    /// The merged entries of a directory over `stack`; `open` gives the directory's
    /// readable descriptor in a layer, or nil where that layer lacks it.
    func listing(stack: [Int], open: (Int) -> Int32?) throws -> MergedListing {
        var listing = MergedListing()
        for li in stack {
            guard let fd = open(li) else { continue }
            let statFD = dup(fd)
            defer { if statFD >= 0 { Sys.close(statFD) } }
            var raw: [(name: String, type: UInt8, ino: UInt64)] = []
            try Sys.readDirectory(fd) { raw.append(($0, $1, $2)) }
            for i in raw.indices where raw[i].type == UInt8(DT_UNKNOWN) {
                if let st = try? Sys.stat(statFD, raw[i].name) { raw[i].type = UInt8(st.fileType >> 12) }
            }
            listing.add(layer: li, isUpper: layers[li].isUpper, entries: raw) { name in
                (try? Sys.stat(statFD, name))?.isWhiteoutDevice ?? false
            }
        }
        return listing
    }

    public func rename(_ parentID: UInt64, _ name: String, _ newParentID: UInt64, _ newName: String, flags: UInt32) throws {
        let parent = try node(parentID), newParent = try node(newParentID)
        let (upper, _) = try requireUpper()
        guard newParent.isDirectory else { throw Errno.notDirectory }
        if Markers.isOCIMarkerName(newName) { throw Errno.permission }
        guard let src = try resolve(parent, name) else { throw Errno.noEntry }
        let dst = try resolve(newParent, newName)
        let exchange = flags & Sys.renameExchange != 0
        if flags & Sys.renameNoReplace != 0, dst != nil { throw Errno.exists }
        if exchange && dst == nil { throw Errno.noEntry }
        if parentID == newParentID && name == newName { return }

        // Without redirect_dir the kernel refuses to move a directory with lower content.
        func hasLower(_ r: Resolution) -> Bool { r.layers.contains { !layers[$0].isUpper } }
        if src.type == S_IFDIR && hasLower(src) { throw Errno.crossDevice }
        if let dst, !exchange {
            if src.type == S_IFDIR && dst.type != S_IFDIR { throw Errno.notDirectory }
            if src.type != S_IFDIR && dst.type == S_IFDIR { throw Errno.isDirectory }
            if dst.type == S_IFDIR {
                if try listing(stack: dst.layers, open: { openForListing(newParent, newName, in: $0) }).count > 0 {
                    throw Errno.notEmpty
                }
            }
        }
        if let dst, exchange, dst.type == S_IFDIR, hasLower(dst) { throw Errno.crossDevice }

        try copyUpNamed(parent, name)
        if exchange { try copyUpNamed(newParent, newName) }
        try copyUp(newParent)
        let srcWhiteout = try lowerShows(parent, name)
        let dstLower = try lowerShows(newParent, newName)
        if !exchange && dst != nil { keepIfOpen(newParent, newName) }
        let newParentMerged = nodes.layers(of: newParent).contains { !layers[$0].isUpper }
        let parentMerged = nodes.layers(of: parent).contains { !layers[$0].isUpper }
        let path = displayPath(parentID, child: name)

        try withDirectory(parent, in: upper.index) { sdir in
            try withDirectory(newParent, in: upper.index) { ddir in
                if exchange {
                    // Each directory that lands in a merged parent becomes opaque, as below.
                    if src.type == S_IFDIR && newParentMerged, try !isOpaque(sdir, name) {
                        try markOpaque(sdir, name, path: displayPath(newParentID, child: newName))
                    }
                    if dst?.type == S_IFDIR && parentMerged, try !isOpaque(ddir, newName) {
                        try markOpaque(ddir, newName, path: path)
                    }
                    try Sys.rename(sdir, name, ddir, newName, flags: Sys.renameExchange)
                    return
                }
                let dstUpper = try Sys.statIfPresent(ddir, newName)
                let overDevice = dstUpper?.isWhiteoutDevice ?? false
                // A directory moved into a merged parent is marked opaque, as the kernel does:
                // nothing the lower layers have (now or later) may merge into it.
                if src.type == S_IFDIR && (dstLower || overDevice || newParentMerged), try !isOpaque(sdir, name) {
                    try markOpaque(sdir, name, path: displayPath(newParentID, child: newName))
                }
                if let dstUpper, dstUpper.isDirectory {
                    // The target is empty in the merged view; only markers remain in upper.
                    let sub = try Sys.openAt(ddir, newName, O_PATH | O_DIRECTORY)
                    defer { Sys.close(sub) }
                    try WorkDir.removeContents(of: sub)
                }
                if src.type == S_IFDIR && overDevice {
                    try Sys.rename(sdir, name, ddir, newName, flags: Sys.renameExchange)
                    if srcWhiteout {
                        if events.isEnabled { events.record(.whiteout(path: path, format: "device")) }
                    } else {
                        try Sys.unlink(sdir, name)
                    }
                } else if srcWhiteout && format.whiteout == .device {
                    do {
                        try Sys.rename(sdir, name, ddir, newName, flags: Sys.renameWhiteout)
                        if events.isEnabled { events.record(.whiteout(path: path, format: "device")) }
                    } catch let e as Errno where e.rawValue == EINVAL || e.rawValue == EPERM {
                        try Sys.rename(sdir, name, ddir, newName)
                        try writeWhiteout(sdir, name, path: path)
                    }
                } else {
                    try Sys.rename(sdir, name, ddir, newName)
                    if srcWhiteout { try writeWhiteout(sdir, name, path: path) }
                }
                if try Markers.hasOCIWhiteout(dir: ddir, name: newName) {
                    try Sys.unlink(ddir, Markers.ociWhiteoutPrefix + newName)
                }
            }
        }
        if exchange {
            nodes.exchange(parent, name, newParent, newName)
        } else {
            nodes.move(from: parent, name, to: newParent, newName)
        }
        if let moved = nodes.child(newParent, newName) { nodes.update(moved, layers: [upper.index]) }
    }

    /// Copies up the object at `name` in `parent`, through its node when the kernel holds one.
    func copyUpNamed(_ parent: Node, _ name: String) throws {
        if let n = nodes.child(parent, name) { return try copyUp(n) }
        guard let upper, let r = try resolve(parent, name), r.layers[0] != upper.index else { return }
        try copyUp(parent)
        _ = try copyUpEntry(parent: parent, name: name, from: r.layers[0], withData: true)
    }

    // MARK: attributes

    public func setattr(_ id: UInt64, _ change: AttributeChange, fd: Int32?) throws -> stat {
        let n = try node(id)
        _ = try requireUpper()
        if change.uid != nil || change.gid != nil || change.mode != nil {
            // The kernel lets namespace root chown a file whose owner it cannot map (FUSE
            // reports it as unmapped); the overlay answers EPERM, and so do we.
            let st = try rawStat(n)
            if userNamespace.isUnmapped(uid: st.st_uid) || userNamespace.isUnmapped(gid: st.st_gid) {
                throw Errno.permission
            }
        }
        try copyUp(n, withData: change.size != 0)
        var uid: uid_t = UInt32.max, gid: gid_t = UInt32.max
        if let u = change.uid { guard let h = config.uidMap.toHost(u) else { throw Errno.invalid }; uid = h }
        if let g = change.gid { guard let h = config.gidMap.toHost(g) else { throw Errno.invalid }; gid = h }
        if let orphan = orphan(n) {
            try setattrOrphan(orphan, change, uid, gid, fd)
            return try getattr(id, fd: fd)
        }
        try withEntry(n) { dir, name in
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

    /// setattr on a file whose name is gone: through its kept descriptor (via /proc,
    /// which names the inode itself, so nothing is looked up by path).
    private func setattrOrphan(_ orphan: Int32, _ change: AttributeChange, _ uid: uid_t, _ gid: gid_t, _ fd: Int32?) throws {
        let path = Sys.procPath(orphan)
        if change.uid != nil || change.gid != nil { _ = try retryingCall { Glibc.chown(path, uid, gid) } }
        if let mode = change.mode { _ = try retryingCall { Glibc.chmod(path, mode & 0o7777) } }
        if let size = change.size {
            let f = try fd ?? retryingCall { suf_open_mode(path, O_WRONLY | O_CLOEXEC, 0) }
            defer { if fd == nil { Sys.close(f) } }
            try Sys.truncate(f, size)
        }
        if change.atime != nil || change.mtime != nil {
            var t = [change.atime.spec, change.mtime.spec]
            _ = try retryingCall { utimensat(AT_FDCWD, path, &t, 0) }
        }
    }

    public func setxattr(_ id: UInt64, _ name: String, _ value: UnsafeRawBufferPointer, flags: Int32) throws {
        if config.noXattrs { throw Errno.notSupported }
        let n = try node(id)
        let stored = Markers.xattrToLayer(name, format: format)
        _ = try requireUpper()
        try copyUp(n)
        nodes.locked { n.hasNoXattrs = false }
        try withXattrs(n) { try Sys.setxattr($0, stored, value, flags: flags) }
    }

    public func removexattr(_ id: UInt64, _ name: String) throws {
        if config.noXattrs { throw Errno.notSupported }
        let n = try node(id)
        let stored = Markers.xattrToLayer(name, format: format)
        _ = try requireUpper()
        // Nothing to remove is answered without a copy-up.
        _ = try withXattrs(n) { try Sys.getxattr($0, stored) }
        try copyUp(n)
        try withXattrs(n) { try Sys.removexattr($0, stored) }
    }

    // MARK: data on open files

    public func write(_ fd: Int32, _ buf: UnsafeRawBufferPointer, at offset: Int64) throws -> Int {
        try Sys.pwrite(fd, buf, offset)
    }

    public func fsync(_ fd: Int32, dataOnly: Bool) throws {
        if config.skipSync { return }
        try Sys.fsync(fd, dataOnly: dataOnly)
    }

    public func fsyncdir(_ id: UInt64) throws {
        guard let upper, !config.skipSync else { return }
        let n = try node(id)
        guard nodes.layers(of: n)[0] == upper.index else { return }
        try withDirectory(n, in: upper.index) { pfd in
            let fd = try Sys.openBeneath(pfd, ".", O_RDONLY | O_DIRECTORY)
            defer { Sys.close(fd) }
            try Sys.fsync(fd)
        }
    }

    public func fallocate(_ fd: Int32, mode: Int32, offset: Int64, length: Int64) throws {
        try Sys.fallocate(fd, mode, offset, length)
    }

    public func lseek(_ fd: Int32, offset: Int64, whence: Int32) throws -> Int64 {
        try Sys.lseek(fd, offset, whence)
    }

    public func copyFileRange(_ src: Int32, _ srcOff: Int64, _ dst: Int32, _ dstOff: Int64, _ len: Int) throws -> Int {
        var i = srcOff, o = dstOff
        return try Sys.copyFileRange(src, &i, dst, &o, len)
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

/// `retrying` for call sites outside the Sys funnel that still want EINTR handled once.
@inline(__always)
func retryingCall<T: BinaryInteger>(_ call: () -> T) throws -> T { try retrying(call) }

extension Union {
    /// Opens directory `node` for reading in layer `li`, nil where the layer lacks it.
    func openForListing(_ node: Node, in li: Int) -> Int32? {
        try? withDirectory(node, in: li) { try Sys.openBeneath($0, ".", O_RDONLY | O_DIRECTORY) }
    }

    /// Opens directory `name` of `parent` for reading in layer `li`, nil where it is missing.
    func openForListing(_ parent: Node, _ name: String, in li: Int) -> Int32? {
        try? withDirectory(parent, in: li) { try Sys.openAt($0, name, O_RDONLY | O_DIRECTORY) }
    }
}
