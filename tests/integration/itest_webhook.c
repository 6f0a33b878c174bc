/* Webhook delivery end to end: a real HTTP receiver on loopback (a thread
 * with a blocking accept loop) that is down for the first part of the test.
 * Every transition is delivered once it is up, in order per alert, none twice
 * after a success, and a restart of the alerts module in between keeps the
 * outbox. The loop runs for real (curl multi on uv); waits are bounded and
 * end as soon as the condition holds. */
#include <CUnit/CUnit.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "alerts/alerts.h"
#include "cmd/commands.h"
#include "base/config.h"
#include "storage/storage.h"
#include "base/log.h"
#include "storage/alert_store.h"
#include "tests/support/store_fixture.h"

#define MAXREQ 64

struct receiver {
    int port, fd;
    pthread_t thread;
    pthread_mutex_t mu;
    int n;
    long long seq[MAXREQ];
    char *body[MAXREQ];
    char *head[MAXREQ];
    int stop;
};

/* Reads one request (headers, then Content-Length bytes), records it, answers 200. */
static void serve_one(struct receiver *r, int c)
{
    char buf[65536];
    size_t len = 0;
    char *end = NULL;
    while (len < sizeof buf - 1 && !end) {
        ssize_t k = read(c, buf + len, sizeof buf - 1 - len);
        if (k <= 0)
            return;
        len += (size_t)k;
        buf[len] = '\0';
        end = strstr(buf, "\r\n\r\n");
    }
    if (!end)
        return;
    const char *cl = strcasestr(buf, "Content-Length:");
    const char *sq = strcasestr(buf, "X-Citybrain-Seq:");
    size_t want = cl ? strtoul(cl + 15, NULL, 10) : 0;
    size_t have = len - (size_t)(end + 4 - buf);
    while (have < want && len < sizeof buf - 1) {
        ssize_t k = read(c, buf + len, sizeof buf - 1 - len);
        if (k <= 0)
            return;
        len += (size_t)k;
        have += (size_t)k;
    }
    buf[len] = '\0';
    pthread_mutex_lock(&r->mu);
    if (r->n < MAXREQ) {
        r->seq[r->n] = sq ? atoll(sq + 16) : -1;
        r->body[r->n] = strndup(end + 4, want);
        r->head[r->n] = strndup(buf, (size_t)(end - buf));
    }
    r->n++;
    pthread_mutex_unlock(&r->mu);
    const char ok[] = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                      "Content-Length: 2\r\nConnection: close\r\n\r\n{}";
    if (write(c, ok, sizeof ok - 1) < 0) {
    }
}

static void *receiver_main(void *arg)
{
    struct receiver *r = arg;
    for (;;) {
        int c = accept(r->fd, NULL, NULL);
        if (c < 0)
            break;
        pthread_mutex_lock(&r->mu);
        int stop = r->stop;
        pthread_mutex_unlock(&r->mu);
        if (!stop)
            serve_one(r, c);
        close(c);
        if (stop)
            break;
    }
    return NULL;
}

static int listen_on(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) || listen(fd, 16)) {
        close(fd);
        return -1;
    }
    return fd;
}

/* A free loopback port, for the receiver that is not up yet. */
static int free_port(void)
{
    int fd = listen_on(0);
    struct sockaddr_in a;
    socklen_t l = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &l);
    close(fd);
    return ntohs(a.sin_port);
}

static int receiver_start(struct receiver *r)
{
    r->fd = listen_on(r->port);
    if (r->fd < 0)
        return -1;
    return pthread_create(&r->thread, NULL, receiver_main, r);
}

static void receiver_stop(struct receiver *r)
{
    pthread_mutex_lock(&r->mu);
    r->stop = 1;
    pthread_mutex_unlock(&r->mu);
    int c = socket(AF_INET, SOCK_STREAM, 0); /* wake accept() */
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)r->port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(c, (struct sockaddr *)&a, sizeof a)) {
    }
    close(c);
    pthread_join(r->thread, NULL);
    close(r->fd);
}

static int received(struct receiver *r)
{
    pthread_mutex_lock(&r->mu);
    int n = r->n;
    pthread_mutex_unlock(&r->mu);
    return n;
}

/* ---- running the loop until a condition, bounded ---- */

struct wait {
    struct receiver *r;
    int want;       /* received() >= want ends the wait; -1: run the whole time */
    uv_timer_t check, limit;
};

static void on_check(uv_timer_t *t)
{
    struct wait *w = t->data;
    if (w->want >= 0 && received(w->r) >= w->want)
        uv_stop(t->loop);
}

static void on_limit(uv_timer_t *t) { uv_stop(t->loop); }

static void run_for(uv_loop_t *loop, struct receiver *r, int want, uint64_t max_ms)
{
    struct wait w = {.r = r, .want = want};
    uv_timer_init(loop, &w.check);
    uv_timer_init(loop, &w.limit);
    w.check.data = &w;
    uv_timer_start(&w.check, on_check, 10, 10);
    uv_timer_start(&w.limit, on_limit, max_ms, 0);
    uv_run(loop, UV_RUN_DEFAULT);
    uv_close((uv_handle_t *)&w.check, NULL);
    uv_close((uv_handle_t *)&w.limit, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
}

static void on_closed(void *ctx) { *(int *)ctx = 1; }

static void close_alerts(uv_loop_t *loop, struct cb_alerts *a)
{
    int closed = 0;
    cb_alerts_close(a, on_closed, &closed);
    while (!closed)
        uv_run(loop, UV_RUN_ONCE);
}

static void fire(struct cb_alerts *a, const char *id, const char *district,
                 enum cb_alert_state s, int64_t at)
{
    struct cb_label l[] = {{"district", district}};
    struct cb_transition t = {.id = id, .rule = "river_flood", .state = s,
                              .severity = CB_SEV_MAJOR, .labels = l, .nlabels = 1, .at = at,
                              .since = at};
    if (s == CB_ALERT_ACKNOWLEDGED)
        t.acked_by = "ops";
    cb_alerts_on_transition(a, &t);
}

static void test_outbox_survives_down_receiver_and_restart(void)
{
    char dir[] = "/tmp/cb_itest_webhook_XXXXXX", db[80], url[80], err[256] = "";
    CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(dir));
    snprintf(db, sizeof db, "%s/a.db", dir);
    CU_ASSERT_EQUAL_FATAL(cb_t_create_schema(db), 0);
    struct receiver r = {0};
    pthread_mutex_init(&r.mu, NULL);
    r.port = free_port();
    snprintf(url, sizeof url, "hook type=webhook url=http://127.0.0.1:%d/hook", r.port);

    cb_log_threshold = CB_LOG_ERROR;
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct cb_config cfg;
    struct cb_config_error e;
    cb_config_defaults(&cfg);
    cfg.alerts_storm_window_ms = 0;
    cfg.alerts_webhook_timeout_ms = 1000;
    cfg.alerts_webhook_retry_min_ms = 20;
    cfg.alerts_webhook_retry_max_ms = 100;
    cb_config_set(&cfg, "alerts.channel", url, 1, "t", &e);
    cb_config_set(&cfg, "alerts.default_notify", "hook", 1, "t", &e);
    struct cb_alerts_hooks h = {0};

    /* part 1: the receiver is down; attempts fail and are retried */
    struct cb_alerts *a = cb_alerts_new(&loop, &cfg, db, &h, err, sizeof err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    int64_t t0 = 1732400000000LL;
    const char *A = "river_flood/district=d07", *B = "river_flood/district=d08";
    fire(a, A, "d07", CB_ALERT_FIRING, t0);
    fire(a, B, "d08", CB_ALERT_FIRING, t0 + 1);
    fire(a, A, "d07", CB_ALERT_ESCALATED, t0 + 2);
    fire(a, B, "d08", CB_ALERT_ACKNOWLEDGED, t0 + 3);
    fire(a, A, "d07", CB_ALERT_RESOLVED, t0 + 4);
    run_for(&loop, &r, -1, 400);
    struct cb_alerts_stats st;
    cb_alerts_get_stats(a, &st);
    CU_ASSERT(st.webhook_failed >= 2); /* retried with backoff */
    CU_ASSERT_EQUAL(st.webhook_sent, 0);
    CU_ASSERT_EQUAL(st.outbox_pending, 5);
    close_alerts(&loop, a);

    /* the outbox is durable */
    struct cb_alert_reader *rd = cb_alert_reader_open(db, err, sizeof err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(rd);
    CU_ASSERT_EQUAL(cb_alert_reader_outbox_count(rd, 0), 5);
    CU_ASSERT_EQUAL(cb_alert_reader_outbox_count(rd, 1), 0);

    /* part 2: restart while still down, one more transition, then the
     * receiver comes up: everything arrives */
    a = cb_alerts_new(&loop, &cfg, db, &h, err, sizeof err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    fire(a, A, "d07", CB_ALERT_FIRING, t0 + 10);
    run_for(&loop, &r, -1, 100);
    CU_ASSERT_EQUAL_FATAL(receiver_start(&r), 0);
    run_for(&loop, &r, 6, 10000);
    CU_ASSERT_EQUAL(received(&r), 6);
    run_for(&loop, &r, -1, 300); /* nothing more comes */
    CU_ASSERT_EQUAL(received(&r), 6);
    cb_alerts_get_stats(a, &st);
    CU_ASSERT_EQUAL(st.webhook_sent, 6);
    close_alerts(&loop, a);
    CU_ASSERT_EQUAL(cb_alert_reader_outbox_count(rd, 0), 0);
    CU_ASSERT_EQUAL(cb_alert_reader_outbox_count(rd, 1), 6);

    /* in order per alert, none twice */
    const char *wantA[] = {"\"firing\"", "\"escalated\"", "\"resolved\"", "\"firing\""};
    const char *wantB[] = {"\"firing\"", "\"acknowledged\""};
    int na = 0, nb = 0;
    long long lastA = 0, lastB = 0;
    for (int i = 0; i < received(&r) && i < MAXREQ; i++) {
        for (int j = 0; j < i; j++)
            CU_ASSERT_NOT_EQUAL(r.seq[i], r.seq[j]);
        if (strstr(r.body[i], "district=d07")) {
            CU_ASSERT(r.seq[i] > lastA);
            lastA = r.seq[i];
            if (na < 4)
                CU_ASSERT_PTR_NOT_NULL(strstr(r.body[i], wantA[na]));
            na++;
        } else {
            CU_ASSERT(r.seq[i] > lastB);
            lastB = r.seq[i];
            if (nb < 2)
                CU_ASSERT_PTR_NOT_NULL(strstr(r.body[i], wantB[nb]));
            nb++;
        }
    }
    CU_ASSERT_EQUAL(na, 4);
    CU_ASSERT_EQUAL(nb, 2);

    /* part 3: a restart after success sends nothing again */
    a = cb_alerts_new(&loop, &cfg, db, &h, err, sizeof err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    run_for(&loop, &r, -1, 300);
    CU_ASSERT_EQUAL(received(&r), 6);
    close_alerts(&loop, a);

    receiver_stop(&r);
    cb_alert_reader_close(rd);
    CU_ASSERT_EQUAL(uv_loop_close(&loop), 0);
    for (int i = 0; i < MAXREQ; i++) {
        free(r.body[i]);
        free(r.head[i]);
    }
    pthread_mutex_destroy(&r.mu);
    cb_config_free(&cfg);
    cb_t_remove_dir(dir);
}

/* `citybrain ack` posts to the daemon's API with the bearer token from the
 * environment; it fails cleanly when nothing listens. */
static void test_ack_cli_posts_to_api(void)
{
    struct receiver r = {0};
    pthread_mutex_init(&r.mu, NULL);
    r.port = free_port();
    char api[64];
    snprintf(api, sizeof api, "http://127.0.0.1:%d", r.port);
    setenv("CITYBRAIN_API_TOKEN", "s3cret", 1);
    char *argv[] = {"ack", "river_flood/district=d07", "--by", "li.wei", "--note",
                    "pumps \"on\"", "--api", api};
    fprintf(stderr, "\n(one refused connection follows on purpose)\n");
    CU_ASSERT_EQUAL(cb_cmd_ack(8, argv), 1); /* down */
    CU_ASSERT_EQUAL_FATAL(receiver_start(&r), 0);
    CU_ASSERT_EQUAL(cb_cmd_ack(8, argv), 0);
    receiver_stop(&r);
    CU_ASSERT_EQUAL_FATAL(r.n, 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.head[0], "POST /api/alerts/river_flood%2Fdistrict%3Dd07/ack "));
    CU_ASSERT_PTR_NOT_NULL(strstr(r.head[0], "Authorization: Bearer s3cret"));
    CU_ASSERT_STRING_EQUAL(r.body[0], "{\"by\":\"li.wei\",\"note\":\"pumps \\\"on\\\"\"}");
    char *noby[] = {"ack", "x"};
    CU_ASSERT_EQUAL(cb_cmd_ack(2, noby), 2);
    unsetenv("CITYBRAIN_API_TOKEN");
    CU_ASSERT_EQUAL(cb_cmd_ack(8, argv), 2); /* no token */
    free(r.body[0]);
    free(r.head[0]);
    pthread_mutex_destroy(&r.mu);
}

void cb_test_suite_webhook(void);
void cb_test_suite_webhook(void)
{
    CU_pSuite s = CU_add_suite("webhook", NULL, NULL);
    CU_add_test(s, "webhook: a receiver down for a while and a restart lose nothing, "
                   "repeat nothing, keep order per alert",
                test_outbox_survives_down_receiver_and_restart);
    CU_add_test(s, "webhook: citybrain ack posts to the API with the bearer token",
                test_ack_cli_posts_to_api);
}
