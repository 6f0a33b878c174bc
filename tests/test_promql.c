/* Unit tests: the PromQL subset's parser and evaluator (api/promql.h) over
 * series held in memory. The integration suite (itest_promql) compares the
 * same constructs with Prometheus itself; these pin down the rules one by
 * one with values worked out by hand. */
#include "api/promql.h"

#include <CUnit/CUnit.h>
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

static int tier_calls;

/* The rollup tier's answer, computed from the samples (count, sum, min, max, last). */
static int mem_aggregate(void *ctx, const void *ref, int64_t from, int64_t to,
                         struct promql_tier_agg *out, char *err, size_t errlen)
{
    (void)ctx;
    (void)err;
    (void)errlen;
    const struct mem_series *s = ref;
    memset(out, 0, sizeof *out);
    tier_calls++;
    for (size_t i = 0; i < s->n; i++)
        if (s->s[i].t >= from && s->s[i].t <= to) {
            double v = s->s[i].v;
            out->min = out->count && out->min < v ? out->min : v;
            out->max = out->count && out->max > v ? out->max : v;
            out->sum += v;
            out->last = v;
            out->count++;
        }
    return 0;
}

static void test_whole_minute_steps_read_the_tier(void)
{
    static const double v[6] = {1, 2, 3, 4, 5, 6};
    struct mem_series s = counter("g", "t/1", v);
    struct mem m = {&s, 1};
    struct promql_source src = {&m, mem_each, mem_samples, mem_aggregate, 0};
    static const struct {
        const char *expr;
        int64_t step;
        int tier;
        double at_600s;
    } cases[] = {{"avg_over_time(g[1h])", 60000, 1, 3.5},
                 {"count_over_time(g[1h])", 120000, 1, 6},
                 {"max_over_time(g[1h])", 30000, 0, 6},   /* a step the tier does not divide */
                 {"max_over_time(g[59m])", 60000, 0, 6}}; /* a range too short to be worth it */
    for (size_t i = 0; i < 4; i++) {
        struct promql_query q;
        struct promql_result r;
        char err[256];
        const char *kind;
        CU_ASSERT_EQUAL_FATAL(promql_parse(cases[i].expr, strlen(cases[i].expr), &q, err, sizeof err),
                              0);
        tier_calls = 0;
        CU_ASSERT_EQUAL_FATAL(promql_eval(&q, &src, 600000, 600000 + 2 * cases[i].step,
                                          cases[i].step, 1, &r, err, sizeof err, &kind),
                              0);
        CU_ASSERT_EQUAL(tier_calls, cases[i].tier ? 3 : 0);
        CU_ASSERT_EQUAL_FATAL(r.n, 1);
        NEAR(r.series[0].pts[0].v, cases[i].at_600s);
        promql_result_free(&r);
        promql_query_free(&q);
    }
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
    CU_add_test(s, "promql: *_over_time of an hour or more at a whole-minute step reads the "
                   "rollup tier",
                test_whole_minute_steps_read_the_tier);
    CU_add_test(s, "promql: a range query has at most 11,000 points per series, a query reads "
                   "a bounded number of samples",
                test_range_query_bounds);
}
