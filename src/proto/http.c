/* SPDX-License-Identifier: MIT */
/* http.c - the HTTP/1.1 connection layer.
 *
 * Built on the same connections as the line protocol (net/conn.c) with
 * libhttp-parser doing the parsing. A request head is only parsed once it is
 * complete (its size is bounded by max_header, so waiting costs at most
 * that); it is then copied into the request's arena so that the request can
 * outlive the input buffer (pipelining, asynchronous handlers). Bodies stream
 * through the parser, which also undoes chunked encoding, into the request.
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

#include <ctype.h>
#include <errno.h>
#include <http_parser.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "net/listener.h"
#include "net/relay.h"
#include "proto/ws.h"

#define MAX_URI 8192
#define MAX_HEADERS 100
#define OUTPUT_HIGH (256 * 1024)
/* Responses queued on one connection (computing or waiting to be sent)
 * before further pipelined requests are left unparsed: each may hold a file
 * descriptor (file bodies are opened at dispatch) and memory. */
#define PIPELINE_MAX 32

/* ---- arena -------------------------------------------------------------- */

typedef struct chunk {
    struct chunk *next;
    size_t used, cap;
    char data[];
} chunk;

static void *arena_alloc(tn_http_request *r, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    chunk *c = r->arena;
    if (!c || c->cap - c->used < n) {
        size_t cap = n > 2048 ? n : 2048;
        chunk *nc = malloc(sizeof(chunk) + cap);
        if (!nc)
            return NULL;
        nc->used = 0;
        nc->cap = cap;
        nc->next = c;
        r->arena = nc;
        c = nc;
    }
    void *p = c->data + c->used;
    c->used += n;
    return p;
}

const char *tn_http_strdup(tn_http_request *r, const char *s, size_t len)
{
    char *p = arena_alloc(r, len + 1);
    if (!p)
        return "";
    memcpy(p, s, len);
    p[len] = '\0';
    return p;
}

/* ---- request / response helpers -------------------------------------------- */

const char *tn_http_header_get(const tn_http_request *r, const char *name)
{
    for (size_t i = 0; i < r->nheaders; i++)
        if (strcasecmp(r->headers[i].name, name) == 0)
            return r->headers[i].value;
    return NULL;
}

static bool path_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c && strchr("-._~!$&'()*+,;=:@/", c));
}

static bool query_char(unsigned char c)
{
    return c > 0x20 && c < 0x7f && !strchr("\"<>\\^`{|}#", c);
}

void tn_http_add_escaped(struct evbuffer *out, const char *s, enum tn_http_escape what)
{
    static const char hexd[] = "0123456789ABCDEF";
    bool (*keep)(unsigned char) = what == TN_HTTP_ESC_PATH ? path_char : query_char;
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        const unsigned char *run = p;
        while (*p && keep(*p))
            p++;
        if (p > run)
            evbuffer_add(out, run, (size_t)(p - run));
        if (*p) {
            char e[3] = { '%', hexd[*p >> 4], hexd[*p & 15] };
            evbuffer_add(out, e, 3);
            p++;
        }
    }
}

const char *tn_http_param(const tn_http_request *r, const char *name)
{
    for (size_t i = 0; i < r->nparams; i++)
        if (strcmp(r->param_names[i], name) == 0)
            return r->param_values[i];
    return NULL;
}

/* A CR or LF in a response header would end the head early and let whoever
 * chose the value (a client, a CGI program) write headers of their own. */
static bool header_safe(const char *name, const char *value)
{
    return !strpbrk(name, "\r\n:") && *name && !strpbrk(value, "\r\n");
}

void tn_http_add_header(tn_http_request *r, const char *name, const char *value)
{
    if (!header_safe(name, value)) {
        tn_debug("response header '%s' dropped: CR, LF or a bad name", name);
        return;
    }
    if (r->nresp == r->resp_cap) {
        size_t cap = r->resp_cap ? r->resp_cap * 2 : 8;
        tn_http_header *h = arena_alloc(r, cap * sizeof(*h));
        if (!h)
            return;
        if (r->nresp)
            memcpy(h, r->resp_headers, r->nresp * sizeof(*h));
        r->resp_headers = h;
        r->resp_cap = cap;
    }
    r->resp_headers[r->nresp].name = tn_http_strdup(r, name, strlen(name));
    r->resp_headers[r->nresp].value = tn_http_strdup(r, value, strlen(value));
    r->nresp++;
}

void tn_http_remove_header(tn_http_request *r, const char *name)
{
    size_t j = 0;
    for (size_t i = 0; i < r->nresp; i++)
        if (strcasecmp(r->resp_headers[i].name, name) != 0)
            r->resp_headers[j++] = r->resp_headers[i];
    r->nresp = j;
}

void tn_http_set_header(tn_http_request *r, const char *name, const char *value)
{
    if (strcasecmp(name, "Content-Type") == 0) {
        if (!header_safe(name, value))
            return;
        r->content_type = tn_http_strdup(r, value, strlen(value));
        return;
    }
    tn_http_remove_header(r, name);
    tn_http_add_header(r, name, value);
}

const char *tn_http_resp_header_get(const tn_http_request *r, const char *name)
{
    if (strcasecmp(name, "Content-Type") == 0)
        return r->content_type;
    for (size_t i = 0; i < r->nresp; i++)
        if (strcasecmp(r->resp_headers[i].name, name) == 0)
            return r->resp_headers[i].value;
    return NULL;
}

bool tn_http_list_has(const char *list, const char *token, bool star)
{
    size_t tl = strlen(token);
    for (const char *p = list; p && *p;) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        const char *e = p;
        while (*e && *e != ',')
            e++;
        const char *t = e;
        while (t > p && (t[-1] == ' ' || t[-1] == '\t'))
            t--;
        if ((size_t)(t - p) == tl && strncasecmp(p, token, tl) == 0)
            return true;
        if (star && t - p == 1 && *p == '*')
            return true;
        p = e;
    }
    return false;
}

void tn_http_vary_add(tn_http_request *r, const char *token)
{
    const char *cur = tn_http_resp_header_get(r, "Vary");
    if (!cur) {
        tn_http_add_header(r, "Vary", token);
        return;
    }
    if (tn_http_list_has(cur, token, true))
        return;
    size_t a = strlen(cur), b = strlen(token);
    char buf[512];
    if (a + b + 3 > sizeof(buf))
        return;
    memcpy(buf, cur, a);
    memcpy(buf + a, ", ", 2);
    memcpy(buf + a + 2, token, b + 1);
    tn_http_set_header(r, "Vary", buf);
}

const char *tn_http_reason(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 411: return "Length Required";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 416: return "Range Not Satisfiable";
    case 417: return "Expectation Failed";
    case 426: return "Upgrade Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return status < 200 ? "Informational" : status < 300 ? "OK" : status < 400 ? "Redirect"
                    : status < 500 ? "Client Error" : "Server Error";
    }
}

static void request_free(tn_http_request *r)
{
    if (!r)
        return;
    if (r->router)
        tn_http_router_unref(r->router);
    if (r->body)
        evbuffer_free(r->body);
    if (r->file_fd >= 0)
        close(r->file_fd);
    if (r->stream)
        r->stream->free(r->stream);
    chunk *c = r->arena;
    while (c) {
        chunk *n = c->next;
        free(c);
        c = n;
    }
    free(r);
}

/* ---- per-connection state ----------------------------------------------------- */

typedef struct pending {
    struct pending *next;
    tn_http_request *req;
    tn_job *job;      /* outstanding handler call */
    struct evbuffer *resp; /* the serialized response, once ready */
    size_t bytes;     /* its size so far (a streamed body follows) */
    bool ready;
    bool close_after;
    tn_conn *conn;
} pending;

enum { ST_HEAD, ST_BODY, ST_DONE };

typedef struct http_conn {
    http_parser parser;
    int state;
    tn_http_request *cur;   /* being received */
    int64_t head_start_us;  /* first byte of the current head (slowloris) */
    /* header parsing scratch: the callbacks see pieces of the arena copy */
    const char *field, *value;
    size_t field_len, value_len;
    int content_lengths, transfer_encodings, hosts;
    bool te_chunked_last;
    /* chunk data must end with CRLF; http_parser (not built strict) takes
     * any two bytes there, which smuggles bytes past other parsers */
    int crlf_need;
    const char *feed_end;   /* end of the bytes being parsed */
    bool message_complete;
    int error;              /* status to answer with, 0 = none */
    bool path_above_root;   /* the current request's path climbed above '/' */
    const tn_http_route *route; /* matched when the head arrived (its limits apply to the body) */
    int64_t max_body;
    const char *allow;      /* for a 405 */
    const tn_ws_conf *upgrade; /* the head just parsed upgrades to this WebSocket endpoint */
    pending *head, *tail;
    /* a response whose body is being made as it is sent (r->stream): while
     * it lasts, later responses wait and no further request is read */
    tn_http_request *sreq;
    struct event *pump_ev;  /* makes the next piece, from the loop */
    struct evbuffer *piece;
    uint64_t sbytes;        /* body bytes of sreq sent so far, without chunk framing (access log) */
    bool sclose, schunked, pumping;
    size_t queued;          /* entries in head..tail */
    int64_t body_start_us;  /* first byte of the current body (its read_timeout deadline) */
} http_conn;

static const http_parser_settings parser_settings;

/* The loop's cached time: the head deadline needs milliseconds, not a clock
 * read per request. */
static int64_t loop_us(const tn_conn *c)
{
    struct timeval tv;
    event_base_gettimeofday_cached(c->d->base, &tv);
    return (int64_t)tv.tv_sec * 1000000 + tv.tv_usec;
}

static http_conn *state_of(tn_conn *c)
{
    if (!c->fe_state)
        c->fe_state = calloc(1, sizeof(http_conn));
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
    /* a streamed body has no length: chunked, or (HTTP/1.0) up to the close */
    bool streamed = r->stream && !no_body;
    size_t body_len = r->file_fd >= 0 ? (size_t)r->file_length : evbuffer_get_length(body);
    tn_http_count_response(c->listener, r->router, r->route, status);
    /* built with memcpy rather than printf: this runs for every response */
    char head[512];
    size_t n = 0;
    const char *reason = tn_http_reason(status);
    const char *ctype = r->content_type ? r->content_type : "text/plain; charset=utf-8";
    const char *date = http_date(c->d);
    size_t rl = strlen(reason), dl = strlen(date), cl = strlen(ctype);
    if (rl + dl + cl < sizeof(head) - 128) {
        memcpy(head, r->http_minor ? "HTTP/1.1 " : "HTTP/1.0 ", 9);
        n = 9; /* both literals are 9 bytes */
        head[n++] = (char)('0' + status / 100);
        head[n++] = (char)('0' + status / 10 % 10);
        head[n++] = (char)('0' + status % 10);
        head[n++] = ' ';
        memcpy(head + n, reason, rl);
        n += rl;
#define ADD_LIT(lit) (memcpy(head + n, lit, sizeof(lit) - 1), n += sizeof(lit) - 1)
        ADD_LIT("\r\nServer: tusknetd\r\nDate: ");
        memcpy(head + n, date, dl);
        n += dl;
        ADD_LIT("\r\n");
        if (!no_body) {
            ADD_LIT("Content-Type: ");
            memcpy(head + n, ctype, cl);
            n += cl;
            if (streamed) {
                ADD_LIT("\r\n");
                if (r->http_minor)
                    ADD_LIT("Transfer-Encoding: chunked\r\n");
            } else {
                ADD_LIT("\r\nContent-Length: ");
                char digits[24];
                size_t nd = 0, v = body_len;
                do {
                    digits[nd++] = (char)('0' + v % 10);
                    v /= 10;
                } while (v);
                while (nd)
                    head[n++] = digits[--nd];
                ADD_LIT("\r\n");
            }
        }
#undef ADD_LIT
        evbuffer_add(out, head, n);
    } else {
        evbuffer_add_printf(out, "HTTP/1.%d %d %s\r\nServer: tusknetd\r\nDate: %s\r\n", r->http_minor ? 1 : 0,
                            status, reason, date);
        if (streamed)
            evbuffer_add_printf(out, "Content-Type: %s\r\n%s", ctype,
                                r->http_minor ? "Transfer-Encoding: chunked\r\n" : "");
        else if (!no_body)
            evbuffer_add_printf(out, "Content-Type: %s\r\nContent-Length: %zu\r\n", ctype, body_len);
    }
    for (size_t i = 0; i < r->nresp; i++)
        evbuffer_add_printf(out, "%s: %s\r\n", r->resp_headers[i].name, r->resp_headers[i].value);
    if (closing)
        evbuffer_add(out, "Connection: close\r\n\r\n", 21);
    else if (r->http_minor == 0)
        evbuffer_add(out, "Connection: keep-alive\r\n\r\n", 26);
    else
        evbuffer_add(out, "\r\n", 2);
    if (no_body || r->head) {
        evbuffer_drain(body, evbuffer_get_length(body));
        if (r->stream) {
            r->stream->free(r->stream);
            r->stream = NULL;
        }
        return 0;
    }
    if (streamed)
        return 0; /* the body follows piece by piece (stream_pump counts it) */
    if (r->file_fd >= 0) {
        /* libevent sends file segments with sendfile and closes the fd */
        if (r->file_length > 0) {
            evbuffer_add_file(out, r->file_fd, r->file_offset, r->file_length);
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
    c->msgs_out++;
    c->listener->stats.messages_out++;
    c->d->stats.messages_out++;
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
    return close || (r->stream && !r->head && !r->http_minor);
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

static void stream_end(tn_conn *c, http_conn *hc, bool failed)
{
    tn_http_request *r = hc->sreq;
    hc->sreq = NULL;
    run_done(r, hc->sbytes);
    request_free(r);
    if (failed) {
        tn_warn("connection %llu: response body failed (file read error)", (unsigned long long)c->session.id);
        tn_conn_close(c, "response body failed");
    } else if (hc->sclose) {
        tn_conn_close_after_flush(c, NULL);
    } else {
        queue_flush(c);
        if (!c->dead)
            tn_conn_resume_input(c);
    }
}

/* Makes and writes pieces while the socket takes all of them; the next
 * drain of the output comes back here (http_drained). */
static void stream_pump(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    tn_conn *c = arg;
    http_conn *hc = c->fe_state;
    if (c->dead || !hc || !hc->sreq)
        return;
    tn_http_stream *st = hc->sreq->stream;
    int rc = 1;
    hc->pumping = true;
    while (rc > 0 && !tn_conn_unsent(c)) {
        rc = st->next(st, hc->piece);
        size_t len = evbuffer_get_length(hc->piece);
        if (rc < 0) {
            evbuffer_drain(hc->piece, len);
            break;
        }
        struct evbuffer *out = tn_conn_output(c);
        if (len && hc->schunked)
            evbuffer_add_printf(out, "%zx\r\n", len);
        evbuffer_add_buffer(out, hc->piece);
        if (len && hc->schunked)
            evbuffer_add(out, "\r\n", 2);
        if (rc == 0 && hc->schunked)
            evbuffer_add(out, "0\r\n\r\n", 5);
        hc->sbytes += len;
        tn_conn_flush(c);
        if (c->dead)
            return; /* hc went with it */
    }
    hc->pumping = false;
    if (rc <= 0)
        stream_end(c, hc, rc < 0);
}

/* R's head is in the output; its body (r->stream) follows. R stays alive
 * until the body is sent (its route's middleware log it then). */
static void stream_start(tn_conn *c, http_conn *hc, tn_http_request *r, bool close)
{
    if (!hc->pump_ev) {
        hc->pump_ev = event_new(c->d->base, -1, 0, stream_pump, c);
        hc->piece = evbuffer_new();
        if (!hc->pump_ev || !hc->piece) {
            request_free(r);
            tn_conn_close(c, "out of memory");
            return;
        }
    }
    hc->sreq = r;
    hc->sbytes = 0;
    hc->sclose = close;
    hc->schunked = r->http_minor >= 1;
    event_active(hc->pump_ev, EV_TIMEOUT, 0);
}

static void http_drained(tn_conn *c)
{
    http_conn *hc = c->fe_state;
    if (hc && hc->sreq && !hc->pumping)
        event_active(hc->pump_ev, EV_TIMEOUT, 0);
}

static void queue_flush(tn_conn *c)
{
    http_conn *hc = c->fe_state;
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
        if (p->req->stream) {
            stream_start(c, hc, p->req, p->close_after);
            free(p);
            tn_conn_flush(c);
            return;
        }
        close |= p->close_after;
        request_free(p->req);
        free(p);
        if (close)
            break;
    }
    if (close)
        tn_conn_close_after_flush(c, NULL);
    else if (hc && !hc->head && c->d->stopping)
        c->closing = 1;
    tn_conn_flush(c);
    /* the flush resumes input paused for output once that is written; input
     * paused for a full pipeline with nothing to write resumes here */
    if (!c->dead && c->read_paused && hc && hc->queued < PIPELINE_MAX && !hc->sreq && !tn_conn_unsent(c))
        tn_conn_resume_input(c);
}

/* A response made now for a request nothing is outstanding before: straight
 * to the output, no queue entry. */
static bool respond_direct(tn_conn *c, tn_http_request *r, struct evbuffer *body, bool close)
{
    http_conn *hc = c->fe_state;
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
    request_free(r);
    if (close)
        tn_conn_close_after_flush(c, NULL);
    return true;
}

static pending *enqueue(tn_conn *c, tn_http_request *r, bool close)
{
    http_conn *hc = c->fe_state;
    pending *p = calloc(1, sizeof(*p));
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
    struct evbuffer *body = c->d->scratch;
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
        request_free(r);
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
    struct evbuffer *body = c->d->scratch;
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
    tn_listener *l = c->listener;
    int reason = -1;
    if (status == 413 || status == 414 || status == 431)
        reason = TN_REJ_TOO_LARGE;
    else if (status == 429)
        reason = TN_REJ_RATE_LIMIT;
    if (reason >= 0) {
        l->stats.rejected[reason]++;
        c->d->stats.rejected[reason]++;
    } else if (status == 400) {
        l->stats.connection_errors++;
        c->d->stats.connection_errors++;
    }
}

static void dispatch(tn_conn *c, tn_http_request *r, bool not_found, const tn_http_route *route, const char *allow)
{
    tn_listener *l = c->listener;
    bool close = !r->keep_alive || c->d->stopping || l->draining;
    struct evbuffer *body = c->d->scratch;
    evbuffer_drain(body, evbuffer_get_length(body));
    c->msgs_in++;
    l->stats.messages_in++;
    c->d->stats.messages_in++;
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
                    request_free(r);
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
        .conn_id = c->session.id,
        .protocol = TN_PROTO_HTTP,
        .remote = &c->remote.sa,
        .remote_len = c->remote.sa.sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in),
        .remote_addr = r->remote_addr,
        .session = &c->session,
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
            request_free(r);
            tn_conn_close(c, "out of memory");
            return;
        }
        p->job = call.job;
        call.job->fe = p;
        call.job->complete = job_complete;
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
            request_free(r);
            tn_conn_close(c, "out of memory");
            return;
        }
        finish(c, p, body);
        queue_flush(c);
    }
}

/* ---- parsing ---------------------------------------------------------------------- */

static int hex(int ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    ch = tolower(ch);
    return ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
}

/* Percent-decodes PATH, then resolves "." and ".." segments and repeated
 * slashes (an encoded "%2F" separates segments like a raw one), so nothing
 * after this can be tricked into leaving a root. An encoded control byte
 * (NUL, CR, LF ...) or a bad escape is malformed (NULL, 400); a ".." above the root names nothing there
 * is (*above set, 404). The result starts with '/' and ends with one only
 * when the request named a directory. */
static const char *normalize_path(tn_http_request *r, const char *raw, size_t len, bool *above)
{
    char *dec = arena_alloc(r, len + 1);
    char *out = arena_alloc(r, len + 2);
    if (!dec || !out)
        return NULL;
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (raw[i] != '%') {
            dec[n++] = raw[i];
            continue;
        }
        if (i + 2 >= len)
            return NULL;
        int h1 = hex((unsigned char)raw[i + 1]), h2 = hex((unsigned char)raw[i + 2]);
        /* a decoded control byte would reach file names, CGI variables
         * and logs: no valid path needs one */
        if (h1 < 0 || h2 < 0 || h1 * 16 + h2 < 0x20 || h1 * 16 + h2 == 0x7f)
            return NULL;
        dec[n++] = (char)(h1 * 16 + h2);
        i += 2;
    }
    dec[n] = '\0';
    size_t o = 0;
    bool dir = n == 0 || dec[n - 1] == '/';
    for (char *seg = dec, *next; seg; seg = next) {
        char *slash = strchr(seg, '/');
        next = slash ? slash + 1 : NULL;
        if (slash)
            *slash = '\0';
        bool last = !next;
        if (!*seg || strcmp(seg, ".") == 0) {
            dir |= last && *seg;
            continue;
        }
        if (strcmp(seg, "..") == 0) {
            if (o == 0) {
                *above = true;
                return NULL;
            }
            while (o > 0 && out[o - 1] != '/')
                o--;
            o--; /* the '/' before the dropped segment */
            dir |= last;
            continue;
        }
        out[o++] = '/';
        size_t sl = strlen(seg);
        memcpy(out + o, seg, sl);
        o += sl;
    }
    if (o == 0 || dir)
        out[o++] = '/';
    out[o] = '\0';
    return out;
}

static int on_url(http_parser *p, const char *at, size_t len)
{
    http_conn *hc = p->data;
    hc->cur->target = at; /* the arena copy: contiguous */
    (void)len;
    return 0;
}

static void end_header(http_conn *hc)
{
    tn_http_request *r = hc->cur;
    if (!hc->field)
        return;
    /* RFC 9112: no whitespace between a field name and its colon (request
     * smuggling through proxies that trim it differently) */
    for (size_t i = 0; i < hc->field_len; i++)
        if (hc->field[i] == ' ' || hc->field[i] == '\t')
            hc->error = 400;
    if (r->nheaders < MAX_HEADERS) {
        tn_http_header *h = &r->headers[r->nheaders++];
        h->name = tn_http_strdup(r, hc->field, hc->field_len);
        h->value = tn_http_strdup(r, hc->value ? hc->value : "", hc->value_len);
        if (strcasecmp(h->name, "Content-Length") == 0)
            hc->content_lengths++;
        else if (strcasecmp(h->name, "Host") == 0)
            hc->hosts++;
        if (strcasecmp(h->name, "Transfer-Encoding") == 0) {
            hc->transfer_encodings++;
            size_t vl = strlen(h->value);
            while (vl && (h->value[vl - 1] == ' ' || h->value[vl - 1] == '\t'))
                vl--;
            hc->te_chunked_last = vl >= 7 && strncasecmp(h->value + vl - 7, "chunked", 7) == 0;
        }
    } else {
        hc->error = 431;
    }
    hc->field = hc->value = NULL;
    hc->field_len = hc->value_len = 0;
}

static int on_header_field(http_parser *p, const char *at, size_t len)
{
    http_conn *hc = p->data;
    if (hc->value)
        end_header(hc);
    if (!hc->field)
        hc->field = at;
    hc->field_len = (size_t)(at + len - hc->field);
    return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t len)
{
    http_conn *hc = p->data;
    if (!hc->value)
        hc->value = at;
    hc->value_len = (size_t)(at + len - hc->value);
    return 0;
}

static int on_headers_complete(http_parser *p)
{
    http_conn *hc = p->data;
    end_header(hc);
    tn_http_request *r = hc->cur;
    r->method = http_method_str((enum http_method)p->method);
    r->http_major = p->http_major;
    r->http_minor = p->http_minor;
    r->keep_alive = http_should_keep_alive(p);
    r->head = p->method == HTTP_HEAD;
    if (hc->content_lengths > 1 || (hc->content_lengths && hc->transfer_encodings) ||
        (hc->transfer_encodings && !hc->te_chunked_last))
        hc->error = 400;
    /* RFC 9112 3.2: exactly one Host in HTTP/1.1, at most one before */
    if (hc->hosts > 1 || (p->http_minor >= 1 && !hc->hosts))
        hc->error = 400;
    if (p->http_major != 1 || p->http_minor > 1)
        hc->error = 505;
    return 0;
}

/* Checks the CRLF owed after chunk data against the bytes from AT to END. */
static bool chunk_crlf_ok(http_conn *hc, const char *at, const char *end)
{
    for (; hc->crlf_need && at < end; at++, hc->crlf_need--)
        if (*at != (hc->crlf_need == 2 ? '\r' : '\n'))
            return false;
    return true;
}

static int on_body(http_parser *p, const char *at, size_t len)
{
    http_conn *hc = p->data;
    tn_http_request *r = hc->cur;
    if ((p->flags & F_CHUNKED) && p->content_length == 0) {
        /* this chunk's data ends here: the CRLF follows, maybe in the next read */
        hc->crlf_need = 2;
        if (!chunk_crlf_ok(hc, at + len, hc->feed_end))
            return -1;
    }
    if (!r->body && !(r->body = evbuffer_new()))
        return -1;
    evbuffer_add(r->body, at, len);
    return 0;
}

static int on_message_complete(http_parser *p)
{
    http_conn *hc = p->data;
    hc->message_complete = true;
    http_parser_pause(p, 1); /* one request at a time: the next starts a new head */
    return 0;
}

static const http_parser_settings parser_settings = {
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

static tn_http_request *request_new(tn_conn *c)
{
    tn_http_request *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->file_fd = -1;
    r->router = c->listener->router;
    if (r->router)
        tn_http_router_ref(r->router);
    r->conn_id = c->session.id;
    r->listener = c->listener->name;
    r->started_us = tn_now_us();
    char addr[80];
    tn_conn_remote_str(c, addr, sizeof(addr));
    r->remote_addr = tn_http_strdup(r, addr, strlen(addr));
    const char *colon = strrchr(addr, ':');
    size_t iplen = colon ? (size_t)(colon - addr) : strlen(addr);
    if (iplen >= 2 && addr[0] == '[')
        r->remote_ip = tn_http_strdup(r, addr + 1, iplen - 2);
    else
        r->remote_ip = tn_http_strdup(r, addr, iplen);
    r->headers = arena_alloc(r, MAX_HEADERS * sizeof(tn_http_header));
    return r;
}

/* Ends the connection with STATUS for the request being received. */
static void fail_request(tn_conn *c, http_conn *hc, int status, const char *text)
{
    tn_http_request *r = hc->cur;
    hc->cur = NULL;
    hc->state = ST_DONE;
    if (!r && !(r = request_new(c))) {
        tn_conn_close(c, "out of memory");
        return;
    }
    if (!r->http_minor && !r->http_major)
        r->http_minor = 1;
    r->head = false;
    c->msgs_in++;
    c->listener->stats.messages_in++;
    c->d->stats.messages_in++;
    count_refusal(c, status);
    respond_simple(c, r, status, text, true);
}

static bool body_too_large(http_conn *hc)
{
    tn_http_request *r = hc->cur;
    return r->body && (int64_t)evbuffer_get_length(r->body) > hc->max_body;
}

/* What http_parser lets through and nginx refuses: obs-fold (a line that
 * continues the previous header; its raw CRLF would reach whatever copies the
 * value), a CR that does not end a line, and NUL. */
static bool head_strict(const char *h, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        switch (h[i]) {
        case '\0': return false;
        case '\r':
            if (i + 1 >= len || h[i + 1] != '\n')
                return false;
            break;
        case '\n':
            if (i + 1 < len && (h[i + 1] == ' ' || h[i + 1] == '\t'))
                return false;
            break;
        }
    }
    return true;
}

/* Parses a complete head (DATA, LEN including the blank line). */
static void begin_request(tn_conn *c, http_conn *hc, const char *data, size_t len)
{
    const tn_limits *lim = tn_listener_limits(c->listener);
    const char *eol = memchr(data, '\n', len);
    size_t line_len = eol ? (size_t)(eol - data) : len;
    tn_http_request *r = request_new(c);
    if (!r) {
        tn_conn_close(c, "out of memory");
        return;
    }
    hc->cur = r;
    if (line_len > MAX_URI + 32) {
        fail_request(c, hc, 414, "URI Too Long");
        return;
    }
    char *copy = arena_alloc(r, len + 1);
    if (!copy) {
        fail_request(c, hc, 500, "Internal Server Error");
        return;
    }
    memcpy(copy, data, len);
    copy[len] = '\0';
    if (!head_strict(copy, len)) {
        fail_request(c, hc, 400, "Bad Request");
        return;
    }
    http_parser_init(&hc->parser, HTTP_REQUEST);
    hc->parser.data = hc;
    hc->field = hc->value = NULL;
    hc->field_len = hc->value_len = 0;
    hc->content_lengths = hc->transfer_encodings = hc->hosts = 0;
    hc->te_chunked_last = false;
    hc->crlf_need = 0;
    hc->feed_end = copy + len;
    hc->message_complete = false;
    hc->error = 0;
    hc->path_above_root = false;
    size_t n = http_parser_execute(&hc->parser, &parser_settings, copy, len);
    enum http_errno err = HTTP_PARSER_ERRNO(&hc->parser);
    if (err == HPE_PAUSED) {
        http_parser_pause(&hc->parser, 0);
        err = HPE_OK;
    }
    if (err != HPE_OK || n != len || hc->error || !r->target) {
        int status = hc->error ? hc->error : 400;
        tn_debug("connection %llu: bad request: %s", (unsigned long long)c->session.id,
                 err != HPE_OK ? http_errno_description(err) : "malformed");
        fail_request(c, hc, status, tn_http_reason(status));
        return;
    }
    /* the target is NUL-terminated in place: the parser saw it end at ' ' */
    const char *t = r->target;
    const char *sp = t;
    while (*sp && *sp != ' ')
        sp++;
    size_t tlen = (size_t)(sp - t);
    if (tlen > MAX_URI) {
        fail_request(c, hc, 414, "URI Too Long");
        return;
    }
    r->target = tn_http_strdup(r, t, tlen);
    struct http_parser_url u;
    http_parser_url_init(&u);
    const char *path_raw = r->target;
    size_t path_len = tlen;
    r->query = "";
    if (http_parser_parse_url(r->target, tlen, 0, &u) == 0) {
        if (u.field_set & (1 << UF_PATH)) {
            path_raw = r->target + u.field_data[UF_PATH].off;
            path_len = u.field_data[UF_PATH].len;
        } else {
            path_raw = "/";
            path_len = 1;
        }
        if (u.field_set & (1 << UF_QUERY))
            r->query = tn_http_strdup(r, r->target + u.field_data[UF_QUERY].off, u.field_data[UF_QUERY].len);
    } else if (!(tlen == 1 && r->target[0] == '*')) {
        fail_request(c, hc, 400, "Bad Request");
        return;
    }
    bool above = false;
    r->path = normalize_path(r, path_raw, path_len, &above);
    if (!r->path) {
        /* the request itself is fine: answer it in turn, keeping the connection */
        if (above) {
            r->path = "/";
            hc->path_above_root = true;
        } else {
            fail_request(c, hc, 400, "Bad Request");
            return;
        }
    }
    if (!hc->path_above_root) {
        const tn_listener_conf *lc = c->listener->conf;
        for (size_t i = 0; i < lc->nwebsocket; i++) {
            const tn_ws_conf *ep = &lc->websocket[i];
            if (strcmp(ep->path, r->path) != 0)
                continue;
            int st = tn_ws_check(ep, r);
            if (st == 0 && (hc->head || !hc->message_complete))
                st = 400; /* pipelined behind unanswered requests, or with a body */
            if (st) {
                if (st == 426) {
                    tn_http_set_header(r, "Upgrade", "websocket");
                    tn_http_set_header(r, "Connection", "Upgrade");
                }
                fail_request(c, hc, st, tn_http_reason(st));
                return;
            }
            hc->cur = NULL;
            request_free(r);
            hc->upgrade = ep;
            return;
        }
    }
    hc->allow = NULL;
    hc->route = hc->path_above_root || !r->router ? NULL : tn_http_route_match(r->router, r, &hc->allow);
    if (hc->route)
        lim = &hc->route->conf->limits; /* a route may allow bigger bodies */
    hc->max_body = lim->max_body;
    bool chunked = hc->parser.flags & F_CHUNKED;
    bool has_body = chunked || (hc->content_lengths && hc->parser.content_length > 0);
    if (hc->content_lengths && (int64_t)hc->parser.content_length > lim->max_body) {
        fail_request(c, hc, 413, "Content Too Large");
        return;
    }
    if (hc->message_complete) {
        hc->cur = NULL;
        hc->state = ST_HEAD;
        dispatch(c, r, hc->path_above_root, hc->route, hc->allow);
        return;
    }
    if (has_body) {
        const char *expect = tn_http_header_get(r, "Expect");
        if (expect) {
            if (strcasecmp(expect, "100-continue") != 0) {
                fail_request(c, hc, 417, "Expectation Failed");
                return;
            }
            /* the client waits for this before sending the body; with
             * responses still queued it would come out of order, and the
             * client's own timeout covers that case */
            if (!hc->head && r->http_minor >= 1) {
                evbuffer_add(tn_conn_output(c), "HTTP/1.1 100 Continue\r\n\r\n", 25);
                tn_conn_flush(c);
            }
        }
    }
    hc->body_start_us = 0;
    hc->state = ST_BODY;
}

/* Feeds body bytes; returns how many were used. */
static size_t feed_body(tn_conn *c, http_conn *hc, const char *data, size_t len)
{
    if (!hc->body_start_us)
        hc->body_start_us = loop_us(c);
    hc->feed_end = data + len;
    if (!chunk_crlf_ok(hc, data, data + len)) {
        fail_request(c, hc, 400, "Bad Request");
        return len;
    }
    size_t n = http_parser_execute(&hc->parser, &parser_settings, data, len);
    enum http_errno err = HTTP_PARSER_ERRNO(&hc->parser);
    if (err == HPE_PAUSED) {
        http_parser_pause(&hc->parser, 0);
        err = HPE_OK;
    }
    if (err != HPE_OK) {
        fail_request(c, hc, 400, "Bad Request");
        return len;
    }
    if (body_too_large(hc)) {
        fail_request(c, hc, 413, "Content Too Large");
        return len;
    }
    if (hc->message_complete) {
        tn_http_request *r = hc->cur;
        hc->cur = NULL;
        hc->state = ST_HEAD;
        dispatch(c, r, hc->path_above_root, hc->route, hc->allow);
    }
    return n;
}

/* Hands the socket to the WebSocket layer with every byte read from the
 * upgrade request's head on. */
static void upgrade(tn_conn *c, http_conn *hc, const char *data, size_t len)
{
    const tn_ws_conf *ep = hc->upgrade;
    hc->upgrade = NULL;
    tn_conn_flush(c); /* earlier answers in the same read go first */
    if (c->dead)
        return;
    if (tn_conn_unsent(c)) {
        tn_conn_close(c, "WebSocket upgrade behind unsent output");
        return;
    }
    tn_listener *l = c->listener;
    tn_daemon *d = c->d;
    tn_sockaddr remote = c->remote;
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
    if (c->tls) {
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
        tn_ws_upgrade(d, l, ep, fd, &from, copy, len);
    free(copy);
}

static size_t http_input(tn_conn *c, const char *data, size_t len)
{
    http_conn *hc = state_of(c);
    if (!hc) {
        tn_conn_close(c, "out of memory");
        return len;
    }
    const tn_limits *lim = tn_listener_limits(c->listener);
    size_t used = 0;
    while (used < len) {
        if (c->dead || c->closing || hc->state == ST_DONE)
            return len;
        if (hc->sreq) {
            /* one streamed body at a time: the next request waits */
            tn_conn_pause_input(c);
            break;
        }
        const char *d = data + used;
        size_t left = len - used;
        if (hc->state == ST_BODY) {
            used += feed_body(c, hc, d, left);
            continue;
        }
        /* skip the empty lines some clients send between requests */
        if (*d == '\r' || *d == '\n') {
            used++;
            continue;
        }
        if (hc->queued >= PIPELINE_MAX) {
            /* the next request waits in the input (and the socket) until
             * earlier responses are out, as with nginx and HAProxy, which
             * parse one request at a time */
            tn_conn_pause_input(c);
            break;
        }
        if (!hc->head_start_us)
            hc->head_start_us = loop_us(c);
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
            if (!eol && left > MAX_URI + 32) {
                fail_request(c, hc, 414, "URI Too Long");
                return len;
            }
            if ((int64_t)left > lim->max_header) {
                fail_request(c, hc, eol ? 431 : 414, eol ? "Request Header Fields Too Large" : "URI Too Long");
                return len;
            }
            int64_t elapsed_ms = (loop_us(c) - hc->head_start_us) / 1000;
            if (lim->header_timeout && elapsed_ms >= lim->header_timeout) {
                c->listener->stats.timeout_errors++;
                c->d->stats.timeout_errors++;
                fail_request(c, hc, 408, "Request Timeout");
                return len;
            }
            break; /* wait for the rest of the head */
        }
        hlen = (size_t)(end - d);
        if ((int64_t)hlen > lim->max_header) {
            fail_request(c, hc, 431, "Request Header Fields Too Large");
            return len;
        }
        hc->head_start_us = 0;
        begin_request(c, hc, d, hlen);
        if (hc->upgrade && !c->dead) {
            upgrade(c, hc, d, left);
            return len;
        }
        used += hlen;
        if (c->dead)
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
    const http_conn *hc = c->fe_state;
    const tn_limits *lim = tn_listener_limits(c->listener);
    if (!hc) /* nothing received yet: the first request is held to header_timeout */
        return lim->header_timeout ? lim->header_timeout : -1;
    if (hc->state == ST_BODY) {
        if (!hc->body_start_us || !lim->read_timeout)
            return lim->read_timeout;
        int64_t left = lim->read_timeout - (loop_us(c) - hc->body_start_us) / 1000;
        return left > 1 ? left : 1;
    }
    if (hc->head_start_us && lim->header_timeout) {
        int64_t left = lim->header_timeout - (loop_us(c) - hc->head_start_us) / 1000;
        return left > 1 ? left : 1;
    }
    return -1;
}

static bool http_timed_out(tn_conn *c)
{
    http_conn *hc = c->fe_state;
    if (hc && hc->state != ST_DONE && (hc->head_start_us || hc->state == ST_BODY)) {
        fail_request(c, hc, 408, "Request Timeout");
        tn_conn_flush(c);
        return true;
    }
    return false;
}

static bool http_busy(const tn_conn *c)
{
    const http_conn *hc = c->fe_state;
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
    http_conn *hc = c->fe_state;
    if (!hc)
        return;
    while (hc->head) {
        pending *p = hc->head;
        hc->head = p->next;
        if (p->job)
            tn_job_cancel(p->job);
        if (p->resp)
            evbuffer_free(p->resp);
        request_free(p->req);
        free(p);
    }
    request_free(hc->cur);
    request_free(hc->sreq);
    if (hc->pump_ev)
        event_free(hc->pump_ev);
    if (hc->piece)
        evbuffer_free(hc->piece);
    free(hc);
    c->fe_state = NULL;
}

static const tn_frontend http_frontend = {
    .name = "http",
    .input = http_input,
    .busy = http_busy,
    .push = http_push,
    .release = http_release,
    .partial_timeout = http_partial_timeout,
    .timed_out = http_timed_out,
    .drained = http_drained,
};

static tn_conn *http_accept(tn_listener *l, evutil_socket_t fd, const struct sockaddr *sa, int salen, tn_peer *peer)
{
    return tn_conn_new(l, fd, sa, salen, peer, &http_frontend);
}

/* (Re)build a listener's routes after a reload; the old router stays in use
 * by requests in flight. */
static int http_configure(tn_listener *l, char *err, size_t errlen)
{
    tn_http_router *rt = tn_http_router_new(l->d, l->conf, err, errlen);
    if (!rt)
        return -1;
    tn_http_router_inherit(rt, l->router);
    if (l->router)
        tn_http_router_retire(l->router);
    l->router = rt;
    return 0;
}

static void http_listener_free(tn_listener *l)
{
    tn_http_router_unref(l->router);
    l->router = NULL;
}

/* A 503 the client can read before the close; a denied address learns
 * nothing. */
static void http_refuse(tn_listener *l, evutil_socket_t fd, int reason)
{
    if (reason == TN_REJ_DENIED)
        return;
    char busy[256], date[64];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S GMT", &tm);
    int n = snprintf(busy, sizeof(busy),
                     "HTTP/1.1 503 Service Unavailable\r\nServer: tusknetd\r\nDate: %s\r\n"
                     "Content-Type: text/plain; charset=utf-8\r\nContent-Length: 20\r\n"
                     "Connection: close\r\n\r\nService Unavailable\n",
                     date);
    ssize_t w = send(fd, busy, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w > 0)
        tn_http_count_response(l, NULL, NULL, 503);
}

void tn_http_count_response(tn_listener *l, tn_http_router *rt, const tn_http_route *route, int status)
{
    int k = tn_http_class(status);
    l->stats.http_responses[k]++;
    l->d->stats.http_responses[k]++;
    if (!rt)
        rt = l->router;
    if (rt)
        tn_http_router_count(rt, route, status);
}

const tn_proto_ops tn_http_proto = {
    .name = "http",
    .socktype = SOCK_STREAM,
    .accept = http_accept,
    .configure = http_configure,
    .free = http_listener_free,
    .refuse = http_refuse,
};
