"""What the stress scenarios share: their context (where, how big, which seed), mounts
that collect problems instead of raising, upper consistency checks."""

import contextlib
import errno
import hashlib
import os
import random
import shutil
import struct
import time

from .. import mountinfo, mounts, trees
from ..procs import Failure, Hang, ename, fork_worker, kill_and_reap, reap, run  # noqa: F401
from ..trees import diff, file_hash, kind_of, marker_problems, meta_tree, tree  # noqa: F401
from ..watchdog import in_child  # noqa: F401

EXIT_TIMEOUT = mounts.EXIT_TIMEOUT
BLOCK = 1 << 20
PATCH = b"NEW-STATE-WRITTEN-AFTER-COPY-UP"


def h_file(path, dir_fd=None):
    return file_hash(path, "sha1", dir_fd=dir_fd)


class Ctx:
    """Where a scenario works, and its parameters.  Every scenario draws its random
    numbers from rng(name), seeded by (seed, name): `--seed S --only NAME` replays the
    same choices whatever else runs."""

    def __init__(self, base, reps=20, big_mib=1024, duration=60.0, procs=8, tar_files=3000, seed=None,
                 log=None):
        self.base = os.path.realpath(str(base))
        self.reps, self.big_mib, self.duration, self.procs, self.tar_files = reps, big_mib, duration, procs, tar_files
        self.seed = seed if seed is not None else random.randrange(1 << 30)
        self.log = log or (lambda *a: None)

    def rng(self, name):
        return random.Random(f"{self.seed}:{name}")

    def dir(self, name):
        p = os.path.join(self.base, name)
        rmtree(p)
        os.makedirs(p)
        return p


def result(name, figures, failures, t0, ctx=None):
    res = {"scenario": name, "seconds": round(time.monotonic() - t0, 1), "figures": figures,
           "failures": failures}
    if ctx is not None:
        res["seed"] = ctx.seed
        res["rerun"] = f"scripts/stress --only {name} --seed {ctx.seed}"
    return res


def Suf(lowers, upper, work, mnt, extra=()):
    """A swiftunionfs -f daemon for mnt (start() it; stop(check=False) gives the problems)."""
    mnt = os.path.realpath(str(mnt))
    return mounts.Daemon(mounts.suf_argv(lowers, upper, work, extra, mnt), mnt)


@contextlib.contextmanager
def suf_mounted(lowers, upper, work, mnt, extra=(), failures=None, what="unmount"):
    s = Suf(lowers, upper, work, mnt, extra).start()
    try:
        yield s
    finally:
        probs = s.stop(check=False) if s.alive() or s.mounted() else []
        s.cleanup()
        if probs and failures is not None:
            failures.append(f"{what}: " + "; ".join(probs))


@contextlib.contextmanager
def kernel_mounted(lowers, upper, work, mnt):
    os.makedirs(mnt, exist_ok=True)
    try:
        mounts.kernel_mount(lowers, upper, work, mnt)
    except mounts.MountError as e:
        raise Failure(str(e)) from None
    try:
        yield mnt
    finally:
        mounts.force_unmount(mnt)


def alive_check(mnt, timeout=10):
    """Does the mount still answer (stat + readdir of its root) within timeout?"""
    try:
        in_child(lambda: (os.stat(mnt), os.listdir(mnt)) and True, timeout=timeout)
        return True
    except (Hang, Failure):
        return False


def is_mounted(p):
    return mountinfo.is_mounted(p)


force_unmount = mounts.force_unmount
ovl_opts = mounts.overlay_opts
unmount_all_below = mounts.unmount_all_below


def rmtree(p):
    if os.path.lexists(p):
        unmount_all_below(p)
        shutil.rmtree(p, ignore_errors=True)


def work_entries(work):
    """What is in workdir/work (staged copy-ups and replacements while mounted)."""
    try:
        return sorted(os.listdir(os.path.join(work, "work")))
    except FileNotFoundError:
        return []


def staged(work):
    """swiftunionfs's staging names (#suf.PID.N) in workdir/work."""
    return [n for n in work_entries(work) if n.startswith("#suf.")]


def upper_scan(upper, lowers):
    """Consistency of an upper: whiteouts (hiding something / harmless), '#suf.' temp names,
    '.wh.*' files.  Returns (figures, problems)."""
    hiding = harmless = opaque = 0
    problems = []
    for dp, dns, fns in os.walk(upper):
        for n in dns + fns:
            p = os.path.join(dp, n)
            rel = os.path.relpath(p, upper)
            try:
                st = os.lstat(p)
            except OSError as e:   # e.g. deeper than PATH_MAX: not checkable by path here
                if e.errno != errno.ENAMETOOLONG:
                    problems.append(f"cannot lstat {rel!r} in upper: {ename(e)}")
                continue
            if n.startswith("#suf."):
                problems.append(f"stray temp file in upper: {rel!r}")
            if n.startswith(".wh."):
                problems.append(f"'.wh.*' file in upper (default format is devices): {rel!r}")
            if (st.st_mode & 0o170000) == 0o020000 and st.st_rdev == 0:
                if any(os.path.lexists(os.path.join(l, rel)) for l in lowers):
                    hiding += 1
                else:
                    harmless += 1
            if os.path.isdir(p) and not os.path.islink(p) and trees.is_opaque_dir(p):
                opaque += 1
    return {"whiteouts_hiding": hiding, "whiteouts_harmless": harmless, "opaque_dirs": opaque}, problems


def tree_via_kernel(lowers, upper, xwork, kmnt, content=True):
    with kernel_mounted(lowers, upper, xwork, kmnt):
        t, _ = in_child(tree, kmnt, content, timeout=300)
    return t


def tree_via_suf(lowers, upper, work, mnt, failures, content=True):
    with suf_mounted(lowers, upper, work, mnt, failures=failures, what="view unmount"):
        t, probs = in_child(tree, mnt, content, timeout=300)
        failures += probs
    return t


def make_big(path, mib, seed=7):
    """A non-sparse file of mib MiB: one random MiB, each copy stamped with its index.
    Returns (sha1 of the file, sha1 of the file with PATCH at offset 0)."""
    blk = random.Random(seed).randbytes(BLOCK)
    h_old, h_new = hashlib.sha1(), hashlib.sha1()
    with open(path, "wb") as f:
        for i in range(mib):
            b = struct.pack("<Q", i) + blk[8:]
            f.write(b)
            h_old.update(b)
            h_new.update(PATCH + b[len(PATCH):] if i == 0 else b)
    return h_old.hexdigest(), h_new.hexdigest()


class Rec:
    """[(label, 'ok' | value | 'ENAME')] of a list of operations."""

    def __init__(self):
        self.out = []

    def __call__(self, label, fn, *a, **kw):
        try:
            v = fn(*a, **kw)
            self.out.append((label, "ok" if v is None else v))
        except OSError as e:
            self.out.append((label, ename(e)))


def compare_ops(kres, sres):
    """Differences by label (labels present on one side only are reported too)."""
    kd, sd = dict(kres), dict(sres)
    out = []
    for label in list(dict.fromkeys([l for l, _ in kres] + [l for l, _ in sres])):
        if kd.get(label, "<not run>") != sd.get(label, "<not run>"):
            out.append(f"{label}: kernel {kd.get(label, '<not run>')!r} vs suf {sd.get(label, '<not run>')!r}")
    return out


def differential(base, build, ops, remount_view=True, suf_extra=()):
    """Build identical layers for the kernel ('k') and swiftunionfs ('s'), same path
    lengths; run ops(mnt, side_dir) in a child on each (swiftunionfs with the extra
    options suf_extra).  out['k'] = (results, view);
    out['s'] = (results, view, remounted view, alive, unmount problems, (lowers, upper))."""
    out = {}
    for side in ("k", "s"):
        sb = os.path.join(base, side)
        os.makedirs(sb)
        lowers, upper, work = build(sb)
        mnt = os.path.join(sb, "mnt")
        failures = []
        if side == "k":
            with kernel_mounted(lowers, upper, work, mnt):
                res = in_child(ops, mnt, sb, timeout=120)
                view = in_child(tree, mnt, True, timeout=60)
            out["k"] = (res, view)
        else:
            s = Suf(lowers, upper, work, mnt, suf_extra).start()
            try:
                try:
                    res = in_child(ops, mnt, sb, timeout=120)
                    view = in_child(tree, mnt, True, timeout=60)
                except (Hang, Failure) as e:
                    res, view = [("ops", f"failed: {e}")], ({}, [])
                alive = s.alive() and alive_check(mnt)
            finally:
                probs = s.stop(check=False)
                s.cleanup()
            view2 = None
            if remount_view:
                with suf_mounted(lowers, upper, work, mnt, failures=failures):
                    view2 = in_child(tree, mnt, True, timeout=60)
            out["s"] = (res, view, view2, alive, probs + failures, (lowers, upper))
    return out


def wait_for(pred, timeout, step=0.0005):
    """Poll pred() until true or timeout; its last value."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() > deadline:
            return v
        if step:
            time.sleep(step)




# --------------------------------------------------------------------------
# landing a kill inside a staging window
# --------------------------------------------------------------------------

_IN_CLOEXEC, _IN_NONBLOCK = 0o2000000, 0o4000
_IN_CREATE, _IN_MOVED_TO = 0x100, 0x80


def _inotify(path):
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.inotify_init1(_IN_CLOEXEC | _IN_NONBLOCK)
    if fd < 0:
        raise OSError(ctypes.get_errno(), "inotify_init1")
    if libc.inotify_add_watch(fd, os.fsencode(path), _IN_CREATE | _IN_MOVED_TO) < 0:
        e = ctypes.get_errno()
        os.close(fd)
        raise OSError(e, f"inotify_add_watch {path}")
    return fd


def _all_stopped(pid, timeout=2.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            states = []
            for tid in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{tid}/stat") as f:
                    states.append(f.read().rsplit(")", 1)[1].split()[0])
        except OSError:
            return False
        if all(s in ("T", "t") for s in states):
            return True
        time.sleep(0.0005)
    return False


def freeze_while_staged(daemon, work, timeout, done=lambda: False):
    """Stop the daemon (SIGSTOP) at a moment when it has an object staged in
    workdir/work: on each creation there (inotify) it is stopped, and left stopped if
    the staged object is still there once every thread stopped, else continued.  True
    when it is frozen inside a staging window (the caller then kills it), False when
    timeout passed or done() became true first."""
    import signal
    fd = _inotify(os.path.join(work, "work"))
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not done():
            import select
            if not select.select([fd], [], [], 0.05)[0]:
                continue
            try:
                while os.read(fd, 65536):
                    pass
            except BlockingIOError:
                pass
            os.kill(daemon.pid, signal.SIGSTOP)
            if _all_stopped(daemon.pid) and staged(work):
                return True
            os.kill(daemon.pid, signal.SIGCONT)
        return False
    finally:
        os.close(fd)
