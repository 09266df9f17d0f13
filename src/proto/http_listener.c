/* SPDX-License-Identifier: MIT */
/* http_listener.c - the HTTP front end as a listener sees it: accepting a
 * connection, the routes built per listener (again on reload), the 503 a
 * refused client reads, and the response counts by status class. */
#include "proto/http.h"

#include <stdio.h>
#include <sys/socket.h>
#include <time.h>

#include "net/listener.h"
#include "proto/http_conn.h"

static tn_conn *http_accept(tn_listener *l, evutil_socket_t fd, const struct sockaddr *sa, int salen, tn_peer *peer)
{
    return tn_conn_new(l, fd, sa, salen, peer, &tn_http_frontend);
}

/* (Re)build a listener's routes after a reload; the old router stays in use
 * by requests in flight. */
static int http_configure(tn_listener *l, char *err, size_t errlen)
{
    tn_http_router *rt = tn_http_router_new(l->d, l->cfg, l->conf, err, errlen);
    if (!rt)
        return -1;
    tn_http_router_inherit(rt, l->router);
    tn_http_router_unref(l->router); /* requests in flight keep it (and its config) */
    l->router = rt;
    return 0;
}

static void http_listener_free(tn_listener *l)
{
    tn_http_router_unref(l->router);
    l->router = NULL;
}

/* A 503 the client can read before the close; a denied address learns
 * nothing. */
static void http_refuse(tn_listener *l, evutil_socket_t fd, int reason)
{
    if (reason == TN_REJ_DENIED)
        return;
    char busy[256], date[64];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S GMT", &tm);
    int n = snprintf(busy, sizeof(busy),
                     "HTTP/1.1 503 Service Unavailable\r\nServer: tusknetd\r\nDate: %s\r\n"
                     "Content-Type: text/plain; charset=utf-8\r\nContent-Length: 20\r\n"
                     "Connection: close\r\n\r\nService Unavailable\n",
                     date);
    ssize_t w = send(fd, busy, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w > 0)
        tn_http_count_response(l, NULL, NULL, 503);
}

void tn_http_count_response(tn_listener *l, tn_http_router *rt, const tn_http_route *route, int status)
{
    int k = tn_http_class(status);
    TN_COUNT(l, http_responses[k], 1);
    if (!rt)
        rt = l->router;
    if (rt)
        tn_http_router_count(rt, route, status);
}

static void count_response(tn_listener *l, int status)
{
    tn_http_count_response(l, NULL, NULL, status);
}

const tn_proto_ops tn_http_proto = {
    .name = "http",
    .socktype = SOCK_STREAM,
    .accept = http_accept,
    .configure = http_configure,
    .free = http_listener_free,
    .refuse = http_refuse,
    .count_response = count_response,
};

