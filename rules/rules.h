/* The rule language: compile rule files, evaluate them over samples.
 * (Interface seam fixed by the foundation; the rules issue implements it and
 * may add to it, but keeps these names and meanings.)
 *
 * rules/ never logs, never exits, never touches the network: it returns codes
 * and diagnostics, and emits transitions through a callback. Time comes from
 * the struct cb_clock the engine is given. */
#ifndef CB_RULES_RULES_H
#define CB_RULES_RULES_H

#include <stddef.h>
#include <stdint.h>

#include "base/clock.h"
#include "base/sample.h"
#include "base/strbuf.h"

/* ---- topic patterns ------------------------------------------------------- */

/* A compiled MQTT topic pattern of a `match` clause: levels split on '/'; a
 * level `{name}` matches one level and binds the label `name`, `+` matches one
 * level unbound, `#` (last level only) matches the rest (zero or more levels). */
struct cb_topic_pattern;

struct cb_topic_capture {
    const char *name;   /* the label name (owned by the pattern) */
    const char *value;  /* points into the matched topic; not NUL-terminated */
    size_t len;
};

#define CB_TOPIC_MAX_LEVELS 64

/* Compiles text[0..len). Returns the pattern, or NULL with a message in err
 * (and the byte offset of the fault in *err_off when not NULL); NULL with
 * err "out of memory" on OOM. Free with cb_topic_pattern_free. */
struct cb_topic_pattern *cb_topic_pattern_compile(const char *text, size_t len, char *err,
                                                  size_t errlen, size_t *err_off);
void cb_topic_pattern_free(struct cb_topic_pattern *p);
/* The pattern's text, NUL-terminated. */
const char *cb_topic_pattern_text(const struct cb_topic_pattern *p);
size_t cb_topic_pattern_label_count(const struct cb_topic_pattern *p);
const char *cb_topic_pattern_label(const struct cb_topic_pattern *p, size_t i);
/* 1 when the pattern binds `label`. */
int cb_topic_pattern_binds(const struct cb_topic_pattern *p, const char *label);
/* Matches a NUL-terminated topic. Returns the number of captures written to
 * caps (at most maxcaps, in the pattern's label order), or -1 when the topic
 * does not match. */
int cb_topic_pattern_match(const struct cb_topic_pattern *p, const char *topic,
                           struct cb_topic_capture *caps, size_t maxcaps);

/* An index of many patterns (a trie over levels): matching a topic costs in
 * proportion to its levels and to the patterns it can match, not to the
 * number of patterns loaded. Values are the caller's 32-bit tags. */
struct cb_topic_index;

struct cb_topic_index *cb_topic_index_new(void);
void cb_topic_index_free(struct cb_topic_index *x);
/* Adds a pattern (borrowed: it must outlive the index) with its tag. 0 or -1 (OOM). */
int cb_topic_index_add(struct cb_topic_index *x, const struct cb_topic_pattern *p, uint32_t tag);
/* Calls fn(ctx, tag) for each pattern matching topic (in no particular order)
 * and returns how many matched. */
size_t cb_topic_index_match(const struct cb_topic_index *x, const char *topic,
                            void (*fn)(void *ctx, uint32_t tag), void *ctx);

/* ---- compiling ----------------------------------------------------------- */

struct cb_ruleset; /* opaque, immutable once compiled; shared by reference */

enum cb_diag_severity { CB_DIAG_ERROR, CB_DIAG_WARNING, CB_DIAG_NOTE };

struct cb_diag {
    enum cb_diag_severity severity;
    const char *code;   /* stable, e.g. "E012" */
    char *file;
    int line, col;      /* 1-based */
    int span;           /* caret length in columns, >= 1 */
    char *message;      /* "unknown aggregate 'avgg'" */
    char *hint;         /* "did you mean 'avg'?" or NULL */
    char *source_line;  /* the text of that line, without newline, or NULL */
};

struct cb_diags {
    struct cb_diag *items;
    size_t n, cap;
    size_t errors;
};

void cb_diags_free(struct cb_diags *d);
/* gcc/rustc style: "file:line:col: error: message (hint)\n  12 | src\n     |   ^~~\n" */
void cb_diags_render_text(const struct cb_diags *d, struct cb_strbuf *out);
/* One JSON array of {"file","line","col","span","severity","code","message","hint"}. */
void cb_diags_render_json(const struct cb_diags *d, struct cb_strbuf *out);

/* Records a diagnostic that has no position in a rule file (a configuration
 * problem, no rules at all): rendered "file: error: message (hint)". file and
 * hint may be NULL. For the callers that validate rules together with what
 * surrounds them (cmd/validate.c). */
void cb_diags_add(struct cb_diags *d, enum cb_diag_severity sev, const char *code,
                  const char *file, const char *hint, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

/* What a compilation checks beyond the language itself. With check_notify,
 * every name of a rule's `notify` clause must be one of channels[0..n): any
 * other is error E029 at its position, with a did-you-mean among them and
 * channels_note (where the names come from, e.g. "channels of
 * etc/citybrain.conf: log, ops") in the message. Borrowed for the call. */
struct cb_rules_opts {
    int check_notify;
    const char *const *channels;
    size_t nchannels;
    const char *channels_note;
};

/* Compiles every path (a *.rules file, or a directory: every *.rules in it, in
 * name order). Returns a ruleset, or NULL when any error was found (all of
 * them are in diags; a ruleset is never built from a file with errors).
 * The caller frees the ruleset with cb_ruleset_release. opts may be NULL
 * (cb_ruleset_compile: the language only, for replay and test). */
struct cb_ruleset *cb_ruleset_compile_opts(const char *const *paths, size_t npaths,
                                           const struct cb_rules_opts *opts,
                                           struct cb_diags *diags);
struct cb_ruleset *cb_ruleset_compile(const char *const *paths, size_t npaths,
                                      struct cb_diags *diags);
/* Compiles from memory (tests, the API): `name` is used in diagnostics. */
struct cb_ruleset *cb_ruleset_compile_source_opts(const char *name, const char *src, size_t len,
                                                  const struct cb_rules_opts *opts,
                                                  struct cb_diags *diags);
struct cb_ruleset *cb_ruleset_compile_source(const char *name, const char *src, size_t len,
                                             struct cb_diags *diags);
void cb_ruleset_release(struct cb_ruleset *rs);
size_t cb_ruleset_count(const struct cb_ruleset *rs);
/* The files the ruleset was compiled from (for the file watcher). */
size_t cb_ruleset_file_count(const struct cb_ruleset *rs);
const char *cb_ruleset_file(const struct cb_ruleset *rs, size_t i);

/* ---- languages of rule texts ----------------------------------------------- */

/* A rule may give its title and message in several languages (docs/rules.md,
 * "Languages"): the plain clause is English, a tagged one (`title zh "…"`)
 * another language. The order is the order of "titles" and "messages" in the
 * JSON and of CAP's <info> blocks. */
enum cb_lang { CB_LANG_EN = 0, CB_LANG_ZH, CB_LANGS };

/* The BCP 47 tag of a language: "en-US", "zh-CN"; NULL out of range. */
const char *cb_lang_tag(enum cb_lang l);
/* Appends texts (one per enum cb_lang, NULL where a language has none) as a
 * JSON object {"en-US":…,"zh-CN":…} of the languages that have one, in enum
 * order; appends nothing when none has. Returns how many it wrote. The alert
 * store keeps an instance's titles and messages in this form. */
int cb_lang_texts_json(const char *const *texts, struct cb_strbuf *out);

/* ---- transitions ---------------------------------------------------------- */

enum cb_alert_state {
    CB_ALERT_INACTIVE = 0,
    CB_ALERT_PENDING,
    CB_ALERT_FIRING,
    CB_ALERT_ESCALATED,
    CB_ALERT_RESOLVED,
    CB_ALERT_ACKNOWLEDGED,
    CB_ALERT_PROGRESS, /* not an event: what a restart must know changed (clear ... for
                          progress started or stopped, stale marked or cleared) */
};

enum cb_severity { CB_SEV_INFO = 0, CB_SEV_WARNING, CB_SEV_MAJOR, CB_SEV_CRITICAL };

const char *cb_alert_state_name(enum cb_alert_state s);
const char *cb_severity_name(enum cb_severity s);
int cb_severity_parse(const char *name, enum cb_severity *out);

struct cb_label {
    const char *name;
    const char *value;
};

/* One change of an alert instance. Every field is borrowed for the duration of
 * the callback; copy what you keep. `state` is what happened: PENDING (the
 * condition started holding; not an event, but persisted so a `for` resumes
 * after a restart), FIRING, ESCALATED, RESOLVED, ACKNOWLEDGED, or INACTIVE
 * (a pending instance whose condition stopped holding before it fired). */
struct cb_transition {
    const char *id;           /* "river_flood/district=d07", stable per (rule, key labels) */
    const char *rule;
    enum cb_alert_state state;
    enum cb_severity severity;
    const struct cb_label *labels;
    size_t nlabels;
    int64_t at;               /* event time of the evaluation that caused it, ms */
    int64_t since;            /* pending or firing since, ms (0 when none) */
    const char *message;      /* rendered template, or NULL */
    const char *title;        /* the rule's title, or NULL */
    /* Per language (enum cb_lang), for a rule that gives its texts in languages
     * (a tagged clause): its title and the message rendered from that
     * language's template, NULL where it gives none. All NULL for a rule with
     * plain clauses only. `title` and `message` are the first language's
     * that has one (English first). */
    const char *titles[CB_LANGS];
    const char *messages[CB_LANGS];
    const char *const *notify;/* channel names of the rule's notify clause */
    size_t nnotify;           /* 0: the configured default channels */
    const char *acked_by;     /* ACKNOWLEDGED: who; else NULL */
    const char *ack_note;
    int64_t cooldown_until;   /* RESOLVED: the instance may not fire again before this */
    int stale;                /* firing, but without evidence: its last verdict was unknown
                                 (rules.md, "Missing data") or no sensor of the instance has
                                 sent a sample for stale_after; it stays as it is, marked stale */
    int64_t last_sample;      /* newest sample time of the instance's sensors, 0 if none */
    double value;             /* the `when` value: the left operand of the first comparison
                                 of the rule's `when` (outside `sensors:`, the leftmost
                                 innermost: A of `A > B and C < D`) at the instance's last
                                 evaluation; NaN when unknown (no comparison, no evidence,
                                 not evaluated since a restart). Not persisted. */
    /* What a restart needs besides the above (persisted, not in the JSON): */
    int64_t fired_at;         /* firing: when it fired (`after ... unacked` counts from it) */
    int64_t clear_since;      /* firing: since when the clear condition holds, 0 if it does not */
    int unknown;              /* firing: its last verdict was unknown (one cause of stale) */
    const char *rule_key;     /* the rule's identity (rules__rule.key): state is kept across a
                                 reload or restart only while it is unchanged */
    const char *reason;       /* RESOLVED by the engine rather than by evidence: "rule removed",
                                 "rule changed", "closed by hand"; NULL otherwise (in the JSON) */
    const char *closed_by;    /* RESOLVED "closed by hand": the operator and the note (the JSON's */
    const char *close_note;   /* "by" and "note", as for an acknowledgement); else NULL */
};

/* 1 for the states that are events (published, notified, shown): firing,
 * escalated, resolved, acknowledged. */
int cb_transition_is_event(const struct cb_transition *t);
/* Appends the transition as the JSON object of rules.md "Alert transitions":
 * {"id","rule","state","severity","labels":{},"at","since","message"}, and
 * "titles":{"en-US":…,"zh-CN":…} and "messages":{…} when the transition has
 * texts per language (the languages it has, in enum cb_lang order). */
void cb_transition_to_json(const struct cb_transition *t, struct cb_strbuf *out);

typedef void (*cb_transition_fn)(void *ctx, const struct cb_transition *t);

/* ---- evaluating ----------------------------------------------------------- */

struct cb_engine; /* opaque; single-threaded: the loop thread only */

struct cb_engine_options {
    int64_t max_skew_ms;   /* default 60 s */
    int64_t lateness_ms;   /* default 5 min */
    int64_t stale_after_ms;/* a firing instance none of whose sensors sent a sample
                              this long is marked stale (default 10 min) */
};

/* Counters the engine keeps; the daemon publishes them in /metrics. */
struct cb_engine_stats {
    uint64_t samples;          /* samples offered */
    uint64_t evaluated;        /* (sample x matching rule) evaluations */
    uint64_t late;             /* older than now - lateness: not evaluated */
    uint64_t future;           /* more than max_skew ahead: rejected */
    uint64_t quarantined;      /* outside a `valid` range */
    uint64_t ticks;
    uint64_t transitions;
    uint64_t eval_ns;          /* time spent evaluating, for the average */
    size_t instances;          /* live alert instances */
    size_t windows;            /* live windows */
    size_t window_samples;     /* samples held in windows */
    size_t window_bytes;       /* memory the windows hold (ring buffers, deques) */
};

/* What happened to one offered sample. */
enum cb_sample_verdict {
    CB_SAMPLE_ACCEPTED = 0,  /* fed to windows and rules (or matched no rule) */
    CB_SAMPLE_LATE,          /* store it; rules ignored it */
    CB_SAMPLE_FUTURE,        /* reject it: do not store */
    CB_SAMPLE_QUARANTINED,   /* store it in quarantine, with the rule's name */
};

/* Creates an engine over a ruleset (the engine keeps its own reference).
 * `on_transition` receives every state change, synchronously, on the calling
 * thread. NULL on OOM. */
struct cb_engine *cb_engine_new(struct cb_ruleset *rs, const struct cb_clock *clock,
                                const struct cb_engine_options *opts,
                                cb_transition_fn on_transition, void *ctx);
void cb_engine_free(struct cb_engine *e);

/* Offers the samples of one message of `topic` (device: SenML bn or NULL).
 * verdicts[i] (may be NULL) receives each sample's verdict; quarantine_rule[i]
 * (may be NULL) the name of the rule whose `valid` refused it. Evaluates the
 * instances the topic affects. Returns 0, or -1 on OOM. */
int cb_engine_offer(struct cb_engine *e, const char *topic, const char *device,
                    const struct cb_sample *samples, size_t n,
                    enum cb_sample_verdict *verdicts, const char **quarantine_rule);

/* Evaluates every instance at the engine clock's now (the 1 s tick). */
void cb_engine_tick(struct cb_engine *e);

/* Replaces the ruleset (hot reload). Instances of rules whose identity
 * (name, match, per, when, for, clear) is unchanged keep their state and
 * acknowledgement and take the new presentation (title, message, severity,
 * notify, escalation); instances of removed or changed rules resolve with the
 * reason "rule removed" or "rule changed" (pending ones become inactive);
 * windows of the same (metric, width) keep their samples; new rules start
 * empty. */
int cb_engine_swap(struct cb_engine *e, struct cb_ruleset *rs);

/* Acknowledges a firing instance. Returns 0 and emits ACKNOWLEDGED, 1 when it
 * was already acknowledged (idempotent, nothing emitted), -1 when no firing
 * instance has that id. */
int cb_engine_ack(struct cb_engine *e, const char *id, const char *by, const char *note);

/* Closes a stale firing instance by hand (docs/rules.md, "Missing data": an
 * instance with no evidence either way stays as it is until an operator ends
 * it): emits RESOLVED with reason "closed by hand", by and note (both
 * required, copied). Returns 0, 1 when the instance is firing but not stale
 * (it resolves on evidence: nothing emitted), -1 when no firing instance has
 * that id. */
int cb_engine_close(struct cb_engine *e, const char *id, const char *by, const char *note);

/* Restores an instance persisted before a restart (from the alert store),
 * before any sample is offered: state PENDING or FIRING (with severity,
 * since, fired_at, clear_since, stale, ack, and its messages: every
 * language's in saved->messages, else saved->message for the first), or
 * RESOLVED with a cooldown
 * still running. No transition is emitted now. Returns 0 when restored; 1
 * when the rule is gone or its identity (saved->rule_key) changed: the
 * instance is then ended at the next cb_engine_tick, resolved (or made
 * inactive, if pending) with the reason "rule removed" or "rule changed";
 * -1 on OOM. */
int cb_engine_restore(struct cb_engine *e, const struct cb_transition *saved, int acked,
                      int64_t acked_at);

/* Feeds one sample into the windows only (no evaluation, no transitions):
 * used on start to rebuild windows from stored samples. */
int cb_engine_prime(struct cb_engine *e, const char *topic, const struct cb_sample *s);
/* Sets the latest value and time of one series (and the time of its
 * sensor) when x is newer than what the engine has, without touching
 * windows: used on start, after the windows are primed, so `level` and
 * `age()` of every sensor the store knows are what they were before a
 * restart, however long ago it last spoke. Binds the sensor to its rules
 * (a group instance knows all its members). 0, or -1 on OOM. */
int cb_engine_prime_latest(struct cb_engine *e, const char *topic, const struct cb_sample *x);
/* The longest window any loaded rule needs, in ms (how far back to prime). */
int64_t cb_engine_max_window_ms(const struct cb_engine *e);

void cb_engine_get_stats(const struct cb_engine *e, struct cb_engine_stats *out);
/* The number of rules loaded now. */
size_t cb_engine_rule_count(const struct cb_engine *e);
/* 1 when a rule of that name is loaded. */
int cb_engine_has_rule(const struct cb_engine *e, const char *name);

/* Visits the current instances (GET /api/alerts, /api/rules): the transition
 * struct describes the current state (PENDING, FIRING, or ESCALATED for a
 * firing instance raised above its rule's severity); a firing instance's
 * message is the one of its last transition (firing, escalation or
 * acknowledgement). */
void cb_engine_foreach_instance(const struct cb_engine *e, cb_transition_fn fn, void *ctx);

/* A number that changes whenever what cb_engine_foreach_instance shows
 * changes: every emitted transition (acknowledgements included), every swap
 * and every restore. A firing instance is shown with the message of its last
 * transition, so telemetry that moves a window without a transition does not
 * change the listing. For caches of rendered listings (GET /api/alerts). */
uint64_t cb_engine_version(const struct cb_engine *e);

/* Describes each loaded rule as a JSON array element into out:
 * {"name","title","titles"?,"metrics":[...],"file","line","match":[...],"per":[...],"severity",
 * "instances":N,"firing":N}: "titles" by language tag for a rule that gives languages,
 * "metrics" the distinct metrics the rule reads (valid, latest values, age, windows). */
void cb_engine_rules_json(const struct cb_engine *e, struct cb_strbuf *out);

#endif
