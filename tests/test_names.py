"""Names are bytes: swiftunionfs against the kernel's overlayfs on the same layers.

File names and symlink targets are any bytes but NUL ('/' too, in names).  Each test
builds layers with such names (always through bytes paths: nothing here decodes a name),
does the same operations on a kernel overlay and on swiftunionfs, each with its own upper
over the same lowers, and compares the merged views, the results, and what each wrote to
its upper.  Then: the names as `inspect` and the trace print them (escaped losslessly:
printable UTF-8 as is, `\\` for a backslash, `\\xHH` for every other byte), and a daemon
starved of file descriptors, which may fail operations but never show a deleted name or
remove a full directory.

Run:  SUF_BIN=$PWD/.build/release/swiftunionfs python3 -m pytest -q tests/test_names.py
"""

import contextlib
import errno
import json
import os
import random
import re
import stat
import subprocess
import tempfile
import threading
import time

import pytest

from conftest import (MOUNT_TIMEOUT, SUF_BIN, SufMount, is_mounted, make_dirs, mount_kernel,
                      mount_suf, overlay_opts, start_suf, stop_suf)

NFC = "caf\u00e9".encode()             # b"caf\xc3\xa9"
NFD = "cafe\u0301".encode()            # b"cafe\xcc\x81": the same text, other bytes
LATIN1 = "r\u00e9pertoire".encode("latin-1")          # b"r\xe9pertoire": not UTF-8
LATIN1_FILE = "f\u00eat\u00e9-\u00e0-l'\u00e9t\u00e9".encode("latin-1")
LATIN1_TARGET = b"../" + "\u00e9t\u00e9".encode("latin-1") + b"/\xff\xfe\x80-cible"

# --------------------------------------------------------------------------
# small helpers (bytes paths only)
# --------------------------------------------------------------------------


def j(*parts):
    return os.path.join(*[os.fsencode(p) for p in parts])


def put(root, rel, content=b"", mode=0o644):
    p = j(root, rel)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    with open(p, "wb") as f:
        f.write(content)
    os.chmod(p, mode)


def mkd(root, rel):
    os.makedirs(j(root, rel), exist_ok=True)


def link(root, rel, target):
    p = j(root, rel)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    os.symlink(target, p)


def whiteout(root, rel):
    p = j(root, rel)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    os.mknod(p, stat.S_IFCHR | 0o000, 0)


def view(root, opaque=False):
    """relpath (bytes) -> what is there: type, mode, content or target. Never follows
    symlinks; with opaque=True directories say whether they carry an opaque mark."""
    out = {}

    def walk(d, rel):
        for name in sorted(os.listdir(d)):
            p, r = os.path.join(d, name), (rel + b"/" + name if rel else name)
            st = os.lstat(p)
            mode = oct(stat.S_IMODE(st.st_mode))
            if stat.S_ISDIR(st.st_mode):
                out[r] = ("dir", mode) + ((is_opaque(p),) if opaque else ())
                walk(p, r)
            elif stat.S_ISREG(st.st_mode):
                with open(p, "rb") as f:
                    out[r] = ("file", mode, f.read())
            elif stat.S_ISLNK(st.st_mode):
                out[r] = ("symlink", os.readlink(p))
            elif stat.S_ISCHR(st.st_mode):
                out[r] = ("chr", st.st_rdev)
            else:
                out[r] = (stat.S_IFMT(st.st_mode),)

    walk(j(root), b"")
    return out


def is_opaque(p):
    for x in ("trusted.overlay.opaque", "user.overlay.opaque"):
        try:
            if os.getxattr(p, x, follow_symlinks=False) == b"y":
                return True
        except OSError:
            pass
    return False


def read(p):
    with open(p, "rb") as f:
        return f.read()


def append(p, data):
    with open(p, "ab") as f:
        return f.write(data)


def outcome(fn, *args):
    """A result that compares across the two mounts: the value or the errno's name."""
    try:
        return ("ok", fn(*args))
    except OSError as e:
        return ("err", errno.errorcode.get(e.errno, e.errno))


def undisplay(text):
    """The bytes an escaped display string stands for (the documented rule)."""
    out, i = bytearray(), 0
    while i < len(text):
        c = text[i]
        if c != "\\":
            out += c.encode()
            i += 1
        elif text[i + 1] == "\\":
            out += b"\\"
            i += 2
        elif text[i + 1] == "x":
            out.append(int(text[i + 2:i + 4], 16))
            i += 4
        else:
            raise ValueError(f"not an escape at {i}: {text!r}")
    return bytes(out)


def diff(a, b, limit=20):
    lines = []
    for k in sorted(set(a) | set(b)):
        if a.get(k) != b.get(k):
            lines.append(f"{k!r}: kernel {a.get(k)!r} vs suf {b.get(k)!r}")
    return "\n  ".join(lines[:limit] + ([f"... {len(lines) - limit} more"] if len(lines) > limit else []))


@contextlib.contextmanager
def both(tmp_path, lowers, upper_build=None):
    """The kernel's overlay and swiftunionfs over the same lowers, each with an upper
    of its own (built by upper_build(upper) before mounting). Yields ((kmnt, kupper),
    (smnt, supper))."""
    uk, wk, us, ws = make_dirs(tmp_path / "uk", tmp_path / "wk", tmp_path / "us", tmp_path / "ws")
    if upper_build:
        upper_build(uk)
        upper_build(us)
    with mount_kernel(lowers, uk, wk) as k, mount_suf(lowers, us, ws) as s:
        yield (k, uk), (s, us)


def assert_same(k, s, what, opaque=False):
    vk, vs = view(k, opaque), view(s, opaque)
    assert vk == vs, f"{what} differs:\n  {diff(vk, vs)}"
    return vs


# --------------------------------------------------------------------------
# NFC / NFD twins
# --------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_nfc_nfd_twins(tmp_path):
    """Two spellings of "café" are two files: both listed, each opens its own data,
    a twin in a lower layer is not shadowed by the other spelling above it, and
    removing one leaves a whiteout of exactly its bytes."""
    l1, l2 = make_dirs(tmp_path / "l1", tmp_path / "l2")
    put(l1, NFC, b"composed\n")
    put(l1, NFD, b"decomposed\n")
    put(l1, b"d/" + NFC, b"top composed\n")
    put(l2, b"d/" + NFD, b"bottom decomposed\n")
    with both(tmp_path, [l1, l2]) as ((k, uk), (s, us)):
        for m in (k, s):
            assert sorted(os.listdir(j(m))) == sorted([NFC, NFD, b"d"])
            assert sorted(os.listdir(j(m, b"d"))) == sorted([NFC, NFD])
            assert read(j(m, NFC)) == b"composed\n"
            assert read(j(m, NFD)) == b"decomposed\n"
            assert read(j(m, b"d/" + NFD)) == b"bottom decomposed\n"
            assert os.stat(j(m, NFC)).st_ino != os.stat(j(m, NFD)).st_ino
        assert_same(k, s, "merged view with twins")
        for m in (k, s):
            os.unlink(j(m, b"d/" + NFC))
            append(j(m, NFD), b"+")
        for m in (k, s):
            assert os.listdir(j(m, b"d")) == [NFD]
            assert read(j(m, b"d/" + NFD)) == b"bottom decomposed\n"
            assert read(j(m, NFC)) == b"composed\n"
        assert_same(k, s, "merged view after unlink and copy-up")
        assert view(us) == view(uk), "uppers differ:\n  " + diff(view(uk), view(us))
    assert view(us)[b"d/" + NFC] == ("chr", 0)
    assert b"d/" + NFD not in view(us)
    assert view(us)[NFD][2] == b"decomposed\n+" and NFC not in view(us)


# --------------------------------------------------------------------------
# every byte
# --------------------------------------------------------------------------

EVERY = [b for b in range(1, 256) if b != ord("/")]


def byte_names():
    """A one-byte name for every byte but '/' ('.' alone is not a name: '...' then),
    the byte between two letters, and one 254-byte name holding them all."""
    names = [bytes([b]) if b != ord(".") else b"..." for b in EVERY]
    names += [b"n" + bytes([b]) + b"n" for b in EVERY]
    return names + [bytes(EVERY)]


@pytest.mark.timeout(120)
def test_every_byte_in_names(tmp_path):
    names = byte_names()
    l1, l2 = make_dirs(tmp_path / "l1", tmp_path / "l2")
    for i, n in enumerate(names):
        put(l1 if i % 2 else l2, b"d/" + n, b"content of " + n)
    hidden = names[::7]

    def upper(u):
        for n in hidden:
            whiteout(u, b"d/" + n)

    with both(tmp_path, [l1, l2], upper) as ((k, uk), (s, us)):
        shown = sorted(set(names) - set(hidden))
        for m in (k, s):
            assert sorted(os.listdir(j(m, b"d"))) == shown
            for n in shown:                         # lookup and content, name by name
                assert read(j(m, b"d/" + n)) == b"content of " + n, n
            for n in hidden:
                with pytest.raises(FileNotFoundError):
                    os.lstat(j(m, b"d/" + n))
        assert_same(k, s, "every-byte directory")


# --------------------------------------------------------------------------
# 255-byte names of multi-byte characters
# --------------------------------------------------------------------------

LONG = [
    "\u00e9".encode() * 127 + b"a",        # 2-byte characters
    "\u20ac".encode() * 85,                # 3-byte
    "\U0001f600".encode() * 63 + b"abc",   # 4-byte
    "e\u0301".encode() * 85,               # NFD: 3 bytes a character
    b"\xe9" * 255,                         # Latin-1
]


@pytest.mark.timeout(60)
def test_255_byte_multibyte_names(tmp_path):
    assert all(len(n) == 255 for n in LONG)
    l1, l2 = make_dirs(tmp_path / "l1", tmp_path / "l2")
    for i, n in enumerate(LONG):
        put(l2, n, n[:40])
        mkd(l1, b"dir-" + bytes([0x30 + i]))
        put(l2, b"dir-" + bytes([0x30 + i]) + b"/" + n, b"deep")
    results = {}
    with both(tmp_path, [l1, l2]) as ((k, uk), (s, us)):
        for side, m in (("kernel", k), ("suf", s)):
            r = results[side] = []
            r.append(outcome(lambda: sorted(x for x in os.listdir(j(m)) if len(x) == 255)))
            for i, n in enumerate(LONG):
                r.append(outcome(read, j(m, n)))
                r.append(outcome(append, j(m, n), b"+"))                              # copy-up
                sub = b"dir-" + bytes([0x30 + i]) + b"/"
                r.append(outcome(os.rename, j(m, sub + n), j(m, sub + LONG[(i + 1) % len(LONG)])))
                r.append(outcome(os.unlink, j(m, sub + LONG[(i + 1) % len(LONG)])))   # whiteout
            r.append(outcome(os.lstat, j(m, LONG[1] + b"x")))                         # 256 bytes
            r.append(outcome(os.mkdir, j(m, b"e" * 256)))
        assert results["kernel"] == results["suf"]
        assert results["suf"][-1] == ("err", "ENAMETOOLONG")
        assert_same(k, s, "long names")
        assert view(us) == view(uk), "uppers differ:\n  " + diff(view(uk), view(us))
    assert view(us)[LONG[0]][2] == LONG[0][:40] + b"+"
    assert view(us)[b"dir-0/" + LONG[0]] == ("chr", 0)      # the renamed lower file's old name


# --------------------------------------------------------------------------
# non-UTF-8 names and symlink targets through every change
# --------------------------------------------------------------------------


def latin1_layers(tmp_path):
    l1, l2 = make_dirs(tmp_path / "l1", tmp_path / "l2")
    put(l2, LATIN1 + b"/" + LATIN1_FILE, b"lower data\n")
    put(l2, LATIN1 + b"/chm\xf6d", b"mode me\n", 0o600)
    os.setxattr(j(l2, LATIN1 + b"/chm\xf6d"), b"user.caf\xe9", b"\xff\x00\xfe")   # copy-up carries it
    put(l2, LATIN1 + b"/gone-\xe9", b"delete me\n")
    link(l2, LATIN1 + b"/lien", LATIN1_TARGET)
    link(l1, LATIN1 + b"/abs-\xff", b"/nowhere/\xe9\xe8\x80\xff")
    put(l1, LATIN1 + b"/sous-\xe9/f", b"in a Latin-1 subdir\n")
    put(l1, b"ascii/\xc0\xc1\xf5\xf6\xf7\xf8\xf9\xfa\xfb\xfc\xfd\xfe\xff", b"bytes never in UTF-8\n")
    return [l1, l2]


@pytest.mark.timeout(90)
def test_non_utf8_names_and_targets(tmp_path):
    lowers = latin1_layers(tmp_path)
    d = LATIN1 + b"/"
    ops = [
        ("list", lambda m: sorted(os.listdir(j(m, LATIN1)))),
        ("lookup", lambda m: stat.S_IFMT(os.lstat(j(m, d + LATIN1_FILE)).st_mode)),
        ("read", lambda m: read(j(m, d + LATIN1_FILE))),
        ("readlink", lambda m: os.readlink(j(m, d + b"lien"))),
        ("readlink abs", lambda m: os.readlink(j(m, d + b"abs-\xff"))),
        ("chmod (copy-up)", lambda m: os.chmod(j(m, d + b"chm\xf6d"), 0o640)),
        ("append (copy-up)", lambda m: append(j(m, d + LATIN1_FILE), b"appended\n")),
        ("lchown symlink (copy-up)", lambda m: os.chown(j(m, d + b"lien"), 0, 0, follow_symlinks=False)),
        ("rename", lambda m: os.rename(j(m, d + LATIN1_FILE), j(m, d + b"renomm\xe9-\xe8"))),
        ("rename dir", lambda m: os.rename(j(m, d + b"sous-\xe9"), j(m, d + b"autre-\xe9"))),
        ("unlink", lambda m: os.unlink(j(m, d + b"gone-\xe9"))),
        ("create", lambda m: append(j(m, d + b"nouveau-\xe0"), b"new\n")),
        ("symlink", lambda m: os.symlink(b"\xfe\xff/" + LATIN1_TARGET, j(m, d + b"lien2-\xe9"))),
        ("setxattr", lambda m: os.setxattr(j(m, d + b"nouveau-\xe0"), b"user.\xe9t\xe9-" + NFD, b"v")),
        ("listxattr", lambda m: sorted(os.fsencode(x) for x in os.listxattr(j(m, d + b"nouveau-\xe0")))),
        ("getxattr NFC", lambda m: os.getxattr(j(m, d + b"nouveau-\xe0"), b"user.\xe9t\xe9-" + NFC)),
        ("copied xattr", lambda m: os.getxattr(j(m, d + b"chm\xf6d"), b"user.caf\xe9")),
        ("list after", lambda m: sorted(os.listdir(j(m, LATIN1)))),
        ("readlink after", lambda m: os.readlink(j(m, d + b"lien"))),
        ("old name", lambda m: os.lstat(j(m, d + LATIN1_FILE))),
        ("ascii dir", lambda m: read(j(m, b"ascii/\xc0\xc1\xf5\xf6\xf7\xf8\xf9\xfa\xfb\xfc\xfd\xfe\xff"))),
    ]
    with both(tmp_path, lowers) as ((k, uk), (s, us)):
        rk = [(name, outcome(fn, k)) for name, fn in ops]
        rs = [(name, outcome(fn, s)) for name, fn in ops]
        assert rk == rs, "\n".join(f"{a} vs {b}" for a, b in zip(rk, rs) if a != b)
        assert dict(rs)["readlink"] == ("ok", LATIN1_TARGET)
        assert_same(k, s, "merged view")
        vk, vs = view(uk, opaque=True), view(us, opaque=True)
        assert vk == vs, "uppers differ:\n  " + diff(vk, vs)
    up = view(us)
    assert up[d + b"lien"] == ("symlink", LATIN1_TARGET)          # copied up byte for byte
    assert up[d + b"chm\xf6d"] == ("file", "0o640", b"mode me\n")
    assert up[d + b"renomm\xe9-\xe8"][2] == b"lower data\nappended\n"
    assert up[d + LATIN1_FILE] == ("chr", 0) and up[d + b"gone-\xe9"] == ("chr", 0)
    assert not any(b".wh." in p for p in up)
    assert os.getxattr(j(us, d + b"chm\xf6d"), b"user.caf\xe9") == b"\xff\x00\xfe"
    assert [os.fsencode(x) for x in os.listxattr(j(us, d + b"nouveau-\xe0"))] == [b"user.\xe9t\xe9-" + NFD]
    # The kernel reads what swiftunionfs wrote, names and targets unchanged.
    with mount_kernel(lowers, us, tmp_path / "ws") as k2, mount_suf(lowers, tmp_path / "uk", tmp_path / "wk") as s2:
        assert_same(k2, s2, "each over the other's upper")


# --------------------------------------------------------------------------
# inspect and the trace print names losslessly
# --------------------------------------------------------------------------


def run_inspect(lowers, upper, *args):
    opts = "lowerdir=" + ":".join(str(l) for l in lowers) + (f",upperdir={upper}" if upper else "")
    r = subprocess.run([SUF_BIN, "inspect", "-o", opts, *args], capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    return r.stdout.decode("utf-8")         # strict: the output is valid UTF-8


TREE_ROW = re.compile(r"^  (\S+)\s+(.*?)  \[(.*)\]$")


def tree_rows(out):
    rows = {}
    for line in out.splitlines()[1:]:
        m = TREE_ROW.match(line)
        if m:
            rows[undisplay(m.group(2))] = m.group(1)
    return rows


@pytest.mark.timeout(60)
@pytest.mark.suf_only
def test_inspect_shows_non_utf8_names_escaped(tmp_path):
    """`inspect --tree` lists every name of a directory escaped so that it decodes back
    to its bytes; a symlink's non-UTF-8 target too. The directory is asked for by an
    ASCII path: the names are in the layers."""
    lowers = latin1_layers(tmp_path)
    os.rename(j(lowers[1], LATIN1), j(lowers[1], b"latin"))
    os.rename(j(lowers[0], LATIN1), j(lowers[0], b"latin"))
    put(lowers[0], b"latin/.wh.oci-\xe9")
    put(lowers[1], b"latin/oci-\xe9", b"hidden by an OCI whiteout")
    put(lowers[1], b"latin/back\\slash-\\xe9", b"a name that looks escaped")
    put(lowers[1], b"latin/nl\nand\ttab", b"control bytes")
    upper = make_dirs(tmp_path / "u")[0]
    whiteout(upper, b"latin/gone-\xe9")
    rows = tree_rows(run_inspect(lowers, upper, "--tree", "latin"))
    assert rows == {
        LATIN1_FILE: "visible", b"chm\xf6d": "visible", b"lien": "visible", b"abs-\xff": "visible",
        b"sous-\xe9": "visible", b"gone-\xe9": "whited-out", b"oci-\xe9": "whited-out",
        b"back\\slash-\\xe9": "visible", b"nl\nand\ttab": "visible",
    }
    out = run_inspect(lowers, upper, "latin/lien")
    link_lines = [l for l in out.splitlines() if "symlink -> " in l]
    assert link_lines, out
    shown = link_lines[0].split("symlink -> ", 1)[1].split("  ")[0]
    assert undisplay(shown) == LATIN1_TARGET, out


@pytest.mark.timeout(60)
@pytest.mark.suf_only
def test_inspect_takes_a_non_utf8_path(tmp_path):
    """The PATH argument is bytes too: a Latin-1 path is found, and printed back escaped."""
    lowers = latin1_layers(tmp_path)
    path = LATIN1 + b"/" + LATIN1_FILE
    out = run_inspect(lowers, None, path)
    assert undisplay(out.splitlines()[0]) == b"/" + path, out
    assert "result: visible: from lower 2" in out, out


TRACE_LINE = re.compile(r"^\S+ \[\d+\] (event \S+|\S+) (.*)$")


def text_trace_paths(text):
    """(operation, path bytes) of every operation and event line of a text trace."""
    out = []
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = TRACE_LINE.match(line)
        assert m, f"unparsable trace line {line!r}"
        op, rest = m.groups()
        if rest.startswith('"'):
            shown, _ = json.JSONDecoder().raw_decode(rest)
        else:
            shown = rest.split(" ", 1)[0]
        out.append((op, undisplay(shown)))
    return out


TRACE_NAMES = [LATIN1_FILE, NFD, NFC, b"back\\slash\\x41", b"new\nline", b"tab\tand space", b"\x01\x7f\xc2\x85"]


@pytest.mark.timeout(60)
@pytest.mark.suf_only
@pytest.mark.parametrize("fmt", ["text", "json"])
def test_trace_escapes_names_losslessly(tmp_path, fmt):
    l1 = make_dirs(tmp_path / "l1")[0]
    for n in TRACE_NAMES:
        put(l1, b"d/" + n, b"x")
    u, w = make_dirs(tmp_path / "u", tmp_path / "w")
    trace = tmp_path / "trace.log"
    with mount_suf([l1], u, w, extra_opts=(f"trace={trace}", f"trace_format={fmt}")) as m:
        for n in TRACE_NAMES:
            os.lstat(j(m, b"d/" + n))
        append(j(m, b"d/" + LATIN1_FILE), b"y")              # a copy-up event
        os.unlink(j(m, b"d/" + NFD))                        # a whiteout event
    raw = trace.read_bytes()
    text = raw.decode("utf-8")                               # strict: valid UTF-8
    if fmt == "json":
        recs = [json.loads(l) for l in text.splitlines() if l.strip()]   # one record a line
        seen = [(r.get("op") or "event " + r["event"], undisplay(r["path"])) for r in recs if "path" in r]
    else:
        seen = text_trace_paths(text)
    for n in TRACE_NAMES:
        assert ("lookup", b"/d/" + n) in seen, (n, seen)
    assert ("event copy-up", b"/d/" + LATIN1_FILE) in seen, seen
    assert ("unlink", b"/d/" + NFD) in seen and ("event whiteout", b"/d/" + NFD) in seen, seen
    assert ("lookup", b"/d/" + NFC) in seen and ("unlink", b"/d/" + NFC) not in seen


# --------------------------------------------------------------------------
# a daemon starved of file descriptors
# --------------------------------------------------------------------------

NOFILE = 64


def start_with_nofile(limit, lowers, upper, work, tmp_path):
    """swiftunionfs in the foreground under a hard RLIMIT_NOFILE of LIMIT (the daemon
    cannot raise it). Stop it with conftest's stop_suf."""
    import resource

    def limit_fds():
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    mnt = tempfile.mkdtemp(prefix="mnt-", dir=str(tmp_path))
    return start_suf(lowers, upper, work, mnt=mnt, preexec_fn=limit_fds)


def starved_layers(tmp_path, dirs):
    """Merged directories with whiteouts of every kind, an opaque one, lower-only ones,
    one that is empty only because everything in it is whited out, and an empty one."""
    l1, l2, u, w = make_dirs(tmp_path / "l1", tmp_path / "l2", tmp_path / "u", tmp_path / "w")
    for i in range(dirs):
        d = b"d%d/" % i
        for f in range(8):
            put(l2, d + b"f%d" % f, b"l2 %d %d" % (i, f))
        whiteout(l1, d + b"f0")             # (no OCI .wh. files: the kernel, the oracle
        whiteout(l1, d + b"f1")             # at the end, takes them for ordinary files)
        put(l1, d + b"g", b"l1")
        whiteout(u, d + b"f2")
        put(u, d + b"u\xe9", b"upper")
    for i in range(dirs // 2):
        for f in range(4):
            put(l2, b"lower-only%d/a%d" % (i, f), b"a")
    put(l2, b"opaque/hidden", b"hidden")
    put(u, b"opaque/own", b"own")
    os.setxattr(j(u, b"opaque"), "trusted.overlay.opaque", b"y")
    put(l2, b"all-gone/x")
    put(l2, b"all-gone/y")
    whiteout(u, b"all-gone/x")
    whiteout(u, b"all-gone/y")
    mkd(l2, b"empty")
    put(l2, b"pin", b"never removed: the churning client opens it")
    return [l1, l2], u, w


def model_of(mnt):
    """Directory (bytes) -> set of names, of the whole tree below mnt."""
    out = {}
    for rel in [b""] + [p for p, v in view(mnt).items() if v[0] == "dir"]:
        out[rel] = set(os.listdir(j(mnt, rel)))
    return out


@pytest.mark.timeout(240)
@pytest.mark.suf_only
def test_low_nofile_never_shows_deleted_names_or_removes_full_directories(tmp_path):
    """Under a hard RLIMIT_NOFILE of 64, clients hold files open until the daemon gets
    EMFILE, then list, unlink and rmdir throughout the stack. Operations may fail; but a
    listing that succeeds is the complete, right one (no whited-out name, none missing),
    rmdir never removes a directory that is not empty, and the daemon stays up. When the
    clients let go, it serves again; its log names the limit; and the kernel's overlay
    over the resulting upper shows exactly what the operations that succeeded left."""
    lowers, upper, work = starved_layers(tmp_path, dirs=12)
    with mount_kernel([upper] + lowers) as k:      # the expected view: upper read as a layer
        model = model_of(k)
    hidden = {(b"d%d" % i, n) for i in range(12) for n in (b"f0", b"f1", b"f2")}
    hidden |= {(b"opaque", b"hidden"), (b"all-gone", b"x"), (b"all-gone", b"y")}
    assert not any(n in model.get(d, ()) for d, n in hidden)
    rng = random.Random(int(os.environ.get("SUF_STRESS_SEED", "1")))
    m = start_with_nofile(NOFILE, lowers, upper, work, tmp_path)
    held, problems, counts = [], [], {"EMFILE": 0, "listed": 0, "unlinked": 0, "rmdir-refused": 0, "rmdir": 0}
    try:
        def hold_until_emfile():
            for _ in range(4 * NOFILE):
                files = [d + b"/" + n for d in model if d.startswith(b"d") for n in model[d] if n.startswith(b"f")]
                if not files:
                    return
                f = rng.choice(sorted(files))
                try:
                    held.append(os.open(j(m, f), os.O_RDONLY))
                except OSError as e:
                    if e.errno == errno.EMFILE:
                        counts["EMFILE"] += 1
                        return
                    if e.errno != errno.ENOENT:
                        raise

        def refused(what, e, allowed):
            """An operation failed: fine with an allowed errno; any other (ENOENT for a
            name that exists, say) is a wrong answer."""
            if e.errno in allowed:
                counts["EMFILE" if e.errno == errno.EMFILE else "rmdir-refused"] += 1
            else:
                problems.append(f"{what}: {errno.errorcode.get(e.errno, e.errno)}")

        def one_round():
            for d in sorted(model, key=lambda _: rng.random()):
                try:
                    names = set(os.listdir(j(m, d)))
                    counts["listed"] += 1
                    if names != model[d]:
                        problems.append(f"listing of {d!r}: extra {sorted(names - model[d])} "
                                        f"missing {sorted(model[d] - names)}")
                except OSError as e:
                    refused(f"listing of {d!r}", e, (errno.EMFILE,))
                for h in [n for dd, n in hidden if dd == d]:
                    try:
                        os.lstat(j(m, d + b"/" + h))
                        problems.append(f"whited-out {d!r}/{h!r} was found")
                    except OSError as e:
                        if e.errno not in (errno.ENOENT, errno.EMFILE):
                            problems.append(f"lookup of whited-out {d!r}/{h!r}: {e}")
                victims = sorted(n for n in model[d] if (d + b"/" + n if d else n) not in model and n != b"pin")
                if victims and rng.random() < 0.3:
                    v = rng.choice(victims)
                    try:
                        os.unlink(j(m, (d + b"/" if d else b"") + v))
                        model[d].discard(v)
                        counts["unlinked"] += 1
                    except OSError as e:
                        refused(f"unlink of {d!r}/{v!r}", e, (errno.EMFILE,))
                if d and rng.random() < 0.5:
                    parent, _, name = d.rpartition(b"/")
                    try:
                        os.rmdir(j(m, d))
                        counts["rmdir"] += 1
                        if model[d]:
                            problems.append(f"rmdir removed {d!r}, which held {sorted(model[d])}")
                        model[parent].discard(name)
                        del model[d]
                    except OSError as e:
                        refused(f"rmdir of {d!r}", e, (errno.ENOTEMPTY, errno.EMFILE))

        def ramp():
            """From no descriptor left, free one at a time and list every directory at
            each step: some layers of a listing can then be read and others not."""
            for _ in range(min(10, len(held))):
                os.close(held.pop())
                for d in sorted(model, key=lambda _: rng.random()):
                    try:
                        names = set(os.listdir(j(m, d)))
                        counts["listed"] += 1
                        if names != model[d]:
                            problems.append(f"listing of {d!r} with few fds: extra {sorted(names - model[d])} "
                                            f"missing {sorted(model[d] - names)}")
                    except OSError as e:
                        refused(f"listing of {d!r}", e, (errno.EMFILE,))

        def churn(stop, seed):
            """Another client opening and closing files all the time, so the daemon's
            last descriptors come and go under the operations above."""
            r, mine = random.Random(seed), []
            while not stop.is_set():
                if len(mine) < 4 or r.random() < 0.5:
                    try:
                        mine.append(os.open(j(m, b"pin"), os.O_RDONLY))
                    except OSError as e:
                        if e.errno != errno.EMFILE:
                            problems.append(f"churn open of /pin: {e}")
                else:
                    os.close(mine.pop(r.randrange(len(mine))))
            for fd in mine:
                os.close(fd)

        for i in range(6):
            stop = threading.Event()
            other = threading.Thread(target=churn, args=(stop, i)) if i >= 4 else None
            if other:
                other.start()
            try:
                hold_until_emfile()
                ramp()
                hold_until_emfile()
                one_round()
                for fd in held[: len(held) // 2]:
                    os.close(fd)
                del held[: len(held) // 2]
                one_round()
            finally:
                stop.set()
                if other:
                    other.join(30)
        assert m.proc.poll() is None, f"the daemon died:\n{m.stderr()[-3000:]}"
        print(f"\nnofile={NOFILE}: {counts}")
        assert not problems, f"{len(problems)} wrong answers:\n" + "\n".join(sorted(problems, key=lambda p: "extra []" in p)[:30])
        for fd in held:
            os.close(fd)
        held.clear()
        # Let go: the daemon must serve the whole tree again, exactly as the model says.
        after = model_of(m)
        assert after == model, "view after the clients let go:\n  " + diff(model, after)
    finally:
        for fd in held:
            os.close(fd)
        stop_suf(m, check=False)
    assert counts["EMFILE"] > 0, "the daemon never ran out of descriptors: the test proves nothing"
    assert counts["listed"] > 0 and counts["rmdir-refused"] > 0
    assert m.proc.returncode == 0, f"daemon exit {m.proc.returncode}:\n{m.stderr()[-3000:]}"
    log = m.stderr()
    assert "EMFILE" in log or "Too many open files" in log, f"the log does not mention the fd limit:\n{log[-2000:]}"
    with mount_kernel(lowers, upper, work) as k:
        final = model_of(k)
    assert final == model, "kernel view of the upper afterwards:\n  " + diff(model, final)


@pytest.mark.timeout(120)
@pytest.mark.suf_only
def test_low_nofile_many_directories_do_not_exhaust_the_daemon(tmp_path):
    """Listing more directories than the fd limit allows descriptors must not leave the
    daemon without any: once nothing is held open, files open again."""
    lowers, upper, work = starved_layers(tmp_path, dirs=2)
    for i in range(3 * NOFILE):
        put(lowers[1], b"many/x%d/f" % i, b"f")
    m = start_with_nofile(NOFILE, lowers, upper, work, tmp_path)
    try:
        failures = 0
        for i in range(3 * NOFILE):
            try:
                os.listdir(j(m, b"many/x%d" % i))
            except OSError as e:
                assert e.errno == errno.EMFILE
                failures += 1
        assert read(j(m, b"d0/f3")) == b"l2 0 3", f"{failures} listings failed"
        assert sorted(os.listdir(j(m, b"d1"))) == sorted([b"f3", b"f4", b"f5", b"f6", b"f7", b"g", b"u\xe9"])
        with open(j(m, b"new"), "wb") as f:
            f.write(b"new")
        assert m.proc.poll() is None
    finally:
        stop_suf(m, check=False)
