/* Alert truth across restarts of the real daemon (rules.md, "Time and
 * evaluation"; issue "Alert truth" items 1 and 2): a restart with no new data
 * resolves nothing, after SIGINT and after kill -9 alike; a deadman fires
 * after a restart for a sensor silent since before it; a pending `for`
 * resumes from its stored start instead of counting from zero. */
#include <cjson/cJSON.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/support/daemon_itest.h"

void cb_test_suite_restart_truth(void);

#define TOKEN "itest-rw-token"

static const char rules_text[] =
    "rule two_hot {\n"
    "  match \"city/{district}/temp/{sensor}\"\n"
    "  per   district\n"
    "  when  count(sensors: t > 30) >= 2\n"
    "  message \"{district}: {count(sensors: t > 30)} hot\"\n"
    "}\n"
    "rule silent {\n"
    "  match \"city/{district}/gauge/{sensor}\"\n"
    "  when  age() > 4s\n"
    "  severity info\n"
    "}\n"
    "rule kiln_hot {\n"
    "  match \"city/{district}/kiln/{sensor}\"\n"
    "  when  t > 30\n"
    "}\n"
    "rule held_hot {\n"
    "  match \"city/{district}/boiler/{sensor}\"\n"
    "  when  t > 30\n"
    "  for   8s\n"
    "}\n";

struct rig {
    struct cbd_rig d;
    const char *db;
};

/* setting: one more `--set KEY=VALUE` for the daemon, or NULL. */
static void rig_init_with(struct rig *r, const char *client, const char *setting)
{
    r->db = cb_h_pathf("truth.db");
    const char *rules = cb_h_pathf("truth.rules");
    CU_ASSERT_EQUAL_FATAL(cb_h_write_file(rules, rules_text, strlen(rules_text)), 0);
    const char *extra[] = {"--db",  r->db,   "--rules", rules, "--set", "rules.watch=false",
                           "--set", setting, NULL};
    if (!setting)
        extra[6] = NULL;
    cbd_rig_init(&r->d, client, TOKEN, extra);
}

static void rig_init(struct rig *r, const char *client)
{
    rig_init_with(r, client, NULL);
}

static void pub(struct rig *r, const char *topic, const char *payload)
{
    CU_ASSERT_EQUAL_FATAL(
        cb_h_publish(cb_h_broker_url(r->d.b), topic, payload, strlen(payload), 1), 0);
}

struct metric_ctx {
    int port;
    const char *series;
    double until;
};

static int metric_reached(void *arg)
{
    struct metric_ctx *c = arg;
    double v;
    return cbd_metric(c->port, c->series, &v) == 0 && v >= c->until;
}

/* Waits until the series of /metrics has grown by n from its value now. */
static void wait_metric(struct rig *r, const char *series, int n)
{
    double now = 0;
    cbd_metric(r->d.port, series, &now);
    struct metric_ctx c = {r->d.port, series, now + n};
    CU_ASSERT_TRUE_FATAL(cb_h_wait_until(metric_reached, &c, CBD_TIMEOUT_MS));
}

/* Waits until the daemon has evaluated every instance n more times (its 1 s
 * tick): the time-driven verdicts have had their chance. */
static void wait_ticks(struct rig *r, int n)
{
    wait_metric(r, "citybrain_rules_ticks_total", n);
}

/* Publishes one message and waits until the daemon has accepted it. */
static void pub_accepted(struct rig *r, const char *topic, const char *payload)
{
    double before = 0;
    cbd_metric(r->d.port, "citybrain_ingest_messages_total{result=\"accepted\"}", &before);
    pub(r, topic, payload);
    struct metric_ctx c = {r->d.port, "citybrain_ingest_messages_total{result=\"accepted\"}",
                           before + 1};
    CU_ASSERT_TRUE_FATAL(cb_h_wait_until(metric_reached, &c, CBD_TIMEOUT_MS));
}

/* The state of alert id in GET /api/alerts ("" when not listed), and whether
 * it is marked stale. */
static const char *api_state(struct rig *r, const char *id, int *stale)
{
    const char *body, *state = "";
    *stale = 0;
    if (cbd_http(r->d.port, "GET", "/api/alerts", NULL, NULL, &body) != 200)
        return "";
    cJSON *root = cJSON_Parse(body);
    const cJSON *a;
    cJSON_ArrayForEach(a, cJSON_GetObjectItemCaseSensitive(root, "alerts"))
    {
        const cJSON *aid = cJSON_GetObjectItemCaseSensitive(a, "id");
        const cJSON *st = cJSON_GetObjectItemCaseSensitive(a, "state");
        if (cJSON_IsString(aid) && !strcmp(aid->valuestring, id) && cJSON_IsString(st)) {
            state = cb_h_strf("%s", st->valuestring);
            *stale = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(a, "stale"));
        }
    }
    cJSON_Delete(root);
    return state;
}

/* The group alert fires on two hot sensors; the daemon goes down (by signal
 * sig: SIGINT, or SIGKILL for a crash) and comes back with no new data. */
static void group_alert_survives(int sig)
{
    struct rig r;
    rig_init(&r, sig == SIGKILL ? "cb-itest-truth-kill" : "cb-itest-truth-int");
    struct cb_h_proc *cb = cbd_rig_start(&r.d);
    CU_ASSERT_PTR_NOT_NULL_FATAL(cb);
    pub(&r, "city/d1/temp/s1", "{\"t\":31}");
    pub(&r, "city/d1/temp/s2", "{\"t\":32}");
    CU_ASSERT_TRUE_FATAL(cbd_wait_state(r.d.alerts, "firing", "two_hot", 1, CBD_TIMEOUT_MS));
    if (sig == SIGKILL) {
        /* the firing row is committed by the alert store's writer within a
         * batch; the samples by the store's (storage.commit_interval, 1 s):
         * a crash after both, as the acknowledged messages are journaled */
        wait_ticks(&r, 3);
        cb_h_proc_kill(cb);
    } else {
        CU_ASSERT_EQUAL_FATAL(cb_h_proc_signal(cb, SIGINT), 0);
        CU_ASSERT_EQUAL_FATAL(cb_h_proc_wait(cb, CBD_TIMEOUT_MS), 0);
    }

    cb = cbd_rig_start(&r.d);
    CU_ASSERT_PTR_NOT_NULL_FATAL(cb);
    wait_ticks(&r, 3);
    int stale;
    CU_ASSERT_STRING_EQUAL(api_state(&r, "two_hot/district=d1", &stale), "firing");
    CU_ASSERT_EQUAL(cbd_count_state(r.d.alerts, "resolved", NULL), 0);
    CU_ASSERT_EQUAL(cbd_count_state(r.d.alerts, "firing", NULL), 1);
    CU_ASSERT_EQUAL(cbd_log_count(cb, "resolved"), 0);

    /* evidence still resolves it: both sensors cool */
    pub(&r, "city/d1/temp/s1", "{\"t\":20}");
    pub(&r, "city/d1/temp/s2", "{\"t\":21}");
    CU_ASSERT_TRUE(cbd_wait_state(r.d.alerts, "resolved", "two_hot", 1, CBD_TIMEOUT_MS));
    CU_ASSERT_EQUAL(cbd_stop(cb), 0);
}

static void test_group_alert_sigint(void) { group_alert_survives(SIGINT); }
static void test_group_alert_kill9(void) { group_alert_survives(SIGKILL); }

/* A gauge speaks once, the daemon stops before its deadman (4 s) and starts
 * again: the deadman fires, and nothing else happens. */
static void test_deadman_after_restart(void)
{
    struct rig r;
    rig_init(&r, "cb-itest-truth-deadman");
    struct cb_h_proc *cb = cbd_rig_start(&r.d);
    CU_ASSERT_PTR_NOT_NULL_FATAL(cb);
    pub_accepted(&r, "city/d2/gauge/g1", "{\"level\":1.5}");
    CU_ASSERT_EQUAL_FATAL(cbd_stop(cb), 0);
    CU_ASSERT_EQUAL(cbd_count_state(r.d.alerts, "firing", "silent"), 0);

    cb = cbd_rig_start(&r.d);
    CU_ASSERT_PTR_NOT_NULL_FATAL(cb);
    CU_ASSERT_TRUE(cbd_wait_state(r.d.alerts, "firing", "silent", 1, CBD_TIMEOUT_MS));
    wait_ticks(&r, 2);
    CU_ASSERT_EQUAL(cbd_count_state(r.d.alerts, "firing", "silent"), 1);
    CU_ASSERT_EQUAL(cbd_stop(cb), 0);
}

/* A boiler is hot; its `for 8s` is pending when the daemon stops; after the
 * restart it fires with the stored `since`, 8 s after it, not 8 s after the
 * restart's first sample (there is none: nothing is published again). */
static void test_for_resumes_after_restart(void)
{
    struct rig r;
    rig_init(&r, "cb-itest-truth-for");
    struct cb_h_proc *cb = cbd_rig_start(&r.d);
    CU_ASSERT_PTR_NOT_NULL_FATAL(cb);
    pub_accepted(&r, "city/d3/boiler/b1", "{\"t\":35}");
    CU_ASSERT_EQUAL_FATAL(cbd_stop(cb), 0);
    int64_t since = 0;
    CU_ASSERT_EQUAL_FATAL(cb_h_sql_int(r.db, &since,
                                       "SELECT since FROM alert_instances WHERE id = "
                                       "'held_hot/city/d3/boiler/b1' AND state = 'pending'"),
                          0);
    CU_ASSERT_TRUE(since > 0);

    cb = cbd_rig_start(&r.d);
    CU_ASSERT_PTR_NOT_NULL_FATAL(cb);
    CU_ASSERT_TRUE_FATAL(cbd_wait_state(r.d.alerts, "firing", "held_hot", 1, CBD_TIMEOUT_MS));
    struct cb_h_msg m;
    size_t n = cb_h_sub_count(r.d.alerts);
    int found = 0;
    for (size_t i = 0; i < n; i++) {
        if (cb_h_sub_get(r.d.alerts, i, &m) || !strstr(m.topic, "held_hot"))
            continue;
        cJSON *j = cJSON_Parse(m.payload);
        const cJSON *s = cJSON_GetObjectItemCaseSensitive(j, "since");
        const cJSON *at = cJSON_GetObjectItemCaseSensitive(j, "at");
        CU_ASSERT_TRUE(cJSON_IsNumber(s) && (int64_t)s->valuedouble == since);
        CU_ASSERT_TRUE(cJSON_IsNumber(at) && (int64_t)at->valuedouble >= since + 8000);
        found = 1;
        cJSON_Delete(j);
    }
    CU_ASSERT_TRUE(found);
    CU_ASSERT_EQUAL(cbd_stop(cb), 0);
}

/* A firing alert whose sensor went silent is stale: no evidence either way.
 * It stays firing until an operator closes it by hand, with a name and a
 * note; the resolution says so and the audit log keeps it. An alert with
 * evidence cannot be closed so. */
static void test_close_stale_by_hand(void)
{
    struct rig r;
    rig_init_with(&r, "cb-itest-truth-close", "sensors.stale_after=2s");
    struct cb_h_proc *cb = cbd_rig_start(&r.d);
    CU_ASSERT_PTR_NOT_NULL_FATAL(cb);
    pub(&r, "city/d4/kiln/k9", "{\"t\":90}");
    CU_ASSERT_TRUE_FATAL(cbd_wait_state(r.d.alerts, "firing", "kiln_hot", 1, CBD_TIMEOUT_MS));
    const char *path = cb_h_strf("/api/alerts/%s/close", cbd_escape("kiln_hot/city/d4/kiln/k9"));
    const char *body = "{\"by\":\"duty-officer\",\"note\":\"kiln decommissioned\"}";
    const char *resp;
    int stale = 0;
    if (!api_state(&r, "kiln_hot/city/d4/kiln/k9", &stale)[0] || !stale)
        CU_ASSERT_EQUAL(cbd_http(r.d.port, "POST", path, TOKEN, body, &resp), 409);
    CU_ASSERT_EQUAL(cbd_http(r.d.port, "POST", path, TOKEN, "{\"by\":\"duty-officer\"}", &resp),
                    400);
    CU_ASSERT_PTR_NOT_NULL(strstr(resp, "note"));
    CU_ASSERT_EQUAL(cbd_http(r.d.port, "POST", path, NULL, body, NULL), 401);
    wait_ticks(&r, 4); /* silent past sensors.stale_after */
    CU_ASSERT_STRING_EQUAL(api_state(&r, "kiln_hot/city/d4/kiln/k9", &stale), "firing");
    CU_ASSERT_TRUE(stale);
    CU_ASSERT_EQUAL(cbd_count_state(r.d.alerts, "resolved", NULL), 0);
    CU_ASSERT_EQUAL(cbd_http(r.d.port, "POST", path, TOKEN, body, &resp), 200);
    CU_ASSERT_TRUE(cbd_wait_state(r.d.alerts, "resolved", "kiln_hot", 1, CBD_TIMEOUT_MS));
    struct cb_h_msg m;
    for (size_t i = 0; i < cb_h_sub_count(r.d.alerts); i++)
        if (!cb_h_sub_get(r.d.alerts, i, &m) && strstr(m.payload, "\"resolved\""))
            CU_ASSERT_PTR_NOT_NULL(strstr(m.payload, "\"reason\":\"closed by hand\",\"by\":"
                                                     "\"duty-officer\",\"note\":\"kiln "
                                                     "decommissioned\""));
    CU_ASSERT_EQUAL(cbd_http(r.d.port, "GET", "/api/audit?action=close", NULL, NULL, &resp), 200);
    CU_ASSERT_PTR_NOT_NULL(strstr(resp, "duty-officer"));
    CU_ASSERT_PTR_NOT_NULL(strstr(resp, "kiln decommissioned"));
    CU_ASSERT_EQUAL(cbd_stop(cb), 0);
}

void cb_test_suite_restart_truth(void)
{
    CU_pSuite s = cb_h_add_suite("restart_truth");
    CU_add_test(s, "restart truth: a firing group alert is not resolved by SIGINT and a "
                   "restart with no new data",
                test_group_alert_sigint);
    CU_add_test(s, "restart truth: nor by kill -9 and a restart",
                test_group_alert_kill9);
    CU_add_test(s, "restart truth: a deadman fires after a restart for a sensor silent "
                   "since before it",
                test_deadman_after_restart);
    CU_add_test(s, "restart truth: a pending `for` resumes from its stored start",
                test_for_resumes_after_restart);
    CU_add_test(s, "restart truth: a stale alert is closed by hand with a name and a note, "
                   "audited; one with evidence cannot be",
                test_close_stale_by_hand);
}
