/* SPDX-License-Identifier: MIT */
/* http_pool.c - connections to HTTP upstream servers: opening them (with
 * connect_timeout, and TLS when the handler has a `tls` map), and keeping
 * idle ones per server for reuse (`keepalive` of them, each closed after
 * `keepalive_timeout` or as soon as the server closes or talks out of turn).
 *
 * The pool hangs off the server (upstream.h pool slot), not the handler, so
 * a reload that keeps the server keeps its warm connections; it is
 * released with the server. Idle connections are taken most recent first:
 * the warmest stay in use and the rest age out.
 *
 * Under load the requests in flight swing in bursts (a batch of responses
 * lands in one loop pass, the clients' next requests in a later one), so a
 * hard cap of `keepalive` idle connections closed the peak's surplus on
 * every swing and opened it again on the next: about one connect and one
 * close per six requests at -c50. The surplus over `keepalive` is kept
 * instead and closed only once idle for SURPLUS_GRACE, oldest first. */
#include "upstream/http_pool.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <event2/bufferevent_ssl.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "clock.h"
#include "handlers/handler.h"
#include "log.h"
#include "net/transport.h"

#define SURPLUS_GRACE_MS 1000
static const struct timeval surplus_grace = { SURPLUS_GRACE_MS / 1000, (SURPLUS_GRACE_MS % 1000) * 1000 };

typedef struct http_pool {
    tn_up_conn *idle;  /* most recent first */
    tn_up_conn *oldest;
    size_t n;
    size_t keep;       /* the last put's keepalive: more than this is surplus */
    struct event *trim_ev;
} http_pool;

static void pool_unlink(http_pool *pool, tn_up_conn *uc)
{
    if (uc->prev)
        uc->prev->next = uc->next;
    else
        pool->idle = uc->next;
    if (uc->next)
        uc->next->prev = uc->prev;
    else
        pool->oldest = uc->prev;
    uc->next = uc->prev = NULL;
    pool->n--;
    uc->server->stats.idle--;
    uc->pooled = false;
}

static void batch_unlink(tn_up_conn *uc);

void tn_up_conn_free(tn_up_conn *uc)
{
    if (!uc)
        return;
    batch_unlink(uc);
    if (uc->pooled)
        pool_unlink(uc->server->pool[TN_UPSIDE_HTTP].data, uc);
    if (uc->connect_ev)
        event_free(uc->connect_ev);
    if (uc->rd_ev)
        event_free(uc->rd_ev);
    if (uc->bev)
        bufferevent_free(uc->bev); /* closes the socket (and frees the SSL) */
    else if (uc->fd >= 0)
        close(uc->fd);
    free(uc);
}

static void pool_close_idle(tn_upstream_server *s, void *data)
{
    (void)s;
    http_pool *pool = data;
    while (pool->idle)
        tn_up_conn_free(pool->idle);
}

static void pool_release(tn_upstream_server *s, void *data)
{
    http_pool *pool = data;
    pool_close_idle(s, pool);
    if (pool->trim_ev)
        event_free(pool->trim_ev);
    free(pool);
}

static http_pool *pool_of(tn_upstream_server *s)
{
    tn_upstream_pool *slot = &s->pool[TN_UPSIDE_HTTP];
    if (!slot->data && (slot->data = calloc(1, sizeof(http_pool)))) {
        slot->release = pool_release;
        slot->close_idle = pool_close_idle;
    }
    return slot->data;
}

tn_up_conn *tn_http_pool_take(tn_upstream_server *s)
{
    http_pool *pool = pool_of(s);
    while (pool && pool->idle) {
        tn_up_conn *uc = pool->idle;
        pool_unlink(pool, uc);
        /* a reload moved the server: connections to the old address go */
        if (uc->addrlen != s->addrlen || memcmp(&uc->addr, &s->addr, s->addrlen) != 0) {
            tn_up_conn_free(uc);
            continue;
        }
        tn_up_conn_setcb(uc, NULL, NULL, NULL, NULL);
        tn_up_conn_set_timeouts(uc, NULL, NULL);
        return uc;
    }
    return NULL;
}

/* An idle connection may only go away: any byte or event closes it. */
static void idle_read(struct bufferevent *bev, void *arg)
{
    (void)bev;
    tn_up_conn_free(arg);
}

static void idle_event(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    (void)what;
    tn_up_conn_free(arg);
}

/* Closes the surplus idle for SURPLUS_GRACE_MS; looks again while some is left. */
static void pool_trim(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    http_pool *pool = arg;
    int64_t cut = tn_now_us() - SURPLUS_GRACE_MS * 1000;
    while (pool->n > pool->keep && pool->oldest->idle_since <= cut)
        tn_up_conn_free(pool->oldest);
    if (pool->n > pool->keep)
        evtimer_add(pool->trim_ev, &surplus_grace);
}

/* A connection over KEEPALIVE stays for now, with the trim armed; false
 * when the trim cannot be (no memory): then it closes at once. */
static bool surplus_ok(http_pool *pool, tn_up_conn *uc, int64_t keepalive)
{
    if ((int64_t)pool->n < keepalive)
        return true;
    if (!pool->trim_ev)
        pool->trim_ev = evtimer_new(bufferevent_get_base(uc->bev), pool_trim, pool);
    if (!pool->trim_ev)
        return false;
    if (!evtimer_pending(pool->trim_ev, NULL) && evtimer_add(pool->trim_ev, &surplus_grace) < 0)
        return false;
    return true;
}

void tn_http_pool_put(tn_up_conn *uc, int64_t keepalive, int64_t keepalive_timeout_ms)
{
    tn_upstream_server *s = uc->server;
    http_pool *pool = pool_of(s);
    if (!pool || keepalive <= 0 || s->admin != TN_UPA_ENABLED || s->removed ||
        evbuffer_get_length(bufferevent_get_input(uc->bev)) || evbuffer_get_length(bufferevent_get_output(uc->bev)) ||
        !surplus_ok(pool, uc, keepalive)) {
        tn_up_conn_free(uc);
        return;
    }
    pool->keep = (size_t)keepalive;
    uc->idle_since = tn_now_us();
    uc->next = pool->idle;
    uc->prev = NULL;
    if (pool->idle)
        pool->idle->prev = uc;
    else
        pool->oldest = uc;
    pool->idle = uc;
    pool->n++;
    s->stats.idle++;
    uc->pooled = true;
    struct timeval tv = { keepalive_timeout_ms / 1000, (keepalive_timeout_ms % 1000) * 1000 };
    tn_up_conn_setcb(uc, idle_read, NULL, idle_event, uc);
    tn_up_conn_set_timeouts(uc, &tv, NULL);
    bufferevent_setwatermark(uc->bev, EV_READ, 0, 0);
    tn_up_conn_reading(uc, true);
}

size_t tn_http_pool_idle(tn_upstream_server *s)
{
    http_pool *pool = s->pool[TN_UPSIDE_HTTP].data;
    return pool ? pool->n : 0;
}

/* ---- connecting ------------------------------------------------------------ */

static bool is_ip(const char *host)
{
    unsigned char buf[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1;
}

static void connected(evutil_socket_t fd, short what, void *arg)
{
    tn_up_conn *uc = arg;
    event_free(uc->connect_ev);
    uc->connect_ev = NULL;
    if (what & EV_TIMEOUT) {
        uc->on_connect(uc, TN_UPF_CONNECT_TIMEOUT, "connect timed out");
        return;
    }
    int err = uc->failed_now;
    socklen_t len = sizeof(err);
    if (!err && getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        err = errno;
    if (err) {
        uc->on_connect(uc, TN_UPF_CONNECT, strerror(err));
        return;
    }
    uc->on_connect(uc, -1, NULL);
}

tn_up_conn *tn_http_pool_connect(struct event_base *base, tn_upstream_server *s, int64_t connect_timeout_ms,
                                 bool probe, tn_up_conn_cb on_connect, void *arg)
{
    tn_up_conn *uc = calloc(1, sizeof(*uc));
    if (!uc)
        return NULL;
    uc->server = s;
    uc->addr = s->addr;
    uc->addrlen = s->addrlen;
    uc->on_connect = on_connect;
    uc->arg = arg;
    uc->fd = socket(s->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (uc->fd < 0) {
        tn_warn("upstream %s: socket: %s", s->name, strerror(errno));
        free(uc);
        return NULL;
    }
    int one = 1;
    setsockopt(uc->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (!probe)
        s->stats.connects++;
    struct timeval tv = { connect_timeout_ms / 1000, (connect_timeout_ms % 1000) * 1000 };
    uc->connect_ev = event_new(base, uc->fd, EV_WRITE, connected, uc);
    if (!uc->connect_ev) {
        tn_up_conn_free(uc);
        return NULL;
    }
    if (connect(uc->fd, (const struct sockaddr *)&s->addr, s->addrlen) < 0 && errno != EINPROGRESS) {
        /* refused at once (loopback): reported from the loop like a later
         * failure, so the caller has one path */
        uc->failed_now = errno;
        event_active(uc->connect_ev, EV_WRITE, 0);
        return uc;
    }
    if (event_add(uc->connect_ev, &tv) < 0) {
        tn_up_conn_free(uc);
        return NULL;
    }
    return uc;
}

/* libevent reads 16 KB per callback by default: a large body would cost a
 * parse and a wake of the client's pump per 16 KB */
static void size_io(struct bufferevent *bev)
{
    bufferevent_set_max_single_read(bev, 256 * 1024);
    bufferevent_set_max_single_write(bev, 256 * 1024);
}

int tn_http_pool_attach(tn_up_conn *uc, struct event_base *base, const tn_proxy_tls *tls)
{
    tn_upstream_server *s = uc->server;
    if (!tls || !tls->ctx) {
        uc->bev = bufferevent_socket_new(base, uc->fd, BEV_OPT_CLOSE_ON_FREE);
        if (uc->bev)
            size_io(uc->bev);
        return uc->bev ? 0 : -1;
    }
    SSL *ssl = SSL_new(tls->ctx);
    if (!ssl)
        return -1;
    const char *sni = tls->sni ? tls->sni : s->spec.host;
    if (!is_ip(sni))
        SSL_set_tlsext_host_name(ssl, sni);
    if (tls->verify) {
        /* the certificate must name the host we asked for */
        if (!tls->sni && is_ip(s->spec.host))
            X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), s->spec.host);
        else
            SSL_set1_host(ssl, sni);
    }
    uc->bev = bufferevent_openssl_socket_new(base, uc->fd, ssl, BUFFEREVENT_SSL_CONNECTING, BEV_OPT_CLOSE_ON_FREE);
    if (!uc->bev) {
        SSL_free(ssl);
        return -1;
    }
    /* servers that close without close_notify end close-delimited bodies
     * that way; the framing checks catch real truncation */
    bufferevent_openssl_set_allow_dirty_shutdown(uc->bev, 1);
    size_io(uc->bev);
    uc->tls = true;
    return 0;
}

/* ---- plain sockets, fewer system calls ------------------------------------------- */

/* most read from a plain upstream per call: with libevent's chain header
 * a buffer of 64 KB exactly (evbuffer rounds a chain up to a power of two,
 * and 128 KB is malloc's mmap threshold: a map and unmap per response) */
#define UP_READ (64 * 1024 - 256)

/* What waits for a plain upstream goes to its socket with one write and no
 * registration for writability. Only what the socket refuses (or an error,
 * which the write event reports) is left to the bufferevent, whose write
 * event is enabled just for it (the owner's write callback turns it off
 * again). */
static void send_now(tn_up_conn *uc)
{
    struct evbuffer *out = bufferevent_get_output(uc->bev);
    evutil_socket_t fd = bufferevent_getfd(uc->bev);
    /* a socket bufferevent keeps its output's front frozen but for its own writes */
    evbuffer_unfreeze(out, 1);
    while (evbuffer_get_length(out)) {
        int n = tn_sock_send(fd, out);
        if (n <= 0 && !(n < 0 && errno == EINTR))
            break;
    }
    evbuffer_freeze(out, 1);
    if (evbuffer_get_length(out))
        bufferevent_enable(uc->bev, EV_WRITE);
}

/* ---- requests leave together, at the end of the loop pass ------------------------ */

/* A request written to an upstream wakes the server's process when it
 * sleeps, and on a virtual machine that wakeup is an interrupt our CPU
 * sends. Written the moment each client's request was parsed, a long
 * pass's requests reached the server one by one, each after it had
 * answered the last and gone back to sleep (measured with nginx: one event
 * per epoll_wait in 95% of its calls). Sent together once the pass has run
 * its callbacks, as HAProxy writes after its reads, they arrive as one
 * batch that one wakeup serves. A request waits at most for the rest of
 * the pass that parsed it; a lone request's pass is itself. */
static void batch_unlink(tn_up_conn *uc)
{
    if (!uc->batch)
        return;
    *uc->batch_pprev = uc->batch_next;
    if (uc->batch_next)
        uc->batch_next->batch_pprev = uc->batch_pprev;
    else
        uc->batch->tail = uc->batch_pprev;
    uc->batch = NULL;
    uc->batch_next = NULL;
    uc->batch_pprev = NULL;
}

/* A write callback may free connections, this one or others in the batch,
 * or queue more (a client's body read on): so the batch is taken from its
 * head each time, and what is queued meanwhile leaves in this pass too. It
 * may even end the last exchange of a handler a reload retired, and the
 * handler owns the batch: the handler is held until the batch is done. */
static void batch_flush(void *arg)
{
    tn_up_batch *b = arg;
    tn_handler *owner = b->owner;
    tn_handler_ref(owner);
    tn_up_conn *uc;
    while ((uc = b->first)) {
        batch_unlink(uc);
        send_now(uc);
        if (!evbuffer_get_length(bufferevent_get_output(uc->bev)) && uc->writecb)
            uc->writecb(uc->bev, uc->cbarg);
    }
    tn_handler_unref(owner);
}

void tn_up_batch_start(tn_up_batch *b, tn_handler *owner)
{
    b->first = NULL;
    b->tail = &b->first;
    b->owner = owner->daemon ? owner : NULL;
    if (!b->owner)
        return;
    b->job.run = batch_flush;
    b->job.arg = b;
    tn_before_sleep_add(owner->daemon, &b->job);
}

/* The handler is going: its exchanges, and so its requests, are gone. */
void tn_up_batch_stop(tn_up_batch *b)
{
    if (!b->owner)
        return;
    while (b->first)
        batch_unlink(b->first);
    tn_before_sleep_remove(b->owner->daemon, &b->job);
    b->owner = NULL;
}

void tn_http_pool_send(tn_up_batch *b, tn_up_conn *uc)
{
    if (!uc || !uc->bev || uc->tls)
        return;
    if (!b->owner) {
        send_now(uc); /* no loop to wait for (a handler built without a daemon) */
        return;
    }
    if (!uc->batch) {
        /* at the tail: the upstream's loop answers them in the order they
         * arrive, so the client that has waited longest is answered first */
        uc->batch = b;
        uc->batch_next = NULL;
        uc->batch_pprev = b->tail;
        *b->tail = uc;
        b->tail = &uc->batch_next;
    }
    tn_before_sleep_due(b->owner->daemon, &b->job);
}

/* libevent 2.1's evbuffer_read asks the socket's size (ioctl FIONREAD)
 * before every read and takes at most 4 KB per call, and the bufferevent
 * reads once per event: a 64 KB body took sixteen wakeups, parses and
 * client writes, and every answer a system call more. A plain upstream
 * connection the proxy uses is read here instead, with readv into its
 * bufferevent's input, UP_READ at a time; the bufferevent keeps the output,
 * the write timeout and write errors. The callbacks and events the owner
 * sees are the bufferevent's (the read callback, BEV_EVENT_READING with
 * EOF, ERROR or TIMEOUT). */

/* One read into IN; returns the bytes, 0 at the end of stream, -1 on an
 * error (errno), -2 when the socket has nothing now. */
static ssize_t read_chunk(tn_up_conn *uc, struct evbuffer *in, evutil_socket_t fd)
{
    struct evbuffer_iovec v[2];
    struct iovec iov[2];
    uc->read_full = false;
    /* a socket bufferevent keeps its input's back frozen but for its own reads */
    evbuffer_unfreeze(in, 0);
    int nv = evbuffer_reserve_space(in, UP_READ, v, 2);
    if (nv <= 0) {
        evbuffer_freeze(in, 0);
        errno = ENOMEM;
        return -1;
    }
    size_t want = 0;
    for (int i = 0; i < nv; i++) {
        iov[i].iov_base = v[i].iov_base;
        iov[i].iov_len = v[i].iov_len;
        want += v[i].iov_len;
    }
    ssize_t n;
    do
        n = nv == 1 ? recv(fd, iov[0].iov_base, iov[0].iov_len, 0) : readv(fd, iov, nv);
    while (n < 0 && errno == EINTR);
    if (n > 0) {
        size_t left = (size_t)n;
        int used = 0;
        for (; used < nv && left; used++) {
            if (v[used].iov_len > left)
                v[used].iov_len = left;
            left -= v[used].iov_len;
        }
        evbuffer_commit_space(in, v, used);
        uc->read_full = (size_t)n == want;
    }
    int err = errno;
    evbuffer_freeze(in, 0);
    errno = err;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        return -2;
    return n;
}

static void up_readable(evutil_socket_t fd, short what, void *arg)
{
    tn_up_conn *uc = arg;
    struct bufferevent *bev = uc->bev;
    short ev = BEV_EVENT_READING | BEV_EVENT_TIMEOUT;
    if (!(what & EV_TIMEOUT)) {
        ssize_t n = read_chunk(uc, bufferevent_get_input(bev), fd);
        if (n == -2)
            return;
        if (n > 0) {
            if (uc->readcb)
                uc->readcb(bev, uc->cbarg);
            return;
        }
        ev = BEV_EVENT_READING | (n == 0 ? BEV_EVENT_EOF : BEV_EVENT_ERROR);
    }
    /* as the bufferevent does: reading stops with the event */
    tn_up_conn_reading(uc, false);
    if (uc->eventcb)
        uc->eventcb(bev, ev, uc->cbarg);
}

void tn_up_conn_setcb(tn_up_conn *uc, bufferevent_data_cb readcb, bufferevent_data_cb writecb,
                      bufferevent_event_cb eventcb, void *arg)
{
    if (uc->tls) {
        bufferevent_setcb(uc->bev, readcb, writecb, eventcb, arg);
        return;
    }
    uc->writecb = writecb; /* also called by batch_flush */
    uc->cbarg = arg;
    if (!uc->rd_ev) {
        /* without it reads stay with the bufferevent (no memory: slower, not wrong) */
        uc->rd_ev = event_new(bufferevent_get_base(uc->bev), uc->fd, EV_READ | EV_PERSIST, up_readable, uc);
        if (!uc->rd_ev) {
            bufferevent_setcb(uc->bev, readcb, writecb, eventcb, arg);
            return;
        }
        bufferevent_disable(uc->bev, EV_READ);
    }
    uc->readcb = readcb;
    uc->eventcb = eventcb;
    bufferevent_setcb(uc->bev, NULL, writecb, eventcb, arg);
}

void tn_up_conn_set_timeouts(tn_up_conn *uc, const struct timeval *rt, const struct timeval *wt)
{
    if (!uc->rd_ev) {
        bufferevent_set_timeouts(uc->bev, rt, wt);
        return;
    }
    bufferevent_set_timeouts(uc->bev, NULL, wt);
    uc->has_rt = rt != NULL;
    if (rt)
        uc->rt = *rt;
    if (!uc->reading)
        return;
    if (rt)
        event_add(uc->rd_ev, rt);
    else
        event_remove_timer(uc->rd_ev);
}

void tn_up_conn_reading(tn_up_conn *uc, bool on)
{
    if (!uc->rd_ev) {
        if (on)
            bufferevent_enable(uc->bev, EV_READ);
        else
            bufferevent_disable(uc->bev, EV_READ);
        return;
    }
    if (on == uc->reading)
        return;
    uc->reading = on;
    if (on)
        event_add(uc->rd_ev, uc->has_rt ? &uc->rt : NULL);
    else
        event_del(uc->rd_ev);
}

/* After a read that filled its space: reads on from the plain socket while
 * the input plus WAITING stays under HIGH. The end of stream and errors
 * are left to the next read event, which sees them again. */
void tn_http_pool_fill(tn_up_conn *uc, size_t waiting, size_t high)
{
    if (!uc->rd_ev)
        return;
    struct evbuffer *in = bufferevent_get_input(uc->bev);
    while (uc->read_full && evbuffer_get_length(in) + waiting < high)
        if (read_chunk(uc, in, uc->fd) <= 0)
            break;
}
