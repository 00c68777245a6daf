import Glibc
import Synchronization

/// One name of the merged tree that the kernel knows, by node id.
///
/// Identity is by position (parent + name), as in the kernel's overlayfs: a node
/// keeps its id, and its reported inode number, across copy-up and rename.
/// Every mutable field is guarded by the `NodeTable` lock.
public final class Node: @unchecked Sendable {  // mutable fields guarded by NodeTable's lock
    // The stored fields are ordered so that the object is 120 bytes (a 128-byte heap
    // chunk): a walk of a million files holds a million nodes. What few nodes need lives
    // in `rare`.
    public let id: UInt64
    public internal(set) var parent: Node?
    public internal(set) var name: Name
    /// `S_IFMT` bits of the merged entry.
    public internal(set) var type: mode_t
    /// The top copy has no xattrs at all: getxattr is answered without a syscall.
    /// (`ls -l` asks for security.selinux on every file, every time.)
    var hasNoXattrs = false
    /// Layers that hold this entry, top first. For a directory: every layer it merges
    /// from, ending at an opaque one; for anything else: the single layer that wins.
    public internal(set) var layers: [Int]
    /// Where the entry is in each of `layers` (see `Placement`); empty when it is `.same`
    /// in all of them, as for nearly every node (kept out of line then).
    var paths: [LayerPath] {
        get { rare?.paths ?? [] }
        set { if !newValue.isEmpty || rare != nil { rareFields.paths = newValue } }
    }
    /// The inode number reported for this entry; stable for the node's lifetime.
    public let ino: UInt64
    var lookups: UInt64 = 0
    /// The names the kernel knows in this directory (nil for anything else, and while none).
    private var childTable: ChildTable?
    /// What few nodes ever hold (redirects, metacopy data, hard links, open files), out of
    /// line: a node the kernel merely looked up stays small (a walk of a million files holds
    /// a million nodes). Read and written through the properties below.
    private var rare: NodeRare?
    fileprivate var rareFields: NodeRare {
        if let rare { return rare }
        let r = NodeRare()
        rare = r
        return r
    }
    /// The upper copy's own `overlay.redirect`, nil when it has none.
    var redirect: Redirect? {
        get { rare?.redirect }
        set { if newValue != nil || rare != nil { rareFields.redirect = newValue } }
    }
    /// For a metacopy file: the lower file holding its data.
    var data: DataSource? {
        get { rare?.data }
        set { if newValue != nil || rare != nil { rareFields.data = newValue } }
    }
    /// Further names of a hard-linked file, besides `parent`/`name`: the kernel must see
    /// one node id per inode, or it caches link counts and pages per name.
    var aliases: [(parent: Node, name: Name)] {
        get { rare?.aliases ?? [] }
        set { if !newValue.isEmpty || rare != nil { rareFields.aliases = newValue } }
    }
    /// The real (device, inode) a hard-linked node is shared by, while it is registered.
    var inodeKey: InodeKey? {
        get { rare?.inodeKey }
        set { if newValue != nil || rare != nil { rareFields.inodeKey = newValue } }
    }
    /// More (device, inode) pairs the node is found by: an indexed lower hard link's upper
    /// inode, after its copy-up (index=on).
    var extraKeys: [InodeKey] {
        get { rare?.extraKeys ?? [] }
        set { if !newValue.isEmpty || rare != nil { rareFields.extraKeys = newValue } }
    }
    /// Open file handles on this node; while any is open, removing its name keeps an
    /// O_PATH descriptor (`orphanFD`) so fstat, fchmod and friends still reach the file.
    var openCount: Int {
        get { rare?.openCount ?? 0 }
        set { if newValue != 0 || rare != nil { rareFields.openCount = newValue } }
    }
    var orphanFD: Int32 {
        get { rare?.orphanFD ?? -1 }
        set { if newValue != -1 || rare != nil { rareFields.orphanFD = newValue } }
    }
    /// Layers (bit i for layer i) whose copy of this directory holds no `.wh.*` name, as
    /// a listing found: lookups there skip the OCI-whiteout check. Never set for an upper
    /// written in the OCI format, which gains such names.
    var markerFree: UInt64 = 0

    init(id: UInt64, parent: Node?, name: Name, type: mode_t, placement: Placement, ino: UInt64) {
        self.id = id
        self.parent = parent
        self.name = name
        self.type = type
        self.layers = Node.shared(placement.layers)
        self.ino = ino
        self.paths = Node.compact(placement.paths)
        self.redirect = placement.redirect
        self.data = placement.data
    }

    /// Serialises copy-up of this node so that no file is copied twice. (Out of line: made
    /// at the first copy-up, under the table lock, and never replaced.)
    func copyUpLock(_ table: NodeTable) -> NodeRare { table.locked { rareFields } }

    public var isDirectory: Bool { type == S_IFDIR }
    public var topLayer: Int { layers[0] }

    /// Read with the table locked.
    var placement: Placement { Placement(layers: layers, paths: paths.isEmpty ? nil : paths, redirect: redirect, data: data) }

    static func compact(_ paths: [LayerPath]) -> [LayerPath] { paths.allSatisfy { $0 == .same } ? [] : paths }

    /// One-layer stacks (every file, most directories) share one array per layer.
    static let singleLayers: [[Int]] = (0..<512).map { [$0] }
    static func shared(_ layers: [Int]) -> [Int] {
        guard layers.count == 1, layers[0] >= 0, layers[0] < singleLayers.count else { return layers }
        return singleLayers[layers[0]]
    }

    /// Sets what a lookup found; with the table locked.
    func place(_ p: Placement) {
        layers = Node.shared(p.layers)
        paths = Node.compact(p.paths)
        redirect = p.redirect
        data = p.data
    }

    /// The node linked under `name` in this directory; table locked.
    func child(_ name: Name) -> Node? { childTable?.get(name) }

    /// Links `node` under `name` here, replacing what was there; table locked.
    func link(_ node: Node, _ name: Name) {
        let table = childTable ?? ChildTable()
        childTable = table
        table.set(node, name, own: node.parent === self && node.name == name)
    }

    /// Unlinks what is under `name` here; table locked.
    @discardableResult
    func unlinkChild(_ name: Name) -> Node? {
        guard let table = childTable, let n = table.remove(name) else { return nil }
        if table.isEmpty { childTable = nil }
        return n
    }

    /// Every (name, node) linked here; table locked.
    var childLinks: [(Name, Node)] { childTable?.links ?? [] }

    /// Where the entry is in `layer` (`.same` for a layer it does not merge); table locked.
    func path(in layer: Int) -> LayerPath {
        guard !paths.isEmpty, let i = layers.firstIndex(of: layer) else { return .same }
        return paths[i]
    }
}

/// A node's seldom-set fields (see `Node.rare`); guarded by the table lock like the node's.
final class NodeRare: @unchecked Sendable {  // fields guarded by the table lock; `copyUp` is a lock itself
    let copyUp = Mutex<Void>(())
    var paths: [LayerPath] = []
    var redirect: Redirect?
    var data: DataSource?
    var aliases: [(parent: Node, name: Name)] = []
    var inodeKey: InodeKey?
    var extraKeys: [InodeKey] = []
    var openCount = 0
    var orphanFD: Int32 = -1
}

public struct InodeKey: Hashable, Sendable {
    public var device: UInt64
    public var inode: UInt64
    public init(device: UInt64, inode: UInt64) {
        self.device = device
        self.inode = inode
    }
}

/// The node ids the kernel holds, with lookup counts, as the FUSE protocol needs.
///
/// One lock guards the table and every node's mutable fields. It is held only for
/// dictionary work and pointer updates, never across a syscall.
public final class NodeTable: Sendable {
    public static let rootID: UInt64 = 1

    private struct State {
        var byID = NodeSlots()
        var byInode: [InodeKey: Node] = [:]
    }
    private let state = Mutex(State())
    public let root: Node

    public init(rootLayers: [Int], rootIno: UInt64) {
        root = Node(id: NodeTable.rootID, parent: nil, name: Name(), type: S_IFDIR, placement: Placement(layers: rootLayers), ino: rootIno)
        root.lookups = 1
        state.withLock { $0.byID.insert(root) }
    }

    public func node(_ id: UInt64) -> Node? { state.withLock { $0.byID[id] } }

    /// Runs `body` with the table locked, for reads of several node fields at once.
    public func locked<T, E: Error>(_ body: () throws(E) -> T) throws(E) -> T {
        try state.withLock { (_: inout State) throws(E) -> T in try body() }
    }

    /// The names from the root down to `node` (empty for the root), or nil when the
    /// node, or a directory above it, has been removed from the union.
    public func path(of node: Node) -> [Name]? {
        state.withLock { _ in
            var parts: [Name] = []
            var n = node
            while n.id != NodeTable.rootID {
                guard let p = n.parent else { return nil }
                parts.append(n.name)
                n = p
            }
            return parts.reversed()
        }
    }

    /// Records a kernel lookup of `name` in `parent`: reuses the node already known
    /// there (refreshing what it resolves to), or the node of the same hard-linked
    /// file under another name, or makes a new one.
    public func remember(parent: Node, name: Name, type: mode_t, placement: Placement, key: InodeKey? = nil,
                         ino: () -> UInt64) -> Node {
        state.withLock { s in
            if let n = parent.child(name), n.type == type {
                n.place(placement)
                n.lookups += 1
                return n
            }
            if let key, let n = s.byInode[key], n.type == type, n.parent != nil {
                Self.unlockedUnlink(parent, name)
                n.aliases.append((parent, name))
                parent.link(n, name)
                n.lookups += 1
                return n
            }
            let n = Node(id: s.byID.nextID(), parent: parent, name: name, type: type, placement: placement, ino: ino())
            n.lookups = 1
            Self.unlockedUnlink(parent, name)
            parent.link(n, name)
            s.byID.insert(n)
            if let key, s.byInode[key] == nil {
                n.inodeKey = key
                s.byInode[key] = n
            }
            return n
        }
    }

    /// Adds a new name for `node` (a hard link made through the union).
    public func addAlias(_ node: Node, parent: Node, name: Name, key: InodeKey) {
        state.withLock { s in
            Self.unlockedUnlink(parent, name)
            node.aliases.append((parent, name))
            parent.link(node, name)
            node.lookups += 1
            if node.inodeKey == nil, s.byInode[key] == nil {
                node.inodeKey = key
                s.byInode[key] = node
            }
        }
    }

    /// The node of a hard-linked file, by its (device, inode).
    func node(forKey key: InodeKey) -> Node? { state.withLock { $0.byInode[key] } }

    /// `node` is also the one for `key` (unless another node already is).
    func addKey(_ node: Node, _ key: InodeKey) {
        state.withLock { s in
            guard s.byInode[key] == nil, s.byID[node.id] === node else { return }
            s.byInode[key] = node
            node.extraKeys.append(key)
        }
    }

    /// Removes one name from the tree; a node keeps living under its other names.
    static func unlockedUnlink(_ parent: Node, _ name: Name) {
        guard let n = parent.unlinkChild(name) else { return }
        if n.parent === parent && n.name == name {
            if let next = n.aliases.popLast() {
                n.parent = next.parent
                n.name = next.name
            } else {
                n.parent = nil
                n.name = Name()
            }
        } else {
            n.aliases.removeAll { $0.parent === parent && $0.name == name }
        }
    }

    /// Counts one more kernel reference to a node still in the table (false if it left).
    public func retain(_ node: Node) -> Bool {
        state.withLock { s in
            guard s.byID[node.id] === node else { return false }
            node.lookups += 1
            return true
        }
    }

    /// The node the kernel may already hold at `name` in `parent`, if any.
    public func child(_ parent: Node, _ name: Name) -> Node? {
        state.withLock { _ in parent.child(name) }
    }

    /// Drops `count` kernel references; a node nobody references leaves the table.
    public func forget(_ id: UInt64, _ count: UInt64) {
        state.withLock { s in
            guard id != NodeTable.rootID, let n = s.byID[id] else { return }
            n.lookups = n.lookups > count ? n.lookups - count : 0
            guard n.lookups == 0 else { return }
            s.byID.remove(id)
            if n.orphanFD >= 0 { Sys.close(n.orphanFD); n.orphanFD = -1 }
            if let key = n.inodeKey, s.byInode[key] === n { s.byInode[key] = nil }
            for key in n.extraKeys where s.byInode[key] === n { s.byInode[key] = nil }
            n.extraKeys = []
            if let p = n.parent, p.child(n.name) === n { p.unlinkChild(n.name) }
            for (p, name) in n.aliases where p.child(name) === n { p.unlinkChild(name) }
            n.aliases = []
        }
    }

    /// The name was removed from the union: the node stays valid for open handles
    /// (the kernel still holds its id) but is no longer reachable by that name.
    public func detach(_ parent: Node, _ name: Name) {
        state.withLock { _ in Self.unlockedUnlink(parent, name) }
    }

    /// Moves the node at `name` in `from` to `newName` in `to`, replacing what was there.
    public func move(from: Node, _ name: Name, to: Node, _ newName: Name) {
        state.withLock { _ in
            guard let n = from.child(name) else {
                Self.unlockedUnlink(to, newName)
                return
            }
            // Two names of one file: rename(2) leaves both in place.
            if to.child(newName) === n { return }
            from.unlinkChild(name)
            Self.unlockedUnlink(to, newName)
            if n.parent === from && n.name == name {
                n.parent = to
                n.name = newName
            } else if let i = n.aliases.firstIndex(where: { $0.parent === from && $0.name == name }) {
                n.aliases[i] = (to, newName)
            }
            to.link(n, newName)
        }
    }

    /// Swaps two names (RENAME_EXCHANGE).
    public func exchange(_ a: Node, _ aName: Name, _ b: Node, _ bName: Name) {
        state.withLock { _ in
            let na = a.unlinkChild(aName)
            let nb = b.unlinkChild(bName)
            func rename(_ n: Node, _ fromP: Node, _ fromName: Name, _ toP: Node, _ toName: Name) {
                if n.parent === fromP && n.name == fromName {
                    n.parent = toP
                    n.name = toName
                } else if let i = n.aliases.firstIndex(where: { $0.parent === fromP && $0.name == fromName }) {
                    n.aliases[i] = (toP, toName)
                }
            }
            if let na { rename(na, a, aName, b, bName) }
            if let nb { rename(nb, b, bName, a, aName) }
            if let na { b.link(na, bName) }
            if let nb { a.link(nb, aName) }
        }
    }

    /// A copied-up file is a new inode in upper: it no longer shares its lower names.
    public func separate(_ node: Node) {
        state.withLock { s in
            if let key = node.inodeKey, s.byInode[key] === node { s.byInode[key] = nil }
            node.inodeKey = nil
            for key in node.extraKeys where s.byInode[key] === node { s.byInode[key] = nil }
            node.extraKeys = []
            for (p, name) in node.aliases where p.child(name) === node { p.unlinkChild(name) }
            node.aliases = []
        }
    }

    /// Updates where a node resolves after a copy-up, a rename or a create over it.
    public func update(_ node: Node, _ placement: Placement, type: mode_t? = nil) {
        state.withLock { _ in
            node.place(placement)
            if let type { node.type = type }
        }
    }

    /// The node now has an upper copy under its own name, on top of what it had (a
    /// directory keeps merging its lower copies; anything else now lives in upper alone,
    /// a metacopy file keeping its lower data).
    func copiedUp(_ node: Node, upper: Int, keepData: Bool) {
        state.withLock { _ in
            if node.isDirectory {
                node.layers.insert(upper, at: 0)
                if !node.paths.isEmpty { node.paths.insert(.same, at: 0) }
            } else {
                node.layers = Node.shared([upper])
                node.paths = []
                if !keepData { node.data = nil }
            }
            node.redirect = nil
        }
    }

    public func layers(of node: Node) -> [Int] { state.withLock { _ in node.layers } }

    /// Every (directory, name, node) link of the tree, for dropping everything at once.
    func links() -> [(parent: Node, name: Name, child: Node)] {
        state.withLock { s in
            s.byID.all.flatMap { p in p.childLinks.map { (p, $0.0, $0.1) } }
        }
    }
    public func placement(of node: Node) -> Placement { state.withLock { _ in node.placement } }
}
