/* SPDX-License-Identifier: MIT */
/* json.c - a minimal streaming JSON writer on evbuffers.
 *
 * The control socket answers one JSON document per line; building answers
 * straight into the client's output buffer avoids an intermediate tree. */
#include "json.h"

#include <inttypes.h>
#include <math.h>
#include <string.h>
#include <time.h>

#include "log.h"

void tn_json_init(tn_json *j, struct evbuffer *out)
{
    memset(j, 0, sizeof(*j));
    j->out = out;
}

static void prefix(tn_json *j, const char *key)
{
    if (j->need_comma[j->depth])
        evbuffer_add(j->out, ",", 1);
    j->need_comma[j->depth] = true;
    if (key) {
        tn_json_escape(j->out, key, strlen(key));
        evbuffer_add(j->out, ":", 1);
    }
}

void tn_json_open(tn_json *j, const char *key, char bracket)
{
    prefix(j, key);
    evbuffer_add(j->out, &bracket, 1);
    if (j->depth < 31)
        j->depth++;
    j->need_comma[j->depth] = false;
}

void tn_json_close(tn_json *j, char bracket)
{
    evbuffer_add(j->out, &bracket, 1);
    if (j->depth > 0)
        j->depth--;
}

/* Client bytes reach answers (unknown commands, handler names, remote
 * input): control characters are escaped and bytes that are not UTF-8
 * become U+FFFD, so every answer stays one valid JSON line. */
void tn_json_escape(struct evbuffer *out, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *u = (const unsigned char *)s;
    evbuffer_add(out, "\"", 1);
    size_t start = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = u[i];
        if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\')
            continue; /* DEL is escaped too: JSON lines reach the daemon's log */
        if (c >= 0x80) {
            size_t n = tn_utf8_len(u + i, len - i);
            if (n) {
                i += n - 1;
                continue;
            }
        }
        evbuffer_add(out, s + start, i - start);
        start = i + 1;
        switch (c) {
        case '"': evbuffer_add(out, "\\\"", 2); break;
        case '\\': evbuffer_add(out, "\\\\", 2); break;
        case '\n': evbuffer_add(out, "\\n", 2); break;
        case '\r': evbuffer_add(out, "\\r", 2); break;
        case '\t': evbuffer_add(out, "\\t", 2); break;
        default:
            if (c >= 0x80) {
                evbuffer_add(out, "\\ufffd", 6);
            } else {
                char esc[6] = { '\\', 'u', '0', '0', hex[c >> 4], hex[c & 15] };
                evbuffer_add(out, esc, 6);
            }
        }
    }
    evbuffer_add(out, s + start, len - start);
    evbuffer_add(out, "\"", 1);
}

void tn_json_strn(tn_json *j, const char *key, const char *value, size_t len)
{
    prefix(j, key);
    tn_json_escape(j->out, value, len);
}

void tn_json_str(tn_json *j, const char *key, const char *value)
{
    if (!value) {
        prefix(j, key);
        evbuffer_add(j->out, "null", 4);
        return;
    }
    tn_json_strn(j, key, value, strlen(value));
}

void tn_json_u64(tn_json *j, const char *key, uint64_t value)
{
    prefix(j, key);
    evbuffer_add_printf(j->out, "%" PRIu64, value);
}

void tn_json_i64(tn_json *j, const char *key, int64_t value)
{
    prefix(j, key);
    evbuffer_add_printf(j->out, "%" PRId64, value);
}

void tn_json_num(tn_json *j, const char *key, double value)
{
    prefix(j, key);
    if (!isfinite(value))
        evbuffer_add(j->out, "null", 4);
    else
        evbuffer_add_printf(j->out, "%.6g", value);
}

void tn_json_bool(tn_json *j, const char *key, bool value)
{
    prefix(j, key);
    evbuffer_add(j->out, value ? "true" : "false", value ? 4 : 5);
}

void tn_json_time(tn_json *j, const char *key, int64_t ms)
{
    time_t s = (time_t)(ms / 1000);
    struct tm tm;
    char buf[64];
    gmtime_r(&s, &tm);
    size_t n = strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + n, sizeof(buf) - n, ".%03dZ", (int)(ms % 1000));
    tn_json_str(j, key, buf);
}

void tn_json_value(tn_json *j, const char *key, const tn_value *v)
{
    if (!v) {
        tn_json_str(j, key, NULL);
        return;
    }
    switch (v->type) {
    case TN_V_NULL: tn_json_str(j, key, NULL); break;
    case TN_V_BOOL: tn_json_bool(j, key, v->u.b); break;
    case TN_V_INT: tn_json_i64(j, key, v->u.i); break;
    case TN_V_FLOAT: tn_json_num(j, key, v->u.f); break;
    case TN_V_STRING: tn_json_strn(j, key, v->u.s.ptr, v->u.s.len); break;
    case TN_V_ARRAY:
        tn_json_open(j, key, '[');
        for (size_t i = 0; i < v->u.a.len; i++)
            tn_json_value(j, NULL, v->u.a.items[i]);
        tn_json_close(j, ']');
        break;
    case TN_V_OBJECT:
        tn_json_open(j, key, '{');
        for (size_t i = 0; i < v->u.o.len; i++)
            tn_json_value(j, v->u.o.items[i].key, v->u.o.items[i].val);
        tn_json_close(j, '}');
        break;
    }
}
