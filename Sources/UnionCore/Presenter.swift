import Glibc

/// The attributes the kernel is shown: inode numbers chosen as the kernel's overlay
/// chooses them, ids mapped or squashed, unmapped owners kept unmapped.
struct Presenter: Sendable {
    let config: UnionConfig
    let userNamespace: UserNamespace
    /// All layers on one filesystem: report the real inode numbers, as the kernel does.
    let sameFS: Bool
    let upperIndex: Int?

    func isUpper(_ layer: Int) -> Bool { layer == upperIndex }

    /// The inode number shown for an object: the kernel's rule on one filesystem is
    /// the topmost lower copy's number for anything with a lower copy, else upper's.
    func reportedIno(_ r: Resolution) -> UInt64 {
        let layer = r.lowerIno != nil && r.type == S_IFDIR ? r.layers.first { !isUpper($0) }! : r.layers[0]
        let ino = r.type == S_IFDIR ? (r.lowerIno ?? UInt64(r.stat.st_ino)) : UInt64(r.stat.st_ino)
        return mapIno(ino, layer: layer)
    }

    func mapIno(_ ino: UInt64, layer: Int) -> UInt64 {
        // Across filesystems, numbers can collide: keep them apart by layer in the high bits.
        sameFS ? ino : ino ^ (UInt64(layer) << 56)
    }

    /// The attributes of `node`, given the stat of its top copy and how many layers
    /// it merges (a merged directory's link count cannot be known: 1, as the kernel says).
    func present(_ node: Node, _ st: stat, mergedLayers: Int) -> stat {
        var out = st
        out.st_ino = ino_t(node.ino)
        if node.isDirectory && (config.staticNlink || mergedLayers > 1) { out.st_nlink = 1 }
        if !config.uidMap.isIdentity { out.st_uid = config.uidMap.toContainer(st.st_uid) }
        if !config.gidMap.isIdentity { out.st_gid = config.gidMap.toContainer(st.st_gid) }
        // Unmapped owners stay unmapped for the kernel (see UserNamespace).
        if userNamespace.isUnmapped(uid: st.st_uid) || (!config.uidMap.isIdentity && out.st_uid == IDMap.overflow) {
            out.st_uid = UInt32.max
        }
        if userNamespace.isUnmapped(gid: st.st_gid) || (!config.gidMap.isIdentity && out.st_gid == IDMap.overflow) {
            out.st_gid = UInt32.max
        }
        if let u = config.squashUID { out.st_uid = u }
        if let g = config.squashGID { out.st_gid = g }
        return out
    }

    /// The ids a new object is stored with: the caller's, mapped to the layer's (a caller
    /// outside the mapping gets the overflow id, as fuse-overlayfs does), the group
    /// taken from a set-group-id parent as the filesystem would.
    func storedOwner(_ caller: Caller, parent: stat) -> (uid_t, gid_t) {
        let uid = config.uidMap.toHost(caller.uid) ?? IDMap.overflow
        let gid = parent.st_mode & S_ISGID != 0 ? parent.st_gid : (config.gidMap.toHost(caller.gid) ?? IDMap.overflow)
        return (uid, gid)
    }
}
