import Glibc
import Synchronization

/// The kernel's inodes index (`index=on`, docs/format.md "Hard links and the index"):
/// a lower regular file with several links is copied up once, into
/// `workdir/index/<hex of its handle>`, and every name of it in upper is a hard link
/// of that entry, so all its names keep showing one file.
///
/// The format is the kernel's (fs/overlayfs: copy_up.c, namei.c, util.c, export.c):
/// - a handle is a `struct ovl_fb`: version 0, magic 0xfb, total length, flags (bit 2:
///   the object is in upper), the fid type, the 16-byte UUID of its filesystem (as
///   FS_IOC_GETFSUUID gives it), then the fid `name_to_handle_at` gives;
/// - the index entry and its upper names carry `overlay.origin` = the lower file's
///   handle, and `overlay.nlink` = the union's link count relative to the upper inode's
///   ("U+1") or, briefly during a link-up, the lower one's ("L+0");
/// - the upper root carries `overlay.origin` = the handle of the top lower layer's root,
///   `workdir/index` carries `overlay.upper` = the handle of the upper root.
///
/// Only encoding handles is needed (any user may encode): the index is looked up by the
/// name the lower file's handle gives; nothing is decoded (`open_by_handle_at` needs
/// CAP_DAC_READ_SEARCH), so the mount-time clean-up of stale entries is the kernel's.
final class InodeIndex: Sendable {
    /// `workdir/index`, O_PATH.
    let fd: Int32
    /// The UUID of each layer's filesystem, by layer index.
    private let uuids: [[UInt8]]
    let originXattr: Name
    let nlinkXattr: Name
    let impureXattr: Name
    let upperXattr: Name
    /// Held around every change of an entry's links and `overlay.nlink` (copy into the
    /// index, link-up): the count is read, then written relative to a link count.
    let lock = Mutex<Void>(())

    static let directoryName: Name = "index"
    static let flagPathUpper: UInt8 = 1 << 2

    /// The answer when a mount with `index=on` is refused (Daemon.describe words it; ESTALE
    /// is otherwise never an answer of opening the layers): the upper root's `overlay.origin`
    /// names another lower root (the kernel: "failed to verify upper root origin"),
    /// `workdir/index`'s `overlay.upper` another upper root ("failed to verify index dir
    /// 'upper' xattr"), or a layer's filesystem cannot encode file handles.
    static let refused = Errno(ESTALE)

    /// Opens (or creates) `workdir/index` in the workdir `workFD` and checks, or records, the
    /// upper root's origin and the index's upper as the kernel's ovl_get_indexdir does.
    init(workdir workFD: Int32, layers: [Layer], format: MarkerFormat) throws(Errno) {
        originXattr = format.overlayXattr("origin")
        nlinkXattr = format.overlayXattr("nlink")
        impureXattr = format.overlayXattr("impure")
        upperXattr = format.overlayXattr("upper")
        var ids: [[UInt8]] = []
        for layer in layers {
            let dir = try Sys.reopen(layer.rootFD, O_RDONLY | O_DIRECTORY)
            defer { Sys.close(dir) }
            do throws(Errno) {
                ids.append(try Sys.filesystemUUID(dir))
            } catch where error.rawValue == ENOTTY || error.rawValue == EINVAL || error.rawValue == EOPNOTSUPP {
                // A filesystem without a UUID: the kernel's sb->s_uuid is all zeros.
                ids.append([UInt8](repeating: 0, count: 16))
            }
        }
        uuids = ids
        guard let upper = layers.first(where: \.isUpper), let lowerRoot = layers.first(where: { !$0.isUpper && !$0.isDataOnly }) else {
            throw Errno.invalid
        }
        let lowerRootHandle: [UInt8], upperRootHandle: [UInt8]
        do throws(Errno) {
            lowerRootHandle = try Self.handle(lowerRoot.rootFD, nil, uuid: ids[lowerRoot.index], upper: false)
            upperRootHandle = try Self.handle(upper.rootFD, nil, uuid: ids[upper.index], upper: true)
            // Every lower layer must give handles (the kernel falls back to index=off where
            // one cannot: ovl_lower_dir; refused here, a copy-up would fail later).
            for layer in layers where !layer.isUpper {
                _ = try Self.handle(layer.rootFD, nil, uuid: ids[layer.index], upper: false)
            }
        } catch where error.rawValue == EOPNOTSUPP {
            throw Self.refused
        }
        // ovl_verify_origin_fh(upper root, lower root, set): recorded once, then checked.
        if let recorded = try Sys.getxattrIfPresent(.fd(upper.rootFD), originXattr) {
            guard recorded == lowerRootHandle else { throw Self.refused }
        } else {
            try Sys.setxattr(upper.rootFD, originXattr, lowerRootHandle)
        }
        if try Sys.statIfPresent(workFD, Self.directoryName) == nil {
            do throws(Errno) { try Sys.mkdir(workFD, Self.directoryName, 0o700) } catch where error.rawValue == EEXIST {}
        }
        let index = try Sys.openAt(workFD, Self.directoryName, O_PATH | O_DIRECTORY | O_NOFOLLOW)
        do throws(Errno) {
            // The kernel makes it mode 0000; a daemon without CAP_DAC_OVERRIDE needs to enter it.
            if try Sys.fstat(index).st_mode & 0o700 != 0o700 && getuid() != 0 { try Sys.chmodAt(workFD, Self.directoryName, 0o700) }
            if let recorded = try Sys.getxattrIfPresent(.fd(index), upperXattr) {
                guard recorded == upperRootHandle else { throw Self.refused }
            } else {
                try Sys.setxattr(index, upperXattr, upperRootHandle)
            }
        } catch {
            Sys.close(index)
            throw error
        }
        fd = index
    }

    deinit { Sys.close(fd) }

    /// The `struct ovl_fb` of `name` in `dir` (of `dir` itself for nil).
    static func handle(_ dir: Int32, _ name: Name?, uuid: [UInt8], upper: Bool) throws(Errno) -> [UInt8] {
        let (type, fid) = try Sys.exportHandle(dir, name ?? Name())
        guard type >= 0, type < 0xff, fid.count <= 128 else { throw Errno(EOPNOTSUPP) }
        return [0, 0xfb, UInt8(21 + fid.count), upper ? flagPathUpper : 0, UInt8(type)] + uuid + fid
    }

    /// The handle of lower file `name` in `dir` of layer `layer`, as `overlay.origin` holds it.
    func originHandle(layer: Int, _ dir: Int32, _ name: Name) throws(Errno) -> [UInt8] {
        try Self.handle(dir, name, uuid: uuids[layer], upper: false)
    }

    /// The index entry's name for a handle: its bytes in lower-case hex (ovl_get_index_name_fh).
    static func entryName(_ handle: [UInt8]) -> Name {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(handle.count * 2)
        for b in handle {
            out.append(digits[Int(b >> 4)])
            out.append(digits[Int(b & 0xf)])
        }
        return Name(out)
    }

    /// The index entry for `handle`, when there is one that can stand for a regular file (a
    /// whiteout or another type is the kernel's "bad index found": EIO).
    func entry(_ handle: [UInt8]) throws(Errno) -> stat? {
        guard let st = try Sys.statIfPresent(fd, Self.entryName(handle)) else { return nil }
        guard st.fileType == S_IFREG else { throw Errno.io }
        return st
    }

    // MARK: overlay.nlink

    /// `overlay.nlink` as the kernel writes it: "U" or "L", then a signed decimal ("%+i").
    struct NlinkValue: Equatable {
        var relativeToLower: Bool
        var diff: Int

        init(relativeToLower: Bool, diff: Int) {
            self.relativeToLower = relativeToLower
            self.diff = diff
        }

        init?(parsing raw: [UInt8]) {
            guard raw.count >= 3, raw[0] == UInt8(ascii: "U") || raw[0] == UInt8(ascii: "L"),
                  raw[1] == UInt8(ascii: "+") || raw[1] == UInt8(ascii: "-"),
                  raw[2...].allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }),
                  let n = Int(String(decoding: raw[2...], as: UTF8.self)) else { return nil }
            relativeToLower = raw[0] == UInt8(ascii: "L")
            diff = raw[1] == UInt8(ascii: "-") ? -n : n
        }

        var bytes: [UInt8] { Array(((relativeToLower ? "L" : "U") + (diff >= 0 ? "+" : "") + String(diff)).utf8) }

        /// The union's link count, given the upper inode's (and the lower one's, if known);
        /// nil where the kernel would fall back (ovl_get_nlink's "fail").
        func unionCount(upper: Int, lower: Int?) -> Int? {
            let base: Int
            if relativeToLower {
                // Only left by a crash in the middle of a link-up: the lower count cannot be
                // known without decoding the origin; the names besides the index entry are
                // what upper holds.
                guard let lower else { return upper > 1 ? upper - 1 : nil }
                base = lower
            } else {
                base = upper
            }
            let n = base + diff
            return n > 0 ? n : nil
        }
    }

    /// The union link count of the upper inode `target` (with stat `st`) keeps in
    /// `overlay.nlink`; nil when it has none (not an indexed file).
    func unionCount(_ target: Sys.XattrTarget, _ st: stat, lower: Int? = nil) throws(Errno) -> Int? {
        guard let raw = try Sys.getxattrIfPresent(target, nlinkXattr), let v = NlinkValue(parsing: raw) else { return nil }
        return v.unionCount(upper: Int(st.st_nlink), lower: lower)
    }

    static func set(_ target: Sys.XattrTarget, _ name: Name, _ value: [UInt8]) throws(Errno) {
        try Bytes.withUnsafeBytes(value) { (raw: UnsafeRawBufferPointer) throws(Errno) in try Sys.setxattr(target, name, raw) }
    }

    func setCount(_ target: Sys.XattrTarget, _ value: NlinkValue) throws(Errno) {
        try Bytes.withUnsafeBytes(value.bytes) { (raw: UnsafeRawBufferPointer) throws(Errno) in
            try Sys.setxattr(target, nlinkXattr, raw)
        }
    }
}
