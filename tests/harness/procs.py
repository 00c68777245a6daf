"""Processes with time limits: commands, forked children that touch a mount (so that a
hung FUSE request cannot hang the caller), other ids, and what a process is stuck in."""

import errno
import json
import os
import pickle
import select
import signal
import subprocess
import time
import traceback


class Failure(AssertionError):
    """A check failed (an AssertionError, so pytest reports it as a failed test)."""


class Hang(Failure):
    """Something did not finish within its time limit."""


def ename(e):
    """errno name of an OSError ('ENOENT'), else the exception's type name."""
    if isinstance(e, OSError) and e.errno is not None:
        return errno.errorcode.get(e.errno, str(e.errno))
    return type(e).__name__


def run(cmd, timeout=30, check=False, **kw):
    """subprocess.run with captured text output, no stdin and a time limit."""
    kw.setdefault("stdin", subprocess.DEVNULL)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    if check and r.returncode != 0:
        raise Failure(f"{cmd} exited {r.returncode}: {r.stderr.strip()}")
    return r


def reap(pid, timeout):
    """waitpid with a time limit; the wait status, or None (still running / not ours)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            p, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return None
        if p == pid:
            return status
        if time.monotonic() > deadline:
            return None
        time.sleep(0.01)


def kill_and_reap(pid, timeout=10):
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return reap(pid, timeout)


def fork_worker(fn, *args):
    """Start fn(*args) in a forked child; returns its pid (exit status 0 = fn returned)."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            signal.signal(signal.SIGALRM, signal.SIG_DFL)
            fn(*args)
        except BaseException:  # noqa: BLE001 - the exit status says it
            code = 1
        finally:
            os._exit(code)
    return pid


def in_child(fn, *args, timeout=60.0, on_hang=None):
    """Run fn(*args) in a forked child and return its (picklable) result.  An exception
    in the child is raised here as Failure.  When the child does not finish in time,
    on_hang(pid) is called first (it may abort FUSE connections and return a text on
    what hung), then the child is killed and Hang is raised with that text."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            signal.signal(signal.SIGALRM, signal.SIG_DFL)
            try:
                res = ("ok", fn(*args))
            except BaseException as e:  # noqa: BLE001 - reported to the parent
                res = ("exc", f"{type(e).__name__}: {e}\n{traceback.format_exc()}")
            try:
                data = pickle.dumps(res)
            except Exception as e:  # noqa: BLE001
                data = pickle.dumps(("exc", f"unpicklable result: {e}"))
            with os.fdopen(w, "wb") as f:
                f.write(data)
        finally:
            os._exit(0)
    os.close(w)
    chunks = []
    name = getattr(fn, "__name__", repr(fn))
    deadline = time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                info = ""
                if on_hang is not None:
                    try:
                        info = on_hang(pid) or ""
                    except Exception as e:  # noqa: BLE001 - diagnostics must not mask the hang
                        info = f"(diagnostics failed: {e!r})"
                kill_and_reap(pid)
                raise Hang(f"{name} did not finish within {timeout}s" + (f"\n{info}" if info else ""))
            rl, _, _ = select.select([r], [], [], min(left, 1.0))
            if rl:
                b = os.read(r, 1 << 20)
                if not b:
                    break
                chunks.append(b)
    finally:
        os.close(r)
    reap(pid, 10)
    if not chunks:
        raise Failure(f"{name}: child died without a result")
    kind, val = pickle.loads(b"".join(chunks))
    if kind == "exc":
        raise Failure(val)
    return val


def as_ids(uid, gid, fn, *args, groups=()):
    """Run fn(*args) in a forked child with these ids (and supplementary groups, none by
    default; umask 022); return its JSON-able value, or raise OSError with the child's
    errno.  Usable without pytest (the rootless helper runs it inside a namespace)."""
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(rfd)
        try:
            os.setgroups(list(groups))
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)
            os.umask(0o022)
            v = fn(*args)
            msg = json.dumps(["ok", v if isinstance(v, (int, str, type(None), list, bool)) else repr(v)])
        except OSError as e:
            msg = json.dumps(["err", e.errno])
        except BaseException as e:  # noqa: BLE001
            msg = json.dumps(["exc", repr(e)])
        os.write(wfd, msg.encode())
        os._exit(0)
    os.close(wfd)
    data = b""
    while True:
        b = os.read(rfd, 65536)
        if not b:
            break
        data += b
    os.close(rfd)
    os.waitpid(pid, 0)
    kind, v = json.loads(data.decode() or '["exc", "child wrote nothing"]')
    if kind == "err":
        raise OSError(v, os.strerror(v))
    if kind == "exc":
        raise RuntimeError(v)
    return v


# --------------------------------------------------------------------------
# what a process is doing
# --------------------------------------------------------------------------

def proc_state(pid):
    """One-letter state (R, S, D, Z, ...) or None when the process is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def alive(pid):
    s = proc_state(pid)
    return s is not None and s not in ("Z", "X")


def parent_of(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def descendants(pid=None):
    """Pids of every living descendant of pid (default: this process)."""
    pid = os.getpid() if pid is None else pid
    children = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            p = parent_of(int(d))
            if p is not None:
                children.setdefault(p, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [os.fsdecode(a) for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def exe_name(pid):
    try:
        return os.path.basename(os.readlink(f"/proc/{pid}/exe"))
    except OSError:
        return None


def pids_with_arg(arg, exe=None):
    """Pids whose command line has arg as one of its words (and, with exe, whose
    executable has that file name)."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit() and arg in cmdline(int(d)) and (exe is None or exe_name(int(d)) == exe):
            out.append(int(d))
    return out


def thread_stacks(pid):
    """Kernel stacks of the threads of pid, identical ones counted once, as text: where
    a hung process is stuck (root reads /proc/PID/task/TID/stack)."""
    try:
        tids = sorted(os.listdir(f"/proc/{pid}/task"), key=int)
    except OSError:
        return f"  pid {pid}: gone"
    groups = {}
    for tid in tids:
        base = f"/proc/{pid}/task/{tid}"
        try:
            with open(f"{base}/comm") as f:
                comm = f.read().strip()
            state = proc_state(f"{pid}/task/{tid}")
            with open(f"{base}/stack") as f:
                frames = [l.split()[-1] for l in f.read().splitlines() if l.strip()]
        except OSError as e:
            comm, state, frames = "?", "?", [f"<{ename(e)}>"]
        key = (comm, state, " < ".join(frames[:10]))
        groups.setdefault(key, []).append(tid)
    lines = [f"  pid {pid} ({' '.join(cmdline(pid))[:200]}):"]
    for (comm, state, stack), ts in groups.items():
        lines.append(f"    {len(ts)} thread(s) {comm} [{state}] tid {','.join(ts[:4])}"
                     f"{'...' if len(ts) > 4 else ''}: {stack or '(no kernel stack: running in user space)'}")
    return "\n".join(lines)
