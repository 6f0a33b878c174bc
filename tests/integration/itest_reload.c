/* Rule reloads of a running `citybrain run`: SIGHUP, a changed rule file (the
 * daemon watches them with libuv) and POST /api/rules/reload. A file with
 * errors is rejected with its diagnostics and the running rules go on; a rule
 * that did not change keeps its state; a removed rule resolves its alerts. */
#include <cjson/cJSON.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tests/support/daemon_itest.h"

void cb_test_suite_reload(void);

#define TOKEN "itest-reload-token"

static const char gas_rule[] = "rule gas_high {\n"
                               "  match    \"city/{district}/gas/{sensor}\"\n"
                               "  when     ch4 >= 500\n"
                               "  severity critical\n"
                               "}\n";
/* The same rule with an unknown aggregate at line 3, column 12. */
static const char gas_rule_bad[] = "rule gas_high {\n"
                                   "  match    \"city/{district}/gas/{sensor}\"\n"
                                   "  when     maxx(ch4, 1m) >= 500\n"
                                   "  severity critical\n"
                                   "}\n";
static const char river_rule[] = "rule river_high {\n"
                                 "  match \"city/{district}/river/{sensor}\"\n"
                                 "  when  level > 5\n"
                                 "  for   1s\n"
                                 "}\n";
static const char noise_rule[] = "rule noise_high {\n"
                                 "  match \"city/{district}/noise/{sensor}\"\n"
                                 "  when  value > 90\n"
                                 "}\n";

struct rig {
    struct cbd_rig d;
    const char *dir; /* the rule directory given to --rules */
};

static void rig_init(struct rig *r)
{
    r->dir = cb_h_pathf("rules.d");
    CU_ASSERT_EQUAL_FATAL(mkdir(r->dir, 0700), 0);
    const char *extra[] = {"--db", cb_h_pathf("reload.db"), "--rules", r->dir, NULL};
    cbd_rig_init(&r->d, "cb-itest-reload", TOKEN, extra);
}

static void put_rule(struct rig *r, const char *name, const char *text)
{
    CU_ASSERT_EQUAL_FATAL(cb_h_write_file(cb_h_strf("%s/%s", r->dir, name), text, strlen(text)),
                          0);
}

static int pub(struct rig *r, const char *topic, const char *payload)
{
    return cb_h_publish(cb_h_broker_url(r->d.b), topic, payload, strlen(payload), 1);
}


struct rules_wait {
    int port;
    const char *rule;
};

/* GET /api/rules lists the rule. */
static int rules_has(void *ctx)
{
    struct rules_wait *w = ctx;
    const char *body;
    return cbd_http(w->port, "GET", "/api/rules", NULL, NULL, &body) == 200 &&
           strstr(body, cb_h_strf("\"%s\"", w->rule)) != NULL;
}

/* A broken edit, by file watch, by SIGHUP and by the API: rejected with
 * file:line:col, and the rules that were running still raise alerts. */
static void test_bad_file_is_rejected_and_old_rules_go_on(void)
{
    struct rig r;
    rig_init(&r);
    put_rule(&r, "gas.rules", gas_rule);
    struct cb_h_proc *cb = cbd_rig_start(&r.d);
    CU_ASSERT_PTR_NOT_NULL_FATAL(cb);
    const char *where = cb_h_strf("%s/gas.rules:3:12: error", r.dir);

    put_rule(&r, "gas.rules", gas_rule_bad);
    CU_ASSERT_TRUE(cbd_wait_log(cb, "reload (file changed) rejected", CBD_TIMEOUT_MS));
    CU_ASSERT_TRUE(cbd_wait_log(cb, where, CBD_TIMEOUT_MS));
    CU_ASSERT_PTR_NOT_NULL(strstr(cb_h_proc_stderr(cb), "maxx"));

    CU_ASSERT_EQUAL(cb_h_proc_signal(cb, SIGHUP), 0);
    CU_ASSERT_TRUE(cbd_wait_log(cb, "reload (SIGHUP) rejected", CBD_TIMEOUT_MS));
    CU_ASSERT_TRUE(cbd_wait_log_n(cb, where, 2, CBD_TIMEOUT_MS));

    const char *body;
    CU_ASSERT_EQUAL(cbd_http(r.d.port, "POST", "/api/rules/reload", NULL, NULL, NULL), 401);
    CU_ASSERT_EQUAL(cbd_http(r.d.port, "POST", "/api/rules/reload", TOKEN, "{}", &body), 422);
    /* The diagnostics as JSON, each with its file, line and column. */
    cJSON *j = cJSON_Parse(body);
    const cJSON *d0 = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "diagnostics"), 0);
    const cJSON *file = cJSON_GetObjectItemCaseSensitive(d0, "file");
    CU_ASSERT_TRUE(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(j, "error")));
    CU_ASSERT_TRUE(cJSON_IsString(file) && strstr(file->valuestring, "gas.rules"));
    CU_ASSERT_EQUAL(cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(d0, "line")), 3);
    CU_ASSERT_EQUAL(cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(d0, "col")), 12);
    if (!d0)
        fprintf(stderr, "\nnot the diagnostics: %s\n", body);
    cJSON_Delete(j);
    double errors = 0;
    CU_ASSERT_EQUAL(cbd_metric(r.d.port, "citybrain_rules_reloads_total{result=\"error\"}", &errors),
                    0);
    /* watch (an editor's write may count twice), SIGHUP, API */
    CU_ASSERT_TRUE(errors >= 3);

    /* The running gas_high still fires. */
    CU_ASSERT_EQUAL_FATAL(pub(&r, "city/d02/gas/g1", "{\"ch4\":800}"), 0);
    CU_ASSERT_TRUE(cbd_wait_state(r.d.alerts, "firing", "gas_high", 1, CBD_TIMEOUT_MS));

    /* Fixed: the API reload succeeds. */
    put_rule(&r, "gas.rules", gas_rule);
    CU_ASSERT_EQUAL(cbd_http(r.d.port, "POST", "/api/rules/reload", TOKEN, "{}", &body), 200);
    CU_ASSERT_PTR_NOT_NULL(strstr(body, "\"ok\":true"));
    CU_ASSERT_EQUAL(cbd_stop(cb), 0);
}

/* Edits around a firing alert: its unchanged rule keeps it firing (no
 * second notification); the rule whose file is removed resolves its alert. */
static void test_unchanged_rule_keeps_state_removed_rule_resolves(void)
{
    struct rig r;
    rig_init(&r);
    put_rule(&r, "gas.rules", gas_rule);
    put_rule(&r, "river.rules", river_rule);
    struct cb_h_proc *cb = cbd_rig_start(&r.d);
    CU_ASSERT_PTR_NOT_NULL_FATAL(cb);

    CU_ASSERT_EQUAL_FATAL(pub(&r, "city/d03/gas/g2", "{\"ch4\":700}"), 0);
    CU_ASSERT_EQUAL_FATAL(pub(&r, "city/d03/river/s4", "{\"level\":9}"), 0);
    CU_ASSERT_TRUE_FATAL(cbd_wait_state(r.d.alerts, "firing", "gas_high", 1, CBD_TIMEOUT_MS));
    CU_ASSERT_TRUE_FATAL(cbd_wait_state(r.d.alerts, "firing", "river_high", 1, CBD_TIMEOUT_MS));

    /* river.rules goes, noise.rules comes; gas.rules is untouched. */
    size_t reloads = cbd_log_count(cb, "reloaded (");
    CU_ASSERT_EQUAL_FATAL(unlink(cb_h_strf("%s/river.rules", r.dir)), 0);
    put_rule(&r, "noise.rules", noise_rule);
    CU_ASSERT_TRUE(cbd_wait_log_n(cb, "reloaded (", reloads + 1, CBD_TIMEOUT_MS));
    CU_ASSERT_TRUE(cbd_wait_state(r.d.alerts, "resolved", "river_high", 1, CBD_TIMEOUT_MS));
    /* The unlink and the write may make two reloads: wait for the second. */
    struct rules_wait rw = {r.d.port, "noise_high"};
    CU_ASSERT_TRUE(cb_h_wait_until(rules_has, &rw, CBD_TIMEOUT_MS));

    /* The new rule runs. */
    CU_ASSERT_EQUAL(pub(&r, "city/d03/noise/n1", "95"), 0);
    CU_ASSERT_TRUE(cbd_wait_state(r.d.alerts, "firing", "noise_high", 1, CBD_TIMEOUT_MS));

    /* A reload with nothing changed keeps everything. */
    CU_ASSERT_EQUAL(cb_h_proc_signal(cb, SIGHUP), 0);
    CU_ASSERT_TRUE(cbd_wait_log_n(cb, "reloaded (SIGHUP)", 1, CBD_TIMEOUT_MS));

    /* gas_high is still firing, in the API ... */
    const char *body;
    CU_ASSERT_EQUAL(cbd_http(r.d.port, "GET", "/api/alerts?rule=gas_high", NULL, NULL, &body), 200);
    CU_ASSERT_PTR_NOT_NULL(strstr(body, "\"state\":\"firing\""));
    CU_ASSERT_EQUAL(cbd_http(r.d.port, "GET", "/api/alerts?rule=river_high", NULL, NULL, &body),
                    200);
    CU_ASSERT_PTR_NOT_NULL(strstr(body, "\"alerts\":[]"));
    CU_ASSERT_PTR_NULL(strstr(body, "river_high"));

    /* ... and resolves once when cleared, never having fired again. */
    CU_ASSERT_EQUAL(pub(&r, "city/d03/gas/g2", "{\"ch4\":10}"), 0);
    CU_ASSERT_TRUE(cbd_wait_state(r.d.alerts, "resolved", "gas_high", 1, CBD_TIMEOUT_MS));
    CU_ASSERT_EQUAL(cbd_count_state(r.d.alerts, "firing", "gas_high"), 1);
    CU_ASSERT_EQUAL(cbd_count_state(r.d.alerts, "firing", "river_high"), 1);
    CU_ASSERT_EQUAL(cbd_count_state(r.d.alerts, "resolved", "river_high"), 1);
    CU_ASSERT_EQUAL(cbd_count_state(r.d.alerts, "resolved", "gas_high"), 1);
    CU_ASSERT_EQUAL(cbd_stop(cb), 0);
    CU_ASSERT_EQUAL(cb_h_sql_count(cb_h_pathf("reload.db"), "alert_transitions",
                                   "rule = 'gas_high' AND state = 'firing'"), 1);
    CU_ASSERT_EQUAL(cb_h_sql_count(cb_h_pathf("reload.db"), "alert_instances",
                                   "rule = 'river_high' AND state = 'firing'"), 0);
}

void cb_test_suite_reload(void)
{
    CU_pSuite s = cb_h_add_suite("reload");
    CU_add_test(s, "reload: a file with errors is rejected with file:line:col (watch, SIGHUP, "
                   "API 422) and the running rules go on",
                test_bad_file_is_rejected_and_old_rules_go_on);
    CU_add_test(s, "reload: an unchanged rule keeps its firing alert; a removed rule resolves",
                test_unchanged_rule_keeps_state_removed_rule_resolves);
}
