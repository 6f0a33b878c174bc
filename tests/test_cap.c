/* CAP 1.2 output of the alerts module, validated with `xmllint --schema`
 * against tests/cap/CAP-v1.2.xsd (written from the OASIS specification). */
#include <CUnit/CUnit.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "alerts/alerts.h"
#include "core/config.h"
#include "storage/storage.h"
#include "core/log.h"
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

/* Through the module: firing (Alert), escalated (Update referencing it),
 * resolved (Cancel referencing the Update), and a storm group of 300
 * instances (areas capped at 200), each valid CAP. */
static void test_module_sequence(void)
{
    char dir[] = "/tmp/cb_cap_db_XXXXXX", db[64], err[256] = "";
    CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(dir));
    snprintf(db, sizeof db, "%s/a.db", dir);
    CU_ASSERT_EQUAL_FATAL(cb_t_create_schema(db), 0);
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct cb_config cfg;
    struct cb_config_error e;
    cb_config_defaults(&cfg);
    cfg.alerts_storm_window_ms = 0;
    cb_config_set(&cfg, "alerts.channel", "cap type=mqtt format=cap prefix=cap/alerts", 1, "t",
                  &e);
    cb_config_set(&cfg, "alerts.default_notify", "cap", 1, "t", &e);
    int64_t now = 1732400000000LL;
    struct cb_clock clock = {cb_clock_manual_now, &now};
    struct pubs p = {0};
    struct cb_alerts_hooks h = {.ctx = &p, .publish = on_publish, .clock = &clock};
    struct cb_alerts *a = cb_alerts_new(&loop, &cfg, db, &h, err, sizeof err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    static const struct cb_label l[] = {{"district", "d07"}};
    const char *notify[] = {"cap"};
    struct cb_transition t = {.id = "river_flood/district=d07", .rule = "river_flood",
                              .title = "River flood risk", .state = CB_ALERT_FIRING,
                              .severity = CB_SEV_MAJOR, .labels = l, .nlabels = 1, .at = now,
                              .since = now, .message = "d07: 2 gauges above 3.2 m",
                              .notify = notify, .nnotify = 1};
    cb_alerts_on_transition(a, &t);
    t.state = CB_ALERT_ESCALATED;
    t.severity = CB_SEV_CRITICAL;
    t.at = now + 60000;
    cb_alerts_on_transition(a, &t);
    t.state = CB_ALERT_RESOLVED;
    t.at = now + 120000;
    cb_alerts_on_transition(a, &t);
    CU_ASSERT_EQUAL_FATAL(p.n, 3);
    for (int i = 0; i < 3; i++)
        CU_ASSERT_EQUAL(validate(p.xml[i]), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(p.xml[0], "<msgType>Alert</msgType>"));
    CU_ASSERT_PTR_NULL(strstr(p.xml[0], "<references>"));
    CU_ASSERT_PTR_NOT_NULL(strstr(p.xml[1], "<msgType>Update</msgType>"));
    CU_ASSERT_PTR_NOT_NULL(strstr(p.xml[1], "<severity>Extreme</severity>"));
    CU_ASSERT_PTR_NOT_NULL(strstr(p.xml[2], "<msgType>Cancel</msgType>"));
    CU_ASSERT_PTR_NOT_NULL(strstr(p.xml[2], "<urgency>Past</urgency>"));
    /* each references the previous message: sender,identifier,sent */
    const char *id0 = strstr(p.xml[0], "<identifier>") + 12;
    const char *id1 = strstr(p.xml[1], "<identifier>") + 12;
    char ref[160];
    snprintf(ref, sizeof ref, "<references>citybrain@localhost,%.*s,2024-11-23T22:13:20+00:00",
             (int)(strchr(id0, '<') - id0), id0);
    CU_ASSERT_PTR_NOT_NULL(strstr(p.xml[1], ref));
    snprintf(ref, sizeof ref, "<references>citybrain@localhost,%.*s,2024-11-23T22:14:20+00:00",
             (int)(strchr(id1, '<') - id1), id1);
    CU_ASSERT_PTR_NOT_NULL(strstr(p.xml[2], ref));

    /* a storm group through a window */
    int closed = 0;
    cb_alerts_close(a, on_closed, &closed);
    uv_run(&loop, UV_RUN_DEFAULT);
    cfg.alerts_storm_window_ms = 10000;
    a = cb_alerts_new(&loop, &cfg, db, &h, err, sizeof err);
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
    CU_ASSERT_EQUAL_FATAL(p.n, 4);
    CU_ASSERT_EQUAL(validate(p.xml[3]), 0);
    now += 10000;
    cb_alerts_tick(a);
    CU_ASSERT_EQUAL_FATAL(p.n, 5);
    CU_ASSERT_EQUAL(validate(p.xml[4]), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(p.xml[4], "299 alerts of river_flood"));
    CU_ASSERT_PTR_NOT_NULL(strstr(p.xml[4], "99 areas not listed"));
    CU_ASSERT_PTR_NOT_NULL(strstr(p.xml[4], "<severity>Moderate</severity>"));
    closed = 0;
    cb_alerts_close(a, on_closed, &closed);
    uv_run(&loop, UV_RUN_DEFAULT);
    CU_ASSERT(closed);
    CU_ASSERT_EQUAL(uv_loop_close(&loop), 0);
    for (int i = 0; i < 8; i++)
        free(p.xml[i]);
    cb_config_free(&cfg);
    cb_t_remove_dir(dir);
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
}
