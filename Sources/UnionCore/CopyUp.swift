import CFuse
import Glibc
import Synchronization

/// Copy-up: bringing a lower object into the upper layer before its first change.
///
/// The object is built whole in `workdir/work` — data (holes kept, reflink or
/// copy_file_range first), then owner, mode, xattrs and times — and one rename
/// puts it in place: a crash leaves either no copy or a complete one.
extension Union {
    /// Makes sure `node` (and every directory above it) lives in upper.
    func copyUp(_ node: Node, withData: Bool = true) throws {
        guard let upper else { throw Errno.readOnly }
        if nodes.layers(of: node)[0] == upper.index { return }
        guard let parent = nodes.locked({ node.parent }) else { throw Errno.noEntry }
        try copyUp(parent)
        // One copy per object, however many threads ask: the second waits, then sees upper.
        let outcome: Result<Void, Error> = node.copyUpLock.withLock { _ in Result {
            let stack = nodes.layers(of: node)
            guard stack[0] != upper.index else { return }
            let name = nodes.locked { node.name }
            let start = Clock.microseconds()
            let bytes = try copyUpEntry(parent: parent, name: name, from: stack[0], withData: withData)
            nodes.update(node, layers: node.isDirectory ? [upper.index] + stack : [upper.index])
            if !node.isDirectory { nodes.separate(node) }
            if events.isEnabled {
                events.record(.copyUp(path: displayPath(node.id), layer: layers[stack[0]].label,
                                      bytes: bytes, micros: Clock.microseconds() - start))
            }
        } }
        try outcome.get()
    }

    /// Copies `name` of `parent` from layer `from` into upper (whose parent must exist).
    /// Returns the bytes of data copied.
    func copyUpEntry(parent: Node, name: String, from: Int, withData: Bool) throws -> Int64 {
        guard let upper, let work else { throw Errno.readOnly }
        return try withDirectory(parent, in: from) { srcDir in
            try withDirectory(parent, in: upper.index) { dstDir in
                let st = try Sys.stat(srcDir, name)
                // An owner this namespace cannot name cannot be written in upper either.
                if userNamespace.isUnmapped(uid: st.st_uid) || userNamespace.isUnmapped(gid: st.st_gid) {
                    throw Errno(EOVERFLOW)
                }
                let tmp = work.tempName()
                var bytes: Int64 = 0
                do {
                    bytes = try stage(srcDir, name, st, into: work.fd, tmp, withData: withData)
                    // Never over whatever upper holds now: if the name was removed meanwhile,
                    // its whiteout must win, not the copy.
                    try Sys.rename(work.fd, tmp, dstDir, name, flags: Sys.renameNoReplace)
                } catch {
                    try? Sys.unlink(work.fd, tmp, directory: st.isDirectory)
                    if let e = error as? Errno, e.rawValue == EEXIST { throw Errno.noEntry }
                    throw error
                }
                return bytes
            }
        }
    }

    /// Builds a copy of `srcDir/name` at `workFD/tmp`, complete with metadata.
    private func stage(_ srcDir: Int32, _ name: String, _ st: stat, into workFD: Int32, _ tmp: String,
                       withData: Bool) throws -> Int64 {
        var bytes: Int64 = 0
        switch st.fileType {
        case S_IFDIR:
            try Sys.mkdir(workFD, tmp, 0o700)
        case S_IFREG:
            let src = try Sys.openAt(srcDir, name, O_RDONLY)
            defer { Sys.close(src) }
            let dst = try Sys.openAt(workFD, tmp, O_WRONLY | O_CREAT | O_EXCL, mode: 0o600)
            defer { Sys.close(dst) }
            if withData { bytes = try copyData(from: src, to: dst, size: Int64(st.st_size)) }
            try copyMetadata(st, fromFD: src, toFD: dst, workFD, tmp)
            if !config.skipSync { try Sys.fsync(dst) }
            return bytes
        case S_IFLNK:
            try Sys.symlink(try Sys.readlink(srcDir, name), workFD, tmp)
        default:
            try Sys.mknod(workFD, tmp, st.st_mode, st.st_rdev)
        }
        let src = try Sys.openAt(srcDir, name, O_PATH)
        defer { Sys.close(src) }
        try copyMetadata(st, fromFD: src, toFD: nil, workFD, tmp)
        return bytes
    }

    /// Owner, then mode (chown clears set-id bits), then xattrs (security.capability
    /// must come after chown too), then times, which every other change disturbs.
    private func copyMetadata(_ st: stat, fromFD src: Int32, toFD dst: Int32?, _ workFD: Int32, _ tmp: String) throws {
        let isLink = st.fileType == S_IFLNK
        if let dst { try Sys.fchown(dst, st.st_uid, st.st_gid) } else { try Sys.lchownAt(workFD, tmp, st.st_uid, st.st_gid) }
        if !isLink {
            if let dst { try Sys.fchmod(dst, st.st_mode & 0o7777) } else { try Sys.chmodAt(workFD, tmp, st.st_mode & 0o7777) }
            if let dst {
                try copyXattrs(from: src, to: dst)
            } else {
                let target = try Sys.openAt(workFD, tmp, O_PATH)
                defer { Sys.close(target) }
                try copyXattrs(from: src, to: target)
            }
        }
        try Sys.utimensAt(workFD, tmp, (st.st_atim, st.st_mtim))
    }

    func copyXattrs(from src: Int32, to dst: Int32) throws {
        guard let names = try? Sys.listxattr(src) else { return }
        for name in names where Markers.xattrFromLayer(name, format: format) != nil {
            guard let value = Sys.getxattrIfPresent(src, name) else { continue }
            let rc = value.withUnsafeBytes { CFuse.setxattr(Sys.procPath(dst), name, $0.baseAddress, $0.count, 0) }
            // trusted.* and friends the daemon may not be allowed to write (rootless):
            // the kernel's userxattr mode drops them the same way.
            if rc != 0 && (name.hasPrefix("user.") || ![EPERM, EOPNOTSUPP].contains(Errno.current.rawValue)) {
                throw Errno.current
            }
        }
    }

    static let smallFile: Int64 = 256 << 10

    /// Copies a regular file's data, keeping holes. FICLONE shares the blocks when the
    /// filesystem can; copy_file_range lets it copy without a round trip through us.
    func copyData(from src: Int32, to dst: Int32, size: Int64) throws -> Int64 {
        guard size > 0 else { return 0 }
        if (try? Sys.ficlone(dst, src)) != nil { return size }
        // Small files: one read and one write beat copy_file_range's setup on ext4.
        if size <= Self.smallFile {
            try copyByReading(src, dst, 0, size)
            return size
        }
        var copied: Int64 = 0
        var offset: Int64 = 0
        while offset < size {
            guard let data = try nextData(src, from: offset) else { break }
            let hole = (try? Sys.lseek(src, data, SEEK_HOLE)) ?? size
            try copyRange(src, dst, data, min(hole, size) - data)
            copied += min(hole, size) - data
            offset = hole
        }
        try Sys.truncate(dst, size)
        return copied
    }

    /// The next offset holding data at or after `offset`; nil past the last data.
    private func nextData(_ fd: Int32, from offset: Int64) throws -> Int64? {
        let r = Glibc.lseek(fd, off_t(offset), SEEK_DATA)
        if r >= 0 { return Int64(r) }
        if Errno.current.rawValue == ENXIO { return nil }
        throw Errno.current
    }

    private func copyRange(_ src: Int32, _ dst: Int32, _ start: Int64, _ length: Int64) throws {
        var inOff = start, outOff = start
        while inOff < start + length {
            let n = suf_copy_file_range(src, &inOff, dst, &outOff, Int(min(start + length - inOff, 1 << 30)))
            if n > 0 { continue }
            if n == 0 { break }
            let e = Errno.current
            if e.rawValue == EINTR { continue }
            // Not between these filesystems: copy through a buffer from where it stopped.
            guard [EXDEV, EINVAL, ENOSYS, EOPNOTSUPP].contains(e.rawValue) else { throw e }
            try copyByReading(src, dst, inOff, start + length - inOff)
            return
        }
    }

    private func copyByReading(_ src: Int32, _ dst: Int32, _ start: Int64, _ length: Int64) throws {
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
