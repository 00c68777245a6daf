import CFuse
import Glibc

/// Layer directories opened through private clones of their mounts, as the kernel's
/// overlay holds its layers (clone_private_mount).
///
/// A descriptor opened by path pins the mount it was opened through: while the daemon
/// holds one, `umount LAYERFS` fails with EBUSY. That includes the moment between
/// `umount MNT` returning and the daemon letting go, which a FUSE daemon cannot
/// shrink to nothing: the kernel ends the connection and waits for nobody. A clone
/// made with open_tree(OPEN_TREE_CLONE) is a detached copy of the mount; descriptors
/// beneath it pin only the clone, so the layer's filesystem unmounts at once, as
/// under the kernel's overlay (also while the union is mounted), and is released
/// when the daemon lets go. As with the kernel's clones, a mount on a directory
/// inside a layer is not part of the layer.
///
/// Upper and workdir must come from one clone: a rename between two mounts is EXDEV.
/// So a set of directories is opened beneath one clone of their deepest common
/// directory.
///
/// Cloning needs CAP_SYS_ADMIN over the mount namespace (an unprivileged user has it
/// only inside a user namespace of their own) and a mount that may be cloned. Without
/// that, or when a directory found beneath the clone is not the one its path names
/// (another mount was in the way), the directories are opened by path.
enum PrivateMount {
    /// Opens each of `paths` (absolute and resolved, as Validation leaves them) as a
    /// directory with `flags[i]`; the caller owns the descriptors.
    static func openDirectories(_ paths: [String], flags: [Int32]) throws(Errno) -> [Int32] {
        if let fds = try? openBeneathClone(paths, flags: flags) { return fds }
        var fds: [Int32] = []
        do throws(Errno) {
            for (path, f) in zip(paths, flags) {
                fds.append(try retrying { suf_open_mode(path, f | O_DIRECTORY | O_CLOEXEC, 0) })
            }
        } catch {
            fds.forEach(Sys.close)
            throw error
        }
        return fds
    }

    private static func openBeneathClone(_ paths: [String], flags: [Int32]) throws(Errno) -> [Int32] {
        let base = commonDirectory(paths)
        let tree = try retrying { suf_open_tree(AT_FDCWD, base, UInt32(OPEN_TREE_CLONE) | UInt32(O_CLOEXEC)) }
        // Closing the clone's own descriptor detaches the clone lazily: what is opened
        // beneath it keeps it, as files keep a lazily unmounted filesystem.
        defer { Sys.close(tree) }
        var fds: [Int32] = []
        do throws(Errno) {
            for (path, f) in zip(paths, flags) {
                let fd = try Sys.openBeneath(tree, relative(path, to: base), f | O_DIRECTORY)
                fds.append(fd)
                var named = stat()
                let found = try Sys.fstat(fd)
                guard stat(path, &named) == 0, named.st_dev == found.st_dev, named.st_ino == found.st_ino else {
                    throw Errno.noEntry
                }
            }
        } catch {
            fds.forEach(Sys.close)
            throw error
        }
        return fds
    }

    /// The deepest directory holding every path, compared byte by byte, component by component.
    static func commonDirectory(_ paths: [String]) -> String {
        let split = paths.map { Array($0.utf8).split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: true) }
        var common = split[0]
        for parts in split.dropFirst() {
            var n = 0
            while n < common.count && n < parts.count && common[n].elementsEqual(parts[n]) { n += 1 }
            common = Array(common.prefix(n))
        }
        return "/" + common.map { String(decoding: $0, as: UTF8.self) }.joined(separator: "/")
    }

    private static func relative(_ path: String, to base: String) -> String {
        let p = Array(path.utf8).split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: true)
        let b = Array(base.utf8).split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: true)
        let rest = p.dropFirst(b.count)
        return rest.isEmpty ? "." : rest.map { String(decoding: $0, as: UTF8.self) }.joined(separator: "/")
    }
}
