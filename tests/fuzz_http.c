/* libFuzzer target: HTTP request handling. The input is the raw bytes a
 * client sends on one connection (one request or several, pipelined); they go
 * through h2o's own HTTP/1 parser into the API's routes (paths, percent-
 * decoding, query strings, headers, JSON bodies, the bearer token), which
 * answer from the daemon's real provider (cmd/api_provider.c) over a real
 * store, rule engine and alert module: the same wiring as `citybrain run`,
 * without MQTT.
 *
 * Nothing is mocked and no TCP is used: each input gets a socketpair whose
 * one end is handed to h2o like an accepted connection, as api/server.c does;
 * the other end writes the input, half-closes, and reads the answer until
 * h2o closes. An event stream left open is ended as a shutdown ends it after
 * 20 ms without progress (then the client side closes, if h2o still waits). What must hold: no crash, leak or
 * sanitizer report; every answer begins with a status line; every 4xx or 5xx
 * the routes send as JSON carries "error" ({"error":...}, or the rule
 * reload's {"ok":false,"error":...,"diagnostics":[...]}). */
#include "alerts/alerts.h"
#include "api/api_int.h"
#include "base/config.h"
#include "base/log.h"
#include "cmd/api_provider.h"
#include "rules/rules.h"
#include "storage/storage.h"

#include <h2o/socket/uv-binding.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct {
    uv_loop_t loop;
    struct cb_config cfg;
    struct cb_engine *engine;
    struct cb_store *store;
    struct cb_alerts *alerts;
    int64_t now;           /* the alerts module's clock: wall time, moved on to sweep */
    struct cb_clock clock;
    struct cb_api *api;
    struct cmd_api_sources src;
    char dir[64];
} w;

/* ---- the daemon's wiring, without MQTT ------------------------------------------- */

static void on_event(void *ctx, uint64_t seq, const char *json, size_t len)
{
    (void)ctx;
    if (w.api)
        cb_api_event(w.api, seq, json, len);
}

/* POST /api/rules/reload: recompiles rules.path and swaps it in, as the daemon. */
static int reload_rules(void *ctx, const char *via, const char *by, const char *note,
                        struct cb_diags *diags)
{
    (void)ctx;
    (void)via;
    (void)by;
    (void)note;
    struct cb_ruleset *rs = cb_ruleset_compile((const char *const *)w.cfg.rules_paths.items,
                                               w.cfg.rules_paths.n, diags);
    if (!rs)
        return -1;
    int rc = cb_engine_swap(w.engine, rs);
    cb_ruleset_release(rs);
    return rc;
}

static void set(const char *key, const char *value)
{
    struct cb_config_error err;
    if (cb_config_set(&w.cfg, key, value, 1, "fuzz", &err)) {
        fprintf(stderr, "fuzz_http: %s\n", err.text);
        abort();
    }
}

/* A little city, so sensors, series and alerts have something to say: a
 * river gauge and an air sensor over the last minutes, and a gas leak (a
 * single reading fires gas_leak at once, so ack has an alert to find). */
static void feed(void)
{
    int64_t now = cb_wall_ms();
    for (int i = 0; i < 20; i++) {
        struct cb_sample river[2] = {{"level", now - (20 - i) * 15000, 1.5 + i * 0.01},
                                     {"flow", now - (20 - i) * 15000, 140.0 + i}};
        struct cb_sample air[1] = {{"pm25", now - (20 - i) * 15000, 16.0 + i % 3}};
        cb_engine_offer(w.engine, "city/d01/river/s01", NULL, river, 2, NULL, NULL);
        cb_store_append(w.store, "city/d01/river/s01", NULL, river, 2, 0);
        cb_engine_offer(w.engine, "city/d02/air/s02", NULL, air, 1, NULL, NULL);
        cb_store_append(w.store, "city/d02/air/s02", NULL, air, 1, 0);
    }
    struct cb_sample gas = {"ch4", now, 42.0};
    cb_engine_offer(w.engine, "city/d03/gas/s01", NULL, &gas, 1, NULL, NULL);
    cb_store_append(w.store, "city/d03/gas/s01", NULL, &gas, 1, 0);
    cb_engine_tick(w.engine);
    cb_store_flush(w.store);
    uv_run(&w.loop, UV_RUN_NOWAIT);
}

static void remove_dir(void)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", w.dir);
    if (system(cmd) != 0)
        fprintf(stderr, "fuzz_http: could not remove %s\n", w.dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    char err[512];
    struct cb_config_error cerr;
    cb_log_threshold = CB_LOG_ERROR;
    /* A client gone away must be EPIPE, not a signal: in the daemon the MQTT
     * client (Paho) ignores SIGPIPE when it is created; here there is none. */
    signal(SIGPIPE, SIG_IGN);
    snprintf(w.dir, sizeof w.dir, "%s/cb-fuzz-http.XXXXXX",
             access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp");
    if (!mkdtemp(w.dir) || uv_loop_init(&w.loop))
        abort();
    atexit(remove_dir);
    if (cb_config_defaults(&w.cfg) ||
        cb_config_load_file(&w.cfg, CB_SOURCE_DIR "/etc/citybrain.conf", &cerr)) {
        fprintf(stderr, "fuzz_http: %s\n", cerr.text);
        abort();
    }
    char db[128];
    snprintf(db, sizeof db, "%s/citybrain.db", w.dir);
    set("storage.db", db);
    set("rules.path", CB_SOURCE_DIR "/etc/rules");
    set("http.listen", "127.0.0.1:0");
    set("http.token", "fuzz-write-token");
    set("http.read_token", "fuzz-read-token");
    set("http.cors_origin", "https://eoc.example");
    set("http.max_body", "4k");

    struct cb_diags diags = {0};
    struct cb_ruleset *rs = cb_ruleset_compile((const char *const *)w.cfg.rules_paths.items,
                                               w.cfg.rules_paths.n, &diags);
    if (!rs)
        abort();
    cb_diags_free(&diags);
    struct cb_engine_options eo = {.max_skew_ms = w.cfg.rules_max_skew_ms,
                                   .lateness_ms = w.cfg.rules_lateness_ms,
                                   .stale_after_ms = w.cfg.sensors_stale_after_ms};
    if (!(w.store = cb_store_open(&w.cfg, NULL, err, sizeof err)))
        goto fail;
    w.now = cb_wall_ms();
    w.clock = (struct cb_clock){.now = cb_clock_manual_now, .ctx = &w.now};
    struct cb_alerts_hooks hooks = {.on_event = on_event, .clock = &w.clock};
    if (!(w.alerts = cb_alerts_new(&w.loop, &w.cfg, w.cfg.storage_db, &hooks, err, sizeof err)))
        goto fail;
    w.engine = cb_engine_new(rs, &cb_clock_wall, &eo, cb_alerts_transition_cb, w.alerts);
    cb_ruleset_release(rs);
    if (!w.engine)
        abort();
    w.src = (struct cmd_api_sources){.cfg = &w.cfg, .store = w.store, .engine = w.engine,
                                     .alerts = w.alerts, .started_ms = cb_wall_ms(),
                                     .reload_rules = reload_rules};
    struct cb_api_provider prov;
    cmd__api_provider(&w.src, &prov);
    if (!(w.api = cb_api_start(&w.loop, &w.cfg, &prov, err, sizeof err)))
        goto fail;
    feed();
    return 0;
fail:
    fprintf(stderr, "fuzz_http: %s\n", err);
    abort();
}

/* ---- one connection ------------------------------------------------------------------ */

struct conn {
    uv_pipe_t pipe; /* first: h2o's close callback gets the handle */
    int closed;
};

static void on_closed(uv_handle_t *h) { ((struct conn *)h)->closed = 1; }

struct client {
    int fd;
    char *resp;
    size_t len, cap;
    size_t seen; /* len at the last progress check */
    int eof;
};

static void drain(struct client *c)
{
    while (c->fd >= 0 && !c->eof) {
        if (c->cap - c->len < 4096) {
            c->cap = c->cap ? c->cap * 2 : 16384;
            c->resp = realloc(c->resp, c->cap);
            if (!c->resp)
                abort();
        }
        ssize_t n = read(c->fd, c->resp + c->len, c->cap - c->len - 1);
        if (n > 0)
            c->len += (size_t)n;
        else {
            if (n == 0)
                c->eof = 1;
            break;
        }
    }
}

/* No progress for a whole tick and no query on the pool: an event stream is
 * open (h2o keeps it after the client's EOF, until a write fails). End the
 * streams as a shutdown does; if that is not it, the client goes away. */
static void on_stall(uv_timer_t *t)
{
    struct client *c = t->data;
    drain(c);
    if (c->len == c->seen && w.api->pending_work == 0) {
        if (w.api->nsse)
            api__events_close_all(w.api);
        else if (c->fd >= 0) {
            close(c->fd);
            c->fd = -1;
        }
    }
    c->seen = c->len;
}

/* Every answer starts with a status line; an error answer of the routes is
 * {"error":"..."}, or under /api/v1 Prometheus's {"status":"error",
 * "errorType":...,"error":"..."} (h2o's own 400 for a request it cannot
 * parse is checked only for its status line). */
static void check(const struct client *c)
{
    if (c->len == 0)
        return;
    c->resp[c->len] = '\0';
    if (strncmp(c->resp, "HTTP/1.", 7) != 0)
        abort();
    for (const char *p = c->resp; (p = strstr(p, "\r\n\r\n")); p += 4) {
        /* the head before p: a routes error says application/json and
         * starts its body with {"error": */
        const char *head = p;
        while (head > c->resp && strncmp(head, "HTTP/1.", 7) != 0)
            head--;
        int status = atoi(head + 9);
        if (status >= 400 && memmem(head, (size_t)(p - head), "application/json", 16) &&
            strncmp(p + 4, "{\"error\":", 9) != 0 &&
            strncmp(p + 4, "{\"ok\":false,\"error\":", 20) != 0 &&
            strncmp(p + 4, "{\"status\":\"error\",\"errorType\":", 30) != 0 &&
            strncmp(p + 4, "HTTP/1.", 7) != 0 &&
            p[4] != '\0') /* a HEAD answer has no body */
            abort();
    }
}

/* Ends the silences the input added (ids are consecutive; one input can add
 * a few dozen at most, and may have ended some itself), then lets the alerts
 * module's clock pass the day an ended silence stays listed and sweeps them
 * (cb_alerts_tick), then puts the clock back: millions of inputs do not pile
 * up silences that every later GET /api/silences and every transition would
 * have to walk, and the inputs' absolute times keep meaning the same. */
static void forget_silences(void)
{
    static int64_t next_id = 1;
    int64_t last = 0;
    for (int64_t id = next_id; id < next_id + 64; id++)
        if (cb_alerts_silence_expire(w.alerts, id, "fuzz", NULL, CB_AUDIT_SILENCE_EXPIRE) >= 0)
            last = id;
    if (last)
        next_id = last + 1;
    int64_t now = w.now;
    w.now = now + CB_SILENCE_LISTED_AFTER_END_MS + 1;
    cb_alerts_tick(w.alerts);
    w.now = now;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv))
        abort();
    struct conn *conn = calloc(1, sizeof *conn);
    if (!conn || uv_pipe_init(&w.loop, &conn->pipe, 0) || uv_pipe_open(&conn->pipe, sv[0]))
        abort();
    h2o_socket_t *sock = h2o_uv_socket_create((uv_stream_t *)&conn->pipe, on_closed);
    if (!sock)
        abort();
    h2o_accept(&w.api->accept_ctx, sock);

    struct client c = {.fd = sv[1]};
    if (size && write(c.fd, data, size) != (ssize_t)size)
        abort(); /* max_len keeps the input well inside the socket buffer */
    shutdown(c.fd, SHUT_WR);
    uv_timer_t stall;
    uv_timer_init(&w.loop, &stall);
    stall.data = &c;
    uv_timer_start(&stall, on_stall, 20, 20);
    while (!conn->closed) {
        uv_run(&w.loop, UV_RUN_ONCE);
        drain(&c);
    }
    uv_timer_stop(&stall);
    uv_close((uv_handle_t *)&stall, NULL);
    uv_run(&w.loop, UV_RUN_NOWAIT);
    drain(&c);
    check(&c);
    if (c.fd >= 0)
        close(c.fd);
    free(c.resp);
    free(conn);
    forget_silences();
    return 0;
}
