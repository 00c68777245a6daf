/// The nodes the kernel holds, by node id: an array of slots, where a dictionary would
/// spend 16 bytes an entry at a load between 3/8 and 3/4 (and twice that while it grows).
///
/// An id is a slot number in its low 32 bits and that slot's generation in the high ones:
/// a slot freed by FORGET is reused under the next generation, so an id the kernel (or a
/// queued lower-edit notice) still quotes after its node left never finds another node.
/// The root is slot 1, generation 0: FUSE_ROOT_ID. Guarded by the table lock.
struct NodeSlots {
    private var nodes: [Node?] = [nil, nil]
    private var generations: [UInt32] = [0, 0]
    private var free: [UInt32] = []
    private(set) var count = 0

    /// The id the next node gets.
    func nextID() -> UInt64 {
        let slot = free.last.map(Int.init) ?? nodes.count
        let generation = slot < generations.count ? generations[slot] : 0
        return UInt64(slot) | UInt64(generation) << 32
    }

    subscript(id: UInt64) -> Node? {
        let slot = Int(id & 0xFFFF_FFFF)
        guard slot < nodes.count, let n = nodes[slot], n.id == id else { return nil }
        return n
    }

    /// Stores `node` under its id, which `nextID()` gave (or the root's).
    mutating func insert(_ node: Node) {
        let slot = Int(node.id & 0xFFFF_FFFF)
        if slot == nodes.count {
            nodes.append(node)
            generations.append(UInt32(truncatingIfNeeded: node.id >> 32))
        } else {
            if free.last.map(Int.init) == slot { free.removeLast() }
            nodes[slot] = node
        }
        count += 1
    }

    mutating func remove(_ id: UInt64) {
        let slot = Int(id & 0xFFFF_FFFF)
        guard slot < nodes.count, nodes[slot]?.id == id else { return }
        nodes[slot] = nil
        generations[slot] &+= 1
        free.append(UInt32(slot))
        count -= 1
    }

    var all: [Node] { nodes.compactMap { $0 } }
}
