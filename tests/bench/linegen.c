/* SPDX-License-Identifier: MIT */
/* linegen - a closed-loop load generator for one-reply-line protocols, as
 * redis-benchmark is for RESP: CONNS connections each send PIPELINE
 * requests, wait for as many reply lines, and start again, until TOTAL
 * replies have come. The request is a Redis command written either inline
 * ("INCR counter:__rand_int__\r\n", what a line proxy forwards) or as a RESP
 * multibulk (what twemproxy parses), so one client measures both the same
 * way. Replies are counted by their "\n"; only one-line replies (+OK, :N)
 * are meant.
 *
 *   linegen HOST PORT CONNS PIPELINE TOTAL inline|resp set|incr
 *
 * Prints "rps=N p50_ms=N errors=N" (p50 of the time from a batch's send to
 * its last reply). Exit 1 when a connection fails or a reply starts with
 * '-'. Built by tests/bench/bench.py. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

typedef struct gen_conn {
    int fd;
    long owed;      /* replies still due for the batch in flight */
    double sent_at; /* when the batch went out */
} gen_conn;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    if (argc != 8) {
        fprintf(stderr, "usage: linegen HOST PORT CONNS PIPELINE TOTAL inline|resp set|incr\n");
        return 2;
    }
    const char *host = argv[1];
    int port = atoi(argv[2]), nconn = atoi(argv[3]), pipeline = atoi(argv[4]);
    long total = atol(argv[5]);
    int resp = strcmp(argv[6], "resp") == 0, set = strcmp(argv[7], "set") == 0;
    const char *cmd = set ? (resp ? "*3\r\n$3\r\nSET\r\n$16\r\nkey:__rand_int__\r\n$3\r\nxxx\r\n"
                                  : "SET key:__rand_int__ xxx\r\n")
                          : (resp ? "*2\r\n$4\r\nINCR\r\n$20\r\ncounter:__rand_int__\r\n"
                                  : "INCR counter:__rand_int__\r\n");
    if (nconn < 1 || pipeline < 1 || total < 1)
        return 2;
    size_t clen = strlen(cmd);
    size_t blen = clen * (size_t)pipeline;
    char *batch = malloc(blen);
    gen_conn *cs = calloc((size_t)nconn, sizeof(*cs));
    size_t maxlat = (size_t)(total / pipeline + nconn + 1);
    double *lat = malloc(maxlat * sizeof(double));
    if (!batch || !cs || !lat)
        return 2;
    for (int i = 0; i < pipeline; i++)
        memcpy(batch + (size_t)i * clen, cmd, clen);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    inet_pton(AF_INET, host, &sa.sin_addr);
    int ep = epoll_create1(0);
    for (int i = 0; i < nconn; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
        if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
            perror("connect");
            return 1;
        }
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        cs[i].fd = fd;
        struct epoll_event ev = { .events = EPOLLIN, .data.ptr = &cs[i] };
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    }
    long started = 0, done = 0, errors = 0;
    size_t nlat = 0;
    char buf[65536];
    double t0 = now_s();
    for (int i = 0; i < nconn && started < total; i++) {
        cs[i].owed = pipeline;
        cs[i].sent_at = now_s();
        started += pipeline;
        if (write(cs[i].fd, batch, blen) != (ssize_t)blen) {
            perror("write");
            return 1;
        }
    }
    struct epoll_event evs[256];
    while (done < total) {
        int n = epoll_wait(ep, evs, 256, 10000);
        if (n <= 0) {
            fprintf(stderr, "linegen: no reply for 10s (%ld of %ld done)\n", done, total);
            return 1;
        }
        for (int k = 0; k < n; k++) {
            gen_conn *c = evs[k].data.ptr;
            ssize_t r = read(c->fd, buf, sizeof(buf));
            if (r <= 0) {
                fprintf(stderr, "linegen: connection closed (%s)\n", r < 0 ? strerror(errno) : "EOF");
                return 1;
            }
            for (ssize_t j = 0; j < r; j++) {
                if (buf[j] == '-' && (j == 0 || buf[j - 1] == '\n'))
                    errors++;
                if (buf[j] == '\n') {
                    c->owed--;
                    done++;
                }
            }
            if (c->owed == 0) {
                if (nlat < maxlat)
                    lat[nlat++] = now_s() - c->sent_at;
                if (started < total) {
                    c->owed = pipeline;
                    c->sent_at = now_s();
                    started += pipeline;
                    if (write(c->fd, batch, blen) != (ssize_t)blen) {
                        perror("write");
                        return 1;
                    }
                }
            }
        }
    }
    double dt = now_s() - t0;
    qsort(lat, nlat, sizeof(double), cmp_double);
    printf("rps=%.0f p50_ms=%.3f errors=%ld replies=%ld\n", (double)done / dt, nlat ? lat[nlat / 2] * 1000 : 0.0,
           errors, done);
    return errors ? 1 : 0;
}
