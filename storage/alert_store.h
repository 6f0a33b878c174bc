/* The alert store: alert instances, their transition log, silences, the
 * notification outbox and the audit log of operator actions, in the tables of
 * the main SQLite database (alert_instances, alert_transitions, silences,
 * outbox, cap_refs, audit_log).
 *
 * storage/ never logs, never exits: functions return codes and an error text.
 *
 * Threads. Writes are queued from the loop thread and committed by one
 * dedicated writer thread, in queue order, in batched transactions.
 * Why a thread and not a tiny WAL transaction on the loop: the storage writer
 * commits samples in transactions that may hold SQLite's single write lock for
 * tens of milliseconds; a synchronous alert write would wait for that lock (the
 * busy timeout) on the loop and stall ingestion exactly during an alert storm,
 * when thousands of transitions arrive within a second. Queued writes cost the
 * loop one malloc and a mutex; the writer batches a storm into a few commits.
 * Row keys the loop needs at once (transition seq, silence id, outbox seq,
 * audit seq) are
 * allocated by the loop from counters read at open: this module is the only
 * writer of those tables, so explicit keys never collide.
 *
 * Reads (lists for the API, the CLI, start-up) use a separate read connection
 * owned by the thread that opened the store (WAL: readers never wait for the
 * writer). They see what the writer has committed; cb_alert_store_sync waits
 * for the queue to drain when a caller needs its own writes. */
#ifndef CB_STORAGE_ALERT_STORE_H
#define CB_STORAGE_ALERT_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "base/strbuf.h"

struct cb_alert_store;

/* One alert instance row. Strings are borrowed by the callers of the write
 * functions (copied into the queue) and owned by the store in read callbacks
 * (valid during the callback only). labels is a JSON object text. */
struct cb_alert_row {
    const char *id, *rule, *labels, *state, *severity;
    int64_t since, at;
    const char *message;
    const char *acked_by; /* NULL: not acknowledged */
    int64_t acked_at;
    const char *ack_note;
    int64_t cooldown_until;
    int64_t updated;
    /* restart state (schema step 6): 0 / NULL when none */
    int64_t fired_at, clear_since;
    int stale;            /* bit 0: stale; bit 1: its last verdict was unknown */
    const char *rule_key;
    /* texts per language (schema step 7): JSON objects {"en-US":…,"zh-CN":…}
     * (cb_lang_texts_json), NULL for a rule with plain clauses only */
    const char *titles, *messages;
};

struct cb_outbox_row {
    int64_t seq;
    const char *channel;
    int64_t transition_seq;
    const char *alert_id;
    const char *content_type;
    const char *body;
    int64_t attempts;
    int64_t next_attempt;
};

struct cb_silence_row {
    int64_t id;
    const char *matchers; /* JSON array text */
    int64_t starts, ends;
    const char *comment, *created_by;
    int64_t created_at;
    int64_t expired_at;     /* ended by an operator at this time; 0: not */
    const char *expired_by; /* who ended it; NULL: not ended by hand */
};

/* One audit log entry: an operator action. details is a JSON object text or
 * NULL; target and note may be NULL. */
struct cb_audit_row {
    int64_t seq, at;
    const char *who, *action, *target, *note, *details;
};

/* Opens the writer and the read connection on `path` (cb_store_open_connection:
 * the schema, alert tables included, must exist: cb_store_open creates it)
 * and starts the writer thread. NULL with err filled. */
struct cb_alert_store *cb_alert_store_open(const char *path, char *err, size_t errlen);
/* Commits what is queued, stops the writer, closes both connections. Blocks
 * for at most one batch (shutdown). */
void cb_alert_store_close(struct cb_alert_store *s);
/* Blocks until every write queued so far is committed (tests, shutdown,
 * read-your-writes). Returns 0, or -1 when a write failed since open. */
int cb_alert_store_sync(struct cb_alert_store *s);
/* Writes that failed since open, and the last error text (may be ""). */
uint64_t cb_alert_store_errors(struct cb_alert_store *s, char *err, size_t errlen);

/* Next keys (loop thread): each call returns a fresh, increasing key. */
int64_t cb_alert_store_next_transition_seq(struct cb_alert_store *s);
int64_t cb_alert_store_next_silence_id(struct cb_alert_store *s);
int64_t cb_alert_store_next_outbox_seq(struct cb_alert_store *s);
int64_t cb_alert_store_next_audit_seq(struct cb_alert_store *s);

/* ---- queued writes (never block; -1 on OOM) ---- */
int cb_alert_store_put_instance(struct cb_alert_store *s, const struct cb_alert_row *r);
int cb_alert_store_add_transition(struct cb_alert_store *s, int64_t seq, const char *alert_id,
                                  const char *rule, const char *state, const char *severity,
                                  int64_t at, const char *json);
int cb_alert_store_add_silence(struct cb_alert_store *s, const struct cb_silence_row *r);
/* Records that an operator ended silence r->id: its starts, ends (the
 * moment it ended), expired_at and expired_by are written. */
int cb_alert_store_expire_silence(struct cb_alert_store *s, const struct cb_silence_row *r);
/* Appends r to the audit log (r->seq from cb_alert_store_next_audit_seq). */
int cb_alert_store_add_audit(struct cb_alert_store *s, const struct cb_audit_row *r);
int cb_alert_store_add_outbox(struct cb_alert_store *s, const struct cb_outbox_row *r);
/* Records a delivery attempt: delivered_at > 0 marks it delivered; otherwise
 * attempts, next_attempt and last_error are updated. */
int cb_alert_store_outbox_attempt(struct cb_alert_store *s, int64_t seq, int64_t attempts,
                                  int64_t next_attempt, int64_t delivered_at,
                                  const char *last_error);
/* Sets the CAP reference of a notification id, or deletes it when ref is NULL. */
int cb_alert_store_put_cap_ref(struct cb_alert_store *s, const char *notification,
                               const char *ref);

/* ---- reads (the opening thread, or a read-only reader) ---- */

/* A read-only handle for the CLI (`citybrain alerts`): no writer, no thread. */
struct cb_alert_reader;
struct cb_alert_reader *cb_alert_reader_open(const char *path, char *err, size_t errlen);
void cb_alert_reader_close(struct cb_alert_reader *r);
/* The store's own reader (owned by the store). */
struct cb_alert_reader *cb_alert_store_reader(struct cb_alert_store *s);

/* Filters for instance lists; NULL or 0 fields do not filter. */
struct cb_alert_filter {
    const char *state;       /* stored instance state: pending, firing, resolved, inactive */
    const char *severity;
    const char *rule;
    int unacked_only;
    int64_t since_before;    /* since <= this (shift handover), 0: no filter */
    size_t limit;            /* 0: 10000 */
};

typedef int (*cb_alert_row_fn)(void *ctx, const struct cb_alert_row *r);
/* Visits instances matching f in (rule, id) order; fn returns non-zero to stop.
 * Returns 0, or -1 with the reader's error. */
int cb_alert_reader_instances(struct cb_alert_reader *r, const struct cb_alert_filter *f,
                              cb_alert_row_fn fn, void *ctx);
/* Appends a JSON array of the transition log's objects with from <= at < to,
 * in seq order, at most `limit` (0: 10000). Returns 0 or -1. */
int cb_alert_reader_history_json(struct cb_alert_reader *r, int64_t from, int64_t to,
                                 size_t limit, struct cb_strbuf *out);
/* One stored event transition: its seq and JSON (borrowed for the call).
 * Return non-zero to stop. Same shape as the API's SSE resume callback. */
typedef int (*cb_alert_event_fn)(void *ctx, uint64_t seq, const char *json, size_t len);
/* Visits transitions with from <= at < to (rule NULL: any), newest first when
 * newest_first, at most limit (0: 10000). Returns 0 or -1. */
int cb_alert_reader_transitions(struct cb_alert_reader *r, int64_t from, int64_t to,
                                const char *rule, int newest_first, size_t limit,
                                cb_alert_event_fn fn, void *ctx);
typedef int (*cb_silence_row_fn)(void *ctx, const struct cb_silence_row *r);
/* Visits silences whose end is after `after` (INT64_MIN: every stored one),
 * by id. Returns 0 or -1. */
int cb_alert_reader_silences(struct cb_alert_reader *r, int64_t after, cb_silence_row_fn fn,
                             void *ctx);
typedef int (*cb_audit_row_fn)(void *ctx, const struct cb_audit_row *r);
/* Visits audit entries with from <= at < to (action NULL: any), newest first,
 * at most limit (0: 10000); fn returns non-zero to stop. Returns 0 or -1. */
int cb_alert_reader_audit(struct cb_alert_reader *r, int64_t from, int64_t to,
                          const char *action, size_t limit, cb_audit_row_fn fn, void *ctx);
typedef int (*cb_cap_ref_fn)(void *ctx, const char *notification, const char *ref);
/* Visits every stored CAP reference. */
int cb_alert_reader_cap_refs(struct cb_alert_reader *r, cb_cap_ref_fn fn, void *ctx);
typedef int (*cb_outbox_row_fn)(void *ctx, const struct cb_outbox_row *r);
/* Visits undelivered outbox rows in seq order. */
int cb_alert_reader_outbox(struct cb_alert_reader *r, cb_outbox_row_fn fn, void *ctx);
/* Counts outbox rows: delivered (1) or undelivered (0). -1 on error. */
int64_t cb_alert_reader_outbox_count(struct cb_alert_reader *r, int delivered);
const char *cb_alert_reader_error(struct cb_alert_reader *r);

/* Server-sent events resume: visits the transition log rows with seq >
 * after_seq in seq order, at most `limit` (0: 10000); fn returns non-zero to
 * stop. Returns 0, or -1 with the reader's error. */
int cb_alert_reader_events_after(struct cb_alert_reader *r, uint64_t after_seq, size_t limit,
                                 cb_alert_event_fn fn, void *ctx);

#endif
