/* Types shared by the files of api/ (server, routes, events, static files). */
#ifndef CB_API_API_INT_H
#define CB_API_API_INT_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include <h2o.h>

#include "api/api.h"
#include "base/strbuf.h"

#define API_MOD "api"

/* A read connection checked out of the free list by one pool call. */
struct api_reader {
    void *reader;
    struct api_reader *next;
};

struct api_sse;
struct api_cache;

/* One accepted connection: the libuv handle h2o's socket wraps, linked in
 * cb_api.conns until h2o disposes of the socket (then only the handle's
 * close callback, which frees this, is left). Shutdown uses the list to end
 * connections h2o 2.2 would otherwise leave open. */
struct api_conn {
    uv_tcp_t tcp; /* first: h2o's close callback gets the handle */
    struct cb_api *api;
    struct api_conn *prev, *next;
};

struct cb_api {
    uv_loop_t *loop;
    const struct cb_config *cfg;
    struct cb_api_provider prov;

    h2o_globalconf_t h2o_config;
    h2o_context_t h2o_ctx;
    h2o_accept_ctx_t accept_ctx;
    uv_tcp_t listener;
    int listening;
    int port;
    char *dashboard_dir; /* realpath of the dashboard folder, or NULL */
    char *city_map;      /* the city's GeoJSON file (http.city_map), or NULL: no map */

    size_t nconns;
    struct api_conn *conns; /* open connections (nconns of them) */
    size_t pending_work; /* uv_queue_work requests not yet completed */

    /* /api/events */
    struct api_sse *sse_head;
    size_t nsse;
    uv_timer_t heartbeat;

    /* GET /api/alerts answers by query string (cache.c); NULL when the
     * provider has no alerts_version */
    struct api_cache *alerts_cache;

    /* departments (scope.c): one scope per http.department line */
    struct api_scope *scopes;
    size_t nscopes;

    /* read connections for pool calls */
    uv_mutex_t readers_lock;
    struct api_reader *readers;

    /* shutdown */
    int closing;
    uv_timer_t close_poll;
    int64_t close_deadline; /* then the remaining connections are shut down */
    int conns_shut;         /* shutdown(2) was called on them */
    void (*done)(void *ctx);
    void *done_ctx;

    /* metrics */
    uint64_t *m_req[6];           /* by status class 1xx..5xx; [0] unused */
    uint64_t *m_conn_refused;
    int64_t *m_conns;
    int64_t *m_sse;
};

/* ---- responses (server.c) ---- */

/* Sends `len` bytes of body with the status and content type (copied into the
 * request's pool), plus the CORS header when configured. */
void api__send(struct cb_api *api, h2o_req_t *req, int status, const char *ctype,
               const char *body, size_t len);
/* Sends {"error":"msg"} with the status. */
void api__error(struct cb_api *api, h2o_req_t *req, int status, const char *msg);
/* Sends a provider's answer: JSON for status < 400, else the message in out
 * wrapped as an error. */
void api__answer(struct cb_api *api, h2o_req_t *req, int status, struct cb_strbuf *out);
/* Adds Access-Control-Allow-Origin when http.cors_origin is set. */
void api__cors(struct cb_api *api, h2o_req_t *req);
/* Counts a response by status class. */
void api__count(struct cb_api *api, int status);

/* ---- routes (routes.c) ---- */

/* The one h2o handler: routes every request. Returns 0 (always answered). */
int api__on_req(struct cb_api *api, h2o_req_t *req);

/* Checks out a read connection (opening one when the list is empty). Pool
 * thread. NULL with err filled on failure. */
struct api_reader *api__reader_get(struct cb_api *api, char *err, size_t errlen);
void api__reader_put(struct cb_api *api, struct api_reader *r);

/* ---- departments (scope.c) ----
 *
 * A scope is what one department may read (docs/api.md "Departments"). The
 * whole city is the NULL scope: every check below allows everything for it.
 * The checks are pure functions of the scope and may run on any thread;
 * api__scope_allows_alert and api__scope_filter read the rule set through
 * the provider and run on the loop thread. */

struct api_label_limit {
    char *name;
    int level;     /* its level in sensors.label_pattern */
    char **values; /* allowed values */
    size_t nvalues;
};

struct api_scope {
    char *name;                /* the department */
    char *token;               /* as configured: plain, or sha256:HEX */
    char **topics;             /* MQTT filters; none: any topic */
    size_t ntopics;
    struct api_label_limit *labels;
    size_t nlabels;
    const char *label_pattern; /* sensors.label_pattern (the configuration's) */
};

/* Parses cfg's http.department lines. 0 with *out (free with
 * api__scopes_free; NULL when none), or -1 with err
 * ("http.department 'LINE': what is wrong"). */
int api__scopes_parse(const struct cb_config *cfg, struct api_scope **out, size_t *nout,
                      char *err, size_t errlen);
void api__scopes_free(struct api_scope *v, size_t n);

/* Who asks, for a read route. 0 with *out the department's scope, or NULL
 * for the whole city (http.token, http.read_token, or no token while reads
 * are open: http.open_reads and no department). -1 when refused: 401 without
 * a token (reads closed) or with an unknown one, 403 for a department when
 * departments_ok is 0 (routes that are not a department's: audit, silences,
 * metrics); the answer is sent and the refusal audited. */
int api__read_scope(struct cb_api *api, h2o_req_t *req, int departments_ok,
                    const struct api_scope **out);
/* Refuses a department's read of something outside its scope: 403 with msg,
 * audited. */
void api__scope_refuse(struct cb_api *api, h2o_req_t *req, const struct api_scope *s,
                       const char *msg);
/* 1 when tok is a department's token (*name its name), else 0. */
int api__is_department(struct cb_api *api, const char *tok, size_t len, const char **name);

/* Whether the scope may read the sensor of this topic (a topic name:
 * one holding +, # or { is refused). */
int api__scope_allows_topic(const struct api_scope *s, const char *topic);
/* Whether every topic the pattern (+, #, {label} levels) can match is in
 * scope: an alert's rule pattern with the alert's labels put in. */
int api__scope_allows_pattern(const struct api_scope *s, const char *pattern);
/* Whether some topic the pattern can match is in scope (a rule is listed). */
int api__scope_meets_pattern(const struct api_scope *s, const char *pattern);
/* Whether labels alone (names[i] = values[i]) put something in scope: only
 * for a scope with label limits and no topic filter, when every limited
 * label is among them with an allowed value. For alerts of a rule no longer
 * loaded, whose patterns are unknown. */
int api__scope_allows_labels(const struct api_scope *s, const char *const *names,
                             const char *const *values, size_t n);
/* A department's judgement of alerts, prepared once per request: the rule
 * set read and parsed once (loop thread), its rules found by name by binary
 * search, so judging an alert costs its rule's patterns, not a parse. */
struct api_judge {
    const struct api_scope *s; /* NULL: the whole city, everything allowed */
    struct cJSON *rules;
    const struct cJSON **byname; /* the rules with a name, sorted by it */
    size_t n;
};
#define API_JUDGE_MAX_LABELS 32 /* an alert with more labels is out of scope */
/* Prepares j for s (nothing to read for the NULL scope). 0, or -1 when out
 * of memory (free j with api__judge_free either way). Loop thread. */
int api__judge_init(struct cb_api *api, const struct api_scope *s, struct api_judge *j);
void api__judge_free(struct api_judge *j);
/* Whether an alert of `rule` with these labels is in scope: every pattern of
 * its rule with its labels put in is (allows_pattern); for a rule not loaded
 * (or rule NULL), its labels (allows_labels). Any thread. */
int api__judge_alert(const struct api_judge *j, const char *rule, const char *const *names,
                     const char *const *values, size_t n);
/* Whether the alert or transition (its JSON object) is in scope, as
 * api__judge_alert judges it. Loop thread. */
int api__scope_allows_alert(struct cb_api *api, const struct api_scope *s, const char *json,
                            size_t len);

enum api_scope_list {
    API_LIST_SENSORS,     /* {"sensors":[{topic...}]} */
    API_LIST_ALERTS,      /* {"alerts":[...]} */
    API_LIST_TRANSITIONS, /* {"transitions":[...]} */
    API_LIST_RULES,       /* {"rules":[...]}: listed when a pattern meets the scope,
                             without the city-wide counts instances and firing */
    API_LIST_FEATURES,    /* GeoJSON: a feature with properties.topic only in scope */
};
/* Rewrites the JSON document in out keeping the list items in scope. 0
 * (out untouched for the NULL scope), -1 when out is not such a document
 * or memory ran out (the caller answers 500: nothing unfiltered goes out).
 * Loop thread. */
int api__scope_filter(struct cb_api *api, const struct api_scope *s, enum api_scope_list kind,
                      struct cb_strbuf *out);

/* The bearer token: Authorization: Bearer, else (query_ok) access_token=
 * from the query string. 0 with *tok, *len (0: none), -1 on a bad escape. */
int api__bearer(h2o_req_t *req, int query_ok, const char **tok, size_t *len);
/* Whether the token given matches a stored one, in constant time: stored is
 * the token itself, or "sha256:" and the hex SHA-256 of it. 0 for an empty
 * stored token. */
int api__token_matches(const char *given, size_t glen, const char *stored);

/* ---- events (events.c) ---- */

/* GET /api/events: starts a stream (resuming after Last-Event-ID if given). */
void api__events_open(struct cb_api *api, h2o_req_t *req, const struct api_scope *scope);
/* Starts the heartbeat timer. */
void api__events_init(struct cb_api *api);
/* Ends every stream (shutdown). */
void api__events_close_all(struct cb_api *api);

/* ---- the GET /api/alerts cache (cache.c) ---- */

/* A cache; boot tells ETags of this run from those of an earlier one. */
struct api_cache *api__cache_new(uint64_t boot);
void api__cache_free(struct api_cache *c);
/* Sends the answer cached for the raw query string at `version` (200 with
 * gzip when accepted, or 304 when If-None-Match names it) and returns 1, or
 * returns 0 when there is none. */
int api__cache_serve(struct cb_api *api, struct api_cache *c, h2o_req_t *req, const char *query,
                     size_t qlen, uint64_t version);
/* Keeps a rendered 200 answer for the query at `version` and sends it. */
void api__cache_store_send(struct cb_api *api, struct api_cache *c, h2o_req_t *req,
                           const char *query, size_t qlen, uint64_t version, const char *body,
                           size_t len);

/* ---- static files (static.c) ---- */

/* GET /api/city: the city map's GeoJSON as it is on disk (404 when none is
 * configured, 503 when it cannot be read). */
void api__city(struct cb_api *api, h2o_req_t *req, const struct api_scope *scope);
/* GET / and the dashboard's files. `path` is the raw path without the query. */
void api__static(struct cb_api *api, h2o_req_t *req, const char *path, size_t len);

/* ---- pool calls (routes.c) ---- */

/* A function run on the thread pool with a checked-out reader: writes the
 * whole JSON body into out and returns the status (sent as it is, also for
 * 4xx and 5xx: the function shapes its own errors). */
typedef int (*api_pool_fn)(struct cb_api *api, void *reader, void *arg, struct cb_strbuf *out);
/* Runs call(api, reader, arg, out) on the pool and sends its answer; calls
 * arg_free(arg) (may be NULL) afterwards on the loop, also when the request
 * went away or could not be queued. */
void api__queue_call(struct cb_api *api, h2o_req_t *req, api_pool_fn call, void *arg,
                     void (*arg_free)(void *arg));

/* ---- the Prometheus query API (prom_api.c) ---- */

/* /api/v1/<rest>: GET, HEAD or POST (form body) of query, query_range,
 * series, labels, label/<name>/values, metadata, status/buildinfo. A
 * department's `scope` (NULL: the whole city) limits every answer to its
 * sensors' series and the ALERTS of its alerts. */
void api__prom(struct cb_api *api, h2o_req_t *req, const char *rest, size_t len,
               const struct api_scope *scope);

/* ---- helpers (routes.c) ---- */

/* One name=value pair of a query string or form body, decoded. */
struct api_pair {
    char *name, *value;
};
#define API_MAX_PAIRS 64
/* Appends the pairs of s[0..n) (form encoding: '&'-separated, '+' is a
 * space) to out[*count..max), decoded into the request's pool. Returns NULL,
 * or a message (bad escape, more than max pairs). */
const char *api__form_pairs(h2o_req_t *req, const char *s, size_t n, struct api_pair *out,
                            size_t max, size_t *count);

/* Percent-decodes src[0..n) into a NUL-terminated pool string; '+' becomes a
 * space when plus_is_space. Returns NULL on a bad escape or an encoded NUL. */
char *api__decode(h2o_mem_pool_t *pool, const char *src, size_t n, int plus_is_space);

#endif
