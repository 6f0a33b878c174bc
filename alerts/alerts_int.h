/* Types shared by the files of alerts/. */
#ifndef CB_ALERTS_ALERTS_INT_H
#define CB_ALERTS_ALERTS_INT_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "alerts/alerts.h"
#include "storage/alert_store.h"

/* ---- a string-keyed hash map (chained); values are owned by the caller ---- */
struct alerts__map_entry {
    struct alerts__map_entry *next;
    char *key;
    void *value;
};
struct alerts__map {
    struct alerts__map_entry **b;
    size_t nb, n;
};
void *alerts__map_get(const struct alerts__map *m, const char *key);
/* Sets key (copied) to value. Returns 0 or -1 on OOM. */
int alerts__map_put(struct alerts__map *m, const char *key, void *value);
/* Removes key; returns its value or NULL. */
void *alerts__map_del(struct alerts__map *m, const char *key);
/* Calls fn on every value, then frees the map's own memory. */
void alerts__map_clear(struct alerts__map *m, void (*fn)(void *value));
/* Iterates: fn returns 1 to delete the entry (fn frees the value then). */
void alerts__map_sweep(struct alerts__map *m, int (*fn)(void *ctx, void *value), void *ctx);

/* ---- a deep copy of a transition (held notifications, storm groups) ---- */
struct alerts__tcopy {
    struct cb_transition t;
    struct cb_label *labels;
    char **notify;
    int64_t seq;
    char *json; /* the event JSON as persisted */
};
struct alerts__tcopy *alerts__tcopy_new(const struct cb_transition *t, int64_t seq,
                                        const char *json);
void alerts__tcopy_free(struct alerts__tcopy *c);

/* ---- the webhook sender (webhook.c) ---- */
struct alerts__webhook;
struct alerts__webhook_opts {
    int64_t timeout_ms, retry_min_ms, retry_max_ms;
    const struct cb_clock *clock;
    struct cb_alert_store *store;
    const struct cb_channel *channels; /* to find a row's URL by channel name */
    size_t nchannels;
    uint64_t *sent, *failed;           /* stats counters */
};
struct alerts__webhook *alerts__webhook_new(uv_loop_t *loop, const struct alerts__webhook_opts *o,
                                            char *err, size_t errlen);
/* Queues one delivery (already written to the outbox by the caller). */
int alerts__webhook_queue(struct alerts__webhook *w, const struct cb_outbox_row *row);
/* Undelivered rows held in memory. */
size_t alerts__webhook_pending(struct alerts__webhook *w);
/* Aborts transfers (rows stay undelivered in the outbox), closes handles,
 * then done(ctx). */
void alerts__webhook_close(struct alerts__webhook *w, void (*done)(void *ctx), void *ctx);

#endif
