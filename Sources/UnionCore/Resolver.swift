import Glibc

/// What a name in a merged directory resolves to.
struct Resolution {
    var type: mode_t
    var layers: [Int]
    /// Where the name is in each of `layers` (see `LayerPath`).
    var paths: [LayerPath]
    /// The stat of the top copy (for a metacopy file, with the blocks of its data).
    var stat: stat
    /// st_ino of the topmost lower-layer copy, which the kernel reports for merged objects.
    var lowerIno: UInt64?
    /// The upper copy's own redirect.
    var redirect: Redirect?
    /// For a metacopy file: where its data is.
    var data: DataSource?

    var placement: Placement { Placement(layers: layers, paths: paths, redirect: redirect, data: data) }
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
    /// A 0/0 character device, or a zero-size file with `overlay.whiteout`: the name and
    /// every layer below are hidden.
    case whiteout
    /// The topmost object of the name: it decides the type.
    case wins(stat)
    /// A directory below the winner that merges into it.
    case merges(stat)
    /// The directory here is opaque: nothing below is consulted.
    case opaque
    /// A non-directory below a merged directory: the merge stops here, unmerged.
    case endsMerge(stat)
    /// The copy here carries `overlay.redirect`: the layers below are searched under
    /// this name (relative) or path (absolute) instead.
    case redirect([UInt8])
    /// The copy here is a metacopy: its metadata shows, its data is looked up below.
    case metacopy
    /// The lower file that holds the data of the metacopy above.
    case data(stat)
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
    /// The format whose `overlay.*` names are read (redirect, metacopy, xattr whiteouts).
    let format: MarkerFormat
    let redirectMode: RedirectMode
    let metacopy: Bool
    let dataLayers: [Int]
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

    init(layers: [Layer], nodes: NodeTable, diagnostics: Diagnostics, watch: LowerWatch? = nil,
         format: MarkerFormat = MarkerFormat(), redirectMode: RedirectMode = .off, metacopy: Bool = false) {
        self.layers = layers
        self.nodes = nodes
        self.diagnostics = diagnostics
        self.watch = watch
        self.format = format
        self.redirectMode = redirectMode
        self.metacopy = metacopy
        self.dataLayers = layers.filter(\.isDataOnly).map(\.index)
    }

    // MARK: directory descriptors

    /// Runs `body` with an O_PATH descriptor of `node`'s directory in `layer`;
    /// ENOENT when the layer has no directory there.
    func withDirectory<T>(_ node: Node, in layer: Int, _ body: (Int32) throws(Errno) -> T) throws(Errno) -> T {
        if let fd = dirCache.get(node.id, layer) { return try body(fd) }
        if node.id == NodeTable.rootID { return try body(layers[layer].rootFD) }
        let (parent, name, path) = nodes.locked { (node.parent, node.name, node.path(in: layer)) }
        let fd: Int32
        switch path {
        case .absolute(let parts):
            // Redirected from the layer root: never through the parent's copy.
            fd = try openBeneath(layer, parts, O_PATH | O_DIRECTORY)
        case .same, .named:
            guard let parent else { throw Errno.noEntry }
            let entry: Name
            if case .named(let n) = path { entry = n } else { entry = name }
            // One component at a time from the parent's descriptor: never a path longer than a
            // name, so trees deeper than PATH_MAX work, and each step refuses symlinks.
            fd = try withDirectory(parent, in: layer) { (pfd: Int32) throws(Errno) -> Int32 in
                try Self.openDirectoryEntry(pfd, entry, O_PATH | O_DIRECTORY)
            }
        }
        // Watched before anything in it is read: an edit after this point is reported.
        watch?.opened(node.id, layer, fd)
        if dirCache.put(node.id, layer, fd) { return try body(fd) }
        defer { Sys.close(fd) }
        return try body(fd)
    }

    /// Opens directory `name` of `dir`; a non-directory (O_NOFOLLOW refuses a symlink with
    /// ELOOP) where the directory was means it is not in this layer any more: ENOENT.
    static func openDirectoryEntry(_ dir: Int32, _ name: Name, _ flags: Int32) throws(Errno) -> Int32 {
        do throws(Errno) {
            return try Sys.openAt(dir, name, flags)
        } catch where error.rawValue == ENOTDIR || error.rawValue == ELOOP {
            throw Errno.noEntry
        }
    }

    /// Opens the object at `parts` from the root of `layer`, one name at a time, following
    /// no symlink (a redirect's path can never lead out of its layer); the last component
    /// with `flags`, those before it as directories. ENOENT when a component is missing or
    /// not a directory.
    func openBeneath(_ layer: Int, _ parts: [Name], _ flags: Int32) throws(Errno) -> Int32 {
        guard let last = parts.last else { return try Sys.reopen(layers[layer].rootFD, flags) }
        var dir = layers[layer].rootFD
        var owned: Int32?
        defer { owned.map(Sys.close) }
        for part in parts.dropLast() {
            if Redirect.isDotName(part) { throw Errno.access }
            let next = try Self.openDirectoryEntry(dir, part, O_PATH | O_DIRECTORY)
            owned.map(Sys.close)
            owned = next
            dir = next
        }
        if Redirect.isDotName(last) { throw Errno.access }
        if flags & O_DIRECTORY != 0 { return try Self.openDirectoryEntry(dir, last, flags) }
        do throws(Errno) {
            return try Sys.openAt(dir, last, flags)
        } catch where error.rawValue == ENOTDIR {
            throw Errno.noEntry
        }
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

    /// A readable descriptor of directory `name` of `parent`, resolved as `r`, in its
    /// `i`th layer; nil only where that layer has no such directory.
    func openForListing(_ parent: Node, _ name: Name, _ r: Resolution, at i: Int) throws(Errno) -> Int32? {
        let li = r.layers[i]
        return try ifPresent { () throws(Errno) -> Int32 in
            switch r.paths[i] {
            case .absolute(let parts):
                return try openBeneath(li, parts, O_RDONLY | O_DIRECTORY)
            case .same, .named:
                let entry: Name
                if case .named(let n) = r.paths[i] { entry = n } else { entry = name }
                return try withDirectory(parent, in: li) { (fd: Int32) throws(Errno) -> Int32 in
                    do throws(Errno) {
                        return try Sys.openAt(fd, entry, O_RDONLY | O_DIRECTORY)
                    } catch where error.rawValue == ELOOP {
                        throw Errno.notDirectory
                    }
                }
            }
        }
    }

    /// Drops cached descriptors of a node the kernel no longer holds.
    func forget(_ id: UInt64) { dirCache.drop(id) }

    func releaseAll() { dirCache.dropAll() }

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

    func report(_ error: Errno, _ dir: Node, _ name: Name, _ li: Int) {
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
            // Linux 6.7+: in a lower directory marked opaque=x, zero-size files carrying
            // overlay.whiteout are whiteouts too.
            var xattrWhiteouts = false
            if !layers[li].isUpper { xattrWhiteouts = try Markers.hasXattrWhiteouts(directory: statFD, format: format) }
            try listing.add(layer: li, isUpper: layers[li].isUpper, entries: raw, regularWhiteouts: xattrWhiteouts) {
                (name: Name) throws(Errno) -> Bool in
                guard let st = try Sys.statIfPresent(statFD, name) else { return false }
                if st.isWhiteoutDevice { return true }
                return xattrWhiteouts ? try Markers.isXattrWhiteout(in: statFD, name, st, format: format) : false
            }
        }
        return listing
    }
}
