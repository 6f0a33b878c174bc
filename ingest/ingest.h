/* Ingest: MQTT in (Paho MQTTAsync) with the hand-off to the libuv loop, and
 * payload decoding into samples. (Interface seam fixed by the foundation.)
 *
 * Threads: Paho calls back on its own thread while holding a process-wide
 * lock, so the message callback does little: it refuses what exceeds the
 * size bounds, (optionally) journals the message, copies it into one locked,
 * bounded queue, calls uv_async_send and returns. It waits only to push back
 * on the broker: while the queue is full, or while the journal cannot take a
 * QoS 1 message (see ingest/mqtt.c). The loop drains the whole queue on each
 * wake-up and hands every message to `on_message` on the loop thread. */
#ifndef CB_INGEST_INGEST_H
#define CB_INGEST_INGEST_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "base/config.h"
#include "base/sample.h"

/* ---- decoding --------------------------------------------------------------- */

struct cb_decode_limits {
    size_t max_payload;
    size_t max_topic_length;
    int max_json_depth;
    size_t max_fields;
};

void cb_decode_limits_from_config(struct cb_decode_limits *l, const struct cb_config *cfg);

/* A reusable decoder: its buffers grow to the largest message seen and are
 * reused, so steady-state decoding does not allocate per sample. */
struct cb_decoder;

struct cb_decoder *cb_decoder_new(const struct cb_decode_limits *limits);
void cb_decoder_free(struct cb_decoder *d);

/* The result of one decode; pointers are valid until the next call. */
struct cb_decoded {
    const struct cb_sample *samples;
    size_t n;
    const char *device;  /* SenML bn, or NULL */
};

/* Decodes one payload (JSON object, SenML pack, or bare number) per rules.md.
 * arrival_ms is used as the event time of samples without one; pass
 * CB_DECODE_NO_ARRIVAL to require an event time (replay), which rejects with
 * CB_REJECT_MISSING_TS instead. Returns CB_REJECT_NONE with *out filled, or
 * the reason the whole payload is refused (nothing of it is kept). */
#define CB_DECODE_NO_ARRIVAL INT64_MIN
enum cb_reject cb_decode(struct cb_decoder *d, const char *topic, const void *payload,
                         size_t len, int64_t arrival_ms, struct cb_decoded *out);

/* Parses an RFC 3339 timestamp ("2024-11-24T01:33:20.5Z", "+08:00" offsets)
 * to ms since the epoch. Returns 0, or -1. */
int cb_parse_rfc3339(const char *s, size_t len, int64_t *out_ms);

/* ---- arrival stamps (ingest/stamp.c) ------------------------------------------ */

/* The event time given to samples without one: the arrival time, made unique
 * per topic. A message is stamped max(now, the topic's last stamp + 1) ms, so
 * messages of one topic arriving in the same millisecond get consecutive
 * milliseconds and none is taken for a redelivery of another. The MQTT client
 * stamps each message on Paho's thread before it is journaled (the journal
 * keeps the stamp, so a replay gives the same one). Not thread-safe: one
 * thread at a time (Paho's once the client has started). */
struct cb_stamps;

/* An empty table; NULL when memory is short. */
struct cb_stamps *cb_stamps_new(void);
void cb_stamps_free(struct cb_stamps *s);
/* The stamp of a message of topic arriving at now_ms (wall clock). */
int64_t cb_stamps_take(struct cb_stamps *s, const char *topic, size_t topic_len, int64_t now_ms);
/* Records that ms was already given to a message of topic (journal replay,
 * stored samples ahead of the clock at start), so later messages of it are
 * stamped after it. A stamp older than the newest now_ms taken is ignored. */
void cb_stamps_seen(struct cb_stamps *s, const char *topic, size_t topic_len, int64_t ms);

/* ---- MQTT ------------------------------------------------------------------------ */

enum cb_mqtt_state {
    CB_MQTT_DISCONNECTED = 0,
    CB_MQTT_CONNECTING,
    CB_MQTT_CONNECTED,
    CB_MQTT_STOPPED,
};
const char *cb_mqtt_state_name(enum cb_mqtt_state s);
/* The journal_errno of the stats in words: "ok" (0), "disk full" (ENOSPC,
 * EDQUOT), "I/O error", "file too large", "read-only file system"... */
const char *cb_mqtt_journal_problem(int err);

/* One received message, on the loop thread. Owned by the ingest module; valid
 * only during the callback. */
struct cb_message {
    const char *topic;     /* NUL-terminated */
    size_t topic_len;
    const void *payload;   /* not NUL-terminated */
    size_t len;
    int64_t arrival_ms;    /* arrival stamp: wall clock when Paho handed it over, moved to
                            * the next free ms of its topic (struct cb_stamps) */
    int qos;
    uint64_t journal_pos;  /* from the persist hook, or 0 */
};

typedef void (*cb_message_fn)(void *ctx, const struct cb_message *m);

/* Called on the Paho thread before a QoS 1 message is queued (and so before
 * it is acknowledged; QoS 0 messages, never acknowledged, are not offered):
 * the daemon journals it here. Returns 0 and sets *pos, or -1 with errno set
 * when it could not keep it (ENOSPC: disk full...): the Paho thread then
 * waits, the message unacknowledged, and calls the hook again with a
 * back-off until it works (Paho 1.3.12 acknowledges a QoS 1 message whatever
 * messageArrived returns, so waiting is the only way not to; see
 * ingest/mqtt.c). Must not block for long: it runs under Paho's lock. */
typedef int (*cb_persist_fn)(void *ctx, const char *topic, size_t topic_len,
                             const void *payload, size_t len, int64_t arrival_ms,
                             uint64_t *pos);

/* Called on the Paho thread when a message is refused for its size before
 * anything of it is copied (CB_REJECT_TOPIC_TOO_LONG or
 * CB_REJECT_PAYLOAD_TOO_LARGE), so the daemon counts it with the decoder's
 * rejections. Must be thread-safe and must not block. */
typedef void (*cb_refused_fn)(void *ctx, enum cb_reject reason);

struct cb_mqtt_stats {
    uint64_t received;         /* messages handed to the loop */
    uint64_t dropped_qos0;     /* QoS 0 messages dropped, queue full */
    uint64_t deferred_qos1;    /* QoS 1 messages that waited for room, queue full (back-pressure) */
    uint64_t journal_waits;    /* QoS 1 messages that waited, unacknowledged, for the journal */
    int journal_errno;         /* why the journal fails now (cb_mqtt_journal_problem), 0: ok */
    uint64_t refused_topic;    /* over ingest.max_topic_length: refused before any copy */
    uint64_t refused_payload;  /* over ingest.max_payload: refused before any copy */
    uint64_t connects;
    uint64_t connection_lost;
    uint64_t published;
    uint64_t publish_failed;   /* publishes given up: refused, or unconfirmed at exit */
    uint64_t republished;      /* QoS 1 publishes handed to Paho again after it failed them
                                * (the session was lost with them in flight) */
    size_t queue_depth;        /* messages waiting for the loop */
    size_t queue_bytes;
    uint64_t coalesce_switches; /* entries into and exits from 1 ms collection (see pace) */
    enum cb_mqtt_state state;
};

struct cb_mqtt;

/* Creates the client from cfg (broker, topics, qos, client id, session,
 * version, credentials, TLS, reconnect backoff, queue bounds) on `loop`.
 * Nothing connects until cb_mqtt_start. NULL with err filled on failure. */
struct cb_mqtt *cb_mqtt_new(uv_loop_t *loop, const struct cb_config *cfg, cb_message_fn on_message,
                            void *ctx, char *err, size_t errlen);
/* Installs the persist hook (before start). */
void cb_mqtt_set_persist(struct cb_mqtt *m, cb_persist_fn fn, void *ctx);
/* Stamps arrivals from `s` (before start; borrowed: it must outlive the
 * client, and only Paho's thread uses it from start on) instead of the
 * client's own table, so the caller can seed it first (cb_stamps_seen). */
void cb_mqtt_set_stamps(struct cb_mqtt *m, struct cb_stamps *s);
/* Subscribes to one more filter at qos on every connect, besides
 * mqtt.topic (before start): the daemon's control topic. 0, or -1 (started,
 * OOM). */
int cb_mqtt_add_topic(struct cb_mqtt *m, const char *filter, int qos);
/* Installs the hook told of size refusals (before start). */
void cb_mqtt_set_refused(struct cb_mqtt *m, cb_refused_fn fn, void *ctx);
/* Connects (asynchronously), subscribes on every connect, reconnects with
 * exponential backoff and jitter. Returns 0 or -1. */
int cb_mqtt_start(struct cb_mqtt *m);
/* Publishes (thread-safe, never blocks the loop). Returns 0 when handed to
 * Paho (which sends it when connected), -1 otherwise. */
int cb_mqtt_publish(struct cb_mqtt *m, const char *topic, const void *payload, size_t len,
                    int qos, int retained);
/* Stops taking messages: unsubscribes/disconnects, then delivers what is left
 * in the queue to on_message, then calls done(ctx) on the loop. A QoS 1
 * message waiting for the journal gets one more try; if the journal still
 * fails it stays unacknowledged and cb_mqtt_close leaves Paho's thread
 * parked for the process's exit (see ingest/mqtt.c). */
void cb_mqtt_stop(struct cb_mqtt *m, void (*done)(void *ctx), void *ctx);
/* Closes the uv handles and frees (after stop). */
void cb_mqtt_close(struct cb_mqtt *m);
void cb_mqtt_get_stats(struct cb_mqtt *m, struct cb_mqtt_stats *out);
/* Why the client is not connected, in words with Paho's code ("bad user
 * name or password (check mqtt.username ...) (CONNACK return code, code
 * 4)"), as the last failed connect or broker DISCONNECT left it; cleared by
 * a successful connect. Copies it into buf (len bytes) and returns 1, or
 * returns 0 (buf "") when there is none. Thread-safe. */
int cb_mqtt_last_error(struct cb_mqtt *m, char *buf, size_t len);

#endif
