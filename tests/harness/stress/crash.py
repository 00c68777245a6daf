"""kill -9 of the daemon at chosen moments, then a remount: the old state or the new,
never a mix, lowers untouched, workdir/work emptied at mount.

Each scenario names the windows a kill must land in.  Where a kill landed is read from
what the dead daemon left (a staged '#suf.' object in workdir/work means it died inside
a copy-up or replacement; the client's progress says the rest) and recorded in the
figures.  The scenario repeats until every window was hit at least once, at least
ctx.reps times and at most ctx.reps + 5 per window; a window never hit is a failure."""

import collections
import errno
import hashlib
import mmap
import os
import select
import shutil
import struct
import subprocess
import time

from .common import (BLOCK, PATCH, Failure, Hang, Suf, diff, fork_worker, freeze_while_staged, h_file, in_child,
                     kill_and_reap, make_big, marker_problems, meta_tree, result, rmtree, run, staged,
                     suf_mounted, tree, tree_via_kernel, tree_via_suf, upper_scan, wait_for,
                     work_entries)


class Windows:
    """Which kill windows are required, which were hit, and what to aim at next."""

    def __init__(self, required, reps, rng):
        self.required, self.reps, self.rng = list(required), reps, rng
        self.hit = collections.Counter()
        self.attempts = 0
        self.limit = reps + 5 * len(required)

    def missing(self):
        return [w for w in self.required if not self.hit[w]]

    def next_target(self):
        """A window to aim at, or None when done."""
        if self.attempts >= self.limit or (self.attempts >= self.reps and not self.missing()):
            return None
        self.attempts += 1
        m = self.missing()
        return m[0] if m else "random"

    def landed(self, *windows):
        for w in windows:
            self.hit[w] += 1

    def failures(self, name):
        m = self.missing()
        if not m:
            return []
        return [f"{name}: the kill never landed in window(s) {m} in {self.attempts} attempts "
                f"(landed: {dict(self.hit)})"]


# --------------------------------------------------------------------------
# crash-copyup
# --------------------------------------------------------------------------

COPYUP_WINDOWS = ("copying", "copied", "written")


def _copyup_client(path, wfd, rfd):
    """Tells the parent each step: 'o' opening, 'c' open returned (the copy-up is done),
    waits for 'g', writes PATCH at 0, closes, 'w'."""
    os.write(wfd, b"o")
    fd = os.open(path, os.O_WRONLY)     # the copy-up happens here
    os.write(wfd, b"c")
    os.read(rfd, 1)
    os.pwrite(fd, PATCH, 0)
    os.close(fd)
    os.write(wfd, b"w")
    os.read(rfd, 1)


def _expect(rfd, want, timeout):
    while select.select([rfd], [], [], timeout)[0]:
        b = os.read(rfd, 1)
        if not b:
            return False
        if b == want:
            return True
    return False


def scenario_crash_copyup(ctx):
    t0, name = time.monotonic(), "crash-copyup"
    rng = ctx.rng(name)
    failures, figs = [], {"big_mib": ctx.big_mib, "landed": {}, "kills": []}
    base = ctx.dir(name)
    lower, upper, work, xwork = (os.path.join(base, n) for n in ("lower", "upper", "work", "xwork"))
    for d in (lower, upper, work, xwork):
        os.makedirs(d)
    big_bytes = ctx.big_mib * BLOCK
    h_old, h_new = make_big(os.path.join(lower, "big"), ctx.big_mib)
    with open(os.path.join(lower, "small"), "w") as f:
        f.write("small\n")
    lower_meta = meta_tree(lower)
    mnt = os.path.join(base, "mnt")

    # Calibrate: how long does the copy-up take without a kill?
    with suf_mounted([lower], upper, work, mnt, failures=failures, what="calibration unmount"):
        t = time.monotonic()
        in_child(lambda p: os.close(os.open(p, os.O_WRONLY)), os.path.join(mnt, "big"), timeout=600)
        copy_s = time.monotonic() - t
    figs["copyup_seconds"] = round(copy_s, 3)
    os.unlink(os.path.join(upper, "big"))
    ctx.log(f"  {name}: copy-up of {ctx.big_mib} MiB takes {copy_s:.2f}s")

    def partial():
        for n in staged(work):
            try:
                size = os.stat(os.path.join(work, "work", n)).st_size
            except FileNotFoundError:
                continue
            if 0 < size < big_bytes:
                return size
        return None

    win = Windows(COPYUP_WINDOWS, ctx.reps, rng)
    rep = -1
    while (target := win.next_target()) is not None:
        rep += 1
        s = Suf([lower], upper, work, mnt).start()
        client = None
        r1, w1 = os.pipe()
        r2, w2 = os.pipe()
        try:
            client = fork_worker(_copyup_client, os.path.join(mnt, "big"), w1, r2)
            if not _expect(r1, b"o", 10):
                raise Failure("copy-up client did not start")
            if target == "copying":
                # kill when the staged copy holds some random part of the data
                at = rng.randrange(1, big_bytes)
                wait_for(lambda: (partial() or 0) >= at or os.path.exists(os.path.join(upper, "big")),
                         60, step=0)
            elif target == "copied":
                _expect(r1, b"c", 120)
            elif target == "written":
                if _expect(r1, b"c", 120):
                    os.write(w2, b"g")
                    _expect(r1, b"w", 60)
            else:
                time.sleep(rng.uniform(0, copy_s * 1.1))
            s.kill9()
            in_work = staged(work)
        finally:
            if client:
                kill_and_reap(client)
            for fd in (r1, w1, r2, w2):
                os.close(fd)
            s.cleanup()
        if meta_tree(lower) != lower_meta:
            failures.append(f"rep {rep}: lower layer changed: {diff(lower_meta, meta_tree(lower))}")
            lower_meta = meta_tree(lower)
        in_upper = os.path.exists(os.path.join(upper, "big"))
        with suf_mounted([lower], upper, work, mnt, failures=failures, what=f"rep {rep} unmount"):
            left = work_entries(work)
            if left:
                failures.append(f"rep {rep}: workdir/work not emptied at mount: {left[:5]}")
            try:
                h = in_child(h_file, os.path.join(mnt, "big"), timeout=300)
                size = in_child(lambda: os.stat(os.path.join(mnt, "big")).st_size, timeout=30)
            except (Hang, Failure) as e:
                failures.append(f"rep {rep}: reading big after remount: {e}")
                h, size = None, None
        if in_work and not in_upper:
            landed = "copying"
        elif h == h_new:
            landed = "written"
        elif in_upper:
            landed = "copied"
        else:
            landed = "not-started"
        win.landed(landed)
        figs["kills"].append(f"aim {target}: landed {landed}")
        want = h_new if landed == "written" else h_old
        if h is not None and h != want:
            failures.append(f"rep {rep}: killed while {landed}: big is "
                            f"{'partial/corrupt' if h not in (h_old, h_new) else 'the other state'} "
                            f"after remount (size {size}, in upper: {in_upper}, staged then: {in_work})")
        if landed == "copying" and in_upper:
            failures.append(f"rep {rep}: a copy-up interrupted mid-data is in upper")
        _, probs = upper_scan(upper, [lower])
        failures += [f"rep {rep}: {p}" for p in probs]
        if rep % 5 == 0:
            kv = tree_via_kernel([lower], upper, xwork, os.path.join(base, "kmnt"), content=False)
            sv = tree_via_suf([lower], upper, work, mnt, failures, content=False)
            d = diff(kv, sv)
            if d:
                failures.append(f"rep {rep}: kernel and swiftunionfs views of the upper differ: {d}")
        try:
            os.unlink(os.path.join(upper, "big"))
        except FileNotFoundError:
            pass
    failures += win.failures(name)
    if h_file(os.path.join(lower, "big")) != h_old:
        failures.append("lower big file content changed")
    figs["landed"] = dict(win.hit)
    figs["reps"] = win.attempts
    rmtree(base)
    return result(name, figs, failures, t0, ctx)


# --------------------------------------------------------------------------
# crash-rename
# --------------------------------------------------------------------------

RN_LOWER, RN_UPPER, RN_LDIR, RN_UDIR = 120, 40, 10, 10
RN_FILE_BYTES = 1 << 20        # lower files big enough that a copy-up takes a while
RENAME_WINDOWS = ("copy-up", "storm")
ERRLEN = 4096


def _rename_items():
    items = []   # (name A, name B, kind)
    for i in range(RN_LOWER):
        items.append((f"f{i:03}", f"g{i:03}", "lower file"))
    for i in range(RN_UPPER):
        items.append((f"u{i:03}", f"v{i:03}", "upper file"))
    for i in range(RN_LDIR):
        items.append((f"D{i:02}", f"E{i:02}", "lower dir"))
    for i in range(RN_UDIR):
        items.append((f"U{i:02}", f"V{i:02}", "upper dir"))
    return items


def _rename_storm(root, k, nproc, seed, shm, errfile, at_b):
    """Toggle this worker's items between their two names (at_b: the items that start at
    their second name, as the previous repetition left them).  A lower directory gives
    EXDEV (as on the kernel's overlay without redirect_dir); the dead daemon gives
    ENOTCONN/ECONNABORTED and ends the worker; every other errno is written to errfile."""
    import random
    rng = random.Random(seed)
    mine = [it for j, it in enumerate(_rename_items()) if j % nproc == k]
    state = {it[0]: int(it[0] in at_b) for it in mine}
    while True:
        it = rng.choice(mine)
        a, b = (it[0], it[1]) if state[it[0]] == 0 else (it[1], it[0])
        try:
            os.rename(os.path.join(root, a), os.path.join(root, b))
            state[it[0]] ^= 1
            off = k * 8
            shm[off:off + 8] = struct.pack("<q", struct.unpack("<q", shm[off:off + 8])[0] + 1)
        except OSError as e:
            if e.errno in (errno.ENOTCONN, errno.ECONNABORTED):
                return
            if e.errno == errno.EXDEV and it[2] == "lower dir":
                continue
            with open(errfile, "a") as f:
                f.write(f"{time.monotonic():.6f} rename {a} -> {b} ({it[2]}): "
                        f"{errno.errorcode.get(e.errno, e.errno)}\n")
            if e.errno == errno.EIO:
                return


def scenario_crash_rename(ctx):
    t0, name = time.monotonic(), "crash-rename"
    rng = ctx.rng(name)
    nproc = 4
    failures, figs = [], {"items": len(_rename_items()), "renamers": nproc, "kills": []}
    base = ctx.dir(name)
    lower, upper, work, xwork = (os.path.join(base, n) for n in ("lower", "upper", "work", "xwork"))
    items = _rename_items()
    for d in (lower, upper, work, xwork):
        os.makedirs(d)
    os.makedirs(os.path.join(lower, "r"))
    os.makedirs(os.path.join(upper, "r"))
    content = {}
    for i, (a, b, kind) in enumerate(items):
        if kind.endswith("file"):
            data = (f"{kind} {i}\n".encode() * (1 + RN_FILE_BYTES // 16))[:RN_FILE_BYTES] \
                if kind == "lower file" else f"upper file {i}\n".encode() * 40
            content[a] = hashlib.sha1(data).hexdigest()
            with open(os.path.join(lower if kind == "lower file" else upper, "r", a), "wb") as f:
                f.write(data)
        else:
            d = os.path.join(lower if kind == "lower dir" else upper, "r", a)
            os.makedirs(d)
            with open(os.path.join(d, "inside"), "w") as f:
                f.write(f"inside {a}\n")
    lower_meta = meta_tree(lower)
    mnt = os.path.join(base, "mnt")
    renamed_total = 0
    win = Windows(RENAME_WINDOWS, ctx.reps, rng)
    rep = -1
    while (target := win.next_target()) is not None:
        rep += 1
        s = Suf([lower], upper, work, mnt).start()
        pids = []
        shm = mmap.mmap(-1, nproc * 8)
        errfile = os.path.join(base, f"errnos-{rep}")
        try:
            names = set(in_child(os.listdir, os.path.join(mnt, "r"), timeout=60))
            at_b = {a for a, b, _ in items if b in names}
            pids = [fork_worker(_rename_storm, os.path.join(mnt, "r"), k, nproc, rng.random(), shm, errfile,
                                at_b) for k in range(nproc)]
            if target == "copy-up":
                freeze_while_staged(s, work, 30)
            else:
                time.sleep(rng.uniform(0.05, 1.5))
            killed_at = time.monotonic()
            s.kill9()
            in_work = staged(work)
            done = sum(struct.unpack_from(f"<{nproc}q", shm))
        finally:
            for p in pids:
                kill_and_reap(p)
            s.cleanup()
            shm.close()
        landed = (["copy-up"] if in_work else []) + (["storm"] if done else [])
        win.landed(*landed)
        figs["kills"].append(f"aim {target}: landed {landed or ['before any rename']} "
                             f"({done} renames done, staged {in_work[:2]})")
        if os.path.exists(errfile):
            with open(errfile) as f:
                errs = [l.split(" ", 1) for l in f.read().splitlines()]
            errs = [f"{float(t) - killed_at:+.4f}s from the kill: {what}" for t, what in errs]
            failures.append(f"rep {rep}: unexpected errnos during the storm: {errs[:8]}")
        if meta_tree(lower) != lower_meta:
            failures.append(f"rep {rep}: lower layer changed: {diff(lower_meta, meta_tree(lower))[:5]}")
            lower_meta = meta_tree(lower)
        with suf_mounted([lower], upper, work, mnt, failures=failures, what=f"rep {rep} unmount"):
            left = work_entries(work)
            if left:
                failures.append(f"rep {rep}: workdir/work not emptied at mount: {left[:5]}")
            try:
                view, probs = in_child(tree, os.path.join(mnt, "r"), True, timeout=120)
            except (Hang, Failure) as e:
                failures.append(f"rep {rep}: listing after remount: {e}")
                continue
        failures += [f"rep {rep}: {p}" for p in probs + marker_problems(view)]
        seen = set()
        for a, b, kind in items:
            present = [n for n in (a, b) if n in view]
            if len(present) != 1:
                failures.append(f"rep {rep}: item {a}/{b}: visible as {present} (want exactly one)")
                continue
            n = present[0]
            seen.add(n)
            if n != a:
                renamed_total += 1
            if kind.endswith("dir"):
                if view[n][0] != "dir" or view.get(f"{n}/inside", (None,))[0] != "file":
                    failures.append(f"rep {rep}: dir item {n} broken: {view.get(n)}, inside {view.get(n + '/inside')}")
                seen.add(f"{n}/inside")
                if kind == "lower dir" and n != a:
                    failures.append(f"rep {rep}: lower dir {a} was renamed (want EXDEV)")
            elif view[n][0] != "file" or view[n][3] != content[a]:
                failures.append(f"rep {rep}: {n} partial/corrupt: {view[n]}")
        extra = sorted(set(view) - seen)
        if extra:
            failures.append(f"rep {rep}: unexpected names: {extra[:10]}")
        _, probs = upper_scan(upper, [lower])
        failures += [f"rep {rep}: {p}" for p in probs]
        if rep % 5 == 0:
            kv = tree_via_kernel([lower], upper, xwork, os.path.join(base, "kmnt"))
            sv = tree_via_suf([lower], upper, work, mnt, failures)
            d = diff(kv, sv)
            if d:
                failures.append(f"rep {rep}: kernel and swiftunionfs views of the upper differ: {d}")
    failures += win.failures(name)
    figs["landed"] = dict(win.hit)
    figs["reps"] = win.attempts
    figs["renamed_items_at_kill(avg)"] = round(renamed_total / max(win.attempts, 1), 1)
    rmtree(base)
    return result(name, figs, failures, t0, ctx)


# --------------------------------------------------------------------------
# crash-untar
# --------------------------------------------------------------------------

UNTAR_WINDOWS = ("extracting", "staged")


def scenario_crash_untar(ctx):
    t0, name = time.monotonic(), "crash-untar"
    rng = ctx.rng(name)
    failures, figs = [], {"tar_files": ctx.tar_files, "in_flight_files_seen": 0, "kills": []}
    base = ctx.dir(name)
    lower, upper, work, xwork = (os.path.join(base, n) for n in ("lower", "upper", "work", "xwork"))
    for d in (lower, upper, work, xwork):
        os.makedirs(d)
    ndirs = 30
    files = [f"t/dir{i % ndirs:02}/file{i:05}" for i in range(ctx.tar_files)]
    new = {p: (f"tar {p}\n" * (1 + (i % 50))).encode() for i, p in enumerate(files)}
    old = {}
    for i, p in enumerate(files):
        if i % 2 == 0:   # half of them exist in lower with other content
            old[p] = f"lower {p}\n".encode()
            os.makedirs(os.path.dirname(os.path.join(lower, p)), exist_ok=True)
            with open(os.path.join(lower, p), "wb") as f:
                f.write(old[p])
    src = os.path.join(base, "src")
    for p, data in new.items():
        os.makedirs(os.path.dirname(os.path.join(src, p)), exist_ok=True)
        with open(os.path.join(src, p), "wb") as f:
            f.write(data)
    tarball = os.path.join(base, "t.tar")
    r = run(["tar", "-cf", tarball, "-C", src, "t"], timeout=120)
    if r.returncode:
        raise Failure(f"tar -c failed: {r.stderr}")
    shutil.rmtree(src)
    lower_meta = meta_tree(lower)
    mnt = os.path.join(base, "mnt")

    with suf_mounted([lower], upper, work, mnt, failures=failures, what="calibration unmount"):
        t = time.monotonic()
        r = run(["tar", "-xf", tarball, "-C", mnt], timeout=600)
        untar_s = time.monotonic() - t
        if r.returncode:
            failures.append(f"calibration untar failed: {r.stderr.strip()[:300]}")
        view, probs = in_child(tree, os.path.join(mnt, "t"), True, timeout=120)
        bad = [p for p in files if view.get(p[2:], (None,) * 4)[3] != hashlib.sha1(new[p]).hexdigest()]
        if bad or probs:
            failures.append(f"calibration untar: {len(bad)} files wrong {bad[:3]} {probs[:3]}")
    figs["untar_seconds"] = round(untar_s, 2)
    ctx.log(f"  {name}: untar of {ctx.tar_files} files takes {untar_s:.2f}s")
    extracted = 0
    win = Windows(UNTAR_WINDOWS, ctx.reps, rng)
    rep = -1
    while (target := win.next_target()) is not None:
        rep += 1
        shutil.rmtree(upper)
        os.makedirs(upper)
        s = Suf([lower], upper, work, mnt).start()
        tarp = None
        try:
            tarp = subprocess.Popen(["tar", "-xf", tarball, "-C", mnt], stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
            if target == "staged":
                freeze_while_staged(s, work, 120, done=lambda: tarp.poll() is not None)
            else:
                time.sleep(rng.uniform(0.05, 0.95) * untar_s)
            s.kill9()
            in_work = staged(work)
        finally:
            if tarp:
                tarp.kill()
                try:
                    tarp.wait(20)
                except subprocess.TimeoutExpired:
                    failures.append(f"rep {rep}: tar did not die")
            s.cleanup()
        if meta_tree(lower) != lower_meta:
            failures.append(f"rep {rep}: lower layer changed: {diff(lower_meta, meta_tree(lower))[:5]}")
            lower_meta = meta_tree(lower)
        with suf_mounted([lower], upper, work, mnt, failures=failures, what=f"rep {rep} unmount"):
            left = work_entries(work)
            if left:
                failures.append(f"rep {rep}: workdir/work not emptied at mount: {left[:5]}")
            try:
                view, probs = in_child(tree, mnt, True, timeout=120)
            except (Hang, Failure) as e:
                failures.append(f"rep {rep}: listing after remount: {e}")
                continue
        failures += [f"rep {rep}: {p}" for p in probs + marker_problems(view)]
        in_flight, done_here = [], 0
        for p in files:
            v = view.get(p)
            if v is None:
                if p in old:
                    in_flight.append(p)   # tar unlinks an existing file before creating it
                continue
            if v[0] != "file":
                failures.append(f"rep {rep}: {p} is a {v[0]}")
                continue
            if v[3] == hashlib.sha1(new[p]).hexdigest():
                done_here += 1
            elif p in old and v[3] == hashlib.sha1(old[p]).hexdigest():
                pass
            elif v[2] < len(new[p]) and v[3] == hashlib.sha1(new[p][:v[2]]).hexdigest():
                in_flight.append(p)   # tar's own half-written file: the application's state
            else:
                failures.append(f"rep {rep}: {p} has content from neither state (size {v[2]})")
        extracted += done_here
        landed = (["staged"] if in_work else []) + (["extracting"] if 0 < done_here < len(files) else [])
        win.landed(*landed)
        figs["kills"].append(f"aim {target}: landed {landed or ['outside']} ({done_here} files extracted, "
                             f"staged {in_work[:2]})")
        expected_names = set(files) | {"t"} | {f"t/dir{i:02}" for i in range(ndirs)}
        extra = sorted(set(view) - expected_names)
        if extra:
            failures.append(f"rep {rep}: unexpected names visible: {extra[:10]}")
        if len(in_flight) > 1:
            failures.append(f"rep {rep}: {len(in_flight)} partial files (tar writes one at a time): {in_flight[:5]}")
        figs["in_flight_files_seen"] += len(in_flight)
        _, probs = upper_scan(upper, [lower])
        failures += [f"rep {rep}: {p}" for p in probs]
        if rep % 5 == 0:
            kv = tree_via_kernel([lower], upper, xwork, os.path.join(base, "kmnt"))
            d = diff(kv, view)
            if d:
                failures.append(f"rep {rep}: kernel and swiftunionfs views of the upper differ: {d}")
    failures += win.failures(name)
    figs["landed"] = dict(win.hit)
    figs["reps"] = win.attempts
    figs["files_extracted_at_kill(avg)"] = round(extracted / max(win.attempts, 1), 1)
    rmtree(base)
    return result(name, figs, failures, t0, ctx)
