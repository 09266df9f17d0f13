/* SPDX-License-Identifier: MIT */
/* ws_fanout.c - broadcast fan-out load for bench.py (no libwebsockets).
 *
 *     ws_fanout [-n SUBS] [-d SECONDS] [-w WARMUP] [-W WINDOW] [-s SIZE] PUBPORT SUBPORT PATH
 *
 * Opens SUBS (default 1000) WebSockets to SUBPORT PATH, then one publisher
 * to PUBPORT PATH (the same server, or another one joined to it). The
 * publisher keeps WINDOW (default 8) SIZE-byte (default 64) text messages in
 * flight: a message is done when every subscriber has it, and then the next
 * one is sent. The server is expected to relay each message to every other
 * member of the room (the publisher gets nothing back). After WARMUP
 * seconds (default 1) it counts for SECONDS (default 5) and prints
 *     deliveries/s D  msgs M  seconds S  subs N  p50_ms X  p99_ms Y
 * where a delivery is one message arriving at one subscriber and the
 * latencies are from sending a message to its arrival at the last
 * subscriber. Exit status 0, or 1 with a message on stderr (a failed
 * handshake, a closed connection, a message out of order, or nothing
 * completed for 10 seconds). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define RXCAP 65536
#define RING 4096
#define MAXLAT 1000000

typedef struct {
    int fd;
    size_t rx_len;
    unsigned char rx[RXCAP];
    uint32_t next_seq; /* messages arrive in order */
} sub;

static sub *subs;
static int nsubs = 1000;
static double sent_at[RING];
static int got[RING];
static double *lat;
static size_t nlat;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *fmt, long a)
{
    fprintf(stderr, "ws_fanout: ");
    fprintf(stderr, fmt, a);
    fprintf(stderr, errno ? ": %s\n" : "\n", strerror(errno));
    exit(1);
}

static void write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && (errno == EINTR || errno == EAGAIN)) {
            struct timespec ts = { 0, 10000 };
            nanosleep(&ts, NULL);
            continue;
        }
        if (n <= 0)
            die("write to fd %ld", fd);
        p += n;
        len -= (size_t)n;
    }
}

static int open_ws(int port, const char *path)
{
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port) };
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        die("socket (%ld open)", nsubs);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    struct timeval tv = { 10, 0 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
        die("connect to port %ld", port);
    char req[512];
    int n = snprintf(req, sizeof(req),
                     "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
                     path, port);
    write_all(fd, req, (size_t)n);
    char resp[2048];
    size_t len = 0;
    /* byte by byte: nothing after the head may be taken from the socket */
    while (len < 4 || memcmp(resp + len - 4, "\r\n\r\n", 4) != 0) {
        if (len == sizeof(resp) || read(fd, resp + len, 1) != 1)
            die("handshake on port %ld", port);
        len++;
    }
    if (len < 12 || memcmp(resp, "HTTP/1.1 101", 12) != 0) {
        errno = 0;
        die("handshake on port %ld: not a 101", port);
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    return fd;
}

/* Complete frames in s's buffer: count arrivals; true if any message was done. */
static void parse(sub *s, int idx, double t, int measuring, uint64_t *deliveries, int *done)
{
    size_t off = 0;
    while (s->rx_len - off >= 2) {
        unsigned char *f = s->rx + off;
        size_t h = 2, plen = f[1] & 0x7f;
        if (plen == 126) {
            if (s->rx_len - off < 4)
                break;
            plen = ((size_t)f[2] << 8) | f[3];
            h = 4;
        } else if (plen == 127) {
            errno = 0;
            die("subscriber %ld: frame too big", idx);
        }
        if (s->rx_len - off < h + plen)
            break;
        int op = f[0] & 0x0f;
        if (op == 8) {
            errno = 0;
            die("subscriber %ld: closed by the server", idx);
        }
        if (op == 1 || op == 2) {
            unsigned seq;
            if (plen < 9 || sscanf((const char *)f + h, "%8x", &seq) != 1 || seq != s->next_seq) {
                errno = 0;
                die("subscriber %ld: message out of order", idx);
            }
            s->next_seq++;
            if (measuring)
                (*deliveries)++;
            if (++got[seq % RING] == nsubs) {
                got[seq % RING] = 0;
                if (measuring && nlat < MAXLAT)
                    lat[nlat++] = t - sent_at[seq % RING];
                (*done)++;
            }
        }
        off += h + plen;
    }
    memmove(s->rx, s->rx + off, s->rx_len - off);
    s->rx_len -= off;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    double seconds = 5, warmup = 1;
    int window = 8, opt;
    size_t size = 64;
    while ((opt = getopt(argc, argv, "n:d:w:W:s:")) != -1) {
        switch (opt) {
        case 'n': nsubs = atoi(optarg); break;
        case 'd': seconds = atof(optarg); break;
        case 'w': warmup = atof(optarg); break;
        case 'W': window = atoi(optarg); break;
        case 's': size = (size_t)atol(optarg); break;
        default: goto usage;
        }
    }
    if (argc - optind != 3 || nsubs < 1 || window < 1 || window > RING / 2 || size < 9 || size > 125) {
    usage:
        fprintf(stderr, "usage: ws_fanout [-n SUBS] [-d SECONDS] [-w WARMUP] [-W WINDOW 1-%d] [-s SIZE 9-125] "
                        "PUBPORT SUBPORT PATH\n", RING / 2);
        return 1;
    }
    int pubport = atoi(argv[optind]), subport = atoi(argv[optind + 1]);
    const char *path = argv[optind + 2];
    subs = calloc((size_t)nsubs, sizeof(*subs));
    lat = malloc(MAXLAT * sizeof(*lat));
    int ep = epoll_create1(0);
    if (!subs || !lat || ep < 0)
        die("setup (%ld subscribers)", nsubs);
    for (int i = 0; i < nsubs; i++) {
        subs[i].fd = open_ws(subport, path);
        struct epoll_event ev = { .events = EPOLLIN, .data.u32 = (uint32_t)i };
        if (epoll_ctl(ep, EPOLL_CTL_ADD, subs[i].fd, &ev) < 0)
            die("epoll_ctl %ld", i);
    }
    int pub = open_ws(pubport, path);
    struct epoll_event pev = { .events = EPOLLIN, .data.u32 = UINT32_MAX };
    epoll_ctl(ep, EPOLL_CTL_ADD, pub, &pev);

    /* a masked text frame; the sequence number is its first 8 characters */
    unsigned char frame[6 + 125], payload[125];
    memset(payload, 'x', size);
    frame[0] = 0x81;
    frame[1] = 0x80 | (unsigned char)size;
    memset(frame + 2, 0, 4); /* mask key 0: the payload as is */
    uint32_t seq = 0;
    int inflight = 0;
    uint64_t deliveries = 0, msgs = 0;
    double start = now(), t0 = start + warmup, t1 = t0 + seconds, last_done = start;
    struct epoll_event evs[256];
    static unsigned char sink[65536];
    for (;;) {
        double t = now();
        if (t >= t1)
            break;
        while (inflight < window) {
            char num[9];
            snprintf(num, sizeof(num), "%08x", seq);
            memcpy(payload, num, 8);
            memcpy(frame + 6, payload, size);
            sent_at[seq % RING] = now();
            write_all(pub, frame, 6 + size);
            seq++;
            inflight++;
        }
        int n = epoll_wait(ep, evs, 256, 100);
        if (n < 0 && errno != EINTR)
            die("epoll_wait %ld", 0);
        t = now();
        int measuring = t >= t0 && t < t1;
        for (int e = 0; e < n; e++) {
            uint32_t i = evs[e].data.u32;
            if (i == UINT32_MAX) {
                ssize_t r = read(pub, sink, sizeof(sink));
                if (r == 0) {
                    errno = 0;
                    die("publisher closed by the server%s", 0);
                }
                continue;
            }
            sub *s = &subs[i];
            ssize_t r = read(s->fd, s->rx + s->rx_len, RXCAP - s->rx_len);
            if (r == 0) {
                errno = 0;
                die("subscriber %ld closed by the server", i);
            }
            if (r < 0) {
                if (errno == EAGAIN || errno == EINTR)
                    continue;
                die("read subscriber %ld", i);
            }
            s->rx_len += (size_t)r;
            int done = 0;
            parse(s, (int)i, t, measuring, &deliveries, &done);
            if (done) {
                inflight -= done;
                last_done = t;
                if (measuring)
                    msgs += (uint64_t)done;
            }
        }
        if (t - last_done > 10) {
            errno = 0;
            die("no message reached every subscriber for 10 s (%ld in flight)", inflight);
        }
    }
    qsort(lat, nlat, sizeof(*lat), cmp);
    double p50 = nlat ? lat[nlat / 2] : 0, p99 = nlat ? lat[(size_t)(nlat * 0.99)] : 0;
    printf("deliveries/s %.0f  msgs %llu  seconds %.2f  subs %d  p50_ms %.3f  p99_ms %.3f\n", deliveries / seconds,
           (unsigned long long)msgs, seconds, nsubs, p50 * 1e3, p99 * 1e3);
    return 0;
}
