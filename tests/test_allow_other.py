"""README: "As root, swiftunionfs mounts with allow_other,default_permissions,suid,dev
unless told otherwise: like the kernel's overlay, the view is shared by every user and
permissions are checked by the kernel against the attributes the union reports."

Another uid (12345, any uid works: no passwd entry is needed) uses a mount made by root,
next to the kernel's overlay over identical layers: what it may read, write, create,
remove and change, file by file, and what the new objects look like."""

import os
import shutil

import pytest

from conftest import Dir, File, differential
from harness.procs import as_ids

pytestmark = pytest.mark.suf_only

UID = GID = 12345
OTHER = 23456
SPEC = [{
    "pub": File(b"public\n", 0o644),
    "secret": File(b"secret\n", 0o600),
    "grp": File(b"group\n", 0o640, gid=GID),
    "ww": File(b"world writable\n", 0o666),
    "mine": File(b"mine\n", 0o644, uid=UID, gid=GID),
    "suidbin": File(b"#!/bin/sh\n", 0o4755),
    "rootdir": Dir({"in": "in\n"}, 0o755),
    "closed": Dir({"in": "in\n"}, 0o700),
    "tmp": Dir({"others": File(b"someone else's\n", 0o644, uid=OTHER, gid=OTHER),
                "own": File(b"own\n", 0o644, uid=UID, gid=GID)}, 0o1777),
    "shared": Dir({}, 0o777),
    "gdir": Dir({}, 0o2775, gid=GID),
}]


def _read(p):
    with open(p, "rb") as f:
        return f.read()


def _write(p, data, mode="wb"):
    with open(p, mode) as f:
        f.write(data)


def _stat(p):
    st = os.lstat(p)
    return [oct(st.st_mode), st.st_uid, st.st_gid]


def ops(r):
    p = r.p

    def as_user(label, fn, *args):
        r(label, as_ids, UID, GID, fn, *args)

    as_user("read a 0644 root file", lambda: _read(p("pub")).decode())
    as_user("read a 0600 root file", lambda: _read(p("secret")).decode())
    as_user("read a 0640 file of my group (no supplementary groups)", lambda: _read(p("grp")).decode())
    r("read it with the group", as_ids, UID, OTHER, lambda: _read(p("grp")).decode(), groups=())
    as_user("write a 0666 lower file (copy-up by another uid)", _write, p("ww"), b"+", "ab")
    as_user("write a 0644 root file", _write, p("pub"), b"+", "ab")
    as_user("write my own lower file", _write, p("mine"), b"+", "ab")
    as_user("list a 0700 root dir", lambda: sorted(os.listdir(p("closed"))))
    as_user("create in a 0755 root dir", _write, p("rootdir/new"), b"n")
    as_user("unlink in a 0755 root dir", os.unlink, p("rootdir/in"))
    as_user("create in a 1777 dir", _write, p("tmp/created"), b"c")
    as_user("mkdir in a 1777 dir", os.mkdir, p("tmp/madedir"), 0o755)
    as_user("unlink someone else's file in a 1777 dir", os.unlink, p("tmp/others"))
    as_user("rename someone else's file in a 1777 dir", os.rename, p("tmp/others"), p("tmp/stolen"))
    as_user("unlink my own lower file in a 1777 dir", os.unlink, p("tmp/own"))
    as_user("create in a setgid dir", _write, p("gdir/g"), b"g")
    as_user("chmod a root file", os.chmod, p("pub"), 0o666)
    as_user("chown my file to root", os.chown, p("mine"), 0, 0)
    as_user("chmod my own file", os.chmod, p("mine"), 0o600)
    as_user("utime a root file", os.utime, p("pub"), (1, 1))
    as_user("touch (utime now) a world-writable file", os.utime, p("ww"))
    as_user("setxattr user.* on a root file", os.setxattr, p("pub"), "user.x", b"1")
    as_user("setxattr user.* on my file", os.setxattr, p("mine"), "user.x", b"1")
    as_user("symlink in a 0777 dir", os.symlink, "target", p("shared/link"))
    as_user("hard link to a root file", os.link, p("pub"), p("shared/hard"))
    as_user("rename my file into a 0777 dir", os.rename, p("mine"), p("shared/mine"))
    as_user("write the setuid root file", _write, p("suidbin"), b"#", "ab")
    for rel in ("ww", "tmp/created", "tmp/madedir", "gdir/g", "shared/link", "shared/mine", "suidbin"):
        r(f"stat {rel}", _stat, p(rel))
    r("root reads what the other uid wrote", lambda: _read(p("ww")).decode())
    r("ls tmp", lambda: sorted(os.listdir(p("tmp"))))


def _check_reachable(res):
    """The kernel's answers themselves: the other uid reads a public file, is refused a
    private one (so the comparison is not between two mounts nobody can enter)."""
    got = dict(res)
    assert got["read a 0644 root file"] == ("ok", "public\n"), res
    assert got["read a 0600 root file"] == ("err", "EACCES"), res


def test_another_uid_on_a_root_mount(public_tmp):
    res, _ = differential(public_tmp, SPEC, ops)
    _check_reachable(res)


def test_default_permissions_written_by_root(public_tmp):
    """The same checks on what root creates through the mount: mode and umask as the
    caller asked, and the other uid's rights on them."""
    def op(r):
        p = r.p
        old = os.umask(0o077)
        try:
            r("root creates with umask 077", _write, p("r1"), b"r")
            r("root mkdir with umask 077", os.mkdir, p("rd"), 0o777)
        finally:
            os.umask(old)
        r("stat r1", _stat, p("r1"))
        r("stat rd", _stat, p("rd"))
        r("other uid reads r1", as_ids, UID, GID, lambda: _read(p("r1")).decode())
        r("other uid lists rd", as_ids, UID, GID, lambda: os.listdir(p("rd")))
        r("cleanup", shutil.rmtree, p("rd"))
    differential(public_tmp, SPEC, op)


def test_posix_acl_is_enforced_for_another_uid(public_tmp):
    """A lower file 0600 root whose ACL gives the other uid read and write (and a
    directory whose default ACL is inherited by what is created in it): the kernel's
    overlay checks ACLs, so the other uid reads, writes (copy-up) and creates there."""
    import subprocess

    def prepare(lowers, upper):
        for args in (["-m", f"u:{UID}:rw-", os.path.join(lowers[0], "secret")],
                     ["-m", f"u:{UID}:rwx", os.path.join(lowers[0], "rootdir")],
                     ["-d", "-m", f"u:{UID}:rwx", os.path.join(lowers[0], "rootdir")]):
            subprocess.run(["setfacl", *args], check=True, capture_output=True, timeout=30)

    def op(r):
        p = r.p
        r("read a 0600 file the ACL opens", as_ids, UID, GID, lambda: _read(p("secret")).decode())
        r("write it (copy-up)", as_ids, UID, GID, _write, p("secret"), b"+", "ab")
        r("create in a 0755 dir the ACL opens", as_ids, UID, GID, _write, p("rootdir/byacl"), b"a")
        r("the new file inherits the default ACL", lambda: sorted(
            n for n in os.listxattr(p("rootdir/byacl")) if n.startswith("system.posix_acl")))
        r("stat it", _stat, p("rootdir/byacl"))
    differential(public_tmp, SPEC, op, prepare=prepare)
