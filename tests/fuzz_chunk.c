/* libFuzzer target: the chunk codec (storage/chunk.c).
 *
 * 1. The input as a blob: the decoder must never crash or read outside it;
 *    what it accepts must be strictly increasing finite samples, and must
 *    round-trip through every codec that takes them.
 * 2. The input as samples (12 bytes each: a flag byte, a 3-byte ts step, 8
 *    value bytes read as a double, a scaled decimal, a repeat or a small
 *    step): encode -> decode must give them back bit for bit, with every
 *    codec, and a range read must give exactly the samples in its range. */
#include "storage/chunk.h"

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAXN 1024

static struct cb_chunk_point pts[MAXN], got[MAXN];
static uint8_t blob[64 + 19 * MAXN];

static uint64_t load64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* Encodes pts[0..n) with every codec; each blob must decode to exactly
 * pts, and a range read of [from, to) to exactly the points inside. */
static void check_round_trip(size_t n, int64_t from, int64_t to)
{
    static const enum cb_chunk_codec codecs[] = {CB_CHUNK_AUTO, CB_CHUNK_RAW, CB_CHUNK_GORILLA,
                                                 CB_CHUNK_DECIMAL};
    if (cb_chunk_bound(n) > sizeof blob)
        abort();
    for (size_t c = 0; c < sizeof codecs / sizeof codecs[0]; c++) {
        long len = cb_chunk_encode(pts, n, codecs[c], blob, sizeof blob);
        if (len == CB_CHUNK_EUNFIT && codecs[c] == CB_CHUNK_DECIMAL &&
            cb_chunk_decimal_scale(pts, n) < 0)
            continue;
        if (len <= 0 || (size_t)len > cb_chunk_bound(n))
            abort();
        if (cb_chunk_decode(blob, (size_t)len, got, n) != (long)n)
            abort();
        for (size_t i = 0; i < n; i++)
            if (got[i].ts_ms != pts[i].ts_ms || memcmp(&got[i].value, &pts[i].value, 8) != 0)
                abort();
        long k = cb_chunk_decode_range(blob, (size_t)len, from, to, got, n);
        size_t want = 0;
        for (size_t i = 0; i < n; i++)
            if (pts[i].ts_ms >= from && pts[i].ts_ms < to) {
                if (k < 0 || want >= (size_t)k || got[want].ts_ms != pts[i].ts_ms)
                    abort();
                want++;
            }
        if (k != (long)want)
            abort();
    }
}

/* 1: arbitrary bytes as a blob. */
static void fuzz_decoder(const uint8_t *data, size_t size)
{
    struct cb_chunk_iter it;
    if (cb_chunk_iter_init(&it, data, size) < 0)
        return;
    size_t n = 0;
    int r = 0;
    struct cb_chunk_point p;
    while (n < MAXN && (r = cb_chunk_iter_next(&it, &p)) == 1) {
        if (!isfinite(p.value) || (n > 0 && p.ts_ms <= pts[n - 1].ts_ms))
            abort();
        pts[n++] = p;
    }
    if (n == MAXN || r < 0)
        return;
    if (n != cb_chunk_iter_count(&it))
        abort();
    check_round_trip(n, n ? pts[n / 2].ts_ms : 0, INT64_MAX);
}

/* 2: the input as samples. */
static void fuzz_samples(const uint8_t *data, size_t size)
{
    size_t n = 0;
    int64_t ts = size && (data[0] & 1) ? INT64_MIN : INT64_C(1700000000000);
    double prev = 0;
    for (size_t off = 0; off + 12 <= size && n < MAXN; off += 12) {
        uint8_t flags = data[off];
        uint64_t step = 1 + ((uint64_t)data[off + 1] | (uint64_t)data[off + 2] << 8 |
                             (uint64_t)data[off + 3] << 16);
        if (flags & 0x80)
            step <<= 38; /* a big gap */
        uint64_t raw = load64(data + off + 4);
        double v;
        switch ((flags >> 1) & 3) {
        case 0: memcpy(&v, &raw, sizeof v); break;
        case 1: v = (double)(int32_t)raw / pow(10.0, (flags >> 3) & 15); break;
        case 2: v = prev; break;
        default: v = prev + (double)(int8_t)raw / 100.0; break;
        }
        if (!isfinite(v))
            v = 0.0;
        if (n > 0) {
            if ((uint64_t)INT64_MAX - (uint64_t)ts < step)
                break;
            ts = (int64_t)((uint64_t)ts + step);
        }
        pts[n++] = (struct cb_chunk_point){ts, v};
        prev = v;
    }
    int64_t from = n ? pts[(size_t)data[0] % n].ts_ms : 0;
    int64_t to = n ? pts[(size_t)data[size - 1] % n].ts_ms : 0;
    check_round_trip(n, from, to);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_decoder(data, size);
    fuzz_samples(data, size);
    return 0;
}
