import CLinux
import Glibc

/// Typed, directory-relative wrappers over every syscall the project makes.
///
/// Names are `Name`s and paths are bytes: nothing on the way to the kernel decodes
/// them. Every path given here is relative to a directory descriptor, except the
/// few absolute paths the command line names; multi-component paths go through
/// `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` so a symlink inside a layer can
/// never lead an operation out of that layer. Every call funnels through `retrying`,
/// so EINTR is handled in one place and errors are always `Errno`.
public enum Sys {
    public static let beneath = UInt64(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)

    // MARK: open and close

    /// Opens `path` (one or more components) strictly beneath `dir`, following no symlink.
    public static func openBeneath(_ dir: Int32, _ path: [UInt8], _ flags: Int32, mode: mode_t = 0) throws(Errno) -> Int32 {
        try Bytes.withCString(path) { (p: UnsafePointer<CChar>) throws(Errno) -> Int32 in
            try retrying { suf_openat2(dir, p, UInt64(UInt32(bitPattern: flags | O_CLOEXEC)), UInt64(mode), beneath) }
        }
    }

    /// A new descriptor of the directory `fd` refers to (an O_PATH one, say), opened with `flags`.
    public static func reopen(_ fd: Int32, _ flags: Int32) throws(Errno) -> Int32 {
        try openBeneath(fd, [UInt8(ascii: ".")], flags)
    }

    /// Opens one name in `dir`; `O_NOFOLLOW` always, so the name itself is never followed.
    public static func openAt(_ dir: Int32, _ name: Name, _ flags: Int32, mode: mode_t = 0) throws(Errno) -> Int32 {
        try name.withCString { (p: UnsafePointer<CChar>) throws(Errno) -> Int32 in
            try retrying { suf_openat_mode(dir, p, flags | O_NOFOLLOW | O_CLOEXEC, UInt32(mode)) }
        }
    }

    /// Opens an absolute path from the command line (layer roots, trace and stats files).
    public static func openPath(_ path: [UInt8], _ flags: Int32, mode: mode_t = 0) throws(Errno) -> Int32 {
        try Bytes.withCString(path) { (p: UnsafePointer<CChar>) throws(Errno) -> Int32 in
            try retrying { suf_open_mode(p, flags | O_CLOEXEC, UInt32(mode)) }
        }
    }

    public static func close(_ fd: Int32) { _ = Glibc.close(fd) }

    public static func dup(_ fd: Int32) throws(Errno) -> Int32 {
        try retrying { suf_fcntl_int(fd, F_DUPFD_CLOEXEC, 0) }
    }

    /// flock(LOCK_EX | LOCK_NB): false when another holder has it.
    public static func tryLockExclusive(_ fd: Int32) throws(Errno) -> Bool {
        do throws(Errno) {
            _ = try retrying { suf_flock(fd, LOCK_EX | LOCK_NB) }
            return true
        } catch where error.rawValue == EWOULDBLOCK {
            return false
        }
    }

    // MARK: metadata

    public static func stat(_ dir: Int32, _ name: Name) throws(Errno) -> stat {
        var st = Glibc.stat()
        _ = try name.withCString { (p: UnsafePointer<CChar>) throws(Errno) -> Int32 in
            try retrying { fstatat(dir, p, &st, AT_SYMLINK_NOFOLLOW) }
        }
        return st
    }

    /// `lstat` that answers nil for a missing name; any other error is thrown.
    public static func statIfPresent(_ dir: Int32, _ name: Name) throws(Errno) -> stat? {
        try ifPresent { () throws(Errno) -> stat in try stat(dir, name) }
    }

    /// stat of an absolute path, following symlinks (command-line checks only).
    public static func statPath(_ path: [UInt8]) throws(Errno) -> stat {
        var st = Glibc.stat()
        _ = try Bytes.withCString(path) { (p: UnsafePointer<CChar>) throws(Errno) -> Int32 in
            try retrying { fstatat(AT_FDCWD, p, &st, 0) }
        }
        return st
    }

    public static func fstat(_ fd: Int32) throws(Errno) -> stat {
        var st = Glibc.stat()
        _ = try retrying { Glibc.fstat(fd, &st) }
        return st
    }

    public static func statfs(_ fd: Int32) throws(Errno) -> statvfs {
        var sv = statvfs()
        _ = try retrying { fstatvfs(fd, &sv) }
        return sv
    }

    public static func fchmod(_ fd: Int32, _ mode: mode_t) throws(Errno) {
        _ = try retrying { Glibc.fchmod(fd, mode) }
    }

    public static func fchown(_ fd: Int32, _ uid: uid_t, _ gid: gid_t) throws(Errno) {
        _ = try retrying { Glibc.fchown(fd, uid, gid) }
    }

    public static func lchownAt(_ dir: Int32, _ name: Name, _ uid: uid_t, _ gid: gid_t) throws(Errno) {
        _ = try name.withCString { (p: UnsafePointer<CChar>) throws(Errno) -> Int32 in
            try retrying { fchownat(dir, p, uid, gid, AT_SYMLINK_NOFOLLOW) }
        }
    }

    /// chmod of one name without following it: Linux has no lchmod, so go through an O_PATH fd.
    public static func chmodAt(_ dir: Int32, _ name: Name, _ mode: mode_t) throws(Errno) {
        let fd = try openAt(dir, name, O_PATH)
        defer { close(fd) }
        try chmodProc(fd, mode)
    }

    public static func utimensAt(_ dir: Int32, _ name: Name, _ times: (timespec, timespec)) throws(Errno) {
        var t = [times.0, times.1]
        _ = try name.withCString { (p: UnsafePointer<CChar>) throws(Errno) -> Int32 in
            try retrying { utimensat(dir, p, &t, AT_SYMLINK_NOFOLLOW) }
        }
    }

    public static func truncate(_ fd: Int32, _ size: Int64) throws(Errno) {
        _ = try retrying { ftruncate(fd, off_t(size)) }
    }

    // MARK: through an O_PATH descriptor
    //
    // O_PATH descriptors refuse fchmod, futimens and the f*xattr calls; /proc/self/fd/N
    // names the exact inode the descriptor holds, without a walk through any layer,
    // so nothing outside the layer can be reached this way.

    public static func procPath(_ fd: Int32) -> [UInt8] { Array("/proc/self/fd/\(fd)".utf8) }

    public static func chmodProc(_ fd: Int32, _ mode: mode_t) throws(Errno) {
        _ = try Bytes.withCString(procPath(fd)) { (p: UnsafePointer<CChar>) throws(Errno) -> Int32 in
            try retrying { Glibc.chmod(p, mode) }
        }
    }

    public static func chownProc(_ fd: Int32, _ uid: uid_t, _ gid: gid_t) throws(Errno) {
        _ = try Bytes.withCString(procPath(fd)) { (p: UnsafePointer<CChar>) throws(Errno) -> Int32 in
            try retrying { Glibc.chown(p, uid, gid) }
        }
    }

    public static func utimensProc(_ fd: Int32, _ times: (timespec, timespec)) throws(Errno) {
        var t = [times.0, times.1]
        _ = try Bytes.withCString(procPath(fd)) { (p: UnsafePointer<CChar>) throws(Errno) -> Int32 in
            try retrying { utimensat(AT_FDCWD, p, &t, 0) }
        }
    }

    /// Opens the file an O_PATH descriptor holds, with real access.
    public static func openProc(_ fd: Int32, _ flags: Int32) throws(Errno) -> Int32 {
        try openPath(procPath(fd), flags)
    }

    // MARK: names

    public static func mkdir(_ dir: Int32, _ name: Name, _ mode: mode_t) throws(Errno) {
        _ = try name.withCString { (p: UnsafePointer<CChar>) throws(Errno) -> Int32 in
            try retrying { mkdirat(dir, p, mode) }
        }
    }

    public static func mknod(_ dir: Int32, _ name: Name, _ mode: mode_t, _ rdev: dev_t) throws(Errno) {
        _ = try name.withCString { (p: UnsafePointer<CChar>) throws(Errno) -> Int32 in
            try retrying { mknodat(dir, p, mode, rdev) }
        }
    }

    public static func symlink(_ target: [UInt8], _ dir: Int32, _ name: Name) throws(Errno) {
        _ = try Bytes.withCString(target) { (t: UnsafePointer<CChar>) throws(Errno) -> Int32 in
            try name.withCString { (p: UnsafePointer<CChar>) throws(Errno) -> Int32 in
                try retrying { symlinkat(t, dir, p) }
            }
        }
    }

    /// The target's bytes, exactly as stored.
    public static func readlink(_ dir: Int32, _ name: Name) throws(Errno) -> [UInt8] {
        var buf = [UInt8](repeating: 0, count: Int(PATH_MAX) + 1)
        let n = try name.withCString { (p: UnsafePointer<CChar>) throws(Errno) -> Int in
            try buf.withUnsafeMutableBufferPointer { (b: inout UnsafeMutableBufferPointer<UInt8>) throws(Errno) -> Int in
                let base = UnsafeMutableRawPointer(b.baseAddress!).assumingMemoryBound(to: CChar.self)
                return try retrying { readlinkat(dir, p, base, b.count - 1) }
            }
        }
        return Array(buf[0..<n])
    }

    public static func unlink(_ dir: Int32, _ name: Name, directory: Bool = false) throws(Errno) {
        _ = try name.withCString { (p: UnsafePointer<CChar>) throws(Errno) -> Int32 in
            try retrying { unlinkat(dir, p, directory ? AT_REMOVEDIR : 0) }
        }
    }

    public static let renameNoReplace: UInt32 = 1
    public static let renameExchange: UInt32 = 2
    public static let renameWhiteout: UInt32 = 4

    public static func rename(_ fromDir: Int32, _ from: Name, _ toDir: Int32, _ to: Name, flags: UInt32 = 0) throws(Errno) {
        _ = try from.withCString { (a: UnsafePointer<CChar>) throws(Errno) -> Int32 in
            try to.withCString { (b: UnsafePointer<CChar>) throws(Errno) -> Int32 in
                try retrying { suf_renameat2(fromDir, a, toDir, b, flags) }
            }
        }
    }

    /// rename(2) of absolute paths from the command line (the statistics file).
    public static func renamePath(_ from: [UInt8], _ to: [UInt8]) throws(Errno) {
        _ = try Bytes.withCString(from) { (a: UnsafePointer<CChar>) throws(Errno) -> Int32 in
            try Bytes.withCString(to) { (b: UnsafePointer<CChar>) throws(Errno) -> Int32 in
                try retrying { Glibc.rename(a, b) }
            }
        }
    }

    public static func link(_ fromDir: Int32, _ from: Name, _ toDir: Int32, _ to: Name) throws(Errno) {
        _ = try from.withCString { (a: UnsafePointer<CChar>) throws(Errno) -> Int32 in
            try to.withCString { (b: UnsafePointer<CChar>) throws(Errno) -> Int32 in
                try retrying { linkat(fromDir, a, toDir, b, 0) }
            }
        }
    }

    // MARK: data

    public static func pread(_ fd: Int32, _ buf: UnsafeMutableRawBufferPointer, _ offset: Int64) throws(Errno) -> Int {
        try retrying { Glibc.pread(fd, buf.baseAddress, buf.count, off_t(offset)) }
    }

    public static func pwrite(_ fd: Int32, _ buf: UnsafeRawBufferPointer, _ offset: Int64) throws(Errno) -> Int {
        try retrying { Glibc.pwrite(fd, buf.baseAddress, buf.count, off_t(offset)) }
    }

    public static func write(_ fd: Int32, _ buf: UnsafeRawBufferPointer) throws(Errno) -> Int {
        try retrying { Glibc.write(fd, buf.baseAddress, buf.count) }
    }

    public static func read(_ fd: Int32, _ buf: UnsafeMutableRawBufferPointer) throws(Errno) -> Int {
        try retrying { Glibc.read(fd, buf.baseAddress, buf.count) }
    }

    public static func lseek(_ fd: Int32, _ offset: Int64, _ whence: Int32) throws(Errno) -> Int64 {
        Int64(try retrying { Glibc.lseek(fd, off_t(offset), whence) })
    }

    public static func copyFileRange(_ from: Int32, _ fromOff: inout Int64, _ to: Int32, _ toOff: inout Int64, _ len: Int) throws(Errno) -> Int {
        try retrying { suf_copy_file_range(from, &fromOff, to, &toOff, len) }
    }

    public static func fallocate(_ fd: Int32, _ mode: Int32, _ offset: Int64, _ length: Int64) throws(Errno) {
        _ = try retrying { suf_fallocate(fd, mode, offset, length) }
    }

    public static func fsync(_ fd: Int32, dataOnly: Bool = false) throws(Errno) {
        _ = try retrying { dataOnly ? fdatasync(fd) : Glibc.fsync(fd) }
    }

    public static func ficlone(_ dest: Int32, _ src: Int32) throws(Errno) { _ = try retrying { suf_ficlone(dest, src) } }

    // MARK: extended attributes
    //
    // Linux has no xattr calls on a directory fd + name (before 6.13), and O_PATH fds
    // refuse f*xattr: calls go through /proc/self/fd (see above).

    /// Where an xattr call goes: an fd's inode (followed through /proc), or a name in
    /// a directory fd, not followed (one syscall, no open).
    public struct XattrTarget: Sendable {
        let fd: Int32
        /// nil: the fd's own inode; else this name in directory `fd`, not followed.
        let name: Name?
        var follow: Bool { name == nil }
        public static func fd(_ fd: Int32) -> XattrTarget { XattrTarget(fd: fd, name: nil) }
        public static func entry(_ dir: Int32, _ name: Name) -> XattrTarget { XattrTarget(fd: dir, name: name) }
        func withPath<R>(_ body: (UnsafePointer<CChar>) throws(Errno) -> R) throws(Errno) -> R {
            let path = name.map { procPath(fd) + [UInt8(ascii: "/")] + $0.bytes } ?? procPath(fd)
            return try Bytes.withCString(path, body)
        }
    }

    /// Linux 6.13+ reads an entry's xattrs relative to its directory in one lookup
    /// (getxattrat/listxattrat), where the /proc path costs five more: lookups probe
    /// opaque, redirect and metacopy marks on every object. Probed once.
    static let xattrAt = suf_xattrat_available() != 0

    /// Reads a value with `get(buffer, size)` (size 0 asks for the size), growing the
    /// buffer when the value grew in between.
    private static func readValue(_ get: (UnsafeMutableRawPointer?, Int) -> Int) throws(Errno) -> [UInt8] {
        while true {
            let size = try retrying { get(nil, 0) }
            if size == 0 { return [] }
            var buf = [UInt8](repeating: 0, count: size)
            do throws(Errno) {
                let n = try retrying { buf.withUnsafeMutableBytes { get($0.baseAddress, size) } }
                return Array(buf[0..<n])
            } catch where error.rawValue == ERANGE {
                continue  // it grew between the two calls
            }
        }
    }

    /// The names listed by `list(buffer, size)`, as `readValue` reads them.
    private static func readNames(_ list: (UnsafeMutablePointer<CChar>?, Int) -> Int) throws(Errno) -> [Name] {
        while true {
            let size: Int
            do throws(Errno) { size = try retrying { list(nil, 0) } } catch where error.rawValue == EOPNOTSUPP { return [] }
            if size == 0 { return [] }
            var buf = [CChar](repeating: 0, count: size)
            do throws(Errno) {
                let n = try retrying { buf.withUnsafeMutableBufferPointer { list($0.baseAddress, size) } }
                return buf[0..<n].split(separator: 0).map { Name($0.map { UInt8(bitPattern: $0) }) }
            } catch where error.rawValue == ERANGE {
                continue
            }
        }
    }

    public static func getxattr(_ t: XattrTarget, _ name: Name) throws(Errno) -> [UInt8] {
        if let entry = t.name, xattrAt {
            return try entry.withCString { (n: UnsafePointer<CChar>) throws(Errno) -> [UInt8] in
                try name.withCString { (key: UnsafePointer<CChar>) throws(Errno) -> [UInt8] in
                    try readValue { suf_getxattrat(t.fd, n, key, $0, $1) }
                }
            }
        }
        return try t.withPath { (path: UnsafePointer<CChar>) throws(Errno) -> [UInt8] in
            try name.withCString { (key: UnsafePointer<CChar>) throws(Errno) -> [UInt8] in
                try readValue { t.follow ? CLinux.getxattr(path, key, $0, $1) : CLinux.lgetxattr(path, key, $0, $1) }
            }
        }
    }

    public static func getxattr(_ fd: Int32, _ name: Name) throws(Errno) -> [UInt8] { try getxattr(.fd(fd), name) }

    /// `getxattr` that answers nil when the object has no such attribute (ENODATA, or
    /// EOPNOTSUPP from a filesystem that has none); any other error is thrown.
    public static func getxattrIfPresent(_ t: XattrTarget, _ name: Name) throws(Errno) -> [UInt8]? {
        do throws(Errno) { return try getxattr(t, name) } catch where error.meansNoXattr { return nil }
    }

    /// The attribute names, as bytes; empty on a filesystem without xattrs.
    public static func listxattr(_ t: XattrTarget) throws(Errno) -> [Name] {
        if let entry = t.name, xattrAt {
            return try entry.withCString { (n: UnsafePointer<CChar>) throws(Errno) -> [Name] in
                try readNames { suf_listxattrat(t.fd, n, $0, $1) }
            }
        }
        return try t.withPath { (path: UnsafePointer<CChar>) throws(Errno) -> [Name] in
            try readNames { t.follow ? CLinux.listxattr(path, $0, $1) : CLinux.llistxattr(path, $0, $1) }
        }
    }

    public static func listxattr(_ fd: Int32) throws(Errno) -> [Name] { try listxattr(.fd(fd)) }

    public static func setxattr(_ t: XattrTarget, _ name: Name, _ value: UnsafeRawBufferPointer, flags: Int32 = 0) throws(Errno) {
        _ = try t.withPath { (path: UnsafePointer<CChar>) throws(Errno) -> Int32 in
            try name.withCString { (key: UnsafePointer<CChar>) throws(Errno) -> Int32 in
                try retrying {
                    t.follow ? CLinux.setxattr(path, key, value.baseAddress, value.count, flags)
                        : CLinux.lsetxattr(path, key, value.baseAddress, value.count, flags)
                }
            }
        }
    }

    public static func setxattr(_ fd: Int32, _ name: Name, _ value: [UInt8], flags: Int32 = 0) throws(Errno) {
        try Bytes.withUnsafeBytes(value) { (raw: UnsafeRawBufferPointer) throws(Errno) in try setxattr(.fd(fd), name, raw, flags: flags) }
    }

    public static func removexattr(_ t: XattrTarget, _ name: Name) throws(Errno) {
        _ = try t.withPath { (path: UnsafePointer<CChar>) throws(Errno) -> Int32 in
            try name.withCString { (key: UnsafePointer<CChar>) throws(Errno) -> Int32 in
                try retrying { t.follow ? CLinux.removexattr(path, key) : CLinux.lremovexattr(path, key) }
            }
        }
    }

    // MARK: directories

    /// Reads every entry of an open directory (the fd is consumed), "." and ".." left out.
    public static func readDirectory(_ fd: Int32, _ body: (_ name: Name, _ type: UInt8, _ ino: UInt64) throws(Errno) -> Void) throws(Errno) {
        guard let dir = fdopendir(fd) else {
            let e = Errno.current
            close(fd)
            throw e
        }
        defer { closedir(dir) }
        while true {
            suf_set_errno(0)
            guard let ent = Glibc.readdir(dir) else {
                if suf_errno() != 0 { throw Errno.current }
                return
            }
            let name = withUnsafePointer(to: &ent.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: 256) { Name(cString: $0) }
            }
            if name.isDotOrDotDot { continue }
            try body(name, ent.pointee.d_type, UInt64(ent.pointee.d_ino))
        }
    }

    // MARK: process

    /// The open-file limits (soft, hard).
    public static func openFileLimits() throws(Errno) -> (soft: UInt64, hard: UInt64) {
        var soft: UInt64 = 0, hard: UInt64 = 0
        _ = try retrying { suf_nofile_limits(&soft, &hard) }
        return (soft, hard)
    }

    public static func setOpenFileSoftLimit(_ n: UInt64) throws(Errno) {
        _ = try retrying { suf_set_nofile_soft(n) }
    }

    public static func sleep(milliseconds ms: Int) { _ = usleep(UInt32(ms * 1000)) }
}

extension stat {
    public var fileType: mode_t { st_mode & S_IFMT }
    public var isDirectory: Bool { fileType == S_IFDIR }
    /// The kernel overlayfs whiteout: a character device with device number 0/0.
    public var isWhiteoutDevice: Bool { fileType == S_IFCHR && st_rdev == 0 }
}
