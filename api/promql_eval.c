/* The PromQL subset's evaluator (promql.h), after Prometheus 2.42's engine.
 *
 * Before the first step every selector reads its series once, over the whole
 * time range the query needs (range, offset and the 5-minute lookback
 * included): its raw samples, or its rollup rows where every window is whole
 * rows (see prefetch) and, past raw retention, the rows that are left; each
 * step then finds its window by binary search. A step's
 * values live in a step arena that is emptied before the next step; what
 * goes into the answer is copied into the result's arena. */
#include "api/promql.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define LOOKBACK_MS (5 * 60 * 1000)

/* One series a selector read: its labels and its samples in time order. */
struct sel_series {
    struct promql_labels lab;
    struct promql_sample *s;
    size_t n, cap;
    const void *ref; /* the source's handle */
    /* use_rows: the series is read as rows (struct cb_tier_row) instead */
    struct cb_tier_row *r;
    size_t nr, rcap;
    int64_t raw_first; /* the oldest raw sample; rows before it are past retention */
    int use_rows;
};
struct sel_data {
    struct sel_series *v;
    size_t n, cap;
};

/* A vector element or a scalar (n == SIZE_MAX marks a scalar in struct val). */
struct elem {
    struct promql_labels lab;
    double v;
};
struct val {
    int scalar;
    double s;
    struct elem *e;
    size_t n;
};

struct ev {
    const struct promql_source *src;
    struct promql_arena arena; /* the query's: selector data */
    struct promql_arena step;  /* one step's values */
    char *err;
    size_t errlen;
    const char *kind;
    int failed;
    int64_t qstep; /* a range query's step; 0 for an instant query */
    size_t nsamples; /* raw samples read so far (PROMQL_MAX_SAMPLES) */
    /* for the warnings: rows past raw retention answered (the newest
     * raw_first of those series), an answer was approximated */
    int64_t retired_before;
    int approximated;
    int64_t quantile_before; /* quantile_over_time missed samples past retention */
};

static void ev_fail(struct ev *e, const char *kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void ev_fail(struct ev *e, const char *kind, const char *fmt, ...)
{
    if (e->failed)
        return;
    e->failed = 1;
    e->kind = kind;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->err, e->errlen, fmt, ap);
    va_end(ap);
}

static void *ev_alloc(struct ev *e, struct promql_arena *a, size_t n)
{
    void *p = promql_alloc(a, n ? n : 1);
    if (!p)
        ev_fail(e, "internal", "out of memory");
    return p;
}

/* ---- label sets ---- */

/* The key of a label set (names and values joined by 0xff), in `a`. With
 * `skip_name`, __name__ is left out (one-to-one matching, aggregations). */
static char *labels_key(struct ev *e, struct promql_arena *a, const struct promql_labels *l,
                        int skip_name, size_t *klen)
{
    size_t n = 1;
    for (size_t i = 0; i < l->n; i++)
        n += strlen(l->v[i].name) + strlen(l->v[i].value) + 2;
    char *k = ev_alloc(e, a, n);
    if (!k)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; i < l->n; i++) {
        if (skip_name && strcmp(l->v[i].name, "__name__") == 0)
            continue;
        size_t a1 = strlen(l->v[i].name), a2 = strlen(l->v[i].value);
        memcpy(k + o, l->v[i].name, a1);
        o += a1;
        k[o++] = '\xff';
        memcpy(k + o, l->v[i].value, a2);
        o += a2;
        k[o++] = '\xff';
    }
    k[o] = '\0';
    *klen = o;
    return k;
}

/* l without __name__ (shares the strings). */
static struct promql_labels drop_name(struct ev *e, const struct promql_labels *l)
{
    struct promql_labels out = {0};
    struct promql_label *v = ev_alloc(e, &e->step, l->n * sizeof *v);
    if (!v)
        return out;
    size_t n = 0;
    for (size_t i = 0; i < l->n; i++)
        if (strcmp(l->v[i].name, "__name__") != 0)
            v[n++] = l->v[i];
    out.v = v;
    out.n = n;
    return out;
}

/* The labels an aggregation groups by: `by` keeps the listed ones (that are
 * set), `without` drops them and __name__. */
static struct promql_labels group_labels(struct ev *e, const struct promql_node *agg,
                                         const struct promql_labels *l)
{
    struct promql_labels out = {0};
    struct promql_label *v = ev_alloc(e, &e->step, (l->n + 1) * sizeof *v);
    if (!v)
        return out;
    size_t n = 0;
    for (size_t i = 0; i < l->n; i++) {
        int listed = 0;
        for (size_t g = 0; g < agg->ngrp; g++)
            if (strcmp(agg->grp[g], l->v[i].name) == 0)
                listed = 1;
        if (agg->without ? !listed && strcmp(l->v[i].name, "__name__") != 0 : listed)
            if (l->v[i].value[0])
                v[n++] = l->v[i];
    }
    out.v = v;
    out.n = n;
    return out;
}

/* ---- a small hash table of keys (open addressing, in an arena) ---- */

struct slot {
    const char *key;
    size_t klen;
    size_t idx;
};
struct table {
    struct slot *s;
    size_t mask;
};

static uint64_t hash(const char *k, size_t n)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)k[i]) * 1099511628211ULL;
    return h;
}

static int table_init(struct ev *e, struct promql_arena *a, struct table *t, size_t n)
{
    size_t cap = 16;
    while (cap < n * 2)
        cap *= 2;
    t->s = ev_alloc(e, a, cap * sizeof *t->s);
    t->mask = cap - 1;
    return t->s ? 0 : -1;
}

/* The slot of key: a filled one (found) or the empty one to fill. */
static struct slot *table_find(struct table *t, const char *k, size_t n)
{
    size_t i = (size_t)hash(k, n) & t->mask;
    while (t->s[i].key && (t->s[i].klen != n || memcmp(t->s[i].key, k, n) != 0))
        i = (i + 1) & t->mask;
    return &t->s[i];
}

/* ---- selectors: read once ---- */

struct collect {
    struct ev *e;
    const struct promql_node *sel;
    struct sel_data *d;
};

static int collect_series(void *fctx, const struct promql_labels *l, const void *ref)
{
    struct collect *c = fctx;
    struct ev *e = c->e;
    if (!promql_selector_matches(c->sel, l))
        return 0;
    struct sel_data *d = c->d;
    if (d->n == d->cap) {
        size_t nc = d->cap ? d->cap * 2 : 16;
        struct sel_series *v = ev_alloc(e, &e->arena, nc * sizeof *v);
        if (!v)
            return 1;
        if (d->n)
            memcpy(v, d->v, d->n * sizeof *v);
        d->v = v;
        d->cap = nc;
    }
    struct sel_series *s = &d->v[d->n];
    struct promql_label *lv = ev_alloc(e, &e->arena, (l->n ? l->n : 1) * sizeof *lv);
    if (!lv)
        return 1;
    for (size_t i = 0; i < l->n; i++) {
        lv[i].name = promql_strndup(&e->arena, l->v[i].name, strlen(l->v[i].name));
        lv[i].value = promql_strndup(&e->arena, l->v[i].value, strlen(l->v[i].value));
        if (!lv[i].name || !lv[i].value) {
            ev_fail(e, "internal", "out of memory");
            return 1;
        }
    }
    s->lab = (struct promql_labels){lv, l->n};
    s->ref = ref;
    d->n++;
    return 0;
}

struct fill {
    struct ev *e;
    struct sel_series *s;
};

/* Counts one more sample (or row) read; 1 (e->failed) past the limit. */
static int over_limit(struct ev *e)
{
    size_t max = e->src->max_samples ? e->src->max_samples : PROMQL_MAX_SAMPLES;
    if (++e->nsamples > max) {
        ev_fail(e, "execution", "query processing would load too many samples into memory "
                                "in query execution (more than %zu)", max);
        return 1;
    }
    return 0;
}

/* Makes room for one more element in *v (n used of *cap, each `size`). */
static int grow(struct ev *e, void **v, size_t n, size_t *cap, size_t size)
{
    if (n < *cap)
        return 0;
    size_t nc = *cap ? *cap * 2 : 64;
    void *nv = ev_alloc(e, &e->arena, nc * size);
    if (!nv)
        return -1;
    if (n)
        memcpy(nv, *v, n * size);
    *v = nv;
    *cap = nc;
    return 0;
}

static int fill_sample(void *fctx, int64_t ts, double v)
{
    struct fill *f = fctx;
    struct sel_series *s = f->s;
    if (over_limit(f->e) || grow(f->e, (void **)&s->s, s->n, &s->cap, sizeof *s->s))
        return 1;
    s->s[s->n++] = (struct promql_sample){ts, v};
    return 0;
}

static int fill_row(void *fctx, const struct cb_tier_row *row)
{
    struct fill *f = fctx;
    struct sel_series *s = f->s;
    if (over_limit(f->e) || grow(f->e, (void **)&s->r, s->nr, &s->rcap, sizeof *s->r))
        return 1;
    s->r[s->nr++] = *row;
    return 0;
}

/* Whether every evaluation time (start + k * step), the range and the offset
 * of sel are whole minutes: then every window is whole 1-minute rows plus
 * the first sample of the row at its end, when that sample is at its end. */
static int whole_minutes(const struct ev *e, const struct promql_node *sel, int64_t start)
{
    return start % 60000 == 0 && e->qstep % 60000 == 0 && sel->offset_ms % 60000 == 0 &&
           sel->range_ms % 60000 == 0;
}

/* Reads the rows of s over [from, to] (all of them with `tier`; else only
 * those past raw retention, before the raw samples already read, which
 * then follow as rows of width 1). Leaves s as it is when there are none. */
static void read_rows(struct ev *e, struct sel_series *s, int64_t from, int64_t to, int tier)
{
    char err[256] = "";
    struct fill f = {e, s};
    int64_t upto = tier ? to : (s->n ? s->s[0].t - 1 : to);
    int rc = e->src->rows(e->src->ctx, s->ref, from, upto, fill_row, &f, &s->raw_first, err,
                          sizeof err);
    if (rc < 0)
        ev_fail(e, "internal", "%s", err[0] ? err : "reading the rollups failed");
    if (rc != 0 || e->failed)
        return;
    if (!tier) {
        size_t keep = 0; /* a row reaching the raw samples holds some of them: left out */
        while (keep < s->nr && s->r[keep].last_ts < s->raw_first && s->r[keep].width > 1)
            keep++;
        s->nr = keep;
        if (!keep)
            return;
        for (size_t i = 0; i < s->n; i++) {
            if (grow(e, (void **)&s->r, s->nr, &s->rcap, sizeof *s->r))
                return;
            double v = s->s[i].v;
            int64_t t = s->s[i].t;
            s->r[s->nr++] = (struct cb_tier_row){t, 1, 1, v, v, v, v, t, v, t};
        }
    }
    s->use_rows = 1;
}

/* Reads every selector's series over [start, end] (widened by its range or
 * the lookback, and moved by its offset): from the rollup tiers where every
 * window is whole rows and the function is one the rows answer exactly (an
 * instant selector, delta, *_over_time but quantile_over_time); else the raw
 * samples, and, before the oldest raw sample, the rows raw retention left. */
static void prefetch(struct ev *e, struct promql_node *n, int64_t start, int64_t end)
{
    if (!n || e->failed)
        return;
    if (n->kind == PQ_CALL && n->a && n->a->kind == PQ_SEL) {
        n->a->rows_ok = n->fn != PQ_F_QUANTILE_OT ? 1 : -1; /* -1: rows only to warn */
        n->a->tier = n->a->rows_ok > 0 && n->fn != PQ_F_RATE && n->fn != PQ_F_INCREASE &&
                     whole_minutes(e, n->a, start);
    }
    if (n->kind != PQ_SEL) {
        prefetch(e, n->a, start, end);
        prefetch(e, n->b, start, end);
        return;
    }
    if (!n->range_ms) { /* an instant selector */
        n->rows_ok = 1;
        n->tier = whole_minutes(e, n, start);
    }
    if (!e->src->rows)
        n->rows_ok = n->tier = 0;
    struct sel_data *d = ev_alloc(e, &e->arena, sizeof *d);
    if (!d)
        return;
    n->data = d;
    struct collect c = {e, n, d};
    char err[256] = "";
    if (e->src->each_series(e->src->ctx, collect_series, &c, err, sizeof err) < 0) {
        ev_fail(e, "internal", "%s", err[0] ? err : "reading the series failed");
        return;
    }
    int64_t from = start - n->offset_ms - (n->range_ms ? n->range_ms : LOOKBACK_MS);
    int64_t to = end - n->offset_ms;
    for (size_t i = 0; i < d->n && !e->failed; i++) {
        struct sel_series *s = &d->v[i];
        struct fill f = {e, s};
        if (n->tier)
            read_rows(e, s, from, to, 1);
        if (s->use_rows || e->failed)
            continue;
        if (e->src->samples(e->src->ctx, s->ref, from, to, fill_sample, &f, err, sizeof err) < 0)
            ev_fail(e, "internal", "%s", err[0] ? err : "reading the samples failed");
        else if (n->rows_ok && (s->n == 0 || s->s[0].t > from))
            read_rows(e, s, from, to, 0);
        if (n->rows_ok < 0 && s->use_rows) { /* quantile_over_time: its samples are gone */
            if (s->raw_first > e->quantile_before)
                e->quantile_before = s->raw_first;
            s->use_rows = 0;
        }
    }
}

/* ---- windows of rows ---- */

/* What a window's rows hold: count, sum, min, max, the first and last
 * samples, and the counter resets seen (the value before each, added back). */
struct ragg {
    uint64_t count;
    double sum, min, max, first, last, resets;
    int64_t first_ts, last_ts;
};

static void ragg_add(struct ragg *g, const struct cb_tier_row *r)
{
    if (!g->count) {
        g->min = r->min;
        g->max = r->max;
        g->first = r->first;
        g->first_ts = r->first_ts;
    } else {
        if (r->first < g->last)
            g->resets += g->last; /* between rows: as between samples */
        if (r->min < g->min || isnan(g->min))
            g->min = r->min;
        if (r->max > g->max || isnan(g->max))
            g->max = r->max;
    }
    if (r->min < r->first)
        g->resets += r->max; /* inside a row: seen only as a value below its first */
    g->count += r->count;
    g->sum += r->sum;
    g->last = r->last;
    g->last_ts = r->last_ts;
}

/* The rows of s with samples in [from, to] into g: a row wholly inside
 * whole; a row reaching past `to` as its first sample (exact when that
 * sample is at `to`: the window ends where the row's bucket starts), one
 * reaching before `from` as its last; a row over both ends gives nothing.
 * Notes in e what was past raw retention or approximated. */
static void rows_window(struct ev *e, const struct sel_series *s, int64_t from, int64_t to,
                        struct ragg *g)
{
    memset(g, 0, sizeof *g);
    size_t lo = 0, hi = s->nr;
    while (lo < hi) { /* the first row with a sample at or after from */
        size_t mid = lo + (hi - lo) / 2;
        if (s->r[mid].last_ts < from)
            lo = mid + 1;
        else
            hi = mid;
    }
    int retired = 0, approx = 0;
    for (size_t i = lo; i < s->nr && s->r[i].first_ts <= to; i++) {
        const struct cb_tier_row *r = &s->r[i];
        struct cb_tier_row one = *r;
        if (r->first_ts >= from && r->last_ts <= to) {
            ragg_add(g, r);
        } else if (r->first_ts >= from) {
            one = (struct cb_tier_row){r->first_ts, 1, 1, r->first, r->first, r->first,
                                      r->first, r->first_ts, r->first, r->first_ts};
            approx |= r->first_ts != to;
            ragg_add(g, &one);
        } else if (r->last_ts <= to) {
            one = (struct cb_tier_row){r->last_ts, 1, 1, r->last, r->last, r->last,
                                      r->last, r->last_ts, r->last, r->last_ts};
            approx |= r->last_ts != from;
            ragg_add(g, &one);
        } else {
            approx = 1;
        }
        retired |= r->width > 1 && r->first_ts < s->raw_first;
    }
    if (retired && s->raw_first > e->retired_before)
        e->retired_before = s->raw_first;
    e->approximated |= approx;
}

/* The first index with s[i].t >= t. */
static size_t lower_bound(const struct sel_series *s, int64_t t)
{
    size_t lo = 0, hi = s->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (s->s[mid].t < t)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* The samples with from <= ts <= to: [*first, *first + return). */
static size_t window(const struct sel_series *s, int64_t from, int64_t to, size_t *first)
{
    size_t a = lower_bound(s, from), b = lower_bound(s, to + 1);
    *first = a;
    return b - a;
}

/* ---- functions over a range ---- */

static int cmp_double(const void *x, const void *y)
{
    double a = *(const double *)x, b = *(const double *)y;
    if (isnan(a))
        return isnan(b) ? 0 : -1;
    if (isnan(b))
        return 1;
    return a < b ? -1 : a > b;
}

/* Prometheus's extrapolatedRate (2.42): `result`, the increase from the
 * first sample (t0, v0) to the last (t1) of n, extrapolated towards the
 * window's ends when the first and last samples are within 1.1 average
 * intervals of them (else by half an interval), not below zero for
 * counters; divided by the range for rate. */
static int extrapolate(double result, int64_t t0, double v0, int64_t t1, uint64_t n,
                       int64_t range_start, int64_t range_end, int64_t range_ms, int counter,
                       int is_rate, double *out)
{
    if (n < 2)
        return 0;
    double to_start = (double)(t0 - range_start) / 1000;
    double to_end = (double)(range_end - t1) / 1000;
    double sampled = (double)(t1 - t0) / 1000;
    double avg_between = sampled / (double)(n - 1);
    if (counter && result > 0 && v0 >= 0) {
        double to_zero = sampled * (v0 / result);
        if (to_zero < to_start)
            to_start = to_zero;
    }
    double threshold = avg_between * 1.1;
    double interval = sampled;
    interval += to_start < threshold ? to_start : avg_between / 2;
    interval += to_end < threshold ? to_end : avg_between / 2;
    double factor = interval / sampled;
    if (is_rate)
        factor /= (double)range_ms / 1000;
    *out = result * factor;
    return 1;
}

/* rate, increase (counter resets added back) and delta over raw samples. */
static int extrapolated_rate(const struct promql_sample *p, size_t n, int64_t range_start,
                             int64_t range_end, int64_t range_ms, int counter, int is_rate,
                             double *out)
{
    if (n < 2)
        return 0;
    double result = p[n - 1].v - p[0].v;
    if (counter) {
        double last = 0;
        for (size_t i = 0; i < n; i++) {
            if (p[i].v < last)
                result += last;
            last = p[i].v;
        }
    }
    return extrapolate(result, p[0].t, p[0].v, p[n - 1].t, n, range_start, range_end, range_ms,
                       counter, is_rate, out);
}

/* fn over a window's rows; 0 when there is no value. */
static int from_rows(enum promql_func fn, const struct ragg *g, int64_t begin, int64_t end,
                     int64_t range_ms, double *out)
{
    if (g->count == 0)
        return 0;
    switch (fn) {
    case PQ_F_RATE:
    case PQ_F_INCREASE:
    case PQ_F_DELTA: {
        int counter = fn != PQ_F_DELTA;
        return extrapolate(g->last - g->first + (counter ? g->resets : 0), g->first_ts, g->first,
                           g->last_ts, g->count, begin, end, range_ms, counter, fn == PQ_F_RATE,
                           out);
    }
    case PQ_F_AVG_OT: *out = g->sum / (double)g->count; return 1;
    case PQ_F_MIN_OT: *out = g->min; return 1;
    case PQ_F_MAX_OT: *out = g->max; return 1;
    case PQ_F_SUM_OT: *out = g->sum; return 1;
    case PQ_F_COUNT_OT: *out = (double)g->count; return 1;
    case PQ_F_LAST_OT: *out = g->last; return 1;
    default: return 0; /* quantile_over_time: never from rows */
    }
}

/* fn over p[0..n); returns 0 when there is no value (the series is left out). */
static int over_time(struct ev *e, enum promql_func fn, const struct promql_sample *p, size_t n,
                     double param, double *out)
{
    if (n == 0)
        return 0;
    double acc;
    switch (fn) {
    case PQ_F_AVG_OT: {
        double mean = 0, count = 0;
        for (size_t i = 0; i < n; i++) {
            count++;
            if (isinf(mean)) {
                if (isinf(p[i].v) && (mean > 0) == (p[i].v > 0))
                    continue;
                if (!isinf(p[i].v) && !isnan(p[i].v))
                    continue;
            }
            mean += p[i].v / count - mean / count;
        }
        *out = mean;
        return 1;
    }
    case PQ_F_MIN_OT:
        acc = p[0].v;
        for (size_t i = 0; i < n; i++)
            if (p[i].v < acc || isnan(acc))
                acc = p[i].v;
        *out = acc;
        return 1;
    case PQ_F_MAX_OT:
        acc = p[0].v;
        for (size_t i = 0; i < n; i++)
            if (p[i].v > acc || isnan(acc))
                acc = p[i].v;
        *out = acc;
        return 1;
    case PQ_F_SUM_OT:
        acc = 0;
        for (size_t i = 0; i < n; i++)
            acc += p[i].v;
        *out = acc;
        return 1;
    case PQ_F_COUNT_OT:
        *out = (double)n;
        return 1;
    case PQ_F_LAST_OT:
        *out = p[n - 1].v;
        return 1;
    case PQ_F_QUANTILE_OT: {
        if (param < 0) {
            *out = -INFINITY;
            return 1;
        }
        if (param > 1) {
            *out = INFINITY;
            return 1;
        }
        double *v = ev_alloc(e, &e->step, n * sizeof *v);
        if (!v)
            return 0;
        for (size_t i = 0; i < n; i++)
            v[i] = p[i].v;
        qsort(v, n, sizeof *v, cmp_double);
        double rank = param * (double)(n - 1);
        double lower = fmax(0, floor(rank));
        double upper = fmin((double)n - 1, lower + 1);
        double weight = rank - floor(rank);
        *out = v[(size_t)lower] * (1 - weight) + v[(size_t)upper] * weight;
        return 1;
    }
    default:
        return 0;
    }
}

static struct val eval(struct ev *e, struct promql_node *n, int64_t t);

static int scalar_arg(struct ev *e, struct promql_node *n, int64_t t, const char *what,
                      double *out)
{
    struct val v = eval(e, n, t);
    if (e->failed)
        return -1;
    if (!v.scalar) {
        ev_fail(e, "bad_data", "expected type scalar in %s, got instant vector", what);
        return -1;
    }
    *out = v.s;
    return 0;
}

/* A function over a range selector at t: one element per series that has a
 * value (rate & co. need two samples), the name dropped except by
 * last_over_time. Step-arena memory; on failure e->failed and an empty val. */
static struct val eval_call(struct ev *e, struct promql_node *n, int64_t t)
{
    struct val out = {0};
    double param = 0;
    if (n->fn == PQ_F_QUANTILE_OT &&
        scalar_arg(e, n->b, t, "call to function \"quantile_over_time\"", &param))
        return out;
    const struct promql_node *sel = n->a;
    const struct sel_data *d = sel->data;
    int64_t end = t - sel->offset_ms, begin = end - sel->range_ms;
    out.e = ev_alloc(e, &e->step, (d->n ? d->n : 1) * sizeof *out.e);
    if (!out.e)
        return out;
    for (size_t i = 0; i < d->n; i++) {
        double v;
        int ok;
        if (d->v[i].use_rows) {
            struct ragg g;
            rows_window(e, &d->v[i], begin, end, &g);
            ok = from_rows(n->fn, &g, begin, end, sel->range_ms, &v);
            if (ok && g.count && (n->fn == PQ_F_RATE || n->fn == PQ_F_INCREASE))
                e->approximated |= g.first_ts < d->v[i].raw_first; /* resets inside rows */
            goto have;
        }
        size_t first, cnt = window(&d->v[i], begin, end, &first);
        const struct promql_sample *p = cnt ? d->v[i].s + first : NULL;
        switch (n->fn) {
        case PQ_F_RATE:
        case PQ_F_INCREASE:
        case PQ_F_DELTA:
            ok = extrapolated_rate(p, cnt, begin, end, sel->range_ms, n->fn != PQ_F_DELTA,
                                   n->fn == PQ_F_RATE, &v);
            break;
        default:
            ok = over_time(e, n->fn, p, cnt, param, &v);
        }
    have:
        if (!ok)
            continue;
        out.e[out.n].lab = n->fn == PQ_F_LAST_OT ? d->v[i].lab : drop_name(e, &d->v[i].lab);
        out.e[out.n++].v = v;
    }
    return out;
}

/* An instant selector at t: each series' newest sample in [t - offset - 5m,
 * t - offset], with the series' labels. */
static struct val eval_selector(struct ev *e, struct promql_node *n, int64_t t)
{
    struct val out = {0};
    const struct sel_data *d = n->data;
    if (n->range_ms) {
        ev_fail(e, "bad_data", "a range vector is only a query's answer in an instant query");
        return out;
    }
    out.e = ev_alloc(e, &e->step, (d->n ? d->n : 1) * sizeof *out.e);
    if (!out.e)
        return out;
    int64_t ref = t - n->offset_ms;
    for (size_t i = 0; i < d->n; i++) {
        double v;
        if (d->v[i].use_rows) {
            struct ragg g;
            rows_window(e, &d->v[i], ref - LOOKBACK_MS, ref, &g);
            if (!g.count)
                continue;
            v = g.last;
        } else {
            size_t first, cnt = window(&d->v[i], ref - LOOKBACK_MS, ref, &first);
            if (!cnt)
                continue;
            v = d->v[i].s[first + cnt - 1].v;
        }
        out.e[out.n].lab = d->v[i].lab;
        out.e[out.n++].v = v;
    }
    return out;
}

/* One aggregation group being filled. */
struct group {
    struct promql_labels lab;
    double v, mean, count;
    int has;
    struct elem *top; /* topk/bottomk: the kept elements */
    size_t ntop;
};

/* 1 when a should be kept before b by topk (bottomk: inverted); NaN last. */
static int ranks_before(double a, double b, int top)
{
    if (isnan(a))
        return 0;
    if (isnan(b))
        return 1;
    return top ? a > b : a < b;
}

/* An aggregation at t: groups the inner vector by its grouping labels
 * (hash of their key), one element per group with those labels, or for
 * topk/bottomk the k best elements of each group with all their labels. */
static struct val eval_agg(struct ev *e, struct promql_node *n, int64_t t)
{
    struct val out = {0};
    double k = 0;
    int is_k = n->agg == PQ_A_TOPK || n->agg == PQ_A_BOTTOMK;
    if (is_k && scalar_arg(e, n->b, t, "aggregation parameter", &k))
        return out;
    struct val in = eval(e, n->a, t);
    if (e->failed)
        return out;
    if (in.scalar) {
        ev_fail(e, "bad_data", "expected type instant vector in aggregation, got scalar");
        return out;
    }
    struct table tab;
    struct group *g = ev_alloc(e, &e->step, (in.n ? in.n : 1) * sizeof *g);
    if (!g || table_init(e, &e->step, &tab, in.n))
        return out;
    size_t ng = 0;
    size_t kk = is_k ? (k >= 1 ? (k > (double)in.n ? in.n : (size_t)k) : 0) : 0;
    if (is_k && kk == 0)
        return out;
    for (size_t i = 0; i < in.n; i++) {
        struct promql_labels gl = group_labels(e, n, &in.e[i].lab);
        size_t klen;
        char *key = labels_key(e, &e->step, &gl, 0, &klen);
        if (!key)
            return out;
        struct slot *s = table_find(&tab, key, klen);
        if (!s->key) {
            s->key = key;
            s->klen = klen;
            s->idx = ng;
            g[ng].lab = gl;
            if (is_k && !(g[ng].top = ev_alloc(e, &e->step, kk * sizeof *g[ng].top)))
                return out;
            ng++;
        }
        struct group *gr = &g[s->idx];
        double v = in.e[i].v;
        switch (n->agg) {
        case PQ_A_SUM:
            gr->v = gr->has ? gr->v + v : v;
            break;
        case PQ_A_AVG:
            /* Prometheus's incremental mean, with its care for infinities */
            if (!gr->has) {
                gr->mean = v;
                gr->count = 1;
                break;
            }
            gr->count++;
            if (isinf(gr->mean) && ((isinf(v) && (gr->mean > 0) == (v > 0)) ||
                                    (!isinf(v) && !isnan(v))))
                break;
            gr->mean += v / gr->count - gr->mean / gr->count;
            break;
        case PQ_A_MIN:
            if (!gr->has || gr->v > v || isnan(gr->v))
                gr->v = v;
            break;
        case PQ_A_MAX:
            if (!gr->has || gr->v < v || isnan(gr->v))
                gr->v = v;
            break;
        case PQ_A_COUNT:
            gr->v = gr->has ? gr->v + 1 : 1;
            break;
        case PQ_A_TOPK:
        case PQ_A_BOTTOMK: {
            int top = n->agg == PQ_A_TOPK;
            size_t pos = gr->ntop;
            while (pos > 0 && ranks_before(v, gr->top[pos - 1].v, top))
                pos--;
            if (pos >= kk)
                break;
            size_t last = gr->ntop < kk ? gr->ntop : kk - 1;
            memmove(&gr->top[pos + 1], &gr->top[pos], (last - pos) * sizeof gr->top[0]);
            gr->top[pos] = in.e[i];
            if (gr->ntop < kk)
                gr->ntop++;
            break;
        }
        }
        gr->has = 1;
    }
    size_t total = 0;
    for (size_t i = 0; i < ng; i++)
        total += is_k ? g[i].ntop : 1;
    out.e = ev_alloc(e, &e->step, (total ? total : 1) * sizeof *out.e);
    if (!out.e)
        return out;
    for (size_t i = 0; i < ng; i++) {
        if (is_k) {
            for (size_t j = 0; j < g[i].ntop; j++)
                out.e[out.n++] = g[i].top[j];
            continue;
        }
        out.e[out.n].lab = g[i].lab;
        out.e[out.n++].v = n->agg == PQ_A_AVG ? g[i].mean : g[i].v;
    }
    return out;
}

/* lhs op rhs; for a comparison, *keep says whether it holds and the value is lhs. */
static double binop(enum promql_binop op, double l, double r, int *keep)
{
    *keep = 1;
    switch (op) {
    case PQ_ADD: return l + r;
    case PQ_SUB: return l - r;
    case PQ_MUL: return l * r;
    case PQ_DIV: return l / r;
    case PQ_MOD: return fmod(l, r);
    case PQ_POW: return pow(l, r);
    case PQ_CEQ: *keep = l == r; return l;
    case PQ_CNE: *keep = l != r; return l;
    case PQ_CGT: *keep = l > r; return l;
    case PQ_CLT: *keep = l < r; return l;
    case PQ_CGE: *keep = l >= r; return l;
    default: *keep = l <= r; return l;
    }
}

/* A binary operation at t, as Prometheus: scalar op scalar; vector op
 * scalar element by element; vector op vector matched one-to-one on the
 * labels without the name (a duplicate on either side is an execution
 * error). Comparisons filter (or give 0/1 with bool). */
static struct val eval_bin(struct ev *e, struct promql_node *n, int64_t t)
{
    struct val out = {0};
    struct val l = eval(e, n->a, t);
    struct val r = e->failed ? out : eval(e, n->b, t);
    if (e->failed)
        return out;
    int cmp = n->op >= PQ_CEQ, keep;
    int drop = !cmp || n->bool_mod; /* arithmetic and bool drop the metric name */
    if (l.scalar && r.scalar) {
        double v = binop(n->op, l.s, r.s, &keep);
        out.scalar = 1;
        out.s = cmp ? (keep ? 1 : 0) : v;
        return out;
    }
    if (l.scalar || r.scalar) {
        int swap = l.scalar;
        struct val vec = swap ? r : l;
        double s = swap ? l.s : r.s;
        out.e = ev_alloc(e, &e->step, (vec.n ? vec.n : 1) * sizeof *out.e);
        if (!out.e)
            return out;
        for (size_t i = 0; i < vec.n; i++) {
            double lv = swap ? s : vec.e[i].v, rv = swap ? vec.e[i].v : s;
            double v = binop(n->op, lv, rv, &keep);
            if (cmp && swap)
                v = rv; /* the vector's value, also when it is on the right */
            if (n->bool_mod)
                v = keep ? 1 : 0;
            else if (!keep)
                continue;
            out.e[out.n].lab = drop ? drop_name(e, &vec.e[i].lab) : vec.e[i].lab;
            out.e[out.n++].v = v;
        }
        return out;
    }
    /* vector op vector, one-to-one on all labels but the name */
    struct table tab;
    if (table_init(e, &e->step, &tab, r.n))
        return out;
    for (size_t i = 0; i < r.n; i++) {
        size_t klen;
        char *key = labels_key(e, &e->step, &r.e[i].lab, 1, &klen);
        if (!key)
            return out;
        struct slot *s = table_find(&tab, key, klen);
        if (s->key) {
            ev_fail(e, "execution",
                    "found duplicate series for the match group on the right hand-side of the "
                    "operation; many-to-many matching not allowed: matching labels must be "
                    "unique on one side");
            return out;
        }
        s->key = key;
        s->klen = klen;
        s->idx = i;
    }
    unsigned char *used = ev_alloc(e, &e->step, r.n ? r.n : 1);
    out.e = ev_alloc(e, &e->step, (l.n ? l.n : 1) * sizeof *out.e);
    if (!used || !out.e)
        return out;
    for (size_t i = 0; i < l.n; i++) {
        size_t klen;
        char *key = labels_key(e, &e->step, &l.e[i].lab, 1, &klen);
        if (!key)
            return out;
        struct slot *s = table_find(&tab, key, klen);
        if (!s->key)
            continue;
        if (used[s->idx]) {
            ev_fail(e, "execution",
                    "multiple matches for labels: many-to-one matching must be explicit "
                    "(group_left/group_right), which citybrain does not support");
            return out;
        }
        used[s->idx] = 1;
        double v = binop(n->op, l.e[i].v, r.e[s->idx].v, &keep);
        if (n->bool_mod)
            v = keep ? 1 : 0;
        else if (!keep)
            continue;
        out.e[out.n].lab = drop ? drop_name(e, &l.e[i].lab) : l.e[i].lab;
        out.e[out.n++].v = v;
    }
    return out;
}

static struct val eval(struct ev *e, struct promql_node *n, int64_t t)
{
    struct val none = {0};
    if (e->failed)
        return none;
    switch (n->kind) {
    case PQ_NUM:
        return (struct val){.scalar = 1, .s = n->num};
    case PQ_SEL:
        return eval_selector(e, n, t);
    case PQ_CALL:
        return eval_call(e, n, t);
    case PQ_AGG:
        return eval_agg(e, n, t);
    case PQ_BIN:
        return eval_bin(e, n, t);
    default:
        ev_fail(e, "bad_data", "string literals are not supported here");
        return none;
    }
}

/* ---- results ---- */

static int copy_labels(struct promql_arena *a, const struct promql_labels *in,
                       struct promql_labels *out)
{
    struct promql_label *v = promql_alloc(a, (in->n ? in->n : 1) * sizeof *v);
    if (!v)
        return -1;
    for (size_t i = 0; i < in->n; i++) {
        v[i].name = promql_strndup(a, in->v[i].name, strlen(in->v[i].name));
        v[i].value = promql_strndup(a, in->v[i].value, strlen(in->v[i].value));
        if (!v[i].name || !v[i].value)
            return -1;
    }
    *out = (struct promql_labels){v, in->n};
    return 0;
}

static int push_point(struct promql_result *res, struct promql_series_out *s, int64_t t,
                      double v)
{
    if (s->n == s->cap) {
        size_t nc = s->cap ? s->cap * 2 : 16;
        struct promql_sample *p = realloc(s->pts, nc * sizeof *p);
        if (!p)
            return -1;
        s->pts = p;
        s->cap = nc;
    }
    s->pts[s->n++] = (struct promql_sample){t, v};
    (void)res;
    return 0;
}

/* A new output series with a copy of `lab`. */
static struct promql_series_out *add_series(struct ev *e, struct promql_result *res,
                                            size_t *cap, const struct promql_labels *lab)
{
    if (res->n == *cap) {
        size_t nc = *cap ? *cap * 2 : 16;
        struct promql_series_out *v = realloc(res->series, nc * sizeof *v);
        if (!v) {
            ev_fail(e, "internal", "out of memory");
            return NULL;
        }
        res->series = v;
        *cap = nc;
    }
    struct promql_series_out *s = &res->series[res->n];
    memset(s, 0, sizeof *s);
    if (copy_labels(&res->arena, lab, &s->labels)) {
        ev_fail(e, "internal", "out of memory");
        return NULL;
    }
    res->n++;
    return s;
}

static int series_cmp(const void *x, const void *y)
{
    return promql_labels_cmp(&((const struct promql_series_out *)x)->labels,
                             &((const struct promql_series_out *)y)->labels);
}

/* The raw samples of a range selector asked for in an instant query. */
static void instant_matrix(struct ev *e, struct promql_node *sel, int64_t t,
                           struct promql_result *res, size_t *cap)
{
    const struct sel_data *d = sel->data;
    int64_t end = t - sel->offset_ms;
    for (size_t i = 0; i < d->n && !e->failed; i++) {
        size_t first, cnt = window(&d->v[i], end - sel->range_ms, end, &first);
        if (!cnt)
            continue;
        struct promql_series_out *s = add_series(e, res, cap, &d->v[i].lab);
        for (size_t j = 0; s && j < cnt; j++)
            if (push_point(res, s, d->v[i].s[first + j].t, d->v[i].s[first + j].v))
                ev_fail(e, "internal", "out of memory");
    }
}

/* " before TIME" (UTC, RFC 3339) for ms, "" for INT64_MAX (no raw sample). */
static const char *when_text(int64_t ms, char *out, size_t outlen)
{
    out[0] = '\0';
    if (ms != INT64_MAX) {
        time_t secs = (time_t)(ms / 1000);
        struct tm tm;
        gmtime_r(&secs, &tm);
        strftime(out, outlen, " before %Y-%m-%dT%H:%M:%SZ", &tm);
    }
    return out;
}

/* Prometheus's "warnings" for what the rows answered: the part past raw
 * retention (before the newest oldest raw sample among the series that
 * needed rows there), whether anything was approximated, and where
 * quantile_over_time had no value because its samples are gone. Each is
 * a format with one %s, the time (" before ..."). */
static void add_warnings(struct ev *e, struct promql_result *res)
{
    const struct {
        int on;
        int64_t when;
        const char *fmt;
    } w[] = {
        {e->retired_before != 0, e->retired_before,
         "raw samples%s are past raw retention (storage.retention.raw): that part was answered "
         "from the rollup tiers"},
        {e->approximated, INT64_MAX,
         "approximated from the rollup tiers%s: a window that splits a rollup row, or rate and "
         "increase over rows (a counter reset inside a row is seen only as a value below the "
         "row's first; see docs/api.md \"Rollup tiers\")"},
        {e->quantile_before != 0, e->quantile_before,
         "quantile_over_time has no value where raw samples are past raw retention "
         "(storage.retention.raw)%s: the rollup tiers do not keep every value"},
    };
    _Static_assert(sizeof w / sizeof w[0] == sizeof res->warnings / sizeof res->warnings[0],
                   "a place for every warning");
    for (size_t i = 0; i < sizeof w / sizeof w[0]; i++) {
        if (!w[i].on)
            continue;
        char buf[400], when[40];
        snprintf(buf, sizeof buf, w[i].fmt, when_text(w[i].when, when, sizeof when));
        if (!(res->warnings[res->nwarnings++] = promql_strndup(&res->arena, buf, strlen(buf))))
            ev_fail(e, "internal", "out of memory");
    }
}

int promql_eval(struct promql_query *q, const struct promql_source *src, int64_t start,
                int64_t end, int64_t step, int as_range, struct promql_result *res, char *err,
                size_t errlen, const char **kind)
{
    struct ev e = {.src = src, .err = err, .errlen = errlen, .kind = "internal",
                   .qstep = as_range ? step : 0};
    memset(res, 0, sizeof *res);
    size_t cap = 0;
    struct table seen = {0};
    err[0] = '\0';
    if (!as_range) {
        end = start;
        step = 1;
    }
    if (step <= 0 || end < start) {
        ev_fail(&e, "bad_data", step <= 0 ? "zero or negative query resolution step widths are "
                                            "not accepted. Try a positive integer"
                                          : "end timestamp must not be before start time");
        goto out;
    }
    if ((end - start) / step + 1 > PROMQL_MAX_POINTS) {
        ev_fail(&e, "bad_data", "exceeded maximum resolution of 11,000 points per timeseries. "
                                "Try decreasing the query resolution (?step=XX)");
        goto out;
    }
    struct promql_node *root = q->root;
    if (as_range && root->kind == PQ_SEL && root->range_ms) {
        ev_fail(&e, "bad_data", "invalid expression type \"range vector\" for range query, must "
                                "be Scalar or instant Vector");
        goto out;
    }
    prefetch(&e, root, start, end);
    if (e.failed)
        goto out;
    res->t = start;
    if (!as_range && root->kind == PQ_SEL && root->range_ms) {
        res->type = PQ_T_MATRIX;
        instant_matrix(&e, root, start, res, &cap);
        goto out;
    }
    res->type = as_range ? PQ_T_MATRIX : PQ_T_VECTOR;
    struct promql_arena keys = {0};
    if (as_range && table_init(&e, &keys, &seen, 64))
        goto out_keys;
    for (int64_t t = start; t <= end && !e.failed; t += step) {
        promql_arena_free(&e.step);
        struct val v = eval(&e, root, t);
        if (e.failed)
            break;
        if (v.scalar) {
            if (!as_range) {
                res->type = PQ_T_SCALAR;
                res->scalar = v.s;
                break;
            }
            if (res->n == 0) {
                struct promql_labels none = {0};
                if (!add_series(&e, res, &cap, &none))
                    break;
            }
            if (push_point(res, &res->series[0], t, v.s))
                ev_fail(&e, "internal", "out of memory");
            continue;
        }
        /* one series per label set; the same set twice in one step is an error */
        struct table step_seen;
        if (table_init(&e, &e.step, &step_seen, v.n))
            break;
        for (size_t i = 0; i < v.n && !e.failed; i++) {
            size_t klen;
            char *key = labels_key(&e, &e.step, &v.e[i].lab, 0, &klen);
            if (!key)
                break;
            struct slot *ss = table_find(&step_seen, key, klen);
            if (ss->key) {
                ev_fail(&e, "execution", "vector cannot contain metrics with the same labelset");
                break;
            }
            ss->key = key;
            ss->klen = klen;
            size_t idx;
            if (as_range) {
                struct slot *s = table_find(&seen, key, klen);
                if (!s->key) {
                    if ((res->n + 1) * 2 > seen.mask + 1) {
                        /* grow: rehash every key into a table twice the size */
                        struct table bigger;
                        if (table_init(&e, &keys, &bigger, (seen.mask + 1)))
                            break;
                        for (size_t j = 0; j <= seen.mask; j++)
                            if (seen.s[j].key)
                                *table_find(&bigger, seen.s[j].key, seen.s[j].klen) = seen.s[j];
                        seen = bigger;
                        s = table_find(&seen, key, klen);
                    }
                    if (!(s->key = promql_strndup(&keys, key, klen))) {
                        ev_fail(&e, "internal", "out of memory");
                        break;
                    }
                    s->klen = klen;
                    s->idx = res->n;
                    if (!add_series(&e, res, &cap, &v.e[i].lab))
                        break;
                }
                idx = s->idx;
            } else {
                if (!add_series(&e, res, &cap, &v.e[i].lab))
                    break;
                idx = res->n - 1;
            }
            if (push_point(res, &res->series[idx], t, v.e[i].v))
                ev_fail(&e, "internal", "out of memory");
        }
    }
out_keys:
    promql_arena_free(&keys);
    if (!e.failed)
        add_warnings(&e, res);
out:
    for (size_t i = 0; i < res->n; i++)
        promql_labels_sort((struct promql_label *)res->series[i].labels.v,
                           res->series[i].labels.n);
    if (res->n > 1)
        qsort(res->series, res->n, sizeof *res->series, series_cmp);
    promql_arena_free(&e.step);
    promql_arena_free(&e.arena);
    if (e.failed) {
        promql_result_free(res);
        if (kind)
            *kind = e.kind;
        return -1;
    }
    return 0;
}

void promql_result_free(struct promql_result *res)
{
    for (size_t i = 0; i < res->n; i++)
        free(res->series[i].pts);
    free(res->series);
    res->series = NULL;
    res->n = 0;
    res->nwarnings = 0;
    promql_arena_free(&res->arena);
}

void promql_format_value(double v, char *out, size_t outlen)
{
    if (isnan(v)) {
        snprintf(out, outlen, "NaN");
        return;
    }
    if (isinf(v)) {
        snprintf(out, outlen, v > 0 ? "+Inf" : "-Inf");
        return;
    }
    /* the shortest %.Ne that reads back, then written out without exponent */
    char buf[64];
    int prec;
    for (prec = 0; prec < 17; prec++) {
        snprintf(buf, sizeof buf, "%.*e", prec, v);
        if (strtod(buf, NULL) == v)
            break;
    }
    char digits[32];
    size_t nd = 0;
    const char *p = buf;
    int neg = *p == '-';
    if (neg)
        p++;
    for (; *p && *p != 'e'; p++)
        if (*p != '.')
            digits[nd++] = *p;
    int exp10 = atoi(p + 1);
    while (nd > 1 && digits[nd - 1] == '0')
        nd--;
    size_t o = 0;
    if (neg && o + 1 < outlen)
        out[o++] = '-';
    /* the value is 0.digits * 10^(exp10 + 1) */
    int point = exp10 + 1; /* digits before the decimal point */
    if (point <= 0) {
        if (o + 2 < outlen) {
            out[o++] = '0';
            out[o++] = '.';
        }
        for (int i = 0; i < -point && o + 1 < outlen; i++)
            out[o++] = '0';
        for (size_t i = 0; i < nd && o + 1 < outlen; i++)
            out[o++] = digits[i];
    } else {
        for (int i = 0; i < point && o + 1 < outlen; i++)
            out[o++] = (size_t)i < nd ? digits[i] : '0';
        if ((size_t)point < nd) {
            if (o + 1 < outlen)
                out[o++] = '.';
            for (size_t i = (size_t)point; i < nd && o + 1 < outlen; i++)
                out[o++] = digits[i];
        }
    }
    out[o] = '\0';
}
