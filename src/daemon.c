/* SPDX-License-Identifier: MIT */
/* daemon.c - the running state: startup, the loop, reload and shutdown.
 *
 * Everything is an event on one event_base: listeners, connections, child
 * processes, timers and the signals (through libevent's signal events, so
 * handlers run in the loop, never in signal context).
 *
 * Reload builds everything new before touching anything old: the config is
 * loaded and checked (tn_check_startup(), as -t and the start do), the
 * handler registry is rebuilt (a failure leaves the old one), and only then
 * are listeners matched up. A listener whose
 * protocol and address are unchanged keeps its socket and connections and
 * picks up the new limits and handlers; new ones open; removed ones stop
 * accepting and drain. A config lives as long as something made from it:
 * listeners and HTTP routers (and through them requests in flight) hold a
 * reference on theirs. */
#include "daemon.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "clock.h"
#include "cluster.h"
#include "control.h"
#include "log.h"
#include "net/conn.h"
#include "net/linger.h"
#include "net/listener.h"
#include "proto/protocols.h"
#include "proto/ws.h"
#include "workers.h"

/* The one daemon state (signal events and libraries' callbacks reach it
 * through their arguments; nothing else is global). */
static tn_daemon daemon_state;

/* ---- before the loop sleeps ----------------------------------------------- */

void tn_before_sleep_add(tn_daemon *d, tn_pass_job *job)
{
    tn_pass_job **pp = &d->before_sleep;
    while (*pp)
        pp = &(*pp)->next;
    job->next = NULL;
    job->due = false;
    *pp = job;
}

void tn_before_sleep_remove(tn_daemon *d, tn_pass_job *job)
{
    if (d->before_sleep_next == job)
        d->before_sleep_next = job->next;
    for (tn_pass_job **pp = &d->before_sleep; *pp; pp = &(*pp)->next)
        if (*pp == job) {
            *pp = job->next;
            break;
        }
    job->next = NULL;
    job->due = false;
}

/* Runs after the pass's other callbacks: libevent runs an event activated
 * from a callback after the ones already active. */
static void on_before_sleep(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    tn_before_sleep_run(arg);
}

/* A job may remove others, the next one included, and free them: a proxy
 * handler's last connection reaped with its listener takes the handler's
 * job with it. So the next job is kept where removal sees it. */
void tn_before_sleep_run(tn_daemon *d)
{
    for (tn_pass_job *j = d->before_sleep; j; j = d->before_sleep_next) {
        d->before_sleep_next = j->next;
        if (j->due) {
            j->due = false;
            j->run(j->arg);
        }
    }
    d->before_sleep_next = NULL;
}

/* Closed connections are freed, and while stopping the daemon looks
 * whether anything is left, once a pass: whatever ended in it (a
 * connection, a reply owed) marked this due (tn_state_idle_check). */
static void reap(void *arg)
{
    tn_daemon *d = arg;
    tn_conn_reap(d);
    if (d->stopping)
        tn_daemon_check_stopped(d);
}

static void on_sweep(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    tn_daemon *d = arg;
    struct timeval now;
    event_base_gettimeofday_cached(d->base, &now);
    for (tn_listener *l = d->listeners; l; l = l->next)
        tn_peers_sweep(&l->peers, now.tv_sec, tn_now_us());
}

static bool in_flight(tn_daemon *d)
{
    for (tn_conn_base *b = d->conns; b; b = b->next)
        if (b->kind->busy && b->kind->busy(b))
            return true;
    for (tn_listener *l = d->listeners; l; l = l->next)
        if (tn_listener_in_flight(l))
            return true;
    return false;
}

void tn_daemon_check_stopped(tn_daemon *d)
{
    if (d->stopping && !d->conns && !d->relays && !in_flight(d))
        event_base_loopexit(d->base, NULL);
}

/* Every connection ends now: WebSockets with the libwebsockets context,
 * the others one by one. */
static void close_all(tn_daemon *d, const char *why)
{
    tn_ws_free(d);
    while (d->conns && d->conns->kind->abort)
        d->conns->kind->abort(d->conns, why);
    while (d->relays)
        d->relays->kind->abort(d->relays, why);
}

static void on_shutdown_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    tn_daemon *d = arg;
    tn_warn("shutdown: timeout reached, closing %llu connection(s)", (unsigned long long)d->active);
    close_all(d, "shutdown");
    event_base_loopexit(d->base, NULL);
}

void tn_daemon_shutdown(tn_daemon *d, const char *why)
{
    if (d->master) {
        d->master_ops->shutdown(d->master, why);
        return;
    }
    if (d->stopping && !d->draining)
        return;
    d->stopping = true;
    d->draining = false;
    tn_sd_notify("STOPPING=1\nSTATUS=Shutting down (%s)", why);
    tn_info("shutting down (%s): %llu connection(s) open", why, (unsigned long long)d->active);
    for (tn_listener *l = d->listeners; l; l = l->next)
        tn_listener_stop(l);
    /* idle connections go now; busy ones when their replies are out;
     * WebSockets get a 1001 close after what is queued */
    for (tn_conn_base *b = d->conns, *next; b; b = next) {
        next = b->next;
        b->kind->shutdown(b);
    }
    struct timeval tv = { d->cfg->daemon.shutdown_timeout / 1000, (d->cfg->daemon.shutdown_timeout % 1000) * 1000 };
    evtimer_add(d->shutdown_ev, &tv);
    tn_daemon_check_stopped(d);
}

void tn_daemon_drain(tn_daemon *d)
{
    if (d->stopping)
        return;
    d->stopping = d->draining = true;
    tn_info("draining: %llu connection(s) open", (unsigned long long)d->active);
    for (tn_listener *l = d->listeners; l; l = l->next)
        tn_listener_stop(l);
    /* A connection that has not sent its first message yet may have sent
     * it already on its way: it is answered (then closed, as the daemon is
     * stopping), so that a reload fails no request. */
    for (tn_conn_base *b = d->conns, *next; b; b = next) {
        next = b->next;
        if (b->msgs_in && b->kind->drain)
            b->kind->drain(b);
    }
    tn_daemon_check_stopped(d);
}

/* ---- reload ---------------------------------------------------------------- */

/* The running listener a new listener config continues: same protocol and
 * address (and the same name, first; port 0 only by name), each taken once. */
static tn_listener *find_listener(tn_daemon *d, const tn_listener_conf *conf, tn_listener **taken, size_t ntaken)
{
    char host[256];
    int port = 0;
    tn_parse_listen(conf->listen, host, sizeof(host), &port);
    for (int pass = 0; pass < 2; pass++) {
        for (tn_listener *l = d->listeners; l; l = l->next) {
            if (l->draining || l->protocol != conf->protocol || strcmp(l->conf->listen, conf->listen) != 0)
                continue;
            if (pass == 0 ? strcmp(l->name, conf->name) != 0 : port == 0)
                continue;
            bool used = false;
            for (size_t i = 0; i < ntaken && !used; i++)
                used = taken[i] == l;
            if (!used)
                return l;
        }
    }
    return NULL;
}

/* Listeners a failed reload had opened: they never served. */
static void free_opened(tn_listener *opened)
{
    while (opened) {
        tn_listener *n = opened->next;
        opened->next = NULL;
        tn_listener_free(opened);
        opened = n;
    }
}

/* Applies NEWCFG; on failure nothing changed and err says why. */
static int apply_config(tn_daemon *d, tn_config *newcfg, char *err, size_t errlen)
{
    tn_cluster_addr redis;
    if (tn_cluster_resolve(d, &newcfg->cluster, &redis, err, errlen) < 0)
        return -1;
    if (tn_registry_apply(d->registry, newcfg, err, errlen) < 0)
        return -1;
    tn_listener **keep = calloc(newcfg->nlisteners ? newcfg->nlisteners : 1, sizeof(*keep));
    tn_listener *opened = NULL;
    if (!keep) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < newcfg->nlisteners; i++) {
        tn_listener_conf *lc = &newcfg->listeners[i];
        keep[i] = find_listener(d, lc, keep, i);
        if (keep[i])
            continue;
        tn_listener *l = tn_listener_open(d, newcfg, lc, tn_proto_ops_for(lc->protocol), err, errlen);
        if (!l) {
            free_opened(opened);
            free(keep);
            return -1;
        }
        l->next = opened;
        opened = l;
    }
    /* Certificates of kept listeners load now, so that a bad one leaves the
     * old one serving. */
    tn_diag diag = { 0 };
    for (size_t i = 0; i < newcfg->nlisteners; i++)
        if (keep[i])
            tn_listener_prepare(keep[i], &newcfg->listeners[i], &diag);
    if (tn_diag_errors(&diag)) {
        char *all = tn_diag_join(&diag);
        snprintf(err, errlen, "%s", all ? all : "cannot set up TLS");
        free(all);
        tn_diag_free(&diag);
        for (size_t i = 0; i < newcfg->nlisteners; i++)
            if (keep[i])
                tn_listener_unprepare(keep[i]);
        free_opened(opened);
        free(keep);
        return -1;
    }
    tn_diag_free(&diag); /* its warnings came from tn_check_startup() already */
    /* From here on nothing fails that the old state needs. */
    for (size_t i = 0; i < newcfg->nlisteners; i++)
        if (keep[i] && tn_listener_configure(keep[i], newcfg, &newcfg->listeners[i], err, errlen) < 0)
            tn_warn("reload: %s", err);
    for (tn_conn_base *b = d->conns; b; b = b->next)
        if (b->kind->reconfigure)
            b->kind->reconfigure(b); /* new limits */
    for (tn_listener *l = d->listeners; l; l = l->next) {
        bool kept = false;
        for (size_t i = 0; i < newcfg->nlisteners && !kept; i++)
            kept = keep[i] == l;
        if (!kept && !l->draining) {
            tn_info("listener %s: removed, draining %llu connection(s)", l->name,
                    (unsigned long long)l->stats.active_connections);
            l->draining = true;
            tn_listener_stop(l);
        }
    }
    while (opened) {
        tn_listener *n = opened->next;
        opened->next = d->listeners;
        d->listeners = opened;
        opened = n;
    }
    free(keep);
    tn_cluster_apply(d, &newcfg->cluster, &redis);
    /* draining listeners with nothing left go now */
    for (tn_listener *l = d->listeners, *next; l; l = next) {
        next = l->next;
        if (l->draining && l->stats.active_connections == 0 && !tn_listener_in_flight(l))
            tn_listener_free(l);
    }
    return 0;
}

static void notify_status(tn_daemon *d, const char *prefix)
{
    size_t serving = 0;
    for (tn_listener *l = d->listeners; l; l = l->next)
        serving += !l->draining && l->fd >= 0;
    tn_sd_notify("STATUS=%s%zu listener(s), %zu handler(s), %llu connection(s)", prefix, serving,
                 tn_registry_count(d->registry), (unsigned long long)d->active);
}

/* The running state takes CFG (applied). */
static void take_config(tn_daemon *d, tn_config *cfg)
{
    bool poll_changed = cfg->daemon.busy_poll_us != d->cfg->daemon.busy_poll_us ||
                        cfg->daemon.coalesce_us != d->cfg->daemon.coalesce_us;
    tn_config_unref(d->cfg); /* draining listeners and routers in use keep it */
    d->cfg = cfg;
    if (poll_changed)
        event_base_loopbreak(d->base); /* run_loop() switches between its two ways */
}

/* A worker's reload: the master's checked config, applied as the single
 * process applies its own. */
static int worker_reload(tn_daemon *d, tn_config *cfg, char *err, size_t errlen)
{
    if (d->stopping) {
        snprintf(err, errlen, "stopping");
        return -1;
    }
    if (apply_config(d, cfg, err, errlen) < 0) {
        tn_log_lines(TN_LOG_ERROR, "reload failed, keeping the running configuration: ", err);
        return -1;
    }
    if (d->cli_log_level < 0)
        tn_log_set_level(cfg->daemon.log_level);
    take_config(d, cfg);
    tn_info("reload applied: %zu listener(s), %zu handler(s)", cfg->nlisteners, cfg->nhandlers);
    return 0;
}

int tn_daemon_reload(tn_daemon *d, char *err, size_t errlen)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    tn_sd_notify("RELOADING=1\nMONOTONIC_USEC=%llu\nSTATUS=Reloading %s",
                 (unsigned long long)ts.tv_sec * 1000000ULL + (unsigned long long)ts.tv_nsec / 1000, d->config_path);
    tn_info("reloading %s", d->config_path);
    tn_diag diag = { 0 };
    tn_config *cfg = tn_config_load(d->config_path, &diag);
    err[0] = '\0';
    if (cfg && tn_check_startup(cfg, &diag) < 0) {
        tn_config_unref(cfg);
        cfg = NULL;
    }
    if (!cfg) {
        char *all = tn_diag_join(&diag);
        snprintf(err, errlen, "%s", all ? all : "invalid configuration");
        free(all);
    } else {
        for (int i = 0; i < diag.count; i++)
            tn_warn("%s", diag.msgs[i]);
    }
    tn_diag_free(&diag);
    /* the master has its workers apply it (and takes it) */
    if (cfg && (d->master ? d->master_ops->apply(d->master, cfg, err, errlen) : apply_config(d, cfg, err, errlen)) < 0) {
        tn_config_unref(cfg);
        cfg = NULL;
    }
    if (cfg && !d->master)
        take_config(d, cfg);
    d->reloads++;
    d->last_reload_ms = tn_wall_ms();
    d->last_reload_ok = cfg != NULL;
    if (!cfg) {
        d->reloads_refused++;
        snprintf(d->last_reload_msg, sizeof(d->last_reload_msg), "%s", err);
        tn_log_lines(TN_LOG_ERROR, "reload failed, keeping the running configuration: ", err);
        /* first line only: STATUS is one line */
        char first[512];
        snprintf(first, sizeof(first), "%s", err);
        first[strcspn(first, "\n")] = '\0';
        tn_sd_notify("READY=1\nSTATUS=Reload failed: %s", first);
        return -1;
    }
    if (d->control && strcmp(cfg->daemon.control_socket, tn_control_path(d->control)) != 0)
        tn_warn("reload: control_socket changes take effect at the next start");
    d->reloads_ok++;
    if (d->cli_log_level < 0)
        tn_log_set_level(cfg->daemon.log_level);
    snprintf(d->last_reload_msg, sizeof(d->last_reload_msg), "%zu listener(s), %zu handler(s)", cfg->nlisteners,
             cfg->nhandlers);
    if (d->master)
        return 0; /* complete when every worker has applied it (master.c) */
    tn_info("reload complete: %s", d->last_reload_msg);
    tn_sd_notify("READY=1");
    notify_status(d, "Reloaded: ");
    return 0;
}


/* ---- signals ----------------------------------------------------------------- */

/* The signals an operator may send. QUIT stops like TERM (as in most
 * servers, a graceful stop), USR1 reopens log files for logrotate. USR2,
 * WINCH and ALRM mean nothing here; a stray one is logged instead of
 * ending the process, which the default action of USR2 and ALRM would
 * (WINCH at info: a terminal resize sends it to a daemon in the
 * foreground; USR2 is nginx's binary upgrade, worth a warning when it
 * does nothing). */
static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)what;
    tn_daemon *d = arg;
    switch (sig) {
    case SIGTERM: tn_daemon_shutdown(d, "SIGTERM"); break;
    case SIGINT: tn_daemon_shutdown(d, "SIGINT"); break;
    case SIGQUIT: tn_daemon_shutdown(d, "SIGQUIT"); break;
    case SIGHUP:
        if (d->worker) {
            /* a terminal's hangup reaches the whole group: the master reloads */
            tn_info("SIGHUP: ignored by a worker process (the master reloads)");
        } else if (!d->stopping) {
            char err[2048];
            tn_daemon_reload(d, err, sizeof(err));
        }
        break;
    case SIGUSR1: {
        size_t failed = 0, n = tn_logfile_reopen_all(d->logfiles, &failed);
        if (failed)
            tn_warn("SIGUSR1: reopened %zu log file(s), %zu could not be reopened", n, failed);
        else
            tn_info("SIGUSR1: reopened %zu log file(s)", n);
        break;
    }
    default:
        tn_log(sig == SIGWINCH ? TN_LOG_INFO : TN_LOG_WARN, "SIG%s received: ignored (no meaning for tusknetd)",
               sigabbrev_np((int)sig));
        break;
    }
}

/* ---- run ----------------------------------------------------------------------- */

static void free_state(tn_daemon *d)
{
    tn_workers_free(d->worker);
    d->worker = NULL;
    tn_control_close(d->control);
    d->control = NULL;
    close_all(d, NULL);
    tn_conn_reap(d);
    tn_linger_free_all(d);
    while (d->listeners)
        tn_listener_free(d->listeners);
    tn_cluster_free(d);
    /* children cut short by the shutdown get a moment to be reaped */
    tn_registry_free(d->registry, 3000);
    for (int i = 0; i < TN_NSIGNALS; i++)
        if (d->sig_ev[i])
            event_free(d->sig_ev[i]);
    if (d->shutdown_ev)
        event_free(d->shutdown_ev);
    if (d->sweep_ev)
        event_free(d->sweep_ev);
    if (d->before_sleep_ev)
        event_free(d->before_sleep_ev);
    if (d->scratch)
        evbuffer_free(d->scratch);
    if (d->wbuf)
        evbuffer_free(d->wbuf);
    free(d->rbuf);
    if (d->base)
        event_base_free(d->base);
    tn_config_unref(d->cfg);
    tn_sd_free(&d->sd);
    free(d->config_path);
}

/* The event loop. With daemon.busy_poll_us set it polls without sleeping
 * while events keep coming: an idle wait costs the peer's kernel a wakeup
 * of this process (an inter-processor interrupt, a VM exit under a
 * hypervisor) for each message, which a busy client pays for in throughput.
 * The polling window adapts: after a sleep that ended in work it is at least
 * a quarter of the setting, each poll that finds work doubles it (up to the
 * setting), each window that passes with nothing found halves it; so an
 * idle daemon sleeps, and isolated events cost a short poll each. Work is
 * any callback the pass ran, as libevent counts its active events: every
 * socket, timer and relay is seen without each one reporting itself. */
/* One loop pass; returns the most events that were ready at once in it. */
static int pass(struct event_base *base, int flags, int *rc)
{
    event_base_get_max_events(base, EVENT_BASE_COUNT_ACTIVE, 1);
    *rc = event_base_loop(base, flags);
    return event_base_get_max_events(base, EVENT_BASE_COUNT_ACTIVE, 0);
}

/* Interrupt coalescing, as network cards do it (ethtool's rx-usecs): a
 * loop that sleeps in epoll_wait makes the sender of each next message wake
 * it, and on a virtual machine that wakeup is an inter-processor interrupt
 * the sender's CPU pays for. Under load the next message is due within
 * microseconds anyway, so after a pass that found many events ready at once
 * the loop sleeps a fixed daemon.coalesce_us without waiting on epoll (no
 * one has to wake it), then takes everything that gathered in one pass. It
 * keeps doing so while a pass finds more than one event. A pass that finds
 * less is quiet; the loop still waits on its timer through
 * daemon.coalesce_quiet_waits quiet passes in a row before it goes back to
 * waiting on epoll, as Linux's NAPI keeps a device's interrupts off for
 * napi_defer_hard_irqs empty polls: under load a lull is short, and a loop
 * that sleeps in epoll at every lull is woken by a sender at every lull's
 * end. A lone client's request is never held back (the loop only starts
 * gathering at a pass with many events), a gathered pass adds at most
 * coalesce_us to the requests in it, and once the load is gone the loop
 * sleeps in epoll after at most coalesce_quiet_waits waits. */
#define TN_GATHER_FROM 8  /* events ready at once that mean load */
#define TN_GATHER_WHILE 2 /* ... and that keep it going */

/* The kernel may end a sleep up to the thread's timer slack late (50 us by
 * default, as much again as the wait); the slack is set to 1 us for the
 * wait alone, as programs spawned meanwhile would inherit it. */
static void gather_wait(int64_t wait_us)
{
    int slack = prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0);
    if (slack > 1000)
        prctl(PR_SET_TIMERSLACK, 1000UL, 0, 0, 0);
    struct timespec ts = { 0, (long)wait_us * 1000 };
    nanosleep(&ts, NULL); /* a signal cuts it short: its event is in the next pass */
    if (slack > 1000)
        prctl(PR_SET_TIMERSLACK, (unsigned long)slack, 0, 0, 0);
}

/* The settings are read from the running config at each step, so a reload
 * applies in the middle of a stretch (one that turns coalescing off also
 * breaks the loop: take_config). */
static void run_coalescing(tn_daemon *d, int *rc)
{
    if (pass(d->base, EVLOOP_ONCE, rc) < TN_GATHER_FROM)
        return;
    for (int64_t quiet = 0;;) {
        if (*rc < 0 || event_base_got_exit(d->base) || event_base_got_break(d->base))
            return;
        d->loop_gathers++;
        gather_wait(d->cfg->daemon.coalesce_us);
        if (pass(d->base, EVLOOP_NONBLOCK, rc) >= TN_GATHER_WHILE)
            quiet = 0;
        else if (++quiet > d->cfg->daemon.coalesce_quiet_waits)
            return;
    }
}

static void run_loop(tn_daemon *d)
{
    int64_t window = 0, last_event = 0;
    bool polling = false;
    for (;;) {
        int64_t max = d->cfg->daemon.busy_poll_us;
        int rc;
        if (max <= 0 && d->cfg->daemon.coalesce_us > 0) {
            run_coalescing(d, &rc);
            if (rc < 0 || event_base_got_exit(d->base))
                return;
            continue;
        }
        if (max <= 0) {
            /* the plain loop, until exit or a reload that turns polling on */
            if (event_base_dispatch(d->base) < 0 || !event_base_got_break(d->base))
                return;
            continue;
        }
        if (window > max)
            window = max;
        if (polling) {
            bool found = pass(d->base, EVLOOP_NONBLOCK, &rc) > 0;
            int64_t now = tn_now_us();
            if (found) {
                last_event = now;
                window = window * 2 > max ? max : window * 2;
            } else if (now - last_event >= window) {
                window /= 2; /* a whole window with nothing found */
                polling = false;
            }
        } else {
            if (pass(d->base, EVLOOP_ONCE, &rc) > 0) {
                last_event = tn_now_us();
                if (window < (max + 3) / 4)
                    window = (max + 3) / 4;
                polling = true;
            }
        }
        if (rc < 0 || event_base_got_exit(d->base))
            return;
    }
}

void tn_daemon_write_pid_file(const tn_config *cfg)
{
    if (!*cfg->daemon.pid_file)
        return;
    FILE *f = fopen(cfg->daemon.pid_file, "w");
    if (f) {
        fprintf(f, "%ld\n", (long)getpid());
        fclose(f);
    } else {
        tn_warn("cannot write pid file %s: %s", cfg->daemon.pid_file, strerror(errno));
    }
}

tn_daemon *tn_daemon_start(tn_config *cfg, const char *path, int cli_log_level)
{
    return tn_daemon_start_as(cfg, path, cli_log_level, NULL);
}

tn_daemon *tn_daemon_start_as(tn_config *cfg, const char *path, int cli_log_level, tn_worker_link *worker)
{
    tn_daemon *d = &daemon_state;
    memset(d, 0, sizeof(*d));
    d->worker = worker;
    d->next_conn_id = tn_workers_first_id(worker);
    d->cfg = cfg;
    d->config_path = strdup(path);
    d->cli_log_level = cli_log_level;
    d->started_wall_ms = tn_wall_ms();
    d->started_us = tn_now_us();
    signal(SIGPIPE, SIG_IGN);

    struct event_config *ec = event_config_new();
    event_config_set_flag(ec, EVENT_BASE_FLAG_NOLOCK);
    d->base = event_base_new_with_config(ec);
    event_config_free(ec);
    d->scratch = evbuffer_new();
    d->wbuf = evbuffer_new();
    d->rbuf = malloc(TN_RBUF_SIZE);
    d->registry = d->base ? tn_registry_new(d->base, d) : NULL;
    d->before_sleep_ev = d->base ? event_new(d->base, -1, 0, on_before_sleep, d) : NULL;
    if (!d->base || !d->scratch || !d->wbuf || !d->rbuf || !d->registry || !d->before_sleep_ev) {
        tn_error("cannot initialize the event loop");
        free_state(d);
        return NULL;
    }
    d->reap_job.run = reap;
    d->reap_job.arg = d;
    tn_before_sleep_add(d, &d->reap_job);
    d->shutdown_ev = evtimer_new(d->base, on_shutdown_timeout, d);
    d->sweep_ev = event_new(d->base, -1, EV_PERSIST, on_sweep, d);
    struct timeval sweep = { 5, 0 };
    event_add(d->sweep_ev, &sweep);
    static const int sigs[TN_NSIGNALS] = { SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1, SIGUSR2, SIGWINCH, SIGALRM };
    for (int i = 0; i < TN_NSIGNALS; i++) {
        d->sig_ev[i] = evsignal_new(d->base, sigs[i], on_signal, d);
        event_add(d->sig_ev[i], NULL);
    }

    tn_sd_init(&d->sd, d->base);
    char err[1024];
    if (tn_ws_init(d, err, sizeof(err)) < 0) {
        tn_error("%s", err);
        free_state(d);
        return NULL;
    }
    tn_config *initial = d->cfg;
    if (apply_config(d, initial, err, sizeof(err)) < 0) {
        tn_log_lines(TN_LOG_ERROR, NULL, err);
        tn_sd_notify("STATUS=Failed to start: %s", err);
        free_state(d);
        return NULL;
    }
    tn_sd_close_unused(&d->sd);
    if (worker) {
        /* the master owns the control socket, the pid file and systemd */
        static const tn_worker_hooks hooks = { tn_control_exec_later, tn_daemon_drain, tn_daemon_shutdown,
                                                worker_reload };
        if (tn_workers_started(d, &hooks, err, sizeof(err)) < 0) {
            tn_error("%s", err);
            free_state(d);
            return NULL;
        }
        return d;
    }
    if (*cfg->daemon.control_socket) {
        d->control = tn_control_open(d, cfg->daemon.control_socket, err, sizeof(err));
        if (!d->control) {
            tn_error("%s", err);
            tn_sd_notify("STATUS=Failed to start: %s", err);
            free_state(d);
            return NULL;
        }
    }
    tn_daemon_write_pid_file(cfg);
    tn_info("tusknetd started: %zu listener(s), %zu handler(s)", cfg->nlisteners, cfg->nhandlers);
    tn_sd_notify("READY=1\nMAINPID=%ld", (long)getpid());
    notify_status(d, "Serving: ");
    return d;
}

int tn_daemon_stop(tn_daemon *d)
{
    tn_info("stopped");
    if (*d->cfg->daemon.pid_file && !d->worker)
        unlink(d->cfg->daemon.pid_file);
    int code = d->exit_code;
    free_state(d);
    return code;
}

int tn_daemon_run(tn_config *cfg, const char *path, int cli_log_level)
{
    return tn_daemon_run_as(cfg, path, cli_log_level, NULL);
}

int tn_daemon_run_as(tn_config *cfg, const char *path, int cli_log_level, tn_worker_link *worker)
{
    tn_daemon *d = tn_daemon_start_as(cfg, path, cli_log_level, worker);
    if (!d)
        return 1;
    run_loop(d);
    return tn_daemon_stop(d);
}
