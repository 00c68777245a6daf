"""Layers on different filesystems: lowers on a tmpfs, upper and workdir on an ext4
filesystem (an image file, loop-mounted).  Copy-up then crosses filesystems
(copy_file_range's EXDEV fallback), and inode numbers of different layers may collide:
swiftunionfs maps them apart (docs/design.md "Inode numbers").

The kernel's overlayfs on the same arrangement is the oracle for outcomes and views;
inode numbers differ on purpose (one FUSE st_dev against the kernel's per-layer st_dev),
so for them the checks are swiftunionfs's own promises: distinct objects have distinct
numbers, hard links share one, readdir's d_ino is st_ino, and a copy-up keeps it."""

import os
import random

import pytest

from conftest import File, Hardlink, differential, mount_suf
from harness import mounts
from harness.trees import snapshot

MiB = 1 << 20
SPEC = [
    {
        "f": "lower f\n",
        "big": File(random.Random(3).randbytes(8 * MiB)),
        "x": File(b"xattrs\n", xattrs={"user.k": b"v"}),
        "h1": "hard\n", "h2": Hardlink("h1"),
        "d": {"a": "a\n", "sub": {"b": "b\n"}},
        "keep": "keep\n",
    },
    {"d": {"c": "c\n"}, "g": "g from l2\n", "f": "older f\n", "many": {f"n{i}": f"{i}\n" for i in range(50)}},
]


def write(path, data, mode="w"):
    with open(path, mode) as f:
        f.write(data)


def read(path):
    with open(path, "rb") as f:
        return f.read()


def ops(r):
    p = r.p
    r("copy-up f (data across filesystems)", write, p("f"), "more\n", "a")
    r("copy-up big", write, p("big"), b"PATCH", "r+b")
    r("big size", lambda: os.stat(p("big")).st_size)
    r("chmod x (copy-up with xattrs)", os.chmod, p("x"), 0o600)
    r("xattr of x", os.getxattr, p("x"), "user.k")
    r("write a lower hard link", write, p("h1"), "changed\n")
    r("the other link", read, p("h2"))
    r("rename lower g", os.rename, p("g"), p("g2"))
    r("rm d/a", os.unlink, p("d/a"))
    r("mkdir in merged d", os.mkdir, p("d/new"))
    r("rm -rf many", lambda: [os.unlink(os.path.join(p("many"), n)) for n in sorted(os.listdir(p("many")))])
    r("rmdir many", os.rmdir, p("many"))
    r("mkdir many again", os.mkdir, p("many"))
    r("symlink", os.symlink, "keep", p("lnk"))
    r("ls", lambda: sorted(os.listdir(r.root)))
    r("ls d", lambda: sorted(os.listdir(p("d"))))


@pytest.fixture
def two_filesystems(tmp_path):
    """tmp/tmpfs (lowers) and tmp/ext4 (uppers), both unmounted at the end."""
    with mounts.scratch_fs(tmp_path / "tmpfs", "tmpfs", "size=256m") as tfs, \
            mounts.ext4_image(tmp_path / "ext4.img", tmp_path / "ext4", size_mib=256) as ext4:
        assert os.stat(tfs).st_dev != os.stat(ext4).st_dev
        yield tfs, ext4


def _layout(fs):
    tfs, ext4 = fs
    return lambda side: (os.path.join(tfs, side), os.path.join(ext4, side))


def test_tmpfs_lowers_ext4_upper(two_filesystems):
    differential(two_filesystems[1], SPEC, ops, layout=_layout(two_filesystems))


def test_inode_numbers_across_filesystems(two_filesystems, tmp_path):
    """Two fresh tmpfs instances number their inodes alike: l1 and l2 then hold files
    with the same real inode numbers, which the union must still report apart."""
    from harness.layers import build_layer, make_dirs
    tfs, ext4 = two_filesystems
    with mounts.scratch_fs(tmp_path / "tmpfs2", "tmpfs", "size=64m") as tfs2:
        lowers = [build_layer(os.path.join(tfs, "l1"), SPEC[0]), build_layer(os.path.join(tfs2, "l2"), SPEC[1])]
        upper, work = make_dirs(os.path.join(ext4, "ino", "upper"), os.path.join(ext4, "ino", "work"))
        write(os.path.join(upper, "up"), "upper\n")
        real = [{os.lstat(os.path.join(dp, n)).st_ino for dp, dns, fns in os.walk(l) for n in dns + fns}
                for l in lowers]
        assert real[0] & real[1], "precondition: the two lowers should share real inode numbers"
        with mount_suf(lowers, upper, work) as m:
            before = snapshot(m, inodes=True, content=False)
            write(os.path.join(m, "f"), "x", "a")          # copy-up onto the ext4 upper
            os.mkdir(os.path.join(m, "d", "n"))             # copies up d
            after = snapshot(m, inodes=True, content=False)
    problems = []
    for snap, when in ((before, "before copy-up"), (after, "after copy-up")):
        by_ino = {}
        for path, rec in snap.items():
            by_ino.setdefault(rec["ino"], []).append(path)
        shared = {i: ps for i, ps in by_ino.items() if len(ps) > 1 and set(ps) != {"h1", "h2"}}
        if shared:
            problems.append(f"{when}: distinct objects with one inode number: {shared}")
        bad = [f"{p}: d_ino {r['d_ino']} st_ino {r['ino']}" for p, r in snap.items()
               if "d_ino" in r and r["d_ino"] != r["ino"]]
        if bad:
            problems.append(f"{when}: readdir d_ino is not st_ino: {bad}")
    if before["h1"]["ino"] != before["h2"]["ino"]:
        problems.append("lower hard links h1/h2 report different numbers")
    for path in ("f", "d", "d/a", "d/c", "x", "g"):
        if before[path]["ino"] != after[path]["ino"]:
            problems.append(f"{path}: inode number changed across copy-up "
                            f"({before[path]['ino']} -> {after[path]['ino']})")
    assert not problems, "\n".join(problems)
