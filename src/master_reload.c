/* SPDX-License-Identifier: MIT */
/* master_reload.c - daemon.workers > 1: a reload applied in place.
 *
 * The master parses and checks the new config once (tn_daemon_reload()); a
 * refused one reaches no worker. An accepted one goes to every worker as a
 * snapshot: the checked config written back out as YAML with every default
 * filled in, paths absolute and secrets included (tn_config_snapshot()).
 * A worker loads that text, not the files, so it applies exactly what the
 * master checked even if a file changed in between, and applies it as the
 * single process does (apply_config() in daemon.c: all or nothing, kept
 * listeners keep their sockets and connections, handlers whose settings did
 * not change keep their state). Listening sockets of new listeners are made
 * by the master, as at start, and passed with SCM_RIGHTS on a second
 * socketpair per worker ahead of the snapshot.
 *
 * Each worker answers "" or why it could not apply it; the reload's answer
 * waits for all of them, up to daemon.reload_timeout. A worker that failed
 * is replaced: a new worker forked from the master has the new config, and
 * the old one drains, so no worker is left on the old config. One that did
 * not answer in time (stuck, or stopped) is told to stop at once and killed
 * if it has not exited after shutdown_timeout: its loop is not running, so
 * it could serve nothing until then. One reload at a time: another asked for
 * meanwhile is refused (the workers could not tell which one they apply). When
 * daemon.workers changes, workers are started or stopped to match. */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "cluster.h"
#include "json.h"
#include "log.h"
#include "master.h"

static size_t free_seats(const tn_master *m)
{
    size_t n = 0;
    for (int i = 0; i < m->seats; i++)
        n += !m->seat_used[i];
    return n;
}

static void answer_soon(tn_mrequest *r)
{
    struct timeval now = { 0, 0 };
    evtimer_add(r->timeout_ev, &now);
}

void tn_master_reload_command(tn_master *m, void *client)
{
    char err[2048];
    m->reload_client = client;
    int rc = tn_daemon_reload(m->d, err, sizeof(err));
    m->reload_client = NULL;
    if (rc == 0)
        return; /* tn_master_apply()'s request answers */
    tn_mrequest *r = tn_master_request_new(m, client, "reload", 0);
    if (!r || !(r->error = strdup(err))) {
        tn_error("reload: out of memory for the answer");
        if (r)
            r->error = NULL;
    }
    if (r)
        answer_soon(r);
}

/* Sends the reload to W: its slot's sockets of new listeners, then the
 * snapshot. -1: the sockets could not be passed (errno). */
static int send_reload(tn_master *m, tn_mworker *w, uint64_t seq, const char *text, size_t len)
{
    uint32_t *idx = calloc(m->nsocks ? m->nsocks : 1, sizeof(*idx));
    int *fds = calloc(m->nsocks ? m->nsocks : 1, sizeof(*fds));
    if (!idx || !fds) {
        free(idx);
        free(fds);
        errno = ENOMEM;
        return -1;
    }
    size_t k = 0;
    for (size_t i = 0; i < m->nsocks; i++) {
        if (!m->socks[i].fresh)
            continue;
        idx[k] = (uint32_t)i;
        fds[k++] = m->socks[i].fds[m->socks[i].shared ? 0 : w->slot];
    }
    int rc = tn_workers_send_fds(w->fdch, idx, fds, k);
    free(idx);
    free(fds);
    if (rc < 0)
        return -1;
    tn_wreload_hdr h = { (uint32_t)k };
    struct evbuffer *out = bufferevent_get_output(w->bev);
    tn_wmsg_hdr mh = { (uint32_t)(sizeof(h) + len), TN_WMSG_RELOAD, seq };
    evbuffer_add(out, &mh, sizeof(mh));
    evbuffer_add(out, &h, sizeof(h));
    evbuffer_add(out, text, len);
    return 0;
}

static void failed_answer(tn_master_answer *a, const char *fmt, const char *why)
{
    a->body = evbuffer_new();
    if (a->body)
        evbuffer_add_printf(a->body, fmt, why);
}

int tn_master_apply(tn_master *m, tn_config *cfg, char *err, size_t errlen)
{
    tn_daemon *d = m->d;
    if (m->stopping) {
        snprintf(err, errlen, "shutting down");
        return -1;
    }
    if (m->reload) {
        snprintf(err, errlen, "a reload is in progress; try again when it is done");
        return -1;
    }
    int want = tn_master_workers_wanted(cfg), old = m->nslots;
    if (want > old && (size_t)(want - old) > free_seats(m)) {
        snprintf(err, errlen, "daemon.workers: %d more worker(s) cannot start while %zu place(s) are free (draining "
                 "workers hold the others); restart to grow this far", want - old, free_seats(m));
        return -1;
    }
    if (want > m->seats) {
        snprintf(err, errlen, "daemon.workers: at most %d without a restart", m->seats);
        return -1;
    }
    /* what a worker's apply would refuse, the master refuses first */
    tn_cluster_addr redis;
    if (tn_cluster_resolve(d, &cfg->cluster, &redis, err, errlen) < 0)
        return -1;
    char *text = NULL;
    size_t len = 0;
    size_t n = 0;
    for (tn_mworker *w = m->workers; w; w = w->next)
        n += w->bev && !w->draining && w->slot < want;
    if (tn_config_snapshot(cfg, &text, &len) < 0 || len > TN_WMSG_MAX - sizeof(tn_wreload_hdr)) {
        snprintf(err, errlen, text ? "the configuration is too large to hand to the workers (%zu bytes as YAML)"
                                   : "out of memory",
                 len);
        free(text);
        return -1;
    }
    tn_mrequest *r = tn_master_request_new(m, m->reload_client, "reload", n);
    tn_master_lsock *set = NULL;
    if (!r) {
        snprintf(err, errlen, "out of memory");
        free(text);
        return -1;
    }
    tn_master_request_timeout(r, cfg->daemon.reload_timeout);
    if (tn_master_open_sockets(&d->sd, old, want, m->socks, m->nsocks, cfg, &set, err, errlen) < 0) {
        r->client = NULL;
        tn_master_request_done(r);
        free(text);
        return -1;
    }
    /* from here on it is applied */
    for (size_t i = 0; i < m->nsocks; i++)
        tn_master_close_lsock(&m->socks[i], old); /* the ones no listener continues */
    free(m->socks);
    m->socks = set;
    m->nsocks = cfg->nlisteners;
    for (size_t i = 0; i < m->nsocks && want < old; i++)
        if (!m->socks[i].fresh) /* a fresh one has WANT slots only */
            tn_master_shrink_lsock(&m->socks[i], old, want);
    tn_config_unref(d->cfg); /* the workers have their own copies */
    d->cfg = cfg;
    m->generation++;
    m->reload = r;
    for (tn_mworker *w = m->workers; w; w = w->next) {
        if (!w->bev || w->draining)
            continue;
        if (w->slot >= want) {
            tn_info("reload: daemon.workers is %d: worker %d (pid %ld) drains", want, w->slot, (long)w->pid);
            w->draining = true;
            tn_wmsg_send(w->bev, TN_WMSG_DRAIN, 0, NULL, 0);
            continue;
        }
        tn_master_answer *a = &r->answers[r->n];
        a->slot = w->slot;
        a->pid = (long)w->pid;
        w->generation = m->generation;
        r->serials[r->n++] = w->serial;
        if (send_reload(m, w, r->seq, text, len) < 0)
            failed_answer(a, "cannot pass the new listeners' sockets: %s", strerror(errno));
        else
            r->pending++;
    }
    free(text);
    for (int i = want; i < old; i++)
        evtimer_del(m->slots[i].restart_ev);
    m->nslots = want;
    for (int i = old; i < want; i++) {
        m->slots[i].backoff_ms = 0;
        m->slots[i].restarts = 0;
        tn_info("reload: daemon.workers is %d: starting worker %d", want, i);
        tn_master_spawn(m, i);
    }
    if (!r->pending)
        answer_soon(r);
    return 0;
}

/* W could not apply the config: a new worker with it takes the slot. One
 * that answered keeps serving (the old config) until the new one does, so
 * that a new worker that cannot start either leaves the slot served; one
 * that did not answer may not read at all, and is stopped now. */
static void replace(tn_master *m, uint64_t serial, bool answered)
{
    for (tn_mworker *w = m->workers; w; w = w->next) {
        if (w->serial != serial || w->draining)
            continue;
        if (answered)
            w->superseded = true;
        else
            tn_master_stop_worker(m, w);
        if (!m->stopping && w->slot < m->nslots)
            tn_master_spawn(m, w->slot);
        return;
    }
}

void tn_master_reload_replaced(tn_master *m, const tn_mworker *w)
{
    for (tn_mworker *o = m->workers; o; o = o->next) {
        if (o != w && o->slot == w->slot && o->superseded && !o->draining) {
            tn_info("worker %d (pid %ld) replaced by pid %ld: draining", o->slot, (long)o->pid, (long)w->pid);
            o->draining = true;
            if (o->bev)
                tn_wmsg_send(o->bev, TN_WMSG_DRAIN, 0, NULL, 0);
        }
    }
}

void tn_master_reload_done(tn_mrequest *r, struct evbuffer *out)
{
    tn_master *m = r->m;
    tn_daemon *d = m->d;
    bool refused = m->reload != r; /* an accepted reload is m->reload until it is done */
    if (m->reload == r)
        m->reload = NULL;
    tn_json j;
    tn_json_init(&j, out);
    tn_json_open(&j, NULL, '{');
    tn_json_bool(&j, "ok", !refused);
    if (refused)
        tn_json_str(&j, "error", r->error ? r->error : "out of memory");
    tn_json_u64(&j, "reloads", d->reloads);
    tn_json_u64(&j, "reloads_ok", d->reloads_ok);
    tn_json_u64(&j, "reloads_refused", d->reloads_refused);
    if (refused) {
        tn_json_close(&j, '}');
        return;
    }
    size_t failed = 0;
    tn_json_open(&j, "workers", '[');
    for (size_t i = 0; i < r->n; i++) {
        tn_master_answer *a = &r->answers[i];
        size_t blen = a->body ? evbuffer_get_length(a->body) : 0;
        const char *why = a->body ? (const char *)evbuffer_pullup(a->body, -1) : NULL;
        if (!a->body)
            why = r->serials[i] ? "no answer within daemon.reload_timeout" : "it exited before answering";
        tn_json_open(&j, NULL, '{');
        tn_json_u64(&j, "slot", (uint64_t)a->slot);
        tn_json_i64(&j, "pid", a->pid);
        tn_json_bool(&j, "applied", a->body && blen == 0);
        if (!a->body || blen) {
            failed++;
            tn_json_strn(&j, "error", why, a->body ? blen : strlen(why));
            tn_error("reload: worker %d (pid %ld) could not apply the configuration: %.*s; %s", a->slot, a->pid,
                     (int)(a->body ? blen : strlen(why)), why,
                     !r->serials[i] ? "it restarts with it"
                     : a->body     ? "a new worker with it replaces it (the old one serves until then)"
                                   : "a new worker with it replaces it (the old one is stopped)");
            if (r->serials[i])
                replace(m, r->serials[i], a->body != NULL);
        }
        tn_json_close(&j, '}');
    }
    tn_json_close(&j, ']');
    tn_json_u64(&j, "failed", failed);
    tn_json_close(&j, '}');
    /* not d->last_reload_msg: a reload refused meanwhile wrote there */
    tn_info("reload complete: %zu listener(s), %zu handler(s); %zu worker(s) applied it in place, %zu replaced",
            d->cfg->nlisteners, d->cfg->nhandlers, r->n - failed, failed);
    tn_sd_notify("READY=1\nSTATUS=Reloaded: %d worker(s), %zu listener(s), %zu handler(s)", m->nslots,
                 d->cfg->nlisteners, d->cfg->nhandlers);
}
