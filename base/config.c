/* The option table and its parser; see config.h. */
#include "base/config.h"
#include "base/log.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum opt_type { T_STRING, T_INT, T_BOOL, T_DURATION, T_SIZE, T_ENUM, T_STRLIST };

struct option {
    const char *key;
    enum opt_type type;
    size_t offset;
    int64_t min, max;         /* T_INT, T_DURATION (ms), T_SIZE */
    const char *def;          /* default, as written in the file */
    const char *const *names; /* T_ENUM: value names, NULL-terminated */
    const int *values;        /* T_ENUM: the int stored for each name */
    const char *help;
    const char *section;      /* printed as a heading before the first option of it */
};

#define OFF(field) offsetof(struct cb_config, field)
#define DAY (86400LL * 1000)

static const char *const level_names[] = {"error", "warn", "info", "debug", NULL};
static const int level_values[] = {CB_LOG_ERROR, CB_LOG_WARN, CB_LOG_INFO, CB_LOG_DEBUG};
static const char *const version_names[] = {"3.1.1", "5", NULL};
static const int version_values[] = {4, 5};
static const char *const broker_start_names[] = {"first", "rotate", NULL};
static const int broker_start_values[] = {CB_BROKER_START_FIRST, CB_BROKER_START_ROTATE};
static const char *const sync_names[] = {"normal", "full", NULL};
static const int sync_values[] = {CB_SYNC_NORMAL, CB_SYNC_FULL};
static const char *const fsync_names[] = {"none", "always", NULL};
static const int fsync_values[] = {CB_JOURNAL_FSYNC_NONE, CB_JOURNAL_FSYNC_ALWAYS};

static const struct option options[] = {
    {"log.level", T_ENUM, OFF(log_level), 0, 0, "info", level_names, level_values,
     "least severe level written to stderr: error, warn, info or debug", "Logging"},

    {"mqtt.broker", T_STRING, OFF(mqtt_broker), 0, 0, "tcp://127.0.0.1:1883", 0, 0,
     "broker URL: tcp://host:port, or ssl://host:port for TLS; several, comma-separated, for "
     "a broker cluster: each connect and reconnect walks the list until one answers (see "
     "docs/federation.md)",
     "MQTT"},
    {"mqtt.broker_start", T_ENUM, OFF(mqtt_broker_start), 0, 0, "first", broker_start_names,
     broker_start_values,
     "where the walk of mqtt.broker starts: first (the list's order), or rotate (at a place "
     "given by a hash of the client id, so the engines of a city spread over the brokers)",
     0},
    {"mqtt.topic", T_STRLIST, OFF(mqtt_topics), 0, 0, "city/#", 0, 0,
     "topic filter to subscribe to; repeat the line for several; $share/GROUP/FILTER for "
     "shared subscriptions", 0},
    {"mqtt.qos", T_INT, OFF(mqtt_qos), 0, 1, "1", 0, 0,
     "subscription QoS: 1 loses nothing (with a persistent session), 0 may drop under load", 0},
    {"mqtt.client_id", T_STRING, OFF(mqtt_client_id), 0, 0, "", 0, 0,
     "stable client id; empty means citybrain-<hostname>", 0},
    {"mqtt.clean_session", T_BOOL, OFF(mqtt_clean_session), 0, 0, "false", 0, 0,
     "start a fresh session on connect; false keeps QoS 1 messages queued at the broker "
     "while citybrain is down",
     0},
    {"mqtt.version", T_ENUM, OFF(mqtt_version), 0, 0, "3.1.1", version_names, version_values,
     "MQTT protocol version: 3.1.1 or 5 (5 announces a Maximum Packet Size from "
     "ingest.max_payload and ingest.max_topic_length, so the broker never sends a larger "
     "message)",
     0},
    {"mqtt.username", T_STRING, OFF(mqtt_username), 0, 0, "", 0, 0, "user name; empty for none",
     0},
    {"mqtt.password", T_STRING, OFF(mqtt_password), 0, 0, "", 0, 0,
     "password; the environment variable CITYBRAIN_MQTT_PASSWORD overrides it (a secret: "
     "never on the command line)",
     0},
    {"mqtt.ca_file", T_STRING, OFF(mqtt_ca_file), 0, 0, "", 0, 0,
     "ssl://: PEM file of trusted CAs; empty uses the system store", 0},
    {"mqtt.cert_file", T_STRING, OFF(mqtt_cert_file), 0, 0, "", 0, 0,
     "ssl://: client certificate (PEM) for mutual TLS; empty for none", 0},
    {"mqtt.key_file", T_STRING, OFF(mqtt_key_file), 0, 0, "", 0, 0,
     "ssl://: private key of the client certificate (PEM)", 0},
    {"mqtt.tls_verify", T_BOOL, OFF(mqtt_tls_verify), 0, 0, "true", 0, 0,
     "ssl://: verify the broker's certificate and host name", 0},
    {"mqtt.keepalive", T_DURATION, OFF(mqtt_keepalive_ms), 1000, 3600 * 1000LL, "30s", 0, 0,
     "keepalive interval", 0},
    {"mqtt.session_expiry", T_DURATION, OFF(mqtt_session_expiry_ms), 0, 365 * DAY, "1d", 0, 0,
     "MQTT 5: how long the broker keeps the session after a disconnect", 0},
    {"mqtt.reconnect_min", T_DURATION, OFF(mqtt_reconnect_min_ms), 100, 3600 * 1000LL, "1s", 0,
     0, "first reconnect delay; doubles on each failure, with jitter", 0},
    {"mqtt.reconnect_max", T_DURATION, OFF(mqtt_reconnect_max_ms), 100, 3600 * 1000LL, "60s",
     0, 0, "longest reconnect delay", 0},
    {"mqtt.max_inflight", T_INT, OFF(mqtt_max_inflight), 1, 65535, "1000", 0, 0,
     "QoS 1 messages the broker may have in flight to us (MQTT 5 receive maximum)", 0},

    {"ingest.queue_max_messages", T_INT, OFF(ingest_queue_max_messages), 16, 100000000,
     "200000", 0, 0,
     "messages held between the MQTT thread and the loop; when full, QoS 1 messages wait "
     "at the broker and QoS 0 messages are dropped and counted",
     "Ingest"},
    {"ingest.queue_max_bytes", T_SIZE, OFF(ingest_queue_max_bytes), 65536, 1LL << 40, "256M", 0,
     0, "bytes held in that queue at most", 0},
    {"ingest.coalesce_above", T_INT, OFF(ingest_coalesce_above), 0, 100000000, "20000", 0, 0,
     "messages/s above which the loop collects arrivals every millisecond instead of being "
     "woken for each one (saves a thread wake-up per message under load, adds up to 1 ms); "
     "0 = always woken at once",
     0},
    {"ingest.max_payload", T_SIZE, OFF(ingest_max_payload), 16, 256LL << 20, "64k", 0, 0,
     "largest payload accepted; a larger one is refused on the MQTT thread before it is "
     "copied or journaled, and counted (citybrain_ingest_rejected_total, payload_too_large); "
     "with mqtt.version = 5 the broker is told not to send it at all",
     0},
    {"ingest.max_topic_length", T_INT, OFF(ingest_max_topic_length), 8, 65535, "256", 0, 0,
     "longest topic accepted; a longer one is refused like an oversize payload "
     "(topic_too_long)",
     0},
    {"ingest.max_json_depth", T_INT, OFF(ingest_max_json_depth), 1, 64, "8", 0, 0,
     "deepest JSON nesting accepted (too_deep)", 0},
    {"ingest.max_fields", T_INT, OFF(ingest_max_fields), 1, 100000, "256", 0, 0,
     "most samples one payload may carry (too_many_fields)", 0},

    {"rules.path", T_STRLIST, OFF(rules_paths), 0, 0, "", 0, 0,
     "rule file or directory of *.rules; repeat for several. run refuses to start with no "
     "rule at all (see rules.allow_none)",
     "Rules"},
    {"rules.allow_none", T_BOOL, OFF(rules_allow_none), 0, 0, "false", 0, 0,
     "let run start (and a reload succeed) with no rule at all; without it, no rules is "
     "refused (exit 2), since every stored firing alert would be resolved",
     0},
    {"rules.max_skew", T_DURATION, OFF(rules_max_skew_ms), 0, 7 * DAY, "60s", 0, 0,
     "samples further ahead of now are rejected as from the future", 0},
    {"rules.lateness", T_DURATION, OFF(rules_lateness_ms), 0, 7 * DAY, "5m", 0, 0,
     "samples older than now minus this are stored but not evaluated (counted as late)", 0},
    {"rules.watch", T_BOOL, OFF(rules_watch), 0, 0, "true", 0, 0,
     "reload rules when a rule file changes (SIGHUP always reloads)", 0},

    {"storage.db", T_STRING, OFF(storage_db), 0, 0, "./citybrain.db", 0, 0,
     "SQLite database file (WAL mode)", "Storage"},
    {"storage.synchronous", T_ENUM, OFF(storage_synchronous), 0, 0, "normal", sync_names,
     sync_values,
     "SQLite synchronous: normal survives a crash of citybrain, full also a power loss", 0},
    {"storage.commit_interval", T_DURATION, OFF(storage_commit_interval_ms), 10, 60000, "1s", 0,
     0, "samples are committed in one transaction per interval", 0},
    {"storage.cache_size", T_SIZE, OFF(storage_cache_size), 1 << 20, 1LL << 36, "64M", 0, 0,
     "SQLite page cache of the writer", 0},
    {"storage.wal_checkpoint", T_SIZE, OFF(storage_wal_checkpoint), 64 << 10, 1LL << 36, "64M",
     0, 0,
     "WAL size at which the writer copies it back into the database file; a larger one "
     "rewrites the pages every commit touches less often (12 % of the writer's CPU at 64M "
     "against SQLite's 4M) for a larger -wal file",
     0},
    {"storage.journal", T_STRING, OFF(storage_journal), 0, 0, "", 0, 0,
     "ingest journal directory (crash safety for acknowledged messages); empty means "
     "<db>.journal",
     0},
    {"storage.journal_fsync", T_ENUM, OFF(storage_journal_fsync), 0, 0, "none", fsync_names,
     fsync_values,
     "none: the journal survives a crash of citybrain; always: a flush to disk per message "
     "(msync), also a power loss, at a large cost in throughput",
     0},
    {"storage.journal_segment", T_SIZE, OFF(storage_journal_segment), 1 << 16, 1LL << 34, "64M",
     0, 0, "journal segment size before rotation", 0},
    {"storage.max_pending_rows", T_INT, OFF(storage_max_pending_rows), 1000, 1000000000,
     "2000000", 0, 0,
     "rows held in memory while the database cannot be written (disk full); beyond, the rows "
     "of journaled (QoS 1) messages are left to the journal (stored at the next start) and "
     "those of QoS 0 messages are lost, each counted",
     0},
    {"storage.retention.raw", T_DURATION, OFF(storage_retention_raw_ms), 0, 36500 * DAY, "7d",
     0, 0, "keep raw samples this long (0 = forever)", 0},
    {"storage.retention.1m", T_DURATION, OFF(storage_retention_1m_ms), 0, 36500 * DAY, "90d", 0,
     0, "keep 1-minute rollups this long (0 = forever)", 0},
    {"storage.retention.1h", T_DURATION, OFF(storage_retention_1h_ms), 0, 36500 * DAY, "730d",
     0, 0, "keep 1-hour rollups this long (0 = forever)", 0},
    {"storage.retention.quarantine", T_DURATION, OFF(storage_retention_quarantine_ms), 0,
     36500 * DAY, "30d", 0, 0, "keep quarantined samples this long (0 = forever)", 0},
    {"storage.retention.alerts", T_DURATION, OFF(storage_retention_alerts_ms), 0, 36500 * DAY,
     "365d", 0, 0,
     "keep resolved alerts, their transition log, ended silences and the audit log this long "
     "(0 = forever)",
     0},
    {"storage.retention.interval", T_DURATION, OFF(storage_retention_interval_ms), 1000,
     DAY, "10s", 0, 0, "how often a retention step runs", 0},
    {"storage.retention.step_rows", T_INT, OFF(storage_retention_step_rows), 10, 1000000,
     "5000", 0, 0,
     "rows deleted per retention step at most, so deletion never stalls ingestion (a rollup "
     "derivation step reads 8 times as many rows, a compaction slice moves a quarter as many "
     "chunks)",
     0},

    {"alerts.channel", T_STRLIST, OFF(alerts_channels), 0, 0,
     "ops type=log|cap type=mqtt format=cap prefix=citybrain/cap", 0, 0,
     "notification channel chosen by a rule's notify clause: NAME "
     "type=mqtt|webhook|alertmanager|log [format=json|cap] [url=URL] [prefix=TOPIC] "
     "(alertmanager: url= is Alertmanager's address, e.g. http://127.0.0.1:9093, and the "
     "alerts go to its /api/v2/alerts); repeat for several (the lines of a file "
     "replace this default list). The channel `log` (type=log) is built in unless a line "
     "defines one named log. The example rules notify `ops` (point it at your duty system, "
     "e.g. ops type=webhook url=https://duty.example/hook) and `cap` (CAP 1.2 XML); a "
     "notify name no channel has is an error in check, run and reload",
     "Alerts"},
    {"alerts.default_notify", T_STRLIST, OFF(alerts_default_notify), 0, 0, "log", 0, 0,
     "channels used by rules without a notify clause", 0},
    {"alerts.mqtt_prefix", T_STRING, OFF(alerts_mqtt_prefix), 0, 0, "citybrain/alerts", 0, 0,
     "every alert transition is published as JSON on PREFIX/<rule> (QoS 1), whatever the "
     "rule's notify clause (in a cluster, by the twin holding the lease)",
     0},
    {"alerts.storm_window", T_DURATION, OFF(alerts_storm_window_ms), 0, 3600 * 1000LL, "10s", 0,
     0,
     "notifications of one rule and group are gathered this long into one (0 = send each)", 0},
    {"alerts.cap_sender", T_STRING, OFF(alerts_cap_sender), 0, 0, "citybrain@localhost", 0, 0,
     "CAP 1.2 <sender>", 0},
    {"alerts.webhook_timeout", T_DURATION, OFF(alerts_webhook_timeout_ms), 100, 600000, "5s", 0,
     0, "time limit of one webhook request", 0},
    {"alerts.webhook_retry_min", T_DURATION, OFF(alerts_webhook_retry_min_ms), 10, 3600000, "1s",
     0, 0, "first retry delay of a failed webhook delivery; doubles each time", 0},
    {"alerts.webhook_retry_max", T_DURATION, OFF(alerts_webhook_retry_max_ms), 10, DAY, "5m", 0,
     0, "longest retry delay", 0},

    {"alerts.alertmanager_resend", T_DURATION, OFF(alerts_alertmanager_resend_ms), 1000,
     3600000, "1m", 0, 0,
     "type=alertmanager channels: every live alert (firing, escalated, acknowledged) is sent "
     "again this often, with endsAt four intervals ahead (Prometheus's resend delay, 1m, does "
     "the same), so Alertmanager keeps it active; a resolved one is sent once with endsAt",
     0},
    {"alerts.console_url", T_STRING, OFF(alerts_console_url), 0, 0, "", 0, 0,
     "the console's address as operators reach it (e.g. https://eoc.example:8443/), sent as "
     "an Alertmanager alert's generatorURL; empty: none",
     0},
    {"http.listen", T_STRING, OFF(http_listen), 0, 0, "127.0.0.1:8080", 0, 0,
     "ADDRESS:PORT of the HTTP API and dashboard, or off", "HTTP API"},
    {"http.token", T_STRING, OFF(http_token), 0, 0, "", 0, 0,
     "read-write bearer token for writes; CITYBRAIN_API_TOKEN overrides it; empty: writes "
     "are refused (a secret: never on the command line)",
     0},
    {"http.read_token", T_STRING, OFF(http_read_token), 0, 0, "", 0, 0,
     "read-only bearer token for the whole city; CITYBRAIN_API_READ_TOKEN overrides it (a "
     "secret: never on the command line). This and http.token may be stored as "
     "sha256:HEX, the hex SHA-256 of the token",
     0},
    {"http.department", T_STRLIST, OFF(http_departments), 0, 0, "", 0, 0,
     "a department's read token, limited to part of the city: NAME token=SECRET|sha256:HEX "
     "[topic=FILTER]... [label=NAME=VALUE[,VALUE]]...; repeat for several. It reads the "
     "sensors, series, alerts and map of its scope only (docs/api.md \"Departments\"); once "
     "one is configured, reads without a token are refused. A token stored as sha256: is "
     "the hex SHA-256 of the token (printf %s TOKEN | sha256sum). Configuration file only, "
     "never on the command line",
     0},
    {"http.open_reads", T_BOOL, OFF(http_open_reads), 0, 0, "true", 0, 0,
     "answer reads without a token (the whole city); off: every read needs http.token, "
     "http.read_token or a department's token. Ignored (reads are closed) once an "
     "http.department is configured",
     0},
    {"http.tls_cert", T_STRING, OFF(http_tls_cert), 0, 0, "", 0, 0,
     "PEM certificate (chain: the server's first, then intermediates) of HTTPS on "
     "http.listen; empty: plain HTTP. With it the API speaks TLS 1.2 or later, HTTP/2 and "
     "HTTP/1.1 (ALPN). SIGHUP reads the certificate and key again, without a restart; a pair "
     "that fails to load keeps the previous one (logged)",
     0},
    {"http.tls_key", T_STRING, OFF(http_tls_key), 0, 0, "", 0, 0,
     "PEM private key of http.tls_cert (keep it readable by citybrain only)", 0},
    {"http.max_connections", T_INT, OFF(http_max_connections), 1, 100000, "512", 0, 0,
     "open connections at most; more are refused", 0},
    {"http.max_body", T_SIZE, OFF(http_max_body), 256, 64LL << 20, "64k", 0, 0,
     "largest request body (413 beyond)", 0},
    {"http.max_header", T_SIZE, OFF(http_max_header), 1024, 1LL << 20, "16k", 0, 0,
     "largest request header block (431 beyond)", 0},
    {"http.idle_timeout", T_DURATION, OFF(http_idle_timeout_ms), 100, 3600000, "30s", 0, 0,
     "an idle connection is closed after this", 0},
    {"http.header_timeout", T_DURATION, OFF(http_header_timeout_ms), 100, 600000, "10s", 0, 0,
     "a request whose headers take longer is closed (slow clients)", 0},
    {"http.cors_origin", T_STRING, OFF(http_cors_origin), 0, 0, "", 0, 0,
     "allowed CORS origin; empty turns CORS off", 0},
    {"http.dashboard_dir", T_STRING, OFF(http_dashboard_dir), 0, 0, "", 0, 0,
     "folder of the dashboard's files; empty uses the one shipped with citybrain", 0},
    {"http.sse_heartbeat", T_DURATION, OFF(http_sse_heartbeat_ms), 1000, 600000, "15s", 0, 0,
     "comment line sent on idle /api/events streams", 0},
    {"http.time_zone", T_STRING, OFF(http_time_zone), 0, 0, "Asia/Shanghai", 0, 0,
     "IANA time zone of the console's clock and dates (24-hour), served in /api/console", 0},
    {"http.city_map", T_STRING, OFF(http_city_map), 0, 0, "", 0, 0,
     "GeoJSON of the city for the console's map (district outlines, sensor points), served "
     "as /api/city; empty uses etc/city.geojson (the simulator's city); off for no map",
     0},
    {"sensors.stale_after", T_DURATION, OFF(sensors_stale_after_ms), 1000, 30 * DAY, "10m", 0, 0,
     "a sensor silent this long is shown as stale", 0},
    {"sensors.label_pattern", T_STRING, OFF(sensors_label_pattern), 0, 0,
     "city/{district}/{kind}/{sensor}", 0, 0,
     "topic pattern whose {label} captures name a sensor's labels in the API and dashboard "
     "(district overview); labels {lat} and {lon} (or {latitude} and {longitude}), in "
     "degrees, place it on the console's map; empty for none",
     0},

    {"federation.engine", T_STRING, OFF(federation_engine), 0, 0, "", 0, 0,
     "this engine's name in exported topics and control messages; twins of one partition "
     "give the same name; empty means the client id (see docs/federation.md)",
     "Federation"},
    {"federation.export_topic", T_STRING, OFF(federation_export_topic), 0, 0, "", 0, 0,
     "publish every alert instance's state as SenML samples (active, severity and, when "
     "known, value: the left side of the first comparison of its when) on "
     "TOPIC/<rule>/<engine>/<label values...> for a city tier to ingest, e.g. "
     "citybrain/export/city; empty for none",
     0},
    {"federation.export_interval", T_DURATION, OFF(federation_export_interval_ms), 1000,
     DAY, "1m", 0, 0,
     "how often the state of every firing instance is published again (a city rule tells a "
     "silent district by age()); the first time one interval after start",
     0},
    {"federation.control_topic", T_STRING, OFF(federation_control_topic), 0, 0, "", 0, 0,
     "share operator actions (ack, close, silences, rule reloads) with the peer engines on "
     "this topic, e.g. citybrain/control/d07; empty for none",
     0},
    {"federation.peer_action_wait", T_DURATION, OFF(federation_peer_action_wait_ms), 0,
     3600 * 1000LL, "2m", 0, 0,
     "a peer engine's ack or close of an alert that does not fire here yet waits this long "
     "for it to fire here (twins judge the same telemetry a moment apart), then is dropped "
     "with a warning; 0: not kept",
     0},
    {"cluster.partition", T_STRING, OFF(cluster_partition), 0, 0, "", 0, 0,
     "the partition this engine serves (docs/cluster.md); empty: no cluster, the engine "
     "subscribes to mqtt.topic and always speaks. Set, it subscribes to the partition's "
     "districts and the alert feed, and speaks only while it holds the partition's lease",
     "Cluster"},
    {"cluster.twin", T_STRING, OFF(cluster_twin), 0, 0, "", 0, 0,
     "this twin's name within the partition (letters, digits, _ -), e.g. a or b; with "
     "mqtt.client_id empty the client id is citybrain-<partition>-<twin>",
     0},
    {"cluster.district", T_STRLIST, OFF(cluster_districts), 0, 0, "", 0, 0,
     "one district of a partition: PARTITION DISTRICT FILTER (an MQTT topic filter); repeat "
     "for each district; every engine may carry the whole city's list",
     0},
    {"cluster.lease", T_STRLIST, OFF(cluster_lease), 0, 0, "", 0, 0,
     "AMQP URL of a broker node holding the lease queue, amqp://user:password@host:port[/vhost] "
     "(no vhost: /); repeat for each node: they are tried in turn, twin by twin from a "
     "different one. It holds a password: write it in the configuration file, not on the "
     "command line",
     0},
    {"cluster.lease_queue", T_STRING, OFF(cluster_lease_queue), 0, 0, "", 0, 0,
     "the lease's quorum queue; empty: citybrain.lease.<partition>", 0},
    {"cluster.lease_heartbeat", T_DURATION, OFF(cluster_lease_heartbeat_ms), 1000, 60000, "2s",
     0, 0,
     "AMQP heartbeat of the lease connection (whole seconds): a silent connection is dead "
     "after two, and a holder that cannot reach the broker falls silent by then",
     0},
    {"cluster.feed_memory", T_DURATION, OFF(cluster_feed_memory_ms), 1000, DAY, "10m", 0, 0,
     "how long a silent twin remembers an event heard on the alert feed, and keeps an event of "
     "its own the feed has not carried (dropped after this, counted)",
     0},
    {"cluster.feed_tolerance", T_DURATION, OFF(cluster_feed_tolerance_ms), 0, 3600 * 1000LL,
     "5s", 0, 0,
     "an event heard on the feed is the twin's own event when id, state and severity are equal "
     "and their since differs by at most this (each twin stamps since with its own clock)",
     0},
};

#define NOPTIONS (sizeof options / sizeof options[0])

static void set_error(struct cb_config_error *err, const char *where, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_error(struct cb_config_error *err, const char *where, const char *fmt, ...)
{
    if (!err)
        return;
    int n = snprintf(err->text, sizeof err->text, "%s: ", where ? where : "config");
    if (n < 0 || (size_t)n >= sizeof err->text)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->text + n, sizeof err->text - (size_t)n, fmt, ap);
    va_end(ap);
}

int cb_parse_duration_ms(const char *s, int64_t *out_ms)
{
    errno = 0;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (end == s || errno || v < 0)
        return -1;
    int64_t unit;
    if (strcmp(end, "ms") == 0)
        unit = 1;
    else if (strcmp(end, "s") == 0)
        unit = 1000;
    else if (strcmp(end, "m") == 0)
        unit = 60000;
    else if (strcmp(end, "h") == 0)
        unit = 3600000;
    else if (strcmp(end, "d") == 0)
        unit = DAY;
    else if (*end == '\0' && v == 0)
        unit = 1;
    else
        return -1;
    if (v > INT64_MAX / unit)
        return -1;
    *out_ms = v * unit;
    return 0;
}

int cb_parse_size(const char *s, int64_t *out)
{
    errno = 0;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (end == s || errno || v < 0)
        return -1;
    int64_t unit = 1;
    if (*end == 'k' || *end == 'K')
        unit = 1024, end++;
    else if (*end == 'M')
        unit = 1024 * 1024, end++;
    else if (*end == 'G')
        unit = 1024 * 1024 * 1024, end++;
    if (*end == 'B' || *end == 'b')
        end++;
    if (*end || v > INT64_MAX / unit)
        return -1;
    *out = v * unit;
    return 0;
}

static const struct option *find_option(const char *key)
{
    for (size_t i = 0; i < NOPTIONS; i++)
        if (strcmp(options[i].key, key) == 0)
            return &options[i];
    return NULL;
}

/* The option with the smallest edit distance, for "did you mean". */
static const struct option *closest_option(const char *key)
{
    const struct option *best = NULL;
    size_t best_d = 4;
    for (size_t i = 0; i < NOPTIONS; i++) {
        const char *a = key, *b = options[i].key;
        size_t la = strlen(a), lb = strlen(b);
        /* The lengths' difference is a floor of the distance: most options
         * are ruled out without filling the table. */
        if (la > 64 || lb > 64 || (la > lb ? la - lb : lb - la) >= best_d)
            continue;
        size_t d[65][65];
        for (size_t x = 0; x <= la; x++)
            d[x][0] = x;
        for (size_t y = 0; y <= lb; y++)
            d[0][y] = y;
        for (size_t x = 1; x <= la; x++)
            for (size_t y = 1; y <= lb; y++) {
                size_t c = d[x - 1][y - 1] + (a[x - 1] != b[y - 1]);
                if (d[x - 1][y] + 1 < c)
                    c = d[x - 1][y] + 1;
                if (d[x][y - 1] + 1 < c)
                    c = d[x][y - 1] + 1;
                d[x][y] = c;
            }
        if (d[la][lb] < best_d) {
            best_d = d[la][lb];
            best = &options[i];
        }
    }
    return best;
}

static void strlist_clear(struct cb_strlist *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->items[i]);
    free(l->items);
    l->items = NULL;
    l->n = 0;
}

static int strlist_push(struct cb_strlist *l, const char *s)
{
    char *copy = strdup(s);
    char **items = copy ? realloc(l->items, (l->n + 1) * sizeof *items) : NULL;
    if (!items) {
        free(copy);
        return -1;
    }
    items[l->n++] = copy;
    l->items = items;
    return 0;
}

static int parse_bool(const char *s, int *out)
{
    if (!strcmp(s, "true") || !strcmp(s, "yes") || !strcmp(s, "on") || !strcmp(s, "1"))
        return *out = 1, 0;
    if (!strcmp(s, "false") || !strcmp(s, "no") || !strcmp(s, "off") || !strcmp(s, "0"))
        return *out = 0, 0;
    return -1;
}

static int set_value(struct cb_config *cfg, const struct option *o, const char *value,
                     int replace_list, const char *where, struct cb_config_error *err)
{
    char *base = (char *)cfg + o->offset;
    int64_t v = 0;
    switch (o->type) {
    case T_STRING: {
        char *copy = strdup(value);
        if (!copy)
            goto oom;
        free(*(char **)base);
        *(char **)base = copy;
        return 0;
    }
    case T_STRLIST: {
        struct cb_strlist *l = (struct cb_strlist *)base;
        if (replace_list)
            strlist_clear(l);
        if (*value && strlist_push(l, value))
            goto oom;
        return 0;
    }
    case T_BOOL:
        if (parse_bool(value, (int *)base)) {
            set_error(err, where, "%s: expected true or false, got '%s'", o->key, value);
            return -1;
        }
        return 0;
    case T_ENUM:
        for (size_t i = 0; o->names[i]; i++) {
            if (strcmp(o->names[i], value) == 0) {
                *(int *)base = o->values[i];
                return 0;
            }
        }
        {
            char list[128] = "";
            for (size_t i = 0; o->names[i]; i++) {
                if (i)
                    strncat(list, ", ", sizeof list - strlen(list) - 1);
                strncat(list, o->names[i], sizeof list - strlen(list) - 1);
            }
            set_error(err, where, "%s: expected one of %s, got '%s'", o->key, list, value);
        }
        return -1;
    case T_INT: {
        errno = 0;
        char *end;
        long long x = strtoll(value, &end, 10);
        if (end == value || *end || errno) {
            set_error(err, where, "%s: expected an integer, got '%s'", o->key, value);
            return -1;
        }
        v = x;
        break;
    }
    case T_DURATION:
        if (cb_parse_duration_ms(value, &v)) {
            set_error(err, where, "%s: expected a duration such as 500ms, 30s, 5m, 2h or 7d, got '%s'",
                      o->key, value);
            return -1;
        }
        break;
    case T_SIZE:
        if (cb_parse_size(value, &v)) {
            set_error(err, where, "%s: expected a size such as 512, 64k, 16M or 1G, got '%s'",
                      o->key, value);
            return -1;
        }
        break;
    }
    /* Numeric kinds: bounds. 0 is always allowed for retention ("forever"). */
    if ((v < o->min || v > o->max) && !(v == 0 && o->min == 0)) {
        set_error(err, where, "%s: '%s' is out of range", o->key, value);
        return -1;
    }
    *(int64_t *)base = v;
    return 0;
oom:
    set_error(err, where, "out of memory");
    return -1;
}

int cb_config_set(struct cb_config *cfg, const char *key, const char *value, int replace_list,
                  const char *where, struct cb_config_error *err)
{
    const struct option *o = find_option(key);
    if (!o) {
        const struct option *near = closest_option(key);
        if (near)
            set_error(err, where, "unknown option '%s' (did you mean '%s'?)", key, near->key);
        else
            set_error(err, where, "unknown option '%s'", key);
        return -1;
    }
    return set_value(cfg, o, value, replace_list, where, err);
}

int cb_config_set_arg(struct cb_config *cfg, const char *arg, struct cb_config_error *err)
{
    const char *eq = strchr(arg, '=');
    if (!eq) {
        if (err)
            snprintf(err->text, sizeof err->text, "--set needs KEY=VALUE");
        return -1;
    }
    char *key = strndup(arg, (size_t)(eq - arg));
    if (!key) {
        set_error(err, "--set", "out of memory");
        return -1;
    }
    if (!strcmp(key, "http.department")) {
        if (err)
            snprintf(err->text, sizeof err->text,
                     "--set http.department: a department's line holds its token, which is never "
                     "taken from the command line (anyone can read it in ps); write it in the "
                     "configuration file");
        free(key);
        return -1;
    }
    const char *env = cb_config_secret_env(key);
    if (env) {
        if (err)
            snprintf(err->text, sizeof err->text,
                     "--set %s: a secret is never taken from the command line (anyone can read "
                     "it in ps); set the environment variable %s, or %s in the configuration "
                     "file",
                     key, env, key);
        free(key);
        return -1;
    }
    int rc = cb_config_set(cfg, key, eq + 1, 0, "--set", err);
    free(key);
    return rc;
}

int cb_config_defaults(struct cb_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    for (size_t i = 0; i < NOPTIONS; i++) {
        const struct option *o = &options[i];
        if (o->type == T_STRLIST) {
            /* A list default holds its items separated by '|'. */
            char buf[256];
            snprintf(buf, sizeof buf, "%s", o->def);
            for (char *save = NULL, *tok = strtok_r(buf, "|", &save); tok;
                 tok = strtok_r(NULL, "|", &save))
                if (strlist_push((struct cb_strlist *)((char *)cfg + o->offset), tok))
                    goto fail;
            continue;
        }
        if (set_value(cfg, o, o->def, 1, "default", NULL))
            goto fail;
    }
    return 0;
fail:
    cb_config_free(cfg);
    return -1;
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1]))
        *--e = '\0';
    return s;
}

/* Parses one `key = value` line in place. Returns 0 with *key NULL for a blank
 * or comment line, 0 with key/value set, or -1 with a message in err. */
static int parse_line(char *line, char **key, char **value, const char *where,
                      struct cb_config_error *err)
{
    *key = NULL;
    char *s = trim(line);
    if (*s == '\0' || *s == '#')
        return 0;
    char *eq = strchr(s, '=');
    if (!eq) {
        set_error(err, where, "expected 'key = value'");
        return -1;
    }
    *eq = '\0';
    char *k = trim(s);
    char *v = trim(eq + 1);
    if (*v == '"') {
        /* The value ends at the next quote: a comment after it may quote too. */
        char *close = strchr(v + 1, '"');
        if (!close) {
            set_error(err, where, "unterminated quoted value");
            return -1;
        }
        char *rest = trim(close + 1);
        if (*rest && *rest != '#') {
            set_error(err, where, "unexpected text after the quoted value");
            return -1;
        }
        *close = '\0';
        v++;
    } else {
        /* An unquoted value ends at a ' #' comment. */
        for (char *p = v; *p; p++)
            if (*p == '#' && p > v && isspace((unsigned char)p[-1])) {
                *p = '\0';
                v = trim(v);
                break;
            }
    }
    if (*k == '\0') {
        set_error(err, where, "missing key before '='");
        return -1;
    }
    *key = k;
    *value = v;
    return 0;
}

int cb_config_load_file(struct cb_config *cfg, const char *path, struct cb_config_error *err)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        set_error(err, path, "cannot open: %s", strerror(errno));
        return -1;
    }
    char *name = strdup(path);
    if (!name) {
        fclose(f);
        set_error(err, path, "out of memory");
        return -1;
    }
    free(cfg->config_file);
    cfg->config_file = name;
    /* A list given in the file replaces its default on first mention. */
    unsigned char seen[NOPTIONS] = {0};
    char *line = NULL;
    size_t cap = 0;
    int lineno = 0, rc = 0;
    while (getline(&line, &cap, f) != -1) {
        lineno++;
        char where[600];
        snprintf(where, sizeof where, "%s:%d", path, lineno);
        char *key, *value;
        if (parse_line(line, &key, &value, where, err)) {
            rc = -1;
            break;
        }
        if (!key)
            continue;
        const struct option *o = find_option(key);
        int replace = 0;
        if (o) {
            size_t idx = (size_t)(o - options);
            replace = !seen[idx];
            seen[idx] = 1;
        }
        if (cb_config_set(cfg, key, value, replace, where, err)) {
            rc = -1;
            break;
        }
    }
    free(line);
    fclose(f);
    return rc;
}

/* The secrets and the environment variable of each: they come from the
 * environment or the configuration file, never from the command line. */
static const struct {
    const char *key;
    const char *env;
} secrets[] = {
    {"mqtt.password", "CITYBRAIN_MQTT_PASSWORD"},
    {"http.token", "CITYBRAIN_API_TOKEN"},
    {"http.read_token", "CITYBRAIN_API_READ_TOKEN"},
};

int cb_config_apply_env(struct cb_config *cfg)
{
    for (size_t i = 0; i < sizeof secrets / sizeof secrets[0]; i++) {
        const char *v = getenv(secrets[i].env);
        if (v && *v && cb_config_set(cfg, secrets[i].key, v, 1, secrets[i].env, NULL))
            return -1;
    }
    return 0;
}

const char *cb_config_secret_env(const char *key)
{
    for (size_t i = 0; i < sizeof secrets / sizeof secrets[0]; i++)
        if (!strcmp(secrets[i].key, key))
            return secrets[i].env;
    return NULL;
}

static int readable(const char *path) { return !*path || access(path, R_OK) == 0; }

int cb_config_check_time_zone(const char *tz)
{
    if (!tz || !*tz || strlen(tz) > 64 || tz[0] == '/' || strstr(tz, ".."))
        return -1;
    for (const char *c = tz; *c; c++)
        if (!((*c >= 'A' && *c <= 'Z') || (*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') ||
              strchr("/_+-", *c)))
            return -1;
    if (!strcmp(tz, "UTC"))
        return 0;
    /* Where the system has the time zone database, the name must be in it
     * (the browser's Intl knows the same names). */
    char path[128];
    snprintf(path, sizeof path, "/usr/share/zoneinfo/%s", tz);
    if (access("/usr/share/zoneinfo", F_OK) == 0 && access(path, R_OK) != 0)
        return -1;
    return 0;
}

static int validate_cluster(const struct cb_config *cfg, struct cb_config_error *err);

int cb_config_validate(const struct cb_config *cfg, struct cb_config_error *err)
{
    struct cb_strlist brokers = {0};
    if (cb_config_brokers(cfg->mqtt_broker, &brokers)) {
        set_error(err, "mqtt.broker", "out of memory");
        return -1;
    }
    if (brokers.n == 0) {
        set_error(err, "mqtt.broker", "no broker URL (tcp://host:port or ssl://host:port)");
        return -1;
    }
    for (size_t i = 0; i < brokers.n; i++) {
        const char *b = brokers.items[i];
        if (strncmp(b, "tcp://", 6) && strncmp(b, "ssl://", 6) && strncmp(b, "mqtt://", 7) &&
            strncmp(b, "mqtts://", 8)) {
            set_error(err, "mqtt.broker",
                      "'%s' is not a broker URL (tcp://host:port or ssl://host:port; several "
                      "separated by commas)",
                      b);
            strlist_clear(&brokers);
            return -1;
        }
    }
    strlist_clear(&brokers);
    if (cfg->mqtt_topics.n == 0) {
        set_error(err, "mqtt.topic", "at least one topic filter is needed");
        return -1;
    }
    if (validate_cluster(cfg, err))
        return -1;
    if (cfg->mqtt_reconnect_min_ms > cfg->mqtt_reconnect_max_ms) {
        set_error(err, "mqtt.reconnect_min", "is longer than mqtt.reconnect_max");
        return -1;
    }
    if (*cfg->mqtt_key_file && !*cfg->mqtt_cert_file) {
        set_error(err, "mqtt.key_file", "is set without mqtt.cert_file");
        return -1;
    }
    const char *files[] = {cfg->mqtt_ca_file, cfg->mqtt_cert_file, cfg->mqtt_key_file,
                           cfg->http_tls_cert, cfg->http_tls_key};
    const char *names[] = {"mqtt.ca_file", "mqtt.cert_file", "mqtt.key_file", "http.tls_cert",
                           "http.tls_key"};
    for (int i = 0; i < 5; i++) {
        if (!readable(files[i])) {
            set_error(err, names[i], "cannot read '%s': %s", files[i], strerror(errno));
            return -1;
        }
    }
    if (cfg->alerts_webhook_retry_min_ms > cfg->alerts_webhook_retry_max_ms) {
        set_error(err, "alerts.webhook_retry_min", "is longer than alerts.webhook_retry_max");
        return -1;
    }
    if (!*cfg->storage_db) {
        set_error(err, "storage.db", "must not be empty");
        return -1;
    }
    const char *fed[] = {cfg->federation_export_topic, cfg->federation_control_topic,
                         cfg->federation_engine};
    const char *fed_keys[] = {"federation.export_topic", "federation.control_topic",
                              "federation.engine"};
    for (int i = 0; i < 3; i++) {
        if (strpbrk(fed[i], "+#") || (*fed[i] && (fed[i][strlen(fed[i]) - 1] == '/' ||
                                                 (i == 2 && strchr(fed[i], '/'))))) {
            set_error(err, fed_keys[i], "'%s' is not a topic name (no + or #%s, no trailing /)",
                      fed[i], i == 2 ? ", no /" : "");
            return -1;
        }
    }
    if (cb_config_check_time_zone(cfg->http_time_zone)) {
        set_error(err, "http.time_zone", "'%s' is not a time zone name such as Asia/Shanghai or UTC",
                  cfg->http_time_zone);
        return -1;
    }
    if (!*cfg->http_tls_cert != !*cfg->http_tls_key) {
        set_error(err, *cfg->http_tls_cert ? "http.tls_cert" : "http.tls_key",
                  "HTTPS needs both http.tls_cert and http.tls_key");
        return -1;
    }
    if (strcmp(cfg->http_city_map, "off") != 0 && !readable(cfg->http_city_map)) {
        set_error(err, "http.city_map", "cannot read '%s': %s", cfg->http_city_map,
                  strerror(errno));
        return -1;
    }
    if (strcmp(cfg->http_listen, "off") != 0) {
        const char *colon = strrchr(cfg->http_listen, ':');
        char *end;
        long port = colon ? strtol(colon + 1, &end, 10) : -1;
        if (!colon || colon == cfg->http_listen || *end || port < 0 || port > 65535) {
            set_error(err, "http.listen", "'%s' is not ADDRESS:PORT or off", cfg->http_listen);
            return -1;
        }
    }
    return 0;
}

void cb_config_free(struct cb_config *cfg)
{
    free(cfg->config_file);
    cfg->config_file = NULL;
    for (size_t i = 0; i < NOPTIONS; i++) {
        char *base = (char *)cfg + options[i].offset;
        if (options[i].type == T_STRING) {
            free(*(char **)base);
            *(char **)base = NULL;
        } else if (options[i].type == T_STRLIST) {
            strlist_clear((struct cb_strlist *)base);
        }
    }
}

/* Word-wraps help text into "# " comment lines of at most 78 columns. */
static void write_comment(struct cb_strbuf *out, const char *text)
{
    const char *p = text;
    while (*p) {
        size_t take = strlen(p);
        if (take > 76) {
            take = 76;
            while (take > 0 && p[take] != ' ')
                take--;
            if (take == 0)
                take = 76;
        }
        cb_strbuf_puts(out, "# ");
        cb_strbuf_append(out, p, take);
        cb_strbuf_putc(out, '\n');
        p += take;
        while (*p == ' ')
            p++;
    }
}

void cb_config_write_example(struct cb_strbuf *out)
{
    cb_strbuf_puts(out,
                   "# citybrain configuration: every option, with its default.\n"
                   "# Generated from the option table in base/config.c (`citybrain config-example`).\n"
                   "# Format: key = value; '#' starts a comment; list options repeat the key.\n"
                   "# Durations: 500ms, 30s, 5m, 2h, 7d. Sizes: 512, 64k, 16M, 1G.\n");
    for (size_t i = 0; i < NOPTIONS; i++) {
        const struct option *o = &options[i];
        if (o->section)
            cb_strbuf_printf(out, "\n# ---- %s ----\n", o->section);
        cb_strbuf_putc(out, '\n');
        write_comment(out, o->help);
        if (o->type == T_STRLIST) {
            if (!*o->def) {
                cb_strbuf_printf(out, "#%s =\n", o->key);
                continue;
            }
            char buf[256];
            snprintf(buf, sizeof buf, "%s", o->def);
            for (char *save = NULL, *tok = strtok_r(buf, "|", &save); tok;
                 tok = strtok_r(NULL, "|", &save))
                cb_strbuf_printf(out, "%s = %s\n", o->key, tok);
        } else if (!*o->def) {
            cb_strbuf_printf(out, "%s = \"\"\n", o->key);
        } else {
            cb_strbuf_printf(out, "%s = %s\n", o->key, o->def);
        }
    }
}

void cb_config_write_help(struct cb_strbuf *out)
{
    for (size_t i = 0; i < NOPTIONS; i++) {
        const struct option *o = &options[i];
        cb_strbuf_printf(out, "  %-30s %s (default: %s)\n", o->key, o->help,
                         *o->def ? o->def : "\"\"");
    }
}

/* `set` when configured, else prefix + base + suffix: a name derived from
 * another option. Caller frees; NULL on OOM. */
static char *set_or_derived(const char *set, const char *prefix, const char *base,
                            const char *suffix)
{
    if (*set)
        return strdup(set);
    size_t n = strlen(prefix) + strlen(base) + strlen(suffix) + 1;
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%s%s%s", prefix, base, suffix);
    return p;
}

char *cb_config_journal_path(const struct cb_config *cfg)
{
    return set_or_derived(cfg->storage_journal, "", cfg->storage_db, ".journal");
}

int cb_config_brokers(const char *list, struct cb_strlist *out)
{
    out->items = NULL;
    out->n = 0;
    const char *p = list;
    for (;;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        while (len && isspace((unsigned char)*p)) {
            p++;
            len--;
        }
        while (len && isspace((unsigned char)p[len - 1]))
            len--;
        if (len) {
            char *one = strndup(p, len);
            int rc = one ? strlist_push(out, one) : -1;
            free(one);
            if (rc) {
                strlist_clear(out);
                return -1;
            }
        }
        if (!end)
            return 0;
        p = end + 1;
    }
}

char *cb_config_client_id(const struct cb_config *cfg)
{
    if (*cfg->mqtt_client_id)
        return strdup(cfg->mqtt_client_id);
    if (*cfg->cluster_partition) {
        size_t n = strlen(cfg->cluster_partition) + strlen(cfg->cluster_twin) + sizeof "citybrain--";
        char *id = malloc(n);
        if (id)
            snprintf(id, n, "citybrain-%s-%s", cfg->cluster_partition, cfg->cluster_twin);
        return id;
    }
    char host[128] = "localhost";
    gethostname(host, sizeof host - 1);
    host[sizeof host - 1] = '\0';
    char *id = malloc(strlen(host) + sizeof "citybrain-");
    if (id)
        sprintf(id, "citybrain-%s", host);
    return id;
}

void cb_strlist_free(struct cb_strlist *l) { strlist_clear(l); }

/* Appends the first len bytes of s. 0, or -1 on OOM. */
static int strlist_push_n(struct cb_strlist *l, const char *s, size_t len)
{
    char *copy = strndup(s, len);
    int rc = copy ? strlist_push(l, copy) : -1;
    free(copy);
    return rc;
}

/* Splits "PARTITION DISTRICT FILTER" into its three words (pointers into
 * line, lengths). Returns 0, or -1 when the line has not exactly three. */
static int district_words(const char *line, const char *w[3], size_t n[3])
{
    const char *p = line;
    for (int i = 0; i < 3; i++) {
        p += strspn(p, " \t");
        n[i] = strcspn(p, " \t");
        if (!n[i])
            return -1;
        w[i] = p;
        p += n[i];
    }
    p += strspn(p, " \t");
    return *p ? -1 : 0;
}

int cb_config_subscriptions(const struct cb_config *cfg, struct cb_strlist *out)
{
    memset(out, 0, sizeof *out);
    if (!*cfg->cluster_partition) {
        for (size_t i = 0; i < cfg->mqtt_topics.n; i++)
            if (strlist_push(out, cfg->mqtt_topics.items[i]))
                goto oom;
        return 0;
    }
    for (size_t i = 0; i < cfg->cluster_districts.n; i++) {
        const char *w[3];
        size_t n[3];
        if (district_words(cfg->cluster_districts.items[i], w, n) == 0 &&
            n[0] == strlen(cfg->cluster_partition) && !strncmp(w[0], cfg->cluster_partition, n[0]) &&
            strlist_push_n(out, w[2], n[2]))
            goto oom;
    }
    size_t n = strlen(cfg->alerts_mqtt_prefix) + sizeof "/#";
    char *feed = malloc(n);
    if (!feed)
        goto oom;
    snprintf(feed, n, "%s/#", cfg->alerts_mqtt_prefix);
    int rc = strlist_push(out, feed);
    free(feed);
    if (rc)
        goto oom;
    return 0;
oom:
    cb_strlist_free(out);
    return -1;
}

char *cb_config_lease_queue(const struct cb_config *cfg)
{
    return set_or_derived(cfg->cluster_lease_queue, "citybrain.lease.", cfg->cluster_partition, "");
}

static int plain_name(const char *s)
{
    if (!*s)
        return 0;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && *s != '_' && *s != '-')
            return 0;
    return 1;
}

/* The cluster options as a whole (docs/cluster.md). */
static int validate_cluster(const struct cb_config *cfg, struct cb_config_error *err)
{
    size_t mine = 0;
    for (size_t i = 0; i < cfg->cluster_districts.n; i++) {
        const char *line = cfg->cluster_districts.items[i], *w[3];
        size_t n[3];
        if (district_words(line, w, n)) {
            set_error(err, "cluster.district", "'%s' is not PARTITION DISTRICT FILTER", line);
            return -1;
        }
        for (size_t j = 0; j < i; j++) {
            const char *v[3];
            size_t m[3];
            district_words(cfg->cluster_districts.items[j], v, m);
            if (m[1] == n[1] && !strncmp(v[1], w[1], n[1])) {
                set_error(err, "cluster.district", "district '%.*s' is listed twice", (int)n[1],
                          w[1]);
                return -1;
            }
        }
        if (n[0] == strlen(cfg->cluster_partition) && !strncmp(w[0], cfg->cluster_partition, n[0]))
            mine++;
    }
    if (!*cfg->cluster_partition)
        return 0;
    if (!plain_name(cfg->cluster_partition)) {
        set_error(err, "cluster.partition", "'%s' is not a name (letters, digits, _ -)",
                  cfg->cluster_partition);
        return -1;
    }
    if (!plain_name(cfg->cluster_twin)) {
        set_error(err, "cluster.twin", "a twin name (letters, digits, _ -) is needed with "
                                       "cluster.partition");
        return -1;
    }
    if (!mine) {
        set_error(err, "cluster.district", "partition '%s' has no district", cfg->cluster_partition);
        return -1;
    }
    if (!cfg->cluster_lease.n) {
        set_error(err, "cluster.lease", "at least one AMQP URL is needed with cluster.partition");
        return -1;
    }
    for (size_t i = 0; i < cfg->cluster_lease.n; i++) {
        if (strncmp(cfg->cluster_lease.items[i], "amqp://", 7)) {
            set_error(err, "cluster.lease", "'%s' is not an AMQP URL (amqp://host:port)",
                      cfg->cluster_lease.items[i]);
            return -1;
        }
    }
    if (cfg->mqtt_clean_session) {
        set_error(err, "mqtt.clean_session", "must be false in a cluster: each twin's session "
                                             "keeps what arrives while it is away");
        return -1;
    }
    return 0;
}
