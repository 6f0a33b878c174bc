/* The Alertmanager channel against Debian's prometheus-alertmanager, started
 * by the test on a free loopback port with a temporary configuration and
 * storage, and read with `amtool alert query` (docs/alerts.md
 * "Alertmanager"): an alert that fires while Alertmanager is away costs one
 * queued delivery, not one per resend; once it is up the alert is there,
 * with citybrain's labels and annotations, kept active by the resends, also
 * across a restart of citybrain; when the alert resolves it ends in
 * Alertmanager. */
#include <cjson/cJSON.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/support/daemon_itest.h"

void cb_test_suite_alertmanager(void);

#define AM_BIN "/usr/bin/prometheus-alertmanager"

static const char RULES[] = "rule river_high {\n"
                            "  title    \"River high\"\n"
                            "  title zh \"河道水位高\"\n"
                            "  match    \"city/{district}/river/{sensor}\"\n"
                            "  when     level > 4.5\n"
                            "  severity major\n"
                            "  message  \"{district}: river high\"\n"
                            "  message zh \"{district}：水位高\"\n"
                            "  notify   am\n"
                            "}\n";

static struct cb_h_proc *am_start(int port)
{
    const char *conf = cb_h_pathf("am.yml");
    static const char CONF[] = "route:\n  receiver: 'null'\nreceivers:\n  - name: 'null'\n";
    CU_ASSERT_EQUAL_FATAL(cb_h_write_file(conf, CONF, sizeof CONF - 1), 0);
    const char *argv[] = {AM_BIN,
                          cb_h_strf("--config.file=%s", conf),
                          cb_h_strf("--storage.path=%s", cb_h_pathf("am-data")),
                          cb_h_strf("--web.listen-address=127.0.0.1:%d", port),
                          "--cluster.listen-address=",
                          NULL};
    struct cb_h_proc *p = cb_h_spawn("alertmanager", AM_BIN, argv, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    CU_ASSERT_EQUAL_FATAL(cb_h_wait_port(port, CBD_TIMEOUT_MS), 0);
    return p;
}

/* `amtool alert query -o json` (active alerts), parsed; NULL when it failed. */
static cJSON *amtool_query(int port)
{
    const char *out = cb_h_pathf("amtool.json");
    if (cb_h_sh("amtool --alertmanager.url=http://127.0.0.1:%d alert query -o json > '%s'", port,
                out) != 0)
        return NULL;
    size_t len;
    const char *text = cb_h_read_file(out, &len);
    return text ? cJSON_Parse(text) : NULL;
}

static const char *str(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : "";
}

/* The active alert of rule river_high and district d07 in amtool's answer, or
 * NULL. */
static const cJSON *find(const cJSON *list)
{
    const cJSON *a;
    cJSON_ArrayForEach(a, list)
    {
        const cJSON *l = cJSON_GetObjectItemCaseSensitive(a, "labels");
        if (!strcmp(str(l, "alertname"), "river_high") && !strcmp(str(l, "district"), "d07"))
            return a;
    }
    return NULL;
}

struct am_wait {
    int port;
    int want; /* 1: shown, 0: gone */
};

static int am_shows(void *ctx)
{
    struct am_wait *w = ctx;
    cJSON *j = amtool_query(w->port);
    int shown = j && find(j) != NULL;
    int ok = j && shown == w->want;
    cJSON_Delete(j);
    return ok;
}

static void test_alertmanager(void)
{
    int am_port = cb_h_free_port();
    const char *rules = cb_h_pathf("am.rules");
    CU_ASSERT_EQUAL_FATAL(cb_h_write_file(rules, RULES, sizeof RULES - 1), 0);
    const char *conf = cb_h_pathf("cb.conf");
    const char *text = cb_h_strf("alerts.channel = am type=alertmanager url=http://127.0.0.1:%d\n"
                                 "alerts.alertmanager_resend = 1s\n"
                                 "alerts.webhook_retry_min = 50ms\n"
                                 "alerts.webhook_retry_max = 200ms\n"
                                 "alerts.console_url = http://127.0.0.1/console/\n",
                                 am_port);
    CU_ASSERT_EQUAL_FATAL(cb_h_write_file(conf, text, strlen(text)), 0);
    struct cbd_rig r;
    const char *extra[] = {"--config", conf, "--db", cb_h_pathf("am.db"), "--rules", rules, NULL};
    cbd_rig_init(&r, "cb-itest-am", "am-token", extra);
    struct cb_h_proc *cb = cbd_rig_start(&r);
    CU_ASSERT_PTR_NOT_NULL_FATAL(cb);

    /* Alertmanager is not up yet: the deliveries fail, retried, and the
     * resends (every second) add nothing while one is queued. */
    CU_ASSERT_EQUAL(cb_h_publish(cb_h_broker_url(r.b), "city/d07/river/s1", "{\"level\":5}", 11, 1),
                    0);
    CU_ASSERT_FATAL(cbd_wait_state(r.alerts, "firing", "river_high", 1, CBD_TIMEOUT_MS));
    CU_ASSERT(cbd_wait_metric(r.port, "citybrain_webhook_deliveries_total{result=\"failed\"}", 15,
                              CBD_TIMEOUT_MS));
    double depth = -1;
    CU_ASSERT_EQUAL(cbd_metric(r.port, "citybrain_notify_outbox_depth", &depth), 0);
    CU_ASSERT_EQUAL(depth, 1);

    /* Up: the queued delivery arrives; amtool shows the alert firing. */
    struct cb_h_proc *am = am_start(am_port);
    struct am_wait w = {am_port, 1};
    CU_ASSERT_FATAL(cb_h_wait_until(am_shows, &w, CBD_TIMEOUT_MS));
    cJSON *j = amtool_query(am_port);
    const cJSON *a = find(j);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    const cJSON *labels = cJSON_GetObjectItemCaseSensitive(a, "labels");
    const cJSON *ann = cJSON_GetObjectItemCaseSensitive(a, "annotations");
    CU_ASSERT_STRING_EQUAL(str(labels, "severity"), "major");
    CU_ASSERT_STRING_EQUAL(str(labels, "sensor"), "s1");
    CU_ASSERT_STRING_EQUAL(str(ann, "title"), "River high");
    CU_ASSERT_STRING_EQUAL(str(ann, "title_zh"), "河道水位高");
    CU_ASSERT_STRING_EQUAL(str(ann, "message"), "d07: river high");
    CU_ASSERT_STRING_EQUAL(str(ann, "message_zh"), "d07：水位高");
    CU_ASSERT_STRING_EQUAL(str(a, "generatorURL"), "http://127.0.0.1/console/");
    CU_ASSERT_STRING_EQUAL(str(cJSON_GetObjectItemCaseSensitive(a, "status"), "state"), "active");
    cJSON_Delete(j);

    /* The resends keep it active past its first endsAt (4 s after it was
     * sent): five more deliveries are five seconds. */
    double ok0 = 0;
    CU_ASSERT_EQUAL(cbd_metric(r.port, "citybrain_webhook_deliveries_total{result=\"ok\"}", &ok0),
                    0);
    CU_ASSERT(cbd_wait_metric(r.port, "citybrain_webhook_deliveries_total{result=\"ok\"}",
                              ok0 + 5, CBD_TIMEOUT_MS));
    CU_ASSERT(am_shows(&w));

    /* A restart: the restored alert is sent again at once and kept alive
     * (without it, Alertmanager would end it four intervals after the last
     * send before the restart). */
    CU_ASSERT_EQUAL(cbd_stop(cb), 0);
    cb = cbd_rig_start(&r);
    CU_ASSERT_PTR_NOT_NULL_FATAL(cb);
    CU_ASSERT(cbd_wait_metric(r.port, "citybrain_webhook_deliveries_total{result=\"ok\"}", 5,
                              CBD_TIMEOUT_MS));
    CU_ASSERT(am_shows(&w));

    /* Resolved: sent with endsAt, it ends in Alertmanager. */
    CU_ASSERT_EQUAL(cb_h_publish(cb_h_broker_url(r.b), "city/d07/river/s1", "{\"level\":1}", 11, 1),
                    0);
    CU_ASSERT_FATAL(cbd_wait_state(r.alerts, "resolved", "river_high", 1, CBD_TIMEOUT_MS));
    w.want = 0;
    CU_ASSERT(cb_h_wait_until(am_shows, &w, CBD_TIMEOUT_MS));
    CU_ASSERT_EQUAL(cbd_stop(cb), 0);
    cb_h_proc_signal(am, SIGTERM);
    CU_ASSERT(cb_h_proc_wait(am, CBD_TIMEOUT_MS) >= 0);
}

/* A wrong alertmanager line is refused with the reason. */
static void test_bad_channel(void)
{
    static const char *const lines[][2] = {
        {"am type=alertmanager", "an alertmanager channel needs url=URL"},
        {"am type=alertmanager url=http://x:9093 format=cap", "no format="},
        {"am type=alertmanager url=http://x:9093 prefix=a", "prefix= is only for type=mqtt"},
    };
    const char *rules = cb_h_pathf("ok.rules");
    CU_ASSERT_EQUAL_FATAL(cb_h_write_file(rules, RULES, sizeof RULES - 1), 0);
    for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++) {
        const char *conf = cb_h_pathf("bad%zu.conf", i);
        const char *text = cb_h_strf("alerts.channel = %s\n", lines[i][0]);
        CU_ASSERT_EQUAL_FATAL(cb_h_write_file(conf, text, strlen(text)), 0);
        const char *args[] = {"check", "--config", conf, rules, NULL};
        cbd_refused(args, lines[i][1]);
    }
}

void cb_test_suite_alertmanager(void)
{
    CU_pSuite s = cb_h_add_suite("alertmanager");
    CU_add_test(s, "alertmanager: a firing alert reaches Alertmanager once it is up (one queued "
                   "delivery while it is away), amtool shows it with labels and both languages' "
                   "annotations, resends keep it active (across a restart too), and it ends when resolved",
                test_alertmanager);
    CU_add_test(s, "alertmanager: a wrong alertmanager channel line is refused with the reason",
                test_bad_channel);
}
