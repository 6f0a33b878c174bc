/* Storage: SQLite (WAL) for samples, rollups, sensors, quarantine and alerts,
 * plus the ingest journal that makes acknowledged messages crash-safe.
 * (Interface seam fixed by the foundation; the storage issue implements and
 * extends it, keeping these names and meanings.)
 *
 * storage/ never logs and never exits: it returns codes, and fills
 * cb_store_stats and an error text the daemon reports.
 *
 * Threads: cb_store_* write calls are made from the loop thread and never
 * block on disk: rows go to a writer thread that commits about once per
 * storage.commit_interval. cb_journal_append is called from the MQTT thread.
 * Readers (struct cb_store_reader) have their own connection, one per thread. */
#ifndef CB_STORAGE_STORAGE_H
#define CB_STORAGE_STORAGE_H

#include <stddef.h>
#include <stdint.h>

#include "base/clock.h"
#include "base/config.h"
#include "base/sample.h"
#include "base/strbuf.h"

/* ---- the ingest journal --------------------------------------------------- */

struct cb_journal; /* append-only segment files; thread-safe append */

/* Opens (creating) the journal directory. NULL with err filled on failure. */
struct cb_journal *cb_journal_open(const char *dir, int64_t segment_bytes, int fsync_each,
                                   char *err, size_t errlen);
/* Appends one raw message: copied into the mapped active segment, no system
 * call (but a growth of the file every 16 KB, and an msync when fsync_each).
 * Called on the Paho thread before the message is acknowledged.
 * Returns 0 and the message's position (monotonic, > 0), or -1 with errno
 * set (ENOSPC or EDQUOT: disk full; EIO, EFBIG, EROFS...): nothing of the
 * record stays behind, and a later call may succeed (the caller keeps the
 * message unacknowledged and retries). */
int cb_journal_append(struct cb_journal *j, const char *topic, size_t topic_len,
                      const void *payload, size_t len, int64_t arrival_ms, uint64_t *pos);
/* Replays every record after `after_pos` in order (start-up recovery). */
typedef int (*cb_journal_record_fn)(void *ctx, uint64_t pos, const char *topic,
                                    const void *payload, size_t len, int64_t arrival_ms);
int cb_journal_replay(struct cb_journal *j, uint64_t after_pos, cb_journal_record_fn fn,
                      void *ctx);
/* Deletes segments wholly at or before `committed_pos`. */
int cb_journal_release(struct cb_journal *j, uint64_t committed_pos);
void cb_journal_close(struct cb_journal *j);
/* Makes every later position greater than `pos` (the position the database
 * has committed): when the journal directory was emptied or replaced, new
 * records must not reuse positions that replay would skip. Returns 0 or -1. */
int cb_journal_set_floor(struct cb_journal *j, uint64_t pos);

struct cb_journal_stats {
    uint64_t appended;          /* records written */
    uint64_t append_failed;     /* appends refused (disk full, I/O error) */
    uint64_t bytes;             /* bytes appended since open */
    uint64_t replayed;          /* records handed to a replay callback */
    uint64_t torn_records;      /* torn tails cut off at open (crash mid-write) */
    uint64_t corrupt_records;   /* damaged records skipped during replay */
    uint64_t segments_released; /* segment files deleted after commit */
    uint64_t next_pos;          /* position of the next record */
    size_t segments;            /* segment files on disk */
};
void cb_journal_get_stats(struct cb_journal *j, struct cb_journal_stats *out);

/* ---- the store (writer side) --------------------------------------------- */

struct cb_store;

enum cb_store_health { CB_STORE_OK = 0, CB_STORE_DEGRADED, CB_STORE_FAILED };

struct cb_store_stats {
    uint64_t rows_written;
    uint64_t rows_duplicate;   /* (series, ts) already present: redelivery */
    uint64_t rows_dropped;     /* journaled rows refused beyond storage.max_pending_rows
                                  (kept in the journal, stored at the next start) */
    uint64_t rows_lost;        /* rows of unjournaled (QoS 0) messages refused likewise */
    uint64_t commits;
    uint64_t commit_errors;
    uint64_t quarantined;
    uint64_t retention_deleted;
    size_t pending_rows;       /* queued for the writer */
    double last_commit_ms;
    double step_max_ms;        /* the longest step the writer ran between two commits
                                  (seal, compaction slice, derivation, retention or
                                  conversion step) since open: a commit waited that long */
    enum cb_store_health health;
    char last_error[256];
    uint64_t committed_journal_pos;
    uint64_t busy_errors;      /* commits that met SQLITE_BUSY/LOCKED */
    uint64_t full_errors;      /* commits that met SQLITE_FULL (disk full) */
    uint64_t io_errors;        /* commits that met any other error */
    uint64_t retention_steps;
    uint64_t derive_steps;     /* rollup derivation steps committed */
    uint64_t derive_errors;    /* rollup derivation steps that failed (retried) */
    int64_t derived_1m;        /* rollup_1m is complete below this time (ms) */
    int64_t derived_1h;        /* rollup_1h is complete below this time (ms) */
    uint64_t sensors;          /* sensors known to the writer */
    uint64_t series;           /* series known to the writer */
    uint64_t cache_bytes;      /* the writer's SQLite page cache (up to storage.cache_size) */
    uint64_t seals;            /* seals of the head into chunks (docs/storage.md) */
    uint64_t compactions;      /* compactions of the recent tier into `chunks` */
    int converting;            /* a schema-6 file's samples are still being converted */
};

/* Health: OK; DEGRADED while commits fail and rows wait in memory (retried
 * with backoff: disk full, database busy, I/O error); FAILED while rows are
 * refused (pending queue full: journaled ones stay in the journal and come
 * back on the next start, QoS 0 ones are lost) or the file became unwritable
 * (read-only, corrupt). A successful commit returns to OK. */
const char *cb_store_health_name(enum cb_store_health h);

/* Opens the database at cfg->storage_db (creating and migrating the schema),
 * starts the writer thread. `commit_observer` (may be NULL) is called on the
 * writer thread after each commit with its duration in seconds, for the
 * latency histogram. NULL with err filled when the file cannot be used
 * (foreign file, newer schema, read-only path at start-up). */
struct cb_store *cb_store_open(const struct cb_config *cfg, void (*commit_observer)(double secs),
                               char *err, size_t errlen);
/* The last journal position committed with its rows (0 for none). */
uint64_t cb_store_committed_journal_pos(struct cb_store *s);

/* Queues the samples of one message for the writer: sensor `topic` (device:
 * SenML bn or NULL), and the journal position the message came from (0 when
 * none: a QoS 0 message, tests). Never blocks. Returns 0, or -1 when the
 * pending queue is full: rows counted as dropped (journaled: the next start
 * replays them) or lost (position 0). */
int cb_store_append(struct cb_store *s, const char *topic, const char *device,
                    const struct cb_sample *samples, size_t n, uint64_t journal_pos);
/* Marks a journal position as fully handled even though it produced no rows
 * (a rejected payload), so recovery does not replay it forever. */
void cb_store_note_journal_pos(struct cb_store *s, uint64_t journal_pos);
/* Queues a quarantined sample with the reason ("invalid_range:river_flood")
 * and the journal position of its message (0 for none), which a refusal
 * holds like cb_store_append's. */
int cb_store_quarantine(struct cb_store *s, const char *topic, const struct cb_sample *sample,
                        const char *reason, uint64_t journal_pos);
void cb_store_get_stats(struct cb_store *s, struct cb_store_stats *out);
/* Gives the store the journal: sets its floor to the committed position now,
 * and after every commit the writer calls cb_journal_release with the
 * committed position, so the daemon need not. The journal must outlive the
 * store (close the store first). */
void cb_store_attach_journal(struct cb_store *s, struct cb_journal *j);
/* Commits everything queued before the call now, and waits for it. Returns 0
 * when committed, -1 when the commit failed (the rows stay queued and are
 * retried; see the stats). For shutdown paths and tests, not the hot path. */
int cb_store_flush(struct cb_store *s);
/* The clock retention cuts are computed from (default: the wall clock). The
 * struct is copied; ctx must outlive the store. */
void cb_store_set_clock(struct cb_store *s, const struct cb_clock *clock);
/* Calls fn (NULL: none) on the writer thread with the duration, in seconds,
 * of each step the writer runs between two commits: a seal of the head, a
 * slice of a compaction, a rollup derivation, retention or conversion step.
 * A commit that falls due meanwhile waits for it. */
void cb_store_set_step_observer(struct cb_store *s, void (*fn)(double secs));
/* Runs one retention step on the writer thread now and waits for it: at most
 * storage.retention.step_rows rows deleted, in one short transaction,
 * starting a new pass over the tiers when the previous one finished.
 * *deleted gets the rows deleted, *more 1 while the pass has tiers or series
 * left to visit. Returns 0, or -1 when the step failed. (The writer also runs
 * steps by itself between commits, one pass every storage.retention.interval.) */
int cb_store_retention_step(struct cb_store *s, uint64_t *deleted, int *more);
/* Commits everything queued, stops the writer, closes. Blocks (shutdown). */
void cb_store_close(struct cb_store *s);

/* ---- reading --------------------------------------------------------------- */

struct cb_store_reader; /* a read-only connection; use from one thread */

struct cb_store_reader *cb_store_reader_open(const char *db_path, char *err, size_t errlen);
void cb_store_reader_close(struct cb_store_reader *r);
/* The text of the reader's last error ("" when none). Valid until the next call. */
const char *cb_store_reader_error(struct cb_store_reader *r);

/* Query functions return 0 when done (also when fn stopped them), -1 on an
 * error (see cb_store_reader_error). A query reads one consistent snapshot. */

struct cb_bucket {
    int64_t ts;      /* bucket start, ms */
    uint64_t count;
    double min, max, sum, last;
    int64_t span_ms; /* buckets: the data covers [ts, ts + span_ms): the step, or more
                      * when the bucket holds a whole rollup bucket longer than the step */
};

/* Raw samples with from <= ts < to (topic and metric may be NULL: all).
 * Calls fn for each in (topic, metric, ts) order; fn returns non-zero to stop. */
typedef int (*cb_sample_row_fn)(void *ctx, const char *topic, const char *metric, int64_t ts,
                                double value);
int cb_store_query_raw(struct cb_store_reader *r, const char *topic, const char *metric,
                       int64_t from, int64_t to, cb_sample_row_fn fn, void *ctx);
/* Buckets of step_ms over [from, to) for each series matching topic and
 * metric (NULL: any), in (topic, metric, ts) order. Buckets are aligned to
 * the epoch; from rounds down and to rounds up to whole step buckets; empty
 * buckets are not reported. Each bucket is answered from the finest tier
 * that holds its data, judged by what is stored, not by the retention
 * periods: raw samples where all of them are there (their count equals the
 * rollup's), else the 1-minute rollup, else the 1-hour one; an hour (a
 * minute) is taken from one tier only, so nothing is counted twice. A
 * rollup row is never split into finer buckets: it goes whole into the step
 * bucket holding its start, when that start is in the range (span_ms then
 * says how long the data is), so a 30 s step over data kept only in the
 * 1-hour tier gives one bucket per hour, at the hour, span_ms 3600000.
 * Where a step is a whole number of hours (minutes) and that tier is
 * complete, its rows are read instead of the samples: the same answer. */
typedef int (*cb_bucket_row_fn)(void *ctx, const char *topic, const char *metric,
                                const struct cb_bucket *b);
int cb_store_query_buckets(struct cb_store_reader *r, const char *topic, const char *metric,
                           int64_t from, int64_t to, int64_t step_ms, cb_bucket_row_fn fn,
                           void *ctx);

/* count/min/max/sum(avg = sum / count)/last over from <= ts < to for one
 * series: raw samples at the edges, 1-minute rollups for the whole minutes
 * inside. out->count is 0 when there is no sample; out->ts is the ts of last. */
int cb_store_query_aggregate(struct cb_store_reader *r, const char *topic, const char *metric,
                             int64_t from, int64_t to, struct cb_bucket *out);

/* One row of a tier: the samples of one series in [start, start + width)
 * (width 1: one raw sample), with the first and last of them. */
struct cb_tier_row {
    int64_t start, width;
    uint64_t count;
    double sum, min, max, first;
    int64_t first_ts;
    double last;
    int64_t last_ts;
};
typedef int (*cb_tier_row_fn)(void *ctx, const struct cb_tier_row *row);
/* The samples of one series with from <= ts < to as rows of the coarsest
 * tier that holds them whole, in time order, never overlapping: 1-hour rows
 * for the hours the 1-minute tier no longer holds (whole hours: the hour
 * where 1-minute retention cut is read from the 1-hour row), 1-minute rows
 * from there to where that tier is derived, raw samples after. A row goes
 * out from the bucket that holds `from` up to the last one that starts
 * before `to`, so it may reach past either end. *raw_first (when raw_first
 * is not NULL: it costs a scan of the samples' open head) gets the series'
 * oldest raw sample (INT64_MAX when none): rows before it hold what raw
 * retention has deleted. fn returns non-zero to stop. */
int cb_store_query_rows(struct cb_store_reader *r, const char *topic, const char *metric,
                        int64_t from, int64_t to, cb_tier_row_fn fn, void *ctx,
                        int64_t *raw_first);

/* Every known sensor with its metrics (for GET /api/sensors), in topic order.
 * Pointers are valid during the callback only; fn returns non-zero to stop.
 * last_ts/last_value: the newest raw sample, or the newest 1-hour rollup's
 * last when the raw samples have expired; INT64_MIN and NaN when neither. */
struct cb_sensor_metric {
    const char *metric;
    const char *unit;     /* or NULL */
    int64_t last_ts;
    double last_value;
};
struct cb_sensor_info {
    const char *topic;
    const char *device;   /* SenML bn, or NULL */
    const char *labels;   /* JSON object text, or NULL */
    int64_t first_seen, last_seen; /* sample times (event time) */
    const struct cb_sensor_metric *metrics;
    size_t nmetrics;
};
typedef int (*cb_sensor_fn)(void *ctx, const struct cb_sensor_info *s);
int cb_store_list_sensors(struct cb_store_reader *r, cb_sensor_fn fn, void *ctx);

/* The same sensors and metrics (those with at least one metric), without
 * looking at samples: every metric's last_ts is INT64_MIN and last_value
 * NaN, last_seen the sensor's own. One statement, for readers that need the
 * catalog but not the newest values (the Prometheus API's queries). */
int cb_store_list_sensors_brief(struct cb_store_reader *r, cb_sensor_fn fn, void *ctx);

/* Window restore: every raw sample with ts >= since_ms, in ts order (ties in
 * topic, metric order). */
int cb_store_scan_since(struct cb_store_reader *r, int64_t since_ms, cb_sample_row_fn fn,
                        void *ctx);

#endif
