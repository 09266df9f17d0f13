/* SPDX-License-Identifier: MIT */
/* http_proxy_head.c - the heads the HTTP proxy rewrites: the request head it
 * sends up (hop-by-hop headers dropped, X-Forwarded-*, Forwarded and Via
 * added, the route's prefix cut) and the response headers it hands to the
 * front end, and the hash balance's key read from a request. No state: the
 * exchange (http_proxy.c) owns the buffers. */
#include "upstream/http_proxy.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>

#include "proto/http_msg.h"

/* Header name N is LIT (ASCII letters and '-', any case); the first letter
 * decides most comparisons without a call. */
static inline bool name_is(const char *n, const char *lit)
{
    return (n[0] | 0x20) == (lit[0] | 0x20) && !strcasecmp(n, lit);
}

static bool hop_by_hop(const char *name, const char *connection)
{
    static const char *const names[] = { "Connection", "Keep-Alive", "TE", "Trailer", "Transfer-Encoding",
                                         "Upgrade", "Proxy-Connection", "Proxy-Authenticate",
                                         "Proxy-Authorization" };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (name_is(name, names[i]))
            return true;
    if ((name[0] | 0x20) == 'p' && strncasecmp(name, "Proxy-", 6) == 0)
        return true;
    return connection && tn_http_list_has(connection, name, false);
}

bool tn_http_proxy_idempotent(const char *m)
{
    static const char *const ok[] = { "GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE" };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
        if (strcmp(m, ok[i]) == 0)
            return true;
    return false;
}

/* The request head is some thirty pieces: they are gathered here and go
 * to the evbuffer in one add (printf and an evbuffer_add per piece were a
 * tenth of the proxy's user time per request). */
typedef struct head_w {
    struct evbuffer *out;
    size_t n;
    char buf[2048];
} head_w;

static void w_flush(head_w *w)
{
    if (w->n)
        evbuffer_add(w->out, w->buf, w->n);
    w->n = 0;
}

static void w_add(head_w *w, const char *s, size_t len)
{
    if (w->n + len > sizeof(w->buf)) {
        w_flush(w);
        if (len > sizeof(w->buf)) {
            evbuffer_add(w->out, s, len);
            return;
        }
    }
    memcpy(w->buf + w->n, s, len);
    w->n += len;
}

static void w_str(head_w *w, const char *s)
{
    w_add(w, s, strlen(s));
}

#define W_LIT(w, lit) w_add((w), (lit), sizeof(lit) - 1)

static void w_header(head_w *w, const char *name, const char *value)
{
    w_str(w, name);
    W_LIT(w, ": ");
    w_str(w, value);
    W_LIT(w, "\r\n");
}

/* "NAME: " and the value the client sent, if any, that ours is appended to. */
static void w_appended(head_w *w, const char *name, const char *prior)
{
    w_str(w, name);
    W_LIT(w, ": ");
    if (prior) {
        w_str(w, prior);
        W_LIT(w, ", ");
    }
}

/* The client's address for Forwarded: IPv6 quoted in brackets (RFC 7239). */
static void forwarded_for(head_w *w, const char *ip)
{
    if (strchr(ip, ':')) {
        W_LIT(w, "for=\"[");
        w_str(w, ip);
        W_LIT(w, "]\"");
    } else {
        W_LIT(w, "for=");
        w_str(w, ip);
    }
}

void tn_http_proxy_request_head(struct evbuffer *out, tn_http_request *r, const tn_handler_conf *c,
                                const char *server_name, bool https, bool *upgrade_out, bool *chunked_out)
{
    const char *connection = tn_http_header_get(r, "Connection");
    const char *cl = tn_http_header_get(r, "Content-Length");
    const char *host = tn_http_header_get(r, "Host");
    const char *upgrade = tn_http_header_get(r, "Upgrade");
    bool upgrade_asked = upgrade && connection && tn_http_list_has(connection, "upgrade", false);
    /* the front end refuses any coding but chunked last; other codings
     * (gzip, chunked) were undone only as far as chunked */
    bool chunked_up = tn_http_header_get(r, "Transfer-Encoding") != NULL;
    head_w w;
    w.out = out;
    w.n = 0;
    w_str(&w, r->method);
    W_LIT(&w, " ");
    const char *rest = tn_http_route_rest_of(r, r->path);
    if (rest != r->path) {
        /* the route's prefix is not the upstream's: what follows it goes */
        if (!*rest) {
            W_LIT(&w, "/");
        } else {
            w_flush(&w);
            tn_http_add_escaped(out, rest, TN_HTTP_ESC_PATH);
        }
        if (*r->query) {
            W_LIT(&w, "?");
            w_str(&w, r->query);
        }
    } else {
        w_str(&w, r->target);
    }
    W_LIT(&w, " HTTP/1.1\r\n");
    w_header(&w, "Host", c->preserve_host && host ? host : server_name ? server_name : "");
    const char *xff = NULL, *fwd = NULL, *via = NULL;
    for (size_t i = 0; i < r->nheaders; i++) {
        const char *n = r->headers[i].name, *v = r->headers[i].value;
        if (hop_by_hop(n, connection) || !strcasecmp(n, "Host") || !strcasecmp(n, "Content-Length") ||
            !strcasecmp(n, "Expect") || !strcasecmp(n, "X-Forwarded-Proto") || !strcasecmp(n, "X-Forwarded-Host"))
            continue;
        if (!strcasecmp(n, "X-Forwarded-For")) {
            xff = v;
            continue;
        }
        if (!strcasecmp(n, "Forwarded")) {
            fwd = v;
            continue;
        }
        if (!strcasecmp(n, "Via")) {
            via = v;
            continue;
        }
        w_header(&w, n, v);
    }
    const char *proto = https ? "https" : "http";
    w_appended(&w, "X-Forwarded-For", xff);
    w_str(&w, r->remote_ip);
    W_LIT(&w, "\r\n");
    w_header(&w, "X-Forwarded-Proto", proto);
    if (host)
        w_header(&w, "X-Forwarded-Host", host);
    w_appended(&w, "Forwarded", fwd);
    forwarded_for(&w, r->remote_ip);
    W_LIT(&w, ";proto=");
    w_str(&w, proto);
    if (host && !strpbrk(host, "\"\\")) {
        W_LIT(&w, ";host=\"");
        w_str(&w, host);
        W_LIT(&w, "\"");
    }
    W_LIT(&w, "\r\n");
    w_appended(&w, "Via", via);
    char ver[32];
    int vl = 14;
    if (r->http_major >= 0 && r->http_major <= 9 && r->http_minor >= 0 && r->http_minor <= 9) {
        memcpy(ver, "1.1 tusknetd\r\n", 14);
        ver[0] = (char)('0' + r->http_major);
        ver[2] = (char)('0' + r->http_minor);
    } else {
        vl = snprintf(ver, sizeof(ver), "%d.%d tusknetd\r\n", r->http_major, r->http_minor);
    }
    w_add(&w, ver, (size_t)vl);
    if (chunked_up) {
        /* de-chunked by the front end, chunked again as it goes up */
        W_LIT(&w, "Transfer-Encoding: chunked\r\n");
    } else if (cl) {
        w_header(&w, "Content-Length", cl);
    }
    if (upgrade_asked) {
        W_LIT(&w, "Connection: upgrade\r\n");
        w_header(&w, "Upgrade", upgrade);
    } else if (c->keepalive == 0) {
        W_LIT(&w, "Connection: close\r\n");
    }
    W_LIT(&w, "\r\n");
    w_flush(&w);
    *upgrade_out = upgrade_asked;
    *chunked_out = chunked_up;
}

void tn_http_proxy_response_headers(tn_http_request *r, const char *const *names, const char *const *values, size_t count,
                                    bool switching, int major, int minor)
{
    const char *connection = NULL;
    for (size_t i = 0; i < count; i++)
        if (name_is(names[i], "Connection"))
            connection = values[i];
    const char *via = NULL;
    bool has_ctype = false;
    for (size_t i = 0; i < count; i++) {
        const char *n = names[i], *v = values[i];
        if (name_is(n, "Content-Type")) {
            r->content_type = tn_http_strdup(r, v, strlen(v));
            has_ctype = true;
            continue;
        }
        if (switching && (name_is(n, "Upgrade") || name_is(n, "Connection"))) {
            tn_http_add_header(r, n, v);
            continue;
        }
        if (hop_by_hop(n, connection) || name_is(n, "Content-Length") || name_is(n, "Date") ||
            name_is(n, "Server"))
            continue;
        if (name_is(n, "Via")) {
            via = v;
            continue;
        }
        tn_http_add_header(r, n, v);
    }
    if (!has_ctype)
        r->content_type = ""; /* none: none sent on */
    if (!via && major == 1 && (minor == 0 || minor == 1)) {
        tn_http_add_header(r, "Via", minor ? "1.1 tusknetd" : "1.0 tusknetd");
        return;
    }
    char vbuf[512];
    snprintf(vbuf, sizeof(vbuf), "%s%s%d.%d tusknetd", via ? via : "", via ? ", " : "", major, minor);
    tn_http_add_header(r, "Via", vbuf);
}

const char *tn_http_proxy_hash_key(const tn_upstream_group *g, const tn_http_request *r, size_t *len, char *buf,
                                   size_t buflen)
{
    const char *k = NULL;
    if (g->key_kind == TN_UPK_REMOTE_ADDR) {
        k = r->remote_ip;
    } else if (g->key_kind == TN_UPK_TOKEN) {
        /* what a request names first after its method: the path, query
         * left out so that ?v=2 reaches the server of the page */
        k = r->path;
    } else if (g->key_kind == TN_UPK_HEADER) {
        k = tn_http_header_get(r, g->key_name);
    } else if (g->key_kind == TN_UPK_COOKIE) {
        const char *ck = tn_http_header_get(r, "Cookie");
        size_t nl = strlen(g->key_name);
        for (const char *p = ck; p && *p;) {
            while (*p == ' ' || *p == ';')
                p++;
            const char *e = strchr(p, ';');
            size_t seg = e ? (size_t)(e - p) : strlen(p);
            if (seg > nl && strncmp(p, g->key_name, nl) == 0 && p[nl] == '=') {
                size_t vl = seg - nl - 1;
                if (vl >= buflen)
                    vl = buflen - 1;
                memcpy(buf, p + nl + 1, vl);
                buf[vl] = '\0';
                k = buf;
                break;
            }
            p = e ? e + 1 : p + seg;
        }
    }
    *len = k ? strlen(k) : 0;
    return k;
}
