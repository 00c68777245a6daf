"""Mount options through the real binary: every malformed option is refused before anything
is mounted -- exit status 2, exactly one line on stderr naming the problem -- and paths are
taken as the bytes given (escapes undone as the kernel's overlayfs undoes them).

The option parser itself is unit-tested over every option in Tests/MountOptionsTests
(swift test --filter MountOptionsTests); this file checks the binary end to end. It uses only
SUF_BIN from conftest.py and its own temp dirs, mount checks and clean-up."""

import os
import subprocess
import time

import pytest

from conftest import SUF_BIN

pytestmark = pytest.mark.suf_only

# Linux caps one argv string at MAX_ARG_STRLEN (32 pages, 128 KiB): a megabyte of options
# reaches the binary as several -o arguments. (The unit tests give the parser 1 MB lists.)
ARG_MAX_ONE = 128 * 1024 - 1


def _unescape_mountinfo(field):
    out, i = bytearray(), 0
    while i < len(field):
        if field[i:i + 1] == b"\\" and len(field) >= i + 4 and field[i + 1:i + 4].isdigit():
            out.append(int(field[i + 1:i + 4], 8))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return bytes(out)


def mounted(path):
    """Whether anything is mounted on `path` (bytes compared, as mountinfo holds them)."""
    want = os.path.realpath(os.fsencode(path))
    with open("/proc/self/mountinfo", "rb") as f:
        return any(_unescape_mountinfo(line.split()[4]) == want for line in f if line.strip())


def unmount(path):
    for cmd in (["fusermount3", "-u"], ["umount", "-l"]):
        if not mounted(path):
            return
        subprocess.run(cmd + [os.fsencode(path)], capture_output=True, timeout=20)


@pytest.fixture
def layers(tmp_path):
    d = {k: tmp_path / k for k in ("lower", "upper", "work", "mnt")}
    for p in d.values():
        p.mkdir()
    (d["lower"] / "f").write_text("lower f\n")
    d = {k: str(v) for k, v in d.items()}
    yield d
    unmount(d["mnt"])


def run(args, mnt, timeout=30):
    """Runs the binary in the foreground. If it mounts (it must not, on bad input), the mount is
    taken down at once and reported, rather than the test hanging on a serving daemon."""
    p = subprocess.Popen([SUF_BIN, *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, start_new_session=True)
    was_mounted = False
    deadline = time.monotonic() + timeout
    while p.poll() is None and time.monotonic() < deadline:
        if mounted(mnt):
            was_mounted = True
            unmount(mnt)
            break
        time.sleep(0.02)
    try:
        out, err = p.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate(timeout=20)
        err += b"\n<killed: still running>"
    return p.returncode, out, err, was_mounted or mounted(mnt)


def assert_refused(args, mnt, *words):
    rc, out, err, was_mounted = run(args, mnt)
    if mounted(mnt):
        unmount(mnt)
    lines = [l for l in err.decode("utf-8", "backslashreplace").split("\n") if l.strip()]
    assert not was_mounted, f"bad options still mounted something: {args!r:.300}"
    assert rc == 2, f"exit status {rc}, expected 2; stderr {err[:500]!r}"
    assert len(lines) == 1, f"expected exactly one line on stderr, got {len(lines)}: {lines!r:.1000}"
    assert lines[0].startswith("swiftunionfs: "), lines[0][:300]
    for w in words:
        assert w in lines[0], f"{w!r} not in {lines[0][:500]!r}"
    return lines[0]


# (name, extra -o items after lowerdir=..., words the error line must contain)
BAD = [
    ("uidmapping overflows 32 bits", "uidmapping=0:4294967295:2", ["uidmapping", "4294967294"]),
    ("gidmapping overflows on the stored side", "gidmapping=4294967295:0:1", ["gidmapping", "stored"]),
    ("uidmapping stored ranges overlap", "uidmapping=0:1000:10:5:2000:10", ["share stored ids"]),
    ("uidmapping shown ranges overlap", "uidmapping=0:1000:10:100:1005:10", ["share shown ids"]),
    ("uidmapping zero count", "uidmapping=0:1000:0", ["count of 0"]),
    ("uidmapping not triples", "uidmapping=0:1000", ["triples"]),
    ("uidmapping negative", "uidmapping=-1:1000:1", ["not a decimal id"]),
    ("uidmapping non-numeric", "uidmapping=root:1000:1", ["not a decimal id"]),
    ("uidmapping empty", "uidmapping=", ["uidmapping", "empty"]),
    ("timeout inf", "timeout=inf", ["timeout"]),
    ("timeout nan", "timeout=nan", ["timeout"]),
    ("timeout negative", "timeout=-1", ["timeout"]),
    ("timeout exponent", "timeout=1e3", ["timeout"]),
    ("timeout too large", "timeout=1000000001", ["timeout", "1000000000"]),
    ("squash_to_uid negative", "squash_to_uid=-1", ["squash_to_uid"]),
    ("squash_to_gid is (gid_t)-1", "squash_to_gid=4294967295", ["squash_to_gid", "4294967294"]),
    ("squash_to_uid hex", "squash_to_uid=0x10", ["squash_to_uid"]),
    ("fsync not a bit", "fsync=2", ["fsync", "0 or 1"]),
    ("noxattrs not a bit", "noxattrs=yes", ["noxattrs"]),
    ("threaded not a bit", "threaded=-1", ["threaded"]),
    ("value on a flag", "volatile=1", ["volatile", "takes no value"]),
    ("value on a passed-through flag", "allow_other=1", ["allow_other", "takes no value"]),
    ("empty value", "stats=", ["stats", "empty"]),
    ("missing value", "workdir", ["workdir", "needs a value"]),
    ("unknown key", "frobnicate=1", ["unknown option", "frobnicate"]),
    ("key compared as bytes", "UPPERDIR=/x", ["unknown option", "UPPERDIR"]),
    ("trailing backslash", "trace=/tmp/x\\", ["lone backslash"]),
    ("unterminated context quote", 'context="system_u:object_r', ["unterminated"]),
    ("conflicting sync settings", "volatile,fsync=1", ["fsync=1", "volatile", "conflicts"]),
    ("log empty", "log=", ["log"]),
    ("kernel option bad value", "index=1", ["index", "on or off"]),
]


@pytest.mark.parametrize("name,items,words", BAD, ids=[c[0] for c in BAD])
def test_bad_option_refused_before_mounting(layers, name, items, words):
    opts = f"lowerdir={layers['lower']},upperdir={layers['upper']},workdir={layers['work']},{items}"
    assert_refused(["-f", "-o", opts, layers["mnt"]], layers["mnt"], *words)
    assert os.listdir(layers["upper"]) == [], "upper was written"


def test_same_setting_twice_with_different_values(layers, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    opts = f"lowerdir={layers['lower']},upperdir={layers['upper']},workdir={layers['work']}"
    line = assert_refused(["-f", "-o", opts, "-o", f"upperdir={other}", layers["mnt"]], layers["mnt"],
                          "conflicts")
    assert f"upperdir={other}" in line and f"upperdir={layers['upper']}" in line


def test_mount_fuse3_form_with_bad_option(layers):
    # mount -t fuse.swiftunionfs SOURCE MOUNTPOINT -o OPTIONS runs: swiftunionfs SOURCE MOUNTPOINT -o OPTIONS
    assert_refused(["layers", layers["mnt"], "-o", f"lowerdir={layers['lower']},uidmapping=0:4294967295:2"],
                   layers["mnt"], "uidmapping")


def test_huge_options_refused_with_one_short_line(layers):
    # One argument as large as Linux allows, and a megabyte spread over several -o.
    big_number = "timeout=" + "9" * (ARG_MAX_ONE - len("timeout="))
    line = assert_refused(["-f", "-o", f"lowerdir={layers['lower']}", "-o", big_number, layers["mnt"]],
                          layers["mnt"], "timeout")
    assert len(line) < 2000, "the message repeats the whole value"
    chunks = ["-o", f"lowerdir={layers['lower']}"]
    for _ in range(8):
        chunks += ["-o", ",".join(["nodev"] * (ARG_MAX_ONE // 6))]
    chunks += ["-o", "zz=" + "z" * (ARG_MAX_ONE - 3)]
    line = assert_refused(["-f", *chunks, layers["mnt"]], layers["mnt"], "unknown option")
    assert len(line) < 2000


def test_huge_path_refused(layers):
    # A path longer than PATH_MAX parses; the check against the filesystem refuses it, one line.
    assert_refused(["-f", "-o", "lowerdir=/" + "a" * (ARG_MAX_ONE - 20), layers["mnt"]], layers["mnt"])


def serve_and_check(lower, upper, work, mnt, extra=""):
    """Mounts in the foreground with byte paths, checks the view and a write, unmounts."""
    esc = lambda p: os.fsencode(p).replace(b"\\", b"\\\\").replace(b":", b"\\:").replace(b",", b"\\,")
    opts = b"lowerdir=" + esc(lower) + b",upperdir=" + esc(upper) + b",workdir=" + esc(work) + extra.encode()
    p = subprocess.Popen([os.fsencode(SUF_BIN), b"-f", b"-o", opts, os.fsencode(mnt)], stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while not mounted(mnt):
            if p.poll() is not None:
                pytest.fail(f"exited {p.returncode} without mounting: {p.stderr.read()[:1000]!r}")
            assert time.monotonic() < deadline, "did not mount within 20 s"
            time.sleep(0.02)
        mb = os.fsencode(mnt)
        assert sorted(os.listdir(mb)) == [b"f"]
        with open(os.path.join(mb, b"f"), "rb") as f:
            assert f.read() == b"lower f\n"
        with open(os.path.join(mb, b"new"), "wb") as f:
            f.write(b"new\n")
    finally:
        unmount(mnt)
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=20)
    with open(os.path.join(os.fsencode(upper), b"new"), "rb") as f:
        assert f.read() == b"new\n", "the write did not land in upperdir"


def make_tree(base, name):
    base = os.fsencode(str(base))
    paths = {k: os.path.join(base, name + k.encode()) for k in ("lower", "upper", "work", "mnt")}
    for p in paths.values():
        os.mkdir(p)
    with open(os.path.join(paths["lower"], b"f"), "wb") as f:
        f.write(b"lower f\n")
    return paths


def test_escaped_colon_and_comma_in_every_layer_path(tmp_path):
    # upperdir= and workdir= take lowerdir='s escapes (\: \, \\), as the kernel's overlayfs does.
    t = make_tree(tmp_path, b"a:b,c\\d ")
    try:
        serve_and_check(t["lower"], t["upper"], t["work"], t["mnt"], ",,volatile")
    finally:
        unmount(t["mnt"])


def test_non_utf8_byte_and_escaped_colon_in_every_layer_path(tmp_path):
    t = make_tree(tmp_path, b"x\xff\xe9:y")
    try:
        serve_and_check(t["lower"], t["upper"], t["work"], t["mnt"])
    finally:
        unmount(t["mnt"])


def test_containers_storage_options_still_mount(layers):
    opts = (f"nodev,lowerdir={layers['lower']},upperdir={layers['upper']},workdir={layers['work']},,volatile,"
            "uidmapping=:0:100000:65536,gidmapping=:0:100000:65536,context=\"system_u:object_r:container_file_t:s0:c1,c2\"")
    p = subprocess.Popen([SUF_BIN, "-f", "-o", opts, layers["mnt"]], stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while not mounted(layers["mnt"]):
            if p.poll() is not None:
                pytest.fail(f"exited {p.returncode}: {p.stderr.read()[:1000]!r}")
            assert time.monotonic() < deadline
            time.sleep(0.02)
        st = os.stat(os.path.join(layers["mnt"], "f"))
        assert (st.st_uid, st.st_gid) == (100000, 100000), "stored 0 shows as 100000"
    finally:
        unmount(layers["mnt"])
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=20)


@pytest.mark.parametrize("sub", ["inspect", "run"])
def test_subcommands_refuse_bad_options_the_same_way(layers, sub):
    opts = f"lowerdir={layers['lower']},upperdir={layers['upper']},workdir={layers['work']},uidmapping=0:4294967295:2"
    args = [sub, "-o", opts] + (["f"] if sub == "inspect" else ["--", "/bin/true"])
    rc, out, err, _ = run(args, layers["mnt"])
    lines = [l for l in err.decode("utf-8", "backslashreplace").split("\n") if l.strip()]
    assert rc == 2, (rc, err[:500])
    assert len(lines) == 1 and "uidmapping" in lines[0], lines
    assert os.listdir(layers["upper"]) == []
