/* SPDX-License-Identifier: MIT */
/* linger.c - lingering close.
 *
 * When we close a socket whose receive queue still holds data, or to which
 * the peer is still sending, the kernel answers with a reset instead of a
 * FIN, and a peer that is busy writing (a WebSocket client in the middle of
 * a too large message) may take the reset before it reads our last words
 * (the close frame), losing the close code. libwebsockets 4.1.6 closes that
 * way: it sends the close frame, shuts the write side and closes at once.
 * Holding a duplicate of the descriptor keeps the socket open past that
 * close; we read and drop the peer's input until it closes its side (after
 * reading our close frame and FIN), as nginx's lingering_close does, within
 * a second of silence or five seconds in all. */
#include "net/linger.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>

#include "clock.h"
#include "handlers/handler.h"
#include "state.h"

#define LINGER_MAX 1024          /* sockets at once; more are closed at once */
#define LINGER_IDLE_MS 1000      /* without input */
#define LINGER_TOTAL_US 5000000  /* in all */

struct tn_linger {
    struct tn_linger *prev, *next;
    tn_daemon *d;
    evutil_socket_t fd;
    struct event *ev;
    int64_t deadline_us;
};

static void linger_end(tn_linger *g)
{
    tn_daemon *d = g->d;
    if (g->prev)
        g->prev->next = g->next;
    else
        d->lingering = g->next;
    if (g->next)
        g->next->prev = g->prev;
    d->nlingering--;
    event_free(g->ev);
    evutil_closesocket(g->fd);
    free(g);
}

static void on_linger(evutil_socket_t fd, short what, void *arg)
{
    tn_linger *g = arg;
    if (what & EV_TIMEOUT) {
        linger_end(g);
        return;
    }
    for (;;) {
        ssize_t n = recv(fd, g->d->rbuf, TN_RBUF_SIZE, 0);
        if (n > 0)
            continue;
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) && tn_now_us() < g->deadline_us)
            return;
        linger_end(g); /* EOF, an error, or out of time */
        return;
    }
}

void tn_linger_start(tn_daemon *d, evutil_socket_t fd)
{
    tn_linger *g = d->nlingering < LINGER_MAX ? calloc(1, sizeof(*g)) : NULL;
    if (!g || evutil_make_socket_nonblocking(fd) < 0) {
        free(g);
        evutil_closesocket(fd);
        return;
    }
    g->d = d;
    g->fd = fd;
    g->deadline_us = tn_now_us() + LINGER_TOTAL_US;
    g->ev = event_new(d->base, fd, EV_READ | EV_PERSIST, on_linger, g);
    struct timeval idle = { LINGER_IDLE_MS / 1000, (LINGER_IDLE_MS % 1000) * 1000 };
    if (!g->ev || event_add(g->ev, &idle) < 0) {
        if (g->ev)
            event_free(g->ev);
        free(g);
        evutil_closesocket(fd);
        return;
    }
    g->next = d->lingering;
    if (g->next)
        g->next->prev = g;
    d->lingering = g;
    d->nlingering++;
}

void tn_linger_free_all(tn_daemon *d)
{
    while (d->lingering)
        linger_end(d->lingering);
}
