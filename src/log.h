/* log.h - one line per event on stderr, with <N> priority prefixes when
 * stderr is journald's stream (systemd sets JOURNAL_STREAM). */
#ifndef TN_LOG_H
#define TN_LOG_H

#include "config/config.h"

void tn_log_init(void);
void tn_log_set_level(int level);
int tn_log_get_level(void);
void tn_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define tn_error(...) tn_log(TN_LOG_ERROR, __VA_ARGS__)
#define tn_warn(...) tn_log(TN_LOG_WARN, __VA_ARGS__)
#define tn_info(...) tn_log(TN_LOG_INFO, __VA_ARGS__)
#define tn_debug(...) tn_log(TN_LOG_DEBUG, __VA_ARGS__)

#endif
