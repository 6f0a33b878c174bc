/* The Prometheus query API (/api/v1) against the real tools (issue 18,
 * item 1): the same two hours of telemetry go into citybrain (`citybrain
 * replay --db`) and into Debian's Prometheus 2.42 (`promtool tsdb
 * create-blocks-from openmetrics`); both are asked the same expressions over
 * the same ranges and the answers compared value by value. promtool's query
 * commands run against the daemon; the requests Grafana's Prometheus data
 * source sends are replayed; a firing rule shows as ALERTS.
 *
 * Tolerance: values agree to 1e-9 relative (1e-12 absolute): sums and means
 * may add in another order; everything else (which series, which
 * timestamps, NaN and infinities, the extrapolation of rate/increase/delta)
 * must be the same. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/support/daemon_itest.h"
#include "tests/support/splitmix.h"

void cb_test_suite_promql(void);

#define LABELS "city/{district}/{kind}/{sensor}"
#define SPAN_MS (2 * 3600000LL)

/* One generated series: topic, metric (as sent), its Prometheus name, counter or not. */
struct gen_series {
    char topic[64];
    const char *metric, *prom, *kind;
    int counter;
};

/* The fixture: telemetry in a citybrain database and in an OpenMetrics file. */
struct fixture {
    int64_t t0; /* a whole minute, about three hours ago */
    const char *db, *om, *rules;
};

/* Writes two hours of 12 sensors (3 districts, river and rain, 2 sensors
 * each), a sample every 15 s with up to 4 s of jitter and odd milliseconds,
 * a 12-minute gap in one sensor, counters that reset now and then. */
static void make_fixture(struct fixture *f)
{
    f->t0 = (cb_h_now_ms() - 3 * 3600000LL) / 60000 * 60000;
    f->db = cb_h_pathf("city.db");
    f->om = cb_h_pathf("city.om");
    f->rules = cb_h_pathf("r.rules");
    static const char rule[] = "rule river_high {\n  match \"city/{district}/river/{sensor}\"\n"
                               "  when level > 1000\n}\n";
    CU_ASSERT_EQUAL_FATAL(cb_h_write_file(f->rules, rule, sizeof rule - 1), 0);
    const char *in = cb_h_pathf("city.jsonl");
    FILE *j = fopen(in, "w"), *om = fopen(f->om, "w");
    CU_ASSERT_FATAL(j && om);
    static const struct {
        const char *kind, *metric, *prom;
        int counter;
    } metrics[] = {{"river", "level", "level", 0},
                   {"river", "flow.total", "flow_total", 1},
                   {"rain", "intensity", "intensity", 0},
                   {"rain", "mm.total", "mm_total", 1}};
    /* OpenMetrics wants each family together: one pass per metric */
    for (size_t m = 0; m < 4; m++) {
        fprintf(om, "# TYPE %s gauge\n", metrics[m].prom);
        for (int d = 1; d <= 3; d++)
            for (int s = 1; s <= 2; s++) {
                uint64_t rng = (uint64_t)(d * 100 + s * 10) + (m / 2); /* same times per sensor */
                uint64_t vrng = (uint64_t)(d * 1000 + s * 100 + m);
                double counter = 0;
                for (int64_t ts = f->t0 + (int64_t)(cb_splitmix_next(&rng) % 4000);
                     ts < f->t0 + SPAN_MS; ts += 15000 + (int64_t)(cb_splitmix_next(&rng) % 4000)) {
                    if (d == 2 && s == 1 && ts > f->t0 + 40 * 60000 && ts < f->t0 + 52 * 60000)
                        continue; /* the gap */
                    double v;
                    uint64_t r = cb_splitmix_next(&vrng);
                    if (metrics[m].counter) {
                        counter += (double)(r % 50);
                        if (r % 97 == 0)
                            counter = (double)(r % 7); /* a reset */
                        v = counter;
                    } else {
                        v = (double)(r % 100000) / 1000.0;
                    }
                    fprintf(om,
                            "%s{topic=\"city/d%02d/%s/s%d\",district=\"d%02d\",kind=\"%s\","
                            "sensor=\"s%d\"} %.17g %lld.%03lld\n",
                            metrics[m].prom, d, metrics[m].kind, s, d, metrics[m].kind, s, v,
                            (long long)(ts / 1000), (long long)(ts % 1000));
                    fprintf(j,
                            "{\"topic\":\"city/d%02d/%s/s%d\",\"payload\":{\"ts\":%lld,"
                            "\"%s\":%.17g}}\n",
                            d, metrics[m].kind, s, (long long)ts, metrics[m].metric, v);
                }
            }
    }
    fprintf(om, "# EOF\n");
    fclose(om);
    fclose(j);
    const char *args[] = {"replay", "--rules", f->rules, "--input", in, "--db", f->db, NULL};
    struct cb_h_proc *rp = cb_h_citybrain(args, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(rp);
    CU_ASSERT_EQUAL_FATAL(cb_h_proc_wait(rp, 60000), 0);
}

/* The daemon on the fixture's database (a broker of its own, the API on a
 * free port, topic labels from LABELS, retention every second and raw
 * samples kept `raw_retention`, as storage.retention.raw writes it). */
static struct cb_h_proc *start_daemon_kept(const struct fixture *f, int *port,
                                           const char *raw_retention)
{
    struct cb_h_broker *b = cb_h_broker_start(NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    *port = cb_h_free_port();
    const char *run[] = {"run", "--broker", cb_h_broker_url(b), "--db", f->db, "--rules",
                         f->rules, "--http", cb_h_strf("127.0.0.1:%d", *port), "--set",
                         "sensors.label_pattern=" LABELS, "--set",
                         "storage.retention.interval=1s", "--set",
                         cb_h_strf("storage.retention.raw=%s", raw_retention), NULL};
    struct cb_h_proc *d = cbd_start(run, NULL, *port);
    CU_ASSERT_PTR_NOT_NULL_FATAL(d);
    return d;
}

static struct cb_h_proc *start_daemon(const struct fixture *f, int *port)
{
    return start_daemon_kept(f, port, "7d");
}

static int prometheus_ready(void *ctx)
{
    return cbd_http(*(int *)ctx, "GET", "/-/ready", NULL, NULL, NULL) == 200;
}

/* Prometheus with the fixture backfilled, on a free loopback port. */
static struct cb_h_proc *start_prometheus(const struct fixture *f, int *port)
{
    const char *data = cb_h_pathf("prom-data"), *cfg = cb_h_pathf("prometheus.yml");
    CU_ASSERT_EQUAL_FATAL(cb_h_sh("promtool tsdb create-blocks-from openmetrics '%s' '%s'", f->om,
                                  data),
                          0);
    static const char conf[] = "global:\n  scrape_interval: 1h\nscrape_configs: []\n";
    CU_ASSERT_EQUAL_FATAL(cb_h_write_file(cfg, conf, sizeof conf - 1), 0);
    *port = cb_h_free_port();
    const char *argv[] = {"prometheus",
                          cb_h_strf("--config.file=%s", cfg),
                          cb_h_strf("--storage.tsdb.path=%s", data),
                          cb_h_strf("--web.listen-address=127.0.0.1:%d", *port),
                          "--storage.tsdb.retention.time=30d",
                          "--log.level=warn",
                          NULL};
    struct cb_h_proc *p = cb_h_spawn("prometheus", "/usr/bin/prometheus", argv, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    int ready = cb_h_wait_until(prometheus_ready, port, 30000);
    if (!ready)
        fprintf(stderr, "prometheus did not get ready:\n%s\n", cb_h_proc_stderr(p));
    CU_ASSERT_FATAL(ready);
    return p;
}

/* ---- comparing answers ---- */

/* "name=value,..." of a metric object (Prometheus sorts the keys; both do). */
static const char *key_of(const cJSON *metric)
{
    const char *k = "";
    const cJSON *l;
    cJSON_ArrayForEach(l, metric) k = cb_h_strf("%s%s=%s,", k, l->string, l->valuestring);
    return k;
}

static int same_value(const char *a, const char *b)
{
    double x = strtod(a, NULL), y = strtod(b, NULL);
    if (isnan(x) || isnan(y))
        return isnan(x) && isnan(y);
    if (isinf(x) || isinf(y))
        return x == y;
    return fabs(x - y) <= 1e-9 * fmax(fabs(x), fabs(y)) + 1e-12;
}

static int same_point(const cJSON *a, const cJSON *b)
{
    return cJSON_GetArraySize(a) == 2 && cJSON_GetArraySize(b) == 2 &&
           llround(cJSON_GetArrayItem(a, 0)->valuedouble * 1000) ==
               llround(cJSON_GetArrayItem(b, 0)->valuedouble * 1000) &&
           same_value(cJSON_GetArrayItem(a, 1)->valuestring,
                      cJSON_GetArrayItem(b, 1)->valuestring);
}

/* Compares two /api/v1/query(_range) answers; prints the first difference.
 * 1 when they agree. */
static int same_answer(const char *what, const char *ours, const char *theirs)
{
    cJSON *a = cJSON_Parse(ours), *b = cJSON_Parse(theirs);
    int ok = 0;
    const char *why = "not JSON";
    if (!a || !b)
        goto out;
    const cJSON *da = cJSON_GetObjectItem(a, "data"), *db = cJSON_GetObjectItem(b, "data");
    why = "status or result type";
    if (!da || !db || strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(a, "status")), "success") ||
        strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(b, "status")), "success") ||
        strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(da, "resultType")),
               cJSON_GetStringValue(cJSON_GetObjectItem(db, "resultType"))))
        goto out;
    const cJSON *ra = cJSON_GetObjectItem(da, "result"), *rb = cJSON_GetObjectItem(db, "result");
    if (!strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(da, "resultType")), "scalar")) {
        why = "scalar";
        ok = same_point(ra, rb);
        goto out;
    }
    why = "number of series";
    if (cJSON_GetArraySize(ra) != cJSON_GetArraySize(rb))
        goto out;
    const cJSON *sa;
    cJSON_ArrayForEach(sa, ra)
    {
        const char *k = key_of(cJSON_GetObjectItem(sa, "metric"));
        const cJSON *sb = NULL, *c;
        cJSON_ArrayForEach(c, rb) if (!strcmp(key_of(cJSON_GetObjectItem(c, "metric")), k)) sb = c;
        why = cb_h_strf("series {%s} missing in Prometheus's answer", k);
        if (!sb)
            goto out;
        const cJSON *pa = cJSON_GetObjectItem(sa, "values"), *pb = cJSON_GetObjectItem(sb, "values");
        if (!pa) {
            why = cb_h_strf("value of {%s}", k);
            if (!same_point(cJSON_GetObjectItem(sa, "value"), cJSON_GetObjectItem(sb, "value")))
                goto out;
            continue;
        }
        why = cb_h_strf("number of points of {%s}: %d, Prometheus %d", k, cJSON_GetArraySize(pa),
                        cJSON_GetArraySize(pb));
        if (cJSON_GetArraySize(pa) != cJSON_GetArraySize(pb))
            goto out;
        for (int i = 0; i < cJSON_GetArraySize(pa); i++)
            if (!same_point(cJSON_GetArrayItem(pa, i), cJSON_GetArrayItem(pb, i))) {
                char *x = cJSON_PrintUnformatted(cJSON_GetArrayItem(pa, i));
                char *y = cJSON_PrintUnformatted(cJSON_GetArrayItem(pb, i));
                why = cb_h_strf("point %d of {%s}: %s, Prometheus %s", i, k, x, y);
                free(x);
                free(y);
                goto out;
            }
    }
    ok = 1;
out:
    if (!ok)
        fprintf(stderr, "\n  %s: %s\n    citybrain:  %.300s\n    prometheus: %.300s\n", what, why,
                ours, theirs);
    cJSON_Delete(a);
    cJSON_Delete(b);
    return ok;
}

/* Every supported construct (docs/api.md "Prometheus query API"). */
static const char *const exprs[] = {
    "level",
    "level{district=\"d01\"}",
    "level{district!=\"d01\",kind=\"river\"}",
    "level{topic=~\"city/d0[12]/.*\"}",
    "level{sensor!~\"s1\"}",
    "{__name__=~\"level|intensity\",district=\"d03\"}",
    "level offset 10m",
    "rate(flow_total[5m])",
    "rate(mm_total[1m])",
    "increase(flow_total[10m])",
    "increase(mm_total[3m] offset 5m)",
    "delta(level[5m])",
    "avg_over_time(level[10m])",
    "min_over_time(level[10m])",
    "max_over_time(intensity[7m])",
    "sum_over_time(level[10m])",
    "count_over_time(level[10m])",
    "last_over_time(level[10m])",
    "quantile_over_time(0.9, level[10m])",
    /* whole-minute ranges of an hour or more at a whole-minute step: from the 1-minute tier */
    "avg_over_time(level[1h])",
    "max_over_time(intensity[1h])",
    "min_over_time(level[1h] offset 3m)",
    "count_over_time(level[90m])",
    "sum_over_time(intensity[1h])",
    "last_over_time(level[1h])",
    "quantile_over_time(0.25, intensity[7m])",
    "sum by (district) (level)",
    "avg by (district, kind) ({__name__=~\"level|intensity\"})",
    "min without (sensor, topic) (level)",
    "max(level)",
    "count by (district) (level)",
    "sum by (district) (rate(flow_total[5m]))",
    "topk(2, level)",
    "bottomk(1, intensity)",
    "topk by (district) (1, level)",
    "level * 2 + 1",
    "2 ^ level / 1000",
    "level / 0",
    "-level",
    "level % 3",
    "level > 50",
    "level > bool 50",
    "50 < level",
    "level <= 20",
    "level - level offset 5m",
    "level >= level offset 1m",
    "level == bool level offset 1m",
    "rate(flow_total[5m]) * 60 > 100",
    "1 + 2 * 3 - 4 / 2",
    "(level + 1) % 2",
};

static void test_every_construct_answers_as_prometheus(void)
{
    struct fixture f;
    make_fixture(&f);
    int cport, pport;
    start_daemon(&f, &cport);
    start_prometheus(&f, &pport);
    int64_t start = f.t0 + 20 * 60000, end = f.t0 + SPAN_MS - 1000;
    /* a step of a whole minute, an odd one, and instants between samples */
    const char *ranges[] = {
        cb_h_strf("start=%lld&end=%lld&step=60", (long long)start / 1000, (long long)end / 1000),
        cb_h_strf("start=%lld.250&end=%lld&step=47", (long long)start / 1000 + 7,
                  (long long)end / 1000),
    };
    const char *instants[] = {cb_h_strf("time=%lld.500", (long long)(f.t0 / 1000 + 1800)),
                              cb_h_strf("time=%lld", (long long)(f.t0 / 1000 + 50 * 60))};
    int failures = 0, nonempty = 0;
    for (size_t e = 0; e < sizeof exprs / sizeof exprs[0]; e++) {
        const char *q = cbd_escape(exprs[e]);
        for (size_t k = 0; k < 4; k++) {
            const char *path = k < 2 ? cb_h_strf("/api/v1/query_range?query=%s&%s", q, ranges[k])
                                     : cb_h_strf("/api/v1/query?query=%s&%s", q, instants[k - 2]);
            const char *ours = NULL, *theirs = NULL;
            long sc = cbd_http(cport, "GET", path, NULL, NULL, &ours);
            long sp = cbd_http(pport, "GET", path, NULL, NULL, &theirs);
            nonempty += strstr(ours, "\"metric\"") != NULL || strstr(ours, "scalar") != NULL;
            if (sc != 200 || sp != 200 ||
                !same_answer(cb_h_strf("%s (%s)", exprs[e], path), ours, theirs)) {
                if (sc != 200 || sp != 200)
                    fprintf(stderr, "\n  %s: status %ld, Prometheus %ld: %.300s\n", exprs[e], sc,
                            sp, ours);
                failures++;
            }
        }
    }
    CU_ASSERT_EQUAL(failures, 0);
    /* answers with data, not two empty ones (only "level / 0 > ..." could be empty) */
    CU_ASSERT_EQUAL(nonempty, (int)(4 * (sizeof exprs / sizeof exprs[0])));
}

/* What the rollup rows answer exactly at whole-minute steps: selectors,
 * delta, *_over_time but quantile, and what is built on them. */
static const char *const tier_exprs[] = {
    "level",
    "level{district=\"d02\"} offset 10m",
    "delta(level[5m])",
    "delta(intensity[1m])",
    "avg_over_time(level[10m])",
    "min_over_time(intensity[3m])",
    "max_over_time(level[1h])",
    "sum_over_time(intensity[7m] offset 2m)",
    "count_over_time(level[90m])",
    "last_over_time(level[2m])",
    "sum by (district) (level)",
    "avg by (district) (avg_over_time(intensity[15m]))",
    "topk(2, max_over_time(level[30m]))",
    "level - level offset 5m",
};

/* Compares citybrain's answer to `path` with Prometheus's. */
static int compare_path(int cport, int pport, const char *what, const char *path)
{
    const char *ours = NULL, *theirs = NULL;
    long sc = cbd_http(cport, "GET", path, NULL, NULL, &ours);
    long sp = cbd_http(pport, "GET", path, NULL, NULL, &theirs);
    if (sc != 200 || sp != 200) {
        fprintf(stderr, "\n  %s: status %ld, Prometheus %ld: %.300s\n", what, sc, sp, ours);
        return 0;
    }
    return same_answer(what, ours, theirs);
}

struct raw_poll {
    int port;
    const char *path;
};

/* Whether the raw samples of the fixture are gone: quantile_over_time,
 * which only raw samples answer, has no value any more. */
static int raw_gone(void *ctx)
{
    struct raw_poll *p = ctx;
    const char *body = "";
    cbd_http(p->port, "GET", p->path, NULL, NULL, &body);
    return strstr(body, "\"result\":[]") != NULL;
}

/* Raw retention (storage.retention.raw=1h) has deleted the fixture's raw
 * samples: at whole-minute steps (and over 30 days at a 1-hour step, as a
 * Grafana panel asks) the rollup rows still answer selectors, delta and
 * *_over_time exactly as Prometheus does over the samples; rate answers
 * too, with the warnings. */
static void test_tiers_answer_as_prometheus_past_raw_retention(void)
{
    struct fixture f;
    make_fixture(&f);
    int cport, pport;
    start_daemon_kept(&f, &cport, "1h");
    start_prometheus(&f, &pport);
    int64_t start = f.t0 + 20 * 60000, end = f.t0 + SPAN_MS - 1000;
    struct raw_poll rp = {cport, cb_h_strf("/api/v1/query?query=%s&time=%lld",
                                           cbd_escape("quantile_over_time(0.5,level[10m])"),
                                           (long long)(f.t0 / 1000 + 3600))};
    CU_ASSERT_FATAL(cb_h_wait_until(raw_gone, &rp, CBD_TIMEOUT_MS));
    long long hour0 = (long long)((f.t0 + SPAN_MS) / 3600000 * 3600 - 30 * 24 * 3600);
    const char *ranges[] = {
        cb_h_strf("query_range?start=%lld&end=%lld&step=60", (long long)start / 1000,
                  (long long)end / 1000),
        cb_h_strf("query_range?start=%lld&end=%lld&step=3600", hour0, hour0 + 30 * 24 * 3600),
        cb_h_strf("query?time=%lld", (long long)(f.t0 / 1000 + 50 * 60)),
    };
    int failures = 0;
    for (size_t e = 0; e < sizeof tier_exprs / sizeof tier_exprs[0]; e++)
        for (size_t k = 0; k < 3; k++) {
            const char *path = cb_h_strf("/api/v1/%s&query=%s", ranges[k],
                                         cbd_escape(tier_exprs[e]));
            failures += !compare_path(cport, pport, cb_h_strf("%s (%s)", tier_exprs[e], path),
                                      path);
        }
    CU_ASSERT_EQUAL(failures, 0);
    /* rate reads raw samples within retention; past it the rows, with warnings */
    const char *body = NULL;
    CU_ASSERT_EQUAL(cbd_http(cport, "GET",
                             cb_h_strf("/api/v1/%s&query=%s", ranges[0],
                                       cbd_escape("rate(flow_total[5m])")),
                             NULL, NULL, &body),
                    200);
    CU_ASSERT_PTR_NOT_NULL(strstr(body, "\"values\":[["));
    if (!strstr(body, "]},\"warnings\":[\"raw samples "))
        fprintf(stderr, "\n  rate past retention: %.2000s\n", body);
    CU_ASSERT_PTR_NOT_NULL(strstr(body, "]},\"warnings\":[\"raw samples "));
    CU_ASSERT_PTR_NOT_NULL(strstr(body, "past raw retention (storage.retention.raw)"));
    CU_ASSERT_PTR_NOT_NULL(strstr(body, "\",\"approximated from the rollup tiers"));
}

/* promtool's output against citybrain equals its output against Prometheus. */
static void test_promtool_queries_work_against_citybrain(void)
{
    struct fixture f;
    make_fixture(&f);
    int cport, pport;
    start_daemon(&f, &cport);
    start_prometheus(&f, &pport);
    long long t = f.t0 / 1000 + 3600;
    const char *cmds[] = {
        cb_h_strf("query instant --time=%lld URL 'level{district=\"d01\"}'", t),
        cb_h_strf("query instant --time=%lld URL 'sum by (district) (rate(flow_total[5m]))'", t),
        cb_h_strf("query range --start=%lld --end=%lld --step=5m URL 'avg(level)'", t - 1800, t),
        cb_h_strf("query series --match='level{sensor=\"s2\"}' --start=%lld --end=%lld URL",
                  t - 600, t),
        "query labels URL district",
    };
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        const char *outs[2];
        for (int w = 0; w < 2; w++) {
            char *cmd = strdup(cmds[i]);
            char *url = strstr(cmd, "URL");
            *url = '\0';
            const char *file = cb_h_pathf("promtool-%zu-%d.out", i, w);
            int rc = cb_h_sh("promtool %shttp://127.0.0.1:%d%s > '%s' 2>&1", cmd,
                             w ? pport : cport, url + 3, file);
            free(cmd);
            outs[w] = cb_h_read_file(file, NULL);
            CU_ASSERT_EQUAL(rc, 0);
            CU_ASSERT_PTR_NOT_NULL_FATAL(outs[w]);
        }
        CU_ASSERT_TRUE(strlen(outs[0]) > 10);
        if (strcmp(outs[0], outs[1]) != 0)
            fprintf(stderr, "\n  promtool %s\n    citybrain:\n%s\n    prometheus:\n%s\n", cmds[i],
                    outs[0], outs[1]);
        CU_ASSERT_STRING_EQUAL(outs[0], outs[1]);
    }
}

/* The requests Grafana 10's Prometheus data source sends when it is added
 * ("Save & test") and a panel is drawn, as it sends them (form POSTs). */
static void test_grafana_data_source_requests_are_answered(void)
{
    struct fixture f;
    make_fixture(&f);
    int port;
    start_daemon(&f, &port);
    long long end = f.t0 / 1000 + 7000, start = end - 3600;
    const char *form = "application/x-www-form-urlencoded";
    const char *r;
    /* Save & test */
    CU_ASSERT_EQUAL(cbd_http(port, "GET", "/api/v1/status/buildinfo", NULL, NULL, &r), 200);
    CU_ASSERT_PTR_NOT_NULL(strstr(r, "\"version\":\"2.42.0\""));
    CU_ASSERT_EQUAL(cbd_http_type(port, "POST", "/api/v1/query", NULL, form,
                                  cb_h_strf("query=1%%2B1&time=%lld", end), &r),
                    200);
    CU_ASSERT_STRING_EQUAL(r, cb_h_strf("{\"status\":\"success\",\"data\":{\"resultType\":"
                                        "\"scalar\",\"result\":[%lld,\"2\"]}}",
                                        end));
    /* the query editor: metric names, labels, metadata, series of a metric */
    CU_ASSERT_EQUAL(cbd_http(port, "GET", cb_h_strf("/api/v1/labels?start=%lld&end=%lld", start, end),
                             NULL, NULL, &r),
                    200);
    CU_ASSERT_STRING_EQUAL(r, "{\"status\":\"success\",\"data\":[\"__name__\",\"district\","
                              "\"kind\",\"sensor\",\"topic\"]}");
    CU_ASSERT_EQUAL(cbd_http(port, "GET",
                             cb_h_strf("/api/v1/label/__name__/values?start=%lld&end=%lld", start,
                                       end),
                             NULL, NULL, &r),
                    200);
    CU_ASSERT_STRING_EQUAL(r, "{\"status\":\"success\",\"data\":[\"flow_total\",\"intensity\","
                              "\"level\",\"mm_total\"]}");
    CU_ASSERT_EQUAL(cbd_http(port, "GET", "/api/v1/metadata", NULL, NULL, &r), 200);
    CU_ASSERT_PTR_NOT_NULL(strstr(r, "\"flow_total\":[{\"type\":\"gauge\",\"help\":\"citybrain "
                                     "sensor metric \\\"flow.total\\\"\""));
    CU_ASSERT_EQUAL(cbd_http_type(port, "POST", "/api/v1/series", NULL, form,
                                  cb_h_strf("match%%5B%%5D=intensity%%7Bdistrict%%3D%%22d02%%22%%7D"
                                            "&start=%lld&end=%lld",
                                            start, end),
                                  &r),
                    200);
    CU_ASSERT_STRING_EQUAL(
        r, "{\"status\":\"success\",\"data\":[{\"__name__\":\"intensity\",\"district\":\"d02\","
           "\"kind\":\"rain\",\"sensor\":\"s1\",\"topic\":\"city/d02/rain/s1\"},{\"__name__\":"
           "\"intensity\",\"district\":\"d02\",\"kind\":\"rain\",\"sensor\":\"s2\",\"topic\":"
           "\"city/d02/rain/s2\"}]}");
    /* the panel: a range query with Grafana's step, aligned to it */
    CU_ASSERT_EQUAL(cbd_http_type(port, "POST", "/api/v1/query_range", NULL, form,
                                  cb_h_strf("query=sum%%20by%%20(district)%%20(level)&start=%lld"
                                            "&end=%lld&step=60",
                                            start / 60 * 60, end / 60 * 60),
                                  &r),
                    200);
    cJSON *j = cJSON_Parse(r);
    CU_ASSERT_PTR_NOT_NULL_FATAL(j);
    cJSON *res = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "data"), "result");
    CU_ASSERT_EQUAL(cJSON_GetArraySize(res), 3);
    CU_ASSERT_EQUAL(cJSON_GetArraySize(cJSON_GetObjectItem(cJSON_GetArrayItem(res, 0), "values")),
                    61);
    cJSON_Delete(j);
    /* what Grafana shows for a bad query: Prometheus's error shape */
    CU_ASSERT_EQUAL(cbd_http_type(port, "POST", "/api/v1/query_range", NULL, form,
                                  cb_h_strf("query=histogram_quantile(0.9%%2C%%20level)&start=%lld"
                                            "&end=%lld&step=60",
                                            start, end),
                                  &r),
                    400);
    CU_ASSERT_STRING_EQUAL(r, "{\"status\":\"error\",\"errorType\":\"bad_data\",\"error\":\"1:1: "
                              "unsupported: function \\\"histogram_quantile\\\"\"}");
}

struct alerts_poll {
    int port;
    const char *body;
};

/* The daemon's ALERTS series lists a firing instance. */
static int alerts_firing(void *ctx)
{
    struct alerts_poll *a = ctx;
    cbd_http(a->port, "GET", "/api/v1/query?query=ALERTS", NULL, NULL, &a->body);
    return strstr(a->body, "\"alertstate\":\"firing\"") != NULL;
}

/* A rule that fires on live telemetry shows as ALERTS{alertstate="firing"}. */
static void test_firing_rule_shows_as_alerts_series(void)
{
    struct cb_h_broker *b = cb_h_broker_start(NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    const char *rules = cb_h_pathf("r.rules");
    static const char rule[] = "rule river_high {\n  match \"city/{district}/river/{sensor}\"\n"
                               "  when level > 3\n  severity critical\n}\n";
    CU_ASSERT_EQUAL_FATAL(cb_h_write_file(rules, rule, sizeof rule - 1), 0);
    int port = cb_h_free_port();
    const char *run[] = {"run", "--broker", cb_h_broker_url(b), "--db", cb_h_pathf("a.db"),
                         "--rules", rules, "--http", cb_h_strf("127.0.0.1:%d", port), "--set",
                         "sensors.label_pattern=" LABELS, NULL};
    struct cb_h_proc *d = cbd_start(run, NULL, port);
    CU_ASSERT_PTR_NOT_NULL_FATAL(d);
    static const char payload[] = "{\"level\":3.5}";
    CU_ASSERT_EQUAL(cb_h_publish(cb_h_broker_url(b), "city/d07/river/s1", payload,
                                 sizeof payload - 1, 1),
                    0);
    struct alerts_poll ap = {port, ""};
    CU_ASSERT(cb_h_wait_until(alerts_firing, &ap, CBD_TIMEOUT_MS));
    const char *r = ap.body;
    CU_ASSERT_PTR_NOT_NULL(strstr(r, "{\"__name__\":\"ALERTS\",\"alertname\":\"river_high\","
                                     "\"alertstate\":\"firing\",\"district\":\"d07\","
                                     "\"sensor\":\"s1\",\"severity\":\"critical\"}"));
    CU_ASSERT_EQUAL(cbd_http(port, "GET",
                             "/api/v1/query?query=count%28ALERTS%7Balertstate%3D%22firing%22%7D%29",
                             NULL, NULL, &r),
                    200);
    CU_ASSERT_PTR_NOT_NULL(strstr(r, "\"value\":["));
    CU_ASSERT_PTR_NOT_NULL(strstr(r, ",\"1\"]"));
    CU_ASSERT_EQUAL(cbd_stop(d), 0);
}

void cb_test_suite_promql(void)
{
    CU_pSuite s = cb_h_add_suite("promql");
    CU_add_test(s, "promql: every supported construct answers as Prometheus 2.42 does over the "
                   "same samples, value by value",
                test_every_construct_answers_as_prometheus);
    CU_add_test(s, "promql: past raw retention the rollup rows answer selectors, delta and "
                   "*_over_time at whole-minute steps and over 30 days at a 1-hour step as "
                   "Prometheus does, and rate with warnings",
                test_tiers_answer_as_prometheus_past_raw_retention);
    CU_add_test(s, "promql: promtool query instant, range, series and labels print the same "
                   "against citybrain as against Prometheus",
                test_promtool_queries_work_against_citybrain);
    CU_add_test(s, "promql: the requests Grafana's Prometheus data source sends when added and "
                   "drawing a panel are answered in Prometheus's shapes",
                test_grafana_data_source_requests_are_answered);
    CU_add_test(s, "promql: a firing rule shows as ALERTS{alertstate=\"firing\"} with its labels",
                test_firing_rule_shows_as_alerts_series);
}
