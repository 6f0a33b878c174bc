/* /api/events: Server-Sent Events with h2o's streaming generator.
 *
 * h2o allows one h2o_send in flight per response: the next may only be made
 * after the generator's proceed callback. So each client has two buffers:
 * `inflight` (handed to h2o, untouched until proceed) and `pending` (what
 * arrived meanwhile); proceed swaps them. A client whose pending text passes
 * MAX_PENDING is ended; EventSource reconnects with Last-Event-ID and resumes
 * from the store, so nothing is lost, only delayed.
 *
 * Resume: with a Last-Event-ID header the stream starts "resuming": the stored
 * transitions after that id are read on the thread pool while live ones are
 * held back; when the read is done the stored ones are sent, then the held
 * ones with a higher seq, so a transition is sent once even when it is both
 * stored and live. */
#include "api/api_int.h"
#include "base/log.h"
#include "base/metrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_PENDING (1u << 20)
#define MAX_RESUME 10000

struct held {
    struct held *next;
    const char *event; /* a static string: "transition" or a notice's name */
    uint64_t seq;
    size_t len;
    char json[];
};

struct resume;

struct api_sse {
    h2o_generator_t super; /* first: h2o hands it back to proceed and stop */
    struct cb_api *api;
    h2o_req_t *req;
    struct api_sse *prev, *next;
    struct cb_strbuf pending, inflight;
    int sending;  /* an h2o_send is in flight */
    int finish;   /* end the stream at the next chance */
    struct resume *resume; /* non-NULL while resuming */
    struct held *held_head, *held_tail;
    size_t held_bytes;
    uint64_t last_seq;
    const struct api_scope *scope; /* the department's, NULL: the whole city */
};

struct resume {
    uv_work_t uv;
    struct cb_api *api;
    struct api_sse *c; /* NULL when the client went away */
    uint64_t after;
    uint64_t max_seq;
    int failed;
    struct held *head, *tail; /* the stored transitions read, in seq order */
};

/* Appends one event in the SSE format: its id (none when seq is 0), its
 * type `event` and its data. JSON from the provider is one line; should it
 * ever hold a newline, each line becomes its own data: field. */
static void format_event(struct cb_strbuf *b, uint64_t seq, const char *event, const char *json,
                         size_t len)
{
    if (seq)
        cb_strbuf_printf(b, "id: %llu\n", (unsigned long long)seq);
    cb_strbuf_printf(b, "event: %s\n", event);
    size_t i = 0;
    do {
        const char *nl = memchr(json + i, '\n', len - i);
        size_t end = nl ? (size_t)(nl - json) : len;
        cb_strbuf_puts(b, "data: ");
        cb_strbuf_append(b, json + i, end - i);
        cb_strbuf_putc(b, '\n');
        i = end + 1;
    } while (i < len);
    cb_strbuf_putc(b, '\n');
}

static void unlink_client(struct api_sse *c)
{
    struct cb_api *api = c->api;
    if (c->prev)
        c->prev->next = c->next;
    else
        api->sse_head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    api->nsse--;
    cb_gauge_set(api->m_sse, (int64_t)api->nsse);
}

static void free_client(struct api_sse *c)
{
    unlink_client(c);
    if (c->resume)
        c->resume->c = NULL;
    struct held *h = c->held_head;
    while (h) {
        struct held *n = h->next;
        free(h);
        h = n;
    }
    cb_strbuf_free(&c->pending);
    cb_strbuf_free(&c->inflight);
    free(c);
}

/* Ends the stream (h2o then closes or reuses the connection) and frees the
 * client. Only when no send is in flight. */
static void end_stream(struct api_sse *c)
{
    h2o_req_t *req = c->req;
    free_client(c);
    h2o_send(req, NULL, 0, H2O_SEND_STATE_FINAL);
}

/* Sends what is pending when nothing is in flight; ends a finishing stream. */
static void flush(struct api_sse *c)
{
    if (c->sending)
        return;
    if (c->finish) {
        end_stream(c);
        return;
    }
    if (c->pending.len == 0 || c->resume)
        return;
    if (c->pending.oom) {
        end_stream(c);
        return;
    }
    struct cb_strbuf t = c->inflight;
    c->inflight = c->pending;
    c->pending = t;
    cb_strbuf_reset(&c->pending);
    c->sending = 1;
    h2o_iovec_t buf = h2o_iovec_init(c->inflight.data, c->inflight.len);
    h2o_send(c->req, &buf, 1, H2O_SEND_STATE_IN_PROGRESS);
}

static void on_proceed(h2o_generator_t *g, h2o_req_t *req)
{
    (void)req;
    struct api_sse *c = (struct api_sse *)g;
    c->sending = 0;
    cb_strbuf_reset(&c->inflight);
    flush(c);
}

/* The client went away (or h2o aborts the response): free without sending. */
static void on_stop(h2o_generator_t *g, h2o_req_t *req)
{
    (void)req;
    free_client((struct api_sse *)g);
}

static void queue_text(struct api_sse *c)
{
    if (c->pending.len > MAX_PENDING)
        c->finish = 1; /* too slow: EventSource will resume from the store */
    flush(c);
}

/* ---- resume -------------------------------------------------------------------- */

/* A copy of one event (`event`: a static string), or NULL when memory ran
 * out. */
static struct held *held_new(uint64_t seq, const char *event, const char *json, size_t len)
{
    struct held *h = malloc(sizeof *h + len + 1);
    if (!h)
        return NULL;
    h->next = NULL;
    h->event = event;
    h->seq = seq;
    h->len = len;
    memcpy(h->json, json, len);
    h->json[len] = '\0';
    return h;
}

/* Pool thread: keeps the transition; resume_after formats those in the
 * client's scope on the loop (the scope check reads the rule set). */
static int resume_emit(void *ctx, uint64_t seq, const char *json, size_t len)
{
    struct resume *r = ctx;
    struct held *h = held_new(seq, "transition", json, len);
    if (!h)
        return -1;
    if (r->tail)
        r->tail->next = h;
    else
        r->head = h;
    r->tail = h;
    if (seq > r->max_seq)
        r->max_seq = seq;
    return 0;
}

/* Appends the event to the client's pending text when it is in the
 * client's scope. */
static void put_event(struct api_sse *c, uint64_t seq, const char *event, const char *json,
                      size_t len)
{
    if (api__scope_allows_alert(c->api, c->scope, json, len))
        format_event(&c->pending, seq, event, json, len);
}

/* Formats (put_event) and frees a list of held transitions; only those
 * after c->last_seq when skip_seen. */
static void drain_held(struct api_sse *c, struct held *h, int skip_seen)
{
    while (h) {
        struct held *n = h->next;
        if (c && (!skip_seen || h->seq == 0 || h->seq > c->last_seq)) {
            put_event(c, h->seq, h->event, h->json, h->len);
            if (skip_seen && h->seq)
                c->last_seq = h->seq;
        }
        free(h);
        h = n;
    }
}

static void resume_run(uv_work_t *u)
{
    struct resume *r = (struct resume *)u;
    struct cb_api *api = r->api;
    char err[256];
    struct api_reader *rd = api__reader_get(api, err, sizeof err);
    if (!rd) {
        r->failed = 1;
        return;
    }
    if (api->prov.events_since(api->prov.ctx, rd->reader, r->after, MAX_RESUME, resume_emit, r))
        r->failed = 1;
    api__reader_put(api, rd);
}

static void resume_after(uv_work_t *u, int status)
{
    struct resume *r = (struct resume *)u;
    struct api_sse *c = r->c;
    r->api->pending_work--;
    if (c) {
        c->resume = NULL;
        if (status != 0 || r->failed) {
            cb_warn(API_MOD, "cannot read the transitions after id %llu; the stream goes on live",
                    (unsigned long long)r->after);
        } else {
            drain_held(c, r->head, 0);
            r->head = NULL;
            if (r->max_seq > c->last_seq)
                c->last_seq = r->max_seq;
        }
        drain_held(c, c->held_head, 1);
        c->held_head = c->held_tail = NULL;
        c->held_bytes = 0;
        queue_text(c);
    }
    drain_held(NULL, r->head, 0);
    free(r);
}

static int start_resume(struct api_sse *c, uint64_t after)
{
    struct cb_api *api = c->api;
    struct resume *r = calloc(1, sizeof *r);
    if (!r)
        return -1;
    r->api = api;
    r->c = c;
    r->after = after;
    if (uv_queue_work(api->loop, &r->uv, resume_run, resume_after) != 0) {
        free(r);
        return -1;
    }
    api->pending_work++;
    c->resume = r;
    c->last_seq = after;
    return 0;
}

/* ---- streams ------------------------------------------------------------------- */

void api__events_open(struct cb_api *api, h2o_req_t *req, const struct api_scope *scope)
{
    struct api_sse *c = calloc(1, sizeof *c);
    if (!c) {
        api__error(api, req, 500, "out of memory");
        return;
    }
    c->super.proceed = on_proceed;
    c->super.stop = on_stop;
    c->api = api;
    c->req = req;
    c->scope = scope;
    cb_strbuf_init(&c->pending);
    cb_strbuf_init(&c->inflight);
    c->next = api->sse_head;
    if (api->sse_head)
        api->sse_head->prev = c;
    api->sse_head = c;
    api->nsse++;
    cb_gauge_set(api->m_sse, (int64_t)api->nsse);

    req->res.status = 200;
    req->res.reason = "OK";
    req->http1_is_persistent = 0; /* an ended stream closes its connection */
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL,
                   H2O_STRLIT("text/event-stream; charset=utf-8"));
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL,
                   H2O_STRLIT("no-store"));
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-accel-buffering"), 0,
                          NULL, H2O_STRLIT("no"));
    api__cors(api, req);
    api__count(api, 200);
    h2o_start_response(req, &c->super);

    /* The first bytes go out at once so the client sees the stream open. */
    cb_strbuf_puts(&c->pending, "retry: 2000\n: citybrain events\n\n");
    ssize_t i = h2o_find_header_by_str(&req->headers, H2O_STRLIT("last-event-id"), -1);
    if (i >= 0 && api->prov.events_since) {
        h2o_iovec_t v = req->headers.entries[i].value;
        char buf[24];
        uint64_t after = 0;
        int ok = v.len > 0 && v.len < sizeof buf;
        for (size_t k = 0; ok && k < v.len; k++)
            ok = v.base[k] >= '0' && v.base[k] <= '9';
        if (ok) {
            memcpy(buf, v.base, v.len);
            buf[v.len] = '\0';
            after = strtoull(buf, NULL, 10);
        }
        /* Send the opening first, then hold live events while resuming. */
        flush(c);
        if (ok && start_resume(c, after) != 0)
            cb_warn(API_MOD, "cannot resume an event stream: the stream goes on live");
        return;
    }
    flush(c);
}

/* Hands one event to every client: queued, or held while it resumes. */
static void broadcast(struct cb_api *api, uint64_t seq, const char *event, const char *json,
                      size_t len)
{
    if (!api || api->closing)
        return;
    for (struct api_sse *c = api->sse_head, *next; c; c = next) {
        next = c->next;
        if (c->finish)
            continue;
        if (c->resume) {
            struct held *h = held_new(seq, event, json, len);
            if (!h || c->held_bytes + len > MAX_PENDING) {
                free(h);
                c->finish = 1; /* ended once the resume completes */
                continue;
            }
            if (c->held_tail)
                c->held_tail->next = h;
            else
                c->held_head = h;
            c->held_tail = h;
            c->held_bytes += len;
            continue;
        }
        if (seq && seq <= c->last_seq)
            continue;
        put_event(c, seq, event, json, len);
        if (seq)
            c->last_seq = seq;
        queue_text(c);
    }
}

void cb_api_event(struct cb_api *api, uint64_t seq, const char *json, size_t len)
{
    broadcast(api, seq, "transition", json, len);
}

void cb_api_notice(struct cb_api *api, const char *event, const char *json, size_t len)
{
    broadcast(api, 0, event, json, len);
}

static void on_heartbeat(uv_timer_t *t)
{
    struct cb_api *api = t->data;
    for (struct api_sse *c = api->sse_head, *next; c; c = next) {
        next = c->next;
        if (c->resume || c->finish)
            continue;
        cb_strbuf_puts(&c->pending, ": keep-alive\n\n");
        queue_text(c);
    }
}

void api__events_init(struct cb_api *api)
{
    uint64_t ms = (uint64_t)api->cfg->http_sse_heartbeat_ms;
    uv_timer_start(&api->heartbeat, on_heartbeat, ms, ms);
}

void api__events_close_all(struct cb_api *api)
{
    for (struct api_sse *c = api->sse_head, *next; c; c = next) {
        next = c->next;
        c->finish = 1;
        if (!c->resume)
            flush(c);
    }
}
