import Synchronization

/// Bounded cache of per-node, per-layer directory descriptors.
///
/// A directory descriptor follows its directory through renames, so an entry
/// stays right until the kernel forgets the node. The bound keeps the daemon
/// far below the open-file limit on trees of any size.
final class DirectoryFDCache: Sendable {
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

    /// Closes every descriptor (at unmount).
    func dropAll() {
        let all = state.withLock { s -> [Int32] in
            let fds = s.byNode.values.flatMap(\.values)
            s = State()
            return fds
        }
        all.forEach(Sys.close)
    }
}
