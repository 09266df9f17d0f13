/* SPDX-License-Identifier: MIT */
/* ws.h - the WebSocket front end.
 *
 * The HTTP layer accepts, sees a WebSocket upgrade (tn_http_is_ws_upgrade())
 * on an endpoint path, checks it (tn_ws_check()) and hands the socket plus
 * the bytes already read over (tn_ws_upgrade()), both through the table of
 * proto/upgrade.h that tn_ws_init() puts in d->upgrade; libwebsockets does the
 * handshake and framing, driven from the daemon's libevent loop by
 * net/lwsdrv.c. A WebSocket's record starts with the base record every
 * connection has (conn.h): the daemon lists, counts, closes and reaps it
 * with the others. */
#ifndef TN_PROTO_WS_H
#define TN_PROTO_WS_H

#include <event2/util.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "config/config.h"
#include "proto/upgrade.h"
#include "state.h"

/* Starts libwebsockets' driver (tn_lws_init()). Called once after the event
 * base exists; -1 with a message in err. */
int tn_ws_init(tn_daemon *d, char *err, size_t errlen);


/* Hands FD (already accepted, nonblocking) to lws at endpoint EP of listener
 * L. HEAD/LEN: every byte read from the socket so far, starting with the
 * upgrade request's head (anything after the head is WebSocket data and is
 * kept). From this call on FD belongs to the WebSocket layer: it is closed on
 * failure. Returns 0 or -1. */
int tn_ws_upgrade(tn_daemon *d, tn_listener *l, const tn_ws_conf *ep, evutil_socket_t fd, const tn_ws_origin *from,
                  const char *head, size_t len);

/* Drops every WebSocket at once and stops libwebsockets. */
void tn_ws_free(tn_daemon *d);

#endif
