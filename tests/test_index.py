"""index=on: lower hard links kept across copy-up, in the kernel's workdir/index format,
against the kernel's overlay with index=on, both ways.

What a user checks: every name of a lower hard link shows the new content after one
name is written, with one inode number for all and the right link count, across a
remount; the kernel over swiftunionfs's upper (same workdir: the index lives there)
shows the same without complaining in the kernel log; swiftunionfs over the kernel's
upper shows what the kernel showed; unlink, link and rename of the names give the same
link counts in both.
"""

import hashlib
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import SUF_BIN, Hardlink, build_layers, diff_snapshots, is_mounted, make_dirs, snapshot
from test_kernel_features import kmount, options, smount, start, stop, write
from test_rootless import base_dir, dev_fuse, rl_user  # noqa: F401 (fixtures for the rootless test)

pytestmark = [pytest.mark.suf_only,
              pytest.mark.skipif(os.geteuid() != 0, reason="kernel overlay mounts and trusted.overlay.* need root")]

IDX = "index=on"
# What the kernel logs when it finds an index it does not trust (namei.c, util.c, inode.c).
COMPLAINTS = ("failed to verify", "orphan index", "bad index", "wrong index", "stale index",
              "failed to get index nlink", "cleanup linked index", "suspected uncovered",
              "falling back to index=off")


def dmesg_lines():
    r = subprocess.run(["dmesg"], capture_output=True, text=True, timeout=30)
    return r.stdout.splitlines()


class KernelLog:
    """The overlayfs lines the kernel logs from now on."""

    def __init__(self):
        self.before = dmesg_lines()

    def complaints(self):
        now = dmesg_lines()
        last = self.before[-1] if self.before else None
        new = now[now.index(last) + 1:] if last in now else now
        return [l for l in new if "overlayfs" in l and any(c in l for c in COMPLAINTS)]


def linked(m, names):
    """(content, st_ino, st_nlink) shown for each name; asserts they are one file."""
    seen = []
    for n in names:
        p = os.path.join(m, n)
        st = os.stat(p)
        with open(p, "rb") as f:
            seen.append((f.read(), st.st_ino, st.st_nlink))
    assert len(set(seen)) == 1, f"names {names} are not one file: {seen}"
    return seen[0]


def index_entries(work):
    d = os.path.join(work, "index")
    return sorted(n for n in os.listdir(d) if not n.startswith("#")) if os.path.isdir(d) else []


def xattr(path, name):
    try:
        return os.getxattr(path, name, follow_symlinks=False)
    except OSError:
        return None


def assert_tree(a, b, na, nb):
    d = diff_snapshots(a, b, na, nb)
    assert not d, f"{na} vs {nb}:\n  " + "\n  ".join(d)


LINKED = {"a": "data\n", "b": Hardlink("a"), "d": {"c": Hardlink("a")}, "single": "single\n"}
NAMES = ["a", "b", "d/c"]


def test_suf_keeps_lower_hard_links_and_the_kernel_reads_its_index(tmp_path):
    lowers = build_layers(tmp_path, [LINKED])
    upper, work = make_dirs(tmp_path / "u", tmp_path / "w")
    with smount(lowers, upper, work, IDX) as m:
        assert linked(m, NAMES) == (b"data\n", os.stat(os.path.join(m, "a")).st_ino, 3)
        write(os.path.join(m, "b"), b"more\n")
        content, ino, nlink = linked(m, NAMES)
        assert content == b"data\nmore\n" and nlink == 3
        write(os.path.join(m, "single"), b"x\n")
        assert os.stat(os.path.join(m, "single")).st_nlink == 1
    # The kernel's format: one entry named by the lower file's handle, which the upper
    # copy carries as its origin; the upper root's origin names the lower root.
    entries = index_entries(work)
    assert len(entries) == 1 and entries[0].startswith("00fb"), entries
    assert xattr(os.path.join(upper, "b"), "trusted.overlay.origin").hex() == entries[0]
    assert os.path.samestat(os.stat(os.path.join(upper, "b")), os.stat(os.path.join(work, "index", entries[0])))
    assert xattr(str(upper), "trusted.overlay.origin") is not None
    assert xattr(os.path.join(work, "index"), "trusted.overlay.upper") is not None
    assert xattr(os.path.join(upper, "single"), "trusted.overlay.origin") is None  # not a hard link
    with smount(lowers, upper, work, IDX) as m:
        content, _, nlink = linked(m, NAMES)
        assert (content, nlink) == (b"data\nmore\n", 3)
        sview = snapshot(m)
    log = KernelLog()
    with kmount(lowers, upper, work, IDX) as m:
        content, _, nlink = linked(m, NAMES)
        assert (content, nlink) == (b"data\nmore\n", 3)
        kview = snapshot(m)
    assert not log.complaints(), log.complaints()
    assert_tree(kview, sview, "kernel index=on over suf's upper", "suf")


def test_kernel_index_read_by_suf(tmp_path):
    """The kernel copies one name up into its index (the others stay lower-only in
    upper); swiftunionfs shows every name through the index entry."""
    lowers = build_layers(tmp_path, [LINKED])
    upper, work = make_dirs(tmp_path / "u", tmp_path / "w")
    with kmount(lowers, upper, work, IDX) as m:
        write(os.path.join(m, "a"), b"kernel\n")
    assert sorted(os.listdir(upper)) == ["a"]  # b and d/c live only in the index
    with kmount(lowers, upper, work, IDX) as m:
        kcontent, _, knlink = linked(m, NAMES)
        kview = snapshot(m)
    assert (kcontent, knlink) == (b"data\nkernel\n", 3)
    with smount(lowers, upper, work, IDX) as m:
        assert linked(m, NAMES)[::2] == (kcontent, knlink)
        assert_tree(kview, snapshot(m), "kernel", "suf over the kernel's upper")
        write(os.path.join(m, "d/c"), b"suf\n")
        assert linked(m, NAMES)[0] == b"data\nkernel\nsuf\n"
    log = KernelLog()
    with kmount(lowers, upper, work, IDX) as m:
        assert linked(m, NAMES)[::2] == (b"data\nkernel\nsuf\n", 3)
    assert not log.complaints(), log.complaints()


def test_mount_refuses_an_upper_recorded_over_another_lower(tmp_path):
    """The upper root's origin names the lower root it was first used with: the kernel
    refuses index=on over another lower ("failed to verify upper root origin"); so do we,
    in one line, exit 2."""
    l1, l2 = build_layers(tmp_path / "one", [{"f": "1"}])[0], build_layers(tmp_path / "two", [{"f": "2"}])[0]
    upper, work, mnt = make_dirs(tmp_path / "u", tmp_path / "w", tmp_path / "m")
    with smount([l1], upper, work, IDX):
        pass
    r = subprocess.run(["mount", "-t", "overlay", "overlay", "-o", options([l2], upper, work, IDX), str(mnt)],
                       capture_output=True, text=True, timeout=30)
    if r.returncode == 0:
        subprocess.run(["umount", str(mnt)], timeout=30)
    assert r.returncode != 0, "the kernel mounted the upper over another lower"
    s = subprocess.run([SUF_BIN, "-o", options([l2], upper, work, IDX), str(mnt)], capture_output=True, text=True, timeout=30)
    assert s.returncode == 2 and "failed to verify upper root origin" in s.stderr and s.stderr.count("\n") == 1, s.stderr
    assert not is_mounted(str(mnt))
    with smount([l2], upper, work, "index=off") as m:  # without the index it mounts
        assert os.listdir(m) == ["f"]
    # The index belongs to the upper it was made with: another upper over the same
    # workdir is refused by both ("failed to verify index dir 'upper' xattr").
    upper2, = make_dirs(tmp_path / "u2")
    r = subprocess.run(["mount", "-t", "overlay", "overlay", "-o", options([l1], upper2, work, IDX), str(mnt)],
                       capture_output=True, text=True, timeout=30)
    if r.returncode == 0:
        subprocess.run(["umount", str(mnt)], timeout=30)
    assert r.returncode != 0, "the kernel mounted another upper over the index"
    s = subprocess.run([SUF_BIN, "-o", options([l1], upper2, work, IDX), str(mnt)], capture_output=True, text=True, timeout=30)
    assert s.returncode == 2 and "failed to verify index dir 'upper' xattr" in s.stderr and s.stderr.count("\n") == 1, s.stderr
    assert not is_mounted(str(mnt))


# --------------------------------------------------------------------------
# link, unlink and rename of the names of an indexed file, against the kernel
# --------------------------------------------------------------------------

OPS_TREE = {"a": "data\n", "b": Hardlink("a"), "d": {"c": Hardlink("a")},
            "p": "p\n", "q": Hardlink("p"), "single": "single\n",
            "r": "r\n", "s": Hardlink("r")}
OPS_NAMES = ["a", "b", "d/c", "d/new", "x", "p", "q", "r", "s", "single"]


def run_ops(m):
    """The steps, each followed by what every name shows: (content, nlink) or None."""
    def view():
        out = {}
        for n in OPS_NAMES:
            p = os.path.join(m, n)
            if not os.path.lexists(p):
                out[n] = None
                continue
            with open(p, "rb") as f:
                out[n] = (f.read(), os.stat(p).st_nlink)
        for family in (("a", "b", "d/c", "d/new", "x"), ("p", "q"), ("r", "s")):
            inos = {os.stat(os.path.join(m, n)).st_ino for n in family if os.path.lexists(os.path.join(m, n))}
            if family[1] != "q" or out["q"] == out["p"]:  # q is replaced by single midway
                assert len(inos) <= 1, f"names {family} of one file show {inos}"
        return out

    steps = []
    write(os.path.join(m, "a"), b"new\n")
    steps.append(("write a", view()))
    os.unlink(os.path.join(m, "b"))
    steps.append(("unlink b", view()))
    os.link(os.path.join(m, "a"), os.path.join(m, "d/new"))
    steps.append(("link a d/new", view()))
    os.rename(os.path.join(m, "d/c"), os.path.join(m, "x"))
    steps.append(("rename d/c x", view()))
    os.rename(os.path.join(m, "single"), os.path.join(m, "q"))   # over a lower hard link never copied up
    steps.append(("rename single over q", view()))
    with open(os.path.join(m, "r"), "wb") as f:                  # O_TRUNC copy-up of a lower hard link
        f.write(b"R\n")
    steps.append(("truncate and write r", view()))
    os.unlink(os.path.join(m, "s"))
    steps.append(("unlink s", view()))
    for n in ("a", "d/new", "x"):
        os.unlink(os.path.join(m, n))
    steps.append(("unlink the rest of a", view()))
    return steps


def test_link_unlink_rename_match_the_kernel(tmp_path):
    klowers = build_layers(tmp_path / "k", [OPS_TREE])
    slowers = build_layers(tmp_path / "s", [OPS_TREE])
    kup, kwork, sup, swork = make_dirs(tmp_path / "ku", tmp_path / "kw", tmp_path / "su", tmp_path / "sw")
    with kmount(klowers, kup, kwork, IDX) as m:
        ksteps = run_ops(m)
    with smount(slowers, sup, swork, IDX) as m:
        ssteps = run_ops(m)
    for (op, k), (_, s) in zip(ksteps, ssteps):
        assert k == s, f"after {op}: kernel {k} suf {s}"
    assert ksteps[-1][1]["p"] == (b"p\n", 1) and ksteps[-1][1]["r"] == (b"R\n", 1)
    # The entry of a file whose names are all gone goes too; p's and r's stay.
    assert len(index_entries(kwork)) == len(index_entries(swork)) == 2
    # Each upper remounted, and read by the other.
    with kmount(klowers, kup, kwork, IDX) as m:
        kview = snapshot(m)
    with smount(slowers, sup, swork, IDX) as m:
        sview = snapshot(m)
    assert_tree(kview, sview, "kernel", "suf")
    log = KernelLog()
    with kmount(slowers, sup, swork, IDX) as m:
        assert_tree(sview, snapshot(m), "suf", "kernel over suf's upper")
    assert not log.complaints(), log.complaints()
    with smount(klowers, kup, kwork, IDX) as m:
        assert_tree(kview, snapshot(m), "kernel", "suf over the kernel's upper")


# --------------------------------------------------------------------------
# a crash in the middle of an indexed copy-up
# --------------------------------------------------------------------------

def test_kill_during_indexed_copy_up(tmp_path):
    """SIGKILL while a big lower hard link is being copied up: after remounting, both
    names show one file, the old content or the new, under swiftunionfs and the kernel;
    the lower layer is untouched."""
    from test_writes import random_bytes
    size = 256 << 20
    lower, upper, work = make_dirs(tmp_path / "lower", tmp_path / "upper", tmp_path / "work")
    big = os.path.join(lower, "big")
    chunk = random_bytes(1 << 20, 11)
    h = hashlib.sha256()
    with open(big, "wb") as f:
        for i in range(size >> 20):
            c = i.to_bytes(8, "little") + chunk[8:]
            f.write(c)
            h.update(c)
    os.link(big, os.path.join(lower, "big2"))
    lower_hash = h.copy().hexdigest()
    h.update(b"X")
    appended_hash = h.hexdigest()

    def hashes(m):
        out = []
        for n in ("big", "big2"):
            p = os.path.join(m, n)
            d = hashlib.sha256()
            with open(p, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    d.update(block)
            out.append((d.hexdigest(), os.stat(p).st_nlink, os.stat(p).st_ino))
        assert out[0] == out[1], f"big and big2 differ: {out}"
        assert out[0][0] in (lower_hash, appended_hash) and out[0][1] == 2, out
        return out[0][0]

    mnt = None
    writer = None
    try:
        mnt = start([lower], upper, work, IDX)
        writer = subprocess.Popen([sys.executable, "-c", "import sys; f=open(sys.argv[1],'ab'); f.write(b'X'); f.close()",
                                   os.path.join(mnt, "big")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  start_new_session=True)
        staged = os.path.join(work, "work")

        def staged_blocks():
            total = 0
            for n in os.listdir(staged):
                try:
                    total += os.lstat(os.path.join(staged, n)).st_blocks
                except FileNotFoundError:  # renamed into the index meanwhile
                    pass
            return total

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and writer.poll() is None and staged_blocks() < 4096:
            time.sleep(0.002)
        os.kill(mnt.proc.pid, signal.SIGKILL)
        mnt.proc.wait(20)
        print(f"killed with index {index_entries(work)}, upper {os.listdir(upper)}")
    finally:
        if writer is not None:
            try:
                writer.wait(30)
            except subprocess.TimeoutExpired:
                writer.kill()
                writer.wait(10)
        if mnt is not None:
            stop(mnt)
    with smount([lower], upper, work, IDX) as m:
        shown = hashes(m)
    log = KernelLog()
    with kmount([lower], upper, work, IDX) as m:
        assert hashes(m) == shown
    assert not [l for l in log.complaints() if "orphan" not in l], log.complaints()
    with open(big, "rb") as f:
        d = hashlib.sha256()
        for block in iter(lambda: f.read(1 << 20), b""):
            d.update(block)
    assert d.hexdigest() == lower_hash


def test_userxattr_index_is_read_by_the_kernel(tmp_path):
    """index=on with userxattr keeps its format in user.overlay.*; the kernel (as root,
    with userxattr) reads it the same way."""
    lowers = build_layers(tmp_path, [LINKED])
    upper, work = make_dirs(tmp_path / "u", tmp_path / "w")
    with smount(lowers, upper, work, "userxattr," + IDX) as m:
        write(os.path.join(m, "a"), b"user\n")
        assert linked(m, NAMES)[::2] == (b"data\nuser\n", 3)
    assert xattr(os.path.join(upper, "a"), "user.overlay.origin") is not None
    assert xattr(os.path.join(upper, "a"), "trusted.overlay.origin") is None
    log = KernelLog()
    with kmount(lowers, upper, work, "userxattr," + IDX) as m:
        assert linked(m, NAMES)[::2] == (b"data\nuser\n", 3)
    assert not log.complaints(), log.complaints()


ROOTLESS_SCRIPT = r"""
set -u
B=$1; D=$2
o="lowerdir=$D/l,upperdir=$D/u,workdir=$D/w"
show() { echo "$1: $(cat "$D/m/d/c" | tr '\n' ' ')nlink $(stat -c %h "$D/m/a" "$D/m/b" "$D/m/d/c" | tr '\n' ' ')inodes $(stat -c %i "$D/m/a" "$D/m/b" "$D/m/d/c" | sort -u | wc -l)"; }
"$B" -o "$o,index=on" "$D/m" || exit 10
echo more >> "$D/m/b" && show suf
fusermount3 -u "$D/m"; flock "$D/w" true
echo "origin: $(getfattr --absolute-names -n user.overlay.origin "$D/u/b" 2>/dev/null | grep -c origin)"
echo "trusted: $(getfattr -d -m trusted -R "$D/u" "$D/w" 2>/dev/null | grep -c overlay)"
echo "entries: $(ls "$D/w/index" | wc -l)"
"$B" -o "$o,index=on" "$D/m" || exit 11
show remount
fusermount3 -u "$D/m"; flock "$D/w" true
if mount -t overlay overlay -o "userxattr,index=on,$o" "$D/m" 2>/dev/null; then show kernel; umount "$D/m"; else echo "kernel refuses userxattr,index=on"; fi
"""


def test_rootless_index_in_user_xattrs(rl_user, dev_fuse, base_dir):
    """Unprivileged, index=on needs only encoding handles: swiftunionfs keeps the index in
    user.overlay.* across remounts; the kernel in the user's namespace shows the same file."""
    import tempfile
    from conftest import build_layer
    user = rl_user
    d = tempfile.mkdtemp(dir=base_dir)
    build_layer(os.path.join(d, "l"), LINKED)
    for n in ("u", "w", "m"):
        os.mkdir(os.path.join(d, n))
    subprocess.run(["chown", "-R", f"{user['uid']}:{user['gid']}", d], check=True, timeout=60)
    os.chmod(d, 0o755)
    r = subprocess.run(["runuser", "-u", user["name"], "--", "unshare", "-Urm", "sh", "-c", ROOTLESS_SCRIPT, "sh",
                        SUF_BIN, d], capture_output=True, text=True, timeout=120)
    out = r.stdout
    print(out)
    assert r.returncode == 0, r.stdout + r.stderr
    linked_line = "data more nlink 3 3 3 inodes 1"
    for line in ("suf: " + linked_line, "remount: " + linked_line, "origin: 1", "trusted: 0", "entries: 1"):
        assert line in out, out + r.stderr
    # The kernel in a user namespace cannot decode handles, so it falls back to index=off
    # ("upper fs does not support file handles"): the same file under every name, with
    # the upper inode's own count (the index entry's link included).
    assert "kernel: data more nlink 4 4 4 inodes 1" in out, out + r.stderr


def test_metacopy_with_index_both_ways(tmp_path):
    """metacopy=on,index=on: the kernel's chown of a lower hard link leaves a metacopy in
    its index; swiftunionfs shows every name with the new owner over the lower data,
    writes through one name, and the kernel reads that. swiftunionfs's own chown (a full
    copy into the index) reads the same under the kernel."""
    o = "metacopy=on," + IDX
    for first, second in ((kmount, smount), (smount, kmount)):
        lowers = build_layers(tmp_path / first.__name__, [LINKED])
        upper, work = make_dirs(tmp_path / first.__name__ / "u", tmp_path / first.__name__ / "w")
        with first(lowers, upper, work, o) as m:
            os.chown(os.path.join(m, "b"), 7, 7)
            assert {os.stat(os.path.join(m, n)).st_uid for n in NAMES} == {7}
            view = snapshot(m)
        log = KernelLog()
        with second(lowers, upper, work, o) as m:
            assert_tree(view, snapshot(m), first.__name__, second.__name__)
            write(os.path.join(m, "d/c"), b"more\n")
            assert linked(m, NAMES)[::2] == (b"data\nmore\n", 3)
        with first(lowers, upper, work, o) as m:
            assert linked(m, NAMES)[::2] == (b"data\nmore\n", 3)
            assert {os.stat(os.path.join(m, n)).st_uid for n in NAMES} == {7}
        assert not log.complaints(), log.complaints()


@pytest.mark.parametrize("state", ["entry-only", "mid-link-up"])
def test_crash_states_between_index_and_link_up(tmp_path, state):
    """The states a crash after the rename into the index can leave, made by hand from a
    finished copy-up: the entry alone with its count relative to itself ("U+2", after the
    rename into the index), or one upper name linked with the count still relative to the
    lower file ("L+0", in the link-up). Both implementations show every name as the one
    file with the union's count."""
    lowers = build_layers(tmp_path, [LINKED])
    upper, work = make_dirs(tmp_path / "u", tmp_path / "w")
    with smount(lowers, upper, work, IDX) as m:
        write(os.path.join(m, "b"), b"more\n")
        linked(m, NAMES)
    entry = os.path.join(work, "index", index_entries(work)[0])
    keep = [] if state == "entry-only" else ["b"]
    for n in NAMES:
        if n not in keep:
            os.unlink(os.path.join(upper, n))
            if os.path.dirname(n):
                os.rmdir(os.path.join(upper, os.path.dirname(n)))
    os.setxattr(entry, "trusted.overlay.nlink", b"U+2" if state == "entry-only" else b"L+0")
    assert os.stat(entry).st_nlink == 1 + len(keep)
    with smount(lowers, upper, work, IDX) as m:
        # The name still in upper first: its count is read before any link-up corrects it.
        assert linked(m, ["b", "a", "d/c"])[::2] == (b"data\nmore\n", 3)
        sview = snapshot(m)
    log = KernelLog()
    with kmount(lowers, upper, work, IDX) as m:
        assert linked(m, NAMES)[::2] == (b"data\nmore\n", 3)
        assert_tree(sview, snapshot(m), "suf", "kernel")
    assert not log.complaints(), log.complaints()


def test_concurrent_lookups_links_and_unlinks_keep_the_counts(tmp_path):
    """Threads stat names of lower hard links while others append to them (copy-ups) and
    link and unlink more names: afterwards every file's count is the number of its
    names, in the session, after a remount and under the kernel."""
    import random
    import threading
    spec = {}
    for i in range(12):
        spec[f"f{i}"] = f"{i}\n"
        for j in range(3):
            spec[f"f{i}.{j}"] = Hardlink(f"f{i}")
    lowers = build_layers(tmp_path, [spec])
    upper, work = make_dirs(tmp_path / "u", tmp_path / "w")

    def counts_match(m):
        by = {}
        for n in os.listdir(m):
            st = os.stat(os.path.join(m, n))
            by.setdefault(st.st_ino, []).append(st.st_nlink)
        bad = {ino: c for ino, c in by.items() if any(x != len(c) for x in c)}
        assert not bad and len(by) == 12, bad

    with smount(lowers, upper, work, IDX) as m:
        errors, done = [], threading.Event()

        def looker(seed):
            rnd = random.Random(seed)
            while not done.is_set():
                try:
                    os.stat(os.path.join(m, f"f{rnd.randrange(12)}{rnd.choice(['', '.0', '.1', '.2'])}"))
                except FileNotFoundError:
                    pass
                except OSError as e:
                    errors.append(repr(e))

        def changer(k):
            rnd = random.Random(100 + k)
            for n in range(120):
                i = rnd.randrange(12)
                try:
                    write(os.path.join(m, f"f{i}"), b"x")
                    extra = os.path.join(m, f"f{i}.n{k}.{n}")
                    os.link(os.path.join(m, f"f{i}"), extra)
                    if rnd.random() < 0.5:
                        os.unlink(extra)
                except OSError as e:
                    errors.append(repr(e))

        lookers = [threading.Thread(target=looker, args=(s,)) for s in range(3)]
        changers = [threading.Thread(target=changer, args=(k,)) for k in range(3)]
        for t in lookers + changers:
            t.start()
        for t in changers:
            t.join(120)
        done.set()
        for t in lookers:
            t.join(30)
        assert not errors, errors[:5]
        counts_match(m)
    with smount(lowers, upper, work, IDX) as m:
        counts_match(m)
    log = KernelLog()
    with kmount(lowers, upper, work, IDX) as m:
        counts_match(m)
    assert not log.complaints(), log.complaints()
