"""Mount lifecycles: swiftunionfs (or any FUSE daemon) in the foreground, the kernel's
overlayfs, tmpfs/ext4 scratch filesystems.  Everything that mounts unmounts on failure
too; every wait has a limit; only processes started here are ever killed.

Daemons started here are registered in LIVE and directories given to own() in ROOTS,
so that a watchdog (harness.watchdog) can find what to abort and what to report when
something hangs."""

import contextlib
import json
import os
import signal
import subprocess
import tempfile
import time

from . import binary, mountinfo, procs
from .procs import Failure

MOUNT_TIMEOUT = 20.0
EXIT_TIMEOUT = 20.0

LIVE = {}        # id(daemon) -> Daemon, while it may be serving
ROOTS = set()    # directories whose FUSE mounts belong to us (abortable)


def own(path):
    """Declare FUSE mounts at or below path ours (the watchdog may abort them)."""
    ROOTS.add(os.path.realpath(str(path)))


def disown(path):
    ROOTS.discard(os.path.realpath(str(path)))


class MountError(Failure):
    pass


# --------------------------------------------------------------------------
# options and unmounting
# --------------------------------------------------------------------------

def escape_opt_path(p):
    """Escape a path for -o lowerdir=/upperdir=/workdir= (':' ',' and '\\')."""
    return str(p).replace("\\", "\\\\").replace(":", "\\:").replace(",", "\\,")


def overlay_opts(lowers, upper=None, work=None):
    opts = ["lowerdir=" + ":".join(escape_opt_path(l) for l in lowers)]
    if upper is not None:
        opts.append(f"upperdir={escape_opt_path(upper)}")
    if work is not None:
        opts.append(f"workdir={escape_opt_path(work)}")
    return ",".join(opts)


def force_unmount(path):
    """Unmount path whatever its state (a dead daemon's mount too): fusermount3 -u for
    FUSE, then umount, then umount -l.  True when nothing is mounted there any more."""
    path = os.path.realpath(str(path))
    m = mountinfo.entry_of(path)
    cmds = [["umount", path], ["umount", "-l", path]]
    if m is not None and mountinfo.is_fuse(m):
        cmds.insert(0, ["fusermount3", "-u", path])
    for cmd in cmds:
        if not mountinfo.is_mounted(path):
            return True
        with contextlib.suppress(subprocess.TimeoutExpired):
            subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=20)
    return not mountinfo.is_mounted(path)


def unmount_all_below(base):
    """Unmount everything at or below base, deepest first; returns what was mounted."""
    left = [m.mnt for m in mountinfo.below(base)]
    for m in left:
        force_unmount(m)
    return left


def new_mountpoint(near):
    """A fresh empty directory next to near (a layer or upper path)."""
    parent = os.path.dirname(os.path.abspath(str(near)))
    return tempfile.mkdtemp(prefix="mnt-", dir=parent)


# --------------------------------------------------------------------------
# FUSE daemons
# --------------------------------------------------------------------------

class Daemon:
    """A FUSE daemon started here for the mountpoint mnt.

    foreground=True: argv runs the daemon itself (swiftunionfs -f ...).  False: argv
    daemonizes; the serving pid is found by the mountpoint on its command line."""

    def __init__(self, argv, mnt, env=None, preexec_fn=None, foreground=True, log=None, fstype=None):
        self.argv, self.mnt = list(argv), os.path.realpath(str(mnt))
        self.env, self.preexec_fn, self.foreground, self.fstype = env, preexec_fn, foreground, fstype
        self.log = log
        self.proc = None
        self.pid = None
        self.entry = None          # our mountinfo entry, once mounted
        self.exit_status = None

    # -- starting
    def start(self, timeout=MOUNT_TIMEOUT, expect_fail=False):
        """Start and wait until the mount is live.  Returns self; with expect_fail it
        returns 'mounted' or 'exited' instead of raising when the daemon exits."""
        self.spawn()
        return self.wait_mounted(timeout, expect_fail)

    def spawn(self):
        """Start the process (its output goes to self.log); wait_mounted() follows."""
        os.makedirs(self.mnt, exist_ok=True)
        self._before = {(m.major, m.minor) for m in mountinfo.entries() if m.mnt == self.mnt}
        if self.log is None:
            fd, self.log = tempfile.mkstemp(prefix="daemon-", suffix=".log", dir=os.path.dirname(self.mnt))
            errf = os.fdopen(fd, "w")
        else:
            errf = open(self.log, "w")
        with errf:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=errf, stderr=errf,
                                         start_new_session=True, env=self.env, preexec_fn=self.preexec_fn)
        self.pid = self.proc.pid
        LIVE[id(self)] = self
        return self

    def wait_mounted(self, timeout=MOUNT_TIMEOUT, expect_fail=False):
        deadline = time.monotonic() + timeout
        while True:
            m = self._new_entry(self._before)
            if m is not None:
                self.entry = m
                if not self.foreground:
                    self._find_background_pid(deadline)
                return "mounted" if expect_fail else self
            rc = self.proc.poll()
            if rc is not None and (self.foreground or rc != 0):
                self.exit_status = rc
                LIVE.pop(id(self), None)
                if expect_fail:
                    return "exited"
                raise MountError(f"{self.argv[0]} exited with {rc} before mounting {self.mnt}\n"
                                 f"cmd: {self.argv}\noutput:\n{self.stderr()}")
            if time.monotonic() > deadline:
                self.cleanup()
                raise MountError(f"{self.argv[0]} did not mount {self.mnt} within {timeout}s\n"
                                 f"cmd: {self.argv}\noutput:\n{self.stderr()}")
            time.sleep(0.01)

    def _new_entry(self, before):
        for m in mountinfo.entries():
            if m.mnt == self.mnt and (m.major, m.minor) not in before and mountinfo.is_fuse(m) \
                    and (self.fstype is None or m.fstype == self.fstype):
                return m
        return None

    def _find_background_pid(self, deadline):
        """The launcher forks the server and exits: the server is the newest process
        with the mountpoint as an argument."""
        while time.monotonic() < deadline:
            cands = [p for p in procs.pids_with_arg(self.mnt) if p != self.proc.pid and procs.alive(p)]
            if cands and self.proc.poll() is not None:
                self.pid = max(cands, key=lambda p: os.stat(f"/proc/{p}").st_mtime)
                return
            time.sleep(0.01)
        self.pid = None

    # -- state
    def stderr(self):
        try:
            with open(self.log, errors="replace") as f:
                return f.read()
        except (OSError, TypeError):
            return ""

    def alive(self):
        if self.foreground:
            return self.proc is not None and self.proc.poll() is None
        return self.pid is not None and procs.alive(self.pid)

    def mounted(self):
        """Is our mount (not just any mount) still at mnt?"""
        return self.entry is not None and any(
            (m.major, m.minor) == (self.entry.major, self.entry.minor) for m in mountinfo.entries())

    # -- stopping
    def kill9(self):
        """SIGKILL the daemon and wait for it: a crash.  The mount stays, stale."""
        if self.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
        if self.foreground and self.proc is not None:
            self.exit_status = self.proc.wait(EXIT_TIMEOUT)
        else:
            deadline = time.monotonic() + EXIT_TIMEOUT
            while self.pid is not None and procs.alive(self.pid) and time.monotonic() < deadline:
                time.sleep(0.01)

    def _wait_exit(self, timeout):
        if self.foreground:
            try:
                self.exit_status = self.proc.wait(timeout)
                return True
            except subprocess.TimeoutExpired:
                return False
        deadline = time.monotonic() + timeout
        while self.pid is not None and procs.alive(self.pid):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        if self.proc is not None:
            self.proc.poll()
        return True

    def stop(self, check=True, unmount=("fusermount3", "-u")):
        """Unmount cleanly and reap the daemon.  Returns the problems seen; raises
        MountError with them (and the daemon's output) when check is set."""
        problems = []
        if self.mounted():
            try:
                r = subprocess.run([*unmount, self.mnt], capture_output=True, text=True, timeout=20)
                if r.returncode != 0 and self.mounted():
                    problems.append(f"{' '.join(unmount)} failed: {r.stderr.strip()}")
            except subprocess.TimeoutExpired:
                problems.append(f"{' '.join(unmount)} timed out")
            if self.mounted():
                force_unmount(self.mnt)
        if not self._wait_exit(EXIT_TIMEOUT):
            problems.append(f"daemon did not exit within {EXIT_TIMEOUT}s after unmount; killed")
            self.kill9()
        if self.foreground and self.exit_status not in (0, None) and not problems:
            problems.append(f"daemon exited with {self.exit_status} after unmount")
        LIVE.pop(id(self), None)
        if check and problems:
            raise MountError("; ".join(problems) + f"\ncmd: {self.argv}\noutput:\n{self.stderr()}")
        return problems

    def cleanup(self):
        """Whatever state it is in: not mounted, not running (end of a test, crash tests)."""
        if self.mounted():
            force_unmount(self.mnt)
        if self.alive() and not self._wait_exit(5):
            self.kill9()
        LIVE.pop(id(self), None)


def suf_argv(lowers, upper=None, work=None, extra_opts=(), mnt=None, args=(), bin=None, foreground=True):
    opts = overlay_opts(lowers, upper, work)
    if extra_opts:
        opts += "," + ",".join(extra_opts)
    return [bin or binary.SUF_BIN, *(["-f"] if foreground else []), *args, "-o", opts, str(mnt)]


class SufMount(str):
    """The mountpoint path (a str) of a running swiftunionfs, with its Daemon:
    .proc (Popen), .pid, .stderr(), .stderr_path."""
    daemon: Daemon = None

    @property
    def proc(self):
        return self.daemon.proc

    @property
    def pid(self):
        return self.daemon.pid

    @property
    def stderr_path(self):
        return self.daemon.log

    def stderr(self):
        return self.daemon.stderr()


def start_suf(lowers, upper=None, work=None, extra_opts=(), mnt=None, args=(), bin=None, env=None,
              preexec_fn=None, timeout=MOUNT_TIMEOUT):
    """Start swiftunionfs -f and wait until the mount is live; the caller must
    stop_suf() it (or use mount_suf)."""
    if mnt is None:
        mnt = new_mountpoint(upper if upper is not None else lowers[0])
    argv = suf_argv(lowers, upper, work, extra_opts, os.path.realpath(str(mnt)), args, bin)
    d = Daemon(argv, mnt, env=env, preexec_fn=preexec_fn).start(timeout)
    m = SufMount(d.mnt)
    m.daemon = d
    return m


def stop_suf(m, check=True):
    """Unmount (fusermount3 -u, fallbacks) and reap the daemon; raises MountError
    when check and something went wrong."""
    return m.daemon.stop(check=check)


@contextlib.contextmanager
def mount_suf(lowers, upper=None, work=None, extra_opts=(), mnt=None, **kw):
    m = start_suf(lowers, upper, work, extra_opts, mnt, **kw)
    ok = False
    try:
        yield m
        ok = True
    finally:
        if ok:
            stop_suf(m, check=True)
        else:
            m.daemon.stop(check=False)
            m.daemon.cleanup()


@contextlib.contextmanager
def mount_fuse_overlayfs(lowers, upper=None, work=None, extra_opts=(), mnt=None):
    with mount_suf(lowers, upper, work, extra_opts, mnt, bin=binary.FUSE_OVERLAYFS) as m:
        yield m


# --------------------------------------------------------------------------
# the kernel's overlayfs and scratch filesystems
# --------------------------------------------------------------------------

def kernel_mount(lowers, upper=None, work=None, mnt=None, extra_opts=()):
    """mount -t overlay; returns the mountpoint.  extra_opts e.g. ('userxattr',)."""
    if mnt is None:
        mnt = new_mountpoint(upper if upper is not None else lowers[0])
    mnt = os.path.realpath(str(mnt))
    os.makedirs(mnt, exist_ok=True)
    opts = ",".join([*extra_opts, overlay_opts(lowers, upper, work)])
    r = subprocess.run(["mount", "-t", "overlay", "overlay", "-o", opts, mnt],
                       capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        raise MountError(f"kernel overlay mount failed: {r.stderr.strip()} (opts {opts})")
    return mnt


def kernel_umount(mnt, check=True):
    r = subprocess.run(["umount", mnt], capture_output=True, text=True, timeout=30)
    if r.returncode != 0 and mountinfo.is_mounted(mnt):
        force_unmount(mnt)
        if check:
            raise MountError(f"umount of kernel overlay {mnt} failed: {r.stderr.strip()}")


@contextlib.contextmanager
def mount_kernel(lowers, upper=None, work=None, mnt=None, extra_opts=()):
    mnt = kernel_mount(lowers, upper, work, mnt, extra_opts)
    ok = False
    try:
        yield mnt
        ok = True
    finally:
        kernel_umount(mnt, check=ok)


@contextlib.contextmanager
def scratch_fs(mnt, fstype="tmpfs", options="size=64m", source=None):
    """A tmpfs (or other) filesystem mounted at mnt for the duration."""
    os.makedirs(mnt, exist_ok=True)
    r = subprocess.run(["mount", "-t", fstype, "-o", options, source or fstype, str(mnt)],
                       capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        raise MountError(f"mount -t {fstype} -o {options} {mnt}: {r.stderr.strip()}")
    try:
        yield str(mnt)
    finally:
        force_unmount(mnt)


@contextlib.contextmanager
def ext4_image(image, mnt, size_mib=64):
    """An ext4 filesystem in the file image (mkfs.ext4), loop-mounted at mnt; the loop
    device goes away with the unmount (autoclear), the image file with the caller's dir."""
    with open(image, "wb") as f:
        f.truncate(size_mib << 20)
    r = subprocess.run(["mkfs.ext4", "-q", "-F", "-O", "^has_journal", str(image)],
                       capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise MountError(f"mkfs.ext4 {image}: {r.stderr.strip()}")
    with scratch_fs(mnt, "ext4", "loop", str(image)) as m:
        yield m

# --------------------------------------------------------------------------
# the daemon's statistics (-o stats=FILE, written at unmount)
# --------------------------------------------------------------------------

def read_stats(path):
    """The JSON statistics a swiftunionfs daemon wrote to `stats=` when it stopped."""
    with open(path) as f:
        return json.load(f)


def request_count(stats, op):
    """How many requests of kind `op` (e.g. "lookup") the statistics counted."""
    return stats["ops"].get(op, {}).get("count", 0)
