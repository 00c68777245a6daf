import Glibc

/// What the kernel must drop from its caches after a lower layer changed.
public enum Invalidation: Hashable, Sendable {
    /// The attributes and cached data (for a directory: its cached listing) of a node.
    case node(UInt64)
    /// A name in a directory, positive or negative; the kernel looks it up again.
    case entry(parent: UInt64, name: Name)
}

/// Who tells the kernel (the bridge: FUSE's notify calls). Called from the watcher
/// thread only, with no union lock held, never from a request.
public protocol Invalidator: Sendable {
    func invalidate(_ what: Invalidation)
}

/// Edits made to a lower layer behind the mount: which cached answers they make
/// wrong, and dropping exactly those (see docs/design.md, "Lower edits while mounted").
extension Union {
    /// Serves lower-layer edits until `stopWatchingLowerEdits`: blocks, so it runs on a
    /// thread of its own. Returns at once when nothing is watched.
    public func watchLowerEdits(_ invalidator: Invalidator) {
        guard let watch else { return }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 << 10, alignment: 8)
        defer { buffer.deallocate() }
        while let batch = watch.next(buffer: buffer), let invalidations = watch.applying({ apply(batch) }) {
            for i in invalidations { invalidator.invalidate(i) }
        }
    }

    public func stopWatchingLowerEdits() { watch?.stop() }

    /// For tests: waits up to `timeout` ms for one batch and returns what it invalidates.
    func pendingInvalidations(timeout: Int32) -> [Invalidation] {
        guard let watch else { return [] }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 << 10, alignment: 8)
        defer { buffer.deallocate() }
        guard let batch = watch.next(timeout: timeout, buffer: buffer) else { return [] }
        return watch.applying { apply(batch) } ?? []
    }

    /// A value for `repliedEntries`: read before a request that replies entries.
    public var lowerEditEpoch: UInt64 { watch?.epoch.load(ordering: .acquiring) ?? 0 }

    /// Entries `names` of `parent` went to the kernel in a request that began at
    /// `epoch`: where a batch of edits was applied meanwhile, the reply may carry what
    /// the batch invalidated, and the entries are invalidated once more.
    public func repliedEntries(_ parent: UInt64, _ names: [Name], since epoch: UInt64) {
        watch?.recheck(parent, names, since: epoch)
    }

    /// Whether the kernel may keep the entries of directory `parent` and the attributes
    /// of `node` (its child, or nil) for the whole timeout: every edit to them in a
    /// lower layer is reported. False where a directory could not be watched.
    public func lowerEditsReported(_ parent: UInt64, _ node: UInt64? = nil) -> Bool {
        guard let watch else { return true }
        return watch.watches(parent) && (node.map(watch.watches) ?? true)
    }

    /// `lowerEditsReported` for the attributes of `id` (its parent's entries).
    public func lowerEditsReported(attributesOf id: UInt64) -> Bool {
        guard let watch, !watch.watchesEverything else { return true }
        guard watch.watches(id) else { return false }
        guard id != NodeTable.rootID, let n = nodes.node(id) else { return true }
        guard let parent = nodes.locked({ n.parent }) else { return true }
        return watch.watches(parent.id)
    }

    /// The invalidations one batch needs, after bringing the node table in line.
    func apply(_ batch: LowerWatch.Batch) -> [Invalidation] {
        var out: [Invalidation] = []
        var seen = Set<Invalidation>()
        func add(_ i: Invalidation) { if seen.insert(i).inserted { out.append(i) } }
        for r in batch.rechecks { add(.entry(parent: r.parent, name: r.name)) }
        if batch.overflow {
            forgetEverything(add)
            return out
        }
        for edit in batch.edits {
            guard let dir = nodes.node(edit.directory) else { continue }
            trace(edit, dir)
            if let name = edit.name {
                entryChanged(dir, edit.layer, name, edit.kind, add)
            } else {
                directoryChanged(dir, edit.layer, add)
            }
        }
        return out
    }

    /// `name` in layer `li`'s copy of `dir` changed.
    private func entryChanged(_ dir: Node, _ li: Int, _ name: Name, _ kind: LowerEdit.Kind, _ add: (Invalidation) -> Void) {
        if name == Markers.ociOpaqueName {
            // The directory became (or stopped being) opaque in this layer: its chain changes.
            nodes.locked { dir.markerFree &= ~(1 << UInt64(li)) }
            if let parent = nodes.locked({ dir.parent }) { replaced(parent, nodes.locked { dir.name }, add) }
            add(.node(dir.id))
            return
        }
        if let target = Markers.ociWhiteoutTarget(name) {
            // An OCI whiteout came or went: lookups in this layer must check for them again.
            nodes.locked { dir.markerFree &= ~(1 << UInt64(li)) }
            entryChanged(dir, li, target, .names, add)
            return
        }
        if Markers.isOCIMarkerName(name) { return }
        let child = nodes.child(dir, name)
        switch kind {
        case .names:
            // The object at this name in this layer is new or gone. A node built on it
            // (its descriptors, its chain, its inode number) is replaced: it leaves the
            // tree before the kernel is told, so the kernel's next lookup makes a new one.
            if let child, nodes.layers(of: child).contains(li) { detach(dir, name, child) }
            add(.entry(parent: dir.id, name: name))
            add(.node(dir.id))  // the listing, and the mtime when this layer is on top
        case .attributes:
            guard let child else { return }
            attributesChanged(child, li, add)
            if child.isDirectory, nodes.layers(of: child).contains(li), li != layers.count - 1 {
                // Its xattrs may have made it opaque (or not): resolve it again, and let the
                // kernel look it up anew if its chain is not what the node holds.
                let r = try? resolver.resolve(dir, name)
                if r?.layers != nodes.layers(of: child) || r?.type != child.type { replaced(dir, name, add) }
            }
        }
    }

    /// Layer `li`'s copy of directory `dir` itself changed (its mode, owner, times, xattrs).
    private func directoryChanged(_ dir: Node, _ li: Int, _ add: (Invalidation) -> Void) {
        attributesChanged(dir, li, add)
        guard let parent = nodes.locked({ dir.parent }), li != layers.count - 1 else { return }
        let name = nodes.locked { dir.name }
        let r = try? resolver.resolve(parent, name)
        if r?.layers != nodes.layers(of: dir) || r?.type != dir.type { replaced(parent, name, add) }
    }

    /// The node's attributes are those of its top copy: only an edit there shows.
    private func attributesChanged(_ node: Node, _ li: Int, _ add: (Invalidation) -> Void) {
        let top = nodes.locked { () -> Int in
            if node.layers[0] == li { node.hasNoXattrs = false }
            return node.layers[0]
        }
        if top == li { add(.node(node.id)) }
    }

    /// What `name` in `dir` resolves to has changed: a new node there, a new lookup.
    private func replaced(_ dir: Node, _ name: Name, _ add: (Invalidation) -> Void) {
        if let child = nodes.child(dir, name) { detach(dir, name, child) }
        add(.entry(parent: dir.id, name: name))
    }

    private func detach(_ dir: Node, _ name: Name, _ child: Node) {
        nodes.locked { if dir.child(name) === child { NodeTable.unlockedUnlink(dir, name) } }
    }

    /// Events were lost: every name the kernel holds that a lower edit could change (one
    /// with a lower copy, or a directory a lower one could merge into) is replaced and
    /// looked up again, and every attribute dropped. (Negative entries directly in the
    /// root cannot be named, and may stay; every other one goes with its directory.)
    private func forgetEverything(_ add: (Invalidation) -> Void) {
        diagnostics.report("the lower layers' event queue overflowed: every cached name and attribute is dropped")
        func hasLower(_ n: Node) -> Bool { nodes.layers(of: n).contains { !layers[$0].isUpper } }
        for (parent, name, child) in nodes.links() {
            nodes.locked { child.markerFree = 0; child.hasNoXattrs = false }
            if hasLower(child) || (child.isDirectory && hasLower(parent)) {
                detach(parent, name, child)
                add(.entry(parent: parent.id, name: name))
            }
            add(.node(child.id))
        }
        nodes.locked { nodes.root.markerFree = 0 }
        add(.node(NodeTable.rootID))
    }

    private func trace(_ edit: LowerEdit, _ dir: Node) {
        guard events.isEnabled else { return }
        events.record(.lowerEdit(path: displayPath(dir.id, child: edit.name), layer: layers[edit.layer].label,
                                 change: edit.kind == .names ? "names" : "attributes"))
    }
}
