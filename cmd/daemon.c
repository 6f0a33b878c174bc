/* The daemon: one libuv loop, data flowing one way.
 *
 *   Paho thread ──journal──▶ hand-off queue ──uv_async──▶ on_message (loop)
 *   on_message: decode → rules (verdict per sample) → storage (writer thread)
 *   rules ──transition──▶ alerts (persist, notify) ──▶ MQTT out, webhooks, API events
 *
 * Start-up order matters for "nothing lost, nothing repeated": open the store,
 * restore alert instances into the engine, rebuild rule windows from stored
 * samples, replay the ingest journal past the last committed position, and
 * only then connect to the broker. Shutdown runs the same line downstream:
 * stop MQTT (draining the queue), stop the API, close alerts, flush and close
 * the store, close every uv handle, exit 0. */
#include "cmd/daemon.h"
#include "base/version.h"
#include "cmd/api_provider.h"
#include "cmd/federation.h"
#include "cmd/memory.h"
#include "cmd/restore.h"
#include "cmd/validate.h"
#include "base/clock.h"
#include "base/log.h"
#include "base/looplag.h"
#include "base/metrics.h"
#include "base/strbuf.h"
#include "ingest/ingest.h"
#include "lease/lease.h"
#include "rules/rules.h"
#include "storage/storage.h"

#include <errno.h>
#include <libgen.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <uv.h>

#define MOD "daemon"

struct watch {
    uv_fs_event_t handle;
    char *name; /* file name to react to, or NULL for every *.rules in the dir */
};

struct cb_daemon {
    const struct cb_config *cfg;
    uv_loop_t loop;
    uv_signal_t sigint, sigterm, sighup;
    uv_timer_t tick;
    uv_timer_t reload_timer;
    uv_timer_t control_timer; /* peer actions waiting for their alerts (federation.h) */
    struct watch **watches;
    size_t nwatches;

    struct cb_journal *journal;
    struct cb_store *store;
    struct cb_mqtt *mqtt;
    struct cb_engine *engine;
    struct cb_decoder *decoder;
    struct cb_stamps *stamps; /* arrival stamps: seeded at start, then Paho's */
    struct cb_alerts *alerts;
    struct cb_lease *lease; /* the partition's lease; NULL without cluster.partition */
    size_t feed_prefix_len; /* "PREFIX/" of the alert feed a twin listens to; 0: none */
    struct cb_api *api;
    struct cmd_api_sources api_sources; /* what the API provider reads */
    struct cb_topic_pattern *label_pattern; /* sensors' labels for the API */

    /* scratch for one message, grown to the largest seen */
    struct cb_sample *keep;
    enum cb_sample_verdict *verdicts;
    const char **qrules;
    size_t scratch_cap;

    int stopping;
    int exit_code;
    int64_t started_ms;
    int64_t last_message_ms; /* wall clock of the last message handled (atomic) */
    char *engine_name;     /* federation.engine, or the client id */
    struct cb_strbuf export_topic, export_payload; /* the city tier's export, reused */
    struct cmd_control *control; /* federation.control_topic, or NULL */
    int64_t last_export_ms; /* wall clock of the last periodic export, or of the start */
    int64_t last_sweep_ms;  /* wall clock of the last periodic export, 0 before the first */
    struct cmd_memory mem;  /* the heap's trim (cmd/memory.c) */

    uint64_t *m_msg_accepted, *m_msg_rejected;
    uint64_t *m_rejected[CB_REJECT__COUNT];
    uint64_t *m_samples[4]; /* by enum cb_sample_verdict */
    uint64_t *m_transitions, *m_reloads, *m_reload_errors, *m_export_failed;
    struct cb_histogram *h_eval, *h_journal, *h_lag;
    struct cb_looplag *looplag; /* the loop's own lag, for /metrics and health */
};

static struct cb_histogram *commit_histogram; /* the store's observers have no ctx */
static struct cb_histogram *step_histogram;
static struct cb_ratelimit reject_log = {.burst = 5, .interval_ms = 10000};

static void observe_commit(double secs) { cb_histogram_observe(commit_histogram, secs); }
static void observe_step(double secs) { cb_histogram_observe(step_histogram, secs); }

/* ---- metrics ------------------------------------------------------------- */

static double g_mqtt_connected(void *ctx)
{
    struct cb_daemon *d = ctx;
    struct cb_mqtt_stats s;
    if (!d->mqtt)
        return 0;
    cb_mqtt_get_stats(d->mqtt, &s);
    return s.state == CB_MQTT_CONNECTED;
}

#define MQTT_STAT(fn, field)                                                                 \
    static double fn(void *ctx)                                                             \
    {                                                                                       \
        struct cb_daemon *d = ctx;                                                             \
        struct cb_mqtt_stats s;                                                             \
        if (!d->mqtt)                                                                       \
            return 0;                                                                       \
        cb_mqtt_get_stats(d->mqtt, &s);                                                     \
        return (double)s.field;                                                             \
    }
MQTT_STAT(g_mqtt_received, received)
MQTT_STAT(g_mqtt_dropped, dropped_qos0)
MQTT_STAT(g_mqtt_deferred, deferred_qos1)
MQTT_STAT(g_mqtt_journal_waits, journal_waits)
static double g_journal_ok(void *ctx)
{
    struct cb_daemon *d = ctx;
    struct cb_mqtt_stats s;
    if (!d->mqtt)
        return 1;
    cb_mqtt_get_stats(d->mqtt, &s);
    return s.journal_errno == 0;
}
static double g_journal_failures(void *ctx)
{
    struct cb_daemon *d = ctx;
    struct cb_journal_stats s;
    if (!d->journal)
        return 0;
    cb_journal_get_stats(d->journal, &s);
    return (double)s.append_failed;
}
MQTT_STAT(g_mqtt_queue_depth, queue_depth)
MQTT_STAT(g_mqtt_queue_bytes, queue_bytes)
MQTT_STAT(g_mqtt_coalesce, coalesce_switches)
MQTT_STAT(g_mqtt_connects, connects)
MQTT_STAT(g_mqtt_lost, connection_lost)
MQTT_STAT(g_mqtt_republished, republished)
MQTT_STAT(g_mqtt_publish_failed, publish_failed)

#define STORE_STAT(fn, field)                                                                \
    static double fn(void *ctx)                                                             \
    {                                                                                       \
        struct cb_daemon *d = ctx;                                                             \
        struct cb_store_stats s;                                                            \
        if (!d->store)                                                                      \
            return 0;                                                                       \
        cb_store_get_stats(d->store, &s);                                                   \
        return (double)s.field;                                                             \
    }
STORE_STAT(g_store_rows, rows_written)
STORE_STAT(g_store_dup, rows_duplicate)
STORE_STAT(g_store_dropped, rows_dropped)
STORE_STAT(g_store_lost, rows_lost)
STORE_STAT(g_store_commits, commits)
STORE_STAT(g_store_commit_errors, commit_errors)
STORE_STAT(g_store_pending, pending_rows)
STORE_STAT(g_store_health, health)
STORE_STAT(g_store_retention, retention_deleted)
STORE_STAT(g_store_derive_steps, derive_steps)
STORE_STAT(g_store_derive_errors, derive_errors)
STORE_STAT(g_store_cache_bytes, cache_bytes)
STORE_STAT(g_store_step_max_ms, step_max_ms)
/* The longest step between two commits, in seconds (stats in ms). */
static double g_store_step_max(void *ctx) { return g_store_step_max_ms(ctx) / 1000.0; }
/* How far rollup_1m lags the clock: minutes its derivation has not reached
 * (about one minute plus the grace when healthy). */
static double g_store_derive_lag(void *ctx)
{
    struct cb_daemon *d = ctx;
    struct cb_store_stats s;
    if (!d->store)
        return 0;
    cb_store_get_stats(d->store, &s);
    if (s.derived_1m <= 0) /* nothing stored yet */
        return 0;
    double lag = (double)(cb_wall_ms() - s.derived_1m) / 1000.0;
    return lag < 0 ? 0 : lag;
}

#define ENGINE_STAT(fn, field)                                                               \
    static double fn(void *ctx)                                                             \
    {                                                                                       \
        struct cb_daemon *d = ctx;                                                             \
        struct cb_engine_stats s;                                                           \
        if (!d->engine)                                                                     \
            return 0;                                                                       \
        cb_engine_get_stats(d->engine, &s);                                                 \
        return (double)s.field;                                                             \
    }
ENGINE_STAT(g_rules_evaluated, evaluated)
ENGINE_STAT(g_rules_instances, instances)
ENGINE_STAT(g_rules_windows, windows)
ENGINE_STAT(g_rules_window_samples, window_samples)
ENGINE_STAT(g_rules_ticks, ticks)

/* The largest loop lag of the last 10 s: what /api/health judges. */
static double g_loop_lag_max(void *ctx)
{
    struct cb_daemon *d = ctx;
    if (!d->looplag)
        return 0;
    return (double)cb_looplag_recent_max(d->looplag, (int64_t)(uv_hrtime() / 1000000)) / 1000.0;
}

/* The lease and the one voice (docs/cluster.md). */
static double g_lease_state(void *ctx)
{
    struct cb_daemon *d = ctx;
    struct cb_lease_status st = {.state = CB_LEASE_OFF};
    if (d->lease)
        cb_lease_get(d->lease, &st);
    return (double)st.state;
}
#define LEASE_STAT(fn, field)                                                                \
    static double fn(void *ctx)                                                             \
    {                                                                                       \
        struct cb_daemon *d = ctx;                                                          \
        struct cb_lease_status st = {.epoch = -1};                                          \
        if (d->lease)                                                                       \
            cb_lease_get(d->lease, &st);                                                    \
        return (double)st.field;                                                            \
    }
LEASE_STAT(g_lease_epoch, epoch)
LEASE_STAT(g_lease_gained, gained)
LEASE_STAT(g_lease_lost, lost)
#define VOICE_STAT(fn, field)                                                                \
    static double fn(void *ctx)                                                             \
    {                                                                                       \
        struct cb_daemon *d = ctx;                                                          \
        struct cb_alerts_stats s;                                                           \
        if (!d->alerts)                                                                     \
            return 0;                                                                       \
        cb_alerts_get_stats(d->alerts, &s);                                                 \
        return (double)s.field;                                                             \
    }
VOICE_STAT(g_voice_speaking, speaking)
VOICE_STAT(g_voice_deferred, deferred)
VOICE_STAT(g_voice_heard, heard)
VOICE_STAT(g_voice_dropped, deferred_dropped)
VOICE_STAT(g_voice_takeover, takeover_announced)
VOICE_STAT(g_feed_failed, feed_failed)

static double g_uptime(void *ctx)
{
    struct cb_daemon *d = ctx;
    return (double)(cb_wall_ms() - d->started_ms) / 1000.0;
}

/* For "no data since" alerting, and for timing a benchmark's Nth message
 * without polling while it runs. */
static double g_last_message(void *ctx)
{
    struct cb_daemon *d = ctx;
    return (double)__atomic_load_n(&d->last_message_ms, __ATOMIC_RELAXED) / 1000.0;
}

static void register_metrics(struct cb_daemon *d)
{
    d->m_msg_accepted = cb_metrics_counter("citybrain_ingest_messages_total", "result=\"accepted\"",
                                           "MQTT messages decoded, by result");
    d->m_msg_rejected = cb_metrics_counter("citybrain_ingest_messages_total", "result=\"rejected\"",
                                           "MQTT messages decoded, by result");
    for (int r = 1; r < CB_REJECT__COUNT; r++) {
        char labels[64];
        snprintf(labels, sizeof labels, "reason=\"%s\"", cb_reject_name((enum cb_reject)r));
        d->m_rejected[r] = cb_metrics_counter("citybrain_ingest_rejected_total", labels,
                                              "payloads or samples refused, by reason");
    }
    static const char *const verdict_labels[4] = {"result=\"accepted\"", "result=\"late\"",
                                                  "result=\"future\"", "result=\"quarantined\""};
    for (int v = 0; v < 4; v++)
        d->m_samples[v] = cb_metrics_counter("citybrain_ingest_samples_total", verdict_labels[v],
                                             "decoded samples, by what the rules made of them");
    d->m_export_failed = cb_metrics_counter("citybrain_export_failed_total", "",
                                            "alert instance states that could not be handed to MQTT "
                                            "for the city tier (federation.export_topic)");
    d->m_transitions = cb_metrics_counter("citybrain_rules_transitions_total", "",
                                          "alert state changes emitted by the rules");
    d->m_reloads = cb_metrics_counter("citybrain_rules_reloads_total", "result=\"ok\"",
                                      "rule reloads, by result");
    d->m_reload_errors = cb_metrics_counter("citybrain_rules_reloads_total", "result=\"error\"",
                                            "rule reloads, by result");
    d->h_eval = cb_metrics_histogram("citybrain_rules_eval_seconds", "",
                                     "time to evaluate the rules for one message",
                                     cb_metrics_latency_bounds, cb_metrics_latency_nbounds);
    d->h_journal = cb_metrics_histogram("citybrain_journal_append_seconds", "",
                                        "time to append one message to the ingest journal",
                                        cb_metrics_latency_bounds, cb_metrics_latency_nbounds);
    commit_histogram = cb_metrics_histogram("citybrain_storage_commit_seconds", "",
                                            "duration of one storage commit",
                                            cb_metrics_latency_bounds, cb_metrics_latency_nbounds);
    step_histogram = cb_metrics_histogram(
        "citybrain_storage_step_seconds", "",
        "duration of one step the storage writer runs between two commits (a seal, a slice of "
        "a compaction, a rollup derivation or retention step): a commit due meanwhile waits",
        cb_metrics_latency_bounds, cb_metrics_latency_nbounds);
    d->h_lag = cb_metrics_histogram("citybrain_loop_lag_seconds", "",
                                    "how late the event loop runs a timer: from its due moment "
                                    "to its run (a 100 ms timer measuring itself)",
                                    cb_metrics_latency_bounds, cb_metrics_latency_nbounds);
    static const struct {
        const char *name, *help;
        double (*fn)(void *);
    } fns[] = {
        {"citybrain_mqtt_connected", "1 when connected to the broker", g_mqtt_connected},
        {"citybrain_mqtt_received_total", "messages handed from Paho to the loop",
         g_mqtt_received},
        {"citybrain_mqtt_dropped_total", "QoS 0 messages dropped because the hand-off queue was full",
         g_mqtt_dropped},
        {"citybrain_mqtt_deferred_total",
         "QoS 1 messages that waited for room in the full hand-off queue (back-pressure on the broker)",
         g_mqtt_deferred},
        {"citybrain_journal_failures_total",
         "journal appends that failed (disk full, I/O error), retries included; the message "
         "waits unacknowledged meanwhile",
         g_journal_failures},
        {"citybrain_journal_ok",
         "1 while the journal takes messages, 0 while a QoS 1 message waits for it "
         "(see /api/health for why)",
         g_journal_ok},
        {"citybrain_mqtt_journal_waits_total",
         "QoS 1 messages that waited, unacknowledged, because the journal could not take them",
         g_mqtt_journal_waits},
        {"citybrain_mqtt_queue_depth", "messages waiting in the hand-off queue", g_mqtt_queue_depth},
        {"citybrain_mqtt_queue_bytes", "bytes waiting in the hand-off queue", g_mqtt_queue_bytes},
        {"citybrain_mqtt_coalesce_switches_total",
         "switches between waking the loop per message and collecting every 1 ms (ingest.coalesce_above)",
         g_mqtt_coalesce},
        {"citybrain_mqtt_connects_total", "successful connections to the broker", g_mqtt_connects},
        {"citybrain_mqtt_connection_lost_total", "connections lost", g_mqtt_lost},
        {"citybrain_mqtt_republished_total",
         "QoS 1 publishes sent again after the client failed them (session lost with them in "
         "flight, or refused while disconnected)",
         g_mqtt_republished},
        {"citybrain_mqtt_publish_failed_total",
         "publishes given up: refused by the broker, or still unconfirmed at exit",
         g_mqtt_publish_failed},
        {"citybrain_storage_rows_written_total", "sample rows committed", g_store_rows},
        {"citybrain_storage_rows_duplicate_total", "rows already stored (redelivery)", g_store_dup},
        {"citybrain_storage_rows_dropped_total",
         "rows of journaled (QoS 1) messages dropped from memory beyond storage.max_pending_rows "
         "while the database could not be written; kept in the journal, stored at the next start",
         g_store_dropped},
        {"citybrain_storage_rows_lost_total",
         "rows of QoS 0 messages (never journaled) refused beyond storage.max_pending_rows "
         "while the database could not be written",
         g_store_lost},
        {"citybrain_storage_commits_total", "storage transactions committed", g_store_commits},
        {"citybrain_storage_commit_errors_total", "storage transactions that failed",
         g_store_commit_errors},
        {"citybrain_storage_pending_rows", "rows queued for the writer thread", g_store_pending},
        {"citybrain_storage_health", "0 ok, 1 degraded, 2 failed", g_store_health},
        {"citybrain_storage_retention_deleted_total", "rows deleted by retention", g_store_retention},
        {"citybrain_storage_rollup_derive_steps_total", "rollup derivation steps committed",
         g_store_derive_steps},
        {"citybrain_storage_rollup_derive_errors_total", "rollup derivation steps that failed (retried)",
         g_store_derive_errors},
        {"citybrain_storage_step_max_seconds",
         "the longest step the writer ran between two commits since start (a seal, a slice of "
         "a compaction, a rollup derivation or retention step): a commit due meanwhile waited "
         "that long",
         g_store_step_max},
        {"citybrain_storage_rollup_lag_seconds",
         "how far behind the clock rollup_1m is complete (queries read raw samples for the rest)",
         g_store_derive_lag},
        {"citybrain_rules_evaluations_total", "(sample x matching rule) evaluations",
         g_rules_evaluated},
        {"citybrain_rules_instances", "live alert instances", g_rules_instances},
        {"citybrain_rules_windows", "live rule windows", g_rules_windows},
        {"citybrain_rules_window_samples", "samples held in rule windows", g_rules_window_samples},
        {"citybrain_rules_ticks_total", "evaluation ticks", g_rules_ticks},
        {"citybrain_uptime_seconds", "seconds since start", g_uptime},
        {"citybrain_storage_cache_bytes",
         "the writer's SQLite page cache (grows until storage.cache_size; its pages come from the "
         "page slab first, see citybrain_sqlite_page_slab_used_pages)",
         g_store_cache_bytes},
        {"citybrain_alert_feed_failed_total", "alert transitions that could not be handed to MQTT",
         g_feed_failed},
        {"citybrain_lease_state",
         "the partition's lease: 0 off (no cluster), 1 connecting, 2 standby, 3 holder",
         g_lease_state},
        {"citybrain_lease_epoch",
         "fencing epoch (x-delivery-count) of the token held or last held; -1 never held",
         g_lease_epoch},
        {"citybrain_lease_gained_total", "times this twin received the lease's token",
         g_lease_gained},
        {"citybrain_lease_lost_total", "times this twin's lease ended (its connection died)",
         g_lease_lost},
        {"citybrain_alerts_speaking", "1 while this engine announces (feed, channels, outbox)",
         g_voice_speaking},
        {"citybrain_alerts_deferred",
         "events this silent twin keeps because the feed has not carried them yet",
         g_voice_deferred},
        {"citybrain_alert_feed_heard_total", "alert feed messages heard (either twin's)",
         g_voice_heard},
        {"citybrain_alerts_deferred_dropped_total",
         "kept events dropped beyond 100,000 (never announced by this twin)", g_voice_dropped},
        {"citybrain_alerts_takeover_announced_total",
         "kept events announced on gaining the lease (the other twin had not)", g_voice_takeover},
        {"citybrain_loop_lag_max_seconds",
         "the largest loop lag of the last 10 s; /api/health is degraded while it is over 1 s",
         g_loop_lag_max},
        {"citybrain_ingest_last_message_timestamp_seconds",
         "Unix time the last message was handled (decoded and judged), 0 before the first",
         g_last_message},
    };
    for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++)
        cb_metrics_gauge_fn(fns[i].name, "", fns[i].help, fns[i].fn, d);
    cmd__memory_register_metrics(&d->mem);

}

/* ---- the message path ---------------------------------------------------- */

static int grow_scratch(struct cb_daemon *d, size_t n)
{
    if (n <= d->scratch_cap)
        return 0;
    size_t cap = d->scratch_cap ? d->scratch_cap : 16;
    while (cap < n)
        cap *= 2;
    struct cb_sample *k = realloc(d->keep, cap * sizeof *k);
    if (!k)
        return -1;
    d->keep = k;
    enum cb_sample_verdict *v = realloc(d->verdicts, cap * sizeof *v);
    if (!v)
        return -1;
    d->verdicts = v;
    const char **q = realloc(d->qrules, cap * sizeof *q);
    if (!q)
        return -1;
    d->qrules = q;
    d->scratch_cap = cap;
    return 0;
}

static void count_reject(struct cb_daemon *d, const struct cb_message *m, enum cb_reject r)
{
    cb_counter_add(d->m_rejected[r], 1);
    cb_log_limited(&reject_log, CB_LOG_WARN, "ingest", "rejected a payload on '%.*s' (%zu bytes): %s",
                   (int)(m->topic_len > 120 ? 120 : m->topic_len), m->topic, m->len,
                   cb_reject_name(r));
}

static int reload_rules_diags(void *ctx, const char *via, const char *by, const char *note,
                              struct cb_diags *diags);

/* Shares an operator action taken here with the peer engines
 * (federation.control_topic; see cmd/federation.h). The API provider's
 * door too (ctx is the daemon). */
static int share_action(void *ctx, const char *action, const char *by, const char *target,
                        const char *note, const char *silence)
{
    struct cb_daemon *d = ctx;
    if (!d->control)
        return 0;
    if (cmd__control_share(d->control, d->mqtt, cb_wall_ms(), action, by, target, note,
                           silence)) {
        cb_warn("control", "%s by %s: not shared with the peer engines (the MQTT client did not "
                           "take it)",
                action, by);
        return -1;
    }
    return 0;
}

static void on_control_timer(uv_timer_t *timer);

static struct cmd_control_targets control_targets(struct cb_daemon *d)
{
    return (struct cmd_control_targets){.engine = d->engine, .alerts = d->alerts,
                                        .reload_rules = reload_rules_diags, .reload_ctx = d};
}

/* Runs the waiting peer actions after `delay_ms`, or at the first one's end
 * of wait when that is sooner; nothing when none waits. */
static void arm_control_timer(struct cb_daemon *d, int64_t delay_ms)
{
    int64_t due = cmd__control_next_due(d->control);
    if (due == INT64_MAX || d->stopping)
        return;
    int64_t until_due = due - cb_wall_ms();
    if (until_due < delay_ms)
        delay_ms = until_due < 0 ? 0 : until_due;
    uv_timer_start(&d->control_timer, on_control_timer, (uint64_t)delay_ms, 0);
}

static void on_control_timer(uv_timer_t *timer)
{
    struct cb_daemon *d = timer->data;
    struct cmd_control_targets t = control_targets(d);
    cmd__control_retry(d->control, &t, cb_wall_ms());
    arm_control_timer(d, INT64_MAX);
}

/* A message on the control topic: a peer engine's operator action, applied
 * once (cmd__control_apply), never stored as telemetry. */
static void on_control(struct cb_daemon *d, const struct cb_message *m)
{
    struct cmd_control_targets t = control_targets(d);
    char err[256] = "";
    int rc = cmd__control_apply(d->control, &t, m->payload, m->len, cb_wall_ms(), err, sizeof err);
    if (rc < 0)
        cb_warn("control", "a peer engine's action was not applied: %s", err);
    else if (rc == 2) {
        cb_info("control", "a peer engine's action waits up to %lld s for its alert to fire here",
                (long long)(d->cfg->federation_peer_action_wait_ms / 1000));
        arm_control_timer(d, INT64_MAX);
    }
    cb_store_note_journal_pos(d->store, m->journal_pos);
}

/* Decodes one message, lets the rules judge each sample, and queues what is to
 * be kept for the writer. Runs on the loop thread for live messages and for
 * journal recovery alike. */
static void on_message(void *ctx, const struct cb_message *m)
{
    struct cb_daemon *d = ctx;
    struct cb_decoded dec;
    __atomic_store_n(&d->last_message_ms, cb_wall_ms(), __ATOMIC_RELAXED);
    if (d->control && !strcmp(m->topic, d->cfg->federation_control_topic)) {
        on_control(d, m);
        return;
    }
    if (d->feed_prefix_len && m->topic_len > d->feed_prefix_len &&
        !memcmp(m->topic, d->cfg->alerts_mqtt_prefix, d->feed_prefix_len - 1) &&
        m->topic[d->feed_prefix_len - 1] == '/') {
        /* the alert feed, heard by a twin: what has been announced */
        cb_alerts_feed_heard(d->alerts, m->payload, m->len);
        cb_store_note_journal_pos(d->store, m->journal_pos);
        return;
    }
    enum cb_reject r = cb_decode(d->decoder, m->topic, m->payload, m->len, m->arrival_ms, &dec);
    if (r != CB_REJECT_NONE) {
        cb_counter_add(d->m_msg_rejected, 1);
        count_reject(d, m, r);
        cb_store_note_journal_pos(d->store, m->journal_pos);
        return;
    }
    cb_counter_add(d->m_msg_accepted, 1);
    if (grow_scratch(d, dec.n)) {
        cb_error(MOD, "out of memory decoding a message of '%s'", m->topic);
        return;
    }
    int64_t t0 = cb_mono_us();
    if (cb_engine_offer(d->engine, m->topic, dec.device, dec.samples, dec.n, d->verdicts,
                        d->qrules)) {
        cb_error(MOD, "out of memory evaluating rules for '%s'", m->topic);
        for (size_t i = 0; i < dec.n; i++)
            d->verdicts[i] = CB_SAMPLE_ACCEPTED;
    }
    cb_histogram_observe(d->h_eval, (double)(cb_mono_us() - t0) / 1e6);
    size_t k = 0;
    for (size_t i = 0; i < dec.n; i++) {
        enum cb_sample_verdict v = d->verdicts[i];
        cb_counter_add(d->m_samples[v], 1);
        switch (v) {
        case CB_SAMPLE_ACCEPTED:
        case CB_SAMPLE_LATE:
            d->keep[k++] = dec.samples[i];
            break;
        case CB_SAMPLE_FUTURE:
            cb_counter_add(d->m_rejected[CB_REJECT_FUTURE], 1);
            break;
        case CB_SAMPLE_QUARANTINED: {
            char reason[160];
            snprintf(reason, sizeof reason, "invalid_range:%s",
                     d->qrules[i] ? d->qrules[i] : "?");
            cb_counter_add(d->m_rejected[CB_REJECT_INVALID_RANGE], 1);
            cb_store_quarantine(d->store, m->topic, &dec.samples[i], reason, m->journal_pos);
            break;
        }
        }
    }
    if (k == 0)
        cb_store_note_journal_pos(d->store, m->journal_pos);
    else
        cb_store_append(d->store, m->topic, dec.device, d->keep, k, m->journal_pos);
}

/* Paho thread: a message refused for its size before any copy counts with
 * the decoder's rejections (the counters are atomic). */
static void refused_message(void *ctx, enum cb_reject r)
{
    struct cb_daemon *d = ctx;
    cb_counter_add(d->m_msg_rejected, 1);
    cb_counter_add(d->m_rejected[r], 1);
}

/* Paho thread: journal the raw message before it is acknowledged. */
static int persist_message(void *ctx, const char *topic, size_t topic_len, const void *payload,
                           size_t len, int64_t arrival_ms, uint64_t *pos)
{
    struct cb_daemon *d = ctx;
    int64_t t0 = cb_mono_us();
    int rc = cb_journal_append(d->journal, topic, topic_len, payload, len, arrival_ms, pos);
    int err = errno; /* the MQTT client reports why the journal waits */
    cb_histogram_observe(d->h_journal, (double)(cb_mono_us() - t0) / 1e6);
    errno = err;
    return rc;
}

/* A sample time at or after the start: no new message of its topic may get it. */
static void seen_stamp(struct cb_daemon *d, const char *topic, size_t len, int64_t ts)
{
    if (ts >= d->started_ms)
        cb_stamps_seen(d->stamps, topic, len, ts);
}

/* Start-up recovery: a journal record goes through on_message with the
 * arrival stamp it was given live, so its samples get the same times. */
static int replay_record(void *ctx, uint64_t pos, const char *topic, const void *payload,
                         size_t len, int64_t arrival_ms)
{
    struct cb_daemon *d = ctx;
    struct cb_message m = {.topic = topic, .topic_len = strlen(topic), .payload = payload,
                           .len = len, .arrival_ms = arrival_ms, .qos = 1, .journal_pos = pos};
    seen_stamp(d, topic, m.topic_len, arrival_ms);
    on_message(ctx, &m);
    return 0;
}

/* ---- transitions ----------------------------------------------------------- */

static void export_instance(struct cb_daemon *d, const struct cb_transition *t, int64_t at_ms);

/* Every state change of the engine goes to alerts/, which persists it,
 * notifies the rule's channels (grouped in storms), hands events to the
 * API's SSE and, while this engine speaks, publishes each event, one message
 * per transition, on the alert feed PREFIX/<rule> (interfaces.md): machines
 * that follow the feed see each instance, as the API and the log do. */
static void on_transition(void *ctx, const struct cb_transition *t)
{
    struct cb_daemon *d = ctx;
    cb_counter_add(d->m_transitions, 1);
    if (t->reason)
        cb_warn("alert", "%s %s: %s", t->id, cb_alert_state_name(t->state), t->reason);
    cb_alerts_on_transition(d->alerts, t);
    /* a peer's ack may wait for this alert: applied on the next turn of the
     * loop, not inside the engine's evaluation */
    if (d->control && t->state == CB_ALERT_FIRING)
        arm_control_timer(d, 0);
    if (cb_transition_is_event(t))
        export_instance(d, t, cmd__export_stamp(t, d->last_sweep_ms)); /* both twins */
}

static int publish_feed(void *ctx, const char *rule, const char *json, size_t len)
{
    struct cb_daemon *d = ctx;
    char topic[512];
    snprintf(topic, sizeof topic, "%s/%s", d->cfg->alerts_mqtt_prefix, rule);
    return d->mqtt ? cb_mqtt_publish(d->mqtt, topic, json, len, 1, 0) : -1;
}

/* Loop thread: the lease changed hands; only the holder speaks. */
static void on_lease(void *ctx, const struct cb_lease_status *st)
{
    struct cb_daemon *d = ctx;
    if (d->alerts && !d->stopping)
        cb_alerts_set_voice(d->alerts, st->state == CB_LEASE_HOLDER);
}

/* Publishes instance t's state on the city tier's export (federation.h),
 * sampled at at_ms, when federation.export_topic is set. */
static void export_instance(struct cb_daemon *d, const struct cb_transition *t, int64_t at_ms)
{
    if (!d->mqtt || !*d->cfg->federation_export_topic)
        return;
    if (cmd__export_payload(&d->export_payload, d->engine_name, t, at_ms))
        return;
    cmd__export_topic(&d->export_topic, d->cfg->federation_export_topic, d->engine_name, t);
    if (d->export_topic.oom || d->export_payload.oom ||
        cb_mqtt_publish(d->mqtt, d->export_topic.data, d->export_payload.data,
                        d->export_payload.len, 1, 0))
        cb_counter_add(d->m_export_failed, 1);
}

static void export_current(void *ctx, const struct cb_transition *t)
{
    export_instance(ctx, t, cb_wall_ms());
}

static int publish_alert(void *ctx, const char *topic, const void *payload, size_t len, int qos)
{
    struct cb_daemon *d = ctx;
    return d->mqtt ? cb_mqtt_publish(d->mqtt, topic, payload, len, qos, 0) : -1;
}

static void alert_event(void *ctx, uint64_t seq, const char *json, size_t len)
{
    struct cb_daemon *d = ctx;
    if (d->api)
        cb_api_event(d->api, seq, json, len);
}

static void alert_stale(void *ctx, const char *json, size_t len)
{
    struct cb_daemon *d = ctx;
    if (d->api)
        cb_api_notice(d->api, "stale", json, len);
}

/* ---- rules: load, reload, watch ------------------------------------------ */

static void log_diags(const struct cb_diags *diags)
{
    struct cb_strbuf text;
    cb_strbuf_init(&text);
    cb_diags_render_text(diags, &text);
    if (text.data) {
        char *save = NULL;
        for (char *line = strtok_r(text.data, "\n", &save); line;
             line = strtok_r(NULL, "\n", &save))
            cb_error("rules", "%s", line);
    }
    cb_strbuf_free(&text);
}

/* The ways a reload is asked for: the word in its log line, and who the
 * audit log names when no operator gave a name. */
static const struct {
    const char *via, *log, *who;
} reload_ways[] = {
    {CMD_RELOAD_API, "HTTP API", "(api)"},
    {CMD_RELOAD_SIGHUP, "SIGHUP", "(sighup)"},
    {CMD_RELOAD_FILE, "file changed", "(file watch)"},
    {CMD_RELOAD_CONTROL, "peer engine", "(peer engine)"},
};

/* Records a reload, taken or rejected, in the audit log. */
static void audit_reload(struct cb_daemon *d, size_t way, const char *by, const char *note,
                         int ok, size_t n)
{
    char details[128];
    snprintf(details, sizeof details, "{\"via\":\"%s\",\"ok\":%s,\"%s\":%zu}",
             reload_ways[way].via, ok ? "true" : "false", ok ? "rules" : "errors", n);
    struct cb_audit_entry e = {CB_AUDIT_RULES_RELOAD, by && *by ? by : reload_ways[way].who, NULL,
                               note && *note ? note : NULL, details};
    cb_alerts_audit(d->alerts, &e);
}

/* Recompiles every rule path, validated as at start (cmd__validate_run: the
 * notify channels, no rules at all), asked through `via` (CMD_RELOAD_*) by
 * `by` with `note` (either may be NULL or ""), and records it in the audit
 * log. Returns 0, or -1 with the diagnostics in *diags (the caller frees
 * them) when the new rules are refused: the running rules then go on
 * unchanged. ctx is the daemon (the API provider's door back). */
static int reload_rules_diags(void *ctx, const char *via, const char *by, const char *note,
                              struct cb_diags *diags)
{
    struct cb_daemon *d = ctx;
    size_t way = 0;
    while (way + 1 < sizeof reload_ways / sizeof reload_ways[0] &&
           strcmp(reload_ways[way].via, via))
        way++;
    const char *why = reload_ways[way].log;
    struct cb_ruleset *rs = NULL;
    if (cmd__validate_run(d->cfg, diags, &rs) != CMD_VALID) {
        cb_counter_add(d->m_reload_errors, 1);
        cb_error("rules", "reload (%s) rejected: %zu error(s); the running rules go on", why,
                 diags->errors);
        log_diags(diags);
        audit_reload(d, way, by, note, 0, diags->errors);
        return -1;
    }
    int rc = cb_engine_swap(d->engine, rs);
    if (rc) {
        cb_counter_add(d->m_reload_errors, 1);
        cb_error("rules", "reload (%s) failed: out of memory; the running rules go on", why);
    } else {
        cb_counter_add(d->m_reloads, 1);
        cb_info("rules", "reloaded (%s): %zu rule(s)", why, cb_ruleset_count(rs));
    }
    audit_reload(d, way, by, note, rc == 0, rc ? 1 : cb_ruleset_count(rs));
    cb_ruleset_release(rs);
    /* An operator's reload reaches the peers (each reloads its own files);
     * a file watch is each engine's own, a peer's reload is not sent back. */
    if (rc == 0 && (!strcmp(via, CMD_RELOAD_API) || !strcmp(via, CMD_RELOAD_SIGHUP)))
        share_action(d, CMD_CONTROL_RELOAD, by && *by ? by : reload_ways[way].who, NULL, note,
                     NULL);
    return rc;
}

static void reload_rules(struct cb_daemon *d, const char *via)
{
    struct cb_diags diags = {0};
    reload_rules_diags(d, via, NULL, NULL, &diags);
    cb_diags_free(&diags);
}

static void on_reload_timer(uv_timer_t *t)
{
    struct cb_daemon *d = t->data;
    if (!d->stopping)
        reload_rules(d, CMD_RELOAD_FILE);
}

static int is_rules_name(const char *name)
{
    size_t n = strlen(name);
    return n > 6 && strcmp(name + n - 6, ".rules") == 0;
}

/* A change in a watched directory: debounce, because editors write a file in
 * several steps (truncate, write, rename). */
static void on_fs_event(uv_fs_event_t *h, const char *filename, int events, int status)
{
    (void)events;
    struct watch *w = (struct watch *)h;
    struct cb_daemon *d = h->data;
    if (status < 0 || !filename)
        return;
    if (w->name ? strcmp(filename, w->name) != 0 : !is_rules_name(filename))
        return;
    uv_timer_start(&d->reload_timer, on_reload_timer, 300, 0);
}

static void free_watch(uv_handle_t *h)
{
    struct watch *w = (struct watch *)h;
    free(w->name);
    free(w);
}

/* Watches each rule path: a directory itself, a file through its parent
 * directory (so a file replaced by rename is still seen). */
static void watch_rules(struct cb_daemon *d)
{
    const struct cb_strlist *paths = &d->cfg->rules_paths;
    d->watches = calloc(paths->n ? paths->n : 1, sizeof *d->watches);
    if (!d->watches)
        return;
    for (size_t i = 0; i < paths->n; i++) {
        struct stat st;
        if (stat(paths->items[i], &st) != 0)
            continue;
        struct watch *w = calloc(1, sizeof *w);
        char *copy = strdup(paths->items[i]);
        if (!w || !copy) {
            free(w);
            free(copy);
            continue;
        }
        const char *dir = paths->items[i];
        if (!S_ISDIR(st.st_mode)) {
            w->name = strdup(basename(copy));
            strcpy(copy, paths->items[i]);
            dir = dirname(copy);
        }
        uv_fs_event_init(&d->loop, &w->handle);
        w->handle.data = d;
        int rc = uv_fs_event_start(&w->handle, on_fs_event, dir, 0);
        free(copy);
        if (rc) {
            cb_warn("rules", "cannot watch '%s': %s (SIGHUP still reloads)", paths->items[i],
                    uv_strerror(rc));
            uv_close((uv_handle_t *)&w->handle, free_watch);
            continue;
        }
        d->watches[d->nwatches++] = w;
    }
}

/* ---- timers and signals ---------------------------------------------------- */

static void on_tick(uv_timer_t *t)
{
    struct cb_daemon *d = t->data;
    cb_engine_tick(d->engine);
    cmd__memory_tick(&d->mem);
    /* The city tier's export: every firing instance again, so a city rule
     * tells a district that went silent (age()) from one still flooding. */
    int64_t now = cb_wall_ms();
    if (*d->cfg->federation_export_topic && d->mqtt &&
        now - d->last_export_ms >= d->cfg->federation_export_interval_ms) {
        d->last_export_ms = d->last_sweep_ms = now;
        cb_engine_foreach_instance(d->engine, export_current, d);
    }
    if (d->lease) { /* a twin that cannot publish leaves the voice to the other */
        struct cb_mqtt_stats ms;
        cb_mqtt_get_stats(d->mqtt, &ms);
        cb_lease_set_eligible(d->lease, ms.state == CB_MQTT_CONNECTED);
    }
}

static void close_handles(struct cb_daemon *d);

static void on_alerts_closed(void *ctx)
{
    struct cb_daemon *d = ctx;
    d->alerts = NULL;
    close_handles(d);
}

static void on_api_closed(void *ctx)
{
    struct cb_daemon *d = ctx;
    d->api = NULL;
    if (d->alerts)
        cb_alerts_close(d->alerts, on_alerts_closed, d);
    else
        close_handles(d);
}

/* MQTT has stopped and its queue is drained: close downstream in order
 * (API, then alerts, which commit their store), then every handle. */
static void on_mqtt_stopped(void *ctx)
{
    struct cb_daemon *d = ctx;
    cb_info(MOD, "MQTT stopped; flushing");
    if (d->api)
        cb_api_close(d->api, on_api_closed, d);
    else
        on_api_closed(d);
}

/* Gives the lease up: the token goes to the other twin at once, and from
 * here this one is silent (what is still drained, the other announces). */
static void stop_lease(struct cb_daemon *d)
{
    if (!d->lease)
        return;
    if (d->alerts)
        cb_alerts_set_voice(d->alerts, 0);
    cb_lease_close(d->lease, NULL, NULL);
    d->lease = NULL;
    d->api_sources.lease = NULL;
}

static void begin_shutdown(struct cb_daemon *d, const char *why)
{
    if (d->stopping)
        return;
    d->stopping = 1;
    cb_info(MOD, "%s: shutting down", why);
    uv_timer_stop(&d->tick);
    uv_timer_stop(&d->reload_timer);
    stop_lease(d);
    if (d->mqtt)
        cb_mqtt_stop(d->mqtt, on_mqtt_stopped, d);
    else
        on_mqtt_stopped(d);
}

/* SIGHUP also reads the API's certificate and key again (docs/api.md
 * "HTTPS"); a pair that does not load leaves the running one. */
static void reload_tls(struct cb_daemon *d)
{
    char err[512];
    int rc = cb_api_tls_reload(d->api, err, sizeof err);
    if (rc > 0)
        cb_info(MOD, "HTTPS certificate reloaded (SIGHUP)");
    else if (rc < 0)
        cb_error(MOD, "HTTPS certificate not reloaded, the previous one stays: %s", err);
}

static void on_signal(uv_signal_t *s, int signum)
{
    struct cb_daemon *d = s->data;
    if (signum == SIGHUP) {
        if (!d->stopping) {
            reload_rules(d, CMD_RELOAD_SIGHUP);
            reload_tls(d);
        }
        return;
    }
    if (d->stopping) {
        cb_warn(MOD, "second %s: exiting at once", strsignal(signum));
        exit(1);
    }
    begin_shutdown(d, strsignal(signum));
}

static void close_handles(struct cb_daemon *d)
{
    stop_lease(d); /* a start that failed after the lease began */
    uv_close((uv_handle_t *)&d->tick, NULL);
    uv_close((uv_handle_t *)&d->reload_timer, NULL);
    uv_close((uv_handle_t *)&d->control_timer, NULL);
    cb_looplag_close(d->looplag);
    d->looplag = NULL;
    uv_close((uv_handle_t *)&d->sigint, NULL);
    uv_close((uv_handle_t *)&d->sigterm, NULL);
    uv_close((uv_handle_t *)&d->sighup, NULL);
    for (size_t i = 0; i < d->nwatches; i++)
        uv_close((uv_handle_t *)&d->watches[i]->handle, free_watch);
    d->nwatches = 0;
    if (d->mqtt)
        cb_mqtt_close(d->mqtt);
}

/* ---- start-up ------------------------------------------------------------------- */

static int stamp_row(void *ctx, const char *topic, const char *metric, int64_t ts, double value)
{
    (void)metric;
    (void)value;
    seen_stamp(ctx, topic, strlen(topic), ts);
    return 0;
}

/* Tells the arrival stamps about stored samples at or after the start (a
 * burst stamped ahead of the clock just before a quick restart), so no new
 * message collides with them. (The rules' state is rebuilt from the store by
 * cmd__prime_engine.) */
static void seed_stamps(struct cb_daemon *d)
{
    char err[256];
    struct cb_store_reader *r = cb_store_reader_open(d->cfg->storage_db, err, sizeof err);
    if (!r) {
        cb_warn(MOD, "cannot read stored samples to seed the arrival stamps: %s", err);
        return;
    }
    if (cb_store_scan_since(r, d->started_ms, stamp_row, d))
        cb_warn(MOD, "seeding the arrival stamps from the store failed part-way");
    cb_store_reader_close(r);
}

/* Starts every module in order over the validated rules rs (borrowed). */
static int start(struct cb_daemon *d, struct cb_ruleset *rs)
{
    const struct cb_config *cfg = d->cfg;
    char err[512];

    struct cb_engine_options eo = {.max_skew_ms = cfg->rules_max_skew_ms,
                                   .lateness_ms = cfg->rules_lateness_ms,
                                   .stale_after_ms = cfg->sensors_stale_after_ms};
    d->engine_name = *cfg->federation_engine ? strdup(cfg->federation_engine)
                                             : cb_config_client_id(cfg);
    if (!d->engine_name) {
        cb_error(MOD, "out of memory");
        return -1;
    }
    d->engine = cb_engine_new(rs, &cb_clock_wall, &eo, on_transition, d);
    size_t nrules = cb_ruleset_count(rs);
    if (!d->engine) {
        cb_error(MOD, "out of memory creating the rule engine");
        return -1;
    }

    struct cb_decode_limits limits;
    cb_decode_limits_from_config(&limits, cfg);
    d->decoder = cb_decoder_new(&limits);
    if (!d->decoder) {
        cb_error(MOD, "out of memory creating the decoder");
        return -1;
    }

    char *jpath = cb_config_journal_path(cfg);
    if (!jpath)
        return -1;
    d->journal = cb_journal_open(jpath, cfg->storage_journal_segment,
                                 cfg->storage_journal_fsync == CB_JOURNAL_FSYNC_ALWAYS, err,
                                 sizeof err);
    if (!d->journal) {
        cb_error("storage", "journal %s: %s", jpath, err);
        free(jpath);
        return -1;
    }
    free(jpath);
    d->store = cb_store_open(cfg, observe_commit, err, sizeof err);
    if (!d->store) {
        cb_error("storage", "%s: %s", cfg->storage_db, err);
        return -1;
    }
    cb_store_set_step_observer(d->store, observe_step);
    cb_info("storage", "database %s (synchronous=%s)", cfg->storage_db,
            cfg->storage_synchronous == CB_SYNC_FULL ? "full" : "normal");

    struct cb_alerts_hooks hooks = {.ctx = d, .publish = publish_alert, .on_event = alert_event,
                                    .on_stale = alert_stale, .clock = &cb_clock_wall,
                                    .feed = publish_feed};
    if (*cfg->cluster_partition)
        d->feed_prefix_len = strlen(cfg->alerts_mqtt_prefix) + 1;
    d->alerts = cb_alerts_new(&d->loop, cfg, cfg->storage_db, &hooks, err, sizeof err);
    if (!d->alerts) {
        cb_error("alert", "%s", err);
        return -1;
    }
    if (*cfg->federation_control_topic) {
        char *origin = cb_config_client_id(cfg);
        d->control = origin ? cmd__control_new(cfg->federation_control_topic, origin,
                                                cfg->federation_peer_action_wait_ms) : NULL;
        free(origin);
        if (!d->control) {
            cb_error(MOD, "out of memory");
            return -1;
        }
        /* before the journal replays control messages applied last run */
        long n = cmd__control_load_seen(d->control, cfg->storage_db, cb_wall_ms(), err,
                                        sizeof err);
        if (n < 0) {
            cb_error("control", "cannot read which peer actions were applied: %s", err);
            return -1;
        }
        cb_info("control", "operator actions shared on '%s' (%ld applied before)",
                cfg->federation_control_topic, n);
    }
    int restored = cmd__restore_instances(d->engine, d->alerts);
    if (restored < 0)
        cb_warn("alert", "could not read the stored alert instances; starting without them");
    else if (restored > 0)
        cb_info("alert", "restored %d stored alert instance(s)", restored);
    /* Alertmanager forgets an alert not sent again: resend the live ones. */
    cb_engine_foreach_instance(d->engine, cb_alerts_am_adopt, d->alerts);

    /* Verdicts made without the stored state would be wrong (a false
     * all-clear at the first tick): no start without it. */
    if (cmd__prime_engine(d->engine, cfg->storage_db, cb_wall_ms(), cfg->rules_lateness_ms, err,
                          sizeof err)) {
        cb_error(MOD, "cannot read the store to rebuild the rules' state: %s", err);
        return -1;
    }
    d->stamps = cb_stamps_new();
    if (!d->stamps) {
        cb_error(MOD, "out of memory creating the arrival stamps");
        return -1;
    }
    seed_stamps(d);

    /* The writer releases journal segments after each commit; new positions
     * stay above what the database committed even if the journal was lost. */
    cb_store_attach_journal(d->store, d->journal);
    uint64_t committed = cb_store_committed_journal_pos(d->store);
    if (cb_journal_set_floor(d->journal, committed)) {
        cb_error("storage", "cannot set the journal position floor");
        return -1;
    }
    struct cb_engine_stats before;
    cb_engine_get_stats(d->engine, &before);
    if (cb_journal_replay(d->journal, committed, replay_record, d)) {
        cb_error("storage", "replaying the ingest journal failed");
        return -1;
    }
    struct cb_engine_stats after;
    cb_engine_get_stats(d->engine, &after);
    if (after.samples > before.samples)
        cb_info("storage", "recovered %llu sample(s) from the ingest journal",
                (unsigned long long)(after.samples - before.samples));

    d->mqtt = cb_mqtt_new(&d->loop, cfg, on_message, d, err, sizeof err);
    if (!d->mqtt) {
        cb_error("mqtt", "%s", err);
        return -1;
    }
    cb_mqtt_set_persist(d->mqtt, persist_message, d);
    cb_mqtt_set_stamps(d->mqtt, d->stamps);
    cb_mqtt_set_refused(d->mqtt, refused_message, d);
    if (d->control && cb_mqtt_add_topic(d->mqtt, cfg->federation_control_topic, 1)) {
        cb_error("mqtt", "out of memory");
        return -1;
    }
    if (cb_mqtt_start(d->mqtt)) {
        cb_error("mqtt", "cannot start the client for %s", cfg->mqtt_broker);
        return -1;
    }
    /* The lease last: a twin takes the voice once its state is rebuilt. */
    if (*cfg->cluster_partition) {
        d->lease = cb_lease_new(&d->loop, cfg, on_lease, d, err, sizeof err);
        if (!d->lease || cb_lease_start(d->lease)) {
            cb_error("lease", "%s", d->lease ? "cannot start the lease thread" : err);
            return -1;
        }
        cb_info("lease", "partition %s, twin %s: silent until the lease is ours",
                cfg->cluster_partition, cfg->cluster_twin);
    }

    if (*cfg->sensors_label_pattern) {
        char perr[128];
        d->label_pattern = cb_topic_pattern_compile(cfg->sensors_label_pattern,
                                                    strlen(cfg->sensors_label_pattern), perr,
                                                    sizeof perr, NULL);
        if (!d->label_pattern) {
            cb_error(MOD, "sensors.label_pattern: %s", perr);
            return -1;
        }
    }
    d->looplag = cb_looplag_new(&d->loop, d->h_lag);
    if (!d->looplag) {
        cb_error(MOD, "out of memory creating the loop lag monitor");
        return -1;
    }
    cb_looplag_start(d->looplag);
    if (cb_api_enabled(cfg)) {
        d->api_sources = (struct cmd_api_sources){
            .cfg = cfg, .store = d->store, .mqtt = d->mqtt, .engine = d->engine,
            .alerts = d->alerts, .lease = d->lease, .label_pattern = d->label_pattern, .looplag = d->looplag,
            .started_ms = d->started_ms, .reload_rules = reload_rules_diags, .reload_ctx = d,
            .share = share_action, .share_ctx = d,
        };
        struct cb_api_provider provider;
        cmd__api_provider(&d->api_sources, &provider);
        d->api = cb_api_start(&d->loop, cfg, &provider, err, sizeof err);
        if (!d->api) {
            cb_error("api", "%s", err);
            return -1;
        }
        cb_info("api", "HTTP API and dashboard on http://%s/", cfg->http_listen);
    }

    /* The first periodic export one interval after start, not at the first
     * tick: a restarted engine is still catching up on its session's backlog
     * then, and an instance firing half-way through it, stamped with the wall
     * clock, would be newer at the city tier than the backlog's resolution
     * (stamped with its samples' time), and count there as flooding. */
    d->last_export_ms = cb_wall_ms();
    uv_timer_start(&d->tick, on_tick, 1000, 1000);
    if (cfg->rules_watch)
        watch_rules(d);
    if (*cfg->cluster_partition)
        cb_info(MOD, "citybrain %s running: broker %s, partition %s twin %s, QoS %lld, %zu rule(s)",
                cb_version, cfg->mqtt_broker, cfg->cluster_partition, cfg->cluster_twin,
                (long long)cfg->mqtt_qos, nrules);
    else
        cb_info(MOD, "citybrain %s running: broker %s, %zu topic filter(s), QoS %lld, %zu rule(s)",
                cb_version, cfg->mqtt_broker, cfg->mqtt_topics.n, (long long)cfg->mqtt_qos, nrules);
    return 0;
}

static void teardown(struct cb_daemon *d)
{
    if (d->store)
        cb_store_close(d->store);
    if (d->journal)
        cb_journal_close(d->journal);
    if (d->engine)
        cb_engine_free(d->engine);
    if (d->decoder)
        cb_decoder_free(d->decoder);
    cb_stamps_free(d->stamps); /* the MQTT client is gone */
    if (d->label_pattern)
        cb_topic_pattern_free(d->label_pattern);
    cb_strbuf_free(&d->export_topic);
    cb_strbuf_free(&d->export_payload);
    free(d->engine_name);
    cmd__control_free(d->control);
    free(d->keep);
    free(d->verdicts);
    free(d->qrules);
    free(d->watches);
}

int cb_daemon_run(const struct cb_config *cfg)
{
    struct cb_daemon d;
    memset(&d, 0, sizeof d);
    d.cfg = cfg;
    d.started_ms = cb_wall_ms();
    cb_log_threshold = (enum cb_log_level)cfg->log_level;
    char merr[192];
    if (cmd__memory_setup(&d.mem, merr, sizeof merr) < 0)
        cb_warn(MOD, "%s", merr);

    /* What --check-config validates, before anything is opened. */
    struct cb_diags diags = {0};
    struct cb_ruleset *rs = NULL;
    enum cmd_verdict v = cmd__validate_run(cfg, &diags, &rs);
    if (v != CMD_VALID) {
        if (v == CMD_NO_RULES)
            cb_error(MOD, "not starting: no rules");
        else
            cb_error(MOD, "not starting: %zu error(s) in the rules or the alert channels",
                     diags.errors);
        log_diags(&diags);
        cb_diags_free(&diags);
        return (int)v;
    }
    cb_diags_free(&diags);
    if (uv_loop_init(&d.loop)) {
        cb_error(MOD, "cannot create the event loop");
        cb_ruleset_release(rs);
        return 1;
    }
    uv_timer_init(&d.loop, &d.tick);
    uv_timer_init(&d.loop, &d.reload_timer);
    uv_timer_init(&d.loop, &d.control_timer);
    d.tick.data = d.reload_timer.data = d.control_timer.data = &d;
    uv_signal_init(&d.loop, &d.sigint);
    uv_signal_init(&d.loop, &d.sigterm);
    uv_signal_init(&d.loop, &d.sighup);
    d.sigint.data = d.sigterm.data = d.sighup.data = &d;
    uv_signal_start(&d.sigint, on_signal, SIGINT);
    uv_signal_start(&d.sigterm, on_signal, SIGTERM);
    uv_signal_start(&d.sighup, on_signal, SIGHUP);
    /* A file-size limit (ulimit -f, systemd LimitFSIZE) makes write(2) fail
     * with EFBIG, which the journal reports like a full disk; its default
     * signal would kill the engine instead. */
    signal(SIGXFSZ, SIG_IGN);
    register_metrics(&d);

    int failed = start(&d, rs);
    cb_ruleset_release(rs); /* the engine keeps its own reference */
    if (failed) {
        d.exit_code = 1;
        d.stopping = 1;
        if (d.mqtt)
            cb_mqtt_stop(d.mqtt, on_mqtt_stopped, &d);
        else
            on_mqtt_stopped(&d);
    }
    uv_run(&d.loop, UV_RUN_DEFAULT);
    teardown(&d);
    int rc = uv_loop_close(&d.loop);
    if (rc)
        cb_warn(MOD, "event loop closed with handles open: %s", uv_strerror(rc));
    cb_metrics_free();
    if (d.exit_code == 0)
        cb_info(MOD, "stopped cleanly");
    return d.exit_code;
}

int cb_daemon_check(const struct cb_config *cfg)
{
    struct cb_diags diags = {0};
    struct cb_ruleset *rs = NULL;
    enum cmd_verdict v = cmd__validate_run(cfg, &diags, &rs);
    cmd__print_diags(&diags, 0);
    cb_diags_free(&diags);
    if (v != CMD_VALID)
        return (int)v;
    printf("configuration OK: broker %s, database %s, %zu rule(s)\n", cfg->mqtt_broker,
           cfg->storage_db, cb_ruleset_count(rs));
    cb_ruleset_release(rs);
    return 0;
}
