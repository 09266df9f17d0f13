/* SPDX-License-Identifier: MIT */
/* transport.h - how a stream connection's bytes cross its socket.
 *
 * Plain TCP and TLS are two implementations of one small table: the
 * connection holds the table and the transport's own state and calls
 * through them, so nothing above asks which one it has. Nothing here knows
 * accepted from initiated connections: an outbound connection (made with a
 * client-side state) uses the same tables. */
#ifndef TN_NET_TRANSPORT_H
#define TN_NET_TRANSPORT_H

#include <event2/buffer.h>
#include <event2/util.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "handlers/handler.h"

/* What advancing a handshake gives. */
enum { TN_TP_DONE = 1, TN_TP_AGAIN = 0, TN_TP_FAILED = -1 };

typedef struct tn_transport_ops {
    const char *name; /* "tcp", "tls" */
    /* The socket carries the application's bytes as they are: file
     * segments in the output leave with sendfile(2), the socket may be
     * handed to another reader (a WebSocket upgrade), a short read means it
     * is drained, and reading never needs it writable nor writing readable.
     * False (TLS): bytes are encrypted through memory, a read returns one
     * record at a time, and either direction may wait on either edge. */
    bool plain;
    /* recv(2) semantics: bytes, 0 at the peer's end of stream, -1 with errno
     * (EAGAIN when waiting on the socket, ECONNRESET or EPROTO when broken). */
    ssize_t (*read)(void *st, evutil_socket_t fd, void *buf, size_t len);
    /* Writes from SRC what the socket takes now and drains it from SRC:
     * bytes written, -1 with errno as send(2). */
    int (*write)(void *st, evutil_socket_t fd, struct evbuffer *src);
    /* Advances the handshake: TN_TP_DONE, TN_TP_AGAIN, or TN_TP_FAILED with
     * *reason an enum tn_tls_failure and DETAIL what the library said. */
    int (*handshake)(void *st, int *reason, char *detail, size_t detaillen);
    bool (*handshaking)(const void *st);
    /* After a read gave the end of stream: whether the session broke (an
     * end without close_notify, a fatal error): nothing more can be sent. */
    bool (*broken)(const void *st);
    /* The orderly end of our sending before the socket is closed (TLS:
     * close_notify, when the session is sound); TCP's is the close itself. */
    void (*shutdown)(void *st);
    /* Frees the state (never the socket). */
    void (*close)(void *st);
    /* The session as handlers see it (version, cipher, client
     * certificate); NULL when plain or still handshaking. */
    const tn_tls_info *(*info)(const void *st);
} tn_transport_ops;

/* Plain TCP: no state (NULL). */
extern const tn_transport_ops tn_tcp_transport;

/* Writes from SRC what socket FD takes now, with send(2) or sendmsg(2), and
 * drains it: bytes written, -1 with errno. SRC must hold no file segments
 * (those are written by tn_tcp_transport, with sendfile). */
int tn_sock_send(evutil_socket_t fd, struct evbuffer *src);

#endif
