import Glibc

/// rename(2) and its RENAME_NOREPLACE / RENAME_EXCHANGE forms.
extension Union {
    public func rename(_ parentID: UInt64, _ name: Name, _ newParentID: UInt64, _ newName: Name, flags: UInt32) throws(Errno) {
        namespace.begin()
        defer { namespace.end() }
        let parent = try node(parentID), newParent = try node(newParentID)
        let (upper, _, markers) = try requireUpper()
        guard newParent.isDirectory else { throw Errno.notDirectory }
        if Markers.isOCIMarkerName(newName) { throw Errno.permission }
        guard let src = try resolveIndexed(parent, name) else { throw Errno.noEntry }
        var dst = try resolveIndexed(newParent, newName)
        // The kernel's overlay takes only these two flags (RENAME_WHITEOUT is its own tool).
        guard flags & ~(Sys.renameNoReplace | Sys.renameExchange) == 0 else { throw Errno.invalid }
        let exchange = flags & Sys.renameExchange != 0
        if flags & Sys.renameNoReplace != 0, dst != nil { throw Errno.exists }
        if exchange && dst == nil { throw Errno.noEntry }
        if parentID == newParentID && name == newName { return }

        // Without redirect_dir=on the kernel refuses to move a directory with lower content.
        let redirectsDirs = config.redirectDir.creates
        if src.type == S_IFDIR && hasLower(src) && !redirectsDirs { throw Errno.crossDevice }
        if let dst, !exchange {
            if src.type == S_IFDIR && dst.type != S_IFDIR { throw Errno.notDirectory }
            if src.type != S_IFDIR && dst.type == S_IFDIR { throw Errno.isDirectory }
            if dst.type == S_IFDIR, try !isEmptyDirectory(newParent, newName, dst) { throw Errno.notEmpty }
        }
        if let dst, exchange, dst.type == S_IFDIR, hasLower(dst), !redirectsDirs { throw Errno.crossDevice }

        // What moves is copied up through its node (a metacopy keeps its state there): one
        // the kernel has not looked up is held for the length of the rename.
        let heldSrc = nodes.child(parent, name) == nil ? try lookup(parentID, name).0 : nil
        let heldDst = exchange && nodes.child(newParent, newName) == nil ? try lookup(newParentID, newName).0 : nil
        defer {
            if let heldSrc { forget(heldSrc.id, 1) }
            if let heldDst { forget(heldDst.id, 1) }
        }
        // Only what is renamed comes up (metadata only for a file, with metacopy=on), as
        // the kernel's ovl_copy_up(old): a directory with lower content keeps it below and
        // finds it again through its redirect.
        try copyUpNamed(parent, name, metadataOnly: true)
        if exchange { try copyUpNamed(newParent, newName, metadataOnly: true) }
        try copyUp(newParent)
        // A lower hard link renamed over loses a name: the index records it (ovl_nlink_start).
        if !exchange, dst != nil { dst = try copyUpIndexedName(newParent, newName, dst) }
        let samedir = parentID == newParentID
        let srcRedirect = try redirectForMove(parent, name, src, samedir: samedir)
        let dstRedirect = exchange ? try redirectForMove(newParent, newName, dst!, samedir: samedir) : nil
        let srcMoves = src.type == S_IFDIR && hasLower(src) || nodes.child(parent, name).map { n in nodes.locked { n.data != nil } } == true
        let dstMoves = exchange && (dst!.type == S_IFDIR && hasLower(dst!) || nodes.child(newParent, newName).map { n in nodes.locked { n.data != nil } } == true)
        let srcWhiteout = try resolver.lowerShows(parent, name, upper: upper)
        let dstLower = try resolver.lowerShows(newParent, newName, upper: upper)
        if !exchange && dst != nil { keepIfOpen(newParent, newName) }
        let newParentMerged = nodes.layers(of: newParent).contains { !layers[$0].isUpper }
        let parentMerged = nodes.layers(of: parent).contains { !layers[$0].isUpper }
        let path = displayPath(parentID, child: name)
        let newPath = displayPath(newParentID, child: newName)

        // An indexed target's count is read and its name replaced without a link-up in between.
        try withIndexLock(unless: exchange || dst.map { $0.type != S_IFREG || $0.stat.st_nlink < 2 } ?? true) { () throws(Errno) in
            try resolver.withDirectory(parent, in: upper.index) { (sdir: Int32) throws(Errno) in
                try resolver.withDirectory(newParent, in: upper.index) { (ddir: Int32) throws(Errno) in
                    // Before the rename, as the kernel: a crash in between leaves the object where
                    // it was with a redirect to where its lower content already is.
                    if let srcRedirect { try setRedirect(sdir, name, srcRedirect, path: path) }
                    if let dstRedirect { try setRedirect(ddir, newName, dstRedirect, path: newPath) }
                    if exchange {
                        // Each pure-upper directory that lands in a merged parent becomes opaque, as below.
                        if src.type == S_IFDIR && !srcMoves && newParentMerged, try !Markers.isOpaque(in: sdir, name) {
                            try markers.markOpaque(sdir, name, path: newPath)
                        }
                        if dst?.type == S_IFDIR && !dstMoves && parentMerged, try !Markers.isOpaque(in: ddir, newName) {
                            try markers.markOpaque(ddir, newName, path: path)
                        }
                        try Sys.rename(sdir, name, ddir, newName, flags: Sys.renameExchange)
                        return
                    }
                    let dstUpper = try Sys.statIfPresent(ddir, newName)
                    let overDevice = dstUpper?.isWhiteoutDevice ?? false
                    // Two names of one file: rename(2) changes nothing, nor does the union's count.
                    let srcUpper = try Sys.statIfPresent(sdir, name)
                    let sameFile = dstUpper != nil && srcUpper?.st_ino == dstUpper?.st_ino && srcUpper?.st_dev == dstUpper?.st_dev
                    let dstLinks = dst?.type == S_IFREG && !sameFile ? try indexedLinks(ddir, newName) : nil
                    // A directory moved into a merged parent is marked opaque, as the kernel does:
                    // nothing the lower layers have (now or later) may merge into it.
                    // (One that merges lower content carries a redirect instead.)
                    if src.type == S_IFDIR && !srcMoves && (dstLower || overDevice || newParentMerged),
                       try !Markers.isOpaque(in: sdir, name) {
                        try markers.markOpaque(sdir, name, path: newPath)
                    }
                    if let dstUpper, dstUpper.isDirectory {
                        // The target is empty in the merged view; only markers remain in upper.
                        let sub = try Sys.openAt(ddir, newName, O_PATH | O_DIRECTORY)
                        defer { Sys.close(sub) }
                        try WorkDir.removeContents(of: sub)
                    }
                    try move(sdir, name, ddir, newName, isDirectory: src.type == S_IFDIR, overDevice: overDevice,
                             leaveWhiteout: srcWhiteout, markers: markers, path: path)
                    indexedNameRemoved(dstLinks)
                    try markers.clearOCIWhiteout(ddir, newName)
                }
            }
        }
        if exchange {
            nodes.exchange(parent, name, newParent, newName)
        } else {
            nodes.move(from: parent, name, to: newParent, newName)
        }
        // What the moved objects resolve to now is what a lookup finds from disk: their
        // redirects lead to the same lower copies as before.
        try replace(newParent, newName, upper: upper)
        if exchange { try replace(parent, name, upper: upper) }
    }

    /// Refreshes the node at `name` in `parent` after a rename.
    private func replace(_ parent: Node, _ name: Name, upper: Layer) throws(Errno) {
        guard let moved = nodes.child(parent, name) else { return }
        if let r = try resolver.resolve(parent, name), r.type == moved.type {
            nodes.update(moved, r.placement)
        } else {
            nodes.update(moved, .only(upper.index))
        }
    }

    /// The redirect to record on an object about to move (the kernel's ovl_set_redirect),
    /// nil when none is needed or the one it has still holds. A directory with lower
    /// content and a metacopy file need one: relative (its name) within the same parent,
    /// absolute (its lower path) into another one, or for a file whose lower data has
    /// other hard links.
    private func redirectForMove(_ parent: Node, _ name: Name, _ r: Resolution, samedir: Bool) throws(Errno) -> Redirect? {
        guard config.redirectDir.creates else { return nil }
        let node = nodes.child(parent, name)
        let placement = node.map { nodes.placement(of: $0) }
        let isDir = r.type == S_IFDIR
        if isDir {
            guard hasLower(r) else { return nil }
        } else {
            guard placement?.data != nil, let node else { return nil }
            _ = node
        }
        let existing = placement?.redirect ?? (layers[r.layers[0]].isUpper ? r.redirect : nil)
        var absolute = !samedir
        if !absolute && !isDir, let node {
            let fd = try resolver.openData(node, O_PATH)
            defer { Sys.close(fd) }
            absolute = try Sys.fstat(fd).st_nlink > 1
        }
        if let existing, !absolute || existing.isAbsolute { return nil }
        let redirect: Redirect = absolute ? .absolute(lowerPath(parent, name, existing)) : .relative(name)
        // The kernel's redirect_max: a longer path falls back to EXDEV (mv then copies).
        guard redirect.bytes.count <= Redirect.maxLength else { throw Errno.crossDevice }
        return redirect
    }

    /// The absolute redirect of `name` in `parent`: its path from the root with every
    /// component replaced by that directory's own redirect (the kernel's ovl_get_redirect),
    /// up to the first absolute one.
    private func lowerPath(_ parent: Node, _ name: Name, _ own: Redirect?) -> [Name] {
        nodes.locked { () -> [Name] in
            var parts: [Name] = []
            func add(_ r: Redirect?, _ n: Name) -> [Name]? {
                switch r {
                case .absolute(let p)?: return p + parts.reversed()
                case .relative(let x)?: parts.append(x)
                case nil: parts.append(n)
                }
                return nil
            }
            if let done = add(own, name) { return done }
            var n = parent
            while n.id != NodeTable.rootID, let p = n.parent {
                if let done = add(n.redirect, n.name) { return done }
                n = p
            }
            return parts.reversed()
        }
    }

    /// Before a metacopy file gains a second name: gives it an absolute redirect to its
    /// lower path, unless it has one.
    func setLinkRedirect(_ node: Node) throws(Errno) {
        let p = nodes.placement(of: node)
        guard config.redirectDir.creates, p.data != nil, !(p.redirect?.isAbsolute ?? false),
              let (parent, name) = nodes.locked({ node.parent.map { ($0, node.name) } }) else { return }
        let r = Redirect.absolute(lowerPath(parent, name, p.redirect))
        guard r.bytes.count <= Redirect.maxLength else { throw Errno.crossDevice }
        try resolver.withDirectory(parent, in: p.layers[0]) { (dir: Int32) throws(Errno) in
            try setRedirect(dir, name, r, path: displayPath(node.id))
        }
        nodes.locked { node.redirect = r }
    }

    /// Records a redirect on the upper object at `name` in `dir`. Where upper refuses the
    /// xattr, EXDEV: the caller (mv) then copies, as with the kernel's.
    private func setRedirect(_ dir: Int32, _ name: Name, _ r: Redirect, path: [UInt8]) throws(Errno) {
        do throws(Errno) {
            try Bytes.withUnsafeBytes(r.bytes) { (raw: UnsafeRawBufferPointer) throws(Errno) in
                try Sys.setxattr(.entry(dir, name), format.redirectXattr, raw)
            }
        } catch {
            diagnostics.report("cannot set the redirect of \(Bytes.display(path)): \(error)")
            throw Errno.crossDevice
        }
    }

    /// The rename itself, leaving a whiteout at the old name when a lower layer has it.
    private func move(_ sdir: Int32, _ name: Name, _ ddir: Int32, _ newName: Name, isDirectory: Bool, overDevice: Bool,
                      leaveWhiteout: Bool, markers: MarkerWriter, path: [UInt8]) throws(Errno) {
        if isDirectory && overDevice {
            // A directory cannot replace a device: swap them, and the device is the whiteout.
            try Sys.rename(sdir, name, ddir, newName, flags: Sys.renameExchange)
            if leaveWhiteout { markers.recordWhiteout(path) } else { try Sys.unlink(sdir, name) }
            return
        }
        if leaveWhiteout && format.whiteout == .device {
            do throws(Errno) {
                try Sys.rename(sdir, name, ddir, newName, flags: Sys.renameWhiteout)
                markers.recordWhiteout(path)
                return
            } catch where error.rawValue == EINVAL || error.rawValue == EPERM || error.rawValue == EOPNOTSUPP {
                // Not on this filesystem or in this namespace: two steps.
            }
        }
        try Sys.rename(sdir, name, ddir, newName)
        if leaveWhiteout { try markers.writeWhiteout(sdir, name, path: path) }
    }
}
