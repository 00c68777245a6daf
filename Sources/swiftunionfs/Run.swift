import CFuse
import FuseBridge
import Glibc
import MountOptions
import UnionCore

/// `swiftunionfs run`: a command in a private root made of the union, container style.
///
/// Three processes:
/// - P (this one) unshares a mount namespace (and, unprivileged, a user namespace
///   mapping the caller to root), mounts the union on a private temporary directory,
///   forks D and C, forwards signals to C, and at C's end detaches the mount, reaps D
///   and exits with C's status;
/// - D serves the FUSE session; it stays in P's mount namespace and original root,
///   where the layer directories (held open since before) and /proc/self/fd are;
/// - C unshares its own mount namespace (so its pivot_root moves nobody else),
///   mounts /proc, /dev, /sys and the binds inside the union, pivots into it and
///   execs the command.
enum RunCommand {
    struct Bind { var source: String; var target: String; var readOnly: Bool }

    struct Spec {
        var mount = MountCommand()
        var hostname: String?
        var pidNamespace = false
        var binds: [Bind] = []
        var workdir = "/"
        var env: [(String, String)] = []
        var command: [String] = ["/bin/sh"]
    }

    /// Exit statuses of `run` itself (the command's own status is passed through).
    static let usageStatus: Int32 = 2        // bad command line, missing layers
    static let setupStatus: Int32 = 125      // namespaces, mounts, pivot_root failed
    static let notExecutable: Int32 = 126
    static let notFound: Int32 = 127

    static let forwarded: [Int32] = [SIGINT, SIGTERM, SIGHUP, SIGQUIT]

    static func main(_ args: [[UInt8]]) -> Int32 {
        var spec: Spec
        do { spec = try parse(args) } catch let e as UsageError {
            fail(e.message)
            return usageStatus
        } catch { return usageStatus }

        // 1. Namespaces, first thing: a user namespace needs a single-threaded process.
        if let message = enterNamespaces() {
            fail(message)
            return setupStatus
        }

        // 2. The union, mounted on a private directory nobody else sees.
        let tmpBase = getenv("TMPDIR").map { String(cString: $0) }.flatMap { $0.isEmpty ? nil : $0 } ?? "/tmp"
        var template = Array((tmpBase + "/swiftunionfs-run.XXXXXX").utf8CString)
        guard let made = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
            fail("cannot create a temporary directory in \(tmpBase): \(errorText())")
            return setupStatus
        }
        let root = String(cString: made)
        defer { rmdir(root) }
        spec.mount.mountpoint = legacyBytes(root)

        let session: Session
        let se: OpaquePointer
        do {
            try Validation.check(&spec.mount)
            for i in spec.binds.indices {
                spec.binds[i].source = try Validation.absolute(spec.binds[i].source)
            }
            let tracer = try Mounter.makeTracer(spec.mount)
            let stats = Statistics()
            let union = try Mounter.makeUnion(spec.mount, events: Observers(tracer: tracer, stats: stats))
            if spec.mount.verbose {
                fail("layers: " + union.layers.map { "\($0.label)=\($0.path)" }.joined(separator: " "))
            }
            let bridge = Bridge(union: union, timeout: spec.mount.timeout, tracer: tracer, stats: stats)
            var opts = Session.Options(mountpoint: root, fuseOptions: Mounter.fuseOptions(spec.mount))
            opts.foreground = false  // statistics only to stats=FILE, not on every exit
            opts.debug = spec.mount.debug
            opts.singleThreaded = spec.mount.singleThreaded
            opts.statsFile = spec.mount.statsFile.map(legacyPath)
            session = Session(bridge: bridge, options: opts)
            guard let s = session.mountOnly() else { return setupStatus }
            se = s
        } catch let e as UsageError {
            fail(e.message)
            return usageStatus
        } catch {
            fail("\(error)")
            return usageStatus
        }

        // 3. D: the daemon. Its own process group, deaf to terminal and job signals;
        // it ends when the kernel ends the connection (the last use of the mount).
        let parent = getpid()
        let daemon = suf_fork()
        if daemon < 0 {
            fail("fork: \(errorText())")
            _ = suf_umount2(root, Int32(MNT_DETACH))
            return setupStatus
        }
        if daemon == 0 {
            _ = suf_prctl_pdeathsig(SIGKILL)
            if getppid() != parent { _exit(1) }
            setpgid(0, 0)
            for sig in forwarded + [SIGPIPE, SIGTTIN, SIGTTOU, SIGTSTP] { signal(sig, SIG_IGN) }
            let null = open("/dev/null", O_RDWR)
            if null >= 0 { dup2(null, 0); dup2(null, 1); if null > 2 { close(null) } }
            umask(0)  // modes arrive from the kernel with the caller's umask applied
            _exit(session.serveMounted(se))
        }
        // Only D may hold the connection: when D dies, the mount must fail, not hang.
        close(fuse_session_fd(se))

        let status = runCommand(spec, root: root, parent: parent)

        // 5. The end: detach the union here (C's namespace died with C); the
        // connection ends with the last reference, and D's loop with it.
        _ = suf_umount2(root, Int32(MNT_DETACH))
        reap(daemon, graceSeconds: 5)
        return status
    }

    // MARK: command line

    static func parse(_ raw: [[UInt8]]) throws -> Spec {
        // -o lists go to the parser as bytes; run's own flags and the command stay String for now.
        let args = raw.map(legacyPath)
        var spec = Spec()
        var i = 0
        func value(_ flag: String) throws -> String {
            i += 1
            guard i < args.count else { throw UsageError(message: "\(flag) needs a value") }
            return args[i]
        }
        var command: [String] = []
        while i < args.count {
            var a = args[i]
            var inline: String?
            if a.hasPrefix("--"), let eq = a.firstIndex(of: "=") {
                inline = String(a[a.index(after: eq)...])
                a = String(a[..<eq])
            }
            func arg() throws -> String { if let inline { return inline }; return try value(a) }
            switch a {
            case "--":
                command = Array(args[(i + 1)...])
                i = args.count
                continue
            case "-o":
                _ = try value(a)
                try spec.mount.apply(optionList: raw[i])
            case "-d", "--debug": spec.mount.debug = true
            case "-s": _ = try spec.mount.apply(flag: raw[i])  // -s and threaded= must agree
            case "-v", "--verbose": spec.mount.verbose = true
            case "--hostname":
                let h = try arg()
                guard !h.isEmpty, h.utf8.count <= 64 else { throw UsageError(message: "--hostname must be 1 to 64 bytes") }
                spec.hostname = h
            case "--pid": spec.pidNamespace = true
            case "--bind": spec.binds.append(try parseBind(try arg()))
            case "--workdir", "-w":
                let w = try arg()
                spec.workdir = w.hasPrefix("/") ? w : "/" + w
            case "--env", "-e":
                let kv = try arg()
                if let eq = kv.firstIndex(of: "=") {
                    let k = String(kv[..<eq])
                    guard !k.isEmpty else { throw UsageError(message: "--env needs NAME=VALUE, not \(kv)") }
                    spec.env.append((k, String(kv[kv.index(after: eq)...])))
                } else if let v = getenv(kv) {
                    spec.env.append((kv, String(cString: v)))  // --env NAME: the caller's value
                }
            default:
                if raw[i].starts(with: "-o".utf8) && raw[i].count > 2 && inline == nil {
                    try spec.mount.apply(optionList: Array(raw[i].dropFirst(2)))
                } else if a.hasPrefix("-") {
                    throw UsageError(message: "run: unknown flag \(args[i]) (see --help)")
                } else {
                    command = Array(args[i...])
                    i = args.count
                    continue
                }
            }
            i += 1
        }
        if !command.isEmpty { spec.command = command }
        guard !spec.mount.lowerDirs.isEmpty else {
            throw UsageError(message: "run needs -o lowerdir=...[,upperdir=...,workdir=...]")
        }
        return spec
    }

    static func parseBind(_ text: String) throws -> Bind {
        var parts = text.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
        var ro = false
        if parts.count == 3 {
            guard parts[2] == "ro" || parts[2] == "rw" else { throw UsageError(message: "--bind \(text): the third field must be ro or rw") }
            ro = parts[2] == "ro"
            parts.removeLast()
        }
        guard parts.count == 2, !parts[0].isEmpty, parts[1].hasPrefix("/") else {
            throw UsageError(message: "--bind needs SOURCE:/TARGET[:ro], not \(text)")
        }
        return Bind(source: parts[0], target: parts[1], readOnly: ro)
    }

    // MARK: P: namespaces

    /// nil on success, else the one line to print.
    static func enterNamespaces() -> String? {
        let uid = getuid(), gid = getgid()
        if geteuid() == 0 {
            if suf_unshare(SUF_CLONE_NEWNS) != 0 { return "cannot create a mount namespace: \(errorText())" }
        } else {
            let threads = countThreads()
            guard threads == 1 else { return "cannot create a user namespace: the process has \(threads) threads" }
            if suf_unshare(SUF_CLONE_NEWUSER | SUF_CLONE_NEWNS) != 0 {
                return "cannot create a user namespace: \(errorText()) (are unprivileged user namespaces disabled?)"
            }
            guard writeFile("/proc/self/setgroups", "deny"),
                  writeFile("/proc/self/uid_map", "0 \(uid) 1\n"),
                  writeFile("/proc/self/gid_map", "0 \(gid) 1\n") else {
                return "cannot map uid \(uid) to root in the user namespace: \(errorText())"
            }
        }
        if suf_mount(nil, "/", nil, UInt(MS_REC | MS_PRIVATE), nil) != 0 {
            return "cannot make the mount namespace private: \(errorText())"
        }
        return nil
    }

    static func countThreads() -> Int {
        guard let d = opendir("/proc/self/task") else { return -1 }
        defer { closedir(d) }
        var n = 0
        while let e = readdir(d) {
            if e.pointee.d_name.0 != UInt8(ascii: ".") { n += 1 }
        }
        return n
    }

    // MARK: P: the command and its signals

    /// Forks C, forwards signals to it, waits for it; its status (128+N for a signal).
    static func runCommand(_ spec: Spec, root: String, parent: pid_t) -> Int32 {
        if spec.pidNamespace && suf_unshare(SUF_CLONE_NEWPID) != 0 {
            fail("cannot create a PID namespace: \(errorText())")
            return setupStatus
        }
        // Hand the terminal to the command's process group, as a shell does with a job.
        let tty: Int32 = isatty(0) == 1 && tcgetpgrp(0) == getpgrp() ? 0 : -1

        var block = sigset_t(), old = sigset_t()
        sigemptyset(&block)
        for s in forwarded { sigaddset(&block, s) }
        sigprocmask(SIG_BLOCK, &block, &old)
        for s in forwarded {
            var sa = sigaction()
            sa.__sigaction_handler.sa_handler = { sig in
                let c = commandPID.pointee
                if c > 0 { kill(c, sig) }
            }
            sa.sa_flags = SA_RESTART
            sigaction(s, &sa, nil)
        }

        let child = suf_fork()
        if child == 0 {
            for s in forwarded + [SIGPIPE] { signal(s, SIG_DFL) }
            sigprocmask(SIG_SETMASK, &old, nil)
            _ = suf_prctl_pdeathsig(SIGKILL)
            if getppid() != parent && !spec.pidNamespace { _exit(setupStatus) }
            setpgid(0, 0)
            if tty >= 0 { giveTerminal(tty, to: getpgrp()) }
            containerMain(spec, root: root)  // never returns
        }
        if child < 0 {
            sigprocmask(SIG_SETMASK, &old, nil)
            fail("fork: \(errorText())")
            return setupStatus
        }
        commandPID.pointee = child
        setpgid(child, child)
        sigprocmask(SIG_SETMASK, &old, nil)

        var status: Int32 = 0
        while true {
            let r = waitpid(child, &status, WUNTRACED)
            if r < 0 {
                if errno == EINTR { continue }
                status = 0
                break
            }
            if wifstopped(status) {
                // ^Z in the command: stop ourselves too, so the shell sees the job stopped;
                // on `fg`, give the terminal back and wake the command.
                if tty >= 0 { giveTerminal(tty, to: getpgrp()) }
                kill(getpid(), SIGSTOP)
                if tty >= 0 { giveTerminal(tty, to: child) }
                kill(-child, SIGCONT)
                continue
            }
            break
        }
        commandPID.pointee = 0
        // What the command left behind in its process group goes with it (with --pid
        // the kernel already did this for the whole namespace).
        kill(-child, SIGKILL)
        if tty >= 0 { giveTerminal(tty, to: getpgrp()) }
        if wifexited(status) { return (status >> 8) & 0xff }
        return 128 + (status & 0x7f)
    }

    static func giveTerminal(_ fd: Int32, to pgrp: pid_t) {
        var set = sigset_t(), old = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, SIGTTOU)
        sigprocmask(SIG_BLOCK, &set, &old)
        tcsetpgrp(fd, pgrp)
        sigprocmask(SIG_SETMASK, &old, nil)
    }

    static func wifstopped(_ s: Int32) -> Bool { s & 0xff == 0x7f }
    static func wifexited(_ s: Int32) -> Bool { s & 0x7f == 0 }

    /// Waits up to `graceSeconds` for D to finish on its own, then kills it.
    static func reap(_ pid: pid_t, graceSeconds: Int) {
        var status: Int32 = 0
        for _ in 0..<(graceSeconds * 100) {
            let r = waitpid(pid, &status, WNOHANG)
            if r == pid || (r < 0 && errno != EINTR) { return }
            usleep(10_000)
        }
        fail("the daemon did not exit after the command; killed (processes left in the container?)")
        kill(pid, SIGKILL)
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    }

    // MARK: C: the container side

    static func containerMain(_ spec: Spec, root: String) -> Never {
        func die(_ message: String, _ status: Int32 = setupStatus) -> Never {
            fail(message)
            _exit(status)
        }
        let flags = SUF_CLONE_NEWNS | (spec.hostname != nil ? SUF_CLONE_NEWUTS : 0)
        if suf_unshare(flags) != 0 { die("cannot create the command's namespaces: \(errorText())") }
        if let h = spec.hostname, suf_sethostname(h, h.utf8.count) != 0 {
            die("cannot set the hostname: \(errorText())")
        }
        if let message = ContainerRoot(root: root).setUp(spec) { die(message) }

        // pivot_root(".", "."): the old root ends up stacked on the new one, and is detached.
        guard chdir(root) == 0 else { die("chdir \(root): \(errorText())") }
        guard suf_pivot_root(".", ".") == 0 else { die("pivot_root into the union: \(errorText())") }
        guard suf_umount2(".", Int32(MNT_DETACH)) == 0 else { die("cannot detach the old root: \(errorText())") }
        guard chdir("/") == 0 else { die("chdir /: \(errorText())") }
        if spec.workdir != "/" && chdir(spec.workdir) != 0 {
            die("--workdir \(spec.workdir): \(errorText())")
        }
        exec(spec)
    }

    static func environment(_ spec: Spec) -> [(String, String)] {
        var env: [(String, String)] = [
            ("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
            ("HOME", "/root"),
        ]
        if let t = getenv("TERM") { env.append(("TERM", String(cString: t))) }
        if let h = spec.hostname { env.append(("HOSTNAME", h)) }
        for (k, v) in spec.env {
            if let i = env.firstIndex(where: { $0.0 == k }) { env[i].1 = v } else { env.append((k, v)) }
        }
        return env
    }

    /// Execs the command with the clean environment, searching its PATH as a shell does.
    static func exec(_ spec: Spec) -> Never {
        let env = environment(spec)
        let name = spec.command[0]
        var candidates: [String]
        if name.contains("/") {
            candidates = [name]
        } else {
            let path = env.last { $0.0 == "PATH" }?.1 ?? ""
            candidates = path.split(separator: ":", omittingEmptySubsequences: false)
                .map { ($0.isEmpty ? "." : String($0)) + "/" + name }
        }
        var cargv = spec.command.map { strdup($0) } + [nil]
        var cenv = env.map { strdup("\($0.0)=\($0.1)") } + [nil]
        var firstError: Int32 = ENOENT
        for c in candidates where !name.isEmpty {
            execve(c, &cargv, &cenv)
            let e = errno
            if e != ENOENT && e != ENOTDIR && firstError == ENOENT { firstError = e }
        }
        if firstError == ENOENT {
            fail(name.contains("/") ? "\(name): no such file in the container" : "\(name): command not found in the container")
            _exit(notFound)
        }
        fail("\(name): \(String(cString: strerror(firstError)))")
        _exit(notExecutable)
    }

    static func errorText() -> String {
        let e = errno
        let name = suf_errname(e).map { String(cString: $0) }
        return String(cString: strerror(e)) + (name.map { " (\($0))" } ?? "")
    }

    static func writeFile(_ path: String, _ text: String) -> Bool {
        let fd = open(path, O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        return text.withCString { write(fd, $0, strlen($0)) } == text.utf8.count
    }
}

/// The command's pid for the signal handlers (0: none yet / gone).
nonisolated(unsafe) let commandPID: UnsafeMutablePointer<pid_t> = {
    let p = UnsafeMutablePointer<pid_t>.allocate(capacity: 1)
    p.initialize(to: 0)
    return p
}()

/// What C mounts inside the union before pivoting into it. Paths inside the
/// container are resolved with openat2(RESOLVE_IN_ROOT), so a symlink in the image
/// cannot point a mount at the host; mounts then target /proc/self/fd/N.
struct ContainerRoot {
    let root: String

    enum Kind { case directory, file }

    /// nil on success, else the one line to print.
    func setUp(_ spec: RunCommand.Spec) -> String? {
        let rootFD = suf_open_mode(root, O_PATH | O_DIRECTORY | O_CLOEXEC, 0)
        guard rootFD >= 0 else { return "open \(root): \(RunCommand.errorText())" }
        defer { close(rootFD) }
        do {
            // /proc: a new instance (the command's PID namespace's when --pid); where
            // that is not allowed (a user namespace without --pid), the host's, recursively.
            try withTarget(rootFD, "/proc", .directory) { t in
                if suf_mount("proc", t, "proc", UInt(MS_NOSUID | MS_NODEV | MS_NOEXEC), nil) != 0 {
                    try mount("/proc", t, nil, UInt(MS_BIND | MS_REC), nil, what: "/proc")
                }
            }
            // /dev: a small tmpfs with the host's harmless devices bound in.
            try withTarget(rootFD, "/dev", .directory) { t in
                try mount("tmpfs", t, "tmpfs", UInt(MS_NOSUID | MS_NOEXEC), "mode=755,size=65536k", what: "/dev")
            }
            let dev = root + "/dev"
            for name in ["null", "zero", "full", "random", "urandom", "tty"] {
                let fd = suf_open_mode(dev + "/" + name, O_WRONLY | O_CREAT | O_CLOEXEC, 0o666)
                guard fd >= 0 else { throw SetupError("create /dev/\(name): \(RunCommand.errorText())") }
                close(fd)
                try mount("/dev/" + name, dev + "/" + name, nil, UInt(MS_BIND), nil, what: "/dev/\(name)")
            }
            // The caller's terminal as /dev/console (as container runtimes do), so that
            // ttyname() finds it although /dev/pts is a new instance.
            if isatty(0) == 1, let name = ttyname(0) {
                let fd = suf_open_mode(dev + "/console", O_WRONLY | O_CREAT | O_CLOEXEC, 0o600)
                if fd >= 0 { close(fd) }
                _ = suf_mount(String(cString: name), dev + "/console", nil, UInt(MS_BIND), nil)
            }
            mkdir(dev + "/pts", 0o755)
            if suf_mount("devpts", dev + "/pts", "devpts", UInt(MS_NOSUID | MS_NOEXEC),
                         "newinstance,ptmxmode=0666,mode=0620,gid=5") != 0 {
                // gid 5 (tty) is not mapped in a user namespace
                try mount("devpts", dev + "/pts", "devpts", UInt(MS_NOSUID | MS_NOEXEC),
                          "newinstance,ptmxmode=0666,mode=0620", what: "/dev/pts")
            }
            symlink("pts/ptmx", dev + "/ptmx")
            mkdir(dev + "/shm", 0o1777)
            try mount("shm", dev + "/shm", "tmpfs", UInt(MS_NOSUID | MS_NODEV), "mode=1777", what: "/dev/shm")
            for (link, target) in [("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                                   ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")] {
                symlink(target, dev + "/" + link)
            }
            // /sys read-only where permitted; without it the command still runs.
            try? withTarget(rootFD, "/sys", .directory) { t in
                let ro = UInt(MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
                if suf_mount("sysfs", t, "sysfs", ro, nil) == 0 { return }
                guard suf_mount("/sys", t, nil, UInt(MS_BIND | MS_REC), nil) == 0 else { return }
                try withTarget(rootFD, "/sys", .directory) { t in  // again: now the bind mount's root
                    _ = suf_mount(nil, t, nil, UInt(MS_BIND | MS_REMOUNT | MS_RDONLY) | lockedFlags(t), nil)
                }
            }
            for b in spec.binds {
                var st = stat()
                guard stat(b.source, &st) == 0 else { throw SetupError("--bind \(b.source): \(RunCommand.errorText())") }
                let kind: Kind = st.st_mode & S_IFMT == S_IFDIR ? .directory : .file
                try withTarget(rootFD, b.target, kind) { t in
                    try mount(b.source, t, nil, UInt(MS_BIND | MS_REC), nil, what: "--bind \(b.source):\(b.target)")
                }
                if b.readOnly {
                    // Opened again: the descriptor from before names what the bind now covers.
                    try withTarget(rootFD, b.target, kind) { t in
                        try mount(nil, t, nil, UInt(MS_BIND | MS_REMOUNT | MS_RDONLY) | lockedFlags(t), nil,
                                  what: "--bind \(b.target) read-only")
                    }
                }
            }
        } catch let e as SetupError {
            return e.message
        } catch {
            return "\(error)"
        }
        return nil
    }

    struct SetupError: Error {
        let message: String
        init(_ m: String) { message = m }
    }

    func mount(_ source: String?, _ target: String, _ type: String?, _ flags: UInt, _ data: String?, what: String) throws {
        if suf_mount(source, target, type, flags, data) != 0 {
            throw SetupError("cannot mount \(what) in the container: \(RunCommand.errorText())")
        }
    }

    /// nosuid/nodev/noexec and atime flags of a mount: a remount in a user namespace
    /// must keep them (the kernel locks them), so they are passed along.
    func lockedFlags(_ target: String) -> UInt {
        var sv = statvfs()
        guard statvfs(target, &sv) == 0 else { return 0 }
        let keep = UInt(MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_NOATIME | MS_NODIRATIME | MS_RELATIME)  // ST_* has the same bits
        return UInt(sv.f_flag) & keep
    }

    /// Opens `path` inside the container (resolved as if the union were /), creating
    /// what is missing (directories, and the last part as `kind`), and runs `body`
    /// with a path naming it: /proc/self/fd/N.
    func withTarget(_ rootFD: Int32, _ path: String, _ kind: Kind, _ body: (String) throws -> Void) throws {
        let parts = path.split(separator: "/").map(String.init).filter { $0 != "." }
        guard !parts.isEmpty, !parts.contains("..") else { throw SetupError("\(path): not a usable mount target") }
        var parent = Int32(dup(rootFD))
        defer { close(parent) }
        for (i, name) in parts.enumerated() {
            let last = i == parts.count - 1
            let sofar = parts[0...i].joined(separator: "/")
            var fd = suf_openat2(rootFD, sofar, UInt64(O_PATH | O_CLOEXEC), 0, UInt64(RESOLVE_IN_ROOT))
            if fd < 0 && errno == ENOENT {
                // Missing: create it in the union (which writes it to upper).
                if last && kind == .file {
                    let f = suf_openat_mode(parent, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
                    if f >= 0 { close(f) }
                } else {
                    mkdirat(parent, name, 0o755)
                }
                fd = suf_openat2(rootFD, sofar, UInt64(O_PATH | O_CLOEXEC), 0, UInt64(RESOLVE_IN_ROOT))
            }
            guard fd >= 0 else { throw SetupError("cannot create \(path) in the container: \(RunCommand.errorText())") }
            close(parent)
            parent = fd
        }
        try body("/proc/self/fd/\(parent)")
    }
}
