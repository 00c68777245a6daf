import Glibc

/// `index=on`: the names of a lower hard link keep showing one file across copy-up
/// (`InodeIndex` has the on-disk format).
///
/// The kernel shows a name whose lower file has an index entry through that entry, and
/// links the entry into upper under the name at the name's first copy-up (ovl_link_up).
/// swiftunionfs links it up as soon as it resolves such a name: every name the kernel
/// holds is then an ordinary upper hard link, which the rest of the union already keeps
/// as one node. On disk that is what the kernel's own copy-up of the name leaves.
extension Union {
    /// Runs `body` holding the index lock (with index=on, and unless `skip`): for a change
    /// of links that reads an indexed file's count first (unlink, rename over, link).
    func withIndexLock(unless skip: Bool = false, _ body: () throws(Errno) -> Void) throws(Errno) {
        guard let index, !skip else { return try body() }
        try index.lock.withLock { (_: inout Void) throws(Errno) in try body() }
    }

    /// Whether a copy-up of the lower object `st` goes through the index (the kernel's
    /// ovl_need_index: a non-directory with several links; only regular files here).
    func needsIndex(_ st: stat, from layer: Int) -> Bool {
        index != nil && !layers[layer].isUpper && st.fileType == S_IFREG && st.st_nlink > 1
    }

    /// `resolver.resolve`, where a lower hard link whose index entry exists is first linked
    /// up under this name: the name then resolves to the indexed upper inode.
    func resolveIndexed(_ parent: Node, _ name: Name) throws(Errno) -> Resolution? {
        guard let r = try resolver.resolve(parent, name) else { return nil }
        if let index, let upper, r.layers[0] == upper.index, r.type == S_IFREG, r.stat.st_nlink > 1 {
            try countRelativeToUpper(index, upper, parent, name)
            return r
        }
        guard let index, let upper, r.data == nil, needsIndex(r.stat, from: r.layers[0]), case .same = r.paths[0] else { return r }
        let handle = try resolver.withDirectory(parent, in: r.layers[0]) { (dir: Int32) throws(Errno) -> [UInt8] in
            try index.originHandle(layer: r.layers[0], dir, name)
        }
        guard try index.entry(handle) != nil else { return r }
        try copyUp(parent)
        try index.lock.withLock { (_: inout Void) throws(Errno) in
            try resolver.withDirectory(parent, in: upper.index) { (dir: Int32) throws(Errno) in
                let times = try Sys.fstat(dir)
                try linkUp(index, handle, lowerNlink: Int(r.stat.st_nlink), into: dir, name)
                try? Sys.utimensProc(dir, (times.st_atim, times.st_mtim))
            }
        }
        return try resolver.resolve(parent, name)
    }

    /// A crash in the middle of a link-up leaves the count relative to the lower file
    /// ("L+0"): rewritten relative to upper's, with the count of the lower file at the same
    /// path when its handle is the origin (else the names upper holds), before anything
    /// reads or changes it.
    private func countRelativeToUpper(_ index: InodeIndex, _ upper: Layer, _ parent: Node, _ name: Name) throws(Errno) {
        try index.lock.withLock { (_: inout Void) throws(Errno) in
            try resolver.withDirectory(parent, in: upper.index) { (dir: Int32) throws(Errno) in
                guard let raw = try Sys.getxattrIfPresent(.entry(dir, name), index.nlinkXattr),
                      let value = InodeIndex.NlinkValue(parsing: raw), value.relativeToLower,
                      let origin = try Sys.getxattrIfPresent(.entry(dir, name), index.originXattr) else { return }
                let st = try Sys.stat(dir, name)
                var lower: Int?
                let below = nodes.layers(of: parent).filter { !layers[$0].isUpper }
                if let lr = try resolver.resolve(parent, name, layers: below), lr.type == S_IFREG, case .same = lr.paths[0] {
                    let h = try resolver.withDirectory(parent, in: lr.layers[0]) { (ldir: Int32) throws(Errno) -> [UInt8] in
                        try index.originHandle(layer: lr.layers[0], ldir, name)
                    }
                    if h == origin { lower = Int(lr.stat.st_nlink) }
                }
                guard let count = value.unionCount(upper: Int(st.st_nlink), lower: lower) else { return }
                try index.setCount(.entry(dir, name), .init(relativeToLower: false, diff: count - Int(st.st_nlink)))
            }
        }
    }

    /// Copies lower file `name` of `srcDir` (stat `st`, layer `from`) into the index, unless
    /// an entry is there already, and links the entry into upper's `dstDir` as `name`: the
    /// kernel's ovl_do_copy_up with `to_index`, then ovl_link_up. The copy is built in
    /// workdir with its `overlay.origin` and `overlay.nlink` before one rename makes it the
    /// index entry: a crash leaves no entry, or a complete one every name of the file
    /// shows (the kernel reads it the same way). Always a full copy: a metacopy in the
    /// index would need its data found by handle.
    func copyUpIndexed(_ index: InodeIndex, _ srcDir: Int32, _ name: Name, _ st: stat, from: Int,
                       into dstDir: Int32, work: WorkDir, copier: Copier, data: CopyUpData) throws(Errno) -> (bytes: Int64, handle: [UInt8]) {
        let handle = try index.originHandle(layer: from, srcDir, name)
        let entry = InodeIndex.entryName(handle)
        var bytes: Int64 = 0
        // Staged outside the lock (a big file takes a while); only the rename into the
        // index and the link-up are serialised.
        var staged: Name?
        defer { staged.map { try? Sys.unlink(work.fd, $0) } }
        if try index.entry(handle) == nil {
            let tmp = work.tempName()
            staged = tmp
            bytes = try copier.stage(srcDir, name, st, into: work.fd, tmp, data: data == .metadata ? .full : data)
            try InodeIndex.set(.entry(work.fd, tmp), index.originXattr, handle)
            // The union's count relative to this one link (the kernel writes the same right
            // after its rename into the index).
            try index.setCount(.entry(work.fd, tmp), .init(relativeToLower: false, diff: Int(st.st_nlink) - 1))
        }
        return try index.lock.withLock { (_: inout Void) throws(Errno) -> (bytes: Int64, handle: [UInt8]) in
            if let tmp = staged {
                do throws(Errno) {
                    try Sys.rename(work.fd, tmp, index.fd, entry, flags: Sys.renameNoReplace)
                    staged = nil
                } catch where error.rawValue == EEXIST {
                    // Made meanwhile (another thread or mount): link that one.
                }
            }
            try linkUp(index, handle, lowerNlink: Int(st.st_nlink), into: dstDir, name)
            return (bytes, handle)
        }
    }

    /// Links the index entry of `handle` into upper directory `dir` as `name` (ovl_link_up):
    /// the parent is marked impure, the union count is written relative to the lower file
    /// ("L+N") while upper's count changes, then relative to upper's again. The index lock
    /// is held.
    func linkUp(_ index: InodeIndex, _ handle: [UInt8], lowerNlink: Int, into dir: Int32, _ name: Name) throws(Errno) {
        let entry = InodeIndex.entryName(handle)
        let target = Sys.XattrTarget.entry(index.fd, entry)
        let est = try Sys.stat(index.fd, entry)
        let union = try index.unionCount(target, est, lower: lowerNlink) ?? lowerNlink
        if try Sys.getxattrIfPresent(.fd(dir), index.impureXattr) == nil {
            try Sys.setxattr(dir, index.impureXattr, [UInt8(ascii: "y")])
        }
        try index.setCount(target, .init(relativeToLower: true, diff: union - lowerNlink))
        do throws(Errno) {
            try Sys.link(index.fd, entry, dir, name)
        } catch where error.rawValue == EEXIST {
            // Linked already (a lookup of the same name on another thread)? Anything else
            // at the name wins, as over a copy-up.
            guard let here = try Sys.statIfPresent(dir, name), here.st_ino == est.st_ino, here.st_dev == est.st_dev else { throw error }
        }
        let after = try Sys.stat(index.fd, entry)
        try index.setCount(target, .init(relativeToLower: false, diff: union - Int(after.st_nlink)))
    }

    /// After an indexed copy-up of `node`: the other names the kernel knows for it are
    /// linked up too, so that each of them is in upper whichever becomes the node's
    /// name; the node stays one for all of them and is found by its upper inode as well.
    func indexedCopyUpDone(_ node: Node, _ handle: [UInt8], upper: Layer) {
        guard let index else { return }
        if let st = try? topStat(node) { nodes.addKey(node, InodeKey(device: UInt64(st.st_dev), inode: UInt64(st.st_ino))) }
        for (p, n) in nodes.locked({ node.aliases }) {
            do throws(Errno) {
                guard let r = try resolver.resolve(p, n), r.data == nil, needsIndex(r.stat, from: r.layers[0]), case .same = r.paths[0] else { continue }
                let h = try resolver.withDirectory(p, in: r.layers[0]) { (dir: Int32) throws(Errno) -> [UInt8] in
                    try index.originHandle(layer: r.layers[0], dir, n)
                }
                guard h == handle else { continue }
                try copyUp(p)
                try index.lock.withLock { (_: inout Void) throws(Errno) in
                    try resolver.withDirectory(p, in: upper.index) { (dir: Int32) throws(Errno) in
                        let times = try Sys.fstat(dir)
                        try linkUp(index, handle, lowerNlink: Int(r.stat.st_nlink), into: dir, n)
                        try? Sys.utimensProc(dir, (times.st_atim, times.st_mtim))
                    }
                }
            } catch {
                diagnostics.report("link-up of \(Bytes.display(displayPath(p.id, child: n))) to its index entry failed: \(error)")
            }
        }
    }

    /// The upper regular file `name` of `dir` when it is an indexed one (its origin names an
    /// index entry that is the same inode): its entry name and union link count, with the
    /// count rewritten relative to upper when a crash left it relative to the lower file
    /// (ovl_nlink_start). Called before a change of its links; nil for any other file.
    func indexedLinks(_ dir: Int32, _ name: Name) throws(Errno) -> (entry: Name, count: Int)? {
        guard let index, let st = try Sys.statIfPresent(dir, name), st.fileType == S_IFREG, st.st_nlink > 1,
              let origin = try Sys.getxattrIfPresent(.entry(dir, name), index.originXattr) else { return nil }
        let entry = InodeIndex.entryName(origin)
        guard let est = try Sys.statIfPresent(index.fd, entry), est.st_ino == st.st_ino, est.st_dev == st.st_dev,
              let raw = try Sys.getxattrIfPresent(.entry(dir, name), index.nlinkXattr),
              let value = InodeIndex.NlinkValue(parsing: raw),
              let count = value.unionCount(upper: Int(st.st_nlink), lower: nil) else { return nil }
        if value.relativeToLower {
            try index.setCount(.entry(dir, name), .init(relativeToLower: false, diff: count - Int(st.st_nlink)))
        }
        return (entry, count)
    }

    /// After a name of an indexed file left the union: when it was the last, the index
    /// entry goes too (ovl_cleanup_index), unless upper still links it elsewhere.
    func indexedNameRemoved(_ links: (entry: Name, count: Int)?) {
        guard let index, let links, links.count <= 1 else { return }
        do throws(Errno) {
            guard let est = try Sys.statIfPresent(index.fd, links.entry), est.st_nlink == 1 else { return }
            try Sys.unlink(index.fd, links.entry)
        } catch {
            diagnostics.report("cannot remove index entry \(Bytes.display(links.entry.bytes)): \(error)")
        }
    }

    /// Before a lower hard link's name is removed or replaced: with the index, it is copied
    /// up first so that the index records the union's count (the kernel's ovl_nlink_start).
    func copyUpIndexedName(_ parent: Node, _ name: Name, _ r: Resolution?) throws(Errno) -> Resolution? {
        guard let r, index != nil, r.data == nil, needsIndex(r.stat, from: r.layers[0]) else { return r }
        try copyUpNamed(parent, name)
        return try resolver.resolve(parent, name)
    }

    /// The link count shown for an indexed upper file: the union's, from `overlay.nlink`
    /// (ovl_get_nlink), or `st`'s own.
    func indexedNlink(_ node: Node, _ st: stat) -> nlink_t {
        guard let index, st.fileType == S_IFREG, st.st_nlink > 1, layers[nodes.layers(of: node)[0]].isUpper else { return st.st_nlink }
        let count: Int?
        if let fd = orphan(node) {
            count = try? index.unionCount(.fd(fd), st)
        } else {
            count = try? resolver.withEntry(node) { (dir: Int32, name: Name) throws(Errno) -> Int? in
                try index.unionCount(.entry(dir, name), st)
            }
        }
        return count.flatMap { $0 }.map { nlink_t($0) } ?? st.st_nlink
    }
}
