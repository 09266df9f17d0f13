/* SPDX-License-Identifier: MIT */
/* upgrade.h - the HTTP front end's hand-off to the WebSocket one.
 *
 * Front ends do not include one another: the HTTP layer finds a request at
 * a WebSocket endpoint, checks it and hands the socket over through this
 * table, which the WebSocket front end puts in the running state
 * (d->upgrade) when it starts. */
#ifndef TN_PROTO_UPGRADE_H
#define TN_PROTO_UPGRADE_H

#include <event2/util.h>
#include <stddef.h>
#include <sys/socket.h>

#include "config/config.h"
#include "handlers/handler.h"
#include "state.h"

struct tn_http_request;

/* Where an upgraded connection comes from: its peer and local address, and
 * its TLS session when the socket is the plain end of a TLS relay. */
typedef struct tn_ws_origin {
    const struct sockaddr *remote;
    socklen_t remote_len;
    const char *local;      /* "ip:port"; NULL: read from the socket */
    const tn_tls_info *tls; /* copied */
} tn_ws_origin;

typedef struct tn_upgrade_ops {
    /* 0 when R may upgrade at endpoint EP, else the HTTP status to answer
     * (tn_ws_check) */
    int (*check)(const tn_ws_conf *ep, const struct tn_http_request *r);
    /* FD, with every byte read so far, belongs to the other front end from
     * this call on (tn_ws_upgrade) */
    int (*take)(tn_daemon *d, tn_listener *l, const tn_ws_conf *ep, evutil_socket_t fd, const tn_ws_origin *from,
                const char *head, size_t len);
} tn_upgrade_ops;

#endif
