"""POSIX ACLs are enforced by the kernel on a swiftunionfs mount, as on the kernel's overlay
(README: "the kernel checks access, ACLs included, against what the union reports").

swiftunionfs negotiates FUSE_POSIX_ACL: the kernel reads system.posix_acl_* through the
daemon, caches them and checks them itself; setfacl goes to the daemon as setxattr; chmod
updates the ACL mask (the filesystem under upper does it); a directory's default ACL decides
the mode and ACL of what is created in it (the umask is then not applied, FUSE_DONT_MASK).
Another uid (12345) acts through a root mount next to the kernel's overlay over identical
layers; under uidmapping= the ids inside ACLs are shown and stored mapped like owners."""

import os
import stat
import subprocess

import pytest

from conftest import Dir, File, differential
from harness import layers, mounts
from harness.procs import as_ids

pytestmark = pytest.mark.suf_only

UID = GID = 12345
SPEC = [{
    "acl_rw": File(b"opened by an ACL\n", 0o600),
    "acl_deny": File(b"closed to one user\n", 0o644),
    "acl_mask": File(b"masked\n", 0o600),
    "acl_group": File(b"group entry\n", 0o600),
    "setme": File(b"set through the mount\n", 0o600),
    "chmodme": File(b"chmod through the mount\n", 0o600),
    "dacl": Dir({"old": File(b"old\n", 0o600), "olddir": Dir({}, 0o755)}, 0o755),
    "plain": Dir({}, 0o777),
}]


def setfacl(*args):
    subprocess.run(["setfacl", *args], check=True, capture_output=True, timeout=30)


def getfacl(path):
    """The ACL as getfacl prints it (numeric ids, no header), or its error."""
    r = subprocess.run(["getfacl", "-n", "-c", "-p", path], capture_output=True, timeout=30, text=True)
    if r.returncode != 0:
        return "error: " + r.stderr.strip().split(": ")[-1]
    return sorted(line for line in r.stdout.splitlines() if line)


def _read(p):
    with open(p, "rb") as f:
        return f.read().decode()


def _append(p, data):
    with open(p, "ab") as f:
        f.write(data)


def _create(p, mode):
    os.close(os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY, mode))


def _mode(p):
    return oct(stat.S_IMODE(os.lstat(p).st_mode))


def _prepare(lowers, upper):
    l = lowers[0]
    setfacl("-m", f"u:{UID}:rw-", os.path.join(l, "acl_rw"))
    setfacl("-m", f"u:{UID}:---", os.path.join(l, "acl_deny"))
    setfacl("-m", f"u:{UID}:rw-,m::r--", os.path.join(l, "acl_mask"))
    setfacl("-m", f"g:{GID}:r--", os.path.join(l, "acl_group"))
    setfacl("-m", f"u:{UID}:rw-", os.path.join(l, "chmodme"))
    setfacl("-m", f"u:{UID}:rwx", os.path.join(l, "dacl"))
    setfacl("-d", "-m", f"u:{UID}:rwx", os.path.join(l, "dacl"))


def _ops(r):
    p = r.p

    def as_user(label, fn, *args, gid=GID):
        r(label, as_ids, UID, gid, fn, *args)

    # Access decided by lower ACLs, before any copy-up.
    as_user("read a 0600 file an ACL opens", _read, p("acl_rw"))
    as_user("access(R_OK|W_OK) on it", os.access, p("acl_rw"), os.R_OK | os.W_OK)
    as_user("read a 0644 file whose ACL denies me", _read, p("acl_deny"))
    as_user("read a 0600 file with my entry under a r-- mask", _read, p("acl_mask"))
    as_user("write it (the mask forbids)", _append, p("acl_mask"), b"+")
    as_user("read a 0600 file through a group entry", _read, p("acl_group"))
    as_user("read it in another group", _read, p("acl_group"), gid=GID + 1)
    # Copy-up by another uid, then the ACL still holds.
    as_user("write the 0600 file an ACL opens (copy-up)", _append, p("acl_rw"), b"+")
    r("its ACL after copy-up", getfacl, p("acl_rw"))
    as_user("read it again after copy-up", _read, p("acl_rw"))
    # setfacl and chmod through the mount.
    as_user("read setme before setfacl", _read, p("setme"))
    r("root sets an ACL through the mount", setfacl, "-m", f"u:{UID}:r--", p("setme"))
    r("its ACL", getfacl, p("setme"))
    r("its mode follows the ACL mask", _mode, p("setme"))
    as_user("read setme after setfacl", _read, p("setme"))
    r("root removes the ACL (setfacl -b)", setfacl, "-b", p("setme"))
    r("its ACL after -b", getfacl, p("setme"))
    as_user("read setme after setfacl -b", _read, p("setme"))
    as_user("read chmodme before chmod", _read, p("chmodme"))
    r("chmod 0604 sets the ACL mask to ---", os.chmod, p("chmodme"), 0o604)
    r("chmodme's ACL", getfacl, p("chmodme"))
    as_user("read chmodme after chmod", _read, p("chmodme"))
    r("chmod 0660 opens the mask again", os.chmod, p("chmodme"), 0o660)
    as_user("write chmodme after the second chmod", _append, p("chmodme"), b"+")
    # Default ACLs: inheritance and the umask (022 in as_ids).
    as_user("create in a 0755 root dir the ACL opens", _create, p("dacl/byacl"), 0o666)
    r("the new file's mode: the default ACL, not the umask", _mode, p("dacl/byacl"))
    r("the new file's ACL", getfacl, p("dacl/byacl"))
    as_user("mkdir there", os.mkdir, p("dacl/sub"), 0o777)
    r("the new dir's mode", _mode, p("dacl/sub"))
    r("the new dir's ACL (access and default)", getfacl, p("dacl/sub"))
    as_user("create in the inheriting subdir", _create, p("dacl/sub/deeper"), 0o640)
    r("deeper's mode", _mode, p("dacl/sub/deeper"))
    r("deeper's ACL", getfacl, p("dacl/sub/deeper"))
    as_user("mkfifo in the ACL dir", os.mkfifo, p("dacl/fifo"), 0o666)
    r("the fifo's mode", _mode, p("dacl/fifo"))
    as_user("create in a dir without a default ACL (umask applies)", _create, p("plain/um"), 0o666)
    r("plain/um's mode", _mode, p("plain/um"))
    as_user("mkdir there", os.mkdir, p("plain/umd"), 0o777)
    r("that dir's mode", _mode, p("plain/umd"))
    r("no ACL on it", getfacl, p("plain/umd"))
    # The copied-up directory keeps its ACLs (the old file inside stays lower).
    r("dacl's ACL after creating in it", getfacl, p("dacl"))
    as_user("read dacl/old (0600, no ACL of its own)", _read, p("dacl/old"))
    # A name created over a whiteout (made in the workdir, then renamed into place) inherits too.
    r("root removes dacl/old (a whiteout in upper)", os.unlink, p("dacl/old"))
    as_user("create dacl/old again, over the whiteout", _create, p("dacl/old"), 0o666)
    r("the recreated file's mode", _mode, p("dacl/old"))
    r("the recreated file's ACL", getfacl, p("dacl/old"))
    r("root removes the lower dir dacl/olddir", os.rmdir, p("dacl/olddir"))
    r("and makes it again, over the whiteout", os.mkdir, p("dacl/olddir"), 0o750)
    r("the new dir's ACL over the whiteout", getfacl, p("dacl/olddir"))


def test_acls_enforced_like_the_kernel(public_tmp):
    res, _ = differential(public_tmp, SPEC, _ops, prepare=_prepare,
                          snapshot_kw={"prefixes": ("user.", "system.posix_acl")})
    got = dict(res)
    # The kernel's own answers: the comparison is between mounts that do check ACLs.
    assert got["read a 0600 file an ACL opens"] == ("ok", "opened by an ACL\n"), res
    assert got["read a 0644 file whose ACL denies me"] == ("err", "EACCES"), res
    assert got["the new file's mode: the default ACL, not the umask"] == ("ok", "0o664"), res
    assert got["plain/um's mode"] == ("ok", "0o644"), res


# --------------------------------------------------------------------------
# ids in ACLs under uidmapping= / gidmapping=
# --------------------------------------------------------------------------

SHIFT = 100000
MAP = [f"uidmapping={SHIFT}:0:65536", f"gidmapping={SHIFT}:0:65536"]


def _shifted_layer(base):
    lower = layers.build_layer(os.path.join(base, "l"), {
        "f": File(b"shifted\n", 0o600, uid=SHIFT, gid=SHIFT),
        "d": Dir({}, 0o755, uid=SHIFT, gid=SHIFT),
    })
    setfacl("-m", f"u:{SHIFT + 5}:rw-,g:{SHIFT + 7}:r--", os.path.join(lower, "f"))
    setfacl("-d", "-m", f"u:{SHIFT + 5}:rwx", os.path.join(lower, "d"))
    return lower


def test_acl_ids_are_mapped(public_tmp):
    lower = _shifted_layer(public_tmp)
    upper, work = layers.make_dirs(os.path.join(public_tmp, "u"), os.path.join(public_tmp, "w"))
    with mounts.mount_suf([lower], upper, work, extra_opts=MAP) as m:
        f = os.path.join(m, "f")
        assert set(getfacl(f)) == {"user::rw-", "user:5:rw-", "group::---", "group:7:r--",
                                   "mask::rw-", "other::---"}
        # The kernel checks the mapped entry: shown uid 5 reads the 0600 file, uid 6 may not.
        assert _read_as(5, 5, f) == ("ok", "shifted\n")
        assert _read_as(6, 6, f) == ("err", "EACCES")
        assert _read_as(8, 7, f) == ("ok", "shifted\n")
        # Set through the mount: stored shifted in upper.
        setfacl("-m", "u:9:r--", f)
        assert "user:9:r--" in getfacl(f)
        assert "user:5:rw-" in getfacl(f)
        stored = getfacl(os.path.join(upper, "f"))
        assert f"user:{SHIFT + 9}:r--" in stored and f"user:{SHIFT + 5}:rw-" in stored, stored
        assert f"group:{SHIFT + 7}:r--" in stored, stored
        # An id the mapping cannot store is refused, as chown refuses it.
        r = subprocess.run(["setfacl", "-m", "u:70000:r--", f], capture_output=True, timeout=30)
        assert r.returncode != 0
        assert "user:70000" not in " ".join(getfacl(f))
        # A default ACL with a mapped id is inherited by a new file, stored shifted.
        d = os.path.join(m, "d")
        assert "default:user:5:rwx" in getfacl(d)
        _create(os.path.join(d, "new"), 0o644)
        assert any(line.startswith("user:5:") for line in getfacl(os.path.join(d, "new")))
        assert any(line.startswith(f"user:{SHIFT + 5}:") for line in getfacl(os.path.join(upper, "d", "new")))


def test_noacl_leaves_acls_unchecked(public_tmp):
    """noacl, as on the kernel's overlay: ACLs are still stored and shown, but the kernel
    checks the mode bits only."""
    lower = layers.build_layer(os.path.join(public_tmp, "l"), {"f": File(b"x\n", 0o600)})
    setfacl("-m", f"u:{UID}:r--", os.path.join(lower, "f"))
    upper, work = layers.make_dirs(os.path.join(public_tmp, "u"), os.path.join(public_tmp, "w"))
    with mounts.mount_suf([lower], upper, work) as m:
        assert _read_as(UID, GID, os.path.join(m, "f")) == ("ok", "x\n")
    with mounts.mount_suf([lower], upper, work, extra_opts=["noacl"]) as m:
        assert _read_as(UID, GID, os.path.join(m, "f")) == ("err", "EACCES")
        assert f"user:{UID}:r--" in getfacl(os.path.join(m, "f"))


def _read_as(uid, gid, path):
    try:
        return ("ok", as_ids(uid, gid, _read, path))
    except OSError as e:
        import errno
        return ("err", errno.errorcode[e.errno])
