"""A hang guard that works where SIGALRM cannot: a process stuck in a request to a
hung FUSE daemon waits in the kernel and ignores signals it has a handler for.

guard(seconds, what) runs a block with a watchdog thread.  When the time is up it
records what hung (this process's Python and kernel stacks, the stuck daemons' and
children's kernel stacks, the daemons' output and trace tails), then aborts the FUSE
connections of our mounts (harness.fusectl), which fails every stuck request with
ENOTCONN, and the block ends with Hang carrying that record.  Our mounts are the
daemons started through harness.mounts (LIVE), FUSE mounts below the directories given
to harness.mounts.own() or to guard(roots=), and FUSE mounts in the private mount
namespaces of our descendants (swiftunionfs run, the rootless helper).  Nothing else
is ever aborted: other people's mounts on the machine are left alone."""

import os
import re
import signal
import sys
import threading
import time
import traceback

from . import fusectl, mountinfo, mounts, procs
from .procs import Hang

GRACE = 15.0   # after the abort, how long the block has to notice before SIGALRM


def _our_fuse_mounts(roots=()):
    """[(mountinfo entry, namespace pid or 'self', daemon or None)] of FUSE mounts that are ours."""
    found, seen = [], set()

    def add(m, where, daemon=None):
        cid = fusectl.connection_id(m)
        if cid not in seen:
            seen.add(cid)
            found.append((m, where, daemon))

    for d in list(mounts.LIVE.values()):
        if d.entry is not None and d.mounted():
            add(d.entry, "self", d)
    all_roots = [os.path.realpath(str(r)) for r in (*mounts.ROOTS, *roots)]
    for m in mountinfo.entries():
        if mountinfo.is_fuse(m) and any(m.mnt == r or m.mnt.startswith(r.rstrip("/") + "/") for r in all_roots):
            add(m, "self")
    try:
        my_ns = os.readlink("/proc/self/ns/mnt")
    except OSError:
        my_ns = None
    for pid in procs.descendants():
        try:
            if os.readlink(f"/proc/{pid}/ns/mnt") == my_ns:
                continue
        except OSError:
            continue
        for m in mountinfo.entries(pid):
            if mountinfo.is_fuse(m):
                add(m, pid)
    return found


def _daemon_pids(m, daemon):
    if daemon is not None and daemon.pid is not None:
        return [daemon.pid]
    return [p for p in procs.pids_with_arg(m.mnt) if procs.alive(p)]


def _tail(path, n=2500):
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - n))
            return f.read().decode(errors="replace")
    except OSError as e:
        return f"<{procs.ename(e)}>"


def _trace_files(argv):
    out = []
    for a in argv:
        out += re.findall(r"(?:^|,)trace=([^,]+)", a)
    return out


def diagnose(stuck_pids=(), roots=(), main_thread=None):
    """What is hung, as text; and the FUSE mounts (entries) to abort."""
    lines, entries = [], []
    if main_thread is not None:
        frame = sys._current_frames().get(main_thread)
        if frame is not None:
            frames = [f for f in traceback.extract_stack(frame)
                      if "/site-packages/" not in f.filename and "/_pytest/" not in f.filename]
            lines.append("python stack of the stuck thread (pytest's own frames left out):")
            lines += ["  " + l for l in "".join(traceback.format_list(frames[-10:])).rstrip().splitlines()]
        lines.append("kernel stacks of this process:")
        lines.append(procs.thread_stacks(os.getpid()))
    for pid in stuck_pids:
        lines.append("kernel stacks of the stuck process:")
        lines.append(procs.thread_stacks(pid))
    daemons = set()
    for m, where, daemon in _our_fuse_mounts(roots):
        entries.append(m)
        ns = "" if where == "self" else f" (mount namespace of pid {where})"
        lines.append(f"FUSE mount {m.mnt}{ns} {m.fstype} connection {fusectl.connection_id(m)}:")
        for pid in _daemon_pids(m, daemon):
            daemons.add(pid)
            lines.append(procs.thread_stacks(pid))
        if daemon is not None:
            out = daemon.stderr()[-2000:]
            if out.strip():
                lines.append("  daemon output (tail):\n    " + "\n    ".join(out.splitlines()))
            for t in _trace_files(daemon.argv):
                lines.append(f"  trace {t} (tail):\n    " + "\n    ".join(_tail(t).splitlines()[-25:]))
    others = [p for p in procs.descendants() if p not in daemons and p not in stuck_pids]
    blocked = [p for p in others if procs.proc_state(p) == "D"]
    if blocked:
        lines.append("our other processes in uninterruptible sleep:")
        lines += [procs.thread_stacks(p) for p in blocked[:8]]
    return "\n".join(lines), entries


def abort_ours(stuck_pids=(), roots=(), main_thread=None):
    """diagnose(), then abort the connections found; the whole record as text."""
    text, entries = diagnose(stuck_pids, roots, main_thread)
    if entries:
        try:
            text += "\n" + "\n".join(fusectl.abort(entries))
        except OSError as e:
            text += f"\ncould not abort: {e}"
    else:
        text += "\nno FUSE mount of ours to abort"
    return text


class Watchdog:
    """guard() in object form: start(); ...; stop().  fired/report after the fact."""

    def __init__(self, seconds, what, roots=(), grace=GRACE):
        self.seconds, self.what, self.roots, self.grace = seconds, what, roots, grace
        self.fired = False
        self.report = ""
        self._done = threading.Event()
        self._reported = threading.Event()
        self._lock = threading.Lock()
        self._main = threading.get_ident()
        self._thread = threading.Thread(target=self._run, name="suf-watchdog", daemon=True)

    def start(self):
        self._t0 = time.monotonic()
        self._thread.start()
        return self

    def _run(self):
        if self._done.wait(self.seconds):
            return
        with self._lock:
            if self._done.is_set():
                return
            self.fired = True
        head = f"{self.what} did not finish within {self.seconds}s (hang guard)"
        try:
            self.report = head + "\n" + abort_ours(roots=self.roots, main_thread=self._main)
        except Exception:  # noqa: BLE001 - the guard must fire even if diagnostics break
            self.report = head + "\n(diagnostics failed)\n" + traceback.format_exc()
        self._reported.set()
        sys.stderr.write(f"\n[watchdog] {self.report}\n")
        sys.stderr.flush()
        if self._done.wait(self.grace):
            return
        # Still stuck, not on one of our FUSE mounts: interrupt the thread itself.
        if self._main == threading.main_thread().ident:
            signal.pthread_kill(self._main, signal.SIGALRM)

    def stop(self):
        with self._lock:
            self._done.set()
        if self.fired:
            self._reported.wait(60)   # the abort may wake us before the record is written
        return self.report if self.fired else None


class guard:
    """with guard(60, "copy-up storm"): ...  -> Hang(report) if it takes longer."""

    def __init__(self, seconds, what, roots=(), grace=GRACE):
        self.wd = Watchdog(seconds, what, roots, grace)
        self._old = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            def on_alarm(signum, frame):
                if self.wd.fired:
                    raise Hang(self.wd.report or "hang guard: interrupted")
            self._old = signal.signal(signal.SIGALRM, on_alarm)
        self.wd.start()
        return self.wd

    def __exit__(self, typ, exc, tb):
        self.wd.stop()
        if self._old is not None:
            signal.signal(signal.SIGALRM, self._old)
        if self.wd.fired and not isinstance(exc, Hang):
            raise Hang(self.wd.report) from exc
        return False


def on_child_hang(pid):
    """in_child(on_hang=...) hook: record and abort, then the caller kills the child."""
    return abort_ours(stuck_pids=(pid,))


def in_child(fn, *args, timeout=60.0):
    """procs.in_child with this module's hang handling: on a timeout the record of what
    hung is in the Hang, and our FUSE connections are aborted before the child is killed."""
    return procs.in_child(fn, *args, timeout=timeout, on_hang=on_child_hang)
