/* SPDX-License-Identifier: MIT */
/* wproto.c - the worker line protocol: call lines out, answer lines in
 * (see wproto.h). Base64 is OpenSSL's; the JSON writer's escaping (json.c)
 * makes the strings. */
#include "handlers/wproto.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "json.h"
#include "log.h"
#include "proto/http_msg.h"
#include "proto/wsframe.h"

/* Nesting of a skipped value (an unknown key's) before the line is refused. */
#define SKIP_DEPTH 32

static void add_base64(struct evbuffer *out, const char *data, size_t len)
{
    /* in pieces of 3 KiB (a multiple of 3) so no padding is made mid-way */
    unsigned char buf[4097];
    evbuffer_add(out, "\"", 1);
    for (size_t off = 0; off < len; off += 3072) {
        size_t n = len - off < 3072 ? len - off : 3072;
        int w = EVP_EncodeBlock(buf, (const unsigned char *)data + off, (int)n);
        evbuffer_add(out, buf, (size_t)w);
    }
    evbuffer_add(out, "\"", 1);
}

static const char *protocol_name(int protocol)
{
    return protocol == TN_PROTO_WS ? "websocket" : tn_protocol_name(protocol);
}

/* Header names are case-insensitive and may repeat: each name once, its
 * values joined with ", " as RFC 9110 5.3 allows. */
static void add_headers(tn_json *j, const tn_http_request *r)
{
    tn_json_open(j, "headers", '{');
    for (size_t i = 0; i < r->nheaders; i++) {
        const char *name = r->headers[i].name;
        bool seen = false;
        for (size_t k = 0; k < i && !seen; k++)
            seen = strcasecmp(r->headers[k].name, name) == 0;
        if (seen)
            continue;
        size_t more = 0;
        for (size_t k = i + 1; k < r->nheaders; k++)
            more += strcasecmp(r->headers[k].name, name) == 0;
        if (!more) {
            tn_json_str(j, name, r->headers[i].value);
            continue;
        }
        struct evbuffer *v = evbuffer_new();
        if (!v)
            continue;
        evbuffer_add_printf(v, "%s", r->headers[i].value);
        for (size_t k = i + 1; k < r->nheaders; k++)
            if (strcasecmp(r->headers[k].name, name) == 0)
                evbuffer_add_printf(v, ", %s", r->headers[k].value);
        size_t vl = evbuffer_get_length(v);
        tn_json_strn(j, name, (const char *)evbuffer_pullup(v, -1), vl);
        evbuffer_free(v);
    }
    tn_json_close(j, '}');
}

void tn_wproto_encode(struct evbuffer *out, const tn_msg_ctx *ctx, const char *payload, size_t len)
{
    evbuffer_add(out, ",\"payload\":", 11);
    if (tn_utf8_valid((const unsigned char *)payload, len)) {
        tn_json_escape(out, payload, len);
    } else {
        add_base64(out, payload, len);
        evbuffer_add(out, ",\"binary\":true", 14);
    }
    evbuffer_add(out, ",", 1);
    tn_json j;
    tn_json_init(&j, out);
    tn_json_open(&j, "context", '{');
    char addr[64];
    tn_json_str(&j, "listener", ctx->listener ? ctx->listener : "");
    tn_json_str(&j, "protocol", protocol_name(ctx->protocol));
    tn_json_u64(&j, "conn_id", ctx->conn_id);
    tn_json_str(&j, "remote_addr", tn_msg_remote_addr(ctx, addr, sizeof(addr)));
    const tn_http_request *r = ctx->http;
    if (r) {
        tn_json_str(&j, "method", r->method);
        tn_json_str(&j, "path", r->path);
        tn_json_str(&j, "query", r->query);
        add_headers(&j, r);
    }
    tn_json_close(&j, '}');
    evbuffer_add(out, "}\n", 2);
}

/* ---- reading an answer ------------------------------------------------------ */

typedef struct rd {
    const char *p, *end;
    const char *err;
} rd;

static void ws(rd *r)
{
    while (r->p < r->end && (*r->p == ' ' || *r->p == '\t' || *r->p == '\r' || *r->p == '\n'))
        r->p++;
}

static bool fail(rd *r, const char *why)
{
    if (!r->err)
        r->err = why;
    return false;
}

static bool lit(rd *r, const char *word)
{
    size_t n = strlen(word);
    if ((size_t)(r->end - r->p) < n || memcmp(r->p, word, n) != 0)
        return fail(r, "invalid JSON value");
    r->p += n;
    return true;
}

static bool hex4(rd *r, unsigned *out)
{
    if (r->end - r->p < 4)
        return fail(r, "bad \\u escape");
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        int h = tn_hexval(r->p[i]);
        if (h < 0)
            return fail(r, "bad \\u escape");
        v = v << 4 | (unsigned)h;
    }
    r->p += 4;
    *out = v;
    return true;
}

/* A string at r->p (on its opening quote). With OUT, the decoded bytes
 * are stored in a new buffer (*out, *outlen); without, only checked. */
static bool string(rd *r, char **out, size_t *outlen)
{
    if (r->p >= r->end || *r->p != '"')
        return fail(r, "expected a string");
    const char *s = ++r->p;
    const char *q = s;
    while (q < r->end && *q != '"') {
        if (*q == '\\' && q + 1 < r->end)
            q++;
        q++;
    }
    if (q >= r->end)
        return fail(r, "unterminated string");
    /* decoded text is never longer than its escaped form */
    char *o = out ? malloc((size_t)(q - s) + 1) : NULL;
    if (out && !o)
        return fail(r, "out of memory");
    size_t n = 0;
    while (r->p < q) {
        unsigned char c = (unsigned char)*r->p;
        if (c < 0x20) {
            free(o);
            return fail(r, "control character in string");
        }
        if (c >= 0x80) {
            size_t k = tn_utf8_len((const unsigned char *)r->p, (size_t)(q - r->p));
            if (!k) {
                free(o);
                return fail(r, "string is not UTF-8");
            }
            if (o)
                memcpy(o + n, r->p, k);
            n += k;
            r->p += k;
            continue;
        }
        if (c != '\\') {
            if (o)
                o[n] = (char)c;
            n++;
            r->p++;
            continue;
        }
        r->p++;
        char e = *r->p++;
        unsigned cp;
        switch (e) {
        case '"': cp = '"'; break;
        case '\\': cp = '\\'; break;
        case '/': cp = '/'; break;
        case 'b': cp = '\b'; break;
        case 'f': cp = '\f'; break;
        case 'n': cp = '\n'; break;
        case 'r': cp = '\r'; break;
        case 't': cp = '\t'; break;
        case 'u':
            if (!hex4(r, &cp))
                break;
            if (cp >= 0xdc00 && cp <= 0xdfff) {
                fail(r, "lone surrogate in string");
                break;
            }
            if (cp >= 0xd800 && cp <= 0xdbff) {
                unsigned lo;
                if (q - r->p < 6 || r->p[0] != '\\' || r->p[1] != 'u') {
                    fail(r, "lone surrogate in string");
                    break;
                }
                r->p += 2;
                if (!hex4(r, &lo))
                    break;
                if (lo < 0xdc00 || lo > 0xdfff) {
                    fail(r, "lone surrogate in string");
                    break;
                }
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
            }
            break;
        default: fail(r, "bad escape in string"); break;
        }
        if (r->err || r->p > q) {
            free(o);
            return fail(r, "bad escape in string");
        }
        if (o)
            n += (size_t)tn_utf8_put(o + n, cp);
        else
            n += cp < 0x80 ? 1 : 4;
    }
    r->p = q + 1;
    if (o) {
        o[n] = '\0';
        *out = o;
        *outlen = n;
    }
    return true;
}

/* RFC 8259 number grammar; an id must in addition be a plain integer. */
static bool number(rd *r, bool *integer, uint64_t *value)
{
    bool digits_only = true;
    uint64_t v = 0;
    if (r->p < r->end && *r->p == '-') {
        digits_only = false;
        r->p++;
    }
    if (r->p >= r->end || *r->p < '0' || *r->p > '9')
        return fail(r, "invalid JSON value");
    if (*r->p == '0' && r->p + 1 < r->end && r->p[1] >= '0' && r->p[1] <= '9')
        return fail(r, "leading zero in number");
    while (r->p < r->end && *r->p >= '0' && *r->p <= '9') {
        if (v <= TN_WPROTO_ID_MAX)
            v = v * 10 + (uint64_t)(*r->p - '0');
        r->p++;
    }
    if (r->p < r->end && *r->p == '.') {
        digits_only = false;
        r->p++;
        if (r->p >= r->end || *r->p < '0' || *r->p > '9')
            return fail(r, "invalid number");
        while (r->p < r->end && *r->p >= '0' && *r->p <= '9')
            r->p++;
    }
    if (r->p < r->end && (*r->p == 'e' || *r->p == 'E')) {
        digits_only = false;
        r->p++;
        if (r->p < r->end && (*r->p == '+' || *r->p == '-'))
            r->p++;
        if (r->p >= r->end || *r->p < '0' || *r->p > '9')
            return fail(r, "invalid number");
        while (r->p < r->end && *r->p >= '0' && *r->p <= '9')
            r->p++;
    }
    *integer = digits_only && v <= TN_WPROTO_ID_MAX;
    *value = v;
    return true;
}

static bool value(rd *r, int depth);

static bool container(rd *r, int depth, char close)
{
    if (depth >= SKIP_DEPTH)
        return fail(r, "nested too deep");
    r->p++;
    ws(r);
    if (r->p < r->end && *r->p == close) {
        r->p++;
        return true;
    }
    for (;;) {
        if (close == '}') {
            if (!string(r, NULL, NULL))
                return false;
            ws(r);
            if (r->p >= r->end || *r->p != ':')
                return fail(r, "expected ':'");
            r->p++;
            ws(r);
        }
        if (!value(r, depth + 1))
            return false;
        ws(r);
        if (r->p < r->end && *r->p == ',') {
            r->p++;
            ws(r);
            continue;
        }
        if (r->p < r->end && *r->p == close) {
            r->p++;
            return true;
        }
        return fail(r, close == '}' ? "expected ',' or '}'" : "expected ',' or ']'");
    }
}

/* Checks and skips any value. */
static bool value(rd *r, int depth)
{
    if (r->p >= r->end)
        return fail(r, "missing value");
    bool integer;
    uint64_t v;
    switch (*r->p) {
    case '"': return string(r, NULL, NULL);
    case '{': return container(r, depth, '}');
    case '[': return container(r, depth, ']');
    case 't': return lit(r, "true");
    case 'f': return lit(r, "false");
    case 'n': return lit(r, "null");
    default: return number(r, &integer, &v);
    }
}

/* Decodes standard base64 (padding required, as EVP_DecodeBlock wants)
 * in place. */
static bool unbase64(char *s, size_t *len)
{
    size_t n = *len;
    if (n == 0)
        return true;
    if (n % 4)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
                  c == '/' || (c == '=' && i >= n - 2 && (i == n - 1 || s[n - 1] == '='));
        if (!ok)
            return false;
    }
    size_t pad = s[n - 1] == '=' ? (s[n - 2] == '=' ? 2 : 1) : 0;
    unsigned char *tmp = malloc(n / 4 * 3 + 1);
    if (!tmp)
        return false;
    int w = EVP_DecodeBlock(tmp, (const unsigned char *)s, (int)n);
    if (w < 0 || (size_t)w < pad) {
        free(tmp);
        return false;
    }
    memcpy(s, tmp, (size_t)w - pad);
    free(tmp);
    *len = (size_t)w - pad;
    s[*len] = '\0';
    return true;
}

void tn_wproto_free(tn_wreply *r)
{
    free(r->text);
    r->text = NULL;
    r->len = 0;
    for (size_t i = 0; i < r->nheaders; i++) {
        free(r->hname[i]);
        free(r->hvalue[i]);
    }
    r->nheaders = 0;
}

static bool token_char(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

/* "headers":{"Name":"value",...} */
static bool headers(rd *r, tn_wreply *out)
{
    if (r->p >= r->end || *r->p != '{')
        return fail(r, "headers is not an object");
    r->p++;
    ws(r);
    if (r->p < r->end && *r->p == '}') {
        r->p++;
        return true;
    }
    for (;;) {
        char *name = NULL, *value = NULL;
        size_t nlen, vlen;
        if (out->nheaders == TN_WPROTO_HEADERS_MAX)
            return fail(r, "too many headers");
        if (!string(r, &name, &nlen))
            return false;
        out->hname[out->nheaders] = name;
        ws(r);
        if (r->p >= r->end || *r->p != ':') {
            out->hvalue[out->nheaders++] = NULL;
            return fail(r, "expected ':'");
        }
        r->p++;
        ws(r);
        bool ok = r->p < r->end && *r->p == '"' ? string(r, &value, &vlen) : fail(r, "header value is not a string");
        out->hvalue[out->nheaders++] = value;
        if (!ok)
            return false;
        bool good = nlen > 0;
        for (size_t i = 0; i < nlen && good; i++)
            good = token_char((unsigned char)name[i]);
        if (!good)
            return fail(r, "bad header name");
        for (size_t i = 0; i < vlen; i++)
            if (((unsigned char)value[i] < 0x20 && value[i] != '\t') || value[i] == 0x7f)
                return fail(r, "control character in header value");
        ws(r);
        if (r->p < r->end && *r->p == ',') {
            r->p++;
            ws(r);
            continue;
        }
        if (r->p < r->end && *r->p == '}') {
            r->p++;
            return true;
        }
        return fail(r, "expected ',' or '}'");
    }
}

int tn_wproto_parse(const char *line, size_t len, tn_wreply *out, char *err, size_t errlen)
{
    rd r = { line, line + len, NULL };
    bool have_reply = false, have_error = false, have_binary = false, binary = false, have_headers = false;
    memset(out, 0, sizeof(*out));
    ws(&r);
    if (r.p >= r.end || *r.p != '{') {
        fail(&r, "not a JSON object");
        goto bad;
    }
    r.p++;
    ws(&r);
    if (r.p < r.end && *r.p == '}') {
        r.p++;
    } else {
        for (;;) {
            char *key = NULL;
            size_t klen;
            if (!string(&r, &key, &klen))
                goto bad;
            ws(&r);
            if (r.p >= r.end || *r.p != ':') {
                free(key);
                fail(&r, "expected ':'");
                goto bad;
            }
            r.p++;
            ws(&r);
            bool ok;
            if (!strcmp(key, "id")) {
                bool integer = false;
                uint64_t v = 0;
                if (out->have_id)
                    ok = fail(&r, "duplicate key \"id\"");
                else if (!(ok = number(&r, &integer, &v)) || !integer)
                    ok = fail(&r, "id is not an integer from 0 to 2^53");
                else
                    out->have_id = true, out->id = v;
            } else if (!strcmp(key, "reply") || !strcmp(key, "error")) {
                bool is_error = key[0] == 'e';
                if (have_reply || have_error)
                    ok = fail(&r, "more than one of \"reply\" and \"error\"");
                else if (r.p < r.end && *r.p != '"')
                    ok = fail(&r, is_error ? "error is not a string" : "reply is not a string");
                else if ((ok = string(&r, &out->text, &out->len)))
                    have_reply = !is_error, have_error = is_error, out->is_error = is_error;
            } else if (!strcmp(key, "binary")) {
                if (have_binary)
                    ok = fail(&r, "duplicate key \"binary\"");
                else if (r.p < r.end && *r.p == 't')
                    ok = lit(&r, "true"), binary = true;
                else if (r.p < r.end && *r.p == 'f')
                    ok = lit(&r, "false");
                else
                    ok = fail(&r, "binary is not true or false");
                have_binary = true;
            } else if (!strcmp(key, "status")) {
                bool integer = false;
                uint64_t v = 0;
                if (out->status)
                    ok = fail(&r, "duplicate key \"status\"");
                else if (!(ok = number(&r, &integer, &v)) || !integer || v < 200 || v > 599)
                    ok = fail(&r, "status is not an integer from 200 to 599");
                else
                    out->status = (int)v;
            } else if (!strcmp(key, "headers")) {
                ok = have_headers ? fail(&r, "duplicate key \"headers\"") : headers(&r, out);
                have_headers = true;
            } else {
                ok = value(&r, 1);
            }
            free(key);
            if (!ok)
                goto bad;
            ws(&r);
            if (r.p < r.end && *r.p == ',') {
                r.p++;
                ws(&r);
                continue;
            }
            if (r.p < r.end && *r.p == '}') {
                r.p++;
                break;
            }
            fail(&r, "expected ',' or '}'");
            goto bad;
        }
    }
    ws(&r);
    if (r.p != r.end) {
        fail(&r, "text after the object");
        goto bad;
    }
    if (!out->have_id) {
        fail(&r, "no \"id\"");
        goto bad;
    }
    if (!have_reply && !have_error) {
        fail(&r, "neither \"reply\" nor \"error\"");
        goto bad;
    }
    if (binary && !unbase64(out->text, &out->len)) {
        fail(&r, "binary reply is not base64");
        goto bad;
    }
    return 0;
bad:
    snprintf(err, errlen, "%s", r.err ? r.err : "malformed");
    tn_wproto_free(out);
    return -1;
}
