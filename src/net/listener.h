/* SPDX-License-Identifier: MIT */
/* listener.h - listening sockets: binding (or taking from systemd),
 * accepting with admission control, and their statistics. */
#ifndef TN_NET_LISTENER_H
#define TN_NET_LISTENER_H

#include <event2/listener.h>
#include <sys/socket.h>

#include "addr.h"
#include "net/limits.h"
#include "net/proto_ops.h"
#include "state.h"

struct tn_listener {
    tn_listener *next;
    tn_daemon *d;
    char *name;
    int protocol;
    const tn_proto_ops *ops;  /* the front end serving it; fixed for its life */
    tn_config *cfg;           /* the config it was made from (a reference); replaced on reload */
    tn_listener_conf *conf;   /* one of cfg's listeners */
    evutil_socket_t fd;
    struct evconnlistener *evl; /* stream listeners */
    void *fe_state;             /* the front end's own (UDP: batches, owed replies), freed by ops->free */
    struct tn_http_router *router; /* http: routes and middleware */
    struct sockaddr_storage bound;
    socklen_t bound_len;
    char bound_str[80];
    tn_handler *handler;        /* single handler, or */
    tn_handler **handlers;      /* selection by first token */
    size_t nhandlers;
    tn_acl *acl;
    struct tn_tls *tls;         /* NULL: plain; new connections take a reference */
    struct tn_tls *next_tls;    /* built by tn_listener_prepare, installed by configure */
    tn_peers peers;
    tn_conn_stats stats;
    struct event *backoff_ev;
    int backoff_ms;
    bool draining;              /* removed by a reload: no accepts, freed when empty */
};

/* Adds N (-1 takes one away) to counter FIELD of listener L and to the
 * daemon's total of it: every tn_conn_stats counter is kept in that pair.
 * FIELD may be indexed (rejected[reason]). */
#define TN_COUNT(l, field, n)                                                                                        \
    do {                                                                                                           \
        tn_listener *tn_count_l_ = (l);                                                                            \
        uint64_t tn_count_n_ = (uint64_t)(n);                                                                      \
        tn_count_l_->stats.field += tn_count_n_;                                                                   \
        tn_count_l_->d->stats.field += tn_count_n_;                                                                \
    } while (0)

/* The socket address of a listen value ("host:port", "[v6]:port",
 * "*:port"), host names resolved. Returns -1 with a message in err. */
int tn_listen_resolve(const char *listen, struct sockaddr_storage *ss, socklen_t *len, char *err, size_t errlen);
/* A bound (and, for SOCK_STREAM, listening) socket for CONF at SS; with
 * REUSEPORT one of a group that the kernel balances connections over.
 * Returns -1 with a message in err. */
evutil_socket_t tn_listener_bind(const tn_listener_conf *conf, int type, struct sockaddr_storage *ss, socklen_t len,
                                 bool reuseport, char *err, size_t errlen);
/* Bind and start accepting CONF (one of CFG's listeners), served by OPS
 * (the front end for conf's protocol). Returns NULL with a message in err. */
tn_listener *tn_listener_open(tn_daemon *d, tn_config *cfg, tn_listener_conf *conf, const tn_proto_ops *ops,
                              char *err, size_t errlen);
/* Builds what CONF needs that can fail to load (TLS certificates) for a
 * running listener, before a reload commits; errors go to DIAG. */
int tn_listener_prepare(tn_listener *l, tn_listener_conf *conf, tn_diag *diag);
/* Drops what tn_listener_prepare built (the reload failed elsewhere). */
void tn_listener_unprepare(tn_listener *l);
/* (Re)resolve handler names and limits from CONF, one of CFG's listeners
 * (also after a reload: the listener then holds CFG instead of its old one). */
int tn_listener_configure(tn_listener *l, tn_config *cfg, tn_listener_conf *conf, char *err, size_t errlen);
/* The handler named by TOKEN among the listener's handlers, or NULL. */
tn_handler *tn_listener_handler(const tn_listener *l, const char *token, size_t len);
void tn_listener_stop(tn_listener *l);
void tn_listener_free(tn_listener *l);
const tn_limits *tn_listener_limits(const tn_listener *l);
/* Replies its front end still owes to peers (shutdown and draining wait). */
size_t tn_listener_in_flight(const tn_listener *l);


#endif
