/* log.h - one line per event on stderr, with <N> priority prefixes when
 * stderr is journald's stream (systemd sets JOURNAL_STREAM). */
#ifndef TN_LOG_H
#define TN_LOG_H

#include <stddef.h>

#include "config/config.h"

void tn_log_init(void);
void tn_log_set_level(int level);
int tn_log_get_level(void);
void tn_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

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

#define tn_error(...) tn_log(TN_LOG_ERROR, __VA_ARGS__)
#define tn_warn(...) tn_log(TN_LOG_WARN, __VA_ARGS__)
#define tn_info(...) tn_log(TN_LOG_INFO, __VA_ARGS__)
#define tn_debug(...) tn_log(TN_LOG_DEBUG, __VA_ARGS__)

#endif
