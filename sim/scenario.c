/* Scenario files: scripted incidents at offsets from the start of a run.
 *
 *   # comment
 *   at 2m for 20m river_rise   d02                 # every river gauge of d02
 *   at 4m for 10m gas_leak     d03 s02 ch4=40      # one detector, custom peak
 *   at 1m for 5m  ramp         d01 s02 kind=bridge accel=2.5 ramp=30s
 *   at 6m for 15m gateway_down d04                 # d04 publishes nothing
 *
 * Grammar of a line: `at OFFSET for DURATION INCIDENT DISTRICT [SENSOR]
 * [key=value ...]`; DISTRICT is dNN, SENSOR sNN (default: all sensors of the
 * kind in the district). Keys: a metric name of the kind (its peak), `peak`
 * (the first metric's peak), `ramp` (a duration), `kind` (for ramp/silent).
 * docs/sim.md is the user's reference. */
#include "sim/sim.h"
#include "sim/sim_int.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The named incidents: what they target and how far they push it. */
static const struct {
    const char *name;
    enum cb_sim_effect effect;
    int kind; /* -1: every kind */
    const char *metric[CB_SIM_MAX_METRICS];
    double peak[CB_SIM_MAX_METRICS];
    int64_t ramp_ms;
} named[] = {
    {"river_rise", CB_SIM_EFFECT_RAMP, CB_SIM_RIVER, {"level", "flow"}, {4.2, 160.0}, 600000},
    {"storm", CB_SIM_EFFECT_RAMP, CB_SIM_RAIN, {"mm_h"}, {45.0}, 300000},
    {"gas_leak", CB_SIM_EFFECT_RAMP, CB_SIM_GAS, {"ch4"}, {35.0}, 120000},
    {"air_episode", CB_SIM_EFFECT_RAMP, CB_SIM_AIR, {"pm25", "pm10"}, {180.0, 260.0}, 600000},
    {"congestion", CB_SIM_EFFECT_RAMP, CB_SIM_TRAFFIC, {"speed"}, {8.0}, 300000},
    {"waterlogging", CB_SIM_EFFECT_RAMP, CB_SIM_UNDERPASS, {"water_depth"}, {40.0}, 300000},
    {"manhole_tilt", CB_SIM_EFFECT_RAMP, CB_SIM_MANHOLE, {"tilt"}, {15.0}, 30000},
    {"bridge_vibration", CB_SIM_EFFECT_RAMP, CB_SIM_BRIDGE, {"accel"}, {2.5}, 30000},
    {"noise_episode", CB_SIM_EFFECT_RAMP, CB_SIM_NOISE, {"db"}, {92.0}, 60000},
    {"gateway_down", CB_SIM_EFFECT_SILENT, -1, {NULL}, {0}, 0},
    {"silent", CB_SIM_EFFECT_SILENT, -1, {NULL}, {0}, 0},
    {"ramp", CB_SIM_EFFECT_RAMP, -1, {NULL}, {0}, 60000},
};
#define NNAMED (sizeof named / sizeof named[0])

static int fail(char *err, size_t errlen, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail(char *err, size_t errlen, int line, const char *fmt, ...)
{
    int n = snprintf(err, errlen, "%d: ", line);
    if (n >= 0 && (size_t)n < errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return -1;
}

/* "90s", "5m", "1h", "500ms", "2d" -> ms. Returns 0, or -1. */
int cb_sim_parse_duration(const char *s, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (end == s || errno || v < 0)
        return -1;
    int64_t mul;
    if (!strcmp(end, "ms"))
        mul = 1;
    else if (!strcmp(end, "s"))
        mul = 1000;
    else if (!strcmp(end, "m"))
        mul = 60000;
    else if (!strcmp(end, "h"))
        mul = 3600000;
    else if (!strcmp(end, "d"))
        mul = 86400000;
    else
        return -1;
    if (v > INT64_MAX / mul)
        return -1;
    *out = v * mul;
    return 0;
}

/* "d07" with prefix 'd' -> 7. Returns 0, or -1. */
static int parse_id(const char *s, char prefix, int *out)
{
    if (s[0] != prefix || !isdigit((unsigned char)s[1]))
        return -1;
    char *end;
    long v = strtol(s + 1, &end, 10);
    if (*end || v < 1 || v > 999)
        return -1;
    *out = (int)v;
    return 0;
}

static int parse_number(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end || errno)
        return -1;
    *out = v;
    return 0;
}

#define MAX_WORDS 16

/* Parses one non-empty line's words into *in. Returns 0, or -1 with err. */
static int parse_line(char **w, int nw, int line, struct cb_sim_incident *in, char *err,
                      size_t errlen)
{
    memset(in, 0, sizeof *in);
    in->line = line;
    if (nw < 6 || strcmp(w[0], "at") != 0 || strcmp(w[2], "for") != 0)
        return fail(err, errlen, line,
                    "expected 'at OFFSET for DURATION INCIDENT DISTRICT [SENSOR] [key=value...]'");
    if (cb_sim_parse_duration(w[1], &in->at_ms))
        return fail(err, errlen, line, "bad offset '%s' (like 90s, 5m, 1h)", w[1]);
    if (cb_sim_parse_duration(w[3], &in->for_ms) || in->for_ms == 0)
        return fail(err, errlen, line, "bad duration '%s' (like 90s, 5m, 1h)", w[3]);
    size_t k = 0;
    while (k < NNAMED && strcmp(named[k].name, w[4]) != 0)
        k++;
    if (k == NNAMED) {
        char list[512] = "";
        for (size_t i = 0; i < NNAMED; i++) {
            strncat(list, i ? ", " : "", sizeof list - strlen(list) - 1);
            strncat(list, named[i].name, sizeof list - strlen(list) - 1);
        }
        return fail(err, errlen, line, "unknown incident '%s' (known: %s)", w[4], list);
    }
    snprintf(in->name, sizeof in->name, "%s", named[k].name);
    in->effect = named[k].effect;
    in->kind = named[k].kind;
    in->ramp_ms = named[k].ramp_ms;
    if (parse_id(w[5], 'd', &in->district))
        return fail(err, errlen, line, "bad district '%s' (like d02)", w[5]);
    int i = 6;
    if (i < nw && !strchr(w[i], '=')) {
        if (parse_id(w[i], 's', &in->sensor))
            return fail(err, errlen, line, "bad sensor '%s' (like s01)", w[i]);
        i++;
    }
    /* `kind` first, since metric names depend on it. */
    for (int a = i; a < nw; a++) {
        if (strncmp(w[a], "kind=", 5) != 0)
            continue;
        int kd = cb_sim_kind_parse(w[a] + 5);
        if (kd < 0)
            return fail(err, errlen, line, "unknown kind '%s'", w[a] + 5);
        if (named[k].kind >= 0 && kd != named[k].kind)
            return fail(err, errlen, line, "%s acts on %s sensors, not %s", named[k].name,
                        cb_sim_kind_name((enum cb_sim_kind)named[k].kind), w[a] + 5);
        in->kind = kd;
    }
    if (in->effect == CB_SIM_EFFECT_RAMP && in->kind < 0)
        return fail(err, errlen, line, "'ramp' needs kind=KIND");
    for (int m = 0; m < CB_SIM_MAX_METRICS && named[k].metric[m]; m++) {
        in->metric[m] = sim__metric_index(in->kind, named[k].metric[m]);
        in->peak[m] = named[k].peak[m];
        in->nmetrics++;
    }
    for (; i < nw; i++) {
        char *eq = strchr(w[i], '=');
        if (!eq || eq == w[i])
            return fail(err, errlen, line, "expected key=value, got '%s'", w[i]);
        *eq = '\0';
        const char *key = w[i], *val = eq + 1;
        if (!strcmp(key, "kind"))
            continue;
        if (!strcmp(key, "ramp")) {
            if (cb_sim_parse_duration(val, &in->ramp_ms))
                return fail(err, errlen, line, "bad ramp '%s' (like 30s, 5m)", val);
            continue;
        }
        if (in->effect != CB_SIM_EFFECT_RAMP)
            return fail(err, errlen, line, "%s takes no '%s'", in->name, key);
        double v;
        if (parse_number(val, &v))
            return fail(err, errlen, line, "bad number '%s' for %s", val, key);
        if (!strcmp(key, "peak")) {
            if (in->nmetrics == 0)
                return fail(err, errlen, line, "'peak' needs a metric: write METRIC=VALUE");
            in->peak[0] = v;
            continue;
        }
        int m = sim__metric_index(in->kind, key);
        if (m < 0)
            return fail(err, errlen, line, "%s sensors have no metric '%s'",
                        cb_sim_kind_name((enum cb_sim_kind)in->kind), key);
        int slot = 0;
        while (slot < in->nmetrics && in->metric[slot] != m)
            slot++;
        if (slot == in->nmetrics) {
            if (in->nmetrics == CB_SIM_MAX_METRICS)
                return fail(err, errlen, line, "too many metrics");
            in->metric[slot] = m;
            in->nmetrics++;
        }
        in->peak[slot] = v;
    }
    if (in->effect == CB_SIM_EFFECT_RAMP && in->nmetrics == 0)
        return fail(err, errlen, line, "'ramp' needs at least one METRIC=PEAK");
    return 0;
}

int cb_sim_scenario_parse(struct cb_sim_scenario *scn, const char *text, size_t len, char *err,
                          size_t errlen)
{
    char *copy = malloc(len + 1);
    size_t cap = 0;
    scn->items = NULL;
    scn->n = 0;
    if (!copy) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    memcpy(copy, text, len);
    copy[len] = '\0';
    int line = 0;
    char *save = NULL;
    char *p = copy;
    while (p && *p) {
        char *nl = strchr(p, '\n');
        if (nl)
            *nl = '\0';
        line++;
        char *hash = strchr(p, '#');
        if (hash)
            *hash = '\0';
        char *w[MAX_WORDS];
        int nw = 0;
        for (char *t = strtok_r(p, " \t\r", &save); t; t = strtok_r(NULL, " \t\r", &save)) {
            if (nw == MAX_WORDS) {
                fail(err, errlen, line, "too many words");
                goto fail;
            }
            w[nw++] = t;
        }
        p = nl ? nl + 1 : NULL;
        if (nw == 0)
            continue;
        if (scn->n == cap) {
            size_t ncap = cap ? cap * 2 : 8;
            struct cb_sim_incident *ni = realloc(scn->items, ncap * sizeof *ni);
            if (!ni) {
                snprintf(err, errlen, "out of memory");
                goto fail;
            }
            scn->items = ni;
            cap = ncap;
        }
        if (parse_line(w, nw, line, &scn->items[scn->n], err, errlen))
            goto fail;
        scn->n++;
    }
    free(copy);
    return 0;
fail:
    free(copy);
    cb_sim_scenario_free(scn);
    return -1;
}

int cb_sim_scenario_load(struct cb_sim_scenario *scn, const char *path, char *err, size_t errlen)
{
    char sub[256];
    char *buf = NULL;
    size_t len = 0, cap = 0;
    scn->items = NULL;
    scn->n = 0;
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    for (;;) {
        if (len + 4096 > cap) {
            char *nb = realloc(buf, cap + 65536);
            if (!nb) {
                snprintf(err, errlen, "%s: out of memory", path);
                goto fail;
            }
            buf = nb;
            cap += 65536;
        }
        size_t got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (got == 0)
            break;
        if (len > (1u << 20)) {
            snprintf(err, errlen, "%s: larger than 1 MiB", path);
            goto fail;
        }
    }
    if (ferror(f)) {
        snprintf(err, errlen, "%s: read error", path);
        goto fail;
    }
    fclose(f);
    f = NULL;
    if (cb_sim_scenario_parse(scn, buf ? buf : "", len, sub, sizeof sub)) {
        snprintf(err, errlen, "%s:%s", path, sub);
        free(buf);
        return -1;
    }
    free(buf);
    return 0;
fail:
    if (f)
        fclose(f);
    free(buf);
    return -1;
}

void cb_sim_scenario_free(struct cb_sim_scenario *scn)
{
    free(scn->items);
    scn->items = NULL;
    scn->n = 0;
}
