/* SPDX-License-Identifier: MIT */
/* ws.c - the WebSocket front end: what a WebSocket endpoint does with the
 * upgraded connections libwebsockets serves (net/lwsdrv.c drives lws from
 * the loop).
 *
 *  - the upgrade: the endpoint's checks (key, version, Origin, what lws can
 *    hold), the request head rewritten for lws (the subprotocol chosen here,
 *    permessage-deflate left out where it is off), the socket adopted;
 *  - messages: the frame check (wsframe.h) reads every byte lws gets and
 *    holds clients to RFC 6455 where lws does not, answers pings and sees
 *    closes; whole messages (UTF-8 checked) go through the dispatch step
 *    (dispatch.h) to a handler;
 *  - replies in request order, asynchronous ones too; written on a fast
 *    path at the end of the loop pass when nothing stands in their way;
 *    output caps (a slow reader is closed with 1008) and message caps;
 *  - closing: what the peer's close or a violation calls for, after the
 *    replies owed; one log line per WebSocket.
 *
 * A WebSocket is a connection like the others (conn.h's base record): the
 * control socket lists, closes and pushes to it through its kind. */
#include "proto/ws.h"

#include <ctype.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <libwebsockets.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "handlers/handler.h"
#include "log.h"
#include "net/addr.h"
#include "net/conn.h"
#include "net/linger.h"
#include "net/listener.h"
#include "net/lwsdrv.h"
#include "proto/dispatch.h"
#include "proto/http.h"
#include "proto/wsframe.h"

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

struct wsconn {
    tn_conn_base base;  /* first: the record is freed through it */
    tn_lws_sock sock;   /* lws's side: the wsi and the socket's events */
    tn_daemon *d;
    bool in_receive;    /* inside lws's RECEIVE callback: a reply may take the fast path */
    bool established;
    bool finished;      /* sessions detached, jobs cancelled */
    tn_handler *handler; /* single-handler endpoint (referenced) */
    char **names;        /* multi-handler endpoint: the handler names */
    size_t nnames;
    char *path;
    char subprotocol[64];
    int64_t max_message, max_output;
    char local[64];      /* "ip:port": over a TLS relay, the TLS connection's */
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
};

/* The front end's state: freed small messages, for the next replies. */
struct tn_ws {
    wsmsg *spare;
    size_t nspare;
};

static const tn_conn_kind ws_kind;

static wsconn *conn_of_sock(tn_lws_sock *s)
{
    return (wsconn *)((char *)s - offsetof(wsconn, sock));
}

/* ---- helpers ------------------------------------------------------------------- */

static int64_t wall_ms(tn_daemon *d)
{
    struct timeval tv;
    event_base_gettimeofday_cached(d->base, &tv);
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

static socklen_t remote_len(const wsconn *c)
{
    return c->base.remote.sa.sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
}

static void count_in(wsconn *c, size_t len)
{
    c->base.bytes_in += len;
    c->base.msgs_in++;
    c->base.listener->stats.total_bytes_received += len;
    c->base.listener->stats.messages_in++;
    c->d->stats.total_bytes_received += len;
    c->d->stats.messages_in++;
    c->base.last_activity_ms = wall_ms(c->d);
}

static void count_out(wsconn *c, size_t len)
{
    c->base.bytes_out += len;
    c->base.msgs_out++;
    c->base.listener->stats.total_bytes_sent += len;
    c->base.listener->stats.messages_out++;
    c->d->stats.total_bytes_sent += len;
    c->d->stats.messages_out++;
    c->base.last_activity_ms = wall_ms(c->d);
}

static void reject(wsconn *c, int reason)
{
    c->base.listener->stats.rejected[reason]++;
    c->d->stats.rejected[reason]++;
}

/* ---- output --------------------------------------------------------------------- */

/* Replies up to MSG_SMALL bytes are recycled through the state's spare list: a pass reads
 * up to one message per connection before it writes any reply, and glibc's
 * per-thread cache (7 chunks a size) missed for most of them, which cost
 * more than the rest of our per-message work. */
enum { MSG_SMALL = 240, MSG_SPARES = 256 };

static wsmsg *msg_new(wsconn *c, const void *data, size_t len, bool binary)
{
    tn_ws *w = c->d->ws;
    wsmsg *m;
    bool small = len <= MSG_SMALL;
    if (small && w->spare) {
        m = w->spare;
        w->spare = m->next;
        w->nspare--;
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

static void msg_free(wsconn *c, wsmsg *m)
{
    tn_ws *w = c->d->ws;
    if (m->buf != m->inline_buf)
        free(m->buf);
    if (m->small && m->buf == m->inline_buf && tn_lws_running() && w->nspare < MSG_SPARES) {
        m->next = w->spare;
        w->spare = m;
        w->nspare++;
        return;
    }
    free(m);
}

static void want_write(wsconn *c)
{
    if (c->sock.wsi && !c->sock.destroyed)
        lws_callback_on_writable(c->sock.wsi);
}

static void close_with(wsconn *c, int code, const char *reason, bool now)
{
    if (c->sock.destroyed || !c->sock.wsi)
        return;
    if (!c->close_code || now) {
        c->close_code = code;
        snprintf(c->close_reason, sizeof(c->close_reason), "%s", reason ? reason : "");
    }
    c->close_now |= now;
    if (c->established)
        want_write(c);
    else
        lws_set_timeout(c->sock.wsi, PENDING_TIMEOUT_CLOSE_SEND, LWS_TO_KILL_ASYNC);
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
                  tn_lws_holding();
    pong_release(c, !behind);
    while (c->out_head && !c->sock.destroyed && !c->close_code && !c->deflate && (c->out_head->len || c->out_head->pong) &&
           !lws_partial_buffered(c->sock.wsi)) {
        wsmsg *m = c->out_head;
        c->out_head = m->next;
        if (!c->out_head)
            c->out_tail = NULL;
        c->out_bytes -= m->len;
        size_t len = m->len;
        bool pong = m->pong;
        int n = lws_write(c->sock.wsi, m->buf + LWS_PRE, len, write_type(m));
        msg_free(c, m);
        if (n < 0) {
            c->base.listener->stats.connection_errors++;
            c->d->stats.connection_errors++;
            lws_set_timeout(c->sock.wsi, PENDING_TIMEOUT_CLOSE_SEND, LWS_TO_KILL_ASYNC);
            return;
        }
        if (!pong)
            count_out(c, len);
    }
    if (behind && (c->pong_head || c->wsf.code)) {
        tn_lws_flush_later(&c->sock); /* the next pass, after lws's */
    } else if (c->wsf.code && !c->sock.destroyed) {
        /* the peer's close is echoed after what is queued; a violation
         * closes at once */
        close_with(c, c->wsf.code, c->wsf.closed ? "" : c->wsf.why, !c->wsf.closed);
    }
    if (!c->sock.destroyed && (c->out_head || c->close_code))
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
        msg_free(c, m);
        reject(c, TN_REJ_SLOW_READER);
        close_with(c, LWS_CLOSE_STATUS_POLICY_VIOLATION, "slow reader", true);
        return;
    }
    if (fast && (!c->out_head || tn_lws_flush_listed(&c->sock)) && !c->deflate && !c->close_code && (m->len || m->pong) &&
        !lws_partial_buffered(c->sock.wsi)) {
        queue_out(c, m);
        tn_lws_flush_later(&c->sock);
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
        if (c->close_code || c->sock.destroyed)
            msg_free(c, m); /* our close frame is the last one */
        else
            output(c, m, true);
    }
}

static void pongs_drop(wsconn *c)
{
    while (c->pong_head) {
        wsmsg *m = c->pong_head;
        c->pong_head = m->next;
        msg_free(c, m);
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
            msg_free(c, m);
            continue;
        }
        if (over_cap(c, m->len)) {
            msg_free(c, m);
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
        m = msg_new(c, NULL, plen + len, false);
        if (m) {
            memcpy(m->buf + LWS_PRE, prefix, plen);
            if (len)
                memcpy(m->buf + LWS_PRE + plen, data, len);
        }
    } else {
        m = msg_new(c, data, len, req_binary);
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

/* lws reads a WebSocket's bytes through the driver's recv() interposer,
 * which hands them here (rx_read): they pass through tn_wsf_run()
 * (wsframe.h) on their way in. */

static void on_ping(void *arg, const uint8_t *payload, size_t len, uint32_t msgs)
{
    wsconn *c = arg;
    wsmsg *m = msg_new(c, payload, len, true);
    if (!m)
        return; /* out of memory: the peer's keepalive will tell */
    m->pong = true;
    m->after = msgs;
    msg_append(&c->pong_head, &c->pong_tail, m);
    tn_lws_flush_later(&c->sock);
}

/* Runs the frame check over LEN bytes at BUF; what lws may see is left. */
static size_t check_frames(wsconn *c, unsigned char *buf, size_t len)
{
    bool ok = !c->wsf.code;
    size_t n = tn_wsf_run(&c->wsf, buf, len, on_ping, c);
    if (ok && c->wsf.code) {
        if (c->wsf.code == LWS_CLOSE_STATUS_MESSAGE_TOO_LARGE && !c->wsf.closed)
            reject(c, TN_REJ_TOO_LARGE);
        tn_lws_flush_later(&c->sock); /* flush_conn() closes */
    }
    return n;
}

static ssize_t rx_read(wsconn *c, unsigned char *buf, size_t len)
{
    ssize_t n;
    if (c->wsf.code) {
        /* after the peer's close or a violation: input is dropped */
        n = recvfrom(c->sock.fd, buf, len, 0, NULL, NULL);
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
    n = recvfrom(c->sock.fd, buf + held, len - held, 0, NULL, NULL);
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
        .listener = c->base.listener->name,
        .conn_id = c->base.session.id,
        .protocol = TN_PROTO_WS,
        .remote = &c->base.remote.sa,
        .remote_len = remote_len(c),
        .session = &c->base.session,
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
    tn_lws_flush_later(&c->sock);
    return 0;
}

static int on_receive(wsconn *c, const char *in, size_t len)
{
    struct lws *wsi = c->sock.wsi;
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
        msg_free(c, c->inflight);
        c->inflight = NULL;
    }
    if (c->close_code && (c->close_now || !c->out_head)) {
        lws_close_reason(c->sock.wsi, (enum lws_close_status)c->close_code, (unsigned char *)c->close_reason,
                         strlen(c->close_reason));
        c->close_sent = true;
        /* lws now sends the close frame and closes the socket without
         * waiting for the peer's: a duplicate keeps it open and drained,
         * so a peer still sending gets our close frame, not a reset */
        evutil_socket_t keep = dup(c->sock.fd);
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
        n = lws_write(c->sock.wsi, m->buf + LWS_PRE, m->len, LWS_WRITE_PONG) < 0 ? -1 : 0;
    } else if (m->len == 0) {
        /* 4.1.6's permessage-deflate asserts on an empty message (the sync
         * flush yields under 4 bytes to trim): send the frame as is, raw and
         * uncompressed (RSV1 clear), which RFC 7692 allows */
        unsigned char *f = m->buf + LWS_PRE;
        f[0] = (unsigned char)(0x80 | (m->binary ? 0x2 : 0x1));
        f[1] = 0;
        n = lws_write(c->sock.wsi, f, 2, LWS_WRITE_HTTP) < 0 ? -1 : 0;
    } else {
        n = lws_write(c->sock.wsi, m->buf + LWS_PRE, m->len, m->binary ? LWS_WRITE_BINARY : LWS_WRITE_TEXT);
    }
    size_t len = m->len;
    bool pong = m->pong;
    if (c->deflate && len && !pong) {
        /* 4.1.6's permessage-deflate keeps deflating from the caller's
         * buffer on later POLLOUTs when the output did not fit in one go */
        c->inflight = m;
        if (len > 512)
            lws_callback_on_writable(c->sock.wsi); /* to release it soon */
    } else {
        msg_free(c, m);
    }
    if (n < 0) {
        c->base.listener->stats.connection_errors++;
        c->d->stats.connection_errors++;
        return -1;
    }
    if (!pong)
        count_out(c, len);
    if (c->out_head || c->close_code)
        lws_callback_on_writable(c->sock.wsi);
    return 0;
}

/* ---- sessions -------------------------------------------------------------------- */

static wsconn *session_conn(tn_session *s)
{
    return (wsconn *)((char *)s - offsetof(wsconn, base.session));
}

static int session_push(tn_session *s, const char *data, size_t len)
{
    wsconn *c = session_conn(s);
    if (c->sock.destroyed || c->finished || c->close_code)
        return 0;
    if (over_cap(c, len)) {
        reject(c, TN_REJ_SLOW_READER);
        return -1;
    }
    wsmsg *m = msg_new(c, data, len, !tn_utf8_valid((const unsigned char *)data, len));
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
        msg_free(c, m);
    }
    c->pend_tail = NULL;
    while (c->out_head) {
        wsmsg *m = c->out_head;
        c->out_head = m->next;
        msg_free(c, m);
    }
    c->out_tail = NULL;
    c->out_bytes = 0;
    pongs_drop(c);
    tn_session_detach_all(&c->base.session);
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
    int64_t ms = wall_ms(c->d) - c->base.established_ms;
    char remote[64];
    tn_addr_format(&c->base.remote.sa, remote, sizeof(remote));
    tn_info("websocket %llu closed: %s %s from %s, code %d %s%s%s%s, %lld.%03lld s, %llu message(s) in, %llu out",
            (unsigned long long)c->base.session.id, c->base.listener->name, c->path ? c->path : "", remote, code, by,
            !peer && c->close_sent && *c->close_reason ? " (" : "", !peer && c->close_sent ? c->close_reason : "",
            !peer && c->close_sent && *c->close_reason ? ")" : "", (long long)(ms / 1000), (long long)(ms % 1000),
            (unsigned long long)c->base.msgs_in, (unsigned long long)c->base.msgs_out);
}

static void conn_destroy(wsconn *c)
{
    if (c->sock.destroyed)
        return;
    if (c->established)
        log_close(c);
    finish(c);
    tn_lws_sock_close(&c->sock);
    if (c->inflight) {
        msg_free(c, c->inflight);
        c->inflight = NULL;
    }
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
    tn_debug("websocket %llu closed", (unsigned long long)c->base.session.id);
    tn_conn_base_close(&c->base); /* freed by the reap job */
}

static int callback(tn_lws_sock *s, struct lws *wsi, enum lws_callback_reasons reason, void *in, size_t len)
{
    wsconn *c = s ? conn_of_sock(s) : NULL;
    switch (reason) {
    case LWS_CALLBACK_ESTABLISHED:
        if (!c)
            return -1;
        c->established = true;
        c->base.established_ms = c->base.last_activity_ms = wall_ms(c->d);
        tn_http_count_response(c->base.listener, NULL, NULL, 101);
        if (tn_log_get_level() >= TN_LOG_INFO) {
            char remote[64];
            tn_addr_format(&c->base.remote.sa, remote, sizeof(remote));
            tn_info("websocket %llu opened: %s %s from %s%s%s", (unsigned long long)c->base.session.id,
                    c->base.listener->name, c->path, remote, *c->subprotocol ? ", subprotocol " : "", c->subprotocol);
        }
        /* a single handler that keeps per-connection state (stream process,
         * broadcast room) joins at connect */
        if (c->handler && c->handler->ops->attach && !tn_session_state(&c->base.session, c->handler)) {
            tn_warn("listener %s: handler %s could not start for websocket %llu", c->base.listener->name, c->handler->name,
                    (unsigned long long)c->base.session.id);
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
                tn_lws_flush_later(&c->sock); /* a close waiting for this message */
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
        if (c)
            conn_destroy(c);
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
    return lws_callback_http_dummy(wsi, reason, NULL, in, len);
}

/* ---- the WebSocket as the daemon and the control socket see it ------------------- */

static wsconn *conn_of(const tn_conn_base *b)
{
    return (wsconn *)b;
}

static const char *ws_protocol(const tn_conn_base *b)
{
    (void)b;
    return "ws";
}

static void ws_describe(const tn_conn_base *b, tn_conn_info *info)
{
    const wsconn *c = conn_of(b);
    snprintf(info->local, sizeof(info->local), "%s", c->local);
    info->path = c->path ? c->path : "";
    info->subprotocol = c->subprotocol;
    info->tls = c->tls;
}

static bool ws_closing(const tn_conn_base *b)
{
    return conn_of(b)->close_code != 0;
}

static int ws_send(tn_conn_base *b, const char *data, size_t len)
{
    wsconn *c = conn_of(b);
    if (c->close_code)
        return -1;
    int r = session_push(&c->base.session, data, len);
    tn_lws_wake();
    return r;
}

static void ws_close(tn_conn_base *b)
{
    close_with(conn_of(b), LWS_CLOSE_STATUS_NORMAL, "closed by the operator", false);
    tn_lws_wake();
}

static void ws_shutdown(tn_conn_base *b)
{
    close_with(conn_of(b), LWS_CLOSE_STATUS_GOINGAWAY, "server shutting down", false);
    tn_lws_wake();
}

static void ws_destroy(tn_conn_base *b)
{
    free(conn_of(b));
}

/* No abort: a WebSocket ends when lws lets go of it (tn_ws_free()). */
static const tn_conn_kind ws_kind = {
    .protocol = ws_protocol,
    .describe = ws_describe,
    .closing = ws_closing,
    .send = ws_send,
    .close = ws_close,
    .shutdown = ws_shutdown,
    .destroy = ws_destroy,
};

/* ---- init -------------------------------------------------------------------------- */

static void sock_flush(tn_lws_sock *s)
{
    flush_conn(conn_of_sock(s));
}

static ssize_t sock_recv(tn_lws_sock *s, unsigned char *buf, size_t len)
{
    return rx_read(conn_of_sock(s), buf, len);
}

static const tn_lws_hooks hooks = { callback, sock_flush, sock_recv };

int tn_ws_init(tn_daemon *d, char *err, size_t errlen)
{
    if (d->ws)
        return 0;
    if (!(d->ws = calloc(1, sizeof(*d->ws)))) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    /* endpoints without keepalive settings of their own: ping after 30 s of
     * silence, close 10 s later */
    if (tn_lws_init(d, &hooks, 30000, 10000, err, errlen) < 0) {
        tn_ws_free(d);
        return -1;
    }
    return 0;
}

void tn_ws_free(tn_daemon *d)
{
    /* every wsi is destroyed: WSI_DESTROY closes our records */
    tn_lws_free();
    /* any lws did not report */
    for (tn_conn_base *b = d->conns, *next; b; b = next) {
        next = b->next;
        if (b->kind == &ws_kind)
            conn_destroy(conn_of(b));
    }
    if (!d->ws)
        return;
    while (d->ws->spare) {
        wsmsg *m = d->ws->spare;
        d->ws->spare = m->next;
        free(m);
    }
    free(d->ws);
    d->ws = NULL;
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

/* Whether lws can hold the head (TN_LWS_HEAD_MAX of header data, which holds
 * less than the head's own bytes): lws drops a handshake it cannot hold
 * without a word, so the HTTP layer answers 431 instead. */
static bool head_fits(const struct tn_http_request *r)
{
    size_t n = strlen(r->method) + strlen(r->target) + 12;
    for (size_t i = 0; i < r->nheaders; i++)
        n += strlen(r->headers[i].name) + strlen(r->headers[i].value) + 4;
    return n < TN_LWS_HEAD_MAX;
}

int tn_ws_check(const tn_ws_conf *ep, const struct tn_http_request *r)
{
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

int tn_ws_upgrade(tn_daemon *d, tn_listener *l, const tn_ws_conf *ep, evutil_socket_t fd, const tn_ws_origin *from,
                  const char *head, size_t len)
{
    if (!tn_lws_running()) {
        evutil_closesocket(fd);
        return -1;
    }
    struct lws_vhost *vh = tn_lws_vhost(ep->ping_interval, ep->pong_timeout);
    wsconn *c = calloc(1, sizeof(*c));
    size_t cap = len + 256;
    char *buf = malloc(cap);
    if (!vh || !c || !buf)
        goto fail;
    c->d = d;
    tn_conn_base_init(&c->base, &ws_kind, l);
    c->sock.fd = -1;
    c->base.session.ops = &ws_session_ops;
    c->base.session.protocol = TN_PROTO_WS;
    c->max_message = ep->limits.max_message;
    c->max_output = ep->limits.max_output;
    c->wsf.max_message = (uint64_t)c->max_message;
    c->path = strdup(ep->path);
    if (from->remote && from->remote_len <= sizeof(c->base.remote))
        memcpy(&c->base.remote, from->remote, from->remote_len);
    struct sockaddr_storage la;
    socklen_t ll = sizeof(la);
    if (from->local)
        snprintf(c->local, sizeof(c->local), "%s", from->local);
    else if (getsockname(fd, (struct sockaddr *)&la, &ll) == 0)
        tn_addr_format((struct sockaddr *)&la, c->local, sizeof(c->local));
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
    if (!c->path)
        goto fail;
    size_t head_len = 0;
    size_t n = rewrite_head(ep, head, len, buf, cap, c->subprotocol, sizeof(c->subprotocol), &head_len);
    buf[n < cap ? n : cap - 1] = '\0';
    c->deflate = ep->deflate && strcasestr(buf, "permessage-deflate");
    c->wsf.deflate = c->deflate;
    if (tn_lws_sock_open(&c->sock, fd) < 0)
        goto fail;
    /* frames sent with the upgrade request are checked like the rest */
    if (n > head_len)
        n = head_len + check_frames(c, (unsigned char *)buf + head_len, n - head_len);
    /* listed and counted from now; the HTTP connection that carried the
     * upgrade stops counting when it lets the socket go */
    c->base.established_ms = c->base.last_activity_ms = wall_ms(d);
    tn_conn_base_open(&c->base);
    struct lws *wsi = tn_lws_adopt(&c->sock, vh, buf, n);
    free(buf);
    if (!wsi) {
        /* lws closed the socket */
        if (!c->sock.destroyed)
            conn_destroy(c);
        return -1;
    }
    return 0;
fail:
    if (c) {
        tn_lws_sock_close(&c->sock);
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
