"""Aborting a FUSE connection: the one way to free every process stuck on a hung daemon.

The kernel names a connection by its superblock's device number; FUSE mounts get
anonymous devices (major 0), so the name is the minor from mountinfo.  Writing
anything to /sys/fs/fuse/connections/N/abort fails every pending and future request
with ENOTCONN; the daemon's read of /dev/fuse fails and it exits; the mount stays,
stale, until unmounted.  When fusectl is not mounted at /sys/fs/fuse/connections, a
private instance is mounted in a temp dir for the moment and unmounted again."""

import contextlib
import os
import subprocess
import tempfile

from . import mountinfo

SYS_DIR = "/sys/fs/fuse/connections"


def connection_id(m):
    """The connection number of a mountinfo entry (a FUSE mount)."""
    return (m.major << 20) | m.minor


@contextlib.contextmanager
def connections_dir():
    """A directory holding the fusectl entries (N/abort, N/waiting, ...)."""
    if mountinfo.fstype_of(SYS_DIR) == "fusectl":
        yield SYS_DIR
        return
    d = tempfile.mkdtemp(prefix="suf-fusectl-")
    r = subprocess.run(["mount", "-t", "fusectl", "fusectl", d], capture_output=True, text=True, timeout=20)
    try:
        if r.returncode != 0:
            raise OSError(f"cannot mount fusectl: {r.stderr.strip()}")
        yield d
    finally:
        if mountinfo.is_mounted(d):
            subprocess.run(["umount", d], capture_output=True, timeout=20)
        with contextlib.suppress(OSError):
            os.rmdir(d)


def waiting(conns, cid):
    """Requests the kernel has sent (or queued) and not yet got an answer for."""
    try:
        with open(os.path.join(conns, str(cid), "waiting")) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def abort(entries):
    """Abort the connections of these mountinfo entries; returns one text line each."""
    out = []
    if not entries:
        return out
    with connections_dir() as conns:
        for m in entries:
            cid = connection_id(m)
            w = waiting(conns, cid)
            try:
                with open(os.path.join(conns, str(cid), "abort"), "w") as f:
                    f.write("1")
                out.append(f"aborted FUSE connection {cid} of {m.mnt} ({m.fstype}; {w} requests waiting)")
            except OSError as e:
                out.append(f"could not abort FUSE connection {cid} of {m.mnt}: {e}")
    return out


def abort_mount(path, pid="self"):
    """Abort the FUSE connection of the mount at path (in pid's mount namespace)."""
    m = mountinfo.entry_of(path, pid)
    if m is None or not mountinfo.is_fuse(m):
        return []
    return abort([m])
