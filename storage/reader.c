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

/* The statements of a bucket query, prepared on a reader's first one and
 * kept with it. The first three give the rows of one series over [?2, ?3)
 * in time order as partial aggregates (start, count, sum, min, max, last,
 * last_ts), one per tier. */
enum { T_RAW, T_1M, T_1H, T__COUNT };
enum { BQ_RAW_COUNT = T__COUNT, BQ_1M_COUNT, BQ_RAW_FIRST, BQ_1M_FIRST, BQ__COUNT };
static const int64_t tier_width[T__COUNT] = {1, STORAGE_MINUTE_MS, STORAGE_HOUR_MS};
static const char *const bq_sql[BQ__COUNT] = {
    [T_RAW] = "SELECT ts, 1, value, value, value, value, ts FROM samples WHERE series_id = ?1 "
              "AND ts >= ?2 AND ts < ?3 ORDER BY ts",
    [T_1M] = "SELECT bucket, count, sum, min, max, last, last_ts FROM rollup_1m WHERE "
             "series_id = ?1 AND bucket >= ?2 AND bucket < ?3 ORDER BY bucket",
    [T_1H] = "SELECT bucket, count, sum, min, max, last, last_ts FROM rollup_1h WHERE "
             "series_id = ?1 AND bucket >= ?2 AND bucket < ?3 ORDER BY bucket",
    [BQ_RAW_COUNT] = "SELECT count(*) FROM samples WHERE series_id = ?1 AND ts >= ?2 AND ts < ?3",
    [BQ_1M_COUNT] = "SELECT total(count) FROM rollup_1m WHERE series_id = ?1 AND bucket >= ?2 "
                    "AND bucket < ?3",
    [BQ_RAW_FIRST] = "SELECT min(ts) FROM samples WHERE series_id = ?1",
    [BQ_1M_FIRST] = "SELECT min(bucket) FROM rollup_1m WHERE series_id = ?1",
};

struct part;

/* A growable list of parts (a bucket query's scratch, kept with the reader). */
struct parts {
    struct part *v;
    size_t n, cap;
};

struct cb_store_reader {
    sqlite3 *db;
    char err[320];
    sqlite3_stmt *bq[BQ__COUNT]; /* NULL until the first bucket query */
    struct parts minute;         /* one minute of raw samples */
    struct parts hour;           /* one hour of 1m rows */
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
    return r;
}

void cb_store_reader_close(struct cb_store_reader *r)
{
    if (!r)
        return;
    for (int k = 0; k < BQ__COUNT; k++)
        sqlite3_finalize(r->bq[k]);
    free(r->minute.v);
    free(r->hour.v);
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

/* Begins a read of the one series that topic and metric name (what: the
 * query, for the error). Returns 1 with its id and how far the tiers are
 * derived in this snapshot, the read left open for the caller (end(r));
 * 0 when they name no single series (an empty answer), -1 with r->err set,
 * both with the read ended: a snapshot left open would fail the next
 * begin and hold back every checkpoint. */
static int begin_one_series(struct cb_store_reader *r, const char *topic, const char *metric,
                            const char *what, int64_t *id, int64_t *d1m, int64_t *d1h)
{
    if (!topic || !metric) {
        snprintf(r->err, sizeof r->err, "%s needs a topic and a metric", what);
        return -1;
    }
    if (begin(r) < 0)
        return -1;
    struct series_list l = {0};
    if (list_series(r, topic, metric, &l) < 0) {
        series_list_free(&l);
        end(r);
        return -1;
    }
    int one = l.n == 1;
    if (one) {
        *id = l.v[0].id;
        derived_in_snapshot(r, d1m, d1h);
    } else {
        end(r);
    }
    series_list_free(&l);
    return one;
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

/* One step bucket being filled. `end` is where the data added so far ends
 * (a rollup row placed in the bucket may reach past the step). */
struct bagg {
    struct cb_bucket b;
    int64_t last_ts;
    int64_t end;
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

static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
static int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

/* ---- buckets from the finest tier that holds the data ---------------------------
 *
 * What the tiers hold (store.c): rollup_1h is complete below d1h and
 * rollup_1m below d1m (their derivation points); raw samples are never
 * deleted at or after d1m, 1m rows never at or after d1h. Retention deletes
 * whole rows, oldest first, and a sample committed later into a derived
 * bucket is merged into both rollups. So a rollup row, where present, counts
 * every sample ever stored in its bucket, and a finer tier holds all of a
 * bucket exactly when its count there equals the rollup row's: that is what
 * is stored, whatever the retention periods say (a day replayed from long
 * ago keeps its raw rows until retention reaches them).
 *
 * Per series, hour by hour below d1h: an hour with a 1h row is answered
 * from its 1m rows (and raw samples from d1m on) when their counts add up to
 * the hour's, else from its raw samples when those do, else from the 1h row
 * alone. Inside such an hour, and after d1h, each minute with a 1m row comes
 * from its raw samples when their count equals the row's (a step that is a
 * whole number of minutes takes the row itself: the same answer, read
 * cheaper), else from the row; minutes without a row and everything from
 * d1m on come from raw samples. An hour, or minute, is taken from one tier
 * only, so nothing is counted twice. A rollup row is never split: it goes
 * whole into the step bucket holding its start, and only when that start is
 * inside the range (buckets finer than the data are not invented). Hours
 * without a 1h row below d1h (retention of the 1h tier shorter than a finer
 * one's) are read from the finer tiers where those have rows at all. */

/* A raw sample or a rollup row: the samples of [start, start + width). */
struct part {
    int64_t start, width;
    uint64_t count;
    double sum, min, max, last;
    int64_t last_ts;
};

/* One bucket query: its statements, the range and the series being read. */
struct bq {
    struct cb_store_reader *r;
    sqlite3_stmt **st;  /* the reader's, by BQ_* */
    int64_t from, to, step;
    int64_t d1m, d1h;
    const struct series_ref *series;
    int64_t finer_from; /* INT64_MIN: not read yet for this series */
    cb_bucket_row_fn fn;
    void *ctx;
    struct bagg a;
    int stop;           /* fn asked to stop */
    int err;            /* an SQLite error, in r->err */
    struct parts *minute, *hour; /* the reader's scratch */
};

/* Rows of one tier, from a statement or from an array. */
struct cur {
    struct bq *q;
    sqlite3_stmt *st; /* NULL: rows from v[i, n) */
    const struct part *v;
    size_t i, n;
    int tier;
    int has;          /* row holds the current row */
    struct part row;
};

static void query_failed(struct bq *q)
{
    if (!q->err)
        fail_sql(q->r, "query buckets");
    q->err = 1;
}

static void cur_next(struct cur *c)
{
    if (!c->st) {
        c->has = c->i < c->n;
        if (c->has)
            c->row = c->v[c->i++];
        return;
    }
    int s = sqlite3_step(c->st);
    c->has = s == SQLITE_ROW;
    if (c->has) {
        sqlite3_stmt *st = c->st;
        c->row = (struct part){sqlite3_column_int64(st, 0),   tier_width[c->tier],
                               (uint64_t)sqlite3_column_int64(st, 1),
                               sqlite3_column_double(st, 2), sqlite3_column_double(st, 3),
                               sqlite3_column_double(st, 4), sqlite3_column_double(st, 5),
                               sqlite3_column_int64(st, 6)};
        return;
    }
    if (s != SQLITE_DONE)
        query_failed(c->q);
    sqlite3_reset(c->st);
}

/* Opens c on the rows of `tier` in [lo, hi) for the current series. */
static void cur_sql(struct cur *c, struct bq *q, int tier, int64_t lo, int64_t hi)
{
    *c = (struct cur){.q = q, .st = q->st[tier], .tier = tier};
    if (lo >= hi || q->err)
        return;
    sqlite3_reset(c->st);
    sqlite3_bind_int64(c->st, 1, q->series->id);
    sqlite3_bind_int64(c->st, 2, lo);
    sqlite3_bind_int64(c->st, 3, hi);
    cur_next(c);
}

/* Opens c on the rows of l that start in [lo, hi). */
static void cur_parts(struct cur *c, struct bq *q, const struct parts *l, int64_t lo, int64_t hi)
{
    *c = (struct cur){.q = q, .v = l->v, .n = l->n, .tier = T_1M};
    while (c->i < c->n && c->v[c->i].start < lo)
        c->i++;
    while (c->n > c->i && c->v[c->n - 1].start >= hi)
        c->n--;
    cur_next(c);
}

static void cur_close(struct cur *c)
{
    if (c->st && c->has)
        sqlite3_reset(c->st);
    c->has = 0;
}

static int parts_push(struct bq *q, struct parts *l, const struct part *p)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        struct part *v = realloc(l->v, cap * sizeof *v);
        if (!v) {
            snprintf(q->r->err, sizeof q->r->err, "out of memory");
            q->err = 1;
            return -1;
        }
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = *p;
    return 0;
}

/* Hands the filled step bucket to fn. */
static void bucket_out(struct bq *q)
{
    if (!q->a.open || q->stop)
        return;
    q->a.b.span_ms = q->a.end - q->a.b.ts > q->step ? q->a.end - q->a.b.ts : q->step;
    q->stop = q->fn(q->ctx, q->series->topic, q->series->metric, &q->a.b);
    memset(&q->a, 0, sizeof q->a);
}

/* Adds p to the step bucket holding its start, when that start is in [lo, hi). */
static void put(struct bq *q, const struct part *p, int64_t lo, int64_t hi)
{
    if (p->start < lo || p->start >= hi || q->stop)
        return;
    int64_t b = floor_to(p->start, q->step);
    if (q->a.open && q->a.b.ts != b)
        bucket_out(q);
    if (q->stop)
        return;
    q->a.b.ts = b;
    bagg_add(&q->a, p->count, p->sum, p->min, p->max, p->last, p->last_ts);
    if (p->start + p->width > q->a.end)
        q->a.end = p->start + p->width;
}

/* Every raw sample of [lo, hi). */
static void raw_range(struct bq *q, int64_t lo, int64_t hi)
{
    struct cur c;
    for (cur_sql(&c, q, T_RAW, lo, hi); c.has && !q->stop; cur_next(&c))
        put(q, &c.row, lo, hi);
    cur_close(&c);
}

/* The one integer `st` (BQ_RAW_COUNT: raw samples, BQ_1M_COUNT: samples in
 * 1m rows) gives for the series over [lo, hi); -1 on an error. */
static int64_t range_count(struct bq *q, sqlite3_stmt *st, int64_t lo, int64_t hi)
{
    if (lo >= hi)
        return 0;
    sqlite3_bind_int64(st, 1, q->series->id);
    sqlite3_bind_int64(st, 2, lo);
    sqlite3_bind_int64(st, 3, hi);
    int64_t n = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
    sqlite3_reset(st);
    if (n < 0)
        query_failed(q);
    return n;
}

/* [lo, hi) minute by minute: a minute with a 1m row (from m) comes from its
 * raw samples when they are all there (their count equals the row's, and
 * the step does not take whole minutes), else from the row; a minute
 * without a row from its raw samples. `rows_whole`: m holds a row for every
 * minute with data below d1m (no raw read is needed where the step takes
 * whole minutes). */
static void minutes(struct bq *q, int64_t lo, int64_t hi, struct cur *m, int rows_whole)
{
    int whole_minutes = q->step % STORAGE_MINUTE_MS == 0;
    if (whole_minutes && rows_whole) {
        for (; m->has && !q->stop; cur_next(m))
            put(q, &m->row, lo, hi);
        raw_range(q, max64(lo, q->d1m), hi);
        return;
    }
    struct cur raw;
    cur_sql(&raw, q, T_RAW, floor_to(lo, STORAGE_MINUTE_MS), ceil_to(hi, STORAGE_MINUTE_MS));
    while ((m->has || raw.has) && !q->stop && !q->err) {
        int64_t t = raw.has ? floor_to(raw.row.start, STORAGE_MINUTE_MS) : INT64_MAX;
        if (m->has && m->row.start < t)
            t = m->row.start;
        q->minute->n = 0;
        for (; raw.has && raw.row.start < t + STORAGE_MINUTE_MS; cur_next(&raw))
            if (parts_push(q, q->minute, &raw.row) < 0)
                break;
        if (m->has && m->row.start == t) {
            struct part row = m->row;
            cur_next(m);
            if (whole_minutes || q->minute->n != row.count) {
                put(q, &row, lo, hi);
                continue;
            }
        }
        for (size_t i = 0; i < q->minute->n; i++)
            put(q, &q->minute->v[i], lo, hi);
    }
    cur_close(&raw);
}

/* [lo, hi) where no 1h row says how much there is (see minutes()). */
static void without_hour(struct bq *q, int64_t lo, int64_t hi, int rows_whole)
{
    if (lo >= hi)
        return;
    struct cur m;
    cur_sql(&m, q, T_1M, floor_to(lo, STORAGE_MINUTE_MS),
            min64(ceil_to(hi, STORAGE_MINUTE_MS), q->d1m));
    minutes(q, lo, hi, &m, rows_whole);
    cur_close(&m);
}

/* Where the series' finer tiers begin: its oldest 1m row or raw sample. */
static int64_t finer_from(struct bq *q)
{
    if (q->finer_from != INT64_MIN)
        return q->finer_from;
    int64_t v = INT64_MAX;
    for (int k = 0; k < 2; k++) {
        sqlite3_stmt *st = q->st[BQ_RAW_FIRST + k];
        sqlite3_bind_int64(st, 1, q->series->id);
        int s = sqlite3_step(st);
        if (s == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL)
            v = min64(v, sqlite3_column_int64(st, 0));
        else if (s != SQLITE_ROW && s != SQLITE_DONE)
            query_failed(q);
        sqlite3_reset(st);
    }
    return q->finer_from = v;
}

/* Hours below d1h that have no 1h row: nothing, unless that tier's rows were
 * deleted before the finer tiers' (a shorter retention). */
static void hour_gap(struct bq *q, int64_t lo, int64_t hi)
{
    lo = max64(lo, q->from);
    hi = min64(hi, q->to);
    if (lo < hi)
        lo = max64(lo, finer_from(q));
    without_hour(q, lo, hi, 0);
}

/* One hour below d1h with its 1h row h. */
static void hour(struct bq *q, const struct part *h)
{
    if (q->step % STORAGE_HOUR_MS == 0) { /* the row is the whole answer, exactly */
        put(q, h, q->from, q->to);
        return;
    }
    int64_t end = h->start + STORAGE_HOUR_MS;
    int64_t lo = max64(h->start, q->from), hi = min64(end, q->to);
    /* the 1m rows the range needs: all of them when it covers the hour
     * (they add up to the hour's count), else only its minutes, and the sum
     * for the hour from SQLite */
    int whole = lo == h->start && hi == end;
    int64_t mlo = whole ? h->start : floor_to(lo, STORAGE_MINUTE_MS);
    int64_t mhi = min64(whole ? end : ceil_to(hi, STORAGE_MINUTE_MS), q->d1m);
    struct cur c;
    q->hour->n = 0;
    for (cur_sql(&c, q, T_1M, mlo, mhi); c.has; cur_next(&c))
        if (parts_push(q, q->hour, &c.row) < 0)
            break;
    cur_close(&c);
    int64_t fine = 0;
    if (!whole)
        fine = range_count(q, q->st[BQ_1M_COUNT], h->start, min64(end, q->d1m));
    for (size_t i = 0; whole && i < q->hour->n; i++)
        fine += (int64_t)q->hour->v[i].count;
    /* plus the raw samples not in the 1m tier yet */
    fine += range_count(q, q->st[BQ_RAW_COUNT], max64(h->start, q->d1m), end);
    if (q->err)
        return;
    int64_t n;
    if ((uint64_t)fine == h->count) {
        cur_parts(&c, q, q->hour, floor_to(lo, STORAGE_MINUTE_MS),
                  ceil_to(hi, STORAGE_MINUTE_MS));
        minutes(q, lo, hi, &c, 1);
    } else if ((n = range_count(q, q->st[BQ_RAW_COUNT], h->start, end)) >= 0 &&
               (uint64_t)n == h->count) {
        raw_range(q, lo, hi); /* the 1m rows are gone, the samples are not */
    } else if (!q->err) {
        put(q, h, q->from, q->to); /* only the 1h row knows this hour */
    }
}

/* The buckets of one series. */
static void series_buckets(struct bq *q)
{
    q->finer_from = INT64_MIN;
    memset(&q->a, 0, sizeof q->a);
    int64_t lo = floor_to(q->from, STORAGE_HOUR_MS);
    int64_t hi = max64(lo, min64(ceil_to(q->to, STORAGE_HOUR_MS), q->d1h));
    struct cur h;
    for (cur_sql(&h, q, T_1H, lo, hi); h.has && !q->stop && !q->err; cur_next(&h)) {
        hour_gap(q, lo, h.row.start);
        hour(q, &h.row);
        lo = h.row.start + STORAGE_HOUR_MS;
    }
    cur_close(&h);
    if (!q->stop && !q->err) {
        hour_gap(q, lo, hi);
        /* from d1h on nothing is deleted from the 1m tier */
        without_hour(q, max64(hi, q->from), q->to, 1);
    }
    if (!q->err)
        bucket_out(q);
}

int cb_store_query_buckets(struct cb_store_reader *r, const char *topic, const char *metric,
                           int64_t from, int64_t to, int64_t step_ms, cb_bucket_row_fn fn,
                           void *ctx)
{
    if (step_ms <= 0) {
        snprintf(r->err, sizeof r->err, "step must be positive");
        return -1;
    }
    /* far enough from the int64 ends that rounding cannot overflow */
    const int64_t lim = INT64_C(1) << 61;
    struct bq q = {.r = r, .st = r->bq, .step = step_ms, .fn = fn, .ctx = ctx,
                   .minute = &r->minute, .hour = &r->hour};
    /* whole step buckets */
    q.from = floor_to(from < -lim ? -lim : from, step_ms);
    q.to = ceil_to(to > lim ? lim : to, step_ms);
    struct series_list l = {0};
    int rc = -1;
    if (begin(r) < 0)
        return -1;
    if (list_series(r, topic, metric, &l) < 0)
        goto out;
    for (int k = 0; k < BQ__COUNT; k++)
        if (!r->bq[k] && sqlite3_prepare_v3(r->db, bq_sql[k], -1, SQLITE_PREPARE_PERSISTENT,
                                            &r->bq[k], NULL) != SQLITE_OK) {
            fail_sql(r, "query buckets");
            goto out;
        }
    derived_in_snapshot(r, &q.d1m, &q.d1h);
    /* the 1h tier is used in whole hours only */
    q.d1h = floor_to(min64(max64(q.d1h, -lim), lim), STORAGE_HOUR_MS);
    for (size_t i = 0; i < l.n && !q.stop && !q.err; i++) {
        q.series = &l.v[i];
        series_buckets(&q);
    }
    rc = q.err ? -1 : 0;
out:
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
    struct bagg a = {0};
    int64_t id, d1m, d1h;
    memset(out, 0, sizeof *out);
    int one = begin_one_series(r, topic, metric, "an aggregate", &id, &d1m, &d1h);
    if (one <= 0)
        return one;
    int rc = -1;
    int64_t lo = ceil_to(from, STORAGE_MINUTE_MS), hi = floor_to(to, STORAGE_MINUTE_MS);
    if (hi > d1m)
        hi = d1m > lo ? d1m : lo; /* 1m rows only where the tier is complete */
    if (lo < hi) {
        if (agg_range(r, raw_sql, id, from, lo, &a) < 0 ||
            agg_range(r, m1_sql, id, lo, hi, &a) < 0 || agg_range(r, raw_sql, id, hi, to, &a) < 0)
            goto out;
    } else if (agg_range(r, raw_sql, id, from, to, &a) < 0) {
        goto out;
    }
    *out = a.b;
    out->ts = a.last_ts;
    rc = 0;
out:
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

/* ---- one series as tier rows (the Prometheus API's reads) ------------------------ */

/* Emits the rows of `sql` (bound ?1 series, ?2 from, ?3 to; columns bucket,
 * count, sum, min, max, first, first_ts, last, last_ts) as cb_tier_rows of
 * `width`. Returns 0, 1 when fn stopped, -1 on an error. */
static int tier_rows(struct cb_store_reader *r, const char *sql, int64_t series, int64_t from,
                     int64_t to, int64_t width, cb_tier_row_fn fn, void *ctx)
{
    if (from >= to)
        return 0;
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(r->db, sql, -1, &st, NULL) != SQLITE_OK)
        return fail_sql(r, "query rows");
    sqlite3_bind_int64(st, 1, series);
    sqlite3_bind_int64(st, 2, from);
    sqlite3_bind_int64(st, 3, to);
    int s, stop = 0;
    while (!stop && (s = sqlite3_step(st)) == SQLITE_ROW) {
        struct cb_tier_row row = {
            sqlite3_column_int64(st, 0),  width,
            (uint64_t)sqlite3_column_int64(st, 1), sqlite3_column_double(st, 2),
            sqlite3_column_double(st, 3), sqlite3_column_double(st, 4),
            sqlite3_column_double(st, 5), sqlite3_column_int64(st, 6),
            sqlite3_column_double(st, 7), sqlite3_column_int64(st, 8)};
        stop = fn(ctx, &row);
    }
    sqlite3_finalize(st);
    if (stop)
        return 1;
    return s == SQLITE_DONE ? 0 : fail_sql(r, "query rows");
}

/* The one integer of `sql` bound ?1 series, or `none` when it is NULL. */
static int64_t series_int(struct cb_store_reader *r, const char *sql, int64_t series,
                          int64_t none, int *failed)
{
    sqlite3_stmt *st = NULL;
    int64_t v = none;
    if (sqlite3_prepare_v2(r->db, sql, -1, &st, NULL) != SQLITE_OK) {
        *failed = fail_sql(r, "query rows");
        return none;
    }
    sqlite3_bind_int64(st, 1, series);
    int s = sqlite3_step(st);
    if (s == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL)
        v = sqlite3_column_int64(st, 0);
    else if (s != SQLITE_ROW && s != SQLITE_DONE)
        *failed = fail_sql(r, "query rows");
    sqlite3_finalize(st);
    return v;
}

int cb_store_query_rows(struct cb_store_reader *r, const char *topic, const char *metric,
                        int64_t from, int64_t to, cb_tier_row_fn fn, void *ctx,
                        int64_t *raw_first)
{
#define ROWS_SQL(tier)                                                                          \
    "SELECT bucket, count, sum, min, max, first, first_ts, last, last_ts FROM " tier          \
    " WHERE series_id = ?1 AND bucket >= ?2 AND bucket < ?3 ORDER BY bucket"
    static const char raw_sql[] = "SELECT ts, 1, value, value, value, value, ts, value, ts FROM "
                                  "samples WHERE series_id = ?1 AND ts >= ?2 AND ts < ?3 "
                                  "ORDER BY ts";
    int rc = -1, failed = 0;
    int64_t id, d1m, d1h;
    if (raw_first)
        *raw_first = INT64_MAX;
    int one = begin_one_series(r, topic, metric, "a query of rows", &id, &d1m, &d1h);
    if (one <= 0)
        return one;
    if (raw_first) /* the samples table's head makes this cost a scan: asked for only */
        *raw_first = series_int(r, bq_sql[BQ_RAW_FIRST], id, INT64_MAX, &failed);
    int64_t m0 = series_int(r, bq_sql[BQ_1M_FIRST], id, INT64_MAX, &failed);
    int64_t h0 = series_int(r, "SELECT min(first_ts) FROM rollup_1h WHERE series_id = ?1", id,
                            INT64_MAX, &failed);
    if (failed)
        goto out;
    /* 1h rows only for the hours the 1-minute tier no longer holds (whole:
     * the hour where 1-minute retention cut too) */
    int64_t hcut = m0 == INT64_MAX ? d1h
                   : h0 < m0       ? ceil_to(m0, STORAGE_HOUR_MS)
                                   : floor_to(m0, STORAGE_HOUR_MS);
    hcut = min64(hcut, d1h);
    int64_t mfrom = max64(hcut, floor_to(from, STORAGE_MINUTE_MS));
    int64_t rawfrom = max64(max64(d1m, hcut), from);
    int s = tier_rows(r, ROWS_SQL("rollup_1h"), id, floor_to(from, STORAGE_HOUR_MS),
                      min64(hcut, to), STORAGE_HOUR_MS, fn, ctx);
    if (s == 0)
        s = tier_rows(r, ROWS_SQL("rollup_1m"), id, mfrom, min64(d1m, to), STORAGE_MINUTE_MS, fn,
                      ctx);
    if (s == 0)
        s = tier_rows(r, raw_sql, id, rawfrom, to, 1, fn, ctx);
    if (s >= 0) /* 1: the caller stopped */
        rc = 0;
out:
    end(r);
    return rc;
#undef ROWS_SQL
}

/* ---- sensors and their metrics without their newest samples ------------------- */

/* Where a metric's strings are in a sensor's text (0: none). */
struct metric_at {
    size_t metric, unit;
};

int cb_store_list_sensors_brief(struct cb_store_reader *r, cb_sensor_fn fn, void *ctx)
{
    sqlite3_stmt *st = NULL;
    struct cb_strbuf text; /* the current sensor's strings, each NUL-terminated */
    struct cb_sensor_metric *m = NULL;
    struct metric_at *at = NULL;
    size_t n = 0, cap = 0, off[3] = {0};
    int rc = -1, s, stop = 0;
    int64_t cur = -1;
    struct cb_sensor_info info = {0};
    cb_strbuf_init(&text);
    if (begin(r) < 0)
        return -1;
    if (sqlite3_prepare_v2(r->db,
                           "SELECT se.id, se.topic, se.device, se.labels, se.first_seen, "
                           "se.last_seen, sr.metric, sr.unit FROM sensors se JOIN series sr ON "
                           "sr.sensor_id = se.id ORDER BY se.topic, sr.metric",
                           -1, &st, NULL) != SQLITE_OK) {
        fail_sql(r, "list sensors");
        goto out;
    }
    for (;;) {
        s = sqlite3_step(st);
        int64_t id = s == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
        if (cur != -1 && id != cur) { /* the previous sensor is complete */
            if (text.oom)
                goto oom;
            info.topic = text.data + off[0];
            info.device = off[1] ? text.data + off[1] : NULL;
            info.labels = off[2] ? text.data + off[2] : NULL;
            for (size_t k = 0; k < n; k++)
                m[k] = (struct cb_sensor_metric){text.data + at[k].metric,
                                                 at[k].unit ? text.data + at[k].unit : NULL,
                                                 INT64_MIN, NAN};
            info.metrics = m;
            info.nmetrics = n;
            if ((stop = fn(ctx, &info)) != 0)
                break;
        }
        if (s != SQLITE_ROW)
            break;
        if (id != cur) {
            cur = id;
            n = 0;
            cb_strbuf_reset(&text);
            cb_strbuf_putc(&text, '\0'); /* offset 0: none */
            for (int c = 1; c <= 3; c++) {
                const char *v = (const char *)sqlite3_column_text(st, c);
                off[c - 1] = v ? text.len : 0;
                if (v)
                    cb_strbuf_append(&text, v, strlen(v) + 1);
            }
            info.first_seen = sqlite3_column_int64(st, 4);
            info.last_seen = sqlite3_column_int64(st, 5);
        }
        if (n == cap) {
            size_t nc = cap ? cap * 2 : 8;
            struct cb_sensor_metric *nm = realloc(m, nc * sizeof *nm);
            if (nm)
                m = nm;
            struct metric_at *na = nm ? realloc(at, nc * sizeof *na) : NULL;
            if (!na)
                goto oom;
            at = na;
            cap = nc;
        }
        const char *metric = (const char *)sqlite3_column_text(st, 6);
        const char *unit = (const char *)sqlite3_column_text(st, 7);
        at[n].metric = text.len;
        cb_strbuf_append(&text, metric, strlen(metric) + 1);
        at[n].unit = unit ? text.len : 0;
        if (unit)
            cb_strbuf_append(&text, unit, strlen(unit) + 1);
        n++;
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
    free(m);
    free(at);
    cb_strbuf_free(&text);
    sqlite3_finalize(st);
    end(r);
    return rc;
}
