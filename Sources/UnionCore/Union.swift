import CFuse
import Glibc
import Synchronization

/// The merged view of a layer stack, as Swift methods.
///
/// No FUSE type appears here: the bridge decodes a request, calls one method,
/// and encodes what it returns or throws. Methods are safe to call from many
/// threads at once.
public final class Union: @unchecked Sendable {
    public let config: UnionConfig
    /// The stack, top first: the upper layer (when there is one) then the lowers.
    public let layers: [Layer]
    public let upper: Layer?
    /// `workdir/work`, where copy-ups and replacements are staged before a rename.
    let work: WorkDir?
    public let nodes: NodeTable
    public let format: MarkerFormat
    /// All layers on one filesystem: report the real inode numbers, as the kernel does.
    let sameFS: Bool
    let events: EventSink
    let userNamespace = UserNamespace.current()
    private let dirCache = DirectoryFDCache(limit: 4096)

    public init(config: UnionConfig, events: EventSink = NullEventSink()) throws(Errno) {
        var stack: [Layer] = []
        // Upper and workdir through one private clone of their mount (see PrivateMount).
        var workFD: Int32?
        if let u = config.upperDir {
            let w = config.workDir.map { [$0] } ?? []
            let fds = try PrivateMount.openDirectories([u] + w, flags: [O_PATH] + w.map { _ in O_RDONLY })
            workFD = fds.count > 1 ? fds[1] : nil
            do { stack.append(try Layer(role: .upper, index: 0, path: u, fd: fds[0])) } catch {
                workFD.map(Sys.close)
                throw error
            }
        }
        do throws(Errno) {
            for (i, dir) in config.lowerDirs.enumerated() {
                stack.append(try Layer(role: .lower(i + 1), index: stack.count, path: dir))
            }
            guard !stack.isEmpty else { throw Errno.invalid }
        } catch {
            workFD.map(Sys.close)
            throw error
        }
        self.config = config
        self.layers = stack
        self.upper = stack.first { $0.isUpper }
        self.events = events
        self.sameFS = Set(stack.map(\.device)).count == 1
        if let upper, let workFD {
            work = try WorkDir(opened: workFD, upper: upper)
            if let f = config.markerFormat { format = f } else { format = try work!.detectFormat() }
        } else {
            work = nil
            format = config.markerFormat ?? MarkerFormat()
        }
        // The root merges every layer unless one of them is opaque.
        var rootLayers: [Int] = []
        for layer in stack {
            rootLayers.append(layer.index)
            if Markers.isOpaque(directory: layer.rootFD) { break }
        }
        self.nodes = NodeTable(rootLayers: rootLayers, rootIno: stack[0].rootIno)
    }

    public var isReadOnly: Bool { upper == nil || work == nil }

    // MARK: directory descriptors

    /// Runs `body` with an O_PATH descriptor of `node`'s directory in `layer`.
    func withDirectory<T>(_ node: Node, in layer: Int, _ body: (Int32) throws -> T) throws -> T {
        if let fd = dirCache.get(node.id, layer) { return try body(fd) }
        if node.id == NodeTable.rootID { return try body(layers[layer].rootFD) }
        // One component at a time from the parent's descriptor: never a path longer than a
        // name, so trees deeper than PATH_MAX work, and each step refuses symlinks.
        let (parent, name) = nodes.locked { (node.parent, node.name) }
        guard let parent else { throw Errno.noEntry }
        let fd: Int32 = try withDirectory(parent, in: layer) { pfd in
            do {
                return try Sys.openAt(pfd, name, O_PATH | O_DIRECTORY)
            } catch let e as Errno where e.rawValue == ENOTDIR || e.rawValue == ELOOP {
                throw Errno.noEntry
            }
        }
        if dirCache.put(node.id, layer, fd) { return try body(fd) }
        defer { Sys.close(fd) }
        return try body(fd)
    }

    /// Drops cached descriptors of a node the kernel no longer holds.
    public func forget(_ id: UInt64, _ count: UInt64) {
        nodes.forget(id, count)
        if nodes.node(id) == nil { dirCache.drop(id) }
    }

    func node(_ id: UInt64) throws(Errno) -> Node {
        guard let n = nodes.node(id) else { throw Errno.noEntry }
        return n
    }

    // MARK: resolution

    /// What a name in a merged directory resolves to.
    struct Resolution {
        var type: mode_t
        var layers: [Int]
        var stat: stat
        /// st_ino of the topmost lower-layer copy, which the kernel reports for merged objects.
        var lowerIno: UInt64?
    }

    /// Looks `name` up top-down through the layers `dir` merges from. The first layer
    /// that has the name decides; a directory keeps merging with directories below it
    /// until an opaque one, a whiteout, or a non-directory.
    func resolve(_ dir: Node, _ name: String, layers only: [Int]? = nil) throws -> Resolution? {
        if Markers.isOCIMarkerName(name) { return nil }
        var found: Resolution?
        let stack = only ?? nodes.layers(of: dir)
        for li in stack {
            let stop: Bool = try withDirectory(dir, in: li) { dfd in
                let st = try Sys.statIfPresent(dfd, name)
                guard let st else {
                    // Absent here: an OCI whiteout in this layer still hides the layers below
                    // (unless a listing showed this directory has no OCI markers at all).
                    if nodes.locked({ dir.markerFree & (1 << UInt64(li)) != 0 }) { return false }
                    return try Markers.hasOCIWhiteout(dir: dfd, name: name)
                }
                if st.isWhiteoutDevice { return true }
                if var r = found {
                    guard st.isDirectory else { return true }
                    r.layers.append(li)
                    if r.lowerIno == nil && !layers[li].isUpper { r.lowerIno = UInt64(st.st_ino) }
                    found = r
                } else {
                    found = Resolution(type: st.fileType, layers: [li], stat: st,
                                       lowerIno: layers[li].isUpper ? nil : UInt64(st.st_ino))
                    guard st.isDirectory else { return true }
                }
                // Opacity only matters when there is a layer below to hide.
                return li == stack.last ? true : try isOpaque(dfd, name)
            }
            if stop { break }
        }
        return found
    }

    func isOpaque(_ dirFD: Int32, _ name: String) throws -> Bool {
        Markers.isOpaque(in: dirFD, name)
    }

    /// The inode number shown for an object: the kernel's rule on one filesystem is
    /// the topmost lower copy's number for anything with a lower copy, else upper's.
    func reportedIno(_ r: Resolution) -> UInt64 {
        let layer = r.lowerIno != nil && r.type == S_IFDIR ? r.layers.first { !layers[$0].isUpper }! : r.layers[0]
        let ino = r.type == S_IFDIR ? (r.lowerIno ?? UInt64(r.stat.st_ino)) : UInt64(r.stat.st_ino)
        return mapIno(ino, layer: layer)
    }

    func mapIno(_ ino: UInt64, layer: Int) -> UInt64 {
        // Across filesystems, numbers can collide: keep them apart by layer in the high bits.
        sameFS ? ino : ino ^ (UInt64(layer) << 56)
    }

    /// The attributes the kernel sees for `node`, given the stat of its top copy.
    func present(_ node: Node, _ st: stat) -> stat {
        var out = st
        out.st_ino = ino_t(node.ino)
        if node.isDirectory && (config.staticNlink || nodes.layers(of: node).count > 1) { out.st_nlink = 1 }
        if !config.uidMap.isIdentity { out.st_uid = config.uidMap.toContainer(st.st_uid) }
        if !config.gidMap.isIdentity { out.st_gid = config.gidMap.toContainer(st.st_gid) }
        // Unmapped owners stay unmapped for the kernel (see UserNamespace).
        if userNamespace.isUnmapped(uid: st.st_uid) || (!config.uidMap.isIdentity && out.st_uid == IDMap.overflow) {
            out.st_uid = UInt32.max
        }
        if userNamespace.isUnmapped(gid: st.st_gid) || (!config.gidMap.isIdentity && out.st_gid == IDMap.overflow) {
            out.st_gid = UInt32.max
        }
        if let u = config.squashUID { out.st_uid = u }
        if let g = config.squashGID { out.st_gid = g }
        return out
    }

    /// The stat of `node`'s top copy, straight from its layer.
    func rawStat(_ node: Node) throws -> stat {
        if let fd = orphan(node) { return try Sys.fstat(fd) }
        let top = nodes.layers(of: node)[0]
        if node.isDirectory { return try withDirectory(node, in: top) { try Sys.fstat($0) } }
        let (parent, name) = nodes.locked { (node.parent, node.name) }
        guard let parent else { throw Errno.noEntry }
        let st = try withDirectory(parent, in: top) { try Sys.stat($0, name) }
        // The name may have just been removed (its whiteout is there now) or replaced:
        // never report another type for this node, the kernel would mark its inode bad.
        guard st.fileType == node.type else { throw Errno.noEntry }
        return st
    }

    /// The descriptor kept for a node whose name was removed while it was open.
    func orphan(_ node: Node) -> Int32? {
        nodes.locked { node.parent == nil && node.orphanFD >= 0 ? node.orphanFD : nil }
    }

    /// Before `name` in `parent` goes away: if the kernel has the file open, hold on to
    /// it, because it will keep asking about it by node id (fstat, fchmod, ...).
    func keepIfOpen(_ parent: Node, _ name: String) {
        guard let n = nodes.child(parent, name), !n.isDirectory,
              nodes.locked({ n.openCount > 0 && n.orphanFD < 0 && n.aliases.isEmpty }) else { return }
        guard let fd = try? withEntry(n, { try Sys.openAt($0, $1, O_PATH) }) else { return }
        let kept = nodes.locked { () -> Bool in
            guard n.orphanFD < 0 else { return false }
            n.orphanFD = fd
            return true
        }
        if !kept { Sys.close(fd) }
    }

    public func noteReleased(_ id: UInt64) {
        guard let n = nodes.node(id) else { return }
        nodes.locked { n.openCount = max(0, n.openCount - 1) }
    }

    /// Runs `body` with the directory that holds `node` in its top layer, and its name.
    func withEntry<T>(_ node: Node, _ body: (Int32, String) throws -> T) throws -> T {
        let (parent, name, top) = nodes.locked { (node.parent, node.name, node.layers[0]) }
        guard let parent else {
            if node.id == NodeTable.rootID { return try body(layers[top].rootFD, ".") }
            throw Errno.noEntry
        }
        return try withDirectory(parent, in: top) { try body($0, name) }
    }
}

/// Bounded cache of per-node, per-layer directory descriptors.
///
/// A directory descriptor follows its directory through renames, so an entry
/// stays right until the kernel forgets the node. The bound keeps the daemon
/// far below the open-file limit on trees of any size.
final class DirectoryFDCache: @unchecked Sendable {
    private struct State {
        var byNode: [UInt64: [Int: Int32]] = [:]
        var count = 0
    }
    private let state = Mutex(State())
    private let limit: Int

    init(limit: Int) { self.limit = limit }

    func get(_ node: UInt64, _ layer: Int) -> Int32? {
        state.withLock { $0.byNode[node]?[layer] }
    }

    /// True when the cache took ownership of `fd`.
    func put(_ node: UInt64, _ layer: Int, _ fd: Int32) -> Bool {
        state.withLock { s in
            guard s.count < limit, s.byNode[node]?[layer] == nil else { return false }
            s.byNode[node, default: [:]][layer] = fd
            s.count += 1
            return true
        }
    }

    func drop(_ node: UInt64) {
        guard let fds = state.withLock({ s -> [Int: Int32]? in
            guard let fds = s.byNode.removeValue(forKey: node) else { return nil }
            s.count -= fds.count
            return fds
        }) else { return }
        fds.values.forEach(Sys.close)
    }
}
