/* Unit tests: the PromQL subset's parser and evaluator (api/promql.h) over
 * series held in memory. The integration suite (itest_promql) compares the
 * same constructs with Prometheus itself; these pin down the rules one by
 * one with values worked out by hand. */
#include "api/promql.h"
#include "base/clock.h"
#include "base/config.h"
#include "storage/storage.h"
#include "tests/support/store_fixture.h"

#include <CUnit/CUnit.h>
#include <stdint.h>
#include <stdlib.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

void cb_test_suite_promql(void);

/* ---- an in-memory source ---- */

struct mem_series {
    struct promql_label lab[4];
    size_t nlab;
    struct promql_sample s[16];
    size_t n;
};

struct mem {
    struct mem_series *v;
    size_t n;
};

static int mem_each(void *ctx, promql_series_fn fn, void *fctx, char *err, size_t errlen)
{
    (void)err;
    (void)errlen;
    struct mem *m = ctx;
    for (size_t i = 0; i < m->n; i++) {
        promql_labels_sort(m->v[i].lab, m->v[i].nlab);
        struct promql_labels l = {m->v[i].lab, m->v[i].nlab};
        if (fn(fctx, &l, &m->v[i]))
            break;
    }
    return 0;
}

static int mem_samples(void *ctx, const void *ref, int64_t from, int64_t to, promql_sample_fn fn,
                       void *fctx, char *err, size_t errlen)
{
    (void)ctx;
    (void)err;
    (void)errlen;
    const struct mem_series *s = ref;
    for (size_t i = 0; i < s->n; i++)
        if (s->s[i].t >= from && s->s[i].t <= to && fn(fctx, s->s[i].t, s->s[i].v))
            break;
    return 0;
}

/* A counter sampled at 5, 15, ... 55 s with the given six values. */
static struct mem_series counter(const char *name, const char *topic, const double v[6])
{
    struct mem_series s = {.lab = {{"__name__", name}, {"topic", topic}}, .nlab = 2, .n = 6};
    for (int i = 0; i < 6; i++)
        s.s[i] = (struct promql_sample){5000 + i * 10000, v[i]};
    return s;
}

/* Evaluates expr as an instant query at t_ms; returns 0 and fills res, or -1
 * with the message in err. */
static int instant(struct mem *m, const char *expr, int64_t t_ms, struct promql_result *res,
                   char *err, size_t errlen)
{
    struct promql_query q;
    if (promql_parse(expr, strlen(expr), &q, err, errlen))
        return -1;
    struct promql_source src = {m, mem_each, mem_samples, NULL, 0};
    const char *kind;
    int rc = promql_eval(&q, &src, t_ms, t_ms, 1, 0, res, err, errlen, &kind);
    promql_query_free(&q);
    return rc;
}

/* The single value expr gives at t_ms (a scalar, or a vector of one element). */
static double one_value(struct mem *m, const char *expr, int64_t t_ms)
{
    struct promql_result r;
    char err[256];
    if (instant(m, expr, t_ms, &r, err, sizeof err)) {
        fprintf(stderr, "\n%s: %s\n", expr, err);
        return -12345;
    }
    double v = r.type == PQ_T_SCALAR ? r.scalar : r.n == 1 ? r.series[0].pts[0].v : -12345;
    promql_result_free(&r);
    return v;
}

/* The parse error of expr ("" when it parses). */
static const char *parse_error(const char *expr)
{
    static char err[256];
    struct promql_query q;
    if (promql_parse(expr, strlen(expr), &q, err, sizeof err))
        return err;
    promql_query_free(&q);
    return "";
}

#define NEAR(a, b) CU_ASSERT_DOUBLE_EQUAL((a), (b), 1e-12)

static void test_unsupported_named_with_column(void)
{
    CU_ASSERT_STRING_EQUAL(parse_error("histogram_quantile(0.9, x)"),
                           "1:1: unsupported: function \"histogram_quantile\"");
    CU_ASSERT_STRING_EQUAL(parse_error("a and b"), "1:3: unsupported: the set operator \"and\"");
    CU_ASSERT_STRING_EQUAL(parse_error("a / on(x) b"),
                           "1:5: unsupported: vector matching with \"on\"");
    CU_ASSERT_STRING_EQUAL(parse_error("rate(a[5m:1m])"),
                           "1:10: unsupported: subqueries ([range:step])");
    CU_ASSERT_STRING_EQUAL(parse_error("a @ 100"), "1:3: unsupported: the @ modifier");
    CU_ASSERT_STRING_EQUAL(parse_error("stddev(a)"), "1:1: unsupported: aggregation \"stddev\"");
    CU_ASSERT_STRING_EQUAL(parse_error("1 > 2"),
                           "1:3: parse error: comparisons between scalars must use BOOL modifier");
    CU_ASSERT_STRING_EQUAL(parse_error("rate(a)"),
                           "1:6: parse error: expected type range vector in call to function "
                           "\"rate\"");
    CU_ASSERT_STRING_EQUAL(parse_error("{a=\"\"}"),
                           "1:1: parse error: vector selector must contain at least one "
                           "non-empty matcher");
    static const char bad_re[] = "1:3: parse error: invalid regular expression \"(\": ";
    CU_ASSERT_EQUAL(strncmp(parse_error("a{b=~\"(\"}"), bad_re, sizeof bad_re - 1), 0);
    CU_ASSERT_STRING_EQUAL(parse_error("sum(a) by (x) + a{b=\"c\"}[5m] offset 1h"),
                           "1:15: parse error: binary expression must contain only scalar and "
                           "instant vector types");
    CU_ASSERT_STRING_EQUAL(parse_error(""), "1:1: parse error: no expression found in input");
}

static void test_precedence_from_one_table(void)
{
    struct mem m = {0};
    NEAR(one_value(&m, "2 + 3 * 2 ^ 2", 0), 14);
    NEAR(one_value(&m, "-2 ^ 2", 0), -4);
    NEAR(one_value(&m, "2 ^ 3 ^ 2", 0), 512); /* right-associative */
    NEAR(one_value(&m, "10 - 4 - 3", 0), 3);  /* left-associative */
    NEAR(one_value(&m, "7 % 4 * 2", 0), 6);
    NEAR(one_value(&m, "1 + 2 > bool 2", 0), 1);
}

/* Counter 0..50 sampled 5 s after the window opens and 5 s before it ends:
 * Prometheus extrapolates to both ends (60 s over 50 s sampled), except that
 * a counter is not taken below zero: from 0 it extrapolates only to the
 * end, 55 s. */
static void test_rate_extrapolates_as_prometheus(void)
{
    static const double v[6] = {0, 10, 20, 30, 40, 50};
    struct mem_series s = counter("c", "t/1", v);
    struct mem m = {&s, 1};
    NEAR(one_value(&m, "increase(c[1m])", 60000), 55);
    NEAR(one_value(&m, "rate(c[1m])", 60000), 55.0 / 60);
    NEAR(one_value(&m, "delta(c[1m])", 60000), 60);
    /* first and last samples far from the ends (more than 1.1 intervals):
     * half an interval on each side, 50 + 10 over 50 sampled */
    static const double w[6] = {100, 110, 120, 130, 140, 150};
    struct mem_series s2 = counter("c", "t/1", w);
    struct mem m2 = {&s2, 1};
    NEAR(one_value(&m2, "increase(c[2m])", 90000), 60);
    /* one sample only: no value */
    NEAR(one_value(&m2, "increase(c[5s])", 5000), -12345);
}

static void test_rate_adds_back_counter_resets(void)
{
    static const double v[6] = {0, 10, 20, 5, 15, 25};
    struct mem_series s = counter("c", "t/1", v);
    struct mem m = {&s, 1};
    /* 25 - 0 + 20 (the value before the reset), extrapolated by 55/50 */
    NEAR(one_value(&m, "increase(c[1m])", 60000), 45 * 1.1);
    /* delta does not know resets */
    NEAR(one_value(&m, "delta(c[1m])", 60000), 25 * 1.2);
}

static void test_selector_looks_back_five_minutes_inclusive(void)
{
    static const double v[6] = {1, 2, 3, 4, 5, 6};
    struct mem_series s = counter("g", "t/1", v);
    struct mem m = {&s, 1};
    NEAR(one_value(&m, "g", 55000), 6);
    NEAR(one_value(&m, "g", 55000 + 300000), 6);   /* exactly 5 minutes later */
    NEAR(one_value(&m, "g", 55001 + 300000), -12345); /* gone */
    NEAR(one_value(&m, "g offset 1m", 75000), 2);
    NEAR(one_value(&m, "count_over_time(g[20s])", 45000), 3); /* 25, 35, 45: both ends in */
    NEAR(one_value(&m, "quantile_over_time(0.5, g[1m])", 60000), 3.5);
    double q2 = one_value(&m, "quantile_over_time(2, g[1m])", 60000);
    CU_ASSERT(isinf(q2) && q2 > 0);
    NEAR(one_value(&m, "avg_over_time(g[1m])", 60000), 3.5);
    NEAR(one_value(&m, "last_over_time(g[1m])", 60000), 6);
}

static void test_aggregation_labels(void)
{
    static const double v[6] = {1, 2, 3, 4, 5, 6};
    struct mem_series s[3] = {counter("g", "a/1", v), counter("g", "a/2", v), counter("g", "b/1", v)};
    s[0].lab[2] = (struct promql_label){"district", "d1"};
    s[1].lab[2] = (struct promql_label){"district", "d1"};
    s[2].lab[2] = (struct promql_label){"district", "d2"};
    s[0].nlab = s[1].nlab = s[2].nlab = 3;
    s[1].s[5].v = 10;
    struct mem m = {s, 3};
    struct promql_result r;
    char err[256];
    CU_ASSERT_EQUAL_FATAL(instant(&m, "sum by (district) (g)", 55000, &r, err, sizeof err), 0);
    CU_ASSERT_EQUAL_FATAL(r.n, 2);
    CU_ASSERT_EQUAL(r.series[0].labels.n, 1);
    CU_ASSERT_STRING_EQUAL(r.series[0].labels.v[0].value, "d1");
    NEAR(r.series[0].pts[0].v, 16);
    promql_result_free(&r);
    CU_ASSERT_EQUAL_FATAL(instant(&m, "max without (topic) (g)", 55000, &r, err, sizeof err), 0);
    CU_ASSERT_EQUAL_FATAL(r.n, 2);
    CU_ASSERT_EQUAL(r.series[0].labels.n, 1); /* no __name__, no topic */
    NEAR(r.series[0].pts[0].v, 10);
    promql_result_free(&r);
    CU_ASSERT_EQUAL_FATAL(instant(&m, "topk(1, g)", 55000, &r, err, sizeof err), 0);
    CU_ASSERT_EQUAL_FATAL(r.n, 1);
    CU_ASSERT_STRING_EQUAL(promql_label_get(&r.series[0].labels, "topic"), "a/2");
    CU_ASSERT_STRING_EQUAL(promql_label_get(&r.series[0].labels, "__name__"), "g");
    promql_result_free(&r);
    NEAR(one_value(&m, "count(g{topic=~\"a/.\"})", 55000), 2);
    NEAR(one_value(&m, "count(g{topic=~\"a\"})", 55000), -12345); /* anchored: no match */
    NEAR(one_value(&m, "avg(g{topic!~\"a.*\"})", 55000), 6);
}

static void test_vector_matching_ignores_name(void)
{
    static const double v[6] = {1, 2, 3, 4, 5, 6};
    struct mem_series s[3] = {counter("a", "t/1", v), counter("b", "t/1", v), counter("b", "t/2", v)};
    struct mem m = {s, 3};
    struct promql_result r;
    char err[256];
    CU_ASSERT_EQUAL_FATAL(instant(&m, "a + b", 55000, &r, err, sizeof err), 0);
    CU_ASSERT_EQUAL_FATAL(r.n, 1);
    CU_ASSERT_STRING_EQUAL(promql_label_get(&r.series[0].labels, "__name__"), "");
    NEAR(r.series[0].pts[0].v, 12);
    promql_result_free(&r);
    /* comparison without bool keeps the name and the left value */
    CU_ASSERT_EQUAL_FATAL(instant(&m, "a >= b", 55000, &r, err, sizeof err), 0);
    CU_ASSERT_EQUAL_FATAL(r.n, 1);
    CU_ASSERT_STRING_EQUAL(promql_label_get(&r.series[0].labels, "__name__"), "a");
    promql_result_free(&r);
    /* two series of the same labels once the name is gone */
    CU_ASSERT_EQUAL(instant(&m, "rate({__name__=~\"a|b\"}[1m])", 60000, &r, err, sizeof err), -1);
    CU_ASSERT_STRING_EQUAL(err, "vector cannot contain metrics with the same labelset");
    CU_ASSERT_EQUAL(instant(&m, "b + on_purpose_not_there", 55000, &r, err, sizeof err), 0);
    CU_ASSERT_EQUAL(r.n, 0);
    promql_result_free(&r);
}

static void test_names_map_to_prometheus_names(void)
{
    char out[64];
    CU_ASSERT_STRING_EQUAL(promql_sanitize_name("pm2.5", 5, 1, out, sizeof out), "pm2_5");
    CU_ASSERT_STRING_EQUAL(promql_sanitize_name("2nd-level", 9, 1, out, sizeof out),
                           "_2nd_level");
    CU_ASSERT_STRING_EQUAL(promql_sanitize_name("a:b", 3, 1, out, sizeof out), "a:b");
    CU_ASSERT_STRING_EQUAL(promql_sanitize_name("a:b", 3, 0, out, sizeof out), "a_b");
    CU_ASSERT_STRING_EQUAL(promql_sanitize_name("温度", strlen("温度"), 1, out, sizeof out),
                           "______");
    CU_ASSERT_STRING_EQUAL(promql_sanitize_name("", 0, 1, out, sizeof out), "_");
}

static void test_values_written_as_prometheus(void)
{
    char b[400];
    static const struct {
        double v;
        const char *text;
    } cases[] = {{1, "1"},           {0.1, "0.1"},       {1e-7, "0.0000001"},
                 {1e21, "1000000000000000000000"},       {-2.5, "-2.5"},
                 {1.0 / 3, "0.3333333333333333"},        {123456.789, "123456.789"}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        promql_format_value(cases[i].v, b, sizeof b);
        CU_ASSERT_STRING_EQUAL(b, cases[i].text);
    }
    promql_format_value(INFINITY, b, sizeof b);
    CU_ASSERT_STRING_EQUAL(b, "+Inf");
    promql_format_value(-INFINITY, b, sizeof b);
    CU_ASSERT_STRING_EQUAL(b, "-Inf");
    promql_format_value(NAN, b, sizeof b);
    CU_ASSERT_STRING_EQUAL(b, "NaN");
}

/* ---- the rollup tiers, over the real store on a temporary file ---- */

/* A source over a store reader: the series `topics` (metric "v" as "g", or
 * "c"), raw samples through cb_store_query_raw, rows (when `tiers`) through
 * cb_store_query_rows; counts what it read. */
struct store_src {
    struct cb_store_reader *r;
    int tiers;
    size_t samples_read, rows_read;
    struct mem_series ser[2];
    const char *metric[2];
    size_t n;
};

struct count_fwd {
    struct store_src *s;
    promql_sample_fn fn;
    promql_row_fn rfn;
    void *fctx;
};

static int fwd_sample(void *ctx, const char *topic, const char *metric, int64_t ts, double v)
{
    (void)topic;
    (void)metric;
    struct count_fwd *c = ctx;
    c->s->samples_read++;
    return c->fn(c->fctx, ts, v);
}

static int fwd_row(void *ctx, const struct cb_tier_row *r)
{
    struct count_fwd *c = ctx;
    c->s->rows_read++;
    return c->rfn(c->fctx, r);
}

static int st_each(void *ctx, promql_series_fn fn, void *fctx, char *err, size_t errlen)
{
    struct store_src *s = ctx;
    (void)err;
    (void)errlen;
    for (size_t i = 0; i < s->n; i++) {
        struct promql_labels l = {s->ser[i].lab, s->ser[i].nlab};
        if (fn(fctx, &l, (const void *)(uintptr_t)i))
            break;
    }
    return 0;
}

static int st_samples(void *ctx, const void *ref, int64_t from, int64_t to, promql_sample_fn fn,
                      void *fctx, char *err, size_t errlen)
{
    struct store_src *s = ctx;
    size_t i = (uintptr_t)ref;
    struct count_fwd c = {s, fn, NULL, fctx};
    if (cb_store_query_raw(s->r, s->ser[i].lab[1].value, s->metric[i], from, to + 1, fwd_sample,
                           &c) < 0) {
        snprintf(err, errlen, "%s", cb_store_reader_error(s->r));
        return -1;
    }
    return 0;
}

static int st_rows(void *ctx, const void *ref, int64_t from, int64_t to, promql_row_fn fn,
                   void *fctx, int64_t *raw_first, char *err, size_t errlen)
{
    struct store_src *s = ctx;
    size_t i = (uintptr_t)ref;
    struct count_fwd c = {s, NULL, fn, fctx};
    if (cb_store_query_rows(s->r, s->ser[i].lab[1].value, s->metric[i], from, to + 1, fwd_row,
                            &c, raw_first) < 0) {
        snprintf(err, errlen, "%s", cb_store_reader_error(s->r));
        return -1;
    }
    return 0;
}

static char tdir[64], tdb[128];
static struct cb_config tcfg;

/* A store on a temporary file with retention `raw_ms` (0: forever). */
static struct cb_store *tstore_open(int64_t raw_ms)
{
    strcpy(tdir, "/tmp/cbpromql.XXXXXX");
    CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(tdir));
    snprintf(tdb, sizeof tdb, "%s/city.db", tdir);
    CU_ASSERT_EQUAL_FATAL(cb_config_defaults(&tcfg), 0);
    free(tcfg.storage_db);
    tcfg.storage_db = strdup(tdb);
    tcfg.storage_commit_interval_ms = 60000;
    tcfg.storage_retention_interval_ms = 24 * 3600 * 1000LL;
    tcfg.storage_retention_raw_ms = raw_ms;
    char err[256] = "";
    struct cb_store *st = cb_store_open(&tcfg, NULL, err, sizeof err);
    if (!st)
        fprintf(stderr, "open: %s\n", err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(st);
    return st;
}

/* Closes the store (which derives every rollup), then, with `now`, reopens
 * it and runs retention to its end; returns a reader on the file. */
static struct cb_store_reader *tstore_settle(struct cb_store *st, int64_t now)
{
    CU_ASSERT_EQUAL(cb_store_flush(st), 0);
    cb_store_close(st);
    if (now) {
        char err[256] = "";
        st = cb_store_open(&tcfg, NULL, err, sizeof err);
        CU_ASSERT_PTR_NOT_NULL_FATAL(st);
        struct cb_clock clk = {cb_clock_manual_now, &now};
        cb_store_set_clock(st, &clk);
        uint64_t deleted;
        int more = 1;
        while (more)
            CU_ASSERT_EQUAL_FATAL(cb_store_retention_step(st, &deleted, &more), 0);
        cb_store_close(st);
    }
    char err[256] = "";
    struct cb_store_reader *r = cb_store_reader_open(tdb, err, sizeof err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    return r;
}

static void tstore_done(struct cb_store_reader *r)
{
    cb_store_reader_close(r);
    cb_config_free(&tcfg);
    cb_t_remove_dir(tdir);
}

static void tput(struct cb_store *st, const char *topic, const char *metric, int64_t ts, double v)
{
    struct cb_sample smp = {metric, ts, v};
    CU_ASSERT_EQUAL(cb_store_append(st, topic, NULL, &smp, 1, 0), 0);
}

static void store_src_init(struct store_src *s, struct cb_store_reader *r, int tiers)
{
    memset(s, 0, sizeof *s);
    s->r = r;
    s->tiers = tiers;
    s->ser[0] = (struct mem_series){.lab = {{"__name__", "g"}, {"topic", "t/g"}}, .nlab = 2};
    s->ser[1] = (struct mem_series){.lab = {{"__name__", "c"}, {"topic", "t/c"}}, .nlab = 2};
    s->metric[0] = s->metric[1] = "v";
    s->n = 2;
}

/* Runs expr over [start, end] by step on src; fills res. */
static int range_eval(struct store_src *s, const char *expr, int64_t start, int64_t end,
                      int64_t step, struct promql_result *res)
{
    struct promql_query q;
    char err[256];
    const char *kind;
    struct promql_source src = {s, st_each, st_samples, s->tiers ? st_rows : NULL, 0};
    if (promql_parse(expr, strlen(expr), &q, err, sizeof err)) {
        fprintf(stderr, "\n%s: %s\n", expr, err);
        return -1;
    }
    int rc = promql_eval(&q, &src, start, end, step, 1, res, err, sizeof err, &kind);
    if (rc)
        fprintf(stderr, "\n%s: %s\n", expr, err);
    promql_query_free(&q);
    return rc;
}

/* Two hours of a gauge and a counter (with resets), every 10 s with up to
 * 3 s of jitter and a sample on each whole minute; returns the reader. */
static struct cb_store_reader *two_hours(int64_t base)
{
    struct cb_store *st = tstore_open(0);
    uint64_t x = 7;
    double c = 0;
    for (int64_t ts = base; ts < base + 2 * 3600000; ts += 10000) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        int64_t t = ts % 60000 == 0 ? ts : ts + (int64_t)((x >> 33) % 3000);
        c = (x >> 40) % 41 == 0 ? (double)((x >> 20) % 5) : c + (double)((x >> 24) % 30);
        tput(st, "t/g", "v", t, (double)((x >> 28) % 100000) / 100.0);
        tput(st, "t/c", "v", t, c);
    }
    return tstore_settle(st, 0);
}

/* Within raw retention, at whole-minute steps, a plain selector, delta and
 * every *_over_time but quantile read rows only, and every point equals the
 * raw samples' answer; rate, increase, quantile_over_time and a step of 30 s
 * read the raw samples. */
static void test_whole_minute_steps_read_the_tier(void)
{
    int64_t base = 1732399200000LL; /* an hour boundary */
    struct cb_store_reader *r = two_hours(base);
    static const struct {
        const char *expr;
        int64_t step;
        int tier;
    } cases[] = {
        {"g", 60000, 1},
        {"g offset 3m", 120000, 1},
        {"delta(g[5m])", 60000, 1},
        {"avg_over_time(g[5m])", 60000, 1},
        {"min_over_time(g[10m])", 60000, 1},
        {"max_over_time(g[1h])", 60000, 1},
        {"sum_over_time(g[7m])", 60000, 1},
        {"count_over_time(c[2m])", 60000, 1},
        {"last_over_time(c[3m])", 60000, 1},
        {"rate(c[5m])", 60000, 0},
        {"increase(c[10m])", 60000, 0},
        {"quantile_over_time(0.5, g[5m])", 60000, 0},
        {"avg_over_time(g[5m])", 30000, 0},
        {"g", 45000, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct store_src raw, tier;
        store_src_init(&raw, r, 0);
        store_src_init(&tier, r, 1);
        struct promql_result a, b;
        int64_t start = base + 20 * 60000, end = base + 2 * 3600000 - 60000;
        CU_ASSERT_EQUAL_FATAL(range_eval(&raw, cases[i].expr, start, end, cases[i].step, &a), 0);
        CU_ASSERT_EQUAL_FATAL(range_eval(&tier, cases[i].expr, start, end, cases[i].step, &b), 0);
        CU_ASSERT_EQUAL(tier.samples_read == 0, cases[i].tier);
        CU_ASSERT_EQUAL(tier.rows_read > 0, cases[i].tier);
        CU_ASSERT_EQUAL(b.nwarnings, 0);
        CU_ASSERT_EQUAL_FATAL(a.n, b.n);
        size_t diffs = 0, pts = 0;
        for (size_t k = 0; k < a.n; k++) {
            CU_ASSERT_EQUAL_FATAL(a.series[k].n, b.series[k].n);
            for (size_t j = 0; j < a.series[k].n; j++, pts++) {
                double x = a.series[k].pts[j].v, y = b.series[k].pts[j].v;
                diffs += a.series[k].pts[j].t != b.series[k].pts[j].t ||
                         fabs(x - y) > 1e-9 * fmax(fabs(x), fabs(y));
            }
        }
        if (diffs)
            fprintf(stderr, "\n%s: %zu of %zu points differ\n", cases[i].expr, diffs, pts);
        CU_ASSERT_EQUAL(diffs, 0);
        CU_ASSERT(pts >= 50);
        promql_result_free(&a);
        promql_result_free(&b);
    }
    tstore_done(r);
}

/* A Grafana panel over 30 days at a 1-hour step on a store whose raw
 * samples of all but the last 7 days are gone: every hour has its value,
 * from the 1-minute tier, and the answer warns which part came from there. */
static void test_thirty_days_past_raw_retention_answer_from_the_tiers(void)
{
    int64_t base = 1732399200000LL, day = 24 * 3600000LL;
    struct cb_store *st = tstore_open(7 * day);
    for (int64_t ts = base; ts <= base + 30 * day; ts += 300000) {
        tput(st, "t/g", "v", ts, (double)(ts / 300000 % 1000));
        tput(st, "t/c", "v", ts, (double)(ts - base) / 300000); /* +1 every 5 min */
        if (ts % (1000 * 300000LL) == 0)
            CU_ASSERT_EQUAL(cb_store_flush(st), 0);
    }
    struct cb_store_reader *r = tstore_settle(st, base + 30 * day + 60000);
    static const char *const exprs[] = {"g", "avg_over_time(g[1h])", "increase(c[1h])"};
    for (size_t i = 0; i < 3; i++) {
        struct store_src tier;
        store_src_init(&tier, r, 1);
        struct promql_result res;
        CU_ASSERT_EQUAL_FATAL(range_eval(&tier, exprs[i], base + 3600000, base + 30 * day,
                                         3600000, &res), 0);
        CU_ASSERT_EQUAL_FATAL(res.n, 1);
        CU_ASSERT_EQUAL(res.series[0].n, (size_t)(30 * 24));
        int right = 1;
        for (size_t k = 0; k < res.series[0].n; k++) {
            int64_t t = res.series[0].pts[k].t;
            /* 13 samples in each hour's window, both ends in */
            double want = i == 0   ? (double)(t / 300000 % 1000)
                          : i == 1 ? (double)((t / 300000 - 6) % 1000)
                                   : 12;
            if (i == 1 && (t / 300000) % 1000 < 12)
                want = res.series[0].pts[k].v; /* where the sawtooth wraps: not checked */
            right &= fabs(res.series[0].pts[k].v - want) < 1e-9;
        }
        CU_ASSERT(right);
        CU_ASSERT(res.nwarnings >= 1);
        CU_ASSERT(res.nwarnings >= 1 && strstr(res.warnings[0], "past raw retention") != NULL);
        CU_ASSERT_EQUAL(res.nwarnings, i == 2 ? 2 : 1); /* increase: approximated */
        promql_result_free(&res);
    }
    /* quantile_over_time needs every value: a value only where raw samples are, and says so */
    struct store_src tier;
    store_src_init(&tier, r, 1);
    struct promql_result res;
    CU_ASSERT_EQUAL_FATAL(range_eval(&tier, "quantile_over_time(0.5, g[1h])", base + 3600000,
                                     base + 30 * day, 3600000, &res), 0);
    CU_ASSERT_EQUAL_FATAL(res.n, 1);
    CU_ASSERT(res.series[0].n <= (size_t)(7 * 24));
    CU_ASSERT(res.series[0].n >= (size_t)(7 * 24 - 2));
    CU_ASSERT_EQUAL_FATAL(res.nwarnings, 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(res.warnings[0], "quantile_over_time has no value where raw "
                                                   "samples are past raw retention"));
    promql_result_free(&res);
    tstore_done(r);
}

/* increase past raw retention: a reset between two rows (the next row's
 * first below the last one's last) is added back as between samples; one
 * inside a row when a later value falls below the row's first (the row's
 * max taken as the value before it); a reset after which the counter stays
 * at or above the row's first is missed. */
static void test_increase_past_retention_sees_resets_as_far_as_rows_show(void)
{
    int64_t base = 1732399200000LL, day = 24 * 3600000LL;
    struct cb_store *st = tstore_open(7 * day);
    static const double minute[4][4] = {{10, 20, 30, -1}, /* 30 -> 5 between rows: seen */
                                        {5, 15, -1, -1},
                                        {40, 2, 8, -1},    /* 40 -> 2 inside, below first: seen */
                                        {50, 100, 60, 70}}; /* 100 -> 60 inside: missed */
    for (int m = 0; m < 4; m++)
        for (int k = 0; k < 4 && minute[m][k] >= 0; k++)
            tput(st, "t/c", "v", base + m * 60000 + k * 15000, minute[m][k]);
    struct cb_store_reader *before = tstore_settle(st, 0);
    struct store_src raw;
    store_src_init(&raw, before, 0);
    struct promql_result a, b;
    int64_t t = base + 4 * 60000;
    CU_ASSERT_EQUAL_FATAL(range_eval(&raw, "increase(c[4m])", t, t, 60000, &a), 0);
    cb_store_reader_close(before);
    /* the same file, 8 days on: raw retention takes every sample */
    char err[256] = "";
    st = cb_store_open(&tcfg, NULL, err, sizeof err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(st);
    struct cb_store_reader *r = tstore_settle(st, base + 8 * day);
    struct store_src tier;
    store_src_init(&tier, r, 1);
    CU_ASSERT_EQUAL_FATAL(range_eval(&tier, "increase(c[4m])", t, t, 60000, &b), 0);
    CU_ASSERT_EQUAL(tier.samples_read, 0);
    CU_ASSERT_EQUAL_FATAL(a.n, 1);
    CU_ASSERT_EQUAL_FATAL(b.n, 1);
    /* raw: 70 - 10 + 30 + 40 + 100 = 230; rows: the 100 missed, 130; the
     * same samples at the ends, so the same extrapolation */
    CU_ASSERT_DOUBLE_EQUAL(b.series[0].pts[0].v, a.series[0].pts[0].v * 130 / 230, 1e-9);
    CU_ASSERT_EQUAL(b.nwarnings, 2);
    promql_result_free(&a);
    promql_result_free(&b);
    tstore_done(r);
}

/* "topic device first last metric,metric,...;" for every sensor listed. */
static int list_into(void *ctx, const struct cb_sensor_info *s)
{
    char *out = ctx;
    size_t o = strlen(out);
    o += (size_t)snprintf(out + o, 4096 - o, "%s %s %lld %lld", s->topic,
                          s->device ? s->device : "-", (long long)s->first_seen,
                          (long long)s->last_seen);
    for (size_t i = 0; i < s->nmetrics && o < 4000; i++)
        o += (size_t)snprintf(out + o, 4096 - o, "%c%s", i ? ',' : ' ', s->metrics[i].metric);
    snprintf(out + o, 4096 - o, ";");
    return 0;
}

/* A query's catalog reads the sensors and their metrics without their
 * newest samples: the same sensors, devices, times and metrics as the full
 * list, every last_ts unknown. */
static void test_query_catalog_lists_sensors_without_samples(void)
{
    struct cb_store *st = tstore_open(0);
    static const char *const topics[] = {"city/d02/river/s1", "city/d01/air/a7", "city/d01/river/s2"};
    for (int k = 0; k < 3; k++)
        for (int i = 0; i < 5; i++) {
            struct cb_sample smp[2] = {{"level", 1000 + i * 10000, i}, {"temp.c", 1000 + i * 10000, k}};
            CU_ASSERT_EQUAL(cb_store_append(st, topics[k], k == 1 ? "dev-7" : NULL, smp,
                                            k == 2 ? 1 : 2, 0), 0);
        }
    struct cb_store_reader *r = tstore_settle(st, 0);
    static char full[4096], brief[4096];
    full[0] = brief[0] = '\0';
    CU_ASSERT_EQUAL(cb_store_list_sensors(r, list_into, full), 0);
    CU_ASSERT_EQUAL(cb_store_list_sensors_brief(r, list_into, brief), 0);
    CU_ASSERT_STRING_EQUAL(brief, full);
    CU_ASSERT_STRING_EQUAL(brief, "city/d01/air/a7 dev-7 1000 41000 level,temp.c;"
                                  "city/d01/river/s2 - 1000 41000 level;"
                                  "city/d02/river/s1 - 1000 41000 level,temp.c;");
    tstore_done(r);
}

static void test_range_query_bounds(void)
{
    static const double v[6] = {1, 2, 3, 4, 5, 6};
    struct mem_series ser[2] = {counter("g", "t/1", v), counter("g", "t/2", v)};
    struct mem two = {ser, 2};
    struct promql_source capped = {&two, mem_each, mem_samples, NULL, 11};
    struct promql_query cq;
    char cerr[256];
    const char *ckind = "";
    struct promql_result cr;
    CU_ASSERT_EQUAL_FATAL(promql_parse("g", 1, &cq, cerr, sizeof cerr), 0);
    CU_ASSERT_EQUAL(promql_eval(&cq, &capped, 60000, 60000, 1, 0, &cr, cerr, sizeof cerr, &ckind),
                    -1); /* 12 samples, 11 allowed */
    CU_ASSERT_STRING_EQUAL(ckind, "execution");
    CU_ASSERT_STRING_EQUAL(cerr, "query processing would load too many samples into memory in "
                                 "query execution (more than 11)");
    capped.max_samples = 12;
    CU_ASSERT_EQUAL(promql_eval(&cq, &capped, 60000, 60000, 1, 0, &cr, cerr, sizeof cerr, &ckind),
                    0);
    promql_result_free(&cr);
    promql_query_free(&cq);

    struct mem m = {0};
    struct promql_query q;
    char err[256];
    const char *kind = "";
    CU_ASSERT_EQUAL_FATAL(promql_parse("1", 1, &q, err, sizeof err), 0);
    struct promql_source src = {&m, mem_each, mem_samples, NULL, 0};
    struct promql_result r;
    CU_ASSERT_EQUAL(promql_eval(&q, &src, 0, 11000 * 1000, 1000, 1, &r, err, sizeof err, &kind),
                    -1);
    CU_ASSERT_STRING_EQUAL(kind, "bad_data");
    CU_ASSERT_EQUAL(promql_eval(&q, &src, 0, 10999 * 1000, 1000, 1, &r, err, sizeof err, &kind),
                    0);
    CU_ASSERT_EQUAL(r.type, PQ_T_MATRIX);
    CU_ASSERT_EQUAL(r.n, 1);
    CU_ASSERT_EQUAL(r.series[0].n, 11000);
    promql_result_free(&r);
    promql_query_free(&q);
}

void cb_test_suite_promql(void)
{
    CU_pSuite s = CU_add_suite("promql", NULL, NULL);
    CU_add_test(s, "promql: what citybrain does not support is refused naming it, with its column",
                test_unsupported_named_with_column);
    CU_add_test(s, "promql: precedence and associativity come from one table, as Prometheus's",
                test_precedence_from_one_table);
    CU_add_test(s, "promql: rate, increase and delta extrapolate to the window's ends as "
                   "Prometheus, a counter not below zero",
                test_rate_extrapolates_as_prometheus);
    CU_add_test(s, "promql: rate and increase add back a counter reset, delta does not",
                test_rate_adds_back_counter_resets);
    CU_add_test(s, "promql: a selector looks back five minutes, ranges include both ends",
                test_selector_looks_back_five_minutes_inclusive);
    CU_add_test(s, "promql: by keeps only its labels, without drops the name, topk keeps the "
                   "series, regular expressions are anchored",
                test_aggregation_labels);
    CU_add_test(s, "promql: vectors match on every label but the name; a duplicate label set "
                   "is an error",
                test_vector_matching_ignores_name);
    CU_add_test(s, "promql: metric and label names map every other character to '_'",
                test_names_map_to_prometheus_names);
    CU_add_test(s, "promql: values are written as Prometheus writes them, without an exponent",
                test_values_written_as_prometheus);
    CU_add_test(s, "promql: at whole-minute steps a selector, delta and *_over_time but quantile "
                   "read the rollup rows and answer as the raw samples do; rate, increase, "
                   "quantile and other steps read raw samples",
                test_whole_minute_steps_read_the_tier);
    CU_add_test(s, "promql: 30 days at a 1-hour step past raw retention answer every hour from "
                   "the rollup tiers, with a warning; quantile_over_time only where raw samples "
                   "are, warning of the rest",
                test_thirty_days_past_raw_retention_answer_from_the_tiers);
    CU_add_test(s, "promql: a query's catalog lists the sensors and their metrics without reading "
                   "their samples, as the full list does",
                test_query_catalog_lists_sensors_without_samples);
    CU_add_test(s, "promql: increase past raw retention adds back resets between rows and inside "
                   "a row below its first, and misses one the row cannot show",
                test_increase_past_retention_sees_resets_as_far_as_rows_show);
    CU_add_test(s, "promql: a range query has at most 11,000 points per series, a query reads "
                   "a bounded number of samples",
                test_range_query_bounds);
}
