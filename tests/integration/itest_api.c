/* The HTTP API over real HTTP on loopback: every endpoint, its errors, the
 * security fences, slow clients, Server-Sent Events and resume, shutdown.
 *
 * The API runs on a uv loop in a thread of the test. Its data comes from the
 * test's own provider (tprov_*, below): the loop-side answers from a small
 * in-memory alert table, and the pool-side answers from a real SQLite file
 * that the test fills (its own tables, not the storage schema: these tests
 * are about the HTTP layer; the daemon's provider over the real store is
 * tested where the daemon is). The client is libcurl, or a raw socket where
 * the bytes on the wire matter (traversal, dribbling headers, SSE). */
#include "api/api.h"
#include "base/clock.h"
#include "base/config.h"
#include "base/metrics.h"
#include "base/strbuf.h"
#include "tests/support/daemon_itest.h"

#include <CUnit/CUnit.h>
#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#define RW_TOKEN "rw-secret-token"
#define RO_TOKEN "ro-secret-token"

/* ---- the test's own provider ------------------------------------------------ */

struct talert {
    const char *id, *rule, *state, *severity, *district;
    int acked;
};

struct tprov {
    char db_path[512];
    struct talert alerts[3];
    char silences[8][64];
    int nsilences, next_silence;
    int reload_fails;
    uv_thread_t loop_thread;
    int pool_calls_on_loop; /* pool functions called on the loop thread: must stay 0 */
    int pool_calls;
};

static int on_loop_thread(struct tprov *t)
{
    uv_thread_t self = uv_thread_self();
    return uv_thread_equal(&self, &t->loop_thread);
}

static int tprov_health(void *ctx, struct cb_strbuf *out)
{
    (void)ctx;
    cb_strbuf_puts(out, "{\"status\":\"ok\",\"mqtt\":\"connected\",\"storage\":\"ok\","
                        "\"uptime_s\":1,\"version\":\"test\"}");
    return 200;
}

static void alert_json(struct cb_strbuf *out, const struct talert *a)
{
    cb_strbuf_puts(out, "{\"id\":");
    cb_strbuf_json_string(out, a->id, strlen(a->id));
    cb_strbuf_printf(out, ",\"rule\":\"%s\",\"state\":\"%s\",\"severity\":\"%s\","
                          "\"labels\":{\"district\":\"%s\"},\"acknowledged\":%s}",
                     a->rule, a->acked ? "acknowledged" : a->state, a->severity, a->district,
                     a->acked ? "true" : "false");
}

static int tprov_alerts(void *ctx, const struct cb_api_alert_filter *f, struct cb_strbuf *out)
{
    struct tprov *t = ctx;
    cb_strbuf_puts(out, "{\"alerts\":[");
    int first = 1;
    for (int i = 0; i < 3; i++) {
        const struct talert *a = &t->alerts[i];
        if ((f->state && strcmp(f->state, a->state)) ||
            (f->severity && strcmp(f->severity, a->severity)) || (f->rule && strcmp(f->rule, a->rule)))
            continue;
        if (!first)
            cb_strbuf_putc(out, ',');
        first = 0;
        alert_json(out, a);
    }
    cb_strbuf_puts(out, "]}");
    return 200;
}

static int tprov_ack(void *ctx, const char *id, const char *by, const char *note,
                     struct cb_strbuf *out)
{
    (void)note;
    struct tprov *t = ctx;
    for (int i = 0; i < 3; i++)
        if (!strcmp(t->alerts[i].id, id)) {
            t->alerts[i].acked = 1;
            alert_json(out, &t->alerts[i]);
            (void)by;
            return 200;
        }
    cb_strbuf_printf(out, "no alert '%s'", id);
    return 404;
}

static int tprov_silences_list(void *ctx, struct cb_strbuf *out)
{
    struct tprov *t = ctx;
    cb_strbuf_puts(out, "{\"silences\":[");
    for (int i = 0; i < t->nsilences; i++)
        cb_strbuf_printf(out, "%s{\"id\":\"%s\"}", i ? "," : "", t->silences[i]);
    cb_strbuf_puts(out, "]}");
    return 200;
}

/* Echoes what api/ made of the body: the matchers (op null when not
 * given), the times and the two names. */
static int tprov_silence_add(void *ctx, const struct cb_api_silence *s, struct cb_strbuf *out)
{
    struct tprov *t = ctx;
    if (t->nsilences == 8) {
        cb_strbuf_puts(out, "too many silences");
        return 409;
    }
    snprintf(t->silences[t->nsilences], 64, "%d", ++t->next_silence);
    cb_strbuf_printf(out, "{\"id\":%s,\"matchers\":[", t->silences[t->nsilences]);
    for (size_t i = 0; i < s->nmatchers; i++) {
        const struct cb_api_matcher *m = &s->matchers[i];
        cb_strbuf_puts(out, i ? ",{\"name\":" : "{\"name\":");
        cb_strbuf_json_string(out, m->name, strlen(m->name));
        cb_strbuf_puts(out, ",\"op\":");
        if (m->op)
            cb_strbuf_json_string(out, m->op, strlen(m->op));
        else
            cb_strbuf_puts(out, "null");
        cb_strbuf_puts(out, ",\"value\":");
        cb_strbuf_json_string(out, m->value, strlen(m->value));
        cb_strbuf_putc(out, '}');
    }
    cb_strbuf_printf(out, "],\"starts\":%lld,\"ends\":%lld,\"comment\":",
                     (long long)s->starts_ms, (long long)s->ends_ms);
    cb_strbuf_json_string(out, s->comment, strlen(s->comment));
    cb_strbuf_puts(out, ",\"created_by\":");
    cb_strbuf_json_string(out, s->created_by, strlen(s->created_by));
    cb_strbuf_putc(out, '}');
    t->nsilences++;
    return 201;
}

/* Ends (forgets) a silence; echoes who, why and how. */
static int tprov_silence_end(void *ctx, const char *id, const char *by, const char *comment,
                             int deleted, struct cb_strbuf *out)
{
    struct tprov *t = ctx;
    for (int i = 0; i < t->nsilences; i++)
        if (!strcmp(t->silences[i], id)) {
            memmove(t->silences[i], t->silences[i + 1], (size_t)(t->nsilences - i - 1) * 64);
            t->nsilences--;
            cb_strbuf_printf(out, "{\"id\":%s,\"expired_by\":", id);
            cb_strbuf_json_string(out, by, strlen(by));
            cb_strbuf_puts(out, ",\"comment\":");
            cb_strbuf_json_string(out, comment, strlen(comment));
            cb_strbuf_printf(out, ",\"deleted\":%s}", deleted ? "true" : "false");
            return 200;
        }
    cb_strbuf_printf(out, "no silence '%s'", id);
    return 404;
}

static int tprov_rules_list(void *ctx, struct cb_strbuf *out)
{
    (void)ctx;
    cb_strbuf_puts(out, "{\"rules\":[{\"name\":\"river_flood\"},{\"name\":\"air_pm25\"}]}");
    return 200;
}

static int tprov_rules_reload(void *ctx, const char *by, const char *note,
                              struct cb_strbuf *out)
{
    struct tprov *t = ctx;
    if (t->reload_fails) {
        cb_strbuf_puts(out, "{\"ok\":false,\"diagnostics\":[\"x.rules:1:1: error: boom\"]}");
        return 422;
    }
    cb_strbuf_puts(out, "{\"ok\":true,\"rules\":2,\"by\":");
    cb_strbuf_json_string(out, by, strlen(by));
    cb_strbuf_puts(out, ",\"note\":");
    cb_strbuf_json_string(out, note, strlen(note));
    cb_strbuf_putc(out, '}');
    return 200;
}

static void tprov_metrics(void *ctx, struct cb_strbuf *out)
{
    (void)ctx;
    cb_strbuf_puts(out, "# TYPE citybrain_test_extra gauge\ncitybrain_test_extra 1\n");
}

static void *tprov_reader_open(void *ctx, char *err, size_t errlen)
{
    struct tprov *t = ctx;
    sqlite3 *db = NULL;
    if (sqlite3_open_v2(t->db_path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "%s", db ? sqlite3_errmsg(db) : "sqlite3_open_v2");
        sqlite3_close(db);
        return NULL;
    }
    return db;
}

static void tprov_reader_close(void *ctx, void *reader)
{
    (void)ctx;
    sqlite3_close(reader);
}

static void note_pool_call(struct tprov *t)
{
    __atomic_fetch_add(&t->pool_calls, 1, __ATOMIC_RELAXED);
    if (on_loop_thread(t))
        __atomic_fetch_add(&t->pool_calls_on_loop, 1, __ATOMIC_RELAXED);
}

static int tprov_sensors(void *ctx, void *reader, int64_t now, int64_t stale_after,
                         struct cb_strbuf *out)
{
    note_pool_call(ctx);
    sqlite3_stmt *st;
    sqlite3_prepare_v2(reader, "SELECT topic, district, last_ts FROM sensors ORDER BY topic", -1,
                       &st, NULL);
    cb_strbuf_puts(out, "{\"sensors\":[");
    int first = 1;
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *topic = (const char *)sqlite3_column_text(st, 0);
        int64_t last = sqlite3_column_int64(st, 2);
        cb_strbuf_printf(out, "%s{\"topic\":", first ? "" : ",");
        cb_strbuf_json_string(out, topic, strlen(topic));
        cb_strbuf_printf(out, ",\"labels\":{\"district\":\"%s\"},\"last_ts\":%lld,\"stale\":%s}",
                         (const char *)sqlite3_column_text(st, 1), (long long)last,
                         now - last > stale_after ? "true" : "false");
        first = 0;
    }
    sqlite3_finalize(st);
    cb_strbuf_puts(out, "]}");
    return 200;
}

static int tprov_series(void *ctx, void *reader, const struct cb_api_series_query *q,
                        struct cb_strbuf *out)
{
    note_pool_call(ctx);
    sqlite3_stmt *st;
    sqlite3_prepare_v2(reader,
                       "SELECT (ts / ?4) * ?4, count(*), min(value), max(value), avg(value) "
                       "FROM samples WHERE topic = ?1 AND metric = ?2 AND ts >= ?3 AND ts < ?5 "
                       "GROUP BY 1 ORDER BY 1",
                       -1, &st, NULL);
    sqlite3_bind_text(st, 1, q->topic, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, q->metric, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, q->from_ms);
    sqlite3_bind_int64(st, 4, q->step_ms);
    sqlite3_bind_int64(st, 5, q->to_ms);
    cb_strbuf_printf(out, "{\"step\":%lld,\"buckets\":[", (long long)q->step_ms);
    int first = 1;
    while (sqlite3_step(st) == SQLITE_ROW) {
        cb_strbuf_printf(out, "%s{\"ts\":%lld,\"count\":%lld,\"min\":", first ? "" : ",",
                         (long long)sqlite3_column_int64(st, 0),
                         (long long)sqlite3_column_int64(st, 1));
        cb_strbuf_json_number(out, sqlite3_column_double(st, 2));
        cb_strbuf_puts(out, ",\"max\":");
        cb_strbuf_json_number(out, sqlite3_column_double(st, 3));
        cb_strbuf_puts(out, ",\"avg\":");
        cb_strbuf_json_number(out, sqlite3_column_double(st, 4));
        cb_strbuf_putc(out, '}');
        first = 0;
    }
    sqlite3_finalize(st);
    cb_strbuf_puts(out, "]}");
    return 200;
}

static int tprov_history(void *ctx, void *reader, const struct cb_api_history_query *q,
                         struct cb_strbuf *out)
{
    note_pool_call(ctx);
    sqlite3_stmt *st;
    sqlite3_prepare_v2(reader,
                       "SELECT seq, json FROM transitions WHERE at >= ?1 AND at < ?2 "
                       "ORDER BY seq DESC LIMIT ?3",
                       -1, &st, NULL);
    sqlite3_bind_int64(st, 1, q->from_ms);
    sqlite3_bind_int64(st, 2, q->to_ms);
    sqlite3_bind_int64(st, 3, (int64_t)q->limit);
    cb_strbuf_puts(out, "{\"transitions\":[");
    int first = 1;
    while (sqlite3_step(st) == SQLITE_ROW) {
        cb_strbuf_printf(out, "%s{\"seq\":%lld,\"transition\":%s}", first ? "" : ",",
                         (long long)sqlite3_column_int64(st, 0),
                         (const char *)sqlite3_column_text(st, 1));
        first = 0;
    }
    sqlite3_finalize(st);
    cb_strbuf_puts(out, "]}");
    return 200;
}

static int tprov_events_since(void *ctx, void *reader, uint64_t after, size_t limit,
                              cb_api_event_fn emit, void *emit_ctx)
{
    note_pool_call(ctx);
    sqlite3_stmt *st;
    sqlite3_prepare_v2(reader, "SELECT seq, json FROM transitions WHERE seq > ?1 ORDER BY seq LIMIT ?2",
                       -1, &st, NULL);
    sqlite3_bind_int64(st, 1, (int64_t)after);
    sqlite3_bind_int64(st, 2, (int64_t)limit);
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *j = (const char *)sqlite3_column_text(st, 1);
        if (emit(emit_ctx, (uint64_t)sqlite3_column_int64(st, 0), j, strlen(j)))
            break;
    }
    sqlite3_finalize(st);
    return 0;
}

/* Echoes the query api/ made of GET /api/audit, read on the pool. */
static int tprov_audit(void *ctx, void *reader, const struct cb_api_audit_query *q,
                       struct cb_strbuf *out)
{
    (void)reader;
    note_pool_call(ctx);
    cb_strbuf_printf(out, "{\"from\":%lld,\"to\":%lld,\"limit\":%zu,\"action\":",
                     (long long)q->from_ms, (long long)q->to_ms, q->limit);
    if (q->action)
        cb_strbuf_json_string(out, q->action, strlen(q->action));
    else
        cb_strbuf_puts(out, "null");
    cb_strbuf_puts(out, ",\"entries\":[]}");
    return 200;
}

/* The resolved alert of the fixture, read on the pool as the store would be. */
static int tprov_alerts_resolved(void *ctx, void *reader, const struct cb_api_alert_filter *f,
                                 struct cb_strbuf *out)
{
    (void)reader;
    note_pool_call(ctx);
    return tprov_alerts(ctx, f, out);
}

static const struct cb_api_provider tprov_template = {
    .health = tprov_health,
    .alerts = tprov_alerts,
    .ack = tprov_ack,
    .silences_list = tprov_silences_list,
    .silence_add = tprov_silence_add,
    .silence_end = tprov_silence_end,
    .rules_list = tprov_rules_list,
    .rules_reload = tprov_rules_reload,
    .metrics = tprov_metrics,
    .reader_open = tprov_reader_open,
    .reader_close = tprov_reader_close,
    .sensors = tprov_sensors,
    .series = tprov_series,
    .history = tprov_history,
    .alerts_resolved = tprov_alerts_resolved,
    .events_since = tprov_events_since,
    .audit = tprov_audit,
};

/* ---- the server under test: a uv loop in a thread ------------------------------ */

struct event_msg {
    uint64_t seq;
    char json[256];
};

struct server {
    uv_loop_t loop;
    uv_thread_t thread;
    uv_async_t wake;
    uv_mutex_t lock;
    struct event_msg events[16];
    int nevents;
    int stop;
    int closed; /* set by the done callback */
    struct cb_config cfg;
    struct cb_api *api;
    struct tprov prov;
    int port;
    char dir[256];
};

static int64_t server_now_ms(void) { return cb_wall_ms(); }

static void on_api_done(void *ctx)
{
    struct server *s = ctx;
    s->closed = 1;
}

static void on_wake(uv_async_t *a)
{
    struct server *s = a->data;
    uv_mutex_lock(&s->lock);
    for (int i = 0; i < s->nevents; i++)
        cb_api_event(s->api, s->events[i].seq, s->events[i].json, strlen(s->events[i].json));
    s->nevents = 0;
    int stop = s->stop;
    uv_mutex_unlock(&s->lock);
    if (stop) {
        cb_api_close(s->api, on_api_done, s);
        uv_close((uv_handle_t *)&s->wake, NULL);
    }
}

static void exec_sql(sqlite3 *db, const char *sql)
{
    char *err = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK) {
        fprintf(stderr, "sql: %s\n", err);
        sqlite3_free(err);
    }
}

/* Writes the dashboard folder and the SQLite file under a fresh temp dir. */
static int make_fixtures(struct server *s)
{
    snprintf(s->dir, sizeof s->dir, "/tmp/cb-itest-api-XXXXXX");
    if (!mkdtemp(s->dir))
        return -1;
    char p[512];
    snprintf(p, sizeof p, "%s/dash", s->dir);
    mkdir(p, 0700);
    snprintf(p, sizeof p, "%s/dash/index.html", s->dir);
    FILE *f = fopen(p, "w");
    if (!f)
        return -1;
    fputs("<!doctype html><title>citybrain test</title>\n", f);
    fclose(f);
    snprintf(p, sizeof p, "%s/dash/app.js", s->dir);
    f = fopen(p, "w");
    fputs("console.log('ok');\n", f);
    fclose(f);
    snprintf(p, sizeof p, "%s/secret.txt", s->dir);
    f = fopen(p, "w");
    fputs("TOP-SECRET\n", f);
    fclose(f);
    char target[512];
    snprintf(target, sizeof target, "%s/secret.txt", s->dir);
    snprintf(p, sizeof p, "%s/dash/escape.txt", s->dir);
    if (symlink(target, p) != 0)
        return -1;
    snprintf(p, sizeof p, "%s/dash/dashsecretdir", s->dir); /* prefix trick target */
    snprintf(s->prov.db_path, sizeof s->prov.db_path, "%s/test.db", s->dir);
    sqlite3 *db;
    if (sqlite3_open(s->prov.db_path, &db) != SQLITE_OK)
        return -1;
    exec_sql(db, "CREATE TABLE samples(topic TEXT, metric TEXT, ts INTEGER, value REAL);"
                 "CREATE TABLE sensors(topic TEXT, district TEXT, last_ts INTEGER);"
                 "CREATE TABLE transitions(seq INTEGER PRIMARY KEY, at INTEGER, json TEXT);");
    char sql[512];
    int64_t now = server_now_ms();
    snprintf(sql, sizeof sql,
             "INSERT INTO sensors VALUES('city/d07/river/s12','d07',%lld),"
             "('city/d01/noise/n9','d01',%lld);",
             (long long)(now - 1000), (long long)(now - 3600000));
    exec_sql(db, sql);
    exec_sql(db, "BEGIN");
    for (int i = 0; i < 600; i++) { /* 10 minutes of one sample per second */
        snprintf(sql, sizeof sql,
                 "INSERT INTO samples VALUES('city/d07/river/s12','level',%lld,%d);",
                 (long long)(1700000040000LL + i * 1000LL), i % 60);
        exec_sql(db, sql);
    }
    for (int i = 1; i <= 5; i++) {
        snprintf(sql, sizeof sql,
                 "INSERT INTO transitions VALUES(%d,%lld,'{\"id\":\"r/d=%d\",\"rule\":\"r\","
                 "\"state\":\"firing\",\"severity\":\"major\",\"labels\":{},\"at\":%lld}');",
                 i, (long long)(now - 10000 + i), i, (long long)(now - 10000 + i));
        exec_sql(db, sql);
    }
    exec_sql(db, "COMMIT");
    sqlite3_close(db);
    return 0;
}

static void rm_fixtures(struct server *s)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", s->dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", s->dir);
}

static void set(struct server *s, const char *key, const char *value)
{
    struct cb_config_error err;
    if (cb_config_set(&s->cfg, key, value, 1, "test", &err))
        fprintf(stderr, "config %s=%s: %s\n", key, value, err.text);
}

/* Starts a server on a fresh loop (run by the calling thread); `tweak` (may
 * be NULL) adjusts the configuration first. */
static struct server *server_start(void (*tweak)(struct server *))
{
    struct server *s = calloc(1, sizeof *s);
    if (!s || make_fixtures(s))
        return NULL;
    s->prov.alerts[0] = (struct talert){"river_flood/district=d07", "river_flood", "firing",
                                        "critical", "d07", 0};
    s->prov.alerts[1] = (struct talert){"air_pm25/district=d01", "air_pm25", "firing", "major",
                                        "d01", 0};
    s->prov.alerts[2] = (struct talert){"noise/district=d02", "noise", "resolved", "info", "d02",
                                        0};
    cb_config_defaults(&s->cfg);
    char dash[512];
    snprintf(dash, sizeof dash, "%s/dash", s->dir);
    set(s, "http.listen", "127.0.0.1:0");
    set(s, "http.token", RW_TOKEN);
    set(s, "http.read_token", RO_TOKEN);
    set(s, "http.dashboard_dir", dash);
    set(s, "http.max_body", "1k");
    set(s, "http.max_header", "4k");
    set(s, "http.header_timeout", "600ms");
    set(s, "http.sse_heartbeat", "1s");
    if (tweak)
        tweak(s);
    uv_loop_init(&s->loop);
    uv_mutex_init(&s->lock);
    uv_async_init(&s->loop, &s->wake, on_wake);
    s->wake.data = s;
    s->prov.loop_thread = uv_thread_self();
    struct cb_api_provider p = tprov_template;
    p.ctx = &s->prov;
    char err[256];
    s->api = cb_api_start(&s->loop, &s->cfg, &p, err, sizeof err);
    if (!s->api) {
        fprintf(stderr, "cb_api_start: %s\n", err);
        return NULL;
    }
    s->port = cb_api_port(s->api);
    return s;
}

static void server_push(struct server *s, uint64_t seq, const char *json)
{
    uv_mutex_lock(&s->lock);
    s->events[s->nevents].seq = seq;
    snprintf(s->events[s->nevents].json, sizeof s->events[0].json, "%s", json);
    s->nevents++;
    uv_mutex_unlock(&s->lock);
    uv_async_send(&s->wake);
}

/* Asks the loop to close the API (from the client thread). */
static void server_request_stop(struct server *s)
{
    uv_mutex_lock(&s->lock);
    s->stop = 1;
    uv_mutex_unlock(&s->lock);
    uv_async_send(&s->wake);
}

struct client_run {
    struct server *s;
    void (*client)(struct server *);
};

static void client_main(void *arg)
{
    struct client_run *cr = arg;
    cr->client(cr->s);
    server_request_stop(cr->s);
}

/* Runs one test: the API's loop on this thread (as in the daemon), the
 * client in a second thread; when the client is done the API is closed and
 * the loop must end with every handle closed. */
static void run_test(void (*tweak)(struct server *), void (*client)(struct server *))
{
    struct server *s = server_start(tweak);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    struct client_run cr = {s, client};
    uv_thread_create(&s->thread, client_main, &cr);
    uv_run(&s->loop, UV_RUN_DEFAULT);
    uv_thread_join(&s->thread);
    CU_ASSERT_EQUAL(s->closed, 1);
    CU_ASSERT_EQUAL(uv_loop_close(&s->loop), 0);
    CU_ASSERT_EQUAL(s->prov.pool_calls_on_loop, 0);
    uv_mutex_destroy(&s->lock);
    cb_config_free(&s->cfg);
    rm_fixtures(s);
    free(s);
}

/* ---- clients ------------------------------------------------------------------- */

struct resp {
    long status;
    struct cb_strbuf body, headers;
};

static size_t on_data(char *p, size_t sz, size_t n, void *ud)
{
    cb_strbuf_append(ud, p, sz * n);
    return sz * n;
}

/* One request with libcurl. token may be NULL; body may be NULL. */
static long http(struct server *s, const char *method, const char *path, const char *token,
                 const char *body, struct resp *r)
{
    char url[1024];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", s->port, path);
    cb_strbuf_init(&r->body);
    cb_strbuf_init(&r->headers);
    CURL *c = curl_easy_init();
    struct curl_slist *h = NULL;
    char auth[256];
    if (token) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", token);
        h = curl_slist_append(h, auth);
    }
    h = curl_slist_append(h, "Content-Type: application/json");
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &r->body);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &r->headers);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 10000L);
    curl_easy_setopt(c, CURLOPT_PATH_AS_IS, 1L);
    if (!strcmp(method, "HEAD"))
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    if (body)
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    r->status = 0;
    if (curl_easy_perform(c) == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    return r->status;
}

static void resp_free(struct resp *r)
{
    cb_strbuf_free(&r->body);
    cb_strbuf_free(&r->headers);
}

/* GET path: the number of alerts listed (-1 unless 200 with an "alerts"
 * array, or when needle is given and not in the answer). */
static int alerts_listed(struct server *s, const char *path, const char *needle)
{
    struct resp r;
    int n = -1;
    if (http(s, "GET", path, NULL, NULL, &r) == 200 && (!needle || strstr(r.body.data, needle))) {
        cJSON *j = cJSON_Parse(r.body.data);
        if (cJSON_IsArray(cJSON_GetObjectItem(j, "alerts")))
            n = cJSON_GetArraySize(cJSON_GetObjectItem(j, "alerts"));
        cJSON_Delete(j);
    }
    resp_free(&r);
    return n;
}

/* The "error" member of a JSON error body, or NULL when it is not one. */
static int is_json_error(const struct resp *r, const char *needle)
{
    cJSON *j = cJSON_Parse(r->body.data ? r->body.data : "");
    cJSON *e = j ? cJSON_GetObjectItem(j, "error") : NULL;
    int ok = cJSON_IsString(e) && (!needle || strstr(e->valuestring, needle));
    if (!ok)
        fprintf(stderr, "not the expected JSON error (%s): %s\n", needle ? needle : "",
                r->body.data ? r->body.data : "(empty)");
    cJSON_Delete(j);
    return ok;
}

/* Reads into b until `until` appears (NULL: until the peer closes) or the
 * deadline passes. Returns 1 when found / closed, 0 on timeout. */
static int raw_read(int fd, struct cb_strbuf *b, const char *until, int timeout_ms)
{
    int64_t deadline = cb_mono_ms() + timeout_ms;
    for (;;) {
        if (until && b->data && strstr(b->data, until))
            return 1;
        int64_t left = deadline - cb_mono_ms();
        if (left <= 0)
            return 0;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, (int)left) <= 0)
            continue;
        char buf[4096];
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n <= 0)
            return until ? (b->data && strstr(b->data, until) != NULL) : 1;
        cb_strbuf_append(b, buf, (size_t)n);
    }
}

/* Sends a raw request and reads the whole answer (Connection: close). */
static void raw_request(struct server *s, const char *req, struct cb_strbuf *out)
{
    cb_strbuf_init(out);
    int fd = cbd_raw_connect(s->port);
    if (fd < 0)
        return;
    if (send(fd, req, strlen(req), 0) < 0) {
        close(fd);
        return;
    }
    raw_read(fd, out, NULL, 5000);
    close(fd);
}

static int status_of(const struct cb_strbuf *b)
{
    int st = 0;
    if (b->data)
        sscanf(b->data, "HTTP/1.%*d %d", &st);
    return st;
}

/* ---- tests ---------------------------------------------------------------------- */

static void client_reads(struct server *s)
{
    struct resp r;

    CU_ASSERT_EQUAL(http(s, "GET", "/api/health", NULL, NULL, &r), 200);
    cJSON *j = cJSON_Parse(r.body.data);
    CU_ASSERT_STRING_EQUAL(cJSON_GetObjectItem(j, "status")->valuestring, "ok");
    CU_ASSERT_PTR_NOT_NULL(strstr(r.headers.data, "application/json"));
    CU_ASSERT_PTR_NULL(strstr(r.headers.data, "access-control-allow-origin")); /* CORS off */
    cJSON_Delete(j);
    resp_free(&r);

    CU_ASSERT_EQUAL(alerts_listed(s, "/api/alerts?state=firing", NULL), 2);
    CU_ASSERT_EQUAL(alerts_listed(s, "/api/alerts?severity=critical&rule=river_flood", NULL), 1);
    /* Resolved alerts are read on the pool (run_test checks: never the loop),
     * with the other filters passed along. */
    int pool_before = __atomic_load_n(&s->prov.pool_calls, __ATOMIC_RELAXED);
    CU_ASSERT_EQUAL(alerts_listed(s, "/api/alerts?state=resolved", "\"noise/district=d02\""), 1);
    CU_ASSERT_EQUAL(alerts_listed(s, "/api/alerts?state=resolved&rule=river_flood", NULL), 0);
    CU_ASSERT_EQUAL(__atomic_load_n(&s->prov.pool_calls, __ATOMIC_RELAXED), pool_before + 2);

    CU_ASSERT_EQUAL(http(s, "GET", "/api/sensors", NULL, NULL, &r), 200);
    j = cJSON_Parse(r.body.data);
    cJSON *sens = cJSON_GetObjectItem(j, "sensors");
    CU_ASSERT_EQUAL(cJSON_GetArraySize(sens), 2);
    /* d01 was last heard an hour ago: stale after the default 10 minutes */
    CU_ASSERT(cJSON_IsTrue(cJSON_GetObjectItem(cJSON_GetArrayItem(sens, 0), "stale")));
    CU_ASSERT(cJSON_IsFalse(cJSON_GetObjectItem(cJSON_GetArrayItem(sens, 1), "stale")));
    cJSON_Delete(j);
    resp_free(&r);

    CU_ASSERT_EQUAL(http(s, "GET",
                         "/api/series?topic=city%2Fd07%2Friver%2Fs12&metric=level"
                         "&from=1700000040000&to=1700000640000&step=60s",
                         NULL, NULL, &r),
                    200);
    j = cJSON_Parse(r.body.data);
    cJSON *b = cJSON_GetObjectItem(j, "buckets");
    if (cJSON_GetArraySize(b) != 10)
        fprintf(stderr, "series: %s\n", r.body.data);
    CU_ASSERT_EQUAL(cJSON_GetArraySize(b), 10);
    CU_ASSERT_EQUAL(cJSON_GetObjectItem(cJSON_GetArrayItem(b, 0), "count")->valueint, 60);
    CU_ASSERT_EQUAL(cJSON_GetObjectItem(cJSON_GetArrayItem(b, 0), "max")->valueint, 59);
    cJSON_Delete(j);
    resp_free(&r);

    CU_ASSERT_EQUAL(http(s, "GET", "/api/alerts/history?limit=2", NULL, NULL, &r), 200);
    j = cJSON_Parse(r.body.data);
    cJSON *t = cJSON_GetObjectItem(j, "transitions");
    CU_ASSERT_EQUAL(cJSON_GetArraySize(t), 2);
    CU_ASSERT_EQUAL(cJSON_GetObjectItem(cJSON_GetArrayItem(t, 0), "seq")->valueint, 5);
    cJSON_Delete(j);
    resp_free(&r);

    /* the audit log: read on the pool, the last 24 hours by default */
    CU_ASSERT_EQUAL(http(s, "GET", "/api/audit", NULL, NULL, &r), 200);
    j = cJSON_Parse(r.body.data);
    int64_t to = (int64_t)cJSON_GetObjectItem(j, "to")->valuedouble;
    CU_ASSERT(to > cb_wall_ms() - 60000 && to <= cb_wall_ms() + 1);
    CU_ASSERT_EQUAL((int64_t)cJSON_GetObjectItem(j, "from")->valuedouble, to - 86400000);
    CU_ASSERT_EQUAL(cJSON_GetObjectItem(j, "limit")->valueint, 1000);
    CU_ASSERT(cJSON_IsNull(cJSON_GetObjectItem(j, "action")));
    cJSON_Delete(j);
    resp_free(&r);
    CU_ASSERT_EQUAL(http(s, "GET", "/api/audit?from=5&to=9&action=silence_create&limit=3", NULL,
                         NULL, &r),
                    200);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.body.data, "{\"from\":5,\"to\":9,\"limit\":3,"
                                               "\"action\":\"silence_create\""));
    resp_free(&r);

    CU_ASSERT_EQUAL(http(s, "GET", "/api/rules", NULL, NULL, &r), 200);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.body.data, "river_flood"));
    resp_free(&r);
    CU_ASSERT_EQUAL(http(s, "GET", "/api/silences", NULL, NULL, &r), 200);
    resp_free(&r);
    CU_ASSERT_EQUAL(http(s, "HEAD", "/api/health", NULL, NULL, &r), 200);
    CU_ASSERT_EQUAL(r.body.len, 0);
    resp_free(&r);

    CU_ASSERT_EQUAL(http(s, "GET", "/metrics", NULL, NULL, &r), 200);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.body.data, "# TYPE citybrain_http_requests_total counter"));
    CU_ASSERT_PTR_NOT_NULL(strstr(r.body.data, "citybrain_http_requests_total{code=\"2xx\"}"));
    CU_ASSERT_PTR_NOT_NULL(strstr(r.body.data, "citybrain_test_extra 1"));
    CU_ASSERT_PTR_NOT_NULL(strstr(r.headers.data, "text/plain; version=0.0.4"));
    resp_free(&r);

    CU_ASSERT(s->prov.pool_calls >= 3);
}
static void test_reads(void) { run_test(NULL, client_reads); }

static void client_bad_parameters(struct server *s)
{
    static const struct {
        const char *path, *needle;
    } cases[] = {
        {"/api/alerts?severity=bogus", "severity"},
        {"/api/alerts?state=burning", "state"},
        {"/api/alerts?sevrity=major", "unknown parameter 'sevrity'"},
        {"/api/alerts?rule=a&rule=b", "twice"},
        {"/api/series?metric=level", "topic"},
        {"/api/series?topic=t", "metric"},
        {"/api/series?topic=t&metric=m&step=abc", "step"},
        {"/api/series?topic=t&metric=m&step=0", "step"},
        {"/api/series?topic=t&metric=m&from=20&to=10", "before"},
        {"/api/series?topic=t&metric=m&from=x", "from"},
        {"/api/series?topic=t&metric=m&from=0&to=86400000&step=1ms", "too many buckets"},
        {"/api/series?topic=%zz&metric=m", "percent"},
        {"/api/alerts/history?limit=0", "limit"},
        {"/api/alerts/history?from=abc", "from"},
        {"/api/audit?limit=0", "limit"},
        {"/api/audit?to=abc", "to"},
        {"/api/audit?action=Ack!", "action"},
        {"/api/audit?actoin=ack", "unknown parameter 'actoin'"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct resp r;
        long st = http(s, "GET", cases[i].path, NULL, NULL, &r);
        if (st != 400)
            fprintf(stderr, "%s: %ld\n", cases[i].path, st);
        CU_ASSERT_EQUAL(st, 400);
        CU_ASSERT(is_json_error(&r, cases[i].needle));
        resp_free(&r);
    }
    struct resp r;
    CU_ASSERT_EQUAL(http(s, "GET", "/api/nothing", NULL, NULL, &r), 404);
    CU_ASSERT(is_json_error(&r, NULL));
    resp_free(&r);
    CU_ASSERT_EQUAL(http(s, "GET", "/nothing.html", NULL, NULL, &r), 404);
    CU_ASSERT(is_json_error(&r, NULL));
    resp_free(&r);
    CU_ASSERT_EQUAL(http(s, "DELETE", "/api/health", RW_TOKEN, NULL, &r), 405);
    CU_ASSERT(is_json_error(&r, NULL));
    CU_ASSERT_PTR_NOT_NULL(strstr(r.headers.data, "allow: GET, HEAD"));
    resp_free(&r);
    CU_ASSERT_EQUAL(http(s, "POST", "/", RW_TOKEN, "{}", &r), 405);
    resp_free(&r);
    CU_ASSERT_EQUAL(http(s, "GET", "/api/rules/reload", NULL, NULL, &r), 405);
    resp_free(&r);
}
static void test_bad_parameters(void) { run_test(NULL, client_bad_parameters); }

static void client_writes_need_tokens(struct server *s)
{
    struct resp r;
    const char *ack = "/api/alerts/river_flood%2Fdistrict%3Dd07/ack";

    CU_ASSERT_EQUAL(http(s, "POST", ack, NULL, "{\"by\":\"ops\"}", &r), 401);
    CU_ASSERT(is_json_error(&r, "Bearer"));
    CU_ASSERT_PTR_NOT_NULL(strstr(r.headers.data, "www-authenticate: Bearer"));
    resp_free(&r);
    CU_ASSERT_EQUAL(http(s, "POST", ack, "wrong-token-of-same-len", "{}", &r), 401);
    resp_free(&r);
    CU_ASSERT_EQUAL(http(s, "POST", ack, RO_TOKEN, "{}", &r), 403);
    CU_ASSERT(is_json_error(&r, "read-only"));
    resp_free(&r);
    CU_ASSERT_EQUAL(s->prov.alerts[0].acked, 0);

    CU_ASSERT_EQUAL(http(s, "POST", ack, RW_TOKEN, "{\"by\":\"ops\",\"note\":\"on it\"}", &r), 200);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.body.data, "\"acknowledged\":true"));
    resp_free(&r);
    /* idempotent */
    CU_ASSERT_EQUAL(http(s, "POST", ack, RW_TOKEN, "{\"by\":\"ops\"}", &r), 200);
    resp_free(&r);
    /* the raw, unencoded id works too */
    CU_ASSERT_EQUAL(http(s, "POST", "/api/alerts/air_pm25/district=d01/ack", RW_TOKEN,
                         "{\"by\":\"ops\"}", &r),
                    200);
    resp_free(&r);
    CU_ASSERT_EQUAL(s->prov.alerts[1].acked, 1);
    CU_ASSERT_EQUAL(http(s, "POST", "/api/alerts/nope/ack", RW_TOKEN, "{\"by\":\"ops\"}", &r),
                    404);
    CU_ASSERT(is_json_error(&r, "nope"));
    resp_free(&r);
    CU_ASSERT_EQUAL(http(s, "POST", ack, RW_TOKEN, "{not json", &r), 400);
    CU_ASSERT(is_json_error(&r, "JSON"));
    resp_free(&r);
    CU_ASSERT_EQUAL(http(s, "POST", ack, RW_TOKEN, "{\"by\":42}", &r), 400);
    CU_ASSERT(is_json_error(&r, "by"));
    resp_free(&r);
    /* who acknowledges is required */
    static const char *const no_by[] = {NULL, "{}", "{\"by\":\"\"}", "{\"by\":\"  \"}",
                                        "{\"note\":\"on it\"}"};
    for (size_t i = 0; i < sizeof no_by / sizeof no_by[0]; i++) {
        CU_ASSERT_EQUAL(http(s, "POST", "/api/alerts/nope/ack", RW_TOKEN, no_by[i], &r), 400);
        CU_ASSERT(is_json_error(&r, "'by' is required: who acknowledges"));
        resp_free(&r);
    }
    CU_ASSERT_EQUAL(http(s, "POST", ack, RW_TOKEN, "{\"by\":\"ops\",\"nte\":\"x\"}", &r), 400);
    CU_ASSERT(is_json_error(&r, "unknown member 'nte'"));
    resp_free(&r);

    /* silences: the body of docs/alerts.md, and nothing else */
    CU_ASSERT_EQUAL(http(s, "POST", "/api/silences", NULL, "{}", &r), 401);
    resp_free(&r);
    CU_ASSERT_EQUAL(http(s, "POST", "/api/silences", RW_TOKEN,
                         "{\"matchers\":[{\"name\":\"district\",\"value\":\"d07\"},"
                         "{\"name\":\"rule\",\"op\":\"=~\",\"value\":\"river_.*\"}],"
                         "\"starts\":1732400000000,\"ends\":1732403600000,"
                         "\"comment\":\"pump works\",\"created_by\":\"li.wei\"}",
                         &r),
                    201);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.body.data,
                                  "\"matchers\":[{\"name\":\"district\",\"op\":null,"
                                  "\"value\":\"d07\"},{\"name\":\"rule\",\"op\":\"=~\","
                                  "\"value\":\"river_.*\"}],\"starts\":1732400000000,"
                                  "\"ends\":1732403600000,\"comment\":\"pump works\","
                                  "\"created_by\":\"li.wei\""));
    resp_free(&r);
    CU_ASSERT_EQUAL(http(s, "POST", "/api/silences", RW_TOKEN,
                         "{\"matchers\":[{\"name\":\"sensor\",\"op\":\"!~\",\"value\":\"s1.*\"}],"
                         "\"ends\":1732403600000,\"comment\":\"c\",\"created_by\":\"b\"}",
                         &r),
                    201);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.body.data, "\"starts\":0,")); /* not given */
    resp_free(&r);
    static const struct {
        const char *body, *needle;
    } bad[] = {
        /* the body this API took before, documented nowhere */
        {"{\"matchers\":{\"district\":\"d07\"},\"duration\":\"2h\",\"by\":\"ops\"}",
         "unknown member 'duration' in a silence (it takes matchers, starts, ends, comment and "
         "created_by)"},
        {"{\"matchers\":{\"district\":\"d07\"},\"ends\":1,\"comment\":\"c\",\"created_by\":\"b\"}",
         "'matchers' must be a non-empty array"},
        {"{\"matchers\":[],\"ends\":1,\"comment\":\"c\",\"created_by\":\"b\"}",
         "'matchers' must be a non-empty array"},
        {"{\"matchers\":[{\"name\":\"a\",\"value\":\"b\",\"regex\":true}],\"ends\":1,"
         "\"comment\":\"c\",\"created_by\":\"b\"}",
         "unknown member 'regex' in matcher 1 (it takes name, value and op)"},
        {"{\"matchers\":[{\"name\":\"a\",\"value\":\"b\"},\"x\"],\"ends\":1,"
         "\"comment\":\"c\",\"created_by\":\"b\"}",
         "matcher 2 must be an object"},
        {"{\"matchers\":[{\"value\":\"b\"}],\"ends\":1,\"comment\":\"c\",\"created_by\":\"b\"}",
         "matcher 1: \"name\""},
        {"{\"matchers\":[{\"name\":\"a\",\"value\":\"b\",\"op\":1}],\"ends\":1,"
         "\"comment\":\"c\",\"created_by\":\"b\"}",
         "matcher 1: \"op\""},
        {"{\"matchers\":[{\"name\":\"a\",\"value\":\"b\"}],\"comment\":\"c\",\"created_by\":\"b\"}",
         "'ends' is required"},
        {"{\"matchers\":[{\"name\":\"a\",\"value\":\"b\"}],\"ends\":\"2h\",\"comment\":\"c\","
         "\"created_by\":\"b\"}",
         "'ends' must be a time in milliseconds"},
        {"{\"matchers\":[{\"name\":\"a\",\"value\":\"b\"}],\"starts\":1.5,\"ends\":9,"
         "\"comment\":\"c\",\"created_by\":\"b\"}",
         "'starts' must be a time in milliseconds"},
        {"{\"matchers\":[{\"name\":\"a\",\"value\":\"b\"}],\"ends\":9,\"created_by\":\"b\"}",
         "'comment' is required"},
        {"{\"matchers\":[{\"name\":\"a\",\"value\":\"b\"}],\"ends\":9,\"comment\":\"c\","
         "\"created_by\":\" \"}",
         "'created_by' is required"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CU_ASSERT_EQUAL(http(s, "POST", "/api/silences", RW_TOKEN, bad[i].body, &r), 400);
        if (!is_json_error(&r, bad[i].needle))
            fprintf(stderr, "\nsilence %zu: %s\n", i, r.body.data);
        CU_ASSERT(is_json_error(&r, bad[i].needle));
        resp_free(&r);
    }
    CU_ASSERT_EQUAL(http(s, "GET", "/api/silences", NULL, NULL, &r), 200);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.body.data, "\"1\""));
    resp_free(&r);
    /* ended by hand: POST .../expire with a body, DELETE with ?by= */
    CU_ASSERT_EQUAL(http(s, "POST", "/api/silences/1/expire", RO_TOKEN, "{\"by\":\"ops\"}", &r),
                    403);
    resp_free(&r);
    CU_ASSERT_EQUAL(http(s, "POST", "/api/silences/1/expire", RW_TOKEN, "{}", &r), 400);
    CU_ASSERT(is_json_error(&r, "'by' is required: who expires the silence"));
    resp_free(&r);
    CU_ASSERT_EQUAL(http(s, "POST", "/api/silences/1/expire", RW_TOKEN,
                         "{\"by\":\"ops\",\"comment\":\"pump fixed\"}", &r),
                    200);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.body.data, "\"expired_by\":\"ops\",\"comment\":\"pump "
                                               "fixed\",\"deleted\":false"));
    resp_free(&r);
    CU_ASSERT_EQUAL(http(s, "DELETE", "/api/silences/2", RO_TOKEN, NULL, &r), 403);
    resp_free(&r);
    CU_ASSERT_EQUAL(http(s, "DELETE", "/api/silences/2", RW_TOKEN, NULL, &r), 400);
    CU_ASSERT(is_json_error(&r, "'by' is required: who deletes the silence"));
    resp_free(&r);
    CU_ASSERT_EQUAL(http(s, "DELETE", "/api/silences/2?by=ops&comment=no+longer+needed", RW_TOKEN,
                         NULL, &r),
                    200);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.body.data, "\"comment\":\"no longer needed\","
                                               "\"deleted\":true"));
    resp_free(&r);
    CU_ASSERT_EQUAL(http(s, "DELETE", "/api/silences/2?by=ops", RW_TOKEN, NULL, &r), 404);
    CU_ASSERT(is_json_error(&r, "'2'"));
    resp_free(&r);
    CU_ASSERT_EQUAL(http(s, "GET", "/api/silences/1/expire", NULL, NULL, &r), 405);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.headers.data, "allow: POST"));
    resp_free(&r);

    /* reload: who asked, and why, reach the provider; diagnostics come back
     * as the body, not as an error */
    CU_ASSERT_EQUAL(http(s, "POST", "/api/rules/reload", RW_TOKEN, NULL, &r), 200);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.body.data, "\"by\":\"\",\"note\":\"\""));
    resp_free(&r);
    CU_ASSERT_EQUAL(http(s, "POST", "/api/rules/reload", RW_TOKEN,
                         "{\"by\":\"li.wei\",\"note\":\"new gauges\"}", &r),
                    200);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.body.data, "\"by\":\"li.wei\",\"note\":\"new gauges\""));
    resp_free(&r);
    CU_ASSERT_EQUAL(http(s, "POST", "/api/rules/reload", RW_TOKEN, "{\"who\":\"x\"}", &r), 400);
    CU_ASSERT(is_json_error(&r, "unknown member 'who'"));
    resp_free(&r);
    s->prov.reload_fails = 1;
    CU_ASSERT_EQUAL(http(s, "POST", "/api/rules/reload", RW_TOKEN, NULL, &r), 422);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.body.data, "\"diagnostics\":[")); /* JSON, not escaped */
    resp_free(&r);
}
static void test_writes_need_tokens(void) { run_test(NULL, client_writes_need_tokens); }

static void no_rw_token(struct server *s) { set(s, "http.token", ""); }

static void client_writes_refused_without_configured_token(struct server *s)
{
    struct resp r;
    CU_ASSERT_EQUAL(http(s, "POST", "/api/rules/reload", "", NULL, &r), 401);
    resp_free(&r);
    CU_ASSERT_EQUAL(http(s, "POST", "/api/rules/reload", "anything", NULL, &r), 403);
    CU_ASSERT(is_json_error(&r, "http.token"));
    resp_free(&r);
}
static void test_writes_refused_without_configured_token(void) { run_test(no_rw_token, client_writes_refused_without_configured_token); }

static void client_limits(struct server *s)
{
    struct resp r;
    /* body over http.max_body (1k) */
    char *big = malloc(4096);
    memset(big, 'x', 4095);
    big[0] = '{';
    big[4095] = '\0';
    CU_ASSERT_EQUAL(http(s, "POST", "/api/silences", RW_TOKEN, big, &r), 413);
    /* h2o's own answer, made JSON (see client_h2o_errors_json) */
    CU_ASSERT_PTR_NOT_NULL(strcasestr(r.headers.data, "content-type: application/json"));
    CU_ASSERT_TRUE(is_json_error(&r, "too large"));
    resp_free(&r);
    /* headers over http.max_header (4k) */
    struct cb_strbuf req, out;
    cb_strbuf_init(&req);
    cb_strbuf_puts(&req, "GET /api/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Big: ");
    cb_strbuf_append(&req, big + 1, 4000);
    cb_strbuf_puts(&req, "\r\nX-Big2: ");
    cb_strbuf_append(&req, big + 1, 2000);
    cb_strbuf_puts(&req, "\r\n\r\n");
    raw_request(s, req.data, &out);
    CU_ASSERT_EQUAL(status_of(&out), 431);
    CU_ASSERT_PTR_NOT_NULL(out.data && strstr(out.data, "{\"error\":"));
    cb_strbuf_free(&req);
    cb_strbuf_free(&out);
    free(big);
}
static void test_limits(void) { run_test(NULL, client_limits); }

/* The body of a raw answer (after the blank line), or "" */
static const char *raw_body(const struct cb_strbuf *b)
{
    const char *p = b->data ? strstr(b->data, "\r\n\r\n") : NULL;
    return p ? p + 4 : "";
}

/* A raw answer with the status, the JSON content type, and a JSON body
 * whose "error" is a string. */
static int raw_json_error(const struct cb_strbuf *b, int status)
{
    struct resp r = {.body = {.data = (char *)raw_body(b)}};
    int ok = status_of(b) == status && b->data &&
             strcasestr(b->data, "content-type: application/json") && is_json_error(&r, NULL);
    if (!ok)
        fprintf(stderr, "expected a JSON %d, got:\n%.400s\n", status, b->data ? b->data : "");
    return ok;
}

/* Answers h2o makes before our handler: a broken chunked body (400), an
 * unknown Expect (417) (the 413 for a body over max_request_entity_size is in
 * client_limits), and the fixed
 * 400 for a request head it cannot parse (too long, too many fields,
 * malformed) are JSON like every other error. */
static void client_h2o_errors_json(struct server *s)
{
    struct resp r;
    struct cb_strbuf out;
    raw_request(s, "POST /api/silences HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                   "\r\nzz\r\n{}\r\n0\r\n\r\n", &out);
    CU_ASSERT_TRUE(raw_json_error(&out, 400));
    cb_strbuf_free(&out);
    raw_request(s, "POST /api/silences HTTP/1.1\r\nHost: x\r\nExpect: sandwiches\r\n"
                   "Content-Length: 2\r\n\r\n{}", &out);
    CU_ASSERT_TRUE(raw_json_error(&out, 417));
    cb_strbuf_free(&out);

    /* malformed request line */
    raw_request(s, "GET /api/health HTTP/1.1 extra\r\nHost: x\r\n\r\n", &out);
    CU_ASSERT_TRUE(raw_json_error(&out, 400));
    cb_strbuf_free(&out);
    /* more header fields than h2o parses (100) */
    struct cb_strbuf req;
    cb_strbuf_init(&req);
    cb_strbuf_puts(&req, "GET /api/health HTTP/1.1\r\nHost: x\r\n");
    for (int i = 0; i < 120; i++)
        cb_strbuf_printf(&req, "X-F%d: 1\r\n", i);
    cb_strbuf_puts(&req, "\r\n");
    raw_request(s, req.data, &out);
    CU_ASSERT_TRUE(raw_json_error(&out, 400));
    cb_strbuf_free(&out);
    /* a head longer than h2o reads at most (about 417 KB) */
    cb_strbuf_reset(&req);
    cb_strbuf_puts(&req, "GET /api/health HTTP/1.1\r\nHost: x\r\nX-Huge: ");
    for (int i = 0; i < 500 * 1024 / 64; i++)
        cb_strbuf_puts(&req, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
    cb_strbuf_puts(&req, "\r\n\r\n");
    raw_request(s, req.data, &out);
    CU_ASSERT_TRUE(raw_json_error(&out, 400));
    cb_strbuf_free(&out);
    cb_strbuf_free(&req);

    /* and ours stay as they were */
    CU_ASSERT_EQUAL(http(s, "GET", "/api/nothing-here", NULL, NULL, &r), 404);
    CU_ASSERT_TRUE(is_json_error(&r, NULL));
    resp_free(&r);
    CU_ASSERT_EQUAL(http(s, "GET", "/api/health", NULL, NULL, &r), 200);
    resp_free(&r);
}
static void test_h2o_errors_json(void) { run_test(NULL, client_h2o_errors_json); }

static void client_traversal(struct server *s)
{
    struct resp r;
    CU_ASSERT_EQUAL(http(s, "GET", "/", NULL, NULL, &r), 200);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.body.data, "citybrain test"));
    CU_ASSERT_PTR_NOT_NULL(strstr(r.headers.data, "text/html"));
    CU_ASSERT_PTR_NOT_NULL(strstr(r.headers.data, "content-security-policy: default-src 'self'"));
    resp_free(&r);
    CU_ASSERT_EQUAL(http(s, "GET", "/app.js", NULL, NULL, &r), 200);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.headers.data, "text/javascript"));
    resp_free(&r);

    static const char *const attacks[] = {
        "/../../etc/passwd",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/%2E%2e/%2e%2E/etc/passwd",
        "/..%2f..%2fetc%2fpasswd",
        "/x/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/..\\..\\etc\\passwd",
        "/escape.txt", /* a symlink to a file outside the folder */
        "/.hidden",
        "/app.js%00.html",
    };
    for (size_t i = 0; i < sizeof attacks / sizeof attacks[0]; i++) {
        struct cb_strbuf req, out;
        cb_strbuf_init(&req);
        cb_strbuf_printf(&req, "GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                         attacks[i]);
        raw_request(s, req.data, &out);
        int st = status_of(&out);
        if (st != 400 && st != 404)
            fprintf(stderr, "%s -> %d\n", attacks[i], st);
        CU_ASSERT(st == 400 || st == 404);
        CU_ASSERT_PTR_NULL(out.data ? strstr(out.data, "root:") : NULL);
        CU_ASSERT_PTR_NULL(out.data ? strstr(out.data, "TOP-SECRET") : NULL);
        CU_ASSERT_PTR_NOT_NULL(out.data ? strstr(out.data, "{\"error\":") : NULL);
        cb_strbuf_free(&req);
        cb_strbuf_free(&out);
    }
}
static void test_traversal(void) { run_test(NULL, client_traversal); }

/* A client that sends its headers a byte at a time is closed after
 * http.header_timeout (600 ms here), long before it would finish. */
static void client_slow_headers_closed(struct server *s)
{
    int fd = cbd_raw_connect(s->port);
    CU_ASSERT_FATAL(fd >= 0);
    const char *req = "GET /api/health HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                      "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    int64_t t0 = cb_mono_ms();
    int closed = 0;
    for (size_t i = 0; req[i] && cb_mono_ms() - t0 < 5000; i++) {
        if (send(fd, req + i, 1, MSG_NOSIGNAL) < 0) {
            closed = 1;
            break;
        }
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 50) > 0) { /* the server spoke or closed */
            char buf[256];
            if (recv(fd, buf, sizeof buf, 0) <= 0) {
                closed = 1;
                break;
            }
        }
    }
    int64_t took = cb_mono_ms() - t0;
    CU_ASSERT(closed);
    CU_ASSERT(took >= 500 && took < 3000);
    close(fd);
}
static void test_slow_headers_closed(void) { run_test(NULL, client_slow_headers_closed); }

static void cap_two(struct server *s) { set(s, "http.max_connections", "2"); }

static void client_connection_cap(struct server *s)
{
    int a = cbd_raw_connect(s->port), b = cbd_raw_connect(s->port);
    CU_ASSERT(a >= 0 && b >= 0);
    /* make sure both were accepted before the third arrives */
    send(a, "GET /api/health HTTP/1.1\r\nHost: x\r\n\r\n", 37, 0);
    send(b, "GET /api/health HTTP/1.1\r\nHost: x\r\n\r\n", 37, 0);
    struct cb_strbuf ra, rb, rc;
    cb_strbuf_init(&ra);
    cb_strbuf_init(&rb);
    cb_strbuf_init(&rc);
    CU_ASSERT(raw_read(a, &ra, "\"status\"", 3000));
    CU_ASSERT(raw_read(b, &rb, "\"status\"", 3000));
    int c = cbd_raw_connect(s->port);
    CU_ASSERT(c >= 0);
    send(c, "GET /api/health HTTP/1.1\r\nHost: x\r\n\r\n", 37, MSG_NOSIGNAL);
    CU_ASSERT(raw_read(c, &rc, NULL, 3000)); /* closed by the server */
    CU_ASSERT_EQUAL(rc.len, 0);
    close(c);
    close(a);
    /* with one slot free again, a new client is served */
    struct resp r;
    int64_t t0 = cb_mono_ms();
    long st = 0;
    while (st != 200 && cb_mono_ms() - t0 < 3000) {
        st = http(s, "GET", "/api/health", NULL, NULL, &r);
        resp_free(&r);
    }
    CU_ASSERT_EQUAL(st, 200);
    close(b);
    cb_strbuf_free(&ra);
    cb_strbuf_free(&rb);
    cb_strbuf_free(&rc);
    double refused = 0;
    CU_ASSERT_EQUAL(cb_metrics_value("citybrain_http_connections_refused_total", "", &refused), 0);
    CU_ASSERT(refused >= 1);
}
static void test_connection_cap(void) { run_test(cap_two, client_connection_cap); }

static void with_cors(struct server *s) { set(s, "http.cors_origin", "https://ops.example"); }

static void client_cors(struct server *s)
{
    struct resp r;
    CU_ASSERT_EQUAL(http(s, "GET", "/api/health", NULL, NULL, &r), 200);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.headers.data, "access-control-allow-origin: https://ops.example"));
    resp_free(&r);
    CU_ASSERT_EQUAL(http(s, "OPTIONS", "/api/silences", NULL, NULL, &r), 204);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.headers.data, "access-control-allow-headers: Authorization"));
    resp_free(&r);
}
static void test_cors(void) { run_test(with_cors, client_cors); }

static void berlin(struct server *s) { set(s, "http.time_zone", "Europe/Berlin"); }

/* GET /api/console tells the console its time zone and whether there is a
 * map; GET /api/city serves the map (by default the simulator's city). */
static void client_console_and_city(struct server *s)
{
    struct resp r;
    CU_ASSERT_EQUAL(http(s, "GET", "/api/console", NULL, NULL, &r), 200);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.body.data, "\"time_zone\":\"Europe/Berlin\""));
    CU_ASSERT_PTR_NOT_NULL(strstr(r.body.data, "\"city_map\":true"));
    CU_ASSERT_PTR_NOT_NULL(strstr(r.body.data, "\"languages\":[\"zh-CN\",\"en-US\"]"));
    resp_free(&r);
    CU_ASSERT_EQUAL(http(s, "GET", "/api/city", NULL, NULL, &r), 200);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.headers.data, "application/geo+json"));
    CU_ASSERT_PTR_NOT_NULL(strstr(r.body.data, "\"FeatureCollection\""));
    CU_ASSERT_PTR_NOT_NULL(strstr(r.body.data, "\"district\":\"d07\""));
    CU_ASSERT_PTR_NOT_NULL(strstr(r.body.data, "\"topic\":\"city/d07/river/s01\""));
    resp_free(&r);
    CU_ASSERT_EQUAL(http(s, "POST", "/api/city", NULL, NULL, &r), 405);
    resp_free(&r);
}
static void test_console_and_city(void) { run_test(berlin, client_console_and_city); }

static void no_map(struct server *s) { set(s, "http.city_map", "off"); }

static void client_no_map(struct server *s)
{
    struct resp r;
    CU_ASSERT_EQUAL(http(s, "GET", "/api/console", NULL, NULL, &r), 200);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.body.data, "\"city_map\":false"));
    CU_ASSERT_PTR_NOT_NULL(strstr(r.body.data, "\"time_zone\":\"Asia/Shanghai\""));
    resp_free(&r);
    CU_ASSERT_EQUAL(http(s, "GET", "/api/city", NULL, NULL, &r), 404);
    CU_ASSERT(is_json_error(&r, "http.city_map"));
    resp_free(&r);
}
static void test_no_map(void) { run_test(no_map, client_no_map); }

/* Opens /api/events (with Last-Event-ID when last_id >= 0). */
static int sse_open(struct server *s, long last_id, struct cb_strbuf *b)
{
    int fd = cbd_raw_connect(s->port);
    if (fd < 0)
        return -1;
    char req[256];
    if (last_id >= 0)
        snprintf(req, sizeof req,
                 "GET /api/events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n"
                 "Last-Event-ID: %ld\r\n\r\n",
                 last_id);
    else
        snprintf(req, sizeof req,
                 "GET /api/events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n");
    send(fd, req, strlen(req), 0);
    cb_strbuf_init(b);
    if (!raw_read(fd, b, ": citybrain events", 3000)) {
        close(fd);
        return -1;
    }
    return fd;
}

static void client_events_live_and_heartbeat(struct server *s)
{
    struct cb_strbuf b;
    int fd = sse_open(s, -1, &b);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(b.data, "text/event-stream"));
    server_push(s, 42, "{\"id\":\"river_flood/district=d07\",\"state\":\"firing\"}");
    CU_ASSERT(raw_read(fd, &b, "id: 42\nevent: transition\n"
                               "data: {\"id\":\"river_flood/district=d07\",\"state\":\"firing\"}\n\n",
                       3000));
    /* a heartbeat comment within http.sse_heartbeat (1 s) */
    CU_ASSERT(raw_read(fd, &b, ": keep-alive\n\n", 3000));
    close(fd);
    cb_strbuf_free(&b);
}
static void test_events_live_and_heartbeat(void) { run_test(NULL, client_events_live_and_heartbeat); }

/* Counts "id: N" lines in order into ids[]; returns how many. */
static int sse_ids(const char *text, long *ids, int max)
{
    int n = 0;
    for (const char *p = text; p && (p = strstr(p, "\nid: ")) && n < max; p++)
        ids[n++] = strtol(p + 5, NULL, 10);
    return n;
}

static void client_events_resume(struct server *s)
{
    struct cb_strbuf b;
    int fd = sse_open(s, 3, &b); /* stored transitions are 1..5 */
    CU_ASSERT_FATAL(fd >= 0);
    /* 5 arrives live as well (stored and pushed): it must come once */
    server_push(s, 5, "{\"id\":\"r/d=5\"}");
    server_push(s, 6, "{\"id\":\"r/d=6\"}");
    CU_ASSERT(raw_read(fd, &b, "id: 6\n", 3000));
    long ids[16];
    int n = sse_ids(b.data, ids, 16);
    CU_ASSERT_EQUAL(n, 3);
    if (n == 3) {
        CU_ASSERT_EQUAL(ids[0], 4);
        CU_ASSERT_EQUAL(ids[1], 5);
        CU_ASSERT_EQUAL(ids[2], 6);
    }
    close(fd);
    cb_strbuf_free(&b);
}
static void test_events_resume(void) { run_test(NULL, client_events_resume); }

/* Shutdown with an event stream and an idle keep-alive connection open:
 * the stream is ended, the connections close, the loop closes cleanly. */
static void client_clean_shutdown(struct server *s)
{
    struct cb_strbuf b, k;
    int fd = sse_open(s, -1, &b);
    CU_ASSERT_FATAL(fd >= 0);
    int ka = cbd_raw_connect(s->port);
    send(ka, "GET /api/health HTTP/1.1\r\nHost: x\r\n\r\n", 37, 0);
    cb_strbuf_init(&k);
    CU_ASSERT(raw_read(ka, &k, "\"status\"", 3000));
    int64_t t0 = cb_mono_ms();
    server_request_stop(s);
    CU_ASSERT(raw_read(fd, &b, NULL, 3000)); /* the server ended the stream */
    CU_ASSERT(raw_read(ka, &k, NULL, 3000)); /* and closed the idle connection */
    CU_ASSERT(cb_mono_ms() - t0 < 3000);
    close(fd);
    close(ka);
    cb_strbuf_free(&b);
    cb_strbuf_free(&k);
}
/* With a 10 s header timeout, closing within 3 s shows the idle keep-alive
 * connection was closed by the shutdown, not by its timer. */
static void long_header_timeout(struct server *s) { set(s, "http.header_timeout", "10s"); }
static void test_clean_shutdown(void) { run_test(long_header_timeout, client_clean_shutdown); }

void cb_test_suite_api(void);
void cb_test_suite_api(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    CU_pSuite s = CU_add_suite("api", NULL, NULL);
    CU_add_test(s, "api: every read endpoint answers JSON from the provider", test_reads);
    CU_add_test(s, "api: /api/console gives the configured time zone and the map's presence; "
                   "/api/city serves the city's GeoJSON",
                test_console_and_city);
    CU_add_test(s, "api: with http.city_map off, /api/city is 404 JSON and the console is told",
                test_no_map);
    CU_add_test(s, "api: bad parameters get 400 with a message; unknown paths 404 JSON; wrong "
                   "methods 405",
                test_bad_parameters);
    CU_add_test(s, "api: writes need the read-write token (401 without, 403 read-only)",
                test_writes_need_tokens);
    CU_add_test(s, "api: writes are refused when no read-write token is configured",
                test_writes_refused_without_configured_token);
    CU_add_test(s, "api: oversized bodies get 413 and oversized headers 431, both JSON", test_limits);
    CU_add_test(s, "api: h2o's own errors (broken bodies, 417, unparsable heads) are JSON",
                test_h2o_errors_json);
    CU_add_test(s, "api: no path escapes the dashboard folder (.., %2e%2e, symlinks)",
                test_traversal);
    CU_add_test(s, "api: a client dribbling its headers is closed after the header timeout",
                test_slow_headers_closed);
    CU_add_test(s, "api: connections beyond http.max_connections are refused",
                test_connection_cap);
    CU_add_test(s, "api: CORS headers only when http.cors_origin is set", test_cors);
    CU_add_test(s, "api: /api/events delivers transitions as they happen, with heartbeats",
                test_events_live_and_heartbeat);
    CU_add_test(s, "api: /api/events resumes after Last-Event-ID, each transition once",
                test_events_resume);
    CU_add_test(s, "api: shutdown ends streams and closes the loop cleanly", test_clean_shutdown);
}
