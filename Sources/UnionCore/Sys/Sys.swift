import CFuse
import Glibc

/// Typed, directory-relative wrappers over the syscalls the union needs.
///
/// Every path given here is relative to a directory descriptor; multi-component
/// paths go through `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` so a symlink
/// inside a layer can never lead an operation out of that layer.
public enum Sys {
    public static let beneath = UInt64(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)

    // MARK: open and close

    /// Opens `path` (one or more components) strictly beneath `dir`, following no symlink.
    public static func openBeneath(_ dir: Int32, _ path: String, _ flags: Int32, mode: mode_t = 0) throws(Errno) -> Int32 {
        try retrying { suf_openat2(dir, path, UInt64(UInt32(bitPattern: flags | O_CLOEXEC)), UInt64(mode), beneath) }
    }

    /// Opens one name in `dir`; `O_NOFOLLOW` always, so the name itself is never followed.
    public static func openAt(_ dir: Int32, _ name: String, _ flags: Int32, mode: mode_t = 0) throws(Errno) -> Int32 {
        try retrying { suf_openat_mode(dir, name, flags | O_NOFOLLOW | O_CLOEXEC, UInt32(mode)) }
    }

    public static func close(_ fd: Int32) { _ = Glibc.close(fd) }

    // MARK: metadata

    public static func stat(_ dir: Int32, _ name: String) throws(Errno) -> stat {
        var st = Glibc.stat()
        _ = try retrying { fstatat(dir, name, &st, AT_SYMLINK_NOFOLLOW) }
        return st
    }

    /// `lstat` that answers nil for a missing name instead of throwing.
    public static func statIfPresent(_ dir: Int32, _ name: String) throws(Errno) -> stat? {
        var st = Glibc.stat()
        if fstatat(dir, name, &st, AT_SYMLINK_NOFOLLOW) == 0 { return st }
        let e = Errno.current
        if e.rawValue == ENOENT || e.rawValue == ENOTDIR { return nil }
        throw e
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

    public static func lchownAt(_ dir: Int32, _ name: String, _ uid: uid_t, _ gid: gid_t) throws(Errno) {
        _ = try retrying { fchownat(dir, name, uid, gid, AT_SYMLINK_NOFOLLOW) }
    }

    /// chmod of one name without following it: Linux has no lchmod, so go through an O_PATH fd.
    public static func chmodAt(_ dir: Int32, _ name: String, _ mode: mode_t) throws(Errno) {
        let fd = try openAt(dir, name, O_PATH)
        defer { close(fd) }
        _ = try retrying { Glibc.chmod(procPath(fd), mode) }
    }

    public static func utimensAt(_ dir: Int32, _ name: String, _ times: (timespec, timespec)) throws(Errno) {
        var t = [times.0, times.1]
        _ = try retrying { utimensat(dir, name, &t, AT_SYMLINK_NOFOLLOW) }
    }

    public static func futimens(_ fd: Int32, _ times: (timespec, timespec)) throws(Errno) {
        var t = [times.0, times.1]
        _ = try retrying { Glibc.futimens(fd, &t) }
    }

    public static func truncate(_ fd: Int32, _ size: Int64) throws(Errno) {
        _ = try retrying { ftruncate(fd, off_t(size)) }
    }

    // MARK: names

    public static func mkdir(_ dir: Int32, _ name: String, _ mode: mode_t) throws(Errno) {
        _ = try retrying { mkdirat(dir, name, mode) }
    }

    public static func mknod(_ dir: Int32, _ name: String, _ mode: mode_t, _ rdev: dev_t) throws(Errno) {
        _ = try retrying { mknodat(dir, name, mode, rdev) }
    }

    public static func symlink(_ target: String, _ dir: Int32, _ name: String) throws(Errno) {
        _ = try retrying { symlinkat(target, dir, name) }
    }

    public static func readlink(_ dir: Int32, _ name: String) throws(Errno) -> String {
        var buf = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let n = try retrying { readlinkat(dir, name, &buf, buf.count - 1) }
        buf[n] = 0
        return String(cString: buf)
    }

    public static func unlink(_ dir: Int32, _ name: String, directory: Bool = false) throws(Errno) {
        _ = try retrying { unlinkat(dir, name, directory ? AT_REMOVEDIR : 0) }
    }

    public static let renameNoReplace: UInt32 = 1
    public static let renameExchange: UInt32 = 2
    public static let renameWhiteout: UInt32 = 4

    public static func rename(_ fromDir: Int32, _ from: String, _ toDir: Int32, _ to: String, flags: UInt32 = 0) throws(Errno) {
        _ = try retrying { suf_renameat2(fromDir, from, toDir, to, flags) }
    }

    public static func link(_ fromDir: Int32, _ from: String, _ toDir: Int32, _ to: String) throws(Errno) {
        _ = try retrying { linkat(fromDir, from, toDir, to, 0) }
    }

    // MARK: data

    public static func pread(_ fd: Int32, _ buf: UnsafeMutableRawBufferPointer, _ offset: Int64) throws(Errno) -> Int {
        try retrying { Glibc.pread(fd, buf.baseAddress, buf.count, off_t(offset)) }
    }

    public static func pwrite(_ fd: Int32, _ buf: UnsafeRawBufferPointer, _ offset: Int64) throws(Errno) -> Int {
        try retrying { Glibc.pwrite(fd, buf.baseAddress, buf.count, off_t(offset)) }
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
    // refuse f*xattr; /proc/self/fd/N names the exact inode the fd holds, without a
    // path walk through the layer, so nothing outside the layer can be reached.

    public static func procPath(_ fd: Int32) -> String { "/proc/self/fd/\(fd)" }

    /// Where an xattr call goes: an fd's inode (followed through /proc), or a name in
    /// a directory fd, not followed (one syscall, no open).
    public struct XattrTarget: Sendable {
        let path: String
        let follow: Bool
        public static func fd(_ fd: Int32) -> XattrTarget { XattrTarget(path: procPath(fd), follow: true) }
        public static func entry(_ dir: Int32, _ name: String) -> XattrTarget {
            XattrTarget(path: procPath(dir) + "/" + name, follow: false)
        }
    }

    public static func getxattr(_ fd: Int32, _ name: String) throws(Errno) -> [UInt8] {
        try getxattr(.fd(fd), name)
    }

    public static func getxattr(_ t: XattrTarget, _ name: String) throws(Errno) -> [UInt8] {
        func get(_ buf: UnsafeMutableRawPointer?, _ size: Int) -> Int {
            t.follow ? CFuse.getxattr(t.path, name, buf, size) : CFuse.lgetxattr(t.path, name, buf, size)
        }
        while true {
            let size = try retrying { get(nil, 0) }
            if size == 0 { return [] }
            var buf = [UInt8](repeating: 0, count: size)
            let n = buf.withUnsafeMutableBytes { get($0.baseAddress, size) }
            if n >= 0 { return Array(buf[0..<n]) }
            if Errno.current.rawValue != ERANGE { throw Errno.current }
        }
    }

    /// Like `getxattr`, but nil when the attribute is absent or the filesystem has none.
    public static func getxattrIfPresent(_ fd: Int32, _ name: String) -> [UInt8]? {
        do { return try getxattr(fd, name) } catch { return nil }
    }

    public static func listxattr(_ fd: Int32) throws(Errno) -> [String] { try listxattr(.fd(fd)) }

    public static func listxattr(_ t: XattrTarget) throws(Errno) -> [String] {
        func list(_ buf: UnsafeMutablePointer<CChar>?, _ size: Int) -> Int {
            t.follow ? CFuse.listxattr(t.path, buf, size) : CFuse.llistxattr(t.path, buf, size)
        }
        while true {
            let size = try retrying { list(nil, 0) }
            if size == 0 { return [] }
            var buf = [CChar](repeating: 0, count: size)
            let n = buf.withUnsafeMutableBufferPointer { list($0.baseAddress, size) }
            if n < 0 {
                if Errno.current.rawValue == ERANGE { continue }
                throw Errno.current
            }
            return buf[0..<n].split(separator: 0).map { String(decoding: $0.map { UInt8(bitPattern: $0) }, as: UTF8.self) }
        }
    }

    public static func setxattr(_ t: XattrTarget, _ name: String, _ value: UnsafeRawBufferPointer, flags: Int32 = 0) throws(Errno) {
        _ = try retrying {
            t.follow ? CFuse.setxattr(t.path, name, value.baseAddress, value.count, flags)
                : CFuse.lsetxattr(t.path, name, value.baseAddress, value.count, flags)
        }
    }

    public static func setxattr(_ fd: Int32, _ name: String, _ value: UnsafeRawBufferPointer, flags: Int32 = 0) throws(Errno) {
        try setxattr(.fd(fd), name, value, flags: flags)
    }

    public static func setxattr(_ fd: Int32, _ name: String, _ value: [UInt8], flags: Int32 = 0) throws(Errno) {
        let path = procPath(fd)
        let rc = value.withUnsafeBytes { CFuse.setxattr(path, name, $0.baseAddress, $0.count, flags) }
        if rc != 0 { throw Errno.current }
    }

    public static func removexattr(_ t: XattrTarget, _ name: String) throws(Errno) {
        _ = try retrying { t.follow ? CFuse.removexattr(t.path, name) : CFuse.lremovexattr(t.path, name) }
    }

    // MARK: directories

    /// Reads every entry of an open directory (the fd is consumed).
    public static func readDirectory(_ fd: Int32, _ body: (_ name: String, _ type: UInt8, _ ino: UInt64) -> Void) throws(Errno) {
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
                $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
            }
            if name == "." || name == ".." { continue }
            body(name, ent.pointee.d_type, UInt64(ent.pointee.d_ino))
        }
    }
}

extension stat {
    public var fileType: mode_t { st_mode & S_IFMT }
    public var isDirectory: Bool { fileType == S_IFDIR }
    /// The kernel overlayfs whiteout: a character device with device number 0/0.
    public var isWhiteoutDevice: Bool { fileType == S_IFCHR && st_rdev == 0 }
}
