/* SPDX-License-Identifier: MIT */
/* ws.c - the WebSocket front end: libwebsockets driven from the libevent loop.
 *
 * Debian's libwebsockets 4.1.6 has neither libevent support nor external-poll
 * callbacks, so it is driven directly ("direct drive"):
 *
 *  - lws runs on its default poll backend but never polls: its pollfd table
 *    (pt->fds, allocated once at context creation) is found by interposing
 *    poll() during lws_service() calls, which this file makes itself;
 *  - each adopted socket gets one persistent level-triggered EV_READ event
 *    that calls lws_service_fd() with POLLIN, and one one-shot EV_WRITE event;
 *  - lws asks protocols[0] for LWS_CALLBACK_GET_THREAD_ID every time a
 *    socket's wanted events change (lib/core-net/pollfd.c). We answer a
 *    constant (so lws never cancels a poll that does not exist) and use the
 *    call as the hook: the wanted events are read from the table. POLLOUT
 *    newly wanted: if lws holds nothing partially written the socket is
 *    surely writable, so the write side is made active with event_active()
 *    (no syscall); otherwise a real EV_WRITE is armed;
 *  - once per loop pass with lws activity a "tick" runs lws_service() with
 *    poll() faked: lws services its ripe timers (sul), tells us its next
 *    deadline through the poll timeout (one libevent timer is set to it), and
 *    when lws_service_adjust_timeout() says work is pending (rx buffered,
 *    extension draining) the fake poll reports activity so lws runs its
 *    forced service;
 *  - the events are freed on LWS_CALLBACK_WSI_DESTROY;
 *  - lws reads a WebSocket's bytes with recv(), interposed too: they pass
 *    the frame check (wsframe.h) first, which holds clients to RFC 6455
 *    where lws does not and hands pings and closes to this file.
 *
 * This leans on 4.1.x internals; tn_ws_init() refuses other versions and the
 * integration tests cover the behaviour. */
#ifdef _FORTIFY_SOURCE
#undef _FORTIFY_SOURCE
#endif
#include "proto/ws.h"

#include <ctype.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <libwebsockets.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "handlers/handler.h"
#include "log.h"
#include "net/addr.h"
#include "net/linger.h"
#include "net/listener.h"
#include "proto/dispatch.h"
#include "proto/http.h"
#include "workers.h"
#include "proto/wsframe.h"

#define WS_TID 1 /* what GET_THREAD_ID answers */
#define RX_CHUNK 1024 /* per-connection lws rx buffer: 10,000 idle WebSockets at ~3.4 KiB each */
#define HEAD_MAX 8192 /* lws's header data per handshake (max_http_header_data) */

/* ---- records ------------------------------------------------------------------ */

typedef struct wsconn wsconn;

typedef struct wsmsg {
    struct wsmsg *next;
    wsconn *conn;     /* pending: whose reply this is */
    tn_job *job;      /* pending: outstanding handler call */
    bool ready;       /* pending: answered (or data to send) */
    bool send;        /* pending: something to send once at the head */
    bool binary;
    bool small;       /* inline_buf holds LWS_PRE + MSG_SMALL + 2: reusable */
    bool pong;        /* a pong (control frame), not a message */
    uint32_t after;   /* pong: goes out after the replies to this many messages */
    size_t len;
    unsigned char *buf; /* LWS_PRE + len: inline below, or malloc'd by job_complete */
    unsigned char inline_buf[];
} wsmsg;

/* What on_post does for a connection at the end of a loop pass: write the
 * replies reply() queued on its fast path (flush_conn), or service POLLOUT
 * that lws wants while nothing is partly sent (write_ready). */
enum { PASS_FLUSH, PASS_WRITABLE, PASS_LISTS };

struct wsconn {
    struct wsconn *prev, *next;
    tn_daemon *d;
    tn_listener *l;
    struct lws *wsi;
    evutil_socket_t fd;
    struct event *rev, *wev;
    int fdpos;          /* cached index into lws's pollfd table */
    bool want_in;       /* rev is added */
    bool want_out;      /* POLLOUT wanted, as last seen */
    bool in_receive;    /* inside lws's RECEIVE callback: a reply may take the fast path */
    bool on_pass[PASS_LISTS]; /* on g.pass[]: serviced at the end of the loop pass */
    struct wsconn *pass_next[PASS_LISTS];
    bool established;
    bool finished;      /* sessions detached, jobs cancelled */
    bool destroyed;     /* lws freed the wsi; memory freed from the post event */
    bool foreign;       /* an lws-internal fd (event pipe), not a WebSocket */
    tn_session session;
    tn_handler *handler; /* single-handler endpoint (referenced) */
    char **names;        /* multi-handler endpoint: the handler names */
    size_t nnames;
    char *path;
    char subprotocol[64];
    int64_t max_message, max_output;
    struct sockaddr_storage remote;
    socklen_t remote_len;
    char remote_str[64];
    char local_str[64];
    tn_tls_info *tls;    /* over a TLS relay: the session's (owned copy) */
    struct evbuffer *rx; /* fragments of the message being received */
    size_t rx_len;
    bool rx_binary;
    bool rx_open; /* a message is partly received */
    bool rx_dead; /* failed while receiving: lws's further messages are ignored */
    tn_utf8 rx_utf8; /* the text message so far */
    uint32_t msgs_done; /* messages received whole (the frame check counts them too) */
    tn_wsf wsf;         /* the frame check in front of lws */
    wsmsg *pong_head, *pong_tail; /* pongs owed, in order */
    wsmsg *out_head, *out_tail; /* ready to write */
    wsmsg *inflight;    /* written with permessage-deflate: lws may still read it */
    bool deflate;       /* permessage-deflate offered and allowed */
    size_t out_bytes;
    wsmsg *pend_head, *pend_tail; /* replies in request order */
    int close_code;
    bool close_now;
    bool close_sent;    /* our close frame went to lws */
    char close_reason[64];
    int64_t established_ms, last_ms;
    uint64_t bytes_in, bytes_out, msgs_in, msgs_out;
};

typedef struct wsvhost {
    struct wsvhost *next;
    int ping_s, hangup_s;
    struct lws_vhost *vh;
    struct lws_protocols *protocols;
    lws_retry_bo_t retry;
    char name[24]; /* lws keeps the pointer, not a copy */
} wsvhost;

/* The WebSocket layer's state. It is file-static rather than a member of the
 * daemon because the poll() interposer below, called by lws with no context
 * argument, must reach it; there is one lws context per process anyway. */
static struct {
    tn_daemon *d;
    struct lws_context *ctx;
    struct lws_pollfd *fds; /* lws's pollfd table */
    tn_pass_job post;       /* on_post, before the loop sleeps */
    struct event *timer_ev; /* lws's next deadline */
    int spins;
    uint64_t callbacks; /* lws callbacks so far: a forced tick made progress */
    wsconn *conns;
    size_t nconns;
    wsconn *dead;
    wsmsg *spare;     /* freed small messages, for the next replies */
    size_t nspare;
    wsconn *pass[PASS_LISTS]; /* connections on_post services once per pass */
    wsconn *adopting;
    wsvhost *vhosts;
    bool initializing;
    /* the poll() interposer */
    volatile int capture;
    int fake_n;
    int cap_timeout;
    struct lws_pollfd *cap_fds;
    unsigned cap_nfds;
    wsconn *foreign; /* lws's own fds */
    wsconn **byfd;   /* WebSockets by fd, for the recv() interposer */
    size_t nbyfd;
} g;

/* ---- poll() interposer -------------------------------------------------------- */

/* lws calls poll() only from lws_service(), which we call only to tick; any
 * other caller in the process gets the real thing (through ppoll, a different
 * symbol). */
int poll(struct pollfd *fds, nfds_t nfds, int timeout)
{
    if (g.capture) {
        g.cap_fds = fds;
        g.cap_nfds = (unsigned)nfds;
        g.cap_timeout = timeout;
        return g.fake_n;
    }
    struct timespec ts, *tp = NULL;
    if (timeout >= 0) {
        ts.tv_sec = timeout / 1000;
        ts.tv_nsec = (long)(timeout % 1000) * 1000000L;
        tp = &ts;
    }
    return ppoll(fds, nfds, tp, NULL);
}

/* ---- helpers ------------------------------------------------------------------- */

static int64_t wall_ms(void)
{
    struct timeval tv;
    if (g.d)
        event_base_gettimeofday_cached(g.d->base, &tv);
    else
        gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

static void count_in(wsconn *c, size_t len)
{
    c->bytes_in += len;
    c->msgs_in++;
    c->l->stats.total_bytes_received += len;
    c->l->stats.messages_in++;
    c->d->stats.total_bytes_received += len;
    c->d->stats.messages_in++;
    c->last_ms = wall_ms();
}

static void count_out(wsconn *c, size_t len)
{
    c->bytes_out += len;
    c->msgs_out++;
    c->l->stats.total_bytes_sent += len;
    c->l->stats.messages_out++;
    c->d->stats.total_bytes_sent += len;
    c->d->stats.messages_out++;
    c->last_ms = wall_ms();
}

static void reject(wsconn *c, int reason)
{
    c->l->stats.rejected[reason]++;
    c->d->stats.rejected[reason]++;
}

/* ---- driving lws -------------------------------------------------------------- */

static void schedule_post(void)
{
    if (g.post.run)
        tn_before_sleep_due(g.d, &g.post);
}

static void pass_add(wsconn *c, int list)
{
    if (c->on_pass[list])
        return;
    c->on_pass[list] = true;
    c->pass_next[list] = g.pass[list];
    g.pass[list] = c;
    schedule_post();
}

static void pass_remove(wsconn *c, int list)
{
    if (!c->on_pass[list])
        return;
    for (wsconn **pp = &g.pass[list]; *pp; pp = &(*pp)->pass_next[list])
        if (*pp == c) {
            *pp = c->pass_next[list];
            break;
        }
    c->on_pass[list] = false;
}

/* Runs FN for the connections on LIST; one listed again meanwhile waits
 * for the next pass. */
static void pass_run(int list, void (*fn)(wsconn *c))
{
    wsconn *todo = g.pass[list];
    g.pass[list] = NULL;
    while (todo) {
        wsconn *c = todo;
        todo = c->pass_next[list];
        c->on_pass[list] = false;
        if (!c->destroyed)
            fn(c);
    }
}

/* The wanted events of C's fd in lws's table; -1 if it is not there. Live
 * entries are contiguous from 0 (lws moves the last one into a freed slot
 * and marks the old last slot fd -1; never-used slots are zero), so the
 * search stops at the first slot past the end. */
static int wanted(wsconn *c)
{
    if (!g.fds)
        return -1;
    if (c->fdpos >= 0 && g.fds[c->fdpos].fd == c->fd)
        return g.fds[c->fdpos].events;
    for (int i = 0;; i++) {
        int fd = g.fds[i].fd;
        if (fd == c->fd) {
            c->fdpos = i;
            return g.fds[i].events;
        }
        if (fd == -1 || (fd == 0 && !g.fds[i].events))
            return -1;
    }
}

/* Makes the read and write events follow what lws wants for C. */
static void sync_events(wsconn *c)
{
    if (c->destroyed || !c->rev)
        return;
    int ev = wanted(c);
    if (ev < 0)
        return;
    bool in = ev & POLLIN, out = ev & POLLOUT;
    if (in != c->want_in) {
        if (in)
            event_add(c->rev, NULL);
        else
            event_del(c->rev);
        c->want_in = in;
    }
    if (out && !c->want_out) {
        if (c->wsi && !c->foreign && !lws_partial_buffered(c->wsi)) {
            /* writable unless proven otherwise: no syscall, no libevent
             * activation; on_post writes for every such connection once the
             * pass's reads are done */
            pass_add(c, PASS_WRITABLE);
        } else {
            event_add(c->wev, NULL);
        }
    } else if (!out && c->want_out) {
        if (!c->on_pass[PASS_WRITABLE])
            event_del(c->wev);
    }
    c->want_out = out;
}

static void service(wsconn *c, short revents)
{
    g.d->io_events++;
    struct lws_pollfd p = { .fd = c->fd, .events = (short)(POLLIN | POLLOUT), .revents = revents };
    lws_service_fd(g.ctx, &p);
    schedule_post();
}

static void on_read(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    service(arg, POLLIN);
}

static void write_ready(wsconn *c)
{
    int ev = wanted(c);
    if (ev < 0 || !(ev & POLLOUT)) {
        c->want_out = false;
        return;
    }
    c->want_out = false; /* the trigger is used up */
    service(c, POLLOUT);
    if (!c->destroyed)
        sync_events(c); /* still wanted (partial write): trigger again */
}

static void on_write(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    write_ready(arg);
}

static void flush_conn(wsconn *c);

static void tick(bool force)
{
    g.capture = 1;
    g.fake_n = force ? 1 : 0;
    g.cap_timeout = -1;
    lws_service(g.ctx, 0);
    g.capture = 0;
}

static void free_dead(void)
{
    while (g.dead) {
        wsconn *c = g.dead;
        g.dead = c->next;
        tn_listener *l = c->l;
        free(c);
        if (l->draining && l->stats.active_connections == 0)
            tn_listener_free(l);
    }
}

static void on_post(void *arg)
{
    (void)arg;
    if (!g.ctx)
        return;
    /* after all of the pass's reads: fast-path replies, then POLLOUT */
    pass_run(PASS_FLUSH, flush_conn);
    pass_run(PASS_WRITABLE, write_ready);
    bool force = lws_service_adjust_timeout(g.ctx, 1, 0) == 0;
    uint64_t before = g.callbacks;
    tick(force);
    int ms = g.cap_timeout;
    if (lws_service_adjust_timeout(g.ctx, 1, 0) == 0) {
        /* still pending (e.g. an inflated message drained chunk by chunk):
         * come back next pass, or after a breath if lws makes no progress */
        if (g.callbacks != before)
            g.spins = 0;
        if (++g.spins < 16) {
            schedule_post();
            ms = -1;
        } else {
            ms = 1;
        }
    } else {
        g.spins = 0;
    }
    if (ms >= 0) {
        if (ms > 3600 * 1000)
            ms = 3600 * 1000;
        struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };
        event_add(g.timer_ev, &tv);
    }
    bool had_dead = g.dead != NULL;
    free_dead();
    if (had_dead && g.d && g.d->stopping)
        tn_daemon_check_stopped(g.d);
}

/* lws's next deadline: its timers are serviced at the end of the pass */
static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    schedule_post();
}

/* ---- output --------------------------------------------------------------------- */

/* Replies up to MSG_SMALL bytes are recycled through g.spare: a pass reads
 * up to one message per connection before it writes any reply, and glibc's
 * per-thread cache (7 chunks a size) missed for most of them, which cost
 * more than the rest of our per-message work. */
enum { MSG_SMALL = 240, MSG_SPARES = 256 };

static wsmsg *msg_new(const void *data, size_t len, bool binary)
{
    wsmsg *m;
    bool small = len <= MSG_SMALL;
    if (small && g.spare) {
        m = g.spare;
        g.spare = m->next;
        g.nspare--;
    } else if (!(m = malloc(sizeof(*m) + LWS_PRE + (small ? MSG_SMALL : len) + 2))) {
        return NULL;
    }
    memset(m, 0, sizeof(*m));
    m->small = small;
    m->buf = m->inline_buf;
    if (len)
        memcpy(m->buf + LWS_PRE, data, len);
    m->len = len;
    m->binary = binary;
    m->ready = true;
    return m;
}

static void msg_free(wsmsg *m)
{
    if (m->buf != m->inline_buf)
        free(m->buf);
    if (m->small && m->buf == m->inline_buf && g.ctx && g.nspare < MSG_SPARES) {
        m->next = g.spare;
        g.spare = m;
        g.nspare++;
        return;
    }
    free(m);
}

static void want_write(wsconn *c)
{
    if (c->wsi && !c->destroyed)
        lws_callback_on_writable(c->wsi);
}

static void close_with(wsconn *c, int code, const char *reason, bool now)
{
    if (c->destroyed || !c->wsi)
        return;
    if (!c->close_code || now) {
        c->close_code = code;
        snprintf(c->close_reason, sizeof(c->close_reason), "%s", reason ? reason : "");
    }
    c->close_now |= now;
    if (c->established)
        want_write(c);
    else
        lws_set_timeout(c->wsi, PENDING_TIMEOUT_CLOSE_SEND, LWS_TO_KILL_ASYNC);
}

static void msg_append(wsmsg **head, wsmsg **tail, wsmsg *m)
{
    m->next = NULL;
    if (*tail)
        (*tail)->next = m;
    else
        *head = m;
    *tail = m;
}

static void queue_out(wsconn *c, wsmsg *m)
{
    msg_append(&c->out_head, &c->out_tail, m);
    c->out_bytes += m->len;
}

static void out_append(wsconn *c, wsmsg *m)
{
    queue_out(c, m);
    want_write(c);
}

static int write_type(const wsmsg *m)
{
    return m->pong ? LWS_WRITE_PONG : m->binary ? LWS_WRITE_BINARY : LWS_WRITE_TEXT;
}

static void pong_release(wsconn *c, bool all);

/* The fast path for replies: a sync reply to a message, with nothing queued
 * or partly sent before it, is written with lws_write() at the end of the
 * loop pass (on_post), not on a POLLOUT round trip through lws (a pollfd
 * change, a libevent activation and a second service call per message).
 * Writing after all of the pass's reads, as lws's own loop does on its next
 * poll, also hands the client its replies together. lws 4.1.6 takes writes
 * outside its writeable callback; a partial send stays with lws
 * (lws_partial_buffered()) and the rest goes the POLLOUT way, as do
 * permessage-deflate connections, whose output may outlive the call.
 *
 * The pass's pongs are released here too, and what the frame check found
 * (the peer's close, a violation) closes the connection after the replies
 * and pongs its earlier frames were owed. */
static void flush_conn(wsconn *c)
{
    /* lws may still hold messages that came before what the frame check
     * found (it handles the bytes that came with the upgrade request in a
     * later pass): then the pongs for later pings and the close wait */
    bool behind = !c->rx_dead && (int32_t)(c->msgs_done - c->wsf.msgs) < 0 &&
                  lws_service_adjust_timeout(g.ctx, 1, 0) == 0;
    pong_release(c, !behind);
    while (c->out_head && !c->destroyed && !c->close_code && !c->deflate && (c->out_head->len || c->out_head->pong) &&
           !lws_partial_buffered(c->wsi)) {
        wsmsg *m = c->out_head;
        c->out_head = m->next;
        if (!c->out_head)
            c->out_tail = NULL;
        c->out_bytes -= m->len;
        size_t len = m->len;
        bool pong = m->pong;
        int n = lws_write(c->wsi, m->buf + LWS_PRE, len, write_type(m));
        msg_free(m);
        if (n < 0) {
            c->l->stats.connection_errors++;
            c->d->stats.connection_errors++;
            lws_set_timeout(c->wsi, PENDING_TIMEOUT_CLOSE_SEND, LWS_TO_KILL_ASYNC);
            return;
        }
        if (!pong)
            count_out(c, len);
    }
    if (behind && (c->pong_head || c->wsf.code)) {
        pass_add(c, PASS_FLUSH); /* the next pass, after lws's */
    } else if (c->wsf.code && !c->destroyed) {
        /* the peer's close is echoed after what is queued; a violation
         * closes at once */
        close_with(c, c->wsf.code, c->wsf.closed ? "" : c->wsf.why, !c->wsf.closed);
    }
    if (!c->destroyed && (c->out_head || c->close_code))
        want_write(c);
}

/* Over the output cap: the peer is a slow reader. */
static bool over_cap(wsconn *c, size_t len)
{
    return (int64_t)(c->out_bytes + len) > c->max_output;
}

/* M goes out: on the fast path (see flush_conn()) when FAST and nothing
 * stands in its way, otherwise through lws's POLLOUT. */
static void output(wsconn *c, wsmsg *m, bool fast)
{
    if (over_cap(c, m->len)) {
        msg_free(m);
        reject(c, TN_REJ_SLOW_READER);
        close_with(c, LWS_CLOSE_STATUS_POLICY_VIOLATION, "slow reader", true);
        return;
    }
    if (fast && (!c->out_head || c->on_pass[PASS_FLUSH]) && !c->deflate && !c->close_code && (m->len || m->pong) &&
        !lws_partial_buffered(c->wsi)) {
        queue_out(c, m);
        pass_add(c, PASS_FLUSH);
        return;
    }
    out_append(c, m);
}

/* Pongs go out in the order of the peer's frames: each after the replies to
 * the messages before its ping (as soon as lws has handed those over), never
 * behind a reply to a later message or an outstanding asynchronous one. ALL:
 * every pong owed (the end of the loop pass). */
static void pong_release(wsconn *c, bool all)
{
    while (c->pong_head && (all || (int32_t)(c->pong_head->after - c->msgs_done) <= 0)) {
        wsmsg *m = c->pong_head;
        c->pong_head = m->next;
        if (!c->pong_head)
            c->pong_tail = NULL;
        if (c->close_code || c->destroyed)
            msg_free(m); /* our close frame is the last one */
        else
            output(c, m, true);
    }
}

static void pongs_drop(wsconn *c)
{
    while (c->pong_head) {
        wsmsg *m = c->pong_head;
        c->pong_head = m->next;
        msg_free(m);
    }
    c->pong_tail = NULL;
}

/* Moves answered replies at the head of the pending queue to the output. */
static void pend_flush(wsconn *c)
{
    while (c->pend_head && c->pend_head->ready) {
        wsmsg *m = c->pend_head;
        c->pend_head = m->next;
        if (!c->pend_head)
            c->pend_tail = NULL;
        if (!m->send) {
            msg_free(m);
            continue;
        }
        if (over_cap(c, m->len)) {
            msg_free(m);
            reject(c, TN_REJ_SLOW_READER);
            close_with(c, LWS_CLOSE_STATUS_POLICY_VIOLATION, "slow reader", true);
            continue;
        }
        out_append(c, m);
    }
}

/* A slot for an asynchronous reply; job_complete gives it its buffer. */
static wsmsg *pend_add(wsconn *c)
{
    wsmsg *m = calloc(1, sizeof(*m));
    if (m)
        msg_append(&c->pend_head, &c->pend_tail, m);
    return m;
}

/* A reply (or an error text) to a message that was text (or binary). */
static void reply(wsconn *c, tn_result res, const char *data, size_t len, bool req_binary, bool utf8_known)
{
    if (res == TN_SILENT)
        return;
    const char *prefix = res == TN_FAIL ? TN_ERROR_PREFIX : "";
    size_t plen = strlen(prefix);
    wsmsg *m;
    if (plen) {
        m = msg_new(NULL, plen + len, false);
        if (m) {
            memcpy(m->buf + LWS_PRE, prefix, plen);
            if (len)
                memcpy(m->buf + LWS_PRE + plen, data, len);
        }
    } else {
        m = msg_new(data, len, req_binary);
    }
    if (!m) {
        close_with(c, LWS_CLOSE_STATUS_UNEXPECTED_CONDITION, "out of memory", true);
        return;
    }
    m->send = true;
    /* text stays text only while it is UTF-8 (a program's output may not be) */
    if (!m->binary && !utf8_known && !tn_utf8_valid(m->buf + LWS_PRE, m->len))
        m->binary = true;
    if (!c->pend_head) {
        output(c, m, c->in_receive);
        return;
    }
    /* behind an outstanding asynchronous reply */
    msg_append(&c->pend_head, &c->pend_tail, m);
}

static void job_complete(tn_job *job, tn_result res, const char *data, size_t len)
{
    wsmsg *slot = job->fe;
    wsconn *c = slot->conn;
    bool req_binary = slot->binary;
    slot->job = NULL;
    slot->ready = true;
    if (res == TN_REPLY || res == TN_FAIL) {
        const char *prefix = res == TN_FAIL ? TN_ERROR_PREFIX : "";
        size_t plen = strlen(prefix);
        /* like the line front end: one reply is one message, a program's
         * trailing newline is not part of it */
        if (len && data[len - 1] == '\n')
            len--;
        if (len && data[len - 1] == '\r')
            len--;
        slot->buf = malloc(LWS_PRE + plen + len + 2);
        if (slot->buf) {
            memcpy(slot->buf + LWS_PRE, prefix, plen);
            if (len)
                memcpy(slot->buf + LWS_PRE + plen, data, len);
            slot->len = plen + len;
            slot->send = true;
            slot->binary = req_binary || !tn_utf8_valid(slot->buf + LWS_PRE, slot->len);
        }
    }
    pend_flush(c);
}

/* ---- the frame check ---------------------------------------------------------------- */

/* lws reads a WebSocket's bytes with recv() and nothing else, and only from
 * calls this file makes; the bytes pass through tn_wsf_run() (wsframe.h)
 * on their way in. Other callers and sockets get the real thing (through
 * recvfrom, a different symbol). */

static void on_ping(void *arg, const uint8_t *payload, size_t len, uint32_t msgs)
{
    wsconn *c = arg;
    wsmsg *m = msg_new(payload, len, true);
    if (!m)
        return; /* out of memory: the peer's keepalive will tell */
    m->pong = true;
    m->after = msgs;
    msg_append(&c->pong_head, &c->pong_tail, m);
    pass_add(c, PASS_FLUSH);
}

/* Runs the frame check over LEN bytes at BUF; what lws may see is left. */
static size_t check_frames(wsconn *c, unsigned char *buf, size_t len)
{
    bool ok = !c->wsf.code;
    size_t n = tn_wsf_run(&c->wsf, buf, len, on_ping, c);
    if (ok && c->wsf.code) {
        if (c->wsf.code == LWS_CLOSE_STATUS_MESSAGE_TOO_LARGE && !c->wsf.closed)
            reject(c, TN_REJ_TOO_LARGE);
        pass_add(c, PASS_FLUSH); /* flush_conn() closes */
    }
    return n;
}

static ssize_t rx_read(wsconn *c, unsigned char *buf, size_t len)
{
    ssize_t n;
    if (c->wsf.code) {
        /* after the peer's close or a violation: input is dropped */
        n = recvfrom(c->fd, buf, len, 0, NULL, NULL);
        if (n > 0) {
            errno = EAGAIN;
            return -1;
        }
        return n;
    }
    /* a header cut by the end of the last read is read again */
    size_t held = c->wsf.nhold;
    if (len <= held) {
        errno = EAGAIN;
        return -1;
    }
    if (held)
        memcpy(buf, c->wsf.hold, held);
    n = recvfrom(c->fd, buf + held, len - held, 0, NULL, NULL);
    if (n <= 0)
        return n;
    c->wsf.nhold = 0;
    size_t left = check_frames(c, buf, held + (size_t)n);
    if (!left) {
        /* nothing for lws (a ping, a partial header): 0 would mean EOF */
        errno = EAGAIN;
        return -1;
    }
    return (ssize_t)left;
}

ssize_t recv(int fd, void *buf, size_t len, int flags)
{
    wsconn *c = fd >= 0 && (size_t)fd < g.nbyfd ? g.byfd[fd] : NULL;
    if (!c || flags || c->destroyed)
        return recvfrom(fd, buf, len, flags, NULL, NULL);
    return rx_read(c, buf, len);
}

/* ---- messages -------------------------------------------------------------------- */

/* A multi-handler endpoint's handlers, by the names it lists. */
static tn_handler *endpoint_lookup(const void *arg, const char *name, size_t len)
{
    const wsconn *c = arg;
    for (size_t i = 0; i < c->nnames; i++)
        if (strlen(c->names[i]) == len && memcmp(c->names[i], name, len) == 0)
            return tn_registry_find(c->d->registry, c->names[i]);
    return NULL;
}

static void handle_message(wsconn *c, const char *msg, size_t len, bool binary)
{
    tn_daemon *d = c->d;
    count_in(c, len);
    tn_call call = { .take_ref = true };
    /* an unknown name is echoed up to 80 bytes, the message is one frame */
    tn_dispatch sel = { .single = c->handler, .lookup = endpoint_lookup, .arg = c, .echo_max = 80 };
    struct evbuffer *out = d->scratch;
    if (evbuffer_get_length(out))
        evbuffer_drain(out, evbuffer_get_length(out));
    tn_verdict v = tn_dispatch_message(&sel, NULL, NULL, &call, msg, len, out);
    if (v != TN_DISPATCH_CALL) {
        size_t n = evbuffer_get_length(out);
        reply(c, tn_dispatch_result(v), (const char *)evbuffer_pullup(out, -1), n, false, false);
        evbuffer_drain(out, n);
        return;
    }
    call.ctx = (tn_msg_ctx){
        .listener = c->l->name,
        .conn_id = c->session.id,
        .protocol = TN_PROTO_WS,
        .remote = (const struct sockaddr *)&c->remote,
        .remote_len = c->remote_len,
        .remote_addr = c->remote_str,
        .session = &c->session,
        .tls = c->tls,
    };
    call.out = out;
    tn_result res = tn_handler_call(&call);
    if (res == TN_LATER) {
        wsmsg *slot = call.job ? pend_add(c) : NULL;
        if (!slot) {
            if (call.job)
                tn_job_cancel(call.job);
            evbuffer_drain(out, evbuffer_get_length(out));
            reply(c, TN_FAIL, "out of memory", 13, false, true);
            return;
        }
        slot->job = call.job;
        slot->binary = binary;
        slot->conn = c;
        call.job->fe = slot;
        call.job->complete = job_complete;
        return;
    }
    if (call.reply) {
        /* the payload itself (the message, or what follows "name ") is
         * already known to be UTF-8 when the message was text */
        bool own = call.reply == call.payload && call.reply_len == call.len;
        reply(c, res, call.reply, call.reply_len, binary, own);
        return;
    }
    size_t n = evbuffer_get_length(out);
    const char *data = n ? (const char *)evbuffer_pullup(out, -1) : "";
    reply(c, res, data, n, binary, false);
    evbuffer_drain(out, n);
}

/* Failing the connection from here (1007, 1009): lws's further messages
 * are ignored, the frame check drops further input, and flush_conn() closes
 * after the replies owed, from the writeable callback (close_with), which
 * lingers on the socket; returning -1 here would make lws close at once,
 * with the peer's data unread. This failure comes before anything the frame
 * check found further on in the stream. */
static int fail_rx(wsconn *c, int code, const char *why)
{
    c->rx_dead = true;
    c->wsf.code = code;
    c->wsf.why = why;
    c->wsf.closed = false;
    /* the pongs owed for pings before this piece are out (see the
     * RECEIVE callback): those still waiting came after it */
    pongs_drop(c);
    if (c->rx) {
        evbuffer_free(c->rx);
        c->rx = NULL;
    }
    c->rx_len = 0;
    c->rx_open = false;
    pass_add(c, PASS_FLUSH);
    return 0;
}

static int on_receive(wsconn *c, const char *in, size_t len)
{
    struct lws *wsi = c->wsi;
    /* a message starts after the previous one's final piece: with
     * permessage-deflate 4.1.6 reports every inflated chunk drained from the
     * extension as a first fragment, so lws_is_first_fragment() is not used */
    bool first = !c->rx_open;
    bool final = lws_is_final_fragment(wsi);
    c->rx_open = !final;
    if (first) {
        c->rx_binary = lws_frame_is_binary(wsi);
        c->rx_len = 0;
        memset(&c->rx_utf8, 0, sizeof(c->rx_utf8));
        if (c->rx)
            evbuffer_drain(c->rx, evbuffer_get_length(c->rx));
    }
    if (final)
        c->msgs_done++;
    if ((int64_t)(c->rx_len + len) > c->max_message) {
        /* only inflated messages get here: the frame check refuses the
         * others at the header */
        reject(c, TN_REJ_TOO_LARGE);
        return fail_rx(c, LWS_CLOSE_STATUS_MESSAGE_TOO_LARGE, "message too large");
    }
    /* Text that is not UTF-8 fails the connection with 1007 (RFC 6455 8.1)
     * at the fragment that shows it; a character split across fragments
     * is whole at the next one. Checked here rather than by lws
     * (LWS_SERVER_OPTION_VALIDATE_UTF8), whose byte-at-a-time check cost
     * more than anything else per 64-byte message. */
    if (!c->rx_binary &&
        (!tn_utf8_step(&c->rx_utf8, (const unsigned char *)in, len) || (final && c->rx_utf8.need)))
        return fail_rx(c, LWS_CLOSE_STATUS_INVALID_PAYLOAD, "invalid UTF-8");
    if (final && c->rx_len == 0) {
        /* the common case: no copy */
        handle_message(c, in, len, c->rx_binary);
        return 0;
    }
    if (!c->rx && !(c->rx = evbuffer_new()))
        return -1;
    evbuffer_add(c->rx, in, len);
    c->rx_len += len;
    if (final) {
        size_t n = evbuffer_get_length(c->rx);
        const char *msg = (const char *)evbuffer_pullup(c->rx, -1);
        handle_message(c, msg ? msg : "", n, c->rx_binary);
        /* an idle WebSocket keeps no buffer */
        evbuffer_free(c->rx);
        c->rx = NULL;
        c->rx_len = 0;
    }
    return 0;
}

static int on_writeable(wsconn *c)
{
    /* the extension has drained (lws calls back only after that): the last
     * message's buffer is no longer referenced */
    if (c->inflight) {
        msg_free(c->inflight);
        c->inflight = NULL;
    }
    if (c->close_code && (c->close_now || !c->out_head)) {
        lws_close_reason(c->wsi, (enum lws_close_status)c->close_code, (unsigned char *)c->close_reason,
                         strlen(c->close_reason));
        c->close_sent = true;
        /* lws now sends the close frame and closes the socket without
         * waiting for the peer's: a duplicate keeps it open and drained,
         * so a peer still sending gets our close frame, not a reset */
        evutil_socket_t keep = dup(c->fd);
        if (keep >= 0)
            tn_linger_start(c->d, keep);
        return -1;
    }
    wsmsg *m = c->out_head;
    if (!m)
        return 0;
    c->out_head = m->next;
    if (!c->out_head)
        c->out_tail = NULL;
    c->out_bytes -= m->len;
    int n;
    if (m->pong) {
        n = lws_write(c->wsi, m->buf + LWS_PRE, m->len, LWS_WRITE_PONG) < 0 ? -1 : 0;
    } else if (m->len == 0) {
        /* 4.1.6's permessage-deflate asserts on an empty message (the sync
         * flush yields under 4 bytes to trim): send the frame as is, raw and
         * uncompressed (RSV1 clear), which RFC 7692 allows */
        unsigned char *f = m->buf + LWS_PRE;
        f[0] = (unsigned char)(0x80 | (m->binary ? 0x2 : 0x1));
        f[1] = 0;
        n = lws_write(c->wsi, f, 2, LWS_WRITE_HTTP) < 0 ? -1 : 0;
    } else {
        n = lws_write(c->wsi, m->buf + LWS_PRE, m->len, m->binary ? LWS_WRITE_BINARY : LWS_WRITE_TEXT);
    }
    size_t len = m->len;
    bool pong = m->pong;
    if (c->deflate && len && !pong) {
        /* 4.1.6's permessage-deflate keeps deflating from the caller's
         * buffer on later POLLOUTs when the output did not fit in one go */
        c->inflight = m;
        if (len > 512)
            lws_callback_on_writable(c->wsi); /* to release it soon */
    } else {
        msg_free(m);
    }
    if (n < 0) {
        c->l->stats.connection_errors++;
        c->d->stats.connection_errors++;
        return -1;
    }
    if (!pong)
        count_out(c, len);
    if (c->out_head || c->close_code)
        lws_callback_on_writable(c->wsi);
    return 0;
}

/* ---- sessions -------------------------------------------------------------------- */

static wsconn *session_conn(tn_session *s)
{
    return (wsconn *)((char *)s - offsetof(wsconn, session));
}

static int session_push(tn_session *s, const char *data, size_t len)
{
    wsconn *c = session_conn(s);
    if (c->destroyed || c->finished || c->close_code)
        return 0;
    if (over_cap(c, len)) {
        reject(c, TN_REJ_SLOW_READER);
        return -1;
    }
    wsmsg *m = msg_new(data, len, !tn_utf8_valid((const unsigned char *)data, len));
    if (!m)
        return -1;
    out_append(c, m);
    return 0;
}

static void session_close(tn_session *s, const char *reason)
{
    wsconn *c = session_conn(s);
    bool slow = reason && strstr(reason, "slow");
    close_with(c, slow ? LWS_CLOSE_STATUS_POLICY_VIOLATION : LWS_CLOSE_STATUS_NORMAL, reason, slow);
}

static const tn_session_ops ws_session_ops = { session_push, session_close };

/* ---- lifetime ---------------------------------------------------------------------- */

/* The connection is over: handlers let go, outstanding jobs are dropped. */
static void finish(wsconn *c)
{
    if (c->finished)
        return;
    c->finished = true;
    while (c->pend_head) {
        wsmsg *m = c->pend_head;
        c->pend_head = m->next;
        if (m->job) {
            tn_job *j = m->job;
            m->job = NULL;
            tn_job_cancel(j);
        }
        msg_free(m);
    }
    c->pend_tail = NULL;
    while (c->out_head) {
        wsmsg *m = c->out_head;
        c->out_head = m->next;
        msg_free(m);
    }
    c->out_tail = NULL;
    c->out_bytes = 0;
    pongs_drop(c);
    tn_session_detach_all(&c->session);
    if (c->rx) {
        evbuffer_free(c->rx);
        c->rx = NULL;
    }
}

/* One info line per WebSocket that opened: who closed it, with what code
 * (the peer's as the frame check read it; 1006 when the connection ended
 * without a close frame), how long it lived and what went through it. */
static void log_close(const wsconn *c)
{
    bool peer = c->wsf.code && c->wsf.closed;
    int code = peer ? c->wsf.code : c->close_sent ? c->close_code : 1006;
    const char *by = peer ? "by the peer" : c->close_sent ? "by the server" : "without a close frame";
    int64_t ms = wall_ms() - c->established_ms;
    tn_info("websocket %llu closed: %s %s from %s, code %d %s%s%s%s, %lld.%03lld s, %llu message(s) in, %llu out",
            (unsigned long long)c->session.id, c->l->name, c->path ? c->path : "", c->remote_str, code, by,
            !peer && c->close_sent && *c->close_reason ? " (" : "", !peer && c->close_sent ? c->close_reason : "",
            !peer && c->close_sent && *c->close_reason ? ")" : "", (long long)(ms / 1000), (long long)(ms % 1000),
            (unsigned long long)c->msgs_in, (unsigned long long)c->msgs_out);
}

static void conn_destroy(wsconn *c)
{
    if (c->destroyed)
        return;
    if (c->established && !c->foreign)
        log_close(c);
    finish(c);
    c->destroyed = true;
    c->wsi = NULL;
    pass_remove(c, PASS_FLUSH);
    pass_remove(c, PASS_WRITABLE);
    if (c->inflight) {
        msg_free(c->inflight);
        c->inflight = NULL;
    }
    if (c->rev)
        event_free(c->rev);
    if (c->wev)
        event_free(c->wev);
    c->rev = c->wev = NULL;
    if (c->handler)
        tn_handler_unref(c->handler);
    c->handler = NULL;
    for (size_t i = 0; i < c->nnames; i++)
        free(c->names[i]);
    free(c->names);
    c->names = NULL;
    c->nnames = 0;
    free(c->path);
    c->path = NULL;
    if (c->tls) {
        free(c->tls->subject);
        free(c->tls);
        c->tls = NULL;
    }
    if (!c->foreign) {
        if (c->fd >= 0 && (size_t)c->fd < g.nbyfd && g.byfd[c->fd] == c)
            g.byfd[c->fd] = NULL;
        if (c->prev)
            c->prev->next = c->next;
        else
            g.conns = c->next;
        if (c->next)
            c->next->prev = c->prev;
        g.nconns--;
        tn_daemon *d = c->d;
        d->active--;
        tn_workers_publish(d);
        d->stats.active_connections--;
        c->l->stats.active_connections--;
        tn_debug("websocket %llu closed", (unsigned long long)c->session.id);
    }
    c->next = g.dead;
    g.dead = c;
    schedule_post();
}

static wsconn *conn_of(struct lws *wsi)
{
    if (!wsi)
        return NULL;
    wsconn *c = lws_get_opaque_user_data(wsi);
    if (!c && g.adopting && !g.adopting->wsi && lws_get_socket_fd(wsi) == g.adopting->fd) {
        c = g.adopting;
        c->wsi = wsi;
        lws_set_opaque_user_data(wsi, c);
    }
    return c;
}

static int callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len)
{
    (void)user;
    g.callbacks++;
    if (reason == LWS_CALLBACK_GET_THREAD_ID) {
        wsconn *c = lws_get_opaque_user_data(wsi);
        if (!c)
            c = conn_of(wsi);
        if (c && !c->destroyed)
            sync_events(c);
        return WS_TID;
    }
    wsconn *c = conn_of(wsi);
    switch (reason) {
    case LWS_CALLBACK_ESTABLISHED:
        if (!c)
            return -1;
        c->established = true;
        c->established_ms = c->last_ms = wall_ms();
        tn_http_count_response(c->l, NULL, NULL, 101);
        tn_info("websocket %llu opened: %s %s from %s%s%s", (unsigned long long)c->session.id, c->l->name, c->path,
                c->remote_str, *c->subprotocol ? ", subprotocol " : "", c->subprotocol);
        /* a single handler that keeps per-connection state (stream process,
         * broadcast room) joins at connect */
        if (c->handler && c->handler->ops->attach && !tn_session_state(&c->session, c->handler)) {
            tn_warn("listener %s: handler %s could not start for websocket %llu", c->l->name, c->handler->name,
                    (unsigned long long)c->session.id);
            static const char why[] = "handler failed to start";
            lws_close_reason(wsi, LWS_CLOSE_STATUS_UNEXPECTED_CONDITION, (unsigned char *)why, sizeof(why) - 1);
            c->close_code = LWS_CLOSE_STATUS_UNEXPECTED_CONDITION;
            snprintf(c->close_reason, sizeof(c->close_reason), "%s", why);
            c->close_sent = true;
            return -1;
        }
        if (c->close_code) /* closed (shutdown) during the handshake */
            lws_callback_on_writable(wsi);
        return 0;
    case LWS_CALLBACK_RECEIVE:
        if (!c || c->finished)
            return -1;
        if (c->rx_dead || (c->close_code && c->close_now))
            return 0;
        {
            /* pongs for pings before this piece, then for those right
             * after the message it completes */
            if (c->pong_head)
                pong_release(c, false);
            c->in_receive = true;
            int r = on_receive(c, in, len);
            c->in_receive = false;
            if (c->pong_head)
                pong_release(c, false);
            if (c->wsf.code)
                pass_add(c, PASS_FLUSH); /* a close waiting for this message */
            return r;
        }
    case LWS_CALLBACK_SERVER_WRITEABLE:
        if (!c || c->finished)
            return -1;
        return on_writeable(c);
    case LWS_CALLBACK_CLOSED:
        if (c)
            finish(c);
        return 0;
    case LWS_CALLBACK_WSI_DESTROY:
        if (c) {
            lws_set_opaque_user_data(wsi, NULL);
            conn_destroy(c);
        }
        return 0;
    case LWS_CALLBACK_ADD_HEADERS:
        if (c && c->subprotocol[0]) {
            struct lws_process_html_args *args = in;
            int n = snprintf(args->p, (size_t)(args->max_len > 0 ? args->max_len : 0),
                             "Sec-WebSocket-Protocol: %s\r\n", c->subprotocol);
            if (n < 0 || n >= args->max_len)
                return -1;
            args->p += n;
        }
        return 0;
    case LWS_CALLBACK_HTTP:
        /* the HTTP layer only hands over upgrades: anything else is refused */
        return -1;
    default:
        break;
    }
    return lws_callback_http_dummy(wsi, reason, user, in, len);
}

/* ---- logging -------------------------------------------------------------------- */

static void log_emit(int level, const char *line)
{
    size_t n = strlen(line);
    while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        n--;
    if (g.initializing && level == LLL_ERR)
        tn_warn("libwebsockets: %.*s", (int)n, line);
    else
        tn_debug("libwebsockets: %.*s", (int)n, line);
}

void tn_ws_set_log_level(int level)
{
    /* lws logs errors during normal adoption: they are debug lines here */
    int lws = level >= TN_LOG_DEBUG ? (LLL_ERR | LLL_WARN | LLL_NOTICE) : g.initializing ? LLL_ERR : 0;
    lws_set_log_level(lws, log_emit);
}

/* ---- vhosts ------------------------------------------------------------------------- */

static const struct lws_extension extensions[] = {
    { "permessage-deflate", lws_extension_callback_pm_deflate,
      "permessage-deflate; client_no_context_takeover; client_max_window_bits" },
    { NULL, NULL, NULL },
};

static const struct lws_protocols proto0 = {
    .name = "tusknet",
    .callback = callback,
    .per_session_data_size = 0,
    .rx_buffer_size = RX_CHUNK,
};

static int secs_up(int64_t ms)
{
    if (ms <= 0)
        return 0;
    int64_t s = (ms + 999) / 1000;
    return s > 65535 ? 65535 : (int)s;
}

/* The vhost for an endpoint: one per keepalive policy (lws 4.1.6 sets the
 * ping/hangup policy per vhost). */
static struct lws_vhost *vhost_for(const tn_ws_conf *ep)
{
    int ping = secs_up(ep->ping_interval);
    int hangup = ping ? ping + (secs_up(ep->pong_timeout) ? secs_up(ep->pong_timeout) : 1) : 0;
    for (wsvhost *v = g.vhosts; v; v = v->next)
        if (v->ping_s == ping && v->hangup_s == hangup)
            return v->vh;
    wsvhost *v = calloc(1, sizeof(*v));
    if (!v)
        return NULL;
    v->ping_s = ping;
    v->hangup_s = hangup;
    v->protocols = calloc(2, sizeof(*v->protocols));
    if (!v->protocols) {
        free(v);
        return NULL;
    }
    v->protocols[0] = proto0;
    v->retry.secs_since_valid_ping = (uint16_t)ping;
    v->retry.secs_since_valid_hangup = (uint16_t)hangup;
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof(info));
    snprintf(v->name, sizeof(v->name), "tn-ping%d-hangup%d", ping, hangup);
    info.vhost_name = v->name;
    info.port = CONTEXT_PORT_NO_LISTEN_SERVER;
    info.protocols = v->protocols;
    info.options = 0;
    info.extensions = extensions; /* offered per endpoint: see rewrite_head() */
    if (ping)
        info.retry_and_idle_policy = &v->retry;
    info.gid = (gid_t)-1;
    info.uid = (uid_t)-1;
    v->vh = lws_create_vhost(g.ctx, &info);
    if (!v->vh) {
        free(v->protocols);
        free(v);
        return NULL;
    }
    v->next = g.vhosts;
    g.vhosts = v;
    return v->vh;
}

/* ---- init ---------------------------------------------------------------------------- */

static void watch_foreign(void)
{
    /* fds lws opened for itself (its event pipe) are serviced like ours */
    for (unsigned i = 0; i < g.cap_nfds; i++) {
        wsconn *c = calloc(1, sizeof(*c));
        if (!c)
            return;
        c->foreign = true;
        c->d = g.d;
        c->fd = g.fds[i].fd;
        c->fdpos = (int)i;
        c->rev = event_new(g.d->base, c->fd, EV_READ | EV_PERSIST, on_read, c);
        c->wev = event_new(g.d->base, c->fd, EV_WRITE, on_write, c);
        if (c->rev && event_add(c->rev, NULL) == 0)
            c->want_in = true;
        tn_debug("libwebsockets internal fd %d watched", c->fd);
        c->next = g.foreign;
        g.foreign = c;
    }
}

int tn_ws_init(tn_daemon *d, char *err, size_t errlen)
{
    if (g.ctx)
        return 0;
    const char *ver = lws_get_library_version();
    if (strncmp(ver, "4.1.", 4) != 0) {
        snprintf(err, errlen, "libwebsockets %s is not supported: the WebSocket front end needs 4.1.x", ver);
        return -1;
    }
    memset(&g, 0, sizeof(g));
    g.d = d;
    g.initializing = true;
    tn_ws_set_log_level(tn_log_get_level());
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof(info));
    info.port = CONTEXT_PORT_NO_LISTEN_SERVER;
    info.options = LWS_SERVER_OPTION_EXPLICIT_VHOSTS;
    info.gid = (gid_t)-1;
    info.uid = (uid_t)-1;
    info.count_threads = 1;
    info.max_http_header_data = HEAD_MAX;
    info.max_http_header_pool = 256;
    info.timeout_secs = 20;
    g.ctx = lws_create_context(&info);
    if (!g.ctx) {
        snprintf(err, errlen, "cannot create the libwebsockets context");
        g.initializing = false;
        return -1;
    }
    tn_ws_conf dflt;
    memset(&dflt, 0, sizeof(dflt));
    dflt.ping_interval = 30000;
    dflt.pong_timeout = 10000;
    if (!vhost_for(&dflt)) {
        snprintf(err, errlen, "cannot create the libwebsockets vhost");
        lws_context_destroy(g.ctx);
        g.ctx = NULL;
        g.initializing = false;
        return -1;
    }
    g.post.run = on_post;
    tn_before_sleep_add(d, &g.post);
    g.timer_ev = evtimer_new(d->base, on_timer, NULL);
    /* one service call with poll() interposed: sets lws's service thread id
     * (our constant) and shows us the pollfd table */
    tick(false);
    g.fds = g.cap_fds;
    g.initializing = false;
    tn_ws_set_log_level(tn_log_get_level());
    /* `log-level` and reloads change lws's level with ours */
    tn_log_on_level_change(tn_ws_set_log_level);
    if (!g.fds || !g.timer_ev) {
        snprintf(err, errlen, "cannot drive libwebsockets %s from the event loop (poll table not found)", ver);
        tn_ws_free(d);
        return -1;
    }
    watch_foreign();
    tn_debug("libwebsockets %s driven directly (%u internal fd(s))", ver, g.cap_nfds);
    return 0;
}

/* ---- upgrade ---------------------------------------------------------------------- */

/* "https://host:port" -> "host:port" */
static const char *origin_host(const char *origin)
{
    const char *p = strstr(origin, "://");
    return p ? p + 3 : origin;
}

static bool origin_allowed(const tn_ws_conf *ep, const char *origin, const char *host)
{
    if (!ep->origins.n || !origin)
        return true; /* no list, or not a browser */
    for (size_t i = 0; i < ep->origins.n; i++) {
        const char *o = ep->origins.v[i];
        if (strcmp(o, "*") == 0)
            return true;
        if (strcasecmp(o, "same") == 0) {
            if (host && strcasecmp(origin_host(origin), host) == 0)
                return true;
            continue;
        }
        size_t ol = strlen(o);
        while (ol && o[ol - 1] == '/')
            ol--;
        size_t gl = strlen(origin);
        while (gl && origin[gl - 1] == '/')
            gl--;
        if (ol == gl && strncasecmp(o, origin, ol) == 0)
            return true;
        if (!strstr(o, "://") && strcasecmp(origin_host(origin), o) == 0)
            return true;
    }
    return false;
}

/* RFC 6455 4.1: a nonce of 16 bytes in base64, so 22 characters (the last
 * of which carries 2 bits of the nonce and 4 zero bits) and "==". */
static bool key_valid(const char *key)
{
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    if (strlen(key) != 24 || strcmp(key + 22, "==") != 0)
        return false;
    for (size_t i = 0; i < 22; i++) {
        const char *p = key[i] ? strchr(b64, key[i]) : NULL;
        if (!p || (i == 21 && (p - b64) % 16))
            return false;
    }
    return true;
}

/* Whether lws can hold the head (HEAD_MAX of header data, which holds
 * less than the head's own bytes): lws drops a handshake it cannot hold
 * without a word, so the HTTP layer answers 431 instead. */
static bool head_fits(const struct tn_http_request *r)
{
    size_t n = strlen(r->method) + strlen(r->target) + 12;
    for (size_t i = 0; i < r->nheaders; i++)
        n += strlen(r->headers[i].name) + strlen(r->headers[i].value) + 4;
    return n < HEAD_MAX;
}

int tn_ws_check(const tn_ws_conf *ep, const struct tn_http_request *r)
{
    const char *up = tn_http_header_get(r, "Upgrade");
    const char *conn = tn_http_header_get(r, "Connection");
    if (strcmp(r->method, "GET") != 0 || !up || !tn_http_list_has(up, "websocket", false) || !conn || !tn_http_list_has(conn, "upgrade", false))
        return 426;
    const char *key = tn_http_header_get(r, "Sec-WebSocket-Key");
    const char *ver = tn_http_header_get(r, "Sec-WebSocket-Version");
    if (!head_fits(r))
        return 431;
    if (!key || !key_valid(key) || !ver || strcmp(ver, "13") != 0 || r->http_major != 1 || r->http_minor < 1)
        return 400;
    if (!origin_allowed(ep, tn_http_header_get(r, "Origin"), tn_http_header_get(r, "Host")))
        return 403;
    return 0;
}

/* Copies the request head, leaving out permessage-deflate when the endpoint
 * has it off, and the subprotocol offer: the first offered name the endpoint
 * speaks is put in CHOSEN and answered from LWS_CALLBACK_ADD_HEADERS (lws
 * 4.1.6 tokenizes names at '.', so "chat.v1" could never match in lws). */
static size_t rewrite_head(const tn_ws_conf *ep, const char *head, size_t len, char *out, size_t cap, char *chosen,
                           size_t chosen_len, size_t *head_len)
{
    const char *end = NULL;
    for (size_t i = 0; i + 1 < len; i++) {
        if (head[i] == '\n' && head[i + 1] == '\n') {
            end = head + i + 2;
            break;
        }
        if (head[i] == '\n' && i + 2 < len && head[i + 1] == '\r' && head[i + 2] == '\n') {
            end = head + i + 3;
            break;
        }
    }
    if (!end)
        end = head + len;
    size_t o = 0;
    const char *p = head;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl + 1 : end;
        size_t ll = (size_t)(le - p);
        bool skip = false;
        if (!ep->deflate && ll > 25 && strncasecmp(p, "Sec-WebSocket-Extensions:", 25) == 0)
            skip = true;
        if (ll > 23 && strncasecmp(p, "Sec-WebSocket-Protocol:", 23) == 0) {
            skip = true;
            /* keep the first offered name the endpoint speaks */
            char val[512];
            size_t vl = ll - 23 < sizeof(val) - 1 ? ll - 23 : sizeof(val) - 1;
            memcpy(val, p + 23, vl);
            val[vl] = '\0';
            for (char *s = val, *tok; (tok = strtok_r(s, ", \t\r\n", &s));)
                for (size_t i = 0; i < ep->subprotocols.n; i++)
                    if (strcmp(tok, ep->subprotocols.v[i]) == 0 && !*chosen) {
                        snprintf(chosen, chosen_len, "%s", tok);
                        goto chosen;
                    }
        chosen:;
        }
        if (!skip && o + ll < cap) {
            memcpy(out + o, p, ll);
            o += ll;
        }
        p = le;
    }
    /* whatever followed the head is WebSocket data: unchanged */
    *head_len = o;
    size_t rest = (size_t)(head + len - end);
    if (o + rest <= cap) {
        memcpy(out + o, end, rest);
        o += rest;
    }
    return o;
}

/* Lists C in g.byfd, where the recv() interposer finds it. */
static bool watch_fd(wsconn *c)
{
    size_t fd = (size_t)c->fd;
    if (fd >= g.nbyfd) {
        size_t n = g.nbyfd ? g.nbyfd : 64;
        while (n <= fd)
            n *= 2;
        wsconn **v = realloc(g.byfd, n * sizeof(*v));
        if (!v)
            return false;
        memset(v + g.nbyfd, 0, (n - g.nbyfd) * sizeof(*v));
        g.byfd = v;
        g.nbyfd = n;
    }
    g.byfd[fd] = c;
    return true;
}

int tn_ws_upgrade(tn_daemon *d, tn_listener *l, const tn_ws_conf *ep, evutil_socket_t fd, const tn_ws_origin *from,
                  const char *head, size_t len)
{
    const struct sockaddr *remote = from->remote;
    socklen_t remote_len = from->remote_len;
    if (!g.ctx) {
        evutil_closesocket(fd);
        return -1;
    }
    struct lws_vhost *vh = vhost_for(ep);
    wsconn *c = calloc(1, sizeof(*c));
    size_t cap = len + 256;
    char *buf = malloc(cap);
    if (!vh || !c || !buf)
        goto fail;
    c->d = d;
    c->l = l;
    c->fd = fd;
    c->fdpos = -1;
    c->session.ops = &ws_session_ops;
    c->session.id = ++d->next_conn_id;
    c->session.listener = l->name;
    c->session.protocol = TN_PROTO_WS;
    c->max_message = ep->limits.max_message;
    c->max_output = ep->limits.max_output;
    c->wsf.max_message = (uint64_t)c->max_message;
    c->path = strdup(ep->path);
    if (remote && remote_len <= sizeof(c->remote)) {
        memcpy(&c->remote, remote, remote_len);
        c->remote_len = remote_len;
        tn_addr_format(remote, c->remote_str, sizeof(c->remote_str));
    }
    struct sockaddr_storage la;
    socklen_t ll = sizeof(la);
    if (from->local)
        snprintf(c->local_str, sizeof(c->local_str), "%s", from->local);
    else if (getsockname(fd, (struct sockaddr *)&la, &ll) == 0)
        tn_addr_format((struct sockaddr *)&la, c->local_str, sizeof(c->local_str));
    if (from->tls) {
        if (!(c->tls = malloc(sizeof(*c->tls))))
            goto fail;
        *c->tls = *from->tls;
        c->tls->subject = from->tls->subject ? strdup(from->tls->subject) : NULL;
    }
    if (ep->handler && *ep->handler) {
        c->handler = tn_registry_find(d->registry, ep->handler);
        if (!c->handler) {
            tn_warn("listener %s: websocket %s: handler %s is not running", l->name, ep->path, ep->handler);
            goto fail;
        }
        tn_handler_ref(c->handler);
    } else {
        c->names = calloc(ep->handlers.n + 1, sizeof(char *));
        if (!c->names)
            goto fail;
        for (size_t i = 0; i < ep->handlers.n; i++)
            if ((c->names[c->nnames] = strdup(ep->handlers.v[i])))
                c->nnames++;
    }
    c->rev = event_new(d->base, fd, EV_READ | EV_PERSIST, on_read, c);
    c->wev = event_new(d->base, fd, EV_WRITE, on_write, c);
    if (!c->rev || !c->wev || !c->path)
        goto fail;
    size_t head_len = 0;
    size_t n = rewrite_head(ep, head, len, buf, cap, c->subprotocol, sizeof(c->subprotocol), &head_len);
    buf[n < cap ? n : cap - 1] = '\0';
    c->deflate = ep->deflate && strcasestr(buf, "permessage-deflate");
    c->wsf.deflate = c->deflate;
    if (!watch_fd(c))
        goto fail;
    /* frames sent with the upgrade request are checked like the rest */
    if (n > head_len)
        n = head_len + check_frames(c, (unsigned char *)buf + head_len, n - head_len);
    /* counted from now; the HTTP connection that carried the upgrade stops
     * counting when it lets the socket go */
    c->next = g.conns;
    if (g.conns)
        g.conns->prev = c;
    g.conns = c;
    g.nconns++;
    d->active++;
    tn_workers_publish(d);
    d->stats.active_connections++;
    l->stats.active_connections++;
    c->established_ms = c->last_ms = wall_ms();
    c->want_in = event_add(c->rev, NULL) == 0;
    g.adopting = c;
    struct lws *wsi = lws_adopt_socket_vhost_readbuf(vh, fd, buf, n);
    g.adopting = NULL;
    free(buf);
    if (!wsi) {
        /* lws closed the socket */
        if (!c->destroyed)
            conn_destroy(c);
        return -1;
    }
    if (!c->wsi && !c->destroyed) {
        c->wsi = wsi;
        lws_set_opaque_user_data(wsi, c);
    }
    if (!c->destroyed)
        sync_events(c);
    schedule_post();
    return 0;
fail:
    if (c) {
        if (c->rev)
            event_free(c->rev);
        if (c->wev)
            event_free(c->wev);
        if (c->handler)
            tn_handler_unref(c->handler);
        for (size_t i = 0; i < c->nnames; i++)
            free(c->names[i]);
        free(c->names);
        free(c->path);
        if (c->tls)
            free(c->tls->subject);
        free(c->tls);
        free(c);
    }
    free(buf);
    evutil_closesocket(fd);
    return -1;
}

/* ---- control ------------------------------------------------------------------------- */

const char *tn_ws_library_version(void)
{
    return lws_get_library_version();
}

size_t tn_ws_count(const tn_daemon *d)
{
    (void)d;
    return g.nconns;
}

void tn_ws_shutdown(tn_daemon *d)
{
    (void)d;
    for (wsconn *c = g.conns; c; c = c->next)
        close_with(c, LWS_CLOSE_STATUS_GOINGAWAY, "server shutting down", false);
    schedule_post();
}

void tn_ws_each(tn_daemon *d, void (*fn)(void *arg, const tn_ws_info *info), void *arg)
{
    (void)d;
    for (wsconn *c = g.conns; c; c = c->next) {
        tn_ws_info info = {
            .id = c->session.id,
            .listener = c->l->name,
            .path = c->path ? c->path : "",
            .remote = c->remote_str,
            .local = c->local_str,
            .subprotocol = c->subprotocol,
            .established_ms = c->established_ms,
            .last_activity_ms = c->last_ms,
            .bytes_in = c->bytes_in,
            .bytes_out = c->bytes_out,
            .msgs_in = c->msgs_in,
            .msgs_out = c->msgs_out,
            .queued_bytes = c->out_bytes,
            .tls = c->tls,
        };
        fn(arg, &info);
    }
}

static wsconn *find(uint64_t id)
{
    for (wsconn *c = g.conns; c; c = c->next)
        if (c->session.id == id)
            return c;
    return NULL;
}

int tn_ws_close(tn_daemon *d, uint64_t id, int code)
{
    (void)d;
    wsconn *c = find(id);
    if (!c)
        return -1;
    if (code < 1000 || code > 4999 || code == 1005 || code == 1006 || code == 1015)
        code = LWS_CLOSE_STATUS_NORMAL;
    close_with(c, code, "closed by the operator", false);
    schedule_post();
    return 0;
}

int tn_ws_send(tn_daemon *d, uint64_t id, const char *data, size_t len)
{
    (void)d;
    wsconn *c = find(id);
    if (!c)
        return -2;
    if (c->close_code)
        return -1;
    int r = session_push(&c->session, data, len);
    schedule_post();
    return r;
}

void tn_ws_broadcast(tn_daemon *d, tn_handler *h, const char *data, size_t len, uint64_t *sent, uint64_t *dropped)
{
    (void)d;
    for (wsconn *c = g.conns; c; c = c->next) {
        bool attached = false;
        for (tn_attachment *a = c->session.attached; a && !attached; a = a->next)
            attached = a->handler == h;
        if (!attached || c->close_code)
            continue;
        if (session_push(&c->session, data, len) < 0)
            (*dropped)++;
        else
            (*sent)++;
    }
    schedule_post();
}

void tn_ws_free(tn_daemon *d)
{
    (void)d;
    tn_log_on_level_change(NULL);
    while (g.foreign) {
        wsconn *c = g.foreign;
        g.foreign = c->next;
        if (c->rev)
            event_free(c->rev);
        if (c->wev)
            event_free(c->wev);
        free(c);
    }
    if (g.ctx) {
        /* every wsi is destroyed (WSI_DESTROY frees our records' events) */
        lws_context_destroy(g.ctx);
        g.ctx = NULL;
    }
    while (g.conns)
        conn_destroy(g.conns); /* any lws did not report */
    free_dead();
    if (g.post.run)
        tn_before_sleep_remove(g.d, &g.post);
    g.post.run = NULL;
    if (g.timer_ev)
        event_free(g.timer_ev);
    g.timer_ev = NULL;
    while (g.spare) {
        wsmsg *m = g.spare;
        g.spare = m->next;
        free(m);
    }
    g.nspare = 0;
    while (g.vhosts) {
        wsvhost *v = g.vhosts;
        g.vhosts = v->next;
        free(v->protocols);
        free(v);
    }
    free(g.byfd);
    g.byfd = NULL;
    g.nbyfd = 0;
    g.fds = NULL;
}
