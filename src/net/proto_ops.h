/* SPDX-License-Identifier: MIT */
/* proto_ops.h - what a listener asks of the protocol it serves.
 *
 * The listener binds, admits and counts; everything that depends on the
 * protocol (what a connection becomes, per-listener state such as HTTP
 * routes, reading a datagram socket, the answer a refused client gets) is
 * behind this table, so net/ names no protocol. Each front end exports one
 * const table; the listener is given it when opened. Only the accept path
 * and the listener's lifetime go through it, never a per-message read. */
#ifndef TN_NET_PROTO_OPS_H
#define TN_NET_PROTO_OPS_H

#include <event2/util.h>
#include <stddef.h>
#include <sys/socket.h>

typedef struct tn_listener tn_listener;
typedef struct tn_conn tn_conn;
typedef struct tn_peer tn_peer;

typedef struct tn_proto_ops {
    const char *name; /* in logs: "tcp", "udp", "http" */
    int socktype;     /* SOCK_STREAM: accepted by the listener; SOCK_DGRAM: read by start */
    /* Stream: a connection for FD (NULL: it could not be set up; the
     * listener closes FD and counts the error). */
    tn_conn *(*accept)(tn_listener *l, evutil_socket_t fd, const struct sockaddr *sa, int salen, tn_peer *peer);
    /* Optional: (re)build per-listener state from l->conf (also on reload);
     * -1 with a message in err leaves the running state as it was. */
    int (*configure)(tn_listener *l, char *err, size_t errlen);
    /* Datagram: start reading l->fd; stop: no more reads (owed replies may
     * still go out); free: all per-listener state, also after a failed
     * start or configure. All optional for a stream protocol but free. */
    int (*start)(tn_listener *l, char *err, size_t errlen);
    void (*stop)(tn_listener *l);
    void (*free)(tn_listener *l);
    /* Optional, best effort, without waiting: tells the client on plain FD
     * why it is refused (REASON a TN_REJ_* value); the listener has counted
     * it and closes FD afterwards. */
    void (*refuse)(tn_listener *l, evutil_socket_t fd, int reason);
    /* Optional: replies still owed to peers (shutdown and draining wait). */
    size_t (*in_flight)(const tn_listener *l);
    /* Optional: a response another front end gave on this listener's behalf
     * (the WebSocket upgrade's 101 on an HTTP listener) counts as its own. */
    void (*count_response)(tn_listener *l, int status);
} tn_proto_ops;

#endif
