#!/usr/bin/python3
"""Rootless scenarios for swiftunionfs, run *inside* a user + mount namespace.

Used two ways (stdlib only, so Debian's /usr/bin/python3 runs it as any user; the
harness package is copied next to it):

 * imported by tests/test_rootless.py (as root, outside any namespace) for the layer
   specs (harness.layers, namespace ids translated to host ids by the caller);
 * run as  `unshare -Urm /usr/bin/python3 rootless_helper.py CONFIG.json`  by an
   unprivileged user: it mounts the kernel's overlayfs (-o userxattr) and
   swiftunionfs (-f, in the background) in that namespace, runs the jobs named
   in CONFIG, unmounts everything, waits for every daemon and prints one JSON
   object (the result) as the last line of stdout.

A job is either
  "diff":   the same operations on the kernel's overlay and on swiftunionfs over
            identical layer copies (DIR/k, DIR/s): operation results, merged
            views, markers in upper, remount, cross-mount (the kernel over
            swiftunionfs's upper and swiftunionfs over the kernel's upper);
  "expect": operations on swiftunionfs alone (DIR/s); the result carries the
            recorded outcomes and snapshots (live and after a remount) for the
            test to compare with expectations.
"""

import contextlib
import json
import os
import shutil
import signal
import stat
import sys
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import mountinfo, mounts, oracle, trees  # noqa: E402
from harness.layers import Dir as D, File as F, Hardlink as H, Symlink as L, Whiteout as W  # noqa: E402,F401
from harness.procs import Failure, as_ids  # noqa: E402

SNAP_PREFIXES = ("user.",)


def snapshot(root, prefixes=SNAP_PREFIXES, times=False):
    return trees.jsonable(trees.snapshot(root, prefixes=prefixes, times=times))


def upper_markers(upper):
    """Sorted [relpath, 'whiteout'|'opaque:user'|'opaque:trusted'] and stray '.wh.*' names."""
    marks, others = trees.upper_markers(upper, namespaces=True)
    return sorted(list(m) for m in marks), others


def Recorder(root):
    return oracle.Recorder(root, jsonable=True)


# --------------------------------------------------------------------------
# operations
# --------------------------------------------------------------------------

def write(path, data, mode="wb"):
    if "b" in mode and isinstance(data, str):
        data = data.encode()
    with open(path, mode) as f:
        f.write(data)


def read(path):
    with open(path, "rb") as f:
        return f.read()


def meta(path):
    st = os.lstat(path)
    return [stat.filemode(st.st_mode), st.st_uid, st.st_gid,
            None if stat.S_ISDIR(st.st_mode) else st.st_size]


def ls(path):
    return sorted(os.listdir(path))


def op_removals(r):
    p = r.p
    r("unlink lower f", os.unlink, p("f"))
    r("unlink g (l2)", os.unlink, p("g"))
    r("stat f", meta, p("f"))
    r("unlink f again", os.unlink, p("f"))
    r("rm bin/tar", os.unlink, p("bin/tar"))
    r("ls bin", ls, p("bin"))
    r("rm -rf d", shutil.rmtree, p("d"))
    r("mkdir d", os.mkdir, p("d"), 0o700)
    r("ls d", ls, p("d"))
    r("create d/new", write, p("d/new"), "n")
    r("mkdir d/sub", os.mkdir, p("d/sub"))
    r("ls d/sub", ls, p("d/sub"))
    r("rmdir non-empty", os.rmdir, p("bin"))
    r("rmdir empty lower dir", os.rmdir, p("emptydir"))
    r("rmdir missing", os.rmdir, p("nope"))
    r("ls", ls, r.root)


def op_renames(r):
    p = r.p
    r("rename lower file", os.rename, p("f"), p("f2"))
    r("read new", read, p("f2"))
    r("stat old", meta, p("f"))
    r("rename lower over lower", os.rename, p("g"), p("h"))
    r("create upper file", write, p("u1"), "u1")
    r("rename upper file into merged dir", os.rename, p("u1"), p("bin/u1"))
    r("rename lower file across dirs", os.rename, p("bin/ls"), p("d/sub/ls"))
    r("mkdir upper dir", os.mkdir, p("nd"))
    r("fill upper dir", write, p("nd/x"), "x")
    r("rename upper dir", os.rename, p("nd"), p("nd2"))
    r("rename merged lower dir", os.rename, p("d"), p("d2"))
    r("rename single-layer lower dir", os.rename, p("etc"), p("etc2"))
    r("rename symlink", os.rename, p("lnk"), p("lnk2"))
    r("readlink", os.readlink, p("lnk2"))
    r("ls", ls, r.root)


def op_metadata(r):
    p = r.p
    r("write lower f", write, p("f"), "hello m", "w")
    r("append bin/sh", write, p("bin/sh"), "more\n", "a")
    r("truncate h", os.truncate, p("h"), 2)
    r("chmod lower file", os.chmod, p("g"), 0o600)
    r("chmod lower dir", os.chmod, p("d"), 0o700)
    r("chown lower file to 0", os.chown, p("bin/cat"), 0, 0)
    r("chown lower file to unmapped id", os.chown, p("bin/ls"), 1000, 1000)
    r("utime lower file", os.utime, p("d/a"), ns=(1_000_000_000, 2_000_000_123))
    r("utime result", lambda: os.stat(p("d/a")).st_mtime_ns)
    r("setxattr lower file", os.setxattr, p("f"), "user.new", b"value")
    r("setxattr lower dir", os.setxattr, p("d"), "user.dirnew", b"dv")
    r("replace lower xattr", os.setxattr, p("etc/conf"), "user.tag", b"t2")
    r("remove lower xattr", os.removexattr, p("etc"), "user.dirtag")
    r("set trusted xattr", os.setxattr, p("g"), "trusted.x", b"1")
    r("list xattrs", lambda: sorted(os.listxattr(p("etc/conf"))))
    r("link lower file", os.link, p("hl"), p("hl3"))
    r("nlink", lambda: os.lstat(p("hl")).st_nlink)
    r("symlink", os.symlink, "f", p("newlnk"))
    r("mkfifo", os.mkfifo, p("fifo"), 0o640)
    r("mknod char 1:3", os.mknod, p("null"), stat.S_IFCHR | 0o666, os.makedev(1, 3))
    r("meta d", meta, p("d"))
    r("meta g", meta, p("g"))


def op_markers(r):
    p = r.p
    r("ls", ls, r.root)
    r("ls opq (opaque in l1)", ls, p("opq"))
    r("ls uo (opaque in upper)", ls, p("uo"))
    r("stat whited-out in l1", meta, p("gone"))
    r("stat whited-out in upper", meta, p("f"))
    r("create over l1 whiteout", write, p("gone"), "back")
    r("rm in upper opaque dir", os.unlink, p("uo/new"))
    r("rmdir upper opaque dir", os.rmdir, p("uo"))
    r("mkdir again", os.mkdir, p("uo"))
    r("ls uo", ls, p("uo"))
    r("rm -rf opq", shutil.rmtree, p("opq"))
    r("ls", ls, r.root)


def op_owners(r):
    """Over a lower with host owners 0, the user, 12345 (+ more in multi-id)."""
    p = r.p
    r("ls", ls, r.root)
    for n in ("own", "rootf", "otherf", "sub5f", "sub1000f"):
        r("meta " + n, meta, p(n))
    r("chown own file to 0", os.chown, p("own"), 0, 0)
    r("chown own file to 5", os.chown, p("own5"), 5, 5)
    r("chown own file to 70000", os.chown, p("own70000"), 70000, 70000)
    r("write own file", write, p("ownw"), "w", "a")
    r("create file", write, p("newf"), "new")
    r("mkdir", os.mkdir, p("newd"), 0o777)
    r("chmod newd 0777", os.chmod, p("newd"), 0o777)
    r("symlink", os.symlink, "newf", p("newl"))
    r("create as 5:6", as_ids, 5, 6, write, p("newd/by5"), "5")
    r("mkdir as 5:6", as_ids, 5, 6, os.mkdir, p("newd/dir5"))
    r("create as 1000:1000", as_ids, 1000, 1000, write, p("newd/by1000"), "1000")
    r("setgid dir inherits gid", os.chmod, p("newd"), 0o2777)
    r("create as 5:6 in setgid dir", as_ids, 5, 6, write, p("newd/by5g"), "5g")
    for n in ("newf", "newd", "newl", "newd/by5", "newd/dir5", "newd/by1000", "newd/by5g"):
        r("meta " + n, meta, p(n))


def op_unmapped(r):
    """Changes to lower files whose owner is not mapped in the namespace
    (host 0 and 12345): the kernel refuses them (EPERM; EOVERFLOW for the
    copy-up of a world-writable one)."""
    p = r.p
    r("chown root-owned file", os.chown, p("rootf"), 0, 0)
    r("chmod root-owned file", os.chmod, p("rootf"), 0o600)
    r("chmod other-owned file", os.chmod, p("otherf"), 0o600)
    r("write world-writable other-owned file", write, p("otherw"), "w", "a")
    r("chown sub5 file to 0", os.chown, p("sub5f"), 0, 0)
    r("setxattr on root-owned file", os.setxattr, p("rootdir/inner"), "user.x", b"1")
    r("create in root-owned 0755 dir", write, p("rootdir/new"), "n")
    r("unlink in root-owned 0755 dir", os.unlink, p("rootdir/inner"))
    for n in ("rootf", "otherf", "otherw", "sub5f", "rootdir", "rootdir/inner"):
        r("meta " + n, meta, p(n))


def op_escaped_xattr(r):
    """Kernel >= 6.7: overlay.* xattrs set through the union are stored escaped
    (user.overlay.overlay.NAME in upper) and read back as user.overlay.NAME."""
    p = r.p
    r("set user.overlay.opaque on lower file", os.setxattr, p("f"), "user.overlay.opaque", b"y")
    r("set user.overlay.foo on new file", lambda: (write(p("nf"), "n"),
                                                   os.setxattr(p("nf"), "user.overlay.foo", b"bar"))[1])
    r("get", os.getxattr, p("nf"), "user.overlay.foo")
    r("list", lambda: sorted(os.listxattr(p("f"))))
    r("mkdir + set opaque through the union", lambda: (os.mkdir(p("nd")),
                                                       os.setxattr(p("nd"), "user.overlay.opaque", b"y"))[1])
    r("ls d after setting opaque on it", lambda: (os.setxattr(p("d"), "user.overlay.opaque", b"y"),
                                                  ls(p("d")))[1])


def op_shift(r):
    """swiftunionfs with uidmapping=1000:0:100,gidmapping=1000:0:100 over a
    layer whose ids are stored shifted by 1000 (namespace ids)."""
    p = r.p
    r("ls", ls, r.root)
    for n in (".", "a", "b5", "bin", "bin/sh", "unmapped", "suid"):
        r("meta " + n, meta, p(n))
    r("create file", write, p("new"), "new")
    r("mkdir", os.mkdir, p("newd"), 0o777)
    r("chmod newd", os.chmod, p("newd"), 0o777)
    r("create as 5:6", as_ids, 5, 6, write, p("newd/by5"), "5")
    r("write b5 (0600) as its owner 5", as_ids, 5, 5, write, p("b5"), "x", "a")
    r("write unmapped (0644) as 5", as_ids, 5, 5, write, p("unmapped"), "x", "a")
    r("chown a to 7:8", os.chown, p("a"), 7, 8)
    r("chown b5 to 0:0", os.chown, p("b5"), 0, 0)
    r("chown to 500 (outside the mapping)", os.chown, p("bin/sh"), 500, 500)
    r("chown to -1:9 (gid only)", os.chown, p("bin/sh"), -1, 9)
    for n in ("new", "newd", "newd/by5", "a", "b5", "bin", "bin/sh"):
        r("meta " + n, meta, p(n))


OPS = {"removals": op_removals, "renames": op_renames, "metadata": op_metadata,
       "markers": op_markers, "owners": op_owners,
       "unmapped": op_unmapped, "escaped_xattr": op_escaped_xattr, "shift": op_shift}


# --------------------------------------------------------------------------
# mounting (inside the namespace)
# --------------------------------------------------------------------------

class Ctx:
    def __init__(self, cfg):
        self.bin = cfg["bin"]
        self.pidfile = cfg["pidfile"]
        self.daemons = []      # [{pid, cmd, exit, stderr}]


@contextlib.contextmanager
def kernel_mounted(ctx, lowers, upper, work, mnt):
    with mounts.mount_kernel(lowers, upper, work, mnt, extra_opts=("userxattr",)) as m:
        yield m


@contextlib.contextmanager
def suf_mounted(ctx, lowers, upper, work, mnt, extra=()):
    """swiftunionfs -f in the namespace; unmounted with umount (we are root here);
    its pid goes to the pidfile before it mounts, so that the test can end survivors."""
    d = mounts.Daemon(mounts.suf_argv(lowers, upper, work, extra, mnt, bin=ctx.bin), mnt,
                      log=mnt.rstrip("/") + ".stderr", fstype="fuse.swiftunionfs")
    d.spawn()
    rec = {"pid": d.pid, "cmd": d.argv, "exit": None}
    ctx.daemons.append(rec)
    with open(ctx.pidfile, "a") as f:
        f.write("%d\n" % d.pid)
    ok = False
    try:
        d.wait_mounted()
        yield mnt
        ok = True
    finally:
        problems = d.stop(check=False, unmount=("umount",))
        d.cleanup()
        rec["exit"] = d.exit_status
        rec["stderr"] = d.stderr()[-4000:]
        if problems and ok:
            raise Failure("; ".join(problems) + "\ncmd: %s\nstderr:\n%s" % (d.argv, d.stderr()))


# --------------------------------------------------------------------------
# jobs
# --------------------------------------------------------------------------

def side_dirs(d, nlowers):
    return dict(lowers=[os.path.join(d, "l%d" % (i + 1)) for i in range(nlowers)],
                upper=os.path.join(d, "upper"), work=os.path.join(d, "work"),
                xwork=os.path.join(d, "xwork"), mnt=os.path.join(d, "mnt"))


def lower_digest(lowers):
    return trees.jsonable(trees.layers_digest(lowers))


def diff(a, b, name_a, name_b):
    return trees.diff_snapshots(a, b, name_a, name_b)


def run_diff(ctx, job):
    k = side_dirs(os.path.join(job["dir"], "k"), job["nlowers"])
    s = side_dirs(os.path.join(job["dir"], "s"), job["nlowers"])
    op = OPS[job["ops"]]
    extra = job.get("suf_opts", [])
    problems = []
    before = lower_digest(s["lowers"])

    with kernel_mounted(ctx, k["lowers"], k["upper"], k["work"], k["mnt"]) as m:
        krec = Recorder(m)
        op(krec)
        ksnap = snapshot(m)
    with suf_mounted(ctx, s["lowers"], s["upper"], s["work"], s["mnt"], extra) as m:
        srec = Recorder(m)
        op(srec)
        ssnap = snapshot(m)

    op_diffs = []
    for i in range(max(len(krec.results), len(srec.results))):
        a = krec.results[i] if i < len(krec.results) else None
        b = srec.results[i] if i < len(srec.results) else None
        if a != b:
            op_diffs.append([i, (a or b)[0], a and a[1], b and b[1]])
    problems += ["merged view: " + x for x in diff(ksnap, ssnap, "kernel", "suf")]
    kmarks, _ = upper_markers(k["upper"])
    smarks, sothers = upper_markers(s["upper"])
    if kmarks != smarks:
        problems.append("upper markers differ: kernel %s vs suf %s" % (kmarks, smarks))
    if sothers:
        problems.append("swiftunionfs left '.wh.*' names in upper: %s" % sothers)

    with kernel_mounted(ctx, k["lowers"], k["upper"], k["work"], k["mnt"]) as m:
        ksnap2 = snapshot(m)
    with suf_mounted(ctx, s["lowers"], s["upper"], s["work"], s["mnt"], extra) as m:
        ssnap2 = snapshot(m)
    problems += ["after remount: " + x for x in diff(ksnap2, ssnap2, "kernel", "suf")]
    problems += ["persistence: " + x for x in diff(ssnap, ssnap2, "suf live", "suf remounted")]

    with kernel_mounted(ctx, s["lowers"], s["upper"], s["xwork"], s["mnt"]) as m:
        x1 = snapshot(m)
    problems += ["cross-mount: " + x for x in diff(ssnap2, x1, "suf", "kernel over suf's upper")]
    with suf_mounted(ctx, k["lowers"], k["upper"], k["xwork"], k["mnt"], extra) as m:
        x2 = snapshot(m)
    problems += ["cross-mount: " + x for x in diff(ksnap2, x2, "kernel", "suf over kernel's upper")]

    after = lower_digest(s["lowers"])
    problems += ["lower changed: " + x for x in diff(before, after, "before", "after")]
    return {"problems": problems, "op_diffs": op_diffs, "kernel_results": krec.results, "suf_results": srec.results,
            "suf_snapshot": ssnap, "kernel_snapshot": ksnap, "markers": smarks, "kernel_markers": kmarks}


def run_expect(ctx, job):
    s = side_dirs(os.path.join(job["dir"], "s"), job["nlowers"])
    op = OPS[job["ops"]]
    extra = job.get("suf_opts", [])
    before = lower_digest(s["lowers"])
    with suf_mounted(ctx, s["lowers"], s["upper"], s["work"], s["mnt"], extra) as m:
        srec = Recorder(m)
        op(srec)
        ssnap = snapshot(m)
    with suf_mounted(ctx, s["lowers"], s["upper"], s["work"], s["mnt"], extra) as m:
        ssnap2 = snapshot(m)
    after = lower_digest(s["lowers"])
    problems = ["persistence: " + x for x in diff(ssnap, ssnap2, "suf live", "suf remounted")]
    problems += ["lower changed: " + x for x in diff(before, after, "before", "after")]
    return {"problems": problems, "suf_results": srec.results, "suf_snapshot": ssnap,
            "upper_snapshot": snapshot(s["upper"], prefixes=("user.", "trusted."))}


def main():
    with open(sys.argv[1]) as f:
        cfg = json.load(f)
    ctx = Ctx(cfg)
    out = {"ids": {"uid": os.getuid(), "gid": os.getgid(), "euid": os.geteuid()},
           "uid_map": open("/proc/self/uid_map").read().split(),
           "gid_map": open("/proc/self/gid_map").read().split(),
           "jobs": {}}
    os.umask(0o022)
    for job in cfg["jobs"]:
        try:
            res = (run_diff if job["kind"] == "diff" else run_expect)(ctx, job)
        except Failure as e:
            res = {"problems": ["FAILED: %s" % e]}
        except Exception:  # noqa: BLE001
            res = {"problems": ["EXCEPTION: %s" % traceback.format_exc()]}
        out["jobs"][job["name"]] = res
    out["daemons"] = ctx.daemons
    # whatever is still mounted by us below base (should be nothing)
    out["left_mounted"] = [m.mnt for m in mountinfo.below(cfg["base"])]
    sys.stdout.write("\n" + json.dumps(out) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(3))
    main()
