"""Data-integrity stress: random operations on files of a mounted union, every read
checked against an in-memory model (FileStress), and concurrent namespace changes by
several processes with the resulting tree kept as a model (NamespaceStress).

Everything is driven by one random.Random(seed); a failure names the seed, the
operation number and the last operations, so that SUF_STRESS_SEED=N reproduces it."""

import ctypes
import errno
import mmap
import os
import random
import stat

PAGE = 4096
FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02

_libc = ctypes.CDLL(None, use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong]


def fallocate(fd, mode, offset, length):
    if _libc.fallocate(fd, mode, offset, length) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


class IntegrityError(AssertionError):
    pass


class FileStress:
    """Random reads, writes, appends, truncates, mmap reads and writes, fallocate and
    punch hole, O_DIRECT reads and writes, page-cache drops and fsyncs on the files
    `names` under `root`, whose contents start as `initial[name]`.

    Each file is also held open read-only from the start (before any copy-up) and read
    through that descriptor throughout: a union that leaves it on the lower copy shows
    the old data once the kernel drops a page."""

    def __init__(self, root, initial, rng, seed, history=30):
        self.root = str(root)
        self.model = {n: bytearray(c) for n, c in initial.items()}
        self.rng, self.seed = rng, seed
        self.fds = {n: {} for n in initial}
        self.log = []
        self.history = history
        self.count = 0
        self.ops = [
            (12, self.op_read), (10, self.op_write), (4, self.op_append), (4, self.op_truncate),
            (5, self.op_mmap_read), (5, self.op_mmap_write), (4, self.op_fallocate),
            (4, self.op_direct), (3, self.op_drop_cache), (2, self.op_fsync), (3, self.op_reopen),
            (2, self.op_full_check),
        ]
        self.weights = [w for w, _ in self.ops]
        for n in initial:
            self.fd(n, "ro")

    # -- plumbing
    def path(self, name):
        return os.path.join(self.root, name)

    def fd(self, name, kind):
        """The file's descriptor of this kind, opened when first needed."""
        fds = self.fds[name]
        if kind not in fds:
            flags = {"ro": os.O_RDONLY, "rw": os.O_RDWR, "wo": os.O_WRONLY,
                     "app": os.O_WRONLY | os.O_APPEND}[kind]
            fds[kind] = os.open(self.path(name), flags)
        return fds[kind]

    def note(self, text):
        self.log.append(f"#{self.count} {text}")
        del self.log[:-self.history]

    def fail(self, what):
        raise IntegrityError(f"{what}\nseed {self.seed} (rerun with SUF_STRESS_SEED={self.seed}), "
                             f"operation #{self.count}; the last operations:\n  " + "\n  ".join(self.log))

    def expect(self, name, offset, got, what):
        want = bytes(self.model[name][offset:offset + len(got)])
        if len(got) != len(want) or got != want:
            first = next((i for i in range(min(len(got), len(want))) if got[i] != want[i]), min(len(got), len(want)))
            self.fail(f"{what} of {name} at {offset}: {len(got)} bytes, expected {len(want)}; "
                      f"first difference at +{first}: got {got[first:first + 16]!r}, "
                      f"expected {want[first:first + 16]!r}")

    def check_size(self, name, fd=None):
        size = os.fstat(fd).st_size if fd is not None else os.stat(self.path(name)).st_size
        if size != len(self.model[name]):
            self.fail(f"size of {name} is {size}, expected {len(self.model[name])}")

    def set_range(self, name, offset, data):
        m = self.model[name]
        if offset > len(m):
            m.extend(bytes(offset - len(m)))
        m[offset:offset + len(data)] = data

    def resize(self, name, size):
        m = self.model[name]
        if size < len(m):
            del m[size:]
        else:
            m.extend(bytes(size - len(m)))

    def offset(self, name, beyond=2 * PAGE):
        """An offset in the file or a little past its end, often page-aligned or near a page edge."""
        size = len(self.model[name])
        r = self.rng.random()
        if r < 0.3:
            return self.rng.randrange(0, size + beyond, PAGE)
        if r < 0.5:
            return max(0, self.rng.randrange(0, size + beyond, PAGE) + self.rng.randint(-8, 8))
        return self.rng.randrange(0, size + beyond)

    def length(self):
        r = self.rng.random()
        if r < 0.5:
            return self.rng.randint(1, 512)
        if r < 0.85:
            return self.rng.randint(1, 3 * PAGE)
        return self.rng.randint(1, 40 * PAGE)

    def data(self, n):
        return self.rng.randbytes(n)

    # -- operations
    def op_read(self, name):
        kind = self.rng.choice(["ro", "ro", "rw"])
        off, n = self.offset(name), self.length()
        self.note(f"read {name} via {kind} off={off} len={n}")
        self.expect(name, off, os.pread(self.fd(name, kind), n, off), f"pread via {kind}")

    def op_write(self, name):
        kind = self.rng.choice(["rw", "rw", "wo"])
        off, data = self.offset(name), self.data(self.length())
        self.note(f"write {name} via {kind} off={off} len={len(data)}")
        if os.pwrite(self.fd(name, kind), data, off) != len(data):
            self.fail("short pwrite")
        self.set_range(name, off, data)
        self.check_size(name, self.fd(name, "ro"))

    def op_append(self, name):
        data = self.data(self.rng.randint(1, 2 * PAGE))
        self.note(f"append {name} len={len(data)} (size {len(self.model[name])})")
        if os.write(self.fd(name, "app"), data) != len(data):
            self.fail("short append")
        self.model[name].extend(data)
        self.check_size(name, self.fd(name, "app"))

    def op_truncate(self, name):
        size = len(self.model[name])
        new = self.rng.choice([0, self.rng.randrange(0, size + 1), self.rng.randrange(0, size + 8 * PAGE),
                               (size // PAGE) * PAGE, size + self.rng.randint(1, 100)])
        how = self.rng.choice(["path", "ftruncate"])
        self.note(f"truncate {name} {how} {size} -> {new}")
        if how == "path":
            os.truncate(self.path(name), new)
        else:
            os.ftruncate(self.fd(name, "rw"), new)
        self.resize(name, new)
        self.check_size(name)
        self.check_size(name, self.fd(name, "ro"))

    def op_mmap_read(self, name):
        size = len(self.model[name])
        if size == 0:
            return self.op_read(name)
        kind = self.rng.choice(["ro", "rw"])
        off = self.rng.randrange(0, size)
        n = min(size - off, self.length())
        self.note(f"mmap read {name} via {kind} off={off} len={n}")
        with mmap.mmap(self.fd(name, kind), size, prot=mmap.PROT_READ) as mm:
            self.expect(name, off, mm[off:off + n], f"mmap read via {kind}")

    def op_mmap_write(self, name):
        size = len(self.model[name])
        if size == 0:
            return self.op_write(name)
        off = self.rng.randrange(0, size)
        data = self.data(min(size - off, self.length()))
        sync = self.rng.random() < 0.5
        self.note(f"mmap write {name} off={off} len={len(data)} msync={sync}")
        with mmap.mmap(self.fd(name, "rw"), size, prot=mmap.PROT_READ | mmap.PROT_WRITE) as mm:
            mm[off:off + len(data)] = data
            if sync:
                mm.flush()
        self.set_range(name, off, data)

    def op_fallocate(self, name):
        size = len(self.model[name])
        off, n = self.offset(name), self.length()
        mode = self.rng.choice([0, FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE])
        self.note(f"fallocate {name} mode={mode} off={off} len={n} (size {size})")
        fallocate(self.fd(name, "rw"), mode, off, n)
        if mode == 0 and off + n > size:
            self.resize(name, off + n)
        elif mode & FALLOC_FL_PUNCH_HOLE and off < size:
            end = min(size, off + n)
            self.model[name][off:end] = bytes(end - off)
        self.check_size(name, self.fd(name, "ro"))

    def op_direct(self, name):
        """O_DIRECT: page-aligned offsets, lengths and buffers."""
        size = len(self.model[name])
        pages = self.rng.randint(1, 8)
        off = self.rng.randrange(0, size + 2 * PAGE, PAGE) if size else 0
        write = self.rng.random() < 0.5
        self.note(f"O_DIRECT {'write' if write else 'read'} {name} off={off} len={pages * PAGE}")
        fd = os.open(self.path(name), (os.O_RDWR if write else os.O_RDONLY) | os.O_DIRECT)
        try:
            with mmap.mmap(-1, pages * PAGE) as buf:
                if write:
                    data = self.data(pages * PAGE)
                    buf[:] = data
                    if os.pwritev(fd, [buf], off) != len(data):
                        self.fail("short O_DIRECT write")
                    self.set_range(name, off, data)
                else:
                    n = os.preadv(fd, [buf], off)
                    self.expect(name, off, buf[:n], "O_DIRECT read")
                    if n != max(0, min(pages * PAGE, size - off)):
                        self.fail(f"O_DIRECT read of {name} at {off} returned {n} bytes of {size - off} left")
        finally:
            os.close(fd)
        self.check_size(name, self.fd(name, "ro"))

    def op_drop_cache(self, name):
        """Drop the file's clean cached pages: the next read asks the daemon again."""
        kind = self.rng.choice(["ro", "rw"])
        self.note(f"fadvise DONTNEED {name} via {kind}")
        os.posix_fadvise(self.fd(name, kind), 0, 0, os.POSIX_FADV_DONTNEED)

    def op_fsync(self, name):
        self.note(f"fsync {name}")
        os.fsync(self.fd(name, "rw"))

    def op_reopen(self, name):
        kinds = [k for k in self.fds[name] if k != "ro" or self.rng.random() < 0.2]
        if not kinds:
            return
        kind = self.rng.choice(kinds)
        self.note(f"close {name} {kind}")
        os.close(self.fds[name].pop(kind))

    def op_full_check(self, name):
        self.note(f"full read {name}")
        with open(self.path(name), "rb") as f:
            self.expect(name, 0, f.read(), "full read through a new descriptor")
        self.check_size(name)

    # -- driving
    def run(self, count):
        names = sorted(self.model)
        fns = [fn for _, fn in self.ops]
        for _ in range(count):
            self.count += 1
            name = self.rng.choice(names)
            fn = self.rng.choices(fns, self.weights)[0]
            try:
                fn(name)
            except IntegrityError:
                raise
            except OSError as e:
                self.fail(f"{fn.__name__} on {name}: {e}")

    def close(self):
        for fds in self.fds.values():
            for fd in fds.values():
                os.close(fd)
            fds.clear()

    def check_all(self, root, what):
        """Every file under root (another mount of the same layers) holds the model."""
        for name, want in sorted(self.model.items()):
            with open(os.path.join(str(root), name), "rb") as f:
                got = f.read()
            if got != want:
                first = next((i for i in range(min(len(got), len(want))) if got[i] != want[i]), min(len(got), len(want)))
                raise IntegrityError(f"{what}: {name} holds {len(got)} bytes, expected {len(want)}, first "
                                     f"difference at {first} (seed {self.seed}, SUF_STRESS_SEED={self.seed})")


# --------------------------------------------------------------------------
# namespace stress
# --------------------------------------------------------------------------

class NamespaceModel:
    """A tree of names -> inodes, as one process changes it: inodes are dicts with
    type, mode, content (files) or target (symlinks); nlink is the number of names."""

    def __init__(self):
        self.names = {}     # relpath -> inode (dict); directories are listed too

    def add_file(self, rel, content, mode=0o644):
        self.names[rel] = {"type": "file", "mode": mode, "content": bytes(content)}

    def add_dir(self, rel, mode=0o755):
        self.names[rel] = {"type": "dir", "mode": mode}

    def add_symlink(self, rel, target):
        self.names[rel] = {"type": "symlink", "target": target}

    def expected(self, owned=None):
        """relpath -> (type, mode, size, content, nlink, target) for names in owned (all when None)."""
        links = {}
        for ino in self.names.values():
            links[id(ino)] = links.get(id(ino), 0) + 1
        out = {}
        for rel, ino in self.names.items():
            if owned is not None and not owned(rel):
                continue
            if ino["type"] == "file":
                out[rel] = ("file", oct(ino["mode"]), len(ino["content"]), ino["content"], links[id(ino)], None)
            elif ino["type"] == "symlink":
                out[rel] = ("symlink", None, None, None, 1, ino["target"])
            else:
                out[rel] = ("dir", oct(ino["mode"]), None, None, None, None)
        return out


def observe(root, owned=None):
    """The tree under root in NamespaceModel.expected's form."""
    root = str(root)
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            rel = os.path.relpath(p, root)
            if owned is not None and not owned(rel):
                continue
            st = os.lstat(p)
            if stat.S_ISREG(st.st_mode):
                with open(p, "rb") as f:
                    out[rel] = ("file", oct(stat.S_IMODE(st.st_mode)), st.st_size, f.read(), st.st_nlink, None)
            elif stat.S_ISLNK(st.st_mode):
                out[rel] = ("symlink", None, None, None, st.st_nlink, os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", oct(stat.S_IMODE(st.st_mode)), None, None, None, None)
            else:
                out[rel] = ("other", oct(st.st_mode), None, None, st.st_nlink, None)
    return out


def diff_trees(want, got, name_want="model", name_got="mount", limit=30):
    out = []
    for rel in sorted(set(want) | set(got)):
        a, b = want.get(rel), got.get(rel)
        if a != b:
            def short(v):
                if v is None:
                    return "absent"
                t, mode, size, content, nlink, target = v
                digest = None if content is None else (content[:12], len(content))
                return f"{t} mode={mode} size={size} nlink={nlink} target={target} content={digest}"
            out.append(f"{rel}: {name_want} {short(a)} vs {name_got} {short(b)}")
    return out[:limit] + ([f"... {len(out) - limit} more"] if len(out) > limit else [])


def namespace_worker(root, worker, dirs, lower_files, seed, count, queue):
    """One process: `count` random creates, renames, links, unlinks, chmods, truncates,
    writes, symlinks and mkdir/rmdir of its own names (prefix w<worker>_) in the shared
    directories `dirs`, starting with the lower files it owns. Puts its model (relpath ->
    inode) on queue, or ('error', text)."""
    try:
        rng = random.Random(seed * 1000 + worker)
        model = NamespaceModel()
        for rel, content in lower_files.items():
            model.add_file(rel, content)
        serial = 0
        prefix = f"w{worker}_"

        def mine(kind=None):
            return [r for r, ino in model.names.items()
                    if os.path.basename(r).startswith(prefix) and (kind is None or ino["type"] == kind)]

        def fresh(directory=None):
            nonlocal serial
            serial += 1
            d = directory or rng.choice(dirs + [r for r in mine("dir")])
            return os.path.join(d, f"{prefix}{serial}") if d != "." else f"{prefix}{serial}"

        def p(rel):
            return os.path.join(root, rel)

        for _ in range(count):
            files, r = mine("file"), rng.random()
            if r < 0.18 or not files:
                rel, content = fresh(), rng.randbytes(rng.randint(0, 3000))
                with open(p(rel), "xb") as f:
                    f.write(content)
                model.add_file(rel, content)
            elif r < 0.36:
                src, dst = rng.choice(files), fresh()
                if rng.random() < 0.3 and len(files) > 1:
                    dst = rng.choice([f for f in files if f != src])   # rename over one of ours
                os.rename(p(src), p(dst))
                if model.names.get(dst) is not model.names[src]:   # two links of one file: rename does nothing
                    model.names[dst] = model.names.pop(src)
            elif r < 0.48:
                src, dst = rng.choice(files), fresh()
                os.link(p(src), p(dst))
                model.names[dst] = model.names[src]
            elif r < 0.60:
                victim = rng.choice(files)
                os.unlink(p(victim))
                del model.names[victim]
            elif r < 0.70:
                victim, mode = rng.choice(files), rng.choice([0o600, 0o644, 0o640, 0o755, 0o444])
                os.chmod(p(victim), mode)
                model.names[victim]["mode"] = mode
            elif r < 0.80:
                victim = rng.choice(files)
                ino = model.names[victim]
                size = rng.randint(0, len(ino["content"]) + 2000)
                os.truncate(p(victim), size)
                ino["content"] = ino["content"][:size] + bytes(max(0, size - len(ino["content"])))
            elif r < 0.90:
                victim = rng.choice(files)
                ino = model.names[victim]
                data = rng.randbytes(rng.randint(1, 500))
                off = rng.randint(0, len(ino["content"]))
                with open(p(victim), "r+b") as f:
                    f.seek(off)
                    f.write(data)
                c = ino["content"]
                ino["content"] = c[:off] + data + c[off + len(data):]
            elif r < 0.94:
                rel, target = fresh(), rng.choice(["nowhere", "../x", rng.choice(files)])
                os.symlink(target, p(rel))
                model.add_symlink(rel, target)
            elif r < 0.97:
                rel = fresh(rng.choice(dirs))
                os.mkdir(p(rel))
                os.chmod(p(rel), 0o755)
                model.add_dir(rel)
            else:
                empty = [d for d in mine("dir") if not any(r.startswith(d + "/") for r in model.names)]
                if empty:
                    d = rng.choice(empty)
                    os.rmdir(p(d))
                    del model.names[d]
        queue.put(("ok", worker, {rel: dict(ino, _id=id(ino)) for rel, ino in model.names.items()}))
    except BaseException as e:   # noqa: BLE001 - reported to the parent
        import traceback
        queue.put(("error", worker, f"worker {worker}: {e!r}\n{traceback.format_exc()}"))


def merge_models(parts):
    """One NamespaceModel from the workers' (relpath -> inode with _id) dicts."""
    model = NamespaceModel()
    for names in parts:
        inodes = {}
        for rel, ino in names.items():
            key = ino.pop("_id")
            model.names[rel] = inodes.setdefault(key, ino)
    return model


def errno_name(e):
    return errno.errorcode.get(e.errno, str(e.errno))
