"""Set-id bits and file capabilities on write, truncate and chown: who clears them.

The VFS clears setuid, and setgid where the file is group-executable or the caller is outside
its group, when a caller without CAP_FSETID writes or truncates a file (fs/attr.c,
setattr_should_drop_suidgid); a chown clears setuid even for root; any write drops
security.capability. On the kernel's overlay this happens to the upper copy with the
caller's credentials. swiftunionfs writes the real files as root, so the daemon clears the
bits itself where the caller's credentials decide, and with the passthrough build (libfuse
3.16+) it negotiates FUSE_HANDLE_KILLPRIV_V2, after which the kernel leaves all of it to the
daemon (and stops asking getxattr("security.capability") before every write).

Every scenario runs next to the kernel's overlay (differential), for upper files and for lower
files (copied up by the operation), with the daemon serving the data, with the writeback cache,
and with FUSE passthrough (the data never reaching the daemon)."""

import os
import stat
import subprocess

import pytest

from conftest import File, build_layers, differential, make_dirs, mount_suf
from harness import binary, mounts
from harness.procs import as_ids
from test_passthrough import passthrough_bin

pytestmark = [pytest.mark.suf_only, pytest.mark.timeout(300)]

NOBODY = 65534
PAGE = b"k" * 4096

# name -> (mode, owner uid, gid); written by nobody (no supplementary groups, gid 65534).
KINDS = {
    "suid": (0o4777, 0, 0),
    "sgidx": (0o2777, 0, 0),          # setgid, group-executable: cleared
    "sgid": (0o2767, 0, 0),           # setgid, no group-exec, writer outside the group: cleared
    "sgidmember": (0o2767, 0, NOBODY),  # ... the writer in the group: kept
    "both": (0o6777, 0, 0),
    "cap": (0o777, 0, 0),             # security.capability set in prepare()
}
# chown is by the owner, so those files are nobody's; chgrp to a group it is in.
CHOWN_KINDS = {
    "suid": (0o4777, NOBODY, 0),
    "sgidx": (0o2777, NOBODY, 0),
    "sgid": (0o2767, NOBODY, 0),        # outside the file's group before the change: cleared
    "sgidmember": (0o2767, NOBODY, NOBODY),
    "cap": (0o777, NOBODY, 0),
}
USER_OPS = ("write", "truncate", "ftruncate", "otrunc", "append")
ROOT_OPS = ("write", "truncate", "otrunc")

MODES = {
    "daemon": dict(opts=["passthrough=off"], pt=False),
    "writeback": dict(opts=["writeback=1", "passthrough=off"], pt=False),
    "passthrough": dict(opts=["passthrough=on"], pt=True),
}


def names():
    for where in ("lower", "upper"):
        for kind in KINDS:
            for op in USER_OPS:
                yield where, f"{where}-{kind}-{op}", KINDS[kind]
            for op in ROOT_OPS:
                yield where, f"{where}-{kind}-root{op}", KINDS[kind]
        for kind in CHOWN_KINDS:
            yield where, f"{where}-{kind}-chgrp", CHOWN_KINDS[kind]
            yield where, f"{where}-{kind}-rootchown", CHOWN_KINDS[kind]


def spec(where):
    return {n: File(b"contents\n", mode, uid=uid, gid=gid) for w, n, (mode, uid, gid) in names() if w == where}


def set_caps(lowers, upper):
    for d in (lowers[0], upper):
        for n in os.listdir(d):
            if "-cap-" in n:
                r = subprocess.run(["setcap", "cap_net_raw+ep", os.path.join(d, n)], capture_output=True, text=True, timeout=30)
                assert r.returncode == 0, r.stderr
                # setcap as root leaves the mode; spec modes are what the test means
                os.chmod(os.path.join(d, n), 0o777)


def user_op(op, path):
    if op == "write":
        fd = os.open(path, os.O_WRONLY)
        try:
            os.pwrite(fd, PAGE, 0)
        finally:
            os.close(fd)
    elif op == "append":
        with open(path, "ab") as f:
            f.write(PAGE)
    elif op == "truncate":
        os.truncate(path, 3)
    elif op == "ftruncate":
        fd = os.open(path, os.O_WRONLY)
        try:
            os.ftruncate(fd, 5)
        finally:
            os.close(fd)
    elif op == "otrunc":
        os.close(os.open(path, os.O_WRONLY | os.O_TRUNC))
    elif op == "chgrp":
        os.chown(path, -1, NOBODY)
    return True


def root_op(op, path):
    if op == "rootchown":
        os.chown(path, 0, 0)
    else:
        user_op(op[len("root"):], path)
    return True


def observed(path):
    st = os.stat(path)
    try:
        os.getxattr(path, "security.capability")
        cap = True
    except OSError:
        cap = False
    return oct(stat.S_IMODE(st.st_mode)), st.st_uid, st.st_gid, st.st_size, cap


def scenario(r):
    for _where, n, _ in names():
        op = n.split("-")[-1]
        if op.startswith("root"):
            r(f"{n}: as root", root_op, op, r.p(n))
        else:
            r(f"{n}: as nobody", as_ids, NOBODY, NOBODY, user_op, op, r.p(n))
        r(f"{n}: after", observed, r.p(n))
    # A file whose bits were cleared, made set-id again and written again (S_NOSEC must not stick).
    n = "upper-suid-write"
    r("chmod u+s again", os.chmod, r.p(n), 0o4777)
    r("write again as nobody", as_ids, NOBODY, NOBODY, user_op, "write", r.p(n))
    r("after the second write", observed, r.p(n))


@pytest.mark.parametrize("mode", list(MODES))
def test_setid_bits_and_capabilities_match_the_kernel(public_tmp, mode):
    m = MODES[mode]
    kw = {"bin": passthrough_bin()} if m["pt"] else {}
    kres, _ = differential(public_tmp, [spec("lower")], scenario, upper_spec=spec("upper"), prepare=set_caps,
                           suf_opts=m["opts"], suf_mount_kw=kw)
    got = dict(kres)
    # the oracle itself: what the VFS rules say
    assert got["upper-suid-write: after"][1][0] == "0o777", got
    assert got["upper-sgidmember-write: after"][1][0] == "0o2767", got
    assert got["upper-sgid-write: after"][1][0] == "0o767", got
    assert got["upper-suid-rootwrite: after"][1][0] == "0o4777", got
    assert got["upper-suid-rootchown: after"][1][0] == "0o777", got
    assert got["upper-cap-rootwrite: after"][1][4] is False, got
    assert got["after the second write"][1][0] == "0o777", got


def burst(m, n=64):
    """n page writes to one new file, and n to a copied-up one; what the user sees after."""
    out = []
    for name in ("new", "lower"):
        p = os.path.join(m, name)
        fd = os.open(p, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            for i in range(n):
                os.pwrite(fd, PAGE, i * 4096)
        finally:
            os.close(fd)
        out.append(observed(p))
    return out


@pytest.mark.parametrize("opts", [["passthrough=off"], ["passthrough=off", "writeback=1"]])
def test_writes_do_not_ask_for_security_capability(tmp_path, opts):
    """With the passthrough build the daemon negotiates KILLPRIV_V2, so the kernel marks the
    superblock SB_NOSEC: after one check per file no write asks getxattr("security.capability").
    Without it each daemon-served write cost that round trip (64 per file here)."""
    pt = passthrough_bin()
    if binary.IS_FUSE_OVERLAYFS:
        pytest.skip("swiftunionfs's own negotiation")
    lowers = build_layers(tmp_path / "s", [{"lower": File(b"x" * 8192, 0o644)}])
    upper, work = make_dirs(tmp_path / "s" / "u", tmp_path / "s" / "w")
    stats = tmp_path / "stats.json"
    with mount_suf(lowers, str(upper), str(work), extra_opts=[*opts, f"stats={stats}"], bin=pt) as m:
        res = burst(m)
    assert [r[3] for r in res] == [64 * 4096, 64 * 4096], res
    s = mounts.read_stats(stats)
    assert mounts.request_count(s, "getxattr") <= 4, s
    if "writeback=1" not in opts:
        assert mounts.request_count(s, "write") >= 128, s
