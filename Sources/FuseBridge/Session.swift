import CFuse
import CLinux
import Glibc
import Synchronization
import UnionCore

/// Counters the signal handlers bump; read by the housekeeping thread, never in a handler.
/// [0]: SIGUSR1 (toggle the trace), [1]: SIGUSR2 (print statistics).
nonisolated(unsafe) let signalCounts: UnsafeMutablePointer<UInt64> = {
    let p = UnsafeMutablePointer<UInt64>.allocate(capacity: 2)
    p.initialize(repeating: 0, count: 2)
    return p
}()

/// A mounted FUSE session around a `Bridge`: mount, (daemonize), serve, unmount.
public final class Session: Sendable {
    public struct Options: Sendable {
        public var mountpoint: [UInt8]
        /// Mount options for libfuse and the kernel (allow_other, fsname=, ...), as bytes.
        public var fuseOptions: [[UInt8]]
        public var foreground = false
        public var debug = false
        public var singleThreaded = false
        public var statsFile: [UInt8]?
        public init(mountpoint: [UInt8], fuseOptions: [[UInt8]]) {
            self.mountpoint = mountpoint
            self.fuseOptions = fuseOptions
        }
    }

    public let bridge: Bridge
    let options: Options
    private let housekeeping = Mutex<pthread_t?>(nil)
    private let running = Atomic<Bool>(true)

    public init(bridge: Bridge, options: Options) {
        self.bridge = bridge
        self.options = options
    }

    /// Mounts and serves until unmounted or signalled. `onMounted` runs in the
    /// process that serves, once the kernel mount exists (after daemonizing).
    public func run(onMounted: () -> Void = {}) -> Int32 {
        guard let se = newSession() else { return 1 }
        defer { fuse_session_destroy(se) }
        guard fuse_set_signal_handlers(se) == 0 else { fail("cannot install signal handlers"); return 1 }
        defer { fuse_remove_signal_handlers(se) }
        guard mount(se) else { return 1 }
        fuse_daemonize(options.foreground ? 1 : 0)
        if !options.foreground { bridge.log.daemonized() }
        onMounted()
        let rc = serve(se)
        fuse_session_unmount(se)
        finish()
        return rc
    }

    /// A libfuse session over the bridge, with the mount options; nil after one error line.
    private func newSession() -> OpaquePointer? {
        var argv: [[UInt8]] = [Array("swiftunionfs".utf8)]
        if options.debug { argv.append(Array("-d".utf8)) }
        if !options.fuseOptions.isEmpty {
            argv += [Array("-o".utf8), Array(options.fuseOptions.joined(separator: [UInt8(ascii: ",")]))]
        }
        var cargs: [UnsafeMutablePointer<CChar>?] = argv.map { a in Bytes.withCString(a) { strdup($0) } }
        defer { cargs.forEach { free($0) } }
        var args = fuse_args(argc: Int32(cargs.count), argv: nil, allocated: 0)
        var ops = Operations.table()
        let se: OpaquePointer? = cargs.withUnsafeMutableBufferPointer { buf in
            args.argv = buf.baseAddress
            return suf_session_new(&args, &ops, MemoryLayout<fuse_lowlevel_ops>.size,
                                    Unmanaged.passUnretained(bridge).toOpaque())
        }
        fuse_opt_free_args(&args)
        if se == nil { fail("cannot start a FUSE session (see the message above)") }
        return se
    }

    private func mount(_ se: OpaquePointer) -> Bool {
        guard Bytes.withCString(options.mountpoint, { fuse_session_mount(se, $0) }) == 0 else {
            fail("cannot mount on \(Bytes.display(options.mountpoint))")
            return false
        }
        return true
    }

    /// The request loop, with the housekeeping thread beside it. Returns 0 or 1.
    private func serve(_ se: OpaquePointer) -> Int32 {
        installSignalCounters()
        startHousekeeping()
        let lowerEdits = LowerEditThread.start(bridge, session: se)
        let rc = options.singleThreaded ? fuse_session_loop(se) : suf_session_loop_mt(se, 0, 10)
        lowerEdits?.stop()
        releaseLayerDescriptors(keeping: [fuse_session_fd(se), bridge.tracer?.fd ?? -1, bridge.log.fileDescriptor ?? -1])
        stopHousekeeping()
        if rc != 0 { bridge.log.report("the request loop ended with an error: \(rc < 0 ? Errno(-rc).description : "\(rc)")") }
        return rc == 0 ? 0 : 1
    }

    /// Lets go of every file the daemon holds on the layers' filesystems, first thing
    /// once the request loop has ended (every worker joined, so no request is using one).
    ///
    /// `umount MNT` returns as soon as the kernel has dropped the mount; the daemon
    /// learns it from /dev/fuse a moment later. The layer roots, the workdir and its
    /// locks, cached directories, orphans and file handles whose release the kernel
    /// dropped with the connection keep those filesystems alive (and, when the layers
    /// could not be opened through private mounts, busy: see UnionCore's PrivateMount)
    /// until they are closed. Closing them only at exit left them held through the
    /// housekeeping thread's sleep (up to 50 ms), statistics and deinit.
    ///
    /// Every descriptor on a layer's filesystem (but stdio, the FUSE device and the
    /// trace file) is pointed at /dev/null with dup2 rather than closed: the number
    /// stays taken, so its owner's deinit still closes its own descriptor, never one
    /// reused since.
    private func releaseLayerDescriptors(keeping keep: [Int32]) {
        let devices = Set(bridge.union.layers.map(\.device))
        var fds: [Int32] = []
        do throws(Errno) {
            let list = try Sys.openPath(Array("/proc/self/fd".utf8), O_RDONLY | O_DIRECTORY)
            // The entries are decimal numbers; the listing's own descriptor is closed before the fstat below.
            try Sys.readDirectory(list) { (name: Name, _: UInt8, _: UInt64) throws(Errno) in
                if let fd = Int32(String(decoding: name.bytes, as: UTF8.self)), fd > STDERR_FILENO, !keep.contains(fd) {
                    fds.append(fd)
                }
            }
        } catch {
            bridge.log.report("cannot list the daemon's descriptors at unmount: \(error)")
            return
        }
        let layerFDs = fds.filter { fd in (try? Sys.fstat(fd)).map { devices.contains(UInt64($0.st_dev)) } ?? false }
        let null = try? Sys.openPath(Array("/dev/null".utf8), O_RDWR)
        for fd in layerFDs {
            guard let null, (try? Sys.dup2(null, fd)) != nil else { Sys.close(fd); continue }
        }
        if let null { Sys.close(null) }
    }

    private func installSignalCounters() {
        _ = signalCounts
        var sa = sigaction()
        sa.__sigaction_handler.sa_handler = { sig in suf_atomic_add(signalCounts + (sig == SIGUSR1 ? 0 : 1), 1) }
        sa.sa_flags = SA_RESTART
        sigaction(SIGUSR1, &sa, nil)
        sigaction(SIGUSR2, &sa, nil)
    }

    /// A thread that flushes the trace and answers the signal counters, so that
    /// neither a signal handler nor a request thread ever does I/O for them.
    private func startHousekeeping() {
        let me = Unmanaged.passRetained(self).toOpaque()
        var tid = pthread_t()
        pthread_create(&tid, nil, { arg in
            let s = Unmanaged<Session>.fromOpaque(arg!).takeRetainedValue()
            var seen: (UInt64, UInt64) = (0, 0)
            while s.running.load(ordering: .relaxed) {
                usleep(50_000)
                s.tick(&seen)
            }
            s.tick(&seen)
            return nil
        }, me)
        housekeeping.withLock { $0 = tid }
    }

    private func tick(_ seen: inout (UInt64, UInt64)) {
        let usr1 = suf_atomic_load(signalCounts), usr2 = suf_atomic_load(signalCounts + 1)
        if usr1 != seen.0 { seen.0 = usr1; bridge.tracer?.toggle() }
        if usr2 != seen.1 { seen.1 = usr2; reportStatistics() }
        bridge.tracer?.flush()
    }

    private func stopHousekeeping() {
        running.store(false, ordering: .relaxed)
        if let tid = housekeeping.withLock({ $0 }) { pthread_join(tid, nil) }
    }

    private func reportStatistics() {
        guard let stats = bridge.stats else { return }
        let text = stats.text()
        if let tracer = bridge.tracer, tracer.fd != STDERR_FILENO { tracer.note(text.replacingNewlines()) }
        Text.stderr(text)
        writeStatsFile()
    }

    private func writeStatsFile() {
        guard let path = options.statsFile, let stats = bridge.stats else { return }
        let tmp = path + Array(".tmp".utf8)
        do throws(Errno) {
            let fd = try Sys.openPath(tmp, O_WRONLY | O_CREAT | O_TRUNC, mode: 0o644)
            Text.write(fd, stats.json())
            Sys.close(fd)
            try Sys.renamePath(tmp, path)
        } catch {
            bridge.log.report("cannot write statistics to \(Bytes.display(path)): \(error)")
        }
    }

    private func finish() {
        if let stats = bridge.stats, options.foreground { Text.stderr(stats.text()) }
        writeStatsFile()
        bridge.tracer?.flush()
    }
}

// MARK: mount and serve as separate steps (`swiftunionfs run`)

extension Session {
    /// Creates the session and mounts it, in the calling process: no signal handlers,
    /// no daemonizing. The caller forks the process that serves (`serveMounted`).
    public func mountOnly() -> OpaquePointer? {
        guard let se = newSession() else { return nil }
        guard mount(se) else {
            fuse_session_destroy(se)
            return nil
        }
        return se
    }

    /// Serves a session mounted by `mountOnly` until the kernel ends the connection
    /// (the last reference to the mount is gone); never unmounts. Returns 0 or 1.
    /// The descriptor of the FUSE connection, which only the serving process may hold.
    public static func closeConnection(in se: OpaquePointer) { Sys.close(fuse_session_fd(se)) }

    public func serveMounted(_ se: OpaquePointer) -> Int32 {
        let rc = serve(se)
        finish()
        return rc
    }
}

extension String {
    func replacingNewlines() -> String { split(separator: "\n").joined(separator: " | ") }
}

/// One clear line on stderr, as every error of the command is reported.
public func fail(_ message: String) {
    Text.stderr("swiftunionfs: \(message)\n")
}
