/* conn.c - stream connections: creation, the per-connection record and
 * accounting, timeouts, output caps, and closing without surprises.
 *
 * Closing is two-step. tn_conn_close() runs whenever something decides the
 * connection is over (a reset, a timeout, a handler, the control socket),
 * often from deep inside one of the connection's own callbacks: it releases
 * the socket, the front end state and the handlers' attachments at once, but
 * the struct itself is only freed from the daemon's reap event, so callers up
 * the stack may still look at c->dead. */
#include "net/conn.h"

#include <errno.h>
#include <event2/buffer.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "net/listener.h"

static const tn_session_ops conn_session_ops;

static int64_t cached_wall_ms(tn_daemon *d)
{
    struct timeval tv;
    event_base_gettimeofday_cached(d->base, &tv);
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

static void count_out(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
    (void)buf;
    tn_conn *c = arg;
    if (info->n_deleted && !c->dead) {
        c->bytes_out += info->n_deleted;
        c->listener->stats.total_bytes_sent += info->n_deleted;
        c->d->stats.total_bytes_sent += info->n_deleted;
    }
}

static void count_in(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
    (void)buf;
    tn_conn *c = arg;
    if (info->n_added) {
        c->bytes_in += info->n_added;
        c->listener->stats.total_bytes_received += info->n_added;
        c->d->stats.total_bytes_received += info->n_added;
    }
}

static void on_read(struct bufferevent *bev, void *arg)
{
    (void)bev;
    tn_conn *c = arg;
    c->last_activity_ms = cached_wall_ms(c->d);
    if (!c->closing)
        c->fe->read(c);
}

static void on_write(struct bufferevent *bev, void *arg)
{
    tn_conn *c = arg;
    c->last_activity_ms = cached_wall_ms(c->d);
    if (c->closing) {
        if (evbuffer_get_length(bufferevent_get_output(bev)) == 0 && !(c->fe->busy && c->fe->busy(c)))
            tn_conn_close(c, NULL);
        return;
    }
    if (c->read_paused) {
        c->read_paused = 0;
        bufferevent_enable(bev, EV_READ);
    }
    if (c->fe->drained)
        c->fe->drained(c);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    tn_conn *c = arg;
    if (what & BEV_EVENT_TIMEOUT) {
        c->listener->stats.timeout_errors++;
        c->d->stats.timeout_errors++;
        tn_conn_close(c, (what & BEV_EVENT_WRITING) ? "write timeout" : "timeout");
        return;
    }
    if (what & BEV_EVENT_ERROR) {
        int err = EVUTIL_SOCKET_ERROR();
        c->listener->stats.connection_errors++;
        c->d->stats.connection_errors++;
        tn_debug("connection %llu: %s", (unsigned long long)c->session.id, evutil_socket_error_to_string(err));
        tn_conn_close(c, "error");
        return;
    }
    if (what & BEV_EVENT_EOF) {
        /* The peer finished sending; answer what is in flight, then close. */
        c->closing = 1;
        bufferevent_disable(c->bev, EV_READ);
        if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0 && !(c->fe->busy && c->fe->busy(c)))
            tn_conn_close(c, NULL);
    }
}

/* Same durations on thousands of connections: libevent's common timeouts
 * keep them in a queue instead of the timer heap. */
static const struct timeval *timeout_tv(tn_daemon *d, int64_t ms)
{
    struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };
    return event_base_init_common_timeout(d->base, &tv);
}

void tn_conn_update_timeouts(tn_conn *c, bool mid_message, bool waiting)
{
    /* Re-arming costs a timer operation; do it only when the state changes
     * (libevent re-arms the same timeout itself on every read and write). */
    uint8_t state = (uint8_t)(1 | (mid_message ? 2 : 0) | (waiting ? 4 : 0));
    if (c->timeout_state == state)
        return;
    c->timeout_state = state;
    const tn_limits *lim = tn_listener_limits(c->listener);
    /* Waiting on a handler is not idleness; a half-received message is held
     * to read_timeout when that is stricter. */
    int64_t rd = waiting ? 0 : lim->idle_timeout;
    if (mid_message && lim->read_timeout && (!rd || lim->read_timeout < rd))
        rd = lim->read_timeout;
    bufferevent_set_timeouts(c->bev, rd ? timeout_tv(c->d, rd) : NULL,
                             lim->write_timeout ? timeout_tv(c->d, lim->write_timeout) : NULL);
}

tn_conn *tn_conn_new(tn_listener *l, evutil_socket_t fd, const struct sockaddr *sa, int salen,
                     tn_peer *peer, const tn_frontend *fe)
{
    tn_daemon *d = l->d;
    tn_conn *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->bev = bufferevent_socket_new(d->base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (!c->bev) {
        free(c);
        return NULL;
    }
    c->d = d;
    c->listener = l;
    c->fe = fe;
    c->peer = peer;
    if (peer)
        peer->conns++;
    if ((size_t)salen <= sizeof(c->remote))
        memcpy(&c->remote, sa, (size_t)salen);
    c->session.ops = &conn_session_ops;
    c->session.id = ++d->next_conn_id;
    c->session.listener = l->name;
    c->session.protocol = l->protocol;
    c->established_ms = c->last_activity_ms = cached_wall_ms(d);
    evbuffer_add_cb(bufferevent_get_output(c->bev), count_out, c);
    evbuffer_add_cb(bufferevent_get_input(c->bev), count_in, c);
    bufferevent_setcb(c->bev, on_read, on_write, on_event, c);
    c->next = d->conns;
    if (d->conns)
        d->conns->prev = c;
    d->conns = c;
    d->active++;
    d->stats.active_connections++;
    d->stats.total_connections++;
    l->stats.active_connections++;
    l->stats.total_connections++;
    tn_conn_update_timeouts(c, false, false);
    bufferevent_enable(c->bev, EV_READ);
    return c;
}

void tn_conn_close(tn_conn *c, const char *why)
{
    if (c->dead)
        return;
    c->dead = 1;
    tn_daemon *d = c->d;
    if (why)
        tn_debug("connection %llu closed: %s", (unsigned long long)c->session.id, why);
    if (c->prev)
        c->prev->next = c->next;
    else
        d->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    d->active--;
    d->stats.active_connections--;
    c->listener->stats.active_connections--;
    if (c->peer)
        c->peer->conns--;
    if (c->fe->release)
        c->fe->release(c);
    tn_session_detach_all(&c->session);
    /* Count what was really sent, not what is thrown away with the buffer. */
    evbuffer_remove_cb(bufferevent_get_output(c->bev), count_out, c);
    evbuffer_remove_cb(bufferevent_get_input(c->bev), count_in, c);
    bufferevent_free(c->bev);
    c->bev = NULL;
    c->next = d->dead;
    d->dead = c;
    event_active(d->reap_ev, EV_TIMEOUT, 0);
}

void tn_conn_reap(tn_daemon *d)
{
    while (d->dead) {
        tn_conn *c = d->dead;
        d->dead = c->next;
        tn_listener *l = c->listener;
        free(c);
        if (l->draining && l->stats.active_connections == 0)
            tn_listener_free(l);
    }
    if (d->stopping)
        tn_daemon_check_stopped(d);
}

void tn_conn_close_after_flush(tn_conn *c, const char *why)
{
    if (c->dead)
        return;
    if (why)
        tn_debug("connection %llu closing: %s", (unsigned long long)c->session.id, why);
    c->closing = 1;
    bufferevent_disable(c->bev, EV_READ);
    if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0 && !(c->fe->busy && c->fe->busy(c)))
        tn_conn_close(c, NULL);
}

bool tn_conn_write(tn_conn *c, const void *data, size_t len)
{
    if (c->dead)
        return false;
    struct evbuffer *out = bufferevent_get_output(c->bev);
    const tn_limits *lim = tn_listener_limits(c->listener);
    if ((int64_t)(evbuffer_get_length(out) + len) > lim->max_output) {
        c->listener->stats.rejected[TN_REJ_SLOW_READER]++;
        c->d->stats.rejected[TN_REJ_SLOW_READER]++;
        tn_conn_close(c, "slow reader: output over max_output");
        return false;
    }
    evbuffer_add(out, data, len);
    return true;
}

tn_conn *tn_conn_find(tn_daemon *d, uint64_t id)
{
    for (tn_conn *c = d->conns; c; c = c->next)
        if (c->session.id == id)
            return c;
    return NULL;
}

void tn_conn_remote_str(const tn_conn *c, char *buf, size_t len)
{
    tn_addr_format(&c->remote.sa, buf, len);
}

/* ---- the connection as handlers see it ----------------------------------- */

static tn_conn *session_conn(tn_session *s)
{
    return (tn_conn *)((char *)s - offsetof(tn_conn, session));
}

static int session_push(tn_session *s, const char *data, size_t len)
{
    tn_conn *c = session_conn(s);
    if (c->dead || c->closing)
        return 0;
    return c->fe->push(c, data, len);
}

static void session_close(tn_session *s, const char *reason)
{
    tn_conn *c = session_conn(s);
    tn_conn_close_after_flush(c, reason);
}

static const tn_session_ops conn_session_ops = { session_push, session_close };
