/*
 * The Linux calls that Glibc only declares under _GNU_SOURCE (which Swift's Glibc
 * module is not built with), and the macros and variadic functions Swift cannot
 * call. Everything here is a direct, thin wrapper: no logic, no allocation,
 * errors returned as -1 with errno untouched. No libfuse: the union core and the
 * command link this module, never libfuse (see CFuse).
 */
#ifndef SWIFTUNIONFS_CLINUX_H
#define SWIFTUNIONFS_CLINUX_H

#include <sys/xattr.h>
#include <sys/syscall.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/sysmacros.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <sys/inotify.h>
#include <sys/eventfd.h>
#include <sys/statfs.h>
#include <poll.h>
#include <linux/fs.h>
#include <linux/openat2.h>
#include <linux/stat.h>
#include <fcntl.h>
#include <unistd.h>
#include <errno.h>
#include <string.h>
#include <stdint.h>
#include <stdio.h>
#include <signal.h>
#include <sched.h>
#include <syslog.h>
#include <time.h>

/* ---- constants Glibc hides behind _GNU_SOURCE (values from the Linux ABI) -- */

#define SUF_O_PATH     010000000
#define SUF_O_DIRECT   040000
#define SUF_O_TMPFILE  (020000000 | 0200000)
#define SUF_UTIME_NOW  1073741823l
#define SUF_UTIME_OMIT 1073741822l
#define SUF_SEEK_DATA  3
#define SUF_SEEK_HOLE  4
#define SUF_AT_EMPTY_PATH 0x1000

#define SUF_CLONE_NEWNS   0x00020000
#define SUF_CLONE_NEWUTS  0x04000000
#define SUF_CLONE_NEWUSER 0x10000000
#define SUF_CLONE_NEWPID  0x20000000

/* ---- syscalls Glibc hides behind _GNU_SOURCE ---------------------------- */

static inline int suf_openat2(int dirfd, const char *path, uint64_t flags, uint64_t mode, uint64_t resolve) {
    struct open_how how;
    memset(&how, 0, sizeof how);
    how.flags = flags;
    how.mode = mode;
    how.resolve = resolve;
    return (int)syscall(SYS_openat2, dirfd, path, &how, sizeof how);
}

/* open_tree(2), Linux 5.2; with OPEN_TREE_CLONE a detached private copy of the mount at path. */
#define SUF_OPEN_TREE_CLONE 1
static inline int suf_open_tree(int dirfd, const char *path, unsigned int flags) {
    return (int)syscall(SYS_open_tree, dirfd, path, flags);
}

static inline int suf_renameat2(int olddir, const char *oldname, int newdir, const char *newname, unsigned int flags) {
    return (int)syscall(SYS_renameat2, olddir, oldname, newdir, newname, flags);
}

static inline ssize_t suf_copy_file_range(int in, int64_t *inoff, int out, int64_t *outoff, size_t len) {
    return (ssize_t)syscall(SYS_copy_file_range, in, (loff_t *)inoff, out, (loff_t *)outoff, len, 0u);
}

static inline int suf_fallocate(int fd, int mode, int64_t offset, int64_t len) {
    return (int)syscall(SYS_fallocate, fd, mode, (off_t)offset, (off_t)len);
}

static inline int suf_ficlone(int dest, int src) { return ioctl(dest, FICLONE, src); }
static inline int suf_unshare(int flags) { return (int)syscall(SYS_unshare, flags); }
static inline int suf_pivot_root(const char *new_root, const char *put_old) {
    return (int)syscall(SYS_pivot_root, new_root, put_old);
}
static inline int suf_flock(int fd, int op) { return flock(fd, op); }

/* getxattrat/listxattrat (Linux 6.13+): an xattr of a name in a directory fd, not
   followed, in one lookup. The syscall numbers are the same on every architecture. */
#define SUF_SYS_getxattrat  464
#define SUF_SYS_listxattrat 465
struct suf_xattr_args { uint64_t value; uint32_t size; uint32_t flags; };
static inline ssize_t suf_getxattrat(int dirfd, const char *name, const char *key, void *value, size_t size) {
    struct suf_xattr_args args = { (uint64_t)(uintptr_t)value, (uint32_t)size, 0 };
    return syscall(SUF_SYS_getxattrat, dirfd, name, AT_SYMLINK_NOFOLLOW, key, &args, sizeof args);
}
static inline ssize_t suf_listxattrat(int dirfd, const char *name, char *list, size_t size) {
    return syscall(SUF_SYS_listxattrat, dirfd, name, AT_SYMLINK_NOFOLLOW, list, size);
}
/* Whether getxattrat works here: ENOSYS before 6.13, EPERM under some seccomp filters. */
static inline int suf_xattrat_available(void) {
    ssize_t r = suf_getxattrat(AT_FDCWD, "/", "user.suf-probe", NULL, 0);
    return r >= 0 || errno == ENODATA || errno == EOPNOTSUPP;
}
static inline int suf_open_mode(const char *path, int flags, unsigned mode) { return open(path, flags, mode); }
static inline int suf_openat_mode(int dirfd, const char *path, int flags, unsigned mode) {
    return openat(dirfd, path, flags, mode);
}
static inline int suf_ioctl_int(int fd, unsigned long req, int arg) { return ioctl(fd, req, arg); }
static inline int suf_fcntl_int(int fd, int cmd, int arg) { return fcntl(fd, cmd, arg); }

static inline dev_t suf_makedev(unsigned int maj, unsigned int min) { return makedev(maj, min); }
static inline unsigned int suf_major(dev_t d) { return major(d); }
static inline unsigned int suf_minor(dev_t d) { return minor(d); }

static inline int suf_errno(void) { return errno; }
static inline void suf_set_errno(int e) { errno = e; }

/* strerrorname_np is GNU-only; NULL for numbers it does not know. */
extern const char *strerrorname_np(int errnum);
static inline const char *suf_errname(int e) { return strerrorname_np(e); }
static inline pid_t suf_gettid(void) { return (pid_t)syscall(SYS_gettid); }

static inline int suf_mount(const char *source, const char *target, const char *fstype,
                            unsigned long flags, const char *data) {
    return mount(source, target, fstype, flags, data);
}
static inline int suf_umount2(const char *target, int flags) { return umount2(target, flags); }
static inline int suf_sethostname(const char *name, size_t len) { return sethostname(name, len); }
static inline int suf_prctl_pdeathsig(int sig) { return prctl(PR_SET_PDEATHSIG, (unsigned long)sig, 0, 0, 0); }
static inline pid_t suf_fork(void) { return fork(); }

static inline int suf_nofile_limits(uint64_t *soft, uint64_t *hard) {
    struct rlimit r;
    if (getrlimit(RLIMIT_NOFILE, &r) != 0) return -1;
    *soft = r.rlim_cur;
    *hard = r.rlim_max;
    return 0;
}
static inline int suf_set_nofile_soft(uint64_t soft) {
    struct rlimit r;
    if (getrlimit(RLIMIT_NOFILE, &r) != 0) return -1;
    r.rlim_cur = soft;
    return setrlimit(RLIMIT_NOFILE, &r);
}

/* syslog is variadic: one preformatted line. */
static inline void suf_openlog(const char *ident) { openlog(ident, LOG_PID | LOG_NDELAY, LOG_DAEMON); }
static inline void suf_syslog(int priority, const char *line) { syslog(priority, "%s", line); }

/* ---- watching the lower layers (inotify, fanotify, file handles) ------- */

#define SUF_IN_MODIFY      IN_MODIFY
#define SUF_IN_ATTRIB      IN_ATTRIB
#define SUF_IN_CREATE      IN_CREATE
#define SUF_IN_DELETE      IN_DELETE
#define SUF_IN_MOVED_FROM  IN_MOVED_FROM
#define SUF_IN_MOVED_TO    IN_MOVED_TO
#define SUF_IN_DELETE_SELF IN_DELETE_SELF
#define SUF_IN_MOVE_SELF   IN_MOVE_SELF
#define SUF_IN_ONLYDIR     IN_ONLYDIR
#define SUF_IN_EXCL_UNLINK IN_EXCL_UNLINK
#define SUF_IN_IGNORED     IN_IGNORED
#define SUF_IN_Q_OVERFLOW  IN_Q_OVERFLOW
#define SUF_IN_ISDIR       IN_ISDIR

#define SUF_FAN_MODIFY     0x00000002ull
#define SUF_FAN_ATTRIB     0x00000004ull
#define SUF_FAN_MOVED_FROM 0x00000040ull
#define SUF_FAN_MOVED_TO   0x00000080ull
#define SUF_FAN_CREATE     0x00000100ull
#define SUF_FAN_DELETE     0x00000200ull
#define SUF_FAN_Q_OVERFLOW 0x00004000ull
#define SUF_FAN_ONDIR      0x40000000ull
#define SUF_FAN_CLASS_NOTIF     0x00000000u
#define SUF_FAN_CLOEXEC         0x00000001u
#define SUF_FAN_NONBLOCK        0x00000002u
#define SUF_FAN_REPORT_DFID_NAME (0x00000400u | 0x00000800u)
#define SUF_FAN_MARK_ADD        0x00000001u
#define SUF_FAN_MARK_FILESYSTEM 0x00000100u
#define SUF_FAN_METADATA_VERSION 3
#define SUF_FAN_EVENT_INFO_TYPE_DFID_NAME 2
#define SUF_AT_HANDLE_FID 0x200
#define SUF_MAX_HANDLE_SZ 128

static inline int suf_inotify_init(void) { return inotify_init1(IN_NONBLOCK | IN_CLOEXEC); }
static inline int suf_inotify_add_watch(int fd, const char *path, uint32_t mask) { return inotify_add_watch(fd, path, mask); }
static inline int suf_inotify_rm_watch(int fd, int wd) { return inotify_rm_watch(fd, wd); }

static inline int suf_fanotify_init(unsigned int flags, unsigned int event_flags) {
    return (int)syscall(SYS_fanotify_init, flags, event_flags);
}
static inline int suf_fanotify_mark(int fd, unsigned int flags, uint64_t mask, int dirfd, const char *path) {
    return (int)syscall(SYS_fanotify_mark, fd, flags, mask, dirfd, path);
}

/* name_to_handle_at(2): the handle's type in *type and its bytes in buf (at least
 * SUF_MAX_HANDLE_SZ); returns the number of bytes, or -1 with errno. */
static inline int suf_name_to_handle(int dirfd, const char *name, int flags, int32_t *type, unsigned char *buf) {
    struct { uint32_t handle_bytes; int32_t handle_type; unsigned char f_handle[SUF_MAX_HANDLE_SZ]; } h;
    int mount_id = 0;
    h.handle_bytes = SUF_MAX_HANDLE_SZ;
    if (syscall(SYS_name_to_handle_at, dirfd, name, &h, &mount_id, flags) != 0) return -1;
    *type = h.handle_type;
    memcpy(buf, h.f_handle, h.handle_bytes);
    return (int)h.handle_bytes;
}

/* FS_IOC_GETFSUUID (Linux 6.5+): the filesystem's UUID as the kernel holds it (sb->s_uuid),
 * which overlayfs puts in its file handles (ovl_fb.uuid). Returns its length (0..16). */
struct suf_fsuuid2 { uint8_t len; uint8_t uuid[16]; };
#define SUF_FS_IOC_GETFSUUID _IOR(0x15, 0, struct suf_fsuuid2)
static inline int suf_fsuuid(int fd, unsigned char out[16]) {
    struct suf_fsuuid2 u;
    memset(&u, 0, sizeof u);
    if (ioctl(fd, SUF_FS_IOC_GETFSUUID, &u) != 0) return -1;
    memcpy(out, u.uuid, 16);
    return u.len > 16 ? 16 : u.len;
}

/* The filesystem id fanotify reports events with (statfs's f_fsid). */
static inline int suf_fsid(int fd, int32_t out[2]) {
    struct statfs s;
    if (fstatfs(fd, &s) != 0) return -1;
    memcpy(out, &s.f_fsid, 2 * sizeof(int32_t));
    return 0;
}

static inline int suf_eventfd(void) { return eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK); }

/* poll(2) on two descriptors for reading: bit 0 set when a is readable, bit 1 for b. */
static inline int suf_poll2(int a, int b, int timeout_ms) {
    struct pollfd p[2] = { { .fd = a, .events = POLLIN }, { .fd = b, .events = POLLIN } };
    int rc = poll(p, 2, timeout_ms);
    if (rc < 0) return -1;
    return ((p[0].revents & (POLLIN | POLLERR | POLLHUP)) ? 1 : 0) | ((p[1].revents & (POLLIN | POLLERR | POLLHUP)) ? 2 : 0);
}

/* ---- relaxed atomics for lock-free counters ----------------------------- */

static inline void suf_atomic_add(uint64_t *p, uint64_t v) { __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }
static inline uint64_t suf_atomic_load(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
static inline void suf_atomic_max(uint64_t *p, uint64_t v) {
    uint64_t cur = __atomic_load_n(p, __ATOMIC_RELAXED);
    while (v > cur && !__atomic_compare_exchange_n(p, &cur, v, 1, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {}
}

#endif
