import FuseBridge
import Glibc
import MountOptions
import UnionCore

let version = "0.1.0"

let usage = """
usage: swiftunionfs [-f] [-d] [-s] -o lowerdir=TOP:...:BOTTOM[,upperdir=U,workdir=W][,OPT...] MOUNTPOINT
       swiftunionfs SOURCE MOUNTPOINT -o OPTIONS        (the form mount.fuse3 and /etc/fstab use)
       swiftunionfs inspect -o lowerdir=...[,upperdir=...] [--tree] PATH
       swiftunionfs run -o lowerdir=...,upperdir=...,workdir=... [OPTIONS] [--] [COMMAND [ARG...]]
       swiftunionfs image import|ls|inspect|commit ...   (see image --help)
       swiftunionfs diff -o lowerdir=...,upperdir=... [--format json]
       swiftunionfs commit -o upperdir=... -O LAYER.tar[.gz|.zst]

A union (overlay) filesystem in user space with the kernel overlayfs's semantics and on-disk format.

  -f                 stay in the foreground (otherwise return once the mount is live)
  -d                 print libfuse's debug output (implies -f)
  -s                 serve requests on one thread
  -h, --help         this text
  -V, --version      the version

Union options:
  lowerdir=L1:L2     read-only layers, the leftmost on top; ::D1::D2 at the end: data-only layers
                     (in every path \\: \\, \\\\ stand for : , \\; a setting given twice must agree)
  image=NAME[,store=DIR]  the layers of an imported image (below any lowerdir=)
  upperdir=DIR       the writable layer (without it the union is read-only)
  workdir=DIR        staging directory on upperdir's filesystem (kept for the kernel's format)
  volatile, fsync=0  never fsync the upper layer (throwaway containers)
  whiteout=device|oci        whiteouts written as 0/0 devices (default) or .wh.NAME files
  xattr_namespace=trusted|user, userxattr   where opaque marks go (default: detected)
  uidmapping=L:S:N[:L:S:N...], gidmapping=...   layer ids L..L+N show as S..S+N
  redirect_dir=off|nofollow|follow|on   directory renames with overlay.redirect (on), only
                     follow them (follow), or neither (off, the default: a redirect met is EPERM)
  metacopy=on|off    chown/chmod/utimes/xattrs copy up metadata only (on implies redirect_dir=on)
  timeout=SECONDS    kernel entry/attribute cache time, 0 to 1000000000 (default 3600)
  log=syslog|stderr|FILE     where the daemon reports its own errors (default: stderr in the
                     foreground, syslog once in the background)
Tracing and statistics:
  trace[=FILE]       one line per operation to stderr or FILE (SIGUSR1 toggles)
  trace_format=text|json, trace_ops=open:rename:..., trace_path=PREFIX
  stats=FILE         statistics as JSON at unmount and on SIGUSR2 (also printed to stderr)
FUSE and mount options passed through: allow_other, default_permissions, ro, suid, dev, noatime, fsname=, ...
"""

func exitWithUsageError(_ message: String) -> Never {
    fail(message)
    exit(2)
}

let argv = ImageOption.expandOrExit(rawArguments())
func given(_ word: String) -> Bool { argv.contains { $0.elementsEqual(word.utf8) } }
/// The image tools still read their command line as text (docs/images.md).
func textArguments() -> [String] { argv.dropFirst().map { String(decoding: $0, as: UTF8.self) } }
// Subcommands first: `run ... -- ls --help` must reach ls, not print our help.
if argv.first?.elementsEqual("inspect".utf8) == true { exit(Inspect.main(Array(argv.dropFirst()))) }
if argv.first?.elementsEqual("run".utf8) == true { exit(RunCommand.main(Array(argv.dropFirst()))) }
if argv.first?.elementsEqual("image".utf8) == true { exit(ImageCommand.main(textArguments())) }
if argv.first?.elementsEqual("diff".utf8) == true { exit(DiffCommand.main(textArguments())) }
if argv.first?.elementsEqual("commit".utf8) == true { exit(CommitCommand.main(textArguments())) }
if given("--help") || given("-h") { print(usage); exit(0) }
if given("--version") || given("-V") { print("swiftunionfs \(version)"); exit(0) }

/// The mount itself: parse, check, mount; every mistake one line and exit status 2.
func mountMain(_ argv: [[UInt8]]) -> Int32 {
    do throws(UsageError) {
        var cmd = try MountCommand.parse(arguments: argv)
        try Validation.check(&cmd)
        return try Mounter.mount(cmd)
    } catch {
        exitWithUsageError(error.message)
    }
}
exit(mountMain(argv))
