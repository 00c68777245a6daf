import Glibc

/// rename(2) and its RENAME_NOREPLACE / RENAME_EXCHANGE forms.
extension Union {
    public func rename(_ parentID: UInt64, _ name: Name, _ newParentID: UInt64, _ newName: Name, flags: UInt32) throws(Errno) {
        let parent = try node(parentID), newParent = try node(newParentID)
        let (upper, _, markers) = try requireUpper()
        guard newParent.isDirectory else { throw Errno.notDirectory }
        if Markers.isOCIMarkerName(newName) { throw Errno.permission }
        guard let src = try resolver.resolve(parent, name) else { throw Errno.noEntry }
        let dst = try resolver.resolve(newParent, newName)
        // The kernel's overlay takes only these two flags (RENAME_WHITEOUT is its own tool).
        guard flags & ~(Sys.renameNoReplace | Sys.renameExchange) == 0 else { throw Errno.invalid }
        let exchange = flags & Sys.renameExchange != 0
        if flags & Sys.renameNoReplace != 0, dst != nil { throw Errno.exists }
        if exchange && dst == nil { throw Errno.noEntry }
        if parentID == newParentID && name == newName { return }

        // Without redirect_dir the kernel refuses to move a directory with lower content.
        if src.type == S_IFDIR && hasLower(src) { throw Errno.crossDevice }
        if let dst, !exchange {
            if src.type == S_IFDIR && dst.type != S_IFDIR { throw Errno.notDirectory }
            if src.type != S_IFDIR && dst.type == S_IFDIR { throw Errno.isDirectory }
            if dst.type == S_IFDIR, try !isEmptyDirectory(newParent, newName, dst) { throw Errno.notEmpty }
        }
        if let dst, exchange, dst.type == S_IFDIR, hasLower(dst) { throw Errno.crossDevice }

        try copyUpNamed(parent, name)
        if exchange { try copyUpNamed(newParent, newName) }
        try copyUp(newParent)
        let srcWhiteout = try resolver.lowerShows(parent, name, upper: upper)
        let dstLower = try resolver.lowerShows(newParent, newName, upper: upper)
        if !exchange && dst != nil { keepIfOpen(newParent, newName) }
        let newParentMerged = nodes.layers(of: newParent).contains { !layers[$0].isUpper }
        let parentMerged = nodes.layers(of: parent).contains { !layers[$0].isUpper }
        let path = displayPath(parentID, child: name)
        let newPath = displayPath(newParentID, child: newName)

        try resolver.withDirectory(parent, in: upper.index) { (sdir: Int32) throws(Errno) in
            try resolver.withDirectory(newParent, in: upper.index) { (ddir: Int32) throws(Errno) in
                if exchange {
                    // Each directory that lands in a merged parent becomes opaque, as below.
                    if src.type == S_IFDIR && newParentMerged, try !Markers.isOpaque(in: sdir, name) {
                        try markers.markOpaque(sdir, name, path: newPath)
                    }
                    if dst?.type == S_IFDIR && parentMerged, try !Markers.isOpaque(in: ddir, newName) {
                        try markers.markOpaque(ddir, newName, path: path)
                    }
                    try Sys.rename(sdir, name, ddir, newName, flags: Sys.renameExchange)
                    return
                }
                let dstUpper = try Sys.statIfPresent(ddir, newName)
                let overDevice = dstUpper?.isWhiteoutDevice ?? false
                // A directory moved into a merged parent is marked opaque, as the kernel does:
                // nothing the lower layers have (now or later) may merge into it.
                if src.type == S_IFDIR && (dstLower || overDevice || newParentMerged), try !Markers.isOpaque(in: sdir, name) {
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
                try markers.clearOCIWhiteout(ddir, newName)
            }
        }
        if exchange {
            nodes.exchange(parent, name, newParent, newName)
        } else {
            nodes.move(from: parent, name, to: newParent, newName)
        }
        if let moved = nodes.child(newParent, newName) { nodes.update(moved, layers: [upper.index]) }
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
