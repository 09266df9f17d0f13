/* SPDX-License-Identifier: MIT */
/* listener.c - listening sockets and admission.
 *
 * A listener binds its address (IPv4 or IPv6, port 0 allowed: the bound
 * address is read back and reported), resolves the handlers it names, and
 * admits connections through the limits checks in the order that
 * costs least: allow/deny, the global cap, the listener's cap, per-address
 * connections, per-address connections per second. What the protocol adds
 * (the connection an accepted socket becomes, per-listener state, reading a
 * datagram socket, the answer a refused client gets before the close) comes
 * from the listener's tn_proto_ops, so this file names no protocol.
 *
 * Running out of descriptors (EMFILE/ENFILE) is normal under load: the
 * listener stops accepting and retries on a timer with backoff, instead of
 * spinning on a socket that stays readable. */
#include "net/listener.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "net/tls.h"
#include "workers.h"

const tn_limits *tn_listener_limits(const tn_listener *l)
{
    return &l->conf->limits;
}

tn_handler *tn_listener_handler(const tn_listener *l, const char *token, size_t len)
{
    for (size_t i = 0; i < l->nhandlers; i++) {
        const char *name = l->handlers[i]->name;
        if (strlen(name) == len && memcmp(name, token, len) == 0)
            return l->handlers[i];
    }
    return NULL;
}

static void release_handlers(tn_listener *l)
{
    if (l->handler)
        tn_handler_unref(l->handler);
    for (size_t i = 0; i < l->nhandlers; i++)
        tn_handler_unref(l->handlers[i]);
    free(l->handlers);
    l->handler = NULL;
    l->handlers = NULL;
    l->nhandlers = 0;
}

int tn_listener_prepare(tn_listener *l, tn_listener_conf *conf, tn_diag *diag)
{
    tn_listener_unprepare(l);
    if (!conf->tls)
        return 0;
    l->next_tls = tn_tls_new(conf, diag);
    return l->next_tls ? 0 : -1;
}

void tn_listener_unprepare(tn_listener *l)
{
    tn_tls_unref(l->next_tls);
    l->next_tls = NULL;
}

int tn_listener_configure(tn_listener *l, tn_config *cfg, tn_listener_conf *conf, char *err, size_t errlen)
{
    tn_registry *r = l->d->registry;
    tn_handler *single = NULL;
    tn_handler **list = NULL;
    if (conf->handler) {
        single = tn_registry_find(r, conf->handler);
        if (!single) {
            snprintf(err, errlen, "listener '%s': handler '%s' is not running", conf->name, conf->handler);
            return -1;
        }
    }
    if (conf->handlers.n) {
        list = calloc(conf->handlers.n, sizeof(*list));
        if (!list) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        for (size_t i = 0; i < conf->handlers.n; i++) {
            list[i] = tn_registry_find(r, conf->handlers.v[i]);
            if (!list[i]) {
                snprintf(err, errlen, "listener '%s': handler '%s' is not running", conf->name,
                         conf->handlers.v[i]);
                free(list);
                return -1;
            }
        }
    }
    tn_listener_conf *old_conf = l->conf;
    tn_config *old_cfg = l->cfg;
    l->conf = conf;
    l->cfg = cfg;
    if (l->ops->configure && l->ops->configure(l, err, errlen) < 0) {
        l->conf = old_conf;
        l->cfg = old_cfg;
        free(list);
        return -1;
    }
    tn_config_ref(cfg);
    tn_config_unref(old_cfg);
    tn_acl *acl = tn_acl_new(&conf->limits.allow, &conf->limits.deny);
    release_handlers(l);
    /* a listener configured before (a reload) gets the contexts prepared for
     * it; connections keep the ones they were accepted with */
    if (l->next_tls || !conf->tls) {
        tn_tls_unref(l->tls);
        l->tls = l->next_tls;
        l->next_tls = NULL;
    }
    if (single)
        tn_handler_ref(single);
    for (size_t i = 0; i < conf->handlers.n; i++)
        tn_handler_ref(list[i]);
    l->handler = single;
    l->handlers = list;
    l->nhandlers = conf->handlers.n;
    tn_acl_free(l->acl);
    l->acl = acl;
    l->conf = conf;
    return 0;
}

/* Best effort: the client learns why before the close. */
static void refuse(tn_listener *l, evutil_socket_t fd, int reason)
{
    tn_workers_publish(l->d); /* a place reserved by tn_workers_admit() goes back */
    TN_COUNT(l, rejected[reason], 1);
    /* a TLS client could not read a plain answer: just close */
    if (!l->tls && l->ops->refuse)
        l->ops->refuse(l, fd, reason);
    evutil_closesocket(fd);
}

static void on_accept(struct evconnlistener *evl, evutil_socket_t fd, struct sockaddr *sa, int salen, void *arg)
{
    (void)evl;
    tn_listener *l = arg;
    tn_daemon *d = l->d;
    const tn_limits *lim = &l->conf->limits;
    l->backoff_ms = 0;
    if (d->stopping || l->draining) {
        evutil_closesocket(fd);
        return;
    }
    if (!tn_acl_allows(l->acl, sa)) {
        refuse(l, fd, TN_REJ_DENIED);
        return;
    }
    if (!tn_workers_admit(d, d->cfg->daemon.max_connections)) {
        refuse(l, fd, TN_REJ_MAX_CONNECTIONS);
        return;
    }
    if (lim->max_connections && (int64_t)l->stats.active_connections >= lim->max_connections) {
        refuse(l, fd, TN_REJ_LISTENER_FULL);
        return;
    }
    tn_peer *peer = NULL;
    if (lim->max_connections_per_ip || lim->max_connections_per_second || lim->rate_limit > 0) {
        peer = tn_peers_get(&l->peers, sa);
        if (peer && lim->max_connections_per_ip && (int64_t)peer->conns >= lim->max_connections_per_ip) {
            refuse(l, fd, TN_REJ_PER_IP);
            return;
        }
        struct timeval now;
        event_base_gettimeofday_cached(d->base, &now);
        if (peer && !tn_peer_admit_rate(peer, lim->max_connections_per_second, now.tv_sec)) {
            refuse(l, fd, TN_REJ_PER_SECOND);
            return;
        }
        /* workers count per address for the whole daemon, in one step */
        if (peer && !tn_workers_ip_admit(d, l->name, sa, lim->max_connections_per_ip)) {
            refuse(l, fd, TN_REJ_PER_IP);
            return;
        }
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    bool accepted = l->ops->accept(l, fd, sa, salen, peer);
    tn_workers_publish(d); /* the reservation becomes what was counted */
    if (!accepted) {
        if (peer)
            tn_workers_ip_release(d, l->name, sa);
        TN_COUNT(l, connection_errors, 1);
        evutil_closesocket(fd);
    }
}

static void backoff_done(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    tn_listener *l = arg;
    if (!l->draining && l->evl)
        evconnlistener_enable(l->evl);
}

static void on_accept_error(struct evconnlistener *evl, void *arg)
{
    tn_listener *l = arg;
    int err = EVUTIL_SOCKET_ERROR();
    TN_COUNT(l, connection_errors, 1);
    if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
        /* Out of descriptors: stop accepting for a while instead of spinning. */
        l->backoff_ms = l->backoff_ms ? l->backoff_ms * 2 : 10;
        if (l->backoff_ms > 1000)
            l->backoff_ms = 1000;
        tn_warn("listener %s: accept: %s; pausing accepts for %d ms", l->name, strerror(err), l->backoff_ms);
        evconnlistener_disable(evl);
        struct timeval tv = { l->backoff_ms / 1000, (l->backoff_ms % 1000) * 1000 };
        evtimer_add(l->backoff_ev, &tv);
        return;
    }
    tn_debug("listener %s: accept: %s", l->name, strerror(err));
}

int tn_listen_resolve(const char *listen, struct sockaddr_storage *ss, socklen_t *len, char *err, size_t errlen)
{
    char host[256];
    int port;
    if (tn_parse_listen(listen, host, sizeof(host), &port) < 0) {
        snprintf(err, errlen, "bad address '%s'", listen);
        return -1;
    }
    memset(ss, 0, sizeof(*ss));
    if (!*host) {
        /* "*:port": dual-stack when the host allows it */
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
        in6->sin6_family = AF_INET6;
        in6->sin6_addr = in6addr_any;
        in6->sin6_port = htons((uint16_t)port);
        *len = sizeof(*in6);
        return 0;
    }
    struct sockaddr_in *in = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, host, &in->sin_addr) == 1) {
        in->sin_family = AF_INET;
        in->sin_port = htons((uint16_t)port);
        *len = sizeof(*in);
        return 0;
    }
    if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)port);
        *len = sizeof(*in6);
        return 0;
    }
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_flags = AI_ADDRCONFIG }, *res = NULL;
    int rc = getaddrinfo(host, NULL, &hints, &res);
    if (rc != 0 || !res) {
        snprintf(err, errlen, "cannot resolve '%s': %s", host, gai_strerror(rc));
        return -1;
    }
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *len = res->ai_addrlen;
    ((struct sockaddr_in *)ss)->sin_port = htons((uint16_t)port);
    freeaddrinfo(res);
    return 0;
}

evutil_socket_t tn_listener_bind(const tn_listener_conf *conf, int type, struct sockaddr_storage *ss, socklen_t len,
                                 bool reuseport, char *err, size_t errlen)
{
    evutil_socket_t fd = socket(ss->ss_family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return -1;
    }
    int one = 1, zero = 0;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0) {
        snprintf(err, errlen, "SO_REUSEPORT: %s", strerror(errno));
        close(fd);
        return -1;
    }
    if (ss->ss_family == AF_INET6) {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
        int v6only = IN6_IS_ADDR_UNSPECIFIED(&in6->sin6_addr) ? 0 : 1;
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, v6only ? &one : &zero, sizeof(int));
    }
    if (bind(fd, (struct sockaddr *)ss, len) < 0) {
        snprintf(err, errlen, "cannot bind %s: %s", conf->listen, strerror(errno));
        close(fd);
        return -1;
    }
    if (type == SOCK_STREAM && listen(fd, (int)conf->backlog) < 0) {
        snprintf(err, errlen, "cannot listen on %s: %s", conf->listen, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

tn_listener *tn_listener_open(tn_daemon *d, tn_config *cfg, tn_listener_conf *conf, const tn_proto_ops *ops,
                              char *err, size_t errlen)
{
    if (!ops) {
        snprintf(err, errlen, "listener '%s': no front end for its protocol", conf->name);
        return NULL;
    }
    tn_listener *l = calloc(1, sizeof(*l));
    if (!l || tn_peers_init(&l->peers) < 0) {
        free(l);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    l->d = d;
    l->fd = -1;
    l->name = strdup(conf->name);
    l->protocol = conf->protocol;
    l->ops = ops;
    char why[256];
    tn_diag diag = { 0 };
    if (tn_listener_prepare(l, conf, &diag) < 0) {
        char *all = tn_diag_join(&diag);
        snprintf(err, errlen, "%s", all ? all : "cannot set up TLS");
        free(all);
        tn_diag_free(&diag);
        tn_listener_free(l);
        return NULL;
    }
    tn_diag_free(&diag); /* its warnings (expiry) came from tn_check_startup() already */
    if (tn_listener_configure(l, cfg, conf, why, sizeof(why)) < 0) {
        snprintf(err, errlen, "%s", why);
        tn_listener_free(l);
        return NULL;
    }
    struct sockaddr_storage ss;
    socklen_t len = 0;
    int type = ops->socktype;
    if (tn_listen_resolve(conf->listen, &ss, &len, why, sizeof(why)) == 0) {
        /* socket activation: systemd may already hold this socket for us;
         * a worker process gets its slot's socket from the master */
        l->fd = d->worker ? tn_workers_take_socket(d->worker, conf)
                          : tn_sd_take(&d->sd, conf->fd_name, type, (struct sockaddr *)&ss, len);
        if (l->fd >= 0) {
            evutil_make_socket_nonblocking(l->fd);
            evutil_make_socket_closeonexec(l->fd);
            if (!d->worker)
                tn_info("listener %s: using the socket passed by systemd", conf->name);
        }
    }
    if (l->fd < 0 && (len == 0 || (l->fd = tn_listener_bind(conf, type, &ss, len, false, why, sizeof(why))) < 0)) {
        snprintf(err, errlen, "%s:%d:%d: listener '%s': %s", conf->listen_pos.file, conf->listen_pos.line,
                 conf->listen_pos.col, conf->name, why);
        tn_listener_free(l);
        return NULL;
    }
    l->bound_len = sizeof(l->bound);
    getsockname(l->fd, (struct sockaddr *)&l->bound, &l->bound_len);
    tn_addr_format((struct sockaddr *)&l->bound, l->bound_str, sizeof(l->bound_str));
    l->backoff_ev = evtimer_new(d->base, backoff_done, l);
    if (type == SOCK_DGRAM) {
        if (ops->start(l, why, sizeof(why)) < 0) {
            snprintf(err, errlen, "listener '%s': %s", conf->name, why);
            tn_listener_free(l);
            return NULL;
        }
    } else {
        l->evl = evconnlistener_new(d->base, on_accept, l, LEV_OPT_CLOSE_ON_EXEC, -1, l->fd);
        if (!l->evl) {
            snprintf(err, errlen, "listener '%s': cannot watch socket", conf->name);
            tn_listener_free(l);
            return NULL;
        }
        evconnlistener_set_error_cb(l->evl, on_accept_error);
    }
    tn_info("listener %s: %s%s on %s", l->name, l->ops->name, l->tls ? " over TLS" : "",
            l->bound_str);
    return l;
}

void tn_listener_stop(tn_listener *l)
{
    /* Close the listening socket, not just stop watching it: new clients
     * are refused at once instead of waiting in the backlog. UDP keeps its
     * socket until freed, as owed replies go out through it. */
    if (l->evl) {
        evconnlistener_free(l->evl);
        l->evl = NULL;
        evutil_closesocket(l->fd);
        l->fd = -1;
    }
    if (l->ops->stop)
        l->ops->stop(l);
    if (l->backoff_ev)
        evtimer_del(l->backoff_ev);
}

void tn_listener_free(tn_listener *l)
{
    if (!l)
        return;
    tn_daemon *d = l->d;
    for (tn_listener **pp = &d->listeners; *pp; pp = &(*pp)->next) {
        if (*pp == l) {
            *pp = l->next;
            break;
        }
    }
    if (l->evl)
        evconnlistener_free(l->evl);
    if (l->ops->free)
        l->ops->free(l);
    if (l->fd >= 0)
        evutil_closesocket(l->fd);
    if (l->backoff_ev)
        event_free(l->backoff_ev);
    release_handlers(l);
    tn_acl_free(l->acl);
    tn_tls_unref(l->tls);
    tn_tls_unref(l->next_tls);
    tn_peers_free(&l->peers);
    free(l->name);
    tn_config_unref(l->cfg);
    free(l);
}

size_t tn_listener_in_flight(const tn_listener *l)
{
    return l->ops->in_flight ? l->ops->in_flight(l) : 0;
}
