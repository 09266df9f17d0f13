/* SPDX-License-Identifier: MIT */
/* daemon.h - the daemon's life: start, the loop, reload, shutdown. Its
 * state is state.h. */
#ifndef TN_DAEMON_H
#define TN_DAEMON_H

#include "state.h"

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

/* While stopping: exits the loop once nothing is left in flight (run at
 * the end of a pass in which something ended: tn_state_idle_check). */
void tn_daemon_check_stopped(tn_daemon *d);

/* daemon.pid_file, when set, gets this process's id. */
void tn_daemon_write_pid_file(const tn_config *cfg);

#endif
