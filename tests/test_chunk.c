/* Unit tests: the chunk codec (storage/chunk.c). Exact round trips through
 * every codec, the encoder's refusals and choice, range reads that stop
 * early, and a decoder that refuses every damaged blob. The property test
 * draws random and adversarial series from a fixed seed, so a failure
 * replays. */
#include "storage/chunk.h"
#include "tests/support/splitmix.h"

#include <CUnit/CUnit.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define T0 INT64_C(1700000000000)

static const enum cb_chunk_codec codecs[] = {CB_CHUNK_RAW, CB_CHUNK_GORILLA, CB_CHUNK_DECIMAL,
                                             CB_CHUNK_AUTO};

static int same_bits(double a, double b)
{
    return memcmp(&a, &b, sizeof a) == 0;
}

/* Encodes pts with codec into a fresh buffer of cb_chunk_bound(n) bytes;
 * returns the encoder's result and the buffer in *blob (caller frees). */
static long encode(const struct cb_chunk_point *pts, size_t n, enum cb_chunk_codec codec,
                   uint8_t **blob)
{
    *blob = malloc(cb_chunk_bound(n));
    return cb_chunk_encode(pts, n, codec, *blob, cb_chunk_bound(n));
}

/* 1 when the blob decodes to exactly pts[0..n) (ts equal, values bit for bit). */
static int decodes_to(const uint8_t *blob, size_t len, const struct cb_chunk_point *pts, size_t n)
{
    struct cb_chunk_point *got = malloc((n ? n : 1) * sizeof *got);
    long k = cb_chunk_decode(blob, len, got, n);
    int ok = k == (long)n;
    for (size_t i = 0; ok && i < n; i++)
        ok = got[i].ts_ms == pts[i].ts_ms && same_bits(got[i].value, pts[i].value);
    free(got);
    return ok;
}

/* 1 when pts round-trips through codec, or codec is DECIMAL and refuses
 * values it cannot scale (and only those). */
static int round_trips(const struct cb_chunk_point *pts, size_t n, enum cb_chunk_codec codec)
{
    uint8_t *blob;
    long len = encode(pts, n, codec, &blob);
    int ok;
    if (codec == CB_CHUNK_DECIMAL && cb_chunk_decimal_scale(pts, n) < 0)
        ok = len == CB_CHUNK_EUNFIT;
    else
        ok = len > 0 && (codec == CB_CHUNK_AUTO || blob[0] == codec) &&
             decodes_to(blob, (size_t)len, pts, n);
    free(blob);
    return ok;
}

/* 1 when AUTO's blob is the one codec the choice names, encoded once:
 * DECIMAL when every value scales, else GORILLA, and RAW when that blob
 * would be longer than RAW's. */
static int auto_follows_the_choice(const struct cb_chunk_point *pts, size_t n)
{
    uint8_t *blob;
    long raw = encode(pts, n, CB_CHUNK_RAW, &blob);
    free(blob);
    enum cb_chunk_codec want =
        cb_chunk_decimal_scale(pts, n) >= 0 ? CB_CHUNK_DECIMAL : CB_CHUNK_GORILLA;
    long len = encode(pts, n, want, &blob);
    free(blob);
    if (len > raw) {
        want = CB_CHUNK_RAW;
        len = raw;
    }
    long got = encode(pts, n, CB_CHUNK_AUTO, &blob);
    int ok = got == len && got > 0 && blob[0] == want;
    free(blob);
    return ok;
}

static void fill_river(struct cb_chunk_point *pts, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        pts[i].ts_ms = T0 + (int64_t)i * 10000 + (int64_t)(i % 3) - 1;
        pts[i].value = (1400.0 + (double)((i * 37) % 23) - 11.0) / 1000.0; /* 1.389 .. 1.411 */
    }
}

static void test_every_codec_round_trips_river_levels(void)
{
    struct cb_chunk_point pts[120];
    fill_river(pts, 120);
    for (size_t c = 0; c < sizeof codecs / sizeof codecs[0]; c++)
        CU_ASSERT(round_trips(pts, 120, codecs[c]));
    CU_ASSERT_EQUAL(cb_chunk_decimal_scale(pts, 120), 3);
}

/* The blob names its codec in its first byte; AUTO encodes once, the codec
 * chosen from the scale's scan (storage/chunk.c, cb_chunk_encode). */
static void test_auto_picks_the_smallest_codec(void)
{
    struct cb_chunk_point pts[120];
    fill_river(pts, 120);
    uint8_t *blob[4];
    long len[4];
    for (int c = 0; c < 4; c++)
        len[c] = encode(pts, 120, codecs[c], &blob[c]);
    CU_ASSERT_EQUAL(blob[0][0], CB_CHUNK_RAW);
    CU_ASSERT_EQUAL(blob[1][0], CB_CHUNK_GORILLA);
    CU_ASSERT_EQUAL(blob[2][0], CB_CHUNK_DECIMAL);
    CU_ASSERT_EQUAL(blob[3][0], CB_CHUNK_DECIMAL);
    CU_ASSERT_EQUAL(len[3], len[2]);
    CU_ASSERT(len[2] < len[1] && len[1] < len[0]);
    for (int c = 0; c < 4; c++)
        free(blob[c]);

    /* A constant scales (21.5: d = 1), so AUTO takes DECIMAL without trying
     * GORILLA, whose XOR of 0 takes one bit a value as DECIMAL's width 0
     * does: the blobs differ by their headers, a few bytes. */
    for (size_t i = 0; i < 120; i++)
        pts[i] = (struct cb_chunk_point){T0 + (int64_t)i * 1000, 21.5};
    uint8_t *k, *g;
    long lk = encode(pts, 120, CB_CHUNK_AUTO, &k), lg = encode(pts, 120, CB_CHUNK_GORILLA, &g);
    CU_ASSERT_EQUAL(k[0], CB_CHUNK_DECIMAL);
    CU_ASSERT(auto_follows_the_choice(pts, 120));
    CU_ASSERT(lk > 0 && lk <= lg + 16);
    free(k);
    free(g);

    /* One value that does not scale (0.1 + 0.2) sends the chunk to GORILLA. */
    fill_river(pts, 120);
    pts[60].value = 0.1 + 0.2;
    CU_ASSERT(encode(pts, 120, CB_CHUNK_AUTO, &k) > 0);
    CU_ASSERT_EQUAL(k[0], CB_CHUNK_GORILLA);
    CU_ASSERT(auto_follows_the_choice(pts, 120));
    free(k);

    /* Random doubles do not scale, and XOR gains nothing on random bits:
     * AUTO falls back to RAW, which never exceeds 16 bytes a sample. */
    uint64_t s = 7;
    for (size_t i = 0; i < 120; i++) {
        pts[i].value = cb_splitmix_finite(&s);
        pts[i].ts_ms = (int64_t)(cb_splitmix_next(&s) >> 8) + (int64_t)i * (INT64_C(1) << 56);
    }
    uint8_t *a;
    long la = encode(pts, 120, CB_CHUNK_AUTO, &a);
    CU_ASSERT_EQUAL(a[0], CB_CHUNK_RAW);
    CU_ASSERT_EQUAL(la, 2 + 16 * 120);
    CU_ASSERT(decodes_to(a, (size_t)la, pts, 120));
    free(a);
}

static void test_decimal_scale_is_the_smallest_exact_power_of_ten(void)
{
    struct {
        double v;
        int d;
    } cases[] = {
        {1.0, 0},      {-42.0, 0},    {0.5, 1},        {1.414, 3},
        {-0.25, 2},    {0.1, 1},      {1e-9, 9},       {123456.789, 3},
        {9007199254740992.0, 0}, /* 2^53: the largest integer that scales */
        {1e-10, -1},   {0.30000000000000004, -1},      {M_PI, -1},
        {-0.0, -1},    {DBL_TRUE_MIN, -1}, {DBL_MIN, -1}, {1e300, -1},
        {-1e300, -1},  {DBL_MAX, -1}, {9007199254740994.0, -1}, /* 2^53 + 2 */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct cb_chunk_point p = {T0, cases[i].v};
        int d = cb_chunk_decimal_scale(&p, 1);
        if (d != cases[i].d)
            fprintf(stderr, "\n  scale of %.17g: %d, want %d", cases[i].v, d, cases[i].d);
        CU_ASSERT_EQUAL(d, cases[i].d);
    }
    /* The chunk takes the largest scale its values need; one value that
     * does not scale sends the whole chunk elsewhere. */
    struct cb_chunk_point pts[4] = {{1, 2.0}, {2, 2.5}, {3, 2.125}, {4, 7.0}};
    CU_ASSERT_EQUAL(cb_chunk_decimal_scale(pts, 4), 3);
    pts[3].value = -0.0;
    CU_ASSERT_EQUAL(cb_chunk_decimal_scale(pts, 4), -1);
    CU_ASSERT_EQUAL(cb_chunk_decimal_scale(pts, 0), 0);
}

/* -0.0, subnormals, huge values: DECIMAL refuses them, AUTO stores them
 * through GORILLA or RAW, and they come back bit for bit. */
static void test_special_values_round_trip_through_the_fallback(void)
{
    const double specials[] = {-0.0,    -0.0,      DBL_TRUE_MIN, -DBL_TRUE_MIN, DBL_MIN,
                               -DBL_MIN, 1e300,    -1e300,       DBL_MAX,       -DBL_MAX,
                               1e-320,  0.1 + 0.2, 1e15 + 0.3};
    size_t ns = sizeof specials / sizeof specials[0];
    struct cb_chunk_point pts[64];
    for (size_t k = 0; k < ns; k++) {
        /* the special value alone, and among ordinary 1-decimal readings */
        for (size_t i = 0; i < 64; i++)
            pts[i] = (struct cb_chunk_point){T0 + (int64_t)i * 1000, 20.0 + (double)(i % 7) / 10};
        pts[0].value = specials[k];
        pts[33].value = specials[k];
        for (size_t c = 0; c < 4; c++) {
            CU_ASSERT(round_trips(pts, 1, codecs[c]));
            CU_ASSERT(round_trips(pts, 64, codecs[c]));
        }
        uint8_t *blob;
        CU_ASSERT_EQUAL(encode(pts, 64, CB_CHUNK_DECIMAL, &blob), CB_CHUNK_EUNFIT);
        free(blob);
        CU_ASSERT(encode(pts, 64, CB_CHUNK_AUTO, &blob) > 0);
        CU_ASSERT_NOT_EQUAL(blob[0], CB_CHUNK_DECIMAL);
        free(blob);
    }
    /* every special value in one chunk, each codec */
    for (size_t i = 0; i < ns; i++)
        pts[i] = (struct cb_chunk_point){T0 + (int64_t)i, specials[i]};
    for (size_t c = 0; c < 4; c++)
        CU_ASSERT(round_trips(pts, ns, codecs[c]));
}

/* The store keeps one sample per (series, ts): the encoder refuses a ts that
 * repeats (or goes back) instead of choosing one of the two itself. */
static void test_equal_or_decreasing_timestamps_are_refused(void)
{
    struct cb_chunk_point pts[3] = {{T0, 1.0}, {T0 + 1000, 2.0}, {T0 + 1000, 3.0}};
    uint8_t buf[256];
    for (size_t c = 0; c < 4; c++) {
        CU_ASSERT_EQUAL(cb_chunk_encode(pts, 3, codecs[c], buf, sizeof buf), CB_CHUNK_EORDER);
        pts[2].ts_ms = T0 + 999;
        CU_ASSERT_EQUAL(cb_chunk_encode(pts, 3, codecs[c], buf, sizeof buf), CB_CHUNK_EORDER);
        pts[2].ts_ms = T0 + 1000;
    }
    CU_ASSERT_STRING_EQUAL(cb_chunk_strerror(CB_CHUNK_EORDER), "timestamps not strictly increasing");
}

static void test_nan_and_infinities_are_refused(void)
{
    const double bad[] = {NAN, -NAN, INFINITY, -INFINITY};
    uint8_t buf[256];
    for (size_t b = 0; b < 4; b++) {
        struct cb_chunk_point pts[2] = {{T0, 1.0}, {T0 + 1, bad[b]}};
        for (size_t c = 0; c < 4; c++)
            CU_ASSERT_EQUAL(cb_chunk_encode(pts, 2, codecs[c], buf, sizeof buf), CB_CHUNK_EVALUE);
    }
}

static void test_unknown_codec_and_too_many_samples_are_refused(void)
{
    struct cb_chunk_point p = {T0, 1.0};
    uint8_t buf[64];
    CU_ASSERT_EQUAL(cb_chunk_encode(&p, 1, (enum cb_chunk_codec)4, buf, sizeof buf),
                    CB_CHUNK_ECODEC);
    size_t n = CB_CHUNK_MAX_SAMPLES + 1;
    struct cb_chunk_point *pts = malloc(n * sizeof *pts);
    for (size_t i = 0; i < n; i++)
        pts[i] = (struct cb_chunk_point){T0 + (int64_t)i, 1.0};
    CU_ASSERT_EQUAL(cb_chunk_encode(pts, n, CB_CHUNK_AUTO, buf, sizeof buf), CB_CHUNK_ETOOMANY);
    uint8_t *blob;
    CU_ASSERT(encode(pts, n - 1, CB_CHUNK_AUTO, &blob) > 0);
    free(blob);
    free(pts);
}

/* Timestamps anywhere on the int64 line, gaps of any size: arithmetic is
 * modulo 2^64, and the decoder still sees strictly increasing times. */
static void test_int64_extremes_and_negative_timestamps_round_trip(void)
{
    struct cb_chunk_point pts[] = {
        {INT64_MIN, 1.5},      {INT64_MIN + 1, 1.5}, {-T0, 2.5}, {-1, 0.25}, {0, 0.0},
        {1, -7.0},             {T0, 3.125},          {T0 + 1, 3.0},
        {INT64_MAX - 1, 1e-9}, {INT64_MAX, -1e-9},
    };
    size_t n = sizeof pts / sizeof pts[0];
    for (size_t c = 0; c < 4; c++) {
        CU_ASSERT(round_trips(pts, n, codecs[c]));
        CU_ASSERT(round_trips(pts + n - 2, 2, codecs[c]));
        struct cb_chunk_point two[2] = {pts[0], pts[n - 1]}; /* a gap of 2^64 - 1 */
        CU_ASSERT(round_trips(two, 2, codecs[c]));
    }
}

/* ---- the property test ------------------------------------------------------------ */

enum shape { CONSTANT, STEPS, COUNTER, NOISE, RANDOM_BITS, ADVERSARIAL, RAMP, SHAPES };

/* A series of shape `sh` into pts[0..n) (n <= 600): timestamps regular
 * with jitter, occasional big gaps (up to 2^40 ms), anywhere on the time
 * line: negative, from INT64_MIN, up to INT64_MAX. */
static void make_series(uint64_t *s, enum shape sh, struct cb_chunk_point *pts, size_t n)
{
    static const double adversarial[] = {-0.0, 0.0, DBL_TRUE_MIN, -DBL_MIN, DBL_MAX, -DBL_MAX,
                                         1e300, 1e-300, 0.1, 1.0 / 3, 9007199254740993.0, -1.5};
    int decimals = (int)(cb_splitmix_next(s) % 4);
    double scale = pow(10.0, decimals), level = (double)(cb_splitmix_next(s) % 2000) - 1000.0;
    int64_t period = 1 + (int64_t)(cb_splitmix_next(s) % 60000);
    unsigned jitter = (unsigned)(cb_splitmix_next(s) % 5);
    long long counter = (long long)(cb_splitmix_next(s) % 1000);
    int64_t ts = 0; /* from 0, moved along the time line at the end */
    for (size_t i = 0; i < n; i++) {
        double v;
        switch (sh) {
        case CONSTANT: v = level / scale; break;
        case STEPS:
            if (cb_splitmix_next(s) % 20 == 0)
                level += (double)(cb_splitmix_next(s) % 200) - 100.0;
            v = level / scale;
            break;
        case COUNTER:
            counter = cb_splitmix_next(s) % 100 == 0 ? 0 : counter + 1 + (long long)(cb_splitmix_next(s) % 3);
            v = (double)counter;
            break;
        case NOISE: v = round(level + 50.0 * (cb_splitmix_unit(s) - 0.5)) / scale; break;
        case RANDOM_BITS: v = cb_splitmix_finite(s); break;
        case ADVERSARIAL:
            v = adversarial[cb_splitmix_next(s) % (sizeof adversarial / sizeof adversarial[0])];
            break;
        default: v = (level + (double)i * 3.0) / scale; break; /* RAMP */
        }
        pts[i].value = v;
        pts[i].ts_ms = ts;
        int64_t step = period + (jitter ? (int64_t)(cb_splitmix_next(s) % (2 * jitter + 1)) - jitter : 0);
        if (step < 1)
            step = 1;
        if (cb_splitmix_next(s) % 50 == 0)
            step += (int64_t)(cb_splitmix_next(s) >> 24); /* a big gap */
        ts += step; /* at most 600 * (60004 + 2^40) in all */
    }
    if (n == 0)
        return;
    int64_t base;
    switch (cb_splitmix_next(s) % 8) {
    case 0: base = INT64_MIN; break;
    case 1: base = INT64_MAX - pts[n - 1].ts_ms; break;
    default: base = (int64_t)(cb_splitmix_next(s) >> 2) - (INT64_C(1) << 61); break;
    }
    for (size_t i = 0; i < n; i++)
        pts[i].ts_ms += base;
}

/* A range read of [from, to) gives exactly the samples of pts in it. */
static int range_matches(const uint8_t *blob, size_t len, const struct cb_chunk_point *pts,
                         size_t n, int64_t from, int64_t to)
{
    struct cb_chunk_point *got = malloc((n ? n : 1) * sizeof *got);
    long k = cb_chunk_decode_range(blob, len, from, to, got, n);
    size_t want = 0;
    int ok = k >= 0;
    for (size_t i = 0; ok && i < n; i++)
        if (pts[i].ts_ms >= from && pts[i].ts_ms < to) {
            ok = want < (size_t)k && got[want].ts_ms == pts[i].ts_ms &&
                 same_bits(got[want].value, pts[i].value);
            want++;
        }
    ok = ok && (size_t)k == want;
    free(got);
    return ok;
}

static void test_property_random_and_adversarial_series_round_trip(void)
{
    uint64_t s = 20260416;
    struct cb_chunk_point *pts = malloc(600 * sizeof *pts);
    unsigned failures = 0, decimal_chunks = 0;
    for (int round = 0; round < 700; round++) {
        enum shape sh = (enum shape)(round % SHAPES);
        size_t n = round < 50 ? (size_t)round % 4 : 1 + (size_t)(cb_splitmix_next(&s) % 600);
        make_series(&s, sh, pts, n);
        for (size_t c = 0; c < 4; c++)
            if (!round_trips(pts, n, codecs[c])) {
                if (failures++ < 5)
                    fprintf(stderr, "\n  round %d shape %d n %zu codec %d fails", round, sh, n,
                            codecs[c]);
            }
        if (!auto_follows_the_choice(pts, n) && failures++ < 5)
            fprintf(stderr, "\n  round %d: AUTO is not the codec the choice names", round);
        uint8_t *blob;
        long len = encode(pts, n, CB_CHUNK_AUTO, &blob);
        if (len > 0 && blob[0] == CB_CHUNK_DECIMAL)
            decimal_chunks++;
        if (len > 0 && n > 0) {
            int64_t a = pts[cb_splitmix_next(&s) % n].ts_ms, b = pts[cb_splitmix_next(&s) % n].ts_ms;
            if (!range_matches(blob, (size_t)len, pts, n, a < b ? a : b, a < b ? b : a) &&
                failures++ < 5)
                fprintf(stderr, "\n  round %d: range read differs", round);
        }
        free(blob);
    }
    CU_ASSERT_EQUAL(failures, 0);
    CU_ASSERT(decimal_chunks > 200); /* the decimal shapes did take DECIMAL */
    free(pts);
}

/* ---- range reads, the iterator, damaged blobs ------------------------------------ */

/* A range read stops at the first ts >= to: the rest of the blob is never
 * read, so it may even be cut off. */
static void test_range_read_stops_at_its_end_without_reading_the_rest(void)
{
    struct cb_chunk_point pts[120], got[120];
    fill_river(pts, 120);
    for (size_t c = 0; c < 3; c++) {
        uint8_t *blob;
        long len = encode(pts, 120, codecs[c], &blob);
        CU_ASSERT_EQUAL(cb_chunk_decode_range(blob, (size_t)len, pts[10].ts_ms, pts[20].ts_ms,
                                              got, 120), 10);
        CU_ASSERT_EQUAL(got[0].ts_ms, pts[10].ts_ms);
        CU_ASSERT_EQUAL(got[9].ts_ms, pts[19].ts_ms);
        /* Half the blob: the first 20 samples still read; the whole does not. */
        CU_ASSERT_EQUAL(cb_chunk_decode_range(blob, (size_t)len / 2, pts[0].ts_ms, pts[20].ts_ms,
                                              got, 120), 20);
        CU_ASSERT_EQUAL(cb_chunk_decode(blob, (size_t)len / 2, got, 120), CB_CHUNK_ECORRUPT);
        /* a range before or after the chunk, an empty range */
        CU_ASSERT_EQUAL(cb_chunk_decode_range(blob, (size_t)len, 0, pts[0].ts_ms, got, 120), 0);
        CU_ASSERT_EQUAL(cb_chunk_decode_range(blob, (size_t)len, pts[119].ts_ms + 1, INT64_MAX,
                                              got, 120), 0);
        CU_ASSERT_EQUAL(cb_chunk_decode_range(blob, (size_t)len, pts[5].ts_ms, pts[5].ts_ms, got,
                                              120), 0);
        /* too small an output */
        CU_ASSERT_EQUAL(cb_chunk_decode(blob, (size_t)len, got, 119), CB_CHUNK_ESPACE);
        free(blob);
    }
}

static void test_iterator_gives_count_codec_and_samples_in_order(void)
{
    struct cb_chunk_point pts[50], p;
    fill_river(pts, 50);
    uint8_t *blob;
    long len = encode(pts, 50, CB_CHUNK_GORILLA, &blob);
    struct cb_chunk_iter it;
    CU_ASSERT_EQUAL(cb_chunk_iter_init(&it, blob, (size_t)len), 0);
    CU_ASSERT_EQUAL(cb_chunk_iter_codec(&it), CB_CHUNK_GORILLA);
    CU_ASSERT_EQUAL(cb_chunk_iter_count(&it), 50);
    for (size_t i = 0; i < 50; i++) {
        CU_ASSERT_EQUAL_FATAL(cb_chunk_iter_next(&it, &p), 1);
        CU_ASSERT_EQUAL(p.ts_ms, pts[i].ts_ms);
        CU_ASSERT(same_bits(p.value, pts[i].value));
    }
    CU_ASSERT_EQUAL(cb_chunk_iter_next(&it, &p), 0);
    CU_ASSERT_EQUAL(cb_chunk_iter_next(&it, &p), 0);
    free(blob);
}

/* Every prefix of a blob, the blob with a byte more, zeroed or unknown
 * codec bytes, an impossible count: all refused as corrupt, none read as
 * samples. */
static void test_damaged_blobs_are_refused_as_corrupt(void)
{
    struct cb_chunk_point pts[40], got[64];
    fill_river(pts, 40);
    pts[7].value = -0.0; /* so AUTO is not DECIMAL: test all three */
    for (size_t c = 0; c < 3; c++) {
        uint8_t *blob;
        long len = encode(pts, 40, codecs[c], &blob);
        if (codecs[c] == CB_CHUNK_DECIMAL) {
            free(blob);
            pts[7].value = 1.4;
            len = encode(pts, 40, codecs[c], &blob);
        }
        CU_ASSERT_FATAL(len > 0);
        for (long cut = 0; cut < len; cut++)
            if (cb_chunk_decode(blob, (size_t)cut, got, 64) != CB_CHUNK_ECORRUPT) {
                fprintf(stderr, "\n  codec %d: %ld of %ld bytes accepted", codecs[c], cut, len);
                CU_FAIL("a cut blob was accepted");
            }
        uint8_t *longer = malloc((size_t)len + 1);
        memcpy(longer, blob, (size_t)len);
        longer[len] = 0;
        CU_ASSERT_EQUAL(cb_chunk_decode(longer, (size_t)len + 1, got, 64), CB_CHUNK_ECORRUPT);
        free(longer);
        uint8_t saved = blob[0];
        const uint8_t wrong[] = {0, 4, 0x80, 0xff};
        for (size_t w = 0; w < sizeof wrong; w++) {
            blob[0] = wrong[w];
            CU_ASSERT_EQUAL(cb_chunk_decode(blob, (size_t)len, got, 64), CB_CHUNK_ECORRUPT);
        }
        blob[0] = saved;
        CU_ASSERT_EQUAL(cb_chunk_decode(blob, (size_t)len, got, 64), 40);
        free(blob);
    }
    /* a count beyond the maximum is refused by the header alone, so a
     * caller may size its output by cb_chunk_iter_count */
    const uint8_t too_many[] = {CB_CHUNK_RAW, 0x80, 0x80, 0x04}; /* n = 65536 */
    struct cb_chunk_iter it;
    CU_ASSERT_EQUAL(cb_chunk_iter_init(&it, too_many, sizeof too_many), CB_CHUNK_ECORRUPT);
    CU_ASSERT_EQUAL(cb_chunk_iter_next(&it, got), CB_CHUNK_ECORRUPT);
    const uint8_t empty[] = {CB_CHUNK_GORILLA, 0};
    CU_ASSERT_EQUAL(cb_chunk_decode(empty, sizeof empty, got, 64), 0);
    /* RAW with the second ts equal to the first, and with a NaN */
    struct cb_chunk_point two[2] = {{T0, 1.0}, {T0 + 1, 2.0}};
    uint8_t raw[64];
    long rl = cb_chunk_encode(two, 2, CB_CHUNK_RAW, raw, sizeof raw);
    CU_ASSERT_EQUAL(rl, 34);
    raw[2 + 16 + 7] -= 1; /* the second ts, lowest byte */
    CU_ASSERT_EQUAL(cb_chunk_decode(raw, (size_t)rl, got, 64), CB_CHUNK_ECORRUPT);
    raw[2 + 16 + 7] += 1;
    memset(raw + 2 + 16 + 8, 0xff, 8); /* the second value: a NaN */
    CU_ASSERT_EQUAL(cb_chunk_decode(raw, (size_t)rl, got, 64), CB_CHUNK_ECORRUPT);
}

/* cb_chunk_bound(n) holds the worst blob of every codec; one byte less than
 * a blob needs is ESPACE. */
static void test_bound_suffices_and_a_short_buffer_is_refused(void)
{
    enum { N = 200 };
    struct cb_chunk_point pts[N];
    uint64_t s = 99;
    int64_t ts = INT64_MIN;
    for (size_t i = 0; i < N; i++) {
        pts[i].value = cb_splitmix_finite(&s);
        pts[i].ts_ms = ts;
        ts += (int64_t)(cb_splitmix_next(&s) >> 9) + 1; /* dods beyond every small bucket */
    }
    for (size_t c = 0; c < 3; c++) {
        uint8_t *blob;
        long len = encode(pts, N, codecs[c], &blob);
        if (codecs[c] == CB_CHUNK_DECIMAL) {
            CU_ASSERT_EQUAL(len, CB_CHUNK_EUNFIT);
            free(blob);
            continue;
        }
        CU_ASSERT(len > 0 && (size_t)len <= cb_chunk_bound(N));
        CU_ASSERT_EQUAL(cb_chunk_encode(pts, N, codecs[c], blob, (size_t)len - 1),
                        CB_CHUNK_ESPACE);
        CU_ASSERT_EQUAL(cb_chunk_encode(pts, N, codecs[c], blob, (size_t)len), len);
        free(blob);
    }
    /* DECIMAL's worst: integers up to 2^53 jumping sign, ts gaps as above */
    for (size_t i = 0; i < N; i++)
        pts[i].value = (i % 2 ? -1.0 : 1.0) * (double)(cb_splitmix_next(&s) >> 11);
    uint8_t *blob;
    long len = encode(pts, N, CB_CHUNK_DECIMAL, &blob);
    CU_ASSERT(len > 0 && (size_t)len <= cb_chunk_bound(N));
    CU_ASSERT_EQUAL(cb_chunk_encode(pts, N, CB_CHUNK_DECIMAL, blob, (size_t)len - 1),
                    CB_CHUNK_ESPACE);
    CU_ASSERT_EQUAL(cb_chunk_encode(pts, N, CB_CHUNK_AUTO, blob, 10), CB_CHUNK_ESPACE);
    free(blob);
}

/* What the codec is for: sensor readings with few decimals take a fraction
 * of Gorilla's bytes; a steady counter and a constant series at a regular
 * rate about two bits a sample (plus a header of about 24 bytes). */
static void test_decimal_readings_take_a_fraction_of_gorilla(void)
{
    struct cb_chunk_point pts[120];
    fill_river(pts, 120);
    uint8_t *g, *d;
    long lg = encode(pts, 120, CB_CHUNK_GORILLA, &g), ld = encode(pts, 120, CB_CHUNK_DECIMAL, &d);
    CU_ASSERT(ld > 0 && ld * 2 < lg);
    CU_ASSERT(ld < 120 * 12 / 8); /* under 12 bits a sample (jittered ts, 3 decimals) */
    free(g);
    free(d);
    for (size_t i = 0; i < 120; i++)
        pts[i] = (struct cb_chunk_point){T0 + (int64_t)i * 5000, 1000.0 + 10.0 * (double)i};
    ld = encode(pts, 120, CB_CHUNK_DECIMAL, &d);
    CU_ASSERT(ld > 0 && ld <= 24 + 120 * 2 / 8); /* counter: deltas of deltas are 0 */
    free(d);
    for (size_t i = 0; i < 120; i++)
        pts[i].value = 21.5;
    ld = encode(pts, 120, CB_CHUNK_AUTO, &d);
    CU_ASSERT(ld > 0 && ld <= 24 + 120 * 2 / 8);
    free(d);
}

/* DECIMAL's header byte after the count (n < 128: one byte) holds the
 * order in its high nibble: the chunk's values are coded against the middle
 * of their range (0), as deltas (1) or as deltas of deltas (2), whichever
 * takes fewer bits. */
static void test_decimal_codes_noise_walks_and_counters_their_own_way(void)
{
    struct cb_chunk_point pts[120];
    uint64_t s = 5;
    double walk = 500.0;
    int want[3] = {0, 1, 2}, got[3];
    for (int shape = 0; shape < 3; shape++) {
        for (size_t i = 0; i < 120; i++) {
            walk += (double)(cb_splitmix_next(&s) % 7) - 3.0;
            double v = shape == 0 ? 1000.0 + (double)(cb_splitmix_next(&s) % 101) /* noise */
                       : shape == 1 ? walk                                /* a random walk */
                                    : 7.0 * (double)i;                    /* a counter */
            pts[i] = (struct cb_chunk_point){T0 + (int64_t)i * 1000, v / 10.0};
        }
        uint8_t *blob;
        CU_ASSERT(encode(pts, 120, CB_CHUNK_DECIMAL, &blob) > 0);
        CU_ASSERT_EQUAL(blob[2] & 15, 1); /* d = 1 */
        got[shape] = blob[2] >> 4;
        CU_ASSERT_EQUAL(got[shape], want[shape]);
        CU_ASSERT(round_trips(pts, 120, CB_CHUNK_DECIMAL));
        free(blob);
    }
}

void cb_test_suite_chunk(void);
void cb_test_suite_chunk(void)
{
    CU_pSuite s = CU_add_suite("chunk", NULL, NULL);
    CU_add_test(s, "chunk: every codec round-trips river levels exactly",
                test_every_codec_round_trips_river_levels);
    CU_add_test(s, "chunk: the first byte names the codec; AUTO encodes once: DECIMAL when the "
                   "values scale, else GORILLA, RAW when that would be longer",
                test_auto_picks_the_smallest_codec);
    CU_add_test(s, "chunk: the decimal scale is the smallest power of ten that reads back bit for bit",
                test_decimal_scale_is_the_smallest_exact_power_of_ten);
    CU_add_test(s, "chunk: -0.0, subnormals and huge values round-trip through the fallback",
                test_special_values_round_trip_through_the_fallback);
    CU_add_test(s, "chunk: equal or decreasing timestamps are refused, not merged",
                test_equal_or_decreasing_timestamps_are_refused);
    CU_add_test(s, "chunk: NaN and infinities are refused", test_nan_and_infinities_are_refused);
    CU_add_test(s, "chunk: an unknown codec and more than the maximum samples are refused",
                test_unknown_codec_and_too_many_samples_are_refused);
    CU_add_test(s, "chunk: INT64 extremes, negative timestamps and a gap of 2^64-1 round-trip",
                test_int64_extremes_and_negative_timestamps_round_trip);
    CU_add_test(s, "chunk: property: random and adversarial series round-trip bit for bit",
                test_property_random_and_adversarial_series_round_trip);
    CU_add_test(s, "chunk: a range read stops at its end without reading the rest",
                test_range_read_stops_at_its_end_without_reading_the_rest);
    CU_add_test(s, "chunk: the iterator gives the count, the codec and the samples in order",
                test_iterator_gives_count_codec_and_samples_in_order);
    CU_add_test(s, "chunk: cut, lengthened or mislabelled blobs are refused as corrupt",
                test_damaged_blobs_are_refused_as_corrupt);
    CU_add_test(s, "chunk: cb_chunk_bound suffices and a short buffer is refused",
                test_bound_suffices_and_a_short_buffer_is_refused);
    CU_add_test(s, "chunk: readings with few decimals take a fraction of Gorilla's bytes",
                test_decimal_readings_take_a_fraction_of_gorilla);
    CU_add_test(s, "chunk: DECIMAL codes noise against its middle, walks by deltas, counters by deltas of deltas",
                test_decimal_codes_noise_walks_and_counters_their_own_way);
}
