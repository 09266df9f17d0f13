/* line.h - the TCP line-protocol front end. */
#ifndef TN_PROTO_LINE_H
#define TN_PROTO_LINE_H

#include "net/conn.h"

tn_conn *tn_line_accept(tn_listener *l, evutil_socket_t fd, const struct sockaddr *sa, int salen, tn_peer *peer);

#endif
