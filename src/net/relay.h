/* SPDX-License-Identifier: MIT */
/* relay.h - a TLS connection that carries a WebSocket: the decrypted
 * stream reaches libwebsockets through a socketpair. */
#ifndef TN_NET_RELAY_H
#define TN_NET_RELAY_H

#include "net/conn.h"

/* Turns TLS connection C into a relay and returns the socketpair end to
 * hand to lws, or -1 (C is closed then). C stops being counted or listed as
 * a connection: the WebSocket is. */
evutil_socket_t tn_relay_start(tn_conn *c);

#endif
