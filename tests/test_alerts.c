/* Unit suite of alerts/: persistence of every transition kind, acknowledgement,
 * silences, storm grouping with a manual clock, channel configuration errors,
 * restart. Real SQLite files in a temporary directory, a real uv loop; the
 * MQTT publish hook records what would go to the broker. */
#include <CUnit/CUnit.h>
#include <cjson/cJSON.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>

#include "alerts/alerts.h"
#include "alerts/alerts_int.h"
#include "cmd/commands.h"
#include "base/config.h"
#include "storage/storage.h"
#include "base/log.h"
#include "storage/alert_store.h"
#include "tests/support/store_fixture.h"

/* ---- fixture ---- */

#define MAXPUB 64

struct fix {
    char dir[64], db[96];
    uv_loop_t loop;
    struct cb_config cfg;
    int64_t now;
    struct cb_clock clock;
    struct cb_alerts *a;
    int published, events;
    int feeds;              /* messages handed to the alert feed */
    struct cb_strbuf feed;  /* "state since;" per feed message */
    char topics[MAXPUB][128];
    char *payloads[MAXPUB];
    int closed;
};

static int on_publish(void *ctx, const char *topic, const void *payload, size_t len, int qos)
{
    struct fix *f = ctx;
    CU_ASSERT_EQUAL(qos, 1);
    if (f->published < MAXPUB) {
        snprintf(f->topics[f->published], sizeof f->topics[0], "%s", topic);
        f->payloads[f->published] = strndup(payload, len);
    }
    f->published++;
    return 0;
}

static void on_event(void *ctx, uint64_t seq, const char *json, size_t len)
{
    struct fix *f = ctx;
    (void)json;
    CU_ASSERT(seq > 0);
    CU_ASSERT(len > 0);
    f->events++;
}

static int on_feed(void *ctx, const char *rule, const char *json, size_t len)
{
    struct fix *f = ctx;
    (void)rule;
    cJSON *o = cJSON_ParseWithLength(json, len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(o);
    cb_strbuf_printf(&f->feed, "%s %s %.0f;", cJSON_GetObjectItem(o, "id")->valuestring,
                     cJSON_GetObjectItem(o, "state")->valuestring,
                     cJSON_GetObjectItem(o, "since")->valuedouble);
    cJSON_Delete(o);
    f->feeds++;
    return 0;
}

static void fix_clear_pubs(struct fix *f)
{
    for (int i = 0; i < MAXPUB && i < f->published; i++)
        free(f->payloads[i]);
    memset(f->payloads, 0, sizeof f->payloads);
    f->published = 0;
}

static int fix_open(struct fix *f)
{
    char err[256] = "";
    struct cb_alerts_hooks h = {.ctx = f, .publish = on_publish, .on_event = on_event,
                                .clock = &f->clock, .feed = on_feed};
    f->a = cb_alerts_new(&f->loop, &f->cfg, f->db, &h, err, sizeof err);
    if (!f->a)
        fprintf(stderr, "cb_alerts_new: %s\n", err);
    return f->a ? 0 : -1;
}

static void on_closed(void *ctx) { ((struct fix *)ctx)->closed = 1; }

static void fix_close_alerts(struct fix *f)
{
    f->closed = 0;
    cb_alerts_close(f->a, on_closed, f);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    CU_ASSERT(f->closed);
    f->a = NULL;
}

/* storm_ms: alerts.storm_window; channels: extra alerts.channel lines. */
static struct fix *fix_new(int64_t storm_ms)
{
    struct fix *f = calloc(1, sizeof *f);
    struct cb_config_error e;
    snprintf(f->dir, sizeof f->dir, "/tmp/cb_alerts_XXXXXX");
    if (!mkdtemp(f->dir))
        abort();
    snprintf(f->db, sizeof f->db, "%s/a.db", f->dir);
    if (cb_t_create_schema(f->db))
        abort();
    uv_loop_init(&f->loop);
    cb_log_threshold = CB_LOG_ERROR; /* the log channel would print 5000 lines */
    cb_config_defaults(&f->cfg);
    f->cfg.alerts_storm_window_ms = storm_ms;
    cb_config_set(&f->cfg, "alerts.channel", "mqtt type=mqtt", 1, "test", &e);
    cb_config_set(&f->cfg, "alerts.channel", "log type=log", 0, "test", &e);
    cb_config_set(&f->cfg, "alerts.channel", "capq type=mqtt format=cap prefix=cap/alerts", 0,
                  "test", &e);
    cb_config_set(&f->cfg, "alerts.default_notify", "mqtt", 1, "test", &e);
    cb_config_set(&f->cfg, "alerts.default_notify", "log", 0, "test", &e);
    f->now = 1732400000000LL;
    f->clock.now = cb_clock_manual_now;
    f->clock.ctx = &f->now;
    if (fix_open(f))
        abort();
    return f;
}

static void fix_free(struct fix *f)
{
    if (f->a)
        fix_close_alerts(f);
    CU_ASSERT_EQUAL(uv_loop_close(&f->loop), 0);
    cb_config_free(&f->cfg);
    fix_clear_pubs(f);
    cb_strbuf_free(&f->feed);
    cb_t_remove_dir(f->dir);
    free(f);
}

static const struct cb_label d07[] = {{"district", "d07"}};

static struct cb_transition tr(const char *id, enum cb_alert_state s, enum cb_severity sev,
                               int64_t at)
{
    struct cb_transition t = {.id = id, .rule = "river_flood", .state = s, .severity = sev,
                              .labels = d07, .nlabels = 1, .at = at, .since = at,
                              .message = "d07: 2 gauges above 3.2 m"};
    return t;
}

/* The value of one column of the instance row, via the list JSON. */
static cJSON *instance(struct fix *f, const char *id)
{
    struct cb_strbuf b;
    cb_strbuf_init(&b);
    cb_alerts_sync(f->a);
    cb_alerts_list_json(f->a, NULL, NULL, NULL, &b);
    cJSON *arr = cJSON_Parse(b.data), *found = NULL;
    cb_strbuf_free(&b);
    cJSON *it;
    cJSON_ArrayForEach(it, arr)
    {
        if (!strcmp(cJSON_GetObjectItem(it, "id")->valuestring, id)) {
            found = cJSON_Duplicate(it, 1);
            break;
        }
    }
    cJSON_Delete(arr);
    return found;
}

static const char *sfield(cJSON *o, const char *k)
{
    cJSON *v = cJSON_GetObjectItem(o, k);
    return cJSON_IsString(v) ? v->valuestring : "";
}

static cJSON *history(struct fix *f)
{
    struct cb_strbuf b;
    cb_strbuf_init(&b);
    cb_alerts_sync(f->a);
    cb_alerts_history_json(f->a, 0, INT64_MAX, &b);
    cJSON *arr = cJSON_Parse(b.data);
    cb_strbuf_free(&b);
    return arr;
}

/* Adds a silence of the n matchers m, created by "li.wei" ("works"). Returns
 * its id, or 0 with the reason in err (128 bytes). */
static int64_t add_silence(struct fix *f, const struct cb_silence_matcher *m, size_t n,
                           int64_t starts, int64_t ends, char *err)
{
    struct cb_silence_spec spec = {.matchers = m, .nmatchers = n, .starts = starts, .ends = ends,
                                   .comment = "works", .created_by = "li.wei"};
    int64_t id = 0;
    err[0] = '\0';
    return cb_alerts_silence_add(f->a, &spec, &id, err, 128) ? 0 : id;
}

/* The listed silences, parsed. */
static cJSON *silences(struct fix *f)
{
    struct cb_strbuf b;
    cb_strbuf_init(&b);
    cb_alerts_silences_json(f->a, &b);
    cJSON *arr = cJSON_Parse(b.data);
    cb_strbuf_free(&b);
    return arr;
}

/* ---- tests ---- */

static void test_every_kind_persisted(void)
{
    struct fix *f = fix_new(0);
    const char *id = "river_flood/district=d07";
    int64_t t0 = f->now;
    struct cb_transition t = tr(id, CB_ALERT_PENDING, CB_SEV_MAJOR, t0);
    cb_alerts_on_transition(f->a, &t);
    cJSON *row = instance(f, id);
    CU_ASSERT_STRING_EQUAL(sfield(row, "state"), "pending");
    cJSON_Delete(row);
    CU_ASSERT_EQUAL(f->published, 0);

    t = tr(id, CB_ALERT_FIRING, CB_SEV_MAJOR, t0 + 120000);
    t.since = t0;
    cb_alerts_on_transition(f->a, &t);
    t = tr(id, CB_ALERT_ESCALATED, CB_SEV_CRITICAL, t0 + 180000);
    t.since = t0;
    cb_alerts_on_transition(f->a, &t);
    t = tr(id, CB_ALERT_ACKNOWLEDGED, CB_SEV_CRITICAL, t0 + 200000);
    t.since = t0;
    t.acked_by = "duty officer";
    t.ack_note = "crew sent";
    cb_alerts_on_transition(f->a, &t);
    t = tr(id, CB_ALERT_RESOLVED, CB_SEV_CRITICAL, t0 + 900000);
    t.since = t0;
    t.cooldown_until = t0 + 900000 + 1800000;
    cb_alerts_on_transition(f->a, &t);

    row = instance(f, id);
    CU_ASSERT_STRING_EQUAL(sfield(row, "state"), "resolved");
    CU_ASSERT_STRING_EQUAL(sfield(row, "severity"), "critical");
    CU_ASSERT_STRING_EQUAL(sfield(row, "grade"), "red");
    CU_ASSERT_STRING_EQUAL(sfield(row, "acked_by"), "duty officer");
    CU_ASSERT_EQUAL((int64_t)cJSON_GetObjectItem(row, "cooldown_until")->valuedouble,
                    t0 + 900000 + 1800000);
    CU_ASSERT_EQUAL((int64_t)cJSON_GetObjectItem(row, "since")->valuedouble, t0);
    cJSON_Delete(row);

    /* pending is not an event; the four events are logged in order */
    cJSON *h = history(f);
    CU_ASSERT_EQUAL(cJSON_GetArraySize(h), 4);
    const char *want[] = {"firing", "escalated", "acknowledged", "resolved"};
    const char *grade[] = {"orange", "red", "red", "red"};
    for (int i = 0; i < 4 && i < cJSON_GetArraySize(h); i++) {
        cJSON *e = cJSON_GetArrayItem(h, i);
        CU_ASSERT_STRING_EQUAL(sfield(e, "state"), want[i]);
        CU_ASSERT_STRING_EQUAL(sfield(e, "grade"), grade[i]);
        CU_ASSERT_STRING_EQUAL(sfield(cJSON_GetObjectItem(e, "labels"), "district"), "d07");
    }
    cJSON_Delete(h);
    CU_ASSERT_EQUAL(f->events, 4);
    /* default_notify = mqtt, log: JSON on citybrain/alerts/<rule>, QoS 1 */
    CU_ASSERT_EQUAL(f->published, 4);
    CU_ASSERT_STRING_EQUAL(f->topics[0], "citybrain/alerts/river_flood");
    cJSON *p = cJSON_Parse(f->payloads[0]);
    CU_ASSERT_STRING_EQUAL(sfield(p, "state"), "firing");
    CU_ASSERT_STRING_EQUAL(sfield(p, "id"), id);
    cJSON_Delete(p);

    /* a pending instance that never fires goes inactive */
    t = tr("river_flood/district=d08", CB_ALERT_PENDING, CB_SEV_MAJOR, t0);
    cb_alerts_on_transition(f->a, &t);
    t.state = CB_ALERT_INACTIVE;
    cb_alerts_on_transition(f->a, &t);
    row = instance(f, "river_flood/district=d08");
    CU_ASSERT_STRING_EQUAL(sfield(row, "state"), "inactive");
    cJSON_Delete(row);
    fix_free(f);
}

static void test_ack_while_firing(void)
{
    struct fix *f = fix_new(0);
    const char *id = "river_flood/district=d07";
    int64_t t0 = f->now - 3600000;
    struct cb_transition t = tr(id, CB_ALERT_FIRING, CB_SEV_MAJOR, t0);
    cb_alerts_on_transition(f->a, &t);

    struct cb_strbuf b;
    cb_strbuf_init(&b);
    cb_alerts_sync(f->a);
    cb_alerts_handover_json(f->a, 30 * 60000, &b);
    CU_ASSERT_PTR_NOT_NULL(strstr(b.data, id)); /* unacked for an hour */
    cb_strbuf_reset(&b);
    cb_alerts_handover_json(f->a, 2 * 3600000, &b);
    CU_ASSERT_STRING_EQUAL(b.data, "[]"); /* not that old */

    t = tr(id, CB_ALERT_ACKNOWLEDGED, CB_SEV_MAJOR, f->now);
    t.since = t0;
    t.acked_by = "li.wei";
    t.ack_note = "pumps on";
    cb_alerts_on_transition(f->a, &t);
    /* an escalation keeps the acknowledgement */
    t = tr(id, CB_ALERT_ESCALATED, CB_SEV_CRITICAL, f->now + 1000);
    t.since = t0;
    cb_alerts_on_transition(f->a, &t);
    cJSON *row = instance(f, id);
    CU_ASSERT_STRING_EQUAL(sfield(row, "state"), "firing");
    CU_ASSERT(cJSON_IsTrue(cJSON_GetObjectItem(row, "acknowledged")));
    CU_ASSERT_STRING_EQUAL(sfield(row, "acked_by"), "li.wei");
    CU_ASSERT_STRING_EQUAL(sfield(row, "ack_note"), "pumps on");
    CU_ASSERT_STRING_EQUAL(sfield(row, "severity"), "critical");
    cJSON_Delete(row);
    cb_strbuf_reset(&b);
    cb_alerts_sync(f->a);
    cb_alerts_handover_json(f->a, 30 * 60000, &b);
    CU_ASSERT_STRING_EQUAL(b.data, "[]"); /* acknowledged: not handed over */

    /* filters of the list */
    cb_strbuf_reset(&b);
    cb_alerts_list_json(f->a, "firing", "critical", "river_flood", &b);
    CU_ASSERT_PTR_NOT_NULL(strstr(b.data, id));
    cb_strbuf_reset(&b);
    cb_alerts_list_json(f->a, "firing", "warning", NULL, &b);
    CU_ASSERT_STRING_EQUAL(b.data, "[]");

    /* resolved, then a new firing clears the old acknowledgement */
    t = tr(id, CB_ALERT_RESOLVED, CB_SEV_CRITICAL, f->now + 2000);
    cb_alerts_on_transition(f->a, &t);
    t = tr(id, CB_ALERT_FIRING, CB_SEV_MAJOR, f->now + 3000);
    cb_alerts_on_transition(f->a, &t);
    row = instance(f, id);
    CU_ASSERT(cJSON_IsFalse(cJSON_GetObjectItem(row, "acknowledged")));
    cJSON_Delete(row);
    cb_strbuf_free(&b);
    fix_free(f);
}

static void test_resolution_while_silenced(void)
{
    struct fix *f = fix_new(0);
    const char *id = "river_flood/district=d07";
    struct cb_transition t = tr(id, CB_ALERT_FIRING, CB_SEV_MAJOR, f->now);
    cb_alerts_on_transition(f->a, &t);
    CU_ASSERT_EQUAL(f->published, 1);

    char err[128];
    static const struct cb_silence_matcher d07m[] = {{"district", "=", "d07"}};
    int64_t sid = add_silence(f, d07m, 1, f->now, f->now + 3600000, err);
    CU_ASSERT(sid > 0);
    t = tr(id, CB_ALERT_RESOLVED, CB_SEV_MAJOR, f->now + 60000);
    cb_alerts_on_transition(f->a, &t);
    CU_ASSERT_EQUAL(f->published, 1); /* held */
    cJSON *row = instance(f, id);
    CU_ASSERT_STRING_EQUAL(sfield(row, "state"), "resolved"); /* state goes on */
    CU_ASSERT_EQUAL((int64_t)cJSON_GetObjectItem(row, "silenced")->valuedouble, sid);
    cJSON_Delete(row);
    cJSON *h = history(f);
    CU_ASSERT_EQUAL(cJSON_GetArraySize(h), 2);
    cJSON *last = cJSON_GetArrayItem(h, 1);
    CU_ASSERT_STRING_EQUAL(sfield(last, "state"), "resolved");
    CU_ASSERT_EQUAL((int64_t)cJSON_GetObjectItem(last, "silenced")->valuedouble, sid);
    CU_ASSERT_PTR_NULL(cJSON_GetObjectItem(cJSON_GetArrayItem(h, 0), "silenced"));
    cJSON_Delete(h);

    /* a firing of another district is not silenced; one of d07 is held and
     * sent when the silence is deleted */
    static const struct cb_label d08[] = {{"district", "d08"}};
    t = tr("river_flood/district=d08", CB_ALERT_FIRING, CB_SEV_MAJOR, f->now + 70000);
    t.labels = d08;
    cb_alerts_on_transition(f->a, &t);
    CU_ASSERT_EQUAL(f->published, 2);
    t = tr(id, CB_ALERT_FIRING, CB_SEV_MAJOR, f->now + 80000);
    cb_alerts_on_transition(f->a, &t);
    CU_ASSERT_EQUAL(f->published, 2);
    cb_alerts_tick(f->a);
    CU_ASSERT_EQUAL(f->published, 2);
    CU_ASSERT_EQUAL(cb_alerts_silence_expire(f->a, sid, "li.wei", NULL,
                                             CB_AUDIT_SILENCE_DELETE), 0);
    CU_ASSERT_EQUAL(f->published, 3); /* at once, not at the next tick */
    CU_ASSERT_EQUAL(cb_alerts_silence_expire(f->a, sid, "li.wei", NULL,
                                             CB_AUDIT_SILENCE_DELETE), 1);
    CU_ASSERT_EQUAL(cb_alerts_silence_expire(f->a, sid + 1, "li.wei", NULL,
                                             CB_AUDIT_SILENCE_DELETE), -1);
    cb_alerts_tick(f->a);
    CU_ASSERT_EQUAL(f->published, 3);
    CU_ASSERT_PTR_NOT_NULL(f->payloads[2] && strstr(f->payloads[2], "district=d07"));
    struct cb_alerts_stats st;
    cb_alerts_get_stats(f->a, &st);
    CU_ASSERT_EQUAL(st.silenced, 2);
    fix_free(f);
}

/* ---- silences: matchers (docs/alerts.md "Silences") ---- */

/* Whether a silence of the one matcher `name op value` holds for t. A second
 * matcher rule=~".+" (true for every instance) keeps matchers that an empty
 * label satisfies from being refused; -1 when the silence is refused. */
static int holds(const char *name, const char *op, const char *value,
                 const struct cb_transition *t)
{
    struct cb_silence_matcher m[] = {{name, op, value}, {"rule", "=~", ".+"}};
    struct cb_silence_spec spec = {.matchers = m, .nmatchers = 2, .starts = 0, .ends = 2000,
                                   .comment = "c", .created_by = "b"};
    struct alerts__silence *sil = NULL;
    char err[256];
    if (alerts__silence_new(&spec, 1000, &sil, err, sizeof err)) {
        fprintf(stderr, "refused: %s\n", err);
        return -1;
    }
    alerts__silence_set_id(sil, 7);
    struct alerts__silences set = {0};
    CU_ASSERT_EQUAL_FATAL(alerts__silences_push(&set, sil), 0);
    int64_t by = alerts__silenced_by(&set, t, 1500);
    alerts__silences_free(&set);
    return by == 7;
}

static void test_matcher_equality(void)
{
    struct cb_transition t = tr("river_flood/district=d07", CB_ALERT_FIRING, CB_SEV_MAJOR, 0);
    CU_ASSERT_EQUAL(holds("district", "=", "d07", &t), 1);
    CU_ASSERT_EQUAL(holds("district", NULL, "d07", &t), 1); /* no op: = */
    CU_ASSERT_EQUAL(holds("district", "=", "d0", &t), 0);   /* the whole value */
    CU_ASSERT_EQUAL(holds("district", "=", "D07", &t), 0);  /* case counts */
    CU_ASSERT_EQUAL(holds("district", "!=", "d07", &t), 0);
    CU_ASSERT_EQUAL(holds("district", "!=", "d08", &t), 1);
    /* a label the instance does not have is the empty string */
    CU_ASSERT_EQUAL(holds("zone", "=", "", &t), 1);
    CU_ASSERT_EQUAL(holds("zone", "=", "north", &t), 0);
    CU_ASSERT_EQUAL(holds("zone", "!=", "north", &t), 1);
    /* rule and id name the rule and the instance */
    CU_ASSERT_EQUAL(holds("rule", "=", "river_flood", &t), 1);
    CU_ASSERT_EQUAL(holds("rule", "!=", "river_flood", &t), 0);
    CU_ASSERT_EQUAL(holds("id", "=", "river_flood/district=d07", &t), 1);
    /* ... unless the instance has a label of that name */
    static const struct cb_label lab[] = {{"district", "d07"}, {"rule", "pump"}};
    t.labels = lab;
    t.nlabels = 2;
    CU_ASSERT_EQUAL(holds("rule", "=", "river_flood", &t), 0);
    CU_ASSERT_EQUAL(holds("rule", "=", "pump", &t), 1);
}

static void test_matcher_regex_anchored(void)
{
    struct cb_transition t = tr("river_flood/district=d07", CB_ALERT_FIRING, CB_SEV_MAJOR, 0);
    CU_ASSERT_EQUAL(holds("district", "=~", "d0[0-7]", &t), 1);
    CU_ASSERT_EQUAL(holds("district", "=~", "d0", &t), 0);    /* anchored at the end */
    CU_ASSERT_EQUAL(holds("district", "=~", "07", &t), 0);    /* and at the start */
    CU_ASSERT_EQUAL(holds("district", "=~", "d0|d07", &t), 1); /* some branch spans it all */
    CU_ASSERT_EQUAL(holds("district", "=~", "d(0|1)+7", &t), 1);
    CU_ASSERT_EQUAL(holds("rule", "=~", "river_.*", &t), 1);
    CU_ASSERT_EQUAL(holds("rule", "=~", "flood", &t), 0);
    /* text that would close a wrapping group is refused, never unanchored */
    CU_ASSERT_EQUAL(holds("district", "=~", "x)|(d0", &t), -1);
    CU_ASSERT_EQUAL(holds("district", "!~", "d0[0-7]", &t), 0);
    CU_ASSERT_EQUAL(holds("district", "!~", "d1[0-9]", &t), 1);
    CU_ASSERT_EQUAL(holds("district", "!~", "d0", &t), 1); /* d07 is not all of d0 */
    CU_ASSERT_EQUAL(holds("zone", "=~", ".*", &t), 1);      /* missing: "" */
    CU_ASSERT_EQUAL(holds("zone", "!~", ".+", &t), 1);
    /* every matcher must hold */
    static const struct cb_label d17[] = {{"district", "d17"}};
    t.labels = d17;
    CU_ASSERT_EQUAL(holds("district", "=~", "d0[0-7]", &t), 0);
}

/* The reason a silence is refused, "" when it is accepted. */
static const char *refusal(struct fix *f, const struct cb_silence_matcher *m, size_t n,
                           int64_t starts, int64_t ends, const char *comment, const char *by)
{
    static char err[256];
    struct cb_silence_spec spec = {.matchers = m, .nmatchers = n, .starts = starts, .ends = ends,
                                   .comment = comment, .created_by = by};
    int64_t id = 0;
    err[0] = '\0';
    if (cb_alerts_silence_add(f->a, &spec, &id, err, sizeof err) == 0)
        snprintf(err, sizeof err, "%s", "");
    return err;
}

static void test_silence_refusals(void)
{
    struct fix *f = fix_new(0);
    int64_t now = f->now, h = now + 3600000;
    static const struct cb_silence_matcher ok[] = {{"district", "=", "d07"}};
    static const struct cb_silence_matcher bad_op[] = {{"district", "==", "d07"}};
    static const struct cb_silence_matcher bad_re[] = {{"district", "=", "d07"},
                                                       {"sensor", "=~", "s(1"}};
    static const struct cb_silence_matcher all_ne[] = {{"district", "!=", "d07"}};
    static const struct cb_silence_matcher all_re[] = {{"district", "=~", ".*"},
                                                       {"sensor", "!~", "s1"}};
    static const struct cb_silence_matcher no_name[] = {{"", "=", "d07"}};
    CU_ASSERT_STRING_EQUAL(refusal(f, ok, 1, now, h, "works", "li.wei"), "");
    CU_ASSERT_PTR_NOT_NULL(strstr(refusal(f, bad_op, 1, now, h, "w", "b"),
                                  "matcher 1: \"op\" must be =, !=, =~ or !~, not '=='"));
    CU_ASSERT_PTR_NOT_NULL(strstr(refusal(f, bad_re, 2, now, h, "w", "b"),
                                  "matcher 2: bad regular expression 's(1'"));
    CU_ASSERT_PTR_NOT_NULL(strstr(refusal(f, all_ne, 1, now, h, "w", "b"),
                                  "would hold every alert"));
    CU_ASSERT_PTR_NOT_NULL(strstr(refusal(f, all_re, 2, now, h, "w", "b"),
                                  "would hold every alert"));
    CU_ASSERT_PTR_NOT_NULL(strstr(refusal(f, no_name, 1, now, h, "w", "b"), "matcher 1"));
    CU_ASSERT_PTR_NOT_NULL(strstr(refusal(f, ok, 0, now, h, "w", "b"), "at least one matcher"));
    CU_ASSERT_PTR_NOT_NULL(strstr(refusal(f, ok, 1, now, h, "w", " "), "\"created_by\""));
    CU_ASSERT_PTR_NOT_NULL(strstr(refusal(f, ok, 1, now, h, NULL, "b"), "\"comment\""));
    CU_ASSERT_PTR_NOT_NULL(strstr(refusal(f, ok, 1, now - 7200000, now, "w", "b"),
                                  "\"ends\" must be in the future"));
    CU_ASSERT_PTR_NOT_NULL(strstr(refusal(f, ok, 1, h, h, "w", "b"),
                                  "\"ends\" must be after \"starts\""));
    cJSON *arr = silences(f);
    CU_ASSERT_EQUAL(cJSON_GetArraySize(arr), 1); /* only the good one */
    CU_ASSERT_EQUAL(cJSON_GetObjectItem(cJSON_GetArrayItem(arr, 0), "id")->valueint, 1);
    cJSON_Delete(arr);
    fix_free(f);
}

/* The one silence's "state" in the list. */
static const char *silence_state(struct fix *f)
{
    static char st[16];
    cJSON *arr = silences(f);
    snprintf(st, sizeof st, "%s", sfield(cJSON_GetArrayItem(arr, 0), "state"));
    cJSON_Delete(arr);
    return st;
}

/* A silence may start in the future: it holds nothing before its start
 * (inclusive) and nothing from its end (exclusive); the clock is the test's. */
static void test_scheduled_silence(void)
{
    struct fix *f = fix_new(0);
    int64_t t0 = f->now, starts = t0 + 600000, ends = t0 + 3600000;
    const char *id = "river_flood/district=d07";
    char err[128];
    static const struct cb_silence_matcher m[] = {{"district", "=", "d07"},
                                                  {"rule", "=~", "river_.*"}};
    int64_t sid = add_silence(f, m, 2, starts, ends, err);
    CU_ASSERT_FATAL(sid > 0);
    CU_ASSERT_STRING_EQUAL(silence_state(f), "scheduled");
    struct cb_transition t = tr(id, CB_ALERT_FIRING, CB_SEV_MAJOR, t0);
    cb_alerts_on_transition(f->a, &t);
    CU_ASSERT_EQUAL(f->published, 1);
    f->now = starts - 1;
    t = tr(id, CB_ALERT_ESCALATED, CB_SEV_CRITICAL, f->now);
    cb_alerts_on_transition(f->a, &t);
    CU_ASSERT_EQUAL(f->published, 2); /* not yet */
    f->now = starts;
    CU_ASSERT_STRING_EQUAL(silence_state(f), "active");
    t = tr(id, CB_ALERT_RESOLVED, CB_SEV_CRITICAL, f->now);
    cb_alerts_on_transition(f->a, &t);
    CU_ASSERT_EQUAL(f->published, 2); /* held from its start */
    t = tr(id, CB_ALERT_FIRING, CB_SEV_MAJOR, f->now + 1);
    cb_alerts_on_transition(f->a, &t);
    CU_ASSERT_EQUAL(f->published, 2);
    f->now = ends - 1;
    cb_alerts_tick(f->a);
    CU_ASSERT_EQUAL(f->published, 2);
    f->now = ends; /* its end: the held firing goes out */
    cb_alerts_tick(f->a);
    CU_ASSERT_EQUAL(f->published, 3);
    CU_ASSERT_STRING_EQUAL(silence_state(f), "expired");
    /* a start in the past counts from now */
    sid = add_silence(f, m, 2, t0 - 86400000, f->now + 60000, err);
    CU_ASSERT_FATAL(sid > 0);
    cJSON *arr = silences(f);
    CU_ASSERT_EQUAL((int64_t)cJSON_GetObjectItem(cJSON_GetArrayItem(arr, 1), "starts")->valuedouble,
                    f->now);
    cJSON_Delete(arr);
    fix_free(f);
}

/* The audit log as read by the API and the CLI: {"entries":[...]}. */
static cJSON *audit(struct fix *f, const char *action)
{
    cb_alerts_sync(f->a);
    char err[256];
    struct cb_alert_reader *r = cb_alert_reader_open(f->db, err, sizeof err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    struct cb_strbuf b;
    cb_strbuf_init(&b);
    CU_ASSERT_EQUAL(cb_alerts_reader_audit_json(r, 0, INT64_MAX, action, 0, &b), 0);
    cb_alert_reader_close(r);
    cJSON *doc = cJSON_Parse(b.data);
    cb_strbuf_free(&b);
    cJSON *e = cJSON_DetachItemFromObject(doc, "entries");
    cJSON_Delete(doc);
    return e;
}

static int64_t ifield(cJSON *o, const char *k)
{
    cJSON *v = cJSON_GetObjectItem(o, k);
    return cJSON_IsNumber(v) ? (int64_t)v->valuedouble : -1;
}

/* Expired or deleted by an operator, a silence stays listed as expired with
 * who and when (also after a restart), until a day after its end; the store
 * keeps it for the alerts' retention. Each is one audit entry. */
static void test_silence_expired_stays_listed(void)
{
    struct fix *f = fix_new(0);
    const char *id = "river_flood/district=d07";
    char err[128];
    static const struct cb_silence_matcher m[] = {{"district", "=", "d07"}};
    int64_t s1 = add_silence(f, m, 1, 0, f->now + 3600000, err);
    int64_t s2 = add_silence(f, m, 1, f->now + 600000, f->now + 3600000, err);
    CU_ASSERT_FATAL(s1 > 0 && s2 == s1 + 1);
    struct cb_transition t = tr(id, CB_ALERT_FIRING, CB_SEV_MAJOR, f->now);
    cb_alerts_on_transition(f->a, &t);
    CU_ASSERT_EQUAL(f->published, 0); /* held */
    f->now += 1000;
    int64_t ended = f->now;
    CU_ASSERT_EQUAL(cb_alerts_silence_expire(f->a, s1, "zhang.min", "pump fixed",
                                             CB_AUDIT_SILENCE_EXPIRE), 0);
    CU_ASSERT_EQUAL(f->published, 1); /* what it held goes out at once */
    CU_ASSERT_EQUAL(cb_alerts_silence_expire(f->a, s2, "zhang.min", NULL,
                                             CB_AUDIT_SILENCE_DELETE), 0);
    CU_ASSERT_EQUAL(cb_alerts_silence_expire(f->a, s1, "x", NULL, CB_AUDIT_SILENCE_EXPIRE), 1);

    for (int pass = 0; pass < 2; pass++) { /* before and after a restart */
        cJSON *arr = silences(f);
        CU_ASSERT_EQUAL(cJSON_GetArraySize(arr), 2);
        for (int i = 0; i < 2 && i < cJSON_GetArraySize(arr); i++) {
            cJSON *sv = cJSON_GetArrayItem(arr, i);
            CU_ASSERT_STRING_EQUAL(sfield(sv, "state"), "expired");
            CU_ASSERT_STRING_EQUAL(sfield(sv, "expired_by"), "zhang.min");
            CU_ASSERT_EQUAL(ifield(sv, "expired_at"), ended);
            CU_ASSERT_EQUAL(ifield(sv, "ends"), ended);
            CU_ASSERT_STRING_EQUAL(sfield(sv, "created_by"), "li.wei");
            CU_ASSERT_STRING_EQUAL(sfield(cJSON_GetArrayItem(cJSON_GetObjectItem(sv, "matchers"),
                                                             0), "op"), "=");
        }
        CU_ASSERT_EQUAL(ifield(cJSON_GetArrayItem(arr, 1), "starts"), ended); /* never began */
        cJSON_Delete(arr);
        fix_close_alerts(f);
        CU_ASSERT_EQUAL_FATAL(fix_open(f), 0);
    }
    /* the operator's actions, newest first, with what they acted on */
    cJSON *e = audit(f, NULL);
    CU_ASSERT_EQUAL(cJSON_GetArraySize(e), 4);
    const char *want[] = {CB_AUDIT_SILENCE_DELETE, CB_AUDIT_SILENCE_EXPIRE,
                          CB_AUDIT_SILENCE_CREATE, CB_AUDIT_SILENCE_CREATE};
    const char *who[] = {"zhang.min", "zhang.min", "li.wei", "li.wei"};
    for (int i = 0; i < 4 && i < cJSON_GetArraySize(e); i++) {
        CU_ASSERT_STRING_EQUAL(sfield(cJSON_GetArrayItem(e, i), "action"), want[i]);
        CU_ASSERT_STRING_EQUAL(sfield(cJSON_GetArrayItem(e, i), "who"), who[i]);
    }
    cJSON *exp = cJSON_GetArrayItem(e, 1);
    CU_ASSERT_EQUAL(ifield(exp, "at"), ended);
    CU_ASSERT_STRING_EQUAL(sfield(exp, "note"), "pump fixed");
    CU_ASSERT_EQUAL(atoll(sfield(exp, "target")), s1);
    /* details: the window the operator cut short, and the matchers */
    CU_ASSERT_EQUAL(ifield(cJSON_GetObjectItem(exp, "details"), "ends"), ended - 1000 + 3600000);
    CU_ASSERT(cJSON_IsArray(cJSON_GetObjectItem(cJSON_GetObjectItem(exp, "details"), "matchers")));
    CU_ASSERT_STRING_EQUAL(sfield(cJSON_GetArrayItem(e, 3), "note"), "works");
    cJSON_Delete(e);
    /* a day after its end it leaves the list, not the store */
    f->now = ended + CB_SILENCE_LISTED_AFTER_END_MS;
    cb_alerts_tick(f->a);
    cJSON *arr = silences(f);
    CU_ASSERT_EQUAL(cJSON_GetArraySize(arr), 0);
    cJSON_Delete(arr);
    CU_ASSERT_EQUAL(cb_alerts_silence_expire(f->a, s1, "x", NULL, CB_AUDIT_SILENCE_EXPIRE), -1);
    cb_alerts_sync(f->a);
    int64_t n = 0;
    sqlite3 *db = NULL;
    sqlite3_open_v2(f->db, &db, SQLITE_OPEN_READONLY, NULL);
    sqlite3_stmt *st = NULL;
    sqlite3_prepare_v2(db, "SELECT count(*) FROM silences WHERE expired_by = 'zhang.min'", -1,
                       &st, NULL);
    if (sqlite3_step(st) == SQLITE_ROW)
        n = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    CU_ASSERT_EQUAL(n, 2);
    fix_free(f);
}

/* Acknowledgements and any action given to cb_alerts_audit are recorded with
 * who, when and what; an unknown action, no who or details that are not a
 * JSON object are refused. Read back newest first, by action and time. */
static void test_audit_records_actions(void)
{
    struct fix *f = fix_new(0);
    const char *id = "river_flood/district=d07";
    struct cb_transition t = tr(id, CB_ALERT_FIRING, CB_SEV_MAJOR, f->now);
    cb_alerts_on_transition(f->a, &t);
    f->now += 5000;
    t = tr(id, CB_ALERT_ACKNOWLEDGED, CB_SEV_MAJOR, f->now);
    t.acked_by = "duty officer";
    t.ack_note = "crew sent";
    cb_alerts_on_transition(f->a, &t);
    f->now += 5000;
    struct cb_audit_entry reload = {CB_AUDIT_RULES_RELOAD, "(sighup)", NULL, NULL,
                                    "{\"via\":\"sighup\",\"ok\":true,\"rules\":3}"};
    CU_ASSERT(cb_alerts_audit(f->a, &reload) > 0);
    struct cb_audit_entry bad[] = {
        {"close_everything", "x", NULL, NULL, NULL},
        {CB_AUDIT_ACK, NULL, id, NULL, NULL},
        {CB_AUDIT_ACK, "", id, NULL, NULL},
        {CB_AUDIT_ACK, "x", id, NULL, "[1,2]"},
        {NULL, "x", NULL, NULL, NULL},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CU_ASSERT_EQUAL(cb_alerts_audit(f->a, &bad[i]), -1);

    cJSON *e = audit(f, NULL);
    CU_ASSERT_EQUAL_FATAL(cJSON_GetArraySize(e), 2);
    cJSON *r = cJSON_GetArrayItem(e, 0), *a = cJSON_GetArrayItem(e, 1);
    CU_ASSERT_STRING_EQUAL(sfield(r, "action"), "rules_reload");
    CU_ASSERT_EQUAL(ifield(r, "at"), f->now);
    CU_ASSERT(cJSON_IsNull(cJSON_GetObjectItem(r, "target")));
    CU_ASSERT_EQUAL(ifield(cJSON_GetObjectItem(r, "details"), "rules"), 3);
    CU_ASSERT_STRING_EQUAL(sfield(a, "action"), "ack");
    CU_ASSERT_STRING_EQUAL(sfield(a, "who"), "duty officer");
    CU_ASSERT_STRING_EQUAL(sfield(a, "target"), id);
    CU_ASSERT_STRING_EQUAL(sfield(a, "note"), "crew sent");
    CU_ASSERT_EQUAL(ifield(a, "at"), f->now - 5000);
    CU_ASSERT_STRING_EQUAL(sfield(cJSON_GetObjectItem(a, "details"), "severity"), "major");
    CU_ASSERT(ifield(r, "seq") > ifield(a, "seq"));
    cJSON_Delete(e);
    e = audit(f, "ack");
    CU_ASSERT_EQUAL(cJSON_GetArraySize(e), 1);
    cJSON_Delete(e);
    /* the time window: from inclusive, to exclusive */
    cb_alerts_sync(f->a);
    char err[256];
    struct cb_alert_reader *rd = cb_alert_reader_open(f->db, err, sizeof err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(rd);
    struct cb_strbuf b;
    cb_strbuf_init(&b);
    CU_ASSERT_EQUAL(cb_alerts_reader_audit_json(rd, f->now - 5000, f->now, NULL, 0, &b), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(b.data, "\"action\":\"ack\""));
    CU_ASSERT_PTR_NULL(strstr(b.data, "rules_reload"));
    cb_strbuf_reset(&b);
    CU_ASSERT_EQUAL(cb_alerts_reader_audit_json(rd, 0, INT64_MAX, NULL, 1, &b), 0);
    CU_ASSERT_PTR_NULL(strstr(b.data, "\"action\":\"ack\"")); /* limit 1: the newest */
    cb_strbuf_free(&b);
    cb_alert_reader_close(rd);
    fix_free(f);
}

/* 5,000 sensors of a per-sensor rule breach within a minute across 10
 * districts, and a group rule (`per district`) fires in each district: the
 * per-sensor rule yields one notification (its group is the rule), the group
 * rule one per district; the store holds all 5,000 instances. */
static void test_storm_grouping(void)
{
    struct fix *f = fix_new(60000);
    int64_t t0 = f->now;
    char id[96], sensor[16], district[16];
    for (int i = 0; i < 5000; i++) {
        snprintf(district, sizeof district, "d%02d", i % 10);
        snprintf(sensor, sizeof sensor, "s%04d", i);
        snprintf(id, sizeof id, "heat/city/%s/temp/%s", district, sensor);
        struct cb_label l[] = {{"district", district}, {"sensor", sensor}};
        struct cb_transition t = {.id = id, .rule = "heat", .state = CB_ALERT_FIRING,
                                  .severity = i == 4321 ? CB_SEV_CRITICAL : CB_SEV_WARNING,
                                  .labels = l, .nlabels = 2, .at = f->now, .since = f->now};
        cb_alerts_on_transition(f->a, &t);
        if (i % 100 == 99)
            f->now += 1000; /* 50 s */
    }
    for (int d = 0; d < 10; d++) {
        snprintf(district, sizeof district, "d%02d", d);
        snprintf(id, sizeof id, "heat_district/district=%s", district);
        struct cb_label l[] = {{"district", district}};
        struct cb_transition t = {.id = id, .rule = "heat_district", .state = CB_ALERT_FIRING,
                                  .severity = CB_SEV_MAJOR, .labels = l, .nlabels = 1,
                                  .at = f->now, .since = f->now};
        cb_alerts_on_transition(f->a, &t);
    }
    /* The first of each group went out at once: heat (one group for the
     * whole per-sensor rule) and each district of heat_district. */
    cb_alerts_tick(f->a);
    CU_ASSERT_EQUAL(f->published, 1 + 10);
    f->now = t0 + 60000;
    cb_alerts_tick(f->a);
    /* the per-sensor rule's window opened at t0: its summary is due now */
    CU_ASSERT_EQUAL(f->published, 1 + 10 + 1);
    f->now = t0 + 50000 + 60000;
    cb_alerts_tick(f->a);
    /* nothing followed the districts' first transitions: no summary */
    CU_ASSERT_EQUAL(f->published, 1 + 10 + 1);
    int json_heat = 0, json_heat_group = 0, json_district = 0;
    for (int i = 0; i < f->published && i < MAXPUB; i++) {
        cJSON *p = cJSON_Parse(f->payloads[i]);
        cJSON *g = cJSON_GetObjectItem(p, "group");
        if (!strcmp(f->topics[i], "citybrain/alerts/heat") && g) {
            CU_ASSERT_EQUAL(cJSON_GetObjectItem(g, "count")->valueint, 4999);
            CU_ASSERT_EQUAL(cJSON_GetArraySize(cJSON_GetObjectItem(g, "alerts")), 100);
            CU_ASSERT_EQUAL(cJSON_GetObjectItem(g, "more")->valueint, 4899);
            CU_ASSERT_STRING_EQUAL(sfield(p, "severity"), "critical"); /* the worst */
            CU_ASSERT_STRING_EQUAL(sfield(p, "rule"), "heat");
            CU_ASSERT_STRING_EQUAL(sfield(p, "id"), "heat/group:*");
            json_heat_group++;
        } else if (!strcmp(f->topics[i], "citybrain/alerts/heat")) {
            CU_ASSERT_EQUAL(i, 0); /* the very first transition, at once */
            CU_ASSERT_STRING_EQUAL(sfield(p, "id"), "heat/city/d00/temp/s0000");
            json_heat++;
        } else if (!strcmp(f->topics[i], "citybrain/alerts/heat_district")) {
            CU_ASSERT_PTR_NULL(g); /* a single transition */
            json_district++;
        }
        cJSON_Delete(p);
    }
    CU_ASSERT_EQUAL(json_heat, 1);
    CU_ASSERT_EQUAL(json_heat_group, 1);
    CU_ASSERT_EQUAL(json_district, 10);
    struct cb_alerts_stats st;
    cb_alerts_get_stats(f->a, &st);
    CU_ASSERT_EQUAL(st.events, 5010);
    CU_ASSERT_EQUAL(st.grouped, 4998); /* one summary gathered the other 4999 */
    /* the store and the API still hold every instance */
    struct cb_strbuf b;
    cb_strbuf_init(&b);
    cb_alerts_sync(f->a);
    cb_alerts_list_json(f->a, "firing", NULL, "heat", &b);
    cJSON *arr = cJSON_Parse(b.data);
    CU_ASSERT_EQUAL(cJSON_GetArraySize(arr), 5000);
    cJSON_Delete(arr);
    cb_strbuf_free(&b);
    fix_free(f);
}

/* The outbox rows of channel `am`, bodies parsed, in seq order. */
static int collect_am(void *ctx, const struct cb_outbox_row *r)
{
    if (!strcmp(r->channel, "am"))
        cJSON_AddItemToArray(ctx, cJSON_Parse(r->body));
    return 0;
}

static cJSON *am_rows(struct fix *f)
{
    char err[256];
    cJSON *rows = cJSON_CreateArray();
    cb_alerts_sync(f->a);
    struct cb_alert_reader *r = cb_alert_reader_open(f->db, err, sizeof err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_EQUAL(cb_alert_reader_outbox(r, collect_am, rows), 0);
    cb_alert_reader_close(r);
    return rows;
}

static const char *am_field(cJSON *rows, int i, const char *obj, const char *k)
{
    cJSON *a = cJSON_GetArrayItem(cJSON_GetArrayItem(rows, i), 0);
    return sfield(obj ? cJSON_GetObjectItem(a, obj) : a, k);
}

/* An Alertmanager channel whose receiver is never reached (nothing runs the
 * loop): what is queued says what would be posted. */
static void test_alertmanager_payload(void)
{
    struct fix *f = fix_new(0);
    struct cb_config_error e;
    fix_close_alerts(f);
    cb_config_set(&f->cfg, "alerts.channel", "am type=alertmanager url=http://127.0.0.1:1/", 0,
                  "test", &e);
    cb_config_set(&f->cfg, "alerts.default_notify", "am", 1, "test", &e);
    cb_config_set(&f->cfg, "alerts.alertmanager_resend", "30s", 0, "test", &e);
    cb_config_set(&f->cfg, "alerts.console_url", "https://eoc.example/", 0, "test", &e);
    CU_ASSERT_EQUAL_FATAL(fix_open(f), 0);

    int64_t t0 = f->now;
    struct cb_transition t = tr("river_flood/district=d07", CB_ALERT_FIRING, CB_SEV_MAJOR, t0);
    t.titles[CB_LANG_ZH] = "河道洪水风险";
    t.title = t.titles[CB_LANG_EN] = "River flood risk";
    cb_alerts_on_transition(f->a, &t);
    cJSON *rows = am_rows(f);
    CU_ASSERT_EQUAL_FATAL(cJSON_GetArraySize(rows), 1);
    CU_ASSERT_STRING_EQUAL(am_field(rows, 0, "labels", "alertname"), "river_flood");
    CU_ASSERT_STRING_EQUAL(am_field(rows, 0, "labels", "severity"), "major");
    CU_ASSERT_STRING_EQUAL(am_field(rows, 0, "labels", "district"), "d07");
    CU_ASSERT_STRING_EQUAL(am_field(rows, 0, "annotations", "title"), "River flood risk");
    CU_ASSERT_STRING_EQUAL(am_field(rows, 0, "annotations", "title_zh"), "河道洪水风险");
    CU_ASSERT_STRING_EQUAL(am_field(rows, 0, "annotations", "message"),
                           "d07: 2 gauges above 3.2 m");
    CU_ASSERT_STRING_EQUAL(am_field(rows, 0, "annotations", "grade"), "orange");
    CU_ASSERT_STRING_EQUAL(am_field(rows, 0, NULL, "startsAt"), "2024-11-23T22:13:20.000Z");
    /* four resend intervals ahead */
    CU_ASSERT_STRING_EQUAL(am_field(rows, 0, NULL, "endsAt"), "2024-11-23T22:15:20.000Z");
    CU_ASSERT_STRING_EQUAL(am_field(rows, 0, NULL, "generatorURL"), "https://eoc.example/");
    cJSON_Delete(rows);

    /* An interval later: the first delivery is still queued, so the resend
     * adds nothing (a receiver away costs one row per alert). */
    f->now += 30000;
    cb_alerts_tick(f->a);
    rows = am_rows(f);
    CU_ASSERT_EQUAL(cJSON_GetArraySize(rows), 1);
    cJSON_Delete(rows);

    /* Resolved: endsAt is when it resolved. */
    f->now += 5000;
    t = tr("river_flood/district=d07", CB_ALERT_RESOLVED, CB_SEV_MAJOR, f->now);
    t.since = t0;
    cb_alerts_on_transition(f->a, &t);
    rows = am_rows(f);
    CU_ASSERT_EQUAL_FATAL(cJSON_GetArraySize(rows), 2);
    CU_ASSERT_STRING_EQUAL(am_field(rows, 1, NULL, "endsAt"), "2024-11-23T22:13:55.000Z");
    CU_ASSERT_STRING_EQUAL(am_field(rows, 1, "annotations", "state"), "resolved");
    cJSON_Delete(rows);
    fix_free(f);
}

static void test_channel_config_errors(void)
{
    struct {
        const char *line, *want;
    } bad[] = {
        {"hook type=webhook", "'hook type=webhook': a webhook needs url=URL"},
        {"x type=smtp", "'x type=smtp': unknown type 'smtp'"},
        {"x type=mqtt format=pdf", "unknown format 'pdf'"},
        {"x type=log format=cap", "format=cap needs type=mqtt or webhook"},
        {"x type=mqtt url=http://a", "url= is only for type=webhook"},
        {"x type=webhook url=ftp://a", "url must be http:// or https://"},
        {"x type=mqtt prefix=a/#", "prefix must not hold + or #"},
        {"x mqtt", "'mqtt' is not KEY=VALUE"},
        {"x colour=red type=log", "unknown key 'colour'"},
        {"x", "type=mqtt|webhook|alertmanager|log is required"},
        {"am type=alertmanager", "an alertmanager channel needs url=URL"},
        {"am type=alertmanager url=http://a:9093 format=cap", "no format="},
        {"b@d type=log", "expected a channel NAME"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *items[] = {(char *)bad[i].line};
        struct cb_strlist l = {items, 1};
        struct cb_channel *c = NULL;
        size_t n = 0;
        char err[256] = "";
        CU_ASSERT_EQUAL(cb_channels_parse(&l, &c, &n, err, sizeof err), -1);
        if (!strstr(err, bad[i].want))
            fprintf(stderr, "\n  got: %s\n  want: %s\n", err, bad[i].want);
        CU_ASSERT_PTR_NOT_NULL(strstr(err, bad[i].want));
        CU_ASSERT_PTR_NOT_NULL(strstr(err, "alerts.channel"));
    }
    char *dup[] = {"a type=log", "a type=mqtt"};
    struct cb_strlist l = {dup, 2};
    struct cb_channel *c = NULL;
    size_t n = 0;
    char err[256] = "";
    CU_ASSERT_EQUAL(cb_channels_parse(&l, &c, &n, err, sizeof err), -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "defined twice"));
    char *good[] = {"ops type=webhook url=http://127.0.0.1:9/x format=cap",
                    "m type=mqtt prefix=city/alerts", "l type=log"};
    l.items = good;
    l.n = 3;
    CU_ASSERT_EQUAL(cb_channels_parse(&l, &c, &n, err, sizeof err), 0);
    CU_ASSERT_EQUAL(n, 3);
    if (n == 3) {
        CU_ASSERT_EQUAL(c[0].type, CB_CHANNEL_WEBHOOK);
        CU_ASSERT_EQUAL(c[0].format, CB_FORMAT_CAP);
        CU_ASSERT_STRING_EQUAL(c[1].prefix, "city/alerts");
        CU_ASSERT_EQUAL(c[2].type, CB_CHANNEL_LOG);
    }
    cb_channels_free(c, n);

    /* default_notify must name configured channels */
    struct fix *f = fix_new(0);
    fix_close_alerts(f);
    struct cb_config_error e;
    cb_config_set(&f->cfg, "alerts.default_notify", "pager", 1, "test", &e);
    struct cb_alerts_hooks h = {0};
    CU_ASSERT_PTR_NULL(cb_alerts_new(&f->loop, &f->cfg, f->db, &h, err, sizeof err));
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "'pager' is not a configured channel"));
    fix_free(f);
}

/* Channels of a configuration with these alerts.channel lines (NULL: the
 * defaults) and alerts.default_notify; returns cb_channels_from_config's
 * result, the channels' names joined by spaces in names. */
static int channels_of(const char *const *lines, const char *default_notify, char *names,
                       size_t len, char *err, size_t errlen)
{
    struct cb_config cfg;
    struct cb_config_error e;
    CU_ASSERT_EQUAL_FATAL(cb_config_defaults(&cfg), 0);
    for (size_t i = 0; lines && lines[i]; i++)
        CU_ASSERT_EQUAL(cb_config_set(&cfg, "alerts.channel", lines[i], i == 0, "t", &e), 0);
    if (default_notify)
        CU_ASSERT_EQUAL(cb_config_set(&cfg, "alerts.default_notify", default_notify, 1, "t", &e), 0);
    struct cb_channel *c = NULL;
    size_t n = 0;
    int rc = cb_channels_from_config(&cfg, &c, &n, err, errlen);
    names[0] = 0;
    for (size_t i = 0; rc == 0 && i < n; i++)
        snprintf(names + strlen(names), len - strlen(names), "%s%s:%d", i ? " " : "", c[i].name,
                 (int)c[i].type);
    cb_channels_free(c, n);
    cb_config_free(&cfg);
    return rc;
}

/* docs/alerts.md: `log` is built in unless redefined, so a configuration that
 * defines its own channels keeps the default default_notify = log working. */
static void test_log_channel_is_built_in(void)
{
    char names[256], err[256];
    CU_ASSERT_EQUAL(channels_of(NULL, NULL, names, sizeof names, err, sizeof err), 0);
    CU_ASSERT_STRING_EQUAL(names, "ops:2 cap:0 log:2");
    const char *ops_only[] = {"ops type=webhook url=https://duty.example/hook", NULL};
    CU_ASSERT_EQUAL(channels_of(ops_only, NULL, names, sizeof names, err, sizeof err), 0);
    CU_ASSERT_STRING_EQUAL(names, "ops:1 log:2");
    /* redefined: the configuration's log is the only one */
    const char *own_log[] = {"log type=mqtt prefix=ops/log", NULL};
    CU_ASSERT_EQUAL(channels_of(own_log, "log", names, sizeof names, err, sizeof err), 0);
    CU_ASSERT_STRING_EQUAL(names, "log:0");
    /* default_notify must name one of them; the error lists them */
    CU_ASSERT_EQUAL(channels_of(ops_only, "opz", names, sizeof names, err, sizeof err), -1);
    CU_ASSERT_STRING_EQUAL(err, "alerts.default_notify: 'opz' is not a configured channel "
                                "(channels: ops, log)");
}

struct loaded {
    int n, acked;
    char ids[4][64];
    enum cb_alert_state st[4];
    int64_t since[4];
    char district[4][8];
};

static void on_load(void *ctx, const struct cb_transition *t, int acked, int64_t acked_at)
{
    struct loaded *l = ctx;
    (void)acked_at;
    if (l->n < 4) {
        snprintf(l->ids[l->n], sizeof l->ids[0], "%s", t->id);
        l->st[l->n] = t->state;
        l->since[l->n] = t->since;
        snprintf(l->district[l->n], sizeof l->district[0], "%s",
                 t->nlabels ? t->labels[0].value : "");
    }
    l->n++;
    l->acked += acked;
}

static void test_restart_load(void)
{
    struct fix *f = fix_new(0);
    int64_t t0 = f->now;
    struct cb_transition t = tr("river_flood/district=d07", CB_ALERT_FIRING, CB_SEV_MAJOR, t0);
    cb_alerts_on_transition(f->a, &t);
    t = tr("river_flood/district=d07", CB_ALERT_ACKNOWLEDGED, CB_SEV_MAJOR, t0 + 5);
    t.since = t0;
    t.acked_by = "ops";
    cb_alerts_on_transition(f->a, &t);
    t = tr("river_flood/district=d09", CB_ALERT_PENDING, CB_SEV_MAJOR, t0 + 10);
    cb_alerts_on_transition(f->a, &t);
    t = tr("river_flood/district=d11", CB_ALERT_FIRING, CB_SEV_MAJOR, t0 + 20);
    cb_alerts_on_transition(f->a, &t);
    t.state = CB_ALERT_RESOLVED;
    cb_alerts_on_transition(f->a, &t);
    CU_ASSERT_EQUAL(f->published, 4);
    fix_close_alerts(f);
    fix_clear_pubs(f);

    CU_ASSERT_EQUAL(fix_open(f), 0);
    struct loaded l = {0};
    CU_ASSERT_EQUAL(cb_alerts_load(f->a, on_load, &l), 2);
    CU_ASSERT_EQUAL(l.n, 2);
    CU_ASSERT_EQUAL(l.acked, 1);
    CU_ASSERT_STRING_EQUAL(l.ids[0], "river_flood/district=d09");
    CU_ASSERT_EQUAL(l.st[0], CB_ALERT_PENDING);
    CU_ASSERT_STRING_EQUAL(l.ids[1], "river_flood/district=d07");
    CU_ASSERT_EQUAL(l.st[1], CB_ALERT_FIRING);
    CU_ASSERT_EQUAL(l.since[1], t0);
    CU_ASSERT_STRING_EQUAL(l.district[1], "d07");
    cb_alerts_tick(f->a);
    CU_ASSERT_EQUAL(f->published, 0); /* nothing notified again */
    /* the acknowledgement survives: an escalation after the restart keeps it */
    t = tr("river_flood/district=d07", CB_ALERT_ESCALATED, CB_SEV_CRITICAL, t0 + 100);
    t.since = t0;
    cb_alerts_on_transition(f->a, &t);
    cJSON *row = instance(f, "river_flood/district=d07");
    CU_ASSERT_STRING_EQUAL(sfield(row, "acked_by"), "ops");
    cJSON_Delete(row);
    CU_ASSERT_EQUAL(f->published, 1);
    /* a stored instance whose rule is gone is resolved by the engine with
     * the reason, and that resolution is an event like any other: stored,
     * in the history with its reason, notified */
    t = tr("river_flood/district=d09", CB_ALERT_RESOLVED, CB_SEV_MAJOR, t0 + 200);
    t.reason = "rule removed";
    cb_alerts_on_transition(f->a, &t);
    cb_alerts_tick(f->a);
    row = instance(f, "river_flood/district=d09");
    CU_ASSERT_STRING_EQUAL(sfield(row, "state"), "resolved");
    cJSON_Delete(row);
    CU_ASSERT_EQUAL(f->published, 2);
    /* transition seqs go on after the restart */
    cJSON *h = history(f);
    CU_ASSERT_EQUAL(cJSON_GetArraySize(h), 6);
    char *text = cJSON_PrintUnformatted(h);
    CU_ASSERT_PTR_NOT_NULL(text && strstr(text, "\"reason\":\"rule removed\""));
    free(text);
    cJSON_Delete(h);
    fix_free(f);
}

/* Runs `citybrain alerts ARGS` with stdout captured into out (NUL-terminated). */
static int run_cli(char **argv, int argc, char *out, size_t outlen)
{
    char path[] = "/tmp/cb_cli_XXXXXX";
    int fd = mkstemp(path);
    fflush(stdout);
    int saved = dup(1);
    dup2(fd, 1);
    int rc = cb_cmd_alerts(argc, argv);
    fflush(stdout);
    dup2(saved, 1);
    close(saved);
    lseek(fd, 0, SEEK_SET);
    ssize_t n = read(fd, out, outlen - 1);
    out[n > 0 ? n : 0] = '\0';
    close(fd);
    unlink(path);
    return rc;
}

static void test_cli_handover(void)
{
    struct fix *f = fix_new(0);
    int64_t wall = cb_wall_ms();
    struct cb_transition t = tr("river_flood/district=d07", CB_ALERT_FIRING, CB_SEV_MAJOR,
                                wall - 3600000);
    cb_alerts_on_transition(f->a, &t);
    static const struct cb_label d08[] = {{"district", "d08"}};
    t = tr("river_flood/district=d08", CB_ALERT_FIRING, CB_SEV_CRITICAL, wall - 60000);
    t.labels = d08;
    cb_alerts_on_transition(f->a, &t);
    cb_alerts_sync(f->a);
    char out[8192];
    char *a1[] = {"alerts", "--db", f->db, "--unacked-older-than", "30m", "--json"};
    CU_ASSERT_EQUAL(run_cli(a1, 6, out, sizeof out), 0);
    cJSON *arr = cJSON_Parse(out);
    CU_ASSERT_EQUAL(cJSON_GetArraySize(arr), 1); /* only the one firing for an hour */
    CU_ASSERT_STRING_EQUAL(sfield(cJSON_GetArrayItem(arr, 0), "id"), "river_flood/district=d07");
    cJSON_Delete(arr);
    char *a2[] = {"alerts", "--db", f->db, "--state", "firing"};
    CU_ASSERT_EQUAL(run_cli(a2, 5, out, sizeof out), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "river_flood/district=d08"));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "red"));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "2 alerts"));
    char *a3[] = {"alerts", "--db", f->db, "--unacked-older-than", "soon"};
    CU_ASSERT_EQUAL(run_cli(a3, 5, out, sizeof out), 2);
    char missing[128];
    snprintf(missing, sizeof missing, "%s/none.db", f->dir);
    char *a4[] = {"alerts", "--db", missing};
    CU_ASSERT_EQUAL(run_cli(a4, 3, out, sizeof out), 1);
    fix_free(f);
}

/* The CLI's reader checks the file as the time-series reader does: a foreign
 * file is refused at open with its reason (it used to open, and fail later). */
static void test_reader_refuses_foreign_file(void)
{
    char dir[] = "/tmp/cb_alerts_foreign_XXXXXX", path[96], err[256] = "";
    CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/notes.txt", dir);
    FILE *fp = fopen(path, "w");
    CU_ASSERT_PTR_NOT_NULL_FATAL(fp);
    for (int i = 0; i < 64; i++)
        fputs("this is a text file, not a database\n", fp);
    fclose(fp);
    struct cb_alert_reader *r = cb_alert_reader_open(path, err, sizeof err);
    CU_ASSERT_PTR_NULL(r);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "not a SQLite database"));
    CU_ASSERT_PTR_NOT_NULL(strstr(err, path));
    if (r)
        cb_alert_reader_close(r);
    cb_t_remove_dir(dir);
}

/* A failing store (the transition table vanished under us) is counted and
 * reported; the state machine's notifications still go out. */
static void test_store_failure_counted(void)
{
    struct fix *f = fix_new(0);
    sqlite3 *db = NULL;
    CU_ASSERT_EQUAL_FATAL(sqlite3_open(f->db, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    CU_ASSERT_EQUAL(sqlite3_exec(db, "DROP TABLE alert_transitions", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    struct cb_transition t = tr("river_flood/district=d07", CB_ALERT_FIRING, CB_SEV_MAJOR, f->now);
    cb_alerts_on_transition(f->a, &t);
    CU_ASSERT_EQUAL(f->published, 1);
    CU_ASSERT_EQUAL(cb_alerts_sync(f->a), -1);
    struct cb_alerts_stats st;
    cb_alerts_get_stats(f->a, &st);
    CU_ASSERT(st.store_errors >= 1);
    /* the instance row (another table) was still written */
    cJSON *row = instance(f, "river_flood/district=d07");
    CU_ASSERT_STRING_EQUAL(sfield(row, "state"), "firing");
    cJSON_Delete(row);
    fix_free(f);
}

static int count_event(void *ctx, uint64_t seq, const char *json, size_t len)
{
    uint64_t *last = ctx;
    CU_ASSERT(seq > last[0]);
    CU_ASSERT(len > 2 && json[0] == '{');
    last[0] = seq;
    last[1]++;
    return 0;
}

static void test_api_helpers(void)
{
    struct fix *f = fix_new(0);
    struct cb_transition t = tr("river_flood/district=d07", CB_ALERT_FIRING, CB_SEV_MAJOR, 1000);
    cb_alerts_on_transition(f->a, &t);
    t = tr("river_flood/district=d07", CB_ALERT_RESOLVED, CB_SEV_MAJOR, 2000);
    cb_alerts_on_transition(f->a, &t);
    t = tr("heat/district=d07", CB_ALERT_FIRING, CB_SEV_MAJOR, 3000);
    t.rule = "heat";
    cb_alerts_on_transition(f->a, &t);
    cb_alerts_sync(f->a);
    char err[256];
    struct cb_alert_reader *r = cb_alert_reader_open(f->db, err, sizeof err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    struct cb_strbuf b;
    cb_strbuf_init(&b);
    CU_ASSERT_EQUAL(cb_alerts_reader_history_json(r, 0, 10000, "river_flood", 10, &b), 0);
    cJSON *doc = cJSON_Parse(b.data);
    cJSON *arr = cJSON_GetObjectItem(doc, "transitions");
    CU_ASSERT_EQUAL(cJSON_GetArraySize(arr), 2);
    CU_ASSERT_STRING_EQUAL(sfield(cJSON_GetArrayItem(arr, 0), "state"), "resolved"); /* newest */
    CU_ASSERT_EQUAL(cJSON_GetObjectItem(cJSON_GetArrayItem(arr, 0), "seq")->valueint, 2);
    CU_ASSERT_EQUAL(cJSON_GetObjectItem(cJSON_GetArrayItem(arr, 1), "seq")->valueint, 1);
    cJSON_Delete(doc);
    uint64_t st[2] = {1, 0};
    CU_ASSERT_EQUAL(cb_alert_reader_events_after(r, 1, 100, count_event, st), 0);
    CU_ASSERT_EQUAL(st[1], 2); /* seq 2 and 3 */
    cb_alert_reader_close(r);

    static const struct cb_silence_matcher m[] = {{"district", "=", "d07"}, {"rule", "=", "heat"}};
    CU_ASSERT(add_silence(f, m, 2, f->now, f->now + 60000, err) > 0);
    fix_clear_pubs(f);
    t = tr("heat/district=d07", CB_ALERT_ESCALATED, CB_SEV_CRITICAL, 4000);
    t.rule = "heat";
    cb_alerts_on_transition(f->a, &t);
    t = tr("river_flood/district=d07", CB_ALERT_FIRING, CB_SEV_MAJOR, 4000);
    cb_alerts_on_transition(f->a, &t);
    CU_ASSERT_EQUAL(f->published, 1); /* only the rule named by the silence is held */
    cb_strbuf_reset(&b);
    cb_alerts_silences_json(f->a, &b);
    CU_ASSERT_PTR_NOT_NULL(strstr(b.data, "\"created_by\":\"li.wei\""));
    CU_ASSERT_PTR_NOT_NULL(strstr(b.data, "\"state\":\"active\""));
    cb_strbuf_free(&b);
    fix_free(f);
}

/* ---- twins: one voice (docs/cluster.md) ---- */

/* A twin of partition north, reopened so it starts silent as the daemon's does. */
static struct fix *twin_new(void)
{
    struct fix *f = fix_new(0);
    struct cb_config_error e;
    fix_close_alerts(f);
    CU_ASSERT_EQUAL(cb_config_set(&f->cfg, "cluster.partition", "north", 1, "test", &e), 0);
    CU_ASSERT_EQUAL(cb_config_set(&f->cfg, "alerts.default_notify", "mqtt", 1, "test", &e), 0);
    if (fix_open(f))
        abort();
    return f;
}

/* A feed message of the other twin: its since is its own clock's. */
static void hear(struct fix *f, const char *id, const char *state, int64_t since)
{
    char json[256];
    snprintf(json, sizeof json, "{\"id\":\"%s\",\"rule\":\"river_flood\",\"state\":\"%s\","
             "\"severity\":\"major\",\"labels\":{},\"at\":%lld,\"since\":%lld}", id, state,
             (long long)since, (long long)since);
    CU_ASSERT_EQUAL(cb_alerts_feed_heard(f->a, json, strlen(json)), 0);
}

/* This twin's own event: id in state, since, at. */
static void own(struct fix *f, const char *id, enum cb_alert_state st, int64_t since, int64_t at)
{
    struct cb_transition t = tr(id, st, CB_SEV_MAJOR, at);
    t.since = since;
    cb_alerts_on_transition(f->a, &t);
}

static size_t deferred(struct fix *f)
{
    struct cb_alerts_stats st;
    cb_alerts_get_stats(f->a, &st);
    return st.deferred;
}

static void test_silent_twin_keeps(void)
{
    struct fix *f = twin_new();
    struct cb_transition t = tr("river_flood/d07", CB_ALERT_FIRING, CB_SEV_MAJOR, f->now);
    cb_alerts_on_transition(f->a, &t);
    CU_ASSERT_EQUAL(f->feeds, 0);
    CU_ASSERT_EQUAL(f->published, 0);
    CU_ASSERT_EQUAL(deferred(f), 1);
    cJSON *h = history(f); /* persisted all the same */
    CU_ASSERT_EQUAL(cJSON_GetArraySize(h), 1);
    cJSON_Delete(h);
    fix_free(f);
}

static void test_takeover_announces_unheard(void)
{
    struct fix *f = twin_new();
    int64_t t0 = f->now;
    own(f, "river_flood/d07", CB_ALERT_FIRING, t0, t0);
    own(f, "river_flood/d08", CB_ALERT_FIRING, t0 + 10, t0 + 10);
    own(f, "river_flood/d07", CB_ALERT_RESOLVED, t0, t0 + 20);
    hear(f, "river_flood/d07", "firing", t0 + 3); /* the holder's clock ran 3 ms later */
    CU_ASSERT_EQUAL(deferred(f), 2);
    cb_alerts_set_voice(f->a, 1);
    char want[256];
    snprintf(want, sizeof want, "river_flood/d08 firing %lld;river_flood/d07 resolved %lld;",
             (long long)t0 + 10, (long long)t0);
    CU_ASSERT_STRING_EQUAL(f->feed.data ? f->feed.data : "", want);
    CU_ASSERT_EQUAL(f->published, 2); /* the mqtt channel, the same two */
    CU_ASSERT_EQUAL(deferred(f), 0);
    struct cb_alerts_stats st;
    cb_alerts_get_stats(f->a, &st);
    CU_ASSERT_EQUAL(st.takeover_announced, 2);
    CU_ASSERT_EQUAL(st.speaking, 1);
    /* speaking now: the next event goes out at once */
    own(f, "river_flood/d09", CB_ALERT_FIRING, t0 + 30, t0 + 30);
    CU_ASSERT_EQUAL(f->feeds, 3);
    fix_free(f);
}

static void test_heard_first_not_kept(void)
{
    struct fix *f = twin_new();
    hear(f, "river_flood/d07", "firing", f->now - 40); /* this twin lags */
    struct cb_transition x = tr("river_flood/d07", CB_ALERT_FIRING, CB_SEV_MAJOR, f->now);
    cb_alerts_on_transition(f->a, &x);
    CU_ASSERT_EQUAL(deferred(f), 0);
    cb_alerts_set_voice(f->a, 1);
    CU_ASSERT_EQUAL(f->feeds, 0);
    fix_free(f);
}

static void test_one_heard_one_kept(void)
{
    struct fix *f = twin_new();
    int64_t t0 = f->now;
    own(f, "river_flood/d07", CB_ALERT_FIRING, t0, t0);
    hear(f, "river_flood/d07", "firing", t0 + 1);
    own(f, "river_flood/d07", CB_ALERT_RESOLVED, t0, t0 + 1000);
    hear(f, "river_flood/d07", "resolved", t0 + 1);
    /* within the 5 s tolerance of the firing heard, but that one is spent */
    own(f, "river_flood/d07", CB_ALERT_FIRING, t0 + 2000, t0 + 2000);
    CU_ASSERT_EQUAL(deferred(f), 1);
    cb_alerts_set_voice(f->a, 1);
    char want[128];
    snprintf(want, sizeof want, "river_flood/d07 firing %lld;", (long long)t0 + 2000);
    CU_ASSERT_STRING_EQUAL(f->feed.data ? f->feed.data : "", want);
    fix_free(f);
}

static void test_own_echo_hides_nothing(void)
{
    struct fix *f = twin_new();
    int64_t t0 = f->now;
    cb_alerts_set_voice(f->a, 1);
    own(f, "river_flood/d07", CB_ALERT_FIRING, t0, t0);
    own(f, "river_flood/d07", CB_ALERT_RESOLVED, t0, t0 + 500);
    CU_ASSERT_EQUAL(f->feeds, 2);
    hear(f, "river_flood/d07", "firing", t0); /* the echo of its own announcements */
    hear(f, "river_flood/d07", "resolved", t0);
    cb_alerts_set_voice(f->a, 0);
    /* a new firing 2 s later, within the tolerance of the echo: still its own to keep */
    own(f, "river_flood/d07", CB_ALERT_FIRING, t0 + 2000, t0 + 2000);
    CU_ASSERT_EQUAL(deferred(f), 1);
    fix_free(f);
}

static void test_no_partition_always_speaks(void)
{
    struct fix *f = fix_new(0);
    own(f, "river_flood/d07", CB_ALERT_FIRING, f->now, f->now);
    CU_ASSERT_EQUAL(f->feeds, 1);
    CU_ASSERT_EQUAL(deferred(f), 0);
    /* a twin that loses the voice falls silent */
    cb_alerts_set_voice(f->a, 0);
    own(f, "river_flood/d07", CB_ALERT_RESOLVED, f->now, f->now + 5);
    CU_ASSERT_EQUAL(f->feeds, 1);
    CU_ASSERT_EQUAL(deferred(f), 1);
    fix_free(f);
}

static void test_kept_beyond_memory_dropped(void)
{
    struct fix *f = twin_new();
    struct cb_transition x = tr("river_flood/d07", CB_ALERT_FIRING, CB_SEV_MAJOR, f->now);
    cb_alerts_on_transition(f->a, &x);
    f->now += f->cfg.cluster_feed_memory_ms + 1;
    cb_alerts_set_voice(f->a, 1);
    CU_ASSERT_EQUAL(f->feeds, 0);
    struct cb_alerts_stats st;
    cb_alerts_get_stats(f->a, &st);
    CU_ASSERT_EQUAL(st.deferred_dropped, 1);
    fix_free(f);
}

void cb_test_suite_alerts(void);
void cb_test_suite_alerts(void)
{
    CU_pSuite s = CU_add_suite("alerts", NULL, NULL);
    CU_add_test(s, "alerts: the log channel is built in unless a channel named log is defined",
                test_log_channel_is_built_in);
    CU_add_test(s, "alerts: every transition kind is persisted, events logged and published",
                test_every_kind_persisted);
    CU_add_test(s, "alerts: an acknowledgement while firing survives escalation, leaves handover",
                test_ack_while_firing);
    CU_add_test(s, "alerts: a resolution while silenced is recorded but not notified",
                test_resolution_while_silenced);
    CU_add_test(s, "silences: = and != compare the whole value; a missing label is \"\"; rule "
                   "and id name the rule and the instance unless a label has that name",
                test_matcher_equality);
    CU_add_test(s, "silences: =~ and !~ are POSIX extended regular expressions anchored at both "
                   "ends; every matcher must hold",
                test_matcher_regex_anchored);
    CU_add_test(s, "silences: an unknown op, a bad regex, a silence of everything, no created_by "
                   "or comment, or a past end is refused with a message naming it",
                test_silence_refusals);
    CU_add_test(s, "silences: a scheduled silence holds nothing before its start and from its "
                   "end, everything in between",
                test_scheduled_silence);
    CU_add_test(s, "silences: expired or deleted by hand, a silence stays listed as expired with "
                   "who and when, across a restart, and is audited",
                test_silence_expired_stays_listed);
    CU_add_test(s, "audit: an acknowledgement and a reload are recorded with who, when and what; "
                   "a bad entry is refused; read newest first by action and time",
                test_audit_records_actions);
    CU_add_test(s, "alerts: a storm of 5000 sensors gives the first at once and one summary per group",
                test_storm_grouping);
    CU_add_test(s, "alertmanager: a firing alert is posted with the rule, severity and labels, "
                   "both languages' texts, endsAt four resend intervals ahead; a resend while a "
                   "delivery is queued adds none; a resolution ends it at its time",
                test_alertmanager_payload);
    CU_add_test(s, "alerts: channel configuration errors name the line",
                test_channel_config_errors);
    CU_add_test(s, "alerts: a restart loads pending and firing instances, notifies nothing",
                test_restart_load);
    CU_add_test(s, "alerts: the CLI lists the database read-only, --unacked-older-than hands over",
                test_cli_handover);
    CU_add_test(s, "alerts: the read-only reader refuses a foreign file with its reason",
                test_reader_refuses_foreign_file);
    CU_add_test(s, "alerts: a failing store write is counted, notifications go on",
                test_store_failure_counted);
    CU_add_test(s, "alerts: API helpers give history newest first, events since, list silences",
                test_api_helpers);
    CU_add_test(s, "twins: a silent twin announces nothing (feed, channels), keeps each event "
                   "and persists it",
                test_silent_twin_keeps);
    CU_add_test(s, "twins: on gaining the lease a twin announces, in order, what the feed did not "
                   "carry, then speaks at once",
                test_takeover_announces_unheard);
    CU_add_test(s, "twins: an event heard on the feed before the twin computed it is not kept",
                test_heard_first_not_kept);
    CU_add_test(s, "twins: one event heard accounts for one kept: a second firing of the same "
                   "alert within the tolerance is still announced",
                test_one_heard_one_kept);
    CU_add_test(s, "twins: a twin's own announcements heard back on the feed do not hide its "
                   "later events",
                test_own_echo_hides_nothing);
    CU_add_test(s, "twins: without cluster.partition the engine speaks; losing the voice "
                   "silences it",
                test_no_partition_always_speaks);
    CU_add_test(s, "twins: an event kept longer than cluster.feed_memory is dropped on takeover, "
                   "counted",
                test_kept_beyond_memory_dropped);
}
