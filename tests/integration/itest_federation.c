/* Federation (docs/federation.md): an engine on a list of brokers that goes
 * on when one dies and loses none of its QoS 1 publishes. Two mosquittos on
 * loopback stand for two nodes of a broker cluster (they share nothing:
 * the second has no session for the engine, as a node that did not hold it). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
    CU_ASSERT(cbd_wait_log(d, cb_h_strf("connected to %s", cb_h_broker_url(b1)), 1000));

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

    /* The engine goes on on the second broker, and the firing arrives there. */
    CU_ASSERT(cbd_wait_log(d, cb_h_strf("connected to %s", cb_h_broker_url(b2)),
                           CBD_TIMEOUT_MS));
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
}

static void test_broker_list_clean_session_republishes_what_paho_failed(void)
{
    broker_list_scenario(1);
}

static void test_broker_list_persistent_session_loses_nothing(void) { broker_list_scenario(0); }

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
}
