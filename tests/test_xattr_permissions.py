"""xattr_permissions=1|2 and uppers written by fuse-overlayfs.

containers/storage mounts with xattr_permissions=2 whenever force_mask is set: the
container's owners and modes live in an xattr of each upper object
(user.containers.override_stat; security.fuseoverlayfs.override_stat for =1), the inode
stays the daemon's.  These tests mount swiftunionfs in that mode and check what a user
checks: stat through the mount, the kernel's permission checks against it, the xattr in
upper, that the xattr never shows; then that an upper fuse-overlayfs wrote in this mode
shows through swiftunionfs exactly as it showed through fuse-overlayfs, and that
fuse-overlayfs's private user.fuseoverlayfs.* xattrs never show (its test-xattr.sh,
test 6).  fuse-overlayfs (Debian 12: 1.10) is the reference where the behaviour is its own.
"""

import contextlib
import errno
import os
import shutil
import stat
import subprocess
import time

import pytest

from conftest import (Dir, Fifo, File, Symlink, build_layer, is_mounted, make_dirs, mount_suf,
                      overlay_opts, snapshot, diff_snapshots, IS_FUSE_OVERLAYFS)

pytestmark = [pytest.mark.suf_only, pytest.mark.timeout(240)]

CONTAINERS = "user.containers.override_stat"
SECURITY = "security.fuseoverlayfs.override_stat"
FUSE_OVERLAYFS_USER = "user.fuseoverlayfs.override_stat"
NAME = {2: CONTAINERS, 1: SECURITY}


def owner_xattr(path, name):
    """(uid, gid, permission bits) from an override_stat value, or None."""
    try:
        v = os.getxattr(path, name, follow_symlinks=False).decode()
    except OSError as e:
        if e.errno == errno.ENODATA:
            return None
        raise
    uid, gid, mode = v.split(":")[:3]
    return int(uid), int(gid), int(mode, 8) & 0o7777


def shown(path):
    st = os.lstat(path)
    return st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)


def as_user(uid, *cmd):
    """Runs cmd with uid/gid `uid` and no supplementary groups; its return code."""
    return subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", *cmd],
                          capture_output=True, timeout=30).returncode


@contextlib.contextmanager
def mount_fuse_overlayfs(lower, upper, work, opts=""):
    """fuse-overlayfs in the foreground, unmounted and reaped at the end."""
    fo = shutil.which("fuse-overlayfs")
    if fo is None:
        pytest.fail("fuse-overlayfs is not installed (scripts/setup installs it)")
    mnt = os.path.join(os.path.dirname(str(upper)), "fo-mnt")
    os.makedirs(mnt, exist_ok=True)
    o = overlay_opts([lower], upper, work) + ("," + opts if opts else "")
    proc = subprocess.Popen([fo, "-f", "-o", o, mnt], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while not is_mounted(mnt):
            if proc.poll() is not None:
                pytest.fail(f"fuse-overlayfs exited {proc.returncode}: {proc.stderr.read().decode()}")
            if time.monotonic() > deadline:
                pytest.fail("fuse-overlayfs did not mount within 20 s")
            time.sleep(0.02)
        yield mnt
    finally:
        if is_mounted(mnt):
            subprocess.run(["fusermount3", "-u", mnt], capture_output=True, timeout=20)
        if is_mounted(mnt):
            subprocess.run(["umount", "-l", mnt], capture_output=True, timeout=20)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=20)


def base_layer(tmp_path):
    return build_layer(tmp_path / "lower", {
        "etc": Dir({"conf": File(b"c\n", 0o644), "secret": File(b"s\n", 0o600)}),
        "bin": Dir({"tool": File(b"#!/bin/sh\n", 0o755)}),
        "data": Dir({"old": File(b"o"), "deep": Dir({"d": File(b"d")})}, mode=0o750, uid=3, gid=4),
        "owned": File(b"x", 0o640, uid=7, gid=8),
        "gone": File(b"g"),
        "pipe": Fifo(0o644),
        "link": Symlink("etc/conf"),
    })


def changes(m, special=True):
    """The same changes through either program (chmod before chown: fuse-overlayfs 1.10's
    chmod rewrites the owner it read wrongly, so a chown last keeps the test about reading).
    fuse-overlayfs 1.10 with xattr_permissions=1 cannot make a fifo (its security.* xattr
    on it fails: EOPNOTSUPP) nor a symlink (ENOMEM): `special=False` leaves those out."""
    os.chmod(f"{m}/etc/conf", 0o4711)
    os.chown(f"{m}/etc/conf", 1000, 1000)
    os.chown(f"{m}/owned", 5, 6)
    os.chmod(f"{m}/data", 0o1777)
    os.chown(f"{m}/data", 11, 12)
    with open(f"{m}/new", "w") as f:
        f.write("new\n")
    os.chmod(f"{m}/new", 0o640)
    os.chown(f"{m}/new", 100, 101)
    os.mkdir(f"{m}/newdir", 0o700)
    os.chown(f"{m}/newdir", 200, 201)
    with open(f"{m}/bin/tool", "a") as f:
        f.write("# changed\n")
    os.unlink(f"{m}/gone")
    shutil.rmtree(f"{m}/data/deep")
    os.mkdir(f"{m}/data/deep")
    if special:
        os.mkfifo(f"{m}/newfifo")
        os.symlink("nowhere", f"{m}/newlink")
    os.rename(f"{m}/etc/secret", f"{m}/etc/moved")


# --------------------------------------------------------------------------
# swiftunionfs in this mode
# --------------------------------------------------------------------------

@pytest.mark.parametrize("mode", [2, 1])
def test_owners_and_modes_live_in_the_xattr(public_tmp, mode):
    tmp_path = public_tmp
    lower = base_layer(tmp_path)
    upper, work = make_dirs(tmp_path / "u", tmp_path / "w")
    name = NAME[mode]
    daemon = (os.geteuid(), os.getegid())
    with mount_suf([lower], upper, work, extra_opts=[f"xattr_permissions={mode}"]) as m:
        assert owner_xattr(upper, name) == shown(m), "the upper root records its own owner and mode at mount"
        assert shown(f"{m}/owned") == (7, 8, 0o640), "a lower file shows its own inode"
        changes(m)
        # (the chown after the chmod dropped the set-uid bit, as on any filesystem)
        expect = {"etc/conf": (1000, 1000, 0o711), "owned": (5, 6, 0o640), "data": (11, 12, 0o1777),
                  "new": (100, 101, 0o640), "newdir": (200, 201, 0o700)}
        for rel, want in expect.items():
            assert shown(f"{m}/{rel}") == want, f"{rel} through the mount"
            assert owner_xattr(f"{upper}/{rel}", name) == want, f"{rel}: the xattr in upper"
            inode = os.lstat(f"{upper}/{rel}")
            assert (inode.st_uid, inode.st_gid) == daemon, f"{rel}: the inode stays the daemon's"
            assert inode.st_mode & 0o7000 == 0, f"{rel}: no set-id bit on the daemon's inode"
        # The kernel checks permissions against what the mount shows.
        assert as_user(1000, "cat", f"{m}/owned") != 0, "uid 1000 may not read 5:6 0640"
        os.chmod(f"{m}/owned", 0o600)
        os.chown(f"{m}/owned", 1000, 1000)
        assert as_user(1000, "cat", f"{m}/owned") == 0, "uid 1000 reads its own 0600 file"
        assert as_user(1001, "cat", f"{m}/owned") != 0
        assert os.lstat(f"{upper}/owned").st_uid == daemon[0]
        # A file made by an ordinary user in the sticky 1777 directory is theirs.
        assert as_user(1000, "touch", f"{m}/data/by-user") == 0
        assert shown(f"{m}/data/by-user")[:2] == (1000, 1000)
        assert owner_xattr(f"{upper}/data/by-user", name)[:2] == (1000, 1000)
        assert as_user(1001, "rm", "-f", f"{m}/data/by-user") != 0, "sticky directory: not another user's"
        # The xattr never shows and cannot be set or removed through the mount.
        for rel in ("etc/conf", "new", "newdir", "."):
            p = f"{m}/{rel}"
            assert not [n for n in os.listxattr(p) if "override_stat" in n or "fuseoverlayfs" in n], rel
            with pytest.raises(OSError) as e:
                os.getxattr(p, name)
            assert e.value.errno == errno.ENODATA
        with pytest.raises(OSError) as e:
            os.setxattr(f"{m}/new", CONTAINERS, b"0:0:04755")
        assert e.value.errno == errno.EPERM
        with pytest.raises(OSError) as e:
            os.removexattr(f"{m}/new", name)
        assert e.value.errno == errno.EPERM
        os.chmod(f"{m}/newdir", 0o4755)
        assert shown(f"{m}/newdir") == (200, 201, 0o4755)
        assert owner_xattr(f"{upper}/newdir", name) == (200, 201, 0o4755)
        os.setxattr(f"{m}/new", "user.mine", b"1")
        assert os.listxattr(f"{m}/new") == ["user.mine"]
        before = snapshot(m)
    # The same view after a remount, with the option or without (upper's root says it).
    for opts in ([f"xattr_permissions={mode}"], []):
        with mount_suf([lower], upper, work, extra_opts=opts) as m:
            d = diff_snapshots(before, snapshot(m), "before", "after remount")
            assert not d, f"remount with {opts}: " + "\n".join(d)


def test_symlinks_and_devices_keep_their_inodes(tmp_path):
    """Only directories and regular files carry the xattr (Linux refuses user.* xattrs on
    anything else): the others show their inode's owner and mode, as under fuse-overlayfs."""
    lower = base_layer(tmp_path)
    upper, work = make_dirs(tmp_path / "u", tmp_path / "w")
    with mount_suf([lower], upper, work, extra_opts=["xattr_permissions=2"]) as m:
        os.mkfifo(f"{m}/f2")
        os.chmod(f"{m}/f2", 0o620)
        os.chown(f"{m}/f2", 9, 9)
        os.symlink("x", f"{m}/l2")
        os.lchown(f"{m}/l2", 3, 3)
        assert shown(f"{m}/f2") == (9, 9, 0o620)
        assert shown(f"{upper}/f2") == (9, 9, 0o620), "the fifo's own inode"
        assert os.lstat(f"{m}/l2").st_uid == 3 and os.lstat(f"{upper}/l2").st_uid == 3
        assert owner_xattr(f"{upper}/f2", CONTAINERS) is None


# --------------------------------------------------------------------------
# uppers written by fuse-overlayfs
# --------------------------------------------------------------------------

@pytest.mark.parametrize("mode", [2, 1])
def test_upper_written_by_fuse_overlayfs_in_this_mode(tmp_path, mode):
    lower = base_layer(tmp_path)
    upper, work = make_dirs(tmp_path / "u", tmp_path / "w")
    with mount_fuse_overlayfs(lower, upper, work, f"xattr_permissions={mode}") as fo:
        changes(fo, special=mode == 2)
        theirs = snapshot(fo)
    # What fuse-overlayfs 1.10 left: its own name for the owner xattr, on the upper root too.
    fo_name = FUSE_OVERLAYFS_USER if mode == 2 else SECURITY
    assert owner_xattr(upper, fo_name) is not None or owner_xattr(upper, CONTAINERS) is not None
    assert theirs["etc/conf"]["uid"] == 1000 and theirs["newdir"]["uid"] == 200, theirs["etc/conf"]
    for opts in ([f"xattr_permissions={mode}"], []):
        with mount_suf([lower], upper, work, extra_opts=opts) as m:
            ours = snapshot(m)
            d = diff_snapshots(theirs, ours, "fuse-overlayfs", "swiftunionfs")
            assert not d, f"with {opts or 'no option'}:\n  " + "\n  ".join(d)
            # Writing on: swiftunionfs goes on in the name fuse-overlayfs used.
            os.chown(f"{m}/new", 300, 301)
            assert shown(f"{m}/new")[:2] == (300, 301)
            assert owner_xattr(f"{upper}/new", fo_name)[:2] == (300, 301)
            os.chown(f"{m}/new", 100, 101)


def test_fuse_overlayfs_private_xattrs_never_show(tmp_path):
    """fuse-overlayfs's test-xattr.sh, test 6, and an upper it wrote (copy-ups carry
    user.fuseoverlayfs.origin), through swiftunionfs."""
    lower = base_layer(tmp_path)
    os.setxattr(f"{lower}/etc/conf", "user.fuseoverlayfs.origin", b"internal")
    os.setxattr(f"{lower}/etc/conf", "user.visible", b"1")
    upper, work = make_dirs(tmp_path / "u", tmp_path / "w")
    with mount_fuse_overlayfs(lower, upper, work) as fo:
        changes(fo)
        theirs = snapshot(fo)
    carrying = [p for p in ("owned", "etc/conf", "bin/tool")
                if any(n.startswith("user.fuseoverlayfs.") for n in os.listxattr(f"{upper}/{p}"))]
    assert carrying, "fuse-overlayfs left its private xattrs in upper (else this test proves nothing)"
    with mount_suf([lower], upper, work) as m:
        out = subprocess.run(["getfattr", "-R", "-d", "-m", "-", m], capture_output=True, text=True, timeout=30)
        assert "fuseoverlayfs" not in out.stdout, out.stdout
        assert "user.visible" in out.stdout
        for p in carrying:
            with pytest.raises(OSError) as e:
                os.getxattr(f"{m}/{p}", "user.fuseoverlayfs.origin")
            assert e.value.errno == errno.ENODATA
        with pytest.raises(OSError) as e:
            os.setxattr(f"{m}/new", "user.fuseoverlayfs.opaque", b"y")
        assert e.value.errno == errno.EPERM
        d = diff_snapshots(theirs, snapshot(m), "fuse-overlayfs", "swiftunionfs")
        assert not d, "\n".join(d)


def test_fuse_overlayfs_rootless_opaque_mark(tmp_path):
    """Where trusted.* is refused, fuse-overlayfs marks an opaque directory with
    user.fuseoverlayfs.opaque=y (and a .wh..wh..opq file, which it may fail to make)."""
    lower = build_layer(tmp_path / "lower", {"d": {"old": "o", "sub": {"x": "x"}}})
    upper = build_layer(tmp_path / "u", {"d": {"new": "n"}})
    os.setxattr(f"{upper}/d", "user.fuseoverlayfs.opaque", b"y")
    work, = make_dirs(tmp_path / "w")
    with mount_fuse_overlayfs(lower, upper, work) as fo:
        theirs = sorted(os.listdir(f"{fo}/d"))
    assert theirs == ["new"]
    with mount_suf([lower], upper, work) as m:
        assert sorted(os.listdir(f"{m}/d")) == theirs
        assert not os.path.exists(f"{m}/d/old")


def test_containers_storage_layer_with_force_mask(tmp_path):
    """A lower as containers/storage extracts it with force_mask: inodes 0700 and the
    extractor's, the real owner and mode in user.containers.override_stat (also on the
    layer root, which is what makes a reader use it), in the forms of 1.43 and of newer
    versions (with a type). fuse-overlayfs shows the xattr's owners; so must we."""
    lower = build_layer(tmp_path / "lower", {
        "usr": Dir({"bin": Dir({"su": File(b"su", 0o700), "ls": File(b"ls", 0o700)}, mode=0o700)}, mode=0o700),
        "home": Dir({"u": Dir({"f": File(b"f", 0o700)}, mode=0o700)}, mode=0o700),
        "sh": Symlink("usr/bin/su"),   # no xattr on symlinks: the inode's
    })
    os.chmod(lower, 0o700)
    for rel, v in {"": "0:0:0555", "usr": "0:0:0755:dir", "usr/bin": "0:0:0755", "usr/bin/su": "0:0:04755:file",
                   "usr/bin/ls": "0:0:0755", "home": "0:0:0755", "home/u": "1000:1000:0700", "home/u/f": "1000:1000:0644"}.items():
        os.setxattr(os.path.join(lower, rel) if rel else lower, CONTAINERS, v.encode())
    upper, work = make_dirs(tmp_path / "u", tmp_path / "w")
    ign = ("xattrs",)  # fuse-overlayfs 1.10 lists user.containers.override_stat; swiftunionfs hides it
    with mount_fuse_overlayfs(lower, upper, work, "xattr_permissions=2") as fo:
        theirs = snapshot(fo)
    shutil.rmtree(upper)
    shutil.rmtree(work)
    make_dirs(upper, work)
    # A file without the xattr shows its inode (fuse-overlayfs 1.10 fails the listing).
    with open(f"{lower}/plain", "w") as f:
        f.write("p")
    os.chmod(f"{lower}/plain", 0o700)
    with mount_suf([lower], upper, work, extra_opts=["xattr_permissions=2"]) as m:
        ours = snapshot(m)
        assert ours["usr/bin/su"]["mode"] == oct(0o4755) and ours["home/u/f"]["uid"] == 1000
        assert ours["plain"]["mode"] == oct(0o700), "no xattr: the inode's own"
        assert all(CONTAINERS not in r["xattrs"] for r in ours.values())
        del ours["plain"]
        # The root: fuse-overlayfs 1.10 gives a new upper's root its own inode's mode (0755),
        # 1.14 and later (and swiftunionfs) the lower root's recorded one, the image's "/".
        assert ours["."]["mode"] == oct(0o555) and theirs["."]["mode"] == oct(0o755)
        ours["."]["mode"] = theirs["."]["mode"]
        d = diff_snapshots(theirs, ours, "fuse-overlayfs", "swiftunionfs", ignore=ign)
        assert not d, "\n".join(d)
        # A copy-up keeps the shown owner and mode, in upper's xattr.
        with open(f"{m}/home/u/f", "a") as f:
            f.write("more")
        assert shown(f"{m}/home/u/f") == (1000, 1000, 0o644)
        assert owner_xattr(f"{upper}/home/u/f", CONTAINERS) == (1000, 1000, 0o644)
        assert owner_xattr(f"{upper}/home/u", CONTAINERS) == (1000, 1000, 0o700)
        assert owner_xattr(upper, CONTAINERS) == (0, 0, 0o555), "upper's root from the lower root"
