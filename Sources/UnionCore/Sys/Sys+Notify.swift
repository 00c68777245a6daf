import CLinux
import Glibc

/// The calls that watch the lower layers for edits made behind the mount's back:
/// inotify, fanotify, file handles, and the eventfd and poll the watcher thread
/// waits on. Thin and typed, like the rest of `Sys`.
extension Sys {
    // MARK: inotify

    public static func inotifyInit() throws(Errno) -> Int32 { try retrying { suf_inotify_init() } }

    /// Watches the directory an (O_PATH) descriptor holds. `/proc/self/fd/N` is a magic
    /// link to that exact inode: following it cannot lead anywhere else.
    public static func inotifyWatch(_ ifd: Int32, directory fd: Int32, mask: UInt32) throws(Errno) -> Int32 {
        try Bytes.withCString(procPath(fd)) { (p: UnsafePointer<CChar>) throws(Errno) -> Int32 in
            try retrying { suf_inotify_add_watch(ifd, p, mask) }
        }
    }

    public static func inotifyUnwatch(_ ifd: Int32, _ wd: Int32) { _ = suf_inotify_rm_watch(ifd, wd) }

    // MARK: fanotify

    public static func fanotifyInit(flags: UInt32, eventFlags: UInt32) throws(Errno) -> Int32 {
        try retrying { suf_fanotify_init(flags, eventFlags) }
    }

    /// Adds a mark on the object `dir` refers to (`.` beneath it: an O_PATH descriptor works).
    public static func fanotifyMark(_ ffd: Int32, flags: UInt32, mask: UInt64, _ dir: Int32) throws(Errno) {
        _ = try retrying { suf_fanotify_mark(ffd, flags, mask, dir, ".") }
    }

    // MARK: file handles

    /// The handle of `name` in `dir` (not followed), or of `dir` itself for `nil`, in the
    /// form fanotify reports: the type's four bytes, then the handle. Asks for a handle
    /// meant for identification (AT_HANDLE_FID, as fanotify encodes them) where the
    /// kernel knows the flag, a plain one where it does not.
    public static func fileHandle(_ dir: Int32, _ name: Name?) throws(Errno) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 4 + Int(SUF_MAX_HANDLE_SZ))
        let base: Int32 = name == nil ? SUF_AT_EMPTY_PATH : 0
        func call(_ flags: Int32) throws(Errno) -> Int {
            var type: Int32 = 0
            let n = try (name ?? Name()).withCString { (p: UnsafePointer<CChar>) throws(Errno) -> Int32 in
                try out.withUnsafeMutableBufferPointer { (b: inout UnsafeMutableBufferPointer<UInt8>) throws(Errno) -> Int32 in
                    try retrying { suf_name_to_handle(dir, p, flags, &type, b.baseAddress! + 4) }
                }
            }
            withUnsafeBytes(of: type) { for i in 0..<4 { out[i] = $0[i] } }
            return Int(n)
        }
        let n: Int
        do throws(Errno) { n = try call(base | SUF_AT_HANDLE_FID) } catch where error.rawValue == EINVAL {
            n = try call(base)
        }
        return Array(out[0..<(4 + n)])
    }

    /// The handle of `name` in `dir` (not followed; `dir` itself for an empty name) as the filesystem exports it to
    /// open_by_handle_at: no AT_HANDLE_FID, not connectable. Encoding needs no privilege;
    /// it is the fid the kernel's overlay stores in `overlay.origin` (ovl_encode_real_fh).
    public static func exportHandle(_ dir: Int32, _ name: Name) throws(Errno) -> (type: Int32, bytes: [UInt8]) {
        var out = [UInt8](repeating: 0, count: Int(SUF_MAX_HANDLE_SZ))
        var type: Int32 = 0
        let n = try name.withCString { (p: UnsafePointer<CChar>) throws(Errno) -> Int32 in
            try out.withUnsafeMutableBufferPointer { (b: inout UnsafeMutableBufferPointer<UInt8>) throws(Errno) -> Int32 in
                try retrying { suf_name_to_handle(dir, p, name.isEmpty ? SUF_AT_EMPTY_PATH : 0, &type, b.baseAddress!) }
            }
        }
        return (type, Array(out[0..<Int(n)]))
    }

    /// The UUID of the filesystem `fd` is on, as the kernel holds it (FS_IOC_GETFSUUID;
    /// all zeros on a filesystem that has none).
    public static func filesystemUUID(_ fd: Int32) throws(Errno) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 16)
        _ = try out.withUnsafeMutableBufferPointer { (b: inout UnsafeMutableBufferPointer<UInt8>) throws(Errno) -> Int32 in
            try retrying { suf_fsuuid(fd, b.baseAddress!) }
        }
        return out
    }

    /// The filesystem id (statfs's `f_fsid`) of the filesystem `fd` is on, as 8 bytes.
    public static func filesystemID(_ fd: Int32) throws(Errno) -> [UInt8] {
        var id: (Int32, Int32) = (0, 0)
        _ = try withUnsafeMutableBytes(of: &id) { (raw: UnsafeMutableRawBufferPointer) throws(Errno) -> Int32 in
            try retrying { suf_fsid(fd, raw.baseAddress!.assumingMemoryBound(to: Int32.self)) }
        }
        return withUnsafeBytes(of: id) { Array($0) }
    }

    // MARK: waiting

    public static func eventFD() throws(Errno) -> Int32 { try retrying { suf_eventfd() } }

    /// Adds one to an eventfd's counter: wakes whoever polls it.
    public static func signal(eventFD fd: Int32) {
        var one: UInt64 = 1
        _ = withUnsafeBytes(of: &one) { Glibc.write(fd, $0.baseAddress, 8) }
    }

    /// Resets an eventfd's counter.
    public static func drain(eventFD fd: Int32) {
        var value: UInt64 = 0
        _ = withUnsafeMutableBytes(of: &value) { Glibc.read(fd, $0.baseAddress, 8) }
    }

    /// Waits until `a` or `b` is readable (or `timeout` ms pass; -1 waits for ever).
    public static func pollReadable(_ a: Int32, _ b: Int32, timeout: Int32) throws(Errno) -> (a: Bool, b: Bool) {
        let r = try retrying { suf_poll2(a, b, timeout) }
        return (r & 1 != 0, r & 2 != 0)
    }

    /// read(2) that answers 0 where a non-blocking descriptor has nothing queued.
    public static func readAvailable(_ fd: Int32, _ buf: UnsafeMutableRawBufferPointer) throws(Errno) -> Int {
        do throws(Errno) { return try read(fd, buf) } catch where error.rawValue == EAGAIN { return 0 }
    }
}
