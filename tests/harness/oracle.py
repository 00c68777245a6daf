"""The kernel's overlayfs as the oracle: the same operations on both mounts over
identical copies of the layers, every outcome recorded and compared."""

import errno
import os

from . import layers, mounts, trees


class Recorder:
    """Runs operations under a root and records each outcome: ('ok', value) or
    ('err', 'ENAME').  jsonable=True stores JSON-friendly lists (rootless helper)."""

    def __init__(self, root, jsonable=False):
        self.root = str(root)
        self.results = []
        self.jsonable = jsonable

    def p(self, rel):
        return os.path.join(self.root, rel)

    def __call__(self, label, fn, *args, **kwargs):
        try:
            v = fn(*args, **kwargs)
            out = ("ok", v)
        except OSError as e:
            out = ("err", errno.errorcode.get(e.errno, str(e.errno)))
        if self.jsonable:
            v = out[1]
            if isinstance(v, bytes):
                v = v.decode(errors="replace")
            out = [out[0], v if isinstance(v, (int, str, type(None), list, bool)) else repr(v)]
            self.results.append([label, out])
        else:
            self.results.append((label, out))
        return out


def compare_results(kres, sres):
    """Readable differences between two Recorder result lists, position by position."""
    lines = []
    for i in range(max(len(kres), len(sres))):
        k = kres[i] if i < len(kres) else None
        s = sres[i] if i < len(sres) else None
        if k != s:
            lines.append(f"#{i}: kernel {k!r} vs suf {s!r}")
    return lines


def compare_by_label(kres, sres, names=("kernel", "suf")):
    """Differences of two [(label, outcome)] lists by label (one-sided labels too)."""
    kd, sd = dict(kres), dict(sres)
    out = []
    for label in dict.fromkeys([l for l, _ in kres] + [l for l, _ in sres]):
        a, b = kd.get(label, "<not run>"), sd.get(label, "<not run>")
        if a != b:
            out.append(f"{label}: {names[0]} {a!r} vs {names[1]} {b!r}")
    return out


def differential(tmp_path, specs, op, upper_spec=None, offline=None, persist=True, check=None,
                 prepare=None, suf_opts=(), kernel_opts=(), suf_fmt="kernel", cross=True,
                 snapshot_kw=None, markers=True, sides=None, layout=None, suf_mount_kw=None):
    """Run op(recorder) on the kernel's overlay and on swiftunionfs over identical
    layer copies and compare (a) each outcome, (b) the merged views, (c) the markers
    written to upper (and that no '.wh.*' file appears), (d) each side remounted on its
    own upper, (e) cross-mounts: the kernel over swiftunionfs's upper and back.

    suf_fmt: the marker format of swiftunionfs's copies of the layers ('oci' compares
    OCI-marked layers with the kernel over the same stack in its own format; then
    markers and cross-mounts are not compared).  markers=False: do not compare the
    markers in upper (e.g. swiftunionfs writes another format on purpose); markers
    'namespaces' compares opaque marks with their xattr namespace.  sides: a dict that
    receives {'k': dirs, 's': dirs}.  layout(side) -> (layers base, upper base) puts the
    layers and upper/workdirs elsewhere (other filesystems).  suf_mount_kw: more
    arguments for mount_suf (env=, preexec_fn=, ...).
    Returns (kernel results, kernel view)."""
    snapshot_kw = snapshot_kw or {}
    suf_mount_kw = suf_mount_kw or {}
    sides = {} if sides is None else sides
    for side, fmt in (("k", "kernel"), ("s", suf_fmt)):
        lbase, ubase = layout(side) if layout else (os.path.join(str(tmp_path), side),) * 2
        lowers = layers.build_layers(lbase, specs, fmt=fmt)
        upper, work, xwork = layers.make_dirs(*(os.path.join(ubase, n) for n in ("upper", "work", "xwork")))
        if upper_spec:
            layers.build_layer(upper, upper_spec, fmt)
        if prepare:
            prepare(lowers, upper)
        sides[side] = dict(lowers=lowers, upper=upper, work=work, xwork=xwork)
    k, s = sides["k"], sides["s"]
    same_format = suf_fmt == "kernel"

    with mounts.mount_kernel(k["lowers"], k["upper"], k["work"], extra_opts=kernel_opts) as m:
        krec = Recorder(m)
        op(krec)
        ksnap = trees.snapshot(m, **snapshot_kw)
    with mounts.mount_suf(s["lowers"], s["upper"], s["work"], extra_opts=suf_opts, **suf_mount_kw) as m:
        srec = Recorder(m)
        op(srec)
        ssnap = trees.snapshot(m, **snapshot_kw)

    problems = []
    d = compare_results(krec.results, srec.results)
    if d:
        problems.append("operation results differ:\n  " + "\n  ".join(d))
    d = trees.diff_snapshots(ksnap, ssnap, "kernel", "suf")
    if d:
        problems.append("merged views differ:\n  " + "\n  ".join(d))
    ns = markers == "namespaces"
    smarks, sothers = trees.upper_markers(s["upper"], namespaces=ns)
    if same_format and markers:
        kmarks, _ = trees.upper_markers(k["upper"], namespaces=ns)
        if kmarks != smarks:
            problems.append(f"upper markers differ: only kernel {sorted(kmarks - smarks)}, "
                            f"only suf {sorted(smarks - kmarks)}")
        if sothers:
            problems.append(f"swiftunionfs left '.wh.*' names in upper: {sothers}")
    assert not problems, "\n".join(problems)
    if check:
        check(ksnap, "kernel")
        check(ssnap, "suf")

    if offline:
        offline(k["lowers"], k["upper"])
        offline(s["lowers"], s["upper"])

    with mounts.mount_kernel(k["lowers"], k["upper"], k["work"], extra_opts=kernel_opts) as m:
        ksnap2 = trees.snapshot(m, **snapshot_kw)
    with mounts.mount_suf(s["lowers"], s["upper"], s["work"], extra_opts=suf_opts, **suf_mount_kw) as m:
        ssnap2 = trees.snapshot(m, **snapshot_kw)
    trees.assert_same_tree(ksnap2, ssnap2, what="after remount")
    if persist:
        trees.assert_same_tree(ssnap, ssnap2, "suf live", "suf remounted", what="persistence")
    if check:
        check(ssnap2, "suf remounted")

    if cross and same_format:
        with mounts.mount_kernel(s["lowers"], s["upper"], s["xwork"], extra_opts=kernel_opts) as m:
            x1 = trees.snapshot(m, **snapshot_kw)
        trees.assert_same_tree(ssnap2, x1, "suf", "kernel over suf's upper", what="cross-mount")
        with mounts.mount_suf(k["lowers"], k["upper"], k["xwork"], extra_opts=suf_opts, **suf_mount_kw) as m:
            x2 = trees.snapshot(m, **snapshot_kw)
        trees.assert_same_tree(ksnap2, x2, "kernel", "suf over kernel's upper", what="cross-mount")
    return krec.results, ksnap


def both(tmp_path, specs, scenario, upper=True, suf_opts=(), kernel_opts=()):
    """scenario(mnt) -> result on a fresh kernel overlay and a fresh swiftunionfs over
    identical layers; returns {'kernel': ..., 'suf': ...} and the sides' dirs."""
    out, dirs = {}, {}
    for side in ("kernel", "suf"):
        base = os.path.join(str(tmp_path), side)
        lowers = layers.build_layers(base, specs)
        up, wk = (layers.make_dirs(os.path.join(base, "upper"), os.path.join(base, "work"))
                  if upper else (None, None))
        dirs[side] = dict(lowers=lowers, upper=up, work=wk)
        cm = (mounts.mount_kernel(lowers, up, wk, extra_opts=kernel_opts) if side == "kernel"
              else mounts.mount_suf(lowers, up, wk, extra_opts=suf_opts))
        with cm as m:
            out[side] = scenario(m)
    return out, dirs
