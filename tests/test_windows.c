/* Unit tests: sliding windows and aggregates against a naive reference, on
 * random data inserted partly out of order. */
#include "rules/rules_int.h"

#include <CUnit/CUnit.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

struct pt {
    int64_t ts;
    double v;
};

static uint64_t rng = 88172645463325252ull;
static double rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (double)(rng >> 11) / 9007199254740992.0;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* The naive value of aggregate agg over pts with ts in (now - w, now]. */
static double naive(const struct pt *pts, size_t n, int64_t now, int64_t w, int agg, double p)
{
    double vals[4096];
    int64_t ts[4096];
    size_t k = 0;
    /* in time order, stable for equal timestamps (insertion order) */
    for (size_t i = 0; i < n; i++)
        if (pts[i].ts > now - w) {
            size_t j = k++;
            while (j > 0 && ts[j - 1] > pts[i].ts) {
                ts[j] = ts[j - 1];
                vals[j] = vals[j - 1];
                j--;
            }
            ts[j] = pts[i].ts;
            vals[j] = pts[i].v;
        }
    if (!k)
        return NAN;
    double s = 0, mn = INFINITY, mx = -INFINITY;
    for (size_t i = 0; i < k; i++) {
        s += vals[i];
        mn = fmin(mn, vals[i]);
        mx = fmax(mx, vals[i]);
    }
    double m = s / k, var = 0;
    for (size_t i = 0; i < k; i++)
        var += (vals[i] - m) * (vals[i] - m);
    switch (agg) {
    case AGG_AVG: return m;
    case AGG_MIN: return mn;
    case AGG_MAX: return mx;
    case AGG_SUM: return s;
    case AGG_COUNT: return (double)k;
    case AGG_FIRST: return vals[0];
    case AGG_LAST: return vals[k - 1];
    case AGG_STDDEV: return sqrt(var / k);
    case AGG_DELTA: return vals[k - 1] - vals[0];
    case AGG_RATE: return k < 2 || ts[k - 1] == ts[0] ? NAN : (vals[k - 1] - vals[0]) / ((ts[k - 1] - ts[0]) / 1000.0);
    case AGG_PERCENTILE: {
        qsort(vals, k, sizeof *vals, cmp_d);
        double r = p / 100.0 * (k - 1);
        size_t lo = (size_t)floor(r);
        return lo + 1 >= k ? vals[lo] : vals[lo] + (vals[lo + 1] - vals[lo]) * (r - lo);
    }
    }
    return NAN;
}

static int close_enough(double a, double b)
{
    if (isnan(a) || isnan(b))
        return isnan(a) && isnan(b);
    return fabs(a - b) <= 1e-7 * fmax(1.0, fmax(fabs(a), fabs(b)));
}

static void test_against_reference(void)
{
    enum { N = 3000 };
    static struct pt pts[N];
    double scratch[4096];
    int64_t width = 60000, now = 1700000000000;
    struct rules__window *w = rules__window_new(width, WF_MINMAX | WF_MOMENTS);
    CU_ASSERT_PTR_NOT_NULL_FATAL(w);
    size_t n = 0, bad = 0;
    for (int i = 0; i < N; i++) {
        now += (int64_t)(rnd() * 900); /* ~ 130 samples in the window */
        int64_t ts = now;
        if (rnd() < 0.2)
            ts -= (int64_t)(rnd() * 20000); /* out of order within the window */
        double v = floor(rnd() * 1000) / 10.0 + 500;
        pts[n++] = (struct pt){ts, v};
        CU_ASSERT_EQUAL(rules__window_insert(w, ts, v, now), 0);
        if (i % 7)
            continue;
        rules__window_expire(w, now);
        for (int agg = AGG_AVG; agg <= AGG_PERCENTILE; agg++) {
            double p = agg == AGG_PERCENTILE ? floor(rnd() * 101) : 0;
            double got = rules__aggs[agg].value(w, p, scratch);
            double want = naive(pts, n, now, width, agg, p);
            if (!close_enough(got, want)) {
                if (bad++ < 5)
                    fprintf(stderr, "\n%s at %d: got %.17g want %.17g\n", rules__aggs[agg].name, i, got, want);
            }
        }
    }
    CU_ASSERT_EQUAL(bad, 0);
    CU_ASSERT(w->n < 400);
    rules__window_free(w);
}

static void test_expiry_edges(void)
{
    double s[8];
    struct rules__window *w = rules__window_new(5000, WF_MINMAX | WF_MOMENTS);
    rules__window_insert(w, 1000, 1.0, 1000);
    rules__window_insert(w, 3000, 5.0, 3000);
    rules__window_expire(w, 6000); /* (1000, 6000]: the sample at 1000 is out */
    CU_ASSERT_EQUAL(w->n, 1);
    CU_ASSERT_DOUBLE_EQUAL(rules__aggs[AGG_AVG].value(w, 0, s), 5.0, 1e-12);
    CU_ASSERT_DOUBLE_EQUAL(rules__aggs[AGG_MIN].value(w, 0, s), 5.0, 1e-12);
    rules__window_expire(w, 8000);
    CU_ASSERT_EQUAL(w->n, 0);
    CU_ASSERT(isnan(rules__aggs[AGG_AVG].value(w, 0, s)));   /* empty window: no value */
    CU_ASSERT(isnan(rules__aggs[AGG_COUNT].value(w, 0, s)));
    CU_ASSERT(isnan(rules__aggs[AGG_MAX].value(w, 0, s)));
    /* a sample already outside the window is not kept */
    rules__window_insert(w, 2000, 9.0, 8000);
    CU_ASSERT_EQUAL(w->n, 0);
    rules__window_free(w);
}

static void test_rate_and_delta(void)
{
    double s[8];
    struct rules__window *w = rules__window_new(600000, 0);
    rules__window_insert(w, 0, 2.0, 0);
    CU_ASSERT(isnan(rules__aggs[AGG_RATE].value(w, 0, s))); /* one sample: no rate */
    CU_ASSERT_DOUBLE_EQUAL(rules__aggs[AGG_DELTA].value(w, 0, s), 0.0, 1e-12);
    rules__window_insert(w, 100000, 3.0, 100000);
    CU_ASSERT_DOUBLE_EQUAL(rules__aggs[AGG_RATE].value(w, 0, s), 0.01, 1e-12);
    CU_ASSERT_DOUBLE_EQUAL(rules__aggs[AGG_DELTA].value(w, 0, s), 1.0, 1e-12);
    rules__window_free(w);
}

static void test_flags_added_later(void)
{
    double s[8];
    struct rules__window *w = rules__window_new(60000, 0);
    for (int i = 0; i < 50; i++)
        rules__window_insert(w, i * 100, (double)((i * 37) % 50), i * 100);
    CU_ASSERT_EQUAL(rules__window_add_flags(w, WF_MINMAX | WF_MOMENTS), 0);
    CU_ASSERT_DOUBLE_EQUAL(rules__aggs[AGG_MIN].value(w, 0, s), 0.0, 1e-12);
    CU_ASSERT_DOUBLE_EQUAL(rules__aggs[AGG_MAX].value(w, 0, s), 49.0, 1e-12);
    CU_ASSERT_DOUBLE_EQUAL(rules__aggs[AGG_SUM].value(w, 0, s), 1225.0, 1e-9);
    rules__window_free(w);
}

/* The whole ring is resident once allocated, not only the part the head
 * has reached: otherwise RSS creeps up for half an hour after a 30-minute
 * window is full and cannot be told from a leak. */
static void test_ring_resident_when_grown(void)
{
    struct rules__window *w = rules__window_new(INT64_C(3600000000), 0);
    uint32_t i = 0;
    for (; i < 200000; i++) /* grows past malloc's mmap threshold */
        CU_ASSERT_EQUAL_FATAL(rules__window_insert(w, i, (double)i, i), 0);
    while (w->n < w->cap) /* the growth that leaves free slots is the latest */
        rules__window_insert(w, i, (double)i, i), i++;
    rules__window_insert(w, i, (double)i, i);
    CU_ASSERT_FATAL(w->n < w->cap);
    long page = sysconf(_SC_PAGESIZE);
    uintptr_t start = (uintptr_t)w->buf & ~(uintptr_t)(page - 1);
    uintptr_t end = (uintptr_t)(w->buf + w->cap);
    size_t pages = (end - start + (size_t)page - 1) / (size_t)page;
    unsigned char *vec = malloc(pages);
    CU_ASSERT_EQUAL_FATAL(mincore((void *)start, end - start, vec), 0);
    size_t resident = 0;
    for (size_t p = 0; p < pages; p++)
        resident += vec[p] & 1;
    CU_ASSERT_EQUAL(resident, pages);
    free(vec);
    rules__window_free(w);
}

static void test_memory_per_sample(void)
{
    /* noisy data (a monotonic run is the deques' worst case: 24 bytes of
     * deque per sample on top of the ring) */
    struct rules__window *w = rules__window_new(3600000, WF_MINMAX | WF_MOMENTS);
    for (int i = 0; i < 4000; i++)
        rules__window_insert(w, i * 1000, rnd(), i * 1000);
    CU_ASSERT_EQUAL(w->n, 4000);
    CU_ASSERT(rules__window_bytes(w) <= 24 * 4000 + sizeof *w);
    rules__window_free(w);
}

void cb_test_suite_windows(void);
void cb_test_suite_windows(void)
{
    CU_pSuite s = CU_add_suite("windows", NULL, NULL);
    CU_add_test(s, "window: every aggregate equals the naive reference on random out-of-order data", test_against_reference);
    CU_add_test(s, "window: samples at or before now - width leave; an empty window has no value", test_expiry_edges);
    CU_add_test(s, "window: rate is delta per second between first and last sample", test_rate_and_delta);
    CU_add_test(s, "window: a grown ring is resident at once, free slots included",
                test_ring_resident_when_grown);
    CU_add_test(s, "window: min/max added to a filled window are rebuilt", test_flags_added_later);
    CU_add_test(s, "window: at most 24 bytes per held sample with min/max on noisy data", test_memory_per_sample);
}
