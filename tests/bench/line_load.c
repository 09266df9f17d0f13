/* SPDX-License-Identifier: MIT */
/* line_load.c - a line-protocol load generator for bench.py, the same one
 * for tusknetd and redis-server (inline commands).
 *
 *     line_load [-c CONNS] [-d SECONDS] [-w WARMUP] PORT LINE...
 *
 * Each of CONNS connections keeps one request in flight: it sends the next
 * of the LINEs (in turn, each followed by "\r\n"), waits for one reply line,
 * sends the next. All on one epoll loop. After WARMUP seconds (default 0.5)
 * it counts replies for SECONDS and prints
 *     req/s N  reqs M  seconds S  conns C
 * A reply that is an error (starting with "-" as redis's, or "Error") stops
 * it: exit status 1 with the reply on stderr, as for a closed connection. */
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

typedef struct {
    int fd;
    int next; /* index of the line to send next */
    size_t len;
    char buf[4096];
} conn;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *what)
{
    fprintf(stderr, "line_load: %s: %s\n", what, errno ? strerror(errno) : "failed");
    exit(1);
}

static char **lines;
static size_t *lens;
static int nlines;

static void send_next(conn *c)
{
    char out[1024];
    size_t n = lens[c->next];
    memcpy(out, lines[c->next], n);
    memcpy(out + n, "\r\n", 2);
    c->next = (c->next + 1) % nlines;
    if (write(c->fd, out, n + 2) != (ssize_t)(n + 2)) /* tiny, one request in flight: the socket takes it */
        die("write");
}

int main(int argc, char **argv)
{
    int nconns = 50, opt;
    double seconds = 5, warmup = 0.5;
    while ((opt = getopt(argc, argv, "c:d:w:")) != -1) {
        if (opt == 'c')
            nconns = atoi(optarg);
        else if (opt == 'd')
            seconds = atof(optarg);
        else if (opt == 'w')
            warmup = atof(optarg);
        else
            return 1;
    }
    if (argc - optind < 2 || nconns < 1) {
        fprintf(stderr, "usage: line_load [-c CONNS] [-d SECONDS] [-w WARMUP] PORT LINE...\n");
        return 1;
    }
    int port = atoi(argv[optind]);
    lines = argv + optind + 1;
    nlines = argc - optind - 1;
    lens = calloc((size_t)nlines, sizeof(*lens));
    for (int i = 0; i < nlines; i++)
        if ((lens[i] = strlen(lines[i])) > 1000)
            die("line too long");
    conn *conns = calloc((size_t)nconns, sizeof(*conns));
    int ep = epoll_create1(0);
    if (!conns || !lens || ep < 0)
        die("setup");
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    for (int i = 0; i < nconns; i++) {
        conn *c = &conns[i];
        c->fd = socket(AF_INET, SOCK_STREAM, 0);
        int one = 1;
        if (c->fd < 0 || connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
            die("connect");
        setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        c->next = i % nlines;
        struct epoll_event ev = { .events = EPOLLIN, .data.ptr = c };
        if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0)
            die("epoll_ctl");
        send_next(c);
    }
    double start = now(), t0 = start + warmup, t1 = t0 + seconds;
    long counted = 0;
    struct epoll_event evs[256];
    for (;;) {
        double t = now();
        if (t >= t1)
            break;
        int n = epoll_wait(ep, evs, 256, 100);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            die("epoll_wait");
        int counting = now() >= t0;
        for (int i = 0; i < n; i++) {
            conn *c = evs[i].data.ptr;
            ssize_t r = read(c->fd, c->buf + c->len, sizeof(c->buf) - c->len);
            if (r <= 0) {
                if (r < 0 && (errno == EINTR || errno == EAGAIN))
                    continue;
                fprintf(stderr, "line_load: connection closed by the server\n");
                return 1;
            }
            c->len += (size_t)r;
            char *nl;
            while ((nl = memchr(c->buf, '\n', c->len))) {
                size_t l = (size_t)(nl - c->buf) + 1;
                if (c->buf[0] == '-' || (l >= 5 && memcmp(c->buf, "Error", 5) == 0)) {
                    fprintf(stderr, "line_load: error reply: %.*s\n", (int)l, c->buf);
                    return 1;
                }
                memmove(c->buf, c->buf + l, c->len - l);
                c->len -= l;
                counted += counting;
                send_next(c);
            }
            if (c->len == sizeof(c->buf)) {
                fprintf(stderr, "line_load: reply line over %zu bytes\n", sizeof(c->buf));
                return 1;
            }
        }
    }
    printf("req/s %.0f  reqs %ld  seconds %.2f  conns %d\n", counted / seconds, counted, seconds, nconns);
    return 0;
}
