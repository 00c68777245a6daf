"""Edits made to a lower layer while mounted (issue 18).

The kernel's overlayfs shows an edit to a lower file that has not been copied up
(its reads and stats go to the lower file itself), and stops showing them once the
name has been written through the mount. swiftunionfs keeps the kernel's caches long
(timeout=3600) and drops exactly what a lower edit made stale, through FUSE
notifications, with a watch of the lower directories the kernel holds: fanotify
(root) or inotify (rootless, or watch=inotify), with short timeouts past inotify's
budget. The guarantee: an edit below shows within a second (BOUND).

Each check polls until the merged view shows the edit, failing once the bound has
passed; the kernel's overlay is the oracle where it defines the behaviour (content,
size, mode, owner, times, xattrs, copied-up names, the article's exercise). New and
removed names are this project's own guarantee: the kernel keeps a looked-up name's
dentry (positive or negative) and so may not show them at all.
"""

import contextlib
import errno
import os
import shutil
import subprocess
import time

import pytest

from conftest import (SUF_BIN, mount_kernel, mount_suf, start_suf, stop_suf)
from harness import modes

pytestmark = [pytest.mark.suf_only, pytest.mark.timeout(240)]

BOUND = 1.0  # seconds: an edit below shows in the merged view within this
MECHANISMS = ["fanotify", "inotify"]


def observe(fn):
    """fn() as a comparable value, or the errno name it failed with."""
    try:
        return fn()
    except OSError as e:
        return ("error", errno.errorcode.get(e.errno, e.errno))


def within_bound(fn, expected, what):
    """Polls fn until it returns `expected`; fails once BOUND has passed without it."""
    deadline = time.monotonic() + BOUND
    while True:
        got = observe(fn)
        if got == expected:
            return
        if time.monotonic() >= deadline:
            pytest.fail(f"{what}: still {got!r} {BOUND}s after the edit, expected {expected!r}")
        time.sleep(0.01)


def read(path):
    with open(path, "rb") as f:
        return f.read()


def write(path, data, mode="wb"):
    with open(path, mode) as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def names(path):
    return sorted(os.listdir(path))


def sentinel(lower, merged):
    """An edit that always shows (a lower-only file's content): once it does, every
    edit made before it has been applied, so what has not shown by then never will."""
    p = os.path.join(lower, "sentinel")
    write(p, b"0")
    within_bound(lambda: read(os.path.join(merged, "sentinel")), b"0", "sentinel created")
    write(p, b"1")
    within_bound(lambda: read(os.path.join(merged, "sentinel")), b"1", "sentinel edited")


def watch_opts(mechanism):
    return [f"watch={mechanism}"]


# --------------------------------------------------------------------------
# the article's exercise, verbatim, against the kernel
# --------------------------------------------------------------------------

# (command, poll): a polled command is retried until it gives the kernel's output,
# for at most BOUND (the kernel's overlay shows lower edits at once).
ARTICLE = [
    ("mkdir image1 image2 upper work merge", False),
    ("touch image1/a image1/b image2/c", False),
    (None, False),  # mount -t overlay overlay -o lowerdir=image2:image1,upperdir=upper,workdir=work merge
    ("ls merge", False),
    ("rm merge/a", False),
    ("ls merge", False),
    ("ls upper; stat -c '%F %t:%T' upper/a", False),
    ("cat merge/b", False),
    ('echo "hello bb" > image1/b', False),
    ("cat merge/b", True),
    # Written through the mount: merge/b now lives in upper.
    ('echo "hello merge" > merge/b', False),
    ('echo "hello bbb" > image1/b', False),
    ('echo "hello cc" > image2/c', False),
    ("cat merge/c", True),
    # By the time the later edit of c shows, the edit of image1/b has been applied too.
    ("cat merge/b", False),
    ("cat upper/b image1/b", False),
]


def sh(cmd, cwd):
    r = subprocess.run(["sh", "-c", cmd], cwd=cwd, capture_output=True, text=True, timeout=30)
    return (r.returncode, r.stdout, r.stderr)


def run_article(base, mount, kernel=None):
    """The exercise's outputs; with the kernel's, each one is checked against it."""
    outputs = []
    with contextlib.ExitStack() as stack:
        for cmd, poll in ARTICLE:
            if cmd is None:
                stack.enter_context(mount())
                continue
            if kernel is not None:
                want = kernel[len(outputs)]
                if poll:
                    within_bound(lambda: sh(cmd, base), want, f"$ {cmd}")
                got = sh(cmd, base)
                assert got == want, f"$ {cmd}: swiftunionfs {got!r}, kernel {want!r}"
            outputs.append(sh(cmd, base) if kernel is None else got)
    return outputs


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_the_articles_exercise_gives_the_kernels_outputs(tmp_path, mechanism):
    k, s = tmp_path / "kernel", tmp_path / "suf"
    k.mkdir()
    s.mkdir()
    kernel = run_article(k, lambda: mount_kernel([k / "image2", k / "image1"], k / "upper", k / "work", mnt=k / "merge"))
    # The lesson, as the kernel tells it: the lower edit shows, until the name is written.
    said = dict(zip([c for c, _ in ARTICLE if c], kernel))
    assert [o for (c, _), o in zip([a for a in ARTICLE if a[0]], kernel) if c == "cat merge/b"] == \
        [(0, "", ""), (0, "hello bb\n", ""), (0, "hello merge\n", "")]
    assert said["ls merge"] == (0, "b\nc\n", "")
    run_article(s, lambda: mount_suf([s / "image2", s / "image1"], s / "upper", s / "work",
                                     extra_opts=watch_opts(mechanism), mnt=s / "merge"), kernel)


# --------------------------------------------------------------------------
# edits of one lower file, compared with the kernel
# --------------------------------------------------------------------------

def _lower_file_layers(base):
    l1, l2 = base / "l1", base / "l2"
    (l1 / "d").mkdir(parents=True)
    (l2 / "d").mkdir(parents=True)
    write(l2 / "d" / "f", b"old\n")
    write(l1 / "d" / "other", b"o\n")
    return [str(l1), str(l2)]


def _stat_view(p):
    st = os.lstat(p)
    return (st.st_size, oct(st.st_mode), st.st_uid, st.st_gid, st.st_mtime_ns)


# name -> (edit of the lower file, what the merged file is observed by)
FILE_EDITS = {
    "content": (lambda f: write(f, b"new\n"), lambda m: read(m)),
    "size": (lambda f: write(f, b"much longer content than before\n"), lambda m: (read(m), os.stat(m).st_size)),
    "truncate": (lambda f: os.truncate(f, 0), lambda m: (read(m), os.stat(m).st_size)),
    "append": (lambda f: write(f, b"more\n", "ab"), lambda m: read(m)),
    "mode": (lambda f: os.chmod(f, 0o600), lambda m: oct(os.stat(m).st_mode)),
    "owner": (lambda f: os.chown(f, 1234, 5678), lambda m: (os.stat(m).st_uid, os.stat(m).st_gid)),
    "times": (lambda f: os.utime(f, ns=(1_000_000_000_000_000_000, 1_100_000_000_123_456_789)),
              lambda m: (os.stat(m).st_atime_ns, os.stat(m).st_mtime_ns)),
    "xattr": (lambda f: os.setxattr(f, "user.edit", b"v"), lambda m: os.getxattr(m, "user.edit")),
}


def _prime(merged):
    """What a program does before the edit: the kernel now caches the name, its
    attributes and its pages."""
    f = os.path.join(merged, "d", "f")
    _stat_view(f)
    read(f)
    for n in os.listdir(os.path.join(merged, "d")):
        os.lstat(os.path.join(merged, "d", n))


@pytest.mark.parametrize("mode", modes.params(modes.DIFFERENTIAL))
@pytest.mark.parametrize("mechanism", MECHANISMS)
@pytest.mark.parametrize("edit", sorted(FILE_EDITS))
def test_an_edit_of_a_lower_file_shows_as_on_the_kernel(tmp_path, mechanism, edit, mode):
    """Also under the writeback cache, where the kernel keeps its own size and mtime of
    a cached inode: the name is dropped so that a new inode comes (docs/design.md)."""
    change, look = FILE_EDITS[edit]
    kl = _lower_file_layers(tmp_path / "k")
    os.makedirs(tmp_path / "k" / "u")
    os.makedirs(tmp_path / "k" / "w")
    with mount_kernel(kl, tmp_path / "k" / "u", tmp_path / "k" / "w") as km:
        _prime(km)
        change(os.path.join(kl[1], "d", "f"))
        expected = observe(lambda: look(os.path.join(km, "d", "f")))
    sl = _lower_file_layers(tmp_path / "s")
    os.makedirs(tmp_path / "s" / "u")
    os.makedirs(tmp_path / "s" / "w")
    with mount_suf(sl, tmp_path / "s" / "u", tmp_path / "s" / "w", extra_opts=watch_opts(mechanism) + list(mode)) as sm:
        _prime(sm)
        before = observe(lambda: look(os.path.join(sm, "d", "f")))
        assert before != expected, "the edit must change what is observed"
        change(os.path.join(sl[1], "d", "f"))
        within_bound(lambda: look(os.path.join(sm, "d", "f")), expected, f"{edit} of a lower file")


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_a_copied_up_name_never_shows_a_later_lower_edit(tmp_path, mechanism):
    results = {}
    for who in ("kernel", "suf"):
        base = tmp_path / who
        lowers = _lower_file_layers(base)
        write(os.path.join(lowers[1], "d", "g"), b"g\n")
        os.makedirs(base / "u")
        os.makedirs(base / "w")
        cm = mount_kernel(lowers, base / "u", base / "w") if who == "kernel" else \
            mount_suf(lowers, base / "u", base / "w", extra_opts=watch_opts(mechanism))
        with cm as m:
            f, g = os.path.join(m, "d", "f"), os.path.join(m, "d", "g")
            _prime(m)
            write(f, b"written through the mount\n", "ab")  # copy-up with data
            os.chmod(g, 0o640)                              # copy-up by metadata
            lf, lg = os.path.join(lowers[1], "d", "f"), os.path.join(lowers[1], "d", "g")
            copied_mtime = os.stat(g).st_mtime_ns
            write(lf, b"edited below\n")
            os.chmod(lf, 0o777)
            write(lg, b"edited below too\n")
            os.utime(lg, ns=(5, 5))
            sentinel(lowers[0], m)
            results[who] = (read(f), oct(os.stat(f).st_mode), read(g), oct(os.stat(g).st_mode),
                            os.stat(g).st_mtime_ns == copied_mtime)
    assert results["suf"] == results["kernel"]
    assert results["suf"][0] == b"old\nwritten through the mount\n"


# --------------------------------------------------------------------------
# names: swiftunionfs's own guarantee
# --------------------------------------------------------------------------

def _names_layers(base):
    l1, l2 = base / "l1", base / "l2"
    (l1 / "d").mkdir(parents=True)
    (l2 / "d" / "sub").mkdir(parents=True)
    write(l2 / "d" / "f", b"f\n")
    write(l2 / "d" / "sub" / "x", b"x\n")
    write(l1 / "d" / "top", b"t\n")
    (base / "u").mkdir()
    (base / "w").mkdir()
    return [str(l1), str(l2)]


@pytest.mark.parametrize("mechanism", MECHANISMS + ["inotify,watch_limit=0"])
def test_new_removed_and_renamed_lower_names_show(tmp_path, mechanism):
    lowers = _names_layers(tmp_path)
    l1d, l2d = os.path.join(lowers[0], "d"), os.path.join(lowers[1], "d")
    with mount_suf(lowers, tmp_path / "u", tmp_path / "w", extra_opts=watch_opts(mechanism)) as m:
        d = os.path.join(m, "d")
        assert names(d) == ["f", "sub", "top"]
        assert not os.path.exists(os.path.join(d, "new"))  # a negative entry, cached
        os.lstat(os.path.join(d, "f"))
        os.lstat(os.path.join(d, "sub", "x"))

        write(os.path.join(l2d, "new"), b"n\n")
        within_bound(lambda: read(os.path.join(d, "new")), b"n\n", "a name made in a lower")
        within_bound(lambda: names(d), ["f", "new", "sub", "top"], "the listing with the new name")

        os.unlink(os.path.join(l2d, "f"))
        within_bound(lambda: os.path.exists(os.path.join(d, "f")), False, "a name removed from a lower")
        within_bound(lambda: names(d), ["new", "sub", "top"], "the listing without it")

        os.rename(os.path.join(l2d, "new"), os.path.join(l2d, "renamed"))
        within_bound(lambda: (os.path.exists(os.path.join(d, "new")), read(os.path.join(d, "renamed"))),
                     (False, b"n\n"), "a name renamed in a lower")

        # A directory of the lower layer moved away and made anew: the new one shows.
        os.rename(os.path.join(l2d, "sub"), os.path.join(lowers[1], "moved"))
        os.mkdir(os.path.join(l2d, "sub"))
        write(os.path.join(l2d, "sub", "y"), b"y\n")
        within_bound(lambda: names(os.path.join(d, "sub")), ["y"], "a lower directory replaced")
        within_bound(lambda: names(m), ["d", "moved"], "the moved one at its new place")
        assert names(os.path.join(m, "moved")) == ["x"]

        # A lower directory appearing under a name upper holds alone merges in.
        os.mkdir(os.path.join(m, "mine"))
        write(os.path.join(m, "mine", "u"), b"u\n")
        os.makedirs(os.path.join(lowers[1], "mine"))
        write(os.path.join(lowers[1], "mine", "l"), b"l\n")
        within_bound(lambda: names(os.path.join(m, "mine")), ["l", "u"], "a lower directory merging in")

        # The same name in a higher layer shadows whatever happens below.
        write(os.path.join(l2d, "top"), b"below\n")
        sentinel(lowers[0], m)
        assert read(os.path.join(d, "top")) == b"t\n"
        # ... until it goes from the higher layer.
        os.unlink(os.path.join(l1d, "top"))
        within_bound(lambda: read(os.path.join(d, "top")), b"below\n", "the lower copy uncovered")


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_a_lower_directory_replaced_by_an_escaping_symlink(tmp_path, mechanism):
    """The merged view shows the new symlink; the client resolves it from the mount, as
    any lower symlink, and the daemon never follows it (the layer-relative target is
    neither read nor written)."""
    lowers = _names_layers(tmp_path)
    outside = tmp_path / "victim"         # ../victim from the mount
    layer_relative = tmp_path / "l2" / "victim"  # ../victim from l2/d
    for v in (outside, layer_relative):
        v.mkdir()
        write(v / "secret", b"secret\n")
    m_dir = tmp_path / "mnt"
    m_dir.mkdir()
    with mount_suf(lowers, tmp_path / "u", tmp_path / "w", extra_opts=watch_opts(mechanism), mnt=m_dir) as m:
        assert names(os.path.join(m, "d")) == ["f", "sub", "top"]
        os.rename(os.path.join(lowers[1], "d", "sub"), os.path.join(lowers[1], "d", "sub.old"))
        os.symlink("../../victim", os.path.join(lowers[1], "d", "sub"))
        within_bound(lambda: os.readlink(os.path.join(m, "d", "sub")), "../../victim", "the lower symlink")
        assert read(os.path.join(m, "d", "sub", "secret")) == b"secret\n"  # m/d/../../victim
        write(os.path.join(m, "d", "sub", "new"), b"n")
    assert sorted(os.listdir(outside)) == ["new", "secret"]
    assert sorted(os.listdir(layer_relative)) == ["secret"]
    assert not os.path.exists(tmp_path / "u" / "d" / "sub")


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_a_removed_name_stays_removed_despite_lower_edits(tmp_path, mechanism):
    """A name deleted through the mount is a whiteout in upper: edits below never bring it back."""
    lowers = _names_layers(tmp_path)
    with mount_suf(lowers, tmp_path / "u", tmp_path / "w", extra_opts=watch_opts(mechanism)) as m:
        os.unlink(os.path.join(m, "d", "f"))
        write(os.path.join(lowers[1], "d", "f"), b"edited\n")
        os.unlink(os.path.join(lowers[1], "d", "f"))
        write(os.path.join(lowers[1], "d", "f"), b"made again\n")
        sentinel(lowers[0], m)
        assert not os.path.exists(os.path.join(m, "d", "f"))
        assert names(os.path.join(m, "d")) == ["sub", "top"]


def _deep_layers(base, depth=12):
    l1, l2 = base / "l1", base / "l2"
    l1.mkdir(parents=True)
    p = l2
    for i in range(depth):
        p = p / f"a{i}"
        p.mkdir(parents=True)
        write(p / "f", f"level {i}\n".encode())
        write(p / "gone", b"g\n")
    return [str(l1), str(l2)], os.path.relpath(p, l2)


def _walk(root):
    """Everything a `find -ls; cat` caches."""
    for dirpath, dirs, files in os.walk(root):
        for n in dirs + files:
            os.lstat(os.path.join(dirpath, n))
        for n in files:
            read(os.path.join(dirpath, n))


def _deep_edits(lowers, deep, m):
    low, top = os.path.join(lowers[1], deep), os.path.join(m, deep)
    write(os.path.join(low, "f"), b"edited deep down\n")
    within_bound(lambda: read(os.path.join(top, "f")), b"edited deep down\n", "content deep down")
    os.chmod(os.path.join(low, "f"), 0o604)
    within_bound(lambda: oct(os.stat(os.path.join(top, "f")).st_mode), oct(0o100604), "mode deep down")
    assert not os.path.exists(os.path.join(top, "new"))
    write(os.path.join(low, "new"), b"n\n")
    within_bound(lambda: os.path.exists(os.path.join(top, "new")), True, "a new name deep down")
    os.unlink(os.path.join(low, "gone"))
    within_bound(lambda: names(top), ["f", "new"], "the listing deep down")
    os.chmod(low, 0o711)
    within_bound(lambda: oct(os.stat(top).st_mode), oct(0o40711), "a directory's mode deep down")
    mid = os.path.join(*deep.split("/")[:5])
    write(os.path.join(lowers[1], mid, "f"), b"edited half way\n")
    within_bound(lambda: read(os.path.join(m, mid, "f")), b"edited half way\n", "content half way")


@pytest.mark.parametrize("mechanism", MECHANISMS)
@pytest.mark.parametrize("upper", [True, False], ids=["writable", "read-only"])
def test_edits_in_deep_directories_the_kernel_has_cached(tmp_path, mechanism, upper):
    lowers, deep = _deep_layers(tmp_path)
    u, w = (tmp_path / "u", tmp_path / "w") if upper else (None, None)
    if upper:
        u.mkdir()
        w.mkdir()
    with mount_suf(lowers, u, w, extra_opts=watch_opts(mechanism)) as m:
        _walk(m)
        _walk(m)  # the second pass is served from the kernel's caches (and their listing caches)
        _deep_edits(lowers, deep, m)


@pytest.mark.parametrize("limit", [4, 0])
def test_the_inotify_budget_spent_falls_back_to_short_timeouts(tmp_path, limit):
    lowers, deep = _deep_layers(tmp_path)
    (tmp_path / "u").mkdir()
    (tmp_path / "w").mkdir()
    m = start_suf(lowers, tmp_path / "u", tmp_path / "w",
                  extra_opts=["watch=inotify", f"watch_limit={limit}"], args=("-v",))
    ok = False
    try:
        assert f"watch: inotify (lower edits shown within 1 s; up to {limit} watched directories" in m.stderr()
        _walk(m)
        # The root's two lower directories and one more take a budget of 4: the deep
        # directories are past it and served on short timeouts.
        assert "watch budget" in m.stderr() and f"({limit} directories" in m.stderr(), m.stderr()
        _deep_edits(lowers, deep, m)
        ok = True
    finally:
        stop_suf(m, check=ok)


def test_watch_off_keeps_the_kernels_caches(tmp_path):
    lowers = _lower_file_layers(tmp_path)
    (tmp_path / "u").mkdir()
    (tmp_path / "w").mkdir()
    m = start_suf(lowers, tmp_path / "u", tmp_path / "w", extra_opts=["watch=off"], args=("-v",))
    ok = False
    try:
        assert "watch: off (edits to the lower layers while mounted may stay unseen for timeout=3600 s)" in m.stderr()
        f = os.path.join(m, "d", "f")
        _prime(m)
        write(os.path.join(lowers[1], "d", "f"), b"new\n")
        os.chmod(os.path.join(lowers[1], "d", "f"), 0o600)
        time.sleep(2 * BOUND)  # past the bound: nothing told the kernel
        assert (read(f), oct(os.stat(f).st_mode)) == (b"old\n", oct(0o100644))
        ok = True
    finally:
        stop_suf(m, check=ok)


# --------------------------------------------------------------------------
# which watch is active: -v, the trace header, inspect, and the fallbacks
# --------------------------------------------------------------------------

def test_the_mode_in_use_is_reported(tmp_path):
    lowers = _lower_file_layers(tmp_path)
    (tmp_path / "u").mkdir()
    (tmp_path / "w").mkdir()
    trace = tmp_path / "trace.log"
    stats = tmp_path / "stats.json"
    m = start_suf(lowers, tmp_path / "u", tmp_path / "w", extra_opts=[f"trace={trace}", f"stats={stats}"], args=("-v",))
    ok = False
    try:
        # As root, auto picks fanotify.
        assert "watch: fanotify (lower edits shown within 1 s)" in m.stderr()
        _prime(m)
        write(os.path.join(lowers[1], "d", "f"), b"new\n")
        within_bound(lambda: read(os.path.join(m, "d", "f")), b"new\n", "content")
        ok = True
    finally:
        stop_suf(m, check=ok)
    text = trace.read_text()
    assert "# layers: " in text and "; watch: fanotify" in text
    assert "event lower-edit /d/f layer=\"lower 2\" change=attributes" in text, text
    import json
    assert json.loads(stats.read_text())["lower_edits"] >= 1

    def inspect(*opts):
        r = subprocess.run([SUF_BIN, "inspect", "-o", ",".join([f"lowerdir={lowers[0]}:{lowers[1]}", *opts]), "d/f"],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        return [line for line in r.stdout.splitlines() if line.startswith("watch: ")]
    assert inspect() == ["watch: fanotify (lower edits shown within 1 s)"]
    assert inspect("watch=inotify,watch_limit=9") == \
        ["watch: inotify (lower edits shown within 1 s; up to 9 watched directories, then 0.5 s timeouts)"]
    assert inspect("watch=off", "timeout=60") == \
        ["watch: off (edits to the lower layers while mounted may stay unseen for timeout=60 s)"]


def test_in_a_user_namespace_auto_watches_with_inotify(tmp_path):
    """fanotify may not mark a filesystem of the initial namespace from a user namespace:
    auto falls back to inotify there, and an edit still shows."""
    if shutil.which("unshare") is None:
        pytest.fail("unshare (util-linux) is needed")
    for d in ("l1", "u", "w", "m"):
        (tmp_path / d).mkdir()
    write(tmp_path / "l1" / "f", b"old\n")
    script = f"""
set -e
cd {tmp_path}
{SUF_BIN} -v -o lowerdir=$PWD/l1,upperdir=$PWD/u,workdir=$PWD/w $PWD/m 2>&1
trap 'fusermount3 -u $PWD/m 2>/dev/null || umount $PWD/m' EXIT
cat m/f
echo new > l1/f
i=0
until [ "$(cat m/f)" = new ] || [ $i -ge 100 ]; do sleep 0.01; i=$((i+1)); done
cat m/f
"""
    r = subprocess.run(["unshare", "-Urm", "sh", "-c", script], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "watch: inotify (lower edits shown within 1 s" in r.stdout, r.stdout
    assert r.stdout.splitlines()[-2:] == ["old", "new"], r.stdout


def test_an_explicit_mechanism_that_cannot_start_is_one_error_line(tmp_path):
    for d in ("l1", "m"):
        (tmp_path / d).mkdir()
    r = subprocess.run(["unshare", "-Urm", SUF_BIN, "-f", "-o", f"lowerdir={tmp_path}/l1,watch=fanotify", f"{tmp_path}/m"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "watch=fanotify: cannot mark the lower layers' filesystems" in lines[0], r.stderr
    assert "use watch=inotify" in lines[0]
