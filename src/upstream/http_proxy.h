/* SPDX-License-Identifier: MIT */
/* http_proxy.h - the HTTP side of the proxy handler (http_proxy.c) and the
 * byte relay a proxied WebSocket becomes after its 101 (proxy_ws.c). */
#ifndef TN_UPSTREAM_HTTP_PROXY_H
#define TN_UPSTREAM_HTTP_PROXY_H

#include <event2/bufferevent.h>

#include "proto/http_msg.h"
#include "upstream/proxy.h"

extern const tn_proxy_side tn_proxy_http;

/* Relays bytes both ways between the client's socket (HO's fd; its data
 * goes up first) and the upstream connection UP (owned from now; what it
 * already read goes down first), until either side closes and what it sent
 * is delivered, or nothing moves either way for H's `timeout` (0: no
 * limit). The relay is a connection of the daemon (listed, counted, closed
 * by `close ID`, waited for by a graceful shutdown up to its timeout) and
 * holds H and S until it ends; it counts bytes in S's stats and takes over
 * S's active count. When it cannot start, everything is closed and S's
 * count given back. */
void tn_proxy_ws_relay(tn_handler *h, const tn_http_handover *ho, struct bufferevent *up, tn_upstream_server *s);

/* ---- the heads (http_proxy_head.c) ---------------------------------------------- */

bool tn_http_proxy_idempotent(const char *method);
/* Appends to OUT the head R goes up with to SERVER_NAME under handler
 * config C; *UPGRADE_OUT: the client asked to switch protocols,
 * *CHUNKED_OUT: the body goes up chunked. */
void tn_http_proxy_request_head(struct evbuffer *out, tn_http_request *r, const tn_handler_conf *c,
                                const char *server_name, bool https, bool *upgrade_out, bool *chunked_out);
/* Sets on R the COUNT response headers NAMES/VALUES the upstream sent, as
 * they go to the client (hop-by-hop ones dropped, Via added; with SWITCHING
 * the Upgrade/Connection pair stays). */
void tn_http_proxy_response_headers(tn_http_request *r, const char *const *names, const char *const *values,
                                    size_t count, bool switching, int major, int minor);
/* The key G's hash balance reads from request R (its address, a header,
 * a cookie, or for "token" its path; a cookie's value is copied to BUF);
 * NULL without one. */
const char *tn_http_proxy_hash_key(const tn_upstream_group *g, const tn_http_request *r, size_t *len, char *buf,
                                   size_t buflen);

#endif
