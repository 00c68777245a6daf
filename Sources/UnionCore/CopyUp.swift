import Glibc

/// Copy-up: bringing a lower object into the upper layer before its first change.
///
/// The object is built whole in `workdir/work` — data (holes kept, reflink or
/// copy_file_range first), then owner, mode, xattrs and times — and one rename
/// puts it in place: a crash leaves either no copy or a complete one. A copy that
/// cannot carry everything (an xattr that cannot be read or written) fails with
/// the errno instead of appearing without it.
extension Union {
    /// How much of a regular file a copy-up brings up.
    enum CopyUpData {
        /// Everything: the file is about to be written.
        case full
        /// No data: the file is about to be truncated to zero (O_TRUNC).
        case truncated
        /// Metadata only (metacopy=on): the data stays in the lower layer until a write.
        case metadata
    }

    /// Makes sure `node` (and every directory above it) lives in upper, with its data.
    func copyUp(_ node: Node, withData: Bool = true) throws(Errno) {
        try copyUp(node, withData ? .full : .truncated)
    }

    /// Makes sure `node` lives in upper for a change of its metadata (chown, chmod,
    /// utimes, xattrs, a hard link or a rename): with metacopy=on a regular file's data
    /// stays below, as the kernel's ovl_copy_up (flags 0) leaves it.
    func copyUpMetadata(_ node: Node) throws(Errno) {
        try copyUp(node, config.metacopy ? .metadata : .full)
    }

    func copyUp(_ node: Node, _ data: CopyUpData) throws(Errno) {
        namespace.begin()
        defer { namespace.end() }
        let (upper, work, _) = try requireUpper()
        if nodes.layers(of: node)[0] != upper.index {
            guard let parent = nodes.locked({ node.parent }) else { throw Errno.noEntry }
            try copyUp(parent)
            // One copy per object, however many threads ask: the second waits, then sees upper.
            try node.copyUpLock(nodes).copyUp.withLock { (_: inout Void) throws(Errno) in
                let before = nodes.placement(of: node)
                guard before.layers[0] != upper.index else { return }
                let name = nodes.locked { node.name }
                let from = before.layers[0]
                let metadataOnly = data == .metadata && node.type == S_IFREG
                let start = Clock.microseconds()
                let bytes: Int64
                var indexed: [UInt8]?
                var after = Placement.only(upper.index)
                do throws(Errno) {
                    if metadataOnly {
                        // The data stays where it is: in the file below, or for a lower
                        // metacopy, wherever that one's data is.
                        guard let source = before.data ?? resolver.absolutePath(of: node, in: from).map({
                            DataSource(layer: from, path: $0, blocks: nil)
                        }) else { throw Errno.noEntry }
                        after.data = source
                    }
                    (bytes, indexed) = try copyUpEntry(parent: parent, name: name, from: from, upper: upper, work: work,
                                                       data: metadataOnly ? .metadata : data, node: node, dataSource: before.data)
                    // An indexed copy is a full one: no data stays below.
                    if indexed != nil { after.data = nil }
                } catch {
                    if error.rawValue != ENOENT {
                        diagnostics.report("copy-up of \(Bytes.display(displayPath(node.id))) from \(layers[from].label) failed: \(error)")
                    }
                    throw error
                }
                if node.isDirectory {
                    after = Placement(layers: [upper.index] + before.layers, paths: [.same] + before.paths)
                }
                // A lower file that now only lends its data: its blocks are what stat shows.
                if var d = after.data, before.data == nil {
                    d.blocks = Int64(try resolver.withDirectory(parent, in: from) { (fd: Int32) throws(Errno) -> stat in try Sys.stat(fd, name) }.st_blocks)
                    after.data = d
                }
                nodes.update(node, after)
                if let indexed {
                    // Every name of the lower hard link now shows this copy.
                    indexedCopyUpDone(node, indexed, upper: upper)
                } else if !node.isDirectory {
                    nodes.separate(node)
                }
                if events.isEnabled {
                    events.record(.copyUp(path: displayPath(node.id), layer: layers[from].label,
                                          bytes: bytes, micros: Clock.microseconds() - start))
                }
            }
        }
        // A metacopy file gets its data at its first write (or is emptied by O_TRUNC).
        if data != .metadata, nodes.locked({ node.data != nil }) {
            try copyUpData(node, truncated: data == .truncated)
        }
    }

    /// Copies up the object at `name` in `parent`, through its node when the kernel holds one.
    func copyUpNamed(_ parent: Node, _ name: Name, metadataOnly: Bool = false) throws(Errno) {
        if let n = nodes.child(parent, name) { return metadataOnly ? try copyUpMetadata(n) : try copyUp(n) }
        let (upper, work, _) = try requireUpper()
        guard let r = try resolver.resolve(parent, name), r.layers[0] != upper.index else { return }
        try copyUp(parent)
        let (_, indexed) = try copyUpEntry(parent: parent, name: name, from: r.layers[0], upper: upper, work: work,
                                           data: .full, node: nil, dataSource: r.data)
        // The node the kernel holds for the file's other names now shows the copy too.
        if indexed != nil, let n = nodes.node(forKey: InodeKey(device: UInt64(r.stat.st_dev), inode: UInt64(r.stat.st_ino))) {
            try copyUp(n)
        }
    }

    /// Copies `name` of `parent` from layer `from` into upper (whose parent must exist).
    /// A metacopy's data comes from `dataSource`, not from its own (empty) lower copy.
    /// Returns the bytes of data copied, and the lower file's handle when the copy went
    /// through the index (index=on, a lower hard link).
    private func copyUpEntry(parent: Node, name: Name, from: Int, upper: Layer, work: WorkDir,
                             data: CopyUpData, node: Node?, dataSource: DataSource?) throws(Errno) -> (Int64, [UInt8]?) {
        let copier = Copier(skipSync: config.skipSync, format: format, upper: upper)
        let dataFD: Int32?
        if data == .full, let dataSource {
            if let node { dataFD = try resolver.openData(node, O_RDONLY) } else { dataFD = try resolver.openData(dataSource, O_RDONLY).0 }
        } else {
            dataFD = nil
        }
        defer { dataFD.map(Sys.close) }
        return try resolver.withDirectory(parent, in: from) { (srcDir: Int32) throws(Errno) -> (Int64, [UInt8]?) in
            try resolver.withDirectory(parent, in: upper.index) { (dstDir: Int32) throws(Errno) -> (Int64, [UInt8]?) in
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
                    var handle: [UInt8]?
                    let bytes: Int64
                    if let index, dataSource == nil, needsIndex(st, from: from) {
                        // A lower hard link: copied once into the index, linked here.
                        (bytes, handle) = try copyUpIndexed(index, srcDir, name, st, from: from, into: dstDir,
                                                            work: work, copier: copier, data: data)
                    } else {
                        bytes = try copier.stage(srcDir, name, st, into: work.fd, tmp, data: data, dataFD: dataFD)
                        // Never over whatever upper holds now: if the name was removed meanwhile,
                        // its whiteout must win, not the copy.
                        try Sys.rename(work.fd, tmp, dstDir, name, flags: Sys.renameNoReplace)
                    }
                    // A copy-up is not a change of the parent: give it back its times, as the
                    // kernel does (best effort, like ovl_set_timestamps), or every ancestor
                    // of a copied-up file would show as changed in a diff.
                    try? Sys.utimensProc(dstDir, (parentTimes.st_atim, parentTimes.st_mtim))
                    return (bytes, handle)
                } catch {
                    try? Sys.unlink(work.fd, tmp, directory: st.isDirectory)
                    throw error.rawValue == EEXIST ? Errno.noEntry : error
                }
            }
        }
    }

    /// Fills a metacopy file's upper copy with its data, then drops the mark: the
    /// kernel's ovl_copy_up_meta_inode_data. In place, so hard links keep one inode;
    /// until the mark goes the view reads the lower data, so a crash in between leaves a
    /// metacopy, never a half-filled file on show. `truncated`: the file is about to be
    /// emptied, no data is copied.
    func copyUpData(_ node: Node, truncated: Bool) throws(Errno) {
        try node.copyUpLock(nodes).copyUp.withLock { (_: inout Void) throws(Errno) in
            guard nodes.locked({ node.data != nil }) else { return }
            guard let upper else { throw Errno.readOnly }
            let start = Clock.microseconds()
            let dst: Int32
            if let kept = orphan(node) {
                dst = try Sys.openProc(kept, O_WRONLY)
            } else {
                dst = try resolver.withEntry(node) { (dir: Int32, name: Name) throws(Errno) -> Int32 in try Sys.openAt(dir, name, O_WRONLY) }
            }
            defer { Sys.close(dst) }
            let size = Int64(try Sys.fstat(dst).st_size)
            var bytes: Int64 = 0
            if !truncated && size > 0 {
                // Writing the data drops security.capability: put it back, as the kernel does.
                let capability = try Sys.getxattrIfPresent(.fd(dst), Copier.capabilityXattr)
                let src = try resolver.openData(node, O_RDONLY)
                defer { Sys.close(src) }
                let copier = Copier(skipSync: config.skipSync, format: format, upper: upper)
                bytes = try copier.copyData(from: src, to: dst, size: size)
                if !config.skipSync { try Sys.fsync(dst) }
                if let capability { try Sys.setxattr(dst, Copier.capabilityXattr, capability) }
            }
            do throws(Errno) {
                try Sys.removexattr(.fd(dst), format.metacopyXattr)
            } catch where error.rawValue == ENODATA {
                // Already a full copy (another mount filled it): nothing to drop.
            }
            nodes.locked { node.data = nil }
            if events.isEnabled {
                events.record(.copyUp(path: displayPath(node.id), layer: "metacopy data",
                                      bytes: bytes, micros: Clock.microseconds() - start))
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

    static let capabilityXattr: Name = "security.capability"

    /// Builds a copy of `srcDir/name` at `workFD/tmp`, complete with metadata. A regular
    /// file's data comes from `dataFD` when given (a lower metacopy's data), else from
    /// the file itself; with `.metadata` the copy is a metacopy: the right size, no data
    /// blocks, marked `overlay.metacopy`.
    func stage(_ srcDir: Int32, _ name: Name, _ st: stat, into workFD: Int32, _ tmp: Name,
               data: Union.CopyUpData, dataFD: Int32? = nil) throws(Errno) -> Int64 {
        switch st.fileType {
        case S_IFDIR:
            try Sys.mkdir(workFD, tmp, 0o700)
        case S_IFREG:
            let src = try Sys.openAt(srcDir, name, data == .full && dataFD == nil ? O_RDONLY : O_PATH)
            defer { Sys.close(src) }
            let dst = try Sys.openAt(workFD, tmp, O_WRONLY | O_CREAT | O_EXCL, mode: 0o600)
            defer { Sys.close(dst) }
            var bytes: Int64 = 0
            switch data {
            case .full:
                bytes = try copyData(from: dataFD ?? src, to: dst, size: Int64(st.st_size))
                // A metacopy's size is its own (ovl_set_size), whatever its data file holds.
                if dataFD != nil { try Sys.truncate(dst, Int64(st.st_size)) }
            case .truncated: break
            case .metadata: try Sys.truncate(dst, Int64(st.st_size))
            }
            // The kernel's empty metacopy value: no fs-verity digest.
            let marks: [(Name, [UInt8])] = data == .metadata ? [(format.metacopyXattr, [])] : []
            try copyMetadata(st, fromFD: src, toFD: dst, workFD, tmp, marks: marks)
            // Like the kernel's, a metadata-only copy is not fsynced: that is what makes
            // chown -R cheap; the rename into place still comes after the whole copy.
            if !skipSync && data != .metadata { try Sys.fsync(dst) }
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
    private func copyMetadata(_ st: stat, fromFD src: Int32, toFD dst: Int32?, _ workFD: Int32, _ tmp: Name,
                              marks: [(Name, [UInt8])] = []) throws(Errno) {
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
            for (n, v) in marks { try Sys.setxattr(target, n, v) }
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
