import UnionCore

/// Every `-o` option swiftunionfs takes, what form it is written in and what it sets.
/// Keys are compared as bytes, exactly.
enum OptionTable {
    enum Form {
        /// A bare word: `volatile`. `volatile=1` is refused.
        case flag
        /// `key=VALUE`, VALUE not empty.
        case value
        /// Either (`trace`, `trace=FILE`).
        case flagOrValue
    }

    typealias Apply = @Sendable (inout MountCommand, Use) throws(UsageError) -> Void

    struct Option: Sendable {
        let form: Form
        let apply: Apply
    }

    /// One use of an option in a list.
    struct Use {
        let key: String
        let item: OptionList.Item
        /// The value unescaped; empty for a bare word.
        let value: [UInt8]
        /// The value as written, escapes still in; nil for a bare word.
        var raw: ArraySlice<UInt8>? { item.rawValue }

        init(key: String, item: OptionList.Item) {
            self.key = key
            self.item = item
            value = OptionList.unescape(item.rawValue ?? [])
        }

        func refuse(_ why: String) -> UsageError {
            UsageError(message: "option \(item.shown): \(why)")
        }
        func `is`(_ word: String) -> Bool { value.elementsEqual(word.utf8) }
    }

    static func apply(_ item: OptionList.Item, to cmd: inout MountCommand) throws(UsageError) {
        guard let option = table[Array(item.key)] else {
            throw UsageError(message: "unknown option '\(item.shown)' (see --help)")
        }
        let use = Use(key: String(decoding: item.key, as: UTF8.self), item: item)  // a table key: ASCII
        switch (option.form, item.rawValue) {
        case (.flag, .some):
            throw UsageError(message: "option \(use.key) takes no value: \(item.shown)")
        case (.value, nil):
            throw UsageError(message: "option \(use.key) needs a value (\(use.key)=...)")
        case (.value, .some(let v)) where v.isEmpty, (.flagOrValue, .some(let v)) where v.isEmpty:
            throw UsageError(message: "option \(use.key)= has an empty value")
        default:
            try option.apply(&cmd, use)
        }
    }

    static let table: [[UInt8]: Option] = {
        var t: [[UInt8]: Option] = [:]
        func add(_ names: [String], _ form: Form, _ apply: @escaping Apply) {
            for n in names {
                precondition(t[Array(n.utf8)] == nil, "option \(n) listed twice")
                t[Array(n.utf8)] = Option(form: form, apply: apply)
            }
        }

        // The layers.
        add(["lowerdir"], .value) { (cmd, use) throws(UsageError) in
            let (dirs, dataCount) = try OptionList.splitLowerDirs(use.raw!)
            guard dirs.count <= MountCommand.maxLowerDirs else {
                throw use.refuse("\(dirs.count) layers, more than \(MountCommand.maxLowerDirs) (the kernel overlay's limit)")
            }
            try cmd.assign(\.lowerDirs, dirs, setting: "lowerdir", written: use.item.text)
            try cmd.assign(\.dataLayerCount, dataCount, setting: "lowerdir::", written: use.item.text)
        }
        add(["upperdir"], .value) { (cmd, use) throws(UsageError) in
            try cmd.assign(\.upperDir, use.value, setting: "upperdir", written: use.item.text)
        }
        add(["workdir"], .value) { (cmd, use) throws(UsageError) in
            try cmd.assign(\.workDir, use.value, setting: "workdir", written: use.item.text)
        }

        // Tracing, statistics, diagnostics.
        add(["trace"], .flagOrValue) { (cmd, use) throws(UsageError) in
            let target: MountCommand.TraceTarget = use.raw == nil ? .stderr : .file(use.value)
            try cmd.assign(\.trace, target, setting: "trace", written: use.item.text)
        }
        add(["trace_format"], .value) { (cmd, use) throws(UsageError) in
            guard let f = MountCommand.TraceFormat.allCases.first(where: { use.is($0.rawValue) }) else {
                throw use.refuse("must be text or json")
            }
            try cmd.assign(\.traceFormat, f, setting: "trace_format", written: use.item.text)
        }
        add(["trace_ops"], .value) { (cmd, use) throws(UsageError) in
            var names: [String] = []
            for name in use.value.split(separator: OptionList.colon, omittingEmptySubsequences: false)
                .flatMap({ $0.split(separator: UInt8(ascii: "+"), omittingEmptySubsequences: false) }) {
                guard !name.isEmpty, name.allSatisfy(isOperationNameByte) else {
                    throw use.refuse("operation names are letters, digits and '_', separated by ':' or '+'")
                }
                names.append(String(decoding: name, as: UTF8.self))  // ASCII, checked above
            }
            try cmd.assign(\.traceOps, names, setting: "trace_ops", written: use.item.text)
        }
        add(["trace_path"], .value) { (cmd, use) throws(UsageError) in
            try cmd.assign(\.tracePath, use.value, setting: "trace_path", written: use.item.text)
        }
        add(["stats"], .value) { (cmd, use) throws(UsageError) in
            try cmd.assign(\.statsFile, use.value, setting: "stats", written: use.item.text)
        }
        add(["log"], .value) { (cmd, use) throws(UsageError) in
            let target: MountCommand.LogTarget = use.is("syslog") ? .syslog : use.is("stderr") ? .stderr : .file(use.value)
            try cmd.assign(\.log, target, setting: "log", written: use.item.text)
        }

        // How the union behaves.
        add(["timeout"], .value) { (cmd, use) throws(UsageError) in
            guard let t = Numbers.seconds(use.value[...]) else {
                throw use.refuse("must be seconds from 0 to \(Numbers.maxSeconds): decimal digits, optionally '.' and up to \(Numbers.maxFractionDigits) more")
            }
            try cmd.assign(\.timeout, t, setting: "timeout", written: use.item.text)
        }
        add(["watch"], .value) { (cmd, use) throws(UsageError) in
            guard let mode = LowerWatchMode.allCases.first(where: { use.is($0.rawValue) }) else {
                throw use.refuse("must be off, auto, fanotify or inotify")
            }
            try cmd.assign(\.watch, mode, setting: "watch", written: use.item.text)
        }
        add(["watch_limit"], .value) { (cmd, use) throws(UsageError) in
            guard let n = Numbers.decimal(use.value, max: MountCommand.maxWatchLimit) else {
                throw use.refuse("must be a number of directories from 0 to \(MountCommand.maxWatchLimit)")
            }
            try cmd.assign(\.watchLimit, Int(n), setting: "watch_limit", written: use.item.text)
        }
        add(["passthrough"], .value) { (cmd, use) throws(UsageError) in
            guard let mode = MountCommand.PassthroughMode.allCases.first(where: { use.is($0.rawValue) }) else {
                throw use.refuse("must be auto, on or off")
            }
            try cmd.assign(\.passthrough, mode, setting: "passthrough", written: use.item.text)
        }
        add(["volatile"], .flag) { (cmd, use) throws(UsageError) in
            try cmd.assign(\.skipSync, true, setting: "fsync", written: use.item.text)
        }
        add(["fsync"], .value) { (cmd, use) throws(UsageError) in
            guard let on = Numbers.bit(use.value) else { throw use.refuse("must be 0 or 1") }
            try cmd.assign(\.skipSync, !on, setting: "fsync", written: use.item.text)
        }
        add(["writeback"], .value) { (cmd, use) throws(UsageError) in
            // fuse-overlayfs's spelling; its default is 1, ours 0 (docs/design.md, "Writeback cache").
            guard let on = Numbers.bit(use.value) else { throw use.refuse("must be 0 or 1") }
            try cmd.assign(\.writeback, on, setting: "writeback", written: use.item.text)
        }
        add(["whiteout"], .value) { (cmd, use) throws(UsageError) in
            let w: MarkerFormat.Whiteout
            if use.is("device") { w = .device } else if use.is("oci") { w = .ociFile } else {
                throw use.refuse("must be device or oci")
            }
            try cmd.assign(\.whiteout, w, setting: "whiteout", written: use.item.text)
        }
        add(["xattr_namespace"], .value) { (cmd, use) throws(UsageError) in
            guard let ns = MountCommand.XattrNamespace.allCases.first(where: { use.is($0.rawValue) }) else {
                throw use.refuse("must be trusted or user")
            }
            try cmd.assign(\.xattrNamespace, ns, setting: "xattr_namespace", written: use.item.text)
        }
        add(["userxattr"], .flag) { (cmd, use) throws(UsageError) in
            try cmd.assign(\.xattrNamespace, .user, setting: "xattr_namespace", written: use.item.text)
        }

        // fuse-overlayfs's options (docs/podman.md).
        add(["uidmapping"], .value) { (cmd, use) throws(UsageError) in
            try cmd.assign(\.uidMap, try IDMapping.parse(use.key, use.value[...]), setting: "uidmapping", written: use.item.text)
        }
        add(["gidmapping"], .value) { (cmd, use) throws(UsageError) in
            try cmd.assign(\.gidMap, try IDMapping.parse(use.key, use.value[...]), setting: "gidmapping", written: use.item.text)
        }
        add(["squash_to_root"], .flag) { (cmd, _) in cmd.squashToRoot = true }
        add(["squash_to_uid", "squash_to_gid"], .value) { (cmd, use) throws(UsageError) in
            guard let id = Numbers.id(use.value, max: MountCommand.maxID) else {
                throw use.refuse("must be a decimal id from 0 to \(MountCommand.maxID)")
            }
            let field: WritableKeyPath<MountCommand, UInt32?> = use.key == "squash_to_uid" ? \.squashToUID : \.squashToGID
            try cmd.assign(field, id, setting: use.key, written: use.item.text)
        }
        add(["static_nlink"], .flag) { (cmd, _) in cmd.staticNlink = true }
        add(["noacl"], .flag) { (cmd, _) in cmd.noACL = true }
        add(["noxattrs"], .value) { (cmd, use) throws(UsageError) in
            guard let on = Numbers.bit(use.value) else { throw use.refuse("must be 0 or 1") }
            try cmd.assign(\.noXattrs, on, setting: "noxattrs", written: use.item.text)
        }
        add(["threaded"], .value) { (cmd, use) throws(UsageError) in
            // fuse-overlayfs serves on one thread unless threaded=1; we serve on several unless told -s.
            guard let on = Numbers.bit(use.value) else { throw use.refuse("must be 0 or 1") }
            try cmd.assign(\.singleThreaded, !on, setting: "threaded", written: use.item.text)
        }
        add(["xattr_permissions"], .value) { (cmd, use) throws(UsageError) in
            // containers/storage sends 2 when force_mask is set (OwnerXattr in UnionCore).
            guard use.value.count == 1, let v = UnionConfig.XattrPermissions(rawValue: Int(use.value[0]) - Int(UInt8(ascii: "0"))) else {
                throw use.refuse("must be 0, 1 (owners and modes in security.fuseoverlayfs.override_stat) or 2 (in user.containers.override_stat)")
            }
            try cmd.assign(\.xattrPermissions, v, setting: "xattr_permissions", written: use.item.text)
        }
        add(["debug"], .flag) { (cmd, _) in cmd.debug = true; cmd.foreground = true }

        // Kernel-overlay features, with the kernel's values (MountCommand.features checks them together).
        add(["redirect_dir"], .value) { (cmd, use) throws(UsageError) in
            guard let m = RedirectMode.allCases.first(where: { use.is($0.rawValue) }) else {
                throw use.refuse("must be on, off, follow or nofollow")
            }
            try cmd.assign(\.redirectDir, m, setting: "redirect_dir", written: use.item.text)
        }
        add(["metacopy"], .value) { (cmd, use) throws(UsageError) in
            guard use.is("on") || use.is("off") else { throw use.refuse("must be on or off") }
            try cmd.assign(\.metacopy, use.is("on"), setting: "metacopy", written: use.item.text)
        }
        add(["index"], .value) { (cmd, use) throws(UsageError) in
            guard use.is("on") || use.is("off") else { throw use.refuse("must be on or off") }
            try cmd.assign(\.index, use.is("on"), setting: "index", written: use.item.text)
        }
        add(["nfs_export"], .value) { (cmd, use) throws(UsageError) in
            guard use.is("on") || use.is("off") else { throw use.refuse("must be on or off") }
            guard use.is("off") else {
                // NFS export decodes file handles (open_by_handle_at), which a FUSE daemon cannot offer.
                throw use.refuse("NFS export of the union is not supported (give nfs_export=off or leave it out)")
            }
            _ = try cmd.recordRaw(key: use.key, value: use.raw!, written: use.item.text)
        }
        add(["max_read", "blksize"], .flagOrValue) { (_, use) throws(UsageError) in
            throw UsageError(message: "option \(use.key)= is not supported (blksize is for block-device FUSE filesystems; max_read must match the daemon's own limit)")
        }

        // Passed to libfuse and the kernel as written.
        add(passthroughFlags, .flag) { (cmd, use) in cmd.fuseOptions.append(Array(use.item.text)) }
        add(passthroughValued, .value) { (cmd, use) throws(UsageError) in
            if try cmd.recordRaw(key: use.key, value: use.raw!, written: use.item.text) {
                cmd.fuseOptions.append(Array(use.item.text))
            }
        }

        // Accepted and ignored (see below), values checked.
        add(ignoredFlags, .flag) { (_, _) in }
        for (name, words) in ignoredValued {
            add([name], .value) { (cmd, use) throws(UsageError) in
                if let words, !words.contains(where: { use.is($0) }) {
                    throw use.refuse("must be " + words.dropLast().joined(separator: ", ") + " or " + words.last!)
                }
                _ = try cmd.recordRaw(key: use.key, value: use.raw!, written: use.item.text)
            }
        }
        return t
    }()

    static func isOperationNameByte(_ b: UInt8) -> Bool {
        (b >= UInt8(ascii: "a") && b <= UInt8(ascii: "z")) || (b >= UInt8(ascii: "A") && b <= UInt8(ascii: "Z"))
            || Numbers.isDigit(b) || b == UInt8(ascii: "_")
    }

    /// Options passed to libfuse and the kernel unchanged (each one libfuse 3 takes for a FUSE mount).
    /// Contradicting mount flags (`ro,rw`) follow mount(8): the last one wins.
    static let passthroughFlags = [
        "allow_other", "allow_root", "default_permissions", "ro", "rw", "suid", "nosuid", "dev", "nodev",
        "exec", "noexec", "atime", "noatime", "sync", "async", "dirsync", "auto_unmount",
    ]
    static let passthroughValued = ["fsname", "subtype"]

    /// Accepted and ignored: mount(8) and fstab words that mean nothing to a FUSE daemon, and
    /// fuse-overlayfs / kernel-overlay options whose behaviour is already ours or that only tune a
    /// mechanism swiftunionfs does not have (see docs/podman.md, "Options from fuse-overlayfs"):
    /// relatime, strictatime, diratime, nodiratime, lazytime (and no-forms), iversion, mand: mount(8) words libfuse 3
    /// refuses on a FUSE mount; access times are what the layers' filesystems record, i_version and mandatory
    /// locks do not exist on FUSE (mand is gone from Linux since 5.15).
    static let ignoredFlags = [
        "auto", "noauto", "user", "nouser", "users", "_netdev", "nofail", "defaults", "x-systemd.automount",
        "relatime", "norelatime", "strictatime", "nostrictatime", "diratime", "nodiratime", "lazytime", "nolazytime",
        "iversion", "noiversion", "mand", "nomand", "ino32_t",
    ]
    /// Accepted and ignored with a value, and the values allowed (nil: any, not empty):
    /// xino: the kernel overlay's inode-number scheme for layers on several filesystems; swiftunionfs has its own
    /// (`Presenter.mapIno`), whatever the value. fast_ino: inode numbers are chosen by the layers' filesystems.
    /// context=...: SELinux labels; the kernel refuses them on a FUSE mount without SELinux, and the layers keep theirs.
    /// plugins=: fuse-overlayfs layer plugins are only used by "//plugin/..." lowerdirs, which are refused as missing.
    static let ignoredValued: [(String, [String]?)] = [
        ("context", nil), ("fscontext", nil), ("defcontext", nil), ("rootcontext", nil), ("plugins", nil),
        ("xino", ["on", "off", "auto"]),
        ("fast_ino", ["0", "1"]),
    ]
}
