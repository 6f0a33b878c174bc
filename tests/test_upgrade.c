/* Upgrades of a database written by an earlier release: the file in
 * tests/fixtures/ was written by that release's own binary (how: the README
 * there), so the test sees exactly what a city's disk holds, not the current
 * code's idea of an old layout. Opening it with the current store migrates
 * it (schema steps, then the writer's conversion of raw samples between
 * commits); every sample and every closed minute must read back the same. */
#include <CUnit/CUnit.h>
#include <math.h>
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "storage/storage.h"
#include "storage/storage_int.h"
#include "tests/support/store_fixture.h"

void cb_test_suite_upgrade(void);

/* FNV-1a over the rows a query or a reader gives, in order: equal digests,
 * equal rows (topic, metric, ts and the value's bits). */
struct digest {
    uint64_t h;
    int64_t n, first_ts, last_ts;
};

static void mix(struct digest *d, const void *p, size_t len)
{
    const unsigned char *c = p;
    for (size_t i = 0; i < len; i++)
        d->h = (d->h ^ c[i]) * 1099511628211ULL;
}

static void add_sample(struct digest *d, const char *topic, const char *metric, int64_t ts,
                       double v)
{
    if (!d->n || ts < d->first_ts)
        d->first_ts = ts;
    d->last_ts = ts > d->last_ts ? ts : d->last_ts;
    d->n++;
    mix(d, topic, strlen(topic) + 1);
    mix(d, metric, strlen(metric) + 1);
    mix(d, &ts, sizeof ts);
    mix(d, &v, sizeof v);
}

static int on_sample(void *ctx, const char *topic, const char *metric, int64_t ts, double v)
{
    add_sample(ctx, topic, metric, ts, v);
    return 0;
}

/* One closed minute as the release's rollup_1m row gave it. */
struct minute {
    char key[160];
    int64_t bucket, count;
    double min, max, sum, last;
};

struct minutes {
    struct minute *m;
    size_t n, cap, matched, differ;
};

static int cmp_minute(const void *a, const void *b)
{
    const struct minute *x = a, *y = b;
    int c = strcmp(x->key, y->key);
    return c ? c : (x->bucket > y->bucket) - (x->bucket < y->bucket);
}

/* Each bucket the current reader gives is looked up among the release's
 * minutes: count, min, max and last exactly, the sum to 1e-12 relative
 * (added in another order it may differ in the last bits). */
static int on_bucket(void *ctx, const char *topic, const char *metric, const struct cb_bucket *b)
{
    struct minutes *ms = ctx;
    struct minute key = {.bucket = b->ts};
    snprintf(key.key, sizeof key.key, "%s|%s", topic, metric);
    const struct minute *m = bsearch(&key, ms->m, ms->n, sizeof *ms->m, cmp_minute);
    if (!m)
        return 0; /* a minute the release had not closed */
    ms->matched++;
    if ((int64_t)b->count != m->count || b->min != m->min || b->max != m->max ||
        b->last != m->last || fabs(b->sum - m->sum) > 1e-12 * fmax(1, fabs(m->sum)))
        ms->differ++;
    return 0;
}

static char dir[64], dbpath[128];

/* The fixture, unpacked into a fresh temporary directory. */
static void unpack(const char *fixture)
{
    strcpy(dir, "/tmp/cbupgrade.XXXXXX");
    CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(dir));
    snprintf(dbpath, sizeof dbpath, "%s/city.db", dir);
    const char *root = getenv("CB_ROOT");
    char cmd[512];
    snprintf(cmd, sizeof cmd, "gzip -dc '%s/tests/fixtures/%s' > '%s'", root ? root : ".",
             fixture, dbpath);
    CU_ASSERT_EQUAL_FATAL(system(cmd), 0);
}

/* What the release's own tables hold (schema 6: one row per sample). */
static void read_release(struct digest *samples, struct minutes *ms)
{
    sqlite3 *db = NULL;
    CU_ASSERT_EQUAL_FATAL(sqlite3_open_v2(dbpath, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    CU_ASSERT_EQUAL(cb_t_sql_int(db, "PRAGMA user_version"), 6);
    sqlite3_stmt *st = NULL;
    CU_ASSERT_EQUAL_FATAL(sqlite3_prepare_v2(db,
                                             "SELECT se.topic, r.metric, s.ts, s.value "
                                             "FROM samples s JOIN series r ON r.id = s.series_id "
                                             "JOIN sensors se ON se.id = r.sensor_id "
                                             "ORDER BY se.topic, r.metric, s.ts",
                                             -1, &st, NULL),
                          SQLITE_OK);
    while (sqlite3_step(st) == SQLITE_ROW)
        add_sample(samples, (const char *)sqlite3_column_text(st, 0),
                   (const char *)sqlite3_column_text(st, 1), sqlite3_column_int64(st, 2),
                   sqlite3_column_double(st, 3));
    sqlite3_finalize(st);
    CU_ASSERT_EQUAL_FATAL(sqlite3_prepare_v2(db,
                                             "SELECT se.topic || '|' || r.metric, u.bucket, "
                                             "u.count, u.min, u.max, u.sum, u.last "
                                             "FROM rollup_1m u JOIN series r ON r.id = u.series_id "
                                             "JOIN sensors se ON se.id = r.sensor_id",
                                             -1, &st, NULL),
                          SQLITE_OK);
    while (sqlite3_step(st) == SQLITE_ROW) {
        if (ms->n == ms->cap) {
            ms->cap = ms->cap ? 2 * ms->cap : 256;
            ms->m = realloc(ms->m, ms->cap * sizeof *ms->m);
            CU_ASSERT_PTR_NOT_NULL_FATAL(ms->m);
        }
        struct minute *m = &ms->m[ms->n++];
        snprintf(m->key, sizeof m->key, "%s", (const char *)sqlite3_column_text(st, 0));
        m->bucket = sqlite3_column_int64(st, 1);
        m->count = sqlite3_column_int64(st, 2);
        m->min = sqlite3_column_double(st, 3);
        m->max = sqlite3_column_double(st, 4);
        m->sum = sqlite3_column_double(st, 5);
        m->last = sqlite3_column_double(st, 6);
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    qsort(ms->m, ms->n, sizeof *ms->m, cmp_minute);
}

static void test_release_c617fe9_schema6(void)
{
    unpack("store-c617fe9-schema6.db.gz");
    struct digest before = {.h = 14695981039346656037ULL}, after = before;
    struct minutes ms = {0};
    read_release(&before, &ms);
    CU_ASSERT_EQUAL(before.n, 14668); /* the fixture's README */
    CU_ASSERT_EQUAL(ms.n, 880);

    struct cb_config cfg;
    CU_ASSERT_EQUAL_FATAL(cb_config_defaults(&cfg), 0);
    free(cfg.storage_db);
    cfg.storage_db = strdup(dbpath);
    cfg.storage_commit_interval_ms = 60000; /* the test commits with cb_store_flush */
    cfg.storage_retention_interval_ms = 24 * 3600 * 1000LL;
    /* the fixture's samples are from 2024: keep every tier */
    cfg.storage_retention_raw_ms = cfg.storage_retention_1m_ms = cfg.storage_retention_1h_ms = 0;
    char err[512] = "";
    struct cb_store *s = cb_store_open(&cfg, NULL, err, sizeof err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    struct cb_store_stats st = {0};
    for (int i = 0; i < 20000; i++) { /* the writer converts between commits */
        cb_store_get_stats(s, &st);
        if (!st.converting)
            break;
        CU_ASSERT_EQUAL(cb_store_flush(s), 0);
        struct timespec ms1 = {0, 1000000};
        nanosleep(&ms1, NULL);
    }
    CU_ASSERT_EQUAL(st.converting, 0);
    /* new samples after the upgrade: an old series and a new one */
    struct cb_sample smp = {"level", before.last_ts + 1000, 1.5};
    CU_ASSERT_EQUAL(cb_store_append(s, "city/d01/river/s01", NULL, &smp, 1, 0), 0);
    CU_ASSERT_EQUAL(cb_store_append(s, "city/d09/river/s01", NULL, &smp, 1, 0), 0);
    CU_ASSERT_EQUAL(cb_store_flush(s), 0);
    cb_store_close(s);

    sqlite3 *db = NULL;
    CU_ASSERT_EQUAL(sqlite3_open(dbpath, &db), SQLITE_OK);
    CU_ASSERT_EQUAL(cb_t_sql_int(db, "PRAGMA user_version"), STORAGE_SCHEMA_VERSION);
    sqlite3_close(db);

    struct cb_store_reader *r = cb_store_reader_open(dbpath, err, sizeof err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_EQUAL(cb_store_query_raw(r, NULL, NULL, before.first_ts, before.last_ts + 1,
                                       on_sample, &after),
                    0);
    if (after.n != before.n)
        fprintf(stderr, "upgrade: %lld samples read back of %lld\n", (long long)after.n,
                (long long)before.n);
    CU_ASSERT_EQUAL(after.n, before.n);
    CU_ASSERT_EQUAL(after.h, before.h); /* every sample, bit for bit */
    struct digest added = {0};
    CU_ASSERT_EQUAL(cb_store_query_raw(r, NULL, NULL, before.last_ts + 1, INT64_MAX, on_sample,
                                       &added),
                    0);
    CU_ASSERT_EQUAL(added.n, 2);
    CU_ASSERT_EQUAL(cb_store_query_buckets(r, NULL, NULL, before.first_ts, before.last_ts + 1,
                                           60000, on_bucket, &ms),
                    0);
    CU_ASSERT_EQUAL(ms.matched, ms.n); /* every closed minute of the release */
    CU_ASSERT_EQUAL(ms.differ, 0);
    cb_store_reader_close(r);
    free(ms.m);
    cb_config_free(&cfg);
    cb_t_remove_dir(dir);
}

void cb_test_suite_upgrade(void)
{
    CU_pSuite s = CU_add_suite("upgrade", NULL, NULL);
    CU_add_test(s,
                "upgrade: a database written by the release before chunks (c617fe9, schema 6) "
                "reads back every sample and closed minute, bit for bit, once converted",
                test_release_c617fe9_schema6);
}
