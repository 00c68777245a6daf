"""pytest plumbing of the swiftunionfs integration suite; the helpers themselves live in
the harness package (tests/harness), re-exported here under their old names so that
`from conftest import mount_suf, build_layers, ...` keeps working.

The binary under test is $SUF_BIN (default: .build/release/swiftunionfs, else
.build/debug/swiftunionfs).  The kernel's overlayfs is the oracle.  Every test works in
its own tmp_path and unmounts whatever it mounted, even on failure.

Green means tested: with --strict (scripts/test passes it) or CI=true every skip is a
failure, and the skip reasons are always listed (-rs).  Every test phase runs under a
hang guard (harness.watchdog): when it outlives its timeout (marker `timeout(S)`,
default $SUF_TEST_TIMEOUT or 300 s), the FUSE connections of our mounts are aborted and
the test fails with what hung, instead of blocking the whole run in a syscall.

Run:  python3 -m pytest tests -q
      SUF_BIN=/usr/bin/fuse-overlayfs python3 -m pytest tests -q   (harness check)
"""

import os
import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import binary, mountinfo, mounts, watchdog  # noqa: E402
from harness.procs import Hang  # noqa: E402
from harness.layers import (Device, Dir, Fifo, File, Hardlink, OCIOpaque, OCIWhiteout,  # noqa: E402,F401
                            Sparse, Symlink, Whiteout, build_layer, build_layers, make_dirs)
from harness.mounts import (MOUNT_TIMEOUT, SufMount, escape_opt_path, mount_fuse_overlayfs,  # noqa: E402,F401
                            mount_kernel, mount_suf, overlay_opts, start_suf, stop_suf)
from harness.oracle import Recorder, compare_results, differential  # noqa: E402,F401
from harness.trees import (assert_same_tree, check_d_ino, diff_snapshots, is_opaque_dir,  # noqa: E402,F401
                           kind_of, sha256_file, snapshot, upper_markers, user_xattrs)

REPO = Path(binary.REPO)
SUF_BIN = binary.SUF_BIN
IS_FUSE_OVERLAYFS = binary.IS_FUSE_OVERLAYFS
TEST_TIMEOUT = int(os.environ.get("SUF_TEST_TIMEOUT", "300"))
# The stress scenarios' seed (tests/test_reliability.py): printed in the header, reused with
# SUF_STRESS_SEED=N.
STRESS_SEED = int(os.environ.get("SUF_STRESS_SEED") or random.randrange(1 << 30))

mounted_points = mountinfo.mounted_points
is_mounted = mountinfo.is_mounted
mount_fstype = mountinfo.fstype_of
_force_unmount = mounts.force_unmount
_unescape_mountinfo = mountinfo.unescape
_new_mountpoint = mounts.new_mountpoint
TestTimeout = Hang       # what a test that outlives its timeout fails with


def strict_mode(config):
    """--strict, or CI set to anything but ''/0/false: a skip is a failure."""
    ci = os.environ.get("CI", "").strip().lower()
    return bool(config.getoption("strict", False)) or ci not in ("", "0", "false", "no")


# --------------------------------------------------------------------------
# configuration, collection, reporting
# --------------------------------------------------------------------------

def pytest_configure(config):
    config.addinivalue_line("markers", "timeout(seconds): hang guard of each phase of the test")
    config.addinivalue_line(
        "markers", "suf_only: only meaningful against swiftunionfs (deselected for fuse-overlayfs)")
    config.addinivalue_line(
        "markers", "fuse_overlayfs_differs(reason): known, legitimate difference of "
                   "fuse-overlayfs from the kernel (xfail when SUF_BIN is fuse-overlayfs)")
    # Always list skip reasons (-rs), so that a skip is never silent.
    if "s" not in (config.option.reportchars or "") and "a" not in (config.option.reportchars or ""):
        config.option.reportchars = (config.option.reportchars or "") + "s"


def pytest_collection_modifyitems(config, items):
    if not IS_FUSE_OVERLAYFS:
        return
    keep, dropped = [], []
    for item in items:
        if item.get_closest_marker("suf_only") and not os.environ.get("SUF_RUN_ALL"):
            dropped.append(item)
            continue
        m = item.get_closest_marker("fuse_overlayfs_differs")
        if m:
            reason = m.args[0] if m.args else m.kwargs.get("reason", "fuse-overlayfs differs")
            item.add_marker(pytest.mark.xfail(reason=reason, strict=False))
        keep.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


def pytest_report_header(config):
    return [f"SUF_BIN={SUF_BIN} (fuse-overlayfs harness mode: {IS_FUSE_OVERLAYFS}); "
            f"strict (skips fail): {strict_mode(config)}",
            f"stress seed {STRESS_SEED} (rerun with SUF_STRESS_SEED={STRESS_SEED})"]


def _strict_skip(report, config):
    if report.skipped and not hasattr(report, "wasxfail") and strict_mode(config):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped, and a skip is a failure under --strict/CI=true: {reason}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    _strict_skip(report, item.config)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector):
    report = yield
    _strict_skip(report, collector.config)
    return report


# --------------------------------------------------------------------------
# hang guard around every phase
# --------------------------------------------------------------------------

def _timeout_of(item):
    marker = item.get_closest_marker("timeout")
    return int(marker.args[0]) if marker else TEST_TIMEOUT


def _guarded(item, phase):
    return watchdog.guard(_timeout_of(item), f"{item.nodeid} ({phase})")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item):
    with _guarded(item, "setup"):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    with _guarded(item, "call"):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item, nextitem):
    with _guarded(item, "teardown"):
        return (yield)


# --------------------------------------------------------------------------
# shared fixtures
# --------------------------------------------------------------------------

@pytest.fixture
def public_tmp():
    """A temp dir other users can pass through and list (pytest's tmp_path is below a 0700
    directory): tests that act as another uid keep their layers and mounts here. Mounts
    left below it are unmounted at the end."""
    import shutil
    import tempfile
    d = tempfile.mkdtemp(prefix="suf-public-", dir="/tmp")
    os.chmod(d, 0o755)
    mounts.own(d)
    try:
        yield Path(d)
    finally:
        mounts.unmount_all_below(d)
        mounts.disown(d)
        shutil.rmtree(d, ignore_errors=True)


# --------------------------------------------------------------------------
# the session
# --------------------------------------------------------------------------

@pytest.fixture(scope="session", autouse=True)
def _environment_check(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("the integration suite needs root (mount, mknod, trusted xattrs)")
    if not os.path.exists("/dev/fuse"):
        pytest.skip("/dev/fuse missing")
    if not os.path.exists(SUF_BIN):
        pytest.exit(f"SUF_BIN {SUF_BIN} does not exist (build it or set SUF_BIN)", returncode=2)
    base = str(tmp_path_factory.getbasetemp())
    mounts.own(base)
    yield
    # Last line of defence: no daemon of ours and nothing mounted below our temp dirs
    # may survive the session.
    for d in list(mounts.LIVE.values()):
        d.cleanup()
    leftovers = []
    for root in sorted(mounts.ROOTS):
        leftovers += mounts.unmount_all_below(root)
    assert not leftovers, f"stale mounts were left behind (now unmounted): {leftovers}"
