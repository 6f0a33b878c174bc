/* The audit log: who did what, when, to which alert, silence or rule set
 * (docs/alerts.md "Audit log"). Entries are written through the alert
 * store's writer thread, in the same ordered queue as the alert tables, and
 * deleted with storage.retention.alerts. */
#include "alerts/alerts_int.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <string.h>

/* Every action the log knows: a new kind of operator action is one more
 * line here (and its name in alerts.h and docs/alerts.md). */
const char *const cb_audit_actions[] = {
    CB_AUDIT_ACK,
    CB_AUDIT_SILENCE_CREATE,
    CB_AUDIT_SILENCE_EXPIRE,
    CB_AUDIT_SILENCE_DELETE,
    CB_AUDIT_RULES_RELOAD,
    CB_AUDIT_CLOSE,
    CB_AUDIT_READ_REFUSED,
    NULL,
};

int cb_alerts_audit_action_known(const char *name)
{
    for (const char *const *a = cb_audit_actions; *a; a++)
        if (!strcmp(*a, name))
            return 1;
    return 0;
}

void cb_alerts_audit_actions_text(struct cb_strbuf *out)
{
    for (const char *const *a = cb_audit_actions; *a; a++)
        cb_strbuf_printf(out, "%s%s", a == cb_audit_actions ? "" : a[1] ? ", " : " or ", *a);
}

int64_t alerts__audit(struct cb_alert_store *store, int64_t at, const struct cb_audit_entry *e,
                      char *err, size_t errlen)
{
    if (!e->action || !cb_alerts_audit_action_known(e->action)) {
        snprintf(err, errlen, "unknown audit action '%s'", e->action ? e->action : "");
        return -1;
    }
    if (!e->who || !*e->who) {
        snprintf(err, errlen, "%s: who did it is required", e->action);
        return -1;
    }
    if (e->details) {
        cJSON *d = cJSON_Parse(e->details);
        int ok = cJSON_IsObject(d);
        cJSON_Delete(d);
        if (!ok) {
            snprintf(err, errlen, "%s: details must be a JSON object", e->action);
            return -1;
        }
    }
    struct cb_audit_row row = {
        .seq = cb_alert_store_next_audit_seq(store), .at = at, .who = e->who,
        .action = e->action, .target = e->target, .note = e->note, .details = e->details,
    };
    if (cb_alert_store_add_audit(store, &row)) {
        snprintf(err, errlen, "%s: not recorded (out of memory)", e->action);
        return -1;
    }
    return row.seq;
}

struct audit_json_ctx {
    struct cb_strbuf *out;
    int n;
};

static int audit_entry_json(void *ctx, const struct cb_audit_row *r)
{
    struct audit_json_ctx *c = ctx;
    struct cb_strbuf *b = c->out;
    cb_strbuf_printf(b, "%s{\"seq\":%lld,\"at\":%lld,\"who\":", c->n++ ? "," : "",
                     (long long)r->seq, (long long)r->at);
    cb_strbuf_json_string_or_null(b, r->who);
    cb_strbuf_puts(b, ",\"action\":");
    cb_strbuf_json_string_or_null(b, r->action);
    cb_strbuf_puts(b, ",\"target\":");
    cb_strbuf_json_string_or_null(b, r->target);
    cb_strbuf_puts(b, ",\"note\":");
    cb_strbuf_json_string_or_null(b, r->note);
    /* written by alerts__audit only, which checked it is a JSON object */
    cb_strbuf_printf(b, ",\"details\":%s}", r->details ? r->details : "null");
    return 0;
}

int cb_alerts_reader_audit_json(struct cb_alert_reader *r, int64_t from, int64_t to,
                                const char *action, size_t limit, struct cb_strbuf *out)
{
    struct audit_json_ctx c = {out, 0};
    size_t mark = alerts__list_begin(out, "entries");
    int rc = cb_alert_reader_audit(r, from, to, action, limit, audit_entry_json, &c);
    return alerts__list_end(out, mark, "entries", rc);
}
