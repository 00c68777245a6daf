import CArchive
import Glibc
import UnionCore

/// What an upper layer changes against its lowers, as `podman diff` / `docker diff` list it.
///
/// The rules are containers/storage's for the overlay driver (`archive.OverlayChanges`,
/// pkg/archive/changes.go and changes_linux.go, the "native" diff podman uses on the
/// kernel's overlay), applied to the upper directory and the lower layers directly:
///
/// - The upper is walked depth first, each directory's names in byte order (Go's
///   `filepath.Walk`); the root itself is not reported.
/// - A whiteout in upper (0/0 device, or a `.wh.NAME` file) is `D` of its name.
/// - An opaque upper directory whose name a lower layer holds (not as a whiteout) is `D`
///   (it replaced the lower directory); its entries are then reported on their own.
/// - Anything else is `A`, unless the first lower that has the name (walking down, and
///   stopping at a lower whiteout of the name or of any of its parents) holds it: then
///   `C` — except a directory whose mode, size and mtime equal the lower one's, which is
///   not reported at all (it is only there for its children).
/// - Before an `A` or `D`, every parent directory not reported yet is reported as `C`,
///   outermost first.
///
/// One difference: containers/storage stats lower paths following symlinks; here nothing
/// in a layer is followed (a lower symlink counts as itself), so no lookup leaves a layer.
public enum Changes {
    public enum Kind: String { case changed = "C", added = "A", deleted = "D" }
    public struct Change: Equatable {
        public var kind: Kind
        public var path: [UInt8]     // absolute in the union: "/etc/passwd"
    }

    /// The changes of the upper open at `upper` against the lowers open at `lowers` (top first).
    public static func compute(upper: Int32, lowers: [Int32]) throws(Errno) -> [Change] {
        var w = Walker(lowers: lowers)
        try w.walk(upper, path: [])
        return w.changes
    }

    struct Walker {
        let lowers: [Int32]
        var changes: [Change] = []
        var changedDirs = Set<[UInt8]>()

        init(lowers: [Int32]) { self.lowers = lowers }

        mutating func walk(_ dir: Int32, path: [UInt8]) throws(Errno) {
            for name in try FS.list(dir) {
                let child = path + [0x2f] + name
                guard let st = try FS.lstat(dir, name) else { continue }  // removed while walking
                try visit(dir, name, child, st)
                if st.type == S_IFDIR {
                    let fd = try FS.openDirectory(dir, name)
                    defer { FS.close(fd) }
                    try walk(fd, path: child)
                }
            }
        }

        mutating func visit(_ dir: Int32, _ name: [UInt8], _ path: [UInt8], _ st: stat) throws(Errno) {
            var change = Change(kind: .added, path: path)
            if st.type == S_IFCHR && st.st_rdev == 0 {
                change.kind = .deleted
            } else if let target = Whiteouts.deletedName(name) {
                change = Change(kind: .deleted, path: Array(path.dropLast(name.count)) + target)
            } else if name.starts(with: Whiteouts.metaPrefix) {
                return  // .wh..wh..opq and AUFS metadata: markers, not entries
            } else if st.type == S_IFDIR, try Whiteouts.isOpaque(dir, name), try replacedLowerDirectory(path) {
                change.kind = .deleted
            } else {
                scan: for lower in lowers {
                    if try whitedOut(lower, path) { break scan }
                    guard let lst = try lowerStat(lower, path) else { continue }
                    if st.type == S_IFDIR && lst.type == S_IFDIR && st.st_mode == lst.st_mode && st.st_size == lst.st_size
                        && sameTime(st.st_mtim, lst.st_mtim) {
                        return  // the same directory: not a change by itself
                    }
                    change.kind = .changed
                    break
                }
            }
            if st.type == S_IFDIR { changedDirs.insert(path) }
            if change.kind != .changed {
                var parents: [[UInt8]] = []
                var p = parentPath(change.path)
                while !p.isEmpty {
                    if changedDirs.insert(p).inserted { parents.append(p) }
                    p = parentPath(p)
                }
                changes += parents.reversed().map { Change(kind: .changed, path: $0) }
            }
            changes.append(change)
        }

        func parentPath(_ p: [UInt8]) -> [UInt8] {
            guard let i = p.lastIndex(of: 0x2f) else { return [] }
            return Array(p[..<i])
        }

        /// containers/storage's `sameFsTime`: equal, or equal seconds where one side lost its
        /// nanoseconds, or one second apart where one side was rounded up.
        func sameTime(_ a: timespec, _ b: timespec) -> Bool {
            if a.tv_sec == b.tv_sec && a.tv_nsec == b.tv_nsec { return true }
            if a.tv_nsec != 0 && b.tv_nsec != 0 { return false }
            if a.tv_sec == b.tv_sec { return true }
            if b.tv_nsec == 0 && a.tv_sec == b.tv_sec - 1 { return true }
            if a.tv_nsec == 0 && a.tv_sec - 1 == b.tv_sec { return true }
            return false
        }

        /// The lower object at `path` (absolute in the union), found one component at a time
        /// without following anything; nil when absent.
        func lowerStat(_ lower: Int32, _ path: [UInt8]) throws(Errno) -> stat? {
            let parent = parentPath(path)
            let name = Array(path[(parent.count + 1)...])
            let dir: Int32
            if parent.isEmpty {
                dir = lower
            } else {
                do throws(Errno) { dir = try FS.openBeneath(lower, Array(parent.dropFirst()), SL_O_PATH | O_DIRECTORY) } catch {
                    if [ENOENT, ENOTDIR, ELOOP, EXDEV].contains(error.rawValue) { return nil }
                    throw error
                }
            }
            defer { if dir != lower { FS.close(dir) } }
            return try FS.lstat(dir, name)
        }

        /// Whether `lower` whites out `path` or one of its parents (both marker forms).
        func whitedOut(_ lower: Int32, _ path: [UInt8]) throws(Errno) -> Bool {
            var p = path
            while !p.isEmpty {
                let parent = parentPath(p)
                let name = Array(p[(parent.count + 1)...])
                if let st = try lowerStat(lower, p) {
                    if st.type == S_IFCHR && st.st_rdev == 0 { return true }
                } else if name.count + Whiteouts.prefix.count <= Int(NAME_MAX),
                          try lowerStat(lower, parent + [0x2f] + Whiteouts.prefix + name) != nil {
                    return true
                }
                p = parent
            }
            return false
        }

        /// containers/storage's `overlayDeletedFile` for an opaque directory: the first lower
        /// that has the name decides (a whiteout there: no; anything else: yes); a lower that
        /// whites out a parent: no.
        func replacedLowerDirectory(_ path: [UInt8]) throws(Errno) -> Bool {
            for lower in lowers {
                if let st = try lowerStat(lower, path) {
                    return !(st.type == S_IFCHR && st.st_rdev == 0)
                }
                var p = parentPath(path)
                while !p.isEmpty {
                    if let st = try lowerStat(lower, p), st.type == S_IFCHR && st.st_rdev == 0 { return false }
                    p = parentPath(p)
                }
            }
            return false
        }
    }
}
