/* SPDX-License-Identifier: MIT */
/* check.h - what starting a configuration needs from the system. */
#ifndef TN_CHECK_H
#define TN_CHECK_H

#include "config/config.h"

/* Everything starting CFG needs besides binding its sockets: file handler
 * roots, exec and stream programs and their cwd, TLS certificates and keys,
 * access log files, the control socket's directory, listen host names, and
 * no listener naming a handler type this version lacks. Nothing is created
 * or changed. Errors and warnings go to DIAG at the FILE:LINE:COL of the
 * value at fault, all of them, sorted with what DIAG held before; returns
 * -1 when there were errors. `tusknetd -t`, the start and every reload
 * call this, so they accept and refuse the same configs. */
int tn_check_startup(const tn_config *cfg, tn_diag *diag);

/* What opening a control socket on PATH needs, checked without side
 * effects: a path that fits, and a directory the daemon may create the
 * socket in (or create, one level deep). Returns -1 with a message. */
int tn_check_control_socket(const char *path, char *err, size_t errlen);
/* The directory of the socket PATH into DIR ("" for one in the working
 * directory); -1 when PATH does not fit a socket address (control.c opens
 * its socket there). */
int tn_check_socket_dir(const char *path, char *dir, size_t len, char *err, size_t errlen);

#endif
