"""Read path: swiftunionfs must show exactly what the kernel's overlayfs shows,
including inode numbers (st_ino and readdir's d_ino) and nlink, over the very
same layer directories (mounted one after the other, never at once)."""

import errno
import os
import shutil
import stat
import subprocess
import textwrap

import pytest

from conftest import (
    Device, Dir, Fifo, File, Hardlink, OCIOpaque, OCIWhiteout, Recorder, Symlink, Whiteout,
    IS_FUSE_OVERLAYFS, assert_same_tree, build_layers, check_d_ino, compare_results,
    make_dirs, mount_kernel, mount_suf, snapshot,
)

DIR_NLINK = pytest.mark.fuse_overlayfs_differs("fuse-overlayfs counts subdirs for dir nlink")


def rich_stack():
    """Three layers, top first, in kernel marker format."""
    l1 = {
        "a.txt": "top a\n",
        "file_vs_dir": Dir({"inner": "inner\n"}),          # dir here, file below
        "dir_vs_file": "a file hiding a lower dir\n",       # file here, dir below
        "wo_top": Whiteout(),                               # hides a file in l2 and a dir in l3
        "deep": {"a": {"b": {"c": {"gone": Whiteout(), "keep": "k1"}}}},
        "opq": Dir({"new": "n"}, opaque=True),
        "mid": {},
        "allgone": {"p": Whiteout(), "q": Whiteout()},
        "rel": Symlink("a.txt"),
        "abs": Symlink("/etc/hostname"),
        "dangling": Symlink("no/such/target"),
        "dirlink": Symlink("deep/a"),
        "h1": "hardlinked\n",
        "h2": Hardlink("h1"),
        "hsub": {"h3": Hardlink("h1")},
        "xa": File(b"xattrs\n", xattrs={"user.b": b"2", "user.a": b"1", "user.empty": b""}),
        "xd": Dir({"f": "f"}, xattrs={"user.dirattr": b"yes"}),
        "private": File(b"p", 0o600, uid=1000, gid=1000),
        "suid": File(b"#!/bin/sh\n", 0o4755),
        "odd": Dir({"inside": "i"}, mode=0o711, uid=123, gid=456),
        "fifo": Fifo(0o640),
        "null": Device(1, 3, 0o666),
        "loop": Device(7, 200, 0o660, block=True),
        "with space": "space\n",
        "ünïcödé-ñ": "unicode\n",
        "empty": b"",
        "big": File(os.urandom(1 << 20)),
    }
    l2 = {
        "a.txt": "mid a\n",
        "b.txt": "mid b\n",
        "file_vs_dir": "I am a file below a dir\n",
        "dir_vs_file": Dir({"hidden": "should not show\n"}),
        "wo_top": "whited out file\n",
        "deep": {"a": {"b": {"c": {"gone": "gone\n", "other": "o2"}, "b2": "b2"}, "a2": Whiteout()}},
        "opq": {"old": "old\n"},
        "mid": Dir({"m2": "m2\n"}, opaque=True),
        "allgone": {"p": "p\n", "q": {"qq": "qq"}},
        "h3": "lower hardlink\n",
        "lsub": {"h4": Hardlink("h3"), "x": "x"},
        "xd": Dir({"g": "g"}, xattrs={"user.lower": b"not shown: top dir wins"}),
        "wh_of_nothing": Whiteout(),
    }
    l3 = {
        "a.txt": "bottom a\n",
        "c.txt": "bottom c\n",
        "wo_top": {"sub": "sub\n"},
        "deep": {"a": {"a2": "a2 from l3", "b": {"c": {"z": "z3"}}}},
        "opq": {"older": "older\n"},
        "mid": {"m3": "hidden by l2's opaque mid\n"},
        "allgone": {"r": Whiteout()},
        "l3only": Dir({"x": Dir({"y": "y"})}, mode=0o700),
        "opq_bottom": Dir({"z": "z"}, opaque=True),
    }
    return [l1, l2, l3]


EXPECTED_RICH_NAMES = {
    ".", "a.txt", "b.txt", "c.txt", "file_vs_dir", "file_vs_dir/inner", "dir_vs_file",
    "deep", "deep/a", "deep/a/b", "deep/a/b/b2", "deep/a/b/c", "deep/a/b/c/keep",
    "deep/a/b/c/other", "deep/a/b/c/z", "opq", "opq/new", "mid", "mid/m2", "allgone",
    "rel", "abs", "dangling", "dirlink", "h1", "h2", "hsub", "hsub/h3", "xa", "xd", "xd/f",
    "xd/g", "private", "suid", "odd", "odd/inside", "fifo", "null", "loop", "with space",
    "ünïcödé-ñ", "empty", "big", "h3", "lsub", "lsub/h4", "lsub/x", "l3only", "l3only/x",
    "l3only/x/y", "opq_bottom", "opq_bottom/z",
}


def _both_snapshots(lowers, upper=None, tmp_path=None, **kw):
    kw.setdefault("inodes", True)
    kw.setdefault("dir_nlink", False)
    kwork = suwork = None
    if upper is not None:
        kwork, suwork = make_dirs(tmp_path / "kwork", tmp_path / "swork")
    with mount_kernel(lowers, upper, kwork) as m:
        # Kernel quirk: the very first readdir of a merged dir may report the
        # upper dir's own inode as d_ino for merged subdirs, while st_ino is the
        # lower one; once looked up it reports d_ino == st_ino.  Use the
        # steady state as the oracle.
        snapshot(m, **kw)
        ks = snapshot(m, **kw)
    with mount_suf(lowers, upper, suwork) as m:
        ss = snapshot(m, **kw)
    return ks, ss


def _no_markers_visible(snap):
    bad = [p for p, r in snap.items()
           if os.path.basename(p).startswith(".wh.") or (r["type"] == "chr" and r.get("rdev") == (0, 0))]
    assert not bad, f"overlay markers visible in merged view: {bad}"


# ---------------------------------------------------------------------------

def test_three_lowers_readonly_content(tmp_path):
    lowers = build_layers(tmp_path / "layers", rich_stack())
    ks, ss = _both_snapshots(lowers)
    assert set(ks) == EXPECTED_RICH_NAMES, "kernel oracle itself changed?"
    _no_markers_visible(ss)
    assert_same_tree(ks, ss, ignore=("ino", "d_ino"), what="read-only 3-layer stack")


def test_three_lowers_readonly_inodes(tmp_path):
    lowers = build_layers(tmp_path / "layers", rich_stack())
    ks, ss = _both_snapshots(lowers)
    assert not check_d_ino(ks), "kernel d_ino != st_ino?"
    bad = check_d_ino(ss)
    assert not bad, "readdir d_ino differs from st_ino:\n  " + "\n  ".join(bad[:30])
    assert_same_tree(ks, ss, what="read-only 3-layer stack (inode numbers, nlink)")
    assert ss["h1"]["ino"] == ss["h2"]["ino"] == ss["hsub/h3"]["ino"]
    assert ss["h3"]["ino"] == ss["lsub/h4"]["ino"]


@DIR_NLINK
@pytest.mark.parametrize("with_upper", [False, True], ids=["readonly", "upper"])
def test_dir_nlink(tmp_path, with_upper):
    """Kernel: a merged dir (present in >1 layer, not hidden by opaque) reports
    nlink 1; a dir from a single layer (or opaque) reports its real nlink."""
    layers = build_layers(tmp_path / "layers", rich_stack())
    if with_upper:
        ks, ss = _both_snapshots(layers[1:], layers[0], tmp_path, dir_nlink=True)
    else:
        ks, ss = _both_snapshots(layers, dir_nlink=True)
    kd = {p: r["nlink"] for p, r in ks.items() if r["type"] == "dir"}
    sd = {p: r["nlink"] for p, r in ss.items() if r["type"] == "dir"}
    assert kd["."] == 1 and kd["deep"] == 1 and kd["l3only/x"] == 2
    diff = {p: (kd[p], sd.get(p)) for p in kd if kd[p] != sd.get(p)}
    assert not diff, f"dir nlink (kernel, suf): {diff}"


def test_upper_plus_two_lowers_content(tmp_path):
    layers = build_layers(tmp_path / "layers", rich_stack())
    upper, lowers = layers[0], layers[1:]
    ks, ss = _both_snapshots(lowers, upper, tmp_path)
    assert set(ks) == EXPECTED_RICH_NAMES
    _no_markers_visible(ss)
    assert_same_tree(ks, ss, ignore=("ino", "d_ino"), what="upper + 2 lowers")


def test_upper_plus_two_lowers_inodes(tmp_path):
    layers = build_layers(tmp_path / "layers", rich_stack())
    upper, lowers = layers[0], layers[1:]
    ks, ss = _both_snapshots(lowers, upper, tmp_path)
    assert not check_d_ino(ss), "d_ino != st_ino:\n  " + "\n  ".join(check_d_ino(ss)[:30])
    assert_same_tree(ks, ss, what="upper + 2 lowers (inode numbers, nlink)")


def _big_dir_stack(n=10000):
    """A merged directory of n visible entries split over 3 layers, with some
    names whited out and some re-created above their whiteout."""
    l1, l2, l3 = {}, {}, {}
    # l3: 0..4999, l2: 5000..8499, l1: 8500..n-1
    for i in range(0, 5000):
        l3[f"e{i:05d}"] = f"{i}"
    for i in range(5000, 8500):
        l2[f"e{i:05d}"] = f"{i}"
    for i in range(8500, n):
        l1[f"e{i:05d}"] = f"{i}"
    # whiteouts in l2 of every 10th l3 entry, restored as new files in l1 for every 20th
    for i in range(0, 5000, 10):
        l2[f"e{i:05d}"] = Whiteout()
    for i in range(0, 5000, 20):
        l1[f"e{i:05d}"] = f"again {i}"
    # and extra whited-out names that never come back (l1 hides l2 entries)
    for i in range(5000, 5300):
        l2[f"x{i:05d}"] = "x"
        l1[f"x{i:05d}"] = Whiteout()
    expected = {f"e{i:05d}" for i in range(n) if not (i < 5000 and i % 10 == 0 and i % 20 != 0)}
    return [{"big": l1}, {"big": l2}, {"big": l3}], expected


READDIR_C = textwrap.dedent(r"""
    #include <dirent.h>
    #include <stdio.h>
    #include <stdlib.h>
    #include <string.h>
    /* Lists a directory with telldir before each entry, then seeks back to a
       sample of those positions and checks readdir returns the same name. */
    int main(int argc, char **argv) {
        DIR *d = opendir(argv[1]);
        if (!d) { perror("opendir"); return 2; }
        size_t cap = 1024, n = 0;
        long *pos = malloc(cap * sizeof *pos);
        char **names = malloc(cap * sizeof *names);
        for (;;) {
            long p = telldir(d);
            struct dirent *e = readdir(d);
            if (!e) break;
            if (n == cap) { cap *= 2; pos = realloc(pos, cap * sizeof *pos); names = realloc(names, cap * sizeof *names); }
            pos[n] = p; names[n] = strdup(e->d_name); n++;
        }
        int bad = 0;
        size_t step = n / 97 ? n / 97 : 1;
        for (size_t i = n; i-- > 0;) {           /* backwards: real seeks */
            if (i % step && i != n - 1) continue;
            seekdir(d, pos[i]);
            struct dirent *e = readdir(d);
            if (!e || strcmp(e->d_name, names[i])) {
                printf("SEEKBAD %zu %s %s\n", i, names[i], e ? e->d_name : "(null)"); bad++;
            }
        }
        seekdir(d, pos[n / 2]);
        size_t rest = 0;
        while (readdir(d)) rest++;
        if (rest != n - n / 2) { printf("RESTBAD %zu %zu\n", rest, n - n / 2); bad++; }
        rewinddir(d);
        size_t again = 0;
        while (readdir(d)) again++;
        if (again != n) { printf("REWINDBAD %zu %zu\n", again, n); bad++; }
        closedir(d);
        for (size_t i = 0; i < n; i++) printf("NAME %s\n", names[i]);
        return bad ? 1 : 0;
    }
""")


@pytest.fixture(scope="session")
def readdir_prog(tmp_path_factory):
    d = tmp_path_factory.mktemp("readdirprog")
    src = d / "rd.c"
    src.write_text(READDIR_C)
    exe = d / "rd"
    r = subprocess.run(["gcc", "-O1", "-o", str(exe), str(src)], capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        pytest.skip(f"gcc failed: {r.stderr}")
    return str(exe)


def _run_readdir_prog(prog, path):
    r = subprocess.run([prog, path], capture_output=True, text=True, timeout=120)
    names = [l[5:] for l in r.stdout.splitlines() if l.startswith("NAME ")]
    problems = [l for l in r.stdout.splitlines() if not l.startswith("NAME ")]
    return r.returncode, names, problems + ([r.stderr] if r.stderr else [])


def test_big_merged_directory(tmp_path, readdir_prog):
    specs, expected = _big_dir_stack()
    lowers = build_layers(tmp_path / "layers", specs)
    with mount_kernel(lowers) as m:
        kset = set(os.listdir(os.path.join(m, "big")))
        ks = snapshot(os.path.join(m, "big"), inodes=True)
    assert kset == expected
    with mount_suf(lowers) as m:
        big = os.path.join(m, "big")
        listing = os.listdir(big)
        assert len(listing) == len(set(listing)), "duplicate names in readdir"
        assert set(listing) == expected, (
            f"missing {sorted(expected - set(listing))[:10]}, extra {sorted(set(listing) - expected)[:10]}")
        rc, names, problems = _run_readdir_prog(readdir_prog, big)
        assert rc == 0 and not problems, f"telldir/seekdir instability: {problems[:10]}"
        assert sorted(names) == sorted(expected | {".", ".."})
        ss = snapshot(big, inodes=True)
    assert_same_tree(ks, ss, ignore=("ino", "d_ino"), what="10k merged dir")


@pytest.mark.fuse_overlayfs_differs(
    "fuse-overlayfs reports the inode of the whited-out lower file for a file re-created above it")
def test_big_merged_directory_inodes(tmp_path):
    specs, expected = _big_dir_stack()
    lowers = build_layers(tmp_path / "layers", specs)
    with mount_kernel(lowers) as m:
        snapshot(os.path.join(m, "big"), inodes=True, content=False)
        ks = snapshot(os.path.join(m, "big"), inodes=True, content=False)
    with mount_suf(lowers) as m:
        ss = snapshot(os.path.join(m, "big"), inodes=True, content=False)
    assert not check_d_ino(ss), check_d_ino(ss)[:20]
    assert_same_tree(ks, ss, what="10k merged dir (inode numbers)")


@pytest.mark.fuse_overlayfs_differs("fuse-overlayfs omits '..' when listing its root")
def test_readdir_seek_small_dirs(tmp_path, readdir_prog):
    lowers = build_layers(tmp_path / "layers", rich_stack())
    dirs = [".", "deep/a/b/c", "opq", "allgone", "mid", "l3only", "file_vs_dir"]
    listings = {}
    for name, cm in (("kernel", mount_kernel), ("suf", mount_suf)):
        with cm(lowers) as m:
            for d in dirs:
                rc, names, problems = _run_readdir_prog(readdir_prog, os.path.join(m, d))
                assert rc == 0 and not problems, f"{name} {d}: {problems}"
                assert len(names) == len(set(names)), f"{name} {d}: duplicates {names}"
                listings[name, d] = sorted(names)
    for d in dirs:
        assert listings["kernel", d] == listings["suf", d], d
    assert listings["suf", "allgone"] == [".", ".."]


def _deep_stack(depth=50):
    """A 50-level chain present in all layers, each contributing files at
    different levels, with whiteouts and an opaque level in the middle."""
    def chain(level_content):
        root = {}
        cur = root
        for lvl in range(depth):
            d = {}
            cur[f"d{lvl:02d}"] = d
            for name, node in level_content(lvl).items():
                d[name] = node
            cur = d
        return root

    l1 = chain(lambda lvl: {"top": f"top {lvl}"} if lvl % 7 == 0 else
               ({"mid_file": Whiteout()} if lvl % 5 == 0 else {}))
    l2 = chain(lambda lvl: {"mid_file": f"mid {lvl}"} if lvl % 5 == 0 or lvl % 3 == 0 else {})
    l3 = chain(lambda lvl: {"bottom": f"bottom {lvl}", "top": "shadowed"})
    # make level 30 opaque in l2: bottom files below level 30 of l3 are hidden
    parent = l2
    for lvl in range(30):
        parent = parent[f"d{lvl:02d}"]
    parent["d30"] = Dir(parent["d30"], opaque=True)
    return [l1, l2, l3]


def test_deep_tree(tmp_path):
    lowers = build_layers(tmp_path / "layers", _deep_stack())
    ks, ss = _both_snapshots(lowers)
    assert any(p.count("/") >= 49 for p in ks)
    assert_same_tree(ks, ss, what="50-level tree")


def test_deep_tree_with_upper(tmp_path):
    layers = build_layers(tmp_path / "layers", _deep_stack())
    ks, ss = _both_snapshots(layers[1:], layers[0], tmp_path)
    assert_same_tree(ks, ss, what="50-level tree with upper")


def test_statfs(tmp_path):
    layers = build_layers(tmp_path / "layers", rich_stack())
    kw, sw = make_dirs(tmp_path / "kw", tmp_path / "sw")
    for lowers, upper, work in [(layers, None, None), (layers[1:], layers[0], sw)]:
        with mount_kernel(lowers, upper, kw if upper else None) as m:
            k = os.statvfs(m)
        with mount_suf(lowers, upper, work) as m:
            s = os.statvfs(m)
            os.statvfs(os.path.join(m, "deep/a"))
        assert s.f_blocks * s.f_frsize == k.f_blocks * k.f_frsize, (k, s)
        assert s.f_files == k.f_files, (k, s)
        assert s.f_namemax > 0 and s.f_bsize > 0


def test_private_xattrs_hidden(tmp_path):
    spec = [
        {"o": Dir({"a": "a"}, opaque=True, xattrs={"user.keep": b"1"}),
         "f": File(b"f", xattrs={"trusted.overlay.origin": b"\x00junk", "user.x": b"x",
                                 "trusted.overlay.foo": b"bar"})},
        {"o": {"b": "b"}, "g": File(b"g", xattrs={"trusted.overlay.unknown": b"z"})},
    ]
    lowers = build_layers(tmp_path / "layers", spec)
    res = {}
    for name, cm in (("kernel", mount_kernel), ("suf", mount_suf)):
        with cm(lowers) as m:
            rec = Recorder(m)
            for rel in ["o", "f", "g", "."]:
                p = rec.p(rel)
                rec(f"list {rel}", lambda p=p: sorted(n for n in os.listxattr(p, follow_symlinks=False)
                                                       if n.startswith(("trusted.overlay.", "user."))))
                for attr in ("trusted.overlay.opaque", "trusted.overlay.origin", "trusted.overlay.foo"):
                    rec(f"get {rel} {attr}", os.getxattr, p, attr, follow_symlinks=False)
            rec("get user.keep", os.getxattr, rec.p("o"), "user.keep")
            rec("content f", lambda: open(rec.p("f"), "rb").read())
            res[name] = rec.results
    for label, out in res["suf"]:
        if label.startswith("list "):
            assert out[0] == "ok" and not any(n.startswith("trusted.overlay.") for n in out[1]), (label, out)
    d = compare_results(res["kernel"], res["suf"])
    assert not d, "private xattr handling differs:\n  " + "\n  ".join(d)


def test_readonly_mount_refuses_writes(tmp_path):
    lowers = build_layers(tmp_path / "layers", rich_stack())
    ops = [
        ("open w", lambda p: os.close(os.open(p("a.txt"), os.O_WRONLY))),
        ("open creat", lambda p: os.close(os.open(p("new"), os.O_WRONLY | os.O_CREAT, 0o644))),
        ("open trunc", lambda p: os.close(os.open(p("a.txt"), os.O_WRONLY | os.O_TRUNC))),
        ("truncate", lambda p: os.truncate(p("a.txt"), 0)),
        ("mkdir", lambda p: os.mkdir(p("nd"))),
        ("mkdir deep", lambda p: os.mkdir(p("deep/a/nd"))),
        ("unlink", lambda p: os.unlink(p("a.txt"))),
        ("rmdir", lambda p: os.rmdir(p("allgone"))),
        ("rename", lambda p: os.rename(p("a.txt"), p("b2.txt"))),
        ("link", lambda p: os.link(p("a.txt"), p("a2"))),
        ("symlink", lambda p: os.symlink("x", p("s2"))),
        ("mkfifo", lambda p: os.mkfifo(p("ff"))),
        ("chmod", lambda p: os.chmod(p("a.txt"), 0o600)),
        ("chown", lambda p: os.chown(p("a.txt"), 1, 1)),
        ("utime", lambda p: os.utime(p("a.txt"), (1, 1))),
        ("setxattr", lambda p: os.setxattr(p("a.txt"), "user.n", b"v")),
        ("removexattr", lambda p: os.removexattr(p("xa"), "user.a")),
        ("read still works", lambda p: open(p("a.txt")).read()),
        ("open rw existing", lambda p: os.close(os.open(p("a.txt"), os.O_RDWR))),
    ]
    res = {}
    for name, cm in (("kernel", mount_kernel), ("suf", mount_suf)):
        with cm(lowers) as m:
            rec = Recorder(m)
            for label, fn in ops:
                rec(label, fn, rec.p)
            res[name] = rec.results
    for label, out in res["suf"]:
        if label != "read still works":
            assert out == ("err", "EROFS"), f"{label}: {out}"
    assert not compare_results(res["kernel"], res["suf"])


OCI_STACK = [
    {   # top: OCI markers
        ".wh.gone": OCIWhiteout(),              # hides file 'gone' below
        ".wh.gonedir": OCIWhiteout(),           # hides a dir below
        "opq": {".wh..wh..opq": OCIOpaque(), "new": "n"},
        "sub": {".wh.x": OCIWhiteout(), "y": "y1"},
        "top": "t",
    },
    {
        "gone": "g", "gonedir": {"q": "q"}, "opq": {"old": "o"},
        "sub": {"x": "x", "z": "z"}, "keep": "k", ".wh.keep2": OCIWhiteout(),
    },
    {"keep2": "hidden by l2 marker", "opq": {"older": "o"}, "sub": {"x": "x3", "w": "w3"}},
]
OCI_EXPECTED = {
    ".": "dir", "opq": "dir", "opq/new": "file", "sub": "dir", "sub/y": "file", "sub/z": "file",
    "sub/w": "file", "top": "file", "keep": "file",
}


@pytest.mark.parametrize("with_upper", [False, True], ids=["readonly", "upper"])
def test_oci_markers(tmp_path, with_upper):
    layers = build_layers(tmp_path / "layers", OCI_STACK)
    if with_upper:
        upper, lowers, work = layers[0], layers[1:], make_dirs(tmp_path / "work")[0]
    else:
        upper, lowers, work = None, layers, None
    with mount_suf(lowers, upper, work) as m:
        snap = snapshot(m)
    got = {p: r["type"] for p, r in snap.items()}
    assert got == OCI_EXPECTED, f"got {sorted(got)}, expected {sorted(OCI_EXPECTED)}"
    _no_markers_visible(snap)
