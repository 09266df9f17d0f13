/* SPDX-License-Identifier: MIT */
/* conn.c - stream connections: reading, writing, the per-connection record
 * and accounting, timeouts, output caps, and closing without surprises.
 *
 * I/O is done the way nginx does it rather than through bufferevents: each
 * connection has one edge-triggered event for both directions, registered
 * once, so a request/reply cycle costs a read and a write and no epoll_ctl.
 * Input is read into a buffer shared by the whole daemon and handed to the
 * front end in place; only an incomplete message is copied into the
 * connection's own buffer. Replies collect in a shared buffer too and are
 * written before the callback returns; only what the socket does not take
 * stays with the connection. An idle connection therefore owns no buffers:
 * just this record and its event.
 *
 * Edge triggering means every readiness must be used up: reads continue
 * until the socket has nothing more (a short read is taken as empty, a new
 * packet raises a new edge), and input paused for backpressure is read when
 * the output drains. A FIN that arrived with the data raises no edge of its
 * own, so the event also asks for EPOLLRDHUP (libevent's EV_CLOSED) and,
 * when it is reported, reads on to the end of stream (nginx's pending_eof):
 * a client that sends and shuts down its write side in one go is answered
 * and closed at once instead of lingering in CLOSE-WAIT until idle_timeout.
 *
 * Closing is two-step. tn_conn_close() runs whenever something decides the
 * connection is over, often from deep inside its own callbacks: it releases
 * the socket, the front end state and the handlers' attachments at once, but
 * the record itself is freed from the daemon's reap event, so callers up the
 * stack may still look at c->base.dead. */
#include "net/conn.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "clock.h"
#include "log.h"
#include "net/listener.h"
#include "net/tls.h"
#include "workers.h"

#define OUTPUT_HIGH (256 * 1024) /* unsent bytes that pause reading */

static const tn_session_ops conn_session_ops;
static void conn_read(tn_conn *c);
static bool is_relay(const tn_conn *c);

/* Milliseconds since the connection was established, truncated: the
 * differences of two fit read_timeout's range. */
static uint32_t conn_ms(tn_conn *c)
{
    return (uint32_t)(tn_loop_ms(tn_conn_daemon(c)->base) - c->base.established_ms);
}

static bool fe_busy(const tn_conn *c)
{
    return c->fe->busy && c->fe->busy(c);
}

static void count_error(tn_conn *c)
{
    TN_COUNT(c->base.listener, connection_errors, 1);
}

/* ---- timeouts ------------------------------------------------------------- */

void tn_conn_update_timeouts(tn_conn *c)
{
    if (c->base.dead)
        return;
    const tn_limits *lim = tn_listener_limits(c->base.listener);
    int64_t ms, partial = -1;
    bool exact = false;
    if (c->tp->handshaking(c->tp_state)) {
        /* a deadline from the accept: trickling bytes do not extend it */
        ms = lim->handshake_timeout;
        if (ms > 0) {
            ms -= tn_loop_ms(tn_conn_daemon(c)->base) - c->base.established_ms;
            if (ms < 1)
                ms = 1;
            exact = true;
        }
    } else if (tn_conn_unsent(c)) {
        ms = lim->write_timeout; /* the peer must keep reading */
    } else if (fe_busy(c)) {
        ms = 0; /* waiting on a handler is not idleness */
    } else if (c->fe->partial_timeout && (partial = c->fe->partial_timeout(c)) >= 0) {
        ms = partial; /* a deadline of the front end's, not a common duration */
        exact = true;
    } else {
        ms = lim->idle_timeout;
        /* a half-received message must be complete read_timeout after its
         * first byte: a deadline, or one byte now and then would hold the
         * connection (and its buffer) forever */
        if (c->in && lim->read_timeout) {
            int64_t left = lim->read_timeout - (int64_t)(uint32_t)(conn_ms(c) - c->in_since_ms);
            if (left < 1)
                left = 1;
            if (!ms || left < ms) {
                ms = left;
                exact = true;
            }
        }
    }
    int32_t want = ms > 0 ? (int32_t)(ms > INT32_MAX ? INT32_MAX : ms) : -1;
    if (want == c->timeout_ms && !exact)
        return;
    c->timeout_ms = want;
    if (want < 0) {
        event_remove_timer(c->ev);
        return;
    }
    /* The same few durations on thousands of connections: libevent's common
     * timeouts keep them in queues instead of the timer heap. The event is
     * persistent, so any activity restarts the countdown. */
    struct timeval tv = { want / 1000, (want % 1000) * 1000 };
    event_add(c->ev, exact ? &tv : event_base_init_common_timeout(tn_conn_daemon(c)->base, &tv));
}

/* ---- output ----------------------------------------------------------------- */

size_t tn_conn_unsent(const tn_conn *c)
{
    size_t n = c->out ? evbuffer_get_length(c->out) : 0;
    if (tn_conn_daemon(c)->wbuf_owner == c)
        n += evbuffer_get_length(tn_conn_daemon(c)->wbuf);
    return n;
}

struct evbuffer *tn_conn_output(tn_conn *c)
{
    tn_daemon *d = tn_conn_daemon(c);
    if (c->out)
        return c->out;
    if (d->wbuf_owner && d->wbuf_owner != c)
        tn_conn_flush(d->wbuf_owner); /* another connection's replies go first */
    d->wbuf_owner = c;
    return d->wbuf;
}

static void output_drained(tn_conn *c)
{
    if (c->closing) {
        if (!fe_busy(c))
            tn_conn_close(c, NULL);
        else if (c->fe->drained)
            c->fe->drained(c); /* a body still being made (HTTP) goes on */
        return;
    }
    if (c->fe->drained) {
        c->fe->drained(c);
        if (c->base.dead)
            return;
    }
    if (c->read_paused) {
        c->read_paused = 0;
        conn_read(c);
    }
}

void tn_conn_flush(tn_conn *c)
{
    tn_daemon *d = tn_conn_daemon(c);
    struct evbuffer *src = c->out;
    if (d->wbuf_owner == c) {
        d->wbuf_owner = NULL;
        src = d->wbuf;
    }
    if (!src) {
        /* nothing left to write: a connection whose end waited on a reply
         * still being made (the peer's FIN came first) ends with it */
        if (c->closing && !c->base.dead && !fe_busy(c))
            tn_conn_close(c, NULL);
        return;
    }
    if (c->base.dead) {
        evbuffer_drain(src, evbuffer_get_length(src));
        return;
    }
    while (evbuffer_get_length(src)) {
        int n = c->tp->plain && !c->file_out ? tn_sock_send(c->fd, src) : c->tp->write(c->tp_state, c->fd, src);
        if (n > 0) {
            if (is_relay(c))
                continue; /* lws counts what it sends */
            c->base.bytes_out += (uint64_t)n;
            TN_COUNT(c->base.listener, total_bytes_sent, (uint64_t)n);
            c->base.last_activity_ms = tn_loop_ms(d->base);
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break; /* the next writable edge continues */
        count_error(c);
        evbuffer_drain(src, evbuffer_get_length(src));
        tn_conn_close(c, n < 0 ? strerror(errno) : "write failed");
        return;
    }
    if (src == d->wbuf && evbuffer_get_length(src)) {
        c->out = evbuffer_new();
        if (!c->out) {
            evbuffer_drain(src, evbuffer_get_length(src));
            tn_conn_close(c, "out of memory");
            return;
        }
        evbuffer_add_buffer(c->out, src); /* moves the chains, no copy */
    }
    if (c->out && !evbuffer_get_length(c->out)) {
        evbuffer_free(c->out);
        c->out = NULL;
    }
    if (!c->out)
        output_drained(c);
    if (!c->base.dead)
        tn_conn_update_timeouts(c);
}

void tn_conn_pause_input(tn_conn *c)
{
    c->read_paused = 1;
}

void tn_conn_resume_input(tn_conn *c)
{
    if (!c->read_paused || c->base.dead)
        return;
    c->read_paused = 0;
    conn_read(c);
}

/* ---- input ------------------------------------------------------------------ */

/* Offers what is buffered to the front end again. */
static void process_buffered(tn_conn *c)
{
    size_t len = evbuffer_get_length(c->in);
    const char *data = (const char *)evbuffer_pullup(c->in, -1);
    size_t used = c->fe->input(c, data, len);
    if (c->base.dead)
        return;
    if (used)
        c->in_since_ms = conn_ms(c); /* the rest began after what was used: now, or a pause ago */
    evbuffer_drain(c->in, used);
    if (!evbuffer_get_length(c->in)) {
        evbuffer_free(c->in);
        c->in = NULL;
    }
}

/* The peer sent its last byte: what is left of an incomplete message goes
 * to the front end, replies still owed (async ones too) go out, then the
 * connection closes, unless a handler still talks (a stream process gets
 * its stdin closed and closes the connection when it exits). */
static void peer_finished(tn_conn *c)
{
    if (c->in && c->fe->input_end) {
        size_t len = evbuffer_get_length(c->in);
        c->fe->input_end(c, (const char *)evbuffer_pullup(c->in, -1), len);
        if (c->base.dead)
            return;
    }
    if (c->in) {
        evbuffer_free(c->in);
        c->in = NULL;
    }
    if (c->fe->peer_done) {
        c->fe->peer_done(c);
        if (c->base.dead)
            return;
    }
    c->input_ended = 1;
    if (c->fe->finished && c->fe->finished(c)) {
        if (!c->base.dead)
            tn_conn_update_timeouts(c);
        return;
    }
    if (tn_session_input_end(&c->base.session)) {
        tn_conn_flush(c); /* the last line's reply, if any */
        if (!c->base.dead)
            tn_conn_update_timeouts(c);
        return;
    }
    c->closing = 1;
    tn_conn_flush(c); /* closes once the output is out and nothing is in flight */
    tn_conn_close_after_flush(c, NULL);
}

/* Whether the loop reports the peer's FIN (EV_CLOSED); without it a short
 * read cannot be taken as draining the socket. */
static bool reports_fin(tn_daemon *d)
{
    return event_base_get_features(d->base) & EV_FEATURE_EARLY_CLOSE;
}

static void conn_read(tn_conn *c)
{
    tn_daemon *d = tn_conn_daemon(c);
    if (c->in && !c->base.dead && !c->closing) {
        process_buffered(c); /* left over from before a pause */
        tn_conn_flush(c);
    }
    for (;;) {
        if (c->base.dead || c->closing || c->input_ended)
            return;
        if (c->read_paused || (c->out && evbuffer_get_length(c->out) > OUTPUT_HIGH)) {
            /* the client sends faster than it reads: leave its input in
             * the socket until the output drains */
            c->read_paused = 1;
            break;
        }
        ssize_t n = c->tp->read(c->tp_state, c->fd, d->rbuf, TN_RBUF_SIZE);
        if (n > 0) {
            if (!is_relay(c)) {
                c->base.bytes_in += (uint64_t)n;
                TN_COUNT(c->base.listener, total_bytes_received, (uint64_t)n);
            }
            c->base.last_activity_ms = tn_loop_ms(d->base);
            if (c->in) {
                evbuffer_add(c->in, d->rbuf, (size_t)n);
                process_buffered(c);
            } else {
                size_t used = c->fe->input(c, d->rbuf, (size_t)n);
                if (!c->base.dead && used < (size_t)n && !c->closing) {
                    c->in = evbuffer_new();
                    if (!c->in) {
                        tn_conn_close(c, "out of memory");
                        return;
                    }
                    evbuffer_add(c->in, d->rbuf + used, (size_t)n - used);
                    c->in_since_ms = conn_ms(c);
                }
            }
            tn_conn_flush(c);
            /* A short read drained the socket: new data raises a new edge,
             * but a FIN already reported raises none, so read on to it.
             * A transport that is not plain (TLS) returns a record at a
             * time, so it reads on until the socket says EAGAIN. */
            if ((size_t)n < TN_RBUF_SIZE && c->tp->plain && !c->eof_pending && reports_fin(d))
                break;
            continue;
        }
        if (n == 0) {
            if (c->tp->broken(c->tp_state)) {
                /* an end without close_notify may be a truncation, and
                 * OpenSSL has already failed the session: nothing more
                 * can be answered */
                tn_conn_close(c, NULL);
                return;
            }
            peer_finished(c);
            return;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            break;
        count_error(c);
        tn_conn_close(c, strerror(errno));
        return;
    }
    tn_conn_update_timeouts(c);
}

static void tls_failed(tn_conn *c, int reason, const char *detail)
{
    TN_COUNT(c->base.listener, tls_failures[reason], 1);
    if (tn_log_get_level() >= TN_LOG_DEBUG) {
        char remote[80];
        tn_conn_remote_str(c, remote, sizeof(remote));
        tn_debug("listener %s: TLS handshake with %s failed: %s (%s)", c->base.listener->name, remote,
                 tn_tls_failure_name(reason), detail);
    }
    tn_conn_close(c, NULL);
}

/* Advances the handshake; true once application data may flow. */
static bool tls_handshake(tn_conn *c)
{
    int reason = TN_TLSF_OTHER;
    char detail[160];
    switch (c->tp->handshake(c->tp_state, &reason, detail, sizeof(detail))) {
    case TN_TP_DONE:
        TN_COUNT(c->base.listener, tls_handshakes, 1);
        c->base.last_activity_ms = tn_loop_ms(tn_conn_daemon(c)->base);
        tn_conn_update_timeouts(c);
        return true;
    case TN_TP_AGAIN:
        tn_conn_update_timeouts(c); /* the event's persistence restarted the countdown */
        return false;
    default: tls_failed(c, reason, detail); return false;
    }
}

static void on_event(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    tn_conn *c = arg;
    if (what & EV_CLOSED)
        c->eof_pending = 1;
    if (what & EV_TIMEOUT) {
        TN_COUNT(c->base.listener, timeout_errors, 1);
        c->timeout_ms = -1; /* fired: nothing is armed any more */
        if (c->tp->handshaking(c->tp_state)) {
            tls_failed(c, TN_TLSF_TIMEOUT, "handshake_timeout");
            return;
        }
        if (!tn_conn_unsent(c) && c->fe->timed_out && c->fe->timed_out(c))
            return;
        tn_conn_close(c, tn_conn_unsent(c) ? "write timeout" : "timeout");
        return;
    }
    if (!c->tp->plain) {
        /* TLS reads may need the socket writable and writes readable: any
         * edge continues both */
        if (c->tp->handshaking(c->tp_state) && !tls_handshake(c))
            return;
        if (c->out)
            tn_conn_flush(c);
        if (!c->base.dead)
            conn_read(c);
        return;
    }
    if ((what & EV_WRITE) && c->out)
        tn_conn_flush(c);
    if ((what & (EV_READ | EV_CLOSED)) && !c->base.dead)
        conn_read(c);
}

/* ---- lifetime ---------------------------------------------------------------- */

/* ---- the record every connection starts with --------------------------------- */

static void list_add(tn_conn_base **head, tn_conn_base *b)
{
    b->prev = NULL;
    b->next = *head;
    if (*head)
        (*head)->prev = b;
    *head = b;
}

static void list_remove(tn_conn_base **head, tn_conn_base *b)
{
    if (b->prev)
        b->prev->next = b->next;
    else
        *head = b->next;
    if (b->next)
        b->next->prev = b->prev;
    b->prev = b->next = NULL;
}

static void base_count(tn_conn_base *b, int delta)
{
    tn_daemon *d = b->listener->d;
    d->active += (uint64_t)(int64_t)delta;
    tn_workers_publish(d);
    TN_COUNT(b->listener, active_connections, (int64_t)delta);
}

void tn_conn_base_init(tn_conn_base *b, const tn_conn_kind *kind, tn_listener *l)
{
    b->kind = kind;
    b->listener = l;
    b->session.id = ++l->d->next_conn_id;
    b->session.listener = l->name;
}

void tn_conn_base_open(tn_conn_base *b)
{
    list_add(&b->listener->d->conns, b);
    base_count(b, 1);
}

/* B leaves LIST (uncounted when it is the open population) for the reap. */
static void base_end(tn_conn_base *b, tn_conn_base **list)
{
    tn_daemon *d = b->listener->d;
    b->dead = true;
    list_remove(list, b);
    if (list == &d->conns)
        base_count(b, -1);
    b->next = d->dead;
    d->dead = b;
    tn_before_sleep_due(d, &d->reap_job);
}

void tn_conn_base_close(tn_conn_base *b)
{
    if (!b->dead)
        base_end(b, &b->listener->d->conns);
}

tn_conn_base *tn_conn_find(tn_daemon *d, uint64_t id)
{
    for (tn_conn_base *b = d->conns; b; b = b->next)
        if (b->session.id == id)
            return b;
    return NULL;
}

void tn_conn_reap(tn_daemon *d)
{
    while (d->dead) {
        tn_conn_base *b = d->dead;
        d->dead = b->next;
        b->kind->destroy(b);
    }
    /* a removed listener goes with its last connection; looked up here
     * rather than through the records freed above, which may share one */
    for (tn_listener *l = d->listeners, *next; l; l = next) {
        next = l->next;
        if (l->draining && l->stats.active_connections == 0 && !tn_listener_in_flight(l))
            tn_listener_free(l);
    }
}

/* ---- stream connections -------------------------------------------------------- */

static const tn_conn_kind stream_kind, relay_kind;

tn_conn *tn_conn_new(tn_listener *l, evutil_socket_t fd, const struct sockaddr *sa, int salen,
                     tn_peer *peer, const tn_frontend *fe)
{
    tn_daemon *d = l->d;
    tn_conn *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    evutil_make_socket_nonblocking(fd);
    c->ev = event_new(d->base, fd, EV_READ | EV_WRITE | EV_CLOSED | EV_PERSIST | EV_ET, on_event, c);
    if (!c->ev || event_add(c->ev, NULL) < 0) {
        if (c->ev)
            event_free(c->ev);
        free(c);
        return NULL;
    }
    /* the listener's TLS contexts decide the transport, once */
    c->tp = l->tls ? &tn_tls_transport : &tn_tcp_transport;
    if (l->tls && !(c->tp_state = tn_tls_accept(l->tls, fd))) {
        event_free(c->ev);
        free(c);
        return NULL;
    }
    c->fd = fd;
    tn_conn_base_init(&c->base, &stream_kind, l);
    c->fe = fe;
    c->peer = peer;
    if (peer)
        peer->conns++;
    if ((size_t)salen <= sizeof(c->base.remote))
        memcpy(&c->base.remote, sa, (size_t)salen);
    c->base.session.ops = &conn_session_ops;
    c->base.session.protocol = l->protocol;
    c->base.established_ms = c->base.last_activity_ms = tn_loop_ms(d->base);
    c->timeout_ms = -1;
    tn_conn_base_open(&c->base);
    TN_COUNT(l, total_connections, 1);
    tn_conn_update_timeouts(c);
    return c;
}

static void conn_end(tn_conn *c, const char *why, bool close_fd);

/* The peer's address no longer counts this connection. */
static void leave_peer(tn_conn *c)
{
    if (c->peer) {
        c->peer->conns--;
        tn_workers_ip_release(tn_conn_daemon(c), c->base.listener->name, &c->base.remote.sa);
    }
    c->peer = NULL;
}

/* Whether C carries a WebSocket's bytes (tn_conn_become_relay()). */
static bool is_relay(const tn_conn *c)
{
    return c->base.kind == &relay_kind;
}

void tn_conn_become_relay(tn_conn *c, const tn_frontend *fe, void *fe_state)
{
    tn_daemon *d = tn_conn_daemon(c);
    if (c->fe->release)
        c->fe->release(c);
    tn_session_detach_all(&c->base.session);
    c->fe = fe;
    c->fe_state = fe_state;
    list_remove(&d->conns, &c->base);
    base_count(&c->base, -1);
    list_add(&d->relays, &c->base);
    c->base.kind = &relay_kind;
    leave_peer(c);
    tn_conn_update_timeouts(c);
}

const tn_tls_info *tn_conn_tls_info(const tn_conn *c)
{
    return c->tp->info(c->tp_state);
}

void tn_conn_close(tn_conn *c, const char *why)
{
    conn_end(c, why, true);
}

evutil_socket_t tn_conn_take_fd(tn_conn *c)
{
    evutil_socket_t fd = c->fd;
    if (c->base.dead)
        return -1;
    conn_end(c, "handed over", false);
    return fd;
}

static void conn_end(tn_conn *c, const char *why, bool close_fd)
{
    if (c->base.dead)
        return;
    tn_daemon *d = tn_conn_daemon(c);
    if (why)
        tn_debug("connection %llu closed: %s", (unsigned long long)c->base.session.id, why);
    base_end(&c->base, is_relay(c) ? &d->relays : &d->conns);
    leave_peer(c);
    if (d->wbuf_owner == c) {
        d->wbuf_owner = NULL;
        evbuffer_drain(d->wbuf, evbuffer_get_length(d->wbuf));
    }
    if (c->fe->release)
        c->fe->release(c);
    tn_session_detach_all(&c->base.session);
    event_free(c->ev);
    c->ev = NULL;
    /* close_notify only at an orderly end, never to a peer that failed */
    if (close_fd && !why)
        c->tp->shutdown(c->tp_state);
    c->tp->close(c->tp_state);
    c->tp = &tn_tcp_transport; /* a closed connection has no session left */
    c->tp_state = NULL;
    if (close_fd)
        evutil_closesocket(c->fd);
    c->fd = -1;
    if (c->in)
        evbuffer_free(c->in);
    if (c->out)
        evbuffer_free(c->out);
    c->in = c->out = NULL;
}

void tn_conn_close_after_flush(tn_conn *c, const char *why)
{
    if (c->base.dead)
        return;
    if (why)
        tn_debug("connection %llu closing: %s", (unsigned long long)c->base.session.id, why);
    c->closing = 1;
    if (!tn_conn_unsent(c) && !fe_busy(c))
        tn_conn_close(c, NULL);
}

void tn_conn_remote_str(const tn_conn *c, char *buf, size_t len)
{
    tn_addr_format(&c->base.remote.sa, buf, len);
}

/* ---- the stream connection as the daemon and the control socket see it ---- */

static tn_conn *conn_of(const tn_conn_base *b)
{
    return (tn_conn *)b;
}

static const char *stream_protocol(const tn_conn_base *b)
{
    return conn_of(b)->fe->name;
}

static void stream_describe(const tn_conn_base *b, tn_conn_info *info)
{
    const tn_conn *c = conn_of(b);
    tn_sockaddr la;
    socklen_t ll = sizeof(la);
    snprintf(info->local, sizeof(info->local), "?");
    if (getsockname(c->fd, &la.sa, &ll) == 0)
        tn_addr_format(&la.sa, info->local, sizeof(info->local));
    info->tls = tn_conn_tls_info(c);
}

static bool stream_busy(const tn_conn_base *b)
{
    return fe_busy(conn_of(b));
}

static bool stream_closing(const tn_conn_base *b)
{
    return conn_of(b)->closing;
}

static int stream_send(tn_conn_base *b, const char *data, size_t len)
{
    tn_conn *c = conn_of(b);
    if (c->closing)
        return -2;
    return c->fe->push(c, data, len) < 0 ? -1 : 0;
}

static void stream_close(tn_conn_base *b)
{
    tn_conn_close(conn_of(b), "closed by the control socket");
}

static void stream_shutdown(tn_conn_base *b)
{
    tn_conn_close_after_flush(conn_of(b), "shutdown");
}

static void stream_drain(tn_conn_base *b)
{
    tn_conn_close_after_flush(conn_of(b), "reload");
}

static void stream_abort(tn_conn_base *b, const char *why)
{
    tn_conn_close(conn_of(b), why);
}

static void stream_reconfigure(tn_conn_base *b)
{
    /* forget what is armed so the new values apply now */
    tn_conn *c = conn_of(b);
    c->timeout_ms = 0;
    tn_conn_update_timeouts(c);
}

static void stream_destroy(tn_conn_base *b)
{
    free(conn_of(b));
}

static const tn_conn_kind stream_kind = {
    .protocol = stream_protocol,
    .describe = stream_describe,
    .busy = stream_busy,
    .closing = stream_closing,
    .send = stream_send,
    .close = stream_close,
    .shutdown = stream_shutdown,
    .drain = stream_drain,
    .abort = stream_abort,
    .reconfigure = stream_reconfigure,
    .destroy = stream_destroy,
};

/* A relay is not in the population the daemon lists and counts (it is on
 * d->relays): the daemon only ends it and frees it. */
static const tn_conn_kind relay_kind = {
    .protocol = stream_protocol,
    .abort = stream_abort,
    .destroy = stream_destroy,
};

/* ---- the connection as handlers see it ----------------------------------- */

static tn_conn *session_conn(tn_session *s)
{
    return (tn_conn *)((char *)s - offsetof(tn_conn, base.session));
}

static int session_push(tn_session *s, const char *data, size_t len)
{
    tn_conn *c = session_conn(s);
    if (c->base.dead || c->closing)
        return 0;
    return c->fe->push(c, data, len);
}

static void session_close(tn_session *s, const char *reason)
{
    tn_conn_close_after_flush(session_conn(s), reason);
}

static const tn_session_ops conn_session_ops = { session_push, session_close };
