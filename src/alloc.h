/* SPDX-License-Identifier: MIT */
/* alloc.h - zeroed allocation for records made once per message.
 *
 * glibc (2.36, Debian 12) serves calloc() outside its per-thread cache: a
 * record freed by one request goes back to the bins and the next request's
 * calloc() fetches it from there. malloc() takes it from the cache; the
 * record is then zeroed by hand. Records made once per connection or
 * config keep calloc(). */
#ifndef TN_ALLOC_H
#define TN_ALLOC_H

#include <stdlib.h>
#include <string.h>

/* SIZE zeroed bytes, or NULL. */
static inline void *tn_zalloc(size_t size)
{
    void *p = malloc(size);
    if (p)
        memset(p, 0, size);
    return p;
}

#endif
