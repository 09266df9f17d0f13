/* SPDX-License-Identifier: MIT */
/* static.c - the static handler: a fixed reply with optional placeholders
 * ({payload} {remote_addr} {time} {connection_id}).
 *
 * The template is split into parts once at init so that the common case, a
 * constant like "+PONG", costs one evbuffer_add per message. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "handlers/handler.h"
#include "proto/http_msg.h"

enum part_kind { PART_TEXT, PART_PAYLOAD, PART_REMOTE, PART_TIME, PART_CONN_ID };

typedef struct part {
    enum part_kind kind;
    const char *text;
    size_t len;
} part;

typedef struct static_state {
    part *parts;
    size_t nparts;
} static_state;

static int static_init(tn_handler *h, char *err, size_t errlen)
{
    static const struct { const char *name; enum part_kind kind; } names[] = {
        { "{payload}", PART_PAYLOAD },
        { "{remote_addr}", PART_REMOTE },
        { "{time}", PART_TIME },
        { "{connection_id}", PART_CONN_ID },
    };
    const char *t = h->conf.reply ? h->conf.reply : "";
    size_t cap = 1;
    for (const char *p = t; *p; p++)
        cap += *p == '{' ? 2 : 0;
    static_state *st = calloc(1, sizeof(*st));
    if (!st || !(st->parts = calloc(cap + 1, sizeof(part)))) {
        free(st);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    const char *text = t;
    for (const char *p = t; *p;) {
        size_t i = 0;
        if (*p == '{')
            for (; i < sizeof(names) / sizeof(names[0]); i++)
                if (strncmp(p, names[i].name, strlen(names[i].name)) == 0)
                    break;
        if (*p != '{' || i == sizeof(names) / sizeof(names[0])) {
            p++;
            continue;
        }
        if (p > text)
            st->parts[st->nparts++] = (part){ PART_TEXT, text, (size_t)(p - text) };
        st->parts[st->nparts++] = (part){ names[i].kind, NULL, 0 };
        p += strlen(names[i].name);
        text = p;
    }
    size_t rest = strlen(text);
    if (rest)
        st->parts[st->nparts++] = (part){ PART_TEXT, text, rest };
    h->state = st;
    return 0;
}

static tn_result static_handle(tn_handler *h, tn_call *call)
{
    static_state *st = h->state;
    tn_http_request *r = call->ctx.http;
    if (r) {
        /* over HTTP the reply carries the configured status and headers */
        r->status = (int)h->conf.status;
        r->content_type = h->conf.content_type;
        for (size_t i = 0; i < h->conf.headers.n; i++)
            tn_http_add_header(r, h->conf.headers.v[i].key, h->conf.headers.v[i].val);
    }
    if (st->nparts == 1 && (st->parts[0].kind == PART_TEXT || st->parts[0].kind == PART_PAYLOAD)) {
        const part *p = &st->parts[0];
        if (p->kind == PART_TEXT)
            tn_call_reply_ref(call, p->text, p->len);
        else
            tn_call_reply_ref(call, call->payload, call->len);
        return TN_REPLY;
    }
    for (size_t i = 0; i < st->nparts; i++) {
        const part *p = &st->parts[i];
        switch (p->kind) {
        case PART_TEXT:
            evbuffer_add(call->out, p->text, p->len);
            break;
        case PART_PAYLOAD:
            evbuffer_add(call->out, call->payload, call->len);
            break;
        case PART_REMOTE: {
            char buf[80];
            const char *addr = tn_msg_remote_addr(&call->ctx, buf, sizeof(buf));
            evbuffer_add(call->out, addr, strlen(addr));
            break;
        }
        case PART_TIME: {
            struct timespec ts;
            struct tm tm;
            char buf[40];
            clock_gettime(CLOCK_REALTIME, &ts);
            gmtime_r(&ts.tv_sec, &tm);
            size_t n = strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm);
            snprintf(buf + n, sizeof(buf) - n, ".%03ldZ", ts.tv_nsec / 1000000);
            evbuffer_add(call->out, buf, strlen(buf));
            break;
        }
        case PART_CONN_ID:
            evbuffer_add_printf(call->out, "%" PRIu64, call->ctx.conn_id);
            break;
        }
    }
    return TN_REPLY;
}

static void static_destroy(tn_handler *h)
{
    static_state *st = h->state;
    if (st)
        free(st->parts);
    free(st);
}

const tn_handler_ops tn_static_ops = {
    .type = "static", .init = static_init, .handle = static_handle, .destroy = static_destroy,
};
