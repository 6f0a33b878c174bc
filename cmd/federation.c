/* Federation: the city tier's export (see federation.h). */
#include "cmd/federation.h"

#include <stdio.h>
#include <string.h>

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
    cb_strbuf_printf(out, ",\"n\":\"active\",\"v\":%d},{\"n\":\"severity\",\"v\":%d}]", active,
                     active ? (int)t->severity + 1 : 0);
    return 0;
}
