/* SPDX-License-Identifier: MIT */
/* master.h - daemon.workers > 1: the master process, which serves no traffic.
 * It holds the listening sockets, forks and supervises the workers, owns the
 * signals, the control socket, systemd notifications and reload, and relays
 * room messages between workers. */
#ifndef TN_MASTER_H
#define TN_MASTER_H

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "config/config.h"
#include "daemon.h"
#include "workers.h"

/* How many workers CFG asks for: daemon.workers, or with auto (0) the CPUs
 * this process may run on. */
int tn_master_workers_wanted(const tn_config *cfg);
/* Runs the master until shutdown; returns the exit code. Takes CFG. */
int tn_master_run(tn_config *cfg, const char *path, int cli_log_level);

/* Control socket commands answered from the workers: true when NAME (with
 * ARG) was sent to them and tn_control_answer(CLIENT, ...) follows. */
bool tn_master_forward(tn_master *m, void *client, const char *name, const char *arg);
/* CLIENT went away before its answer. */
void tn_master_forget(tn_master *m, void *client);
/* A reload's new config, parsed and checked once (tn_daemon_reload()):
 * every worker applies a snapshot of it in place (it becomes the master's),
 * workers are started or stopped to match daemon.workers, and the reload's
 * answer follows when all have reported (master_reload.c). -1 with err:
 * nothing changed, CFG not taken. */
int tn_master_apply(tn_master *m, tn_config *cfg, char *err, size_t errlen);
void tn_master_shutdown(tn_master *m, const char *why);

/* ---- the listening sockets (master_sockets.c) -------------------------------- */

/* A listener's sockets: one per slot, or one systemd socket for all. */
typedef struct tn_master_lsock {
    const tn_listener_conf *conf; /* in the master's current config */
    int *fds;
    bool shared;
    bool fresh; /* bound by the latest tn_master_open_sockets(), not continued */
    bool grown; /* continued, with slots added */
} tn_master_lsock;

void tn_master_close_lsock(tn_master_lsock *s, int nslots);
/* Closes the slots TO..FROM-1 (daemon.workers shrank). */
void tn_master_shrink_lsock(tn_master_lsock *s, int from, int to);
/* Sockets for every listener of CFG into *OUT, taken from OLD_SET where the
 * listener continues (same protocol and address, the same name first). On
 * failure nothing changed. */
int tn_master_open_sockets(tn_sd *sd, int old_nslots, int nslots, tn_master_lsock *old_set, size_t nold,
                           const tn_config *cfg, tn_master_lsock **out, char *err, size_t errlen);

/* ---- merging the workers' answers (master_merge.c) ---------------------------- */

typedef struct tn_master_answer {
    struct evbuffer *body; /* NULL: the worker did not answer */
    int slot;
    long pid;
    unsigned generation;
    const char *state;
    unsigned restarts;
} tn_master_answer;

/* Merges the answers to command NAME into OUT: counters summed, latency
 * histograms merged before percentiles, lists joined; OWN is the master's
 * own answer for what only it knows (uptime, reloads, its process). */
void tn_master_merge(const char *name, tn_master_answer *answers, size_t n, struct evbuffer *own,
                     struct evbuffer *out);

/* ---- the master's records: private to master*.c -------------------------------- */

#define REQUEST_TIMEOUT_S 10
/* a worker told to stop gets shutdown_timeout to drain, then this, then SIGKILL */
#define KILL_GRACE_MS 5000

typedef struct tn_mworker {
    struct tn_mworker *next;
    tn_master *m;
    pid_t pid;
    int pidfd;
    struct event *exit_ev;
    struct event *kill_ev; /* stopped for not answering a reload: SIGKILL if it is still there */
    struct bufferevent *bev;
    int fdch; /* the descriptor channel: listening sockets for a reload */
    int slot, seat;
    uint64_t serial;
    unsigned generation;
    bool ready, draining;
    bool superseded; /* failed to apply a reload: drains once its slot's replacement serves */
    uint64_t relay_dropped; /* room messages it was too slow for */
} tn_mworker;

typedef struct tn_mslot {
    tn_master *m;
    int slot;
    unsigned restarts;
    int backoff_ms;
    int64_t last_start_us;
    struct event *restart_ev;
} tn_mslot;

typedef struct tn_mrequest {
    struct tn_mrequest *next;
    tn_master *m;
    void *client;
    uint64_t asker, asker_seq; /* or a worker's query (its serial, its number) */
    char name[16];
    uint64_t seq;
    size_t n, pending;
    tn_master_answer *answers;
    uint64_t *serials; /* who owes each answer */
    struct event *timeout_ev;
    int64_t timeout_ms;
    char *error; /* a reload refused by the master */
} tn_mrequest;

struct tn_master {
    tn_daemon *d;
    int nslots;
    tn_master_lsock *socks;
    size_t nsocks;
    tn_mslot *slots; /* room for a slot per seat: daemon.workers may grow on reload */
    tn_mworker *workers;
    tn_wshm *shm;
    int seats;
    bool *seat_used;
    uint64_t next_serial;
    unsigned generation;
    bool started, stopping;
    tn_mrequest *reload;  /* the reload the workers are applying */
    void *reload_client; /* who asked for the reload being checked */
    int sigfd;
    struct event *sig_ev;
    struct event *kill_ev;
    tn_mrequest *requests;
    uint64_t next_seq;
    int exit_code;
};

/* Forks a worker for SLOT with the master's config and sockets. */
void tn_master_spawn(tn_master *m, int slot);
/* A request for N answers, linked and timed (REQUEST_TIMEOUT_S); NULL when
 * out of memory. */
tn_mrequest *tn_master_request_new(tn_master *m, void *client, const char *name, size_t n);
/* R gives up on the answers still owed MS from now. */
void tn_master_request_timeout(tn_mrequest *r, int64_t ms);
/* W is stopped (SIGTERM); SIGKILL follows when it has not exited after
 * shutdown_timeout and KILL_GRACE_MS. */
void tn_master_stop_worker(tn_master *m, tn_mworker *w);
/* Its answers are in (or will not come): answers the asker, frees it. */
void tn_master_request_done(tn_mrequest *r);

/* ---- master_reload.c ---- */

/* The control socket's `reload`: checks and applies; the answer follows
 * through tn_control_answer(CLIENT) when every worker has reported. */
void tn_master_reload_command(tn_master *m, void *client);
/* A reload request's answers in: the failed workers replaced, the reply in OUT. */
void tn_master_reload_done(tn_mrequest *r, struct evbuffer *out);
/* W serves: a worker it replaces drains now. */
void tn_master_reload_replaced(tn_master *m, const tn_mworker *w);

#endif
