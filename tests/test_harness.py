"""The harness's own promise (issue 17): a hung daemon costs one test its timeout, not
the whole run.  A test whose daemon stops answering must fail with what hung, its FUSE
connection aborted, and leave no mount behind."""

import os
import signal
import subprocess
import sys

import pytest

from conftest import make_dirs, mount_suf
from harness import mountinfo, watchdog
from harness.procs import Hang

HERE = os.path.dirname(os.path.abspath(__file__))


def test_guard_aborts_a_hung_fuse_request(tmp_path):
    lower, upper, work = make_dirs(tmp_path / "l", tmp_path / "u", tmp_path / "w")
    with open(os.path.join(lower, "f"), "w") as f:
        f.write("f")
    with pytest.raises(Hang) as hang:
        with mount_suf([lower], upper, work) as m:
            os.kill(m.pid, signal.SIGSTOP)
            try:
                with watchdog.guard(2, "stat on a stopped daemon", grace=5):
                    os.stat(os.path.join(m, "f"))
            finally:
                os.kill(m.pid, signal.SIGCONT)
    report = str(hang.value)
    assert "did not finish within 2s" in report
    assert "os.stat(os.path.join(m, \"f\"))" in report, report      # where the test was stuck
    assert "aborted FUSE connection" in report and " [T] " in report, report   # the stopped daemon's threads
    assert not mountinfo.is_mounted(m), "the aborted mount was left behind"


@pytest.mark.timeout(120)
def test_a_hanging_test_fails_alone_and_leaves_no_mount(tmp_path):
    """A separate pytest runs tests/selftest_hang.py (timeout(3), the daemon stopped
    under a stat): it must fail within its own time, name what hung, and nothing of it
    may stay mounted."""
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        f"--basetemp={tmp_path}/inner", os.path.join(HERE, "selftest_hang.py")],
                       capture_output=True, text=True, timeout=110, cwd=HERE)
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert "1 failed" in out, out
    assert "did not finish within 3s (hang guard)" in out, out
    assert "aborted FUSE connection" in out, out
    assert "trace " in out, "the daemon's trace tail is not in the report: " + out[-3000:]
    left = [m.mnt for m in mountinfo.below(tmp_path)]
    assert not left, f"stale mounts: {left}"
