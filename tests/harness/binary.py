"""Where the repository is and which binary is under test.

SUF_BIN (environment) names the binary; default: .build/release/swiftunionfs, else
.build/debug/swiftunionfs.  SUF_BIN=/usr/bin/fuse-overlayfs runs the suite against
fuse-overlayfs (harness mode: checks the tests, not swiftunionfs).
"""

import os

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def default_bin():
    rel = os.path.join(REPO, ".build", "release", "swiftunionfs")
    dbg = os.path.join(REPO, ".build", "debug", "swiftunionfs")
    return rel if os.path.exists(rel) or not os.path.exists(dbg) else dbg


SUF_BIN = os.environ.get("SUF_BIN") or default_bin()
IS_FUSE_OVERLAYFS = os.path.basename(SUF_BIN) == "fuse-overlayfs"
FUSE_OVERLAYFS = "/usr/bin/fuse-overlayfs"
