/* SPDX-License-Identifier: MIT */
/* clock.h - the daemon's clocks in one place.
 *
 * Durations, deadlines and latencies use the monotonic clock (tn_now_us),
 * which no clock adjustment moves; what people read (timestamps in stats,
 * logs and answers) uses the wall clock (tn_wall_ms). What runs for every
 * read or message takes the event loop's cached wall time (tn_loop_us,
 * tn_loop_ms): libevent reads the clock once per loop pass, so a busy
 * connection does not pay a clock read per request. */
#ifndef TN_CLOCK_H
#define TN_CLOCK_H

#include <event2/event.h>
#include <stdint.h>
#include <time.h>

/* Microseconds on the monotonic clock. */
static inline int64_t tn_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Milliseconds since the epoch, now. */
static inline int64_t tn_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The wall clock as BASE's loop last read it, in microseconds. */
static inline int64_t tn_loop_us(struct event_base *base)
{
    struct timeval tv;
    event_base_gettimeofday_cached(base, &tv);
    return (int64_t)tv.tv_sec * 1000000 + tv.tv_usec;
}

/* The same in milliseconds. */
static inline int64_t tn_loop_ms(struct event_base *base)
{
    struct timeval tv;
    event_base_gettimeofday_cached(base, &tv);
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

#endif
