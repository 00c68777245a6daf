import Glibc
import Testing
@testable import UnionCore

/// The node table's per-directory name table against a dictionary model: many inserts and
/// removals (backward-shift deletion, growth, names of both storages), hard-link aliases kept
/// apart from a node's own name, and renames through the table.
@Suite struct ChildTableTests {
    func table() -> NodeTable { NodeTable(rootLayers: [0], rootIno: 2) }

    @Test func randomLinksAndUnlinksMatchADictionary() {
        let t = table()
        var model: [Name: Node] = [:]
        var rng = SystemRandomNumberGenerator()
        var seed = UInt64.random(in: 0...UInt64.max, using: &rng)
        func next() -> UInt64 {
            seed = seed &* 6364136223846793005 &+ 1442695040888963407
            return seed >> 33
        }
        for step in 0..<20_000 {
            // Short and long names (inline and heap storage), drawn from a small pool so
            // that the same names come and go.
            let k = Int(next() % 3000)
            let name = k % 7 == 0 ? Name(Array("a-long-name-beyond-the-inline-capacity-\(k)".utf8)) : Name(Array("n\(k)".utf8))
            if next() % 3 == 0 {
                t.detach(t.root, name)
                model[name] = nil
            } else {
                let n = t.remember(parent: t.root, name: name, type: S_IFREG, placement: Placement(layers: [0])) { UInt64(step) }
                if let old = model[name] { #expect(old === n, "a name the table holds is the same node") }
                model[name] = n
            }
            if step % 997 == 0 {
                for (name, n) in model { #expect(t.child(t.root, name) === n) }
            }
        }
        for (name, n) in model { #expect(t.child(t.root, name) === n, "seed-independent: \(name.bytes)") }
        #expect(t.links().count == model.count)
        for k in 0..<3000 where model[Name(Array("n\(k)".utf8))] == nil && k % 7 != 0 {
            #expect(t.child(t.root, Name(Array("n\(k)".utf8))) == nil)
        }
    }

    @Test func aliasesAndRenamesStayFindable() {
        let t = table()
        let dir = t.remember(parent: t.root, name: Name(Array("d".utf8)), type: S_IFDIR, placement: Placement(layers: [0])) { 3 }
        let key = InodeKey(device: 1, inode: 42)
        let a = Name(Array("a".utf8)), b = Name(Array("b".utf8)), c = Name(Array("c".utf8))
        let n = t.remember(parent: dir, name: a, type: S_IFREG, placement: Placement(layers: [0]), key: key) { 4 }
        // A second name of the same inode is an alias: not its own name in `dir`.
        let same = t.remember(parent: t.root, name: b, type: S_IFREG, placement: Placement(layers: [0]), key: key) { 5 }
        #expect(same === n)
        #expect(t.child(dir, a) === n && t.child(t.root, b) === n)
        // The own name goes: the alias becomes the node's name, and stays findable.
        t.detach(dir, a)
        #expect(t.child(dir, a) == nil)
        #expect(t.child(t.root, b) === n && n.name == b && n.parent === t.root)
        // A rename of that name, then back into the directory under a third name.
        t.move(from: t.root, b, to: dir, c)
        #expect(t.child(t.root, b) == nil && t.child(dir, c) === n && n.name == c && n.parent === dir)
        let e = Name(Array("e".utf8))
        let other = t.remember(parent: t.root, name: e, type: S_IFREG, placement: Placement(layers: [0])) { 6 }
        t.exchange(dir, c, t.root, e)
        #expect(t.child(t.root, e) === n && t.child(dir, c) === other)
        #expect(n.parent === t.root && n.name == e && other.parent === dir && other.name == c)
    }
}
