"""Many processes changing overlapping names at once: no death, no stall (progress
watchdog), a consistent view and upper, the same view after a remount and from the
kernel's overlay over the same upper."""

import errno
import mmap
import os
import random
import struct
import time

from .common import (Hang, Failure, Suf, alive_check, diff, ename, fork_worker, in_child,
                     is_mounted, kill_and_reap, marker_problems, meta_tree, reap, result, rmtree,
                     suf_mounted, tree, tree_via_kernel, upper_scan, work_entries)


EXPECTED_ERRNOS = {errno.ENOENT, errno.EEXIST, errno.ENOTEMPTY, errno.EISDIR, errno.ENOTDIR, errno.EXDEV,
                   errno.EINVAL, errno.EBUSY}
NAMES = [f"n{i}" for i in range(14)]
DIRS = [f"dd{i}" for i in range(5)]
OPS = ["create", "write", "copyup", "rename", "unlink", "mkdir", "rmdir", "chmod", "list", "truncate"]
NSLOT = 4 + len(OPS)   # per worker: [ops, unexpected, last-progress-time(ms), done] + per-op counts


def conc_layers(base):
    l1, l2, upper = (os.path.join(base, n) for n in ("l1", "l2", "upper"))
    spec = {
        l1: ["c/n0", "c/n1", "c/n2", "c/n3", "c/n4", "c/dd0/n0", "c/dd0/n1", "c/dd1/n5"],
        l2: ["c/n3", "c/n4", "c/n5", "c/n6", "c/n7", "c/dd0/n2", "c/dd2/n3", "c/dd2/n4", "c/lone"],
        upper: ["c/n8", "c/dd3/n6"],
    }
    for root, files in spec.items():
        os.makedirs(os.path.join(root, "c"), exist_ok=True)
        for rel in files:
            p = os.path.join(root, rel)
            os.makedirs(os.path.dirname(p), exist_ok=True)
            with open(p, "w") as f:
                f.write(f"{root[-2:]} {rel}\n" * 20)
    os.makedirs(os.path.join(l2, "c", "dd4"), exist_ok=True)
    return [l1, l2], upper


def _conc_worker(root, k, seed, shm, deadline):
    rng = random.Random(seed)
    slot = k * NSLOT * 8
    chunk = rng.randbytes(65536)

    def bump(i, n=1):
        off = slot + i * 8
        shm[off:off + 8] = struct.pack("<q", struct.unpack("<q", shm[off:off + 8])[0] + n)

    def path():
        if rng.random() < 0.35:
            return os.path.join(root, rng.choice(DIRS), rng.choice(NAMES))
        return os.path.join(root, rng.choice(NAMES + DIRS))

    while time.time() < deadline:
        op = rng.choice(OPS)
        p = path()
        try:
            if op == "create":
                fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                os.write(fd, chunk[:rng.randrange(1, 65536)])
                os.close(fd)
            elif op == "write":
                fd = os.open(p, os.O_WRONLY | os.O_APPEND)
                os.write(fd, chunk[:rng.randrange(1, 8192)])
                os.close(fd)
            elif op == "copyup":
                fd = os.open(p, os.O_RDWR)
                os.pwrite(fd, b"copied-up", 0)
                os.pread(fd, 100, 0)
                os.close(fd)
            elif op == "rename":
                os.rename(p, path())
            elif op == "unlink":
                os.unlink(p)
            elif op == "mkdir":
                os.mkdir(p)
            elif op == "rmdir":
                os.rmdir(p)
            elif op == "chmod":
                os.chmod(p, rng.choice([0o600, 0o644, 0o755, 0o700]))
            elif op == "list":
                d = os.path.dirname(p) if rng.random() < 0.5 else p
                for n in os.listdir(d):
                    try:
                        os.lstat(os.path.join(d, n))
                    except FileNotFoundError:
                        pass
            elif op == "truncate":
                os.truncate(p, rng.randrange(0, 4096))
        except OSError as e:
            if e.errno not in EXPECTED_ERRNOS:
                bump(1)
                with open(os.path.join(os.path.dirname(os.path.dirname(root)), f"..unexpected-{k}"), "a") as f:
                    f.write(f"{op} {p}: {ename(e)}\n")
        bump(0)
        bump(4 + OPS.index(op))
        shm[slot + 16:slot + 24] = struct.pack("<q", int(time.monotonic() * 1000))
    shm[slot + 24:slot + 32] = struct.pack("<q", 1)


def scenario_concurrency(ctx):
    t0, name = time.monotonic(), "concurrency"
    rng = ctx.rng(name)
    failures, figs = [], {"procs": ctx.procs, "duration_s": ctx.duration}
    base = ctx.dir(name)
    lowers, upper = conc_layers(base)
    work, xwork = os.path.join(base, "work"), os.path.join(base, "xwork")
    os.makedirs(work)
    os.makedirs(xwork)
    lower_meta = [meta_tree(l) for l in lowers]
    mnt = os.path.join(base, "mnt")
    shm = mmap.mmap(-1, ctx.procs * NSLOT * 8)
    stall_limit = 30.0
    s = Suf(lowers, upper, work, mnt).start()
    pids = []
    live_view = None
    try:
        deadline = time.time() + ctx.duration
        now_ms = int(time.monotonic() * 1000)
        for k in range(ctx.procs):
            shm[k * NSLOT * 8 + 16:k * NSLOT * 8 + 24] = struct.pack("<q", now_ms)
        pids = [fork_worker(_conc_worker, os.path.join(mnt, "c"), k, rng.random(), shm, deadline)
                for k in range(ctx.procs)]
        stalled = False
        while True:
            time.sleep(0.5)
            vals = [struct.unpack_from(f"<{NSLOT}q", shm, k * NSLOT * 8) for k in range(ctx.procs)]
            if all(v[3] == 1 for v in vals):
                break
            if not s.alive():
                failures.append(f"daemon died during the concurrency run: rc {s.proc.returncode}; "
                                f"{s.stderr()[-800:]}")
                break
            now_ms = int(time.monotonic() * 1000)
            late = [k for k, v in enumerate(vals) if v[3] == 0 and now_ms - v[2] > stall_limit * 1000]
            if late:
                stacks = []
                for t in os.listdir(f"/proc/{s.proc.pid}/task"):
                    try:
                        with open(f"/proc/{s.proc.pid}/task/{t}/wchan") as f:
                            stacks.append(f.read())
                    except OSError:
                        pass
                failures.append(f"deadlock/stall: workers {late} made no progress for {stall_limit}s "
                                f"(daemon thread wchans: {sorted(set(stacks))})")
                stalled = True
                break
        for p in pids:
            st = reap(p, 5 if not stalled else 0.1)
            if st is None:
                kill_and_reap(p)
                if not stalled:
                    failures.append(f"worker {p} did not finish")
            elif os.WEXITSTATUS(st) != 0:
                failures.append(f"worker {p} crashed (exit {os.WEXITSTATUS(st)})")
        pids = []
        vals = [struct.unpack_from(f"<{NSLOT}q", shm, k * NSLOT * 8) for k in range(ctx.procs)]
        figs["ops_total"] = sum(v[0] for v in vals)
        figs["ops_per_s"] = round(figs["ops_total"] / ctx.duration)
        figs["ops_by_kind"] = {op: sum(v[4 + i] for v in vals) for i, op in enumerate(OPS)}
        figs["unexpected_errnos"] = sum(v[1] for v in vals)
        if figs["unexpected_errnos"]:
            lines = []
            for fn in sorted(os.listdir(base)):
                if fn.startswith("..unexpected-"):
                    with open(os.path.join(base, fn)) as f:
                        lines += f.read().splitlines()
            failures.append(f"{figs['unexpected_errnos']} unexpected errnos, e.g. {lines[:8]}")
        if s.alive():
            if not alive_check(mnt):
                failures.append("daemon does not answer after the run")
            else:
                try:
                    live_view, probs = in_child(tree, mnt, True, timeout=120)
                    failures += [f"live view: {p}" for p in probs + marker_problems(live_view)]
                    figs["names_after_run"] = len(live_view)
                except (Hang, Failure) as e:
                    failures.append(f"walking the view after the run: {e}")
    finally:
        for p in pids:
            kill_and_reap(p)
        probs = s.stop(check=False) if s.alive() or is_mounted(mnt) else []
        s.cleanup()
        if probs:
            failures.append(f"unmount after the run: {probs}")
    ufigs, probs = upper_scan(upper, lowers)
    figs.update(ufigs)
    failures += probs
    if [meta_tree(l) for l in lowers] != lower_meta:
        failures.append("a lower layer changed")
    with suf_mounted(lowers, upper, work, mnt, failures=failures, what="remount unmount"):
        if work_entries(work):
            failures.append(f"workdir/work not empty after unmount+remount: {work_entries(work)[:5]}")
        view2, probs = in_child(tree, mnt, True, timeout=120)
        failures += [f"remounted view: {p}" for p in probs + marker_problems(view2)]
    if live_view is not None:
        d = diff(live_view, view2)
        if d:
            failures.append(f"view changed across unmount/remount: {d}")
    kv = tree_via_kernel(lowers, upper, xwork, os.path.join(base, "kmnt"))
    d = diff(kv, view2)
    if d:
        failures.append(f"the kernel's overlay shows another view of this upper: {d}")
    shm.close()
    rmtree(base)
    return result(name, figs, failures, t0, ctx)


