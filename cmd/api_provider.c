/* The HTTP API's answers: the daemon's side of struct cb_api_provider.
 *
 * Loop-thread answers come from memory: alert instances from the rule engine
 * (the source of truth while running), silences and counters from alerts/.
 * Pool-thread answers (sensors, series, history, resolved alerts, the audit
 * log, SSE resume) read SQLite through a per-thread pair of read connections, so a
 * slow query never delays ingestion. */
#include "base/version.h"
#include "base/clock.h"
#include "cmd/api_provider.h"
#include "cmd/federation.h"
#include "base/log.h"
#include "storage/alert_store.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- loop thread ------------------------------------------------------------- */

/* ,"lease":{...} of /api/health (docs/cluster.md): the partition, the twin,
 * the lease's state and fencing epoch, since when, the broker node, the last
 * connection error, and the events this twin keeps for a takeover. */
static void lease_json(const struct cmd_api_sources *d, const struct cb_lease_status *ls,
                       struct cb_strbuf *out)
{
    struct cb_alerts_stats as;
    cb_alerts_get_stats(d->alerts, &as);
    cb_strbuf_puts(out, ",\"lease\":{\"partition\":");
    cb_strbuf_json_string(out, d->cfg->cluster_partition, strlen(d->cfg->cluster_partition));
    cb_strbuf_puts(out, ",\"twin\":");
    cb_strbuf_json_string(out, d->cfg->cluster_twin, strlen(d->cfg->cluster_twin));
    cb_strbuf_printf(out, ",\"state\":\"%s\",\"speaking\":%s,\"epoch\":%lld,\"since\":%lld,"
                          "\"gained\":%llu,\"lost\":%llu,\"deferred\":%zu,\"broker\":",
                     cb_lease_state_name(ls->state), as.speaking ? "true" : "false",
                     (long long)ls->epoch, (long long)ls->since_ms,
                     (unsigned long long)ls->gained, (unsigned long long)ls->lost, as.deferred);
    cb_strbuf_json_string(out, ls->broker, strlen(ls->broker));
    cb_strbuf_puts(out, ",\"error\":");
    if (ls->error[0])
        cb_strbuf_json_string(out, ls->error, strlen(ls->error));
    else
        cb_strbuf_puts(out, "null");
    cb_strbuf_putc(out, '}');
}

/* GET /api/health: "status" is "ok" when every part is, else "degraded",
 * and "reasons" says which part is not and why, one string each ("journal:
 * disk full"); the parts follow with their own state. */
static int health(void *ctx, struct cb_strbuf *out)
{
    struct cmd_api_sources *d = ctx;
    struct cb_mqtt_stats ms = {0};
    struct cb_store_stats ss = {0};
    if (d->mqtt)
        cb_mqtt_get_stats(d->mqtt, &ms);
    cb_store_get_stats(d->store, &ss);
    static const char *const store_names[] = {"ok", "degraded", "failed"};
    const char *storage = store_names[ss.health <= CB_STORE_FAILED ? ss.health : CB_STORE_FAILED];
    const char *journal = cb_mqtt_journal_problem(ms.journal_errno);
    struct cb_engine_stats es;
    cb_engine_get_stats(d->engine, &es);

    char reasons[7][96]; /* at most one per part below */
    size_t nr = 0;
    if (ms.state != CB_MQTT_CONNECTED)
        snprintf(reasons[nr++], sizeof reasons[0], "mqtt: %s", cb_mqtt_state_name(ms.state));
    if (ss.health != CB_STORE_OK)
        snprintf(reasons[nr++], sizeof reasons[0], "storage: %s", storage);
    if (ms.journal_errno)
        snprintf(reasons[nr++], sizeof reasons[0], "journal: %s", journal);
    int64_t now = (int64_t)(uv_hrtime() / 1000000);
    int64_t lag_max = d->looplag ? cb_looplag_recent_max(d->looplag, now) : 0;
    int64_t lag = d->looplag ? cb_looplag_last(d->looplag) : 0;
    struct cb_lease_status ls = {.state = CB_LEASE_OFF};
    if (d->lease)
        cb_lease_get(d->lease, &ls);
    if (ls.state == CB_LEASE_CONNECTING)
        snprintf(reasons[nr++], sizeof reasons[0], "lease: no connection to the lease's broker");
    if (lag_max > CB_LOOPLAG_DEGRADED_MS)
        snprintf(reasons[nr++], sizeof reasons[0], "loop: lagged %.1f s in the last %d s",
                 (double)lag_max / 1000.0, CB_LOOPLAG_WINDOW_MS / 1000);
    cb_strbuf_printf(out, "{\"status\":\"%s\",\"reasons\":[", nr ? "degraded" : "ok");
    for (size_t i = 0; i < nr; i++) {
        if (i)
            cb_strbuf_putc(out, ',');
        cb_strbuf_json_string(out, reasons[i], strlen(reasons[i]));
    }
    cb_strbuf_printf(out,
                     "],\"mqtt\":\"%s\",\"storage\":\"%s\",\"journal\":\"%s\","
                     "\"loop_lag_ms\":%lld,\"loop_lag_max_ms\":%lld,\"uptime_s\":%lld,"
                     "\"version\":",
                     cb_mqtt_state_name(ms.state), storage, journal, (long long)lag,
                     (long long)lag_max, (long long)((cb_wall_ms() - d->started_ms) / 1000));
    cb_strbuf_json_string(out, cb_version, strlen(cb_version));
    if (ss.health != CB_STORE_OK && ss.last_error[0]) {
        cb_strbuf_puts(out, ",\"storage_error\":");
        cb_strbuf_json_string(out, ss.last_error, strlen(ss.last_error));
    }
    char mqtt_error[640];
    if (d->mqtt && ms.state != CB_MQTT_CONNECTED &&
        cb_mqtt_last_error(d->mqtt, mqtt_error, sizeof mqtt_error)) {
        cb_strbuf_puts(out, ",\"mqtt_error\":");
        cb_strbuf_json_string(out, mqtt_error, strlen(mqtt_error));
    }
    if (d->lease)
        lease_json(d, &ls, out);
    cb_strbuf_printf(out, ",\"rules\":%zu,\"instances\":%zu,\"queue_depth\":%zu}",
                     cb_engine_rule_count(d->engine),
                     es.instances, ms.queue_depth);
    return 200;
}

/* Appends one instance: the transition object of rules.md plus the
 * acknowledgement and the warning grade. */
static void instance_json(const struct cb_transition *t, struct cb_strbuf *out)
{
    size_t mark = out->len;
    cb_transition_to_json(t, out);
    if (out->oom || out->len == mark || out->data[out->len - 1] != '}')
        return;
    out->len--; /* reopen the object */
    const struct cb_severity_map *m = cb_alerts_severity_map(t->severity);
    cb_strbuf_printf(out, ",\"grade\":\"%s\",\"acknowledged\":%s", m ? m->grade : "",
                     t->acked_by ? "true" : "false");
    if (!t->stale) /* the transition JSON carries "stale":true itself */
        cb_strbuf_puts(out, ",\"stale\":false");
    if (t->last_sample)
        cb_strbuf_printf(out, ",\"last_sample\":%lld", (long long)t->last_sample);
    if (t->acked_by) {
        cb_strbuf_puts(out, ",\"acked_by\":");
        cb_strbuf_json_string(out, t->acked_by, strlen(t->acked_by));
        cb_strbuf_puts(out, ",\"ack_note\":");
        if (t->ack_note)
            cb_strbuf_json_string(out, t->ack_note, strlen(t->ack_note));
        else
            cb_strbuf_puts(out, "null");
    }
    if (t->title) {
        cb_strbuf_puts(out, ",\"title\":");
        cb_strbuf_json_string(out, t->title, strlen(t->title));
    }
    cb_strbuf_putc(out, '}');
}

struct list_ctx {
    const struct cb_api_alert_filter *f;
    struct cb_strbuf *out;
    size_t n;
};

static int state_matches(const struct cb_transition *t, const char *want)
{
    if (!want)
        return 1;
    if (!strcmp(want, "pending"))
        return t->state == CB_ALERT_PENDING;
    if (t->state == CB_ALERT_PENDING)
        return 0;
    if (!strcmp(want, "firing"))
        return 1;
    if (!strcmp(want, "acknowledged"))
        return t->acked_by != NULL;
    if (!strcmp(want, "escalated"))
        return t->state == CB_ALERT_ESCALATED;
    return 0;
}

static void list_one(void *ctx, const struct cb_transition *t)
{
    struct list_ctx *c = ctx;
    if (!state_matches(t, c->f->state))
        return;
    if (c->f->severity && strcmp(c->f->severity, cb_severity_name(t->severity)) != 0)
        return;
    if (c->f->rule && strcmp(c->f->rule, t->rule) != 0)
        return;
    if (!cb_api_alert_kept(c->f, t))
        return;
    if (c->n++)
        cb_strbuf_putc(c->out, ',');
    instance_json(t, c->out);
}

static int alerts(void *ctx, const struct cb_api_alert_filter *f, struct cb_strbuf *out)
{
    struct cmd_api_sources *d = ctx;
    struct list_ctx c = {f, out, 0};
    cb_strbuf_puts(out, "{\"alerts\":[");
    cb_engine_foreach_instance(d->engine, list_one, &c);
    cb_strbuf_puts(out, "]}");
    return 200;
}

/* Changes with every transition, acknowledgement and reload: the engine is
 * the source of truth of the listing above. */
static uint64_t alerts_version(void *ctx)
{
    struct cmd_api_sources *d = ctx;
    return cb_engine_version(d->engine);
}

struct find_ctx {
    const char *id;
    int found;     /* 0 none, 1 pending, 2 firing */
};

static void find_one(void *ctx, const struct cb_transition *t)
{
    struct find_ctx *c = ctx;
    if (strcmp(t->id, c->id) == 0)
        c->found = t->state == CB_ALERT_PENDING ? 1 : 2;
}

struct one_ctx {
    const char *id;
    struct cb_strbuf *out;
};

static void render_one(void *ctx, const struct cb_transition *t)
{
    struct one_ctx *c = ctx;
    if (strcmp(t->id, c->id) == 0)
        instance_json(t, c->out);
}

/* The operator actions (ack, close) act on a firing alert: 0 when `id` is
 * one, else the status with the message in out (404 none, 409 pending). */
/* Hands an action taken through the API to the daemon for the peer engines
 * (federation.control_topic), when it shares them. */
static void share(struct cmd_api_sources *d, const char *action, const char *by,
                  const char *target, const char *note, const char *silence)
{
    if (d->share)
        d->share(d->share_ctx, action, by, target, note, silence);
}

static int firing_or_error(struct cmd_api_sources *d, const char *id, struct cb_strbuf *out)
{
    struct find_ctx f = {id, 0};
    cb_engine_foreach_instance(d->engine, find_one, &f);
    if (f.found == 2)
        return 0;
    cb_strbuf_printf(out, f.found ? "alert '%s' is pending, not firing" : "no alert '%s'", id);
    return f.found ? 409 : 404;
}

static int ack(void *ctx, const char *id, const char *by, const char *note, struct cb_strbuf *out)
{
    struct cmd_api_sources *d = ctx;
    int st = firing_or_error(d, id, out);
    if (st)
        return st;
    if (cb_engine_ack(d->engine, id, by, *note ? note : NULL) < 0) {
        cb_strbuf_puts(out, "the alert could not be acknowledged");
        return 500;
    }
    share(d, CMD_CONTROL_ACK, by, id, note, NULL);
    struct one_ctx c = {id, out};
    cb_engine_foreach_instance(d->engine, render_one, &c);
    return 200;
}

static int close_by_hand(void *ctx, const char *id, const char *by, const char *note,
                         struct cb_strbuf *out)
{
    struct cmd_api_sources *d = ctx;
    int st = firing_or_error(d, id, out);
    if (st)
        return st;
    int rc = cb_engine_close(d->engine, id, by, note);
    if (rc < 0) {
        cb_strbuf_puts(out, "the alert could not be closed");
        return 500;
    }
    if (rc > 0) {
        cb_strbuf_printf(out, "alert '%s' is not stale: it resolves on evidence (acknowledge or "
                              "silence it instead)", id);
        return 409;
    }
    share(d, CMD_CONTROL_CLOSE, by, id, note, NULL);
    cb_strbuf_printf(out, "{\"id\":");
    cb_strbuf_json_string(out, id, strlen(id));
    cb_strbuf_puts(out, ",\"state\":\"resolved\",\"reason\":\"closed by hand\",\"by\":");
    cb_strbuf_json_string(out, by, strlen(by));
    cb_strbuf_putc(out, '}');
    return 200;
}

static int silences_list(void *ctx, struct cb_strbuf *out)
{
    struct cmd_api_sources *d = ctx;
    cb_strbuf_puts(out, "{\"silences\":");
    cb_alerts_silences_json(d->alerts, out);
    cb_strbuf_putc(out, '}');
    return 200;
}

static int silence_add(void *ctx, const struct cb_api_silence *s, struct cb_strbuf *out)
{
    struct cmd_api_sources *d = ctx;
    struct cb_silence_matcher *m = calloc(s->nmatchers ? s->nmatchers : 1, sizeof *m);
    if (!m) {
        cb_strbuf_puts(out, "out of memory");
        return 500;
    }
    for (size_t i = 0; i < s->nmatchers; i++)
        m[i] = (struct cb_silence_matcher){s->matchers[i].name, s->matchers[i].op,
                                           s->matchers[i].value};
    struct cb_silence_spec spec = {
        .matchers = m, .nmatchers = s->nmatchers, .starts = s->starts_ms, .ends = s->ends_ms,
        .comment = s->comment, .created_by = s->created_by,
    };
    int64_t id = 0;
    char err[300];
    int st = 201;
    if (cb_alerts_silence_add(d->alerts, &spec, &id, err, sizeof err)) {
        cb_strbuf_puts(out, err);
        st = 400;
    } else {
        cb_alerts_silence_json(d->alerts, id, out);
        share(d, CMD_CONTROL_SILENCE_CREATE, s->created_by, NULL, s->comment,
              out->oom ? NULL : out->data);
    }
    free(m);
    return st;
}

static int silence_end(void *ctx, const char *id, const char *by, const char *comment,
                       int deleted, struct cb_strbuf *out)
{
    struct cmd_api_sources *d = ctx;
    char *end;
    errno = 0;
    long long v = strtoll(id, &end, 10);
    if (errno || end == id || *end || v <= 0 ||
        cb_alerts_silence_expire(d->alerts, v, by, comment,
                                 deleted ? CB_AUDIT_SILENCE_DELETE : CB_AUDIT_SILENCE_EXPIRE) < 0) {
        cb_strbuf_printf(out, "no silence '%s' (an ended silence is listed for 24 hours after "
                              "its end; `citybrain silence list --all` reads older ones)",
                         id);
        return 404;
    }
    cb_alerts_silence_json(d->alerts, v, out);
    share(d, CMD_CONTROL_SILENCE_EXPIRE, by, NULL, comment, out->oom ? NULL : out->data);
    return 200;
}

static int rules_list(void *ctx, struct cb_strbuf *out)
{
    struct cmd_api_sources *d = ctx;
    cb_strbuf_puts(out, "{\"rules\":");
    cb_engine_rules_json(d->engine, out);
    cb_strbuf_putc(out, '}');
    return 200;
}

static int rules_reload(void *ctx, const char *by, const char *note, struct cb_strbuf *out)
{
    struct cmd_api_sources *d = ctx;
    struct cb_diags diags = {0};
    if (d->reload_rules(d->reload_ctx, CMD_RELOAD_API, by, note, &diags)) {
        cb_strbuf_printf(out, "{\"ok\":false,\"error\":\"the rules have %zu error(s); the "
                              "running rules go on\",\"diagnostics\":",
                         diags.errors);
        cb_diags_render_json(&diags, out);
        cb_strbuf_putc(out, '}');
        cb_diags_free(&diags);
        return 422;
    }
    cb_diags_free(&diags);
    cb_strbuf_printf(out, "{\"ok\":true,\"rules\":%zu}", cb_engine_rule_count(d->engine));
    return 200;
}

/* Alerts by state and severity, and the notification outbox, for /metrics. */
struct count_ctx {
    size_t n[2][4]; /* [pending, firing][severity] */
};

static void count_one(void *ctx, const struct cb_transition *t)
{
    struct count_ctx *c = ctx;
    c->n[t->state == CB_ALERT_PENDING ? 0 : 1][t->severity & 3]++;
}

static void metrics(void *ctx, struct cb_strbuf *out)
{
    struct cmd_api_sources *d = ctx;
    struct count_ctx c;
    memset(&c, 0, sizeof c);
    cb_engine_foreach_instance(d->engine, count_one, &c);
    cb_strbuf_puts(out, "# HELP citybrain_alerts alert instances by state and severity\n"
                        "# TYPE citybrain_alerts gauge\n");
    static const char *const states[2] = {"pending", "firing"};
    for (int s = 0; s < 2; s++)
        for (int v = 0; v < 4; v++)
            cb_strbuf_printf(out, "citybrain_alerts{state=\"%s\",severity=\"%s\"} %zu\n", states[s],
                             cb_severity_name((enum cb_severity)v), c.n[s][v]);
    struct cb_alerts_stats as;
    cb_alerts_get_stats(d->alerts, &as);
    cb_strbuf_printf(out,
                     "# HELP citybrain_notify_outbox_depth webhook deliveries not yet acknowledged\n"
                     "# TYPE citybrain_notify_outbox_depth gauge\n"
                     "citybrain_notify_outbox_depth %zu\n"
                     "# HELP citybrain_notifications_total notifications sent, after storm grouping\n"
                     "# TYPE citybrain_notifications_total counter\n"
                     "citybrain_notifications_total %llu\n"
                     "# HELP citybrain_notifications_grouped_total transitions folded into a storm group\n"
                     "# TYPE citybrain_notifications_grouped_total counter\n"
                     "citybrain_notifications_grouped_total %llu\n"
                     "# HELP citybrain_notifications_silenced_total transitions held by a silence\n"
                     "# TYPE citybrain_notifications_silenced_total counter\n"
                     "citybrain_notifications_silenced_total %llu\n"
                     "# HELP citybrain_webhook_deliveries_total webhook deliveries by result\n"
                     "# TYPE citybrain_webhook_deliveries_total counter\n"
                     "citybrain_webhook_deliveries_total{result=\"ok\"} %llu\n"
                     "citybrain_webhook_deliveries_total{result=\"failed\"} %llu\n"
                     "# HELP citybrain_notify_publish_failed_total MQTT channel notifications not handed to the broker\n"
                     "# TYPE citybrain_notify_publish_failed_total counter\n"
                     "citybrain_notify_publish_failed_total %llu\n",
                     as.outbox_pending, (unsigned long long)as.notifications,
                     (unsigned long long)as.grouped, (unsigned long long)as.silenced,
                     (unsigned long long)as.webhook_sent, (unsigned long long)as.webhook_failed,
                     (unsigned long long)as.publish_failed);
}

/* ---- pool threads ------------------------------------------------------------ */

struct readers {
    struct cb_store_reader *store;
    struct cb_alert_reader *alerts;
};

static void *reader_open(void *ctx, char *err, size_t errlen)
{
    struct cmd_api_sources *d = ctx;
    struct readers *r = calloc(1, sizeof *r);
    if (!r) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    r->store = cb_store_reader_open(d->cfg->storage_db, err, errlen);
    if (r->store)
        r->alerts = cb_alert_reader_open(d->cfg->storage_db, err, errlen);
    if (!r->store || !r->alerts) {
        if (r->store)
            cb_store_reader_close(r->store);
        free(r);
        return NULL;
    }
    return r;
}

static void reader_close(void *ctx, void *reader)
{
    (void)ctx;
    struct readers *r = reader;
    cb_store_reader_close(r->store);
    cb_alert_reader_close(r->alerts);
    free(r);
}

struct sensors_ctx {
    const struct cb_topic_pattern *pattern;
    struct cb_strbuf *out;
    int64_t now, stale_after;
    size_t n;
};

/* The degrees in the label value v (len bytes), within [-lim, lim]: 1 and
 * *out set, or 0 when v is not a plain decimal number in range. */
static int label_degrees(const char *v, size_t len, double lim, double *out)
{
    char buf[32];
    if (len == 0 || len >= sizeof buf)
        return 0;
    /* strtod alone would take " 1e1", "0x1f" or "infinity" too */
    for (size_t i = 0; i < len; i++)
        if (!((v[i] >= '0' && v[i] <= '9') || v[i] == '.' || (i == 0 && (v[i] == '-' || v[i] == '+'))))
            return 0;
    memcpy(buf, v, len);
    buf[len] = '\0';
    char *end;
    errno = 0;
    double d = strtod(buf, &end);
    if (*end || errno || !isfinite(d) || d < -lim || d > lim)
        return 0;
    *out = d;
    return 1;
}

/* Where the sensor is, for the console's map (docs/console.md, "The city
 * map file"): its own latest `lat` and `lon` readings, else its `lat` and
 * `lon` (or `latitude` and `longitude`) labels from the topic. Writes
 * "position":{"lat":..,"lon":..,"from":"reading"|"label"}, or null when
 * neither is known (the console then looks in the map file). */
static void sensor_position(struct cb_strbuf *out, const struct cb_sensor_info *s,
                            const struct cb_topic_capture *caps, int ncaps)
{
    const char *from = NULL;
    double lat = NAN, lon = NAN;
    for (size_t i = 0; i < s->nmetrics; i++) {
        const struct cb_sensor_metric *m = &s->metrics[i];
        if (m->last_ts != INT64_MIN && !strcmp(m->metric, "lat"))
            lat = m->last_value;
        else if (m->last_ts != INT64_MIN && !strcmp(m->metric, "lon"))
            lon = m->last_value;
    }
    if (isfinite(lat) && isfinite(lon) && fabs(lat) <= 90 && fabs(lon) <= 180) {
        from = "reading";
    } else {
        int has_lat = 0, has_lon = 0;
        for (int i = 0; i < ncaps; i++) {
            const char *n = caps[i].name;
            if (!strcmp(n, "lat") || !strcmp(n, "latitude"))
                has_lat = label_degrees(caps[i].value, caps[i].len, 90, &lat);
            else if (!strcmp(n, "lon") || !strcmp(n, "longitude"))
                has_lon = label_degrees(caps[i].value, caps[i].len, 180, &lon);
        }
        if (has_lat && has_lon)
            from = "label";
    }
    cb_strbuf_puts(out, ",\"position\":");
    if (!from) {
        cb_strbuf_puts(out, "null");
        return;
    }
    cb_strbuf_puts(out, "{\"lat\":");
    cb_strbuf_json_number(out, lat);
    cb_strbuf_puts(out, ",\"lon\":");
    cb_strbuf_json_number(out, lon);
    cb_strbuf_printf(out, ",\"from\":\"%s\"}", from);
}

static int sensor_one(void *ctx, const struct cb_sensor_info *s)
{
    struct sensors_ctx *c = ctx;
    struct cb_strbuf *out = c->out;
    if (c->n++)
        cb_strbuf_putc(out, ',');
    cb_strbuf_puts(out, "{\"topic\":");
    cb_strbuf_json_string(out, s->topic, strlen(s->topic));
    cb_strbuf_puts(out, ",\"device\":");
    cb_strbuf_json_string_or_null(out, s->device);
    cb_strbuf_puts(out, ",\"labels\":{");
    struct cb_topic_capture caps[CB_TOPIC_MAX_LEVELS];
    int ncaps = c->pattern ? cb_topic_pattern_match(c->pattern, s->topic, caps, CB_TOPIC_MAX_LEVELS)
                           : -1;
    for (int i = 0; i < ncaps; i++) {
        if (i)
            cb_strbuf_putc(out, ',');
        cb_strbuf_json_string(out, caps[i].name, strlen(caps[i].name));
        cb_strbuf_putc(out, ':');
        cb_strbuf_json_string(out, caps[i].value, caps[i].len);
    }
    cb_strbuf_puts(out, "},\"metrics\":{");
    int64_t last = INT64_MIN;
    for (size_t i = 0; i < s->nmetrics; i++) {
        const struct cb_sensor_metric *m = &s->metrics[i];
        if (i)
            cb_strbuf_putc(out, ',');
        cb_strbuf_json_string(out, m->metric, strlen(m->metric));
        cb_strbuf_puts(out, ":{\"ts\":");
        if (m->last_ts == INT64_MIN)
            cb_strbuf_puts(out, "null");
        else
            cb_strbuf_printf(out, "%lld", (long long)m->last_ts);
        cb_strbuf_puts(out, ",\"value\":");
        cb_strbuf_json_number(out, m->last_value);
        cb_strbuf_puts(out, ",\"unit\":");
        cb_strbuf_json_string_or_null(out, m->unit);
        cb_strbuf_putc(out, '}');
        if (m->last_ts > last)
            last = m->last_ts;
    }
    if (s->last_seen > last)
        last = s->last_seen;
    cb_strbuf_puts(out, "},\"last_ts\":");
    if (last == INT64_MIN)
        cb_strbuf_puts(out, "null");
    else
        cb_strbuf_printf(out, "%lld", (long long)last);
    int stale = last == INT64_MIN || c->now - last > c->stale_after;
    cb_strbuf_printf(out, ",\"stale\":%s", stale ? "true" : "false");
    sensor_position(out, s, caps, ncaps);
    cb_strbuf_putc(out, '}');
    return 0;
}

int cmd__sensors_json(struct cb_store_reader *r, const struct cb_topic_pattern *labels,
                      int64_t now_ms, int64_t stale_after_ms, struct cb_strbuf *out)
{
    struct sensors_ctx c = {labels, out, now_ms, stale_after_ms, 0};
    cb_strbuf_puts(out, "{\"sensors\":[");
    int rc = cb_store_list_sensors(r, sensor_one, &c);
    cb_strbuf_puts(out, "]}");
    return rc;
}

static int sensors(void *ctx, void *reader, int64_t now_ms, int64_t stale_after_ms,
                   struct cb_strbuf *out)
{
    struct cmd_api_sources *d = ctx;
    struct readers *r = reader;
    if (cmd__sensors_json(r->store, d->label_pattern, now_ms, stale_after_ms, out)) {
        cb_strbuf_reset(out);
        cb_strbuf_puts(out, "reading the sensors failed");
        return 500;
    }
    return 200;
}

struct series_ctx {
    struct cb_strbuf *out;
    size_t n;
    int64_t step;
};

static int bucket_one(void *ctx, const char *topic, const char *metric, const struct cb_bucket *b)
{
    (void)topic;
    (void)metric;
    struct series_ctx *c = ctx;
    if (c->n++)
        cb_strbuf_putc(c->out, ',');
    cb_strbuf_printf(c->out, "{\"ts\":%lld,\"count\":%llu,\"min\":", (long long)b->ts,
                     (unsigned long long)b->count);
    cb_strbuf_json_number(c->out, b->min);
    cb_strbuf_puts(c->out, ",\"max\":");
    cb_strbuf_json_number(c->out, b->max);
    cb_strbuf_puts(c->out, ",\"avg\":");
    cb_strbuf_json_number(c->out, b->count ? b->sum / (double)b->count : NAN);
    cb_strbuf_puts(c->out, ",\"last\":");
    cb_strbuf_json_number(c->out, b->last);
    if (b->span_ms > c->step) /* a whole rollup bucket, longer than the step */
        cb_strbuf_printf(c->out, ",\"span\":%lld", (long long)b->span_ms);
    cb_strbuf_putc(c->out, '}');
    return 0;
}

static int series(void *ctx, void *reader, const struct cb_api_series_query *q,
                  struct cb_strbuf *out)
{
    (void)ctx;
    struct readers *r = reader;
    cb_strbuf_puts(out, "{\"topic\":");
    cb_strbuf_json_string(out, q->topic, strlen(q->topic));
    cb_strbuf_puts(out, ",\"metric\":");
    cb_strbuf_json_string(out, q->metric, strlen(q->metric));
    cb_strbuf_printf(out, ",\"from\":%lld,\"to\":%lld,\"step\":%lld,\"buckets\":[",
                     (long long)q->from_ms, (long long)q->to_ms, (long long)q->step_ms);
    struct series_ctx c = {out, 0, q->step_ms};
    int rc = cb_store_query_buckets(r->store, q->topic, q->metric, q->from_ms, q->to_ms,
                                    q->step_ms, bucket_one, &c);
    cb_strbuf_puts(out, "]}");
    if (rc) {
        cb_strbuf_reset(out);
        cb_strbuf_puts(out, "reading the series failed");
        return 500;
    }
    return 200;
}

static int history(void *ctx, void *reader, const struct cb_api_history_query *q,
                   struct cb_strbuf *out)
{
    (void)ctx;
    struct readers *r = reader;
    if (cb_alerts_reader_history_json(r->alerts, q->from_ms, q->to_ms, q->rule, q->limit, out)) {
        cb_strbuf_reset(out);
        cb_strbuf_puts(out, "reading the alert history failed");
        return 500;
    }
    return 200;
}

/* Resolved instances live only in the store. */
static int alerts_resolved(void *ctx, void *reader, const struct cb_api_alert_filter *f,
                           struct cb_strbuf *out)
{
    (void)ctx;
    struct readers *r = reader;
    struct cb_alert_filter af = {.state = "resolved", .severity = f->severity, .rule = f->rule};
    cb_strbuf_puts(out, "{\"alerts\":");
    if (cb_alerts_reader_list_json(r->alerts, &af, out)) {
        cb_strbuf_reset(out);
        cb_strbuf_puts(out, "reading the resolved alerts failed");
        return 500;
    }
    cb_strbuf_putc(out, '}');
    return 200;
}

static int audit(void *ctx, void *reader, const struct cb_api_audit_query *q,
                 struct cb_strbuf *out)
{
    (void)ctx;
    struct readers *r = reader;
    if (q->action && !cb_alerts_audit_action_known(q->action)) {
        cb_strbuf_puts(out, "'action' must be ");
        cb_alerts_audit_actions_text(out);
        cb_strbuf_printf(out, ", not '%.40s'", q->action);
        return 400;
    }
    if (cb_alerts_reader_audit_json(r->alerts, q->from_ms, q->to_ms, q->action, q->limit, out)) {
        cb_strbuf_reset(out);
        cb_strbuf_puts(out, "reading the audit log failed");
        return 500;
    }
    return 200;
}

static int events_since(void *ctx, void *reader, uint64_t after_seq, size_t limit,
                        cb_api_event_fn emit, void *emit_ctx)
{
    (void)ctx;
    struct readers *r = reader;
    return cb_alert_reader_events_after(r->alerts, after_seq, limit, emit, emit_ctx);
}

/* ---- the Prometheus API (/api/v1) ---------------------------------------------- */

struct alerts_ctx {
    cb_api_prom_alert_fn fn;
    void *fctx;
};

/* Loop thread: pending and firing instances (escalated and acknowledged
 * ones fire too) for the ALERTS series. */
static void prom_alert_one(void *ctx, const struct cb_transition *t)
{
    struct alerts_ctx *c = ctx;
    if (t->state == CB_ALERT_RESOLVED)
        return;
    struct cb_api_label labels[64];
    size_t n = t->nlabels < 64 ? t->nlabels : 64;
    for (size_t i = 0; i < n; i++)
        labels[i] = (struct cb_api_label){t->labels[i].name, t->labels[i].value};
    struct cb_api_prom_alert a = {t->rule, cb_severity_name(t->severity),
                                  t->state != CB_ALERT_PENDING, t->since ? t->since : t->at,
                                  labels, n};
    c->fn(c->fctx, &a);
}

static void prom_alerts(void *ctx, cb_api_prom_alert_fn fn, void *fctx)
{
    struct cmd_api_sources *d = ctx;
    struct alerts_ctx c = {fn, fctx};
    cb_engine_foreach_instance(d->engine, prom_alert_one, &c);
}

struct prom_series_ctx {
    const struct cb_topic_pattern *pattern;
    cb_api_prom_series_fn fn;
    void *fctx;
};

static int prom_sensor(void *ctx, const struct cb_sensor_info *s)
{
    struct prom_series_ctx *c = ctx;
    struct cb_topic_capture caps[CB_TOPIC_MAX_LEVELS];
    struct cb_api_label labels[CB_TOPIC_MAX_LEVELS];
    char values[2048];
    size_t used = 0, n = 0;
    int ncaps = c->pattern ? cb_topic_pattern_match(c->pattern, s->topic, caps, CB_TOPIC_MAX_LEVELS)
                           : -1;
    for (int i = 0; i < ncaps; i++) {
        if (used + caps[i].len + 1 > sizeof values)
            break;
        memcpy(values + used, caps[i].value, caps[i].len);
        values[used + caps[i].len] = '\0';
        labels[n++] = (struct cb_api_label){caps[i].name, values + used};
        used += caps[i].len + 1;
    }
    for (size_t i = 0; i < s->nmetrics; i++) {
        const struct cb_sensor_metric *m = &s->metrics[i];
        struct cb_api_prom_series ps = {s->topic, m->metric, m->unit, labels, n, s->first_seen,
                                        m->last_ts != INT64_MIN ? m->last_ts : s->last_seen};
        if (c->fn(c->fctx, &ps))
            return 1;
    }
    return 0;
}

/* Every series; with `times` their last sample's time (a read per series),
 * else only the sensor's first and last seen (one statement). */
static int prom_series(void *ctx, void *reader, int times, cb_api_prom_series_fn fn, void *fctx)
{
    struct cmd_api_sources *d = ctx;
    struct readers *r = reader;
    struct prom_series_ctx c = {d->label_pattern, fn, fctx};
    return times ? cb_store_list_sensors(r->store, prom_sensor, &c)
                 : cb_store_list_sensors_brief(r->store, prom_sensor, &c);
}

struct prom_samples_ctx {
    cb_api_prom_sample_fn fn;
    void *fctx;
};

static int prom_sample_row(void *ctx, const char *topic, const char *metric, int64_t ts,
                           double value)
{
    (void)topic;
    (void)metric;
    struct prom_samples_ctx *c = ctx;
    return c->fn(c->fctx, ts, value);
}

/* The raw samples of one series with from <= ts <= to (the store's range
 * ends before `to`, so one more millisecond). */
static int prom_samples(void *ctx, void *reader, const char *topic, const char *metric,
                        int64_t from, int64_t to, cb_api_prom_sample_fn fn, void *fctx)
{
    (void)ctx;
    struct readers *r = reader;
    struct prom_samples_ctx c = {fn, fctx};
    return cb_store_query_raw(r->store, topic, metric, from, to == INT64_MAX ? to : to + 1,
                              prom_sample_row, &c);
}

/* The tier rows of one series with samples in from <= ts <= to (storage's
 * rows over [from, to + 1)). Where raw samples begin is taken from
 * storage.retention.raw (now minus it; none past retention when it is 0),
 * not asked of the store: the oldest raw sample of a series costs a scan of
 * the samples' open head. */
static int prom_rows(void *ctx, void *reader, const char *topic, const char *metric,
                     int64_t from, int64_t to, cb_api_prom_row_fn fn, void *fctx,
                     int64_t *raw_first)
{
    struct cmd_api_sources *d = ctx;
    struct readers *r = reader;
    int64_t keep = d->cfg->storage_retention_raw_ms;
    *raw_first = keep > 0 ? cb_wall_ms() - keep : INT64_MIN;
    return cb_store_query_rows(r->store, topic, metric, from, to == INT64_MAX ? to : to + 1, fn,
                               fctx, NULL);
}

/* A refused read (or a department's try outside its scope) in the audit
 * log: who asked, the route as target, the status and message as details. */
static void audit_refused(void *ctx, const char *who, const char *what, int status,
                          const char *why)
{
    struct cmd_api_sources *d = ctx;
    struct cb_strbuf det;
    cb_strbuf_init(&det);
    cb_strbuf_printf(&det, "{\"status\":%d,\"error\":", status);
    cb_strbuf_json_string(&det, why, strlen(why));
    cb_strbuf_putc(&det, '}');
    struct cb_audit_entry e = {CB_AUDIT_READ_REFUSED, who, what, NULL,
                               det.oom ? NULL : det.data};
    cb_alerts_audit(d->alerts, &e);
    cb_strbuf_free(&det);
}

void cmd__api_provider(struct cmd_api_sources *d, struct cb_api_provider *p)
{
    memset(p, 0, sizeof *p);
    p->ctx = d;
    p->health = health;
    p->alerts = alerts;
    p->alerts_version = alerts_version;
    p->ack = ack;
    p->close = close_by_hand;
    p->silences_list = silences_list;
    p->silence_add = silence_add;
    p->silence_end = silence_end;
    p->rules_list = rules_list;
    p->rules_reload = rules_reload;
    p->metrics = metrics;
    p->audit_refused = audit_refused;
    p->reader_open = reader_open;
    p->reader_close = reader_close;
    p->sensors = sensors;
    p->series = series;
    p->history = history;
    p->alerts_resolved = alerts_resolved;
    p->audit = audit;
    p->events_since = events_since;
    p->prom_alerts = prom_alerts;
    p->prom_series = prom_series;
    p->prom_samples = prom_samples;
    p->prom_rows = prom_rows;
}
