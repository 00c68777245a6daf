"""A seccomp filter that refuses character devices from mknod/mknodat with EPERM, for a daemon started with
Daemon(preexec_fn=deny_mknod): the situation of a filesystem or sandbox where 0/0
character devices (the kernel's whiteouts) cannot be made.  x86_64 and aarch64."""

import ctypes
import errno
import platform
import struct

PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 38, 22, 2
SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO = 0x7FFF0000, 0x00050000
BPF_LD_W_ABS, BPF_JEQ_K, BPF_RET_K = 0x20, 0x15, 0x06

BPF_AND_K = 0x54
S_IFMT, S_IFCHR = 0o170000, 0o020000

ARCHES = {
    # machine: (AUDIT_ARCH_*, {syscall number: index of its mode argument})
    "x86_64": (0xC000003E, {259: 2, 133: 1}),     # mknodat(dfd, path, mode, dev), mknod(path, mode, dev)
    "aarch64": (0xC00000B7, {33: 2}),              # mknodat only
}


def supported():
    return platform.machine() in ARCHES


def _program():
    """Refuse character devices (mode & S_IFMT == S_IFCHR) made by mknod/mknodat."""
    arch, calls = ARCHES[platform.machine()]
    ins = [(BPF_LD_W_ABS, 0, 0, 4),                    # seccomp_data.arch
           (BPF_JEQ_K, 1, 0, arch),
           (BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW),
           (BPF_LD_W_ABS, 0, 0, 0)]                    # seccomp_data.nr
    checks = list(calls.items())
    # after the jeq list and one ALLOW, each call has a 5-instruction check block
    for i, (nr, _) in enumerate(checks):
        ins.append((BPF_JEQ_K, (len(checks) - i - 1) + 1 + 5 * i, 0, nr))
    ins.append((BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW))
    for i, (nr, arg) in enumerate(checks):
        to_deny = 5 * (len(checks) - i - 1) + 2        # from the jeq below to the final EPERM
        ins += [(BPF_LD_W_ABS, 0, 0, 16 + 8 * arg),    # low 32 bits of args[arg]: the mode
                (BPF_AND_K, 0, 0, S_IFMT),
                (BPF_JEQ_K, to_deny, 0, S_IFCHR),
                (BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW),
                (BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW)]  # (padding: keeps every block 5 long)
    ins.append((BPF_RET_K, 0, 0, SECCOMP_RET_ERRNO | errno.EPERM))
    return b"".join(struct.pack("HBBI", *i) for i in ins), len(ins)


def deny_mknod():
    """Install the filter in the calling process (use as a preexec_fn)."""
    libc = ctypes.CDLL(None, use_errno=True)
    code, n = _program()
    buf = ctypes.create_string_buffer(code)

    class Prog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    prog = Prog(n, ctypes.cast(buf, ctypes.c_void_p))
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP)")
