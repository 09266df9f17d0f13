/* SPDX-License-Identifier: MIT */
/* ws.c - the WebSocket front end: what a WebSocket endpoint does with the
 * upgraded connections libwebsockets serves (net/lwsdrv.c drives lws from
 * the loop; wsconn.c writes what goes out).
 *
 *  - the upgrade: the endpoint's checks and the head lws gets
 *    (wshandshake.c), the record, the socket adopted;
 *  - messages in: the frame check (wsframe.h) reads every byte lws gets and
 *    holds clients to RFC 6455 where lws does not, sees pings and closes;
 *    whole messages, UTF-8 checked and within max_message, go through the
 *    dispatch step (dispatch.h) to a handler, and the answers to wsconn.c;
 *  - the lifetime: lws's callbacks, per-connection handler state, one log
 *    line per WebSocket, the record's end.
 *
 * A WebSocket is a connection like the others (conn.h's base record): the
 * daemon and the control socket list, count, close, push to and reap it
 * through its kind. */
#include "proto/ws.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <libwebsockets.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "addr.h"
#include "handlers/handler.h"
#include "log.h"
#include "net/conn.h"
#include "net/listener.h"
#include "net/lwsdrv.h"
#include "proto/dispatch.h"
#include "proto/wsconn.h"
#include "proto/wshandshake.h"

/* ---- records ------------------------------------------------------------------ */

static const tn_conn_kind ws_kind;

static tn_wsconn *conn_of_sock(tn_lws_sock *s)
{
    return (tn_wsconn *)((char *)s - offsetof(tn_wsconn, sock));
}

/* ---- helpers ------------------------------------------------------------------- */

static socklen_t remote_len(const tn_wsconn *c)
{
    return c->base.remote.sa.sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
}

static void count_in(tn_wsconn *c, size_t len)
{
    c->base.bytes_in += len;
    c->base.msgs_in++;
    TN_COUNT(c->base.listener, total_bytes_received, len);
    TN_COUNT(c->base.listener, messages_in, 1);
    c->base.last_activity_ms = tn_loop_ms(c->d->base);
}

/* ---- the frame check ---------------------------------------------------------------- */

/* lws reads a WebSocket's bytes through the driver's recv() interposer,
 * which hands them here (rx_read): they pass through tn_wsf_run()
 * (wsframe.h) on their way in. */

/* Runs the frame check over LEN bytes at BUF; what lws may see is left. */
static size_t check_frames(tn_wsconn *c, unsigned char *buf, size_t len)
{
    bool ok = !c->wsf.code;
    size_t n = tn_wsf_run(&c->wsf, buf, len, tn_wsconn_on_ping, c);
    if (ok && c->wsf.code) {
        if (c->wsf.code == LWS_CLOSE_STATUS_MESSAGE_TOO_LARGE && !c->wsf.closed)
            tn_wsconn_reject(c, TN_REJ_TOO_LARGE);
        tn_lws_flush_later(&c->sock); /* tn_wsconn_flush() closes */
    }
    return n;
}

static ssize_t rx_read(tn_wsconn *c, unsigned char *buf, size_t len)
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
    const tn_wsconn *c = arg;
    for (size_t i = 0; i < c->nnames; i++)
        if (strlen(c->names[i]) == len && memcmp(c->names[i], name, len) == 0)
            return tn_registry_find(c->d->registry, c->names[i]);
    return NULL;
}

static void handle_message(tn_wsconn *c, const char *msg, size_t len, bool binary)
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
        tn_wsconn_reply(c, tn_dispatch_result(v), (const char *)evbuffer_pullup(out, -1), n, false, false);
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
        tn_wsmsg *slot = call.job ? tn_wsconn_pend_add(c) : NULL;
        if (!slot) {
            if (call.job)
                tn_job_cancel(call.job);
            evbuffer_drain(out, evbuffer_get_length(out));
            tn_wsconn_reply(c, TN_FAIL, "out of memory", 13, false, true);
            return;
        }
        slot->job = call.job;
        slot->binary = binary;
        slot->conn = c;
        call.job->fe = slot;
        call.job->complete = tn_wsconn_job_complete;
        return;
    }
    if (call.reply) {
        /* the payload itself (the message, or what follows "name ") is
         * already known to be UTF-8 when the message was text */
        bool own = call.reply == call.payload && call.reply_len == call.len;
        tn_wsconn_reply(c, res, call.reply, call.reply_len, binary, own);
        return;
    }
    size_t n = evbuffer_get_length(out);
    const char *data = n ? (const char *)evbuffer_pullup(out, -1) : "";
    tn_wsconn_reply(c, res, data, n, binary, false);
    evbuffer_drain(out, n);
}

/* Failing the connection from here (1007, 1009): lws's further messages
 * are ignored, the frame check drops further input, and tn_wsconn_flush() closes
 * after the replies owed, from the writeable callback (tn_wsconn_close_with), which
 * lingers on the socket; returning -1 here would make lws close at once,
 * with the peer's data unread. This failure comes before anything the frame
 * check found further on in the stream. */
static int fail_rx(tn_wsconn *c, int code, const char *why)
{
    c->rx_dead = true;
    c->wsf.code = code;
    c->wsf.why = why;
    c->wsf.closed = false;
    /* the pongs owed for pings before this piece are out (see the
     * RECEIVE callback): those still waiting came after it */
    tn_wsconn_pongs_drop(c);
    if (c->rx) {
        evbuffer_free(c->rx);
        c->rx = NULL;
    }
    c->rx_len = 0;
    c->rx_open = false;
    tn_lws_flush_later(&c->sock);
    return 0;
}

static int on_receive(tn_wsconn *c, const char *in, size_t len)
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
        tn_wsconn_reject(c, TN_REJ_TOO_LARGE);
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

/* ---- lifetime ---------------------------------------------------------------------- */

/* The connection is over: handlers let go, outstanding jobs are dropped. */
static void finish(tn_wsconn *c)
{
    if (c->finished)
        return;
    c->finished = true;
    while (c->pend_head) {
        tn_wsmsg *m = c->pend_head;
        c->pend_head = m->next;
        if (m->job) {
            tn_job *j = m->job;
            m->job = NULL;
            tn_job_cancel(j);
        }
        tn_wsconn_msg_free(c, m);
    }
    c->pend_tail = NULL;
    while (c->out_head) {
        tn_wsmsg *m = c->out_head;
        c->out_head = m->next;
        tn_wsconn_msg_free(c, m);
    }
    c->out_tail = NULL;
    c->out_bytes = 0;
    tn_wsconn_pongs_drop(c);
    tn_session_detach_all(&c->base.session);
    if (c->rx) {
        evbuffer_free(c->rx);
        c->rx = NULL;
    }
}

/* One info line per WebSocket that opened: who closed it, with what code
 * (the peer's as the frame check read it; 1006 when the connection ended
 * without a close frame), how long it lived and what went through it. */
static void log_close(const tn_wsconn *c)
{
    bool peer = c->wsf.code && c->wsf.closed;
    int code = peer ? c->wsf.code : c->close_sent ? c->close_code : 1006;
    const char *by = peer ? "by the peer" : c->close_sent ? "by the server" : "without a close frame";
    int64_t ms = tn_loop_ms(c->d->base) - c->base.established_ms;
    char remote[64];
    tn_addr_format(&c->base.remote.sa, remote, sizeof(remote));
    tn_info("websocket %llu closed: %s %s from %s, code %d %s%s%s%s, %lld.%03lld s, %llu message(s) in, %llu out",
            (unsigned long long)c->base.session.id, c->base.listener->name, c->path ? c->path : "", remote, code, by,
            !peer && c->close_sent && *c->close_reason ? " (" : "", !peer && c->close_sent ? c->close_reason : "",
            !peer && c->close_sent && *c->close_reason ? ")" : "", (long long)(ms / 1000), (long long)(ms % 1000),
            (unsigned long long)c->base.msgs_in, (unsigned long long)c->base.msgs_out);
}

static void conn_destroy(tn_wsconn *c)
{
    if (c->sock.destroyed)
        return;
    if (c->established)
        log_close(c);
    finish(c);
    tn_lws_sock_close(&c->sock);
    if (c->inflight) {
        tn_wsconn_msg_free(c, c->inflight);
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
    tn_wsconn *c = s ? conn_of_sock(s) : NULL;
    switch (reason) {
    case LWS_CALLBACK_ESTABLISHED:
        if (!c)
            return -1;
        c->established = true;
        c->base.established_ms = c->base.last_activity_ms = tn_loop_ms(c->d->base);
        if (c->base.listener->ops->count_response)
            c->base.listener->ops->count_response(c->base.listener, 101);
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
                tn_wsconn_pong_release(c, false);
            c->in_receive = true;
            int r = on_receive(c, in, len);
            c->in_receive = false;
            if (c->pong_head)
                tn_wsconn_pong_release(c, false);
            if (c->wsf.code)
                tn_lws_flush_later(&c->sock); /* a close waiting for this message */
            return r;
        }
    case LWS_CALLBACK_SERVER_WRITEABLE:
        if (!c || c->finished)
            return -1;
        return tn_wsconn_writeable(c);
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

static tn_wsconn *conn_of(const tn_conn_base *b)
{
    return (tn_wsconn *)b;
}

static const char *ws_protocol(const tn_conn_base *b)
{
    (void)b;
    return "ws";
}

static void ws_describe(const tn_conn_base *b, tn_conn_info *info)
{
    const tn_wsconn *c = conn_of(b);
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
    tn_wsconn *c = conn_of(b);
    if (c->close_code)
        return -1;
    int r = tn_wsconn_session_ops.push(&c->base.session, data, len);
    tn_lws_wake();
    return r;
}

static void ws_close(tn_conn_base *b)
{
    tn_wsconn_close_with(conn_of(b), LWS_CLOSE_STATUS_NORMAL, "closed by the operator", false);
    tn_lws_wake();
}

static void ws_shutdown(tn_conn_base *b)
{
    tn_wsconn_close_with(conn_of(b), LWS_CLOSE_STATUS_GOINGAWAY, "server shutting down", false);
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
    tn_wsconn_flush(conn_of_sock(s));
}

static ssize_t sock_recv(tn_lws_sock *s, unsigned char *buf, size_t len)
{
    return rx_read(conn_of_sock(s), buf, len);
}

static const tn_lws_hooks hooks = { callback, sock_flush, sock_recv };

static const tn_upgrade_ops upgrade_ops = {
    .check = tn_ws_check,
    .take = tn_ws_upgrade,
};

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
    d->upgrade = &upgrade_ops;
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
        tn_wsmsg *m = d->ws->spare;
        d->ws->spare = m->next;
        free(m);
    }
    free(d->ws);
    d->ws = NULL;
    d->upgrade = NULL;
}

int tn_ws_upgrade(tn_daemon *d, tn_listener *l, const tn_ws_conf *ep, evutil_socket_t fd, const tn_ws_origin *from,
                  const char *head, size_t len)
{
    if (!tn_lws_running()) {
        evutil_closesocket(fd);
        return -1;
    }
    struct lws_vhost *vh = tn_lws_vhost(ep->ping_interval, ep->pong_timeout);
    tn_wsconn *c = calloc(1, sizeof(*c));
    size_t cap = len + 256;
    char *buf = malloc(cap);
    if (!vh || !c || !buf)
        goto fail;
    c->d = d;
    tn_conn_base_init(&c->base, &ws_kind, l);
    c->sock.fd = -1;
    c->base.session.ops = &tn_wsconn_session_ops;
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
    size_t n = tn_ws_rewrite_head(ep, head, len, buf, cap, c->subprotocol, sizeof(c->subprotocol), &head_len);
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
    c->base.established_ms = c->base.last_activity_ms = tn_loop_ms(d->base);
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
