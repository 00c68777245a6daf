"""Shared helpers for the swiftunionfs integration suite.

The binary under test is $SUF_BIN (default: .build/release/swiftunionfs, else
.build/debug/swiftunionfs).  The kernel's overlayfs is the oracle.  Every test
works in its own tmp_path and unmounts whatever it mounted, even on failure.

Run:  python3 -m pytest tests -q
      SUF_BIN=/usr/bin/fuse-overlayfs python3 -m pytest tests -q   (harness check)
"""

import contextlib
import errno
import hashlib
import os
import signal
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
MOUNT_TIMEOUT = 20.0
TEST_TIMEOUT = int(os.environ.get("SUF_TEST_TIMEOUT", "300"))


def _default_bin():
    rel = REPO / ".build" / "release" / "swiftunionfs"
    dbg = REPO / ".build" / "debug" / "swiftunionfs"
    if rel.exists():
        return str(rel)
    return str(dbg)


SUF_BIN = os.environ.get("SUF_BIN") or _default_bin()
IS_FUSE_OVERLAYFS = os.path.basename(SUF_BIN) == "fuse-overlayfs"


# --------------------------------------------------------------------------
# pytest plumbing
# --------------------------------------------------------------------------

def pytest_configure(config):
    config.addinivalue_line(
        "markers", "timeout(seconds): per-test alarm timeout")
    config.addinivalue_line(
        "markers", "suf_only: only meaningful against swiftunionfs (skipped for fuse-overlayfs)")
    config.addinivalue_line(
        "markers", "fuse_overlayfs_differs(reason): known, legitimate difference of "
                   "fuse-overlayfs from the kernel (xfail when SUF_BIN is fuse-overlayfs)")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if IS_FUSE_OVERLAYFS and item.get_closest_marker("suf_only") and not os.environ.get("SUF_RUN_ALL"):
            item.add_marker(pytest.mark.skip(reason="swiftunionfs-only test"))
        m = item.get_closest_marker("fuse_overlayfs_differs")
        if IS_FUSE_OVERLAYFS and m:
            reason = m.args[0] if m.args else m.kwargs.get("reason", "fuse-overlayfs differs")
            item.add_marker(pytest.mark.xfail(reason=reason, strict=False))


def pytest_report_header(config):
    return [f"SUF_BIN={SUF_BIN} (fuse-overlayfs harness mode: {IS_FUSE_OVERLAYFS})"]


@pytest.fixture(scope="session", autouse=True)
def _environment_check(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("the integration suite needs root (mount, mknod, trusted xattrs)")
    if not os.path.exists("/dev/fuse"):
        pytest.skip("/dev/fuse missing")
    if not os.path.exists(SUF_BIN):
        pytest.exit(f"SUF_BIN {SUF_BIN} does not exist (build it or set SUF_BIN)", returncode=2)
    base = str(tmp_path_factory.getbasetemp())
    yield
    # Last line of defence: nothing mounted below our temp dirs may survive.
    leftovers = [m for m in mounted_points() if m.startswith(base)]
    for m in sorted(leftovers, key=len, reverse=True):
        _force_unmount(m)
    assert not leftovers, f"stale mounts were left behind (now lazily unmounted): {leftovers}"


class TestTimeout(Exception):
    pass


@pytest.fixture(autouse=True)
def _per_test_timeout(request):
    marker = request.node.get_closest_marker("timeout")
    seconds = int(marker.args[0]) if marker else TEST_TIMEOUT

    def handler(signum, frame):
        raise TestTimeout(f"test exceeded {seconds}s")

    old = signal.signal(signal.SIGALRM, handler)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


# --------------------------------------------------------------------------
# mounting
# --------------------------------------------------------------------------

def _unescape_mountinfo(s):
    out, i = [], 0
    while i < len(s):
        if s[i] == "\\" and i + 3 < len(s) and s[i + 1:i + 4].isdigit():
            out.append(chr(int(s[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(s[i])
            i += 1
    return "".join(out)


def mounted_points():
    with open("/proc/self/mountinfo") as f:
        return [_unescape_mountinfo(line.split()[4]) for line in f if line.strip()]


def is_mounted(mnt):
    return os.path.realpath(str(mnt)) in mounted_points()


def mount_fstype(mnt):
    mnt = os.path.realpath(str(mnt))
    fstype = None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            parts = line.split()
            if _unescape_mountinfo(parts[4]) == mnt:
                fstype = parts[parts.index("-") + 1]
    return fstype


def _force_unmount(mnt):
    for cmd in (["fusermount3", "-u", str(mnt)], ["umount", str(mnt)], ["umount", "-l", str(mnt)]):
        if not is_mounted(mnt):
            return
        try:
            subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=20)
        except subprocess.TimeoutExpired:
            pass


def escape_opt_path(p):
    """Escape a path for use inside -o lowerdir=/upperdir= (':' and ',' and '\\')."""
    return str(p).replace("\\", "\\\\").replace(":", "\\:").replace(",", "\\,")


def overlay_opts(lowers, upper=None, work=None):
    opts = ["lowerdir=" + ":".join(escape_opt_path(l) for l in lowers)]
    if upper is not None:
        opts.append(f"upperdir={escape_opt_path(upper)}")
    if work is not None:
        opts.append(f"workdir={escape_opt_path(work)}")
    return ",".join(opts)


def _new_mountpoint(hint):
    parent = os.path.dirname(os.path.abspath(str(hint)))
    return tempfile.mkdtemp(prefix="mnt-", dir=parent)


class SufMount(str):
    """The mountpoint path (a str) plus the daemon process."""
    proc: subprocess.Popen = None
    stderr_path: str = None

    def stderr(self):
        try:
            with open(self.stderr_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""


def start_suf(lowers, upper=None, work=None, extra_opts=(), mnt=None, args=()):
    """Start the daemon in the foreground and wait until the mount is live.

    Returns a SufMount (str path with .proc).  The caller must stop_suf() it."""
    if mnt is None:
        mnt = _new_mountpoint(upper if upper is not None else lowers[0])
    mnt = os.path.realpath(str(mnt))
    opts = overlay_opts(lowers, upper, work)
    if extra_opts:
        opts += "," + ",".join(extra_opts)
    fd, errpath = tempfile.mkstemp(prefix="suf-stderr-", suffix=".log",
                                   dir=os.path.dirname(mnt))
    errf = os.fdopen(fd, "w")
    cmd = [SUF_BIN, "-f", *args, "-o", opts, mnt]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=errf, stderr=errf,
                            start_new_session=True)
    errf.close()
    m = SufMount(mnt)
    m.proc, m.stderr_path = proc, errpath
    deadline = time.monotonic() + MOUNT_TIMEOUT
    while True:
        if is_mounted(mnt):
            return m
        rc = proc.poll()
        if rc is not None:
            pytest.fail(f"{SUF_BIN} exited with {rc} before mounting {mnt}\n"
                        f"cmd: {cmd}\nstderr:\n{m.stderr()}")
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait(10)
            pytest.fail(f"{SUF_BIN} did not mount {mnt} within {MOUNT_TIMEOUT}s\n"
                        f"stderr:\n{m.stderr()}")
        time.sleep(0.02)


def stop_suf(m, check=True):
    """Unmount (fusermount3 -u, fallback umount -l) and reap the daemon."""
    problems = []
    if is_mounted(m):
        r = subprocess.run(["fusermount3", "-u", str(m)], capture_output=True, text=True, timeout=20)
        if r.returncode != 0 and is_mounted(m):
            problems.append(f"fusermount3 -u failed: {r.stderr.strip()}")
            subprocess.run(["umount", "-l", str(m)], capture_output=True, timeout=20)
    proc = m.proc
    if proc is not None:
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            problems.append("daemon did not exit within 20s after unmount; killed")
            proc.kill()
            proc.wait(timeout=20)
    if check and problems:
        raise AssertionError("; ".join(problems) + f"\nstderr:\n{m.stderr()}")


@contextlib.contextmanager
def mount_suf(lowers, upper=None, work=None, extra_opts=(), mnt=None):
    m = start_suf(lowers, upper, work, extra_opts, mnt)
    ok = False
    try:
        yield m
        ok = True
    finally:
        stop_suf(m, check=ok)


@contextlib.contextmanager
def mount_kernel(lowers, upper=None, work=None, mnt=None):
    if mnt is None:
        mnt = _new_mountpoint(upper if upper is not None else lowers[0])
    mnt = os.path.realpath(str(mnt))
    opts = overlay_opts(lowers, upper, work)
    r = subprocess.run(["mount", "-t", "overlay", "overlay", "-o", opts, mnt],
                       capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        pytest.fail(f"kernel overlay mount failed: {r.stderr.strip()} (opts {opts})")
    try:
        yield mnt
    finally:
        r = subprocess.run(["umount", mnt], capture_output=True, text=True, timeout=30)
        if r.returncode != 0 and is_mounted(mnt):
            subprocess.run(["umount", "-l", mnt], capture_output=True, timeout=30)


# --------------------------------------------------------------------------
# snapshots
# --------------------------------------------------------------------------

def sha256_file(path, follow=False):
    h = hashlib.sha256()
    flags = os.O_RDONLY | (0 if follow else os.O_NOFOLLOW)
    fd = os.open(path, flags)
    try:
        while True:
            b = os.read(fd, 1 << 20)
            if not b:
                break
            h.update(b)
    finally:
        os.close(fd)
    return h.hexdigest()


def user_xattrs(path):
    out = {}
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError as e:
        if e.errno in (errno.ENOTSUP, errno.EPERM):
            return {}
        raise
    for n in sorted(names):
        if IS_FUSE_OVERLAYFS and n.startswith("user.fuseoverlayfs."):
            continue  # harness mode only: fuse-overlayfs's private bookkeeping
        if n.startswith("user."):
            try:
                out[n] = os.getxattr(path, n, follow_symlinks=False)
            except OSError as e:
                out[n] = f"<errno {errno.errorcode.get(e.errno, e.errno)}>"
    return out


def kind_of(mode):
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISCHR(mode):
        return "chr"
    if stat.S_ISBLK(mode):
        return "blk"
    if stat.S_ISFIFO(mode):
        return "fifo"
    if stat.S_ISSOCK(mode):
        return "sock"
    return "?"


def snapshot(root, inodes=False, dir_nlink=False, content=True, times=False):
    """relpath -> record.  Does not follow symlinks.  '.' is the root itself.

    With inodes=True each record carries st_ino and, for entries seen through
    readdir, 'd_ino' (the inode number os.scandir reported)."""
    root = str(root)
    snap = {}

    def record(path, rel, d_ino=None):
        st = os.lstat(path)
        k = kind_of(st.st_mode)
        r = {"type": k, "mode": oct(stat.S_IMODE(st.st_mode)), "uid": st.st_uid, "gid": st.st_gid}
        if k == "file":
            r["size"] = st.st_size
            if content:
                r["sha256"] = sha256_file(path)
        elif k == "symlink":
            r["target"] = os.readlink(path)
        elif k in ("chr", "blk"):
            r["rdev"] = (os.major(st.st_rdev), os.minor(st.st_rdev))
        if k != "dir" or dir_nlink:
            r["nlink"] = st.st_nlink
        r["xattrs"] = user_xattrs(path)
        if inodes:
            r["ino"] = st.st_ino
            if d_ino is not None:
                r["d_ino"] = d_ino
        if times:
            r["mtime_ns"] = st.st_mtime_ns
        snap[rel] = r
        return k

    def walk(dirpath, rel):
        with os.scandir(dirpath) as it:
            entries = sorted(it, key=lambda e: e.name)
        for e in entries:
            erel = e.name if rel == "." else f"{rel}/{e.name}"
            k = record(e.path, erel, e.inode() if inodes else None)
            if k == "dir":
                walk(e.path, erel)

    record(root, ".")
    walk(root, ".")
    return snap


def diff_snapshots(a, b, name_a="a", name_b="b", ignore=(), limit=40):
    """Readable list of differences between two snapshots."""
    out = []
    for p in sorted(set(a) | set(b)):
        if p not in b:
            out.append(f"only in {name_a}: {p} {a[p]}")
        elif p not in a:
            out.append(f"only in {name_b}: {p} {b[p]}")
        else:
            ra = {k: v for k, v in a[p].items() if k not in ignore}
            rb = {k: v for k, v in b[p].items() if k not in ignore}
            if ra != rb:
                keys = sorted(set(ra) | set(rb))
                d = ", ".join(f"{k}: {ra.get(k, '<none>')!r} vs {rb.get(k, '<none>')!r}"
                              for k in keys if ra.get(k) != rb.get(k))
                out.append(f"differs {p}: {d}")
    if len(out) > limit:
        out = out[:limit] + [f"... and {len(out) - limit} more"]
    return out


def assert_same_tree(a, b, name_a="kernel", name_b="suf", ignore=(), what=""):
    d = diff_snapshots(a, b, name_a, name_b, ignore)
    assert not d, f"{what}: {name_a} vs {name_b} differ:\n  " + "\n  ".join(d)


def check_d_ino(snap):
    """Every entry seen via readdir must report d_ino == st_ino."""
    bad = [f"{p}: d_ino {r['d_ino']} st_ino {r['ino']}" for p, r in snap.items()
           if "d_ino" in r and r["d_ino"] != r["ino"]]
    return bad


# --------------------------------------------------------------------------
# upper markers
# --------------------------------------------------------------------------

def upper_markers(upper):
    """(set of (relpath, 'whiteout'|'opaque'), sorted list of other '.wh.*' names)."""
    upper = str(upper)
    marks, others = set(), []
    for dirpath, dirnames, filenames in os.walk(upper):
        rel_dir = os.path.relpath(dirpath, upper)
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            st = os.lstat(p)
            if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                marks.add((rel, "whiteout"))
            elif name.startswith(".wh."):
                others.append(rel)
            if stat.S_ISDIR(st.st_mode) and is_opaque_dir(p):
                marks.add((rel, "opaque"))
    if is_opaque_dir(upper):
        marks.add((".", "opaque"))
    return marks, sorted(others)


def is_opaque_dir(p):
    for n in ("trusted.overlay.opaque", "user.overlay.opaque"):
        try:
            if os.getxattr(p, n, follow_symlinks=False) == b"y":
                return True
        except OSError:
            pass
    return False


# --------------------------------------------------------------------------
# layer builder
# --------------------------------------------------------------------------

@dataclass
class File:
    content: bytes = b""
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    xattrs: dict = field(default_factory=dict)
    size: int = None  # if set: sparse file of this size with content at offset 0


@dataclass
class Dir:
    entries: dict = field(default_factory=dict)
    mode: int = 0o755
    uid: int = 0
    gid: int = 0
    xattrs: dict = field(default_factory=dict)
    opaque: bool = False  # kernel format: trusted.overlay.opaque=y


@dataclass
class Symlink:
    target: str
    uid: int = 0
    gid: int = 0


@dataclass
class Hardlink:
    target: str  # path relative to the layer root


@dataclass
class Whiteout:
    """Kernel whiteout: a 0/0 character device."""


@dataclass
class Fifo:
    mode: int = 0o644


@dataclass
class Device:
    major: int
    minor: int
    mode: int = 0o644
    block: bool = False


def OCIWhiteout():
    """An OCI/AUFS `.wh.NAME` marker file (put it under the name '.wh.NAME')."""
    return File(b"", 0o644)


def OCIOpaque():
    """Put under the name '.wh..wh..opq'."""
    return File(b"", 0o644)


def _as_node(v):
    if isinstance(v, (bytes, str)):
        return File(v.encode() if isinstance(v, str) else v)
    if isinstance(v, dict):
        return Dir(v)
    return v


def build_layer(root, spec):
    """Create a layer tree at root from a description (dict name -> node)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    links = []
    dirs = []

    def make(path, node, rel):
        node = _as_node(node)
        if isinstance(node, Dir):
            path.mkdir(exist_ok=True)
            for name, child in node.entries.items():
                make(path / name, child, f"{rel}/{name}" if rel else name)
            dirs.append((path, node))
        elif isinstance(node, File):
            with open(path, "wb") as f:
                f.write(node.content)
                if node.size is not None:
                    f.truncate(node.size)
            os.chown(path, node.uid, node.gid)
            os.chmod(path, node.mode)
            for k, v in node.xattrs.items():
                os.setxattr(path, k, v if isinstance(v, bytes) else v.encode())
        elif isinstance(node, Symlink):
            os.symlink(node.target, path)
            os.lchown(path, node.uid, node.gid)
        elif isinstance(node, Hardlink):
            links.append((path, node))
        elif isinstance(node, Whiteout):
            os.mknod(path, stat.S_IFCHR | 0o000, 0)
        elif isinstance(node, Fifo):
            os.mkfifo(path, node.mode)
            os.chmod(path, node.mode)
        elif isinstance(node, Device):
            t = stat.S_IFBLK if node.block else stat.S_IFCHR
            os.mknod(path, t | node.mode, os.makedev(node.major, node.minor))
        else:
            raise TypeError(f"unknown node {node!r} at {rel}")

    top = _as_node(spec) if not isinstance(spec, dict) else Dir(spec)
    for name, child in top.entries.items():
        make(root / name, child, name)
    for path, node in links:
        os.link(root / node.target, path)
    # Metadata of directories last (children first: a 0555 dir is filled before chmod).
    for path, node in dirs:
        os.chown(path, node.uid, node.gid)
        for k, v in node.xattrs.items():
            os.setxattr(path, k, v if isinstance(v, bytes) else v.encode())
        if node.opaque:
            os.setxattr(path, "trusted.overlay.opaque", b"y")
        os.chmod(path, node.mode)
    if isinstance(top, Dir) and top is not spec:
        pass
    return str(root)


def build_layers(base, specs, names=None):
    """Build one directory per spec under base; returns their paths, top first."""
    base = Path(base)
    paths = []
    for i, spec in enumerate(specs):
        name = names[i] if names else f"l{i + 1}"
        paths.append(build_layer(base / name, spec))
    return paths


def make_dirs(*paths):
    for p in paths:
        os.makedirs(p, exist_ok=True)
    return [str(p) for p in paths]


# --------------------------------------------------------------------------
# recording operation results
# --------------------------------------------------------------------------

class Recorder:
    """Runs operations and records each outcome (value or errno name)."""

    def __init__(self, root):
        self.root = str(root)
        self.results = []

    def p(self, rel):
        return os.path.join(self.root, rel)

    def __call__(self, label, fn, *args, **kwargs):
        try:
            v = fn(*args, **kwargs)
            out = ("ok", v)
        except OSError as e:
            out = ("err", errno.errorcode.get(e.errno, str(e.errno)))
        self.results.append((label, out))
        return out


def compare_results(kres, sres):
    lines = []
    for i in range(max(len(kres), len(sres))):
        k = kres[i] if i < len(kres) else None
        s = sres[i] if i < len(sres) else None
        if k != s:
            lines.append(f"#{i}: kernel {k!r} vs suf {s!r}")
    return lines
