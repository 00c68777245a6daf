"""The kernel overlay's optional features, against the kernel with the same options:
redirect_dir (directory rename), metacopy (metadata-only copy-up), data-only lower
layers (lowerdir=L::D) and the xattr whiteouts of Linux 6.7+.

Each differential scenario runs the same operations on the kernel's overlayfs and on
swiftunionfs over identical layer copies, then checks, as tests/test_writes.py does:

 (a) every operation's outcome (value or errno) matches;
 (b) the merged views match (type, mode, owner, size, content, symlink target, user
     xattrs, nlink of non-directories);
 (c) the overlay's own marks written to upper match exactly: whiteouts, opaque
     directories, and every overlay.redirect and overlay.metacopy value;
 (d) each upper remounted on its own shows the same;
 (e) both ways across: the kernel over swiftunionfs's upper shows swiftunionfs's view,
     and swiftunionfs over the kernel's upper shows the kernel's view.
"""

import contextlib
import errno
import os
import stat
import subprocess
import tempfile
import time

import pytest

from conftest import (
    SUF_BIN, Dir, File, Hardlink, Recorder, Symlink, build_layer, build_layers, check_d_ino,
    compare_results, diff_snapshots, escape_opt_path, is_mounted, make_dirs, snapshot,
)

from test_rootless import base_dir, dev_fuse, rl_user  # noqa: F401 (fixtures for the rootless test)
from test_writes import RENAME_EXCHANGE, RENAME_NOREPLACE, renameat2

pytestmark = pytest.mark.suf_only

FEATURES = "redirect_dir=on,metacopy=on"


# --------------------------------------------------------------------------
# mounting with options (small: conftest's helpers take no kernel options)
# --------------------------------------------------------------------------

def lowerdir(lowers, data=()):
    """lowerdir=L1:L2[::D1::D2], each path escaped."""
    return "lowerdir=" + ":".join(escape_opt_path(l) for l in lowers) + "".join(
        "::" + escape_opt_path(d) for d in data)


def options(lowers, upper=None, work=None, opts="", data=()):
    o = [lowerdir(lowers, data)]
    if upper is not None:
        o.append(f"upperdir={escape_opt_path(upper)}")
    if work is not None:
        o.append(f"workdir={escape_opt_path(work)}")
    if opts:
        o.append(opts)
    return ",".join(o)


@contextlib.contextmanager
def kmount(lowers, upper=None, work=None, opts="", data=()):
    mnt = tempfile.mkdtemp(prefix="kmnt-", dir=os.path.dirname(str(lowers[0])))
    o = options(lowers, upper, work, opts, data)
    r = subprocess.run(["mount", "-t", "overlay", "overlay", "-o", o, mnt], capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        pytest.fail(f"kernel overlay mount failed: {r.stderr.strip()} (opts {o})")
    try:
        yield mnt
    finally:
        if subprocess.run(["umount", mnt], capture_output=True, timeout=30).returncode != 0 and is_mounted(mnt):
            subprocess.run(["umount", "-l", mnt], capture_output=True, timeout=30)


class SufProc(str):
    """A mountpoint (a str) with the swiftunionfs daemon serving it."""
    proc: subprocess.Popen = None
    log: str = None

    def stderr(self):
        with open(self.log, errors="replace") as f:
            return f.read()


def start(lowers, upper=None, work=None, opts="", data=()):
    """Starts swiftunionfs -f on a new mountpoint and waits until it is mounted."""
    mnt = tempfile.mkdtemp(prefix="smnt-", dir=os.path.dirname(str(lowers[0])))
    fd, log = tempfile.mkstemp(prefix="suf-stderr-", suffix=".log", dir=os.path.dirname(mnt))
    with os.fdopen(fd, "w") as errf:
        proc = subprocess.Popen([SUF_BIN, "-f", "-o", options(lowers, upper, work, opts, data), mnt],
                                stdin=subprocess.DEVNULL, stdout=errf, stderr=errf, start_new_session=True)
    m = SufProc(mnt)
    m.proc, m.log = proc, log
    deadline = time.monotonic() + 20
    while not is_mounted(mnt):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(m)
            pytest.fail(f"swiftunionfs did not mount: {m.stderr()}")
        time.sleep(0.02)
    return m


def stop(m):
    """Unmounts (fusermount3 -u, else umount -l) and reaps the daemon (killed if it hangs)."""
    if is_mounted(m):
        if subprocess.run(["fusermount3", "-u", m], capture_output=True, timeout=30).returncode != 0:
            subprocess.run(["umount", "-l", m], capture_output=True, timeout=30)
    try:
        m.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        m.proc.kill()
        m.proc.wait(timeout=30)


@contextlib.contextmanager
def smount(lowers, upper=None, work=None, opts="", data=()):
    m = start(lowers, upper, work, opts, data)
    try:
        yield m
    finally:
        stop(m)


def overlay_marks(upper):
    """relpath -> what the overlay itself recorded there: a whiteout, opaque, redirect,
    metacopy (origin, impure and uuid are the kernel's alone: swiftunionfs does not write them)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(upper):
        for name in [""] + dirnames + filenames:
            p = os.path.join(dirpath, name) if name else dirpath
            rel = os.path.relpath(p, upper)
            if not name and dirpath != str(upper):
                continue
            st = os.lstat(p)
            rec = []
            if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                rec.append("whiteout")
            for x in ("opaque", "redirect", "metacopy", "whiteout"):
                for ns in ("trusted", "user"):
                    try:
                        v = os.getxattr(p, f"{ns}.overlay.{x}", follow_symlinks=False)
                        rec.append(f"{ns}.{x}={v!r}")
                    except OSError:
                        pass
            if rec:
                out[rel] = rec
    return out


def both(tmp_path, specs, op, opts=FEATURES, upper_spec=None, check_marks=True):
    """Runs op(recorder) on the kernel and on swiftunionfs with `opts`; checks (a)-(e)."""
    sides = {}
    for side in ("k", "s"):
        base = tmp_path / side
        lowers = build_layers(base, specs)
        upper, work, xwork = make_dirs(base / "upper", base / "work", base / "xwork")
        if upper_spec:
            build_layer(upper, upper_spec)
        sides[side] = dict(lowers=lowers, upper=upper, work=work, xwork=xwork)
    k, s = sides["k"], sides["s"]
    with kmount(k["lowers"], k["upper"], k["work"], opts) as m:
        krec = Recorder(m)
        op(krec)
        klive = snapshot(m)
    with smount(s["lowers"], s["upper"], s["work"], opts) as m:
        srec = Recorder(m)
        op(srec)
        slive = snapshot(m)
    problems = []
    d = compare_results(krec.results, srec.results)
    if d:
        problems.append("operation results differ:\n  " + "\n  ".join(d))
    d = diff_snapshots(klive, slive, "kernel", "suf")
    if d:
        problems.append("merged views differ:\n  " + "\n  ".join(d))
    kmarks, smarks = overlay_marks(k["upper"]), overlay_marks(s["upper"])
    if check_marks and kmarks != smarks:
        keys = sorted(set(kmarks) | set(smarks))
        problems.append("overlay marks in upper differ:\n  " + "\n  ".join(
            f"{p}: kernel {kmarks.get(p)} suf {smarks.get(p)}" for p in keys if kmarks.get(p) != smarks.get(p)))
    assert not problems, "\n".join(problems)
    # (d) each on its own upper again, (e) each over the other's upper.
    with kmount(k["lowers"], k["upper"], k["work"], opts) as m:
        assert_tree(klive, snapshot(m), "kernel live", "kernel remounted")
    with smount(s["lowers"], s["upper"], s["work"], opts) as m:
        assert_tree(slive, snapshot(m), "suf live", "suf remounted")
    with kmount(s["lowers"], s["upper"], s["xwork"], opts) as m:
        assert_tree(slive, snapshot(m), "suf", "kernel over suf's upper")
    with smount(k["lowers"], k["upper"], k["xwork"], opts) as m:
        assert_tree(klive, snapshot(m), "kernel", "suf over kernel's upper")
    return krec.results, kmarks, klive


def assert_tree(a, b, na, nb):
    d = diff_snapshots(a, b, na, nb)
    assert not d, f"{na} vs {nb}:\n  " + "\n  ".join(d)


def write(path, data, mode="ab"):
    with open(path, mode) as f:
        f.write(data)


def read(path):
    with open(path, "rb") as f:
        return f.read()


BASE = [
    {   # l1 (top lower)
        "a": {"f": File(b"hello\n", 0o644, uid=1000, gid=1000), "sub": {"g": "g\n", "deep": {"h": "h\n"}},
              "gone": "to be removed\n"},
        "b": {"y": "y\n"},
        "c": {"z": "z in c\n"},
        "empty": {},
        "top": "top\n",
        "toplink": Hardlink("top"),
        "lnk": Symlink("top"),
        "big": File(b"B" * 4096, size=3 << 20),
    },
    {   # l2
        "a": {"from_l2": "a from l2\n", "sub": {"l2g": "l2\n"}},
        "b": {"l2y": "l2 y\n"},
        "m": {"n": "n\n"},
    },
]


# --------------------------------------------------------------------------
# redirect_dir=on
# --------------------------------------------------------------------------

def test_directory_renames(tmp_path):
    def op(r):
        p = r.p
        r("rename merged dir", os.rename, p("a"), p("a2"))
        r("list renamed", lambda: sorted(os.listdir(p("a2"))))
        r("rename it again", os.rename, p("a2"), p("a3"))
        r("old name gone", os.lstat, p("a"))
        r("move subdir out of renamed", os.rename, p("a3/sub"), p("c/sub2"))
        r("list moved", lambda: sorted(os.listdir(p("c/sub2"))))
        r("rename holder", os.rename, p("c"), p("c2"))
        r("mkdir", os.mkdir, p("e"))
        r("move into new dir", os.rename, p("c2"), p("e/c3"))
        r("deep read", read, p("e/c3/sub2/deep/h"))
        r("lower-only dir", os.rename, p("m"), p("m2"))
        r("list", lambda: sorted(os.listdir(r.root)))
    both(tmp_path, BASE, op)
    # Renamed directories keep their (lower) inode numbers, in readdir as in stat.
    lowers = [str(tmp_path / "s" / "l1"), str(tmp_path / "s" / "l2")]
    with smount(lowers, str(tmp_path / "s" / "upper"), str(tmp_path / "s" / "work"), FEATURES) as m:
        snap = snapshot(m, inodes=True)
        assert check_d_ino(snap) == []
        assert snap["a3"]["ino"] == os.lstat(tmp_path / "s" / "l1" / "a").st_ino
        assert snap["e/c3/sub2"]["ino"] == os.lstat(tmp_path / "s" / "l1" / "a" / "sub").st_ino


def test_redirect_dir_without_metacopy(tmp_path):
    """redirect_dir=on alone: directories get redirects, files are copied up whole."""
    def op(r):
        p = r.p
        r("rename lower file", os.rename, p("top"), p("top2"))
        r("chown lower file", os.chown, p("a/f"), 3, 3)
        r("rename merged dir", os.rename, p("a"), p("a2"))
        r("move lower file into it", os.rename, p("b/y"), p("a2/y"))
        r("list", lambda: sorted(os.listdir(p("a2"))))
    res, marks, _ = both(tmp_path, BASE, op, opts="redirect_dir=on")
    assert not any("metacopy" in m for v in marks.values() for m in v), marks


def test_redirect_max(tmp_path):
    """An absolute redirect longer than 256 bytes (the kernel's redirect_max) is not
    written: EXDEV, and mv copies."""
    n = "d" * 60
    deep = {n: {n: {n: {n: {"ok": {"f": "f"}, n: {"far": {"f": "f"}}}}}}}
    four, five = "/".join([n] * 4), "/".join([n] * 5)

    def op(r):
        r("mkdir", os.mkdir, r.p("t"))
        r("redirect of 250 bytes", os.rename, r.p(four + "/ok"), r.p("t/ok"))
        r("redirect of 312 bytes", os.rename, r.p(five + "/far"), r.p("t/far"))
        r("list", lambda: sorted(os.listdir(r.p("t"))))
    res, marks, _ = both(tmp_path, [deep], op)
    assert res[1][1] == ("ok", None) and res[2][1] == ("err", "EXDEV"), res


def test_changes_inside_renamed_directories(tmp_path):
    def op(r):
        p = r.p
        r("rename", os.rename, p("a"), p("a2"))
        r("whiteout below renamed", os.unlink, p("a2/gone"))
        r("copy-up inside renamed", write, p("a2/sub/g"), b"more\n")
        r("rm -rf sub", lambda: [os.unlink(p("a2/sub/deep/h")), os.rmdir(p("a2/sub/deep")),
                                 os.unlink(p("a2/sub/g")), os.unlink(p("a2/sub/l2g")), os.rmdir(p("a2/sub"))])
        r("opaque dir under redirect", os.mkdir, p("a2/sub"))
        r("new file in it", write, p("a2/sub/new"), b"n\n", "wb")
        r("create in renamed", write, p("a2/created"), b"c\n", "wb")
        r("chmod lower file in renamed", os.chmod, p("a2/from_l2"), 0o600)
        r("list", lambda: sorted(os.listdir(p("a2"))))
        r("list sub", lambda: sorted(os.listdir(p("a2/sub"))))
        r("move renamed dir elsewhere", os.rename, p("a2"), p("b/a4"))
        r("read through", read, p("b/a4/from_l2"))
    both(tmp_path, BASE, op)


def test_rename_over_and_rmdir_of_redirected_directories(tmp_path):
    def op(r):
        p = r.p
        r("rename", os.rename, p("b"), p("b2"))
        r("empty it", lambda: [os.unlink(p("b2/y")), os.unlink(p("b2/l2y"))])
        r("rename over lower empty dir", os.rename, p("b2"), p("empty"))
        r("list", lambda: sorted(os.listdir(r.root)))
        r("rename a", os.rename, p("a"), p("a2"))
        r("rename onto the redirected one (not empty)", os.rename, p("m"), p("a2"))
        r("rmdir redirected (not empty)", os.rmdir, p("a2"))
        r("rmdir redirected empty", os.rmdir, p("empty"))
        r("gone", os.lstat, p("empty"))
        r("mkdir where it was", os.mkdir, p("empty"))
        r("list empty", lambda: sorted(os.listdir(p("empty"))))
        r("empty the redirected a2", lambda: [os.unlink(p("a2/" + n)) for n in ("f", "gone", "from_l2")])
        r("rm its sub", lambda: subprocess.run(["rm", "-rf", p("a2/sub")], check=True) and None)
        r("rename a merged dir over the empty redirected one", os.rename, p("c"), p("a2"))
        r("list a2", lambda: sorted(os.listdir(p("a2"))))
        r("list", lambda: sorted(os.listdir(r.root)))
    both(tmp_path, BASE, op)


def test_exchange_of_redirected_directories(tmp_path):
    def op(r):
        p = r.p
        r("exchange two merged dirs", renameat2, p("a"), p("b"), RENAME_EXCHANGE)
        r("list a", lambda: sorted(os.listdir(p("a"))))
        r("list b", lambda: sorted(os.listdir(p("b"))))
        r("exchange merged with pure upper", lambda: (os.mkdir(p("new")), renameat2(p("m"), p("new"), RENAME_EXCHANGE)))
        r("list new", lambda: sorted(os.listdir(p("new"))))
        r("exchange across dirs", renameat2, p("a/sub"), p("c"), RENAME_EXCHANGE)
        r("noreplace onto existing", renameat2, p("b"), p("a"), RENAME_NOREPLACE)
        r("list", lambda: sorted(os.listdir(r.root)))
    both(tmp_path, BASE, op)


def test_follow_reads_redirects_without_creating_them(tmp_path):
    """redirect_dir=follow: the kernel's redirects are followed, a merged dir's rename is EXDEV."""
    lowers = build_layers(tmp_path / "k", BASE)
    upper, work, work2 = make_dirs(tmp_path / "k/upper", tmp_path / "k/work", tmp_path / "k/work2")
    with kmount(lowers, upper, work, "redirect_dir=on") as m:
        os.rename(os.path.join(m, "a"), os.path.join(m, "a2"))
    with kmount(lowers, upper, work, "redirect_dir=follow") as m:
        kview = snapshot(m)
        krec = Recorder(m)
        krec("rename merged", os.rename, krec.p("b"), krec.p("b2"))
    with smount(lowers, upper, work2, "redirect_dir=follow") as m:
        assert_tree(kview, snapshot(m), "kernel follow", "suf follow")
        srec = Recorder(m)
        srec("rename merged", os.rename, srec.p("b"), srec.p("b2"))
    assert krec.results == srec.results == [("rename merged", ("err", "EXDEV"))]


def test_without_the_features_kernel_uppers_are_refused_not_misread(tmp_path):
    """The defaults (off) read an upper with redirects and metacopy files as the kernel with
    redirect_dir=nofollow,metacopy=off does: EPERM, never a different view."""
    lowers = build_layers(tmp_path, BASE)
    upper, work, work2 = make_dirs(tmp_path / "upper", tmp_path / "work", tmp_path / "work2")
    with kmount(lowers, upper, work, FEATURES) as m:
        os.rename(os.path.join(m, "a"), os.path.join(m, "a2"))
        os.chown(os.path.join(m, "top"), 5, 5)
        os.rename(os.path.join(m, "b/y"), os.path.join(m, "c/y2"))
    assert "trusted.redirect=b'a'" in overlay_marks(upper)["a2"]
    assert "trusted.metacopy=b''" in overlay_marks(upper)["top"]
    paths = ["a2", "a2/f", "top", "c/y2", "b", "m/n"]

    def probe(m):
        r = Recorder(m)
        for rel in paths:
            r(rel, lambda q: (stat.filemode(os.lstat(q).st_mode), read(q) if os.path.isfile(q) else None), r.p(rel))
        return r.results
    with kmount(lowers, upper, work, "redirect_dir=nofollow,metacopy=off") as m:
        kres = probe(m)
    with smount(lowers, upper, work2) as m:
        sres = probe(m)
    assert kres == sres, compare_results(kres, sres)
    assert dict(sres)["a2"] == ("err", "EPERM") and dict(sres)["top"] == ("err", "EPERM")
    assert dict(sres)["b"][0] == "ok"


@pytest.mark.parametrize("value", ["../../etc", "/../..", "..", ".", "/", "//a", "a/", "/a/../etc",
                                   "/lnk", "/lnkdir/passwd", "/nonexistent", "etc", "/" + "x" * 300])
def test_hostile_redirects(tmp_path, value):
    """A redirect never leads outside its layers: the kernel's errors, never /etc."""
    specs = [{"etc": {"passwd": "the layer's own passwd\n"}, "lnk": Symlink("/etc"), "lnkdir": Symlink("/etc"),
              "x": {}}]
    lowers = build_layers(tmp_path, specs)
    upper, work, work2 = make_dirs(tmp_path / "upper", tmp_path / "work", tmp_path / "work2")
    os.mkdir(os.path.join(upper, "x"))
    os.setxattr(os.path.join(upper, "x"), "trusted.overlay.redirect", value.encode())

    def probe(m):
        r = Recorder(m)
        r("stat", lambda: stat.filemode(os.lstat(r.p("x")).st_mode))
        r("list", lambda: sorted(os.listdir(r.p("x"))))
        return r.results
    with kmount(lowers, upper, work, "redirect_dir=on") as m:
        kres = probe(m)
    with smount(lowers, upper, work2, "redirect_dir=on") as m:
        sres = probe(m)
    assert kres == sres, compare_results(kres, sres)
    host = set(os.listdir("/etc"))
    if sres[1][1][0] == "ok":
        assert not (set(sres[1][1][1]) & host - {"passwd"}), sres


def test_redirect_loops_end(tmp_path):
    """Each redirect applies one layer down: a 'loop' of them ends, as in the kernel."""
    specs = [
        {"a": Dir({}, xattrs={"trusted.overlay.redirect": b"b"}), "b": Dir({}, xattrs={"trusted.overlay.redirect": b"a"})},
        {"a": {"from_l2_a": "1"}, "b": {"from_l2_b": "2"}, "c": Dir({}, xattrs={"trusted.overlay.redirect": b"/c"})},
        {"a": {"from_l3_a": "3"}, "b": {"from_l3_b": "4"}, "c": {"from_l3_c": "5"}},
    ]
    lowers = build_layers(tmp_path, specs)
    upper, work, work2 = make_dirs(tmp_path / "upper", tmp_path / "work", tmp_path / "work2")
    for n, v in (("a", b"/b"), ("b", b"/a"), ("c", b"c")):
        os.mkdir(os.path.join(upper, n))
        os.setxattr(os.path.join(upper, n), "trusted.overlay.redirect", v)
    with kmount(lowers, upper, work, "redirect_dir=on") as m:
        kview = snapshot(m)
    with smount(lowers, upper, work2, "redirect_dir=on") as m:
        assert_tree(kview, snapshot(m), "kernel", "suf")
    assert {"a/from_l2_a", "b/from_l2_b"} <= set(kview), sorted(kview)


# --------------------------------------------------------------------------
# metacopy=on
# --------------------------------------------------------------------------

def test_metadata_changes_copy_up_metadata_only(tmp_path):
    def op(r):
        p = r.p
        r("chown", os.chown, p("top"), 7, 8)
        r("chmod", os.chmod, p("a/f"), 0o600)
        r("utime", os.utime, p("b/y"), (1000000000, 1000000000))
        r("setxattr", os.setxattr, p("c/z"), "user.k", b"v")
        r("chown big", os.chown, p("big"), 9, 9)
        r("read", read, p("top"))
        r("read big", lambda: len(read(p("big"))))
        r("stat", lambda: (os.lstat(p("top")).st_size, os.lstat(p("top")).st_uid))
        r("chown symlink", os.lchown, p("lnk"), 3, 3)
        r("chmod dir", os.chmod, p("m"), 0o700)
    both(tmp_path, BASE, op)


@pytest.mark.timeout(300)
def test_metacopy_data_comes_up_at_the_first_write(tmp_path):
    def op(r):
        p = r.p
        r("chown", os.chown, p("big"), 9, 9)
        r("chmod", os.chmod, p("a/f"), 0o600)
        r("chmod c/z", os.chmod, p("c/z"), 0o640)
        r("append", write, p("big"), b"tail")
        r("read", lambda: (len(read(p("big"))), read(p("big"))[:4], read(p("big"))[-4:]))
        r("truncate", os.truncate, p("a/f"), 3)
        r("read f", read, p("a/f"))
        r("O_TRUNC", write, p("c/z"), b"new", "wb")
        r("read z", read, p("c/z"))
    both(tmp_path, BASE, op)


def test_metacopy_renamed_and_hard_linked(tmp_path):
    def op(r):
        p = r.p
        r("rename same dir", os.rename, p("a/f"), p("a/f2"))
        r("rename other dir", os.rename, p("b/y"), p("c/y2"))
        r("rename lower hardlink", os.rename, p("top"), p("top2"))
        r("link", os.link, p("c/z"), p("a/zlink"))
        r("chmod via one name", os.chmod, p("a/zlink"), 0o600)
        r("stat other name", lambda: (oct(os.lstat(p("c/z")).st_mode), os.lstat(p("c/z")).st_nlink))
        r("rename renamed dir holding a metacopy", os.rename, p("a"), p("a3"))
        r("read", lambda: [read(p(x)) for x in ("a3/f2", "c/y2", "top2", "a3/zlink", "c/z")])
        r("append via link", write, p("a3/zlink"), b"+")
        r("other name sees it", read, p("c/z"))
    both(tmp_path, BASE, op)


# --------------------------------------------------------------------------
# xattr whiteouts (Linux 6.7+) and data-only layers
# --------------------------------------------------------------------------

def test_xattr_whiteouts(tmp_path):
    wh = {"trusted.overlay.whiteout": b""}
    specs = [
        {"d": Dir({"gone": File(b"", xattrs=wh), "kept": "mine\n", "notwh": File(b"x", xattrs=wh)},
                  xattrs={"trusted.overlay.opaque": b"x"})},
        {"d": {"gone": "old\n", "other": "o\n", "notwh": "n\n"}},
    ]

    def op(r):
        r("list d", lambda: sorted(os.listdir(r.p("d"))))
        r("stat d/gone", os.lstat, r.p("d/gone"))
        r("create over", write, r.p("d/gone"), b"new\n", "wb")
        r("list d again", lambda: sorted(os.listdir(r.p("d"))))
        r("rm the file over it", os.unlink, r.p("d/gone"))
    both(tmp_path, specs, op, opts="")


def test_xattr_whiteout_outside_a_marked_directory(tmp_path):
    """The kernel's lookup honours an xattr whiteout anywhere, its listing only in a directory
    marked opaque=x: the kernel lists a name it cannot look up. swiftunionfs does not list it
    (readdirplus skips what does not resolve): the one known difference (docs/format.md)."""
    lowers = build_layers(tmp_path, [{"plain": Dir({"gone": File(b"", xattrs={"trusted.overlay.whiteout": b""})})},
                                     {"plain": {"gone": "old\n", "other": "o\n"}}])
    upper, work, work2 = make_dirs(tmp_path / "upper", tmp_path / "work", tmp_path / "work2")

    def probe(m):
        r = Recorder(m)
        r("list", lambda: sorted(os.listdir(r.p("plain"))))
        r("stat", os.lstat, r.p("plain/gone"))
        return r.results
    with kmount(lowers, upper, work) as m:
        kres = probe(m)
    with smount(lowers, upper, work2) as m:
        sres = probe(m)
    assert kres[1] == sres[1] == ("stat", ("err", "ENOENT"))
    assert kres[0] == ("list", ("ok", ["gone", "other"])) and sres[0] == ("list", ("ok", ["other"]))


@pytest.mark.parametrize("opts", ["metacopy=on", ""])
def test_data_only_layers(tmp_path, opts):
    """composefs-style: a metadata layer whose metacopy files redirect into data-only layers
    (Linux 6.16+: also without metacopy=on; a chown then copies the data up)."""
    def meta(path, size, target):
        return File(b"", 0o640, uid=3, gid=4, size=size,
                    xattrs={"trusted.overlay.metacopy": b"", "trusted.overlay.redirect": target})
    sides = {}
    for side in ("k", "s"):
        base = tmp_path / side
        (l1,) = build_layers(base, [{"bin": {"tool": meta("bin/tool", 9, b"/objects/ab/c1"),
                                              "other": meta("bin/other", 5, b"/objects/second")},
                                      "plain": "plain\n"}])
        d1 = build_layer(base / "d1", {"objects": {"ab": {"c1": File(b"tool data", 0o600)}}, "named": "hidden\n"})
        d2 = build_layer(base / "d2", {"objects": {"second": "2nd\n"}})
        upper, work = make_dirs(base / "upper", base / "work")
        sides[side] = (l1, d1, d2, upper, work)

    def op(r):
        r("list", lambda: sorted(os.listdir(r.root)))
        r("not by name", os.lstat, r.p("named"))
        r("meta", lambda: (oct(os.lstat(r.p("bin/tool")).st_mode), os.lstat(r.p("bin/tool")).st_uid))
        r("read", read, r.p("bin/tool"))
        r("read second data layer", read, r.p("bin/other"))
        r("chown (metadata copy-up)", os.chown, r.p("bin/tool"), 8, 8)
        r("read again", read, r.p("bin/tool"))
        r("append (data copy-up)", write, r.p("bin/other"), b"+")
        r("read other", read, r.p("bin/other"))
    res = {}
    for side, mount in (("k", kmount), ("s", smount)):
        l1, d1, d2, upper, work = sides[side]
        with mount([l1], upper, work, opts, data=[d1, d2]) as m:
            rec = Recorder(m)
            op(rec)
            res[side] = (rec.results, snapshot(m))
    assert compare_results(res["k"][0], res["s"][0]) == []
    assert_tree(res["k"][1], res["s"][1], "kernel", "suf")
    assert overlay_marks(sides["k"][3]) == overlay_marks(sides["s"][3])
    # Both ways across.
    for a, b, mount in (("s", "k", kmount), ("k", "s", smount)):
        l1, d1, d2, upper, work = sides[a]
        xwork, = make_dirs(tmp_path / a / "xwork")
        with mount([l1], upper, xwork, opts, data=[d1, d2]) as m:
            assert_tree(res[a][1], snapshot(m), a, f"{b} over {a}'s upper")


# --------------------------------------------------------------------------
# option checks
# --------------------------------------------------------------------------

@pytest.mark.parametrize("case,message", [
    ("metacopy=on,redirect_dir=off", "conflicting options: metacopy=on,redirect_dir=off"),
    ("metacopy=on,redirect_dir=follow", "conflicting options: metacopy=on,redirect_dir=follow"),
    ("NO_LOWER", "leading ':'"),
    ("TRAILING", "trailing colons"),
    ("TRIPLE", "only single ':' or double '::'"),
    ("REGULAR_AFTER_DATA", "regular lower layers cannot follow data lower layers"),
    ("SAME_AS_DATA", "conflicting lowerdir path"),
    ("SAME_TWICE", "conflicting lowerdir path"),
])
def test_conflicting_options_are_refused_as_by_the_kernel(tmp_path, case, message):
    l1, d1 = make_dirs(tmp_path / "l1", tmp_path / "d1")
    upper, work, mnt = make_dirs(tmp_path / "u", tmp_path / "w", tmp_path / "m")
    lower = {"NO_LOWER": f"::{d1}", "TRAILING": f"{l1}::", "TRIPLE": f"{l1}:::{d1}",
             "REGULAR_AFTER_DATA": f"{l1}::{d1}:{l1}", "SAME_AS_DATA": f"{l1}::{l1}",
             "SAME_TWICE": f"{l1}:{d1}:{l1}"}.get(case, l1)
    o = f"lowerdir={lower},upperdir={upper},workdir={work}" + ("" if case.isupper() else "," + case)
    k = subprocess.run(["mount", "-t", "overlay", "overlay", "-o", o, mnt], capture_output=True, text=True, timeout=30)
    if k.returncode == 0:
        subprocess.run(["umount", mnt], timeout=30)
    assert k.returncode != 0, "the kernel accepted " + o
    s = subprocess.run([SUF_BIN, "-o", o, mnt], capture_output=True, text=True, timeout=30)
    assert s.returncode == 2 and message in s.stderr and s.stderr.count("\n") == 1, s.stderr
    assert not is_mounted(mnt)


def test_data_only_layers_need_no_metacopy_option(tmp_path):
    """Linux 6.16+ mounts lowerdir=L::D without metacopy=on; so do we."""
    lowers = build_layers(tmp_path, [{"f": "f"}])
    d1, = make_dirs(tmp_path / "d1")
    for mount in (kmount, smount):
        with mount(lowers, data=[d1]) as m:
            assert os.listdir(m) == ["f"]


def test_index_off_breaks_lower_hard_links_and_the_kernel_mounts_our_upper(tmp_path):
    """With index=off (the default) copy-up breaks a lower hard link, as the kernel's
    index=off does; index=on is tests/test_index.py."""
    lowers = build_layers(tmp_path, [{"h": "x", "h2": Hardlink("h"), "d": {"f": "f"}}])
    upper, work, work2 = make_dirs(tmp_path / "u", tmp_path / "w", tmp_path / "w2")
    with smount(lowers, upper, work, FEATURES + ",index=off") as m:
        os.chown(os.path.join(m, "h"), 1, 1)
        os.rename(os.path.join(m, "d"), os.path.join(m, "d2"))
        sview = snapshot(m)
    assert not os.path.exists(os.path.join(work, "index"))
    with kmount(lowers, upper, work2, FEATURES + ",index=off") as m:
        assert_tree(sview, snapshot(m), "suf", "kernel index=off")
    # Copy-up broke the lower hard link, as the kernel's index=off does.
    assert sview["h"]["nlink"] == 1 and sview["h2"]["nlink"] == 2


def test_kernel_upper_with_index_entries_reads_as_with_index_off(tmp_path):
    """The kernel writes with index=on (a lower hard link copied up: the copy lives in
    W/index and under one name); swiftunionfs over that upper shows what the kernel with
    index=off shows there."""
    lowers = build_layers(tmp_path, [{"h": "shared\n", "h2": Hardlink("h"), "d": {"f": "f\n"}}])
    upper, work, work2, work3 = make_dirs(tmp_path / "u", tmp_path / "w", tmp_path / "w2", tmp_path / "w3")
    with kmount(lowers, upper, work, FEATURES + ",index=on") as m:
        write(os.path.join(m, "h"), b"changed\n")
        os.chown(os.path.join(m, "d/f"), 4, 4)
        os.rename(os.path.join(m, "d"), os.path.join(m, "d2"))
        indexed = snapshot(m)
    assert os.listdir(os.path.join(work, "index")), "the kernel wrote no index entry"
    assert indexed["h2"]["sha256"] == indexed["h"]["sha256"]  # kept linked by the index
    with kmount(lowers, upper, work2, FEATURES + ",index=off") as m:
        kview = snapshot(m)
    with smount(lowers, upper, work3, FEATURES + ",index=off") as m:
        assert_tree(kview, snapshot(m), "kernel index=off", "suf")
    # Without the index, the other name shows the lower content again (both of them).
    assert kview["h2"]["sha256"] != kview["h"]["sha256"]


# --------------------------------------------------------------------------
# crash states: what a crash in the middle can leave is a consistent view
# --------------------------------------------------------------------------

def test_crash_states_read_as_the_kernel_reads_them(tmp_path):
    """A redirect set but the rename not done (it names the directory's own lower copy), and
    a metacopy half filled with its data (the mark still on): both show the lower content."""
    lowers = build_layers(tmp_path, BASE)
    upper, work, work2 = make_dirs(tmp_path / "upper", tmp_path / "work", tmp_path / "work2")
    os.mkdir(os.path.join(upper, "a"))
    os.setxattr(os.path.join(upper, "a"), "trusted.overlay.redirect", b"a")
    os.mkdir(os.path.join(upper, "b"))
    os.setxattr(os.path.join(upper, "b"), "trusted.overlay.redirect", b"/b")
    with open(os.path.join(upper, "top"), "wb") as f:
        f.write(b"to")          # interrupted data copy-up: part of the data, mark still set
        f.truncate(4)
    os.setxattr(os.path.join(upper, "top"), "trusted.overlay.metacopy", b"")
    with kmount(lowers, upper, work, FEATURES) as m:
        kview = snapshot(m)
    with smount(lowers, upper, work2, FEATURES) as m:
        assert_tree(kview, snapshot(m), "kernel", "suf")
    assert kview["top"]["size"] == 4 and "a/from_l2" in kview and "b/l2y" in kview


# --------------------------------------------------------------------------
# rootless: the user.overlay.* namespace
# --------------------------------------------------------------------------

ROOTLESS_SCRIPT = r"""
set -u
B=$1; D=$2
o="lowerdir=$D/l,upperdir=$D/u,workdir=$D/w"
"$B" -o "$o,redirect_dir=on,metacopy=on" "$D/m" || exit 10
mv "$D/m/a" "$D/m/a2" && echo "mv ok"
chmod 600 "$D/m/a2/f" && echo "chmod ok"
fusermount3 -u "$D/m"; flock "$D/w" true
echo "redirect: $(getfattr --absolute-names --only-values -n user.overlay.redirect "$D/u/a2" 2>&1)"
echo "metacopy: $(getfattr -n user.overlay.metacopy "$D/u/a2/f" 2>/dev/null | grep -c metacopy)"
echo "trusted: $(getfattr -d -m trusted -R "$D/u" 2>/dev/null | grep -c overlay)"
"$B" -o "$o,redirect_dir=on,metacopy=on" "$D/m" || exit 11
echo "list: $(ls "$D/m/a2" | tr '\n' ' ')"
echo "read: $(cat "$D/m/a2/f") mode $(stat -c %a "$D/m/a2/f")"
fusermount3 -u "$D/m"; flock "$D/w" true
mount -t overlay overlay -o "userxattr,$o" "$D/m" || exit 12
echo "kernel userxattr: $(ls "$D/m/a2" 2>&1 | sed 's/.*: //')"
umount "$D/m"
mount -t overlay overlay -o "userxattr,redirect_dir=on,$o" "$D/m" 2>/dev/null && { echo "kernel took redirect_dir=on"; umount "$D/m"; } || echo "kernel refuses userxattr,redirect_dir=on"
"""


def test_rootless_redirect_and_metacopy_in_user_xattrs(rl_user, dev_fuse, base_dir):
    """Unprivileged, swiftunionfs writes and follows user.overlay.redirect and
    user.overlay.metacopy; the kernel refuses redirect_dir=on with userxattr and, in
    userxattr mode, refuses to follow those redirects (EPERM, never another view)."""
    user = rl_user
    d = tempfile.mkdtemp(dir=base_dir)
    build_layer(os.path.join(d, "l"), {"a": {"f": "data\n", "g": "g\n"}})
    for n in ("u", "w", "m"):
        os.mkdir(os.path.join(d, n))
    subprocess.run(["chown", "-R", f"{user['uid']}:{user['gid']}", d], check=True, timeout=60)
    os.chmod(d, 0o755)
    r = subprocess.run(["runuser", "-u", user["name"], "--", "unshare", "-Urm", "sh", "-c", ROOTLESS_SCRIPT, "sh",
                        SUF_BIN, d], capture_output=True, text=True, timeout=120)
    out = r.stdout
    assert r.returncode == 0, r.stdout + r.stderr
    for line in ("mv ok", "chmod ok", "redirect: a", "metacopy: 1", "trusted: 0", "list: f g",
                 "read: data mode 600", "kernel userxattr: Operation not permitted",
                 "kernel refuses userxattr,redirect_dir=on"):
        assert line in out, out + r.stderr


@pytest.mark.timeout(600)
def test_kill_during_metacopy_data_copy_up(tmp_path):
    """SIGKILL while a metacopy file's data is being copied in place: after a remount the
    file shows its new owner over either the whole lower data (the mark still on) or the
    complete write; under the kernel too. The lower layer is untouched."""
    import hashlib
    import signal
    import sys
    from test_writes import random_bytes
    size = 256 << 20
    lower, upper, work, work2 = make_dirs(tmp_path / "lower", tmp_path / "upper", tmp_path / "work", tmp_path / "work2")
    big = os.path.join(lower, "big")
    chunk = random_bytes(1 << 20, 7)
    h = hashlib.sha256()
    with open(big, "wb") as f:
        for i in range(size >> 20):
            c = i.to_bytes(8, "little") + chunk[8:]
            f.write(c)
            h.update(c)
    lower_hash = h.copy().hexdigest()
    h.update(b"X")
    appended_hash = h.hexdigest()
    mnt = None
    writer = None
    try:
        with smount([lower], upper, work, FEATURES) as m0:
            os.chown(os.path.join(m0, "big"), 77, 77)
        assert "trusted.metacopy=b''" in overlay_marks(upper)["big"]
        mnt = start([lower], upper, work, FEATURES)
        writer = subprocess.Popen([sys.executable, "-c", "import sys; f=open(sys.argv[1],'ab'); f.write(b'X'); f.close()",
                                   os.path.join(mnt, "big")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and writer.poll() is None and os.lstat(os.path.join(upper, "big")).st_blocks < 4096:
            time.sleep(0.002)
        os.kill(mnt.proc.pid, signal.SIGKILL)
        mnt.proc.wait(20)
        up = os.path.join(upper, "big")
        print(f"killed with {os.lstat(up).st_blocks * 512 >> 20} MiB copied, marks {overlay_marks(upper).get('big')}")
    finally:
        if writer is not None:
            try:
                writer.wait(30)
            except subprocess.TimeoutExpired:
                writer.kill()
                writer.wait(10)
        if mnt is not None:
            stop(mnt)
    for mount, w in ((smount, work), (kmount, work2)):
        with mount([lower], upper, w, FEATURES) as m2:
            st = os.stat(os.path.join(m2, "big"))
            assert (st.st_uid, st.st_gid) == (77, 77)
            digest = sha256_of(os.path.join(m2, "big"))
            assert (st.st_size, digest) in ((size, lower_hash), (size + 1, appended_hash)), (st.st_size, mount)
    with open(big, "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == lower_hash, "the lower layer was modified"
    os.unlink(big)


def sha256_of(path):
    import hashlib
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                return h.hexdigest()
            h.update(b)


def test_inspect_and_verbose_say_which_features_are_on(tmp_path):
    lowers = build_layers(tmp_path, [{"a": {"f": "f"}}])
    upper, work, mnt = make_dirs(tmp_path / "upper", tmp_path / "work", tmp_path / "mnt")
    os.mkdir(os.path.join(upper, "a2"))
    os.setxattr(os.path.join(upper, "a2"), "trusted.overlay.redirect", b"a")
    o = options(lowers, upper, None, "redirect_dir=follow")
    out = subprocess.run([SUF_BIN, "inspect", "-o", o, "a2/f"], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert "file, 1 bytes" in out.stdout and "(at /a/f)" in out.stdout and "visible: from lower 1" in out.stdout, out.stdout
    out2 = subprocess.run([SUF_BIN, "inspect", "-o", o, "a2"], capture_output=True, text=True, timeout=30)
    assert "redirect: the layers below are searched for a" in out2.stdout and "+ lower 1" in out2.stdout, out2.stdout
    assert "features: redirect_dir=follow metacopy=off" in out.stdout
    r = subprocess.run([SUF_BIN, "-v", "-o", options(lowers, upper, work, FEATURES), mnt], capture_output=True,
                       text=True, timeout=30)
    try:
        assert r.returncode == 0 and "features: redirect_dir=on metacopy=on index=off" in r.stderr, r.stderr
    finally:
        subprocess.run(["fusermount3", "-u", mnt], capture_output=True, timeout=30)
