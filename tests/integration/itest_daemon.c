/* Odds and ends of `citybrain run`: --check-config, rule windows rebuilt from
 * the store after a restart, rejection counters in /metrics, and a clear
 * error (exit 1, no crash) for a database file it must not or cannot use. */
#include <cjson/cJSON.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/clock.h"
#include "tests/support/daemon_itest.h"

void cb_test_suite_daemon(void);

static void test_check_config(void)
{
    const char *rules = cbd_write_text("ok.rules", "rule r {\n  match \"city/+/x/{s}\"\n"
                                               "  when v > 1\n}\n");
    const char *good = cbd_write_text("good.conf", cb_h_strf("# a good file\n"
                                                         "mqtt.broker = tcp://127.0.0.1:1\n"
                                                         "storage.db = %s\n"
                                                         "rules.path = %s\n"
                                                         "http.listen = off\n",
                                                         cb_h_pathf("never.db"), rules));
    const char *err;
    const char *a1[] = {"run", "--config", good, "--check-config", NULL};
    CU_ASSERT_EQUAL(cbd_run_to_exit(a1, NULL, &err), 0);
    /* Validates only: no database created, no broker needed. */
    struct stat st;
    CU_ASSERT_NOT_EQUAL(stat(cb_h_pathf("never.db"), &st), 0);

    const char *badkey = cbd_write_text("badkey.conf", "mqtt.broker = tcp://127.0.0.1:1\n"
                                                   "\n"
                                                   "storage.dbb = x.db\n");
    const char *a2[] = {"run", "--config", badkey, "--check-config", NULL};
    CU_ASSERT_EQUAL(cbd_run_to_exit(a2, NULL, &err), 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, cb_h_strf("%s:3", badkey)));
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "storage.dbb"));

    const char *badval = cbd_write_text("badval.conf", "mqtt.qos = 7\n");
    const char *a3[] = {"run", "--config", badval, "--check-config", NULL};
    CU_ASSERT_EQUAL(cbd_run_to_exit(a3, NULL, &err), 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, cb_h_strf("%s:1", badval)));
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "mqtt.qos"));

    const char *baddur = cbd_write_text("baddur.conf", "# line 1\nstorage.commit_interval = soon\n");
    const char *a4[] = {"run", "--config", baddur, "--check-config", NULL};
    CU_ASSERT_EQUAL(cbd_run_to_exit(a4, NULL, &err), 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, cb_h_strf("%s:2", baddur)));

    /* A rule file with an error fails the check with its position. */
    const char *badrules = cbd_write_text("bad.rules", "rule r {\n  match \"city/#\"\n"
                                                   "  when avgg(v, 1m) > 1\n}\n");
    const char *a5[] = {"run", "--config", good, "--rules", badrules, "--check-config", NULL};
    CU_ASSERT_EQUAL(cbd_run_to_exit(a5, NULL, &err), 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, cb_h_strf("%s:3:8", badrules)));
}

/* avg(level, 10m) after a restart counts the samples from before it: three
 * samples of 3 before, one of 12 after, avg 5.25 > 5 fires with 5.25 in its
 * message (12 alone would read 12.00; before the restart 3 < 5 never fired). */
static void test_windows_rebuilt_after_restart(void)
{
    struct cb_h_broker *b = cb_h_broker_start(NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    const char *rules = cbd_write_text("avg.rules", "rule river_avg {\n"
                                                "  match   \"city/{district}/river/{sensor}\"\n"
                                                "  when    avg(level, 10m) > 5\n"
                                                "  message \"avg {avg(level, 10m):.2f} over "
                                                "{count(level, 10m):.0f}\"\n"
                                                "}\n");
    const char *db = cb_h_pathf("win.db");
    const char *args[] = {"run", "--broker", cb_h_broker_url(b), "--db", db, "--rules", rules,
                          "--client-id", "cb-itest-window", "--http", "off", "--set",
                          "alerts.storm_window=0", NULL};
    struct cb_h_sub *alerts = cb_h_sub_start(cb_h_broker_url(b), "citybrain/alerts/#", 1, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(alerts);
    struct cb_h_proc *cb = cbd_start(args, NULL, 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(cb);
    int64_t now = cb_h_now_ms();
    for (int i = 3; i >= 1; i--) {
        const char *p = cb_h_strf("{\"ts\":%lld,\"level\":3}", (long long)(now - i * 1000));
        CU_ASSERT_EQUAL_FATAL(cb_h_publish(cb_h_broker_url(b), "city/d05/river/s1", p,
                                           strlen(p), 1), 0);
    }
    CU_ASSERT_EQUAL_FATAL(cbd_stop(cb), 0); /* flushes the samples */
    CU_ASSERT_EQUAL(cb_h_sql_count(db, "samples", NULL), 3);
    CU_ASSERT_EQUAL(cb_h_sub_count(alerts), 0);

    cb = cbd_start(args, NULL, 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(cb);
    const char *p = cb_h_strf("{\"ts\":%lld,\"level\":12}", (long long)cb_h_now_ms());
    CU_ASSERT_EQUAL_FATAL(cb_h_publish(cb_h_broker_url(b), "city/d05/river/s1", p, strlen(p), 1),
                          0);
    CU_ASSERT_TRUE_FATAL(cbd_wait_state(alerts, "firing", "river_avg", 1, CBD_TIMEOUT_MS));
    struct cb_h_msg m;
    CU_ASSERT_EQUAL_FATAL(cb_h_sub_get(alerts, 0, &m), 0);
    cJSON *j = cJSON_Parse(m.payload);
    const cJSON *msg = cJSON_GetObjectItemCaseSensitive(j, "message");
    CU_ASSERT_TRUE(cJSON_IsString(msg) && !strcmp(msg->valuestring, "avg 5.25 over 4"));
    if (!cJSON_IsString(msg) || strcmp(msg->valuestring, "avg 5.25 over 4"))
        fprintf(stderr, "\nfiring message: %s\n", m.payload);
    cJSON_Delete(j);
    CU_ASSERT_EQUAL(cbd_stop(cb), 0);
}

/* A rule with Chinese and English texts: the MQTT feed's transition keeps
 * rules.md's title-less object with "message" (the English), and adds
 * "titles" and "messages" by language tag; the transition log (what
 * /api/events and /api/alerts/history send) stores the same. */
static void test_feed_carries_languages(void)
{
    struct cb_h_broker *b = cb_h_broker_start(NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    const char *rules = cbd_write_text("lang.rules", "rule gas {\n"
                                                 "  title    \"Methane leak\"\n"
                                                 "  title zh \"燃气泄漏\"\n"
                                                 "  match    \"city/{district}/gas/{sensor}\"\n"
                                                 "  when     ch4 >= 10\n"
                                                 "  message  \"{sensor}: {ch4:.0f}% LEL\"\n"
                                                 "  message zh \"{sensor}：甲烷 {ch4:.0f}% LEL\"\n"
                                                 "}\n");
    const char *db = cb_h_pathf("lang.db");
    const char *args[] = {"run", "--broker", cb_h_broker_url(b), "--db", db, "--rules", rules,
                          "--client-id", "cb-itest-lang", "--http", "off", NULL};
    struct cb_h_sub *alerts = cb_h_sub_start(cb_h_broker_url(b), "citybrain/alerts/#", 1, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(alerts);
    struct cb_h_proc *cb = cbd_start(args, NULL, 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(cb);
    const char *p = "{\"ch4\":12}";
    CU_ASSERT_EQUAL_FATAL(cb_h_publish(cb_h_broker_url(b), "city/d03/gas/s02", p, strlen(p), 1), 0);
    CU_ASSERT_TRUE_FATAL(cbd_wait_state(alerts, "firing", "gas", 1, CBD_TIMEOUT_MS));
    struct cb_h_msg m;
    CU_ASSERT_EQUAL_FATAL(cb_h_sub_get(alerts, 0, &m), 0);
    cJSON *j = cJSON_Parse(m.payload);
    const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(j, "messages");
    const cJSON *titles = cJSON_GetObjectItemCaseSensitive(j, "titles");
    const cJSON *zh = cJSON_GetObjectItemCaseSensitive(msgs, "zh-CN");
    const cJSON *en = cJSON_GetObjectItemCaseSensitive(msgs, "en-US");
    const cJSON *tzh = cJSON_GetObjectItemCaseSensitive(titles, "zh-CN");
    const cJSON *msg = cJSON_GetObjectItemCaseSensitive(j, "message");
    CU_ASSERT_TRUE(cJSON_IsString(zh) && !strcmp(zh->valuestring, "s02：甲烷 12% LEL"));
    CU_ASSERT_TRUE(cJSON_IsString(en) && !strcmp(en->valuestring, "s02: 12% LEL"));
    CU_ASSERT_TRUE(cJSON_IsString(tzh) && !strcmp(tzh->valuestring, "燃气泄漏"));
    CU_ASSERT_TRUE(cJSON_IsString(msg) && !strcmp(msg->valuestring, "s02: 12% LEL"));
    if (!cJSON_IsString(zh))
        fprintf(stderr, "\nfeed: %s\n", m.payload);
    cJSON_Delete(j);
    CU_ASSERT_EQUAL(cbd_stop(cb), 0);
    CU_ASSERT_EQUAL(cb_h_sql_count(db, "alert_transitions",
                                   "state = 'firing' AND json LIKE '%\"zh-CN\":\"s02：甲烷 12% LEL\"%'"),
                    1);
}

static double metric(int port, const char *series)
{
    double v = -1;
    CU_ASSERT_EQUAL(cbd_metric(port, series, &v), 0);
    return v;
}

/* Junk payloads are counted by reason; the engine goes on ingesting. */
static void test_rejections_counted_by_reason(void)
{
    struct cb_h_broker *b = cb_h_broker_start(NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    int port = cb_h_free_port();
    const char *db = cb_h_pathf("junk.db");
    const char *args[] = {"run", "--broker", cb_h_broker_url(b), "--db", db, "--client-id",
                          "cb-itest-junk", "--http", cb_h_strf("127.0.0.1:%d", port), "--set",
                          "ingest.max_payload=1k", "--set", "storage.commit_interval=50ms",
                          "--set", "rules.allow_none=true", NULL};
    struct cb_h_proc *cb = cbd_start(args, NULL, port);
    CU_ASSERT_PTR_NOT_NULL_FATAL(cb);
    const char *mal = "citybrain_ingest_rejected_total{reason=\"malformed\"}";
    const char *big = "citybrain_ingest_rejected_total{reason=\"payload_too_large\"}";
    const char *str = "citybrain_ingest_rejected_total{reason=\"string_value\"}";
    const char *deep = "citybrain_ingest_rejected_total{reason=\"too_deep\"}";
    CU_ASSERT_DOUBLE_EQUAL(metric(port, mal), 0, 0.1);
    CU_ASSERT_DOUBLE_EQUAL(metric(port, big), 0, 0.1);
    const char *last = "citybrain_ingest_last_message_timestamp_seconds";
    CU_ASSERT_DOUBLE_EQUAL(metric(port, last), 0, 0.0001);
    double before_s = (double)cb_wall_ms() / 1000.0;

    struct cb_h_pub *pub = cb_h_pub_connect(cb_h_broker_url(b), NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(pub);
    CU_ASSERT_EQUAL(cb_h_pub_str(pub, "city/d01/river/s1", "not json {", 1), 0);
    CU_ASSERT_EQUAL(cb_h_pub_str(pub, "city/d01/river/s1", "{\"level\":", 1), 0);
    CU_ASSERT_EQUAL(cb_h_pub_str(pub, "city/d01/river/s1", "\x01\x02\xff", 1), 0);
    char large[2048];
    memset(large, '7', sizeof large - 1);
    large[sizeof large - 1] = '\0';
    CU_ASSERT_EQUAL(cb_h_pub_str(pub, "city/d01/river/s1", large, 1), 0);
    CU_ASSERT_EQUAL(cb_h_pub_str(pub, "city/d01/river/s1", "{\"level\":\"high\"}", 1), 0);
    CU_ASSERT_EQUAL(cb_h_pub_str(pub, "city/d01/river/s1",
                                 "{\"a\":{\"b\":{\"c\":{\"d\":{\"e\":{\"f\":{\"g\":{\"h\":{\"i\":"
                                 "{\"j\":1}}}}}}}}}}", 1), 0);
    /* A good one last: once it is stored, every junk message before it has
     * been through the decoder. */
    CU_ASSERT_EQUAL(cb_h_pub_str(pub, "city/d01/river/s1", "{\"level\":2.5}", 1), 0);
    CU_ASSERT_TRUE(cbd_wait_metric(port, "citybrain_storage_rows_written_total", 1,
                                   CBD_TIMEOUT_MS));
    CU_ASSERT_DOUBLE_EQUAL(metric(port, mal), 3, 0.1);
    CU_ASSERT_DOUBLE_EQUAL(metric(port, big), 1, 0.1);
    CU_ASSERT_DOUBLE_EQUAL(metric(port, str), 1, 0.1);
    CU_ASSERT_DOUBLE_EQUAL(metric(port, deep), 1, 0.1);
    CU_ASSERT_DOUBLE_EQUAL(metric(port, "citybrain_ingest_messages_total{result=\"rejected\"}"), 6,
                           0.1);
    CU_ASSERT_DOUBLE_EQUAL(metric(port, "citybrain_ingest_messages_total{result=\"accepted\"}"), 1,
                           0.1);
    /* The good message was handled after the first publish (ms resolution). */
    double last_s = metric(port, last);
    CU_ASSERT(last_s >= before_s - 0.001 && last_s <= (double)cb_wall_ms() / 1000.0);
    CU_ASSERT_EQUAL(cbd_stop(cb), 0);
    CU_ASSERT_EQUAL(cb_h_sql_count(db, "samples", NULL), 1);
}

/* SQLite's page caches take their pages from the daemon's slab
 * (cmd/memory.c), not from malloc: /metrics shows the slab's size, pages in
 * use once rows are written, and no page cache bytes beyond it. */
static void test_page_caches_use_the_slab(void)
{
    struct cb_h_broker *b = cb_h_broker_start(NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    int port = cb_h_free_port();
    const char *db = cb_h_pathf("slab.db");
    const char *args[] = {"run", "--broker", cb_h_broker_url(b), "--db", db, "--client-id",
                          "cb-itest-slab", "--http", cb_h_strf("127.0.0.1:%d", port), "--set",
                          "storage.commit_interval=50ms", "--set", "rules.allow_none=true", NULL};
    struct cb_h_proc *cb = cbd_start(args, NULL, port);
    CU_ASSERT_PTR_NOT_NULL_FATAL(cb);
    double slots = metric(port, "citybrain_sqlite_page_slab_pages");
    /* 16 MB of 4 KB pages, each with SQLite's header of a few hundred bytes */
    CU_ASSERT(slots > 3000 && slots < 4096);
    struct cb_h_pub *pub = cb_h_pub_connect(cb_h_broker_url(b), NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(pub);
    for (int i = 0; i < 50; i++)
        CU_ASSERT_EQUAL(cb_h_pub_str(pub, cb_h_strf("city/d01/river/s%d", i),
                                     "{\"level\":2.5,\"flow\":120}", 1), 0);
    CU_ASSERT_TRUE(cbd_wait_metric(port, "citybrain_storage_rows_written_total", 100,
                                   CBD_TIMEOUT_MS));
    double used = metric(port, "citybrain_sqlite_page_slab_used_pages");
    CU_ASSERT(used > 0 && used <= slots);
    CU_ASSERT_DOUBLE_EQUAL(metric(port, "citybrain_sqlite_page_overflow_bytes"), 0, 0.1);
    cb_h_pub_disconnect(pub);
    CU_ASSERT_EQUAL(cbd_stop(cb), 0);
    CU_ASSERT_EQUAL(cb_h_sql_count(db, "samples", NULL), 100);
}

/* A database citybrain must not or cannot use: a clear message naming the
 * file, exit 1, no crash, and the file left as it was. */
static void test_unusable_database_is_a_clear_error(void)
{
    struct cb_h_broker *b = cb_h_broker_start(NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    const char *err;

    /* Not SQLite at all. */
    const char *junk = cbd_write_text("junk.db", "this is somebody's spreadsheet, not a database\n"
                                             "0123456789abcdef0123456789abcdef0123456789\n");
    const char *a1[] = {"run", "--broker", cb_h_broker_url(b), "--db", junk, "--http", "off",
                        "--set", "rules.allow_none=true", NULL};
    CU_ASSERT_EQUAL(cbd_run_to_exit(a1, NULL, &err), 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, junk));
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "not a SQLite database"));
    size_t len = 0;
    const char *after = cb_h_read_file(junk, &len);
    CU_ASSERT_TRUE(after && !strncmp(after, "this is somebody's", 18));

    /* SQLite, but another application's. */
    const char *other = cb_h_pathf("other.db");
    sqlite3 *db = NULL;
    CU_ASSERT_EQUAL_FATAL(sqlite3_open(other, &db), SQLITE_OK);
    CU_ASSERT_EQUAL(sqlite3_exec(db, "CREATE TABLE invoices(id INTEGER, total REAL);"
                                     "INSERT INTO invoices VALUES (1, 9.5);",
                                 NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    const char *a2[] = {"run", "--broker", cb_h_broker_url(b), "--db", other, "--http", "off",
                        "--set", "rules.allow_none=true", NULL};
    CU_ASSERT_EQUAL(cbd_run_to_exit(a2, NULL, &err), 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, other));
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "not a citybrain database"));
    CU_ASSERT_EQUAL(cb_h_sql_count(other, "invoices", NULL), 1);
    int64_t tables = 0;
    CU_ASSERT_EQUAL(cb_h_sql_int(other, &tables, "SELECT count(*) FROM sqlite_master"), 0);
    CU_ASSERT_EQUAL(tables, 1);

    /* A path that cannot be created. */
    const char *nodir = cb_h_pathf("no/such/dir/x.db");
    const char *a3[] = {"run", "--broker", cb_h_broker_url(b), "--db", nodir, "--http", "off",
                        "--set", "rules.allow_none=true", NULL};
    CU_ASSERT_EQUAL(cbd_run_to_exit(a3, NULL, &err), 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "x.db"));

    /* A read-only file (only meaningful when not root: root writes anyway). */
    if (geteuid() != 0) {
        const char *ro = cb_h_pathf("ro.db");
        const char *a4[] = {"run", "--broker", cb_h_broker_url(b), "--db", ro, "--http", "off",
                            "--client-id", "cb-itest-ro", "--set", "rules.allow_none=true", NULL};
        struct cb_h_proc *p = cbd_start(a4, NULL, 0);
        CU_ASSERT_PTR_NOT_NULL_FATAL(p);
        CU_ASSERT_EQUAL_FATAL(cbd_stop(p), 0);
        CU_ASSERT_EQUAL(chmod(ro, 0444), 0);
        CU_ASSERT_EQUAL(cbd_run_to_exit(a4, NULL, &err), 1);
        CU_ASSERT_PTR_NOT_NULL(strstr(err, ro));
    } else {
        fprintf(stderr, " [root: read-only file case skipped] ");
    }
}

void cb_test_suite_daemon(void)
{
    CU_pSuite s = cb_h_add_suite("daemon");
    CU_add_test(s, "daemon: --check-config exits 0 for a good config, 1 with file:line for a bad "
                   "key, value or rule",
                test_check_config);
    CU_add_test(s, "daemon: the MQTT feed and the transition log carry a rule's titles and "
                   "messages in zh-CN and en-US",
                test_feed_carries_languages);
    CU_add_test(s, "daemon: a restart rebuilds avg(level, 10m) from the stored samples",
                test_windows_rebuilt_after_restart);
    CU_add_test(s, "daemon: junk payloads count in citybrain_ingest_rejected_total by reason",
                test_rejections_counted_by_reason);
    CU_add_test(s, "daemon: SQLite's page caches take their pages from the page slab, none from "
                   "malloc", test_page_caches_use_the_slab);
    CU_add_test(s, "daemon: a foreign, non-SQLite or uncreatable --db is a clear error, exit 1",
                test_unusable_database_is_a_clear_error);
}
