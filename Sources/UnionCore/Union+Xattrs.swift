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
        let n = try node(id)
        if nodes.locked({ n.hasNoXattrs }) || Markers.isForeignPrivate(name) { throw Errno.noData }
        let stored = Markers.xattrToLayer(name, format: format)
        return try withXattrs(n) { (target: Sys.XattrTarget) throws(Errno) -> [UInt8] in
            do throws(Errno) {
                return try Sys.getxattr(target, stored)
            } catch where error.rawValue == ENODATA {
                // `ls -l` asks for security.selinux on every file, every time: remember a
                // copy that has no xattrs at all and answer it without a syscall.
                // (Names only the union keeps, such as an owner xattr, do not count.)
                if let all = try? Sys.listxattr(target), all.allSatisfy({ Markers.xattrFromLayer($0, format: format) == nil }) {
                    nodes.locked { n.hasNoXattrs = true }
                }
                throw error
            }
        }
    }

    public func setxattr(_ id: UInt64, _ name: Name, _ value: UnsafeRawBufferPointer, flags: Int32) throws(Errno) {
        if config.noXattrs { throw Errno.notSupported }
        let n = try node(id)
        if Markers.isForeignPrivate(name) { throw Errno.permission }
        let stored = Markers.xattrToLayer(name, format: format)
        _ = try requireUpper()
        try copyUpMetadata(n)
        nodes.locked { n.hasNoXattrs = false }
        try withXattrs(n) { (t: Sys.XattrTarget) throws(Errno) in try Sys.setxattr(t, stored, value, flags: flags) }
    }

    public func removexattr(_ id: UInt64, _ name: Name) throws(Errno) {
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
