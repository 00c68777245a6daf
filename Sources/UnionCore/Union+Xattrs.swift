import Glibc

/// Extended attributes, with the overlay's own names hidden and a caller's
/// `*.overlay.*` names escaped as the kernel does.
extension Union {
    public func listxattr(_ id: UInt64) throws(Errno) -> [Name] {
        if config.noXattrs { throw Errno.notSupported }
        let n = try node(id)
        return try withXattrs(n) { (t: Sys.XattrTarget) throws(Errno) -> [Name] in try Sys.listxattr(t) }
            .compactMap { Markers.xattrFromLayer($0, format: format) }
    }

    public func getxattr(_ id: UInt64, _ name: Name) throws(Errno) -> [UInt8] {
        if config.noXattrs { throw Errno.notSupported }
        if name == Union.selinuxName {
            // `ls -l` asks for the SELinux label of every entry, one round trip each. Where
            // the request reaches the daemon no SELinux policy is loaded (SELinux answers it
            // in the kernel), so a missing label is "not supported", as getxattr(2) says of a
            // filesystem without labels: libselinux callers such as ls then stop asking on
            // this mount (`ls` remembers the device). A stored label is still shown.
            do throws(Errno) { return try layerXattr(id, name) } catch where error.rawValue == ENODATA { throw Errno.notSupported }
        }
        guard PosixACL.isACL(name) else { return try layerXattr(id, name) }
        // The kernel asks for ACLs to check access: a layer whose filesystem has no xattrs has
        // no ACL (EOPNOTSUPP would fail the access check itself), and ids are shown mapped.
        do throws(Errno) {
            return PosixACL.shown(try layerXattr(id, name), config)
        } catch where error.meansNoXattr {
            throw Errno.noData
        }
    }

    static let selinuxName = Name(Array("security.selinux".utf8))

    private func layerXattr(_ id: UInt64, _ name: Name) throws(Errno) -> [UInt8] {
        let n = try node(id)
        if nodes.locked({ n.hasNoXattrs }) || Markers.isForeignPrivate(name) { throw Errno.noData }
        let stored = Markers.xattrToLayer(name, format: format)
        return try withXattrs(n) { (target: Sys.XattrTarget) throws(Errno) -> [UInt8] in
            // `ls -l` and the kernel's ACL checks ask for names most files do not have:
            // the list first answers those with one syscall, and a copy with no xattrs at all
            // is remembered, so the next question costs none. (Names only the union keeps,
            // such as an owner xattr, do not count.)
            let all = try Sys.listxattr(target)
            if all.allSatisfy({ Markers.xattrFromLayer($0, format: format) == nil }) {
                nodes.locked { n.hasNoXattrs = true }
                throw Errno.noData
            }
            guard all.contains(stored) else { throw Errno.noData }
            return try Sys.getxattr(target, stored)
        }
    }

    public func setxattr(_ id: UInt64, _ name: Name, _ value: UnsafeRawBufferPointer, flags: Int32) throws(Errno) {
        namespace.begin()
        defer { namespace.end() }
        if config.noXattrs { throw Errno.notSupported }
        let n = try node(id)
        if Markers.isForeignPrivate(name) { throw Errno.permission }
        let stored = Markers.xattrToLayer(name, format: format)
        // An ACL's ids are stored as the layers hold them (the filesystem under upper then
        // updates the mode from an access ACL, as the kernel expects of a FUSE daemon).
        let acl: [UInt8]? = PosixACL.isACL(name) ? try PosixACL.stored(Array(value), config) : nil
        _ = try requireUpper()
        try copyUpMetadata(n)
        nodes.locked { n.hasNoXattrs = false }
        try withXattrs(n) { (t: Sys.XattrTarget) throws(Errno) in
            if let acl {
                try Bytes.withUnsafeBytes(acl) { (raw: UnsafeRawBufferPointer) throws(Errno) in try Sys.setxattr(t, stored, raw, flags: flags) }
            } else {
                try Sys.setxattr(t, stored, value, flags: flags)
            }
        }
    }

    /// The mode bits a new object in `parentID` is made with when the kernel leaves the
    /// umask to the filesystem (FUSE_DONT_MASK, asked together with POSIX ACLs): the
    /// caller's umask applies unless the directory has a default ACL, which then decides
    /// (the filesystem under upper applies it, the directory's default ACL being copied up
    /// with it) — `posix_acl_create`'s rule, as the kernel's overlay follows it.
    public func creationMode(_ parentID: UInt64, _ mode: mode_t, umask: mode_t) throws(Errno) -> mode_t {
        if umask & 0o7777 == 0 || config.noXattrs { return mode & ~umask }
        do throws(Errno) {
            _ = try getxattr(parentID, PosixACL.defaultName)
            return mode
        } catch where error.rawValue == ENODATA {
            return mode & ~umask
        }
    }

    public func removexattr(_ id: UInt64, _ name: Name) throws(Errno) {
        namespace.begin()
        defer { namespace.end() }
        if config.noXattrs { throw Errno.notSupported }
        let n = try node(id)
        if Markers.isForeignPrivate(name) { throw Errno.permission }
        let stored = Markers.xattrToLayer(name, format: format)
        _ = try requireUpper()
        // Nothing to remove is answered without a copy-up.
        _ = try withXattrs(n) { (t: Sys.XattrTarget) throws(Errno) -> [UInt8] in try Sys.getxattr(t, stored) }
        try copyUpMetadata(n)
        try withXattrs(n) { (t: Sys.XattrTarget) throws(Errno) in try Sys.removexattr(t, stored) }
    }

    /// Runs `body` with where `node`'s top copy takes xattr calls.
    func withXattrs<T>(_ node: Node, _ body: (Sys.XattrTarget) throws(Errno) -> T) throws(Errno) -> T {
        if let fd = orphan(node) { return try body(.fd(fd)) }
        if node.isDirectory {
            return try resolver.withDirectory(node, in: nodes.layers(of: node)[0]) { (fd: Int32) throws(Errno) -> T in try body(.fd(fd)) }
        }
        return try resolver.withEntry(node) { (dir: Int32, name: Name) throws(Errno) -> T in try body(.entry(dir, name)) }
    }
}

extension Union {
    /// Gives an object made outside its directory (in workdir, before the rename over a
    /// whiteout) the ACLs the directory's default ACL would have given it, as the kernel's
    /// overlay does in that case: an access ACL cut to `mode`, and for a directory the
    /// default ACL itself. Nothing when the directory (in upper, at `parentFD`) has none.
    func inheritACLs(from parentFD: Int32, to dir: Int32, _ entry: Name, type: mode_t, mode: mode_t) throws(Errno) {
        guard let dacl = try Sys.getxattrIfPresent(.fd(parentFD), PosixACL.defaultName) else { return }
        let target = Sys.XattrTarget.entry(dir, entry)
        func set(_ name: Name, _ value: [UInt8]) throws(Errno) {
            try Bytes.withUnsafeBytes(value) { (raw: UnsafeRawBufferPointer) throws(Errno) in try Sys.setxattr(target, name, raw) }
        }
        try set(PosixACL.accessName, try PosixACL.inherited(dacl, mode: mode))
        if type == S_IFDIR { try set(PosixACL.defaultName, dacl) }
    }
}
