/* Federation (see federation.h): the city tier's export, and operator
 * actions shared with the peer engines through the broker.
 *
 * Control messages are applied exactly once per engine: each carries an id
 * ("<origin>-<ms>-<n>"); an engine skips its own (origin) and any id it has
 * seen. The ids seen are kept in memory and, through the audit log (every
 * entry an applied action causes names its control_id), across restarts:
 * cmd__control_load_seen reads them back before the journal is replayed. */
#include "cmd/federation.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "cmd/api_provider.h"
#include "storage/alert_store.h"

void cmd__export_topic(struct cb_strbuf *out, const char *topic, const char *engine,
                       const struct cb_transition *t)
{
    cb_strbuf_reset(out);
    cb_strbuf_printf(out, "%s/%s/%s", topic, t->rule, engine);
    for (size_t i = 0; i < t->nlabels; i++) {
        const char *v = t->labels[i].value ? t->labels[i].value : "";
        cb_strbuf_putc(out, '/');
        if (!*v)
            cb_strbuf_putc(out, '_');
        for (; *v; v++)
            cb_strbuf_putc(out, strchr("/+#", *v) ? '_' : *v);
    }
}

int64_t cmd__export_stamp(const struct cb_transition *t, int64_t last_sweep_ms)
{
    int64_t at = t->last_sample ? t->last_sample : t->at;
    return last_sweep_ms && at <= last_sweep_ms ? last_sweep_ms + 1 : at;
}

int cmd__export_payload(struct cb_strbuf *out, const char *engine,
                        const struct cb_transition *t, int64_t at_ms)
{
    int active;
    switch (t->state) {
    case CB_ALERT_FIRING:
    case CB_ALERT_ESCALATED:
    case CB_ALERT_ACKNOWLEDGED: active = 1; break;
    case CB_ALERT_RESOLVED: active = 0; break;
    default: return -1;
    }
    cb_strbuf_reset(out);
    cb_strbuf_puts(out, "[{\"bn\":");
    char bn[512];
    int n = snprintf(bn, sizeof bn, "%s:%s", engine, t->id);
    cb_strbuf_json_string(out, bn, n < 0 ? 0 : (size_t)n < sizeof bn ? (size_t)n : sizeof bn - 1);
    cb_strbuf_puts(out, ",\"bt\":");
    cb_strbuf_json_number(out, (double)at_ms / 1000.0);
    cb_strbuf_printf(out, ",\"n\":\"active\",\"v\":%d},{\"n\":\"severity\",\"v\":%d}", active,
                     active ? (int)t->severity + 1 : 0);
    if (isfinite(t->value)) { /* unknown: no record, never a made-up 0 */
        cb_strbuf_puts(out, ",{\"n\":\"value\",\"v\":");
        cb_strbuf_json_number(out, t->value);
        cb_strbuf_putc(out, '}');
    }
    cb_strbuf_putc(out, ']');
    return 0;
}

/* At most this many ids are remembered in memory (the oldest go first);
 * far more than operators act in the 30 days the audit log is read for. */
#define SEEN_MAX 20000

/* Twins judge the same telemetry, but not at the same instant: an operator
 * may ack on A an alert B raises a moment later (or after a restart, once
 * its windows are full again). Such an ack or close waits for the alert
 * here instead of being lost; at most this many wait (the oldest is dropped
 * first, with a warning). In memory: a restart of this engine forgets them. */
#define WAITING_MAX 256

struct waiting {
    char *payload;    /* the control message, as received */
    int64_t until_ms; /* dropped after this */
};

struct cmd_control {
    char *topic, *origin;
    uint64_t next; /* the n of our ids */
    char **seen;   /* a ring of SEEN_MAX ids */
    size_t nseen, seen_at;
    struct cb_strbuf msg;
    int64_t wait_ms;
    struct waiting waiting[WAITING_MAX]; /* in arrival order */
    size_t nwaiting;
};

struct cmd_control *cmd__control_new(const char *topic, const char *origin, int64_t wait_ms)
{
    struct cmd_control *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->wait_ms = wait_ms;
    c->topic = strdup(topic);
    c->origin = strdup(origin);
    c->seen = calloc(SEEN_MAX, sizeof *c->seen);
    if (!c->topic || !c->origin || !c->seen) {
        cmd__control_free(c);
        return NULL;
    }
    return c;
}

void cmd__control_free(struct cmd_control *c)
{
    if (!c)
        return;
    for (size_t i = 0; c->seen && i < SEEN_MAX; i++)
        free(c->seen[i]);
    for (size_t i = 0; i < c->nwaiting; i++)
        free(c->waiting[i].payload);
    free(c->seen);
    free(c->topic);
    free(c->origin);
    cb_strbuf_free(&c->msg);
    free(c);
}

static int seen(const struct cmd_control *c, const char *id)
{
    for (size_t i = 0; i < c->nseen; i++)
        if (!strcmp(c->seen[i], id))
            return 1;
    return 0;
}

static void remember(struct cmd_control *c, const char *id)
{
    char *copy = strdup(id);
    if (!copy)
        return;
    free(c->seen[c->seen_at]);
    c->seen[c->seen_at] = copy;
    c->seen_at = (c->seen_at + 1) % SEEN_MAX;
    if (c->nseen < SEEN_MAX)
        c->nseen++;
}

long cmd__control_load_seen(struct cmd_control *c, const char *db_path, int64_t now_ms,
                            char *err, size_t errlen)
{
    struct cb_alert_reader *r = cb_alert_reader_open(db_path, err, errlen);
    if (!r)
        return -1;
    struct cb_strbuf out;
    cb_strbuf_init(&out);
    long n = -1;
    if (cb_alerts_reader_audit_json(r, now_ms - 30 * 86400000LL, now_ms + 86400000LL, NULL,
                                    SEEN_MAX, &out) ||
        out.oom) {
        snprintf(err, errlen, "cannot read the audit log");
        goto out;
    }
    cJSON *root = cJSON_Parse(out.data ? out.data : "");
    cJSON *entries = cJSON_GetObjectItem(root, "entries"), *e;
    n = 0;
    cJSON_ArrayForEach(e, entries) {
        const char *id = cJSON_GetStringValue(
            cJSON_GetObjectItem(cJSON_GetObjectItem(e, "details"), "control_id"));
        if (id && !seen(c, id)) {
            remember(c, id);
            n++;
        }
    }
    cJSON_Delete(root);
out:
    cb_strbuf_free(&out);
    cb_alert_reader_close(r);
    return n;
}

/* Appends ,"key":"s" (nothing when s is NULL). */
static void member(struct cb_strbuf *b, const char *key, const char *s)
{
    if (!s)
        return;
    cb_strbuf_printf(b, ",\"%s\":", key);
    cb_strbuf_json_string(b, s, strlen(s));
}

int cmd__control_share(struct cmd_control *c, struct cb_mqtt *mqtt, int64_t now_ms,
                       const char *action, const char *by, const char *target,
                       const char *note, const char *silence)
{
    char id[256];
    snprintf(id, sizeof id, "%s-%lld-%llu", c->origin, (long long)now_ms,
             (unsigned long long)++c->next);
    struct cb_strbuf *b = &c->msg;
    cb_strbuf_reset(b);
    cb_strbuf_puts(b, "{\"id\":");
    cb_strbuf_json_string(b, id, strlen(id));
    member(b, "origin", c->origin);
    cb_strbuf_printf(b, ",\"at\":%lld", (long long)now_ms);
    member(b, "action", action);
    member(b, "by", by);
    member(b, "target", target);
    member(b, "note", note && *note ? note : NULL);
    if (silence)
        cb_strbuf_printf(b, ",\"silence\":%s", silence);
    cb_strbuf_putc(b, '}');
    if (b->oom || !mqtt)
        return -1;
    return cb_mqtt_publish(mqtt, c->topic, b->data, b->len, 1, 0);
}

static const char *str(const cJSON *o, const char *key)
{
    return cJSON_GetStringValue(cJSON_GetObjectItem(o, key));
}

/* A peer's silence created here: the same matchers, times, comment and
 * author. */
static int apply_silence_create(const struct cmd_control_targets *t, const cJSON *sil,
                                char *err, size_t errlen)
{
    const cJSON *ms = cJSON_GetObjectItem(sil, "matchers"), *m;
    size_t n = (size_t)cJSON_GetArraySize(ms), i = 0;
    struct cb_silence_matcher *mv = calloc(n ? n : 1, sizeof *mv);
    if (!mv) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    cJSON_ArrayForEach(m, ms) {
        mv[i++] = (struct cb_silence_matcher){str(m, "name"), str(m, "op"), str(m, "value")};
    }
    struct cb_silence_spec spec = {
        .matchers = mv, .nmatchers = n,
        .starts = (int64_t)cJSON_GetNumberValue(cJSON_GetObjectItem(sil, "starts")),
        .ends = (int64_t)cJSON_GetNumberValue(cJSON_GetObjectItem(sil, "ends")),
        .comment = str(sil, "comment"), .created_by = str(sil, "created_by")};
    int64_t id;
    int rc = cb_alerts_silence_add(t->alerts, &spec, &id, err, errlen);
    free(mv);
    return rc;
}

/* A peer's silence ended here: the listed silence, not yet ended, with the
 * same matchers, end, comment and author (silence ids are each engine's
 * own). */
static int apply_silence_expire(const struct cmd_control_targets *t, const cJSON *sil,
                                const char *by, const char *note, char *err, size_t errlen)
{
    struct cb_strbuf list;
    cb_strbuf_init(&list);
    cb_alerts_silences_json(t->alerts, &list);
    cJSON *all = cJSON_Parse(list.data ? list.data : "[]"), *s;
    cb_strbuf_free(&list);
    int64_t id = 0;
    cJSON_ArrayForEach(s, all) {
        const char *state = str(s, "state");
        if (state && strcmp(state, "expired") &&
            cJSON_Compare(cJSON_GetObjectItem(s, "matchers"),
                          cJSON_GetObjectItem(sil, "matchers"), 1) &&
            cJSON_Compare(cJSON_GetObjectItem(s, "ends"), cJSON_GetObjectItem(sil, "ends"), 1) &&
            cJSON_Compare(cJSON_GetObjectItem(s, "comment"), cJSON_GetObjectItem(sil, "comment"),
                          1) &&
            cJSON_Compare(cJSON_GetObjectItem(s, "created_by"),
                          cJSON_GetObjectItem(sil, "created_by"), 1)) {
            id = (int64_t)cJSON_GetNumberValue(cJSON_GetObjectItem(s, "id"));
            break;
        }
    }
    cJSON_Delete(all);
    if (!id) {
        snprintf(err, errlen, "no active silence here matches the one ended");
        return -1;
    }
    return cb_alerts_silence_expire(t->alerts, id, by, note, CB_AUDIT_SILENCE_EXPIRE) < 0 ? -1
                                                                                          : 0;
}

/* apply_action's answer for an ack or close of an alert that does not fire here. */
#define NOT_FIRING_HERE 2

/* Applies one parsed action (see cmd__control_apply): 0, -1 with err, or
 * NOT_FIRING_HERE. */
static int apply_action(const struct cmd_control_targets *t, const cJSON *msg, char *err,
                        size_t errlen)
{
    const char *action = str(msg, "action"), *by = str(msg, "by"), *target = str(msg, "target");
    const char *note = str(msg, "note");
    const cJSON *sil = cJSON_GetObjectItem(msg, "silence");
    if (!action || !by) {
        snprintf(err, errlen, "no action or no by");
        return -1;
    }
    if (!strcmp(action, CMD_CONTROL_ACK) && target)
        return cb_engine_ack(t->engine, target, by, note) < 0 ? NOT_FIRING_HERE : 0;
    if (!strcmp(action, CMD_CONTROL_CLOSE) && target)
        return cb_engine_close(t->engine, target, by, note ? note : "") < 0 ? NOT_FIRING_HERE
                                                                            : 0;
    if (!strcmp(action, CMD_CONTROL_SILENCE_CREATE) && cJSON_IsObject(sil))
        return apply_silence_create(t, sil, err, errlen);
    if (!strcmp(action, CMD_CONTROL_SILENCE_EXPIRE) && cJSON_IsObject(sil))
        return apply_silence_expire(t, sil, by, note, err, errlen);
    if (!strcmp(action, CMD_CONTROL_RELOAD)) {
        struct cb_diags diags = {0};
        int rc = t->reload_rules(t->reload_ctx, CMD_RELOAD_CONTROL, by, note ? note : "", &diags);
        if (rc)
            snprintf(err, errlen, "the rules here have %zu error(s); the running rules go on",
                     diags.errors);
        cb_diags_free(&diags);
        return rc;
    }
    snprintf(err, errlen, "unknown action '%s'", action);
    return -1;
}

/* apply_action with every audit entry it causes naming the message's origin
 * and id. */
static int apply_from(const struct cmd_control_targets *t, const cJSON *msg, char *err,
                      size_t errlen)
{
    const char *id = str(msg, "id"), *origin = str(msg, "origin");
    struct cb_strbuf fields;
    cb_strbuf_init(&fields);
    cb_strbuf_puts(&fields, "\"origin\":");
    cb_strbuf_json_string(&fields, origin, strlen(origin));
    cb_strbuf_puts(&fields, ",\"control_id\":");
    cb_strbuf_json_string(&fields, id, strlen(id));
    cb_alerts_audit_origin(t->alerts, fields.oom ? NULL : fields.data);
    int rc = apply_action(t, msg, err, errlen);
    cb_alerts_audit_origin(t->alerts, NULL);
    cb_strbuf_free(&fields);
    return rc;
}

/* "ack of ID by WHO", for the log. */
static void describe(const cJSON *msg, char *out, size_t outlen)
{
    const char *action = str(msg, "action"), *target = str(msg, "target"), *by = str(msg, "by");
    snprintf(out, outlen, "%s of %s by %s", action ? action : "?", target ? target : "?",
             by ? by : "?");
}

static void drop_waiting(struct cmd_control *c, size_t i)
{
    free(c->waiting[i].payload);
    memmove(&c->waiting[i], &c->waiting[i + 1], (c->nwaiting - i - 1) * sizeof *c->waiting);
    c->nwaiting--;
}

/* Keeps payload until its alert fires here or until_ms; 0, or -1 on OOM. */
static int keep_waiting(struct cmd_control *c, const char *payload, size_t len, int64_t until_ms)
{
    if (c->nwaiting == WAITING_MAX) {
        cJSON *old = cJSON_Parse(c->waiting[0].payload);
        char what[256];
        describe(old, what, sizeof what);
        cJSON_Delete(old);
        cb_warn("control", "a peer engine's %s was not applied: more than %d actions wait for "
                           "their alerts here; the oldest is dropped",
                what, WAITING_MAX);
        drop_waiting(c, 0);
    }
    char *copy = malloc(len + 1);
    if (!copy)
        return -1;
    memcpy(copy, payload, len);
    copy[len] = '\0';
    c->waiting[c->nwaiting++] = (struct waiting){copy, until_ms};
    return 0;
}

int cmd__control_apply(struct cmd_control *c, const struct cmd_control_targets *t,
                       const char *payload, size_t len, int64_t now_ms, char *err,
                       size_t errlen)
{
    cJSON *msg = cJSON_ParseWithLength(payload, len);
    const char *id = str(msg, "id"), *origin = str(msg, "origin");
    int rc = 0;
    if (!id || !origin) {
        snprintf(err, errlen, "not a control message (no id or origin)");
        rc = -1;
        goto out;
    }
    if (!strcmp(origin, c->origin) || seen(c, id))
        goto out;
    remember(c, id);
    rc = apply_from(t, msg, err, errlen);
    if (rc == NOT_FIRING_HERE) {
        rc = 2;
        if (!c->wait_ms || keep_waiting(c, payload, len, now_ms + c->wait_ms)) {
            snprintf(err, errlen, "no such firing alert here");
            rc = -1;
        }
    } else {
        rc = rc ? -1 : 1;
    }
out:
    cJSON_Delete(msg);
    return rc;
}

int cmd__control_retry(struct cmd_control *c, const struct cmd_control_targets *t,
                       int64_t now_ms)
{
    int applied = 0;
    for (size_t i = 0; i < c->nwaiting;) {
        cJSON *msg = cJSON_Parse(c->waiting[i].payload);
        char err[256] = "", what[256];
        describe(msg, what, sizeof what);
        int rc = msg ? apply_from(t, msg, err, sizeof err) : -1;
        if (rc == NOT_FIRING_HERE && now_ms < c->waiting[i].until_ms) {
            cJSON_Delete(msg);
            i++;
            continue;
        }
        if (rc == 0) {
            applied++;
            cb_info("control", "a peer engine's %s applied: the alert fires here now", what);
        } else if (rc == NOT_FIRING_HERE) {
            cb_warn("control", "a peer engine's %s was not applied: the alert did not fire here "
                               "within federation.peer_action_wait",
                    what);
        } else {
            cb_warn("control", "a peer engine's %s was not applied: %s", what,
                    err[0] ? err : "not a control message");
        }
        cJSON_Delete(msg);
        drop_waiting(c, i);
    }
    return applied;
}

int64_t cmd__control_next_due(const struct cmd_control *c)
{
    int64_t due = INT64_MAX;
    for (size_t i = 0; i < c->nwaiting; i++)
        if (c->waiting[i].until_ms < due)
            due = c->waiting[i].until_ms;
    return due;
}
