/* The schema, its versions and forward migrations, and the one place where
 * connections are opened with their pragmas.
 *
 * A citybrain database carries PRAGMA application_id = STORAGE_APP_ID and
 * PRAGMA user_version = the number of migration steps applied. On start the
 * writer runs every step above the file's version, each in its own
 * transaction; a file of another application or of a newer citybrain is
 * refused with a clear error, never touched. */
#include "storage/storage_int.h"
#include "storage/sqlite_conn.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

void storage__set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || !errlen)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* Step 1: time series, sensors, quarantine and the ingest state. */
static const char schema_v1[] =
    "CREATE TABLE sensors("
    "  id INTEGER PRIMARY KEY,"
    "  topic TEXT NOT NULL UNIQUE,"
    "  device TEXT,"
    "  labels TEXT,"             /* JSON object, or NULL */
    "  first_seen INTEGER NOT NULL,"
    "  last_seen INTEGER NOT NULL);"
    "CREATE TABLE series("
    "  id INTEGER PRIMARY KEY,"
    "  sensor_id INTEGER NOT NULL REFERENCES sensors(id),"
    "  metric TEXT NOT NULL,"
    "  unit TEXT,"
    "  UNIQUE(sensor_id, metric));"
    "CREATE TABLE samples("
    "  series_id INTEGER NOT NULL,"
    "  ts INTEGER NOT NULL,"
    "  value REAL NOT NULL,"
    "  PRIMARY KEY(series_id, ts)) WITHOUT ROWID;"
    "CREATE TABLE rollup_1m("
    "  series_id INTEGER NOT NULL, bucket INTEGER NOT NULL,"
    "  count INTEGER NOT NULL, sum REAL NOT NULL, min REAL NOT NULL, max REAL NOT NULL,"
    "  first REAL NOT NULL, first_ts INTEGER NOT NULL, last REAL NOT NULL,"
    "  last_ts INTEGER NOT NULL,"
    "  PRIMARY KEY(series_id, bucket)) WITHOUT ROWID;"
    "CREATE TABLE rollup_1h("
    "  series_id INTEGER NOT NULL, bucket INTEGER NOT NULL,"
    "  count INTEGER NOT NULL, sum REAL NOT NULL, min REAL NOT NULL, max REAL NOT NULL,"
    "  first REAL NOT NULL, first_ts INTEGER NOT NULL, last REAL NOT NULL,"
    "  last_ts INTEGER NOT NULL,"
    "  PRIMARY KEY(series_id, bucket)) WITHOUT ROWID;"
    "CREATE TABLE quarantine("
    "  id INTEGER PRIMARY KEY,"
    "  topic TEXT NOT NULL, metric TEXT NOT NULL, ts INTEGER NOT NULL, value REAL NOT NULL,"
    "  reason TEXT NOT NULL, received INTEGER NOT NULL);"
    "CREATE INDEX quarantine_received ON quarantine(received);"
    "CREATE TABLE ingest_state("
    "  id INTEGER PRIMARY KEY CHECK (id = 1),"
    "  journal_pos INTEGER NOT NULL);"
    "INSERT INTO ingest_state(id, journal_pos) VALUES (1, 0);";

/* Step 2: the alert tables (written by alerts/alert_store.c) and the meta
 * table through which the writer tells readers its settings. */
static const char schema_v2[] =
    "CREATE TABLE alert_instances("
    "  id TEXT PRIMARY KEY, rule TEXT NOT NULL, labels TEXT NOT NULL, state TEXT NOT NULL,"
    "  severity TEXT NOT NULL, since INTEGER, at INTEGER NOT NULL, message TEXT,"
    "  acked_by TEXT, acked_at INTEGER, ack_note TEXT, cooldown_until INTEGER,"
    "  updated INTEGER NOT NULL);"
    "CREATE TABLE alert_transitions("
    "  seq INTEGER PRIMARY KEY AUTOINCREMENT, alert_id TEXT NOT NULL, rule TEXT NOT NULL,"
    "  state TEXT NOT NULL, severity TEXT NOT NULL, at INTEGER NOT NULL, json TEXT NOT NULL);"
    "CREATE INDEX alert_transitions_at ON alert_transitions(at);"
    "CREATE TABLE silences("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT, matchers TEXT NOT NULL, starts INTEGER NOT NULL,"
    "  ends INTEGER NOT NULL, comment TEXT, created_by TEXT, created_at INTEGER NOT NULL);"
    "CREATE TABLE outbox("
    "  seq INTEGER PRIMARY KEY AUTOINCREMENT, channel TEXT NOT NULL, transition_seq INTEGER,"
    "  alert_id TEXT, content_type TEXT NOT NULL, body TEXT NOT NULL,"
    "  attempts INTEGER NOT NULL DEFAULT 0, next_attempt INTEGER NOT NULL,"
    "  delivered_at INTEGER, last_error TEXT);"
    "CREATE TABLE meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;";

/* Step 3: rollups are derived from their source after the bucket closes
 * (store.c, "Rollup derivation") instead of being merged at every commit.
 * The meta keys say how far each tier is derived; a file written by an older
 * version has every committed sample merged already, so its tiers count as
 * derived up to the end of their newest bucket; derive_clean says no sample
 * waits for derivation below that. -4611686018427387904 (-2^62)
 * is "nothing derived yet" (STORAGE_DERIVE_NONE). */
static const char schema_v3[] =
    "INSERT OR REPLACE INTO meta(key, value) SELECT 'derive_1m_done', "
    "  coalesce(max(bucket) + 60000, -4611686018427387904) FROM rollup_1m;"
    "INSERT OR REPLACE INTO meta(key, value) SELECT 'derive_1h_done', "
    "  coalesce(max(bucket) + 3600000, -4611686018427387904) FROM rollup_1h;"
    "INSERT OR REPLACE INTO meta(key, value) SELECT replace(key, '_done', '_to'), value "
    "  FROM meta WHERE key IN ('derive_1m_done', 'derive_1h_done');"
    "INSERT OR REPLACE INTO meta(key, value) VALUES ('derive_1m_cursor', 0),"
    "  ('derive_1h_cursor', 0), ('derive_clean', 1);";

/* Step 4: the reference ("sender,identifier,sent") of the last CAP message
 * sent per notification id, so an Update or Cancel after a restart still
 * names the message it updates or cancels. Deleted by the Cancel. */
static const char schema_v4[] =
    "CREATE TABLE cap_refs(notification TEXT PRIMARY KEY, ref TEXT NOT NULL) WITHOUT ROWID;";

/* Step 5: the audit log of operator actions (acknowledgements, silences
 * created, expired or deleted, rule reloads...: alerts.h, cb_alerts_audit),
 * kept with storage.retention.alerts; and who ended a silence by hand. A
 * silence expired or deleted by an operator keeps its row, its `ends` moved
 * to that moment, so the lists show it as expired instead of losing it. */
static const char schema_v5[] =
    "CREATE TABLE audit_log("
    "  seq INTEGER PRIMARY KEY AUTOINCREMENT, at INTEGER NOT NULL, who TEXT NOT NULL,"
    "  action TEXT NOT NULL, target TEXT, note TEXT,"
    "  details TEXT);" /* a JSON object, or NULL */
    "CREATE INDEX audit_log_at ON audit_log(at);"
    "ALTER TABLE silences ADD COLUMN expired_at INTEGER;"
    "ALTER TABLE silences ADD COLUMN expired_by TEXT;";

/* Step 6: what a restart needs to give the same verdicts (rules.md, "Time
 * and evaluation"): when a firing instance fired (`after ... unacked`), since
 * when its clear condition holds (`clear ... for`), whether it is stale, and
 * the identity of the rule that made it (state is kept only while the rule's
 * identity is unchanged). Resolved rows keep cooldown_until already. */
static const char schema_v6[] =
    "ALTER TABLE alert_instances ADD COLUMN fired_at INTEGER;"
    "ALTER TABLE alert_instances ADD COLUMN clear_since INTEGER;"
    "ALTER TABLE alert_instances ADD COLUMN stale INTEGER NOT NULL DEFAULT 0;" /* 1 stale, 2 unknown */
    "ALTER TABLE alert_instances ADD COLUMN rule_key TEXT;";

/* Step 7: an instance's title and message in every language its rule gives
 * (rules.md, "Languages"), each a JSON object {"en-US":…,"zh-CN":…} or NULL
 * for a rule with plain clauses only; `message` keeps the first language's.
 * After a restart a firing alert is shown in every language again, not only
 * in the one `message` holds. */
static const char schema_v7[] =
    "ALTER TABLE alert_instances ADD COLUMN titles TEXT;"
    "ALTER TABLE alert_instances ADD COLUMN messages TEXT;";

/* Step 8: raw samples in compressed chunks (docs/storage.md, "Raw samples in
 * chunks"). `chunks` holds the closed chunks of each series (one row per
 * series and time span, the samples encoded by storage/chunk.c), `head` the
 * open head: a row per sample keyed by the commit that wrote it first, so a
 * commit appends at the right edge instead of touching a page per series.
 * The rows of the old table are kept as `samples_v6` and converted by the
 * writer series by series between commits (store.c, "Conversion"): the
 * series with ids up to chunk_migrate_end, from chunk_migrate_cursor on. The
 * name `samples` is then the virtual table of samples_vtab.c. Self-contained,
 * so it can be renumbered when merged after another step. */
static const char schema_v8[] =
    "CREATE TABLE chunks("
    "  series_id INTEGER NOT NULL, start_ts INTEGER NOT NULL, end_ts INTEGER NOT NULL,"
    "  n INTEGER NOT NULL, data BLOB NOT NULL,"
    "  PRIMARY KEY(series_id, start_ts)) WITHOUT ROWID;"
    "CREATE TABLE head("
    "  seq INTEGER NOT NULL, series_id INTEGER NOT NULL, ts INTEGER NOT NULL,"
    "  value REAL NOT NULL,"
    "  PRIMARY KEY(seq, series_id, ts)) WITHOUT ROWID;"
    "ALTER TABLE samples RENAME TO samples_v6;"
    "INSERT OR REPLACE INTO meta(key, value) VALUES ('chunk_migrate_cursor', 0);"
    "INSERT OR REPLACE INTO meta(key, value) "
    "  SELECT 'chunk_migrate_end', coalesce(max(id), 0) FROM series;";

/* Step 9: the recent tier of closed chunks (docs/storage.md, "Two tiers of
 * chunks"). A seal writes its chunks into `chunks_recent`, keyed by the seal
 * first, so a seal appends at the right edge of one B-tree instead of
 * rewriting a leaf page of `chunks` per series; the writer compacts the tier
 * into `chunks` in bulk (store.c, "Compaction"). No conversion: the rows of a
 * step-8 file stay valid where they are (`chunks` is the compacted tier, the
 * new table starts empty), so the step is instant whatever the file's size.
 * Self-contained, so it can be renumbered when merged after another step. */
static const char schema_v9[] =
    "CREATE TABLE chunks_recent("
    "  seal INTEGER NOT NULL, series_id INTEGER NOT NULL, start_ts INTEGER NOT NULL,"
    "  end_ts INTEGER NOT NULL, n INTEGER NOT NULL, data BLOB NOT NULL,"
    "  PRIMARY KEY(seal, series_id, start_ts)) WITHOUT ROWID;";

/* Step 10: the open head in blocks (docs/storage.md, "The head in blocks").
 * A commit writes one row per group of STORAGE_HEAD_GROUP series it has
 * samples of, keyed by the commit (seq) first, so it still appends at the
 * right edge; the row's blob holds the group's samples of that commit
 * (storage/head_block.h). No conversion: rows a step-9 file left in `head`
 * stay there, every reader still reads them (samples_vtab.c), and the
 * writer seals them into chunks at start and drops the old table in the
 * same transaction (store.c, seal_head). Self-contained, so it can be
 * renumbered when merged after another step. */
static const char schema_v10[] =
    "CREATE TABLE head_blocks("
    "  seq INTEGER NOT NULL, grp INTEGER NOT NULL, data BLOB NOT NULL,"
    "  PRIMARY KEY(seq, grp)) WITHOUT ROWID;";

/* The migration steps: steps[i] brings user_version i to i + 1. Append only;
 * never edit a step that has shipped. */
static const char *const steps[] = {schema_v1, schema_v2, schema_v3, schema_v4, schema_v5,
                                     schema_v6, schema_v7, schema_v8, schema_v9, schema_v10};
_Static_assert(sizeof steps / sizeof steps[0] == STORAGE_SCHEMA_VERSION,
               "one migration step per schema version");

static int pragma_int(sqlite3 *db, const char *sql, int64_t *out)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            *out = sqlite3_column_int64(st, 0);
            rc = SQLITE_OK;
        }
    }
    sqlite3_finalize(st);
    return rc;
}

int storage__migrate(sqlite3 *db, int target, char *err, size_t errlen)
{
    int64_t version = 0;
    int rc = pragma_int(db, "PRAGMA user_version", &version);
    if (rc != SQLITE_OK) {
        storage__set_err(err, errlen, "cannot read the schema version: %s", sqlite3_errmsg(db));
        return -1;
    }
    for (int64_t v = version; v < target; v++) {
        char sql[96];
        if (sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
            goto fail;
        if (sqlite3_exec(db, steps[v], NULL, NULL, NULL) != SQLITE_OK)
            goto fail_rollback;
        snprintf(sql, sizeof sql, "PRAGMA application_id = %d; PRAGMA user_version = %lld",
                 STORAGE_APP_ID, (long long)(v + 1));
        if (sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK)
            goto fail_rollback;
        if (sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
            goto fail_rollback;
        continue;
    fail_rollback:
        storage__set_err(err, errlen, "schema migration to version %lld failed: %s",
                         (long long)(v + 1), sqlite3_errmsg(db));
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
        return -1;
    fail:
        storage__set_err(err, errlen, "schema migration to version %lld failed: %s",
                         (long long)(v + 1), sqlite3_errmsg(db));
        return -1;
    }
    return 0;
}

int storage__meta_set(sqlite3 *db, const char *key, int64_t value)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, "INSERT OR REPLACE INTO meta(key, value) VALUES (?1, ?2)",
                                -1, &st, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, value);
        rc = sqlite3_step(st) == SQLITE_DONE ? SQLITE_OK : sqlite3_errcode(db);
    }
    sqlite3_finalize(st);
    return rc == SQLITE_OK ? 0 : -1;
}

int storage__meta_get(sqlite3 *db, const char *key, int64_t *value)
{
    sqlite3_stmt *st = NULL;
    int found = -1;
    if (sqlite3_prepare_v2(db, "SELECT value FROM meta WHERE key = ?1", -1, &st, NULL) ==
        SQLITE_OK) {
        sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
        if (sqlite3_step(st) == SQLITE_ROW) {
            *value = sqlite3_column_int64(st, 0);
            found = 0;
        }
    }
    sqlite3_finalize(st);
    return found;
}

/* Checks that db is a citybrain database this build understands. Sets
 * *version (0 for a new, empty file). Returns 0, or -1 with err filled. */
static int check_identity(sqlite3 *db, const char *path, int64_t *version, char *err,
                          size_t errlen)
{
    int64_t app_id = 0, tables = 0;
    /* The first read of the header tells a non-SQLite file (SQLITE_NOTADB). */
    int rc = pragma_int(db, "SELECT count(*) FROM sqlite_master", &tables);
    if (rc == SQLITE_NOTADB) {
        storage__set_err(err, errlen, "%s: not a SQLite database (a foreign file is at the path)",
                         path);
        return -1;
    }
    if (rc != SQLITE_OK || pragma_int(db, "PRAGMA application_id", &app_id) != SQLITE_OK ||
        pragma_int(db, "PRAGMA user_version", version) != SQLITE_OK) {
        storage__set_err(err, errlen, "%s: cannot read the database header: %s", path,
                         sqlite3_errmsg(db));
        return -1;
    }
    if (app_id == 0 && *version == 0 && tables == 0)
        return 0; /* new, empty */
    if (app_id != STORAGE_APP_ID) {
        storage__set_err(err, errlen,
                         "%s: a SQLite database of another application (application_id %lld, "
                         "%lld tables), not a citybrain database; refusing to touch it",
                         path, (long long)app_id, (long long)tables);
        return -1;
    }
    if (*version > STORAGE_SCHEMA_VERSION) {
        storage__set_err(err, errlen,
                         "%s: schema version %lld is newer than this citybrain knows (%d); "
                         "use a newer citybrain or another database",
                         path, (long long)*version, STORAGE_SCHEMA_VERSION);
        return -1;
    }
    return 0;
}

/* Process-wide SQLite settings, once before the first connection: memory
 * statistics off, so every sqlite3_malloc and sqlite3_free does not take the
 * global memory mutex (citybrain never reads sqlite3_memory_used). When
 * SQLite was already initialized (a host program used it first) the call is
 * refused and changes nothing. And the virtual table `samples` on every
 * connection (samples_vtab.c). */
static void sqlite_global_init(void)
{
    (void)sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
    storage__samples_vtab_init();
}

/* Creates an empty database file readable by its owner only, unless one is
 * there already (an empty file is a valid new SQLite database). SQLite
 * would create it 0644 (less the umask) and gives the -wal and -shm files
 * the main file's mode, so the mode chosen here is the one of all three:
 * they hold the audit trail and webhook bodies. An existing file keeps the
 * mode its owner gave it. Returns 0, or -1 with errno set. */
static int create_private(const char *path)
{
    if (strcmp(path, ":memory:") == 0 || strncmp(path, "file:", 5) == 0)
        return 0;
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, STORAGE_FILE_MODE);
    if (fd >= 0)
        return close(fd);
    return errno == EEXIST ? 0 : -1;
}

sqlite3 *storage__open_db(const char *path, enum storage_open_mode mode, int sync_full,
                          int64_t cache_bytes, int target_version, char *err, size_t errlen)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, sqlite_global_init);
    sqlite3 *db = NULL;
    int flags = SQLITE_OPEN_NOMUTEX;
    if (mode == STORAGE_OPEN_WRITER)
        flags |= SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
    else if (mode == STORAGE_OPEN_EXTRA)
        flags |= SQLITE_OPEN_READWRITE;
    else
        flags |= SQLITE_OPEN_READONLY;
    if (mode == STORAGE_OPEN_WRITER && create_private(path) < 0) {
        storage__set_err(err, errlen, "%s: cannot create: %s", path, strerror(errno));
        return NULL;
    }
    int rc = sqlite3_open_v2(path, &db, flags, NULL);
    if (rc != SQLITE_OK) {
        storage__set_err(err, errlen, "%s: cannot open: %s", path,
                         db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
        goto fail;
    }
    sqlite3_extended_result_codes(db, 1);
    sqlite3_busy_timeout(db, STORAGE_BUSY_TIMEOUT_MS);
    if (mode != STORAGE_OPEN_READER && sqlite3_db_readonly(db, "main") == 1) {
        storage__set_err(err, errlen, "%s: the database file is read-only", path);
        goto fail;
    }
    int64_t version = 0;
    if (check_identity(db, path, &version, err, errlen) < 0)
        goto fail;
    if (mode != STORAGE_OPEN_WRITER && version < STORAGE_SCHEMA_VERSION) {
        storage__set_err(err, errlen,
                         "%s: schema version %lld, expected %d (start `citybrain run` once to "
                         "create or migrate it)",
                         path, (long long)version, STORAGE_SCHEMA_VERSION);
        goto fail;
    }
    if (mode != STORAGE_OPEN_READER) {
        /* WAL: readers never block the writer and the writer never blocks
         * readers; one fsync per checkpoint instead of per commit. */
        sqlite3_stmt *st = NULL;
        rc = sqlite3_prepare_v2(db, "PRAGMA journal_mode = WAL", -1, &st, NULL);
        const char *jm = NULL;
        if (rc == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
            jm = (const char *)sqlite3_column_text(st, 0);
        int wal = jm && strcmp(jm, "wal") == 0;
        sqlite3_finalize(st);
        if (!wal) {
            storage__set_err(err, errlen, "%s: cannot switch to WAL mode: %s", path,
                             sqlite3_errmsg(db));
            goto fail;
        }
    }
    char sql[128];
    snprintf(sql, sizeof sql, "PRAGMA synchronous = %s", sync_full ? "FULL" : "NORMAL");
    if (sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK)
        goto fail_sql;
    if (cache_bytes > 0) {
        snprintf(sql, sizeof sql, "PRAGMA cache_size = %lld", -(long long)(cache_bytes / 1024));
        if (sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK)
            goto fail_sql;
    }
    if (sqlite3_exec(db, "PRAGMA temp_store = MEMORY", NULL, NULL, NULL) != SQLITE_OK)
        goto fail_sql;
    /* Debian's SQLite is built with secure_delete on: every page freed
     * (the head's pages at each seal, the recent tier's at each compaction)
     * would be overwritten with zeros, a WAL frame and a checkpoint write
     * each. FAST still zeroes deleted rows on pages written anyway, but
     * leaves freed pages alone (docs/storage.md, "Two tiers of chunks"). */
    if (mode == STORAGE_OPEN_WRITER &&
        sqlite3_exec(db, "PRAGMA secure_delete = FAST", NULL, NULL, NULL) != SQLITE_OK)
        goto fail_sql;
    if (mode == STORAGE_OPEN_READER &&
        sqlite3_exec(db, "PRAGMA query_only = 1", NULL, NULL, NULL) != SQLITE_OK)
        goto fail_sql;
    if (mode == STORAGE_OPEN_WRITER && storage__migrate(db, target_version, err, errlen) < 0)
        goto fail;
    return db;

fail_sql:
    storage__set_err(err, errlen, "%s: %s", path, sqlite3_errmsg(db));
fail:
    sqlite3_close(db);
    return NULL;
}

sqlite3 *cb_store_open_connection(const char *path, char *err, size_t errlen)
{
    sqlite3 *db = storage__open_db(path, STORAGE_OPEN_EXTRA, 0, 0, STORAGE_SCHEMA_VERSION, err,
                                   errlen);
    if (!db)
        return NULL;
    int64_t full = 0;
    if (storage__meta_get(db, "synchronous_full", &full) == 0 && full)
        sqlite3_exec(db, "PRAGMA synchronous = FULL", NULL, NULL, NULL);
    return db;
}
