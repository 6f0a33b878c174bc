/* libFuzzer target: the PromQL parser (api/promql_parse.c) must never crash,
 * leak or misbehave on any query text; what it accepts is evaluated (an
 * instant query, a range query of raw samples and two of rollup rows, the
 * older half past raw retention, at a whole-minute step and another) over a few
 * series in memory, and every value formatted. */
#include "api/promql.h"

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define NSERIES 4
#define NSAMPLES 40

static struct promql_label labels[NSERIES][3];
static struct promql_sample samples[NSERIES][NSAMPLES];

static void fill(void)
{
    static const char *const names[] = {"level", "level", "flow_total", "ALERTS"};
    static const char *const districts[] = {"d01", "d02", "d01", "d03"};
    for (int i = 0; i < NSERIES; i++) {
        labels[i][0] = (struct promql_label){"__name__", names[i]};
        labels[i][1] = (struct promql_label){"district", districts[i]};
        labels[i][2] = (struct promql_label){"topic", i % 2 ? "city/d02/river/s1" : "city/d01/x/y"};
        double v = 0;
        for (int k = 0; k < NSAMPLES; k++) {
            v = i == 2 ? v + k % 7 : (double)((k * 37 + i) % 19) - 3;
            if (i == 2 && k == 20)
                v = 1; /* a counter reset */
            samples[i][k] = (struct promql_sample){(int64_t)k * 15000 + i * 7, v};
        }
    }
}

static int each(void *ctx, promql_series_fn fn, void *fctx, char *err, size_t errlen)
{
    (void)ctx;
    (void)err;
    (void)errlen;
    for (int i = 0; i < NSERIES; i++) {
        struct promql_labels l = {labels[i], 3};
        if (fn(fctx, &l, samples[i]))
            break;
    }
    return 0;
}

static int read_samples(void *ctx, const void *ref, int64_t from, int64_t to,
                        promql_sample_fn fn, void *fctx, char *err, size_t errlen)
{
    (void)ctx;
    (void)err;
    (void)errlen;
    const struct promql_sample *s = ref;
    for (int k = 0; k < NSAMPLES; k++)
        if (s[k].t >= from && s[k].t <= to && fn(fctx, s[k].t, s[k].v))
            break;
    return 0;
}

/* The samples as 1-minute rows (the whole minutes around [from, to]), the
 * second half of them counted as raw samples still there. */
static int rows(void *ctx, const void *ref, int64_t from, int64_t to, promql_row_fn fn,
                void *fctx, int64_t *raw_first, char *err, size_t errlen)
{
    (void)ctx;
    (void)err;
    (void)errlen;
    const struct promql_sample *s = ref;
    *raw_first = s[NSAMPLES / 2].t;
    struct cb_tier_row r = {0};
    for (int k = 0; k <= NSAMPLES; k++) {
        int64_t b = k < NSAMPLES ? s[k].t - ((s[k].t % 60000) + 60000) % 60000 : 0;
        if (r.count && (k == NSAMPLES || b != r.start)) {
            if (r.start + 60000 > from && r.start <= to && fn(fctx, &r))
                return 0;
            r.count = 0;
        }
        if (k == NSAMPLES)
            break;
        if (!r.count)
            r = (struct cb_tier_row){b, 60000, 0, 0, s[k].v, s[k].v, s[k].v, s[k].t, 0, 0};
        r.count++;
        r.sum += s[k].v;
        r.min = fmin(r.min, s[k].v);
        r.max = fmax(r.max, s[k].v);
        r.last = s[k].v;
        r.last_ts = s[k].t;
    }
    return 0;
}

static void run(struct promql_query *q, const struct promql_source *src, int64_t start,
                int64_t end, int64_t step, int range)
{
    struct promql_result r;
    char err[512];
    const char *kind;
    if (promql_eval(q, src, start, end, step, range, &r, err, sizeof err, &kind))
        return;
    char buf[400];
    promql_format_value(r.scalar, buf, sizeof buf);
    for (size_t i = 0; i < r.n; i++)
        for (size_t k = 0; k < r.series[i].n; k++)
            promql_format_value(r.series[i].pts[k].v, buf, sizeof buf);
    promql_result_free(&r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready;
    if (!ready) {
        fill();
        ready = 1;
    }
    struct promql_query q;
    char err[512];
    if (size > 4096 || promql_parse((const char *)data, size, &q, err, sizeof err))
        return 0;
    struct promql_source raw = {NULL, each, read_samples, NULL, 0};
    struct promql_source tier = {NULL, each, read_samples, rows, 0};
    run(&q, &raw, 300000, 300000, 1, 0);
    run(&q, &raw, 0, 600000, 37000, 1);
    run(&q, &tier, 0, 7200000, 60000, 1);
    run(&q, &tier, 7000, 7200000, 90500, 1); /* past raw retention: approximations */
    promql_query_free(&q);
    return 0;
}
