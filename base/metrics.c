/* The metric registry; see metrics.h. A flat array in registration order:
 * a few hundred entries at most, rendered a few times a minute. */
#include "base/metrics.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum kind { COUNTER, GAUGE, GAUGE_FN, HISTOGRAM };

struct cb_histogram {
    double *bounds;
    size_t nbounds;
    uint64_t *buckets; /* nbounds + 1, the last for +Inf */
    uint64_t count;
    uint64_t sum_micro; /* sum in millionths, so it can be atomic */
};

struct entry {
    enum kind kind;
    char *name;
    char *labels;
    char *help;
    union {
        uint64_t counter;
        int64_t gauge;
        struct {
            double (*fn)(void *);
            void *ctx;
        } fn;
        struct cb_histogram hist;
    } u;
};

#define MAX_ENTRIES 1024
static struct entry *entries[MAX_ENTRIES];
static size_t nentries;
static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;

const double cb_metrics_latency_bounds[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                            0.01,   0.025,   0.05,   0.1,   0.25,   0.5,
                                            1,      2.5,     5,      10};
const size_t cb_metrics_latency_nbounds =
    sizeof cb_metrics_latency_bounds / sizeof cb_metrics_latency_bounds[0];

static struct entry *find(const char *name, const char *labels)
{
    for (size_t i = 0; i < nentries; i++)
        if (strcmp(entries[i]->name, name) == 0 && strcmp(entries[i]->labels, labels) == 0)
            return entries[i];
    return NULL;
}

/* Finds or creates the entry; NULL on OOM, a full registry or a kind clash. */
static struct entry *add(enum kind kind, const char *name, const char *labels, const char *help)
{
    if (!labels)
        labels = "";
    pthread_mutex_lock(&registry_lock);
    struct entry *e = find(name, labels);
    if (e) {
        pthread_mutex_unlock(&registry_lock);
        return e->kind == kind ? e : NULL;
    }
    if (nentries == MAX_ENTRIES)
        goto fail;
    e = calloc(1, sizeof *e);
    if (!e)
        goto fail;
    e->kind = kind;
    e->name = strdup(name);
    e->labels = strdup(labels);
    e->help = strdup(help ? help : "");
    if (!e->name || !e->labels || !e->help)
        goto fail_entry;
    entries[nentries++] = e;
    pthread_mutex_unlock(&registry_lock);
    return e;
fail_entry:
    free(e->name);
    free(e->labels);
    free(e->help);
    free(e);
fail:
    pthread_mutex_unlock(&registry_lock);
    return NULL;
}

uint64_t *cb_metrics_counter(const char *name, const char *labels, const char *help)
{
    struct entry *e = add(COUNTER, name, labels, help);
    return e ? &e->u.counter : NULL;
}

int64_t *cb_metrics_gauge(const char *name, const char *labels, const char *help)
{
    struct entry *e = add(GAUGE, name, labels, help);
    return e ? &e->u.gauge : NULL;
}

int cb_metrics_gauge_fn(const char *name, const char *labels, const char *help,
                        double (*fn)(void *ctx), void *ctx)
{
    struct entry *e = add(GAUGE_FN, name, labels, help);
    if (!e)
        return -1;
    e->u.fn.fn = fn;
    e->u.fn.ctx = ctx;
    return 0;
}

struct cb_histogram *cb_metrics_histogram(const char *name, const char *labels, const char *help,
                                          const double *bounds, size_t nbounds)
{
    struct entry *e = add(HISTOGRAM, name, labels, help);
    if (!e)
        return NULL;
    struct cb_histogram *h = &e->u.hist;
    if (h->bounds)
        return h;
    h->bounds = malloc(nbounds * sizeof *bounds);
    h->buckets = calloc(nbounds + 1, sizeof *h->buckets);
    if (!h->bounds || !h->buckets) {
        free(h->bounds);
        free(h->buckets);
        h->bounds = NULL;
        h->buckets = NULL;
        return NULL;
    }
    memcpy(h->bounds, bounds, nbounds * sizeof *bounds);
    h->nbounds = nbounds;
    return h;
}

void cb_histogram_observe(struct cb_histogram *h, double value)
{
    if (!h || !h->buckets)
        return;
    size_t i = 0;
    while (i < h->nbounds && value > h->bounds[i])
        i++;
    __atomic_fetch_add(&h->buckets[i], 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(&h->count, 1, __ATOMIC_RELAXED);
    if (value > 0)
        __atomic_fetch_add(&h->sum_micro, (uint64_t)(value * 1e6), __ATOMIC_RELAXED);
}

static void render_labels(struct cb_strbuf *out, const char *labels, const char *extra)
{
    if (!*labels && !extra)
        return;
    cb_strbuf_putc(out, '{');
    cb_strbuf_puts(out, labels);
    if (extra) {
        if (*labels)
            cb_strbuf_putc(out, ',');
        cb_strbuf_puts(out, extra);
    }
    cb_strbuf_putc(out, '}');
}

static void render_entry(struct cb_strbuf *out, const struct entry *e)
{
    switch (e->kind) {
    case COUNTER:
        cb_strbuf_puts(out, e->name);
        render_labels(out, e->labels, NULL);
        cb_strbuf_printf(out, " %llu\n",
                         (unsigned long long)__atomic_load_n(&e->u.counter, __ATOMIC_RELAXED));
        break;
    case GAUGE:
        cb_strbuf_puts(out, e->name);
        render_labels(out, e->labels, NULL);
        cb_strbuf_printf(out, " %lld\n",
                         (long long)__atomic_load_n(&e->u.gauge, __ATOMIC_RELAXED));
        break;
    case GAUGE_FN:
        cb_strbuf_puts(out, e->name);
        render_labels(out, e->labels, NULL);
        cb_strbuf_putc(out, ' ');
        cb_strbuf_json_number(out, e->u.fn.fn(e->u.fn.ctx));
        cb_strbuf_putc(out, '\n');
        break;
    case HISTOGRAM: {
        const struct cb_histogram *h = &e->u.hist;
        uint64_t cum = 0;
        char le[48];
        for (size_t i = 0; i <= h->nbounds; i++) {
            cum += __atomic_load_n(&h->buckets[i], __ATOMIC_RELAXED);
            if (i < h->nbounds)
                snprintf(le, sizeof le, "le=\"%g\"", h->bounds[i]);
            else
                snprintf(le, sizeof le, "le=\"+Inf\"");
            cb_strbuf_printf(out, "%s_bucket", e->name);
            render_labels(out, e->labels, le);
            cb_strbuf_printf(out, " %llu\n", (unsigned long long)cum);
        }
        cb_strbuf_printf(out, "%s_sum", e->name);
        render_labels(out, e->labels, NULL);
        cb_strbuf_printf(out, " %.6f\n",
                         (double)__atomic_load_n(&h->sum_micro, __ATOMIC_RELAXED) / 1e6);
        cb_strbuf_printf(out, "%s_count", e->name);
        render_labels(out, e->labels, NULL);
        cb_strbuf_printf(out, " %llu\n", (unsigned long long)cum);
        break;
    }
    }
}

static const char *type_name(enum kind k)
{
    return k == COUNTER ? "counter" : k == HISTOGRAM ? "histogram" : "gauge";
}

void cb_metrics_render(struct cb_strbuf *out)
{
    pthread_mutex_lock(&registry_lock);
    size_t n = nentries;
    pthread_mutex_unlock(&registry_lock);
    /* Group by name: each family's HELP/TYPE once, then all its label sets. */
    for (size_t i = 0; i < n; i++) {
        const struct entry *e = entries[i];
        int seen = 0;
        for (size_t j = 0; j < i && !seen; j++)
            seen = strcmp(entries[j]->name, e->name) == 0;
        if (seen)
            continue;
        cb_strbuf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", e->name, e->help, e->name,
                         type_name(e->kind));
        for (size_t j = i; j < n; j++)
            if (strcmp(entries[j]->name, e->name) == 0)
                render_entry(out, entries[j]);
    }
}

int cb_metrics_value(const char *name, const char *labels, double *out)
{
    pthread_mutex_lock(&registry_lock);
    struct entry *e = find(name, labels ? labels : "");
    pthread_mutex_unlock(&registry_lock);
    if (!e)
        return -1;
    switch (e->kind) {
    case COUNTER: *out = (double)__atomic_load_n(&e->u.counter, __ATOMIC_RELAXED); return 0;
    case GAUGE: *out = (double)__atomic_load_n(&e->u.gauge, __ATOMIC_RELAXED); return 0;
    case GAUGE_FN: *out = e->u.fn.fn(e->u.fn.ctx); return 0;
    case HISTOGRAM: *out = (double)__atomic_load_n(&e->u.hist.count, __ATOMIC_RELAXED); return 0;
    }
    return -1;
}

void cb_metrics_free(void)
{
    pthread_mutex_lock(&registry_lock);
    for (size_t i = 0; i < nentries; i++) {
        struct entry *e = entries[i];
        if (e->kind == HISTOGRAM) {
            free(e->u.hist.bounds);
            free(e->u.hist.buckets);
        }
        free(e->name);
        free(e->labels);
        free(e->help);
        free(e);
        entries[i] = NULL;
    }
    nentries = 0;
    pthread_mutex_unlock(&registry_lock);
}
