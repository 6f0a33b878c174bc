/* The alert store: see alert_store.h for the threading choice. */
#include "storage/alert_store.h"
#include "storage/sqlite_conn.h"
#include "storage/storage_int.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The statements the writer runs; an op names one and carries its values. */
enum { ST_INSTANCE, ST_TRANSITION, ST_SILENCE_ADD, ST_SILENCE_EXPIRE, ST_OUTBOX_ADD,
       ST_OUTBOX_ATTEMPT, ST_CAP_REF_PUT, ST_CAP_REF_DEL, ST_AUDIT_ADD, ST_COUNT };

static const char *const write_sql[ST_COUNT] = {
    "INSERT INTO alert_instances(id,rule,labels,state,severity,since,at,message,acked_by,"
    "acked_at,ack_note,cooldown_until,updated,fired_at,clear_since,stale,rule_key,titles,"
    "messages) VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16,?17,?18,?19)"
    " ON CONFLICT(id) DO UPDATE SET rule=excluded.rule,labels=excluded.labels,"
    "state=excluded.state,severity=excluded.severity,since=excluded.since,at=excluded.at,"
    "message=excluded.message,acked_by=excluded.acked_by,acked_at=excluded.acked_at,"
    "ack_note=excluded.ack_note,cooldown_until=excluded.cooldown_until,updated=excluded.updated,"
    "fired_at=excluded.fired_at,clear_since=excluded.clear_since,stale=excluded.stale,"
    "rule_key=excluded.rule_key,titles=excluded.titles,messages=excluded.messages",
    "INSERT INTO alert_transitions(seq,alert_id,rule,state,severity,at,json)"
    " VALUES(?1,?2,?3,?4,?5,?6,?7)",
    "INSERT INTO silences(id,matchers,starts,ends,comment,created_by,created_at)"
    " VALUES(?1,?2,?3,?4,?5,?6,?7)",
    "UPDATE silences SET starts=?2,ends=?3,expired_at=?4,expired_by=?5 WHERE id=?1",
    "INSERT INTO outbox(seq,channel,transition_seq,alert_id,content_type,body,attempts,"
    "next_attempt) VALUES(?1,?2,?3,?4,?5,?6,?7,?8)",
    "UPDATE outbox SET attempts=?2,next_attempt=?3,delivered_at=?4,last_error=?5 WHERE seq=?1",
    "INSERT OR REPLACE INTO cap_refs(notification,ref) VALUES(?1,?2)",
    "DELETE FROM cap_refs WHERE notification=?1",
    "INSERT INTO audit_log(seq,at,who,action,target,note,details) VALUES(?1,?2,?3,?4,?5,?6,?7)",
};

#define MAXV 19

/* A value: text (s, owned; NULL binds SQL NULL when isnull) or integer. */
struct val {
    int is_text, isnull;
    int64_t i;
    char *s;
};

struct op {
    struct op *next;
    int stmt;
    int n;
    struct val v[MAXV];
};

struct cb_alert_reader {
    sqlite3 *db;
    char err[256];
};

struct cb_alert_store {
    sqlite3 *wdb;
    struct cb_alert_reader reader;
    sqlite3_stmt *st[ST_COUNT];
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;      /* work queued, or stop */
    pthread_cond_t idle;    /* queue drained and committed */
    struct op *head, *tail;
    int busy, stop;
    uint64_t errors;
    char last_error[256];
    int64_t next_tseq, next_silence, next_outbox, next_audit;
};

/* The CLI's read-only connection: the same identity and schema-version checks
 * as the time-series reader (a foreign file or a newer schema is refused with
 * its reason, not met later as "no such table"). The daemon's connections
 * come from cb_store_open_connection. */
static sqlite3 *open_readonly(const char *path, char *err, size_t errlen)
{
    return storage__open_db(path, STORAGE_OPEN_READER, 0, 0, STORAGE_SCHEMA_VERSION, err,
                            errlen);
}

static int64_t max_key(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st = NULL;
    int64_t v = 0;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

/* The highest key ever given in an AUTOINCREMENT table: its largest row, or
 * the sqlite_sequence entry when rows were deleted since (retention), so a
 * key is never given twice. */
static int64_t last_key(sqlite3 *db, const char *table, const char *column)
{
    char sql[160];
    snprintf(sql, sizeof sql, "SELECT coalesce(max(%s),0) FROM %s", column, table);
    int64_t v = max_key(db, sql);
    snprintf(sql, sizeof sql, "SELECT seq FROM sqlite_sequence WHERE name='%s'", table);
    int64_t sq = max_key(db, sql);
    return sq > v ? sq : v;
}

static void free_op(struct op *o)
{
    for (int i = 0; i < o->n; i++)
        free(o->v[i].s);
    free(o);
}

/* Runs one op on the writer connection. Returns 0 or -1 (error in s->last_error). */
static int run_op(struct cb_alert_store *s, struct op *o)
{
    sqlite3_stmt *st = s->st[o->stmt];
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    for (int i = 0; i < o->n; i++) {
        const struct val *v = &o->v[i];
        if (v->isnull)
            sqlite3_bind_null(st, i + 1);
        else if (v->is_text)
            sqlite3_bind_text(st, i + 1, v->s, -1, SQLITE_STATIC);
        else
            sqlite3_bind_int64(st, i + 1, v->i);
    }
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) {
        snprintf(s->last_error, sizeof s->last_error, "%s", sqlite3_errmsg(s->wdb));
        return -1;
    }
    return 0;
}

/* The writer thread: takes the whole queue, commits it in one transaction,
 * repeats; signals `idle` when nothing is left. A failed op is counted and
 * skipped (the rest of the batch still commits). */
static void *writer_main(void *arg)
{
    pthread_setname_np(pthread_self(), "cb-alert-store"); /* for top -H and perf */
    struct cb_alert_store *s = arg;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (!s->head && !s->stop)
            pthread_cond_wait(&s->cv, &s->mu);
        if (!s->head && s->stop)
            break;
        struct op *batch = s->head;
        s->head = s->tail = NULL;
        s->busy = 1;
        pthread_mutex_unlock(&s->mu);

        uint64_t failed = 0;
        int began = sqlite3_exec(s->wdb, "BEGIN IMMEDIATE", NULL, NULL, NULL) == SQLITE_OK;
        for (struct op *o = batch; o; o = o->next)
            if (run_op(s, o))
                failed++;
        if (began && sqlite3_exec(s->wdb, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
            snprintf(s->last_error, sizeof s->last_error, "commit: %s", sqlite3_errmsg(s->wdb));
            sqlite3_exec(s->wdb, "ROLLBACK", NULL, NULL, NULL);
            failed++;
        }
        while (batch) {
            struct op *next = batch->next;
            free_op(batch);
            batch = next;
        }
        pthread_mutex_lock(&s->mu);
        s->errors += failed;
        s->busy = 0;
        if (!s->head)
            pthread_cond_broadcast(&s->idle);
    }
    pthread_cond_broadcast(&s->idle);
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

struct cb_alert_store *cb_alert_store_open(const char *path, char *err, size_t errlen)
{
    struct cb_alert_store *s = calloc(1, sizeof *s);
    int mu_ok = 0;
    if (!s) {
        storage__set_err(err, errlen, "out of memory");
        return NULL;
    }
    /* The schema (alert tables included) is created and migrated by
     * cb_store_open, which the daemon calls first. */
    s->wdb = cb_store_open_connection(path, err, errlen);
    if (!s->wdb)
        goto fail;
    for (int i = 0; i < ST_COUNT; i++) {
        if (sqlite3_prepare_v3(s->wdb, write_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &s->st[i],
                               NULL) != SQLITE_OK) {
            storage__set_err(err, errlen, "%s: %s", path, sqlite3_errmsg(s->wdb));
            goto fail;
        }
    }
    s->reader.db = cb_store_open_connection(path, err, errlen);
    if (!s->reader.db)
        goto fail;
    s->next_tseq = last_key(s->wdb, "alert_transitions", "seq");
    s->next_silence = last_key(s->wdb, "silences", "id");
    s->next_outbox = last_key(s->wdb, "outbox", "seq");
    s->next_audit = last_key(s->wdb, "audit_log", "seq");

    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    pthread_cond_init(&s->idle, NULL);
    mu_ok = 1;
    if (pthread_create(&s->thread, NULL, writer_main, s)) {
        storage__set_err(err, errlen, "cannot start the alert writer thread");
        goto fail;
    }
    return s;
fail:
    if (mu_ok) {
        pthread_mutex_destroy(&s->mu);
        pthread_cond_destroy(&s->cv);
        pthread_cond_destroy(&s->idle);
    }
    for (int i = 0; i < ST_COUNT; i++)
        sqlite3_finalize(s->st[i]);
    sqlite3_close(s->reader.db);
    sqlite3_close(s->wdb);
    free(s);
    return NULL;
}

int cb_alert_store_sync(struct cb_alert_store *s)
{
    pthread_mutex_lock(&s->mu);
    while (s->head || s->busy)
        pthread_cond_wait(&s->idle, &s->mu);
    int rc = s->errors ? -1 : 0;
    pthread_mutex_unlock(&s->mu);
    return rc;
}

uint64_t cb_alert_store_errors(struct cb_alert_store *s, char *err, size_t errlen)
{
    pthread_mutex_lock(&s->mu);
    uint64_t n = s->errors;
    storage__set_err(err, errlen, "%s", s->last_error);
    pthread_mutex_unlock(&s->mu);
    return n;
}

void cb_alert_store_close(struct cb_alert_store *s)
{
    if (!s)
        return;
    pthread_mutex_lock(&s->mu);
    s->stop = 1;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->thread, NULL);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    pthread_cond_destroy(&s->idle);
    for (int i = 0; i < ST_COUNT; i++)
        sqlite3_finalize(s->st[i]);
    sqlite3_close(s->reader.db);
    sqlite3_close(s->wdb);
    free(s);
}

int64_t cb_alert_store_next_transition_seq(struct cb_alert_store *s) { return ++s->next_tseq; }
int64_t cb_alert_store_next_silence_id(struct cb_alert_store *s) { return ++s->next_silence; }
int64_t cb_alert_store_next_outbox_seq(struct cb_alert_store *s) { return ++s->next_outbox; }
int64_t cb_alert_store_next_audit_seq(struct cb_alert_store *s) { return ++s->next_audit; }

/* ---- building and queueing ops ---- */

static struct op *op_new(int stmt)
{
    struct op *o = calloc(1, sizeof *o);
    if (o)
        o->stmt = stmt;
    return o;
}

static void op_int(struct op *o, int64_t v) { o->v[o->n++].i = v; }

/* An integer where 0 means SQL NULL (since, acked_at, delivered_at...). */
static void op_int0(struct op *o, int64_t v)
{
    o->v[o->n].isnull = v == 0;
    o->v[o->n++].i = v;
}

/* Returns -1 on OOM (the op is marked broken through its text). */
static int op_text(struct op *o, const char *s)
{
    struct val *v = &o->v[o->n++];
    v->is_text = 1;
    if (!s) {
        v->isnull = 1;
        return 0;
    }
    v->s = strdup(s);
    return v->s ? 0 : -1;
}

/* Queues o (taking it), or frees it and returns -1 when `bad`. */
static int enqueue(struct cb_alert_store *s, struct op *o, int bad)
{
    if (!o)
        return -1;
    if (bad) {
        free_op(o);
        return -1;
    }
    pthread_mutex_lock(&s->mu);
    if (s->tail)
        s->tail->next = o;
    else
        s->head = o;
    s->tail = o;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    return 0;
}

int cb_alert_store_put_instance(struct cb_alert_store *s, const struct cb_alert_row *r)
{
    struct op *o = op_new(ST_INSTANCE);
    if (!o)
        return -1;
    int bad = op_text(o, r->id);
    bad |= op_text(o, r->rule);
    bad |= op_text(o, r->labels ? r->labels : "{}");
    bad |= op_text(o, r->state);
    bad |= op_text(o, r->severity);
    op_int0(o, r->since);
    op_int(o, r->at);
    bad |= op_text(o, r->message);
    bad |= op_text(o, r->acked_by);
    op_int0(o, r->acked_at);
    bad |= op_text(o, r->ack_note);
    op_int0(o, r->cooldown_until);
    op_int(o, r->updated);
    op_int0(o, r->fired_at);
    op_int0(o, r->clear_since);
    op_int(o, r->stale);
    bad |= op_text(o, r->rule_key);
    bad |= op_text(o, r->titles);
    bad |= op_text(o, r->messages);
    return enqueue(s, o, bad);
}

int cb_alert_store_add_transition(struct cb_alert_store *s, int64_t seq, const char *alert_id,
                                  const char *rule, const char *state, const char *severity,
                                  int64_t at, const char *json)
{
    struct op *o = op_new(ST_TRANSITION);
    if (!o)
        return -1;
    op_int(o, seq);
    int bad = op_text(o, alert_id);
    bad |= op_text(o, rule);
    bad |= op_text(o, state);
    bad |= op_text(o, severity);
    op_int(o, at);
    bad |= op_text(o, json);
    return enqueue(s, o, bad);
}

int cb_alert_store_add_silence(struct cb_alert_store *s, const struct cb_silence_row *r)
{
    struct op *o = op_new(ST_SILENCE_ADD);
    if (!o)
        return -1;
    op_int(o, r->id);
    int bad = op_text(o, r->matchers);
    op_int(o, r->starts);
    op_int(o, r->ends);
    bad |= op_text(o, r->comment);
    bad |= op_text(o, r->created_by);
    op_int(o, r->created_at);
    return enqueue(s, o, bad);
}

int cb_alert_store_expire_silence(struct cb_alert_store *s, const struct cb_silence_row *r)
{
    struct op *o = op_new(ST_SILENCE_EXPIRE);
    if (!o)
        return -1;
    op_int(o, r->id);
    op_int(o, r->starts);
    op_int(o, r->ends);
    op_int0(o, r->expired_at);
    int bad = op_text(o, r->expired_by);
    return enqueue(s, o, bad);
}

int cb_alert_store_add_audit(struct cb_alert_store *s, const struct cb_audit_row *r)
{
    struct op *o = op_new(ST_AUDIT_ADD);
    if (!o)
        return -1;
    op_int(o, r->seq);
    op_int(o, r->at);
    int bad = op_text(o, r->who);
    bad |= op_text(o, r->action);
    bad |= op_text(o, r->target);
    bad |= op_text(o, r->note);
    bad |= op_text(o, r->details);
    return enqueue(s, o, bad);
}

int cb_alert_store_add_outbox(struct cb_alert_store *s, const struct cb_outbox_row *r)
{
    struct op *o = op_new(ST_OUTBOX_ADD);
    if (!o)
        return -1;
    op_int(o, r->seq);
    int bad = op_text(o, r->channel);
    op_int0(o, r->transition_seq);
    bad |= op_text(o, r->alert_id);
    bad |= op_text(o, r->content_type);
    bad |= op_text(o, r->body);
    op_int(o, r->attempts);
    op_int(o, r->next_attempt);
    return enqueue(s, o, bad);
}

int cb_alert_store_outbox_attempt(struct cb_alert_store *s, int64_t seq, int64_t attempts,
                                  int64_t next_attempt, int64_t delivered_at,
                                  const char *last_error)
{
    struct op *o = op_new(ST_OUTBOX_ATTEMPT);
    if (!o)
        return -1;
    op_int(o, seq);
    op_int(o, attempts);
    op_int(o, next_attempt);
    op_int0(o, delivered_at);
    int bad = op_text(o, last_error);
    return enqueue(s, o, bad);
}

int cb_alert_store_put_cap_ref(struct cb_alert_store *s, const char *notification,
                               const char *ref)
{
    struct op *o = op_new(ref ? ST_CAP_REF_PUT : ST_CAP_REF_DEL);
    if (!o)
        return -1;
    int bad = op_text(o, notification);
    if (ref)
        bad |= op_text(o, ref);
    return enqueue(s, o, bad);
}

/* ---- reads ---- */

struct cb_alert_reader *cb_alert_store_reader(struct cb_alert_store *s) { return &s->reader; }

struct cb_alert_reader *cb_alert_reader_open(const char *path, char *err, size_t errlen)
{
    struct cb_alert_reader *r = calloc(1, sizeof *r);
    if (!r) {
        storage__set_err(err, errlen, "out of memory");
        return NULL;
    }
    r->db = open_readonly(path, err, errlen);
    if (!r->db) {
        free(r);
        return NULL;
    }
    return r;
}

void cb_alert_reader_close(struct cb_alert_reader *r)
{
    if (!r)
        return;
    sqlite3_close(r->db);
    free(r);
}

const char *cb_alert_reader_error(struct cb_alert_reader *r) { return r->err; }

static int prep(struct cb_alert_reader *r, const char *sql, sqlite3_stmt **st)
{
    if (sqlite3_prepare_v2(r->db, sql, -1, st, NULL) != SQLITE_OK) {
        snprintf(r->err, sizeof r->err, "%s", sqlite3_errmsg(r->db));
        return -1;
    }
    return 0;
}

static const char *col_text(sqlite3_stmt *st, int i)
{
    return (const char *)sqlite3_column_text(st, i);
}

/* Steps st to the end calling row(ctx) for each row; row returns non-zero to
 * stop. Finalizes st. Returns 0 or -1. */
static int step_all(struct cb_alert_reader *r, sqlite3_stmt *st,
                    int (*row)(sqlite3_stmt *, void *), void *ctx)
{
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        if (row(st, ctx))
            break;
    int ok = rc == SQLITE_ROW || rc == SQLITE_DONE;
    if (!ok)
        snprintf(r->err, sizeof r->err, "%s", sqlite3_errmsg(r->db));
    sqlite3_finalize(st);
    return ok ? 0 : -1;
}

struct inst_ctx {
    cb_alert_row_fn fn;
    void *ctx;
};

static int inst_row(sqlite3_stmt *st, void *arg)
{
    struct inst_ctx *c = arg;
    struct cb_alert_row a = {
        .id = col_text(st, 0), .rule = col_text(st, 1), .labels = col_text(st, 2),
        .state = col_text(st, 3), .severity = col_text(st, 4),
        .since = sqlite3_column_int64(st, 5), .at = sqlite3_column_int64(st, 6),
        .message = col_text(st, 7), .acked_by = col_text(st, 8),
        .acked_at = sqlite3_column_int64(st, 9), .ack_note = col_text(st, 10),
        .cooldown_until = sqlite3_column_int64(st, 11), .updated = sqlite3_column_int64(st, 12),
        .fired_at = sqlite3_column_int64(st, 13), .clear_since = sqlite3_column_int64(st, 14),
        .stale = sqlite3_column_int(st, 15), .rule_key = col_text(st, 16),
        .titles = col_text(st, 17), .messages = col_text(st, 18),
    };
    return c->fn(c->ctx, &a);
}

int cb_alert_reader_instances(struct cb_alert_reader *r, const struct cb_alert_filter *f,
                              cb_alert_row_fn fn, void *ctx)
{
    static const char sql[] =
        "SELECT id,rule,labels,state,severity,since,at,message,acked_by,acked_at,ack_note,"
        "cooldown_until,updated,fired_at,clear_since,stale,rule_key,titles,messages"
        " FROM alert_instances"
        " WHERE (?1 IS NULL OR state=?1) AND"
        " (?2 IS NULL OR severity=?2) AND (?3 IS NULL OR rule=?3) AND"
        " (?4=0 OR acked_by IS NULL) AND (?5=0 OR since<=?5) ORDER BY rule,id LIMIT ?6";
    sqlite3_stmt *st = NULL;
    if (prep(r, sql, &st))
        return -1;
    struct cb_alert_filter none = {0};
    if (!f)
        f = &none;
    if (f->state)
        sqlite3_bind_text(st, 1, f->state, -1, SQLITE_STATIC);
    if (f->severity)
        sqlite3_bind_text(st, 2, f->severity, -1, SQLITE_STATIC);
    if (f->rule)
        sqlite3_bind_text(st, 3, f->rule, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 4, f->unacked_only);
    sqlite3_bind_int64(st, 5, f->since_before);
    sqlite3_bind_int64(st, 6, f->limit ? (int64_t)f->limit : 10000);
    struct inst_ctx c = {fn, ctx};
    return step_all(r, st, inst_row, &c);
}

struct hist_ctx {
    struct cb_strbuf *out;
    int first;
};

static int hist_row(sqlite3_stmt *st, void *arg)
{
    struct hist_ctx *c = arg;
    if (!c->first)
        cb_strbuf_putc(c->out, ',');
    c->first = 0;
    cb_strbuf_append(c->out, (const char *)sqlite3_column_text(st, 0),
                     (size_t)sqlite3_column_bytes(st, 0));
    return 0;
}

int cb_alert_reader_history_json(struct cb_alert_reader *r, int64_t from, int64_t to,
                                 size_t limit, struct cb_strbuf *out)
{
    sqlite3_stmt *st = NULL;
    if (prep(r, "SELECT json FROM alert_transitions WHERE at>=?1 AND at<?2 ORDER BY seq LIMIT ?3",
             &st))
        return -1;
    sqlite3_bind_int64(st, 1, from);
    sqlite3_bind_int64(st, 2, to);
    sqlite3_bind_int64(st, 3, limit ? (int64_t)limit : 10000);
    struct hist_ctx c = {out, 1};
    cb_strbuf_putc(out, '[');
    int rc = step_all(r, st, hist_row, &c);
    cb_strbuf_putc(out, ']');
    return rc;
}

struct ev_ctx {
    cb_alert_event_fn fn;
    void *ctx;
};

static int ev_row(sqlite3_stmt *st, void *arg)
{
    struct ev_ctx *c = arg;
    return c->fn(c->ctx, (uint64_t)sqlite3_column_int64(st, 0), col_text(st, 1),
                 (size_t)sqlite3_column_bytes(st, 1));
}

int cb_alert_reader_transitions(struct cb_alert_reader *r, int64_t from, int64_t to,
                                const char *rule, int newest_first, size_t limit,
                                cb_alert_event_fn fn, void *ctx)
{
    sqlite3_stmt *st = NULL;
    if (prep(r, newest_first
                    ? "SELECT seq,json FROM alert_transitions WHERE at>=?1 AND at<?2 AND"
                      " (?3 IS NULL OR rule=?3) ORDER BY seq DESC LIMIT ?4"
                    : "SELECT seq,json FROM alert_transitions WHERE at>=?1 AND at<?2 AND"
                      " (?3 IS NULL OR rule=?3) ORDER BY seq LIMIT ?4",
             &st))
        return -1;
    sqlite3_bind_int64(st, 1, from);
    sqlite3_bind_int64(st, 2, to);
    if (rule)
        sqlite3_bind_text(st, 3, rule, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, limit ? (int64_t)limit : 10000);
    struct ev_ctx c = {fn, ctx};
    return step_all(r, st, ev_row, &c);
}

struct sil_ctx {
    cb_silence_row_fn fn;
    void *ctx;
};

static int sil_row(sqlite3_stmt *st, void *arg)
{
    struct sil_ctx *c = arg;
    struct cb_silence_row s = {
        .id = sqlite3_column_int64(st, 0), .matchers = col_text(st, 1),
        .starts = sqlite3_column_int64(st, 2), .ends = sqlite3_column_int64(st, 3),
        .comment = col_text(st, 4), .created_by = col_text(st, 5),
        .created_at = sqlite3_column_int64(st, 6), .expired_at = sqlite3_column_int64(st, 7),
        .expired_by = col_text(st, 8),
    };
    return c->fn(c->ctx, &s);
}

int cb_alert_reader_silences(struct cb_alert_reader *r, int64_t after, cb_silence_row_fn fn,
                             void *ctx)
{
    sqlite3_stmt *st = NULL;
    if (prep(r, "SELECT id,matchers,starts,ends,comment,created_by,created_at,expired_at,"
                "expired_by FROM silences WHERE ends>?1 ORDER BY id", &st))
        return -1;
    sqlite3_bind_int64(st, 1, after);
    struct sil_ctx c = {fn, ctx};
    return step_all(r, st, sil_row, &c);
}

struct audit_ctx {
    cb_audit_row_fn fn;
    void *ctx;
};

static int audit_row(sqlite3_stmt *st, void *arg)
{
    struct audit_ctx *c = arg;
    struct cb_audit_row a = {
        .seq = sqlite3_column_int64(st, 0), .at = sqlite3_column_int64(st, 1),
        .who = col_text(st, 2), .action = col_text(st, 3), .target = col_text(st, 4),
        .note = col_text(st, 5), .details = col_text(st, 6),
    };
    return c->fn(c->ctx, &a);
}

int cb_alert_reader_audit(struct cb_alert_reader *r, int64_t from, int64_t to,
                          const char *action, size_t limit, cb_audit_row_fn fn, void *ctx)
{
    sqlite3_stmt *st = NULL;
    if (prep(r, "SELECT seq,at,who,action,target,note,details FROM audit_log WHERE at>=?1 AND"
                " at<?2 AND (?3 IS NULL OR action=?3) ORDER BY at DESC, seq DESC LIMIT ?4",
             &st))
        return -1;
    sqlite3_bind_int64(st, 1, from);
    sqlite3_bind_int64(st, 2, to);
    if (action)
        sqlite3_bind_text(st, 3, action, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, limit ? (int64_t)limit : 10000);
    struct audit_ctx c = {fn, ctx};
    return step_all(r, st, audit_row, &c);
}

struct ref_ctx {
    cb_cap_ref_fn fn;
    void *ctx;
};

static int ref_row(sqlite3_stmt *st, void *arg)
{
    struct ref_ctx *c = arg;
    return c->fn(c->ctx, col_text(st, 0), col_text(st, 1));
}

int cb_alert_reader_cap_refs(struct cb_alert_reader *r, cb_cap_ref_fn fn, void *ctx)
{
    sqlite3_stmt *st = NULL;
    if (prep(r, "SELECT notification,ref FROM cap_refs", &st))
        return -1;
    struct ref_ctx c = {fn, ctx};
    return step_all(r, st, ref_row, &c);
}

struct out_ctx {
    cb_outbox_row_fn fn;
    void *ctx;
};

static int out_row(sqlite3_stmt *st, void *arg)
{
    struct out_ctx *c = arg;
    struct cb_outbox_row o = {
        .seq = sqlite3_column_int64(st, 0), .channel = col_text(st, 1),
        .transition_seq = sqlite3_column_int64(st, 2), .alert_id = col_text(st, 3),
        .content_type = col_text(st, 4), .body = col_text(st, 5),
        .attempts = sqlite3_column_int64(st, 6), .next_attempt = sqlite3_column_int64(st, 7),
    };
    return c->fn(c->ctx, &o);
}

int cb_alert_reader_outbox(struct cb_alert_reader *r, cb_outbox_row_fn fn, void *ctx)
{
    sqlite3_stmt *st = NULL;
    if (prep(r, "SELECT seq,channel,transition_seq,alert_id,content_type,body,attempts,"
                "next_attempt FROM outbox WHERE delivered_at IS NULL ORDER BY seq", &st))
        return -1;
    struct out_ctx c = {fn, ctx};
    return step_all(r, st, out_row, &c);
}

int64_t cb_alert_reader_outbox_count(struct cb_alert_reader *r, int delivered)
{
    sqlite3_stmt *st = NULL;
    if (prep(r, delivered ? "SELECT count(*) FROM outbox WHERE delivered_at IS NOT NULL"
                          : "SELECT count(*) FROM outbox WHERE delivered_at IS NULL", &st))
        return -1;
    int64_t n = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
    sqlite3_finalize(st);
    return n;
}

struct after_ctx {
    cb_alert_event_fn fn;
    void *ctx;
};

static int after_row(sqlite3_stmt *st, void *arg)
{
    struct after_ctx *c = arg;
    return c->fn(c->ctx, (uint64_t)sqlite3_column_int64(st, 0),
                 (const char *)sqlite3_column_text(st, 1), (size_t)sqlite3_column_bytes(st, 1));
}

int cb_alert_reader_events_after(struct cb_alert_reader *r, uint64_t after_seq, size_t limit,
                                 cb_alert_event_fn fn, void *ctx)
{
    sqlite3_stmt *st = NULL;
    if (prep(r, "SELECT seq,json FROM alert_transitions WHERE seq>?1 ORDER BY seq LIMIT ?2", &st))
        return -1;
    sqlite3_bind_int64(st, 1, (int64_t)after_seq);
    sqlite3_bind_int64(st, 2, limit ? (int64_t)limit : 10000);
    struct after_ctx c = {fn, ctx};
    return step_all(r, st, after_row, &c);
}
