/* The simulator's city model: which sensors exist, what their metrics look
 * like on a normal day, what incidents do to them, and how a reading is
 * written as a payload (JSON, SenML or a bare number). */
#include "sim/sim.h"
#include "sim/sim_int.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* How a metric moves over a day (hours in UTC of the event time). */
enum shape {
    FLAT = 0, /* mean only */
    RUSH,     /* bumps at 08:00 and 18:00, 0..1 */
    DAY,      /* a sine peaking at 14:00, -1..1 */
};

/* A normal day for one metric: mean + amp * shape(hour) + spread (per sensor,
 * fixed) + noise (per reading), clamped at `lo`, printed with `decimals`. */
static const struct sim__metric metrics[CB_SIM_KIND__COUNT][CB_SIM_MAX_METRICS] = {
    [CB_SIM_RIVER] = {{"level", "m", 1.6, 0.05, DAY, 0.25, 0.015, 0.0, 3},
                      {"flow", "m3/s", 38.0, 2.0, DAY, 6.0, 0.8, 0.0, 2}},
    [CB_SIM_RAIN] = {{"mm_h", NULL, 0.0, 0.0, FLAT, 0.0, 0.15, 0.0, 1}},
    [CB_SIM_AIR] = {{"pm25", NULL, 16.0, 14.0, RUSH, 3.0, 2.0, 0.0, 1},
                    {"pm10", NULL, 28.0, 20.0, RUSH, 5.0, 3.0, 0.0, 1}},
    [CB_SIM_GAS] = {{"ch4", NULL, 0.8, 0.0, FLAT, 0.3, 0.25, 0.0, 2}},
    [CB_SIM_BRIDGE] = {{"accel", "m/s2", 0.08, 0.04, DAY, 0.01, 0.015, 0.0, 3}},
    [CB_SIM_TRAFFIC] = {{"speed", NULL, 56.0, -24.0, RUSH, 4.0, 3.0, 0.0, 1}},
    [CB_SIM_MANHOLE] = {{"tilt", NULL, 0.4, 0.0, FLAT, 0.2, 0.08, 0.0, 2}},
    [CB_SIM_UNDERPASS] = {{"water_depth", NULL, 0.0, 0.0, FLAT, 0.0, 0.3, 0.0, 1}},
    [CB_SIM_NOISE] = {{"db", NULL, 58.0, 9.0, DAY, 3.0, 1.5, 30.0, 1}},
};

static const char *const kind_names[CB_SIM_KIND__COUNT] = {
    "river", "rain", "air", "gas", "bridge", "traffic", "manhole", "underpass", "noise",
};

const char *cb_sim_kind_name(enum cb_sim_kind k)
{
    return (unsigned)k < CB_SIM_KIND__COUNT ? kind_names[k] : NULL;
}

int cb_sim_kind_parse(const char *s)
{
    for (int k = 0; k < CB_SIM_KIND__COUNT; k++)
        if (strcmp(s, kind_names[k]) == 0)
            return k;
    return -1;
}

const struct sim__metric *sim__metric_of(int kind, int m)
{
    if (kind < 0 || kind >= CB_SIM_KIND__COUNT || m < 0 || m >= CB_SIM_MAX_METRICS)
        return NULL;
    return metrics[kind][m].name ? &metrics[kind][m] : NULL;
}

int sim__metric_index(int kind, const char *name)
{
    for (int m = 0; m < CB_SIM_MAX_METRICS; m++) {
        const struct sim__metric *d = sim__metric_of(kind, m);
        if (d && strcmp(d->name, name) == 0)
            return m;
    }
    return -1;
}

struct cb_sim {
    struct cb_sim_options opt;
    struct cb_sim_scenario scn;
    size_t nsensors;
    uint64_t rng;
    double *spread; /* per sensor and metric: nsensors * CB_SIM_MAX_METRICS */
    struct cb_strbuf topic;
    struct cb_strbuf payload;
};

/* splitmix64: small, fast, and the same on every platform. */
static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static double uniform(uint64_t *s)
{
    return (double)(splitmix(s) >> 11) * (1.0 / 9007199254740992.0);
}

/* A standard normal deviate (Box-Muller; one of the pair is dropped so each
 * reading consumes a fixed amount of the stream). */
static double gauss(uint64_t *s)
{
    double u = uniform(s), v = uniform(s);
    if (u < 1e-300)
        u = 1e-300;
    return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}

struct cb_sim *cb_sim_new(const struct cb_sim_options *opt, const struct cb_sim_scenario *scn,
                          char *err, size_t errlen)
{
    struct cb_sim *sim = NULL;
    if (opt->districts < 1 || opt->districts > 999 || opt->sensors < 1 || opt->sensors > 999) {
        snprintf(err, errlen, "districts and sensors must be in 1..999");
        return NULL;
    }
    if (!(opt->rate > 0)) {
        snprintf(err, errlen, "rate must be positive");
        return NULL;
    }
    sim = calloc(1, sizeof *sim);
    if (!sim)
        goto oom;
    sim->opt = *opt;
    sim->nsensors = (size_t)opt->districts * (size_t)opt->sensors * CB_SIM_KIND__COUNT;
    cb_strbuf_init(&sim->topic);
    cb_strbuf_init(&sim->payload);
    if (scn && scn->n) {
        sim->scn.items = malloc(scn->n * sizeof *scn->items);
        if (!sim->scn.items)
            goto oom;
        memcpy(sim->scn.items, scn->items, scn->n * sizeof *scn->items);
        sim->scn.n = scn->n;
    }
    sim->spread = malloc(sim->nsensors * CB_SIM_MAX_METRICS * sizeof *sim->spread);
    if (!sim->spread)
        goto oom;
    /* Each sensor's fixed offset from the mean comes from its own stream, so
     * it does not depend on how many readings were drawn before. */
    for (size_t j = 0; j < sim->nsensors; j++) {
        uint64_t s = opt->seed * 0x100000001B3ull + j + 1;
        for (int m = 0; m < CB_SIM_MAX_METRICS; m++)
            sim->spread[j * CB_SIM_MAX_METRICS + m] = gauss(&s);
    }
    sim->rng = opt->seed ^ 0xC17B2A1Full;
    return sim;
oom:
    snprintf(err, errlen, "out of memory");
    cb_sim_free(sim);
    return NULL;
}

void cb_sim_free(struct cb_sim *sim)
{
    if (!sim)
        return;
    free(sim->scn.items);
    free(sim->spread);
    cb_strbuf_free(&sim->topic);
    cb_strbuf_free(&sim->payload);
    free(sim);
}

size_t cb_sim_sensor_count(const struct cb_sim *sim)
{
    return sim->nsensors;
}

int64_t cb_sim_slot_ts(const struct cb_sim *sim, uint64_t slot)
{
    return sim->opt.start_ms + (int64_t)floor((double)slot * 1000.0 / sim->opt.rate);
}

static double shape_at(enum shape sh, int64_t ts_ms)
{
    double h = (double)(((ts_ms % 86400000) + 86400000) % 86400000) / 3600000.0;
    switch (sh) {
    case RUSH:
        return exp(-(h - 8.0) * (h - 8.0) / 2.0) + exp(-(h - 18.0) * (h - 18.0) / 2.0);
    case DAY:
        return cos((h - 14.0) * 6.283185307179586 / 24.0);
    case FLAT:
    default:
        return 0.0;
    }
}

/* How far into incident `in` the offset t is: 0 outside, rising to 1 over the
 * ramp, 1 while it holds, falling back to 0 over the ramp after it ends. */
static double incident_weight(const struct cb_sim_incident *in, int64_t t)
{
    int64_t end = in->at_ms + in->for_ms;
    double ramp = (double)(in->ramp_ms > 0 ? in->ramp_ms : 1);
    if (t < in->at_ms)
        return 0.0;
    if (t < end) {
        double w = (double)(t - in->at_ms) / ramp;
        return w > 1.0 ? 1.0 : w;
    }
    double w = 1.0 - (double)(t - end) / ramp;
    return w < 0.0 ? 0.0 : w;
}

static int targets(const struct cb_sim_incident *in, int kind, int district, int sensor)
{
    return (in->kind < 0 || in->kind == kind) && in->district == district &&
           (in->sensor == 0 || in->sensor == sensor);
}

static void put_id(struct cb_strbuf *b, char prefix, int n)
{
    cb_strbuf_printf(b, n < 100 ? "%c%02d" : "%c%03d", prefix, n);
}

static void put_value(struct cb_strbuf *b, const struct sim__metric *d, double v)
{
    cb_strbuf_printf(b, "%.*f", d->decimals, v);
}

int cb_sim_next(struct cb_sim *sim, uint64_t slot, struct cb_sim_msg *out)
{
    size_t j = (size_t)(slot % sim->nsensors);
    int kind = (int)(j % CB_SIM_KIND__COUNT);
    int district = (int)((j / CB_SIM_KIND__COUNT) % (size_t)sim->opt.districts) + 1;
    int sensor = (int)(j / (CB_SIM_KIND__COUNT * (size_t)sim->opt.districts)) + 1;
    int64_t ts = cb_sim_slot_ts(sim, slot);
    int64_t t = ts - sim->opt.start_ms;
    double v[CB_SIM_MAX_METRICS] = {0};
    int nm = 0;

    /* The noise is drawn before the silence check so that a silent sensor
     * does not shift the stream of the others. */
    for (int m = 0; m < CB_SIM_MAX_METRICS; m++) {
        const struct sim__metric *d = sim__metric_of(kind, m);
        if (!d)
            break;
        double x = d->mean + d->amp * shape_at((enum shape)d->shape, ts) +
                   d->spread * sim->spread[j * CB_SIM_MAX_METRICS + m] +
                   d->noise * gauss(&sim->rng);
        v[m] = x;
        nm++;
    }
    for (size_t i = 0; i < sim->scn.n; i++) {
        const struct cb_sim_incident *in = &sim->scn.items[i];
        if (!targets(in, kind, district, sensor))
            continue;
        if (in->effect == CB_SIM_EFFECT_SILENT) {
            if (t >= in->at_ms && t < in->at_ms + in->for_ms)
                return 0;
            continue;
        }
        double w = incident_weight(in, t);
        if (w <= 0.0)
            continue;
        for (int k = 0; k < in->nmetrics; k++) {
            int m = in->metric[k];
            const struct sim__metric *d = sim__metric_of(kind, m);
            /* Near the peak the reading wobbles by the metric's noise, scaled
             * up so an incident looks like a real one, not a flat line. */
            double peak = in->peak[k] + 2.0 * d->noise * gauss(&sim->rng);
            v[m] = (1.0 - w) * v[m] + w * peak;
        }
    }

    cb_strbuf_reset(&sim->topic);
    cb_strbuf_puts(&sim->topic, "city/");
    put_id(&sim->topic, 'd', district);
    cb_strbuf_printf(&sim->topic, "/%s/", kind_names[kind]);
    put_id(&sim->topic, 's', sensor);

    struct cb_strbuf *p = &sim->payload;
    cb_strbuf_reset(p);
    enum cb_sim_format f = sim->opt.format;
    int bare = f == CB_SIM_MIXED && kind == CB_SIM_NOISE;
    int senml = f == CB_SIM_SENML || (f == CB_SIM_MIXED && kind == CB_SIM_AIR);
    for (int m = 0; m < nm; m++) {
        const struct sim__metric *d = sim__metric_of(kind, m);
        if (v[m] < d->lo)
            v[m] = d->lo;
    }
    if (bare) {
        put_value(p, sim__metric_of(kind, 0), v[0]);
    } else if (senml) {
        cb_strbuf_puts(p, "[{\"bn\":\"urn:dev:");
        put_id(p, 'd', district);
        cb_strbuf_printf(p, "-%s-", kind_names[kind]);
        put_id(p, 's', sensor);
        cb_strbuf_printf(p, ":\",\"bt\":%lld.%03lld", (long long)(ts / 1000),
                         (long long)(ts % 1000));
        for (int m = 0; m < nm; m++) {
            const struct sim__metric *d = sim__metric_of(kind, m);
            cb_strbuf_printf(p, "%s\"n\":\"%s\",", m ? ",{" : ",", d->name);
            if (d->unit)
                cb_strbuf_printf(p, "\"u\":\"%s\",", d->unit);
            cb_strbuf_puts(p, "\"v\":");
            put_value(p, d, v[m]);
            cb_strbuf_putc(p, '}');
        }
        cb_strbuf_putc(p, ']');
    } else {
        cb_strbuf_printf(p, "{\"ts\":%lld", (long long)ts);
        for (int m = 0; m < nm; m++) {
            const struct sim__metric *d = sim__metric_of(kind, m);
            cb_strbuf_printf(p, ",\"%s\":", d->name);
            put_value(p, d, v[m]);
        }
        cb_strbuf_putc(p, '}');
    }
    if (sim->topic.oom || p->oom)
        return -1;
    out->topic = sim->topic.data;
    out->topic_len = sim->topic.len;
    out->payload = p->data;
    out->payload_len = p->len;
    out->payload_is_json = !bare;
    out->ts_ms = ts;
    return 1;
}

void cb_sim_replay_line(struct cb_strbuf *b, const struct cb_sim_msg *m)
{
    cb_strbuf_puts(b, "{\"topic\":");
    cb_strbuf_json_string(b, m->topic, m->topic_len);
    cb_strbuf_puts(b, ",\"payload\":");
    if (m->payload_is_json)
        cb_strbuf_append(b, m->payload, m->payload_len);
    else
        cb_strbuf_json_string(b, m->payload, m->payload_len);
    cb_strbuf_printf(b, ",\"ts\":%lld}", (long long)m->ts_ms);
}
