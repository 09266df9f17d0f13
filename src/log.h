/* SPDX-License-Identifier: MIT */
/* log.h - one line per event on stderr, with <N> priority prefixes when
 * stderr is journald's stream (systemd sets JOURNAL_STREAM). */
#ifndef TN_LOG_H
#define TN_LOG_H

#include <event2/buffer.h>
#include <event2/event.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum tn_log_level { TN_LOG_ERROR, TN_LOG_WARN, TN_LOG_INFO, TN_LOG_DEBUG };

const char *tn_log_level_name(int level);
int tn_log_level_parse(const char *name); /* -1 if unknown */

void tn_log_init(void);
void tn_log_set_level(int level);
/* Put in front of every line of this process ("worker 1: "). */
void tn_log_set_tag(const char *tag);
int tn_log_get_level(void);
/* FN is called with the new level whenever it changes (at most one: the
 * WebSocket layer, whose library has a log level of its own). */
void tn_log_on_level_change(void (*fn)(int level));
/* Every line is escaped as tn_log_escape() does without flags: what clients
 * and programs send can neither split a line nor reach a terminal raw. */
void tn_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* One log line per line of TEXT, each PREFIX + the line (a list of errors). */
void tn_log_lines(int level, const char *prefix, const char *text);

/* Escapes text for a log line: control bytes (below 0x20, and 0x7f) and
 * bytes that are not UTF-8 become \xHH. With TN_ESC_CLF (the quoting of
 * nginx's combined format) '"', '\' and all bytes outside printable ASCII do
 * too. */
#define TN_ESC_CLF 1
void tn_log_escape(struct evbuffer *out, const char *s, size_t len, int flags);
/* Length of the valid UTF-8 sequence at S of at most AVAIL bytes (0: none). */
size_t tn_utf8_len(const unsigned char *s, size_t avail);

/* A token bucket for the stderr lines a handler's programs log: past
 * TN_LOG_LIMIT_RATE lines a second (bursts of TN_LOG_LIMIT_BURST) lines are
 * dropped and counted, and one line a second at most says how many ("handler
 * NAME: dropped N stderr lines"), the last one when the limiter is freed. */
#define TN_LOG_LIMIT_RATE 100
#define TN_LOG_LIMIT_BURST 100
typedef struct tn_log_limit tn_log_limit;
tn_log_limit *tn_log_limit_new(struct event_base *base, const char *handler);
/* True when a line may be logged at NOW_US (a monotonic clock). */
bool tn_log_limit_take(tn_log_limit *l, int64_t now_us);
void tn_log_limit_free(tn_log_limit *l);

/* Files the daemon appends log lines to (access logs). Each open file is
 * listed under its owner's list head (the daemon state) so that SIGUSR1
 * can reopen them all by path after logrotate moved them away. */
typedef struct tn_logfile tn_logfile;

/* Opens PATH for appending (created 0640) and lists it in *LIST; NULL with
 * errno set when it cannot. */
tn_logfile *tn_logfile_open(tn_logfile **list, const char *path);
/* Closes F and takes it off its list. */
void tn_logfile_close(tn_logfile *f);
/* Appends LEN bytes in one write(2), so lines stay whole between writers. */
void tn_logfile_write(tn_logfile *f, const void *p, size_t len);
/* Reopens every file of LIST by its path; a file that cannot be reopened
 * keeps its old descriptor (the failure is logged and counted in *FAILED).
 * Returns the number reopened. */
size_t tn_logfile_reopen_all(tn_logfile *list, size_t *failed);

/* The level is tested before the arguments are evaluated and formatted, so
 * a debug line costs nothing when debug is off (as Redis's serverLog). */
#define tn_log_at(level, ...)                                                                                          \
    do {                                                                                                               \
        if ((level) <= tn_log_get_level())                                                                             \
            tn_log((level), __VA_ARGS__);                                                                              \
    } while (0)
#define tn_error(...) tn_log_at(TN_LOG_ERROR, __VA_ARGS__)
#define tn_warn(...) tn_log_at(TN_LOG_WARN, __VA_ARGS__)
#define tn_info(...) tn_log_at(TN_LOG_INFO, __VA_ARGS__)
#define tn_debug(...) tn_log_at(TN_LOG_DEBUG, __VA_ARGS__)

#endif
