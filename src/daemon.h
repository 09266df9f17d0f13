/* SPDX-License-Identifier: MIT */
/* daemon.h - the running state: the one struct every subsystem hangs off. */
#ifndef TN_DAEMON_H
#define TN_DAEMON_H

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

/* Signals handled in the loop: TERM INT QUIT HUP USR1 USR2 WINCH ALRM. */
#define TN_NSIGNALS 8

typedef struct tn_daemon {
    struct event_base *base;
    tn_config *cfg;
    tn_config **retired; /* older configs that draining listeners still use */
    size_t nretired;
    const tn_config *applying; /* the config being applied (reload) */
    size_t old_routers;       /* HTTP routers of older configs still in use */
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
    struct event *before_sleep_ev;
    tn_pass_job reap_job;        /* frees `dead` */
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
    uint64_t io_events;       /* I/O callbacks run: tells the busy-poll loop a pass did work */
    struct event *sig_ev[TN_NSIGNALS];
    tn_logfile *logfiles;     /* open log files, reopened on SIGUSR1 (log.h) */
    struct event *shutdown_ev;
    struct event *sweep_ev;
    tn_control *control;
    tn_cluster *cluster;     /* the Redis link of [cluster], NULL without (cluster.h) */
    tn_ws *ws;                /* the WebSocket front end's state (proto/ws.c) */
    tn_sd sd;
    tn_master *master;      /* daemon.workers > 1, in the master: it serves no traffic (master.h) */
    tn_worker_link *worker; /* daemon.workers > 1, in a worker: its link to the master (workers.h) */
    bool draining;          /* a worker replaced by a reload: no accepts, ends when its connections do */
} tn_daemon;

int tn_daemon_run(tn_config *cfg, const char *path, int cli_log_level);
/* tn_daemon_run in steps, for harnesses that drive the loop themselves
 * (the fuzzers): start takes CFG and returns the serving daemon, or NULL
 * with the reason logged; stop frees everything and returns the exit code. */
tn_daemon *tn_daemon_start(tn_config *cfg, const char *path, int cli_log_level);
/* The same for a worker process (WORKER: its link to the master; NULL for
 * the single process), and the loop run to the end. */
tn_daemon *tn_daemon_start_as(tn_config *cfg, const char *path, int cli_log_level, tn_worker_link *worker);
int tn_daemon_run_as(tn_config *cfg, const char *path, int cli_log_level, tn_worker_link *worker);
int tn_daemon_stop(tn_daemon *d);

/* Re-read the config file and apply it (SIGHUP, control `reload`). On
 * failure the running config stays and err holds FILE:LINE:COL messages. */
int tn_daemon_reload(tn_daemon *d, char *err, size_t errlen);
/* Graceful shutdown (SIGTERM, control `shutdown`). */
void tn_daemon_shutdown(tn_daemon *d, const char *why);
/* A worker replaced by a reload: stop accepting, close connections once
 * their replies are out; WebSockets stay until they close or the shutdown. */
void tn_daemon_drain(tn_daemon *d);

/* Called when a connection or job ends while stopping: exits the loop once
 * nothing is left in flight. */
void tn_daemon_check_stopped(tn_daemon *d);

/* Registers JOB (RUN and ARG set) at the end of the list; removes it. */
void tn_before_sleep_add(tn_daemon *d, tn_pass_job *job);
void tn_before_sleep_remove(tn_daemon *d, tn_pass_job *job);
/* JOB runs at the end of this loop pass (once, however often it is marked). */
static inline void tn_before_sleep_due(tn_daemon *d, tn_pass_job *job)
{
    if (!job->due) {
        job->due = true;
        event_active(d->before_sleep_ev, EV_TIMEOUT, 0);
    }
}

/* Frees retired configs once no listener is draining. */
void tn_daemon_release_retired(tn_daemon *d);

/* daemon.pid_file, when set, gets this process's id. */
void tn_daemon_write_pid_file(const tn_config *cfg);

int64_t tn_wall_ms(void);

#endif
