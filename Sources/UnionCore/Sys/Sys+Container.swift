import CLinux
import Glibc

/// The calls `swiftunionfs run` makes to build a container root, and the command line's
/// checks on absolute paths. Paths are bytes, as for every other call.
extension Sys {
    public static func realpath(_ path: [UInt8]) throws(Errno) -> [UInt8] {
        try Bytes.withCString(path) { (p: UnsafePointer<CChar>) throws(Errno) -> [UInt8] in
            guard let r = Glibc.realpath(p, nil) else { throw Errno.current }
            defer { free(r) }
            return Bytes.fromCString(r)
        }
    }

    /// access(2) with the real ids, as a check before mounting.
    public static func access(_ path: [UInt8], _ mode: Int32) throws(Errno) {
        _ = try Bytes.withCString(path) { (p: UnsafePointer<CChar>) throws(Errno) -> Int32 in
            try retrying { Glibc.access(p, mode) }
        }
    }

    public static func mount(_ source: [UInt8]?, _ target: [UInt8], _ type: String?, _ flags: UInt, _ data: String?) throws(Errno) {
        func call(_ s: UnsafePointer<CChar>?) throws(Errno) {
            _ = try Bytes.withCString(target) { (t: UnsafePointer<CChar>) throws(Errno) -> Int32 in
                try retrying { suf_mount(s, t, type, flags, data) }
            }
        }
        if let source {
            try Bytes.withCString(source) { (s: UnsafePointer<CChar>) throws(Errno) in try call(s) }
        } else {
            try call(nil)
        }
    }

    /// open_tree(OPEN_TREE_CLONE): a detached private copy of the mount at `path`.
    public static func cloneMount(_ path: [UInt8]) throws(Errno) -> Int32 {
        try Bytes.withCString(path) { (p: UnsafePointer<CChar>) throws(Errno) -> Int32 in
            try retrying { suf_open_tree(AT_FDCWD, p, UInt32(SUF_OPEN_TREE_CLONE) | UInt32(O_CLOEXEC)) }
        }
    }

    /// dup2(2): `fd` now refers to what `from` refers to.
    public static func dup2(_ from: Int32, _ fd: Int32) throws(Errno) { _ = try retrying { Glibc.dup2(from, fd) } }

    public static func unmount(_ target: [UInt8], flags: Int32) throws(Errno) {
        _ = try Bytes.withCString(target) { (t: UnsafePointer<CChar>) throws(Errno) -> Int32 in
            try retrying { suf_umount2(t, flags) }
        }
    }

    public static func unshare(_ flags: Int32) throws(Errno) { _ = try retrying { suf_unshare(flags) } }

    public static func pivotRoot(_ newRoot: [UInt8], _ putOld: [UInt8]) throws(Errno) {
        _ = try Bytes.withCString(newRoot) { (a: UnsafePointer<CChar>) throws(Errno) -> Int32 in
            try Bytes.withCString(putOld) { (b: UnsafePointer<CChar>) throws(Errno) -> Int32 in
                try retrying { suf_pivot_root(a, b) }
            }
        }
    }

    public static func sethostname(_ name: [UInt8]) throws(Errno) {
        _ = try Bytes.withUnsafeBytes(name) { (raw: UnsafeRawBufferPointer) throws(Errno) -> Int32 in
            try retrying { suf_sethostname(raw.baseAddress?.assumingMemoryBound(to: CChar.self), raw.count) }
        }
    }

    public static func chdir(_ path: [UInt8]) throws(Errno) {
        _ = try Bytes.withCString(path) { (p: UnsafePointer<CChar>) throws(Errno) -> Int32 in try retrying { Glibc.chdir(p) } }
    }

    public static func mkdirPath(_ path: [UInt8], _ mode: mode_t) throws(Errno) {
        _ = try Bytes.withCString(path) { (p: UnsafePointer<CChar>) throws(Errno) -> Int32 in try retrying { Glibc.mkdir(p, mode) } }
    }

    public static func removeDirectoryPath(_ path: [UInt8]) throws(Errno) {
        _ = try Bytes.withCString(path) { (p: UnsafePointer<CChar>) throws(Errno) -> Int32 in try retrying { Glibc.rmdir(p) } }
    }

    public static func unlinkPath(_ path: [UInt8]) throws(Errno) {
        _ = try Bytes.withCString(path) { (p: UnsafePointer<CChar>) throws(Errno) -> Int32 in try retrying { Glibc.unlink(p) } }
    }

    public static func symlinkPath(_ target: [UInt8], _ path: [UInt8]) throws(Errno) {
        _ = try Bytes.withCString(target) { (t: UnsafePointer<CChar>) throws(Errno) -> Int32 in
            try Bytes.withCString(path) { (p: UnsafePointer<CChar>) throws(Errno) -> Int32 in try retrying { Glibc.symlink(t, p) } }
        }
    }

    /// Opens `path` beneath `root` as if `root` were "/" (RESOLVE_IN_ROOT): a symlink in the
    /// tree cannot lead out of it.
    public static func openInRoot(_ root: Int32, _ path: [UInt8], _ flags: Int32) throws(Errno) -> Int32 {
        try Bytes.withCString(path) { (p: UnsafePointer<CChar>) throws(Errno) -> Int32 in
            try retrying { suf_openat2(root, p, UInt64(UInt32(bitPattern: flags | O_CLOEXEC)), 0, UInt64(RESOLVE_IN_ROOT)) }
        }
    }

    public static func statvfsPath(_ path: [UInt8]) throws(Errno) -> statvfs {
        let fd = try openPath(path, O_PATH)  // fstatvfs takes an O_PATH descriptor (Linux 3.12+)
        defer { close(fd) }
        return try statfs(fd)
    }

    /// execve(2); returns only with the errno it failed with.
    public static func execve(_ path: [UInt8], _ argv: [[UInt8]], _ env: [[UInt8]]) -> Errno {
        func cstrings(_ list: [[UInt8]]) -> [UnsafeMutablePointer<CChar>?] {
            list.map { bytes in
                let p = UnsafeMutablePointer<CChar>.allocate(capacity: bytes.count + 1)
                bytes.withUnsafeBytes { raw in
                    for (i, b) in raw.enumerated() { p[i] = CChar(bitPattern: b) }
                }
                p[bytes.count] = 0
                return p
            } + [nil]
        }
        var cargv = cstrings(argv), cenv = cstrings(env)
        defer { (cargv + cenv).forEach { $0?.deallocate() } }
        Bytes.withCString(path) { _ = Glibc.execve($0, &cargv, &cenv) }
        return Errno.current
    }
}
