import CArchive
import Glibc
import UnionCore

/// Every filesystem call the Layers module makes, on byte-exact names.
///
/// Names from archives and layers are bytes (`[UInt8]`), never Swift `String`: a String
/// compares by canonical equivalence and repairs invalid UTF-8, so it could name another
/// file. UnionCore's `Sys` takes `String` names today, so this file calls libc directly
/// with NUL-terminated byte buffers; it is the one place to change when `Sys` takes a
/// byte-exact name type. Every name here is ONE component relative to a directory
/// descriptor and is never followed when it is a symlink; multi-component paths go
/// through `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`.
public enum FS {
    public static let renameNoReplace: UInt32 = 1
    public static let renameExchange: UInt32 = 2

    /// Runs `body` with `bytes` as a C string. A name holding NUL cannot exist on Linux.
    static func withCString<T>(_ bytes: [UInt8], _ body: (UnsafePointer<CChar>) throws(Errno) -> T) throws(Errno) -> T {
        if bytes.contains(0) { throw Errno(EINVAL) }
        let p = UnsafeMutablePointer<CChar>.allocate(capacity: bytes.count + 1)
        defer { p.deallocate() }
        bytes.withUnsafeBytes { UnsafeMutableRawPointer(p).copyMemory(from: $0.baseAddress ?? UnsafeRawPointer(p), byteCount: $0.count) }
        p[bytes.count] = 0
        return try body(p)
    }

    static func withCStrings<T>(_ a: [UInt8], _ b: [UInt8], _ body: (UnsafePointer<CChar>, UnsafePointer<CChar>) throws(Errno) -> T) throws(Errno) -> T {
        try withCString(a) { (pa) throws(Errno) -> T in try withCString(b) { (pb) throws(Errno) -> T in try body(pa, pb) } }
    }

    static func ok(_ rc: Int32) throws(Errno) { if rc != 0 { throw Errno(sl_errno()) } }

    @inline(__always)
    static func check<T: BinaryInteger>(_ call: () -> T) throws(Errno) -> T {
        while true {
            let rc = call()
            if rc != -1 { return rc }
            let e = sl_errno()
            if e != EINTR { throw Errno(e) }
        }
    }

    // MARK: open

    /// Opens one name in `dir`, never following it.
    public static func openAt(_ dir: Int32, _ name: [UInt8], _ flags: Int32, mode: mode_t = 0) throws(Errno) -> Int32 {
        try withCString(name) { (p) throws(Errno) in try check { sl_openat_mode(dir, p, flags | O_NOFOLLOW | O_CLOEXEC, UInt32(mode)) } }
    }

    /// Opens a directory `name` in `dir` for listing and as the base of further *at calls.
    public static func openDirectory(_ dir: Int32, _ name: [UInt8]) throws(Errno) -> Int32 {
        try openAt(dir, name, O_RDONLY | O_DIRECTORY)
    }

    /// Opens `path` (components separated by '/') strictly beneath `dir`, following no symlink.
    public static func openBeneath(_ dir: Int32, _ path: [UInt8], _ flags: Int32, mode: mode_t = 0) throws(Errno) -> Int32 {
        let how = UInt64(UInt32(bitPattern: flags | O_CLOEXEC))
        return try withCString(path.isEmpty ? Array(".".utf8) : path) { (p) throws(Errno) in
            try check { sl_openat2(dir, p, how, UInt64(mode), sl_resolve_beneath()) }
        }
    }

    /// Opens a path given on the command line (relative to the working directory, or absolute).
    public static func openPath(_ path: [UInt8], _ flags: Int32, mode: mode_t = 0) throws(Errno) -> Int32 {
        try withCString(path) { (p) throws(Errno) in try check { sl_openat_mode(AT_FDCWD, p, flags | O_CLOEXEC, UInt32(mode)) } }
    }

    public static func close(_ fd: Int32) { _ = Glibc.close(fd) }

    // MARK: metadata

    /// `fstatat(AT_SYMLINK_NOFOLLOW)`; nil when the name is absent (ENOENT, ENOTDIR).
    public static func lstat(_ dir: Int32, _ name: [UInt8]) throws(Errno) -> stat? {
        var st = stat()
        let rc = try withCString(name) { (p) throws(Errno) in fstatat(dir, p, &st, AT_SYMLINK_NOFOLLOW) }
        if rc == 0 { return st }
        let e = sl_errno()
        if e == ENOENT || e == ENOTDIR { return nil }
        throw Errno(e)
    }

    public static func fstat(_ fd: Int32) throws(Errno) -> stat {
        var st = stat()
        _ = try check { Glibc.fstat(fd, &st) }
        return st
    }

    public static func lchown(_ dir: Int32, _ name: [UInt8], _ uid: uid_t, _ gid: gid_t) throws(Errno) {
        try withCString(name) { (p) throws(Errno) in try ok(fchownat(dir, p, uid, gid, AT_SYMLINK_NOFOLLOW)) }
    }

    /// chmod of one name that is not a symlink, without following it (through an O_PATH fd).
    public static func chmod(_ dir: Int32, _ name: [UInt8], _ mode: mode_t) throws(Errno) {
        let fd = try openAt(dir, name, SL_O_PATH)
        defer { close(fd) }
        _ = try check { Glibc.chmod("/proc/self/fd/\(fd)", mode) }
    }

    public static func fchmod(_ fd: Int32, _ mode: mode_t) throws(Errno) { _ = try check { Glibc.fchmod(fd, mode) } }

    /// Sets atime and mtime of one name, not following it.
    public static func utimes(_ dir: Int32, _ name: [UInt8], atime: timespec, mtime: timespec) throws(Errno) {
        var t = [atime, mtime]
        try withCString(name) { (p) throws(Errno) in try ok(utimensat(dir, p, &t, AT_SYMLINK_NOFOLLOW)) }
    }

    // MARK: names

    public static func mkdir(_ dir: Int32, _ name: [UInt8], _ mode: mode_t) throws(Errno) {
        try withCString(name) { (p) throws(Errno) in try ok(mkdirat(dir, p, mode)) }
    }

    public static func mknod(_ dir: Int32, _ name: [UInt8], _ mode: mode_t, major: UInt32, minor: UInt32) throws(Errno) {
        let dev = sl_makedev(major, minor)
        try withCString(name) { (p) throws(Errno) in try ok(mknodat(dir, p, mode, dev)) }
    }

    public static func symlink(_ target: [UInt8], _ dir: Int32, _ name: [UInt8]) throws(Errno) {
        try withCStrings(target, name) { (t, n) throws(Errno) in try ok(symlinkat(t, dir, n)) }
    }

    public static func readlink(_ dir: Int32, _ name: [UInt8]) throws(Errno) -> [UInt8] {
        var buf = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let n = try withCString(name) { (p) throws(Errno) in try check { readlinkat(dir, p, &buf, buf.count - 1) } }
        return buf[0..<n].map { UInt8(bitPattern: $0) }
    }

    /// A hard link, never following a symlink at `from`.
    public static func link(_ fromDir: Int32, _ from: [UInt8], _ toDir: Int32, _ to: [UInt8]) throws(Errno) {
        try withCStrings(from, to) { (f, t) throws(Errno) in try ok(linkat(fromDir, f, toDir, t, 0)) }
    }

    public static func unlink(_ dir: Int32, _ name: [UInt8], directory: Bool = false) throws(Errno) {
        try withCString(name) { (p) throws(Errno) in try ok(unlinkat(dir, p, directory ? AT_REMOVEDIR : 0)) }
    }

    public static func rename(_ fromDir: Int32, _ from: [UInt8], _ toDir: Int32, _ to: [UInt8], flags: UInt32 = 0) throws(Errno) {
        try withCStrings(from, to) { (f, t) throws(Errno) in try ok(sl_renameat2(fromDir, f, toDir, t, flags)) }
    }

    /// Every entry of the directory open at `fd` (not consumed), without `.` and `..`, sorted by bytes.
    public static func list(_ fd: Int32) throws(Errno) -> [[UInt8]] {
        let dup = try check { fcntl(fd, F_DUPFD_CLOEXEC, 0) }
        guard let dir = fdopendir(dup) else {
            let e = Errno(sl_errno())
            close(dup)
            throw e
        }
        defer { closedir(dir) }
        rewinddir(dir)
        var names: [[UInt8]] = []
        while true {
            sl_set_errno(0)
            guard let ent = readdir(dir) else {
                if sl_errno() != 0 { throw Errno(sl_errno()) }
                break
            }
            let name: [UInt8] = withUnsafePointer(to: &ent.pointee.d_name) {
                $0.withMemoryRebound(to: UInt8.self, capacity: 256) { p in Array(UnsafeBufferPointer(start: p, count: strlen(UnsafeRawPointer(p).assumingMemoryBound(to: CChar.self)))) }
            }
            if name == [0x2e] || name == [0x2e, 0x2e] { continue }
            names.append(name)
        }
        return names.sorted { $0.lexicographicallyPrecedes($1) }
    }

    // MARK: data

    public static func read(_ fd: Int32, _ buf: UnsafeMutableRawBufferPointer) throws(Errno) -> Int {
        try check { Glibc.read(fd, buf.baseAddress, buf.count) }
    }

    public static func writeAll(_ fd: Int32, _ buf: UnsafeRawBufferPointer) throws(Errno) {
        var done = 0
        while done < buf.count {
            done += try check { Glibc.write(fd, buf.baseAddress! + done, buf.count - done) }
        }
    }

    public static func pwriteAll(_ fd: Int32, _ buf: UnsafeRawBufferPointer, at offset: Int64) throws(Errno) {
        var done = 0
        while done < buf.count {
            done += try check { Glibc.pwrite(fd, buf.baseAddress! + done, buf.count - done, off_t(offset) + off_t(done)) }
        }
    }

    public static func truncate(_ fd: Int32, _ size: Int64) throws(Errno) { _ = try check { ftruncate(fd, off_t(size)) } }

    /// `lseek`; nil for ENXIO (no data / no hole past the offset).
    public static func seek(_ fd: Int32, _ offset: Int64, _ whence: Int32) throws(Errno) -> Int64? {
        let r = Glibc.lseek(fd, off_t(offset), whence)
        if r >= 0 { return Int64(r) }
        if sl_errno() == ENXIO { return nil }
        throw Errno(sl_errno())
    }

    public static func fsync(_ fd: Int32) throws(Errno) { _ = try check { Glibc.fsync(fd) } }

    public static func flock(_ fd: Int32, exclusive: Bool) throws(Errno) {
        _ = try check { sl_flock(fd, exclusive ? LOCK_EX : LOCK_SH) }
    }

    // MARK: extended attributes
    //
    // Linux has no xattr call on (dir fd, name) before 6.13 and O_PATH descriptors refuse
    // f*xattr, so these name the entry as /proc/self/fd/DIR/NAME with the l* calls, which
    // do not follow the last component: the exact inode, with no walk through the layer.

    static func entryPath(_ dir: Int32, _ name: [UInt8]) -> [UInt8] {
        Array("/proc/self/fd/\(dir)".utf8) + (name.isEmpty ? [] : [0x2f] + name)
    }

    public static func listXattrs(_ dir: Int32, _ name: [UInt8]) throws(Errno) -> [[UInt8]] {
        let path = entryPath(dir, name)
        while true {
            let size = try withCString(path) { (p) throws(Errno) in llistxattr(p, nil, 0) }
            if size < 0 {
                let e = sl_errno()
                if e == ENOTSUP || e == ENODATA { return [] }
                throw Errno(e)
            }
            if size == 0 { return [] }
            var buf = [CChar](repeating: 0, count: size)
            let n = try withCString(path) { (p) throws(Errno) in llistxattr(p, &buf, size) }
            if n < 0 {
                if sl_errno() == ERANGE { continue }
                throw Errno(sl_errno())
            }
            return buf[0..<n].split(separator: 0).map { $0.map { UInt8(bitPattern: $0) } }
        }
    }

    /// One xattr's value; nil when absent (ENODATA) or unsupported.
    public static func getXattr(_ dir: Int32, _ name: [UInt8], _ key: [UInt8]) throws(Errno) -> [UInt8]? {
        let path = entryPath(dir, name)
        while true {
            let size = try withCStrings(path, key) { (p, k) throws(Errno) in lgetxattr(p, k, nil, 0) }
            if size < 0 {
                let e = sl_errno()
                if e == ENODATA || e == ENOTSUP { return nil }
                throw Errno(e)
            }
            var buf = [UInt8](repeating: 0, count: max(size, 1))
            let n = try withCStrings(path, key) { (p, k) throws(Errno) in buf.withUnsafeMutableBytes { lgetxattr(p, k, $0.baseAddress, size) } }
            if n < 0 {
                if sl_errno() == ERANGE { continue }
                throw Errno(sl_errno())
            }
            return Array(buf[0..<n])
        }
    }

    public static func setXattr(_ dir: Int32, _ name: [UInt8], _ key: [UInt8], _ value: [UInt8]) throws(Errno) {
        let path = entryPath(dir, name)
        try withCStrings(path, key) { (p, k) throws(Errno) in try ok(value.withUnsafeBytes { lsetxattr(p, k, $0.baseAddress, $0.count, 0) }) }
    }

    public static func removeXattr(_ dir: Int32, _ name: [UInt8], _ key: [UInt8]) throws(Errno) {
        let path = entryPath(dir, name)
        try withCStrings(path, key) { (p, k) throws(Errno) in try ok(lremovexattr(p, k)) }
    }
}

extension stat {
    var type: mode_t { st_mode & S_IFMT }
    var mtime: timespec { st_mtim }
}

// MARK: whole files and paths

extension FS {
    /// The content of the file at `path` beneath `dir` (no symlink followed), at most `limit` bytes.
    public static func readFile(_ dir: Int32, _ path: [UInt8], limit: Int = 64 << 20, followBeneath: Bool = false) throws(Errno) -> [UInt8] {
        let fd = followBeneath ? try openBeneathFollowing(dir, path, O_RDONLY) : try openBeneath(dir, path, O_RDONLY)
        defer { close(fd) }
        var out: [UInt8] = []
        let chunk = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 16, alignment: 8)
        defer { chunk.deallocate() }
        while true {
            let n = try read(fd, chunk)
            if n == 0 { return out }
            out += chunk[0..<n]
            if out.count > limit { throw Errno(EFBIG) }
        }
    }

    /// Like `openBeneath`, but symlinks that stay beneath `dir` are followed (image archives
    /// may link one layer file to another).
    public static func openBeneathFollowing(_ dir: Int32, _ path: [UInt8], _ flags: Int32) throws(Errno) -> Int32 {
        let how = UInt64(UInt32(bitPattern: flags | O_CLOEXEC))
        return try withCString(path) { (p) throws(Errno) in
            try check { sl_openat2(dir, p, how, 0, UInt64(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)) }
        }
    }

    /// Writes `bytes` to `name` in `dir` atomically: a temporary name, fsync, rename.
    public static func writeFileAtomically(_ dir: Int32, _ name: [UInt8], _ bytes: [UInt8], mode: mode_t = 0o644) throws(Errno) {
        let tmp = Array(".\(getpid()).tmp.".utf8) + name
        let fd = try openAt(dir, tmp, O_WRONLY | O_CREAT | O_TRUNC, mode: mode)
        do throws(Errno) {
            let failed = bytes.withUnsafeBytes { (b) -> Errno? in
                do throws(Errno) { try writeAll(fd, b); return nil } catch { return error }
            }
            if let failed { throw failed }
            try fsync(fd)
        } catch {
            close(fd)
            try? unlink(dir, tmp)
            throw error
        }
        close(fd)
        try rename(dir, tmp, dir, name)
    }

    /// `mkdir -p` of a path given by the user (its own symlinks are followed, as any tool does).
    public static func makeDirectories(_ path: [UInt8], mode: mode_t = 0o755) throws(Errno) {
        var prefix: [UInt8] = path.first == 0x2f ? [0x2f] : []
        for c in path.split(separator: 0x2f) {
            prefix += (prefix.isEmpty || prefix == [0x2f] ? [] : [0x2f]) + c
            let rc = try withCString(prefix) { (p) throws(Errno) in Glibc.mkdir(p, mode) }
            if rc != 0 && sl_errno() != EEXIST { throw Errno(sl_errno()) }
        }
    }

    /// The absolute, symlink-free form of a user's path.
    public static func realpath(_ path: [UInt8]) throws(Errno) -> [UInt8] {
        let r = try withCString(path) { (p) throws(Errno) in Glibc.realpath(p, nil) }
        guard let r else { throw Errno(sl_errno()) }
        defer { free(r) }
        return Array(UnsafeRawBufferPointer(start: r, count: strlen(r)))
    }

    /// A fresh, empty directory in `dir` with a unique name starting with `prefix`; returns its name.
    public static func makeTempDirectory(_ dir: Int32, prefix: String) throws(Errno) -> [UInt8] {
        var attempt = 0
        while true {
            var ts = timespec()
            clock_gettime(CLOCK_REALTIME, &ts)
            let name = Array("\(prefix).\(getpid()).\(ts.tv_nsec).\(attempt)".utf8)
            do {
                try mkdir(dir, name, 0o700)
                return name
            } catch {
                if error.rawValue != EEXIST || attempt > 100 { throw error }
                attempt += 1
            }
        }
    }
}
