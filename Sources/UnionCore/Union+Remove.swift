import Glibc

/// unlink and rmdir: the name leaves upper, and a whiteout stays where a lower
/// layer would show through.
extension Union {
    public func unlink(_ parentID: UInt64, _ name: Name) throws(Errno) {
        try remove(parentID, name, directory: false)
    }

    public func rmdir(_ parentID: UInt64, _ name: Name) throws(Errno) {
        try remove(parentID, name, directory: true)
    }

    private func remove(_ parentID: UInt64, _ name: Name, directory: Bool) throws(Errno) {
        namespace.begin()
        defer { namespace.end() }
        let parent = try node(parentID)
        let (upper, work, markers) = try requireUpper()
        guard var r = try resolveIndexed(parent, name) else { throw Errno.noEntry }
        if directory {
            guard r.type == S_IFDIR else { throw Errno.notDirectory }
            // Emptiness must be proven: a layer that cannot be listed fails the rmdir.
            guard try isEmptyDirectory(parent, name, r) else { throw Errno.notEmpty }
        } else if r.type == S_IFDIR {
            throw Errno.isDirectory
        }
        try copyUp(parent)
        if !directory, let indexed = try copyUpIndexedName(parent, name, r) { r = indexed }
        let whiteout = try resolver.lowerShows(parent, name, upper: upper)
        let path = displayPath(parentID, child: name)
        if !directory { keepIfOpen(parent, name) }
        // An indexed file's count is read and its name removed without a link-up in between.
        try withIndexLock(unless: r.type != S_IFREG || r.stat.st_nlink < 2) { () throws(Errno) in
            try resolver.withDirectory(parent, in: upper.index) { (dfd: Int32) throws(Errno) in
                guard r.layers[0] == upper.index else {
                    try markers.writeWhiteout(dfd, name, path: path)
                    return
                }
                let links = directory ? nil : try indexedLinks(dfd, name)
                let tmp = try markers.evict(dfd, name, leaveWhiteout: whiteout, path: path)
                // Once the evicted link in workdir is gone too: the entry's own count tells.
                defer { indexedNameRemoved(links) }
                // The name is gone from the view; what is left in workdir (for a directory, only
                // markers: the merged view was empty) is freed now, or at the next mount.
                do throws(Errno) {
                    if directory {
                        let sub = try Sys.openAt(work.fd, tmp, O_PATH | O_DIRECTORY)
                        defer { Sys.close(sub) }
                        try WorkDir.removeContents(of: sub)
                    }
                    try Sys.unlink(work.fd, tmp, directory: directory)
                } catch {
                    diagnostics.report("cannot free \(Bytes.display(path)) in workdir after its removal: \(error)")
                }
            }
        }
        nodes.detach(parent, name)
    }
}
