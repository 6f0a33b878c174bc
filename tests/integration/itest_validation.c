/* One validation, against the real binary, broker and daemon: `citybrain
 * check --config`, `run --check-config`, `run` and a reload refuse an unknown
 * notify channel with the same file:line:col words; a configuration that
 * defines its own channels keeps the built-in log; run refuses no rules at
 * all (exit 2) unless rules.allow_none; --set refuses secrets. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "tests/support/daemon_itest.h"

void cb_test_suite_validation(void);

#define TOKEN "itest-validation-token"

static const char river_opz[] = "rule river_high {\n"
                                "  match  \"city/{district}/river/{sensor}\"\n"
                                "  when   level > 5\n"
                                "  notify opz\n"
                                "}\n";
static const char river_ops[] = "rule river_high {\n"
                                "  match  \"city/{district}/river/{sensor}\"\n"
                                "  when   level > 5\n"
                                "  notify ops\n"
                                "}\n";

/* 1 when every line of `lines` (a diagnostic block as --check-config prints
 * it) is in hay (run's log, where each line follows a log prefix). */
static int each_line_in(const char *lines, const char *hay)
{
    int ok = 1;
    const char *p = lines;
    while (*p) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        if (n && !strstr(hay, cb_h_strf("%.*s", (int)n, p))) {
            fprintf(stderr, "\nnot in run's stderr: %.*s\n", (int)n, p);
            ok = 0;
        }
        p += n + (nl != NULL);
    }
    return ok;
}

static int exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

/* `notify opz` (a typo of ops) in a configuration that defines ops and cap:
 * the same error, at the same place, from check, --check-config and run, and
 * run opens nothing; once fixed, run starts (log, the default default_notify,
 * is built in though the file defines other channels), and a reload back to
 * the typo is rejected while the running rule still fires. */
static void test_unknown_channel_refused_everywhere(void)
{
    const char *dir = cb_h_pathf("rules.d");
    CU_ASSERT_EQUAL_FATAL(mkdir(dir, 0700), 0);
    const char *rules = cbd_write_text("rules.d/river.rules", river_opz);
    const char *db = cb_h_pathf("v.db");
    const char *conf = cbd_write_text("v.conf", cb_h_strf("alerts.channel = ops type=log\n"
                                                         "alerts.channel = cap type=mqtt format=cap\n"
                                                         "rules.path = %s\n"
                                                         "storage.db = %s\n"
                                                         "rules.watch = false\n",
                                                         dir, db));
    const char *want = cb_h_strf("%s:4:10: error: unknown channel 'opz' in notify; channels of "
                                 "%s: ops, cap, log (did you mean 'ops'?)\n"
                                 "    4 |   notify opz\n"
                                 "      |          ^~~\n",
                                 rules, conf);
    const char *err;
    const char *chk[] = {"check", "--config", conf, dir, NULL};
    CU_ASSERT_EQUAL(cbd_run_to_exit(chk, NULL, &err), 1);
    CU_ASSERT_STRING_EQUAL(err, cb_h_strf("%s1 error(s)\n", want));

    const char *cc[] = {"run", "--config", conf, "--check-config", NULL};
    CU_ASSERT_EQUAL(cbd_run_to_exit(cc, NULL, &err), 1);
    CU_ASSERT_STRING_EQUAL(err, want);

    struct cbd_rig r;
    const char *extra[] = {"--config", conf, NULL};
    cbd_rig_init(&r, "cb-itest-validation", TOKEN, extra);
    CU_ASSERT_EQUAL(cbd_run_to_exit(r.args, r.env, &err), 1);
    CU_ASSERT_TRUE(each_line_in(want, err));
    CU_ASSERT_FALSE(exists(db)); /* refused before anything was opened */
    CU_ASSERT_PTR_NULL(strstr(err, "subscribed to"));

    /* Fixed: --check-config and run agree that it is good. */
    cbd_write_text("rules.d/river.rules", river_ops);
    CU_ASSERT_EQUAL(cbd_run_to_exit(cc, NULL, &err), 0);
    struct cb_h_proc *cb = cbd_rig_start(&r);
    CU_ASSERT_PTR_NOT_NULL_FATAL(cb);

    /* A reload back to the typo is rejected with the same diagnostic... */
    cbd_write_text("rules.d/river.rules", river_opz);
    const char *body;
    CU_ASSERT_EQUAL(cbd_http(r.port, "POST", "/api/rules/reload", TOKEN, "{}", &body), 422);
    cJSON *j = cJSON_Parse(body);
    const cJSON *d0 = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "diagnostics"), 0);
    const cJSON *code = cJSON_GetObjectItemCaseSensitive(d0, "code");
    CU_ASSERT_TRUE(cJSON_IsString(code) && !strcmp(code->valuestring, "E029"));
    CU_ASSERT_EQUAL(cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(d0, "line")), 4);
    CU_ASSERT_EQUAL(cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(d0, "col")), 10);
    cJSON_Delete(j);
    CU_ASSERT_TRUE(cbd_wait_log(cb, "reload (HTTP API) rejected", CBD_TIMEOUT_MS));
    CU_ASSERT_TRUE(each_line_in(want, cb_h_proc_stderr(cb)));
    /* ... and the running rule goes on. */
    CU_ASSERT_EQUAL(cb_h_publish(cb_h_broker_url(r.b), "city/d01/river/s1", "{\"level\":9}", 11, 1),
                    0);
    CU_ASSERT_TRUE(cbd_wait_state(r.alerts, "firing", "river_high", 1, CBD_TIMEOUT_MS));
    CU_ASSERT_EQUAL(cbd_stop(cb), 0);
}

/* No --rules, an empty rules.path, a directory without *.rules, a file
 * without a rule: run and --check-config exit 2 naming the ways out, before
 * anything is opened; rules.allow_none = true starts it. */
static void test_no_rules_refused_unless_allowed(void)
{
    struct cb_h_broker *b = cb_h_broker_start(NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    const char *db = cb_h_pathf("none.db");
    const char *empty = cb_h_pathf("empty.d");
    CU_ASSERT_EQUAL_FATAL(mkdir(empty, 0700), 0);
    const char *comment = cbd_write_text("comment.rules", "# no rule here yet\n");
    const char *err;
    const char *const cases[][12] = {
        {"run", "--broker", cb_h_broker_url(b), "--db", db, "--http", "off", NULL},
        {"run", "--broker", cb_h_broker_url(b), "--db", db, "--http", "off", "--rules", empty,
         NULL},
        {"run", "--broker", cb_h_broker_url(b), "--db", db, "--http", "off", "--rules", comment,
         NULL},
        {"run", "--db", db, "--check-config", NULL},
        {"run", "--db", db, "--rules", empty, "--check-config", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        CU_ASSERT_EQUAL(cbd_run_to_exit(cases[i], NULL, &err), 2);
        CU_ASSERT_PTR_NOT_NULL(strstr(err, "error: no rules to run"));
        CU_ASSERT_PTR_NOT_NULL(strstr(err, "--rules PATH"));
        CU_ASSERT_PTR_NOT_NULL(strstr(err, "rules.path"));
        CU_ASSERT_PTR_NOT_NULL(strstr(err, "rules.allow_none = true"));
        CU_ASSERT_FALSE(exists(db));
    }
    const char *ok[] = {"run", "--broker", cb_h_broker_url(b), "--db", db, "--http", "off",
                        "--client-id", "cb-itest-norules", "--rules", empty,
                        "--set", "rules.allow_none=true", NULL};
    struct cb_h_proc *cb = cbd_start(ok, NULL, 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(cb);
    CU_ASSERT_PTR_NOT_NULL(strstr(cb_h_proc_stderr(cb), "0 rule(s)"));
    CU_ASSERT_EQUAL(cbd_stop(cb), 0);
}

/* Secrets never on the command line: each is refused, naming its variable
 * (and nothing starts); the file and the environment still set them. */
static void test_secret_on_command_line_refused(void)
{
    const char *rules = cbd_write_text("s.rules", river_ops);
    static const char *const secrets[][2] = {
        {"http.token", "CITYBRAIN_API_TOKEN"},
        {"http.read_token", "CITYBRAIN_API_READ_TOKEN"},
        {"mqtt.password", "CITYBRAIN_MQTT_PASSWORD"},
    };
    const char *err;
    for (size_t i = 0; i < 3; i++) {
        const char *set = cb_h_strf("%s=hunter2", secrets[i][0]);
        const char *a[] = {"run", "--rules", rules, "--set", set, "--check-config", NULL};
        CU_ASSERT_EQUAL(cbd_run_to_exit(a, NULL, &err), 2);
        CU_ASSERT_PTR_NOT_NULL(strstr(err, cb_h_strf("--set %s: a secret", secrets[i][0])));
        CU_ASSERT_PTR_NOT_NULL(strstr(err, secrets[i][1]));
        CU_ASSERT_PTR_NULL(strstr(err, "configuration OK"));
    }

    /* The token from the file guards the API's writes. */
    const char *conf = cbd_write_text("s.conf", "http.token = from-the-file\n");
    struct cbd_rig r;
    const char *extra[] = {"--config", conf, "--rules", rules, "--db", cb_h_pathf("s.db"), NULL};
    cbd_rig_init(&r, "cb-itest-secret", "from-the-env", extra);
    r.env[0] = NULL; /* no CITYBRAIN_API_TOKEN: the file's token counts */
    struct cb_h_proc *cb = cbd_rig_start(&r);
    CU_ASSERT_PTR_NOT_NULL_FATAL(cb);
    CU_ASSERT_EQUAL(cbd_http(r.port, "POST", "/api/rules/reload", "hunter2", "{}", NULL), 401);
    CU_ASSERT_EQUAL(cbd_http(r.port, "POST", "/api/rules/reload", "from-the-file", "{}", NULL),
                    200);
    CU_ASSERT_EQUAL(cbd_stop(cb), 0);
}

void cb_test_suite_validation(void)
{
    CU_pSuite s = cb_h_add_suite("validation");
    CU_add_test(s, "validation: an unknown notify channel is refused by check, --check-config, "
                   "run and reload with the same file:line:col words; the running rules go on",
                test_unknown_channel_refused_everywhere);
    CU_add_test(s, "validation: run with no rules at all exits 2 naming --rules, rules.path and "
                   "rules.allow_none, which lets it start",
                test_no_rules_refused_unless_allowed);
    CU_add_test(s, "validation: --set of a secret is refused naming its environment variable; "
                   "the file still sets it",
                test_secret_on_command_line_refused);
}
