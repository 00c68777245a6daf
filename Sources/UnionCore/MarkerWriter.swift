import Glibc

/// Writes whiteouts and opaque marks in upper, in the mount's format, and tells the
/// event sink about each.
struct MarkerWriter: Sendable {
    let format: MarkerFormat
    let work: WorkDir
    let events: EventSink

    func markOpaque(_ dir: Int32, _ name: Name, path: [UInt8]) throws(Errno) {
        let fd = try Sys.openAt(dir, name, O_PATH | O_DIRECTORY)
        defer { Sys.close(fd) }
        try Sys.setxattr(fd, format.opaqueXattr, [UInt8(ascii: "y")])
        if events.isEnabled { events.record(.opaque(path: path, xattr: format.opaqueXattr.description)) }
    }

    /// Writes a whiteout for `name` in upper directory `dir`.
    func writeWhiteout(_ dir: Int32, _ name: Name, path: [UInt8]) throws(Errno) {
        switch format.whiteout {
        case .device:
            try Sys.mknod(dir, name, S_IFCHR, 0)
        case .ociFile:
            let fd = try Sys.openAt(dir, Markers.ociWhiteoutPrefix + name, O_WRONLY | O_CREAT | O_TRUNC, mode: 0)
            Sys.close(fd)
        }
        recordWhiteout(path, format.whiteout.rawValue)
    }

    func recordWhiteout(_ path: [UInt8], _ how: String = "device") {
        if events.isEnabled { events.record(.whiteout(path: path, format: how)) }
    }

    /// Removes the OCI whiteout for `name` in `dir`, if there is one.
    func clearOCIWhiteout(_ dir: Int32, _ name: Name) throws(Errno) {
        if try Markers.hasOCIWhiteout(dir: dir, name: name) { try Sys.unlink(dir, Markers.ociWhiteoutPrefix + name) }
    }

    /// Moves the upper object at `name` out of the way into workdir, leaving a whiteout
    /// behind when a lower layer would otherwise show through. Returns its name in workdir.
    func evict(_ dir: Int32, _ name: Name, leaveWhiteout: Bool, path: [UInt8]) throws(Errno) -> Name {
        let tmp = work.tempName()
        // RENAME_WHITEOUT swaps in the whiteout atomically; where it is refused, rename then mknod.
        if leaveWhiteout && format.whiteout == .device {
            do throws(Errno) {
                try Sys.rename(dir, name, work.fd, tmp, flags: Sys.renameWhiteout)
                recordWhiteout(path)
                return tmp
            } catch where error.rawValue == EINVAL || error.rawValue == EPERM || error.rawValue == EOPNOTSUPP {
                // This filesystem or namespace cannot: fall through to two steps.
            }
        }
        try Sys.rename(dir, name, work.fd, tmp)
        if leaveWhiteout { try writeWhiteout(dir, name, path: path) }
        return tmp
    }
}
