/* The store's read side: a read-only connection per reader (WAL: reads never
 * block the writer, the writer never blocks reads). Each query runs in one
 * read transaction, so it sees one consistent snapshot.
 *
 * Queries go series by series: the series list is small, and every per-series
 * read is a range of a primary key (series_id, ts) or (series_id, bucket).
 *
 * A rollup tier is complete only below its derivation point (meta
 * derive_1m_done / derive_1h_done, read in the query's own snapshot; see
 * store.c "Rollup derivation"): from there on a query reads the tier's
 * source, 1m rows and then raw samples, so the newest minutes are never
 * missing from a rollup answer. */
#include "storage/storage_int.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct cb_store_reader {
    sqlite3 *db;
    char err[320];
    int64_t retention_raw_ms, retention_1m_ms;
};

struct series_ref {
    int64_t id;
    char *topic;
    char *metric;
};

struct series_list {
    struct series_ref *v;
    size_t n, cap;
};

static void series_list_free(struct series_list *l)
{
    for (size_t i = 0; i < l->n; i++) {
        free(l->v[i].topic);
        free(l->v[i].metric);
    }
    free(l->v);
    memset(l, 0, sizeof *l);
}

static int fail_sql(struct cb_store_reader *r, const char *what)
{
    snprintf(r->err, sizeof r->err, "%s: %s", what, sqlite3_errmsg(r->db));
    return -1;
}

struct cb_store_reader *cb_store_reader_open(const char *db_path, char *err, size_t errlen)
{
    struct cb_store_reader *r = calloc(1, sizeof *r);
    if (!r) {
        storage__set_err(err, errlen, "storage: out of memory");
        return NULL;
    }
    r->db = storage__open_db(db_path, STORAGE_OPEN_READER, 0, 8 << 20, STORAGE_SCHEMA_VERSION,
                             err, errlen);
    if (!r->db) {
        free(r);
        return NULL;
    }
    storage__meta_get(r->db, "retention_raw_ms", &r->retention_raw_ms);
    storage__meta_get(r->db, "retention_1m_ms", &r->retention_1m_ms);
    return r;
}

void cb_store_reader_close(struct cb_store_reader *r)
{
    if (!r)
        return;
    sqlite3_close(r->db);
    free(r);
}

const char *cb_store_reader_error(struct cb_store_reader *r)
{
    return r->err;
}

static int begin(struct cb_store_reader *r)
{
    r->err[0] = '\0';
    if (sqlite3_exec(r->db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK)
        return fail_sql(r, "begin read");
    return 0;
}

/* How far the tiers are derived, in the current read transaction. A file
 * without the keys (none here: migrations add them) counts as not derived. */
static void derived_in_snapshot(struct cb_store_reader *r, int64_t *d1m, int64_t *d1h)
{
    *d1m = *d1h = STORAGE_DERIVE_NONE;
    sqlite3_stmt *st = NULL; /* one statement for both: this runs on every query */
    if (sqlite3_prepare_v2(r->db,
                           "SELECT key, value FROM meta WHERE key IN ('derive_1m_done', "
                           "'derive_1h_done')",
                           -1, &st, NULL) == SQLITE_OK)
        while (sqlite3_step(st) == SQLITE_ROW) {
            const char *key = (const char *)sqlite3_column_text(st, 0);
            int64_t *out = strcmp(key, "derive_1m_done") == 0 ? d1m : d1h;
            *out = sqlite3_column_int64(st, 1);
        }
    sqlite3_finalize(st);
}

static void end(struct cb_store_reader *r)
{
    sqlite3_exec(r->db, "COMMIT", NULL, NULL, NULL);
}

/* The series matching topic and metric (NULL: any), in (topic, metric) order. */
static int list_series(struct cb_store_reader *r, const char *topic, const char *metric,
                       struct series_list *out)
{
    sqlite3_stmt *st = NULL;
    int rc = -1;
    if (sqlite3_prepare_v2(r->db,
                           "SELECT sr.id, se.topic, sr.metric FROM series sr JOIN sensors se "
                           "ON se.id = sr.sensor_id WHERE (?1 IS NULL OR se.topic = ?1) AND "
                           "(?2 IS NULL OR sr.metric = ?2) ORDER BY se.topic, sr.metric",
                           -1, &st, NULL) != SQLITE_OK)
        return fail_sql(r, "list series");
    if (topic)
        sqlite3_bind_text(st, 1, topic, -1, SQLITE_STATIC);
    if (metric)
        sqlite3_bind_text(st, 2, metric, -1, SQLITE_STATIC);
    int s;
    while ((s = sqlite3_step(st)) == SQLITE_ROW) {
        if (out->n == out->cap) {
            size_t cap = out->cap ? out->cap * 2 : 16;
            struct series_ref *v = realloc(out->v, cap * sizeof *v);
            if (!v)
                goto oom;
            out->v = v;
            out->cap = cap;
        }
        struct series_ref *e = &out->v[out->n];
        e->id = sqlite3_column_int64(st, 0);
        e->topic = strdup((const char *)sqlite3_column_text(st, 1));
        e->metric = strdup((const char *)sqlite3_column_text(st, 2));
        out->n++;
        if (!e->topic || !e->metric)
            goto oom;
    }
    if (s != SQLITE_DONE) {
        fail_sql(r, "list series");
        goto out;
    }
    rc = 0;
    goto out;
oom:
    snprintf(r->err, sizeof r->err, "out of memory");
out:
    sqlite3_finalize(st);
    return rc;
}

int cb_store_query_raw(struct cb_store_reader *r, const char *topic, const char *metric,
                       int64_t from, int64_t to, cb_sample_row_fn fn, void *ctx)
{
    struct series_list l = {0};
    sqlite3_stmt *st = NULL;
    int rc = -1;
    if (begin(r) < 0)
        return -1;
    if (list_series(r, topic, metric, &l) < 0)
        goto out;
    if (sqlite3_prepare_v2(r->db,
                           "SELECT ts, value FROM samples WHERE series_id = ?1 AND ts >= ?2 "
                           "AND ts < ?3 ORDER BY ts",
                           -1, &st, NULL) != SQLITE_OK) {
        fail_sql(r, "query raw");
        goto out;
    }
    int stop = 0;
    for (size_t i = 0; i < l.n && !stop; i++) {
        sqlite3_bind_int64(st, 1, l.v[i].id);
        sqlite3_bind_int64(st, 2, from);
        sqlite3_bind_int64(st, 3, to);
        int s;
        while (!stop && (s = sqlite3_step(st)) == SQLITE_ROW)
            stop = fn(ctx, l.v[i].topic, l.v[i].metric, sqlite3_column_int64(st, 0),
                      sqlite3_column_double(st, 1));
        if (!stop && s != SQLITE_DONE) {
            fail_sql(r, "query raw");
            goto out;
        }
        sqlite3_reset(st);
    }
    rc = 0;
out:
    sqlite3_finalize(st);
    series_list_free(&l);
    end(r);
    return rc;
}

enum cb_store_tier cb_store_choose_tier(struct cb_store_reader *r, int64_t from, int64_t to,
                                        int64_t step_ms)
{
    (void)to;
    if (step_ms % STORAGE_HOUR_MS == 0)
        return CB_TIER_1H;
    if (step_ms % STORAGE_MINUTE_MS == 0)
        return CB_TIER_1M;
    int64_t now = cb_wall_ms();
    if (r->retention_1m_ms > 0 && from < now - r->retention_1m_ms)
        return CB_TIER_1H;
    if (r->retention_raw_ms > 0 && from < now - r->retention_raw_ms &&
        step_ms >= STORAGE_MINUTE_MS)
        return CB_TIER_1M;
    return CB_TIER_RAW;
}

/* One step bucket being filled. */
struct bagg {
    struct cb_bucket b;
    int64_t last_ts;
    int open;
};

static void bagg_add(struct bagg *a, uint64_t count, double sum, double mn, double mx,
                     double last, int64_t last_ts)
{
    if (!a->open || a->b.count == 0) {
        a->b.min = mn;
        a->b.max = mx;
        a->b.last = last;
        a->last_ts = last_ts;
    } else {
        if (mn < a->b.min)
            a->b.min = mn;
        if (mx > a->b.max)
            a->b.max = mx;
        if (last_ts >= a->last_ts) {
            a->b.last = last;
            a->last_ts = last_ts;
        }
    }
    a->open = 1;
    a->b.count += count;
    a->b.sum += sum;
}

static int64_t floor_to(int64_t v, int64_t step)
{
    return storage__bucket(v, step);
}

static int64_t ceil_to(int64_t v, int64_t step)
{
    int64_t f = storage__bucket(v, step);
    return f == v ? v : (f > INT64_MAX - step ? INT64_MAX : f + step);
}

int cb_store_query_buckets(struct cb_store_reader *r, const char *topic, const char *metric,
                           int64_t from, int64_t to, int64_t step_ms, cb_bucket_row_fn fn,
                           void *ctx)
{
    if (step_ms <= 0) {
        snprintf(r->err, sizeof r->err, "step must be positive");
        return -1;
    }
    struct series_list l = {0};
    sqlite3_stmt *st;
    int rc = -1;
    /* far enough from the int64 ends that rounding cannot overflow */
    const int64_t lim = INT64_C(1) << 61;
    if (from < -lim)
        from = -lim;
    if (to > lim)
        to = lim;
    sqlite3_stmt *sts[3] = {NULL, NULL, NULL};
    enum cb_store_tier tier = cb_store_choose_tier(r, from, to, step_ms);
    /* whole step buckets: every tier then answers the same */
    from = floor_to(from, step_ms);
    to = ceil_to(to, step_ms);
    if (begin(r) < 0)
        return -1;
    if (list_series(r, topic, metric, &l) < 0)
        goto out;
    /* The sources in time order, each up to where it is complete: the
     * chosen tier below its derivation point, then finer ones, then raw. */
    static const char *const sql[3] = {
        "SELECT bucket, count, sum, min, max, last, last_ts FROM rollup_1h WHERE "
        "series_id = ?1 AND bucket >= ?2 AND bucket < ?3 ORDER BY bucket",
        "SELECT bucket, count, sum, min, max, last, last_ts FROM rollup_1m WHERE "
        "series_id = ?1 AND bucket >= ?2 AND bucket < ?3 ORDER BY bucket",
        "SELECT ts, 1, value, value, value, value, ts FROM samples WHERE series_id = ?1 "
        "AND ts >= ?2 AND ts < ?3 ORDER BY ts",
    };
    int64_t d1m, d1h;
    derived_in_snapshot(r, &d1m, &d1h);
    int64_t upto[3] = {tier == CB_TIER_1H ? d1h : INT64_MIN,
                       tier == CB_TIER_RAW ? INT64_MIN : d1m, INT64_MAX};
    for (int k = 0; k < 3; k++)
        if (upto[k] > from && sqlite3_prepare_v2(r->db, sql[k], -1, &sts[k], NULL) != SQLITE_OK) {
            fail_sql(r, "query buckets");
            goto out;
        }
    int stop = 0;
    for (size_t i = 0; i < l.n && !stop; i++) {
        struct bagg a = {0};
        int64_t lo = from;
        for (int k = 0; k < 3 && !stop && lo < to; k++) {
            int64_t hi = upto[k] < to ? upto[k] : to;
            if (!sts[k] || hi <= lo)
                continue;
            st = sts[k];
            sqlite3_bind_int64(st, 1, l.v[i].id);
            sqlite3_bind_int64(st, 2, lo);
            sqlite3_bind_int64(st, 3, hi);
            int s;
            while (!stop && (s = sqlite3_step(st)) == SQLITE_ROW) {
                int64_t b = floor_to(sqlite3_column_int64(st, 0), step_ms);
                if (a.open && a.b.ts != b) {
                    stop = fn(ctx, l.v[i].topic, l.v[i].metric, &a.b);
                    memset(&a, 0, sizeof a);
                }
                a.b.ts = b;
                bagg_add(&a, (uint64_t)sqlite3_column_int64(st, 1),
                         sqlite3_column_double(st, 2), sqlite3_column_double(st, 3),
                         sqlite3_column_double(st, 4), sqlite3_column_double(st, 5),
                         sqlite3_column_int64(st, 6));
            }
            sqlite3_reset(st);
            if (!stop && s != SQLITE_DONE) {
                fail_sql(r, "query buckets");
                goto out;
            }
            lo = hi;
        }
        if (!stop && a.open)
            stop = fn(ctx, l.v[i].topic, l.v[i].metric, &a.b);
    }
    rc = 0;
out:
    for (int k = 0; k < 3; k++)
        sqlite3_finalize(sts[k]);
    series_list_free(&l);
    end(r);
    return rc;
}

/* Adds the rows of `sql` (bound ?1 series, ?2 from, ?3 to; columns count, sum,
 * min, max, last, last_ts) into a. */
static int agg_range(struct cb_store_reader *r, const char *sql, int64_t series, int64_t from,
                     int64_t to, struct bagg *a)
{
    if (from >= to)
        return 0;
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(r->db, sql, -1, &st, NULL) != SQLITE_OK)
        return fail_sql(r, "query aggregate");
    sqlite3_bind_int64(st, 1, series);
    sqlite3_bind_int64(st, 2, from);
    sqlite3_bind_int64(st, 3, to);
    int s;
    while ((s = sqlite3_step(st)) == SQLITE_ROW)
        bagg_add(a, (uint64_t)sqlite3_column_int64(st, 0), sqlite3_column_double(st, 1),
                 sqlite3_column_double(st, 2), sqlite3_column_double(st, 3),
                 sqlite3_column_double(st, 4), sqlite3_column_int64(st, 5));
    sqlite3_finalize(st);
    return s == SQLITE_DONE ? 0 : fail_sql(r, "query aggregate");
}

int cb_store_query_aggregate(struct cb_store_reader *r, const char *topic, const char *metric,
                             int64_t from, int64_t to, struct cb_bucket *out)
{
    static const char raw_sql[] = "SELECT 1, value, value, value, value, ts FROM samples WHERE "
                                  "series_id = ?1 AND ts >= ?2 AND ts < ?3";
    static const char m1_sql[] = "SELECT count, sum, min, max, last, last_ts FROM rollup_1m "
                                 "WHERE series_id = ?1 AND bucket >= ?2 AND bucket < ?3";
    struct series_list l = {0};
    struct bagg a = {0};
    int rc = -1;
    memset(out, 0, sizeof *out);
    if (!topic || !metric) {
        snprintf(r->err, sizeof r->err, "an aggregate needs a topic and a metric");
        return -1;
    }
    if (begin(r) < 0)
        return -1;
    if (list_series(r, topic, metric, &l) < 0)
        goto out;
    if (l.n == 1) {
        int64_t lo = ceil_to(from, STORAGE_MINUTE_MS), hi = floor_to(to, STORAGE_MINUTE_MS);
        int64_t d1m, d1h;
        derived_in_snapshot(r, &d1m, &d1h);
        if (hi > d1m)
            hi = d1m > lo ? d1m : lo; /* 1m rows only where the tier is complete */
        if (lo < hi) {
            if (agg_range(r, raw_sql, l.v[0].id, from, lo, &a) < 0 ||
                agg_range(r, m1_sql, l.v[0].id, lo, hi, &a) < 0 ||
                agg_range(r, raw_sql, l.v[0].id, hi, to, &a) < 0)
                goto out;
        } else if (agg_range(r, raw_sql, l.v[0].id, from, to, &a) < 0) {
            goto out;
        }
        *out = a.b;
        out->ts = a.last_ts;
    }
    rc = 0;
out:
    series_list_free(&l);
    end(r);
    return rc;
}

int cb_store_list_sensors(struct cb_store_reader *r, cb_sensor_fn fn, void *ctx)
{
    sqlite3_stmt *sen = NULL, *ser = NULL, *last = NULL, *roll = NULL;
    struct cb_sensor_metric *m = NULL;
    char **names = NULL;
    size_t cap = 0;
    int rc = -1;
    if (begin(r) < 0)
        return -1;
    if (sqlite3_prepare_v2(r->db,
                           "SELECT id, topic, device, labels, first_seen, last_seen FROM sensors "
                           "ORDER BY topic",
                           -1, &sen, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(r->db,
                           "SELECT id, metric, unit FROM series WHERE sensor_id = ?1 "
                           "ORDER BY metric",
                           -1, &ser, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(r->db,
                           "SELECT ts, value FROM samples WHERE series_id = ?1 "
                           "ORDER BY ts DESC LIMIT 1",
                           -1, &last, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(r->db,
                           "SELECT last_ts, last FROM rollup_1h WHERE series_id = ?1 "
                           "ORDER BY bucket DESC LIMIT 1",
                           -1, &roll, NULL) != SQLITE_OK) {
        fail_sql(r, "list sensors");
        goto out;
    }
    int s, stop = 0;
    while (!stop && (s = sqlite3_step(sen)) == SQLITE_ROW) {
        struct cb_sensor_info info = {
            .topic = (const char *)sqlite3_column_text(sen, 1),
            .device = (const char *)sqlite3_column_text(sen, 2),
            .labels = (const char *)sqlite3_column_text(sen, 3),
            .first_seen = sqlite3_column_int64(sen, 4),
            .last_seen = sqlite3_column_int64(sen, 5),
        };
        size_t n = 0;
        sqlite3_bind_int64(ser, 1, sqlite3_column_int64(sen, 0));
        int t;
        while ((t = sqlite3_step(ser)) == SQLITE_ROW) {
            if (n == cap) {
                size_t nc = cap ? cap * 2 : 8;
                struct cb_sensor_metric *nm = realloc(m, nc * sizeof *nm);
                if (!nm)
                    goto oom;
                m = nm;
                char **nn = realloc(names, nc * 2 * sizeof *nn);
                if (!nn)
                    goto oom;
                names = nn;
                for (size_t k = cap * 2; k < nc * 2; k++)
                    names[k] = NULL;
                cap = nc;
            }
            int64_t sid = sqlite3_column_int64(ser, 0);
            const char *unit = (const char *)sqlite3_column_text(ser, 2);
            free(names[2 * n]);
            free(names[2 * n + 1]);
            names[2 * n] = strdup((const char *)sqlite3_column_text(ser, 1));
            names[2 * n + 1] = unit ? strdup(unit) : NULL;
            if (!names[2 * n])
                goto oom;
            m[n] = (struct cb_sensor_metric){names[2 * n], names[2 * n + 1], INT64_MIN, NAN};
            sqlite3_bind_int64(last, 1, sid);
            if (sqlite3_step(last) == SQLITE_ROW) {
                m[n].last_ts = sqlite3_column_int64(last, 0);
                m[n].last_value = sqlite3_column_double(last, 1);
            } else {
                sqlite3_bind_int64(roll, 1, sid);
                if (sqlite3_step(roll) == SQLITE_ROW) {
                    m[n].last_ts = sqlite3_column_int64(roll, 0);
                    m[n].last_value = sqlite3_column_double(roll, 1);
                }
                sqlite3_reset(roll);
            }
            sqlite3_reset(last);
            if (m[n].last_ts != INT64_MIN && m[n].last_ts > info.last_seen)
                info.last_seen = m[n].last_ts;
            n++;
        }
        sqlite3_reset(ser);
        if (t != SQLITE_DONE) {
            fail_sql(r, "list sensors");
            goto out;
        }
        info.metrics = m;
        info.nmetrics = n;
        stop = fn(ctx, &info);
    }
    if (!stop && s != SQLITE_DONE) {
        fail_sql(r, "list sensors");
        goto out;
    }
    rc = 0;
    goto out;
oom:
    snprintf(r->err, sizeof r->err, "out of memory");
out:
    for (size_t k = 0; k < cap * 2; k++)
        free(names[k]);
    free(names);
    free(m);
    sqlite3_finalize(sen);
    sqlite3_finalize(ser);
    sqlite3_finalize(last);
    sqlite3_finalize(roll);
    end(r);
    return rc;
}

int cb_store_scan_since(struct cb_store_reader *r, int64_t since_ms, cb_sample_row_fn fn,
                        void *ctx)
{
    sqlite3_stmt *st = NULL;
    int rc = -1;
    if (begin(r) < 0)
        return -1;
    /* series outside (CROSS JOIN fixes the order): one primary-key range per
     * series, then SQLite's sorter (spills to temp files when large). */
    if (sqlite3_prepare_v2(r->db,
                           "SELECT se.topic, sr.metric, sa.ts, sa.value FROM sensors se "
                           "CROSS JOIN series sr CROSS JOIN samples sa WHERE sr.sensor_id = "
                           "se.id AND sa.series_id = sr.id AND sa.ts >= ?1 "
                           "ORDER BY sa.ts, se.topic, sr.metric",
                           -1, &st, NULL) != SQLITE_OK) {
        fail_sql(r, "scan");
        goto out;
    }
    sqlite3_bind_int64(st, 1, since_ms);
    int s, stop = 0;
    while (!stop && (s = sqlite3_step(st)) == SQLITE_ROW)
        stop = fn(ctx, (const char *)sqlite3_column_text(st, 0),
                  (const char *)sqlite3_column_text(st, 1), sqlite3_column_int64(st, 2),
                  sqlite3_column_double(st, 3));
    if (!stop && s != SQLITE_DONE) {
        fail_sql(r, "scan");
        goto out;
    }
    rc = 0;
out:
    sqlite3_finalize(st);
    end(r);
    return rc;
}
