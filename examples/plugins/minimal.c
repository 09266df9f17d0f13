/* SPDX-License-Identifier: MIT */
/* minimal.c - the smallest useful tusknetd plugin; copy it to start one.
 *
 * Replies with the option `reply` when it is set (options { reply: "+PONG" }),
 * else with the message itself; counts its calls in `stats`.
 *
 *   cc -shared -fPIC $(pkg-config --cflags tusknet-plugin) minimal.c -o minimal.so
 *
 *   [handlers]
 *   ping { type: "plugin"  path: "./minimal.so"  options { reply: "+PONG" } } */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <tusknet/plugin.h>

typedef struct state {
    const tn_plugin_host *host;
    const char *reply; /* NULL: echo */
    size_t reply_len;
    int calls; /* counter id */
} state;

static int init(const tn_plugin_host *host, const tn_plugin_options *o, void **out, char *err, size_t errlen)
{
    state *st = calloc(1, sizeof(*st));
    const char *reply = tn_plugin_option_get(o, "reply", NULL);
    if (!st || (reply && !(st->reply = strdup(reply)))) { /* options live only during init */
        free(st);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    st->host = host;
    st->reply_len = reply ? strlen(reply) : 0;
    st->calls = host->counter(host, "calls");
    *out = st;
    return 0;
}

static tn_plugin_result handle(void *p, tn_plugin_call *call)
{
    state *st = p;
    size_t len;
    const char *msg = st->host->payload(call, &len);
    st->host->count(st->host, st->calls, 1);
    st->host->reply(call, st->reply ? st->reply : msg, st->reply ? st->reply_len : len);
    return TN_PLUGIN_REPLY;
}

static void destroy(void *p)
{
    state *st = p;
    free((char *)st->reply);
    free(st);
}

TN_PLUGIN_EXPORT const tn_plugin_def tn_plugin = {
    .abi = TN_PLUGIN_ABI, .name = "minimal", .init = init, .handle = handle, .destroy = destroy,
};
