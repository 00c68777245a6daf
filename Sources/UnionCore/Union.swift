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

    public init(config: UnionConfig, events: EventSink = NullEventSink(),
                diagnostics: Diagnostics = NullDiagnostics()) throws(Errno) {
        var stack: [Layer] = []
        if let u = config.upperDir { stack.append(try Layer(role: .upper, index: 0, path: u)) }
        for (i, dir) in config.lowerDirs.enumerated() {
            stack.append(try Layer(role: .lower(i + 1), index: stack.count, path: dir))
        }
        guard !stack.isEmpty else { throw Errno.invalid }
        self.config = config
        self.layers = stack
        let upper = stack.first { $0.isUpper }
        self.upper = upper
        self.events = events
        self.diagnostics = diagnostics
        let userNamespace = UserNamespace.current()
        self.userNamespace = userNamespace
        if let upper, let w = config.workDir {
            let work = try WorkDir(path: w, upper: upper, diagnostics: diagnostics)
            self.work = work
            if let f = config.markerFormat { format = f } else { format = try work.detectFormat() }
            markers = MarkerWriter(format: format, work: work, events: events)
        } else {
            work = nil
            format = config.markerFormat ?? MarkerFormat()
            markers = nil
        }
        presenter = Presenter(config: config, userNamespace: userNamespace,
                              sameFS: Set(stack.map(\.device)).count == 1, upperIndex: upper?.index)
        // The root merges every layer unless one of them is opaque.
        var rootLayers: [Int] = []
        for layer in stack {
            rootLayers.append(layer.index)
            if try Markers.isOpaque(directory: layer.rootFD) { break }
        }
        nodes = NodeTable(rootLayers: rootLayers, rootIno: stack[0].rootIno)
        let watch = config.watch == .off ? nil
            : try LowerWatch(mode: config.watch, limit: config.watchLimit, layers: stack, diagnostics: diagnostics)
        self.watch = watch
        resolver = Resolver(layers: stack, nodes: nodes, diagnostics: diagnostics, watch: watch)
    }

    public var isReadOnly: Bool { markers == nil }

    /// Starts watching the lower layers for edits (before mounting); nil with `watch=off`.
    public func startWatching() throws(LowerWatch.StartError) -> LowerWatch.Mechanism? {
        try watch?.start(root: nodes.root)
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
        presenter.present(node, st, mergedLayers: nodes.layers(of: node).count)
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
