/* Alerts: everything after the rule engine's state machine. The engine
 * (rules/) decides when an instance moves (pending, firing, escalated,
 * resolved, acknowledged); this module receives every transition and
 *   - persists it (alert_instances upsert; alert_transitions for events),
 *   - applies silences (notifications held, state goes on),
 *   - gathers notifications of one rule and group for alerts.storm_window,
 *   - notifies through the rule's channels (MQTT, webhook with a durable
 *     outbox, log; JSON or CAP 1.2),
 *   - serves lists, history, silences and the shift handover to the API/CLI,
 *   - gives persisted instances back on start (cb_alerts_load) so a restart
 *     neither loses nor repeats an alert.
 *
 * Threads: every function runs on the loop thread. Writes to SQLite go
 * through the alert store's writer thread (storage/alert_store.h). */
#ifndef CB_ALERTS_ALERTS_H
#define CB_ALERTS_ALERTS_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "base/clock.h"
#include "base/config.h"
#include "base/strbuf.h"
#include "rules/rules.h"

struct cb_alerts;

struct cb_alerts_hooks {
    void *ctx;
    /* Publishes on MQTT (the daemon wires cb_mqtt_publish, retained = 0).
     * Returns 0 when handed over, -1 otherwise. NULL: MQTT channels fail. */
    int (*publish)(void *ctx, const char *topic, const void *payload, size_t len, int qos);
    /* Every event transition as it is persisted, for SSE (GET /api/events):
     * seq is its alert_transitions seq; json is not NUL-terminated-dependent
     * (len given) and borrowed for the call. May be NULL. */
    void (*on_event)(void *ctx, uint64_t seq, const char *json, size_t len);
    /* Time for silences, storm windows, outbox retries, handover. NULL: wall. */
    const struct cb_clock *clock;
};

/* Creates the module: the channels of cfg (cb_channels_from_config: errors
 * name the line or the option), opens the alert store at db_path, loads
 * the active silences and starts the webhook sender (which resends the
 * undelivered outbox, in order, once the loop runs). NULL with err filled. */
struct cb_alerts *cb_alerts_new(uv_loop_t *loop, const struct cb_config *cfg, const char *db_path,
                                const struct cb_alerts_hooks *hooks, char *err, size_t errlen);

/* Receives one transition from the engine, synchronously on the loop. Every
 * transition updates the instance row; event transitions are appended to the
 * transition log, handed to on_event, and notified (unless silenced) through
 * t->notify or alerts.default_notify, gathered per storm group. */
void cb_alerts_on_transition(struct cb_alerts *a, const struct cb_transition *t);
/* A cb_transition_fn adapter: ctx is the struct cb_alerts. */
void cb_alerts_transition_cb(void *ctx, const struct cb_transition *t);

/* Restart: visits stored instances as transitions: pending and firing ones
 * (state PENDING or FIRING with severity, since, fired_at, clear_since,
 * stale, message, labels and the rule's identity key), and resolved ones
 * whose cooldown is still running (state RESOLVED, cooldown_until), with the
 * ack flag and time, so the daemon feeds them to cb_engine_restore before
 * any sample. Nothing is notified. Returns the number visited, or -1 on a
 * read error. */
typedef void (*cb_alerts_load_fn)(void *ctx, const struct cb_transition *t, int acked,
                                  int64_t acked_at);
int cb_alerts_load(struct cb_alerts *a, cb_alerts_load_fn fn, void *ctx);

/* Sends what the storm windows hold whose time has come and releases held
 * notifications whose silence ended. The module's own timer calls it; tests
 * with a manual clock call it after moving the clock. */
void cb_alerts_tick(struct cb_alerts *a);

/* ---- operations (HTTP API, CLI) ---- */

/* Adds a silence. matchers: JSON array of {"name":N,"value":V} (equality) or
 * {"name":N,"value":V,"regex":true} (POSIX extended regex, anchored) or
 * {"name":N,"op":"=~","value":V}; name "rule" matches the rule name.
 * Returns 0 with *id set, or -1 with err (bad JSON, empty list, ends <= starts). */
int cb_alerts_silence_add(struct cb_alerts *a, const char *matchers_json, int64_t starts,
                          int64_t ends, const char *comment, const char *by, int64_t *id,
                          char *err, size_t errlen);
/* Appends the JSON array of silences not yet expired:
 * [{"id","matchers":[...],"starts","ends","expires","comment","by","created_by",
 *   "created_at","active"}] ("expires" = "ends", "by" = "created_by", for the API). */
void cb_alerts_silences_json(struct cb_alerts *a, struct cb_strbuf *out);
/* The same from label pairs (the API's {"matchers":{"district":"d07"}} form):
 * equality matchers, `rule` naming the rule. */
int cb_alerts_silence_add_pairs(struct cb_alerts *a, const char *const *names,
                                const char *const *values, size_t n, int64_t starts, int64_t ends,
                                const char *comment, const char *by, int64_t *id, char *err,
                                size_t errlen);
/* Deletes a silence. Returns 0, or -1 when no such silence. */
int cb_alerts_silence_delete(struct cb_alerts *a, int64_t id);

/* Appends the JSON array of stored instances matching the filters (NULL: any):
 * [{"id","rule","state","severity","grade","labels":{},"since","at","message",
 *   "acknowledged","acked_by","acked_at","ack_note","cooldown_until","silenced"}].
 * Returns 0 or -1 (read error; out then holds []). */
int cb_alerts_list_json(struct cb_alerts *a, const char *state, const char *severity,
                        const char *rule, struct cb_strbuf *out);
/* Appends the JSON array of event transitions with from <= at < to. */
int cb_alerts_history_json(struct cb_alerts *a, int64_t from, int64_t to, struct cb_strbuf *out);
/* Shift handover: firing, unacknowledged instances firing for at least
 * older_than_ms at the module's clock. Same shape as cb_alerts_list_json. */
int cb_alerts_handover_json(struct cb_alerts *a, int64_t older_than_ms, struct cb_strbuf *out);

/* The same list from any alert reader (the CLI's read-only one). */
struct cb_alert_reader;
struct cb_alert_filter;
int cb_alerts_reader_list_json(struct cb_alert_reader *r, const struct cb_alert_filter *f,
                               struct cb_strbuf *out);

/* GET /api/alerts/history from a pool thread's reader:
 * {"transitions":[{"seq":N, ...the transition object}]}, newest first. */
int cb_alerts_reader_history_json(struct cb_alert_reader *r, int64_t from, int64_t to,
                                  const char *rule, size_t limit, struct cb_strbuf *out);

/* Counters for /metrics and tests. */
struct cb_alerts_stats {
    uint64_t transitions;      /* received */
    uint64_t events;           /* event transitions */
    uint64_t silenced;         /* event transitions held by a silence */
    uint64_t notifications;    /* channel sends (after storm grouping) */
    uint64_t grouped;          /* transitions folded into another's notification */
    uint64_t publish_failed;
    uint64_t webhook_sent;     /* outbox rows delivered */
    uint64_t webhook_failed;   /* failed attempts (each retried) */
    uint64_t unknown_channel;
    size_t outbox_pending;     /* undelivered rows in memory */
    uint64_t store_errors;
};
void cb_alerts_get_stats(struct cb_alerts *a, struct cb_alerts_stats *out);

/* Blocks until every queued store write is committed (tests, shutdown). */
int cb_alerts_sync(struct cb_alerts *a);

/* Sends what the storm windows hold, stops the timers and the webhook sender
 * (undelivered rows stay in the outbox for the next start), commits the store,
 * closes the uv handles, then calls done(ctx) on the loop and frees. */
void cb_alerts_close(struct cb_alerts *a, void (*done)(void *ctx), void *ctx);

/* ---- pieces shared with the CLI and the tests ---- */

/* One configured channel. */
enum cb_channel_type { CB_CHANNEL_MQTT, CB_CHANNEL_WEBHOOK, CB_CHANNEL_LOG };
enum cb_channel_format { CB_FORMAT_JSON, CB_FORMAT_CAP };
struct cb_channel {
    char *name;
    enum cb_channel_type type;
    enum cb_channel_format format;
    char *url;    /* webhook */
    char *prefix; /* mqtt; NULL: alerts.mqtt_prefix */
};
/* Parses alerts.channel lines. Returns 0 with *out (n channels; free with
 * cb_channels_free), or -1 with err naming the offending line's content. */
int cb_channels_parse(const struct cb_strlist *lines, struct cb_channel **out, size_t *n,
                      char *err, size_t errlen);
void cb_channels_free(struct cb_channel *c, size_t n);
/* The channels of a configuration (docs/alerts.md "Channels"): its
 * alerts.channel lines, then the built-in `log` (type=log) unless a line
 * defines a channel named log; every alerts.default_notify name must be one of
 * them. cb_alerts_new and the daemon's validation (cmd/validate.c) both use
 * it. Returns 0 with *out (n channels; free with cb_channels_free), or -1 with
 * err naming the option at fault. */
int cb_channels_from_config(const struct cb_config *cfg, struct cb_channel **out, size_t *n,
                            char *err, size_t errlen);

/* Severity mapping (docs/alerts.md). */
struct cb_severity_map {
    const char *cap_severity;  /* Minor, Moderate, Severe, Extreme */
    const char *cap_urgency;   /* Future, Expected, Immediate */
    const char *cap_certainty; /* Likely, Observed */
    const char *grade;         /* blue, yellow, orange, red */
};
const struct cb_severity_map *cb_alerts_severity_map(enum cb_severity s);
/* Parses "info".."critical" like cb_severity_parse, without needing rules/. */
int cb_alerts_severity_from_name(const char *name, enum cb_severity *out);

/* Renders one CAP 1.2 <alert> for a notification. `ref_*` name the earlier
 * message of the same alert (NULL: none). identifier/sent are given so the
 * caller keeps them for the next message's references. */
struct cb_cap_input {
    const char *identifier;
    const char *sender;
    int64_t sent_ms;
    const char *msg_type;      /* Alert, Update, Cancel */
    const char *references;    /* "sender,identifier,sent" or NULL */
    const char *event;         /* rule title or name */
    const char *headline;
    const char *description;
    enum cb_severity severity;
    const struct cb_transition *const *items; /* instances covered (areas) */
    size_t nitems;
    const char *rule;
    const char *state;
    /* One <info> block per language: info[0..ninfo) (language tag, event,
     * headline, description; description may be NULL). With ninfo 0, one
     * en-US block of event, headline and description above. */
    struct cb_cap_info {
        const char *language, *event, *headline, *description;
    } info[CB_LANGS];
    size_t ninfo;
};
void cb_cap_render(const struct cb_cap_input *in, struct cb_strbuf *out);
/* CAP dateTime "2024-11-24T01:35:20+00:00" for ms since the epoch. */
void cb_cap_datetime(int64_t ms, char out[32]);

#endif
