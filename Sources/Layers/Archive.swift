import CArchive
import Glibc
import UnionCore

/// The one Swift file that calls libarchive: reading tar streams (any compression
/// libarchive knows: none, gzip, zstd, ...) and writing pax layers.

/// One archive entry, in Swift values. Names and link targets are bytes.
public struct ArchiveEntry {
    public enum Kind: Equatable { case file, directory, symlink, hardlink, charDevice, blockDevice, fifo, socket }
    public var path: [UInt8]
    public var kind: Kind
    public var perm: mode_t = 0o644           // the 07777 bits
    public var uid: Int64 = 0
    public var gid: Int64 = 0
    public var size: Int64 = 0
    public var mtime = timespec()
    public var linkTarget: [UInt8] = []      // symlink target, or the hard link's first name
    public var devMajor: UInt32 = 0
    public var devMinor: UInt32 = 0
    public var xattrs: [(name: [UInt8], value: [UInt8])] = []

    public init(path: [UInt8], kind: Kind) { self.path = path; self.kind = kind }
}

private func cBytes(_ p: UnsafePointer<CChar>?) -> [UInt8]? {
    guard let p else { return nil }
    return Array(UnsafeRawBufferPointer(start: p, count: strlen(p)).bindMemory(to: UInt8.self))
}

private func archiveError(_ a: OpaquePointer?, _ fallback: String) -> String {
    if let a, let s = archive_error_string(a) { return String(cString: s) }
    return fallback
}

private let ARCHIVE_OK_: Int32 = 0
private let ARCHIVE_EOF_: Int32 = 1
private let ARCHIVE_WARN_: Int32 = -20

private let setupLocale: Void = sl_use_utf8_ctype()

// MARK: reading

/// Reads a tar stream from a file descriptor, decompressing it, and computes both the
/// digest of the bytes as stored (the blob digest) and of the uncompressed tar (the diff ID).
///
/// Two libarchive readers are chained: `outer` has every decompression filter and the
/// "raw" format, so its data is the uncompressed stream; `inner` parses tar from that
/// stream through a callback that hashes what it hands over. After the last entry, the
/// rest of both streams (tar padding, trailing bytes) is read and hashed too.
public final class TarReader {
    private let fd: Int32
    private var outer: OpaquePointer?
    private var inner: OpaquePointer?
    private var blobHash = Hasher256()
    private var diffHash = Hasher256()
    private let rawBuf = UnsafeMutableRawPointer.allocate(byteCount: 1 << 17, alignment: 16)
    private let tarBuf = UnsafeMutableRawPointer.allocate(byteCount: 1 << 17, alignment: 16)
    private var readErrno: Int32 = 0
    private var entry: OpaquePointer?
    public private(set) var bytesRead: Int64 = 0
    let what: String

    /// `what` names the stream in error messages ("layer sha256:...").
    public init(fd: Int32, what: String) throws {
        _ = setupLocale
        self.fd = fd
        self.what = what
        outer = archive_read_new()
        inner = archive_read_new()
        guard outer != nil, inner != nil else { throw LayersError(.io, "\(what): out of memory") }
        archive_read_support_filter_all(outer)
        archive_read_support_format_raw(outer)
        let me = Unmanaged.passUnretained(self).toOpaque()
        guard archive_read_open(outer, me, nil, { _, ctx, buf in
            let r = Unmanaged<TarReader>.fromOpaque(ctx!).takeUnretainedValue()
            while true {
                let n = Glibc.read(r.fd, r.rawBuf, 1 << 17)
                if n < 0 && errno == EINTR { continue }
                if n < 0 { r.readErrno = errno; return -1 }
                r.blobHash.update(UnsafeRawBufferPointer(start: r.rawBuf, count: n))
                r.bytesRead += Int64(n)
                buf!.pointee = UnsafeRawPointer(r.rawBuf)
                return n
            }
        }, nil) == ARCHIVE_OK_ else {
            throw LayersError.bad("\(what): \(archiveError(outer, "cannot read"))")
        }
        var rawEntry: OpaquePointer?
        guard archive_read_next_header(outer, &rawEntry) == ARCHIVE_OK_ else {
            throw LayersError.bad("\(what): \(archiveError(outer, "empty or unreadable stream"))")
        }
        archive_read_support_format_tar(inner)
        archive_read_support_format_gnutar(inner)
        guard archive_read_open(inner, me, nil, { _, ctx, buf in
            let r = Unmanaged<TarReader>.fromOpaque(ctx!).takeUnretainedValue()
            let n = archive_read_data(r.outer, r.tarBuf, 1 << 17)
            if n < 0 { return -1 }
            r.diffHash.update(UnsafeRawBufferPointer(start: r.tarBuf, count: n))
            buf!.pointee = UnsafeRawPointer(r.tarBuf)
            return n
        }, nil) == ARCHIVE_OK_ else {
            throw LayersError.bad("\(what): not a tar archive (\(archiveError(inner, archiveError(outer, "unreadable"))))")
        }
    }

    deinit {
        if let inner { archive_read_free(inner) }
        if let outer { archive_read_free(outer) }
        rawBuf.deallocate()
        tarBuf.deallocate()
    }

    private func failure(_ a: OpaquePointer?) -> LayersError {
        if readErrno != 0 { return LayersError.io(what, Errno(readErrno)) }
        let m = archiveError(a, "")
        if m.isEmpty { return LayersError.bad("\(what): truncated or corrupt archive") }
        return LayersError.bad("\(what): \(m)")
    }

    /// The next entry, or nil at the end of the archive.
    public func next() throws -> ArchiveEntry? {
        var e: OpaquePointer?
        let rc = archive_read_next_header(inner, &e)
        if rc == ARCHIVE_EOF_ { entry = nil; return nil }
        guard rc == ARCHIVE_OK_ || rc == ARCHIVE_WARN_, let e else { throw failure(inner) }
        entry = e
        guard let path = cBytes(archive_entry_pathname(e)) ?? cBytes(archive_entry_pathname_utf8(e)) else {
            throw LayersError.hostile("\(what): an entry has no name")
        }
        let kind: ArchiveEntry.Kind
        let hardlink = cBytes(archive_entry_hardlink(e))
        if hardlink != nil {
            kind = .hardlink
        } else {
            switch archive_entry_filetype(e) & Glibc.S_IFMT {
            case Glibc.S_IFREG: kind = .file
            case Glibc.S_IFDIR: kind = .directory
            case Glibc.S_IFLNK: kind = .symlink
            case Glibc.S_IFCHR: kind = .charDevice
            case Glibc.S_IFBLK: kind = .blockDevice
            case Glibc.S_IFIFO: kind = .fifo
            case Glibc.S_IFSOCK: kind = .socket
            default: throw LayersError.bad("\(what): entry \(shown(path)) has an unknown file type")
            }
        }
        var out = ArchiveEntry(path: path, kind: kind)
        out.perm = archive_entry_perm(e) & 0o7777
        out.uid = archive_entry_uid(e)
        out.gid = archive_entry_gid(e)
        out.size = archive_entry_size_is_set(e) != 0 ? archive_entry_size(e) : 0
        out.mtime = timespec(tv_sec: archive_entry_mtime(e), tv_nsec: archive_entry_mtime_nsec(e))
        if let hardlink { out.linkTarget = hardlink }
        if kind == .symlink { out.linkTarget = cBytes(archive_entry_symlink(e)) ?? cBytes(archive_entry_symlink_utf8(e)) ?? [] }
        if kind == .charDevice || kind == .blockDevice {
            out.devMajor = UInt32(truncatingIfNeeded: archive_entry_rdevmajor(e))
            out.devMinor = UInt32(truncatingIfNeeded: archive_entry_rdevminor(e))
        }
        if archive_entry_xattr_reset(e) > 0 {
            var name: UnsafePointer<CChar>?
            var value: UnsafeRawPointer?
            var size = 0
            while archive_entry_xattr_next(e, &name, &value, &size) == ARCHIVE_OK_ {
                guard let n = cBytes(name) else { continue }
                let v = value.map { Array(UnsafeRawBufferPointer(start: $0, count: size)) } ?? []
                out.xattrs.append((n, v))
            }
        }
        return out
    }

    /// The current entry's data, block by block with its offset (sparse entries skip holes).
    public func readData(_ body: (Int64, UnsafeRawBufferPointer) throws -> Void) throws {
        while true {
            var buf: UnsafeRawPointer?
            var size = 0
            var offset: la_int64_t = 0
            let rc = archive_read_data_block(inner, &buf, &size, &offset)
            if rc == ARCHIVE_EOF_ { return }
            guard rc == ARCHIVE_OK_ || rc == ARCHIVE_WARN_ else { throw failure(inner) }
            if size > 0 { try body(offset, UnsafeRawBufferPointer(start: buf, count: size)) }
        }
    }

    /// Reads and hashes whatever follows the end of the tar, then returns
    /// (digest of the stored bytes, digest of the uncompressed tar).
    public func finish() throws -> (blob: Digest, diffID: Digest) {
        while true {
            let n = archive_read_data(outer, tarBuf, 1 << 17)
            if n < 0 { throw failure(outer) }
            if n == 0 { break }
            diffHash.update(UnsafeRawBufferPointer(start: tarBuf, count: n))
        }
        while true {
            let n = Glibc.read(fd, rawBuf, 1 << 17)
            if n < 0 && errno == EINTR { continue }
            if n < 0 { throw LayersError.io(what, Errno(errno)) }
            if n == 0 { break }
            blobHash.update(UnsafeRawBufferPointer(start: rawBuf, count: n))
            bytesRead += Int64(n)
        }
        return (blobHash.finish(), diffHash.finish())
    }
}

// MARK: writing

/// Writes a pax tar stream to a file descriptor, optionally compressed, computing the
/// diff ID (digest of the tar) and the blob digest (digest of the bytes written).
///
/// Determinism: no atime/ctime, no user or group names, gzip without a timestamp or
/// file name, the archive ends right after the end-of-archive blocks (no padding to a
/// 10 KiB record), and libarchive's pax headers take their fields from the entry.
public final class TarWriter {
    public enum Compression: String { case none, gzip, zstd }

    private let fd: Int32
    private var tar: OpaquePointer?
    private var compressor: OpaquePointer?
    private var diffHash = Hasher256()
    private var blobHash = Hasher256()
    private var writeErrno: Int32 = 0
    public private(set) var bytesWritten: Int64 = 0
    private let zeros = [UInt8](repeating: 0, count: 1 << 16)

    public init(fd: Int32, compression: Compression) throws {
        _ = setupLocale
        self.fd = fd
        let me = Unmanaged.passUnretained(self).toOpaque()
        if compression != .none {
            compressor = archive_write_new()
            archive_write_set_format_raw(compressor)
            switch compression {
            case .gzip:
                archive_write_add_filter_gzip(compressor)
                archive_write_set_filter_option(compressor, "gzip", "timestamp", nil)
            case .zstd:
                archive_write_add_filter_zstd(compressor)
            case .none: break
            }
            archive_write_set_bytes_per_block(compressor, 0)
            guard archive_write_open(compressor, me, nil, { _, ctx, buf, n in
                let w = Unmanaged<TarWriter>.fromOpaque(ctx!).takeUnretainedValue()
                return w.emit(buf!, n)
            }, nil) == ARCHIVE_OK_ else {
                throw LayersError(.io, "cannot start the \(compression.rawValue) compressor: \(archiveError(compressor, "?"))")
            }
            let e = archive_entry_new()
            archive_entry_set_filetype(e, UInt32(Glibc.S_IFREG))
            archive_entry_copy_pathname(e, "layer.tar")
            guard archive_write_header(compressor, e) == ARCHIVE_OK_ else {
                archive_entry_free(e)
                throw LayersError(.io, "compressor: \(archiveError(compressor, "?"))")
            }
            archive_entry_free(e)
        }
        // pax names are UTF-8 (converted from the locale's, UTF-8 above): a name that is
        // not is written as its bytes with hdrcharset=BINARY on that entry alone (see
        // writeHeader), which GNU tar and Go's archive/tar read back byte for byte.
        tar = archive_write_new()
        archive_write_set_format_pax(tar)
        archive_write_set_format_option(tar, "pax", "xattrheader", "SCHILY")
        archive_write_add_filter_none(tar)
        archive_write_set_bytes_per_block(tar, 10240)
        archive_write_set_bytes_in_last_block(tar, 1)
        guard archive_write_open(tar, me, nil, { _, ctx, buf, n in
            let w = Unmanaged<TarWriter>.fromOpaque(ctx!).takeUnretainedValue()
            w.diffHash.update(UnsafeRawBufferPointer(start: buf, count: n))
            if let c = w.compressor {
                let r = archive_write_data(c, buf, n)
                return r < 0 ? -1 : n
            }
            return w.emit(buf!, n)
        }, nil) == ARCHIVE_OK_ else {
            throw LayersError(.io, "cannot start the tar writer: \(archiveError(tar, "?"))")
        }
    }

    deinit {
        if let tar { archive_write_free(tar) }
        if let compressor { archive_write_free(compressor) }
    }

    private func emit(_ buf: UnsafeRawPointer, _ n: Int) -> la_ssize_t {
        blobHash.update(UnsafeRawBufferPointer(start: buf, count: n))
        var done = 0
        while done < n {
            let r = Glibc.write(fd, buf + done, n - done)
            if r < 0 && errno == EINTR { continue }
            if r < 0 { writeErrno = errno; return -1 }
            done += r
        }
        bytesWritten += Int64(n)
        return n
    }

    private func failure(_ a: OpaquePointer?, _ what: String) -> LayersError {
        if writeErrno != 0 { return LayersError.io("writing the layer", Errno(writeErrno)) }
        return LayersError(.io, "\(what): \(archiveError(a, "write failed"))")
    }

    /// Writes one entry's header. `dataRegions` (offset, length) marks a sparse file's data;
    /// its content must then still be written in full with `writeData`/`writeZeros`.
    public func writeHeader(_ x: ArchiveEntry, dataRegions: [(Int64, Int64)]? = nil) throws {
        let e = archive_entry_new()
        defer { archive_entry_free(e) }
        try FS.withCString(x.path) { (p) throws(Errno) in archive_entry_copy_pathname(e, p) }
        switch x.kind {
        case .file: archive_entry_set_filetype(e, UInt32(Glibc.S_IFREG)); archive_entry_set_size(e, x.size)
        case .directory: archive_entry_set_filetype(e, UInt32(Glibc.S_IFDIR))
        case .symlink:
            archive_entry_set_filetype(e, UInt32(Glibc.S_IFLNK))
            try FS.withCString(x.linkTarget) { (p) throws(Errno) in archive_entry_copy_symlink(e, p) }
        case .hardlink:
            archive_entry_set_filetype(e, UInt32(Glibc.S_IFREG))
            try FS.withCString(x.linkTarget) { (p) throws(Errno) in archive_entry_copy_hardlink(e, p) }
            archive_entry_set_size(e, 0)
        case .charDevice, .blockDevice:
            archive_entry_set_filetype(e, UInt32(x.kind == .charDevice ? Glibc.S_IFCHR : Glibc.S_IFBLK))
            archive_entry_set_rdevmajor(e, dev_t(x.devMajor))
            archive_entry_set_rdevminor(e, dev_t(x.devMinor))
        case .fifo: archive_entry_set_filetype(e, UInt32(Glibc.S_IFIFO))
        case .socket: archive_entry_set_filetype(e, UInt32(Glibc.S_IFSOCK))
        }
        archive_entry_set_perm(e, x.perm & 0o7777)
        archive_entry_set_uid(e, x.uid)
        archive_entry_set_gid(e, x.gid)
        archive_entry_set_mtime(e, x.mtime.tv_sec, x.mtime.tv_nsec)
        for (name, value) in x.xattrs {
            try FS.withCString(name) { (p) throws(Errno) in value.withUnsafeBytes { archive_entry_xattr_add_entry(e, p, $0.baseAddress, $0.count) } }
        }
        if let regions = dataRegions {
            for (off, len) in regions { archive_entry_sparse_add_entry(e, off, len) }
        }
        let rc = archive_write_header(tar, e)
        // ARCHIVE_WARN for a name that is not UTF-8 is the binary fallback: the header was
        // written with the bytes. Any other warning fails the commit.
        let binaryName = !Self.isUTF8(x.path) || !Self.isUTF8(x.linkTarget)
        guard rc == ARCHIVE_OK_ || (rc == ARCHIVE_WARN_ && binaryName) else { throw failure(tar, "entry \(shown(x.path))") }
    }

    static func isUTF8(_ bytes: [UInt8]) -> Bool {
        String(validating: bytes, as: UTF8.self) != nil
    }

    public func writeData(_ buf: UnsafeRawBufferPointer) throws {
        guard buf.count > 0 else { return }
        let n = archive_write_data(tar, buf.baseAddress, buf.count)
        guard n >= 0 else { throw failure(tar, "data") }
    }

    /// The bytes of a hole, which a sparse entry does not store.
    public func writeZeros(_ count: Int64) throws {
        var left = count
        while left > 0 {
            let n = Int(min(left, Int64(zeros.count)))
            try zeros.withUnsafeBytes { try writeData(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
            left -= Int64(n)
        }
    }

    /// Ends the archive; returns (diff ID, blob digest).
    public func finish() throws -> (diffID: Digest, blob: Digest) {
        guard archive_write_close(tar) == ARCHIVE_OK_ else { throw failure(tar, "closing the tar") }
        if let c = compressor {
            guard archive_write_close(c) == ARCHIVE_OK_ else { throw failure(c, "closing the compressor") }
        }
        return (diffHash.finish(), blobHash.finish())
    }
}
