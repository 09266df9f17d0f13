/* SPDX-License-Identifier: MIT */
/* proxy_ws.c - a proxied WebSocket after its 101: bytes relayed as they
 * are, both ways, with backpressure (a side that stops reading stops the
 * other side's reads once RELAY_HIGH bytes wait for it), an idle timeout
 * over both directions, and a close on one side passed to the other once
 * what it sent has been delivered. The frames are the endpoints' business:
 * nothing here parses them.
 *
 * The relay is one of the daemon's connections (protocol "ws", with the
 * request's path), like a WebSocket the daemon serves itself: `connections`
 * lists it, `close ID` ends it, it counts against max_connections, and a
 * graceful shutdown waits for it until `shutdown_timeout`, as nginx waits for
 * upgraded connections, since a proxy that cannot see frame boundaries has
 * no safe place to put a close frame of its own. It holds its handler, so a
 * proxy handler a reload removed still lists the server it goes to. */
#include "upstream/http_proxy.h"

#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include <event2/buffer.h>

#include "clock.h"
#include "handlers/handler.h"
#include "log.h"
#include "net/conn.h"

#define RELAY_HIGH (256 * 1024)

typedef struct relay {
    tn_conn_base base;           /* first: the daemon's record of the connection */
    struct bufferevent *side[2]; /* 0: client, 1: upstream */
    tn_handler *h;
    tn_upstream_server *s;
    int64_t idle_ms;
    int64_t last_us;
    bool closing;
    char local[80];
    char path[];
} relay;

static void relay_free(relay *rl, const char *why)
{
    if (rl->base.dead)
        return;
    if (why)
        tn_debug("connection %llu closed: %s", (unsigned long long)rl->base.session.id, why);
    for (int i = 0; i < 2; i++)
        if (rl->side[i])
            bufferevent_free(rl->side[i]);
    rl->side[0] = rl->side[1] = NULL;
    rl->s->stats.active--;
    tn_upstream_server_unref(rl->s);
    tn_handler_unref(rl->h);
    tn_conn_base_close(&rl->base); /* the reap job frees the record */
}

static int index_of(relay *rl, struct bufferevent *bev)
{
    return rl->side[0] == bev ? 0 : 1;
}

static void on_read(struct bufferevent *bev, void *arg)
{
    relay *rl = arg;
    int i = index_of(rl, bev);
    struct evbuffer *in = bufferevent_get_input(bev);
    size_t n = evbuffer_get_length(in);
    rl->last_us = tn_now_us();
    rl->base.last_activity_ms = tn_loop_ms(rl->h->base);
    if (i == 0) {
        rl->s->stats.bytes_sent += n;
        rl->base.bytes_in += n;
    } else {
        rl->s->stats.bytes_received += n;
        rl->base.bytes_out += n;
    }
    struct bufferevent *other = rl->side[1 - i];
    if (!other) {
        evbuffer_drain(in, n);
        return;
    }
    bufferevent_write_buffer(other, in);
    if (evbuffer_get_length(bufferevent_get_output(other)) >= RELAY_HIGH)
        bufferevent_disable(bev, EV_READ); /* until the other side takes it (on_write) */
}

static void on_write(struct bufferevent *bev, void *arg)
{
    relay *rl = arg;
    int i = index_of(rl, bev);
    struct bufferevent *other = rl->side[1 - i];
    if (rl->closing) {
        /* one side closed: this one had its last bytes to deliver */
        if (!evbuffer_get_length(bufferevent_get_output(bev)))
            relay_free(rl, NULL);
        return;
    }
    if (other && !(bufferevent_get_enabled(other) & EV_READ))
        bufferevent_enable(other, EV_READ);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    relay *rl = arg;
    int i = index_of(rl, bev);
    if ((what & BEV_EVENT_TIMEOUT) && (what & BEV_EVENT_WRITING)) {
        /* a side has not taken what waits for it for `timeout`: a peer that
         * stopped reading would hold the relay (and, closing, forever) */
        relay_free(rl, "write timeout");
        return;
    }
    if ((what & BEV_EVENT_TIMEOUT) && !rl->closing) {
        /* a read timeout on one side only: the other may be the busy one */
        int64_t idle = (tn_now_us() - rl->last_us) / 1000;
        if (idle < rl->idle_ms) {
            bufferevent_enable(bev, EV_READ);
            return;
        }
        relay_free(rl, "timeout");
        return;
    }
    /* EOF or error: deliver what the other side still owes, then close */
    bufferevent_free(bev);
    rl->side[i] = NULL;
    struct bufferevent *other = rl->side[1 - i];
    if (!other || rl->closing || !evbuffer_get_length(bufferevent_get_output(other)) || (what & BEV_EVENT_ERROR)) {
        relay_free(rl, (what & BEV_EVENT_ERROR) ? "relay error" : NULL);
        return;
    }
    rl->closing = true;
    bufferevent_disable(other, EV_READ);
}

/* ---- the relay as one of the daemon's connections ------------------------------------- */

static relay *relay_of(const tn_conn_base *b)
{
    return (relay *)b;
}

static const char *relay_protocol(const tn_conn_base *b)
{
    (void)b;
    return "ws";
}

static void relay_describe(const tn_conn_base *b, tn_conn_info *info)
{
    relay *rl = relay_of(b);
    snprintf(info->local, sizeof(info->local), "%s", rl->local);
    info->path = rl->path;
    info->subprotocol = "";
}

static bool relay_closing(const tn_conn_base *b)
{
    return relay_of(b)->closing;
}

/* The upstream application writes its client's frames: nothing is put
 * between them from here. */
static int relay_send(tn_conn_base *b, const char *data, size_t len)
{
    (void)b;
    (void)data;
    (void)len;
    return -3;
}

static void relay_close(tn_conn_base *b)
{
    relay_free(relay_of(b), "closed by control");
}

/* A graceful shutdown waits for the relay to end (or for its timeout). */
static void relay_shutdown(tn_conn_base *b)
{
    (void)b;
}

static void relay_abort(tn_conn_base *b, const char *why)
{
    relay_free(relay_of(b), why);
}

static void relay_destroy(tn_conn_base *b)
{
    free(relay_of(b));
}

static const tn_conn_kind relay_kind = {
    .protocol = relay_protocol,
    .describe = relay_describe,
    .closing = relay_closing,
    .send = relay_send,
    .close = relay_close,
    .shutdown = relay_shutdown,
    .abort = relay_abort,
    .destroy = relay_destroy,
};

void tn_proxy_ws_relay(tn_handler *h, const tn_http_handover *ho, struct bufferevent *up, tn_upstream_server *s)
{
    const char *path = ho->path ? ho->path : "";
    relay *rl = calloc(1, sizeof(*rl) + strlen(path) + 1);
    struct bufferevent *client = rl ? bufferevent_socket_new(h->base, ho->fd, BEV_OPT_CLOSE_ON_FREE) : NULL;
    if (!client) {
        evutil_closesocket(ho->fd);
        bufferevent_free(up);
        s->stats.active--;
        free(rl);
        return;
    }
    tn_conn_base_init(&rl->base, &relay_kind, ho->from->listener);
    rl->base.remote = ho->from->remote;
    rl->base.established_ms = tn_loop_ms(h->base);
    rl->base.last_activity_ms = rl->base.established_ms;
    snprintf(rl->local, sizeof(rl->local), "%s", ho->local ? ho->local : "?");
    strcpy(rl->path, path);
    tn_conn_base_open(&rl->base);
    rl->side[0] = client;
    rl->side[1] = up;
    rl->h = h;
    tn_handler_ref(h);
    rl->s = s;
    tn_upstream_server_ref(s);
    rl->idle_ms = h->conf.timeout;
    rl->last_us = tn_now_us();
    struct timeval tv = { rl->idle_ms / 1000, (rl->idle_ms % 1000) * 1000 };
    for (int i = 0; i < 2; i++) {
        bufferevent_setcb(rl->side[i], on_read, on_write, on_event, rl);
        bufferevent_setwatermark(rl->side[i], EV_WRITE, RELAY_HIGH / 2, 0);
        bufferevent_set_timeouts(rl->side[i], rl->idle_ms ? &tv : NULL, rl->idle_ms ? &tv : NULL);
        bufferevent_enable(rl->side[i], EV_READ | EV_WRITE);
    }
    if (ho->len)
        bufferevent_write(up, ho->data, ho->len);
    s->stats.bytes_sent += ho->len;
    rl->base.bytes_in += ho->len;
    /* what the upstream sent right behind its 101 */
    if (evbuffer_get_length(bufferevent_get_input(up)))
        on_read(up, rl);
}
