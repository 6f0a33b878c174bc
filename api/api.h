/* The HTTP API and dashboard: h2o (libuv build) on the daemon's loop.
 *
 * api/ knows HTTP and nothing of rules, alerts or storage: every endpoint's
 * data comes from a struct cb_api_provider the daemon fills. api/ parses and
 * validates the request (400 with a message for bad parameters), checks the
 * bearer token on writes (401 without one, 403 with the read-only one), calls
 * the provider, and wraps the answer.
 *
 * Provider answers. Every provider function writes its answer into `out` and
 * returns an HTTP status. For a status below 400, `out` holds the JSON
 * document sent as the body. For a status of 400 or more, `out` holds a plain
 * message (UTF-8, no JSON) that api/ sends as {"error":"<message>"}. A
 * function left NULL makes its endpoint answer 501 {"error":"not available"}.
 *
 * Threads. The "loop" functions are called on the loop thread and must not
 * block (they answer from in-memory state: the alert table, the rule set,
 * silences). The "pool" functions read SQLite: api/ calls them on the libuv
 * thread pool (uv_queue_work) and sends the answer from the after-work
 * callback on the loop. A pool function is given a read connection made by
 * the provider's reader_open (e.g. a struct cb_store_reader): api/ keeps these
 * in a locked free list and checks one out per call, so each connection is
 * used by one thread at a time and never concurrently; they are closed with
 * reader_close when the API is closed. Pool functions must not touch loop
 * state (the engine, the alert table): only the reader and immutable ctx.
 *
 * The console's own endpoints answer from the configuration, without the
 * provider: GET /api/console ({"time_zone","city_map","writes","languages"})
 * and GET /api/city (the http.city_map GeoJSON file as it is on disk).
 *
 * Server-Sent Events. cb_api_event() pushes one alert transition to every
 * /api/events client (`id: SEQ`, `event: transition`, `data: JSON`). A client
 * that reconnects with Last-Event-ID gets the transitions after that seq from
 * events_since (pool thread, from the alert_transitions table) before the live
 * ones; a transition that arrives live during that read is sent once. */
#ifndef CB_API_API_H
#define CB_API_API_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "base/config.h"
#include "base/strbuf.h"

struct cb_api;

/* GET /api/alerts filters; NULL = any. Values are validated by api/:
 * state is one of pending, firing, escalated, acknowledged, resolved;
 * severity one of info, warning, major, critical. */
struct cb_api_alert_filter {
    const char *state;
    const char *severity;
    const char *rule;
    /* A department's scope (NULL: none): the provider renders only the
     * instances for which keep(keep_ctx, rule, label names, values, n) says
     * 1, so a department's answer costs its alerts, not the city's. */
    int (*keep)(const void *keep_ctx, const char *rule, const char *const *names,
                const char *const *values, size_t n);
    const void *keep_ctx;
};

/* Whether an alert provider should render instance t under filter f: 1
 * unless f has a department's keep that refuses it (an instance with more
 * labels than a judge reads is refused). */
struct cb_transition;
int cb_api_alert_kept(const struct cb_api_alert_filter *f, const struct cb_transition *t);

/* GET /api/series: from <= ts < to, buckets of step_ms. api/ fills defaults
 * (to = now, from = to - 1h, step chosen for ~240 buckets, at least 1 s) and
 * bounds the bucket count (at most 10,000). */
struct cb_api_series_query {
    const char *topic;
    const char *metric;
    int64_t from_ms, to_ms, step_ms;
};

/* GET /api/alerts/history: transitions with from <= at < to, newest first,
 * at most `limit` (default 1,000, at most 10,000); rule may be NULL. */
struct cb_api_history_query {
    int64_t from_ms, to_ms;
    size_t limit;
    const char *rule;
};

/* GET /api/audit: entries with from <= at < to, newest first, at most
 * `limit` (default 1,000, at most 10,000); action may be NULL (any). api/
 * checks that action is a word; the provider that it names an action. */
struct cb_api_audit_query {
    int64_t from_ms, to_ms;
    size_t limit;
    const char *action;
};

/* One matcher of a silence, as the request gave it; op NULL when absent. */
struct cb_api_matcher {
    const char *name, *op, *value;
};

/* POST /api/silences body (docs/alerts.md "Silences"), its shape checked by
 * api/: {"matchers":[{"name":N,"value":V,"op":O}...],"starts":MS,"ends":MS,
 *  "comment":"...","created_by":"..."}, with no other member; name 1-128
 * bytes, value up to 256, at most 32 matchers; ends required, starts
 * optional; comment and created_by required, not blank. The provider checks
 * the meaning (op, regular expressions, times) and answers 400 with a
 * message when it is wrong. */
struct cb_api_silence {
    const struct cb_api_matcher *matchers;
    size_t nmatchers;
    int64_t starts_ms; /* 0 when not given */
    int64_t ends_ms;
    const char *comment;
    const char *created_by;
};

/* One transition for SSE resume: events_since calls it in seq order. */
typedef int (*cb_api_event_fn)(void *emit_ctx, uint64_t seq, const char *json, size_t len);

/* A label of the Prometheus API's series (both strings NUL-terminated). */
struct cb_api_label {
    const char *name, *value;
};

/* One series of the Prometheus API (/api/v1, docs/api.md): a sensor's
 * metric. `labels` are the topic's labels (the sensors.label_pattern
 * captures, names as configured); first_ts/last_ts bound its samples
 * (INT64_MIN when unknown); unit may be NULL. Valid during the callback. */
struct cb_api_prom_series {
    const char *topic, *metric, *unit;
    const struct cb_api_label *labels;
    size_t nlabels;
    int64_t first_ts, last_ts;
};
typedef int (*cb_api_prom_series_fn)(void *fctx, const struct cb_api_prom_series *s);
typedef int (*cb_api_prom_sample_fn)(void *fctx, int64_t ts, double v);
/* A row of a rollup tier (storage.h), for prom_rows. */
struct cb_tier_row;
typedef int (*cb_api_prom_row_fn)(void *fctx, const struct cb_tier_row *row);

/* One live alert instance for the ALERTS series: its rule, severity name,
 * whether it fires (0: pending), since when (ms) and its labels. */
struct cb_api_prom_alert {
    const char *rule, *severity;
    int firing;
    int64_t since;
    const struct cb_api_label *labels;
    size_t nlabels;
};
typedef void (*cb_api_prom_alert_fn)(void *fctx, const struct cb_api_prom_alert *a);

struct cb_api_provider {
    void *ctx;

    /* ---- loop thread, non-blocking ---- */
    /* {"status":"ok"|"degraded","mqtt":"connected"|...,"storage":"ok"|...,
     *  "uptime_s":N,"version":"..."}; 200, or 503 to say the engine is unwell
     * (the body is still the JSON document, not an error). */
    int (*health)(void *ctx, struct cb_strbuf *out);
    /* {"alerts":[{id, rule, state, severity, labels, since, at, message,
     * acked_by?...}]} filtered; the live instances (state is never
     * "resolved": see alerts_resolved). */
    int (*alerts)(void *ctx, const struct cb_api_alert_filter *f, struct cb_strbuf *out);
    /* A number that changes whenever the answer of alerts() may change (any
     * transition, acknowledgement, rule reload). With it, api/ keeps the
     * rendered answers (and their gzip) per query string and serves them
     * until it changes, with an ETag for 304s; NULL disables that. Resolved
     * alerts (state=resolved, read from the store) are never cached. */
    uint64_t (*alerts_version)(void *ctx);
    /* Acknowledges alert `id` (decoded, e.g. "river_flood/district=d07") by
     * `by` (never blank: api/ answers 400 without it); note is "" when not
     * given. Idempotent: 200 with the alert's JSON both times; 404 unknown
     * id; 409 when the alert is not firing. */
    int (*ack)(void *ctx, const char *id, const char *by, const char *note, struct cb_strbuf *out);
    /* Closes stale alert `id` by hand by `by` with `note` (neither blank:
     * api/ answers 400 without them): 200 with the resolution's JSON; 404
     * unknown id; 409 when the alert is not firing, or firing but not stale
     * (it resolves on evidence). */
    int (*close)(void *ctx, const char *id, const char *by, const char *note,
                 struct cb_strbuf *out);
    /* {"silences":[{id, state, matchers, starts, ends, comment, created_by...}]} */
    int (*silences_list)(void *ctx, struct cb_strbuf *out);
    /* 201 with the silence's JSON (including its id); 400 with a message
     * when the silence is refused. */
    int (*silence_add)(void *ctx, const struct cb_api_silence *s, struct cb_strbuf *out);
    /* Ends silence `id` (the path's text) now, by `by` (never blank),
     * comment "" when not given: POST /api/silences/{id}/expire (deleted 0)
     * or DELETE /api/silences/{id} (deleted 1). 200 with the silence's JSON,
     * expired (also when it had ended already), or 404. */
    int (*silence_end)(void *ctx, const char *id, const char *by, const char *comment,
                       int deleted, struct cb_strbuf *out);
    /* {"rules":[{name, title, titles?, metrics, file, line, match, per, severity, instances,
     * firing}]}: titles per language, metrics the rule reads (cb_engine_rules_json) */
    int (*rules_list)(void *ctx, struct cb_strbuf *out);
    /* Reloads from disk, asked by `by` with `note` ("" when not given): 200
     * {"ok":true,"rules":N} or 422 {"ok":false,"diagnostics":[...]} (a JSON
     * body, not an error message). */
    int (*rules_reload)(void *ctx, const char *by, const char *note, struct cb_strbuf *out);
    /* The live alert instances (pending and firing) for the ALERTS series of
     * /api/v1; may be NULL (no ALERTS series). */
    void (*prom_alerts)(void *ctx, cb_api_prom_alert_fn fn, void *fctx);
    /* Writes a refused request to the audit log (read_refused): who (the
     * department, "anonymous" or "unknown"), what ("GET /api/series", no
     * query string: it may hold a token), the status and the message sent.
     * May be NULL. */
    void (*audit_refused)(void *ctx, const char *who, const char *what, int status,
                          const char *why);
    /* Appends more Prometheus text after cb_metrics_render() (may be NULL). */
    void (*metrics)(void *ctx, struct cb_strbuf *out);

    /* ---- thread pool, may block on SQLite ---- */
    /* Opens a read connection (NULL with err filled on failure: the request
     * answers 503). Called on a pool thread. */
    void *(*reader_open)(void *ctx, char *err, size_t errlen);
    /* Closes one; called on the loop thread from cb_api_close. */
    void (*reader_close)(void *ctx, void *reader);
    /* {"sensors":[{topic, labels, district?, metrics:{m:{ts,value}}, last_ts,
     * stale}]}; a sensor is stale when now_ms - last_ts > stale_after_ms. */
    int (*sensors)(void *ctx, void *reader, int64_t now_ms, int64_t stale_after_ms,
                   struct cb_strbuf *out);
    /* {"topic","metric","from","to","step","buckets":[{ts,count,min,max,avg,last}]} */
    int (*series)(void *ctx, void *reader, const struct cb_api_series_query *q,
                  struct cb_strbuf *out);
    /* {"transitions":[{seq, ...the transition object}]} */
    int (*history)(void *ctx, void *reader, const struct cb_api_history_query *q,
                   struct cb_strbuf *out);
    /* GET /api/alerts?state=resolved: {"alerts":[...]}, the resolved instances
     * of the store (f->state is "resolved"). Not in memory, and a year of them
     * may be many: read here, never on the loop. */
    int (*alerts_resolved)(void *ctx, void *reader, const struct cb_api_alert_filter *f,
                           struct cb_strbuf *out);
    /* GET /api/audit: {"entries":[{seq, at, who, action, target, note,
     * details}]}; 400 with a message when q->action names no action. */
    int (*audit)(void *ctx, void *reader, const struct cb_api_audit_query *q,
                 struct cb_strbuf *out);
    /* /api/v1 (both or neither; NULL: 501): calls fn for every series of
     * every sensor, in topic order (fn returns non-zero to stop), and for
     * the samples of one series with from <= ts <= to in time order.
     * With `times` 0 the series' first_ts/last_ts may be INT64_MIN (a query
     * does not need them; reading each series' newest sample costs).
     * Return 0, or -1 on a read error (the request answers 500). */
    int (*prom_series)(void *ctx, void *reader, int times, cb_api_prom_series_fn fn,
                       void *fctx);
    int (*prom_samples)(void *ctx, void *reader, const char *topic, const char *metric,
                        int64_t from, int64_t to, cb_api_prom_sample_fn fn, void *fctx);
    /* Optional (NULL: raw samples always): the rows of one series with
     * samples in from <= ts <= to, each from the coarsest tier that holds
     * it whole (promql.h, struct promql_source's `rows`), and in *raw_first
     * the series' oldest raw sample (INT64_MAX: none). 0, or -1 on a read
     * error. */
    int (*prom_rows)(void *ctx, void *reader, const char *topic, const char *metric,
                     int64_t from, int64_t to, cb_api_prom_row_fn fn, void *fctx,
                     int64_t *raw_first);
    /* Calls emit for every stored transition with seq > after_seq, in seq
     * order, at most `limit`. Returns 0, or -1 on a read error. */
    int (*events_since)(void *ctx, void *reader, uint64_t after_seq, size_t limit,
                        cb_api_event_fn emit, void *emit_ctx);
};

/* Starts the API on `loop` at cfg->http_listen (not for "off": the caller
 * checks cb_api_enabled first). The provider is copied; its ctx must outlive
 * the API. cfg must outlive the API (tokens and limits are read from it).
 * Returns the API, or NULL with err filled (address in use, bad address,
 * dashboard folder missing is only a warning). */
struct cb_api *cb_api_start(uv_loop_t *loop, const struct cb_config *cfg,
                            const struct cb_api_provider *provider, char *err, size_t errlen);

/* Checks the http.department lines of cfg (docs/api.md "Departments").
 * Returns 0, or -1 with err naming the line and what is wrong. */
int cb_api_check_departments(const struct cb_config *cfg, char *err, size_t errlen);

/* Loads http.tls_cert and http.tls_key as cb_api_start would (nothing when
 * they are empty). Returns 0, or -1 with err naming the file and OpenSSL's
 * reason. */
int cb_api_check_tls(const struct cb_config *cfg, char *err, size_t errlen);

/* Reads http.tls_cert and http.tls_key again (SIGHUP): new connections get
 * the new pair, open ones finish on theirs. Returns 1 when reloaded, 0 when
 * the API has no TLS (or api is NULL), -1 with err when the pair does not
 * load (the previous one stays). Loop thread. */
int cb_api_tls_reload(struct cb_api *api, char *err, size_t errlen);

/* 1 when http.listen is not "off". */
int cb_api_enabled(const struct cb_config *cfg);

/* The port actually bound (useful with port 0 in tests). */
int cb_api_port(const struct cb_api *api);

/* Pushes one alert transition (the JSON object of rules.md, `len` bytes) with
 * its sequence number (the alert_transitions row id, increasing) to every
 * /api/events client. Loop thread. A client that cannot keep up (more than
 * 1 MiB queued) is disconnected; EventSource reconnects with Last-Event-ID. */
void cb_api_event(struct cb_api *api, uint64_t seq, const char *json, size_t len);

/* Pushes a notice that is no transition (no id, not in the transition log,
 * so not resumed after a reconnect) to every /api/events client as
 * `event: NAME` (`event`, a static string such as "stale") with `data: JSON`.
 * Loop thread. A client that is resuming gets it after the stored ones. */
void cb_api_notice(struct cb_api *api, const char *event, const char *json, size_t len);

/* Number of /api/events clients connected (tests, metrics). */
size_t cb_api_event_clients(const struct cb_api *api);

/* Stops listening, ends every event stream, closes idle connections, waits
 * for queued pool work, then frees everything; `done` (may be NULL) is called
 * on the loop when the last handle is closed. The loop must keep running
 * (uv_run) until then. Calling it twice is harmless. */
void cb_api_close(struct cb_api *api, void (*done)(void *ctx), void *done_ctx);

#endif
