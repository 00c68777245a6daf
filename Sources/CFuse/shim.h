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
