/* The real daemon's shutdown with HTTP clients attached: `citybrain run`
 * ($CB_BIN) on a private mosquitto, HTTP on a free loopback port, clients on
 * raw sockets (the bytes and the timing matter, not a client library).
 *
 * SIGINT / SIGTERM must end the process with exit 0 and "stopped cleanly"
 * within about a second whatever the clients do: an idle keep-alive
 * connection, an event stream, a stream resuming from the store, a request
 * whose headers never finish, a request answered from the thread pool. The
 * HTTP timeouts are set long (30 s) so a quick exit shows the shutdown closed
 * the connections itself instead of waiting for their timers, and the store's
 * commit interval short so an idle writer thread is idle for most of the
 * test (it once spun holding its lock, which blocked the daemon's exit). */
#include <CUnit/CUnit.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zlib.h>

#include "tests/support/daemon_itest.h"

void cb_test_suite_daemon_http(void);

#define QUICK_MS 1500 /* "about a second", with room for the sanitizer build */

static const char RULES[] =
    "rule river_high {\n"
    "  match    \"city/{district}/river/{sensor}\"\n"
    "  when     last(level, 1m) > 4.5\n"
    "  severity major\n"
    "  message  \"{district}: river high\"\n"
    "}\n"
    /* unknown (no evidence either way) when qout is 0: a division by zero */
    "rule pump_ratio {\n"
    "  match    \"city/{district}/pump/{sensor}\"\n"
    "  when     qin / qout > 2\n"
    "  severity warning\n"
    "}\n";

struct daemon {
    struct cb_h_broker *broker;
    struct cb_h_proc *proc;
    int http_port;
    const char *db;
};

/* Starts mosquitto and `citybrain run` with HTTP; waits until HTTP accepts. */
static int daemon_start_env(struct daemon *d, const char *const *env);
static int daemon_start(struct daemon *d) { return daemon_start_env(d, NULL); }

static int daemon_start_env(struct daemon *d, const char *const *env)
{
    memset(d, 0, sizeof *d);
    d->broker = cb_h_broker_start(NULL);
    if (!d->broker)
        return -1;
    const char *rules = cb_h_pathf("city.rules");
    if (cb_h_write_file(rules, RULES, sizeof RULES - 1))
        return -1;
    d->db = cb_h_pathf("cb.db");
    d->http_port = cb_h_free_port();
    const char *args[] = {"run",
                          "--broker", cb_h_broker_url(d->broker),
                          "--db", d->db,
                          "--rules", rules,
                          "--http", cb_h_strf("127.0.0.1:%d", d->http_port),
                          "--set", "storage.commit_interval=10ms",
                          "--set", "http.header_timeout=30s",
                          "--set", "http.idle_timeout=30s",
                          NULL};
    d->proc = cb_h_citybrain(args, env);
    if (!d->proc)
        return -1;
    return cb_h_wait_port(d->http_port, 10000);
}

/* Sends sig and waits; checks exit 0, "stopped cleanly" and no h2o assertion
 * within QUICK_MS. Returns the milliseconds it took. */
static int64_t stop_quickly(struct daemon *d, int sig)
{
    int64_t t0 = cb_h_now_ms();
    CU_ASSERT_EQUAL(cb_h_proc_signal(d->proc, sig), 0);
    int rc = cb_h_proc_wait(d->proc, 15000);
    int64_t took = cb_h_now_ms() - t0;
    const char *err = cb_h_proc_stderr(d->proc);
    if (rc != 0 || took > QUICK_MS || !strstr(err, "stopped cleanly"))
        fprintf(stderr, "\nexit %d after %lld ms; stderr:\n%s\n", rc, (long long)took, err);
    CU_ASSERT_EQUAL(rc, 0);
    CU_ASSERT(took <= QUICK_MS);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "stopped cleanly"));
    CU_ASSERT_PTR_NULL(strstr(err, "Assertion"));
    CU_ASSERT_PTR_NULL(strstr(err, "still busy at shutdown"));
    return took;
}

/* One request on a new connection, left open (keep-alive) after the answer. */
static int keepalive_after_request(int port, const char *path)
{
    int fd = cbd_raw_connect(port);
    if (fd < 0)
        return -1;
    char req[256], buf[8192] = "";
    snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: t\r\n\r\n", path);
    if (cbd_raw_send(fd, req) || !cbd_raw_read(fd, buf, sizeof buf, "\r\n\r\n", 5000)) {
        close(fd);
        return -1;
    }
    CU_ASSERT_EQUAL(strncmp(buf, "HTTP/1.1 200", 12), 0);
    return fd;
}

static void test_no_client(void)
{
    struct daemon d;
    CU_ASSERT_EQUAL_FATAL(daemon_start(&d), 0);
    stop_quickly(&d, SIGINT);
}

static void test_keepalive_open(void)
{
    struct daemon d;
    CU_ASSERT_EQUAL_FATAL(daemon_start(&d), 0);
    int fd = keepalive_after_request(d.http_port, "/api/health");
    CU_ASSERT_FATAL(fd >= 0);
    stop_quickly(&d, SIGTERM);
    /* the server closed the idle connection (EOF, not a timeout) */
    char buf[256] = "";
    CU_ASSERT(cbd_raw_read(fd, buf, sizeof buf, NULL, 1000));
    close(fd);
}

static void test_every_kind_of_client(void)
{
    struct daemon d;
    CU_ASSERT_EQUAL_FATAL(daemon_start(&d), 0);
    /* a transition, so the store has something to resume from */
    CU_ASSERT_EQUAL(cb_h_publish(cb_h_broker_url(d.broker), "city/d07/river/s12",
                                 "{\"level\":5.2}", 13, 1),
                    0);
    int fds[8];
    size_t n = 0;
    fds[n++] = keepalive_after_request(d.http_port, "/api/health");
    fds[n++] = keepalive_after_request(d.http_port, "/api/sensors"); /* pool thread */
    fds[n++] = keepalive_after_request(d.http_port, "/");            /* a static file */
    int sse = cbd_raw_connect(d.http_port);
    CU_ASSERT_FATAL(sse >= 0);
    char sbuf[8192] = "";
    CU_ASSERT(cbd_raw_send(sse, "GET /api/events HTTP/1.1\r\nHost: t\r\n\r\n") == 0);
    CU_ASSERT(cbd_raw_read(sse, sbuf, sizeof sbuf, "citybrain events", 5000));
    fds[n++] = sse;
    int resume = cbd_raw_connect(d.http_port);
    CU_ASSERT_FATAL(resume >= 0);
    CU_ASSERT(cbd_raw_send(resume, "GET /api/events HTTP/1.1\r\nHost: t\r\nLast-Event-ID: 0\r\n\r\n") ==
              0);
    fds[n++] = resume;
    int partial = cbd_raw_connect(d.http_port); /* headers that never end */
    CU_ASSERT_FATAL(partial >= 0);
    CU_ASSERT(cbd_raw_send(partial, "GET /api/health HTTP/1.1\r\nHost: t\r\nX-Slow: ") == 0);
    fds[n++] = partial;
    int silent = cbd_raw_connect(d.http_port); /* connected, never says a word */
    fds[n++] = silent;
    int inflight = cbd_raw_connect(d.http_port); /* pipelined, the answers unread */
    CU_ASSERT(cbd_raw_send(inflight, "GET /api/sensors HTTP/1.1\r\nHost: t\r\n\r\n"
                                 "GET /api/rules HTTP/1.1\r\nHost: t\r\n\r\n") == 0);
    fds[n++] = inflight;
    for (size_t i = 0; i < n; i++)
        CU_ASSERT(fds[i] >= 0);

    stop_quickly(&d, SIGTERM);
    /* every connection was closed by the server */
    for (size_t i = 0; i < n; i++) {
        char buf[8192] = "";
        if (fds[i] < 0)
            continue;
        CU_ASSERT(cbd_raw_read(fds[i], buf, sizeof buf, NULL, 1000));
        close(fds[i]);
    }
}

/* Ten starts and stops in a row, alternating SIGINT and SIGTERM, each after
 * one request with its connection left open. */
static void test_ten_times(void)
{
    int64_t worst = 0;
    for (int i = 0; i < 10; i++) {
        struct daemon d;
        CU_ASSERT_EQUAL_FATAL(daemon_start(&d), 0);
        int fd = keepalive_after_request(d.http_port, "/api/alerts");
        CU_ASSERT(fd >= 0);
        int64_t took = stop_quickly(&d, i % 2 ? SIGTERM : SIGINT);
        if (took > worst)
            worst = took;
        if (fd >= 0)
            close(fd);
        cb_h_broker_stop(d.broker);
    }
    fprintf(stderr, " [slowest stop %lld ms] ", (long long)worst);
}

/* CPU time (user + system, in clock ticks) of a process from /proc. */
static long cpu_ticks(pid_t pid)
{
    char path[64], line[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(line, 1, sizeof line - 1, f);
    fclose(f);
    line[n] = '\0';
    const char *p = strrchr(line, ')'); /* the command may hold spaces */
    long ut = 0, st = 0;
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %ld %ld", &ut, &st) != 2)
        return -1;
    return ut + st;
}

static int64_t g_until;
static int time_passed(void *ctx)
{
    (void)ctx;
    return cb_h_now_ms() >= g_until;
}

/* An idle engine (no telemetry, no clients) uses a small share of one core:
 * the store's writer thread once spun on an expired commit deadline. */
static void test_idle_engine_does_not_spin(void)
{
    struct daemon d;
    CU_ASSERT_EQUAL_FATAL(daemon_start(&d), 0);
    pid_t pid = cb_h_proc_pid(d.proc);
    long t0 = cpu_ticks(pid);
    int64_t w0 = cb_h_now_ms();
    g_until = w0 + 1000; /* measures the external process: not a rule window */
    cb_h_wait_until(time_passed, NULL, 2000);
    long t1 = cpu_ticks(pid);
    int64_t wall = cb_h_now_ms() - w0;
    CU_ASSERT_FATAL(t0 >= 0 && t1 >= t0);
    double share = (double)(t1 - t0) * 1000.0 / (double)sysconf(_SC_CLK_TCK) / (double)wall;
    fprintf(stderr, " [idle CPU %.0f %%] ", share * 100);
    CU_ASSERT(share < 0.25);
    stop_quickly(&d, SIGTERM);
}

/* ---- the GET /api/alerts cache ------------------------------------------------ */

struct answer {
    int status;
    char head[4096];
    char body[65536]; /* decoded (gunzipped) */
    size_t len;
    int gzipped;
    char etag[64];
};

static void header_value(const char *head, const char *name, char *out, size_t cap)
{
    out[0] = '\0';
    size_t nl = strlen(name);
    for (const char *p = head; (p = strchr(p, '\n')) != NULL;) {
        p++;
        if (strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
            const char *v = p + nl + 1;
            while (*v == ' ')
                v++;
            size_t n = strcspn(v, "\r\n");
            if (n >= cap)
                n = cap - 1;
            memcpy(out, v, n);
            out[n] = '\0';
            return;
        }
    }
}

/* One request on its own connection (Connection: close); the body is
 * gunzipped when the answer says gzip. Returns 0, or -1. */
static int request(int port, const char *method, const char *path, const char *headers,
                   const char *body, struct answer *a)
{
    memset(a, 0, sizeof *a);
    int fd = cbd_raw_connect(port);
    if (fd < 0)
        return -1;
    char req[2048];
    snprintf(req, sizeof req, "%s %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n%s"
                              "Content-Length: %zu\r\n\r\n%s",
             method, path, headers ? headers : "", body ? strlen(body) : 0, body ? body : "");
    static char raw[1 << 18];
    raw[0] = '\0';
    int ok = cbd_raw_send(fd, req) == 0 && cbd_raw_read(fd, raw, sizeof raw, NULL, 5000);
    close(fd);
    char *sep = strstr(raw, "\r\n\r\n");
    if (!ok || !sep || sscanf(raw, "HTTP/1.1 %d", &a->status) != 1)
        return -1;
    size_t hl = (size_t)(sep - raw) + 2;
    if (hl >= sizeof a->head)
        return -1;
    memcpy(a->head, raw, hl);
    a->head[hl] = '\0';
    header_value(a->head, "etag", a->etag, sizeof a->etag);
    char enc[32], clen[32];
    header_value(a->head, "content-encoding", enc, sizeof enc);
    header_value(a->head, "content-length", clen, sizeof clen);
    const char *b = sep + 4;
    size_t blen = clen[0] ? (size_t)strtoul(clen, NULL, 10) : strlen(b);
    if (!strcmp(enc, "gzip")) {
        a->gzipped = 1;
        z_stream z;
        memset(&z, 0, sizeof z);
        if (inflateInit2(&z, 15 + 16) != Z_OK)
            return -1;
        z.next_in = (Bytef *)b;
        z.avail_in = (uInt)blen;
        z.next_out = (Bytef *)a->body;
        z.avail_out = sizeof a->body - 1;
        int rc = inflate(&z, Z_FINISH);
        a->len = z.total_out;
        inflateEnd(&z);
        if (rc != Z_STREAM_END)
            return -1;
    } else {
        if (blen >= sizeof a->body)
            return -1;
        memcpy(a->body, b, blen);
        a->len = blen;
    }
    a->body[a->len] = '\0';
    return 0;
}

#define GZIP "Accept-Encoding: gzip, deflate\r\n"

struct has_ctx {
    int port;
    const char *needle;
};
static int alerts_have(void *ctx)
{
    struct has_ctx *h = ctx;
    struct answer a;
    return request(h->port, "GET", "/api/alerts", NULL, NULL, &a) == 0 && strstr(a.body, h->needle);
}

struct resolved_ctx {
    int port;
    const char *path, *needle;
};

static int answer_has(void *ctx)
{
    struct resolved_ctx *h = ctx;
    struct answer a;
    return request(h->port, "GET", h->path, NULL, NULL, &a) == 0 && a.status == 200 &&
           strstr(a.body, h->needle);
}

/* Starts citybrain with no rules on broker url, its API on port, a database
 * of its own, and sensors.label_pattern = pattern. */
static struct cb_h_proc *start_with_labels(const char *url, int port, const char *pattern)
{
    const char *args[] = {"run",
                          "--broker", url,
                          "--db", cb_h_pathf("pos-%d.db", port),
                          "--http", cb_h_strf("127.0.0.1:%d", port),
                          "--set", "storage.commit_interval=10ms",
                          "--set", "rules.allow_none=true",
                          "--set", cb_h_strf("sensors.label_pattern=%s", pattern),
                          NULL};
    return cbd_start(args, NULL, port);
}

/* A sensor is placed by its own latest lat/lon readings, else by its lat/lon
 * (or latitude/longitude) labels from sensors.label_pattern; a label that is
 * no number in range places nothing (docs/console.md, "The city map file"). */
static void test_sensor_positions(void)
{
    struct cb_h_broker *broker = cb_h_broker_start(NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(broker);
    const char *url = cb_h_broker_url(broker);
    int port = cb_h_free_port();
    struct cb_h_proc *p = start_with_labels(url, port, "city/{district}/{kind}/{sensor}/{lat}/{lon}");
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    CU_ASSERT_EQUAL(cb_h_publish(url, "city/d03/air/s05/31.2304/121.4737", "{\"pm25\":12}", 11, 1), 0);
    CU_ASSERT_EQUAL(cb_h_publish(url, "city/d03/air/s06/north/121.47", "{\"pm25\":13}", 11, 1), 0);
    CU_ASSERT_EQUAL(cb_h_publish(url, "city/d03/air/s07/95/121.47", "{\"pm25\":14}", 11, 1), 0);
    CU_ASSERT_EQUAL(cb_h_publish(url, "city/d03/air/s08/1e1/121.47", "{\"pm25\":15}", 11, 1), 0);
    struct resolved_ctx rc = {port, "/api/sensors", "\"topic\":\"city/d03/air/s08/1e1/121.47\""};
    CU_ASSERT_FATAL(cb_h_wait_until(answer_has, &rc, 10000));
    rc.needle = "\"position\":{\"lat\":31.2304,\"lon\":121.4737,\"from\":\"label\"}}";
    CU_ASSERT(cb_h_wait_until(answer_has, &rc, 10000));
    struct answer a;
    CU_ASSERT_EQUAL(request(port, "GET", "/api/sensors", NULL, NULL, &a), 0);
    /* a latitude "north", 95 or 1e1 places nothing */
    const char *unplaced[] = {"s06/north/121.47", "s07/95/121.47", "s08/1e1/121.47"};
    for (size_t i = 0; i < sizeof unplaced / sizeof *unplaced; i++) {
        const char *at = strstr(a.body, unplaced[i]);
        const char *pos = at ? strstr(at, "\"position\":") : NULL; /* its own: the last field */
        CU_ASSERT(pos && !strncmp(pos, "\"position\":null}", 16));
    }
    /* its own readings (SenML) come before its labels */
    const char *senml = "[{\"n\":\"lat\",\"v\":31.25},{\"n\":\"lon\",\"v\":121.5}]";
    CU_ASSERT_EQUAL(cb_h_publish(url, "city/d03/air/s05/31.2304/121.4737", senml, strlen(senml), 1), 0);
    rc.needle = "\"position\":{\"lat\":31.25,\"lon\":121.5,\"from\":\"reading\"}}";
    CU_ASSERT(cb_h_wait_until(answer_has, &rc, 10000));
    CU_ASSERT_EQUAL(cbd_stop(p), 0);

    /* the long names, in a city whose topics end in longitude, latitude */
    port = cb_h_free_port();
    p = start_with_labels(url, port, "city/{district}/{kind}/{sensor}/{longitude}/{latitude}");
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    CU_ASSERT_EQUAL(cb_h_publish(url, "city/d04/air/s01/-70.65/-33.45", "{\"pm25\":12}", 11, 1), 0);
    rc.port = port;
    rc.needle = "\"position\":{\"lat\":-33.45,\"lon\":-70.65,\"from\":\"label\"}}";
    CU_ASSERT(cb_h_wait_until(answer_has, &rc, 10000));
    CU_ASSERT_EQUAL(cbd_stop(p), 0);
    cb_h_broker_stop(broker);
}

/* Opens GET /api/events on a raw socket and reads until the stream's opening
 * comment (into events, cap bytes, which later reads append to). Returns the
 * socket, or -1. */
static int open_events(int port, char *events, size_t cap)
{
    int fd = cbd_raw_connect(port);
    events[0] = '\0';
    if (fd < 0)
        return -1;
    if (cbd_raw_send(fd, "GET /api/events HTTP/1.1\r\nHost: t\r\n\r\n") ||
        !cbd_raw_read(fd, events, cap, "citybrain events", 5000)) {
        close(fd);
        return -1;
    }
    return fd;
}

/* After each transition (seen on /api/events, which the daemon sends as it
 * happens) and each acknowledgement, the very next GET /api/alerts, gzip or
 * not, shows it; the old ETag gets 200, the current one 304. */
static void test_alerts_cache_never_stale(void)
{
    struct daemon d;
    const char *env[] = {"CITYBRAIN_API_TOKEN=cache-test-token", NULL};
    CU_ASSERT_EQUAL_FATAL(daemon_start_env(&d, env), 0);
    const char *url = cb_h_broker_url(d.broker);
    CU_ASSERT_EQUAL(cb_h_publish(url, "city/d07/river/s00", "{\"level\":5}", 11, 1), 0);
    struct has_ctx h = {d.http_port, "river_high/city/d07/river/s00"};
    CU_ASSERT_FATAL(cb_h_wait_until(alerts_have, &h, 10000));

    static char events[1 << 16];
    int sse = open_events(d.http_port, events, sizeof events);
    CU_ASSERT_FATAL(sse >= 0);

    struct answer a, b, c;
    CU_ASSERT_EQUAL_FATAL(request(d.http_port, "GET", "/api/alerts", GZIP, NULL, &a), 0);
    CU_ASSERT_EQUAL(a.status, 200);
    CU_ASSERT(a.gzipped);
    CU_ASSERT(a.etag[0] != '\0');
    CU_ASSERT_EQUAL_FATAL(request(d.http_port, "GET", "/api/alerts", NULL, NULL, &b), 0);
    CU_ASSERT_FALSE(b.gzipped);
    CU_ASSERT_STRING_EQUAL(a.body, b.body); /* one answer, two encodings */
    CU_ASSERT_STRING_EQUAL(a.etag, b.etag);
    char inm[128];
    snprintf(inm, sizeof inm, "If-None-Match: %s\r\n", a.etag);
    CU_ASSERT_EQUAL(request(d.http_port, "GET", "/api/alerts", inm, NULL, &c), 0);
    CU_ASSERT_EQUAL(c.status, 304);

    for (int i = 1; i <= 12; i++) {
        char topic[64], id[96], prev_inm[128];
        snprintf(topic, sizeof topic, "city/d07/river/s%02d", i);
        snprintf(id, sizeof id, "\"river_high/%s\"", topic);
        snprintf(prev_inm, sizeof prev_inm, "If-None-Match: %s\r\n", a.etag);
        /* the cached answer is warm for both the plain and a filtered query */
        CU_ASSERT_EQUAL(request(d.http_port, "GET", "/api/alerts?state=firing", GZIP, NULL, &b), 0);
        CU_ASSERT_EQUAL(cb_h_publish(url, topic, "{\"level\":5}", 11, 1), 0);
        CU_ASSERT_FATAL(cbd_raw_read(sse, events, sizeof events, id, 5000));
        CU_ASSERT_EQUAL(request(d.http_port, "GET", "/api/alerts", GZIP, NULL, &a), 0);
        CU_ASSERT_PTR_NOT_NULL(strstr(a.body, id));
        CU_ASSERT_EQUAL(request(d.http_port, "GET", "/api/alerts?state=firing", GZIP, NULL, &c), 0);
        CU_ASSERT_PTR_NOT_NULL(strstr(c.body, id));
        CU_ASSERT_EQUAL(request(d.http_port, "GET", "/api/alerts", prev_inm, NULL, &c), 0);
        CU_ASSERT_EQUAL(c.status, 200);
        CU_ASSERT_PTR_NOT_NULL(strstr(c.body, id));
        if (i % 3 == 0) { /* and an acknowledgement */
            char path[160], want[160];
            snprintf(path, sizeof path, "/api/alerts/river_high%%2Fcity%%2Fd07%%2Friver%%2Fs%02d/ack", i);
            CU_ASSERT_EQUAL(request(d.http_port, "POST", path,
                                    "Authorization: Bearer cache-test-token\r\n"
                                    "Content-Type: application/json\r\n",
                                    "{\"by\":\"ana\"}", &c),
                            0);
            CU_ASSERT_EQUAL(c.status, 200);
            CU_ASSERT_EQUAL(request(d.http_port, "GET", "/api/alerts?state=acknowledged", GZIP,
                                    NULL, &c),
                            0);
            snprintf(want, sizeof want, "\"id\":%s", id);
            CU_ASSERT_PTR_NOT_NULL(strstr(c.body, want));
            CU_ASSERT_PTR_NOT_NULL(strstr(c.body, "\"acked_by\":\"ana\""));
        }
    }
    /* A resolution: /api/alerts?state=resolved reads it from the store (on
     * the pool), with the rule and severity filters. */
    CU_ASSERT_EQUAL(cb_h_publish(url, "city/d07/river/s00", "{\"level\":1}", 11, 1), 0);
    struct resolved_ctx rc = {d.http_port, "/api/alerts?state=resolved",
                              "\"id\":\"river_high/city/d07/river/s00\""};
    CU_ASSERT(cb_h_wait_until(answer_has, &rc, 10000));
    CU_ASSERT_EQUAL(request(d.http_port, "GET",
                            "/api/alerts?state=resolved&severity=major&rule=river_high", NULL,
                            NULL, &c),
                    0);
    CU_ASSERT_EQUAL(c.status, 200);
    CU_ASSERT_PTR_NOT_NULL(strstr(c.body, "\"state\":\"resolved\""));
    CU_ASSERT_PTR_NULL(strstr(c.body, "river/s01\""));
    CU_ASSERT_EQUAL(request(d.http_port, "GET", "/api/alerts?state=resolved&severity=critical",
                            NULL, NULL, &c),
                    0);
    CU_ASSERT_PTR_NOT_NULL(strstr(c.body, "{\"alerts\":[]}"));
    CU_ASSERT_EQUAL(request(d.http_port, "GET", "/api/alerts?state=firing", NULL, NULL, &c), 0);
    CU_ASSERT_PTR_NULL(strstr(c.body, "river/s00\""));
    close(sse);
    /* Only a clean exit here: the MQTT disconnect after alert publishes can
     * take its own 2 s timeout (ingest), which is not what this test is about. */
    CU_ASSERT_EQUAL(cb_h_proc_signal(d.proc, SIGTERM), 0);
    CU_ASSERT_EQUAL(cb_h_proc_wait(d.proc, 15000), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(cb_h_proc_stderr(d.proc), "stopped cleanly"));
}

/* A firing alert whose verdict becomes unknown is marked stale, which is no
 * transition: the event stream tells it at once as `event: stale` (no id,
 * not in the transition log), and again when evidence brings it back. */
static void test_stale_mark_is_pushed_on_the_feed(void)
{
    struct daemon d;
    CU_ASSERT_EQUAL_FATAL(daemon_start(&d), 0);
    const char *url = cb_h_broker_url(d.broker);
    static char events[1 << 16];
    int sse = open_events(d.http_port, events, sizeof events);
    CU_ASSERT_FATAL(sse >= 0);
    struct resolved_ctx up = {d.http_port, "/api/health", "\"mqtt\":\"connected\""};
    CU_ASSERT_FATAL(cb_h_wait_until(answer_has, &up, 10000));

    const char *topic = "city/d03/pump/p1";
    CU_ASSERT_EQUAL(cb_h_publish(url, topic, "{\"qin\":9,\"qout\":1}", 18, 1), 0);
    CU_ASSERT_FATAL(cbd_raw_read(sse, events, sizeof events, "\"state\":\"firing\"", 10000));
    events[0] = '\0';
    CU_ASSERT_EQUAL(cb_h_publish(url, topic, "{\"qin\":9,\"qout\":0}", 18, 1), 0);
    const char *stale = "event: stale\ndata: {\"id\":\"pump_ratio/city/d03/pump/p1\","
                        "\"rule\":\"pump_ratio\",\"labels\":{\"district\":\"d03\",\"sensor\":\"p1\"},"
                        "\"stale\":true,\"at\":";
    int got = cbd_raw_read(sse, events, sizeof events, stale, 10000);
    if (!got)
        fprintf(stderr, "\nno stale notice on the feed:\n%s\n", events);
    CU_ASSERT(got);
    CU_ASSERT_PTR_NULL(strstr(events, "id: ")); /* a notice, not a transition */
    struct answer a;
    CU_ASSERT_EQUAL(request(d.http_port, "GET", "/api/alerts", NULL, NULL, &a), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(a.body, "\"stale\":true"));

    events[0] = '\0';
    CU_ASSERT_EQUAL(cb_h_publish(url, topic, "{\"qin\":9,\"qout\":2}", 18, 1), 0);
    CU_ASSERT(cbd_raw_read(sse, events, sizeof events,
                       "event: stale\ndata: {\"id\":\"pump_ratio/city/d03/pump/p1\","
                       "\"rule\":\"pump_ratio\",\"labels\":{\"district\":\"d03\",\"sensor\":\"p1\"},"
                       "\"stale\":false,",
                       10000));
    CU_ASSERT_PTR_NULL(strstr(events, "event: transition")); /* still the same firing */
    close(sse);
    CU_ASSERT_EQUAL(cb_h_proc_signal(d.proc, SIGTERM), 0);
    CU_ASSERT_EQUAL(cb_h_proc_wait(d.proc, 15000), 0);
}

void cb_test_suite_daemon_http(void)
{
    CU_pSuite s = cb_h_add_suite("daemon_http");
    CU_add_test(s, "daemon: SIGINT with no HTTP client exits 0 at once", test_no_client);
    CU_add_test(s, "daemon: SIGTERM after a request, its keep-alive connection open, exits 0 "
                   "within a second and closes the connection",
                test_keepalive_open);
    CU_add_test(s, "daemon: SIGTERM with event streams, a resuming stream, half-sent headers, a "
                   "silent connection and unread pipelined answers exits 0 within a second",
                test_every_kind_of_client);
    CU_add_test(s, "daemon: ten stops in a row after a request each exit 0 within a second",
                test_ten_times);
    CU_add_test(s, "daemon: an idle engine does not spin", test_idle_engine_does_not_spin);
    CU_add_test(s, "daemon: /api/sensors places a sensor by its lat/lon readings, else by its "
                   "lat/lon labels, else nowhere",
                test_sensor_positions);
    CU_add_test(s, "daemon: GET /api/alerts is never stale after a transition or an "
                   "acknowledgement (gzip, ETag and 304 included)",
                test_alerts_cache_never_stale);
    CU_add_test(s, "daemon: a firing alert marked stale, and fresh again, is pushed on "
                   "/api/events as a stale notice at once",
                test_stale_mark_is_pushed_on_the_feed);
}
