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

#include "upstream/proxy.h"

struct tn_conn;

/* The line side of the proxy handler (proxy.h); its state is the
 * handler's side_state[TN_UPSIDE_LINE]. */
extern const tn_proxy_side tn_line_proxy_side;

/* mode connection: true when H is a proxy whose connections are spliced
 * whole (as a tcp listener's only handler). */
bool tn_line_proxy_splices(const tn_handler *h);
/* Splices the accepted connection C to a server of proxy H; C is closed
 * when no server can be reached. */
void tn_line_proxy_splice(struct tn_conn *c, tn_handler *h);

#endif
