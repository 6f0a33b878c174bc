/* OASIS CAP 1.2 rendering of alert notifications (docs/alerts.md). The
 * element order follows the CAP 1.2 schema: alert(identifier, sender, sent,
 * status, msgType, scope, references, info(category, event, urgency, severity,
 * certainty, headline, description, parameter*, area*(areaDesc))). */
#include "alerts/alerts.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

/* Areas written per message at most; the rest is counted in the description. */
#define MAX_AREAS 200

void cb_cap_datetime(int64_t ms, char out[32])
{
    time_t secs = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    strftime(out, 32, "%Y-%m-%dT%H:%M:%S+00:00", &tm);
}

static void element(struct cb_strbuf *b, const char *indent, const char *name, const char *text)
{
    cb_strbuf_printf(b, "%s<%s>", indent, name);
    cb_strbuf_xml_text(b, text, strlen(text));
    cb_strbuf_printf(b, "</%s>\n", name);
}

static void parameter(struct cb_strbuf *b, const char *name, const char *value)
{
    cb_strbuf_puts(b, "    <parameter>\n");
    element(b, "      ", "valueName", name);
    element(b, "      ", "value", value);
    cb_strbuf_puts(b, "    </parameter>\n");
}

/* CAP categories are a closed list; a label `cap_category` holding one of
 * them chooses it, else "Other". */
static const char *category_of(const struct cb_cap_input *in)
{
    static const char *const cats[] = {"Geo",  "Met",       "Safety", "Security", "Rescue",
                                       "Fire", "Health",    "Env",    "Transport", "Infra",
                                       "CBRNE", "Other"};
    for (size_t i = 0; i < in->nitems; i++) {
        const struct cb_transition *t = in->items[i];
        for (size_t l = 0; l < t->nlabels; l++)
            if (!strcmp(t->labels[l].name, "cap_category"))
                for (size_t c = 0; c < sizeof cats / sizeof cats[0]; c++)
                    if (!strcmp(t->labels[l].value, cats[c]))
                        return cats[c];
    }
    return "Other";
}

/* One <info> block: the texts of one language; the rest (category,
 * severity, parameters, areas) is the same in every language. */
static void info_block(struct cb_strbuf *b, const struct cb_cap_input *in,
                       const struct cb_cap_info *x, const struct cb_severity_map *m, int over)
{
    cb_strbuf_puts(b, "  <info>\n");
    element(b, "    ", "language", x->language);
    element(b, "    ", "category", category_of(in));
    element(b, "    ", "event", x->event);
    /* A resolved alert is over: urgency Past, as CAP recommends for an
     * all-clear; its severity stays what it was. */
    element(b, "    ", "urgency", over ? "Past" : m->cap_urgency);
    element(b, "    ", "severity", m->cap_severity);
    element(b, "    ", "certainty", m->cap_certainty);
    element(b, "    ", "senderName", "citybrain");
    if (x->headline)
        element(b, "    ", "headline", x->headline);
    if (x->description)
        element(b, "    ", "description", x->description);
    parameter(b, "citybrain:rule", in->rule);
    parameter(b, "citybrain:state", in->state);
    parameter(b, "citybrain:grade", m->grade);
    if (in->nitems == 1)
        parameter(b, "citybrain:id", in->items[0]->id);
    size_t nareas = in->nitems < MAX_AREAS ? in->nitems : MAX_AREAS;
    for (size_t i = 0; i < nareas; i++) {
        const struct cb_transition *t = in->items[i];
        struct cb_strbuf desc;
        cb_strbuf_init(&desc);
        for (size_t l = 0; l < t->nlabels; l++) {
            if (!strcmp(t->labels[l].name, "cap_category"))
                continue;
            cb_strbuf_printf(&desc, "%s%s=%s", desc.len ? ", " : "", t->labels[l].name,
                             t->labels[l].value);
        }
        if (!desc.len)
            cb_strbuf_puts(&desc, t->id);
        cb_strbuf_puts(b, "    <area>\n");
        element(b, "      ", "areaDesc", desc.data ? desc.data : "");
        cb_strbuf_puts(b, "    </area>\n");
        cb_strbuf_free(&desc);
    }
    cb_strbuf_puts(b, "  </info>\n");
}

void cb_cap_render(const struct cb_cap_input *in, struct cb_strbuf *b)
{
    const struct cb_severity_map *m = cb_alerts_severity_map(in->severity);
    char sent[32];
    cb_cap_datetime(in->sent_ms, sent);
    int over = !strcmp(in->msg_type, "Cancel");

    cb_strbuf_puts(b, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                      "<alert xmlns=\"urn:oasis:names:tc:emergency:cap:1.2\">\n");
    element(b, "  ", "identifier", in->identifier);
    element(b, "  ", "sender", in->sender);
    element(b, "  ", "sent", sent);
    element(b, "  ", "status", "Actual");
    element(b, "  ", "msgType", in->msg_type);
    element(b, "  ", "scope", "Public");
    if (in->references)
        element(b, "  ", "references", in->references);
    struct cb_cap_info plain = {"en-US", in->event, in->headline, in->description};
    size_t ninfo = in->ninfo ? in->ninfo : 1;
    for (size_t k = 0; k < ninfo; k++)
        info_block(b, in, in->ninfo ? &in->info[k] : &plain, m, over);
    cb_strbuf_puts(b, "</alert>\n");
}
