"""Op tracing, statistics and `inspect` (no mount for inspect)."""
import json
import os
import signal
import subprocess
import time

import pytest

from conftest import (SUF_BIN, Dir, File, Whiteout, OCIWhiteout, OCIOpaque, build_layers,
                      make_dirs, mount_suf, start_suf, stop_suf)

pytestmark = pytest.mark.skipif("fuse-overlayfs" in SUF_BIN, reason="swiftunionfs-only features")


def layers(tmp_path):
    lowers = build_layers(tmp_path, [
        {"etc": {"motd": "top\n"}, "big": File(b"x" * 300_000)},
        {"etc": {"motd": "bottom\n", "passwd": "root\n"}, "bin": {"tar": "tar\n", "ls": "ls\n"}},
    ])
    upper, work = make_dirs(tmp_path / "u", tmp_path / "w")
    return lowers, str(upper), str(work)


def wait_for(pred, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return pred()


def read_json_lines(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def test_json_trace_names_ops_layers_results_and_events(tmp_path):
    lowers, upper, work = layers(tmp_path)
    trace = tmp_path / "trace.jsonl"
    with mount_suf(lowers, upper, work, extra_opts=(f"trace={trace}", "trace_format=json")) as m:
        assert open(os.path.join(m, "etc/passwd")).read() == "root\n"      # read from lower 2
        with open(os.path.join(m, "big"), "ab") as f:                       # copy-up of a lower file
            f.write(b"y")
        os.unlink(os.path.join(m, "bin/tar"))                               # whiteout
        os.rename(os.path.join(m, "etc/motd"), os.path.join(m, "etc/motd2"))
        with pytest.raises(FileNotFoundError):
            os.stat(os.path.join(m, "nothere"))
    lines = read_json_lines(trace)                                          # every line parses
    ops = [l for l in lines if "op" in l]
    for l in ops:
        assert {"ts", "tid", "op", "path", "args", "layer", "result", "us"} <= l.keys()
    def find(op, path):
        return [l for l in ops if l["op"] == op and l["path"] == path]
    lookup = find("lookup", "/etc/passwd")
    assert lookup and lookup[0]["layer"].startswith("lower 2 ") and lookup[0]["result"] == "OK"
    opened = find("open", "/big")
    assert any("O_WRONLY" in l["args"] or "O_RDWR" in l["args"] for l in opened)
    assert opened[-1]["layer"].startswith("upper ")
    assert find("lookup", "/nothere")[0]["result"] == "ENOENT"
    assert find("unlink", "/bin/tar")[0]["layer"].startswith("upper ")
    assert any("to=/etc/motd2" in l["args"] for l in find("rename", "/etc/motd"))
    events = [l for l in lines if "event" in l]
    copy = [e for e in events if e["event"] == "copy-up" and e["path"] == "/big"]
    assert copy and copy[0]["bytes"] == 300_000 and copy[0]["from"] == "lower 1"
    # The copy-up happened inside the open that asked for it: its time is part of that
    # open's latency (the same clock and unit), so it cannot be larger.
    writer = [l for l in opened if "O_WRONLY" in l["args"] or "O_RDWR" in l["args"]][0]
    assert isinstance(copy[0]["us"], int) and isinstance(writer["us"], int)
    assert copy[0]["us"] <= writer["us"], (copy[0], writer)
    assert any(e["event"] == "whiteout" and e["path"] == "/bin/tar" for e in events)


def test_text_trace_filters_and_signal_toggle(tmp_path):
    lowers, upper, work = layers(tmp_path)
    trace = tmp_path / "trace.log"
    m = start_suf(lowers, upper, work, extra_opts=(f"trace={trace}", "trace_ops=open:unlink", "trace_path=/etc"))
    try:
        open(os.path.join(m, "etc/passwd")).read()
        open(os.path.join(m, "bin/ls")).read()          # outside trace_path
        assert wait_for(lambda: " open /etc/passwd " in trace.read_text())
        text = trace.read_text()
        assert " lookup " not in text and "/bin/ls" not in text
        os.kill(m.proc.pid, signal.SIGUSR1)              # tracing off
        assert wait_for(lambda: "# trace off" in trace.read_text())
        assert open(os.path.join(m, "etc/motd")).read() == "top\n"   # not traced
        os.kill(m.proc.pid, signal.SIGUSR1)              # and on again, without remounting
        assert wait_for(lambda: "# trace on" in trace.read_text())
        os.unlink(os.path.join(m, "etc/motd"))
        # The trace is written in order: once the later unlink is in the file, the open
        # made while tracing was off would be too.  So its absence now means something.
        assert wait_for(lambda: " unlink /etc/motd " in trace.read_text())
        lines = trace.read_text().splitlines()
        assert not [l for l in lines if " open /etc/motd " in l], "traced while tracing was off"
        unlink = [i for i, l in enumerate(lines) if " unlink /etc/motd " in l]
        assert lines.index("# trace off") < lines.index("# trace on") < unlink[0], lines
        line = lines[unlink[0]]
        assert line.split()[-2] == "OK" and line.endswith("us")
    finally:
        stop_suf(m)


def test_statistics_json_on_signal_and_at_unmount(tmp_path):
    lowers, upper, work = layers(tmp_path)
    stats = tmp_path / "stats.json"
    m = start_suf(lowers, upper, work, extra_opts=(f"stats={stats}",))
    try:
        for _ in range(5):
            open(os.path.join(m, "etc/passwd")).read()
        with open(os.path.join(m, "big"), "ab") as f:
            f.write(b"z")
        with pytest.raises(FileNotFoundError):
            os.stat(os.path.join(m, "missing"))
        os.kill(m.proc.pid, signal.SIGUSR2)
        assert wait_for(stats.exists)
        s = json.loads(stats.read_text())
        assert s["ops"]["open"]["count"] >= 2
        assert s["errors"].get("ENOENT", 0) >= 1
        assert s["copy_ups"]["count"] == 1 and s["copy_ups"]["bytes"] == 300_000
        assert s["bytes_written"] >= 1
        for v in s["ops"].values():
            assert v["p50_us"] <= v["p99_us"] <= v["max_us"]
    finally:
        stop_suf(m)
    final = json.loads(stats.read_text())
    assert final["ops"]["lookup"]["count"] >= s["ops"]["lookup"]["count"]
    assert "statistics" in m.stderr() and "copy-ups 1" in m.stderr()


def run_inspect(lowers, upper, *args):
    opts = "lowerdir=" + ":".join(lowers) + (f",upperdir={upper}" if upper else "")
    r = subprocess.run([SUF_BIN, "inspect", "-o", opts, *args], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_inspect_every_marker_kind(tmp_path):
    lowers = build_layers(tmp_path, [
        {"d": Dir({"keep": "k"}, opaque=True), ".wh.oci": OCIWhiteout(), "o": {".wh..wh..opq": OCIOpaque(), "n": "n"}},
        {"d": {"old": "o"}, "oci": "oci\n", "o": {"hidden": "h"}, "f": "lower f\n", "gone": "g\n", "m": {"a": "a"}},
    ])
    upper, _ = make_dirs(tmp_path / "u", tmp_path / "w")
    os.mknod(os.path.join(upper, "gone"), 0o020000, 0)
    open(os.path.join(upper, "f"), "w").write("changed\n")
    os.mkdir(os.path.join(upper, "m"))
    before = {p: os.stat(os.path.join(upper, p)).st_mtime_ns for p in os.listdir(upper)}

    out = run_inspect(lowers, upper, "gone")
    assert "whiteout (0/0 character device" in out and "result: hidden: whited out in upper" in out
    out = run_inspect(lowers, upper, "oci")
    assert "whiteout (.wh.oci file, OCI format)" in out and "hidden: whited out in lower 1" in out
    out = run_inspect(lowers, upper, "d")
    assert "opaque directory (trusted.overlay.opaque=y" in out and "(shadowed)" in out
    out = run_inspect(lowers, upper, "o")
    assert "opaque directory (.wh..wh..opq)" in out
    out = run_inspect(lowers, upper, "f")
    assert "result: visible: from upper" in out and "(shadowed)" in out
    out = run_inspect(lowers, upper, "m")
    assert "directory from upper + lower 2" in out
    out = run_inspect(lowers, upper, "nope")
    assert "result: no layer has it" in out
    tree = run_inspect(lowers, upper, "--tree", "/")
    rows = {line.split()[1]: line.split()[0] for line in tree.splitlines()[1:] if line.startswith("  ") and len(line.split()) > 1}
    assert rows["gone"] == "whited-out" and rows["oci"] == "whited-out"
    assert rows["f"] == "copied-up/changed" and rows["d"] == "shadows"
    # inspect never writes: upper is as it was, and no work dir appeared
    assert {p: os.stat(os.path.join(upper, p)).st_mtime_ns for p in os.listdir(upper)} == before
