/* The Prometheus query API at /api/v1 (docs/api.md "Prometheus query API"):
 * query, query_range, series, labels, label/<name>/values, metadata and
 * status/buildinfo, with Prometheus's JSON and error shapes, GET with a
 * query string or POST with a form body (as Grafana and promtool send).
 *
 * A series is a sensor's metric: __name__ is the metric mapped to a valid
 * name (promql_sanitize_name), its labels the topic's labels plus `topic`.
 * The live alert instances are the ALERTS series (alertname, alertstate,
 * severity and the instance's labels), value 1 every 15 s from the time the
 * instance entered its state up to now.
 *
 * Every read of series goes through catalog_build(): that is the one place
 * where the series a request may see are decided. Parameters are checked on
 * the loop; the work (catalog, evaluation, rendering) runs on the pool. */
#include "api/api_int.h"
#include "api/promql.h"
#include "base/clock.h"
#include "base/version.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define ALERTS_EVERY_MS 15000

/* The Prometheus API level these answers imitate (status/buildinfo). */
#define PROM_COMPAT_VERSION "2.42.0"

enum endpoint { EP_QUERY, EP_RANGE, EP_SERIES, EP_LABELS, EP_VALUES, EP_METADATA };

struct alert_copy {
    struct promql_labels lab; /* ALERTS' labels, sorted */
    int64_t since;
};

/* One request's work, owned by the pool call (job_free). */
struct job {
    enum endpoint ep;
    const char *query;
    int64_t start, end, step, now;
    const char **match;
    size_t nmatch;
    const char *label;  /* EP_VALUES: the label; EP_METADATA: the metric or NULL */
    long limit;         /* EP_METADATA: at most this many metrics, < 0 all */
    struct alert_copy *alerts;
    size_t nalerts, alerts_cap;
    const struct api_scope *scope; /* a department's, NULL: the whole city */
    struct cb_api *api;            /* for the scope check of an alert (loop thread) */
    struct api_judge judge;        /* a department's, while the alerts are copied */
    int judge_ok;
    struct promql_arena arena; /* every string and array above */
};

static void job_free(void *arg)
{
    struct job *j = arg;
    struct promql_arena a = j->arena;
    promql_arena_free(&a); /* j lives in its own arena */
}

/* ---- parameters ---- */

struct pparams {
    struct api_pair v[API_MAX_PAIRS];
    size_t n;
};

/* The form body (POST, application/x-www-form-urlencoded) first, then the
 * query string, as Go's Request.Form. */
static const char *collect_all(h2o_req_t *req, struct pparams *ps)
{
    const char *e = NULL;
    if (req->entity.base && req->entity.len) {
        ssize_t i = h2o_find_header(&req->headers, H2O_TOKEN_CONTENT_TYPE, -1);
        h2o_iovec_t ct = i >= 0 ? req->headers.entries[i].value : h2o_iovec_init(NULL, 0);
        static const char form[] = "application/x-www-form-urlencoded";
        if (ct.len >= sizeof form - 1 && h2o_lcstris(ct.base, sizeof form - 1, H2O_STRLIT(form)))
            e = api__form_pairs(req, req->entity.base, req->entity.len, ps->v, API_MAX_PAIRS,
                                &ps->n);
    }
    if (!e && req->query_at != SIZE_MAX)
        e = api__form_pairs(req, req->path.base + req->query_at + 1,
                            req->path.len - req->query_at - 1, ps->v, API_MAX_PAIRS, &ps->n);
    return e;
}

static const char *param(const struct pparams *ps, const char *name)
{
    for (size_t i = 0; i < ps->n; i++)
        if (strcmp(ps->v[i].name, name) == 0)
            return ps->v[i].value;
    return NULL;
}

/* Prometheus's parseTime: seconds since the epoch (a fraction rounded to the
 * millisecond) or RFC 3339. 0 or -1. */
static int parse_time(const char *s, int64_t *ms)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (*s && !*end && !errno && isfinite(v)) {
        double ip, frac = modf(v, &ip);
        if (fabs(ip) > 9.2e15)
            return -1;
        *ms = (int64_t)ip * 1000 + (int64_t)llround(frac * 1000);
        return 0;
    }
    struct tm tm = {0};
    int n = 0;
    if (sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
               &tm.tm_min, &tm.tm_sec, &n) != 6)
        return -1;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    const char *p = s + n;
    int64_t frac_ms = 0;
    if (*p == '.') {
        int64_t scale = 100;
        for (p++; isdigit((unsigned char)*p); p++, scale /= 10)
            frac_ms += (*p - '0') * scale;
    }
    int64_t off = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int hh, mm, k = 0;
        if (sscanf(p + 1, "%2d:%2d%n", &hh, &mm, &k) != 2)
            return -1;
        off = (hh * 3600 + mm * 60) * (*p == '-' ? -1 : 1);
        p += 1 + k;
    } else {
        return -1;
    }
    if (*p)
        return -1;
    time_t t = timegm(&tm);
    *ms = ((int64_t)t - off) * 1000 + frac_ms;
    return 0;
}

/* Prometheus's parseDuration: seconds (a number) or a duration ("15s", "1m30s"). */
static int parse_step(const char *s, int64_t *ms)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (*s && !*end && !errno && isfinite(v)) {
        if (fabs(v) > 9.2e15)
            return -1;
        *ms = (int64_t)llround(v * 1000);
        return 0;
    }
    return cb_parse_duration_ms(s, ms) == 0 ? 0 : -1;
}

/* ---- answers ---- */

static void prom_error_body(struct cb_strbuf *out, const char *type, const char *msg)
{
    cb_strbuf_reset(out);
    cb_strbuf_puts(out, "{\"status\":\"error\",\"errorType\":");
    cb_strbuf_json_string(out, type, strlen(type));
    cb_strbuf_puts(out, ",\"error\":");
    cb_strbuf_json_string(out, msg, strlen(msg));
    cb_strbuf_puts(out, "}");
}

static int status_of(const char *type)
{
    if (!strcmp(type, "bad_data"))
        return 400;
    if (!strcmp(type, "execution"))
        return 422;
    if (!strcmp(type, "not_found"))
        return 404;
    if (!strcmp(type, "unavailable"))
        return 503;
    return 500;
}

static void prom_error(struct cb_api *api, h2o_req_t *req, const char *type, const char *msg)
{
    struct cb_strbuf out;
    cb_strbuf_init(&out);
    prom_error_body(&out, type, msg);
    api__send(api, req, status_of(type), "application/json", out.data ? out.data : "", out.len);
    cb_strbuf_free(&out);
}

/* Seconds with the milliseconds, as Prometheus writes timestamps (1435781451.781). */
static void put_ts(struct cb_strbuf *out, int64_t ms)
{
    int64_t s = ms / 1000, r = ms % 1000;
    if (r < 0) {
        r += 1000;
        s--;
    }
    if (r == 0) {
        cb_strbuf_printf(out, "%lld", (long long)s);
        return;
    }
    char frac[8];
    snprintf(frac, sizeof frac, "%03d", (int)r);
    size_t n = strlen(frac);
    while (n > 1 && frac[n - 1] == '0')
        frac[--n] = '\0';
    cb_strbuf_printf(out, "%lld.%s", (long long)s, frac);
}

static void put_point(struct cb_strbuf *out, int64_t t, double v)
{
    char buf[400];
    cb_strbuf_putc(out, '[');
    put_ts(out, t);
    promql_format_value(v, buf, sizeof buf);
    cb_strbuf_puts(out, ",\"");
    cb_strbuf_puts(out, buf);
    cb_strbuf_puts(out, "\"]");
}

static void put_labels(struct cb_strbuf *out, const struct promql_labels *l)
{
    cb_strbuf_putc(out, '{');
    for (size_t i = 0; i < l->n; i++) {
        if (i)
            cb_strbuf_putc(out, ',');
        cb_strbuf_json_string(out, l->v[i].name, strlen(l->v[i].name));
        cb_strbuf_putc(out, ':');
        cb_strbuf_json_string(out, l->v[i].value, strlen(l->v[i].value));
    }
    cb_strbuf_putc(out, '}');
}

static void render_result(struct cb_strbuf *out, const struct promql_result *r)
{
    static const char *const types[] = {"scalar", "vector", "matrix"};
    cb_strbuf_printf(out, "{\"status\":\"success\",\"data\":{\"resultType\":\"%s\",\"result\":",
                     types[r->type]);
    if (r->type == PQ_T_SCALAR) {
        put_point(out, r->t, r->scalar);
    } else {
        cb_strbuf_putc(out, '[');
        for (size_t i = 0; i < r->n; i++) {
            const struct promql_series_out *s = &r->series[i];
            if (i)
                cb_strbuf_putc(out, ',');
            cb_strbuf_puts(out, "{\"metric\":");
            put_labels(out, &s->labels);
            if (r->type == PQ_T_VECTOR) {
                cb_strbuf_puts(out, ",\"value\":");
                put_point(out, s->pts[0].t, s->pts[0].v);
            } else {
                cb_strbuf_puts(out, ",\"values\":[");
                for (size_t k = 0; k < s->n; k++) {
                    if (k)
                        cb_strbuf_putc(out, ',');
                    put_point(out, s->pts[k].t, s->pts[k].v);
                }
                cb_strbuf_putc(out, ']');
            }
            cb_strbuf_putc(out, '}');
        }
        cb_strbuf_putc(out, ']');
    }
    cb_strbuf_putc(out, '}');
    if (r->nwarnings) {
        cb_strbuf_puts(out, ",\"warnings\":[");
        for (size_t i = 0; i < r->nwarnings; i++) {
            if (i)
                cb_strbuf_putc(out, ',');
            cb_strbuf_json_string(out, r->warnings[i], strlen(r->warnings[i]));
        }
        cb_strbuf_putc(out, ']');
    }
    cb_strbuf_putc(out, '}');
}

/* ---- the series catalog: the one place series are found ---- */

struct entry {
    struct promql_labels lab;
    const char *topic, *metric, *unit; /* NULL topic: an ALERTS series */
    const struct alert_copy *alert;
    int64_t first, last;
};
struct catalog {
    struct entry *v;
    size_t n, cap;
    struct promql_arena arena;
    struct job *job;
};

/* Builds a sorted label set of `fixed` plus the extra labels (names mapped
 * to valid label names), leaving out an extra whose name a fixed label or an
 * earlier extra has. NULL when out of memory. */
static struct promql_label *build_labels(struct promql_arena *a, const struct promql_label *fixed,
                                         size_t nfixed, const struct cb_api_label *extra,
                                         size_t nextra, size_t *n)
{
    struct promql_label *v = promql_alloc(a, (nfixed + nextra + 1) * sizeof *v);
    if (!v)
        return NULL;
    memcpy(v, fixed, nfixed * sizeof *v);
    size_t k = nfixed;
    for (size_t i = 0; i < nextra; i++) {
        size_t len = strlen(extra[i].name);
        char *name = promql_alloc(a, len + 3);
        const char *value = promql_strndup(a, extra[i].value, strlen(extra[i].value));
        if (!name || !value)
            return NULL;
        promql_sanitize_name(extra[i].name, len, 0, name, len + 3);
        size_t j = 0;
        while (j < k && strcmp(v[j].name, name) != 0)
            j++;
        if (j == k)
            v[k++] = (struct promql_label){name, value};
    }
    promql_labels_sort(v, k);
    *n = k;
    return v;
}

static struct entry *catalog_add(struct catalog *c)
{
    if (c->n == c->cap) {
        size_t nc = c->cap ? c->cap * 2 : 64;
        struct entry *v = promql_alloc(&c->arena, nc * sizeof *v);
        if (!v)
            return NULL;
        if (c->n)
            memcpy(v, c->v, c->n * sizeof *v);
        c->v = v;
        c->cap = nc;
    }
    return &c->v[c->n++];
}

static int catalog_series(void *fctx, const struct cb_api_prom_series *s)
{
    struct catalog *c = fctx;
    if (c->job->scope && !api__scope_allows_topic(c->job->scope, s->topic))
        return 0; /* not the department's sensor */
    struct promql_arena *a = &c->arena;
    size_t mlen = strlen(s->metric);
    char *name = promql_alloc(a, mlen + 3);
    const char *topic = promql_strndup(a, s->topic, strlen(s->topic));
    const char *metric = promql_strndup(a, s->metric, mlen);
    const char *unit = s->unit ? promql_strndup(a, s->unit, strlen(s->unit)) : NULL;
    struct entry *e = catalog_add(c);
    if (!name || !topic || !metric || (s->unit && !unit) || !e)
        return 1;
    promql_sanitize_name(s->metric, mlen, 1, name, mlen + 3);
    struct promql_label fixed[] = {{"__name__", name}, {"topic", topic}};
    size_t n;
    struct promql_label *v = build_labels(a, fixed, 2, s->labels, s->nlabels, &n);
    if (!v)
        return 1;
    *e = (struct entry){{v, n}, topic, metric, unit, NULL, s->first_ts, s->last_ts};
    return 0;
}

/* Every series a request of /api/v1 may see: the store's, then ALERTS; a
 * department's only its sensors' (catalog_series) and its alerts'
 * (copy_alert, on the loop).
 * Returns 0, or -1 with a message in err. */
static int catalog_build(struct cb_api *api, void *reader, struct job *job, struct catalog *c,
                         char *err, size_t errlen)
{
    memset(c, 0, sizeof *c);
    c->job = job;
    int times = job->ep != EP_QUERY && job->ep != EP_RANGE; /* the listings filter by time */
    if (api->prov.prom_series(api->prov.ctx, reader, times, catalog_series, c) < 0 ||
        c->arena.oom) {
        snprintf(err, errlen, c->arena.oom ? "out of memory" : "reading the series failed");
        return -1;
    }
    for (size_t i = 0; i < job->nalerts; i++) {
        struct entry *e = catalog_add(c);
        if (!e) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        *e = (struct entry){job->alerts[i].lab, NULL, NULL, NULL, &job->alerts[i],
                            job->alerts[i].since, job->now};
    }
    return 0;
}

/* ---- the evaluator's source ---- */

struct src_ctx {
    struct cb_api *api;
    void *reader;
    struct catalog *cat;
};

static int src_each(void *ctx, promql_series_fn fn, void *fctx, char *err, size_t errlen)
{
    (void)err;
    (void)errlen;
    struct src_ctx *s = ctx;
    for (size_t i = 0; i < s->cat->n; i++)
        if (fn(fctx, &s->cat->v[i].lab, &s->cat->v[i]))
            break;
    return 0;
}

static int src_samples(void *ctx, const void *ref, int64_t from, int64_t to, promql_sample_fn fn,
                       void *fctx, char *err, size_t errlen)
{
    struct src_ctx *s = ctx;
    const struct entry *e = ref;
    if (e->alert) {
        /* ALERTS: 1 every ALERTS_EVERY_MS from `since`, up to now */
        int64_t t = e->alert->since, now = s->cat->job->now;
        if (t < from)
            t += (from - t + ALERTS_EVERY_MS - 1) / ALERTS_EVERY_MS * ALERTS_EVERY_MS;
        for (; t <= to && t <= now; t += ALERTS_EVERY_MS)
            if (fn(fctx, t, 1))
                break;
        return 0;
    }
    const struct cb_api_provider *p = &s->api->prov;
    if (p->prom_samples(p->ctx, s->reader, e->topic, e->metric, from, to, fn, fctx) < 0) {
        snprintf(err, errlen, "reading the samples of %s %s failed", e->topic, e->metric);
        return -1;
    }
    return 0;
}

static int src_rows(void *ctx, const void *ref, int64_t from, int64_t to, promql_row_fn fn,
                    void *fctx, int64_t *raw_first, char *err, size_t errlen)
{
    struct src_ctx *s = ctx;
    const struct entry *e = ref;
    if (e->alert)
        return 1; /* ALERTS has no tiers: its samples */
    const struct cb_api_provider *p = &s->api->prov;
    if (p->prom_rows(p->ctx, s->reader, e->topic, e->metric, from, to, fn, fctx, raw_first) < 0) {
        snprintf(err, errlen, "reading the rollups of %s %s failed", e->topic, e->metric);
        return -1;
    }
    return 0;
}

/* ---- the pool side ---- */

/* query and query_range: parses j->query and evaluates it over the catalog
 * (instant at j->start, or j->start..j->end by j->step); writes the answer or
 * Prometheus's error into out and returns the status (400 bad_data, 422
 * execution, 500 internal). */
static int run_query(struct cb_api *api, void *reader, struct job *j, struct catalog *cat,
                     struct cb_strbuf *out)
{
    char err[512];
    struct promql_query q;
    if (promql_parse(j->query, strlen(j->query), &q, err, sizeof err)) {
        prom_error_body(out, "bad_data", err);
        return 400;
    }
    struct src_ctx sc = {api, reader, cat};
    struct promql_source src = {&sc, src_each, src_samples,
                                api->prov.prom_rows ? src_rows : NULL, 0};
    struct promql_result res;
    const char *kind = "internal";
    int range = j->ep == EP_RANGE;
    int rc = promql_eval(&q, &src, j->start, range ? j->end : j->start, j->step, range, &res,
                         err, sizeof err, &kind);
    promql_query_free(&q);
    if (rc) {
        prom_error_body(out, kind, err);
        return status_of(kind);
    }
    render_result(out, &res);
    promql_result_free(&res);
    return 200;
}

/* Whether entry e is among the series a series/labels request asks for. */
static int wanted(const struct entry *e, struct promql_query *sel, size_t nsel, int64_t start,
                  int64_t end)
{
    if (e->last != INT64_MIN && e->last < start)
        return 0;
    if (e->first != INT64_MIN && e->first > end)
        return 0;
    if (!nsel)
        return 1;
    for (size_t i = 0; i < nsel; i++)
        if (promql_selector_matches(sel[i].root, &e->lab))
            return 1;
    return 0;
}

static int entry_cmp(const void *x, const void *y)
{
    return promql_labels_cmp(&(*(const struct entry *const *)x)->lab,
                             &(*(const struct entry *const *)y)->lab);
}

static int str_cmp(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Appends the sorted distinct strings v[0..n) as a JSON array. */
static void put_set(struct cb_strbuf *out, const char **v, size_t n)
{
    if (n > 1)
        qsort(v, n, sizeof *v, str_cmp);
    cb_strbuf_putc(out, '[');
    for (size_t i = 0, k = 0; i < n; i++) {
        if (i && strcmp(v[i], v[i - 1]) == 0)
            continue;
        if (k++)
            cb_strbuf_putc(out, ',');
        cb_strbuf_json_string(out, v[i], strlen(v[i]));
    }
    cb_strbuf_putc(out, ']');
}

/* series, labels and label/<name>/values: the catalog's entries that match
 * any match[] selector (all without one) and reach into [start, end]; the
 * series as label sets in label order, or the sorted distinct label names
 * or values. Returns the status with the body in out (400 for a match[]
 * that is not a plain series selector). */
static int run_listing(struct job *j, struct catalog *cat, struct cb_strbuf *out)
{
    struct promql_query *sel = calloc(j->nmatch ? j->nmatch : 1, sizeof *sel);
    const char **names = NULL;
    const struct entry **picked = NULL;
    size_t nnames = 0, cap = 0, nsel = 0;
    int status = 500;
    char err[512];
    if (!sel)
        goto oom;
    for (; nsel < j->nmatch; nsel++) {
        if (promql_parse(j->match[nsel], strlen(j->match[nsel]), &sel[nsel], err, sizeof err) ||
            sel[nsel].root->kind != PQ_SEL || sel[nsel].root->range_ms) {
            char msg[600];
            if (sel[nsel].root) {
                promql_query_free(&sel[nsel]);
                snprintf(err, sizeof err, "a series selector such as up{job=\"x\"}");
            }
            snprintf(msg, sizeof msg, "invalid parameter \"match[]\": %s", err);
            prom_error_body(out, "bad_data", msg);
            status = 400;
            goto out;
        }
    }
    if (j->ep == EP_SERIES)
        cb_strbuf_puts(out, "{\"status\":\"success\",\"data\":[");
    size_t nout = 0;
    for (size_t i = 0; i < cat->n; i++) {
        const struct entry *e = &cat->v[i];
        if (!wanted(e, sel, nsel, j->start, j->end))
            continue;
        if (j->ep == EP_SERIES) {
            if (nout == cap) {
                size_t nc = cap ? cap * 2 : 64;
                const struct entry **nv = realloc(picked, nc * sizeof *nv);
                if (!nv)
                    goto oom;
                picked = nv;
                cap = nc;
            }
            picked[nout++] = e;
            continue;
        }
        for (size_t k = 0; k < e->lab.n; k++) {
            const char *s = j->ep == EP_LABELS ? e->lab.v[k].name : NULL;
            if (j->ep == EP_VALUES && strcmp(e->lab.v[k].name, j->label) == 0)
                s = e->lab.v[k].value;
            if (!s || !*s)
                continue;
            if (nnames == cap) {
                size_t nc = cap ? cap * 2 : 64;
                const char **nv = realloc(names, nc * sizeof *nv);
                if (!nv)
                    goto oom;
                names = nv;
                cap = nc;
            }
            names[nnames++] = s;
        }
    }
    if (j->ep == EP_SERIES) { /* in label order, as Prometheus */
        if (nout > 1)
            qsort(picked, nout, sizeof *picked, entry_cmp);
        for (size_t i = 0; i < nout; i++) {
            if (i)
                cb_strbuf_putc(out, ',');
            put_labels(out, &picked[i]->lab);
        }
        cb_strbuf_puts(out, "]}");
    } else {
        cb_strbuf_puts(out, "{\"status\":\"success\",\"data\":");
        put_set(out, names, nnames);
        cb_strbuf_putc(out, '}');
    }
    status = 200;
    goto out;
oom:
    prom_error_body(out, "internal", "out of memory");
    status = 500;
out:
    for (size_t i = 0; i < nsel; i++)
        promql_query_free(&sel[i]);
    free(sel);
    free(names);
    free(picked);
    return status;
}

/* metadata: each metric name of the store once (at most j->limit when >= 0,
 * only j->label when given), as a gauge with its help and unit. 200. */
static int run_metadata(struct job *j, struct catalog *cat, struct cb_strbuf *out)
{
    cb_strbuf_puts(out, "{\"status\":\"success\",\"data\":{");
    long n = 0;
    for (size_t i = 0; i < cat->n && (j->limit < 0 || n < j->limit); i++) {
        const struct entry *e = &cat->v[i];
        const char *name = promql_label_get(&e->lab, "__name__");
        if (!e->topic || (j->label && strcmp(name, j->label) != 0))
            continue;
        size_t k = 0; /* a name once, at its first series */
        while (k < i && (!cat->v[k].topic ||
                         strcmp(promql_label_get(&cat->v[k].lab, "__name__"), name) != 0))
            k++;
        if (k < i)
            continue;
        if (n++)
            cb_strbuf_putc(out, ',');
        cb_strbuf_json_string(out, name, strlen(name));
        cb_strbuf_puts(out, ":[{\"type\":\"gauge\",\"help\":");
        char help[300];
        snprintf(help, sizeof help, "citybrain sensor metric \"%s\"", e->metric);
        cb_strbuf_json_string(out, help, strlen(help));
        cb_strbuf_puts(out, ",\"unit\":");
        cb_strbuf_json_string(out, e->unit ? e->unit : "", e->unit ? strlen(e->unit) : 0);
        cb_strbuf_puts(out, "}]");
    }
    cb_strbuf_puts(out, "}}");
    return 200;
}

/* The pool call of every /api/v1 route but buildinfo (an api_pool_fn): builds
 * the catalog from `reader`, answers the job; the catalog is freed here, the
 * job by job_free after the answer is sent. */
static int prom_run(struct cb_api *api, void *reader, void *arg, struct cb_strbuf *out)
{
    struct job *j = arg;
    struct catalog cat;
    char err[256];
    int status;
    if (catalog_build(api, reader, j, &cat, err, sizeof err)) {
        prom_error_body(out, "internal", err);
        status = 500;
    } else if (j->ep == EP_QUERY || j->ep == EP_RANGE) {
        status = run_query(api, reader, j, &cat, out);
    } else if (j->ep == EP_METADATA) {
        status = run_metadata(j, &cat, out);
    } else {
        status = run_listing(j, &cat, out);
    }
    promql_arena_free(&cat.arena);
    if (out->oom) {
        cb_strbuf_reset(out);
        prom_error_body(out, "internal", "out of memory");
        status = 500;
    }
    return status;
}

/* ---- the loop side ---- */

/* Loop thread (the provider's prom_alerts callback): copies one live alert
 * instance as an ALERTS label set into the job's arena; out of memory leaves
 * it out (j->arena.oom then fails the request). */
/* Whether a department may see the alert: the same judgement as for its
 * JSON elsewhere, by the job's judge (the rule set parsed once per request). */
static int alert_in_scope(struct job *j, const struct cb_api_prom_alert *a)
{
    if (!j->scope)
        return 1;
    const char *names[API_JUDGE_MAX_LABELS], *values[API_JUDGE_MAX_LABELS];
    if (a->nlabels > API_JUDGE_MAX_LABELS)
        return 0;
    for (size_t i = 0; i < a->nlabels; i++) {
        names[i] = a->labels[i].name;
        values[i] = a->labels[i].value;
    }
    return j->judge_ok && api__judge_alert(&j->judge, a->rule, names, values, a->nlabels);
}

static void copy_alert(void *fctx, const struct cb_api_prom_alert *a)
{
    struct job *j = fctx;
    if (!alert_in_scope(j, a))
        return;
    struct promql_arena *ar = &j->arena;
    if (j->nalerts == j->alerts_cap) {
        size_t nc = j->alerts_cap ? j->alerts_cap * 2 : 16;
        struct alert_copy *v = promql_alloc(ar, nc * sizeof *v);
        if (!v)
            return;
        if (j->nalerts)
            memcpy(v, j->alerts, j->nalerts * sizeof *v);
        j->alerts = v;
        j->alerts_cap = nc;
    }
    const char *rule = promql_strndup(ar, a->rule, strlen(a->rule));
    const char *sev = promql_strndup(ar, a->severity, strlen(a->severity));
    if (!rule || !sev)
        return;
    struct promql_label fixed[] = {{"__name__", "ALERTS"},
                                   {"alertname", rule},
                                   {"alertstate", a->firing ? "firing" : "pending"},
                                   {"severity", sev}};
    size_t n;
    struct promql_label *v = build_labels(ar, fixed, 4, a->labels, a->nlabels, &n);
    if (!v)
        return;
    j->alerts[j->nalerts++] = (struct alert_copy){{v, n}, a->since};
}

static struct job *job_new(enum endpoint ep)
{
    struct promql_arena a = {0};
    struct job *j = promql_alloc(&a, sizeof *j);
    if (!j) {
        promql_arena_free(&a);
        return NULL;
    }
    j->arena = a;
    j->ep = ep;
    j->start = INT64_MIN;
    j->end = INT64_MAX;
    j->limit = -1;
    j->now = cb_wall_ms();
    return j;
}

/* A copy of s in the job's arena (NULL stays NULL). */
static const char *job_str(struct job *j, const char *s)
{
    return s ? promql_strndup(&j->arena, s, strlen(s)) : NULL;
}

static void build_info(struct cb_api *api, h2o_req_t *req)
{
    struct cb_strbuf out;
    cb_strbuf_init(&out);
    cb_strbuf_puts(&out, "{\"status\":\"success\",\"data\":{\"version\":\"" PROM_COMPAT_VERSION
                         "\",\"revision\":");
    cb_strbuf_json_string(&out, cb_version, strlen(cb_version));
    cb_strbuf_puts(&out, ",\"branch\":\"citybrain\",\"buildUser\":\"citybrain\",\"buildDate\":\"\","
                         "\"goVersion\":\"none (citybrain, C)\"}}");
    api__send(api, req, 200, "application/json", out.data, out.len);
    cb_strbuf_free(&out);
}

/* Reads the time parameter `name` into *out (absent keeps it). NULL or a message in err. */
static const char *time_param(const struct pparams *ps, const char *name, int64_t *out,
                              char *err, size_t errlen)
{
    const char *v = param(ps, name);
    if (v && parse_time(v, out)) {
        snprintf(err, errlen, "invalid parameter \"%s\": cannot parse \"%.60s\" to a valid timestamp",
                 name, v);
        return err;
    }
    return NULL;
}

void api__prom(struct cb_api *api, h2o_req_t *req, const char *rest, size_t len,
               const struct api_scope *scope)
{
    static const struct {
        const char *path;
        enum endpoint ep;
    } eps[] = {{"query", EP_QUERY},   {"query_range", EP_RANGE}, {"series", EP_SERIES},
               {"labels", EP_LABELS}, {"metadata", EP_METADATA}};
    struct pparams ps = {.n = 0};
    char err[300];
    const char *e = NULL;
    if (len == 16 && memcmp(rest, "status/buildinfo", 16) == 0) {
        build_info(api, req);
        return;
    }
    int ep = -1;
    const char *label = NULL;
    for (size_t i = 0; i < sizeof eps / sizeof eps[0]; i++)
        if (len == strlen(eps[i].path) && memcmp(rest, eps[i].path, len) == 0)
            ep = (int)eps[i].ep;
    if (ep < 0 && len > 13 && memcmp(rest, "label/", 6) == 0 &&
        memcmp(rest + len - 7, "/values", 7) == 0) {
        ep = EP_VALUES;
        label = api__decode(&req->pool, rest + 6, len - 13, 0);
        if (!label || !*label) {
            prom_error(api, req, "bad_data", "invalid label name");
            return;
        }
        for (const char *p = label; *p; p++)
            if (!(isalnum((unsigned char)*p) || *p == '_') || (p == label && isdigit((unsigned char)*p))) {
                snprintf(err, sizeof err, "invalid label name: \"%.100s\"", label);
                prom_error(api, req, "bad_data", err);
                return;
            }
    }
    if (ep < 0) {
        prom_error(api, req, "not_found", "citybrain answers query, query_range, series, labels, "
                                          "label/<name>/values, metadata and status/buildinfo "
                                          "under /api/v1");
        return;
    }
    if (!api->prov.prom_series || !api->prov.prom_samples) {
        prom_error(api, req, "unavailable", "not available");
        return;
    }
    if ((e = collect_all(req, &ps))) {
        prom_error(api, req, "bad_data", e);
        return;
    }
    struct job *j = job_new((enum endpoint)ep);
    if (!j) {
        prom_error(api, req, "internal", "out of memory");
        return;
    }
    j->scope = scope;
    j->api = api;
    switch (j->ep) {
    case EP_QUERY:
    case EP_RANGE: {
        j->query = job_str(j, param(&ps, "query"));
        if (!j->query || !*j->query) {
            e = "invalid parameter \"query\": no query given";
            break;
        }
        if (j->ep == EP_QUERY) {
            j->start = j->now;
            e = time_param(&ps, "time", &j->start, err, sizeof err);
            break;
        }
        const char *need[] = {"start", "end", "step"};
        for (size_t i = 0; i < 3 && !e; i++)
            if (!param(&ps, need[i])) {
                snprintf(err, sizeof err, "invalid parameter \"%s\": missing", need[i]);
                e = err;
            }
        if (!e)
            e = time_param(&ps, "start", &j->start, err, sizeof err);
        if (!e)
            e = time_param(&ps, "end", &j->end, err, sizeof err);
        if (!e && j->end < j->start)
            e = "invalid parameter \"end\": end timestamp must not be before start time";
        if (!e && parse_step(param(&ps, "step"), &j->step)) {
            snprintf(err, sizeof err, "invalid parameter \"step\": cannot parse \"%.60s\" to a "
                                      "valid duration", param(&ps, "step"));
            e = err;
        }
        if (!e && j->step <= 0)
            e = "invalid parameter \"step\": zero or negative query resolution step widths are "
                "not accepted. Try a positive integer";
        if (!e && (j->end - j->start) / j->step + 1 > PROMQL_MAX_POINTS)
            e = "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the "
                "query resolution (?step=XX)";
        break;
    }
    case EP_METADATA: {
        j->label = job_str(j, param(&ps, "metric"));
        const char *lim = param(&ps, "limit");
        if (lim && *lim) {
            char *end;
            j->limit = strtol(lim, &end, 10);
            if (*end)
                e = "invalid parameter \"limit\": not a number";
        }
        break;
    }
    default:
        j->label = job_str(j, label);
        e = time_param(&ps, "start", &j->start, err, sizeof err);
        if (!e)
            e = time_param(&ps, "end", &j->end, err, sizeof err);
        size_t nm = 0;
        for (size_t i = 0; i < ps.n; i++)
            nm += strcmp(ps.v[i].name, "match[]") == 0;
        if (!e && j->ep == EP_SERIES && nm == 0)
            e = "no match[] parameter provided";
        if (!e && nm) {
            j->match = promql_alloc(&j->arena, nm * sizeof *j->match);
            for (size_t i = 0; j->match && i < ps.n; i++)
                if (strcmp(ps.v[i].name, "match[]") == 0)
                    j->match[j->nmatch++] = job_str(j, ps.v[i].value);
        }
    }
    if (!e && api->prov.prom_alerts) {
        j->judge_ok = api__judge_init(api, scope, &j->judge) == 0;
        api->prov.prom_alerts(api->prov.ctx, copy_alert, j);
        api__judge_free(&j->judge);
    }
    if (!e && j->arena.oom)
        e = "out of memory";
    if (e) {
        prom_error(api, req, strcmp(e, "out of memory") ? "bad_data" : "internal", e);
        job_free(j);
        return;
    }
    api__queue_call(api, req, prom_run, j, job_free);
}
