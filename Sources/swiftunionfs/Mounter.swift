import FuseBridge
import Glibc
import UnionCore

/// Turns a checked command line into the daemon's plan; `Daemon.make` builds it.
enum Mounter {
    static func config(_ cmd: MountCommand) -> UnionConfig {
        var config = UnionConfig(lowerDirs: cmd.lowerDirs.map(pathBytes), upperDir: cmd.upperDir.map(pathBytes),
                                 workDir: cmd.workDir.map(pathBytes))
        config.skipSync = cmd.skipSync
        config.uidMap = cmd.uidMap
        config.gidMap = cmd.gidMap
        config.squashUID = cmd.squashToUID ?? (cmd.squashToRoot ? 0 : nil)
        config.squashGID = cmd.squashToGID ?? (cmd.squashToRoot ? 0 : nil)
        config.noXattrs = cmd.noXattrs
        config.staticNlink = cmd.staticNlink
        if cmd.whiteout != nil || cmd.xattrNamespace != nil {
            let ns = cmd.xattrNamespace.flatMap(MarkerFormat.Namespace.init(rawValue:)) ?? (geteuid() == 0 ? .trusted : .user)
            config.markerFormat = MarkerFormat(whiteout: cmd.whiteout ?? .device, xattrNamespace: ns)
        }
        return config
    }

    static func plan(_ cmd: MountCommand, mountpoint: [UInt8]) -> DaemonPlan {
        var session = Session.Options(mountpoint: mountpoint, fuseOptions: fuseOptions(cmd))
        session.foreground = cmd.foreground
        session.debug = cmd.debug
        session.singleThreaded = cmd.singleThreaded
        session.statsFile = cmd.statsFile.map(pathBytes)
        var plan = DaemonPlan(config: config(cmd), session: session)
        plan.timeout = cmd.timeout
        if let target = cmd.trace {
            var t = DaemonPlan.Trace(file: target.isEmpty ? nil : pathBytes(target))
            t.format = Tracer.Format(rawValue: cmd.traceFormat) ?? .text
            t.ops = cmd.traceOps
            t.pathPrefix = cmd.tracePath.map(pathBytes)
            plan.trace = t
        }
        plan.verbose = cmd.verbose
        plan.whiteoutChosen = cmd.whiteout != nil
        return plan
    }

    static func fuseOptions(_ cmd: MountCommand) -> [String] {
        var opts = cmd.fuseOptions
        if !opts.contains(where: { $0.hasPrefix("fsname=") }) {
            opts.append("fsname=" + (cmd.source ?? "swiftunionfs").replacingOccurrences(",", "_"))
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
            if !opts.contains("dev") && !opts.contains("nodev") { opts.append("dev") }
        }
        return opts
    }

    static func mount(_ cmd: MountCommand) throws -> Int32 {
        umask(0)  // modes given by callers arrive with their umask applied already
        let session: Session
        do {
            session = try Daemon.make(plan(cmd, mountpoint: pathBytes(cmd.mountpoint!)))
        } catch {
            throw UsageError(message: error.message)
        }
        return session.run()
    }
}

/// A path from the command line as the bytes the kernel is given.
func pathBytes(_ s: String) -> [UInt8] { Array(s.utf8) }

extension String {
    func replacingOccurrences(_ a: Character, _ b: Character) -> String { String(map { $0 == a ? b : $0 }) }
}
