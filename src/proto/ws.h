/* SPDX-License-Identifier: MIT */
/* ws.h - the WebSocket front end.
 *
 * The HTTP layer accepts, sees `Upgrade: websocket` on an endpoint path,
 * checks it with tn_ws_check() and hands the socket plus the bytes already
 * read to tn_ws_upgrade(); libwebsockets does the handshake and framing,
 * driven directly from the daemon's libevent loop (no lws_service() loop of
 * its own: see ws.c). WebSockets do not use tn_conn; they keep their own
 * small record, listed and closed through tn_ws_each() / tn_ws_close(). */
#ifndef TN_PROTO_WS_H
#define TN_PROTO_WS_H

#include <event2/util.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "config/config.h"
#include "state.h"

struct tn_http_request;

/* Creates the lws context (no listening socket of its own). Checks that the
 * library is 4.1.x (the direct drive leans on its internals). Called once
 * after the event base exists; -1 with a message in err. */
int tn_ws_init(tn_daemon *d, char *err, size_t errlen);

/* Follow a daemon log level change (control `log-level`). */
void tn_ws_set_log_level(int level);

/* Whether request R may be upgraded at endpoint EP: 0 when it may, or the
 * HTTP status to answer instead: 426 (not a WebSocket upgrade: answer with
 * `Upgrade: websocket`), 431 (a head too big for libwebsockets), 400 (bad
 * key/version: the key must be 16 bytes in base64), 403 (Origin refused). */
int tn_ws_check(const tn_ws_conf *ep, const struct tn_http_request *r);

/* Where an upgraded connection comes from: its peer and local address, and
 * its TLS session when FD is the plain end of a TLS relay. */
typedef struct tn_ws_origin {
    const struct sockaddr *remote;
    socklen_t remote_len;
    const char *local;      /* "ip:port"; NULL: read from FD */
    const tn_tls_info *tls; /* copied */
} tn_ws_origin;

/* Hands FD (already accepted, nonblocking) to lws at endpoint EP of listener
 * L. HEAD/LEN: every byte read from the socket so far, starting with the
 * upgrade request's head (anything after the head is WebSocket data and is
 * kept). From this call on FD belongs to the WebSocket layer: it is closed on
 * failure. Returns 0 or -1. */
int tn_ws_upgrade(tn_daemon *d, tn_listener *l, const tn_ws_conf *ep, evutil_socket_t fd, const tn_ws_origin *from,
                  const char *head, size_t len);

/* The libwebsockets version string (control `info`). */
const char *tn_ws_library_version(void);

/* Number of open WebSockets (shutdown waits for them). */
size_t tn_ws_count(const tn_daemon *d);

/* Graceful shutdown: every WebSocket is closed with 1001 once its queued
 * output is out. */
void tn_ws_shutdown(tn_daemon *d);

/* Drops every WebSocket at once and destroys the lws context. */
void tn_ws_free(tn_daemon *d);

/* One WebSocket as the control socket lists it. Strings live as long as the
 * callback. Byte counts are WebSocket payload bytes (lws does the socket I/O). */
typedef struct tn_ws_info {
    uint64_t id;
    const char *listener;
    const char *path;
    const char *remote;      /* "ip:port" */
    const char *local;       /* "ip:port" */
    const char *subprotocol; /* "" when none */
    int64_t established_ms;  /* wall clock */
    int64_t last_activity_ms;
    uint64_t bytes_in, bytes_out, msgs_in, msgs_out;
    size_t queued_bytes;     /* output not yet written */
    const tn_tls_info *tls;  /* NULL when not over TLS */
} tn_ws_info;

void tn_ws_each(tn_daemon *d, void (*fn)(void *arg, const tn_ws_info *info), void *arg);
/* Close WebSocket ID with CODE (1000 normal, 1001 going away, 1008 policy...).
 * Returns 0, or -1 if there is no such WebSocket. */
int tn_ws_close(tn_daemon *d, uint64_t id, int code);
/* Push a message to WebSocket ID (control `send`): 0, -1 when it is over
 * its output cap (or closing), -2 when there is no such WebSocket. */
int tn_ws_send(tn_daemon *d, uint64_t id, const char *data, size_t len);
/* Push to every WebSocket attached to handler H (control `broadcast`);
 * adds to *sent and *dropped (over max_output). */
void tn_ws_broadcast(tn_daemon *d, tn_handler *h, const char *data, size_t len, uint64_t *sent, uint64_t *dropped);

#endif
