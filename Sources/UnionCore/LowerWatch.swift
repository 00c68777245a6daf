import Glibc
import Synchronization

/// How a mount learns of edits made to its lower layers behind its back (`watch=`).
public enum LowerWatchMode: String, Sendable, CaseIterable, Equatable {
    /// Nothing is watched: the kernel keeps names and attributes for the whole timeout.
    case off
    /// fanotify where the daemon may mark the layers' filesystems, else inotify.
    case auto
    case fanotify
    case inotify
}

/// One change a lower layer reported in a directory the kernel holds a node for.
struct LowerEdit: Sendable {
    enum Kind: Sendable {
        /// A name appeared, went away or was replaced.
        case names
        /// Content, size, mode, owner, times or xattrs changed.
        case attributes
    }
    /// The node of the directory the change happened in.
    let directory: UInt64
    let layer: Int
    /// The entry that changed; nil: the directory itself.
    let name: Name?
    let kind: Kind
}

/// The registry of watched lower directories, and the thread-facing side of the
/// watch: which (node, layer) each key stands for, which directories could not be
/// watched, the epoch lookups compare, and the entries to invalidate once more.
///
/// Directories are registered as the union first needs them (`opened`, `lookedUp`) and
/// dropped when the kernel forgets their node, so the watch covers exactly what the
/// kernel may have cached. A directory that cannot be watched (the inotify budget is
/// spent, or the kernel refuses) is recorded as unwatched: the bridge then gives its
/// entries and its children's attributes short timeouts instead.
public final class LowerWatch: Sendable {
    /// What a started watch uses.
    public enum Mechanism: Sendable, Equatable {
        case fanotify
        case inotify(limit: Int)
        /// No notification: every name and attribute is revalidated after a short timeout.
        case timeouts(reason: String)
    }

    struct Batch {
        var edits: [LowerEdit] = []
        /// Events were lost: anything may have changed.
        var overflow = false
        /// Entries replied while a batch was being applied: invalidated once more.
        var rechecks: [(parent: UInt64, name: Name)] = []
    }

    private struct Slot: Equatable {
        var node: UInt64
        var layer: Int
    }

    private struct State {
        var backend: WatchBackend?
        var mechanism: Mechanism?
        var byKey: [WatchKey: [Slot]] = [:]
        var byNode: [UInt64: [(layer: Int, key: WatchKey)]] = [:]
        /// inotify watches being added outside the lock, counted against the budget.
        var pending = 0
        var limit = Int.max
        /// Directory nodes with a layer that could not be watched.
        var unwatched = Set<UInt64>()
        var reportedExhausted = false
        var rechecks: [(parent: UInt64, name: Name)] = []
        var stopping = false
    }

    public let mode: LowerWatchMode
    let requestedLimit: Int?
    let layers: [Layer]
    let diagnostics: Diagnostics
    private let state = Mutex(State())
    /// Held while a batch is applied: `stop` waits for it.
    private let busy = Mutex<Void>(())
    /// 0 before start, 1 inotify, 2 fanotify, 3 timeouts only.
    private let kind = Atomic<UInt8>(0)
    private let anyUnwatched = Atomic<Bool>(false)
    /// Bumped before each batch of edits is applied; see `recheck`.
    let epoch = Atomic<UInt64>(0)
    private let wake: Int32

    /// The kernel's per-user limit on inotify watches, and the default budget: a quarter
    /// of it, at most 65536, so other programs of the same user keep theirs.
    static func defaultLimit() -> Int {
        let max = UserNamespace.read("/proc/sys/fs/inotify/max_user_watches").flatMap { Int($0.trimmingSpaces()) } ?? 8192
        return Swift.min(65536, Swift.max(16, max / 4))
    }

    init(mode: LowerWatchMode, limit: Int?, layers: [Layer], diagnostics: Diagnostics) throws(Errno) {
        self.mode = mode
        self.requestedLimit = limit
        self.layers = layers
        self.diagnostics = diagnostics
        wake = try Sys.eventFD()
    }

    deinit { Sys.close(wake) }

    /// The mechanism in use; nil before `start`.
    public var mechanism: Mechanism? { state.withLock { $0.mechanism } }

    /// A failure to set up the mechanism a mount asked for by name.
    public struct StartError: Error, Sendable {
        public let message: String
    }

    /// Sets up the mechanism and watches the root's lower directories. `auto` falls back
    /// from fanotify to inotify, and from inotify to timeouts; a mechanism named
    /// explicitly either works or fails with a reason.
    @discardableResult
    public func start(root: Node) throws(StartError) -> Mechanism {
        let lowers = root.layers.filter { !layers[$0].isUpper }
        var backend: WatchBackend?
        var mechanism: Mechanism
        var why: [String] = []
        if mode == .fanotify || mode == .auto {
            do throws(Errno) {
                backend = try FanotifyBackend(roots: lowers.map { (layer: $0, fd: layers[$0].rootFD, device: layers[$0].device) })
            } catch {
                if mode == .fanotify {
                    throw StartError(message: "watch=fanotify: cannot mark the lower layers' filesystems: \(error)"
                                     + (error.rawValue == EPERM ? " (needs CAP_SYS_ADMIN; use watch=inotify)" : ""))
                }
                why.append("fanotify: \(error.name)")
            }
        }
        let limit = requestedLimit ?? Self.defaultLimit()
        if backend != nil {
            mechanism = .fanotify
        } else if mode == .inotify || mode == .auto {
            do throws(Errno) {
                backend = try InotifyBackend()
                mechanism = .inotify(limit: limit)
            } catch {
                if mode == .inotify { throw StartError(message: "watch=inotify: inotify_init1: \(error)") }
                why.append("inotify: \(error.name)")
                mechanism = .timeouts(reason: why.joined(separator: ", "))
            }
        } else {
            mechanism = .timeouts(reason: "watch=\(mode.rawValue)")
        }
        let chosen = mechanism
        state.withLock { s in
            s.backend = backend
            s.mechanism = chosen
            s.limit = backend is InotifyBackend ? limit : Int.max
        }
        switch mechanism {
        case .inotify: kind.store(1, ordering: .releasing)
        case .fanotify: kind.store(2, ordering: .releasing)
        case .timeouts: kind.store(3, ordering: .releasing)
        }
        for li in lowers {
            let fd = layers[li].rootFD
            register(root.id, li) { (b: WatchBackend) throws(Errno) -> WatchKey in try b.watch(directory: fd, layer: li) }
        }
        return mechanism
    }

    // MARK: registration (request threads)

    /// The union opened directory `node` of lower layer `layer` as `fd`: with inotify,
    /// this is when the directory starts being watched, before anything in it is read.
    func opened(_ node: UInt64, _ layer: Int, _ fd: Int32) {
        guard kind.load(ordering: .relaxed) == 1, !layers[layer].isUpper else { return }
        register(node, layer) { (b: WatchBackend) throws(Errno) -> WatchKey in try b.watch(directory: fd, layer: layer) }
    }

    /// Whether directories are registered as the kernel looks them up (fanotify).
    var registersAtLookup: Bool { kind.load(ordering: .relaxed) == 2 }

    /// The lower layers of `layers` that `node` is not registered in yet.
    func unregistered(_ node: UInt64, _ layers: [Int]) -> [Int] {
        let lowers = layers.filter { !self.layers[$0].isUpper }
        guard !lowers.isEmpty else { return [] }
        return state.withLock { s in
            let have = s.byNode[node] ?? []
            return lowers.filter { li in !have.contains { $0.layer == li } }
        }
    }

    /// The kernel looked up directory `name` of `parent` (held open as `parentFD` in
    /// layer `layer`), now `node`: with fanotify it is registered by its handle here.
    func lookedUp(_ node: UInt64, _ layer: Int, name: Name, parentFD: Int32) {
        register(node, layer) { (b: WatchBackend) throws(Errno) -> WatchKey in try b.watch(name, in: parentFD, layer: layer) }
    }

    private func register(_ node: UInt64, _ layer: Int, _ make: (WatchBackend) throws(Errno) -> WatchKey) {
        enum Step { case done, exhausted(Int), add(WatchBackend) }
        let step: Step = state.withLock { s in
            guard let backend = s.backend else { return .done }
            if s.byNode[node]?.contains(where: { $0.layer == layer }) == true { return .done }
            if s.byKey.count + s.pending >= s.limit {
                s.unwatched.insert(node)
                if !s.reportedExhausted {
                    s.reportedExhausted = true
                    return .exhausted(s.limit)
                }
                return .done
            }
            s.pending += 1
            return .add(backend)
        }
        switch step {
        case .done: return
        case .exhausted(let limit):
            anyUnwatched.store(true, ordering: .releasing)
            diagnostics.report("the inotify watch budget (\(limit) directories, watch_limit=) is spent: entries of directories beyond it are revalidated every \(Self.revalidateText) s instead")
            return
        case .add(let backend):
            let key: WatchKey
            do throws(Errno) {
                key = try make(backend)
            } catch {
                let first = state.withLock { s -> Bool in
                    s.pending -= 1
                    s.unwatched.insert(node)
                    defer { s.reportedExhausted = true }
                    return !s.reportedExhausted
                }
                anyUnwatched.store(true, ordering: .releasing)
                if first {
                    diagnostics.report("cannot watch a directory of \(layers[layer].label) for edits (\(error)): entries of such directories are revalidated every \(Self.revalidateText) s instead")
                }
                return
            }
            let duplicate = state.withLock { s -> Bool in
                s.pending -= 1
                if s.byNode[node]?.contains(where: { $0.layer == layer }) == true {
                    // Registered meanwhile by another thread: release only a key nobody uses.
                    return s.byKey[key] == nil
                }
                s.byKey[key, default: []].append(Slot(node: node, layer: layer))
                s.byNode[node, default: []].append((layer, key))
                return false
            }
            if duplicate { backend.release(key) }
        }
    }

    /// The kernel forgot `node`: its directories are no longer watched on its account.
    func forget(_ node: UInt64) {
        guard kind.load(ordering: .relaxed) != 0 else { return }
        let (released, backend) = state.withLock { s -> ([WatchKey], WatchBackend?) in
            s.unwatched.remove(node)
            guard let regs = s.byNode.removeValue(forKey: node) else { return ([], nil) }
            var released: [WatchKey] = []
            for (layer, key) in regs {
                s.byKey[key]?.removeAll { $0 == Slot(node: node, layer: layer) }
                if s.byKey[key]?.isEmpty == true {
                    s.byKey[key] = nil
                    released.append(key)
                }
            }
            return (released, s.backend)
        }
        released.forEach { backend?.release($0) }
    }

    // MARK: what the bridge asks

    /// How long the watcher waits after the first event of a burst before reading it.
    static let gatherMilliseconds = 2

    /// How long names and attributes are cached where edits may go unnoticed.
    public static let revalidateSeconds = 0.5
    static let revalidateText = "0.5"

    /// Whether every directory the kernel holds is watched (or nothing is, with no
    /// mechanism started): the common case, one load.
    var watchesEverything: Bool {
        let k = kind.load(ordering: .relaxed)
        return k == 0 || (k != 3 && !anyUnwatched.load(ordering: .acquiring))
    }

    /// Whether edits to the lower copies of directory `dir` and of its entries reach the
    /// kernel as invalidations, so the kernel may cache them for the whole timeout.
    public func watches(_ dir: UInt64) -> Bool {
        switch kind.load(ordering: .relaxed) {
        case 3: return false
        case 1, 2:
            guard anyUnwatched.load(ordering: .acquiring) else { return true }
            return state.withLock { !$0.unwatched.contains(dir) }
        default: return true
        }
    }

    /// An entry of `parent` was replied to the kernel by a request that began at `since`:
    /// if a batch of edits was applied meanwhile, the reply may predate it, so the
    /// entry is invalidated once more after the reply.
    func recheck(_ parent: UInt64, _ names: [Name], since: UInt64) {
        guard epoch.load(ordering: .acquiring) != since, !names.isEmpty else { return }
        state.withLock { s in s.rechecks += names.map { (parent, $0) } }
        Sys.signal(eventFD: wake)
    }

    // MARK: the watcher thread

    /// Waits for the next batch (up to `timeout` ms; -1: until there is one or `stop`).
    /// Nil once stopping.
    func next(timeout: Int32 = -1, buffer: UnsafeMutableRawBufferPointer) -> Batch? {
        guard let backend = state.withLock({ s -> WatchBackend? in s.stopping ? nil : s.backend }) else {
            // Timeouts only (or stopped): nothing to read; wait for stop.
            if state.withLock({ $0.stopping }) { return nil }
            _ = try? Sys.pollReadable(wake, wake, timeout: timeout)
            Sys.drain(eventFD: wake)
            return state.withLock { $0.stopping } ? nil : Batch()
        }
        let ready: (a: Bool, b: Bool)
        do throws(Errno) { ready = try Sys.pollReadable(backend.fd, wake, timeout: timeout) } catch {
            diagnostics.report("watching the lower layers: poll: \(error)")
            Sys.sleep(milliseconds: 100)
            return Batch()
        }
        if ready.b { Sys.drain(eventFD: wake) }
        var raw: [RawWatchEvent] = []
        if ready.a {
            // Let a burst gather (and the kernel merge repeats of an event) before reading:
            // one wakeup per burst, not one per write, for a delay far inside the bound.
            Sys.sleep(milliseconds: Self.gatherMilliseconds)
            do throws(Errno) {
                while try backend.read(buffer, { raw.append($0) }) {
                    if raw.count > 65536 { break }
                }
            } catch {
                diagnostics.report("watching the lower layers: read: \(error)")
                raw.append(.overflow)
            }
        }
        return state.withLock { s -> Batch? in
            if s.stopping { return nil }
            var batch = Batch()
            batch.rechecks = s.rechecks
            s.rechecks = []
            for event in raw {
                switch event {
                case .overflow:
                    batch.overflow = true
                case .gone(let key):
                    for slot in s.byKey.removeValue(forKey: key) ?? [] {
                        s.byNode[slot.node]?.removeAll { $0.key == key }
                    }
                case .edit(let key, let name, let kind):
                    for slot in s.byKey[key] ?? [] {
                        batch.edits.append(LowerEdit(directory: slot.node, layer: slot.layer, name: name, kind: kind))
                    }
                }
            }
            if !batch.edits.isEmpty || batch.overflow { epoch.add(1, ordering: .acquiringAndReleasing) }
            return batch
        }
    }

    /// Runs `body` (the application of a batch, which uses the union's descriptors)
    /// unless the watch is stopping; nil then.
    func applying<T>(_ body: () -> T) -> T? {
        busy.withLock { _ in state.withLock { $0.stopping } ? nil : body() }
    }

    /// Ends `next` (and the thread serving it). Returns once no batch is being applied, so
    /// that the union's descriptors may be closed after it.
    func stop() {
        state.withLock { $0.stopping = true }
        Sys.signal(eventFD: wake)
        busy.withLock { _ in }
    }
}
