/* SPDX-License-Identifier: MIT */
/* control.h - the control socket. */
#ifndef TN_CONTROL_H
#define TN_CONTROL_H

#include <event2/buffer.h>
#include <stdbool.h>
#include <stddef.h>

#include "state.h"

typedef struct tn_control tn_control;

tn_control *tn_control_open(tn_daemon *d, const char *path, char *err, size_t errlen);
const char *tn_control_path(const tn_control *ctl);
void tn_control_close(tn_control *ctl);

/* Runs one command line as an admin would and appends its answer to OUT
 * (a worker answering its master). */
void tn_control_exec(tn_daemon *d, char *line, size_t len, struct evbuffer *out);
/* The same for a caller that can take an answer later (a worker answering
 * the master): true when the answer goes to LATER(ARG, ANSWER) instead of
 * OUT (a `send NODE:ID` waiting for Redis). */
typedef void (*tn_control_later_fn)(void *arg, struct evbuffer *answer);
bool tn_control_exec_later(tn_daemon *d, char *line, size_t len, struct evbuffer *out, tn_control_later_fn later,
                           void *arg);
/* The answer to a command the master forwarded to its workers (CLIENT as
 * given to tn_master_forward()): queued to the client, which reads on. */
void tn_control_answer(void *client, struct evbuffer *answer, bool newline);

#endif
