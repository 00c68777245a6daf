import Glibc

/// The lookup rules: which layers serve a name, step by step as the kernel's overlayfs
/// takes them (fs/overlayfs/namei.c: ovl_lookup, ovl_lookup_layer, ovl_lookup_single).
///
/// The walk goes down the layers the parent directory merges from, top first, carrying
/// the name it looks for. The first layer holding the name decides the type; a directory
/// keeps merging with directories below until an opaque one, a whiteout or a
/// non-directory; a metacopy file keeps looking for the file that holds its data. A
/// redirect met on the way changes the name looked for in the layers below: another name
/// in the same parent (relative), or a path from the layer roots (absolute, after which
/// the walk goes on from the root's layers below the current one). Each layer is entered
/// one name at a time from a directory descriptor of that layer, never following a
/// symlink: nothing resolves outside the layer roots.
extension Resolver {
    /// What a lookup carries from layer to layer (the kernel's `ovl_lookup_data`).
    struct Walk {
        var name: LookupName
        /// The name is a directory: only directories merge below it.
        var isDir = false
        var stop = false
        /// The bottom of the layers that matter: no opaque mark or redirect is read there.
        var last = false
        /// A redirect was met (the kernel's `d.redirect != NULL`).
        var metRedirect = false
        /// The last redirect checked was absolute (a data-only lookup needs one).
        var absoluteRedirect = false
        /// The copy met last is a metacopy file.
        var metacopy = false
        /// Set by the step for the object it returned (for the observer).
        var opaqueHere = false
        var redirectHere: Redirect?
    }

    /// What one layer holds at the name.
    enum Outcome {
        case absent(knownFree: Bool)
        case ociWhiteout
        /// A whiteout device or an xattr whiteout.
        case whiteout(stat)
        /// An object that ends the walk without taking part (a non-directory below a directory).
        case ends(stat)
        /// An object that takes part, found at `path` in the layer.
        case hit(stat, LayerPath)
    }

    /// Looks `name` up top-down through the layers `dir` merges from (or `only` those).
    /// `observe`, when given, hears every decision, layer by layer.
    func resolve(_ dir: Node, _ name: Name, layers only: [Int]? = nil,
                 observe: ((Int, ResolveDecision) -> Void)? = nil) throws(Errno) -> Resolution? {
        if Markers.isOCIMarkerName(name) { return nil }
        var w = Walk(name: .relative(name))
        var stack = only ?? nodes.layers(of: dir)
        let rootStack = nodes.layers(of: nodes.root)
        // Redirects are read wherever they could be followed (or must be refused).
        let checkRedirect = redirectMode.follows || !dataLayers.isEmpty
        var fromRoot = false
        var found: Resolution?
        var topMetacopy = false
        var lowerHits = 0
        // A metacopy or a redirect met above: following it into a layer below needs the
        // feature on (Linux 6.16+: refused before each lower layer, and at the end).
        var nextMetacopy = false
        var nextRedirect = false
        var dataStat: stat?
        var i = 0
        while i < stack.count && !w.stop {
            let li = stack[i]
            let isUpper = layers[li].isUpper
            if !isUpper, let refusal = refusal(nextMetacopy, nextRedirect) {
                refuse(refusal, dir, name, li)
                throw Errno.permission
            }
            if !checkRedirect {
                w.last = i == stack.count - 1
            } else if !isUpper && (w.isDir || dataLayers.isEmpty) {
                w.last = li == rootStack.last
            }
            w.opaqueHere = false
            w.redirectHere = nil
            let outcome: Outcome
            do throws(Errno) {
                if fromRoot {
                    outcome = try lookupFromRoot(li, &w)
                } else {
                    let free = nodes.locked { li < 64 && dir.markerFree & (1 << UInt64(li)) != 0 }
                    outcome = try withDirectory(dir, in: li) { (dfd: Int32) throws(Errno) -> Outcome in
                        try lookupRelative(dfd, li, name, &w, markerFree: free)
                    }
                }
            } catch where error.meansAbsent {
                // The directory itself went missing from this layer (removed behind the mount).
                observe?(li, .absent)
                i += 1
                continue
            } catch {
                report(error, dir, name, li)
                throw error
            }
            guard case .hit(let st, let path) = outcome else {
                switch outcome {
                case .absent(let known): observe?(li, known ? .absentKnownMarkerFree : .absent)
                case .ociWhiteout: observe?(li, .ociWhiteout)
                case .whiteout(let st): observe?(li, found == nil ? .whiteout : .endsMerge(st))
                case .ends(let st): observe?(li, .endsMerge(st))
                case .hit: break
                }
                i += 1
                continue
            }
            if !isUpper { lowerHits += 1 }
            if var r = found {
                if r.type == S_IFDIR {
                    r.layers.append(li)
                    r.paths.append(path)
                    if r.lowerIno == nil && !isUpper { r.lowerIno = UInt64(st.st_ino) }
                    observe?(li, .merges(st))
                } else if !w.metacopy {
                    // The file below a metacopy that holds the data.
                    guard let abs = absolutePath(dir, name, path, in: li) else { throw Errno.noEntry }
                    r.data = DataSource(layer: li, path: abs, blocks: Int64(st.st_blocks))
                    dataStat = st
                    observe?(li, .data(st))
                } else {
                    observe?(li, .metacopy)
                }
                found = r
            } else {
                found = Resolution(type: st.fileType, layers: [li], paths: [path], stat: st,
                                   lowerIno: isUpper ? nil : UInt64(st.st_ino),
                                   redirect: isUpper ? w.redirectHere : nil, data: nil)
                observe?(li, .wins(st))
                if st.fileType != S_IFDIR && w.metacopy {
                    topMetacopy = true
                    observe?(li, .metacopy)
                }
            }
            if w.opaqueHere { observe?(li, .opaque) }
            if let r = w.redirectHere { observe?(li, .redirect(r.bytes)) }
            if w.metacopy { nextMetacopy = true }
            if w.metRedirect { nextRedirect = true }
            if w.stop { break }
            if case .absolute = w.name, !fromRoot {
                // An absolute redirect: go on from the root's layers below this one.
                fromRoot = true
                stack = rootStack.filter { $0 > li }
                i = 0
                continue
            }
            i += 1
        }
        // A lower metacopy with an absolute redirect takes its data from the data-only
        // layers, looked up at first access (the kernel's lazy lowerdata); that needs
        // neither metacopy=on nor redirect following: the data-only layers ask for it.
        var dataPath: [Name]?
        if w.metacopy, lowerHits > 0, !dataLayers.isEmpty, w.absoluteRedirect, case .absolute(let parts) = w.name {
            dataPath = parts
        } else if let refusal = refusal(nextMetacopy, nextRedirect), found != nil {
            refuse(refusal, dir, name, found!.layers[0])
            throw Errno.permission
        }
        guard var r = found else { return nil }
        if topMetacopy {
            if r.data == nil {
                guard let dataPath else {
                    refuse("metacopy with no lower data found for", dir, name, r.layers[0])
                    throw Errno.io
                }
                r.data = DataSource(layer: nil, path: dataPath)
            }
            if let dataStat {
                r.stat.st_blocks = dataStat.st_blocks
            } else {
                let bs = Int64(max(r.stat.st_blksize, 512))
                r.stat.st_blocks = blkcnt_t((Int64(r.stat.st_size) + bs - 1) / bs * bs / 512)
            }
        }
        return r
    }

    /// The name carried (relative) in the parent's copy `dfd` of layer `li`: found under
    /// the merged name `original`, or under the name a redirect above gave.
    private func lookupRelative(_ dfd: Int32, _ li: Int, _ original: Name, _ w: inout Walk,
                                markerFree: Bool) throws(Errno) -> Outcome {
        guard case .relative(let n) = w.name else { return .absent(knownFree: false) }
        let outcome = try lookupOne(dfd, n, li, lastElement: true, at: 0, &w, markerFree: markerFree && n == original)
        guard case .hit(let st, _) = outcome else { return outcome }
        return .hit(st, n == original ? .same : .named(n))
    }

    /// The absolute path from the root of layer `li`, one component at a time: each is
    /// checked as the kernel does (whiteouts, opaque marks and redirects met on the way
    /// count for the layers below).
    private func lookupFromRoot(_ li: Int, _ w: inout Walk) throws(Errno) -> Outcome {
        var dir = layers[li].rootFD
        var owned: Int32?
        defer { owned.map(Sys.close) }
        var walked: [Name] = []
        var k = 0
        while case .absolute(let parts) = w.name, k < parts.count {
            let last = k == parts.count - 1
            let outcome = try lookupOne(dir, parts[k], li, lastElement: last, at: k, &w, markerFree: false)
            guard case .hit(let st, _) = outcome else { return outcome }
            walked.append(parts[k])
            if last { return .hit(st, .absolute(walked)) }
            let next = try ifPresent { () throws(Errno) -> Int32 in
                try Self.openDirectoryEntry(dir, parts[k], O_PATH | O_DIRECTORY)
            }
            guard let next else { return .absent(knownFree: false) }
            owned.map(Sys.close)
            owned = next
            dir = next
            // An absolute redirect met here replaced the path up to this component.
            if case .absolute(let p)? = w.redirectHere { k = p.count } else { k += 1 }
            w.redirectHere = nil
            w.opaqueHere = false
        }
        return .absent(knownFree: false)
    }

    /// One name in one directory of one layer (the kernel's ovl_lookup_single): updates
    /// the walk and says what the layer holds. `lastElement` is false for the components
    /// of an absolute path before its last.
    private func lookupOne(_ dfd: Int32, _ name: Name, _ li: Int, lastElement: Bool, at index: Int,
                           _ w: inout Walk, markerFree: Bool) throws(Errno) -> Outcome {
        if Redirect.isDotName(name) { throw Errno.access }
        guard name.count <= Int(NAME_MAX), let found = try Sys.statIfPresent(dfd, name) else {
            // Absent here: an OCI whiteout in this layer still hides the layers below
            // (unless a listing showed this directory has no OCI markers at all).
            if markerFree { return .absent(knownFree: true) }
            guard name.count <= Int(NAME_MAX), try Markers.hasOCIWhiteout(dir: dfd, name: name) else {
                return .absent(knownFree: false)
            }
            w.stop = true
            return .ociWhiteout
        }
        var whiteout = found.isWhiteoutDevice
        if !whiteout { whiteout = try Markers.isXattrWhiteout(in: dfd, name, found, format: format) }
        // What the kernel is shown: with the owner and mode the layer may keep in an xattr.
        let st = lastElement && !whiteout ? try layers[li].withOwnerXattr(found, .entry(dfd, name)) : found
        if whiteout {
            w.stop = true
            return .whiteout(st)
        }
        // Below a metacopy only a regular file can hold the data.
        if lastElement && w.metacopy && st.fileType != S_IFREG {
            w.stop = true
            return .ends(st)
        }
        var mayRedirect = true
        if !st.isDirectory {
            if w.isDir || !lastElement {
                w.stop = true
                return .ends(st)
            }
            let mc = st.fileType == S_IFREG ? try Markers.isMetacopy(in: dfd, name, format: format) : false
            w.metacopy = mc
            w.stop = !mc
            if !mc || w.last { return .hit(st, .same) }
        } else {
            if lastElement { w.isDir = true }
            // Opacity and redirects only matter when there is a layer below.
            if w.last { return .hit(st, .same) }
            let (mark, hasRedirect) = try Markers.directoryMark(in: dfd, name, format: format, isUpper: layers[li].isUpper)
            if mark == .opaque {
                w.stop = true
                if lastElement { w.opaqueHere = true }
                return .hit(st, .same)
            }
            mayRedirect = hasRedirect
        }
        w.absoluteRedirect = false
        if mayRedirect, let r = try Markers.redirect(in: dfd, name, format: format) {
            w.name = w.name.redirected(r, at: index)
            w.metRedirect = true
            w.absoluteRedirect = r.isAbsolute
            // An absolute redirect below an opaque ancestor still reaches the layers below.
            if r.isAbsolute { w.stop = false }
            w.redirectHere = r
        }
        return .hit(st, .same)
    }

    /// The path from the root of layer `li` of `node`'s copy there.
    func absolutePath(of node: Node, in li: Int) -> [Name]? {
        let (parent, name, path) = nodes.locked { (node.parent, node.name, node.path(in: li)) }
        guard let parent else { return nil }
        return absolutePath(parent, name, path, in: li)
    }

    /// The path from the root of layer `li` of the object found at `path` (for the
    /// merged `name`) in `dir`'s copy of that layer.
    private func absolutePath(_ dir: Node, _ name: Name, _ path: LayerPath, in li: Int) -> [Name]? {
        nodes.locked { () -> [Name]? in
            var tail: [Name]
            switch path {
            case .absolute(let p): return p
            case .named(let n): tail = [n]
            case .same: tail = [name]
            }
            var n = dir
            while n.id != NodeTable.rootID {
                switch n.path(in: li) {
                case .absolute(let p): return p + tail.reversed()
                case .named(let x): tail.append(x)
                case .same: tail.append(n.name)
                }
                guard let p = n.parent else { return nil }
                n = p
            }
            return Array(tail.reversed())
        }
    }

    /// Why following what was met above is refused, if it is (the kernel's
    /// ovl_check_follow_redirect): it is like a symlink into the layer below that skips
    /// the permission checks, so only with the feature on.
    private func refusal(_ nextMetacopy: Bool, _ nextRedirect: Bool) -> String? {
        if nextMetacopy && !metacopy { return "refusing to follow metacopy origin for" }
        if nextRedirect && !redirectMode.follows { return "refusing to follow redirect for" }
        return nil
    }

    private func refuse(_ what: String, _ dir: Node, _ name: Name, _ li: Int) {
        let path = Bytes.display(Bytes.join((nodes.path(of: dir) ?? []) + [name]))
        diagnostics.report("\(what) /\(path) (in \(layers[li].label) \(layers[li].displayPath))")
    }
}

/// Metacopy data.
extension Resolver {
    /// Opens the file that holds `node`'s data (a metacopy's lower file) with `flags`,
    /// searching the data-only layers first if that was left for the first access.
    func openData(_ node: Node, _ flags: Int32) throws(Errno) -> Int32 {
        guard let data = nodes.locked({ node.data }) else { throw Errno.io }
        let (fd, found) = try openData(data, flags)
        if found != data { nodes.locked { if node.data?.path == found.path { node.data = found } } }
        return fd
    }

    /// Opens the data file `source` names; returns it with the data-only layer filled in
    /// if it had to be searched.
    func openData(_ source: DataSource, _ flags: Int32) throws(Errno) -> (Int32, DataSource) {
        var data = source
        if data.layer == nil {
            let (li, st) = try findInDataLayers(data.path)
            data.layer = li
            data.blocks = Int64(st.st_blocks)
        }
        return (try openBeneath(data.layer!, data.path, flags), data)
    }

    /// The first data-only layer holding a regular file at `path` (the kernel's
    /// ovl_lookup_data_layers: anything else there does not count).
    private func findInDataLayers(_ path: [Name]) throws(Errno) -> (Int, stat) {
        for li in dataLayers {
            guard let fd = try ifPresent({ () throws(Errno) -> Int32 in
                do throws(Errno) { return try openBeneath(li, path, O_PATH) } catch where error.rawValue == ELOOP { throw Errno.noEntry }
            }) else { continue }
            defer { Sys.close(fd) }
            let st = try Sys.fstat(fd)
            if st.fileType == S_IFREG { return (li, st) }
        }
        diagnostics.report("lazy lowerdata lookup failed for /\(Bytes.display(Bytes.join(path))): not in any data-only layer")
        throw Errno.noEntry
    }
}
