/* SPDX-License-Identifier: MIT */
/* sd.c - systemd integration through libsystemd's sd-daemon API.
 *
 * Notifications are no-ops when NOTIFY_SOCKET is unset, so the daemon runs
 * the same by hand and under systemd. Socket-activated descriptors are
 * matched to listeners by FileDescriptorName first, then by the address they
 * are bound to, so a unit file can name sockets or just list them. */
#include "sd.h"

#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "log.h"

static void on_watchdog(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    sd_notify(0, "WATCHDOG=1");
}

int tn_sd_init(tn_sd *sd, struct event_base *base)
{
    memset(sd, 0, sizeof(*sd));
    char **names = NULL;
    int n = sd_listen_fds_with_names(1, &names);
    if (n < 0) {
        tn_warn("systemd: cannot read passed sockets: %s", strerror(-n));
        n = 0;
    }
    if (n > 0) {
        sd->sockets = calloc((size_t)n, sizeof(*sd->sockets));
        for (int i = 0; sd->sockets && i < n; i++) {
            sd->sockets[i].fd = SD_LISTEN_FDS_START + i;
            /* systemd names unnamed sockets "unknown" */
            const char *name = names && names[i] && strcmp(names[i], "unknown") != 0 ? names[i] : "";
            sd->sockets[i].name = strdup(name);
            sd->nsockets++;
        }
        tn_info("systemd: %d socket(s) passed", n);
    }
    if (names) {
        for (int i = 0; i < n; i++)
            free(names[i]);
        free(names);
    }
    uint64_t usec = 0;
    if (sd_watchdog_enabled(0, &usec) > 0 && usec > 0) {
        sd->watchdog_ev = event_new(base, -1, EV_PERSIST, on_watchdog, NULL);
        struct timeval tv = { (time_t)(usec / 2 / 1000000), (suseconds_t)(usec / 2 % 1000000) };
        event_add(sd->watchdog_ev, &tv);
        tn_info("systemd: watchdog every %llu ms", (unsigned long long)(usec / 2000));
    }
    return 0;
}

static bool same_address(int fd, const struct sockaddr *addr, socklen_t addrlen)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0 || ss.ss_family != addr->sa_family)
        return false;
    if (addr->sa_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)addr, *b = (const struct sockaddr_in *)&ss;
        return a->sin_port == b->sin_port && a->sin_addr.s_addr == b->sin_addr.s_addr;
    }
    if (addr->sa_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)addr, *b = (const struct sockaddr_in6 *)&ss;
        return a->sin6_port == b->sin6_port && memcmp(&a->sin6_addr, &b->sin6_addr, sizeof(a->sin6_addr)) == 0;
    }
    (void)addrlen;
    return false;
}

int tn_sd_take(tn_sd *sd, const char *name, int type, const struct sockaddr *addr, socklen_t addrlen)
{
    for (size_t i = 0; i < sd->nsockets; i++) {
        tn_sd_socket *s = &sd->sockets[i];
        if (s->used)
            continue;
        /* one .socket unit names all its sockets alike: the type decides */
        bool match = sd_is_socket(s->fd, addr->sa_family, type, -1) > 0 &&
                     (name && *name ? strcmp(s->name, name) == 0 : same_address(s->fd, addr, addrlen));
        if (match) {
            s->used = true;
            return s->fd;
        }
    }
    return -1;
}

void tn_sd_close_unused(tn_sd *sd)
{
    for (size_t i = 0; i < sd->nsockets; i++) {
        if (!sd->sockets[i].used && sd->sockets[i].fd >= 0) {
            tn_warn("systemd: passed socket %d (%s) matches no listener; closing it", sd->sockets[i].fd,
                    *sd->sockets[i].name ? sd->sockets[i].name : "unnamed");
            close(sd->sockets[i].fd);
            sd->sockets[i].fd = -1;
            sd->sockets[i].used = true;
        }
    }
}

void tn_sd_notify(const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    sd_notify(0, buf);
}

void tn_sd_free(tn_sd *sd)
{
    if (sd->watchdog_ev)
        event_free(sd->watchdog_ev);
    for (size_t i = 0; i < sd->nsockets; i++)
        free(sd->sockets[i].name);
    free(sd->sockets);
    memset(sd, 0, sizeof(*sd));
}
