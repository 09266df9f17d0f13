/* SPDX-License-Identifier: MIT */
/* line_splice.c - the proxy handler's mode "connection" on TCP line
 * listeners (as nginx's stream module): the client connection is spliced to
 * one upstream connection at accept and bytes are relayed both ways. Either
 * side that has SPLICE_HIGH bytes unwritten on the other stops being read
 * until they drain; a side's end of stream is passed on as a shutdown of
 * writing (a TLS client is closed instead) and the splice ends when both
 * sides have ended, when either fails, or after the listener's idle_timeout
 * without a byte in either direction. A connect that fails is retried on
 * another server as a line request's is (line_proxy.c). */
#include "upstream/line_proxy.h"

#include <stdlib.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>

#include "log.h"
#include "net/conn.h"
#include "net/listener.h"

#define SPLICE_HIGH (256 * 1024)

typedef struct lp_splice {
    tn_line_proxy *lp;
    tn_conn *c;
    tn_upstream_server *s; /* referenced */
    tn_upstream_server *tried[TN_LINE_PROXY_TRIED_MAX];
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
        tn_line_proxy_nodelay(bev);
        bufferevent_set_timeouts(bev, NULL, NULL);
        tn_upstream_try_ok(sp->lp->g, sp->s, 0);
        sp->s->stats.active++;
        if (sp->client_done && !evbuffer_get_length(bufferevent_get_output(bev)))
            shutdown(bufferevent_getfd(bev), SHUT_WR);
        return;
    }
    if (!sp->connected) {
        tn_upstream_try_fail(sp->lp->g, sp->s, what & BEV_EVENT_TIMEOUT ? TN_UPF_CONNECT_TIMEOUT : TN_UPF_CONNECT);
        if (sp->ntried < TN_LINE_PROXY_TRIED_MAX)
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
    const char *key = tn_line_proxy_key(sp->lp->g, "", 0, &c->base.remote.sa, kbuf, sizeof(kbuf), &klen);
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
    tn_line_proxy_tv_ms(&ct, sp->lp->set.connect_timeout);
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
    return !tn_conn_daemon(c)->stopping || tn_conn_unsent(c) || evbuffer_get_length(bufferevent_get_output(sp->up));
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
    tn_line_proxy_tv_ms(&tv, left);
    evtimer_add(sp->idle, &tv);
}

bool tn_line_proxy_takeover(tn_proxy *p, tn_conn *c)
{
    if (p->h->conf.mode != TN_PROXY_CONNECTION)
        return false;
    tn_line_proxy *lp = p->side_state[TN_UPSIDE_LINE];
    lp_splice *sp = calloc(1, sizeof(*sp));
    if (!sp) {
        tn_conn_close(c, "out of memory");
        return true;
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
        tn_line_proxy_tv_ms(&tv, limit);
        sp->idle = evtimer_new(lp->h->base, splice_idle, sp);
        if (sp->idle)
            evtimer_add(sp->idle, &tv);
    }
    splice_connect(sp);
    if (!c->base.dead)
        tn_conn_update_timeouts(c);
    return true;
}
