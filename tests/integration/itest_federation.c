/* Federation (docs/federation.md): an engine on a list of brokers that goes
 * on when one dies and loses none of its QoS 1 publishes. Two mosquittos on
 * loopback stand for two nodes of a broker cluster (they share nothing:
 * the second has no session for the engine, as a node that did not hold it). */
#include <cjson/cJSON.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tests/support/daemon_itest.h"

void cb_test_suite_federation(void);

static const char river_rule[] = "rule river_high {\n"
                                 "  match \"city/{district}/river/{sensor}\"\n"
                                 "  when  level > 5\n"
                                 "  for   1s\n"
                                 "}\n";

/* Whether some established TCP socket on 127.0.0.1:port holds bytes its
 * owner has not read (/proc/net/tcp rx_queue): with the broker on port
 * frozen, what the engine wrote to it after the freeze. */
static int unread_at_port(void *ctx)
{
    int port = *(int *)ctx;
    FILE *f = fopen("/proc/net/tcp", "r");
    if (!f)
        return 0;
    char line[512];
    int found = 0;
    unsigned local_port, st, tx, rx;
    if (!fgets(line, sizeof line, f)) /* the heading */
        goto out;
    while (!found && fgets(line, sizeof line, f)) {
        if (sscanf(line, " %*d: %*8X:%X %*8X:%*X %X %X:%X", &local_port, &st, &tx, &rx) == 4 &&
            (int)local_port == port && st == 1 /* ESTABLISHED */ && rx > 0)
            found = 1;
    }
out:
    fclose(f);
    return found;
}

/* Holds 127.0.0.1:port bound but not listening, so a connect there is
 * refused at once and no other process (another test's broker) can take the
 * port of a broker the test killed. Returns the socket, or -1. */
static int hold_port(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (fd < 0)
        return -1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Alert feed messages of state for sensor (by its id's labels) at both
 * subscribers. */
static size_t feed_count(struct cb_h_sub *s1, struct cb_h_sub *s2, const char *state,
                         const char *sensor)
{
    size_t n = 0;
    struct cb_h_sub *subs[] = {s1, s2};
    for (int k = 0; k < 2; k++) {
        struct cb_h_msg m;
        for (size_t i = 0; cb_h_sub_get(subs[k], i, &m) == 0; i++)
            if (strstr(m.payload, cb_h_strf("\"state\":\"%s\"", state)) &&
                strstr(m.payload, cb_h_strf("river/%s\"", sensor)))
                n++;
    }
    return n;
}

struct feed_wait {
    struct cb_h_sub *s1, *s2;
    const char *state, *sensor;
};

static int feed_has(void *ctx)
{
    struct feed_wait *w = ctx;
    return feed_count(w->s1, w->s2, w->state, w->sensor) > 0;
}

static int wait_feed(struct cb_h_sub *s1, struct cb_h_sub *s2, const char *state,
                     const char *sensor)
{
    struct feed_wait w = {s1, s2, state, sensor};
    return cb_h_wait_until(feed_has, &w, CBD_TIMEOUT_MS);
}

/* The firing of r1 is published while the first broker is frozen (written
 * to its socket, never acknowledged), then that broker is killed: the engine
 * reconnects to the second, which has no session for it. With a clean
 * session Paho 1.3.12 fails the publish in flight when the connection drops
 * and the engine publishes it again (republished); with a persistent one
 * Paho sends it again itself. Either way it arrives exactly once. */
static void broker_list_scenario(int clean)
{
    struct cb_h_broker *b1 = cb_h_broker_start(NULL), *b2 = cb_h_broker_start(NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b2);
    struct cb_h_sub *s1 = cb_h_sub_start(cb_h_broker_url(b1), "citybrain/alerts/#", 1, NULL);
    struct cb_h_sub *s2 = cb_h_sub_start(cb_h_broker_url(b2), "citybrain/alerts/#", 1, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s2);
    int port = cb_h_free_port();
    const char *brokers = cb_h_strf("%s, %s", cb_h_broker_url(b1), cb_h_broker_url(b2));
    const char *args[] = {"run", "--broker", brokers, "--client-id", "cb-itest-fed-list",
                          "--http", cb_h_strf("127.0.0.1:%d", port), "--db",
                          cb_h_pathf("list.db"), "--rules", cbd_write_text("r.rules", river_rule),
                          "--set", "alerts.storm_window=0", "--set", "mqtt.reconnect_min=100ms",
                          "--set", "mqtt.reconnect_max=500ms", "--set",
                          clean ? "mqtt.clean_session=true" : "mqtt.clean_session=false", NULL};
    struct cb_h_proc *d = cbd_start(args, NULL, port);
    CU_ASSERT_PTR_NOT_NULL_FATAL(d);

    /* r1 above the line: pending, firing a second later. */
    CU_ASSERT_EQUAL_FATAL(cb_h_publish(cb_h_broker_url(b1), "city/north/river/r1",
                                       "{\"level\":9}", 11, 1),
                          0);
    CU_ASSERT_FATAL(cbd_wait_metric(port, "citybrain_mqtt_received_total", 1, CBD_TIMEOUT_MS));
    CU_ASSERT_EQUAL_FATAL(cb_h_broker_signal(b1, SIGSTOP), 0);
    int p1 = cb_h_broker_port(b1);
    CU_ASSERT_FATAL(cb_h_wait_until(unread_at_port, &p1, CBD_TIMEOUT_MS));
    CU_ASSERT_EQUAL(feed_count(s1, s2, "firing", "r1"), 0);
    CU_ASSERT_EQUAL_FATAL(cb_h_broker_signal(b1, SIGKILL), 0);
    int held = hold_port(p1);
    CU_ASSERT(held >= 0);

    /* The engine goes on on the second broker (the first is dead, its port
     * held), and the firing arrives there. */
    CU_ASSERT(cbd_wait_metric(port, "citybrain_mqtt_connects_total", 2, CBD_TIMEOUT_MS));
    CU_ASSERT(wait_feed(s1, s2, "firing", "r1"));
    if (clean)
        CU_ASSERT(cbd_wait_metric(port, "citybrain_mqtt_republished_total", 1, CBD_TIMEOUT_MS));

    /* Telemetry through the second broker once subscribed there: r1
     * resolves, r2 fires. */
    CU_ASSERT_FATAL(cbd_wait_log_n(d, "subscribed to", 2, CBD_TIMEOUT_MS));
    CU_ASSERT_EQUAL(cb_h_publish(cb_h_broker_url(b2), "city/north/river/r1", "{\"level\":1}", 11,
                                 1),
                    0);
    CU_ASSERT_EQUAL(cb_h_publish(cb_h_broker_url(b2), "city/south/river/r2", "{\"level\":9}", 11,
                                 1),
                    0);
    CU_ASSERT(wait_feed(s1, s2, "resolved", "r1"));
    CU_ASSERT(wait_feed(s1, s2, "firing", "r2"));
    /* At least once, and here exactly once: nothing was published twice. */
    CU_ASSERT_EQUAL(feed_count(s1, s2, "firing", "r1"), 1);
    CU_ASSERT_EQUAL(cbd_stop(d), 0);
    if (held >= 0)
        close(held);
}

static void test_broker_list_clean_session_republishes_what_paho_failed(void)
{
    broker_list_scenario(1);
}

static void test_broker_list_persistent_session_loses_nothing(void) { broker_list_scenario(0); }

#define TOKEN "itest-federation-token"

struct body_wait {
    int port;
    const char *path, *needle;
};

static int body_has(void *ctx)
{
    struct body_wait *w = ctx;
    const char *body;
    return cbd_http(w->port, "GET", w->path, TOKEN, NULL, &body) == 200 &&
           strstr(body, w->needle) != NULL;
}

/* Waits until GET path on port answers with needle in its body. */
static int wait_body(int port, const char *path, const char *needle)
{
    struct body_wait w = {port, path, needle};
    return cb_h_wait_until(body_has, &w, CBD_TIMEOUT_MS);
}

struct value_wait {
    int port;
    const char *topic;
    double want;
};

/* 1 when the city engine's latest sample of metric `value` of the export
 * topic is w->want (GET /api/sensors). */
static int city_value_is(void *ctx)
{
    struct value_wait *w = ctx;
    const char *body;
    if (cbd_http(w->port, "GET", "/api/sensors", TOKEN, NULL, &body) != 200)
        return 0;
    cJSON *j = cJSON_Parse(body);
    int ok = 0;
    const cJSON *s;
    cJSON_ArrayForEach(s, cJSON_GetObjectItemCaseSensitive(j, "sensors"))
    {
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(s, "topic");
        if (!cJSON_IsString(t) || strcmp(t->valuestring, w->topic))
            continue;
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(s, "metrics");
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(
            cJSON_GetObjectItemCaseSensitive(m, "value"), "value");
        ok = cJSON_IsNumber(v) && v->valuedouble == w->want;
    }
    cJSON_Delete(j);
    return ok;
}

/* Waits until the city engine on port has `value` == want for topic. */
static int wait_city_value(int port, const char *topic, double want)
{
    struct value_wait w = {port, topic, want};
    return cb_h_wait_until(city_value_is, &w, CBD_TIMEOUT_MS);
}

/* A district engine: river_flood per district on the districts it serves
 * (filter), exporting to the city "sz". */
static struct cb_h_proc *start_district(struct cb_h_broker *b, const char *name,
                                        const char *filter)
{
    static const char district_rule[] = "rule river_flood {\n"
                                        "  match \"city/{district}/river/{sensor}\"\n"
                                        "  per   district\n"
                                        "  when  max(sensors: level) > 5\n"
                                        "  severity major\n"
                                        "}\n";
    const char *args[] = {"run", "--broker", cb_h_broker_url(b), "--client-id", name, "--topic",
                          filter, "--http", "off", "--db", cb_h_pathf("%s.db", name),
                          "--rules", cbd_write_text(cb_h_strf("%s.rules", name), district_rule), "--set",
                          "alerts.storm_window=0", "--set",
                          "federation.export_topic=citybrain/export/sz", NULL};
    return cbd_start(args, NULL, 0);
}

/* Two district engines and a city engine on one broker: the city rule of
 * etc/city-rules fires when both districts flood and resolves when one
 * stops. */
static void test_city_rule_spans_district_engines(void)
{
    struct cb_h_broker *b = cb_h_broker_start(NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    struct cb_h_sub *feed = cb_h_sub_start(cb_h_broker_url(b), "citybrain/alerts/#", 1, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(feed);
    int port = cb_h_free_port();
    const char *city_args[] = {"run", "--broker", cb_h_broker_url(b), "--client-id",
                               "cb-itest-city", "--topic", "citybrain/export/#", "--http",
                               cb_h_strf("127.0.0.1:%d", port), "--db", cb_h_pathf("city.db"),
                               "--rules", CB_SOURCE_DIR "/etc/city-rules", "--set",
                               "alerts.storm_window=0", NULL};
    const char *env[] = {"CITYBRAIN_API_TOKEN=" TOKEN, NULL};
    CU_ASSERT_PTR_NOT_NULL_FATAL(cbd_start(city_args, env, port));
    CU_ASSERT_PTR_NOT_NULL_FATAL(start_district(b, "cb-itest-d01", "city/d01/#"));
    CU_ASSERT_PTR_NOT_NULL_FATAL(start_district(b, "cb-itest-d02", "city/d02/#"));
    const char *url = cb_h_broker_url(b);

    CU_ASSERT_EQUAL(cb_h_publish(url, "city/d01/river/s1", "{\"level\":9}", 11, 1), 0);
    CU_ASSERT(cbd_wait_state(feed, "firing", "river_flood", 1, CBD_TIMEOUT_MS));
    CU_ASSERT_EQUAL(cb_h_publish(url, "city/d02/river/s1", "{\"level\":9}", 11, 1), 0);
    CU_ASSERT(cbd_wait_state(feed, "firing", "districts_flooding", 1, CBD_TIMEOUT_MS));
    CU_ASSERT_EQUAL(cbd_count_state(feed, "firing", "river_flood"), 2);
    /* The aggregate's value, max(sensors: level), is a sample at the city tier. */
    const char *d01 = "citybrain/export/sz/river_flood/cb-itest-d01/d01";
    CU_ASSERT(wait_city_value(port, d01, 9));
    const char *id = cbd_first_id(feed, "firing");
    CU_ASSERT_PTR_NOT_NULL(id);

    CU_ASSERT_EQUAL(cb_h_publish(url, "city/d01/river/s1", "{\"level\":1}", 11, 1), 0);
    CU_ASSERT(cbd_wait_state(feed, "resolved", "districts_flooding", 1, CBD_TIMEOUT_MS));
    CU_ASSERT_EQUAL(cbd_count_state(feed, "firing", "districts_flooding"), 1);
    CU_ASSERT(wait_city_value(port, d01, 1)); /* the value at the resolution */
    struct cb_h_msg m;
    int seen = 0;
    for (size_t i = 0; cb_h_sub_get(feed, i, &m) == 0; i++)
        seen |= strstr(m.payload, "\"id\":\"districts_flooding/city=sz\"") != NULL;
    CU_ASSERT(seen);
}

/* ---- operator actions through the control topic ---- */

struct twin {
    int port;
    const char *db;
    const char *args[24];
    struct cb_h_proc *p;
};

static const char gas_rule[] = "rule gas_high {\n"
                               "  match    \"city/{district}/gas/{sensor}\"\n"
                               "  when     ch4 >= 500\n"
                               "  severity critical\n"
                               "}\n";

/* Starts twin `name` (both twins ingest city/# and share actions on the
 * control topic of d07's partition). */
static void twin_start(struct twin *t, struct cb_h_broker *b, const char *name)
{
    if (!t->port) {
        t->port = cb_h_free_port();
        t->db = cb_h_pathf("%s.db", name);
        const char *a[] = {"run", "--broker", cb_h_broker_url(b), "--client-id", name,
                           "--http", cb_h_strf("127.0.0.1:%d", t->port), "--db", t->db,
                           "--rules", cbd_write_text(cb_h_strf("%s.rules", name), gas_rule),
                           "--set", "alerts.storm_window=0", "--set",
                           "federation.control_topic=citybrain/control/d07", NULL};
        memcpy(t->args, a, sizeof a);
    }
    const char *env[] = {"CITYBRAIN_API_TOKEN=" TOKEN, NULL};
    t->p = cbd_start(t->args, env, t->port);
    CU_ASSERT_PTR_NOT_NULL_FATAL(t->p);
}

/* Twins A and B on one broker: an ack on A shows acknowledged on B, a
 * silence made on B holds A's notification, a reload on A reloads B; the
 * audit logs name the origin, and a restart applies nothing twice. */
static void test_operator_actions_reach_the_twin_once(void)
{
    struct cb_h_broker *b = cb_h_broker_start(NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    struct cb_h_sub *feed = cb_h_sub_start(cb_h_broker_url(b), "citybrain/alerts/#", 1, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(feed);
    struct cb_h_sub *control =
        cb_h_sub_start(cb_h_broker_url(b), "citybrain/control/d07", 1, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(control);
    struct twin a = {0}, tb = {0};
    twin_start(&a, b, "cb-itest-d07-a");
    twin_start(&tb, b, "cb-itest-d07-b");
    const char *url = cb_h_broker_url(b);

    /* ack on A: B shows it acknowledged by the same operator */
    CU_ASSERT_EQUAL(cb_h_publish(url, "city/d07/gas/g1", "{\"ch4\":900}", 11, 1), 0);
    CU_ASSERT_FATAL(cbd_wait_state(feed, "firing", "gas_high", 2, CBD_TIMEOUT_MS));
    const char *path = cb_h_strf("/api/alerts/%s/ack", cbd_escape("gas_high/city/d07/gas/g1"));
    CU_ASSERT_EQUAL(cbd_http(a.port, "POST", path, TOKEN,
                             "{\"by\":\"li.wei\",\"note\":\"crew sent\"}", NULL),
                    200);
    CU_ASSERT(wait_body(tb.port, "/api/alerts", "\"acked_by\":\"li.wei\""));
    CU_ASSERT(cbd_wait_state(feed, "acknowledged", "gas_high", 2, CBD_TIMEOUT_MS));
    CU_ASSERT(wait_body(tb.port, "/api/audit?action=ack", "\"origin\":\"cb-itest-d07-a\""));

    /* a silence made on B holds A's notification of d08 */
    int64_t now = cb_h_now_ms();
    const char *sil = cb_h_strf("{\"matchers\":[{\"name\":\"district\",\"value\":\"d08\"}],"
                                "\"ends\":%lld,\"comment\":\"pipe works\",\"created_by\":"
                                "\"zhang.min\"}",
                                (long long)(now + 3600000));
    CU_ASSERT_EQUAL(cbd_http(tb.port, "POST", "/api/silences", TOKEN, sil, NULL), 201);
    CU_ASSERT(wait_body(a.port, "/api/silences", "\"comment\":\"pipe works\""));
    CU_ASSERT(wait_body(a.port, "/api/audit?action=silence_create",
                        "\"origin\":\"cb-itest-d07-b\""));
    CU_ASSERT_EQUAL(cb_h_publish(url, "city/d08/gas/g2", "{\"ch4\":900}", 11, 1), 0);
    CU_ASSERT(cbd_wait_state(feed, "firing", "gas_high", 4, CBD_TIMEOUT_MS));
    CU_ASSERT(cbd_wait_log_n(a.p, "(silenced)", 1, CBD_TIMEOUT_MS));

    /* a reload on A reloads B, from B's own files */
    CU_ASSERT_EQUAL(cbd_http(a.port, "POST", "/api/rules/reload", TOKEN,
                             "{\"by\":\"li.wei\",\"note\":\"new gauges\"}", NULL),
                    200);
    CU_ASSERT(cbd_wait_log(tb.p, "reloaded (peer engine)", CBD_TIMEOUT_MS));
    CU_ASSERT(wait_body(tb.port, "/api/audit?action=rules_reload",
                        "\"origin\":\"cb-itest-d07-a\""));
    CU_ASSERT_EQUAL(cbd_log_count(a.p, "reloaded (peer engine)"), 0); /* not sent back */
    CU_ASSERT(cb_h_sub_wait_count(control, 3, CBD_TIMEOUT_MS)); /* ack, silence, reload */

    /* B restarts, and the broker delivers every action again (at least
     * once), then a new one: only the new one is applied, on both */
    CU_ASSERT_EQUAL(cbd_stop(tb.p), 0);
    twin_start(&tb, b, "cb-itest-d07-b");
    /* the ack and the reload came from A; the silence was its own */
    CU_ASSERT(cbd_wait_log(tb.p, "(2 applied before)", CBD_TIMEOUT_MS));
    size_t n = cb_h_sub_count(control);
    CU_ASSERT_EQUAL(n, 3);
    for (size_t i = 0; i < n; i++) {
        struct cb_h_msg m;
        CU_ASSERT_EQUAL_FATAL(cb_h_sub_get(control, i, &m), 0);
        CU_ASSERT_EQUAL(cb_h_publish(url, m.topic, m.payload, m.len, 1), 0);
    }
    const char *marker = "{\"id\":\"itest-1\",\"origin\":\"itest\",\"at\":1,"
                         "\"action\":\"rules_reload\",\"by\":\"itest\"}";
    CU_ASSERT_EQUAL(cb_h_publish(url, "citybrain/control/d07", marker, strlen(marker), 1), 0);
    CU_ASSERT(cbd_wait_log(tb.p, "reloaded (peer engine)", CBD_TIMEOUT_MS));
    CU_ASSERT(cbd_wait_log_n(a.p, "reloaded (peer engine)", 1, CBD_TIMEOUT_MS));
    CU_ASSERT_EQUAL(cbd_log_count(tb.p, "reloaded (peer engine)"), 1);
    CU_ASSERT_EQUAL(cbd_log_count(a.p, "reloaded (peer engine)"), 1);
    const char *resp;
    CU_ASSERT_EQUAL(cbd_http(a.port, "GET", "/api/silences", TOKEN, NULL, &resp), 200);
    CU_ASSERT_PTR_NULL(strstr(strstr(resp, "pipe works") + 1, "pipe works")); /* one, not two */
    CU_ASSERT_EQUAL(cbd_log_count(tb.p, "a peer engine's action was not applied"), 0);
    CU_ASSERT_EQUAL(cbd_stop(a.p), 0);
    CU_ASSERT_EQUAL(cbd_stop(tb.p), 0);
}

/* A peer's ack published as twin A would, for alert `sensor` of d07. */
static void publish_peer_ack(const char *url, const char *id, const char *sensor)
{
    const char *msg = cb_h_strf("{\"id\":\"%s\",\"origin\":\"cb-itest-d07-a\",\"at\":1,"
                                "\"action\":\"ack\",\"by\":\"li.wei\",\"target\":"
                                "\"gas_high/city/d07/gas/%s\",\"note\":\"crew sent\"}",
                                id, sensor);
    CU_ASSERT_EQUAL(cb_h_publish(url, "citybrain/control/d07", msg, strlen(msg), 1), 0);
}

/* Twins judge the same telemetry a moment apart: A's ack can reach B before
 * B raises the alert. It waits for it (federation.peer_action_wait, 3 s
 * here) and is applied when the alert fires; one whose alert does not fire
 * within the wait is dropped with a warning and acks nothing later. */
static void test_peer_ack_waits_for_the_alert_to_fire_here(void)
{
    struct cb_h_broker *b = cb_h_broker_start(NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    const char *url = cb_h_broker_url(b);
    struct cb_h_sub *feed = cb_h_sub_start(url, "citybrain/alerts/#", 1, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(feed);
    struct twin tb = {.port = cb_h_free_port(), .db = cb_h_pathf("cb-itest-d07-w.db")};
    const char *a[] = {"run", "--broker", url, "--client-id", "cb-itest-d07-w", "--http",
                       cb_h_strf("127.0.0.1:%d", tb.port), "--db", tb.db, "--rules",
                       cbd_write_text("cb-itest-d07-w.rules", gas_rule), "--set",
                       "alerts.storm_window=0", "--set",
                       "federation.control_topic=citybrain/control/d07", "--set",
                       "federation.peer_action_wait=3s", NULL};
    memcpy(tb.args, a, sizeof a);
    twin_start(&tb, b, "cb-itest-d07-w");

    publish_peer_ack(url, "itest-wait-1", "g5");
    CU_ASSERT(cbd_wait_log(tb.p, "waits up to 3 s for its alert", CBD_TIMEOUT_MS));
    CU_ASSERT_EQUAL(cb_h_publish(url, "city/d07/gas/g5", "{\"ch4\":900}", 11, 1), 0);
    CU_ASSERT(cbd_wait_state(feed, "acknowledged", "gas_high", 1, CBD_TIMEOUT_MS));
    CU_ASSERT(wait_body(tb.port, "/api/alerts", "\"acked_by\":\"li.wei\""));
    CU_ASSERT(wait_body(tb.port, "/api/audit?action=ack", "\"control_id\":\"itest-wait-1\""));
    CU_ASSERT(cbd_wait_log(tb.p, "ack of gas_high/city/d07/gas/g5 by li.wei applied",
                           CBD_TIMEOUT_MS));

    /* g6 does not fire within the wait: dropped, and its alert stays unacked */
    publish_peer_ack(url, "itest-wait-2", "g6");
    CU_ASSERT(cbd_wait_log(tb.p, "did not fire here within federation.peer_action_wait",
                           CBD_TIMEOUT_MS));
    CU_ASSERT_EQUAL(cb_h_publish(url, "city/d07/gas/g6", "{\"ch4\":900}", 11, 1), 0);
    CU_ASSERT(cbd_wait_state(feed, "firing", "gas_high", 2, CBD_TIMEOUT_MS));
    const char *resp = NULL;
    CU_ASSERT_EQUAL(cbd_http(tb.port, "GET", "/api/audit?action=ack", TOKEN, NULL, &resp), 200);
    CU_ASSERT_PTR_NULL(resp ? strstr(resp, "itest-wait-2") : "no answer");
    CU_ASSERT_EQUAL(cbd_count_state(feed, "acknowledged", "gas_high"), 1);
    CU_ASSERT_EQUAL(cbd_stop(tb.p), 0);
}

void cb_test_suite_federation(void)
{
    CU_pSuite s = cb_h_add_suite("federation");
    CU_add_test(s,
                "federation: with the first broker of the list killed the engine goes on on the "
                "second, and a QoS 1 alert Paho failed in flight (clean session) is published "
                "again there, once",
                test_broker_list_clean_session_republishes_what_paho_failed);
    CU_add_test(s,
                "federation: with the first broker of the list killed, a persistent session's "
                "QoS 1 alert in flight arrives at the second broker once",
                test_broker_list_persistent_session_loses_nothing);
    CU_add_test(s,
                "federation: two district engines export their instances, with the when "
                "aggregate's value, and the city engine's rule fires when both districts flood, "
                "and resolves when one stops",
                test_city_rule_spans_district_engines);
    CU_add_test(s,
                "federation: twins share operator actions: an ack on A shows on B, a silence "
                "made on B holds A's notification, a reload on A reloads B, each once, with "
                "its origin in the audit log",
                test_operator_actions_reach_the_twin_once);
    CU_add_test(s,
                "federation: a peer's ack that arrives before the alert fires here waits for "
                "it and is applied when it fires; one whose alert does not fire within "
                "federation.peer_action_wait is dropped with a warning",
                test_peer_ack_waits_for_the_alert_to_fire_here);
}
