import Glibc
import Synchronization

/// Directory listings: the merge of every layer's entries.
extension Union {
    /// Opens a directory handle; its listing is taken when a readdir pass starts
    /// (see `MergedDirectory`), so offsets into it stay valid and seekdir and long
    /// listings neither skip nor repeat.
    public func opendir(_ id: UInt64) throws(Errno) -> MergedDirectory {
        let n = try node(id)
        guard n.isDirectory else { throw Errno.notDirectory }
        // A directory whose lower edits may go unreported is listed afresh on every open.
        return MergedDirectory(cacheable: lowerEditsReported(id))
    }

    /// The merged listing of directory `id`, with "." and "..": what one pass of
    /// readdir over a handle serves. Any layer that cannot be read fails the listing.
    public func list(_ id: UInt64) throws(Errno) -> [DirectoryEntry] {
        let n = try node(id)
        guard n.isDirectory else { throw Errno.notDirectory }
        let parentIno = nodes.locked { n.parent?.ino } ?? n.ino
        let stack = nodes.layers(of: n)
        let epoch = lowerEditEpoch
        let token = namespace.quiet()
        let listing = try resolver.listing(stack: stack) { (li: Int) throws(Errno) -> Int32? in try resolver.openForListing(n, in: li) }
        var free = listing.markerFreeLayers
        if let upper, format.whiteout == .ociFile { free &= ~(1 << UInt64(upper.index)) }
        // A lower edit during the listing may have added a marker it did not see.
        if lowerEditEpoch != epoch { free = 0 }
        nodes.locked { n.markerFree = free }
        let known: [Name: UInt64] = nodes.locked { Dictionary(n.childLinks.map { ($0.0, $0.1.ino) }, uniquingKeysWith: { a, _ in a }) }
        // The listing says which layer holds each name while the union changed none of them.
        let listedAt = token.flatMap { namespace.unchanged(since: $0) && lowerEditEpoch == epoch ? $0 : nil }
        var entries: [DirectoryEntry] = [
            DirectoryEntry(name: .dot, type: UInt8(DT_DIR), ino: n.ino),
            DirectoryEntry(name: .dotDot, type: UInt8(DT_DIR), ino: parentIno),
        ]
        entries.reserveCapacity(listing.count + 2)
        for e in listing.merged() {
            var ino = presenter.mapIno(e.ino, layer: e.layer)
            if let k = known[e.name] {
                ino = k
            } else if let lower = e.lowerIno, let ll = e.lowerLayer {
                // A merged subdirectory shows its lower number unless it is opaque.
                if try !resolver.isOpaque(n, e.name, in: e.layer) { ino = presenter.mapIno(lower, layer: ll) }
            } else if e.type == UInt8(DT_DIR), config.redirectDir.follows, e.layer == upper?.index,
                      try resolver.withDirectory(n, in: e.layer, { (fd: Int32) throws(Errno) -> Bool in
                          try Markers.redirect(in: fd, e.name, format: format) != nil
                      }) {
                // A renamed directory shows the number of the lower one it merges, as lookup does.
                if let r = try resolver.resolve(n, e.name) { ino = presenter.reportedIno(r) }
            }
            entries.append(DirectoryEntry(name: e.name, type: e.type, ino: ino, layer: e.layer, listedAt: listedAt))
        }
        return entries
    }

    /// Whether the merged directory `name` in `parent` (resolved as `r`) has any entry.
    func isEmptyDirectory(_ parent: Node, _ name: Name, _ r: Resolution) throws(Errno) -> Bool {
        try resolver.listing(stack: r.layers) { (li: Int) throws(Errno) -> Int32? in
            try resolver.openForListing(parent, name, r, at: r.layers.firstIndex(of: li)!)
        }.count == 0
    }

    public func fsyncdir(_ id: UInt64) throws(Errno) {
        guard let upper, !config.skipSync else { return }
        let n = try node(id)
        guard nodes.layers(of: n)[0] == upper.index else { return }
        try resolver.withDirectory(n, in: upper.index) { (pfd: Int32) throws(Errno) in
            let fd = try Sys.reopen(pfd, O_RDONLY | O_DIRECTORY)
            defer { Sys.close(fd) }
            try Sys.fsync(fd)
        }
    }
}

/// An open directory handle. A pass of readdir starting at offset 0 lists the
/// merged directory afresh (as the kernel's overlay does on its first iterate and
/// on rewinddir); the following offsets index that snapshot, so they stay valid
/// however the directory changes in between.
public final class MergedDirectory: Sendable {
    private let state = Mutex<[DirectoryEntry]?>(nil)
    /// Whether the kernel may cache the listing across opens. Every change to a
    /// directory through this mount (create, unlink, rename ...) makes the kernel drop its
    /// cached listing, and so does the invalidation after a lower edit; copy-ups and
    /// markers never change what is listed. Not where lower edits may go unreported.
    public let cacheable: Bool

    init(cacheable: Bool) { self.cacheable = cacheable }

    /// The snapshot to serve a read at `offset` from, listing anew at offset 0.
    public func entries(at offset: Int, list: () throws(Errno) -> [DirectoryEntry]) throws(Errno) -> [DirectoryEntry] {
        if offset != 0, let current = state.withLock({ $0 }) { return current }
        let fresh = try list()
        state.withLock { $0 = fresh }
        return fresh
    }
}
