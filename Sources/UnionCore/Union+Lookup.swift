import Glibc

/// Names and attributes: what a read-only mount answers about the tree.
extension Union {
    /// Resolves `name` in directory `parent` and records that the kernel now holds it.
    public func lookup(_ parentID: UInt64, _ name: Name) throws(Errno) -> (Node, stat) {
        let parent = try node(parentID)
        guard parent.isDirectory else { throw Errno.notDirectory }
        guard name.count <= Int(NAME_MAX) else { throw Errno.nameTooLong }
        guard let r = try resolveIndexed(parent, name) else { throw Errno.noEntry }
        return remember(parent, name, r)
    }

    /// Records what a lookup of `name` in `parent` resolved to, for the kernel.
    private func remember(_ parent: Node, _ name: Name, _ r: Resolution) -> (Node, stat) {
        // Hard links in upper share one node. Lower ones do not: a copy-up breaks them
        // apart, as it does in the kernel's overlay without the index feature. With the
        // index they do too, as the kernel hashes their inode by the lower one: a copy-up
        // of one name is a copy-up of all.
        let shared = layers[r.layers[0]].isUpper || (r.data == nil && needsIndex(r.stat, from: r.layers[0]))
        let key = r.type != S_IFDIR && r.stat.st_nlink > 1 && shared
            ? InodeKey(device: UInt64(r.stat.st_dev), inode: UInt64(r.stat.st_ino)) : nil
        if let known = nodes.child(parent, name), known.type == r.type, replacedInLower(known, r) {
            nodes.locked { if parent.child(name) === known { NodeTable.unlockedUnlink(parent, name) } }
        }
        let n = nodes.remember(parent: parent, name: name, type: r.type, placement: r.placement, key: key) { presenter.reportedIno(r) }
        if r.type == S_IFDIR, let watch, watch.registersAtLookup { watchLookedUp(watch, n, parent, name, r.layers) }
        return (n, present(n, r.stat))
    }

    /// fanotify names a directory's own changes by its handle: register each lower copy
    /// of a directory the kernel now holds, from the parent directories just consulted.
    private func watchLookedUp(_ watch: LowerWatch, _ n: Node, _ parent: Node, _ name: Name, _ chain: [Int]) {
        for li in watch.unregistered(n.id, chain) {
            try? resolver.withDirectory(parent, in: li) { (pfd: Int32) throws(Errno) in
                watch.lookedUp(n.id, li, name: name, parentFD: pfd)
            }
        }
    }

    /// Whether a lower layer now holds another object than the one `node` was built on
    /// (a directory moved away and made anew, a file replaced by a rename), which no
    /// watch reported: the node's descriptors and inode number belong to the old one, so
    /// the name gets a new node. A copy-up changes a file's top inode but not its node.
    private func replacedInLower(_ node: Node, _ r: Resolution) -> Bool {
        let top = nodes.layers(of: node)[0]
        if !node.isDirectory && (layers[top].isUpper || layers[r.layers[0]].isUpper) { return false }
        return presenter.reportedIno(r) != node.ino
    }

    /// `lookup` for readdirplus: a name the kernel already holds is answered from its
    /// node with one stat of the top copy instead of a walk through every layer.
    public func lookupListed(_ parentID: UInt64, _ entry: DirectoryEntry) throws(Errno) -> (Node, stat) {
        // (Not where lower edits may go unreported: only a lookup notices a replaced object.)
        guard let parent = nodes.node(parentID), lowerEditsReported(parentID) else { return try lookup(parentID, entry.name) }
        if let n = nodes.child(parent, entry.name), mode_t(entry.type) << 12 == n.type {
            // Only a vanished name falls back to a full lookup; any other error is the answer.
            if let st = try ifPresent({ () throws(Errno) -> stat in try topStat(n) }), nodes.retain(n) {
                return (n, present(n, st))
            }
        } else if let r = try resolveFromListedLayer(parent, entry) {
            return remember(parent, entry.name, r)
        }
        return try lookup(parentID, entry.name)
    }

    /// A name the kernel does not hold yet, resolved from the layer its listing found it in
    /// (the layers above held nothing for it then: see `NamespaceSequence`), or nil for a
    /// full lookup: the union changed a name since the listing, the name is gone from that
    /// layer, or the union follows redirects, metacopies or an index (which a lookup must
    /// see from the top).
    private func resolveFromListedLayer(_ parent: Node, _ entry: DirectoryEntry) throws(Errno) -> Resolution? {
        guard let token = entry.listedAt, index == nil, !config.metacopy, config.redirectDir == .off,
              resolver.dataLayers.isEmpty, namespace.unchanged(since: token) else { return nil }
        let stack = nodes.layers(of: parent)
        guard let at = stack.firstIndex(of: entry.layer), at > 0 else { return nil }
        let found = try ifPresent { () throws(Errno) -> Resolution? in
            try resolver.resolve(parent, entry.name, layers: Array(stack[at...]))
        }
        // A change that began while resolving may have put something above: look again.
        guard let r = found ?? nil, r.layers[0] == entry.layer, namespace.unchanged(since: token) else { return nil }
        return r
    }

    public func getattr(_ id: UInt64, fd: Int32? = nil) throws(Errno) -> stat {
        let n = try node(id)
        // A metacopy file open for reading holds its lower data file: its metadata is upper's.
        if let fd, nodes.locked({ n.data == nil }) {
            // Size and times from the open file; an owner kept in an xattr from the top copy,
            // which chown and chmod change.
            let st = try Sys.fstat(fd)
            guard let layer = ownerLayer(n, st) else { return present(n, st) }
            return present(n, try withXattrs(n) { (t: Sys.XattrTarget) throws(Errno) -> stat in try layer.withOwnerXattr(st, t) })
        }
        return present(n, try rawStat(n))
    }

    /// The layer of `node`'s top copy when it keeps the owner of an object like `st` in an xattr.
    func ownerLayer(_ node: Node, _ st: stat) -> Layer? {
        let layer = layers[nodes.layers(of: node)[0]]
        return layer.keepsOwnerInXattr(st.fileType) ? layer : nil
    }

    public func readlink(_ id: UInt64) throws(Errno) -> [UInt8] {
        let n = try node(id)
        return try resolver.withEntry(n) { (dir: Int32, name: Name) throws(Errno) -> [UInt8] in try Sys.readlink(dir, name) }
    }

    /// The stat of `node`'s top copy as shown: a metacopy shows its upper metadata over
    /// the blocks of its lower data, as the kernel's ovl_getattr (an estimate until the
    /// data-only layers were searched).
    func rawStat(_ node: Node) throws(Errno) -> stat {
        var st = try topStat(node)
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

    /// The stat of `node`'s top copy, from its layer: the inode's, with the owner and mode
    /// the layer may keep in an xattr.
    func topStat(_ node: Node) throws(Errno) -> stat {
        let top = layers[nodes.layers(of: node)[0]]
        if let fd = orphan(node) { return try top.withOwnerXattr(try Sys.fstat(fd), .fd(fd)) }
        if node.isDirectory {
            return try resolver.withDirectory(node, in: top.index) { (fd: Int32) throws(Errno) -> stat in
                try top.withOwnerXattr(try Sys.fstat(fd), .fd(fd))
            }
        }
        let (parent, name) = nodes.locked { (node.parent, node.name) }
        guard let parent else { throw Errno.noEntry }
        let st = try resolver.withDirectory(parent, in: top.index) { (fd: Int32) throws(Errno) -> stat in
            try top.withOwnerXattr(try Sys.stat(fd, name), .entry(fd, name))
        }
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
