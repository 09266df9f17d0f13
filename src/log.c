/* log.c - the daemon's logger: a level, stderr, and journald priorities.
 *
 * Lines are written with one write(2) each so that they never interleave
 * with children's stderr sharing the descriptor. Under journald the time is
 * left out (the journal stamps it) and a "<N>" sd-daemon priority prefix is
 * added instead.
 *
 * Log files (access logs) are appended to with one write per line as well,
 * and reopened by path on SIGUSR1, for logrotate. */
#include "log.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Logger state is process-wide by nature (libraries log through it too). */
static struct {
    int level;
    int journald;
} logger = { TN_LOG_INFO, 0 };

/* libevent's own messages go through the logger too. One is expected:
 * libwebsockets closes a WebSocket's socket before it tells us the
 * connection is gone, so removing our events then finds the descriptor
 * closed; libevent copes, and the line is debug, not a warning. */
static void libevent_log(int severity, const char *msg)
{
    int level = severity >= EVENT_LOG_ERR ? TN_LOG_ERROR : severity == EVENT_LOG_WARN ? TN_LOG_WARN : TN_LOG_DEBUG;
    if (level == TN_LOG_WARN && strstr(msg, "Epoll MOD") && strstr(msg, "Bad file descriptor"))
        level = TN_LOG_DEBUG;
    tn_log(level, "libevent: %s", msg);
}

void tn_log_init(void)
{
    event_set_log_callback(libevent_log);
    /* JOURNAL_STREAM is "dev:ino" of the stream; only trust it if it is
     * still our stderr (a child of a service may inherit the variable). */
    const char *js = getenv("JOURNAL_STREAM");
    struct stat st;
    unsigned long long dev, ino;
    logger.journald = js && sscanf(js, "%llu:%llu", &dev, &ino) == 2 && fstat(STDERR_FILENO, &st) == 0 &&
                      (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

void tn_log_set_level(int level)
{
    logger.level = level;
}

int tn_log_get_level(void)
{
    return logger.level;
}

void tn_log(int level, const char *fmt, ...)
{
    static const char *const names[] = { "error", "warn", "info", "debug" };
    static const int prio[] = { 3, 4, 6, 7 };
    if (level > logger.level)
        return;
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (m < 0)
        return;
    char head[64];
    if (logger.journald) {
        snprintf(head, sizeof(head), "<%d>", prio[level]);
    } else {
        struct timespec ts;
        struct tm tm;
        clock_gettime(CLOCK_REALTIME, &ts);
        localtime_r(&ts.tv_sec, &tm);
        size_t n = strftime(head, sizeof(head), "%Y-%m-%d %H:%M:%S", &tm);
        snprintf(head + n, sizeof(head) - n, ".%03ld [%s] ", ts.tv_nsec / 1000000, names[level]);
    }
    /* a multi-line message (several config errors) becomes several lines,
     * each with its own prefix, so the journal keeps each at its priority */
    char line[2200];
    for (const char *p = msg; *p;) {
        size_t len = strcspn(p, "\n");
        int n = snprintf(line, sizeof(line) - 1, "%s%.*s", head, (int)len, p);
        if (n < 0)
            return;
        if ((size_t)n > sizeof(line) - 2)
            n = (int)sizeof(line) - 2;
        line[n++] = '\n';
        ssize_t w = write(STDERR_FILENO, line, (size_t)n);
        (void)w;
        p += len;
        if (*p == '\n')
            p++;
    }
}

/* ---- log files ------------------------------------------------------------------ */

struct tn_logfile {
    tn_logfile *next, **pprev;
    int fd;
    char path[];
};

static int open_append(const char *path)
{
    int fd;
    do
        fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0640);
    while (fd < 0 && errno == EINTR);
    return fd;
}

tn_logfile *tn_logfile_open(tn_logfile **list, const char *path)
{
    size_t n = strlen(path);
    tn_logfile *f = malloc(sizeof(*f) + n + 1);
    if (!f)
        return NULL;
    memcpy(f->path, path, n + 1);
    f->fd = open_append(path);
    if (f->fd < 0) {
        int e = errno;
        free(f);
        errno = e;
        return NULL;
    }
    f->next = *list;
    if (f->next)
        f->next->pprev = &f->next;
    f->pprev = list;
    *list = f;
    return f;
}

void tn_logfile_close(tn_logfile *f)
{
    if (!f)
        return;
    *f->pprev = f->next;
    if (f->next)
        f->next->pprev = f->pprev;
    close(f->fd);
    free(f);
}

void tn_logfile_write(tn_logfile *f, const void *p, size_t len)
{
    ssize_t n;
    do
        n = write(f->fd, p, len);
    while (n < 0 && errno == EINTR);
}

size_t tn_logfile_reopen_all(tn_logfile *list, size_t *failed)
{
    size_t done = 0;
    *failed = 0;
    for (tn_logfile *f = list; f; f = f->next) {
        int fd = open_append(f->path);
        if (fd < 0) {
            tn_error("cannot reopen log file %s, still writing to the old one: %s", f->path, strerror(errno));
            ++*failed;
            continue;
        }
        close(f->fd);
        f->fd = fd;
        done++;
    }
    return done;
}
