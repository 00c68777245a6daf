"""Rootless swiftunionfs: an unprivileged user mounts it inside its own user +
mount namespace (`unshare -Urm`, or `unshare -m --map-auto -r` for a
multi-id namespace through newuidmap/newgidmap), with no setuid helper.

Everything inside the namespace is done by tests/rootless_helper.py (run with
Debian's /usr/bin/python3 as the user `sufrl-test`); it mounts the kernel's
overlayfs with -o userxattr next to swiftunionfs and reports JSON.  Here,
as root outside the namespace, we build the layers, check the result, check
the uppers with host ids, check that nothing outside each upper/workdir
changed, and that no daemon survived.

/dev/fuse is 0600 on this machine: the module chmods it 0666 for the run and
restores the original mode afterwards (also on failure).
"""

import json
import os
import shutil
import signal
import stat
import subprocess
import tempfile
import time

import pytest

from conftest import SUF_BIN
from harness import layers, mounts, procs, trees, watchdog
from harness.users import TestUser, dev_fuse_mode
from rootless_helper import D, F, H, L, W  # noqa: E402

PYTHON = "/usr/bin/python3"
HERE = os.path.dirname(os.path.abspath(__file__))
HELPER = os.path.join(HERE, "rootless_helper.py")
RUN_TIMEOUT = 240

pytestmark = [pytest.mark.suf_only, pytest.mark.timeout(600)]


# --------------------------------------------------------------------------
# environment: user, subordinate ids, /dev/fuse
# --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def rl_user():
    """A fresh unprivileged user with 65536 subordinate uids and gids, removed (with its
    /etc/subuid and /etc/subgid lines) at the end of the module."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create the test user")
    for tool in ("unshare", "runuser", "newuidmap", "newgidmap", "useradd", "userdel", PYTHON):
        if not shutil.which(tool):
            pytest.skip(f"{tool} missing")
    with TestUser(os.environ.get("SUF_ROOTLESS_USER"), subids=True) as u:
        assert u.subuid is not None and u.subgid is not None, (u.subuid, u.subgid)
        # Does the kernel let this user create a user namespace at all?
        r = subprocess.run(["runuser", "-u", u.name, "--", "unshare", "-Urm", "true"],
                           capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            pytest.skip(f"unprivileged user namespaces unavailable: {r.stderr.strip()}")
        yield u.as_dict()


@pytest.fixture(scope="module")
def dev_fuse():
    with dev_fuse_mode(0o666):
        yield


@pytest.fixture(scope="module")
def base_dir():
    """A world-traversable dir outside root's 0700 pytest tmp tree, holding a copy of
    the helper and the harness (the user cannot read the worktree)."""
    d = tempfile.mkdtemp(prefix="sufrl-")
    os.chmod(d, 0o755)
    mounts.own(d)
    shutil.copy(HELPER, os.path.join(d, "rootless_helper.py"))
    shutil.copytree(os.path.join(HERE, "harness"), os.path.join(d, "harness"),
                    ignore=shutil.ignore_patterns("__pycache__"))
    for dp, dns, fns in os.walk(d):
        os.chmod(dp, 0o755)
        for n in fns:
            os.chmod(os.path.join(dp, n), 0o644)
    yield d
    # Inside the namespaces mounts died with them; nothing can be mounted here.
    mounts.unmount_all_below(d)
    mounts.disown(d)
    shutil.rmtree(d, ignore_errors=True)


# --------------------------------------------------------------------------
# host-side bookkeeping
# --------------------------------------------------------------------------

manifest = trees.manifest


def host_snapshot(upper):
    return trees.snapshot(upper, prefixes=("user.", "trusted."))


def _daemon_alive(pid):
    """True when pid is (still) a swiftunionfs process (not a zombie)."""
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return False
    return os.path.realpath(exe) == os.path.realpath(SUF_BIN) and procs.alive(pid)


def run_in_namespace(user, base, name, jobs, multi=False):
    """Run the helper as `user` in a fresh namespace; return (result, info)."""
    pidfile = os.path.join(base, f"{name}.pids")
    open(pidfile, "w").close()
    os.chown(pidfile, user["uid"], user["gid"])
    helper = os.path.join(os.path.dirname(base), "rootless_helper.py")   # base_dir's copy
    cfg = dict(bin=SUF_BIN, base=base, pidfile=pidfile, jobs=jobs)
    cfgpath = os.path.join(base, f"{name}.json")
    with open(cfgpath, "w") as f:
        json.dump(cfg, f)
    os.chmod(cfgpath, 0o644)
    ns = ["unshare", "-m", "--map-auto", "--map-root-user"] if multi else ["unshare", "-Urm"]
    cmd = ["runuser", "-u", user["name"], "--", *ns, PYTHON, helper, cfgpath]
    os.chmod("/dev/fuse", 0o666)   # a concurrent run elsewhere may have restored its mode
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, cwd=base)
    hang = None
    try:
        out, err = proc.communicate(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        # Record what hung and abort the namespace's FUSE connections: the helper then
        # sees ENOTCONN and finishes; kill it if it does not.
        hang = watchdog.abort_ours(stuck_pids=[proc.pid])
        try:
            out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate(timeout=30)
    # Every daemon the helper started must be gone (the helper waits for each).
    with open(pidfile) as f:
        pids = [int(x) for x in f.read().split()]
    survivors = []
    for pid in pids:
        deadline = time.monotonic() + 10
        while _daemon_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _daemon_alive(pid):
            survivors.append(pid)
            os.kill(pid, signal.SIGKILL)
    info = f"cmd: {cmd}\nrc: {proc.returncode}\nstderr:\n{err[-6000:]}"
    if proc.returncode != 0 or hang:
        info += f"\nstdout tail:\n{out[-3000:]}"
    assert hang is None, f"helper did not finish within {RUN_TIMEOUT}s:\n{hang}\n{info}"
    assert not survivors, f"swiftunionfs daemons survived their namespace: {survivors}\n{info}"
    assert proc.returncode == 0, info
    lines = [l for l in out.splitlines() if l.strip()]
    assert lines, info
    res = json.loads(lines[-1])
    assert len(pids) == len(res["daemons"]), (pids, res["daemons"])
    for d in res["daemons"]:
        assert d["exit"] == 0, f"daemon {d['pid']} exited {d['exit']}: {d.get('stderr')}"
    assert res["left_mounted"] == [], res["left_mounted"]
    return res, info


def prepare_job(user, base, name, specs, kind="diff", upper_spec=None, hostid=None,
                upper_owner=None, suf_opts=(), ops=None):
    """Build DIR/k and DIR/s (or only DIR/s for kind='expect') as root."""
    if hostid is None:
        def hostid(i):
            return user["uid"] if i == 0 else i
    d = os.path.join(base, name)
    os.mkdir(d)
    os.chown(d, user["uid"], user["gid"])
    for side in (("k", "s") if kind == "diff" else ("s",)):
        sd = os.path.join(d, side)
        os.mkdir(sd)
        for i, spec in enumerate(specs):
            layers.build_layer(os.path.join(sd, f"l{i + 1}"), spec, "userxattr", hostid,
                               root_owner=(hostid(0), hostid(0)))
        for n in ("upper", "work", "xwork", "mnt"):
            os.mkdir(os.path.join(sd, n))
            os.chown(os.path.join(sd, n), user["uid"], user["gid"])
        if upper_spec:
            os.rmdir(os.path.join(sd, "upper"))
            layers.build_layer(os.path.join(sd, "upper"), upper_spec, "userxattr", hostid,
                               root_owner=(hostid(0), hostid(0)))
        if upper_owner:
            os.chown(os.path.join(sd, "upper"), *upper_owner)
        os.chown(sd, user["uid"], user["gid"])
    job = dict(kind=kind, name=name, dir=d, nlowers=len(specs), ops=ops or name,
               suf_opts=list(suf_opts))
    skip = {f"{side}/{n}" for side in ("k", "s") for n in ("upper", "work", "xwork")}
    return job, manifest(d, skip), skip


def check_untouched(job, before, skip):
    """Nothing outside upper/workdir changed: lowers (by hash), the job dir, and
    the mountpoints are empty again."""
    d = job["dir"]
    after = manifest(d, skip)
    # the helper writes only the daemon's stderr log next to each mountpoint
    after = {k: v for k, v in after.items() if not k.endswith("mnt.stderr")}
    changed = [k for k in sorted(set(before) | set(after)) if before.get(k) != after.get(k)]
    assert not changed, "written outside upper/workdir: " + "; ".join(
        f"{k}: {before.get(k)} -> {after.get(k)}" for k in changed[:20])
    for side in ("k", "s"):
        mnt = os.path.join(d, side, "mnt")
        if os.path.isdir(mnt):
            assert os.listdir(mnt) == [], f"{mnt} not empty after unmount"


# --------------------------------------------------------------------------
# layer specs (namespace ids; 0 is the user)
# --------------------------------------------------------------------------

BASE = [
    {   # l1 (top lower)
        "f": "lower f\n",
        "bin": {"tar": "tar binary\n", "ls": "ls binary\n"},
        "d": {"a": "a\n", "sub": {"b": "b\n"}},
        "etc": D({"conf": F(b"conf\n", 0o640, xattrs={"user.tag": b"t"})},
                 mode=0o750, xattrs={"user.dirtag": b"d"}),
        "hl": "hardlinked\n",
        "hl2": H("hl"),
        "lnk": L("f"),
        "emptydir": {},
    },
    {   # l2
        "g": "g from l2\n",
        "bin": {"sh": "sh\n", "tar": "older tar\n", "cat": "cat\n"},
        "d": {"c": "c\n", "sub": {"e": "e\n"}},
        "f": "even older f\n",
        "h": "h from l2\n",
    },
]

MARKERS = [
    {"opq": D({"x": "x1"}, opaque=True), "gone": W(), "k": "k1"},
    {"opq": {"y": "y2", "z": "z2"}, "gone": "gone2", "f": "f2", "uo": {"old": "o"}, "k": "k2"},
]
MARKERS_UPPER = {"f": W(), "uo": D({"new": "n"}, opaque=True)}

DIFF_JOBS = ["removals", "renames", "metadata", "markers"]


def owners_spec(user):
    """Host ids on purpose (built with the identity id translation)."""
    u, g, su, sg = user["uid"], user["gid"], user["subuid"], user["subgid"]
    return [{
        "own": F("own\n", 0o644, u, g),
        "own5": F("own5\n", 0o644, u, g),
        "own70000": F("own70000\n", 0o644, u, g),
        "ownw": F("ownw\n", 0o644, u, g),
        "rootf": F("rootf\n", 0o644, 0, 0),
        "otherf": F("otherf\n", 0o644, 12345, 12345),
        "otherw": F("otherw\n", 0o666, 12345, 12345),
        "sub5f": F("sub5f\n", 0o644, su + 4, sg + 4),
        "sub1000f": F("sub1000f\n", 0o644, su + 999, sg + 999),
        "rootdir": D({"inner": F("inner\n", 0o644, 0, 0)}, 0o755, 0, 0),
    }]


# --------------------------------------------------------------------------
# the namespace runs (one per module, shared by the tests below)
# --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def single_ns(rl_user, dev_fuse, base_dir):
    """`unshare -Urm`: only the user, mapped to 0."""
    base = os.path.join(base_dir, "single")
    os.mkdir(base)
    os.chmod(base, 0o755)
    jobs, pre = [], {}
    for name in DIFF_JOBS:
        specs = MARKERS if name == "markers" else BASE
        job, man, skip = prepare_job(rl_user, base, name, specs,
                                     upper_spec=MARKERS_UPPER if name == "markers" else None)
        jobs.append(job)
        pre[name] = (job, man, skip)
    for name in ("owners", "unmapped"):
        job, man, skip = prepare_job(rl_user, base, name, owners_spec(rl_user), hostid=lambda i: i,
                                     upper_owner=(rl_user["uid"], rl_user["gid"]))
        jobs.append(job)
        pre[name] = (job, man, skip)
    job, man, skip = prepare_job(rl_user, base, "escaped_xattr", BASE)
    jobs.append(job)
    pre["escaped_xattr"] = (job, man, skip)
    res, info = run_in_namespace(rl_user, base, "single", jobs)
    return res, pre, info


@pytest.fixture(scope="module")
def multi_ns(rl_user, dev_fuse, base_dir):
    """`unshare -m --map-auto --map-root-user`: user -> 0, subids -> 1..65535."""
    su, sg = rl_user["subuid"], rl_user["subgid"]
    base = os.path.join(base_dir, "multi")
    os.mkdir(base)
    os.chmod(base, 0o755)
    jobs, pre = [], {}
    for name in ("owners", "unmapped"):
        job, man, skip = prepare_job(rl_user, base, name, owners_spec(rl_user), hostid=lambda i: i,
                                     upper_owner=(rl_user["uid"], rl_user["gid"]))
        jobs.append(job)
        pre[name] = (job, man, skip)
    job, man, skip = prepare_job(rl_user, base, "markers", MARKERS, upper_spec=MARKERS_UPPER)
    jobs.append(job)
    pre["markers"] = (job, man, skip)

    # A layer stored with ids shifted by +1000 (namespace ids), shown unshifted
    # through uidmapping=1000:0:100,gidmapping=1000:0:100.
    def ns_uid(i):
        return rl_user["uid"] if i == 0 else su + i - 1

    def ns_gid(i):
        return rl_user["gid"] if i == 0 else sg + i - 1
    shift = [{
        "a": F("a\n", 0o644, ns_uid(1000), ns_gid(1000)),
        "b5": F("b5\n", 0o600, ns_uid(1005), ns_gid(1005)),
        "bin": D({"sh": F("sh\n", 0o755, ns_uid(1000), ns_gid(1000))}, 0o755, ns_uid(1000), ns_gid(1000)),
        "unmapped": F("u\n", 0o644, ns_uid(0), ns_gid(0)),
        "suid": F("s\n", 0o4755, ns_uid(1000), ns_gid(1000)),
    }]
    job, man, skip = prepare_job(rl_user, base, "shift", shift, kind="expect", hostid=lambda i: i,
                                 upper_owner=(ns_uid(1000), ns_gid(1000)),
                                 suf_opts=["uidmapping=1000:0:100", "gidmapping=1000:0:100"])
    # the layer root too belongs to (shifted) 0, so that the merged root is 0's
    os.chown(os.path.join(job["dir"], "s", "l1"), ns_uid(1000), ns_gid(1000))
    man = manifest(job["dir"], skip)
    jobs.append(job)
    pre["shift"] = (job, man, skip)
    res, info = run_in_namespace(rl_user, base, "multi", jobs, multi=True)
    return res, pre, info


def _job(run, name):
    res, pre, info = run
    assert name in res["jobs"], f"job {name} missing\n{info}"
    return res["jobs"][name], pre[name]


def _assert_no_problems(jres, name, info, allowed_op_diffs=None):
    """allowed_op_diffs: {label: (kernel outcome, suf outcome)} accepted differences."""
    allowed = allowed_op_diffs or {}
    problems = [f"op #{i} {label!r}: kernel {k} vs suf {s}" for i, label, k, s in jres.get("op_diffs", [])
                if tuple(map(tuple, allowed.get(label, ()))) != (tuple(k or ()), tuple(s or ()))]
    problems += jres["problems"]
    assert not problems, f"{name}:\n  " + "\n  ".join(problems) + f"\n--\n{info[:3000]}"


# --------------------------------------------------------------------------
# tests: single-id namespace (unshare -Urm)
# --------------------------------------------------------------------------

def test_namespace_is_unprivileged_root(single_ns, rl_user):
    res, _, _ = single_ns
    assert res["ids"]["euid"] == 0
    assert res["uid_map"] == ["0", str(rl_user["uid"]), "1"]


@pytest.mark.parametrize("name", DIFF_JOBS)
def test_differential_single(single_ns, name):
    """Kernel overlay (userxattr) vs swiftunionfs in the same namespace:
    results, merged view, upper markers, remount, cross-mount."""
    jres, (job, man, skip) = _job(single_ns, name)
    _assert_no_problems(jres, name, single_ns[2])
    check_untouched(job, man, skip)


def test_markers_are_userxattr_format(single_ns):
    """Whiteouts: 0/0 char devices; opaque: user.overlay.opaque=y, never trusted.*."""
    jres, (job, _, _) = _job(single_ns, "removals")
    assert ["d", "opaque:user"] in jres["markers"], jres["markers"]
    assert ["f", "whiteout"] in jres["markers"] and ["g", "whiteout"] in jres["markers"]
    assert not any(m[1] == "opaque:trusted" for m in jres["markers"])
    upper = os.path.join(job["dir"], "s", "upper")
    st = os.lstat(os.path.join(upper, "f"))
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    assert os.getxattr(os.path.join(upper, "d"), "user.overlay.opaque") == b"y"
    assert "trusted.overlay.opaque" not in os.listxattr(os.path.join(upper, "d"))
    jres, (job, _, _) = _job(single_ns, "markers")
    assert ["uo", "opaque:user"] in jres["markers"] and ["opq", "whiteout"] in jres["markers"], jres["markers"]


def test_upper_belongs_to_the_user(single_ns, rl_user):
    """On the host every entry swiftunionfs wrote in upper is the user's."""
    for name in DIFF_JOBS:
        jres, (job, _, _) = _job(single_ns, name)
        snap = host_snapshot(os.path.join(job["dir"], "s", "upper"))
        bad = {p: (r["uid"], r["gid"]) for p, r in snap.items()
               if (r["uid"], r["gid"]) != (rl_user["uid"], rl_user["gid"])}
        assert not bad, f"{name}: entries in upper not owned by the user: {bad}"


def test_owners_single(single_ns, rl_user):
    """Lower owned by 0, the user, 12345 and subids: inside only the user is
    mapped (as 0); everything else shows 65534 — as the kernel shows it."""
    jres, (job, man, skip) = _job(single_ns, "owners")
    _assert_no_problems(jres, "owners", single_ns[2])
    check_untouched(job, man, skip)
    snap = jres["suf_snapshot"]
    ids = {p: (snap[p]["uid"], snap[p]["gid"]) for p in snap}
    assert ids["own"] == (0, 0) and ids["ownw"] == (0, 0)
    for p in ("rootf", "otherf", "otherw", "sub5f", "sub1000f", "rootdir", "rootdir/inner"):
        assert ids[p] == (65534, 65534), (p, ids[p])
    results = dict((l, tuple(o)) for l, o in jres["suf_results"])
    assert results["chown own file to 0"] == ("ok", None)
    assert results["chown own file to 5"] == ("err", "EINVAL")   # 5 is not mapped here
    assert results["create file"] == ("ok", None)
    assert results["meta newf"] == ("ok", ["-rw-r--r--", 0, 0, 3])
    # On the host, what was created inside belongs to the user.
    up = host_snapshot(os.path.join(job["dir"], "s", "upper"))
    for p in ("newf", "newd", "newl", "own"):
        assert (up[p]["uid"], up[p]["gid"]) == (rl_user["uid"], rl_user["gid"]), (p, up[p])


# A FUSE mount made in a user namespace has that namespace as s_user_ns, and
# the VFS itself refuses changes to inodes whose ids do not map into it, before
# the daemon is asked (fs/attr.c notify_change -> EOVERFLOW, fs/namei.c
# inode_permission(MAY_WRITE) -> EACCES and may_delete -> EOVERFLOW,
# fs/xattr.c xattr_permission -> EPERM).  The kernel's overlay inode carries
# the real (valid, unmapped) id and fails in the permission checks instead.
# Same refusal, other errno; nothing swiftunionfs can change.
FUSE_VFS_UNMAPPED = {
    "chmod root-owned file": (("err", "EPERM"), ("err", "EOVERFLOW")),
    "chmod other-owned file": (("err", "EPERM"), ("err", "EOVERFLOW")),
    "write world-writable other-owned file": (("err", "EOVERFLOW"), ("err", "EACCES")),
    "setxattr on root-owned file": (("err", "EACCES"), ("err", "EPERM")),
    "unlink in root-owned 0755 dir": (("err", "EACCES"), ("err", "EOVERFLOW")),
}
# chown is different: chown_ok() lets CAP_CHOWN in s_user_ns change an inode
# with an invalid uid, so the request reaches the daemon, which decides.
CHOWN_UNMAPPED = ["chown root-owned file", "chown sub5 file to 0"]


def _unmapped(run, allowed):
    jres, (job, man, skip) = _job(run, "unmapped")
    up = host_snapshot(os.path.join(job["dir"], "s", "upper"))
    info = run[2] + "\nswiftunionfs's upper (host ids): " + json.dumps(
        {p: (r["uid"], r["gid"], r["mode"]) for p, r in up.items()})
    _assert_no_problems(jres, "unmapped", info, allowed)
    check_untouched(job, man, skip)
    return jres


def test_unmapped_owner_single(single_ns):
    """Changes to lower files whose owner (host 0, 12345, subids) has no id in
    the namespace are refused, as by the kernel, and nothing is copied up
    (errnos set by the VFS for FUSE accepted; chown checked separately)."""
    _unmapped(single_ns, dict(FUSE_VFS_UNMAPPED))


def test_chown_unmapped_owner_errno_single(single_ns):
    """chown of a file whose owner is unmapped reaches the daemon: the kernel's
    overlay answers EPERM (the caller has no CAP_CHOWN over that inode)."""
    jres, _ = _job(single_ns, "unmapped")
    got = {l: tuple(o) for l, o in jres["suf_results"] if l in CHOWN_UNMAPPED}
    want = {l: tuple(o) for l, o in jres["kernel_results"] if l in CHOWN_UNMAPPED}
    assert got == want


def _kernel_at_least(major, minor):
    v = os.uname().release.split("-")[0].split(".")
    return (int(v[0]), int(v[1])) >= (major, minor)


@pytest.mark.skipif(not _kernel_at_least(6, 7), reason="overlay xattr escaping is kernel >= 6.7")
def test_escaped_overlay_xattrs(single_ns):
    """user.overlay.* set through the union: the kernel (>= 6.7) stores them
    escaped as user.overlay.overlay.* and shows them back; swiftunionfs must
    do the same and read the kernel's escaped ones (cross-mount)."""
    jres, (job, man, skip) = _job(single_ns, "escaped_xattr")
    _assert_no_problems(jres, "escaped_xattr", single_ns[2])
    check_untouched(job, man, skip)


# --------------------------------------------------------------------------
# tests: multi-id namespace (--map-auto, newuidmap)
# --------------------------------------------------------------------------

def test_namespace_multi_ids(multi_ns, rl_user):
    res, _, _ = multi_ns
    m = res["uid_map"]
    assert m[:3] == ["0", str(rl_user["uid"]), "1"] and m[3:5] == ["1", str(rl_user["subuid"])], m


def test_markers_multi(multi_ns):
    jres, (job, man, skip) = _job(multi_ns, "markers")
    _assert_no_problems(jres, "markers", multi_ns[2])
    check_untouched(job, man, skip)


def test_owners_multi(multi_ns, rl_user):
    """With subids mapped: chown to mapped ids works, files created by other
    ids belong to them (on the host: the matching subids), the kernel agrees."""
    jres, (job, man, skip) = _job(multi_ns, "owners")
    _assert_no_problems(jres, "owners", multi_ns[2])
    check_untouched(job, man, skip)
    su, sg = rl_user["subuid"], rl_user["subgid"]
    snap = jres["suf_snapshot"]
    ids = {p: (snap[p]["uid"], snap[p]["gid"]) for p in snap}
    assert ids["sub5f"] == (5, 5) and ids["sub1000f"] == (1000, 1000)
    assert ids["rootf"] == (65534, 65534) and ids["otherf"] == (65534, 65534)
    assert ids["own5"] == (5, 5)
    assert ids["newd/by5"] == (5, 6) and ids["newd/dir5"] == (5, 6)
    assert ids["newd/by1000"] == (1000, 1000)
    results = dict((l, tuple(o)) for l, o in jres["suf_results"])
    assert results["chown own file to 5"] == ("ok", None)
    assert results["chown own file to 70000"] == ("err", "EINVAL")
    up = host_snapshot(os.path.join(job["dir"], "s", "upper"))
    expect = {"own5": (su + 4, sg + 4), "newd/by5": (su + 4, sg + 5), "newd/dir5": (su + 4, sg + 5),
              "newd/by1000": (su + 999, sg + 999), "newf": (rl_user["uid"], rl_user["gid"])}
    got = {p: (up[p]["uid"], up[p]["gid"]) for p in expect if p in up}
    assert got == expect
    # setgid dir: new file takes the directory's gid (0 inside = the user's gid)
    assert ids["newd/by5g"] == (5, 0) and (up["newd/by5g"]["uid"], up["newd/by5g"]["gid"]) == (su + 4, rl_user["gid"])


def test_unmapped_owner_multi(multi_ns, rl_user):
    """As test_unmapped_owner_single, but 65534 is itself a mapped id here
    (a subid): an unmapped owner must still not turn into a real 65534.
    swiftunionfs reports such owners as unmapped, so the VFS refuses exactly
    as in the single-id namespace (same accepted errnos)."""
    _unmapped(multi_ns, dict(FUSE_VFS_UNMAPPED))


def test_uidmapping_shift(multi_ns, rl_user):
    """uidmapping=1000:0:100,gidmapping=1000:0:100 over a layer stored with
    ids +1000: the union shows them unshifted, stores new/chowned ids shifted,
    refuses ids outside the mapping, and shows unmapped ids as 65534."""
    jres, (job, man, skip) = _job(multi_ns, "shift")
    _assert_no_problems(jres, "shift", multi_ns[2])
    check_untouched(job, man, skip)
    su, sg = rl_user["subuid"], rl_user["subgid"]
    results = {}
    for label, out in jres["suf_results"]:
        results[label] = results.get(label, []) + [tuple(out)]
    expect = {
        "meta .": [("ok", ["drwxr-xr-x", 0, 0, None])],
        "meta a": [("ok", ["-rw-r--r--", 0, 0, 2]), ("ok", ["-rw-r--r--", 7, 8, 2])],
        "meta b5": [("ok", ["-rw-------", 5, 5, 3]), ("ok", ["-rw-------", 0, 0, 4])],
        "meta bin": [("ok", ["drwxr-xr-x", 0, 0, None])] * 2,
        "meta bin/sh": [("ok", ["-rwxr-xr-x", 0, 0, 3]), ("ok", ["-rwxr-xr-x", 0, 9, 3])],
        "meta unmapped": [("ok", ["-rw-r--r--", 65534, 65534, 2])],
        "meta suid": [("ok", ["-rwsr-xr-x", 0, 0, 2])],
        "create file": [("ok", None)],
        "create as 5:6": [("ok", None)],
        "write b5 (0600) as its owner 5": [("ok", None)],
        "write unmapped (0644) as 5": [("err", "EACCES")],
        "chown a to 7:8": [("ok", None)],
        "chown b5 to 0:0": [("ok", None)],
        "chown to 500 (outside the mapping)": [("err", "EINVAL")],
        "chown to -1:9 (gid only)": [("ok", None)],
        "meta new": [("ok", ["-rw-r--r--", 0, 0, 3])],
        "meta newd": [("ok", ["drwxrwxrwx", 0, 0, None])],
        "meta newd/by5": [("ok", ["-rw-r--r--", 5, 6, 1])],
    }
    bad = {k: (results.get(k), v) for k, v in expect.items() if results.get(k) != v}
    assert not bad, "got vs expected:\n  " + "\n  ".join(f"{k}: {g} vs {e}" for k, (g, e) in bad.items())
    # On the host the upper holds the shifted ids (namespace id + 1000).
    up = host_snapshot(os.path.join(job["dir"], "s", "upper"))
    host = {p: (up[p]["uid"], up[p]["gid"]) for p in up}

    def h(u, g):
        return (su + u - 1, sg + g - 1)
    want = {"new": h(1000, 1000), "newd": h(1000, 1000), "newd/by5": h(1005, 1006),
            "a": h(1007, 1008), "b5": h(1000, 1000), "bin": h(1000, 1000), "bin/sh": h(1000, 1009)}
    got = {p: host.get(p) for p in want}
    assert got == want
    # the remounted view equals the live one (checked in the helper) and the snapshot agrees
    snap = jres["suf_snapshot"]
    assert (snap["a"]["uid"], snap["a"]["gid"]) == (7, 8)
