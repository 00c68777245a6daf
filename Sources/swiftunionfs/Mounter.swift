import FuseBridge
import Glibc
import MountOptions
import UnionCore

/// Turns a checked command line into the daemon's plan; `Daemon.make` builds it.
enum Mounter {
    static func config(_ cmd: MountCommand) -> UnionConfig {
        var config = UnionConfig(lowerDirs: cmd.lowerDirs, upperDir: cmd.upperDir, workDir: cmd.workDir)
        config.skipSync = cmd.skipSync
        config.uidMap = cmd.uidMap
        config.gidMap = cmd.gidMap
        config.squashUID = cmd.squashToUID ?? (cmd.squashToRoot ? 0 : nil)
        config.squashGID = cmd.squashToGID ?? (cmd.squashToRoot ? 0 : nil)
        config.noXattrs = cmd.noXattrs
        config.staticNlink = cmd.staticNlink
        config.xattrPermissions = cmd.xattrPermissions
        config.watch = cmd.watch
        config.watchLimit = cmd.watchLimit
        config.redirectDir = cmd.redirectDir ?? .off
        config.metacopy = cmd.metacopy ?? false
        // As the kernel's: useless without an upper layer, and ignored there.
        config.index = cmd.index && cmd.upperDir != nil
        config.dataLayerCount = cmd.dataLayerCount
        if cmd.whiteout != nil || cmd.xattrNamespace != nil {
            let ns = cmd.xattrNamespace.flatMap { MarkerFormat.Namespace(rawValue: $0.rawValue) } ?? (geteuid() == 0 ? .trusted : .user)
            config.markerFormat = MarkerFormat(whiteout: cmd.whiteout ?? .device, xattrNamespace: ns)
        }
        return config
    }

    static func plan(_ cmd: MountCommand, mountpoint: [UInt8]) -> DaemonPlan {
        var session = Session.Options(mountpoint: mountpoint, fuseOptions: fuseOptions(cmd))
        session.foreground = cmd.foreground
        session.debug = cmd.debug
        session.singleThreaded = cmd.singleThreaded
        session.statsFile = cmd.statsFile.map(absolute)
        var plan = DaemonPlan(config: config(cmd), session: session)
        plan.timeout = cmd.timeout
        plan.writeback = cmd.writeback
        plan.posixACL = !cmd.noACL
        if let target = cmd.trace {
            var t: DaemonPlan.Trace
            switch target {
            case .stderr: t = DaemonPlan.Trace(file: nil)
            case .file(let f): t = DaemonPlan.Trace(file: f)
            }
            t.format = cmd.traceFormat == .json ? .json : .text
            t.ops = cmd.traceOps
            t.pathPrefix = cmd.tracePath
            plan.trace = t
        }
        switch cmd.log {
        case nil: plan.log = nil
        case .syslog: plan.log = .syslog
        case .stderr: plan.log = .stderr
        case .file(let f): plan.log = .file(f)
        }
        plan.verbose = cmd.verbose
        plan.whiteoutChosen = cmd.whiteout != nil
        plan.passthrough = Passthrough.Request(rawValue: cmd.passthrough.rawValue) ?? .auto
        return plan
    }

    /// A relative statistics path is taken from where the command ran: daemonizing moves
    /// the daemon to "/" before the file is written.
    static func absolute(_ path: [UInt8]) -> [UInt8] {
        guard path.first != UInt8(ascii: "/"), let cwd = try? Sys.realpath([UInt8(ascii: ".")]) else { return path }
        return cwd + [UInt8(ascii: "/")] + path
    }

    /// The options handed to libfuse, as bytes (a SOURCE may hold any byte).
    static func fuseOptions(_ cmd: MountCommand) -> [[UInt8]] {
        var opts = cmd.fuseOptions
        func has(_ key: String) -> Bool { opts.contains { $0.starts(with: Array(key.utf8)) } }
        func flag(_ f: String) -> Bool { opts.contains { $0.elementsEqual(f.utf8) } }
        if !has("fsname=") {
            // libfuse splits on ',' and unescapes '\': neither may reach it from SOURCE.
            let source = (cmd.source ?? Array("swiftunionfs".utf8)).map { $0 == UInt8(ascii: ",") || $0 == UInt8(ascii: "\\") ? UInt8(ascii: "_") : $0 }
            opts.append(Array("fsname=".utf8) + source)
        }
        if !has("subtype=") { opts.append(Array("subtype=swiftunionfs".utf8)) }
        var words: [String] = []
        // The kernel checks permissions against the attributes we report, as it does
        // for its own overlay; without this every caller would act as the daemon.
        if !flag("default_permissions") { words.append("default_permissions") }
        // A union is a shared view (container processes run as many users): visible to all, as overlayfs is.
        if geteuid() == 0 && !flag("allow_other") { words.append("allow_other") }
        // The kernel's overlay honours set-id bits and device nodes of its layers; a
        // container root needs both. Root only: FUSE forces nosuid,nodev for users anyway.
        if geteuid() == 0 {
            if !flag("nosuid") && !flag("suid") { words.append("suid") }
            if !flag("dev") && !flag("nodev") { words.append("dev") }
        }
        return opts + words.map { Array($0.utf8) }
    }

    static func mount(_ cmd: MountCommand) throws(UsageError) -> Int32 {
        umask(0)  // modes given by callers arrive with their umask applied already
        let session: Session
        do {
            session = try Daemon.make(plan(cmd, mountpoint: cmd.mountpoint!))
        } catch {
            throw UsageError(message: error.message)
        }
        return session.run()
    }
}

