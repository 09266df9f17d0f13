/* SPDX-License-Identifier: MIT */
/* http_msg.c - the HTTP request model: arena, headers, the response's
 * headers, escaping, reason phrases.
 *
 * A request's strings, headers and scratch live in an arena of chunks freed
 * together with the request, so that nothing taken from a request needs
 * freeing of its own and a request can outlive the input buffer it was
 * parsed from (pipelining, asynchronous handlers). */
#include "proto/http_msg.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "log.h"

/* ---- arena -------------------------------------------------------------- */

typedef struct chunk {
    struct chunk *next;
    size_t used, cap;
    char data[];
} chunk;

/* A first chunk holds a usual request's strings and headers, and with its
 * record it stays within the size glibc's per-thread cache serves
 * (1,032 bytes): a request then costs no trip into the allocator's bins. */
#define CHUNK_FIRST (1024 - sizeof(chunk))

void *tn_http_alloc(tn_http_request *r, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    chunk *c = r->arena;
    if (!c || c->cap - c->used < n) {
        size_t cap = n > CHUNK_FIRST ? n : !c ? CHUNK_FIRST : 2048;
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

void tn_http_arena_free(tn_http_request *r)
{
    chunk *c = r->arena;
    while (c) {
        chunk *n = c->next;
        free(c);
        c = n;
    }
    r->arena = NULL;
}

const char *tn_http_strdup(tn_http_request *r, const char *s, size_t len)
{
    char *p = tn_http_alloc(r, len + 1);
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
        tn_http_header *h = tn_http_alloc(r, cap * sizeof(*h));
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

bool tn_http_is_ws_upgrade(const tn_http_request *r)
{
    const char *up = tn_http_header_get(r, "Upgrade");
    const char *conn = tn_http_header_get(r, "Connection");
    return strcmp(r->method, "GET") == 0 && up && tn_http_list_has(up, "websocket", false) && conn &&
           tn_http_list_has(conn, "upgrade", false);
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

/* The response head as it goes on the wire: status line, Server, Date,
 * Content-Type and Content-Length (or chunked), the response headers, and
 * the connection's fate. Built with memcpy rather than printf: this runs
 * for every response. */
void tn_http_write_head(struct evbuffer *out, const tn_http_request *r, int status, const char *date,
                        size_t body_len, unsigned flags)
{
    bool streamed = flags & TN_HEAD_STREAMED, no_body = flags & TN_HEAD_NO_BODY;
    bool no_ctype = flags & TN_HEAD_NO_CTYPE, closing = flags & TN_HEAD_CLOSE;
    char head[512];
    size_t n = 0;
    const char *reason = tn_http_reason(status);
    const char *ctype = r->content_type ? r->content_type : "text/plain; charset=utf-8";
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
            if (!no_ctype) {
                ADD_LIT("Content-Type: ");
                memcpy(head + n, ctype, cl);
                n += cl;
                ADD_LIT("\r\n");
            }
            if (streamed) {
                if (r->http_minor)
                    ADD_LIT("Transfer-Encoding: chunked\r\n");
            } else {
                ADD_LIT("Content-Length: ");
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
    } else {
        evbuffer_add_printf(out, "HTTP/1.%d %d %s\r\nServer: tusknetd\r\nDate: %s\r\n", r->http_minor ? 1 : 0,
                            status, reason, date);
        if (!no_body && !no_ctype)
            evbuffer_add_printf(out, "Content-Type: %s\r\n", ctype);
        if (streamed)
            evbuffer_add_printf(out, "%s", r->http_minor ? "Transfer-Encoding: chunked\r\n" : "");
        else if (!no_body)
            evbuffer_add_printf(out, "Content-Length: %zu\r\n", body_len);
    }
    /* the headers join the status part in HEAD while they fit */
    for (size_t i = 0; i < r->nresp; i++) {
        const char *name = r->resp_headers[i].name, *value = r->resp_headers[i].value;
        size_t nl = strlen(name), vl = strlen(value);
        if (n + nl + vl + 4 > sizeof(head)) {
            evbuffer_add(out, head, n);
            n = 0;
        }
        if (nl + vl + 4 > sizeof(head)) {
            evbuffer_add_printf(out, "%s: %s\r\n", name, value);
            continue;
        }
        memcpy(head + n, name, nl);
        head[n + nl] = ':';
        head[n + nl + 1] = ' ';
        memcpy(head + n + nl + 2, value, vl);
        n += nl + vl + 2;
        head[n++] = '\r';
        head[n++] = '\n';
    }
    const char *end = closing ? "Connection: close\r\n\r\n"
                      : r->http_minor == 0 ? "Connection: keep-alive\r\n\r\n"
                                           : "\r\n";
    size_t el = strlen(end);
    if (n + el > sizeof(head)) {
        evbuffer_add(out, head, n);
        n = 0;
    }
    memcpy(head + n, end, el);
    evbuffer_add(out, head, n + el);
}
