/* SPDX-License-Identifier: MIT */
/* http.c - the HTTP/1.1 connection layer.
 *
 * Built on the same connections as the line protocol (net/conn.c); the
 * parser (http_parse.c) takes each request apart and hands it back here to
 * be dispatched.
 *
 * Responses leave in request order. A response produced while nothing is
 * outstanding goes straight to the connection's output; otherwise it waits in
 * the queue behind the ones still being computed. File bodies are added to
 * the output as file segments, which libevent sends with sendfile(2); a body
 * made while it is sent (r->stream: gzip of a large file) goes out a piece
 * per drained output, holding later responses and reading until it ends.
 * At most PIPELINE_MAX responses wait in the queue: further pipelined
 * requests stay unparsed until it drains, so a client cannot make the daemon
 * hold a file (or a response) per request it sends without reading.
 *
 * Errors in a request (400, 408, 413, 414, 431) answer and close: after a
 * malformed request the framing of the stream cannot be trusted. */
#include "proto/http.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "log.h"
#include "net/listener.h"
#include "net/relay.h"
#include "proto/http_conn.h"
#include "proto/upgrade.h"

#define OUTPUT_HIGH (256 * 1024)
/* Responses queued on one connection (computing or waiting to be sent)
 * before further pipelined requests are left unparsed: each may hold a file
 * descriptor (file bodies are opened at dispatch) and memory. */
#define PIPELINE_MAX 32

typedef struct tn_http_pending {
    struct tn_http_pending *next;
    tn_http_request *req;
    tn_job *job;      /* outstanding handler call */
    struct evbuffer *resp; /* the serialized response, once ready */
    size_t bytes;     /* its size so far (a streamed body follows) */
    bool ready;
    bool close_after;
    tn_conn *conn;
} pending;

static tn_http_conn *state_of(tn_conn *c)
{
    if (!c->fe_state)
        c->fe_state = calloc(1, sizeof(tn_http_conn));
    return c->fe_state;
}

/* ---- dates ------------------------------------------------------------------- */

static const char *http_date(tn_daemon *d)
{
    struct timeval tv;
    event_base_gettimeofday_cached(d->base, &tv);
    if (tv.tv_sec != d->http_date_sec) {
        struct tm tm;
        time_t t = tv.tv_sec;
        gmtime_r(&t, &tm);
        strftime(d->http_date, sizeof(d->http_date), "%a, %d %b %Y %H:%M:%S GMT", &tm);
        d->http_date_sec = tv.tv_sec;
    }
    return d->http_date;
}

/* ---- responses ------------------------------------------------------------------ */

/* Serializes R's response with BODY (moved) into OUT. Returns the body bytes
 * (what access logs report, as nginx's $body_bytes_sent: no head). */
static size_t serialize(tn_conn *c, tn_http_request *r, struct evbuffer *body, struct evbuffer *out, bool closing)
{
    int status = r->status ? r->status : 200;
    bool no_body = status < 200 || status == 204 || status == 304;
    /* a streamed body has no length: chunked, or (HTTP/1.0) up to the close;
     * a proxied one may have (the upstream's Content-Length) */
    bool streamed = r->stream && !no_body && !r->stream->has_length;
    size_t body_len = r->file_fd >= 0 ? (size_t)r->file_length
                      : r->stream && r->stream->has_length ? (size_t)r->stream->length
                                                           : evbuffer_get_length(body);
    /* "" as content type: the body's type is unknown (proxied), none is sent */
    bool no_ctype = r->content_type && !*r->content_type;
    tn_http_count_response(c->base.listener, r->router, r->route, status);
    tn_http_write_head(out, r, status, http_date(tn_conn_daemon(c)), body_len,
                       (streamed ? TN_HEAD_STREAMED : 0) | (no_body ? TN_HEAD_NO_BODY : 0) |
                           (no_ctype ? TN_HEAD_NO_CTYPE : 0) | (closing ? TN_HEAD_CLOSE : 0));
    if (no_body || r->head) {
        evbuffer_drain(body, evbuffer_get_length(body));
        if (r->stream) {
            r->stream->free(r->stream);
            r->stream = NULL;
        }
        return 0;
    }
    if (r->stream)
        return 0; /* the body follows piece by piece (stream_pump counts it) */
    if (r->file_fd >= 0) {
        /* libevent sends file segments with sendfile and closes the fd */
        if (r->file_length > 0) {
            evbuffer_add_file(out, r->file_fd, r->file_offset, r->file_length);
            c->file_out = 1;
        } else {
            close(r->file_fd);
        }
        r->file_fd = -1;
        return body_len;
    }
    evbuffer_add_buffer(out, body);
    return body_len;
}

static void count_response(tn_conn *c)
{
    c->base.msgs_out++;
    TN_COUNT(c->base.listener, messages_out, 1);
}

/* The route's middleware after the handler, in reverse order. Returns
 * whether the connection closes after the response: also when a streamed
 * body can only end with it (HTTP/1.0 has no chunked coding). */
static bool run_after(tn_http_request *r, struct evbuffer *body, bool close)
{
    const tn_http_route *route = r->route;
    if (route)
        for (size_t i = route->nmiddleware; i-- > 0;)
            tn_mw_after(route->middleware[i], r, body);
    return close || (r->stream && !r->stream->has_length && !r->head && !r->http_minor);
}

static void run_done(tn_http_request *r, uint64_t bytes)
{
    const tn_http_route *route = r->route;
    if (route)
        for (size_t i = 0; i < route->nmiddleware; i++)
            tn_mw_done(route->middleware[i], r, bytes);
}

/* The middleware after the handler, then the serialization; the request
 * is done with after this unless its body is streamed. */
static void finish(tn_conn *c, pending *p, struct evbuffer *body)
{
    tn_http_request *r = p->req;
    p->close_after = run_after(r, body, p->close_after);
    p->resp = evbuffer_new();
    p->bytes = p->resp ? serialize(c, r, body, p->resp, p->close_after) : 0;
    if (!p->resp && r->stream) {
        r->stream->free(r->stream);
        r->stream = NULL;
    }
    if (!r->stream)
        run_done(r, p->bytes);
    p->ready = true;
}

/* ---- streamed bodies -------------------------------------------------------------
 *
 * The head goes out like any other; the body is made a piece at a time,
 * and the next piece only once the output has drained, so a slow reader
 * holds one piece here and the socket's buffer, never the whole body.
 * Pieces are made from a deferred event rather than from the drain
 * itself: the end of a body resumes reading, and a new stream must not
 * start inside the call chain of the last one. */

static void queue_flush(tn_conn *c);

static void stream_end(tn_conn *c, tn_http_conn *hc, bool failed)
{
    tn_http_request *r = hc->sreq;
    hc->sreq = NULL;
    run_done(r, hc->sbytes);
    tn_http_request_free(r);
    if (failed) {
        tn_warn("connection %llu: response body failed (file read error)", (unsigned long long)c->base.session.id);
        tn_conn_close(c, "response body failed");
    } else if (hc->sclose) {
        tn_conn_close_after_flush(c, NULL);
    } else {
        queue_flush(c);
        if (!c->base.dead)
            tn_conn_resume_input(c);
    }
}

/* The piece made (LEN bytes in hc->piece) to the output, framed; LAST: the
 * stream ended with it. */
static void put_piece(tn_conn *c, tn_http_conn *hc, size_t len, bool last)
{
    struct evbuffer *out = tn_conn_output(c);
    if (len && hc->schunked)
        evbuffer_add_printf(out, "%zx\r\n", len);
    evbuffer_add_buffer(out, hc->piece);
    if (len && hc->schunked)
        evbuffer_add(out, "\r\n", 2);
    if (last && hc->schunked)
        evbuffer_add(out, "0\r\n\r\n", 5);
}

/* Makes and writes pieces while the socket takes all of them; the next
 * drain of the output comes back here (http_drained). */
static void stream_pump(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    tn_conn *c = arg;
    tn_http_conn *hc = c->fe_state;
    if (c->base.dead || !hc || !hc->sreq)
        return;
    tn_http_stream *st = hc->sreq->stream;
    if (hc->send) {
        stream_end(c, hc, hc->send < 0);
        return;
    }
    int rc = 1;
    hc->pumping = true;
    while (rc > 0 && rc != TN_HTTP_STREAM_WAIT && !tn_conn_unsent(c)) {
        rc = st->next(st, hc->piece);
        size_t len = evbuffer_get_length(hc->piece);
        if (rc < 0) {
            evbuffer_drain(hc->piece, len);
            break;
        }
        if (rc == TN_HTTP_STREAM_WAIT && !len) {
            /* nothing to write: drains of this or another connection's
             * output must not spin the pump (tn_http_stream_wake does) */
            hc->swaiting = true;
            break;
        }
        put_piece(c, hc, len, rc == 0);
        if (rc == TN_HTTP_STREAM_WAIT)
            break; /* tn_http_stream_wake() brings us back */
        hc->sbytes += len;
        tn_conn_flush(c);
        if (c->base.dead)
            return; /* hc went with it */
    }
    hc->pumping = false;
    if (rc <= 0)
        stream_end(c, hc, rc < 0);
}

void tn_http_stream_wake(tn_http_stream *s)
{
    tn_conn *c = s->fe;
    tn_http_conn *hc = c && !c->base.dead ? c->fe_state : NULL;
    if (!hc || !hc->sreq)
        return; /* S, or the stream wrapping it (gzip), is sreq's */
    hc->swaiting = false;
    if (!hc->pumping)
        event_active(hc->pump_ev, EV_TIMEOUT, 0);
}

/* The piece the stream has ready joins the head in the output, so that a
 * short body leaves with its head in one write (the caller flushes); the
 * rest, and the end, come from the pump, outside this call chain. */
static void stream_first(tn_conn *c, tn_http_conn *hc)
{
    tn_http_stream *st = hc->sreq->stream;
    hc->pumping = true;
    int rc = st->next(st, hc->piece);
    hc->pumping = false;
    size_t len = evbuffer_get_length(hc->piece);
    if (rc < 0) {
        evbuffer_drain(hc->piece, len);
        hc->send = -1;
    } else if (rc == TN_HTTP_STREAM_WAIT && !len) {
        hc->swaiting = true;
        return; /* tn_http_stream_wake() starts the pump */
    } else {
        put_piece(c, hc, len, rc == 0);
        if (rc != TN_HTTP_STREAM_WAIT)
            hc->sbytes += len;
        if (rc == 0)
            hc->send = 1;
    }
    event_active(hc->pump_ev, EV_TIMEOUT, 0);
}

/* R's head is in the output; its body (r->stream) follows. R stays alive
 * until the body is sent (its route's middleware log it then). */
static void stream_start(tn_conn *c, tn_http_conn *hc, tn_http_request *r, bool close)
{
    if (!hc->pump_ev) {
        hc->pump_ev = event_new(tn_conn_daemon(c)->base, -1, 0, stream_pump, c);
        hc->piece = evbuffer_new();
        if (!hc->pump_ev || !hc->piece) {
            tn_http_request_free(r);
            tn_conn_close(c, "out of memory");
            return;
        }
    }
    hc->sreq = r;
    hc->sbytes = 0;
    hc->sclose = close;
    hc->schunked = r->http_minor >= 1 && !r->stream->has_length;
    hc->swaiting = false;
    hc->send = 0;
    r->stream->fe = c;
    stream_first(c, hc);
}

static void http_drained(tn_conn *c)
{
    tn_http_conn *hc = c->fe_state;
    if (hc && hc->sreq && !hc->pumping && !hc->swaiting)
        event_active(hc->pump_ev, EV_TIMEOUT, 0);
}

/* R's 101 is in the output: the connection becomes the handler's (a
 * proxied WebSocket), with whatever the client sent after its head. */
static void handover(tn_conn *c, tn_http_request *r)
{
    tn_http_upgrade_fn fn = r->on_upgrade;
    void *arg = r->upgrade_arg;
    r->on_upgrade = NULL;
    size_t len = c->in ? evbuffer_get_length(c->in) : 0;
    char *copy = malloc(len + strlen(r->path) + 1);
    tn_http_handover ho = { .from = &c->base, .fd = -1 };
    if (copy) {
        ho.path = strcpy(copy + len, r->path);
        ho.data = copy;
    }
    run_done(r, 0);
    tn_http_request_free(r);
    tn_conn_flush(c);
    if (!c->base.dead && (tn_conn_unsent(c) || !copy))
        tn_conn_close(c, copy ? "upgrade behind unsent output" : "out of memory");
    tn_conn_info info = { .local = "" };
    if (!c->base.dead) {
        if (len)
            evbuffer_copyout(c->in, copy, len);
        ho.len = len;
        c->base.kind->describe(&c->base, &info); /* while the socket is still the connection's */
        ho.local = info.local;
        ho.fd = c->tp->plain ? tn_conn_take_fd(c) : tn_relay_start(c);
    }
    fn(arg, &ho);
    free(copy);
}

static void queue_flush(tn_conn *c)
{
    tn_http_conn *hc = c->fe_state;
    bool close = false;
    while (hc && hc->head && hc->head->ready && !hc->sreq) {
        pending *p = hc->head;
        hc->head = p->next;
        if (!hc->head)
            hc->tail = NULL;
        hc->queued--;
        if (p->resp) {
            evbuffer_add_buffer(tn_conn_output(c), p->resp);
            evbuffer_free(p->resp);
        }
        count_response(c);
        if (p->req->on_upgrade && p->req->status == 101) {
            tn_http_request *r = p->req;
            free(p);
            handover(c, r);
            return;
        }
        if (p->req->stream) {
            stream_start(c, hc, p->req, p->close_after);
            free(p);
            tn_conn_flush(c);
            return;
        }
        close |= p->close_after;
        tn_http_request_free(p->req);
        free(p);
        if (close)
            break;
    }
    if (hc && !hc->head)
        hc->upgrade_wait = false; /* answered without switching: read on */
    if (close)
        tn_conn_close_after_flush(c, NULL);
    else if (hc && !hc->head && tn_conn_daemon(c)->stopping)
        c->closing = 1;
    tn_conn_flush(c);
    /* the flush resumes input paused for output once that is written; input
     * paused for a full pipeline with nothing to write resumes here */
    if (!c->base.dead && c->read_paused && hc && hc->queued < PIPELINE_MAX && !hc->sreq && !tn_conn_unsent(c))
        tn_conn_resume_input(c);
}

/* A response made now for a request nothing is outstanding before: straight
 * to the output, no queue entry. */
static bool respond_direct(tn_conn *c, tn_http_request *r, struct evbuffer *body, bool close)
{
    tn_http_conn *hc = c->fe_state;
    if (hc->head || hc->sreq)
        return false;
    close = run_after(r, body, close);
    size_t bytes = serialize(c, r, body, tn_conn_output(c), close);
    count_response(c);
    if (r->stream) {
        stream_start(c, hc, r, close);
        return true;
    }
    run_done(r, bytes);
    tn_http_request_free(r);
    if (close)
        tn_conn_close_after_flush(c, NULL);
    return true;
}

static pending *enqueue(tn_conn *c, tn_http_request *r, bool close)
{
    tn_http_conn *hc = c->fe_state;
    pending *p = tn_zalloc(sizeof(*p));
    if (!p)
        return NULL;
    p->req = r;
    p->conn = c;
    p->close_after = close;
    hc->queued++;
    if (hc->tail)
        hc->tail->next = p;
    else
        hc->head = p;
    hc->tail = p;
    return p;
}

/* Answer R (status and small text body) in order, optionally closing. */
static void respond_simple(tn_conn *c, tn_http_request *r, int status, const char *text, bool close)
{
    struct evbuffer *body = tn_conn_daemon(c)->scratch;
    evbuffer_drain(body, evbuffer_get_length(body));
    r->status = status;
    /* the listener's middleware still sees errors: logs, CORS, headers */
    r->route = tn_http_router_fallback(r->router);
    if (text)
        evbuffer_add_printf(body, "%s\n", text);
    if (respond_direct(c, r, body, close))
        return;
    pending *p = enqueue(c, r, close);
    if (!p) {
        tn_http_request_free(r);
        tn_conn_close(c, "out of memory");
        return;
    }
    finish(c, p, body);
    queue_flush(c);
}

static void job_complete(tn_job *job, tn_result res, const char *data, size_t len)
{
    pending *p = job->fe;
    tn_conn *c = p->conn;
    tn_http_request *r = p->req;
    p->job = NULL;
    struct evbuffer *body = tn_conn_daemon(c)->scratch;
    evbuffer_drain(body, evbuffer_get_length(body));
    if (res == TN_FAIL) {
        if (r->status < 400)
            r->status = 500;
        r->content_type = NULL;
        evbuffer_add(body, "Error: ", 7);
        evbuffer_add(body, data, len);
        evbuffer_add(body, "\n", 1);
    } else if (res == TN_SILENT) {
        if (!r->status)
            r->status = 204;
    } else {
        evbuffer_add(body, data, len);
    }
    finish(c, p, body);
    queue_flush(c);
}

/* ---- dispatch ------------------------------------------------------------------- */

static void count_refusal(tn_conn *c, int status)
{
    tn_listener *l = c->base.listener;
    int reason = -1;
    if (status == 413 || status == 414 || status == 431)
        reason = TN_REJ_TOO_LARGE;
    else if (status == 429)
        reason = TN_REJ_RATE_LIMIT;
    if (reason >= 0) {
        TN_COUNT(l, rejected[reason], 1);
    } else if (status == 400) {
        TN_COUNT(l, connection_errors, 1);
    }
}

void tn_http_dispatch(tn_conn *c, tn_http_request *r, bool not_found, const tn_http_route *route, const char *allow)
{
    tn_listener *l = c->base.listener;
    bool close = !r->keep_alive || tn_conn_daemon(c)->stopping || l->draining;
    struct evbuffer *body = tn_conn_daemon(c)->scratch;
    evbuffer_drain(body, evbuffer_get_length(body));
    c->base.msgs_in++;
    TN_COUNT(l, messages_in, 1);
    if (not_found) {
        respond_simple(c, r, 404, "Not Found", close);
        return;
    }
    if (!route) {
        if (allow) {
            tn_http_set_header(r, "Allow", allow);
            respond_simple(c, r, 405, "Method Not Allowed", close);
        } else {
            respond_simple(c, r, 404, "Not Found", close);
        }
        return;
    }
    r->route = route;
    for (size_t i = 0; i < route->nmiddleware; i++) {
        if (tn_mw_before(route->middleware[i], r, body) == TN_MW_RESPOND) {
            count_refusal(c, r->status);
            if (!respond_direct(c, r, body, close)) {
                pending *p = enqueue(c, r, close);
                if (!p) {
                    tn_http_request_free(r);
                    tn_conn_close(c, "out of memory");
                    return;
                }
                finish(c, p, body);
                queue_flush(c);
            }
            return;
        }
    }
    tn_call call = {0};
    call.handler = route->handler;
    size_t blen = r->body ? evbuffer_get_length(r->body) : 0;
    call.payload = blen ? (const char *)evbuffer_pullup(r->body, -1) : "";
    call.len = blen;
    call.ctx = (tn_msg_ctx){
        .listener = l->name,
        .conn_id = c->base.session.id,
        .protocol = TN_PROTO_HTTP,
        .remote = &c->base.remote.sa,
        .remote_len = c->base.remote.sa.sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in),
        .remote_addr = r->remote_addr,
        .session = &c->base.session,
        .http = r,
        .tls = tn_conn_tls_info(c),
    };
    call.out = body;
    tn_result res = tn_handler_call(&call);
    if (res == TN_LATER) {
        pending *p = call.job ? enqueue(c, r, close) : NULL;
        if (!p) {
            if (call.job)
                tn_job_cancel(call.job);
            tn_http_request_free(r);
            tn_conn_close(c, "out of memory");
            return;
        }
        p->job = call.job;
        call.job->fe = p;
        call.job->complete = job_complete;
        tn_http_conn *hc = c->fe_state;
        if (hc->early && r->body_sink) {
            hc->sink = r->body_sink;
            hc->sink->fe = c;
        }
        return;
    }
    if (res == TN_FAIL) {
        /* "Error: DETAIL" like every other front end, as a 500 unless the
         * handler chose a status */
        evbuffer_prepend(body, "Error: ", 7);
        evbuffer_add(body, "\n", 1);
        if (r->status < 400)
            r->status = 500;
        r->content_type = NULL;
    } else if (res == TN_SILENT && !r->status) {
        r->status = 204;
    }
    if (!respond_direct(c, r, body, close)) {
        pending *p = enqueue(c, r, close);
        if (!p) {
            tn_http_request_free(r);
            tn_conn_close(c, "out of memory");
            return;
        }
        finish(c, p, body);
        queue_flush(c);
    }
}

void tn_http_fail_request(tn_conn *c, tn_http_conn *hc, int status, const char *text)
{
    if (hc->early) {
        /* its answer is the handler's, maybe already under way: the body
         * cannot be completed, nor the stream's framing trusted */
        tn_http_sink_finish(hc, false);
        hc->state = TN_HTTP_DONE;
        count_refusal(c, status);
        tn_debug("connection %llu: request body failed (%d %s)", (unsigned long long)c->base.session.id, status, text);
        tn_conn_close(c, NULL);
        return;
    }
    tn_http_request *r = hc->cur;
    hc->cur = NULL;
    hc->state = TN_HTTP_DONE;
    if (!r && !(r = tn_http_request_new(c, hc))) {
        tn_conn_close(c, "out of memory");
        return;
    }
    if (!r->http_minor && !r->http_major)
        r->http_minor = 1;
    r->head = false;
    c->base.msgs_in++;
    TN_COUNT(c->base.listener, messages_in, 1);
    count_refusal(c, status);
    respond_simple(c, r, status, text, true);
}

/* Hands the socket to the WebSocket layer with every byte read from the
 * upgrade request's head on (d->upgrade is set: the request was checked
 * through it). */
static void upgrade(tn_conn *c, tn_http_conn *hc, const char *data, size_t len)
{
    const tn_ws_conf *ep = hc->upgrade;
    hc->upgrade = NULL;
    tn_conn_flush(c); /* earlier answers in the same read go first */
    if (c->base.dead)
        return;
    if (tn_conn_unsent(c)) {
        tn_conn_close(c, "WebSocket upgrade behind unsent output");
        return;
    }
    tn_listener *l = c->base.listener;
    tn_daemon *d = tn_conn_daemon(c);
    tn_sockaddr remote = c->base.remote;
    socklen_t rlen = remote.sa.sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    /* DATA may point into the connection's input buffer, which ending the
     * record frees */
    char *copy = malloc(len ? len : 1);
    if (!copy) {
        tn_conn_close(c, "out of memory");
        return;
    }
    memcpy(copy, data, len);
    tn_ws_origin from = { &remote.sa, rlen, NULL, NULL };
    char local[80] = "";
    evutil_socket_t fd;
    if (!c->tp->plain) {
        /* the TLS session stays here; lws gets the plain stream */
        tn_sockaddr la;
        socklen_t ll = sizeof(la);
        if (getsockname(c->fd, &la.sa, &ll) == 0)
            tn_addr_format(&la.sa, local, sizeof(local));
        from.local = local;
        from.tls = tn_conn_tls_info(c);
        fd = tn_relay_start(c);
    } else {
        fd = tn_conn_take_fd(c);
    }
    if (fd >= 0)
        d->upgrade->take(d, l, ep, fd, &from, copy, len);
    free(copy);
}

static size_t http_input(tn_conn *c, const char *data, size_t len)
{
    tn_http_conn *hc = state_of(c);
    if (!hc) {
        tn_conn_close(c, "out of memory");
        return len;
    }
    const tn_limits *lim = tn_listener_limits(c->base.listener);
    size_t used = 0;
    while (used < len) {
        if (c->base.dead || c->closing || hc->state == TN_HTTP_DONE)
            return len;
        if (hc->sreq && !(hc->early && hc->state == TN_HTTP_BODY)) {
            /* one streamed body at a time: the next request waits (a
             * proxied request's own body goes on meanwhile) */
            tn_conn_pause_input(c);
            break;
        }
        const char *d = data + used;
        size_t left = len - used;
        if (hc->state == TN_HTTP_BODY) {
            used += tn_http_feed_body(c, hc, d, left);
            continue;
        }
        /* skip the empty lines some clients send between requests */
        if (*d == '\r' || *d == '\n') {
            used++;
            continue;
        }
        if (hc->queued >= PIPELINE_MAX || hc->upgrade_wait) {
            /* the next request waits in the input (and the socket) until
             * earlier responses are out, as with nginx and HAProxy, which
             * parse one request at a time */
            tn_conn_pause_input(c);
            break;
        }
        if (!hc->head_start_us)
            hc->head_start_us = tn_http_loop_us(c);
        const char *end = NULL;
        size_t hlen = 0;
        for (const char *p = memchr(d, '\n', left); p; p = memchr(p + 1, '\n', (size_t)(d + left - p - 1))) {
            if (p + 1 < d + left && p[1] == '\n') {
                end = p + 2;
                break;
            }
            if (p + 2 < d + left && p[1] == '\r' && p[2] == '\n') {
                end = p + 3;
                break;
            }
            if (p + 1 >= d + left)
                break;
        }
        if (!end) {
            const char *eol = memchr(d, '\n', left);
            if (!eol && left > TN_HTTP_MAX_URI + 32) {
                tn_http_fail_request(c, hc, 414, "URI Too Long");
                return len;
            }
            if ((int64_t)left > lim->max_header) {
                tn_http_fail_request(c, hc, eol ? 431 : 414, eol ? "Request Header Fields Too Large" : "URI Too Long");
                return len;
            }
            int64_t elapsed_ms = (tn_http_loop_us(c) - hc->head_start_us) / 1000;
            if (lim->header_timeout && elapsed_ms >= lim->header_timeout) {
                TN_COUNT(c->base.listener, timeout_errors, 1);
                tn_http_fail_request(c, hc, 408, "Request Timeout");
                return len;
            }
            break; /* wait for the rest of the head */
        }
        hlen = (size_t)(end - d);
        if ((int64_t)hlen > lim->max_header) {
            tn_http_fail_request(c, hc, 431, "Request Header Fields Too Large");
            return len;
        }
        hc->head_start_us = 0;
        tn_http_begin_request(c, hc, d, hlen);
        if (hc->upgrade && !c->base.dead) {
            upgrade(c, hc, d, left);
            return len;
        }
        used += hlen;
        if (c->base.dead)
            return len;
        if (tn_conn_unsent(c) > OUTPUT_HIGH) {
            tn_conn_pause_input(c);
            break;
        }
    }
    return used;
}

/* Mid-request timeouts: the head must be complete header_timeout after its
 * first byte however slowly it trickles in (slowloris), the body
 * read_timeout after its first byte (the wait for that byte is read_timeout
 * too). -1 when no request is being received. */
static int64_t http_partial_timeout(const tn_conn *c)
{
    const tn_http_conn *hc = c->fe_state;
    const tn_limits *lim = tn_listener_limits(c->base.listener);
    if (!hc) /* nothing received yet: the first request is held to header_timeout */
        return lim->header_timeout ? lim->header_timeout : -1;
    if (hc->state == TN_HTTP_BODY) {
        if (!hc->body_start_us || !lim->read_timeout)
            return lim->read_timeout;
        int64_t left = lim->read_timeout - (tn_http_loop_us(c) - hc->body_start_us) / 1000;
        return left > 1 ? left : 1;
    }
    if (hc->head_start_us && lim->header_timeout) {
        int64_t left = lim->header_timeout - (tn_http_loop_us(c) - hc->head_start_us) / 1000;
        return left > 1 ? left : 1;
    }
    return -1;
}

static bool http_timed_out(tn_conn *c)
{
    tn_http_conn *hc = c->fe_state;
    if (hc && hc->state != TN_HTTP_DONE && (hc->head_start_us || hc->state == TN_HTTP_BODY)) {
        tn_http_fail_request(c, hc, 408, "Request Timeout");
        tn_conn_flush(c);
        return true;
    }
    return false;
}

static bool http_busy(const tn_conn *c)
{
    const tn_http_conn *hc = c->fe_state;
    return hc && (hc->head || hc->sreq);
}

static int http_push(tn_conn *c, const char *data, size_t len)
{
    /* plain HTTP has no way to push outside a response */
    (void)c;
    (void)data;
    (void)len;
    return 0;
}

static void http_release(tn_conn *c)
{
    tn_http_conn *hc = c->fe_state;
    if (!hc)
        return;
    while (hc->head) {
        pending *p = hc->head;
        hc->head = p->next;
        if (p->job)
            tn_job_cancel(p->job);
        if (p->resp)
            evbuffer_free(p->resp);
        tn_http_request_free(p->req);
        free(p);
    }
    /* after the jobs are cancelled: nothing is answered to this connection */
    if (hc->early)
        tn_http_sink_finish(hc, false);
    tn_http_request_free(hc->cur);
    tn_http_request_free(hc->sreq);
    if (hc->pump_ev)
        event_free(hc->pump_ev);
    if (hc->piece)
        evbuffer_free(hc->piece);
    free(hc);
    c->fe_state = NULL;
}

/* FIN in the middle of a proxied body: the body cannot be completed. */
static void http_peer_done(tn_conn *c)
{
    tn_http_conn *hc = c->fe_state;
    if (hc && hc->early && hc->state == TN_HTTP_BODY)
        tn_http_fail_request(c, hc, 400, "Bad Request");
}

const tn_frontend tn_http_frontend = {
    .name = "http",
    .input = http_input,
    .busy = http_busy,
    .push = http_push,
    .release = http_release,
    .partial_timeout = http_partial_timeout,
    .timed_out = http_timed_out,
    .drained = http_drained,
    .peer_done = http_peer_done,
};
