/* SPDX-License-Identifier: MIT */
/* ticker.c - a timer on the daemon's loop pushing to connections.
 *
 * A connection's first message subscribes it (the reply is "subscribed");
 * then every `interval_ms` (default 1000) each subscriber is sent
 * "tick N", N counting the instance's ticks from 1. A subscriber that lets
 * its output pile up past its cap is closed. Over UDP (no connection) a
 * message gets "Error: needs a connection". */
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <tusknet/plugin.h>

typedef struct sub {
    struct sub *prev, *next;
    tn_plugin_session *session;
} sub;

typedef struct ticker {
    const tn_plugin_host *host;
    struct event *timer;
    sub head; /* circular list */
    unsigned long long ticks;
    int c_pushed;
} ticker;

static void tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    ticker *t = arg;
    char msg[32];
    int len = snprintf(msg, sizeof(msg), "tick %llu", ++t->ticks);
    for (sub *s = t->head.next, *next; s != &t->head; s = next) {
        next = s->next; /* close() detaches s */
        if (t->host->push(s->session, msg, (size_t)len) < 0)
            t->host->close(s->session, "slow reader");
        else
            t->host->count(t->host, t->c_pushed, 1);
    }
}

static int init(const tn_plugin_host *host, const tn_plugin_options *o, void **state, char *err, size_t errlen)
{
    long ms = atol(tn_plugin_option_get(o, "interval_ms", "1000"));
    ticker *t = calloc(1, sizeof(*t));
    if (ms < 1 || !t) {
        snprintf(err, errlen, ms < 1 ? "interval_ms must be a positive number" : "out of memory");
        free(t);
        return -1;
    }
    t->host = host;
    t->head.next = t->head.prev = &t->head;
    t->c_pushed = host->counter(host, "pushed");
    struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };
    if (!(t->timer = event_new(host->base(host), -1, EV_PERSIST, tick, t)) || event_add(t->timer, &tv) < 0) {
        snprintf(err, errlen, "cannot start the timer");
        if (t->timer)
            event_free(t->timer);
        free(t);
        return -1;
    }
    *state = t;
    return 0;
}

static void *attach(void *state, tn_plugin_session *session)
{
    ticker *t = state;
    sub *s = calloc(1, sizeof(*s));
    if (s) {
        s->session = session;
        s->next = &t->head;
        s->prev = t->head.prev;
        t->head.prev->next = s;
        t->head.prev = s;
    }
    return s;
}

static void detach(void *state, tn_plugin_session *session, void *sstate)
{
    (void)state, (void)session;
    sub *s = sstate;
    if (s) {
        s->prev->next = s->next;
        s->next->prev = s->prev;
        free(s);
    }
}

static tn_plugin_result handle(void *state, tn_plugin_call *call)
{
    ticker *t = state;
    if (!t->host->session_state(call)) {
        t->host->reply(call, "needs a connection", 18);
        return TN_PLUGIN_ERROR;
    }
    t->host->reply(call, "subscribed", 10);
    return TN_PLUGIN_REPLY;
}

static void destroy(void *state)
{
    ticker *t = state;
    event_free(t->timer);
    while (t->head.next != &t->head)
        detach(t, NULL, t->head.next);
    free(t);
}

TN_PLUGIN_EXPORT const tn_plugin_def tn_plugin = {
    .abi = TN_PLUGIN_ABI, .name = "ticker", .init = init, .handle = handle,
    .attach = attach, .detach = detach, .destroy = destroy,
};
