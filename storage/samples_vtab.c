/* `samples`: the raw samples of every series as one SQL table again, read
 * from where they live since schema step 8 (docs/storage.md, "Raw samples in
 * chunks"):
 *
 *   chunks      closed chunks, one row per series and time span, the samples
 *               encoded by storage/chunk.c; immutable except when a late
 *               sample is merged into one;
 *   chunks_recent  the recent tier of closed chunks (schema 9): the chunks of
 *               the seals since the last compaction, keyed (seal, series_id,
 *               start_ts) so that a seal appends; moved into `chunks` in bulk;
 *   head_blocks the open head (schema 10): one row per commit and group of
 *               STORAGE_HEAD_GROUP series, keyed (seq, grp) where seq is
 *               the commit that wrote it, so every commit appends at the
 *               right edge of the B-tree; the blob holds that commit's
 *               samples of the group (storage/head_block.h);
 *   head        the open head of schema 8 and 9: one row per sample, keyed
 *               (seq, series_id, ts); read while a file upgraded to 10
 *               still has it (the writer seals and drops it at start);
 *   samples_v6  the rows of a schema-6 file not converted yet (the writer
 *               converts them series by series between commits).
 *
 * For one series the three never overlap in time: legacy rows exist only for
 * a series not converted yet (and then nothing else does), and every head
 * sample is newer than the series' last chunk, every recent-tier chunk newer
 * than its chunks in `chunks` and a later seal's newer than an earlier
 * one's (store.c keeps that). So a series reads legacy rows, then chunks,
 * then the recent tier seal by seal, then head, in ts order.
 *
 * An eponymous, read-only virtual table named `samples`, registered on every
 * connection this process opens (sqlite3_auto_extension, from a
 * constructor), so the queries of reader.c, the writer's derivation and
 * retention and the tests' SQL read the chunked layout unchanged. A real
 * table named `samples` (a file of schema 6 or older) hides it. Columns:
 * series_id, ts, value. It uses a constraint `series_id = x` (else it walks
 * every series in id order), bounds on ts, and answers ORDER BY ts (ASC or
 * DESC) for one series without a sort, so max(ts) reads one chunk at most.
 * Another program (the sqlite3 shell) does not know it: it sees the tables. */
#include "storage/storage_int.h"
#include "storage/chunk.h"
#include "storage/head_block.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { Q_SERIES, Q_CHUNKS_ASC, Q_CHUNKS_DESC, Q_RECENT_SEAL, Q_RECENT_ROWS, Q_HEAD_SEQ,
       Q_HEAD_ROWS, Q_HB_SEQ, Q_HB_ROW, Q_LEGACY_ASC, Q_LEGACY_DESC, Q__COUNT };

/* Chunks of ?1 that may hold samples in [?2, ?3]: from the last one starting
 * at or before ?2. */
#define CHUNKS_SQL(dir)                                                                         \
    "SELECT data FROM chunks WHERE series_id = ?1 AND start_ts >= coalesce((SELECT "            \
    "max(start_ts) FROM chunks WHERE series_id = ?1 AND start_ts <= ?2), ?2) AND "              \
    "start_ts <= ?3 ORDER BY start_ts " dir

static const char *const q_sql[Q__COUNT] = {
    [Q_SERIES] = "SELECT id FROM series WHERE id > ?1 ORDER BY id LIMIT 1",
    [Q_CHUNKS_ASC] = CHUNKS_SQL("ASC"),
    [Q_CHUNKS_DESC] = CHUNKS_SQL("DESC"),
    [Q_RECENT_SEAL] = "SELECT seal FROM chunks_recent WHERE seal > ?1 ORDER BY seal LIMIT 1",
    [Q_RECENT_ROWS] = "SELECT data FROM chunks_recent WHERE seal = ?1 AND series_id = ?2 AND "
                      "end_ts >= ?3 AND start_ts <= ?4 ORDER BY start_ts",
    [Q_HEAD_SEQ] = "SELECT seq FROM main.head WHERE seq > ?1 ORDER BY seq LIMIT 1",
    [Q_HEAD_ROWS] = "SELECT ts, value FROM main.head WHERE seq = ?1 AND series_id = ?2 AND "
                    "ts >= ?3 AND ts <= ?4",
    [Q_HB_SEQ] = "SELECT seq FROM head_blocks WHERE seq > ?1 ORDER BY seq LIMIT 1",
    [Q_HB_ROW] = "SELECT data FROM head_blocks WHERE seq = ?1 AND grp = ?2",
    [Q_LEGACY_ASC] = "SELECT ts, value FROM samples_v6 WHERE series_id = ?1 AND ts >= ?2 AND "
                     "ts <= ?3 ORDER BY ts",
    [Q_LEGACY_DESC] = "SELECT ts, value FROM samples_v6 WHERE series_id = ?1 AND ts >= ?2 AND "
                      "ts <= ?3 ORDER BY ts DESC",
};

/* The connection's statements, prepared on first use and lent to one cursor
 * at a time: two cursors can be open at once (two correlated subqueries of
 * one statement), and a statement stepped by one must not be bound by the
 * other, so a second cursor prepares its own. */
struct vt {
    sqlite3_vtab base;
    sqlite3 *db;
    sqlite3_stmt *st[Q__COUNT];
    int lent[Q__COUNT];
};

/* What a cursor is reading for its current series, in ascending order
 * (reversed for DESC). */
enum { PH_LEGACY, PH_CHUNKS, PH_RECENT, PH_HEAD, PH_DONE };

struct cur {
    sqlite3_vtab_cursor base;
    int one;           /* a series_id constraint: just that series */
    int desc;
    int legacy;        /* samples_v6 exists */
    int recent;        /* chunks_recent exists */
    int blocks;        /* head_blocks exists */
    int oldhead;       /* head (a row per sample) exists */
    int64_t series, lo, hi; /* ts in [lo, hi] */
    int phase;         /* PH_*, walked backwards for DESC */
    sqlite3_stmt *src; /* the running statement of the phase, or NULL */
    sqlite3_stmt *own[Q__COUNT]; /* the cursor's own statements, or NULL */
    int borrowed[Q__COUNT];      /* it holds the connection's statement */
    struct cb_chunk_point *buf;
    size_t n, cap, i;  /* buf[i] is the current row when i < n */
    int eof;
    int64_t rowid;
};

#define IDX_SERIES 1
#define IDX_LO 2
#define IDX_HI 4
#define IDX_DESC 8

static int vt_connect(sqlite3 *db, void *aux, int argc, const char *const *argv,
                      sqlite3_vtab **out, char **err)
{
    (void)aux, (void)argc, (void)argv, (void)err;
    int rc = sqlite3_declare_vtab(db, "CREATE TABLE x(series_id INTEGER, ts INTEGER, value REAL)");
    if (rc != SQLITE_OK)
        return rc;
    struct vt *v = sqlite3_malloc(sizeof *v);
    if (!v)
        return SQLITE_NOMEM;
    memset(v, 0, sizeof *v);
    v->db = db;
    sqlite3_vtab_config(db, SQLITE_VTAB_INNOCUOUS);
    *out = &v->base;
    return SQLITE_OK;
}

static int vt_disconnect(sqlite3_vtab *base)
{
    struct vt *v = (struct vt *)base;
    for (int k = 0; k < Q__COUNT; k++)
        sqlite3_finalize(v->st[k]);
    sqlite3_free(v);
    return SQLITE_OK;
}

/* Plans a scan: argv order series, lo, hi (those present). The ts bounds are
 * applied exactly but SQLite checks them again (omit stays 0): a bound given
 * as a real or a text is only approximated here. */
static int vt_best_index(sqlite3_vtab *base, sqlite3_index_info *info)
{
    (void)base;
    int slot[3] = {-1, -1, -1}; /* series, lo, hi */
    for (int i = 0; i < info->nConstraint; i++) {
        const struct sqlite3_index_constraint *c = &info->aConstraint[i];
        if (!c->usable)
            continue;
        if (c->iColumn == 0 && c->op == SQLITE_INDEX_CONSTRAINT_EQ && slot[0] < 0)
            slot[0] = i;
        else if (c->iColumn == 1) {
            int lo = c->op == SQLITE_INDEX_CONSTRAINT_GE || c->op == SQLITE_INDEX_CONSTRAINT_GT;
            int hi = c->op == SQLITE_INDEX_CONSTRAINT_LE || c->op == SQLITE_INDEX_CONSTRAINT_LT;
            if (c->op == SQLITE_INDEX_CONSTRAINT_EQ)
                lo = hi = 1;
            if (lo && slot[1] < 0)
                slot[1] = i;
            if (hi && slot[2] < 0)
                slot[2] = i;
        }
    }
    int num = 0, arg = 1;
    static const int bit[3] = {IDX_SERIES, IDX_LO, IDX_HI};
    for (int k = 0; k < 3; k++) {
        if (slot[k] < 0)
            continue;
        if (k == 2 && slot[2] == slot[1]) { /* ts = x: one argument for both */
            num |= bit[2];
            continue;
        }
        info->aConstraintUsage[slot[k]].argvIndex = arg++;
        num |= bit[k];
    }
    /* the op of each bound, for vt_filter: kept in idxStr-free form */
    int lo_op = slot[1] >= 0 ? info->aConstraint[slot[1]].op : 0;
    int hi_op = slot[2] >= 0 ? info->aConstraint[slot[2]].op : 0;
    num |= (lo_op == SQLITE_INDEX_CONSTRAINT_GT) << 4;
    num |= (hi_op == SQLITE_INDEX_CONSTRAINT_LT) << 5;
    num |= (slot[2] >= 0 && slot[2] == slot[1]) << 6; /* lo and hi from one argument */
    if (num & IDX_SERIES) {
        if (info->nOrderBy == 1 && info->aOrderBy[0].iColumn == 1) {
            info->orderByConsumed = 1;
            if (info->aOrderBy[0].desc)
                num |= IDX_DESC;
        }
        info->estimatedCost = (num & (IDX_LO | IDX_HI)) ? 20 : 100;
        info->estimatedRows = (num & (IDX_LO | IDX_HI)) ? 100 : 10000;
    } else {
        if (info->nOrderBy == 2 && info->aOrderBy[0].iColumn == 0 && !info->aOrderBy[0].desc &&
            info->aOrderBy[1].iColumn == 1 && !info->aOrderBy[1].desc)
            info->orderByConsumed = 1;
        else if (info->nOrderBy == 1 && info->aOrderBy[0].iColumn == 0 &&
                 !info->aOrderBy[0].desc)
            info->orderByConsumed = 1;
        info->estimatedCost = 1e9;
        info->estimatedRows = 100000000;
    }
    info->idxNum = num;
    return SQLITE_OK;
}

static int vt_open(sqlite3_vtab *base, sqlite3_vtab_cursor **out)
{
    (void)base;
    struct cur *c = sqlite3_malloc(sizeof *c);
    if (!c)
        return SQLITE_NOMEM;
    memset(c, 0, sizeof *c);
    *out = &c->base;
    return SQLITE_OK;
}

static void cur_stop_src(struct cur *c)
{
    if (c->src)
        sqlite3_reset(c->src);
    c->src = NULL;
}

static int vt_close(sqlite3_vtab_cursor *cb)
{
    struct cur *c = (struct cur *)cb;
    struct vt *v = (struct vt *)c->base.pVtab;
    cur_stop_src(c);
    for (int k = 0; k < Q__COUNT; k++) {
        sqlite3_finalize(c->own[k]);
        if (c->borrowed[k]) {
            sqlite3_reset(v->st[k]);
            v->lent[k] = 0;
        }
    }
    sqlite3_free(c->buf);
    sqlite3_free(c);
    return SQLITE_OK;
}

/* Statement k for cursor c: the connection's when it is free (then lent to c
 * until c closes), else c's own. */
static int stmt(struct cur *c, int k, sqlite3_stmt **out)
{
    struct vt *v = (struct vt *)c->base.pVtab;
    if (c->own[k] || c->borrowed[k]) {
        *out = c->own[k] ? c->own[k] : v->st[k];
        return SQLITE_OK;
    }
    sqlite3_stmt **slot = v->lent[k] ? &c->own[k] : &v->st[k];
    if (!*slot) {
        int rc = sqlite3_prepare_v3(v->db, q_sql[k], -1, SQLITE_PREPARE_PERSISTENT, slot, NULL);
        if (rc != SQLITE_OK) {
            sqlite3_free(v->base.zErrMsg);
            v->base.zErrMsg = sqlite3_mprintf("samples: %s", sqlite3_errmsg(v->db));
            return rc;
        }
    }
    if (slot == &v->st[k])
        v->lent[k] = c->borrowed[k] = 1;
    *out = *slot;
    return SQLITE_OK;
}

static int reserve(struct cur *c, size_t n)
{
    if (n <= c->cap)
        return SQLITE_OK;
    size_t cap = c->cap ? c->cap : 256;
    while (cap < n)
        cap *= 2;
    struct cb_chunk_point *b = sqlite3_realloc64(c->buf, cap * sizeof *b);
    if (!b)
        return SQLITE_NOMEM;
    c->buf = b;
    c->cap = cap;
    return SQLITE_OK;
}

static int cmp_point(const void *a, const void *b)
{
    const struct cb_chunk_point *x = a, *y = b;
    return (x->ts_ms > y->ts_ms) - (x->ts_ms < y->ts_ms);
}

static void reverse(struct cb_chunk_point *p, size_t n)
{
    for (size_t a = 0, b = n; a + 1 < b; a++, b--) {
        struct cb_chunk_point t = p[a];
        p[a] = p[b - 1];
        p[b - 1] = t;
    }
}

/* Appends the samples in [lo, hi] of the cursor's series in the block
 * that `row` is on (column 0) to buf. */
static int load_block(struct cur *c, sqlite3_stmt *row)
{
    struct storage_hblock_iter it;
    struct storage_hsample x;
    int k = storage__hblock_iter_init(&it, sqlite3_column_blob(row, 0),
                                      (size_t)sqlite3_column_bytes(row, 0),
                                      c->series / STORAGE_HEAD_GROUP);
    while (k == 0 && (k = storage__hblock_next(&it, &x)) == 1) {
        k = 0;
        if (x.series < c->series || x.ts < c->lo || x.ts > c->hi)
            continue;
        if (x.series > c->series)
            break; /* sorted by series */
        int rc = reserve(c, c->n + 1);
        if (rc != SQLITE_OK)
            return rc;
        c->buf[c->n++] = (struct cb_chunk_point){x.ts, x.value};
    }
    return k < 0 ? SQLITE_CORRUPT : SQLITE_OK;
}

/* Appends the cursor's series' head blocks' samples in [lo, hi] to buf: one
 * seek for each commit in the head and one for its block of the series'
 * group (the head holds a few minutes of commits). */
static int load_head_blocks(struct cur *c)
{
    sqlite3_stmt *nx, *row;
    int rc;
    if ((rc = stmt(c, Q_HB_SEQ, &nx)) != SQLITE_OK || (rc = stmt(c, Q_HB_ROW, &row)) != SQLITE_OK)
        return rc;
    int64_t seq = INT64_MIN;
    for (;;) {
        sqlite3_bind_int64(nx, 1, seq);
        rc = sqlite3_step(nx);
        if (rc == SQLITE_ROW)
            seq = sqlite3_column_int64(nx, 0);
        sqlite3_reset(nx);
        if (rc != SQLITE_ROW)
            return rc == SQLITE_DONE ? SQLITE_OK : rc;
        sqlite3_bind_int64(row, 1, seq);
        sqlite3_bind_int64(row, 2, c->series / STORAGE_HEAD_GROUP);
        rc = sqlite3_step(row);
        if (rc == SQLITE_ROW)
            rc = load_block(c, row);
        sqlite3_reset(row);
        if (rc != SQLITE_OK && rc != SQLITE_DONE)
            return rc;
    }
}

/* Reads every head sample of the cursor's series in [lo, hi] into buf,
 * sorted: its blocks (schema 10) and its rows of the old table while that
 * exists, one seek for each commit in the head and one for the series'
 * block or rows in it. */
static int load_head(struct cur *c)
{
    sqlite3_stmt *nx, *rows;
    int rc;
    c->n = 0;
    if (c->blocks && (rc = load_head_blocks(c)) != SQLITE_OK)
        return rc;
    if (!c->oldhead)
        goto sort;
    if ((rc = stmt(c, Q_HEAD_SEQ, &nx)) != SQLITE_OK || (rc = stmt(c, Q_HEAD_ROWS, &rows)) != SQLITE_OK)
        return rc;
    int64_t seq = INT64_MIN;
    for (;;) {
        sqlite3_bind_int64(nx, 1, seq);
        rc = sqlite3_step(nx);
        if (rc != SQLITE_ROW) {
            sqlite3_reset(nx);
            if (rc != SQLITE_DONE)
                return rc;
            break;
        }
        seq = sqlite3_column_int64(nx, 0);
        sqlite3_reset(nx);
        sqlite3_bind_int64(rows, 1, seq);
        sqlite3_bind_int64(rows, 2, c->series);
        sqlite3_bind_int64(rows, 3, c->lo);
        sqlite3_bind_int64(rows, 4, c->hi);
        while ((rc = sqlite3_step(rows)) == SQLITE_ROW) {
            if ((rc = reserve(c, c->n + 1)) != SQLITE_OK)
                break;
            c->buf[c->n++] = (struct cb_chunk_point){sqlite3_column_int64(rows, 0),
                                                     sqlite3_column_double(rows, 1)};
        }
        sqlite3_reset(rows);
        if (rc != SQLITE_DONE)
            return rc;
    }
sort:
    if (c->n > 1)
        qsort(c->buf, c->n, sizeof *c->buf, cmp_point);
    /* one sample per ts (the writer never stores two; a row slipped in by
     * another connection is not its doing) */
    size_t k = 0;
    for (size_t i = 0; i < c->n; i++)
        if (k == 0 || c->buf[i].ts_ms != c->buf[k - 1].ts_ms)
            c->buf[k++] = c->buf[i];
    c->n = k;
    return SQLITE_OK;
}

/* Reads every recent-tier sample of the cursor's series in [lo, hi] into
 * buf, in ts order: one seek for each seal in the tier (at most
 * STORAGE_COMPACT_SEALS) and one for its chunks of the series. */
static int load_recent(struct cur *c)
{
    sqlite3_stmt *nx, *rows;
    int rc;
    c->n = 0;
    if (!c->recent)
        return SQLITE_OK;
    if ((rc = stmt(c, Q_RECENT_SEAL, &nx)) != SQLITE_OK ||
        (rc = stmt(c, Q_RECENT_ROWS, &rows)) != SQLITE_OK)
        return rc;
    int64_t seal = INT64_MIN;
    int64_t to = c->hi == INT64_MAX ? INT64_MAX : c->hi + 1;
    for (;;) {
        sqlite3_bind_int64(nx, 1, seal);
        rc = sqlite3_step(nx);
        if (rc == SQLITE_ROW)
            seal = sqlite3_column_int64(nx, 0);
        sqlite3_reset(nx);
        if (rc != SQLITE_ROW)
            return rc == SQLITE_DONE ? SQLITE_OK : rc;
        sqlite3_bind_int64(rows, 1, seal);
        sqlite3_bind_int64(rows, 2, c->series);
        sqlite3_bind_int64(rows, 3, c->lo);
        sqlite3_bind_int64(rows, 4, c->hi);
        while ((rc = sqlite3_step(rows)) == SQLITE_ROW) {
            const uint8_t *blob = sqlite3_column_blob(rows, 0);
            size_t len = (size_t)sqlite3_column_bytes(rows, 0);
            struct cb_chunk_iter it;
            long got = -1;
            if (cb_chunk_iter_init(&it, blob, len) == 0 &&
                (rc = reserve(c, c->n + cb_chunk_iter_count(&it))) == SQLITE_OK)
                got = cb_chunk_decode_range(blob, len, c->lo, to, c->buf + c->n, c->cap - c->n);
            if (got < 0) {
                rc = rc == SQLITE_ROW || rc == SQLITE_OK ? SQLITE_CORRUPT : rc;
                break;
            }
            c->n += (size_t)got;
        }
        sqlite3_reset(rows);
        if (rc != SQLITE_DONE)
            return rc;
    }
}

/* Decodes the current chunk row of c->src into buf (the samples in [lo, hi]). */
static int load_chunk(struct cur *c)
{
    const uint8_t *blob = sqlite3_column_blob(c->src, 0);
    size_t len = (size_t)sqlite3_column_bytes(c->src, 0);
    struct cb_chunk_iter it;
    if (cb_chunk_iter_init(&it, blob, len) < 0)
        return SQLITE_CORRUPT;
    int rc = reserve(c, cb_chunk_iter_count(&it));
    if (rc != SQLITE_OK)
        return rc;
    int64_t to = c->hi == INT64_MAX ? INT64_MAX : c->hi + 1;
    long n = cb_chunk_decode_range(blob, len, c->lo, to, c->buf, c->cap);
    if (n < 0)
        return SQLITE_CORRUPT;
    c->n = (size_t)n;
    return SQLITE_OK;
}

/* Starts phase `ph` for the current series: a statement to step (legacy,
 * chunks) or the head in buf. */
static int phase_start(struct cur *c, int ph)
{
    int rc = SQLITE_OK;
    c->phase = ph;
    c->n = c->i = 0;
    cur_stop_src(c);
    if (ph == PH_LEGACY) {
        if (!c->legacy)
            return SQLITE_OK;
        rc = stmt(c, c->desc ? Q_LEGACY_DESC : Q_LEGACY_ASC, &c->src);
    } else if (ph == PH_CHUNKS) {
        rc = stmt(c, c->desc ? Q_CHUNKS_DESC : Q_CHUNKS_ASC, &c->src);
    } else if (ph == PH_HEAD || ph == PH_RECENT) {
        rc = ph == PH_HEAD ? load_head(c) : load_recent(c);
        if (rc == SQLITE_OK && c->desc)
            reverse(c->buf, c->n);
        return rc;
    } else {
        return SQLITE_OK;
    }
    if (rc != SQLITE_OK)
        return rc;
    sqlite3_bind_int64(c->src, 1, c->series);
    sqlite3_bind_int64(c->src, 2, c->lo);
    sqlite3_bind_int64(c->src, 3, c->hi);
    return SQLITE_OK;
}

/* Refills buf from the phase's statement: one chunk, or up to 1024 legacy
 * rows. Sets c->n = 0 when the statement is done. */
static int phase_fill(struct cur *c)
{
    c->n = c->i = 0;
    if (!c->src)
        return SQLITE_OK;
    int rc;
    if (c->phase == PH_CHUNKS) {
        while ((rc = sqlite3_step(c->src)) == SQLITE_ROW) {
            if ((rc = load_chunk(c)) != SQLITE_OK)
                return rc;
            if (c->desc)
                reverse(c->buf, c->n);
            if (c->n)
                return SQLITE_OK;
        }
    } else {
        if ((rc = reserve(c, 1024)) != SQLITE_OK)
            return rc;
        while (c->n < 1024 && (rc = sqlite3_step(c->src)) == SQLITE_ROW)
            c->buf[c->n++] = (struct cb_chunk_point){sqlite3_column_int64(c->src, 0),
                                                     sqlite3_column_double(c->src, 1)};
        if (rc == SQLITE_DONE)
            cur_stop_src(c); /* (stepping it again would start it over) */
        if (c->n)
            return rc == SQLITE_ROW || rc == SQLITE_DONE ? SQLITE_OK : rc;
    }
    cur_stop_src(c);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* The next series id after c->series (all-series scans). 0: none left. */
static int next_series(struct cur *c, int *found)
{
    sqlite3_stmt *st;
    int rc = stmt(c, Q_SERIES, &st);
    if (rc != SQLITE_OK)
        return rc;
    sqlite3_bind_int64(st, 1, c->series);
    rc = sqlite3_step(st);
    *found = rc == SQLITE_ROW;
    if (*found)
        c->series = sqlite3_column_int64(st, 0);
    sqlite3_reset(st);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* Moves to the next row: within buf, else the next batch of the phase, else
 * the next phase (legacy, chunks, recent, head; backwards for DESC), else the next
 * series. */
static int advance(struct cur *c)
{
    int rc;
    for (;;) {
        if (c->i < c->n)
            return SQLITE_OK;
        if (c->src) {
            if ((rc = phase_fill(c)) != SQLITE_OK)
                return rc;
            continue;
        }
        int next = c->desc ? c->phase - 1 : c->phase + 1;
        if (next >= PH_LEGACY && next < PH_DONE) {
            if ((rc = phase_start(c, next)) != SQLITE_OK)
                return rc;
            continue;
        }
        int found = 0;
        if (!c->one && (rc = next_series(c, &found)) != SQLITE_OK)
            return rc;
        if (!found) {
            c->eof = 1;
            return SQLITE_OK;
        }
        if ((rc = phase_start(c, c->desc ? PH_HEAD : PH_LEGACY)) != SQLITE_OK)
            return rc;
    }
}

static int64_t bound(sqlite3_value *v, int upper)
{
    switch (sqlite3_value_numeric_type(v)) {
    case SQLITE_INTEGER:
        return sqlite3_value_int64(v);
    case SQLITE_FLOAT: {
        double d = upper ? ceil(sqlite3_value_double(v)) : floor(sqlite3_value_double(v));
        if (d >= 9.2e18)
            return INT64_MAX;
        if (d <= -9.2e18)
            return INT64_MIN;
        return (int64_t)d;
    }
    default:
        return upper ? INT64_MAX : INT64_MIN; /* NULL or text: SQLite filters */
    }
}

static int vt_filter(sqlite3_vtab_cursor *cb, int num, const char *idx, int argc,
                     sqlite3_value **argv)
{
    (void)idx, (void)argc;
    struct cur *c = (struct cur *)cb;
    int a = 0, rc;
    cur_stop_src(c);
    c->eof = 0;
    c->n = c->i = 0;
    c->rowid = 0;
    c->one = !!(num & IDX_SERIES);
    c->desc = !!(num & IDX_DESC);
    c->lo = INT64_MIN;
    c->hi = INT64_MAX;
    c->series = INT64_MIN;
    if (c->one) {
        if (sqlite3_value_numeric_type(argv[a]) != SQLITE_INTEGER) {
            c->eof = 1; /* series ids are integers */
            return SQLITE_OK;
        }
        c->series = sqlite3_value_int64(argv[a++]);
    }
    if (num & IDX_LO) {
        c->lo = bound(argv[a], 0);
        if ((num & 16) && c->lo < INT64_MAX)
            c->lo++;
        if (num & 64)
            c->hi = bound(argv[a], 1);
        a++;
    }
    if ((num & IDX_HI) && !(num & 64)) {
        c->hi = bound(argv[a], 1);
        if ((num & 32) && c->hi > INT64_MIN)
            c->hi--;
    }
    /* from the connection's schema in memory, no statement (this runs for
     * every series of every query) */
    c->legacy = sqlite3_table_column_metadata(((struct vt *)c->base.pVtab)->db, "main",
                                              "samples_v6", "ts", NULL, NULL, NULL, NULL,
                                              NULL) == SQLITE_OK;
    c->recent = sqlite3_table_column_metadata(((struct vt *)c->base.pVtab)->db, "main",
                                              "chunks_recent", "seal", NULL, NULL, NULL, NULL,
                                              NULL) == SQLITE_OK;
    c->blocks = sqlite3_table_column_metadata(((struct vt *)c->base.pVtab)->db, "main",
                                              "head_blocks", "grp", NULL, NULL, NULL, NULL,
                                              NULL) == SQLITE_OK;
    c->oldhead = sqlite3_table_column_metadata(((struct vt *)c->base.pVtab)->db, "main", "head",
                                               "seq", NULL, NULL, NULL, NULL,
                                               NULL) == SQLITE_OK;
    if (c->lo > c->hi) {
        c->eof = 1;
        return SQLITE_OK;
    }
    if (c->one) {
        if ((rc = phase_start(c, c->desc ? PH_HEAD : PH_LEGACY)) != SQLITE_OK)
            return rc;
    } else {
        c->phase = PH_DONE; /* advance() takes the first series */
        c->desc = 0;
    }
    return advance(c);
}

static int vt_next(sqlite3_vtab_cursor *cb)
{
    struct cur *c = (struct cur *)cb;
    c->i++;
    c->rowid++;
    return advance(c);
}

static int vt_eof(sqlite3_vtab_cursor *cb)
{
    return ((struct cur *)cb)->eof;
}

static int vt_column(sqlite3_vtab_cursor *cb, sqlite3_context *ctx, int col)
{
    struct cur *c = (struct cur *)cb;
    const struct cb_chunk_point *p = &c->buf[c->i];
    if (col == 0)
        sqlite3_result_int64(ctx, c->series);
    else if (col == 1)
        sqlite3_result_int64(ctx, p->ts_ms);
    else
        sqlite3_result_double(ctx, p->value);
    return SQLITE_OK;
}

static int vt_rowid(sqlite3_vtab_cursor *cb, sqlite3_int64 *rowid)
{
    *rowid = ((struct cur *)cb)->rowid;
    return SQLITE_OK;
}

static const sqlite3_module samples_module = {
    .iVersion = 0,
    .xCreate = NULL, /* eponymous only */
    .xConnect = vt_connect,
    .xBestIndex = vt_best_index,
    .xDisconnect = vt_disconnect,
    .xDestroy = vt_disconnect,
    .xOpen = vt_open,
    .xClose = vt_close,
    .xFilter = vt_filter,
    .xNext = vt_next,
    .xEof = vt_eof,
    .xColumn = vt_column,
    .xRowid = vt_rowid,
};

static int samples_init(sqlite3 *db, char **err, const struct sqlite3_api_routines *api)
{
    (void)err, (void)api;
    return sqlite3_create_module(db, "samples", &samples_module, NULL);
}

/* Every connection of this process gets the module, also those the tests
 * open with sqlite3_open (storage links into every citybrain binary). */
__attribute__((constructor)) static void samples_register(void)
{
    /* before anything initialises SQLite (see schema.c, sqlite_global_init) */
    (void)sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
    sqlite3_auto_extension((void (*)(void))samples_init);
}

void storage__samples_vtab_init(void)
{
    /* registering twice is a no-op; the call keeps this file (and its
     * constructor) in a program linked from a static library */
    sqlite3_auto_extension((void (*)(void))samples_init);
}
