import Glibc

/// The merged view of a layer stack, as Swift methods.
///
/// No FUSE type appears here: the bridge decodes a request, calls one method,
/// and encodes what it returns or throws — always an `Errno`. Each operation is a
/// short plan over the parts that hold the rules: `Resolver` (which layer serves a
/// name), `Presenter` (the attributes shown), `MarkerWriter` (whiteouts and opaque
/// marks), `CopyUp` (bringing a lower object up), `NodeTable` (what the kernel holds).
/// Methods are safe to call from many threads at once.
public final class Union: Sendable {
    public let config: UnionConfig
    /// The stack, top first: the upper layer (when there is one) then the lowers.
    public let layers: [Layer]
    public let upper: Layer?
    /// `workdir/work`, where copy-ups and replacements are staged before a rename.
    let work: WorkDir?
    public let nodes: NodeTable
    public let format: MarkerFormat
    let resolver: Resolver
    let presenter: Presenter
    let markers: MarkerWriter?
    let events: EventSink
    let diagnostics: Diagnostics
    let userNamespace: UserNamespace
    /// Edits made to the lower layers behind the mount; nil with `watch=off`.
    public let watch: LowerWatch?
    /// `workdir/index` with `index=on` (and an upper): lower hard links kept across copy-up.
    let index: InodeIndex?
    /// Descriptors handed out on a lower layer's file, until they are released.
    let lowerHandles = LowerHandles()
    /// The union's own changes to names, counted for the listed-entry fast path.
    let namespace = NamespaceSequence()

    public init(config: UnionConfig, events: EventSink = NullEventSink(),
                diagnostics: Diagnostics = NullDiagnostics()) throws(Errno) {
        var stack: [Layer] = []
        // Upper and workdir through one private clone of their mount (see PrivateMount).
        var workFD: Int32?
        if let u = config.upperDir {
            let w = config.workDir.map { [$0] } ?? []
            let fds = try PrivateMount.openDirectories([u] + w, flags: [O_PATH] + w.map { _ in O_RDONLY })
            workFD = fds.count > 1 ? fds[1] : nil
            do throws(Errno) {
                stack.append(try Layer(role: .upper, index: 0, path: u, fd: fds[0]) {
                    OwnerXattr.upperName(config.xattrPermissions, detected: $0)
                })
            } catch {
                workFD.map(Sys.close)
                throw error
            }
        }
        do throws(Errno) {
            let firstData = config.lowerDirs.count - config.dataLayerCount
            for (i, dir) in config.lowerDirs.enumerated() {
                stack.append(try Layer(role: .lower(i + 1), index: stack.count, path: dir, dataOnly: i >= firstData))
            }
            guard stack.contains(where: { !$0.isDataOnly }) else { throw Errno.invalid }
        } catch {
            workFD.map(Sys.close)
            throw error
        }
        self.config = config
        self.layers = stack
        let upper = stack.first { $0.isUpper }
        self.upper = upper
        self.events = events
        self.diagnostics = diagnostics
        let userNamespace = UserNamespace.current()
        self.userNamespace = userNamespace
        if let upper, let w = config.workDir, let workFD {
            let work = try WorkDir(opened: workFD, path: w, upper: upper, diagnostics: diagnostics)
            self.work = work
            try Union.recordRootOwner(upper, lowers: stack.filter { !$0.isUpper })
            if let f = config.markerFormat { format = f } else { format = try work.detectFormat() }
            markers = MarkerWriter(format: format, work: work, events: events)
            index = config.index ? try InodeIndex(workdir: work.lockFD, layers: stack, format: format) : nil
        } else {
            work = nil
            format = config.markerFormat ?? MarkerFormat()
            markers = nil
            index = nil
        }
        presenter = Presenter(config: config, userNamespace: userNamespace,
                              sameFS: Set(stack.map(\.device)).count == 1, upperIndex: upper?.index)
        // The root merges every layer unless one of them is opaque. Data-only layers are
        // never part of a merge: only absolute redirects of metacopy files reach them.
        var rootLayers: [Int] = []
        for layer in stack where !layer.isDataOnly {
            rootLayers.append(layer.index)
            if try Markers.isOpaque(directory: layer.rootFD) { break }
        }
        nodes = NodeTable(rootLayers: rootLayers, rootIno: stack[0].rootIno)
        let watch = config.watch == .off ? nil
            : try LowerWatch(mode: config.watch, limit: config.watchLimit, layers: stack, diagnostics: diagnostics)
        self.watch = watch
        resolver = Resolver(layers: stack, nodes: nodes, diagnostics: diagnostics, watch: watch, format: format,
                            redirectMode: config.redirectDir, metacopy: config.metacopy)
    }

    public var isReadOnly: Bool { markers == nil }

    /// An upper that keeps owners in an xattr needs its root's too, or the root would show
    /// the daemon's: taken, as fuse-overlayfs does, from the first lower root that has one,
    /// else from the upper root's inode.
    private static func recordRootOwner(_ upper: Layer, lowers: [Layer]) throws(Errno) {
        guard let name = upper.ownerXattr, try Sys.getxattrIfPresent(.fd(upper.rootFD), name) == nil else { return }
        var value: OwnerXattr.Value?
        for l in lowers {
            guard let n = l.ownerXattr, let raw = try Sys.getxattrIfPresent(.fd(l.rootFD), n) else { continue }
            guard let v = OwnerXattr.Value(parsing: raw) else { throw Errno.io }
            value = v
            break
        }
        let st = try Sys.fstat(upper.rootFD)
        try upper.writeOwnerXattr(.fd(upper.rootFD), value ?? OwnerXattr.Value(uid: st.st_uid, gid: st.st_gid, mode: st.st_mode))
    }

    /// Starts watching the lower layers for edits (before mounting); nil with `watch=off`.
    public func startWatching() throws(LowerWatch.StartError) -> LowerWatch.Mechanism? {
        try watch?.start(root: nodes.root)
    }

    /// The kernel-overlay features in effect, as `-v`, the trace header and `inspect` say them.
    public var featureSummary: String {
        var out = "redirect_dir=\(config.redirectDir.rawValue) metacopy=\(config.metacopy ? "on" : "off")"
        if config.dataLayerCount > 0 { out += " data-only layers=\(config.dataLayerCount)" }
        return out + (index != nil ? " index=on" : " index=off")
    }

    /// Closes every descriptor the union holds into its layers except the layer roots
    /// themselves, which close when the union goes: called as soon as the kernel says
    /// the mount is gone.
    public func releaseCachedDescriptors() {
        // The watcher resolves names with these descriptors: no batch may be in progress.
        watch?.stop()
        resolver.releaseAll()
    }

    func requireUpper() throws(Errno) -> (Layer, WorkDir, MarkerWriter) {
        guard let upper, let work, let markers else { throw Errno.readOnly }
        return (upper, work, markers)
    }

    func node(_ id: UInt64) throws(Errno) -> Node {
        guard let n = nodes.node(id) else { throw Errno.noEntry }
        return n
    }

    /// Drops `count` kernel references, and cached descriptors of a node the kernel no
    /// longer holds.
    public func forget(_ id: UInt64, _ count: UInt64) {
        nodes.forget(id, count)
        if nodes.node(id) == nil {
            resolver.forget(id)
            watch?.forget(id)
        }
    }

    /// The attributes of `node` as shown, from the stat of its top copy.
    func present(_ node: Node, _ st: stat) -> stat {
        var st = st
        if index != nil { st.st_nlink = indexedNlink(node, st) }
        return presenter.present(node, st, mergedLayers: nodes.layers(of: node).count)
    }

    func hasLower(_ r: Resolution) -> Bool { r.layers.contains { !layers[$0].isUpper } }

    // MARK: paths for the trace and messages

    /// The merged path of a node (and its child `name`), as bytes: "/" for the root,
    /// "?" for a node no longer in the tree.
    public func displayPath(_ id: UInt64, child: Name? = nil) -> [UInt8] {
        guard let n = nodes.node(id), let parts = nodes.path(of: n) else { return [UInt8(ascii: "?")] }
        return [UInt8(ascii: "/")] + Bytes.join(parts + (child.map { [$0] } ?? []))
    }

    /// Which layer serves `id` (or its child `name`) now: what the trace names.
    public func servingLayer(_ id: UInt64, child name: Name? = nil) -> Layer? {
        guard var n = nodes.node(id) else { return nil }
        if let name {
            guard let c = nodes.child(n, name) else { return nil }
            n = c
        }
        return layers[nodes.layers(of: n)[0]]
    }
}
