/* SPDX-License-Identifier: MIT */
/* log.c - the daemon's logger: a level, stderr, and journald priorities.
 *
 * Lines are written with one write(2) each, of at most PIPE_BUF bytes, so
 * that they never interleave with other writers of the descriptor. Under
 * journald the time is left out (the journal stamps it) and a "<N>"
 * sd-daemon priority prefix is added instead.
 *
 * Log lines carry what clients and programs sent (a program's stderr, a
 * request line in the access log), so every line is escaped here, in one
 * place: a newline, a carriage return or an ESC sequence cannot start a
 * forged line or drive the terminal of whoever reads the log. The access
 * log's combined format quotes with the same function.
 *
 * Log files (access logs) are appended to with one write per line as well,
 * and reopened by path on SIGUSR1, for logrotate. */
#include "log.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <limits.h>
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
    struct evbuffer *line; /* the line being built, reused */
    void (*on_level)(int level);
    char tag[32]; /* "worker N: " in a worker process */
} logger = { TN_LOG_INFO, 0, NULL, NULL, "" };

void tn_log_set_tag(const char *tag)
{
    snprintf(logger.tag, sizeof(logger.tag), "%s", tag);
}

static const char *const level_names[] = { "error", "warn", "info", "debug" };

const char *tn_log_level_name(int level)
{
    return level >= 0 && level < 4 ? level_names[level] : "?";
}

int tn_log_level_parse(const char *name)
{
    for (int i = 0; i < 4; i++)
        if (strcmp(name, level_names[i]) == 0)
            return i;
    return -1;
}

size_t tn_utf8_len(const unsigned char *s, size_t avail)
{
    unsigned char c = s[0];
    size_t len;
    unsigned char lo = 0x80, hi = 0xbf; /* bounds of the second byte */
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        if (c == 0xe0)
            lo = 0xa0; /* overlong */
        else if (c == 0xed)
            hi = 0x9f; /* surrogates */
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        if (c == 0xf0)
            lo = 0x90; /* overlong */
        else if (c == 0xf4)
            hi = 0x8f; /* past U+10FFFF */
    } else {
        return 0;
    }
    if (avail < len || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if ((s[i] & 0xc0) != 0x80)
            return 0;
    return len;
}

void tn_log_escape(struct evbuffer *out, const char *s, size_t len, int flags)
{
    static const char hex[] = "0123456789ABCDEF";
    const unsigned char *p = (const unsigned char *)s, *end = p + len, *start = p;
    bool clf = flags & TN_ESC_CLF;
    while (p < end) {
        unsigned char c = *p;
        size_t n = c >= 0x20 && c < 0x7f ? !(clf && (c == '"' || c == '\\'))
                   : c >= 0x80 && !clf  ? tn_utf8_len(p, (size_t)(end - p))
                                        : 0;
        if (n) {
            p += n;
            continue;
        }
        evbuffer_add(out, start, (size_t)(p - start));
        char e[4] = { '\\', 'x', hex[c >> 4], hex[c & 15] };
        evbuffer_add(out, e, 4);
        start = ++p;
    }
    evbuffer_add(out, start, (size_t)(p - start));
}

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
    if (logger.on_level)
        logger.on_level(level);
}

void tn_log_on_level_change(void (*fn)(int level))
{
    logger.on_level = fn;
}

int tn_log_get_level(void)
{
    return logger.level;
}

/* Where to cut an escaped line of LEN bytes to at most MAX: never inside a
 * UTF-8 sequence or a \xHH escape. */
static size_t cut(const char *line, size_t len, size_t max)
{
    if (len <= max)
        return len;
    size_t n = max;
    while (n > 0 && ((unsigned char)line[n] & 0xc0) == 0x80)
        n--;
    for (size_t i = n > 3 ? n - 3 : 0; i < n; i++) {
        if (line[i] == '\\' && line[i + 1] == 'x') {
            n = i;
            break;
        }
    }
    return n;
}

/* One line: the head, PREFIX and MSG escaped, a newline, one write(2). */
static void emit(int level, const char *prefix, const char *msg, size_t len)
{
    static const char *const names[] = { "error", "warn", "info", "debug" };
    static const int prio[] = { 3, 4, 6, 7 };
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
    if (!logger.line && !(logger.line = evbuffer_new()))
        return;
    struct evbuffer *b = logger.line;
    evbuffer_add(b, head, strlen(head));
    evbuffer_add(b, logger.tag, strlen(logger.tag));
    if (prefix)
        tn_log_escape(b, prefix, strlen(prefix), 0);
    tn_log_escape(b, msg, len, 0);
    evbuffer_add(b, "\n", 1);
    size_t total = evbuffer_get_length(b);
    char *line = (char *)evbuffer_pullup(b, -1);
    if (line) {
        size_t n = cut(line, total - 1, PIPE_BUF - 1);
        line[n] = '\n';
        ssize_t w = write(STDERR_FILENO, line, n + 1);
        (void)w;
    }
    evbuffer_drain(b, total);
}

void tn_log(int level, const char *fmt, ...)
{
    if (level > logger.level)
        return;
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (m >= 0)
        emit(level, NULL, msg, (size_t)m < sizeof(msg) ? (size_t)m : sizeof(msg) - 1);
}

/* Each line its own log line, so the journal keeps each at its priority. */
void tn_log_lines(int level, const char *prefix, const char *text)
{
    if (level > logger.level)
        return;
    for (const char *p = text; *p;) {
        size_t len = strcspn(p, "\n");
        emit(level, prefix, p, len);
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

struct tn_log_limit {
    char *handler;
    double tokens;
    int64_t last_us;
    uint64_t dropped;
    struct event *report; /* pending while drops wait to be told */
};

static void limit_report(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    tn_log_limit *l = arg;
    if (l->dropped)
        tn_warn("handler %s: dropped %llu stderr lines (more than %d a second)", l->handler,
                (unsigned long long)l->dropped, TN_LOG_LIMIT_RATE);
    l->dropped = 0;
}

tn_log_limit *tn_log_limit_new(struct event_base *base, const char *handler)
{
    tn_log_limit *l = calloc(1, sizeof(*l));
    if (!l)
        return NULL;
    l->tokens = TN_LOG_LIMIT_BURST;
    l->last_us = INT64_MIN;
    l->handler = strdup(handler);
    l->report = evtimer_new(base, limit_report, l);
    if (!l->handler || !l->report) {
        tn_log_limit_free(l);
        return NULL;
    }
    return l;
}

bool tn_log_limit_take(tn_log_limit *l, int64_t now_us)
{
    if (now_us > l->last_us) {
        if (l->last_us != INT64_MIN)
            l->tokens += (double)(now_us - l->last_us) * TN_LOG_LIMIT_RATE / 1e6;
        if (l->tokens > TN_LOG_LIMIT_BURST)
            l->tokens = TN_LOG_LIMIT_BURST;
        l->last_us = now_us;
    }
    if (l->tokens >= 1) {
        l->tokens -= 1;
        return true;
    }
    if (l->dropped++ == 0) {
        struct timeval tv = { 1, 0 };
        evtimer_add(l->report, &tv);
    }
    return false;
}

void tn_log_limit_free(tn_log_limit *l)
{
    if (!l)
        return;
    limit_report(-1, 0, l);
    if (l->report)
        event_free(l->report);
    free(l->handler);
    free(l);
}
