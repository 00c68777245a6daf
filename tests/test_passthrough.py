"""FUSE passthrough (passthrough=auto|on|off): with a swiftunionfs built against libfuse 3.16+
($SUF_BIN_PASSTHROUGH; scripts/test builds one against a private libfuse 3.17, default path
.build-fuse317/release/swiftunionfs), as root, the kernel reads and writes the backing file of
an upper-layer file (and of every file of a read-only union) itself.

Each scenario runs next to the kernel's overlay (the oracle), and the daemon's statistics say
whether the data went through it: with passthrough no READ or WRITE request reaches the daemon,
with passthrough=off (the same binary) they do, so that the checks can fail. Without the binary
the tests skip, which under CI=true / --strict is a failure."""

import mmap
import os

import pytest

from conftest import REPO, File, build_layers, differential, make_dirs, mount_kernel, mount_suf
from harness import binary, mounts

MiB = 1 << 20


def passthrough_bin():
    path = os.environ.get("SUF_BIN_PASSTHROUGH") or os.path.join(REPO, ".build-fuse317", "release", "swiftunionfs")
    if binary.IS_FUSE_OVERLAYFS:
        pytest.skip("harness mode: passthrough is swiftunionfs's")
    if not os.access(path, os.X_OK):
        pytest.skip(f"no swiftunionfs built against libfuse 3.16+ at {path} "
                    "(set SUF_BIN_PASSTHROUGH; scripts/test builds it)")
    return path


@pytest.fixture
def pt_bin():
    return passthrough_bin()


def data(n, seed):
    return bytes((i * 131 + seed * 7 + (i >> 9)) & 0xFF for i in range(n))


stats_of, count = mounts.read_stats, mounts.request_count


def file_data_scenario(m):
    """Reads and writes of created, copied-up and lower files; what a user checks."""
    out = []
    p = lambda rel: os.path.join(m, rel)  # noqa: E731
    # a new file: written, read back, size and content
    with open(p("new"), "wb") as f:
        f.write(data(3 * MiB + 17, 1))
    with open(p("new"), "rb") as f:
        out.append(("new read", f.read() == data(3 * MiB + 17, 1)))
    out.append(("new size", os.stat(p("new")).st_size))
    # a lower file copied up by a write open, then written in the middle and past its end
    before = os.stat(p("lower.bin"))
    fd = os.open(p("lower.bin"), os.O_RDWR)
    os.pwrite(fd, b"X" * 5000, 4096)
    os.pwrite(fd, b"tail", 2 * MiB)
    out.append(("fstat after writes", os.fstat(fd).st_size))
    os.close(fd)
    st = os.stat(p("lower.bin"))
    out.append(("stat after writes", st.st_size, st.st_mtime_ns > before.st_mtime_ns))
    with open(p("lower.bin"), "rb") as f:
        got = f.read()
    want = bytearray(data(MiB, 2))
    want[4096:4096 + 5000] = b"X" * 5000
    want += b"\0" * (2 * MiB - len(want)) + b"tail"
    out.append(("copied-up content", got == bytes(want)))
    # truncate through an open file, then append
    fd = os.open(p("lower.bin"), os.O_RDWR | os.O_APPEND)
    os.ftruncate(fd, 1000)
    os.write(fd, b"appended")
    os.close(fd)
    with open(p("lower.bin"), "rb") as f:
        out.append(("truncated+appended", f.read() == data(MiB, 2)[:1000] + b"appended"))
    # a shared writable mapping of the copied-up file, seen by read(2) of another open
    fd = os.open(p("lower.bin"), os.O_RDWR)
    with mmap.mmap(fd, 1008) as mm:
        mm[0:4] = b"MMAP"
        mm.flush()
    os.close(fd)
    with open(p("lower.bin"), "rb") as f:
        out.append(("mmap write", f.read(8)))
    # an untouched lower file, read
    with open(p("other.bin"), "rb") as f:
        out.append(("lower read", f.read() == data(200000, 3)))
    return out


def layers_spec():
    return [{"lower.bin": File(data(MiB, 2)), "other.bin": File(data(200000, 3))}]


def test_file_data_matches_the_kernel_and_bypasses_the_daemon(tmp_path, pt_bin):
    # same outcomes as the kernel's overlay, also after remounts (differential)
    kres, _ = differential(tmp_path / "diff", layers_spec(), lambda r: r("scenario", file_data_scenario, r.root),
                           suf_mount_kw={"bin": pt_bin})
    assert kres[0][1][0] == "ok", kres
    # and where the data went
    lowers = build_layers(tmp_path / "s", layers_spec())
    upper, work = make_dirs(tmp_path / "s" / "u", tmp_path / "s" / "w")
    stats = tmp_path / "stats.json"
    with mount_suf(lowers, str(upper), str(work), extra_opts=["passthrough=on", f"stats={stats}"], bin=pt_bin) as m:
        res = file_data_scenario(m)
    assert res == kres[0][1][1]
    s = stats_of(stats)
    assert s["passthrough"]["opens"] >= 6, s
    # The created and copied-up files (4 MiB read back) never sent a READ or WRITE; the lower
    # file (a writable union's lower files are daemon-served until copied up) is the only one
    # read by the daemon: its 200,000 bytes, in whole pages.
    assert count(s, "write") == 0, s
    assert s["bytes_read"] < 200000 + 65536, s


def test_the_same_binary_without_passthrough_serves_the_data(tmp_path, pt_bin):
    """The control: passthrough=off sends the reads and writes to the daemon."""
    lowers = build_layers(tmp_path / "s", layers_spec())
    upper, work = make_dirs(tmp_path / "s" / "u", tmp_path / "s" / "w")
    stats = tmp_path / "stats.json"
    with mount_suf(lowers, str(upper), str(work), extra_opts=["passthrough=off", f"stats={stats}"], bin=pt_bin) as m:
        file_data_scenario(m)
    s = stats_of(stats)
    assert s["passthrough"]["opens"] == 0
    assert count(s, "write") > 0 and s["bytes_read"] > 3 * MiB, s


def test_read_only_union_passes_lower_files_through(tmp_path, pt_bin):
    lowers = build_layers(tmp_path / "s", [{"a.bin": File(data(2 * MiB, 4))}, {"b.bin": File(data(MiB, 5))}])
    stats = tmp_path / "stats.json"
    with mount_suf(lowers, extra_opts=[f"stats={stats}"], bin=pt_bin) as m:
        for name, want in (("a.bin", data(2 * MiB, 4)), ("b.bin", data(MiB, 5))):
            with open(os.path.join(m, name), "rb") as f:
                assert f.read() == want
            with open(os.path.join(m, name), "rb") as f:
                with mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as mm:
                    assert mm[-10:] == want[-10:]
    s = stats_of(stats)
    assert s["passthrough"]["opens"] >= 4 and s["passthrough"]["backing_files"] >= 2, s
    assert count(s, "read") == 0 and s["bytes_read"] == 0, s


def open_across_copy_up(m):
    """A read-only open from before a copy-up keeps reading the lower data (overlay semantics);
    a writer opened meanwhile, and every open after, see the upper file."""
    out = []
    p = os.path.join(m, "f")
    ro = os.open(p, os.O_RDONLY)
    out.append(("ro before", os.pread(ro, 20, 0)))
    rw = os.open(p, os.O_RDWR)
    os.pwrite(rw, b"NEW", 0)
    out.append(("rw sees", os.pread(rw, 20, 0)))
    out.append(("ro after copy-up", os.pread(ro, 20, 0)))
    ro2 = os.open(p, os.O_RDONLY)
    out.append(("new ro", os.pread(ro2, 20, 0)))
    for fd in (ro, rw, ro2):
        os.close(fd)
    # all closed: the node is free to change mode; it is now an upper file
    fd = os.open(p, os.O_RDWR)
    os.pwrite(fd, b"again", 10)
    os.close(fd)
    with open(p, "rb") as f:
        out.append(("final", f.read()))
    return out


def test_open_files_across_a_copy_up(tmp_path, pt_bin):
    results = {}
    for who, mount, kw in (("kernel", mount_kernel, {}), ("suf", mount_suf, {"bin": pt_bin})):
        lowers = build_layers(tmp_path / who, [{"f": "lower data of f\n"}])
        upper, work = make_dirs(tmp_path / who / "u", tmp_path / who / "w")
        with mount(lowers, str(upper), str(work), **kw) as m:
            results[who] = open_across_copy_up(m)
    assert results["suf"] == results["kernel"]


def test_passthrough_on_is_reported(tmp_path, pt_bin):
    lowers = build_layers(tmp_path / "s", [{"f": "x"}])
    with mount_suf(lowers, args=("-v",), extra_opts=["passthrough=on"], bin=pt_bin) as m:
        assert "passthrough: on (libfuse 3." in m.stderr(), m.stderr()
        assert "every file" in m.stderr()


def test_passthrough_on_needs_a_libfuse_with_it(tmp_path):
    """The default build (Debian 12's libfuse 3.14) refuses passthrough=on before mounting."""
    import subprocess
    out = subprocess.run([binary.SUF_BIN, "--version"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0
    lowers = build_layers(tmp_path / "s", [{"f": "x"}])
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = subprocess.run([binary.SUF_BIN, "-o", f"lowerdir={lowers[0]},passthrough=on", str(mnt)],
                       capture_output=True, text=True, timeout=30)
    if r.returncode == 0:
        # a binary built against libfuse 3.16+: then it mounted; unmount and say so
        subprocess.run(["fusermount3", "-u", str(mnt)], timeout=30)
        pytest.skip(f"{binary.SUF_BIN} is built with passthrough support")
    assert r.returncode == 2 and "passthrough=on" in r.stderr and r.stderr.count("\n") == 1, r.stderr
