"""Faults from outside: a full upper, a read-only upper, a lower directory removed while
mounted.  The kernel's overlayfs, hurt the same way, is the oracle."""

import os
import pickle
import random
import select
import shutil
import stat
import time

from .hostile import split_at_lower_change, undefined_but_clean  # noqa: F401
from .common import (BLOCK, Failure, Hang, Suf, alive_check, compare_ops, ename, force_unmount,
                     h_file, in_child, kernel_mounted, kill_and_reap, meta_tree, ovl_opts, result,
                     rmtree, run, suf_mounted, tree, work_entries)


def _enospc_steps(mnt):
    """The same steps on either mount; returns [(label, outcome)]."""
    out = []

    def step(label, fn):
        try:
            v = fn()
            out.append((label, "ok" if v is None else v))
        except OSError as e:
            out.append((label, ename(e)))

    def copyup_big():
        fd = os.open(os.path.join(mnt, "big"), os.O_WRONLY)
        try:
            os.pwrite(fd, b"X", 0)
        finally:
            os.close(fd)

    def fill(name, mib):
        fd = os.open(os.path.join(mnt, name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        chunk = random.Random(3).randbytes(BLOCK)
        try:
            for _ in range(mib):
                os.write(fd, chunk)
            os.fsync(fd)
        finally:
            os.close(fd)

    def small_copyup():
        with open(os.path.join(mnt, "s"), "a") as f:
            f.write("more\n")

    step("copy-up of 32 MiB lower file", copyup_big)
    step("big still reads as lower", lambda: h_file(os.path.join(mnt, "big")))
    step("write 30 MiB new file", lambda: fill("new", 30))
    step("copy-up of small file while full", small_copyup)
    step("unlink new", lambda: os.unlink(os.path.join(mnt, "new")))
    step("copy-up of small file after freeing", small_copyup)
    step("read small", lambda: open(os.path.join(mnt, "s")).read())
    step("list root", lambda: sorted(os.listdir(mnt)))
    return out


def scenario_fault_enospc(ctx):
    t0, name = time.monotonic(), "fault-enospc"
    failures, figs = [], {}
    base = ctx.dir(name)
    lower = os.path.join(base, "lower")
    os.makedirs(os.path.join(lower, "opq"))
    with open(os.path.join(lower, "big"), "wb") as f:
        f.write(random.Random(1).randbytes(32 * BLOCK))
    big_h = h_file(os.path.join(lower, "big"))
    for n in ("s", "gone", "opq/x"):
        with open(os.path.join(lower, n), "w") as f:
            f.write(f"lower {n}\n")
    lower_meta = meta_tree(lower)
    outcomes = {}
    for side in ("kernel", "suf"):
        tfs = os.path.join(base, f"tfs-{side}")
        os.makedirs(tfs)
        r = run(["mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", tfs])
        if r.returncode:
            raise Failure(f"tmpfs mount: {r.stderr}")
        try:
            upper, work = os.path.join(tfs, "upper"), os.path.join(tfs, "work")
            os.makedirs(os.path.join(upper, "keep"))
            os.makedirs(work)
            with open(os.path.join(upper, "keep", "a"), "wb") as f:
                f.write(random.Random(2).randbytes(BLOCK))
            with open(os.path.join(upper, "keep", "b"), "w") as f:
                f.write("b\n")
            os.mknod(os.path.join(upper, "gone"), stat.S_IFCHR, 0)
            os.makedirs(os.path.join(upper, "opq"))
            os.setxattr(os.path.join(upper, "opq"), "trusted.overlay.opaque", b"y")
            with open(os.path.join(upper, "opq", "y"), "w") as f:
                f.write("y\n")
            before = {k: v for k, v in tree(upper)[0].items()}
            mnt = os.path.join(base, f"mnt-{side}")
            if side == "kernel":
                with kernel_mounted([lower], upper, work, mnt):
                    outcomes[side] = in_child(_enospc_steps, mnt, timeout=120)
            else:
                s = Suf([lower], upper, work, mnt).start()
                try:
                    try:
                        outcomes[side] = in_child(_enospc_steps, mnt, timeout=120)
                    except (Hang, Failure) as e:
                        failures.append(f"swiftunionfs: ENOSPC steps failed: {e}")
                        outcomes[side] = []
                    if not s.alive() or not alive_check(mnt):
                        failures.append("swiftunionfs daemon died or stopped answering after ENOSPC")
                    figs["work_entries_while_mounted_after_enospc"] = len(work_entries(work))
                finally:
                    probs = s.stop(check=False)
                    s.cleanup()
                    if probs:
                        failures.append(f"unmount after ENOSPC: {probs}")
                if work_entries(work):
                    pass  # emptied at next mount; checked below
                with suf_mounted([lower], upper, work, mnt, failures=failures):
                    if work_entries(work):
                        failures.append(f"workdir/work not emptied at remount: {work_entries(work)}")
            after = tree(upper)[0]
            changed = {k: (before[k], after.get(k)) for k in before if k != "s" and before[k] != after.get(k)}
            if changed and side == "suf":
                failures.append(f"upper's earlier content changed: {changed}")
            figs[f"{side}_upper_space_used_kib"] = int((lambda v: (v.f_blocks - v.f_bfree) * v.f_frsize / 1024)(
                os.statvfs(tfs)))
        finally:
            force_unmount(tfs)
    figs["kernel"] = outcomes.get("kernel")
    figs["suf"] = outcomes.get("suf")
    # The kernel's overlay on the same layers and the same small upper is the oracle.
    failures += [f"differs from the kernel: {d}"
                 for d in compare_ops(outcomes.get("kernel") or [], outcomes.get("suf") or [])]
    so = dict(outcomes.get("suf") or [])
    want = {"copy-up of 32 MiB lower file": "ENOSPC", "write 30 MiB new file": "ENOSPC",
            "unlink new": "ok", "copy-up of small file after freeing": "ok"}
    for label, v in want.items():
        if so.get(label) != v:
            failures.append(f"swiftunionfs: {label}: got {so.get(label)!r}, want {v!r}")
    if so.get("big still reads as lower") != big_h:
        failures.append(f"swiftunionfs: big no longer reads as the lower file after a failed copy-up: "
                        f"{so.get('big still reads as lower')!r}")
    if meta_tree(lower) != lower_meta:
        failures.append("lower layer changed")
    rmtree(base)
    return result(name, figs, failures, t0, ctx)


def _erofs_writes(mnt):
    out = []
    for label, fn in (
            ("create", lambda: open(os.path.join(mnt, "new"), "w").close()),
            ("copy-up write", lambda: open(os.path.join(mnt, "f"), "a").close()),
            ("mkdir", lambda: os.mkdir(os.path.join(mnt, "dnew"))),
            ("unlink lower", lambda: os.unlink(os.path.join(mnt, "f"))),
            ("chmod", lambda: os.chmod(os.path.join(mnt, "f"), 0o600)),
            ("read", lambda: open(os.path.join(mnt, "f")).read())):
        try:
            v = fn()
            out.append((label, "ok" if label != "read" else v))
        except OSError as e:
            out.append((label, ename(e)))
    return out


def scenario_fault_erofs(ctx):
    t0, name = time.monotonic(), "fault-erofs"
    failures, figs = [], {}
    base = ctx.dir(name)
    lower = os.path.join(base, "lower")
    os.makedirs(lower)
    with open(os.path.join(lower, "f"), "w") as f:
        f.write("f\n")
    for variant in ("tmpfs-ro", "bind-ro"):
        top = os.path.join(base, variant)
        os.makedirs(top)
        mounted_here = []
        try:
            if variant == "tmpfs-ro":
                run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", top], timeout=20)
                mounted_here.append(top)
                os.makedirs(os.path.join(top, "upper"))
                os.makedirs(os.path.join(top, "work", "work"))
                r = run(["mount", "-o", "remount,ro", top])
                root = top
            else:
                src = os.path.join(base, "bindsrc")
                os.makedirs(os.path.join(src, "upper"))
                os.makedirs(os.path.join(src, "work", "work"))
                run(["mount", "--bind", src, top])
                mounted_here.append(top)
                r = run(["mount", "-o", "remount,bind,ro", top])
                root = top
            if r.returncode:
                raise Failure(f"{variant}: remount ro failed: {r.stderr}")
            upper, work = os.path.join(root, "upper"), os.path.join(root, "work")
            mnt = os.path.join(base, f"mnt-{variant}")
            s = Suf([lower], upper, work, mnt)
            how = s.start(expect_fail=True)
            try:
                if how == "exited":
                    lines = [l for l in s.stderr().splitlines() if l.strip()]
                    figs[variant] = f"refused at mount (exit {s.proc.returncode}): {lines}"
                    if len(lines) != 1 or s.proc.returncode == 0:
                        failures.append(f"{variant}: refusal is not one clear line with non-zero exit: {lines}")
                else:
                    res = in_child(_erofs_writes, mnt, timeout=60)
                    figs[variant] = f"mounted; {res}"
                    for label, v in res:
                        if label != "read" and v != "EROFS":
                            failures.append(f"{variant}: {label}: {v}, want EROFS")
                        if label == "read" and v != "f\n":
                            failures.append(f"{variant}: read gave {v!r}")
                    probs = s.stop(check=False)
                    if probs:
                        failures.append(f"{variant}: {probs}")
            finally:
                s.cleanup()
            # The kernel, for the record.
            kmnt = os.path.join(base, f"kmnt-{variant}")
            os.makedirs(kmnt)
            r = run(["mount", "-t", "overlay", "overlay", "-o", ovl_opts([lower], upper, work), kmnt])
            if r.returncode:
                figs[f"kernel {variant}"] = f"refused: {r.stderr.strip()}"
            else:
                try:
                    figs[f"kernel {variant}"] = f"mounted; {in_child(_erofs_writes, kmnt, timeout=60)}"
                finally:
                    force_unmount(kmnt)
        finally:
            for m in reversed(mounted_here):
                force_unmount(m)
    rmtree(base)
    return result(name, figs, failures, t0, ctx)


def _lower_rm_phase1(mnt):
    fds = {}
    os.listdir(os.path.join(mnt, "d", "sub"))
    os.stat(os.path.join(mnt, "d", "sub", "a"))
    fds["ro"] = os.open(os.path.join(mnt, "d", "sub", "a"), os.O_RDONLY)
    fds["dir"] = os.open(os.path.join(mnt, "d", "sub"), os.O_RDONLY | os.O_DIRECTORY)
    return fds


def split_removed(res):
    """(operations outside the removed d/sub, operations inside it)."""
    inside = [(l, v) for l, v in res if "d/sub" in l or l == "readdir via open dir fd"]
    return [x for x in res if x not in inside and x[0] != "read via open fd"], inside


def _lower_rm_phase2(mnt):
    out = []
    sub = os.path.join(mnt, "d", "sub")
    for label, fn in (
            ("read d/keep", lambda: open(os.path.join(mnt, "d", "keep")).read()),
            ("copy-up d/keep", lambda: open(os.path.join(mnt, "d", "keep"), "a").write("more")),
            ("read top", lambda: open(os.path.join(mnt, "top")).read()),
            ("listdir d", lambda: sorted(os.listdir(os.path.join(mnt, "d")))),
            ("listdir d/sub", lambda: sorted(os.listdir(sub))),
            ("stat d/sub/a", lambda: os.stat(os.path.join(sub, "a")).st_size),
            ("read d/sub/a", lambda: open(os.path.join(sub, "a")).read()),
            ("read d/sub/deep/b", lambda: open(os.path.join(sub, "deep", "b")).read()),
            ("create d/sub/new", lambda: open(os.path.join(sub, "new"), "w").write("n")),
            ("copy-up d/sub/a", lambda: open(os.path.join(sub, "a"), "a").write("more")),
            ("mkdir d/sub/dd", lambda: os.mkdir(os.path.join(sub, "dd"))),
            ("unlink d/sub/a", lambda: os.unlink(os.path.join(sub, "a"))),
            ("rename d/sub -> d/sub2", lambda: os.rename(sub, os.path.join(mnt, "d", "sub2"))),
            ("rmdir d/sub", lambda: os.rmdir(sub)),
            ("create d/other", lambda: open(os.path.join(mnt, "d", "other"), "w").write("o")),
            ("list root", lambda: sorted(os.listdir(mnt)))):
        try:
            v = fn()
            out.append((label, "ok" if v is None or isinstance(v, int) and label.startswith("create") else v))
        except OSError as e:
            out.append((label, ename(e)))
    return out


def scenario_fault_lower_rm(ctx):
    t0, name = time.monotonic(), "fault-lower-rm"
    failures, figs = [], {}
    base = ctx.dir(name)
    for side in ("kernel", "suf"):
        sb = os.path.join(base, side)
        lower, upper, work = (os.path.join(sb, n) for n in ("lower", "upper", "work"))
        os.makedirs(os.path.join(lower, "d", "sub", "deep"))
        os.makedirs(upper)
        os.makedirs(work)
        for n in ("d/sub/a", "d/sub/deep/b", "d/keep", "top"):
            with open(os.path.join(lower, n), "w") as f:
                f.write(f"lower {n}\n")
        mnt = os.path.join(sb, "mnt")
        pid_fds = {}

        def body(m):
            # Hold fds in a long-lived child: open, then report, then wait for the removal.
            r1, w1 = os.pipe()
            r2, w2 = os.pipe()
            holder = os.fork()
            if holder == 0:
                code = 0
                try:
                    os.close(r1)
                    os.close(w2)
                    fds = _lower_rm_phase1(m)
                    os.write(w1, b"o")
                    os.read(r2, 1)
                    res = []
                    try:
                        res.append(("read via open fd", os.pread(fds["ro"], 100, 0).decode()))
                    except OSError as e:
                        res.append(("read via open fd", ename(e)))
                    try:
                        res.append(("readdir via open dir fd", sorted(os.listdir(fds["dir"]))))
                    except OSError as e:
                        res.append(("readdir via open dir fd", ename(e)))
                    os.write(w1, pickle.dumps(res))
                    for fd in fds.values():
                        os.close(fd)
                except BaseException:  # noqa: BLE001
                    code = 1
                finally:
                    os._exit(code)
            os.close(w1)
            os.close(r2)
            try:
                if not select.select([r1], [], [], 20)[0] or os.read(r1, 1) != b"o":
                    raise Failure("fd holder did not start")
                shutil.rmtree(os.path.join(lower, "d", "sub"))
                res = in_child(_lower_rm_phase2, m, timeout=60)
                os.write(w2, b"g")
                data = b""
                while select.select([r1], [], [], 20)[0]:
                    b = os.read(r1, 65536)
                    if not b:
                        break
                    data += b
                res += pickle.loads(data) if data else [("open fds", "holder gave no result")]
            finally:
                os.close(r1)
                os.close(w2)
                kill_and_reap(holder)
            return res

        if side == "kernel":
            with kernel_mounted([lower], upper, work, mnt):
                figs["kernel"] = body(mnt)
        else:
            s = Suf([lower], upper, work, mnt).start()
            try:
                try:
                    figs["suf"] = body(mnt)
                except (Hang, Failure) as e:
                    failures.append(f"operations after removing a lower dir: {e}")
                if not s.alive():
                    failures.append(f"daemon died after a lower dir was removed: rc {s.proc.returncode}, "
                                    f"stderr {s.stderr()[-500:]}")
                elif not alive_check(mnt):
                    failures.append("daemon stopped answering after a lower dir was removed")
            finally:
                probs = s.stop(check=False)
                s.cleanup()
                if probs:
                    failures.append(f"unclean unmount after lower dir removal: {probs}")
    sres = dict(figs.get("suf") or [])
    for label, v in sres.items():
        if v in ("EIO", "ENOTCONN", "ECONNABORTED"):
            failures.append(f"{label}: {v} (daemon trouble)")
    # The kernel's overlay is the oracle for everything the removal did not touch; inside
    # the removed tree its answers are undefined (the kernel documents changes to a
    # mounted lower as such): there swiftunionfs must answer like it or with a clean
    # ENOENT/ESTALE, and an open file must keep reading its data.
    kdef, kund = split_removed(figs.get("kernel") or [])
    sdef, sund = split_removed(figs.get("suf") or [])
    failures += [f"differs from the kernel: {d}" for d in compare_ops(kdef, sdef)]
    failures += [f"in the removed tree: {d}" for d in undefined_but_clean(kund, sund)]
    if not str(sres.get("read via open fd", "")).startswith("lower d/sub/a\n"):
        failures.append(f"read via an fd opened before the removal: {sres.get('read via open fd')!r}")
    rmtree(base)
    return result(name, figs, failures, t0, ctx)


