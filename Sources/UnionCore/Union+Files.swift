import Glibc
import Synchronization

/// Open files: the descriptor handed to the bridge is the real file in its layer.
extension Union {
    /// Opens the file behind `id` and returns a descriptor of the real file. Opening
    /// for writing copies a lower file up first (skipping its data under O_TRUNC).
    public func open(_ id: UInt64, flags: Int32) throws(Errno) -> Int32 {
        let n = try node(id)
        var f = flags & ~(O_CREAT | O_EXCL | O_NOCTTY | O_DIRECT)
        let writing = (flags & O_ACCMODE) != O_RDONLY || (flags & O_TRUNC) != 0
        // A write open may copy up or truncate; a read-only one changes no name.
        if writing { namespace.begin() }
        defer { if writing { namespace.end() } }
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
        if !writing, let upper, nodes.layers(of: n)[0] != upper.index { lowerHandles.add(fd, node: id, flags: f) }
        return fd
    }

    public func release(_ id: UInt64, _ fd: Int32) {
        lowerHandles.remove(fd)
        Sys.close(fd)
        guard let n = nodes.node(id) else { return }
        nodes.locked { n.openCount = max(0, n.openCount - 1) }
    }

    public func read(_ fd: Int32, into buf: UnsafeMutableRawBufferPointer, at offset: Int64) throws(Errno) -> Int {
        try Sys.pread(fd, buf, offset)
    }

    /// Before a read-side use of a handle (read, getattr, lseek, the source of
    /// copy_file_range): a handle opened read-only on a lower file that has been copied up
    /// since is moved to the upper copy, as the kernel's overlay does. Without it the
    /// kernel's page cache, once it drops a page, reads the old lower data through it
    /// (a file read while another process writes it, `mmap` of a file opened read-only).
    /// The descriptor keeps its number (dup2), so the kernel's handle stays valid.
    public func refreshHandle(_ fd: Int32) {
        guard let (id, flags) = lowerHandles.entry(fd), let upper, let n = nodes.node(id),
              nodes.layers(of: n)[0] == upper.index else { return }
        do throws(Errno) {
            let fresh = try resolver.withEntry(n) { (dir: Int32, name: Name) throws(Errno) -> Int32 in try Sys.openAt(dir, name, flags) }
            defer { Sys.close(fresh) }
            try Sys.dup2(fresh, fd)
            lowerHandles.remove(fd)
        } catch {
            // A name removed since (or a failing upper): reads stay on the lower copy, as before.
            diagnostics.report("cannot move an open file of \(Bytes.display(displayPath(id))) to its upper copy: \(error)")
            lowerHandles.remove(fd)
        }
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

/// Which open descriptors are on a lower layer's file, by descriptor: the node and the
/// flags it was opened with. Only read-only opens land there (a write copies up first).
final class LowerHandles: Sendable {
    private let table = Mutex<[Int32: (UInt64, Int32)]>([:])

    func add(_ fd: Int32, node: UInt64, flags: Int32) { table.withLock { $0[fd] = (node, flags) } }
    func remove(_ fd: Int32) { _ = table.withLock { $0.removeValue(forKey: fd) } }
    func entry(_ fd: Int32) -> (UInt64, Int32)? { table.withLock { $0[fd] } }
}
