import CLinux
import CTestSupport
import Glibc
@testable import UnionCore

// Test support: layer stacks in temp dirs, built and inspected with byte paths (file
// names in these tests are often not UTF-8, so they never pass through String), and a
// way to run code without root's permission override.

/// The bytes of an ASCII/UTF-8 literal.
func b(_ s: StaticString) -> [UInt8] {
    Array(UnsafeBufferPointer(start: s.utf8Start, count: s.utf8CodeUnitCount))
}

/// `body` with `path` as a NUL-terminated C string.
func withPath<R>(_ path: [UInt8], _ body: (UnsafePointer<CChar>) -> R) -> R {
    (path + [0]).withUnsafeBufferPointer { body(UnsafeRawPointer($0.baseAddress!).assumingMemoryBound(to: CChar.self)) }
}

/// A layer stack in a temp dir (`u`, `w`, `l1`...`lN`), driven through `Union` without any mount.
final class Stack {
    let root: [UInt8]
    let lowers: Int

    init(_ lowers: Int = 2) {
        var template = Array("/tmp/suf-unit-XXXXXX".utf8CString)
        root = Bytes.fromCString(mkdtemp(&template)!)
        self.lowers = lowers
        for d in [b("u"), b("w")] + (1...lowers).map({ Array("l\($0)".utf8) }) { mkdirs(d) }
    }

    deinit {
        // Directories a test made unreadable must be opened up again to be removed.
        let r = String(decoding: root, as: UTF8.self)  // mkdtemp's own ASCII name
        _ = system("chmod -R u+rwX '\(r)' 2>/dev/null; rm -rf '\(r)'")
    }

    func path(_ rel: [UInt8]) -> [UInt8] { root + [UInt8(ascii: "/")] + rel }

    /// A regular file, with its parent directories.
    func file(_ rel: [UInt8], _ content: [UInt8] = b("x"), mode: mode_t = 0o644) {
        if let slash = rel.lastIndex(of: UInt8(ascii: "/")) { mkdirs(Array(rel[..<slash])) }
        let fd = withPath(path(rel)) { open($0, O_WRONLY | O_CREAT | O_TRUNC, mode) }
        precondition(fd >= 0, "cannot create \(Bytes.display(rel))")
        _ = content.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        close(fd)
    }
    func file(_ rel: StaticString, _ content: StaticString = "x") { file(b(rel), b(content)) }

    /// `mkdir -p`, one component at a time.
    func mkdirs(_ rel: [UInt8]) {
        var cur: [UInt8] = []
        for part in rel.split(separator: UInt8(ascii: "/")) {
            cur += (cur.isEmpty ? [] : [UInt8(ascii: "/")]) + part
            _ = withPath(path(cur)) { mkdir($0, 0o755) }
        }
    }
    func mkdirs(_ rel: StaticString) { mkdirs(b(rel)) }

    /// A kernel-format whiteout (0/0 character device); needs CAP_MKNOD (root).
    func whiteout(_ rel: [UInt8]) { _ = withPath(path(rel)) { mknod($0, S_IFCHR, 0) } }
    func whiteout(_ rel: StaticString) { whiteout(b(rel)) }

    func symlink(_ target: [UInt8], at rel: [UInt8]) {
        _ = withPath(target) { t in withPath(path(rel)) { Glibc.symlink(t, $0) } }
    }

    func chmod(_ rel: [UInt8], _ mode: mode_t) { _ = withPath(path(rel)) { Glibc.chmod($0, mode) } }

    func exists(_ rel: [UInt8]) -> stat? {
        var st = stat()
        return withPath(path(rel)) { lstat($0, &st) } == 0 ? st : nil
    }
    func exists(_ rel: StaticString) -> stat? { exists(b(rel)) }

    func readlink(_ rel: [UInt8]) -> [UInt8]? {
        var buf = [CChar](repeating: 0, count: Int(PATH_MAX))
        let n = withPath(path(rel)) { Glibc.readlink($0, &buf, buf.count) }
        return n < 0 ? nil : buf[0..<n].map { UInt8(bitPattern: $0) }
    }

    func read(_ rel: [UInt8]) -> [UInt8]? {
        let fd = withPath(path(rel)) { open($0, O_RDONLY) }
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var buf = [UInt8](repeating: 0, count: 1 << 16)
        let n = buf.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
        return n < 0 ? nil : Array(buf[0..<n])
    }

    /// The raw entries of a layer directory, as the filesystem holds them.
    func entries(_ rel: [UInt8]) -> Set<[UInt8]> {
        guard let d = withPath(path(rel), { opendir($0) }) else { return [] }
        defer { closedir(d) }
        var out = Set<[UInt8]>()
        while let e = Glibc.readdir(d) {
            let name = withUnsafePointer(to: &e.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: 256) { Bytes.fromCString($0) }
            }
            if name != b(".") && name != b("..") { out.insert(name) }
        }
        return out
    }

    /// Hands the whole tree to `uid` (group 0, which the unprivileged thread keeps as its
    /// filesystem gid, so a copy-up may give a copy that group), so it may write in it.
    func chownAll(_ uid: uid_t) {
        let r = String(decoding: root, as: UTF8.self)
        _ = system("chown -R -h \(uid):0 '\(r)'")
    }

    func union(upper: Bool = true) throws(Errno) -> Union {
        let lowerDirs = (1...lowers).map { path(Array("l\($0)".utf8)) }
        return try Union(config: UnionConfig(lowerDirs: lowerDirs, upperDir: upper ? path(b("u")) : nil,
                                             workDir: upper ? path(b("w")) : nil))
    }
}

extension Union {
    /// The names a listing shows, without "." and "..", in byte order.
    func names(_ id: UInt64) throws(Errno) -> [Name] {
        try list(id).map(\.name).filter { !$0.isDotOrDotDot }.sorted()
    }

    /// The node id of the merged path `parts`, looked up one name at a time.
    func id(_ parts: Name...) throws(Errno) -> UInt64 {
        var cur = NodeTable.rootID
        for part in parts { cur = try lookup(cur, part).0.id }
        return cur
    }

    /// The whole content of the file `id`, read through the union.
    func contents(_ id: UInt64) throws(Errno) -> [UInt8] {
        let fd = try open(id, flags: O_RDONLY)
        defer { release(id, fd) }
        var buf = [UInt8](repeating: 0, count: 1 << 16)
        var out: [UInt8] = []
        while true {
            let n = try buf.withUnsafeMutableBytes { (raw: UnsafeMutableRawBufferPointer) -> Result<Int, Errno> in
                Result { () throws(Errno) -> Int in try read(fd, into: raw, at: Int64(out.count)) }
            }.get()
            if n == 0 { return out }
            out += buf[0..<n]
        }
    }
}

// MARK: acting without root's permission override

/// The uid a test acts as when it must be subject to permission bits (nobody).
let unprivilegedUID: uid_t = 65534

private final class ThreadBody<T>: @unchecked Sendable {  // handed to one thread, read after join
    let body: () -> T
    var result: T?
    init(_ body: @escaping () -> T) { self.body = body }
}

/// Runs `body` on a thread of its own that permission bits apply to, waits for it and
/// returns what it returned. (Assert on the result afterwards, on the test's own thread:
/// the new thread is not part of the running test.)
///
/// As root, that thread sets its filesystem uid to `unprivilegedUID`: the kernel then
/// clears CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER, CAP_CHOWN and CAP_MKNOD from
/// that thread's effective set, so a mode-000 directory gives it EACCES as it would an
/// ordinary user. Credentials are per thread in Linux, and glibc's setfsuid is a plain
/// syscall (unlike setresuid, which glibc applies to every thread), so the rest of the
/// test process keeps root. This stands in for "fork, then setresuid in the child",
/// which is not safe in a multi-threaded test runner. As non-root, `body` simply runs on
/// the new thread: permission bits already apply.
func asUnprivileged<T>(_ body: @escaping () -> T) -> T {
    let box = ThreadBody<T> {
        if geteuid() == 0 {
            _ = suf_test_setfsuid(unprivilegedUID)
            // Asking with an invalid uid changes nothing and answers the current one.
            precondition(suf_test_setfsuid(uid_t.max) == Int32(unprivilegedUID), "setfsuid did not take effect")
        }
        return body()
    }
    let ctx = Unmanaged.passRetained(box as AnyObject).toOpaque()
    var tid = pthread_t()
    let rc = pthread_create(&tid, nil, { ctx in
        let any = Unmanaged<AnyObject>.fromOpaque(ctx!).takeRetainedValue()
        (any as! any Runnable).run()
        return nil
    }, ctx)
    precondition(rc == 0, "pthread_create failed")
    pthread_join(tid, nil)
    // The change stayed on that thread: this one still acts as root.
    if geteuid() == 0 { precondition(suf_test_setfsuid(uid_t.max) == 0, "setfsuid reached the calling thread") }
    return box.result!
}

private protocol Runnable { func run() }
extension ThreadBody: Runnable { func run() { result = body() } }

/// A union call's outcome, to be checked on the test's thread.
func attempt<T>(_ f: () throws(Errno) -> T) -> Result<T, Errno> { Result(catching: f) }

extension Result {
    var errno: Failure? { if case .failure(let e) = self { return e } else { return nil } }
}

/// Whether the calling thread is refused `path` by permission bits (the test's own
/// check that a fault is really in place before asserting what the union does with it).
func isRefused(_ path: [UInt8]) -> Bool {
    let fd = withPath(path) { open($0, O_RDONLY | O_DIRECTORY) }
    if fd >= 0 { close(fd); return false }
    return errno == EACCES
}
