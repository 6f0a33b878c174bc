/* Silences and the audit log against the real daemon: `citybrain run` on a
 * private mosquitto, its HTTP API, and the operator's commands (ack,
 * silence, audit, history, sensors) as separate processes.
 *
 * The silence body of docs/alerts.md is the one POST /api/silences takes;
 * the body this API took before, documented nowhere, is refused. A silence
 * holds notifications (the transition log says which silence held each),
 * never the MQTT feed. An acknowledgement needs `by`. Every operator action
 * (ack, silence created, expired, deleted, rules reloaded through the API,
 * SIGHUP and the file watch) is in GET /api/audit and `citybrain audit`,
 * and survives a restart, as do the silences ended by hand. */
#include <cjson/cJSON.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/support/daemon_itest.h"

void cb_test_suite_silence_audit(void);

#define TOKEN "itest-silence-token"

static const char RULES[] = "rule river_high {\n"
                            "  match    \"city/{district}/river/{sensor}\"\n"
                            "  when     level > 4.5\n"
                            "  severity major\n"
                            "  message  \"{district}: river high\"\n"
                            "}\n";

struct rig {
    struct cbd_rig d;
    const char *db, *rules, *api;
    struct cb_h_proc *cb;
};

static void rig_start(struct rig *r)
{
    r->db = cb_h_pathf("silence.db");
    r->rules = cb_h_pathf("river.rules");
    CU_ASSERT_EQUAL_FATAL(cb_h_write_file(r->rules, RULES, sizeof RULES - 1), 0);
    const char *extra[] = {"--db", r->db, "--rules", r->rules, NULL};
    cbd_rig_init(&r->d, "cb-itest-silence", TOKEN, extra);
    r->api = cb_h_strf("http://127.0.0.1:%d", r->d.port);
    r->cb = cbd_rig_start(&r->d);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r->cb);
}

/* The daemon's answer to method path, parsed; the status in *st. */
static cJSON *api(struct rig *r, const char *method, const char *path, const char *body, long *st)
{
    const char *resp;
    *st = cbd_http(r->d.port, method, path, body ? TOKEN : NULL, body, &resp);
    cJSON *j = cJSON_Parse(resp);
    if (!j)
        fprintf(stderr, "\n%s %s: %ld %s\n", method, path, *st, resp);
    return j;
}

static const char *str(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : "";
}

static int64_t num(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(v) ? (int64_t)v->valuedouble : -1;
}

/* The API's error message for a request that must fail with `want`. */
static const char *refused(struct rig *r, const char *method, const char *path, const char *body,
                           long want)
{
    long st;
    cJSON *j = api(r, method, path, body, &st);
    CU_ASSERT_EQUAL(st, want);
    const char *msg = cb_h_strf("%s", str(j, "error"));
    cJSON_Delete(j);
    return msg;
}

static void publish(struct rig *r, const char *topic, const char *payload)
{
    CU_ASSERT_EQUAL(cb_h_publish(cb_h_broker_url(r->d.b), topic, payload, strlen(payload), 1), 0);
}

/* ---- waiting for the store (written by the daemon's writer thread) ---- */

struct count_wait {
    struct rig *r;
    const char *path, *key;
    int n;
};

static int list_has_n(void *ctx)
{
    struct count_wait *w = ctx;
    long st;
    cJSON *j = api(w->r, "GET", w->path, NULL, &st);
    int n = cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(j, w->key));
    cJSON_Delete(j);
    return st == 200 && n >= w->n;
}

/* GET path until its list `key` has at least n items; returns the answer. */
static cJSON *wait_list(struct rig *r, const char *path, const char *key, int n)
{
    struct count_wait w = {r, path, key, n};
    CU_ASSERT(cb_h_wait_until(list_has_n, &w, CBD_TIMEOUT_MS));
    long st;
    return api(r, "GET", path, NULL, &st);
}

/* The item of list `key` of doc whose member `field` is `value`. */
static const cJSON *find(const cJSON *doc, const char *key, const char *field, const char *value)
{
    const cJSON *it;
    cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(doc, key))
    {
        if (!strcmp(str(it, field), value))
            return it;
    }
    return NULL;
}

struct cli_wait {
    const char *const *args;
    const char *needle;
    const char *out;
};

static int cli_shows(void *ctx)
{
    struct cli_wait *w = ctx;
    const char *err;
    return cbd_cli(w->args, NULL, &w->out, &err) == 0 && strstr(w->out, w->needle);
}

/* Runs `citybrain ARGS` until its stdout shows needle (the samples reach
 * the file with the writer's next commit); returns the last stdout. */
static const char *cli_until(const char *const *args, const char *needle)
{
    struct cli_wait w = {args, needle, ""};
    CU_ASSERT(cb_h_wait_until(cli_shows, &w, CBD_TIMEOUT_MS));
    return w.out;
}

/* ---- silences: the documented body ---- */

static void test_documented_silence_body(void)
{
    struct rig r;
    rig_start(&r);
    int64_t now = cb_h_now_ms();
    long st;
    /* the body of docs/alerts.md */
    const char *doc = cb_h_strf(
        "{\"matchers\":[{\"name\":\"district\",\"value\":\"d07\"},"
        "{\"name\":\"rule\",\"op\":\"=~\",\"value\":\"river_.*\"}],"
        "\"starts\":%lld,\"ends\":%lld,\"comment\":\"pump works\",\"created_by\":\"li.wei\"}",
        (long long)now, (long long)(now + 3600000));
    cJSON *s = api(&r, "POST", "/api/silences", doc, &st);
    CU_ASSERT_EQUAL_FATAL(st, 201);
    int64_t sid = num(s, "id");
    CU_ASSERT(sid > 0);
    CU_ASSERT_STRING_EQUAL(str(s, "state"), "active");
    CU_ASSERT_STRING_EQUAL(str(s, "created_by"), "li.wei");
    CU_ASSERT_STRING_EQUAL(str(s, "comment"), "pump works");
    CU_ASSERT_EQUAL(num(s, "ends"), now + 3600000);
    cJSON *m = cJSON_GetObjectItemCaseSensitive(s, "matchers");
    CU_ASSERT_STRING_EQUAL(str(cJSON_GetArrayItem(m, 0), "op"), "=");
    CU_ASSERT_STRING_EQUAL(str(cJSON_GetArrayItem(m, 1), "op"), "=~");
    cJSON_Delete(s);
    /* what this API took before, documented nowhere, is refused: 400, saying why */
    CU_ASSERT_PTR_NOT_NULL(strstr(
        refused(&r, "POST", "/api/silences",
                "{\"matchers\":{\"district\":\"d07\"},\"duration\":\"2h\",\"by\":\"ops\"}", 400),
        "unknown member 'duration' in a silence"));
    const char *end = cb_h_strf("%lld", (long long)(now + 3600000));
    CU_ASSERT_PTR_NOT_NULL(strstr(
        refused(&r, "POST", "/api/silences",
                cb_h_strf("{\"matchers\":[{\"name\":\"district\",\"op\":\"=~\",\"value\":"
                          "\"d0(7\"}],\"ends\":%s,\"comment\":\"c\",\"created_by\":\"b\"}",
                          end),
                400),
        "matcher 1: bad regular expression 'd0(7'"));
    CU_ASSERT_PTR_NOT_NULL(strstr(
        refused(&r, "POST", "/api/silences",
                cb_h_strf("{\"matchers\":[{\"name\":\"district\",\"op\":\"!=\",\"value\":"
                          "\"d07\"}],\"ends\":%s,\"comment\":\"c\",\"created_by\":\"b\"}",
                          end),
                400),
        "would hold every alert"));
    CU_ASSERT_PTR_NOT_NULL(strstr(
        refused(&r, "POST", "/api/silences",
                cb_h_strf("{\"matchers\":[{\"name\":\"district\",\"value\":\"d07\"}],"
                          "\"ends\":%s,\"comment\":\"c\"}",
                          end),
                400),
        "'created_by' is required"));
    /* a scheduled one, for d08 in an hour */
    s = api(&r, "POST", "/api/silences",
            cb_h_strf("{\"matchers\":[{\"name\":\"district\",\"value\":\"d08\"}],\"starts\":%lld,"
                      "\"ends\":%lld,\"comment\":\"works tonight\",\"created_by\":\"li.wei\"}",
                      (long long)(now + 3600000), (long long)(now + 7200000)),
            &st);
    CU_ASSERT_EQUAL(st, 201);
    CU_ASSERT_STRING_EQUAL(str(s, "state"), "scheduled");
    cJSON_Delete(s);

    /* d07 is silenced, d08 not yet: both fire on the feed, only d08 is notified */
    publish(&r, "city/d07/river/s1", "{\"level\":5.2}");
    publish(&r, "city/d08/river/s1", "{\"level\":5.3}");
    CU_ASSERT_TRUE(cbd_wait_state(r.d.alerts, "firing", "river_high", 2, CBD_TIMEOUT_MS));
    cJSON *h = wait_list(&r, "/api/alerts/history", "transitions", 2);
    const cJSON *t7 = find(h, "transitions", "id", "river_high/city/d07/river/s1");
    const cJSON *t8 = find(h, "transitions", "id", "river_high/city/d08/river/s1");
    CU_ASSERT_PTR_NOT_NULL_FATAL(t7);
    CU_ASSERT_PTR_NOT_NULL_FATAL(t8);
    CU_ASSERT_EQUAL(num(t7, "silenced"), sid);
    CU_ASSERT_PTR_NULL(cJSON_GetObjectItemCaseSensitive(t8, "silenced"));
    cJSON_Delete(h);
    CU_ASSERT_EQUAL(cbd_log_count(r.cb, "(silenced)"), 1); /* the log channel */

    /* the terminal reads the same from the database */
    const char *out, *err;
    const char *hist[] = {"history", "--db", r.db, NULL};
    CU_ASSERT_EQUAL(cbd_cli(hist, NULL, &out, &err), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, cb_h_strf("(silenced by %lld)", (long long)sid)));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "river_high/city/d08/river/s1  d08: river high"));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "2 transitions (newest first)"));
    const char *list[] = {"silence", "list", "--db", r.db, "--json", NULL};
    CU_ASSERT_EQUAL(cbd_cli(list, NULL, &out, &err), 0);
    cJSON *l = cJSON_Parse(out);
    CU_ASSERT_EQUAL(cJSON_GetArraySize(cJSON_GetObjectItem(l, "silences")), 2);
    CU_ASSERT_PTR_NOT_NULL(find(l, "silences", "state", "scheduled"));
    cJSON_Delete(l);
    const char *sensors[] = {"sensors", "--db", r.db, NULL};
    out = cli_until(sensors, "2 sensors");
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "city/d07/river/s1"));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "fresh  level=5.2"));
    CU_ASSERT_EQUAL(cbd_stop(r.cb), 0);
}

/* ---- the audit log ---- */

/* Runs `citybrain ARGS` against the rig's daemon with the token. */
static int operator(struct rig *r, const char *const *args, const char **out, const char **err)
{
    const char *env[] = {"CITYBRAIN_API_TOKEN=" TOKEN, NULL};
    const char *full[24];
    size_t n = 0;
    for (; args[n] && n < 20; n++)
        full[n] = args[n];
    full[n++] = "--api";
    full[n++] = r->api;
    full[n] = NULL;
    return cbd_cli(full, env, out, err);
}

/* The entries of the audit log with action `action` (and, when who is not
 * NULL, by who). */
static int entries(const cJSON *doc, const char *action, const char *who)
{
    int n = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(doc, "entries"))
    {
        n += !strcmp(str(e, "action"), action) && (!who || !strcmp(str(e, "who"), who));
    }
    return n;
}

/* What every check of the log after the actions below expects. */
static void check_audit(const cJSON *a, const char *alert)
{
    CU_ASSERT_EQUAL(entries(a, "ack", "li.wei"), 1);
    CU_ASSERT_EQUAL(entries(a, "silence_create", "li.wei"), 2);
    CU_ASSERT_EQUAL(entries(a, "silence_expire", "zhang.min"), 1);
    CU_ASSERT_EQUAL(entries(a, "silence_delete", "zhang.min"), 1);
    CU_ASSERT_EQUAL(entries(a, "rules_reload", "li.wei"), 1);
    CU_ASSERT_EQUAL(entries(a, "rules_reload", "(sighup)"), 1);
    CU_ASSERT(entries(a, "rules_reload", "(file watch)") >= 1);
    const cJSON *ack = find(a, "entries", "action", "ack");
    CU_ASSERT_STRING_EQUAL(str(ack, "target"), alert);
    CU_ASSERT_STRING_EQUAL(str(ack, "note"), "crew sent");
    const cJSON *exp = find(a, "entries", "action", "silence_expire");
    CU_ASSERT_STRING_EQUAL(str(exp, "target"), "1");
    CU_ASSERT_STRING_EQUAL(str(exp, "note"), "pump fixed");
    CU_ASSERT(cJSON_IsArray(
        cJSON_GetObjectItem(cJSON_GetObjectItemCaseSensitive(exp, "details"), "matchers")));
    int64_t prev = INT64_MAX; /* newest first */
    const cJSON *e;
    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(a, "entries"))
    {
        CU_ASSERT(num(e, "at") <= prev);
        prev = num(e, "at");
    }
}

/* Both silences are listed, expired, with who ended them and when. */
static void check_silences_expired(struct rig *r)
{
    long st;
    cJSON *l = api(r, "GET", "/api/silences", NULL, &st);
    CU_ASSERT_EQUAL(cJSON_GetArraySize(cJSON_GetObjectItem(l, "silences")), 2);
    const cJSON *s;
    cJSON_ArrayForEach(s, cJSON_GetObjectItem(l, "silences"))
    {
        CU_ASSERT_STRING_EQUAL(str(s, "state"), "expired");
        CU_ASSERT_STRING_EQUAL(str(s, "expired_by"), "zhang.min");
        CU_ASSERT(num(s, "expired_at") > 0);
    }
    cJSON_Delete(l);
}

static void test_actions_audited_across_restart(void)
{
    struct rig r;
    rig_start(&r);
    publish(&r, "city/d07/river/s1", "{\"level\":5.2}");
    CU_ASSERT_TRUE_FATAL(cbd_wait_state(r.d.alerts, "firing", "river_high", 1, CBD_TIMEOUT_MS));
    const char *alert = "river_high/city/d07/river/s1";
    const char *ack_path = cb_h_strf("/api/alerts/%s/ack", cbd_escape(alert));
    const char *out, *err;

    /* an acknowledgement names who makes it */
    CU_ASSERT_PTR_NOT_NULL(strstr(refused(&r, "POST", ack_path, "{}", 400),
                                  "'by' is required: who acknowledges"));
    CU_ASSERT_PTR_NOT_NULL(strstr(refused(&r, "POST", ack_path, "{\"by\":\" \"}", 400),
                                  "'by' is required"));
    const char *ack_noby[] = {"ack", alert, NULL};
    CU_ASSERT_EQUAL(operator(&r, ack_noby, &out, &err), 2);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "--by NAME is required"));
    const char *ack[] = {"ack", alert, "--by", "li.wei", "--note", "crew sent", NULL};
    CU_ASSERT_EQUAL(operator(&r, ack, &out, &err), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "\"acked_by\":\"li.wei\""));

    /* silences from the terminal: created, then ended by hand */
    const char *add1[] = {"silence", "add", "district=d07", "rule=~river_.*", "--by", "li.wei",
                          "--comment", "pump works", "--duration", "2h", NULL};
    CU_ASSERT_EQUAL(operator(&r, add1, &out, &err), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "\"id\":1,\"state\":\"active\""));
    const char *add2[] = {"silence", "add", "district!=d07", "sensor=~s[0-9]+", "--by", "li.wei",
                          "--comment", "tonight", "--starts", "+1h", "--duration", "1h", NULL};
    CU_ASSERT_EQUAL(operator(&r, add2, &out, &err), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "\"id\":2,\"state\":\"scheduled\""));
    const char *bad[] = {"silence", "add", "district", "--by", "x", "--comment", "y",
                         "--duration", "1h", NULL};
    CU_ASSERT_EQUAL(operator(&r, bad, &out, &err), 2);
    const char *everything[] = {"silence", "add", "zone!=x", "--by", "x", "--comment", "y",
                                "--duration", "1h", NULL};
    CU_ASSERT_EQUAL(operator(&r, everything, &out, &err), 1); /* the daemon refuses it */
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "HTTP 400: every matcher also matches"));
    const char *expire[] = {"silence", "expire", "1", "--by", "zhang.min", "--comment",
                            "pump fixed", NULL};
    CU_ASSERT_EQUAL(operator(&r, expire, &out, &err), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "\"state\":\"expired\""));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "\"expired_by\":\"zhang.min\""));
    CU_ASSERT_PTR_NOT_NULL(strstr(refused(&r, "DELETE", "/api/silences/2", NULL, 401), "Bearer"));
    const char *deleted;
    CU_ASSERT_EQUAL(cbd_http(r.d.port, "DELETE", "/api/silences/2", TOKEN, NULL, &deleted), 400);
    CU_ASSERT_PTR_NOT_NULL(strstr(deleted, "'by' is required"));
    CU_ASSERT_EQUAL(cbd_http(r.d.port, "DELETE", "/api/silences/2?by=zhang.min", TOKEN, NULL,
                             &deleted),
                    200);
    CU_ASSERT_PTR_NOT_NULL(strstr(deleted, "\"state\":\"expired\""));

    /* reloads: through the API (who and why given), SIGHUP, the file watch */
    long st;
    cJSON *j = api(&r, "POST", "/api/rules/reload", "{\"by\":\"li.wei\",\"note\":\"new gauges\"}",
                   &st);
    CU_ASSERT_EQUAL(st, 200);
    cJSON_Delete(j);
    CU_ASSERT_EQUAL(cb_h_proc_signal(r.cb, SIGHUP), 0);
    CU_ASSERT_TRUE(cbd_wait_log(r.cb, "reloaded (SIGHUP)", CBD_TIMEOUT_MS));
    CU_ASSERT_EQUAL(cb_h_write_file(r.rules, RULES, sizeof RULES - 1), 0);
    CU_ASSERT_TRUE(cbd_wait_log(r.cb, "reloaded (file changed)", CBD_TIMEOUT_MS));

    cJSON *a = wait_list(&r, "/api/audit", "entries", 8);
    check_audit(a, alert);
    const cJSON *api_reload = find(a, "entries", "note", "new gauges");
    CU_ASSERT_STRING_EQUAL(str(cJSON_GetObjectItem(api_reload, "details"), "via"), "api");
    cJSON_Delete(a);
    a = api(&r, "GET", "/api/audit?action=silence_expire", NULL, &st);
    CU_ASSERT_EQUAL(cJSON_GetArraySize(cJSON_GetObjectItem(a, "entries")), 1);
    cJSON_Delete(a);
    CU_ASSERT_PTR_NOT_NULL(strstr(refused(&r, "GET", "/api/audit?action=close_all", NULL, 400),
                                  "'action' must be ack, silence_create"));
    check_silences_expired(&r);

    /* a restart keeps the log and the silences ended by hand */
    CU_ASSERT_EQUAL(cbd_stop(r.cb), 0);
    r.cb = cbd_rig_start(&r.d);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r.cb);
    a = api(&r, "GET", "/api/audit", NULL, &st);
    CU_ASSERT_EQUAL(st, 200);
    check_audit(a, alert);
    cJSON_Delete(a);
    check_silences_expired(&r);

    /* and the terminal reads the same from the file */
    const char *audit_json[] = {"audit", "--db", r.db, "--json", NULL};
    CU_ASSERT_EQUAL(cbd_cli(audit_json, NULL, &out, &err), 0);
    a = cJSON_Parse(out);
    check_audit(a, alert);
    cJSON_Delete(a);
    const char *audit_reloads[] = {"audit", "--db", r.db, "--action", "rules_reload", NULL};
    CU_ASSERT_EQUAL(cbd_cli(audit_reloads, NULL, &out, &err), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "rules_reload    (sighup)"));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "rules_reload    li.wei           -  new gauges"));
    CU_ASSERT_PTR_NULL(strstr(out, "silence_"));
    const char *audit_bad[] = {"audit", "--db", r.db, "--action", "close_all", NULL};
    CU_ASSERT_EQUAL(cbd_cli(audit_bad, NULL, &out, &err), 2);
    const char *list_all[] = {"silence", "list", "--db", r.db, "--all", NULL};
    CU_ASSERT_EQUAL(cbd_cli(list_all, NULL, &out, &err), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "pump works  (ended by zhang.min at "));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "2 silences"));
    const char *list_now[] = {"silence", "list", "--db", r.db, NULL};
    CU_ASSERT_EQUAL(cbd_cli(list_now, NULL, &out, &err), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "0 silences active or scheduled"));
    CU_ASSERT_EQUAL(cbd_stop(r.cb), 0);
}

void cb_test_suite_silence_audit(void)
{
    CU_pSuite s = cb_h_add_suite("silence_audit");
    CU_add_test(s, "silences: the documented body is accepted and holds notifications from its "
                   "start, an undocumented one is refused with 400, the terminal reads them",
                test_documented_silence_body);
    CU_add_test(s, "audit: an ack without by is refused; acks, silences created, expired and "
                   "deleted, reloads by API, SIGHUP and file watch are in /api/audit and "
                   "`citybrain audit`, and survive a restart",
                test_actions_audited_across_restart);
}
