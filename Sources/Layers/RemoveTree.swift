import Glibc
import UnionCore

/// Removes a directory tree below a directory descriptor, never following a symlink.
/// Used for staging directories that a failed import or commit leaves, so directories
/// are made writable first (a layer may hold 0555 directories; unprivileged, their
/// entries could not be unlinked otherwise).
public enum RemoveTree {
    public static func remove(_ dir: Int32, _ name: [UInt8]) throws(Errno) {
        guard let st = try FS.lstat(dir, name) else { return }
        if st.type != S_IFDIR {
            try FS.unlink(dir, name)
            return
        }
        try? FS.chmod(dir, name, 0o700)
        let fd = try FS.openDirectory(dir, name)
        do {
            for child in try FS.list(fd) { try remove(fd, child) }
        } catch {
            FS.close(fd)
            throw error
        }
        FS.close(fd)
        try FS.unlink(dir, name, directory: true)
    }
}
