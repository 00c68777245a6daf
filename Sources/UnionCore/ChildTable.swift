/// The names a directory node holds for the kernel, each with its node.
///
/// A node's own name is the key of its link in its parent (`Node.parent`, `Node.name`), so
/// the table keeps only node references (and a 4-byte hash each), in open addressing with
/// linear probing: 12 bytes a slot where a `[Name: Node]` spends 40 (a 32-byte key beside
/// the value), and a walk of a million files holds a million links. The other links —
/// further names of a hard-linked node, whose `name` is another — keep their names, in
/// `others`.
///
/// Invariant (kept by `NodeTable`, which changes a node's `parent`/`name` only while that
/// link is out of the table): a node in `slots` is linked under its own name. Guarded by
/// the table lock, like every node field.
final class ChildTable {
    private var slots: [Node?] = []
    /// Each slot's hash, with the low bit set (0: empty): a probe compares these, and
    /// dereferences a node only on a likely match.
    private var tags: [UInt32] = []
    private var used = 0
    private var others: [Name: Node] = [:]

    var isEmpty: Bool { used == 0 && others.isEmpty }

    private static func tag(_ name: Name) -> UInt32 { UInt32(truncatingIfNeeded: name.hashValue) | 1 }

    private func find(_ name: Name) -> Int? {
        guard used > 0 else { return nil }
        let mask = slots.count - 1
        let t = Self.tag(name)
        var i = Int(t >> 1) & mask
        while tags[i] != 0 {
            if tags[i] == t, slots[i]!.name == name { return i }
            i = (i + 1) & mask
        }
        return nil
    }

    func get(_ name: Name) -> Node? {
        if let i = find(name) { return slots[i] }
        return others.isEmpty ? nil : others[name]
    }

    /// Links `node` under `name`, replacing what was linked there. `own`: `name` is the
    /// node's own name in this directory.
    func set(_ node: Node, _ name: Name, own: Bool) {
        _ = remove(name)
        guard own else {
            others[name] = node
            return
        }
        // At most three quarters full: probe runs stay short.
        if (used + 1) * 4 > slots.count * 3 { grow() }
        place(node, Self.tag(name))
        used += 1
    }

    private func place(_ node: Node, _ t: UInt32) {
        let mask = slots.count - 1
        var i = Int(t >> 1) & mask
        while tags[i] != 0 { i = (i + 1) & mask }
        slots[i] = node
        tags[i] = t
    }

    /// Unlinks what is linked under `name`, if anything.
    @discardableResult
    func remove(_ name: Name) -> Node? {
        if let i = find(name) {
            let n = slots[i]
            deleteSlot(i)
            return n
        }
        return others.isEmpty ? nil : others.removeValue(forKey: name)
    }

    /// Every (name, node) link.
    var links: [(Name, Node)] {
        var out = slots.compactMap { $0.map { ($0.name, $0) } }
        out += others.map { ($0.key, $0.value) }
        return out
    }

    private func grow() {
        let oldSlots = slots, oldTags = tags
        let count = max(8, oldSlots.count * 2)
        slots = Array(repeating: nil, count: count)
        tags = Array(repeating: 0, count: count)
        for (i, t) in oldTags.enumerated() where t != 0 { place(oldSlots[i]!, t) }
    }

    /// Backward-shift deletion: later entries of the probe run move up, so that no
    /// tombstones are needed and every lookup stops at the first empty slot.
    private func deleteSlot(_ at: Int) {
        let mask = slots.count - 1
        var hole = at
        var j = at
        slots[hole] = nil
        tags[hole] = 0
        used -= 1
        while true {
            j = (j + 1) & mask
            let t = tags[j]
            guard t != 0 else { break }
            let home = Int(t >> 1) & mask
            // Move the entry into the hole unless its home lies cyclically in (hole, j].
            let stays = hole <= j ? (home > hole && home <= j) : (home > hole || home <= j)
            if !stays {
                slots[hole] = slots[j]
                tags[hole] = t
                slots[j] = nil
                tags[j] = 0
                hole = j
            }
        }
        if used == 0 {
            slots = []
            tags = []
        }
    }
}
