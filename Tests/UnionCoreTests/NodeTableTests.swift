import Glibc
import Testing
@testable import UnionCore

/// The node table keyed by byte names: NFC/NFD twins and non-UTF-8 names are distinct
/// positions through every change. Pure bookkeeping: no filesystem, no root.
@Suite struct NodeTableTests {
    let nfc = Name([0xC3, 0xA9]), nfd = Name([0x65, 0xCC, 0x81])
    let latin1 = Name([0x72, 0xE9, 0x73, 0x75, 0x6D, 0xE9])
    let long = Name(Array(repeating: 0xE9, count: 255))

    func table() -> NodeTable { NodeTable(rootLayers: [0, 1], rootIno: 2) }

    func remember(_ t: NodeTable, _ parent: Node, _ name: Name, type: mode_t = S_IFREG, layers: [Int] = [1],
                  key: InodeKey? = nil, ino: UInt64 = 100) -> Node {
        t.remember(parent: parent, name: name, type: type, placement: Placement(layers: layers), key: key) { ino }
    }

    @Test func twinsAndNonUTF8NamesAreSeparateNodes() {
        let t = table()
        let a = remember(t, t.root, nfc, ino: 10)
        let b = remember(t, t.root, nfd, ino: 11)
        let c = remember(t, t.root, latin1, ino: 12)
        let d = remember(t, t.root, long, ino: 13)
        #expect(Set([a.id, b.id, c.id, d.id]).count == 4)
        #expect(t.child(t.root, nfc) === a && t.child(t.root, nfd) === b)
        #expect(t.path(of: a) == [nfc] && t.path(of: b) == [nfd] && t.path(of: c) == [latin1] && t.path(of: d) == [long])
        // A second lookup of a name finds its own node again, not its twin's.
        #expect(remember(t, t.root, nfd, layers: [0]) === b)
        #expect(b.lookups == 2 && a.lookups == 1 && b.layers == [0])
        #expect(t.node(a.id) === a && t.node(b.id) === b)
    }

    @Test func idsAreNeverReusedForAnotherNode() {
        let t = table()
        let a = remember(t, t.root, latin1)
        #expect(a.id == 2)
        let oldID = a.id
        t.forget(a.id, 1)
        #expect(t.node(oldID) == nil && t.child(t.root, latin1) == nil)
        // The slot comes back under its next generation: the old id finds nothing.
        let again = remember(t, t.root, latin1)
        #expect(again.id != oldID && again.id & 0xFFFF_FFFF == oldID & 0xFFFF_FFFF)
        #expect(t.node(oldID) == nil && t.node(again.id) === again)
        #expect(t.node(NodeTable.rootID) === t.root)
    }

    @Test func anotherTypeAtTheNameIsANewNode() {
        let t = table()
        let file = remember(t, t.root, latin1)
        let dir = remember(t, t.root, latin1, type: S_IFDIR, layers: [0])
        #expect(file !== dir && t.child(t.root, latin1) === dir)
        #expect(t.path(of: file) == nil)            // still in the table for the kernel, without a name
        #expect(t.node(file.id) === file)
    }

    @Test func moveKeepsTheNodeUnderItsNewBytes() {
        let t = table()
        let dir = remember(t, t.root, nfd, type: S_IFDIR, layers: [0])
        let f = remember(t, t.root, latin1)
        let victim = remember(t, dir, nfc)
        t.move(from: t.root, latin1, to: dir, nfc)
        #expect(t.path(of: f) == [nfd, nfc])
        #expect(t.child(t.root, latin1) == nil && t.child(dir, nfc) === f)
        #expect(t.path(of: victim) == nil)          // the replaced target lost its name
        #expect(t.child(dir, nfd) == nil)           // the twin spelling was never taken
        // Moving a name the kernel does not hold only clears the target.
        let other = remember(t, t.root, long)
        t.move(from: dir, Name([0xFF]), to: t.root, long)
        #expect(t.path(of: other) == nil && t.child(t.root, long) == nil)
    }

    @Test func exchangeSwapsTwins() {
        let t = table()
        let a = remember(t, t.root, nfc, ino: 1)
        let b = remember(t, t.root, nfd, ino: 2)
        t.exchange(t.root, nfc, t.root, nfd)
        #expect(t.child(t.root, nfc) === b && t.child(t.root, nfd) === a)
        #expect(a.name == nfd && b.name == nfc)
        // With one side unknown to the kernel, the known node just moves.
        t.exchange(t.root, nfc, t.root, latin1)
        #expect(t.child(t.root, latin1) === b && t.child(t.root, nfc) == nil)
        #expect(t.path(of: b) == [latin1])
    }

    @Test func detachAndForget() {
        let t = table()
        let dir = remember(t, t.root, latin1, type: S_IFDIR, layers: [0])
        let f = remember(t, dir, nfd)
        _ = remember(t, dir, nfd)                   // two kernel references
        t.detach(dir, nfd)
        #expect(t.path(of: f) == nil && t.child(dir, nfd) == nil && t.node(f.id) === f)
        t.forget(f.id, 1)
        #expect(t.node(f.id) === f)
        t.forget(f.id, 5)                           // more than it holds: gone, no underflow
        #expect(t.node(f.id) == nil)
        // A node below a removed directory has no path either.
        let g = remember(t, dir, nfc)
        t.detach(t.root, latin1)
        #expect(t.path(of: g) == nil)
        t.forget(NodeTable.rootID, 100)             // the root is never forgotten
        #expect(t.node(NodeTable.rootID) === t.root)
    }

    @Test func hardLinkAliasesUnderByteNames() {
        let t = table()
        let key = InodeKey(device: 1, inode: 77)
        let a = remember(t, t.root, nfc, layers: [0], key: key)
        let b = remember(t, t.root, nfd, layers: [0], key: key)
        #expect(a === b && a.lookups == 2)
        #expect(t.child(t.root, nfc) === a && t.child(t.root, nfd) === a)
        #expect(a.aliases.count == 1 && a.aliases[0].name == nfd)
        // A third name made through the union.
        t.addAlias(a, parent: t.root, name: latin1, key: key)
        #expect(t.child(t.root, latin1) === a && a.aliases.count == 2)
        // Removing the primary name moves the node to another of its names.
        t.detach(t.root, nfc)
        #expect(t.child(t.root, nfc) == nil)
        #expect(t.path(of: a) == [latin1] || t.path(of: a) == [nfd])
        // Renaming one name of the file onto another of its names changes nothing.
        t.move(from: t.root, nfd, to: t.root, latin1)
        #expect(t.child(t.root, nfd) === a && t.child(t.root, latin1) === a)
        // Moving an alias name renames just that alias.
        t.move(from: t.root, nfd, to: t.root, long)
        #expect(t.child(t.root, long) === a && t.child(t.root, nfd) == nil)
        #expect(Set(([a.name] + a.aliases.map(\.name)).map(\.bytes)) == Set([latin1.bytes, long.bytes]))
        // Copy-up makes a new inode: the other names are no longer this node.
        t.separate(a)
        #expect(a.aliases.isEmpty && a.inodeKey == nil)
        #expect([t.child(t.root, latin1), t.child(t.root, long)].filter { $0 === a }.count == 1)
        let fresh = remember(t, t.root, nfc, layers: [0], key: key)
        #expect(fresh !== a)
    }

    @Test func forgetDropsEveryNameOfTheNode() {
        let t = table()
        let key = InodeKey(device: 1, inode: 5)
        let a = remember(t, t.root, latin1, layers: [0], key: key)
        t.addAlias(a, parent: t.root, name: nfd, key: key)
        t.forget(a.id, a.lookups)
        #expect(t.node(a.id) == nil && t.child(t.root, latin1) == nil && t.child(t.root, nfd) == nil)
        // The inode key is free again: a later lookup makes a new node.
        #expect(remember(t, t.root, nfd, layers: [0], key: key) !== a)
    }
}
