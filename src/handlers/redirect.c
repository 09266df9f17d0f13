/* SPDX-License-Identifier: MIT */
/* redirect.c - the redirect handler: an HTTP 3xx whose Location is the
 * configured template with {path} (the request path) and {query} (the raw
 * query, without '?', "" when there is none) filled in. The request's query
 * is only carried over where the template says {query}.
 *
 * The Location is built straight into the reply body ("Redirecting to
 * LOCATION\n") and copied from there into the header, so a redirect costs no
 * allocation of its own. */
#include <string.h>

#include "handlers/handler.h"
#include "proto/http_msg.h"

static tn_result redirect_handle(tn_handler *h, tn_call *call)
{
    tn_http_request *r = call->ctx.http;
    if (!r) {
        /* the config loader refuses redirect on other protocols already */
        evbuffer_add_printf(call->out, "redirect handlers only serve HTTP");
        return TN_FAIL;
    }
    const char *t = h->conf.location ? h->conf.location : "/";
    struct evbuffer *out = call->out;
    evbuffer_add(out, "Redirecting to ", 15);
    size_t start = evbuffer_get_length(out);
    while (*t) {
        const char *brace = strchr(t, '{');
        size_t lit = brace ? (size_t)(brace - t) : strlen(t);
        evbuffer_add(out, t, lit);
        t += lit;
        if (!brace)
            break;
        if (strncmp(t, "{path}", 6) == 0) {
            tn_http_add_escaped(out, r->path ? r->path : "/", TN_HTTP_ESC_PATH);
            t += 6;
        } else if (strncmp(t, "{query}", 7) == 0) {
            tn_http_add_escaped(out, r->query ? r->query : "", TN_HTTP_ESC_QUERY);
            t += 7;
        } else {
            evbuffer_add(out, "{", 1);
            t++;
        }
    }
    size_t n = evbuffer_get_length(out) - start;
    const char *all = (const char *)evbuffer_pullup(out, -1);
    const char *location = all ? tn_http_strdup(r, all + start, n) : "/";
    evbuffer_add(out, "\n", 1);

    r->status = h->conf.status >= 300 && h->conf.status <= 399 ? (int)h->conf.status : 302;
    r->content_type = "text/plain; charset=utf-8";
    for (size_t i = 0; i < h->conf.headers.n; i++)
        tn_http_add_header(r, h->conf.headers.v[i].key, h->conf.headers.v[i].val);
    /* set, not add: the configured location wins over a "Location" in headers */
    tn_http_set_header(r, "Location", location);
    return TN_REPLY;
}

const tn_handler_ops tn_redirect_ops = { .type = "redirect", .handle = redirect_handle };
