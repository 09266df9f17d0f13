/* SPDX-License-Identifier: MIT */
/* ctl/conn.h - talking to the daemon: connects to the control socket, sends
 * one command line and reads one answer (a JSON line, or Prometheus text up to
 * "# EOF" for `metrics`) within the connection's timeout. */
#ifndef TN_CTL_CONN_H
#define TN_CTL_CONN_H

#include <signal.h>
#include <stdbool.h>
#include <sys/types.h>
#include "ctl/util.h"

typedef struct tn_ctl_conn {
    int fd;
    tn_ctl_buf in;     /* bytes received, not consumed yet */
    size_t scan;       /* bytes of `in` already searched for a newline */
    size_t line_start; /* start of the line being searched (metrics) */
    double timeout;    /* seconds to wait for an answer; 0 = forever */
} tn_ctl_conn;

/* Set by top's signal handlers: a wait for the daemon gives up when it is. */
extern volatile sig_atomic_t tn_ctl_quit;

int tn_ctl_connect(tn_ctl_conn *c, const char *path, double timeout);
void tn_ctl_close(tn_ctl_conn *c);
void tn_ctl_connect_failed(const char *path, int err);
void tn_ctl_consume(tn_ctl_conn *c);
ssize_t tn_ctl_request(tn_ctl_conn *c, const char *line, bool metrics, char *err, size_t errlen);

#endif
