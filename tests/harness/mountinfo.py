"""/proc/PID/mountinfo, parsed.  Mount points are str (surrogateescape, so
os.fsencode gives the exact bytes back)."""

import os
from collections import namedtuple

Mount = namedtuple("Mount", "mnt fstype source major minor options super_options")


def unescape(field):
    """mountinfo escapes space, tab, newline and backslash as \\ooo octal."""
    raw, out, i = os.fsencode(field), bytearray(), 0
    while i < len(raw):
        if raw[i:i + 1] == b"\\" and len(raw[i + 1:i + 4]) == 3 and raw[i + 1:i + 4].isdigit():
            out.append(int(raw[i + 1:i + 4], 8))
            i += 4
        else:
            out.append(raw[i])
            i += 1
    return os.fsdecode(bytes(out))


def entries(pid="self"):
    """Every mount of the mount namespace of process pid, in mount order."""
    out = []
    try:
        with open(f"/proc/{pid}/mountinfo", "rb") as f:
            lines = f.read().splitlines()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return out
    for line in lines:
        parts = os.fsdecode(line).split(" ")
        if len(parts) < 10:
            continue
        sep = parts.index("-", 6)
        major, minor = parts[2].split(":")
        out.append(Mount(unescape(parts[4]), parts[sep + 1], unescape(parts[sep + 2]),
                         int(major), int(minor), parts[5], parts[sep + 3] if len(parts) > sep + 3 else ""))
    return out


def mounted_points(pid="self"):
    return [m.mnt for m in entries(pid)]


def is_mounted(path, pid="self"):
    return os.path.realpath(str(path)) in mounted_points(pid)


def entry_of(path, pid="self"):
    """The topmost mount at path, or None."""
    path = os.path.realpath(str(path))
    found = None
    for m in entries(pid):
        if m.mnt == path:
            found = m
    return found


def fstype_of(path, pid="self"):
    m = entry_of(path, pid)
    return m.fstype if m else None


def below(root, pid="self"):
    """Mounts at or below root, deepest first."""
    root = os.path.realpath(str(root))
    hits = [m for m in entries(pid) if m.mnt == root or m.mnt.startswith(root.rstrip("/") + "/")]
    return sorted(hits, key=lambda m: len(m.mnt), reverse=True)


def is_fuse(m):
    return m.fstype == "fuse" or m.fstype.startswith("fuse.") or m.fstype == "fuseblk"
