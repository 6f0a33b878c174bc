/* Alerts: persistence, silences, storm grouping and notification of the
 * engine's transitions (alerts.h, docs/alerts.md). */
#include "alerts/alerts_int.h"
#include "base/log.h"

#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* What the module remembers of a live instance: the acknowledgement (an
 * escalation keeps it, a new firing clears it) and a notification held by a
 * silence. Removed when the instance resolves or goes inactive. */
struct inst {
    char *acked_by, *ack_note;
    int64_t acked_at;
    int stale;           /* as the last transition told it (on_stale tells changes) */
    struct alerts__tcopy *held;
};

/* A storm group: the notifications of one rule and group key gathered until
 * `deadline`, sent as one. Groups form a FIFO (deadlines grow with creation). */
struct group {
    struct group *next;
    char *key; /* "rule\x1fgroupkey" */
    char *rule, *gkey;
    int64_t deadline;
    struct alerts__tcopy **items;
    size_t n, cap;
};

struct cb_alerts {
    uv_loop_t *loop;
    const char *origin; /* cb_alerts_audit_origin: fields added to audit details, or NULL */
    struct cb_alerts_hooks hooks;
    const struct cb_clock *clock;
    struct cb_channel *channels;
    size_t nchannels;
    char **default_notify;
    size_t ndefault;
    char *mqtt_prefix, *cap_sender;
    int64_t storm_window_ms;
    struct cb_alert_store *store;
    struct alerts__webhook *webhook;
    struct alerts__map insts;   /* id -> struct inst */
    struct alerts__map groups;  /* key -> struct group */
    struct alerts__map caprefs; /* notification id -> "sender,identifier,sent" */
    struct group *ghead, *gtail;
    struct alerts__silences sil;
    size_t held;
    uv_timer_t timer;
    int closing;
    void (*done)(void *);
    void *done_ctx;
    struct cb_alerts_stats stats;
    struct cb_strbuf buf;
    /* Alertmanager channels: the live instances last sent to one (id ->
     * struct alerts__tcopy), sent again each am_resend_ms (at am_next). */
    struct alerts__map am_active;
    int64_t am_resend_ms, am_next;
    char *console_url;
    /* one voice (docs/cluster.md): 0 while the twin does not hold the lease */
    int speaking;
    int feed_prefix_heard; /* a twin: it hears the feed, its own announcements too */
    int64_t feed_memory_ms;
    struct alerts__voice voice;
};

static int64_t now_ms(const struct cb_alerts *a) { return cb_clock_now(a->clock); }

/* ---- small helpers ---- */

static const char *state_name(enum cb_alert_state s)
{
    switch (s) {
    case CB_ALERT_PENDING: return "pending";
    case CB_ALERT_FIRING: return "firing";
    case CB_ALERT_ESCALATED: return "escalated";
    case CB_ALERT_RESOLVED: return "resolved";
    case CB_ALERT_ACKNOWLEDGED: return "acknowledged";
    default: return "inactive";
    }
}

/* The state as a CAP headline says it in language lang. */
static const char *state_word(enum cb_alert_state s, int lang)
{
    if (lang != CB_LANG_ZH)
        return state_name(s);
    switch (s) {
    case CB_ALERT_FIRING: return "发布";
    case CB_ALERT_ESCALATED: return "升级";
    case CB_ALERT_RESOLVED: return "解除";
    case CB_ALERT_ACKNOWLEDGED: return "已确认";
    default: return state_name(s);
    }
}

static const char *sev_name(enum cb_severity s)
{
    static const char *const n[] = {"info", "warning", "major", "critical"};
    return (int)s >= 0 && s <= CB_SEV_CRITICAL ? n[s] : "major";
}

static void labels_json(const struct cb_transition *t, struct cb_strbuf *b)
{
    cb_strbuf_putc(b, '{');
    for (size_t i = 0; i < t->nlabels; i++) {
        if (i)
            cb_strbuf_putc(b, ',');
        cb_strbuf_json_string(b, t->labels[i].name, strlen(t->labels[i].name));
        cb_strbuf_putc(b, ':');
        cb_strbuf_json_string(b, t->labels[i].value, strlen(t->labels[i].value));
    }
    cb_strbuf_putc(b, '}');
}

/* The event JSON: the rules.md object (cb_transition_to_json) with the
 * extension fields "grade" and, when a silence holds it, "silenced". */
/* Staleness changes with a PROGRESS record, which is no event: a change is
 * told to on_stale, so the live feed shows it at once. */
static void tell_stale(struct cb_alerts *a, struct inst *in, const struct cb_transition *t)
{
    int stale = t->stale != 0;
    if (t->state == CB_ALERT_PROGRESS && stale != in->stale && a->hooks.on_stale) {
        struct cb_strbuf *b = &a->buf;
        cb_strbuf_reset(b);
        cb_strbuf_puts(b, "{\"id\":");
        cb_strbuf_json_string(b, t->id, strlen(t->id));
        cb_strbuf_puts(b, ",\"rule\":");
        cb_strbuf_json_string(b, t->rule, strlen(t->rule));
        cb_strbuf_puts(b, ",\"labels\":"); /* a department's scope is judged by them */
        labels_json(t, b);
        cb_strbuf_printf(b, ",\"stale\":%s,\"at\":%lld}", stale ? "true" : "false",
                         (long long)t->at);
        if (!b->oom)
            a->hooks.on_stale(a->hooks.ctx, b->data, b->len);
    }
    in->stale = stale;
}

/* Appends texts (per language) to b as a JSON object and a NUL, for the
 * instance row (schema step 7). Returns its offset in b, or SIZE_MAX when no
 * language has a text (the row keeps NULL). */
static size_t texts_add(struct cb_strbuf *b, const char *const *texts)
{
    size_t at = b->len;
    if (!cb_lang_texts_json(texts, b))
        return SIZE_MAX;
    cb_strbuf_putc(b, '\0');
    return at;
}

/* Reads a stored texts object ({"en-US":…,"zh-CN":…}, or NULL) into out[]
 * (one per language, NULL where it has none; pointers into the returned
 * cJSON, which the caller deletes; NULL when there is nothing to delete). */
static cJSON *texts_parse(const char *json, const char *out[CB_LANGS])
{
    cJSON *o = json ? cJSON_Parse(json) : NULL;
    for (int l = 0; l < CB_LANGS; l++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, cb_lang_tag((enum cb_lang)l));
        out[l] = cJSON_IsString(v) ? v->valuestring : NULL;
    }
    return o;
}

static void event_json(const struct cb_transition *t, int64_t silenced, struct cb_strbuf *b)
{
    size_t start = b->len;
    cb_transition_to_json(t, b);
    if (b->oom || b->len == start || b->data[b->len - 1] != '}')
        return;
    b->len--;
    cb_strbuf_printf(b, ",\"grade\":\"%s\"", cb_alerts_severity_map(t->severity)->grade);
    if (silenced)
        cb_strbuf_printf(b, ",\"silenced\":%lld", (long long)silenced);
    cb_strbuf_putc(b, '}');
}

static const struct cb_channel *find_channel(const struct cb_alerts *a, const char *name)
{
    for (size_t i = 0; i < a->nchannels; i++)
        if (!strcmp(a->channels[i].name, name))
            return &a->channels[i];
    return NULL;
}

static void inst_free(void *p)
{
    struct inst *i = p;
    if (!i)
        return;
    free(i->acked_by);
    free(i->ack_note);
    alerts__tcopy_free(i->held);
    free(i);
}

static struct inst *inst_get(struct cb_alerts *a, const char *id)
{
    struct inst *i = alerts__map_get(&a->insts, id);
    if (i)
        return i;
    i = calloc(1, sizeof *i);
    if (i && alerts__map_put(&a->insts, id, i)) {
        free(i);
        return NULL;
    }
    return i;
}

static void set_str(char **dst, const char *src)
{
    free(*dst);
    *dst = src ? strdup(src) : NULL;
}

/* ---- silences ---- */

static int64_t silenced_by(const struct cb_alerts *a, const struct cb_transition *t, int64_t now)
{
    return alerts__silenced_by(&a->sil, t, now);
}

/* Appends a silence's matchers, start and end as the audit details. */
static void silence_details(const struct cb_silence_row *r, struct cb_strbuf *out)
{
    cb_strbuf_printf(out, "{\"matchers\":%s,\"starts\":%lld,\"ends\":%lld}", r->matchers,
                     (long long)r->starts, (long long)r->ends);
}

/* Records an action on silence `row` in the audit log. */
static void audit_silence(struct cb_alerts *a, const char *action, const char *who,
                          const char *note, const struct cb_silence_row *row)
{
    char target[24];
    snprintf(target, sizeof target, "%lld", (long long)row->id);
    struct cb_strbuf details;
    cb_strbuf_init(&details);
    silence_details(row, &details);
    struct cb_audit_entry e = {action, who, target, note, details.oom ? NULL : details.data};
    cb_alerts_audit(a, &e);
    cb_strbuf_free(&details);
}

int cb_alerts_silence_add(struct cb_alerts *a, const struct cb_silence_spec *spec, int64_t *id,
                          char *err, size_t errlen)
{
    struct alerts__silence *s = NULL;
    if (alerts__silence_new(spec, now_ms(a), &s, err, errlen))
        return -1;
    /* the id is taken once the silence is valid: a refused one uses none */
    alerts__silence_set_id(s, cb_alert_store_next_silence_id(a->store));
    if (alerts__silences_push(&a->sil, s)) {
        alerts__silence_free(s);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    struct cb_silence_row row;
    alerts__silence_row(s, &row);
    if (cb_alert_store_add_silence(a->store, &row))
        cb_warn("alert", "silence %lld: not persisted (out of memory)", (long long)row.id);
    cb_info("alert", "silence %lld created by %s, %lld to %lld: %s", (long long)row.id,
            row.created_by, (long long)row.starts, (long long)row.ends, row.matchers);
    audit_silence(a, CB_AUDIT_SILENCE_CREATE, row.created_by, row.comment, &row);
    *id = row.id;
    return 0;
}

static int release_held(void *ctx, void *value);

int cb_alerts_silence_expire(struct cb_alerts *a, int64_t id, const char *by,
                             const char *comment, const char *action)
{
    struct alerts__silence *s = alerts__silences_find(&a->sil, id);
    if (!s)
        return -1;
    struct cb_silence_row before;
    alerts__silence_row(s, &before);
    int64_t starts = before.starts, ends = before.ends;
    int rc = alerts__silence_end(s, now_ms(a), by && *by ? by : "?");
    if (rc)
        return rc > 0 ? 1 : -1;
    struct cb_silence_row row;
    alerts__silence_row(s, &row);
    if (cb_alert_store_expire_silence(a->store, &row))
        cb_warn("alert", "silence %lld: its end not persisted (out of memory)", (long long)id);
    cb_info("alert", "silence %lld ended by %s (%s)", (long long)id, row.expired_by, action);
    row.starts = starts; /* the audit keeps the window the operator cut short */
    row.ends = ends;
    audit_silence(a, action, row.expired_by, comment && *comment ? comment : NULL, &row);
    if (a->held) /* what it held goes out now, not at the next tick */
        alerts__map_sweep(&a->insts, release_held, a);
    return 0;
}

void cb_alerts_silences_json(struct cb_alerts *a, struct cb_strbuf *out)
{
    int64_t now = now_ms(a);
    cb_strbuf_putc(out, '[');
    for (size_t i = 0; i < a->sil.n; i++) {
        struct cb_silence_row row;
        alerts__silence_row(a->sil.v[i], &row);
        if (i)
            cb_strbuf_putc(out, ',');
        cb_alerts_silence_row_json(&row, now, out);
    }
    cb_strbuf_putc(out, ']');
}

int cb_alerts_silence_json(struct cb_alerts *a, int64_t id, struct cb_strbuf *out)
{
    const struct alerts__silence *s = alerts__silences_find(&a->sil, id);
    if (!s)
        return -1;
    struct cb_silence_row row;
    alerts__silence_row(s, &row);
    cb_alerts_silence_row_json(&row, now_ms(a), out);
    return 0;
}

static int load_silence(void *ctx, const struct cb_silence_row *r)
{
    struct cb_alerts *a = ctx;
    struct alerts__silence *s = NULL;
    char err[256];
    if (alerts__silence_load(r, &s, err, sizeof err)) {
        cb_warn("alert", "silence %lld ignored: %s", (long long)r->id, err);
        return 0;
    }
    if (alerts__silences_push(&a->sil, s))
        alerts__silence_free(s);
    return 0;
}

/* ---- the audit log ---- */

void cb_alerts_audit_origin(struct cb_alerts *a, const char *fields)
{
    a->origin = fields;
}

/* e's details with the origin's fields added (see cb_alerts_audit_origin),
 * into buf; e->details itself when there is no origin or on OOM. */
static const char *details_with_origin(const struct cb_alerts *a, const struct cb_audit_entry *e,
                                       struct cb_strbuf *buf)
{
    if (!a->origin)
        return e->details;
    size_t n = e->details ? strlen(e->details) : 0;
    while (n && e->details[n - 1] != '}')
        n--;
    if (n) {
        cb_strbuf_append(buf, e->details, n - 1);
        /* "{}" takes no comma */
        for (size_t i = 1; i + 1 < n; i++)
            if (!strchr(" \t\r\n", e->details[i])) {
                cb_strbuf_putc(buf, ',');
                break;
            }
    } else {
        cb_strbuf_putc(buf, '{');
    }
    cb_strbuf_puts(buf, a->origin);
    cb_strbuf_putc(buf, '}');
    return buf->oom ? e->details : buf->data;
}

int64_t cb_alerts_audit(struct cb_alerts *a, const struct cb_audit_entry *e)
{
    char err[160];
    struct cb_strbuf buf;
    cb_strbuf_init(&buf);
    struct cb_audit_entry with = *e;
    with.details = details_with_origin(a, e, &buf);
    int64_t seq = alerts__audit(a->store, now_ms(a), &with, err, sizeof err);
    cb_strbuf_free(&buf);
    if (seq < 0)
        cb_error("alert", "audit: %s", err);
    else
        cb_info("alert", "audit %lld: %s by %s%s%s%s%s", (long long)seq, e->action, e->who,
                e->target ? " on " : "", e->target ? e->target : "", e->note ? ": " : "",
                e->note ? e->note : "");
    return seq;
}

static int load_cap_ref(void *ctx, const char *notification, const char *ref)
{
    struct cb_alerts *a = ctx;
    char *copy = strdup(ref);
    if (!copy || alerts__map_put(&a->caprefs, notification, copy))
        free(copy);
    return 0;
}

/* ---- sending ---- */

/* Sends one rendered payload to one channel. `nid` names the notification's
 * alert (outbox alert_id), tseq the latest transition it carries. */
static void send_payload(struct cb_alerts *a, const struct cb_channel *c, const char *rule,
                         const char *nid, int64_t tseq, const char *body, size_t len)
{
    a->stats.notifications++;
    if (c->type == CB_CHANNEL_MQTT) {
        const char *prefix = c->prefix ? c->prefix : a->mqtt_prefix;
        struct cb_strbuf topic;
        cb_strbuf_init(&topic);
        cb_strbuf_printf(&topic, "%s/%s", prefix, rule);
        if (topic.oom || !a->hooks.publish ||
            a->hooks.publish(a->hooks.ctx, topic.data, body, len, 1)) {
            a->stats.publish_failed++;
            static struct cb_ratelimit rl = {.burst = 5, .interval_ms = 60000};
            cb_log_limited(&rl, CB_LOG_WARN, "alert", "channel %s: MQTT publish of %s failed",
                           c->name, nid);
        }
        cb_strbuf_free(&topic);
    } else if (c->type == CB_CHANNEL_WEBHOOK || c->type == CB_CHANNEL_ALERTMANAGER) {
        struct cb_outbox_row row = {
            .seq = cb_alert_store_next_outbox_seq(a->store),
            .channel = c->name,
            .transition_seq = tseq,
            .alert_id = nid,
            .content_type = c->format == CB_FORMAT_CAP ? "application/cap+xml"
                                                       : "application/json",
            /* an Alertmanager body is JSON too (format stays json) */
            .body = body,
            .attempts = 0,
            .next_attempt = now_ms(a),
        };
        /* The row is queued to the store before the first attempt, so the
         * "delivered" update can never reach the writer before the insert. */
        if (cb_alert_store_add_outbox(a->store, &row) || alerts__webhook_queue(a->webhook, &row))
            cb_error("alert", "channel %s: %s not queued (out of memory)", c->name, nid);
    }
}

/* Worst severity and the latest item of a notification. */
static enum cb_severity max_severity(struct alerts__tcopy *const *items, size_t n)
{
    enum cb_severity s = CB_SEV_INFO;
    for (size_t i = 0; i < n; i++)
        if (items[i]->t.severity > s)
            s = items[i]->t.severity;
    return s;
}

/* The JSON of a notification gathering several transitions: the latest
 * transition's object (so rule, state, severity, labels, at are present),
 * with severity raised to the group's worst, and the extension
 *   "group":{"key","count","states":{...},"alerts":[first 100 objects],"more":N}. */
static void group_json(const char *nid, const char *gkey, struct alerts__tcopy *const *items,
                       size_t n, struct cb_strbuf *b)
{
    const struct alerts__tcopy *last = items[n - 1];
    struct cb_transition t = last->t;
    size_t counts[6] = {0};
    t.severity = max_severity(items, n);
    t.id = nid;
    for (size_t i = 0; i < n; i++)
        counts[items[i]->t.state < 6 ? items[i]->t.state : 0]++;
    struct cb_strbuf msg;
    cb_strbuf_init(&msg);
    cb_strbuf_printf(&msg, "%zu alerts of %s", n, t.rule);
    if (*gkey)
        cb_strbuf_printf(&msg, " (%s)", gkey);
    for (int s = CB_ALERT_FIRING; s <= CB_ALERT_ACKNOWLEDGED; s++)
        if (counts[s])
            cb_strbuf_printf(&msg, ", %zu %s", counts[s], state_name((enum cb_alert_state)s));
    t.message = msg.data;
    for (int l = 0; l < CB_LANGS; l++)
        t.messages[l] = NULL; /* the members' own messages are in "alerts" */
    event_json(&t, 0, b);
    if (!b->oom && b->len && b->data[b->len - 1] == '}') {
        b->len--;
        cb_strbuf_puts(b, ",\"group\":{\"key\":");
        cb_strbuf_json_string(b, gkey, strlen(gkey));
        cb_strbuf_printf(b, ",\"count\":%zu,\"states\":{", n);
        int first = 1;
        for (int s = CB_ALERT_FIRING; s <= CB_ALERT_ACKNOWLEDGED; s++) {
            if (!counts[s])
                continue;
            cb_strbuf_printf(b, "%s\"%s\":%zu", first ? "" : ",",
                             state_name((enum cb_alert_state)s), counts[s]);
            first = 0;
        }
        cb_strbuf_puts(b, "},\"alerts\":[");
        size_t shown = n < 100 ? n : 100;
        for (size_t i = 0; i < shown; i++) {
            if (i)
                cb_strbuf_putc(b, ',');
            cb_strbuf_puts(b, items[i]->json);
        }
        cb_strbuf_printf(b, "],\"more\":%zu}}", n - shown);
    }
    cb_strbuf_free(&msg);
}

/* Renders the CAP message for a notification and remembers its reference for
 * the next message of the same notification id. */
static void cap_payload(struct cb_alerts *a, const char *nid, const char *gkey,
                        struct alerts__tcopy *const *items, size_t n, struct cb_strbuf *b)
{
    const struct alerts__tcopy *last = items[n - 1];
    const struct cb_transition **ts = malloc(n * sizeof *ts);
    if (!ts) {
        b->oom = 1;
        return;
    }
    for (size_t i = 0; i < n; i++)
        ts[i] = &items[i]->t;
    char ident[64], sent[32];
    snprintf(ident, sizeof ident, "citybrain-alert-%lld", (long long)last->seq);
    int64_t sent_ms = last->t.at;
    cb_cap_datetime(sent_ms, sent);
    char *prev = alerts__map_get(&a->caprefs, nid);
    enum cb_alert_state st = last->t.state;
    /* Alert opens (a firing with no live earlier message); escalations,
     * acknowledgements and re-firings update; a resolution cancels. */
    const char *type = st == CB_ALERT_RESOLVED                ? "Cancel"
                       : (st == CB_ALERT_FIRING && !prev) ? "Alert"
                                                          : "Update";
    const struct cb_transition *lt = &last->t;
    const char *title = lt->title ? lt->title : lt->rule;
    struct cb_cap_input in = {
        .identifier = ident, .sender = a->cap_sender, .sent_ms = sent_ms, .msg_type = type,
        .references = prev, .event = title, .severity = max_severity(items, n),
        .items = ts, .nitems = n, .rule = lt->rule, .state = state_name(st),
    };
    /* One <info> per language the rule gives texts in; one en-US block of
     * the plain texts otherwise. */
    struct cb_strbuf head[CB_LANGS], desc[CB_LANGS];
    int langs = 0;
    for (int l = 0; l < CB_LANGS; l++)
        langs |= lt->titles[l] || lt->messages[l] ? 1 << l : 0;
    for (int l = 0; l < CB_LANGS; l++) {
        cb_strbuf_init(&head[l]);
        cb_strbuf_init(&desc[l]);
        if (langs ? !(langs & 1 << l) : l != CB_LANG_EN)
            continue;
        int zh = l == CB_LANG_ZH;
        const char *tl = langs && lt->titles[l] ? lt->titles[l] : title;
        const char *ml = langs ? lt->messages[l] : lt->message;
        cb_strbuf_printf(&head[l], zh ? "%s：%s" : "%s: %s", tl, state_word(st, l));
        if (n > 1 && zh)
            cb_strbuf_printf(&desc[l], "%s 共 %zu 条告警%s%s%s", lt->rule, n, *gkey ? "（" : "",
                             gkey, *gkey ? "）" : "");
        else if (n > 1)
            cb_strbuf_printf(&desc[l], "%zu alerts of %s%s%s%s", n, lt->rule, *gkey ? " (" : "",
                             gkey, *gkey ? ")" : "");
        else if (ml)
            cb_strbuf_puts(&desc[l], ml);
        if (n > 200)
            cb_strbuf_printf(&desc[l], zh ? "；另有 %zu 个区域未列出" : "; %zu areas not listed",
                             n - 200);
        in.info[in.ninfo++] = (struct cb_cap_info){
            cb_lang_tag((enum cb_lang)l), tl, head[l].data, desc[l].len ? desc[l].data : NULL};
    }
    cb_cap_render(&in, b);
    free(alerts__map_del(&a->caprefs, nid));
    /* Kept in the store too: the next message may come after a restart. */
    if (st != CB_ALERT_RESOLVED) {
        struct cb_strbuf ref;
        cb_strbuf_init(&ref);
        cb_strbuf_printf(&ref, "%s,%s,%s", a->cap_sender, ident, sent);
        if (!ref.oom) {
            cb_alert_store_put_cap_ref(a->store, nid, ref.data);
            if (alerts__map_put(&a->caprefs, nid, ref.data) == 0)
                ref.data = NULL;
        }
        cb_strbuf_free(&ref);
    } else {
        cb_alert_store_put_cap_ref(a->store, nid, NULL);
    }
    for (int l = 0; l < CB_LANGS; l++) {
        cb_strbuf_free(&head[l]);
        cb_strbuf_free(&desc[l]);
    }
    free(ts);
}

/* ---- Alertmanager ---- */

static void arm_timer(struct cb_alerts *a);

/* Appends one postable alert for transition t (alertmanager.c). */
static void am_alert(struct cb_alerts *a, const struct cb_transition *t, struct cb_strbuf *b)
{
    alerts__am_alert(t, state_name(t->state), sev_name(t->severity),
                     cb_alerts_severity_map(t->severity)->grade, now_ms(a), a->am_resend_ms,
                     a->console_url, b);
}

/* The body for items: a JSON array with the latest transition of each
 * instance among them. Also remembers each live one for the resends (a
 * resolved one is forgotten). */
static void am_payload(struct cb_alerts *a, struct alerts__tcopy *const *items, size_t n,
                       struct cb_strbuf *b)
{
    struct alerts__map seen = {0};
    cb_strbuf_putc(b, '[');
    for (size_t i = n; i-- > 0;) {
        const struct cb_transition *t = &items[i]->t;
        if (alerts__map_get(&seen, t->id))
            continue;
        if (alerts__map_put(&seen, t->id, (void *)t)) {
            b->oom = 1;
            break;
        }
        if (b->len > 1)
            cb_strbuf_putc(b, ',');
        am_alert(a, t, b);
        struct alerts__tcopy *old = alerts__map_del(&a->am_active, t->id);
        alerts__tcopy_free(old);
        if (t->state == CB_ALERT_RESOLVED)
            continue;
        struct alerts__tcopy *c = alerts__tcopy_new(t, items[i]->seq, items[i]->json);
        if (!c || alerts__map_put(&a->am_active, t->id, c)) {
            alerts__tcopy_free(c);
            continue;
        }
        if (a->am_next == 0)
            a->am_next = now_ms(a) + a->am_resend_ms;
    }
    cb_strbuf_putc(b, ']');
    alerts__map_clear(&seen, NULL);
}

/* Sends one live instance again to each Alertmanager channel of its rule,
 * unless a delivery to that channel is still queued for it (a receiver that
 * is away gets one row per instance, not one per interval). Map sweep. */
static int am_resend(void *ctx, void *value)
{
    struct cb_alerts *a = ctx;
    struct alerts__tcopy *c = value;
    const char *const *names = c->t.nnotify ? c->t.notify : (const char *const *)a->default_notify;
    size_t nn = c->t.nnotify ? c->t.nnotify : a->ndefault;
    for (size_t i = 0; i < nn; i++) {
        const struct cb_channel *ch = find_channel(a, names[i]);
        if (!ch || ch->type != CB_CHANNEL_ALERTMANAGER ||
            alerts__webhook_busy(a->webhook, ch->name, c->t.id))
            continue;
        cb_strbuf_reset(&a->buf);
        cb_strbuf_putc(&a->buf, '[');
        am_alert(a, &c->t, &a->buf);
        cb_strbuf_putc(&a->buf, ']');
        if (!a->buf.oom)
            send_payload(a, ch, c->t.rule, c->t.id, c->seq, a->buf.data, a->buf.len);
    }
    return 0;
}

/* Whether t's rule notifies an Alertmanager channel. */
static int notifies_am(const struct cb_alerts *a, const struct cb_transition *t)
{
    const char *const *names = t->nnotify ? t->notify : (const char *const *)a->default_notify;
    size_t nn = t->nnotify ? t->nnotify : a->ndefault;
    for (size_t i = 0; i < nn; i++) {
        const struct cb_channel *c = find_channel(a, names[i]);
        if (c && c->type == CB_CHANNEL_ALERTMANAGER)
            return 1;
    }
    return 0;
}

void cb_alerts_am_adopt(void *ctx, const struct cb_transition *t)
{
    struct cb_alerts *a = ctx;
    if (t->state != CB_ALERT_FIRING && t->state != CB_ALERT_ESCALATED &&
        t->state != CB_ALERT_ACKNOWLEDGED)
        return;
    if (!notifies_am(a, t) || alerts__map_get(&a->am_active, t->id))
        return;
    struct alerts__tcopy *c = alerts__tcopy_new(t, 0, NULL);
    if (!c || alerts__map_put(&a->am_active, t->id, c)) {
        alerts__tcopy_free(c);
        return;
    }
    a->am_next = now_ms(a); /* at the next tick: Alertmanager hears of it again at once */
    arm_timer(a);
}

/* Sends every one again when the interval is over. */
static void am_tick(struct cb_alerts *a)
{
    int64_t now = now_ms(a);
    if (a->am_active.n == 0) {
        a->am_next = 0;
        return;
    }
    if (now < a->am_next)
        return;
    a->am_next = now + a->am_resend_ms;
    alerts__map_sweep(&a->am_active, am_resend, a);
}

/* Sends one notification gathering items (n >= 1, all of one rule and group)
 * to every channel of the rule except log channels (logged per event). */
static void notify(struct cb_alerts *a, const char *gkey, struct alerts__tcopy *const *items,
                   size_t n)
{
    const struct cb_transition *t = &items[n - 1]->t;
    const char *const *names = t->nnotify ? t->notify : (const char *const *)a->default_notify;
    size_t nn = t->nnotify ? t->nnotify : a->ndefault;
    int single = 1;
    for (size_t i = 1; i < n; i++)
        if (strcmp(items[i]->t.id, items[0]->t.id))
            single = 0;
    struct cb_strbuf nid, json, cap, am;
    cb_strbuf_init(&nid);
    cb_strbuf_init(&json);
    cb_strbuf_init(&cap);
    cb_strbuf_init(&am);
    if (single)
        cb_strbuf_puts(&nid, t->id);
    else
        cb_strbuf_printf(&nid, "%s/group:%s", t->rule, *gkey ? gkey : "*");
    if (n > 1)
        a->stats.grouped += n - 1;
    for (size_t i = 0; i < nn; i++) {
        const struct cb_channel *c = find_channel(a, names[i]);
        if (!c) {
            a->stats.unknown_channel++;
            static struct cb_ratelimit rl = {.burst = 5, .interval_ms = 60000};
            cb_log_limited(&rl, CB_LOG_WARN, "alert", "rule %s: unknown channel '%s'", t->rule,
                           names[i]);
            continue;
        }
        if (c->type == CB_CHANNEL_LOG)
            continue;
        struct cb_strbuf *body = c->type == CB_CHANNEL_ALERTMANAGER ? &am
                                 : c->format == CB_FORMAT_CAP       ? &cap
                                                                    : &json;
        if (!body->len) {
            if (c->type == CB_CHANNEL_ALERTMANAGER)
                am_payload(a, items, n, &am);
            else if (c->format == CB_FORMAT_CAP)
                cap_payload(a, nid.data, gkey, items, n, &cap);
            else if (n == 1)
                cb_strbuf_puts(&json, items[0]->json);
            else
                group_json(nid.data, gkey, items, n, &json);
        }
        if (body->oom || nid.oom) {
            cb_error("alert", "rule %s: notification dropped (out of memory)", t->rule);
            continue;
        }
        send_payload(a, c, t->rule, nid.data, items[n - 1]->seq, body->data, body->len);
    }
    cb_strbuf_free(&nid);
    cb_strbuf_free(&json);
    cb_strbuf_free(&cap);
    if (am.len)
        arm_timer(a); /* the first live instance starts the resends */
    cb_strbuf_free(&am);
}

/* The log channel: one line per event, never grouped. */
static void log_event(struct cb_alerts *a, const struct cb_transition *t, int64_t silenced)
{
    const char *const *names = t->nnotify ? t->notify : (const char *const *)a->default_notify;
    size_t nn = t->nnotify ? t->nnotify : a->ndefault;
    for (size_t i = 0; i < nn; i++) {
        const struct cb_channel *c = find_channel(a, names[i]);
        if (!c || c->type != CB_CHANNEL_LOG)
            continue;
        enum cb_log_level lvl = t->state == CB_ALERT_FIRING || t->state == CB_ALERT_ESCALATED
                                    ? CB_LOG_WARN
                                    : CB_LOG_INFO;
        cb_log(lvl, "alert", "%s %s severity=%s grade=%s%s%s%s%s", t->id, state_name(t->state),
               sev_name(t->severity), cb_alerts_severity_map(t->severity)->grade,
               t->message ? " message=\"" : "", t->message ? t->message : "",
               t->message ? "\"" : "", silenced ? " (silenced)" : "");
        if (c->type == CB_CHANNEL_LOG)
            a->stats.notifications++;
        break; /* one line per event even with several log channels */
    }
}

/* ---- storm groups ---- */

/* The group key of a transition (docs/alerts.md "Storm control"). An instance
 * id reads "RULE/KEY": for a group rule (`per district`) KEY is the per
 * labels as "district=d07[,name=value...]", and the group is that instance;
 * for a per-sensor rule KEY is not such a list and the group is the rule. */
static void group_key(const struct cb_transition *t, struct cb_strbuf *out)
{
    size_t rl = strlen(t->rule);
    const char *k = t->id;
    if (!strncmp(k, t->rule, rl) && k[rl] == '/')
        k += rl + 1;
    else
        return;
    /* every comma-separated part must be name=value with name a label */
    const char *p = k;
    if (!*p)
        return;
    while (*p) {
        size_t n = strcspn(p, ",");
        const char *eq = memchr(p, '=', n);
        if (!eq)
            return;
        int found = 0;
        for (size_t i = 0; i < t->nlabels && !found; i++)
            found = strlen(t->labels[i].name) == (size_t)(eq - p) &&
                    !strncmp(t->labels[i].name, p, (size_t)(eq - p));
        if (!found)
            return;
        p += n;
        if (*p == ',')
            p++;
    }
    cb_strbuf_puts(out, k);
}

static void group_free(struct group *g)
{
    for (size_t i = 0; i < g->n; i++)
        alerts__tcopy_free(g->items[i]);
    free(g->items);
    free(g->key);
    free(g->rule);
    free(g->gkey);
    free(g);
}


/* Storm control, leading edge first: the first transition of a group is sent
 * at once (an operator must not wait for a gas leak), and opens the group's
 * window; the transitions that follow within alerts.storm_window are gathered
 * and sent as one summary when the window ends. Takes c. */
static void gather(struct cb_alerts *a, struct alerts__tcopy *c)
{
    struct cb_strbuf gk, key;
    cb_strbuf_init(&gk);
    cb_strbuf_init(&key);
    group_key(&c->t, &gk);
    cb_strbuf_printf(&key, "%s\x1f%s", c->t.rule, gk.data ? gk.data : "");
    if (a->storm_window_ms <= 0 || key.oom || gk.oom) {
        notify(a, gk.data ? gk.data : "", &c, 1);
        alerts__tcopy_free(c);
        goto out;
    }
    struct group *g = alerts__map_get(&a->groups, key.data);
    if (!g) {
        g = calloc(1, sizeof *g);
        if (!g || !(g->key = strdup(key.data)) || !(g->rule = strdup(c->t.rule)) ||
            !(g->gkey = strdup(gk.data ? gk.data : "")) || alerts__map_put(&a->groups, key.data, g)) {
            if (g)
                group_free(g);
            notify(a, gk.data ? gk.data : "", &c, 1);
            alerts__tcopy_free(c);
            goto out;
        }
        g->deadline = now_ms(a) + a->storm_window_ms;
        if (a->gtail)
            a->gtail->next = g;
        else
            a->ghead = g;
        a->gtail = g;
        arm_timer(a);
        notify(a, g->gkey, &c, 1);
        alerts__tcopy_free(c);
        goto out;
    }
    if (g->n == g->cap) {
        size_t cap = g->cap ? g->cap * 2 : 4;
        struct alerts__tcopy **items = realloc(g->items, cap * sizeof *items);
        if (!items) {
            notify(a, g->gkey, &c, 1);
            alerts__tcopy_free(c);
            goto out;
        }
        g->items = items;
        g->cap = cap;
    }
    g->items[g->n++] = c;
    arm_timer(a);
out:
    cb_strbuf_free(&gk);
    cb_strbuf_free(&key);
}

/* Sends every group whose deadline has come (all when `all`). */
static void flush_groups(struct cb_alerts *a, int all)
{
    int64_t now = now_ms(a);
    while (a->ghead && (all || a->ghead->deadline <= now)) {
        struct group *g = a->ghead;
        a->ghead = g->next;
        if (!a->ghead)
            a->gtail = NULL;
        alerts__map_del(&a->groups, g->key);
        if (g->n) /* nothing followed the first: the window just closes */
            notify(a, g->gkey, g->items, g->n);
        group_free(g);
    }
}

/* Releases held notifications whose silence is over; drops expired silences. */
static int release_held(void *ctx, void *value)
{
    struct cb_alerts *a = ctx;
    struct inst *i = value;
    if (i->held && !silenced_by(a, &i->held->t, now_ms(a))) {
        struct alerts__tcopy *c = i->held;
        i->held = NULL;
        a->held--;
        gather(a, c);
    }
    return 0;
}

void cb_alerts_tick(struct cb_alerts *a)
{
    int64_t now = now_ms(a);
    alerts__silences_sweep(&a->sil, now - CB_SILENCE_LISTED_AFTER_END_MS);
    if (a->held)
        alerts__map_sweep(&a->insts, release_held, a);
    flush_groups(a, 0);
    am_tick(a);
}

static void on_timer(uv_timer_t *h)
{
    struct cb_alerts *a = h->data;
    cb_alerts_tick(a);
    arm_timer(a);
}

/* Wakes the loop when the first group is due, or each second while
 * notifications are held (to notice a silence ending). The timer is unref'd:
 * it never keeps the loop alive by itself. */
static void arm_timer(struct cb_alerts *a)
{
    if (a->closing)
        return;
    int64_t delay = -1;
    if (a->ghead) {
        delay = a->ghead->deadline - now_ms(a);
        if (delay < 1)
            delay = 1;
    }
    if (a->held && (delay < 0 || delay > 1000))
        delay = 1000;
    if (a->am_active.n && a->am_next) {
        int64_t d = a->am_next - now_ms(a);
        d = d < 1 ? 1 : d;
        if (delay < 0 || d < delay)
            delay = d;
    }
    if (delay < 0) {
        uv_timer_stop(&a->timer);
        return;
    }
    uint64_t due = uv_now(a->loop) + (uint64_t)delay;
    if (uv_is_active((uv_handle_t *)&a->timer) && uv_timer_get_due_in(&a->timer) + uv_now(a->loop) <= due)
        return;
    uv_timer_start(&a->timer, on_timer, (uint64_t)delay, 0);
}

/* ---- transitions ---- */

void cb_alerts_transition_cb(void *ctx, const struct cb_transition *t)
{
    cb_alerts_on_transition(ctx, t);
}

/* An acknowledgement, or a stale instance closed by hand, is an operator
 * action: recorded in the audit log with the instance's rule and severity at
 * that moment. */
static void audit_operator(struct cb_alerts *a, const struct cb_transition *t)
{
    int close = t->state == CB_ALERT_RESOLVED;
    const char *by = close ? t->closed_by : t->acked_by;
    struct cb_strbuf d;
    cb_strbuf_init(&d);
    cb_strbuf_puts(&d, "{\"rule\":");
    cb_strbuf_json_string(&d, t->rule, strlen(t->rule));
    cb_strbuf_printf(&d, ",\"severity\":\"%s\"}", sev_name(t->severity));
    struct cb_audit_entry e = {close ? CB_AUDIT_CLOSE : CB_AUDIT_ACK, by && *by ? by : "?", t->id,
                               close ? t->close_note : t->ack_note, d.oom ? NULL : d.data};
    cb_alerts_audit(a, &e);
    cb_strbuf_free(&d);
}

/* Sends one event to people and machines, as the twin that speaks: the
 * alert feed, then the rule's channels (held while a silence holds it,
 * gathered in storms). Takes c; feed (len bytes) is borrowed. */
static void speak(struct cb_alerts *a, struct alerts__tcopy *c, const char *feed, size_t len)
{
    if (a->hooks.feed && a->hooks.feed(a->hooks.ctx, c->t.rule, feed, len))
        a->stats.feed_failed++;
    if (a->feed_prefix_heard) { /* a twin: its own echo must not count as the other's */
        struct cb_strbuf key;
        cb_strbuf_init(&key);
        alerts__voice_key(c->t.id, state_name(c->t.state), sev_name(c->t.severity), &key);
        if (key.oom || alerts__voice_said(&a->voice, key.data, c->t.since, now_ms(a)))
            cb_error("alert", "%s: announcement not remembered (out of memory)", c->t.id);
        cb_strbuf_free(&key);
    }
    struct inst *in = alerts__map_get(&a->insts, c->t.id);
    if (silenced_by(a, &c->t, now_ms(a))) {
        a->stats.silenced++;
        /* Held: only a firing or escalated notification is worth sending
         * when the silence ends; a resolution or ack drops what is held. */
        if (in && in->held) {
            alerts__tcopy_free(in->held);
            in->held = NULL;
            a->held--;
        }
        if (in && (c->t.state == CB_ALERT_FIRING || c->t.state == CB_ALERT_ESCALATED)) {
            in->held = c;
            a->held++;
            arm_timer(a);
        } else {
            alerts__tcopy_free(c);
        }
        return;
    }
    if (in && in->held) { /* superseded by this notification */
        alerts__tcopy_free(in->held);
        in->held = NULL;
        a->held--;
    }
    gather(a, c);
}


/* A silent twin's event: kept until the speaking twin is heard announcing
 * it on the feed, or this twin gains the lease. Takes c and feed. */
static void defer(struct cb_alerts *a, const struct cb_transition *t, struct alerts__tcopy *c,
                  char *feed)
{
    struct cb_strbuf key;
    cb_strbuf_init(&key);
    alerts__voice_key(t->id, state_name(t->state), sev_name(t->severity), &key);
    if (key.oom) {
        alerts__tcopy_free(c);
        free(feed);
    } else if (alerts__voice_defer(&a->voice, key.data, t->since, now_ms(a), feed, c) < 0) {
        cb_error("alert", "%s: not kept for a takeover (out of memory)", t->id);
    }
    cb_strbuf_free(&key);
}

void cb_alerts_set_voice(struct cb_alerts *a, int speaking)
{
    int gained = speaking && !a->speaking;
    a->speaking = speaking ? 1 : 0;
    if (!gained)
        return;
    alerts__voice_forget(&a->voice, now_ms(a) - a->feed_memory_ms);
    size_t n = 0;
    struct alerts__deferred *d;
    while ((d = alerts__voice_pop(&a->voice))) {
        speak(a, d->c, d->feed, strlen(d->feed));
        d->c = NULL;
        alerts__voice_deferred_free(d);
        n++;
    }
    a->stats.takeover_announced += n;
    cb_info("alert", "speaking: %zu event(s) the other twin had not announced", n);
}

int cb_alerts_feed_heard(struct cb_alerts *a, const char *json, size_t len)
{
    cJSON *o = cJSON_ParseWithLength(json, len);
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(o, "id");
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(o, "state");
    const cJSON *sev = cJSON_GetObjectItemCaseSensitive(o, "severity");
    const cJSON *since = cJSON_GetObjectItemCaseSensitive(o, "since");
    int rc = -1;
    if (cJSON_IsString(id) && cJSON_IsString(st) && cJSON_IsString(sev)) {
        struct cb_strbuf key;
        cb_strbuf_init(&key);
        alerts__voice_key(id->valuestring, st->valuestring, sev->valuestring, &key);
        int64_t s = cJSON_IsNumber(since) ? (int64_t)since->valuedouble : 0;
        if (!key.oom && alerts__voice_echo(&a->voice, key.data, s))
            rc = 0; /* this twin's own announcement coming back */
        else if (!key.oom)
            rc = alerts__voice_heard(&a->voice, key.data, s, now_ms(a)) < 0 ? -1 : 0;
        cb_strbuf_free(&key);
        /* forget what is older than the memory, now and then */
        if ((a->voice.heard_total & 1023) == 0)
            alerts__voice_forget(&a->voice, now_ms(a) - a->feed_memory_ms);
    }
    cJSON_Delete(o);
    return rc;
}

void cb_alerts_on_transition(struct cb_alerts *a, const struct cb_transition *t)
{
    a->stats.transitions++;
    struct inst *in = inst_get(a, t->id);
    if (!in) {
        cb_error("alert", "%s: out of memory", t->id);
        return;
    }
    const char *row_state = "firing";
    switch (t->state) {
    case CB_ALERT_PENDING: row_state = "pending"; break;
    case CB_ALERT_FIRING: /* a new firing: any earlier acknowledgement is void */
        set_str(&in->acked_by, NULL);
        set_str(&in->ack_note, NULL);
        in->acked_at = 0;
        break;
    case CB_ALERT_ACKNOWLEDGED:
        set_str(&in->acked_by, t->acked_by ? t->acked_by : "");
        set_str(&in->ack_note, t->ack_note);
        in->acked_at = t->at;
        audit_operator(a, t);
        break;
    case CB_ALERT_RESOLVED:
        row_state = "resolved";
        if (t->closed_by)
            audit_operator(a, t);
        /* No more resends to Alertmanager, even when a silence holds the
         * resolution back: there it then ends by itself (endsAt). */
        alerts__tcopy_free(alerts__map_del(&a->am_active, t->id));
        break;
    case CB_ALERT_INACTIVE: row_state = "inactive"; break;
    default: break;
    }
    struct cb_strbuf *b = &a->buf;
    cb_strbuf_reset(b);
    labels_json(t, b);
    cb_strbuf_putc(b, '\0');
    size_t titles = texts_add(b, t->titles), messages = texts_add(b, t->messages);
    struct cb_alert_row row = {
        .id = t->id, .rule = t->rule, .labels = b->data, .state = row_state,
        .severity = sev_name(t->severity), .since = t->since, .at = t->at,
        .message = t->message, .acked_by = in->acked_by, .acked_at = in->acked_at,
        .ack_note = in->ack_note, .cooldown_until = t->cooldown_until,
        .updated = now_ms(a), .fired_at = t->fired_at, .clear_since = t->clear_since,
        .stale = (t->stale ? 1 : 0) | (t->unknown ? 2 : 0), .rule_key = t->rule_key,
        .titles = titles == SIZE_MAX ? NULL : b->data + titles,
        .messages = messages == SIZE_MAX ? NULL : b->data + messages,
    };
    if (b->oom || cb_alert_store_put_instance(a->store, &row))
        cb_error("alert", "%s: instance not persisted (out of memory)", t->id);
    tell_stale(a, in, t);

    if (cb_transition_is_event(t)) {
        a->stats.events++;
        int64_t sil = silenced_by(a, t, now_ms(a));
        int64_t seq = cb_alert_store_next_transition_seq(a->store);
        cb_strbuf_reset(b);
        event_json(t, sil, b);
        if (b->oom) {
            cb_error("alert", "%s: transition dropped (out of memory)", t->id);
            goto done;
        }
        if (cb_alert_store_add_transition(a->store, seq, t->id, t->rule, state_name(t->state),
                                          sev_name(t->severity), t->at, b->data))
            cb_error("alert", "%s: transition not persisted (out of memory)", t->id);
        if (a->hooks.on_event)
            a->hooks.on_event(a->hooks.ctx, (uint64_t)seq, b->data, b->len);
        log_event(a, t, sil);
        cb_strbuf_reset(b);
        event_json(t, 0, b);
        struct alerts__tcopy *c = b->oom ? NULL : alerts__tcopy_new(t, seq, b->data);
        struct cb_strbuf feed;
        cb_strbuf_init(&feed);
        cb_transition_to_json(t, &feed);
        if (!c || feed.oom) {
            cb_error("alert", "%s: notification dropped (out of memory)", t->id);
            alerts__tcopy_free(c);
            cb_strbuf_free(&feed);
        } else if (a->speaking) {
            speak(a, c, feed.data, feed.len);
            cb_strbuf_free(&feed);
        } else {
            defer(a, t, c, feed.data); /* takes both */
        }
    }
done:
    if (t->state == CB_ALERT_RESOLVED || t->state == CB_ALERT_INACTIVE) {
        /* its held notification, if any, dies with it */
        struct inst *gone = alerts__map_del(&a->insts, t->id);
        if (gone && gone->held)
            a->held--;
        inst_free(gone);
    }
}

/* ---- restart ---- */

struct load_ctx {
    struct cb_alerts *a;
    cb_alerts_load_fn fn;
    void *ctx;
    int n;
};

static int load_row(void *arg, const struct cb_alert_row *r)
{
    struct load_ctx *lc = arg;
    struct cb_transition t = {0};
    cJSON *labels = cJSON_Parse(r->labels ? r->labels : "{}");
    size_t nl = (size_t)cJSON_GetArraySize(labels);
    struct cb_label *lab = calloc(nl ? nl : 1, sizeof *lab);
    if (!lab) {
        cJSON_Delete(labels);
        return 0;
    }
    size_t k = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, labels)
    {
        if (cJSON_IsString(it) && it->string && k < nl) {
            lab[k].name = it->string;
            lab[k].value = it->valuestring;
            k++;
        }
    }
    t.id = r->id;
    t.rule = r->rule;
    t.state = !strcmp(r->state, "pending")    ? CB_ALERT_PENDING
              : !strcmp(r->state, "resolved") ? CB_ALERT_RESOLVED
                                              : CB_ALERT_FIRING;
    if (cb_alerts_severity_from_name(r->severity, &t.severity))
        t.severity = CB_SEV_MAJOR;
    t.labels = lab;
    t.nlabels = k;
    t.at = r->at;
    t.since = r->since;
    t.message = r->message;
    t.acked_by = r->acked_by;
    t.ack_note = r->ack_note;
    t.cooldown_until = r->cooldown_until;
    t.fired_at = r->fired_at;
    t.clear_since = r->clear_since;
    t.stale = r->stale & 1;
    t.unknown = (r->stale & 2) != 0;
    t.rule_key = r->rule_key;
    cJSON *titles = texts_parse(r->titles, t.titles);
    cJSON *messages = texts_parse(r->messages, t.messages);
    if (t.state == CB_ALERT_RESOLVED) { /* only a cooldown still running matters */
        if (r->cooldown_until > now_ms(lc->a))
            lc->fn(lc->ctx, &t, 0, 0);
        goto done;
    }
    struct inst *in = inst_get(lc->a, r->id);
    if (in) {
        in->stale = t.stale;
        if (r->acked_by) {
            set_str(&in->acked_by, r->acked_by);
            set_str(&in->ack_note, r->ack_note);
            in->acked_at = r->acked_at;
        }
    }
    lc->fn(lc->ctx, &t, r->acked_by != NULL, r->acked_at);
    lc->n++;
done:
    cJSON_Delete(messages);
    cJSON_Delete(titles);
    free(lab);
    cJSON_Delete(labels);
    return 0;
}

int cb_alerts_load(struct cb_alerts *a, cb_alerts_load_fn fn, void *ctx)
{
    struct load_ctx lc = {a, fn, ctx, 0};
    struct cb_alert_reader *r = cb_alert_store_reader(a->store);
    cb_alerts_sync(a);
    const char *states[] = {"pending", "firing", "resolved"};
    for (int i = 0; i < 3; i++) {
        struct cb_alert_filter f = {.state = states[i], .limit = 10000000};
        if (cb_alert_reader_instances(r, &f, load_row, &lc)) {
            cb_error("alert", "loading alert instances: %s", cb_alert_reader_error(r));
            return -1;
        }
    }
    return lc.n;
}

/* ---- lists ---- */

struct list_ctx {
    struct cb_alerts *a;
    struct cb_strbuf *out;
    int first;
};

/* Whether a silence now matches a stored row (its labels parsed back). */
static int64_t row_silenced(struct cb_alerts *a, const struct cb_alert_row *r)
{
    if (!a || !a->sil.n)
        return 0;
    cJSON *labels = cJSON_Parse(r->labels ? r->labels : "{}");
    size_t nl = (size_t)cJSON_GetArraySize(labels), k = 0;
    struct cb_label *lab = calloc(nl ? nl : 1, sizeof *lab);
    int64_t id = 0;
    if (lab) {
        const cJSON *it;
        cJSON_ArrayForEach(it, labels) if (cJSON_IsString(it) && k < nl)
        {
            lab[k].name = it->string;
            lab[k++].value = it->valuestring;
        }
        struct cb_transition t = {.id = r->id, .rule = r->rule, .labels = lab, .nlabels = k};
        id = silenced_by(a, &t, now_ms(a));
    }
    free(lab);
    cJSON_Delete(labels);
    return id;
}

static int list_row(void *arg, const struct cb_alert_row *r)
{
    struct list_ctx *lc = arg;
    struct cb_strbuf *b = lc->out;
    enum cb_severity sev = CB_SEV_MAJOR;
    cb_alerts_severity_from_name(r->severity, &sev);
    cb_strbuf_puts(b, lc->first ? "{\"id\":" : ",{\"id\":");
    lc->first = 0;
    cb_strbuf_json_string(b, r->id, strlen(r->id));
    cb_strbuf_puts(b, ",\"rule\":");
    cb_strbuf_json_string(b, r->rule, strlen(r->rule));
    cb_strbuf_printf(b, ",\"state\":\"%s\",\"severity\":\"%s\",\"grade\":\"%s\",\"labels\":%s",
                     r->state, r->severity, cb_alerts_severity_map(sev)->grade,
                     r->labels ? r->labels : "{}");
    cb_strbuf_printf(b, ",\"since\":%lld,\"at\":%lld,\"message\":", (long long)r->since,
                     (long long)r->at);
    cb_strbuf_json_string_or_null(b, r->message);
    if (r->titles)
        cb_strbuf_printf(b, ",\"titles\":%s", r->titles);
    if (r->messages)
        cb_strbuf_printf(b, ",\"messages\":%s", r->messages);
    cb_strbuf_printf(b, ",\"acknowledged\":%s,\"acked_by\":", r->acked_by ? "true" : "false");
    cb_strbuf_json_string_or_null(b, r->acked_by);
    cb_strbuf_printf(b, ",\"acked_at\":%lld,\"ack_note\":", (long long)r->acked_at);
    cb_strbuf_json_string_or_null(b, r->ack_note);
    cb_strbuf_printf(b, ",\"cooldown_until\":%lld", (long long)r->cooldown_until);
    int64_t sil = row_silenced(lc->a, r);
    if (sil)
        cb_strbuf_printf(b, ",\"silenced\":%lld", (long long)sil);
    cb_strbuf_putc(b, '}');
    return 0;
}

/* Appends the JSON array of rows matching f from reader r (a: for silences,
 * may be NULL). Used by the API lists and the CLI. */
static int list_json(struct cb_alerts *a, struct cb_alert_reader *r,
                      const struct cb_alert_filter *f, struct cb_strbuf *out)
{
    size_t start = out->len;
    struct list_ctx lc = {a, out, 1};
    cb_strbuf_putc(out, '[');
    int rc = cb_alert_reader_instances(r, f, list_row, &lc);
    if (rc) {
        out->len = start;
        cb_strbuf_putc(out, '[');
    }
    cb_strbuf_putc(out, ']');
    return rc;
}

int cb_alerts_reader_list_json(struct cb_alert_reader *r, const struct cb_alert_filter *f,
                               struct cb_strbuf *out)
{
    return list_json(NULL, r, f, out);
}

int cb_alerts_list_json(struct cb_alerts *a, const char *state, const char *severity,
                        const char *rule, struct cb_strbuf *out)
{
    struct cb_alert_filter f = {.state = state, .severity = severity, .rule = rule};
    return list_json(a, cb_alert_store_reader(a->store), &f, out);
}

int cb_alerts_handover_json(struct cb_alerts *a, int64_t older_than_ms, struct cb_strbuf *out)
{
    struct cb_alert_filter f = {.state = "firing", .unacked_only = 1,
                                .since_before = now_ms(a) - older_than_ms};
    return list_json(a, cb_alert_store_reader(a->store), &f, out);
}

int cb_alerts_history_json(struct cb_alerts *a, int64_t from, int64_t to, struct cb_strbuf *out)
{
    return cb_alert_reader_history_json(cb_alert_store_reader(a->store), from, to, 0, out);
}

struct hist_ctx {
    struct cb_strbuf *out;
    int n;
};

/* Splices "seq":N into the stored object: {"seq":N,"id":...}. */
static int hist_event(void *ctx, uint64_t seq, const char *json, size_t len)
{
    struct hist_ctx *h = ctx;
    if (len < 2 || json[0] != '{')
        return 0;
    cb_strbuf_printf(h->out, "%s{\"seq\":%llu,", h->n++ ? "," : "", (unsigned long long)seq);
    cb_strbuf_append(h->out, json + 1, len - 1);
    return 0;
}

int cb_alerts_reader_history_json(struct cb_alert_reader *r, int64_t from, int64_t to,
                                  const char *rule, size_t limit, struct cb_strbuf *out)
{
    struct hist_ctx h = {out, 0};
    size_t mark = alerts__list_begin(out, "transitions");
    int rc = cb_alert_reader_transitions(r, from, to, rule, 1, limit, hist_event, &h);
    return alerts__list_end(out, mark, "transitions", rc);
}

void cb_alerts_get_stats(struct cb_alerts *a, struct cb_alerts_stats *out)
{
    *out = a->stats;
    out->speaking = a->speaking;
    out->deferred = a->voice.ndeferred;
    out->heard = a->voice.heard_total;
    out->deferred_dropped = a->voice.dropped;
    out->outbox_pending = a->webhook ? alerts__webhook_pending(a->webhook) : 0;
    out->store_errors = cb_alert_store_errors(a->store, NULL, 0);
}

int cb_alerts_sync(struct cb_alerts *a) { return cb_alert_store_sync(a->store); }

/* ---- life cycle ---- */

static void tcopy_free_void(void *c) { alerts__tcopy_free(c); }

static void free_all(struct cb_alerts *a)
{
    alerts__map_clear(&a->insts, inst_free);
    for (struct group *g = a->ghead, *n; g; g = n) {
        n = g->next;
        group_free(g);
    }
    alerts__map_clear(&a->groups, NULL);
    alerts__map_clear(&a->caprefs, free);
    alerts__map_clear(&a->am_active, tcopy_free_void);
    free(a->console_url);
    alerts__silences_free(&a->sil);
    alerts__voice_free(&a->voice);
    cb_alert_store_close(a->store);
    cb_channels_free(a->channels, a->nchannels);
    for (size_t i = 0; i < a->ndefault; i++)
        free(a->default_notify[i]);
    free(a->default_notify);
    free(a->mqtt_prefix);
    free(a->cap_sender);
    cb_strbuf_free(&a->buf);
    free(a);
}

struct cb_alerts *cb_alerts_new(uv_loop_t *loop, const struct cb_config *cfg, const char *db_path,
                                const struct cb_alerts_hooks *hooks, char *err, size_t errlen)
{
    struct cb_alerts *a = calloc(1, sizeof *a);
    if (!a) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    a->loop = loop;
    if (hooks)
        a->hooks = *hooks;
    a->clock = a->hooks.clock ? a->hooks.clock : &cb_clock_wall;
    a->storm_window_ms = cfg->alerts_storm_window_ms;
    a->am_resend_ms = cfg->alerts_alertmanager_resend_ms;
    a->speaking = !*cfg->cluster_partition; /* a twin is silent until it holds the lease */
    a->feed_prefix_heard = *cfg->cluster_partition != 0;
    a->feed_memory_ms = cfg->cluster_feed_memory_ms;
    a->voice.max_deferred = 100000;
    a->voice.tolerance_ms = cfg->cluster_feed_tolerance_ms;
    if (cb_channels_from_config(cfg, &a->channels, &a->nchannels, err, errlen))
        goto fail;
    a->default_notify = calloc(cfg->alerts_default_notify.n + 1, sizeof *a->default_notify);
    a->mqtt_prefix = strdup(cfg->alerts_mqtt_prefix);
    a->cap_sender = strdup(cfg->alerts_cap_sender);
    a->console_url = strdup(cfg->alerts_console_url);
    if (!a->default_notify || !a->mqtt_prefix || !a->cap_sender || !a->console_url) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < cfg->alerts_default_notify.n; i++) {
        const char *n = cfg->alerts_default_notify.items[i];
        if (!(a->default_notify[a->ndefault++] = strdup(n))) {
            snprintf(err, errlen, "out of memory");
            goto fail;
        }
    }
    a->store = cb_alert_store_open(db_path, err, errlen);
    if (!a->store)
        goto fail;
    if (cb_alert_reader_silences(cb_alert_store_reader(a->store),
                                 now_ms(a) - CB_SILENCE_LISTED_AFTER_END_MS, load_silence, a)) {
        snprintf(err, errlen, "loading silences: %s",
                 cb_alert_reader_error(cb_alert_store_reader(a->store)));
        goto fail;
    }
    if (cb_alert_reader_cap_refs(cb_alert_store_reader(a->store), load_cap_ref, a)) {
        snprintf(err, errlen, "loading CAP references: %s",
                 cb_alert_reader_error(cb_alert_store_reader(a->store)));
        goto fail;
    }
    struct alerts__webhook_opts wo = {
        .timeout_ms = cfg->alerts_webhook_timeout_ms,
        .retry_min_ms = cfg->alerts_webhook_retry_min_ms,
        .retry_max_ms = cfg->alerts_webhook_retry_max_ms,
        .clock = a->clock, .store = a->store, .channels = a->channels,
        .nchannels = a->nchannels, .sent = &a->stats.webhook_sent,
        .failed = &a->stats.webhook_failed,
    };
    a->webhook = alerts__webhook_new(loop, &wo, err, errlen);
    if (!a->webhook)
        goto fail;
    uv_timer_init(loop, &a->timer);
    a->timer.data = a;
    uv_unref((uv_handle_t *)&a->timer);
    return a;
fail:
    free_all(a);
    return NULL;
}

static void on_timer_closed(uv_handle_t *h)
{
    struct cb_alerts *a = h->data;
    void (*done)(void *) = a->done;
    void *ctx = a->done_ctx;
    free_all(a);
    if (done)
        done(ctx);
}

static void on_webhook_closed(void *ctx)
{
    struct cb_alerts *a = ctx;
    a->webhook = NULL;
    uv_close((uv_handle_t *)&a->timer, on_timer_closed);
}

void cb_alerts_close(struct cb_alerts *a, void (*done)(void *ctx), void *ctx)
{
    if (!a)
        return;
    flush_groups(a, 1);
    a->closing = 1;
    a->done = done;
    a->done_ctx = ctx;
    uv_timer_stop(&a->timer);
    alerts__webhook_close(a->webhook, on_webhook_closed, a);
}
