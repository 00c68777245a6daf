"""README: copy-up copies a lower file's data "holes kept".

Checked by layout, not only by content: the allocated blocks of the copy in upper and
its SEEK_DATA/SEEK_HOLE map, next to the kernel's overlay doing the same copy-up of an
identical file.  The kernel copies in 1 MiB chunks and skips the chunks that are holes,
so every hole it keeps must be a hole in swiftunionfs's copy too, and the copy may not
allocate more than the kernel's."""

import os

import pytest

from conftest import Sparse, build_layers, make_dirs, mount_kernel, mount_suf
from harness import modes
from harness.trees import extent_map, sha256_file

MiB = 1 << 20
SPARSE = {
    # 16 MiB, data in a few places: the rest must stay holes
    "big": Sparse(16 * MiB, {0: b"head" * 1024, 5 * MiB: b"middle" * 10000, 16 * MiB - 4096: b"t" * 4096}),
    # a file that is one hole with a byte at its end
    "tail": Sparse(8 * MiB, {8 * MiB - 1: b"x"}),
    # all holes
    "empty": Sparse(4 * MiB, {}),
}

COPY_UPS = {
    "chmod (metadata only)": lambda p: os.chmod(p, 0o600),
    "open for writing": lambda p: os.close(os.open(p, os.O_WRONLY)),
    "append one byte": lambda p: open(p, "ab").write(b"!"),
}


def _holes(extents, size):
    out, pos = [], 0
    for start, end in extents:
        if start > pos:
            out.append((pos, start))
        pos = end
    if pos < size:
        out.append((pos, size))
    return out


def _contains(holes, hole):
    return any(a <= hole[0] and hole[1] <= b for a, b in holes)


def _copy_up(tmp_path, side, how, mode=()):
    base = tmp_path / side
    lowers = build_layers(base, [SPARSE])
    upper, work = make_dirs(base / "upper", base / "work")
    out = {}
    mount = mount_kernel(lowers, upper, work) if side == "kernel" else mount_suf(lowers, upper, work, extra_opts=mode)
    with mount as m:
        for name in SPARSE:
            lower_map = extent_map(os.path.join(lowers[0], name))
            out[name, "merged map before"] = (extent_map(os.path.join(m, name)), lower_map)
            COPY_UPS[how](os.path.join(m, name))
            st = os.stat(os.path.join(m, name))
            up = os.path.join(upper, name)
            ust = os.stat(up)
            out[name, "blocks"] = ust.st_blocks
            out[name, "upper map"] = extent_map(up)
            out[name, "size"] = ust.st_size
            out[name, "hash"] = sha256_file(up)
            out[name, "merged blocks"] = (st.st_blocks, ust.st_blocks)
            out[name, "merged map"] = (extent_map(os.path.join(m, name)), out[name, "upper map"])
    return out


@pytest.mark.parametrize("mode", modes.params(modes.DIFFERENTIAL))
@pytest.mark.parametrize("how", sorted(COPY_UPS))
def test_copy_up_keeps_holes(tmp_path, how, mode):
    k = _copy_up(tmp_path, "kernel", how)
    s = _copy_up(tmp_path, "suf", how, mode)
    problems = []
    for name in SPARSE:
        if (s[name, "size"], s[name, "hash"]) != (k[name, "size"], k[name, "hash"]):
            problems.append(f"{name}: content differs from the kernel's copy")
        khole = _holes(k[name, "upper map"], k[name, "size"])
        shole = _holes(s[name, "upper map"], s[name, "size"])
        lost = [h for h in khole if not _contains(shole, h)]
        if lost:
            problems.append(f"{name}: holes the kernel kept are data in swiftunionfs's copy: {lost} "
                            f"(suf map {s[name, 'upper map']}, kernel map {k[name, 'upper map']})")
        if s[name, "blocks"] > k[name, "blocks"]:
            problems.append(f"{name}: {s[name, 'blocks']} blocks allocated in upper, the kernel's copy "
                            f"{k[name, 'blocks']}")
        merged, lower = s[name, "merged map before"]
        if merged != lower:
            problems.append(f"{name}: SEEK_DATA/SEEK_HOLE through the mount {merged} != the lower file's {lower}")
        merged, up = s[name, "merged map"]
        if merged != up:
            problems.append(f"{name}: SEEK_DATA/SEEK_HOLE through the mount {merged} != the upper copy's {up}")
        mb, ub = s[name, "merged blocks"]
        if mb != ub:
            problems.append(f"{name}: st_blocks through the mount {mb} != the upper copy's {ub}")
    assert not problems, "\n".join(problems)
