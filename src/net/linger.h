/* SPDX-License-Identifier: MIT */
/* linger.h - lingering close: a socket we give up on while its peer may
 * still be sending is read and drained until the peer closes, so that our
 * last bytes are not lost to a reset. */
#ifndef TN_NET_LINGER_H
#define TN_NET_LINGER_H

#include <event2/util.h>

struct tn_daemon;

/* Takes FD (a duplicate of a socket about to be closed by its user): reads
 * and drops its input until EOF, an error, a second without input or five
 * seconds in all, then closes it. Closes it at once when too many linger. */
void tn_linger_start(struct tn_daemon *d, evutil_socket_t fd);

/* Closes every lingering socket (exit). */
void tn_linger_free_all(struct tn_daemon *d);

#endif
