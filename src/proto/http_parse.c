/* SPDX-License-Identifier: MIT */
/* http_parse.c - HTTP/1.1 requests taken apart.
 *
 * libhttp-parser does the parsing. A request head is only parsed once it is
 * complete (its size is bounded by max_header, so waiting costs at most
 * that); it is then copied into the request's arena so that the request can
 * outlive the input buffer (pipelining, asynchronous handlers). Bodies stream
 * through the parser, which also undoes chunked encoding, into the request.
 * What http_parser lets through and other parsers read differently (obs-fold,
 * bare CR, whitespace before a colon, duplicate lengths or hosts, a loose
 * CRLF after chunk data) is refused here: such requests smuggle. */
#include <ctype.h>
#include <http_parser.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "alloc.h"
#include "log.h"
#include "net/listener.h"
#include "proto/http.h"
#include "proto/http_conn.h"
#include "proto/upgrade.h"

static const http_parser_settings parser_settings;

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
    char *dec = tn_http_alloc(r, len + 1);
    char *out = tn_http_alloc(r, len + 2);
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
    tn_http_conn *hc = p->data;
    hc->cur->target = at; /* the arena copy: contiguous */
    (void)len;
    return 0;
}

/* The header array is made with the first header, for a dozen or so, and
 * doubles in the arena up to TN_HTTP_MAX_HEADERS for requests with more. */
#define HEADERS_FIRST 16

static void end_header(tn_http_conn *hc)
{
    tn_http_request *r = hc->cur;
    if (!hc->field)
        return;
    /* RFC 9112: no whitespace between a field name and its colon (request
     * smuggling through proxies that trim it differently) */
    for (size_t i = 0; i < hc->field_len; i++)
        if (hc->field[i] == ' ' || hc->field[i] == '\t')
            hc->error = 400;
    if (r->nheaders == r->headers_cap && r->nheaders < TN_HTTP_MAX_HEADERS) {
        size_t cap = r->headers_cap ? r->headers_cap * 2 : HEADERS_FIRST;
        if (cap > TN_HTTP_MAX_HEADERS)
            cap = TN_HTTP_MAX_HEADERS;
        tn_http_header *more = tn_http_alloc(r, cap * sizeof(tn_http_header));
        if (!more) {
            hc->error = 431; /* out of memory: refused as too large, and closed */
            return;
        }
        if (r->nheaders)
            memcpy(more, r->headers, r->nheaders * sizeof(tn_http_header));
        r->headers = more;
        r->headers_cap = cap;
    }
    if (r->nheaders < TN_HTTP_MAX_HEADERS) {
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
    tn_http_conn *hc = p->data;
    if (hc->value)
        end_header(hc);
    if (!hc->field)
        hc->field = at;
    hc->field_len = (size_t)(at + len - hc->field);
    return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t len)
{
    tn_http_conn *hc = p->data;
    if (!hc->value)
        hc->value = at;
    hc->value_len = (size_t)(at + len - hc->value);
    return 0;
}

static int on_headers_complete(http_parser *p)
{
    tn_http_conn *hc = p->data;
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

bool tn_http_crlf_ok(int *need, const char *at, const char *end)
{
    for (; *need && at < end; at++, (*need)--)
        if (*at != (*need == 2 ? '\r' : '\n'))
            return false;
    return true;
}

static int on_body(http_parser *p, const char *at, size_t len)
{
    tn_http_conn *hc = p->data;
    tn_http_request *r = hc->cur;
    if ((p->flags & F_CHUNKED) && p->content_length == 0) {
        /* this chunk's data ends here: the CRLF follows, maybe in the next read */
        hc->crlf_need = 2;
        if (!tn_http_crlf_ok(&hc->crlf_need, at + len, hc->feed_end))
            return -1;
    }
    if (hc->early) {
        /* dispatched at its head: to the handler's sink, or dropped when
         * middleware answered instead */
        hc->sink_bytes += (int64_t)len;
        if (hc->sink && !hc->sink->data(hc->sink, at, len)) {
            hc->sink_full = true;
            http_parser_pause(p, 1);
        }
        return 0;
    }
    if (!r->body && !(r->body = evbuffer_new()))
        return -1;
    evbuffer_add(r->body, at, len);
    return 0;
}

static int on_message_complete(http_parser *p)
{
    tn_http_conn *hc = p->data;
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

void tn_http_request_free(tn_http_request *r)
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
    tn_http_arena_free(r);
    free(r);
}

static void format_remote(tn_conn *c, tn_http_conn *hc)
{
    tn_conn_remote_str(c, hc->remote, sizeof(hc->remote));
    size_t len = strlen(hc->remote);
    const char *colon = strrchr(hc->remote, ':');
    size_t iplen = colon ? (size_t)(colon - hc->remote) : len;
    bool bracketed = iplen >= 2 && hc->remote[0] == '[';
    hc->remote_len = (uint8_t)len;
    hc->remote_ip_start = bracketed;
    hc->remote_ip_len = (uint8_t)(bracketed ? iplen - 2 : iplen);
}

tn_http_request *tn_http_request_new(tn_conn *c, tn_http_conn *hc)
{
    tn_http_request *r = tn_zalloc(sizeof(*r));
    if (!r)
        return NULL;
    r->file_fd = -1;
    r->router = c->base.listener->router;
    if (r->router)
        tn_http_router_ref(r->router);
    r->conn_id = c->base.session.id;
    r->listener = c->base.listener->name;
    r->started_us = tn_now_us();
    if (!hc->remote_len)
        format_remote(c, hc);
    r->remote_addr = tn_http_strdup(r, hc->remote, hc->remote_len);
    r->remote_ip = tn_http_strdup(r, hc->remote + hc->remote_ip_start, hc->remote_ip_len);
    return r;
}

static bool body_too_large(tn_http_conn *hc)
{
    tn_http_request *r = hc->cur;
    if (hc->early)
        return hc->sink_bytes > hc->max_body;
    return r->body && (int64_t)evbuffer_get_length(r->body) > hc->max_body;
}

void tn_http_sink_finish(tn_http_conn *hc, bool complete)
{
    tn_http_body_sink *sink = hc->sink;
    hc->early = false;
    hc->sink = NULL;
    hc->sink_full = false;
    if (sink)
        sink->end(sink, complete);
}

bool tn_http_head_strict(const char *h, size_t len)
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

void tn_http_begin_request(tn_conn *c, tn_http_conn *hc, const char *data, size_t len)
{
    const tn_limits *lim = tn_listener_limits(c->base.listener);
    const char *eol = memchr(data, '\n', len);
    size_t line_len = eol ? (size_t)(eol - data) : len;
    tn_http_request *r = tn_http_request_new(c, hc);
    if (!r) {
        tn_conn_close(c, "out of memory");
        return;
    }
    hc->cur = r;
    if (line_len > TN_HTTP_MAX_URI + 32) {
        tn_http_fail_request(c, hc, 414, "URI Too Long");
        return;
    }
    char *copy = tn_http_alloc(r, len + 1);
    if (!copy) {
        tn_http_fail_request(c, hc, 500, "Internal Server Error");
        return;
    }
    memcpy(copy, data, len);
    copy[len] = '\0';
    if (!tn_http_head_strict(copy, len)) {
        tn_http_fail_request(c, hc, 400, "Bad Request");
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
    /* no method: the parser never reached the end of the head (a
     * version it could not read), so the head is not a request */
    if (err != HPE_OK || n != len || hc->error || !r->target || !r->method) {
        int status = hc->error ? hc->error : 400;
        tn_debug("connection %llu: bad request: %s", (unsigned long long)c->base.session.id,
                 err != HPE_OK ? http_errno_description(err) : "malformed");
        tn_http_fail_request(c, hc, status, tn_http_reason(status));
        return;
    }
    /* the target is NUL-terminated in place: the parser saw it end at ' ' */
    const char *t = r->target;
    const char *sp = t;
    while (*sp && *sp != ' ')
        sp++;
    size_t tlen = (size_t)(sp - t);
    if (tlen > TN_HTTP_MAX_URI) {
        tn_http_fail_request(c, hc, 414, "URI Too Long");
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
        tn_http_fail_request(c, hc, 400, "Bad Request");
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
            tn_http_fail_request(c, hc, 400, "Bad Request");
            return;
        }
    }
    if (!hc->path_above_root) {
        const tn_listener_conf *lc = c->base.listener->conf;
        for (size_t i = 0; i < lc->nwebsocket; i++) {
            const tn_ws_conf *ep = &lc->websocket[i];
            if (strcmp(ep->path, r->path) != 0)
                continue;
            /* anything else at an endpoint's path is told to upgrade */
            const tn_upgrade_ops *up = tn_conn_daemon(c)->upgrade;
            int st = !tn_http_is_ws_upgrade(r) ? 426 : up ? up->check(ep, r) : 503;
            if (st == 0 && (hc->head || !hc->message_complete))
                st = 400; /* pipelined behind unanswered requests, or with a body */
            if (st) {
                if (st == 426) {
                    tn_http_set_header(r, "Upgrade", "websocket");
                    tn_http_set_header(r, "Connection", "Upgrade");
                }
                tn_http_fail_request(c, hc, st, tn_http_reason(st));
                return;
            }
            hc->cur = NULL;
            tn_http_request_free(r);
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
        tn_http_fail_request(c, hc, 413, "Content Too Large");
        return;
    }
    bool early = hc->route && !hc->path_above_root && hc->route->handler->ops->http_stream;
    if (hc->message_complete && !early) {
        hc->cur = NULL;
        hc->state = TN_HTTP_HEAD;
        tn_http_dispatch(c, r, hc->path_above_root, hc->route, hc->allow);
        return;
    }
    if (has_body) {
        const char *expect = tn_http_header_get(r, "Expect");
        if (expect) {
            if (strcasecmp(expect, "100-continue") != 0) {
                tn_http_fail_request(c, hc, 417, "Expectation Failed");
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
    if (early) {
        /* proxied: the handler starts now and takes the body as it comes
         * (tn_http_dispatch sets hc->sink when the handler takes it) */
        hc->cur = NULL;
        hc->early = true;
        hc->sink = NULL;
        hc->sink_full = false;
        hc->sink_bytes = 0;
        hc->upgrade_wait = tn_http_header_get(r, "Upgrade") != NULL;
        bool complete = hc->message_complete;
        hc->state = complete ? TN_HTTP_HEAD : TN_HTTP_BODY;
        hc->body_start_us = 0;
        tn_http_dispatch(c, r, false, hc->route, NULL);
        if (!c->base.dead && complete)
            tn_http_sink_finish(hc, true);
        return;
    }
    hc->body_start_us = 0;
    hc->state = TN_HTTP_BODY;
}

size_t tn_http_feed_body(tn_conn *c, tn_http_conn *hc, const char *data, size_t len)
{
    if (!hc->body_start_us)
        hc->body_start_us = tn_http_loop_us(c);
    hc->feed_end = data + len;
    if (!tn_http_crlf_ok(&hc->crlf_need, data, data + len)) {
        tn_http_fail_request(c, hc, 400, "Bad Request");
        return len;
    }
    size_t n = http_parser_execute(&hc->parser, &parser_settings, data, len);
    enum http_errno err = HTTP_PARSER_ERRNO(&hc->parser);
    if (err == HPE_PAUSED) {
        http_parser_pause(&hc->parser, 0);
        err = HPE_OK;
    }
    if (err != HPE_OK) {
        tn_http_fail_request(c, hc, 400, "Bad Request");
        return len;
    }
    if (body_too_large(hc)) {
        tn_http_fail_request(c, hc, 413, "Content Too Large");
        return len;
    }
    if (hc->message_complete && hc->early) {
        hc->state = TN_HTTP_HEAD;
        tn_http_sink_finish(hc, true);
    } else if (hc->message_complete) {
        tn_http_request *r = hc->cur;
        hc->cur = NULL;
        hc->state = TN_HTTP_HEAD;
        tn_http_dispatch(c, r, hc->path_above_root, hc->route, hc->allow);
    } else if (hc->sink_full) {
        tn_conn_pause_input(c);
    }
    return n;
}

void tn_http_body_resume(tn_http_body_sink *s)
{
    tn_conn *c = s->fe;
    tn_http_conn *hc = c && !c->base.dead ? c->fe_state : NULL;
    if (!hc || hc->sink != s || !hc->sink_full)
        return;
    hc->sink_full = false;
    tn_conn_resume_input(c);
}
