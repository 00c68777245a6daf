import Glibc

/// Names and attributes: what a read-only mount answers about the tree.
extension Union {
    /// Resolves `name` in directory `parent` and records that the kernel now holds it.
    public func lookup(_ parentID: UInt64, _ name: Name) throws(Errno) -> (Node, stat) {
        let parent = try node(parentID)
        guard parent.isDirectory else { throw Errno.notDirectory }
        guard name.count <= Int(NAME_MAX) else { throw Errno.nameTooLong }
        guard let r = try resolver.resolve(parent, name) else { throw Errno.noEntry }
        // Hard links in upper share one node. Lower ones do not: a copy-up breaks them
        // apart, as it does in the kernel's overlay without the index feature.
        let key = r.type != S_IFDIR && r.stat.st_nlink > 1 && layers[r.layers[0]].isUpper
            ? InodeKey(device: UInt64(r.stat.st_dev), inode: UInt64(r.stat.st_ino)) : nil
        let n = nodes.remember(parent: parent, name: name, type: r.type, placement: r.placement, key: key) { presenter.reportedIno(r) }
        return (n, present(n, r.stat))
    }

    /// `lookup` for readdirplus: a name the kernel already holds is answered from its
    /// node with one stat of the top copy instead of a walk through every layer.
    public func lookupListed(_ parentID: UInt64, _ entry: DirectoryEntry) throws(Errno) -> (Node, stat) {
        if let parent = nodes.node(parentID), let n = nodes.child(parent, entry.name), mode_t(entry.type) << 12 == n.type {
            // Only a vanished name falls back to a full lookup; any other error is the answer.
            if let st = try ifPresent({ () throws(Errno) -> stat in try rawStat(n) }), nodes.retain(n) {
                return (n, present(n, st))
            }
        }
        return try lookup(parentID, entry.name)
    }

    public func getattr(_ id: UInt64, fd: Int32? = nil) throws(Errno) -> stat {
        let n = try node(id)
        // A metacopy file open for reading holds its lower data file: its metadata is upper's.
        if let fd, nodes.locked({ n.data == nil }) { return present(n, try Sys.fstat(fd)) }
        return present(n, try rawStat(n))
    }

    public func readlink(_ id: UInt64) throws(Errno) -> [UInt8] {
        let n = try node(id)
        return try resolver.withEntry(n) { (dir: Int32, name: Name) throws(Errno) -> [UInt8] in try Sys.readlink(dir, name) }
    }

    /// The stat of `node`'s top copy, straight from its layer.
    func rawStat(_ node: Node) throws(Errno) -> stat {
        var st = try topStat(node)
        // A metacopy shows its upper metadata over the blocks of its lower data, as the
        // kernel's ovl_getattr (an estimate until the data-only layers were searched).
        if let data = nodes.locked({ node.data }) {
            if let blocks = data.blocks {
                st.st_blocks = blkcnt_t(blocks)
            } else {
                let bs = Int64(max(st.st_blksize, 512))
                st.st_blocks = blkcnt_t((Int64(st.st_size) + bs - 1) / bs * bs / 512)
            }
        }
        return st
    }

    private func topStat(_ node: Node) throws(Errno) -> stat {
        if let fd = orphan(node) { return try Sys.fstat(fd) }
        let top = nodes.layers(of: node)[0]
        if node.isDirectory {
            return try resolver.withDirectory(node, in: top) { (fd: Int32) throws(Errno) -> stat in try Sys.fstat(fd) }
        }
        let (parent, name) = nodes.locked { (node.parent, node.name) }
        guard let parent else { throw Errno.noEntry }
        let st = try resolver.withDirectory(parent, in: top) { (fd: Int32) throws(Errno) -> stat in try Sys.stat(fd, name) }
        // The name may have just been removed (its whiteout is there now) or replaced:
        // never report another type for this node, the kernel would mark its inode bad.
        guard st.fileType == node.type else { throw Errno.noEntry }
        return st
    }

    /// Directory `id`'s copy in `layer`, where the lookups found it (a renamed directory's
    /// lower copy is under its old name): an O_PATH descriptor the caller closes, and its
    /// path from the layer root. nil where the layer has none (for `inspect`).
    public func layerDirectory(_ id: UInt64, in layer: Int) throws(Errno) -> (fd: Int32, path: [UInt8])? {
        let n = try node(id)
        let path = n.id == NodeTable.rootID ? [] : resolver.absolutePath(of: n, in: layer) ?? nodes.path(of: n) ?? []
        guard let fd = try ifPresent({ () throws(Errno) -> Int32 in
            try resolver.withDirectory(n, in: layer) { (fd: Int32) throws(Errno) -> Int32 in try Sys.dup(fd) }
        }) else { return nil }
        return (fd, Bytes.join(path))
    }

    /// How `name` in directory `parentID` resolves, layer by layer, as lookups decide it
    /// (for `inspect`). Also returns the layers the directory merges from.
    public func explain(_ parentID: UInt64, _ name: Name) throws(Errno) -> (stack: [Int], steps: [(layer: Int, decision: ResolveDecision)]) {
        let parent = try node(parentID)
        var steps: [(layer: Int, decision: ResolveDecision)] = []
        _ = try resolver.resolve(parent, name) { steps.append(($0, $1)) }
        return (nodes.layers(of: parent), steps)
    }
}
