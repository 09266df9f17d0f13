/* SPDX-License-Identifier: MIT */
/* transport.c - plain TCP as a transport (TLS is in tls.c): the socket
 * itself, read with recv(2) and written with libevent, which sends file
 * segments with sendfile(2). */
#include "net/transport.h"

#include <sys/socket.h>

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
