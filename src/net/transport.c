/* SPDX-License-Identifier: MIT */
/* transport.c - plain TCP as a transport (TLS is in tls.c): the socket
 * itself, read with recv(2) and written with send/sendmsg(2)
 * (tn_sock_send), or by libevent, which sends file segments with
 * sendfile(2), once a connection has sent a file. */
#include "net/transport.h"

#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

static ssize_t tcp_read(void *st, evutil_socket_t fd, void *buf, size_t len)
{
    (void)st;
    return recv(fd, buf, len, 0);
}

static int tcp_write(void *st, evutil_socket_t fd, struct evbuffer *src)
{
    (void)st;
    return evbuffer_write(src, fd);
}

/* libevent writes with writev(2), which reaches the socket through the
 * file layer (position lock, access checks, fsnotify); send and sendmsg go
 * straight to it. Two writes a proxied request, it was 3-4% of the proxy's
 * CPU. File segments cannot be peeked (sendfile chains have no bytes in
 * memory), so connections that send files keep evbuffer_write. */
#define SEND_IOV 16
/* A reply is usually a head and a body in two chains; up to this much is
 * copied into one piece and sent with send(2), whose path through the
 * kernel is shorter than sendmsg's (no message header or iovec to import):
 * copying a few kilobytes costs less than that. */
#define SEND_GATHER 4096

int tn_sock_send(evutil_socket_t fd, struct evbuffer *src)
{
    struct evbuffer_iovec v[SEND_IOV];
    int nv = evbuffer_peek(src, -1, NULL, v, SEND_IOV);
    if (nv <= 0)
        return 0;
    if (nv > SEND_IOV)
        nv = SEND_IOV; /* the rest goes with the next call */
    size_t total = 0;
    for (int i = 0; i < nv && total <= SEND_GATHER; i++)
        total += v[i].iov_len;
    ssize_t n;
    if (nv == 1) {
        n = send(fd, v[0].iov_base, v[0].iov_len, MSG_NOSIGNAL);
    } else if (total <= SEND_GATHER) {
        char one[SEND_GATHER];
        size_t at = 0;
        for (int i = 0; i < nv; i++) {
            memcpy(one + at, v[i].iov_base, v[i].iov_len);
            at += v[i].iov_len;
        }
        n = send(fd, one, at, MSG_NOSIGNAL);
    } else {
        struct iovec iov[SEND_IOV];
        for (int i = 0; i < nv; i++) {
            iov[i].iov_base = v[i].iov_base;
            iov[i].iov_len = v[i].iov_len;
        }
        struct msghdr m = { .msg_iov = iov, .msg_iovlen = (size_t)nv };
        n = sendmsg(fd, &m, MSG_NOSIGNAL);
    }
    if (n > 0)
        evbuffer_drain(src, (size_t)n);
    return (int)n;
}

static int tcp_handshake(void *st, int *reason, char *detail, size_t detaillen)
{
    (void)st, (void)reason, (void)detail, (void)detaillen;
    return TN_TP_DONE;
}

static bool tcp_false(const void *st)
{
    (void)st;
    return false;
}

static void tcp_nothing(void *st)
{
    (void)st;
}

static const tn_tls_info *tcp_info(const void *st)
{
    (void)st;
    return NULL;
}

const tn_transport_ops tn_tcp_transport = {
    .name = "tcp",
    .plain = true,
    .read = tcp_read,
    .write = tcp_write,
    .handshake = tcp_handshake,
    .handshaking = tcp_false,
    .broken = tcp_false,
    .shutdown = tcp_nothing,
    .close = tcp_nothing,
    .info = tcp_info,
};
