/*
 * Calls only the unit tests make, which Swift's Glibc module does not declare. Thin
 * wrappers, no logic; nothing here is linked into swiftunionfs.
 */
#ifndef SWIFTUNIONFS_CTESTSUPPORT_H
#define SWIFTUNIONFS_CTESTSUPPORT_H

#include <sys/fsuid.h>
#include <sys/types.h>

/* setfsuid(2) for the calling thread only (glibc does not broadcast it to other
 * threads, as it does setresuid). Returns the previous filesystem uid. */
static inline int suf_test_setfsuid(uid_t uid) { return setfsuid(uid); }

#endif
