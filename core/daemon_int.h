/* The daemon's state, shared by the files of core/ that wire modules
 * together (daemon.c, api_provider.c). Loop thread only, except where noted. */
#ifndef CB_CORE_DAEMON_INT_H
#define CB_CORE_DAEMON_INT_H

#include <uv.h>

#include "alerts/alerts.h"
#include "api/api.h"
#include "core/config.h"
#include "core/metrics.h"
#include "ingest/ingest.h"
#include "rules/rules.h"
#include "storage/storage.h"

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
    struct watch **watches;
    size_t nwatches;

    struct cb_journal *journal;
    struct cb_store *store;
    struct cb_mqtt *mqtt;
    struct cb_engine *engine;
    struct cb_decoder *decoder;
    struct cb_alerts *alerts;
    struct cb_api *api;
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
    struct cb_strbuf feed; /* the alert feed's JSON, reused */

    uint64_t *m_msg_accepted, *m_msg_rejected;
    uint64_t *m_rejected[CB_REJECT__COUNT];
    uint64_t *m_samples[4]; /* by enum cb_sample_verdict */
    uint64_t *m_transitions, *m_reloads, *m_reload_errors, *m_feed_failed;
    struct cb_histogram *h_eval, *h_journal;
};

/* Reloads the rules from disk. Returns 0, or -1 with the diagnostics in
 * *diags (the caller frees them) when a file has errors; the running rules
 * then go on unchanged. */
int core__reload_rules(struct cb_daemon *d, const char *why, struct cb_diags *diags);
/* Fills the HTTP API's provider with the daemon's answers. */
void core__api_provider(struct cb_daemon *d, struct cb_api_provider *p);

#endif
