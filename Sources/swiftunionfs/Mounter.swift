import CFuse
import FuseBridge
import Glibc
import MountOptions
import UnionCore

/// Builds the union, its observers and the session from a checked command line.
enum Mounter {
    static func makeUnion(_ cmd: MountCommand, events: EventSink) throws -> Union {
        var config = UnionConfig(lowerDirs: cmd.lowerDirs.map(legacyPath), upperDir: cmd.upperDir.map(legacyPath),
                                 workDir: cmd.workDir.map(legacyPath))
        config.skipSync = cmd.skipSync
        config.uidMap = cmd.uidMap
        config.gidMap = cmd.gidMap
        config.squashUID = cmd.squashToUID ?? (cmd.squashToRoot ? 0 : nil)
        config.squashGID = cmd.squashToGID ?? (cmd.squashToRoot ? 0 : nil)
        config.noXattrs = cmd.noXattrs
        config.staticNlink = cmd.staticNlink
        if cmd.whiteout != nil || cmd.xattrNamespace != nil {
            config.markerFormat = MarkerFormat(whiteout: cmd.whiteout ?? .device,
                                               xattrNamespace: cmd.xattrNamespace?.rawValue ?? (geteuid() == 0 ? "trusted" : "user"))
        }
        do {
            return try Union(config: config, events: events)
        } catch let e as Errno where e.rawValue == EBUSY {
            throw UsageError(message: "upperdir/workdir \(config.workDir ?? "") is already in use by another mount")
        } catch let e as Errno where e.rawValue == EINVAL && cmd.workDir != nil {
            throw UsageError(message: "workdir \(config.workDir!) holds work/incompat/volatile from a volatile kernel overlay mount: the upper may be inconsistent; remove workdir/work to use it anyway")
        } catch let e as Errno where e.rawValue == EOPNOTSUPP {
            throw UsageError(message: "upperdir \(config.upperDir ?? "") is on a filesystem without trusted.* or user.* xattrs: opaque directories cannot be recorded")
        } catch let e as Errno {
            throw UsageError(message: "cannot open the layers: \(e)")
        }
    }

    static func makeTracer(_ cmd: MountCommand) throws -> Tracer? {
        guard let target = cmd.trace else { return nil }
        var ops: Set<Op>?
        if let names = cmd.traceOps {
            ops = []
            for n in names {
                guard let op = Op.named(n) else { throw UsageError(message: "trace_ops: unknown operation \(n)") }
                ops!.insert(op)
            }
        }
        var fd = STDERR_FILENO
        if case .file(let bytes) = target {
            let file = legacyPath(bytes)
            fd = suf_open_mode(file, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
            guard fd >= 0 else { throw UsageError(message: "trace file \(file): \(String(cString: strerror(errno)))") }
        }
        return Tracer(fd: fd, format: Tracer.Format(rawValue: cmd.traceFormat.rawValue)!, ops: ops,
                      pathPrefix: cmd.tracePath.map(legacyPath), enabled: true)
    }

    /// The directory-descriptor cache holds up to 4096 fds: lift the soft limit to the hard one.
    static func raiseOpenFileLimit() {
        var lim = rlimit()
        guard getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &lim) == 0, lim.rlim_cur < lim.rlim_max else { return }
        lim.rlim_cur = lim.rlim_max
        _ = setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &lim)
    }

    static func fuseOptions(_ cmd: MountCommand) -> [String] {
        var opts = cmd.fuseOptions.map(legacyPath)
        if !opts.contains(where: { $0.hasPrefix("fsname=") }) {
            opts.append("fsname=" + (cmd.source.map(legacyPath) ?? "swiftunionfs").replacingOccurrences(",", "_"))
        }
        if !opts.contains(where: { $0.hasPrefix("subtype=") }) { opts.append("subtype=swiftunionfs") }
        // The kernel checks permissions against the attributes we report, as it does
        // for its own overlay; without this every caller would act as the daemon.
        if !opts.contains("default_permissions") { opts.append("default_permissions") }
        // A union is a shared view (container processes run as many users): visible to all, as overlayfs is.
        if geteuid() == 0 && !opts.contains("allow_other") { opts.append("allow_other") }
        // The kernel's overlay honours set-id bits and device nodes of its layers; a
        // container root needs both. Root only: FUSE forces nosuid,nodev for users anyway.
        if geteuid() == 0 {
            if !opts.contains("nosuid") && !opts.contains("suid") { opts.append("suid") }
            if !opts.contains("nodev") && !opts.contains("dev") { opts.append("dev") }
        }
        return opts
    }

    static func mount(_ cmd: MountCommand) throws -> Int32 {
        umask(0)  // modes given by callers arrive with their umask applied already
        raiseOpenFileLimit()
        let tracer = try makeTracer(cmd)
        let stats = Statistics()
        let union = try makeUnion(cmd, events: Observers(tracer: tracer, stats: stats))
        if let upper = union.upper, union.format.whiteout == .ociFile, cmd.whiteout == nil {
            fail("note: \(upper.path) refuses 0/0 device nodes; whiteouts are written as .wh.NAME files")
        }
        let describe = "layers: " + union.layers.map { "\($0.label)=\($0.path)" }.joined(separator: " ")
            + (union.isReadOnly ? " (read-only)" : "; markers: \(union.format)")
        tracer?.note(describe)
        if cmd.verbose { fail(describe) }
        let bridge = Bridge(union: union, timeout: cmd.timeout, tracer: tracer, stats: stats)
        var opts = Session.Options(mountpoint: legacyPath(cmd.mountpoint!), fuseOptions: fuseOptions(cmd))
        opts.foreground = cmd.foreground
        opts.debug = cmd.debug
        opts.singleThreaded = cmd.singleThreaded
        opts.statsFile = cmd.statsFile.map(legacyPath)
        return Session(bridge: bridge, options: opts).run()
    }
}

extension String {
    func replacingOccurrences(_ a: Character, _ b: Character) -> String { String(map { $0 == a ? b : $0 }) }
}
