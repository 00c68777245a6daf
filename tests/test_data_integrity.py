"""Speed never costs data: the same data-integrity stress on every caching mode.

- test_file_data: random reads, writes, appends, truncates, mmap reads and writes,
  fallocate / punch hole, O_DIRECT, page-cache drops and fsyncs on files that start in a
  lower layer, every read checked against an in-memory model; then, after unmounting,
  the kernel's overlay over the same lower and upper layers (and swiftunionfs
  remounted) must hold exactly the model.
- test_namespace: several processes create, rename, link, unlink, chmod, truncate and
  write their own names in shared (merged) directories at once; the union must show the
  tree their models add up to (names, types, sizes, modes, contents, link counts), and
  so must the kernel's overlay over the same layers after unmounting.

The seed is the suite's stress seed (printed in the header; SUF_STRESS_SEED=N reruns it);
SUF_INTEGRITY_OPS=N sets the number of file operations per mode (default 15000).

The modes are tests/harness/modes.py's MODES: a new caching mode (FUSE passthrough)
is one more entry there.
"""

import multiprocessing
import os
import random

import pytest

from conftest import STRESS_SEED, File, build_layers, make_dirs, mount_kernel, mount_suf
from harness import integrity, modes

MODE_PARAMS = modes.params()   # every mode (tests/harness/modes.py)

FILE_OPS = int(os.environ.get("SUF_INTEGRITY_OPS", "15000"))
WORKERS = 4
NAMESPACE_OPS = 1500      # per worker


def initial_files(rng):
    """The files of the file stress, all in lower layers: name -> (layer index, content)."""
    return {
        "empty": (1, b""),
        "small": (1, rng.randbytes(5000)),
        "pages": (1, rng.randbytes(2 * integrity.PAGE)),
        "sub/mid": (0, rng.randbytes(70_000)),
        "big": (0, rng.randbytes(600_000)),
    }


def layer_specs(files):
    specs = [{}, {}]
    for name, (layer, content) in files.items():
        d = specs[layer]
        *dirs, base = name.split("/")
        for part in dirs:
            d = d.setdefault(part, {})
        d[base] = File(content)
    specs[1].setdefault("sub", {})
    return specs


@pytest.mark.timeout(240)
@pytest.mark.parametrize("opts", MODE_PARAMS)
def test_file_data(tmp_path, opts):
    seed = STRESS_SEED
    print(f"file stress: seed {seed} (SUF_STRESS_SEED={seed}), {FILE_OPS} operations, options {opts}")
    rng = random.Random(seed)
    files = initial_files(rng)
    lowers = build_layers(str(tmp_path / "layers"), layer_specs(files))
    upper, work, xwork = make_dirs(*(str(tmp_path / n) for n in ("upper", "work", "xwork")))
    stress = None
    with mount_suf(lowers, upper, work, extra_opts=opts) as m:
        stress = integrity.FileStress(m, {n: c for n, (_, c) in files.items()}, rng, seed)
        try:
            stress.run(FILE_OPS)
            for name in sorted(files):
                stress.op_full_check(name)
        finally:
            stress.close()
    # What the union wrote is what the model says: through the kernel's overlay over the
    # same layers, and through swiftunionfs again.
    with mount_kernel(lowers, upper, xwork) as k:
        stress.check_all(k, "the kernel's overlay over the same layers after unmounting")
    with mount_suf(lowers, upper, work, extra_opts=opts) as m:
        stress.check_all(m, "swiftunionfs remounted")
    for name, (layer, content) in files.items():
        with open(os.path.join(lowers[layer], name), "rb") as f:
            assert f.read() == content, f"lower file {name} was modified"


def namespace_layers(tmp_path, rng):
    """Shared directories d0 (both lowers), d1 and d1/sub (bottom), d2 (top); each worker
    owns a few lower files in them. Returns (lowers, dirs, worker -> {relpath: content})."""
    dirs = ["d0", "d1", "d1/sub", "d2", "."]
    specs = [{"d0": {}, "d2": {}, "keep": File(b"not ours")}, {"d0": {}, "d1": {"sub": {}}}]
    owned = {w: {} for w in range(WORKERS)}
    for w in range(WORKERS):
        for k in range(6):
            d = rng.choice(["d0", "d1", "d1/sub", "d2"])
            layer = 0 if d == "d2" else (1 if d.startswith("d1") else rng.randint(0, 1))
            content = rng.randbytes(rng.randint(0, 4000))
            node = specs[layer]
            for part in d.split("/"):
                node = node[part]
            node[f"w{w}_l{k}"] = File(content)
            owned[w][f"{d}/w{w}_l{k}"] = content
    lowers = build_layers(str(tmp_path / "layers"), specs)
    return lowers, dirs, owned


def ours(rel):
    return os.path.basename(rel).startswith("w")


@pytest.mark.timeout(240)
@pytest.mark.parametrize("opts", MODE_PARAMS)
def test_namespace(tmp_path, opts):
    seed = STRESS_SEED
    print(f"namespace stress: seed {seed} (SUF_STRESS_SEED={seed}), {WORKERS} processes x "
          f"{NAMESPACE_OPS} operations, options {opts}")
    rng = random.Random(seed)
    lowers, dirs, owned = namespace_layers(tmp_path, rng)
    upper, work, xwork = make_dirs(*(str(tmp_path / n) for n in ("upper", "work", "xwork")))
    ctx = multiprocessing.get_context("fork")
    with mount_suf(lowers, upper, work, extra_opts=opts) as m:
        queue = ctx.Queue()
        procs = [ctx.Process(target=integrity.namespace_worker,
                             args=(str(m), w, dirs, owned[w], seed, NAMESPACE_OPS, queue))
                 for w in range(WORKERS)]
        for p in procs:
            p.start()
        results = []
        try:
            for _ in procs:
                results.append(queue.get(timeout=180))
        finally:
            for p in procs:
                p.join(10)
                if p.is_alive():
                    p.kill()
                    p.join()
        errors = [r[2] for r in results if r[0] == "error"]
        assert not errors, f"seed {seed}:\n" + "\n".join(errors)
        model = integrity.merge_models([r[2] for r in sorted(results, key=lambda r: r[1])])
        want = model.expected(ours)
        shown = integrity.observe(m, ours)
        d = integrity.diff_trees(want, shown, "model", "swiftunionfs")
        assert not d, f"seed {seed} (SUF_STRESS_SEED={seed}): the union differs from the model:\n  " + "\n  ".join(d)
        with open(os.path.join(m, "keep"), "rb") as f:
            assert f.read() == b"not ours"
    with mount_kernel(lowers, upper, xwork) as k:
        seen = integrity.observe(k, ours)
    d = integrity.diff_trees(shown, seen, "swiftunionfs", "kernel overlay")
    assert not d, f"seed {seed}: the kernel's overlay over the same layers shows another tree:\n  " + "\n  ".join(d)
