/* SPDX-License-Identifier: MIT */
/* registry.c - handlers by name, and the machinery every handler shares:
 * calling with accounting, asynchronous jobs, per-session attachments,
 * reference counting across reloads, and the first-token selection rule.
 *
 * A handler lives as long as something refers to it: the registry while it
 * is in the config, each listener or route naming it, each job in flight and
 * each session attached. A reload that drops or changes a handler only
 * removes it from the registry; the last user frees it. */
#include "clock.h"
#include "handlers/handler.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "alloc.h"
#include "log.h"
#include "addr.h"

struct tn_registry {
    struct event_base *base;
    struct tn_daemon *daemon;
    tn_handler **v; /* the handlers of the current config */
    size_t n;
    tn_handler *alive; /* every handler not yet destroyed, removed ones too */
};

static const tn_handler_ops *ops_for(int type)
{
    switch (type) {
    case TN_H_ECHO: return &tn_echo_ops;
    case TN_H_STATIC: return &tn_static_ops;
    case TN_H_EXEC: return &tn_exec_ops;
    case TN_H_STREAM: return &tn_stream_ops;
    case TN_H_BROADCAST: return &tn_broadcast_ops;
    case TN_H_HEALTH: return &tn_health_ops;
    case TN_H_METRICS: return &tn_metrics_ops;
    case TN_H_FILE: return &tn_file_ops;
    case TN_H_REDIRECT: return &tn_redirect_ops;
    case TN_H_PLUGIN: return &tn_plugin_ops;
    case TN_H_WORKER: return &tn_worker_ops;
    case TN_H_PROXY: return &tn_proxy_ops;
    default: return NULL;
    }
}

void tn_handler_ref(tn_handler *h)
{
    h->refs++;
}

static void destroy(tn_handler *h)
{
    if (h->registry) {
        if (h->alive_prev)
            h->alive_prev->alive_next = h->alive_next;
        else
            h->registry->alive = h->alive_next;
        if (h->alive_next)
            h->alive_next->alive_prev = h->alive_prev;
    }
    if (h->ops->destroy)
        h->ops->destroy(h);
    tn_handler_conf_free(&h->conf);
    free(h->name);
    free(h);
}

void tn_handler_unref(tn_handler *h)
{
    if (--h->refs > 0)
        return;
    destroy(h);
}

/* Drops the registry's reference; a handler the new config no longer has
 * hears about it first. */
static void retire(tn_handler *h)
{
    if (h->removed && h->ops->retire)
        h->ops->retire(h);
    tn_handler_unref(h);
}

static tn_handler *handler_new(tn_registry *r, const tn_handler_conf *conf, tn_handler *old, char *err,
                               size_t errlen)
{
    const tn_handler_ops *ops = ops_for(conf->type);
    tn_handler *h = calloc(1, sizeof(*h));
    if (!h || !(h->name = strdup(conf->name)) || tn_handler_conf_copy(&h->conf, conf) < 0) {
        snprintf(err, errlen, "out of memory");
        if (h) {
            tn_handler_conf_free(&h->conf);
            free(h->name);
        }
        free(h);
        return NULL;
    }
    h->ops = ops;
    h->base = r->base;
    h->daemon = r->daemon;
    h->refs = 1;
    char why[512] = "";
    h->replacing = old && old->conf.type == conf->type ? old : NULL;
    int rc = ops->init ? ops->init(h, why, sizeof(why)) : 0;
    h->replacing = NULL;
    if (rc < 0) {
        snprintf(err, errlen, "%s:%d:%d: handler '%s': %s", conf->pos.file, conf->pos.line, conf->pos.col,
                 conf->name, why);
        h->ops = &tn_echo_ops; /* nothing to destroy */
        tn_handler_unref(h);
        return NULL;
    }
    return h;
}

tn_registry *tn_registry_new(struct event_base *base, struct tn_daemon *daemon)
{
    tn_registry *r = calloc(1, sizeof(*r));
    if (r) {
        r->base = base;
        r->daemon = daemon;
    }
    return r;
}

tn_handler *tn_registry_find(tn_registry *r, const char *name)
{
    for (size_t i = 0; i < r->n; i++)
        if (strcmp(r->v[i]->name, name) == 0)
            return r->v[i];
    return NULL;
}

size_t tn_registry_count(const tn_registry *r)
{
    return r->n;
}

tn_handler *tn_registry_at(const tn_registry *r, size_t i)
{
    return i < r->n ? r->v[i] : NULL;
}

tn_handler *tn_registry_alive(const tn_registry *r)
{
    return r->alive;
}

int tn_registry_apply(tn_registry *r, const tn_config *cfg, char *err, size_t errlen)
{
    tn_handler **next = calloc(cfg->nhandlers ? cfg->nhandlers : 1, sizeof(*next));
    if (!next) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    /* Build the whole new set first so that a failure changes nothing. */
    size_t n = 0;
    for (size_t i = 0; i < cfg->nhandlers; i++) {
        const tn_handler_conf *c = &cfg->handlers[i];
        if (!ops_for(c->type))
            continue; /* a type this build does not know: the config loader admits none */
        tn_handler *old = tn_registry_find(r, c->name);
        if (old && tn_handler_conf_equal(&old->conf, c) && (!old->ops->unchanged || old->ops->unchanged(old))) {
            tn_handler_ref(old);
            next[n++] = old;
            continue;
        }
        next[n] = handler_new(r, c, old, err, errlen);
        if (next[n]) {
            next[n]->registry = r;
            next[n]->alive_next = r->alive;
            if (r->alive)
                r->alive->alive_prev = next[n];
            r->alive = next[n];
        }
        if (!next[n]) {
            for (size_t j = 0; j < n; j++)
                tn_handler_unref(next[j]);
            free(next);
            return -1;
        }
        n++;
    }
    for (size_t i = 0; i < r->n; i++)
        r->v[i]->removed = true;
    for (size_t i = 0; i < n; i++)
        next[i]->removed = false;
    /* the new set is in place before the old one retires, so that a
     * retired handler finds its successor by name */
    tn_handler **prev = r->v;
    size_t nprev = r->n;
    r->v = next;
    r->n = n;
    for (size_t i = 0; i < nprev; i++)
        retire(prev[i]);
    free(prev);
    return 0;
}

void tn_registry_free(tn_registry *r, int wait_ms)
{
    if (!r)
        return;
    /* emptied first: a retiring handler looking up a successor finds none
     * (and no handler the loop destroyed already) */
    tn_handler **prev = r->v;
    size_t nprev = r->n;
    r->v = NULL;
    r->n = 0;
    for (size_t i = 0; i < nprev; i++) {
        prev[i]->removed = true;
        retire(prev[i]);
    }
    free(prev);
    int64_t deadline = tn_now_us() + (int64_t)wait_ms * 1000;
    while (r->alive && tn_now_us() < deadline) {
        struct timeval slice = { 0, 50000 };
        event_base_loopexit(r->base, &slice);
        event_base_loop(r->base, EVLOOP_ONCE);
    }
    while (r->alive) {
        tn_warn("handler %s: still busy at exit, destroying it", r->alive->name);
        destroy(r->alive);
    }
    free(r);
}

const char *tn_msg_remote_addr(const tn_msg_ctx *ctx, char *buf, size_t len)
{
    if (ctx->remote_addr)
        return ctx->remote_addr;
    if (!ctx->remote) {
        snprintf(buf, len, "-");
        return buf;
    }
    tn_addr_format(ctx->remote, buf, len);
    return buf;
}

/* ---- calls and jobs ---------------------------------------------------- */

/* Reading the clock twice per message was the largest cost in the daemon
 * for trivial handlers (clock_gettime is not cheap on every virtual
 * machine), so synchronous calls are timed one in LATENCY_SAMPLE and the
 * calls in between are counted at the latest sample: counts stay exact, the
 * distribution is sampled. Asynchronous jobs are always timed. */
#define LATENCY_SAMPLE 16

tn_result tn_handler_call(tn_call *call)
{
    tn_handler *h = call->handler;
    bool timed = (h->stats.calls++ % LATENCY_SAMPLE) == 0;
    int64_t start = timed ? tn_now_us() : 0;
    call->job = NULL;
    call->reply = NULL;
    call->reply_len = 0;
    tn_result res = h->ops->handle(h, call);
    if (res == TN_LATER) {
        /* tn_job_begin read the clock when the handler took the job */
        if (call->job && timed)
            call->job->started_us = start;
        h->stats.in_flight++;
        return res;
    }
    if (res == TN_FAIL)
        h->stats.errors++;
    if (timed)
        h->stats.last_sync_us = tn_now_us() - start;
    tn_hist_add(&h->stats.latency, h->stats.last_sync_us);
    return res;
}

tn_job *tn_job_begin(tn_call *call)
{
    tn_job *job = tn_zalloc(sizeof(*job));
    if (!job)
        return NULL;
    job->payload = malloc(call->len + 1);
    if (!job->payload) {
        free(job);
        return NULL;
    }
    memcpy(job->payload, call->payload, call->len);
    job->payload[call->len] = '\0';
    job->len = call->len;
    job->handler = call->handler;
    job->ctx = call->ctx;
    if (call->ctx.remote_addr) {
        size_t n = strnlen(call->ctx.remote_addr, sizeof(job->remote_addr) - 1);
        memcpy(job->remote_addr, call->ctx.remote_addr, n);
        job->remote_addr[n] = '\0';
        job->ctx.remote_addr = job->remote_addr;
    }
    if (call->ctx.remote && call->ctx.remote_len <= sizeof(job->remote)) {
        memcpy(&job->remote, call->ctx.remote, call->ctx.remote_len);
        job->ctx.remote = (struct sockaddr *)&job->remote;
    }
    if (call->ctx.tls) {
        job->tls = *call->ctx.tls;
        job->tls.subject = call->ctx.tls->subject ? strdup(call->ctx.tls->subject) : NULL;
        job->ctx.tls = &job->tls;
    }
    job->started_us = tn_now_us();
    tn_handler_ref(call->handler);
    call->job = job;
    return job;
}

void tn_job_done(tn_job *job, tn_result result, const char *data, size_t len)
{
    tn_handler *h = job->handler;
    h->stats.in_flight--;
    if (result == TN_FAIL)
        h->stats.errors++;
    tn_hist_add(&h->stats.latency, tn_now_us() - job->started_us);
    if (!job->cancelled && job->complete)
        job->complete(job, result, data, len);
    free(job->tls.subject);
    free(job->payload);
    free(job);
    tn_handler_unref(h);
}

void tn_job_cancel(tn_job *job)
{
    if (job->cancelled)
        return;
    job->cancelled = true;
    job->fe = NULL;
    job->complete = NULL;
    job->ctx.session = NULL;
    job->ctx.http = NULL;
    if (job->cancel)
        job->cancel(job);
}

/* ---- sessions ---------------------------------------------------------- */

void *tn_session_state(tn_session *s, tn_handler *h)
{
    for (tn_attachment *a = s->attached; a; a = a->next)
        if (a->handler == h)
            return a->state;
    if (!h->ops->attach)
        return NULL;
    void *state = h->ops->attach(h, s);
    if (!state)
        return NULL;
    tn_attachment *a = malloc(sizeof(*a));
    if (!a) {
        if (h->ops->detach)
            h->ops->detach(h, s, state);
        return NULL;
    }
    a->handler = h;
    a->state = state;
    a->next = s->attached;
    s->attached = a;
    tn_handler_ref(h);
    return state;
}

void tn_session_detach_all(tn_session *s)
{
    while (s->attached) {
        tn_attachment *a = s->attached;
        s->attached = a->next;
        if (a->handler->ops->detach)
            a->handler->ops->detach(a->handler, s, a->state);
        tn_handler_unref(a->handler);
        free(a);
    }
}

bool tn_session_input_end(tn_session *s)
{
    bool held = false;
    for (tn_attachment *a = s->attached; a; a = a->next)
        if (a->handler->ops->input_end && a->handler->ops->input_end(a->handler, s, a->state))
            held = true;
    return held;
}

/* ---- selection ------------------------------------------------------------ */

size_t tn_split_token(const char *msg, size_t len, const char **payload, size_t *plen)
{
    size_t i = 0;
    while (i < len && msg[i] != ' ' && msg[i] != ':' && msg[i] != '\n' && msg[i] != '\r')
        i++;
    size_t tok = i;
    if (i < len && msg[i] == ':') {
        i++;
        while (i < len && msg[i] == ' ')
            i++;
    } else if (i < len && msg[i] == '\r' && i + 1 < len && msg[i + 1] == '\n') {
        i += 2;
    } else if (i < len) {
        i++;
    }
    *payload = msg + i;
    *plen = len - i;
    return tok;
}
