/* The Alertmanager channel's payload (docs/alerts.md "Alertmanager"): the
 * body of POST /api/v2/alerts, a JSON array of postable alerts, one per alert
 * instance. Alertmanager knows an alert by its label set, so the labels are
 * the rule (alertname), the severity and the instance's labels; the texts go
 * in annotations. A firing alert carries endsAt = now + 4 resend intervals
 * (as Prometheus does with its resend delay): re-sent every interval, it
 * stays active in Alertmanager, and if citybrain goes away it ends there by
 * itself four intervals later. A resolved one carries endsAt = when it
 * resolved, which ends it at once. */
#include "alerts/alerts_int.h"

#include <stdio.h>
#include <string.h>

/* RFC 3339 in UTC with milliseconds, as Alertmanager (Go's time) reads it. */
static void rfc3339(struct cb_strbuf *b, int64_t ms)
{
    char s[32];
    cb_cap_datetime(ms, s); /* "YYYY-MM-DDTHH:MM:SS+00:00" */
    cb_strbuf_printf(b, "\"%.19s.%03dZ\"", s, (int)(ms % 1000));
}

/* Whether a label name is one Alertmanager accepts ([a-zA-Z_][a-zA-Z0-9_]*). */
static int am_name(const char *s)
{
    if (!*s || (*s >= '0' && *s <= '9'))
        return 0;
    return strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_") ==
           strlen(s);
}

static void member(struct cb_strbuf *b, int *first, const char *name, const char *value)
{
    if (!value)
        return;
    cb_strbuf_printf(b, "%s\"%s\":", *first ? "" : ",", name);
    cb_strbuf_json_string(b, value, strlen(value));
    *first = 0;
}

void alerts__am_alert(const struct cb_transition *t, const char *state, const char *severity,
                      const char *grade, int64_t now, int64_t resend_ms,
                      const char *console_url, struct cb_strbuf *b)
{
    int first = 1;
    cb_strbuf_puts(b, "{\"labels\":{");
    member(b, &first, "alertname", t->rule);
    member(b, &first, "severity", severity);
    for (size_t i = 0; i < t->nlabels; i++) {
        const char *n = t->labels[i].name;
        if (am_name(n) && strcmp(n, "alertname") && strcmp(n, "severity"))
            member(b, &first, n, t->labels[i].value);
    }
    cb_strbuf_puts(b, "},\"annotations\":{");
    first = 1;
    member(b, &first, "title", t->title ? t->title : t->rule);
    member(b, &first, "message", t->message);
    for (int l = 0; l < CB_LANGS; l++) {
        char key[32];
        const char *tag = cb_lang_tag((enum cb_lang)l); /* "zh-CN": title_zh */
        snprintf(key, sizeof key, "title_%.2s", tag);
        member(b, &first, key, t->titles[l]);
        snprintf(key, sizeof key, "message_%.2s", tag);
        member(b, &first, key, t->messages[l]);
    }
    member(b, &first, "state", state);
    member(b, &first, "grade", grade);
    member(b, &first, "citybrain_id", t->id);
    member(b, &first, "acked_by", t->acked_by);
    cb_strbuf_puts(b, "},\"startsAt\":");
    rfc3339(b, t->since > 0 ? t->since : t->at);
    cb_strbuf_puts(b, ",\"endsAt\":");
    rfc3339(b, t->state == CB_ALERT_RESOLVED ? t->at : now + 4 * resend_ms);
    if (console_url && *console_url) {
        cb_strbuf_puts(b, ",\"generatorURL\":");
        cb_strbuf_json_string(b, console_url, strlen(console_url));
    }
    cb_strbuf_putc(b, '}');
}
