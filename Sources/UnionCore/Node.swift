import Glibc
import Synchronization

/// One name of the merged tree that the kernel knows, by node id.
///
/// Identity is by position (parent + name), as in the kernel's overlayfs: a node
/// keeps its id, and its reported inode number, across copy-up and rename.
/// Every mutable field is guarded by the `NodeTable` lock.
public final class Node: @unchecked Sendable {
    public let id: UInt64
    public internal(set) var parent: Node?
    public internal(set) var name: String
    /// `S_IFMT` bits of the merged entry.
    public internal(set) var type: mode_t
    /// Layers that hold this entry, top first. For a directory: every layer it merges
    /// from, ending at an opaque one; for anything else: the single layer that wins.
    public internal(set) var layers: [Int]
    /// The inode number reported for this entry; stable for the node's lifetime.
    public let ino: UInt64
    var lookups: UInt64 = 0
    var children: [String: Node] = [:]
    /// Serialises copy-up of this node so that no file is copied twice.
    let copyUpLock = Mutex<Void>(())

    init(id: UInt64, parent: Node?, name: String, type: mode_t, layers: [Int], ino: UInt64) {
        self.id = id
        self.parent = parent
        self.name = name
        self.type = type
        self.layers = layers
        self.ino = ino
    }

    public var isDirectory: Bool { type == S_IFDIR }
    public var topLayer: Int { layers[0] }
}

/// The node ids the kernel holds, with lookup counts, as the FUSE protocol needs.
///
/// One lock guards the table and every node's mutable fields. It is held only for
/// dictionary work and pointer updates, never across a syscall.
public final class NodeTable: @unchecked Sendable {
    public static let rootID: UInt64 = 1

    private struct State {
        var byID: [UInt64: Node] = [:]
        var nextID: UInt64 = 2
    }
    private let state = Mutex(State())
    public let root: Node

    public init(rootLayers: [Int], rootIno: UInt64) {
        root = Node(id: NodeTable.rootID, parent: nil, name: "", type: S_IFDIR, layers: rootLayers, ino: rootIno)
        root.lookups = 1
        state.withLock { $0.byID[NodeTable.rootID] = root }
    }

    public func node(_ id: UInt64) -> Node? { state.withLock { $0.byID[id] } }

    public var count: Int { state.withLock { $0.byID.count } }

    /// Runs `body` with the table locked, for reads of several node fields at once.
    public func locked<T>(_ body: () throws -> T) rethrows -> T {
        try state.withLock { _ in try body() }
    }

    /// The path of `node` relative to every layer root ("." for the root), or nil
    /// when the node, or a directory above it, has been removed from the union.
    public func path(of node: Node) -> String? {
        state.withLock { _ in Self.unlockedPath(node) }
    }

    static func unlockedPath(_ node: Node) -> String? {
        if node.id == NodeTable.rootID { return "." }
        var parts: [String] = []
        var n = node
        while n.id != NodeTable.rootID {
            guard let p = n.parent else { return nil }
            parts.append(n.name)
            n = p
        }
        return parts.reversed().joined(separator: "/")
    }

    /// Records a kernel lookup of `name` in `parent`: reuses the node already known
    /// there (refreshing what it resolves to) or makes a new one.
    public func remember(parent: Node, name: String, type: mode_t, layers: [Int], ino: () -> UInt64) -> Node {
        state.withLock { s in
            if let n = parent.children[name], n.type == type {
                n.layers = layers
                n.lookups += 1
                return n
            }
            let n = Node(id: s.nextID, parent: parent, name: name, type: type, layers: layers, ino: ino())
            s.nextID += 1
            n.lookups = 1
            if let old = parent.children[name] { old.parent = nil }
            parent.children[name] = n
            s.byID[n.id] = n
            return n
        }
    }

    /// The node the kernel may already hold at `name` in `parent`, if any.
    public func child(_ parent: Node, _ name: String) -> Node? {
        state.withLock { _ in parent.children[name] }
    }

    /// Drops `count` kernel references; a node nobody references leaves the table.
    public func forget(_ id: UInt64, _ count: UInt64) {
        state.withLock { s in
            guard id != NodeTable.rootID, let n = s.byID[id] else { return }
            n.lookups = n.lookups > count ? n.lookups - count : 0
            if n.lookups == 0 {
                s.byID[id] = nil
                if let p = n.parent, p.children[n.name] === n { p.children[n.name] = nil }
            }
        }
    }

    /// The name was removed from the union: the node stays valid for open handles
    /// (the kernel still holds its id) but is no longer reachable by name.
    public func detach(_ parent: Node, _ name: String) {
        state.withLock { _ in
            if let n = parent.children.removeValue(forKey: name) { n.parent = nil; n.name = "" }
        }
    }

    /// Moves the node at `name` in `from` to `newName` in `to`, replacing what was there.
    public func move(from: Node, _ name: String, to: Node, _ newName: String) {
        state.withLock { _ in
            guard let n = from.children.removeValue(forKey: name) else {
                if let old = to.children.removeValue(forKey: newName) { old.parent = nil }
                return
            }
            if let old = to.children[newName] { old.parent = nil }
            n.parent = to
            n.name = newName
            to.children[newName] = n
        }
    }

    /// Swaps two names (RENAME_EXCHANGE).
    public func exchange(_ a: Node, _ aName: String, _ b: Node, _ bName: String) {
        state.withLock { _ in
            let na = a.children.removeValue(forKey: aName)
            let nb = b.children.removeValue(forKey: bName)
            if let na { na.parent = b; na.name = bName; b.children[bName] = na }
            if let nb { nb.parent = a; nb.name = aName; a.children[aName] = nb }
        }
    }

    /// Updates where a node resolves after copy-up or a create over it.
    public func update(_ node: Node, layers: [Int], type: mode_t? = nil) {
        state.withLock { _ in
            node.layers = layers
            if let type { node.type = type }
        }
    }

    public func layers(of node: Node) -> [Int] { state.withLock { _ in node.layers } }
}
