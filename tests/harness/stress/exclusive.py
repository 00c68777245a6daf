"""A second mount of an upper or workdir in use is refused with one clear line."""

import os
import time

from .common import Failure, Hang, Suf, in_child, result, rmtree, suf_mounted


def _try_second(lowers, upper, work, mnt):
    s = Suf(lowers, upper, work, mnt)
    how = s.start(expect_fail=True)
    lines = [l for l in s.stderr().splitlines() if l.strip()]
    rc = s.proc.returncode
    if how == "mounted":
        s.stop(check=False)
    s.cleanup()
    return how, rc, lines


def scenario_exclusive(ctx):
    t0, name = time.monotonic(), "exclusive"
    failures, figs = [], {}
    base = ctx.dir(name)
    lower, upper, work, upper2, work2 = (os.path.join(base, n) for n in ("lower", "upper", "work", "upper2", "work2"))
    for d in (lower, upper, work, upper2, work2):
        os.makedirs(d)
    with open(os.path.join(lower, "f"), "w") as f:
        f.write("f\n")
    mnt = os.path.join(base, "mnt")
    with suf_mounted([lower], upper, work, mnt, failures=failures) as s:
        for label, (u, w) in {"same upper+workdir": (upper, work), "same workdir, other upper": (upper2, work),
                              "same upper, other workdir": (upper, work2)}.items():
            how, rc, lines = _try_second([lower], u, w, os.path.join(base, "mnt2"))
            figs[label] = f"{how} (exit {rc}): {lines}"
            if how != "exited" or rc == 0 or len(lines) != 1 or "in use" not in lines[0]:
                failures.append(f"{label}: second mount not refused with one clear 'in use' line: "
                                f"{how}, exit {rc}, stderr {lines}")
        try:
            in_child(lambda: open(os.path.join(mnt, "g"), "w").write("g"), timeout=20)
            ok = in_child(lambda: open(os.path.join(mnt, "g")).read(), timeout=20) == "g"
        except (Hang, Failure) as e:
            ok = False
            failures.append(f"first mount broken after refused attempts: {e}")
        if not ok or not s.alive():
            failures.append("first mount does not work after the refused attempts")
    # The lock goes with the mount: remounting works.
    try:
        with suf_mounted([lower], upper, work, mnt, failures=failures):
            pass
        figs["remount after unmount"] = "ok"
    except Failure as e:
        failures.append(f"remount after unmount refused: {e}")
    rmtree(base)
    return result(name, figs, failures, t0, ctx)


