"""Snapshots of trees (a merged view, a layer, an upper) and their differences.

Names are str with surrogateescape (os.fsencode(name) gives the exact bytes); nothing
follows a symlink."""

import errno
import hashlib
import os
import stat

from . import binary

# fuse-overlayfs keeps private user.fuseoverlayfs.* xattrs (harness mode only)
HIDDEN_XATTRS = ("user.fuseoverlayfs.",) if binary.IS_FUSE_OVERLAYFS else ()


def file_hash(path, algo="sha256", follow=False, dir_fd=None):
    h = hashlib.new(algo)
    fd = os.open(path, os.O_RDONLY | (0 if follow else os.O_NOFOLLOW), dir_fd=dir_fd)
    try:
        while True:
            b = os.read(fd, 1 << 20)
            if not b:
                break
            h.update(b)
    finally:
        os.close(fd)
    return h.hexdigest()


def sha256_file(path, follow=False):
    return file_hash(path, "sha256", follow)


def kind_of(mode):
    for test, name in ((stat.S_ISDIR, "dir"), (stat.S_ISREG, "file"), (stat.S_ISLNK, "symlink"),
                       (stat.S_ISCHR, "chr"), (stat.S_ISBLK, "blk"), (stat.S_ISFIFO, "fifo"),
                       (stat.S_ISSOCK, "sock")):
        if test(mode):
            return name
    return "?"


def xattrs_of(path, prefixes=("user.",)):
    """name -> value (bytes) of the xattrs with these prefixes; '<errno X>' when one
    cannot be read.  {} where the filesystem has none."""
    out = {}
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError as e:
        if e.errno in (errno.ENOTSUP, errno.EPERM):
            return {}
        raise
    for n in sorted(names):
        if n.startswith(HIDDEN_XATTRS) or not n.startswith(tuple(prefixes)):
            continue
        try:
            out[n] = os.getxattr(path, n, follow_symlinks=False)
        except OSError as e:
            out[n] = f"<errno {errno.errorcode.get(e.errno, e.errno)}>"
    return out


def user_xattrs(path):
    return xattrs_of(path, ("user.",))


def snapshot(root, inodes=False, dir_nlink=False, content=True, times=False, prefixes=("user.",),
             blocks=False):
    """relpath -> record (type, mode, uid, gid, size, sha256 | target | rdev, nlink of
    non-directories, xattrs with prefixes); '.' is root itself.

    inodes: also st_ino and, for entries seen through readdir, d_ino.  dir_nlink: nlink
    of directories too.  times: mtime_ns.  blocks: st_blocks of files."""
    root = str(root)
    snap = {}

    def record(path, rel, d_ino=None):
        st = os.lstat(path)
        k = kind_of(st.st_mode)
        r = {"type": k, "mode": oct(stat.S_IMODE(st.st_mode)), "uid": st.st_uid, "gid": st.st_gid}
        if k == "file":
            r["size"] = st.st_size
            if content:
                r["sha256"] = sha256_file(path)
            if blocks:
                r["blocks"] = st.st_blocks
        elif k == "symlink":
            r["target"] = os.readlink(path)
        elif k in ("chr", "blk"):
            r["rdev"] = (os.major(st.st_rdev), os.minor(st.st_rdev))
        if k != "dir" or dir_nlink:
            r["nlink"] = st.st_nlink
        r["xattrs"] = xattrs_of(path, prefixes)
        if inodes:
            r["ino"] = st.st_ino
            if d_ino is not None:
                r["d_ino"] = d_ino
        if times:
            r["mtime_ns"] = st.st_mtime_ns
        snap[rel] = r
        return k

    def walk(dirpath, rel):
        with os.scandir(dirpath) as it:
            entries = sorted(it, key=lambda e: e.name)
        for e in entries:
            erel = e.name if rel == "." else f"{rel}/{e.name}"
            if record(e.path, erel, e.inode() if inodes else None) == "dir":
                walk(e.path, erel)

    record(root, ".")
    walk(root, ".")
    return snap


def diff_snapshots(a, b, name_a="a", name_b="b", ignore=(), limit=40):
    """Readable list of differences between two snapshots (fields in ignore skipped)."""
    out = []
    for p in sorted(set(a) | set(b)):
        if p not in b:
            out.append(f"only in {name_a}: {p!r} {a[p]}")
        elif p not in a:
            out.append(f"only in {name_b}: {p!r} {b[p]}")
        else:
            ra = {k: v for k, v in a[p].items() if k not in ignore}
            rb = {k: v for k, v in b[p].items() if k not in ignore}
            if ra != rb:
                d = ", ".join(f"{k}: {ra.get(k, '<none>')!r} vs {rb.get(k, '<none>')!r}"
                              for k in sorted(set(ra) | set(rb)) if ra.get(k) != rb.get(k))
                out.append(f"differs {p!r}: {d}")
    if len(out) > limit:
        out = out[:limit] + [f"... and {len(out) - limit} more"]
    return out


def assert_same_tree(a, b, name_a="kernel", name_b="suf", ignore=(), what=""):
    d = diff_snapshots(a, b, name_a, name_b, ignore)
    assert not d, f"{what}: {name_a} vs {name_b} differ:\n  " + "\n  ".join(d)


def check_d_ino(snap):
    """Entries whose readdir d_ino is not their st_ino."""
    return [f"{p}: d_ino {r['d_ino']} st_ino {r['ino']}" for p, r in snap.items()
            if "d_ino" in r and r["d_ino"] != r["ino"]]


def jsonable(v):
    """Tuples to lists, bytes to str (surrogateescape, JSON keeps it), recursively."""
    if isinstance(v, dict):
        return {jsonable(k) if isinstance(k, bytes) else k: jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, set)):
        return [jsonable(x) for x in (sorted(v) if isinstance(v, set) else v)]
    if isinstance(v, bytes):
        return v.decode("utf-8", "surrogateescape")
    return v


# --------------------------------------------------------------------------
# markers in an upper directory
# --------------------------------------------------------------------------

OPAQUE_XATTRS = (("trusted.overlay.opaque", "trusted"), ("user.overlay.opaque", "user"))


def opaque_namespaces(p):
    """Which of trusted/user.overlay.opaque=y the directory p carries."""
    out = []
    for n, ns in OPAQUE_XATTRS:
        try:
            if os.getxattr(p, n, follow_symlinks=False) == b"y":
                out.append(ns)
        except OSError:
            pass
    return out


def is_opaque_dir(p):
    return bool(opaque_namespaces(p))


def upper_markers(upper, namespaces=False):
    """(set of (relpath, tag), sorted list of '.wh.*' names) in an upper directory.
    tag: 'whiteout' (0/0 device) or 'opaque'; with namespaces=True 'opaque:trusted'
    or 'opaque:user' (one each for a directory carrying both)."""
    upper = str(upper)
    marks, others = set(), []

    def opaque(p, rel):
        for ns in opaque_namespaces(p):
            marks.add((rel, f"opaque:{ns}" if namespaces else "opaque"))

    for dirpath, dirnames, filenames in os.walk(upper):
        rel_dir = os.path.relpath(dirpath, upper)
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            st = os.lstat(p)
            if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                marks.add((rel, "whiteout"))
            elif name.startswith(".wh."):
                others.append(rel)
            if stat.S_ISDIR(st.st_mode):
                opaque(p, rel)
    opaque(upper, ".")
    return marks, sorted(others)


# --------------------------------------------------------------------------
# stress-style trees: cheap, tolerant of races, problems collected
# --------------------------------------------------------------------------

def tree(root, content=True):
    """relpath -> (kind, mode, size|None, sha1|target|rdev|None), plus the problems a
    consistent view must not have (a listed name that cannot be stat'ed, duplicates)."""
    out, problems = {}, []

    def rec(path, rel):
        st = os.lstat(path)
        k = kind_of(st.st_mode)
        extra = None
        if k == "file" and content:
            extra = file_hash(path, "sha1")
        elif k == "symlink":
            extra = os.readlink(path)
        elif k in ("chr", "blk"):
            extra = (os.major(st.st_rdev), os.minor(st.st_rdev))
        out[rel] = (k, oct(stat.S_IMODE(st.st_mode)), st.st_size if k == "file" else None, extra)
        return k

    def walk(path, rel):
        names = os.listdir(path)
        if len(names) != len(set(names)):
            dups = sorted({n for n in names if names.count(n) > 1})
            problems.append(f"listed twice in {rel or '.'}: {dups}")
        for n in sorted(set(names)):
            r = f"{rel}/{n}" if rel else n
            if len(os.fsencode(os.path.join(path, n))) >= 4096:
                continue   # beyond PATH_MAX for *our* path walk; not the filesystem's fault
            try:
                k = rec(os.path.join(path, n), r)
            except OSError as e:
                problems.append(f"listed but not stat-able: {r!r}: {errno.errorcode.get(e.errno, e.errno)}")
                continue
            if k == "dir":
                try:
                    walk(os.path.join(path, n), r)
                except OSError as e:
                    problems.append(f"cannot list {r!r}: {errno.errorcode.get(e.errno, e.errno)}")
    walk(root, "")
    return out, problems


def marker_problems(view):
    """Markers must never be visible in a merged view (a tree() result)."""
    bad = []
    for rel, (k, _, _, extra) in view.items():
        if os.path.basename(rel).startswith(".wh."):
            bad.append(f"OCI marker name visible: {rel!r}")
        if k == "chr" and extra == (0, 0):
            bad.append(f"0/0 whiteout device visible: {rel!r}")
    return bad


def meta_tree(root):
    """Cheap fingerprint of a layer: relpath -> (mode, size, mtime, ctime, ino, xattr names)."""
    out = {}
    for dp, dns, fns in os.walk(root):
        for n in [""] + dns + fns:
            p = os.path.join(dp, n) if n else dp
            st = os.lstat(p)
            try:
                xs = tuple(sorted(os.listxattr(p, follow_symlinks=False)))
            except OSError:
                xs = ()
            out[os.path.relpath(p, root)] = (st.st_mode, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, xs)
    return out


def diff(a, b, limit=20):
    """Keys whose values differ between two dicts, readable."""
    out = [f"{k!r}: {a.get(k)!r} vs {b.get(k)!r}" for k in sorted(set(a) | set(b), key=str) if a.get(k) != b.get(k)]
    return out[:limit] + ([f"... {len(out) - limit} more"] if len(out) > limit else [])


def manifest(root, skip=()):
    """Everything about a tree (type+mode, ids, size, mtime and hash of files, link
    targets, rdev, all xattrs) except the subtrees named in skip (relative paths)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        keep = [n for n in sorted(dirnames) if (n if rel_dir == "." else f"{rel_dir}/{n}") not in skip]
        dirnames[:] = keep
        for n in keep + sorted(filenames):
            rel = n if rel_dir == "." else f"{rel_dir}/{n}"
            if rel in skip:
                continue
            p = os.path.join(dirpath, n)
            st = os.lstat(p)
            rec = [stat.filemode(st.st_mode), st.st_uid, st.st_gid]
            if stat.S_ISREG(st.st_mode):
                rec += [st.st_size, st.st_mtime_ns, sha256_file(p)]
            elif stat.S_ISLNK(st.st_mode):
                rec.append(os.readlink(p))
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                rec.append(st.st_rdev)
            if not stat.S_ISLNK(st.st_mode):
                rec.append(sorted((x, os.getxattr(p, x, follow_symlinks=False).hex())
                                  for x in os.listxattr(p, follow_symlinks=False)))
            out[rel] = rec
    return out


def layers_digest(lowers):
    """What swiftunionfs must never change in its lower layers (all xattrs, non-dir mtimes)."""
    out = {}
    for i, l in enumerate(lowers):
        snap = snapshot(l, prefixes=("user.", "trusted.", "security."), times=True)
        for rel, rec in snap.items():
            if rec["type"] == "dir":
                rec.pop("mtime_ns", None)
            out[f"l{i + 1}/{rel}"] = rec
    return out


# --------------------------------------------------------------------------
# file layout: holes and data
# --------------------------------------------------------------------------

def extent_map(path):
    """[(start, end)] of the data regions of a file by SEEK_DATA/SEEK_HOLE."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        size = os.fstat(fd).st_size
        out, off = [], 0
        while off < size:
            try:
                start = os.lseek(fd, off, os.SEEK_DATA)
            except OSError as e:
                if e.errno == errno.ENXIO:
                    break
                raise
            end = os.lseek(fd, start, os.SEEK_HOLE)
            out.append((start, end))
            off = end
        return out
    finally:
        os.close(fd)
