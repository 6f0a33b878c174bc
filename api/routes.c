/* Routing, parameter validation, authorisation and the provider calls.
 *
 * Paths are matched on the raw request path (before '?'); identifiers in the
 * path (alert ids contain '/', as in "river_flood/district=d07") are
 * percent-decoded after matching, so /api/alerts/river_flood%2Fdistrict%3Dd07/ack
 * names that alert. Unknown query parameters are errors (400), so a typo such
 * as `form=` is not silently ignored. */
#include "api/api_int.h"
#include "base/clock.h"
#include "base/config.h"
#include "base/log.h"
#include "base/metrics.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_BUCKETS 10000
#define MAX_HISTORY 10000
#define DEFAULT_HISTORY 1000
#define MAX_MATCHERS 32

/* ---- small helpers ---------------------------------------------------------- */

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

char *api__decode(h2o_mem_pool_t *pool, const char *src, size_t n, int plus_is_space)
{
    char *out = h2o_mem_alloc_pool(pool, n + 1);
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char c = src[i];
        if (c == '%') {
            if (i + 2 >= n)
                return NULL;
            int hi = hexval(src[i + 1]), lo = hexval(src[i + 2]);
            if (hi < 0 || lo < 0)
                return NULL;
            c = (char)(hi * 16 + lo);
            if (c == '\0')
                return NULL;
            i += 2;
        } else if (c == '+' && plus_is_space) {
            c = ' ';
        }
        out[o++] = c;
    }
    out[o] = '\0';
    return out;
}

static int streq(const char *a, size_t alen, const char *lit)
{
    size_t n = strlen(lit);
    return alen == n && memcmp(a, lit, n) == 0;
}

/* Parses a whole decimal int64 (optional leading '-'). Returns 0 or -1. */
static int parse_i64(const char *s, int64_t *out)
{
    if (!*s)
        return -1;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end || (*s != '-' && (*s < '0' || *s > '9')))
        return -1;
    *out = v;
    return 0;
}

/* ---- query strings ------------------------------------------------------------- */

struct param {
    const char *name;
    char *value; /* NULL when absent */
};

const char *api__form_pairs(h2o_req_t *req, const char *s, size_t n, struct api_pair *out,
                            size_t max, size_t *count)
{
    const char *end = s + n;
    while (s < end) {
        const char *amp = memchr(s, '&', (size_t)(end - s));
        const char *stop = amp ? amp : end;
        if (stop > s) {
            const char *eq = memchr(s, '=', (size_t)(stop - s));
            const char *nend = eq ? eq : stop;
            char *name = api__decode(&req->pool, s, (size_t)(nend - s), 1);
            char *value = eq ? api__decode(&req->pool, eq + 1, (size_t)(stop - eq - 1), 1)
                             : api__decode(&req->pool, "", 0, 1);
            if (!name || !value)
                return "bad percent-encoding in the parameters";
            if (*count == max)
                return "too many parameters";
            out[(*count)++] = (struct api_pair){name, value};
        }
        s = stop + 1;
    }
    return NULL;
}

/* Parses the query string into params (names given by the caller). Returns
 * NULL, or an error message written into err (unknown parameter, bad escape,
 * repeated parameter). */
static const char *parse_query(h2o_req_t *req, struct param *params, size_t nparams, char *err,
                               size_t errlen)
{
    if (req->query_at == SIZE_MAX)
        return NULL;
    struct api_pair pairs[API_MAX_PAIRS];
    size_t n = 0;
    const char *e = api__form_pairs(req, req->path.base + req->query_at + 1,
                                    req->path.len - req->query_at - 1, pairs, API_MAX_PAIRS, &n);
    if (e)
        return e;
    for (size_t k = 0; k < n; k++) {
        size_t i = 0;
        while (i < nparams && strcmp(params[i].name, pairs[k].name) != 0)
            i++;
        if (i == nparams) {
            snprintf(err, errlen, "unknown parameter '%.64s'", pairs[k].name);
            return err;
        }
        if (params[i].value) {
            snprintf(err, errlen, "parameter '%s' given twice", params[i].name);
            return err;
        }
        params[i].value = pairs[k].value;
    }
    return NULL;
}

/* Reads a millisecond timestamp parameter: absent keeps *out. */
static const char *param_ms(const struct param *p, int64_t *out, char *err, size_t errlen)
{
    if (!p->value)
        return NULL;
    if (parse_i64(p->value, out) || *out < 0) {
        snprintf(err, errlen, "'%s' must be milliseconds since the epoch, not '%.40s'", p->name,
                 p->value);
        return err;
    }
    return NULL;
}

/* ---- authorisation -------------------------------------------------------------- */

/* Checks the bearer token of a write. Returns 0 when allowed; otherwise the
 * error is sent (401 without or with a wrong token, 403 with a read-only
 * token, a department's, or when no read-write token is configured) and -1
 * returned. */
static int authorise_write(struct cb_api *api, h2o_req_t *req)
{
    const struct cb_config *cfg = api->cfg;
    const char *tok = NULL, *dept = NULL;
    size_t toklen = 0;
    api__bearer(req, 0, &tok, &toklen);
    if (!tok || !toklen) {
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_WWW_AUTHENTICATE, NULL,
                       H2O_STRLIT("Bearer realm=\"citybrain\""));
        api__error(api, req, 401, "this request needs Authorization: Bearer <token>");
        return -1;
    }
    int rw = api__token_matches(tok, toklen, cfg->http_token);
    int ro = api__token_matches(tok, toklen, cfg->http_read_token);
    int dp = api__is_department(api, tok, toklen, &dept);
    if (rw)
        return 0;
    if (ro || dp) {
        api__error(api, req, 403, dp ? "a department's token is read-only"
                                      : "this token is read-only");
        return -1;
    }
    if (!cfg->http_token || !*cfg->http_token) {
        api__error(api, req, 403, "writes are disabled: no http.token is configured");
        return -1;
    }
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_WWW_AUTHENTICATE, NULL,
                   H2O_STRLIT("Bearer realm=\"citybrain\", error=\"invalid_token\""));
    api__error(api, req, 401, "invalid token");
    return -1;
}

/* ---- read connections for pool calls ------------------------------------------- */

struct api_reader *api__reader_get(struct cb_api *api, char *err, size_t errlen)
{
    uv_mutex_lock(&api->readers_lock);
    struct api_reader *r = api->readers;
    if (r)
        api->readers = r->next;
    uv_mutex_unlock(&api->readers_lock);
    if (r)
        return r;
    if (!api->prov.reader_open) {
        snprintf(err, errlen, "no storage reader");
        return NULL;
    }
    r = calloc(1, sizeof *r);
    if (!r) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    err[0] = '\0';
    r->reader = api->prov.reader_open(api->prov.ctx, err, errlen);
    if (!r->reader) {
        if (!err[0])
            snprintf(err, errlen, "cannot open the database");
        free(r);
        return NULL;
    }
    return r;
}

void api__reader_put(struct cb_api *api, struct api_reader *r)
{
    uv_mutex_lock(&api->readers_lock);
    r->next = api->readers;
    api->readers = r;
    uv_mutex_unlock(&api->readers_lock);
}

/* ---- asynchronous (pool) requests ------------------------------------------------ */

enum work_kind { WORK_SENSORS, WORK_SERIES, WORK_HISTORY, WORK_RESOLVED, WORK_AUDIT, WORK_CALL };

struct work;

/* Lives in the request's pool: when h2o disposes of the request before the
 * work is done (the client went away), the guard tells the work not to answer. */
struct guard {
    struct work *w;
};

struct work {
    uv_work_t uv;
    struct cb_api *api;
    h2o_req_t *req;     /* NULL once the request is gone */
    struct guard *guard;
    enum work_kind kind;
    char *s1, *s2;      /* topic, metric / rule / severity, rule / action (owned copies) */
    int64_t a, b, c;    /* from, to, step / limit */
    const struct api_scope *scope; /* the department asking, NULL: the whole city */
    int status;
    struct cb_strbuf out;
    api_pool_fn call;   /* WORK_CALL: the function, its argument and its free */
    void *arg;
    void (*arg_free)(void *arg);
};

static void guard_dispose(void *p)
{
    struct guard *g = p;
    if (g->w)
        g->w->req = NULL;
}

/* Pool thread: checks out a reader and calls the provider. */
static void work_run(uv_work_t *u)
{
    struct work *w = (struct work *)u;
    struct cb_api *api = w->api;
    const struct cb_api_provider *p = &api->prov;
    char err[256];
    struct api_reader *r = api__reader_get(api, err, sizeof err);
    if (!r) {
        w->status = 503;
        if (w->kind == WORK_CALL) { /* the Prometheus API's error shape */
            cb_strbuf_puts(&w->out, "{\"status\":\"error\",\"errorType\":\"unavailable\",\"error\":");
            cb_strbuf_json_string(&w->out, err, strlen(err));
            cb_strbuf_putc(&w->out, '}');
        } else {
            cb_strbuf_puts(&w->out, err);
        }
        return;
    }
    switch (w->kind) {
    case WORK_SENSORS:
        w->status = p->sensors(p->ctx, r->reader, cb_wall_ms(), api->cfg->sensors_stale_after_ms,
                               &w->out);
        break;
    case WORK_SERIES: {
        struct cb_api_series_query q = {
            .topic = w->s1, .metric = w->s2, .from_ms = w->a, .to_ms = w->b, .step_ms = w->c};
        w->status = p->series(p->ctx, r->reader, &q, &w->out);
        break;
    }
    case WORK_HISTORY: {
        struct cb_api_history_query q = {
            .from_ms = w->a, .to_ms = w->b, .limit = (size_t)w->c, .rule = w->s1};
        w->status = p->history(p->ctx, r->reader, &q, &w->out);
        break;
    }
    case WORK_RESOLVED: {
        struct cb_api_alert_filter f = {"resolved", w->s1, w->s2, NULL, NULL};
        w->status = p->alerts_resolved(p->ctx, r->reader, &f, &w->out);
        break;
    }
    case WORK_AUDIT: {
        struct cb_api_audit_query q = {
            .from_ms = w->a, .to_ms = w->b, .limit = (size_t)w->c, .action = w->s1};
        w->status = p->audit(p->ctx, r->reader, &q, &w->out);
        break;
    }
    case WORK_CALL:
        w->status = w->call(api, r->reader, w->arg, &w->out);
        break;
    }
    api__reader_put(api, r);
}

/* Loop thread: answers when the request is still there. */
static void work_after(uv_work_t *u, int status)
{
    struct work *w = (struct work *)u;
    struct cb_api *api = w->api;
    if (w->req) {
        w->guard->w = NULL;
        /* The list a department's answer is filtered by; -1: none (a series
         * was checked before it was queued, the audit is not a department's). */
        static const int lists[] = {[WORK_SENSORS] = API_LIST_SENSORS, [WORK_SERIES] = -1,
                                    [WORK_HISTORY] = API_LIST_TRANSITIONS,
                                    [WORK_RESOLVED] = API_LIST_ALERTS, [WORK_AUDIT] = -1,
                                    [WORK_CALL] = -1 /* /api/v1 filters its own catalog */};
        if (status == UV_ECANCELED)
            api__error(api, w->req, 503, "shutting down");
        else if (w->kind == WORK_CALL && !w->out.oom)
            api__send(api, w->req, w->status, "application/json",
                      w->out.data ? w->out.data : "", w->out.len);
        else if (w->kind != WORK_CALL && w->scope && w->status < 400 && lists[w->kind] >= 0 &&
                 api__scope_filter(api, w->scope, (enum api_scope_list)lists[w->kind], &w->out))
            api__error(api, w->req, 500, "cannot filter the answer for the department");
        else
            api__answer(api, w->req, w->status, &w->out);
    }
    api->pending_work--;
    if (w->arg_free)
        w->arg_free(w->arg);
    cb_strbuf_free(&w->out);
    free(w->s1);
    free(w->s2);
    free(w);
}

/* A work item owning copies of s1 and s2 (either may be NULL). NULL when
 * memory ran out. */
static struct work *work_new(struct cb_api *api, h2o_req_t *req, enum work_kind kind,
                             const struct api_scope *scope, const char *s1, const char *s2)
{
    struct work *w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    if ((s1 && !(w->s1 = strdup(s1))) || (s2 && !(w->s2 = strdup(s2)))) {
        free(w->s1);
        free(w);
        return NULL;
    }
    w->api = api;
    w->req = req;
    w->kind = kind;
    w->scope = scope;
    cb_strbuf_init(&w->out);
    return w;
}

static void work_queue(struct cb_api *api, struct work *w)
{
    w->guard = h2o_mem_alloc_shared(&w->req->pool, sizeof *w->guard, guard_dispose);
    w->guard->w = w;
    api->pending_work++;
    if (uv_queue_work(api->loop, &w->uv, work_run, work_after) != 0) {
        api->pending_work--;
        w->guard->w = NULL;
        api__error(api, w->req, 503, "cannot queue the query");
        if (w->arg_free)
            w->arg_free(w->arg);
        cb_strbuf_free(&w->out);
        free(w->s1);
        free(w->s2);
        free(w);
    }
}

void api__queue_call(struct cb_api *api, h2o_req_t *req, api_pool_fn call, void *arg,
                     void (*arg_free)(void *arg))
{
    struct work *w = work_new(api, req, WORK_CALL, NULL, NULL, NULL);
    if (!w) {
        if (arg_free)
            arg_free(arg);
        api__error(api, req, 500, "out of memory");
        return;
    }
    w->call = call;
    w->arg = arg;
    w->arg_free = arg_free;
    work_queue(api, w);
}

/* ---- endpoints ------------------------------------------------------------------- */

#define NPARAMS(a) (sizeof(a) / sizeof((a)[0]))

static void get_health(struct cb_api *api, h2o_req_t *req, const struct api_scope *scope)
{
    (void)scope;
    struct cb_strbuf out;
    cb_strbuf_init(&out);
    int st = api->prov.health(api->prov.ctx, &out);
    api__answer(api, req, st, &out);
    cb_strbuf_free(&out);
}

/* GET /api/console: what the console needs to know of this engine's
 * configuration (docs/console.md): the time zone of its clock and dates,
 * whether there is a city map, whether writes are possible at all. */
static void get_console(struct cb_api *api, h2o_req_t *req, const struct api_scope *scope)
{
    const struct cb_config *cfg = api->cfg;
    struct cb_strbuf out;
    cb_strbuf_init(&out);
    cb_strbuf_puts(&out, "{\"time_zone\":");
    cb_strbuf_json_string(&out, cfg->http_time_zone, strlen(cfg->http_time_zone));
    cb_strbuf_printf(&out, ",\"city_map\":%s,\"writes\":%s,\"languages\":[\"zh-CN\",\"en-US\"]",
                     api->city_map ? "true" : "false",
                     cfg->http_token && *cfg->http_token ? "true" : "false");
    cb_strbuf_puts(&out, ",\"department\":");
    cb_strbuf_json_string_or_null(&out, scope ? scope->name : NULL);
    cb_strbuf_putc(&out, '}');
    api__answer(api, req, 200, &out);
    cb_strbuf_free(&out);
}

static void get_city(struct cb_api *api, h2o_req_t *req, const struct api_scope *scope)
{
    api__city(api, req, scope);
}

static void get_sensors(struct cb_api *api, h2o_req_t *req, const struct api_scope *scope)
{
    struct work *w = work_new(api, req, WORK_SENSORS, scope, NULL, NULL);
    if (!w) {
        api__error(api, req, 500, "out of memory");
        return;
    }
    work_queue(api, w);
}

static void get_series(struct cb_api *api, h2o_req_t *req, const struct api_scope *scope)
{
    char err[200];
    struct param ps[] = {{"topic", NULL}, {"metric", NULL}, {"from", NULL}, {"to", NULL},
                         {"step", NULL}};
    int64_t to = cb_wall_ms(), from = -1, step = 0;
    const char *e = parse_query(req, ps, NPARAMS(ps), err, sizeof err);
    if (!e && (!ps[0].value || !*ps[0].value))
        e = "missing parameter 'topic'";
    if (!e && (!ps[1].value || !*ps[1].value))
        e = "missing parameter 'metric'";
    if (!e)
        e = param_ms(&ps[3], &to, err, sizeof err);
    if (!e)
        e = param_ms(&ps[2], &from, err, sizeof err);
    if (!e && from < 0)
        from = to - 3600000;
    if (!e && from >= to)
        e = "'from' must be before 'to'";
    if (!e && ps[4].value && (cb_parse_duration_ms(ps[4].value, &step) || step <= 0)) {
        snprintf(err, sizeof err, "'step' must be a duration such as 60s or 5m, not '%.40s'",
                 ps[4].value);
        e = err;
    }
    if (!e && !ps[4].value) {
        step = (to - from + 239) / 240;
        if (step < 1000)
            step = 1000;
    }
    if (!e && (to - from) / step >= MAX_BUCKETS) {
        snprintf(err, sizeof err, "too many buckets (%lld): at most %d; use a larger step",
                 (long long)((to - from + step - 1) / step), MAX_BUCKETS);
        e = err;
    }
    if (e) {
        api__error(api, req, 400, e);
        return;
    }
    if (!api__scope_allows_topic(scope, ps[0].value)) {
        snprintf(err, sizeof err, "topic '%.80s' is outside department %s's scope", ps[0].value,
                 scope->name);
        api__scope_refuse(api, req, scope, err);
        return;
    }
    struct work *w = work_new(api, req, WORK_SERIES, scope, ps[0].value, ps[1].value);
    if (!w) {
        api__error(api, req, 500, "out of memory");
        return;
    }
    w->a = from;
    w->b = to;
    w->c = step;
    work_queue(api, w);
}

static int one_of(const char *v, const char *const *set)
{
    for (; *set; set++)
        if (!strcmp(v, *set))
            return 1;
    return 0;
}

/* cb_api_alert_filter's keep for a department: its judge. */
static int keep_alert(const void *ctx, const char *rule, const char *const *names,
                      const char *const *values, size_t n)
{
    return api__judge_alert(ctx, rule, names, values, n);
}

static void get_alerts(struct cb_api *api, h2o_req_t *req, const struct api_scope *scope)
{
    static const char *const states[] = {"pending", "firing",   "escalated",
                                         "acknowledged", "resolved", NULL};
    static const char *const severities[] = {"info", "warning", "major", "critical", NULL};
    char err[200];
    struct param ps[] = {{"state", NULL}, {"severity", NULL}, {"rule", NULL}};
    const char *e = parse_query(req, ps, NPARAMS(ps), err, sizeof err);
    if (!e && ps[0].value && !one_of(ps[0].value, states)) {
        snprintf(err, sizeof err,
                 "'state' must be pending, firing, escalated, acknowledged or resolved, not "
                 "'%.40s'",
                 ps[0].value);
        e = err;
    }
    if (!e && ps[1].value && !one_of(ps[1].value, severities)) {
        snprintf(err, sizeof err,
                 "'severity' must be info, warning, major or critical, not '%.40s'", ps[1].value);
        e = err;
    }
    if (e) {
        api__error(api, req, 400, e);
        return;
    }
    struct cb_api_alert_filter f = {ps[0].value, ps[1].value, ps[2].value, NULL, NULL};
    if (f.state && !strcmp(f.state, "resolved")) {
        /* From the store, on the pool (and not cached: the version follows
         * the live instances only). */
        if (!api->prov.alerts_resolved) {
            api__error(api, req, 501, "resolved alerts are not available");
            return;
        }
        struct work *w = work_new(api, req, WORK_RESOLVED, scope, f.severity, f.rule);
        if (!w) {
            api__error(api, req, 500, "out of memory");
            return;
        }
        work_queue(api, w);
        return;
    }
    int cacheable = api->alerts_cache != NULL && !scope; /* the cache is the whole city's */
    const char *query = req->query_at == SIZE_MAX ? "" : req->path.base + req->query_at + 1;
    size_t qlen = req->query_at == SIZE_MAX ? 0 : req->path.len - req->query_at - 1;
    uint64_t version = cacheable ? api->prov.alerts_version(api->prov.ctx) : 0;
    if (cacheable && api__cache_serve(api, api->alerts_cache, req, query, qlen, version))
        return;
    /* A department's: the provider renders only what the judge keeps, and
     * the (small) answer is filtered once more below. */
    struct api_judge judge;
    if (scope && api__judge_init(api, scope, &judge)) {
        api__judge_free(&judge);
        api__error(api, req, 500, "cannot filter the answer for the department");
        return;
    }
    if (scope) {
        f.keep = keep_alert;
        f.keep_ctx = &judge;
    }
    struct cb_strbuf out;
    cb_strbuf_init(&out);
    int st = api->prov.alerts(api->prov.ctx, &f, &out);
    if (scope)
        api__judge_free(&judge);
    if (cacheable && st == 200 && !out.oom) {
        if (out.len == 0 || out.data[out.len - 1] != '\n')
            cb_strbuf_putc(&out, '\n');
        api__cache_store_send(api, api->alerts_cache, req, query, qlen, version, out.data,
                              out.len);
    } else if (scope && st < 400 && api__scope_filter(api, scope, API_LIST_ALERTS, &out)) {
        api__error(api, req, 500, "cannot filter the answer for the department");
    } else {
        api__answer(api, req, st, &out);
    }
    cb_strbuf_free(&out);
}

/* The from/to/limit parameters of a time-window query (history, audit):
 * to defaults to now + 1 ms, from to 24 hours before to, limit to
 * DEFAULT_HISTORY (1 to MAX_HISTORY). Returns NULL, or the error message. */
static const char *window_params(const struct param *from, const struct param *to,
                                 const struct param *limit, int64_t *w, char *err, size_t errlen)
{
    int64_t now = cb_wall_ms();
    w[1] = now + 1;
    w[0] = -1;
    w[2] = DEFAULT_HISTORY;
    const char *e = param_ms(to, &w[1], err, errlen);
    if (!e)
        e = param_ms(from, &w[0], err, errlen);
    if (!e && w[0] < 0)
        w[0] = w[1] - 24 * 3600000LL > 0 ? w[1] - 24 * 3600000LL : 0;
    if (!e && w[0] >= w[1])
        e = "'from' must be before 'to'";
    if (!e && limit->value &&
        (parse_i64(limit->value, &w[2]) || w[2] < 1 || w[2] > MAX_HISTORY)) {
        snprintf(err, errlen, "'limit' must be an integer from 1 to %d", MAX_HISTORY);
        e = err;
    }
    return e;
}

/* Queues a time-window query on the pool (w: from, to, limit). */
static void queue_window(struct cb_api *api, h2o_req_t *req, enum work_kind kind,
                         const struct api_scope *scope, const char *s1, const int64_t *w)
{
    struct work *wk = work_new(api, req, kind, scope, s1, NULL);
    if (!wk) {
        api__error(api, req, 500, "out of memory");
        return;
    }
    wk->a = w[0];
    wk->b = w[1];
    wk->c = w[2];
    work_queue(api, wk);
}

static void get_history(struct cb_api *api, h2o_req_t *req, const struct api_scope *scope)
{
    char err[200];
    struct param ps[] = {{"from", NULL}, {"to", NULL}, {"limit", NULL}, {"rule", NULL}};
    int64_t w[3];
    const char *e = parse_query(req, ps, NPARAMS(ps), err, sizeof err);
    if (!e)
        e = window_params(&ps[0], &ps[1], &ps[2], w, err, sizeof err);
    if (e)
        api__error(api, req, 400, e);
    else
        queue_window(api, req, WORK_HISTORY, scope, ps[3].value, w);
}

/* GET /api/audit?from=MS&to=MS&action=A&limit=N: read on the pool. */
static void get_audit(struct cb_api *api, h2o_req_t *req, const struct api_scope *scope)
{
    char err[200];
    struct param ps[] = {{"from", NULL}, {"to", NULL}, {"limit", NULL}, {"action", NULL}};
    int64_t w[3];
    const char *e = parse_query(req, ps, NPARAMS(ps), err, sizeof err);
    if (!e)
        e = window_params(&ps[0], &ps[1], &ps[2], w, err, sizeof err);
    const char *act = ps[3].value;
    if (!e && act && (!*act || strlen(act) > 64 || strspn(act, "abcdefghijklmnopqrstuvwxyz_") !=
                                                       strlen(act))) {
        snprintf(err, sizeof err, "'action' must be an action name such as ack, not '%.40s'",
                 act);
        e = err;
    }
    if (e)
        api__error(api, req, 400, e);
    else
        queue_window(api, req, WORK_AUDIT, scope, act, w);
}

/* Parses the request body as a JSON object (an empty body is an empty
 * object when allow_empty). Sends 400 and returns NULL on failure. */
static cJSON *body_object(struct cb_api *api, h2o_req_t *req, int allow_empty)
{
    if (req->entity.base == NULL || req->entity.len == 0) {
        if (allow_empty)
            return cJSON_CreateObject();
        api__error(api, req, 400, "a JSON object body is required");
        return NULL;
    }
    cJSON *j = cJSON_ParseWithLength(req->entity.base, req->entity.len);
    if (!j || !cJSON_IsObject(j)) {
        cJSON_Delete(j);
        api__error(api, req, 400, "the body is not a JSON object");
        return NULL;
    }
    return j;
}

/* The first member of obj not in `allowed` (NULL-terminated), or NULL. A
 * typo such as "create_by" is refused, not silently dropped. */
static const char *unknown_member(const cJSON *obj, const char *const *allowed)
{
    for (const cJSON *it = obj->child; it; it = it->next) {
        size_t i = 0;
        while (allowed[i] && strcmp(allowed[i], it->string))
            i++;
        if (!allowed[i])
            return it->string;
    }
    return NULL;
}

/* Writes "unknown member 'X' in <what> (it takes a, b and c)" into err when
 * obj has a member not in `allowed`. Returns err, or NULL. */
static const char *check_members(const cJSON *obj, const char *const *allowed, const char *what,
                                 char *err, size_t errlen)
{
    const char *u = unknown_member(obj, allowed);
    if (!u)
        return NULL;
    int n = snprintf(err, errlen, "unknown member '%.40s' in %s (it takes ", u, what);
    for (size_t i = 0; allowed[i] && n > 0 && (size_t)n < errlen; i++)
        n += snprintf(err + n, errlen - (size_t)n, "%s%s", i ? (allowed[i + 1] ? ", " : " and ")
                                                             : "",
                      allowed[i]);
    if (n > 0 && (size_t)n < errlen)
        snprintf(err + n, errlen - (size_t)n, ")");
    return err;
}

/* Reads an optional string member (at most maxlen bytes). Returns "" when
 * absent, NULL (with err) when of the wrong type or too long. */
static const char *opt_string(cJSON *obj, const char *name, size_t maxlen, char *err,
                              size_t errlen)
{
    cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);
    if (!v || cJSON_IsNull(v))
        return "";
    if (!cJSON_IsString(v) || strlen(v->valuestring) > maxlen) {
        snprintf(err, errlen, "'%s' must be a string of at most %zu bytes", name, maxlen);
        return NULL;
    }
    return v->valuestring;
}

/* A string member that must be given and not blank (who did it, why).
 * Returns it, or NULL with err: "'by' is required: <what>". */
static const char *req_string(cJSON *obj, const char *name, size_t maxlen, const char *what,
                              char *err, size_t errlen)
{
    const char *v = opt_string(obj, name, maxlen, err, errlen);
    if (v && v[strspn(v, " \t\r\n")] == '\0') {
        snprintf(err, errlen, "'%s' is required: %s", name, what);
        return NULL;
    }
    return v;
}

/* Reads a member holding ms since the epoch. Returns 0 (absent: *out kept),
 * or -1 with err. */
static int body_ms(cJSON *obj, const char *name, int64_t *out, char *err, size_t errlen)
{
    cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);
    if (!v)
        return 0;
    double d = cJSON_IsNumber(v) ? v->valuedouble : -1;
    if (d < 0 || d > 9.0e15 || d != (double)(int64_t)d) {
        snprintf(err, errlen, "'%s' must be a time in milliseconds since the epoch", name);
        return -1;
    }
    *out = (int64_t)d;
    return 0;
}

/* POST /api/alerts/{id}/ack and /close: body {"by", "note"}; `close` needs
 * the note too (why an alert without evidence is ended by hand). */
static void post_alert_action(struct cb_api *api, h2o_req_t *req, const char *idp, size_t idlen,
                              int close)
{
    static const char *const members[] = {"by", "note", NULL};
    char err[200];
    char *id = api__decode(&req->pool, idp, idlen, 0);
    if (!id || !*id) {
        api__error(api, req, 400, "bad alert id in the path");
        return;
    }
    cJSON *body = body_object(api, req, 1);
    if (!body)
        return;
    const char *e = check_members(body, members, close ? "a close" : "an acknowledgement", err,
                                  sizeof err);
    const char *by = e ? NULL
                       : req_string(body, "by", 200, close ? "who closes it" : "who acknowledges",
                                    err, sizeof err);
    const char *note = !by     ? NULL
                       : close ? req_string(body, "note", 2000, "why it is closed", err, sizeof err)
                               : opt_string(body, "note", 2000, err, sizeof err);
    if (!by || !note) {
        api__error(api, req, 400, err);
        cJSON_Delete(body);
        return;
    }
    struct cb_strbuf out;
    cb_strbuf_init(&out);
    int st = (close ? api->prov.close : api->prov.ack)(api->prov.ctx, id, by, note, &out);
    api__answer(api, req, st, &out);
    cb_strbuf_free(&out);
    cJSON_Delete(body);
}

/* Reads the matchers array of a silence into *out (request pool). Returns
 * NULL, or the error message. */
static const char *silence_matchers(h2o_req_t *req, cJSON *m, struct cb_api_silence *s,
                                    char *err, size_t errlen)
{
    static const char *const members[] = {"name", "value", "op", NULL};
    int n = cJSON_IsArray(m) ? cJSON_GetArraySize(m) : 0;
    if (n == 0)
        return "'matchers' must be a non-empty array of {\"name\",\"value\",\"op\"} objects";
    if (n > MAX_MATCHERS) {
        snprintf(err, errlen, "at most %d matchers", MAX_MATCHERS);
        return err;
    }
    struct cb_api_matcher *ms = h2o_mem_alloc_pool(&req->pool, sizeof *ms * (size_t)n);
    size_t k = 0;
    for (cJSON *it = m->child; it; it = it->next, k++) {
        char what[32];
        snprintf(what, sizeof what, "matcher %zu", k + 1);
        if (!cJSON_IsObject(it)) {
            snprintf(err, errlen, "%s must be an object {\"name\",\"value\",\"op\"}", what);
            return err;
        }
        if (check_members(it, members, what, err, errlen))
            return err;
        cJSON *name = cJSON_GetObjectItemCaseSensitive(it, "name");
        cJSON *value = cJSON_GetObjectItemCaseSensitive(it, "value");
        cJSON *op = cJSON_GetObjectItemCaseSensitive(it, "op");
        if (!cJSON_IsString(name) || !name->valuestring[0] || strlen(name->valuestring) > 128)
            snprintf(err, errlen, "%s: \"name\" must be a label name of 1 to 128 bytes", what);
        else if (!cJSON_IsString(value) || strlen(value->valuestring) > 256)
            snprintf(err, errlen, "%s: \"value\" must be a string of at most 256 bytes", what);
        else if (op && !cJSON_IsString(op))
            snprintf(err, errlen, "%s: \"op\" must be \"=\", \"!=\", \"=~\" or \"!~\"", what);
        else {
            ms[k] = (struct cb_api_matcher){name->valuestring, op ? op->valuestring : NULL,
                                            value->valuestring};
            continue;
        }
        return err;
    }
    s->matchers = ms;
    s->nmatchers = k;
    return NULL;
}

static void post_silence(struct cb_api *api, h2o_req_t *req)
{
    static const char *const members[] = {"matchers", "starts", "ends", "comment",
                                          "created_by", NULL};
    char err[300];
    struct cb_api_silence s = {0};
    cJSON *body = body_object(api, req, 0);
    if (!body)
        return;
    const char *e = check_members(body, members, "a silence", err, sizeof err);
    if (!e)
        e = silence_matchers(req, cJSON_GetObjectItemCaseSensitive(body, "matchers"), &s, err,
                             sizeof err);
    if (!e && body_ms(body, "starts", &s.starts_ms, err, sizeof err))
        e = err;
    if (!e && !cJSON_GetObjectItemCaseSensitive(body, "ends"))
        e = "'ends' is required: when the silence ends, in ms since the epoch";
    if (!e && body_ms(body, "ends", &s.ends_ms, err, sizeof err))
        e = err;
    if (!e && !(s.comment = req_string(body, "comment", 2000, "why the silence is needed", err,
                                       sizeof err)))
        e = err;
    if (!e && !(s.created_by = req_string(body, "created_by", 200, "who creates the silence",
                                          err, sizeof err)))
        e = err;
    struct cb_strbuf out;
    cb_strbuf_init(&out);
    if (e)
        api__error(api, req, 400, e);
    else
        api__answer(api, req, api->prov.silence_add(api->prov.ctx, &s, &out), &out);
    cb_strbuf_free(&out);
    cJSON_Delete(body);
}

/* POST /api/silences/{id}/expire with {"by","comment"} (deleted 0), or
 * DELETE /api/silences/{id}?by=NAME&comment=TEXT (deleted 1). */
static void end_silence(struct cb_api *api, h2o_req_t *req, const char *idp, size_t idlen,
                        int deleted)
{
    static const char *const members[] = {"by", "comment", NULL};
    char err[200];
    const char *e = NULL, *by = NULL, *comment = NULL;
    cJSON *body = NULL;
    char *id = api__decode(&req->pool, idp, idlen, 0);
    if (!id || !*id || strchr(id, '/')) {
        api__error(api, req, 400, "bad silence id in the path");
        return;
    }
    if (deleted) {
        struct param ps[] = {{"by", NULL}, {"comment", NULL}};
        e = parse_query(req, ps, NPARAMS(ps), err, sizeof err);
        by = ps[0].value;
        comment = ps[1].value ? ps[1].value : "";
        if (!e && (!by || by[strspn(by, " \t")] == '\0'))
            e = "'by' is required: who deletes the silence (DELETE /api/silences/ID?by=NAME)";
        if (!e && (strlen(by) > 200 || strlen(comment) > 2000))
            e = "'by' is at most 200 bytes, 'comment' at most 2000";
    } else {
        if (!(body = body_object(api, req, 1)))
            return;
        e = check_members(body, members, "an expiry", err, sizeof err);
        if (!e && !(by = req_string(body, "by", 200, "who expires the silence", err, sizeof err)))
            e = err;
        if (!e && !(comment = opt_string(body, "comment", 2000, err, sizeof err)))
            e = err;
    }
    struct cb_strbuf out;
    cb_strbuf_init(&out);
    if (e)
        api__error(api, req, 400, e);
    else
        api__answer(api, req,
                    api->prov.silence_end(api->prov.ctx, id, by, comment, deleted, &out), &out);
    cb_strbuf_free(&out);
    cJSON_Delete(body);
}

/* GET /api/rules: a department sees the rules that can reach its scope. */
static void get_rules(struct cb_api *api, h2o_req_t *req, const struct api_scope *scope)
{
    struct cb_strbuf out;
    cb_strbuf_init(&out);
    int st = api->prov.rules_list(api->prov.ctx, &out);
    if (scope && st < 400 && api__scope_filter(api, scope, API_LIST_RULES, &out))
        api__error(api, req, 500, "cannot filter the answer for the department");
    else
        api__answer(api, req, st, &out);
    cb_strbuf_free(&out);
}

static void simple_call(struct cb_api *api, h2o_req_t *req,
                        int (*fn)(void *ctx, struct cb_strbuf *out))
{
    struct cb_strbuf out;
    cb_strbuf_init(&out);
    int st = fn(api->prov.ctx, &out);
    api__answer(api, req, st, &out);
    cb_strbuf_free(&out);
}

/* POST /api/rules/reload: the provider's 422 answer is a JSON document with
 * the diagnostics (api.h), sent as it is; api__answer would wrap it, escaped,
 * into {"error":"..."} and a client could not read the diagnostics. */
static void post_rules_reload(struct cb_api *api, h2o_req_t *req)
{
    static const char *const members[] = {"by", "note", NULL};
    char err[200];
    cJSON *body = body_object(api, req, 1);
    if (!body)
        return;
    const char *e = check_members(body, members, "a reload", err, sizeof err);
    const char *by = e ? NULL : opt_string(body, "by", 200, err, sizeof err);
    const char *note = by ? opt_string(body, "note", 2000, err, sizeof err) : NULL;
    if (!by || !note) {
        api__error(api, req, 400, err);
        cJSON_Delete(body);
        return;
    }
    struct cb_strbuf out;
    cb_strbuf_init(&out);
    int st = api->prov.rules_reload(api->prov.ctx, by, note, &out);
    cJSON_Delete(body);
    if (st == 422 && !out.oom && out.len && out.data[0] == '{') {
        cb_strbuf_putc(&out, '\n');
        if (!out.oom) {
            api__send(api, req, st, "application/json", out.data, out.len);
            cb_strbuf_free(&out);
            return;
        }
    }
    api__answer(api, req, st, &out);
    cb_strbuf_free(&out);
}

static void get_metrics(struct cb_api *api, h2o_req_t *req, const struct api_scope *scope)
{
    (void)scope; /* only the whole city's tokens (departments_ok 0) */
    struct cb_strbuf out;
    cb_strbuf_init(&out);
    cb_metrics_render(&out);
    if (api->prov.metrics)
        api->prov.metrics(api->prov.ctx, &out);
    if (out.oom)
        api__error(api, req, 500, "out of memory");
    else
        api__send(api, req, 200, "text/plain; version=0.0.4; charset=utf-8",
                  out.data ? out.data : "", out.len);
    cb_strbuf_free(&out);
}

/* ---- the router ------------------------------------------------------------------- */

enum method { M_GET, M_HEAD, M_POST, M_DELETE, M_OPTIONS, M_OTHER };

static enum method method_of(h2o_req_t *req)
{
    h2o_iovec_t m = req->method;
    if (h2o_memis(m.base, m.len, H2O_STRLIT("GET")))
        return M_GET;
    if (h2o_memis(m.base, m.len, H2O_STRLIT("HEAD")))
        return M_HEAD;
    if (h2o_memis(m.base, m.len, H2O_STRLIT("POST")))
        return M_POST;
    if (h2o_memis(m.base, m.len, H2O_STRLIT("DELETE")))
        return M_DELETE;
    if (h2o_memis(m.base, m.len, H2O_STRLIT("OPTIONS")))
        return M_OPTIONS;
    return M_OTHER;
}

static void not_allowed(struct cb_api *api, h2o_req_t *req, const char *allow)
{
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ALLOW, NULL, allow, strlen(allow));
    api__error(api, req, 405, "method not allowed");
}

/* Answers a CORS preflight (only when http.cors_origin is set). */
static void preflight(struct cb_api *api, h2o_req_t *req, const char *allow)
{
    const char *origin = api->cfg->http_cors_origin;
    if (!origin || !*origin) {
        not_allowed(api, req, allow);
        return;
    }
    h2o_add_header_by_str(&req->pool, &req->res.headers,
                          H2O_STRLIT("access-control-allow-methods"), 0, NULL, allow,
                          strlen(allow));
    h2o_add_header_by_str(&req->pool, &req->res.headers,
                          H2O_STRLIT("access-control-allow-headers"), 0, NULL,
                          H2O_STRLIT("Authorization, Content-Type, Last-Event-ID"));
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("access-control-max-age"),
                          0, NULL, H2O_STRLIT("600"));
    api__send(api, req, 204, "text/plain", "", 0);
}

/* Dispatches one "method path" pair of a read route. `allow` lists the
 * methods of the path for 405 and preflight answers; `who` says who may
 * read it: READ_OPEN anyone (health), READ_DEPT the whole city's tokens and
 * departments (fn gets the department's scope, and must keep to it),
 * READ_CITY the whole city's tokens only (api__read_scope). */
enum { READ_CITY = 0, READ_DEPT = 1, READ_OPEN = 2 };
#define ROUTE_READ(fn, allow_str, who)                                                        \
    do {                                                                                      \
        const struct api_scope *scope_ = NULL;                                                \
        if (m == M_GET || m == M_HEAD) {                                                      \
            if ((who) == READ_OPEN || api__read_scope(api, req, (who) == READ_DEPT, &scope_) == 0) \
                fn(api, req, scope_);                                                         \
        }                                                                                     \
        else if (m == M_OPTIONS)                                                              \
            preflight(api, req, allow_str);                                                   \
        else                                                                                  \
            not_allowed(api, req, allow_str);                                                 \
        return 0;                                                                             \
    } while (0)

static size_t header_bytes(h2o_req_t *req)
{
    size_t n = req->method.len + req->path.len + 12;
    for (size_t i = 0; i < req->headers.size; i++)
        n += req->headers.entries[i].name->len + req->headers.entries[i].value.len + 4;
    return n;
}

static int unavailable(struct cb_api *api, h2o_req_t *req)
{
    api__error(api, req, 501, "not available");
    return 0;
}

int api__on_req(struct cb_api *api, h2o_req_t *req)
{
    const struct cb_api_provider *p = &api->prov;
    if (header_bytes(req) > (size_t)api->cfg->http_max_header) {
        api__error(api, req, 431, "request headers too large");
        return 0;
    }
    if (req->entity.base && req->entity.len > (size_t)api->cfg->http_max_body) {
        api__error(api, req, 413, "request body too large");
        return 0;
    }
    if (api->closing) {
        api__error(api, req, 503, "shutting down");
        return 0;
    }
    enum method m = method_of(req);
    size_t plen = req->query_at == SIZE_MAX ? req->path.len : req->query_at;
    const char *path = req->path.base;

    if (plen >= 5 && memcmp(path, "/api/", 5) == 0) {
        if (streq(path, plen, "/api/health")) {
            if (!p->health && (m == M_GET || m == M_HEAD))
                return unavailable(api, req);
            ROUTE_READ(get_health, "GET, HEAD", READ_OPEN);
        }
        if (streq(path, plen, "/api/console"))
            ROUTE_READ(get_console, "GET, HEAD", READ_DEPT);
        if (streq(path, plen, "/api/city"))
            ROUTE_READ(get_city, "GET, HEAD", READ_DEPT);
        if (streq(path, plen, "/api/sensors")) {
            if (!p->sensors && (m == M_GET || m == M_HEAD))
                return unavailable(api, req);
            ROUTE_READ(get_sensors, "GET, HEAD", READ_DEPT);
        }
        if (streq(path, plen, "/api/series")) {
            if (!p->series && (m == M_GET || m == M_HEAD))
                return unavailable(api, req);
            ROUTE_READ(get_series, "GET, HEAD", READ_DEPT);
        }
        if (streq(path, plen, "/api/alerts")) {
            if (!p->alerts && (m == M_GET || m == M_HEAD))
                return unavailable(api, req);
            ROUTE_READ(get_alerts, "GET, HEAD", READ_DEPT);
        }
        if (streq(path, plen, "/api/alerts/history")) {
            if (!p->history && (m == M_GET || m == M_HEAD))
                return unavailable(api, req);
            ROUTE_READ(get_history, "GET, HEAD", READ_DEPT);
        }
        if (streq(path, plen, "/api/audit")) {
            if (!p->audit && (m == M_GET || m == M_HEAD))
                return unavailable(api, req);
            ROUTE_READ(get_audit, "GET, HEAD", READ_CITY);
        }
        if (streq(path, plen, "/api/events")) {
            const struct api_scope *scope = NULL;
            if (m == M_GET) {
                if (api__read_scope(api, req, 1, &scope) == 0)
                    api__events_open(api, req, scope);
            }
            else if (m == M_OPTIONS)
                preflight(api, req, "GET");
            else
                not_allowed(api, req, "GET");
            return 0;
        }
        if (streq(path, plen, "/api/rules")) {
            if (!p->rules_list && (m == M_GET || m == M_HEAD))
                return unavailable(api, req);
            ROUTE_READ(get_rules, "GET, HEAD", READ_DEPT);
        }
        if (streq(path, plen, "/api/rules/reload")) {
            if (m == M_POST) {
                if (authorise_write(api, req) == 0)
                    p->rules_reload ? post_rules_reload(api, req) : (void)unavailable(api, req);
            } else {
                m == M_OPTIONS ? preflight(api, req, "POST") : not_allowed(api, req, "POST");
            }
            return 0;
        }
        if (streq(path, plen, "/api/silences")) {
            const struct api_scope *scope = NULL;
            if (m == M_GET || m == M_HEAD) {
                if (!p->silences_list)
                    unavailable(api, req);
                else if (api__read_scope(api, req, 0, &scope) == 0)
                    simple_call(api, req, p->silences_list);
            } else if (m == M_POST) {
                if (authorise_write(api, req) == 0)
                    p->silence_add ? post_silence(api, req) : (void)unavailable(api, req);
            } else {
                m == M_OPTIONS ? preflight(api, req, "GET, HEAD, POST")
                               : not_allowed(api, req, "GET, HEAD, POST");
            }
            return 0;
        }
        static const char sil[] = "/api/silences/", exp[] = "/expire";
        if (plen > sizeof sil - 1 && memcmp(path, sil, sizeof sil - 1) == 0) {
            const char *idp = path + sizeof sil - 1;
            size_t idlen = plen - (sizeof sil - 1);
            int expire = idlen > sizeof exp - 1 &&
                         memcmp(idp + idlen - (sizeof exp - 1), exp, sizeof exp - 1) == 0;
            const char *allow = expire ? "POST" : "DELETE";
            if ((expire && m == M_POST) || (!expire && m == M_DELETE)) {
                if (authorise_write(api, req) == 0)
                    p->silence_end ? end_silence(api, req, idp,
                                                 expire ? idlen - (sizeof exp - 1) : idlen, !expire)
                                   : (void)unavailable(api, req);
            } else {
                m == M_OPTIONS ? preflight(api, req, allow) : not_allowed(api, req, allow);
            }
            return 0;
        }
        static const char al[] = "/api/alerts/", ack[] = "/ack", cls[] = "/close";
        int is_ack = plen > sizeof al - 1 + sizeof ack - 1 &&
                     memcmp(path + plen - (sizeof ack - 1), ack, sizeof ack - 1) == 0;
        int is_close = plen > sizeof al - 1 + sizeof cls - 1 &&
                       memcmp(path + plen - (sizeof cls - 1), cls, sizeof cls - 1) == 0;
        if ((is_ack || is_close) && memcmp(path, al, sizeof al - 1) == 0) {
            size_t tail = is_ack ? sizeof ack - 1 : sizeof cls - 1;
            if (m == M_POST) {
                if (authorise_write(api, req) == 0)
                    (is_ack ? p->ack : p->close)
                        ? post_alert_action(api, req, path + sizeof al - 1,
                                            plen - (sizeof al - 1) - tail, is_close)
                        : (void)unavailable(api, req);
            } else {
                m == M_OPTIONS ? preflight(api, req, "POST") : not_allowed(api, req, "POST");
            }
            return 0;
        }
        if (plen >= 8 && memcmp(path, "/api/v1/", 8) == 0) {
            const struct api_scope *scope = NULL;
            if (m == M_GET || m == M_HEAD || m == M_POST) {
                if (api__read_scope(api, req, 1, &scope) == 0)
                    api__prom(api, req, path + 8, plen - 8, scope);
            } else
                m == M_OPTIONS ? preflight(api, req, "GET, HEAD, POST")
                               : not_allowed(api, req, "GET, HEAD, POST");
            return 0;
        }
        api__error(api, req, 404, "no such endpoint");
        return 0;
    }
    if (streq(path, plen, "/metrics"))
        ROUTE_READ(get_metrics, "GET, HEAD", READ_CITY);
    if (m == M_GET || m == M_HEAD)
        api__static(api, req, path, plen);
    else
        not_allowed(api, req, "GET, HEAD");
    return 0;
}
