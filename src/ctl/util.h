/* SPDX-License-Identifier: MIT */
/* ctl/util.h - small helpers of tusknetctl: allocation that exits on
 * failure (a control client has nothing to save), a growable byte string and
 * the clocks. */
#ifndef TN_CTL_UTIL_H
#define TN_CTL_UTIL_H

#include <stddef.h>

/* A growable byte string, always NUL-terminated once anything was added. */
typedef struct tn_ctl_buf {
    char *p;
    size_t len, cap;
} tn_ctl_buf;

__attribute__((noreturn)) void tn_ctl_oom(void);
void *tn_ctl_realloc(void *p, size_t n);
void *tn_ctl_calloc(size_t n, size_t size);
void tn_ctl_buf_reserve(tn_ctl_buf *b, size_t more);
void tn_ctl_buf_add(tn_ctl_buf *b, const char *s, size_t n);
void tn_ctl_buf_addc(tn_ctl_buf *b, char c);
void tn_ctl_buf_adds(tn_ctl_buf *b, const char *s);
void tn_ctl_buf_free(tn_ctl_buf *b);
double tn_ctl_now_mono(void);
double tn_ctl_now_real(void);

#endif
