"""Open files whose name goes away (unlink, rename over): fstat, fchmod, ftruncate,
fsetxattr keep working on the open file, as on the kernel's overlay. apt and dpkg
rely on this (temp file opened, unlinked, then written and fstat'ed)."""
import os

from conftest import build_layers, make_dirs, mount_kernel, mount_suf


def scenario(m):
    out = []
    fd = os.open(os.path.join(m, "new"), os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    os.unlink(os.path.join(m, "new"))
    os.write(fd, b"hello")
    out.append(("fstat after unlink", os.fstat(fd).st_size))
    os.fchmod(fd, 0o640)
    os.ftruncate(fd, 2)
    st = os.fstat(fd)
    out.append(("fchmod+ftruncate after unlink", oct(st.st_mode), st.st_size))
    os.setxattr(fd, "user.k", b"v")
    out.append(("fgetxattr after unlink", os.getxattr(fd, "user.k")))
    os.close(fd)

    fd = os.open(os.path.join(m, "lower"), os.O_RDONLY)
    os.unlink(os.path.join(m, "lower"))
    out.append(("lower file read after unlink", os.fstat(fd).st_size, os.read(fd, 100)))
    os.close(fd)

    fd = os.open(os.path.join(m, "target"), os.O_RDWR)
    with open(os.path.join(m, "tmp"), "w") as f:
        f.write("replacement")
    os.rename(os.path.join(m, "tmp"), os.path.join(m, "target"))
    out.append(("old file after rename over it", os.fstat(fd).st_size, os.pread(fd, 100, 0)))
    os.close(fd)
    out.append(("name now", open(os.path.join(m, "target")).read()))
    out.append(("listing", sorted(os.listdir(m))))
    return out


def test_open_file_survives_its_name(tmp_path):
    results = {}
    for who, mount in (("kernel", mount_kernel), ("suf", mount_suf)):
        lowers = build_layers(tmp_path / who, [{"lower": "lower data\n", "target": "old target\n"}])
        upper, work = make_dirs(tmp_path / who / "u", tmp_path / who / "w")
        with mount(lowers, str(upper), str(work)) as m:
            results[who] = scenario(m)
        assert os.listdir(os.path.join(work, "work")) == [] or who == "kernel"
    assert results["suf"] == results["kernel"]
