/* Buckets of old data from the finest tier that holds it (issue 14, item
 * 10): an hour of a day 100 days ago is replayed into a database with
 * `citybrain replay --db`, as an operator does to look at a past incident;
 * then `citybrain query --step 30s` over 200 s of it and the running
 * daemon's GET /api/series answer 30 s buckets from the raw samples in the
 * file, not one bucket of the whole hour from the 1-hour tier (which is what
 * choosing the tier from the retention periods gave). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/support/daemon_itest.h"

void cb_test_suite_query(void);

#define EVERY_MS 4500 /* 800 samples in the hour */
#define TOPIC "city/d01/river/s01"

/* Samples of the generated hour with ts in [from, to). */
static int expected(int64_t t0, int64_t from, int64_t to)
{
    int n = 0;
    for (int64_t ts = t0; ts < t0 + 3600000; ts += EVERY_MS)
        n += ts >= from && ts < to;
    return n;
}

/* The integer after `"key":` in the i-th (0-based) occurrence of `"key":`
 * in text; -1 when absent. */
static long long nth_int(const char *text, const char *key, int i)
{
    char pat[32];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = text;
    for (int k = 0; p && k <= i; k++) {
        p = strstr(p, pat);
        if (p && k < i)
            p += strlen(pat);
    }
    return p ? strtoll(p + strlen(pat), NULL, 10) : -1;
}

static int occurrences(const char *text, const char *needle)
{
    int n = 0;
    for (const char *p = strstr(text, needle); p; p = strstr(p + 1, needle))
        n++;
    return n;
}

/* Checks 30 s buckets over [t0, t0 + 200 s) in text, the "ts" and "count"
 * keys of each in order. */
static void check_buckets(const char *text, int64_t t0)
{
    CU_ASSERT_EQUAL(occurrences(text, "\"count\":"), 7); /* 200 s rounds up to 210 */
    CU_ASSERT_PTR_NULL(strstr(text, "\"span\""));
    for (int k = 0; k < 7; k++) {
        int64_t b = t0 + k * 30000;
        CU_ASSERT_EQUAL(nth_int(text, "count", k), expected(t0, b, b + 30000));
    }
}

/* The "buckets" part of GET /api/series for the generated topic ("" when the
 * request failed). */
static const char *series(int port, int64_t from, int64_t to, const char *step)
{
    const char *body = NULL;
    long st = cbd_http(port, "GET",
                       cb_h_strf("/api/series?topic=%s&metric=level&from=%lld&to=%lld&step=%s",
                                 cbd_escape(TOPIC), (long long)from, (long long)to, step),
                       NULL, NULL, &body);
    CU_ASSERT_EQUAL(st, 200);
    const char *b = body ? strstr(body, "\"buckets\"") : NULL;
    return b ? b : "";
}

static void test_replayed_old_day_answers_30s_buckets_from_raw(void)
{
    int64_t t0 = (cb_h_now_ms() - 100 * 86400000LL) / 3600000 * 3600000;
    const char *in = cb_h_pathf("old_day.jsonl"), *db = cb_h_pathf("old.db");
    const char *rules = cb_h_pathf("r.rules");
    static const char rule[] = "rule river_high {\n"
                               "  match \"city/{district}/river/{sensor}\"\n"
                               "  when  level > 1000\n"
                               "}\n";
    CU_ASSERT_EQUAL_FATAL(cb_h_write_file(rules, rule, sizeof rule - 1), 0);
    FILE *f = fopen(in, "w");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    for (int64_t ts = t0; ts < t0 + 3600000; ts += EVERY_MS)
        fprintf(f, "{\"topic\":\"" TOPIC "\",\"payload\":{\"ts\":%lld,\"level\":%.1f}}\n",
                (long long)ts, (double)(ts / EVERY_MS % 97) / 10.0);
    fclose(f);
    const char *args[] = {"replay", "--rules", rules, "--input", in, "--db", db, NULL};
    struct cb_h_proc *rp = cb_h_citybrain(args, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(rp);
    CU_ASSERT_EQUAL_FATAL(cb_h_proc_wait(rp, CBD_TIMEOUT_MS), 0);
    /* all three tiers hold the hour */
    CU_ASSERT_EQUAL(cb_h_sql_count(db, "samples", NULL), 800);
    CU_ASSERT_EQUAL(cb_h_sql_count(db, "rollup_1h", NULL), 1);

    /* citybrain query */
    const char *out = cb_h_pathf("query.out");
    CU_ASSERT_EQUAL_FATAL(
        cb_h_sh("'%s' query --db '%s' --topic " TOPIC " --metric level --from %lld --to %lld "
                "--step 30s > '%s'",
                getenv("CB_BIN") ? getenv("CB_BIN") : "build/asan/citybrain", db, (long long)t0,
                (long long)t0 + 200000, out),
        0);
    const char *text = cb_h_read_file(out, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(text);
    check_buckets(text, t0);
    CU_ASSERT_EQUAL(nth_int(text, "ts", 0), t0);
    CU_ASSERT_EQUAL(nth_int(text, "ts", 6), t0 + 180000);

    /* GET /api/series of the daemon on the same file (retention would delete
     * the old samples on its first pass: not within this test) */
    struct cb_h_broker *b = cb_h_broker_start(NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    int port = cb_h_free_port();
    const char *run[] = {"run", "--broker", cb_h_broker_url(b), "--db", db, "--rules", rules,
                         "--http", cb_h_strf("127.0.0.1:%d", port), "--set",
                         "storage.retention.interval=1d", NULL};
    struct cb_h_proc *d = cbd_start(run, NULL, port);
    CU_ASSERT_PTR_NOT_NULL_FATAL(d);
    check_buckets(series(port, t0, t0 + 200000, "30s"), t0);
    /* the whole hour at 1 h is the 1-hour row: 800 */
    CU_ASSERT_EQUAL(nth_int(series(port, t0, t0 + 3600000, "1h"), "count", 0), 800);
    CU_ASSERT_EQUAL(cbd_stop(d), 0);
}

void cb_test_suite_query(void)
{
    CU_pSuite s = cb_h_add_suite("query");
    CU_add_test(s, "query: a day replayed from 100 days ago gives 30 s buckets from its raw "
                   "samples, in `citybrain query` and GET /api/series",
                test_replayed_old_day_answers_30s_buckets_from_raw);
}
