/* ingest/mqtt.c against a real mosquitto, on a small uv loop run by the test:
 * exactly-once hand-off at QoS 0 and 1, several filters, shared subscriptions,
 * back-pressure with a stalled loop, QoS 0 overflow, broker restarts, TLS,
 * passwords, MQTT 5, publishing, and a clean loop close every time. */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <time.h>
#include <uv.h>

#include "base/config.h"
#include "ingest/ingest.h"
#include "tests/support/harness.h"

#define MAXC 2

struct got {
    char *topic;
    char *payload;
    int qos;
};

struct rx {
    uv_loop_t loop;
    bool loop_open;
    struct cb_mqtt *m[MAXC];
    struct cb_config cfg[MAXC];
    int nclients;
    struct got *got;
    size_t n, cap;
    size_t per_client[MAXC];
    int stopped;
};

static struct rx *R;

struct who {
    struct rx *rx;
    int idx;
};
static struct who whos[MAXC];

static void on_msg(void *ctx, const struct cb_message *msg)
{
    struct who *w = ctx;
    struct rx *rx = w->rx;
    if (rx->n == rx->cap) {
        rx->cap = rx->cap ? rx->cap * 2 : 64;
        rx->got = realloc(rx->got, rx->cap * sizeof *rx->got);
    }
    struct got *g = &rx->got[rx->n++];
    g->topic = strdup(msg->topic);
    g->payload = strndup(msg->payload, msg->len);
    g->qos = msg->qos;
    rx->per_client[w->idx]++;
}

static void rx_init(struct rx *rx)
{
    memset(rx, 0, sizeof *rx);
    CU_ASSERT_EQUAL_FATAL(uv_loop_init(&rx->loop), 0);
    rx->loop_open = true;
    R = rx;
}

/* A config for a test client: broker url, filters (NULL-terminated), qos. */
static struct cb_config *rx_config(struct rx *rx, const char *url, const char *const *topics,
                                   int qos)
{
    int i = rx->nclients;
    struct cb_config *c = &rx->cfg[i];
    CU_ASSERT_EQUAL_FATAL(cb_config_defaults(c), 0);
    CU_ASSERT_EQUAL(cb_config_set(c, "mqtt.broker", url, 0, "t", NULL), 0);
    for (int k = 0; topics[k]; k++)
        CU_ASSERT_EQUAL(cb_config_set(c, "mqtt.topic", topics[k], k == 0, "t", NULL), 0);
    c->mqtt_qos = qos;
    free(c->mqtt_client_id);
    c->mqtt_client_id = strdup(cb_h_strf("cb-itest-%d-%d", (int)getpid(), i));
    c->mqtt_reconnect_min_ms = 100;
    c->mqtt_reconnect_max_ms = 400;
    c->mqtt_keepalive_ms = 5000;
    return c;
}

/* Creates and starts the next client from its config, with the persist hook
 * (NULL for none). */
static struct cb_mqtt *rx_start_persist(struct rx *rx, cb_persist_fn persist)
{
    int i = rx->nclients;
    char err[256] = "";
    whos[i].rx = rx;
    whos[i].idx = i;
    struct cb_mqtt *m = cb_mqtt_new(&rx->loop, &rx->cfg[i], on_msg, &whos[i], err, sizeof err);
    if (!m)
        fprintf(stderr, "cb_mqtt_new: %s\n", err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    rx->m[i] = m;
    rx->nclients++;
    if (persist)
        cb_mqtt_set_persist(m, persist, NULL);
    CU_ASSERT_EQUAL_FATAL(cb_mqtt_start(m), 0);
    return m;
}

static struct cb_mqtt *rx_start(struct rx *rx) { return rx_start_persist(rx, NULL); }

/* Runs the loop until pred holds or timeout_ms passes. Returns 1 when it held. */
static int run_until(struct rx *rx, int (*pred)(struct rx *), int timeout_ms)
{
    int64_t end = cb_h_now_ms() + timeout_ms;
    for (;;) {
        uv_run(&rx->loop, UV_RUN_NOWAIT);
        if (pred(rx))
            return 1;
        if (cb_h_now_ms() > end)
            return 0;
        usleep(2000);
    }
}

static size_t count_topic_payload(struct rx *rx, const char *topic, const char *payload)
{
    size_t k = 0;
    for (size_t i = 0; i < rx->n; i++)
        if (strcmp(rx->got[i].topic, topic) == 0 &&
            (!payload || strcmp(rx->got[i].payload, payload) == 0))
            k++;
    return k;
}

static size_t count_prefix(struct rx *rx, const char *prefix)
{
    size_t k = 0;
    for (size_t i = 0; i < rx->n; i++)
        if (strncmp(rx->got[i].topic, prefix, strlen(prefix)) == 0)
            k++;
    return k;
}

/* Publishes probes on topic until the loop has received one: the
 * subscription is then in place. */
static const char *probe_topic;
static int has_probe(struct rx *rx) { return count_topic_payload(rx, probe_topic, NULL) > 0; }

static int wait_subscribed(struct rx *rx, struct cb_h_pub *p, const char *topic)
{
    probe_topic = topic;
    for (int i = 0; i < 100; i++) {
        cb_h_pub_str(p, topic, "probe", 0);
        if (run_until(rx, has_probe, 100))
            return 1;
    }
    return 0;
}

static int all_stopped(struct rx *rx) { return rx->stopped == rx->nclients; }

static void on_stopped(void *ctx)
{
    struct rx *rx = ctx;
    rx->stopped++;
}

/* Stops and closes every client and closes the loop; asserts it closed cleanly. */
static void rx_finish(struct rx *rx)
{
    if (!rx || !rx->loop_open)
        return;
    for (int i = 0; i < rx->nclients; i++)
        cb_mqtt_stop(rx->m[i], on_stopped, rx);
    CU_ASSERT_TRUE(run_until(rx, all_stopped, 10000));
    for (int i = 0; i < rx->nclients; i++)
        cb_mqtt_close(rx->m[i]);
    uv_run(&rx->loop, UV_RUN_DEFAULT);
    CU_ASSERT_EQUAL(uv_loop_close(&rx->loop), 0);
    rx->loop_open = false;
    for (int i = 0; i < rx->nclients; i++)
        cb_config_free(&rx->cfg[i]);
    for (size_t i = 0; i < rx->n; i++) {
        free(rx->got[i].topic);
        free(rx->got[i].payload);
    }
    free(rx->got);
    rx->got = NULL;
    rx->n = rx->cap = 0;
    R = NULL;
}

static void teardown(void)
{
    rx_finish(R);
    cb_h_teardown();
}

static struct cb_mqtt_stats stats_of(struct cb_mqtt *m)
{
    struct cb_mqtt_stats s;
    cb_mqtt_get_stats(m, &s);
    return s;
}

/* ---- tests ------------------------------------------------------------------------ */

static int sentinel_seen(struct rx *rx) { return count_topic_payload(rx, "a/end", "end") > 0; }

static void exactly_once_with_version(int version)
{
    struct rx rx;
    rx_init(&rx);
    struct cb_h_broker *b = cb_h_broker_start(NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    const char *topics[] = {"a/#", "b/+/x", NULL};
    struct cb_config *c = rx_config(&rx, cb_h_broker_url(b), topics, 1);
    c->mqtt_version = version;
    struct cb_mqtt *m = rx_start(&rx);
    struct cb_h_mqtt_opts po = {.mqtt_version = version};
    struct cb_h_pub *p = cb_h_pub_connect(cb_h_broker_url(b), &po);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    CU_ASSERT_TRUE_FATAL(wait_subscribed(&rx, p, "a/probe"));
    CU_ASSERT_EQUAL(stats_of(m).state, CB_MQTT_CONNECTED);

    for (int i = 0; i < 50; i++) {
        char pl[32];
        snprintf(pl, sizeof pl, "q0-%d", i);
        CU_ASSERT_EQUAL(cb_h_pub_str(p, "a/zero", pl, 0), 0);
        snprintf(pl, sizeof pl, "q1-%d", i);
        CU_ASSERT_EQUAL(cb_h_pub_str(p, "a/one", pl, 1), 0);
    }
    CU_ASSERT_EQUAL(cb_h_pub_str(p, "b/k/x", "bx", 1), 0);
    CU_ASSERT_EQUAL(cb_h_pub_str(p, "b/k/y", "not-matched", 1), 0);
    CU_ASSERT_EQUAL(cb_h_pub_str(p, "c/z", "not-matched", 1), 0);
    CU_ASSERT_EQUAL(cb_h_pub_str(p, "a/end", "end", 1), 0);
    CU_ASSERT_TRUE_FATAL(run_until(&rx, sentinel_seen, 10000));

    for (int i = 0; i < 50; i++) {
        char pl[32];
        snprintf(pl, sizeof pl, "q0-%d", i);
        CU_ASSERT_EQUAL(count_topic_payload(&rx, "a/zero", pl), 1);
        snprintf(pl, sizeof pl, "q1-%d", i);
        CU_ASSERT_EQUAL(count_topic_payload(&rx, "a/one", pl), 1);
    }
    CU_ASSERT_EQUAL(count_topic_payload(&rx, "b/k/x", "bx"), 1);
    CU_ASSERT_EQUAL(count_prefix(&rx, "b/k/y"), 0);
    CU_ASSERT_EQUAL(count_prefix(&rx, "c/"), 0);
    /* QoS 1 deliveries are flagged as such on the loop. */
    for (size_t i = 0; i < rx.n; i++)
        if (strcmp(rx.got[i].topic, "a/one") == 0)
            CU_ASSERT_EQUAL(rx.got[i].qos, 1);
    struct cb_mqtt_stats s = stats_of(m);
    CU_ASSERT_EQUAL(s.received, rx.n);
    CU_ASSERT_EQUAL(s.dropped_qos0, 0);
    CU_ASSERT_EQUAL(s.connects, 1);
    CU_ASSERT_EQUAL(s.queue_depth, 0);

    /* Publishing from the loop reaches a subscriber. */
    struct cb_h_sub *sub = cb_h_sub_start(cb_h_broker_url(b), "out/#", 1, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(sub);
    CU_ASSERT_EQUAL(cb_mqtt_publish(m, "out/alert", "{\"state\":\"firing\"}", 18, 1, 0), 0);
    CU_ASSERT_TRUE(cb_h_sub_wait_count(sub, 1, 5000));
    struct cb_h_msg hm;
    if (cb_h_sub_get(sub, 0, &hm) == 0) {
        CU_ASSERT_STRING_EQUAL(hm.topic, "out/alert");
        CU_ASSERT_STRING_EQUAL(hm.payload, "{\"state\":\"firing\"}");
    }
    CU_ASSERT_EQUAL(stats_of(m).published, 1);
    rx_finish(&rx);
}

static void test_exactly_once_311(void) { exactly_once_with_version(4); }
static void test_exactly_once_5(void) { exactly_once_with_version(5); }

/* Bounds before copies: a topic over ingest.max_topic_length or a payload
 * over ingest.max_payload never reaches the hand-off queue or the persist
 * hook; each is counted by reason and the stream goes on. */
static int persisted;
static int count_persist(void *ctx, const char *topic, size_t topic_len, const void *payload,
                         size_t len, int64_t arrival_ms, uint64_t *pos)
{
    (void)ctx, (void)topic, (void)topic_len, (void)payload, (void)len, (void)arrival_ms;
    *pos = (uint64_t)++persisted;
    return 0;
}

static void test_oversize_refused_before_handoff(void)
{
    struct rx rx;
    rx_init(&rx);
    struct cb_h_broker *b = cb_h_broker_start(NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    const char *topics[] = {"a/#", NULL};
    struct cb_config *c = rx_config(&rx, cb_h_broker_url(b), topics, 1);
    c->ingest_max_topic_length = 16;
    c->ingest_max_payload = 32;
    persisted = 0;
    struct cb_mqtt *m = rx_start_persist(&rx, count_persist);
    struct cb_h_pub *p = cb_h_pub_connect(cb_h_broker_url(b), NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    CU_ASSERT_TRUE_FATAL(wait_subscribed(&rx, p, "a/probe"));
    int persisted_before = persisted;
    CU_ASSERT_EQUAL(cb_h_pub_str(p, "a/this/topic/is/far/too/long", "1", 1), 0);
    CU_ASSERT_EQUAL(cb_h_pub_str(p, "a/big", "0123456789012345678901234567890123456789", 1),
                    0);
    CU_ASSERT_EQUAL(cb_h_pub_str(p, "a/just/sixteen/b", "01234567890123456789012345678901",
                                 1),
                    0); /* both exactly at their bound: taken */
    CU_ASSERT_EQUAL(cb_h_pub_str(p, "a/end", "end", 1), 0);
    CU_ASSERT_TRUE_FATAL(run_until(&rx, sentinel_seen, 10000));
    CU_ASSERT_EQUAL(count_prefix(&rx, "a/this"), 0);
    CU_ASSERT_EQUAL(count_prefix(&rx, "a/big"), 0);
    CU_ASSERT_EQUAL(count_prefix(&rx, "a/just/sixteen/b"), 1);
    CU_ASSERT_EQUAL(persisted - persisted_before, 2); /* the one at its bounds, and a/end */
    struct cb_mqtt_stats s = stats_of(m);
    CU_ASSERT_EQUAL(s.refused_topic, 1);
    CU_ASSERT_EQUAL(s.refused_payload, 1);
    rx_finish(&rx);
}

/* A journal that is full while `journal_full` is set: the hook fails with
 * ENOSPC, as cb_journal_append does on a full disk. */
static volatile int journal_full;
static int journal_tries;
static int full_persist(void *ctx, const char *topic, size_t topic_len, const void *payload,
                        size_t len, int64_t arrival_ms, uint64_t *pos)
{
    (void)ctx, (void)topic, (void)topic_len, (void)payload, (void)len, (void)arrival_ms;
    __atomic_add_fetch(&journal_tries, 1, __ATOMIC_RELAXED);
    if (__atomic_load_n(&journal_full, __ATOMIC_RELAXED)) {
        errno = ENOSPC;
        return -1;
    }
    *pos = 1;
    return 0;
}

struct journal_wait {
    struct cb_mqtt *m;
};
static int journal_waiting(void *ctx)
{
    struct journal_wait *w = ctx;
    struct cb_mqtt_stats s;
    cb_mqtt_get_stats(w->m, &s);
    return s.journal_errno == ENOSPC && s.journal_waits == 1;
}
static int twenty_in(struct rx *rx) { return count_prefix(rx, "a/q1") >= 20; }

/* Nothing acknowledged lives only in memory: while the journal cannot take a
 * QoS 1 message, the Paho thread waits with it (nothing reaches the loop,
 * the stats say why, the hook is retried with a back-off rather than in a
 * spin); once the journal takes it again every message arrives, once. */
static void test_journal_full_waits_unacknowledged(void)
{
    struct rx rx;
    rx_init(&rx);
    struct cb_h_broker *b = cb_h_broker_start(NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    const char *topics[] = {"a/#", NULL};
    rx_config(&rx, cb_h_broker_url(b), topics, 1);
    journal_full = 0;
    struct cb_mqtt *m = rx_start_persist(&rx, full_persist);
    struct cb_h_pub *p = cb_h_pub_connect(cb_h_broker_url(b), NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    CU_ASSERT_TRUE_FATAL(wait_subscribed(&rx, p, "a/probe"));
    size_t before = rx.n;

    __atomic_store_n(&journal_full, 1, __ATOMIC_RELAXED);
    for (int i = 0; i < 20; i++)
        CU_ASSERT_EQUAL(cb_h_pub_str(p, "a/q1", cb_h_strf("%d", i), 1), 0);
    struct journal_wait w = {m};
    CU_ASSERT_TRUE_FATAL(cb_h_wait_until(journal_waiting, &w, 10000));
    int tries_at_wait = __atomic_load_n(&journal_tries, __ATOMIC_RELAXED);
    uv_run(&rx.loop, UV_RUN_NOWAIT);
    CU_ASSERT_EQUAL(rx.n, before); /* Paho holds the first one: nothing was handed over */
    struct cb_mqtt_stats st = stats_of(m);
    CU_ASSERT_EQUAL(st.queue_depth, 0);
    CU_ASSERT_STRING_EQUAL(cb_mqtt_journal_problem(st.journal_errno), "disk full");

    __atomic_store_n(&journal_full, 0, __ATOMIC_RELAXED);
    CU_ASSERT_TRUE(run_until(&rx, twenty_in, 10000));
    for (int i = 0; i < 20; i++)
        CU_ASSERT_EQUAL(count_topic_payload(&rx, "a/q1", cb_h_strf("%d", i)), 1);
    st = stats_of(m);
    CU_ASSERT_EQUAL(st.journal_errno, 0);
    CU_ASSERT_EQUAL(st.journal_waits, 1);
    /* a back-off, not a spin: the retries of the wait were few */
    int retries = __atomic_load_n(&journal_tries, __ATOMIC_RELAXED) - tries_at_wait - 20;
    CU_ASSERT(retries < 50);
    rx_finish(&rx);
}

static int shared_done(struct rx *rx) { return count_prefix(rx, "s/") >= 40; }
static int both_probed(struct rx *rx)
{
    return count_prefix(rx, "probe/0") > 0 && count_prefix(rx, "probe/1") > 0;
}

static void test_shared_subscription(void)
{
    struct rx rx;
    rx_init(&rx);
    struct cb_h_broker *b = cb_h_broker_start(NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    const char *t0[] = {"$share/workers/s/#", "probe/0", NULL};
    const char *t1[] = {"$share/workers/s/#", "probe/1", NULL};
    rx_config(&rx, cb_h_broker_url(b), t0, 1);
    rx_start(&rx);
    rx_config(&rx, cb_h_broker_url(b), t1, 1);
    rx_start(&rx);
    struct cb_h_pub *p = cb_h_pub_connect(cb_h_broker_url(b), NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    int ok = 0;
    for (int i = 0; i < 100 && !ok; i++) {
        cb_h_pub_str(p, "probe/0", "probe", 0);
        cb_h_pub_str(p, "probe/1", "probe", 0);
        ok = run_until(&rx, both_probed, 100);
    }
    CU_ASSERT_TRUE_FATAL(ok);
    size_t before0 = rx.per_client[0], before1 = rx.per_client[1];
    for (int i = 0; i < 40; i++) {
        char pl[16];
        snprintf(pl, sizeof pl, "%d", i);
        CU_ASSERT_EQUAL(cb_h_pub_str(p, "s/x", pl, 1), 0);
    }
    CU_ASSERT_TRUE(run_until(&rx, shared_done, 10000));
    for (int i = 0; i < 40; i++) {
        char pl[16];
        snprintf(pl, sizeof pl, "%d", i);
        CU_ASSERT_EQUAL(count_topic_payload(&rx, "s/x", pl), 1);
    }
    /* The group shares the load: each member got a part. */
    CU_ASSERT_TRUE(rx.per_client[0] > before0);
    CU_ASSERT_TRUE(rx.per_client[1] > before1);
    CU_ASSERT_EQUAL(count_prefix(&rx, "s/"), 40);
    rx_finish(&rx);
}

struct depth_wait {
    struct cb_mqtt *m;
    size_t depth;
};
static int depth_reached(void *ctx)
{
    struct depth_wait *w = ctx;
    struct cb_mqtt_stats s;
    cb_mqtt_get_stats(w->m, &s);
    return s.queue_depth >= w->depth && s.deferred_qos1 >= 1;
}

static int all_100(struct rx *rx) { return count_prefix(rx, "load/") >= 100; }

static void test_qos1_stalled_loop_loses_nothing(void)
{
    struct rx rx;
    rx_init(&rx);
    struct cb_h_broker *b = cb_h_broker_start(NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    const char *topics[] = {"load/#", "probe", NULL};
    struct cb_config *c = rx_config(&rx, cb_h_broker_url(b), topics, 1);
    c->ingest_queue_max_messages = 4; /* below the config minimum, on purpose */
    struct cb_mqtt *m = rx_start(&rx);
    struct cb_h_pub *p = cb_h_pub_connect(cb_h_broker_url(b), NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    CU_ASSERT_TRUE_FATAL(wait_subscribed(&rx, p, "probe"));

    /* The loop does not run while 100 QoS 1 messages are published: the
     * queue fills to its bound and the Paho thread waits. */
    for (int i = 0; i < 100; i++) {
        char pl[16];
        snprintf(pl, sizeof pl, "%d", i);
        CU_ASSERT_EQUAL(cb_h_pub_str(p, "load/x", pl, 1), 0);
    }
    struct depth_wait w = {m, 4};
    CU_ASSERT_TRUE(cb_h_wait_until(depth_reached, &w, 5000));
    struct cb_mqtt_stats s = stats_of(m);
    CU_ASSERT_EQUAL(s.queue_depth, 4);
    CU_ASSERT_EQUAL(s.dropped_qos0, 0);
    CU_ASSERT_TRUE(s.deferred_qos1 >= 1);

    /* The loop resumes: everything arrives, once, in order. */
    CU_ASSERT_TRUE(run_until(&rx, all_100, 15000));
    size_t k = 0;
    for (size_t i = 0; i < rx.n; i++) {
        if (strcmp(rx.got[i].topic, "load/x") != 0)
            continue;
        char pl[16];
        snprintf(pl, sizeof pl, "%zu", k);
        CU_ASSERT_STRING_EQUAL(rx.got[i].payload, pl);
        k++;
    }
    CU_ASSERT_EQUAL(k, 100);
    CU_ASSERT_EQUAL(stats_of(m).queue_depth, 0);
    rx_finish(&rx);
}

/* Above ingest.coalesce_above msg/s the loop collects the queue every
 * millisecond instead of being woken per message, and goes back once the
 * stream calms: nothing is lost or repeated either way, and a slow stream
 * never switches. */
static size_t co_expect;
static struct cb_mqtt *co_m;
static int co_drained(struct rx *rx) { return count_prefix(rx, "burst/") >= co_expect; }
static int co_calm(struct rx *rx)
{
    (void)rx;
    uint64_t n = stats_of(co_m).coalesce_switches;
    return n > 0 && n % 2 == 0;
}

static void test_coalescing(void)
{
    struct rx rx;
    rx_init(&rx);
    struct cb_h_broker *b = cb_h_broker_start(NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    const char *topics[] = {"burst/#", "probe", NULL};
    struct cb_config *c = rx_config(&rx, cb_h_broker_url(b), topics, 0);
    c->ingest_coalesce_above = 1000;
    struct cb_mqtt *m = co_m = rx_start(&rx);
    struct cb_h_pub *p = cb_h_pub_connect(cb_h_broker_url(b), NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    CU_ASSERT_TRUE_FATAL(wait_subscribed(&rx, p, "probe"));
    for (size_t i = 0; i < 10; i++) { /* about 30 a second */
        CU_ASSERT_EQUAL(cb_h_pub_str(p, "burst/slow", "s", 0), 0);
        co_expect = i + 1;
        CU_ASSERT_TRUE(run_until(&rx, co_drained, 2000));
        struct timespec ts = {0, 30000000};
        nanosleep(&ts, NULL);
    }
    CU_ASSERT_EQUAL(stats_of(m).coalesce_switches, 0);
    for (int i = 0; i < 3000; i++) {
        char pl[16];
        snprintf(pl, sizeof pl, "%d", i);
        CU_ASSERT_EQUAL(cb_h_pub_str(p, "burst/fast", pl, 0), 0);
    }
    co_expect = 10 + 3000;
    CU_ASSERT_TRUE(run_until(&rx, co_drained, 10000));
    CU_ASSERT(stats_of(m).coalesce_switches >= 1);
    CU_ASSERT_TRUE(run_until(&rx, co_calm, 2000)); /* back to wake-ups */
    CU_ASSERT_EQUAL(cb_h_pub_str(p, "burst/after", "a", 0), 0);
    co_expect = 10 + 3000 + 1;
    CU_ASSERT_TRUE(run_until(&rx, co_drained, 2000));
    CU_ASSERT_EQUAL(count_prefix(&rx, "burst/fast"), 3000);
    /* in order, none twice */
    int next = 0, ordered = 1;
    for (size_t i = 0; i < rx.n; i++)
        if (strcmp(rx.got[i].topic, "burst/fast") == 0)
            ordered &= atoi(rx.got[i].payload) == next++;
    CU_ASSERT_TRUE(ordered);
    struct cb_mqtt_stats s = stats_of(m);
    CU_ASSERT_EQUAL(s.dropped_qos0, 0);
    CU_ASSERT_EQUAL(s.received, rx.n);
    rx_finish(&rx);
}

struct q0_wait {
    struct cb_mqtt *m;
    uint64_t total;
};
static int q0_accounted(void *ctx)
{
    struct q0_wait *w = ctx;
    struct cb_mqtt_stats s;
    cb_mqtt_get_stats(w->m, &s);
    return s.dropped_qos0 + s.queue_depth >= w->total;
}
static size_t q0_expect;
static int q0_drained(struct rx *rx) { return count_prefix(rx, "flood/") >= q0_expect; }

static void test_qos0_overflow_is_counted(void)
{
    struct rx rx;
    rx_init(&rx);
    struct cb_h_broker *b = cb_h_broker_start(NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    const char *topics[] = {"flood/#", "probe", NULL};
    struct cb_config *c = rx_config(&rx, cb_h_broker_url(b), topics, 0);
    c->ingest_queue_max_messages = 8;
    struct cb_mqtt *m = rx_start(&rx);
    struct cb_h_pub *p = cb_h_pub_connect(cb_h_broker_url(b), NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    CU_ASSERT_TRUE_FATAL(wait_subscribed(&rx, p, "probe"));
    for (int i = 0; i < 200; i++)
        CU_ASSERT_EQUAL(cb_h_pub_str(p, "flood/x", "v", 0), 0);
    struct q0_wait w = {m, 200};
    CU_ASSERT_TRUE(cb_h_wait_until(q0_accounted, &w, 5000));
    struct cb_mqtt_stats s = stats_of(m);
    CU_ASSERT_EQUAL(s.queue_depth, 8);
    CU_ASSERT_EQUAL(s.dropped_qos0, 192);
    CU_ASSERT_EQUAL(s.deferred_qos1, 0);
    q0_expect = 8;
    CU_ASSERT_TRUE(run_until(&rx, q0_drained, 5000));
    CU_ASSERT_EQUAL(count_prefix(&rx, "flood/"), 8);
    rx_finish(&rx);
}

static int restart_all(struct rx *rx) { return count_prefix(rx, "r/") >= 20; }
static int got_20(struct rx *rx) { return count_topic_payload(rx, "r/x", "20") > 0; }
static int first_ten(struct rx *rx) { return count_prefix(rx, "r/") >= 10; }

static void test_broker_restart_is_survived(void)
{
    struct rx rx;
    rx_init(&rx);
    struct cb_h_broker *b = cb_h_broker_start(NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    const char *topics[] = {"r/#", "probe", NULL};
    rx_config(&rx, cb_h_broker_url(b), topics, 1);
    struct cb_mqtt *m = rx_start(&rx);
    struct cb_h_pub *p = cb_h_pub_connect(cb_h_broker_url(b), NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    CU_ASSERT_TRUE_FATAL(wait_subscribed(&rx, p, "probe"));
    for (int i = 0; i < 10; i++) {
        char pl[16];
        snprintf(pl, sizeof pl, "%d", i);
        CU_ASSERT_EQUAL(cb_h_pub_str(p, "r/x", pl, 1), 0);
    }
    CU_ASSERT_TRUE_FATAL(run_until(&rx, first_ten, 5000));
    cb_h_pub_disconnect(p);

    /* The broker goes away and comes back; the session (with our
     * subscriptions) is in its persistence file. Messages published before
     * we are back are queued for us. */
    CU_ASSERT_EQUAL_FATAL(cb_h_broker_restart(b), 0);
    struct cb_h_pub *p2 = cb_h_pub_connect(cb_h_broker_url(b), NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p2);
    for (int i = 10; i < 20; i++) {
        char pl[16];
        snprintf(pl, sizeof pl, "%d", i);
        CU_ASSERT_EQUAL(cb_h_pub_str(p2, "r/x", pl, 1), 0);
    }
    CU_ASSERT_TRUE(run_until(&rx, restart_all, 15000));
    for (int i = 0; i < 20; i++) {
        char pl[16];
        snprintf(pl, sizeof pl, "%d", i);
        CU_ASSERT_EQUAL(count_topic_payload(&rx, "r/x", pl), 1);
    }
    struct cb_mqtt_stats s = stats_of(m);
    CU_ASSERT_TRUE(s.connection_lost >= 1);
    CU_ASSERT_TRUE(s.connects >= 2);
    CU_ASSERT_EQUAL(s.state, CB_MQTT_CONNECTED);

    /* And a second restart, this time messages flow after reconnecting. */
    CU_ASSERT_EQUAL_FATAL(cb_h_broker_restart(b), 0);
    struct cb_h_pub *p3 = cb_h_pub_connect(cb_h_broker_url(b), NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p3);
    CU_ASSERT_TRUE(wait_subscribed(&rx, p3, "probe"));
    CU_ASSERT_EQUAL(cb_h_pub_str(p3, "r/x", "20", 1), 0);
    CU_ASSERT_TRUE(run_until(&rx, got_20, 5000));
    CU_ASSERT_EQUAL(count_topic_payload(&rx, "r/x", "20"), 1);
    rx_finish(&rx);
}

static void test_tls_with_ca_file(void)
{
    CU_ASSERT_EQUAL_FATAL(cb_h_make_test_certs(), 0);
    int tls_port = cb_h_free_port();
    const char *extra = cb_h_tls_listener_conf(tls_port);
    struct cb_h_broker *b = cb_h_broker_start(extra);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    CU_ASSERT_EQUAL_FATAL(cb_h_wait_port(tls_port, 5000), 0);

    struct rx rx;
    rx_init(&rx);
    const char *topics[] = {"tls/#", NULL};
    struct cb_config *c = rx_config(&rx, cb_h_strf("ssl://127.0.0.1:%d", tls_port), topics, 1);
    free(c->mqtt_ca_file);
    c->mqtt_ca_file = strdup(cb_h_pathf("ca.crt"));
    struct cb_mqtt *m = rx_start(&rx);
    /* A second client trusting another CA must not connect. */
    struct cb_config *c2 = rx_config(&rx, cb_h_strf("ssl://127.0.0.1:%d", tls_port), topics, 1);
    free(c2->mqtt_ca_file);
    c2->mqtt_ca_file = strdup(cb_h_pathf("other.crt"));
    struct cb_mqtt *m2 = rx_start(&rx);

    struct cb_h_pub *p = cb_h_pub_connect(cb_h_broker_url(b), NULL); /* plain listener */
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    CU_ASSERT_TRUE(wait_subscribed(&rx, p, "tls/probe"));
    CU_ASSERT_EQUAL(stats_of(m).state, CB_MQTT_CONNECTED);
    CU_ASSERT_EQUAL(stats_of(m2).connects, 0);
    CU_ASSERT_EQUAL(rx.per_client[1], 0);
    rx_finish(&rx);
}

static void test_username_password(void)
{
    const char *pw = cb_h_pathf("passwd");
    CU_ASSERT_EQUAL_FATAL(cb_h_sh("mosquitto_passwd -c -b '%s' sensor s3cret", pw), 0);
    struct cb_h_broker *b =
        cb_h_broker_start_opts(cb_h_strf("password_file %s\n", pw), /*anonymous=*/0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    struct rx rx;
    rx_init(&rx);
    const char *topics[] = {"auth/#", NULL};
    struct cb_config *c = rx_config(&rx, cb_h_broker_url(b), topics, 1);
    free(c->mqtt_username);
    free(c->mqtt_password);
    c->mqtt_username = strdup("sensor");
    c->mqtt_password = strdup("s3cret");
    struct cb_mqtt *good = rx_start(&rx);
    struct cb_config *c2 = rx_config(&rx, cb_h_broker_url(b), topics, 1);
    free(c2->mqtt_username);
    free(c2->mqtt_password);
    c2->mqtt_username = strdup("sensor");
    c2->mqtt_password = strdup("wrong");
    struct cb_mqtt *bad = rx_start(&rx);

    struct cb_h_mqtt_opts po = {.username = "sensor", .password = "s3cret"};
    struct cb_h_pub *p = cb_h_pub_connect(cb_h_broker_url(b), &po);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    CU_ASSERT_TRUE(wait_subscribed(&rx, p, "auth/probe"));
    CU_ASSERT_EQUAL(stats_of(good).state, CB_MQTT_CONNECTED);
    CU_ASSERT_EQUAL(stats_of(bad).connects, 0);
    CU_ASSERT_EQUAL(rx.per_client[1], 0);
    /* Anonymous publishers are refused by this broker. */
    CU_ASSERT_PTR_NULL(cb_h_pub_connect(cb_h_broker_url(b), NULL));
    rx_finish(&rx);
}

static void test_stop_without_start(void)
{
    struct rx rx;
    rx_init(&rx);
    const char *topics[] = {"x/#", NULL};
    rx_config(&rx, "tcp://127.0.0.1:1", topics, 1);
    char err[128];
    whos[0].rx = &rx;
    whos[0].idx = 0;
    rx.m[0] = cb_mqtt_new(&rx.loop, &rx.cfg[0], on_msg, &whos[0], err, sizeof err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(rx.m[0]);
    rx.nclients = 1;
    rx_finish(&rx); /* stop → done on the loop → close → loop closes */
}

void cb_test_suite_mqtt(void);
void cb_test_suite_mqtt(void)
{
    CU_pSuite s = CU_add_suite_with_setup_and_teardown("mqtt", NULL, NULL, cb_h_setup, teardown);
    CU_add_test(s, "mqtt: QoS 0 and 1 arrive on the loop exactly once, several filters (3.1.1)",
                test_exactly_once_311);
    CU_add_test(s, "mqtt: QoS 0 and 1 arrive on the loop exactly once, several filters (MQTT 5)",
                test_exactly_once_5);
    CU_add_test(s, "mqtt: topics and payloads over their bounds are refused before the hand-off "
                   "and the journal, and counted",
                test_oversize_refused_before_handoff);
    CU_add_test(s, "mqtt: while the journal cannot take a QoS 1 message, Paho's thread waits "
                   "with it unacknowledged; every message arrives once it can",
                test_journal_full_waits_unacknowledged);
    CU_add_test(s, "mqtt: a shared subscription splits the messages between its members",
                test_shared_subscription);
    CU_add_test(s, "mqtt: QoS 1 with a stalled loop and a small queue loses nothing",
                test_qos1_stalled_loop_loses_nothing);
    CU_add_test(s, "mqtt: QoS 0 overflow is dropped and counted", test_qos0_overflow_is_counted);
    CU_add_test(s, "mqtt: a burst switches the loop to 1 ms collection and back, nothing lost",
                test_coalescing);
    CU_add_test(s, "mqtt: a broker restart is survived (reconnect, resubscribe, queued messages)",
                test_broker_restart_is_survived);
    CU_add_test(s, "mqtt: TLS with a CA file; a client trusting another CA is refused",
                test_tls_with_ca_file);
    CU_add_test(s, "mqtt: username and password; a wrong password is refused",
                test_username_password);
    CU_add_test(s, "mqtt: stop before start calls done and closes cleanly", test_stop_without_start);
}
