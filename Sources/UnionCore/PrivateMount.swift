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
    /// Opens each of `paths` (absolute and resolved, as the command's checks leave them)
    /// as a directory with `flags[i]`; the caller owns the descriptors.
    static func openDirectories(_ paths: [[UInt8]], flags: [Int32]) throws(Errno) -> [Int32] {
        if let fds = try? openBeneathClone(paths, flags: flags) { return fds }
        var fds: [Int32] = []
        do throws(Errno) {
            for (path, f) in zip(paths, flags) { fds.append(try Sys.openPath(path, f | O_DIRECTORY)) }
        } catch {
            fds.forEach(Sys.close)
            throw error
        }
        return fds
    }

    private static func openBeneathClone(_ paths: [[UInt8]], flags: [Int32]) throws(Errno) -> [Int32] {
        guard paths.allSatisfy({ $0.first == UInt8(ascii: "/") }) else { throw Errno.invalid }
        let base = commonDirectory(paths)
        let tree = try Sys.cloneMount(Bytes.join(base).isEmpty ? [UInt8(ascii: "/")] : [UInt8(ascii: "/")] + Bytes.join(base))
        // Closing the clone's own descriptor detaches the clone lazily: what is opened
        // beneath it keeps it, as files keep a lazily unmounted filesystem.
        defer { Sys.close(tree) }
        var fds: [Int32] = []
        do throws(Errno) {
            for (path, f) in zip(paths, flags) {
                let rest = Array(Bytes.components(path).dropFirst(base.count))
                let fd = try Sys.openBeneath(tree, rest.isEmpty ? [UInt8(ascii: ".")] : Bytes.join(rest), f | O_DIRECTORY)
                fds.append(fd)
                let named = try Sys.statPath(path), found = try Sys.fstat(fd)
                guard named.st_dev == found.st_dev, named.st_ino == found.st_ino else { throw Errno.noEntry }
            }
        } catch {
            fds.forEach(Sys.close)
            throw error
        }
        return fds
    }

    /// The deepest directory holding every path, component by component, byte by byte.
    static func commonDirectory(_ paths: [[UInt8]]) -> [Name] {
        var common = Bytes.components(paths[0])
        for path in paths.dropFirst() {
            let parts = Bytes.components(path)
            var n = 0
            while n < common.count && n < parts.count && common[n] == parts[n] { n += 1 }
            common = Array(common.prefix(n))
        }
        return common
    }
}
