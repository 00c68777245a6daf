import CLinux
import Glibc
import UnionCore

/// Everything a mount needs, from the command line: the mount and `run` both build
/// their daemon from one of these, through `Daemon.make`, so they cannot drift.
public struct DaemonPlan: Sendable {
    public struct Trace: Sendable {
        /// nil: stderr.
        public var file: [UInt8]?
        public var format: Tracer.Format = .text
        public var ops: [String]?
        public var pathPrefix: [UInt8]?
        public init(file: [UInt8]?) { self.file = file }
    }
    public enum Log: Sendable, Equatable { case syslog, stderr, file([UInt8]) }

    public var config: UnionConfig
    public var session: Session.Options
    public var timeout: Double = 3600
    /// Ask the kernel for its writeback cache (`writeback=1`).
    public var writeback = false
    /// POSIX ACLs checked by the kernel (off with `noacl`).
    public var posixACL = true
    public var trace: Trace?
    public var log: Log?
    public var verbose = false
    /// Whether the user chose the whiteout format (no note when it is not the kernel's).
    public var whiteoutChosen = false
    /// FUSE passthrough of file data (Passthrough.swift).
    public var passthrough: Passthrough.Request = .auto

    public init(config: UnionConfig, session: Session.Options) {
        self.config = config
        self.session = session
    }
}

/// A setup failure, as one line for the user.
public struct SetupError: Error {
    public let message: String
    public init(_ message: String) { self.message = message }
}

public enum Daemon {
    /// The descriptor caches hold up to 4096 fds and clients may hold as many open files:
    /// lift the soft open-file limit to the hard one.
    static func raiseOpenFileLimit(_ log: DaemonLog) {
        guard let (soft, hard) = try? Sys.openFileLimits(), soft < hard else { return }
        do { try Sys.setOpenFileSoftLimit(hard) } catch {
            log.report("cannot raise the open-file limit from \(soft) to \(hard): \(error)")
        }
    }

    /// Builds the log, tracer, statistics, union, bridge and session of a plan.
    public static func make(_ plan: DaemonPlan) throws(SetupError) -> Session {
        let log = try makeLog(plan.log)
        raiseOpenFileLimit(log)
        let tracer = try makeTracer(plan.trace)
        let stats = Statistics()
        let union = try makeUnion(plan.config, events: Observers(tracer: tracer, stats: stats), log: log)
        if let upper = union.upper, union.format.whiteout == .ociFile, !plan.whiteoutChosen {
            fail("note: \(upper.displayPath) refuses 0/0 device nodes; whiteouts are written as .wh.NAME files")
        }
        let mechanism: LowerWatch.Mechanism?
        do { mechanism = try union.startWatching() } catch { throw SetupError(error.message) }
        let describe = "layers: " + union.layers.map { "\($0.label)=\($0.displayPath)" }.joined(separator: " ")
            + (union.isReadOnly ? " (read-only)" : "; markers: \(union.format)")
            + "; watch: " + describeWatch(mechanism, timeout: plan.timeout)
            + "; features: \(union.featureSummary)"
            + "; passthrough: " + describePassthrough(plan.passthrough, readOnly: union.isReadOnly)
        tracer?.note(describe)
        if plan.verbose { fail(describe) }
        let bridge = Bridge(union: union, timeout: plan.timeout, writeback: plan.writeback, tracer: tracer, stats: stats, log: log,
                            posixACL: plan.posixACL, passthrough: plan.passthrough)
        return Session(bridge: bridge, options: plan.session)
    }

    /// The lower-edit watch in force, as `-v`, the trace header and `inspect` name it.
    public static func describeWatch(_ m: LowerWatch.Mechanism?, timeout: Double) -> String {
        switch m {
        case nil: return "off (edits to the lower layers while mounted may stay unseen for timeout=\(Text.seconds(timeout)) s)"
        case .fanotify: return "fanotify (lower edits shown within 1 s)"
        case .inotify(let limit): return "inotify (lower edits shown within 1 s; up to \(limit) watched directories, then \(LowerWatch.revalidateSeconds) s timeouts)"
        case .timeouts(let why): return "timeouts (no notification: \(why); names and attributes revalidated every \(LowerWatch.revalidateSeconds) s)"
        }
    }

    /// The passthrough request as far as it is known before INIT (the kernel answers there).
    public static func describePassthrough(_ r: Passthrough.Request, readOnly: Bool) -> String {
        if r == .off { return "off" }
        if !Passthrough.built { return "off (built with libfuse \(Passthrough.libfuseVersion); passthrough needs 3.16+)" }
        if geteuid() != 0 { return "off (needs root)" }
        return "\(r.rawValue) (libfuse \(Passthrough.libfuseVersion); " + (readOnly ? "every file" : "files in the upper layer") + ", if the kernel offers it)"
    }

    static func makeLog(_ target: DaemonPlan.Log?) throws(SetupError) -> DaemonLog {
        switch target {
        case nil: return DaemonLog(destination: nil)
        case .syslog: return DaemonLog(destination: .syslog)
        case .stderr: return DaemonLog(destination: .stderr)
        case .file(let path):
            do { return DaemonLog(destination: .file(try Sys.openPath(path, O_WRONLY | O_CREAT | O_APPEND, mode: 0o644))) } catch {
                throw SetupError("log file \(Bytes.display(path)): \(error)")
            }
        }
    }

    static func makeTracer(_ t: DaemonPlan.Trace?) throws(SetupError) -> Tracer? {
        guard let t else { return nil }
        var ops: Set<Op>?
        if let names = t.ops {
            ops = []
            for n in names {
                guard let op = Op.named(n) else { throw SetupError("trace_ops: unknown operation \(n)") }
                ops!.insert(op)
            }
        }
        var fd = STDERR_FILENO
        if let file = t.file {
            do { fd = try Sys.openPath(file, O_WRONLY | O_CREAT | O_APPEND, mode: 0o644) } catch {
                throw SetupError("trace file \(Bytes.display(file)): \(error)")
            }
        }
        return Tracer(fd: fd, format: t.format, ops: ops, pathPrefix: t.pathPrefix, enabled: true)
    }

    static func makeUnion(_ config: UnionConfig, events: EventSink, log: DaemonLog) throws(SetupError) -> Union {
        do {
            return try Union(config: config, events: events, diagnostics: log)
        } catch {
            throw SetupError(describe(error, config))
        }
    }

    /// What a failure to open the layers means, in the user's terms.
    public static func describe(_ e: Errno, _ config: UnionConfig) -> String {
        let work = config.workDir.map(Bytes.display) ?? ""
        switch e.rawValue {
        case EBUSY:
            return "upperdir/workdir \(work) is already in use by another mount"
        case EINVAL where config.workDir != nil:
            return "workdir \(work) holds work/incompat/volatile from a volatile kernel overlay mount: the upper may be inconsistent; remove workdir/work to use it anyway"
        case ESTALE where config.index:
            // InodeIndex.refused: the kernel's ovl_get_indexdir checks, in one line.
            return "index=on: upperdir \(config.upperDir.map(Bytes.display) ?? "") or workdir \(work)/index was used with other layers (the kernel: \"failed to verify upper root origin\" or \"failed to verify index dir 'upper' xattr\"), or a layer's filesystem has no file handles; try deleting the index dir or mounting with '-o index=off'"
        case EOPNOTSUPP:
            return "upperdir \(config.upperDir.map(Bytes.display) ?? "") is on a filesystem without trusted.* or user.* xattrs: opaque directories cannot be recorded"
        default:
            return "cannot open the layers: \(e)"
        }
    }
}
