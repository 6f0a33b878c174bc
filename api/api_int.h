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

/* ---- events (events.c) ---- */

/* GET /api/events: starts a stream (resuming after Last-Event-ID if given). */
void api__events_open(struct cb_api *api, h2o_req_t *req);
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
void api__city(struct cb_api *api, h2o_req_t *req);
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
 * series, labels, label/<name>/values, metadata, status/buildinfo. */
void api__prom(struct cb_api *api, h2o_req_t *req, const char *rest, size_t len);

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
