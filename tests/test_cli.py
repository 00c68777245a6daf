"""Command line: bad input gives one line on stderr, a non-zero exit and no
mount; --help/--version; background mode; escaped ':' in lowerdir.
Only meaningful against swiftunionfs (skipped for fuse-overlayfs)."""

import os
import re
import signal
import subprocess
import time

import pytest

from conftest import SUF_BIN, is_mounted, make_dirs, mounted_points, _force_unmount

pytestmark = pytest.mark.suf_only


def run_bin(args, timeout=20):
    return subprocess.run([SUF_BIN, *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


@pytest.fixture
def dirs(tmp_path):
    lower, upper, work, mnt = make_dirs(tmp_path / "lower", tmp_path / "upper", tmp_path / "work",
                                        tmp_path / "mnt")
    with open(os.path.join(lower, "f"), "w") as f:
        f.write("f")
    yield dict(lower=lower, upper=upper, work=work, mnt=mnt, tmp=str(tmp_path))
    for m in sorted((m for m in mounted_points() if m.startswith(str(tmp_path))), key=len, reverse=True):
        _force_unmount(m)


class Outcome:
    def __init__(self, returncode, stdout, stderr, mounted):
        self.returncode, self.stdout, self.stderr, self.mounted = returncode, stdout, stderr, mounted


def run_bad(args, mnt, timeout=20):
    """Run the binary on bad input.  If it (wrongly) mounts in the foreground,
    unmount it and report that instead of hanging."""
    p = subprocess.Popen([SUF_BIN, *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, start_new_session=True)
    mounted = False
    deadline = time.monotonic() + timeout
    while p.poll() is None and time.monotonic() < deadline:
        if mnt and is_mounted(mnt):
            mounted = True
            _force_unmount(mnt)
            break
        time.sleep(0.02)
    try:
        out, err = p.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate(timeout=20)
        err += "\n<killed: still running after timeout>"
    return Outcome(p.returncode, out, err, mounted)


def assert_rejected(r, mnt):
    mounted = r.mounted or is_mounted(mnt)
    if is_mounted(mnt):
        _force_unmount(mnt)
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert r.returncode != 0, f"exit 0 for bad input; stderr: {r.stderr!r}"
    assert not mounted, "bad input still mounted something"
    assert len(lines) == 1, f"expected exactly one line on stderr, got {lines!r}"


BAD_CASES = {
    "missing lowerdir dir": lambda d: ["-f", "-o", f"lowerdir={d['tmp']}/nope", d["mnt"]],
    "empty lowerdir": lambda d: ["-f", "-o", "lowerdir=", d["mnt"]],
    "no options at all": lambda d: ["-f", d["mnt"]],
    "unknown option": lambda d: ["-f", "-o", f"lowerdir={d['lower']},frobnicate=1", d["mnt"]],
    "malformed option": lambda d: ["-f", "-o", "lowerdir", d["mnt"]],
    "empty lower in list": lambda d: ["-f", "-o", f"lowerdir={d['lower']}::{d['lower']}", d["mnt"]],
    "unknown flag": lambda d: ["--frobnicate", "-f", "-o", f"lowerdir={d['lower']}", d["mnt"]],
    "missing mountpoint": lambda d: ["-f", "-o", f"lowerdir={d['lower']}"],
    "mountpoint missing": lambda d: ["-f", "-o", f"lowerdir={d['lower']}", f"{d['tmp']}/nomnt"],
    "upperdir without workdir": lambda d: ["-f", "-o", f"lowerdir={d['lower']},upperdir={d['upper']}", d["mnt"]],
    "workdir missing": lambda d: ["-f", "-o", f"lowerdir={d['lower']},upperdir={d['upper']},"
                                              f"workdir={d['tmp']}/nowork", d["mnt"]],
    "upper missing": lambda d: ["-f", "-o", f"lowerdir={d['lower']},upperdir={d['tmp']}/noup,"
                                            f"workdir={d['work']}", d["mnt"]],
    "lowerdir is a file": lambda d: ["-f", "-o", f"lowerdir={d['lower']}/f", d["mnt"]],
    "workdir inside upper": lambda d: ["-f", "-o", f"lowerdir={d['lower']},upperdir={d['upper']},"
                                                   f"workdir={d['upper']}", d["mnt"]],
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_input(dirs, case):
    r = run_bad(BAD_CASES[case](dirs), dirs["mnt"])
    assert_rejected(r, dirs["mnt"])


def test_mountpoint_not_a_directory(dirs):
    f = os.path.join(dirs["tmp"], "afile")
    open(f, "w").close()
    r = run_bad(["-f", "-o", f"lowerdir={dirs['lower']}", f], f)
    assert_rejected(r, f)


def test_upper_inside_lower(dirs):
    up, wk = make_dirs(os.path.join(dirs["lower"], "up"), os.path.join(dirs["tmp"], "w2"))
    r = run_bad(["-f", "-o", f"lowerdir={dirs['lower']},upperdir={up},workdir={wk}", dirs["mnt"]], dirs["mnt"])
    assert_rejected(r, dirs["mnt"])


def test_lower_inside_upper(dirs):
    low = make_dirs(os.path.join(dirs["upper"], "low"))[0]
    r = run_bad(["-f", "-o", f"lowerdir={low},upperdir={dirs['upper']},workdir={dirs['work']}", dirs["mnt"]],
                dirs["mnt"])
    assert_rejected(r, dirs["mnt"])


def test_workdir_on_other_filesystem(dirs):
    t = make_dirs(os.path.join(dirs["tmp"], "tmpfs"))[0]
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", t], check=True, timeout=20)
    try:
        wk = make_dirs(os.path.join(t, "work"))[0]
        r = run_bad(["-f", "-o", f"lowerdir={dirs['lower']},upperdir={dirs['upper']},workdir={wk}",
                     dirs["mnt"]], dirs["mnt"])
        assert_rejected(r, dirs["mnt"])
    finally:
        if is_mounted(dirs["mnt"]):
            _force_unmount(dirs["mnt"])
        subprocess.run(["umount", t], timeout=20)
        if is_mounted(t):
            subprocess.run(["umount", "-l", t], timeout=20)


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help(flag):
    r = run_bin([flag])
    assert r.returncode == 0, r.stderr
    assert (r.stdout + r.stderr).strip()
    assert "lowerdir" in (r.stdout + r.stderr)


VERSION_LINE = re.compile(r"swiftunionfs \d+\.\d+\.\d+(-[0-9A-Za-z.]+)?\n")


@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version(flag, tmp_path):
    """One line 'swiftunionfs X.Y.Z' on stdout, nothing on stderr, exit 0 — also when
    mount options follow (the flag wins, nothing is mounted)."""
    r = run_bin([flag])
    assert (r.returncode, r.stderr) == (0, ""), r
    assert VERSION_LINE.fullmatch(r.stdout), f"not a version line: {r.stdout!r}"
    lower, mnt = make_dirs(tmp_path / "l", tmp_path / "m")
    r2 = run_bin([flag, "-o", f"lowerdir={lower}", mnt])
    assert (r2.returncode, r2.stdout, r2.stderr) == (0, r.stdout, ""), r2
    assert not is_mounted(mnt)


def _daemon_pids(mnt):
    """Pids of processes running SUF_BIN with mnt on their command line."""
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if os.fsencode(mnt) in argv and any(a.endswith(os.fsencode(os.path.basename(SUF_BIN))) for a in argv[:1]):
            pids.append(int(d))
    return pids


def test_background_mode(dirs):
    mnt = dirs["mnt"]
    r = run_bin(["-o", f"lowerdir={dirs['lower']},upperdir={dirs['upper']},workdir={dirs['work']}", mnt],
                timeout=30)
    try:
        assert r.returncode == 0, r.stderr
        deadline = time.monotonic() + 20
        while not is_mounted(mnt) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert is_mounted(mnt), "background mode returned 0 but nothing is mounted"
        pids = _daemon_pids(mnt)
        assert pids, "no daemon process found"
        with open(os.path.join(mnt, "f")) as f:
            assert f.read() == "f"
        with open(os.path.join(mnt, "new"), "w") as f:
            f.write("n")
        u = subprocess.run(["fusermount3", "-u", mnt], capture_output=True, text=True, timeout=20)
        assert u.returncode == 0, u.stderr
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and any(os.path.exists(f"/proc/{p}") and
                                                  open(f"/proc/{p}/stat").read().split()[2] != "Z"
                                                  for p in pids):
            time.sleep(0.05)
        alive = [p for p in pids if os.path.exists(f"/proc/{p}")
                 and open(f"/proc/{p}/stat").read().split()[2] != "Z"]
        for p in alive:
            os.kill(p, signal.SIGKILL)
        assert not alive, "daemon did not exit after unmount"
        assert open(os.path.join(dirs["upper"], "new")).read() == "n"
    finally:
        if is_mounted(mnt):
            _force_unmount(mnt)


def test_escaped_colon_in_lowerdir(tmp_path):
    """README: write '\\:' for a colon inside a lowerdir path.  The option is written
    out here by hand (not by a helper): a:b is the top layer, c the bottom one."""
    odd, second, mnt = make_dirs(tmp_path / "a:b", tmp_path / "c", tmp_path / "mnt")
    for layer, name, content in ((odd, "in_a_colon_b", "x"), (second, "in_c", "y"),
                                 (odd, "both", "top"), (second, "both", "bottom")):
        with open(os.path.join(layer, name), "w") as f:
            f.write(content)
    opts = "lowerdir=" + str(tmp_path) + "/a\\:b:" + str(tmp_path) + "/c"
    p = subprocess.Popen([SUF_BIN, "-f", "-o", opts, mnt], stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while not is_mounted(mnt) and p.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert is_mounted(mnt), f"not mounted with {opts!r}: {p.poll()} {p.stderr.read() if p.poll() is not None else ''}"
        assert sorted(os.listdir(mnt)) == ["both", "in_a_colon_b", "in_c"]
        with open(os.path.join(mnt, "both")) as f:
            assert f.read() == "top"
    finally:
        _force_unmount(mnt)
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(10)


def test_sigterm_unmounts_cleanly(dirs):
    """Foreground daemon stopped by SIGTERM leaves no mount behind."""
    from conftest import start_suf, stop_suf
    m = start_suf([dirs["lower"]], dirs["upper"], dirs["work"])
    try:
        os.kill(m.proc.pid, signal.SIGTERM)
        m.proc.wait(20)
        deadline = time.monotonic() + 10
        while is_mounted(m) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not is_mounted(m), "SIGTERM left the mount behind"
    finally:
        stop_suf(m, check=False)


def test_kernel_volatile_marker_refused(dirs):
    """A kernel `volatile` mount leaves work/incompat/volatile: the upper may have lost
    writes in a crash. The kernel refuses to mount it again, and so does swiftunionfs."""
    os.makedirs(os.path.join(dirs["work"], "work", "incompat", "volatile"))
    r = run_bad(["-f", "-o", f"lowerdir={dirs['lower']},upperdir={dirs['upper']},workdir={dirs['work']}",
                 dirs["mnt"]], dirs["mnt"])
    assert_rejected(r, dirs["mnt"])
    assert "volatile" in r.stderr
    assert os.path.isdir(os.path.join(dirs["work"], "work", "incompat", "volatile")), "marker must stay"


def test_upper_without_xattr_support_refused(dirs):
    """An upper filesystem that cannot hold any xattr cannot record opaque directories:
    refused with one line (tmpfs mounted with user xattrs disabled is not possible, so
    use a filesystem that has none: a FUSE-free ramfs)."""
    top = os.path.join(dirs["tmp"], "ramfs")
    os.mkdir(top)
    r = subprocess.run(["mount", "-t", "ramfs", "ramfs", top], capture_output=True, timeout=20)
    if r.returncode != 0:
        pytest.skip("ramfs not mountable here")
    try:
        up, wk = make_dirs(os.path.join(top, "u"), os.path.join(top, "w"))
        try:
            os.setxattr(up, "user.probe", b"1")
            pytest.skip("this ramfs takes user xattrs")
        except OSError:
            pass
        r = run_bad(["-f", "-o", f"lowerdir={dirs['lower']},upperdir={up},workdir={wk}", dirs["mnt"]], dirs["mnt"])
        assert_rejected(r, dirs["mnt"])
        assert "xattr" in r.stderr
    finally:
        subprocess.run(["umount", top], capture_output=True, timeout=20)


SUBCOMMAND_HELPS = [["mount"], ["inspect"], ["run"], ["image"], ["image", "import"], ["image", "ls"],
                    ["image", "list"], ["image", "inspect"], ["image", "commit"], ["diff"], ["commit"]]


@pytest.mark.parametrize("sub", SUBCOMMAND_HELPS, ids=" ".join)
def test_every_subcommand_answers_help(sub):
    for args in (sub + ["--help"], sub + ["-h"], ["help"] + sub):
        r = run_bin(args)
        assert r.returncode == 0, (args, r.stderr)
        assert r.stderr == ""
        # (mount's usage is the mount forms, without the word)
        usage = "USAGE: swiftunionfs " + ("" if sub == ["mount"] else " ".join(s if s != "list" else "ls" for s in sub))
        assert usage in r.stdout, (args, r.stdout)


@pytest.mark.parametrize("args", [
    ["run", "--bogus", "true"], ["inspect"], ["inspect", "-o", "lowerdir=/", "a", "b"],
    ["image", "ls", "--format", "xml"], ["image", "import"], ["diff", "--bogus"], ["commit", "-O"],
    ["image", "frobnicate"], ["--generate-completion-script", "tcsh"],
])
def test_bad_command_lines_are_one_line_and_status_2(args):
    r = run_bin(args)
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert r.returncode == 2, (args, r.returncode, r.stderr)
    assert len(lines) == 1 and lines[0].startswith("swiftunionfs: "), (args, r.stderr)
    assert r.stdout == ""


@pytest.mark.parametrize("shell,marker", [("bash", "-F _swiftunionfs swiftunionfs"), ("zsh", "#compdef swiftunionfs"),
                                          ("fish", "complete -c 'swiftunionfs'")])
def test_completion_scripts(shell, marker):
    r = run_bin(["--generate-completion-script", shell])
    assert r.returncode == 0, r.stderr
    assert marker in r.stdout
    for word in ("inspect", "run", "image", "bind", "tree", "hostname"):
        assert word in r.stdout, (shell, word)
    if shell == "bash":
        # bash reads it, and then completes subcommands
        probe = subprocess.run(["bash", "-c", r.stdout + "\ncomplete -p swiftunionfs"],
                               capture_output=True, text=True, timeout=20)
        assert probe.returncode == 0 and "swiftunionfs" in probe.stdout, probe.stderr
