/* line.c - the TCP line-protocol front end (SPEC section 5).
 *
 * Each '\n'-terminated line (a '\r' before it is dropped) is one message and
 * gets at most one reply line, in request order even when handlers answer
 * asynchronously. Sync replies with nothing queued ahead of them go straight
 * into the output buffer; only when an asynchronous reply is outstanding are
 * later replies parked in a queue, so the common case allocates nothing.
 *
 * Backpressure: a client that pipelines faster than it reads has its input
 * paused while the output holds more than OUTPUT_HIGH bytes; pushes
 * (broadcast, stream) beyond max_output make it a slow consumer. */
#include "proto/line.h"

#include <event2/buffer.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "net/listener.h"

#define OUTPUT_HIGH (256 * 1024)

typedef struct pending {
    struct pending *next;
    tn_conn *conn;
    tn_job *job; /* NULL once answered */
    tn_result result;
    bool crlf;
    char *data;
    size_t len;
} pending;

typedef struct line_state {
    pending *head, *tail;
} line_state;

static void line_read(tn_conn *c);

static line_state *state_of(tn_conn *c)
{
    if (!c->fe_state)
        c->fe_state = calloc(1, sizeof(line_state));
    return c->fe_state;
}

static bool queue_empty(const tn_conn *c)
{
    const line_state *st = c->fe_state;
    return !st || !st->head;
}

/* Replies end the way the request line did, so CRLF clients (telnet, redis
 * tools) get CRLF and everyone else a bare newline. */
static void write_reply(tn_conn *c, tn_result res, bool crlf, struct evbuffer *out, struct evbuffer *body)
{
    if (res == TN_FAIL)
        evbuffer_add(out, "Error: ", 7);
    evbuffer_add_buffer(out, body);
    evbuffer_add(out, "\r\n" + !crlf, 1 + crlf);
    c->msgs_out++;
    c->listener->stats.messages_out++;
    c->d->stats.messages_out++;
}

/* Sends every answered reply at the head of the queue. */
static void flush_queue(tn_conn *c)
{
    line_state *st = c->fe_state;
    while (st && st->head && !st->head->job) {
        pending *p = st->head;
        st->head = p->next;
        if (!st->head)
            st->tail = NULL;
        bool ok = true;
        if (p->result == TN_REPLY || p->result == TN_FAIL) {
            ok = (p->result != TN_FAIL || tn_conn_write(c, "Error: ", 7)) && tn_conn_write(c, p->data, p->len) &&
                 tn_conn_write(c, "\r\n" + !p->crlf, 1 + p->crlf);
            if (ok) {
                c->msgs_out++;
                c->listener->stats.messages_out++;
                c->d->stats.messages_out++;
            }
        }
        free(p->data);
        free(p);
        if (!ok || c->dead)
            return; /* closed as a slow reader; release() freed the rest */
    }
    if (queue_empty(c)) {
        if (c->closing || c->d->stopping)
            tn_conn_close_after_flush(c, NULL);
        else
            tn_conn_update_timeouts(c, evbuffer_get_length(bufferevent_get_input(c->bev)) > 0, false);
    }
}

static pending *enqueue(tn_conn *c, bool crlf)
{
    line_state *st = state_of(c);
    pending *p = st ? calloc(1, sizeof(*p)) : NULL;
    if (!p)
        return NULL;
    p->conn = c;
    p->crlf = crlf;
    if (st->tail)
        st->tail->next = p;
    else
        st->head = p;
    st->tail = p;
    return p;
}

static void job_complete(tn_job *job, tn_result result, const char *data, size_t len)
{
    pending *p = job->fe;
    p->job = NULL;
    p->result = result;
    if (len && (result == TN_REPLY || result == TN_FAIL)) {
        /* one reply is one line: drop the trailing newline a program printed */
        if (len && data[len - 1] == '\n')
            len--;
        if (len && data[len - 1] == '\r')
            len--;
        p->data = malloc(len);
        if (p->data) {
            memcpy(p->data, data, len);
            p->len = len;
        }
    }
    flush_queue(p->conn);
}

/* A reply produced now: straight out, or parked behind outstanding ones. */
static void answer(tn_conn *c, tn_result res, bool crlf, struct evbuffer *body)
{
    if (res == TN_SILENT) {
        evbuffer_drain(body, evbuffer_get_length(body));
        return;
    }
    if (queue_empty(c)) {
        write_reply(c, res, crlf, bufferevent_get_output(c->bev), body);
        return;
    }
    pending *p = enqueue(c, crlf);
    size_t n = evbuffer_get_length(body);
    if (p) {
        p->result = res;
        p->data = malloc(n ? n : 1);
        if (p->data)
            p->len = (size_t)evbuffer_remove(body, p->data, n);
    }
    evbuffer_drain(body, evbuffer_get_length(body));
}

static void answer_text(tn_conn *c, tn_result res, bool crlf, const char *fmt, const char *arg, size_t arglen)
{
    struct evbuffer *b = c->d->scratch;
    if (arg)
        evbuffer_add_printf(b, fmt, (int)arglen, arg);
    else
        evbuffer_add(b, fmt, strlen(fmt));
    answer(c, res, crlf, b);
}

static void handle_line(tn_conn *c, const char *line, size_t len, bool crlf)
{
    tn_listener *l = c->listener;
    const tn_limits *lim = tn_listener_limits(l);
    c->msgs_in++;
    l->stats.messages_in++;
    c->d->stats.messages_in++;
    if (lim->rate_limit > 0 && c->peer && !tn_peer_take_token(c->peer, lim->rate_limit, lim->rate_burst, tn_now_us())) {
        l->stats.rejected[TN_REJ_RATE_LIMIT]++;
        c->d->stats.rejected[TN_REJ_RATE_LIMIT]++;
        answer_text(c, TN_FAIL, crlf, "rate limit exceeded", NULL, 0);
        return;
    }
    tn_call call;
    call.handler = l->handler;
    call.payload = line;
    call.len = len;
    if (!call.handler) {
        size_t tok = tn_split_token(line, len, &call.payload, &call.len);
        if (tok == 0) {
            answer_text(c, TN_REPLY, crlf, "Invalid message format", NULL, 0);
            return;
        }
        call.handler = tn_listener_handler(l, line, tok);
        if (!call.handler) {
            answer_text(c, TN_REPLY, crlf, "Unknown handler: %.*s", line, tok);
            return;
        }
    }
    call.ctx = (tn_msg_ctx){
        .listener = l->name,
        .conn_id = c->session.id,
        .protocol = TN_PROTO_TCP,
        .remote = &c->remote.sa,
        .remote_len = c->remote.sa.sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in),
        .session = &c->session,
    };
    call.out = c->d->scratch;
    tn_result res = tn_handler_call(&call);
    if (res != TN_LATER) {
        answer(c, res, crlf, c->d->scratch);
        return;
    }
    pending *p = call.job ? enqueue(c, crlf) : NULL;
    if (!p) {
        if (call.job)
            tn_job_cancel(call.job);
        evbuffer_drain(c->d->scratch, evbuffer_get_length(c->d->scratch));
        answer_text(c, TN_FAIL, crlf, "out of memory", NULL, 0);
        return;
    }
    p->job = call.job;
    call.job->fe = p;
    call.job->complete = job_complete;
    tn_conn_update_timeouts(c, false, true);
}

static void too_long(tn_conn *c)
{
    c->listener->stats.rejected[TN_REJ_TOO_LARGE]++;
    c->d->stats.rejected[TN_REJ_TOO_LARGE]++;
    answer_text(c, TN_FAIL, false, "line too long", NULL, 0);
    c->closing = 1;
    bufferevent_disable(c->bev, EV_READ);
    evbuffer_drain(bufferevent_get_input(c->bev), evbuffer_get_length(bufferevent_get_input(c->bev)));
    if (queue_empty(c))
        tn_conn_close_after_flush(c, "line too long");
}

static void line_read(tn_conn *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    struct evbuffer *out = bufferevent_get_output(c->bev);
    int64_t max_line = tn_listener_limits(c->listener)->max_line;
    for (;;) {
        if (c->dead || c->closing)
            return;
        size_t eol_len = 0;
        struct evbuffer_ptr eol = evbuffer_search_eol(in, NULL, &eol_len, EVBUFFER_EOL_LF);
        if (eol.pos < 0) {
            size_t n = evbuffer_get_length(in);
            if ((int64_t)n > max_line)
                too_long(c);
            else
                tn_conn_update_timeouts(c, n > 0, !queue_empty(c));
            return;
        }
        size_t len = (size_t)eol.pos;
        if ((int64_t)len > max_line) {
            too_long(c);
            return;
        }
        char *line = (char *)evbuffer_pullup(in, (ssize_t)len + 1);
        bool crlf = len && line[len - 1] == '\r';
        handle_line(c, line, len - crlf, crlf);
        if (c->dead)
            return;
        evbuffer_drain(in, (size_t)eol.pos + 1);
        if (evbuffer_get_length(out) > OUTPUT_HIGH) {
            /* the client reads slower than it sends: stop reading until the
             * output drains (on_write resumes us) */
            c->read_paused = 1;
            bufferevent_disable(c->bev, EV_READ);
            return;
        }
    }
}

static void line_drained(tn_conn *c)
{
    if (evbuffer_get_length(bufferevent_get_input(c->bev)))
        line_read(c);
}

static bool line_busy(const tn_conn *c)
{
    return !queue_empty(c);
}

static int line_push(tn_conn *c, const char *data, size_t len)
{
    struct evbuffer *out = bufferevent_get_output(c->bev);
    if ((int64_t)(evbuffer_get_length(out) + len + 1) > tn_listener_limits(c->listener)->max_output) {
        c->listener->stats.rejected[TN_REJ_SLOW_READER]++;
        c->d->stats.rejected[TN_REJ_SLOW_READER]++;
        return -1;
    }
    evbuffer_add(out, data, len);
    evbuffer_add(out, "\n", 1);
    c->msgs_out++;
    c->listener->stats.messages_out++;
    c->d->stats.messages_out++;
    return 0;
}

static void line_release(tn_conn *c)
{
    line_state *st = c->fe_state;
    if (!st)
        return;
    while (st->head) {
        pending *p = st->head;
        st->head = p->next;
        if (p->job)
            tn_job_cancel(p->job);
        free(p->data);
        free(p);
    }
    free(st);
    c->fe_state = NULL;
}

static const tn_frontend line_frontend = {
    .name = "tcp",
    .read = line_read,
    .drained = line_drained,
    .busy = line_busy,
    .push = line_push,
    .release = line_release,
};

tn_conn *tn_line_accept(tn_listener *l, evutil_socket_t fd, const struct sockaddr *sa, int salen, tn_peer *peer)
{
    tn_conn *c = tn_conn_new(l, fd, sa, salen, peer, &line_frontend);
    if (!c)
        return NULL;
    /* a listener with one handler that keeps per-connection state (a stream
     * process, a broadcast room) joins it at connect, inetd style */
    if (l->handler && l->handler->ops->attach && !tn_session_state(&c->session, l->handler)) {
        tn_warn("listener %s: handler %s could not start for connection %llu", l->name, l->handler->name,
                (unsigned long long)c->session.id);
        tn_conn_close(c, "handler failed to start");
    }
    return c;
}
