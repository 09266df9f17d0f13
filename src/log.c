/* log.c - the daemon's logger: a level, stderr, and journald priorities.
 *
 * Lines are written with one write(2) each so that they never interleave
 * with children's stderr sharing the descriptor. Under journald the time is
 * left out (the journal stamps it) and a "<N>" sd-daemon priority prefix is
 * added instead. */
#include "log.h"

#include <stdarg.h>
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

void tn_log_init(void)
{
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
    char line[2048];
    size_t n;
    if (logger.journald) {
        n = (size_t)snprintf(line, sizeof(line), "<%d>", prio[level]);
    } else {
        struct timespec ts;
        struct tm tm;
        clock_gettime(CLOCK_REALTIME, &ts);
        localtime_r(&ts.tv_sec, &tm);
        n = strftime(line, sizeof(line), "%Y-%m-%d %H:%M:%S", &tm);
        n += (size_t)snprintf(line + n, sizeof(line) - n, ".%03ld [%s] ", ts.tv_nsec / 1000000, names[level]);
    }
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof(line) - n - 1, fmt, ap);
    va_end(ap);
    if (m < 0)
        return;
    n += (size_t)m;
    if (n > sizeof(line) - 2)
        n = sizeof(line) - 2;
    line[n++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, n);
    (void)w;
}
