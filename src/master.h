/* SPDX-License-Identifier: MIT */
/* master.h - daemon.workers > 1: the master process, which serves no traffic.
 * It holds the listening sockets, forks and supervises the workers, owns the
 * signals, the control socket, systemd notifications and reload, and relays
 * room messages between workers. */
#ifndef TN_MASTER_H
#define TN_MASTER_H

#include <event2/buffer.h>
#include <stdbool.h>
#include <stddef.h>

#include "config/config.h"
#include "daemon.h"

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
 * new workers start with it (it becomes the master's) and the old ones drain
 * when the new ones serve. -1 with err: nothing changed, CFG not taken. */
int tn_master_apply(tn_master *m, tn_config *cfg, char *err, size_t errlen);
void tn_master_shutdown(tn_master *m, const char *why);

/* ---- the listening sockets (master_sockets.c) -------------------------------- */

/* A listener's sockets: one per slot, or one systemd socket for all. */
typedef struct tn_master_lsock {
    const tn_listener_conf *conf; /* in the master's current config */
    int *fds;
    bool shared;
} tn_master_lsock;

void tn_master_close_lsock(tn_master_lsock *s, int nslots);
/* Sockets for every listener of CFG into *OUT, taken from OLD_SET where the
 * listener continues (same protocol and address, the same name first). On
 * failure nothing changed. */
int tn_master_open_sockets(tn_sd *sd, int nslots, tn_master_lsock *old_set, size_t nold, const tn_config *cfg,
                           tn_master_lsock **out, char *err, size_t errlen);

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

#endif
