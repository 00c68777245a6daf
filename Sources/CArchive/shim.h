/*
 * The C that the Layers module touches: libarchive (reading and writing tar/pax layers,
 * gzip and zstd), plus the few Linux calls Glibc declares only under _GNU_SOURCE that
 * safe extraction needs. Thin wrappers, no logic; errors come back as -1 with errno set.
 */
#ifndef SWIFTUNIONFS_CARCHIVE_SHIM_H
#define SWIFTUNIONFS_CARCHIVE_SHIM_H

#include <archive.h>
#include <archive_entry.h>
#include <sys/syscall.h>
#include <sys/xattr.h>
#include <sys/file.h>
#include <sys/types.h>
#include <sys/sysmacros.h>
#include <linux/openat2.h>
#include <fcntl.h>
#include <unistd.h>
#include <errno.h>
#include <string.h>
#include <stdint.h>
#include <locale.h>

#define SL_O_PATH 010000000

static inline int sl_openat2(int dirfd, const char *path, uint64_t flags, uint64_t mode, uint64_t resolve) {
    struct open_how how;
    memset(&how, 0, sizeof how);
    how.flags = flags;
    how.mode = mode;
    how.resolve = resolve;
    return (int)syscall(SYS_openat2, dirfd, path, &how, sizeof how);
}
static inline uint64_t sl_resolve_beneath(void) { return RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS; }

static inline int sl_renameat2(int olddir, const char *oldname, int newdir, const char *newname, unsigned int flags) {
    return (int)syscall(SYS_renameat2, olddir, oldname, newdir, newname, flags);
}
static inline int sl_openat_mode(int dirfd, const char *path, int flags, unsigned mode) { return openat(dirfd, path, flags, mode); }

static inline dev_t sl_makedev(unsigned int maj, unsigned int min) { return makedev(maj, min); }
static inline unsigned int sl_major(dev_t d) { return major(d); }
static inline unsigned int sl_minor(dev_t d) { return minor(d); }

static inline int sl_flock(int fd, int op) { return flock(fd, op); }
static inline int sl_errno(void) { return errno; }
static inline void sl_set_errno(int e) { errno = e; }

/* libarchive converts header names between UTF-8 and the C locale charset, and in the
 * plain "C" locale it replaces every non-ASCII byte by '?'. C.UTF-8 makes the
 * conversion the identity, so names stay byte-exact (invalid UTF-8 included). */
static inline void sl_use_utf8_ctype(void) { setlocale(LC_CTYPE, "C.UTF-8"); }

#endif
