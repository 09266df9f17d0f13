/* SPDX-License-Identifier: MIT */
/* http_pool.h - connections to HTTP upstream servers, opened and pooled
 * per server (see http_pool.c). */
#ifndef TN_UPSTREAM_HTTP_POOL_H
#define TN_UPSTREAM_HTTP_POOL_H

#include <event2/bufferevent.h>
#include <event2/event.h>

#include "state.h"
#include "upstream/proxy.h"

typedef struct tn_up_conn tn_up_conn;
typedef struct tn_up_batch tn_up_batch;

/* The TCP connect ended: REASON -1 connected (DETAIL NULL), else a
 * tn_upstream_failure with a text for the log. */
typedef void (*tn_up_conn_cb)(tn_up_conn *uc, int reason, const char *detail);

struct tn_up_conn {
    tn_up_conn *next, *prev; /* in the pool while idle */
    tn_upstream_server *server; /* the pool holds no reference: it dies with the server */
    struct sockaddr_storage addr;
    socklen_t addrlen;
    evutil_socket_t fd;
    struct bufferevent *bev; /* NULL until connected */
    struct event *connect_ev;
    int failed_now;
    bool tls;
    bool pooled;
    uint64_t uses;
    int64_t idle_since; /* tn_now_us() when pooled */
    /* plain connections the proxy reads itself (http_pool.c) */
    struct event *rd_ev;
    bufferevent_data_cb readcb, writecb;
    bufferevent_event_cb eventcb;
    void *cbarg;
    struct timeval rt;
    bool has_rt, reading, read_full;
    tn_up_conn_cb on_connect;
    void *arg; /* the user's: the exchange using it */
    /* output waiting for the end of the loop pass (tn_up_batch) */
    tn_up_batch *batch;
    tn_up_conn *batch_next, **batch_pprev;
};

/* An idle connection to S, or NULL. Its callbacks and timeouts are clear. */
tn_up_conn *tn_http_pool_take(tn_upstream_server *s);
/* Back to S's pool, or closed when KEEPALIVE is 0, the server is not
 * enabled (drain, down, removed by a reload), or bytes are left over
 * either way. Connections over KEEPALIVE are closed once idle for a
 * second (see http_pool.c). */
void tn_http_pool_put(tn_up_conn *uc, int64_t keepalive, int64_t keepalive_timeout_ms);
size_t tn_http_pool_idle(tn_upstream_server *s);
/* Requests to upstreams leave together at the end of the loop pass (see
 * http_pool.c): a proxy handler's batch, registered with the daemon's
 * end-of-pass jobs from start to stop. */
struct tn_up_batch {
    tn_pass_job job;
    tn_up_conn *first, **tail; /* in the order the requests were made */
    tn_handler *owner; /* held while the batch is sent (batch_flush); NULL: not started */
};
/* Starts B on OWNER's loop; a handler without a daemon (tests) has none. */
void tn_up_batch_start(tn_up_batch *b, tn_handler *owner);
void tn_up_batch_stop(tn_up_batch *b);
/* UC's pending output goes to its plain socket at the end of this pass,
 * with B's others, in the order they were queued; what the socket refuses
 * then waits for the write event. Once all of it is out, UC's write
 * callback runs, as it does after the write event. TLS: left to the
 * bufferevent. B not started: sent now. */
void tn_http_pool_send(tn_up_batch *b, tn_up_conn *uc);
/* After a read that filled its space: reads on from the plain socket
 * while the input plus WAITING stays under HIGH. */
void tn_http_pool_fill(tn_up_conn *uc, size_t waiting, size_t high);

/* The bufferevent's setcb, set_timeouts and enable/disable(EV_READ) for a
 * connection the proxy uses: a plain one is read by the pool itself (see
 * http_pool.c), with the same callbacks and events. */
void tn_up_conn_setcb(tn_up_conn *uc, bufferevent_data_cb readcb, bufferevent_data_cb writecb,
                      bufferevent_event_cb eventcb, void *arg);
void tn_up_conn_set_timeouts(tn_up_conn *uc, const struct timeval *rt, const struct timeval *wt);
void tn_up_conn_reading(tn_up_conn *uc, bool on);

/* Starts a TCP connect to S (counted in its stats unless a health
 * probe); ON_CONNECT follows from the loop. NULL when no socket could be
 * made. */
tn_up_conn *tn_http_pool_connect(struct event_base *base, tn_upstream_server *s, int64_t connect_timeout_ms,
                                 bool probe, tn_up_conn_cb on_connect, void *arg);
/* After the TCP connect: the bufferevent, with a TLS client session in
 * progress when TLS is set (BEV_EVENT_CONNECTED then tells it is done). */
int tn_http_pool_attach(tn_up_conn *uc, struct event_base *base, const tn_proxy_tls *tls);
void tn_up_conn_free(tn_up_conn *uc);

#endif
