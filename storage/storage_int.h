/* storage/ internals shared by schema.c, store.c, reader.c and journal.c. */
#ifndef CB_STORAGE_STORAGE_INT_H
#define CB_STORAGE_STORAGE_INT_H

#include <sqlite3.h>
#include <stddef.h>
#include <stdint.h>

#include "storage/storage.h"
#include "storage/varint.h"

/* PRAGMA application_id of a citybrain database ("CBR1"). */
#define STORAGE_APP_ID 0x43425231
/* PRAGMA user_version after every migration step has run. */
#define STORAGE_SCHEMA_VERSION 10
/* The step that stores raw samples in chunks (schema_v8): a file opened at
 * an older version (tests) keeps one row per sample. */
#define STORAGE_CHUNKS_VERSION 8
/* The step that adds the recent tier of chunks (schema_v9): a file opened at
 * version 8 (tests) seals straight into `chunks`. */
#define STORAGE_TIERS_VERSION 9
/* The step that keeps the open head in blocks (schema_v10): a file opened at
 * version 8 or 9 (tests) keeps a row per sample in `head`. */
#define STORAGE_BLOCKS_VERSION 10

/* "Nothing derived yet" for the rollup derivation state (meta derive_*). */
#define STORAGE_DERIVE_NONE (-(INT64_C(1) << 62))
/* How long a connection waits for another one's write lock. */
#define STORAGE_BUSY_TIMEOUT_MS 5000

/* Modes of what storage/ creates: the database (and so its -wal and -shm)
 * and journal segments readable by their owner only, the journal directory
 * by the owner's group too (umask may take more away). */
#define STORAGE_FILE_MODE 0600
#define STORAGE_DIR_MODE 0750

/* Chunks (docs/storage.md, "Raw samples in chunks"): a chunk is closed with
 * about STORAGE_CHUNK_TARGET samples (a smaller last chunk of a series is
 * filled up at the next seal); the head is sealed into chunks once its
 * oldest commit is STORAGE_SEAL_SPAN_MS old. */
#define STORAGE_CHUNK_TARGET 120
#define STORAGE_SEAL_SPAN_MS 120000LL
/* The recent tier (chunks_recent) is compacted into `chunks` once it holds
 * this many seals: an hour of seals every STORAGE_SEAL_SPAN_MS. */
#define STORAGE_COMPACT_SEALS 30

#define STORAGE_MINUTE_MS 60000LL
/* While running, a pass of the 1-minute rollup derivation ends on a
 * multiple of this (whole hours; store.c, derive_target and
 * derive_has_work; docs/storage.md, "Passes of an hour"). */
#define STORAGE_DERIVE_BATCH_MS (60 * STORAGE_MINUTE_MS)
#define STORAGE_HOUR_MS 3600000LL

/* Formats an error text into err (when err and errlen are non-zero). */
void storage__set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* How a connection is opened. */
enum storage_open_mode {
    STORAGE_OPEN_WRITER,  /* read-write, creates the file, migrates the schema */
    STORAGE_OPEN_EXTRA,   /* read-write, schema must exist and be current */
    STORAGE_OPEN_READER,  /* read-only, schema must exist and be current */
};

/* Opens `path` in `mode`, refuses a file that is not SQLite, a SQLite file of
 * another application, a newer schema, or (writer, extra) a file that cannot
 * be written; sets the connection pragmas (WAL, synchronous FULL when
 * sync_full, page cache of cache_bytes when > 0, busy timeout). The writer
 * migrates up to `target_version` (STORAGE_SCHEMA_VERSION outside tests).
 * Returns the connection, or NULL with err filled. */
sqlite3 *storage__open_db(const char *path, enum storage_open_mode mode, int sync_full,
                          int64_t cache_bytes, int target_version, char *err, size_t errlen);

/* Runs the migration steps from the current user_version up to target, each
 * in its own transaction. Returns 0, or -1 with err filled. */
int storage__migrate(sqlite3 *db, int target, char *err, size_t errlen);

/* Writes/reads a key of the meta table (retention periods, synchronous mode),
 * so readers and extra connections learn the writer's settings. */
int storage__meta_set(sqlite3 *db, const char *key, int64_t value);
int storage__meta_get(sqlite3 *db, const char *key, int64_t *value);

/* Floor division of a timestamp into its bucket start. */
static inline int64_t storage__bucket(int64_t ts, int64_t width)
{
    int64_t q = ts / width;
    if (ts % width != 0 && ts < 0)
        q--;
    return q * width;
}

/* cb_store_open with the schema migrated only up to target_version (tests of
 * migrations: a store at an older version); see storage.h for the rest. */
struct cb_store *storage__open(const struct cb_config *cfg, void (*commit_observer)(double),
                               int target_version, char *err, size_t errlen);

/* Registers the virtual table `samples` (samples_vtab.c) on every
 * connection opened after the call; a constructor does it at load, this
 * call (made before the store's first connection) keeps the file linked. */
void storage__samples_vtab_init(void);

/* Test hook: seals the whole head into chunks on the writer thread, between
 * commits (as the writer does once the head's oldest commit is
 * STORAGE_SEAL_SPAN_MS old). Returns the SQLite code. */
int storage__seal(struct cb_store *s);

/* Test hook: compacts the recent tier of chunks into `chunks` on the writer
 * thread, between commits, in one transaction (as the writer does once the
 * tier holds STORAGE_COMPACT_SEALS seals). Returns the SQLite code. */
int storage__compact(struct cb_store *s);
/* Test hook: one slice of a compaction (starting one if none runs).
 * Returns SQLITE_ROW when slices remain, SQLITE_OK when it is done, else
 * the SQLite code. */
int storage__compact_slice(struct cb_store *s);

/* Test hook: runs `sql` on the writer thread's connection (a pragma such as
 * max_page_count or busy_timeout), between commits. Returns the SQLite code. */
int storage__writer_exec(struct cb_store *s, const char *sql);

#endif
