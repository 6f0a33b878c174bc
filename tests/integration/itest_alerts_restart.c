/* Alert state across restarts of `citybrain run`: a firing alert is notified
 * once, stays firing in SQLite and in the API after SIGTERM and a restart,
 * is not notified again, and resolves once; an acknowledgement made through
 * the API is published on MQTT and survives a restart. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/support/daemon_itest.h"

void cb_test_suite_alerts_restart(void);

#define TOKEN "itest-rw-token"
#define TOPIC "city/d04/gas/g7"

static const char rule_text[] = "rule gas_high {\n"
                                "  match    \"city/{district}/gas/{sensor}\"\n"
                                "  when     ch4 >= 500\n"
                                "  severity critical\n"
                                "  message  \"{district}/{sensor}: {ch4:.0f} ppm\"\n"
                                "}\n";

struct rig {
    struct cbd_rig d; /* the broker, citybrain/alerts/# up across every restart */
    const char *db;
};

/* The same rule with its title and message in English and Chinese. */
static const char rule_text_zh[] = "rule gas_high {\n"
                                   "  title    \"Methane leak\"\n"
                                   "  title zh \"燃气泄漏\"\n"
                                   "  match    \"city/{district}/gas/{sensor}\"\n"
                                   "  when     ch4 >= 500\n"
                                   "  severity critical\n"
                                   "  message  \"{district}/{sensor}: {ch4:.0f} ppm\"\n"
                                   "  message zh \"{district}/{sensor}：甲烷 {ch4:.0f} ppm\"\n"
                                   "}\n";

static void rig_init_rules(struct rig *r, const char *text)
{
    r->db = cb_h_pathf("alerts.db");
    const char *rules = cb_h_pathf("gas.rules");
    CU_ASSERT_EQUAL_FATAL(cb_h_write_file(rules, text, strlen(text)), 0);
    const char *extra[] = {"--db", r->db, "--rules", rules, "--set", "rules.watch=false", NULL};
    cbd_rig_init(&r->d, "cb-itest-alerts", TOKEN, extra);
}

/* The alert `id` in GET /api/alerts, as a cJSON object in *root (caller
 * deletes *root); NULL when absent or the answer is not 200. */
static const cJSON *api_alert(struct rig *r, const char *id, cJSON **root)
{
    const char *body;
    *root = NULL;
    if (cbd_http(r->d.port, "GET", "/api/alerts", NULL, NULL, &body) != 200)
        return NULL;
    *root = cJSON_Parse(body);
    const cJSON *a;
    cJSON_ArrayForEach(a, cJSON_GetObjectItemCaseSensitive(*root, "alerts"))
    {
        const cJSON *aid = cJSON_GetObjectItemCaseSensitive(a, "id");
        if (cJSON_IsString(aid) && !strcmp(aid->valuestring, id))
            return a;
    }
    fprintf(stderr, "\nalert %s not in GET /api/alerts: %s\n", id, body);
    return NULL;
}

static int str_is(const cJSON *o, const char *key, const char *want)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) && !strcmp(v->valuestring, want);
}

/* A fresh rig, the daemon started and gas_high fired by payload: the
 * instance id, the daemon in *cb. */
static const char *start_firing_rules(struct rig *r, const char *text, const char *payload,
                                      struct cb_h_proc **cb)
{
    rig_init_rules(r, text);
    *cb = cbd_rig_start(&r->d);
    CU_ASSERT_PTR_NOT_NULL_FATAL(*cb);
    CU_ASSERT_EQUAL_FATAL(
        cb_h_publish(cb_h_broker_url(r->d.b), TOPIC, payload, strlen(payload), 1), 0);
    CU_ASSERT_TRUE_FATAL(cbd_wait_state(r->d.alerts, "firing", "gas_high", 1, CBD_TIMEOUT_MS));
    const char *id = cbd_first_id(r->d.alerts, "firing");
    CU_ASSERT_PTR_NOT_NULL_FATAL(id);
    return id;
}

static const char *start_firing(struct rig *r, const char *payload, struct cb_h_proc **cb)
{
    return start_firing_rules(r, rule_text, payload, cb);
}

/* 1 when o["titles"] and o["messages"] hold the gas_high texts of both
 * languages with the value `ppm`. */
static int both_languages(const cJSON *o, const char *ppm)
{
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(o, "titles");
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(o, "messages");
    int ok = str_is(t, "en-US", "Methane leak") && str_is(t, "zh-CN", "燃气泄漏") &&
             str_is(m, "en-US", cb_h_strf("d04/g7: %s ppm", ppm)) &&
             str_is(m, "zh-CN", cb_h_strf("d04/g7：甲烷 %s ppm", ppm));
    if (!ok) {
        char *text = cJSON_PrintUnformatted(o);
        fprintf(stderr, "\nnot in both languages (%s ppm): %s\n", ppm, text ? text : "?");
        free(text);
    }
    return ok;
}

/* Fires, restarts while firing, resolves: one notification per transition. */
static void test_firing_survives_restart_without_renotify(void)
{
    struct rig r;
    struct cb_h_proc *cb;
    const char *id = start_firing(&r, "{\"ch4\":900}", &cb);
    struct cb_h_msg m;
    CU_ASSERT_EQUAL(cb_h_sub_get(r.d.alerts, 0, &m), 0);
    CU_ASSERT_STRING_EQUAL(m.topic, "citybrain/alerts/gas_high");

    /* SIGTERM while firing: a clean exit, the state on disk. */
    CU_ASSERT_EQUAL_FATAL(cbd_stop(cb), 0);
    CU_ASSERT_EQUAL(cb_h_sql_count(r.db, "alert_instances",
                                   cb_h_strf("id = '%s' AND state = 'firing'", id)), 1);
    CU_ASSERT_EQUAL(cb_h_sql_count(r.db, "alert_transitions",
                                   cb_h_strf("alert_id = '%s' AND state = 'firing'", id)), 1);

    cb = cbd_rig_start(&r.d);
    CU_ASSERT_PTR_NOT_NULL_FATAL(cb);
    cJSON *root;
    const cJSON *a = api_alert(&r, id, &root);
    CU_ASSERT_PTR_NOT_NULL(a);
    CU_ASSERT_TRUE(str_is(a, "state", "firing"));
    CU_ASSERT_TRUE(str_is(a, "severity", "critical"));
    cJSON_Delete(root);

    /* Another breaching sample after the restart changes nothing. */
    CU_ASSERT_EQUAL_FATAL(cb_h_publish(cb_h_broker_url(r.d.b), TOPIC, "{\"ch4\":950}", 11, 1), 0);
    /* Then a clearing one: the resolution arrives once. Alerts of one rule
     * share one topic and QoS 1 from one publisher keeps their order, so a
     * repeated "firing" would have come before it. */
    CU_ASSERT_EQUAL_FATAL(cb_h_publish(cb_h_broker_url(r.d.b), TOPIC, "{\"ch4\":20}", 10, 1), 0);
    CU_ASSERT_TRUE(cbd_wait_state(r.d.alerts, "resolved", "gas_high", 1, CBD_TIMEOUT_MS));
    CU_ASSERT_EQUAL(cbd_count_state(r.d.alerts, "firing", NULL), 1);
    CU_ASSERT_EQUAL(cbd_count_state(r.d.alerts, "resolved", NULL), 1);
    CU_ASSERT_EQUAL(cb_h_sub_count(r.d.alerts), 2);

    CU_ASSERT_EQUAL(cbd_stop(cb), 0);
    CU_ASSERT_EQUAL(cb_h_sql_count(r.db, "alert_transitions",
                                   cb_h_strf("alert_id = '%s' AND state = 'firing'", id)), 1);
    CU_ASSERT_EQUAL(cb_h_sql_count(r.db, "alert_transitions",
                                   cb_h_strf("alert_id = '%s' AND state = 'resolved'", id)), 1);
    CU_ASSERT_EQUAL(cb_h_sql_count(r.db, "alert_instances",
                                   cb_h_strf("id = '%s' AND state = 'firing'", id)), 0);
    /* Nothing was sent twice, not even after the last stop. */
    CU_ASSERT_EQUAL(cb_h_sub_count(r.d.alerts), 2);
}

/* An acknowledgement over HTTP: published on MQTT, persisted, restored. */
static void test_ack_over_api_survives_restart(void)
{
    struct rig r;
    struct cb_h_proc *cb;
    const char *id = start_firing(&r, "{\"ch4\":1200}", &cb);
    const char *path = cb_h_strf("/api/alerts/%s/ack", cbd_escape(id));
    const char *body = "{\"by\":\"operator-7\",\"note\":\"crew dispatched\"}";

    CU_ASSERT_EQUAL(cbd_http(r.d.port, "POST", path, NULL, body, NULL), 401);
    CU_ASSERT_EQUAL(cbd_http(r.d.port, "POST", path, "wrong-token", body, NULL), 401);
    const char *resp;
    CU_ASSERT_EQUAL(cbd_http(r.d.port, "POST", path, TOKEN, body, &resp), 200);
    CU_ASSERT_TRUE(cbd_wait_state(r.d.alerts, "acknowledged", "gas_high", 1, CBD_TIMEOUT_MS));
    /* Idempotent: a second ack is accepted and notifies nothing more. */
    CU_ASSERT_EQUAL(cbd_http(r.d.port, "POST", path, TOKEN, body, NULL), 200);

    CU_ASSERT_EQUAL_FATAL(cbd_stop(cb), 0);
    CU_ASSERT_EQUAL(cb_h_sql_count(r.db, "alert_instances",
                                   cb_h_strf("id = '%s' AND state = 'firing' AND acked_by = "
                                             "'operator-7'", id)), 1);
    CU_ASSERT_EQUAL(cb_h_sql_count(r.db, "alert_transitions",
                                   cb_h_strf("alert_id = '%s' AND state = 'acknowledged'", id)), 1);

    cb = cbd_rig_start(&r.d);
    CU_ASSERT_PTR_NOT_NULL_FATAL(cb);
    cJSON *root;
    const cJSON *a = api_alert(&r, id, &root);
    CU_ASSERT_PTR_NOT_NULL(a);
    CU_ASSERT_TRUE(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(a, "acknowledged")));
    CU_ASSERT_TRUE(str_is(a, "acked_by", "operator-7"));
    CU_ASSERT_TRUE(str_is(a, "ack_note", "crew dispatched"));
    cJSON_Delete(root);
    /* ?state=acknowledged finds it too. */
    const char *list;
    CU_ASSERT_EQUAL(cbd_http(r.d.port, "GET", "/api/alerts?state=acknowledged", NULL, NULL, &list),
                    200);
    CU_ASSERT_PTR_NOT_NULL(strstr(list, "operator-7"));

    /* Clear: one resolution; one firing and one acknowledgement in all. */
    CU_ASSERT_EQUAL_FATAL(cb_h_publish(cb_h_broker_url(r.d.b), TOPIC, "{\"ch4\":5}", 9, 1), 0);
    CU_ASSERT_TRUE(cbd_wait_state(r.d.alerts, "resolved", "gas_high", 1, CBD_TIMEOUT_MS));
    CU_ASSERT_EQUAL(cbd_count_state(r.d.alerts, "firing", NULL), 1);
    CU_ASSERT_EQUAL(cbd_count_state(r.d.alerts, "acknowledged", NULL), 1);
    CU_ASSERT_EQUAL(cb_h_sub_count(r.d.alerts), 3);
    CU_ASSERT_EQUAL(cbd_stop(cb), 0);
}

/* A rule that gives its texts in Chinese and English: after a restart the
 * firing alert is listed with both titles and both messages of its last
 * transition (schema step 7), not only the first language's; once resolved,
 * the stored instance keeps both too. */
static void test_firing_alert_keeps_both_languages_across_restart(void)
{
    struct rig r;
    struct cb_h_proc *cb;
    const char *id = start_firing_rules(&r, rule_text_zh, "{\"ch4\":900}", &cb);
    cJSON *root;
    CU_ASSERT_TRUE(both_languages(api_alert(&r, id, &root), "900"));
    cJSON_Delete(root);

    CU_ASSERT_EQUAL_FATAL(cbd_stop(cb), 0);
    CU_ASSERT_EQUAL(cb_h_sql_count(r.db, "alert_instances",
                                   cb_h_strf("id = '%s' AND messages LIKE '%%甲烷 900 ppm%%' AND "
                                             "titles LIKE '%%燃气泄漏%%'", id)), 1);

    cb = cbd_rig_start(&r.d);
    CU_ASSERT_PTR_NOT_NULL_FATAL(cb);
    const cJSON *a = api_alert(&r, id, &root);
    CU_ASSERT_TRUE(str_is(a, "state", "firing"));
    CU_ASSERT_TRUE(str_is(a, "message", "d04/g7: 900 ppm"));
    CU_ASSERT_TRUE(both_languages(a, "900"));
    cJSON_Delete(root);

    /* Resolved: the store's row (GET /api/alerts?state=resolved) has both. */
    CU_ASSERT_EQUAL_FATAL(cb_h_publish(cb_h_broker_url(r.d.b), TOPIC, "{\"ch4\":20}", 10, 1), 0);
    CU_ASSERT_TRUE(cbd_wait_state(r.d.alerts, "resolved", "gas_high", 1, CBD_TIMEOUT_MS));
    const char *list;
    CU_ASSERT_EQUAL(cbd_http(r.d.port, "GET", "/api/alerts?state=resolved", NULL, NULL, &list), 200);
    root = cJSON_Parse(list);
    CU_ASSERT_TRUE(both_languages(cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(root, "alerts"), 0), "20"));
    cJSON_Delete(root);
    CU_ASSERT_EQUAL(cbd_stop(cb), 0);
}

void cb_test_suite_alerts_restart(void)
{
    CU_pSuite s = cb_h_add_suite("alerts_restart");
    CU_add_test(s, "alerts restart: a firing alert survives SIGTERM and a restart, is not "
                   "notified again, resolves once",
                test_firing_survives_restart_without_renotify);
    CU_add_test(s, "alerts restart: an ack over the API is published once and survives a restart",
                test_ack_over_api_survives_restart);
    CU_add_test(s, "alerts restart: a firing alert is listed in both languages after a restart, "
                   "and its resolved row keeps both",
                test_firing_alert_keeps_both_languages_across_restart);
}
