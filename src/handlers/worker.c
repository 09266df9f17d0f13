/* SPDX-License-Identifier: MIT */
/* worker.c - the "worker" handler: persistent programs in any language,
 * many calls in flight each.
 *
 * The handler keeps `processes` programs running (spawned through proc.c:
 * own process group, pidfd reaping). Each message becomes one call line on
 * the stdin of the least loaded process (wproto.h), and its answer line,
 * matched by id, completes the job; answers come in any order. A process
 * takes at most max_inflight calls; beyond that calls wait in a FIFO of at
 * most max_queue ("busy" past it).
 *
 * Ids are slot numbers with a generation: id = gen * max_inflight + slot,
 * so finding a call is an index, and an answer to a call that timed out or
 * whose process was restarted can never match a later call in its slot.
 *
 * A process that exits, writes an answer line over max_output or lets
 * HUNG_TIMEOUTS calls in a row time out is gone: its calls in flight fail
 * at once and it is restarted after a backoff (BACKOFF_MIN_MS doubling to
 * BACKOFF_MAX_MS; back to the minimum after a process that ran STABLE_US).
 *
 * Retiring (reload, exit): a handler the registry dropped may still be
 * called, by a request that started before the reload or a WebSocket
 * connection that keeps the handler it connected with, so its processes
 * serve on until nothing but its own calls in flight refers to it (checked
 * every RETIRE_CHECK_MS). Then each process gets EOF on stdin once its
 * callers have their answers, and SIGKILL if it is still there GRACE_MS
 * later. The pool holds a reference on the handler while any process runs,
 * so the handler, and the processes' callbacks' state, outlive them.
 *
 * Lifetime rule (as in exec.c): tn_job_done() may deliver a reply to a
 * front end that reenters this handler, so every path finishes its own
 * bookkeeping first. A callback of a running process cannot see the handler
 * destroyed, since that process's pool reference is only dropped in its
 * on_done, as the last action. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/event_struct.h>

#include "clock.h"
#include "handlers/handler.h"
#include "handlers/wproto.h"
#include "log.h"
#include "proc.h"
#include "proto/http_msg.h"

#define GRACE_MS 2000
#define RETIRE_CHECK_MS 100
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 10000
#define STABLE_US ((int64_t)10 * 1000000)
#define HUNG_TIMEOUTS 3
#define TN_STR_(x) #x
#define TN_STR(x) TN_STR_(x)
#define ERRLINE_MAX 1024
/* How much of a bad answer line a warning quotes. */
#define QUOTE_MAX 120

typedef struct wstate wstate;
typedef struct wproc wproc;

/* One call: queued (wp == NULL) or sent to a process. */
typedef struct wreq {
    struct wreq *prev, *next; /* the queue */
    wstate *st;
    tn_job *job;      /* NULL once the caller went: the answer is dropped */
    char *body;       /* while queued: the call line after its id */
    size_t body_len;
    wproc *wp;
    uint32_t slot;
    struct event timer;
    bool timing;
} wreq;

struct wproc {
    wstate *st;
    int index;
    tn_proc *proc;     /* NULL while not running */
    pid_t pid;
    wreq **slots;      /* max_inflight of them; NULL = free */
    uint64_t *gen;
    uint32_t *free_slots;
    size_t nfree;
    size_t jobs;       /* calls whose caller still waits */
    int timeouts_in_row;
    int failures;      /* short lives in a row: the backoff's exponent */
    int64_t started_us;
    const char *why;   /* why we killed it: what its calls fail with */
    bool dead;         /* takes no more calls */
    bool closing;      /* stdin closed by retiring */
    char errline[ERRLINE_MAX]; /* its last stderr line (stderr: client) */
    struct event *restart_ev, *grace_ev;
};

struct wstate {
    tn_handler *h;
    char **argv;
    tn_log_limit *log_limit;
    wproc *procs;
    size_t nprocs, rr;
    size_t cap;        /* max_inflight */
    size_t live;       /* processes with a tn_proc */
    wreq *qhead, *qtail;
    size_t qn;
    struct event *start_ev, *retire_ev;
    struct evbuffer *scratch;
    bool started, unreachable, holds_ref;
};

static void spawn(wproc *wp);
static void retire_check(evutil_socket_t fd, short what, void *arg);

/* ---- the queue ------------------------------------------------------------- */

static void q_push(wstate *st, wreq *r, bool front)
{
    r->prev = r->next = NULL;
    if (!st->qhead) {
        st->qhead = st->qtail = r;
    } else if (front) {
        r->next = st->qhead;
        st->qhead->prev = r;
        st->qhead = r;
    } else {
        r->prev = st->qtail;
        st->qtail->next = r;
        st->qtail = r;
    }
    st->qn++;
}

static void q_unlink(wstate *st, wreq *r)
{
    if (r->prev)
        r->prev->next = r->next;
    else
        st->qhead = r->next;
    if (r->next)
        r->next->prev = r->prev;
    else
        st->qtail = r->prev;
    r->prev = r->next = NULL;
    st->qn--;
}

static void req_free(wreq *r)
{
    if (r->timing)
        event_del(&r->timer);
    free(r->body);
    free(r);
}

/* ---- processes -------------------------------------------------------------- */

static size_t inflight(const wproc *wp)
{
    return wp->st->cap - wp->nfree;
}

/* The running process with the fewest calls in flight and room for one
 * more; ties go round robin. */
static wproc *pick(wstate *st)
{
    wproc *best = NULL;
    size_t best_n = 0;
    for (size_t k = 0; k < st->nprocs; k++) {
        wproc *wp = &st->procs[(st->rr + k) % st->nprocs];
        if (!wp->proc || wp->dead || !wp->nfree)
            continue;
        size_t n = inflight(wp);
        if (!best || n < best_n) {
            best = wp;
            best_n = n;
        }
    }
    if (best)
        st->rr = (size_t)(best->index + 1) % st->nprocs;
    return best;
}

static void kill_proc(wproc *wp, const char *why)
{
    if (!wp->proc || wp->why)
        return;
    wp->why = why;
    wp->dead = true;
    tn_warn("handler %s: worker %d (pid %d): %s, killing it", wp->st->h->name, wp->index, (int)wp->pid, why);
    tn_proc_kill(wp->proc, SIGKILL);
}

/* Writes R's call line (BODY: everything after the id) to WP. */
static int send_call(wproc *wp, wreq *r, const char *body, size_t len)
{
    wstate *st = wp->st;
    uint32_t slot = wp->free_slots[wp->nfree - 1];
    uint64_t id = (wp->gen[slot] + 1) * st->cap + slot;
    char pre[40];
    int n = snprintf(pre, sizeof(pre), "{\"id\":%llu", (unsigned long long)id);
    if (tn_proc_write(wp->proc, pre, (size_t)n) < 0 || tn_proc_write(wp->proc, body, len) < 0) {
        kill_proc(wp, "it closed its input");
        return -1;
    }
    wp->nfree--;
    wp->gen[slot]++;
    wp->slots[slot] = r;
    r->wp = wp;
    r->slot = slot;
    if (r->job)
        wp->jobs++;
    return 0;
}

static void release_slot(wproc *wp, uint32_t slot)
{
    wp->slots[slot] = NULL;
    wp->free_slots[wp->nfree++] = slot;
}

/* Retiring: a process whose callers all have their answers gets EOF. */
static void grace_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    wproc *wp = arg;
    if (wp->proc) {
        tn_warn("handler %s: worker %d (pid %d) still running %d ms after its input closed, killing it",
                wp->st->h->name, wp->index, (int)wp->pid, GRACE_MS);
        tn_proc_kill(wp->proc, SIGKILL);
    }
}

static void maybe_close(wproc *wp)
{
    wstate *st = wp->st;
    if (!st->unreachable || !wp->proc || wp->closing || wp->jobs || st->qn)
        return;
    wp->closing = true;
    wp->dead = true;
    tn_proc_close_stdin(wp->proc, false);
    struct timeval tv = { GRACE_MS / 1000, (GRACE_MS % 1000) * 1000 };
    if (evtimer_add(wp->grace_ev, &tv) < 0)
        tn_proc_kill(wp->proc, SIGKILL);
}

/* Queued calls go to processes with room; retiring processes that have
 * nothing left to do are closed. No job completes in here. */
static void settle(wstate *st)
{
    while (st->qhead) {
        wproc *wp = pick(st);
        if (!wp)
            break;
        wreq *r = st->qhead;
        q_unlink(st, r);
        if (send_call(wp, r, r->body, r->body_len) < 0) {
            q_push(st, r, true);
            continue;
        }
        free(r->body);
        r->body = NULL;
        r->body_len = 0;
    }
    for (size_t i = 0; i < st->nprocs; i++)
        maybe_close(&st->procs[i]);
}

static void schedule_restart(wproc *wp)
{
    if (wp->started_us && tn_now_us() - wp->started_us >= STABLE_US)
        wp->failures = 0;
    int ms = BACKOFF_MIN_MS << (wp->failures < 10 ? wp->failures : 10);
    if (ms > BACKOFF_MAX_MS)
        ms = BACKOFF_MAX_MS;
    wp->failures++;
    struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };
    evtimer_add(wp->restart_ev, &tv);
    tn_warn("handler %s: restarting worker %d in %d ms", wp->st->h->name, wp->index, ms);
}

static void restart_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    wproc *wp = arg;
    wp->st->h->stats.restarts++;
    spawn(wp);
}

/* ---- answers ------------------------------------------------------------------ */

/* Control characters in an error detail would break line framing. */
static void flatten(char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            s[i] = ' ';
}

/* An answer's HTTP status and headers, onto the response. */
static void http_answer(tn_http_request *req, const tn_wreply *rep)
{
    if (rep->status)
        req->status = rep->status;
    for (size_t i = 0; i < rep->nheaders; i++) {
        const char *name = tn_http_strdup(req, rep->hname[i], strlen(rep->hname[i]));
        const char *value = tn_http_strdup(req, rep->hvalue[i], strlen(rep->hvalue[i]));
        if (!strcasecmp(name, "Content-Type"))
            tn_http_set_header(req, "Content-Type", value);
        else
            tn_http_add_header(req, name, value);
    }
}

static void answer_line(wproc *wp, const char *line, size_t len)
{
    wstate *st = wp->st;
    tn_wreply rep;
    char err[128];
    int rc = tn_wproto_parse(line, len, &rep, err, sizeof(err));
    uint64_t slot = rep.have_id ? rep.id % st->cap : 0;
    wreq *r = NULL;
    if (rep.have_id && wp->slots[slot] && wp->gen[slot] == rep.id / st->cap)
        r = wp->slots[slot];
    if (!r) {
        if (tn_log_limit_take(st->log_limit, tn_now_us()))
            tn_warn("handler %s: worker %d (pid %d): ignored output line (%s): %.*s%s", st->h->name, wp->index,
                    (int)wp->pid, rc < 0 ? err : "no call has this id", (int)(len < QUOTE_MAX ? len : QUOTE_MAX),
                    line, len > QUOTE_MAX ? "..." : "");
        tn_wproto_free(&rep);
        return;
    }
    release_slot(wp, (uint32_t)slot);
    wp->timeouts_in_row = 0;
    tn_job *job = r->job;
    if (job)
        wp->jobs--;
    req_free(r);
    settle(st);
    if (!job) {
        tn_wproto_free(&rep);
        return;
    }
    job->cancel = NULL;
    if (rc == 0 && job->ctx.http)
        http_answer(job->ctx.http, &rep);
    if (rc < 0) {
        char detail[160];
        snprintf(detail, sizeof(detail), "invalid answer from worker: %s", err);
        tn_job_done(job, TN_FAIL, detail, strlen(detail));
    } else if (rep.is_error) {
        flatten(rep.text, rep.len);
        tn_job_done(job, TN_FAIL, rep.text, rep.len);
    } else {
        tn_job_done(job, TN_REPLY, rep.text, rep.len);
    }
    tn_wproto_free(&rep);
}

static void on_stdout(tn_proc *p, void *arg, bool eof)
{
    wproc *wp = arg;
    struct evbuffer *out = tn_proc_stdout(p);
    size_t max = (size_t)wp->st->h->conf.max_output;
    for (;;) {
        size_t avail = evbuffer_get_length(out);
        if (!avail || wp->why)
            break;
        struct evbuffer_ptr nl = evbuffer_search(out, "\n", 1, NULL);
        size_t len = nl.pos < 0 ? avail : (size_t)nl.pos;
        if (len > max) {
            kill_proc(wp, "answer line over max_output");
            break;
        }
        if (nl.pos < 0) {
            if (eof && tn_log_limit_take(wp->st->log_limit, tn_now_us()))
                tn_warn("handler %s: worker %d (pid %d): ignored unterminated output at exit", wp->st->h->name,
                        wp->index, (int)wp->pid);
            if (!eof)
                return;
            break;
        }
        const char *line = (const char *)evbuffer_pullup(out, (ev_ssize_t)len + 1);
        size_t ll = len && line[len - 1] == '\r' ? len - 1 : len;
        if (ll)
            answer_line(wp, line, ll);
        evbuffer_drain(out, len + 1);
    }
    evbuffer_drain(out, evbuffer_get_length(out));
}

static void on_stderr_line(tn_proc *p, void *arg, const char *line, size_t len)
{
    (void)p;
    wproc *wp = arg;
    snprintf(wp->errline, sizeof(wp->errline), "%.*s", (int)len, line);
}

static void on_done(tn_proc *p, void *arg, int status)
{
    wproc *wp = arg;
    wstate *st = wp->st;
    tn_handler *h = st->h;
    char how[64], detail[ERRLINE_MAX + 128];
    tn_proc_status_text(status, how, sizeof(how));
    if (wp->why)
        snprintf(detail, sizeof(detail), "worker killed: %s", wp->why);
    else
        snprintf(detail, sizeof(detail), "worker exited (%s)", how);
    if (h->conf.stderr_mode == TN_STDERR_CLIENT && wp->errline[0]) {
        size_t n = strlen(detail);
        snprintf(detail + n, sizeof(detail) - n, ": %s", wp->errline);
        flatten(detail, strlen(detail));
    }
    if (wp->closing)
        tn_info("handler %s: worker %d (pid %d) ended: %s", h->name, wp->index, (int)wp->pid, how);
    else
        tn_warn("handler %s: worker %d (pid %d) ended: %s", h->name, wp->index, (int)wp->pid, how);
    tn_proc_free(p);
    wp->proc = NULL;
    wp->dead = true;
    event_del(wp->grace_ev);
    if (!st->unreachable || st->qn)
        schedule_restart(wp);
    /* Each failed job may reenter handle(), which no longer picks this
     * process; the pool's reference keeps the state until the end. */
    for (uint32_t slot = 0; slot < st->cap; slot++) {
        wreq *r = wp->slots[slot];
        if (!r)
            continue;
        release_slot(wp, slot);
        tn_job *job = r->job;
        req_free(r);
        if (job) {
            wp->jobs--;
            job->cancel = NULL;
            tn_job_done(job, TN_FAIL, detail, strlen(detail));
        }
    }
    settle(st);
    h->stats.processes = --st->live;
    if (st->live == 0 && st->holds_ref) {
        st->holds_ref = false;
        tn_handler_unref(h); /* last: may destroy the handler */
    }
}

static const tn_proc_ops worker_proc_ops = {
    .on_stdout = on_stdout,
    .on_stderr_line = on_stderr_line,
    .on_done = on_done,
};

static void spawn(wproc *wp)
{
    wstate *st = wp->st;
    tn_handler *h = st->h;
    const tn_handler_conf *c = &h->conf;
    char err[256];
    char **envp = tn_proc_env(c, NULL);
    if (!envp) {
        tn_warn("handler %s: cannot start worker %d: out of memory", h->name, wp->index);
        schedule_restart(wp);
        return;
    }
    tn_proc_opts o = {
        .argv = st->argv,
        .envp = envp,
        .cwd = c->cwd,
        .stderr_mode = c->stderr_mode,
        .stderr_line_max = ERRLINE_MAX,
        .name = h->name,
        .stderr_limit = st->log_limit,
    };
    wp->started_us = tn_now_us();
    wp->proc = tn_proc_spawn(h->base, &o, &worker_proc_ops, wp, err, sizeof(err));
    tn_proc_env_free(envp);
    if (!wp->proc) {
        tn_warn("handler %s: worker %d: %s", h->name, wp->index, err);
        schedule_restart(wp);
        return;
    }
    wp->pid = tn_proc_pid(wp->proc);
    wp->why = NULL;
    wp->dead = wp->closing = false;
    wp->timeouts_in_row = 0;
    wp->errline[0] = '\0';
    h->stats.processes = ++st->live;
    if (!st->holds_ref) {
        st->holds_ref = true;
        tn_handler_ref(h);
    }
    tn_info("handler %s: worker %d started, pid %d", h->name, wp->index, (int)wp->pid);
    settle(st);
}

static void start_all(wstate *st)
{
    if (st->started)
        return;
    st->started = true;
    event_del(st->start_ev);
    for (size_t i = 0; i < st->nprocs; i++)
        spawn(&st->procs[i]);
}

static void start_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    start_all(arg);
}

/* ---- calls -------------------------------------------------------------------- */

static void timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    wreq *r = arg;
    wstate *st = r->st;
    tn_job *job = r->job;
    r->timing = false;
    if (!r->wp) {
        q_unlink(st, r);
        req_free(r);
        settle(st);
    } else {
        wproc *wp = r->wp;
        release_slot(wp, r->slot);
        req_free(r);
        if (job) {
            wp->jobs--;
            if (++wp->timeouts_in_row >= HUNG_TIMEOUTS)
                kill_proc(wp, "its calls timed out " TN_STR(HUNG_TIMEOUTS) " times in a row");
        }
        settle(st);
    }
    if (job) {
        job->cancel = NULL;
        tn_job_done(job, TN_FAIL, "timeout", 7);
    }
}

/* The caller went. A queued call ends now; a sent one stays in its slot
 * (the process is working on it) and its answer is dropped. */
static void worker_cancel(tn_job *job)
{
    wreq *r = job->hstate;
    wstate *st = r->st;
    job->cancel = NULL;
    r->job = NULL;
    if (!r->wp) {
        q_unlink(st, r);
        req_free(r);
    } else {
        r->wp->jobs--;
    }
    settle(st);
    tn_job_done(job, TN_FAIL, "cancelled", 9);
}

static tn_result worker_handle(tn_handler *h, tn_call *call)
{
    wstate *st = h->state;
    if (!st) {
        evbuffer_add_printf(call->out, "shutting down");
        return TN_FAIL;
    }
    start_all(st);
    wreq *r = calloc(1, sizeof(*r));
    if (!r) {
        evbuffer_add_printf(call->out, "out of memory");
        return TN_FAIL;
    }
    r->st = st;
    struct evbuffer *b = st->scratch;
    evbuffer_drain(b, evbuffer_get_length(b));
    tn_wproto_encode(b, &call->ctx, call->payload, call->len);
    size_t blen = evbuffer_get_length(b);
    const char *body = (const char *)evbuffer_pullup(b, -1);
    /* Sent before the job exists, so that "busy" is a plain answer; a
     * process that fails the write is dead and the next one is tried. */
    wproc *wp = NULL;
    while (!st->qhead && (wp = pick(st)) && send_call(wp, r, body, blen) < 0)
        wp = NULL;
    if (!wp) {
        if (st->qn >= (size_t)h->conf.max_queue || !(r->body = malloc(blen))) {
            free(r);
            evbuffer_add_printf(call->out, st->qn >= (size_t)h->conf.max_queue ? "busy" : "out of memory");
            return TN_FAIL;
        }
        memcpy(r->body, body, blen);
        r->body_len = blen;
    }
    tn_job *job = tn_job_begin(call);
    if (job) {
        r->job = job;
        job->hstate = r;
        job->cancel = worker_cancel;
        if (wp)
            wp->jobs++;
        else
            q_push(st, r, false);
    } else if (!wp) {
        req_free(r);
        evbuffer_add_printf(call->out, "out of memory");
        return TN_FAIL;
    }
    /* without a job a sent call stays in its slot, its answer dropped */
    if (h->conf.timeout > 0) {
        struct timeval tv = { (time_t)(h->conf.timeout / 1000), (suseconds_t)(h->conf.timeout % 1000) * 1000 };
        event_assign(&r->timer, h->base, -1, 0, timeout_cb, r);
        r->timing = evtimer_add(&r->timer, &tv) == 0;
    }
    if (!job) {
        evbuffer_add_printf(call->out, "out of memory");
        return TN_FAIL;
    }
    return TN_LATER;
}

/* ---- lifetime ----------------------------------------------------------------- */

static void state_free(wstate *st)
{
    for (size_t i = 0; st->procs && i < st->nprocs; i++) {
        wproc *wp = &st->procs[i];
        free(wp->slots);
        free(wp->gen);
        free(wp->free_slots);
        if (wp->restart_ev)
            event_free(wp->restart_ev);
        if (wp->grace_ev)
            event_free(wp->grace_ev);
    }
    free(st->procs);
    if (st->start_ev)
        event_free(st->start_ev);
    if (st->retire_ev)
        event_free(st->retire_ev);
    if (st->scratch)
        evbuffer_free(st->scratch);
    tn_log_limit_free(st->log_limit);
    free(st->argv);
    free(st);
}

static int worker_init(tn_handler *h, char *err, size_t errlen)
{
    if (tn_proc_check_conf(&h->conf, NULL, err, errlen) < 0)
        return -1;
    wstate *st = calloc(1, sizeof(*st));
    if (!st) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    st->h = h;
    st->nprocs = (size_t)h->conf.processes;
    st->cap = (size_t)h->conf.max_inflight;
    bool ok = (st->argv = tn_proc_argv(&h->conf.command)) && (st->log_limit = tn_log_limit_new(h->base, h->name)) &&
              (st->scratch = evbuffer_new()) && (st->procs = calloc(st->nprocs, sizeof(*st->procs))) &&
              (st->start_ev = evtimer_new(h->base, start_cb, st)) &&
              (st->retire_ev = event_new(h->base, -1, EV_PERSIST, retire_check, st));
    for (size_t i = 0; ok && i < st->nprocs; i++) {
        wproc *wp = &st->procs[i];
        wp->st = st;
        wp->index = (int)i;
        ok = (wp->slots = calloc(st->cap, sizeof(*wp->slots))) && (wp->gen = calloc(st->cap, sizeof(*wp->gen))) &&
             (wp->free_slots = calloc(st->cap, sizeof(*wp->free_slots))) &&
             (wp->restart_ev = evtimer_new(h->base, restart_cb, wp)) &&
             (wp->grace_ev = evtimer_new(h->base, grace_cb, wp));
        /* slot 0 is taken first */
        for (size_t s = 0; ok && s < st->cap; s++)
            wp->free_slots[s] = (uint32_t)(st->cap - 1 - s);
        wp->nfree = st->cap;
    }
    /* Started from the loop, not here: a reload that fails after building
     * this handler drops it without any process having run. */
    struct timeval now = { 0, 0 };
    if (!ok || evtimer_add(st->start_ev, &now) < 0) {
        state_free(st);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    h->state = st;
    return 0;
}

/* Nothing can call a retired handler any more once the only references
 * left are the pool's and its jobs' (besides OTHERS about to go). */
static void check_unreachable(wstate *st, int others)
{
    tn_handler *h = st->h;
    if (st->unreachable || h->refs - others > (st->holds_ref ? 1 : 0) + (int)h->stats.in_flight)
        return;
    st->unreachable = true;
    event_del(st->retire_ev);
    if (!st->qn)
        for (size_t i = 0; i < st->nprocs; i++)
            event_del(st->procs[i].restart_ev);
    settle(st);
}

static void retire_check(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    check_unreachable(arg, 0);
}

static void worker_retire(tn_handler *h)
{
    wstate *st = h->state;
    if (!st)
        return;
    st->started = true; /* a handler never used starts nothing now */
    event_del(st->start_ev);
    struct timeval tv = { 0, RETIRE_CHECK_MS * 1000 };
    event_add(st->retire_ev, &tv);
    check_unreachable(st, 1); /* the registry's reference goes right after this */
}

/* Normally nothing runs here any more: the pool's reference keeps the
 * handler while a process runs and every job holds one. At exit the
 * registry destroys handlers that are still busy: processes are killed
 * and their callers answered, with one more reference taken first (as in
 * exec.c) lest those answers destroy the handler a second time. */
static void worker_destroy(tn_handler *h)
{
    wstate *st = h->state;
    if (!st)
        return;
    h->state = NULL;
    tn_handler_ref(h);
    while (st->qhead) {
        wreq *r = st->qhead;
        tn_job *job = r->job;
        q_unlink(st, r);
        req_free(r);
        job->cancel = NULL;
        tn_job_done(job, TN_FAIL, "shutting down", 13);
    }
    for (size_t i = 0; i < st->nprocs; i++) {
        wproc *wp = &st->procs[i];
        tn_proc_free(wp->proc);
        wp->proc = NULL;
        for (uint32_t slot = 0; slot < st->cap; slot++) {
            wreq *r = wp->slots[slot];
            if (!r)
                continue;
            wp->slots[slot] = NULL;
            tn_job *job = r->job;
            req_free(r);
            if (job) {
                job->cancel = NULL;
                tn_job_done(job, TN_FAIL, "shutting down", 13);
            }
        }
    }
    state_free(st);
}

const tn_handler_ops tn_worker_ops = {
    .type = "worker",
    .init = worker_init,
    .handle = worker_handle,
    .retire = worker_retire,
    .destroy = worker_destroy,
};
