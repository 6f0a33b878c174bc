/* HTTP API benchmark. Prints `key value` lines:
 *
 *   api_alerts_rps, api_alerts_p50_ms, api_alerts_p99_ms
 *       GET /api/alerts with 1,000 firing alerts (real rule engine instances,
 *       rendered as the daemon's provider renders them), keep-alive clients
 *       sending Accept-Encoding: gzip as browsers do; the API's cache keyed
 *       by cb_engine_version serves the answer rendered and gzipped once
 *       (goals: >= 20,000 req/s, p99 <= 5 ms)
 *   api_alerts_body_bytes       size of that answer (gzipped)
 *   api_alerts_identity_*       the same without Accept-Encoding (cached, plain)
 *   api_alerts_uncached_*       the same with no version hook: rendered per request
 *   api_alerts_department_*    the same for a department's token (http.department
 *       limited to district d07: 50 of the 1,000), filtered per request
 *       against the rule set (docs/api.md "Departments"), never cached
 *   api_series_24h_rps, api_series_24h_p50_ms, api_series_24h_p99_ms
 *       GET /api/series for one series over 24 hours (1 sample / 10 s in a
 *       real store), 5-minute buckets, answered on the thread pool
 *   promql_range_24h_rps, promql_range_24h_p50_ms, promql_range_24h_p99_ms
 *       GET /api/v1/query_range of that series over 24 hours at a 1-minute
 *       step from a whole minute (1,441 points; from the 1-minute rollup
 *       rows, docs/api.md "Rollup tiers"), the daemon's own provider
 *       (cmd/api_provider.c: the store's sensors, 1,000 ALERTS series)
 *   promql_sum_by_district_rps, promql_sum_by_district_p50_ms, ..._p99_ms
 *       GET /api/v1/query_range of `sum by (district) (pm25)` over the last
 *       hour at a 1-minute step: 200 air sensors in 20 districts, 1 sample /
 *       10 s each (20 series of 61 points; from the rollup rows)
 *   promql_*_raw_*  the same two through the same provider without its rows
 *       (prom_rows NULL: raw samples only, 8,640 and 78,000 read per
 *       request), the baseline of the same run
 *
 * The server runs on this process's main thread (one uv loop, as in the
 * daemon); the clients are threads with one keep-alive connection each,
 * sending a request, reading the whole answer, and timing each round trip.
 *
 * Usage: bench_api [--seconds N] [--clients N] [--port P]   (2 s per case, 2 clients)
 *                  [--series-topic T --series-metric M] [--brief 1]
 *   --port P   measure GET /api/alerts of a running `citybrain run` on
 *              127.0.0.1:P instead (gzip and plain; its alerts as they are)
 *   --series-topic T --series-metric M   with --port, also measure GET
 *              /api/series for T/M over the last 24 hours, 5-minute buckets
 *              (keys daemon_series_24h_*)
 *   --brief 1  with --port, only the cases dashboards make: /api/alerts with
 *              gzip and (when given) the series query */
#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "api/api.h"
#include "base/clock.h"
#include "cmd/api_provider.h"
#include "base/config.h"
#include "base/log.h"
#include "base/metrics.h"
#include "base/strbuf.h"
#include "rules/rules.h"
#include "storage/storage.h"

#define NALERTS 1000
#define LABELS "city/{district}/{kind}/{sensor}" /* sensors.label_pattern for /api/v1 */
#define MAX_LAT 2000000

static const char RULES[] = "rule hot {\n"
                            "  match \"city/{district}/river/{sensor}\"\n"
                            "  when level > 9\n"
                            "  severity critical\n"
                            "  message \"{district}/{sensor}: level above 9 m\"\n"
                            "}\n";

struct bench {
    struct cb_engine *engine;
    char db[256];
};

/* ---- the benchmark's provider: the daemon's rendering, minus the daemon ---- */

struct list_ctx {
    struct cb_strbuf *out;
    size_t n;
    const struct cb_api_alert_filter *f; /* a department's keep (NULL: all) */
};

static void list_one(void *ctx, const struct cb_transition *t)
{
    struct list_ctx *c = ctx;
    if (c->f && !cb_api_alert_kept(c->f, t))
        return;
    if (c->n++)
        cb_strbuf_putc(c->out, ',');
    cb_transition_to_json(t, c->out);
}

static int p_alerts(void *ctx, const struct cb_api_alert_filter *f, struct cb_strbuf *out)
{
    struct bench *b = ctx;
    struct list_ctx c = {out, 0, f};
    cb_strbuf_puts(out, "{\"alerts\":[");
    cb_engine_foreach_instance(b->engine, list_one, &c);
    cb_strbuf_puts(out, "]}");
    return 200;
}

static int p_rules_list(void *ctx, struct cb_strbuf *out)
{
    struct bench *b = ctx;
    cb_strbuf_puts(out, "{\"rules\":");
    cb_engine_rules_json(b->engine, out);
    cb_strbuf_putc(out, '}');
    return 200;
}

static uint64_t p_alerts_version(void *ctx)
{
    struct bench *b = ctx;
    return cb_engine_version(b->engine);
}

static void *p_reader_open(void *ctx, char *err, size_t errlen)
{
    struct bench *b = ctx;
    return cb_store_reader_open(b->db, err, errlen);
}

static void p_reader_close(void *ctx, void *r)
{
    (void)ctx;
    cb_store_reader_close(r);
}

struct series_ctx {
    struct cb_strbuf *out;
    size_t n;
};

static int bucket_one(void *ctx, const char *topic, const char *metric, const struct cb_bucket *b)
{
    (void)topic;
    (void)metric;
    struct series_ctx *c = ctx;
    cb_strbuf_printf(c->out, "%s{\"ts\":%lld,\"count\":%llu,\"min\":", c->n++ ? "," : "",
                     (long long)b->ts, (unsigned long long)b->count);
    cb_strbuf_json_number(c->out, b->min);
    cb_strbuf_puts(c->out, ",\"max\":");
    cb_strbuf_json_number(c->out, b->max);
    cb_strbuf_puts(c->out, ",\"avg\":");
    cb_strbuf_json_number(c->out, b->count ? b->sum / (double)b->count : 0);
    cb_strbuf_puts(c->out, ",\"last\":");
    cb_strbuf_json_number(c->out, b->last);
    cb_strbuf_putc(c->out, '}');
    return 0;
}

static int p_series(void *ctx, void *reader, const struct cb_api_series_query *q,
                    struct cb_strbuf *out)
{
    (void)ctx;
    struct series_ctx c = {out, 0};
    cb_strbuf_puts(out, "{\"buckets\":[");
    int rc = cb_store_query_buckets(reader, q->topic, q->metric, q->from_ms, q->to_ms, q->step_ms,
                                    bucket_one, &c);
    cb_strbuf_puts(out, "]}");
    return rc ? 500 : 200;
}

/* ---- set-up ---- */

static void no_transition(void *ctx, const struct cb_transition *t)
{
    (void)ctx;
    (void)t;
}

static int64_t now_ms_value;

static int make_engine(struct bench *b)
{
    struct cb_diags diags = {0};
    struct cb_ruleset *rs = cb_ruleset_compile_source("bench.rules", RULES, sizeof RULES - 1, &diags);
    cb_diags_free(&diags);
    if (!rs)
        return -1;
    static struct cb_clock clock = {cb_clock_manual_now, &now_ms_value};
    now_ms_value = cb_wall_ms();
    struct cb_engine_options eo = {.max_skew_ms = 60000, .lateness_ms = 0};
    b->engine = cb_engine_new(rs, &clock, &eo, no_transition, NULL);
    cb_ruleset_release(rs);
    if (!b->engine)
        return -1;
    for (int i = 0; i < NALERTS; i++) {
        char topic[64];
        snprintf(topic, sizeof topic, "city/d%02d/river/s%04d", i % 20, i);
        struct cb_sample s = {.metric = "level", .ts_ms = now_ms_value, .value = 10.0 + i % 7};
        if (cb_engine_offer(b->engine, topic, NULL, &s, 1, NULL, NULL))
            return -1;
    }
    struct cb_engine_stats st;
    cb_engine_get_stats(b->engine, &st);
    return st.instances >= NALERTS ? 0 : -1;
}

static int make_store(struct bench *b, struct cb_config *cfg, int64_t now)
{
    char err[256];
    snprintf(b->db, sizeof b->db, "/tmp/cb-bench-api-%d.db", (int)getpid());
    free(cfg->storage_db);
    cfg->storage_db = strdup(b->db);
    struct cb_store *s = cb_store_open(cfg, NULL, err, sizeof err);
    if (!s) {
        fprintf(stderr, "bench_api: store: %s\n", err);
        return -1;
    }
    for (int64_t ts = now - 86400000LL; ts < now; ts += 10000) {
        struct cb_sample smp = {.metric = "level", .ts_ms = ts, .value = (double)(ts % 997) / 100.0};
        cb_store_append(s, "city/d07/river/s12", NULL, &smp, 1, 0);
    }
    /* a kind of sensor for `sum by (district)`: 200 air sensors, the last 2 hours */
    for (int64_t ts = now - 7200000LL; ts < now; ts += 10000)
        for (int i = 0; i < 200; i++) {
            char topic[64];
            snprintf(topic, sizeof topic, "city/d%02d/air/a%03d", i % 20, i);
            struct cb_sample smp = {.metric = "pm25", .ts_ms = ts + i,
                                    .value = (double)((ts / 1000 + i) % 150)};
            while (cb_store_append(s, topic, NULL, &smp, 1, 0) != 0)
                cb_store_flush(s); /* the pending queue is full: let the writer catch up */
        }
    cb_store_close(s);
    return 0;
}

/* ---- clients ---- */

struct client {
    uv_thread_t thread;
    int port;
    const char *request;
    double seconds;
    double *lat; /* ms */
    size_t nlat, cap;
    size_t body_bytes;
    int failed;
};

static int connect_to(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Reads one response with a Content-Length. Returns the body size or -1. */
static long read_response(int fd, char **buf, size_t *cap)
{
    size_t len = 0;
    long need = -1;
    size_t head = 0;
    for (;;) {
        if (len + 65536 > *cap) {
            *cap = (len + 65536) * 2;
            *buf = realloc(*buf, *cap);
        }
        ssize_t n = recv(fd, *buf + len, *cap - len - 1, 0);
        if (n <= 0)
            return -1;
        len += (size_t)n;
        (*buf)[len] = '\0';
        if (need < 0) {
            char *end = strstr(*buf, "\r\n\r\n");
            if (!end)
                continue;
            head = (size_t)(end - *buf) + 4;
            char *cl = strcasestr(*buf, "\r\ncontent-length:");
            if (!cl || cl > end || strncmp(*buf, "HTTP/1.1 200", 12) != 0)
                return -1;
            need = strtol(cl + 17, NULL, 10);
        }
        if (len >= head + (size_t)need)
            return need;
    }
}

static void client_main(void *arg)
{
    struct client *c = arg;
    int fd = connect_to(c->port);
    if (fd < 0) {
        c->failed = 1;
        return;
    }
    char *buf = NULL;
    size_t cap = 0;
    size_t rlen = strlen(c->request);
    int64_t end = cb_mono_us() + (int64_t)(c->seconds * 1e6);
    while (cb_mono_us() < end && c->nlat < c->cap) {
        int64_t t0 = cb_mono_us();
        if (send(fd, c->request, rlen, MSG_NOSIGNAL) != (ssize_t)rlen) {
            c->failed = 1;
            break;
        }
        long body = read_response(fd, &buf, &cap);
        if (body < 0) {
            c->failed = 1;
            break;
        }
        c->body_bytes = (size_t)body;
        c->lat[c->nlat++] = (double)(cb_mono_us() - t0) / 1000.0;
    }
    free(buf);
    close(fd);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

struct run {
    uv_loop_t *loop;
    struct client *clients;
    int nclients;
    uv_async_t done;
    uv_thread_t waiter;
};

static void waiter_main(void *arg)
{
    struct run *r = arg;
    for (int i = 0; i < r->nclients; i++)
        uv_thread_join(&r->clients[i].thread);
    uv_async_send(&r->done);
}

static void on_done(uv_async_t *a)
{
    uv_close((uv_handle_t *)a, NULL);
    uv_stop(a->loop);
}

/* Runs one case: clients in threads, the server loop here until they end. */
/* The bearer token run_case sends (NULL: none). */
static const char *bench_token;

static void run_case(uv_loop_t *loop, int port, const char *name, const char *path, int gzip,
                     int nclients, double seconds)
{
    struct client *cl = calloc((size_t)nclients, sizeof *cl);
    char request[1024], auth[200] = "";
    if (bench_token)
        snprintf(auth, sizeof auth, "Authorization: Bearer %s\r\n", bench_token);
    snprintf(request, sizeof request, "GET %s HTTP/1.1\r\nHost: bench\r\n%s%s\r\n", path,
             gzip ? "Accept-Encoding: gzip, deflate, br\r\n" : "", auth);
    struct run r = {loop, cl, nclients, {0}, 0};
    uv_async_init(loop, &r.done, on_done);
    int64_t t0 = cb_mono_us();
    for (int i = 0; i < nclients; i++) {
        cl[i].port = port;
        cl[i].request = request;
        cl[i].seconds = seconds;
        cl[i].cap = MAX_LAT / (size_t)nclients;
        cl[i].lat = malloc(cl[i].cap * sizeof(double));
        uv_thread_create(&cl[i].thread, client_main, &cl[i]);
    }
    uv_thread_create(&r.waiter, waiter_main, &r);
    uv_run(loop, UV_RUN_DEFAULT);
    uv_thread_join(&r.waiter);
    double elapsed = (double)(cb_mono_us() - t0) / 1e6;
    size_t n = 0, body = 0;
    int failed = 0;
    for (int i = 0; i < nclients; i++) {
        n += cl[i].nlat;
        failed |= cl[i].failed;
        body = cl[i].body_bytes;
    }
    double *all = malloc((n ? n : 1) * sizeof *all);
    size_t k = 0;
    for (int i = 0; i < nclients; i++) {
        memcpy(all + k, cl[i].lat, cl[i].nlat * sizeof(double));
        k += cl[i].nlat;
        free(cl[i].lat);
    }
    qsort(all, n, sizeof *all, cmp_double);
    if (failed || n == 0) {
        printf("%s_failed 1\n", name);
    } else {
        printf("%s_rps %.0f\n", name, (double)n / elapsed);
        printf("%s_p50_ms %.3f\n", name, all[n / 2]);
        printf("%s_p99_ms %.3f\n", name, all[(size_t)((double)n * 0.99)]);
        printf("%s_body_bytes %zu\n", name, body);
    }
    fflush(stdout);
    free(all);
    free(cl);
}

/* Appends S percent-encoded (all but RFC 3986 unreserved bytes) to OUT of
 * size CAP. Returns 0, or -1 when it does not fit. */
static int url_encode(const char *s, char *out, size_t cap)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        int plain = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                    (*p >= '0' && *p <= '9') || strchr("-._~", *p);
        if (n + (plain ? 1 : 3) >= cap)
            return -1;
        if (plain) {
            out[n++] = (char)*p;
        } else {
            out[n++] = '%';
            out[n++] = hex[*p >> 4];
            out[n++] = hex[*p & 15];
        }
    }
    out[n] = '\0';
    return 0;
}

static void on_closed(void *ctx) { (void)ctx; }
/* The other API is still open: the loop would run on, so stop it. */
static void on_closed_stop(void *ctx) { uv_stop(ctx); }

/* The /api/v1 cases on an API of provider p, keys promql_*SUFFIX: one series
 * over 24 hours and `sum by (district) (pm25)` over the last hour, both at a
 * 1-minute step from a whole minute, as Grafana aligns a panel's range to
 * its step. */
static void promql_cases(uv_loop_t *loop, const struct cb_api_provider *p, const char *suffix,
                         int64_t now, int nclients, double seconds)
{
    struct cb_config cfg;
    struct cb_config_error cerr;
    char err[256], path[300], name[64];
    cb_config_defaults(&cfg);
    cb_config_set(&cfg, "http.listen", "127.0.0.1:0", 1, "bench", &cerr);
    struct cb_api *api = cb_api_start(loop, &cfg, p, err, sizeof err);
    if (!api) {
        fprintf(stderr, "bench_api: /api/v1: %s\n", err);
        cb_config_free(&cfg);
        return;
    }
    static const struct {
        const char *name, *query; /* the query as it goes in the URL */
        long long span_s;
    } cases[] = {
        {"promql_range_24h", "level%7Btopic%3D%22city%2Fd07%2Friver%2Fs12%22%7D", 86400},
        {"promql_sum_by_district", "sum%20by%20(district)%20(pm25)", 3600},
    };
    long long end_s = (long long)(now / 60000 * 60);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        snprintf(path, sizeof path, "/api/v1/query_range?query=%s&start=%lld&end=%lld&step=60",
                 cases[i].query, end_s - cases[i].span_s, end_s);
        snprintf(name, sizeof name, "%s%s", cases[i].name, suffix);
        run_case(loop, cb_api_port(api), name, path, 0, nclients, seconds);
    }
    cb_api_close(api, on_closed_stop, loop);
    uv_run(loop, UV_RUN_DEFAULT);
    cb_config_free(&cfg);
}

int main(int argc, char **argv)
{
    double seconds = 2;
    int nclients = 2, ext_port = 0, brief = 0;
    const char *series_topic = NULL, *series_metric = NULL;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--series-topic"))
            series_topic = argv[i + 1];
        else if (!strcmp(argv[i], "--series-metric"))
            series_metric = argv[i + 1];
        else if (!strcmp(argv[i], "--brief"))
            brief = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--seconds"))
            seconds = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "--clients"))
            nclients = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--port"))
            ext_port = atoi(argv[i + 1]);
    }
    if (seconds <= 0 || seconds > 60 || nclients < 1 || nclients > 64) {
        fprintf(stderr, "usage: bench_api [--seconds 0-60] [--clients 1-64]\n");
        return 2;
    }
    cb_log_threshold = CB_LOG_WARN;
    if (ext_port > 0) { /* a running daemon: its loop, its provider */
        uv_loop_t l;
        uv_loop_init(&l);
        run_case(&l, ext_port, "daemon_alerts", "/api/alerts", 1, nclients, seconds);
        if (!brief) {
            run_case(&l, ext_port, "daemon_alerts_identity", "/api/alerts", 0, nclients, seconds);
            run_case(&l, ext_port, "daemon_alerts_firing_filter", "/api/alerts?state=firing", 1,
                     nclients, seconds);
        }
        if (series_topic && series_metric) {
            char et[300], em[200], path[700];
            int64_t to = cb_wall_ms();
            if (url_encode(series_topic, et, sizeof et) || url_encode(series_metric, em, sizeof em)) {
                fprintf(stderr, "bench_api: series topic or metric too long\n");
                uv_loop_close(&l);
                return 2;
            }
            snprintf(path, sizeof path, "/api/series?topic=%s&metric=%s&from=%lld&to=%lld&step=5m",
                     et, em, (long long)(to - 86400000LL), (long long)to);
            run_case(&l, ext_port, "daemon_series_24h", path, 0, nclients, seconds);
        }
        uv_loop_close(&l);
        return 0;
    }
    struct bench b = {0};
    struct cb_config cfg;
    cb_config_defaults(&cfg);
    struct cb_config_error cerr;
    cb_config_set(&cfg, "http.listen", "127.0.0.1:0", 1, "bench", &cerr);
    int64_t now = cb_wall_ms();
    if (make_engine(&b) || make_store(&b, &cfg, now)) {
        fprintf(stderr, "bench_api: set-up failed\n");
        return 1;
    }
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct cb_api_provider p = {.ctx = &b,
                                .alerts = p_alerts,
                                .alerts_version = p_alerts_version,
                                .rules_list = p_rules_list,
                                .reader_open = p_reader_open,
                                .reader_close = p_reader_close,
                                .series = p_series};
    char err[256];
    struct cb_api *api = cb_api_start(&loop, &cfg, &p, err, sizeof err);
    if (!api) {
        fprintf(stderr, "bench_api: %s\n", err);
        return 1;
    }
    int port = cb_api_port(api);
    printf("api_alerts_firing %d\n", NALERTS);
    run_case(&loop, port, "api_alerts", "/api/alerts", 1, nclients, seconds);
    run_case(&loop, port, "api_alerts_identity", "/api/alerts", 0, nclients, seconds);
    /* the same provider without the version hook: every request renders */
    struct cb_api_provider p2 = p;
    p2.alerts_version = NULL;
    struct cb_config cfg2;
    cb_config_defaults(&cfg2);
    cb_config_set(&cfg2, "http.listen", "127.0.0.1:0", 1, "bench", &cerr);
    struct cb_api *api2 = cb_api_start(&loop, &cfg2, &p2, err, sizeof err);
    if (api2) {
        run_case(&loop, cb_api_port(api2), "api_alerts_uncached", "/api/alerts", 1, nclients,
                 seconds);
        cb_api_close(api2, on_closed_stop, &loop);
        uv_run(&loop, UV_RUN_DEFAULT);
    }
    cb_config_free(&cfg2);
    /* a department's token: the same alerts, filtered per request */
    struct cb_config cfg3;
    cb_config_defaults(&cfg3);
    cb_config_set(&cfg3, "http.listen", "127.0.0.1:0", 1, "bench", &cerr);
    cb_config_set(&cfg3, "http.department", "east token=bench-east label=district=d07", 0,
                  "bench", &cerr);
    struct cb_api *api3 = cb_api_start(&loop, &cfg3, &p, err, sizeof err);
    if (api3) {
        bench_token = "bench-east";
        run_case(&loop, cb_api_port(api3), "api_alerts_department", "/api/alerts", 1, nclients,
                 seconds);
        bench_token = NULL;
        cb_api_close(api3, on_closed_stop, &loop);
        uv_run(&loop, UV_RUN_DEFAULT);
    } else {
        fprintf(stderr, "bench_api: %s\n", err);
    }
    cb_config_free(&cfg3);
    char path[256];
    snprintf(path, sizeof path,
             "/api/series?topic=city%%2Fd07%%2Friver%%2Fs12&metric=level&from=%lld&to=%lld&step=5m",
             (long long)(now - 86400000LL), (long long)now);
    run_case(&loop, port, "api_series_24h", path, 0, nclients, seconds);

    /* /api/v1 through the daemon's own provider */
    struct cmd_api_sources src = {.cfg = &cfg, .engine = b.engine};
    char perr[128];
    struct cb_topic_pattern *labels =
        cb_topic_pattern_compile(LABELS, strlen(LABELS), perr, sizeof perr, NULL);
    src.label_pattern = labels;
    struct cb_api_provider daemon_p, pp = {0};
    cmd__api_provider(&src, &daemon_p);
    pp.ctx = daemon_p.ctx;
    pp.reader_open = daemon_p.reader_open;
    pp.reader_close = daemon_p.reader_close;
    pp.prom_series = daemon_p.prom_series;
    pp.prom_samples = daemon_p.prom_samples;
    pp.prom_rows = daemon_p.prom_rows;
    pp.prom_alerts = daemon_p.prom_alerts;
    /* the baseline in the same run: the same provider without rows (raw samples only) */
    struct cb_api_provider pp_raw = pp;
    pp_raw.prom_rows = NULL;
    for (int raw = 1; raw >= 0 && src.label_pattern; raw--)
        promql_cases(&loop, raw ? &pp_raw : &pp, raw ? "_raw" : "", now, nclients, seconds);
    if (!src.label_pattern)
        fprintf(stderr, "bench_api: /api/v1: %s\n", perr);
    cb_topic_pattern_free(labels);
    cb_api_close(api, on_closed, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    cb_engine_free(b.engine);
    char side[300];
    unlink(b.db);
    snprintf(side, sizeof side, "%s-wal", b.db);
    unlink(side);
    snprintf(side, sizeof side, "%s-shm", b.db);
    unlink(side);
    snprintf(side, sizeof side, "rm -rf '%s.journal'", b.db);
    if (system(side) != 0)
        fprintf(stderr, "bench_api: could not remove %s.journal\n", b.db);
    cb_config_free(&cfg);
    cb_metrics_free();
    return 0;
}
