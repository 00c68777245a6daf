import CLinux
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
    /// Every path, name and argument is bytes, passed to the kernel as given.
    struct Bind { var source: [UInt8]; var target: [UInt8]; var readOnly: Bool }

    struct Spec {
        var mount = MountCommand()
        var hostname: [UInt8]?
        var pidNamespace = false
        var binds: [Bind] = []
        var workdir: [UInt8] = [UInt8(ascii: "/")]
        var env: [([UInt8], [UInt8])] = []
        var command: [[UInt8]] = [Array("/bin/sh".utf8)]
    }

    /// Exit statuses of `run` itself (the command's own status is passed through).
    static let usageStatus: Int32 = 2        // bad command line, missing layers
    static let setupStatus: Int32 = 125      // namespaces, mounts, pivot_root failed
    static let notExecutable: Int32 = 126
    static let notFound: Int32 = 127

    static let forwarded: [Int32] = [SIGINT, SIGTERM, SIGHUP, SIGQUIT]

    static func main(_ args: [[UInt8]]) -> Int32 {
        var spec: Spec
        do { spec = try parse(args) } catch {
            fail(error.message)
            return usageStatus
        }

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
        let root = Bytes.fromCString(made)
        defer { try? Sys.removeDirectoryPath(root) }
        spec.mount.mountpoint = root

        let session: Session
        let se: OpaquePointer
        do {
            try Validation.check(&spec.mount)
            for i in spec.binds.indices {
                spec.binds[i].source = try Validation.absolute(spec.binds[i].source)
            }
            var plan = Mounter.plan(spec.mount, mountpoint: root)
            plan.session.foreground = false  // statistics only to stats=FILE, not on every exit
            do { session = try Daemon.make(plan) } catch { throw UsageError(message: error.message) }
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
            try? Sys.unmount(root, flags: Int32(MNT_DETACH))
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
        Session.closeConnection(in: se)

        let status = runCommand(spec, root: root, parent: parent)

        // 5. The end: detach the union here (C's namespace died with C); the
        // connection ends with the last reference, and D's loop with it.
        try? Sys.unmount(root, flags: Int32(MNT_DETACH))
        reap(daemon, graceSeconds: 5)
        return status
    }

    // MARK: command line

    static func parse(_ args: [[UInt8]]) throws(UsageError) -> Spec {
        var spec = Spec()
        var i = 0
        func text(_ b: [UInt8]) -> String { Printable.text(b) }
        func value(_ flag: [UInt8]) throws(UsageError) -> [UInt8] {
            i += 1
            guard i < args.count else { throw UsageError(message: "\(text(flag)) needs a value") }
            return args[i]
        }
        var command: [[UInt8]] = []
        let equals = UInt8(ascii: "="), dash = UInt8(ascii: "-")
        while i < args.count {
            var a = args[i]
            var inline: [UInt8]?
            if a.starts(with: [dash, dash]), let eq = a.firstIndex(of: equals) {
                inline = Array(a[(eq + 1)...])
                a = Array(a[..<eq])
            }
            func arg() throws(UsageError) -> [UInt8] { if let inline { return inline }; return try value(a) }
            func isFlag(_ names: String...) -> Bool { names.contains { a.elementsEqual($0.utf8) } }
            if isFlag("--") {
                command = Array(args[(i + 1)...])
                break
            } else if isFlag("-o") {
                try spec.mount.apply(optionList: try value(a))
            } else if isFlag("--hostname") {
                let h = try arg()
                guard !h.isEmpty, h.count <= 64 else { throw UsageError(message: "--hostname must be 1 to 64 bytes") }
                spec.hostname = h
            } else if isFlag("--pid") {
                spec.pidNamespace = true
            } else if isFlag("--bind") {
                spec.binds.append(try parseBind(try arg()))
            } else if isFlag("--workdir", "-w") {
                let w = try arg()
                spec.workdir = w.first == UInt8(ascii: "/") ? w : [UInt8(ascii: "/")] + w
            } else if isFlag("--env", "-e") {
                let kv = try arg()
                if let eq = kv.firstIndex(of: equals) {
                    guard eq > 0 else { throw UsageError(message: "--env needs NAME=VALUE, not \(text(kv))") }
                    spec.env.append((Array(kv[..<eq]), Array(kv[(eq + 1)...])))
                } else if let v = Bytes.withCString(kv, { getenv($0) }) {
                    spec.env.append((kv, Bytes.fromCString(v)))  // --env NAME: the caller's value
                }
            } else if inline == nil, try spec.mount.apply(flag: a) {
                // -d, -s, -v: the mount's own flags
            } else if a.starts(with: Array("-o".utf8)) && a.count > 2 && inline == nil {
                try spec.mount.apply(optionList: Array(a.dropFirst(2)))
            } else if a.first == dash {
                throw UsageError(message: "run: unknown flag \(text(args[i])) (see --help)")
            } else {
                command = Array(args[i...])
                break
            }
            i += 1
        }
        if !command.isEmpty { spec.command = command }
        guard !spec.mount.lowerDirs.isEmpty else {
            throw UsageError(message: "run needs -o lowerdir=...[,upperdir=...,workdir=...]")
        }
        return spec
    }

    static func parseBind(_ bytes: [UInt8]) throws(UsageError) -> Bind {
        var parts = bytes.split(separator: UInt8(ascii: ":"), omittingEmptySubsequences: false).map(Array.init)
        var ro = false
        let text = Printable.text(bytes)
        if parts.count == 3 {
            guard parts[2].elementsEqual("ro".utf8) || parts[2].elementsEqual("rw".utf8) else {
                throw UsageError(message: "--bind \(text): the third field must be ro or rw")
            }
            ro = parts[2].elementsEqual("ro".utf8)
            parts.removeLast()
        }
        guard parts.count == 2, !parts[0].isEmpty, parts[1].first == UInt8(ascii: "/") else {
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
    static func runCommand(_ spec: Spec, root: [UInt8], parent: pid_t) -> Int32 {
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

    static func containerMain(_ spec: Spec, root: [UInt8]) -> Never {
        func die(_ message: String, _ status: Int32 = setupStatus) -> Never {
            fail(message)
            _exit(status)
        }
        func step(_ what: String, _ call: () throws(Errno) -> Void) {
            do { try call() } catch { die("\(what): \(error.message) (\(error.name))") }
        }
        step("cannot create the command's namespaces") { () throws(Errno) in
            try Sys.unshare(SUF_CLONE_NEWNS | (spec.hostname != nil ? SUF_CLONE_NEWUTS : 0))
        }
        if let h = spec.hostname { step("cannot set the hostname") { () throws(Errno) in try Sys.sethostname(h) } }
        if let message = ContainerRoot(root: root).setUp(spec) { die(message) }

        // pivot_root(".", "."): the old root ends up stacked on the new one, and is detached.
        let dot = [UInt8(ascii: ".")], slash = [UInt8(ascii: "/")]
        step("chdir \(Printable.text(root))") { () throws(Errno) in try Sys.chdir(root) }
        step("pivot_root into the union") { () throws(Errno) in try Sys.pivotRoot(dot, dot) }
        step("cannot detach the old root") { () throws(Errno) in try Sys.unmount(dot, flags: Int32(MNT_DETACH)) }
        step("chdir /") { () throws(Errno) in try Sys.chdir(slash) }
        if spec.workdir != slash {
            step("--workdir \(Printable.text(spec.workdir))") { () throws(Errno) in try Sys.chdir(spec.workdir) }
        }
        exec(spec)
    }

    static func environment(_ spec: Spec) -> [([UInt8], [UInt8])] {
        func b(_ s: String) -> [UInt8] { Array(s.utf8) }
        var env: [([UInt8], [UInt8])] = [
            (b("PATH"), b("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")),
            (b("HOME"), b("/root")),
        ]
        if let t = getenv("TERM") { env.append((b("TERM"), Bytes.fromCString(t))) }
        if let h = spec.hostname { env.append((b("HOSTNAME"), h)) }
        for (k, v) in spec.env {
            if let i = env.firstIndex(where: { $0.0 == k }) { env[i].1 = v } else { env.append((k, v)) }
        }
        return env
    }

    /// Execs the command with the clean environment, searching its PATH as a shell does.
    static func exec(_ spec: Spec) -> Never {
        let env = environment(spec)
        let name = spec.command[0]
        let slash = UInt8(ascii: "/")
        var candidates: [[UInt8]]
        if name.contains(slash) {
            candidates = [name]
        } else {
            let path = env.last { $0.0.elementsEqual("PATH".utf8) }?.1 ?? []
            candidates = path.split(separator: UInt8(ascii: ":"), omittingEmptySubsequences: false)
                .map { ($0.isEmpty ? [UInt8(ascii: ".")] : Array($0)) + [slash] + name }
        }
        let envList = env.map { $0.0 + [UInt8(ascii: "=")] + $0.1 }
        var firstError: Int32 = ENOENT
        for c in candidates where !name.isEmpty {
            let e = Sys.execve(c, spec.command, envList).rawValue
            if e != ENOENT && e != ENOTDIR && firstError == ENOENT { firstError = e }
        }
        let shown = Printable.text(name)
        if firstError == ENOENT {
            fail(name.contains(slash) ? "\(shown): no such file in the container" : "\(shown): command not found in the container")
            _exit(notFound)
        }
        fail("\(shown): \(Errno(firstError).message)")
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
    let root: [UInt8]

    enum Kind { case directory, file }

    struct SetupError: Error {
        let message: String
        init(_ m: String) { message = m }
    }

    static func b(_ s: String) -> [UInt8] { Array(s.utf8) }

    /// nil on success, else the one line to print.
    func setUp(_ spec: RunCommand.Spec) -> String? {
        let b = Self.b
        let rootFD: Int32
        do { rootFD = try Sys.openPath(root, O_PATH | O_DIRECTORY) } catch {
            return "open \(Printable.text(root)): \(error.message)"
        }
        defer { Sys.close(rootFD) }
        do throws(SetupError) {
            // /proc: a new instance (the command's PID namespace's when --pid); where
            // that is not allowed (a user namespace without --pid), the host's, recursively.
            try withTarget(rootFD, b("/proc"), .directory) { (t: [UInt8]) throws(SetupError) in
                if (try? Sys.mount(b("proc"), t, "proc", UInt(MS_NOSUID | MS_NODEV | MS_NOEXEC), nil)) == nil {
                    try mount(b("/proc"), t, nil, UInt(MS_BIND | MS_REC), nil, what: "/proc")
                }
            }
            // /dev: a small tmpfs with the host's harmless devices bound in.
            try withTarget(rootFD, b("/dev"), .directory) { (t: [UInt8]) throws(SetupError) in
                try mount(b("tmpfs"), t, "tmpfs", UInt(MS_NOSUID | MS_NOEXEC), "mode=755,size=65536k", what: "/dev")
            }
            let dev = root + b("/dev")
            func inDev(_ n: String) -> [UInt8] { dev + b("/" + n) }
            for name in ["null", "zero", "full", "random", "urandom", "tty"] {
                do { Sys.close(try Sys.openPath(inDev(name), O_WRONLY | O_CREAT, mode: 0o666)) } catch {
                    throw SetupError("create /dev/\(name): \(error.message)")
                }
                try mount(b("/dev/" + name), inDev(name), nil, UInt(MS_BIND), nil, what: "/dev/\(name)")
            }
            // The caller's terminal as /dev/console (as container runtimes do), so that
            // ttyname() finds it although /dev/pts is a new instance.
            if isatty(0) == 1, let name = ttyname(0) {
                if let fd = try? Sys.openPath(inDev("console"), O_WRONLY | O_CREAT, mode: 0o600) { Sys.close(fd) }
                try? Sys.mount(Bytes.fromCString(name), inDev("console"), nil, UInt(MS_BIND), nil)
            }
            try? Sys.mkdirPath(inDev("pts"), 0o755)
            if (try? Sys.mount(b("devpts"), inDev("pts"), "devpts", UInt(MS_NOSUID | MS_NOEXEC),
                               "newinstance,ptmxmode=0666,mode=0620,gid=5")) == nil {
                // gid 5 (tty) is not mapped in a user namespace
                try mount(b("devpts"), inDev("pts"), "devpts", UInt(MS_NOSUID | MS_NOEXEC),
                          "newinstance,ptmxmode=0666,mode=0620", what: "/dev/pts")
            }
            try? Sys.symlinkPath(b("pts/ptmx"), inDev("ptmx"))
            try? Sys.mkdirPath(inDev("shm"), 0o1777)
            try mount(b("shm"), inDev("shm"), "tmpfs", UInt(MS_NOSUID | MS_NODEV), "mode=1777", what: "/dev/shm")
            for (link, target) in [("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                                   ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")] {
                try? Sys.symlinkPath(b(target), inDev(link))
            }
            // /sys read-only where permitted; without it the command still runs.
            try? withTarget(rootFD, b("/sys"), .directory) { (t: [UInt8]) throws(SetupError) in
                let ro = UInt(MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
                if (try? Sys.mount(b("sysfs"), t, "sysfs", ro, nil)) != nil { return }
                guard (try? Sys.mount(b("/sys"), t, nil, UInt(MS_BIND | MS_REC), nil)) != nil else { return }
                try withTarget(rootFD, b("/sys"), .directory) { (t: [UInt8]) throws(SetupError) in  // again: now the bind mount's root
                    try? Sys.mount(nil, t, nil, UInt(MS_BIND | MS_REMOUNT | MS_RDONLY) | lockedFlags(t), nil)
                }
            }
            for bind in spec.binds {
                let what = "--bind \(Printable.text(bind.source)):\(Printable.text(bind.target))"
                let st: stat
                do { st = try Sys.statPath(bind.source) } catch { throw SetupError("\(what): \(error.message)") }
                let kind: Kind = st.st_mode & S_IFMT == S_IFDIR ? .directory : .file
                try withTarget(rootFD, bind.target, kind) { (t: [UInt8]) throws(SetupError) in
                    try mount(bind.source, t, nil, UInt(MS_BIND | MS_REC), nil, what: what)
                }
                if bind.readOnly {
                    // Opened again: the descriptor from before names what the bind now covers.
                    try withTarget(rootFD, bind.target, kind) { (t: [UInt8]) throws(SetupError) in
                        try mount(nil, t, nil, UInt(MS_BIND | MS_REMOUNT | MS_RDONLY) | lockedFlags(t), nil,
                                  what: "\(what) read-only")
                    }
                }
            }
        } catch {
            return error.message
        }
        return nil
    }

    func mount(_ source: [UInt8]?, _ target: [UInt8], _ type: String?, _ flags: UInt, _ data: String?, what: String) throws(SetupError) {
        do { try Sys.mount(source, target, type, flags, data) } catch {
            throw SetupError("cannot mount \(what) in the container: \(error.message) (\(error.name))")
        }
    }

    /// nosuid/nodev/noexec and atime flags of a mount: a remount in a user namespace
    /// must keep them (the kernel locks them), so they are passed along.
    func lockedFlags(_ target: [UInt8]) -> UInt {
        guard let sv = try? Sys.statvfsPath(target) else { return 0 }
        let keep = UInt(MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_NOATIME | MS_NODIRATIME | MS_RELATIME)  // ST_* has the same bits
        return UInt(sv.f_flag) & keep
    }

    /// Opens `path` inside the container (resolved as if the union were /, so a symlink in
    /// the image cannot point a mount at the host), creating what is missing (directories,
    /// and the last part as `kind`), and runs `body` with a path naming it: /proc/self/fd/N.
    func withTarget(_ rootFD: Int32, _ path: [UInt8], _ kind: Kind, _ body: ([UInt8]) throws(SetupError) -> Void) throws(SetupError) {
        let parts = Bytes.components(path).filter { $0 != .dot }
        let shown = Printable.text(path)
        guard !parts.isEmpty, !parts.contains(.dotDot) else { throw SetupError("\(shown): not a usable mount target") }
        var parent: Int32
        do { parent = try Sys.dup(rootFD) } catch { throw SetupError("\(shown): \(error.message)") }
        defer { Sys.close(parent) }
        for (i, name) in parts.enumerated() {
            let last = i == parts.count - 1
            let sofar = Bytes.join(Array(parts[0...i]))
            let fd: Int32
            do {
                if let found = try ifPresent({ () throws(Errno) -> Int32 in try Sys.openInRoot(rootFD, sofar, O_PATH) }) {
                    fd = found
                } else {
                    // Missing: create it in the union (which writes it to upper).
                    if last && kind == .file {
                        if let f = try? Sys.openAt(parent, name, O_WRONLY | O_CREAT | O_EXCL, mode: 0o644) { Sys.close(f) }
                    } else {
                        try? Sys.mkdir(parent, name, 0o755)
                    }
                    fd = try Sys.openInRoot(rootFD, sofar, O_PATH)
                }
            } catch {
                throw SetupError("cannot create \(shown) in the container: \(error.message)")
            }
            Sys.close(parent)
            parent = fd
        }
        try body(Sys.procPath(parent))
    }
}
