/* CAP 1.2 output of the alerts module, validated with `xmllint --schema`
 * against tests/cap/CAP-v1.2.xsd (written from the OASIS specification). */
#include <CUnit/CUnit.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "alerts/alerts.h"
#include "base/config.h"
#include "storage/storage.h"
#include "base/log.h"
#include "tests/support/store_fixture.h"

#define XSD CB_SOURCE_DIR "/tests/cap/CAP-v1.2.xsd"

/* Writes xml to a temporary file and validates it. Returns xmllint's status
 * (0 valid), or -1 when it cannot run. */
static int validate(const char *xml)
{
    char path[] = "/tmp/cb_cap_XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0)
        return -1;
    size_t n = strlen(xml);
    int ok = write(fd, xml, n) == (ssize_t)n;
    close(fd);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "xmllint --noout --schema '%s' '%s' 2>/tmp/cb_cap_err.txt", XSD,
             path);
    int rc = ok ? system(cmd) : -1;
    if (rc != 0) {
        fprintf(stderr, "\n--- CAP not valid:\n%s\n", xml);
        if (system("cat /tmp/cb_cap_err.txt >&2")) {
        }
    }
    unlink(path);
    return rc;
}

static void test_schema_is_strict(void)
{
    /* the schema must refuse what CAP forbids, or the other tests prove nothing */
    const char *bad_severity =
        "<?xml version=\"1.0\"?><alert xmlns=\"urn:oasis:names:tc:emergency:cap:1.2\">"
        "<identifier>a</identifier><sender>s</sender><sent>2024-11-24T01:35:20+00:00</sent>"
        "<status>Actual</status><msgType>Alert</msgType><scope>Public</scope><info>"
        "<category>Other</category><event>e</event><urgency>Immediate</urgency>"
        "<severity>Huge</severity><certainty>Observed</certainty></info></alert>";
    const char *z_time =
        "<?xml version=\"1.0\"?><alert xmlns=\"urn:oasis:names:tc:emergency:cap:1.2\">"
        "<identifier>a</identifier><sender>s</sender><sent>2024-11-24T01:35:20Z</sent>"
        "<status>Actual</status><msgType>Alert</msgType><scope>Public</scope></alert>";
    cb_log_threshold = CB_LOG_ERROR;
    fprintf(stderr, "\n(two invalid messages follow on purpose)");
    CU_ASSERT_NOT_EQUAL(validate(bad_severity), 0);
    CU_ASSERT_NOT_EQUAL(validate(z_time), 0);
}

static void test_render_single(void)
{
    static const struct cb_label l[] = {{"district", "d07"}, {"cap_category", "Met"}};
    struct cb_transition t = {.id = "river_flood/district=d07", .rule = "river_flood",
                              .state = CB_ALERT_FIRING, .severity = CB_SEV_MAJOR, .labels = l,
                              .nlabels = 2, .at = 1732400120000LL, .since = 1732400000000LL,
                              .message = "d07: 2 gauges > 3.2 m & rising <fast>"};
    const struct cb_transition *items[] = {&t};
    struct cb_cap_input in = {.identifier = "citybrain-alert-1", .sender = "citybrain@localhost",
                              .sent_ms = t.at, .msg_type = "Alert", .event = "River flood risk",
                              .headline = "River flood risk: firing", .description = t.message,
                              .severity = t.severity, .items = items, .nitems = 1,
                              .rule = t.rule, .state = "firing"};
    struct cb_strbuf b;
    cb_strbuf_init(&b);
    cb_cap_render(&in, &b);
    CU_ASSERT_EQUAL(validate(b.data), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(b.data, "<sent>2024-11-23T22:15:20+00:00</sent>"));
    CU_ASSERT_PTR_NOT_NULL(strstr(b.data, "<severity>Severe</severity>"));
    CU_ASSERT_PTR_NOT_NULL(strstr(b.data, "<urgency>Immediate</urgency>"));
    CU_ASSERT_PTR_NOT_NULL(strstr(b.data, "<category>Met</category>"));
    CU_ASSERT_PTR_NOT_NULL(strstr(b.data, "&amp; rising &lt;fast&gt;"));
    CU_ASSERT_PTR_NOT_NULL(strstr(b.data, "<areaDesc>district=d07</areaDesc>"));
    CU_ASSERT_PTR_NOT_NULL(strstr(b.data, "<value>orange</value>"));
    cb_strbuf_free(&b);
}

struct pubs {
    int n;
    char *xml[8];
};

static int on_publish(void *ctx, const char *topic, const void *payload, size_t len, int qos)
{
    struct pubs *p = ctx;
    (void)qos;
    CU_ASSERT_STRING_EQUAL(topic, "cap/alerts/river_flood");
    if (p->n < 8)
        p->xml[p->n] = strndup(payload, len);
    p->n++;
    return 0;
}

static void on_closed(void *ctx) { *(int *)ctx = 1; }

/* A module publishing CAP to cap/alerts at a manual clock, on a fresh store
 * in a temporary directory. */
struct cap_fixture {
    char dir[32], db[64];
    uv_loop_t loop;
    struct cb_config cfg;
    int64_t now;
    struct cb_clock clock;
    struct pubs p;
    struct cb_alerts_hooks h;
};

static int fixture_open(struct cap_fixture *f, const char *name)
{
    memset(f, 0, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/%s_XXXXXX", name);
    if (!mkdtemp(f->dir))
        return -1;
    snprintf(f->db, sizeof f->db, "%s/a.db", f->dir);
    if (cb_t_create_schema(f->db))
        return -1;
    uv_loop_init(&f->loop);
    struct cb_config_error e;
    cb_config_defaults(&f->cfg);
    f->cfg.alerts_storm_window_ms = 0;
    cb_config_set(&f->cfg, "alerts.channel", "cap type=mqtt format=cap prefix=cap/alerts", 1,
                  "t", &e);
    cb_config_set(&f->cfg, "alerts.default_notify", "cap", 1, "t", &e);
    f->now = 1732400000000LL;
    f->clock = (struct cb_clock){cb_clock_manual_now, &f->now};
    f->h = (struct cb_alerts_hooks){.ctx = &f->p, .publish = on_publish, .clock = &f->clock};
    return 0;
}

/* How many messages were published, when each one is valid CAP; else -1. */
static int valid_messages(const struct cap_fixture *f)
{
    for (int i = 0; i < f->p.n && i < 8; i++)
        if (validate(f->p.xml[i]) != 0)
            return -1;
    return f->p.n;
}

/* Closes a and runs the loop until it is closed. */
static void module_close(struct cap_fixture *f, struct cb_alerts *a)
{
    int closed = 0;
    cb_alerts_close(a, on_closed, &closed);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    CU_ASSERT(closed);
}

static void fixture_close(struct cap_fixture *f)
{
    CU_ASSERT_EQUAL(uv_loop_close(&f->loop), 0);
    for (int i = 0; i < 8; i++)
        free(f->p.xml[i]);
    cb_config_free(&f->cfg);
    cb_t_remove_dir(f->dir);
}

/* river_flood in d07 firing at `at`, notified on the channel "cap". */
static struct cb_transition flood_firing(int64_t at)
{
    static const struct cb_label l[] = {{"district", "d07"}};
    static const char *const notify[] = {"cap"};
    return (struct cb_transition){.id = "river_flood/district=d07", .rule = "river_flood",
                                  .title = "River flood risk", .state = CB_ALERT_FIRING,
                                  .severity = CB_SEV_MAJOR, .labels = l, .nlabels = 1, .at = at,
                                  .since = at, .message = "d07: 2 gauges above 3.2 m",
                                  .notify = notify, .nnotify = 1};
}

/* Through the module: firing (Alert), escalated (Update referencing it),
 * resolved (Cancel referencing the Update), and a storm group of 300
 * instances (areas capped at 200), each valid CAP. */
static void test_module_sequence(void)
{
    struct cap_fixture fx;
    CU_ASSERT_EQUAL_FATAL(fixture_open(&fx, "cb_cap_db"), 0);
    struct cb_alerts *a = cb_alerts_new(&fx.loop, &fx.cfg, fx.db, &fx.h, NULL, 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    struct cb_transition t = flood_firing(fx.now);
    cb_alerts_on_transition(a, &t);
    t.state = CB_ALERT_ESCALATED;
    t.severity = CB_SEV_CRITICAL;
    t.at = fx.now + 60000;
    cb_alerts_on_transition(a, &t);
    t.state = CB_ALERT_RESOLVED;
    t.at = fx.now + 120000;
    cb_alerts_on_transition(a, &t);
    CU_ASSERT_EQUAL_FATAL(valid_messages(&fx), 3);
    CU_ASSERT_PTR_NOT_NULL(strstr(fx.p.xml[0], "<msgType>Alert</msgType>"));
    CU_ASSERT_PTR_NULL(strstr(fx.p.xml[0], "<references>"));
    CU_ASSERT_PTR_NOT_NULL(strstr(fx.p.xml[1], "<msgType>Update</msgType>"));
    CU_ASSERT_PTR_NOT_NULL(strstr(fx.p.xml[1], "<severity>Extreme</severity>"));
    CU_ASSERT_PTR_NOT_NULL(strstr(fx.p.xml[2], "<msgType>Cancel</msgType>"));
    CU_ASSERT_PTR_NOT_NULL(strstr(fx.p.xml[2], "<urgency>Past</urgency>"));
    /* each references the previous message: sender,identifier,sent */
    const char *id0 = strstr(fx.p.xml[0], "<identifier>") + 12;
    const char *id1 = strstr(fx.p.xml[1], "<identifier>") + 12;
    char ref[160];
    snprintf(ref, sizeof ref, "<references>citybrain@localhost,%.*s,2024-11-23T22:13:20+00:00",
             (int)(strchr(id0, '<') - id0), id0);
    CU_ASSERT_PTR_NOT_NULL(strstr(fx.p.xml[1], ref));
    snprintf(ref, sizeof ref, "<references>citybrain@localhost,%.*s,2024-11-23T22:14:20+00:00",
             (int)(strchr(id1, '<') - id1), id1);
    CU_ASSERT_PTR_NOT_NULL(strstr(fx.p.xml[2], ref));

    /* a storm group through a window */
    module_close(&fx, a);
    fx.cfg.alerts_storm_window_ms = 10000;
    a = cb_alerts_new(&fx.loop, &fx.cfg, fx.db, &fx.h, NULL, 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    for (int i = 0; i < 300; i++) {
        char id[64], s[16];
        snprintf(s, sizeof s, "s%03d", i);
        snprintf(id, sizeof id, "river_flood/city/d07/river/%s", s);
        struct cb_label ls[] = {{"district", "d07"}, {"sensor", s}};
        struct cb_transition g = t;
        g.id = id;
        g.labels = ls;
        g.nlabels = 2;
        g.state = CB_ALERT_FIRING;
        g.severity = CB_SEV_WARNING;
        cb_alerts_on_transition(a, &g);
    }
    /* the first went out at once, the 299 that followed wait for the window */
    CU_ASSERT_EQUAL_FATAL(fx.p.n, 4);
    CU_ASSERT_EQUAL(validate(fx.p.xml[3]), 0);
    fx.now += 10000;
    cb_alerts_tick(a);
    CU_ASSERT_EQUAL_FATAL(fx.p.n, 5);
    CU_ASSERT_EQUAL(validate(fx.p.xml[4]), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(fx.p.xml[4], "299 alerts of river_flood"));
    CU_ASSERT_PTR_NOT_NULL(strstr(fx.p.xml[4], "99 areas not listed"));
    CU_ASSERT_PTR_NOT_NULL(strstr(fx.p.xml[4], "<severity>Moderate</severity>"));
    module_close(&fx, a);
    fixture_close(&fx);
}

/* A rule with texts in two languages: through the module, every message has
 * one <info> per language, zh-CN and en-US, each with its own event,
 * headline and description, and is valid CAP 1.2. */
static void test_info_per_language(void)
{
    struct cap_fixture fx;
    CU_ASSERT_EQUAL_FATAL(fixture_open(&fx, "cb_cap_lang_db"), 0);
    struct cb_alerts *a = cb_alerts_new(&fx.loop, &fx.cfg, fx.db, &fx.h, NULL, 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    struct cb_transition t = flood_firing(fx.now);
    t.titles[CB_LANG_EN] = "River flood risk";
    t.titles[CB_LANG_ZH] = "河道洪水风险";
    t.messages[CB_LANG_EN] = t.message;
    t.messages[CB_LANG_ZH] = "d07：2 个水位站超过 3.2 米";
    cb_alerts_on_transition(a, &t);
    t.state = CB_ALERT_RESOLVED;
    t.at = fx.now + 60000;
    cb_alerts_on_transition(a, &t);
    CU_ASSERT_EQUAL_FATAL(valid_messages(&fx), 2);
    const char *x = fx.p.xml[0];
    const char *en = strstr(x, "<language>en-US</language>");
    const char *zh = strstr(x, "<language>zh-CN</language>");
    CU_ASSERT_PTR_NOT_NULL(en);
    CU_ASSERT_PTR_NOT_NULL(zh);
    CU_ASSERT(en && zh && en < zh);
    CU_ASSERT_PTR_NOT_NULL(strstr(x, "<event>河道洪水风险</event>"));
    CU_ASSERT_PTR_NOT_NULL(strstr(x, "<headline>河道洪水风险：发布</headline>"));
    CU_ASSERT_PTR_NOT_NULL(strstr(x, "<description>d07：2 个水位站超过 3.2 米</description>"));
    CU_ASSERT_PTR_NOT_NULL(strstr(x, "<headline>River flood risk: firing</headline>"));
    CU_ASSERT_PTR_NOT_NULL(strstr(fx.p.xml[1], "<headline>河道洪水风险：解除</headline>"));
    /* two blocks, each closed */
    int blocks = 0;
    for (const char *p = x; (p = strstr(p, "</info>")); p++)
        blocks++;
    CU_ASSERT_EQUAL(blocks, 2);
    module_close(&fx, a);
    fixture_close(&fx);
}

/* The last CAP reference of a notification is stored: after a restart, the
 * Update names the Alert sent before it, the Cancel names the Update, and the
 * Cancel clears the stored reference (the next firing is a new Alert). */
static void test_references_survive_restart(void)
{
    struct cap_fixture fx;
    CU_ASSERT_EQUAL_FATAL(fixture_open(&fx, "cb_cap_ref"), 0);
    struct cb_transition t = {.id = "river_flood/district=d07", .rule = "river_flood",
                              .state = CB_ALERT_FIRING, .severity = CB_SEV_MAJOR, .at = fx.now,
                              .since = fx.now};
    const enum cb_alert_state states[] = {CB_ALERT_FIRING, CB_ALERT_ESCALATED, CB_ALERT_RESOLVED,
                                          CB_ALERT_FIRING};
    for (int i = 0; i < 4; i++) { /* a restart before each transition */
        struct cb_alerts *a = cb_alerts_new(&fx.loop, &fx.cfg, fx.db, &fx.h, NULL, 0);
        CU_ASSERT_PTR_NOT_NULL_FATAL(a);
        t.state = states[i];
        t.at = fx.now + i * 60000;
        cb_alerts_on_transition(a, &t);
        module_close(&fx, a);
    }
    CU_ASSERT_EQUAL_FATAL(valid_messages(&fx), 4);
    CU_ASSERT_PTR_NOT_NULL(strstr(fx.p.xml[1], "<msgType>Update</msgType>"));
    CU_ASSERT_PTR_NOT_NULL(strstr(fx.p.xml[2], "<msgType>Cancel</msgType>"));
    CU_ASSERT_PTR_NOT_NULL(strstr(fx.p.xml[3], "<msgType>Alert</msgType>"));
    CU_ASSERT_PTR_NULL(strstr(fx.p.xml[3], "<references>"));
    const char *sent[] = {"2024-11-23T22:13:20+00:00", "2024-11-23T22:14:20+00:00"};
    for (int i = 0; i < 2; i++) {
        const char *id = strstr(fx.p.xml[i], "<identifier>") + 12;
        char ref[160];
        snprintf(ref, sizeof ref, "<references>citybrain@localhost,%.*s,%s</references>",
                 (int)(strchr(id, '<') - id), id, sent[i]);
        CU_ASSERT_PTR_NOT_NULL(strstr(fx.p.xml[i + 1], ref));
    }
    fixture_close(&fx);
}

void cb_test_suite_cap(void);
void cb_test_suite_cap(void)
{
    CU_pSuite s = CU_add_suite("cap", NULL, NULL);
    CU_add_test(s, "cap: the schema refuses a bad severity and a Z time", test_schema_is_strict);
    CU_add_test(s, "cap: one transition renders valid CAP 1.2 with mapped severity",
                test_render_single);
    CU_add_test(s, "cap: Alert, Update, Cancel reference the earlier message; groups are valid",
                test_module_sequence);
    CU_add_test(s, "cap: a rule with texts in two languages gets one valid <info> per language, "
                   "zh-CN and en-US",
                test_info_per_language);
    CU_add_test(s, "cap: after a restart, Update and Cancel still reference the last message",
                test_references_survive_restart);
}
