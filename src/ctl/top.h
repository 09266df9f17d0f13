/* SPDX-License-Identifier: MIT */
/* ctl/top.h - `tusknetctl top`: keeps one connection open, samples `stats`
 * every interval and shows rates, on a terminal full-screen (alternate screen,
 * cut to the window, q quits), otherwise as plain frames one after another. */
#ifndef TN_CTL_TOP_H
#define TN_CTL_TOP_H

#include <stdbool.h>

/* Runs top against the socket SOCK_PATH: ITERATIONS frames (0: until q or a
 * signal) every INTERVAL seconds, raw `stats` lines with JSON. Returns the
 * exit status. */
int tn_ctl_top(const char *sock_path, double timeout, int iterations, double interval, bool json);

#endif
