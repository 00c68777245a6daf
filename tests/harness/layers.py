"""Layer trees from a description: a dict name -> node, where a node is bytes/str
(a file with that content), a dict (a directory), or one of the classes below.

The same description can be written in the kernel's marker format (whiteouts 0/0
character devices, opaque directories trusted.overlay.opaque=y), the userxattr format
(user.overlay.opaque=y) or the OCI format (.wh.NAME files, .wh..wh..opq entries), so
that a stack in OCI format can be compared with the kernel's overlay over the same
stack in its own format."""

import os
import stat
from dataclasses import dataclass, field


def _b(v):
    return v.encode() if isinstance(v, str) else v


@dataclass
class File:
    content: bytes = b""
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    xattrs: dict = field(default_factory=dict)
    size: int = None   # if set: truncated (sparse) to this size after writing content

    def __post_init__(self):
        self.content = _b(self.content)


@dataclass
class Dir:
    entries: dict = field(default_factory=dict)
    mode: int = 0o755
    uid: int = 0
    gid: int = 0
    xattrs: dict = field(default_factory=dict)
    opaque: bool = False   # written in the layer's opaque format


@dataclass
class Symlink:
    target: str
    uid: int = 0
    gid: int = 0


@dataclass
class Hardlink:
    target: str   # path relative to the layer root


@dataclass
class Whiteout:
    """Hides the name below; written in the layer's whiteout format."""


@dataclass
class Fifo:
    mode: int = 0o644


@dataclass
class Device:
    major: int
    minor: int
    mode: int = 0o644
    block: bool = False


@dataclass
class Sparse:
    """A sparse file: size bytes, with data (bytes) at each given offset."""
    size: int
    extents: dict = field(default_factory=dict)   # offset -> bytes
    mode: int = 0o644


def OCIWhiteout():
    """A literal OCI `.wh.NAME` marker file (put it under the name '.wh.NAME')."""
    return File(b"", 0o644)


def OCIOpaque():
    """A literal OCI opaque marker: put it under the name '.wh..wh..opq'."""
    return File(b"", 0o644)


FORMATS = {
    # name: (whiteout form, opaque form)
    "kernel": ("device", "trusted"),
    "userxattr": ("device", "user"),
    "oci": ("oci", "oci"),
}


def _as_node(v):
    if isinstance(v, (bytes, str)):
        return File(_b(v))
    if isinstance(v, dict):
        return Dir(v)
    return v


def build_layer(root, spec, fmt="kernel", hostid=None, root_owner=None):
    """Create the tree spec at root (made if missing) in marker format fmt (see
    FORMATS).  hostid maps the ids in spec to the ids written (rootless tests give
    namespace ids); root_owner=(uid, gid) chowns the layer root.  Returns root as str."""
    hostid = hostid or (lambda i: i)
    whiteout_form, opaque_form = FORMATS[fmt]
    root = str(root)
    os.makedirs(root, exist_ok=True)
    links, dirs = [], []

    def setx(path, xattrs):
        for k, v in xattrs.items():
            os.setxattr(path, k, _b(v), follow_symlinks=False)

    def make(path, node, parent):
        node = _as_node(node)
        if isinstance(node, Dir):
            os.mkdir(path)
            for name, child in node.entries.items():
                make(os.path.join(path, os.fsdecode(name)), child, path)
            dirs.append((path, node))
        elif isinstance(node, File):
            with open(path, "wb") as f:
                f.write(node.content)
                if node.size is not None:
                    f.truncate(node.size)
            os.chown(path, hostid(node.uid), hostid(node.gid))
            os.chmod(path, node.mode)
            setx(path, node.xattrs)
        elif isinstance(node, Sparse):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, node.mode)
            try:
                os.ftruncate(fd, node.size)
                for off, data in sorted(node.extents.items()):
                    os.pwrite(fd, _b(data), off)
            finally:
                os.close(fd)
            os.chmod(path, node.mode)
        elif isinstance(node, Symlink):
            os.symlink(node.target, path)
            os.lchown(path, hostid(node.uid), hostid(node.gid))
        elif isinstance(node, Hardlink):
            links.append((path, node))
        elif isinstance(node, Whiteout):
            if whiteout_form == "device":
                os.mknod(path, stat.S_IFCHR | 0o000, 0)
                os.lchown(path, hostid(0), hostid(0))
            else:
                wh = os.path.join(parent, ".wh." + os.path.basename(path))
                open(wh, "wb").close()
                os.chown(wh, hostid(0), hostid(0))
        elif isinstance(node, Fifo):
            os.mkfifo(path, node.mode)
            os.chmod(path, node.mode)
        elif isinstance(node, Device):
            t = stat.S_IFBLK if node.block else stat.S_IFCHR
            os.mknod(path, t | node.mode, os.makedev(node.major, node.minor))
        else:
            raise TypeError(f"unknown node {node!r} at {path}")

    top = _as_node(spec)
    for name, child in top.entries.items():
        make(os.path.join(root, os.fsdecode(name)), child, root)
    for path, node in links:
        os.link(os.path.join(root, node.target), path)
    # Directory metadata last, children first: a 0555 directory is filled before its chmod.
    for path, node in dirs:
        os.chown(path, hostid(node.uid), hostid(node.gid))
        setx(path, node.xattrs)
        if node.opaque:
            if opaque_form == "oci":
                open(os.path.join(path, ".wh..wh..opq"), "wb").close()
            else:
                os.setxattr(path, f"{opaque_form}.overlay.opaque", b"y")
        os.chmod(path, node.mode)
    if root_owner is not None:
        os.chown(root, *root_owner)
    return root


def build_layers(base, specs, names=None, fmt="kernel", **kw):
    """One directory per spec under base (l1, l2, ... or names); their paths, top first."""
    return [build_layer(os.path.join(str(base), names[i] if names else f"l{i + 1}"), spec, fmt, **kw)
            for i, spec in enumerate(specs)]


def make_dirs(*paths):
    for p in paths:
        os.makedirs(p, exist_ok=True)
    return [str(p) for p in paths]
