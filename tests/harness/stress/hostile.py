"""Hostile layers and names, compared with the kernel's overlayfs: symlinks pointing
out of the layers, devices that are not whiteouts, names of 255/256 bytes and with
newlines, trees deeper than PATH_MAX, xattrs at the size limits."""

import os
import stat
import time

from .common import (Rec, compare_ops, diff, differential, ename, kind_of, result, rmtree,
                     upper_scan)


LOWER_CHANGED = "--- a lower layer changes while mounted ---"


def split_at_lower_change(res):
    """(results before the marker, results after it)."""
    labels = [l for l, _ in res]
    if LOWER_CHANGED not in labels:
        return res, []
    i = labels.index(LOWER_CHANGED)
    return res[:i], res[i + 1:]


def undefined_but_clean(kres, sres, allowed=("ENOENT", "ESTALE")):
    """Where the kernel's answer is undefined: swiftunionfs's must be the kernel's or a
    clean 'this name is gone' errno, never EIO/ENOTCONN or another failure."""
    kd = dict(kres)
    return [f"{label}: {v!r} (kernel {kd.get(label)!r}); want the kernel's answer or one of {allowed}"
            for label, v in sres if v != kd.get(label) and v not in allowed]


def _symlink_build(sb):
    # layer-relative "../../victim" resolves to sb/victim (from lower/esc) ...
    lower, upper, work = (os.path.join(sb, "ly", n) for n in ("lower", "upper", "work"))
    for d in (lower, upper, work, os.path.join(sb, "ly", "victim"), os.path.join(sb, "victim"),
              os.path.join(sb, "abs-victim")):
        os.makedirs(d, exist_ok=True)
    for v in ("ly/victim", "victim", "abs-victim"):
        with open(os.path.join(sb, v, "secret"), "w") as f:
            f.write(f"SECRET of {v}\n")
    os.makedirs(os.path.join(lower, "d"))
    with open(os.path.join(lower, "d", "x"), "w") as f:
        f.write("lower d/x\n")
    os.makedirs(os.path.join(lower, "a", "b"))
    # Layer-relative both resolve to sb/ly/victim; from the mount (sb/mnt) to sb/victim.
    os.symlink("../victim", os.path.join(lower, "esc"))
    os.symlink("../../../victim", os.path.join(lower, "a", "b", "esc3"))
    os.symlink(os.path.join(sb, "abs-victim"), os.path.join(lower, "abs"))
    return [lower], upper, work


def _symlink_ops(mnt, sb):
    # ... while through the mount (sb/mnt/esc -> sb/victim... ) the client resolves them from mnt.
    r = Rec()
    lower = os.path.join(sb, "ly", "lower")
    r("readlink esc", os.readlink, os.path.join(mnt, "esc"))
    r("write via esc", lambda: open(os.path.join(mnt, "esc", "file"), "w").write("x"))
    r("write via a/b/esc3", lambda: open(os.path.join(mnt, "a", "b", "esc3", "file3"), "w").write("x"))
    r("write via abs", lambda: open(os.path.join(mnt, "abs", "file"), "w").write("x"))
    r("lchown esc (copy-up of symlink)", os.lchown, os.path.join(mnt, "esc"), 0, 0)
    r("mkdir via a/b/esc3/newdir", os.mkdir, os.path.join(mnt, "a", "b", "esc3", "newdir"))
    r("chmod a/b (copy-up of the dir holding esc3)", os.chmod, os.path.join(mnt, "a", "b"), 0o750)
    r("stat d/x", lambda: os.stat(os.path.join(mnt, "d", "x")).st_size)
    # Now replace the lower directory d by a symlink to the layer-relative victim.  From
    # here on the kernel's behaviour is undefined (a lower layer changed while mounted).
    r.out.append((LOWER_CHANGED, None))
    os.rename(os.path.join(lower, "d"), os.path.join(lower, "d.old"))
    os.symlink("../victim", os.path.join(lower, "d"))
    r("lstat d is dir (cached)", lambda: kind_of(os.lstat(os.path.join(mnt, "d")).st_mode))
    r("read d/secret", lambda: open(os.path.join(mnt, "d", "secret")).read())
    r("read d/x", lambda: open(os.path.join(mnt, "d", "x")).read())
    r("create d/new", lambda: open(os.path.join(mnt, "d", "new"), "w").write("n"))
    r("copy-up d/x", lambda: open(os.path.join(mnt, "d", "x"), "a").write("more"))
    r("mkdir d/nd", os.mkdir, os.path.join(mnt, "d", "nd"))
    r("unlink d/secret", os.unlink, os.path.join(mnt, "d", "secret"))
    r("chmod d/secret", os.chmod, os.path.join(mnt, "d", "secret"), 0o600)
    r("setxattr d", os.setxattr, os.path.join(mnt, "d"), "user.t", b"v")
    return r.out


def scenario_hostile_symlinks(ctx):
    t0, name = time.monotonic(), "hostile-symlinks"
    failures, figs = [], {}
    base = ctx.dir(name)
    # watch=off: the kernel, the oracle here, never notices a lower layer changing under it,
    # while swiftunionfs by default shows the edit (a lower directory replaced by a symlink
    # then resolves through it on the client's side, as after a remount). Edits seen through
    # the watch are tested against the kernel in tests/test_lower_edits.py.
    out = differential(base, _symlink_build, _symlink_ops, remount_view=False, suf_extra=("watch=off",))
    kres, sres = out["k"][0], out["s"][0]
    figs["kernel"] = kres
    figs["suf"] = sres
    # What the client sees through hostile symlinks is defined by the kernel's overlay;
    # after the lower directory was swapped for a symlink it is not (the kernel documents
    # changes to a mounted lower as undefined): there the answers must be the kernel's or
    # a clean ENOENT, and nothing outside the layers may be read or written (below).
    kdef, kafter = split_at_lower_change(kres)
    sdef, safter = split_at_lower_change(sres)
    failures += [f"differs from the kernel: {d}" for d in compare_ops(kdef, sdef)]
    failures += [f"after the lower change: {d}" for d in undefined_but_clean(kafter, safter)]
    sb = os.path.join(base, "s")
    # The layer-relative victim must never be touched or read by the daemon.
    lv = os.path.join(sb, "ly", "victim")
    if sorted(os.listdir(lv)) != ["secret"]:
        failures.append(f"the daemon wrote outside the layers: {lv} now has {sorted(os.listdir(lv))}")
    if open(os.path.join(lv, "secret")).read() != "SECRET of ly/victim\n" or \
            os.stat(os.path.join(lv, "secret")).st_mode & 0o777 != 0o644:
        failures.append("the daemon modified a file outside the layers")
    for label, v in sres:
        if isinstance(v, str) and "SECRET of ly/victim" in v:
            failures.append(f"{label}: the daemon read outside the layers: {v!r}")
    kv = os.path.join(base, "k", "ly", "victim")
    figs["kernel layer-relative victim after"] = sorted(os.listdir(kv))
    if not out["s"][3]:
        failures.append("daemon died or stopped answering")
    if out["s"][4]:
        failures.append(f"unmount: {out['s'][4]}")
    # Writes through symlinks the client follows land where the kernel's land.
    for v in ("victim", "abs-victim"):
        kl = sorted(os.listdir(os.path.join(base, "k", v)))
        sl = sorted(os.listdir(os.path.join(base, "s", v)))
        figs[f"{v} contents (kernel / suf)"] = f"{kl} / {sl}"
        if kl != sl:
            failures.append(f"{v}: kernel wrote {kl}, swiftunionfs {sl}")
    rmtree(base)
    return result(name, figs, failures, t0, ctx)


def _dev_build(sb):
    l1, l2, upper, work = (os.path.join(sb, n) for n in ("l1", "l2", "upper", "work"))
    for d in (l1, l2, upper, work):
        os.makedirs(d)
    os.mknod(os.path.join(l1, "null"), stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.mknod(os.path.join(l1, "dev01"), stat.S_IFCHR | 0o600, os.makedev(0, 1))
    os.mknod(os.path.join(l1, "dev10"), stat.S_IFCHR | 0o600, os.makedev(1, 0))
    os.mknod(os.path.join(l1, "blk00"), stat.S_IFBLK | 0o600, os.makedev(0, 0))
    os.mknod(os.path.join(l1, "gone"), stat.S_IFCHR, 0)
    for n in ("dev01", "dev10", "blk00", "gone", "plain"):
        with open(os.path.join(l2, n), "w") as f:
            f.write(f"l2 {n}\n")
    os.mknod(os.path.join(upper, "plain"), stat.S_IFCHR | 0o600, os.makedev(0, 2))
    return [l1, l2], upper, work


def _dev_ops(mnt, sb):
    r = Rec()
    r("list", lambda: sorted(os.listdir(mnt)))
    for n in ("null", "dev01", "dev10", "blk00", "gone", "plain"):
        r(f"lstat {n}", lambda n=n: (kind_of(os.lstat(os.path.join(mnt, n)).st_mode),
                                     os.major(os.lstat(os.path.join(mnt, n)).st_rdev),
                                     os.minor(os.lstat(os.path.join(mnt, n)).st_rdev)))
    r("read null", lambda: open(os.path.join(mnt, "null"), "rb").read())
    r("chmod dev01 (copy-up of a device)", os.chmod, os.path.join(mnt, "dev01"), 0o640)
    r("unlink dev10", os.unlink, os.path.join(mnt, "dev10"))
    r("mknod 0/1 through the union", os.mknod, os.path.join(mnt, "made01"), stat.S_IFCHR | 0o600, os.makedev(0, 1))
    r("list after", lambda: sorted(os.listdir(mnt)))
    return r.out


def scenario_hostile_devices(ctx):
    t0, name = time.monotonic(), "hostile-devices"
    failures, figs = [], {}
    base = ctx.dir(name)
    out = differential(base, _dev_build, _dev_ops)
    figs["suf"] = out["s"][0]
    failures += [f"differs from kernel: {d}" for d in compare_ops(out["k"][0], out["s"][0])]
    failures += [f"view differs from kernel: {d}" for d in diff(out["k"][1][0], out["s"][1][0])]
    failures += [f"remounted view differs from kernel: {d}" for d in diff(out["k"][1][0], out["s"][2][0])]
    if not out["s"][3] or out["s"][4]:
        failures.append(f"daemon trouble: alive={out['s'][3]} unmount={out['s'][4]}")
    rmtree(base)
    return result(name, figs, failures, t0, ctx)


DEEP_COMPONENT = 200
DEEP_LEVELS = 22      # 22 * 201 bytes: more than PATH_MAX below the mount


def _names_build(sb):
    lower, upper, work = (os.path.join(sb, n) for n in ("lower", "upper", "work"))
    for d in (lower, upper, work):
        os.makedirs(d)
    for n in ("L" * 255, "x\ny", "x", "wh"):
        with open(os.path.join(lower, n), "w") as f:
            f.write(f"lower {n!r}\n")
    fd = os.open(lower, os.O_RDONLY | os.O_DIRECTORY)
    for i in range(DEEP_LEVELS):
        c = chr(ord("a") + i) * DEEP_COMPONENT
        os.mkdir(c, dir_fd=fd)
        nfd = os.open(c, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = nfd
    with open(os.open("leaf", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd), "w") as f:
        f.write("deep leaf\n")
    os.close(fd)
    return [lower], upper, work


def _names_ops(mnt, sb):
    r = Rec()
    n255, n256 = "a" * 255, "a" * 256
    p = lambda n: os.path.join(mnt, n)  # noqa: E731
    r("create 255", lambda: open(p(n255), "w").write("x"))
    r("stat 255", lambda: os.stat(p(n255)).st_size)
    r("listed 255", lambda: n255 in os.listdir(mnt))
    r("rename 255 -> b*255", os.rename, p(n255), p("b" * 255))
    r("create 256", lambda: open(p(n256), "w").write("x"))
    r("mkdir 256", os.mkdir, p(n256))
    r("stat 256", os.stat, p(n256))
    r("rename to 256", os.rename, p("b" * 255), p(n256))
    r("copy-up lower L*255", lambda: open(p("L" * 255), "a").write("more"))
    r("unlink lower L*255", os.unlink, p("L" * 255))
    r("unlink b*255", os.unlink, p("b" * 255))
    r("read x\\ny", lambda: open(p("x\ny")).read())
    r("create a\\nb", lambda: open(p("a\nb"), "w").write("nl"))
    r("rename x\\ny -> p\\nq", os.rename, p("x\ny"), p("p\nq"))
    r("mkdir d\\ne", os.mkdir, p("d\ne"))
    r("create .wh.x", lambda: open(p(".wh.x"), "w").write("user data"))
    r("mkdir .wh.dir", os.mkdir, p(".wh.dir"))
    r("create .wh..wh..opq", lambda: open(p(".wh..wh..opq"), "w").write("o"))
    r("stat x after .wh.x", lambda: os.stat(p("x")).st_size)
    r("list", lambda: sorted(os.listdir(mnt)))
    # deep: walk with dir fds, beyond PATH_MAX
    fd = os.open(mnt, os.O_RDONLY | os.O_DIRECTORY)
    path = mnt
    try:
        for i in range(DEEP_LEVELS):
            c = chr(ord("a") + i) * DEEP_COMPONENT
            try:
                nfd = os.open(c, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            except OSError as e:
                # Record where the walk stops (mount path length + depth), then go on from there.
                r.out.append((f"deep walk: open level {i + 1} (mount path + {201 * (i + 1)} bytes)", ename(e)))
                break
            os.close(fd)
            fd = nfd
            path += "/" + c
            if len(path) + 6 < 4096 < len(path) + 6 + DEEP_COMPONENT + 1:
                r(f"full path {len(path) + 5} bytes: stat", lambda q=path: os.stat(q).st_mode & 0 or "ok")
                r("full path over PATH_MAX: stat", lambda q=path: os.stat(q + "/" + "z" * DEEP_COMPONENT))
        r("deep read leaf", lambda: open(os.open("leaf", os.O_RDONLY, dir_fd=fd)).read())
        r("deep copy-up leaf", lambda: open(os.open("leaf", os.O_WRONLY | os.O_APPEND, dir_fd=fd), "w").write("+"))
        r("deep create", lambda: open(os.open("new", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd), "w").write("n"))
        r("deep mkdir", os.mkdir, "nd", dir_fd=fd)
        r("deep rename", os.rename, "new", "new2", src_dir_fd=fd, dst_dir_fd=fd)
        r("deep list", lambda: sorted(os.listdir(fd)))
    finally:
        os.close(fd)
    return r.out


def scenario_hostile_names(ctx):
    t0, name = time.monotonic(), "hostile-names"
    failures, figs = [], {}
    base = ctx.dir(name)
    out = differential(base, _names_build, _names_ops)
    kres, sres = out["k"][0], out["s"][0]
    figs["suf"] = [x for x in sres if "list" not in x[0]]
    d = compare_ops(kres, sres)
    wh = [x for x in d if ".wh." in x]
    other = [x for x in d if ".wh." not in x]
    figs["differences_from_kernel (.wh. names)"] = wh
    failures += [f"differs from kernel: {x}" for x in other]
    kview, sview, sview2 = out["k"][1][0], out["s"][1][0], out["s"][2][0]
    failures += [f"swiftunionfs view: {p}" for p in out["s"][1][1] + out["s"][2][1]]
    # The '.wh.' names may be refused (EPERM) by swiftunionfs; apart from them the views agree.
    strip = lambda v: {k: x for k, x in v.items() if ".wh." not in k}  # noqa: E731
    failures += [f"view differs from kernel: {x}" for x in diff(strip(kview), strip(sview))]
    # Whatever swiftunionfs did with '.wh.x', its view must be the same after a remount.
    failures += [f"view not the same after remount: {x}" for x in diff(sview, sview2)]
    sr = dict(sres)
    if sr.get("create .wh.x") == "ok" and "x" not in sview2:
        failures.append("a user file '.wh.x' hides 'x' after remount")
    _, upper = out["s"][5]
    _, probs = upper_scan(upper, out["s"][5][0])
    failures += [p for p in probs if ".wh." not in p or sr.get("create .wh.x") != "ok"]
    if not out["s"][3] or out["s"][4]:
        failures.append(f"daemon trouble: alive={out['s'][3]} unmount={out['s'][4]}")
    rmtree(base)
    return result(name, figs, failures, t0, ctx)


def xattr_limit(dirpath):
    """Largest user.* value the filesystem of dirpath stores on one file (binary search)."""
    p = os.path.join(dirpath, ".xattr-probe")
    open(p, "w").close()
    lo, hi = 0, 65536
    try:
        while lo < hi:
            mid = (lo + hi + 1) // 2
            try:
                os.setxattr(p, "user.probe", b"v" * mid)
                os.removexattr(p, "user.probe")
                lo = mid
            except OSError:
                hi = mid - 1
    finally:
        os.unlink(p)
    return lo


def _xattr_build(sb):
    lower, upper, work = (os.path.join(sb, n) for n in ("lower", "upper", "work"))
    for d in (lower, upper, work):
        os.makedirs(d)
    for n in ("f1", "f2", "f3", "f4", "f5"):
        with open(os.path.join(lower, n), "w") as f:
            f.write(n)
    return [lower], upper, work


def _xattr_ops(limit):
    def ops(mnt, sb):
        r = Rec()
        new = os.path.join(mnt, "new")
        open(new, "w").close()
        for i, size in enumerate((limit, limit + 1, 65535, 65536, 65537)):
            for target in (f"f{i + 1}", "new"):
                p = os.path.join(mnt, target)
                r(f"set {size} on {target}", os.setxattr, p, "user.big", b"v" * size)
                r(f"get size on {target}", lambda p=p: len(os.getxattr(p, "user.big")))
                try:
                    os.removexattr(p, "user.big")
                except OSError:
                    pass
        r("name 255", os.setxattr, new, "user." + "n" * 250, b"1")
        r("name 256", os.setxattr, new, "user." + "n" * 251, b"1")
        r("getxattr too small buffer", lambda: os.getxattr(new, "user." + "n" * 250))
        r("listxattr", lambda: sorted(os.listxattr(new)))
        return r.out
    return ops


def scenario_hostile_xattrs(ctx):
    t0, name = time.monotonic(), "hostile-xattrs"
    failures, figs = [], {}
    base = ctx.dir(name)
    limit = xattr_limit(base)
    figs["lower_fs_user_xattr_value_limit"] = limit
    out = differential(base, _xattr_build, _xattr_ops(limit), remount_view=False)
    figs["kernel"] = out["k"][0]
    figs["suf"] = out["s"][0]
    failures += [f"differs from kernel: {d}" for d in compare_ops(out["k"][0], out["s"][0])]
    if not out["s"][3] or out["s"][4]:
        failures.append(f"daemon trouble: alive={out['s'][3]} unmount={out['s'][4]}")
    rmtree(base)
    return result(name, figs, failures, t0, ctx)


