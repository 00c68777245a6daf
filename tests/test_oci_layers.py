"""Writes over layers marked in the OCI format (README: ".wh.NAME and .wh..wh..opq
markers are read too").  The kernel does not read OCI markers, so its oracle is the
same stack written in its own format (0/0 devices, trusted.overlay.opaque): the same
operations on swiftunionfs over the OCI-marked copy must give the kernel's outcomes and
merged view, live and after a remount (harness.oracle.differential, suf_fmt='oci')."""

import os
import shutil

from conftest import Dir, Whiteout, differential, snapshot

SPEC = [
    {   # top: whiteouts and opaque directories (written as .wh. files for swiftunionfs)
        "gone": Whiteout(),
        "gonedir": Whiteout(),
        "opq": Dir({"new": "n\n"}, opaque=True),
        "sub": {"x": Whiteout(), "y": "y1\n"},
        "top": "t\n",
        "emptied": {"only": Whiteout()},
    },
    {
        "gone": "g\n", "gonedir": {"q": "q\n"}, "opq": {"old": "o\n", "deep": {"z": "z\n"}},
        "sub": {"x": "x\n", "z": "z\n"}, "keep": "k\n", "keep2": Whiteout(),
        "emptied": {"only": "only\n"},
    },
    {"keep2": "hidden by l2's marker\n", "opq": {"older": "o\n"}, "sub": {"x": "x3\n", "w": "w3\n"}},
]


def write(path, data):
    with open(path, "w") as f:
        f.write(data)


def read(path):
    with open(path) as f:
        return f.read()


def ops(r):
    p = r.p
    r("ls", lambda: sorted(os.listdir(r.root)))
    r("ls sub", lambda: sorted(os.listdir(p("sub"))))
    r("ls opq", lambda: sorted(os.listdir(p("opq"))))
    r("stat gone", os.stat, p("gone"))
    r("create over a whited-out file", write, p("gone"), "back\n")
    r("read it", read, p("gone"))
    r("mkdir over a whited-out dir", os.mkdir, p("gonedir"))
    r("it is empty (opaque)", lambda: os.listdir(p("gonedir")))
    r("create sub/x over its marker", write, p("sub/x"), "x again\n")
    r("ls sub", lambda: sorted(os.listdir(p("sub"))))
    r("copy-up sub/y", write, p("sub/y"), "y changed\n")
    r("rm sub/z", os.unlink, p("sub/z"))
    r("rm opq/new", os.unlink, p("opq/new"))
    r("rmdir opq (empty: its lower entries are hidden)", os.rmdir, p("opq"))
    r("mkdir opq again", os.mkdir, p("opq"))
    r("ls opq", lambda: sorted(os.listdir(p("opq"))))
    r("rename top into sub", os.rename, p("top"), p("sub/top"))
    r("rmdir a dir whose only entry is whited out", os.rmdir, p("emptied"))
    r("stat keep2", os.stat, p("keep2"))
    r("create keep2", write, p("keep2"), "mine\n")
    r("ls", lambda: sorted(os.listdir(r.root)))


def test_writes_over_oci_marked_layers(tmp_path):
    sides = {}

    def no_markers_visible(snap, who):
        bad = [p for p in snap if os.path.basename(p).startswith(".wh.")]
        assert not bad, f"{who}: OCI markers visible: {bad}"

    differential(tmp_path, SPEC, ops, suf_fmt="oci", check=no_markers_visible, sides=sides)
    # the OCI layers are the ones given to swiftunionfs
    assert os.path.exists(os.path.join(sides["s"]["lowers"][0], ".wh.gone"))


def test_rm_rf_and_recreate_over_oci_opaque_dir(tmp_path):
    def op(r):
        p = r.p
        r("rm -rf opq", shutil.rmtree, p("opq"))
        r("stat opq", os.stat, p("opq"))
        r("mkdir opq/deep chain", os.makedirs, p("opq/deep"))
        r("ls opq", lambda: sorted(os.listdir(p("opq"))))
        r("ls opq/deep", lambda: sorted(os.listdir(p("opq/deep"))))
        r("view", lambda: sorted(snapshot(r.root)))
    differential(tmp_path, SPEC, op, suf_fmt="oci")
