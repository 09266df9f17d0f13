/* SPDX-License-Identifier: MIT */
/* wsconn.c - what goes out on a WebSocket: replies in request order
 * (asynchronous ones too), written on a fast path at the end of the loop
 * pass when nothing stands in their way; pongs in the order of the peer's
 * frames; the output cap (a slow reader is closed with 1008); close frames
 * after what is owed; pushes from handlers and the control socket. */
#include "proto/wsconn.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "net/linger.h"
#include "proto/dispatch.h"

/* MSGS messages of BYTES in all went out (a batch is counted per message) */
static void count_out(tn_wsconn *c, size_t bytes, uint64_t msgs)
{
    c->base.bytes_out += bytes;
    c->base.msgs_out += msgs;
    TN_COUNT(c->base.listener, total_bytes_sent, bytes);
    TN_COUNT(c->base.listener, messages_out, msgs);
    c->base.last_activity_ms = tn_loop_ms(c->d->base);
}

/* ---- output --------------------------------------------------------------------- */

/* Replies up to MSG_SMALL bytes are recycled through d->ws's spare list: a
 * pass reads up to one message per connection before it writes any reply, and glibc's
 * per-thread cache (7 chunks a size) missed for most of them, which cost
 * more than the rest of our per-message work. */
enum { MSG_SMALL = 240, MSG_SPARES = 256 };

static tn_wsmsg *msg_new(tn_wsconn *c, const void *data, size_t len, bool binary)
{
    tn_ws *w = c->d->ws;
    tn_wsmsg *m;
    bool small = len <= MSG_SMALL;
    if (small && w->spare) {
        m = w->spare;
        w->spare = m->next;
        w->nspare--;
    } else if (!(m = malloc(sizeof(*m) + LWS_PRE + (small ? MSG_SMALL : len) + 2))) {
        return NULL;
    }
    memset(m, 0, sizeof(*m));
    m->small = small;
    m->buf = m->inline_buf;
    if (len)
        memcpy(m->buf + LWS_PRE, data, len);
    m->len = len;
    m->binary = binary;
    m->ready = true;
    return m;
}

void tn_wsconn_msg_free(tn_wsconn *c, tn_wsmsg *m)
{
    tn_ws *w = c->d->ws;
    if (m->buf != m->inline_buf)
        free(m->buf);
    if (m->small && m->buf == m->inline_buf && tn_lws_running() && w->nspare < MSG_SPARES) {
        m->next = w->spare;
        w->spare = m;
        w->nspare++;
        return;
    }
    free(m);
}

static void want_write(tn_wsconn *c)
{
    if (c->sock.wsi && !c->sock.destroyed)
        lws_callback_on_writable(c->sock.wsi);
}

void tn_wsconn_close_with(tn_wsconn *c, int code, const char *reason, bool now)
{
    if (c->sock.destroyed || !c->sock.wsi)
        return;
    if (!c->close_code || now) {
        c->close_code = code;
        snprintf(c->close_reason, sizeof(c->close_reason), "%s", reason ? reason : "");
    }
    c->close_now |= now;
    if (c->established)
        want_write(c);
    else
        lws_set_timeout(c->sock.wsi, PENDING_TIMEOUT_CLOSE_SEND, LWS_TO_KILL_ASYNC);
}

static void msg_append(tn_wsmsg **head, tn_wsmsg **tail, tn_wsmsg *m)
{
    m->next = NULL;
    if (*tail)
        (*tail)->next = m;
    else
        *head = m;
    *tail = m;
}

static void queue_out(tn_wsconn *c, tn_wsmsg *m)
{
    msg_append(&c->out_head, &c->out_tail, m);
    c->out_bytes += m->len;
}

static void out_append(tn_wsconn *c, tn_wsmsg *m)
{
    queue_out(c, m);
    want_write(c);
}

static int write_type(const tn_wsmsg *m)
{
    return m->pong ? LWS_WRITE_PONG : m->binary ? LWS_WRITE_BINARY : LWS_WRITE_TEXT;
}


/* Several small frames queued for one connection (a broadcast room's
 * messages, a pass's replies) go out in one send rather than one each: a
 * server's frames are unmasked and independent, so they are framed here
 * and handed to lws raw (LWS_WRITE_HTTP is lws_issue_raw(), which keeps a
 * partial send's rest like any write's). A batch is at most BATCH_MAX bytes,
 * which is all lws may hold beyond max_output, as a single message's rest
 * before. Returns how many messages went, 0 when fewer than two qualify
 * (the caller writes the head alone), -1 when the write failed. */
enum { BATCH_MAX = 4096, BATCH_FRAME = 1024 };

static bool batchable(const tn_wsmsg *m)
{
    return m && m->len <= BATCH_FRAME && (m->len || m->pong);
}

static int flush_batch(tn_wsconn *c)
{
    tn_wsmsg *m = c->out_head;
    if (!batchable(m) || !batchable(m->next))
        return 0;
    unsigned char buf[LWS_PRE + BATCH_MAX];
    unsigned char *p = buf + LWS_PRE, *end = buf + sizeof(buf);
    int n = 0;
    size_t bytes = 0, msgs = 0;
    while (batchable(m) && (size_t)(end - p) >= m->len + 4) {
        *p++ = (unsigned char)(0x80 | (m->pong ? 0xA : m->binary ? 0x2 : 0x1));
        if (m->len < 126) {
            *p++ = (unsigned char)m->len;
        } else {
            *p++ = 126;
            *p++ = (unsigned char)(m->len >> 8);
            *p++ = (unsigned char)m->len;
        }
        memcpy(p, m->buf + LWS_PRE, m->len);
        p += m->len;
        if (!m->pong) {
            bytes += m->len;
            msgs++;
        }
        c->out_head = m->next;
        c->out_bytes -= m->len;
        tn_wsconn_msg_free(c, m);
        m = c->out_head;
        n++;
    }
    if (!c->out_head)
        c->out_tail = NULL;
    if (lws_write(c->sock.wsi, buf + LWS_PRE, (size_t)(p - buf - LWS_PRE), LWS_WRITE_HTTP) < 0) {
        TN_COUNT(c->base.listener, connection_errors, 1);
        lws_set_timeout(c->sock.wsi, PENDING_TIMEOUT_CLOSE_SEND, LWS_TO_KILL_ASYNC);
        return -1;
    }
    count_out(c, bytes, msgs);
    return n;
}

/* The fast path for replies: a sync reply to a message, with nothing queued
 * or partly sent before it, is written with lws_write() at the end of the
 * loop pass (the driver's flush hook), not on a POLLOUT round trip through lws (a pollfd
 * change, a libevent activation and a second service call per message).
 * Writing after all of the pass's reads, as lws's own loop does on its next
 * poll, also hands the client its replies together. lws 4.1.6 takes writes
 * outside its writeable callback; a partial send stays with lws
 * (lws_partial_buffered()) and the rest goes the POLLOUT way, as do
 * permessage-deflate connections, whose output may outlive the call.
 *
 * The pass's pongs are released here too, and what the frame check found
 * (the peer's close, a violation) closes the connection after the replies
 * and pongs its earlier frames were owed. */
void tn_wsconn_flush(tn_wsconn *c)
{
    /* lws may still hold messages that came before what the frame check
     * found (it handles the bytes that came with the upgrade request in a
     * later pass): then the pongs for later pings and the close wait */
    bool behind = !c->rx_dead && (int32_t)(c->msgs_done - c->wsf.msgs) < 0 &&
                  tn_lws_holding();
    tn_wsconn_pong_release(c, !behind);
    while (c->out_head && !c->sock.destroyed && !c->close_code && !c->deflate && (c->out_head->len || c->out_head->pong) &&
           !lws_partial_buffered(c->sock.wsi)) {
        int b = flush_batch(c);
        if (b < 0)
            return;
        if (b > 0)
            continue;
        tn_wsmsg *m = c->out_head;
        c->out_head = m->next;
        if (!c->out_head)
            c->out_tail = NULL;
        c->out_bytes -= m->len;
        size_t len = m->len;
        bool pong = m->pong;
        int n = lws_write(c->sock.wsi, m->buf + LWS_PRE, len, write_type(m));
        tn_wsconn_msg_free(c, m);
        if (n < 0) {
            TN_COUNT(c->base.listener, connection_errors, 1);
            lws_set_timeout(c->sock.wsi, PENDING_TIMEOUT_CLOSE_SEND, LWS_TO_KILL_ASYNC);
            return;
        }
        if (!pong)
            count_out(c, len, 1);
    }
    if (behind && (c->pong_head || c->wsf.code)) {
        tn_lws_flush_later(&c->sock); /* the next pass, after lws's */
    } else if (c->wsf.code && !c->sock.destroyed) {
        /* the peer's close is echoed after what is queued; a violation
         * closes at once */
        tn_wsconn_close_with(c, c->wsf.code, c->wsf.closed ? "" : c->wsf.why, !c->wsf.closed);
    }
    if (!c->sock.destroyed && (c->out_head || c->close_code))
        want_write(c);
}

/* Over the output cap: the peer is a slow reader. */
static bool over_cap(tn_wsconn *c, size_t len)
{
    return (int64_t)(c->out_bytes + len) > c->max_output;
}

/* M goes out: on the fast path (see tn_wsconn_flush()) when FAST and nothing
 * stands in its way, otherwise through lws's POLLOUT. */
static void output(tn_wsconn *c, tn_wsmsg *m, bool fast)
{
    if (over_cap(c, m->len)) {
        tn_wsconn_msg_free(c, m);
        tn_wsconn_reject(c, TN_REJ_SLOW_READER);
        tn_wsconn_close_with(c, LWS_CLOSE_STATUS_POLICY_VIOLATION, "slow reader", true);
        return;
    }
    if (fast && (!c->out_head || tn_lws_flush_listed(&c->sock)) && !c->deflate && !c->close_code && (m->len || m->pong) &&
        !lws_partial_buffered(c->sock.wsi)) {
        queue_out(c, m);
        tn_lws_flush_later(&c->sock);
        return;
    }
    out_append(c, m);
}

/* Pongs go out in the order of the peer's frames: each after the replies to
 * the messages before its ping (as soon as lws has handed those over), never
 * behind a reply to a later message or an outstanding asynchronous one. ALL:
 * every pong owed (the end of the loop pass). */
void tn_wsconn_pong_release(tn_wsconn *c, bool all)
{
    while (c->pong_head && (all || (int32_t)(c->pong_head->after - c->msgs_done) <= 0)) {
        tn_wsmsg *m = c->pong_head;
        c->pong_head = m->next;
        if (!c->pong_head)
            c->pong_tail = NULL;
        if (c->close_code || c->sock.destroyed)
            tn_wsconn_msg_free(c, m); /* our close frame is the last one */
        else
            output(c, m, true);
    }
}

void tn_wsconn_pongs_drop(tn_wsconn *c)
{
    while (c->pong_head) {
        tn_wsmsg *m = c->pong_head;
        c->pong_head = m->next;
        tn_wsconn_msg_free(c, m);
    }
    c->pong_tail = NULL;
}

/* Moves answered replies at the head of the pending queue to the output. */
static void pend_flush(tn_wsconn *c)
{
    while (c->pend_head && c->pend_head->ready) {
        tn_wsmsg *m = c->pend_head;
        c->pend_head = m->next;
        if (!c->pend_head)
            c->pend_tail = NULL;
        if (!m->send) {
            tn_wsconn_msg_free(c, m);
            continue;
        }
        if (over_cap(c, m->len)) {
            tn_wsconn_msg_free(c, m);
            tn_wsconn_reject(c, TN_REJ_SLOW_READER);
            tn_wsconn_close_with(c, LWS_CLOSE_STATUS_POLICY_VIOLATION, "slow reader", true);
            continue;
        }
        out_append(c, m);
    }
}

/* A slot for an asynchronous reply; tn_wsconn_job_complete() gives it its buffer. */
tn_wsmsg *tn_wsconn_pend_add(tn_wsconn *c)
{
    tn_wsmsg *m = calloc(1, sizeof(*m));
    if (m)
        msg_append(&c->pend_head, &c->pend_tail, m);
    return m;
}

/* A reply (or an error text) to a message that was text (or binary). */
void tn_wsconn_reply(tn_wsconn *c, tn_result res, const char *data, size_t len, bool req_binary, bool utf8_known)
{
    if (res == TN_SILENT)
        return;
    const char *prefix = res == TN_FAIL ? TN_ERROR_PREFIX : "";
    size_t plen = strlen(prefix);
    tn_wsmsg *m;
    if (plen) {
        m = msg_new(c, NULL, plen + len, false);
        if (m) {
            memcpy(m->buf + LWS_PRE, prefix, plen);
            if (len)
                memcpy(m->buf + LWS_PRE + plen, data, len);
        }
    } else {
        m = msg_new(c, data, len, req_binary);
    }
    if (!m) {
        tn_wsconn_close_with(c, LWS_CLOSE_STATUS_UNEXPECTED_CONDITION, "out of memory", true);
        return;
    }
    m->send = true;
    /* text stays text only while it is UTF-8 (a program's output may not be) */
    if (!m->binary && !utf8_known && !tn_utf8_valid(m->buf + LWS_PRE, m->len))
        m->binary = true;
    if (!c->pend_head) {
        output(c, m, c->in_receive);
        return;
    }
    /* behind an outstanding asynchronous reply */
    msg_append(&c->pend_head, &c->pend_tail, m);
}

void tn_wsconn_job_complete(tn_job *job, tn_result res, const char *data, size_t len)
{
    tn_wsmsg *slot = job->fe;
    tn_wsconn *c = slot->conn;
    bool req_binary = slot->binary;
    slot->job = NULL;
    slot->ready = true;
    if (res == TN_REPLY || res == TN_FAIL) {
        const char *prefix = res == TN_FAIL ? TN_ERROR_PREFIX : "";
        size_t plen = strlen(prefix);
        /* like the line front end: one reply is one message, a program's
         * trailing newline is not part of it */
        if (len && data[len - 1] == '\n')
            len--;
        if (len && data[len - 1] == '\r')
            len--;
        slot->buf = malloc(LWS_PRE + plen + len + 2);
        if (slot->buf) {
            memcpy(slot->buf + LWS_PRE, prefix, plen);
            if (len)
                memcpy(slot->buf + LWS_PRE + plen, data, len);
            slot->len = plen + len;
            slot->send = true;
            slot->binary = req_binary || !tn_utf8_valid(slot->buf + LWS_PRE, slot->len);
        }
    }
    pend_flush(c);
}

void tn_wsconn_on_ping(void *arg, const uint8_t *payload, size_t len, uint32_t msgs)
{
    tn_wsconn *c = arg;
    tn_wsmsg *m = msg_new(c, payload, len, true);
    if (!m)
        return; /* out of memory: the peer's keepalive will tell */
    m->pong = true;
    m->after = msgs;
    msg_append(&c->pong_head, &c->pong_tail, m);
    tn_lws_flush_later(&c->sock);
}

int tn_wsconn_writeable(tn_wsconn *c)
{
    /* the extension has drained (lws calls back only after that): the last
     * message's buffer is no longer referenced */
    if (c->inflight) {
        tn_wsconn_msg_free(c, c->inflight);
        c->inflight = NULL;
    }
    if (c->close_code && (c->close_now || !c->out_head)) {
        lws_close_reason(c->sock.wsi, (enum lws_close_status)c->close_code, (unsigned char *)c->close_reason,
                         strlen(c->close_reason));
        c->close_sent = true;
        /* lws now sends the close frame and closes the socket without
         * waiting for the peer's: a duplicate keeps it open and drained,
         * so a peer still sending gets our close frame, not a reset */
        evutil_socket_t keep = dup(c->sock.fd);
        if (keep >= 0)
            tn_linger_start(c->d, keep);
        return -1;
    }
    tn_wsmsg *m = c->out_head;
    if (!m)
        return 0;
    c->out_head = m->next;
    if (!c->out_head)
        c->out_tail = NULL;
    c->out_bytes -= m->len;
    int n;
    if (m->pong) {
        n = lws_write(c->sock.wsi, m->buf + LWS_PRE, m->len, LWS_WRITE_PONG) < 0 ? -1 : 0;
    } else if (m->len == 0) {
        /* 4.1.6's permessage-deflate asserts on an empty message (the sync
         * flush yields under 4 bytes to trim): send the frame as is, raw and
         * uncompressed (RSV1 clear), which RFC 7692 allows */
        unsigned char *f = m->buf + LWS_PRE;
        f[0] = (unsigned char)(0x80 | (m->binary ? 0x2 : 0x1));
        f[1] = 0;
        n = lws_write(c->sock.wsi, f, 2, LWS_WRITE_HTTP) < 0 ? -1 : 0;
    } else {
        n = lws_write(c->sock.wsi, m->buf + LWS_PRE, m->len, m->binary ? LWS_WRITE_BINARY : LWS_WRITE_TEXT);
    }
    size_t len = m->len;
    bool pong = m->pong;
    if (c->deflate && len && !pong) {
        /* 4.1.6's permessage-deflate keeps deflating from the caller's
         * buffer on later POLLOUTs when the output did not fit in one go */
        c->inflight = m;
        if (len > 512)
            lws_callback_on_writable(c->sock.wsi); /* to release it soon */
    } else {
        tn_wsconn_msg_free(c, m);
    }
    if (n < 0) {
        TN_COUNT(c->base.listener, connection_errors, 1);
        return -1;
    }
    if (!pong)
        count_out(c, len, 1);
    if (c->out_head || c->close_code)
        lws_callback_on_writable(c->sock.wsi);
    return 0;
}

/* ---- sessions -------------------------------------------------------------------- */

static tn_wsconn *session_conn(tn_session *s)
{
    return (tn_wsconn *)((char *)s - offsetof(tn_wsconn, base.session));
}

static int session_push(tn_session *s, const char *data, size_t len)
{
    tn_wsconn *c = session_conn(s);
    if (c->sock.destroyed || c->finished || c->close_code)
        return 0;
    if (over_cap(c, len)) {
        tn_wsconn_reject(c, TN_REJ_SLOW_READER);
        return -1;
    }
    tn_wsmsg *m = msg_new(c, data, len, !tn_utf8_valid((const unsigned char *)data, len));
    if (!m)
        return -1;
    /* written at the end of the loop pass with what else the pass queued
     * for this connection, not one POLLOUT round trip through lws each */
    output(c, m, true);
    return 0;
}

static void session_close(tn_session *s, const char *reason)
{
    tn_wsconn *c = session_conn(s);
    bool slow = reason && strstr(reason, "slow");
    tn_wsconn_close_with(c, slow ? LWS_CLOSE_STATUS_POLICY_VIOLATION : LWS_CLOSE_STATUS_NORMAL, reason, slow);
}

const tn_session_ops tn_wsconn_session_ops = { session_push, session_close };

