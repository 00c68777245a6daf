"""Lazy unmount under load: open files keep working, the daemon exits after the last
close, a copy-up cut short by the unmount leaves the old or the new file."""

import hashlib
import os
import pickle
import random
import select
import subprocess
import time

from .common import (BLOCK, PATCH, EXIT_TIMEOUT, Failure, Suf, fork_worker, h_file, in_child, is_mounted,
                     kill_and_reap, make_big,
                     reap, result, rmtree, run, suf_mounted, work_entries)


def _copyup_client(path, wfd):
    os.write(wfd, b"g")
    fd = os.open(path, os.O_WRONLY)     # the copy-up happens here
    os.pwrite(fd, PATCH, 0)
    os.close(fd)


def scenario_unmount_open(ctx):
    t0, name = time.monotonic(), "unmount-open"
    failures, figs = [], {}
    base = ctx.dir(name)
    lower, upper, work = (os.path.join(base, n) for n in ("lower", "upper", "work"))
    for d in (lower, upper, work):
        os.makedirs(d)
    with open(os.path.join(lower, "ro"), "wb") as f:
        f.write(random.Random(5).randbytes(4 * BLOCK))
    with open(os.path.join(lower, "rw"), "w") as f:
        f.write("lower rw\n")
    mnt = os.path.join(base, "mnt")
    s = Suf([lower], upper, work, mnt).start()
    chunk = random.Random(6).randbytes(BLOCK)
    holder = None
    try:
        r1, w1 = os.pipe()
        r2, w2 = os.pipe()
        holder = os.fork()
        if holder == 0:
            code = 0
            try:
                os.close(r1)
                os.close(w2)
                fro = os.open(os.path.join(mnt, "ro"), os.O_RDONLY)
                fnew = os.open(os.path.join(mnt, "new"), os.O_WRONLY | os.O_CREAT, 0o644)
                frw = os.open(os.path.join(mnt, "rw"), os.O_RDWR)      # copy-up
                os.write(fnew, chunk)
                os.write(w1, b"o")
                os.read(r2, 1)                                          # umount -l happens here
                res = {"read_ro": hashlib.sha1(os.pread(fro, 4 * BLOCK, 0)).hexdigest()}
                for _ in range(7):
                    os.write(fnew, chunk)
                os.pwrite(frw, b"UPDATED", 0)
                os.fsync(fnew)
                res["wrote"] = 8 * BLOCK
                for fd in (fro, fnew, frw):
                    os.close(fd)
                os.write(w1, pickle.dumps(res))
            except BaseException as e:  # noqa: BLE001
                os.write(w1, pickle.dumps({"error": repr(e)}))
                code = 1
            finally:
                os._exit(code)
        os.close(w1)
        os.close(r2)
        if not select.select([r1], [], [], 20)[0] or os.read(r1, 1) != b"o":
            raise Failure("holder did not open its files")
        r = run(["fusermount3", "-u", mnt], timeout=20)
        figs["fusermount3 -u with open files"] = f"exit {r.returncode}: {r.stderr.strip()}"
        if is_mounted(mnt):
            r = run(["umount", "-l", mnt], timeout=20)
            figs["umount -l"] = f"exit {r.returncode}"
        t = time.monotonic()
        os.write(w2, b"g")
        data = b""
        while select.select([r1], [], [], 30)[0]:
            b = os.read(r1, 65536)
            if not b:
                break
            data += b
        os.close(r1)
        os.close(w2)
        res = pickle.loads(data) if data else {"error": "no result"}
        figs["holder"] = res
        if "error" in res:
            failures.append(f"I/O through open fds after lazy unmount failed: {res['error']}")
        elif res["read_ro"] != h_file(os.path.join(lower, "ro")):
            failures.append("read through an open fd after lazy unmount returned wrong data")
        reap(holder, 10)
        holder = None
        try:
            rc = s.proc.wait(EXIT_TIMEOUT)
            figs["daemon exit after last close"] = f"rc {rc} after {time.monotonic() - t:.2f}s"
            if rc != 0:
                failures.append(f"daemon exit code {rc} after lazy unmount: {s.stderr()[-300:]}")
        except subprocess.TimeoutExpired:
            failures.append(f"daemon did not exit within {EXIT_TIMEOUT}s after the last fd closed")
    finally:
        if holder:
            kill_and_reap(holder)
        s.cleanup()
    newp = os.path.join(upper, "new")
    if not os.path.exists(newp) or os.path.getsize(newp) != 8 * BLOCK or \
            h_file(newp) != hashlib.sha1(chunk * 8).hexdigest():
        failures.append(f"data written after lazy unmount incomplete in upper: "
                        f"{os.path.getsize(newp) if os.path.exists(newp) else 'missing'} bytes")
    rwp = os.path.join(upper, "rw")
    got = open(rwp, "rb").read() if os.path.exists(rwp) else None
    if got != b"UPDATEDw\n":
        failures.append(f"copied-up file written after lazy unmount: {got!r}, want b'UPDATEDw\\n'")
    with suf_mounted([lower], upper, work, mnt, failures=failures):
        if work_entries(work):
            failures.append(f"workdir/work not empty at remount: {work_entries(work)}")
    rmtree(base)
    return result(name, figs, failures, t0, ctx)


def scenario_unmount_copyup(ctx):
    t0, name = time.monotonic(), "unmount-copyup"
    rng = ctx.rng(name)
    reps = max(1, min(ctx.reps, 5))
    failures, figs = [], {"reps": reps, "outcomes": []}
    base = ctx.dir(name)
    lower, upper, work = (os.path.join(base, n) for n in ("lower", "upper", "work"))
    for d in (lower, upper, work):
        os.makedirs(d)
    mib = min(ctx.big_mib, 256)
    h_old, h_new = make_big(os.path.join(lower, "big"), mib)
    mnt = os.path.join(base, "mnt")
    for rep in range(reps):
        s = Suf([lower], upper, work, mnt).start()
        client = None
        try:
            r, w = os.pipe()
            client = fork_worker(_copyup_client, os.path.join(mnt, "big"), w)
            os.close(w)
            select.select([r], [], [], 10)
            os.close(r)
            time.sleep(rng.uniform(0, 0.002 * mib))
            um = run(["umount", "-l", mnt], timeout=20)
            st = reap(client, 120)
            client_rc = None if st is None else os.WEXITSTATUS(st)
            if st is None:
                failures.append(f"rep {rep}: copy-up client still blocked 120s after umount -l")
            else:
                client = None
            t = time.monotonic()
            try:
                rc = s.proc.wait(EXIT_TIMEOUT)
                if rc != 0:
                    # The daemon's own lines say why; its statistics table (the tail) does not.
                    err = s.stderr()
                    said = [l for l in err.splitlines() if l.startswith("swiftunionfs:")]
                    failures.append(f"rep {rep}: daemon exited {rc}: {' | '.join(said)[:400] or err[-300:]}")
            except subprocess.TimeoutExpired:
                rc = None
                failures.append(f"rep {rep}: daemon still running {EXIT_TIMEOUT}s after umount -l")
            figs["outcomes"].append(f"umount rc {um.returncode}, client rc {client_rc}, daemon rc {rc} "
                                    f"in {time.monotonic() - t:.2f}s")
        finally:
            if client:
                kill_and_reap(client)
            s.cleanup()
        with suf_mounted([lower], upper, work, mnt, failures=failures):
            if work_entries(work):
                failures.append(f"rep {rep}: workdir/work not empty at remount")
            h = in_child(h_file, os.path.join(mnt, "big"), timeout=120)
            if h not in (h_old, h_new):
                failures.append(f"rep {rep}: big is partial/corrupt after unmount during copy-up")
        try:
            os.unlink(os.path.join(upper, "big"))
        except FileNotFoundError:
            pass
    rmtree(base)
    return result(name, figs, failures, t0, ctx)


