/* The HTTP API's answers from the running daemon (cmd/api_provider.c).
 *
 * The provider owns this interface and the daemon fills it: the provider sees
 * the modules it reads (store, MQTT client, engine, alerts) and one door back
 * into the daemon (reload), never the daemon's own state, so the two files
 * do not import each other. */
#ifndef CB_CMD_API_PROVIDER_H
#define CB_CMD_API_PROVIDER_H

#include <stdint.h>

#include "alerts/alerts.h"
#include "api/api.h"
#include "base/config.h"
#include "base/looplag.h"
#include "ingest/ingest.h"
#include "lease/lease.h"
#include "rules/rules.h"
#include "storage/storage.h"

/* What the provider reads. Every pointer is borrowed and must outlive the
 * API; mqtt may be NULL (health then says "disconnected"). */
struct cmd_api_sources {
    const struct cb_config *cfg;
    struct cb_store *store;
    struct cb_mqtt *mqtt;
    struct cb_engine *engine;
    struct cb_alerts *alerts;
    struct cb_lease *lease;                       /* the partition's lease; NULL: no cluster */
    const struct cb_topic_pattern *label_pattern; /* sensors' labels; may be NULL */
    const struct cb_looplag *looplag;             /* the loop's lag; may be NULL */
    int64_t started_ms;                           /* wall clock at start, for uptime */
    /* Reloads the rules from disk (POST /api/rules/reload), asked through
     * `via` (a CMD_RELOAD_* name) by `by` with `note` ("" when not given),
     * and records it in the audit log: 0, or -1 with the diagnostics in
     * *diags (the caller frees them). */
    int (*reload_rules)(void *ctx, const char *via, const char *by, const char *note,
                        struct cb_diags *diags);
    void *reload_ctx;
    /* Shares an action taken through the API with the peer engines
     * (cmd__control_share's arguments: action CMD_CONTROL_*, by, target,
     * note, silence JSON); may be NULL. */
    int (*share)(void *ctx, const char *action, const char *by, const char *target,
                 const char *note, const char *silence);
    void *share_ctx;
};

/* How a reload was asked for (the audit entry's details "via"). */
#define CMD_RELOAD_API "api"
#define CMD_RELOAD_SIGHUP "sighup"
#define CMD_RELOAD_FILE "file_watch"
#define CMD_RELOAD_CONTROL "control" /* a peer engine's reload (docs/federation.md) */

/* GET /api/sensors from a store reader (also `citybrain sensors --json`):
 * {"sensors":[{topic, device, labels (captures of `labels`, may be NULL),
 * metrics:{m:{ts,value,unit}}, last_ts, stale}]}, a sensor stale when
 * now_ms - last_ts > stale_after_ms. Returns 0, or -1 on a read error. */
int cmd__sensors_json(struct cb_store_reader *r, const struct cb_topic_pattern *labels,
                      int64_t now_ms, int64_t stale_after_ms, struct cb_strbuf *out);

/* Fills *p with the daemon's answers, reading from *src (borrowed: it must
 * outlive the API). */
void cmd__api_provider(struct cmd_api_sources *src, struct cb_api_provider *p);

#endif
