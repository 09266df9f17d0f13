/* SPDX-License-Identifier: MIT */
/* line_proxy.h - the proxy handler on TCP line listeners.
 *
 * mode "message": each line is forwarded, with a "\n", to a server of the
 * handler's upstream group over a small pool of pipelined connections per
 * server shared by every client, and the server's next line is the reply
 * (one reply line per request: +OK, :1, -ERR of Redis inline commands,
 * PONG, memcached's STORED ... but not Redis bulk replies, which take two).
 * mode "connection": the client's connection is spliced to one upstream
 * connection and bytes are relayed both ways (L4). */
#ifndef TN_UPSTREAM_LINE_PROXY_H
#define TN_UPSTREAM_LINE_PROXY_H

#include <event2/bufferevent.h>
#include <sys/socket.h>

#include "upstream/proxy.h"

struct tn_conn;

/* The line side of the proxy handler (proxy.h); its state is the
 * handler's side_state[TN_UPSIDE_LINE]. */
extern const tn_proxy_side tn_line_proxy_side;

/* mode connection: the side's takeover (line_splice.c): splices the
 * accepted connection C to a server of proxy P; false in mode message. */
bool tn_line_proxy_takeover(tn_proxy *p, struct tn_conn *c);

/* ---- shared by the two modes (line_proxy.c, line_splice.c) ---------------------- */

#define TN_LINE_PROXY_TRIED_MAX 8 /* servers a request remembers having failed on */

typedef struct tn_line_proxy_settings {
    int64_t connect_timeout, timeout, send_timeout; /* ms, 0 = none (connect: never 0) */
    int64_t max_reply;
    size_t pool_size;
} tn_line_proxy_settings;

/* The side's state in its proxy handler. */
typedef struct tn_line_proxy {
    tn_handler *h;
    tn_upstream_group *g;
    tn_line_proxy_settings set;
} tn_line_proxy;

void tn_line_proxy_tv_ms(struct timeval *tv, int64_t ms);
void tn_line_proxy_nodelay(struct bufferevent *bev);
/* The hash key of a request LINE from REMOTE under G's balance (NULL: no
 * key); *KEYLEN its length, BUF room for an address. */
const char *tn_line_proxy_key(const tn_upstream_group *g, const char *line, size_t len, const struct sockaddr *remote,
                              char *buf, size_t buflen, size_t *keylen);

#endif
