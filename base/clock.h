/* Time. Rules, windows and alerts never read the system clock themselves: they
 * are given a struct cb_clock, so tests and replay drive time exactly. */
#ifndef CB_BASE_CLOCK_H
#define CB_BASE_CLOCK_H

#include <stdint.h>
#include <time.h>

/* Wall-clock milliseconds since the epoch (CLOCK_REALTIME). */
int64_t cb_wall_ms(void);
/* Monotonic milliseconds and microseconds, for intervals and latencies. */
int64_t cb_mono_ms(void);
int64_t cb_mono_us(void);

/* An injectable clock: now(ctx) returns milliseconds since the epoch. */
struct cb_clock {
    int64_t (*now)(void *ctx);
    void *ctx;
};

/* The wall clock as a struct cb_clock. */
extern const struct cb_clock cb_clock_wall;

/* A manual clock for tests and replay: now() returns *(int64_t *)ctx. */
int64_t cb_clock_manual_now(void *ctx);

static inline int64_t cb_clock_now(const struct cb_clock *c) { return c->now(c->ctx); }

/* The CLOCK_REALTIME moment ms from now, as pthread_cond_timedwait wants it. */
struct timespec cb_deadline_in_ms(int64_t ms);

#endif
