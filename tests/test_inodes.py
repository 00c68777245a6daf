import pytest
"""README: "Inode numbers are the real files' numbers when all layers share a filesystem,
stable across copy-up, as the kernel reports them."

For each object the number the union reports is classified against the real files
(the lower copy's number, the upper copy's number, or neither) before a copy-up, right
after it, and after an unmount and a new mount of the same upper; the kernel's overlay
over an identical copy of the layers is the oracle for that table.  Numbers themselves
differ between the two copies, their relation to the real files must not."""

import os

from conftest import build_layers, make_dirs, mount_kernel, mount_suf

SPEC = [{
    "f": "lower file\n",
    "g": "second lower file\n",
    "d": {"inner": "inner\n", "sub": {"x": "x\n"}},
    "h1": "hard\n",
    "keep": "never copied up\n",
}]


def _relation(st_ino, lower_path, upper_path):
    lo = os.lstat(lower_path).st_ino if os.path.lexists(lower_path) else None
    up = os.lstat(upper_path).st_ino if os.path.lexists(upper_path) else None
    if st_ino == lo:
        return "lower's number"
    if st_ino == up:
        return "upper's number"
    return f"another number ({st_ino}; lower {lo}, upper {up})"


def _table(mount, tmp_path, side):
    base = tmp_path / side
    lowers = build_layers(base, SPEC)
    upper, work = make_dirs(base / "upper", base / "work")
    paths = ["f", "g", "d", "d/inner", "d/sub", "keep"]

    def observe(m, phase, out):
        names = {e.name: e.inode() for e in os.scandir(m)}
        for p in paths:
            st = os.lstat(os.path.join(m, p))
            out[(p, phase)] = _relation(st.st_ino, os.path.join(lowers[0], p), os.path.join(upper, p))
            if "/" not in p:
                out[(p, phase, "d_ino")] = "same as st_ino" if names[p] == st.st_ino else \
                    f"d_ino {names[p]} != st_ino {st.st_ino}"

    out = {}
    with mount(lowers, upper, work) as m:
        observe(m, "before copy-up", out)
        with open(os.path.join(m, "f"), "a") as f:          # data copy-up
            f.write("appended\n")
        os.chmod(os.path.join(m, "g"), 0o600)               # metadata copy-up
        with open(os.path.join(m, "d", "new"), "w") as f:   # copies up the directory d
            f.write("new\n")
        os.utime(os.path.join(m, "d", "inner"))
        observe(m, "after copy-up", out)
    with mount(lowers, upper, work) as m:
        observe(m, "after remount", out)
    return out


def _compare(tmp_path, phases):
    k = _table(mount_kernel, tmp_path, "kernel")
    s = _table(mount_suf, tmp_path, "suf")
    diffs = [f"{key}: kernel {k[key]!r}, swiftunionfs {s.get(key)!r}"
             for key in sorted(k, key=str) if key[1] in phases and k[key] != s.get(key)]
    assert not diffs, "inode numbers differ from the kernel's:\n  " + "\n  ".join(diffs)


def test_ino_stable_across_copy_up(tmp_path):
    """While mounted: the number of a file and of a directory does not change when it
    is copied up (data or metadata), and readdir agrees with stat."""
    _compare(tmp_path, ("before copy-up", "after copy-up"))


@pytest.mark.xfail(strict=True, reason="known gap: no overlay.origin is recorded at copy-up, so after a remount a copied-up file reports its upper number (docs/design.md, 'Decided differently'); origin/index is issue 13")
def test_ino_stable_across_remount(tmp_path):
    """After an unmount and a new mount of the same upper, a copied-up file still
    reports the number it had before its copy-up, as on the kernel's overlay (which
    records the origin), so that a program that remembered it (tar, rsync, git's index,
    a backup) sees the same file."""
    _compare(tmp_path, ("after remount",))
