import CLinux
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
    public var description: String { "\(name) (\(message))" }
    /// strerror's text, as command-line errors show it.
    public var message: String { String(cString: strerror(rawValue)) }

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
    public static let overflow = Errno(EOVERFLOW)
    public static let noDevice = Errno(ENXIO)
    public static let tooManyFiles = Errno(EMFILE)

    /// "Not in this layer": the only errnos a probe may take for absence. Anything
    /// else (EACCES, EIO, EMFILE, ENOMEM, ...) is an answer the caller must get, or a
    /// deleted file could come back.
    public var meansAbsent: Bool { rawValue == ENOENT || rawValue == ENOTDIR }

    /// "This object has no such xattr": ENODATA, or EOPNOTSUPP from a filesystem that
    /// cannot hold one at all.
    public var meansNoXattr: Bool { rawValue == ENODATA || rawValue == EOPNOTSUPP }
}

/// Runs a probe, turning "not in this layer" into nil; every other errno is thrown.
@inline(__always)
public func ifPresent<T>(_ probe: () throws(Errno) -> T) throws(Errno) -> T? {
    do throws(Errno) { return try probe() } catch where error.meansAbsent { return nil }
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
