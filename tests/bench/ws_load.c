/* SPDX-License-Identifier: MIT */
/* ws_load.c - the WebSocket load generator for bench.py (no libwebsockets).
 *
 *     ws_load [-c CONNS] [-d SECONDS] [-w WARMUP] [-i IDLE] [-s SIZE] [-H] PORT PATH
 *
 * Opens IDLE connections first (HTTP upgrade + 101 only, then silent), then
 * CONNS active ones; each active connection keeps one SIZE-byte (default 64)
 * masked text frame in flight: send, wait for the echo, send again, all on
 * one epoll loop. After WARMUP seconds (default 0.5) it counts echoes for
 * SECONDS and prints
 *     msgs/s N  msgs M  seconds S  conns C  idle I  idle_closed K
 * Pings from the server are answered with pongs on every connection.
 *
 * -H (hold): no active load; after opening the IDLE connections print
 * "READY I" and keep them open until stdin reaches EOF, then print the same
 * summary line (idle_closed = how many the server closed meanwhile).
 *
 * Exit status 0, or 1 with a message on stderr when anything goes wrong
 * (a failed handshake, a wrong echo, a connection closed under load). */
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
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define RXCAP 8192
#define BATCH 128

typedef struct {
    int fd;
    int active;
    int closed;
    size_t rx_len;
    unsigned char *rx; /* active connections only; idle ones read into a shared buffer */
} conn;

static conn *conns;
static int nconns;
static size_t size = 64;
static unsigned char frame[14 + 65536];
static size_t frame_len;
static const char *path;
static int port;
static int idle_closed;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *what)
{
    fprintf(stderr, "ws_load: %s: %s\n", what, errno ? strerror(errno) : "failed");
    exit(1);
}

static void fail(const char *fmt, int a, int b)
{
    fprintf(stderr, "ws_load: ");
    fprintf(stderr, fmt, a, b);
    fprintf(stderr, "\n");
    exit(1);
}

static void write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN) { /* a tiny frame on an almost empty socket: rare */
            struct timespec ts = { 0, 10000 };
            nanosleep(&ts, NULL);
            continue;
        }
        if (n <= 0)
            die("write");
        p += n;
        len -= (size_t)n;
    }
}

/* A masked client frame: FIN, opcode, mask key, payload. */
static size_t make_frame(unsigned char *out, int opcode, const unsigned char *payload, size_t len)
{
    static const unsigned char key[4] = { 0x37, 0xfa, 0x21, 0x3d };
    size_t h = 0;
    out[h++] = 0x80 | opcode;
    if (len < 126) {
        out[h++] = 0x80 | len;
    } else if (len < 65536) {
        out[h++] = 0x80 | 126;
        out[h++] = len >> 8;
        out[h++] = len & 0xff;
    } else {
        fail("payload too big (%d > %d)", (int)len, 65535);
    }
    memcpy(out + h, key, 4);
    h += 4;
    for (size_t i = 0; i < len; i++)
        out[h + i] = payload[i] ^ key[i & 3];
    return h + len;
}

/* Opens n connections with the HTTP upgrade done, in batches: connect and
 * send the request on a whole batch, then read the 101s. */
static void open_conns(int first, int n, int active)
{
    struct sockaddr_in sa;
    char req[512];
    int reqlen = snprintf(req, sizeof(req),
                          "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                          "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
                          path, port);
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons(port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);

    for (int b = 0; b < n; b += BATCH) {
        int m = n - b < BATCH ? n - b : BATCH;
        for (int i = 0; i < m; i++) {
            conn *c = &conns[first + b + i];
            c->fd = socket(AF_INET, SOCK_STREAM, 0);
            if (c->fd < 0)
                die("socket");
            int one = 1;
            setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
            struct timeval tv = { 10, 0 };
            setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
            if (connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
                die("connect");
            write_all(c->fd, req, (size_t)reqlen);
        }
        for (int i = 0; i < m; i++) {
            conn *c = &conns[first + b + i];
            char resp[2048];
            size_t got = 0;
            while (!memmem(resp, got, "\r\n\r\n", 4)) {
                if (got == sizeof(resp))
                    fail("handshake %d: response head too long (%d)", first + b + i, (int)got);
                ssize_t r = read(c->fd, resp + got, sizeof(resp) - got);
                if (r < 0 && errno == EINTR)
                    continue;
                if (r <= 0) {
                    fprintf(stderr, "ws_load: handshake %d of %d: %s\n", first + b + i, n,
                            r == 0 ? "connection closed" : strerror(errno));
                    exit(1);
                }
                got += (size_t)r;
            }
            if (got < 12 || memcmp(resp, "HTTP/1.1 101", 12) != 0) {
                resp[got < 200 ? got : 200] = 0;
                fprintf(stderr, "ws_load: handshake %d: not a 101: %s\n", first + b + i, resp);
                exit(1);
            }
            char *end = memmem(resp, got, "\r\n\r\n", 4) + 4;
            if ((size_t)(end - resp) != got)
                fail("handshake %d: %d bytes after the 101", first + b + i, (int)(got - (size_t)(end - resp)));
            c->active = active;
            if (active) {
                c->rx = malloc(RXCAP);
                if (!c->rx)
                    die("malloc");
            }
        }
    }
}

/* Parses the frames in c's buffer. Returns the number of complete echoes. */
static int parse(conn *c, unsigned char *buf, size_t *lenp, int idx)
{
    int echoes = 0;
    size_t off = 0, len = *lenp;
    for (;;) {
        if (len - off < 2)
            break;
        unsigned char b0 = buf[off], b1 = buf[off + 1];
        size_t h = 2, plen = b1 & 0x7f;
        if (b1 & 0x80)
            fail("connection %d: masked frame from the server (%d)", idx, 0);
        if (plen == 126) {
            if (len - off < 4)
                break;
            plen = ((size_t)buf[off + 2] << 8) | buf[off + 3];
            h = 4;
        } else if (plen == 127) {
            if (len - off < 10)
                break;
            plen = 0;
            for (int i = 0; i < 8; i++)
                plen = (plen << 8) | buf[off + 2 + i];
            h = 10;
        }
        if (h + plen > RXCAP)
            fail("connection %d: frame of %d bytes", idx, (int)plen);
        if (len - off < h + plen)
            break;
        int op = b0 & 0x0f;
        unsigned char *pl = buf + off + h;
        if (op == 0x9) { /* ping: pong */
            unsigned char pong[14 + 125];
            size_t n = make_frame(pong, 0xA, pl, plen > 125 ? 125 : plen);
            write_all(c->fd, pong, n);
        } else if (op == 0x8) {
            int code = plen >= 2 ? (pl[0] << 8 | pl[1]) : 0;
            fail("connection %d: closed by the server with code %d", idx, code);
        } else if (op == 0x1 || op == 0x2) {
            if (!c->active)
                fail("connection %d: unexpected message on an idle connection (%d bytes)", idx, (int)plen);
            if (!(b0 & 0x80) || plen != size)
                fail("connection %d: echo of %d bytes (fragmented or wrong size)", idx, (int)plen);
            if (memcmp(pl, "0123456789abcdef", plen < 16 ? plen : 16) != 0)
                fail("connection %d: echo does not match what was sent (%d)", idx, 0);
            echoes++;
        } /* pong, continuation: ignored */
        off += h + plen;
    }
    if (off) {
        memmove(buf, buf + off, len - off);
        *lenp = len - off;
    }
    return echoes;
}

static void usage(void)
{
    fprintf(stderr, "usage: ws_load [-c CONNS] [-d SECONDS] [-w WARMUP] [-i IDLE] [-s SIZE] [-H] PORT PATH\n");
    exit(2);
}

int main(int argc, char **argv)
{
    int active = 50, idle = 0, hold = 0, opt;
    double seconds = 5, warmup = 0.5;
    while ((opt = getopt(argc, argv, "c:d:w:i:s:H")) != -1) {
        switch (opt) {
        case 'c': active = atoi(optarg); break;
        case 'd': seconds = atof(optarg); break;
        case 'w': warmup = atof(optarg); break;
        case 'i': idle = atoi(optarg); break;
        case 's': size = (size_t)atol(optarg); break;
        case 'H': hold = 1; break;
        default: usage();
        }
    }
    if (argc - optind != 2 || size < 1 || size > 4096 || active < 0 || idle < 0)
        usage();
    port = atoi(argv[optind]);
    path = argv[optind + 1];
    if (hold)
        active = 0;

    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)(active + idle + 64)) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }

    unsigned char payload[4096];
    for (size_t i = 0; i < size; i++)
        payload[i] = "0123456789abcdef"[i & 15];
    frame_len = make_frame(frame, 0x1, payload, size);

    nconns = idle + active;
    conns = calloc((size_t)nconns + 1, sizeof(conn));
    if (!conns)
        die("calloc");
    open_conns(0, idle, 0);
    if (hold) {
        printf("READY %d\n", idle);
        fflush(stdout);
    }
    open_conns(idle, active, 1);

    int ep = epoll_create1(0);
    if (ep < 0)
        die("epoll_create1");
    for (int i = 0; i < nconns; i++) {
        struct epoll_event ev = { .events = EPOLLIN, .data.u32 = (uint32_t)i };
        if (fcntl(conns[i].fd, F_SETFL, fcntl(conns[i].fd, F_GETFL) | O_NONBLOCK) < 0)
            die("fcntl O_NONBLOCK");
        if (epoll_ctl(ep, EPOLL_CTL_ADD, conns[i].fd, &ev) < 0)
            die("epoll_ctl");
    }
    if (hold) {
        struct epoll_event ev = { .events = EPOLLIN, .data.u32 = (uint32_t)nconns };
        if (epoll_ctl(ep, EPOLL_CTL_ADD, 0, &ev) < 0)
            die("epoll_ctl stdin");
    }

    for (int i = idle; i < nconns; i++)
        write_all(conns[i].fd, frame, frame_len);

    double t0 = now(), t_count = t0 + warmup, t_end = t_count + seconds;
    long long count = 0;
    int counting = 0;
    static unsigned char scratch[RXCAP];
    struct epoll_event evs[256];
    for (;;) {
        double t = now();
        if (!hold) {
            if (!counting && t >= t_count) {
                counting = 1;
                count = 0;
                t_count = t;
            }
            if (t >= t_end)
                break;
        }
        int n = epoll_wait(ep, evs, 256, hold ? -1 : 50);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            die("epoll_wait");
        for (int k = 0; k < n; k++) {
            uint32_t i = evs[k].data.u32;
            if ((int)i == nconns) { /* stdin: EOF ends the hold */
                char b[64];
                if (read(0, b, sizeof(b)) <= 0)
                    goto done;
                continue;
            }
            conn *c = &conns[i];
            if (!c->active) {
                size_t len = 0;
                ssize_t r = read(c->fd, scratch, sizeof(scratch));
                if (r <= 0) {
                    if (r < 0 && errno == EAGAIN)
                        continue;
                    if (!hold)
                        fail("idle connection %d closed by the server (%d)", (int)i, 0);
                    idle_closed++;
                    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                    continue;
                }
                len = (size_t)r;
                parse(c, scratch, &len, (int)i); /* pings: pong; a partial frame here is dropped */
                continue;
            }
            ssize_t r = read(c->fd, c->rx + c->rx_len, RXCAP - c->rx_len);
            if (r < 0 && (errno == EAGAIN || errno == EINTR))
                continue;
            if (r <= 0)
                fail("active connection %d closed by the server (%d)", (int)i, (int)r);
            c->rx_len += (size_t)r;
            int e = parse(c, c->rx, &c->rx_len, (int)i);
            for (int j = 0; j < e; j++)
                write_all(c->fd, frame, frame_len);
            count += e;
        }
    }
done:;
    double el = hold ? 0 : now() - t_count;
    printf("msgs/s %.0f  msgs %lld  seconds %.3f  conns %d  idle %d  idle_closed %d\n", el > 0 ? count / el : 0.0,
           count, el, active, idle, idle_closed);
    fflush(stdout);
    return 0;
}
