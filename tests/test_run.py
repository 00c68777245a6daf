"""`swiftunionfs run`: a command in a private root made of the union.

The root is a tiny busybox image the tests build (busybox-static and its applet
links, /etc/os-release).  Every test runs twice: as root, and as an unprivileged
user (`sufrun-test`, created when missing and removed again; run through
setpriv), where `run` makes a
user namespace mapping that user to root.  Each test checks what the command saw
and that nothing is left behind: no mount on the host, no daemon, no temporary
mountpoint.
Only meaningful against swiftunionfs (skipped for fuse-overlayfs).
"""

import os
import shutil
import signal
import subprocess
import tempfile
import uuid

import pytest

from conftest import SUF_BIN, escape_opt_path
from harness import mounts
from harness.users import TestUser, dev_fuse_mode

pytestmark = pytest.mark.suf_only

BUSYBOX = "/bin/busybox"
OS_RELEASE = 'NAME="SufTestOS"\nID=suftest\nVERSION_ID=1\n'
ROOT_DIRS = ["bin", "etc", "root", "tmp", "usr", "var"]
RUN_TIMEOUT = 30


# --------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------

@pytest.fixture(scope="session")
def test_user():
    """A fresh unprivileged user (its own name, so that concurrent runs never share it),
    removed at the end."""
    if not os.path.exists(BUSYBOX):
        pytest.skip(f"{BUSYBOX} missing (apt-get install busybox-static)")
    with TestUser() as u:
        yield u.pw


@pytest.fixture(scope="session")
def fuse_for_users():
    """/dev/fuse usable by the test user; the old mode is restored afterwards."""
    with dev_fuse_mode(0o666):
        yield


def build_rootfs(root):
    """A busybox root: /bin/busybox, relative links for every applet, /etc/os-release."""
    for d in ROOT_DIRS:
        os.makedirs(os.path.join(root, d), exist_ok=True)
    os.chmod(os.path.join(root, "tmp"), 0o1777)
    shutil.copy2(BUSYBOX, os.path.join(root, "bin", "busybox"))
    applets = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True,
                             timeout=30, check=True).stdout.split()
    for a in applets:
        if a != "busybox":
            os.symlink("busybox", os.path.join(root, "bin", a))
    with open(os.path.join(root, "etc", "os-release"), "w") as f:
        f.write(OS_RELEASE)


def _chown_tree(top, uid, gid):
    os.chown(top, uid, gid)
    for dirpath, dirnames, filenames in os.walk(top):
        for n in dirnames + filenames:
            os.lchown(os.path.join(dirpath, n), uid, gid)


def proc_cmdlines():
    out = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                out[int(pid)] = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            pass
    return out


def mountinfo_lines():
    with open("/proc/self/mountinfo") as f:
        return [l.rstrip("\n") for l in f if l.strip()]


class Box:
    """One test's layers and a way to `run` in them, as root or as the test user."""

    def __init__(self, mode, base, user):
        self.mode, self.base, self.user = mode, base, user
        self.lower = os.path.join(base, "rootfs")
        self.upper = os.path.join(base, "upper")
        self.work = os.path.join(base, "work")
        self.tmp = os.path.join(base, "tmp")       # TMPDIR: where run makes its mountpoint
        self.fsname = "sufrun-" + uuid.uuid4().hex[:12]
        for d in (self.upper, self.work, self.tmp):
            os.makedirs(d)
        build_rootfs(self.lower)
        self.bin = SUF_BIN
        if mode == "user":
            self.bin = os.path.join(base, "swiftunionfs")
            shutil.copy2(SUF_BIN, self.bin)
            _chown_tree(base, user.pw_uid, user.pw_gid)
            os.chmod(base, 0o755)

    def opts(self):
        return (f"lowerdir={escape_opt_path(self.lower)},upperdir={escape_opt_path(self.upper)},"
                f"workdir={escape_opt_path(self.work)},fsname={self.fsname}")

    def argv(self, *args, opts=None):
        cmd = [self.bin, "run", "-o", opts or self.opts(), *args]
        if self.mode == "user":
            os.chmod("/dev/fuse", 0o666)  # someone may have reset it since the fixture
            # setpriv execs the command itself: signals reach `run` directly.
            cmd = ["setpriv", f"--reuid={self.user.pw_uid}", f"--regid={self.user.pw_gid}",
                   "--init-groups", "--", *cmd]
        return cmd

    def env(self):
        e = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "TMPDIR": self.tmp,
             "TERM": "xterm-test", "CALLER_ONLY": "leak"}
        return e

    def run(self, *args, opts=None, timeout=RUN_TIMEOUT, input=None):
        return subprocess.run(self.argv(*args, opts=opts), capture_output=True, text=True,
                              timeout=timeout, env=self.env(), input=input,
                              stdin=None if input is not None else subprocess.DEVNULL)

    def sh(self, script, *flags, **kw):
        return self.run(*flags, "--", "/bin/sh", "-c", script, **kw)

    def leftovers(self):
        """What must not outlive a run: daemons, mounts, temporary mountpoints."""
        problems = []
        for pid, cmd in proc_cmdlines().items():
            if self.upper in cmd and pid != os.getpid():
                problems.append(f"process {pid} still running: {cmd}")
        for line in mountinfo_lines():
            if self.fsname in line or self.base in line:
                problems.append(f"mount left on the host: {line}")
        left = os.listdir(self.tmp)
        if left:
            problems.append(f"temporary files left in TMPDIR: {left}")
        return problems


@pytest.fixture(params=["root", "user"])
def box(request, test_user):
    mode = request.param
    if mode == "user":
        request.getfixturevalue("fuse_for_users")
    # Not below pytest's basetemp: that is 0700 root, and the test user must reach it.
    base = tempfile.mkdtemp(prefix="sufrun-", dir="/tmp")
    os.chmod(base, 0o755)
    mounts.own(base)
    b = Box(mode, base, test_user)
    before = mountinfo_lines()
    try:
        yield b
        assert b.leftovers() == []
        # Other mounts may come and go on a shared machine; none of ours may appear.
        after = mountinfo_lines()
        new = [l for l in after if l not in before]
        assert not [l for l in new if "swiftunionfs-run" in l or b.base in l or b.fsname in l]
    finally:
        for pid, cmd in proc_cmdlines().items():
            if b.upper in cmd and pid != os.getpid():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        mounts.unmount_all_below(base)
        mounts.disown(base)
        shutil.rmtree(base, ignore_errors=True)


def one_line(err):
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got: {err!r}"
    assert lines[0].startswith("swiftunionfs: "), lines[0]
    return lines[0]


# --------------------------------------------------------------------------
# the root and the union
# --------------------------------------------------------------------------

def test_sees_only_the_image(box):
    r = box.run("ls", "/")
    assert r.returncode == 0, r.stderr
    assert sorted(r.stdout.split()) == sorted(ROOT_DIRS + ["dev", "proc", "sys"])


def test_reads_the_layer(box):
    r = box.run("cat", "/etc/os-release")
    assert (r.returncode, r.stdout, r.stderr) == (0, OS_RELEASE, "")


def test_write_lands_in_upper(box):
    r = box.sh("echo hi > /newfile && cat /newfile")
    assert (r.returncode, r.stdout) == (0, "hi\n"), r.stderr
    with open(os.path.join(box.upper, "newfile")) as f:
        assert f.read() == "hi\n"
    assert not os.path.exists(os.path.join(box.lower, "newfile"))
    # The next run sees the change: it is kept in upper.
    r = box.run("cat", "/newfile")
    assert (r.returncode, r.stdout) == (0, "hi\n"), r.stderr


def test_exit_status_passes_through(box):
    assert box.sh("exit 7").returncode == 7
    assert box.run("true").returncode == 0
    assert box.sh("kill -9 $$").returncode == 128 + 9


def test_host_mounts_unchanged(box):
    before = mountinfo_lines()
    r = box.sh("cat /proc/self/mountinfo")
    assert r.returncode == 0, r.stderr
    inside = r.stdout
    after = mountinfo_lines()
    # Lines under /tmp and /work may belong to concurrent test runs; the rest is exact.
    stable = lambda lines: [l for l in lines if not l.split()[4].startswith(("/tmp/", "/work/"))]
    assert stable(before) == stable(after)
    assert not [l for l in after if box.fsname in l]
    # Inside, the union is / and the host's mounts are gone.
    root_line = [l for l in inside.splitlines() if l.split()[4] == "/"]
    assert len(root_line) == 1 and "fuse.swiftunionfs" in root_line[0], inside
    assert box.fsname in root_line[0]
    assert not [l for l in inside.splitlines() if l.split()[4].startswith("/tmp/")]


def test_no_daemon_after_exit(box):
    r = box.sh("echo started")
    assert r.stdout == "started\n"
    assert box.leftovers() == []


def test_background_process_does_not_keep_it_alive(box):
    """run returns when its command does (box.sh's RUN_TIMEOUT is the hang guard: a run
    waiting for the background sleep fails with TimeoutExpired), and the sleep is gone."""
    r = box.sh("sleep 1000 & echo bg")
    assert (r.returncode, r.stdout) == (0, "bg\n"), r.stderr
    assert not [c for c in proc_cmdlines().values() if c.strip() == "sleep 1000"]


# --------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------

def test_missing_command(box):
    r = box.run("no-such-command")
    assert r.returncode == 127
    assert "no-such-command" in one_line(r.stderr)
    r = box.run("/no/such/path")
    assert r.returncode == 127
    one_line(r.stderr)


def test_not_executable(box):
    r = box.run("/etc/os-release")
    assert r.returncode == 126
    one_line(r.stderr)


def test_missing_layer(box):
    opts = box.opts().replace(f"lowerdir={escape_opt_path(box.lower)}", "lowerdir=/no/such/layer")
    r = box.run("true", opts=opts)
    assert r.returncode != 0
    assert "/no/such/layer" in one_line(r.stderr)


def test_bad_flag(box):
    r = box.run("--no-such-flag", "true")
    assert r.returncode == 2
    one_line(r.stderr)


# --------------------------------------------------------------------------
# environment, devices, options
# --------------------------------------------------------------------------

def test_clean_environment(box):
    r = box.run("--env", "FOO=bar", "--env", "HOME=/home/x", "env")
    assert r.returncode == 0, r.stderr
    env = dict(l.split("=", 1) for l in r.stdout.splitlines() if "=" in l)
    env.pop("PWD", None)
    env.pop("SHLVL", None)  # busybox env may add nothing, a shell would add these
    assert env == {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                   "HOME": "/home/x", "TERM": "xterm-test", "FOO": "bar"}


def test_identity_and_devices(box):
    script = ("id -u; echo x > /dev/null && echo null-ok; head -c 4 /dev/zero | wc -c; "
              "head -c 8 /dev/urandom | wc -c; test -c /dev/pts/ptmx && echo ptmx-ok; "
              "test -L /dev/ptmx && echo link-ok; touch /dev/shm/s && echo shm-ok; "
              "test -d /proc/self && echo proc-ok; ls /sys | grep -q . && echo sys-ok")
    r = box.sh(script)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["0", "null-ok", "4", "8", "ptmx-ok", "link-ok", "shm-ok",
                                "proc-ok", "sys-ok"]


def test_sys_is_read_only(box):
    r = box.sh("touch /sys/x")
    assert r.returncode != 0
    assert "Read-only" in r.stderr or "read-only" in r.stderr.lower(), r.stderr


def test_pid_namespace(box):
    r = box.sh("echo $$; ps -o pid | wc -l", "--pid")
    assert r.returncode == 0, r.stderr
    pid, count = r.stdout.split()
    assert pid == "1"
    assert int(count) <= 4  # header, sh, ps (and wc)


def test_hostname(box):
    r = box.sh("hostname; echo $HOSTNAME", "--hostname", "suf-box")
    assert (r.returncode, r.stdout) == (0, "suf-box\nsuf-box\n"), r.stderr
    assert os.uname().nodename != "suf-box"


def test_workdir(box):
    r = box.run("--workdir", "/etc", "pwd")
    assert (r.returncode, r.stdout) == (0, "/etc\n"), r.stderr
    r = box.run("--workdir", "/no/such", "pwd")
    assert r.returncode != 0
    one_line(r.stderr)


def test_binds(box):
    share = os.path.join(box.base, "share")
    os.makedirs(share)
    with open(os.path.join(share, "x"), "w") as f:
        f.write("shared\n")
    if box.mode == "user":
        _chown_tree(share, box.user.pw_uid, box.user.pw_gid)
    r = box.sh("cat /mnt/ro/x; touch /mnt/ro/y 2>/dev/null && echo ro-writable; "
               "echo w > /mnt/rw/z && echo rw-ok",
               "--bind", f"{share}:/mnt/ro:ro", "--bind", f"{share}:/mnt/rw")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "shared\nrw-ok\n"
    assert sorted(os.listdir(share)) == ["x", "z"]
    r = box.run("--bind", "/no/such/dir:/x", "true")
    assert r.returncode != 0
    one_line(r.stderr)


def test_stdin_passes_through(box):
    r = box.run("cat", input="through stdin\n")
    assert (r.returncode, r.stdout) == (0, "through stdin\n"), r.stderr


def test_signals_are_forwarded(box):
    p = subprocess.Popen(box.argv("/bin/sh", "-c", 'trap "echo got-term; exit 3" TERM; echo ready; '
                                                   'while :; do sleep 0.1; done'),
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=box.env())
    try:
        assert p.stdout.readline() == "ready\n"
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=RUN_TIMEOUT)
        assert (p.returncode, out) == (3, "got-term\n"), err
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(timeout=RUN_TIMEOUT)


# --------------------------------------------------------------------------
# the command line: ArgumentParser for its shape, argv's bytes for the values
# --------------------------------------------------------------------------

def test_command_bytes_reach_the_command_intact(box):
    """COMMAND and its ARGs go to execve byte for byte: not UTF-8, a lone continuation
    byte, a flag run itself knows — the shell prints each argument's bytes in hex."""
    args = [b"caf\xe9", b"\xff\xfe\x80", "cafe\u0301".encode(), b"--pid", b"--help", b"-o"]
    argv = [os.fsencode(a) for a in box.argv("--", "/bin/sh", "-c",
                                             'for a in "$@"; do printf %s "$a" | od -An -tx1 | tr -d " \\n"; echo; done',
                                             "sh")] + args
    r = subprocess.run(argv, capture_output=True, timeout=RUN_TIMEOUT, env=box.env(), stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode().split() == [a.hex() for a in args]


def test_flags_after_the_command_are_its_own(box):
    r = box.run("/bin/sh", "-c", 'echo "$@"', "sh", "--help", "--pid", "-o", "x")
    assert (r.returncode, r.stdout) == (0, "--help --pid -o x\n"), r.stderr


def test_help_is_ours_before_the_command(box):
    for flag in ("--help", "-h"):
        r = box.run(flag)
        assert r.returncode == 0, r.stderr
        assert "USAGE: swiftunionfs run" in r.stdout and "--bind" in r.stdout
    assert box.leftovers() == []
