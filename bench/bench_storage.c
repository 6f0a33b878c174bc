/* Storage benchmark. Prints `key value` lines:
 *
 *   writer_rows_per_s        cb_store_append + writer thread, 10,000 series at
 *                            1 Hz from now on, one commit per simulated
 *                            second, until the close has derived the rollups
 *   plain_rows_per_s         a plain SQLite program writing the same rows and
 *                            the same rollups into the same schema, the
 *                            samples one row each (table plain_samples, the
 *                            layout before chunks, schema 6): one
 *                            transaction per second, prepared statements,
 *                            rows sorted by (series, ts), rollups merged
 *                            once per (series, bucket) per commit with an
 *                            UPDATE and, if no row was there, an INSERT,
 *                            WAL, synchronous NORMAL, the same cache size
 *   writer_vs_plain          the ratio (goal >= 0.8)
 *   writer_5_per_commit_rows_per_s, plain_5_per_commit_rows_per_s,
 *   writer_vs_plain_5_per_commit   the same with 5 rows per series per
 *                            commit (as under a flood of messages: several
 *                            rows per rollup bucket in one commit)
 *   plain_samples_only_rows_per_s   the same without rollups (for scale)
 *   bytes_per_sample         database size / samples (samples + rollups +
 *                            sensors, after the WAL is checkpointed)
 *   query_24h_1m_p50_ms, query_24h_1m_p99_ms   one series, 24 hours of 1 Hz
 *                            samples, buckets of 1 minute (goal p99 <= 2 ms)
 *   query_1h_30s_p50_ms, query_1h_30s_p99_ms   the same series, one hour in
 *                            the middle of the day at 30 s: a step no rollup
 *                            divides, so raw samples, each minute checked
 *                            against its 1-minute row
 *   query_raw_day_ms         that series' raw day (86,400 samples) through
 *                            cb_store_query_raw, the fastest of 20 reads
 *   journal_appends_per_s    cb_journal_append of a 60-byte message, no fsync
 *   steady_bytes_written_per_sample, steady_us_per_sample   the writer once
 *                            every series has history (500 rows each), one
 *                            row per series per commit, as when sensors
 *                            report every few seconds: bytes handed to the
 *                            kernel (write(2) and pwrite(2): WAL frames and
 *                            checkpoints) and wall time, per sample
 *   seal_ms_10k, seal_bytes_per_sample   the seal of a full head (10,000
 *                            series with 500 sealed samples each, then 120
 *                            commits of one sample per series): its one
 *                            transaction's wall time (commits wait for it,
 *                            the loop does not) and bytes handed to the
 *                            kernel per sealed sample
 *   derive_read_head_ms, derive_read_chunks_ms   the rollup derivation's
 *                            source read of one closed minute of every
 *                            series (10,000 reads of `samples` by series and
 *                            time) from the head before the seal and from
 *                            the chunks after it; the second of two reads
 *                            each, as in the writer, whose cache is warm
 *   compact_ms_10k, compact_rows, compact_bytes_per_sample   then the
 *                            compaction of the recent tier those two seals
 *                            left (10,000 series, 5 chunks each, 1.7 million
 *                            samples) into `chunks`: its wall time (all
 *                            its slices), the chunk rows moved, the bytes
 *                            handed to the kernel per sample moved
 *   compact_slices, compact_slice_max_ms   the compaction's slices (each
 *                            one transaction between commits, as the
 *                            writer runs them) and the longest: what a
 *                            commit waits for at most
 *
 * Usage: bench_storage [--seconds N] [--seal-only] (simulated seconds of
 * 10,000 series; 30. --seal-only: the seal and derivation figures alone) */
#include <dirent.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/config.h"
#include "storage/storage.h"
#include "storage/storage_int.h"

#define NSERIES 10000

static char dir[64];
static char topics[NSERIES][40];

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void rm_rf(const char *path)
{
    DIR *d = opendir(path);
    if (!d) {
        unlink(path);
        return;
    }
    struct dirent *e;
    char p[512];
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            snprintf(p, sizeof p, "%s/%s", path, e->d_name);
            rm_rf(p);
        }
    closedir(d);
    rmdir(path);
}

static struct cb_config make_cfg(const char *name)
{
    struct cb_config cfg;
    cb_config_defaults(&cfg);
    free(cfg.storage_db);
    char p[128];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    cfg.storage_db = strdup(p);
    return cfg;
}

static int64_t file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (int64_t)st.st_size : 0;
}

/* The rows of the benchmark: `per` samples per series per commit (one
 * commit per simulated second), at ts = t0 + sec * 1000 + spread, so several
 * rows of a series may fall into one rollup bucket of the same commit, as
 * under a flood of messages. */
static int64_t row_ts(int64_t t0, int sec, int i, int k, int per)
{
    return t0 + sec * 1000LL + (per == 1 ? i % 1000 : k * (1000 / per) + i % (1000 / per));
}

static double row_value(int sec, int i, int k) { return (double)(i + sec + k); }

/* Bytes this process has handed to write(2) and friends so far. */
static int64_t bytes_written(void)
{
    FILE *f = fopen("/proc/self/io", "r");
    char key[64];
    long long v, w = -1;
    while (f && fscanf(f, "%63s %lld", key, &v) == 2)
        if (!strcmp(key, "wchar:"))
            w = v;
    if (f)
        fclose(f);
    return w;
}

/* Appends `per` rows per series per simulated second from `from` to `to`. */
static void writer_seconds(struct cb_store *s, int from, int to, int per, int64_t t0,
                           uint64_t *pos)
{
    for (int sec = from; sec < to; sec++) {
        for (int k = 0; k < per; k++)
            for (int i = 0; i < NSERIES; i++) {
                struct cb_sample smp = {"value", row_ts(t0, sec, i, k, per),
                                        row_value(sec, i, k)};
                cb_store_append(s, topics[i], NULL, &smp, 1, ++*pos);
            }
        if (cb_store_flush(s) < 0) {
            fprintf(stderr, "bench_storage: commit failed\n");
            exit(1);
        }
    }
}

/* A store on cfg (no journal), or exit. */
static struct cb_store *open_store(const struct cb_config *cfg)
{
    char err[512];
    struct cb_store *s = cb_store_open(cfg, NULL, err, sizeof err);
    if (!s) {
        fprintf(stderr, "bench_storage: %s\n", err);
        exit(1);
    }
    return s;
}

/* The steady state of a city: every series has history, so each commit of a
 * row per series dirties one leaf page per series (SQLite writes the whole
 * page to the WAL, and again at the checkpoint). */
static void bench_steady(int64_t t0, double *bytes_per_sample, double *us_per_sample)
{
    struct cb_config cfg = make_cfg("steady.db");
    struct cb_store *s = open_store(&cfg);
    uint64_t pos = 0;
    writer_seconds(s, 0, 10, 50, t0, &pos); /* 500 rows per series */
    int64_t w0 = bytes_written();
    double start = now_s();
    writer_seconds(s, 10, 30, 1, t0, &pos);
    double secs = now_s() - start;
    int64_t w1 = bytes_written();
    cb_store_close(s);
    *bytes_per_sample = (double)(w1 - w0) / (20.0 * NSERIES);
    *us_per_sample = secs * 1e6 / (20.0 * NSERIES);
    cb_config_free(&cfg);
}

/* The derivation's source read (store.c derive_src_sql) of [from, to) for
 * every series, on a connection of its own; returns the wall time in ms. */
static double derive_read_ms(const char *path, int64_t from, int64_t to)
{
    char err[256];
    sqlite3 *db = storage__open_db(path, STORAGE_OPEN_READER, 0, 0, STORAGE_SCHEMA_VERSION, err,
                                   sizeof err);
    sqlite3_stmt *ids = NULL, *src = NULL;
    if (!db || sqlite3_prepare_v2(db, "SELECT id FROM series ORDER BY id", -1, &ids, NULL) ||
        sqlite3_prepare_v2(db,
                           "SELECT ts, 1, value, value, value, value, ts, value, ts FROM samples "
                           "WHERE series_id = ?1 AND ts >= ?2 AND ts < ?3 ORDER BY ts",
                           -1, &src, NULL)) {
        fprintf(stderr, "bench_storage: derive read: %s\n", db ? sqlite3_errmsg(db) : err);
        exit(1);
    }
    int64_t rows = 0;
    double a = now_s();
    while (sqlite3_step(ids) == SQLITE_ROW) {
        sqlite3_bind_int64(src, 1, sqlite3_column_int64(ids, 0));
        sqlite3_bind_int64(src, 2, from);
        sqlite3_bind_int64(src, 3, to);
        while (sqlite3_step(src) == SQLITE_ROW)
            rows++;
        sqlite3_reset(src);
    }
    double ms = (now_s() - a) * 1000.0;
    if (rows != 60LL * NSERIES)
        fprintf(stderr, "bench_storage: derive read gave %lld rows\n", (long long)rows);
    sqlite3_finalize(ids);
    sqlite3_finalize(src);
    sqlite3_close(db);
    return ms;
}

/* The seal at 10,000 series, and the derivation's reads around it. The
 * store's clock stands before the samples, so neither the writer's own seal
 * nor its derivation runs meanwhile. */
static void bench_seal(int64_t t0, double *seal_ms, double *seal_bytes, double *read_head_ms,
                       double *read_chunks_ms, double *compact[5])
{
    struct cb_config cfg = make_cfg("seal.db");
    struct cb_store *s = open_store(&cfg);
    int64_t before = t0 - 3600000LL;
    struct cb_clock clock = {cb_clock_manual_now, &before};
    cb_store_set_clock(s, &clock);
    uint64_t pos = 0;
    writer_seconds(s, 0, 10, 50, t0, &pos); /* 500 samples per series */
    storage__seal(s);
    writer_seconds(s, 60, 180, 1, t0, &pos); /* the head: 120 commits */
    int64_t minute = t0 + 2 * STORAGE_MINUTE_MS;
    derive_read_ms(cfg.storage_db, minute, minute + STORAGE_MINUTE_MS); /* warms the cache */
    *read_head_ms = derive_read_ms(cfg.storage_db, minute, minute + STORAGE_MINUTE_MS);
    int64_t w0 = bytes_written();
    double a = now_s();
    int seal_rc = storage__seal(s);
    if (seal_rc != SQLITE_OK)
        fprintf(stderr, "bench_storage: seal: %s\n", sqlite3_errstr(seal_rc));
    *seal_ms = (now_s() - a) * 1000.0;
    *seal_bytes = (double)(bytes_written() - w0) / (120.0 * NSERIES);
    derive_read_ms(cfg.storage_db, minute, minute + STORAGE_MINUTE_MS);
    *read_chunks_ms = derive_read_ms(cfg.storage_db, minute, minute + STORAGE_MINUTE_MS);
    sqlite3 *db = storage__open_db(cfg.storage_db, STORAGE_OPEN_READER, 0, 0,
                                   STORAGE_SCHEMA_VERSION, NULL, 0);
    sqlite3_stmt *q = NULL;
    int64_t rows = 0, samples = 0;
    if (db && sqlite3_prepare_v2(db, "SELECT count(*), sum(n) FROM chunks_recent", -1, &q,
                                 NULL) == SQLITE_OK &&
        sqlite3_step(q) == SQLITE_ROW) {
        rows = sqlite3_column_int64(q, 0);
        samples = sqlite3_column_int64(q, 1);
    }
    sqlite3_finalize(q);
    sqlite3_close(db);
    w0 = bytes_written();
    a = now_s();
    int compact_rc, slices = 0;
    double slice_max = 0;
    do { /* slice by slice, as the writer runs them between commits */
        double b = now_s();
        compact_rc = storage__compact_slice(s);
        if ((now_s() - b) * 1000.0 > slice_max)
            slice_max = (now_s() - b) * 1000.0;
        slices++;
    } while (compact_rc == SQLITE_ROW);
    if (compact_rc != SQLITE_OK)
        fprintf(stderr, "bench_storage: compaction: %s\n", sqlite3_errstr(compact_rc));
    *compact[0] = (now_s() - a) * 1000.0;
    *compact[1] = (double)rows;
    *compact[2] = samples ? (double)(bytes_written() - w0) / (double)samples : 0;
    *compact[3] = slices;
    *compact[4] = slice_max;
    cb_store_close(s);
    cb_config_free(&cfg);
}

/* The writer: cb_store_append per message, a flush per simulated second. */
static double bench_writer(int seconds, int per, int64_t t0, double *bytes_per_sample)
{
    struct cb_config cfg = make_cfg("writer.db");
    struct cb_store *s = open_store(&cfg);
    uint64_t pos = 0;
    double start = now_s();
    writer_seconds(s, 0, seconds, per, t0, &pos);
    struct cb_store_stats st;
    cb_store_get_stats(s, &st);
    cb_store_close(s); /* derives the rollups: part of the work measured */
    double secs = now_s() - start;
    uint64_t want = (uint64_t)seconds * NSERIES * (uint64_t)per;
    *bytes_per_sample = (double)file_size(cfg.storage_db) / (double)st.rows_written;
    if (st.rows_written != want)
        fprintf(stderr, "bench_storage: wrote %llu rows, expected %llu\n",
                (unsigned long long)st.rows_written, (unsigned long long)want);
    cb_config_free(&cfg);
    return (double)want / secs;
}

/* The plain program's rollup merge, the best way we know: one row per
 * (series, bucket) per commit, aggregated in memory; an UPDATE when the
 * program merged into that bucket before (one seek), else an INSERT, the
 * other one when that changed nothing. */
#define PLAIN_UPDATE(t)                                                                          \
    "UPDATE " t " SET count = count + ?3, sum = sum + ?4, min = min(min, ?5), "                   \
    "max = max(max, ?6), first = CASE WHEN ?8 < first_ts THEN ?7 ELSE first END, "               \
    "first_ts = min(first_ts, ?8), last = CASE WHEN ?10 > last_ts THEN ?9 ELSE last END, "      \
    "last_ts = max(last_ts, ?10) WHERE series_id = ?1 AND bucket = ?2"
#define PLAIN_INSERT(t)                                                                          \
    "INSERT OR IGNORE INTO " t "(series_id, bucket, count, sum, min, max, first, first_ts, last, last_ts) " \
    "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"

struct plain_acc {
    int64_t *known; /* the newest bucket merged into for this series and tier */
    int64_t series, bucket, count, first_ts, last_ts;
    double sum, min, max, first, last;
};

static void plain_step(sqlite3_stmt *st, const struct plain_acc *a)
{
    sqlite3_bind_int64(st, 1, a->series);
    sqlite3_bind_int64(st, 2, a->bucket);
    sqlite3_bind_int64(st, 3, a->count);
    sqlite3_bind_double(st, 4, a->sum);
    sqlite3_bind_double(st, 5, a->min);
    sqlite3_bind_double(st, 6, a->max);
    sqlite3_bind_double(st, 7, a->first);
    sqlite3_bind_int64(st, 8, a->first_ts);
    sqlite3_bind_double(st, 9, a->last);
    sqlite3_bind_int64(st, 10, a->last_ts);
    sqlite3_step(st);
    sqlite3_reset(st);
}

static void plain_flush(sqlite3 *db, sqlite3_stmt *upd, sqlite3_stmt *ins, struct plain_acc *a)
{
    if (!a->count)
        return;
    int exists = a->bucket == *a->known;
    plain_step(exists ? upd : ins, a);
    if (sqlite3_changes(db) == 0)
        plain_step(exists ? ins : upd, a);
    if (a->bucket > *a->known)
        *a->known = a->bucket;
    a->count = 0;
}

static void plain_add(sqlite3 *db, sqlite3_stmt *upd, sqlite3_stmt *ins, struct plain_acc *a,
                      int64_t width, int64_t *known, int64_t series, int64_t ts, double v)
{
    int64_t bucket = ts / width * width;
    if (a->count && (a->series != series || a->bucket != bucket))
        plain_flush(db, upd, ins, a);
    if (!a->count)
        *a = (struct plain_acc){known, series, bucket, 0, ts, ts, 0, v, v, v, v};
    a->count++;
    a->sum += v;
    a->min = v < a->min ? v : a->min;
    a->max = v > a->max ? v : a->max;
    a->last = v;
    a->last_ts = ts;
}

/* The plain program: same schema (created by the store), same rows, written
 * series by series (in order, no sort needed). rollups 0: samples only. */
static double bench_plain(int seconds, int per, int64_t t0, int rollups, const char *name)
{
    struct cb_config cfg = make_cfg(name);
    struct cb_store *s = open_store(&cfg);
    cb_store_close(s);
    sqlite3 *db;
    sqlite3_open(cfg.storage_db, &db);
    sqlite3_exec(db, "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; "
                     "PRAGMA cache_size = -65536",
                 NULL, NULL, NULL);
    sqlite3_stmt *ins, *upd[2], *insr[2], *sen, *ser, *pos;
    /* one row per sample, as the store kept them before schema step 7 */
    sqlite3_exec(db, "CREATE TABLE plain_samples(series_id INTEGER NOT NULL, ts INTEGER NOT NULL, "
                     "value REAL NOT NULL, PRIMARY KEY(series_id, ts)) WITHOUT ROWID",
                 NULL, NULL, NULL);
    sqlite3_prepare_v2(db, "INSERT OR IGNORE INTO plain_samples(series_id, ts, value) "
                           "VALUES (?1, ?2, ?3)",
                       -1, &ins, NULL);
    sqlite3_prepare_v2(db, PLAIN_UPDATE("rollup_1m"), -1, &upd[0], NULL);
    sqlite3_prepare_v2(db, PLAIN_UPDATE("rollup_1h"), -1, &upd[1], NULL);
    sqlite3_prepare_v2(db, PLAIN_INSERT("rollup_1m"), -1, &insr[0], NULL);
    sqlite3_prepare_v2(db, PLAIN_INSERT("rollup_1h"), -1, &insr[1], NULL);
    sqlite3_prepare_v2(db, "INSERT INTO sensors(topic, first_seen, last_seen) VALUES (?1, ?2, ?2)",
                       -1, &sen, NULL);
    sqlite3_prepare_v2(db, "INSERT INTO series(sensor_id, metric) VALUES (?1, 'value')", -1, &ser,
                       NULL);
    sqlite3_prepare_v2(db, "UPDATE ingest_state SET journal_pos = ?1 WHERE id = 1", -1, &pos, NULL);
    static int64_t ids[NSERIES], known[NSERIES][2];
    for (int i = 0; i < NSERIES; i++)
        known[i][0] = known[i][1] = INT64_MIN;
    static const int64_t width[2] = {60000, 3600000};
    double start = now_s();
    for (int sec = 0; sec < seconds; sec++) {
        sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
        struct plain_acc acc[2] = {{0}, {0}};
        for (int i = 0; i < NSERIES; i++) {
            if (sec == 0) {
                sqlite3_bind_text(sen, 1, topics[i], -1, SQLITE_STATIC);
                sqlite3_bind_int64(sen, 2, row_ts(t0, sec, i, 0, per));
                sqlite3_step(sen);
                sqlite3_reset(sen);
                sqlite3_bind_int64(ser, 1, sqlite3_last_insert_rowid(db));
                sqlite3_step(ser);
                sqlite3_reset(ser);
                ids[i] = sqlite3_last_insert_rowid(db);
            }
            for (int k = 0; k < per; k++) {
                int64_t ts = row_ts(t0, sec, i, k, per);
                double v = row_value(sec, i, k);
                sqlite3_bind_int64(ins, 1, ids[i]);
                sqlite3_bind_int64(ins, 2, ts);
                sqlite3_bind_double(ins, 3, v);
                sqlite3_step(ins);
                sqlite3_reset(ins);
                if (!rollups || sqlite3_changes(db) == 0)
                    continue;
                for (int t = 0; t < 2; t++)
                    plain_add(db, upd[t], insr[t], &acc[t], width[t], &known[i][t], ids[i], ts,
                              v);
            }
        }
        for (int t = 0; t < 2; t++)
            plain_flush(db, upd[t], insr[t], &acc[t]);
        sqlite3_bind_int64(pos, 1, (int64_t)(sec + 1) * NSERIES * per);
        sqlite3_step(pos);
        sqlite3_reset(pos);
        if (sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
            fprintf(stderr, "bench_storage: plain commit failed: %s\n", sqlite3_errmsg(db));
            exit(1);
        }
    }
    double secs = now_s() - start;
    sqlite3_finalize(ins);
    for (int t = 0; t < 2; t++) {
        sqlite3_finalize(upd[t]);
        sqlite3_finalize(insr[t]);
    }
    sqlite3_finalize(sen);
    sqlite3_finalize(ser);
    sqlite3_finalize(pos);
    sqlite3_close(db);
    cb_config_free(&cfg);
    return (double)seconds * NSERIES * per / secs;
}

/* Best of two alternated runs of the writer and the plain program, `per`
 * rows per series per commit (damps the noise of a shared machine). */
static void writer_and_plain(int seconds, int per, int64_t t0, double *writer, double *plain,
                             double *bps)
{
    *writer = *plain = 0;
    for (int rep = 0; rep < 2; rep++) {
        char name[32], wp[128];
        snprintf(name, sizeof name, "plain%d_%d.db", per, rep);
        double p = bench_plain(seconds, per, t0, 1, name);
        *plain = p > *plain ? p : *plain;
        snprintf(wp, sizeof wp, "%s/writer.db", dir);
        rm_rf(wp);
        double w = bench_writer(seconds, per, t0, bps);
        *writer = w > *writer ? w : *writer;
    }
}

static int count_bucket(void *ctx, const char *topic, const char *metric, const struct cb_bucket *b)
{
    (void)topic;
    (void)metric;
    (void)b;
    (*(int *)ctx)++;
    return 0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Latency percentiles of n runs of one bucket query; warns when it does not
 * give `want` buckets. */
static void query_latency(struct cb_store_reader *r, int64_t from, int64_t to, int64_t step,
                          int want, double *p50, double *p99)
{
    enum { N = 1000 };
    static double lat[N];
    int n = 0;
    for (int i = 0; i < N; i++) {
        n = 0;
        double a = now_s();
        cb_store_query_buckets(r, "city/d01/river/s3", "level", from, to, step, count_bucket, &n);
        lat[i] = (now_s() - a) * 1000.0;
    }
    if (n != want)
        fprintf(stderr, "bench_storage: query returned %d buckets, expected %d\n", n, want);
    qsort(lat, N, sizeof lat[0], cmp_double);
    *p50 = lat[N / 2];
    *p99 = lat[N * 99 / 100];
}

static int count_raw(void *ctx, const char *topic, const char *metric, int64_t ts, double v)
{
    (void)topic, (void)metric, (void)ts, (void)v;
    (*(int *)ctx)++;
    return 0;
}

static void bench_query(double *p50, double *p99, double *raw_p50, double *raw_p99,
                        double *bps_day, double *raw_day)
{
    struct cb_config cfg = make_cfg("query.db");
    struct cb_store *s = open_store(&cfg);
    int64_t t0 = (cb_wall_ms() / 60000) * 60000 - 86400000LL;
    for (int k = 0; k < 8; k++) { /* 8 series, so the query is not alone in the file */
        char topic[32];
        snprintf(topic, sizeof topic, "city/d01/river/s%d", k);
        for (int64_t i = 0; i < 86400; i++) {
            struct cb_sample smp = {"level", t0 + i * 1000, (double)(i % 500) / 10.0};
            cb_store_append(s, topic, NULL, &smp, 1, 0);
            if (i % 20000 == 0) {
                cb_store_flush(s);
                storage__seal(s); /* as the writer does, by its clock */
            }
        }
    }
    cb_store_flush(s);
    storage__seal(s);
    cb_store_close(s);
    *bps_day = (double)file_size(cfg.storage_db) / (8.0 * 86400);
    char err[512];
    struct cb_store_reader *r = cb_store_reader_open(cfg.storage_db, err, sizeof err);
    if (!r) {
        fprintf(stderr, "bench_storage: %s\n", err);
        exit(1);
    }
    query_latency(r, t0, t0 + 86400000LL, 60000, 1440, p50, p99);
    query_latency(r, t0 + 12 * 3600000LL, t0 + 13 * 3600000LL, 30000, 120, raw_p50, raw_p99);
    /* one series' raw day: the fastest of 20 reads of its 86,400 samples */
    *raw_day = 1e9;
    for (int i = 0; i < 20; i++) {
        int n = 0;
        double a = now_s();
        cb_store_query_raw(r, "city/d01/river/s3", "level", t0, t0 + 86400000LL, count_raw, &n);
        double ms = (now_s() - a) * 1000.0;
        if (n != 86400)
            fprintf(stderr, "bench_storage: the raw day gave %d samples\n", n);
        *raw_day = ms < *raw_day ? ms : *raw_day;
    }
    cb_store_reader_close(r);
    cb_config_free(&cfg);
}

static double bench_journal(void)
{
    char p[128], err[256];
    snprintf(p, sizeof p, "%s/journal", dir);
    struct cb_journal *j = cb_journal_open(p, 64 << 20, 0, err, sizeof err);
    if (!j) {
        fprintf(stderr, "bench_storage: %s\n", err);
        exit(1);
    }
    const char payload[] = "{\"ts\":1732400000000,\"level\":3.1,\"flow\":41.5}";
    enum { N = 200000 };
    double a = now_s();
    for (int i = 0; i < N; i++) {
        uint64_t pos;
        cb_journal_append(j, topics[i % NSERIES], strlen(topics[i % NSERIES]), payload,
                          sizeof payload - 1, i, &pos);
    }
    double secs = now_s() - a;
    cb_journal_close(j);
    return N / secs;
}

int main(int argc, char **argv)
{
    int seconds = 30, seal_only = 0;
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--seconds") && i + 1 < argc)
            seconds = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--seal-only"))
            seal_only = 1;
    if (seconds < 1)
        seconds = 1;
    strcpy(dir, "/tmp/cbbench.XXXXXX");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    for (int i = 0; i < NSERIES; i++)
        snprintf(topics[i], sizeof topics[i], "city/d%02d/kind%d/s%05d", i % 40, i % 5, i);
    /* now: the rows are live data, their rollups derived as the minutes
     * close (older rows would be late ones, merged at every commit) */
    int64_t t0 = (cb_wall_ms() / 60000) * 60000;
    double seal_ms = 0, seal_bytes = 0, read_head = 0, read_chunks = 0;
    double compact_ms = 0, compact_rows = 0, compact_bytes = 0;
    double compact_slices = 0, compact_slice_max = 0;
    double *compact[5] = {&compact_ms, &compact_rows, &compact_bytes, &compact_slices,
                          &compact_slice_max};
    bench_seal(t0, &seal_ms, &seal_bytes, &read_head, &read_chunks, compact);
    printf("seal_ms_10k %.0f\n", seal_ms);
    printf("seal_bytes_per_sample %.1f\n", seal_bytes);
    printf("derive_read_head_ms %.0f\n", read_head);
    printf("derive_read_chunks_ms %.0f\n", read_chunks);
    printf("compact_ms_10k %.0f\n", compact_ms);
    printf("compact_rows %.0f\n", compact_rows);
    printf("compact_bytes_per_sample %.2f\n", compact_bytes);
    printf("compact_slices %.0f\n", compact_slices);
    printf("compact_slice_max_ms %.1f\n", compact_slice_max);
    fflush(stdout);
    if (seal_only) {
        rm_rf(dir);
        return 0;
    }
    double bps = 0, bps_day = 0, p50 = 0, p99 = 0, raw_p50 = 0, raw_p99 = 0;
    double plain = 0, writer = 0, plain5 = 0, writer5 = 0, bps5 = 0;
    writer_and_plain(seconds, 1, t0, &writer, &plain, &bps);
    writer_and_plain(seconds > 6 ? seconds / 3 : 2, 5, t0, &writer5, &plain5, &bps5);
    double plain_only = bench_plain(seconds, 1, t0, 0, "plain_only.db");
    double raw_day;
    bench_query(&p50, &p99, &raw_p50, &raw_p99, &bps_day, &raw_day);
    double jps = bench_journal();
    double steady_bytes = 0, steady_us = 0;
    bench_steady(t0, &steady_bytes, &steady_us);
    printf("series %d\n", NSERIES);
    printf("simulated_seconds %d\n", seconds);
    printf("writer_rows_per_s %.0f\n", writer);
    printf("plain_rows_per_s %.0f\n", plain);
    printf("writer_vs_plain %.2f\n", writer / plain);
    printf("writer_5_per_commit_rows_per_s %.0f\n", writer5);
    printf("plain_5_per_commit_rows_per_s %.0f\n", plain5);
    printf("writer_vs_plain_5_per_commit %.2f\n", writer5 / plain5);
    printf("plain_samples_only_rows_per_s %.0f\n", plain_only);
    printf("bytes_per_sample %.1f\n", bps);
    printf("bytes_per_sample_24h_1hz %.1f\n", bps_day);
    printf("query_24h_1m_p50_ms %.3f\n", p50);
    printf("query_24h_1m_p99_ms %.3f\n", p99);
    printf("query_1h_30s_p50_ms %.3f\n", raw_p50);
    printf("query_1h_30s_p99_ms %.3f\n", raw_p99);
    printf("query_raw_day_ms %.3f\n", raw_day);
    printf("journal_appends_per_s %.0f\n", jps);
    printf("steady_bytes_written_per_sample %.0f\n", steady_bytes);
    printf("steady_us_per_sample %.2f\n", steady_us);
    rm_rf(dir);
    return 0;
}
