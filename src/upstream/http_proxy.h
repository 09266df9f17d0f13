/* SPDX-License-Identifier: MIT */
/* http_proxy.h - the HTTP side of the proxy handler (http_proxy.c) and the
 * byte relay a proxied WebSocket becomes after its 101 (proxy_ws.c). */
#ifndef TN_UPSTREAM_HTTP_PROXY_H
#define TN_UPSTREAM_HTTP_PROXY_H

#include <event2/bufferevent.h>

#include "upstream/proxy.h"

extern const tn_proxy_side tn_proxy_http;

/* Relays bytes both ways between the client's socket FD (DATA/LEN already
 * read from it go up first) and the upstream connection UP (owned from
 * now; what it already read goes down first), until either side closes
 * and what it sent is delivered, or nothing moves either way for IDLE_MS
 * (0: no limit). Counts bytes in S's stats and keeps S's active count and
 * the reference the caller took until the end. Returns -1 (everything
 * closed) when it cannot start. */
int tn_proxy_ws_relay(struct event_base *base, evutil_socket_t fd, const char *data, size_t len,
                      struct bufferevent *up, tn_upstream_server *s, int64_t idle_ms);

#endif
