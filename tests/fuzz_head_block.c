/* libFuzzer target: the open head's block codec (storage/head_block.c).
 *
 * 1. The input (after two bytes naming the group) as a block: the decoder
 *    must never crash or read outside it; what it accepts must be in its
 *    group, series ascending, each series' ts strictly ascending, and must
 *    encode again into a block that decodes to exactly the same samples.
 * 2. The input as samples (11 bytes each: a series step byte, 2 bytes of ts
 *    step, 8 value bytes read as a double or, by the step byte's top bit, a
 *    scaled decimal): encode -> decode gives them back bit for bit. */
#include "storage/head_block.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAXN 4096

static struct storage_hsample in[MAXN], out[MAXN];
static uint8_t blob[11 + 39 * MAXN];

/* Decodes blob[0, len) of group grp into out; the count, or -1 when refused. */
static long decode(const uint8_t *b, size_t len, int64_t grp)
{
    struct storage_hblock_iter it;
    long n = 0;
    int r = storage__hblock_iter_init(&it, b, len, grp);
    while (r == 0 && n < MAXN && (r = storage__hblock_next(&it, &out[n])) == 1) {
        r = 0;
        n++;
    }
    return r < 0 || n == MAXN ? -1 : n;
}

/* pts[0, n) must encode and decode back exactly. */
static void round_trip(const struct storage_hsample *pts, size_t n, int64_t grp)
{
    long len = storage__hblock_encode(pts, n, grp, blob, sizeof blob);
    if (len <= 0 || (size_t)len > storage__hblock_bound(n))
        abort();
    if (decode(blob, (size_t)len, grp) != (long)n)
        abort();
    for (size_t i = 0; i < n; i++)
        if (out[i].series != pts[i].series || out[i].ts != pts[i].ts ||
            memcmp(&out[i].value, &pts[i].value, sizeof(double)) != 0)
            abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    int64_t grp = (int64_t)(data[0] | data[1] << 8);
    /* 1: any bytes as a block */
    long n = decode(data + 2, size - 2, grp);
    if (n > 0) {
        for (long i = 0; i < n; i++) {
            if (out[i].series / STORAGE_HEAD_GROUP != grp)
                abort();
            if (i > 0 && (out[i].series < out[i - 1].series ||
                          (out[i].series == out[i - 1].series && out[i].ts <= out[i - 1].ts)))
                abort();
        }
        memcpy(in, out, (size_t)n * sizeof *in);
        round_trip(in, (size_t)n, grp);
    }
    /* 2: the bytes as samples */
    size_t k = 0;
    int64_t series = grp * STORAGE_HEAD_GROUP, ts = 0;
    for (size_t p = 2; p + 11 <= size && k < MAXN; p += 11) {
        const uint8_t *d = data + p;
        int64_t step = d[0] & 0x3f;
        if (k > 0 && step > 0)
            series += step;
        else if (k > 0)
            ts += 1 + (int64_t)(d[1] | d[2] << 8);
        if (k == 0)
            ts = (int64_t)((uint64_t)d[1] << 40 | (uint64_t)d[2] << 24) - (INT64_C(1) << 47);
        if (series >= (grp + 1) * STORAGE_HEAD_GROUP)
            break;
        double v;
        memcpy(&v, d + 3, sizeof v);
        if (d[0] & 0x80) {
            int64_t m;
            memcpy(&m, d + 3, sizeof m);
            v = (double)(m % 1000000) / (d[0] & 0x40 ? 100.0 : 10.0);
        }
        in[k++] = (struct storage_hsample){series, ts, v};
    }
    if (k > 0)
        round_trip(in, k, grp);
    return 0;
}
