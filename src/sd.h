/* SPDX-License-Identifier: MIT */
/* sd.h - systemd integration: readiness and status notifications, the
 * watchdog, and sockets passed by socket activation. */
#ifndef TN_SD_H
#define TN_SD_H

#include <event2/event.h>
#include <stdbool.h>
#include <sys/socket.h>

typedef struct tn_sd_socket {
    int fd;
    char *name;   /* FileDescriptorName, or "" */
    bool used;
} tn_sd_socket;

typedef struct tn_sd {
    tn_sd_socket *sockets;
    size_t nsockets;
    struct event *watchdog_ev;
} tn_sd;

/* Takes the sockets systemd passed (LISTEN_FDS) and starts the watchdog timer
 * when WATCHDOG_USEC asks for one. */
int tn_sd_init(tn_sd *sd, struct event_base *base);
/* A passed socket for a listener: by FileDescriptorName when NAME is set,
 * else one bound to the same address and type. -1 if none. */
int tn_sd_take(tn_sd *sd, const char *name, int type, const struct sockaddr *addr, socklen_t addrlen);
/* Closes passed sockets no listener took. */
void tn_sd_close_unused(tn_sd *sd);
void tn_sd_notify(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void tn_sd_free(tn_sd *sd);

#endif
