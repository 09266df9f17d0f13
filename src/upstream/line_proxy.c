/* SPDX-License-Identifier: MIT */
/* line_proxy.c - the proxy handler on TCP line listeners.
 *
 * mode "message" (as twemproxy does for Redis): every server has a pool of
 * pool_size connections, opened together when the server is first used and
 * reopened as they die, shared by every client of every listener using the
 * handler. A line goes out, with "\n", on the pool connection of its
 * client's slot (connection id modulo pool_size: a client's lines reach the
 * server in its order, so INCR then GET means what it says), and the
 * server's replies come back in the order the requests went out, so each
 * connection keeps a FIFO of its requests and the next reply line belongs
 * to its head. That is only right
 * for protocols with exactly one reply line per request line; Redis inline
 * commands answered by a status, an error or an integer (PING, SET, INCR,
 * DEL) are, a bulk reply (GET: "$3\r\nbar\r\n") is not.
 *
 * A client that goes away with requests in flight only cancels them: their
 * replies still arrive on the shared stream and are read and dropped, so
 * the next reply still finds its request. A request is "sent" once it is on
 * a connection that has connected; one queued on a connection still
 * connecting when the connect fails is retried on another server (retries,
 * with backoff), one sent on a connection that then dies fails with
 * "Error: ..." (the server may have run it). A reply line over max_output,
 * a reply nobody asked for and a timeout between replies drop the
 * connection and fail what is in flight on it.
 *
 * Replies read in one go are delivered as a batch (daemon.reply_batch): a
 * client whose pipelined lines came back together gets them in one write,
 * not one write per line.
 *
 * Backpressure: at most INFLIGHT_MAX requests are in flight per connection;
 * beyond that requests wait per server (WAIT_MAX, then "Error: upstream
 * busy"), and each client is paused by the line front end when it has
 * 1,024 replies owed. Memory is therefore bounded by the lines in flight.
 *
 * mode "connection" (as nginx's stream module): the client connection is
 * spliced to one upstream connection at accept and bytes are relayed both
 * ways. Either side that has SPLICE_HIGH bytes unwritten on the other stops
 * being read until they drain; a side's end of stream is passed on as a
 * shutdown of writing (a TLS client is closed instead) and the splice ends
 * when both sides have ended, when either fails, or after the listener's
 * idle_timeout without a byte in either direction.
 *
 * Lifetime: jobs hold their handler (and so its group and servers); a pool
 * lives with its server, possibly across reloads, and holds no handler.
 * Delivering a reply (tn_job_done) may run the front end, which may send
 * new lines into the same pool or drop the last handler reference, so the
 * callbacks hold a server reference while they work. */
#include "upstream/line_proxy.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>

#include "clock.h"
#include "log.h"
#include "net/conn.h"
#include "net/listener.h"

#define INFLIGHT_MAX 1024 /* requests in flight on one upstream connection */
#define WAIT_MAX 4096     /* requests waiting for room on a server's connections */
#define TRIED_MAX 8       /* servers a request remembers having failed on */
#define SPLICE_HIGH (256 * 1024)

typedef struct lp_settings {
    int64_t connect_timeout, timeout, send_timeout; /* ms, 0 = none (connect: never 0) */
    int64_t max_reply;
    size_t pool_size;
} lp_settings;

/* The side's state in its proxy handler. */
typedef struct tn_line_proxy {
    tn_handler *h;
    tn_upstream_group *g;
    lp_settings set;
} tn_line_proxy;

typedef struct lp_req lp_req;
typedef struct lp_conn lp_conn;
typedef struct lp_pool lp_pool;

/* A place in a pool: its connection (NULL until opened, or after it died)
 * and the requests waiting for room on it. */
typedef struct lp_slot {
    lp_conn *conn;
    lp_req *wait_head, *wait_tail;
    size_t nwait;
} lp_slot;

enum { REQ_WAITING, REQ_BACKOFF, REQ_QUEUED };

struct lp_req {
    lp_req *next;
    tn_job *job;       /* NULL once the client went away: the reply is dropped */
    tn_line_proxy *lp; /* NULL with job */
    tn_upstream_server *server;
    tn_upstream_server *tried[TRIED_MAX];
    size_t ntried;
    int retried;
    int state;
    int64_t try_us;    /* when the current try started */
    struct event *timer; /* backoff before a retry */
};

struct lp_conn {
    lp_pool *pool;
    size_t slot;
    struct bufferevent *bev;
    lp_req *head, *tail; /* in the order the server answers */
    size_t inflight;
    bool connected;
    bool used;       /* a request went out on it before: the next one reuses it */
    bool read_timer; /* the read timeout is armed */
};

struct lp_pool {
    tn_upstream_server *s;
    struct event_base *base;
    tn_daemon *d;
    lp_settings set; /* of the handler that used it last */
    lp_slot *slots;
    size_t n;
};

static void tv_ms(struct timeval *tv, int64_t ms)
{
    tv->tv_sec = (time_t)(ms / 1000);
    tv->tv_usec = (suseconds_t)(ms % 1000) * 1000;
}

static void nodelay(struct bufferevent *bev)
{
    int one = 1;
    evutil_socket_t fd = bufferevent_getfd(bev);
    if (fd >= 0)
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* ---- requests ------------------------------------------------------------ */

static void req_free(lp_req *r)
{
    if (r->timer)
        event_free(r->timer);
    free(r);
}

/* The client gave up: the job ends now (the front end is done with it), the
 * request stays where it is as a placeholder whose reply is dropped. */
static void req_cancelled(tn_job *job)
{
    lp_req *r = job->hstate;
    r->job = NULL;
    r->lp = NULL;
    job->hstate = NULL;
    if (r->state == REQ_BACKOFF)
        req_free(r);
    tn_job_done(job, TN_SILENT, NULL, 0);
}

/* Answers the request's client (unless it left) and frees it. */
static void req_finish(lp_req *r, tn_result res, const char *data, size_t len)
{
    tn_job *job = r->job;
    req_free(r);
    if (job) {
        job->cancel = NULL;
        tn_job_done(job, res, data, len);
    }
}

/* The hash key of a line: its first token, or the client's address. */
static const char *req_key(const tn_upstream_group *g, const char *line, size_t len, const struct sockaddr *remote,
                           char *buf, size_t buflen, size_t *keylen)
{
    if (g->balance != TN_BALANCE_HASH)
        return NULL;
    if (g->key_kind == TN_UPK_TOKEN) {
        size_t n = 0;
        while (n < len && line[n] != ' ' && line[n] != '\t')
            n++;
        *keylen = n;
        return line;
    }
    if (g->key_kind == TN_UPK_REMOTE_ADDR && remote) {
        const void *a = NULL;
        size_t n = 0;
        if (remote->sa_family == AF_INET) {
            a = &((const struct sockaddr_in *)remote)->sin_addr;
            n = 4;
        } else if (remote->sa_family == AF_INET6) {
            a = &((const struct sockaddr_in6 *)remote)->sin6_addr;
            n = 16;
        }
        if (a && n <= buflen) {
            memcpy(buf, a, n);
            *keylen = n;
            return buf;
        }
    }
    return NULL;
}

/* ---- pools and their connections ------------------------------------------ */

static void conn_read_cb(struct bufferevent *bev, void *arg);
static void conn_event_cb(struct bufferevent *bev, short what, void *arg);

/* The read timeout runs only while replies are owed: a pooled connection
 * may idle as long as the server lets it. */
static void conn_timers(lp_conn *c, bool force)
{
    bool want = c->inflight && c->pool->set.timeout > 0;
    if (!c->connected || (want == c->read_timer && !force))
        return;
    struct timeval rt, wt;
    tv_ms(&rt, c->pool->set.timeout);
    tv_ms(&wt, c->pool->set.send_timeout);
    bufferevent_set_timeouts(c->bev, want ? &rt : NULL, c->pool->set.send_timeout > 0 ? &wt : NULL);
    c->read_timer = want;
}

static lp_conn *conn_open(lp_pool *p)
{
    lp_conn *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->pool = p;
    c->bev = bufferevent_socket_new(p->base, -1, BEV_OPT_CLOSE_ON_FREE);
    if (!c->bev) {
        free(c);
        return NULL;
    }
    struct timeval ct;
    tv_ms(&ct, p->set.connect_timeout);
    bufferevent_setcb(c->bev, conn_read_cb, NULL, conn_event_cb, c);
    bufferevent_set_timeouts(c->bev, NULL, &ct); /* a connect waits on writability */
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    /* a refused connect is reported through the event callback, later */
    if (bufferevent_socket_connect(c->bev, (struct sockaddr *)&p->s->addr, (int)p->s->addrlen) < 0) {
        bufferevent_free(c->bev);
        free(c);
        return NULL;
    }
    nodelay(c->bev);
    p->s->stats.connects++;
    p->s->stats.idle++;
    return c;
}

static void pool_release(tn_upstream_server *s, void *data);

/* The server's pool, created on first use; settings follow the handler
 * that uses it (a reload may change them). */
static lp_pool *pool_of(tn_line_proxy *lp, tn_upstream_server *s)
{
    lp_pool *p = s->pool[TN_UPSIDE_LINE].data;
    if (!p) {
        if (!(p = calloc(1, sizeof(*p))))
            return NULL;
        p->s = s;
        p->base = lp->h->base;
        p->d = lp->h->daemon;
        s->pool[TN_UPSIDE_LINE].data = p;
        s->pool[TN_UPSIDE_LINE].release = pool_release;
    }
    p->set = lp->set;
    if (p->n < lp->set.pool_size) {
        lp_slot *v = realloc(p->slots, lp->set.pool_size * sizeof(*v));
        if (!v)
            return p->n ? p : NULL;
        memset(v + p->n, 0, (lp->set.pool_size - p->n) * sizeof(*v));
        p->slots = v;
        p->n = lp->set.pool_size;
    }
    return p;
}

/* The slot of a client: all its lines take the same connection, so that
 * they reach the server in the client's order (Redis runs INCR, then GET,
 * as sent). Every slot is opened when the server is first used, and
 * reopened when needed after its connection died. */
static lp_slot *pool_slot(lp_pool *p, uint64_t client)
{
    size_t n = p->set.pool_size < p->n ? p->set.pool_size : p->n;
    for (size_t i = 0; i < n; i++)
        if (!p->slots[i].conn && (p->slots[i].conn = conn_open(p)))
            p->slots[i].conn->slot = i;
    return &p->slots[client % n];
}

/* A pooled connection counts as idle, or active while replies are owed. */
static void busy_count(tn_upstream_server *s, int dir)
{
    uint64_t *from = dir > 0 ? &s->stats.idle : &s->stats.active;
    uint64_t *to = dir > 0 ? &s->stats.active : &s->stats.idle;
    if (*from)
        (*from)--;
    (*to)++;
}

/* Out of the pool and closed; what was on it is the caller's. */
static void conn_close(lp_conn *c)
{
    lp_pool *p = c->pool;
    uint64_t *count = c->inflight ? &p->s->stats.active : &p->s->stats.idle;
    if (*count)
        (*count)--;
    if (p->slots[c->slot].conn == c)
        p->slots[c->slot].conn = NULL;
    bufferevent_free(c->bev);
    free(c);
}

static void conn_send(lp_conn *c, lp_req *r, const char *line, size_t len)
{
    tn_upstream_server *s = c->pool->s;
    struct evbuffer *out = bufferevent_get_output(c->bev);
    evbuffer_add(out, line, len);
    evbuffer_add(out, "\n", 1);
    s->stats.bytes_sent += len + 1;
    r->state = REQ_QUEUED;
    r->server = s;
    r->try_us = tn_now_us();
    r->next = NULL;
    if (c->tail)
        c->tail->next = r;
    else
        c->head = r;
    c->tail = r;
    if (c->inflight++ == 0)
        busy_count(s, +1);
    tn_upstream_try_begin(s, c->used);
    c->used = true;
    conn_timers(c, false);
}

static void wait_push(lp_slot *w, lp_req *r)
{
    r->state = REQ_WAITING;
    r->next = NULL;
    if (w->wait_tail)
        w->wait_tail->next = r;
    else
        w->wait_head = r;
    w->wait_tail = r;
    w->nwait++;
}

/* Every request waiting on W, which the caller takes. */
static lp_req *wait_take(lp_slot *w)
{
    lp_req *r = w->wait_head;
    w->wait_head = w->wait_tail = NULL;
    w->nwait = 0;
    return r;
}

/* Requests that waited for room go out on C while it has some. */
static void slot_refill(lp_slot *w, lp_conn *c)
{
    while (c->inflight < INFLIGHT_MAX && w->wait_head) {
        lp_req *r = w->wait_head;
        w->wait_head = r->next;
        if (!w->wait_head)
            w->wait_tail = NULL;
        w->nwait--;
        if (!r->job)
            req_free(r); /* its client left before it went out */
        else
            conn_send(c, r, r->job->payload, r->job->len);
    }
}

/* Places R, for LINE from REMOTE, on a server: "" on success, else why
 * not. A request that waits for room has its job by then: LINE is copied
 * only when it goes out. */
static const char *place(tn_line_proxy *lp, lp_req *r, const char *line, size_t len, const struct sockaddr *remote,
                         uint64_t client)
{
    char kbuf[16];
    size_t klen = 0;
    const char *key = req_key(lp->g, line, len, remote, kbuf, sizeof(kbuf), &klen);
    int retry_after = 0;
    tn_upstream_server *s = tn_upstream_pick(lp->g, key, klen, r->tried, r->ntried, &retry_after);
    if (!s)
        return "no upstream server available";
    lp_pool *p = pool_of(lp, s);
    if (!p)
        return "out of memory";
    r->server = s;
    lp_slot *w = pool_slot(p, client);
    lp_conn *c = w->conn;
    if (!c)
        return "cannot open an upstream connection";
    if (c->inflight < INFLIGHT_MAX && !w->wait_head) {
        conn_send(c, r, line, len);
        return "";
    }
    if (w->nwait >= WAIT_MAX)
        return "upstream busy";
    wait_push(w, r);
    return "";
}

static void retry_now(tn_line_proxy *lp, lp_req *r)
{
    const char *why = place(lp, r, r->job->payload, r->job->len, r->job->ctx.remote, r->job->ctx.conn_id);
    if (*why)
        req_finish(r, TN_FAIL, why, strlen(why));
}

static void backoff_done(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    lp_req *r = arg;
    event_free(r->timer);
    r->timer = NULL;
    retry_now(r->lp, r);
}

/* R never reached its server: another try, after a backoff, while retries
 * and the retry budget last; else the client gets WHY. */
static void retry_or_fail(lp_req *r, const char *why)
{
    if (!r->job) {
        req_free(r);
        return;
    }
    tn_line_proxy *lp = r->lp;
    if (r->ntried < TRIED_MAX)
        r->tried[r->ntried++] = r->server;
    else
        r->tried[TRIED_MAX - 1] = r->server;
    const tn_handler_conf *hc = &lp->h->conf;
    int64_t budget_end = r->job->started_us + hc->retry_budget * 1000;
    if (r->retried >= hc->retries || tn_now_us() >= budget_end) {
        req_finish(r, TN_FAIL, why, strlen(why));
        return;
    }
    r->retried++;
    int64_t ms = tn_upstream_backoff_ms(r->retried, hc->retry_backoff, hc->retry_backoff_max);
    if (ms <= 0) {
        retry_now(lp, r);
        return;
    }
    struct timeval tv;
    tv_ms(&tv, ms);
    r->state = REQ_BACKOFF;
    r->timer = evtimer_new(lp->h->base, backoff_done, r);
    if (!r->timer || evtimer_add(r->timer, &tv) < 0) {
        retry_now(lp, r);
        return;
    }
}

/* The connection is over: what went out on it fails (or, when it never
 * connected, is retried elsewhere). */
static void conn_fail(lp_conn *c, int reason, const char *why)
{
    lp_pool *p = c->pool;
    tn_upstream_server *s = p->s;
    lp_req *list = c->head;
    bool sent = c->connected;
    /* nothing is left to carry what waits on the slot: it goes on too */
    lp_req *waiting = wait_take(&p->slots[c->slot]);
    conn_close(c);
    while (list) {
        lp_req *r = list;
        list = r->next;
        if (r->lp)
            tn_upstream_try_fail(r->lp->g, s, reason);
        if (sent)
            req_finish(r, TN_FAIL, why, strlen(why));
        else
            retry_or_fail(r, why);
    }
    while (waiting) {
        lp_req *r = waiting;
        waiting = r->next;
        retry_or_fail(r, why);
    }
}

static void conn_read_cb(struct bufferevent *bev, void *arg)
{
    lp_conn *c = arg;
    lp_pool *p = c->pool;
    tn_upstream_server *s = p->s;
    struct evbuffer *in = bufferevent_get_input(bev);
    size_t len = evbuffer_get_length(in);
    const char *data = (const char *)evbuffer_pullup(in, -1);
    const char *why = NULL;
    size_t used = 0;
    tn_daemon *d = p->d;
    tn_upstream_server_ref(s); /* replies may drop the last handler, group and server */
    s->stats.bytes_received += len;
    /* the replies of a client's pipelined lines are adjacent in the stream:
     * each client gets its run of them in one write */
    d->reply_batch = true;
    while (used < len) {
        const char *line = data + used;
        const char *nl = memchr(line, '\n', len - used);
        size_t n = nl ? (size_t)(nl - line) : len - used;
        if ((int64_t)n > p->set.max_reply) {
            why = "upstream reply too long";
            break;
        }
        if (!nl)
            break;
        lp_req *r = c->head;
        if (!r) {
            why = "upstream sent a line nobody asked for";
            break;
        }
        c->head = r->next;
        if (!c->head)
            c->tail = NULL;
        if (--c->inflight == 0)
            busy_count(s, -1);
        used += n + 1;
        if (r->lp)
            tn_upstream_try_ok(r->lp->g, s, tn_now_us() - r->try_us);
        req_finish(r, TN_REPLY, line, n);
    }
    d->reply_batch = false;
    if (d->wbuf_owner)
        tn_conn_flush(d->wbuf_owner);
    evbuffer_drain(in, used);
    if (why) {
        tn_debug("line proxy: upstream %s: %s", s->name, why);
        conn_fail(c, TN_UPF_BAD_RESPONSE, why);
    } else {
        slot_refill(&p->slots[c->slot], c);
        conn_timers(c, false);
    }
    tn_upstream_server_unref(s);
}

static void conn_event_cb(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    lp_conn *c = arg;
    if (what & BEV_EVENT_CONNECTED) {
        c->connected = true;
        nodelay(c->bev);
        conn_timers(c, true);
        return;
    }
    tn_upstream_server *s = c->pool->s;
    int reason = TN_UPF_RESET;
    const char *why = "upstream connection lost";
    if (!c->connected) {
        reason = what & BEV_EVENT_TIMEOUT ? TN_UPF_CONNECT_TIMEOUT : TN_UPF_CONNECT;
        why = what & BEV_EVENT_TIMEOUT ? "upstream connect timeout" : "upstream connect failed";
    } else if (what & BEV_EVENT_TIMEOUT) {
        reason = what & BEV_EVENT_WRITING ? TN_UPF_SEND_TIMEOUT : TN_UPF_TIMEOUT;
        why = "upstream timeout";
    } else if (!c->inflight && (what & BEV_EVENT_EOF)) {
        reason = -1; /* the server closed an idle connection: not a failure */
    }
    tn_upstream_server_ref(s);
    if (reason >= 0)
        tn_debug("line proxy: upstream %s: %s", s->name, why);
    if (reason < 0)
        conn_close(c);
    else {
        conn_fail(c, reason, why);
    }
    tn_upstream_server_unref(s);
}

/* The server is being freed: no job is left on it (jobs hold their
 * handler, which holds the server), only placeholders and idle connections. */
static void pool_release(tn_upstream_server *s, void *data)
{
    (void)s;
    lp_pool *p = data;
    for (size_t i = 0; i < p->n; i++) {
        lp_req *r = wait_take(&p->slots[i]);
        while (r) {
            lp_req *next = r->next;
            req_finish(r, TN_FAIL, "upstream gone", 13);
            r = next;
        }
        lp_conn *c = p->slots[i].conn;
        if (!c)
            continue;
        while (c->head) {
            lp_req *r = c->head;
            c->head = r->next;
            req_finish(r, TN_FAIL, "upstream gone", 13);
        }
        bufferevent_free(c->bev);
        free(c);
    }
    free(p->slots);
    free(p);
}

/* ---- the handler side ------------------------------------------------------ */

static int line_init(tn_proxy *p, char *err, size_t errlen)
{
    tn_line_proxy *lp = calloc(1, sizeof(*lp));
    if (!lp) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    const tn_handler_conf *hc = &p->h->conf;
    lp->h = p->h;
    lp->g = p->group;
    lp->set.connect_timeout = hc->connect_timeout;
    lp->set.timeout = hc->timeout;
    lp->set.send_timeout = hc->send_timeout;
    lp->set.max_reply = hc->max_output;
    lp->set.pool_size = (size_t)hc->pool_size;
    p->side_state[TN_UPSIDE_LINE] = lp;
    return 0;
}

static void line_destroy(tn_proxy *p)
{
    free(p->side_state[TN_UPSIDE_LINE]);
    p->side_state[TN_UPSIDE_LINE] = NULL;
}

static tn_result line_handle(tn_proxy *p, tn_call *call)
{
    tn_line_proxy *lp = p->side_state[TN_UPSIDE_LINE];
    if (call->ctx.protocol != TN_PROTO_TCP) {
        evbuffer_add_printf(call->out, "the line proxy serves TCP line listeners");
        return TN_FAIL;
    }
    lp_req *r = calloc(1, sizeof(*r));
    if (!r) {
        evbuffer_add_printf(call->out, "out of memory");
        return TN_FAIL;
    }
    const char *why = place(lp, r, call->payload, call->len, call->ctx.remote, call->ctx.conn_id);
    if (*why) {
        free(r);
        evbuffer_add_printf(call->out, "%s", why);
        return TN_FAIL;
    }
    tn_job *job = tn_job_begin(call);
    if (!job) {
        /* R is on its way without a job: its reply will be dropped */
        evbuffer_add_printf(call->out, "out of memory");
        return TN_FAIL;
    }
    r->job = job;
    r->lp = lp;
    job->hstate = r;
    job->cancel = req_cancelled;
    return TN_LATER;
}

const tn_proxy_side tn_line_proxy_side = {
    .name = "line",
    .init = line_init,
    .handle = line_handle,
    .destroy = line_destroy,
};

/* ---- mode connection ---------------------------------------------------------- */

typedef struct lp_splice {
    tn_line_proxy *lp;
    tn_conn *c;
    tn_upstream_server *s; /* referenced */
    tn_upstream_server *tried[TRIED_MAX];
    size_t ntried;
    int retried;
    struct bufferevent *up;
    struct event *idle;
    int64_t last_ms;
    bool connected;
    bool client_done; /* the client ended its side */
    bool up_done;     /* the server ended its side */
    bool up_paused;   /* the client reads slowly: the server's bytes wait */
    bool shut_client; /* our writing to the client is shut down */
} lp_splice;

bool tn_line_proxy_splices(const tn_handler *h)
{
    return h->conf.type == TN_H_PROXY && h->conf.mode == TN_PROXY_CONNECTION;
}

static int64_t splice_now_ms(lp_splice *sp)
{
    struct timeval tv;
    event_base_gettimeofday_cached(sp->lp->h->base, &tv);
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

/* Both sides have ended and everything each sent has been passed on. */
static void splice_end_check(lp_splice *sp)
{
    tn_conn *c = sp->c;
    if (sp->client_done && sp->up_done && !tn_conn_unsent(c) && !evbuffer_get_length(bufferevent_get_output(sp->up)))
        tn_conn_close(c, NULL);
}

/* The server ended its side: once its last bytes are out, so does ours. */
static void splice_shut_client(lp_splice *sp)
{
    tn_conn *c = sp->c;
    if (sp->shut_client || tn_conn_unsent(c))
        return;
    sp->shut_client = true;
    if (!c->tp->plain)
        tn_conn_close_after_flush(c, NULL); /* no half-close over TLS here */
    else if (!sp->client_done)
        shutdown(c->fd, SHUT_WR);
    if (!c->base.dead)
        splice_end_check(sp);
}

static void splice_up_read(struct bufferevent *bev, void *arg)
{
    lp_splice *sp = arg;
    tn_conn *c = sp->c;
    struct evbuffer *in = bufferevent_get_input(bev);
    size_t n = evbuffer_get_length(in);
    sp->s->stats.bytes_received += n;
    sp->last_ms = splice_now_ms(sp);
    evbuffer_add_buffer(tn_conn_output(c), in);
    tn_conn_flush(c);
    if (c->base.dead)
        return;
    if (tn_conn_unsent(c) > SPLICE_HIGH) {
        bufferevent_disable(bev, EV_READ);
        sp->up_paused = true;
    }
}

/* The server took what waited: the client may send again; a client that
 * has ended its side has the end passed on now. */
static void splice_up_write(struct bufferevent *bev, void *arg)
{
    lp_splice *sp = arg;
    if (!sp->client_done) {
        tn_conn_resume_input(sp->c);
    } else if (!evbuffer_get_length(bufferevent_get_output(bev))) {
        shutdown(bufferevent_getfd(bev), SHUT_WR);
        splice_end_check(sp);
    }
}

static void splice_connect(lp_splice *sp);

static void splice_up_event(struct bufferevent *bev, short what, void *arg)
{
    lp_splice *sp = arg;
    tn_conn *c = sp->c;
    if (what & BEV_EVENT_CONNECTED) {
        sp->connected = true;
        nodelay(bev);
        bufferevent_set_timeouts(bev, NULL, NULL);
        tn_upstream_try_ok(sp->lp->g, sp->s, 0);
        sp->s->stats.active++;
        if (sp->client_done && !evbuffer_get_length(bufferevent_get_output(bev)))
            shutdown(bufferevent_getfd(bev), SHUT_WR);
        return;
    }
    if (!sp->connected) {
        tn_upstream_try_fail(sp->lp->g, sp->s, what & BEV_EVENT_TIMEOUT ? TN_UPF_CONNECT_TIMEOUT : TN_UPF_CONNECT);
        if (sp->ntried < TRIED_MAX)
            sp->tried[sp->ntried++] = sp->s;
        if (sp->retried < sp->lp->h->conf.retries) {
            sp->retried++;
            splice_connect(sp); /* the client's early bytes move along */
            return;
        }
        tn_conn_close(c, "no upstream server reachable");
        return;
    }
    if (what & BEV_EVENT_EOF) {
        /* what the server sent before its end has been read already */
        sp->up_done = true;
        bufferevent_disable(bev, EV_READ);
        splice_shut_client(sp);
        return;
    }
    tn_conn_flush(c);
    if (!c->base.dead)
        tn_conn_close_after_flush(c, "upstream connection lost");
}

static void splice_connect(lp_splice *sp)
{
    tn_conn *c = sp->c;
    int retry_after = 0;
    char kbuf[16];
    size_t klen = 0;
    const char *key = req_key(sp->lp->g, "", 0, &c->base.remote.sa, kbuf, sizeof(kbuf), &klen);
    tn_upstream_server *s = tn_upstream_pick(sp->lp->g, key, klen, sp->tried, sp->ntried, &retry_after);
    struct bufferevent *old = sp->up;
    sp->up = NULL;
    if (s)
        sp->up = bufferevent_socket_new(sp->lp->h->base, -1, BEV_OPT_CLOSE_ON_FREE);
    if (sp->up && old)
        evbuffer_add_buffer(bufferevent_get_output(sp->up), bufferevent_get_output(old));
    if (old)
        bufferevent_free(old);
    if (!sp->up) {
        tn_conn_close(c, s ? "out of memory" : "no upstream server available");
        return;
    }
    tn_upstream_server_ref(s);
    if (sp->s)
        tn_upstream_server_unref(sp->s);
    sp->s = s;
    struct timeval ct;
    tv_ms(&ct, sp->lp->set.connect_timeout);
    bufferevent_setcb(sp->up, splice_up_read, splice_up_write, splice_up_event, sp);
    bufferevent_setwatermark(sp->up, EV_READ, 0, SPLICE_HIGH);
    bufferevent_setwatermark(sp->up, EV_WRITE, SPLICE_HIGH / 4, 0);
    bufferevent_set_timeouts(sp->up, NULL, &ct);
    bufferevent_enable(sp->up, EV_READ | EV_WRITE);
    tn_upstream_try_begin(s, false);
    s->stats.connects++;
    if (bufferevent_socket_connect(sp->up, (struct sockaddr *)&s->addr, (int)s->addrlen) < 0)
        splice_up_event(sp->up, BEV_EVENT_ERROR, sp);
}

static size_t splice_input(tn_conn *c, const char *data, size_t len)
{
    lp_splice *sp = c->fe_state;
    struct evbuffer *out = bufferevent_get_output(sp->up);
    evbuffer_add(out, data, len);
    sp->s->stats.bytes_sent += len;
    sp->last_ms = splice_now_ms(sp);
    if (evbuffer_get_length(out) > SPLICE_HIGH)
        tn_conn_pause_input(c);
    return len;
}

/* Until the server's side has ended, the client connection is held open
 * (the splice has its own idle timer); a shutdown waits only for bytes
 * still on their way through the proxy. */
static bool splice_busy(const tn_conn *c)
{
    const lp_splice *sp = c->fe_state;
    if (!sp || sp->up_done)
        return false;
    return !c->d->stopping || tn_conn_unsent(c) || evbuffer_get_length(bufferevent_get_output(sp->up));
}

static int splice_push(tn_conn *c, const char *data, size_t len)
{
    (void)c, (void)data, (void)len;
    return -1; /* a spliced connection carries only the server's bytes */
}

static int64_t splice_no_partial(const tn_conn *c)
{
    (void)c;
    return -1;
}

static void splice_drained(tn_conn *c)
{
    lp_splice *sp = c->fe_state;
    if (sp->up_paused && !sp->up_done) {
        sp->up_paused = false;
        bufferevent_enable(sp->up, EV_READ);
    }
    if (sp->up_done)
        splice_shut_client(sp);
}

static bool splice_finished(tn_conn *c)
{
    lp_splice *sp = c->fe_state;
    sp->client_done = true;
    if (sp->connected && !evbuffer_get_length(bufferevent_get_output(sp->up)))
        shutdown(bufferevent_getfd(sp->up), SHUT_WR);
    splice_end_check(sp);
    return true;
}

static void splice_release(tn_conn *c)
{
    lp_splice *sp = c->fe_state;
    if (!sp)
        return;
    c->fe_state = NULL;
    if (sp->up)
        bufferevent_free(sp->up);
    if (sp->idle)
        event_free(sp->idle);
    if (sp->s) {
        if (sp->connected && sp->s->stats.active)
            sp->s->stats.active--;
        tn_upstream_server_unref(sp->s);
    }
    tn_handler *h = sp->lp->h;
    free(sp);
    tn_handler_unref(h);
}

static const tn_frontend splice_frontend = {
    .name = "tcp",
    .input = splice_input,
    .busy = splice_busy,
    .push = splice_push,
    .release = splice_release,
    .partial_timeout = splice_no_partial,
    .drained = splice_drained,
    .finished = splice_finished,
};

static void splice_idle(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    lp_splice *sp = arg;
    int64_t limit = tn_listener_limits(sp->c->base.listener)->idle_timeout;
    int64_t left = sp->last_ms + limit - splice_now_ms(sp);
    if (left <= 0) {
        sp->c->base.listener->stats.timeout_errors++;
        tn_conn_close(sp->c, "idle timeout");
        return;
    }
    struct timeval tv;
    tv_ms(&tv, left);
    evtimer_add(sp->idle, &tv);
}

void tn_line_proxy_splice(tn_conn *c, tn_handler *h)
{
    tn_line_proxy *lp = ((tn_proxy *)h->state)->side_state[TN_UPSIDE_LINE];
    lp_splice *sp = calloc(1, sizeof(*sp));
    if (!sp) {
        tn_conn_close(c, "out of memory");
        return;
    }
    sp->lp = lp;
    sp->c = c;
    tn_handler_ref(lp->h);
    if (c->fe->release)
        c->fe->release(c);
    c->fe = &splice_frontend;
    c->fe_state = sp;
    sp->last_ms = splice_now_ms(sp);
    int64_t limit = tn_listener_limits(c->base.listener)->idle_timeout;
    if (limit > 0) {
        struct timeval tv;
        tv_ms(&tv, limit);
        sp->idle = evtimer_new(lp->h->base, splice_idle, sp);
        if (sp->idle)
            evtimer_add(sp->idle, &tv);
    }
    splice_connect(sp);
    if (!c->base.dead)
        tn_conn_update_timeouts(c);
}
