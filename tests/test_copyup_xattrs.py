"""Copy-up keeps every extended attribute a file carries, not only user.*: POSIX ACLs
(system.posix_acl_access / _default), file capabilities (security.capability, which
must be set after the chown of the copy) and trusted.* (apart from the overlay's own
trusted.overlay.*).  The kernel's overlayfs copying up an identical file is the oracle:
the copies in the two uppers must carry the same attributes, and the merged views must
report the same capability and trusted.* values."""

import os
import subprocess

import pytest

from conftest import Dir, File, build_layers, make_dirs, mount_kernel, mount_suf


def _acl(path, spec, default=False):
    r = subprocess.run(["setfacl", *(["-d"] if default else []), "-m", spec, path],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, f"setfacl {spec} {path}: {r.stderr}"


def _cap(path, caps):
    r = subprocess.run(["setcap", caps, path], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, f"setcap {caps} {path}: {r.stderr}"


SPEC = [{
    "acl": File(b"acl\n", 0o640),
    "cap": File(b"#!/bin/true\n", 0o755),
    "capowned": File(b"#!/bin/true\n", 0o755, uid=1234, gid=1234),
    "trusted": File(b"trusted\n", xattrs={"trusted.suf-test": b"t-value", "user.u": b"u"}),
    "all": File(b"all\n", 0o750, xattrs={"trusted.other": b"\x00\x01binary"}),
    "dacl": Dir({"inside": "inside\n"}, 0o750, xattrs={"trusted.dirmark": b"d"}),
}]


def _prepare(lower):
    _acl(os.path.join(lower, "acl"), "u:1234:rw-,g:4321:r--")
    _cap(os.path.join(lower, "cap"), "cap_net_raw,cap_net_bind_service+ep")
    _cap(os.path.join(lower, "capowned"), "cap_net_raw+ep")
    _acl(os.path.join(lower, "all"), "u:99:r-x")
    _cap(os.path.join(lower, "all"), "cap_sys_nice+ei")
    _acl(os.path.join(lower, "dacl"), "u:1234:rwx")
    _acl(os.path.join(lower, "dacl"), "u:1234:rwx,g:77:r-x", default=True)


# Copy-ups that do not themselves change what is compared (no chown, no write: both
# would drop security.capability).
COPY_UPS = {
    "utime": lambda p: os.utime(p, ns=(1_000_000_000, 2_000_000_000)),
    "setxattr user.*": lambda p: os.setxattr(p, "user.copied", b"1"),
}


def _all_xattrs(path):
    names = sorted(n for n in os.listxattr(path, follow_symlinks=False) if not n.startswith("trusted.overlay."))
    return {n: os.getxattr(path, n, follow_symlinks=False) for n in names}


def _merged(path):
    out = {}
    for n in ("security.capability", "trusted.suf-test", "trusted.other", "trusted.dirmark", "user.u"):
        try:
            out[n] = os.getxattr(path, n, follow_symlinks=False)
        except OSError as e:
            out[n] = f"errno {e.errno}"
    return out


def _run(tmp_path, side, how):
    base = tmp_path / side
    lowers = build_layers(base, SPEC)
    _prepare(lowers[0])
    upper, work = make_dirs(base / "upper", base / "work")
    out = {}
    with (mount_kernel if side == "kernel" else mount_suf)(lowers, upper, work) as m:
        for name in ("acl", "cap", "capowned", "trusted", "all", "dacl"):
            COPY_UPS[how](os.path.join(m, name))
            out[name, "merged"] = _merged(os.path.join(m, name))
        os.utime(os.path.join(m, "dacl", "inside"))      # copy-up inside a dir with a default ACL
    for name in ("acl", "cap", "capowned", "trusted", "all", "dacl", "dacl/inside"):
        out[name, "upper"] = _all_xattrs(os.path.join(upper, name))
    return out


@pytest.mark.parametrize("how", sorted(COPY_UPS))
def test_copy_up_keeps_acls_capabilities_and_trusted_xattrs(tmp_path, how):
    k = _run(tmp_path, "kernel", how)
    s = _run(tmp_path, "suf", how)
    assert "system.posix_acl_access" in k["acl", "upper"], "kernel oracle lost the ACL?"
    assert "security.capability" in k["cap", "upper"], "kernel oracle lost the capability?"
    diffs = []
    for key in sorted(k):
        if k[key] != s.get(key):
            kk, sk = k[key], s.get(key) or {}
            d = {n: (kk.get(n), sk.get(n)) for n in sorted(set(kk) | set(sk)) if kk.get(n) != sk.get(n)}
            diffs.append(f"{key}: (kernel, swiftunionfs) {d}")
    assert not diffs, "xattrs after copy-up differ from the kernel's:\n  " + "\n  ".join(diffs)
