/* SPDX-License-Identifier: MIT */
/* line.c - the TCP line-protocol front end.
 *
 * Each '\n'-terminated line (a '\r' before it is dropped) is one message and
 * gets at most one reply line, in request order even when handlers answer
 * asynchronously. A client that shuts down its side after an unterminated
 * last line gets that line answered too, then the close. Sync replies with
 * nothing queued ahead of them go straight into the output buffer; only when
 * an asynchronous reply is outstanding are later replies parked in a queue,
 * so the common case allocates nothing.
 *
 * Backpressure: a client that pipelines faster than it reads has its input
 * paused while more than OUTPUT_HIGH bytes of replies are unsent or parked
 * in the queue, or while QUEUE_MAX replies (answered or not) are queued: a
 * client that never reads behind a slow reply cannot make the daemon hold
 * more than that. Input resumes once the queue and the output drain. Pushes
 * (broadcast, stream) beyond max_output make it a slow consumer. A line
 * must be complete read_timeout after its first byte (a deadline, not reset
 * by each byte that trickles in): after it the client gets
 * "Error: read timeout" and the close. */
#include "proto/line.h"

#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "clock.h"
#include "log.h"
#include "net/conn.h"
#include "net/listener.h"
#include "proto/dispatch.h"

#define OUTPUT_HIGH (256 * 1024)
#define QUEUE_MAX 1024 /* queued replies (and jobs) that pause input */

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
    size_t queued;       /* entries, jobs still running included */
    size_t queued_bytes; /* reply bytes parked in them */
} line_state;

static bool queue_empty(const tn_conn *c)
{
    const line_state *st = c->fe_state;
    return !st || !st->head;
}

static void count_reply(tn_conn *c)
{
    c->base.msgs_out++;
    TN_COUNT(c->base.listener, messages_out, 1);
}

/* One reply line. A reply holding line breaks (a program printing several
 * lines, a broadcast from a WebSocket) has each "\n" or "\r\n" joined
 * into one space, so the client's next reply is never shifted; spaces keep
 * pretty-printed JSON valid, where escaping would not. Replies end the way
 * the request line did, so CRLF clients (telnet, redis tools) get CRLF and
 * everyone else a bare newline. */
static void add_line(struct evbuffer *out, bool fail, const char *data, size_t len, bool crlf)
{
    if (fail)
        evbuffer_add(out, TN_ERROR_PREFIX, TN_ERROR_PREFIX_LEN);
    const char *nl;
    while (len && (nl = memchr(data, '\n', len))) {
        size_t n = (size_t)(nl - data);
        evbuffer_add(out, data, n && nl[-1] == '\r' ? n - 1 : n);
        evbuffer_add(out, " ", 1);
        len -= n + 1;
        data = nl + 1;
    }
    if (len)
        evbuffer_add(out, data, len);
    if (crlf)
        evbuffer_add(out, "\r\n", 2);
    else
        evbuffer_add(out, "\n", 1);
}

/* Replies held (unsent or parked) or queued entries over what pauses input. */
static bool over_high(const tn_conn *c)
{
    const line_state *st = c->fe_state;
    size_t parked = st ? st->queued_bytes : 0;
    return tn_conn_unsent(c) + parked > OUTPUT_HIGH || (st && st->queued >= QUEUE_MAX);
}

/* Sends every answered reply at the head of the queue; with DEFER, during a
 * reply batch, what went into the shared wbuf is written at its end. */
static void flush_queue(tn_conn *c, bool defer)
{
    line_state *st = c->fe_state;
    int64_t cap = tn_listener_limits(c->base.listener)->max_output;
    while (st && st->head && !st->head->job) {
        pending *p = st->head;
        st->head = p->next;
        if (!st->head)
            st->tail = NULL;
        st->queued--;
        st->queued_bytes -= p->len;
        if (p->result == TN_REPLY || p->result == TN_FAIL) {
            if ((int64_t)(tn_conn_unsent(c) + p->len + 9) > cap) {
                free(p->data);
                free(p);
                TN_COUNT(c->base.listener, rejected[TN_REJ_SLOW_READER], 1);
                tn_conn_close(c, "slow reader: output over max_output");
                return; /* release() freed the rest */
            }
            add_line(tn_conn_output(c), p->result == TN_FAIL, p->data, p->len, p->crlf);
            count_reply(c);
        }
        free(p->data);
        free(p);
    }
    tn_daemon *d = tn_conn_daemon(c);
    if (queue_empty(c) && d->stopping)
        c->closing = 1; /* shutdown: this was the last thing it waited for */
    if (defer && d->reply_batch && d->wbuf_owner == c && !c->out)
        return;
    tn_conn_flush(c); /* also closes a closing connection once it is done */
    /* the flush resumes paused input when it empties the output; when the
     * queue held input back with nothing left to write, resume it here */
    if (!c->base.dead && c->read_paused && !tn_conn_unsent(c) && !over_high(c))
        tn_conn_resume_input(c);
}

static pending *enqueue(tn_conn *c, bool crlf)
{
    line_state *st = c->fe_state;
    if (!st && !(st = c->fe_state = calloc(1, sizeof(line_state))))
        return NULL;
    pending *p = calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    p->conn = c;
    p->crlf = crlf;
    st->queued++;
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
        if (data[len - 1] == '\n')
            len--;
        if (len && data[len - 1] == '\r')
            len--;
        p->data = malloc(len ? len : 1);
        if (p->data) {
            memcpy(p->data, data, len);
            p->len = len;
            ((line_state *)p->conn->fe_state)->queued_bytes += len;
        }
    }
    flush_queue(p->conn, true);
}

/* A reply produced now: straight out, or parked behind outstanding ones. */
/* A sync reply: REF (by reference, REFLEN bytes) when set, else BODY. */
static void answer_ref(tn_conn *c, tn_result res, bool crlf, const char *ref, size_t reflen, struct evbuffer *body)
{
    if (res == TN_SILENT) {
        evbuffer_drain(body, evbuffer_get_length(body));
        return;
    }
    if (queue_empty(c)) {
        size_t n = ref ? reflen : evbuffer_get_length(body);
        const char *data = ref ? ref : (const char *)evbuffer_pullup(body, -1);
        add_line(tn_conn_output(c), res == TN_FAIL, data ? data : "", n, crlf);
        evbuffer_drain(body, evbuffer_get_length(body));
        count_reply(c);
        return;
    }
    pending *p = enqueue(c, crlf);
    size_t n = ref ? reflen : evbuffer_get_length(body);
    if (p) {
        p->result = res;
        p->data = malloc(n ? n : 1);
        if (p->data && ref) {
            memcpy(p->data, ref, n);
            p->len = n;
        } else if (p->data) {
            p->len = (size_t)evbuffer_remove(body, p->data, n);
        }
        ((line_state *)c->fe_state)->queued_bytes += p->len;
    }
    evbuffer_drain(body, evbuffer_get_length(body));
}

static void answer(tn_conn *c, tn_result res, bool crlf, struct evbuffer *body)
{
    answer_ref(c, res, crlf, NULL, 0, body);
}

static void answer_text(tn_conn *c, tn_result res, bool crlf, const char *text)
{
    struct evbuffer *b = tn_conn_daemon(c)->scratch;
    evbuffer_add(b, text, strlen(text));
    answer(c, res, crlf, b);
}

static void handle_line(tn_conn *c, const char *line, size_t len, bool crlf)
{
    tn_listener *l = c->base.listener;
    c->base.msgs_in++;
    TN_COUNT(l, messages_in, 1);
    tn_call call = { .take_ref = true };
    tn_dispatch sel = tn_dispatch_listener(l);
    tn_verdict v = tn_dispatch_message(&sel, c->peer, tn_listener_limits(l), &call, line, len, tn_conn_daemon(c)->scratch);
    if (v != TN_DISPATCH_CALL) {
        if (v == TN_DISPATCH_LIMITED) {
            TN_COUNT(l, rejected[TN_REJ_RATE_LIMIT], 1);
        }
        answer(c, tn_dispatch_result(v), crlf, tn_conn_daemon(c)->scratch);
        return;
    }
    call.ctx = (tn_msg_ctx){
        .listener = l->name,
        .conn_id = c->base.session.id,
        .protocol = TN_PROTO_TCP,
        .remote = &c->base.remote.sa,
        .remote_len = c->base.remote.sa.sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in),
        .session = &c->base.session,
        .tls = tn_conn_tls_info(c),
    };
    call.out = tn_conn_daemon(c)->scratch;
    tn_result res = tn_handler_call(&call);
    if (res != TN_LATER) {
        answer_ref(c, res, crlf, call.reply, call.reply_len, tn_conn_daemon(c)->scratch);
        return;
    }
    pending *p = call.job ? enqueue(c, crlf) : NULL;
    if (!p) {
        if (call.job)
            tn_job_cancel(call.job);
        struct evbuffer *scratch = tn_conn_daemon(c)->scratch;
        evbuffer_drain(scratch, evbuffer_get_length(scratch));
        answer_text(c, TN_FAIL, crlf, "out of memory");
        return;
    }
    p->job = call.job;
    call.job->fe = p;
    call.job->complete = job_complete;
}

static void too_long(tn_conn *c)
{
    TN_COUNT(c->base.listener, rejected[TN_REJ_TOO_LARGE], 1);
    answer_text(c, TN_FAIL, false, "line too long");
    tn_conn_close_after_flush(c, "line too long");
}

static size_t line_input(tn_conn *c, const char *data, size_t len)
{
    int64_t max_line = tn_listener_limits(c->base.listener)->max_line;
    size_t used = 0;
    while (used < len) {
        if (c->base.dead || c->closing)
            return len;
        if (over_high(c)) {
            /* the client reads slower than it sends: leave the rest until
             * the output and the queue drain */
            tn_conn_pause_input(c);
            break;
        }
        size_t n = 0;
        bool crlf = false;
        tn_line_status st = tn_line_frame(data + used, len - used, max_line, &n, &crlf);
        if (st == TN_LINE_PARTIAL)
            break;
        if (st == TN_LINE_TOO_LONG) {
            too_long(c);
            return len;
        }
        handle_line(c, data + used, n, crlf);
        used += n + crlf + 1;
        if (c->base.dead)
            return len;
    }
    return used;
}

/* The client shut down its side in the middle of a line: the line ends
 * there, as it does for readline() or a line scanner at end of input. */
static void line_input_end(tn_conn *c, const char *data, size_t len)
{
    bool crlf = data[len - 1] == '\r';
    handle_line(c, data, len - crlf, crlf);
}

/* read_timeout passed with a line still incomplete. */
static bool line_timed_out(tn_conn *c)
{
    if (!c->in)
        return false;
    answer_text(c, TN_FAIL, false, "read timeout");
    tn_conn_close_after_flush(c, "read timeout");
    tn_conn_flush(c);
    return true;
}

static bool line_busy(const tn_conn *c)
{
    return !queue_empty(c);
}

static int line_push(tn_conn *c, const char *data, size_t len)
{
    if ((int64_t)(tn_conn_unsent(c) + len + 1) > tn_listener_limits(c->base.listener)->max_output) {
        TN_COUNT(c->base.listener, rejected[TN_REJ_SLOW_READER], 1);
        return -1;
    }
    add_line(tn_conn_output(c), false, data, len, false);
    count_reply(c);
    tn_conn_flush(c);
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
    .input = line_input,
    .busy = line_busy,
    .push = line_push,
    .release = line_release,
    .input_end = line_input_end,
    .timed_out = line_timed_out,
};

static tn_conn *line_accept(tn_listener *l, evutil_socket_t fd, const struct sockaddr *sa, int salen, tn_peer *peer)
{
    tn_conn *c = tn_conn_new(l, fd, sa, salen, peer, &line_frontend);
    if (!c)
        return NULL;
    /* a proxy keeps nothing per connection, unless it takes the whole
     * connection (mode connection) */
    if (l->handler && l->handler->conf.type == TN_H_PROXY) {
        if (l->handler->ops->takeover)
            l->handler->ops->takeover(l->handler, c);
        return c;
    }
    /* a listener with one handler that keeps per-connection state (a stream
     * process, a broadcast room) joins it at connect, inetd style */
    if (l->handler && l->handler->ops->attach && !tn_session_state(&c->base.session, l->handler)) {
        tn_warn("listener %s: handler %s could not start for connection %llu", l->name, l->handler->name,
                (unsigned long long)c->base.session.id);
        tn_conn_close(c, "handler failed to start");
    }
    return c;
}

/* One line saying why, written without waiting; a denied address learns
 * nothing. */
static void line_refuse(tn_listener *l, evutil_socket_t fd, int reason)
{
    (void)l;
    const char *text = NULL;
    switch (reason) {
    case TN_REJ_MAX_CONNECTIONS:
    case TN_REJ_LISTENER_FULL:
        text = TN_ERROR_PREFIX "too many connections\n";
        break;
    case TN_REJ_PER_IP:
        text = TN_ERROR_PREFIX "too many connections from your address\n";
        break;
    case TN_REJ_PER_SECOND:
        text = TN_ERROR_PREFIX "too many connections per second\n";
        break;
    }
    if (text) {
        ssize_t w = send(fd, text, strlen(text), MSG_NOSIGNAL | MSG_DONTWAIT);
        (void)w;
    }
}

const tn_proto_ops tn_line_proto = {
    .name = "tcp",
    .socktype = SOCK_STREAM,
    .accept = line_accept,
    .refuse = line_refuse,
};
