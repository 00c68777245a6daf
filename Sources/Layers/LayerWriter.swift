import CArchive
import Glibc
import UnionCore

/// Writes an upper directory as an OCI image layer (image-spec layer.md), reproducibly.
///
/// - Entries in a depth-first walk, each directory's names in byte order, a directory
///   before its contents; names relative, directories with a trailing '/'; no root entry.
/// - Kernel markers become OCI ones: a 0/0 device is a `.wh.NAME` entry, an opaque
///   directory gets a `.wh..wh..opq` entry first among its children; `.wh.` files of the
///   unprivileged format pass through as they are.
/// - Each entry keeps its real mode, numeric owner and mtime (nanoseconds in a pax
///   record); no atime, ctime, user or group name. xattrs are SCHILY.xattr pax records,
///   the overlay's own left out and escaped ones unescaped.
/// - A file with several names in upper is stored once; its other names are hard links
///   to the first. Devices and FIFOs are stored as such; files with holes as pax sparse
///   entries (GNU 1.0), which containers/storage and GNU tar read.
///
/// The same upper thus gives the same bytes (and gzip is written without a timestamp).
public enum LayerWriter {
    public struct Result {
        public var diffID: Digest
        public var blob: Digest
        public var bytes: Int64
        public var entries: Int
    }

    public static func write(upper: Int32, to fd: Int32, compression: TarWriter.Compression) throws -> Result {
        let w = try TarWriter(fd: fd, compression: compression)
        var state = State(writer: w)
        do {
            try state.walk(upper, prefix: [])
        } catch let e as Errno {
            throw LayersError.io("reading upper", e)
        }
        let (diffID, blob) = try w.finish()
        return Result(diffID: diffID, blob: blob, bytes: w.bytesWritten, entries: state.entries)
    }

    struct State {
        let writer: TarWriter
        var links: [UInt64: [UInt8]] = [:]   // (dev, ino) of multiply linked files -> first name
        var entries = 0
        let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 17, alignment: 16)

        init(writer: TarWriter) { self.writer = writer }

        mutating func walk(_ dir: Int32, prefix: [UInt8]) throws {
            let names = try FS.list(dir)
            for name in names {
                guard let st = try FS.lstat(dir, name) else { continue }
                let path = prefix + name
                if name == Whiteouts.opaqueName { continue }  // written with its directory
                if st.type == S_IFCHR && st.st_rdev == 0 {
                    try marker(prefix + Whiteouts.prefix + name, st)
                    continue
                }
                var e = ArchiveEntry(path: path, kind: .file)
                e.perm = st.st_mode & 0o7777
                e.uid = Int64(st.st_uid)
                e.gid = Int64(st.st_gid)
                e.mtime = st.st_mtim
                e.xattrs = try xattrs(dir, name)
                switch st.type {
                case S_IFDIR:
                    e.kind = .directory
                    e.path += [0x2f]
                    try emit(e)
                    let opaque = try Whiteouts.isOpaque(dir, name)
                    let fd = try FS.openDirectory(dir, name)
                    defer { FS.close(fd) }
                    if opaque { try marker(path + [0x2f] + Whiteouts.opaqueName, st) }
                    try walk(fd, prefix: path + [0x2f])
                case S_IFREG:
                    let key = (UInt64(st.st_dev) << 40) ^ UInt64(st.st_ino)
                    if st.st_nlink > 1 {
                        if let first = links[key] {
                            e.kind = .hardlink
                            e.linkTarget = first
                            e.xattrs = []
                            try emit(e)
                            continue
                        }
                        links[key] = path
                    }
                    e.size = Int64(st.st_size)
                    try file(dir, name, e)
                case S_IFLNK:
                    e.kind = .symlink
                    e.linkTarget = try FS.readlink(dir, name)
                    try emit(e)
                case S_IFCHR, S_IFBLK:
                    e.kind = st.type == S_IFCHR ? .charDevice : .blockDevice
                    e.devMajor = sl_major(st.st_rdev)
                    e.devMinor = sl_minor(st.st_rdev)
                    try emit(e)
                case S_IFIFO:
                    e.kind = .fifo
                    try emit(e)
                default:
                    continue  // sockets do not go into layers
                }
            }
        }

        mutating func emit(_ e: ArchiveEntry, regions: [(Int64, Int64)]? = nil) throws {
            entries += 1
            try writer.writeHeader(e, dataRegions: regions)
        }

        /// An OCI marker (`.wh.NAME`, `.wh..wh..opq`): an empty file with the marked object's owner and mtime.
        mutating func marker(_ path: [UInt8], _ st: stat) throws {
            var e = ArchiveEntry(path: path, kind: .file)
            e.perm = 0o600
            e.uid = Int64(st.st_uid)
            e.gid = Int64(st.st_gid)
            e.mtime = st.st_mtim
            try emit(e)
        }

        func xattrs(_ dir: Int32, _ name: [UInt8]) throws(Errno) -> [(name: [UInt8], value: [UInt8])] {
            var out: [(name: [UInt8], value: [UInt8])] = []
            for key in try FS.listXattrs(dir, name).sorted(by: { $0.lexicographicallyPrecedes($1) }) {
                guard let shownKey = Whiteouts.xattrFromLayer(key), let v = try FS.getXattr(dir, name, key) else { continue }
                out.append((shownKey, v))
            }
            return out
        }

        /// A regular file's data; with holes, as a sparse entry listing its data regions.
        mutating func file(_ dir: Int32, _ name: [UInt8], _ e: ArchiveEntry) throws {
            let fd = try FS.openAt(dir, name, O_RDONLY)
            defer { FS.close(fd) }
            var regions: [(Int64, Int64)] = []
            var off: Int64 = 0
            while off < e.size, let start = try FS.seek(fd, off, SEEK_DATA) {
                let end = min(try FS.seek(fd, start, SEEK_HOLE) ?? e.size, e.size)
                if end > start { regions.append((start, end - start)) }
                off = end
            }
            let sparse = regions.count != 1 || regions.first.map { $0.0 != 0 || $0.1 != e.size } ?? false
            if sparse && !regions.isEmpty {
                try emit(e, regions: regions)  // the entry's size keeps a trailing hole
            } else {
                try emit(e)
            }
            // The whole content is handed over; the pax writer skips the holes of a sparse entry.
            var pos: Int64 = 0
            _ = try FS.seek(fd, 0, SEEK_SET)
            for (start, len) in (sparse && !regions.isEmpty ? regions : [(Int64(0), e.size)]) {
                if start > pos { try writer.writeZeros(start - pos); pos = start }
                if len == 0 { continue }
                _ = try FS.seek(fd, start, SEEK_SET)
                var left = len
                while left > 0 {
                    let n = try FS.read(fd, UnsafeMutableRawBufferPointer(rebasing: buf[0..<Int(min(left, Int64(buf.count)))]))
                    if n == 0 { throw LayersError.io("reading \(shown(e.path))", Errno(EIO)) }  // shrank while read
                    try writer.writeData(UnsafeRawBufferPointer(rebasing: buf[0..<n]))
                    left -= Int64(n)
                }
                pos = start + len
            }
            if pos < e.size { try writer.writeZeros(e.size - pos) }
        }
    }
}
