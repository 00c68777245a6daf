import Glibc

/// What the daemon's user namespace does to ownership.
///
/// Inside a user namespace, a file owned by an id the namespace does not map
/// stats as the overflow id (65534). Passing that on as a real owner would let
/// namespace root treat such files as its own and, on copy-up, write 65534 as
/// their owner. The kernel's overlay refuses both; so do we, by reporting the
/// owner as unmapped ((uid_t)-1, which the kernel shows as the overflow id) and
/// refusing to copy such a file up (EOVERFLOW).
public struct UserNamespace: Sendable {
    /// The overflow ids to treat as unmapped; nil in the initial namespace.
    public let overflow: (uid: UInt32, gid: UInt32)?

    public static func current() -> UserNamespace {
        guard let map = read("/proc/self/uid_map"),
              map.split(whereSeparator: \.isWhitespace) != ["0", "0", "4294967295"] else {
            return UserNamespace(overflow: nil)
        }
        let uid = read("/proc/sys/kernel/overflowuid").flatMap { UInt32($0.trimmingSpaces()) } ?? 65534
        let gid = read("/proc/sys/kernel/overflowgid").flatMap { UInt32($0.trimmingSpaces()) } ?? 65534
        return UserNamespace(overflow: (uid, gid))
    }

    public init(overflow: (uid: UInt32, gid: UInt32)?) { self.overflow = overflow }

    public func isUnmapped(uid: UInt32) -> Bool { overflow.map { $0.uid == uid } ?? false }
    public func isUnmapped(gid: UInt32) -> Bool { overflow.map { $0.gid == gid } ?? false }

    /// A small /proc file as text (ASCII numbers); nil when it cannot be read.
    static func read(_ path: String) -> String? {
        guard let fd = try? Sys.openPath(Array(path.utf8), O_RDONLY) else { return nil }
        defer { Sys.close(fd) }
        var buf = [UInt8](repeating: 0, count: 4096)
        guard let n = try? buf.withUnsafeMutableBytes({ (b: UnsafeMutableRawBufferPointer) throws(Errno) -> Int in try Sys.read(fd, b) }),
              n > 0 else { return nil }
        return String(decoding: buf[0..<n], as: UTF8.self)
    }
}

extension String {
    func trimmingSpaces() -> String {
        String(drop(while: \.isWhitespace).reversed().drop(while: \.isWhitespace).reversed())
    }
}
