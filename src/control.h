/* SPDX-License-Identifier: MIT */
/* control.h - the control socket. */
#ifndef TN_CONTROL_H
#define TN_CONTROL_H

#include <stddef.h>

#include "daemon.h"

typedef struct tn_control tn_control;

/* What opening a control socket on PATH needs, checked without side
 * effects: a path that fits, and a directory the daemon may create the
 * socket in (or create, one level deep). Returns -1 with a message. */
int tn_control_check(const char *path, char *err, size_t errlen);
tn_control *tn_control_open(tn_daemon *d, const char *path, char *err, size_t errlen);
const char *tn_control_path(const tn_control *ctl);
void tn_control_close(tn_control *ctl);

#endif
