import Synchronization
import CLinux
import Glibc

/// What a watched directory is known by in the events of a backend: an inotify watch
/// descriptor, or a fanotify (filesystem id, file handle).
enum WatchKey: Hashable, Sendable {
    case wd(Int32)
    case handle([UInt8])
}

/// One event as a backend reads it, before it is mapped to nodes.
enum RawWatchEvent {
    /// Something changed in the watched directory `key`: the entry `name`, or the
    /// directory itself when `name` is nil.
    case edit(WatchKey, Name?, LowerEdit.Kind)
    /// The watch is gone (its directory was removed): the key means nothing any more.
    case gone(WatchKey)
    /// The kernel dropped events: anything may have changed.
    case overflow
}

/// A kernel notification mechanism the lower-layer watch reads from.
protocol WatchBackend: Sendable {
    /// The descriptor that becomes readable when events are queued.
    var fd: Int32 { get }
    /// Whether a directory is registered when the kernel looks it up (fanotify reports
    /// a directory's own changes under the directory's handle) rather than when the
    /// daemon first opens it (inotify reports them to the parent's watch too).
    var registersAtLookup: Bool { get }
    /// Starts watching the directory `dir` (an O_PATH descriptor) of layer `layer`.
    func watch(directory dir: Int32, layer: Int) throws(Errno) -> WatchKey
    /// The key of directory `name` in `parent` of layer `layer`, not followed.
    func watch(_ name: Name, in parent: Int32, layer: Int) throws(Errno) -> WatchKey
    /// Stops watching a key no node uses any more.
    func release(_ key: WatchKey)
    /// Reads what is queued, without blocking; false when nothing was.
    func read(_ buffer: UnsafeMutableRawBufferPointer, _ body: (RawWatchEvent) -> Void) throws(Errno) -> Bool
}

/// inotify: one watch per lower directory the daemon has opened, each reporting the
/// directory's own changes and its entries' (unprivileged; bounded by a budget).
final class InotifyBackend: WatchBackend {
    let fd: Int32
    static let mask: UInt32 = UInt32(SUF_IN_MODIFY | SUF_IN_ATTRIB | SUF_IN_CREATE | SUF_IN_DELETE
        | SUF_IN_MOVED_FROM | SUF_IN_MOVED_TO | SUF_IN_ONLYDIR | SUF_IN_EXCL_UNLINK)
    static let nameMask: UInt32 = UInt32(SUF_IN_CREATE | SUF_IN_DELETE | SUF_IN_MOVED_FROM | SUF_IN_MOVED_TO)

    init() throws(Errno) { fd = try Sys.inotifyInit() }
    deinit { Sys.close(fd) }

    var registersAtLookup: Bool { false }

    func watch(directory dir: Int32, layer: Int) throws(Errno) -> WatchKey {
        .wd(try Sys.inotifyWatch(fd, directory: dir, mask: Self.mask))
    }

    func watch(_ name: Name, in parent: Int32, layer: Int) throws(Errno) -> WatchKey { throw Errno.invalid }

    func release(_ key: WatchKey) {
        if case .wd(let wd) = key { Sys.inotifyUnwatch(fd, wd) }
    }

    /// struct inotify_event: wd, mask, cookie, len (4 bytes each), then `len` bytes of name.
    func read(_ buffer: UnsafeMutableRawBufferPointer, _ body: (RawWatchEvent) -> Void) throws(Errno) -> Bool {
        let n = try Sys.readAvailable(fd, buffer)
        guard n > 0 else { return false }
        var off = 0
        while off + 16 <= n {
            let wd = buffer.loadUnaligned(fromByteOffset: off, as: Int32.self)
            let mask = buffer.loadUnaligned(fromByteOffset: off + 4, as: UInt32.self)
            let len = Int(buffer.loadUnaligned(fromByteOffset: off + 12, as: UInt32.self))
            var name: Name?
            if len > 0 {
                let raw = UnsafeRawBufferPointer(rebasing: buffer[(off + 16)..<min(n, off + 16 + len)])
                name = Name(raw.prefix { $0 != 0 })
            }
            off += 16 + len
            if mask & UInt32(SUF_IN_Q_OVERFLOW) != 0 {
                body(.overflow)
            } else if mask & UInt32(SUF_IN_IGNORED) != 0 {
                body(.gone(.wd(wd)))
            } else {
                body(.edit(.wd(wd), name, mask & Self.nameMask != 0 ? .names : .attributes))
            }
        }
        return true
    }
}

/// fanotify: one mark per filesystem holding a lower layer (needs CAP_SYS_ADMIN), events
/// reported by the handle of the directory and the entry's name. Directories are matched
/// by handle, so there is no budget; events elsewhere on the filesystem are read and
/// dropped.
final class FanotifyBackend: WatchBackend {
    let fd: Int32
    /// statfs f_fsid of each lower layer's filesystem, by layer index: the first 8 bytes of a key.
    private let fsids: [Int: [UInt8]]
    static let mask: UInt64 = SUF_FAN_MODIFY | SUF_FAN_ATTRIB | SUF_FAN_CREATE | SUF_FAN_DELETE
        | SUF_FAN_MOVED_FROM | SUF_FAN_MOVED_TO | SUF_FAN_ONDIR
    /// A name appeared, went away or was replaced.
    static let nameMask: UInt64 = SUF_FAN_CREATE | SUF_FAN_DELETE | SUF_FAN_MOVED_FROM | SUF_FAN_MOVED_TO

    /// Marks the filesystem of every layer in `roots` (layer index -> root descriptor).
    init(roots: [(layer: Int, fd: Int32, device: UInt64)]) throws(Errno) {
        fd = try Sys.fanotifyInit(flags: SUF_FAN_CLASS_NOTIF | SUF_FAN_CLOEXEC | SUF_FAN_NONBLOCK | SUF_FAN_REPORT_DFID_NAME,
                                  eventFlags: UInt32(O_RDONLY | O_CLOEXEC))
        var fsids: [Int: [UInt8]] = [:]
        var marked = Set<UInt64>()
        do throws(Errno) {
            for root in roots {
                fsids[root.layer] = try Sys.filesystemID(root.fd)
                // A handle must be obtainable, or no event could ever be matched.
                _ = try Sys.fileHandle(root.fd, nil)
                if marked.insert(root.device).inserted {
                    try Sys.fanotifyMark(fd, flags: SUF_FAN_MARK_ADD | SUF_FAN_MARK_FILESYSTEM, mask: Self.mask, root.fd)
                }
            }
        } catch {
            Sys.close(fd)
            throw error
        }
        self.fsids = fsids
    }
    deinit { Sys.close(fd) }

    var registersAtLookup: Bool { true }

    func watch(directory dir: Int32, layer: Int) throws(Errno) -> WatchKey {
        .handle((fsids[layer] ?? []) + (try Sys.fileHandle(dir, nil)))
    }

    func watch(_ name: Name, in parent: Int32, layer: Int) throws(Errno) -> WatchKey {
        .handle((fsids[layer] ?? []) + (try Sys.fileHandle(parent, name)))
    }

    /// The mark is on the filesystem: nothing to undo per directory.
    func release(_ key: WatchKey) {}

    /// struct fanotify_event_metadata (event_len u32, vers u8, reserved u8, metadata_len
    /// u16, mask u64, fd s32, pid s32), then info records: a header (type u8, pad u8,
    /// len u16), fsid (8 bytes), struct file_handle (handle_bytes u32, handle_type s32,
    /// bytes) and, for DFID_NAME, the NUL-terminated name ("." for the directory itself).
    func read(_ buffer: UnsafeMutableRawBufferPointer, _ body: (RawWatchEvent) -> Void) throws(Errno) -> Bool {
        let n = try Sys.readAvailable(fd, buffer)
        guard n > 0 else { return false }
        // The daemon never writes a lower layer: its own events (its writes to an upper
        // on the same filesystem) are skipped before anything is decoded. Asked per read,
        // as `run` serves from a child of the process that made the group.
        let me = getpid()
        var off = 0
        while off + 24 <= n {
            let eventLen = Int(buffer.loadUnaligned(fromByteOffset: off, as: UInt32.self))
            let version = buffer[off + 4]
            let metaLen = Int(buffer.loadUnaligned(fromByteOffset: off + 6, as: UInt16.self))
            let mask = buffer.loadUnaligned(fromByteOffset: off + 8, as: UInt64.self)
            let efd = buffer.loadUnaligned(fromByteOffset: off + 16, as: Int32.self)
            let pid = buffer.loadUnaligned(fromByteOffset: off + 20, as: Int32.self)
            guard eventLen >= 24, off + eventLen <= n, version == UInt8(SUF_FAN_METADATA_VERSION) else {
                // A layout this code does not know: treat it as lost events.
                body(.overflow)
                return true
            }
            if efd >= 0 { Sys.close(efd) }
            defer { off += eventLen }
            if mask & SUF_FAN_Q_OVERFLOW != 0 {
                body(.overflow)
                continue
            }
            if pid == me { continue }
            var info = off + metaLen
            let end = off + eventLen
            while info + 4 <= end {
                let type = buffer[info]
                let len = Int(buffer.loadUnaligned(fromByteOffset: info + 2, as: UInt16.self))
                guard len >= 4, info + len <= end else { break }
                defer { info += len }
                guard type == UInt8(SUF_FAN_EVENT_INFO_TYPE_DFID_NAME), len >= 20 else { continue }
                let handleBytes = Int(buffer.loadUnaligned(fromByteOffset: info + 12, as: UInt32.self))
                let keyEnd = info + 20 + handleBytes
                guard keyEnd <= info + len else { continue }
                // fsid (8) + handle_type (4) + handle: the same bytes `watch` builds.
                var key = Array(UnsafeRawBufferPointer(rebasing: buffer[(info + 4)..<(info + 12)]))
                key += UnsafeRawBufferPointer(rebasing: buffer[(info + 16)..<keyEnd])
                let name = Name(UnsafeRawBufferPointer(rebasing: buffer[keyEnd..<(info + len)]).prefix { $0 != 0 })
                body(.edit(.handle(key), name == .dot ? nil : name,
                           mask & Self.nameMask != 0 ? .names : .attributes))
            }
        }
        return true
    }
}
