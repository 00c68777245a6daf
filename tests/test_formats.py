"""The marker formats swiftunionfs writes in upper (README "Rootless", docs/format.md):
`whiteout=oci` (.wh.NAME files), forced `xattr_namespace=user|trusted` and the kernel's
`userxattr`, and the fallback to .wh.NAME files where 0/0 devices cannot be made.

Each runs the same removals, re-creations and renames as the kernel's overlayfs over an
identical copy of the layers: the operations' outcomes and the merged view must be the
kernel's, live and after a remount; where the format is the kernel's, the markers and
cross-mounts are compared too; where it is OCI, every whiteout device the kernel wrote
must be a .wh.NAME file in swiftunionfs's upper, and nothing else."""

import os
import shutil
import stat

import pytest

from conftest import differential, make_dirs, mount_suf, snapshot, start_suf, stop_suf, upper_markers
from harness import seccomp
from harness.layers import build_layers

pytestmark = pytest.mark.suf_only

SPEC = [
    {"f": "f\n", "keep": "keep\n", "d": {"a": "a\n", "sub": {"b": "b\n"}}, "m": {"x": "x\n"}},
    {"g": "g\n", "m": {"y": "y\n"}, "d": {"c": "c\n"}},
]


def write(path, data):
    with open(path, "w") as f:
        f.write(data)


def ops(r):
    p = r.p
    r("rm f", os.unlink, p("f"))
    r("rm g (bottom layer)", os.unlink, p("g"))
    r("rm -rf d (merged)", shutil.rmtree, p("d"))
    r("mkdir d again", os.mkdir, p("d"))
    r("create d/new", write, p("d/new"), "new\n")
    r("rm m/x (merged dir)", os.unlink, p("m/x"))
    r("rename keep over the whited-out f", os.rename, p("keep"), p("f"))
    r("mkdir m/x where a file was", os.mkdir, p("m/x"))
    r("rm m/y (bottom layer, merged dir)", os.unlink, p("m/y"))
    r("ls", lambda: sorted(os.listdir(r.root)))
    r("ls d", lambda: sorted(os.listdir(p("d"))))
    r("ls m", lambda: sorted(os.listdir(p("m"))))


def _wh_files(upper):
    """relpath of every .wh.NAME in upper -> (is an empty regular file, mode)."""
    out = {}
    for dp, dns, fns in os.walk(upper):
        for n in dns + fns:
            if n.startswith(".wh."):
                st = os.lstat(os.path.join(dp, n))
                rel = os.path.relpath(os.path.join(dp, n), upper)
                out[rel] = (stat.S_ISREG(st.st_mode) and st.st_size == 0, oct(stat.S_IMODE(st.st_mode)))
    return out


def _check_oci_upper(sides):
    kmarks, _ = upper_markers(sides["k"]["upper"])
    smarks, _ = upper_markers(sides["s"]["upper"])
    want_wh = {os.path.normpath(os.path.join(os.path.dirname(p), ".wh." + os.path.basename(p)))
               for p, t in kmarks if t == "whiteout"}
    got = _wh_files(sides["s"]["upper"])
    problems = []
    if {p for p, t in smarks if t == "whiteout"}:
        problems.append(f"0/0 devices written: {sorted(p for p, t in smarks if t == 'whiteout')}")
    if set(got) != want_wh:
        problems.append(f".wh. files {sorted(got)}, want one for each kernel whiteout: {sorted(want_wh)}")
    bad = {p: v for p, v in got.items() if v != (True, "0o0")}
    if bad:
        problems.append(f".wh. markers that are not empty mode-0000 files: {bad}")
    kop = {p for p, t in kmarks if t == "opaque"}
    sop = {p for p, t in smarks if t == "opaque"}
    if kop != sop:
        problems.append(f"opaque directories: kernel {sorted(kop)}, swiftunionfs {sorted(sop)}")
    assert not problems, "\n".join(problems)


def test_whiteout_oci(tmp_path):
    sides = {}
    differential(tmp_path, SPEC, ops, suf_opts=("whiteout=oci",), markers=False, cross=False, sides=sides)
    _check_oci_upper(sides)
    # The .wh. files are markers in any format: a mount with the default format shows the same.
    s = sides["s"]
    with mount_suf(s["lowers"], s["upper"], s["work"], extra_opts=("whiteout=oci",)) as m:
        oci_view = snapshot(m)
    with mount_suf(s["lowers"], s["upper"], s["work"]) as m:
        assert snapshot(m) == oci_view


@pytest.mark.parametrize("opt", ["userxattr", "xattr_namespace=user"])
def test_user_xattr_namespace_forced(tmp_path, opt):
    """As root, -o userxattr / xattr_namespace=user writes opaque marks as
    user.overlay.opaque=y (never trusted.*), as the kernel does with -o userxattr; the
    kernel with -o userxattr reads swiftunionfs's upper and the other way round."""
    differential(tmp_path, SPEC, ops, suf_opts=(opt,), kernel_opts=("userxattr",), markers="namespaces")


def test_trusted_xattr_namespace_forced(tmp_path):
    differential(tmp_path, SPEC, ops, suf_opts=("xattr_namespace=trusted",), markers="namespaces")


@pytest.mark.skipif(not seccomp.supported(), reason="seccomp filter written for x86_64 and aarch64 only")
def test_fallback_to_wh_files_where_mknod_is_refused(tmp_path):
    """README: where mknod of a 0/0 device is refused, whiteouts become .wh.NAME files
    'and says so'.  The daemon runs under a seccomp filter refusing character devices."""
    probe_l, probe_u, probe_w = make_dirs(tmp_path / "pl", tmp_path / "pu", tmp_path / "pw")
    m = start_suf([probe_l], probe_u, probe_w, preexec_fn=seccomp.deny_mknod)
    try:
        said = m.stderr()
    finally:
        stop_suf(m)
    lines = [l for l in said.splitlines() if l.strip()]
    assert len(lines) == 1 and ".wh." in lines[0] and probe_u in lines[0], \
        f"the fallback is not announced in one line naming the upper: {said!r}"
    sides = {}
    differential(tmp_path / "diff", SPEC, ops, markers=False, cross=False, sides=sides,
                 suf_mount_kw=dict(preexec_fn=seccomp.deny_mknod))
    _check_oci_upper(sides)
    s = sides["s"]
    with mount_suf(s["lowers"], s["upper"], s["work"], preexec_fn=seccomp.deny_mknod) as m:
        view = snapshot(m)
    with mount_suf(s["lowers"], s["upper"], s["work"]) as m:     # devices allowed again
        assert snapshot(m) == view


def test_wh_files_in_upper_are_read_by_default(tmp_path):
    """An upper holding .wh.NAME files (as OCI layers and the fallback leave it) hides
    the names below with the default format too, and new whiteouts next to them are
    devices."""
    lowers = build_layers(tmp_path, [{"a": "a", "b": "b", "dir": {"x": "x", "y": "y"}}])
    upper, work = make_dirs(tmp_path / "u", tmp_path / "w")
    for rel in (".wh.a", "dir/.wh.x"):
        os.makedirs(os.path.dirname(os.path.join(upper, rel)), exist_ok=True)
        open(os.path.join(upper, rel), "w").close()
    with mount_suf(lowers, upper, work) as m:
        assert sorted(os.listdir(m)) == ["b", "dir"]
        assert os.listdir(os.path.join(m, "dir")) == ["y"]
        os.unlink(os.path.join(m, "b"))
    st = os.lstat(os.path.join(upper, "b"))
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
