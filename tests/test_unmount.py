"""Prompt unmount: once `umount MNT` (or `fusermount3 -u MNT`) returns, the union holds
nothing on the filesystems of its layers, so a script can unmount those right away.

The sequence is fuse-overlayfs's test-mmap.sh / test-passthrough.sh (a union stacked on
two filesystems of its own, unmounted in one go):

    umount MNT && umount LOWERFS && umount UPPERFS

run as ONE shell command, with no retry.  The kernel's overlayfs, the oracle, passes it:
it holds its layers through private clones of their mounts, which pin nothing a umount
checks, and it even lets the layers' filesystems go while it is mounted.  swiftunionfs
holds its layers the same way (UnionCore/PrivateMount.swift).  Each layer filesystem is
a tmpfs or a loop-mounted ext4 image made with mkfs.ext4 in the test's temp dir.
"""

import os
import subprocess
import time

import pytest

from conftest import SUF_BIN, _force_unmount, is_mounted, mounted_points, overlay_opts

HANG_GUARD = 60  # seconds: only stops a hung command; never a measure of speed


def mount_layer_fs(kind, path, tmp):
    """A filesystem of its own at `path`: tmpfs, or ext4 on a loop device (autoclear)."""
    os.makedirs(path)
    if kind == "tmpfs":
        cmd = ["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", path]
    else:
        image = os.path.join(tmp, os.path.basename(path) + ".ext4")
        with open(image, "wb") as f:
            f.truncate(64 << 20)
        subprocess.run(["mkfs.ext4", "-q", "-F", image], check=True, timeout=HANG_GUARD,
                       stdout=subprocess.DEVNULL)
        cmd = ["mount", "-o", "loop", image, path]
    subprocess.run(cmd, check=True, timeout=HANG_GUARD)


def daemons_naming(text):
    """Pids of processes whose command line contains `text` (our daemons, by their paths)."""
    pids = []
    for p in os.listdir("/proc"):
        if not p.isdigit() or int(p) == os.getpid():
            continue
        try:
            with open(f"/proc/{p}/cmdline", "rb") as f:
                if text.encode() in f.read():
                    pids.append(int(p))
        except OSError:
            pass
    return pids


def holders(paths):
    """Which processes hold files on the filesystems mounted at `paths`: for the message."""
    devs = {os.stat(p).st_dev for p in paths}
    out = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/comm") as f:
                comm = f.read().strip()
            held = [n for n in ["cwd", "root"] + [f"fd/{fd}" for fd in os.listdir(f"/proc/{p}/fd")]
                    if os.stat(f"/proc/{p}/{n}").st_dev in devs]
        except OSError:
            continue
        if held:
            out.append(f"pid {p} ({comm}): " + " ".join(held))
    return out


@pytest.fixture
def stack(tmp_path, request):
    """LOWERFS and UPPERFS mounted under tmp_path; unmounts whatever is left, also on failure."""
    tmp = str(tmp_path)
    kind = request.param
    lowerfs, upperfs = os.path.join(tmp, "lowerfs"), os.path.join(tmp, "upperfs")
    mount_layer_fs(kind, lowerfs, tmp)
    try:
        mount_layer_fs(kind, upperfs, tmp)
        lower = os.path.join(lowerfs, "lower")
        os.makedirs(os.path.join(lower, "dir/sub"))
        for name, data in (("file", b"lower file\n"), ("dir/sub/deep", b"deep\n"), ("gone", b"x")):
            with open(os.path.join(lower, name), "wb") as f:
                f.write(data)
        upper, work = os.path.join(upperfs, "upper"), os.path.join(upperfs, "work")
        os.makedirs(upper)
        os.makedirs(work)
        mnt = os.path.join(tmp, "mnt")
        os.makedirs(mnt)
        yield dict(tmp=tmp, lowerfs=lowerfs, upperfs=upperfs, lower=lower, upper=upper, work=work, mnt=mnt)
    finally:
        # A daemon still holding a layer (the failure under test) is given time to exit
        # before its filesystems are detached; then every mount of ours goes.
        deadline = time.monotonic() + 20
        while daemons_naming(tmp) and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid in daemons_naming(tmp):
            os.kill(pid, 9)
        for m in sorted((m for m in mounted_points() if m.startswith(tmp)), key=len, reverse=True):
            _force_unmount(m)


def exercise(mnt):
    """Reads, writes, a copy-up, a whiteout, listings; a file opened and closed last."""
    with open(os.path.join(mnt, "file"), "rb") as f:
        assert f.read() == b"lower file\n"
    with open(os.path.join(mnt, "dir/sub/deep"), "ab") as f:  # copy-up of a lower file
        f.write(b"more\n")
    with open(os.path.join(mnt, "new"), "wb") as f:
        f.write(b"new\n")
        f.flush()
        os.fsync(f.fileno())
    os.unlink(os.path.join(mnt, "gone"))                     # whiteout in upper
    os.mkdir(os.path.join(mnt, "dir/made"))
    assert sorted(os.listdir(mnt)) == ["dir", "file", "new"]
    for _ in os.walk(mnt):
        pass
    fd = os.open(os.path.join(mnt, "dir/sub/deep"), os.O_RDONLY)
    os.read(fd, 4)
    os.close(fd)


def unmount_all(how, s):
    """The script's one command line: the union, then both layer filesystems, no retry."""
    first = "fusermount3 -u" if how == "fusermount3" else "umount"
    script = f'{first} "$1" && umount "$2" && umount "$3"'
    return subprocess.run(["sh", "-c", script, "sh", s["mnt"], s["lowerfs"], s["upperfs"]],
                          capture_output=True, text=True, timeout=HANG_GUARD)


def check_written(s, extra=None):
    """After everything is unmounted, the upper writes are on UPPERFS (mounted again to look)."""
    # Nothing to remount for tmpfs (its contents went with it); ext4 keeps them in the image.
    image = os.path.join(s["tmp"], "upperfs.ext4")
    if not os.path.exists(image):
        return
    # The image may be mounted again only once its first ext4 instance is shut down
    # (the loop device detaches itself then): two instances on one image would clash.
    deadline = time.monotonic() + HANG_GUARD
    while subprocess.run(["losetup", "-j", image], capture_output=True, text=True).stdout.strip():
        assert time.monotonic() < deadline, f"{image} is still attached to a loop device"
        time.sleep(0.05)
    subprocess.run(["mount", "-o", "loop,ro", image, s["upperfs"]], check=True, timeout=HANG_GUARD)
    try:
        with open(os.path.join(s["upper"], "new"), "rb") as f:
            assert f.read() == b"new\n"
        with open(os.path.join(s["upper"], "dir/sub/deep"), "rb") as f:
            assert f.read() == b"deep\nmore\n"
        for name, data in (extra or {}).items():
            with open(os.path.join(s["upper"], name), "rb") as f:
                assert f.read() == data
    finally:
        subprocess.run(["umount", s["upperfs"]], check=True, timeout=HANG_GUARD)


FILESYSTEMS = ["tmpfs", "ext4"]


@pytest.mark.parametrize("stack", FILESYSTEMS, indirect=True)
@pytest.mark.timeout(120)
def test_kernel_overlay_releases_layers_at_umount(stack):
    """The oracle: the kernel's overlay on the same stack passes the same sequence."""
    s = stack
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                    overlay_opts([s["lower"]], s["upper"], s["work"]), s["mnt"]],
                   check=True, timeout=HANG_GUARD)
    exercise(s["mnt"])
    r = unmount_all("umount", s)
    assert r.returncode == 0, f"kernel overlay: {r.stderr.strip()}"
    check_written(s)


@pytest.mark.suf_only
@pytest.mark.parametrize("how", ["umount", "fusermount3"])
@pytest.mark.parametrize("mode", ["background", "foreground"])
@pytest.mark.parametrize("stack", FILESYSTEMS, indirect=True)
@pytest.mark.timeout(120)
def test_layers_free_when_unmount_returns(stack, mode, how):
    """swiftunionfs, in the background (as a script runs it) and with -f: once the unmount
    returns, LOWERFS and UPPERFS unmount without EBUSY, and the daemon then exits 0."""
    s = stack
    opts = overlay_opts([s["lower"]], s["upper"], s["work"])
    cmd = [SUF_BIN, *(["-f"] if mode == "foreground" else []), "-o", opts, s["mnt"]]
    log = open(os.path.join(s["tmp"], "daemon.log"), "w+")
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    if mode == "background":
        assert proc.wait(timeout=HANG_GUARD) == 0, "the mount command failed"
    deadline = time.monotonic() + 20
    while not is_mounted(s["mnt"]):
        assert proc.poll() in (None, 0) and time.monotonic() < deadline, "not mounted"
        time.sleep(0.02)
    daemons = daemons_naming(s["mnt"])
    assert daemons, "no daemon serves the mount"

    exercise(s["mnt"])
    r = unmount_all(how, s)
    busy = [m for m in (s["mnt"], s["lowerfs"], s["upperfs"]) if is_mounted(m)]
    assert r.returncode == 0 and not busy, \
        f"`{how} MNT && umount LOWERFS && umount UPPERFS` failed: {r.stderr.strip()}; " \
        f"still mounted: {busy}; held by: {holders(busy) or 'nobody any more'} (daemon pids {daemons})"

    if mode == "foreground":
        assert proc.wait(timeout=HANG_GUARD) == 0
    # The daemon exits by itself (and lets go of the filesystems it still kept alive).
    deadline = time.monotonic() + HANG_GUARD
    while daemons_naming(s["mnt"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not daemons_naming(s["mnt"]), "the daemon did not exit after the unmount"
    if mode == "foreground":  # the rest of the exit path still ran: -f reports statistics at exit
        log.seek(0)
        assert "swiftunionfs statistics" in log.read()
    check_written(s)


def start_union(s):
    """swiftunionfs over the stack, as a script starts it (returns once mounted)."""
    opts = overlay_opts([s["lower"]], s["upper"], s["work"])
    r = subprocess.run([SUF_BIN, "-o", opts, s["mnt"]], capture_output=True, text=True, timeout=HANG_GUARD)
    assert r.returncode == 0 and is_mounted(s["mnt"]), f"mount failed: {r.stderr.strip()}"


@pytest.mark.parametrize("impl", ["kernel", "swiftunionfs"])
@pytest.mark.parametrize("stack", FILESYSTEMS, indirect=True)
@pytest.mark.timeout(120)
def test_layer_filesystems_unmount_while_union_mounted(stack, impl):
    """As under the kernel's overlay, LOWERFS and UPPERFS unmount while the union is still
    mounted (the union keeps what it holds and goes on serving it); the union unmounts
    after, and what was written reaches UPPERFS."""
    s = stack
    if impl == "kernel":
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                        overlay_opts([s["lower"]], s["upper"], s["work"]), s["mnt"]],
                       check=True, timeout=HANG_GUARD)
    else:
        start_union(s)
    exercise(s["mnt"])
    r = subprocess.run(["sh", "-c", 'umount "$1" && umount "$2"', "sh", s["lowerfs"], s["upperfs"]],
                       capture_output=True, text=True, timeout=HANG_GUARD)
    busy = [m for m in (s["lowerfs"], s["upperfs"]) if is_mounted(m)]
    assert r.returncode == 0, f"{impl}: {r.stderr.strip()}; held by: {holders(busy)}"
    with open(os.path.join(s["mnt"], "file"), "rb") as f:
        assert f.read() == b"lower file\n"
    with open(os.path.join(s["mnt"], "later"), "wb") as f:
        f.write(b"later\n")
    assert sorted(os.listdir(s["mnt"])) == ["dir", "file", "later", "new"]
    r = subprocess.run(["umount", s["mnt"]], capture_output=True, text=True, timeout=HANG_GUARD)
    assert r.returncode == 0, r.stderr
    deadline = time.monotonic() + HANG_GUARD
    while daemons_naming(s["mnt"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not daemons_naming(s["mnt"]), "the daemon did not exit after the unmount"
    check_written(s, extra={"later": b"later\n"})
