import Glibc

/// One directory of the stack, held open from mount to unmount.
///
/// Holding the root as an `O_PATH` descriptor means every operation is resolved
/// beneath it, and the daemon keeps serving after `pivot_root` detaches the
/// path the layer was named by.
public final class Layer: Sendable {
    public enum Role: Sendable, Equatable { case upper, lower(Int) }

    public let role: Role
    /// Index in the stack, 0 being the top (the upper layer when there is one).
    public let index: Int
    /// The directory as the command line named it, as bytes.
    public let path: [UInt8]
    public let rootFD: Int32
    public let device: UInt64
    public let rootIno: UInt64
    /// The xattr this layer keeps its objects' real owners and modes in (`OwnerXattr`);
    /// nil for an ordinary layer.
    public let ownerXattr: Name?
    /// A data-only layer (`lowerdir=...::DATA`): never visible by name, it only holds the
    /// data of metacopy files that an absolute redirect points into.
    public let isDataOnly: Bool

    public var isUpper: Bool { role == .upper }

    /// "upper" or "lower N" (1 is the topmost lower), as the trace names layers.
    public var label: String {
        switch role {
        case .upper: return "upper"
        case .lower(let n): return isDataOnly ? "data \(n)" : "lower \(n)"
        }
    }

    /// The path, printable and lossless (see `Bytes.display`).
    public var displayPath: String { Bytes.display(path) }

    /// Takes `fd`, the layer's root (see PrivateMount), or opens `path` itself. The
    /// owner xattr is the one the root carries, or what `ownerXattr` chooses from it.
    public init(role: Role, index: Int, path: [UInt8], fd opened: Int32? = nil, dataOnly: Bool = false,
                ownerXattr choose: (Name?) -> Name? = { $0 }) throws(Errno) {
        let fd: Int32
        if let opened { fd = opened } else { fd = try PrivateMount.openDirectories([path], flags: [O_PATH])[0] }
        let st: stat
        let detected: Name?
        do throws(Errno) {
            st = try Sys.fstat(fd)
            detected = try OwnerXattr.detect(root: fd)
        } catch { Sys.close(fd); throw error }
        self.role = role
        self.index = index
        self.path = path
        self.rootFD = fd
        self.device = UInt64(st.st_dev)
        self.rootIno = UInt64(st.st_ino)
        self.ownerXattr = choose(detected)
        self.isDataOnly = dataOnly
    }

    deinit { Sys.close(rootFD) }
}
