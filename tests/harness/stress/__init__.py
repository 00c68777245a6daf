"""The stress scenarios: swiftunionfs hurt on purpose (crashes, faults, concurrency,
exclusive use, hostile layers and names, unmount under load).  scripts/stress is their
command line; tests/test_reliability.py runs each once, small.

scripts/stress -- hurt swiftunionfs on purpose and check that it holds.

Usage (as root; needs fuse3, tar, and the kernel's overlayfs as the oracle):

  scripts/stress                      # everything, full size: 20 reps per crash, 1 GiB file, 60 s x 8 procs
  scripts/stress --quick              # small sizes, 3 reps, 15 s concurrency (~2-3 min)
  scripts/stress --only crash-copyup,concurrency --reps 50
  scripts/stress --list               # scenario names
  SUF_BIN=/path/to/swiftunionfs scripts/stress

Scenarios (each reports figures and a list of failures; exit status 1 if any failed):

  crash-copyup     kill -9 the daemon at a random moment of the copy-up of a big lower file
                   (--big-mib, default 1024), remount: the file is old or new (never partial),
                   lowers untouched, workdir/work emptied at mount, no '#suf.' names in upper,
                   and the kernel's overlay over the same upper shows the same view.
  crash-rename     kill -9 during a rename storm (4 procs toggling fN<->gN of lower and upper
                   files and dirs): after remount each item has exactly one of its two names,
                   with its full content.
  crash-untar      kill -9 during `tar -x` of --tar-files files over partly existing lower
                   files: each file is lower's, tar's, or (at most one, tar's in-flight file)
                   a prefix of tar's.
  fault-enospc     upper on a 20 MiB tmpfs that fills during a copy-up and during writes: ENOSPC
                   to the caller, the daemon answers, upper's earlier content intact; the kernel's
                   errnos are recorded for comparison.
  fault-erofs      upper on a read-only tmpfs and on a read-only bind mount: refused at mount
                   with one stderr line, or EROFS on every write.
  fault-lower-rm   rm -rf of a lower directory while mounted (with open fds and cached
                   entries): errors, not a crash; the daemon answers and unmounts cleanly.
  concurrency      --procs (8) processes for --duration (60) s doing create/write/rename/unlink/
                   mkdir/rmdir/chmod/truncate/copy-up on overlapping names; no death, no stall
                   (progress watchdog), every listed name stat-able, no duplicates, no markers
                   visible, upper consistent, same view after remount and from the kernel.
  exclusive        a second mount on an upper/workdir in use is refused with a clear message.
  hostile-symlinks lower symlinks pointing outside (relative ../../.., absolute) and a lower
                   directory replaced by a symlink while mounted: nothing outside the layer
                   roots is read or written by the daemon; compared with the kernel.
  hostile-devices  character devices that are not 0/0 are devices, not whiteouts.
  hostile-names    255/256-byte names, names with newlines, paths deeper than PATH_MAX
                   (reached through dir fds), a user file named '.wh.x'; compared with the kernel.
  hostile-xattrs   user.* values at the lower filesystem's size limit (found by search),
                   one byte over, 64 KiB, and name lengths 255/256; errnos compared with the kernel.
  unmount-open     umount -l while files are open for read and write; I/O through the fds goes on,
                   the daemon exits after the last close, the written data is complete.
  unmount-copyup   umount -l while a big copy-up runs: no crash, the daemon exits, the file is
                   old or new after remount, workdir/work empty.

Every mount is unmounted in a finally block (fusermount3 -u, then umount -l); every
subprocess and every access to a mount (done in forked children) has a timeout; only
processes this script started are ever killed.  The module is also imported by
tests/test_reliability.py, which runs the same scenarios with smaller numbers.
"""

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile

from .. import binary, mounts
from .common import Ctx, Failure, Hang, unmount_all_below
from .concurrency import scenario_concurrency
from .crash import scenario_crash_copyup, scenario_crash_rename, scenario_crash_untar
from .exclusive import scenario_exclusive
from .faults import scenario_fault_enospc, scenario_fault_erofs, scenario_fault_lower_rm
from .hostile import (scenario_hostile_devices, scenario_hostile_names, scenario_hostile_symlinks,
                      scenario_hostile_xattrs)
from .unmount import scenario_unmount_copyup, scenario_unmount_open

SCENARIOS = {
    "crash-copyup": scenario_crash_copyup,
    "crash-rename": scenario_crash_rename,
    "crash-untar": scenario_crash_untar,
    "fault-enospc": scenario_fault_enospc,
    "fault-erofs": scenario_fault_erofs,
    "fault-lower-rm": scenario_fault_lower_rm,
    "concurrency": scenario_concurrency,
    "exclusive": scenario_exclusive,
    "hostile-symlinks": scenario_hostile_symlinks,
    "hostile-devices": scenario_hostile_devices,
    "hostile-names": scenario_hostile_names,
    "hostile-xattrs": scenario_hostile_xattrs,
    "unmount-open": scenario_unmount_open,
    "unmount-copyup": scenario_unmount_copyup,
}


def run_scenario(name, ctx):
    try:
        return SCENARIOS[name](ctx)
    except (Failure, Hang, OSError, subprocess.TimeoutExpired) as e:
        return {"scenario": name, "seconds": None, "figures": {}, "seed": ctx.seed,
                "rerun": f"scripts/stress --only {name} --seed {ctx.seed}",
                "failures": [f"scenario aborted: {type(e).__name__}: {e}"]}
    finally:
        unmount_all_below(os.path.join(ctx.base, name))


def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="scripts/stress", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n", 2)[2])
    ap.add_argument("--quick", action="store_true", help="3 reps, 64 MiB file, 15 s, 800 tar files")
    ap.add_argument("--reps", type=int, help="repetitions per crash scenario (default 20)")
    ap.add_argument("--big-mib", type=int, help="size of the copied-up file in MiB (default 1024)")
    ap.add_argument("--duration", type=float, help="concurrency run in seconds (default 60)")
    ap.add_argument("--procs", type=int, default=8, help="concurrent processes (default 8)")
    ap.add_argument("--tar-files", type=int, help="files in the untar tarball (default 3000)")
    ap.add_argument("--only", help="comma-separated scenario names (see --list)")
    ap.add_argument("--list", action="store_true", help="list scenarios and exit")
    ap.add_argument("--dir", help="work directory (default: a new /var/tmp/suf-stress-*; removed unless --keep)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--seed", type=int, help="random seed (default: random, printed)")
    ap.add_argument("--json", help="also write the results as JSON to this file")
    a = ap.parse_args(argv)
    if a.list:
        print("\n".join(SCENARIOS))
        return 0
    if os.geteuid() != 0:
        print("scripts/stress: needs root (mounts tmpfs and the kernel's overlay)", file=sys.stderr)
        return 2
    if not os.path.exists(binary.SUF_BIN):
        print(f"scripts/stress: SUF_BIN {binary.SUF_BIN} does not exist", file=sys.stderr)
        return 2
    q = a.quick
    reps = a.reps or (3 if q else 20)
    big = a.big_mib or (64 if q else 1024)
    dur = a.duration or (15.0 if q else 60.0)
    tarn = a.tar_files or (800 if q else 3000)
    seed = a.seed if a.seed is not None else random.randrange(1 << 30)
    names = a.only.split(",") if a.only else list(SCENARIOS)
    for n in names:
        if n not in SCENARIOS:
            print(f"scripts/stress: unknown scenario {n!r} (see --list)", file=sys.stderr)
            return 2
    base = a.dir or tempfile.mkdtemp(prefix="suf-stress-", dir="/var/tmp")
    os.makedirs(base, exist_ok=True)
    mounts.own(base)
    print(f"SUF_BIN={binary.SUF_BIN} seed={seed} reps={reps} big={big}MiB duration={dur}s procs={a.procs} "
          f"tar_files={tarn} dir={base}", flush=True)
    ctx = Ctx(base, reps, big, dur, a.procs, tarn, seed, log=lambda *m: print(*m, flush=True))
    results, nfail = [], 0
    try:
        for n in names:
            print(f"== {n}", flush=True)
            res = run_scenario(n, ctx)
            results.append(res)
            print(f"   {res['seconds']}s, {'OK' if not res['failures'] else str(len(res['failures'])) + ' FAILURES'}"
                  f"  (rerun: scripts/stress --only {n} --seed {seed})")
            for k, v in res["figures"].items():
                print(f"   {k}: {v}")
            for f in res["failures"][:30]:
                print(f"   FAIL {f}")
            if len(res["failures"]) > 30:
                print(f"   ... {len(res['failures']) - 30} more failures")
            nfail += bool(res["failures"])
    finally:
        unmount_all_below(base)
        if not a.keep and not a.dir:
            shutil.rmtree(base, ignore_errors=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"seed": seed, "results": results}, f, indent=1, default=str)
    print(f"== {len(names) - nfail}/{len(names)} scenarios passed", flush=True)
    return 1 if nfail else 0


