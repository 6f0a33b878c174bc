/* The rule commands: check (compile and report), replay (rules over recorded
 * telemetry with event-time semantics) and test (rule test files).
 *
 * Replay and test share one driver: a manual clock that is the largest event
 * time seen, a tick for every whole second crossed on the way to a message's
 * time, and the engine's transitions collected or printed as JSON lines. */
#include "cmd/commands.h"
#include "cmd/restore.h"
#include "cmd/validate.h"
#include "alerts/alerts.h"
#include "base/config.h"
#include "base/log.h"
#include "base/strbuf.h"
#include "ingest/ingest.h"
#include "storage/storage.h"
#include "rules/rules.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <libgen.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

/* Samples offered to the engine in one call at most (a message may carry more). */
#define OFFER_BATCH 4096

/* ---- shared helpers ----------------------------------------------------------------- */

/* Parses a time: integer milliseconds, or RFC 3339. 0 or -1. */
static int parse_abs_time(const char *s, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (*s && !*end && !errno) {
        *out = v;
        return 0;
    }
    return cb_parse_rfc3339(s, strlen(s), out);
}

/* ---- the replay driver ----------------------------------------------------------------- */

struct driver {
    struct cb_engine *e;
    struct cb_decoder *dec;
    struct cb_clock clock;
    int64_t now;
    int started;
    /* output: either printed (replay) or collected (test) */
    FILE *out;
    struct cb_strbuf *collect; /* one line per event transition: "at state id severity message" */
    uint64_t bad_lines, late, future, quarantined, dropped;
    struct cb_store *store; /* replay --db: the samples are kept here too */
    /* replay --restart-at: the engine is stopped and started again at these
     * times, through the daemon's persistence (alert store, sample store) */
    const int64_t *restarts;
    size_t nrestarts, next_restart;
    const char *db;
    struct cb_ruleset *rs;
    struct cb_engine_options eo;
    struct cb_alerts *alerts;
    uv_loop_t loop;
    int loop_open;
    struct cb_sample keep[OFFER_BATCH];
    const char *qrules[OFFER_BATCH];
    enum cb_sample_verdict verdicts[OFFER_BATCH];
};

static void on_transition(void *ctx, const struct cb_transition *t)
{
    struct driver *d = ctx;
    if (d->alerts)
        cb_alerts_on_transition(d->alerts, t); /* persisted as `run` persists it */
    if (!cb_transition_is_event(t))
        return;
    if (d->out) {
        struct cb_strbuf b;
        cb_strbuf_init(&b);
        cb_transition_to_json(t, &b);
        cb_strbuf_putc(&b, '\n');
        fwrite(b.data, 1, b.len, d->out);
        cb_strbuf_free(&b);
    }
    if (d->collect) {
        cb_strbuf_printf(d->collect, "%" PRId64 "\t%s\t%s\t%s\t%s\n", t->at,
                         cb_alert_state_name(t->state), t->id, cb_severity_name(t->severity),
                         t->message ? t->message : "");
    }
}

/* Longest run of ticks one jump of the clock may cause: a sample far ahead
 * (a bad clock) must not stall the replay. */
#define MAX_TICKS (2 * 86400)

/* Moves the clock forward to ts, ticking at every whole second in (now, ts]. */
static void advance_ticks(struct driver *d, int64_t ts)
{
    if (!d->started) {
        d->started = 1;
        d->now = ts;
        return;
    }
    if (ts <= d->now)
        return;
    int64_t first = (d->now / 1000 + 1) * 1000;
    if (d->now < 0 && d->now % 1000)
        first = d->now / 1000 * 1000;
    if ((ts - first) / 1000 > MAX_TICKS)
        first = (ts / 1000 - MAX_TICKS) * 1000;
    for (int64_t s = first; s <= ts; s += 1000) {
        d->now = s;
        cb_engine_tick(d->e);
    }
    d->now = ts;
}

static int restart(struct driver *d);

/* advance_ticks, stopping and starting the engine at each --restart-at time
 * on the way (after that second's tick, as a daemon stopped then). A restart
 * that fails ends the replay (exit 1): its output would prove nothing. */
static void advance(struct driver *d, int64_t ts)
{
    while (d->next_restart < d->nrestarts && d->restarts[d->next_restart] <= ts) {
        int64_t at = d->restarts[d->next_restart++];
        if (!d->started || at < d->now)
            continue; /* before the telemetry, or behind the clock: nothing to stop */
        advance_ticks(d, at);
        if (restart(d) < 0) {
            fprintf(stderr, "citybrain replay: the restart at %" PRId64 " failed\n", at);
            exit(1);
        }
    }
    advance_ticks(d, ts);
}

static int driver_init(struct driver *d, struct cb_ruleset *rs, int64_t lateness, int64_t skew)
{
    struct cb_config cfg;
    struct cb_decode_limits lim;
    memset(d, 0, sizeof *d);
    if (cb_config_defaults(&cfg) < 0)
        return -1;
    cb_decode_limits_from_config(&lim, &cfg);
    d->eo = (struct cb_engine_options){.max_skew_ms = skew,
                                       .lateness_ms = lateness,
                                       .stale_after_ms = cfg.sensors_stale_after_ms};
    cb_config_free(&cfg);
    d->clock.now = cb_clock_manual_now;
    d->clock.ctx = &d->now;
    d->rs = rs;
    d->dec = cb_decoder_new(&lim);
    d->e = d->dec ? cb_engine_new(rs, &d->clock, &d->eo, on_transition, d) : NULL;
    if (!d->e) {
        cb_decoder_free(d->dec);
        return -1;
    }
    return 0;
}

static void alerts_closed(void *ctx)
{
    *(int *)ctx = 1;
}

/* Closes the alerts module as the daemon does on stop (its store committed),
 * running the loop until it has. */
static void close_alerts(struct driver *d)
{
    if (!d->alerts)
        return;
    int done = 0;
    cb_alerts_close(d->alerts, alerts_closed, &done);
    while (!done && uv_run(&d->loop, UV_RUN_ONCE))
        ;
    d->alerts = NULL;
}

/* Opens the alerts module on d->db with the default configuration, its
 * clock the replay's. 0, or -1 (reported). */
static int open_alerts(struct driver *d)
{
    struct cb_config cfg;
    char err[256];
    if (!d->loop_open) {
        if (uv_loop_init(&d->loop))
            return -1;
        d->loop_open = 1;
    }
    if (cb_config_defaults(&cfg) < 0)
        return -1;
    struct cb_alerts_hooks hooks = {.clock = &d->clock};
    d->alerts = cb_alerts_new(&d->loop, &cfg, d->db, &hooks, err, sizeof err);
    cb_config_free(&cfg);
    if (!d->alerts)
        fprintf(stderr, "citybrain replay: %s: %s\n", d->db, err);
    return d->alerts ? 0 : -1;
}

static int open_replay_store(struct driver *d, const char *path);

/* A stop and a start of the engine at d->now, through the daemon's own path:
 * the store flushed and closed, the alerts module closed, the engine freed;
 * then everything opened again, the stored instances restored and the
 * windows and latest values rebuilt from the store (cmd/restore.c). */
static int restart(struct driver *d)
{
    char err[256];
    cb_store_flush(d->store);
    cb_store_close(d->store);
    d->store = NULL;
    close_alerts(d);
    cb_engine_free(d->e);
    d->e = cb_engine_new(d->rs, &d->clock, &d->eo, on_transition, d);
    if (!d->e || open_replay_store(d, d->db) < 0 || open_alerts(d) < 0)
        return -1;
    if (cmd__restore_instances(d->e, d->alerts) < 0)
        return -1;
    if (cmd__prime_engine(d->e, d->db, d->now, d->eo.lateness_ms, err, sizeof err) < 0) {
        fprintf(stderr, "citybrain replay: %s\n", err);
        return -1;
    }
    return 0;
}

static void driver_free(struct driver *d)
{
    close_alerts(d);
    if (d->loop_open) {
        uv_run(&d->loop, UV_RUN_DEFAULT);
        uv_loop_close(&d->loop);
    }
    cb_engine_free(d->e);
    cb_decoder_free(d->dec);
}

/* Decodes one message and offers its samples in runs of equal event time
 * (document order), advancing the clock to each run's time first: rules.md,
 * "the clock advances to each sample's ts", so a SenML pack that spans
 * minutes is evaluated and ticked along the way, not once at its last time.
 * A run behind the clock is offered at the clock (out of order, or late).
 * arrival: CB_DECODE_NO_ARRIVAL or the time for samples without one.
 * Returns CB_REJECT_NONE, or why the payload was refused. */
static enum cb_reject offer_message(struct driver *d, const char *topic, const void *payload,
                                    size_t len, int64_t arrival)
{
    struct cb_decoded dec;
    enum cb_reject r = cb_decode(d->dec, topic, payload, len, arrival, &dec);
    if (r != CB_REJECT_NONE)
        return r;
    for (size_t off = 0, n; off < dec.n; off += n) {
        int64_t ts = dec.samples[off].ts_ms;
        for (n = 1; off + n < dec.n && n < OFFER_BATCH && dec.samples[off + n].ts_ms == ts; n++)
            ;
        advance(d, ts);
        if (cb_engine_offer(d->e, topic, dec.device, dec.samples + off, n, d->verdicts,
                            d->qrules) < 0)
            return CB_REJECT_MALFORMED;
        size_t k = 0;
        for (size_t i = 0; i < n; i++) {
            d->late += d->verdicts[i] == CB_SAMPLE_LATE;
            d->future += d->verdicts[i] == CB_SAMPLE_FUTURE;
            d->quarantined += d->verdicts[i] == CB_SAMPLE_QUARANTINED;
            if (!d->store)
                continue;
            /* As `run` stores them: accepted and late samples, quarantine apart. */
            if (d->verdicts[i] == CB_SAMPLE_ACCEPTED || d->verdicts[i] == CB_SAMPLE_LATE) {
                d->keep[k++] = dec.samples[off + i];
            } else if (d->verdicts[i] == CB_SAMPLE_QUARANTINED) {
                char reason[160];
                snprintf(reason, sizeof reason, "invalid_range:%s",
                         d->qrules[i] ? d->qrules[i] : "?");
                cb_store_quarantine(d->store, topic, &dec.samples[off + i], reason, 0);
            }
        }
        if (k && cb_store_append(d->store, topic, dec.device, d->keep, k, 0) < 0)
            d->dropped += k;
    }
    return CB_REJECT_NONE;
}

/* Handles one replay JSON line. Returns 0, or -1 with a reason in err. */
static int replay_line(struct driver *d, const char *line, size_t len, char *err, size_t errlen)
{
    cJSON *j = cJSON_ParseWithLength(line, len);
    int rc = -1;
    char *printed = NULL;
    if (!j || !cJSON_IsObject(j)) {
        snprintf(err, errlen, "not a JSON object");
        goto out;
    }
    cJSON *topic = cJSON_GetObjectItemCaseSensitive(j, "topic");
    cJSON *payload = cJSON_GetObjectItemCaseSensitive(j, "payload");
    cJSON *ts = cJSON_GetObjectItemCaseSensitive(j, "ts");
    if (!cJSON_IsString(topic) || !topic->valuestring[0]) {
        snprintf(err, errlen, "missing \"topic\" string");
        goto out;
    }
    if (!payload) {
        snprintf(err, errlen, "missing \"payload\"");
        goto out;
    }
    int64_t arrival = CB_DECODE_NO_ARRIVAL;
    if (ts) {
        if (!cJSON_IsNumber(ts) || !isfinite(ts->valuedouble) || fabs(ts->valuedouble) > 9e15) {
            snprintf(err, errlen, "\"ts\" must be milliseconds since the epoch");
            goto out;
        }
        arrival = (int64_t)ts->valuedouble;
    }
    const char *bytes;
    size_t n;
    if (cJSON_IsString(payload)) {
        bytes = payload->valuestring;
        n = strlen(bytes);
    } else {
        printed = cJSON_PrintUnformatted(payload);
        if (!printed) {
            snprintf(err, errlen, "out of memory");
            goto out;
        }
        bytes = printed;
        n = strlen(printed);
    }
    enum cb_reject r = offer_message(d, topic->valuestring, bytes, n, arrival);
    if (r != CB_REJECT_NONE) {
        snprintf(err, errlen, "payload rejected: %s", cb_reject_name(r));
        goto out;
    }
    rc = 0;
out:
    free(printed);
    cJSON_Delete(j);
    return rc;
}

/* Reads lines of any length from f into *buf. Returns the length, or -1 at EOF. */
static long read_line(FILE *f, char **buf, size_t *cap)
{
    ssize_t n = getline(buf, cap, f);
    if (n < 0)
        return -1;
    while (n > 0 && ((*buf)[n - 1] == '\n' || (*buf)[n - 1] == '\r'))
        (*buf)[--n] = 0;
    return (long)n;
}

/* Replays a JSON Lines stream. Bad lines go to stderr as "name:line: why". */
static void replay_stream(struct driver *d, FILE *in, const char *name)
{
    char *line = NULL;
    size_t cap = 0;
    long n;
    unsigned long lineno = 0;
    char err[256];
    while ((n = read_line(in, &line, &cap)) >= 0) {
        lineno++;
        size_t i = 0;
        while (i < (size_t)n && (line[i] == ' ' || line[i] == '\t'))
            i++;
        if (i == (size_t)n)
            continue;
        if (replay_line(d, line, (size_t)n, err, sizeof err) < 0) {
            d->bad_lines++;
            fprintf(stderr, "%s:%lu: %s (line skipped)\n", name, lineno, err);
        }
    }
    free(line);
}

/* ---- citybrain check ----------------------------------------------------------------- */

static const char check_usage[] =
    "usage: citybrain check [--config FILE] [--format text|json] PATH...\n";

/* Loads what check validates against: the defaults, FILE over them when
 * given, the environment; then the whole-config checks run does. 0, or 1
 * after printing the problem. */
static int check_config(const char *path, struct cb_config *cfg)
{
    struct cb_config_error err;
    if (cb_config_defaults(cfg)) {
        fprintf(stderr, "citybrain check: out of memory\n");
        return 1;
    }
    if ((path && cb_config_load_file(cfg, path, &err)) || cb_config_apply_env(cfg) ||
        cb_config_validate(cfg, &err)) {
        fprintf(stderr, "citybrain check: %s\n", err.text);
        return 1;
    }
    return 0;
}

int cb_cmd_check(int argc, char **argv)
{
    const char **paths = calloc((size_t)argc + 1, sizeof *paths);
    const char *config = NULL;
    size_t n = 0;
    int json = 0, rc = 2;
    struct cb_config cfg;
    int have_cfg = 0;
    if (!paths)
        return 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("%s"
                   "  compiles rule files (a directory: every *.rules in it) and reports every\n"
                   "  error on stderr; exit 0 when clean, 1 on errors, 2 on usage errors.\n"
                   "  Validates as run does: every notify name must be a channel of the\n"
                   "  configuration FILE (alerts.channel, and the built-in log); without\n"
                   "  --config, of the built-in defaults (log, ops, cap).\n",
                   check_usage);
            rc = 0;
            goto out;
        }
        if (!strcmp(argv[i], "--config") && i + 1 < argc) {
            config = argv[++i];
        } else if (!strcmp(argv[i], "--format") && i + 1 < argc) {
            const char *f = argv[++i];
            if (strcmp(f, "text") && strcmp(f, "json")) {
                fprintf(stderr, "citybrain check: --format must be text or json\n");
                goto out;
            }
            json = !strcmp(f, "json");
        } else if (!strncmp(argv[i], "--format=", 9)) {
            json = !strcmp(argv[i] + 9, "json");
            if (!json && strcmp(argv[i] + 9, "text")) {
                fprintf(stderr, "citybrain check: --format must be text or json\n");
                goto out;
            }
        } else if (argv[i][0] == '-' && argv[i][1]) {
            fprintf(stderr, "citybrain check: unknown option '%s'\n", argv[i]);
            goto out;
        } else {
            paths[n++] = argv[i];
        }
    }
    if (!n) {
        fputs(check_usage, stderr);
        goto out;
    }
    have_cfg = 1;
    if ((rc = check_config(config, &cfg)))
        goto out;
    struct cb_diags d = {0};
    struct cb_ruleset *rs = NULL;
    rc = (int)cmd__validate(&cfg, paths, n, 0, &d, &rs);
    cmd__print_diags(&d, json);
    if (rs)
        printf("ok: %zu rule(s) in %zu file(s)\n", cb_ruleset_count(rs), cb_ruleset_file_count(rs));
    else if (!json)
        fprintf(stderr, "%zu error(s)\n", d.errors);
    cb_ruleset_release(rs);
    cb_diags_free(&d);
out:
    if (have_cfg)
        cb_config_free(&cfg);
    free(paths);
    return rc;
}

/* ---- citybrain replay ----------------------------------------------------------------- */

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Parses "T1,T2,..." (each as --until takes it) into a sorted array the
 * caller frees. 0, or -1 on a bad time or OOM. */
static int parse_time_list(const char *v, int64_t **out, size_t *n)
{
    char *copy = strdup(v), *save = NULL;
    int64_t *a = calloc(strlen(v) / 2 + 2, sizeof *a);
    size_t k = 0;
    int rc = copy && a ? 0 : -1;
    for (char *t = copy ? strtok_r(copy, ",", &save) : NULL; t && !rc;
         t = strtok_r(NULL, ",", &save))
        if (parse_abs_time(t, &a[k++]) < 0)
            rc = -1;
    free(copy);
    if (rc || !k) {
        free(a);
        return -1;
    }
    qsort(a, k, sizeof *a, cmp_i64);
    free(*out);
    *out = a;
    *n = k;
    return 0;
}

/* Removes a temporary replay database and its folder. */
static void remove_db_files(const char *dir, const char *db)
{
    static const char *const suffix[] = {"", "-wal", "-shm", "-journal"};
    char path[96];
    for (size_t i = 0; i < sizeof suffix / sizeof *suffix; i++) {
        snprintf(path, sizeof path, "%s%s", db, suffix[i]);
        unlink(path);
    }
    rmdir(dir);
}

static int parse_duration_arg(const char *cmd, const char *opt, const char *v, int64_t *out)
{
    if (cb_parse_duration_ms(v, out) < 0) {
        fprintf(stderr, "citybrain %s: %s: bad duration '%s'\n", cmd, opt, v);
        return -1;
    }
    return 0;
}

/* replay --db: a store with the default options at `path`. Returns 0 or -1
 * (reported). */
static int open_replay_store(struct driver *d, const char *path)
{
    struct cb_config cfg;
    char err[256];
    if (cb_config_defaults(&cfg) < 0)
        return -1;
    free(cfg.storage_db);
    cfg.storage_db = strdup(path);
    d->store = cfg.storage_db ? cb_store_open(&cfg, NULL, err, sizeof err) : NULL;
    if (!d->store)
        fprintf(stderr, "citybrain replay: %s: %s\n", path, cfg.storage_db ? err : "out of memory");
    cb_config_free(&cfg);
    return d->store ? 0 : -1;
}

/* Commits what replay stored and closes. Returns the exit code: 0, or 1 when
 * rows could not be stored. */
static int close_replay_store(struct driver *d)
{
    if (!d->store)
        return 0;
    struct cb_store_stats st;
    cb_store_flush(d->store);
    cb_store_get_stats(d->store, &st);
    cb_store_close(d->store);
    d->store = NULL;
    if (st.health != CB_STORE_OK || d->dropped) {
        fprintf(stderr, "citybrain replay: storing the samples failed: %s (%llu dropped)\n",
                st.last_error[0] ? st.last_error : "unknown error",
                (unsigned long long)(st.rows_dropped + st.rows_lost));
        return 1;
    }
    return 0;
}

int cb_cmd_replay(int argc, char **argv)
{
    const char **rules = calloc((size_t)argc + 1, sizeof *rules);
    size_t nrules = 0;
    const char *input = NULL;
    int64_t until = 0, lateness = 300000, skew = 60000;
    int has_until = 0, rc = 2;
    const char *db = NULL;
    int64_t *restarts = NULL;
    size_t nrestarts = 0;
    char tmpdir[] = "/tmp/citybrain-replay-XXXXXX", tmpdb[64] = "";
    if (!rules)
        return 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            printf("usage: citybrain replay --rules PATH [--rules PATH...] [--input FILE] [--until TS]\n"
                   "                        [--db PATH] [--lateness D] [--max-skew D]\n"
                   "  runs the rules over JSON Lines telemetry (default: stdin) with event time;\n"
                   "  prints each alert transition as one JSON line. TS: ms since the epoch or\n"
                   "  RFC 3339. Bad input lines are reported on stderr and skipped.\n"
                   "  --db PATH also stores the samples (and quarantined ones) in that SQLite\n"
                   "  file, as `run` would, for `citybrain query` and the API.\n"
                   "  --restart-at T1,T2,... stops the engine at each time and starts it again\n"
                   "  through the daemon's own persistence (the store at --db, or a temporary\n"
                   "  one): the output is the same as without, or a restart changed a verdict.\n");
            free(rules);
            return 0;
        }
        if (!v) {
            fprintf(stderr, "citybrain replay: %s needs a value\n", a);
            goto out;
        }
        if (!strcmp(a, "--rules"))
            rules[nrules++] = v;
        else if (!strcmp(a, "--input"))
            input = v;
        else if (!strcmp(a, "--until")) {
            if (parse_abs_time(v, &until) < 0) {
                fprintf(stderr, "citybrain replay: --until: bad time '%s'\n", v);
                goto out;
            }
            has_until = 1;
        } else if (!strcmp(a, "--lateness")) {
            if (parse_duration_arg("replay", a, v, &lateness) < 0)
                goto out;
        } else if (!strcmp(a, "--max-skew")) {
            if (parse_duration_arg("replay", a, v, &skew) < 0)
                goto out;
        } else if (!strcmp(a, "--db")) {
            db = v;
        } else if (!strcmp(a, "--restart-at")) {
            if (parse_time_list(v, &restarts, &nrestarts) < 0) {
                fprintf(stderr, "citybrain replay: --restart-at: bad time list '%s' (T1,T2,...: ms "
                                "since the epoch or RFC 3339)\n", v);
                goto out;
            }
        } else {
            fprintf(stderr, "citybrain replay: unknown option '%s'\n", a);
            goto out;
        }
        i++;
    }
    if (!nrules) {
        fprintf(stderr, "usage: citybrain replay --rules PATH [--input FILE] [--until TS]\n");
        goto out;
    }
    struct cb_diags d = {0};
    struct cb_ruleset *rs = cb_ruleset_compile(rules, nrules, &d);
    cmd__print_diags(&d, 0);
    cb_diags_free(&d);
    if (!rs) {
        rc = 1;
        goto out;
    }
    FILE *in = stdin;
    if (input && strcmp(input, "-") && !(in = fopen(input, "r"))) {
        fprintf(stderr, "citybrain replay: %s: %s\n", input, strerror(errno));
        cb_ruleset_release(rs);
        rc = 1;
        goto out;
    }
    /* The alerts module persists what `run` persists; the notifications it
     * would send have no receiver here and are not worth a log line each. */
    if (nrestarts)
        cb_log_threshold = CB_LOG_ERROR;
    if (nrestarts && !db) {
        if (!mkdtemp(tmpdir)) {
            fprintf(stderr, "citybrain replay: %s: %s\n", tmpdir, strerror(errno));
            cb_ruleset_release(rs);
            rc = 1;
            goto out;
        }
        snprintf(tmpdb, sizeof tmpdb, "%s/replay.db", tmpdir);
        db = tmpdb;
    }
    struct driver drv;
    if (driver_init(&drv, rs, lateness, skew) < 0) {
        fprintf(stderr, "citybrain replay: out of memory\n");
        rc = 1;
    } else if ((db && open_replay_store(&drv, db) < 0) ||
               (nrestarts && ((drv.db = db), open_alerts(&drv) < 0))) {
        close_replay_store(&drv);
        driver_free(&drv);
        rc = 1;
    } else {
        drv.restarts = restarts;
        drv.nrestarts = nrestarts;
        drv.out = stdout;
        replay_stream(&drv, in, input ? input : "<stdin>");
        if (has_until)
            advance(&drv, until);
        rc = close_replay_store(&drv);
        driver_free(&drv);
    }
    if (in != stdin)
        fclose(in);
    cb_ruleset_release(rs);
    fflush(stdout);
    if (tmpdb[0])
        remove_db_files(tmpdir, tmpdb);
out:
    free(restarts);
    free(rules);
    return rc;
}

/* ---- citybrain test -------------------------------------------------------------------- */

/* A rule test file, line by line (see docs/rules.md, "Rule tests"):
 *   rules PATH | inline ... end | start TIME | send TIME TOPIC PAYLOAD |
 *   send FROM..TO every STEP TOPIC PAYLOAD | input FILE | ack TIME ID BY [NOTE] |
 *   until TIME | expect TIME STATE ID [severity=S] [message="..."] */

struct expect {
    int64_t at;
    char state[16];
    char *id;
    char severity[16];
    char *message; /* NULL: not checked */
    int line;
};

struct tfile {
    const char *path;
    char *dir;
    int64_t base;
    struct expect *ex;
    size_t nex, capex;
};

/* Relative time: a duration ("90s", "1h30m", "0"), optionally with '+', added
 * to base; or an absolute time (ms >= 1e11, or RFC 3339). */
static int parse_time(const struct tfile *tf, const char *s, int64_t *out)
{
    int64_t v;
    if (*s == '+')
        s++;
    if (!strcmp(s, "0")) {
        *out = tf->base;
        return 0;
    }
    if (cb_parse_duration_ms(s, &v) == 0) {
        *out = tf->base + v;
        return 0;
    }
    /* compound durations: 1h30m */
    int64_t total = 0;
    const char *p = s;
    while (*p) {
        char part[32];
        size_t k = 0;
        while (*p >= '0' && *p <= '9' && k < 20)
            part[k++] = *p++;
        while (*p && !(*p >= '0' && *p <= '9') && k < 30)
            part[k++] = *p++;
        part[k] = 0;
        if (cb_parse_duration_ms(part, &v) < 0)
            goto absolute;
        total += v;
    }
    *out = tf->base + total;
    return 0;
absolute:
    if (parse_abs_time(s, &v) == 0 && (v >= 100000000000LL || strchr(s, 'T'))) {
        *out = v;
        return 0;
    }
    return -1;
}

static void fmt_time(const struct tfile *tf, int64_t at, char *buf, size_t len)
{
    int64_t d = at - tf->base;
    if (d < 0) {
        snprintf(buf, len, "%" PRId64, at);
        return;
    }
    if (d == 0) {
        snprintf(buf, len, "0s");
        return;
    }
    size_t o = 0;
    int64_t h = d / 3600000, m = d / 60000 % 60, s = d / 1000 % 60, ms = d % 1000;
    buf[0] = 0;
    if (h)
        o += (size_t)snprintf(buf + o, len - o, "%" PRId64 "h", h);
    if (m && o < len)
        o += (size_t)snprintf(buf + o, len - o, "%" PRId64 "m", m);
    if (s && o < len)
        o += (size_t)snprintf(buf + o, len - o, "%" PRId64 "s", s);
    if (ms && o < len)
        snprintf(buf + o, len - o, "%" PRId64 "ms", ms);
}

/* Splits off the next blank-separated word of *s. */
static char *word(char **s)
{
    char *p = *s;
    while (*p == ' ' || *p == '\t')
        p++;
    if (!*p)
        return NULL;
    char *w = p;
    while (*p && *p != ' ' && *p != '\t')
        p++;
    if (*p)
        *p++ = 0;
    *s = p;
    return w;
}

static char *rest(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        s[--n] = 0;
    return s;
}

static char *join_path(const char *dir, const char *p)
{
    if (p[0] == '/')
        return strdup(p);
    size_t n = strlen(dir) + strlen(p) + 2;
    char *r = malloc(n);
    if (r)
        snprintf(r, n, "%s/%s", dir, p);
    return r;
}

/* Parses the `expect` arguments in s. 0, or -1 with err. */
static int parse_expect(struct tfile *tf, char *s, int line, char *err, size_t errlen)
{
    struct expect x;
    memset(&x, 0, sizeof x);
    x.line = line;
    char *t = word(&s), *st = word(&s), *id = word(&s);
    if (!t || !st || !id) {
        snprintf(err, errlen, "expect TIME STATE ID [severity=S] [message=\"...\"]");
        return -1;
    }
    if (parse_time(tf, t, &x.at) < 0) {
        snprintf(err, errlen, "bad time '%s'", t);
        return -1;
    }
    if (strcmp(st, "firing") && strcmp(st, "escalated") && strcmp(st, "resolved") &&
        strcmp(st, "acknowledged")) {
        snprintf(err, errlen, "state must be firing, escalated, resolved or acknowledged");
        return -1;
    }
    snprintf(x.state, sizeof x.state, "%s", st);
    for (;;) {
        while (*s == ' ' || *s == '\t')
            s++;
        if (!*s)
            break;
        if (!strncmp(s, "severity=", 9)) {
            char *v = word(&s) + 9;
            enum cb_severity sv;
            if (cb_severity_parse(v, &sv) < 0) {
                snprintf(err, errlen, "bad severity '%s'", v);
                return -1;
            }
            snprintf(x.severity, sizeof x.severity, "%s", v);
        } else if (!strncmp(s, "message=\"", 9)) {
            char *v = s + 9, *e = strrchr(v, '"');
            if (!e || e < v) {
                snprintf(err, errlen, "unterminated message=\"...\"");
                return -1;
            }
            *e = 0;
            free(x.message);
            x.message = strdup(v);
            s = e + 1;
        } else {
            snprintf(err, errlen, "unknown expectation '%s' (severity=S or message=\"...\")", s);
            free(x.message);
            return -1;
        }
    }
    x.id = strdup(id);
    if (!x.id || tf->nex == tf->capex) {
        size_t nc = tf->capex ? tf->capex * 2 : 16;
        struct expect *p = realloc(tf->ex, nc * sizeof *p);
        if (!p || !x.id) {
            free(x.id);
            free(x.message);
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        tf->ex = p;
        tf->capex = nc;
    }
    tf->ex[tf->nex++] = x;
    return 0;
}

/* One actual transition parsed back from the collected lines. */
struct actual {
    int64_t at;
    char *state, *id, *sev, *msg;
};

static size_t split_actual(char *buf, struct actual **out)
{
    size_t n = 0, cap = 0;
    struct actual *a = NULL;
    char *save = NULL;
    for (char *l = strtok_r(buf, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            struct actual *p = realloc(a, cap * sizeof *p);
            if (!p)
                break;
            a = p;
        }
        char *f[5] = {0};
        f[0] = l;
        for (int k = 1; k < 5 && f[k - 1]; k++) {
            char *tab = strchr(f[k - 1], '\t');
            if (tab) {
                *tab = 0;
                f[k] = tab + 1;
            }
        }
        a[n].at = strtoll(f[0], NULL, 10);
        a[n].state = f[1] ? f[1] : "";
        a[n].id = f[2] ? f[2] : "";
        a[n].sev = f[3] ? f[3] : "";
        a[n].msg = f[4] ? f[4] : "";
        n++;
    }
    *out = a;
    return n;
}

static int expect_matches(const struct expect *x, const struct actual *a)
{
    return x->at == a->at && !strcmp(x->state, a->state) && !strcmp(x->id, a->id) &&
           (!x->severity[0] || !strcmp(x->severity, a->sev)) &&
           (!x->message || !strcmp(x->message, a->msg));
}

static void print_actual(const struct tfile *tf, const struct actual *a, const char *mark)
{
    char tb[64];
    fmt_time(tf, a->at, tb, sizeof tb);
    printf("  %s %-8s %-12s %s severity=%s", mark, tb, a->state, a->id, a->sev);
    if (a->msg[0])
        printf(" message=\"%s\"", a->msg);
    printf("\n");
}

static void print_expect(const struct tfile *tf, const struct expect *x, const char *mark)
{
    char tb[64];
    fmt_time(tf, x->at, tb, sizeof tb);
    printf("  %s %-8s %-12s %s", mark, tb, x->state, x->id);
    if (x->severity[0])
        printf(" severity=%s", x->severity);
    if (x->message)
        printf(" message=\"%s\"", x->message);
    printf("   (line %d)\n", x->line);
}

enum { EV_INPUT, EV_SEND, EV_ACK, EV_UNTIL };

/* One timed step of a test: strings point into the command lines. */
struct event {
    int64_t at;
    size_t seq;
    int kind, line;
    char *a, *b, *c;
};

static int cmp_event(const void *x, const void *y)
{
    const struct event *a = x, *b = y;
    if (a->at != b->at)
        return a->at < b->at ? -1 : 1;
    return a->seq < b->seq ? -1 : a->seq > b->seq;
}

static int push_event(struct event **ev, size_t *n, size_t *cap, const struct event *x)
{
    if (*n == *cap) {
        size_t nc = *cap ? *cap * 2 : 64;
        struct event *p = realloc(*ev, nc * sizeof *p);
        if (!p)
            return -1;
        *ev = p;
        *cap = nc;
    }
    (*ev)[*n] = *x;
    (*ev)[*n].seq = *n;
    (*n)++;
    return 0;
}

/* Runs one test file. Returns 0 (pass), 1 (mismatch or error). */
static int run_test_file(const char *path)
{
    struct tfile tf;
    memset(&tf, 0, sizeof tf);
    tf.path = path;
    tf.base = 1700000000000LL;
    char *pcopy = strdup(path);
    tf.dir = pcopy ? strdup(dirname(pcopy)) : NULL;
    free(pcopy);
    FILE *f = fopen(path, "r");
    int rc = 1;
    char *line = NULL;
    size_t cap = 0;
    long n;
    int lineno = 0;
    char err[300];
    const char **rpaths = NULL;
    size_t nrp = 0;
    struct cb_strbuf inl, collected;
    int in_inline = 0, failed = 0;
    struct cb_ruleset *rs = NULL;
    struct driver drv;
    int drv_ok = 0;
    /* The commands run in order once the rules are known; the first pass
     * reads the rules and the expectations, the second runs the commands. */
    char **cmds = NULL;
    int *cmdline = NULL;
    size_t ncmds = 0, capcmds = 0;
    cb_strbuf_init(&inl);
    cb_strbuf_init(&collected);
    if (!f || !tf.dir) {
        fprintf(stderr, "%s: %s\n", path, strerror(errno));
        goto out;
    }
    while ((n = read_line(f, &line, &cap)) >= 0) {
        lineno++;
        if (in_inline) {
            if (!strcmp(rest(line), "end")) {
                in_inline = 0;
                continue;
            }
            cb_strbuf_puts(&inl, line);
            cb_strbuf_putc(&inl, '\n');
            continue;
        }
        char *s = rest(line);
        if (!*s || *s == '#')
            continue;
        char *cmd = word(&s);
        if (!strcmp(cmd, "inline")) {
            /* pad so diagnostics of inline rules carry the test file's line numbers */
            size_t have = 0;
            for (size_t i = 0; i < inl.len; i++)
                have += inl.data[i] == '\n';
            while ((int)have < lineno) {
                cb_strbuf_putc(&inl, '\n');
                have++;
            }
            in_inline = 1;
            continue;
        }
        if (!strcmp(cmd, "rules")) {
            char *p = word(&s);
            const char **np = realloc(rpaths, (nrp + 1) * sizeof *np);
            if (!p || !np) {
                fprintf(stderr, "%s:%d: rules PATH\n", path, lineno);
                free(np ? (void *)np : (void *)rpaths);
                rpaths = NULL;
                failed = 1;
                break;
            }
            rpaths = np;
            rpaths[nrp++] = join_path(tf.dir, p);
            continue;
        }
        if (!strcmp(cmd, "start")) {
            char *t = word(&s);
            if (!t || parse_abs_time(t, &tf.base) < 0) {
                fprintf(stderr, "%s:%d: start TIME (ms since the epoch or RFC 3339)\n", path, lineno);
                failed = 1;
            }
            continue;
        }
        if (!strcmp(cmd, "expect")) {
            if (parse_expect(&tf, s, lineno, err, sizeof err) < 0) {
                fprintf(stderr, "%s:%d: %s\n", path, lineno, err);
                failed = 1;
            }
            continue;
        }
        if (strcmp(cmd, "send") && strcmp(cmd, "ack") && strcmp(cmd, "until") &&
            strcmp(cmd, "input")) {
            fprintf(stderr, "%s:%d: unknown command '%s' (rules, inline, start, send, input, ack, until, expect)\n",
                    path, lineno, cmd);
            failed = 1;
            continue;
        }
        if (ncmds == capcmds) {
            capcmds = capcmds ? capcmds * 2 : 32;
            char **nc = realloc(cmds, capcmds * sizeof *nc);
            int *nl = realloc(cmdline, capcmds * sizeof *nl);
            if (nc)
                cmds = nc;
            if (nl)
                cmdline = nl;
            if (!nc || !nl) {
                failed = 1;
                break;
            }
        }
        size_t cl = strlen(cmd);
        char *full = malloc(cl + strlen(s) + 2);
        if (!full) {
            failed = 1;
            break;
        }
        sprintf(full, "%s %s", cmd, s);
        cmds[ncmds] = full;
        cmdline[ncmds++] = lineno;
    }
    if (in_inline) {
        fprintf(stderr, "%s:%d: 'inline' rules without 'end'\n", path, lineno);
        failed = 1;
    }
    if (failed)
        goto out;
    /* compile the rules: files and inline text together (one ruleset) */
    struct cb_diags d = {0};
    if (nrp)
        rs = cb_ruleset_compile(rpaths, nrp, &d);
    if (inl.len) {
        struct cb_diags d2 = {0};
        struct cb_ruleset *r2 = cb_ruleset_compile_source(path, inl.data, inl.len, &d2);
        if (rs && r2) {
            /* both: compile everything into one ruleset to catch duplicates */
            cb_ruleset_release(rs);
            cb_ruleset_release(r2);
            rs = NULL;
            fprintf(stderr, "%s: use either 'rules PATH' or 'inline' rules, not both\n", path);
            failed = 1;
        } else if (r2) {
            rs = r2;
        }
        cmd__print_diags(&d2, 0);
        if (d2.errors)
            failed = 1;
        cb_diags_free(&d2);
    }
    cmd__print_diags(&d, 0);
    if (d.errors)
        failed = 1;
    cb_diags_free(&d);
    if (!rs) {
        if (!failed)
            fprintf(stderr, "%s: no rules (add 'rules PATH' or an 'inline' block)\n", path);
        failed = 1;
        goto out;
    }
    if (driver_init(&drv, rs, 300000, 60000) < 0) {
        failed = 1;
        goto out;
    }
    drv_ok = 1;
    drv.collect = &collected;
    /* The telemetry is a set of timed events: expand the ranges, order
     * everything by time (file order among equal times), then run it. */
    struct event *ev = NULL;
    size_t nev = 0, capev = 0;
    for (size_t i = 0; i < ncmds && !failed; i++) {
        char *s = cmds[i];
        char *cmd = word(&s);
        int ln = cmdline[i];
        struct event x;
        memset(&x, 0, sizeof x);
        x.line = ln;
        x.seq = nev;
        if (!strcmp(cmd, "send")) {
            char *t = word(&s), *topic = word(&s);
            char *payload = topic ? rest(s) : NULL;
            int64_t from, to, step = 1;
            char *dots = t ? strstr(t, "..") : NULL;
            if (!t || !topic || !*payload) {
                fprintf(stderr, "%s:%d: send TIME TOPIC PAYLOAD\n", path, ln);
                failed = 1;
                break;
            }
            if (dots) {
                *dots = 0;
                char *st = !strcmp(topic, "every") ? word(&payload) : NULL;
                topic = st ? word(&payload) : NULL;
                if (!st || !topic || cb_parse_duration_ms(st, &step) < 0 || step <= 0) {
                    fprintf(stderr, "%s:%d: send FROM..TO every STEP TOPIC PAYLOAD\n", path, ln);
                    failed = 1;
                    break;
                }
                payload = rest(payload);
            }
            if (parse_time(&tf, t, &from) < 0 || (dots && parse_time(&tf, dots + 2, &to) < 0)) {
                fprintf(stderr, "%s:%d: bad time\n", path, ln);
                failed = 1;
                break;
            }
            if (!dots)
                to = from;
            if ((to - from) / step > 100000) {
                fprintf(stderr, "%s:%d: too many messages in one send\n", path, ln);
                failed = 1;
                break;
            }
            x.kind = EV_SEND;
            x.a = topic;
            x.b = payload;
            for (int64_t at = from; at <= to; at += step) {
                x.at = at;
                if (push_event(&ev, &nev, &capev, &x) < 0) {
                    failed = 1;
                    break;
                }
            }
        } else if (!strcmp(cmd, "input")) {
            x.kind = EV_INPUT;
            x.at = INT64_MIN; /* recorded telemetry carries its own times: replayed first */
            x.a = word(&s);
            if (!x.a) {
                fprintf(stderr, "%s:%d: input FILE\n", path, ln);
                failed = 1;
            } else if (push_event(&ev, &nev, &capev, &x) < 0) {
                failed = 1;
            }
        } else if (!strcmp(cmd, "ack")) {
            char *t = word(&s);
            x.kind = EV_ACK;
            x.a = word(&s);
            x.b = word(&s);
            x.c = x.b ? rest(s) : NULL;
            if (!t || !x.a || !x.b || parse_time(&tf, t, &x.at) < 0) {
                fprintf(stderr, "%s:%d: ack TIME ID BY [NOTE]\n", path, ln);
                failed = 1;
            } else if (push_event(&ev, &nev, &capev, &x) < 0) {
                failed = 1;
            }
        } else if (!strcmp(cmd, "until")) {
            char *t = word(&s);
            x.kind = EV_UNTIL;
            if (!t || parse_time(&tf, t, &x.at) < 0) {
                fprintf(stderr, "%s:%d: until TIME\n", path, ln);
                failed = 1;
            } else if (push_event(&ev, &nev, &capev, &x) < 0) {
                failed = 1;
            }
        }
    }
    if (!failed)
        qsort(ev, nev, sizeof *ev, cmp_event);
    for (size_t i = 0; i < nev && !failed; i++) {
        const struct event *x = &ev[i];
        if (x->kind == EV_SEND) {
            advance(&drv, x->at);
            enum cb_reject r = offer_message(&drv, x->a, x->b, strlen(x->b), x->at);
            if (r != CB_REJECT_NONE) {
                fprintf(stderr, "%s:%d: payload rejected: %s\n", path, x->line, cb_reject_name(r));
                failed = 1;
            }
        } else if (x->kind == EV_INPUT) {
            char *full = join_path(tf.dir, x->a);
            FILE *in = full ? fopen(full, "r") : NULL;
            if (!in) {
                fprintf(stderr, "%s:%d: input FILE: cannot open %s\n", path, x->line, full ? full : "");
                failed = 1;
            } else {
                replay_stream(&drv, in, full);
                if (drv.bad_lines)
                    failed = 1;
                fclose(in);
            }
            free(full);
        } else if (x->kind == EV_ACK) {
            advance(&drv, x->at);
            if (cb_engine_ack(drv.e, x->a, x->b, x->c && *x->c ? x->c : NULL) < 0) {
                fprintf(stderr, "%s:%d: ack: no firing alert '%s'\n", path, x->line, x->a);
                failed = 1;
            }
        } else {
            advance(&drv, x->at);
        }
    }
    free(ev);
    if (failed)
        goto out;
    /* compare */
    struct actual *act = NULL;
    size_t nact = collected.data ? split_actual(collected.data, &act) : 0;
    size_t m = nact > tf.nex ? nact : tf.nex;
    int mismatch = nact != tf.nex;
    for (size_t i = 0; i < m && !mismatch; i++)
        if (!expect_matches(&tf.ex[i], &act[i]))
            mismatch = 1;
    if (mismatch) {
        printf("FAIL %s\n", path);
        printf("  (- expected, + actual; times after start %" PRId64 ")\n", tf.base);
        for (size_t i = 0; i < m; i++) {
            if (i < tf.nex && i < nact && expect_matches(&tf.ex[i], &act[i])) {
                print_actual(&tf, &act[i], " ");
                continue;
            }
            if (i < tf.nex)
                print_expect(&tf, &tf.ex[i], "-");
            if (i < nact)
                print_actual(&tf, &act[i], "+");
        }
        rc = 1;
    } else {
        printf("ok   %s (%zu transition%s)\n", path, nact, nact == 1 ? "" : "s");
        rc = 0;
    }
    free(act);
out:
    if (failed)
        printf("FAIL %s (errors above)\n", path);
    if (drv_ok)
        driver_free(&drv);
    cb_ruleset_release(rs);
    for (size_t i = 0; i < ncmds; i++)
        free(cmds[i]);
    free(cmds);
    free(cmdline);
    for (size_t i = 0; i < nrp; i++)
        free((char *)rpaths[i]);
    free(rpaths);
    for (size_t i = 0; i < tf.nex; i++) {
        free(tf.ex[i].id);
        free(tf.ex[i].message);
    }
    free(tf.ex);
    cb_strbuf_free(&inl);
    cb_strbuf_free(&collected);
    free(line);
    free(tf.dir);
    if (f)
        fclose(f);
    return rc;
}

int cb_cmd_test(int argc, char **argv)
{
    int n = 0, failed = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: citybrain test FILE...\n"
                   "  runs rule test files (rules, telemetry, expected transitions; format in\n"
                   "  docs/rules.md); prints a diff on a mismatch; exit 1 on any mismatch\n");
            return 0;
        }
        if (argv[i][0] == '-') {
            fprintf(stderr, "citybrain test: unknown option '%s'\n", argv[i]);
            return 2;
        }
    }
    for (int i = 1; i < argc; i++) {
        n++;
        failed += run_test_file(argv[i]) != 0;
    }
    if (!n) {
        fprintf(stderr, "usage: citybrain test FILE...\n");
        return 2;
    }
    printf("%d test file(s), %d failed\n", n, failed);
    return failed ? 1 : 0;
}
