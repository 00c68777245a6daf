import Synchronization

/// A sequence lock over the union's own changes to its layers' names: what lets a
/// readdirplus entry be resolved from the layer its listing found it in.
///
/// A merged listing says, for every name, the top layer that holds it, and that no layer
/// above holds it or a whiteout for it. That stays true until the union itself changes a
/// name (the lower layers are read-only; their edits behind the mount are counted by the
/// lower-edit epoch instead; an upper edited behind the mount is undefined, as for the
/// kernel's overlay). So every operation that may create, remove, rename, copy up or mark a
/// name counts itself as begun before it touches a layer and as finished after; a listing
/// taken while none was running carries the count, and an entry of it may skip the layers
/// above its own only while the count of begun changes is still that one.
final class NamespaceSequence: Sendable {
    private let begun = Atomic<UInt64>(0)
    private let finished = Atomic<UInt64>(0)

    /// A change to the layers' names starts; `end()` must follow (in a `defer`). Nested
    /// pairs (a copy-up inside a rename) count twice, which is harmless.
    func begin() { begun.add(1, ordering: .sequentiallyConsistent) }
    func end() { finished.add(1, ordering: .sequentiallyConsistent) }

    /// The token of a moment when no change was running; nil if one was.
    func quiet() -> UInt64? {
        let done = finished.load(ordering: .sequentiallyConsistent)
        return begun.load(ordering: .sequentiallyConsistent) == done ? done : nil
    }

    /// Whether no change began since `token` was taken.
    func unchanged(since token: UInt64) -> Bool {
        begun.load(ordering: .sequentiallyConsistent) == token
    }
}
