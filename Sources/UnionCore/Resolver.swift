import Glibc

/// What a name in a merged directory resolves to.
struct Resolution {
    var type: mode_t
    var layers: [Int]
    var stat: stat
    /// st_ino of the topmost lower-layer copy, which the kernel reports for merged objects.
    var lowerIno: UInt64?
}

/// What the resolver decided in one layer while resolving a name: `inspect` prints
/// these, so it can never tell a different story from the one lookups follow.
public enum ResolveDecision: Sendable {
    /// The layer has no such name (nor an OCI whiteout for it).
    case absent
    /// Skipped without a syscall: a listing showed this directory holds no `.wh.*` names.
    case absentKnownMarkerFree
    /// A `.wh.NAME` file: the name and every layer below are hidden.
    case ociWhiteout
    /// A 0/0 character device: the name and every layer below are hidden.
    case whiteout
    /// The topmost object of the name: it decides the type.
    case wins(stat)
    /// A directory below the winner that merges into it.
    case merges(stat)
    /// The directory here is opaque: nothing below is consulted.
    case opaque
    /// A non-directory below a merged directory: the merge stops here, unmerged.
    case endsMerge(stat)
}

/// Finds which layers serve a name: the lookup rules of the kernel's overlayfs.
///
/// Resolution walks the layers a directory merges from, top first, one component
/// at a time from cached directory descriptors. The first layer with the name
/// decides; a directory keeps merging with directories below it until an opaque
/// one, a whiteout, or a non-directory. Only ENOENT/ENOTDIR mean "not in this
/// layer" (`ifPresent`); any other answer from a layer is thrown, reported, and
/// never mistaken for absence.
final class Resolver: Sendable {
    let layers: [Layer]
    let nodes: NodeTable
    let diagnostics: Diagnostics
    let watch: LowerWatch?
    private let dirCache = DirectoryFDCache(limit: Resolver.directoryCacheLimit())

    /// Cached directory descriptors may use a quarter of the open-file limit, and at most
    /// 4096: the rest is for the files clients hold open and the listings in progress. A
    /// cache allowed to fill the descriptor table would leave every later request EMFILE
    /// until the kernel forgets nodes. (The daemon has raised its soft limit to the hard
    /// one before the union is built.)
    static func directoryCacheLimit() -> Int {
        guard let (soft, _) = try? Sys.openFileLimits() else { return 256 }
        return Int(min(4096, max(8, soft / 4)))
    }

    init(layers: [Layer], nodes: NodeTable, diagnostics: Diagnostics, watch: LowerWatch? = nil) {
        self.layers = layers
        self.nodes = nodes
        self.diagnostics = diagnostics
        self.watch = watch
    }

    // MARK: directory descriptors

    /// Runs `body` with an O_PATH descriptor of `node`'s directory in `layer`;
    /// ENOENT when the layer has no directory there.
    func withDirectory<T>(_ node: Node, in layer: Int, _ body: (Int32) throws(Errno) -> T) throws(Errno) -> T {
        if let fd = dirCache.get(node.id, layer) { return try body(fd) }
        if node.id == NodeTable.rootID { return try body(layers[layer].rootFD) }
        // One component at a time from the parent's descriptor: never a path longer than a
        // name, so trees deeper than PATH_MAX work, and each step refuses symlinks.
        let (parent, name) = nodes.locked { (node.parent, node.name) }
        guard let parent else { throw Errno.noEntry }
        let fd: Int32 = try withDirectory(parent, in: layer) { (pfd: Int32) throws(Errno) -> Int32 in
            do throws(Errno) {
                return try Sys.openAt(pfd, name, O_PATH | O_DIRECTORY)
            } catch where error.rawValue == ENOTDIR || error.rawValue == ELOOP {
                // A non-directory (O_NOFOLLOW refuses a symlink with ELOOP) where the
                // directory was: it is not in this layer any more.
                throw Errno.noEntry
            }
        }
        // Watched before anything in it is read: an edit after this point is reported.
        watch?.opened(node.id, layer, fd)
        if dirCache.put(node.id, layer, fd) { return try body(fd) }
        defer { Sys.close(fd) }
        return try body(fd)
    }

    /// Runs `body` with the directory that holds `node` in its top layer, and its name.
    func withEntry<T>(_ node: Node, _ body: (Int32, Name) throws(Errno) -> T) throws(Errno) -> T {
        let (parent, name, top) = nodes.locked { (node.parent, node.name, node.layers[0]) }
        guard let parent else {
            if node.id == NodeTable.rootID { return try body(layers[top].rootFD, .dot) }
            throw Errno.noEntry
        }
        return try withDirectory(parent, in: top) { (dfd: Int32) throws(Errno) -> T in try body(dfd, name) }
    }

    /// A readable descriptor of directory `node` in layer `li`; nil only where the layer
    /// has no such directory.
    func openForListing(_ node: Node, in li: Int) throws(Errno) -> Int32? {
        try ifPresent { () throws(Errno) -> Int32 in
            try withDirectory(node, in: li) { (fd: Int32) throws(Errno) -> Int32 in try Sys.reopen(fd, O_RDONLY | O_DIRECTORY) }
        }
    }

    /// A readable descriptor of directory `name` of `parent` in layer `li`; nil only where
    /// the layer has no directory of that name.
    func openForListing(_ parent: Node, _ name: Name, in li: Int) throws(Errno) -> Int32? {
        try ifPresent { () throws(Errno) -> Int32 in
            try withDirectory(parent, in: li) { (fd: Int32) throws(Errno) -> Int32 in
                do throws(Errno) {
                    return try Sys.openAt(fd, name, O_RDONLY | O_DIRECTORY)
                } catch where error.rawValue == ELOOP {
                    throw Errno.notDirectory
                }
            }
        }
    }

    /// Drops cached descriptors of a node the kernel no longer holds.
    func forget(_ id: UInt64) { dirCache.drop(id) }

    func releaseAll() { dirCache.dropAll() }

    // MARK: resolution

    /// Looks `name` up top-down through the layers `dir` merges from (or `only` those).
    /// `observe`, when given, hears every decision, layer by layer.
    func resolve(_ dir: Node, _ name: Name, layers only: [Int]? = nil,
                 observe: ((Int, ResolveDecision) -> Void)? = nil) throws(Errno) -> Resolution? {
        if Markers.isOCIMarkerName(name) { return nil }
        var found: Resolution?
        let stack = only ?? nodes.layers(of: dir)
        for li in stack {
            let stop: Bool
            do throws(Errno) {
                stop = try withDirectory(dir, in: li) { (dfd: Int32) throws(Errno) -> Bool in
                    try step(dir, dfd, li, name, last: li == stack.last, &found, observe)
                }
            } catch where error.meansAbsent {
                // The directory itself went missing from this layer (removed behind the mount).
                observe?(li, .absent)
                continue
            } catch {
                report(error, dir, name, li)
                throw error
            }
            if stop { break }
        }
        return found
    }

    /// One layer of `resolve`: true when the layers below are not consulted.
    private func step(_ dir: Node, _ dfd: Int32, _ li: Int, _ name: Name, last: Bool,
                      _ found: inout Resolution?, _ observe: ((Int, ResolveDecision) -> Void)?) throws(Errno) -> Bool {
        guard let st = try Sys.statIfPresent(dfd, name) else {
            // Absent here: an OCI whiteout in this layer still hides the layers below
            // (unless a listing showed this directory has no OCI markers at all).
            if nodes.locked({ dir.markerFree & (1 << UInt64(li)) != 0 }) {
                observe?(li, .absentKnownMarkerFree)
                return false
            }
            let hidden = try Markers.hasOCIWhiteout(dir: dfd, name: name)
            observe?(li, hidden ? .ociWhiteout : .absent)
            return hidden
        }
        if st.isWhiteoutDevice {
            observe?(li, found == nil ? .whiteout : .endsMerge(st))
            return true
        }
        if var r = found {
            guard st.isDirectory else {
                observe?(li, .endsMerge(st))
                return true
            }
            r.layers.append(li)
            if r.lowerIno == nil && !layers[li].isUpper { r.lowerIno = UInt64(st.st_ino) }
            found = r
            observe?(li, .merges(st))
        } else {
            // The winner's stat is what the kernel is shown: with the owner and mode its
            // layer may keep in an xattr.
            let shown = try layers[li].withOwnerXattr(st, .entry(dfd, name))
            found = Resolution(type: st.fileType, layers: [li], stat: shown,
                               lowerIno: layers[li].isUpper ? nil : UInt64(st.st_ino))
            observe?(li, .wins(shown))
            guard st.isDirectory else { return true }
        }
        // Opacity only matters when there is a layer below to hide.
        if last { return true }
        if try Markers.isOpaque(in: dfd, name) {
            observe?(li, .opaque)
            return true
        }
        return false
    }

    /// Whether any layer below upper in `parent`'s stack shows `name`: if so, removing
    /// it from upper must leave a whiteout, and a directory made there must be opaque.
    func lowerShows(_ parent: Node, _ name: Name, upper: Layer?) throws(Errno) -> Bool {
        guard let upper else { return false }
        let below = nodes.layers(of: parent).filter { $0 != upper.index }
        return try resolve(parent, name, layers: below) != nil
    }

    /// Whether directory `name` in layer `li`'s copy of `parent` is opaque.
    func isOpaque(_ parent: Node, _ name: Name, in li: Int) throws(Errno) -> Bool {
        try withDirectory(parent, in: li) { (dfd: Int32) throws(Errno) -> Bool in try Markers.isOpaque(in: dfd, name) }
    }

    private func report(_ error: Errno, _ dir: Node, _ name: Name, _ li: Int) {
        let path = Bytes.display(Bytes.join((nodes.path(of: dir) ?? []) + [name]))
        diagnostics.report("lookup of /\(path) in \(layers[li].label) \(layers[li].displayPath): \(error)")
    }

    // MARK: listings

    /// The merged entries of a directory over `stack`; `open` gives the directory's
    /// readable descriptor in a layer, or nil where that layer lacks it. Any error
    /// reading a layer ends the listing: a partial merge would show deleted names.
    func listing(stack: [Int], open: (Int) throws(Errno) -> Int32?) throws(Errno) -> MergedListing {
        var listing = MergedListing()
        for li in stack {
            guard let fd = try open(li) else { continue }
            let statFD: Int32
            do throws(Errno) { statFD = try Sys.dup(fd) } catch { Sys.close(fd); throw error }
            defer { Sys.close(statFD) }
            var raw: [MergedListing.RawEntry] = []
            try Sys.readDirectory(fd) { (name: Name, type: UInt8, ino: UInt64) throws(Errno) in
                var type = type
                if type == UInt8(DT_UNKNOWN) {
                    // A name removed since it was read is simply gone.
                    guard let st = try Sys.statIfPresent(statFD, name) else { return }
                    type = UInt8(st.fileType >> 12)
                }
                raw.append(.init(name: name, type: type, ino: ino))
            }
            try listing.add(layer: li, isUpper: layers[li].isUpper, entries: raw) { (name: Name) throws(Errno) -> Bool in
                try Sys.statIfPresent(statFD, name)?.isWhiteoutDevice ?? false
            }
        }
        return listing
    }
}
