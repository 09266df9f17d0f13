/* SPDX-License-Identifier: MIT */
/* state.h - the running state: the one struct every subsystem hangs off.
 *
 * Connections, listeners and front ends reach the loop, the shared buffers
 * and the counters through it; the daemon's life (start, reload, shutdown)
 * is daemon.h, above them all, so that nothing below calls up into it. */
#ifndef TN_STATE_H
#define TN_STATE_H

#include <event2/event.h>
#include <stdbool.h>
#include <stdint.h>

#include "config/config.h"
#include "handlers/handler.h"
#include "metrics.h"
#include "sd.h"

/* Input is read into one buffer shared by every connection. */
#define TN_RBUF_SIZE 65536

typedef struct tn_listener tn_listener;
typedef struct tn_conn tn_conn;
typedef struct tn_conn_base tn_conn_base;
typedef struct tn_control tn_control;
typedef struct tn_linger tn_linger;
typedef struct tn_logfile tn_logfile;
typedef struct tn_cluster tn_cluster;
typedef struct tn_master tn_master;
typedef struct tn_worker_link tn_worker_link;
typedef struct tn_ws tn_ws;
typedef struct tn_upgrade_ops tn_upgrade_ops;

/* Work for the end of a loop pass, once every callback the pass had has
 * run and before the loop sleeps (Redis's beforeSleep): freeing closed
 * connections, libwebsockets' writes and timers, the cluster link's teardown. A job registers once and
 * is marked due when it has something to do; the due ones run in the order
 * they registered, from one event. A job marked due while the list runs
 * runs again in the same pass. */
typedef struct tn_pass_job {
    struct tn_pass_job *next;
    void (*run)(void *arg);
    void *arg;
    bool due;
} tn_pass_job;

/* What the daemon and the control socket ask of the master process: set by
 * master.c with d->master, so that neither includes master.h (the master
 * runs above them, with a daemon record of its own). */
typedef struct tn_master_ops {
    /* a control command answered from the workers: true when sent to them */
    bool (*forward)(tn_master *m, void *client, const char *name, const char *arg);
    void (*forget)(tn_master *m, void *client); /* the client went away first */
    int (*apply)(tn_master *m, tn_config *cfg, char *err, size_t errlen); /* a reload's config */
    void (*shutdown)(tn_master *m, const char *why);
} tn_master_ops;

/* Signals handled in the loop: TERM INT QUIT HUP USR1 USR2 WINCH ALRM. */
#define TN_NSIGNALS 8

typedef struct tn_daemon {
    struct event_base *base;
    tn_config *cfg;      /* the running config (a reference; older ones live as long as their users) */
    char *config_path;
    int cli_log_level; /* -1: follow the config */
    tn_registry *registry;
    tn_listener *listeners;  /* active and draining */
    tn_conn_base *conns;     /* every open connection, WebSockets included (conn.h) */
    tn_conn_base *dead;      /* closed, freed by reap_job */
    tn_conn_base *relays;    /* TLS connections carrying a WebSocket (conn.h) */
    tn_linger *lingering;    /* sockets closed by us, drained until the peer closes (linger.h) */
    size_t nlingering;
    tn_pass_job *before_sleep;   /* registered end-of-pass jobs */
    tn_pass_job *before_sleep_next; /* the one to run after the running one */
    struct event *before_sleep_ev;
    tn_pass_job reap_job;        /* frees `dead`; while stopping, looks whether anything is left */
    uint64_t next_conn_id;
    uint64_t active;
    tn_conn_stats stats;
    struct evbuffer *scratch; /* reply assembly, reused by every front end */
    char *rbuf;               /* TN_RBUF_SIZE bytes of input, shared */
    struct evbuffer *wbuf;    /* replies of the connection being served, shared */
    tn_conn *wbuf_owner;
    /* asynchronous replies are being delivered in a row (a proxy's upstream
     * read): a line client's replies stay in wbuf until the batch ends or
     * another connection takes wbuf, so a pipelined batch is one write */
    bool reply_batch;
    uint64_t loop_gathers;    /* passes after which the loop waited for events to gather (coalesce_us) */
    char http_date[40];       /* Date: header, formatted once a second */
    int64_t http_date_sec;
    int64_t started_wall_ms;
    int64_t started_us;
    uint64_t reloads;         /* attempts: reloads_ok + reloads_refused */
    uint64_t reloads_ok;
    uint64_t reloads_refused;
    int64_t last_reload_ms;   /* wall clock of the latest attempt, 0: none yet */
    bool last_reload_ok;
    char last_reload_msg[512]; /* its outcome: the summary, or the errors (first lines) */
    bool stopping;
    int exit_code;
    struct event *sig_ev[TN_NSIGNALS];
    tn_logfile *logfiles;     /* open log files, reopened on SIGUSR1 (log.h) */
    struct event *shutdown_ev;
    struct event *sweep_ev;
    tn_control *control;
    tn_cluster *cluster;     /* the Redis link of [cluster], NULL without (cluster.h) */
    tn_ws *ws;                /* the WebSocket front end's state (proto/ws.c) */
    const tn_upgrade_ops *upgrade; /* its hand-off from HTTP, NULL while it is not running (proto/upgrade.h) */
    tn_sd sd;
    tn_master *master;      /* daemon.workers > 1, in the master: it serves no traffic (master.h) */
    const tn_master_ops *master_ops; /* with master */
    tn_worker_link *worker; /* daemon.workers > 1, in a worker: its link to the master (workers.h) */
    bool draining;          /* a worker replaced by a reload: no accepts, ends when its connections do */
} tn_daemon;

/* Registers JOB (RUN and ARG set) at the end of the list; removes it. */
void tn_before_sleep_add(tn_daemon *d, tn_pass_job *job);
void tn_before_sleep_remove(tn_daemon *d, tn_pass_job *job);
/* Runs the due jobs, in order (the end-of-pass event does). */
void tn_before_sleep_run(tn_daemon *d);
/* JOB runs at the end of this loop pass (once, however often it is marked). */
static inline void tn_before_sleep_due(tn_daemon *d, tn_pass_job *job)
{
    if (!job->due) {
        job->due = true;
        event_active(d->before_sleep_ev, EV_TIMEOUT, 0);
    }
}

/* Something in flight ended (a connection, a reply owed): while stopping,
 * the daemon looks at the end of this pass whether anything is left. */
static inline void tn_state_idle_check(tn_daemon *d)
{
    if (d->stopping)
        tn_before_sleep_due(d, &d->reap_job);
}

#endif
