/* SPDX-License-Identifier: MIT */
/* probe.c - the plugin test_plugin.py builds from the installed header with
 * pkg-config only: one command per message exercises one part of the ABI.
 *
 *   sync TEXT      TEXT                        silent         nothing
 *   fail TEXT      Error: TEXT                 later MS TEXT  TEXT after MS ms (a loop timer)
 *   count          messages on this connection so far (per-connection state)
 *   ctx            listener, protocol, connection id, remote address and,
 *                  over HTTP, method, path, query and the X-Probe header
 *   status N TEXT  TEXT with HTTP status N     version        the VERSION it was built with
 *   badlater       LATER without later()       undecided      later(), then a reply now
 *   headers        the HTTP request headers, name=value; ...
 *
 * Counters: calls, cancelled, sessions (attached now). Built with
 * -DPROBE_ABI=N it claims ABI N, with -DPROBE_NO_SYMBOL it exports
 * its definition under another name, with -DPROBE_UNDEF it needs a function
 * nothing defines. */
#include <event2/event.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <tusknet/plugin.h>

#ifndef VERSION
#define VERSION "v1"
#endif
#ifndef PROBE_ABI
#define PROBE_ABI TN_PLUGIN_ABI
#endif

typedef struct probe {
    const tn_plugin_host *host;
    int c_calls, c_cancelled, c_sessions;
} probe;

typedef struct pending {
    const tn_plugin_host *host;
    tn_plugin_call *call;
    struct event *timer;
    size_t len;
    char text[256];
} pending;

static int init(const tn_plugin_host *host, const tn_plugin_options *o, void **state, char *err, size_t errlen)
{
#ifdef PROBE_UNDEF
    extern void tn_no_such_function(void);
    tn_no_such_function();
#endif
    const char *fail = tn_plugin_option_get(o, "fail_init", NULL);
    if (fail) {
        snprintf(err, errlen, "%s", fail);
        return -1;
    }
    probe *p = calloc(1, sizeof(*p));
    if (!p)
        return -1;
    p->host = host;
    p->c_calls = host->counter(host, "calls");
    p->c_cancelled = host->counter(host, "cancelled");
    p->c_sessions = host->counter(host, "sessions");
    host->log(host, TN_PLUGIN_LOG_INFO, "probe %s up, greeting '%s'", VERSION,
              tn_plugin_option_get(o, "greeting", "none"));
    *state = p;
    return 0;
}

static void fire(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    pending *w = arg;
    const tn_plugin_host *host = w->host;
    tn_plugin_call *call = w->call;
    char text[256];
    size_t len = w->len;
    memcpy(text, w->text, len);
    event_free(w->timer);
    free(w);
    /* complete() may be the instance's last use: nothing of it after this */
    host->complete(call, TN_PLUGIN_REPLY, text, len);
}

static void cancel(void *state, tn_plugin_call *call)
{
    probe *p = state;
    pending *w = p->host->data(call);
    event_free(w->timer);
    free(w);
    p->host->count(p->host, p->c_cancelled, 1);
    p->host->log(p->host, TN_PLUGIN_LOG_INFO, "call cancelled");
}

static void *attach(void *state, tn_plugin_session *s)
{
    probe *p = state;
    p->host->count(p->host, p->c_sessions, 1);
    p->host->log(p->host, TN_PLUGIN_LOG_INFO, "attach %" PRIu64, p->host->session_id(s));
    return calloc(1, sizeof(long));
}

static void detach(void *state, tn_plugin_session *s, void *sstate)
{
    probe *p = state;
    p->host->count(p->host, p->c_sessions, -1);
    p->host->log(p->host, TN_PLUGIN_LOG_INFO, "detach %" PRIu64 " after %ld", p->host->session_id(s), *(long *)sstate);
    free(sstate);
}

static int word(const char *msg, size_t len, const char *w)
{
    size_t n = strlen(w);
    return len >= n && memcmp(msg, w, n) == 0 && (len == n || msg[n] == ' ');
}

static tn_plugin_result handle(void *state, tn_plugin_call *call)
{
    probe *p = state;
    const tn_plugin_host *h = p->host;
    size_t len;
    const char *msg = h->payload(call, &len);
    while (len && (msg[len - 1] == '\n' || msg[len - 1] == '\r'))
        len--;
    h->count(h, p->c_calls, 1);
    long *seen = h->session_state(call);
    if (seen)
        ++*seen;
    char buf[1024];
    if (word(msg, len, "sync") || word(msg, len, "fail")) {
        h->reply(call, msg + 5 > msg + len ? msg + len : msg + 5, len > 5 ? len - 5 : 0);
        return msg[0] == 's' ? TN_PLUGIN_REPLY : TN_PLUGIN_ERROR;
    }
    if (word(msg, len, "silent"))
        return TN_PLUGIN_SILENT;
    if (word(msg, len, "badlater")) /* LATER without a handle: the host answers an error */
        return TN_PLUGIN_LATER;
    if (word(msg, len, "undecided")) { /* a handle, then an answer now: the handle is void */
        h->later(call);
        h->reply(call, "now after all", 13);
        return TN_PLUGIN_REPLY;
    }
    if (word(msg, len, "version")) {
        h->reply(call, VERSION, strlen(VERSION));
        return TN_PLUGIN_REPLY;
    }
    if (word(msg, len, "count")) {
        int n = snprintf(buf, sizeof(buf), "%ld", seen ? *seen : -1L);
        h->reply(call, buf, (size_t)n);
        return TN_PLUGIN_REPLY;
    }
    if (word(msg, len, "ctx")) {
        tn_plugin_ctx c;
        h->context(call, &c);
        const char *hdr = h->http_header(call, "x-probe");
        int n = snprintf(buf, sizeof(buf), "listener=%s protocol=%d conn=%" PRIu64 " remote=%s", c.listener,
                         c.protocol, c.conn_id, c.remote_addr);
        if (c.method)
            n += snprintf(buf + n, sizeof(buf) - (size_t)n, " method=%s path=%s query=%s x-probe=%s headers=%zu",
                          c.method, c.path, c.query, hdr ? hdr : "-", c.nheaders);
        h->reply(call, buf, (size_t)n);
        return TN_PLUGIN_REPLY;
    }
    if (word(msg, len, "headers")) {
        const char *name, *value;
        for (size_t i = 0; h->http_header_at(call, i, &name, &value); i++) {
            int n = snprintf(buf, sizeof(buf), "%s%s=%s", i ? "; " : "", name, value);
            h->reply(call, buf, (size_t)n);
        }
        return TN_PLUGIN_REPLY;
    }
    if (word(msg, len, "status")) {
        h->http_status(call, atoi(msg + 7));
        h->http_set_header(call, "X-Probe-Reply", "yes");
        const char *sp = memchr(msg + 7, ' ', len - 7);
        if (sp)
            h->reply(call, sp + 1, (size_t)(msg + len - sp - 1));
        return TN_PLUGIN_REPLY;
    }
    if (word(msg, len, "later")) {
        char *end;
        long ms = strtol(msg + 6, &end, 10);
        pending *w = calloc(1, sizeof(*w));
        tn_plugin_call *held = w ? h->later(call) : NULL;
        if (!held) {
            free(w);
            h->reply(call, "no memory", 9);
            return TN_PLUGIN_ERROR;
        }
        w->host = h;
        w->call = held;
        w->len = (size_t)(msg + len - end) > 1 ? (size_t)(msg + len - end - 1) : 0;
        if (w->len > sizeof(w->text))
            w->len = sizeof(w->text);
        memcpy(w->text, end + 1, w->len);
        w->timer = evtimer_new(h->base(h), fire, w);
        struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };
        evtimer_add(w->timer, &tv);
        h->set_data(held, w);
        return TN_PLUGIN_LATER;
    }
    h->reply(call, "unknown probe", 13);
    return TN_PLUGIN_ERROR;
}

static void destroy(void *state)
{
    probe *p = state;
    p->host->log(p->host, TN_PLUGIN_LOG_INFO, "probe %s destroyed", VERSION);
    free(p);
}

#ifdef PROBE_NO_SYMBOL
#define tn_plugin tn_plugin_misnamed
#endif
TN_PLUGIN_EXPORT const tn_plugin_def tn_plugin = {
    .abi = PROBE_ABI, .name = "probe", .init = init, .handle = handle, .cancel = cancel,
    .attach = attach, .detach = detach, .destroy = destroy,
};
