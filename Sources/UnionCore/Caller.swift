import Glibc

/// Who asked: the credentials the kernel attaches to a request.
public struct Caller: Sendable {
    public var uid: uid_t
    public var gid: gid_t
    public var pid: pid_t
    public var umask: mode_t

    public init(uid: uid_t, gid: gid_t, pid: pid_t = 0, umask: mode_t = 0o022) {
        self.uid = uid
        self.gid = gid
        self.pid = pid
        self.umask = umask
    }
}

/// Which attributes a setattr changes; nil leaves one alone.
public struct AttributeChange: Sendable {
    public enum Time: Sendable { case now, at(timespec) }
    public var mode: mode_t?
    public var uid: uid_t?
    public var gid: gid_t?
    public var size: Int64?
    public var atime: Time?
    public var mtime: Time?
    public init() {}
}

/// One entry of a merged directory listing.
public struct DirectoryEntry: Sendable {
    public var name: Name
    public var type: UInt8
    public var ino: UInt64
    /// The top layer holding the name when the listing was taken (-1 for `.` and `..`).
    var layer: Int = -1
    /// The namespace token of the listing (see `NamespaceSequence`), if it was taken while
    /// the union changed no name.
    var listedAt: UInt64? = nil
}
