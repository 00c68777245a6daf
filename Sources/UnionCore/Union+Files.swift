import Glibc

/// Open files: the descriptor handed to the bridge is the real file in its layer.
extension Union {
    /// Opens the file behind `id` and returns a descriptor of the real file. Opening
    /// for writing copies a lower file up first (skipping its data under O_TRUNC).
    public func open(_ id: UInt64, flags: Int32) throws(Errno) -> Int32 {
        let n = try node(id)
        var f = flags & ~(O_CREAT | O_EXCL | O_NOCTTY | O_DIRECT)
        let writing = (flags & O_ACCMODE) != O_RDONLY || (flags & O_TRUNC) != 0
        if writing {
            guard !isReadOnly else { throw Errno.readOnly }
            try copyUp(n, withData: (flags & O_TRUNC) == 0)
        } else {
            f &= ~O_TRUNC
        }
        let fd: Int32
        do throws(Errno) {
            if !writing, nodes.locked({ n.data != nil }) {
                // A metacopy file reads from the lower file that holds its data.
                fd = try resolver.openData(n, f)
            } else {
                fd = try resolver.withEntry(n) { (dir: Int32, name: Name) throws(Errno) -> Int32 in try Sys.openAt(dir, name, f) }
            }
        } catch where error.rawValue == ENXIO {
            // The name was removed under us and its whiteout (a 0/0 device) is what we reached.
            throw Errno.noEntry
        }
        nodes.locked { n.openCount += 1 }
        return fd
    }

    public func release(_ id: UInt64, _ fd: Int32) {
        Sys.close(fd)
        guard let n = nodes.node(id) else { return }
        nodes.locked { n.openCount = max(0, n.openCount - 1) }
    }

    public func read(_ fd: Int32, into buf: UnsafeMutableRawBufferPointer, at offset: Int64) throws(Errno) -> Int {
        try Sys.pread(fd, buf, offset)
    }

    public func write(_ fd: Int32, _ buf: UnsafeRawBufferPointer, at offset: Int64) throws(Errno) -> Int {
        try Sys.pwrite(fd, buf, offset)
    }

    public func fsync(_ fd: Int32, dataOnly: Bool) throws(Errno) {
        if config.skipSync { return }
        try Sys.fsync(fd, dataOnly: dataOnly)
    }

    public func fallocate(_ fd: Int32, mode: Int32, offset: Int64, length: Int64) throws(Errno) {
        try Sys.fallocate(fd, mode, offset, length)
    }

    public func lseek(_ fd: Int32, offset: Int64, whence: Int32) throws(Errno) -> Int64 {
        try Sys.lseek(fd, offset, whence)
    }

    public func copyFileRange(_ src: Int32, _ srcOff: Int64, _ dst: Int32, _ dstOff: Int64, _ len: Int) throws(Errno) -> Int {
        var i = srcOff, o = dstOff
        return try Sys.copyFileRange(src, &i, dst, &o, len)
    }

    public func statfs(_ id: UInt64) throws(Errno) -> statvfs {
        // Free space is where writes go: the upper layer, else the top lower.
        try Sys.statfs(layers[0].rootFD)
    }

    // MARK: files whose name is gone

    /// The descriptor kept for a node whose name was removed while it was open.
    func orphan(_ node: Node) -> Int32? {
        nodes.locked { node.parent == nil && node.orphanFD >= 0 ? node.orphanFD : nil }
    }

    /// Before `name` in `parent` goes away: if the kernel has the file open, hold on to
    /// it, because it will keep asking about it by node id (fstat, fchmod, ...).
    func keepIfOpen(_ parent: Node, _ name: Name) {
        guard let n = nodes.child(parent, name), !n.isDirectory,
              nodes.locked({ n.openCount > 0 && n.orphanFD < 0 && n.aliases.isEmpty }) else { return }
        let fd: Int32
        do throws(Errno) {
            fd = try resolver.withEntry(n) { (dir: Int32, name: Name) throws(Errno) -> Int32 in try Sys.openAt(dir, name, O_PATH) }
        } catch {
            // The removal goes ahead; only attribute calls on the open file will fail.
            diagnostics.report("cannot keep open file \(Bytes.display(displayPath(n.id))) after its removal: \(error)")
            return
        }
        let kept = nodes.locked { () -> Bool in
            guard n.orphanFD < 0 else { return false }
            n.orphanFD = fd
            return true
        }
        if !kept { Sys.close(fd) }
    }
}
