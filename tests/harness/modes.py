"""The caching modes that tests of the data path run on: mount option sets by name.

A new mode (FUSE passthrough, say) is one more entry in MODES, and in DIFFERENTIAL when
the differential write tests should run on it too; every test parametrized with
params() then runs on it."""

import pytest

MODES = {
    "default": (),
    "writeback": ("writeback=1",),
    "volatile": ("volatile",),
    "writeback+volatile": ("writeback=1", "volatile"),
    # "passthrough": ("passthrough=1",),   # FUSE passthrough (branch passthrough)
}

# The modes the differential write tests (test_writes, test_file_ops, test_sparse) repeat
# on: those that change how data reaches the layers (volatile only drops fsyncs).
DIFFERENTIAL = ("default", "writeback")


def params(names=None):
    """pytest.param(options, id=name) for each mode named (all by default)."""
    return [pytest.param(MODES[n], id=n) for n in (names or MODES)]
