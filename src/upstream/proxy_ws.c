/* SPDX-License-Identifier: MIT */
/* proxy_ws.c - a proxied WebSocket after its 101: bytes relayed as they
 * are, both ways, with backpressure (a side that stops reading stops the
 * other side's reads once RELAY_HIGH bytes wait for it), an idle timeout
 * over both directions, and a close on one side passed to the other once
 * what it sent has been delivered. The frames are the endpoints' business:
 * nothing here parses them. */
#include "upstream/http_proxy.h"

#include <stdlib.h>

#include <event2/buffer.h>

#include "clock.h"
#include "handlers/handler.h"

#define RELAY_HIGH (256 * 1024)

typedef struct relay {
    struct bufferevent *side[2]; /* 0: client, 1: upstream */
    tn_upstream_server *s;
    int64_t idle_ms;
    int64_t last_us;
    bool closing;
} relay;

static void relay_free(relay *rl)
{
    for (int i = 0; i < 2; i++)
        if (rl->side[i])
            bufferevent_free(rl->side[i]);
    rl->s->stats.active--;
    tn_upstream_server_unref(rl->s);
    free(rl);
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
    if (i == 0)
        rl->s->stats.bytes_sent += n;
    else
        rl->s->stats.bytes_received += n;
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
            relay_free(rl);
        return;
    }
    if (other && !(bufferevent_get_enabled(other) & EV_READ))
        bufferevent_enable(other, EV_READ);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    relay *rl = arg;
    int i = index_of(rl, bev);
    if ((what & BEV_EVENT_TIMEOUT) && !rl->closing) {
        /* a read timeout on one side only: the other may be the busy one */
        int64_t idle = (tn_now_us() - rl->last_us) / 1000;
        if (idle < rl->idle_ms) {
            bufferevent_enable(bev, EV_READ);
            return;
        }
        relay_free(rl);
        return;
    }
    /* EOF or error: deliver what the other side still owes, then close */
    bufferevent_free(bev);
    rl->side[i] = NULL;
    struct bufferevent *other = rl->side[1 - i];
    if (!other || rl->closing || !evbuffer_get_length(bufferevent_get_output(other)) || (what & BEV_EVENT_ERROR)) {
        relay_free(rl);
        return;
    }
    rl->closing = true;
    bufferevent_disable(other, EV_READ);
}

int tn_proxy_ws_relay(struct event_base *base, evutil_socket_t fd, const char *data, size_t len,
                      struct bufferevent *up, tn_upstream_server *s, int64_t idle_ms)
{
    relay *rl = calloc(1, sizeof(*rl));
    struct bufferevent *client = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (!rl || !client) {
        if (client)
            bufferevent_free(client);
        else
            evutil_closesocket(fd);
        bufferevent_free(up);
        s->stats.active--;
        free(rl);
        return -1;
    }
    rl->side[0] = client;
    rl->side[1] = up;
    rl->s = s;
    rl->idle_ms = idle_ms;
    rl->last_us = tn_now_us();
    struct timeval tv = { idle_ms / 1000, (idle_ms % 1000) * 1000 };
    for (int i = 0; i < 2; i++) {
        bufferevent_setcb(rl->side[i], on_read, on_write, on_event, rl);
        bufferevent_setwatermark(rl->side[i], EV_WRITE, RELAY_HIGH / 2, 0);
        bufferevent_set_timeouts(rl->side[i], idle_ms ? &tv : NULL, NULL);
        bufferevent_enable(rl->side[i], EV_READ | EV_WRITE);
    }
    if (len)
        bufferevent_write(up, data, len);
    s->stats.bytes_sent += len;
    /* what the upstream sent right behind its 101 */
    if (evbuffer_get_length(bufferevent_get_input(up)))
        on_read(up, rl);
    return 0;
}
