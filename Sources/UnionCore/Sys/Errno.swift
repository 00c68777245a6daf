import CFuse
import Glibc

/// An errno value, thrown by every syscall wrapper and answered to the kernel as is.
public struct Errno: Error, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: Int32
    public init(_ rawValue: Int32) { self.rawValue = rawValue }

    /// The calling thread's errno, read right after a failed call.
    public static var current: Errno { Errno(suf_errno()) }

    /// The symbolic name the trace and error messages use, e.g. "ENOENT".
    public var name: String {
        guard let p = suf_errname(rawValue) else { return "E\(rawValue)" }
        return String(cString: p)
    }
    public var description: String { "\(name) (\(String(cString: strerror(rawValue))))" }

    public static let noEntry = Errno(ENOENT)
    public static let exists = Errno(EEXIST)
    public static let notEmpty = Errno(ENOTEMPTY)
    public static let notDirectory = Errno(ENOTDIR)
    public static let isDirectory = Errno(EISDIR)
    public static let invalid = Errno(EINVAL)
    public static let readOnly = Errno(EROFS)
    public static let crossDevice = Errno(EXDEV)
    public static let permission = Errno(EPERM)
    public static let access = Errno(EACCES)
    public static let io = Errno(EIO)
    public static let noData = Errno(ENODATA)
    public static let notSupported = Errno(EOPNOTSUPP)
    public static let busy = Errno(EBUSY)
    public static let nameTooLong = Errno(ENAMETOOLONG)
    public static let badFD = Errno(EBADF)
    public static let range = Errno(ERANGE)
    public static let loop = Errno(ELOOP)
}

/// Runs a syscall until it does not fail with EINTR; throws its errno otherwise.
/// Every wrapper funnels through here so EINTR is handled in exactly one place.
@inline(__always)
func retrying<T: BinaryInteger>(_ call: () -> T) throws(Errno) -> T {
    while true {
        let rc = call()
        if rc != -1 { return rc }
        let e = Errno.current
        if e.rawValue != EINTR { throw e }
    }
}
