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
 * mode "connection" splices each client to one server: line_splice.c.
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

#define INFLIGHT_MAX 1024 /* requests in flight on one upstream connection */
#define WAIT_MAX 4096     /* requests waiting for room on a server's connections */

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
    tn_upstream_server *tried[TN_LINE_PROXY_TRIED_MAX];
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
    tn_line_proxy_settings set; /* of the handler that used it last */
    lp_slot *slots;
    size_t n;
};

void tn_line_proxy_tv_ms(struct timeval *tv, int64_t ms)
{
    tv->tv_sec = (time_t)(ms / 1000);
    tv->tv_usec = (suseconds_t)(ms % 1000) * 1000;
}

void tn_line_proxy_nodelay(struct bufferevent *bev)
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
const char *tn_line_proxy_key(const tn_upstream_group *g, const char *line, size_t len, const struct sockaddr *remote,
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
    tn_line_proxy_tv_ms(&rt, c->pool->set.timeout);
    tn_line_proxy_tv_ms(&wt, c->pool->set.send_timeout);
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
    tn_line_proxy_tv_ms(&ct, p->set.connect_timeout);
    bufferevent_setcb(c->bev, conn_read_cb, NULL, conn_event_cb, c);
    bufferevent_set_timeouts(c->bev, NULL, &ct); /* a connect waits on writability */
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    /* a refused connect is reported through the event callback, later */
    if (bufferevent_socket_connect(c->bev, (struct sockaddr *)&p->s->addr, (int)p->s->addrlen) < 0) {
        bufferevent_free(c->bev);
        free(c);
        return NULL;
    }
    tn_line_proxy_nodelay(c->bev);
    p->s->stats.connects++;
    p->s->stats.idle++;
    return c;
}

static void pool_release(tn_upstream_server *s, void *data);
static void pool_close_idle(tn_upstream_server *s, void *data);

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
        s->pool[TN_UPSIDE_LINE].close_idle = pool_close_idle;
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
    const char *key = tn_line_proxy_key(lp->g, line, len, remote, kbuf, sizeof(kbuf), &klen);
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
    if (r->ntried < TN_LINE_PROXY_TRIED_MAX)
        r->tried[r->ntried++] = r->server;
    else
        r->tried[TN_LINE_PROXY_TRIED_MAX - 1] = r->server;
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
    tn_line_proxy_tv_ms(&tv, ms);
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
        if (!c->inflight && (s->admin != TN_UPA_ENABLED || s->removed))
            conn_close(c); /* drained, down or removed: its last reply is in */
        else
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
        tn_line_proxy_nodelay(c->bev);
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

/* Drain, down or a reload's removal: connections nothing is on or waits
 * for close now; busy ones close after their last reply (conn_read_cb). */
static void pool_close_idle(tn_upstream_server *s, void *data)
{
    (void)s;
    lp_pool *p = data;
    for (size_t i = 0; i < p->n; i++) {
        lp_conn *c = p->slots[i].conn;
        if (c && !c->inflight && !p->slots[i].wait_head)
            conn_close(c);
    }
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
    .takeover = tn_line_proxy_takeover,
};
const tn_proxy_side *const tn_proxy_line_side = &tn_line_proxy_side;
