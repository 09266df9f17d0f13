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
typedef struct tn_control tn_control;
typedef struct tn_linger tn_linger;
typedef struct tn_logfile tn_logfile;
typedef struct tn_cluster tn_cluster;
typedef struct tn_master tn_master;
typedef struct tn_worker_link tn_worker_link;

/* Signals handled in the loop: TERM INT QUIT HUP USR1 USR2 WINCH ALRM. */
#define TN_NSIGNALS 8

typedef struct tn_daemon {
    struct event_base *base;
    tn_config *cfg;      /* the running config (a reference; older ones live as long as their users) */
    char *config_path;
    int cli_log_level; /* -1: follow the config */
    tn_registry *registry;
    tn_listener *listeners;  /* active and draining */
    tn_conn *conns;          /* every open connection */
    tn_conn *dead;           /* closed, freed from the reap event */
    tn_conn *relays;         /* TLS connections carrying a WebSocket (conn.h) */
    tn_linger *lingering;    /* sockets closed by us, drained until the peer closes (linger.h) */
    size_t nlingering;
    struct event *reap_ev;
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
    tn_sd sd;
    tn_master *master;      /* daemon.workers > 1, in the master: it serves no traffic (master.h) */
    tn_worker_link *worker; /* daemon.workers > 1, in a worker: its link to the master (workers.h) */
    bool draining;          /* a worker replaced by a reload: no accepts, ends when its connections do */
} tn_daemon;

/* Something in flight ended (a connection, a reply owed): while stopping,
 * the daemon looks at the end of this pass whether anything is left. */
static inline void tn_state_idle_check(tn_daemon *d)
{
    if (d->stopping)
        event_active(d->reap_ev, EV_TIMEOUT, 0);
}

#endif
