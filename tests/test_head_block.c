/* Unit tests: the open head's block codec (storage/head_block.c). Exact
 * round trips of random and adversarial blocks (every special double, NaN
 * payloads included, large and negative ts steps, one sample and many per
 * series), the size a sensor's sample costs, the encoder's refusals, and a
 * decoder that refuses damaged blocks. Random blocks come from a fixed seed,
 * so a failure replays. */
#include "storage/head_block.h"
#include "tests/support/splitmix.h"

#include <CUnit/CUnit.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define T0 INT64_C(1700000000000)

static int same_bits(double a, double b)
{
    return memcmp(&a, &b, sizeof a) == 0;
}

/* Encodes p[0, n) of group grp and decodes it again: the length, or -1 when
 * the encoder refuses or the samples do not come back exactly. */
static long round_trip(const struct storage_hsample *p, size_t n, int64_t grp)
{
    size_t cap = storage__hblock_bound(n);
    uint8_t *blob = malloc(cap);
    long len = storage__hblock_encode(p, n, grp, blob, cap);
    if (len > 0) {
        struct storage_hblock_iter it;
        struct storage_hsample x;
        size_t k = 0;
        int r = storage__hblock_iter_init(&it, blob, (size_t)len, grp);
        while (r == 0 && (r = storage__hblock_next(&it, &x)) == 1) {
            if (k >= n || x.series != p[k].series || x.ts != p[k].ts ||
                !same_bits(x.value, p[k].value))
                r = -1;
            else
                r = 0, k++;
        }
        if (r != 0 || k != n)
            len = -1;
    }
    free(blob);
    return len;
}

static double bits(uint64_t b)
{
    double v;
    memcpy(&v, &b, sizeof v);
    return v;
}

static const uint64_t special_bits[] = {
    0x7ff8000000000000ull, /* the quiet NaN */
    0xfff8000000000000ull, /* its negative */
    0x7ff0000000000001ull, /* a signalling NaN */
    0x7ff4000000c0ffeeull, /* a NaN with a payload */
    0x7ff0000000000000ull, /* +inf */
    0xfff0000000000000ull, /* -inf */
    0x8000000000000000ull, /* -0.0 */
    0x0000000000000000ull, /* +0.0 */
    0x0000000000000001ull, /* the smallest subnormal */
    0x000fffffffffffffull, /* the largest subnormal */
    0x7fefffffffffffffull, /* DBL_MAX */
    0x3fb999999999999aull, /* 0.1 */
    0x3fd5555555555555ull, /* 1/3 */
};
#define NSPECIAL (sizeof special_bits / sizeof special_bits[0])

static void test_specials_round_trip(void)
{
    struct storage_hsample p[NSPECIAL + 8];
    size_t n = 0;
    for (size_t i = 0; i < NSPECIAL; i++) /* one series, every special in a row */
        p[n++] = (struct storage_hsample){130, T0 + (int64_t)i, bits(special_bits[i])};
    const double more[] = {9007199254740992.0, -9007199254740993.0, 1e300, -1e-300, 123.456789,
                           1e-7, 0.000001, -21.5};
    for (size_t i = 0; i < sizeof more / sizeof more[0]; i++)
        p[n++] = (struct storage_hsample){131, T0 + (int64_t)i, more[i]};
    CU_ASSERT(round_trip(p, n, 130 / STORAGE_HEAD_GROUP) > 0);
    /* each one alone, in every series offset of the group's ends */
    for (size_t i = 0; i < NSPECIAL; i++) {
        struct storage_hsample one = {STORAGE_HEAD_GROUP * 5 + (int64_t)(i % 2) *
                                                                 (STORAGE_HEAD_GROUP - 1),
                                      T0, bits(special_bits[i])};
        CU_ASSERT(round_trip(&one, 1, 5) > 0);
    }
}

static void test_ts_extremes_round_trip(void)
{
    /* steps across the whole int64 range, negative ts, and a series whose
     * first sample is older than the previous series' last (a negative step
     * within the block) */
    struct storage_hsample p[] = {
        {64, INT64_MIN, 1.5},    {64, -1, 2.5},       {64, 0, 3.5},
        {64, INT64_MAX, 4.5},    {65, T0, 5.5},       {66, T0 - 86400000, 6.5},
        {66, T0 + 1, 7.5},       {127, INT64_MIN, 0}, {127, INT64_MAX, -0.0},
    };
    CU_ASSERT(round_trip(p, sizeof p / sizeof p[0], 1) > 0);
}

/* Random blocks: 1 to 64 series of a group, 1 to 40 samples each, steps
 * from 0 ms to years, values of few decimals, raw random bits (any NaN),
 * counters, and specials. */
static void test_random_blocks_round_trip(void)
{
    uint64_t seed = 16;
    enum { CAP = STORAGE_HEAD_GROUP * 40 };
    struct storage_hsample *p = malloc(CAP * sizeof *p);
    for (int round = 0; round < 3000; round++) {
        int64_t grp = (int64_t)(cb_splitmix_next(&seed) % 100000);
        size_t n = 0;
        int kind = (int)(cb_splitmix_next(&seed) % 4);
        for (int64_t off = 0; off < STORAGE_HEAD_GROUP; off++) {
            if (cb_splitmix_next(&seed) % 3 == 0)
                continue;
            uint64_t a = cb_splitmix_next(&seed) >> (cb_splitmix_next(&seed) % 64);
            int64_t ts = (int64_t)(a - (cb_splitmix_next(&seed) >> 2)); /* (two's complement) */
            size_t m = 1 + cb_splitmix_next(&seed) % (round % 2 ? 40 : 2);
            for (size_t i = 0; i < m; i++) {
                double v;
                uint64_t r = cb_splitmix_next(&seed);
                if (kind == 0)
                    v = (double)(int64_t)(r % 200001 - 100000) / 100.0;
                else if (kind == 1)
                    v = bits(r);
                else if (kind == 2)
                    v = (double)(r >> 20);
                else
                    v = bits(special_bits[r % NSPECIAL]);
                p[n++] = (struct storage_hsample){grp * STORAGE_HEAD_GROUP + off, ts, v};
                uint64_t step = 1 + (cb_splitmix_next(&seed) >> (cb_splitmix_next(&seed) % 64));
                if (ts > INT64_MAX - (int64_t)(step >> 2) - 1)
                    break;
                ts += (int64_t)(step >> 2) + 1;
            }
        }
        if (n == 0)
            continue;
        long len = round_trip(p, n, grp);
        CU_ASSERT_FATAL(len > 0);
        CU_ASSERT((size_t)len <= storage__hblock_bound(n));
    }
    free(p);
}

/* A group of 64 sensors reporting once a second with one or two decimals:
 * about 5 bytes a sample, against 27 for a row of the old head. */
static void test_sensor_samples_are_small(void)
{
    struct storage_hsample p[STORAGE_HEAD_GROUP];
    uint64_t seed = 7;
    for (int k = 0; k < STORAGE_HEAD_GROUP; k++)
        p[k] = (struct storage_hsample){
            STORAGE_HEAD_GROUP * 3 + k, T0 + 1000 * 3600 + (int64_t)(cb_splitmix_next(&seed) % 1000),
            (double)(int64_t)(cb_splitmix_next(&seed) % 100000 - 20000) / 100.0};
    long len = round_trip(p, STORAGE_HEAD_GROUP, 3);
    CU_ASSERT(len > 0);
    CU_ASSERT(len <= 6 * STORAGE_HEAD_GROUP);
}

static void test_encoder_refuses_unsorted(void)
{
    uint8_t blob[256];
    struct storage_hsample twice[] = {{1, T0, 1}, {1, T0, 2}};
    struct storage_hsample back[] = {{1, T0, 1}, {1, T0 - 1, 2}};
    struct storage_hsample series_back[] = {{2, T0, 1}, {1, T0, 2}};
    struct storage_hsample other_group[] = {{1, T0, 1}, {STORAGE_HEAD_GROUP, T0, 2}};
    CU_ASSERT_EQUAL(storage__hblock_encode(twice, 2, 0, blob, sizeof blob), -1);
    CU_ASSERT_EQUAL(storage__hblock_encode(back, 2, 0, blob, sizeof blob), -1);
    CU_ASSERT_EQUAL(storage__hblock_encode(series_back, 2, 0, blob, sizeof blob), -1);
    CU_ASSERT_EQUAL(storage__hblock_encode(other_group, 2, 0, blob, sizeof blob), -1);
    CU_ASSERT_EQUAL(storage__hblock_encode(twice, 0, 0, blob, sizeof blob), -1);
    CU_ASSERT_EQUAL(storage__hblock_encode(twice, 1, 0, blob, 4), -1); /* cap below the bound */
}

/* Decodes the whole blob: 0 when it decodes to its end, -1 when refused. */
static int decodes(const uint8_t *blob, size_t len, int64_t grp)
{
    struct storage_hblock_iter it;
    struct storage_hsample x;
    int r = storage__hblock_iter_init(&it, blob, len, grp);
    while (r == 0 && (r = storage__hblock_next(&it, &x)) == 1)
        r = 0;
    return r;
}

static void test_decoder_refuses_damage(void)
{
    struct storage_hsample p[] = {{0, T0, 1.25}, {0, T0 + 5, NAN}, {63, T0, 2}};
    uint8_t blob[256];
    long len = storage__hblock_encode(p, 3, 0, blob, sizeof blob);
    CU_ASSERT_FATAL(len > 0);
    CU_ASSERT_EQUAL(decodes(blob, (size_t)len, 0), 0);
    for (long cut = 0; cut < len; cut++) /* every truncation */
        CU_ASSERT_EQUAL(decodes(blob, (size_t)cut, 0), -1);
    uint8_t bad[256];
    memcpy(bad, blob, (size_t)len);
    bad[0] = 2; /* an unknown version */
    CU_ASSERT_EQUAL(decodes(bad, (size_t)len, 0), -1);
    memcpy(bad, blob, (size_t)len);
    bad[2] = (uint8_t)(STORAGE_HEAD_GROUP << 1); /* a series outside the group */
    CU_ASSERT_EQUAL(decodes(bad, (size_t)len, 0), -1);
    /* the second sample of series 0 at the first one's ts: not ascending */
    struct storage_hsample q[] = {{0, T0, 1}, {0, T0 + 1, 2}};
    long qlen = storage__hblock_encode(q, 2, 0, bad, sizeof bad);
    CU_ASSERT_FATAL(qlen > 0);
    CU_ASSERT_EQUAL(decodes(bad, (size_t)qlen, 0), 0);
    /* layout: version, count, series word, run length, ts (6 bytes), value
     * word, then the second sample's ts step 1 (zig-zag 2) made 0 */
    size_t at = 1 + 1 + 1 + 1 + 6 + 1;
    CU_ASSERT_EQUAL(bad[at], 2);
    bad[at] = 0;
    CU_ASSERT_EQUAL(decodes(bad, (size_t)qlen, 0), -1);
    bad[at] = 1; /* a step back */
    CU_ASSERT_EQUAL(decodes(bad, (size_t)qlen, 0), -1);
    /* a decimal word with d = 7 is RAW's tag, 8 bytes must follow */
    uint8_t raw_short[] = {1, 1, 0, 0, 7, 1, 2, 3};
    CU_ASSERT_EQUAL(decodes(raw_short, sizeof raw_short, 0), -1);
    CU_ASSERT_EQUAL(decodes(NULL, 0, 0), -1);
    /* a count that does not match the samples: more, fewer, none */
    memcpy(bad, blob, (size_t)len);
    bad[1] = 4;
    CU_ASSERT_EQUAL(decodes(bad, (size_t)len, 0), -1);
    bad[1] = 2;
    CU_ASSERT_EQUAL(decodes(bad, (size_t)len, 0), -1);
    bad[1] = 0;
    CU_ASSERT_EQUAL(decodes(bad, (size_t)len, 0), -1);
}

void cb_test_suite_head_block(void);
void cb_test_suite_head_block(void)
{
    CU_pSuite s = CU_add_suite("head_block", NULL, NULL);
    CU_add_test(s, "head_block: every special double (NaN payloads, infinities, -0.0, subnormals) "
                   "reads back bit for bit",
                test_specials_round_trip);
    CU_add_test(s, "head_block: ts at the int64 extremes, negative ts and steps back between "
                   "series read back exactly",
                test_ts_extremes_round_trip);
    CU_add_test(s, "head_block: random blocks of one to many samples per series read back "
                   "exactly within the bound",
                test_random_blocks_round_trip);
    CU_add_test(s, "head_block: a sensor's sample with a few decimals takes about 5 bytes",
                test_sensor_samples_are_small);
    CU_add_test(s, "head_block: the encoder refuses samples out of order, twice, or of another "
                   "group",
                test_encoder_refuses_unsorted);
    CU_add_test(s, "head_block: the decoder refuses truncated and damaged blocks",
                test_decoder_refuses_damage);
}
