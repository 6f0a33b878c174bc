/* The store's writer side: a locked pending queue filled by the loop thread,
 * and one writer thread that owns the SQLite write connection.
 *
 * The loop thread never waits on disk: cb_store_append copies the rows into
 * the pending batch under a mutex (strings into an arena, no allocation once
 * the buffers have grown) and returns. The writer swaps the pending batch
 * with its own empty one about every storage.commit_interval and commits it
 * in one transaction: ids from memory (a map topic -> sensor, each sensor's
 * series by metric; SQL only for a new name), rows sorted by (series, ts), INSERT OR
 * IGNORE so a redelivered message changes nothing, and the highest journal
 * position of the batch in ingest_state, all in the same transaction.
 *
 * Rollups are derived, not merged at every commit (see "Rollup derivation"):
 * a commit writes rollup rows only for late samples, into buckets already
 * derived.
 *
 * A failed commit (disk full, busy, I/O error) is rolled back and the same
 * batch retried with exponential backoff; meanwhile rows queue up to
 * storage.max_pending_rows and beyond that whole messages are refused. Only
 * a journaled message (journal_pos > 0) is dropped from memory, counted in
 * rows_dropped: it is still in the journal, the committed position is held
 * below the first dropped one, and the next start replays it. A message
 * without a position (QoS 0, never journaled) has nothing behind it: its
 * rows are counted apart, in rows_lost, and the health text says which is
 * which.
 *
 * Between commits the writer runs retention steps (retention.c-like code at
 * the end of this file), each one short transaction. */
#include "storage/storage_int.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/strbuf.h"
#include "storage/chunk.h"
#include "storage/head_block.h"

/* ---- batches -------------------------------------------------------------- */

struct pend_row {
    size_t topic, device, metric; /* arena offsets; device SIZE_MAX = none */
    int64_t ts;
    double value;
};

struct pend_quar {
    size_t topic, metric, reason;
    int64_t ts;
    double value;
};

struct batch {
    struct pend_row *rows;
    size_t nrows, caprows;
    struct pend_quar *quar;
    size_t nquar, capquar;
    struct cb_strbuf arena; /* the rows' strings, addressed by offset */
    uint64_t max_pos; /* highest journal position handled by this batch */
};

static int batch_empty(const struct batch *b)
{
    return b->nrows == 0 && b->nquar == 0 && b->max_pos == 0;
}

static void batch_clear(struct batch *b)
{
    b->nrows = b->nquar = 0;
    cb_strbuf_reset(&b->arena);
    b->max_pos = 0;
}

static void batch_free(struct batch *b)
{
    free(b->rows);
    free(b->quar);
    cb_strbuf_free(&b->arena);
    memset(b, 0, sizeof *b);
}

static int grow(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return 0;
    size_t c = *cap ? *cap : 256;
    while (c < need)
        c *= 2;
    void *n = realloc(*p, c * elem);
    if (!n)
        return -1;
    *p = n;
    *cap = c;
    return 0;
}

/* ---- names -> ids: sensors by topic, their series by metric (writer only) --- */

struct series_ent;

struct sensor_ent {
    int64_t id;
    int64_t first_seen, last_seen; /* in memory */
    int64_t first_db, last_db;     /* as last written */
    char *device;
    int touched;
    /* The sensor's series, sorted by metric and found by binary search: a
     * sensor has a handful, so a few short compares replace hashing the
     * topic again for every sample of a message (the topic-keyed map was a
     * tenth of the writer's time in a flood, perf). Owned here; freed with
     * the sensor. */
    struct series_ent **series;
    size_t nseries, capseries;
};

struct series_ent {
    int64_t id;
    /* Per rollup tier (0: 1m, 1: 1h), the newest bucket this writer merged
     * into the database, INT64_MIN when unknown: a row merged into that
     * bucket is an UPDATE, into a newer one an INSERT (see acc_flush). Only
     * a guess: both paths fall back to the other, so a stale value (a
     * restart, retention) costs one probe, never a wrong row. Forgotten with
     * the ids when a commit rolls back. */
    int64_t bucket[2];
    /* The newest ts of this series in the database (as of the transaction
     * being written), INT64_MIN for none. A row newer than it cannot be a
     * duplicate, so it goes into a multi-row INSERT (see commit_batch). Read
     * with the id; forgotten with it when a commit rolls back. */
    int64_t max_ts;
    char metric[]; /* NUL-terminated */
};

struct map_slot {
    uint64_t hash;
    char *key;
    size_t klen;
    void *val;
};

struct map {
    struct map_slot *slots;
    size_t cap, n;
};

static uint64_t hash_bytes(const char *a, size_t an)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (size_t i = 0; i < an; i++)
        h = (h ^ (unsigned char)a[i]) * 1099511628211ULL;
    return h ? h : 1;
}

/* Finds the slot of key a (an bytes, hash h): its val, or NULL. */
static void *map_get(const struct map *m, const char *a, size_t an, uint64_t h)
{
    if (!m->cap)
        return NULL;
    for (size_t i = h & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        const struct map_slot *s = &m->slots[i];
        if (!s->key)
            return NULL;
        if (s->hash == h && s->klen == an && memcmp(s->key, a, an) == 0)
            return s->val;
    }
}

static int map_put(struct map *m, const char *a, size_t an, uint64_t h, void *val)
{
    if ((m->n + 1) * 2 > m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 1024;
        struct map_slot *ns = calloc(cap, sizeof *ns);
        if (!ns)
            return -1;
        for (size_t i = 0; i < m->cap; i++) {
            if (!m->slots[i].key)
                continue;
            size_t j = m->slots[i].hash & (cap - 1);
            while (ns[j].key)
                j = (j + 1) & (cap - 1);
            ns[j] = m->slots[i];
        }
        free(m->slots);
        m->slots = ns;
        m->cap = cap;
    }
    char *key = malloc(an + 1);
    if (!key)
        return -1;
    memcpy(key, a, an);
    key[an] = '\0';
    size_t i = h & (m->cap - 1);
    while (m->slots[i].key)
        i = (i + 1) & (m->cap - 1);
    m->slots[i] = (struct map_slot){h, key, an, val};
    m->n++;
    return 0;
}

static void sensor_free(struct sensor_ent *e)
{
    for (size_t i = 0; i < e->nseries; i++)
        free(e->series[i]);
    free(e->series);
    free(e->device);
    free(e);
}

/* Empties the sensor map, freeing every sensor with its series. */
static void map_clear(struct map *m)
{
    for (size_t i = 0; i < m->cap; i++) {
        if (!m->slots[i].key)
            continue;
        free(m->slots[i].key);
        sensor_free(m->slots[i].val);
    }
    free(m->slots);
    memset(m, 0, sizeof *m);
}

/* ---- the store ----------------------------------------------------------------- */

enum {
    ST_BEGIN,
    ST_COMMIT,
    ST_ROLLBACK,
    ST_UPD_1M,
    ST_INS_1M,
    ST_UPD_1H,
    ST_INS_1H,
    ST_SEL_SENSOR,
    ST_INS_SENSOR,
    ST_UPD_SEEN,
    ST_UPD_DEVICE,
    ST_SEL_SERIES,
    ST_INS_SERIES,
    ST_INS_QUAR,
    ST_SET_POS,
    ST__COUNT
};

/* A rollup row is merged with an UPDATE when the bucket is known to exist and
 * an INSERT OR IGNORE when it is new, the other one following when the guess
 * was wrong (acc_flush): one B-tree seek in the usual case, where an INSERT
 * ... ON CONFLICT DO UPDATE probes for the conflict and then seeks again.
 * Same result: the writer is the only one writing, inside one transaction.
 * Parameters: ?1 series, ?2 bucket, ?3 count, ?4 sum, ?5 min, ?6 max,
 * ?7 first, ?8 first_ts, ?9 last, ?10 last_ts. In an UPDATE every right-hand
 * side reads the old row, so first/last compare with the old times. */
#define ROLLUP_UPDATE(table)                                                                    \
    "UPDATE " table " SET count = count + ?3, sum = sum + ?4, min = min(min, ?5), "             \
    "max = max(max, ?6), first = CASE WHEN ?8 < first_ts THEN ?7 ELSE first END, "               \
    "first_ts = min(first_ts, ?8), last = CASE WHEN ?10 > last_ts THEN ?9 ELSE last END, "      \
    "last_ts = max(last_ts, ?10) WHERE series_id = ?1 AND bucket = ?2"
#define ROLLUP_INSERT(table)                                                                    \
    "INSERT OR IGNORE INTO " table "(series_id, bucket, count, sum, min, max, first, "          \
    "first_ts, last, last_ts) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"

static const char *const stmt_sql[ST__COUNT] = {
    [ST_BEGIN] = "BEGIN IMMEDIATE",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
    [ST_UPD_1M] = ROLLUP_UPDATE("rollup_1m"),
    [ST_INS_1M] = ROLLUP_INSERT("rollup_1m"),
    [ST_UPD_1H] = ROLLUP_UPDATE("rollup_1h"),
    [ST_INS_1H] = ROLLUP_INSERT("rollup_1h"),
    [ST_SEL_SENSOR] = "SELECT id, first_seen, last_seen, device FROM sensors WHERE topic = ?1",
    [ST_INS_SENSOR] =
        "INSERT INTO sensors(topic, device, first_seen, last_seen) VALUES (?1, ?2, ?3, ?3)",
    [ST_UPD_SEEN] = "UPDATE sensors SET first_seen = min(first_seen, ?2), "
                    "last_seen = max(last_seen, ?3) WHERE id = ?1",
    [ST_UPD_DEVICE] = "UPDATE sensors SET device = ?2 WHERE id = ?1",
    [ST_SEL_SERIES] = "SELECT id, (SELECT max(ts) FROM samples WHERE series_id = series.id) "
                      "FROM series WHERE sensor_id = ?1 AND metric = ?2",
    [ST_INS_SERIES] = "INSERT INTO series(sensor_id, metric) VALUES (?1, ?2)",
    [ST_INS_QUAR] = "INSERT INTO quarantine(topic, metric, ts, value, reason, received) "
                    "VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    [ST_SET_POS] = "UPDATE ingest_state SET journal_pos = ?1 WHERE id = 1",
};

/* The statements of the chunked layout (schema 8; not prepared for an older
 * schema, which tests open). ?1 is the series where there is one. */
enum {
    CST_INS_HEAD,
    CST_CHUNK_BEFORE,
    CST_CHUNK_AFTER,
    CST_CHUNK_DEL,
    CST_CHUNK_INS,
    CST_HAS_SAMPLE,
    CST_HEAD_ALL,
    CST_HEAD_DEL,
    CST_HB_INS,
    CST_HB_ALL,
    CST_HB_DEL,
    CST_RECENT_INS,
    CST_RECENT_DEL,
    CST_RECENT_NEXT,
    CST_RECENT_ROWS,
    CST_RECENT_GET,
    CST_RECENT_KEYS,
    CST_RECENT_MOVE,
    CST_RECENT_SLICE_DEL,
    CST_RECENT_FIRST,
    CST_SERIES_AFTER,
    CST_LEGACY_IDS,
    CST_LEGACY_ROWS,
    CST_LEGACY_DEL,
    CST__COUNT
};

#define CHUNK_COLS "SELECT start_ts, end_ts, data FROM chunks WHERE series_id = ?1 "
static const char *const cst_sql[CST__COUNT] = {
    [CST_INS_HEAD] = "INSERT INTO head(seq, series_id, ts, value) VALUES (?1, ?2, ?3, ?4)",
    /* the last chunk starting at or before ?2; the first one after it */
    [CST_CHUNK_BEFORE] = CHUNK_COLS "AND start_ts <= ?2 ORDER BY start_ts DESC LIMIT 1",
    [CST_CHUNK_AFTER] = CHUNK_COLS "AND start_ts > ?2 ORDER BY start_ts LIMIT 1",
    [CST_CHUNK_DEL] = "DELETE FROM chunks WHERE series_id = ?1 AND start_ts = ?2",
    [CST_CHUNK_INS] = "INSERT INTO chunks(series_id, start_ts, end_ts, n, data) "
                      "VALUES (?1, ?2, ?3, ?4, ?5)",
    [CST_HAS_SAMPLE] = "SELECT 1 FROM samples WHERE series_id = ?1 AND ts = ?2",
    [CST_HEAD_ALL] = "SELECT series_id, ts, value FROM head",
    [CST_HEAD_DEL] = "DELETE FROM head",
    /* the head in blocks (schema 10) */
    [CST_HB_INS] = "INSERT INTO head_blocks(seq, grp, data) VALUES (?1, ?2, ?3)",
    [CST_HB_ALL] = "SELECT grp, data FROM head_blocks",
    [CST_HB_DEL] = "DELETE FROM head_blocks",
    /* the recent tier (schema 9): ?6 / ?3 the seal, as in CST_CHUNK_INS / _DEL
     * otherwise */
    [CST_RECENT_INS] = "INSERT INTO chunks_recent(seal, series_id, start_ts, end_ts, n, data) "
                       "VALUES (?6, ?1, ?2, ?3, ?4, ?5)",
    [CST_RECENT_DEL] = "DELETE FROM chunks_recent WHERE seal = ?3 AND series_id = ?1 AND "
                       "start_ts = ?2",
    [CST_RECENT_NEXT] = "SELECT seal FROM chunks_recent WHERE seal > ?1 ORDER BY seal LIMIT 1",
    [CST_RECENT_ROWS] = "SELECT start_ts, end_ts FROM chunks_recent WHERE seal = ?1 AND "
                        "series_id = ?2 ORDER BY start_ts",
    [CST_RECENT_GET] = "SELECT start_ts, end_ts, data FROM chunks_recent WHERE seal = ?1 AND "
                       "series_id = ?2 AND start_ts = ?3",
    /* one seal's keys for series in (?2, ?3], and their deletion (a slice
     * of a compaction) */
    [CST_RECENT_KEYS] = "SELECT seal, series_id, start_ts, n FROM chunks_recent WHERE seal = ?1 "
                        "AND series_id > ?2 AND series_id <= ?3",
    [CST_RECENT_SLICE_DEL] = "DELETE FROM chunks_recent WHERE seal = ?1 AND series_id > ?2 AND "
                             "series_id <= ?3",
    [CST_RECENT_FIRST] = "SELECT min(seal) FROM chunks_recent",
    [CST_SERIES_AFTER] = "SELECT id FROM series WHERE id > ?1 ORDER BY id LIMIT 256",
    [CST_RECENT_MOVE] = "INSERT INTO chunks(series_id, start_ts, end_ts, n, data) SELECT "
                        "series_id, start_ts, end_ts, n, data FROM chunks_recent WHERE "
                        "seal = ?1 AND series_id = ?2 AND start_ts = ?3",
    [CST_LEGACY_IDS] = "SELECT id FROM series WHERE id > ?1 AND id <= ?2 ORDER BY id LIMIT 256",
    [CST_LEGACY_ROWS] = "SELECT ts, value FROM samples_v6 WHERE series_id = ?1 ORDER BY ts",
    [CST_LEGACY_DEL] = "DELETE FROM samples_v6 WHERE series_id = ?1",
};

/* The statements on the row-per-sample head of schema 8 and 9. */
static int is_oldhead_stmt(int k)
{
    return k == CST_INS_HEAD || k == CST_HEAD_ALL || k == CST_HEAD_DEL;
}

/* A row resolved to its series, for sorting. */
struct item {
    int64_t series;
    int64_t ts;
    double value;
    struct series_ent *ent;
};

/* One rollup bucket being accumulated from consecutive inserted rows. */
struct acc {
    struct series_ent *ent;
    int64_t series, bucket;
    int64_t count;
    double sum, min, max, first, last;
    int64_t first_ts, last_ts;
};

/* Rows newer than their series' max_ts are inserted INSERT_CHUNK at a time:
 * one statement step for 64 rows instead of 64 (bind, step, reset) rounds,
 * about 26 % less time per row (measured with a plain SQLite program on
 * this schema: 1.25M rows/s one at a time, 1.70M in chunks of 64). */
#define INSERT_CHUNK 64

/* Rollup derivation, tier 0 (rollup_1m, from samples) and tier 1 (rollup_1h,
 * from rollup_1m). Merging every commit's rows into their rollup rows cost
 * one UPDATE per series, bucket and tier at every commit: at 40k series that
 * was 80k UPDATEs a second, a third of the writer's CPU under load, for rows
 * that change again a second later. Instead, once a bucket has closed (its
 * end plus DERIVE_GRACE_MS is past), a pass computes it from the source and
 * writes it once (INSERT OR REPLACE: exact whatever was there).
 *
 * `done` is the invariant readers rely on: the tier is complete below it;
 * from `done` on, readers take the source instead (reader.c). A pass derives
 * [done, to) series by series in steps of storage.retention.step_rows,
 * each one transaction that also records the state in meta, so a crash
 * resumes it. A sample that arrives for a derived bucket (late: below `done`,
 * or below `to` for a series the running pass has done) is merged into the
 * tier by its commit, as before. So every interleaving of commits, passes and
 * crashes keeps the tiers exact. The writer keeps the state in memory, changed
 * only after the transaction that records it has committed. */
struct derive {
    int64_t done;   /* the tier is complete below this bucket boundary */
    int64_t to;     /* > done while a pass derives [done, to) */
    int64_t cursor; /* that pass has derived every series with id <= cursor */
};

#define DERIVE_GRACE_MS 5000
/* A derivation step reads this many times storage.retention.step_rows
 * source rows: reading is cheaper than deleting (about 0.3 µs a row from
 * chunks), and each step's transaction writes the meta page and the inner
 * pages of the tier again: at 5,000 rows a step (1.4 series at 1 Hz, passes
 * of an hour) those were about half of a pass's WAL frames. A step of
 * 40,000 rows takes tens of milliseconds (citybrain_storage_step_max_seconds). */
#define DERIVE_STEP_FACTOR 8

/* Retention: one tier's progress in the current pass. */
struct tier_cursor {
    int64_t series; /* last series finished (per-series tiers) */
    int done;
};

/* A job the writer runs between commits when due or when asked (a test hook
 * waits for it): the seal, the compaction. */
struct job {
    int req, rc;      /* asked for; the code of the last asked run */
    uint64_t gen;     /* runs asked for and done */
    int64_t after;    /* monotonic: not before (after a failed run) */
    uint64_t *count;  /* the stat counting successful runs */
};

enum { RT_RAW, RT_1M, RT_1H, RT_QUARANTINE, RT_TRANSITIONS, RT_INSTANCES, RT_SILENCES,
       RT_OUTBOX, RT_AUDIT, RT__COUNT };

struct cb_store {
    pthread_mutex_t mu;
    pthread_cond_t wake; /* the writer waits here */
    pthread_cond_t done; /* flush / exec / retention callers wait here */
    pthread_t thread;
    int thread_started;

    /* shared, under mu */
    struct batch pending;
    size_t work_rows;       /* rows the writer holds (not yet committed) */
    int stop;
    uint64_t flush_req, flush_done;
    int flush_rc;
    const char *exec_sql;   /* test hook request */
    int exec_rc, exec_pending;
    int retention_req, retention_rc, retention_more;
    uint64_t retention_deleted;
    uint64_t retention_gen;
    uint64_t drop_cap;      /* 0, or first dropped journal position */
    struct cb_store_stats stats;
    struct cb_clock clock;
    struct cb_journal *journal;

    /* settings */
    char *path;
    int64_t commit_interval_ms;
    size_t max_pending;
    int64_t retention_ms[RT__COUNT];
    int64_t retention_interval_ms;
    int64_t step_rows;
    void (*observer)(double secs);
    void (*step_observer)(double secs); /* under mu */

    /* writer thread only */
    sqlite3 *db;
    sqlite3_stmt *st[ST__COUNT];
    /* Where new rows go: the head (schema 8), or the table of the old
     * layout for a series not converted yet (`samples` of an older schema
     * opened by tests, `samples_v6` while the conversion runs). One
     * statement for a row, one for INSERT_CHUNK rows at once. */
    sqlite3_stmt *head_one, *head_bulk, *leg_one, *leg_bulk;
    sqlite3_stmt *cst[CST__COUNT];
    const struct item *chunk[INSERT_CHUNK];  /* rows for the old layout */
    const struct item *hrows[INSERT_CHUNK]; /* rows for the head */
    int chunked;        /* schema 8: raw samples in chunks and head */
    /* Schema 10: the head in blocks (head_blocks); a commit queues its head
     * samples in hs[0, nhs), sorted by (series, ts), and writes them as one
     * block per group at its end. `oldhead`: the table `head` exists (a
     * row per sample: schema 8 and 9, or left by them until sealed). */
    int blocked, oldhead;
    struct storage_hsample *hs;
    size_t nhs, caphs;
    /* Schema 9: seals write into the recent tier (chunks_recent), numbered
     * recent_seal; it holds recent_seals of them until compacted. */
    int tiered;
    int64_t recent_seal, recent_seals;
    /* Lower bounds of the samples' ts in the head and in the recent tier
     * (INT64_MAX: empty; INT64_MIN: unknown), so that a retention pass seals
     * and compacts only when they may hold samples older than its cut. */
    int64_t head_min, recent_min;
    struct job compact;
    /* A compaction in slices (compact_recent): seals [compact_from,
     * compact_upto], series up to compact_cursor moved. */
    int compacting;
    int compact_auto; /* started by the writer or retention: it goes on by itself;
                         asked by storage__compact_slice: one slice per ask */
    int64_t compact_from, compact_upto, compact_cursor;
    struct rkey *keys;
    size_t capkeys;
    int64_t seq;        /* the seq of the last commit that wrote the head */
    int64_t head_first; /* the oldest seq in the head, INT64_MAX when empty */
    struct job seal;
    /* Conversion of a schema-6 file: series ids in (mig_cursor, mig_end]
     * still have their rows in samples_v6 (while `legacy`). */
    int legacy;
    int64_t mig_cursor, mig_end, mig_after;
    struct cb_chunk_point *pts; /* chunk scratch: seal, merge, conversion, trim */
    size_t cappts;
    uint8_t *blob;
    size_t capblob;
    struct batch work;
    struct map sensors; /* topic -> sensor_ent */
    size_t nseries;     /* series known to the writer (in the sensors' lists) */
    struct sensor_ent **touched;
    size_t ntouched, captouched;
    struct item *items, *sorted; /* sort_items moves items through sorted */
    size_t capitems, capsorted;
    size_t *counts;              /* per series id, for sort_items */
    size_t capcounts;
    uint64_t committed_pos;
    struct derive derive[2];
    int derive_on;  /* 0: opened at an older schema version (tests): merge every row */
    /* The last run closed cleanly (meta derive_clean): every sample still to
     * be derived was committed by this run, at or after dirty_min[t]; a pass
     * ending at or before it has nothing to read and only moves `done`. */
    int clean_open, clean_cleared;
    int64_t dirty_min[2];
    int64_t max_ts; /* newest sample ts committed in this run, INT64_MIN if none */
    struct tier_cursor cursor[RT__COUNT];
    int64_t visited_cut[RT__COUNT]; /* the cut of the tier's last whole visit */
    int pass_active;
    int pass_auto;        /* started by the interval: the writer continues it */
    int64_t next_pass_ms; /* monotonic */
};

const char *cb_store_health_name(enum cb_store_health h)
{
    switch (h) {
    case CB_STORE_OK:
        return "ok";
    case CB_STORE_DEGRADED:
        return "degraded";
    case CB_STORE_FAILED:
        return "failed";
    }
    return "unknown";
}

/* ---- writer: resolving names ---------------------------------------------------- */

static struct sensor_ent *sensor_for(struct cb_store *s, const char *topic, const char *device,
                                     int64_t ts, int *rc)
{
    size_t tn = strlen(topic);
    uint64_t h = hash_bytes(topic, tn);
    struct sensor_ent *e = map_get(&s->sensors, topic, tn, h);
    if (!e) {
        e = calloc(1, sizeof *e);
        if (!e) {
            *rc = SQLITE_NOMEM;
            return NULL;
        }
        sqlite3_stmt *q = s->st[ST_SEL_SENSOR];
        sqlite3_bind_text(q, 1, topic, (int)tn, SQLITE_STATIC);
        int r = sqlite3_step(q);
        if (r == SQLITE_ROW) {
            e->id = sqlite3_column_int64(q, 0);
            e->first_seen = e->first_db = sqlite3_column_int64(q, 1);
            e->last_seen = e->last_db = sqlite3_column_int64(q, 2);
            const char *d = (const char *)sqlite3_column_text(q, 3);
            e->device = d ? strdup(d) : NULL;
            r = SQLITE_OK;
        }
        sqlite3_reset(q);
        if (r == SQLITE_DONE) {
            sqlite3_stmt *ins = s->st[ST_INS_SENSOR];
            sqlite3_bind_text(ins, 1, topic, (int)tn, SQLITE_STATIC);
            if (device)
                sqlite3_bind_text(ins, 2, device, -1, SQLITE_STATIC);
            else
                sqlite3_bind_null(ins, 2);
            sqlite3_bind_int64(ins, 3, ts);
            r = sqlite3_step(ins);
            sqlite3_reset(ins);
            if (r == SQLITE_DONE) {
                e->id = sqlite3_last_insert_rowid(s->db);
                e->first_seen = e->first_db = e->last_seen = e->last_db = ts;
                e->device = device ? strdup(device) : NULL;
                r = SQLITE_OK;
            }
        }
        if (r != SQLITE_OK || map_put(&s->sensors, topic, tn, h, e) < 0) {
            sensor_free(e);
            *rc = r != SQLITE_OK ? r : SQLITE_NOMEM;
            return NULL;
        }
    }
    if (device && (!e->device || strcmp(e->device, device) != 0)) {
        sqlite3_stmt *u = s->st[ST_UPD_DEVICE];
        sqlite3_bind_int64(u, 1, e->id);
        sqlite3_bind_text(u, 2, device, -1, SQLITE_STATIC);
        int r = sqlite3_step(u);
        sqlite3_reset(u);
        if (r != SQLITE_DONE) {
            *rc = r;
            return NULL;
        }
        free(e->device);
        e->device = strdup(device);
    }
    if (!e->touched) {
        if (grow((void **)&s->touched, &s->captouched, s->ntouched + 1, sizeof *s->touched) < 0) {
            *rc = SQLITE_NOMEM;
            return NULL;
        }
        s->touched[s->ntouched++] = e;
        e->touched = 1;
    }
    if (ts < e->first_seen)
        e->first_seen = ts;
    if (ts > e->last_seen)
        e->last_seen = ts;
    return e;
}

/* The series `metric` of sensor, from the sensor's list or the database
 * (created when new). Returns its entry (owned by the sensor), or NULL with
 * *rc set to the SQLite error. */
static struct series_ent *series_for(struct cb_store *s, struct sensor_ent *sensor,
                                     const char *metric, int *rc)
{
    size_t lo = 0, hi = sensor->nseries; /* the list is sorted by metric */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(sensor->series[mid]->metric, metric);
        if (c == 0)
            return sensor->series[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    size_t mn = strlen(metric);
    if (sensor->nseries == sensor->capseries) {
        size_t cap = sensor->capseries ? sensor->capseries * 2 : 4;
        struct series_ent **n = realloc(sensor->series, cap * sizeof *n);
        if (!n) {
            *rc = SQLITE_NOMEM;
            return NULL;
        }
        sensor->series = n;
        sensor->capseries = cap;
    }
    struct series_ent *e = calloc(1, sizeof *e + mn + 1);
    if (!e) {
        *rc = SQLITE_NOMEM;
        return NULL;
    }
    memcpy(e->metric, metric, mn + 1);
    e->bucket[0] = e->bucket[1] = INT64_MIN;
    e->max_ts = INT64_MIN;
    sqlite3_stmt *q = s->st[ST_SEL_SERIES];
    sqlite3_bind_int64(q, 1, sensor->id);
    sqlite3_bind_text(q, 2, metric, (int)mn, SQLITE_STATIC);
    int r = sqlite3_step(q);
    if (r == SQLITE_ROW) {
        e->id = sqlite3_column_int64(q, 0);
        if (sqlite3_column_type(q, 1) != SQLITE_NULL)
            e->max_ts = sqlite3_column_int64(q, 1);
        r = SQLITE_OK;
    }
    sqlite3_reset(q);
    if (r == SQLITE_DONE) {
        sqlite3_stmt *ins = s->st[ST_INS_SERIES];
        sqlite3_bind_int64(ins, 1, sensor->id);
        sqlite3_bind_text(ins, 2, metric, (int)mn, SQLITE_STATIC);
        r = sqlite3_step(ins);
        sqlite3_reset(ins);
        if (r == SQLITE_DONE) {
            e->id = sqlite3_last_insert_rowid(s->db);
            r = SQLITE_OK;
        }
    }
    if (r != SQLITE_OK) {
        free(e);
        *rc = r;
        return NULL;
    }
    memmove(sensor->series + lo + 1, sensor->series + lo,
            (sensor->nseries - lo) * sizeof *sensor->series);
    sensor->series[lo] = e;
    sensor->nseries++;
    s->nseries++;
    return e;
}

/* ---- writer: the commit ------------------------------------------------------------ */

static int cmp_item(const void *a, const void *b)
{
    const struct item *x = a, *y = b;
    if (x->series != y->series)
        return x->series < y->series ? -1 : 1;
    return (x->ts > y->ts) - (x->ts < y->ts);
}

/* Sorts s->items[0, n) by (series, ts). Series ids are small and dense, so
 * a stable counting sort by id, then a check of each series' run: rows come
 * in arrival order, which is ts order unless some were late, and only a run
 * that is not gets a qsort. With a qsort of the whole batch the writer
 * used 10 % more CPU under a flood (0.47 against 0.42 s per 200k messages).
 * Sparse ids (far more than rows) take the qsort. */
static int sort_items(struct cb_store *s, size_t n)
{
    int64_t maxid = 0;
    for (size_t i = 0; i < n; i++)
        if (s->items[i].series > maxid)
            maxid = s->items[i].series;
    if (maxid < 0 || (uint64_t)maxid > 4 * (uint64_t)n + 65536) {
        qsort(s->items, n, sizeof *s->items, cmp_item);
        return 0;
    }
    size_t ids = (size_t)maxid + 2;
    if (grow((void **)&s->counts, &s->capcounts, ids, sizeof *s->counts) < 0 ||
        grow((void **)&s->sorted, &s->capsorted, n, sizeof *s->sorted) < 0)
        return -1;
    memset(s->counts, 0, ids * sizeof *s->counts);
    for (size_t i = 0; i < n; i++)
        s->counts[s->items[i].series + 1]++;
    for (size_t k = 1; k < ids; k++)
        s->counts[k] += s->counts[k - 1];
    for (size_t i = 0; i < n; i++)
        s->sorted[s->counts[s->items[i].series]++] = s->items[i];
    struct item *t = s->items;
    s->items = s->sorted;
    s->sorted = t;
    size_t c = s->capitems;
    s->capitems = s->capsorted;
    s->capsorted = c;
    for (size_t a = 0; a < n;) {
        size_t b = a + 1, ordered = 1;
        for (; b < n && s->items[b].series == s->items[a].series; b++)
            if (s->items[b].ts < s->items[b - 1].ts)
                ordered = 0;
        if (!ordered)
            qsort(s->items + a, b - a, sizeof *s->items, cmp_item);
        a = b;
    }
    return 0;
}

/* Binds accumulator a (parameters ?1..?10 of ROLLUP_UPDATE / ROLLUP_INSERT)
 * to st and steps it. Returns SQLITE_DONE or the SQLite error. */
static int acc_step(sqlite3_stmt *st, const struct acc *a)
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
    int r = sqlite3_step(st);
    sqlite3_reset(st);
    return r;
}

/* One rollup tier's statements (see ROLLUP_UPDATE) and bucket width. */
struct tier {
    int index; /* into series_ent.bucket */
    int64_t width;
    sqlite3_stmt *upd, *ins;
};

/* Merges the accumulated bucket into its rollup row of tier t and empties the
 * accumulator. A bucket the series already merged into (ent->bucket) is
 * UPDATEd, else INSERTed (OR IGNORE); when the guess was wrong (nothing
 * updated, nothing inserted) the other statement follows. One B-tree seek in
 * the usual case instead of the two of an upsert. Returns SQLITE_OK or the
 * SQLite error. */
static int acc_flush(struct cb_store *s, const struct tier *t, struct acc *a)
{
    if (!a->count)
        return SQLITE_OK;
    int64_t *known = &a->ent->bucket[t->index];
    int exists = a->bucket == *known;
    int r = acc_step(exists ? t->upd : t->ins, a);
    if (r == SQLITE_DONE && sqlite3_changes(s->db) == 0)
        r = acc_step(exists ? t->ins : t->upd, a);
    a->count = 0;
    if (r != SQLITE_DONE)
        return r;
    if (a->bucket > *known)
        *known = a->bucket;
    return SQLITE_OK;
}

/* Adds an inserted row (rows come sorted by series, ts) to the accumulator of
 * its bucket in tier t, writing the previous bucket out when the series or
 * the bucket changes: one write per (series, bucket) per tier per commit,
 * however many rows fall in it. */
static int acc_add(struct cb_store *s, const struct tier *t, struct acc *a, const struct item *it)
{
    int64_t bucket = storage__bucket(it->ts, t->width);
    if (a->count && (a->series != it->series || a->bucket != bucket)) {
        int r = acc_flush(s, t, a);
        if (r != SQLITE_OK)
            return r;
    }
    if (!a->count) {
        *a = (struct acc){it->ent, it->series, bucket, 0, 0, it->value, it->value,
                          it->value, it->value, it->ts, it->ts};
    }
    a->count++;
    a->sum += it->value;
    if (it->value < a->min)
        a->min = it->value;
    if (it->value > a->max)
        a->max = it->value;
    a->last = it->value;
    a->last_ts = it->ts;
    return SQLITE_OK;
}

/* Whether the bucket of a sample of `series` at `ts` is already in the tier
 * of d (so its commit must merge it there): below done, or below to for a
 * series the running pass has derived. */
static int derived(const struct derive *d, int64_t series, int64_t ts)
{
    return ts < d->done || (d->to > d->done && ts < d->to && series <= d->cursor);
}

static int step_done(sqlite3_stmt *st)
{
    int r = sqlite3_step(st);
    sqlite3_reset(st);
    return r == SQLITE_DONE || r == SQLITE_ROW ? SQLITE_OK : r;
}

/* Inserts the n rows of `rows`: as one statement (`bulk`) when n is a whole
 * chunk, else one by one (`one`). With seq >= 0 into the head (parameters
 * seq, series, ts, value), else into the old layout (series, ts, value).
 * Every row must be new (see series_ent.max_ts); a row that is not means
 * another writer touched the file: the commit fails and is retried with ids
 * and max_ts read again. */
static int insert_rows(struct cb_store *s, sqlite3_stmt *one, sqlite3_stmt *bulk,
                       const struct item *const *rows, size_t n, int64_t seq)
{
    sqlite3_stmt *st = n == INSERT_CHUNK ? bulk : one;
    int cols = seq >= 0 ? 4 : 3;
    for (size_t i = 0; i < n; i++) {
        int k = n == INSERT_CHUNK ? (int)i * cols : 0;
        if (seq >= 0)
            sqlite3_bind_int64(st, ++k, seq);
        sqlite3_bind_int64(st, k + 1, rows[i]->series);
        sqlite3_bind_int64(st, k + 2, rows[i]->ts);
        sqlite3_bind_double(st, k + 3, rows[i]->value);
        if (n == INSERT_CHUNK && i + 1 < n)
            continue;
        int r = sqlite3_step(st);
        sqlite3_reset(st);
        if (r != SQLITE_DONE)
            return r;
        if (sqlite3_changes(s->db) != (n == INSERT_CHUNK ? INSERT_CHUNK : 1))
            return SQLITE_CONSTRAINT;
    }
    return SQLITE_OK;
}

/* Queues `it`, a sample for the open head, for this commit's blocks
 * (schema 10): head_write_blocks writes the queue at the end of the commit.
 * Samples come in (series, ts) order (the commit's sorted items). */
static int head_queue(struct cb_store *s, const struct item *it)
{
    if (grow((void **)&s->hs, &s->caphs, s->nhs + 1, sizeof *s->hs) < 0)
        return SQLITE_NOMEM;
    s->hs[s->nhs++] = (struct storage_hsample){it->series, it->ts, it->value};
    return SQLITE_OK;
}

/* Writes the commit's queued head samples (s->hs[0, nhs)) as one block per
 * group of STORAGE_HEAD_GROUP series, rows (seq, grp) of head_blocks, and
 * empties the queue. Returns the SQLite code (SQLITE_MISMATCH: the queue
 * was not in order, a bug, nothing stored). */
static int head_write_blocks(struct cb_store *s, int64_t seq)
{
    sqlite3_stmt *ins = s->cst[CST_HB_INS];
    size_t n = s->nhs;
    s->nhs = 0;
    for (size_t a = 0; a < n;) {
        int64_t grp = s->hs[a].series / STORAGE_HEAD_GROUP;
        size_t b = a + 1;
        while (b < n && s->hs[b].series / STORAGE_HEAD_GROUP == grp)
            b++;
        if (grow((void **)&s->blob, &s->capblob, storage__hblock_bound(b - a), 1) < 0)
            return SQLITE_NOMEM;
        long len = storage__hblock_encode(s->hs + a, b - a, grp, s->blob, s->capblob);
        if (len < 0)
            return SQLITE_MISMATCH;
        sqlite3_bind_int64(ins, 1, seq);
        sqlite3_bind_int64(ins, 2, grp);
        sqlite3_bind_blob(ins, 3, s->blob, (int)len, SQLITE_STATIC);
        int r = step_done(ins);
        if (r != SQLITE_OK)
            return r;
        a = b;
    }
    return SQLITE_OK;
}

/* ---- writer: chunks ------------------------------------------------------------------
 *
 * For each series: closed chunks (table chunks) that never overlap in time,
 * and head rows all newer than the series' last chunk. A seal moves the whole
 * head into chunks; a late sample (not newer than the last chunk's end) is
 * merged into the chunk whose span holds it, or the one before the gap it
 * falls in, and that chunk rewritten. */

static int grow_pts(struct cb_store *s, size_t n)
{
    return grow((void **)&s->pts, &s->cappts, n, sizeof *s->pts);
}

/* Appends the samples of the chunk row st is on (columns start_ts, end_ts,
 * data) to s->pts[*n...]. Returns SQLITE_OK, SQLITE_NOMEM or SQLITE_CORRUPT. */
static int chunk_load(struct cb_store *s, sqlite3_stmt *st, size_t *n)
{
    const uint8_t *blob = sqlite3_column_blob(st, 2);
    size_t len = (size_t)sqlite3_column_bytes(st, 2);
    struct cb_chunk_iter it;
    if (cb_chunk_iter_init(&it, blob, len) < 0)
        return SQLITE_CORRUPT;
    size_t cnt = cb_chunk_iter_count(&it);
    if (grow_pts(s, *n + cnt + 1) < 0)
        return SQLITE_NOMEM;
    long got = cb_chunk_decode(blob, len, s->pts + *n, cnt);
    if (got < 0)
        return SQLITE_CORRUPT;
    *n += (size_t)got;
    return SQLITE_OK;
}

/* Writes pts[0, n) of `series` (ts strictly increasing) as chunks of
 * STORAGE_CHUNK_TARGET samples while at least twice that many are left, the
 * rest as one (so a chunk holds fewer than 2 * STORAGE_CHUNK_TARGET), into
 * `chunks` (seal 0) or the recent tier under `seal` (> 0). Values that are
 * not finite have no place in a chunk and are left out (decoding
 * quarantines them before they reach the store). Returns the SQLite code. */
static int chunks_write(struct cb_store *s, int64_t series, const struct cb_chunk_point *pts,
                        size_t n, int64_t seal)
{
    sqlite3_stmt *ins = s->cst[seal ? CST_RECENT_INS : CST_CHUNK_INS];
    while (n > 0) {
        size_t take = n >= 2 * STORAGE_CHUNK_TARGET ? STORAGE_CHUNK_TARGET : n;
        size_t k = 0;
        /* finite values only, in place of the scratch copy */
        while (k < take && isfinite(pts[k].value))
            k++;
        const struct cb_chunk_point *p = pts;
        size_t m = take;
        if (k < take) {
            struct cb_chunk_point *f = malloc(take * sizeof *f);
            if (!f)
                return SQLITE_NOMEM;
            m = 0;
            for (size_t i = 0; i < take; i++)
                if (isfinite(pts[i].value))
                    f[m++] = pts[i];
            p = f;
        }
        int r = SQLITE_OK;
        if (m > 0) {
            size_t cap = cb_chunk_bound(m);
            if (grow((void **)&s->blob, &s->capblob, cap, 1) < 0)
                r = SQLITE_NOMEM;
            long len = r == SQLITE_OK ? cb_chunk_encode(p, m, CB_CHUNK_AUTO, s->blob, s->capblob)
                                      : -1;
            if (r == SQLITE_OK && len < 0)
                r = SQLITE_MISMATCH; /* ts not increasing: a bug, never stored */
            if (r == SQLITE_OK) {
                sqlite3_bind_int64(ins, 1, series);
                sqlite3_bind_int64(ins, 2, p[0].ts_ms);
                sqlite3_bind_int64(ins, 3, p[m - 1].ts_ms);
                sqlite3_bind_int64(ins, 4, (int64_t)m);
                sqlite3_bind_blob(ins, 5, s->blob, (int)len, SQLITE_STATIC);
                if (seal) {
                    sqlite3_bind_int64(ins, 6, seal);
                    if (p[0].ts_ms < s->recent_min) /* (a bound: kept on a rollback) */
                        s->recent_min = p[0].ts_ms;
                }
                r = step_done(ins);
            }
        }
        if (p != pts)
            free((void *)p);
        if (r != SQLITE_OK)
            return r;
        pts += take;
        n -= take;
    }
    return SQLITE_OK;
}

/* Deletes the chunk of `series` starting at `start`: from `chunks` (seal 0)
 * or from the recent tier's seal `seal`. */
static int chunk_delete(struct cb_store *s, int64_t series, int64_t start, int64_t seal)
{
    sqlite3_stmt *del = s->cst[seal ? CST_RECENT_DEL : CST_CHUNK_DEL];
    sqlite3_bind_int64(del, 1, series);
    sqlite3_bind_int64(del, 2, start);
    if (seal)
        sqlite3_bind_int64(del, 3, seal);
    return step_done(del);
}

/* Steps chunk statement k for (series, ts): *found is 1 with the row's
 * samples appended to s->pts[*n...] and its start in *start. */
static int chunk_find(struct cb_store *s, int k, int64_t series, int64_t ts, int *found,
                      int64_t *start, int64_t *end, size_t *n)
{
    sqlite3_stmt *st = s->cst[k];
    sqlite3_bind_int64(st, 1, series);
    sqlite3_bind_int64(st, 2, ts);
    int r = sqlite3_step(st);
    *found = r == SQLITE_ROW;
    if (*found) {
        *start = sqlite3_column_int64(st, 0);
        *end = sqlite3_column_int64(st, 1);
        r = chunk_load(s, st, n);
    }
    sqlite3_reset(st);
    return r == SQLITE_ROW || r == SQLITE_DONE ? SQLITE_OK : r;
}

/* Opens the last chunk of `series` in `chunks` for more samples: one with
 * fewer than STORAGE_CHUNK_TARGET is loaded into s->pts[0, *n) and deleted
 * (the caller writes it again with the new samples); a full one stays as it
 * is and *n is 0. Returns the SQLite code. */
static int chunk_reopen_last(struct cb_store *s, int64_t series, size_t *n)
{
    int found, r;
    int64_t start = 0, end = 0;
    *n = 0;
    if ((r = chunk_find(s, CST_CHUNK_BEFORE, series, INT64_MAX, &found, &start, &end, n)) !=
        SQLITE_OK)
        return r;
    if (found && *n >= STORAGE_CHUNK_TARGET)
        *n = 0;
    else if (found)
        return chunk_delete(s, series, start, 0);
    return SQLITE_OK;
}

/* A chunk of the recent tier: its seal and span. */
struct rchunk {
    int64_t seal, start, end;
};

/* Finds the recent-tier chunks of `series` around ts, a seek for each seal
 * in the tier (late samples only): *before the last one starting at or
 * before ts, *after the first one starting after it (seal 0: none). */
static int recent_find(struct cb_store *s, int64_t series, int64_t ts, struct rchunk *before,
                       struct rchunk *after)
{
    sqlite3_stmt *nx = s->cst[CST_RECENT_NEXT], *rows = s->cst[CST_RECENT_ROWS];
    int64_t seal = 0;
    int r;
    *before = *after = (struct rchunk){0, 0, 0};
    for (;;) {
        sqlite3_bind_int64(nx, 1, seal);
        r = sqlite3_step(nx);
        if (r == SQLITE_ROW)
            seal = sqlite3_column_int64(nx, 0);
        sqlite3_reset(nx);
        if (r != SQLITE_ROW)
            return r == SQLITE_DONE ? SQLITE_OK : r;
        sqlite3_bind_int64(rows, 1, seal);
        sqlite3_bind_int64(rows, 2, series);
        while ((r = sqlite3_step(rows)) == SQLITE_ROW) {
            struct rchunk c = {seal, sqlite3_column_int64(rows, 0), sqlite3_column_int64(rows, 1)};
            if (c.start <= ts)
                *before = c;
            else if (!after->seal)
                after->seal = c.seal, after->start = c.start, after->end = c.end;
        }
        sqlite3_reset(rows);
        if (r != SQLITE_DONE)
            return r;
        if (after->seal)
            return SQLITE_OK; /* later seals hold later samples */
    }
}

/* Loads the recent-tier chunk c of `series` into s->pts[0, *n). */
static int recent_load(struct cb_store *s, int64_t series, const struct rchunk *c, size_t *n)
{
    sqlite3_stmt *get = s->cst[CST_RECENT_GET];
    sqlite3_bind_int64(get, 1, c->seal);
    sqlite3_bind_int64(get, 2, series);
    sqlite3_bind_int64(get, 3, c->start);
    int r = sqlite3_step(get);
    *n = 0;
    if (r == SQLITE_ROW)
        r = chunk_load(s, get, n);
    else if (r == SQLITE_DONE)
        r = SQLITE_CORRUPT; /* found a moment ago in the same transaction */
    sqlite3_reset(get);
    return r == SQLITE_ROW ? SQLITE_OK : r;
}

/* Merges `it` into the chunk in s->pts[0, n) that starts at `start` (in
 * `chunks`, or the recent tier's seal `seal`): written again, split in two
 * past 2 * STORAGE_CHUNK_TARGET samples. *added is 0 when the chunk already
 * holds a sample at that ts (a redelivery). */
static int chunk_merge(struct cb_store *s, const struct item *it, int64_t start, int64_t seal,
                       size_t n, int *added)
{
    size_t lo = 0, hi = n;
    int r;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (s->pts[mid].ts_ms < it->ts)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo < n && s->pts[lo].ts_ms == it->ts)
        return SQLITE_OK; /* a redelivery */
    memmove(s->pts + lo + 1, s->pts + lo, (n - lo) * sizeof *s->pts);
    s->pts[lo] = (struct cb_chunk_point){it->ts, it->value};
    if ((r = chunk_delete(s, it->series, start, seal)) != SQLITE_OK ||
        (r = chunks_write(s, it->series, s->pts, n + 1, seal)) != SQLITE_OK)
        return r;
    *added = 1;
    return SQLITE_OK;
}

/* Stores a sample of a converted series that is not newer than everything
 * stored for it: merged into the chunk that holds its time (or the one
 * before the gap it falls in, or the first chunk when it is older than all),
 * in `chunks` or in the recent tier, whichever holds that chunk, or, newer
 * than every chunk of both, into the head at `seq`. *added is 0 when the
 * series already has a sample at that ts (a redelivery). Per series the
 * chunks of `chunks` are older than those of the recent tier, which are
 * older than the head; a merge keeps that (it only fills a gap). */
static int late_row(struct cb_store *s, const struct item *it, int64_t seq, int *added)
{
    int found, r;
    int64_t start = 0, end = 0, bstart = 0, bend = 0;
    size_t n = 0;
    *added = 0;
    if ((r = chunk_find(s, CST_CHUNK_BEFORE, it->series, it->ts, &found, &start, &end, &n)) !=
        SQLITE_OK)
        return r;
    if (found && it->ts <= end)
        return chunk_merge(s, it, start, 0, n, added);
    int after;
    size_t m = n;
    if ((r = chunk_find(s, CST_CHUNK_AFTER, it->series, it->ts, &after, &bstart, &bend, &m)) !=
        SQLITE_OK)
        return r;
    if (after) /* in a gap of `chunks`, or older than all: the first one takes it */
        return found ? chunk_merge(s, it, start, 0, n, added)
                     : chunk_merge(s, it, bstart, 0, m - n, added);
    if (s->tiered) {
        struct rchunk rb, ra;
        if ((r = recent_find(s, it->series, it->ts, &rb, &ra)) != SQLITE_OK)
            return r;
        if (rb.seal && (it->ts <= rb.end || ra.seal)) {
            /* in that chunk, or in the gap after it */
            if ((r = recent_load(s, it->series, &rb, &m)) != SQLITE_OK)
                return r;
            return chunk_merge(s, it, rb.start, rb.seal, m, added);
        }
        if (ra.seal) {
            /* between `chunks` and the recent tier: the last chunk of
             * `chunks` takes it (still in s->pts), or the first recent one */
            if (found)
                return chunk_merge(s, it, start, 0, n, added);
            if ((r = recent_load(s, it->series, &ra, &m)) != SQLITE_OK)
                return r;
            return chunk_merge(s, it, ra.start, ra.seal, m, added);
        }
    }
    /* newer than every chunk: the head's business */
    sqlite3_stmt *has = s->cst[CST_HAS_SAMPLE];
    sqlite3_bind_int64(has, 1, it->series);
    sqlite3_bind_int64(has, 2, it->ts);
    r = sqlite3_step(has);
    sqlite3_reset(has);
    if (r == SQLITE_ROW)
        return SQLITE_OK;
    if (r != SQLITE_DONE)
        return r;
    *added = 1;
    return s->blocked ? head_queue(s, it) : insert_rows(s, s->head_one, s->head_bulk, &it, 1, seq);
}

/* Appends the samples of every block of the head (schema 10) to
 * s->items[*n...]. Returns SQLITE_OK, SQLITE_NOMEM, SQLITE_CORRUPT (a block
 * that does not decode) or the SQLite code. */
static int head_read_blocks(struct cb_store *s, size_t *n)
{
    sqlite3_stmt *all = s->cst[CST_HB_ALL];
    int r;
    while ((r = sqlite3_step(all)) == SQLITE_ROW) {
        struct storage_hblock_iter it;
        struct storage_hsample x;
        const uint8_t *blob = sqlite3_column_blob(all, 1);
        int k = storage__hblock_iter_init(&it, blob, (size_t)sqlite3_column_bytes(all, 1),
                                          sqlite3_column_int64(all, 0));
        while (k == 0 && (k = storage__hblock_next(&it, &x)) == 1) {
            if (grow((void **)&s->items, &s->capitems, *n + 1, sizeof *s->items) < 0) {
                sqlite3_reset(all);
                return SQLITE_NOMEM;
            }
            s->items[(*n)++] = (struct item){x.series, x.ts, x.value, NULL};
            k = 0;
        }
        if (k < 0) {
            sqlite3_reset(all);
            return SQLITE_CORRUPT;
        }
    }
    sqlite3_reset(all);
    return r == SQLITE_DONE ? SQLITE_OK : r;
}

/* Seals the whole head into chunks in one transaction: its samples (blocks,
 * and rows of the old `head` while that table exists) are read, sorted by
 * (series, ts), cut into chunks, and the head emptied; at schema 10 the old
 * table is dropped (a step-9 file's head, sealed at start). Schema 9: the chunks go into the recent tier under a new seal
 * number, rows keyed (seal, series, start) that append at the right edge of
 * chunks_recent (compact_recent later moves them into `chunks` and fills up
 * short chunks). Schema 8 (tests): into `chunks`, appended to each series'
 * last chunk when that one has fewer than STORAGE_CHUNK_TARGET samples (it
 * is rewritten). Returns the SQLite code; on failure nothing changed. */
static int seal_head(struct cb_store *s)
{
    size_t nitems = 0;
    int64_t seal = s->tiered ? s->recent_seal + 1 : 0;
    int r = step_done(s->st[ST_BEGIN]);
    if (r != SQLITE_OK)
        return r;
    sqlite3_stmt *all = s->cst[CST_HEAD_ALL];
    while (s->oldhead && (r = sqlite3_step(all)) == SQLITE_ROW) {
        if (grow((void **)&s->items, &s->capitems, nitems + 1, sizeof *s->items) < 0) {
            r = SQLITE_NOMEM;
            break;
        }
        s->items[nitems++] = (struct item){sqlite3_column_int64(all, 0),
                                           sqlite3_column_int64(all, 1),
                                           sqlite3_column_double(all, 2), NULL};
    }
    if (s->oldhead) {
        sqlite3_reset(all);
        if (r != SQLITE_DONE)
            goto fail;
    }
    if (s->blocked && (r = head_read_blocks(s, &nitems)) != SQLITE_OK)
        goto fail;
    r = SQLITE_OK;
    if (nitems && sort_items(s, nitems) < 0) {
        r = SQLITE_NOMEM;
        goto fail;
    }
    for (size_t a = 0; a < nitems;) {
        int64_t series = s->items[a].series;
        size_t b = a;
        while (b < nitems && s->items[b].series == series)
            b++;
        size_t n = 0;
        if (!seal && (r = chunk_reopen_last(s, series, &n)) != SQLITE_OK)
            goto fail;
        if (grow_pts(s, n + (b - a)) < 0) {
            r = SQLITE_NOMEM;
            goto fail;
        }
        for (size_t i = a; i < b; i++)
            if (n == 0 || s->items[i].ts > s->pts[n - 1].ts_ms) /* (equal: never stored twice) */
                s->pts[n++] = (struct cb_chunk_point){s->items[i].ts, s->items[i].value};
        if ((r = chunks_write(s, series, s->pts, n, seal)) != SQLITE_OK)
            goto fail;
        a = b;
    }
    if (s->blocked && (r = step_done(s->cst[CST_HB_DEL])) != SQLITE_OK)
        goto fail;
    if (s->oldhead && !s->blocked && (r = step_done(s->cst[CST_HEAD_DEL])) != SQLITE_OK)
        goto fail;
    if (s->oldhead && s->blocked &&
        (r = sqlite3_exec(s->db, "DROP TABLE head", NULL, NULL, NULL)) != SQLITE_OK)
        goto fail;
    if ((r = step_done(s->st[ST_COMMIT])) != SQLITE_OK)
        goto fail;
    if (s->oldhead && s->blocked) {
        /* the old table is gone: so are its statements */
        for (int k = 0; k < CST__COUNT; k++)
            if (is_oldhead_stmt(k)) {
                sqlite3_finalize(s->cst[k]);
                s->cst[k] = NULL;
            }
        s->oldhead = 0;
    }
    s->head_first = INT64_MAX;
    s->head_min = INT64_MAX;
    if (seal && nitems) {
        s->recent_seal = seal;
        s->recent_seals++;
    }
    return SQLITE_OK;
fail:
    step_done(s->st[ST_ROLLBACK]);
    return r;
}

/* ---- writer: compaction of the recent tier ----------------------------------------
 *
 * A seal writes its chunks into chunks_recent, keyed by the seal first, so
 * it appends; keyed by series first (`chunks`), it dirtied a leaf page per
 * series once every series had a page of history of its own. Compaction
 * moves the whole tier into `chunks` in one transaction, series by series in
 * (series, start) order, so each series' new rows land together: about a
 * page per series per compaction instead of one per seal. A series whose
 * chunks are all at least half full is moved row by row as it is (no
 * decoding); one with a short chunk (a slow sensor: a few samples a seal)
 * is decoded with the short last chunk of `chunks`, and written again as
 * chunks of STORAGE_CHUNK_TARGET. A crash leaves the state before or after
 * it: the readers read both tiers. */

struct rkey {
    int64_t series, start, seal, n;
};

static int cmp_rkey(const void *a, const void *b)
{
    const struct rkey *x = a, *y = b;
    if (x->series != y->series)
        return (x->series > y->series) - (x->series < y->series);
    return (x->start > y->start) - (x->start < y->start);
}

/* Compacts series keys k[0, nk) (one series, in start order) into `chunks`.
 * Returns the SQLite code. */
static int compact_series(struct cb_store *s, const struct rkey *k, size_t nk)
{
    int64_t series = k[0].series;
    int short_chunk = 0, r;
    for (size_t i = 0; i < nk; i++)
        short_chunk |= k[i].n < STORAGE_CHUNK_TARGET / 2;
    if (!short_chunk) {
        sqlite3_stmt *mv = s->cst[CST_RECENT_MOVE];
        for (size_t i = 0; i < nk; i++) {
            sqlite3_bind_int64(mv, 1, k[i].seal);
            sqlite3_bind_int64(mv, 2, series);
            sqlite3_bind_int64(mv, 3, k[i].start);
            if ((r = step_done(mv)) != SQLITE_OK)
                return r;
        }
        return SQLITE_OK;
    }
    size_t n = 0;
    if ((r = chunk_reopen_last(s, series, &n)) != SQLITE_OK)
        return r;
    sqlite3_stmt *get = s->cst[CST_RECENT_GET];
    for (size_t i = 0; i < nk; i++) {
        sqlite3_bind_int64(get, 1, k[i].seal);
        sqlite3_bind_int64(get, 2, series);
        sqlite3_bind_int64(get, 3, k[i].start);
        r = sqlite3_step(get);
        if (r == SQLITE_ROW)
            r = chunk_load(s, get, &n);
        sqlite3_reset(get);
        if (r != SQLITE_OK)
            return r == SQLITE_DONE ? SQLITE_CORRUPT : r;
    }
    return chunks_write(s, series, s->pts, n, 0);
}

/* Reads into s->keys the recent tier's keys of seals [compact_from,
 * compact_upto] for series in (lo, hi], sorted by (series, start). Returns
 * the SQLite code. */
static int slice_keys(struct cb_store *s, int64_t lo, int64_t hi, size_t *nk)
{
    sqlite3_stmt *q = s->cst[CST_RECENT_KEYS];
    int r = SQLITE_OK;
    *nk = 0;
    for (int64_t seal = s->compact_from; seal <= s->compact_upto && r == SQLITE_OK; seal++) {
        sqlite3_bind_int64(q, 1, seal);
        sqlite3_bind_int64(q, 2, lo);
        sqlite3_bind_int64(q, 3, hi);
        while ((r = sqlite3_step(q)) == SQLITE_ROW) {
            if (grow((void **)&s->keys, &s->capkeys, *nk + 1, sizeof *s->keys) < 0) {
                r = SQLITE_NOMEM;
                break;
            }
            s->keys[(*nk)++] = (struct rkey){sqlite3_column_int64(q, 1), sqlite3_column_int64(q, 2),
                                             seal, sqlite3_column_int64(q, 3)};
        }
        sqlite3_reset(q);
        r = r == SQLITE_DONE ? SQLITE_OK : r;
    }
    if (r == SQLITE_OK && *nk)
        qsort(s->keys, *nk, sizeof *s->keys, cmp_rkey);
    return r;
}

/* One slice of a compaction of the recent tier (see above), one transaction
 * between commits. A compaction takes the seals present when it starts
 * (compact_from..compact_upto; later seals wait for the next one) and moves
 * them series by series in id order: a slice takes the series after
 * compact_cursor (at most 256) until it has moved a quarter of
 * storage.retention.step_rows chunks (whole series; 1,250 by default, about
 * 25 ms at 20 µs a chunk, bench_storage at load 12), and deletes their rows
 * of those seals from the tier. At 10,000 series an hour's tier is about
 * 300,000 chunks: one transaction of seconds, which every commit waited
 * for, becomes slices of tens of milliseconds between commits. Each slice leaves every sample in exactly
 * one tier (readers read both), so a failure or a crash between or in
 * slices loses and doubles nothing; a compaction cut short is started again
 * over what is left. Returns SQLITE_ROW when slices remain, SQLITE_OK when
 * the compaction is done (the tier holds only later seals), else the SQLite
 * code (nothing of that slice changed). */
static int compact_recent(struct cb_store *s)
{
    sqlite3_stmt *q;
    int r;
    if (!s->compacting) {
        q = s->cst[CST_RECENT_FIRST];
        r = sqlite3_step(q);
        int empty = r == SQLITE_ROW && sqlite3_column_type(q, 0) == SQLITE_NULL;
        s->compact_from = r == SQLITE_ROW ? sqlite3_column_int64(q, 0) : 0;
        sqlite3_reset(q);
        if (r != SQLITE_ROW)
            return r;
        if (empty) {
            s->recent_seals = 0;
            s->recent_min = INT64_MAX;
            return SQLITE_OK;
        }
        s->compact_upto = s->recent_seal;
        s->compact_cursor = 0;
        s->compacting = 1;
    }
    if ((r = step_done(s->st[ST_BEGIN])) != SQLITE_OK)
        return r;
    /* the next (at most 256) series ids: their keys, then whole series
     * until the budget is spent */
    int64_t lo = s->compact_cursor, hi = lo, moved = 0;
    size_t nids = 0, nk = 0;
    q = s->cst[CST_SERIES_AFTER];
    sqlite3_bind_int64(q, 1, lo);
    while ((r = sqlite3_step(q)) == SQLITE_ROW) {
        hi = sqlite3_column_int64(q, 0);
        nids++;
    }
    sqlite3_reset(q);
    if (r != SQLITE_DONE || (r = slice_keys(s, lo, hi, &nk)) != SQLITE_OK)
        goto fail;
    int last = nids < 256;
    size_t a = 0;
    while (a < nk && moved < (s->step_rows + 3) / 4) {
        size_t b = a;
        while (b < nk && s->keys[b].series == s->keys[a].series)
            b++;
        if ((r = compact_series(s, s->keys + a, b - a)) != SQLITE_OK)
            goto fail;
        moved += (int64_t)(b - a);
        a = b;
    }
    if (a < nk) { /* budget spent: the slice ends after the last series moved */
        hi = s->keys[a - 1].series;
        last = 0;
    }
    sqlite3_stmt *del = s->cst[CST_RECENT_SLICE_DEL];
    for (int64_t seal = s->compact_from; seal <= s->compact_upto && r == SQLITE_OK; seal++) {
        sqlite3_bind_int64(del, 1, seal);
        sqlite3_bind_int64(del, 2, lo);
        sqlite3_bind_int64(del, 3, last ? INT64_MAX : hi);
        r = step_done(del);
    }
    if (r != SQLITE_OK || (r = step_done(s->st[ST_COMMIT])) != SQLITE_OK)
        goto fail;
    s->compact_cursor = hi;
    if (!last)
        return SQLITE_ROW;
    s->compacting = 0;
    s->recent_seals = s->recent_seal - s->compact_upto;
    if (s->recent_seals == 0)
        s->recent_min = INT64_MAX;
    return SQLITE_OK;
fail:
    step_done(s->st[ST_ROLLBACK]);
    return r;
}

/* Whether rows of `series` still go to the old layout (see struct cb_store). */
static int is_legacy(const struct cb_store *s, int64_t series)
{
    return !s->chunked || (s->legacy && series > s->mig_cursor && series <= s->mig_end);
}

/* ---- writer: conversion of a schema-6 file ------------------------------------------
 *
 * Schema step 8 renamed the old table to samples_v6. The writer converts it
 * series by series, in id order, between commits: one transaction reads
 * whole series (at least one, until step_rows rows), writes their chunks,
 * deletes their rows and records the cursor in meta, so ingestion waits at
 * most one such step. Until its turn a series keeps getting its new rows in
 * samples_v6 (so a series is in one layout at a time), and readers read
 * samples_v6 too (samples_vtab.c). The last step drops the table. */
static int migrate_step(struct cb_store *s)
{
    int64_t cursor = s->mig_cursor, rows = 0;
    int more = 0, r = step_done(s->st[ST_BEGIN]);
    if (r != SQLITE_OK)
        return r;
    sqlite3_stmt *ids = s->cst[CST_LEGACY_IDS], *get = s->cst[CST_LEGACY_ROWS];
    sqlite3_bind_int64(ids, 1, cursor);
    sqlite3_bind_int64(ids, 2, s->mig_end);
    while (rows < s->step_rows && (r = sqlite3_step(ids)) == SQLITE_ROW) {
        int64_t id = sqlite3_column_int64(ids, 0);
        size_t n = 0;
        more = 1;
        sqlite3_bind_int64(get, 1, id);
        while ((r = sqlite3_step(get)) == SQLITE_ROW) {
            if (grow_pts(s, n + 1) < 0) {
                r = SQLITE_NOMEM;
                break;
            }
            s->pts[n++] = (struct cb_chunk_point){sqlite3_column_int64(get, 0),
                                                  sqlite3_column_double(get, 1)};
        }
        sqlite3_reset(get);
        if (r != SQLITE_DONE)
            break;
        sqlite3_bind_int64(s->cst[CST_LEGACY_DEL], 1, id);
        if ((r = chunks_write(s, id, s->pts, n, 0)) != SQLITE_OK ||
            (r = step_done(s->cst[CST_LEGACY_DEL])) != SQLITE_OK)
            break;
        rows += (int64_t)n + 1;
        cursor = id;
        r = SQLITE_ROW;
    }
    sqlite3_reset(ids);
    if (r != SQLITE_ROW && r != SQLITE_DONE)
        goto fail;
    if (r == SQLITE_DONE && !more) {
        /* every series converted */
        if (sqlite3_exec(s->db, "DROP TABLE samples_v6", NULL, NULL, NULL) != SQLITE_OK) {
            r = sqlite3_errcode(s->db);
            goto fail;
        }
        cursor = s->mig_end;
    }
    if (storage__meta_set(s->db, "chunk_migrate_cursor", cursor) < 0) {
        r = sqlite3_errcode(s->db);
        goto fail;
    }
    if ((r = step_done(s->st[ST_COMMIT])) != SQLITE_OK)
        goto fail;
    s->mig_cursor = cursor;
    if (!more)
        s->legacy = 0;
    return SQLITE_OK;
fail:
    step_done(s->st[ST_ROLLBACK]);
    return r;
}

struct commit_result {
    uint64_t inserted, duplicate, quarantined;
    uint64_t pos;
};

/* Whether sensor e's first/last seen are to be written by this commit (see
 * commit_batch): at close (`final`), when first_seen moved back, or when
 * last_seen entered another (epoch) minute than the one written. */
static int seen_due(const struct sensor_ent *e, int final)
{
    return final || e->first_seen < e->first_db ||
           storage__bucket(e->last_seen, 60000) != storage__bucket(e->last_db, 60000);
}

/* Commits batch b in one transaction. `final` writes every sensor's
 * last_seen (otherwise only those whose last_seen entered a new minute). Returns SQLITE_OK
 * with *res filled, or the SQLite error code after a rollback. */
static int commit_batch(struct cb_store *s, struct batch *b, uint64_t pos, int final,
                        struct commit_result *res)
{
    int r;
    memset(res, 0, sizeof *res);
    s->ntouched = 0;
    if ((r = step_done(s->st[ST_BEGIN])) != SQLITE_OK)
        return r;
    if (grow((void **)&s->items, &s->capitems, b->nrows, sizeof *s->items) < 0) {
        r = SQLITE_NOMEM;
        goto fail;
    }
    /* resolve */
    struct sensor_ent *sensor = NULL;
    size_t last_topic = SIZE_MAX;
    for (size_t i = 0; i < b->nrows; i++) {
        const struct pend_row *pr = &b->rows[i];
        const char *topic = b->arena.data + pr->topic;
        if (pr->topic != last_topic) {
            r = SQLITE_OK;
            sensor = sensor_for(s, topic,
                                pr->device == SIZE_MAX ? NULL : b->arena.data + pr->device, pr->ts,
                                &r);
            if (!sensor)
                goto fail;
            last_topic = pr->topic;
        } else {
            if (pr->ts < sensor->first_seen)
                sensor->first_seen = pr->ts;
            if (pr->ts > sensor->last_seen)
                sensor->last_seen = pr->ts;
        }
        r = SQLITE_OK;
        struct series_ent *se = series_for(s, sensor, b->arena.data + pr->metric, &r);
        if (!se)
            goto fail;
        s->items[i] = (struct item){se->id, pr->ts, pr->value, se};
    }
    if (b->nrows && sort_items(s, b->nrows) < 0) {
        r = SQLITE_NOMEM;
        goto fail;
    }
    /* insert; roll up what was inserted */
    struct acc a1m = {0}, a1h = {0};
    const struct tier t1m = {0, STORAGE_MINUTE_MS, s->st[ST_UPD_1M], s->st[ST_INS_1M]};
    const struct tier t1h = {1, STORAGE_HOUR_MS, s->st[ST_UPD_1H], s->st[ST_INS_1H]};
    size_t nchunk = 0, nhead = 0;
    int64_t seq = -1; /* this commit's seq, when it writes the head */
    if (s->chunked) {
        int64_t now_ms = cb_clock_now(&s->clock);
        seq = now_ms > s->seq ? now_ms : s->seq + 1;
        s->seq = seq; /* (kept if the commit fails: seqs only need to grow) */
    }
    int head_written = 0;
    s->nhs = 0;
    for (size_t i = 0; i < b->nrows; i++) {
        const struct item *it = &s->items[i];
        if (i > 0 && it->series == it[-1].series && it->ts == it[-1].ts) {
            res->duplicate++; /* twice in this batch */
            continue;
        }
        int legacy = is_legacy(s, it->series);
        if (it->ts > it->ent->max_ts) {
            /* new: cannot conflict (rows come in ts order per series) */
            it->ent->max_ts = it->ts;
            if (legacy) {
                s->chunk[nchunk++] = it;
                if (nchunk == INSERT_CHUNK) {
                    if ((r = insert_rows(s, s->leg_one, s->leg_bulk, s->chunk, nchunk, -1)) !=
                        SQLITE_OK)
                        goto fail;
                    nchunk = 0;
                }
            } else if (s->blocked) {
                if ((r = head_queue(s, it)) != SQLITE_OK)
                    goto fail;
                head_written = 1;
            } else {
                s->hrows[nhead++] = it;
                head_written = 1;
                if (nhead == INSERT_CHUNK) {
                    if ((r = insert_rows(s, s->head_one, s->head_bulk, s->hrows, nhead, seq)) !=
                        SQLITE_OK)
                        goto fail;
                    nhead = 0;
                }
            }
        } else if (legacy) {
            /* as old as what is stored: maybe a redelivery */
            sqlite3_stmt *ins = s->leg_one;
            sqlite3_bind_int64(ins, 1, it->series);
            sqlite3_bind_int64(ins, 2, it->ts);
            sqlite3_bind_double(ins, 3, it->value);
            r = sqlite3_step(ins);
            sqlite3_reset(ins);
            if (r != SQLITE_DONE)
                goto fail;
            if (sqlite3_changes(s->db) == 0) {
                res->duplicate++;
                continue;
            }
        } else {
            int added = 0;
            if ((r = late_row(s, it, seq, &added)) != SQLITE_OK)
                goto fail;
            if (!added) {
                res->duplicate++;
                continue;
            }
            head_written = 1; /* (perhaps: a bound for the seal is enough) */
        }
        res->inserted++;
        if (it->ts > s->max_ts)
            s->max_ts = it->ts;
        if (!legacy && it->ts < s->head_min)
            s->head_min = it->ts; /* (a bound: kept if this commit fails) */
        for (int t = 0; t < 2; t++) {
            if (!derived(&s->derive[t], it->series, it->ts)) {
                if (it->ts < s->dirty_min[t])
                    s->dirty_min[t] = it->ts; /* (kept if this commit fails: only a bound) */
            } else if ((r = acc_add(s, t ? &t1h : &t1m, t ? &a1h : &a1m, it)) != SQLITE_OK) {
                goto fail;
            }
        }
    }
    if (nchunk && (r = insert_rows(s, s->leg_one, s->leg_bulk, s->chunk, nchunk, -1)) != SQLITE_OK)
        goto fail;
    if (nhead && (r = insert_rows(s, s->head_one, s->head_bulk, s->hrows, nhead, seq)) != SQLITE_OK)
        goto fail;
    if (s->nhs && (r = head_write_blocks(s, seq)) != SQLITE_OK)
        goto fail;
    if ((r = acc_flush(s, &t1m, &a1m)) != SQLITE_OK || (r = acc_flush(s, &t1h, &a1h)) != SQLITE_OK)
        goto fail;
    /* quarantine */
    int64_t now = cb_clock_now(&s->clock);
    for (size_t i = 0; i < b->nquar; i++) {
        const struct pend_quar *q = &b->quar[i];
        sqlite3_stmt *st = s->st[ST_INS_QUAR];
        sqlite3_bind_text(st, 1, b->arena.data + q->topic, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, b->arena.data + q->metric, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 3, q->ts);
        sqlite3_bind_double(st, 4, q->value);
        sqlite3_bind_text(st, 5, b->arena.data + q->reason, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 6, now);
        if ((r = step_done(st)) != SQLITE_OK)
            goto fail;
        res->quarantined++;
    }
    /* sensors' first/last seen: written when last_seen enters a new
     * (epoch) minute, so a sensor costs one UPDATE a minute, not one per
     * commit, and sensors reporting steadily are written at the same commit:
     * their pages once a minute. Written when they had moved by a minute
     * since the last write, each sensor came due at its own commit and
     * every commit dirtied most of the table's pages (11 % of the WAL's
     * frames at 10,000 sensors). */
    for (size_t i = 0; i < s->ntouched; i++) {
        struct sensor_ent *e = s->touched[i];
        if (seen_due(e, final)) {
            sqlite3_stmt *st = s->st[ST_UPD_SEEN];
            sqlite3_bind_int64(st, 1, e->id);
            sqlite3_bind_int64(st, 2, e->first_seen);
            sqlite3_bind_int64(st, 3, e->last_seen);
            if ((r = step_done(st)) != SQLITE_OK)
                goto fail;
        }
    }
    if (s->derive_on && !s->clean_cleared && res->inserted) {
        if (storage__meta_set(s->db, "derive_clean", 0) < 0) {
            r = sqlite3_errcode(s->db);
            goto fail;
        }
    }
    if (pos > s->committed_pos) {
        sqlite3_bind_int64(s->st[ST_SET_POS], 1, (sqlite3_int64)pos);
        if ((r = step_done(s->st[ST_SET_POS])) != SQLITE_OK)
            goto fail;
    }
    if ((r = step_done(s->st[ST_COMMIT])) != SQLITE_OK)
        goto fail;
    if (res->inserted)
        s->clean_cleared = 1;
    if (head_written && s->head_first == INT64_MAX)
        s->head_first = seq;
    for (size_t i = 0; i < s->ntouched; i++) {
        struct sensor_ent *e = s->touched[i];
        e->touched = 0;
        if (seen_due(e, final)) {
            e->first_db = e->first_seen;
            e->last_db = e->last_seen;
        }
    }
    s->ntouched = 0;
    if (pos > s->committed_pos)
        s->committed_pos = pos;
    res->pos = s->committed_pos;
    return SQLITE_OK;

fail:
    step_done(s->st[ST_ROLLBACK]);
    /* Ids created in the rolled-back transaction are gone: forget every
     * cached id, they are looked up again. */
    map_clear(&s->sensors);
    s->nseries = 0;
    s->ntouched = 0;
    return r;
}

/* Writes every sensor's first/last seen that moved since it was last written
 * (at close: commits write them only when they moved by a minute). */
static void flush_seen(struct cb_store *s)
{
    if (step_done(s->st[ST_BEGIN]) != SQLITE_OK)
        return;
    for (size_t i = 0; i < s->sensors.cap; i++) {
        struct sensor_ent *e = s->sensors.slots[i].val;
        if (!s->sensors.slots[i].key ||
            (e->first_seen == e->first_db && e->last_seen == e->last_db))
            continue;
        sqlite3_stmt *st = s->st[ST_UPD_SEEN];
        sqlite3_bind_int64(st, 1, e->id);
        sqlite3_bind_int64(st, 2, e->first_seen);
        sqlite3_bind_int64(st, 3, e->last_seen);
        if (step_done(st) != SQLITE_OK) {
            step_done(s->st[ST_ROLLBACK]);
            return;
        }
    }
    if (step_done(s->st[ST_COMMIT]) != SQLITE_OK)
        step_done(s->st[ST_ROLLBACK]);
}

/* ---- writer: retention ------------------------------------------------------------ */

/* Deletes up to `limit` expired raw samples of one series, oldest first:
 * whole chunks that end before `cut`, and of the chunk holding the cut (or
 * the one where the limit runs out) its samples before it, the rest written
 * again. So no sample older than the cut is left, as with one row per
 * sample, and a step deletes at most its budget. Sets *n to the samples
 * deleted. The head is sealed at the start of a pass (retention_step). */
static int retain_chunks(struct cb_store *s, int64_t sid, int64_t cut, int64_t limit,
                         int64_t *n)
{
    *n = 0;
    while (*n < limit) {
        int found, r;
        int64_t start = 0, end = 0;
        size_t cnt = 0, k = 0;
        if ((r = chunk_find(s, CST_CHUNK_AFTER, sid, INT64_MIN, &found, &start, &end, &cnt)) !=
            SQLITE_OK)
            return r;
        if (!found || start >= cut)
            return SQLITE_OK;
        while (k < cnt && s->pts[k].ts_ms < cut && *n + (int64_t)k < limit)
            k++;
        if ((r = chunk_delete(s, sid, start, 0)) != SQLITE_OK ||
            (r = chunks_write(s, sid, s->pts + k, cnt - k, 0)) != SQLITE_OK)
            return r;
        *n += (int64_t)k;
        if (k < cnt && s->pts[k].ts_ms >= cut)
            return SQLITE_OK;
    }
    return SQLITE_OK;
}

/* Deletes up to `budget` expired rows of a per-series table (rollups: column
 * bucket; samples of an older schema: column ts), or with table NULL the
 * expired raw samples in chunks (retain_chunks), continuing from the tier's
 * cursor. */
static int retain_series_table(struct cb_store *s, const char *table, const char *col,
                               int64_t cut, struct tier_cursor *c, int64_t *budget,
                               uint64_t *deleted)
{
    char sql[320];
    sqlite3_stmt *ids = NULL, *del = NULL;
    int r = sqlite3_prepare_v2(s->db, "SELECT id FROM series WHERE id > ?1 ORDER BY id LIMIT 256",
                               -1, &ids, NULL);
    if (r != SQLITE_OK)
        goto out;
    if (table)
        snprintf(sql, sizeof sql,
                 "DELETE FROM %s WHERE series_id = ?1 AND %s IN (SELECT %s FROM %s WHERE "
                 "series_id = ?1 AND %s < ?2 ORDER BY %s LIMIT ?3)",
                 table, col, col, table, col, col);
    if (table && (r = sqlite3_prepare_v2(s->db, sql, -1, &del, NULL)) != SQLITE_OK)
        goto out;
    int64_t visits = s->step_rows; /* each visit is a seek: bounded too */
    while (*budget > 0 && visits > 0) {
        sqlite3_bind_int64(ids, 1, c->series);
        int any = 0;
        while (*budget > 0 && visits > 0 && (r = sqlite3_step(ids)) == SQLITE_ROW) {
            int64_t sid = sqlite3_column_int64(ids, 0);
            any = 1;
            visits--;
            int64_t n = 0;
            if (!table) {
                if ((r = retain_chunks(s, sid, cut, *budget, &n)) != SQLITE_OK)
                    goto out;
            } else {
                sqlite3_bind_int64(del, 1, sid);
                sqlite3_bind_int64(del, 2, cut);
                sqlite3_bind_int64(del, 3, *budget);
                r = sqlite3_step(del);
                sqlite3_reset(del);
                if (r != SQLITE_DONE)
                    goto out;
                n = sqlite3_changes(s->db);
            }
            *deleted += (uint64_t)n;
            *budget -= n;
            if (*budget > 0)
                c->series = sid; /* this series is clean */
        }
        sqlite3_reset(ids);
        if (r != SQLITE_ROW && r != SQLITE_DONE)
            goto out;
        if (!any) {
            c->done = 1;
            break;
        }
    }
    r = SQLITE_OK;
out:
    sqlite3_finalize(ids);
    sqlite3_finalize(del);
    return r;
}

/* Deletes up to budget rows of a rowid table matching `where` (?1 = cut). */
static int retain_rowid_table(struct cb_store *s, const char *table, const char *where,
                              int64_t cut, struct tier_cursor *c, int64_t *budget,
                              uint64_t *deleted)
{
    char sql[400];
    sqlite3_stmt *del = NULL;
    snprintf(sql, sizeof sql,
             "DELETE FROM %s WHERE rowid IN (SELECT rowid FROM %s WHERE %s LIMIT ?2)", table,
             table, where);
    int r = sqlite3_prepare_v2(s->db, sql, -1, &del, NULL);
    if (r != SQLITE_OK)
        return r;
    sqlite3_bind_int64(del, 1, cut);
    sqlite3_bind_int64(del, 2, *budget);
    r = sqlite3_step(del);
    sqlite3_finalize(del);
    if (r != SQLITE_DONE)
        return r;
    int64_t n = sqlite3_changes(s->db);
    *deleted += (uint64_t)n;
    *budget -= n;
    if (*budget > 0)
        c->done = 1;
    return SQLITE_OK;
}

/* One retention step: at most step_rows rows, one transaction. */
static int retention_step(struct cb_store *s, uint64_t *deleted, int *more)
{
    *deleted = 0;
    if (!s->pass_active) {
        /* Raw samples are cut in `chunks` only: the head and the recent tier
         * go there first when they may hold samples older than the cut (a
         * pass starts every storage.retention.interval, 10 s by default:
         * sealing and compacting at each would undo both). */
        int64_t cut = INT64_MIN;
        if (s->retention_ms[RT_RAW] > 0) {
            cut = cb_clock_now(&s->clock) - s->retention_ms[RT_RAW];
            if (cut > s->derive[0].done)
                cut = s->derive[0].done;
        }
        if (s->chunked && s->head_first != INT64_MAX && s->head_min < cut) {
            int r = seal_head(s);
            if (r != SQLITE_OK)
                return r;
        }
        if (s->tiered && s->recent_seals > 0 && s->recent_min < cut) {
            /* a slice at a time, like the writer's own compaction: the pass
             * starts once the compaction is done (*more meanwhile) */
            if (!s->compacting)
                s->compact_auto = 1;
            int r = compact_recent(s);
            if (r == SQLITE_ROW) {
                *more = 1;
                return SQLITE_OK;
            }
            if (r != SQLITE_OK)
                return r;
            pthread_mutex_lock(&s->mu);
            s->stats.compactions++;
            pthread_mutex_unlock(&s->mu);
        }
        memset(s->cursor, 0, sizeof s->cursor);
        s->pass_active = 1;
    }
    int64_t now = cb_clock_now(&s->clock);
    int64_t budget = s->step_rows;
    int r = step_done(s->st[ST_BEGIN]);
    if (r != SQLITE_OK)
        return r;
    for (int t = 0; t < RT__COUNT && budget > 0; t++) {
        struct tier_cursor *c = &s->cursor[t];
        if (c->done)
            continue;
        if (s->retention_ms[t] <= 0) {
            c->done = 1;
            continue;
        }
        int64_t cut = now - s->retention_ms[t];
        /* a source is kept until its tier is derived from it */
        if (t == RT_RAW && cut > s->derive[0].done)
            cut = s->derive[0].done;
        if (t == RT_1M && cut > s->derive[1].done)
            cut = s->derive[1].done;
        /* A visit of a per-series tier seeks every series (0.15 s of CPU for
         * the three tiers at 40k series): it waits until the cut has moved
         * by a thousandth of the retention, so rows live at most 0.1 %
         * longer than asked (10 minutes of the default 7 days raw). A pass
         * asked for (cb_store_retention_step) visits all. */
        if (t <= RT_1H && s->pass_auto && s->visited_cut[t] &&
            cut - s->visited_cut[t] < s->retention_ms[t] / 1000) {
            c->done = 1;
            continue;
        }
        switch (t) {
        case RT_RAW:
        case RT_1M:
        case RT_1H: {
            static const char *const table[] = {"samples", "rollup_1m", "rollup_1h"};
            r = retain_series_table(s, t == RT_RAW && s->chunked ? NULL : table[t],
                                    t == RT_RAW ? "ts" : "bucket", cut, c, &budget, deleted);
            if (r == SQLITE_OK && c->done)
                s->visited_cut[t] = cut; /* (kept even if the commit below fails: a retry
                                          * 0.1 % later is fine) */
            break;
        }
        case RT_QUARANTINE:
            r = retain_rowid_table(s, "quarantine", "received < ?1", cut, c, &budget, deleted);
            break;
        case RT_TRANSITIONS:
            r = retain_rowid_table(s, "alert_transitions", "at < ?1", cut, c, &budget, deleted);
            break;
        case RT_INSTANCES:
            r = retain_rowid_table(s, "alert_instances", "state = 'resolved' AND updated < ?1",
                                   cut, c, &budget, deleted);
            break;
        case RT_SILENCES:
            r = retain_rowid_table(s, "silences", "ends < ?1", cut, c, &budget, deleted);
            break;
        case RT_OUTBOX:
            r = retain_rowid_table(s, "outbox", "delivered_at IS NOT NULL AND delivered_at < ?1",
                                   cut, c, &budget, deleted);
            break;
        case RT_AUDIT:
            r = retain_rowid_table(s, "audit_log", "at < ?1", cut, c, &budget, deleted);
            break;
        }
        if (r != SQLITE_OK)
            break;
        if (budget > 0 && !c->done)
            break; /* visit bound reached: go on next step */
    }
    if (r == SQLITE_OK)
        r = step_done(s->st[ST_COMMIT]);
    if (r != SQLITE_OK) {
        step_done(s->st[ST_ROLLBACK]);
        *deleted = 0;
    }
    int all = 1;
    for (int t = 0; t < RT__COUNT; t++)
        all &= s->cursor[t].done;
    if (all)
        s->pass_active = 0;
    *more = s->pass_active;
    return r;
}

/* ---- writer: rollup derivation (see struct derive) ---------------------------------- */

static const int64_t derive_width[2] = {STORAGE_MINUTE_MS, STORAGE_HOUR_MS};
static const char *const derive_keys[2][3] = {
    {"derive_1m_done", "derive_1m_to", "derive_1m_cursor"},
    {"derive_1h_done", "derive_1h_to", "derive_1h_cursor"},
};
/* The source of tier t for one series over [?2, ?3), in time order, as
 * partial aggregates: bucket or ts, count, sum, min, max, first, first_ts,
 * last, last_ts. */
static const char *const derive_src_sql[2] = {
    "SELECT ts, 1, value, value, value, value, ts, value, ts FROM samples "
    "WHERE series_id = ?1 AND ts >= ?2 AND ts < ?3 ORDER BY ts",
    "SELECT bucket, count, sum, min, max, first, first_ts, last, last_ts FROM rollup_1m "
    "WHERE series_id = ?1 AND bucket >= ?2 AND bucket < ?3 ORDER BY bucket",
};
static const char *const derive_put_sql[2] = {
    "INSERT OR REPLACE INTO rollup_1m(series_id, bucket, count, sum, min, max, first, "
    "first_ts, last, last_ts) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    "INSERT OR REPLACE INTO rollup_1h(series_id, bucket, count, sum, min, max, first, "
    "first_ts, last, last_ts) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
};

/* Where tier t's next pass should end, given how far the store may take it:
 * closed buckets only while running; at close (`all`), everything committed
 * in this run, so the tables on disk are whole after a clean stop. */
static int64_t derive_target(const struct cb_store *s, int t, int all)
{
    int64_t w = derive_width[t], to;
    if (t == 0) {
        to = storage__bucket(cb_clock_now(&s->clock) - DERIVE_GRACE_MS - s->commit_interval_ms, w);
        /* while running, passes end on a whole hour (STORAGE_DERIVE_BATCH_MS,
         * see derive_has_work); the first pass of a file at once */
        if (!all && s->derive[0].done != STORAGE_DERIVE_NONE)
            to = storage__bucket(to, STORAGE_DERIVE_BATCH_MS);
        if (all && s->max_ts != INT64_MIN && storage__bucket(s->max_ts, w) + w > to)
            to = storage__bucket(s->max_ts, w) + w;
    } else {
        /* 1h comes from 1m: only as far as 1m is whole, unless nothing newer
         * than 1m's `done` was committed (at close) */
        to = storage__bucket(s->derive[0].done, w);
        if (all && s->derive[0].done > s->max_ts && s->max_ts != INT64_MIN &&
            storage__bucket(s->max_ts, w) + w > to)
            to = storage__bucket(s->max_ts, w) + w;
    }
    return to;
}

/* Derives one series' buckets of [from, to) in tier t from its source.
 * Adds the source rows read to *rows. */
static int derive_series(sqlite3_stmt *src, sqlite3_stmt *put, int t, int64_t series,
                         int64_t from, int64_t to, int64_t *rows)
{
    struct acc a = {0};
    int r;
    sqlite3_bind_int64(src, 1, series);
    sqlite3_bind_int64(src, 2, from);
    sqlite3_bind_int64(src, 3, to);
    while ((r = sqlite3_step(src)) == SQLITE_ROW) {
        int64_t bucket = storage__bucket(sqlite3_column_int64(src, 0), derive_width[t]);
        if (a.count && a.bucket != bucket) {
            if ((r = acc_step(put, &a)) != SQLITE_DONE)
                break;
            a.count = 0;
        }
        int64_t n = sqlite3_column_int64(src, 1);
        double sum = sqlite3_column_double(src, 2), mn = sqlite3_column_double(src, 3),
               mx = sqlite3_column_double(src, 4);
        if (!a.count) {
            a = (struct acc){NULL, series, bucket, 0, 0, mn, mx,
                             sqlite3_column_double(src, 5), 0, sqlite3_column_int64(src, 6), 0};
        }
        a.count += n;
        a.sum += sum;
        if (mn < a.min)
            a.min = mn;
        if (mx > a.max)
            a.max = mx;
        a.last = sqlite3_column_double(src, 7); /* rows come in time order */
        a.last_ts = sqlite3_column_int64(src, 8);
        (*rows)++;
    }
    if (r == SQLITE_DONE && a.count)
        r = acc_step(put, &a);
    sqlite3_reset(src);
    return r == SQLITE_DONE ? SQLITE_OK : r;
}

/* One step of tier t's pass (starting one when `start` > done and none
 * runs): series after the cursor until DERIVE_STEP_FACTOR * step_rows source
 * rows are read, and the new state, in one transaction. Sets *more when the
 * pass goes on. */
static int derive_step(struct cb_store *s, int t, int64_t start, int *more)
{
    struct derive d = s->derive[t];
    *more = 0;
    if (d.to <= d.done) {
        if (start <= d.done)
            return SQLITE_OK;
        d.to = start;
        d.cursor = 0;
        if (s->clean_open) {
            int64_t first = storage__bucket(s->dirty_min[t], derive_width[t]);
            if (first > d.done)
                d.done = first < d.to ? first : d.to; /* nothing to read below */
        }
    }
    sqlite3_stmt *ids = NULL, *src = NULL, *put = NULL;
    int r = step_done(s->st[ST_BEGIN]);
    if (r != SQLITE_OK)
        return r;
    if ((r = sqlite3_prepare_v2(s->db, "SELECT id FROM series WHERE id > ?1 ORDER BY id LIMIT 256",
                                -1, &ids, NULL)) != SQLITE_OK ||
        (r = sqlite3_prepare_v2(s->db, derive_src_sql[t], -1, &src, NULL)) != SQLITE_OK ||
        (r = sqlite3_prepare_v2(s->db, derive_put_sql[t], -1, &put, NULL)) != SQLITE_OK)
        goto out;
    int64_t rows = 0, budget = s->step_rows * DERIVE_STEP_FACTOR;
    int finished = d.done >= d.to;
    while (rows < budget && !finished) {
        sqlite3_bind_int64(ids, 1, d.cursor);
        finished = 1;
        while (rows < budget && (r = sqlite3_step(ids)) == SQLITE_ROW) {
            int64_t id = sqlite3_column_int64(ids, 0);
            finished = 0;
            rows++; /* a seek costs like a row */
            if ((r = derive_series(src, put, t, id, d.done, d.to, &rows)) != SQLITE_OK)
                goto out;
            d.cursor = id;
        }
        if (r != SQLITE_ROW && r != SQLITE_DONE && r != SQLITE_OK)
            goto out;
        sqlite3_reset(ids);
        r = SQLITE_OK;
    }
    if (finished) {
        d.done = d.to;
        d.cursor = 0;
    }
    int64_t vals[3] = {d.done, d.to, d.cursor};
    for (int k = 0; k < 3 && r == SQLITE_OK; k++)
        if (storage__meta_set(s->db, derive_keys[t][k], vals[k]) < 0)
            r = sqlite3_errcode(s->db);
    if (r == SQLITE_OK)
        r = step_done(s->st[ST_COMMIT]);
out:
    sqlite3_finalize(ids);
    sqlite3_finalize(src);
    sqlite3_finalize(put);
    if (r != SQLITE_OK) {
        step_done(s->st[ST_ROLLBACK]);
        return r;
    }
    s->derive[t] = d;
    if (d.to <= d.done && s->dirty_min[t] < d.done)
        s->dirty_min[t] = d.done; /* every row below is derived now */
    *more = d.to > d.done;
    return SQLITE_OK;
}

/* Whether tier t has work towards `target`: a pass runs, or the target is
 * past done. While running, the 1-minute tier's target moves by whole
 * hours (STORAGE_DERIVE_BATCH_MS, derive_target): rollup_1m is keyed
 * (series_id, bucket), so a pass writes each series' new rows on its newest
 * leaf page (and splits it), a page or more per series and pass, each
 * written to the WAL and again by the checkpoint, however many rows. Sixty
 * rows a pass instead of ten wrote 4.4 times fewer pages (the test "an hour
 * of rollup passes writes at most four pages a series": 1,280 WAL frames
 * for 100 series at ten minutes, 534 at thirty, 293 at sixty), and the
 * 1-hour pass follows each at once (docs/storage.md, "Passes of an
 * hour"). */
static int derive_has_work(const struct cb_store *s, int t, int64_t target)
{
    const struct derive *d = &s->derive[t];
    if (d->to > d->done)
        return 1;
    return target > d->done;
}

/* Whether a derivation step is due: a pass runs, or a tier's target moved
 * past its done (see derive_has_work). */
static int derive_due(const struct cb_store *s)
{
    if (!s->derive_on)
        return 0;
    /* A pass is resumed at once; a new one waits for this run's first
     * commit (the last clean close derived everything before it). */
    if (s->max_ts == INT64_MIN)
        return s->derive[0].to > s->derive[0].done || s->derive[1].to > s->derive[1].done;
    for (int t = 0; t < 2; t++)
        if (derive_has_work(s, t, derive_target(s, t, 0)))
            return 1;
    return 0;
}

/* One step for the first tier that has work (1m before 1h: 1h reads 1m). */
static int derive_some(struct cb_store *s, int all)
{
    for (int t = 0; t < 2; t++) {
        int more = 0;
        int64_t target = derive_target(s, t, all);
        if (derive_has_work(s, t, target))
            return derive_step(s, t, target, &more);
    }
    return SQLITE_DONE; /* nothing to do */
}

/* At close: derive everything this run committed (bounded: a failing
 * database gets three tries). */
static void derive_all(struct cb_store *s)
{
    int failures = 0;
    if (s->derive_on && !s->clean_open) {
        /* samples of an earlier run that did not close may lie beyond
         * anything this run wrote: derive up to the newest of all (a seek
         * per series) */
        sqlite3_stmt *q = NULL;
        if (sqlite3_prepare_v2(s->db, "SELECT max((SELECT max(ts) FROM samples WHERE "
                                      "series_id = series.id)) FROM series",
                               -1, &q, NULL) == SQLITE_OK &&
            sqlite3_step(q) == SQLITE_ROW && sqlite3_column_type(q, 0) != SQLITE_NULL &&
            sqlite3_column_int64(q, 0) > s->max_ts)
            s->max_ts = sqlite3_column_int64(q, 0);
        sqlite3_finalize(q);
    }
    while (s->derive_on && failures < 3) {
        int r = derive_some(s, 1);
        if (r == SQLITE_DONE) {
            /* nothing waits for derivation: the next run may skip passes
             * over data it did not write */
            if (storage__meta_set(s->db, "derive_clean", 1) == 0)
                return;
            r = SQLITE_ERROR;
        }
        if (r != SQLITE_OK)
            failures++;
    }
}

static int derive_load(struct cb_store *s)
{
    for (int t = 0; t < 2; t++) {
        int64_t *v[3] = {&s->derive[t].done, &s->derive[t].to, &s->derive[t].cursor};
        for (int k = 0; k < 3; k++)
            if (storage__meta_get(s->db, derive_keys[t][k], v[k]) < 0)
                return -1;
    }
    return 0;
}

/* ---- writer: the thread ------------------------------------------------------------ */

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Records the time of a step the writer ran between commits (a seal, a
 * compaction slice, a derivation, retention or conversion step) since
 * t_start (mono_us): a commit due meanwhile waited for it. Under s->mu. */
static void step_timed(struct cb_store *s, int64_t t_start)
{
    double ms = (double)(mono_us() - t_start) / 1000.0;
    if (ms > s->stats.step_max_ms)
        s->stats.step_max_ms = ms;
    if (s->step_observer)
        s->step_observer(ms / 1000.0);
}

static void record_error(struct cb_store *s, int r)
{
    int prim = r & 0xff;
    s->stats.commit_errors++;
    if (prim == SQLITE_BUSY || prim == SQLITE_LOCKED)
        s->stats.busy_errors++;
    else if (prim == SQLITE_FULL)
        s->stats.full_errors++;
    else
        s->stats.io_errors++;
    int fatal = prim == SQLITE_READONLY || prim == SQLITE_CORRUPT || prim == SQLITE_NOTADB ||
                prim == SQLITE_CANTOPEN;
    if (s->stats.health != CB_STORE_FAILED || fatal)
        s->stats.health = fatal ? CB_STORE_FAILED : CB_STORE_DEGRADED;
    const char *what = prim == SQLITE_FULL   ? "disk full"
                       : prim == SQLITE_BUSY ? "database busy"
                       : fatal               ? "database unwritable"
                                             : "write failed";
    snprintf(s->stats.last_error, sizeof s->stats.last_error, "%s: %s (%s), retrying", s->path,
             what, sqlite3_errstr(r));
}

/* Runs job j (fn, or SQLITE_MISUSE when the schema has no such job) on the
 * writer thread, called and returning with s->mu held (released meanwhile):
 * counts a success, holds the job back a second after a failure, and wakes
 * the caller that asked for it. */
static void job_run(struct cb_store *s, struct job *j, int (*fn)(struct cb_store *), int64_t now)
{
    int req = j->req;
    pthread_mutex_unlock(&s->mu);
    int64_t t_step = mono_us();
    int r = fn ? fn(s) : SQLITE_MISUSE;
    pthread_mutex_lock(&s->mu);
    step_timed(s, t_step);
    *j->count += r == SQLITE_OK;
    j->after = r == SQLITE_OK || r == SQLITE_ROW ? 0 : now + 1000; /* ROW: more slices */
    if (req) {
        j->req = 0;
        j->rc = r;
        j->gen++;
        pthread_cond_broadcast(&s->done);
    }
}

static void *writer_main(void *arg)
{
    pthread_setname_np(pthread_self(), "cb-store"); /* for top -H and perf */
    struct cb_store *s = arg;
    int64_t next_commit = mono_ms() + s->commit_interval_ms;
    int64_t retry_at = 0, backoff = 0, derive_after = 0;
    int close_attempts = 0;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        if (s->exec_pending) {
            s->exec_rc = sqlite3_exec(s->db, s->exec_sql, NULL, NULL, NULL);
            s->exec_pending = 0;
            pthread_cond_broadcast(&s->done);
        }
        int64_t now = mono_ms();
        int flush = s->flush_req > s->flush_done;
        int have = !batch_empty(&s->work) || !batch_empty(&s->pending);
        int due = s->stop || flush ||
                  (have && now >= next_commit && (backoff == 0 || now >= retry_at));
        if (due && have) {
            if (batch_empty(&s->work)) {
                struct batch t = s->work;
                s->work = s->pending;
                s->pending = t;
                s->work_rows = s->work.nrows;
            }
            uint64_t req = s->flush_req;
            uint64_t pos = s->work.max_pos;
            if (s->drop_cap && pos >= s->drop_cap)
                pos = s->drop_cap - 1;
            struct cb_journal *journal = s->journal;
            pthread_mutex_unlock(&s->mu);

            struct commit_result res;
            struct timespec a, b2;
            clock_gettime(CLOCK_MONOTONIC, &a);
            int r = commit_batch(s, &s->work, pos, s->stop, &res);
            clock_gettime(CLOCK_MONOTONIC, &b2);
            double secs = (double)(b2.tv_sec - a.tv_sec) + (double)(b2.tv_nsec - a.tv_nsec) / 1e9;
            if (r == SQLITE_OK) {
                if (s->observer)
                    s->observer(secs);
                if (journal)
                    cb_journal_release(journal, res.pos);
            }

            /* The page cache's size, read on the thread that owns the
             * connection: it grows to storage.cache_size and stays. */
            int cache_now = 0, cache_high = 0;
            (void)sqlite3_db_status(s->db, SQLITE_DBSTATUS_CACHE_USED, &cache_now, &cache_high, 0);
            pthread_mutex_lock(&s->mu);
            s->stats.cache_bytes = (uint64_t)cache_now;
            if (r == SQLITE_OK) {
                batch_clear(&s->work);
                s->work_rows = 0;
                s->stats.rows_written += res.inserted;
                s->stats.rows_duplicate += res.duplicate;
                s->stats.quarantined += res.quarantined;
                s->stats.commits++;
                s->stats.last_commit_ms = secs * 1000.0;
                s->stats.committed_journal_pos = res.pos;
                s->stats.sensors = s->sensors.n;
                s->stats.series = s->nseries;
                s->stats.health = CB_STORE_OK;
                s->stats.last_error[0] = '\0';
                backoff = 0;
            } else {
                record_error(s, r);
                backoff = backoff ? backoff * 2 : 100;
                if (backoff > 5000)
                    backoff = 5000;
                retry_at = mono_ms() + backoff;
                if (s->stop)
                    close_attempts++;
            }
            int more = r == SQLITE_OK && !batch_empty(&s->pending);
            if (flush && !more) {
                s->flush_done = req;
                s->flush_rc = r == SQLITE_OK ? 0 : -1;
                pthread_cond_broadcast(&s->done);
            }
            next_commit = now + s->commit_interval_ms;
            if (s->stop && (close_attempts >= 3 || (r == SQLITE_OK && !more)))
                break;
            continue;
        }
        if (s->stop)
            break;
        if (due && flush) { /* nothing to commit */
            s->flush_done = s->flush_req;
            s->flush_rc = 0;
            pthread_cond_broadcast(&s->done);
        }
        /* the head: sealed once its oldest commit is STORAGE_SEAL_SPAN_MS old
         * (checked at every wake-up, at least every commit interval) */
        if (s->seal.req || (s->chunked && backoff == 0 && now >= s->seal.after &&
                            s->head_first != INT64_MAX &&
                            cb_clock_now(&s->clock) - s->head_first >= STORAGE_SEAL_SPAN_MS)) {
            job_run(s, &s->seal, s->chunked ? seal_head : NULL, now);
            continue;
        }
        /* the recent tier: compacted once it holds STORAGE_COMPACT_SEALS
         * seals, a slice between commits until done */
        if (s->compact.req ||
            (s->tiered && backoff == 0 && now >= s->compact.after &&
             ((s->compacting && s->compact_auto) || s->recent_seals >= STORAGE_COMPACT_SEALS))) {
            if (!s->compacting)
                s->compact_auto = !s->compact.req;
            job_run(s, &s->compact, s->tiered ? compact_recent : NULL, now);
            continue;
        }
        /* conversion of a schema-6 file: a step between commits */
        if (s->legacy && backoff == 0 && now >= s->mig_after) {
            pthread_mutex_unlock(&s->mu);
            int64_t t_step = mono_us();
            int r = migrate_step(s);
            pthread_mutex_lock(&s->mu);
            step_timed(s, t_step);
            s->mig_after = r == SQLITE_OK ? 0 : now + 1000;
            s->stats.converting = s->legacy;
            continue;
        }
        /* rollup derivation: steps while a pass runs or a bucket has closed */
        if (backoff == 0 && now >= derive_after && derive_due(s)) {
            pthread_mutex_unlock(&s->mu);
            int64_t t_step = mono_us();
            int r = derive_some(s, 0);
            pthread_mutex_lock(&s->mu);
            step_timed(s, t_step);
            if (r == SQLITE_OK) {
                s->stats.derive_steps++;
                s->stats.derived_1m = s->derive[0].done;
                s->stats.derived_1h = s->derive[1].done;
            } else if (r != SQLITE_DONE) {
                s->stats.derive_errors++;
                derive_after = now + 1000;
            }
            continue;
        }
        /* retention: a requested step, or steps of the running pass */
        if (s->retention_req || (!s->pass_active && now >= s->next_pass_ms) ||
            (s->pass_active && s->pass_auto && backoff == 0)) {
            int req = s->retention_req;
            if (!s->pass_active) {
                s->next_pass_ms = now + s->retention_interval_ms;
                s->pass_auto = !req;
            }
            pthread_mutex_unlock(&s->mu);
            uint64_t deleted = 0;
            int more = 0;
            int64_t t_step = mono_us();
            int r = retention_step(s, &deleted, &more);
            pthread_mutex_lock(&s->mu);
            step_timed(s, t_step);
            s->stats.retention_steps++;
            s->stats.retention_deleted += deleted;
            if (req) {
                s->retention_req = 0;
                s->retention_rc = r == SQLITE_OK ? 0 : -1;
                s->retention_deleted = deleted;
                s->retention_more = more;
                s->retention_gen++;
                pthread_cond_broadcast(&s->done);
            }
            if (r != SQLITE_OK)
                s->pass_active = 0; /* try again next interval */
            continue;
        }
        /* Nothing to commit and the commit time passed: without this the
         * wait below is never positive and the thread spins holding the
         * mutex, starving the loop thread (and cb_store_close) until the
         * next retention pass unlocks it. */
        if (!have && next_commit <= now)
            next_commit = now + s->commit_interval_ms;
        int64_t until = next_commit;
        if (backoff && retry_at > until)
            until = retry_at;
        if (!s->pass_active && s->next_pass_ms < until)
            until = s->next_pass_ms;
        int64_t wait = until - mono_ms();
        if (wait > 0) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += wait / 1000;
            ts.tv_nsec += (wait % 1000) * 1000000;
            if (ts.tv_nsec >= 1000000000) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000;
            }
            pthread_cond_timedwait(&s->wake, &s->mu, &ts);
        }
    }
    s->flush_done = s->flush_req;
    pthread_cond_broadcast(&s->done);
    pthread_mutex_unlock(&s->mu);
    flush_seen(s);
    derive_all(s);
    return NULL;
}

/* ---- public ---------------------------------------------------------------------- */

/* Prepares sql + (n - 1) times tail (a multi-row INSERT of n rows). */
static int prepare_rows(sqlite3 *db, const char *sql, const char *tail, int n,
                        sqlite3_stmt **out)
{
    char buf[160 + INSERT_CHUNK * 16];
    int len = snprintf(buf, sizeof buf, "%s", sql);
    for (int i = 1; i < n; i++)
        len += snprintf(buf + len, sizeof buf - (size_t)len, "%s", tail);
    return sqlite3_prepare_v3(db, buf, -1, SQLITE_PREPARE_PERSISTENT, out, NULL);
}

/* The insert statements: into the head (schema 8) and into the old layout's
 * table while it exists (`samples` of an older schema, `samples_v6` while
 * converting), and the statements of the chunked layout. */
static int prepare_inserts(struct cb_store *s)
{
    int r;
    if (s->chunked) {
        for (int i = 0; i < CST__COUNT; i++) {
            if (!s->legacy && i >= CST_LEGACY_IDS)
                break;
            if (!s->tiered && i >= CST_RECENT_INS && i < CST_LEGACY_IDS)
                continue;
            if (!s->blocked && i >= CST_HB_INS && i <= CST_HB_DEL)
                continue;
            if (!s->oldhead && is_oldhead_stmt(i))
                continue;
            if ((r = sqlite3_prepare_v3(s->db, cst_sql[i], -1, SQLITE_PREPARE_PERSISTENT,
                                        &s->cst[i], NULL)) != SQLITE_OK)
                return r;
        }
        static const char head[] = "INSERT INTO head(seq, series_id, ts, value) VALUES (?,?,?,?)";
        if (!s->blocked &&
            ((r = prepare_rows(s->db, head, ",(?,?,?,?)", 1, &s->head_one)) != SQLITE_OK ||
             (r = prepare_rows(s->db, head, ",(?,?,?,?)", INSERT_CHUNK, &s->head_bulk)) !=
                 SQLITE_OK))
            return r;
    }
    if (s->chunked && !s->legacy)
        return SQLITE_OK;
    const char *table = s->chunked ? "samples_v6" : "samples";
    char one[128], bulk[128];
    snprintf(one, sizeof one, "INSERT OR IGNORE INTO %s(series_id, ts, value) VALUES (?,?,?)",
             table);
    snprintf(bulk, sizeof bulk, "INSERT INTO %s(series_id, ts, value) VALUES (?,?,?)", table);
    if ((r = prepare_rows(s->db, one, "", 1, &s->leg_one)) != SQLITE_OK ||
        (r = prepare_rows(s->db, bulk, ",(?,?,?)", INSERT_CHUNK, &s->leg_bulk)) != SQLITE_OK)
        return r;
    return SQLITE_OK;
}

/* Reads the head's seq range (blocks and the old table's rows, whichever
 * exist) and the conversion state (schema 8). */
static int load_chunk_state(struct cb_store *s)
{
    sqlite3_stmt *q = NULL;
    s->oldhead = !s->blocked || sqlite3_table_column_metadata(s->db, "main", "head", "seq", NULL,
                                                              NULL, NULL, NULL, NULL) == SQLITE_OK;
#define HEAD_SEQS(t) "SELECT (SELECT min(seq) FROM " t ") a, (SELECT max(seq) FROM " t ") b"
    const char *seqs = !s->blocked ? HEAD_SEQS("head")
                       : s->oldhead ? HEAD_SEQS("head_blocks") " UNION ALL " HEAD_SEQS("head")
                                    : HEAD_SEQS("head_blocks");
#undef HEAD_SEQS
    char sql[512];
    snprintf(sql, sizeof sql, "SELECT min(a), max(b), (SELECT count(*) FROM sqlite_master WHERE "
                              "name = 'samples_v6') FROM (%s)", seqs);
    int r = sqlite3_prepare_v2(s->db, sql, -1, &q, NULL);
    if (r == SQLITE_OK && (r = sqlite3_step(q)) == SQLITE_ROW) {
        if (sqlite3_column_type(q, 0) != SQLITE_NULL) {
            s->head_first = sqlite3_column_int64(q, 0);
            s->seq = sqlite3_column_int64(q, 1);
            s->head_min = INT64_MIN; /* unknown */
        }
        s->legacy = sqlite3_column_int(q, 2) > 0;
        r = SQLITE_OK;
    }
    sqlite3_finalize(q);
    if (r == SQLITE_OK && s->legacy &&
        (storage__meta_get(s->db, "chunk_migrate_cursor", &s->mig_cursor) < 0 ||
         storage__meta_get(s->db, "chunk_migrate_end", &s->mig_end) < 0))
        r = SQLITE_CORRUPT;
    s->stats.converting = s->legacy;
    if (r == SQLITE_OK && s->tiered) {
        r = sqlite3_prepare_v2(s->db, "SELECT coalesce(max(seal), 0), count(DISTINCT seal) "
                                      "FROM chunks_recent", -1, &q, NULL);
        if (r == SQLITE_OK && (r = sqlite3_step(q)) == SQLITE_ROW) {
            s->recent_seal = sqlite3_column_int64(q, 0);
            s->recent_seals = sqlite3_column_int64(q, 1);
            if (s->recent_seals > 0)
                s->recent_min = INT64_MIN; /* unknown: compacted at the first pass */
            r = SQLITE_OK;
        }
        sqlite3_finalize(q);
    }
    return r;
}

static void store_free(struct cb_store *s)
{
    for (int i = 0; i < ST__COUNT; i++)
        sqlite3_finalize(s->st[i]);
    sqlite3_finalize(s->head_one);
    sqlite3_finalize(s->head_bulk);
    sqlite3_finalize(s->leg_one);
    sqlite3_finalize(s->leg_bulk);
    for (int i = 0; i < CST__COUNT; i++)
        sqlite3_finalize(s->cst[i]);
    free(s->pts);
    free(s->hs);
    free(s->keys);
    free(s->blob);
    if (s->db)
        sqlite3_close(s->db);
    batch_free(&s->pending);
    batch_free(&s->work);
    map_clear(&s->sensors);
    free(s->touched);
    free(s->items);
    free(s->sorted);
    free(s->counts);
    free(s->path);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->wake);
    pthread_cond_destroy(&s->done);
    free(s);
}

struct cb_store *storage__open(const struct cb_config *cfg, void (*commit_observer)(double),
                               int target_version, char *err, size_t errlen)
{
    struct cb_store *s = calloc(1, sizeof *s);
    if (!s) {
        storage__set_err(err, errlen, "storage: out of memory");
        return NULL;
    }
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->wake, NULL);
    pthread_cond_init(&s->done, NULL);
    s->clock = cb_clock_wall;
    s->observer = commit_observer;
    s->path = strdup(cfg->storage_db);
    s->commit_interval_ms = cfg->storage_commit_interval_ms;
    s->max_pending = (size_t)cfg->storage_max_pending_rows;
    s->retention_ms[RT_RAW] = cfg->storage_retention_raw_ms;
    s->retention_ms[RT_1M] = cfg->storage_retention_1m_ms;
    s->retention_ms[RT_1H] = cfg->storage_retention_1h_ms;
    s->retention_ms[RT_QUARANTINE] = cfg->storage_retention_quarantine_ms;
    s->retention_ms[RT_TRANSITIONS] = cfg->storage_retention_alerts_ms;
    s->retention_ms[RT_INSTANCES] = cfg->storage_retention_alerts_ms;
    s->retention_ms[RT_SILENCES] = cfg->storage_retention_alerts_ms;
    s->retention_ms[RT_OUTBOX] = cfg->storage_retention_alerts_ms;
    s->retention_ms[RT_AUDIT] = cfg->storage_retention_alerts_ms;
    s->retention_interval_ms = cfg->storage_retention_interval_ms;
    s->step_rows = cfg->storage_retention_step_rows;
    s->next_pass_ms = mono_ms() + s->retention_interval_ms;
    if (!s->path) {
        storage__set_err(err, errlen, "storage: out of memory");
        goto fail;
    }
    s->db = storage__open_db(cfg->storage_db, STORAGE_OPEN_WRITER,
                             cfg->storage_synchronous == CB_SYNC_FULL, cfg->storage_cache_size,
                             target_version, err, errlen);
    if (!s->db)
        goto fail;
    /* SQLite counts the automatic checkpoint in pages of the file */
    int64_t page = 4096;
    sqlite3_stmt *ps = NULL;
    if (sqlite3_prepare_v2(s->db, "PRAGMA page_size", -1, &ps, NULL) == SQLITE_OK &&
        sqlite3_step(ps) == SQLITE_ROW && sqlite3_column_int64(ps, 0) > 0)
        page = sqlite3_column_int64(ps, 0);
    sqlite3_finalize(ps);
    char ck[64];
    snprintf(ck, sizeof ck, "PRAGMA wal_autocheckpoint = %lld",
             (long long)(cfg->storage_wal_checkpoint / page));
    if (sqlite3_exec(s->db, ck, NULL, NULL, NULL) != SQLITE_OK) {
        storage__set_err(err, errlen, "%s: %s", s->path, sqlite3_errmsg(s->db));
        goto fail;
    }
    if (target_version == STORAGE_SCHEMA_VERSION) {
        static const char *const keys[] = {"retention_raw_ms", "retention_1m_ms",
                                           "retention_1h_ms", "synchronous_full"};
        int64_t vals[] = {cfg->storage_retention_raw_ms, cfg->storage_retention_1m_ms,
                          cfg->storage_retention_1h_ms,
                          cfg->storage_synchronous == CB_SYNC_FULL};
        for (size_t i = 0; i < 4; i++)
            if (storage__meta_set(s->db, keys[i], vals[i]) < 0) {
                storage__set_err(err, errlen, "%s: cannot write settings: %s", s->path,
                                 sqlite3_errmsg(s->db));
                goto fail;
            }
    }
    for (int i = 0; i < ST__COUNT; i++) {
        if (sqlite3_prepare_v3(s->db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &s->st[i],
                               NULL) != SQLITE_OK) {
            storage__set_err(err, errlen, "%s: cannot prepare statements: %s", s->path,
                             sqlite3_errmsg(s->db));
            goto fail;
        }
    }
    s->chunked = target_version >= STORAGE_CHUNKS_VERSION;
    s->tiered = target_version >= STORAGE_TIERS_VERSION;
    s->blocked = target_version >= STORAGE_BLOCKS_VERSION;
    s->head_min = s->recent_min = INT64_MAX;
    s->seal.count = &s->stats.seals;
    s->compact.count = &s->stats.compactions;
    s->head_first = INT64_MAX;
    if (s->chunked && load_chunk_state(s) != SQLITE_OK) {
        storage__set_err(err, errlen, "%s: cannot read the chunk state: %s", s->path,
                         sqlite3_errmsg(s->db));
        goto fail;
    }
    if (prepare_inserts(s) != SQLITE_OK) {
        storage__set_err(err, errlen, "%s: cannot prepare statements: %s", s->path,
                         sqlite3_errmsg(s->db));
        goto fail;
    }
    /* A head left by the last run is sealed now: reading a series' head
     * costs a seek per commit in it, and the start reads every series (its
     * newest ts, the windows to restore). A failure leaves it for later.
     * The old table a step-9 file leaves (schema 10) goes in the same
     * transaction, rows or not. */
    if (s->chunked && (s->head_first != INT64_MAX || (s->blocked && s->oldhead)))
        (void)seal_head(s);
    sqlite3_stmt *q = NULL;
    if (sqlite3_prepare_v2(s->db, "SELECT journal_pos FROM ingest_state WHERE id = 1", -1, &q,
                           NULL) == SQLITE_OK &&
        sqlite3_step(q) == SQLITE_ROW)
        s->committed_pos = (uint64_t)sqlite3_column_int64(q, 0);
    sqlite3_finalize(q);
    s->stats.committed_journal_pos = s->committed_pos;
    s->max_ts = INT64_MIN;
    if (target_version >= STORAGE_CHUNKS_VERSION) {
        if (derive_load(s) < 0) {
            storage__set_err(err, errlen, "%s: the rollup derivation state is missing", s->path);
            goto fail;
        }
        s->derive_on = 1;
        int64_t clean = 0;
        storage__meta_get(s->db, "derive_clean", &clean);
        s->clean_open = clean == 1;
        s->dirty_min[0] = s->dirty_min[1] = INT64_MAX;
        s->stats.derived_1m = s->derive[0].done;
        s->stats.derived_1h = s->derive[1].done;
    } else {
        /* an older schema (migration tests): merge every row, as it did */
        s->derive[0] = s->derive[1] = (struct derive){INT64_MAX, INT64_MAX, 0};
    }
    if (pthread_create(&s->thread, NULL, writer_main, s) != 0) {
        storage__set_err(err, errlen, "storage: cannot start the writer thread");
        goto fail;
    }
    s->thread_started = 1;
    return s;
fail:
    store_free(s);
    return NULL;
}

struct cb_store *cb_store_open(const struct cb_config *cfg, void (*commit_observer)(double secs),
                               char *err, size_t errlen)
{
    return storage__open(cfg, commit_observer, STORAGE_SCHEMA_VERSION, err, errlen);
}

uint64_t cb_store_committed_journal_pos(struct cb_store *s)
{
    pthread_mutex_lock(&s->mu);
    uint64_t p = s->stats.committed_journal_pos;
    pthread_mutex_unlock(&s->mu);
    return p;
}

/* Counts a refused message: dropped when journaled (the committed position is
 * held below it, so the next start replays it), lost when not (QoS 0). The
 * health text says both, as they are. */
static void drop_locked(struct cb_store *s, size_t n, uint64_t journal_pos)
{
    if (journal_pos) {
        s->stats.rows_dropped += n;
        if (!s->drop_cap || journal_pos < s->drop_cap)
            s->drop_cap = journal_pos;
    } else {
        s->stats.rows_lost += n;
    }
    s->stats.health = CB_STORE_FAILED;
    snprintf(s->stats.last_error, sizeof s->stats.last_error,
             "%s: pending rows full (%zu): %llu rows dropped from memory, kept in the journal "
             "and stored at the next start; %llu rows of QoS 0 messages (never journaled) lost",
             s->path, s->max_pending, (unsigned long long)s->stats.rows_dropped,
             (unsigned long long)s->stats.rows_lost);
}

int cb_store_append(struct cb_store *s, const char *topic, const char *device,
                    const struct cb_sample *samples, size_t n, uint64_t journal_pos)
{
    int rc = 0;
    pthread_mutex_lock(&s->mu);
    struct batch *b = &s->pending;
    size_t save_rows = b->nrows, save_alen = b->arena.len;
    if (b->nrows + s->work_rows + n > s->max_pending)
        goto drop;
    size_t t = cb_strbuf_add_string(&b->arena, topic, strlen(topic));
    size_t d = device ? cb_strbuf_add_string(&b->arena, device, strlen(device)) : SIZE_MAX - 1;
    if (t == SIZE_MAX || d == SIZE_MAX ||
        grow((void **)&b->rows, &b->caprows, b->nrows + n, sizeof *b->rows) < 0)
        goto drop;
    if (d == SIZE_MAX - 1)
        d = SIZE_MAX;
    for (size_t i = 0; i < n; i++) {
        size_t m = cb_strbuf_add_string(&b->arena, samples[i].metric, strlen(samples[i].metric));
        if (m == SIZE_MAX)
            goto drop;
        b->rows[b->nrows++] =
            (struct pend_row){t, d, m, samples[i].ts_ms, samples[i].value};
    }
    if (journal_pos > b->max_pos)
        b->max_pos = journal_pos;
    s->stats.pending_rows = b->nrows + s->work_rows;
    pthread_mutex_unlock(&s->mu);
    return 0;
drop:
    b->nrows = save_rows;
    cb_strbuf_truncate(&b->arena, save_alen);
    drop_locked(s, n, journal_pos);
    rc = -1;
    pthread_mutex_unlock(&s->mu);
    return rc;
}

void cb_store_note_journal_pos(struct cb_store *s, uint64_t journal_pos)
{
    pthread_mutex_lock(&s->mu);
    if (journal_pos > s->pending.max_pos)
        s->pending.max_pos = journal_pos;
    pthread_mutex_unlock(&s->mu);
}

int cb_store_quarantine(struct cb_store *s, const char *topic, const struct cb_sample *sample,
                        const char *reason, uint64_t journal_pos)
{
    pthread_mutex_lock(&s->mu);
    struct batch *b = &s->pending;
    size_t save_alen = b->arena.len;
    if (b->nrows + s->work_rows + b->nquar + 1 > s->max_pending)
        goto drop;
    struct cb_strbuf *a = &b->arena; /* after a failure the next adds fail too */
    size_t t = cb_strbuf_add_string(a, topic, strlen(topic));
    size_t m = cb_strbuf_add_string(a, sample->metric, strlen(sample->metric));
    size_t r = cb_strbuf_add_string(a, reason, strlen(reason));
    if (t == SIZE_MAX || m == SIZE_MAX || r == SIZE_MAX ||
        grow((void **)&b->quar, &b->capquar, b->nquar + 1, sizeof *b->quar) < 0)
        goto drop;
    b->quar[b->nquar++] = (struct pend_quar){t, m, r, sample->ts_ms, sample->value};
    if (journal_pos > b->max_pos)
        b->max_pos = journal_pos;
    pthread_mutex_unlock(&s->mu);
    return 0;
drop:
    cb_strbuf_truncate(&b->arena, save_alen);
    drop_locked(s, 1, journal_pos);
    pthread_mutex_unlock(&s->mu);
    return -1;
}

void cb_store_get_stats(struct cb_store *s, struct cb_store_stats *out)
{
    pthread_mutex_lock(&s->mu);
    *out = s->stats;
    out->pending_rows = s->pending.nrows + s->work_rows;
    pthread_mutex_unlock(&s->mu);
}

void cb_store_attach_journal(struct cb_store *s, struct cb_journal *j)
{
    pthread_mutex_lock(&s->mu);
    s->journal = j;
    uint64_t pos = s->stats.committed_journal_pos;
    pthread_mutex_unlock(&s->mu);
    if (j)
        cb_journal_set_floor(j, pos);
}

int cb_store_flush(struct cb_store *s)
{
    pthread_mutex_lock(&s->mu);
    uint64_t ticket = ++s->flush_req;
    pthread_cond_signal(&s->wake);
    while (s->flush_done < ticket)
        pthread_cond_wait(&s->done, &s->mu);
    int rc = s->flush_rc;
    pthread_mutex_unlock(&s->mu);
    return rc;
}

void cb_store_set_clock(struct cb_store *s, const struct cb_clock *clock)
{
    pthread_mutex_lock(&s->mu);
    s->clock = *clock;
    pthread_mutex_unlock(&s->mu);
}

void cb_store_set_step_observer(struct cb_store *s, void (*fn)(double secs))
{
    pthread_mutex_lock(&s->mu);
    s->step_observer = fn;
    pthread_mutex_unlock(&s->mu);
}

int cb_store_retention_step(struct cb_store *s, uint64_t *deleted, int *more)
{
    pthread_mutex_lock(&s->mu);
    uint64_t gen = s->retention_gen;
    s->retention_req = 1;
    pthread_cond_signal(&s->wake);
    while (s->retention_gen == gen)
        pthread_cond_wait(&s->done, &s->mu);
    int rc = s->retention_rc;
    *deleted = s->retention_deleted;
    *more = s->retention_more;
    pthread_mutex_unlock(&s->mu);
    return rc;
}

/* Asks the writer thread for job j (seal, compaction) and waits until it
 * has run. Returns the job's SQLite code. */
static int writer_job(struct cb_store *s, struct job *j)
{
    pthread_mutex_lock(&s->mu);
    uint64_t before = j->gen;
    j->req = 1;
    pthread_cond_signal(&s->wake);
    while (j->gen == before)
        pthread_cond_wait(&s->done, &s->mu);
    int r = j->rc;
    pthread_mutex_unlock(&s->mu);
    return r;
}

int storage__seal(struct cb_store *s)
{
    return writer_job(s, &s->seal);
}

int storage__compact(struct cb_store *s)
{
    int r;
    while ((r = writer_job(s, &s->compact)) == SQLITE_ROW)
        ;
    return r;
}

int storage__compact_slice(struct cb_store *s)
{
    return writer_job(s, &s->compact);
}

int storage__writer_exec(struct cb_store *s, const char *sql)
{
    pthread_mutex_lock(&s->mu);
    s->exec_sql = sql;
    s->exec_pending = 1;
    pthread_cond_signal(&s->wake);
    while (s->exec_pending)
        pthread_cond_wait(&s->done, &s->mu);
    int rc = s->exec_rc;
    pthread_mutex_unlock(&s->mu);
    return rc;
}

void cb_store_close(struct cb_store *s)
{
    if (!s)
        return;
    if (s->thread_started) {
        pthread_mutex_lock(&s->mu);
        s->stop = 1;
        pthread_cond_signal(&s->wake);
        pthread_mutex_unlock(&s->mu);
        pthread_join(s->thread, NULL);
    }
    store_free(s);
}
