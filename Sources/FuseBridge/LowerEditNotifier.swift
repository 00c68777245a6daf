import CFuse
import Glibc
import UnionCore

/// Tells the kernel what a lower-layer edit made stale, through FUSE's notify calls.
///
/// libfuse's notify calls must not run inside a request that the invalidation could
/// wait for (fuse_lowlevel.h: inval_entry takes the directory's inode lock, which the
/// VFS holds across lookup, create, unlink, rename...). They run here only, on the
/// watcher thread, which holds no union lock while it calls them.
struct KernelInvalidator: Invalidator {
    /// The `struct fuse_session *`, as an integer so that the value is Sendable.
    let session: UInt
    let log: DaemonLog
    /// Asked at each invalidation: INIT (which grants the writeback cache) comes after this starts.
    let bridge: Bridge

    func invalidate(_ what: Invalidation) {
        let se = OpaquePointer(bitPattern: session)
        var rc: Int32
        switch what {
        case .node(let id):
            // Offset 0, length 0: the attributes and every cached page.
            rc = fuse_lowlevel_notify_inval_inode(se, fuse_ino_t(id), 0, 0)
            // Under the writeback cache the kernel keeps its own size and mtime of a regular
            // file as long as it holds the inode, whatever a getattr answers. Dropping the
            // name lets an unused inode go (FUSE never keeps unused inodes), and the next
            // lookup makes a new one with the new size. A file held open keeps the old size
            // until it is closed (docs/design.md, "Writeback cache").
            if rc == 0 || rc == -ENOENT, bridge.writebackCache.load(ordering: .relaxed), case let union = bridge.union, let n = union.nodes.node(id),
               let (parent, name) = union.nodes.locked({ () -> (UInt64, Name)? in
                   n.type == S_IFREG ? n.parent.map { ($0.id, n.name) } : nil }) {
                let r = name.withCString { fuse_lowlevel_notify_inval_entry(se, fuse_ino_t(parent), $0, name.count) }
                if rc == -ENOENT { rc = r }
            }
        case .entry(let parent, let name):
            rc = name.withCString { fuse_lowlevel_notify_inval_entry(se, fuse_ino_t(parent), $0, name.count) }
        }
        // ENOENT: the kernel holds nothing of it. ENOTCONN, ENODEV, EBADF: unmounting.
        guard rc != 0, ![ENOENT, ENOTCONN, ENODEV, EBADF].contains(-rc) else { return }
        log.report("cannot tell the kernel about a lower-layer edit: \(Errno(-rc))")
    }
}

/// The thread that serves lower-layer edits beside the request loop.
final class LowerEditThread {
    private let union: Union
    private var thread = pthread_t()

    private init(union: Union) { self.union = union }

    /// Starts serving for mounted session `se`; nil when the union watches nothing.
    static func start(_ bridge: Bridge, session se: OpaquePointer) -> LowerEditThread? {
        guard bridge.union.watch != nil else { return nil }
        let t = LowerEditThread(union: bridge.union)
        let invalidator = KernelInvalidator(session: UInt(bitPattern: se), log: bridge.log, bridge: bridge)
        let context = Unmanaged.passRetained(Context(union: bridge.union, invalidator: invalidator))
        guard pthread_create(&t.thread, nil, { arg in
            let c = Unmanaged<Context>.fromOpaque(arg!).takeRetainedValue()
            c.union.watchLowerEdits(c.invalidator)
            return nil
        }, context.toOpaque()) == 0 else {
            context.release()
            bridge.log.report("cannot start the thread that watches the lower layers: lower edits stay unseen")
            return nil
        }
        return t
    }

    /// Stops the thread and waits for it: no notification is sent after this returns.
    func stop() {
        union.stopWatchingLowerEdits()
        pthread_join(thread, nil)
    }

    private final class Context {
        let union: Union
        let invalidator: KernelInvalidator
        init(union: Union, invalidator: KernelInvalidator) {
            self.union = union
            self.invalidator = invalidator
        }
    }
}
