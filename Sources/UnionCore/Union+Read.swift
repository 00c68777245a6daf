import CFuse
import Glibc
import Synchronization

/// The read side: everything a read-only mount answers.
extension Union {
    /// Resolves `name` in directory `parent` and records that the kernel now holds it.
    public func lookup(_ parentID: UInt64, _ name: String) throws -> (Node, stat) {
        let parent = try node(parentID)
        guard parent.isDirectory else { throw Errno.notDirectory }
        guard name.utf8.count <= Int(NAME_MAX) else { throw Errno.nameTooLong }
        guard let r = try resolve(parent, name) else { throw Errno.noEntry }
        // Hard links in upper share one node. Lower ones do not: a copy-up breaks them
        // apart, as it does in the kernel's overlay without the index feature.
        let key = r.type != S_IFDIR && r.stat.st_nlink > 1 && layers[r.layers[0]].isUpper
            ? InodeKey(device: UInt64(r.stat.st_dev), inode: UInt64(r.stat.st_ino)) : nil
        let n = nodes.remember(parent: parent, name: name, type: r.type, layers: r.layers, key: key) { reportedIno(r) }
        return (n, present(n, r.stat))
    }

    /// `lookup` for readdirplus: a name the kernel already holds is answered from its
    /// node with one stat of the top copy instead of a walk through every layer.
    public func lookupListed(_ parentID: UInt64, _ entry: DirectoryEntry) throws -> (Node, stat) {
        if let parent = nodes.node(parentID), let n = nodes.child(parent, entry.name),
           mode_t(entry.type) << 12 == n.type, let st = try? rawStat(n), nodes.retain(n) {
            return (n, present(n, st))
        }
        return try lookup(parentID, entry.name)
    }

    public func getattr(_ id: UInt64, fd: Int32? = nil) throws -> stat {
        let n = try node(id)
        if let fd { return present(n, try Sys.fstat(fd)) }
        return present(n, try rawStat(n))
    }

    public func readlink(_ id: UInt64) throws -> String {
        let n = try node(id)
        return try withEntry(n) { try Sys.readlink($0, $1) }
    }

    /// Which layer serves `id` (or its child `name`) now: what the trace names.
    public func servingLayer(_ id: UInt64, child name: String? = nil) -> Layer? {
        guard var n = nodes.node(id) else { return nil }
        if let name {
            guard let c = nodes.child(n, name) else { return nil }
            n = c
        }
        return layers[nodes.layers(of: n)[0]]
    }

    /// The merged path of a node, for messages and the trace ("/" for the root).
    public func displayPath(_ id: UInt64, child: String? = nil) -> String {
        guard let n = nodes.node(id), let p = nodes.path(of: n) else { return "?" }
        let base = p == "." ? "" : "/" + p
        if let child { return base + "/" + child }
        return base.isEmpty ? "/" : base
    }

    // MARK: files

    /// Opens the file behind `id` and returns a descriptor of the real file. Opening
    /// for writing copies a lower file up first (skipping its data under O_TRUNC).
    public func open(_ id: UInt64, flags: Int32) throws -> Int32 {
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
        do {
            fd = try withEntry(n) { try Sys.openAt($0, $1, f) }
        } catch let e as Errno where e.rawValue == ENXIO {
            // The name was removed under us and its whiteout (a 0/0 device) is what we reached.
            throw Errno.noEntry
        }
        nodes.locked { n.openCount += 1 }
        return fd
    }

    public func release(_ id: UInt64, _ fd: Int32) {
        Sys.close(fd)
        noteReleased(id)
    }

    public func read(_ fd: Int32, into buf: UnsafeMutableRawBufferPointer, at offset: Int64) throws -> Int {
        try Sys.pread(fd, buf, offset)
    }

    public func statfs(_ id: UInt64) throws -> statvfs {
        // Free space is where writes go: the upper layer, else the top lower.
        try Sys.statfs(layers[0].rootFD)
    }

    // MARK: extended attributes

    public func listxattr(_ id: UInt64) throws -> [String] {
        if config.noXattrs { throw Errno.notSupported }
        let n = try node(id)
        return try withXattrs(n) { try Sys.listxattr($0) }.compactMap { Markers.xattrFromLayer($0, format: format) }
    }

    public func getxattr(_ id: UInt64, _ name: String) throws -> [UInt8] {
        if config.noXattrs { throw Errno.notSupported }
        let n = try node(id)
        if nodes.locked({ n.hasNoXattrs }) { throw Errno.noData }
        let stored = Markers.xattrToLayer(name, format: format)
        return try withXattrs(n) { target in
            do {
                return try Sys.getxattr(target, stored)
            } catch let e as Errno where e.rawValue == ENODATA {
                if (try? Sys.listxattr(target))?.isEmpty == true { nodes.locked { n.hasNoXattrs = true } }
                throw e
            }
        }
    }

    /// Runs `body` with where `node`'s top copy takes xattr calls.
    func withXattrs<T>(_ node: Node, _ body: (Sys.XattrTarget) throws -> T) throws -> T {
        if let fd = orphan(node) { return try body(.fd(fd)) }
        if node.isDirectory { return try withDirectory(node, in: nodes.layers(of: node)[0]) { try body(.fd($0)) } }
        return try withEntry(node) { dir, name in try body(.entry(dir, name)) }
    }

    // MARK: directories

    /// Opens a directory handle; its listing is taken when a readdir pass starts
    /// (see `MergedDirectory`), so offsets into it stay valid and seekdir and long
    /// listings neither skip nor repeat.
    public func opendir(_ id: UInt64) throws -> MergedDirectory {
        let n = try node(id)
        guard n.isDirectory else { throw Errno.notDirectory }
        return MergedDirectory(cacheable: true)
    }

    /// The merged listing of directory `id`, with "." and "..": what one pass of
    /// readdir over a handle serves.
    public func list(_ id: UInt64) throws -> [DirectoryEntry] {
        let n = try node(id)
        guard n.isDirectory else { throw Errno.notDirectory }
        let parentIno = nodes.locked { n.parent?.ino } ?? n.ino
        let stack = nodes.layers(of: n)
        let listing = try listing(stack: stack) { openForListing(n, in: $0) }
        var free = listing.markerFreeLayers
        if let upper, format.whiteout == .ociFile { free &= ~(1 << UInt64(upper.index)) }
        nodes.locked { n.markerFree = free }
        let known: [String: UInt64] = nodes.locked { n.children.mapValues(\.ino) }
        var entries: [DirectoryEntry] = [
            DirectoryEntry(name: ".", type: UInt8(DT_DIR), ino: n.ino),
            DirectoryEntry(name: "..", type: UInt8(DT_DIR), ino: parentIno),
        ]
        entries.reserveCapacity(listing.count + 2)
        for e in listing.merged() {
            var ino = mapIno(e.ino, layer: e.layer)
            if let k = known[e.name] {
                ino = k
            } else if let lower = e.lowerIno, let ll = e.lowerLayer {
                // A merged subdirectory shows its lower number unless it is opaque.
                let opaque = (try? withDirectory(n, in: e.layer) { try isOpaque($0, e.name) }) ?? false
                if !opaque { ino = mapIno(lower, layer: ll) }
            }
            entries.append(DirectoryEntry(name: e.name, type: e.type, ino: ino))
        }
        return entries
    }
}

/// An open directory handle. A pass of readdir starting at offset 0 lists the
/// merged directory afresh (as the kernel's overlay does on its first iterate and
/// on rewinddir); the following offsets index that snapshot, so they stay valid
/// however the directory changes in between.
public final class MergedDirectory: @unchecked Sendable {
    private let state = Mutex<[DirectoryEntry]?>(nil)
    /// Whether the kernel may cache the listing across opens. Every change to a
    /// directory goes through the kernel (create, unlink, rename ... on this mount), which
    /// then drops its cached listing; copy-ups and markers never change what is listed.
    public let cacheable: Bool

    init(cacheable: Bool) { self.cacheable = cacheable }

    /// The snapshot to serve a read at `offset` from, listing anew at offset 0.
    public func entries(at offset: Int, list: () throws -> [DirectoryEntry]) rethrows -> [DirectoryEntry] {
        if offset != 0, let current = state.withLock({ $0 }) { return current }
        let fresh = try list()
        state.withLock { $0 = fresh }
        return fresh
    }
}
