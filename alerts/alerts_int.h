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

/* ---- silences (silences.c): matching and validation, no store, no log ---- */
struct alerts__silence;
struct alerts__silences {
    struct alerts__silence **v; /* by id */
    size_t n, cap;
};
/* Validates spec at `now` (docs/alerts.md "Silences") and builds a silence
 * (id 0 until set); a start before now counts from now. Returns 0 with *out
 * (free with alerts__silence_free), or -1 with err: one sentence saying what
 * is wrong, naming the matcher (1-based) it is about. */
int alerts__silence_new(const struct cb_silence_spec *spec, int64_t now,
                        struct alerts__silence **out, char *err, size_t errlen);
void alerts__silence_set_id(struct alerts__silence *s, int64_t id);
/* Builds a silence from its stored row (matchers in any form a version of
 * citybrain wrote). Returns 0 with *out, or -1 with err. */
int alerts__silence_load(const struct cb_silence_row *r, struct alerts__silence **out, char *err,
                         size_t errlen);
void alerts__silence_free(struct alerts__silence *s);
/* A view of s as a row (strings borrowed from s). */
void alerts__silence_row(const struct alerts__silence *s, struct cb_silence_row *out);
/* Ends s at `now`, by `by`: ends = now, and a start still to come = now.
 * Returns 0, 1 when it had already ended (nothing changed), -1 on OOM. */
int alerts__silence_end(struct alerts__silence *s, int64_t now, const char *by);
/* Takes s into the set. 0, or -1 on OOM (s is still the caller's). */
int alerts__silences_push(struct alerts__silences *set, struct alerts__silence *s);
struct alerts__silence *alerts__silences_find(const struct alerts__silences *set, int64_t id);
/* The id of a silence of the set active at `now` whose matchers all hold
 * for t, or 0. */
int64_t alerts__silenced_by(const struct alerts__silences *set, const struct cb_transition *t,
                            int64_t now);
/* Drops (and frees) the silences that ended at or before `before`. */
void alerts__silences_sweep(struct alerts__silences *set, int64_t before);
void alerts__silences_free(struct alerts__silences *set);

/* ---- the audit log (audit.c) ---- */
/* Validates e and queues it to the store at `at`. Returns its seq, or -1
 * with err (unknown action, no who, details not a JSON object, OOM). */
int64_t alerts__audit(struct cb_alert_store *store, int64_t at, const struct cb_audit_entry *e,
                      char *err, size_t errlen);

/* ---- {"KEY":[...]} answers read from the store (map.c) ---- */
/* Opens the list; returns the mark to give alerts__list_end. */
size_t alerts__list_begin(struct cb_strbuf *out, const char *key);
/* Closes it; when rc (the read's result) is not 0, what was appended since
 * the mark is dropped and the list is empty. Returns rc. */
int alerts__list_end(struct cb_strbuf *out, size_t mark, const char *key, int rc);

/* ---- the Alertmanager channel's payload (alertmanager.c) ---- */

/* Appends one postable alert of Alertmanager's v2 API for transition t:
 * labels alertname (the rule), severity and t's labels (those Alertmanager
 * can take); annotations title, message, title_XX/message_XX per language,
 * state, grade, citybrain_id, acked_by; startsAt (t->since, else t->at);
 * endsAt t->at when resolved, else now + 4 * resend_ms; generatorURL the
 * console's address when given. */
void alerts__am_alert(const struct cb_transition *t, const char *state, const char *severity,
                      const char *grade, int64_t now, int64_t resend_ms,
                      const char *console_url, struct cb_strbuf *b);

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
/* 1 when rows of (channel, alert id) wait or are in flight. */
int alerts__webhook_busy(const struct alerts__webhook *w, const char *channel,
                         const char *alert_id);
/* Undelivered rows held in memory. */
size_t alerts__webhook_pending(struct alerts__webhook *w);
/* Aborts transfers (rows stay undelivered in the outbox), closes handles,
 * then done(ctx). */
void alerts__webhook_close(struct alerts__webhook *w, void (*done)(void *ctx), void *ctx);

/* ---- one voice (voice.c; docs/cluster.md "Takeover") ---- */
/* Twins compute the same events from the same samples, but each stamps
 * `since` with its own processing time, so the same event's since differs
 * between them by their delay (milliseconds, more when one catches up). An
 * event is named by its base key "ID STATE SEVERITY" (joined by 0x1f) and
 * matched with a since within `tolerance_ms`; each event heard on the feed
 * accounts for at most one event kept. */
struct alerts__deferred {
    struct alerts__deferred *prev, *next;
    char *key;                 /* base key */
    int64_t since, kept_at;
    char *feed;                /* the alert feed's JSON (cb_transition_to_json) */
    struct alerts__tcopy *c;
};
#define ALERTS__HEARD_RING 4
struct alerts__heard {         /* the last events heard under one base key */
    struct {
        int64_t since, at;
        int used;              /* it already accounted for a kept event */
    } e[ALERTS__HEARD_RING];
    unsigned n;                /* entries written (the ring wraps) */
};
struct alerts__voice {
    struct alerts__map heard;  /* base key -> struct alerts__heard */
    struct alerts__map said;   /* "base key 0x1f since" -> int64_t * (when): this twin's own
                                  announcements, so their echo on the feed is not taken for
                                  the other twin's */
    struct alerts__deferred *head, *tail; /* oldest first */
    size_t ndeferred, max_deferred;
    int64_t tolerance_ms;
    uint64_t heard_total, dropped;
};
/* The base key of an event. */
void alerts__voice_key(const char *id, const char *state, const char *severity,
                       struct cb_strbuf *out);
/* An event heard on the feed at `now`: the oldest kept event it matches is
 * forgotten (the other twin announced it); otherwise it is remembered for
 * an event this twin has yet to compute. Returns 1 when a kept event was
 * forgotten, 0 when not, -1 on OOM. */
int alerts__voice_heard(struct alerts__voice *v, const char *key, int64_t since, int64_t now);
/* This twin announced the event (key, since) at `now`: its echo on the feed
 * will be recognised (the same since, exactly) and ignored. 0, or -1 on OOM. */
int alerts__voice_said(struct alerts__voice *v, const char *key, int64_t since, int64_t now);
/* 1 when (key, since) is this twin's own announcement, forgotten from then
 * on; else 0. */
int alerts__voice_echo(struct alerts__voice *v, const char *key, int64_t since);
/* Keeps an event this twin did not announce, unless a remembered event
 * heard on the feed matches it. Takes c and feed (freed unless kept).
 * Returns 1 kept, 0 heard already, -1 OOM. Beyond max_deferred the oldest is
 * dropped (counted). */
int alerts__voice_defer(struct alerts__voice *v, const char *key, int64_t since, int64_t now,
                        char *feed, struct alerts__tcopy *c);
/* The oldest kept event, out of the set (NULL: none). The caller frees it
 * with alerts__voice_deferred_free (set c NULL when it took c). */
struct alerts__deferred *alerts__voice_pop(struct alerts__voice *v);
void alerts__voice_deferred_free(struct alerts__deferred *d);
/* Forgets events heard or said before `before`, and drops (counted) kept events
 * kept since before `before`: the speaking twin had that long to announce
 * them. */
void alerts__voice_forget(struct alerts__voice *v, int64_t before);
void alerts__voice_free(struct alerts__voice *v);

#endif
