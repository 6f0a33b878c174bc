/* Configuration: one struct, filled from a table of options (config.c), so the
 * parser, the defaults, the validation, `citybrain run --help` and the
 * commented etc/citybrain.conf all come from the same place.
 *
 * File format: `key = value` per line, `#` comments, blank lines ignored.
 * Values may be quoted with "..." to keep spaces or a leading '#'.
 * A list option (type strlist) may be given several times; each line appends.
 * Durations: an integer with ms, s, m, h or d. Sizes: an integer with an
 * optional k, M or G (powers of 1024). */
#ifndef CB_BASE_CONFIG_H
#define CB_BASE_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "base/strbuf.h"

struct cb_strlist {
    char **items;
    size_t n;
};

enum cb_broker_start { CB_BROKER_START_FIRST = 0, CB_BROKER_START_ROTATE = 1 };
enum cb_sync_mode { CB_SYNC_NORMAL = 0, CB_SYNC_FULL = 1 };
enum cb_journal_fsync { CB_JOURNAL_FSYNC_NONE = 0, CB_JOURNAL_FSYNC_ALWAYS = 1 };

struct cb_config {
    /* log */
    int log_level; /* enum cb_log_level */

    /* mqtt */
    char *mqtt_broker;         /* one URL, or several separated by commas (cb_config_brokers) */
    int mqtt_broker_start;     /* enum cb_broker_start */
    struct cb_strlist mqtt_topics;
    int64_t mqtt_qos;
    char *mqtt_client_id;      /* "" = "citybrain-<hostname>" */
    int mqtt_clean_session;
    int mqtt_version;          /* 4 = 3.1.1, 5 = MQTT 5 */
    char *mqtt_username;
    char *mqtt_password;       /* also CITYBRAIN_MQTT_PASSWORD */
    char *mqtt_ca_file;
    char *mqtt_cert_file;
    char *mqtt_key_file;
    int mqtt_tls_verify;
    int64_t mqtt_keepalive_ms;
    int64_t mqtt_session_expiry_ms;
    int64_t mqtt_reconnect_min_ms;
    int64_t mqtt_reconnect_max_ms;
    int64_t mqtt_max_inflight;

    /* ingest */
    int64_t ingest_queue_max_messages;
    int64_t ingest_queue_max_bytes;
    int64_t ingest_coalesce_above;
    int64_t ingest_max_payload;
    int64_t ingest_max_topic_length;
    int64_t ingest_max_json_depth;
    int64_t ingest_max_fields;

    /* rules */
    struct cb_strlist rules_paths;
    int rules_allow_none;      /* run with no rule at all only when set */
    int64_t rules_max_skew_ms;
    int64_t rules_lateness_ms;
    int rules_watch;

    /* storage */
    char *storage_db;
    int storage_synchronous;        /* enum cb_sync_mode */
    int64_t storage_commit_interval_ms;
    int64_t storage_cache_size;     /* bytes of SQLite page cache per connection */
    int64_t storage_wal_checkpoint; /* WAL bytes that trigger an automatic checkpoint */
    char *storage_journal;          /* "" = "<db>.journal" */
    int storage_journal_fsync;      /* enum cb_journal_fsync */
    int64_t storage_journal_segment;
    int64_t storage_max_pending_rows;
    int64_t storage_retention_raw_ms;
    int64_t storage_retention_1m_ms;
    int64_t storage_retention_1h_ms;
    int64_t storage_retention_quarantine_ms;
    int64_t storage_retention_alerts_ms;
    int64_t storage_retention_interval_ms;
    int64_t storage_retention_step_rows;

    /* alerts */
    struct cb_strlist alerts_channels;
    struct cb_strlist alerts_default_notify;
    char *alerts_mqtt_prefix;
    int64_t alerts_storm_window_ms;
    char *alerts_cap_sender;
    int64_t alerts_webhook_timeout_ms;
    int64_t alerts_webhook_retry_min_ms;
    int64_t alerts_webhook_retry_max_ms;
    int64_t alerts_alertmanager_resend_ms;
    char *alerts_console_url;        /* "" = none: no generatorURL */

    /* http */
    char *http_listen;               /* "127.0.0.1:8080" or "off" */
    char *http_token;                /* also CITYBRAIN_API_TOKEN */
    char *http_read_token;           /* also CITYBRAIN_API_READ_TOKEN */
    struct cb_strlist http_departments; /* "NAME token=... topic=... label=..." lines */
    int http_open_reads;             /* reads without a token, while no department */
    char *http_tls_cert;             /* PEM certificate chain; "" = plain HTTP */
    char *http_tls_key;              /* PEM private key of http_tls_cert */
    int64_t http_max_connections;
    int64_t http_max_body;
    int64_t http_max_header;
    int64_t http_idle_timeout_ms;
    int64_t http_header_timeout_ms;
    char *http_cors_origin;          /* "" = CORS off */
    char *http_dashboard_dir;        /* "" = the dashboard shipped in api/dashboard */
    int64_t http_sse_heartbeat_ms;
    char *http_time_zone;            /* IANA name the console shows times in */
    char *http_city_map;             /* GeoJSON of the city's districts; "" = etc/city.geojson,
                                        "off" = no map */
    int64_t sensors_stale_after_ms;
    char *sensors_label_pattern;

    /* federation (docs/federation.md) */
    char *federation_engine;         /* "" = the client id */
    char *federation_export_topic;   /* "" = no export */
    int64_t federation_export_interval_ms;
    char *federation_control_topic;  /* "" = operator actions stay local */
    int64_t federation_peer_action_wait_ms; /* a peer's ack/close of an alert not firing here yet */
    /* cluster (docs/cluster.md) */
    char *cluster_partition;          /* "" = no cluster: one engine, always speaks */
    char *cluster_twin;               /* this twin's name within the partition */
    struct cb_strlist cluster_districts; /* "PARTITION DISTRICT FILTER" lines */
    struct cb_strlist cluster_lease;  /* AMQP URLs of the lease's broker nodes */
    char *cluster_lease_queue;        /* "" = "citybrain.lease.<partition>" */
    int64_t cluster_lease_heartbeat_ms;
    int64_t cluster_feed_memory_ms;
    int64_t cluster_feed_tolerance_ms;

    /* not an option: the file cb_config_load_file read last, NULL when none
     * (for messages: "channels of etc/citybrain.conf") */
    char *config_file;
};

/* A configuration error: "FILE:LINE: message" or "--option: message". */
struct cb_config_error {
    char text[512];
};

/* 0 when tz is an IANA time zone name (letters, digits, '/', '_', '+', '-';
 * and in /usr/share/zoneinfo where that exists), else -1. */
int cb_config_check_time_zone(const char *tz);

/* Fills cfg with every default. Returns 0, or -1 on OOM. */
int cb_config_defaults(struct cb_config *cfg);
/* Reads a file over the current values. Returns 0, or -1 with err set to the
 * first problem as "path:line: message" (unknown key, bad value, bad syntax). */
int cb_config_load_file(struct cb_config *cfg, const char *path, struct cb_config_error *err);
/* Sets one option by key, as from a file line or the command line. For a list,
 * `replace_list` clears the list first (command-line overrides replace the
 * file's list; repeated flags then append). `where` prefixes an error. */
int cb_config_set(struct cb_config *cfg, const char *key, const char *value, int replace_list,
                  const char *where, struct cb_config_error *err);
/* Sets one option from a `--set KEY=VALUE` argument: the key ends at the
 * first '=', the value is the rest (it may hold '=' and be empty); a list
 * option appends, as repeated lines of a file do. Returns 0, or -1 with err
 * "--set needs KEY=VALUE" when there is no '=', naming the environment variable
 * when KEY is a secret (cb_config_secret_env), or cb_config_set's error. */
int cb_config_set_arg(struct cb_config *cfg, const char *arg, struct cb_config_error *err);
/* Sets each secret from its environment variable when that is set and not
 * empty (CITYBRAIN_API_TOKEN, CITYBRAIN_API_READ_TOKEN, CITYBRAIN_MQTT_PASSWORD:
 * the option table's secrets). Returns 0, or -1 on OOM. */
int cb_config_apply_env(struct cb_config *cfg);
/* The environment variable of a secret option (http.token:
 * "CITYBRAIN_API_TOKEN"), or NULL when key is not a secret. Secrets come from
 * the environment or the configuration file only: the command line (seen by
 * everyone in ps) refuses them. */
const char *cb_config_secret_env(const char *key);
/* Whole-config checks after parsing (reconnect min <= max, TLS files exist
 * for ssl://, a key file needs a cert file, ...). Returns 0 or -1 with err. */
int cb_config_validate(const struct cb_config *cfg, struct cb_config_error *err);
void cb_config_free(struct cb_config *cfg);

/* Writes the commented example configuration (every option, its default and
 * help): etc/citybrain.conf is this output, checked by a unit test. */
void cb_config_write_example(struct cb_strbuf *out);
/* Writes one "  key  help (default: X)" line per option, for --help. */
void cb_config_write_help(struct cb_strbuf *out);

/* Parses a duration ("90s", "5m", "250ms", "1d"; a bare "0" is allowed) into
 * milliseconds. Returns 0 or -1. */
int cb_parse_duration_ms(const char *s, int64_t *out_ms);
/* Parses a size ("64k", "16M", "1G", "512") into bytes. Returns 0 or -1. */
int cb_parse_size(const char *s, int64_t *out);
/* The journal path: storage_journal, or "<db>.journal" when empty. Caller frees. */
char *cb_config_journal_path(const struct cb_config *cfg);
/* Splits mqtt.broker's comma-separated list into out (each URL trimmed of
 * spaces, empty entries skipped; out->n is 0 for a list of nothing). The
 * caller frees out's items and array. Returns 0, or -1 on OOM (out empty). */
int cb_config_brokers(const char *list, struct cb_strlist *out);
/* The client id: mqtt_client_id, or when empty "citybrain-<partition>-<twin>"
 * with cluster.partition set, else "citybrain-<hostname>". Caller frees. */
char *cb_config_client_id(const struct cb_config *cfg);
/* The topic filters the engine subscribes to: mqtt.topic without a
 * cluster.partition; with one, the filters of the partition's districts
 * (cluster.district lines) and the alert feed PREFIX/# (the twin learns what
 * was announced from it). Fills out with copies (free with
 * cb_strlist_free). Returns 0, or -1 on OOM. */
int cb_config_subscriptions(const struct cb_config *cfg, struct cb_strlist *out);
void cb_strlist_free(struct cb_strlist *l);
/* The lease queue: cluster.lease_queue, or "citybrain.lease.<partition>".
 * Caller frees. */
char *cb_config_lease_queue(const struct cb_config *cfg);

#endif
