"""The test harness of swiftunionfs: one small stdlib-only package used by the pytest
suite (tests/conftest.py), the rootless helper (run as another user by Debian's
/usr/bin/python3 inside a user namespace), scripts/stress and scripts/bench.

Import it with tests/ on sys.path:

    sys.path.insert(0, os.path.join(REPO, "tests"))
    from harness import mount_suf, mount_kernel, build_layers, snapshot

Modules (each importable on its own):

  binary     REPO, SUF_BIN, IS_FUSE_OVERLAYFS, FUSE_OVERLAYFS
  procs      run, in_child, fork_worker, reap, kill_and_reap, as_ids, ename, Failure, Hang,
             thread_stacks, descendants, pids_with_arg, alive
  mountinfo  entries, entry_of, fstype_of, is_mounted, mounted_points, below, is_fuse, unescape
  mounts     Daemon, SufMount, start_suf, stop_suf, mount_suf, mount_fuse_overlayfs, read_stats, request_count,
             kernel_mount, kernel_umount, mount_kernel, scratch_fs, ext4_image,
             force_unmount, unmount_all_below, escape_opt_path, overlay_opts, suf_argv,
             own, disown, LIVE, ROOTS, MountError
  fusectl    abort, abort_mount, connection_id, connections_dir
  watchdog   guard, Watchdog, diagnose, abort_ours, in_child, on_child_hang
  layers     File, Dir, Symlink, Hardlink, Whiteout, Fifo, Device, Sparse, OCIWhiteout,
             OCIOpaque, build_layer, build_layers, make_dirs, FORMATS
  trees      snapshot, diff_snapshots, assert_same_tree, check_d_ino, upper_markers,
             is_opaque_dir, opaque_namespaces, sha256_file, file_hash, xattrs_of,
             user_xattrs, kind_of, tree, marker_problems, meta_tree, diff, manifest,
             layers_digest, extent_map, jsonable
  oracle     Recorder, compare_results, compare_by_label, differential, both
  users      TestUser, dev_fuse_mode, subrange, free_subrange
  stress     the stress scenarios (Ctx, SCENARIOS, run_scenario, main): scripts/stress
"""

from .binary import FUSE_OVERLAYFS, IS_FUSE_OVERLAYFS, REPO, SUF_BIN  # noqa: F401
from .layers import (Device, Dir, Fifo, File, Hardlink, OCIOpaque, OCIWhiteout, Sparse,  # noqa: F401
                     Symlink, Whiteout, build_layer, build_layers, make_dirs)
from .mountinfo import fstype_of, is_mounted, mounted_points  # noqa: F401
from .mounts import (Daemon, MountError, SufMount, escape_opt_path, force_unmount,  # noqa: F401
                     kernel_mount, kernel_umount, mount_fuse_overlayfs, mount_kernel, mount_suf,
                     overlay_opts, own, start_suf, stop_suf, unmount_all_below)
from .oracle import Recorder, compare_by_label, compare_results, differential  # noqa: F401
from .procs import Failure, Hang, as_ids, ename, in_child, run  # noqa: F401
from .trees import (assert_same_tree, check_d_ino, diff_snapshots, is_opaque_dir,  # noqa: F401
                    kind_of, sha256_file, snapshot, upper_markers, user_xattrs)
from .watchdog import guard  # noqa: F401
