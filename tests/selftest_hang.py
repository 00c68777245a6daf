"""Not collected by the suite (no test_ prefix): tests/test_harness.py runs it in a
separate pytest to see the per-test hang guard fail a test whose daemon hangs."""

import os
import signal

import pytest

from conftest import make_dirs, mount_suf


@pytest.mark.timeout(3)
def test_stat_on_a_stopped_daemon(tmp_path):
    lower, upper, work = make_dirs(tmp_path / "l", tmp_path / "u", tmp_path / "w")
    with open(os.path.join(lower, "f"), "w") as f:
        f.write("f")
    with mount_suf([lower], upper, work, extra_opts=(f"trace={tmp_path}/trace.log",)) as m:
        os.kill(m.pid, signal.SIGSTOP)      # every request now waits forever
        try:
            os.stat(os.path.join(m, "f"))
        finally:
            os.kill(m.pid, signal.SIGCONT)
