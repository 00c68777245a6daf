"""The other ways to mount (README "Usage" and "Rootless"):

 * `mount -t fuse.swiftunionfs SOURCE MNT -o ...` and the /etc/fstab line, both through
   /sbin/mount.fuse3, which runs `swiftunionfs SOURCE MNT -o OPTIONS` through /bin/sh.
   mount(8) clears PATH for its helpers (util-linux sanitizes their environment), so
   the shell finds the command only in its default path (/usr/local/sbin:/usr/local/bin:
   /usr/sbin:...).  Nothing is installed: the test runs in a private mount namespace
   where a directory holding the binary is bind-mounted on /usr/local/bin, and uses
   `mount -T FILE` with its own fstab (the machine's /etc/fstab is not touched);
 * an unprivileged user outside any user namespace, through the setuid fusermount3.
"""

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time

import pytest

from conftest import SUF_BIN, build_layers, make_dirs, mount_kernel, snapshot
from harness import mountinfo, mounts, procs
from harness.trees import jsonable
from harness.users import TestUser, dev_fuse_mode

pytestmark = pytest.mark.suf_only

HERE = os.path.dirname(os.path.abspath(__file__))
SPEC = [{"etc": {"motd": "app\n"}, "srv": {"index.html": "index\n"}},
        {"etc": {"motd": "base\n", "os": "debian\n"}, "bin": {"tar": "tar\n"}}]

# Runs as root in `unshare -m --propagation private`: argv = bindir, mnt, then the mount command.
IN_NAMESPACE = r"""
import json, os, subprocess, sys, time
sys.path.insert(0, sys.argv[1])
from harness import mountinfo, procs, trees
bindir, mnt, cmd = sys.argv[2], sys.argv[3], sys.argv[4:]
subprocess.run(["mount", "--bind", bindir, "/usr/local/bin"], check=True, timeout=30)
out = {}
r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
out["mount"] = [r.returncode, r.stderr]
m = mountinfo.entry_of(mnt)
if m is not None and m.fstype.startswith("fuse"):
    out["fstype"], out["source"] = m.fstype, m.source
    daemons = [p for p in procs.pids_with_arg(mnt, exe="swiftunionfs") if procs.alive(p)]
    out["daemons"] = len(daemons)
    try:
        out["motd"] = open(os.path.join(mnt, "etc", "motd")).read()
        out["etc"] = sorted(os.listdir(os.path.join(mnt, "etc")))
        open(os.path.join(mnt, "srv", "new"), "w").write("new\n")
        out["view"] = trees.jsonable(trees.snapshot(mnt))
    finally:
        u = subprocess.run(["umount", mnt], capture_output=True, text=True, timeout=30)
        out["umount"] = [u.returncode, u.stderr]
    deadline = time.monotonic() + 20
    while any(procs.alive(p) for p in daemons) and time.monotonic() < deadline:
        time.sleep(0.05)
    out["daemons_left"] = [p for p in daemons if procs.alive(p)]
print(json.dumps(out))
"""


def _layers(tmp_path):
    lowers = build_layers(tmp_path / "layers", SPEC)
    upper, work, mnt = make_dirs(tmp_path / "upper", tmp_path / "work", tmp_path / "mnt")
    opts = mounts.overlay_opts(lowers, upper, work)
    return lowers, upper, work, mnt, opts


def _mount_in_namespace(tmp_path, mnt, cmd):
    bindir = make_dirs(tmp_path / "bin")[0]
    shutil.copy2(SUF_BIN, os.path.join(bindir, "swiftunionfs"))
    r = subprocess.run(["unshare", "-m", "--propagation", "private", sys.executable, "-c", IN_NAMESPACE,
                        HERE, bindir, mnt, *cmd], capture_output=True, text=True, timeout=180)
    assert r.returncode == 0 and r.stdout.strip(), f"namespace run failed: {r.returncode}\n{r.stderr}"
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["mount"][0] == 0, f"{cmd}: {out['mount']}"
    assert out.get("fstype") == "fuse.swiftunionfs", out
    assert out["source"] == "layers", f"mount source {out['source']!r}, want the SOURCE 'layers'"
    assert out["daemons"] >= 1, "no swiftunionfs process serves the mount"
    assert (out["motd"], out["etc"]) == ("app\n", ["motd", "os"]), out
    assert out["umount"][0] == 0, f"umount: {out['umount']}"
    assert out["daemons_left"] == [], "the daemon did not exit after umount"
    return out["view"]


def _kernel_view(lowers, upper, tmp_path):
    with mount_kernel(lowers, upper, make_dirs(tmp_path / "kwork")[0]) as k:
        return snapshot(k)


def _check_upper_and_view(tmp_path, lowers, upper, view):
    with open(os.path.join(upper, "srv", "new")) as f:
        assert f.read() == "new\n"
    assert view == jsonable(_kernel_view(lowers, upper, tmp_path)), "the kernel shows this upper differently"


def test_mount_t_fuse_swiftunionfs(tmp_path):
    lowers, upper, work, mnt, opts = _layers(tmp_path)
    view = _mount_in_namespace(tmp_path, mnt, ["mount", "-t", "fuse.swiftunionfs", "layers", mnt, "-o", opts])
    _check_upper_and_view(tmp_path, lowers, upper, view)


def test_fstab_line(tmp_path):
    """The README's fstab line, in a private fstab (mount -T), mounted by its mountpoint."""
    lowers, upper, work, mnt, opts = _layers(tmp_path)
    fstab = tmp_path / "fstab"
    fstab.write_text(f"# test fstab\nlayers  {mnt}  fuse.swiftunionfs  {opts}  0 0\n")
    view = _mount_in_namespace(tmp_path, mnt, ["mount", "-T", str(fstab), mnt])
    _check_upper_and_view(tmp_path, lowers, upper, view)


def _wait_gone(pids, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(procs.alive(p) for p in pids):
        time.sleep(0.05)
    return [p for p in pids if procs.alive(p)]


@pytest.fixture
def user():
    with TestUser() as u:
        yield u


def test_unprivileged_through_fusermount3(user, tmp_path):
    """An ordinary user, no user namespace, /dev/fuse readable by all (as distributions
    ship it; libfuse opens it before trying mount(2)): mount(2) is refused, so libfuse
    mounts through the setuid fusermount3; the mount is the user's
    (user_id=UID), writes land in upper owned by the user, whiteouts are 0/0 devices
    (allowed unprivileged since Linux 5.8) and opaque marks user.overlay.opaque (trusted.*
    is refused), which the kernel's overlay reads with -o userxattr.  fusermount3 -u by
    the user ends it."""
    base = tempfile.mkdtemp(prefix="suf-fusermount-", dir="/tmp")
    mounts.own(base)
    try:
        os.chmod(base, 0o755)
        # the user's own image: its files are the user's (0 in the spec)
        lowers = build_layers(os.path.join(base, "layers"), SPEC, hostid=lambda i: user.uid if i == 0 else i,
                              root_owner=(user.uid, user.gid))
        upper, work, mnt = make_dirs(*(os.path.join(base, n) for n in ("upper", "work", "mnt")))
        for d in (upper, work, mnt):
            os.chown(d, user.uid, user.gid)
        binary = os.path.join(base, "swiftunionfs")
        shutil.copy2(SUF_BIN, binary)
        os.chmod(binary, 0o755)
        as_user = ["setpriv", f"--reuid={user.uid}", f"--regid={user.gid}", "--init-groups", "--"]
        env = {"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "HOME": base}
        with dev_fuse_mode(0o666):
            r = subprocess.run(as_user + [binary, "-o", mounts.overlay_opts(lowers, upper, work), mnt],
                               capture_output=True, text=True, timeout=60, env=env)
        assert r.returncode == 0, f"unprivileged mount: {r.returncode} {r.stderr}"
        m = mountinfo.entry_of(mnt)
        assert m is not None and m.fstype == "fuse.swiftunionfs", m
        assert f"user_id={user.uid}" in m.super_options, m
        daemons = [p for p in procs.pids_with_arg(mnt, exe="swiftunionfs") if procs.alive(p)]
        try:
            # Only the user reaches its mount (no allow_other): the checks run as the user,
            # with a copy of the harness it can read.
            shutil.copytree(os.path.join(HERE, "harness"), os.path.join(base, "harness"),
                            ignore=shutil.ignore_patterns("__pycache__"))
            script = ("import json, os, shutil, sys; sys.path.insert(0, sys.argv[2]); m = sys.argv[1]\n"
                      "from harness import trees\n"
                      "open(os.path.join(m, 'srv', 'new'), 'w').write('new\\n')\n"
                      "os.unlink(os.path.join(m, 'bin', 'tar'))\n"
                      "shutil.rmtree(os.path.join(m, 'etc')); os.mkdir(os.path.join(m, 'etc'))\n"
                      "print(json.dumps(trees.jsonable(trees.snapshot(m))))\n")
            r = subprocess.run(as_user + ["/usr/bin/python3", "-c", script, mnt, base], capture_output=True,
                               text=True, timeout=60, env=env)
            assert r.returncode == 0, r.stderr
            view = json.loads(r.stdout)
            assert sorted(p for p in view if "/" not in p) == [".", "bin", "etc", "srv"], sorted(view)
            assert "bin/tar" not in view and "srv/new" in view
        finally:
            u = subprocess.run(as_user + ["fusermount3", "-u", mnt], capture_output=True, text=True,
                               timeout=30, env=env)
            if mountinfo.is_mounted(mnt):
                mounts.force_unmount(mnt)
        assert u.returncode == 0, f"fusermount3 -u as the user: {u.stderr}"
        assert not _wait_gone(daemons), "the daemon did not exit after fusermount3 -u"
        st = os.lstat(os.path.join(upper, "srv", "new"))
        assert (st.st_uid, st.st_gid) == (user.uid, user.gid)
        wh = os.lstat(os.path.join(upper, "bin", "tar"))
        assert stat.S_ISCHR(wh.st_mode) and wh.st_rdev == 0, "whiteout is not a 0/0 device"
        etc = os.path.join(upper, "etc")
        assert os.getxattr(etc, "user.overlay.opaque") == b"y"
        assert "trusted.overlay.opaque" not in os.listxattr(etc)
        kwork = make_dirs(os.path.join(base, "kwork"))[0]
        with mount_kernel(lowers, upper, kwork, extra_opts=("userxattr",)) as k:
            kview = jsonable(snapshot(k))
        assert kview == view, "the kernel (-o userxattr) shows this upper differently"
    finally:
        mounts.unmount_all_below(base)
        mounts.disown(base)
        shutil.rmtree(base, ignore_errors=True)
