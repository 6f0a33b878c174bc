/* The engine's own counters, gauges and histograms, rendered for /metrics in
 * the Prometheus text format (version 0.0.4).
 *
 * Register once, at start-up, from the loop thread: registration returns a slot
 * that stays valid until cb_metrics_free(). Registering the same (name, labels)
 * again returns the same slot. Updating a slot is lock-free and safe from any
 * thread (relaxed atomics): the Paho thread counts drops, the storage writer
 * records commit latencies. rules/ and storage/ hold no process-wide state:
 * they expose their own stats structs instead, and the daemon publishes those
 * through gauge functions. */
#ifndef CB_BASE_METRICS_H
#define CB_BASE_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "base/strbuf.h"

struct cb_histogram;

/* name: "citybrain_ingest_messages_total"; labels: "" or `result="ok"` (the
 * text between the braces, already quoted); help: one line. NULL on OOM or
 * when the registry is full (the caller may pass NULL slots to the updaters,
 * which then do nothing). */
uint64_t *cb_metrics_counter(const char *name, const char *labels, const char *help);
int64_t *cb_metrics_gauge(const char *name, const char *labels, const char *help);
/* A gauge computed when /metrics is rendered, on the thread that renders it. */
int cb_metrics_gauge_fn(const char *name, const char *labels, const char *help,
                        double (*fn)(void *ctx), void *ctx);
/* Cumulative histogram with the given upper bounds (ascending, +Inf implied). */
struct cb_histogram *cb_metrics_histogram(const char *name, const char *labels, const char *help,
                                          const double *bounds, size_t nbounds);

static inline void cb_counter_add(uint64_t *c, uint64_t n)
{
    if (c)
        __atomic_fetch_add(c, n, __ATOMIC_RELAXED);
}
static inline uint64_t cb_counter_get(const uint64_t *c)
{
    return c ? __atomic_load_n(c, __ATOMIC_RELAXED) : 0;
}
static inline void cb_gauge_set(int64_t *g, int64_t v)
{
    if (g)
        __atomic_store_n(g, v, __ATOMIC_RELAXED);
}
static inline void cb_gauge_add(int64_t *g, int64_t v)
{
    if (g)
        __atomic_fetch_add(g, v, __ATOMIC_RELAXED);
}
void cb_histogram_observe(struct cb_histogram *h, double value);

/* Latency bounds in seconds for commit, evaluation and notification timings. */
extern const double cb_metrics_latency_bounds[];
extern const size_t cb_metrics_latency_nbounds;

/* Appends the exposition of every registered metric, grouped by name with one
 * HELP and TYPE line per name. */
void cb_metrics_render(struct cb_strbuf *out);
/* Looks up a registered counter or gauge value by name and labels (tests). */
int cb_metrics_value(const char *name, const char *labels, double *out);
/* Frees every slot; pointers handed out before become invalid. */
void cb_metrics_free(void);

#endif
