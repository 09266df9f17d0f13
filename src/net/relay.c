/* SPDX-License-Identifier: MIT */
/* relay.c - WebSocket over TLS.
 *
 * lws is handed plain sockets (it runs without TLS of its own, see ws.c),
 * and by the time a request asks for an upgrade its TLS session already
 * lives in our connection. So the connection stays, and a socketpair joins
 * it to lws: what SSL_read yields is written to our end, what lws writes to
 * its end is read here and sent with SSL_write. The connection keeps its
 * output cap and write timeout; a WebSocket peer that stops reading stops
 * lws's output here, and lws that stops reading stops our reading of the
 * TLS socket. The relay ends when either side ends: lws closing its end
 * flushes and closes TLS with close_notify; the TLS peer going away closes
 * our end, which lws reads as the end of the stream. */
#include "net/relay.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define RELAY_HIGH (256 * 1024) /* bytes waiting on either side that pause the other */

typedef struct relay {
    evutil_socket_t fd;       /* our end of the socketpair */
    struct event *rev, *wev;
    struct evbuffer *pending; /* decrypted bytes lws has not taken yet */
    bool reading_paused;      /* the TLS peer reads slowly: lws's output waits */
} relay;

static size_t relay_input(tn_conn *c, const char *data, size_t len)
{
    relay *r = c->fe_state;
    size_t done = 0;
    if (!evbuffer_get_length(r->pending)) {
        ssize_t n = send(r->fd, data, len, MSG_NOSIGNAL);
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            tn_conn_close(c, "websocket gone");
            return len;
        }
        done = n > 0 ? (size_t)n : 0;
    }
    if (done < len) {
        evbuffer_add(r->pending, data + done, len - done);
        event_add(r->wev, NULL);
        if (evbuffer_get_length(r->pending) > RELAY_HIGH)
            tn_conn_pause_input(c);
    }
    return len;
}

static void on_pair_writable(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    tn_conn *c = arg;
    relay *r = c->fe_state;
    while (evbuffer_get_length(r->pending)) {
        int n = evbuffer_write(r->pending, fd);
        if (n > 0)
            continue;
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        tn_conn_close(c, "websocket gone");
        return;
    }
    if (evbuffer_get_length(r->pending)) {
        event_add(r->wev, NULL);
        return;
    }
    tn_conn_resume_input(c);
}

static void on_pair_readable(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    tn_conn *c = arg;
    relay *r = c->fe_state;
    tn_daemon *d = tn_conn_daemon(c);
    for (;;) {
        ssize_t n = recv(fd, d->rbuf, TN_RBUF_SIZE, 0);
        if (n > 0) {
            evbuffer_add(tn_conn_output(c), d->rbuf, (size_t)n);
            if ((size_t)n < TN_RBUF_SIZE)
                break;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        /* lws closed the WebSocket: what it wrote last goes out first */
        tn_conn_flush(c);
        if (!c->base.dead)
            tn_conn_close_after_flush(c, n == 0 ? NULL : "websocket gone");
        return;
    }
    tn_conn_flush(c);
    if (!c->base.dead && tn_conn_unsent(c) > RELAY_HIGH) {
        event_del(r->rev);
        r->reading_paused = true;
    }
}

static void relay_drained(tn_conn *c)
{
    relay *r = c->fe_state;
    if (r->reading_paused) {
        r->reading_paused = false;
        event_add(r->rev, NULL);
    }
}

static int relay_push(tn_conn *c, const char *data, size_t len)
{
    (void)c, (void)data, (void)len;
    return -1; /* messages reach a WebSocket through lws, never here */
}

/* WebSockets keep their own pings and timeouts: none here. */
static int64_t relay_no_timeout(const tn_conn *c)
{
    (void)c;
    return 0;
}

static void relay_release(tn_conn *c)
{
    relay *r = c->fe_state;
    if (!r)
        return;
    event_free(r->rev);
    event_free(r->wev);
    evutil_closesocket(r->fd);
    evbuffer_free(r->pending);
    free(r);
    c->fe_state = NULL;
}

static const tn_frontend relay_frontend = {
    .name = "ws",
    .input = relay_input,
    .push = relay_push,
    .release = relay_release,
    .partial_timeout = relay_no_timeout,
    .drained = relay_drained,
};

evutil_socket_t tn_relay_start(tn_conn *c)
{
    int sv[2];
    relay *r = calloc(1, sizeof(*r));
    if (!r || socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0) {
        free(r);
        tn_conn_close(c, "cannot relay the WebSocket");
        return -1;
    }
    r->fd = sv[0];
    r->rev = event_new(tn_conn_daemon(c)->base, sv[0], EV_READ | EV_PERSIST, on_pair_readable, c);
    r->wev = event_new(tn_conn_daemon(c)->base, sv[0], EV_WRITE, on_pair_writable, c);
    r->pending = evbuffer_new();
    if (!r->rev || !r->wev || !r->pending || event_add(r->rev, NULL) < 0) {
        if (r->rev)
            event_free(r->rev);
        if (r->wev)
            event_free(r->wev);
        if (r->pending)
            evbuffer_free(r->pending);
        free(r);
        close(sv[0]);
        close(sv[1]);
        tn_conn_close(c, "cannot relay the WebSocket");
        return -1;
    }
    tn_conn_become_relay(c, &relay_frontend, r);
    return sv[1];
}
