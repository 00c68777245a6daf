/*
 * libfuse3's low-level API, and the macros and variadics of it Swift cannot call.
 * Only FuseBridge imports this module: the union core never links libfuse.
 */
#ifndef SWIFTUNIONFS_CFUSE_H
#define SWIFTUNIONFS_CFUSE_H

#define FUSE_USE_VERSION 312

#include <fuse_lowlevel.h>
#include <errno.h>
#include <stdint.h>
#include <stddef.h>

/* Built against whichever libfuse3 pkg-config finds: Debian 12's 3.14, or a 3.16+ (Debian 13,
 * Fedora, the private 3.17 of scripts/libfuse-build). FUSE passthrough (the kernel reads and
 * writes the backing file itself, 6.9+) needs 3.16's fuse_passthrough_open and fi->backing_id. */
#if FUSE_MAJOR_VERSION > 3 || (FUSE_MAJOR_VERSION == 3 && FUSE_MINOR_VERSION >= 16)
#define SUF_HAVE_PASSTHROUGH 1
#else
#define SUF_HAVE_PASSTHROUGH 0
#endif

/* FUSE_CAP_HANDLE_KILLPRIV_V2 is asked for only by the 3.16+ build: with it the kernel marks the
 * superblock SB_NOSEC, so a write stops asking getxattr("security.capability") once per write, and
 * the daemon takes over clearing set-id bits (FuseBridge/KillPriv.swift says where). */
#if SUF_HAVE_PASSTHROUGH && defined(FUSE_CAP_HANDLE_KILLPRIV_V2)
#define SUF_HAVE_KILLPRIV_V2 1
#else
#define SUF_HAVE_KILLPRIV_V2 0
#endif

/* The libfuse this binary was compiled against, e.g. 317. */
static inline int suf_fuse_version(void) { return FUSE_VERSION; }
/* 1 when this binary can use FUSE passthrough at all (the kernel must still offer it at INIT). */
static inline int suf_passthrough_built(void) { return SUF_HAVE_PASSTHROUGH; }

/* 3.17 made fuse_session_new a macro (it passes the caller's libfuse version): Swift calls this. */
static inline struct fuse_session *suf_session_new(struct fuse_args *args, const struct fuse_lowlevel_ops *op,
                                                   size_t op_size, void *userdata) {
    return fuse_session_new(args, op, op_size, userdata);
}

/* At INIT: ask for passthrough when the kernel offers it. Backing files may not sit on a stacked
 * filesystem (overlayfs, FUSE): max_backing_stack_depth 0 keeps this mount stackable itself, and
 * a layer on such a filesystem just gets no backing id (fuse_passthrough_open fails, the open is
 * served by the daemon). Returns 1 when passthrough is on for the connection. */
static inline int suf_conn_passthrough(struct fuse_conn_info *conn) {
#if SUF_HAVE_PASSTHROUGH
    if (!(conn->capable & FUSE_CAP_PASSTHROUGH)) return 0;
    conn->want |= FUSE_CAP_PASSTHROUGH;
    conn->max_backing_stack_depth = 0;
    return 1;
#else
    (void)conn;
    return 0;
#endif
}

/* At INIT: ask for KILLPRIV_V2 when this build has it and the kernel offers it. Returns 1 when
 * the daemon is now the one that clears set-id bits on write, truncate and chown. */
static inline int suf_conn_killpriv_v2(struct fuse_conn_info *conn) {
#if SUF_HAVE_KILLPRIV_V2
    if (!(conn->capable & FUSE_CAP_HANDLE_KILLPRIV_V2)) return 0;
    conn->want |= FUSE_CAP_HANDLE_KILLPRIV_V2;
    return 1;
#else
    (void)conn;
    return 0;
#endif
}

/* Whether a WRITE is the kernel flushing its writeback cache (no caller behind it: the kernel
 * already dealt with set-id bits when the data was written into the cache). */
static inline int suf_fi_writepage(const struct fuse_file_info *fi) { return fi && fi->writepage; }

/* Registers `fd` (the real file in its layer) with the kernel: a backing id > 0, or 0 (the
 * kernel refused: errno is logged by libfuse). */
static inline int suf_passthrough_open(fuse_req_t req, int fd) {
#if SUF_HAVE_PASSTHROUGH
    return fuse_passthrough_open(req, fd);
#else
    (void)req; (void)fd;
    return 0;
#endif
}

static inline int suf_passthrough_close(fuse_req_t req, int backing_id) {
#if SUF_HAVE_PASSTHROUGH
    return fuse_passthrough_close(req, backing_id);
#else
    (void)req; (void)backing_id;
    return -ENOSYS;
#endif
}

/* Marks an open/create reply as passthrough to `backing_id`. The kernel refuses passthrough
 * opens that also ask to keep the page cache, so keep_cache is cleared here too. */
static inline void suf_fi_set_backing(struct fuse_file_info *fi, int backing_id) {
#if SUF_HAVE_PASSTHROUGH
    fi->backing_id = backing_id;
    fi->keep_cache = 0;
#else
    (void)fi; (void)backing_id;
#endif
}

static inline int suf_session_loop_mt(struct fuse_session *se, int clone_fd, unsigned int max_idle) {
    struct fuse_loop_config *cfg = fuse_loop_cfg_create();
    if (!cfg) return -ENOMEM;
    fuse_loop_cfg_set_clone_fd(cfg, (unsigned int)clone_fd);
    fuse_loop_cfg_set_idle_threads(cfg, max_idle);
    int rc = fuse_session_loop_mt(se, cfg);
    fuse_loop_cfg_destroy(cfg);
    return rc;
}

/* A read answered straight from a layer's file: libfuse splices when the
 * kernel and init() allow it, and falls back to a copy otherwise. */
static inline int suf_reply_fd(fuse_req_t req, int fd, int64_t offset, size_t size) {
    struct fuse_bufvec buf = FUSE_BUFVEC_INIT(size);
    buf.buf[0].flags = (enum fuse_buf_flags)(FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK);
    buf.buf[0].fd = fd;
    buf.buf[0].pos = offset;
    return fuse_reply_data(req, &buf, FUSE_BUF_SPLICE_MOVE);
}

static inline void suf_conn_want(struct fuse_conn_info *conn, unsigned int cap) {
    if (conn->capable & cap) conn->want |= cap;
}
static inline void suf_conn_unwant(struct fuse_conn_info *conn, unsigned int cap) { conn->want &= ~cap; }

#endif
