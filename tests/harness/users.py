"""Unprivileged test users, their subordinate id ranges, and /dev/fuse's mode: made
when missing, and taken away again afterwards (only what was added here)."""

import contextlib
import os
import pwd
import stat
import subprocess
import uuid

from .procs import Failure


def subrange(path, user, uid):
    """(start, count) of user's first range in /etc/subuid or /etc/subgid, or None."""
    try:
        with open(path) as f:
            for line in f:
                parts = line.strip().split(":")
                if len(parts) == 3 and parts[0] in (user, str(uid)):
                    return int(parts[1]), int(parts[2])
    except FileNotFoundError:
        pass
    return None


def free_subrange(count=65536):
    """A start above every range given out in /etc/subuid and /etc/subgid."""
    top = 100000
    for path in ("/etc/subuid", "/etc/subgid"):
        try:
            with open(path) as f:
                for line in f:
                    parts = line.strip().split(":")
                    if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
                        top = max(top, int(parts[1]) + int(parts[2]))
        except FileNotFoundError:
            pass
    return top


def _run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise Failure(f"{' '.join(cmd)}: {r.stderr.strip()}")


class TestUser:
    """An unprivileged user for the duration: with name=None a fresh one (suft-XXXXXX,
    so that concurrent runs never share or delete each other's user).  subids=True
    also gives it 65536 subordinate uids and gids.  close() removes what was added."""
    __test__ = False   # not a pytest test class

    def __init__(self, name=None, subids=False, home=True):
        self.name = name or "suft-" + uuid.uuid4().hex[:6]
        self.created = False
        self.added_subuid = self.added_subgid = None
        try:
            pw = pwd.getpwnam(self.name)
        except KeyError:
            _run(["useradd", *(["-m"] if home else ["-M"]), "-s", "/bin/sh", self.name])
            self.created = True
            pw = pwd.getpwnam(self.name)
        self.uid, self.gid, self.home = pw.pw_uid, pw.pw_gid, pw.pw_dir
        self.pw = pw
        if subids:
            try:
                if subrange("/etc/subuid", self.name, self.uid) is None:
                    start = free_subrange()
                    _run(["usermod", "--add-subuids", f"{start}-{start + 65535}", self.name])
                    self.added_subuid = start
                if subrange("/etc/subgid", self.name, self.uid) is None:
                    start = free_subrange()
                    _run(["usermod", "--add-subgids", f"{start}-{start + 65535}", self.name])
                    self.added_subgid = start
            except Exception:
                self.close()
                raise
        su = subrange("/etc/subuid", self.name, self.uid)
        sg = subrange("/etc/subgid", self.name, self.uid)
        self.subuid, self.subgid = (su[0] if su else None), (sg[0] if sg else None)

    def close(self):
        """Remove the ranges and the user this object added (not a pre-existing one)."""
        if self.added_subuid is not None and not self.created:
            subprocess.run(["usermod", "--del-subuids", f"{self.added_subuid}-{self.added_subuid + 65535}",
                            self.name], capture_output=True, timeout=60)
        if self.added_subgid is not None and not self.created:
            subprocess.run(["usermod", "--del-subgids", f"{self.added_subgid}-{self.added_subgid + 65535}",
                            self.name], capture_output=True, timeout=60)
        if self.created:
            # userdel removes the user's /etc/subuid and /etc/subgid lines too
            subprocess.run(["userdel", "-r", "-f", self.name], capture_output=True, timeout=60)
            for path in ("/etc/subuid", "/etc/subgid"):
                if subrange(path, self.name, self.uid) is not None:
                    _drop_lines(path, self.name)
            self.created = False
        self.added_subuid = self.added_subgid = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def as_dict(self):
        return dict(name=self.name, uid=self.uid, gid=self.gid, subuid=self.subuid, subgid=self.subgid)


def _drop_lines(path, user):
    with open(path) as f:
        lines = f.readlines()
    keep = [l for l in lines if l.split(":", 1)[0] != user]
    if keep != lines:
        with open(path + ".suf-tmp", "w") as f:
            f.writelines(keep)
        os.chmod(path + ".suf-tmp", stat.S_IMODE(os.stat(path).st_mode))
        os.replace(path + ".suf-tmp", path)


@contextlib.contextmanager
def dev_fuse_mode(mode=0o666):
    """/dev/fuse usable by everyone for the duration; the old mode comes back after."""
    old = stat.S_IMODE(os.stat("/dev/fuse").st_mode)
    os.chmod("/dev/fuse", mode)
    try:
        yield
    finally:
        os.chmod("/dev/fuse", old)
