/* Storage benchmark. Prints `key value` lines:
 *
 *   writer_rows_per_s        cb_store_append + writer thread, 10,000 series at
 *                            1 Hz, one commit per simulated second
 *   plain_rows_per_s         a plain SQLite program writing the same rows and
 *                            the same rollups into the same schema: one
 *                            transaction per second, prepared statements,
 *                            rows sorted by (series, ts), WAL, synchronous
 *                            NORMAL, the same cache size
 *   writer_vs_plain          the ratio (goal >= 0.8)
 *   plain_samples_only_rows_per_s   the same without rollups (for scale)
 *   bytes_per_sample         database size / samples (samples + rollups +
 *                            sensors, after the WAL is checkpointed)
 *   query_24h_1m_p50_ms, query_24h_1m_p99_ms   one series, 24 hours of 1 Hz
 *                            samples, buckets of 1 minute (goal p99 <= 2 ms)
 *   journal_appends_per_s    cb_journal_append of a 60-byte message, no fsync
 *
 * Usage: bench_storage [--seconds N] (simulated seconds of 10,000 series; 30) */
#include <dirent.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/config.h"
#include "storage/storage.h"

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

/* The writer: cb_store_append per message, a flush per simulated second. */
static double bench_writer(int seconds, int64_t t0, double *bytes_per_sample)
{
    struct cb_config cfg = make_cfg("writer.db");
    char err[512];
    struct cb_store *s = cb_store_open(&cfg, NULL, err, sizeof err);
    if (!s) {
        fprintf(stderr, "bench_storage: %s\n", err);
        exit(1);
    }
    uint64_t pos = 0;
    double start = now_s();
    for (int sec = 0; sec < seconds; sec++) {
        for (int i = 0; i < NSERIES; i++) {
            struct cb_sample smp = {"value", t0 + sec * 1000LL + i % 1000, (double)(i + sec)};
            cb_store_append(s, topics[i], NULL, &smp, 1, ++pos);
        }
        if (cb_store_flush(s) < 0) {
            fprintf(stderr, "bench_storage: commit failed\n");
            exit(1);
        }
    }
    double secs = now_s() - start;
    struct cb_store_stats st;
    cb_store_get_stats(s, &st);
    cb_store_close(s);
    *bytes_per_sample = (double)file_size(cfg.storage_db) / (double)st.rows_written;
    if (st.rows_written != (uint64_t)seconds * NSERIES)
        fprintf(stderr, "bench_storage: wrote %llu rows, expected %llu\n",
                (unsigned long long)st.rows_written, (unsigned long long)seconds * NSERIES);
    cb_config_free(&cfg);
    return (double)seconds * NSERIES / secs;
}

#define UPSERT(t)                                                                               \
    "INSERT INTO " t "(series_id, bucket, count, sum, min, max, first, first_ts, last, last_ts) " \
    "VALUES (?1, ?2, 1, ?3, ?3, ?3, ?3, ?4, ?3, ?4) ON CONFLICT(series_id, bucket) DO UPDATE "   \
    "SET count = count + 1, sum = sum + excluded.sum, min = min(min, excluded.min), "            \
    "max = max(max, excluded.max), first = CASE WHEN excluded.first_ts < first_ts THEN "         \
    "excluded.first ELSE first END, first_ts = min(first_ts, excluded.first_ts), "               \
    "last = CASE WHEN excluded.last_ts > last_ts THEN excluded.last ELSE last END, "             \
    "last_ts = max(last_ts, excluded.last_ts)"

/* The plain program: same schema (created by the store), same rows. */
static double bench_plain(int seconds, int64_t t0, int rollups, const char *name)
{
    struct cb_config cfg = make_cfg(name);
    char err[512];
    struct cb_store *s = cb_store_open(&cfg, NULL, err, sizeof err);
    if (!s) {
        fprintf(stderr, "bench_storage: %s\n", err);
        exit(1);
    }
    cb_store_close(s);
    sqlite3 *db;
    sqlite3_open(cfg.storage_db, &db);
    sqlite3_exec(db, "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; "
                     "PRAGMA cache_size = -65536",
                 NULL, NULL, NULL);
    sqlite3_stmt *ins, *up1m, *up1h, *sen, *ser, *pos;
    sqlite3_prepare_v2(db, "INSERT OR IGNORE INTO samples(series_id, ts, value) VALUES (?1, ?2, ?3)",
                       -1, &ins, NULL);
    sqlite3_prepare_v2(db, UPSERT("rollup_1m"), -1, &up1m, NULL);
    sqlite3_prepare_v2(db, UPSERT("rollup_1h"), -1, &up1h, NULL);
    sqlite3_prepare_v2(db, "INSERT INTO sensors(topic, first_seen, last_seen) VALUES (?1, ?2, ?2)",
                       -1, &sen, NULL);
    sqlite3_prepare_v2(db, "INSERT INTO series(sensor_id, metric) VALUES (?1, 'value')", -1, &ser,
                       NULL);
    sqlite3_prepare_v2(db, "UPDATE ingest_state SET journal_pos = ?1 WHERE id = 1", -1, &pos, NULL);
    static int64_t ids[NSERIES];
    double start = now_s();
    for (int sec = 0; sec < seconds; sec++) {
        sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
        for (int i = 0; i < NSERIES; i++) {
            int64_t ts = t0 + sec * 1000LL + i % 1000;
            double v = (double)(i + sec);
            if (sec == 0) {
                sqlite3_bind_text(sen, 1, topics[i], -1, SQLITE_STATIC);
                sqlite3_bind_int64(sen, 2, ts);
                sqlite3_step(sen);
                sqlite3_reset(sen);
                sqlite3_bind_int64(ser, 1, sqlite3_last_insert_rowid(db));
                sqlite3_step(ser);
                sqlite3_reset(ser);
                ids[i] = sqlite3_last_insert_rowid(db);
            }
            sqlite3_bind_int64(ins, 1, ids[i]);
            sqlite3_bind_int64(ins, 2, ts);
            sqlite3_bind_double(ins, 3, v);
            sqlite3_step(ins);
            sqlite3_reset(ins);
            if (!rollups || sqlite3_changes(db) == 0)
                continue;
            for (int k = 0; k < 2; k++) {
                sqlite3_stmt *u = k ? up1h : up1m;
                int64_t w = k ? 3600000 : 60000;
                sqlite3_bind_int64(u, 1, ids[i]);
                sqlite3_bind_int64(u, 2, ts / w * w);
                sqlite3_bind_double(u, 3, v);
                sqlite3_bind_int64(u, 4, ts);
                sqlite3_step(u);
                sqlite3_reset(u);
            }
        }
        sqlite3_bind_int64(pos, 1, (int64_t)(sec + 1) * NSERIES);
        sqlite3_step(pos);
        sqlite3_reset(pos);
        if (sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
            fprintf(stderr, "bench_storage: plain commit failed: %s\n", sqlite3_errmsg(db));
            exit(1);
        }
    }
    double secs = now_s() - start;
    sqlite3_finalize(ins);
    sqlite3_finalize(up1m);
    sqlite3_finalize(up1h);
    sqlite3_finalize(sen);
    sqlite3_finalize(ser);
    sqlite3_finalize(pos);
    sqlite3_close(db);
    cb_config_free(&cfg);
    return (double)seconds * NSERIES / secs;
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

static void bench_query(double *p50, double *p99, double *bps_day)
{
    struct cb_config cfg = make_cfg("query.db");
    char err[512];
    struct cb_store *s = cb_store_open(&cfg, NULL, err, sizeof err);
    if (!s) {
        fprintf(stderr, "bench_storage: %s\n", err);
        exit(1);
    }
    int64_t t0 = (cb_wall_ms() / 60000) * 60000 - 86400000LL;
    for (int k = 0; k < 8; k++) { /* 8 series, so the query is not alone in the file */
        char topic[32];
        snprintf(topic, sizeof topic, "city/d01/river/s%d", k);
        for (int64_t i = 0; i < 86400; i++) {
            struct cb_sample smp = {"level", t0 + i * 1000, (double)(i % 500) / 10.0};
            cb_store_append(s, topic, NULL, &smp, 1, 0);
            if (i % 20000 == 0)
                cb_store_flush(s);
        }
    }
    cb_store_flush(s);
    cb_store_close(s);
    *bps_day = (double)file_size(cfg.storage_db) / (8.0 * 86400);
    struct cb_store_reader *r = cb_store_reader_open(cfg.storage_db, err, sizeof err);
    if (!r) {
        fprintf(stderr, "bench_storage: %s\n", err);
        exit(1);
    }
    enum { N = 1000 };
    static double lat[N];
    int n = 0;
    for (int i = 0; i < N; i++) {
        n = 0;
        double a = now_s();
        cb_store_query_buckets(r, "city/d01/river/s3", "level", t0, t0 + 86400000LL, 60000,
                               count_bucket, &n);
        lat[i] = (now_s() - a) * 1000.0;
    }
    if (n != 1440)
        fprintf(stderr, "bench_storage: query returned %d buckets, expected 1440\n", n);
    qsort(lat, N, sizeof lat[0], cmp_double);
    *p50 = lat[N / 2];
    *p99 = lat[N * 99 / 100];
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
    int seconds = 30;
    for (int i = 1; i + 1 < argc; i++)
        if (!strcmp(argv[i], "--seconds"))
            seconds = atoi(argv[++i]);
    if (seconds < 1)
        seconds = 1;
    strcpy(dir, "/tmp/cbbench.XXXXXX");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    for (int i = 0; i < NSERIES; i++)
        snprintf(topics[i], sizeof topics[i], "city/d%02d/kind%d/s%05d", i % 40, i % 5, i);
    int64_t t0 = (cb_wall_ms() / 3600000) * 3600000 - 3600000;
    double bps = 0, bps_day = 0, p50 = 0, p99 = 0;
    /* alternate, best of two each, to damp the noise of a shared machine */
    double plain = 0, writer = 0;
    for (int rep = 0; rep < 2; rep++) {
        char name[32];
        snprintf(name, sizeof name, "plain%d.db", rep);
        double p = bench_plain(seconds, t0, 1, name);
        plain = p > plain ? p : plain;
        char wp[128];
        snprintf(wp, sizeof wp, "%s/writer.db", dir);
        rm_rf(wp);
        double w = bench_writer(seconds, t0, &bps);
        writer = w > writer ? w : writer;
    }
    double plain_only = bench_plain(seconds, t0, 0, "plain_only.db");
    bench_query(&p50, &p99, &bps_day);
    double jps = bench_journal();
    printf("series %d\n", NSERIES);
    printf("simulated_seconds %d\n", seconds);
    printf("writer_rows_per_s %.0f\n", writer);
    printf("plain_rows_per_s %.0f\n", plain);
    printf("writer_vs_plain %.2f\n", writer / plain);
    printf("plain_samples_only_rows_per_s %.0f\n", plain_only);
    printf("bytes_per_sample %.1f\n", bps);
    printf("bytes_per_sample_24h_1hz %.1f\n", bps_day);
    printf("query_24h_1m_p50_ms %.3f\n", p50);
    printf("query_24h_1m_p99_ms %.3f\n", p99);
    printf("journal_appends_per_s %.0f\n", jps);
    rm_rf(dir);
    return 0;
}
