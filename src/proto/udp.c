/* SPDX-License-Identifier: MIT */
/* udp.c - the UDP front end: one datagram in, one datagram
 * back to its sender, with the same handler selection as TCP lines.
 *
 * Each wakeup drains the socket with recvmmsg in batches (bounded, so one
 * busy socket cannot starve the loop) and answers with one sendmmsg per
 * batch. Asynchronous replies are sent when they come, to the address the
 * job remembered; if the listener goes away first they are cancelled.
 * UDP has no connections, so handlers get no session: broadcast can publish
 * from UDP to connected peers, stream handlers refuse.
 *
 * Nothing is queued for sending: a reply the socket does not take (its
 * buffer is full, or the destination is refused) is dropped and counted
 * (rejected.reply_dropped), as DNS servers do; a client that floods and
 * never reads costs the daemon nothing but the work. */
#include "proto/udp.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "clock.h"
#include "log.h"
#include "net/listener.h"
#include "proto/dispatch.h"

#define BATCH 32
#define MAX_BATCHES 8 /* per wakeup */

typedef struct udp_job {
    struct udp_job *prev, *next;
    tn_job *job;
    tn_listener *l;
} udp_job;

typedef struct udp_state {
    struct event *ev; /* the socket, readable */
    size_t bufsize;
    char *bufs;     /* BATCH datagrams in */
    char *replies;  /* BATCH replies out */
    struct mmsghdr in[BATCH];
    struct iovec iov_in[BATCH];
    struct sockaddr_storage from[BATCH];
    struct mmsghdr out[BATCH];
    struct iovec iov_out[BATCH];
    udp_job *jobs;
    size_t njobs;
} udp_state;

static void count_out(tn_listener *l, size_t n)
{
    TN_COUNT(l, total_bytes_sent, n);
    TN_COUNT(l, messages_out, 1);
}

static void count_dropped(tn_listener *l, uint64_t n)
{
    TN_COUNT(l, rejected[TN_REJ_REPLY_DROPPED], n);
}

static void send_one(tn_listener *l, const struct sockaddr *to, socklen_t tolen, tn_result res, const char *data,
                     size_t len)
{
    char buf[65536];
    size_t n = 0;
    if (res == TN_FAIL) {
        memcpy(buf, TN_ERROR_PREFIX, TN_ERROR_PREFIX_LEN);
        n = TN_ERROR_PREFIX_LEN;
    }
    if (len > sizeof(buf) - n)
        len = sizeof(buf) - n;
    memcpy(buf + n, data, len);
    n += len;
    if (sendto(l->fd, buf, n, MSG_DONTWAIT | MSG_NOSIGNAL, to, tolen) < 0) {
        count_dropped(l, 1);
        return;
    }
    count_out(l, n);
}

static void job_complete(tn_job *job, tn_result res, const char *data, size_t len)
{
    udp_job *uj = job->fe;
    tn_listener *l = uj->l;
    udp_state *st = l->fe_state;
    if (res == TN_REPLY || res == TN_FAIL) {
        if (len && data[len - 1] == '\n')
            len--;
        socklen_t tolen = job->remote.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
        send_one(l, (struct sockaddr *)&job->remote, tolen, res, data, len);
    }
    if (uj->prev)
        uj->prev->next = uj->next;
    else
        st->jobs = uj->next;
    if (uj->next)
        uj->next->prev = uj->prev;
    st->njobs--;
    free(uj);
    tn_state_idle_check(l->d);
}

/* Handles one datagram; a sync reply is written into REPLY (returns its
 * length), -1 when nothing is to be sent now. */
static ssize_t handle(tn_listener *l, char *data, size_t len, const struct sockaddr *from, socklen_t fromlen,
                      tn_peer *peer, char *reply, size_t cap)
{
    tn_daemon *d = l->d;
    struct evbuffer *out = d->scratch;
    tn_result res;
    tn_call call = {0};
    if (len && data[len - 1] == '\n')
        len--;
    tn_dispatch sel = tn_dispatch_listener(l);
    tn_verdict v = tn_dispatch_message(&sel, peer, tn_listener_limits(l), &call, data, len, out);
    if (v != TN_DISPATCH_CALL) {
        if (v == TN_DISPATCH_LIMITED) {
            TN_COUNT(l, rejected[TN_REJ_RATE_LIMIT], 1);
        }
        res = tn_dispatch_result(v);
        goto reply;
    }
    call.ctx = (tn_msg_ctx){
        .listener = l->name,
        .protocol = TN_PROTO_UDP,
        .remote = from,
        .remote_len = fromlen,
    };
    call.out = out;
    res = tn_handler_call(&call);
    if (res == TN_LATER) {
        udp_state *st = l->fe_state;
        udp_job *uj = calloc(1, sizeof(*uj));
        if (!uj) {
            tn_job_cancel(call.job);
            return -1;
        }
        uj->job = call.job;
        uj->l = l;
        uj->next = st->jobs;
        if (st->jobs)
            st->jobs->prev = uj;
        st->jobs = uj;
        st->njobs++;
        call.job->fe = uj;
        call.job->complete = job_complete;
        return -1;
    }
reply:
    if (res == TN_SILENT) {
        evbuffer_drain(out, evbuffer_get_length(out));
        return -1;
    }
    size_t n = 0;
    if (res == TN_FAIL) {
        memcpy(reply, TN_ERROR_PREFIX, TN_ERROR_PREFIX_LEN);
        n = TN_ERROR_PREFIX_LEN;
    }
    n += (size_t)evbuffer_remove(out, reply + n, cap - n);
    evbuffer_drain(out, evbuffer_get_length(out));
    return (ssize_t)n;
}

static void on_readable(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    tn_listener *l = arg;
    udp_state *st = l->fe_state;
    const tn_limits *lim = tn_listener_limits(l);
    for (int b = 0; b < MAX_BATCHES; b++) {
        for (int i = 0; i < BATCH; i++) {
            st->iov_in[i] = (struct iovec){ st->bufs + (size_t)i * st->bufsize, st->bufsize };
            st->in[i].msg_hdr = (struct msghdr){
                .msg_name = &st->from[i],
                .msg_namelen = sizeof(st->from[i]),
                .msg_iov = &st->iov_in[i],
                .msg_iovlen = 1,
            };
        }
        int n = recvmmsg(fd, st->in, BATCH, MSG_DONTWAIT, NULL);
        if (n <= 0) {
            if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
                TN_COUNT(l, connection_errors, 1);
            }
            return;
        }
        int nout = 0;
        for (int i = 0; i < n; i++) {
            size_t len = st->in[i].msg_len;
            struct sockaddr *from = (struct sockaddr *)&st->from[i];
            socklen_t fromlen = st->in[i].msg_hdr.msg_namelen;
            TN_COUNT(l, total_bytes_received, len);
            TN_COUNT(l, messages_in, 1);
            char *reply = st->replies + (size_t)nout * 65536;
            ssize_t rlen;
            if (!tn_acl_allows(l->acl, from)) {
                TN_COUNT(l, rejected[TN_REJ_DENIED], 1);
                continue;
            }
            tn_peer *peer = lim->rate_limit > 0 ? tn_peers_get(&l->peers, from) : NULL;
            if ((int64_t)len > lim->max_message || (st->in[i].msg_hdr.msg_flags & MSG_TRUNC)) {
                TN_COUNT(l, rejected[TN_REJ_TOO_LARGE], 1);
                rlen = snprintf(reply, 65536, TN_ERROR_PREFIX "message too large");
            } else {
                rlen = handle(l, st->bufs + (size_t)i * st->bufsize, len, from, fromlen, peer, reply, 65536);
            }
            if (rlen < 0)
                continue;
            st->iov_out[nout] = (struct iovec){ reply, (size_t)rlen };
            st->out[nout].msg_hdr = (struct msghdr){
                .msg_name = from,
                .msg_namelen = fromlen,
                .msg_iov = &st->iov_out[nout],
                .msg_iovlen = 1,
            };
            nout++;
        }
        for (int sent = 0; sent < nout;) {
            int r = sendmmsg(fd, st->out + sent, (unsigned)(nout - sent), MSG_DONTWAIT | MSG_NOSIGNAL);
            if (r > 0) {
                for (int k = sent; k < sent + r; k++)
                    count_out(l, st->out[k].msg_len);
                sent += r;
                continue;
            }
            if (r < 0 && errno == EINTR)
                continue;
            if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS)) {
                /* the socket buffer is full: the rest of the batch is dropped */
                count_dropped(l, (uint64_t)(nout - sent));
                break;
            }
            /* this one destination is refused (e.g. port 0): only its reply goes */
            count_dropped(l, 1);
            sent++;
        }
        if (n < BATCH)
            return;
    }
}

static int udp_start(tn_listener *l, char *err, size_t errlen)
{
    udp_state *st = calloc(1, sizeof(*st));
    if (!st) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    /* one byte more than allowed, so that an oversized datagram is seen */
    int64_t max = tn_listener_limits(l)->max_message + 1;
    st->bufsize = max > 65536 ? 65536 : (size_t)max;
    st->bufs = malloc(st->bufsize * BATCH);
    st->replies = malloc((size_t)65536 * BATCH);
    l->fe_state = st;
    if (!st->bufs || !st->replies) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    st->ev = event_new(l->d->base, l->fd, EV_READ | EV_PERSIST, on_readable, l);
    if (!st->ev || event_add(st->ev, NULL) < 0) {
        snprintf(err, errlen, "cannot watch socket");
        return -1;
    }
    return 0;
}

static void udp_stop(tn_listener *l)
{
    udp_state *st = l->fe_state;
    if (st && st->ev)
        event_del(st->ev);
}

static size_t udp_in_flight(const tn_listener *l)
{
    const udp_state *st = l->fe_state;
    return st ? st->njobs : 0;
}

static void udp_free(tn_listener *l)
{
    udp_state *st = l->fe_state;
    if (!st)
        return;
    if (st->ev)
        event_free(st->ev);
    while (st->jobs) {
        udp_job *uj = st->jobs;
        st->jobs = uj->next;
        tn_job_cancel(uj->job);
        free(uj);
    }
    free(st->bufs);
    free(st->replies);
    free(st);
    l->fe_state = NULL;
}

const tn_proto_ops tn_udp_proto = {
    .name = "udp",
    .socktype = SOCK_DGRAM,
    .start = udp_start,
    .stop = udp_stop,
    .free = udp_free,
    .in_flight = udp_in_flight,
};
