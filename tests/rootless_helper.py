#!/usr/bin/python3
"""Rootless scenarios for swiftunionfs, run *inside* a user + mount namespace.

Used two ways (stdlib only, so Debian's /usr/bin/python3 runs it as any user):

 * imported by tests/test_rootless.py (as root, outside any namespace) to build
   layer trees from specs, with namespace ids translated to host ids;
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

import errno
import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
import traceback

MOUNT_TIMEOUT = 20.0
CMD_TIMEOUT = 30

# --------------------------------------------------------------------------
# layer specs (ids are namespace ids; the builder translates them)
# --------------------------------------------------------------------------


class F:
    def __init__(self, content=b"", mode=0o644, uid=0, gid=0, xattrs=None):
        self.content = content.encode() if isinstance(content, str) else content
        self.mode, self.uid, self.gid, self.xattrs = mode, uid, gid, xattrs or {}


class D:
    def __init__(self, entries=None, mode=0o755, uid=0, gid=0, xattrs=None, opaque=False):
        self.entries = entries or {}
        self.mode, self.uid, self.gid, self.xattrs, self.opaque = mode, uid, gid, xattrs or {}, opaque


class L:
    def __init__(self, target, uid=0, gid=0):
        self.target, self.uid, self.gid = target, uid, gid


class H:
    def __init__(self, target):
        self.target = target


class W:
    """Kernel whiteout (0/0 character device)."""


def _node(v):
    if isinstance(v, (str, bytes)):
        return F(v)
    if isinstance(v, dict):
        return D(v)
    return v


def build_layer(root, spec, hostid=lambda i: i):
    """Create the tree `spec` (dict name -> node) at root.  hostid maps the
    spec's (namespace) ids to the ids written.  Opaque dirs get the userxattr
    format (user.overlay.opaque=y).  The root dir itself gets uid/gid 0."""
    os.makedirs(root, exist_ok=True)
    dirs, links = [], []

    def make(path, node):
        node = _node(node)
        if isinstance(node, D):
            os.mkdir(path)
            for name, child in node.entries.items():
                make(os.path.join(path, name), child)
            dirs.append((path, node))
        elif isinstance(node, F):
            with open(path, "wb") as f:
                f.write(node.content)
            os.chown(path, hostid(node.uid), hostid(node.gid))
            os.chmod(path, node.mode)
            for k, v in node.xattrs.items():
                os.setxattr(path, k, v)
        elif isinstance(node, L):
            os.symlink(node.target, path)
            os.lchown(path, hostid(node.uid), hostid(node.gid))
        elif isinstance(node, H):
            links.append((path, node.target))
        elif isinstance(node, W):
            os.mknod(path, stat.S_IFCHR | 0o000, 0)
            os.lchown(path, hostid(0), hostid(0))
        else:
            raise TypeError(node)

    for name, child in spec.items():
        make(os.path.join(root, name), child)
    for path, target in links:
        os.link(os.path.join(root, target), path)
    for path, node in dirs:
        os.chown(path, hostid(node.uid), hostid(node.gid))
        for k, v in node.xattrs.items():
            os.setxattr(path, k, v)
        if node.opaque:
            os.setxattr(path, "user.overlay.opaque", b"y")
        os.chmod(path, node.mode)
    os.chown(root, hostid(0), hostid(0))
    return root


# --------------------------------------------------------------------------
# snapshots
# --------------------------------------------------------------------------

def sha256_file(path):
    h = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        while True:
            b = os.read(fd, 1 << 20)
            if not b:
                break
            h.update(b)
    finally:
        os.close(fd)
    return h.hexdigest()


def xattrs_of(path, prefixes=("user.",)):
    out = {}
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError as e:
        if e.errno in (errno.ENOTSUP, errno.EPERM):
            return {}
        raise
    for n in sorted(names):
        if any(n.startswith(p) for p in prefixes):
            try:
                out[n] = os.getxattr(path, n, follow_symlinks=False).decode(errors="replace")
            except OSError as e:
                out[n] = "<errno %s>" % errno.errorcode.get(e.errno, e.errno)
    return out


def kind_of(mode):
    for test, name in ((stat.S_ISDIR, "dir"), (stat.S_ISREG, "file"), (stat.S_ISLNK, "symlink"),
                       (stat.S_ISCHR, "chr"), (stat.S_ISBLK, "blk"), (stat.S_ISFIFO, "fifo"),
                       (stat.S_ISSOCK, "sock")):
        if test(mode):
            return name
    return "?"


def snapshot(root, prefixes=("user.",), times=False):
    """relpath -> record; '.' is root.  Does not follow symlinks."""
    root = str(root)
    snap = {}

    def record(path, rel):
        st = os.lstat(path)
        k = kind_of(st.st_mode)
        r = {"type": k, "mode": oct(stat.S_IMODE(st.st_mode)), "uid": st.st_uid, "gid": st.st_gid}
        if k == "file":
            r["size"] = st.st_size
            r["sha256"] = sha256_file(path)
        elif k == "symlink":
            r["target"] = os.readlink(path)
        elif k in ("chr", "blk"):
            r["rdev"] = [os.major(st.st_rdev), os.minor(st.st_rdev)]
        if k != "dir":
            r["nlink"] = st.st_nlink
        r["xattrs"] = xattrs_of(path, prefixes)
        if times:
            r["mtime_ns"] = st.st_mtime_ns
        snap[rel] = r
        return k

    def walk(dirpath, rel):
        with os.scandir(dirpath) as it:
            entries = sorted(it, key=lambda e: e.name)
        for e in entries:
            erel = e.name if rel == "." else rel + "/" + e.name
            if record(e.path, erel) == "dir":
                walk(e.path, erel)

    record(root, ".")
    walk(root, ".")
    return snap


def diff_snapshots(a, b, name_a, name_b, limit=40):
    out = []
    for p in sorted(set(a) | set(b)):
        if p not in b:
            out.append("only in %s: %s %s" % (name_a, p, a[p]))
        elif p not in a:
            out.append("only in %s: %s %s" % (name_b, p, b[p]))
        elif a[p] != b[p]:
            keys = sorted(set(a[p]) | set(b[p]))
            out.append("differs %s: " % p + ", ".join(
                "%s: %r vs %r" % (k, a[p].get(k, "<none>"), b[p].get(k, "<none>"))
                for k in keys if a[p].get(k) != b[p].get(k)))
    if len(out) > limit:
        out = out[:limit] + ["... and %d more" % (len(out) - limit)]
    return out


def upper_markers(upper):
    """Sorted [relpath, 'whiteout'|'opaque'|'trusted-opaque'] plus stray '.wh.*' names."""
    marks, others = set(), []

    def opaque(p):
        res = []
        for n, tag in (("user.overlay.opaque", "opaque"), ("trusted.overlay.opaque", "trusted-opaque")):
            try:
                if os.getxattr(p, n, follow_symlinks=False) == b"y":
                    res.append(tag)
            except OSError:
                pass
        return res

    for dirpath, dirnames, filenames in os.walk(upper):
        rel_dir = os.path.relpath(dirpath, upper)
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            rel = name if rel_dir == "." else rel_dir + "/" + name
            st = os.lstat(p)
            if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                marks.add((rel, "whiteout"))
            elif name.startswith(".wh."):
                others.append(rel)
            if stat.S_ISDIR(st.st_mode):
                for t in opaque(p):
                    marks.add((rel, t))
    for t in opaque(upper):
        marks.add((".", t))
    return sorted(list(m) for m in marks), sorted(others)


# --------------------------------------------------------------------------
# operations
# --------------------------------------------------------------------------

class Recorder:
    def __init__(self, root):
        self.root = str(root)
        self.results = []

    def p(self, rel):
        return os.path.join(self.root, rel)

    def __call__(self, label, fn, *args, **kwargs):
        try:
            v = fn(*args, **kwargs)
            if isinstance(v, bytes):
                v = v.decode(errors="replace")
            out = ["ok", v if isinstance(v, (int, str, type(None), list, bool)) else repr(v)]
        except OSError as e:
            out = ["err", errno.errorcode.get(e.errno, str(e.errno))]
        self.results.append([label, out])
        return out


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


def as_ids(uid, gid, fn, *args):
    """Run fn(*args) in a child with these ids (no supplementary groups);
    return its value, or raise OSError with the child's errno."""
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(rfd)
        try:
            os.setgroups([])
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)
            os.umask(0o022)
            v = fn(*args)
            msg = json.dumps(["ok", v if isinstance(v, (int, str, type(None), list)) else repr(v)])
        except OSError as e:
            msg = json.dumps(["err", e.errno])
        except BaseException as e:  # noqa: BLE001
            msg = json.dumps(["exc", repr(e)])
        os.write(wfd, msg.encode())
        os._exit(0)
    os.close(wfd)
    data = b""
    while True:
        b = os.read(rfd, 65536)
        if not b:
            break
        data += b
    os.close(rfd)
    os.waitpid(pid, 0)
    kind, v = json.loads(data.decode() or '["exc", "child wrote nothing"]')
    if kind == "err":
        raise OSError(v, os.strerror(v))
    if kind == "exc":
        raise RuntimeError(v)
    return v


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

def _unescape(s):
    out, i = [], 0
    while i < len(s):
        if s[i] == "\\" and s[i + 1:i + 4].isdigit():
            out.append(chr(int(s[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(s[i])
            i += 1
    return "".join(out)


def mount_of(mnt):
    """fstype of the topmost mount at mnt, or None."""
    mnt = os.path.realpath(mnt)
    fstype = None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            parts = line.split()
            if _unescape(parts[4]) == mnt:
                fstype = parts[parts.index("-") + 1]
    return fstype


def esc(p):
    return str(p).replace("\\", "\\\\").replace(":", "\\:").replace(",", "\\,")


def overlay_opts(lowers, upper, work):
    return "lowerdir=%s,upperdir=%s,workdir=%s" % (":".join(esc(l) for l in lowers), esc(upper), esc(work))


class Ctx:
    def __init__(self, cfg):
        self.bin = cfg["bin"]
        self.pidfile = cfg["pidfile"]
        self.daemons = []      # [{pid, exit, stderr, unmounted}]
        self.log = []

    def note(self, s):
        self.log.append(s)


class Failed(Exception):
    pass


class KernelMount:
    def __init__(self, ctx, lowers, upper, work, mnt):
        self.ctx, self.mnt = ctx, mnt
        self.opts = "userxattr," + overlay_opts(lowers, upper, work)

    def __enter__(self):
        r = subprocess.run(["mount", "-t", "overlay", "overlay", "-o", self.opts, self.mnt],
                           capture_output=True, text=True, timeout=CMD_TIMEOUT)
        if r.returncode != 0:
            raise Failed("kernel overlay mount failed: %s (opts %s)" % (r.stderr.strip(), self.opts))
        return self.mnt

    def __exit__(self, *exc):
        r = subprocess.run(["umount", self.mnt], capture_output=True, text=True, timeout=CMD_TIMEOUT)
        if r.returncode != 0 and mount_of(self.mnt):
            subprocess.run(["umount", "-l", self.mnt], capture_output=True, timeout=CMD_TIMEOUT)
            if exc[0] is None:
                raise Failed("umount of kernel overlay %s failed: %s" % (self.mnt, r.stderr.strip()))


class SufMount:
    def __init__(self, ctx, lowers, upper, work, mnt, extra=()):
        self.ctx, self.mnt = ctx, mnt
        opts = overlay_opts(lowers, upper, work)
        if extra:
            opts += "," + ",".join(extra)
        self.cmd = [ctx.bin, "-f", "-o", opts, mnt]
        self.errpath = mnt.rstrip("/") + ".stderr"
        self.rec = None

    def stderr(self):
        try:
            with open(self.errpath, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def __enter__(self):
        errf = open(self.errpath, "w")
        self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=errf, stderr=errf,
                                     start_new_session=True)
        errf.close()
        self.rec = {"pid": self.proc.pid, "cmd": self.cmd, "exit": None}
        self.ctx.daemons.append(self.rec)
        with open(self.ctx.pidfile, "a") as f:
            f.write("%d\n" % self.proc.pid)
        deadline = time.monotonic() + MOUNT_TIMEOUT
        while mount_of(self.mnt) != "fuse.swiftunionfs":
            rc = self.proc.poll()
            if rc is not None:
                self.rec["exit"] = rc
                raise Failed("swiftunionfs exited with %s before mounting\ncmd: %s\nstderr:\n%s"
                             % (rc, self.cmd, self.stderr()))
            if time.monotonic() > deadline:
                self.proc.kill()
                self.rec["exit"] = self.proc.wait(10)
                raise Failed("swiftunionfs did not mount within %ss\nstderr:\n%s" % (MOUNT_TIMEOUT, self.stderr()))
            time.sleep(0.02)
        return self.mnt

    def __exit__(self, *exc):
        problems = []
        if mount_of(self.mnt):
            r = subprocess.run(["umount", self.mnt], capture_output=True, text=True, timeout=CMD_TIMEOUT)
            if r.returncode != 0 and mount_of(self.mnt):
                problems.append("umount failed: %s" % r.stderr.strip())
                subprocess.run(["umount", "-l", self.mnt], capture_output=True, timeout=CMD_TIMEOUT)
        try:
            self.rec["exit"] = self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            problems.append("daemon did not exit within 20s after unmount; killed")
            self.proc.kill()
            self.rec["exit"] = self.proc.wait(timeout=20)
        self.rec["stderr"] = self.stderr()[-4000:]
        if self.rec["exit"] != 0:
            problems.append("daemon exit status %s" % self.rec["exit"])
        if problems and exc[0] is None:
            raise Failed("; ".join(problems) + "\ncmd: %s\nstderr:\n%s" % (self.cmd, self.stderr()))


# --------------------------------------------------------------------------
# jobs
# --------------------------------------------------------------------------

def side_dirs(d, nlowers):
    return dict(lowers=[os.path.join(d, "l%d" % (i + 1)) for i in range(nlowers)],
                upper=os.path.join(d, "upper"), work=os.path.join(d, "work"),
                xwork=os.path.join(d, "xwork"), mnt=os.path.join(d, "mnt"))


def lower_digest(lowers):
    """Everything about the lower trees that swiftunionfs must not change."""
    out = {}
    for i, l in enumerate(lowers):
        snap = snapshot(l, prefixes=("user.", "trusted.", "security."), times=True)
        for rel, rec in snap.items():
            if rec["type"] == "dir":
                rec.pop("mtime_ns", None)  # atime/mtime of dirs: reading never changes mtime, but be lenient
            out["l%d/%s" % (i + 1, rel)] = rec
    return out


def run_diff(ctx, job):
    k = side_dirs(os.path.join(job["dir"], "k"), job["nlowers"])
    s = side_dirs(os.path.join(job["dir"], "s"), job["nlowers"])
    op = OPS[job["ops"]]
    extra = job.get("suf_opts", [])
    problems = []
    before = lower_digest(s["lowers"])

    with KernelMount(ctx, k["lowers"], k["upper"], k["work"], k["mnt"]) as m:
        krec = Recorder(m)
        op(krec)
        ksnap = snapshot(m)
    with SufMount(ctx, s["lowers"], s["upper"], s["work"], s["mnt"], extra) as m:
        srec = Recorder(m)
        op(srec)
        ssnap = snapshot(m)

    op_diffs = []
    for i in range(max(len(krec.results), len(srec.results))):
        a = krec.results[i] if i < len(krec.results) else None
        b = srec.results[i] if i < len(srec.results) else None
        if a != b:
            op_diffs.append([i, (a or b)[0], a and a[1], b and b[1]])
    problems += ["merged view: " + x for x in diff_snapshots(ksnap, ssnap, "kernel", "suf")]
    kmarks, kothers = upper_markers(k["upper"])
    smarks, sothers = upper_markers(s["upper"])
    if kmarks != smarks:
        problems.append("upper markers differ: kernel %s vs suf %s" % (kmarks, smarks))
    if sothers:
        problems.append("swiftunionfs left '.wh.*' names in upper: %s" % sothers)

    with KernelMount(ctx, k["lowers"], k["upper"], k["work"], k["mnt"]) as m:
        ksnap2 = snapshot(m)
    with SufMount(ctx, s["lowers"], s["upper"], s["work"], s["mnt"], extra) as m:
        ssnap2 = snapshot(m)
    problems += ["after remount: " + x for x in diff_snapshots(ksnap2, ssnap2, "kernel", "suf")]
    problems += ["persistence: " + x for x in diff_snapshots(ssnap, ssnap2, "suf live", "suf remounted")]

    with KernelMount(ctx, s["lowers"], s["upper"], s["xwork"], s["mnt"]) as m:
        x1 = snapshot(m)
    problems += ["cross-mount: " + x for x in diff_snapshots(ssnap2, x1, "suf", "kernel over suf's upper")]
    with SufMount(ctx, k["lowers"], k["upper"], k["xwork"], k["mnt"], extra) as m:
        x2 = snapshot(m)
    problems += ["cross-mount: " + x for x in diff_snapshots(ksnap2, x2, "kernel", "suf over kernel's upper")]

    after = lower_digest(s["lowers"])
    problems += ["lower changed: " + x for x in diff_snapshots(before, after, "before", "after")]
    return {"problems": problems, "op_diffs": op_diffs, "kernel_results": krec.results, "suf_results": srec.results,
            "suf_snapshot": ssnap, "kernel_snapshot": ksnap, "markers": smarks, "kernel_markers": kmarks}


def run_expect(ctx, job):
    s = side_dirs(os.path.join(job["dir"], "s"), job["nlowers"])
    op = OPS[job["ops"]]
    extra = job.get("suf_opts", [])
    before = lower_digest(s["lowers"])
    with SufMount(ctx, s["lowers"], s["upper"], s["work"], s["mnt"], extra) as m:
        srec = Recorder(m)
        op(srec)
        ssnap = snapshot(m)
    with SufMount(ctx, s["lowers"], s["upper"], s["work"], s["mnt"], extra) as m:
        ssnap2 = snapshot(m)
    after = lower_digest(s["lowers"])
    problems = ["persistence: " + x for x in diff_snapshots(ssnap, ssnap2, "suf live", "suf remounted")]
    problems += ["lower changed: " + x for x in diff_snapshots(before, after, "before", "after")]
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
        except Failed as e:
            res = {"problems": ["FAILED: %s" % e]}
        except Exception:  # noqa: BLE001
            res = {"problems": ["EXCEPTION: %s" % traceback.format_exc()]}
        out["jobs"][job["name"]] = res
    out["daemons"] = ctx.daemons
    # whatever is still mounted by us below base (should be nothing)
    with open("/proc/self/mountinfo") as f:
        out["left_mounted"] = [_unescape(l.split()[4]) for l in f
                               if _unescape(l.split()[4]).startswith(cfg["base"])]
    sys.stdout.write("\n" + json.dumps(out) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(3))
    main()
