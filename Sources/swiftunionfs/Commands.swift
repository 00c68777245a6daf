import ArgumentParser

// The command line's shape, for ArgumentParser: the subcommands, their flags, --help and
// the completion scripts (--generate-completion-script bash|zsh|fish). ArgumentParser sees
// argv as Strings, which repair bytes that are not UTF-8, so these types only check the
// shape and answer help: every value — paths, the -o lists, run's command — is then read
// from argv's own bytes by the command's parser (Arguments.swift, Run.swift, ...), and
// main.swift dispatches on which of these types the line parsed as. What ArgumentParser
// cannot express stays there too: the -o list itself (MountOptions), and the two mount
// forms, `-o OPTIONS MOUNTPOINT` and mount.fuse3's `SOURCE MOUNTPOINT -o OPTIONS`.

/// `swiftunionfs`: mounts by default (`mount`), or runs a subcommand.
struct SwiftUnionFS: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "swiftunionfs",
        abstract: "A union (overlay) filesystem in user space with the kernel overlayfs's semantics and on-disk format.",
        usage: """
        swiftunionfs [-f] [-d] [-s] [-v] -o lowerdir=TOP:...:BOTTOM[,upperdir=U,workdir=W][,OPT...] MOUNTPOINT
        swiftunionfs SOURCE MOUNTPOINT -o OPTIONS   (the form mount.fuse3 and /etc/fstab use)
        swiftunionfs <subcommand> [OPTIONS]
        """,
        discussion: Help.mounting,
        version: "swiftunionfs \(version)",
        subcommands: [MountCLI.self, InspectCLI.self, RunCLI.self, ImageCLI.self, DiffCLI.self, CommitCLI.self],
        defaultSubcommand: MountCLI.self)
}

/// The texts ArgumentParser cannot make from declarations: what goes inside -o.
enum Help {
    // (Lines of at most 79 columns: ArgumentParser wraps longer ones at 80.)
    static let unionOptions = """
    Union options (-o, comma-separated):
      lowerdir=L1:L2     read-only layers, the leftmost on top; ::D1::D2 at
                         the end: data-only layers (metacopy data, never by name)
      image=NAME[,store=DIR]  the layers of an imported image (below any
                         lowerdir=)
      upperdir=DIR       the writable layer (without it the union is read-only)
      workdir=DIR        staging directory on upperdir's filesystem
      volatile, fsync=0  never fsync the upper layer (throwaway containers)
      writeback=0|1      the kernel's writeback cache (default 0): faster small
                         writes; errors show at fsync/close
      whiteout=device|oci   whiteouts written as 0/0 devices (default) or
                         .wh.NAME files
      xattr_namespace=trusted|user, userxattr   where opaque marks go
                         (default: detected)
      uidmapping=L:S:N[:L:S:N...], gidmapping=...   layer ids L..L+N show as
                         S..S+N
      xattr_permissions=0|1|2   owners and modes kept in an xattr of upper's
                         files (1: security.*, 2: user.*, as containers/storage's
                         force_mask)
      redirect_dir=off|nofollow|follow|on   directory renames recorded in
                         overlay.redirect (on), only followed (follow), or neither
                         (off, the default)
      metacopy=on|off    chown/chmod/utimes/xattrs copy up metadata only
                         (on implies redirect_dir=on)
      index=on|off       lower hard links kept across copy-up, in the kernel's
                         workdir/index (default off)
      timeout=SECONDS    kernel entry/attribute cache time, 0 to 1000000000
                         (default 3600)
      watch=off|auto|fanotify|inotify   show edits made to the lower layers while mounted
                         (default auto: fanotify as root, else inotify); watch_limit=N inotify
                         directories at most (then short timeouts)
      passthrough=auto|on|off   the kernel reads and writes upper-layer files
                         itself (FUSE passthrough: libfuse 3.16+, root; auto:
                         where available, the default)
      log=syslog|stderr|FILE   where the daemon reports its own errors
                         (default: stderr in the foreground, syslog once in
                         the background)
    Tracing and statistics:
      trace[=FILE]       one line per operation to stderr or FILE (SIGUSR1
                         toggles)
      trace_format=text|json, trace_ops=open:rename:..., trace_path=PREFIX
      stats=FILE         statistics as JSON at unmount and on SIGUSR2 (also
                         printed to stderr)
    Passed to libfuse: allow_other, default_permissions, ro, suid, dev, fsname=...
    In every path \\: \\, \\\\ stand for : , \\; a setting given twice must agree.
    """

    static let mountFlags = """
    Mounting (the default subcommand, mount):
      -o OPTIONS         the union's options, below; may be given more than once
      -f                 stay in the foreground (else return once it is mounted)
      -d, --debug        print libfuse's debug output (implies -f)
      -s                 serve requests on one thread
      -v, --verbose      print the layers and the marker format chosen at mount
      -V, --version      the version
    """

    static let mounting = mountFlags + "\n" + unionOptions
}

/// The values ArgumentParser checks for `--format`.
enum OutputFormat: String, ExpressibleByArgument, CaseIterable {
    case text, json
}

/// `-o OPTIONS`, also written `-oOPTIONS`, as mount(8) and libfuse take it.
private let optionList = NameSpecification([.customShort("o", allowingJoined: true)])

struct MountCLI: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mount",
        abstract: "Mount the union (the default: the word mount may be left out).",
        usage: """
        swiftunionfs [-f] [-d] [-s] [-v] -o OPTIONS MOUNTPOINT
        swiftunionfs SOURCE MOUNTPOINT -o OPTIONS
        """,
        discussion: "The -o OPTIONS are the union options `swiftunionfs --help` lists. It returns once the mount is live and serves in the background; in the foreground SIGINT and SIGTERM unmount cleanly.")

    @Option(name: optionList, help: ArgumentHelp("the union's options, comma-separated; may be given more than once", valueName: "OPTIONS"))
    var options: [String] = []
    @Flag(name: .customShort("f"), help: "stay in the foreground (otherwise return once the mount is live)")
    var foreground = false
    @Flag(name: [.customShort("d"), .customLong("debug")], help: "print libfuse's debug output (implies -f)")
    var debug = false
    @Flag(name: .customShort("s"), help: "serve requests on one thread")
    var singleThreaded = false
    @Flag(name: [.customShort("v"), .customLong("verbose")], help: "print the layers and the marker format chosen at mount")
    var verbose = false
    @Argument(help: ArgumentHelp("[SOURCE] MOUNTPOINT: where to mount; SOURCE, in the form mount.fuse3 uses, names the mount (fsname=)", valueName: "MOUNTPOINT"),
              completion: .directory)
    var paths: [String] = []
}

struct InspectCLI: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inspect",
        abstract: "What each layer holds at PATH and which one wins, without mounting.")

    @Option(name: optionList, help: ArgumentHelp("the layers, as for a mount (lowerdir=, upperdir=, image=; mount-only options are accepted and ignored)", valueName: "OPTIONS"))
    var options: [String] = []
    @Flag(help: "the merged tree below PATH, each entry with the layer that serves it")
    var tree = false
    @Argument(help: ArgumentHelp("a path in the union, relative to its root", valueName: "PATH"))
    var path: String
}

struct RunCLI: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run COMMAND in the union as its root, as a container runtime does.",
        usage: "swiftunionfs run -o lowerdir=...,upperdir=...,workdir=... [OPTIONS] [--] [COMMAND [ARG...]]",
        discussion: "Nothing is mounted on the host; changes stay in upper. Exit status: the command's; 2 for a bad command line or missing layers, 125 when the namespaces or mounts cannot be set up, 126 for a COMMAND that cannot be run, 127 for one that is not found.")

    @Option(name: optionList, help: ArgumentHelp("the union's options, as for a mount (lowerdir=, upperdir=, workdir=, trace, stats=, ...)", valueName: "OPTIONS"))
    var options: [String] = []
    @Option(help: ArgumentHelp("the layers of an imported image (below any lowerdir=)", valueName: "NAME"))
    var image: String?
    @Flag(help: "a new PID namespace: the command is PID 1 and sees only its own processes")
    var pid = false
    @Option(help: ArgumentHelp("a new UTS namespace with this hostname (also sets HOSTNAME)", valueName: "NAME"))
    var hostname: String?
    @Option(help: ArgumentHelp("bind-mount host path SRC at DST inside, read-only with :ro (DST is created when missing); may be given more than once", valueName: "SRC:DST[:ro]"))
    var bind: [String] = []
    @Option(name: [.customShort("w"), .customLong("workdir")], help: ArgumentHelp("the command's working directory (default /)", valueName: "DIR"))
    var workdir: String?
    @Option(name: [.customShort("e"), .customLong("env")], help: ArgumentHelp("add or override a variable; K alone takes the caller's value", valueName: "K=V"))
    var env: [String] = []
    @Flag(name: [.customShort("d"), .customLong("debug")], help: "libfuse's debug output")
    var debug = false
    @Flag(name: .customShort("s"), help: "serve requests on one thread")
    var singleThreaded = false
    @Flag(name: [.customShort("v"), .customLong("verbose")], help: "print the layers and the marker format chosen")
    var verbose = false
    @Argument(parsing: .captureForPassthrough,
              help: ArgumentHelp("the command (default /bin/sh) and its arguments, passed to execve byte for byte; flags after COMMAND are its own", valueName: "COMMAND"))
    var command: [String] = []

    func validate() throws {
        // The command starts at the first word that is not one of run's flags (so
        // `run ... ls --help` is ls's help): --help before it is ours, another unknown flag
        // a mistake, not a command.
        if let first = command.first, first == "--help" || first == "-h" { throw CleanExit.helpRequest(self) }
        if let first = command.first, first != "--", first.hasPrefix("-"), first.count > 1 {
            throw ValidationError("run: unknown flag \(first)")
        }
    }
}

struct ImageCLI: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "image",
        abstract: "The image store: import, ls, inspect, commit (docs/images.md).",
        discussion: "The store defaults to $XDG_DATA_HOME/swiftunionfs (~/.local/share/swiftunionfs).",
        subcommands: [ImageImportCLI.self, ImageListCLI.self, ImageInspectCLI.self, ImageCommitCLI.self])
}

struct StoreOption: ParsableArguments {
    @Option(help: ArgumentHelp("the image store (default $XDG_DATA_HOME/swiftunionfs)", valueName: "DIR"), completion: .directory)
    var store: String?
}

struct ImageImportCLI: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "import",
        abstract: "Import an OCI image layout directory, an OCI archive, or a docker/podman save archive.")
    @Argument(help: ArgumentHelp("the image layout directory or archive", valueName: "SOURCE"), completion: .file())
    var source: String
    @Option(help: ArgumentHelp("the name to give it (default: the one the source carries)", valueName: "NAME"))
    var name: String?
    @OptionGroup var store: StoreOption
}

struct ImageListCLI: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ls",
        abstract: "List the images in the store.",
        aliases: ["list"])
    @Option(help: "text or json")
    var format: OutputFormat = .text
    @OptionGroup var store: StoreOption
}

struct ImageInspectCLI: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inspect",
        abstract: "An image's manifest, config and layers, as podman image inspect shows them.")
    @Argument(help: ArgumentHelp("the image's name or ID", valueName: "NAME"))
    var name: String
    @Option(help: "text or json")
    var format: OutputFormat = .text
    @OptionGroup var store: StoreOption
}

struct ImageCommitCLI: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "commit",
        abstract: "Store an upper as a new image: its layer on top of BASE's.")
    @Option(name: optionList, help: ArgumentHelp("[image=BASE,]upperdir=DIR", valueName: "OPTIONS"))
    var options: [String] = []
    @Option(help: ArgumentHelp("the new image's name", valueName: "NAME"))
    var name: String?
    @OptionGroup var store: StoreOption
}

struct DiffCLI: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "diff",
        abstract: "The upper's changes against its lowers, as podman diff lists them.")
    @Option(name: optionList, help: ArgumentHelp("lowerdir=TOP:...:BOTTOM,upperdir=DIR (or image=NAME,upperdir=DIR)", valueName: "OPTIONS"))
    var options: [String] = []
    @Option(help: "text (byte-exact paths) or json (podman's)")
    var format: OutputFormat = .text
}

struct CommitCLI: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "commit",
        abstract: "The upper as a reproducible OCI image layer; prints its diff ID and blob digest.")
    @Option(name: optionList, help: ArgumentHelp("[lowerdir=...|image=NAME,]upperdir=DIR", valueName: "OPTIONS"))
    var options: [String] = []
    @Option(name: .customShort("O"), help: ArgumentHelp("the layer to write; its name chooses the compression: .tar, .tar.gz, .tar.zst", valueName: "LAYER.tar[.gz|.zst]"),
            completion: .file())
    var output: String?
}
