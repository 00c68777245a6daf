import Glibc
import UnionCore

/// Unpacks a tar stream into an empty staging directory, safely.
///
/// Every entry is placed relative to the root descriptor, one component at a time with
/// O_NOFOLLOW: a name with `..` or a leading `/`, an entry beneath a symlink or a
/// non-directory, a hard link to a name outside the archive, to a directory or to a name
/// not extracted yet, is refused — the first such entry ends the extraction with one
/// message, and the caller removes the staging directory. Nothing is ever followed, so no
/// entry can read or write outside the root.
///
/// In layer mode, OCI markers become the store's marker format (see `Whiteouts`), owners
/// are set (root only), and archive xattrs are stored escaped.
public final class Extractor {
    public struct Options {
        /// Convert `.wh.` markers and keep owners, devices and xattrs (an image layer).
        /// Off for image archives (oci-archive, docker-archive), where only files and
        /// directories are expected and nothing but their bytes matters.
        public var layer = true
        public var format = MarkerFormat()
        public var setOwners = geteuid() == 0
        public init() {}
    }

    public struct Summary {
        public var entries = 0
        public var size: Int64 = 0          // bytes of regular files, hard links counted once
        public var whiteouts = 0
        public var opaqueDirs = 0
        public var skippedDevices = 0       // device nodes mknod refused (unprivileged)
    }

    let root: Int32
    var options: Options
    let what: String
    public private(set) var summary = Summary()
    /// Paths of the non-directories this archive created: the only valid hard link targets.
    private var files = Set<[UInt8]>()
    /// Directories whose mode, owner and times are applied at the end (creating children
    /// changes a directory's mtime, and a 0555 directory would refuse them unprivileged).
    private var directories: [[UInt8]: ArchiveEntry] = [:]
    private var dirFDs: [[UInt8]: Int32] = [:]

    /// `root` is an open (O_RDONLY|O_DIRECTORY) empty staging directory; it is not closed here.
    public init(root: Int32, options: Options, what: String) {
        self.root = root
        self.options = options
        self.what = what
    }

    deinit { for fd in dirFDs.values { FS.close(fd) } }

    // MARK: names

    /// The components of an archive name: `.` and empty ones dropped; `..` and absolute
    /// names refused.
    func components(_ path: [UInt8], role: String) throws -> [[UInt8]] {
        if path.first == 0x2f {
            throw LayersError.hostile("\(what): \(role) \(shown(path)) is an absolute name")
        }
        var out: [[UInt8]] = []
        for c in path.split(separator: 0x2f, omittingEmptySubsequences: true) {
            if c.elementsEqual([0x2e]) { continue }
            if c.elementsEqual([0x2e, 0x2e]) {
                throw LayersError.hostile("\(what): \(role) \(shown(path)) contains '..'")
            }
            if c.count > Int(NAME_MAX) { throw LayersError.bad("\(what): \(role) \(shown(path)) has a component longer than 255 bytes") }
            out.append(Array(c))
        }
        return out
    }

    static func join(_ comps: ArraySlice<[UInt8]>) -> [UInt8] { Array(comps.joined(separator: [0x2f])) }

    /// The directory holding `comps.last`, opened one component at a time from the root;
    /// missing directories are created (0755, as tar does) when `create`.
    func parent(_ comps: [[UInt8]], entry: [UInt8], create: Bool) throws -> Int32 {
        let dirPath = Self.join(comps.dropLast())
        if dirPath.isEmpty { return root }
        if let fd = dirFDs[dirPath] { return fd }
        var fd = root
        var built: [UInt8] = []
        for c in comps.dropLast() {
            built += built.isEmpty ? c : [0x2f] + c
            if let cached = dirFDs[built] { fd = cached; continue }
            let st: stat?
            do { st = try FS.lstat(fd, c) } catch { throw LayersError.io("\(what): \(shown(built))", error) }
            if let st {
                if st.type == S_IFLNK {
                    throw LayersError.hostile("\(what): entry \(shown(entry)) lies beneath a symlink (\(shown(built)))")
                }
                if st.type != S_IFDIR {
                    throw LayersError.hostile("\(what): entry \(shown(entry)) lies beneath a non-directory (\(shown(built)))")
                }
            } else {
                guard create else { throw LayersError.hostile("\(what): \(shown(entry)): no directory \(shown(built)) in this archive") }
                do { try FS.mkdir(fd, c, 0o700) } catch { throw LayersError.io("\(what): mkdir \(shown(built))", error) }
                var implicit = ArchiveEntry(path: built, kind: .directory)
                implicit.perm = 0o755
                implicit.uid = -1
                directories[built] = implicit
            }
            let next: Int32
            do { next = try FS.openDirectory(fd, c) } catch { throw LayersError.io("\(what): open \(shown(built))", error) }
            if dirFDs.count >= 256 { for f in dirFDs.values { FS.close(f) }; dirFDs.removeAll() }
            dirFDs[built] = next
            fd = next
        }
        return fd
    }

    // MARK: entries

    /// Unpacks every entry of `reader`, then applies the directories' metadata.
    public func run(_ reader: TarReader) throws {
        while let e = try reader.next() {
            try add(e, reader)
        }
        try finishDirectories()
    }

    func add(_ e: ArchiveEntry, _ reader: TarReader) throws {
        summary.entries += 1
        let comps = try components(e.path, role: "entry")
        guard let name = comps.last else {
            // The archive's root ("./"): its metadata becomes the layer root's.
            guard e.kind == .directory else { throw LayersError.hostile("\(what): the archive's root entry is not a directory") }
            if options.layer { directories[[]] = e }
            return
        }
        let path = Self.join(comps[...])
        if !options.layer {
            guard e.kind == .file || e.kind == .directory || e.kind == .symlink else {
                throw LayersError.bad("\(what): unexpected \(e.kind) \(shown(e.path)) in an image archive")
            }
        }
        let dir = try parent(comps, entry: e.path, create: true)
        if options.layer {
            if name == Whiteouts.opaqueName { return try markOpaque(dir, comps) }
            if name.starts(with: Whiteouts.metaPrefix) { return }  // AUFS metadata (.wh..wh.plnk, ...)
            if let target = Whiteouts.deletedName(name) {
                return try whiteout(dir, Array(comps.dropLast()) + [target])
            }
            if e.kind == .charDevice && e.devMajor == 0 && e.devMinor == 0 {
                return try whiteout(dir, comps)  // already in the kernel's form
            }
        }
        try makeRoom(dir, name, for: e, path: path)
        do {
            try create(dir, name, e, path: path, reader)
        } catch let x as Errno {
            throw LayersError.io("\(what): \(shown(path))", x)
        }
        if e.kind != .directory { files.insert(path) }
    }

    /// An entry replaces what an earlier entry of the same archive (or a whiteout made
    /// from one) left at its name; a directory stays and takes the new metadata.
    func makeRoom(_ dir: Int32, _ name: [UInt8], for e: ArchiveEntry, path: [UInt8]) throws {
        guard let st = try lstatChecked(dir, name, path) else { return }
        if st.type == S_IFDIR {
            if e.kind == .directory { return }
            throw LayersError.bad("\(what): entry \(shown(path)) would replace a directory of the same archive")
        }
        do { try FS.unlink(dir, name) } catch { throw LayersError.io("\(what): replace \(shown(path))", error) }
        files.remove(path)
    }

    func lstatChecked(_ dir: Int32, _ name: [UInt8], _ path: [UInt8]) throws -> stat? {
        do { return try FS.lstat(dir, name) } catch { throw LayersError.io("\(what): \(shown(path))", error) }
    }

    func create(_ dir: Int32, _ name: [UInt8], _ e: ArchiveEntry, path: [UInt8], _ reader: TarReader) throws {
        switch e.kind {
        case .directory:
            if try FS.lstat(dir, name) == nil { try FS.mkdir(dir, name, 0o700) }
            directories[path] = e
            try setXattrs(dir, name, e)
            return
        case .file:
            try writeFile(dir, name, e, reader)
            summary.size += e.size
        case .symlink:
            try FS.symlink(e.linkTarget, dir, name)
        case .hardlink:
            try hardlink(dir, name, e, path: path)
            return  // shares the target's inode and metadata
        case .charDevice, .blockDevice:
            if try !makeDevice(dir, name, e) {
                summary.skippedDevices += 1  // unprivileged: a device node cannot be made
                return
            }
        case .fifo:
            try FS.mknod(dir, name, S_IFIFO | 0o600, major: 0, minor: 0)
        case .socket:
            return  // a socket in an archive is meaningless; tar skips it too
        }
        try setMetadata(dir, name, e)
    }

    func writeFile(_ dir: Int32, _ name: [UInt8], _ e: ArchiveEntry, _ reader: TarReader) throws {
        let fd = try FS.openAt(dir, name, O_WRONLY | O_CREAT | O_EXCL, mode: 0o600)
        do {
            try reader.readData { (offset: Int64, buf: UnsafeRawBufferPointer) throws -> Void in
                try FS.pwriteAll(fd, buf, at: offset)
            }
            try FS.truncate(fd, e.size)
        } catch {
            FS.close(fd)
            throw error
        }
        FS.close(fd)
    }

    /// False when mknod is refused (EPERM: unprivileged); other errors are thrown.
    func makeDevice(_ dir: Int32, _ name: [UInt8], _ e: ArchiveEntry) throws -> Bool {
        do {
            try FS.mknod(dir, name, (e.kind == .charDevice ? S_IFCHR : S_IFBLK) | 0o600, major: e.devMajor, minor: e.devMinor)
            return true
        } catch {
            if error.rawValue == EPERM { return false }
            throw error
        }
    }

    func setMetadata(_ dir: Int32, _ name: [UInt8], _ e: ArchiveEntry) throws(Errno) {
        if options.setOwners && options.layer && e.uid >= 0 {
            try FS.lchown(dir, name, uid_t(truncatingIfNeeded: e.uid), gid_t(truncatingIfNeeded: e.gid))
        }
        if e.kind != .symlink {
            // After chown, which clears set-id bits.
            try FS.chmod(dir, name, e.perm & (options.layer ? 0o7777 : 0o755))
        }
        try setXattrs(dir, name, e)
        try FS.utimes(dir, name, atime: e.mtime, mtime: e.mtime)
    }

    func setXattrs(_ dir: Int32, _ name: [UInt8], _ e: ArchiveEntry) throws(Errno) {
        guard options.layer else { return }
        for (key, value) in e.xattrs {
            let stored = Whiteouts.xattrToLayer(key, options.format)
            do {
                try FS.setXattr(dir, name, stored, value)
            } catch let x where x.rawValue == EPERM || x.rawValue == ENOTSUP {
                // trusted.* and security.* are refused unprivileged, user.* on symlinks: as on copy-up, skipped.
                if stored.starts(with: Array("user.".utf8)) && e.kind != .symlink { throw x }
            }
        }
    }

    func hardlink(_ dir: Int32, _ name: [UInt8], _ e: ArchiveEntry, path: [UInt8]) throws {
        let target = try components(e.linkTarget, role: "hard link target of \(shown(path)):")
        let targetPath = Self.join(target[...])
        guard !target.isEmpty, files.contains(targetPath) else {
            throw LayersError.hostile("\(what): hard link \(shown(path)) points at \(shown(e.linkTarget)), which is not a file extracted before it")
        }
        let tdir = try parent(target, entry: e.linkTarget, create: false)
        try FS.link(tdir, target.last!, dir, name)
    }

    func whiteout(_ dir: Int32, _ comps: [[UInt8]]) throws {
        let name = comps.last!
        let path = Self.join(comps[...])
        // An entry of the same layer wins over a whiteout of its name (OCI layer.md).
        if try lstatChecked(dir, name, path) != nil { return }
        summary.whiteouts += 1
        if options.format.whiteout == .device {
            do {
                try FS.mknod(dir, name, S_IFCHR, major: 0, minor: 0)
                return
            } catch let x where x.rawValue == EPERM {
                options.format.whiteout = .ociFile
            } catch {
                throw LayersError.io("\(what): whiteout \(shown(path))", error)
            }
        }
        let marker = Whiteouts.prefix + name
        guard marker.count <= Int(NAME_MAX) else { return }
        do {
            let fd = try FS.openAt(dir, marker, O_WRONLY | O_CREAT, mode: 0)
            FS.close(fd)
        } catch { throw LayersError.io("\(what): whiteout \(shown(path))", error) }
    }

    func markOpaque(_ parentDir: Int32, _ comps: [[UInt8]]) throws {
        let dirComps = Array(comps.dropLast())
        guard let dirName = dirComps.last else { return }  // an opaque root hides nothing the layer stack needs
        let holder = try parent(dirComps, entry: Self.join(comps[...]), create: true)
        let path = Self.join(dirComps[...])
        if try lstatChecked(holder, dirName, path)?.type != S_IFDIR {
            throw LayersError.bad("\(what): \(shown(path))/.wh..wh..opq marks a name that is not a directory")
        }
        summary.opaqueDirs += 1
        do throws(Errno) {
            try FS.setXattr(holder, dirName, options.format.opaqueXattr.bytes, [0x79])
        } catch let x where x.rawValue == EPERM || x.rawValue == ENOTSUP {
            // No xattr allowed: keep the OCI marker, which swiftunionfs reads too.
            do { FS.close(try FS.openAt(parentDir, Whiteouts.opaqueName, O_WRONLY | O_CREAT, mode: 0)) }
            catch { throw LayersError.io("\(what): opaque marker in \(shown(path))", error) }
        } catch {
            throw LayersError.io("\(what): opaque mark on \(shown(path))", error)
        }
    }

    /// Directory metadata, deepest first, so setting one never disturbs another's mtime.
    func finishDirectories() throws {
        for fd in dirFDs.values { FS.close(fd) }
        dirFDs.removeAll()
        let paths = directories.keys.sorted { a, b in
            let da = a.filter { $0 == 0x2f }.count, db = b.filter { $0 == 0x2f }.count
            return da != db ? da > db : a.lexicographicallyPrecedes(b)
        }
        for path in paths {
            var e = directories[path]!
            if !options.layer { e.xattrs = [] }
            do throws(Errno) {
                if path.isEmpty {
                    if options.setOwners && e.uid >= 0 { _ = fchown(root, uid_t(truncatingIfNeeded: e.uid), gid_t(truncatingIfNeeded: e.gid)) }
                    try FS.fchmod(root, e.perm)
                    var t = [e.mtime, e.mtime]
                    _ = futimens(root, &t)
                    continue
                }
                let comps = path.split(separator: 0x2f).map(Array.init)
                let dir = try FS.openBeneath(root, Self.join(comps.dropLast()[...]), O_RDONLY | O_DIRECTORY)
                defer { FS.close(dir) }
                if e.uid < 0 {
                    // Made for a child whose directory had no entry: 0755, the archive owner's default.
                    try FS.chmod(dir, comps.last!, 0o755)
                } else {
                    try setMetadata(dir, comps.last!, e)
                }
            } catch {
                throw LayersError.io("\(what): \(shown(path))", error)
            }
        }
        directories.removeAll()
    }
}
