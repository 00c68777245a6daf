"""Differential write tests: the same operations on the kernel overlay and on
swiftunionfs, over identical copies of the layers.  For each scenario:

 (a) every operation's outcome (value or errno) matches;
 (b) the merged views match (type, mode, owner, size, content, symlink target,
     user xattrs, nlink of non-dirs; inode numbers are not compared here);
 (c) the markers written to upper (whiteouts, opaque dirs) match, and no
     '.wh.*' file appears;
 (d) after unmounting, each upper remounted on its own still shows the same;
 (e) cross-mount: the kernel over swiftunionfs's upper shows swiftunionfs's
     view, and swiftunionfs over the kernel's upper shows the kernel's view.
"""

import ctypes
import functools
import hashlib
import os
import random
import shutil
import stat

import pytest

from conftest import Dir, File, Hardlink, Symlink, Whiteout, differential, sha256_file
from harness import modes

# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD = -100
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2


def renameat2(old, new, flags):
    fn = _libc.renameat2
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if fn(AT_FDCWD, os.fsencode(old), AT_FDCWD, os.fsencode(new), flags) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), old)


@functools.lru_cache(maxsize=None)
def random_bytes(n, seed):
    return random.Random(seed).randbytes(n)


def write(path, data, mode="wb"):
    """Write and return None (so that results are comparable)."""
    with open(path, mode) as f:
        if "b" in mode and isinstance(data, str):
            data = data.encode()
        f.write(data)


def read(path):
    with open(path, "rb") as f:
        return f.read()


def digest(path):
    return sha256_file(path, follow=True)[:16]


def meta(path):
    st = os.lstat(path)
    return (stat.filemode(st.st_mode), st.st_uid, st.st_gid, st.st_size if not stat.S_ISDIR(st.st_mode) else None,
            st.st_nlink if not stat.S_ISDIR(st.st_mode) else None)


# The differential runner: see harness.oracle.differential.
run_differential = differential


BASE = [
    {   # l1 (top lower)
        "f": "lower f\n",
        "bin": {"tar": "tar binary\n", "ls": "ls binary\n"},
        "d": {"a": "a\n", "sub": {"b": "b\n"}},
        "etc": Dir({"conf": File(b"conf\n", 0o640, uid=7, gid=8, xattrs={"user.tag": b"t"})},
                   mode=0o750, uid=7, gid=8, xattrs={"user.dirtag": b"d"}),
        "hl": "hardlinked\n",
        "hl2": Hardlink("hl"),
        "lnk": Symlink("f"),
        "emptydir": {},
    },
    {   # l2
        "g": "g from l2\n",
        "bin": {"sh": "sh\n", "tar": "older tar\n"},
        "d": {"c": "c\n", "sub": {"e": "e\n"}},
        "f": "even older f\n",
    },
    {   # l3
        "bin": {"cat": "cat\n"},
        "d": {"sub": {"deep": {"x": "x\n"}}},
        "h": "h from l3\n",
    },
]


# --------------------------------------------------------------------------
# scenarios
# --------------------------------------------------------------------------

def test_rm_lower_file(tmp_path):
    def op(r):
        r("unlink f", os.unlink, r.p("f"))
        r("unlink g", os.unlink, r.p("g"))
        r("unlink h", os.unlink, r.p("h"))
        r("stat f", os.stat, r.p("f"))
        r("unlink f again", os.unlink, r.p("f"))
        r("listdir", lambda: sorted(os.listdir(r.root)))
    run_differential(tmp_path, BASE, op)


def test_copy_up_then_lower_changes_offline(tmp_path):
    def op(r):
        r("write", write, r.p("f"), "hello m", "w")
        r("read", read, r.p("f"))
        r("meta", meta, r.p("f"))
        r("write etc/conf", write, r.p("etc/conf"), "new conf\n", "w")
        r("meta etc/conf", meta, r.p("etc/conf"))
        r("xattr etc/conf", os.getxattr, r.p("etc/conf"), "user.tag")
        r("meta etc", meta, r.p("etc"))

    def offline(lowers, upper):
        write(os.path.join(lowers[0], "f"), "changed underneath\n")
        write(os.path.join(lowers[0], "etc/conf"), "changed conf\n")

    def check(snap, who):
        assert snap["f"]["sha256"] == hashlib.sha256(b"hello m").hexdigest(), who

    run_differential(tmp_path, BASE, op, offline=offline, check=check)


def test_rm_file_in_merged_dir(tmp_path):
    def op(r):
        r("rm bin/tar", os.unlink, r.p("bin/tar"))
        r("ls bin", lambda: sorted(os.listdir(r.p("bin"))))
        r("rm bin/cat", os.unlink, r.p("bin/cat"))
        r("stat bin/tar", os.stat, r.p("bin/tar"))

    def check(snap, who):
        assert "bin/tar" not in snap and "bin/ls" in snap and "bin/sh" in snap, who

    run_differential(tmp_path, BASE, op, check=check)


def test_rm_rf_merged_dir(tmp_path):
    def op(r):
        r("rm -rf d", shutil.rmtree, r.p("d"))
        r("stat d", os.stat, r.p("d"))
        r("rm -rf bin", shutil.rmtree, r.p("bin"))
        r("ls", lambda: sorted(os.listdir(r.root)))
    run_differential(tmp_path, BASE, op)


@pytest.mark.fuse_overlayfs_differs("fuse-overlayfs marks every new dir opaque (xattr + .wh..wh..opq + a .wh..opq device)")
def test_mkdir_over_removed_merged_dir_is_opaque(tmp_path):
    def op(r):
        r("rm -rf d", shutil.rmtree, r.p("d"))
        r("mkdir d", os.mkdir, r.p("d"), 0o700)
        r("ls d", lambda: sorted(os.listdir(r.p("d"))))
        r("create d/new", write, r.p("d/new"), "n")
        r("mkdir d/sub", os.mkdir, r.p("d/sub"))
        r("ls d/sub", lambda: sorted(os.listdir(r.p("d/sub"))))
        r("meta d", meta, r.p("d"))

    def check(snap, who):
        assert sorted(p for p in snap if p.startswith("d/")) == ["d/new", "d/sub"], who

    run_differential(tmp_path, BASE, op, check=check)


@pytest.mark.fuse_overlayfs_differs("fuse-overlayfs keeps lower hardlinks linked across copy-up; the kernel breaks them")
@pytest.mark.fuse_overlayfs_differs("fuse-overlayfs marks every new dir opaque (xattr + .wh..wh..opq + a .wh..opq device)")
def test_renames(tmp_path):
    def op(r):
        p = r.p
        r("rename lower file", os.rename, p("f"), p("f2"))
        r("stat old", os.stat, p("f"))
        r("read new", read, p("f2"))
        r("rename lower over lower", os.rename, p("g"), p("h"))
        r("create upper file", write, p("u1"), "u1")
        r("rename upper file", os.rename, p("u1"), p("u2"))
        r("rename upper file into merged dir", os.rename, p("u2"), p("bin/u2"))
        r("rename lower file across dirs", os.rename, p("bin/ls"), p("d/sub/ls"))
        r("rename onto whited-out name", os.rename, p("d/a"), p("f"))
        r("mkdir upper dir", os.mkdir, p("nd"))
        r("fill upper dir", write, p("nd/x"), "x")
        r("rename upper dir", os.rename, p("nd"), p("nd2"))
        r("rename lower dir (merged)", os.rename, p("d"), p("d2"))
        r("rename lower dir (single layer, non-empty)", os.rename, p("etc"), p("etc2"))
        r("rename lower empty dir", os.rename, p("emptydir"), p("emptydir2"))
        r("rename dir into own subdir", os.rename, p("nd2"), p("nd2/x/y"))
        r("noreplace onto existing", renameat2, p("f2"), p("h"), RENAME_NOREPLACE)
        r("noreplace onto lower existing", renameat2, p("f2"), p("bin/sh"), RENAME_NOREPLACE)
        r("noreplace onto whited-out name", renameat2, p("f2"), p("g"), RENAME_NOREPLACE)
        r("noreplace onto free", renameat2, p("h"), p("h-new"), RENAME_NOREPLACE)
        r("exchange lower files", renameat2, p("hl"), p("bin/tar"), RENAME_EXCHANGE)
        r("exchange upper/lower file", renameat2, p("g"), p("bin/cat"), RENAME_EXCHANGE)
        r("exchange with missing", renameat2, p("g"), p("nope"), RENAME_EXCHANGE)
        r("exchange merged dir", renameat2, p("d"), p("nd2"), RENAME_EXCHANGE)
        r("exchange upper dirs", os.mkdir, p("nd3"))
        r("exchange upper dirs 2", renameat2, p("nd2"), p("nd3"), RENAME_EXCHANGE)
        r("rename file over dir", os.rename, p("h-new"), p("nd3"))
        r("rename dir over file", os.rename, p("nd3"), p("h-new"))
        r("rename dir over empty merged-away dir", os.rename, p("nd3"), p("emptydir"))
        r("rename symlink", os.rename, p("lnk"), p("lnk2"))
        r("readlink", os.readlink, p("lnk2"))
        r("ls", lambda: sorted(os.listdir(r.root)))
    run_differential(tmp_path, BASE, op)


def test_rename_lower_dir_gives_exdev(tmp_path):
    def op(r):
        r("rename merged dir", os.rename, r.p("d"), r.p("d2"))
        r("rename single-layer lower dir", os.rename, r.p("bin"), r.p("bin2"))
        r("rename lower empty dir", os.rename, r.p("emptydir"), r.p("e2"))
    res, _ = run_differential(tmp_path, BASE, op)
    assert res[0][1] == ("err", "EXDEV") and res[1][1] == ("err", "EXDEV"), res


@pytest.mark.parametrize("mode", modes.params(modes.DIFFERENTIAL))
def test_metadata_changes(tmp_path, mode):
    def op(r):
        p = r.p
        r("chmod lower file", os.chmod, p("f"), 0o600)
        r("chmod lower dir", os.chmod, p("d"), 0o700)
        r("chown lower file", os.chown, p("g"), 1000, 1001)
        r("chown lower dir", os.chown, p("bin"), 2, 3)
        r("lchown symlink", os.chown, p("lnk"), 5, 6, follow_symlinks=False)
        r("utime lower file", os.utime, p("h"), ns=(1_000_000_000, 2_000_000_123))
        r("utime result", lambda: os.stat(p("h")).st_mtime_ns)
        r("utime lower dir", os.utime, p("d/sub"), ns=(3_000_000_000, 4_000_000_000))
        r("utime dir result", lambda: os.stat(p("d/sub")).st_mtime_ns)
        r("setxattr lower file", os.setxattr, p("f"), "user.new", b"value")
        r("setxattr lower dir", os.setxattr, p("d"), "user.dirnew", b"dv")
        r("replace lower xattr", os.setxattr, p("etc/conf"), "user.tag", b"t2")
        r("remove lower xattr", os.removexattr, p("etc"), "user.dirtag")
        r("remove missing xattr", os.removexattr, p("g"), "user.none")
        r("xattr create flag on existing", os.setxattr, p("etc/conf"), "user.tag", b"x", os.XATTR_CREATE)
        r("xattr replace flag on missing", os.setxattr, p("h"), "user.zz", b"x", os.XATTR_REPLACE)
        r("list", lambda: sorted(os.listxattr(p("etc/conf"))))
        r("chmod setgid dir", os.chmod, p("etc"), 0o2775)
    run_differential(tmp_path, BASE, op, suf_opts=mode)


@pytest.mark.parametrize("mode", modes.params(modes.DIFFERENTIAL))
def test_copy_up_preserves_times(tmp_path, mode):
    """Copy-up keeps mtime of the lower file (compared via the results)."""
    specs = [{"t": "t", "td": {"x": "x"}}]

    def op(r):
        r("chmod", os.chmod, r.p("t"), 0o600)
        r("mtime", lambda: os.stat(r.p("t")).st_mtime_ns)
        r("xattr", os.setxattr, r.p("td/x"), "user.a", b"1")
        r("dir mtime kept", lambda: os.stat(r.p("td")).st_mtime_ns)

    def prepare(lowers, upper):
        os.utime(os.path.join(lowers[0], "t"), ns=(111_000_000_000, 222_000_000_000))
        os.utime(os.path.join(lowers[0], "td"), ns=(5_000_000_000, 6_000_000_000))

    res, _ = run_differential(tmp_path, specs, op, suf_opts=mode, prepare=prepare)
    assert res[1][1] == ("ok", 222_000_000_000)


@pytest.mark.parametrize("mode", modes.params(modes.DIFFERENTIAL))
def test_appends_and_truncations(tmp_path, mode):
    specs = [{"a": "0123456789\n", "b": "bbbbbbbbbb", "c": "cccc", "e": "eeee", "big": File(random_bytes(3 << 20, 7))}]

    def op(r):
        p = r.p
        r("append", write, p("a"), "appended\n", "ab")
        r("read a", read, p("a"))
        r("truncate shrink", os.truncate, p("b"), 3)
        r("truncate grow", os.truncate, p("c"), 10000)
        r("open O_TRUNC", lambda: os.close(os.open(p("e"), os.O_WRONLY | os.O_TRUNC)))
        r("size e", lambda: os.stat(p("e")).st_size)

        def ftrunc():
            fd = os.open(p("big"), os.O_RDWR)
            try:
                os.ftruncate(fd, 1 << 20)
                os.pwrite(fd, b"tail", (1 << 20) + 100)
                return os.fstat(fd).st_size
            finally:
                os.close(fd)
        r("ftruncate + pwrite past end", ftrunc)
        r("read big hash", digest, p("big"))

        def rw_same_fd():
            fd = os.open(p("a"), os.O_RDWR)
            try:
                os.pwrite(fd, b"XY", 2)
                return os.pread(fd, 100, 0)
            finally:
                os.close(fd)
        r("rw same fd", rw_same_fd)

        def ro_fd_sees_copy_up():
            fd = os.open(p("c"), os.O_RDONLY)   # opened before anything else touches it
            try:
                write(p("c"), "new content", "r+b")
                return os.pread(fd, 20, 0)
            finally:
                os.close(fd)
        r("ro fd then write via other fd", ro_fd_sees_copy_up)
    run_differential(tmp_path, specs, op, suf_opts=mode)


@pytest.mark.parametrize("mode", modes.params(modes.DIFFERENTIAL))
def test_sparse_and_large_files(tmp_path, mode):
    specs = [{"lowersparse": File(b"start", size=50 << 20), "lowerbig": File(random_bytes(20 << 20, 1))}]

    def op(r):
        p = r.p

        def sparse_new():
            with open(p("sparse"), "wb") as f:
                f.seek(25 << 20)
                f.write(b"middle of a 50MB sparse file")
                f.truncate(50 << 20)
            return os.stat(p("sparse")).st_size
        r("new sparse 50MB", sparse_new)

        def write_middle_of_lower_sparse():
            with open(p("lowersparse"), "r+b") as f:
                f.seek(25 << 20)
                f.write(b"written in the middle")
            return os.stat(p("lowersparse")).st_size
        r("write middle of lower sparse", write_middle_of_lower_sparse)
        r("new large random", write, p("random"), random_bytes(20 << 20, 2))
        r("read back random", digest, p("random"))

        def patch_lower_big():
            with open(p("lowerbig"), "r+b") as f:
                f.seek(10 << 20)
                f.write(b"patched" * 1000)
            return digest(p("lowerbig"))
        r("patch lower big", patch_lower_big)
    run_differential(tmp_path, specs, op, suf_opts=mode)


@pytest.mark.fuse_overlayfs_differs("fuse-overlayfs keeps lower hardlinks linked across copy-up; the kernel breaks them")
def test_symlinks_and_hardlinks(tmp_path):
    def op(r):
        p = r.p
        r("symlink rel", os.symlink, "bin/tar", p("s1"))
        r("symlink abs dangling", os.symlink, "/nonexistent/x", p("s2"))
        r("symlink in lower dir", os.symlink, "../f", p("d/s3"))
        r("readlink", os.readlink, p("d/s3"))
        r("read through", read, p("d/s3"))
        r("link lower file", os.link, p("g"), p("g-link"))
        r("nlink g", lambda: os.stat(p("g")).st_nlink)
        r("nlink g-link", lambda: os.stat(p("g-link")).st_nlink)
        r("link lower file in merged dir", os.link, p("bin/sh"), p("d/sh"))
        r("write via new link", write, p("d/sh"), "changed via link", "w")
        r("read other name", read, p("bin/sh"))
        r("nlink lower hardlinked", lambda: (os.stat(p("hl")).st_nlink, os.stat(p("hl2")).st_nlink))
        r("write one of lower hardlinks", write, p("hl"), "hl changed", "w")
        r("other lower hardlink", read, p("hl2"))
        r("nlink after copy-up", lambda: (os.stat(p("hl")).st_nlink, os.stat(p("hl2")).st_nlink))
        r("unlink hl2", os.unlink, p("hl2"))
        r("nlink hl", lambda: os.stat(p("hl")).st_nlink)
        r("link to symlink", os.link, p("lnk"), p("lnk-hard"), follow_symlinks=False)
        r("link dir", os.link, p("d"), p("d-hard"))
        r("link onto existing", os.link, p("g"), p("h"))
        r("link upper file", lambda: (write(p("new"), "n"), os.link(p("new"), p("new2")),
                                      os.stat(p("new")).st_nlink))
        r("unlink one upper link", os.unlink, p("new"))
        r("nlink new2", lambda: os.stat(p("new2")).st_nlink)
    run_differential(tmp_path, BASE, op)


def _many_specs(n=300):
    l1 = {f"n{i:04d}": f"l1 {i}" for i in range(0, n)}
    l2 = {f"n{i:04d}": f"l2 {i}" for i in range(n // 2, n + n // 2)}
    l3 = {f"n{i:04d}": f"l3 {i}" for i in range(n, 2 * n)}
    l2["sub"] = {"x": "x"}
    l3["sub"] = {"y": "y"}
    return [{"many": l1}, {"many": l2}, {"many": l3}]


@pytest.mark.fuse_overlayfs_differs("fuse-overlayfs marks every new dir opaque (xattr + .wh..wh..opq + a .wh..opq device)")
def test_big_merged_dir_remove_and_recreate(tmp_path):
    def op(r):
        m = r.p("many")
        for i in range(0, 600, 7):
            r(f"rm n{i}", os.unlink, os.path.join(m, f"n{i:04d}"))
        for i in range(0, 600, 21):
            r(f"recreate n{i}", write, os.path.join(m, f"n{i:04d}"), f"recreated {i}")
        for i in range(0, 600, 35):
            r(f"recreate as dir n{i + 1}", lambda i=i: (os.unlink(os.path.join(m, f"n{i + 1:04d}")),
                                                         os.mkdir(os.path.join(m, f"n{i + 1:04d}"))))
        r("rm -rf sub", shutil.rmtree, os.path.join(m, "sub"))
        r("count", lambda: len(os.listdir(m)))
        r("no dups", lambda: len(os.listdir(m)) == len(set(os.listdir(m))))
        r("listing", lambda: sorted(os.listdir(m)))
    run_differential(tmp_path, _many_specs(), op)


@pytest.mark.fuse_overlayfs_differs("fuse-overlayfs marks every new dir opaque (xattr + .wh..wh..opq + a .wh..opq device)")
def test_rmdir_rules(tmp_path):
    specs = [
        {"full": {"a": "a"}, "wo": {"x": Whiteout()}, "merged": {"m1": "1"}, "lone": {}, "up": {}},
        {"full": {"b": "b"}, "wo": {"x": "x"}, "merged": {"m2": "2"}, "single": {"s": "s"}},
    ]

    def op(r):
        p = r.p
        r("rmdir non-empty merged", os.rmdir, p("full"))
        r("rmdir dir whose only lower entry is whited out", os.rmdir, p("wo"))
        r("rmdir empty lower dir", os.rmdir, p("lone"))
        r("rmdir single-layer non-empty", os.rmdir, p("single"))
        r("rm single/s", os.unlink, p("single/s"))
        r("rmdir single now empty", os.rmdir, p("single"))
        r("rm merged/m1", os.unlink, p("merged/m1"))
        r("rmdir merged half-empty", os.rmdir, p("merged"))
        r("rm merged/m2", os.unlink, p("merged/m2"))
        r("rmdir merged all whited out", os.rmdir, p("merged"))
        r("stat merged", os.stat, p("merged"))
        r("create in up", write, p("up/new"), "n")
        r("rmdir with upper entry", os.rmdir, p("up"))
        r("rmdir missing", os.rmdir, p("nope"))
        r("rmdir file", os.rmdir, p("full/a"))
        r("unlink dir", os.unlink, p("full"))
        r("mkdir existing", os.mkdir, p("full"))
        r("recreate merged", os.mkdir, p("merged"))
        r("recreated is empty", lambda: os.listdir(p("merged")))
    run_differential(tmp_path, specs, op)


@pytest.mark.fuse_overlayfs_differs("fuse-overlayfs marks every new dir opaque (xattr + .wh..wh..opq + a .wh..opq device)")
def test_file_replaced_by_dir_and_back(tmp_path):
    def op(r):
        p = r.p
        r("rm f", os.unlink, p("f"))
        r("mkdir f", os.mkdir, p("f"))
        r("f/x", write, p("f/x"), "x")
        r("type f", lambda: stat.S_ISDIR(os.lstat(p("f")).st_mode))
        r("rm -rf f", shutil.rmtree, p("f"))
        r("file f again", write, p("f"), "file again")
        r("read f", read, p("f"))
        r("rm -rf d", shutil.rmtree, p("d"))
        r("d as file", write, p("d"), "d is a file now")
        r("rm d file", os.unlink, p("d"))
        r("d as dir again", os.mkdir, p("d"))
        r("ls d", lambda: sorted(os.listdir(p("d"))))
        r("rm g", os.unlink, p("g"))
        r("g as symlink", os.symlink, "f", p("g"))
        r("readlink g", os.readlink, p("g"))
    run_differential(tmp_path, BASE, op)


@pytest.mark.fuse_overlayfs_differs("fuse-overlayfs: mknod 0/0 gives ENOENT and then lists the root as empty")
def test_special_files(tmp_path):
    def op(r):
        p = r.p
        r("mkfifo", os.mkfifo, p("fifo"), 0o640)
        r("mknod chr", os.mknod, p("null"), stat.S_IFCHR | 0o666, os.makedev(1, 3))
        r("mknod blk", os.mknod, p("blk"), stat.S_IFBLK | 0o600, os.makedev(7, 123))
        r("mknod in merged dir", os.mknod, p("bin/zero"), stat.S_IFCHR | 0o666, os.makedev(1, 5))
        r("mknod over whited-out name", lambda: (os.unlink(p("g")),
                                                 os.mknod(p("g"), stat.S_IFIFO | 0o600)))
        r("mknod 0/0 char device", os.mknod, p("zz"), stat.S_IFCHR | 0o600, 0)
        r("stat zz", lambda: (stat.S_ISCHR(os.lstat(p("zz")).st_mode), os.lstat(p("zz")).st_rdev))
        r("mknod existing", os.mknod, p("f"), stat.S_IFIFO | 0o600)
        r("rdev", lambda: os.lstat(p("null")).st_rdev)
        r("socket", lambda: __import__("socket").socket(1).bind(p("sock")))
    run_differential(tmp_path, BASE, op)


@pytest.mark.fuse_overlayfs_differs("fuse-overlayfs marks every new dir opaque (xattr + .wh..wh..opq + a .wh..opq device)")
def test_parent_chain_copy_up(tmp_path):
    specs = [
        {"p": Dir({"q": Dir({"r": Dir({"leaf": "leaf"}, mode=0o711, uid=33, gid=34,
                                      xattrs={"user.r": b"r"})},
                            mode=0o555, uid=1000, gid=1001)},
                  mode=0o700, uid=1234, gid=5678, xattrs={"user.p": b"p"}),
         "ro": Dir({"f": File(b"ro file", 0o444, uid=99, gid=99)}, mode=0o555, uid=99, gid=99)},
        {"p": Dir({"q": Dir({"other": "o"}, mode=0o755, uid=4, gid=4)}, mode=0o755)},
    ]

    def op(r):
        p = r.p
        r("write deep", write, p("p/q/r/new.txt"), "deep write")
        r("meta chain", lambda: [meta(p(x)) for x in ("p", "p/q", "p/q/r", "p/q/r/new.txt")])
        r("append leaf", write, p("p/q/r/leaf"), "+", "ab")
        r("write 0444 file as root", write, p("ro/f"), " appended", "ab")
        r("meta ro", lambda: (meta(p("ro")), meta(p("ro/f"))))
        r("mkdir in 0555 dir", os.mkdir, p("ro/sub"))
    run_differential(tmp_path, specs, op)


@pytest.mark.fuse_overlayfs_differs("fuse-overlayfs marks every new dir opaque (xattr + .wh..wh..opq + a .wh..opq device)")
def test_writes_on_top_of_existing_upper(tmp_path):
    """A populated upper (with kernel markers) under the writes."""
    upper_spec = {"f": Whiteout(), "d": Dir({"new": "n"}, opaque=True), "up": "upper file"}

    def op(r):
        p = r.p
        r("create over whiteout", write, p("f"), "back")
        r("rm in opaque dir", os.unlink, p("d/new"))
        r("rmdir opaque now empty", os.rmdir, p("d"))
        r("mkdir again", os.mkdir, p("d"))
        r("rm upper file", os.unlink, p("up"))
        r("ls", lambda: sorted(os.listdir(r.root)))
    run_differential(tmp_path, BASE, op, upper_spec=upper_spec)
