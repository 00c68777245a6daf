"""Listings with attributes (readdirplus), and the shortcut behind them.

swiftunionfs asks the kernel for READDIRPLUS on every chunk of a listing (not only the first,
the kernel's AUTO heuristic), so that a reader that takes a whole directory before it stats any
of it (find, tar, du: fts) gets every entry's attributes with the listing instead of paying one
LOOKUP round trip per entry; and it resolves an entry the kernel does not hold yet from the layer
the listing found it in, while the union has changed no name since the listing was taken.

What a user checks: a stat walk sends no per-entry lookups (the daemon's statistics count the
requests), and what a stat shows after a listing is the file that is there now, also when names
were removed, replaced or created over lower ones between the chunks of one listing (the kernel's
overlay, the oracle, is given the same sequence)."""

import os
import subprocess

from harness import mounts
from conftest import build_layers, make_dirs, mount_kernel, mount_suf

N = 3000  # several readdirplus chunks (about 200 entries each)


def spec():
    # The names spread over three lower layers, some shadowed, as an image's would be.
    layers = [{}, {}, {}]
    for i in range(N):
        layers[i % 3][f"e{i:05d}"] = f"layer{i % 3} {i}\n" * (1 + i % 5)
        if i % 7 == 0:
            layers[(i + 1) % 3][f"e{i:05d}"] = "shadowed\n"
    return [{"big": layers[0]}, {"big": layers[1]}, {"big": layers[2]}]


stats_of, count = mounts.read_stats, mounts.request_count


def interleaved(mnt):
    """Lists `big` chunk by chunk; between the first chunk and the rest, removes, replaces
    and creates names the rest of the listing holds; then stats what the listing returned,
    through the kernel's attributes of the listing (DirEntry.stat uses lstat)."""
    d = os.path.join(mnt, "big")
    # The same names on both mounts (by name, not by listing order): most are in the
    # listing's later chunks whatever its order.
    names = sorted(os.listdir(d))
    removed, replaced = names[::9], names[4::9]
    seen = []
    with os.scandir(d) as it:
        first = next(it)
        seen.append(first)
        for name in removed:
            os.unlink(os.path.join(d, name))
        for name in replaced:
            os.unlink(os.path.join(d, name))
            with open(os.path.join(d, name), "w") as f:
                f.write("replaced through the union, longer than any lower copy\n" * 3)
        seen.extend(it)
    out = {}
    for e in seen:
        try:
            st = e.stat(follow_symlinks=False)
            with open(e.path, "rb") as f:
                body = f.read()
            out[e.name] = (st.st_size, len(body), body[:24])
        except FileNotFoundError:
            out[e.name] = "gone"
    # The names the union removed must be gone whether or not the listing still showed them.
    for name in removed:
        assert not os.path.lexists(os.path.join(d, name)), name
        out[name] = "gone"
    # Sizes the kernel cached from the listing agree with the data read.
    for name, v in out.items():
        if v != "gone":
            assert v[0] == v[1], (name, v)
    return out


def test_stat_walk_gets_attributes_with_every_chunk(tmp_path):
    base = tmp_path / "l"
    lowers = build_layers(str(base), spec())
    upper, work = make_dirs(tmp_path / "upper", tmp_path / "work")
    stats = tmp_path / "stats.json"
    with mount_suf(lowers, upper, work, extra_opts=[f"stats={stats}"]) as m:
        r = subprocess.run(["find", os.path.join(m, "big"), "-printf", "%s %p\n"],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        walked = r.stdout.splitlines()
    assert len(walked) == N + 1
    s = stats_of(stats)
    # find reads the whole directory before it stats any entry: with attributes only on
    # the first chunk (the kernel's AUTO heuristic) nearly every entry would be a LOOKUP.
    assert count(s, "readdirplus") >= N // 400, s["ops"]
    assert count(s, "lookup") < 10, s["ops"]


def test_names_changed_between_chunks_show_the_files_there_now(tmp_path):
    results = {}
    for kind in ("kernel", "suf"):
        lowers = build_layers(str(tmp_path / kind / "l"), spec())
        upper, work = make_dirs(tmp_path / kind / "upper", tmp_path / kind / "work")
        if kind == "kernel":
            with mount_kernel(lowers, upper, work) as m:
                results[kind] = interleaved(m)
        else:
            with mount_suf(lowers, upper, work) as m:
                results[kind] = interleaved(m)
    # Which removed names a listing in progress still shows is up to the filesystem; what
    # any shown name stats to is not.
    k, s = results["kernel"], results["suf"]
    assert set(s) - set(k) == set(), sorted(set(s) - set(k))[:5]
    for name in set(k) & set(s):
        assert s[name] == k[name], (name, s[name], k[name])


def test_listing_while_names_change_never_shows_a_removed_or_stale_file(tmp_path):
    """One process lists and stats in a loop while another removes and recreates names:
    every stat that succeeds shows a file that existed, with its true size."""
    lowers = build_layers(str(tmp_path / "l"), spec())
    upper, work = make_dirs(tmp_path / "upper", tmp_path / "work")
    with mount_suf(lowers, upper, work) as m:
        d = os.path.join(m, "big")
        names = sorted(os.listdir(d))[::5]
        pid = os.fork()
        if pid == 0:
            try:
                for rnd in range(3):
                    for name in names:
                        p = os.path.join(d, name)
                        os.unlink(p)
                        if rnd < 2:
                            with open(p, "w") as f:
                                f.write("x" * (100 + rnd))
                os._exit(0)
            except BaseException:
                os._exit(1)
        bad = []
        try:
            for _ in range(4):
                with os.scandir(d) as it:
                    for e in it:
                        try:
                            st = e.stat(follow_symlinks=False)
                            size = os.path.getsize(e.path)
                        except FileNotFoundError:
                            continue
                        if st.st_size != size and e.name not in names:
                            bad.append((e.name, st.st_size, size))
        finally:
            _, status = os.waitpid(pid, 0)
        assert status == 0
        assert bad == []
        # The last round removed them all: none may be seen again.
        assert [n for n in names if os.path.lexists(os.path.join(d, n))] == []
        assert set(os.listdir(d)).isdisjoint(names)
