/* Weak fallbacks of the two transition functions rules/ owns, so the alert
 * tests link before the rules module is merged; the strong definitions in
 * rules/ replace them (delete this file once rules/ has landed on main). */
#include <string.h>

#include "core/strbuf.h"
#include "rules/rules.h"

int cb_transition_is_event(const struct cb_transition *t) __attribute__((weak));
void cb_transition_to_json(const struct cb_transition *t, struct cb_strbuf *out)
    __attribute__((weak));

__attribute__((weak)) int cb_transition_is_event(const struct cb_transition *t)
{
    return t->state == CB_ALERT_FIRING || t->state == CB_ALERT_ESCALATED ||
           t->state == CB_ALERT_RESOLVED || t->state == CB_ALERT_ACKNOWLEDGED;
}

__attribute__((weak)) void cb_transition_to_json(const struct cb_transition *t,
                                                 struct cb_strbuf *out)
{
    static const char *const st[] = {"inactive", "pending", "firing", "escalated", "resolved",
                                     "acknowledged"};
    static const char *const sv[] = {"info", "warning", "major", "critical"};
    cb_strbuf_puts(out, "{\"id\":");
    cb_strbuf_json_string(out, t->id, strlen(t->id));
    cb_strbuf_puts(out, ",\"rule\":");
    cb_strbuf_json_string(out, t->rule, strlen(t->rule));
    cb_strbuf_printf(out, ",\"state\":\"%s\",\"severity\":\"%s\",\"labels\":{", st[t->state],
                     sv[t->severity]);
    for (size_t i = 0; i < t->nlabels; i++) {
        if (i)
            cb_strbuf_putc(out, ',');
        cb_strbuf_json_string(out, t->labels[i].name, strlen(t->labels[i].name));
        cb_strbuf_putc(out, ':');
        cb_strbuf_json_string(out, t->labels[i].value, strlen(t->labels[i].value));
    }
    cb_strbuf_printf(out, "},\"at\":%lld,\"since\":%lld", (long long)t->at, (long long)t->since);
    if (t->message) {
        cb_strbuf_puts(out, ",\"message\":");
        cb_strbuf_json_string(out, t->message, strlen(t->message));
    }
    cb_strbuf_putc(out, '}');
}

