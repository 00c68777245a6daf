import Glibc

/// Copy-up: bringing a lower object into the upper layer before its first change.
///
/// The object is built whole in `workdir/work` — data (holes kept, reflink or
/// copy_file_range first), then owner, mode, xattrs and times — and one rename
/// puts it in place: a crash leaves either no copy or a complete one. A copy that
/// cannot carry everything (an xattr that cannot be read or written) fails with
/// the errno instead of appearing without it.
extension Union {
    /// Makes sure `node` (and every directory above it) lives in upper.
    func copyUp(_ node: Node, withData: Bool = true) throws(Errno) {
        let (upper, work, _) = try requireUpper()
        if nodes.layers(of: node)[0] == upper.index { return }
        guard let parent = nodes.locked({ node.parent }) else { throw Errno.noEntry }
        try copyUp(parent)
        // One copy per object, however many threads ask: the second waits, then sees upper.
        try node.copyUpLock.withLock { (_: inout Void) throws(Errno) in
            let stack = nodes.layers(of: node)
            guard stack[0] != upper.index else { return }
            let name = nodes.locked { node.name }
            let start = Clock.microseconds()
            let bytes: Int64
            do throws(Errno) {
                bytes = try copyUpEntry(parent: parent, name: name, from: stack[0], upper: upper, work: work, withData: withData)
            } catch {
                if error.rawValue != ENOENT {
                    diagnostics.report("copy-up of \(Bytes.display(displayPath(node.id))) from \(layers[stack[0]].label) failed: \(error)")
                }
                throw error
            }
            nodes.update(node, layers: node.isDirectory ? [upper.index] + stack : [upper.index])
            if !node.isDirectory { nodes.separate(node) }
            if events.isEnabled {
                events.record(.copyUp(path: displayPath(node.id), layer: layers[stack[0]].label,
                                      bytes: bytes, micros: Clock.microseconds() - start))
            }
        }
    }

    /// Copies up the object at `name` in `parent`, through its node when the kernel holds one.
    func copyUpNamed(_ parent: Node, _ name: Name) throws(Errno) {
        if let n = nodes.child(parent, name) { return try copyUp(n) }
        let (upper, work, _) = try requireUpper()
        guard let r = try resolver.resolve(parent, name), r.layers[0] != upper.index else { return }
        try copyUp(parent)
        _ = try copyUpEntry(parent: parent, name: name, from: r.layers[0], upper: upper, work: work, withData: true)
    }

    /// Copies `name` of `parent` from layer `from` into upper (whose parent must exist).
    /// Returns the bytes of data copied.
    private func copyUpEntry(parent: Node, name: Name, from: Int, upper: Layer, work: WorkDir,
                             withData: Bool) throws(Errno) -> Int64 {
        let copier = Copier(skipSync: config.skipSync, format: format, upper: upper)
        return try resolver.withDirectory(parent, in: from) { (srcDir: Int32) throws(Errno) -> Int64 in
            try resolver.withDirectory(parent, in: upper.index) { (dstDir: Int32) throws(Errno) -> Int64 in
                // The owner and mode as shown: the source layer's xattr may hold them.
                let st = try layers[from].withOwnerXattr(try Sys.stat(srcDir, name), .entry(srcDir, name))
                // An owner this namespace cannot name cannot be written in upper either
                // (unless upper keeps it in an xattr, where any id can be written).
                if !upper.keepsOwnerInXattr(st.fileType),
                   userNamespace.isUnmapped(uid: st.st_uid) || userNamespace.isUnmapped(gid: st.st_gid) {
                    throw Errno.overflow
                }
                let tmp = work.tempName()
                let parentTimes = try Sys.fstat(dstDir)
                do throws(Errno) {
                    let bytes = try copier.stage(srcDir, name, st, into: work.fd, tmp, withData: withData)
                    // Never over whatever upper holds now: if the name was removed meanwhile,
                    // its whiteout must win, not the copy.
                    try Sys.rename(work.fd, tmp, dstDir, name, flags: Sys.renameNoReplace)
                    // A copy-up is not a change of the parent: give it back its times, as the
                    // kernel does (best effort, like ovl_set_timestamps), or every ancestor
                    // of a copied-up file would show as changed in a diff.
                    try? Sys.utimensProc(dstDir, (parentTimes.st_atim, parentTimes.st_mtim))
                    return bytes
                } catch {
                    try? Sys.unlink(work.fd, tmp, directory: st.isDirectory)
                    throw error.rawValue == EEXIST ? Errno.noEntry : error
                }
            }
        }
    }
}

/// Builds the copy of one object in workdir: data, then metadata in the order the
/// kernel's overlay uses.
struct Copier {
    let skipSync: Bool
    let format: MarkerFormat
    /// Where the copy goes: whether it keeps owners in an xattr (`OwnerXattr`).
    let upper: Layer

    /// Files up to this size are copied by one read and one write: on ext4 that beats
    /// copy_file_range's set-up.
    static let smallFile: Int64 = 256 << 10

    /// Builds a copy of `srcDir/name` at `workFD/tmp`, complete with metadata.
    func stage(_ srcDir: Int32, _ name: Name, _ st: stat, into workFD: Int32, _ tmp: Name,
               withData: Bool) throws(Errno) -> Int64 {
        switch st.fileType {
        case S_IFDIR:
            try Sys.mkdir(workFD, tmp, 0o700)
        case S_IFREG:
            let src = try Sys.openAt(srcDir, name, O_RDONLY)
            defer { Sys.close(src) }
            let dst = try Sys.openAt(workFD, tmp, O_WRONLY | O_CREAT | O_EXCL, mode: 0o600)
            defer { Sys.close(dst) }
            let bytes = withData ? try copyData(from: src, to: dst, size: Int64(st.st_size)) : 0
            try copyMetadata(st, fromFD: src, toFD: dst, workFD, tmp)
            if !skipSync { try Sys.fsync(dst) }
            return bytes
        case S_IFLNK:
            try Sys.symlink(try Sys.readlink(srcDir, name), workFD, tmp)
        default:
            try Sys.mknod(workFD, tmp, st.st_mode, st.st_rdev)
        }
        let src = try Sys.openAt(srcDir, name, O_PATH)
        defer { Sys.close(src) }
        try copyMetadata(st, fromFD: src, toFD: nil, workFD, tmp)
        return 0
    }

    /// Owner, then mode (chown clears set-id bits), then xattrs (security.capability
    /// must come after chown too), then times, which every other change disturbs.
    /// In an upper that keeps owners in an xattr, the inode stays the daemon's and the
    /// owner and mode are written to the xattr after the others.
    private func copyMetadata(_ st: stat, fromFD src: Int32, toFD dst: Int32?, _ workFD: Int32, _ tmp: Name) throws(Errno) {
        let inXattr = upper.keepsOwnerInXattr(st.fileType)
        if !inXattr {
            do throws(Errno) {
                if let dst { try Sys.fchown(dst, st.st_uid, st.st_gid) } else { try Sys.lchownAt(workFD, tmp, st.st_uid, st.st_gid) }
            } catch where upper.ownerXattr != nil && Union.refusedOwner(error) {
                // A symlink or device in an upper that cannot store owners: the daemon's, as
                // under fuse-overlayfs (see createEntry).
            }
        }
        if st.fileType != S_IFLNK {
            let mode = inXattr ? OwnerXattr.inodeMode(st.st_mode, type: st.fileType) : st.st_mode & 0o7777
            if let dst { try Sys.fchmod(dst, mode) } else { try Sys.chmodAt(workFD, tmp, mode) }
            let target: Int32
            if let dst { target = dst } else { target = try Sys.openAt(workFD, tmp, O_PATH) }
            defer { if dst == nil { Sys.close(target) } }
            try copyXattrs(from: src, to: target)
            if inXattr { try upper.writeOwnerXattr(.fd(target), OwnerXattr.Value(uid: st.st_uid, gid: st.st_gid, mode: st.st_mode)) }
        }
        try Sys.utimensAt(workFD, tmp, (st.st_atim, st.st_mtim))
    }

    static let mustCopyPrefixes: [Name] = ["security."]
    static let mustCopyNames: [Name] = ["system.posix_acl_access", "system.posix_acl_default"]

    /// Every xattr but the overlay's own, with the kernel's rule (ovl_copy_xattr): only
    /// EOPNOTSUPP from the upper filesystem may drop one, and never an ACL or a
    /// security.* attribute. An xattr that cannot be listed or read fails the copy.
    func copyXattrs(from src: Int32, to dst: Int32) throws(Errno) {
        for name in try Sys.listxattr(.fd(src)) where Markers.xattrFromLayer(name, format: format) != nil {
            guard let value = try Sys.getxattrIfPresent(.fd(src), name) else { continue }  // removed meanwhile
            do throws(Errno) {
                try Sys.setxattr(dst, name, value)
            } catch where error.rawValue == EOPNOTSUPP {
                if Self.mustCopyNames.contains(name) || Self.mustCopyPrefixes.contains(where: name.hasPrefix) { throw error }
            }
        }
    }

    /// Copies a regular file's data, keeping holes. FICLONE shares the blocks when the
    /// filesystem can; copy_file_range lets it copy without a round trip through us.
    func copyData(from src: Int32, to dst: Int32, size: Int64) throws(Errno) -> Int64 {
        guard size > 0 else { return 0 }
        do throws(Errno) {
            try Sys.ficlone(dst, src)
            return size
        } catch {
            // Not a reflinking filesystem (or not across these two): copy.
        }
        if size <= Self.smallFile {
            try copyByReading(src, dst, 0, size)
            return size
        }
        var copied: Int64 = 0
        var offset: Int64 = 0
        while offset < size {
            guard let data = try nextData(src, from: offset) else { break }
            let hole = min(try Sys.lseek(src, data, SEEK_HOLE), size)
            try copyRange(src, dst, data, hole - data)
            copied += hole - data
            offset = hole
        }
        try Sys.truncate(dst, size)
        return copied
    }

    /// The next offset holding data at or after `offset`; nil past the last data.
    private func nextData(_ fd: Int32, from offset: Int64) throws(Errno) -> Int64? {
        do throws(Errno) { return try Sys.lseek(fd, offset, SEEK_DATA) } catch where error.rawValue == ENXIO { return nil }
    }

    private func copyRange(_ src: Int32, _ dst: Int32, _ start: Int64, _ length: Int64) throws(Errno) {
        var inOff = start, outOff = start
        while inOff < start + length {
            let n: Int
            do throws(Errno) {
                n = try Sys.copyFileRange(src, &inOff, dst, &outOff, Int(min(start + length - inOff, 1 << 30)))
            } catch where [EXDEV, EINVAL, ENOSYS, EOPNOTSUPP].contains(error.rawValue) {
                // Not between these filesystems: copy through a buffer from where it stopped.
                try copyByReading(src, dst, inOff, start + length - inOff)
                return
            }
            if n == 0 { break }
        }
    }

    private func copyByReading(_ src: Int32, _ dst: Int32, _ start: Int64, _ length: Int64) throws(Errno) {
        let chunk = Int(min(Int64(1 << 20), max(length, 4096)))
        let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: chunk, alignment: 4096)
        defer { buf.deallocate() }
        var off = start
        while off < start + length {
            let n = try Sys.pread(src, UnsafeMutableRawBufferPointer(rebasing: buf[0..<min(chunk, Int(start + length - off))]), off)
            if n == 0 { break }
            var done = 0
            while done < n {
                done += try Sys.pwrite(dst, UnsafeRawBufferPointer(rebasing: buf[done..<n]), off + Int64(done))
            }
            off += Int64(n)
        }
    }
}

enum Clock {
    static func microseconds() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Int64(ts.tv_sec) * 1_000_000 + Int64(ts.tv_nsec) / 1000
    }
}
