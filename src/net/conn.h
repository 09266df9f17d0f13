/* conn.h - connections of the stream front ends: the record every
 * connection keeps (SPEC section 7), timeouts, output caps and closing. */
#ifndef TN_NET_CONN_H
#define TN_NET_CONN_H

#include <event2/bufferevent.h>
#include <netinet/in.h>

#include "daemon.h"
#include "handlers/handler.h"
#include "net/limits.h"

typedef union tn_sockaddr {
    struct sockaddr sa;
    struct sockaddr_in in;
    struct sockaddr_in6 in6;
} tn_sockaddr;

/* What a protocol front end does with its connections. */
typedef struct tn_frontend {
    const char *name;
    void (*read)(tn_conn *c);
    /* The output buffer drained below the low-water mark. */
    void (*drained)(tn_conn *c);
    /* Nothing in flight? (shutdown waits for in-flight work) */
    bool (*busy)(const tn_conn *c);
    /* Push outside request/reply (broadcast relays, stream output). */
    int (*push)(tn_conn *c, const char *data, size_t len);
    /* Release front end state; the connection is going away. */
    void (*release)(tn_conn *c);
} tn_frontend;

struct tn_conn {
    tn_conn *prev, *next;
    tn_daemon *d;
    tn_listener *listener;
    const tn_frontend *fe;
    void *fe_state;
    struct bufferevent *bev;
    tn_session session; /* session.id is the connection id */
    tn_sockaddr remote;
    int64_t established_ms;
    int64_t last_activity_ms;
    uint64_t bytes_in, bytes_out, msgs_in, msgs_out;
    tn_peer *peer;
    uint8_t closing;      /* no more input; closes once output is flushed */
    uint8_t dead;         /* closed; memory freed from the reap event */
    uint8_t read_paused;
    uint8_t timeout_state; /* what the armed timeouts were set for; 0 = unset */
};

tn_conn *tn_conn_new(tn_listener *l, evutil_socket_t fd, const struct sockaddr *sa, int salen,
                     tn_peer *peer, const tn_frontend *fe);
/* Flush what is queued, then close. */
void tn_conn_close_after_flush(tn_conn *c, const char *why);
/* Close now (reset, error, timeout). Safe from inside the conn's callbacks. */
void tn_conn_close(tn_conn *c, const char *why);
/* Queue bytes; false (and the connection closed) when over max_output. */
bool tn_conn_write(tn_conn *c, const void *data, size_t len);
/* Re-arm the read timeout for the current state (idle vs mid-message). */
void tn_conn_update_timeouts(tn_conn *c, bool mid_message, bool waiting);
tn_conn *tn_conn_find(tn_daemon *d, uint64_t id);
void tn_conn_remote_str(const tn_conn *c, char *buf, size_t len);
/* Frees connections closed since the last pass. */
void tn_conn_reap(tn_daemon *d);

#endif
