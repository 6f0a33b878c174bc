/* Crash safety of the message path: `citybrain run` killed with SIGKILL at
 * random moments of a QoS 1 stream, restarted each time, stores every
 * acknowledged message exactly once.
 *
 * The publisher sends each message at QoS 1 and waits for the broker's
 * PUBACK; citybrain has a persistent session (fixed client id, clean session
 * off), so the broker keeps what arrives while citybrain is down and
 * redelivers what citybrain received but did not acknowledge. Each message
 * carries a distinct `ts` on one series, and its value is its index, so the
 * rows tell exactly which message they came from. */
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tests/support/daemon_itest.h"

void cb_test_suite_crash(void);

#define N_MSGS 3000
#define N_KILLS 6

/* Neither sanitizer said anything in a process's stderr. */
static int sanitizers_quiet(struct cb_h_proc *p)
{
    const char *e = cb_h_proc_stderr(p);
    if (strstr(e, "AddressSanitizer") || strstr(e, "runtime error:") ||
        strstr(e, "LeakSanitizer")) {
        fprintf(stderr, "\nsanitizer report in %s:\n%s\n", cb_h_proc_stderr_path(p), e);
        return 0;
    }
    return 1;
}

static int cmp_int(const void *a, const void *b)
{
    return *(const int *)a - *(const int *)b;
}

static void test_kill9_during_qos1_stream_stores_each_message_once(void)
{
    /* Room for everything published while citybrain is down. */
    struct cb_h_broker *b = cb_h_broker_start("max_queued_messages 100000\n");
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    const char *db = cb_h_pathf("crash.db");
    const char *rules = cb_h_pathf("crash.rules");
    const char *rule_text = "rule river_high {\n"
                            "  match \"city/{district}/river/{sensor}\"\n"
                            "  when  avg(level, 1m) > 1000000\n"
                            "}\n";
    CU_ASSERT_EQUAL_FATAL(cb_h_write_file(rules, rule_text, strlen(rule_text)), 0);
    const char *args[] = {"run", "--broker", cb_h_broker_url(b), "--db", db, "--rules", rules,
                          "--client-id", "cb-itest-crash", "--qos", "1", "--http", "off",
                          "--set", "storage.commit_interval=200ms", "--set",
                          "mqtt.reconnect_min=100ms", "--set", "mqtt.reconnect_max=500ms", NULL};

    /* The first start creates the persistent session; from then on the
     * broker keeps our messages whatever state citybrain is in. */
    struct cb_h_proc *procs[N_KILLS + 1];
    size_t nprocs = 0;
    struct cb_h_proc *cb = cbd_start(args, NULL, 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(cb);
    procs[nprocs++] = cb;

    unsigned seed = (unsigned)time(NULL) ^ (unsigned)getpid();
    const char *env_seed = getenv("CB_CRASH_SEED");
    if (env_seed)
        seed = (unsigned)strtoul(env_seed, NULL, 10);
    fprintf(stderr, " [seed %u] ", seed);
    srand(seed);
    /* Kill points spread over the stream: one in each sixth, at random. */
    int kill_at[N_KILLS];
    for (int k = 0; k < N_KILLS; k++)
        kill_at[k] = k * (N_MSGS / N_KILLS) + 1 + rand() % (N_MSGS / N_KILLS - 1);
    qsort(kill_at, N_KILLS, sizeof kill_at[0], cmp_int);

    struct cb_h_mqtt_opts po = {.client_id = "cb-itest-crash-pub"};
    struct cb_h_pub *pub = cb_h_pub_connect(cb_h_broker_url(b), &po);
    CU_ASSERT_PTR_NOT_NULL_FATAL(pub);
    const int64_t t0 = cb_h_now_ms() - 2 * N_MSGS; /* distinct, never ahead of now */
    int next_kill = 0, kills = 0, waited_ready = 0;
    for (int i = 0; i < N_MSGS; i++) {
        const char *payload = cb_h_strf("{\"ts\":%lld,\"level\":%d}", (long long)(t0 + i), i);
        int rc = cb_h_pub_str(pub, "city/d01/river/s01", payload, 1);
        CU_ASSERT_EQUAL_FATAL(rc, 0);
        /* Paced (~4 s in all) so that each run commits a few times between
         * kills, and kills land before, during and after commits. */
        usleep(1000);
        if (next_kill < N_KILLS && i == kill_at[next_kill]) {
            next_kill++;
            /* A random moment: anywhere from mid-delivery to mid-commit. */
            usleep((useconds_t)(rand() % 40000));
            cb_h_proc_kill(cb);
            kills++;
            CU_ASSERT_FALSE(cb_h_proc_running(cb));
            cb = cb_h_citybrain(args, NULL);
            CU_ASSERT_PTR_NOT_NULL_FATAL(cb);
            procs[nprocs++] = cb;
            /* Every other time, let it get back to streaming before the
             * next kill; otherwise the next kill may land in start-up
             * (journal replay, window rebuild), which is a moment too. */
            if (kills % 2 == 0 && cbd_wait_log(cb, "subscribed to", CBD_TIMEOUT_MS))
                waited_ready++;
        }
    }
    CU_ASSERT_EQUAL(kills, N_KILLS);
    cb_h_pub_disconnect(pub);

    int all = cbd_wait_rows(db, N_MSGS, CBD_TIMEOUT_MS * 2);
    CU_ASSERT_TRUE(all);
    /* A clean stop after the storm: exit 0, nothing more, nothing less. */
    CU_ASSERT_EQUAL(cbd_stop(cb), 0);

    int64_t n = -1, distinct = -1, lo = -1, hi = -1, right = -1, series = -1;
    CU_ASSERT_EQUAL(cb_h_sql_int(db, &n, "SELECT count(*) FROM samples"), 0);
    CU_ASSERT_EQUAL(cb_h_sql_int(db, &distinct, "SELECT count(DISTINCT ts) FROM samples"), 0);
    CU_ASSERT_EQUAL(cb_h_sql_int(db, &lo, "SELECT min(ts) FROM samples"), 0);
    CU_ASSERT_EQUAL(cb_h_sql_int(db, &hi, "SELECT max(ts) FROM samples"), 0);
    CU_ASSERT_EQUAL(cb_h_sql_int(db, &right, "SELECT count(*) FROM samples WHERE value = ts - %lld",
                                 (long long)t0), 0);
    CU_ASSERT_EQUAL(cb_h_sql_int(db, &series, "SELECT count(*) FROM series"), 0);
    fprintf(stderr, " [%lld rows, %d kills, %d waited for, %zu runs] ", (long long)n, kills,
            waited_ready, nprocs);
    CU_ASSERT_EQUAL(n, N_MSGS);          /* exactly once: no loss, no duplicate */
    CU_ASSERT_EQUAL(distinct, N_MSGS);   /* no two rows for one message */
    CU_ASSERT_EQUAL(lo, t0);             /* no gap at either end ... */
    CU_ASSERT_EQUAL(hi, t0 + N_MSGS - 1);
    CU_ASSERT_EQUAL(right, N_MSGS);      /* ... and each row holds its own message */
    CU_ASSERT_EQUAL(series, 1);
    /* The rollups, derived across the kills (a kill may land in a pass),
     * hold every message once and agree with the rows bucket by bucket. */
    int64_t r1m = -1, r1h = -1, bad = -1;
    CU_ASSERT_EQUAL(cb_h_sql_int(db, &r1m, "SELECT sum(count) FROM rollup_1m"), 0);
    CU_ASSERT_EQUAL(cb_h_sql_int(db, &r1h, "SELECT sum(count) FROM rollup_1h"), 0);
    CU_ASSERT_EQUAL(cb_h_sql_int(db, &bad,
                                 "SELECT count(*) FROM rollup_1m r WHERE count != (SELECT "
                                 "count(*) FROM samples s WHERE s.series_id = r.series_id AND "
                                 "s.ts >= r.bucket AND s.ts < r.bucket + 60000) OR sum != "
                                 "(SELECT sum(value) FROM samples s WHERE s.series_id = "
                                 "r.series_id AND s.ts >= r.bucket AND s.ts < r.bucket + 60000)"),
                    0);
    CU_ASSERT_EQUAL(r1m, N_MSGS);
    CU_ASSERT_EQUAL(r1h, N_MSGS);
    CU_ASSERT_EQUAL(bad, 0);
    if (n != N_MSGS) {
        /* Say which messages are missing, for the post-mortem. */
        for (int i = 0, shown = 0; i < N_MSGS && shown < 10; i++) {
            int64_t c = 0;
            cb_h_sql_int(db, &c, "SELECT count(*) FROM samples WHERE ts = %lld",
                         (long long)(t0 + i));
            if (c != 1) {
                fprintf(stderr, "\n  message %d stored %lld time(s)", i, (long long)c);
                shown++;
            }
        }
    }
    for (size_t i = 0; i < nprocs; i++)
        CU_ASSERT_TRUE(sanitizers_quiet(procs[i]));
}

/* ---- a burst of arrival-stamped samples across kill -9 and replays ------------------ */

static int64_t burst_rows(const char *db)
{
    return cb_h_sql_count(db, "samples", NULL);
}

/* Bare numbers are stamped on arrival, each in the next free millisecond of
 * its topic, before the journal: the journal keeps the stamp, so a replay
 * gives every message the time it had. A burst of 40 QoS 1 bare numbers
 * (queued by the broker while citybrain is down, delivered at once) is
 * journaled and citybrain is killed before a commit; the next run replays
 * them into 40 rows. Then the committed position is set back below them, as
 * when rows were dropped on a full pending queue (the position is held below
 * the first dropped message, and the records after it, committed or not, are
 * replayed): the committed records come back with the same stamps and are
 * recognised as duplicates, not stored a second time. */
static void test_kill9_after_burst_replays_same_stamps(void)
{
    struct cb_h_broker *b = cb_h_broker_start(NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    const char *db = cb_h_pathf("burst.db");
    int port = cb_h_free_port();
    const char *http = cb_h_strf("127.0.0.1:%d", port);
    /* one commit a minute at most: until the kill, the burst is only in the journal */
    const char *slow[] = {"run", "--broker", cb_h_broker_url(b), "--db", db,
                          "--client-id", "cb-itest-burst", "--qos", "1", "--http", http,
                          "--set", "storage.commit_interval=60s", "--set", "rules.allow_none=true",
                          NULL};
    const char *quick[] = {"run", "--broker", cb_h_broker_url(b), "--db", db,
                           "--client-id", "cb-itest-burst", "--qos", "1", "--http", http,
                           "--set", "storage.commit_interval=20ms", "--set",
                           "rules.allow_none=true", NULL};
    struct cb_h_proc *cb = cbd_start(slow, NULL, port); /* makes the persistent session */
    CU_ASSERT_PTR_NOT_NULL_FATAL(cb);
    CU_ASSERT_EQUAL_FATAL(cbd_stop(cb), 0);
    struct cb_h_pub *pub = cb_h_pub_connect(cb_h_broker_url(b), NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(pub);
    for (int i = 0; i < 40; i++)
        CU_ASSERT_EQUAL(cb_h_pub_str(pub, "city/d01/noise/n1", cb_h_strf("%d", i), 1), 0);

    cb = cbd_start(slow, NULL, port);
    CU_ASSERT_PTR_NOT_NULL_FATAL(cb);
    CU_ASSERT_TRUE(cbd_wait_metric(port, "citybrain_mqtt_received_total", 40, CBD_TIMEOUT_MS));
    cb_h_proc_kill(cb);
    CU_ASSERT_EQUAL(burst_rows(db), 0); /* nothing committed: all in the journal */

    cb = cbd_start(quick, NULL, port);
    CU_ASSERT_PTR_NOT_NULL_FATAL(cb);
    CU_ASSERT_TRUE(cbd_wait_log(cb, "recovered 40 sample(s) from the ingest journal", 1000));
    CU_ASSERT_TRUE(cbd_wait_rows(db, 40, CBD_TIMEOUT_MS));
    CU_ASSERT_EQUAL(cbd_stop(cb), 0);
    CU_ASSERT_EQUAL(burst_rows(db), 40);
    int64_t values = -1, span = -1;
    CU_ASSERT_EQUAL(cb_h_sql_int(db, &values, "SELECT count(DISTINCT value) FROM samples"), 0);
    CU_ASSERT_EQUAL(cb_h_sql_int(db, &span, "SELECT max(ts) - min(ts) FROM samples"), 0);
    CU_ASSERT_EQUAL(values, 40);
    CU_ASSERT(span >= 39); /* at least a millisecond apart */

    /* the committed position set back below the burst */
    sqlite3 *rw = NULL;
    CU_ASSERT_EQUAL_FATAL(sqlite3_open(db, &rw), SQLITE_OK);
    CU_ASSERT_EQUAL(sqlite3_exec(rw, "UPDATE ingest_state SET journal_pos = 0", NULL, NULL, NULL),
                    SQLITE_OK);
    sqlite3_close(rw);
    cb = cbd_start(quick, NULL, port);
    CU_ASSERT_PTR_NOT_NULL_FATAL(cb);
    CU_ASSERT_TRUE(cbd_wait_log(cb, "recovered 40 sample(s) from the ingest journal", 1000));
    CU_ASSERT_TRUE(
        cbd_wait_metric(port, "citybrain_storage_rows_duplicate_total", 40, CBD_TIMEOUT_MS));
    CU_ASSERT_EQUAL(cbd_stop(cb), 0);
    CU_ASSERT_EQUAL(burst_rows(db), 40);
    cb_h_pub_disconnect(pub);
}

void cb_test_suite_crash(void)
{
    CU_pSuite s = cb_h_add_suite("crash");
    CU_add_test(s, "crash: SIGKILL six times in a QoS 1 stream of 3000 stores every message exactly once",
                test_kill9_during_qos1_stream_stores_each_message_once);
    CU_add_test(s, "crash: a burst of 40 bare numbers killed before its commit is replayed into 40 "
                   "rows; replayed again after commit, all 40 are duplicates",
                test_kill9_after_burst_replays_same_stamps);
}
