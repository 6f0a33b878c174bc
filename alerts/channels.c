/* Channel configuration (alerts.channel lines) and the severity mapping. */
#include "alerts/alerts.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The mapping documented in docs/alerts.md: CAP 1.2 severity, urgency and
 * certainty, and the four-colour warning grade of Chinese emergency practice
 * (blue IV, yellow III, orange II, red I). Rules fire on measured data, so the
 * two upper levels are Observed; a warning is a Likely development. */
static const struct cb_severity_map severity_map[] = {
    [CB_SEV_INFO] = {"Minor", "Future", "Possible", "blue"},
    [CB_SEV_WARNING] = {"Moderate", "Expected", "Likely", "yellow"},
    [CB_SEV_MAJOR] = {"Severe", "Immediate", "Observed", "orange"},
    [CB_SEV_CRITICAL] = {"Extreme", "Immediate", "Observed", "red"},
};

const struct cb_severity_map *cb_alerts_severity_map(enum cb_severity s)
{
    if ((int)s < 0 || s > CB_SEV_CRITICAL)
        s = CB_SEV_MAJOR;
    return &severity_map[s];
}

int cb_alerts_severity_from_name(const char *name, enum cb_severity *out)
{
    static const char *const names[] = {"info", "warning", "major", "critical"};
    for (int i = 0; i < 4; i++)
        if (name && !strcmp(name, names[i]))
            return *out = (enum cb_severity)i, 0;
    return -1;
}

void cb_channels_free(struct cb_channel *c, size_t n)
{
    for (size_t i = 0; c && i < n; i++) {
        free(c[i].name);
        free(c[i].url);
        free(c[i].prefix);
    }
    free(c);
}

static int valid_name(const char *s, size_t n)
{
    if (!n || n > 64)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '_' || ch == '-' || ch == '.'))
            return 0;
    }
    return 1;
}

/* Parses one line "NAME type=T [format=F] [url=U] [prefix=P]" into c.
 * Returns 0, or -1 with err "alerts.channel 'LINE': problem". */
static int parse_line(const char *line, struct cb_channel *c, char *err, size_t errlen)
{
    const char *p = line;
    int have_type = 0;
    memset(c, 0, sizeof *c);
    while (*p == ' ' || *p == '\t')
        p++;
    size_t n = strcspn(p, " \t");
    if (!valid_name(p, n)) {
        snprintf(err, errlen, "alerts.channel '%s': expected a channel NAME (letters, digits, "
                              "_ - .) first", line);
        return -1;
    }
    c->name = strndup(p, n);
    if (!c->name)
        goto oom;
    p += n;
    for (;;) {
        while (*p == ' ' || *p == '\t')
            p++;
        if (!*p)
            break;
        n = strcspn(p, " \t");
        const char *eq = memchr(p, '=', n);
        if (!eq || eq == p || eq + 1 == p + n) {
            snprintf(err, errlen, "alerts.channel '%s': '%.*s' is not KEY=VALUE", line, (int)n, p);
            return -1;
        }
        size_t kn = (size_t)(eq - p);
        const char *v = eq + 1;
        size_t vn = n - kn - 1;
        if (kn == 4 && !strncmp(p, "type", 4)) {
            if (vn == 4 && !strncmp(v, "mqtt", 4))
                c->type = CB_CHANNEL_MQTT;
            else if (vn == 7 && !strncmp(v, "webhook", 7))
                c->type = CB_CHANNEL_WEBHOOK;
            else if (vn == 3 && !strncmp(v, "log", 3))
                c->type = CB_CHANNEL_LOG;
            else if (vn == 12 && !strncmp(v, "alertmanager", 12))
                c->type = CB_CHANNEL_ALERTMANAGER;
            else {
                snprintf(err, errlen, "alerts.channel '%s': unknown type '%.*s' (mqtt, webhook, "
                                      "alertmanager or log)", line, (int)vn, v);
                return -1;
            }
            have_type = 1;
        } else if (kn == 6 && !strncmp(p, "format", 6)) {
            if (vn == 4 && !strncmp(v, "json", 4))
                c->format = CB_FORMAT_JSON;
            else if (vn == 3 && !strncmp(v, "cap", 3))
                c->format = CB_FORMAT_CAP;
            else {
                snprintf(err, errlen, "alerts.channel '%s': unknown format '%.*s' (json or cap)",
                         line, (int)vn, v);
                return -1;
            }
        } else if (kn == 3 && !strncmp(p, "url", 3)) {
            if (!(vn > 7 && (!strncmp(v, "http://", 7) || !strncmp(v, "https://", 8)))) {
                snprintf(err, errlen, "alerts.channel '%s': url must be http:// or https://",
                         line);
                return -1;
            }
            free(c->url);
            if (!(c->url = strndup(v, vn)))
                goto oom;
        } else if (kn == 6 && !strncmp(p, "prefix", 6)) {
            if (memchr(v, '+', vn) || memchr(v, '#', vn)) {
                snprintf(err, errlen, "alerts.channel '%s': prefix must not hold + or #", line);
                return -1;
            }
            free(c->prefix);
            if (!(c->prefix = strndup(v, vn)))
                goto oom;
        } else {
            snprintf(err, errlen, "alerts.channel '%s': unknown key '%.*s' (type, format, url, "
                                  "prefix)", line, (int)kn, p);
            return -1;
        }
        p += n;
    }
    if (!have_type) {
        snprintf(err, errlen, "alerts.channel '%s': type=mqtt|webhook|alertmanager|log is "
                              "required", line);
        return -1;
    }
    int http = c->type == CB_CHANNEL_WEBHOOK || c->type == CB_CHANNEL_ALERTMANAGER;
    if (http && !c->url) {
        snprintf(err, errlen, "alerts.channel '%s': %s needs url=URL", line,
                 c->type == CB_CHANNEL_WEBHOOK ? "a webhook" : "an alertmanager channel");
        return -1;
    }
    if (!http && c->url) {
        snprintf(err, errlen, "alerts.channel '%s': url= is only for type=webhook or "
                              "alertmanager", line);
        return -1;
    }
    if (c->type == CB_CHANNEL_ALERTMANAGER && c->format == CB_FORMAT_CAP) {
        snprintf(err, errlen, "alerts.channel '%s': an alertmanager channel sends "
                              "Alertmanager's JSON: no format=", line);
        return -1;
    }
    /* url= of Alertmanager is its address; the alerts go to its v2 API. */
    static const char v2[] = "/api/v2/alerts";
    size_t ul = c->url ? strlen(c->url) : 0;
    if (c->type == CB_CHANNEL_ALERTMANAGER &&
        !(ul >= sizeof v2 - 1 && !strcmp(c->url + ul - (sizeof v2 - 1), v2))) {
        char *full = malloc(ul + sizeof v2);
        if (!full)
            goto oom;
        snprintf(full, ul + sizeof v2, "%.*s%s", (int)(ul && c->url[ul - 1] == '/' ? ul - 1 : ul),
                 c->url, v2);
        free(c->url);
        c->url = full;
    }
    if (c->type != CB_CHANNEL_MQTT && c->prefix) {
        snprintf(err, errlen, "alerts.channel '%s': prefix= is only for type=mqtt", line);
        return -1;
    }
    if (c->type == CB_CHANNEL_LOG && c->format == CB_FORMAT_CAP) {
        snprintf(err, errlen, "alerts.channel '%s': format=cap needs type=mqtt or webhook",
                 line);
        return -1;
    }
    return 0;
oom:
    snprintf(err, errlen, "alerts.channel: out of memory");
    return -1;
}

int cb_channels_parse(const struct cb_strlist *lines, struct cb_channel **out, size_t *nout,
                      char *err, size_t errlen)
{
    struct cb_channel *c = calloc(lines->n ? lines->n : 1, sizeof *c);
    size_t n = 0;
    if (!c) {
        snprintf(err, errlen, "alerts.channel: out of memory");
        return -1;
    }
    for (size_t i = 0; i < lines->n; i++) {
        if (parse_line(lines->items[i], &c[n], err, errlen)) {
            n++; /* free what the failed line allocated */
            goto fail;
        }
        for (size_t j = 0; j < n; j++) {
            if (!strcmp(c[j].name, c[n].name)) {
                snprintf(err, errlen, "alerts.channel '%s': channel '%s' is defined twice",
                         lines->items[i], c[n].name);
                n++;
                goto fail;
            }
        }
        n++;
    }
    *out = c;
    *nout = n;
    return 0;
fail:
    cb_channels_free(c, n);
    return -1;
}

int cb_channels_from_config(const struct cb_config *cfg, struct cb_channel **out, size_t *nout,
                            char *err, size_t errlen)
{
    struct cb_channel *c = NULL;
    size_t n = 0;
    if (cb_channels_parse(&cfg->alerts_channels, &c, &n, err, errlen))
        return -1;
    size_t k = 0;
    while (k < n && strcmp(c[k].name, "log"))
        k++;
    if (k == n) { /* the built-in log channel */
        struct cb_channel *grown = realloc(c, (n + 1) * sizeof *c);
        if (!grown)
            goto oom;
        c = grown;
        memset(&c[n], 0, sizeof c[n]);
        c[n].type = CB_CHANNEL_LOG;
        if (!(c[n++].name = strdup("log")))
            goto oom;
    }
    for (size_t i = 0; i < cfg->alerts_default_notify.n; i++) {
        const char *name = cfg->alerts_default_notify.items[i];
        size_t j = 0;
        while (j < n && strcmp(c[j].name, name))
            j++;
        if (j < n)
            continue;
        int w = snprintf(err, errlen, "alerts.default_notify: '%s' is not a configured channel "
                                      "(channels:", name);
        for (j = 0; j < n && w >= 0 && (size_t)w < errlen; j++)
            w += snprintf(err + w, errlen - (size_t)w, "%s %s", j ? "," : "", c[j].name);
        if (w >= 0 && (size_t)w < errlen)
            snprintf(err + w, errlen - (size_t)w, ")");
        goto fail;
    }
    *out = c;
    *nout = n;
    return 0;
oom:
    snprintf(err, errlen, "alerts.channel: out of memory");
fail:
    cb_channels_free(c, n);
    return -1;
}
