/* What a start needs before the first sample, shared by `run` (daemon.c) and
 * `replay --restart-at` (cmd_rules.c), so the property test of restart
 * transparency exercises the daemon's own path: the alert instances from the
 * alert store, then the windows and latest values from the sample store. */
#include "cmd/restore.h"
#include "base/log.h"

#include <stdint.h>

static void restore_instance(void *ctx, const struct cb_transition *t, int acked,
                             int64_t acked_at)
{
    struct cb_engine *e = ctx;
    int rc = cb_engine_restore(e, t, acked, acked_at);
    if (rc < 0)
        cb_error("alert", "%s: out of memory restoring it", t->id);
    else if (rc > 0 && t->state != CB_ALERT_RESOLVED)
        cb_warn("alert", "%s: its rule %s since it was stored; ending it", t->id,
                cb_engine_has_rule(e, t->rule) ? "changed" : "is gone");
}

int cmd__restore_instances(struct cb_engine *e, struct cb_alerts *alerts)
{
    return cb_alerts_load(alerts, restore_instance, e);
}

static int prime_row(void *ctx, const char *topic, const char *metric, int64_t ts, double value)
{
    struct cb_sample s = {.metric = metric, .ts_ms = ts, .value = value};
    return cb_engine_prime(ctx, topic, &s) < 0;
}

static int prime_sensor(void *ctx, const struct cb_sensor_info *info)
{
    for (size_t i = 0; i < info->nmetrics; i++) {
        const struct cb_sensor_metric *m = &info->metrics[i];
        if (m->last_ts == INT64_MIN)
            continue;
        struct cb_sample s = {.metric = m->metric, .ts_ms = m->last_ts, .value = m->last_value};
        if (cb_engine_prime_latest(ctx, info->topic, &s) < 0)
            return 1;
    }
    return 0;
}

int cmd__prime_engine(struct cb_engine *e, const char *db_path, int64_t now, int64_t lateness_ms,
                      char *err, size_t errlen)
{
    struct cb_store_reader *r = cb_store_reader_open(db_path, err, errlen);
    if (!r)
        return -1;
    int rc = 0;
    int64_t span = cb_engine_max_window_ms(e);
    if (span > 0 && cb_store_scan_since(r, now - span - lateness_ms, prime_row, e)) {
        snprintf(err, errlen, "rebuilding windows: %s", cb_store_reader_error(r));
        rc = -1;
    } else if (cb_store_list_sensors(r, prime_sensor, e)) {
        snprintf(err, errlen, "rebuilding the sensors' latest values: %s",
                 cb_store_reader_error(r));
        rc = -1;
    }
    cb_store_reader_close(r);
    return rc;
}
