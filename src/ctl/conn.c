/* SPDX-License-Identifier: MIT */
/* ctl/conn.c - talking to the daemon: connects to the control socket, sends
 * one command line and reads one answer (a JSON line, or Prometheus text up to
 * "# EOF" for `metrics`) within the connection's timeout. */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "ctl/conn.h"
#include "ctl/util.h"

volatile sig_atomic_t tn_ctl_quit;

/* 0, or -1 with errno set. */
int tn_ctl_connect(tn_ctl_conn *c, const char *path, double timeout)
{
    memset(c, 0, sizeof(*c));
    c->fd = -1;
    c->timeout = timeout;
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    if (strlen(path) >= sizeof(sun.sun_path)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(sun.sun_path, path, strlen(path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
        if (errno != EINTR) {
            int e = errno;
            close(fd);
            errno = e;
            return -1;
        }
        /* interrupted: the connect goes on in the background; wait for it */
        struct pollfd pfd = { .fd = fd, .events = POLLOUT };
        int rc;
        while ((rc = poll(&pfd, 1, 5000)) < 0 && errno == EINTR && !tn_ctl_quit)
            ;
        int soerr = rc > 0 ? 0 : rc == 0 ? ETIMEDOUT : errno;
        socklen_t sl = sizeof(soerr);
        if (rc > 0 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0)
            soerr = errno;
        if (soerr) {
            close(fd);
            errno = soerr;
            return -1;
        }
    }
    c->fd = fd;
    return 0;
}

void tn_ctl_close(tn_ctl_conn *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    tn_ctl_buf_free(&c->in);
    c->scan = c->line_start = 0;
}

void tn_ctl_connect_failed(const char *path, int err)
{
    const char *hint = "";
    if (err == ENOENT || err == ECONNREFUSED)
        hint = " (is tusknetd running?)";
    else if (err == EACCES || err == EPERM)
        hint = " (root, the daemon's user or daemon.control_group may use it)";
    fprintf(stderr, "tusknetctl: cannot connect to %s: %s%s\n", path, strerror(err), hint);
}

static int send_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Is the line [s, e) (without its '\n') the end marker of `metrics`? */
static bool is_eof_line(const char *s, const char *e)
{
    if (e > s && e[-1] == '\r')
        e--;
    return e - s == 5 && memcmp(s, "# EOF", 5) == 0;
}

/* Reads one answer: a JSON line, or with METRICS the text up to "# EOF" (a
 * JSON line instead is an error answer). Returns its length in c->in.p (the
 * final newline excluded), or -1 with ERR set. Consume it with tn_ctl_consume. */
static ssize_t read_answer(tn_ctl_conn *c, bool metrics, char *err, size_t errlen)
{
    double deadline = c->timeout > 0 ? tn_ctl_now_mono() + c->timeout : 0;
    for (;;) {
        while (c->scan < c->in.len) {
            char *nl = memchr(c->in.p + c->scan, '\n', c->in.len - c->scan);
            if (!nl) {
                c->scan = c->in.len;
                break;
            }
            size_t end = (size_t)(nl - c->in.p);
            const char *ls = c->in.p + c->line_start;
            if (!metrics || (c->line_start == 0 && c->in.p[0] == '{') || is_eof_line(ls, nl)) {
                c->scan = end + 1;
                return (ssize_t)end;
            }
            c->line_start = c->scan = end + 1;
        }
        int wait_ms = -1;
        if (deadline > 0) {
            double left = deadline - tn_ctl_now_mono();
            if (left <= 0) {
                snprintf(err, errlen, "no answer from tusknetd within %gs", c->timeout);
                return -1;
            }
            wait_ms = (int)(left * 1000) + 1;
        }
        struct pollfd pfd = { .fd = c->fd, .events = POLLIN };
        int rc = poll(&pfd, 1, wait_ms);
        if (rc < 0) {
            if (errno == EINTR) {
                if (tn_ctl_quit) {
                    snprintf(err, errlen, "interrupted");
                    return -1;
                }
                continue;
            }
            snprintf(err, errlen, "poll: %s", strerror(errno));
            return -1;
        }
        if (rc == 0)
            continue; /* the deadline check above reports it */
        tn_ctl_buf_reserve(&c->in, 65536);
        ssize_t r = read(c->fd, c->in.p + c->in.len, c->in.cap - c->in.len - 1);
        if (r < 0) {
            if (errno == EINTR || errno == EAGAIN)
                continue;
            snprintf(err, errlen, "reading the answer: %s", strerror(errno));
            return -1;
        }
        if (r == 0) {
            if (c->in.len)
                snprintf(err, errlen, "tusknetd closed the connection in the middle of an answer (%zu bytes read)",
                         c->in.len);
            else
                snprintf(err, errlen, "tusknetd closed the connection without answering");
            return -1;
        }
        c->in.len += (size_t)r;
        c->in.p[c->in.len] = '\0';
    }
}

/* Drops the answer just read (and its newline). */
void tn_ctl_consume(tn_ctl_conn *c)
{
    size_t n = c->scan;
    memmove(c->in.p, c->in.p + n, c->in.len - n);
    c->in.len -= n;
    if (c->in.p)
        c->in.p[c->in.len] = '\0';
    c->scan = c->line_start = 0;
}

/* Sends LINE (no newline) and reads the answer; -1 with ERR set on failure.
 * A failed write still reads: the daemon may have answered and closed (e.g.
 * "permission denied" at accept). */
ssize_t tn_ctl_request(tn_ctl_conn *c, const char *line, bool metrics, char *err, size_t errlen)
{
    tn_ctl_buf cmd = { 0 };
    tn_ctl_buf_adds(&cmd, line);
    tn_ctl_buf_addc(&cmd, '\n');
    int werr = send_all(c->fd, cmd.p, cmd.len) < 0 ? errno : 0;
    tn_ctl_buf_free(&cmd);
    ssize_t n = read_answer(c, metrics, err, errlen);
    if (n < 0 && (werr == EPIPE || werr == ECONNRESET))
        snprintf(err, errlen, "tusknetd closed the connection");
    else if (n < 0 && werr)
        snprintf(err, errlen, "sending the command: %s", strerror(werr));
    return n;
}

