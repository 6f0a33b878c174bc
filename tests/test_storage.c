/* The store: schema and migrations, idempotent writes, rollups, retention,
 * queries, and storage faults, on real SQLite files in a temporary directory. */
#include <CUnit/CUnit.h>
#include <math.h>
#include <pwd.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "storage/chunk.h"
#include "storage/head_block.h"
#include "storage/sqlite_conn.h"
#include "storage/storage.h"
#include "tests/support/splitmix.h"
#include "tests/support/store_fixture.h"
#include "storage/storage_int.h"

void cb_test_suite_storage(void);

static char dir[64];
static char dbpath[128];
static struct cb_config cfg;

static void setup(void)
{
    strcpy(dir, "/tmp/cbstore.XXXXXX");
    CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(dir));
    snprintf(dbpath, sizeof dbpath, "%s/city.db", dir);
    CU_ASSERT_EQUAL_FATAL(cb_config_defaults(&cfg), 0);
    free(cfg.storage_db);
    cfg.storage_db = strdup(dbpath);
    cfg.storage_commit_interval_ms = 60000; /* tests commit with cb_store_flush */
    cfg.storage_retention_interval_ms = 24 * 3600 * 1000LL;
    cfg.storage_cache_size = 1 << 20;
}

static void teardown(void)
{
    cb_config_free(&cfg);
    cb_t_remove_dir(dir);
}

/* Calls fn(seq, sample, arg) for every sample in the open head's blocks
 * (schema 10) of db. Returns the number of samples, or -1 on a damaged
 * block or an error of fn (non-zero). */
static long head_each(sqlite3 *db, int (*fn)(int64_t, const struct storage_hsample *, void *),
                      void *arg)
{
    sqlite3_stmt *st = NULL;
    long n = 0;
    if (sqlite3_prepare_v2(db, "SELECT seq, grp, data FROM main.head_blocks", -1, &st, NULL) !=
        SQLITE_OK)
        return -1;
    while (n >= 0 && sqlite3_step(st) == SQLITE_ROW) {
        struct storage_hblock_iter it;
        struct storage_hsample x;
        int k = storage__hblock_iter_init(&it, sqlite3_column_blob(st, 2),
                                          (size_t)sqlite3_column_bytes(st, 2),
                                          sqlite3_column_int64(st, 1));
        while (k == 0 && (k = storage__hblock_next(&it, &x)) == 1) {
            k = fn && fn(sqlite3_column_int64(st, 0), &x, arg) ? -1 : 0;
            n++;
        }
        if (k < 0)
            n = -1;
    }
    sqlite3_finalize(st);
    return n;
}

static int head_row_insert(int64_t seq, const struct storage_hsample *x, void *arg)
{
    sqlite3_stmt *ins = arg;
    sqlite3_bind_int64(ins, 1, seq);
    sqlite3_bind_int64(ins, 2, x->series);
    sqlite3_bind_int64(ins, 3, x->ts);
    sqlite3_bind_double(ins, 4, x->value);
    int r = sqlite3_step(ins);
    sqlite3_reset(ins);
    return r != SQLITE_DONE;
}

/* Decodes the open head's blocks (schema 10) into a temporary table
 * `head`(seq, series_id, ts, value) of db, so that the tests' SQL reads the
 * head as rows, as before step 10. Nothing for a file without blocks. */
static void head_as_rows(sqlite3 *db)
{
    sqlite3_stmt *ins = NULL;
    if (sqlite3_table_column_metadata(db, "main", "head_blocks", "grp", NULL, NULL, NULL, NULL,
                                      NULL) != SQLITE_OK)
        return;
    CU_ASSERT_EQUAL(sqlite3_exec(db, "CREATE TEMP TABLE head(seq, series_id, ts, value)", NULL,
                                 NULL, NULL),
                    SQLITE_OK);
    CU_ASSERT_EQUAL(sqlite3_prepare_v2(db, "INSERT INTO temp.head VALUES (?1, ?2, ?3, ?4)", -1,
                                       &ins, NULL),
                    SQLITE_OK);
    CU_ASSERT(head_each(db, head_row_insert, ins) >= 0); /* no damaged block */
    sqlite3_finalize(ins);
}

static sqlite3 *raw_db(void)
{
    sqlite3 *db = NULL;
    CU_ASSERT_EQUAL(sqlite3_open(dbpath, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    head_as_rows(db);
    return db;
}

static int64_t count_rows(const char *sql)
{
    sqlite3 *db = raw_db();
    int64_t v = cb_t_sql_int(db, sql);
    sqlite3_close(db);
    return v;
}

static struct cb_store *open_store(void)
{
    char err[512] = "";
    struct cb_store *s = cb_store_open(&cfg, NULL, err, sizeof err);
    if (!s)
        fprintf(stderr, "open: %s\n", err);
    return s;
}

static void put(struct cb_store *s, const char *topic, const char *metric, int64_t ts, double v,
                uint64_t pos)
{
    struct cb_sample smp = {metric, ts, v};
    CU_ASSERT_EQUAL(cb_store_append(s, topic, NULL, &smp, 1, pos), 0);
}

/* ---- schema ------------------------------------------------------------------ */

static void test_schema_created(void)
{
    setup();
    struct cb_store *s = open_store();
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    cb_store_close(s);
    sqlite3 *db = raw_db();
    CU_ASSERT_EQUAL(cb_t_sql_int(db, "PRAGMA user_version"), STORAGE_SCHEMA_VERSION);
    CU_ASSERT_EQUAL(cb_t_sql_int(db, "PRAGMA application_id"), STORAGE_APP_ID);
    CU_ASSERT_EQUAL(cb_t_sql_int(db, "SELECT count(*) FROM sqlite_master WHERE type = 'table' "
                                     "AND name IN ('sensors','series','chunks','head_blocks',"
                                     "'rollup_1m','rollup_1h','quarantine','ingest_state',"
                                     "'alert_instances','alert_transitions','silences','outbox',"
                                     "'audit_log')"),
                    13);
    /* the row-per-sample head of steps 8 and 9 is dropped at the first start */
    CU_ASSERT_EQUAL(cb_t_sql_int(db, "SELECT count(*) FROM sqlite_master WHERE name = 'head'"), 0);
    CU_ASSERT_EQUAL(cb_t_sql_int(db, "SELECT count(*) FROM pragma_table_info('silences') "
                                     "WHERE name IN ('expired_at','expired_by')"),
                    2);
    CU_ASSERT_EQUAL(cb_t_sql_int(db, "SELECT count(*) FROM sqlite_master WHERE name = "
                                     "'alert_transitions_at'"),
                    1);
    sqlite3_stmt *st = NULL;
    sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, NULL);
    CU_ASSERT_EQUAL(sqlite3_step(st), SQLITE_ROW);
    CU_ASSERT_STRING_EQUAL((const char *)sqlite3_column_text(st, 0), "wal");
    sqlite3_finalize(st);
    sqlite3_close(db);
    /* an extra connection for the alerts can write its tables */
    char err[256];
    sqlite3 *c = cb_store_open_connection(dbpath, err, sizeof err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    CU_ASSERT_EQUAL(sqlite3_exec(c,
                                 "INSERT INTO silences(matchers, starts, ends, created_at) "
                                 "VALUES ('{}', 1, 2, 3)",
                                 NULL, NULL, NULL),
                    SQLITE_OK);
    sqlite3_close(c);
    teardown();
}

/* Mode bits of path, or -1 when it cannot be read. */
static int file_mode(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (int)(st.st_mode & 07777) : -1;
}

/* The audit trail and webhook bodies live in the database: the file and the
 * -wal and -shm SQLite makes beside it are the owner's alone, whatever the
 * umask lets through. A file that is already there keeps its mode. */
static void test_files_private(void)
{
    setup();
    mode_t old = umask(0);
    struct cb_store *s = open_store();
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    put(s, "city/a", "v", 1000, 1.0, 1);
    CU_ASSERT_EQUAL(cb_store_flush(s), 0);
    char path[160];
    CU_ASSERT_EQUAL(file_mode(dbpath), 0600);
    snprintf(path, sizeof path, "%s-wal", dbpath);
    CU_ASSERT_EQUAL(file_mode(path), 0600);
    snprintf(path, sizeof path, "%s-shm", dbpath);
    CU_ASSERT_EQUAL(file_mode(path), 0600);
    cb_store_close(s);
    CU_ASSERT_EQUAL(chmod(dbpath, 0640), 0);
    s = open_store();
    CU_ASSERT_PTR_NOT_NULL(s);
    if (s)
        cb_store_close(s);
    CU_ASSERT_EQUAL(file_mode(dbpath), 0640);
    umask(old);
    teardown();
}

/* /metrics and the soak tell the writer's page cache from a leak: the
 * writer reports the cache's size, which fills up to storage.cache_size
 * (1 MiB here) and no further however many rows go through. */
static void test_page_cache_reported(void)
{
    setup();
    struct cb_store *s = open_store();
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    char topic[32];
    for (int round = 0; round < 4; round++) {
        for (int i = 0; i < 20000; i++) {
            snprintf(topic, sizeof topic, "city/s%03d", i % 400);
            put(s, topic, "v", 1000 + round * 1000 + i / 400, i, 0);
        }
        CU_ASSERT_EQUAL(cb_store_flush(s), 0);
    }
    struct cb_store_stats st;
    cb_store_get_stats(s, &st);
    CU_ASSERT(st.cache_bytes > 256 * 1024);
    CU_ASSERT(st.cache_bytes <= (uint64_t)cfg.storage_cache_size * 5 / 4); /* page headers */
    cb_store_close(s);
    teardown();
}

static void test_migration(void)
{
    setup();
    char err[512] = "";
    struct cb_store *s = storage__open(&cfg, NULL, 1, err, sizeof err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    put(s, "city/d01/river/s1", "level", 1000, 2.5, 7);
    CU_ASSERT_EQUAL(cb_store_flush(s), 0);
    cb_store_close(s);
    CU_ASSERT_EQUAL(count_rows("PRAGMA user_version"), 1);
    CU_ASSERT_EQUAL(count_rows("SELECT count(*) FROM sqlite_master WHERE name = 'outbox'"), 0);
    /* a reader refuses the old version with advice */
    struct cb_store_reader *r = cb_store_reader_open(dbpath, err, sizeof err);
    CU_ASSERT_PTR_NULL(r);
    CU_ASSERT(strstr(err, "schema version 1") != NULL);
    s = open_store();
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    CU_ASSERT_EQUAL(cb_store_committed_journal_pos(s), 7);
    cb_store_close(s);
    CU_ASSERT_EQUAL(count_rows("PRAGMA user_version"), STORAGE_SCHEMA_VERSION);
    CU_ASSERT_EQUAL(count_rows("SELECT count(*) FROM sqlite_master WHERE name = 'outbox'"), 1);
    CU_ASSERT_EQUAL(count_rows("SELECT count(*) FROM sqlite_master WHERE name = 'audit_log'"), 1);
    CU_ASSERT_EQUAL(count_rows("SELECT count(*) FROM samples WHERE ts = 1000 AND value = 2.5"), 1);
    teardown();
}

static void test_foreign_and_newer(void)
{
    setup();
    char err[512] = "";
    FILE *f = fopen(dbpath, "w");
    fputs("this is somebody's notes file, not a database, and it is long enough to matter\n"
          "0123456789012345678901234567890123456789012345678901234567890123456789\n",
          f);
    fclose(f);
    CU_ASSERT_PTR_NULL(cb_store_open(&cfg, NULL, err, sizeof err));
    CU_ASSERT(strstr(err, "not a SQLite database") != NULL);
    f = fopen(dbpath, "r");
    char line[128];
    CU_ASSERT_PTR_NOT_NULL(fgets(line, sizeof line, f));
    fclose(f);
    CU_ASSERT(strncmp(line, "this is somebody's", 18) == 0); /* untouched */
    unlink(dbpath);

    sqlite3 *db = raw_db();
    sqlite3_exec(db, "CREATE TABLE invoices(id INTEGER PRIMARY KEY, amount REAL)", NULL, NULL,
                 NULL);
    sqlite3_close(db);
    CU_ASSERT_PTR_NULL(cb_store_open(&cfg, NULL, err, sizeof err));
    CU_ASSERT(strstr(err, "another application") != NULL);
    CU_ASSERT_EQUAL(count_rows("SELECT count(*) FROM sqlite_master"), 1);
    unlink(dbpath);

    struct cb_store *s = open_store();
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    cb_store_close(s);
    db = raw_db();
    sqlite3_exec(db, "PRAGMA user_version = 99", NULL, NULL, NULL);
    sqlite3_close(db);
    CU_ASSERT_PTR_NULL(cb_store_open(&cfg, NULL, err, sizeof err));
    CU_ASSERT(strstr(err, "schema version 99 is newer") != NULL);
    CU_ASSERT_PTR_NULL(cb_store_reader_open(dbpath, err, sizeof err));
    CU_ASSERT(strstr(err, "newer") != NULL);
    CU_ASSERT_PTR_NULL(cb_store_open_connection(dbpath, err, sizeof err));
    teardown();
}

/* ---- writes ------------------------------------------------------------------- */

static void test_idempotent(void)
{
    setup();
    struct cb_store *s = open_store();
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    struct cb_sample msg[2] = {{"level", 60000, 3.1}, {"flow", 60000, 41.5}};
    CU_ASSERT_EQUAL(cb_store_append(s, "city/d07/river/s12", NULL, msg, 2, 1), 0);
    CU_ASSERT_EQUAL(cb_store_append(s, "city/d07/river/s12", NULL, msg, 2, 2), 0); /* same batch */
    CU_ASSERT_EQUAL(cb_store_flush(s), 0);
    CU_ASSERT_EQUAL(cb_store_append(s, "city/d07/river/s12", NULL, msg, 2, 3), 0); /* later */
    CU_ASSERT_EQUAL(cb_store_flush(s), 0);
    struct cb_store_stats st;
    cb_store_get_stats(s, &st);
    CU_ASSERT_EQUAL(st.rows_written, 2);
    CU_ASSERT_EQUAL(st.rows_duplicate, 4);
    CU_ASSERT_EQUAL(st.committed_journal_pos, 3);
    CU_ASSERT_EQUAL(st.health, CB_STORE_OK);
    cb_store_close(s);
    CU_ASSERT_EQUAL(count_rows("SELECT count(*) FROM samples"), 2);
    CU_ASSERT_EQUAL(count_rows("SELECT sum(count) FROM rollup_1m"), 2);
    CU_ASSERT_EQUAL(count_rows("SELECT sum(count) FROM rollup_1h"), 2);
    CU_ASSERT_EQUAL(count_rows("SELECT count(*) FROM sensors"), 1);
    CU_ASSERT_EQUAL(count_rows("SELECT journal_pos FROM ingest_state"), 3);
    teardown();
}

static uint64_t rng = 88172645463325252ULL;
static uint64_t next_rand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

/* Compares a rollup table, below `below`, with aggregates computed from the
 * raw samples. */
static int64_t rollup_mismatches_below(sqlite3 *db, const char *table, int64_t width,
                                       int64_t below)
{
    char sql[1600];
    snprintf(sql, sizeof sql,
             "WITH raw AS (SELECT series_id, (ts - (((ts %% %lld) + %lld) %% %lld)) AS b, ts, "
             "value FROM samples WHERE b < %lld), rt AS (SELECT * FROM %s WHERE bucket < %lld), "
             "agg AS (SELECT series_id, b, count(*) AS n, sum(value) AS s, "
             "min(value) AS mn, max(value) AS mx, min(ts) AS fts, max(ts) AS lts FROM raw GROUP "
             "BY series_id, b) "
             "SELECT (SELECT count(*) FROM agg) - (SELECT count(*) FROM rt) + "
             "(SELECT count(*) FROM agg a JOIN rt r ON r.series_id = a.series_id AND r.bucket = "
             "a.b WHERE r.count != a.n OR abs(r.sum - a.s) > 1e-6 OR r.min != a.mn OR r.max != "
             "a.mx OR r.first_ts != a.fts OR r.last_ts != a.lts OR r.first != (SELECT value "
             "FROM samples WHERE series_id = a.series_id AND ts = a.fts) OR r.last != (SELECT "
             "value FROM samples WHERE series_id = a.series_id AND ts = a.lts))",
             (long long)width, (long long)width, (long long)width, (long long)below, table,
             (long long)below);
    return cb_t_sql_int(db, sql);
}

static int64_t rollup_mismatches(sqlite3 *db, const char *table, int64_t width)
{
    return rollup_mismatches_below(db, table, width, INT64_MAX);
}

/* Both tiers agree with the samples, and `counted` (a tier) counts every one. */
static void assert_rollups_whole(sqlite3 *db, const char *counted)
{
    CU_ASSERT_EQUAL(rollup_mismatches(db, "rollup_1m", 60000), 0);
    CU_ASSERT_EQUAL(rollup_mismatches(db, "rollup_1h", 3600000), 0);
    char sql[64];
    snprintf(sql, sizeof sql, "SELECT sum(count) FROM %s", counted);
    CU_ASSERT_EQUAL(cb_t_sql_int(db, sql), cb_t_sql_int(db, "SELECT count(*) FROM samples"));
}

/* The closed chunks of both tiers (schema 9): `chunks` and the recent tier. */
#define ALL_CHUNKS                                                                              \
    "(SELECT series_id, start_ts, end_ts, n, data FROM chunks UNION ALL "                       \
    "SELECT series_id, start_ts, end_ts, n, data FROM chunks_recent)"

/* Writes the head's blocks again from the rows `sql` selects (seq,
 * series_id, ts, value; on db, sorted or not) as the writer would: one block
 * per seq and group. Returns 0, or -1. */
static int head_blocks_rewrite(sqlite3 *db, const char *sql)
{
    char q[300];
    snprintf(q, sizeof q, "SELECT seq, series_id, ts, value FROM (%s) ORDER BY seq, series_id, ts",
             sql);
    sqlite3_stmt *sel = NULL, *ins = NULL;
    static struct storage_hsample hs[8192];
    static int64_t seqs[8192];
    static uint8_t blob[8192 * 39 + 1];
    size_t n = 0;
    int rc = -1;
    if (sqlite3_prepare_v2(db, q, -1, &sel, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db, "INSERT INTO main.head_blocks(seq, grp, data) VALUES (?1, ?2, ?3)",
                           -1, &ins, NULL) != SQLITE_OK)
        goto out;
    while (n < 8192 && sqlite3_step(sel) == SQLITE_ROW) {
        seqs[n] = sqlite3_column_int64(sel, 0);
        hs[n++] = (struct storage_hsample){sqlite3_column_int64(sel, 1),
                                           sqlite3_column_int64(sel, 2),
                                           sqlite3_column_double(sel, 3)};
    }
    if (n == 8192 || sqlite3_exec(db, "DELETE FROM main.head_blocks", NULL, NULL, NULL) != SQLITE_OK)
        goto out;
    for (size_t a = 0; a < n;) {
        int64_t grp = hs[a].series / STORAGE_HEAD_GROUP;
        size_t b = a + 1;
        while (b < n && seqs[b] == seqs[a] && hs[b].series / STORAGE_HEAD_GROUP == grp)
            b++;
        long len = storage__hblock_encode(hs + a, b - a, grp, blob, sizeof blob);
        if (len < 0)
            goto out;
        sqlite3_bind_int64(ins, 1, seqs[a]);
        sqlite3_bind_int64(ins, 2, grp);
        sqlite3_bind_blob(ins, 3, blob, (int)len, SQLITE_STATIC);
        if (sqlite3_step(ins) != SQLITE_DONE)
            goto out;
        sqlite3_reset(ins);
        a = b;
    }
    rc = 0;
out:
    sqlite3_finalize(sel);
    sqlite3_finalize(ins);
    return rc;
}

/* Deletes every raw sample at or after `from` with a connection of its own,
 * as retention would: head rows and whole chunks, and the chunk that
 * straddles `from` cut and written again. Returns 0, or -1. */
static int delete_samples_from(int64_t from)
{
    sqlite3 *db = raw_db();
    sqlite3_stmt *sel = NULL, *ins = NULL;
    int rc = -1;
    char sql[200];
    snprintf(sql, sizeof sql, "BEGIN IMMEDIATE; DELETE FROM head WHERE ts >= %lld", (long long)from);
    if (sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK ||
        (sqlite3_table_column_metadata(db, "temp", "head", "ts", NULL, NULL, NULL, NULL, NULL) ==
             SQLITE_OK &&
         head_blocks_rewrite(db, "SELECT seq, series_id, ts, value FROM temp.head") < 0))
        goto out;
    /* both tiers of chunks: `chunks`, then the recent tier (seal 0: none) */
    static const char *const del_sql[2] = {
        "DELETE FROM chunks WHERE end_ts >= ?1 RETURNING series_id, data, 0",
        "DELETE FROM chunks_recent WHERE end_ts >= ?1 RETURNING series_id, data, seal"};
    static const char *const ins_sql[2] = {
        "INSERT INTO chunks(series_id, start_ts, end_ts, n, data) VALUES (?1, ?2, ?3, ?4, ?5)",
        "INSERT INTO chunks_recent(series_id, start_ts, end_ts, n, data, seal) "
        "VALUES (?1, ?2, ?3, ?4, ?5, ?6)"};
    for (int tier = 0; tier < 2; tier++) {
        sqlite3_finalize(sel);
        sqlite3_finalize(ins);
        sel = ins = NULL;
        if (sqlite3_prepare_v2(db, del_sql[tier], -1, &sel, NULL) != SQLITE_OK ||
            sqlite3_prepare_v2(db, ins_sql[tier], -1, &ins, NULL) != SQLITE_OK)
            goto out;
        static struct cb_chunk_point pts[4096];
        static uint8_t blob[4096 * 16 + 32];
        static struct { int64_t series, seal; long n; struct cb_chunk_point p[512]; } keep[64];
        size_t nkeep = 0;
        sqlite3_bind_int64(sel, 1, from);
        while (sqlite3_step(sel) == SQLITE_ROW) {
            long n = cb_chunk_decode(sqlite3_column_blob(sel, 1),
                                     (size_t)sqlite3_column_bytes(sel, 1), pts, 4096);
            long k = 0;
            while (k < n && pts[k].ts_ms < from)
                k++;
            if (n < 0 || k > 512 || nkeep == 64)
                goto out;
            if (k > 0) {
                keep[nkeep].series = sqlite3_column_int64(sel, 0);
                keep[nkeep].seal = sqlite3_column_int64(sel, 2);
                keep[nkeep].n = k;
                memcpy(keep[nkeep++].p, pts, (size_t)k * sizeof *pts);
            }
        }
        sqlite3_reset(sel);
        for (size_t i = 0; i < nkeep; i++) {
            long len =
                cb_chunk_encode(keep[i].p, (size_t)keep[i].n, CB_CHUNK_AUTO, blob, sizeof blob);
            if (len <= 0)
                goto out;
            sqlite3_bind_int64(ins, 1, keep[i].series);
            sqlite3_bind_int64(ins, 2, keep[i].p[0].ts_ms);
            sqlite3_bind_int64(ins, 3, keep[i].p[keep[i].n - 1].ts_ms);
            sqlite3_bind_int64(ins, 4, keep[i].n);
            sqlite3_bind_blob(ins, 5, blob, (int)len, SQLITE_STATIC);
            if (tier)
                sqlite3_bind_int64(ins, 6, keep[i].seal);
            if (sqlite3_step(ins) != SQLITE_DONE)
                goto out;
            sqlite3_reset(ins);
        }
    }
    rc = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) == SQLITE_OK ? 0 : -1;
out:
    if (rc < 0)
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    sqlite3_finalize(sel);
    sqlite3_finalize(ins);
    sqlite3_close(db);
    return rc;
}

/* Rows newer than what the writer knows of their series go in multi-row
 * INSERTs into the head. The head's key is the commit's seq, not (series,
 * ts) (a unique index there would cost the random writes the head avoids),
 * so a row another connection slipped in meanwhile is not seen by the
 * commit: readers and the seal keep one sample per (series, ts). */
static void test_chunked_inserts(void)
{
    setup();
    struct cb_store *s = open_store();
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    for (int i = 0; i < 1000; i++) /* 15 whole chunks and a tail */
        put(s, i % 2 ? "city/a" : "city/b", "v", 1000 + i / 2, i, 0);
    CU_ASSERT_EQUAL(cb_store_flush(s), 0);
    /* a sample of every series at 5000 in the head, as if another writer
     * had put it there: blocks of seq 1 */
    sqlite3 *db = raw_db();
    CU_ASSERT_EQUAL(sqlite3_exec(db, "BEGIN IMMEDIATE; INSERT INTO temp.head "
                                     "SELECT 1, id, 5000, 1 FROM series", NULL, NULL, NULL),
                    SQLITE_OK);
    CU_ASSERT_EQUAL(head_blocks_rewrite(db, "SELECT * FROM temp.head"), 0);
    CU_ASSERT_EQUAL(sqlite3_exec(db, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    for (int i = 0; i < 200; i++)
        put(s, "city/a", "v", 4901 + i, i, 0); /* 5000 is among them */
    int rc = cb_store_flush(s);
    if (rc != 0)
        rc = cb_store_flush(s); /* the retry */
    CU_ASSERT_EQUAL(rc, 0);
    struct cb_store_stats st;
    cb_store_get_stats(s, &st);
    CU_ASSERT_EQUAL(st.rows_written, 1000 + 200);
    CU_ASSERT_EQUAL(st.rows_duplicate, 0);
    CU_ASSERT_EQUAL(count_rows("SELECT count(*) FROM samples"), 1000 + 2 + 199);
    CU_ASSERT_EQUAL(storage__seal(s), SQLITE_OK);
    cb_store_close(s);
    CU_ASSERT_EQUAL(count_rows("SELECT count(*) FROM samples"), 1000 + 2 + 199);
    CU_ASSERT_EQUAL(count_rows("SELECT count(*) FROM head"), 0);
    CU_ASSERT_EQUAL(count_rows("SELECT sum(n) FROM " ALL_CHUNKS), 1000 + 2 + 199);
    teardown();
}

static void test_rollups_property(void)
{
    setup();
    struct cb_store *s = open_store();
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    const char *topics[] = {"city/a", "city/b", "city/c"};
    const char *metrics[] = {"level", "flow"};
    int64_t base = 1732400000000LL;
    for (int round = 0; round < 6; round++) {
        for (int i = 0; i < 700; i++) {
            /* random times over 3 hours (also before earlier rounds: late
             * samples), some exact repeats, some negative values */
            uint64_t r = next_rand();
            int64_t ts = base + (int64_t)(r % (3 * 3600)) * 1000 - 1800000;
            double v = (double)(int64_t)(next_rand() % 20001 - 10000) / 100.0;
            put(s, topics[r % 3], metrics[(r >> 8) % 2], ts, v, 0);
            if (r % 50 == 0)
                put(s, topics[r % 3], metrics[(r >> 8) % 2], ts, v + 1, 0); /* redelivery */
        }
        CU_ASSERT_EQUAL(cb_store_flush(s), 0);
    }
    cb_store_close(s);
    sqlite3 *db = raw_db();
    CU_ASSERT(cb_t_sql_int(db, "SELECT count(*) FROM samples") > 3000);
    CU_ASSERT_EQUAL(rollup_mismatches(db, "rollup_1m", 60000), 0);
    CU_ASSERT_EQUAL(rollup_mismatches(db, "rollup_1h", 3600000), 0);
    sqlite3_close(db);
    teardown();
}

/* Many rows per bucket in one batch (one merge per bucket and commit), more
 * into the same buckets in later batches, after a restart (the writer no
 * longer knows which buckets exist), into an older bucket (late), and into a
 * bucket whose rows were deleted meanwhile (the writer believes it exists):
 * the rollups still equal the aggregates of the raw samples. */
static void test_rollups_dense_batches(void)
{
    setup();
    struct cb_store *s = open_store();
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    int64_t base = 1732399200000LL; /* an hour boundary */
    const char *topics[] = {"city/a", "city/b"};
    for (int round = 0; round < 3; round++) {
        /* 10 minutes, 90 rows per minute and series, in shuffled order */
        for (int i = 0; i < 1800; i++) {
            uint64_t r = next_rand();
            int64_t ts = base + (int64_t)(r % 600000) + round * 300000;
            put(s, topics[i % 2], "level", ts, (double)(int64_t)(r % 1000) - 500.0, 0);
        }
        CU_ASSERT_EQUAL(cb_store_flush(s), 0);
    }
    cb_store_close(s);
    sqlite3 *db = raw_db();
    CU_ASSERT_EQUAL(rollup_mismatches(db, "rollup_1m", 60000), 0);
    CU_ASSERT_EQUAL(rollup_mismatches(db, "rollup_1h", 3600000), 0);
    CU_ASSERT(cb_t_sql_int(db, "SELECT max(count) FROM rollup_1m") > 50);
    sqlite3_close(db);

    s = open_store(); /* a restart: existing buckets are merged into, not duplicated */
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    for (int i = 0; i < 400; i++)
        put(s, topics[i % 2], "level", base + 600000 + (int64_t)(next_rand() % 600000), i, 0);
    CU_ASSERT_EQUAL(cb_store_flush(s), 0);
    for (int i = 0; i < 200; i++) /* late: the first minutes again */
        put(s, topics[i % 2], "level", base + (int64_t)(next_rand() % 120000), -i, 0);
    CU_ASSERT_EQUAL(cb_store_flush(s), 0);
    /* The newest minute of city/a disappears (as if by retention); new rows
     * for it must create the rollup row again. */
    int64_t last_min = base + 1140000;
    char sql[400];
    CU_ASSERT_EQUAL(delete_samples_from(last_min), 0);
    snprintf(sql, sizeof sql, "DELETE FROM rollup_1m WHERE bucket >= %lld; DELETE FROM rollup_1h",
             (long long)last_min);
    CU_ASSERT_EQUAL(storage__writer_exec(s, sql), SQLITE_OK);
    /* rebuild the 1h tier from what is left, as a retention-free reference */
    CU_ASSERT_EQUAL(storage__writer_exec(
                        s, "INSERT INTO rollup_1h SELECT series_id, bucket - bucket % 3600000, "
                           "sum(count), sum(sum), min(min), max(max), 0, min(first_ts), 0, "
                           "max(last_ts) FROM rollup_1m GROUP BY series_id, "
                           "bucket - bucket % 3600000; "
                           "UPDATE rollup_1h SET first = (SELECT value FROM samples WHERE "
                           "series_id = rollup_1h.series_id AND ts = rollup_1h.first_ts), "
                           "last = (SELECT value FROM samples WHERE series_id = "
                           "rollup_1h.series_id AND ts = rollup_1h.last_ts)"),
                    SQLITE_OK);
    for (int i = 0; i < 100; i++)
        put(s, topics[i % 2], "level", last_min + (int64_t)(next_rand() % 60000), i * 2, 0);
    CU_ASSERT_EQUAL(cb_store_flush(s), 0);
    cb_store_close(s);
    db = raw_db();
    assert_rollups_whole(db, "rollup_1m");
    sqlite3_close(db);
    teardown();
}

/* Waits (up to 10 s) until the writer has derived 1m below `m` and 1h below
 * `h`; returns the stats then. */
static struct cb_store_stats wait_derived(struct cb_store *s, int64_t m, int64_t h)
{
    struct cb_store_stats st;
    for (int i = 0; i < 1000; i++) {
        cb_store_get_stats(s, &st);
        if (st.derived_1m >= m && st.derived_1h >= h)
            break;
        struct timespec ts = {0, 10000000};
        nanosleep(&ts, NULL);
    }
    return st;
}

struct sum_ctx {
    int64_t count;
    double sum;
};
static int on_sum(void *ctx, const char *topic, const char *metric, const struct cb_bucket *b)
{
    struct sum_ctx *c = ctx;
    (void)topic;
    (void)metric;
    c->count += (int64_t)b->count;
    c->sum += b->sum;
    return 0;
}

/* Counts the rows a tier query hands over. */
static int count_tier_row(void *ctx, const struct cb_tier_row *row)
{
    (void)row;
    ++*(int *)ctx;
    return 0;
}

/* Rollups are derived once their bucket has closed, not merged per commit:
 * the tier holds nothing at or after its derivation point, queries fill that
 * part from the source, and late samples, derivation passes in small steps
 * (step_rows 10: many steps, commits in between), a reopen and the final
 * close all keep both tiers equal to the aggregates of the raw samples. */
static void test_rollups_derived(void)
{
    setup();
    cfg.storage_retention_step_rows = 10;
    cfg.storage_commit_interval_ms = 10;
    int64_t base = 1732399200000LL; /* an hour boundary */
    int64_t now = base + 30 * 60000 + 20000;
    struct cb_store *s = open_store();
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    struct cb_clock clk = {cb_clock_manual_now, &now};
    cb_store_set_clock(s, &clk);
    char topic[32];
    /* 12 series, every 10 s over the last 30 minutes and 20 seconds */
    for (int64_t ts = base; ts < now; ts += 10000)
        for (int k = 0; k < 12; k++) {
            snprintf(topic, sizeof topic, "city/s%02d", k);
            put(s, topic, "v", ts, (double)(ts / 10000 % 37) + k, 0);
        }
    CU_ASSERT_EQUAL(cb_store_flush(s), 0);
    int64_t m_target = storage__bucket(now - 5000 - 10, 60000); /* grace + commit interval */
    struct cb_store_stats st = wait_derived(s, m_target, base);
    CU_ASSERT_EQUAL(st.derived_1m, m_target);
    CU_ASSERT_EQUAL(st.derived_1h, base); /* the hour is still open */
    CU_ASSERT(st.derive_steps > 10);
    sqlite3 *db = raw_db();
    char sql[200];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM rollup_1m WHERE bucket >= %lld",
             (long long)m_target);
    CU_ASSERT_EQUAL(cb_t_sql_int(db, sql), 0);
    CU_ASSERT_EQUAL(cb_t_sql_int(db, "SELECT count(*) FROM rollup_1h"), 0);
    CU_ASSERT_EQUAL(rollup_mismatches_below(db, "rollup_1m", 60000, m_target), 0);
    sqlite3_close(db);
    /* a query over the open part still counts every sample */
    char err[512];
    struct cb_store_reader *r = cb_store_reader_open(dbpath, err, sizeof err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    struct sum_ctx c1 = {0}, c2 = {0};
    CU_ASSERT_EQUAL(cb_store_query_buckets(r, "city/s03", "v", base, now + 60000, 300000,
                                           on_sum, &c1), 0);
    CU_ASSERT_EQUAL(c1.count, (now - base) / 10000);
    CU_ASSERT_EQUAL(cb_store_query_buckets(r, "city/s03", "v", base, base + 3600000, 3600000,
                                           on_sum, &c2), 0);
    CU_ASSERT_EQUAL(c2.count, c1.count);
    CU_ASSERT_DOUBLE_EQUAL(c2.sum, c1.sum, 1e-6);
    struct cb_bucket agg;
    /* a series that is not there answers empty, and the reader goes on answering */
    int none_rows = 0;
    CU_ASSERT_EQUAL(cb_store_query_aggregate(r, "city/none", "v", base, now, &agg), 0);
    CU_ASSERT_EQUAL(agg.count, 0);
    CU_ASSERT_EQUAL(cb_store_query_rows(r, "city/none", "v", base, now, count_tier_row, &none_rows,
                                        NULL),
                    0);
    CU_ASSERT_EQUAL(none_rows, 0);
    CU_ASSERT_EQUAL(cb_store_query_aggregate(r, "city/s03", "v", base, now + 120000, &agg), 0);
    CU_ASSERT_EQUAL((int64_t)agg.count, c1.count);
    /* time goes on in minutes; each round brings current and late samples
     * (into derived minutes, some of them into a pass that is running) */
    for (int round = 0; round < 40; round++) {
        now += 60000;
        for (int i = 0; i < 30; i++) {
            uint64_t x = next_rand();
            int64_t ts = now - (int64_t)(x % 5) * 1000 - (x % 7 == 0 ? (int64_t)(x % 3000) * 1000 : 0);
            snprintf(topic, sizeof topic, "city/s%02d", (int)(x % 12));
            put(s, topic, "v", ts, (double)(int64_t)(x % 1000) - 500.0, 0);
        }
        CU_ASSERT_EQUAL(cb_store_flush(s), 0);
        if (round == 20) { /* a query in the middle agrees with raw */
            struct sum_ctx a = {0}, b = {0};
            CU_ASSERT_EQUAL(cb_store_query_buckets(r, "city/s05", "v", base - 3600000,
                                                   now + 3600000, 3600000, on_sum, &a), 0);
            CU_ASSERT_EQUAL(cb_store_query_buckets(r, "city/s05", "v", base - 3600000,
                                                   now + 3600000, 1000, on_sum, &b), 0);
            CU_ASSERT_EQUAL(a.count, b.count);
            CU_ASSERT_DOUBLE_EQUAL(a.sum, b.sum, 1e-6);
        }
    }
    st = wait_derived(s, storage__bucket(now - 5010, 60000), storage__bucket(now - 5010, 3600000));
    CU_ASSERT(st.derived_1h >= base + 3600000);
    cb_store_close(s); /* derives the rest */
    s = open_store();  /* and a reopen takes the state back */
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    cb_store_get_stats(s, &st);
    CU_ASSERT(st.derived_1m > now);
    put(s, "city/s01", "v", base + 1000, 1234.5, 0); /* late, into derived buckets */
    CU_ASSERT_EQUAL(cb_store_flush(s), 0);
    cb_store_close(s);
    db = raw_db();
    assert_rollups_whole(db, "rollup_1h");
    sqlite3_close(db);
    cb_store_reader_close(r);
    teardown();
}

/* The 1-minute derivation runs, once it has derived anything, in passes that
 * end on a closed hour (STORAGE_DERIVE_BATCH_MS), so a pass writes sixty
 * rows per series that lie together on the series' newest pages: 59 closed
 * minutes wait; at 61, the pass derives up to the hour, not the newest
 * closed minute, and the 1-hour pass follows; queries count every sample
 * meanwhile. A retention step is served by the writer only when no
 * derivation is due, so it tells that none was. */
static void test_rollups_batched(void)
{
    setup();
    cfg.storage_commit_interval_ms = 10;
    int64_t base = 1732399200000LL; /* an hour boundary */
    int64_t now = base + 30000;
    struct cb_store *s = open_store();
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    struct cb_clock clk = {cb_clock_manual_now, &now};
    cb_store_set_clock(s, &clk);
    int64_t ts = base - 20 * 60000;
    char topic[32];
    /* puts 3 series every 10 s up to the clock, commits, and waits for a
     * derivation to `m` (none when m is 0: a retention step instead) */
    for (int phase = 0; phase < 3; phase++) {
        for (; ts < now; ts += 10000)
            for (int k = 0; k < 3; k++) {
                snprintf(topic, sizeof topic, "city/b%d", k);
                put(s, topic, "v", ts, (double)(ts / 10000 % 11) + k, 0);
            }
        CU_ASSERT_EQUAL(cb_store_flush(s), 0);
        struct cb_store_stats st;
        if (phase == 1) {
            uint64_t deleted;
            int more = 1;
            while (more)
                CU_ASSERT_EQUAL_FATAL(cb_store_retention_step(s, &deleted, &more), 0);
            cb_store_get_stats(s, &st);
            CU_ASSERT_EQUAL(st.derived_1m, base); /* 59 closed minutes wait */
            char err[512];
            struct cb_store_reader *r = cb_store_reader_open(dbpath, err, sizeof err);
            CU_ASSERT_PTR_NOT_NULL_FATAL(r);
            struct sum_ctx c = {0};
            CU_ASSERT_EQUAL(cb_store_query_buckets(r, "city/b1", "v", base - 3600000, now,
                                                   60000, on_sum, &c), 0);
            CU_ASSERT_EQUAL(c.count, (now - (base - 20 * 60000)) / 10000);
            cb_store_reader_close(r);
            now = base + 61 * 60000 + 30000; /* 61 closed minutes */
        } else {
            /* the first pass at once, to the newest closed minute; then to
             * the hour, and the 1-hour tier with it */
            int64_t m = phase == 0 ? storage__bucket(now - 5010, 60000) : base + 3600000;
            st = wait_derived(s, m, phase == 0 ? 0 : m);
            CU_ASSERT_EQUAL(st.derived_1m, m);
            if (phase == 2)
                CU_ASSERT_EQUAL(st.derived_1h, m);
            now = base + 59 * 60000 + 30000; /* (phase 0) 59 minutes later */
        }
    }
    cb_store_close(s);
    sqlite3 *db = raw_db();
    assert_rollups_whole(db, "rollup_1m");
    sqlite3_close(db);
    teardown();
}

/* Runs retention steps until the pass is done: the writer serves one only
 * when no derivation step and no compaction slice is due, so afterwards
 * every pass due at the store's clock has run. */
static void until_idle(struct cb_store *s)
{
    uint64_t deleted;
    int more = 1;
    while (more)
        CU_ASSERT_EQUAL_FATAL(cb_store_retention_step(s, &deleted, &more), 0);
}

/* 100 series with three hours of 1-minute rows each (about three pages a
 * series), then an hour of new samples, sealed and compacted; the WAL is
 * emptied and the clock moved minute by minute through the hour, so what
 * the WAL holds afterwards is the rollup passes' transactions: the
 * 1-minute tier's pass at the closed hour writes the sixty new rows of each
 * series on its newest page (split: two or three pages), the 1-hour pass
 * its row, at most four pages a series for the hour; passes every ten
 * minutes wrote 12.8 a series, every thirty 5.3. */
static void test_rollup_pass_pages(void)
{
    enum { N = 100, EVERY_S = 20 };
    setup();
    struct cb_store *s = open_store();
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    int64_t base = 1732399200000LL; /* an hour boundary */
    int64_t now = base + 70000;     /* the minute before base closed: grace and a commit */
    struct cb_clock clk = {cb_clock_manual_now, &now};
    cb_store_set_clock(s, &clk);
    char topic[32];
    for (int64_t ts = base - 3 * STORAGE_HOUR_MS; ts < base + STORAGE_HOUR_MS;
         ts += EVERY_S * 1000) {
        for (int k = 0; k < N; k++) {
            snprintf(topic, sizeof topic, "city/p%03d", k);
            put(s, topic, "v", ts, (double)(ts / 1000 % 97) + k, 0);
        }
        if (ts == base - EVERY_S * 1000) { /* the history, derived at once */
            CU_ASSERT_EQUAL(cb_store_flush(s), 0);
            struct cb_store_stats st = wait_derived(s, base, base);
            CU_ASSERT_EQUAL_FATAL(st.derived_1m, base);
        }
    }
    CU_ASSERT_EQUAL(cb_store_flush(s), 0);
    CU_ASSERT_EQUAL(storage__seal(s), SQLITE_OK);
    CU_ASSERT_EQUAL(storage__compact(s), SQLITE_OK);
    CU_ASSERT_EQUAL(count_rows("SELECT count(*) FROM rollup_1m"), N * 180);
    int64_t page = count_rows("PRAGMA page_size");
    CU_ASSERT_EQUAL(storage__writer_exec(s, "PRAGMA wal_checkpoint(TRUNCATE)"), SQLITE_OK);
    for (int m = 1; m <= 61; m++) {
        now = base + m * STORAGE_MINUTE_MS + 70000;
        until_idle(s);
    }
    struct cb_store_stats st;
    cb_store_get_stats(s, &st);
    CU_ASSERT_EQUAL(st.derived_1m, base + STORAGE_HOUR_MS);
    CU_ASSERT_EQUAL(st.derived_1h, base + STORAGE_HOUR_MS);
    char path[160];
    struct stat fst;
    snprintf(path, sizeof path, "%s-wal", dbpath);
    CU_ASSERT_EQUAL_FATAL(stat(path, &fst), 0);
    int64_t frames = fst.st_size > 32 ? (fst.st_size - 32) / (24 + page) : 0;
    fprintf(stderr, "[an hour of rollup passes, %d series: %lld WAL frames] ", N,
            (long long)frames);
    CU_ASSERT(frames > 0);
    CU_ASSERT(frames <= 4 * N);
    cb_store_close(s);
    sqlite3 *db = raw_db();
    assert_rollups_whole(db, "rollup_1h");
    sqlite3_close(db);
    teardown();
}

/* What the readers answer for series city/r00..r11 over [base - 1 h,
 * base + 3 h): buckets of 30 s, 1 min, 10 min and 1 h, aggregates, and the
 * tier rows summed, as numbers in *out (n of them). */
struct answers {
    double v[65536];
    size_t n;
};
static void answer(struct answers *a, double x)
{
    if (a->n < sizeof a->v / sizeof a->v[0])
        a->v[a->n++] = x;
}
static int on_answer_bucket(void *ctx, const char *topic, const char *metric,
                            const struct cb_bucket *b)
{
    (void)topic;
    (void)metric;
    struct answers *a = ctx;
    double x[] = {(double)b->ts, (double)b->count, b->min, b->max, b->sum, b->last,
                  (double)b->span_ms};
    for (size_t i = 0; i < sizeof x / sizeof x[0]; i++)
        answer(a, x[i]);
    return 0;
}
static int on_answer_row(void *ctx, const struct cb_tier_row *row)
{
    double *t = ctx; /* count, sum, min, max */
    t[0] += (double)row->count;
    t[1] += row->sum;
    t[2] = row->min < t[2] ? row->min : t[2];
    t[3] = row->max > t[3] ? row->max : t[3];
    return 0;
}
static void read_answers(int64_t base, struct answers *a)
{
    char err[512], topic[32];
    a->n = 0;
    struct cb_store_reader *r = cb_store_reader_open(dbpath, err, sizeof err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    static const int64_t steps[] = {30000, 60000, 600000, 3600000};
    for (int k = 0; k < 12; k++) {
        snprintf(topic, sizeof topic, "city/r%02d", k);
        for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++)
            CU_ASSERT_EQUAL(cb_store_query_buckets(r, topic, "v", base - 3600000, base + 10800000,
                                                   steps[i], on_answer_bucket, a),
                            0);
        struct cb_bucket g = {0};
        CU_ASSERT_EQUAL(cb_store_query_aggregate(r, topic, "v", base + 90000, base + 7170000, &g),
                        0);
        on_answer_bucket(a, topic, "v", &g);
        double t[4] = {0, 0, INFINITY, -INFINITY};
        CU_ASSERT_EQUAL(cb_store_query_rows(r, topic, "v", base - 3600000, base + 10800000,
                                            on_answer_row, t, NULL),
                        0);
        for (int i = 0; i < 4; i++)
            answer(a, t[i]);
    }
    CU_ASSERT(a->n < sizeof a->v / sizeof a->v[0]);
    cb_store_reader_close(r);
}

/* Opens the store in a child process with the clock at `now`, puts the
 * samples of [from, to) of city/r00..r11 (every 10 s, whole numbers, so
 * that every tier's sums are exact) and `extra` (a sample of city/other
 * at `now`, so that this run commits something), then dies: once the
 * file's first rollup pass is done, or (`mid_pass`) once a rollup pass has
 * committed a few steps. */
static void child_writes(int64_t now, int64_t from, int64_t to, int mid_pass)
{
    pid_t pid = fork();
    CU_ASSERT_FATAL(pid >= 0);
    if (pid == 0) {
        cfg.storage_retention_step_rows = 10; /* derivation steps of 80 rows */
        cfg.storage_commit_interval_ms = 10;
        char err[512] = "", topic[32];
        struct cb_store *s = cb_store_open(&cfg, NULL, err, sizeof err);
        if (!s)
            _exit(1);
        struct cb_clock clk = {cb_clock_manual_now, &now};
        cb_store_set_clock(s, &clk);
        for (int k = 0; k < 12; k++) {
            snprintf(topic, sizeof topic, "city/r%02d", k);
            for (int64_t ts = from; ts < to; ts += 10000)
                put(s, topic, "v", ts, (double)(ts / 10000 % 41) + k, 0);
        }
        put(s, "city/other", "v", now, 1, 0);
        if (cb_store_flush(s) != 0)
            _exit(2);
        struct cb_store_stats st;
        for (int i = 0; i < 50000; i++) {
            cb_store_get_stats(s, &st);
            /* mid-pass: a few steps in; else once the file's first pass
             * (up to the clock, before the samples) is done */
            if (mid_pass ? st.derive_steps > 3 : st.derived_1m > STORAGE_DERIVE_NONE)
                _exit(0);
            struct timespec ts = {0, 200000};
            nanosleep(&ts, NULL);
        }
        _exit(3);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    CU_ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

static void assert_answers(int64_t base, const struct answers *a)
{
    struct answers *b = calloc(1, sizeof *b);
    read_answers(base, b);
    CU_ASSERT_EQUAL(b->n, a->n);
    CU_ASSERT(b->n == a->n && memcmp(b->v, a->v, a->n * sizeof a->v[0]) == 0);
    free(b);
}

/* The readers answer exactly the same (buckets of every step, aggregates,
 * tier rows) over two hours of samples with nothing derived, after a
 * writer died in the middle of the pass that derives them, while the
 * restarted writer resumes it and once it is done, and after its close. */
static void test_rollup_pass_readers_same(void)
{
    setup();
    int64_t base = 1732399200000LL; /* an hour boundary */
    /* a first run writes two hours ahead of its clock and dies: nothing of
     * them derived */
    child_writes(base - 7200000, base, base + 7200000, 0);
    struct answers *a = calloc(1, sizeof *a);
    read_answers(base, a);
    CU_ASSERT(a->n > 12 * 400);
    /* a second run, the clock past them: its pass of the two hours, cut
     * short */
    int64_t now = base + 7200000 + 70000;
    child_writes(now, base, base, 1);
    sqlite3 *db = raw_db();
    CU_ASSERT(cb_t_sql_int(db, "SELECT value FROM meta WHERE key = 'derive_1m_to'") >
              cb_t_sql_int(db, "SELECT value FROM meta WHERE key = 'derive_1m_done'"));
    CU_ASSERT(cb_t_sql_int(db, "SELECT count(*) FROM rollup_1m WHERE bucket >= 1732399200000") > 0);
    sqlite3_close(db);
    assert_answers(base, a);
    /* the restart resumes the pass */
    struct cb_store *s = open_store();
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    struct cb_clock clk = {cb_clock_manual_now, &now};
    cb_store_set_clock(s, &clk);
    put(s, "city/other", "v", now + 1000, 2, 0); /* a commit: the 1-hour pass may start */
    CU_ASSERT_EQUAL(cb_store_flush(s), 0);
    struct cb_store_stats st = wait_derived(s, base + 7200000, base + 7200000);
    CU_ASSERT_EQUAL(st.derived_1m, base + 7200000);
    CU_ASSERT_EQUAL(st.derived_1h, base + 7200000);
    assert_answers(base, a);
    cb_store_close(s);
    assert_answers(base, a);
    db = raw_db();
    assert_rollups_whole(db, "rollup_1h");
    sqlite3_close(db);
    free(a);
    teardown();
}

/* A writer that dies with samples not yet derived (some far ahead of its
 * clock, a pass half done): the next run, which writes only a late sample,
 * derives them all by its close, and the tiers equal the raw aggregates. */
static void test_rollups_after_crash(void)
{
    setup();
    int64_t base = 1732399200000LL;
    pid_t pid = fork();
    CU_ASSERT_FATAL(pid >= 0);
    if (pid == 0) {
        cfg.storage_retention_step_rows = 10;
        cfg.storage_commit_interval_ms = 10;
        char err[512] = "";
        struct cb_store *s = cb_store_open(&cfg, NULL, err, sizeof err);
        if (!s)
            _exit(1);
        int64_t now = base + 30 * 60000 + 20000;
        struct cb_clock clk = {cb_clock_manual_now, &now};
        cb_store_set_clock(s, &clk);
        char topic[32];
        for (int k = 0; k < 12; k++) {
            snprintf(topic, sizeof topic, "city/s%02d", k);
            for (int64_t ts = base; ts < now; ts += 10000)
                put(s, topic, "v", ts, (double)(ts / 10000 % 37) + k, 0);
            put(s, topic, "v", cb_wall_ms() + 86400000LL + k, k, 0); /* a clock a day ahead */
        }
        if (cb_store_flush(s) != 0)
            _exit(2);
        struct cb_store_stats st;
        for (int i = 0; i < 500; i++) { /* into the 1m pass, then die */
            cb_store_get_stats(s, &st);
            if (st.derive_steps > 20)
                break;
            struct timespec ts = {0, 2000000};
            nanosleep(&ts, NULL);
        }
        _exit(st.derive_steps > 0 ? 0 : 3);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    CU_ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    sqlite3 *db = raw_db();
    CU_ASSERT(rollup_mismatches(db, "rollup_1m", 60000) > 0); /* not derived yet */
    CU_ASSERT_EQUAL(cb_t_sql_int(db, "SELECT value FROM meta WHERE key = 'derive_clean'"), 0);
    sqlite3_close(db);
    struct cb_store *s = open_store();
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    put(s, "city/s04", "v", base + 61000, 99.5, 0);
    CU_ASSERT_EQUAL(cb_store_flush(s), 0);
    cb_store_close(s);
    db = raw_db();
    assert_rollups_whole(db, "rollup_1h");
    CU_ASSERT_EQUAL(cb_t_sql_int(db, "SELECT value FROM meta WHERE key = 'derive_clean'"), 1);
    sqlite3_close(db);
    teardown();
}

/* ---- chunks ----------------------------------------------------------------------- */

/* Every (series_id, ts, value) of `samples`, in that order, from a raw
 * connection (the virtual table over chunks, head and unconverted rows). */
struct rows {
    int64_t *id, *ts;
    double *v;
    size_t n;
};

static void rows_read(struct rows *out)
{
    sqlite3 *db = raw_db();
    sqlite3_stmt *st = NULL;
    memset(out, 0, sizeof *out);
    size_t cap = (size_t)cb_t_sql_int(db, "SELECT count(*) FROM samples") + 1;
    out->id = calloc(cap, sizeof *out->id);
    out->ts = calloc(cap, sizeof *out->ts);
    out->v = calloc(cap, sizeof *out->v);
    CU_ASSERT_EQUAL_FATAL(sqlite3_prepare_v2(db, "SELECT series_id, ts, value FROM samples "
                                                 "ORDER BY series_id, ts",
                                             -1, &st, NULL),
                          SQLITE_OK);
    while (sqlite3_step(st) == SQLITE_ROW && out->n < cap) {
        out->id[out->n] = sqlite3_column_int64(st, 0);
        out->ts[out->n] = sqlite3_column_int64(st, 1);
        out->v[out->n++] = sqlite3_column_double(st, 2);
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
}

static void rows_free(struct rows *r)
{
    free(r->id);
    free(r->ts);
    free(r->v);
}

/* The rows of a are those of b, bit for bit, where b may have more. */
static int rows_within(const struct rows *a, const struct rows *b)
{
    size_t j = 0;
    for (size_t i = 0; i < a->n; i++) {
        while (j < b->n && (b->id[j] < a->id[i] || (b->id[j] == a->id[i] && b->ts[j] < a->ts[i])))
            j++;
        if (j == b->n || b->id[j] != a->id[i] || b->ts[j] != a->ts[i] ||
            memcmp(&b->v[j], &a->v[i], sizeof(double)) != 0)
            return 0;
    }
    return 1;
}

/* Sensor-like values: one to three decimals, noise, steps, a counter. */
static double city_value(int series, int i)
{
    switch (series % 4) {
    case 0:
        return (double)(1200 + (int)(next_rand() % 21) - 10) / 10.0; /* 120.0 +- 1.0 */
    case 1:
        return (double)((i / 50) % 2 ? 3250 : 1175) / 100.0; /* steps */
    case 2:
        return (double)i * 3.0; /* a counter */
    default:
        return (double)(int64_t)(next_rand() % 100000) / 1000.0;
    }
}

/* Appends n samples a second to each of the series city/s0..: series k at
 * t0 + i s + k * skew ms. */
static void put_city(struct cb_store *s, int series, int n, int64_t t0, int64_t skew)
{
    for (int i = 0; i < n; i++)
        for (int k = 0; k < series; k++) {
            char topic[32];
            snprintf(topic, sizeof topic, "city/s%d", k);
            put(s, topic, "v", t0 + i * 1000LL + k * skew, city_value(k, i), 0);
        }
}

/* What holds for each series across the tiers: chunks never overlap (in
 * either tier or across them), every recent-tier chunk is newer than the
 * series' chunks in `chunks`, a later seal's chunk newer than an earlier
 * one's, and the head newer than every chunk. */
static void assert_chunks_ordered(void)
{
    CU_ASSERT_EQUAL(count_rows("SELECT count(*) FROM " ALL_CHUNKS " a JOIN " ALL_CHUNKS " b ON "
                               "a.series_id = b.series_id AND a.start_ts < b.start_ts AND "
                               "a.end_ts >= b.start_ts"),
                    0);
    CU_ASSERT_EQUAL(count_rows("SELECT count(*) FROM chunks_recent r JOIN chunks c ON "
                               "c.series_id = r.series_id AND c.end_ts >= r.start_ts"),
                    0);
    CU_ASSERT_EQUAL(count_rows("SELECT count(*) FROM chunks_recent a JOIN chunks_recent b ON "
                               "a.series_id = b.series_id AND a.seal < b.seal AND "
                               "a.end_ts >= b.start_ts"),
                    0);
    CU_ASSERT_EQUAL(count_rows("SELECT count(*) FROM head h WHERE ts <= (SELECT max(end_ts) "
                               "FROM " ALL_CHUNKS " c WHERE c.series_id = h.series_id)"),
                    0);
}

static void test_chunks_seal(void)
{
    setup();
    struct cb_store *s = open_store();
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    int64_t t0 = 1732400000000LL;
    put_city(s, 4, 1000, t0, 1);
    CU_ASSERT_EQUAL(cb_store_flush(s), 0);
    CU_ASSERT_EQUAL(count_rows("SELECT count(*) FROM head"), 4000);
    CU_ASSERT_EQUAL(count_rows("SELECT count(*) FROM " ALL_CHUNKS), 0);
    struct rows before, after;
    rows_read(&before);
    CU_ASSERT_EQUAL(before.n, 4000);
    CU_ASSERT_EQUAL(storage__seal(s), SQLITE_OK);
    CU_ASSERT_EQUAL(count_rows("SELECT count(*) FROM head"), 0);
    /* the seal writes into the recent tier, under one seal number */
    CU_ASSERT_EQUAL(count_rows("SELECT count(*) FROM chunks"), 0);
    CU_ASSERT_EQUAL(count_rows("SELECT count(DISTINCT seal) FROM chunks_recent"), 1);
    CU_ASSERT_EQUAL(count_rows("SELECT sum(n) FROM chunks_recent"), 4000);
    /* 1000 samples a series: 7 chunks of 120 and one of 160 */
    CU_ASSERT_EQUAL(count_rows("SELECT count(*) FROM chunks_recent"), 4 * 8);
    CU_ASSERT_EQUAL(count_rows("SELECT max(n) FROM chunks_recent"), 160);
    /* values of few decimals: about 2 bytes a sample or less */
    CU_ASSERT(count_rows("SELECT sum(length(data)) FROM chunks_recent") < 2 * 4000);
    rows_read(&after);
    CU_ASSERT_EQUAL(after.n, 4000);
    CU_ASSERT(rows_within(&before, &after));
    /* compacted: the same chunks, moved as they are */
    CU_ASSERT_EQUAL(storage__compact(s), SQLITE_OK);
    CU_ASSERT_EQUAL(count_rows("SELECT count(*) FROM chunks_recent"), 0);
    CU_ASSERT_EQUAL(count_rows("SELECT count(*) FROM chunks"), 4 * 8);
    CU_ASSERT_EQUAL(count_rows("SELECT max(n) FROM chunks"), 160);
    rows_free(&after);
    rows_read(&after);
    CU_ASSERT(rows_within(&before, &after));
    CU_ASSERT_EQUAL(after.n, 4000);
    CU_ASSERT_EQUAL(count_rows("SELECT max(ts) FROM samples WHERE series_id = 2"),
                    t0 + 999000 + 1);
    cb_store_close(s);
    rows_free(&before);
    rows_free(&after);
    teardown();
}

/* setup(), and a store whose series city/a (id 1) has 500 samples, one a
 * second from 10 s to 509 s, sealed. */
static struct cb_store *open_sealed_series(void)
{
    setup();
    struct cb_store *s = open_store();
    if (!s)
        return NULL;
    for (int i = 0; i < 500; i++)
        put(s, "city/a", "v", 10000 + i * 1000LL, i, 0);
    CU_ASSERT_EQUAL(cb_store_flush(s), 0);
    CU_ASSERT_EQUAL(storage__seal(s), SQLITE_OK);
    return s;
}

static void test_chunks_late(void)
{
    struct cb_store *s = open_sealed_series();
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    int64_t chunks = count_rows("SELECT count(*) FROM " ALL_CHUNKS);
    CU_ASSERT(chunks >= 3);
    put(s, "city/a", "v", 600000, 1.5, 0);    /* new: into the head */
    CU_ASSERT_EQUAL(cb_store_flush(s), 0);
    put(s, "city/a", "v", 130500, 2.5, 0);    /* late, inside a closed chunk */
    put(s, "city/a", "v", 5000, 3.5, 0);      /* older than every chunk */
    put(s, "city/a", "v", 509500, 4.5, 0);    /* after the last chunk, before the head */
    put(s, "city/a", "v", 200000, 190.0, 0);  /* a redelivery of a closed sample */
    put(s, "city/a", "v", 600000, 1.5, 0);    /* a redelivery of a head sample */
    CU_ASSERT_EQUAL(cb_store_flush(s), 0);
    struct cb_store_stats st;
    cb_store_get_stats(s, &st);
    CU_ASSERT_EQUAL(st.rows_written, 500 + 4);
    CU_ASSERT_EQUAL(st.rows_duplicate, 2);
    CU_ASSERT_EQUAL(count_rows("SELECT count(*) FROM samples"), 504);
    CU_ASSERT_EQUAL(count_rows("SELECT value FROM samples WHERE series_id = 1 AND ts = 130500"),
                    2);
    CU_ASSERT_EQUAL(count_rows("SELECT min(ts) FROM samples"), 5000);
    CU_ASSERT_EQUAL(count_rows("SELECT count(*) FROM head"), 2); /* 509500 and 600000 */
    /* chunks never overlap, and the head is newer than every chunk */
    assert_chunks_ordered();
    /* one series in time order, both ways */
    CU_ASSERT_EQUAL(count_rows("SELECT ts FROM samples WHERE series_id = 1 ORDER BY ts DESC "
                               "LIMIT 1"),
                    600000);
    CU_ASSERT_EQUAL(count_rows("SELECT ts FROM samples WHERE series_id = 1 AND ts < 600000 "
                               "ORDER BY ts DESC LIMIT 1"),
                    509500);
    CU_ASSERT_EQUAL(count_rows("SELECT count(*) FROM (SELECT ts, lag(ts) OVER (ORDER BY ts) p "
                               "FROM samples WHERE series_id = 1) WHERE ts <= p"),
                    0);
    CU_ASSERT_EQUAL(storage__seal(s), SQLITE_OK);
    CU_ASSERT_EQUAL(count_rows("SELECT count(*) FROM samples"), 504);
    CU_ASSERT_EQUAL(count_rows("SELECT sum(n) FROM " ALL_CHUNKS), 504);
    /* two scans of the chunks at once (a correlated subquery), each its own */
    CU_ASSERT_EQUAL(count_rows("SELECT count(*) FROM samples a WHERE a.series_id = 1 AND "
                               "(SELECT value FROM samples b WHERE b.series_id = 1 AND "
                               "b.ts = a.ts) = a.value"),
                    504);
    cb_store_close(s);
    teardown();
}

/* A database of schema 6, written by the old layout's code path (the
 * writer opened at version 6: one row per sample in `samples`), is converted
 * by the current writer series by series between commits; readers see
 * every sample throughout and new samples are stored meanwhile. */
static void test_chunks_convert_v6(void)
{
    setup();
    char err[512] = "";
    cfg.storage_retention_step_rows = 10; /* the least: a series per step */
    struct cb_store *s = storage__open(&cfg, NULL, 6, err, sizeof err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    int64_t t0 = 1732400000000LL;
    put_city(s, 6, 300, t0, 0);
    CU_ASSERT_EQUAL(cb_store_flush(s), 0);
    cb_store_close(s);
    CU_ASSERT_EQUAL(count_rows("PRAGMA user_version"), 6);
    CU_ASSERT_EQUAL(count_rows("SELECT count(*) FROM sqlite_master WHERE name = 'samples' AND "
                               "type = 'table'"),
                    1);
    struct rows before, after;
    rows_read(&before); /* the real table */
    CU_ASSERT_EQUAL(before.n, 1800);

    s = open_store();
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    /* new samples while converting, new and late */
    for (int k = 0; k < 6; k++) {
        char topic[32];
        snprintf(topic, sizeof topic, "city/s%d", k);
        put(s, topic, "v", t0 + 300000 + k, 1.25, 0);
        put(s, topic, "v", t0 + 500, 2.25, 0);
        put(s, topic, "v", t0 + 1000, 99.0, 0); /* a redelivery: stored before */
    }
    CU_ASSERT_EQUAL(cb_store_flush(s), 0);
    struct cb_store_stats st;
    for (int i = 0; i < 10000; i++) { /* the conversion runs between commits */
        cb_store_get_stats(s, &st);
        if (!st.converting)
            break;
        struct timespec ms = {0, 1000000};
        nanosleep(&ms, NULL);
    }
    CU_ASSERT_EQUAL(st.converting, 0);
    CU_ASSERT_EQUAL(st.rows_written, 12);
    CU_ASSERT_EQUAL(st.rows_duplicate, 6);
    CU_ASSERT_EQUAL(count_rows("SELECT value FROM meta WHERE key = 'chunk_migrate_cursor'"), 6);
    CU_ASSERT_EQUAL(storage__seal(s), SQLITE_OK);
    cb_store_close(s);
    CU_ASSERT_EQUAL(count_rows("PRAGMA user_version"), STORAGE_SCHEMA_VERSION);
    CU_ASSERT_EQUAL(count_rows("SELECT count(*) FROM sqlite_master WHERE name = 'samples_v6'"), 0);
    CU_ASSERT_EQUAL(count_rows("SELECT sum(n) FROM " ALL_CHUNKS), 1800 + 12);
    rows_read(&after);
    CU_ASSERT_EQUAL(after.n, 1800 + 12);
    CU_ASSERT(rows_within(&before, &after));
    CU_ASSERT_EQUAL(count_rows("SELECT count(*) FROM samples WHERE ts = 1732400000500"), 6);
    rows_free(&before);
    rows_free(&after);
    teardown();
}

/* ---- retention -------------------------------------------------------------------- */

/* ---- the recent tier of chunks (schema 9) --------------------------------------- */

/* Opens a store at schema `version` (8: seals into `chunks`, as before step
 * 9; 9: into the recent tier). */
static struct cb_store *open_store_at(int version)
{
    char err[512] = "";
    struct cb_store *s = storage__open(&cfg, NULL, version, err, sizeof err);
    if (!s)
        fprintf(stderr, "open: %s\n", err);
    return s;
}

/* Appends seconds [from, to) of the city's series 0..n-1 (put_city), a
 * commit every 600 seconds. */
static void put_city_span(struct cb_store *s, int n, int from, int to, int64_t t0)
{
    for (int a = from; a < to; a += 600) {
        int b = a + 600 < to ? a + 600 : to;
        put_city(s, n, b - a, t0 + a * 1000LL, 0);
        CU_ASSERT_EQUAL(cb_store_flush(s), 0);
    }
}

/* The WAL frames a seal writes: the WAL is checkpointed and truncated
 * first, so what it holds afterwards is the seal's transaction. */
static int64_t frames_of(struct cb_store *s, int (*op)(struct cb_store *))
{
    char path[160];
    struct stat st;
    int64_t page = count_rows("PRAGMA page_size");
    CU_ASSERT_EQUAL(storage__writer_exec(s, "PRAGMA wal_checkpoint(TRUNCATE)"), SQLITE_OK);
    snprintf(path, sizeof path, "%s-wal", dbpath);
    /* (the writer's own bookkeeping after the last commit, a derivation
     * pass that only moves its state, may land a frame or two meanwhile:
     * counted from there) */
    CU_ASSERT_EQUAL_FATAL(stat(path, &st), 0);
    off_t before = st.st_size > 32 ? st.st_size : 32;
    CU_ASSERT_EQUAL(op(s), SQLITE_OK);
    CU_ASSERT_EQUAL_FATAL(stat(path, &st), 0);
    return st.st_size > before ? (st.st_size - before) / (24 + page) : 0;
}

static int64_t seal_frames(struct cb_store *s)
{
    return frames_of(s, storage__seal);
}

/* The WAL frames of one commit of the samples put() queued. */
static int64_t commit_frames(struct cb_store *s)
{
    return frames_of(s, cb_store_flush);
}

/* 10,000 series, one sample each per commit (a city's second): with the
 * row-per-sample head (schema 9) a commit writes a page per 150 samples or
 * so, about 27 bytes a row; in blocks (schema 10) about 5 bytes a sample,
 * one row per 64 series, and the few pages of the rest of the commit. */
static void test_head_blocks_commit_frames(void)
{
    enum { N = 10000 };
    int64_t t0 = 1732400000000LL, frames[2];
    for (int v = 0; v < 2; v++) {
        setup();
        struct cb_store *s = open_store_at(v ? STORAGE_BLOCKS_VERSION : STORAGE_TIERS_VERSION);
        CU_ASSERT_PTR_NOT_NULL_FATAL(s);
        int64_t now = t0; /* no rollup pass writes meanwhile */
        struct cb_clock clk = {cb_clock_manual_now, &now};
        cb_store_set_clock(s, &clk);
        put_city(s, N, 2, t0, 0); /* the series exist, a commit's worth of head */
        CU_ASSERT_EQUAL(cb_store_flush(s), 0);
        put_city(s, N, 1, t0 + 2000, 0);
        frames[v] = commit_frames(s);
        CU_ASSERT_EQUAL(count_rows("SELECT count(*) FROM samples"), 3 * N);
        cb_store_close(s);
        teardown();
    }
    fprintf(stderr, "[a commit of %d samples: %lld WAL frames with head rows, %lld in blocks] ",
            N, (long long)frames[0], (long long)frames[1]);
    CU_ASSERT(frames[0] >= N * 27 / 4096); /* the old layout's cost, seen */
    CU_ASSERT(frames[1] * 3 < frames[0]);
    CU_ASSERT(frames[1] <= N * 6 / 4096 + 10);
}

/* 100 series with two hours of history each (more than a page of chunks a
 * series), then a seal of two minutes of every series: at schema 8 (chunks
 * keyed by series first) the seal writes a page per series, at schema 9 it
 * appends its chunks to the recent tier, a few pages for all of them. */
static void test_tiers_seal_appends(void)
{
    enum { N = 100, HISTORY = 7200 };
    int64_t t0 = 1732400000000LL, frames[2];
    for (int v = 0; v < 2; v++) {
        setup();
        struct cb_store *s = open_store_at(v ? STORAGE_TIERS_VERSION : STORAGE_CHUNKS_VERSION);
        CU_ASSERT_PTR_NOT_NULL_FATAL(s);
        /* the clock before the samples: no rollup pass writes meanwhile */
        int64_t now = t0;
        struct cb_clock clk = {cb_clock_manual_now, &now};
        cb_store_set_clock(s, &clk);
        put_city_span(s, N, 0, HISTORY, t0);
        CU_ASSERT_EQUAL(storage__seal(s), SQLITE_OK);
        if (v)
            CU_ASSERT_EQUAL(storage__compact(s), SQLITE_OK);
        CU_ASSERT(count_rows("SELECT sum(length(data)) FROM chunks") > N * 4096);
        put_city_span(s, N, HISTORY, HISTORY + 120, t0);
        frames[v] = seal_frames(s);
        CU_ASSERT_EQUAL(count_rows("SELECT count(*) FROM samples"), N * (HISTORY + 120));
        cb_store_close(s);
        teardown();
    }
    /* the old layout's cost, which this test would not see otherwise */
    CU_ASSERT(frames[0] >= N);
    /* 100 chunks of about 150 bytes: a few pages, and the tree's inner ones */
    CU_ASSERT(frames[1] * 5 < frames[0]);
    CU_ASSERT(frames[1] < N / 5);
    fprintf(stderr, "[seal of %d series: %lld WAL frames at schema 8, %lld at schema 9] ", N,
            (long long)frames[0], (long long)frames[1]);
}

/* The samples read now are those of `before`, each once. */
static void assert_rows_same(const struct rows *before)
{
    struct rows now;
    rows_read(&now);
    CU_ASSERT_EQUAL(now.n, before->n);
    CU_ASSERT(rows_within(before, &now));
    rows_free(&now);
}

/* A compaction runs in slices, each one transaction between commits that
 * moves whole series: a slice made to fail midway (an error injected into
 * its writes to `chunks`) changes nothing, and after every slice, the
 * failure, a close in mid-compaction and the reopen's compaction, readers
 * read every sample exactly once. */
static void test_tiers_compaction_slices(void)
{
    setup();
    cfg.storage_retention_step_rows = 40; /* slices of 10 chunks: two series */
    struct cb_store *s = open_store();
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    int64_t t0 = 1732400000000LL;
    for (int seal = 0; seal < 3; seal++) {
        put_city_span(s, 30, seal * 300, seal * 300 + 300, t0);
        CU_ASSERT_EQUAL(cb_store_flush(s), 0);
        CU_ASSERT_EQUAL(storage__seal(s), SQLITE_OK);
    }
    struct rows before;
    rows_read(&before);
    CU_ASSERT_EQUAL_FATAL(before.n, 30 * 900);
    int64_t recent = count_rows("SELECT count(*) FROM chunks_recent");
    for (int i = 0; i < 3; i++) {
        CU_ASSERT_EQUAL(storage__compact_slice(s), SQLITE_ROW);
        assert_rows_same(&before);
        assert_chunks_ordered();
    }
    int64_t moved = count_rows("SELECT count(*) FROM chunks");
    CU_ASSERT(moved > 0);
    CU_ASSERT_EQUAL(moved + count_rows("SELECT count(*) FROM chunks_recent"), recent);
    /* the fourth slice fails at its first write */
    CU_ASSERT_EQUAL(storage__writer_exec(s, "CREATE TEMP TRIGGER fail_move BEFORE INSERT ON "
                                            "main.chunks BEGIN SELECT RAISE(ABORT, 'injected'); "
                                            "END"),
                    SQLITE_OK);
    int r = storage__compact_slice(s);
    CU_ASSERT(r != SQLITE_OK && r != SQLITE_ROW);
    CU_ASSERT_EQUAL(count_rows("SELECT count(*) FROM chunks"), moved);
    assert_rows_same(&before);
    CU_ASSERT_EQUAL(storage__writer_exec(s, "DROP TRIGGER fail_move"), SQLITE_OK);
    /* the fifth goes on where the third stopped; then a close mid-way */
    CU_ASSERT_EQUAL(storage__compact_slice(s), SQLITE_ROW);
    struct cb_store_stats st;
    cb_store_get_stats(s, &st);
    CU_ASSERT_EQUAL(st.compactions, 0);
    cb_store_close(s);
    CU_ASSERT(count_rows("SELECT count(*) FROM chunks_recent") > 0);
    assert_rows_same(&before);
    /* the reopen compacts what is left */
    s = open_store();
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    CU_ASSERT_EQUAL(storage__compact(s), SQLITE_OK);
    cb_store_get_stats(s, &st);
    CU_ASSERT_EQUAL(st.compactions, 1);
    cb_store_close(s);
    CU_ASSERT_EQUAL(count_rows("SELECT count(*) FROM chunks_recent"), 0);
    assert_chunks_ordered();
    assert_rows_same(&before);
    rows_free(&before);
    teardown();
}

/* A slice of a compaction is one transaction (here the whole compaction:
 * 31 series, one slice): made to fail midway (no page left), it changes
 * nothing, and readers see the same samples before, after the
 * failure and after it succeeds; a slow series' short chunks are merged. */
static void test_tiers_compaction_atomic(void)
{
    setup();
    struct cb_store *s = open_store();
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    int64_t t0 = 1732400000000LL;
    for (int seal = 0; seal < 3; seal++) {
        put_city_span(s, 30, seal * 300, seal * 300 + 300, t0);
        for (int i = 0; i < 7; i++) /* a slow sensor: 7 samples a seal */
            put(s, "city/slow", "v", t0 + seal * 300000LL + i * 40000, seal * 10 + i, 0);
        CU_ASSERT_EQUAL(cb_store_flush(s), 0);
        CU_ASSERT_EQUAL(storage__seal(s), SQLITE_OK);
    }
    CU_ASSERT_EQUAL(count_rows("SELECT count(DISTINCT seal) FROM chunks_recent"), 3);
    CU_ASSERT_EQUAL(count_rows("SELECT count(*) FROM chunks"), 0);
    struct rows before, mid, after;
    rows_read(&before);
    CU_ASSERT_EQUAL(before.n, 30 * 900 + 21);
    /* no free page and none to add: the compaction runs out midway */
    CU_ASSERT_EQUAL(storage__writer_exec(s, "VACUUM"), SQLITE_OK);
    char sql[96];
    snprintf(sql, sizeof sql, "PRAGMA max_page_count = %lld",
             (long long)count_rows("PRAGMA page_count"));
    CU_ASSERT_EQUAL(storage__writer_exec(s, sql), SQLITE_OK);
    CU_ASSERT_EQUAL(storage__compact(s), SQLITE_FULL);
    CU_ASSERT_EQUAL(count_rows("SELECT count(*) FROM chunks"), 0);
    CU_ASSERT_EQUAL(count_rows("SELECT count(DISTINCT seal) FROM chunks_recent"), 3);
    rows_read(&mid);
    CU_ASSERT_EQUAL(mid.n, before.n);
    CU_ASSERT(rows_within(&before, &mid));
    CU_ASSERT_EQUAL(storage__writer_exec(s, "PRAGMA max_page_count = 1073741823"), SQLITE_OK);
    CU_ASSERT_EQUAL(storage__compact(s), SQLITE_OK);
    struct cb_store_stats st;
    cb_store_get_stats(s, &st);
    CU_ASSERT_EQUAL(st.compactions, 1);
    cb_store_close(s);
    CU_ASSERT_EQUAL(count_rows("SELECT count(*) FROM chunks_recent"), 0);
    CU_ASSERT_EQUAL(count_rows("SELECT sum(n) FROM chunks"), 30 * 900 + 21);
    /* the slow series' three chunks of 7 are one of 21 now */
    CU_ASSERT_EQUAL(count_rows("SELECT count(*) FROM chunks WHERE n < 60"), 1);
    rows_read(&after);
    CU_ASSERT_EQUAL(after.n, before.n);
    CU_ASSERT(rows_within(&before, &after));
    assert_chunks_ordered();
    rows_free(&before);
    rows_free(&mid);
    rows_free(&after);
    teardown();
}

/* Late samples where both tiers hold chunks: between `chunks` and the recent
 * tier, inside a chunk of an earlier seal, in the gap between two seals,
 * after the recent tier; redeliveries of each; then compacted. */
static void test_tiers_late(void)
{
    struct cb_store *s = open_sealed_series();
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    CU_ASSERT_EQUAL(storage__compact(s), SQLITE_OK);
    for (int seal = 0; seal < 2; seal++) { /* 600 ... 899 s, 1000 ... 1299 s */
        for (int i = 0; i < 300; i++)
            put(s, "city/a", "v", 600000 + seal * 400000LL + i * 1000LL, i, 0);
        CU_ASSERT_EQUAL(cb_store_flush(s), 0);
        CU_ASSERT_EQUAL(storage__seal(s), SQLITE_OK);
    }
    put(s, "city/a", "v", 2000000, 7.0, 0); /* the head */
    CU_ASSERT_EQUAL(cb_store_flush(s), 0);
    put(s, "city/a", "v", 550000, 1.5, 0);  /* between chunks and the recent tier */
    put(s, "city/a", "v", 700500, 2.5, 0);  /* inside a chunk of the first seal */
    put(s, "city/a", "v", 950000, 3.5, 0);  /* between the two seals */
    put(s, "city/a", "v", 1500000, 4.5, 0); /* after the recent tier, before the head */
    put(s, "city/a", "v", 650000, 99.0, 0); /* redeliveries: recent tier, chunks, head */
    put(s, "city/a", "v", 20000, 99.0, 0);
    put(s, "city/a", "v", 2000000, 99.0, 0);
    CU_ASSERT_EQUAL(cb_store_flush(s), 0);
    struct cb_store_stats st;
    cb_store_get_stats(s, &st);
    CU_ASSERT_EQUAL(st.rows_written, 500 + 600 + 1 + 4);
    CU_ASSERT_EQUAL(st.rows_duplicate, 3);
    CU_ASSERT_EQUAL(count_rows("SELECT sum(n) FROM chunks"), 500 + 1);
    CU_ASSERT_EQUAL(count_rows("SELECT sum(n) FROM chunks_recent"), 600 + 2);
    CU_ASSERT_EQUAL(count_rows("SELECT sum(n) FROM chunks_recent WHERE seal = "
                               "(SELECT min(seal) FROM chunks_recent)"),
                    300 + 2);
    CU_ASSERT_EQUAL(count_rows("SELECT count(*) FROM head"), 2);
    assert_chunks_ordered();
    static const int64_t at[] = {550000, 700500, 950000, 1500000, 650000, 20000, 2000000};
    static const int64_t want[] = {1, 2, 3, 4, 50, 10, 7}; /* value, truncated */
    for (size_t i = 0; i < sizeof at / sizeof at[0]; i++) {
        char sql[96];
        snprintf(sql, sizeof sql, "SELECT value FROM samples WHERE series_id = 1 AND ts = %lld",
                 (long long)at[i]);
        CU_ASSERT_EQUAL(count_rows(sql), want[i]);
    }
    struct rows before, after;
    rows_read(&before);
    CU_ASSERT_EQUAL(before.n, 500 + 600 + 1 + 4);
    CU_ASSERT_EQUAL(count_rows("SELECT count(*) FROM (SELECT ts, lag(ts) OVER (ORDER BY ts) p "
                               "FROM samples WHERE series_id = 1) WHERE ts <= p"),
                    0);
    CU_ASSERT_EQUAL(count_rows("SELECT ts FROM samples WHERE series_id = 1 AND ts < 1500000 "
                               "ORDER BY ts DESC LIMIT 1"),
                    1299000);
    CU_ASSERT_EQUAL(storage__seal(s), SQLITE_OK);
    CU_ASSERT_EQUAL(storage__compact(s), SQLITE_OK);
    cb_store_close(s);
    CU_ASSERT_EQUAL(count_rows("SELECT sum(n) FROM chunks"), 500 + 600 + 1 + 4);
    rows_read(&after);
    CU_ASSERT_EQUAL(after.n, before.n);
    CU_ASSERT(rows_within(&before, &after));
    assert_chunks_ordered();
    rows_free(&before);
    rows_free(&after);
    teardown();
}

/* Property: random series (fast and slow), rounds of new, late and
 * redelivered samples, each round sealed, compacted or neither at random.
 * After every round the samples read are exactly the model (the first value
 * stored at each (series, ts)); a compaction changes no row; the tiers keep
 * their order; at close the rollups equal the raw samples. */
static void test_tiers_property(void)
{
    enum { K = 12, SPAN = 4000, ROUNDS = 10 };
    setup();
    struct cb_store *s = open_store();
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    int64_t t0 = 1732400000000LL;
    static double model[K][SPAN];
    static char seen[K][SPAN];
    memset(seen, 0, sizeof seen);
    int cursor[K] = {0};
    size_t stored = 0;
    int ok = 1, compactions = 0;
    for (int round = 0; round < ROUNDS; round++) {
        for (int k = 0; k < K; k++) {
            char topic[32];
            snprintf(topic, sizeof topic, "city/p%d", k);
            int step = k % 3 == 0 ? 37 : 1; /* a slow series in three */
            int n = (int)(next_rand() % 400);
            for (int i = 0; i < n; i++) {
                int off;
                uint64_t r = next_rand() % 10;
                if (r == 0 && cursor[k] > 0)
                    off = (int)(next_rand() % (uint64_t)cursor[k]); /* late or redelivered */
                else if (cursor[k] + step < SPAN)
                    off = cursor[k] += step;
                else
                    continue;
                double v = (double)(int64_t)(next_rand() % 100000) / 100.0;
                put(s, topic, "v", t0 + off * 1000LL, v, 0);
                if (!seen[k][off]) {
                    seen[k][off] = 1;
                    model[k][off] = v;
                    stored++;
                }
            }
        }
        CU_ASSERT_EQUAL(cb_store_flush(s), 0);
        uint64_t what = next_rand() % 3;
        if (what >= 1)
            CU_ASSERT_EQUAL(storage__seal(s), SQLITE_OK);
        struct rows r1, r2;
        rows_read(&r1);
        if (what == 2) {
            CU_ASSERT_EQUAL(storage__compact(s), SQLITE_OK);
            compactions++;
            rows_read(&r2);
            ok &= r2.n == r1.n && rows_within(&r1, &r2);
            rows_free(&r2);
        }
        ok &= r1.n == stored;
        for (size_t i = 0; i < r1.n && ok; i++) {
            int k = (int)r1.id[i] - 1, off = (int)((r1.ts[i] - t0) / 1000);
            ok &= k >= 0 && k < K && off >= 0 && off < SPAN && seen[k][off] &&
                  memcmp(&model[k][off], &r1.v[i], sizeof(double)) == 0;
        }
        rows_free(&r1);
        assert_chunks_ordered();
    }
    CU_ASSERT(ok);
    CU_ASSERT(compactions > 0);
    cb_store_close(s);
    sqlite3 *db = raw_db();
    assert_rollups_whole(db, "rollup_1m");
    sqlite3_close(db);
    teardown();
}

/* A digest (FNV-1a) of what a reader on its own connection sees through
 * the samples table: every row in (series, ts) order, and per series its
 * rows in a ts window read newest first. */
static uint64_t samples_digest(int series)
{
    sqlite3 *db = raw_db();
    uint64_t h = 1469598103934665603ull;
    char sql[200];
    for (int q = 0; q <= series; q++) {
        if (q == 0)
            snprintf(sql, sizeof sql, "SELECT series_id, ts, value FROM samples ORDER BY "
                                      "series_id, ts");
        else
            snprintf(sql, sizeof sql, "SELECT series_id, ts, value FROM samples WHERE "
                                      "series_id = %d AND ts >= 1732400100000 AND "
                                      "ts < 1732400900000 ORDER BY ts DESC", q);
        sqlite3_stmt *st = NULL;
        CU_ASSERT_EQUAL_FATAL(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
        while (sqlite3_step(st) == SQLITE_ROW) {
            int64_t row[3] = {sqlite3_column_int64(st, 0), sqlite3_column_int64(st, 1), 0};
            double v = sqlite3_column_double(st, 2);
            memcpy(&row[2], &v, sizeof v);
            const unsigned char *b = (const unsigned char *)row;
            for (size_t i = 0; i < sizeof row; i++)
                h = (h ^ b[i]) * 1099511628211ull;
        }
        sqlite3_finalize(st);
    }
    sqlite3_close(db);
    return h;
}

/* Property: the same random commits (200 series over four groups, new,
 * late and redelivered samples, some in the same commit, seals now and
 * then) into a head of rows (schema 9) and a head of blocks (schema 10):
 * after every commit another connection reads exactly the same samples
 * through the samples table, whole and by series and time backwards, and
 * the writer counts the same duplicates. */
static void test_head_blocks_read_as_rows(void)
{
    enum { K = 200, ROUNDS = 12 };
    int64_t t0 = 1732400000000LL;
    uint64_t digest[2][ROUNDS];
    uint64_t dup[2], written[2];
    for (int v = 0; v < 2; v++) {
        uint64_t seed = 2026;
        setup();
        struct cb_store *s = open_store_at(v ? STORAGE_BLOCKS_VERSION : STORAGE_TIERS_VERSION);
        CU_ASSERT_PTR_NOT_NULL_FATAL(s);
        int cursor[K] = {0};
        for (int round = 0; round < ROUNDS; round++) {
            for (int k = 0; k < K; k++) {
                char topic[32];
                snprintf(topic, sizeof topic, "city/q%d", k);
                int n = (int)(cb_splitmix_next(&seed) % 6);
                for (int i = 0; i < n; i++) {
                    uint64_t r = cb_splitmix_next(&seed) % 8;
                    int off = r == 0 && cursor[k] > 0
                                  ? (int)(cb_splitmix_next(&seed) % (uint64_t)cursor[k])
                                  : (cursor[k] += 1 + (int)(r % 3));
                    double val = r == 7 ? 1.0 / 3 : (double)(int64_t)(cb_splitmix_next(&seed) %
                                                                   200000) / 1000.0 - 50;
                    put(s, topic, "v", t0 + off * 1000LL, val, 0);
                }
            }
            CU_ASSERT_EQUAL(cb_store_flush(s), 0);
            if (cb_splitmix_next(&seed) % 4 == 0)
                CU_ASSERT_EQUAL(storage__seal(s), SQLITE_OK);
            digest[v][round] = samples_digest(K);
        }
        struct cb_store_stats st;
        cb_store_get_stats(s, &st);
        dup[v] = st.rows_duplicate;
        written[v] = st.rows_written;
        if (v) /* the blocks hold the head: no row of it elsewhere */
            CU_ASSERT(count_rows("SELECT count(*) FROM main.head_blocks") > 0);
        cb_store_close(s);
        teardown();
    }
    CU_ASSERT(dup[0] > 0);
    CU_ASSERT_EQUAL(dup[1], dup[0]);
    CU_ASSERT_EQUAL(written[1], written[0]);
    for (int round = 0; round < ROUNDS; round++)
        CU_ASSERT_EQUAL(digest[1][round], digest[0][round]);
}

/* Late samples and redeliveries across the head's blocks: a sample
 * redelivered three commits later (its block another seq), one older than
 * the series' newest in the head, a series in each of two groups; then the
 * seal reads every block into chunks and the head is empty. */
static void test_head_blocks_dedup_and_seal(void)
{
    setup();
    struct cb_store *s = open_store();
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    for (int k = 0; k < 70; k++) { /* series 1..70: groups 0 and 1 */
        char topic[32];
        snprintf(topic, sizeof topic, "city/g%d", k);
        for (int c = 0; c < 4; c++) {
            put(s, topic, "v", 10000 + c * 2000, k + c / 10.0, 0);
            CU_ASSERT_EQUAL(cb_store_flush(s), 0);
        }
    }
    put(s, "city/g0", "v", 10000, 99, 0);  /* redelivered: in the first block */
    put(s, "city/g69", "v", 14000, 99, 0); /* redelivered: the third */
    put(s, "city/g69", "v", 11000, 0.5, 0); /* late: older than its newest */
    put(s, "city/g69", "v", 11000, 98, 0);  /* and again, same commit */
    CU_ASSERT_EQUAL(cb_store_flush(s), 0);
    put(s, "city/g69", "v", 11000, 97, 0); /* and again, next commit */
    CU_ASSERT_EQUAL(cb_store_flush(s), 0);
    struct cb_store_stats st;
    cb_store_get_stats(s, &st);
    CU_ASSERT_EQUAL(st.rows_written, 70 * 4 + 1);
    CU_ASSERT_EQUAL(st.rows_duplicate, 4);
    CU_ASSERT(count_rows("SELECT count(DISTINCT grp) FROM main.head_blocks") == 2);
    CU_ASSERT_EQUAL(count_rows("SELECT count(*) FROM head"), 70 * 4 + 1);
    CU_ASSERT_EQUAL(count_rows("SELECT value * 10 FROM samples WHERE series_id = 70 AND "
                               "ts = 11000"),
                    5);
    CU_ASSERT_EQUAL(count_rows("SELECT value FROM samples WHERE series_id = 1 AND ts = 10000"), 0);
    struct rows before, after;
    rows_read(&before);
    CU_ASSERT_EQUAL(storage__seal(s), SQLITE_OK);
    CU_ASSERT_EQUAL(count_rows("SELECT count(*) FROM main.head_blocks"), 0);
    put(s, "city/g69", "v", 11000, 96, 0); /* a redelivery of a sealed sample */
    CU_ASSERT_EQUAL(cb_store_flush(s), 0);
    cb_store_get_stats(s, &st);
    CU_ASSERT_EQUAL(st.rows_duplicate, 5);
    cb_store_close(s);
    rows_read(&after);
    CU_ASSERT_EQUAL(after.n, 70 * 4 + 1);
    CU_ASSERT(after.n == before.n && rows_within(&before, &after));
    rows_free(&before);
    rows_free(&after);
    teardown();
}

/* A step-9 file with its head in rows (written by the writer at schema 9:
 * chunks sealed into the recent tier, then an open head) upgrades to step
 * 10: right after the migration, before any writer seals, a reader sees
 * every sample (the old head's rows included); the writer's start seals the
 * old head into chunks and drops the table; every sample reads back bit for
 * bit, and new samples go into blocks. */
static void test_head_blocks_from_v9(void)
{
    setup();
    int64_t t0 = 1732400000000LL;
    struct cb_store *s = open_store_at(STORAGE_TIERS_VERSION);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    put_city_span(s, 100, 0, 300, t0);
    CU_ASSERT_EQUAL(storage__seal(s), SQLITE_OK);
    put_city_span(s, 100, 300, 420, t0); /* the head: 120 s of 100 series */
    put(s, "city/s7", "v", t0 + 5500, -0.0, 0); /* a late one, into the recent tier */
    CU_ASSERT_EQUAL(cb_store_flush(s), 0);
    cb_store_close(s);
    CU_ASSERT_EQUAL(count_rows("PRAGMA user_version"), STORAGE_TIERS_VERSION);
    CU_ASSERT_EQUAL(count_rows("SELECT count(*) FROM head"), 100 * 120);
    struct rows before, mid, after;
    rows_read(&before);
    CU_ASSERT_EQUAL(before.n, 100 * 420 + 1);
    /* the step alone, as at a start before the seal */
    sqlite3 *db = raw_db();
    char err[256] = "";
    CU_ASSERT_EQUAL(storage__migrate(db, STORAGE_BLOCKS_VERSION, err, sizeof err), 0);
    sqlite3_close(db);
    CU_ASSERT_EQUAL(count_rows("PRAGMA user_version"), STORAGE_BLOCKS_VERSION);
    CU_ASSERT_EQUAL(count_rows("SELECT count(*) FROM main.head"), 100 * 120);
    rows_read(&mid);
    CU_ASSERT(mid.n == before.n && rows_within(&before, &mid));
    /* the writer's start */
    s = open_store();
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    CU_ASSERT_EQUAL(count_rows("SELECT count(*) FROM sqlite_master WHERE name = 'head'"), 0);
    CU_ASSERT_EQUAL(count_rows("SELECT count(*) FROM main.head_blocks"), 0);
    rows_read(&after);
    CU_ASSERT(after.n == before.n && rows_within(&before, &after));
    put(s, "city/s1", "v", t0 + 420000, 1.25, 0);
    put(s, "city/s1", "v", t0 + 100000, 7, 0); /* a redelivery: a duplicate */
    CU_ASSERT_EQUAL(cb_store_flush(s), 0);
    struct cb_store_stats st;
    cb_store_get_stats(s, &st);
    CU_ASSERT_EQUAL(st.rows_written, 1);
    CU_ASSERT_EQUAL(st.rows_duplicate, 1);
    CU_ASSERT_EQUAL(count_rows("SELECT count(*) FROM main.head_blocks"), 1);
    cb_store_close(s);
    CU_ASSERT_EQUAL(count_rows("SELECT count(*) FROM samples"), 100 * 420 + 2);
    rows_free(&before);
    rows_free(&mid);
    rows_free(&after);
    teardown();
}

/* Retention across the tiers: samples sealed into the recent tier are cut
 * like those of `chunks` (the pass compacts the tier first), the chunk that
 * straddles the cut trimmed; the 1-minute rollups are cut by their own
 * period. */
static void test_tiers_retention(void)
{
    setup();
    int64_t now = 1732400000000LL;
    cfg.storage_retention_raw_ms = 3600 * 1000;    /* 1h */
    cfg.storage_retention_1m_ms = 2 * 3600 * 1000; /* 2h */
    struct cb_store *s = open_store();
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    struct cb_clock clk = {cb_clock_manual_now, &now};
    cb_store_set_clock(s, &clk);
    /* 3 series x 3h at 10 s, in three seals of an hour */
    for (int h = 3; h > 0; h--) {
        for (int k = 0; k < 3; k++)
            for (int64_t ts = now - h * 3600000LL + 5000; ts < now - (h - 1) * 3600000LL;
                 ts += 10000)
                put(s, k == 0 ? "city/a" : k == 1 ? "city/b" : "city/c", "v", ts, (double)ts, 0);
        CU_ASSERT_EQUAL(cb_store_flush(s), 0);
        CU_ASSERT_EQUAL(storage__seal(s), SQLITE_OK);
    }
    CU_ASSERT_EQUAL(count_rows("SELECT count(DISTINCT seal) FROM chunks_recent"), 3);
    CU_ASSERT_EQUAL(count_rows("SELECT count(*) FROM chunks"), 0);
    uint64_t deleted = 0, total = 0;
    int more = 1, steps = 0;
    while (more && steps++ < 1000) {
        CU_ASSERT_EQUAL_FATAL(cb_store_retention_step(s, &deleted, &more), 0);
        total += deleted;
    }
    struct cb_store_stats st;
    cb_store_get_stats(s, &st);
    CU_ASSERT(st.compactions >= 1);
    cb_store_close(s);
    CU_ASSERT(total >= 3 * 720); /* and the 1-minute rows older than 2 h */
    CU_ASSERT_EQUAL(count_rows("SELECT count(*) FROM chunks_recent"), 0);
    CU_ASSERT_EQUAL(count_rows("SELECT count(*) FROM samples WHERE ts < 1732396400000"), 0);
    CU_ASSERT_EQUAL(count_rows("SELECT count(*) FROM samples"), 3 * 360);
    CU_ASSERT_EQUAL(count_rows("SELECT min(start_ts) FROM chunks"), now - 3600000 + 5000);
    CU_ASSERT_EQUAL(count_rows("SELECT count(*) FROM rollup_1m WHERE bucket < 1732392800000"), 0);
    teardown();
}

/* A retention pass starts every storage.retention.interval (10 s by
 * default): it seals the head and compacts the recent tier only when they
 * may hold samples older than its cut, or the seals would come every 10 s
 * and every seal would be compacted at once. */
static void test_tiers_retention_spares_young(void)
{
    setup();
    int64_t now = 1732400000000LL;
    cfg.storage_retention_raw_ms = 3600 * 1000; /* 1h */
    struct cb_store *s = open_store();
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    struct cb_clock clk = {cb_clock_manual_now, &now};
    cb_store_set_clock(s, &clk);
    for (int i = 0; i < 60; i++)
        put(s, "city/young", "v", now - 600000 + i * 1000, i, 0);
    CU_ASSERT_EQUAL(cb_store_flush(s), 0);
    CU_ASSERT_EQUAL(storage__seal(s), SQLITE_OK);
    for (int i = 60; i < 120; i++)
        put(s, "city/young", "v", now - 600000 + i * 1000, i, 0);
    CU_ASSERT_EQUAL(cb_store_flush(s), 0);
    uint64_t deleted;
    int more = 1;
    while (more)
        CU_ASSERT_EQUAL_FATAL(cb_store_retention_step(s, &deleted, &more), 0);
    CU_ASSERT_EQUAL(count_rows("SELECT count(*) FROM head"), 60);
    CU_ASSERT_EQUAL(count_rows("SELECT sum(n) FROM chunks_recent"), 60);
    /* an old sample in the head: sealed and compacted, then cut */
    put(s, "city/young", "v", now - 7200000, 1.0, 0);
    CU_ASSERT_EQUAL(cb_store_flush(s), 0);
    more = 1;
    while (more)
        CU_ASSERT_EQUAL_FATAL(cb_store_retention_step(s, &deleted, &more), 0);
    CU_ASSERT_EQUAL(count_rows("SELECT count(*) FROM head"), 0);
    CU_ASSERT_EQUAL(count_rows("SELECT count(*) FROM chunks_recent"), 0);
    CU_ASSERT_EQUAL(count_rows("SELECT count(*) FROM samples"), 120);
    cb_store_close(s);
    teardown();
}

/* Step 9 needs no conversion: a file written at schema 8 (by the writer at
 * that version: sealed into `chunks`, a head left open) opens at schema 9
 * with its chunks where they were and every sample readable; new seals go to
 * the recent tier, late samples into the old chunks. */
static void test_tiers_from_v8(void)
{
    setup();
    struct cb_store *s = open_store_at(STORAGE_CHUNKS_VERSION);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    int64_t t0 = 1732400000000LL;
    put_city_span(s, 5, 0, 600, t0);
    CU_ASSERT_EQUAL(storage__seal(s), SQLITE_OK);
    put_city_span(s, 5, 600, 700, t0); /* left in the head */
    cb_store_close(s);
    CU_ASSERT_EQUAL(count_rows("PRAGMA user_version"), 8);
    CU_ASSERT_EQUAL(count_rows("SELECT count(*) FROM sqlite_master WHERE name = 'chunks_recent'"),
                    0);
    int64_t chunks8 = count_rows("SELECT count(*) FROM chunks");
    CU_ASSERT_EQUAL(count_rows("SELECT sum(n) FROM chunks"), 5 * 600);
    struct rows before, after;
    rows_read(&before);
    CU_ASSERT_EQUAL(before.n, 5 * 700);

    s = open_store(); /* step 9; the start seals the head left open */
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    CU_ASSERT_EQUAL(count_rows("PRAGMA user_version"), STORAGE_SCHEMA_VERSION);
    CU_ASSERT_EQUAL(count_rows("SELECT count(*) FROM chunks"), chunks8);
    CU_ASSERT_EQUAL(count_rows("SELECT sum(n) FROM chunks_recent"), 5 * 100);
    put_city_span(s, 5, 700, 800, t0);
    put(s, "city/s0", "v", t0 + 300500, 1.25, 0); /* late, into an old chunk */
    CU_ASSERT_EQUAL(cb_store_flush(s), 0);
    CU_ASSERT_EQUAL(storage__seal(s), SQLITE_OK);
    CU_ASSERT_EQUAL(count_rows("SELECT sum(n) FROM chunks"), 5 * 600 + 1);
    rows_read(&after);
    CU_ASSERT_EQUAL(after.n, 5 * 800 + 1);
    CU_ASSERT(rows_within(&before, &after));
    assert_chunks_ordered();
    cb_store_close(s);
    rows_free(&before);
    rows_free(&after);
    teardown();
}

static void test_retention_steps(void)
{
    setup();
    int64_t now = 1732400000000LL;
    cfg.storage_retention_raw_ms = 3600 * 1000;        /* 1h */
    cfg.storage_retention_1m_ms = 2 * 3600 * 1000;     /* 2h */
    cfg.storage_retention_step_rows = 100;
    struct cb_store *s = open_store();
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    struct cb_clock clk = {cb_clock_manual_now, &now};
    cb_store_set_clock(s, &clk);
    int64_t cut = now - 3600 * 1000;
    /* 3 series x 3h at 10 s: 1080 per series, 2/3 older than the cut */
    for (int k = 0; k < 3; k++)
        for (int64_t ts = now - 3 * 3600000LL; ts < now; ts += 10000)
            put(s, k == 0 ? "city/a" : k == 1 ? "city/b" : "city/c", "v", ts, (double)ts, 0);
    CU_ASSERT_EQUAL(cb_store_flush(s), 0);
    int64_t old_before = count_rows("SELECT count(*) FROM samples WHERE ts < 1732396400000");
    CU_ASSERT_EQUAL(old_before, 3 * 720);
    uint64_t total = 0, steps = 0, deleted = 0;
    struct cb_store_stats st;
    int more = 1, within = 1, appended = 0;
    while (more && steps < 1000) {
        CU_ASSERT_EQUAL_FATAL(cb_store_retention_step(s, &deleted, &more), 0);
        within &= deleted <= 100;
        total += deleted;
        steps++;
        /* appends continue between steps, new and old */
        put(s, "city/d", "v", now + (int64_t)steps, 1.0, 0);
        put(s, "city/d", "v", cut - 1 - (int64_t)steps, 1.0, 0); /* late, already expired */
        appended++;
        CU_ASSERT_EQUAL(cb_store_flush(s), 0);
    }
    CU_ASSERT(within);
    CU_ASSERT(steps > 20); /* in steps, not in one go */
    /* a second pass removes the late expired ones appended meanwhile */
    do {
        CU_ASSERT_EQUAL_FATAL(cb_store_retention_step(s, &deleted, &more), 0);
        total += deleted;
    } while (more);
    cb_store_get_stats(s, &st);
    CU_ASSERT_EQUAL(st.retention_deleted, total); /* only the steps asked for ran */
    CU_ASSERT(total >= (uint64_t)old_before);
    cb_store_close(s);
    CU_ASSERT_EQUAL(count_rows("SELECT count(*) FROM samples WHERE ts < 1732396400000"), 0);
    CU_ASSERT_EQUAL(count_rows("SELECT count(*) FROM samples WHERE ts >= 1732396400000"),
                    3 * 360 + appended);
    CU_ASSERT_EQUAL(count_rows("SELECT count(*) FROM rollup_1m WHERE bucket < 1732392800000"), 0);
    CU_ASSERT(count_rows("SELECT count(*) FROM rollup_1m WHERE bucket >= 1732392800000") >= 120);
    /* 1h rollups are kept 730 days: all there */
    CU_ASSERT(count_rows("SELECT count(*) FROM rollup_1h WHERE bucket < 1732392800000") >= 2);
    teardown();
}

/* The audit log is kept with the alerts (storage.retention.alerts): older
 * entries go, as do silences that ended before the cut; newer ones stay. */
static void test_retention_audit_with_alerts(void)
{
    setup();
    int64_t now = 1732400000000LL, hour = 3600 * 1000;
    cfg.storage_retention_alerts_ms = 24 * hour;
    struct cb_store *s = open_store();
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    struct cb_clock clk = {cb_clock_manual_now, &now};
    cb_store_set_clock(s, &clk);
    char err[256], sql[512];
    sqlite3 *c = cb_store_open_connection(dbpath, err, sizeof err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    for (int i = 0; i < 48; i++) { /* one entry and one ended silence an hour, 2 days */
        int64_t at = now - (int64_t)i * hour - 1;
        snprintf(sql, sizeof sql,
                 "INSERT INTO audit_log(at, who, action, target) VALUES (%lld, 'li.wei', 'ack', "
                 "'r/d=%d');"
                 "INSERT INTO silences(matchers, starts, ends, created_at, expired_at, expired_by)"
                 " VALUES ('[]', %lld, %lld, %lld, %lld, 'li.wei')",
                 (long long)at, i, (long long)(at - hour), (long long)at, (long long)(at - hour),
                 (long long)at);
        CU_ASSERT_EQUAL(sqlite3_exec(c, sql, NULL, NULL, NULL), SQLITE_OK);
    }
    sqlite3_close(c);
    uint64_t deleted = 0;
    int more = 1;
    while (more)
        CU_ASSERT_EQUAL_FATAL(cb_store_retention_step(s, &deleted, &more), 0);
    cb_store_close(s);
    int64_t cut = now - 24 * hour;
    snprintf(sql, sizeof sql, "SELECT count(*) FROM audit_log WHERE at < %lld", (long long)cut);
    CU_ASSERT_EQUAL(count_rows(sql), 0);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM audit_log WHERE at >= %lld", (long long)cut);
    CU_ASSERT_EQUAL(count_rows(sql), 24);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM silences WHERE ends >= %lld", (long long)cut);
    CU_ASSERT_EQUAL(count_rows(sql), 24);
    CU_ASSERT_EQUAL(count_rows("SELECT count(*) FROM silences"), 24);
    teardown();
}

/* ---- queries --------------------------------------------------------------------- */

struct bucket_list {
    struct cb_bucket b[512];
    size_t n;
};

static int on_bucket(void *ctx, const char *topic, const char *metric, const struct cb_bucket *b)
{
    (void)topic;
    (void)metric;
    struct bucket_list *l = ctx;
    if (l->n < 512)
        l->b[l->n++] = *b;
    return 0;
}

struct raw_list {
    char topic[64][32];
    int64_t ts[64];
    size_t n;
};

static int on_raw(void *ctx, const char *topic, const char *metric, int64_t ts, double v)
{
    (void)metric;
    (void)v;
    struct raw_list *l = ctx;
    if (l->n >= 64)
        return 1;
    snprintf(l->topic[l->n], 32, "%s", topic);
    l->ts[l->n++] = ts;
    return 0;
}

static int buckets_equal(const struct bucket_list *a, const struct bucket_list *b)
{
    if (a->n != b->n)
        return 0;
    for (size_t i = 0; i < a->n; i++)
        if (a->b[i].ts != b->b[i].ts || a->b[i].count != b->b[i].count ||
            a->b[i].min != b->b[i].min || a->b[i].max != b->b[i].max ||
            fabs(a->b[i].sum - b->b[i].sum) > 1e-6 || a->b[i].last != b->b[i].last)
            return 0;
    return 1;
}

static void test_query_tiers(void)
{
    setup();
    struct cb_store *s = open_store();
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    /* recent data (tiers depend on the retention cuts): an hour boundary */
    int64_t t0 = (cb_wall_ms() / 3600000 - 4) * 3600000;
    for (int64_t ts = t0; ts < t0 + 3 * 3600000LL; ts += 5000)
        put(s, "city/d01/river/s1", "level", ts, (double)((ts / 5000) % 97), 0);
    put(s, "city/d02/air/a1", "pm25", t0 + 10, 5.0, 0);
    CU_ASSERT_EQUAL(cb_store_flush(s), 0);
    char err[512];
    struct cb_store_reader *r = cb_store_reader_open(dbpath, err, sizeof err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    /* the 1h tier, the 1m tier and raw data give the same hourly buckets */
    struct bucket_list *h = calloc(1, sizeof *h), *m = calloc(1, sizeof *m),
                       *raw = calloc(1, sizeof *raw);
    CU_ASSERT_EQUAL(cb_store_query_buckets(r, "city/d01/river/s1", "level", t0,
                                           t0 + 3 * 3600000LL, 3600000, on_bucket, h),
                    0);
    CU_ASSERT_EQUAL(h->n, 3);
    CU_ASSERT_EQUAL(h->b[0].count, 720);
    CU_ASSERT_EQUAL(cb_store_query_buckets(r, "city/d01/river/s1", "level", t0,
                                           t0 + 3 * 3600000LL, 60000, on_bucket, m),
                    0);
    CU_ASSERT_EQUAL(m->n, 180);
    CU_ASSERT_EQUAL(m->b[0].count, 12);
    /* recombine 1m buckets and raw into hours by hand */
    struct bucket_list *from_m = calloc(1, sizeof *from_m);
    for (size_t i = 0; i < m->n; i++) {
        size_t k = (size_t)((m->b[i].ts - t0) / 3600000);
        struct cb_bucket *b = &from_m->b[k];
        if (!b->count) {
            b->ts = t0 + (int64_t)k * 3600000;
            b->min = m->b[i].min;
            b->max = m->b[i].max;
        }
        b->count += m->b[i].count;
        b->sum += m->b[i].sum;
        b->min = fmin(b->min, m->b[i].min);
        b->max = fmax(b->max, m->b[i].max);
        b->last = m->b[i].last;
        if (k + 1 > from_m->n)
            from_m->n = k + 1;
    }
    CU_ASSERT(buckets_equal(h, from_m));
    CU_ASSERT_EQUAL(cb_store_query_buckets(r, "city/d01/river/s1", "level", t0,
                                           t0 + 3 * 3600000LL, 90000, on_bucket, raw),
                    0);
    CU_ASSERT_EQUAL(raw->n, 120);
    CU_ASSERT_EQUAL(raw->b[0].count, 18);
    /* aggregate over an unaligned range: raw edges + 1m interior */
    struct cb_bucket agg;
    CU_ASSERT_EQUAL(cb_store_query_aggregate(r, "city/d01/river/s1", "level", t0 + 7000,
                                             t0 + 7200000 + 13000, &agg),
                    0);
    CU_ASSERT_EQUAL(agg.count, 1441); /* t0+10s ... t0+2h+10s every 5 s */
    CU_ASSERT_EQUAL(agg.ts, t0 + 7200000 + 10000);
    /* raw rows in (topic, metric, ts) order, all series */
    struct raw_list *rl = calloc(1, sizeof *rl);
    CU_ASSERT_EQUAL(cb_store_query_raw(r, NULL, NULL, t0, t0 + 15001, on_raw, rl), 0);
    CU_ASSERT_EQUAL(rl->n, 5);
    CU_ASSERT_STRING_EQUAL(rl->topic[0], "city/d01/river/s1");
    CU_ASSERT_STRING_EQUAL(rl->topic[4], "city/d02/air/a1");
    CU_ASSERT(rl->ts[0] < rl->ts[1]);
    free(h);
    free(m);
    free(raw);
    free(from_m);
    free(rl);
    cb_store_reader_close(r);
    cb_store_close(s);
    teardown();
}

/* ---- queries: each bucket from the finest tier that holds its data ------------------
 *
 * One store, built as time and retention leave it (default retention: raw
 * 7 d, 1m 90 d, 1h 730 d; the store's clock at `now`, 30 minutes 30 seconds
 * before an hour): every series has a sample every 10 s over whole hours.
 *   old/1h    two hours 100 days ago: raw and 1m deleted, the 1h rows left;
 *             then 6 late samples in its first hour (its 1m row comes back
 *             with 6, its 1h row counts 366)
 *   old/1m    one hour 30 days ago: raw deleted, 1m and 1h left
 *   cut/raw   the hour the raw cut falls in (7 days ago): minutes :00-:29
 *             only in 1m, minute :30 half in raw, :31-:59 in raw and 1m
 *   cut/1m    the hour the 1m cut falls in (90 days ago): raw gone, 1m rows
 *             of :31-:59 left, the 1h row whole
 *   old/raw   an hour 100 days ago stored after retention ran (a day
 *             replayed into the database): all three tiers */
struct tiered {
    int64_t now;                    /* the store's clock during retention */
    int64_t h1, h1m, hraw, hcut1m; /* the hours of old/1h, old/1m, cut/raw, cut/1m */
    int64_t hold;                   /* old/raw */
};

static void put_hours(struct cb_store *s, const char *topic, int64_t from, int hours)
{
    for (int64_t ts = from; ts < from + hours * 3600000LL; ts += 10000)
        put(s, topic, "v", ts, (double)(ts / 10000 % 41), 0);
}

static void tiered_store(struct tiered *t)
{
    int64_t h0 = cb_wall_ms() / 3600000 * 3600000;
    t->now = h0 - 30 * 60000 + 30000;
    t->h1 = h0 - 100 * 86400000LL;
    t->h1m = h0 - 30 * 86400000LL;
    t->hraw = h0 - 7 * 86400000LL - 3600000;
    t->hcut1m = h0 - 90 * 86400000LL - 3600000;
    t->hold = t->h1 + 5 * 3600000LL;
    struct cb_store *s = open_store();
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    struct cb_clock clk = {cb_clock_manual_now, &t->now};
    cb_store_set_clock(s, &clk);
    put_hours(s, "old/1h", t->h1, 2);
    put_hours(s, "old/1m", t->h1m, 1);
    put_hours(s, "cut/raw", t->hraw, 1);
    put_hours(s, "cut/1m", t->hcut1m, 1);
    CU_ASSERT_EQUAL(cb_store_flush(s), 0);
    cb_store_close(s); /* derives both tiers of everything */
    s = open_store();
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    cb_store_set_clock(s, &clk);
    uint64_t deleted;
    int more = 1;
    for (int i = 0; more && i < 1000; i++)
        CU_ASSERT_EQUAL_FATAL(cb_store_retention_step(s, &deleted, &more), 0);
    put_hours(s, "old/raw", t->hold, 1);
    for (int i = 0; i < 6; i++) /* late, into an hour retention emptied */
        put(s, "old/1h", "v", t->h1 + 10 * 60000 + i * 10000, 100.0 + i, 0);
    CU_ASSERT_EQUAL(cb_store_flush(s), 0);
    cb_store_close(s);
    /* what retention left, checked directly */
    char sql[200];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM samples WHERE ts < %lld",
             (long long)(t->now - 7 * 86400000LL));
    CU_ASSERT_EQUAL(count_rows(sql), 360 + 6); /* old/raw and the late ones */
    snprintf(sql, sizeof sql, "SELECT count(*) FROM rollup_1m WHERE bucket < %lld",
             (long long)(t->now - 90 * 86400000LL));
    CU_ASSERT_EQUAL(count_rows(sql), 60 + 1); /* old/raw's and the late ones' */
}

static struct bucket_list *tiered_query(const char *topic, int64_t from, int64_t to,
                                        int64_t step)
{
    char err[512];
    struct cb_store_reader *r = cb_store_reader_open(dbpath, err, sizeof err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    struct bucket_list *l = calloc(1, sizeof *l);
    CU_ASSERT_EQUAL(cb_store_query_buckets(r, topic, "v", from, to, step, on_bucket, l), 0);
    cb_store_reader_close(r);
    return l;
}

static uint64_t total_count(const struct bucket_list *l)
{
    uint64_t n = 0;
    for (size_t i = 0; i < l->n; i++)
        n += l->b[i].count;
    return n;
}

static void test_query_raw_past_retention(void)
{
    setup();
    struct tiered t;
    tiered_store(&t);
    /* the issue: 200 s of a replayed old day at 30 s, not the whole hour */
    struct bucket_list *l = tiered_query("old/raw", t.hold, t.hold + 200000, 30000);
    CU_ASSERT_EQUAL(l->n, 7); /* 200 s rounds up to 210 */
    for (size_t i = 0; i < l->n; i++) {
        CU_ASSERT_EQUAL(l->b[i].ts, t.hold + (int64_t)i * 30000);
        CU_ASSERT_EQUAL(l->b[i].count, 3);
        CU_ASSERT_EQUAL(l->b[i].span_ms, 30000);
    }
    free(l);
    /* the whole hour at 30 s: every sample once */
    l = tiered_query("old/raw", t.hold, t.hold + 3600000, 30000);
    CU_ASSERT_EQUAL(l->n, 120);
    CU_ASSERT_EQUAL(total_count(l), 360);
    free(l);
    teardown();
}

static void test_query_only_1m(void)
{
    setup();
    struct tiered t;
    tiered_store(&t);
    struct bucket_list *l = tiered_query("old/1m", t.h1m, t.h1m + 3600000, 30000);
    CU_ASSERT_EQUAL(l->n, 60); /* one a minute: the 30 s halves are not invented */
    CU_ASSERT_EQUAL(l->b[1].ts, t.h1m + 60000);
    CU_ASSERT_EQUAL(l->b[1].count, 6);
    CU_ASSERT_EQUAL(l->b[1].span_ms, 60000);
    CU_ASSERT_EQUAL(total_count(l), 360);
    free(l);
    l = tiered_query("old/1m", t.h1m, t.h1m + 3600000, 300000);
    CU_ASSERT_EQUAL(l->n, 12);
    CU_ASSERT_EQUAL(l->b[0].count, 30);
    CU_ASSERT_EQUAL(l->b[0].span_ms, 300000);
    free(l);
    teardown();
}

static void test_query_only_1h(void)
{
    setup();
    struct tiered t;
    tiered_store(&t);
    struct bucket_list *l = tiered_query("old/1h", t.h1, t.h1 + 2 * 3600000, 30000);
    CU_ASSERT_EQUAL(l->n, 2);
    CU_ASSERT_EQUAL(l->b[0].ts, t.h1);
    CU_ASSERT_EQUAL(l->b[0].count, 366); /* the late samples once, inside the hour's row */
    CU_ASSERT_EQUAL(l->b[0].span_ms, 3600000);
    CU_ASSERT_EQUAL(l->b[1].ts, t.h1 + 3600000);
    CU_ASSERT_EQUAL(l->b[1].count, 360);
    free(l);
    /* the same at a minute step: the hour's 1m rows do not add up to it */
    l = tiered_query("old/1h", t.h1, t.h1 + 2 * 3600000, 60000);
    CU_ASSERT_EQUAL(l->n, 2);
    CU_ASSERT_EQUAL(total_count(l), 726);
    free(l);
    /* a range starting inside such an hour does not get it */
    l = tiered_query("old/1h", t.h1 + 90 * 60000, t.h1 + 2 * 3600000, 30000);
    CU_ASSERT_EQUAL(l->n, 0);
    free(l);
    teardown();
}

static void test_query_mixed_hours(void)
{
    setup();
    struct tiered t;
    tiered_store(&t);
    /* raw cut at :30:30: minutes :00-:30 from 1m (one bucket each), the rest raw */
    struct bucket_list *l = tiered_query("cut/raw", t.hraw, t.hraw + 3600000, 30000);
    CU_ASSERT_EQUAL(l->n, 31 + 58);
    CU_ASSERT_EQUAL(total_count(l), 360);
    CU_ASSERT_EQUAL(l->b[30].ts, t.hraw + 30 * 60000); /* half its samples left: the row */
    CU_ASSERT_EQUAL(l->b[30].count, 6);
    CU_ASSERT_EQUAL(l->b[30].span_ms, 60000);
    CU_ASSERT_EQUAL(l->b[31].ts, t.hraw + 31 * 60000);
    CU_ASSERT_EQUAL(l->b[31].count, 3);
    CU_ASSERT_EQUAL(l->b[31].span_ms, 30000);
    free(l);
    /* 1m cut at :30:30: only the 1h row has the whole hour */
    l = tiered_query("cut/1m", t.hcut1m, t.hcut1m + 3600000, 30000);
    CU_ASSERT_EQUAL(l->n, 1);
    CU_ASSERT_EQUAL(l->b[0].count, 360);
    CU_ASSERT_EQUAL(l->b[0].span_ms, 3600000);
    free(l);
    /* every series in one query, over all of it: each sample counted once */
    l = tiered_query(NULL, t.h1, t.now, 30000);
    CU_ASSERT_EQUAL(total_count(l), 720 + 6 + 360 * 4);
    free(l);
    teardown();
}

struct sensor_seen {
    int n;
    char topic[8][32];
    size_t nmetrics[8];
    int64_t last_ts[8];
    double last_value[8];
};

static int on_sensor(void *ctx, const struct cb_sensor_info *si)
{
    struct sensor_seen *ss = ctx;
    if (ss->n >= 8)
        return 1;
    snprintf(ss->topic[ss->n], 32, "%s", si->topic);
    ss->nmetrics[ss->n] = si->nmetrics;
    ss->last_ts[ss->n] = si->nmetrics ? si->metrics[0].last_ts : 0;
    ss->last_value[ss->n] = si->nmetrics ? si->metrics[0].last_value : 0;
    ss->n++;
    return 0;
}

struct scan_seen {
    int64_t last;
    int ordered;
    int n;
};

static int on_scan(void *ctx, const char *topic, const char *metric, int64_t ts, double v)
{
    (void)topic;
    (void)metric;
    (void)v;
    struct scan_seen *ss = ctx;
    ss->ordered &= ts >= ss->last;
    ss->last = ts;
    ss->n++;
    return 0;
}

static void test_sensors_and_scan(void)
{
    setup();
    struct cb_store *s = open_store();
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    struct cb_sample a[2] = {{"flow", 5000, 41.5}, {"level", 5000, 3.1}};
    CU_ASSERT_EQUAL(cb_store_append(s, "city/d07/river/s12", "urn:dev:s12:", a, 2, 0), 0);
    a[0].ts_ms = a[1].ts_ms = 9000;
    a[1].value = 3.4;
    CU_ASSERT_EQUAL(cb_store_append(s, "city/d07/river/s12", NULL, a, 2, 0), 0);
    put(s, "city/d01/noise/n9", "value", 7000, 63.5, 0);
    put(s, "city/d01/noise/n9", "value", 2000, 60.0, 0); /* late */
    CU_ASSERT_EQUAL(cb_store_flush(s), 0);
    char err[512];
    struct cb_store_reader *r = cb_store_reader_open(dbpath, err, sizeof err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    struct sensor_seen ss = {0};
    CU_ASSERT_EQUAL(cb_store_list_sensors(r, on_sensor, &ss), 0);
    CU_ASSERT_EQUAL(ss.n, 2);
    CU_ASSERT_STRING_EQUAL(ss.topic[0], "city/d01/noise/n9");
    CU_ASSERT_EQUAL(ss.last_ts[0], 7000);
    CU_ASSERT_EQUAL(ss.nmetrics[1], 2);
    CU_ASSERT_EQUAL(ss.last_ts[1], 9000);
    CU_ASSERT_EQUAL(ss.last_value[1], 41.5);
    struct scan_seen sc = {INT64_MIN, 1, 0};
    CU_ASSERT_EQUAL(cb_store_scan_since(r, 5000, on_scan, &sc), 0);
    CU_ASSERT_EQUAL(sc.n, 5);
    CU_ASSERT(sc.ordered);
    cb_store_reader_close(r);
    cb_store_close(s);
    CU_ASSERT_EQUAL(count_rows("SELECT count(*) FROM sensors WHERE device = 'urn:dev:s12:' AND "
                               "first_seen = 5000 AND last_seen = 9000"),
                    1);
    CU_ASSERT_EQUAL(count_rows("SELECT first_seen FROM sensors WHERE topic = 'city/d01/noise/n9'"),
                    2000);
    teardown();
}

/* ---- faults ------------------------------------------------------------------------ */

static void test_disk_full(void)
{
    setup();
    cfg.storage_max_pending_rows = 1000;
    struct cb_store *s = open_store();
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    for (int i = 0; i < 200; i++)
        put(s, "city/a", "v", i * 1000, i, (uint64_t)i + 1);
    CU_ASSERT_EQUAL(cb_store_flush(s), 0);
    /* the disk is full: no page beyond the current ones */
    char sql[96];
    snprintf(sql, sizeof sql, "PRAGMA max_page_count = %lld",
             (long long)count_rows("PRAGMA page_count"));
    CU_ASSERT_EQUAL(storage__writer_exec(s, sql), SQLITE_OK);
    char topic[32];
    for (int i = 0; i < 600; i++) {
        snprintf(topic, sizeof topic, "city/full/%d", i);
        put(s, topic, "v", 1000000 + i, i, 300 + (uint64_t)i);
    }
    CU_ASSERT_EQUAL(cb_store_flush(s), -1);
    struct cb_store_stats st;
    cb_store_get_stats(s, &st);
    CU_ASSERT_EQUAL(st.health, CB_STORE_DEGRADED);
    CU_ASSERT(st.full_errors >= 1);
    CU_ASSERT(strstr(st.last_error, "disk full") != NULL);
    CU_ASSERT_EQUAL(st.committed_journal_pos, 200);
    CU_ASSERT_EQUAL(st.pending_rows, 600);
    /* memory stays bounded: beyond max_pending_rows messages are refused */
    struct cb_sample many[300];
    for (int i = 0; i < 300; i++)
        many[i] = (struct cb_sample){"v", 2000000 + i, 1.0};
    CU_ASSERT_EQUAL(cb_store_append(s, "city/b", NULL, many, 300, 900), 0);
    CU_ASSERT_EQUAL(cb_store_append(s, "city/b", NULL, many, 300, 901), -1);
    cb_store_get_stats(s, &st);
    CU_ASSERT_EQUAL(st.rows_dropped, 300);
    CU_ASSERT_EQUAL(st.rows_lost, 0);
    CU_ASSERT_EQUAL(st.health, CB_STORE_FAILED);
    /* a QoS 0 message has no journal behind it: its rows are lost, and the
     * health text says so apart from the journaled ones */
    CU_ASSERT_EQUAL(cb_store_append(s, "city/c", NULL, many, 300, 0), -1);
    CU_ASSERT_EQUAL(cb_store_append(s, "city/d", NULL, many, 100, 902), 0); /* full to the row */
    struct cb_sample bad = {"v", 3000000, -1.0};
    CU_ASSERT_EQUAL(cb_store_quarantine(s, "city/c", &bad, "invalid_range:x", 0), -1);
    cb_store_get_stats(s, &st);
    CU_ASSERT_EQUAL(st.rows_dropped, 300);
    CU_ASSERT_EQUAL(st.rows_lost, 301);
    CU_ASSERT(strstr(st.last_error, "300 rows dropped from memory, kept in the journal") != NULL);
    CU_ASSERT(strstr(st.last_error, "301 rows of QoS 0 messages (never journaled) lost") != NULL);
    /* a quarantined sample of a journaled message holds the position too */
    CU_ASSERT_EQUAL(cb_store_quarantine(s, "city/c", &bad, "invalid_range:x", 899), -1);
    cb_store_get_stats(s, &st);
    CU_ASSERT_EQUAL(st.rows_dropped, 301);
    CU_ASSERT(st.pending_rows <= 1000);
    /* readers still read what was committed */
    CU_ASSERT_EQUAL(count_rows("SELECT count(*) FROM samples"), 200);
    /* space returns: everything queued commits; the position stays below the
     * dropped message, so the next start replays it from the journal */
    CU_ASSERT_EQUAL(storage__writer_exec(s, "PRAGMA max_page_count = 1073741823"), SQLITE_OK);
    CU_ASSERT_EQUAL(cb_store_flush(s), 0);
    cb_store_get_stats(s, &st);
    CU_ASSERT_EQUAL(st.health, CB_STORE_OK);
    CU_ASSERT_EQUAL(st.rows_written, 200 + 600 + 300 + 100);
    CU_ASSERT_EQUAL(st.committed_journal_pos, 898); /* below the dropped quarantine row */
    cb_store_close(s);
    CU_ASSERT_EQUAL(count_rows("SELECT count(*) FROM samples"), 1200);
    sqlite3 *db = raw_db();
    sqlite3_stmt *q = NULL;
    sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &q, NULL);
    CU_ASSERT_EQUAL(sqlite3_step(q), SQLITE_ROW);
    CU_ASSERT_STRING_EQUAL((const char *)sqlite3_column_text(q, 0), "ok");
    sqlite3_finalize(q);
    CU_ASSERT_EQUAL(rollup_mismatches(db, "rollup_1m", 60000), 0);
    sqlite3_close(db);
    teardown();
}

/* A sensor with many metrics, each message listing them in another order,
 * with a failed commit in the middle (its ids are forgotten and read again):
 * every sample lands in its own series, one series per metric. */
static void test_wide_sensor(void)
{
    enum { METRICS = 40, MESSAGES = 12 };
    setup();
    struct cb_store *s = open_store();
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    CU_ASSERT_EQUAL(storage__writer_exec(s, "PRAGMA busy_timeout = 20"), SQLITE_OK);
    char names[METRICS][16];
    for (int i = 0; i < METRICS; i++)
        snprintf(names[i], sizeof names[i], "m%02d", (i * 17) % METRICS);
    for (int k = 0; k < MESSAGES; k++) {
        struct cb_sample msg[METRICS];
        int order[METRICS];
        for (int i = 0; i < METRICS; i++)
            order[i] = i;
        for (int i = METRICS - 1; i > 0; i--) {
            int j = (int)(next_rand() % (uint64_t)(i + 1)), t = order[i];
            order[i] = order[j];
            order[j] = t;
        }
        for (int i = 0; i < METRICS; i++) /* value: metric number * 1000 + message */
            msg[i] = (struct cb_sample){names[order[i]], 1000 * (k + 1),
                                        atoi(names[order[i]] + 1) * 1000.0 + k};
        CU_ASSERT_EQUAL(cb_store_append(s, "city/d01/weather/s01", NULL, msg, METRICS,
                                        (uint64_t)k + 1),
                        0);
        if (k == MESSAGES / 2) { /* this commit fails and rolls back, then succeeds */
            sqlite3 *other = raw_db();
            CU_ASSERT_EQUAL(sqlite3_exec(other, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
            CU_ASSERT_EQUAL(cb_store_flush(s), -1);
            CU_ASSERT_EQUAL(sqlite3_exec(other, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
            sqlite3_close(other);
        }
        if (k % 3 == 2 || k == MESSAGES / 2)
            CU_ASSERT_EQUAL(cb_store_flush(s), 0);
    }
    CU_ASSERT_EQUAL(cb_store_flush(s), 0);
    struct cb_store_stats st;
    cb_store_get_stats(s, &st);
    CU_ASSERT_EQUAL(st.series, METRICS);
    CU_ASSERT_EQUAL(st.rows_written, METRICS * MESSAGES);
    cb_store_close(s);
    CU_ASSERT_EQUAL(count_rows("SELECT count(*) FROM series"), METRICS);
    CU_ASSERT_EQUAL(count_rows("SELECT count(*) FROM samples"), METRICS * MESSAGES);
    /* every sample is in the series of its metric, with its message's ts */
    CU_ASSERT_EQUAL(count_rows("SELECT count(*) FROM samples sa JOIN series sr ON "
                               "sr.id = sa.series_id WHERE CAST(substr(sr.metric, 2) AS INTEGER) "
                               "* 1000 + sa.ts / 1000 - 1 = sa.value"),
                    METRICS * MESSAGES);
    teardown();
}

static void test_busy(void)
{
    setup();
    struct cb_store *s = open_store();
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    CU_ASSERT_EQUAL(storage__writer_exec(s, "PRAGMA busy_timeout = 20"), SQLITE_OK);
    sqlite3 *other = raw_db();
    CU_ASSERT_EQUAL(sqlite3_exec(other, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
    put(s, "city/a", "v", 1000, 1.0, 1);
    CU_ASSERT_EQUAL(cb_store_flush(s), -1);
    struct cb_store_stats st;
    cb_store_get_stats(s, &st);
    CU_ASSERT(st.busy_errors >= 1);
    CU_ASSERT_EQUAL(st.health, CB_STORE_DEGRADED);
    CU_ASSERT(strstr(st.last_error, "busy") != NULL);
    CU_ASSERT_EQUAL(sqlite3_exec(other, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(other);
    CU_ASSERT_EQUAL(cb_store_flush(s), 0);
    cb_store_get_stats(s, &st);
    CU_ASSERT_EQUAL(st.health, CB_STORE_OK);
    CU_ASSERT_EQUAL(st.rows_written, 1);
    cb_store_close(s);
    teardown();
}

static void test_read_only(void)
{
    setup();
    struct cb_store *s = open_store();
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    put(s, "city/a", "v", 1000, 1.0, 1);
    CU_ASSERT_EQUAL(cb_store_flush(s), 0);
    cb_store_close(s);
    /* root writes through file modes: the child drops to an unprivileged user */
    CU_ASSERT_EQUAL(chmod(dir, 0777), 0);
    CU_ASSERT_EQUAL(chmod(dbpath, 0444), 0);
    char wal[160];
    snprintf(wal, sizeof wal, "%s-wal", dbpath);
    unlink(wal);
    snprintf(wal, sizeof wal, "%s-shm", dbpath);
    unlink(wal);
    pid_t pid = fork();
    CU_ASSERT_FATAL(pid >= 0);
    if (pid == 0) {
        if (geteuid() == 0) {
            struct passwd *pw = getpwnam("nobody");
            if (!pw || setgid(pw->pw_gid) < 0 || setuid(pw->pw_uid) < 0)
                _exit(3);
        }
        char err[512] = "";
        struct cb_store *ro = cb_store_open(&cfg, NULL, err, sizeof err);
        if (ro)
            _exit(1);
        _exit(strstr(err, "read-only") ? 0 : 2);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    CU_ASSERT(WIFEXITED(status));
    CU_ASSERT_EQUAL(WEXITSTATUS(status), 0);
    chmod(dbpath, 0644);
    CU_ASSERT_EQUAL(count_rows("SELECT count(*) FROM samples"), 1);
    teardown();
}

static void test_quarantine_and_pos(void)
{
    setup();
    struct cb_store *s = open_store();
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    struct cb_sample bad = {"level", 5000, 99.0};
    CU_ASSERT_EQUAL(cb_store_quarantine(s, "city/a", &bad, "invalid_range:river_flood", 0), 0);
    cb_store_note_journal_pos(s, 41); /* a rejected payload */
    CU_ASSERT_EQUAL(cb_store_flush(s), 0);
    CU_ASSERT_EQUAL(cb_store_committed_journal_pos(s), 41);
    struct cb_store_stats st;
    cb_store_get_stats(s, &st);
    CU_ASSERT_EQUAL(st.quarantined, 1);
    cb_store_close(s);
    CU_ASSERT_EQUAL(count_rows("SELECT count(*) FROM quarantine WHERE reason = "
                               "'invalid_range:river_flood' AND value = 99.0"),
                    1);
    s = open_store();
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    CU_ASSERT_EQUAL(cb_store_committed_journal_pos(s), 41);
    cb_store_close(s);
    teardown();
}

/* ---- kill -9 in the writer's steps -------------------------------------------- */

/* What a writer child shares with the test, through its kill -9. */
struct crash_share {
    volatile int phase;           /* CRASH_* the child is in */
    volatile int spans_committed; /* spans whose commit has returned */
};
enum { CRASH_START, CRASH_COMMIT, CRASH_SEAL, CRASH_COMPACT };
enum { CRASH_SERIES = 30, CRASH_SPAN = 20 /* seconds of every series a commit */ };

static double crash_value(int series, int64_t second)
{
    return (double)((second * 37 + series * 11) % 2000) / 10.0;
}

/* The child: from span `from` on until killed, a commit of CRASH_SPAN
 * seconds of every series (the head's blocks); after every third, a seal
 * and the compaction's slices (slices of 10 chunks). The clock stays
 * before the samples: no rollup pass (their crashes: child_writes). */
static void crash_child(struct crash_share *sh, int from, int64_t t0)
{
    cfg.storage_retention_step_rows = 40;
    char err[512] = "", topic[32];
    struct cb_store *s = cb_store_open(&cfg, NULL, err, sizeof err);
    if (!s)
        _exit(1);
    int64_t now = t0;
    struct cb_clock clk = {cb_clock_manual_now, &now};
    cb_store_set_clock(s, &clk);
    for (int span = from; span < from + 100000; span++) {
        sh->phase = CRASH_COMMIT;
        for (int64_t i = (int64_t)span * CRASH_SPAN; i < (int64_t)(span + 1) * CRASH_SPAN; i++)
            for (int k = 0; k < CRASH_SERIES; k++) {
                snprintf(topic, sizeof topic, "city/c%02d", k);
                struct cb_sample smp = {"v", t0 + i * 1000, crash_value(k, i)};
                if (cb_store_append(s, topic, NULL, &smp, 1, 0) != 0)
                    _exit(2);
            }
        if (cb_store_flush(s) != 0)
            _exit(3);
        sh->spans_committed = span + 1;
        if (span % 3 == 2) {
            sh->phase = CRASH_SEAL;
            if (storage__seal(s) != SQLITE_OK)
                _exit(4);
            sh->phase = CRASH_COMPACT;
            int r;
            while ((r = storage__compact_slice(s)) == SQLITE_ROW)
                ;
            if (r != SQLITE_OK)
                _exit(5);
        }
    }
    _exit(6);
}

/* Every second of the first `spans` spans of every series is read once
 * with its value bit for bit; what a killed commit left is read at most
 * once and right. Returns the samples read. */
static size_t assert_crash_rows(int spans, int64_t t0)
{
    sqlite3 *db = raw_db();
    int64_t series_of[CRASH_SERIES * 4 + 1];
    for (size_t i = 0; i < sizeof series_of / sizeof series_of[0]; i++)
        series_of[i] = -1;
    sqlite3_stmt *st = NULL;
    CU_ASSERT_EQUAL_FATAL(sqlite3_prepare_v2(db, "SELECT sr.id, se.topic FROM series sr JOIN "
                                                 "sensors se ON se.id = sr.sensor_id",
                                             -1, &st, NULL),
                          SQLITE_OK);
    while (sqlite3_step(st) == SQLITE_ROW) {
        int64_t id = sqlite3_column_int64(st, 0);
        int k = -1;
        CU_ASSERT(sscanf((const char *)sqlite3_column_text(st, 1), "city/c%d", &k) == 1);
        CU_ASSERT_FATAL(id >= 0 && id < (int64_t)(sizeof series_of / sizeof series_of[0]));
        series_of[id] = k;
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    struct rows r;
    rows_read(&r);
    int64_t whole = (int64_t)spans * CRASH_SPAN, in_whole[CRASH_SERIES] = {0};
    size_t wrong = 0;
    for (size_t i = 0; i < r.n; i++) {
        int k = series_of[r.id[i]];
        int64_t second = (r.ts[i] - t0) / 1000;
        double want = k >= 0 ? crash_value(k, second) : NAN;
        if (k < 0 || (r.ts[i] - t0) % 1000 != 0 || memcmp(&want, &r.v[i], sizeof want) != 0 ||
            (i > 0 && r.id[i] == r.id[i - 1] && r.ts[i] <= r.ts[i - 1]))
            wrong++;
        else if (second < whole)
            in_whole[k]++;
    }
    CU_ASSERT_EQUAL(wrong, 0);
    for (int k = 0; k < CRASH_SERIES; k++)
        CU_ASSERT_EQUAL(in_whole[k], whole);
    size_t n = r.n;
    rows_free(&r);
    return n;
}

/* A writer killed (SIGKILL) at random moments of its three steps between
 * commits: the commit of the head's blocks, a seal, a compaction slice. Each
 * restart re-sends the span the kill cut (as the journal's replay does).
 * After every kill and at the end, every sample committed is read exactly
 * once and right, and the tiers' chunks never overlap. */
static void test_kill_in_writer_steps(void)
{
    setup();
    struct crash_share *sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE,
                                  MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CU_ASSERT_FATAL(sh != MAP_FAILED);
    int64_t t0 = 1732400000000LL;
    uint64_t moments = 0xc0ffee;
    int spans = 0, killed_in[4] = {0};
    for (int cycle = 0; cycle < 12; cycle++) {
        int target = CRASH_COMMIT + cycle % 3;
        sh->phase = CRASH_START;
        sh->spans_committed = spans;
        pid_t pid = fork();
        CU_ASSERT_FATAL(pid >= 0);
        if (pid == 0)
            crash_child(sh, spans, t0);
        /* into the target step, a few commits after the restart, then a
         * random moment of up to 3 ms */
        int status = 0;
        for (int waited = 0; waited < 200000; waited++) {
            if (sh->phase == target && sh->spans_committed >= spans + 3)
                break;
            if (waitpid(pid, &status, WNOHANG) == pid)
                break;
            struct timespec ts = {0, 50000};
            nanosleep(&ts, NULL);
        }
        struct timespec ts = {0, (long)(cb_splitmix_next(&moments) % 3000000)};
        nanosleep(&ts, NULL);
        killed_in[sh->phase]++;
        CU_ASSERT_EQUAL(kill(pid, SIGKILL), 0);
        CU_ASSERT_EQUAL(waitpid(pid, &status, 0), pid);
        CU_ASSERT_FATAL(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
        CU_ASSERT(sh->spans_committed >= spans);
        spans = sh->spans_committed;
        assert_crash_rows(spans, t0);
        assert_chunks_ordered();
    }
    /* the last restart compacts what is left */
    struct cb_store *s = open_store();
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    CU_ASSERT_EQUAL(storage__seal(s), SQLITE_OK);
    CU_ASSERT_EQUAL(storage__compact(s), SQLITE_OK);
    cb_store_close(s);
    CU_ASSERT(assert_crash_rows(spans, t0) >= (size_t)spans * CRASH_SPAN * CRASH_SERIES);
    assert_chunks_ordered();
    CU_ASSERT_EQUAL(count_rows("SELECT count(*) FROM chunks_recent"), 0);
    fprintf(stderr, "[%d spans; kills in commits %d, seals %d, compaction slices %d] ", spans,
            killed_in[CRASH_COMMIT], killed_in[CRASH_SEAL], killed_in[CRASH_COMPACT]);
    CU_ASSERT(killed_in[CRASH_COMPACT] > 0 && killed_in[CRASH_SEAL] + killed_in[CRASH_COMMIT] > 0);
    munmap(sh, sizeof *sh);
    teardown();
}

void cb_test_suite_storage(void)
{
    CU_pSuite s = CU_add_suite("storage", NULL, NULL);
    CU_add_test(s, "storage: a new file gets the current schema in WAL mode", test_schema_created);
    CU_add_test(s, "storage: the database, its -wal and -shm are created readable by the owner only",
                test_files_private);
    CU_add_test(s, "storage: the writer reports its page cache, which stays within storage.cache_size",
                test_page_cache_reported);
    CU_add_test(s, "storage: a version-1 database migrates forward keeping its rows",
                test_migration);
    CU_add_test(s, "storage: a foreign file and a newer schema are refused untouched",
                test_foreign_and_newer);
    CU_add_test(s, "storage: the same rows twice are stored once", test_idempotent);
    CU_add_test(s, "storage: a sealed head reads back every sample bit for bit from chunks of "
                   "about 120 samples and under 2 bytes each", test_chunks_seal);
    CU_add_test(s, "storage: a late sample is merged into its closed chunk, a redelivery of a "
                   "closed or open sample is a duplicate, chunks never overlap",
                test_chunks_late);
    CU_add_test(s, "storage: a schema-6 database is converted to chunks in steps between commits, "
                   "every sample kept, new ones stored meanwhile",
                test_chunks_convert_v6);
    CU_add_test(s, "storage: new rows go in multi-row inserts into the head; a row slipped in is stored once",
                test_chunked_inserts);
    CU_add_test(s, "storage: a seal of series with long history appends to the recent tier: "
                   "a few WAL frames, not a page per series",
                test_tiers_seal_appends);
    CU_add_test(s, "storage: a writer killed (SIGKILL) in a head commit, a seal or a compaction "
                   "slice, twelve times: every committed sample is read exactly once and right",
                test_kill_in_writer_steps);
    CU_add_test(s, "storage: a compaction runs in slices between commits: a slice failing midway "
                   "changes nothing, and through slices, the failure, a close and the reopen "
                   "every sample is read exactly once",
                test_tiers_compaction_slices);
    CU_add_test(s, "storage: a compaction slice is one transaction: failing midway it changes nothing, "
                   "and readers see the same samples throughout",
                test_tiers_compaction_atomic);
    CU_add_test(s, "storage: late samples merge into the tier that holds their chunk, "
                   "between tiers and seals too; chunks never overlap across tiers",
                test_tiers_late);
    CU_add_test(s, "storage: a commit of one sample for each of 10,000 series writes a few WAL "
                   "frames in head blocks, not a page per 150 samples",
                test_head_blocks_commit_frames);
    CU_add_test(s, "storage: the head in blocks reads exactly as the head in rows through the "
                   "samples table, after every random commit of new, late and redelivered samples",
                test_head_blocks_read_as_rows);
    CU_add_test(s, "storage: redeliveries and late samples are found across the head's blocks; "
                   "a seal reads every block and empties the head",
                test_head_blocks_dedup_and_seal);
    CU_add_test(s, "storage: a step-9 file with its head in rows upgrades to blocks: readers see "
                   "every sample before and after the start seals and drops the old head",
                test_head_blocks_from_v9);
    CU_add_test(s, "storage: random new, late and redelivered samples read back exactly "
                   "through seals and compactions, rollups too",
                test_tiers_property);
    CU_add_test(s, "storage: retention cuts the recent tier like chunks, the straddling chunk "
                   "trimmed",
                test_tiers_retention);
    CU_add_test(s, "storage: a retention pass seals and compacts only when the head or the "
                   "recent tier holds samples older than its cut",
                test_tiers_retention_spares_young);
    CU_add_test(s, "storage: a schema-8 file opens at schema 9 with its chunks in place; new "
                   "seals go to the recent tier",
                test_tiers_from_v8);
    CU_add_test(s, "storage: an hour of rollup passes writes at most four pages a series "
                   "(the 1-minute tier's new rows once an hour, the 1-hour tier's)",
                test_rollup_pass_pages);
    CU_add_test(s, "storage: readers answer the same before a rollup pass, after a writer died "
                   "in the middle of it, while the restart resumes it and after",
                test_rollup_pass_readers_same);
    CU_add_test(s, "storage: the 1-minute derivation runs in passes that end on a closed hour; "
                   "queries count every sample meanwhile",
                test_rollups_batched);
    CU_add_test(s, "storage: rollups equal aggregates of raw samples, late ones too",
                test_rollups_property);
    CU_add_test(s, "storage: rollups stay exact with many rows per bucket, restarts and deletions",
                test_rollups_dense_batches);
    CU_add_test(s, "storage: rollups are derived after their bucket closes; queries and late rows stay exact",
                test_rollups_derived);
    CU_add_test(s, "storage: after a writer dies mid-derivation, the next run derives everything",
                test_rollups_after_crash);
    CU_add_test(s, "storage: retention deletes exactly what is older than the cut, in steps",
                test_retention_steps);
    CU_add_test(s, "storage: the audit log and ended silences are kept for "
                   "storage.retention.alerts, then deleted",
                test_retention_audit_with_alerts);
    CU_add_test(s, "storage: hourly, minute and raw-step buckets of complete tiers agree",
                test_query_tiers);
    CU_add_test(s, "storage: raw samples kept past raw retention answer 30 s buckets (a replayed old day)",
                test_query_raw_past_retention);
    CU_add_test(s, "storage: data only in the 1-minute tier gives one bucket per minute, with its span",
                test_query_only_1m);
    CU_add_test(s, "storage: data only in the 1-hour tier gives one bucket per hour, late samples once",
                test_query_only_1h);
    CU_add_test(s, "storage: an hour part raw, part 1m takes each minute from its finest whole tier",
                test_query_mixed_hours);
    CU_add_test(s, "storage: sensors list their metrics and last values; scan is in ts order",
                test_sensors_and_scan);
    CU_add_test(s, "storage: disk full holds rows bounded, corrupts nothing, recovers",
                test_disk_full);
    CU_add_test(s, "storage: a busy database is retried until it frees", test_busy);
    CU_add_test(s, "storage: a sensor's many metrics, in any order, each get their own series",
                test_wide_sensor);
    CU_add_test(s, "storage: a read-only database file is refused with a clear error",
                test_read_only);
    CU_add_test(s, "storage: quarantine and rejected positions commit", test_quarantine_and_pos);
}
