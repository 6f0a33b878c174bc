/* Federation (docs/federation.md): what one engine shares with the others
 * through the broker. The city tier's export: every alert instance's state
 * as numeric samples a city engine ingests like any sensor's. */
#ifndef CB_CMD_FEDERATION_H
#define CB_CMD_FEDERATION_H

#include <stddef.h>
#include <stdint.h>

#include "alerts/alerts.h"
#include "base/strbuf.h"
#include "ingest/ingest.h"
#include "rules/rules.h"

/* The export topic of instance t: TOPIC/<rule>/<engine>/<label value>/...
 * (labels in the instance's order; '/', '+' and '#' in a value become '_',
 * an empty value is "_"). Written into out (reset first). */
void cmd__export_topic(struct cb_strbuf *out, const char *topic, const char *engine,
                       const struct cb_transition *t);

/* The export payload of instance t as a SenML pack (RFC 8428), time in
 * seconds: [{"bn":"<engine>:<id>","bt":S,"n":"active","v":0|1},
 * {"n":"severity","v":0..4},{"n":"value","v":X}]: active 1 while firing
 * (escalated, acknowledged), 0 once resolved; severity info 1, warning 2,
 * major 3, critical 4, 0 when not active; value t->value (the `when` value),
 * its record left out when that is unknown (NaN). at_ms is the samples' time. Returns 0, or
 * -1 when t's state exports nothing (pending, inactive, progress). */
/* The time a transition's export is stamped with (ms): its evidence, the
 * newest sample time of the instance's sensors (t->last_sample; t->at when it
 * has none), so the twins' copies are the same sample and a restarted
 * engine's backlog, exported again, is older at the city tier than what it
 * already has and changes nothing there. Never at or before last_sweep_ms,
 * the wall clock of the last periodic export (0: none yet), whose packs a
 * later transition of the same instance must supersede. */
int64_t cmd__export_stamp(const struct cb_transition *t, int64_t last_sweep_ms);

int cmd__export_payload(struct cb_strbuf *out, const char *engine,
                        const struct cb_transition *t, int64_t at_ms);

/* ---- operator actions shared with the peer engines (federation.control_topic) ---- */

/* The actions shared: what the control message's "action" says. */
#define CMD_CONTROL_ACK "ack"
#define CMD_CONTROL_CLOSE "close"
#define CMD_CONTROL_SILENCE_CREATE "silence_create"
#define CMD_CONTROL_SILENCE_EXPIRE "silence_expire"
#define CMD_CONTROL_RELOAD "rules_reload"

/* What applying a peer's action touches (borrowed; the daemon's). */
struct cmd_control_targets {
    struct cb_engine *engine;
    struct cb_alerts *alerts;
    /* Reloads the rules from this engine's own files, asked `via` (a
     * CMD_RELOAD_* name) by `by`: 0, or -1 with diagnostics (caller frees). */
    int (*reload_rules)(void *ctx, const char *via, const char *by, const char *note,
                        struct cb_diags *diags);
    void *reload_ctx;
};

struct cmd_control;

/* A control channel on topic for this engine, origin (its client id: unique
 * per twin); a peer's ack or close of an alert that does not fire here yet
 * waits up to wait_ms for it (0: not kept). NULL on OOM. */
struct cmd_control *cmd__control_new(const char *topic, const char *origin, int64_t wait_ms);
void cmd__control_free(struct cmd_control *c);
/* Remembers the control ids the audit log of db_path names (details
 * "control_id", entries of the last 30 days), so a message applied before a
 * restart and delivered again (journal replay, broker redelivery) is not
 * applied twice. Returns the number found, or -1 with err. */
long cmd__control_load_seen(struct cmd_control *c, const char *db_path, int64_t now_ms,
                            char *err, size_t errlen);

/* Publishes an action taken here (QoS 1, not retained) for the peers:
 * {"id","origin","at","action","by","target","note","silence"}. target: the
 * alert id (ack, close) or NULL; silence: the silence's JSON object
 * (cb_alerts_silence_json) for silence_create and silence_expire, else
 * NULL. Returns 0, or -1 when it could not be handed to the client. */
int cmd__control_share(struct cmd_control *c, struct cb_mqtt *mqtt, int64_t now_ms,
                       const char *action, const char *by, const char *target,
                       const char *note, const char *silence);

/* Applies a control message received on the topic (loop thread), once:
 * returns 1 when applied, 0 when skipped (its own, or an id seen before), 2
 * when it waits (an ack or close of an alert that does not fire here yet:
 * see cmd__control_retry), -1 when it is malformed or could not be applied
 * (why in err). Every audit entry it causes carries "origin" and
 * "control_id" in its details. */
int cmd__control_apply(struct cmd_control *c, const struct cmd_control_targets *t,
                       const char *payload, size_t len, int64_t now_ms, char *err,
                       size_t errlen);

/* The waiting actions (loop thread): each whose alert now fires here is
 * applied (as cmd__control_apply would have), each whose wait has ended by
 * now_ms is dropped; both logged. Returns how many were applied. Call it
 * when an instance starts firing, and at cmd__control_next_due. */
int cmd__control_retry(struct cmd_control *c, const struct cmd_control_targets *t,
                       int64_t now_ms);
/* When the first waiting action's wait ends (ms), INT64_MAX when none waits. */
int64_t cmd__control_next_due(const struct cmd_control *c);

#endif
