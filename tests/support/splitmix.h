/* A small deterministic random stream (splitmix64) for tests and benchmarks
 * that draw series from a fixed seed, so a failure or a figure replays. */
#ifndef CB_TESTS_SUPPORT_SPLITMIX_H
#define CB_TESTS_SUPPORT_SPLITMIX_H

#include <math.h>
#include <stdint.h>
#include <string.h>

/* The next 64 random bits of the stream whose state is *s. */
static inline uint64_t cb_splitmix_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Uniform in (0, 1): never 0, so log() of it is finite. */
static inline double cb_splitmix_unit(uint64_t *s)
{
    return ((double)(cb_splitmix_next(s) >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

/* A double with random bits; NaN and infinities are drawn again. */
static inline double cb_splitmix_finite(uint64_t *s)
{
    double v;
    do {
        uint64_t b = cb_splitmix_next(s);
        memcpy(&v, &b, sizeof v);
    } while (!isfinite(v));
    return v;
}

#endif
