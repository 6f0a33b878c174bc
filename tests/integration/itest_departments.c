/* Departments against the real daemon: `citybrain run` on a private
 * mosquitto with two department tokens in its configuration file, the
 * water department (topics city/+/river/# and city/+/rain/#) and the east
 * district (label district=d07, its token stored as sha256:), walked over
 * every read route of the API (docs/api.md "Departments"): not one sensor,
 * sample, alert, transition, rule or map point outside the scope; the routes
 * that are not a department's refused; reads without a token refused once
 * departments exist; each refusal in the audit log. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tests/support/daemon_itest.h"

void cb_test_suite_departments(void);

#define TOKEN "itest-dept-rw"
#define READER "itest-dept-reader"
#define WATER "itest-water-token"
#define EAST "east-secret"
#define EAST_SHA "47b53d325f10be18e5eec321afc52693b2f886070e22d47d327576ff07c46a8a"

static const char RULES[] = "rule river_high {\n"
                            "  match    \"city/{district}/river/{sensor}\"\n"
                            "  when     level > 4.5\n"
                            "  severity major\n"
                            "  message  \"{district}: river high\"\n"
                            "}\n"
                            "rule traffic_jam {\n"
                            "  match    \"city/{district}/traffic/{sensor}\"\n"
                            "  when     speed < 5\n"
                            "  severity warning\n"
                            "  message  \"{district}: jam\"\n"
                            "}\n";

static const char CONF[] =
    "http.read_token = " READER "\n"
    "http.department = water token=" WATER " topic=city/+/river/# topic=city/+/rain/#\n"
    "http.department = east token=sha256:" EAST_SHA " label=district=d07\n";

/* The scopes, as the test sees them (not through the daemon's code). */
static int water_topic(const char *t) { return strstr(t, "/river/") || strstr(t, "/rain/"); }
static int east_topic(const char *t) { return strncmp(t, "city/d07/", 9) == 0; }

struct rig {
    struct cbd_rig d;
    struct cb_h_proc *cb;
};

static cJSON *get(struct rig *r, const char *path, const char *token, long *st)
{
    const char *resp;
    *st = cbd_http(r->d.port, "GET", path, token, NULL, &resp);
    return cJSON_Parse(resp);
}

static const char *str(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : "";
}

static const char *label(const cJSON *o, const char *k)
{
    return str(cJSON_GetObjectItemCaseSensitive(o, "labels"), k);
}

/* Items of list `member` of GET path: each must pass ok (counted in *bad
 * otherwise); returns how many there were. */
static int walk(struct rig *r, const char *path, const char *token, const char *member,
                int (*ok)(const cJSON *item), int *bad)
{
    long st;
    cJSON *j = get(r, path, token, &st);
    CU_ASSERT_EQUAL(st, 200);
    int n = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(j, member))
    {
        n++;
        if (!ok(it)) {
            (*bad)++;
            char *txt = cJSON_PrintUnformatted(it);
            fprintf(stderr, "\n%s: out of scope: %s\n", path, txt);
            free(txt);
        }
    }
    cJSON_Delete(j);
    return n;
}

static int water_sensor(const cJSON *s) { return water_topic(str(s, "topic")); }
static int east_sensor(const cJSON *s) { return east_topic(str(s, "topic")); }
static int water_alert(const cJSON *a) { return !strcmp(str(a, "rule"), "river_high"); }
static int east_alert(const cJSON *a) { return !strcmp(label(a, "district"), "d07"); }
static int water_rule(const cJSON *x) { return !strcmp(str(x, "name"), "river_high") &&
                                               !cJSON_GetObjectItemCaseSensitive(x, "firing"); }
static int any_rule(const cJSON *x) { return !cJSON_GetObjectItemCaseSensitive(x, "firing"); }
static int water_feature(const cJSON *f)
{
    const char *t = str(cJSON_GetObjectItemCaseSensitive(f, "properties"), "topic");
    return !*t || water_topic(t);
}
static int any(const cJSON *x)
{
    (void)x;
    return 1;
}

static int water_alerts_series(const cJSON *l) { return !strcmp(str(l, "alertname"), "river_high"); }
static int east_alerts_series(const cJSON *l) { return !strcmp(str(l, "district"), "d07"); }
static int is_alerts(const cJSON *l) { return !strcmp(str(l, "__name__"), "ALERTS"); }
static int water_series(const cJSON *l)
{
    return is_alerts(l) ? water_alerts_series(l) : water_topic(str(l, "topic"));
}
static int east_series(const cJSON *l)
{
    return is_alerts(l) ? east_alerts_series(l) : east_topic(str(l, "topic"));
}

/* The Prometheus API: the label sets of /api/v1/series (data) or of an
 * instant query's result (data.result[].metric), each checked by ok. */
static int prom_walk(struct rig *r, const char *path, const char *token,
                     int (*ok)(const cJSON *labels), int *bad)
{
    long st;
    cJSON *j = get(r, path, token, &st);
    CU_ASSERT_EQUAL(st, 200);
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(j, "data");
    const cJSON *list = cJSON_IsArray(data) ? data : cJSON_GetObjectItemCaseSensitive(data, "result");
    int n = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, list)
    {
        const cJSON *labels = cJSON_IsArray(data) ? it : cJSON_GetObjectItemCaseSensitive(it, "metric");
        n++;
        if (!ok(labels)) {
            (*bad)++;
            char *txt = cJSON_PrintUnformatted(labels);
            fprintf(stderr, "\n%s: out of scope: %s\n", path, txt);
            free(txt);
        }
    }
    cJSON_Delete(j);
    return n;
}

static void publish(struct rig *r, const char *topic, const char *payload)
{
    CU_ASSERT_EQUAL(cb_h_publish(cb_h_broker_url(r->d.b), topic, payload, strlen(payload), 1), 0);
}

/* Opens /api/events with the token as access_token (and Last-Event-ID: 0
 * when resume): the fd, after the stream's opening line. */
static int events(struct rig *r, const char *token, int resume, char *buf, size_t cap)
{
    int fd = cbd_raw_connect(r->d.port);
    CU_ASSERT_FATAL(fd >= 0);
    buf[0] = '\0';
    CU_ASSERT(cbd_raw_send(fd, cb_h_strf("GET /api/events?access_token=%s HTTP/1.1\r\nHost: t\r\n"
                                         "%s\r\n",
                                         token, resume ? "Last-Event-ID: 0\r\n" : "")) == 0);
    CU_ASSERT(cbd_raw_read(fd, buf, cap, "citybrain events", CBD_TIMEOUT_MS));
    return fd;
}

static void test_department_walk(void)
{
    struct rig r;
    const char *rules = cb_h_pathf("dept.rules"), *conf = cb_h_pathf("dept.conf");
    CU_ASSERT_EQUAL_FATAL(cb_h_write_file(rules, RULES, sizeof RULES - 1), 0);
    CU_ASSERT_EQUAL_FATAL(cb_h_write_file(conf, CONF, sizeof CONF - 1), 0);
    const char *db = cb_h_pathf("dept.db");
    const char *extra[] = {"--config", conf, "--db", db, "--rules", rules, NULL};
    cbd_rig_init(&r.d, "cb-itest-dept", TOKEN, extra);
    r.cb = cbd_rig_start(&r.d);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r.cb);

    static char live[1 << 16], resumed[1 << 16];
    int live_fd = events(&r, WATER, 0, live, sizeof live);

    /* Out of the water department's scope first, so that on the stream
     * (in order) they come before the last event it waits for. */
    publish(&r, "city/d07/traffic/s1", "{\"speed\":1}");
    publish(&r, "city/d08/traffic/s1", "{\"speed\":1}");
    CU_ASSERT_FATAL(cbd_wait_state(r.d.alerts, "firing", "traffic_jam", 2, CBD_TIMEOUT_MS));
    publish(&r, "city/d08/traffic/s1", "{\"speed\":50}");
    CU_ASSERT_FATAL(cbd_wait_state(r.d.alerts, "resolved", "traffic_jam", 1, CBD_TIMEOUT_MS));
    publish(&r, "city/d08/rain/s1", "{\"mm\":3}");
    publish(&r, "city/d07/river/s1", "{\"level\":5}");
    publish(&r, "city/d08/river/s1", "{\"level\":5}");
    CU_ASSERT_FATAL(cbd_wait_state(r.d.alerts, "firing", "river_high", 2, CBD_TIMEOUT_MS));
    publish(&r, "city/d08/river/s1", "{\"level\":1}");
    CU_ASSERT_FATAL(cbd_wait_state(r.d.alerts, "resolved", "river_high", 1, CBD_TIMEOUT_MS));

    /* The live stream: river_high's resolution is the last transition. */
    CU_ASSERT(cbd_raw_read(live_fd, live, sizeof live, "\"resolved\"", CBD_TIMEOUT_MS));
    CU_ASSERT_PTR_NOT_NULL(strstr(live, "river_high"));
    CU_ASSERT_PTR_NULL(strstr(live, "traffic_jam"));
    /* The stored transitions (resume), filtered the same way. */
    int resume_fd = events(&r, WATER, 1, resumed, sizeof resumed);
    CU_ASSERT(cbd_raw_read(resume_fd, resumed, sizeof resumed, "\"resolved\"", CBD_TIMEOUT_MS));
    CU_ASSERT_PTR_NOT_NULL(strstr(resumed, "river_high"));
    CU_ASSERT_PTR_NULL(strstr(resumed, "traffic_jam"));

    CU_ASSERT_FATAL(cbd_wait_rows(db, 7, CBD_TIMEOUT_MS)); /* the samples are stored */

    /* Every list route, for both departments: something, and nothing else. */
    int bad = 0;
    CU_ASSERT_EQUAL(walk(&r, "/api/sensors", WATER, "sensors", water_sensor, &bad), 3);
    CU_ASSERT_EQUAL(walk(&r, "/api/sensors", cb_h_strf("%s", EAST), "sensors", east_sensor, &bad),
                    2);
    CU_ASSERT_EQUAL(walk(&r, "/api/alerts", WATER, "alerts", water_alert, &bad), 1);
    CU_ASSERT_EQUAL(walk(&r, "/api/alerts", EAST, "alerts", east_alert, &bad), 2);
    CU_ASSERT_EQUAL(walk(&r, "/api/alerts?state=resolved", WATER, "alerts", water_alert, &bad),
                    1);
    CU_ASSERT_EQUAL(walk(&r, "/api/alerts?state=resolved", EAST, "alerts", east_alert, &bad), 0);
    CU_ASSERT(walk(&r, "/api/alerts/history", WATER, "transitions", water_alert, &bad) >= 3);
    CU_ASSERT(walk(&r, "/api/alerts/history", EAST, "transitions", east_alert, &bad) >= 2);
    CU_ASSERT_EQUAL(walk(&r, "/api/rules", WATER, "rules", water_rule, &bad), 1);
    CU_ASSERT_EQUAL(walk(&r, "/api/rules", EAST, "rules", any_rule, &bad), 2);
    CU_ASSERT(walk(&r, "/api/city", WATER, "features", water_feature, &bad) > 0);
    /* The Prometheus API: series and ALERTS of the scope only. */
    static const char every[] = "/api/v1/series?match[]=%7B__name__%3D~%22.%2B%22%7D";
    CU_ASSERT(prom_walk(&r, every, WATER, water_series, &bad) > 0);
    CU_ASSERT(prom_walk(&r, every, EAST, east_series, &bad) > 0);
    CU_ASSERT(prom_walk(&r, "/api/v1/query?query=ALERTS", WATER, water_alerts_series, &bad) > 0);
    CU_ASSERT(prom_walk(&r, "/api/v1/query?query=ALERTS", EAST, east_alerts_series, &bad) > 0);
    CU_ASSERT_EQUAL(bad, 0);
    CU_ASSERT(prom_walk(&r, every, READER, any, &bad) > prom_walk(&r, every, WATER, any, &bad));
    /* The whole city's tokens see everything (the walk above is not vacuous). */
    CU_ASSERT_EQUAL(walk(&r, "/api/sensors", READER, "sensors", any, &bad), 5);
    CU_ASSERT_EQUAL(walk(&r, "/api/alerts/history", TOKEN, "transitions", any, &bad), 6);

    /* Series: in scope answered, out of scope refused. */
    long st;
    cJSON *j = get(&r, "/api/series?topic=city/d08/river/s1&metric=level", WATER, &st);
    CU_ASSERT_EQUAL(st, 200);
    CU_ASSERT(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(j, "buckets")) > 0);
    cJSON_Delete(j);
    j = get(&r, "/api/series?topic=city/d07/traffic/s1&metric=speed", WATER, &st);
    CU_ASSERT_EQUAL(st, 403);
    CU_ASSERT_PTR_NOT_NULL(strstr(str(j, "error"), "outside department water's scope"));
    cJSON_Delete(j);
    j = get(&r, "/api/series?topic=city/d08/river/s1&metric=level", EAST, &st);
    CU_ASSERT_EQUAL(st, 403);
    cJSON_Delete(j);

    /* Not a department's: audit, silences, metrics; writes are refused. */
    static const char *const city_only[] = {"/api/audit", "/api/silences", "/metrics"};
    for (size_t i = 0; i < 3; i++) {
        cJSON_Delete(get(&r, city_only[i], WATER, &st));
        CU_ASSERT_EQUAL(st, 403);
    }
    const char *resp;
    CU_ASSERT_EQUAL(cbd_http(r.d.port, "POST", "/api/rules/reload", WATER, "{}", &resp), 403);
    /* Reads without a token are closed once departments exist; a wrong one too. */
    cJSON_Delete(get(&r, "/api/sensors", NULL, &st));
    CU_ASSERT_EQUAL(st, 401);
    cJSON_Delete(get(&r, "/api/alerts", "not-a-token", &st));
    CU_ASSERT_EQUAL(st, 401);
    /* The console says who reads; health stays open. */
    j = get(&r, "/api/console", WATER, &st);
    CU_ASSERT_STRING_EQUAL(str(j, "department"), "water");
    cJSON_Delete(j);
    cJSON_Delete(get(&r, "/api/health", NULL, &st));
    CU_ASSERT_EQUAL(st, 200);

    /* Each refusal is in the audit log, without the query string (written
     * with the alerts' next commit: read until it is there, or time out). */
    int water_refused = 0, anonymous = 0, unknown = 0, with_query = 0;
    for (int tries = 0; tries < 100; tries++) {
        j = get(&r, "/api/audit?action=read_refused", READER, &st);
        CU_ASSERT_EQUAL(st, 200);
        water_refused = anonymous = unknown = with_query = 0;
        const cJSON *e;
        cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(j, "entries"))
        {
            water_refused += !strcmp(str(e, "who"), "water");
            anonymous += !strcmp(str(e, "who"), "anonymous");
            unknown += !strcmp(str(e, "who"), "unknown");
            with_query += strchr(str(e, "target"), '?') != NULL;
        }
        cJSON_Delete(j);
        j = NULL;
        if (water_refused >= 4 && anonymous >= 1 && unknown >= 1)
            break;
        usleep(50 * 1000);
    }
    CU_ASSERT_EQUAL(water_refused, 4); /* series, audit, silences, metrics */
    CU_ASSERT_EQUAL(anonymous, 1);
    CU_ASSERT_EQUAL(unknown, 1);
    CU_ASSERT_EQUAL(with_query, 0);

    close(live_fd);
    close(resume_fd);
    CU_ASSERT_EQUAL(cbd_stop(r.cb), 0);
}

/* A department line that is wrong stops `run` with the line and the reason. */
static void test_bad_department_refused(void)
{
    static const char *const lines[][2] = {
        {"http.department = water topic=city/+/river/#\n", "has no token="},
        {"http.department = water token=x\n", "has no topic= nor label="},
        {"http.department = water token=x topic=city/river+/#\n", "has + or # inside a level"},
        {"http.department = water token=x label=kind=river\n",
         "is not a {label} of sensors.label_pattern"},
        {"http.department = water token=sha256:abc topic=#\n", "needs 64 hex digits"},
    };
    const char *rules = cb_h_pathf("bad.rules");
    CU_ASSERT_EQUAL_FATAL(cb_h_write_file(rules, RULES, sizeof RULES - 1), 0);
    for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++) {
        const char *conf = cb_h_pathf("bad%zu.conf", i);
        const char *text = cb_h_strf("sensors.label_pattern = city/{district}/+/{sensor}\n%s",
                                     lines[i][0]);
        CU_ASSERT_EQUAL_FATAL(cb_h_write_file(conf, text, strlen(text)), 0);
        const char *args[] = {"run", "--config", conf, "--rules", rules, "--db",
                              cb_h_pathf("bad%zu.db", i), "--http", "127.0.0.1:0",
                              "--broker", "tcp://127.0.0.1:1", NULL};
        cbd_refused(args, lines[i][1]);
    }
    const char *set[] = {"run", "--set", "http.department=x token=y topic=#", NULL};
    const char *err;
    CU_ASSERT_EQUAL(cbd_run_to_exit(set, NULL, &err), 2);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "never taken from the command line"));
}

void cb_test_suite_departments(void)
{
    CU_pSuite s = cb_h_add_suite("departments");
    CU_add_test(s, "departments: a department's token walked over every read route (sensors, "
                   "series, alerts live and resolved, history, rules, city map, the Prometheus API and its ALERTS, the event "
                   "stream live and resumed) sees nothing outside its scope; audit, silences, "
                   "metrics and writes are refused, reads without a token too, each refusal "
                   "audited",
                test_department_walk);
    CU_add_test(s, "departments: a wrong http.department line stops run with the reason; "
                   "--set refuses the option",
                test_bad_department_refused);
}
