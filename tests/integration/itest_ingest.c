/* Ingest end to end: a real `citybrain run` (no HTTP) against a private
 * mosquitto; what is published is read back from the SQLite file. Every good
 * sample is stored exactly once, bad payloads are refused without harming the
 * engine, a broker restart is survived without help, and SIGTERM exits 0
 * with nothing lost. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tests/support/harness.h"

struct daemon_ctx {
    struct cb_h_broker *b;
    struct cb_h_proc *p;
    const char *db;
    const char *client_id;
};

static struct cb_h_proc *start_daemon(struct daemon_ctx *c)
{
    const char *args[] = {"run",
                          "--broker", cb_h_broker_url(c->b),
                          "--db", c->db,
                          "--http", "off",
                          "--topic", "city/#",
                          "--client-id", c->client_id,
                          "--set", "mqtt.reconnect_min=100ms",
                          "--set", "mqtt.reconnect_max=500ms",
                          "--set", "storage.commit_interval=50ms",
                          "--set", "ingest.max_json_depth=8",
                          "--set", "rules.allow_none=true", /* ingest only */
                          NULL};
    c->p = cb_h_citybrain(args, NULL);
    return c->p;
}

/* Rows stored for topic (and metric, when not NULL); -1 before the schema exists. */
static int64_t rows(const char *db, const char *topic, const char *metric)
{
    int64_t n = -1;
    if (metric)
        cb_h_sql_int(db, &n,
                     "SELECT count(*) FROM samples s JOIN series r ON r.id = s.series_id "
                     "JOIN sensors e ON e.id = r.sensor_id WHERE e.topic = '%s' AND r.metric = '%s'",
                     topic, metric);
    else
        cb_h_sql_int(db, &n,
                     "SELECT count(*) FROM samples s JOIN series r ON r.id = s.series_id "
                     "JOIN sensors e ON e.id = r.sensor_id WHERE e.topic LIKE '%s'",
                     topic);
    return n;
}

struct rows_wait {
    const char *db, *topic, *metric;
    int64_t want;
};
static int rows_reached(void *ctx)
{
    struct rows_wait *w = ctx;
    return rows(w->db, w->topic, w->metric) >= w->want;
}

/* Publishes probes until the daemon stores a new one: it is then subscribed
 * (probes stored by an earlier run do not count). */
static int wait_ready(struct daemon_ctx *c, struct cb_h_pub *p)
{
    int64_t before = rows(c->db, "city/probe", "probe");
    if (before < 0)
        before = 0;
    for (int i = 0; i < 100; i++) {
        if (!cb_h_proc_running(c->p))
            return 0;
        const char *pl = cb_h_strf("{\"probe\":%d,\"ts\":%lld}", i, (long long)cb_h_now_ms());
        cb_h_pub_str(p, "city/probe", pl, 0);
        struct rows_wait w = {c->db, "city/probe", "probe", before + 1};
        if (cb_h_wait_until(rows_reached, &w, 200))
            return 1;
    }
    return 0;
}

static void setup_daemon(struct daemon_ctx *c, struct cb_h_pub **pub)
{
    c->b = cb_h_broker_start(NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c->b);
    c->db = cb_h_pathf("city.db");
    c->client_id = cb_h_strf("cb-ingest-%d", (int)getpid());
    CU_ASSERT_PTR_NOT_NULL_FATAL(start_daemon(c));
    *pub = cb_h_pub_connect(cb_h_broker_url(c->b), NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(*pub);
    int ready = wait_ready(c, *pub);
    if (!ready)
        fprintf(stderr, "citybrain stderr:\n%s\n", cb_h_proc_stderr(c->p));
    CU_ASSERT_TRUE_FATAL(ready);
}

static void stop_daemon_ok(struct daemon_ctx *c)
{
    CU_ASSERT_EQUAL(cb_h_proc_signal(c->p, SIGTERM), 0);
    int rc = cb_h_proc_wait(c->p, 20000);
    if (rc != 0)
        fprintf(stderr, "citybrain exit %d, stderr:\n%s\n", rc, cb_h_proc_stderr(c->p));
    CU_ASSERT_EQUAL(rc, 0);
}

static void test_formats_and_junk(void)
{
    struct daemon_ctx c;
    struct cb_h_pub *p;
    setup_daemon(&c, &p);
    long long base = (long long)cb_h_now_ms() - 120000;

    /* Good: JSON objects (nested, with ts in ms), SenML packs (bt in
     * seconds with fractions, base values), bare numbers. */
    for (int i = 0; i < 50; i++) {
        const char *pl = cb_h_strf("{\"level\":%d.5,\"air\":{\"pm25\":%d},\"id\":\"x\",\"ts\":%lld}",
                                   i, i, base + i);
        CU_ASSERT_EQUAL(cb_h_pub_str(p, "city/d1/json", pl, 1), 0);
    }
    for (int i = 0; i < 20; i++) {
        const char *pl = cb_h_strf("[{\"bn\":\"dev-%d\",\"bt\":%lld.%03lld,\"bv\":100,\"n\":\"temp\","
                                   "\"v\":%d},{\"n\":\"hum\",\"v\":1,\"t\":0.001}]",
                                   7, (base + 1000 + i) / 1000, (base + 1000 + i) % 1000, i);
        CU_ASSERT_EQUAL(cb_h_pub_str(p, "city/d1/senml", pl, 1), 0);
    }
    for (int i = 0; i < 10; i++)
        CU_ASSERT_EQUAL(cb_h_pub_str(p, cb_h_strf("city/bare/%d", i), cb_h_strf("%d.25", i), 1), 0);

    /* Junk, between and after the good ones. */
    CU_ASSERT_EQUAL(cb_h_pub_str(p, "city/junk/malformed", "{\"level\": 3", 1), 0);
    CU_ASSERT_EQUAL(cb_h_pub_str(p, "city/junk/nan", "{\"level\": NaN}", 1), 0);
    CU_ASSERT_EQUAL(cb_h_pub_str(p, "city/junk/inf", "-Infinity", 1), 0);
    CU_ASSERT_EQUAL(cb_h_pub_str(p, "city/junk/overflow", "{\"level\": 1e999}", 1), 0);
    CU_ASSERT_EQUAL(cb_h_pub_str(p, "city/junk/string", "{\"level\": \"high\"}", 1), 0);
    char deep[4096] = "";
    for (int i = 0; i < 1000; i++)
        strcat(deep, "[");
    CU_ASSERT_EQUAL(cb_h_pub_str(p, "city/junk/deep", deep, 1), 0);
    size_t big = 500 * 1024;
    char *blob = malloc(big + 64);
    CU_ASSERT_PTR_NOT_NULL_FATAL(blob);
    strcpy(blob, "{\"level\":1,\"s\":\"");
    size_t k = strlen(blob);
    memset(blob + k, 'x', big);
    strcpy(blob + k + big, "\"}");
    CU_ASSERT_EQUAL(cb_h_pub_send(p, "city/junk/big", blob, strlen(blob), 1, 0), 0);
    free(blob);
    unsigned char bin[256];
    for (int i = 0; i < 256; i++)
        bin[i] = (unsigned char)(255 - i);
    CU_ASSERT_EQUAL(cb_h_pub_send(p, "city/junk/binary", bin, sizeof bin, 1, 0), 0);
    CU_ASSERT_EQUAL(cb_h_pub_send(p, "city/junk/empty", "", 0, 1, 0), 0);
    CU_ASSERT_EQUAL(cb_h_pub_str(p, "city/junk/senml", "[{\"n\":\"a\",\"v\":1,\"x_\":2}]", 1), 0);

    CU_ASSERT_EQUAL(cb_h_pub_str(p, "city/end", cb_h_strf("{\"end\":1,\"ts\":%lld}", base + 5000), 1), 0);
    struct rows_wait w = {c.db, "city/end", "end", 1};
    CU_ASSERT_TRUE_FATAL(cb_h_wait_until(rows_reached, &w, 15000));

    CU_ASSERT_TRUE(cb_h_proc_running(c.p));
    CU_ASSERT_EQUAL(rows(c.db, "city/d1/json", "level"), 50);
    CU_ASSERT_EQUAL(rows(c.db, "city/d1/json", "air.pm25"), 50);
    CU_ASSERT_EQUAL(rows(c.db, "city/d1/json", "id"), 0);
    CU_ASSERT_EQUAL(rows(c.db, "city/d1/senml", "temp"), 20);
    CU_ASSERT_EQUAL(rows(c.db, "city/d1/senml", "hum"), 20);
    CU_ASSERT_EQUAL(rows(c.db, "city/bare/%", NULL), 10);
    CU_ASSERT_EQUAL(rows(c.db, "city/junk/%", NULL), 0);
    /* Values and times are what was sent. */
    double v = 0;
    CU_ASSERT_EQUAL(cb_h_sql_double(c.db, &v,
                                    "SELECT s.value FROM samples s JOIN series r ON r.id = s.series_id "
                                    "JOIN sensors e ON e.id = r.sensor_id WHERE e.topic = "
                                    "'city/d1/json' AND r.metric = 'level' AND s.ts = %lld",
                                    base + 7), 0);
    CU_ASSERT_DOUBLE_EQUAL(v, 7.5, 1e-9);
    CU_ASSERT_EQUAL(cb_h_sql_double(c.db, &v,
                                    "SELECT s.value FROM samples s JOIN series r ON r.id = s.series_id "
                                    "JOIN sensors e ON e.id = r.sensor_id WHERE e.topic = "
                                    "'city/d1/senml' AND r.metric = 'temp' AND s.ts = %lld",
                                    base + 1003), 0);
    CU_ASSERT_DOUBLE_EQUAL(v, 103, 1e-9);
    int64_t dev = 0;
    CU_ASSERT_EQUAL(cb_h_sql_int(c.db, &dev, "SELECT count(*) FROM sensors WHERE topic = "
                                             "'city/d1/senml' AND device = 'dev-7'"), 0);
    CU_ASSERT_EQUAL(dev, 1);
    stop_daemon_ok(&c);
}

static void test_broker_restart_during_ingest(void)
{
    struct daemon_ctx c;
    struct cb_h_pub *p;
    setup_daemon(&c, &p);
    long long base = (long long)cb_h_now_ms() - 120000;
    for (int i = 0; i < 100; i++) {
        if (i == 50) {
            /* The broker goes away mid-stream and comes back; citybrain
             * reconnects on its own. Messages published before it is back
             * wait in its persistent session. */
            CU_ASSERT_EQUAL_FATAL(cb_h_broker_restart(c.b), 0);
            p = cb_h_pub_connect(cb_h_broker_url(c.b), NULL);
            CU_ASSERT_PTR_NOT_NULL_FATAL(p);
        }
        const char *pl = cb_h_strf("{\"flow\":%d,\"ts\":%lld}", i, base + i);
        CU_ASSERT_EQUAL(cb_h_pub_str(p, "city/pipe/1", pl, 1), 0);
    }
    struct rows_wait w = {c.db, "city/pipe/1", "flow", 100};
    int ok = cb_h_wait_until(rows_reached, &w, 20000);
    if (!ok)
        fprintf(stderr, "stored %lld of 100; stderr:\n%s\n",
                (long long)rows(c.db, "city/pipe/1", "flow"), cb_h_proc_stderr(c.p));
    CU_ASSERT_TRUE(ok);
    CU_ASSERT_EQUAL(rows(c.db, "city/pipe/1", "flow"), 100);
    CU_ASSERT_TRUE(cb_h_proc_running(c.p));
    CU_ASSERT_PTR_NOT_NULL(strstr(cb_h_proc_stderr(c.p), "reconnecting"));
    stop_daemon_ok(&c);
}

static void test_sigterm_flushes_and_loses_nothing(void)
{
    struct daemon_ctx c;
    struct cb_h_pub *p;
    setup_daemon(&c, &p);
    long long base = (long long)cb_h_now_ms() - 120000;
    for (int i = 0; i < 300; i++) {
        const char *pl = cb_h_strf("{\"n\":%d,\"ts\":%lld}", i, base + i);
        CU_ASSERT_EQUAL(cb_h_pub_str(p, "city/term/1", pl, 1), 0);
    }
    /* SIGTERM at once, while messages are still flowing. */
    stop_daemon_ok(&c);
    int64_t after_first = rows(c.db, "city/term/1", "n");
    CU_ASSERT_TRUE(after_first >= 0 && after_first <= 300);

    /* What was not taken before the stop waits at the broker: the next run
     * (same client id, persistent session) stores the rest, and nothing twice. */
    CU_ASSERT_PTR_NOT_NULL_FATAL(start_daemon(&c));
    CU_ASSERT_TRUE_FATAL(wait_ready(&c, p));
    struct rows_wait w = {c.db, "city/term/1", "n", 300};
    CU_ASSERT_TRUE(cb_h_wait_until(rows_reached, &w, 20000));
    CU_ASSERT_EQUAL(rows(c.db, "city/term/1", "n"), 300);
    int64_t distinct = 0;
    CU_ASSERT_EQUAL(cb_h_sql_int(c.db, &distinct,
                                 "SELECT count(DISTINCT s.ts) FROM samples s JOIN series r ON "
                                 "r.id = s.series_id WHERE r.metric = 'n'"), 0);
    CU_ASSERT_EQUAL(distinct, 300);
    stop_daemon_ok(&c);
    CU_ASSERT_EQUAL(rows(c.db, "city/term/1", "n"), 300);
}

/* Publishes the bare numbers 0 .. n-1 on topic at qos, back to back (QoS 1
 * waits for each PUBACK). */
static void burst(struct cb_h_pub *p, const char *topic, int n, int qos)
{
    for (int i = 0; i < n; i++)
        CU_ASSERT_EQUAL(cb_h_pub_str(p, topic, cb_h_strf("%d", i), qos), 0);
}

/* Checks that topic holds exactly the n bare numbers of burst(): n rows
 * (waiting up to 10 s for them), values 0 .. n-1, each once. */
static void assert_burst_stored(struct daemon_ctx *c, const char *topic, int n)
{
    struct rows_wait w = {c->db, topic, "value", n};
    cb_h_wait_until(rows_reached, &w, 10000);
    CU_ASSERT_EQUAL(rows(c->db, topic, "value"), n);
    int64_t distinct = -1;
    CU_ASSERT_EQUAL(cb_h_sql_int(c->db, &distinct,
                                 "SELECT count(DISTINCT s.value) FROM samples s JOIN series r ON "
                                 "r.id = s.series_id JOIN sensors e ON e.id = r.sensor_id WHERE "
                                 "e.topic = '%s' AND s.value >= 0 AND s.value < %d",
                                 topic, n),
                    0);
    CU_ASSERT_EQUAL(distinct, n);
}

/* Bare numbers carry no time: the engine stamps them on arrival, and 40 of
 * them arriving in one millisecond used to collide on (series, ts) and be
 * dropped as redeliveries, 3 of 40 kept. A time the engine assigned is never
 * a redelivery: each is kept, stamped in the next free millisecond of its
 * topic. A QoS 0 burst live, and a QoS 1 burst the broker keeps for the
 * persistent session while citybrain is down and delivers at once when it
 * is back. (Not a QoS 0 burst queued with queue_qos0_messages: mosquitto
 * 2.0.11 then holds back the QoS 1 messages queued behind it.) */
static void test_burst_of_bare_numbers_keeps_every_sample(void)
{
    struct daemon_ctx c;
    struct cb_h_pub *p;
    setup_daemon(&c, &p);
    burst(p, "city/burst/q0", 40, 0);
    assert_burst_stored(&c, "city/burst/q0", 40);
    stop_daemon_ok(&c);
    burst(p, "city/burst/q1", 40, 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(start_daemon(&c));
    assert_burst_stored(&c, "city/burst/q1", 40);
    stop_daemon_ok(&c);
    CU_ASSERT_EQUAL(rows(c.db, "city/burst/%", NULL), 80);
}

void cb_test_suite_ingest(void);
void cb_test_suite_ingest(void)
{
    CU_pSuite s = cb_h_add_suite("ingest");
    CU_add_test(s, "ingest: JSON, SenML and bare numbers stored once; junk refused, engine alive",
                test_formats_and_junk);
    CU_add_test(s, "ingest: a broker restart during ingest is survived without help",
                test_broker_restart_during_ingest);
    CU_add_test(s, "ingest: SIGTERM exits 0 with everything flushed, nothing lost or doubled",
                test_sigterm_flushes_and_loses_nothing);
    CU_add_test(s, "ingest: 40 bare numbers in one burst on one topic are 40 rows (QoS 0 live, "
                   "QoS 1 queued by the broker)",
                test_burst_of_bare_numbers_keeps_every_sample);
}
