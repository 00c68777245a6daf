import CFuse
import Glibc

/// One directory of the stack, held open from mount to unmount.
///
/// Holding the root as an `O_PATH` descriptor means every operation is resolved
/// beneath it, and the daemon keeps serving after `pivot_root` detaches the
/// path the layer was named by.
public final class Layer: @unchecked Sendable {
    public enum Role: Sendable, Equatable { case upper, lower(Int) }

    public let role: Role
    /// Index in the stack, 0 being the top (the upper layer when there is one).
    public let index: Int
    public let path: String
    public let rootFD: Int32
    public let device: UInt64
    public let rootIno: UInt64

    public var isUpper: Bool { role == .upper }

    /// "upper" or "lower N" (1 is the topmost lower), as the trace names layers.
    public var label: String {
        switch role {
        case .upper: return "upper"
        case .lower(let n): return "lower \(n)"
        }
    }

    /// Takes `fd`, the layer's root (see PrivateMount), or opens `path` itself.
    public init(role: Role, index: Int, path: String, fd opened: Int32? = nil) throws(Errno) {
        let fd: Int32
        if let opened { fd = opened } else { fd = try PrivateMount.openDirectories([path], flags: [O_PATH])[0] }
        let st: stat
        do { st = try Sys.fstat(fd) } catch { Sys.close(fd); throw error }
        self.role = role
        self.index = index
        self.path = path
        self.rootFD = fd
        self.device = UInt64(st.st_dev)
        self.rootIno = UInt64(st.st_ino)
    }

    deinit { Sys.close(rootFD) }

    /// An `O_PATH` descriptor of the directory at `relPath` in this layer, or nil when
    /// the layer has no directory there. Never follows a symlink, never leaves the layer.
    public func openDirectory(_ relPath: String) throws(Errno) -> Int32? {
        do {
            return try Sys.openBeneath(rootFD, relPath, O_PATH | O_DIRECTORY)
        } catch let e as Errno where e.rawValue == ENOENT || e.rawValue == ENOTDIR || e.rawValue == ELOOP {
            return nil
        }
    }

    /// Like `openDirectory`, but for reading its entries.
    public func openDirectoryForListing(_ relPath: String) throws(Errno) -> Int32? {
        do {
            return try Sys.openBeneath(rootFD, relPath, O_RDONLY | O_DIRECTORY)
        } catch let e as Errno where e.rawValue == ENOENT || e.rawValue == ENOTDIR || e.rawValue == ELOOP {
            return nil
        }
    }
}
