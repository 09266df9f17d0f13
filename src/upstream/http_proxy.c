/* SPDX-License-Identifier: MIT */
/* http_proxy.c - the HTTP reverse proxy: one exchange per client request.
 *
 * The front end dispatches a proxied request as soon as its head is
 * complete (the handler's http_stream flag): the exchange picks a server,
 * takes a pooled connection or opens one, sends a rewritten head, and
 * streams the body as it arrives (r->body_sink), stopping the client while
 * the upstream has BODY_HIGH bytes unsent. The upstream's response head is
 * collected whole (bounded by max_response_header), checked strictly and
 * parsed with http_parser; its body streams to the client as r->stream,
 * upstream reads stopping while RESP_HIGH bytes wait for the client. Memory
 * per exchange is bounded either way, whatever the body sizes.
 *
 * A try fails on connect errors, timeouts, resets and malformed answers.
 * Failures before any response byte, with no body byte sent yet, are
 * retried on another server after an exponential backoff with full jitter,
 * for idempotent methods (or all, with retry_non_idempotent), up to
 * `retries` more tries within retry_budget. A pooled connection the server
 * closed while it idled (the keep-alive race) is retried on a fresh one at
 * once and not held against the server. An upstream connection goes back to
 * the pool only after a complete, well-framed response with nothing extra. */
#include "upstream/http_proxy.h"

#include <limits.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>

#include "clock.h"
#include "log.h"
#include "proto/http.h"
#include "upstream/http_exchange.h"
#include "upstream/http_pool.h"

typedef tn_http_exchange exchange;

#define BODY_HIGH (256 * 1024) /* request bytes unsent upstream before the client is stopped */
#define RESP_HIGH (256 * 1024) /* response bytes waiting for the client before the upstream is */
#define PIECE (64 * 1024)      /* most handed to the front end per piece */

static void try_next(exchange *x);
static void exchange_maybe_free(exchange *x);
static void ws_take(void *arg, const tn_http_handover *ho);

/* ---- answering the client ----------------------------------------------------- */

static void answer_error(exchange *x, int status, const char *text, int retry_after)
{
    if (!x->job)
        return;
    tn_job *job = x->job;
    x->job = NULL;
    if (x->r) {
        x->r->status = status;
        if (retry_after > 0) {
            char v[16];
            snprintf(v, sizeof(v), "%d", retry_after);
            tn_http_set_header(x->r, "Retry-After", v);
        }
    }
    tn_job_done(job, TN_FAIL, text, strlen(text));
}

/* ---- the request body -------------------------------------------------------------- */

static void body_to_upstream(exchange *x)
{
    if (!x->sending || !x->uc || !x->uc->bev)
        return;
    struct evbuffer *out = bufferevent_get_output(x->uc->bev);
    size_t n = evbuffer_get_length(x->body);
    if (n) {
        if (x->chunked_up)
            evbuffer_add_printf(out, "%zx\r\n", n);
        evbuffer_add_buffer(out, x->body);
        if (x->chunked_up)
            evbuffer_add(out, "\r\n", 2);
        x->body_sent_any = true;
        x->server->stats.bytes_sent += n;
    }
    if (x->body_complete && x->chunked_up && !x->request_sent) {
        evbuffer_add(out, "0\r\n\r\n", 5);
        x->chunked_up = false; /* the terminator is out */
    }
    tn_http_pool_send(tn_http_side_batch(x->p), x->uc);
}

static bool sink_data(tn_http_body_sink *s, const char *at, size_t len)
{
    exchange *x = (exchange *)((char *)s - offsetof(exchange, sink));
    if (!x->uc && (x->head_done || !x->job))
        return true; /* answered already (or failed): the rest is read and dropped */
    evbuffer_add(x->body, at, len);
    body_to_upstream(x);
    size_t queued = evbuffer_get_length(x->body);
    if (x->uc && x->uc->bev)
        queued += evbuffer_get_length(bufferevent_get_output(x->uc->bev));
    return queued < BODY_HIGH;
}

static void arm_read_timeout(exchange *x)
{
    const tn_handler_conf *c = &x->p->h->conf;
    struct timeval rt = { c->timeout / 1000, (c->timeout % 1000) * 1000 };
    struct timeval wt = { c->send_timeout / 1000, (c->send_timeout % 1000) * 1000 };
    tn_up_conn_set_timeouts(x->uc, x->request_sent && c->timeout ? &rt : NULL, c->send_timeout ? &wt : NULL);
}

static void check_sent(exchange *x)
{
    if (x->request_sent || !x->body_complete || !x->sending || !x->uc)
        return;
    if (evbuffer_get_length(x->body) || evbuffer_get_length(bufferevent_get_output(x->uc->bev)))
        return;
    x->request_sent = true;
    /* the wait for the answer starts now: timeout is between reads */
    arm_read_timeout(x);
}

static void sink_end(tn_http_body_sink *s, bool complete)
{
    exchange *x = (exchange *)((char *)s - offsetof(exchange, sink));
    x->sink_ended = true;
    if (!complete) {
        /* the client's body broke off: the upstream cannot get a whole
         * request on this connection */
        if (x->uc && !x->resp_done) {
            x->server->stats.active--;
            tn_up_conn_free(x->uc);
            x->uc = NULL;
        }
        answer_error(x, 400, "request body incomplete", 0);
        x->resp_failed = true;
        if (x->stream_set && !x->stream_freed)
            tn_http_stream_wake(&x->stream);
        exchange_maybe_free(x);
        return;
    }
    x->body_complete = true;
    body_to_upstream(x);
    if (x->uc && x->uc->bev)
        check_sent(x);
    exchange_maybe_free(x);
}

/* ---- the response ----------------------------------------------------------------- */

static int on_header_field(http_parser *p, const char *at, size_t len)
{
    exchange *x = p->data;
    if (x->nh && !x->hvalue[x->nh - 1]) {
        /* a field split by the parser: never within one buffer */
        return -1;
    }
    if (x->nh == MAX_RESP_HEADERS) {
        x->header_overflow = true;
        return -1;
    }
    x->hname[x->nh] = at;
    x->hname_len[x->nh] = len;
    x->hvalue[x->nh] = NULL;
    x->hvalue_len[x->nh] = 0;
    x->nh++;
    if (len == 14 && strncasecmp(at, "Content-Length", 14) == 0)
        x->content_lengths++;
    if (len == 17 && strncasecmp(at, "Transfer-Encoding", 17) == 0)
        x->transfer_encodings++;
    return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t len)
{
    exchange *x = p->data;
    if (!x->nh)
        return -1;
    if (x->hvalue[x->nh - 1]) {
        x->hvalue_len[x->nh - 1] += len; /* the head is contiguous: pieces are adjacent */
        return 0;
    }
    x->hvalue[x->nh - 1] = at;
    x->hvalue_len[x->nh - 1] = len;
    return 0;
}

static int on_headers_complete(http_parser *p)
{
    exchange *x = p->data;
    /* a response both sized and chunked is how smuggling starts; two
     * lengths are ambiguous: refuse both rather than guess */
    if (x->content_lengths > 1 || (x->content_lengths && x->transfer_encodings) || x->transfer_encodings > 1)
        return -1;
    if (x->transfer_encodings && !(p->flags & F_CHUNKED))
        return -1; /* a coding other than chunked last: no way to frame it */
    bool head = x->r ? x->r->head || strcmp(x->r->method, "HEAD") == 0 : false;
    if (head || p->status_code < 200 || p->status_code == 204 || p->status_code == 304)
        return 1; /* no body follows */
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t len)
{
    exchange *x = p->data;
    if ((p->flags & F_CHUNKED) && p->content_length == 0) {
        /* chunk data must end with CRLF; http_parser takes any two bytes */
        x->crlf_need = 2;
        if (!tn_http_crlf_ok(&x->crlf_need, at + len, x->feed_end))
            return -1;
    }
    evbuffer_add(x->rbody, at, len);
    x->server->stats.bytes_received += len;
    return 0;
}

static int on_message_complete(http_parser *p)
{
    exchange *x = p->data;
    x->resp_done = true;
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings parser_settings = {
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

static void fail_try(exchange *x, int reason, const char *detail);

/* The head is in; hand the response to the front end. */
static void deliver_head(exchange *x)
{
    tn_http_request *r = x->r;
    tn_job *job = x->job;
    if (!r || !job)
        return;
    x->job = NULL;
    int status = x->parser.status_code;
    r->status = status;
    bool switching = status == 101 && x->upgrade;
    tn_http_proxy_response_headers(r, x->hname, x->hvalue, x->nh, switching, x->parser.http_major,
                                   x->parser.http_minor);
    if (switching) {
        r->on_upgrade = ws_take;
        r->upgrade_arg = x;
        x->upgrade_pending = true;
    } else if (status >= 200 && status != 204 && status != 304) {
        x->stream_set = true;
        if (x->parser.flags & F_CONTENTLENGTH) {
            x->stream.has_length = true;
            x->stream.length = x->resp_length;
        } else if (!(x->parser.flags & F_CHUNKED) && x->resp_done && !r->head) {
            /* close-delimited, and all of it is here already */
            x->stream.has_length = true;
            x->stream.length = evbuffer_get_length(x->rbody);
        }
        r->stream = &x->stream;
    }
    tn_job_done(job, TN_REPLY, NULL, 0);
}

static void finish_try_ok(exchange *x)
{
    tn_upstream_try_ok(x->p->group, x->server, tn_now_us() - x->try_t0);
}

/* The response ended well: the connection may serve another. */
static void release_conn(exchange *x, bool reusable)
{
    tn_up_conn *uc = x->uc;
    if (!uc)
        return;
    /* the answer can be read before the write callback told us the
     * request left (TLS, a busy loop): look at the buffers themselves */
    check_sent(x);
    x->uc = NULL;
    x->server->stats.active--;
    if (reusable && http_should_keep_alive(&x->parser) && x->request_sent && !x->upgrade) {
        const tn_handler_conf *c = &x->p->h->conf;
        uc->uses++;
        tn_http_pool_put(uc, c->keepalive, c->keepalive_timeout);
    } else {
        tn_up_conn_free(uc);
    }
}

/* The front end wrote the 101 and gives up the client's socket: relay. */
static void ws_take(void *arg, const tn_http_handover *ho)
{
    exchange *x = arg;
    x->upgrade_pending = false;
    tn_up_conn *uc = x->uc;
    x->uc = NULL;
    if (ho->fd >= 0 && uc && uc->bev) {
        struct bufferevent *bev = uc->bev;
        uc->bev = NULL;
        uc->fd = -1;
        tn_up_conn_free(uc);
        /* the relay takes the server's active count */
        tn_proxy_ws_relay(x->p->h, ho, bev, x->server);
    } else {
        if (ho->fd >= 0)
            evutil_closesocket(ho->fd);
        if (uc) {
            x->server->stats.active--;
            tn_up_conn_free(uc);
        }
    }
    exchange_maybe_free(x);
}

/* Parses what the upstream sent. Returns false when the try failed. */
static bool parse_input(exchange *x)
{
    struct evbuffer *in = bufferevent_get_input(x->uc->bev);
    const tn_handler_conf *c = &x->p->h->conf;
    while (!x->head_done) {
        size_t avail = evbuffer_get_length(in);
        if (!avail)
            return true;
        /* find the blank line ending the head */
        struct evbuffer_ptr e1 = evbuffer_search(in, "\n\r\n", 3, NULL);
        struct evbuffer_ptr e2 = evbuffer_search(in, "\n\n", 2, NULL);
        ssize_t end = -1;
        if (e1.pos >= 0)
            end = e1.pos + 3;
        if (e2.pos >= 0 && (end < 0 || e2.pos + 2 < end))
            end = e2.pos + 2;
        if (end < 0) {
            if ((int64_t)avail > c->max_response_header) {
                fail_try(x, TN_UPF_BAD_RESPONSE, "response head too large");
                return false;
            }
            return true;
        }
        if ((int64_t)end > c->max_response_header) {
            fail_try(x, TN_UPF_BAD_RESPONSE, "response head too large");
            return false;
        }
        free(x->rhead);
        x->rhead = malloc((size_t)end + 1);
        if (!x->rhead) {
            fail_try(x, TN_UPF_BAD_RESPONSE, "out of memory");
            return false;
        }
        evbuffer_remove(in, x->rhead, (size_t)end);
        x->rhead[end] = '\0';
        x->rhead_len = (size_t)end;
        if (!tn_http_head_strict(x->rhead, x->rhead_len)) {
            fail_try(x, TN_UPF_BAD_RESPONSE, "malformed response head (folded line, bare CR or NUL)");
            return false;
        }
        http_parser_init(&x->parser, HTTP_RESPONSE);
        x->parser.data = x;
        x->nh = 0;
        x->content_lengths = x->transfer_encodings = 0;
        x->resp_done = false;
        x->feed_end = x->rhead + x->rhead_len;
        size_t n = http_parser_execute(&x->parser, &parser_settings, x->rhead, x->rhead_len);
        enum http_errno err = HTTP_PARSER_ERRNO(&x->parser);
        if (err == HPE_PAUSED) {
            http_parser_pause(&x->parser, 0);
            err = HPE_OK;
        }
        if (err != HPE_OK || n != x->rhead_len || !x->nh || x->hvalue[x->nh - 1] == NULL) {
            if (err != HPE_OK || n != x->rhead_len) {
                fail_try(x, TN_UPF_BAD_RESPONSE, err != HPE_OK ? http_errno_description(err) : "bad response head");
                return false;
            }
        }
        for (size_t i = 0; i < x->nh; i++) {
            ((char *)x->hname[i])[x->hname_len[i]] = '\0';
            if (x->hvalue[i])
                ((char *)x->hvalue[i])[x->hvalue_len[i]] = '\0';
            else
                x->hvalue[i] = "";
        }
        int status = x->parser.status_code;
        if (status >= 100 && status < 200 && status != 101) {
            continue; /* 100 Continue and the like: the real head follows */
        }
        x->head_done = true;
        x->resp_length = (x->parser.flags & F_CONTENTLENGTH) ? x->parser.content_length : 0;
        x->sized = !x->resp_done && (x->parser.flags & F_CONTENTLENGTH) && !(x->parser.flags & F_CHUNKED);
        x->body_left = x->parser.content_length;
        finish_try_ok(x);
        if (status == 101 && x->upgrade) {
            deliver_head(x);
            return true; /* the rest of the input is the new protocol's */
        }
    }
    /* the body: a sized one moves to rbody as it is, chains and all (a
     * copy per byte, and a 128 KB buffer per 64 KB piece, cost more than
     * the parse); the parser frames the others */
    if (x->sized && !x->resp_done) {
        size_t n = evbuffer_get_length(in);
        if (n > x->body_left)
            n = (size_t)x->body_left;
        evbuffer_remove_buffer(in, x->rbody, n);
        x->body_left -= n;
        x->server->stats.bytes_received += n;
        x->resp_done = x->body_left == 0;
    }
    struct evbuffer_iovec v[8];
    while (!x->resp_done && evbuffer_get_length(in)) {
        int nv = evbuffer_peek(in, -1, NULL, v, 8);
        size_t used = 0;
        for (int i = 0; i < nv && i < 8 && !x->resp_done; i++) {
            if (!v[i].iov_len)
                continue; /* space reserved for a read (tn_http_pool_fill): to the parser, no bytes mean the end */
            const char *at = v[i].iov_base;
            x->feed_end = at + v[i].iov_len;
            if (!tn_http_crlf_ok(&x->crlf_need, at, x->feed_end)) {
                evbuffer_drain(in, used);
                fail_try(x, TN_UPF_BAD_RESPONSE, "chunk not ended by CRLF");
                return false;
            }
            size_t n = http_parser_execute(&x->parser, &parser_settings, at, v[i].iov_len);
            enum http_errno err = HTTP_PARSER_ERRNO(&x->parser);
            if (err == HPE_PAUSED) {
                http_parser_pause(&x->parser, 0);
                err = HPE_OK;
            }
            used += n;
            if (err != HPE_OK) {
                evbuffer_drain(in, used);
                fail_try(x, TN_UPF_BAD_RESPONSE, http_errno_description(err));
                return false;
            }
            if (n < v[i].iov_len && !x->resp_done)
                break;
        }
        evbuffer_drain(in, used);
        if (!used)
            break;
    }
    if (x->job)
        deliver_head(x);
    if (x->resp_done) {
        /* bytes after the end: the upstream does not frame as we do */
        release_conn(x, evbuffer_get_length(in) == 0 && !x->parser.upgrade);
    } else if (evbuffer_get_length(x->rbody) >= RESP_HIGH && x->uc) {
        tn_up_conn_reading(x->uc, false);
        x->read_stopped = true;
    }
    if (x->stream_set && !x->stream_freed)
        tn_http_stream_wake(&x->stream);
    return true;
}

/* ---- the response stream (front end side) ----------------------------------------- */

static int stream_next(tn_http_stream *s, struct evbuffer *out)
{
    exchange *x = (exchange *)((char *)s - offsetof(exchange, stream));
    size_t n = evbuffer_get_length(x->rbody);
    if (n) {
        evbuffer_remove_buffer(x->rbody, out, n < PIECE ? n : PIECE);
        if (x->read_stopped && x->uc && evbuffer_get_length(x->rbody) < RESP_HIGH / 2) {
            x->read_stopped = false;
            tn_up_conn_reading(x->uc, true);
        }
        return 1;
    }
    if (x->resp_failed)
        return -1;
    if (x->resp_done)
        return 0;
    return TN_HTTP_STREAM_WAIT;
}

static void stream_free(tn_http_stream *s)
{
    exchange *x = (exchange *)((char *)s - offsetof(exchange, stream));
    x->stream_freed = true;
    x->r = NULL;
    if (x->uc && !x->resp_done) {
        /* the client went away mid-body: the rest would never be read */
        x->server->stats.active--;
        tn_up_conn_free(x->uc);
        x->uc = NULL;
    }
    exchange_maybe_free(x);
}

/* ---- upstream events ---------------------------------------------------------------- */

static void up_read(struct bufferevent *bev, void *arg)
{
    exchange *x = arg;
    x->got_byte = true;
    (void)bev;
    tn_http_pool_fill(x->uc, evbuffer_get_length(x->rbody), RESP_HIGH);
    parse_input(x);
}

static void up_write(struct bufferevent *bev, void *arg)
{
    exchange *x = arg;
    if (!x->uc->tls && !evbuffer_get_length(bufferevent_get_output(bev)))
        bufferevent_disable(bev, EV_WRITE); /* the next request is written directly (tn_http_pool_send) */
    if (x->sink_set && !x->sink_ended && x->r && x->r->body_sink)
        tn_http_body_resume(&x->sink);
    check_sent(x);
}

static void up_event(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    exchange *x = arg;
    if (what & BEV_EVENT_CONNECTED) {
        /* TLS handshake done */
        x->sending = true;
        bufferevent_write_buffer(x->uc->bev, x->head);
        body_to_upstream(x);
        check_sent(x);
        arm_read_timeout(x);
        return;
    }
    if (what & BEV_EVENT_TIMEOUT) {
        fail_try(x, (what & BEV_EVENT_READING) ? TN_UPF_TIMEOUT
                    : x->sending                ? TN_UPF_SEND_TIMEOUT
                                                : TN_UPF_CONNECT_TIMEOUT,
                 "timed out");
        return;
    }
    if ((what & BEV_EVENT_EOF) && x->head_done && !x->resp_done) {
        /* close-delimited bodies end here; anything else is cut short */
        if (http_body_is_final(&x->parser) || !(x->parser.flags & (F_CHUNKED | F_CONTENTLENGTH))) {
            http_parser_execute(&x->parser, &parser_settings, NULL, 0);
            if (x->resp_done) {
                release_conn(x, false);
                if (x->stream_set && !x->stream_freed)
                    tn_http_stream_wake(&x->stream);
                exchange_maybe_free(x);
                return;
            }
        }
    }
    fail_try(x, x->uc && x->uc->tls && !x->sending ? TN_UPF_TLS : x->sending ? TN_UPF_RESET : TN_UPF_CONNECT,
             (what & BEV_EVENT_EOF) ? "closed" : "connection error");
}

static void start_sending(exchange *x)
{
    tn_up_conn *uc = x->uc;
    tn_up_conn_setcb(uc, up_read, up_write, up_event, x);
    bufferevent_setwatermark(uc->bev, EV_WRITE, BODY_HIGH / 2, 0);
    tn_up_conn_reading(uc, true);
    if (uc->tls)
        bufferevent_enable(uc->bev, EV_WRITE);
    else
        bufferevent_disable(uc->bev, EV_WRITE); /* tn_http_pool_send enables it when the socket is full */
    if (uc->tls && !x->reused) {
        /* the handshake first (BEV_EVENT_CONNECTED), within connect_timeout */
        const tn_handler_conf *c = &x->p->h->conf;
        struct timeval ct = { c->connect_timeout / 1000, (c->connect_timeout % 1000) * 1000 };
        tn_up_conn_set_timeouts(uc, &ct, &ct);
        return;
    }
    x->sending = true;
    bufferevent_write_buffer(uc->bev, x->head);
    body_to_upstream(x);
    arm_read_timeout(x);
    check_sent(x);
    /* a body held back while connecting may have gone out whole, with no
     * write event to resume the client */
    if (x->uc && !evbuffer_get_length(bufferevent_get_output(uc->bev)) && x->sink_set && !x->sink_ended && x->r &&
        x->r->body_sink)
        tn_http_body_resume(&x->sink);
}

static void on_connect(tn_up_conn *uc, int reason, const char *detail)
{
    exchange *x = uc->arg;
    if (reason >= 0) {
        fail_try(x, reason, detail);
        return;
    }
    if (tn_http_pool_attach(uc, x->p->h->base, &x->p->tls) < 0) {
        fail_try(x, TN_UPF_CONNECT, "out of memory");
        return;
    }
    start_sending(x);
}

/* ---- tries ------------------------------------------------------------------------ */

static void backoff_done(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    try_next(arg);
}

static void fail_try(exchange *x, int reason, const char *detail)
{
    tn_upstream_server *s = x->server;
    bool stale = x->reused && !x->got_byte && !x->body_sent_any &&
                 (reason == TN_UPF_RESET || reason == TN_UPF_CONNECT);
    if (x->uc) {
        s->stats.active--;
        tn_up_conn_free(x->uc);
        x->uc = NULL;
    }
    x->sending = false;
    x->request_sent = false;
    if (x->head_done) {
        /* the client has (or is getting) the head: the body cannot be
         * completed, the connection to the client closes */
        tn_upstream_try_fail(x->p->group, s, reason);
        tn_warn("proxy %s: upstream %s failed mid-response: %s", x->p->h->name, s->name, detail);
        x->resp_failed = true;
        if (x->stream_set && !x->stream_freed)
            tn_http_stream_wake(&x->stream);
        if (x->job) {
            answer_error(x, 502, "Bad Gateway", 0);
        }
        exchange_maybe_free(x);
        return;
    }
    if (stale) {
        /* the server closed the pooled connection as we reused it: not its
         * fault, and the request never reached it; again on a fresh one */
        x->ntried--;
        tn_upstream_server_unref(s);
        x->server = NULL;
        try_next(x);
        return;
    }
    tn_upstream_try_fail(x->p->group, s, reason);
    tn_info("proxy %s: upstream %s: %s (%s)", x->p->h->name, s->name, tn_upstream_failure_name(reason), detail);
    const tn_handler_conf *c = &x->p->h->conf;
    bool retryable = (reason == TN_UPF_CONNECT || reason == TN_UPF_CONNECT_TIMEOUT || reason == TN_UPF_RESET ||
                      reason == TN_UPF_TLS) &&
                     !x->got_byte && !x->body_sent_any && (x->idempotent || c->retry_non_idempotent) &&
                     x->attempt < c->retries && x->r && x->job;
    if (retryable && (tn_now_us() - x->t0) / 1000 < c->retry_budget) {
        x->attempt++;
        int64_t ms = tn_upstream_backoff_ms(x->attempt, c->retry_backoff, c->retry_backoff_max);
        int64_t left = c->retry_budget - (tn_now_us() - x->t0) / 1000;
        if (ms > left)
            ms = left > 0 ? left : 0;
        tn_info("proxy %s: retry %d of %s %s in %lldms (upstream %s: %s)", x->p->h->name, x->attempt, x->r->method,
                x->r->target, (long long)ms, s->name, tn_upstream_failure_name(reason));
        tn_upstream_server_unref(s);
        x->server = NULL;
        struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };
        if (!x->timer)
            x->timer = evtimer_new(x->p->h->base, backoff_done, x);
        if (x->timer && evtimer_add(x->timer, &tv) == 0)
            return;
    }
    bool timeout = reason == TN_UPF_TIMEOUT || reason == TN_UPF_CONNECT_TIMEOUT || reason == TN_UPF_SEND_TIMEOUT;
    answer_error(x, timeout ? 504 : 502, timeout ? "Gateway Timeout" : "Bad Gateway", 0);
    exchange_maybe_free(x);
}

static void no_socket(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    fail_try(arg, TN_UPF_CONNECT, "no socket");
}

/* Starts a try on S (picked for X). */
static void try_start(exchange *x, tn_upstream_server *s)
{
    tn_upstream_server_ref(s);
    x->server = s;
    if (x->ntried < MAX_TRIES)
        x->tried[x->ntried++] = s;
    /* the head names the server (Host) unless preserve_host */
    evbuffer_drain(x->head, evbuffer_get_length(x->head));
    tn_http_proxy_request_head(x->head, x->r, &x->p->h->conf, s->name, x->https, &x->upgrade, &x->chunked_up);
    x->got_byte = false;
    x->head_done = false;
    x->sized = false;
    x->resp_done = false;
    x->crlf_need = 0;
    x->try_t0 = tn_now_us();
    s->stats.active++;
    x->uc = tn_http_pool_take(s);
    x->reused = x->uc != NULL;
    tn_upstream_try_begin(s, x->reused);
    if (x->uc) {
        x->uc->arg = x;
        start_sending(x);
        return;
    }
    x->uc = tn_http_pool_connect(x->p->h->base, s, x->p->h->conf.connect_timeout, false, on_connect, x);
    if (!x->uc) {
        /* out of descriptors: reported from the loop, as the front end
         * may still be inside the handler call */
        if (!x->nosock_ev)
            x->nosock_ev = event_new(x->p->h->base, -1, 0, no_socket, x);
        if (x->nosock_ev)
            event_active(x->nosock_ev, EV_TIMEOUT, 0);
    }
}

static tn_upstream_server *pick(exchange *x, int *retry_after)
{
    char kbuf[256];
    size_t klen = 0;
    const char *key = tn_http_proxy_hash_key(x->p->group, x->r, &klen, kbuf, sizeof(kbuf));
    return tn_upstream_pick(x->p->group, key, klen, x->tried, x->ntried, retry_after);
}

static void try_next(exchange *x)
{
    if (!x->r || !x->job) {
        exchange_maybe_free(x);
        return;
    }
    if (x->server) {
        tn_upstream_server_unref(x->server);
        x->server = NULL;
    }
    int retry_after = 0;
    tn_upstream_server *s = pick(x, &retry_after);
    if (!s) {
        answer_error(x, 502, "Bad Gateway", retry_after);
        exchange_maybe_free(x);
        return;
    }
    try_start(x, s);
}

/* ---- the exchange ----------------------------------------------------------------- */

static void exchange_maybe_free(exchange *x)
{
    if (x->job)
        return; /* the front end still waits for an answer */
    if (x->stream_set && !x->stream_freed)
        return;
    if (x->sink_set && !x->sink_ended)
        return;
    if (x->upgrade_pending)
        return;
    if (x->uc) {
        if (x->resp_done && x->request_sent)
            release_conn(x, true);
        else {
            x->server->stats.active--;
            tn_up_conn_free(x->uc);
            x->uc = NULL;
        }
    }
    if (x->server)
        tn_upstream_server_unref(x->server);
    if (x->timer)
        event_free(x->timer);
    if (x->nosock_ev)
        event_free(x->nosock_ev);
    free(x->rhead);
    tn_handler *h = x->h;
    tn_http_exchange_put(x->p, x);
    tn_handler_unref(h);
}

static void job_cancel(tn_job *job)
{
    exchange *x = job->hstate;
    /* the client is gone before the answer: nothing more to do upstream */
    x->job = NULL;
    x->r = NULL;
    if (x->timer)
        evtimer_del(x->timer);
    if (x->nosock_ev)
        event_del(x->nosock_ev);
    tn_job_done(job, TN_FAIL, "cancelled", 9);
    exchange_maybe_free(x);
}

static tn_result http_handle(tn_proxy *p, tn_call *call)
{
    tn_http_request *r = call->ctx.http;
    exchange *x = tn_http_exchange_new(p);
    if (!x) {
        evbuffer_add_printf(call->out, "out of memory");
        return TN_FAIL;
    }
    x->p = p;
    x->r = r;
    /* the first server is picked before the answer is deferred, so that
     * "none" is answered at once */
    int retry_after = 0;
    tn_upstream_server *s = pick(x, &retry_after);
    if (!s || !(x->job = tn_job_begin(call))) {
        tn_http_exchange_put(p, x);
        r->status = 502;
        if (retry_after > 0) {
            char v[16];
            snprintf(v, sizeof(v), "%d", retry_after);
            tn_http_set_header(r, "Retry-After", v);
        }
        evbuffer_add_printf(call->out, s ? "out of memory" : "Bad Gateway");
        return TN_FAIL;
    }
    x->h = p->h;
    tn_handler_ref(x->h);
    x->t0 = x->job->started_us; /* read by tn_job_begin just now */
    x->idempotent = tn_http_proxy_idempotent(r->method);
    x->https = call->ctx.tls != NULL;
    x->job->hstate = x;
    x->job->cancel = job_cancel;
    x->sink.data = sink_data;
    x->sink.end = sink_end;
    x->sink_set = true;
    r->body_sink = &x->sink;
    x->stream.next = stream_next;
    x->stream.free = stream_free;
    x->stream.compressible = true;
    try_start(x, s);
    return TN_LATER;
}

const tn_proxy_side tn_proxy_http = {
    .name = "http",
    .init = tn_http_side_init,
    .handle = http_handle,
    .destroy = tn_http_side_free,
};
const tn_proxy_side *const tn_proxy_http_side = &tn_proxy_http;
