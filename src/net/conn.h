/* SPDX-License-Identifier: MIT */
/* conn.h - connections: the record every connection starts with (stream
 * connections and WebSockets alike), and the stream connections' reading,
 * writing, timeouts, output caps and closing. */
#ifndef TN_NET_CONN_H
#define TN_NET_CONN_H

#include <event2/buffer.h>
#include <event2/event.h>
#include <netinet/in.h>

#include "handlers/handler.h"
#include "net/limits.h"
#include "net/listener.h"
#include "net/transport.h"
#include "state.h"

typedef union tn_sockaddr {
    struct sockaddr sa;
    struct sockaddr_in in;
    struct sockaddr_in6 in6;
} tn_sockaddr;

typedef struct tn_conn_base tn_conn_base;

/* A connection's `connections` row beyond the common fields. */
typedef struct tn_conn_info {
    char local[80];          /* "ip:port" */
    const char *path;        /* a WebSocket's endpoint; NULL otherwise */
    const char *subprotocol; /* a WebSocket's, "" when none */
    const tn_tls_info *tls;  /* NULL when not over TLS */
} tn_conn_info;

/* What the daemon and the control socket ask of a connection, whoever
 * carries its bytes (a stream connection here, libwebsockets for a
 * WebSocket). */
typedef struct tn_conn_kind {
    const char *(*protocol)(const tn_conn_base *b); /* "tcp", "http", "ws" */
    void (*describe)(const tn_conn_base *b, tn_conn_info *info);
    /* Optional. Replies owed (a graceful shutdown waits for them). */
    bool (*busy)(const tn_conn_base *b);
    /* Closing already: pushes (broadcast) skip it. */
    bool (*closing)(const tn_conn_base *b);
    /* Control `send`: 0; -1 when the peer is not reading (output over
     * max_output); -2 when the connection takes nothing more; -3 when
     * messages are not ours to send on it (a proxied WebSocket). */
    int (*send)(tn_conn_base *b, const char *data, size_t len);
    /* Control `close`. */
    void (*close)(tn_conn_base *b);
    /* Graceful shutdown: close once what is owed is out. */
    void (*shutdown)(tn_conn_base *b);
    /* Optional. A reload replaced this worker process and the connection
     * has had a message: close once what it is owed is out. Without it
     * (WebSockets) the connection ends on its own. */
    void (*drain)(tn_conn_base *b);
    /* Optional. Close now (shutdown timeout, exit); without it the layer
     * that carries it closes it when it goes (libwebsockets' context). */
    void (*abort)(tn_conn_base *b, const char *why);
    /* Optional. After a reload: the listener's limits may be new. */
    void (*reconfigure)(tn_conn_base *b);
    /* Frees the record, from the reap job. */
    void (*destroy)(tn_conn_base *b);
} tn_conn_kind;

/* The record every connection starts with: one population (d->conns), one
 * reap list (d->dead). */
struct tn_conn_base {
    tn_conn_base *prev, *next;
    const tn_conn_kind *kind;
    tn_listener *listener;
    tn_session session;    /* session.id is the connection id */
    tn_sockaddr remote;
    bool dead;             /* closed; memory freed by the reap job (next to remote: no padding) */
    int64_t established_ms;
    int64_t last_activity_ms;
    uint64_t bytes_in, bytes_out, msgs_in, msgs_out;
};

/* A new record of KIND on listener L: gets its connection id. */
void tn_conn_base_init(tn_conn_base *b, const tn_conn_kind *kind, tn_listener *l);
/* B (initialized, session.ops and remote set) is open: listed and counted
 * as active (daemon and listener). */
void tn_conn_base_open(tn_conn_base *b);
/* B is over: unlisted, uncounted and freed by the reap job at the end of
 * the pass. */
void tn_conn_base_close(tn_conn_base *b);
/* The open connection with id ID, NULL when none. */
tn_conn_base *tn_conn_find(tn_daemon *d, uint64_t id);
/* Frees the connections closed since the last pass. */
void tn_conn_reap(tn_daemon *d);

/* What a protocol front end does with its connections. */
typedef struct tn_frontend {
    const char *name;
    /* Bytes arrived: consume whole messages, return how many bytes were
     * used; the rest is kept and offered again with more. May close. */
    size_t (*input)(tn_conn *c, const char *data, size_t len);
    /* Anything in flight? (shutdown and half-closed peers wait for it) */
    bool (*busy)(const tn_conn *c);
    /* Push outside request/reply (broadcast relays, stream output); -1 when
     * the peer's unread output is over max_output. */
    int (*push)(tn_conn *c, const char *data, size_t len);
    /* Release front end state; the connection is going away. */
    void (*release)(tn_conn *c);
    /* Optional. Milliseconds the message being received may still take, -1
     * when none is (default: read_timeout after the first byte of an
     * incomplete message, however slowly the rest trickles in). */
    int64_t (*partial_timeout)(const tn_conn *c);
    /* Optional. The inactivity timeout fired: true if the front end answered
     * (e.g. HTTP 408) and is closing the connection itself. */
    bool (*timed_out)(tn_conn *c);
    /* Optional. Everything queued was written (the peer reads again). */
    void (*drained)(tn_conn *c);
    /* Optional. The peer finished sending (FIN, close_notify) with LEN bytes
     * of an incomplete message left over: answer them as a whole message or
     * ignore them. Without it the rest is dropped. Replies still owed go out
     * before the close either way. */
    void (*input_end)(tn_conn *c, const char *data, size_t len);
    /* Optional. The peer finished sending, after input_end: a message the
     * front end was taking as it came (a proxied HTTP body) is cut short. */
    void (*peer_done)(tn_conn *c);
    /* Optional. The peer finished sending, after input_end: true when the
     * front end keeps the connection and closes it itself (a spliced
     * connection still relaying the other way). */
    bool (*finished)(tn_conn *c);
} tn_frontend;

struct tn_conn {
    tn_conn_base base;     /* first: the record is freed through it */
    const tn_frontend *fe;
    void *fe_state;
    struct event *ev;      /* read and write, edge-triggered, one registration */
    struct evbuffer *in;   /* an incomplete message; NULL when there is none */
    struct evbuffer *out;  /* output the socket did not take yet; NULL when none */
    tn_peer *peer;
    const tn_transport_ops *tp; /* how bytes cross the socket: TCP, TLS */
    void *tp_state;        /* the transport's (a TLS session), NULL for TCP */
    evutil_socket_t fd;
    int32_t timeout_ms;    /* armed inactivity timeout; -1 none */
    /* when the incomplete message in `in` began, in ms after established_ms
     * (wraps after 49 days; only differences are used) */
    uint32_t in_since_ms;
    uint8_t closing;       /* no more input; closes once output is flushed */
    uint8_t read_paused;   /* too much unread output: input waits */
    uint8_t eof_pending;   /* the peer's FIN waits in the socket behind data */
    uint8_t file_out;      /* file segments went to the output: libevent writes it (sendfile) */
    uint8_t input_ended;   /* the peer finished sending (a stream process may still talk) */
};

/* The daemon, through the listener (which outlives its connections: a
 * removed one is freed with its last). Not a field: one more pointer made
 * every idle connection cross a malloc size class (240 to 256 bytes). */
static inline tn_daemon *tn_conn_daemon(const tn_conn *c)
{
    return c->base.listener->d;
}

tn_conn *tn_conn_new(tn_listener *l, evutil_socket_t fd, const struct sockaddr *sa, int salen,
                     tn_peer *peer, const tn_frontend *fe);

/* Where to append output for C. Replies produced while handling one read
 * collect in a buffer shared by the daemon and go out with one write. */
struct evbuffer *tn_conn_output(tn_conn *c);
/* Write what was appended; keep what the socket does not take. May close
 * (write error), so callers check c->dead after. */
void tn_conn_flush(tn_conn *c);
size_t tn_conn_unsent(const tn_conn *c);
/* Stop reading until the unsent output drains (pipelining backpressure). */
void tn_conn_pause_input(tn_conn *c);
/* Read again after tn_conn_pause_input() (the front end's own reasons). */
void tn_conn_resume_input(tn_conn *c);

/* Flush what is queued, then close. */
void tn_conn_close_after_flush(tn_conn *c, const char *why);
/* Close now (reset, error, timeout). Safe from inside the conn's callbacks. */
void tn_conn_close(tn_conn *c, const char *why);
/* End the record but keep the socket open for a new owner (a WebSocket
 * upgrade): returns the fd, -1 if the connection is already closed. Unsent
 * output is dropped. */
evutil_socket_t tn_conn_take_fd(tn_conn *c);
/* Keep the connection (and its TLS) but stop counting and listing it: from
 * now on it carries the bytes of a WebSocket that lws owns and accounts for
 * (it moves to d->relays). Its front end becomes FE. */
void tn_conn_become_relay(tn_conn *c, const tn_frontend *fe, void *fe_state);
/* The TLS session (version, cipher, client certificate), NULL when plain
 * or still handshaking (the transport's info). */
const tn_tls_info *tn_conn_tls_info(const tn_conn *c);
/* Arm the inactivity timeout the connection's state calls for. */
void tn_conn_update_timeouts(tn_conn *c);
void tn_conn_remote_str(const tn_conn *c, char *buf, size_t len);

#endif
