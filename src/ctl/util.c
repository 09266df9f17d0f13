/* SPDX-License-Identifier: MIT */
/* ctl/util.c - small helpers of tusknetctl: allocation that exits on
 * failure (a control client has nothing to save), a growable byte string and
 * the clocks. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ctl/util.h"

/* ---- small helpers ------------------------------------------------------------ */

void tn_ctl_oom(void)
{
    fputs("tusknetctl: out of memory\n", stderr);
    exit(1);
}

void *tn_ctl_realloc(void *p, size_t n)
{
    p = realloc(p, n ? n : 1);
    if (!p)
        tn_ctl_oom();
    return p;
}

void *tn_ctl_calloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p)
        tn_ctl_oom();
    return p;
}

void tn_ctl_buf_reserve(tn_ctl_buf *b, size_t more)
{
    if (b->len + more + 1 <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + more + 1) {
        if (cap > SIZE_MAX / 2)
            tn_ctl_oom();
        cap *= 2;
    }
    b->p = tn_ctl_realloc(b->p, cap);
    b->cap = cap;
}

void tn_ctl_buf_add(tn_ctl_buf *b, const char *s, size_t n)
{
    tn_ctl_buf_reserve(b, n);
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void tn_ctl_buf_addc(tn_ctl_buf *b, char c)
{
    tn_ctl_buf_add(b, &c, 1);
}

void tn_ctl_buf_adds(tn_ctl_buf *b, const char *s)
{
    tn_ctl_buf_add(b, s, strlen(s));
}

void tn_ctl_buf_free(tn_ctl_buf *b)
{
    free(b->p);
    memset(b, 0, sizeof(*b));
}

double tn_ctl_now_mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

double tn_ctl_now_real(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}
