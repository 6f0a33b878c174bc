/* Alerts: everything after the rule engine's state machine. The engine
 * (rules/) decides when an instance moves (pending, firing, escalated,
 * resolved, acknowledged); this module receives every transition and
 *   - persists it (alert_instances upsert; alert_transitions for events),
 *   - applies silences (notifications held, state goes on),
 *   - gathers notifications of one rule and group for alerts.storm_window,
 *   - notifies through the rule's channels (MQTT, webhook with a durable
 *     outbox, log; JSON or CAP 1.2),
 *   - serves lists, history, silences and the shift handover to the API/CLI,
 *   - keeps the audit log of operator actions (acknowledgements, silences,
 *     rule reloads: cb_alerts_audit),
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
    /* A firing instance became stale or fresh again (no event, not in the
     * transition log: rules.md, "Missing data"), for the live feed only:
     * json is {"id","rule","stale":true|false,"at"}, borrowed for the call.
     * May be NULL. */
    void (*on_stale)(void *ctx, const char *json, size_t len);
    /* Time for silences, storm windows, outbox retries, handover. NULL: wall. */
    const struct cb_clock *clock;
    /* Publishes one event on the alert feed PREFIX/<rule> (json: len bytes,
     * cb_transition_to_json's object, borrowed). Called only while the
     * module speaks (cb_alerts_set_voice). Returns 0 when handed over, -1
     * otherwise (counted as feed_failed). NULL: no feed. */
    int (*feed)(void *ctx, const char *rule, const char *json, size_t len);
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

/* ---- one voice (docs/cluster.md) ----
 * Twins of a partition both persist every transition; only the one that
 * holds the lease announces (alert feed, channels, outbox). A module made
 * with cluster.partition set starts silent; without, it always speaks. */

/* Sets whether this twin speaks. While silent, each event is kept (deferred)
 * unless the feed already carried it; on gaining the voice, every event
 * still kept is announced, oldest first (feed, then channels, with silences
 * and storm grouping applied at that moment), and none is kept after. */
void cb_alerts_set_voice(struct cb_alerts *a, int speaking);
/* One message heard on the alert feed (either twin's): its id, state, since
 * and severity mark that event as announced for cluster.feed_memory, and
 * drop it from what this twin keeps. Returns 0, or -1 when json is not an
 * event object (ignored) or on OOM. */
int cb_alerts_feed_heard(struct cb_alerts *a, const char *json, size_t len);

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

/* Takes a live instance (firing, escalated or acknowledged; others are
 * ignored) into the Alertmanager resends without notifying it now: after a
 * restart, the daemon passes every restored instance
 * (cb_engine_foreach_instance), so the alerts an Alertmanager channel was
 * told of before are sent again at the next tick and kept alive there. A
 * cb_transition_fn (ctx is the struct cb_alerts). Loop thread. */
void cb_alerts_am_adopt(void *ctx, const struct cb_transition *t);

/* Sends what the storm windows hold whose time has come and releases held
 * notifications whose silence ended. The module's own timer calls it; tests
 * with a manual clock call it after moving the clock. */
void cb_alerts_tick(struct cb_alerts *a);

/* ---- operations (HTTP API, CLI) ---- */

/* ---- silences (docs/alerts.md "Silences") ---- */

/* One label matcher: `name op value`; op "=" (NULL or "" too), "!=", "=~" or
 * "!~", the last two with a POSIX extended regular expression that must
 * match the whole value (anchored, as Alertmanager). */
struct cb_silence_matcher {
    const char *name, *op, *value;
};
/* What an operator asks for (POST /api/silences). Strings are borrowed. */
struct cb_silence_spec {
    const struct cb_silence_matcher *matchers;
    size_t nmatchers;
    int64_t starts;                   /* ms since the epoch; before now means now */
    int64_t ends;                     /* ms since the epoch; after now and after starts */
    const char *comment, *created_by; /* both required, not blank */
};
/* Adds a silence: validated (every op known, every regex compiles, at least
 * one matcher that an empty label does not satisfy, created_by and comment
 * given, ends in the future and after starts), persisted, and recorded in
 * the audit log as silence_create. A silence whose start is to come holds
 * nothing until then. Returns 0 with *id, or -1 with err, a sentence for the
 * operator (the API's 400 message). */
int cb_alerts_silence_add(struct cb_alerts *a, const struct cb_silence_spec *s, int64_t *id,
                          char *err, size_t errlen);
/* Ends silence `id` now, by hand: `action` is CB_AUDIT_SILENCE_EXPIRE or
 * CB_AUDIT_SILENCE_DELETE (the same effect, audited under the name the
 * operator used). The silence stays listed, expired, with expired_by and
 * expired_at; a notification it held is released at once if its instance
 * still fires. Returns 0, 1 when the silence had already ended (nothing
 * changes, nothing is recorded), -1 when no silence `id` is listed. */
int cb_alerts_silence_expire(struct cb_alerts *a, int64_t id, const char *by,
                             const char *comment, const char *action);
/* How long an ended silence stays in the module's list (and GET
 * /api/silences) after its end; the store keeps it for
 * storage.retention.alerts (`citybrain silence list --all`). */
#define CB_SILENCE_LISTED_AFTER_END_MS (24 * 3600 * 1000LL)
/* Appends the JSON array of the listed silences, by id: active, scheduled
 * and ended less than CB_SILENCE_LISTED_AFTER_END_MS ago, each as
 * cb_alerts_silence_row_json writes it. */
void cb_alerts_silences_json(struct cb_alerts *a, struct cb_strbuf *out);
/* Appends silence `id`'s object. Returns 0, or -1 when it is not listed. */
int cb_alerts_silence_json(struct cb_alerts *a, int64_t id, struct cb_strbuf *out);
/* One silence's object, its state at `now`:
 * {"id","state":"active"|"scheduled"|"expired","matchers":[{"name","op","value"}],
 *  "starts","ends","comment","created_by","created_at","expired_by","expired_at"}
 * (expired_* null unless an operator ended it). */
struct cb_silence_row;
void cb_alerts_silence_row_json(const struct cb_silence_row *r, int64_t now,
                                struct cb_strbuf *out);
/* "active", "scheduled" or "expired" at `now`. */
const char *cb_alerts_silence_state(const struct cb_silence_row *r, int64_t now);

/* ---- the audit log (docs/alerts.md "Audit log") ---- */

/* The actions it records. A new kind of action is a name here and a line in
 * cb_audit_actions (audit.c). */
#define CB_AUDIT_ACK "ack"
#define CB_AUDIT_SILENCE_CREATE "silence_create"
#define CB_AUDIT_SILENCE_EXPIRE "silence_expire"
#define CB_AUDIT_SILENCE_DELETE "silence_delete"
#define CB_AUDIT_RULES_RELOAD "rules_reload"
#define CB_AUDIT_CLOSE "close" /* a stale alert instance closed by hand */
#define CB_AUDIT_READ_REFUSED "read_refused" /* an HTTP read refused (api/scope.c) */
extern const char *const cb_audit_actions[]; /* NULL-terminated */
int cb_alerts_audit_action_known(const char *name);
/* Appends "ack, silence_create, ... or rules_reload" (error messages). */
void cb_alerts_audit_actions_text(struct cb_strbuf *out);

/* One operator action. Strings are borrowed for the call. */
struct cb_audit_entry {
    const char *action;  /* one of cb_audit_actions */
    const char *who;     /* required: the operator's name, or "(sighup)"... */
    const char *target;  /* what it acted on (alert id, silence id); NULL: nothing */
    const char *note;    /* the operator's words; NULL: none */
    const char *details; /* the particulars, a JSON object text; NULL: none */
};
/* Records e at the module's clock, through the alert store's writer (loop
 * thread; never blocks; committed within milliseconds), and logs it at info.
 * Acknowledgements and silences record themselves; the daemon records rule
 * reloads, and any other operator action of the engine goes through here.
 * Returns the entry's seq, or -1 (logged): unknown action, no who, details
 * not a JSON object, out of memory. */
int64_t cb_alerts_audit(struct cb_alerts *a, const struct cb_audit_entry *e);
/* While fields is not NULL, every audit entry recorded (by cb_alerts_audit,
 * acknowledgements, closes, silences) gets fields, JSON members text such as
 * `"origin":"engine-a","control_id":"engine-a-17"`, added to its details:
 * the daemon sets it around an operator action that came from a peer engine
 * (docs/federation.md) and clears it (NULL) after. fields is borrowed until
 * cleared. */
void cb_alerts_audit_origin(struct cb_alerts *a, const char *fields);
/* GET /api/audit and `citybrain audit --json`, from any alert reader:
 * {"entries":[{"seq","at","who","action","target","note","details"}]}
 * with from <= at < to (action NULL: any), newest first, at most limit
 * (0: 10000). Returns 0, or -1 (out then holds an empty list). */
struct cb_alert_reader;
int cb_alerts_reader_audit_json(struct cb_alert_reader *r, int64_t from, int64_t to,
                                const char *action, size_t limit, struct cb_strbuf *out);

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
    uint64_t feed_failed;      /* feed publishes not handed over */
    /* one voice */
    int speaking;              /* 1 while this twin announces */
    size_t deferred;           /* events kept, not yet heard on the feed */
    uint64_t heard;            /* feed messages heard */
    uint64_t deferred_dropped; /* kept events dropped beyond the limit (100,000) */
    uint64_t takeover_announced; /* kept events announced on gaining the voice */
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
enum cb_channel_type { CB_CHANNEL_MQTT, CB_CHANNEL_WEBHOOK, CB_CHANNEL_LOG, CB_CHANNEL_ALERTMANAGER };
enum cb_channel_format { CB_FORMAT_JSON, CB_FORMAT_CAP };
struct cb_channel {
    char *name;
    enum cb_channel_type type;
    enum cb_channel_format format;
    char *url;    /* webhook; alertmanager: its /api/v2/alerts */
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
