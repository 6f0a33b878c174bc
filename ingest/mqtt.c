/* MQTT in and out with Paho MQTTAsync, and the hand-off to the libuv loop.
 *
 * What Paho 1.3.12 does when messageArrived returns 0 (read in
 * src/MQTTProtocolClient.c MQTTProtocol_handlePublishes and
 * src/MQTTAsyncUtils.c Protocol_processPublication / MQTTAsync_receiveThread):
 *  - For QoS 1 the PUBACK is sent right after Protocol_processPublication
 *    returns, whatever messageArrived answered. Returning 0 does NOT make the
 *    broker redeliver: the message is already acknowledged and only lives in
 *    Paho's in-memory messageQueue (unbounded; lost if we crash).
 *  - While that queue is not empty every new publication is appended behind
 *    it instead of being delivered, and the receive thread retries only the
 *    head of the queue, once per packet read from the socket (a timeout with
 *    no packet retries nothing). It does not spin, but under steady traffic
 *    the backlog never shrinks (one in, one out per packet), and on a quiet
 *    connection it drains one message per PINGRESP (per keepalive).
 * So "refuse a QoS 1 message by returning 0" would move the backlog into an
 * unbounded list behind our bound, break the journal-before-ack promise and
 * add latency for ever. The design here:
 *  - messageArrived never returns 0 (except when malloc fails, where Paho's
 *    retry is the only option left).
 *  - When the queue is at ingest.queue_max_messages / queue_max_bytes, a QoS 0
 *    message is dropped and counted (dropped_qos0). A QoS 1 message makes the
 *    Paho thread wait on a condition variable until the loop has drained
 *    (counted once per waiting message in deferred_qos1). While it waits,
 *    Paho reads nothing more from the socket, the PUBACK is not sent, and the
 *    broker keeps the rest of our session's messages: real back-pressure, and
 *    nothing is acknowledged before it is journaled and queued. If the loop
 *    stalls past the keepalive, the broker drops the connection and, with
 *    our persistent session, redelivers the unacknowledged message after the
 *    reconnect (at least once; never lost).
 *  - Waiting under Paho's global lock is only safe if the loop thread never
 *    needs that lock. So the loop never calls Paho after cb_mqtt_start: every
 *    Paho call (connect, publish, disconnect) is made by one worker thread
 *    fed by a locked command list. cb_mqtt_publish only appends to it. Paho
 *    calls the subscribe itself from the connect callback, on its thread.
 *  - cb_mqtt_stop wakes a waiting callback (it then queues beyond the bound:
 *    the loop drains everything before calling done).
 *  - Nothing acknowledged lives only in memory. When the persist hook cannot
 *    journal a QoS 1 message (disk full, I/O error), the Paho thread waits
 *    as it does for a full queue: it retries the hook with a back-off
 *    (JOURNAL_RETRY_MIN_MS doubling to JOURNAL_RETRY_MAX_MS, never a hot
 *    spin), the PUBACK is not sent, the broker keeps the rest of the
 *    session, and the stats say why (journal_errno) until an append works
 *    again. Queueing it unjournaled instead (as before) acknowledged it with
 *    nothing but memory behind it: a full disk lost tens of thousands of
 *    messages.
 *  - A stop ends that wait: the hook is tried once more, and if it still
 *    fails the message is abandoned unacknowledged: the Paho thread parks for
 *    good (returning would send the PUBACK), the stop goes on without
 *    calling Paho (whose lock the parked thread holds), and cb_mqtt_close
 *    leaves the client, the worker and this struct to the process's exit.
 *    The broker redelivers the message to the next run.
 *  - Each message is given its arrival stamp (ingest/stamp.c: the wall clock,
 *    moved to the next free millisecond of its topic) under the queue lock,
 *    before the persist hook journals it, so a replay gives the same times.
 *  - Stop does not unsubscribe: with a persistent session the subscriptions
 *    must stay so that the broker queues QoS 1 messages while we are down.
 *    It disconnects, drains what is left, then calls done on the loop.
 *
 * Reconnect: on a failed connect or a lost connection the Paho thread flags
 * it and wakes the loop, which arms a uv timer: delay = backoff/2 + random
 * part of backoff/2, backoff doubling from reconnect_min to reconnect_max,
 * reset on a successful connect. Every connect subscribes to every filter
 * (subscribeMany), so a broker that lost our session still gets them.
 * Paho's own automatic reconnect stays off.
 *
 * Broker list: mqtt.broker may name several brokers (a cluster, comma-
 * separated). Paho walks them in order within each connect (serverURIs), so a
 * reconnect after a broker died lands on the next one that answers; the list
 * starts where mqtt.broker_start says (rotate: by a hash of the client id).
 *
 * Republishing: Paho 1.3.12 sends a QoS 1 publish and keeps it until its
 * PUBACK; when the connection drops and the next broker has no session for
 * us (sessionPresent 0: another node, or a broker that lost its state) it
 * fails the publishes still in flight (onFailure), and nobody sends them
 * again. So each QoS 1 publish stays on m->inflight until Paho reports its
 * end: freed on success, posted again to the worker on failure (counted in
 * republished), which hands it to Paho again; Paho buffers it while
 * disconnected (sendWhileDisconnected) and sends it on the next connect.
 * A publish Paho refuses at once (its buffer full, or not connecting) waits
 * on m->held and is posted again on the next connect. At least once: a
 * publish whose PUBACK was lost with the connection reaches its receivers
 * twice, so receivers deduplicate (the alert feed by id, state and since).
 * An MQTT 5 broker that refuses a publish (reason code 0x80 or above) is not
 * asked again: it would refuse it again.
 *
 * Ownership: each queued message is ONE node (header, topic, NUL, payload),
 * given back by the loop after on_message returns: recycled when small (see
 * NODE_SMALL), else freed. The struct is freed
 * in the close callback of the last uv handle (STYLE.md habit 9). */
#include "base/net.h"
#include "ingest/ingest.h"
#include "ingest/ingest_int.h"

#include <MQTTAsync.h>
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/clock.h"
#include "base/log.h"

#define MOD "mqtt"
#define OUTBOUND_MAX 10000
/* Nodes for messages up to NODE_SMALL bytes (topic + payload) are recycled:
 * the loop gives them back under the lock it takes anyway, Paho's thread
 * takes them all at once into a stack of its own. A malloc on one thread and
 * a free on the other cost 3 % of the ingest CPU (glibc returns such a chunk
 * to the other thread's arena under its lock). At most SPARE_MAX wait on each
 * side. */
#define NODE_SMALL 512
#define SPARE_MAX 4096

struct node {
    struct node *next;
    size_t cap; /* bytes of data[]: NODE_SMALL, or the message's size */
    size_t topic_len, len;
    int64_t arrival_ms;
    uint64_t journal_pos;
    int qos;
    char data[]; /* topic, NUL, payload */
};

enum cmd_kind { CMD_CONNECT, CMD_PUBLISH, CMD_DISCONNECT, CMD_EXPLAIN };

/* How long the worker's TCP probe after a failed connect may take (see
 * do_explain): a refused port or an unreachable host answer at once. */
#define PROBE_TIMEOUT_MS 2000

/* Whether the Paho thread is waiting for the journal (see the top). */
enum journal_state {
    JOURNAL_OK,
    JOURNAL_WAITING,   /* a QoS 1 message waits for the journal, unacknowledged */
    JOURNAL_ABANDONED, /* stop came and the journal still failed: parked for good */
};

/* The journal wait's back-off between two tries of the persist hook. */
#define JOURNAL_RETRY_MIN_MS 10
#define JOURNAL_RETRY_MAX_MS 1000

/* A command for the worker. A QoS 1 publish handed to Paho stays alive as
 * an in-flight record (on m->inflight, linked by next and prev) until Paho
 * reports its end: freed on success, posted again on failure (see
 * "Republishing" at the top). */
struct cmd {
    struct cmd *next, *prev;
    struct cb_mqtt *m;   /* the owner, for Paho's publish callbacks */
    enum cmd_kind kind;
    int qos, retained;
    unsigned attempts;   /* times handed to Paho */
    size_t len;
    char *topic; /* points into data */
    char data[];
};

struct cb_mqtt {
    uv_loop_t *loop;
    uv_async_t async;
    uv_timer_t timer;
    uv_timer_t poll; /* the 1 ms collection tick while coalescing */
    int open_handles;

    MQTTAsync client;
    bool client_created;
    int version;
    char *url, *client_id, *username, *password, *ca_file, *cert_file, *key_file;
    char **uris; /* mqtt.broker's list in the order a connect walks it (rotated) */
    int nuris;
    bool tls;    /* some URL is ssl:// or mqtts:// */
    char **topics;
    int *qoss;
    int ntopics;
    int qos;
    int clean;
    int tls_verify;
    int keepalive_s;
    int64_t session_expiry_s;
    int max_inflight;
    int64_t backoff_min, backoff_max, backoff;
    uint64_t rng;
    size_t max_topic, max_payload; /* ingest.max_topic_length, ingest.max_payload */

    cb_message_fn on_message;
    void *ctx;
    cb_persist_fn persist;
    void *persist_ctx;
    struct cb_stamps *stamps;     /* arrival stamps (Paho's thread, under lock) */
    struct cb_stamps *own_stamps; /* ours, unless cb_mqtt_set_stamps gave one */
    cb_refused_fn refused;
    void *refused_ctx;

    /* Incoming queue, Paho thread -> loop. */
    pthread_mutex_t lock;
    pthread_cond_t room;
    pthread_cond_t journal_cv; /* stop wakes the journal wait; the wait's end wakes the worker */
    enum journal_state journal; /* under lock */
    struct node *head, *tail;
    size_t count, bytes;       /* queued plus being processed by the loop */
    size_t max_count, max_bytes;
    bool stopping;             /* set by stop: no more waiting for room */
    bool need_reconnect;       /* Paho thread asks the loop to arm the timer */
    bool disconnected_final;   /* the stop's disconnect completed */
    bool polling;              /* the loop collects on its tick: no wake-up per message */
    struct node *spare;        /* small nodes given back by the loop */
    size_t nspare;
    struct node *mine;         /* Paho's thread only: small nodes taken from spare */
    /* Connection failures: OpenSSL's errors during the attempt (ssl_error_cb,
     * on Paho's thread), the failure the worker is to explain (code and
     * Paho's text), and the last explanation (for /api/health; cleared on a
     * connect). */
    char tls_errors[512];
    int fail_code;
    char fail_message[128];
    char last_error[640];

    /* Commands, loop -> worker. */
    pthread_mutex_t cmd_lock;
    pthread_cond_t cmd_cond;
    struct cmd *cmd_head, *cmd_tail;
    size_t ncmds;
    struct cmd *inflight; /* QoS 1 publishes Paho has not yet confirmed or failed */
    struct cmd *held;     /* QoS 1 publishes Paho refused at once: posted again on connect */
    bool worker_quit;
    bool worker_started;
    pthread_t worker;

    /* Loop-side state. */
    bool started, stop_called, done_called, closing;
    bool abandoned; /* closed with the Paho thread parked: never freed (see close) */
    int64_t coalesce_above;   /* msg/s; 0: never coalesce */
    uint64_t win_start_ns;    /* the arrival-rate window (see pace) */
    size_t win_msgs;
    void (*done)(void *ctx);
    void *done_ctx;

    struct cb_mqtt_stats st; /* fields accessed with __atomic */
};

const char *cb_mqtt_journal_problem(int err)
{
    switch (err) {
    case 0: return "ok";
    case ENOSPC:
    case EDQUOT: return "disk full";
    case EFBIG: return "file too large";
    case EIO: return "I/O error";
    case EROFS: return "read-only file system";
    case EACCES:
    case EPERM: return "permission denied";
    case ENOMEM: return "out of memory";
    }
    return "write failed";
}

const char *cb_mqtt_state_name(enum cb_mqtt_state s)
{
    switch (s) {
    case CB_MQTT_DISCONNECTED: return "disconnected";
    case CB_MQTT_CONNECTING: return "connecting";
    case CB_MQTT_CONNECTED: return "connected";
    case CB_MQTT_STOPPED: return "stopped";
    }
    return "unknown";
}

#define STAT_ADD(m, f, n) __atomic_fetch_add(&(m)->st.f, (n), __ATOMIC_RELAXED)
#define STAT_SET(m, f, v) __atomic_store_n(&(m)->st.f, (v), __ATOMIC_RELAXED)
#define STAT_GET(m, f) __atomic_load_n(&(m)->st.f, __ATOMIC_RELAXED)

static void set_state(struct cb_mqtt *m, enum cb_mqtt_state s)
{
    enum cb_mqtt_state old = __atomic_exchange_n(&m->st.state, s, __ATOMIC_RELAXED);
    if (old != s)
        cb_info(MOD, "%s -> %s (%s)", cb_mqtt_state_name(old), cb_mqtt_state_name(s), m->url);
}

static char *dup_or_null(const char *s) { return s && *s ? strdup(s) : NULL; }

/* Frees what the client owns apart from its uv handles and locks: the
 * configuration copies and its own stamp table. */
static void free_owned(struct cb_mqtt *m)
{
    cb_stamps_free(m->own_stamps);
    free(m->url);
    for (int i = 0; i < m->nuris; i++)
        free(m->uris[i]);
    free(m->uris);
    free(m->client_id);
    free(m->username);
    free(m->password);
    free(m->ca_file);
    free(m->cert_file);
    free(m->key_file);
    for (int i = 0; i < m->ntopics; i++)
        free(m->topics[i]);
    free(m->topics);
    free(m->qoss);
}

/* ---- Paho thread: arrivals -------------------------------------------------------- */

static bool queue_full(const struct cb_mqtt *m, size_t size)
{
    if (m->count == 0)
        return false; /* one message always fits, however large */
    return m->count + 1 > m->max_count || m->bytes + size > m->max_bytes;
}

static void fill_node(struct node *n, const char *topic, size_t tl, const void *payload,
                      size_t len, int64_t arrival, int qos)
{
    n->next = NULL;
    n->topic_len = tl;
    n->len = len;
    n->arrival_ms = arrival;
    n->qos = qos;
    n->journal_pos = 0;
    memcpy(n->data, topic, tl);
    n->data[tl] = '\0';
    if (len)
        memcpy(n->data + tl + 1, payload, len);
}

/* Appends n to the queue. Returns whether the loop must be woken: only when
 * the queue was empty (else a wake-up is already on its way or the loop is
 * draining) and the loop is not collecting on its tick (see pace). */
static bool append_locked(struct cb_mqtt *m, struct node *n)
{
    bool was_empty = m->head == NULL;
    if (m->tail)
        m->tail->next = n;
    else
        m->head = n;
    m->tail = n;
    STAT_SET(m, queue_depth, m->count);
    STAT_SET(m, queue_bytes, m->bytes);
    return was_empty && !m->polling;
}

/* Unlocks, wakes the loop if append_locked asked for it, frees Paho's copy. */
static int consumed_locked(struct cb_mqtt *m, bool wake, MQTTAsync_message *msg, char *topic)
{
    pthread_mutex_unlock(&m->lock);
    if (wake)
        uv_async_send(&m->async);
    MQTTAsync_freeMessage(&msg);
    MQTTAsync_free(topic);
    return 1;
}

/* A node for `size` bytes (Paho's thread, under m->lock): a recycled one
 * when it fits, else a new one. NULL on OOM. */
static struct node *take_node(struct cb_mqtt *m, size_t size)
{
    if (size > NODE_SMALL) {
        struct node *n = malloc(sizeof *n + size);
        if (n)
            n->cap = size;
        return n;
    }
    if (!m->mine) {
        m->mine = m->spare;
        m->spare = NULL;
        m->nspare = 0;
    }
    struct node *n = m->mine;
    if (n) {
        m->mine = n->next;
        return n;
    }
    n = malloc(sizeof *n + NODE_SMALL);
    if (n)
        n->cap = NODE_SMALL;
    return n;
}

/* An unused node back to Paho's own stack (or freed when large). */
static void give_back_mine(struct cb_mqtt *m, struct node *n)
{
    if (n->cap != NODE_SMALL) {
        free(n);
        return;
    }
    n->next = m->mine;
    m->mine = n;
}

static void free_list(struct node *n)
{
    while (n) {
        struct node *next = n->next;
        free(n);
        n = next;
    }
}

/* Waits on journal_cv for at most ms (m->lock held). */
static void wait_ms(struct cb_mqtt *m, int64_t ms)
{
    struct timespec ts = cb_deadline_in_ms(ms);
    pthread_cond_timedwait(&m->journal_cv, &m->lock, &ts);
}

/* Journals node n through the persist hook (Paho thread, m->lock not held),
 * waiting as long as the hook fails: see "Nothing acknowledged lives only in
 * memory" at the top. Returns once n is journaled (n->journal_pos set); when
 * a stop finds the journal still failing it never returns. */
static void journal_or_wait(struct cb_mqtt *m, struct node *n)
{
    static struct cb_ratelimit rl = {.burst = 5, .interval_ms = 60000};
    const char *topic = n->data, *payload = n->data + n->topic_len + 1;
    int64_t delay = JOURNAL_RETRY_MIN_MS, waited_since = 0;
    for (;;) {
        errno = 0;
        if (m->persist(m->persist_ctx, topic, n->topic_len, payload, n->len, n->arrival_ms,
                       &n->journal_pos) == 0)
            break;
        int err = errno ? errno : EIO;
        pthread_mutex_lock(&m->lock);
        if (!waited_since) {
            /* Only this thread calls messageArrived: one message waits at a time. */
            m->journal = JOURNAL_WAITING;
            STAT_ADD(m, journal_waits, 1);
            waited_since = cb_mono_ms();
            cb_log_limited(&rl, CB_LOG_WARN, MOD,
                           "the journal cannot take a QoS 1 message (%s): not acknowledging "
                           "it, the broker keeps the session; retrying",
                           cb_mqtt_journal_problem(err));
        }
        STAT_SET(m, journal_errno, err);
        if (m->stopping) {
            /* The stop's try was the last: see the top. */
            m->journal = JOURNAL_ABANDONED;
            pthread_cond_broadcast(&m->journal_cv);
            cb_warn(MOD, "stopping with a QoS 1 message the journal cannot take (%s): it stays "
                         "unacknowledged, the broker redelivers it to the next run",
                    cb_mqtt_journal_problem(err));
            for (;;)
                pthread_cond_wait(&m->journal_cv, &m->lock);
        }
        wait_ms(m, delay);
        pthread_mutex_unlock(&m->lock);
        delay = delay * 2 > JOURNAL_RETRY_MAX_MS ? JOURNAL_RETRY_MAX_MS : delay * 2;
    }
    if (!waited_since)
        return;
    pthread_mutex_lock(&m->lock);
    m->journal = JOURNAL_OK;
    STAT_SET(m, journal_errno, 0);
    pthread_cond_broadcast(&m->journal_cv); /* a disconnect may wait for the outcome */
    pthread_mutex_unlock(&m->lock);
    cb_info(MOD, "the journal takes messages again (waited %lld ms)",
            (long long)(cb_mono_ms() - waited_since));
}

/* Bounds before copies: a topic or payload over its bound is refused here,
 * before anything of it is copied, queued or journaled, and counted by
 * reason (the decoder would refuse it anyway, but only after the hand-off
 * copy and the journal record had cost a payload each). Paho itself has read
 * the packet and copied the payload once by now; with MQTT 5 the broker does
 * not send such a message at all (Maximum Packet Size, see do_connect).
 * Returns 1 when refused. */
static int refuse_oversize(struct cb_mqtt *m, const char *topic, size_t tl, size_t len)
{
    static struct cb_ratelimit rl = {.burst = 5, .interval_ms = 10000};
    enum cb_reject why;
    if (tl > m->max_topic) {
        STAT_ADD(m, refused_topic, 1);
        why = CB_REJECT_TOPIC_TOO_LONG;
    } else if (len > m->max_payload) {
        STAT_ADD(m, refused_payload, 1);
        why = CB_REJECT_PAYLOAD_TOO_LARGE;
    } else {
        return 0;
    }
    if (m->refused)
        m->refused(m->refused_ctx, why);
    cb_log_limited(&rl, CB_LOG_WARN, "ingest",
                   "refused a message on '%.*s' (topic %zu bytes, payload %zu bytes): %s",
                   (int)(tl > 120 ? 120 : tl), topic, tl, len, cb_reject_name(why));
    return 1;
}

/* messageArrived: see the comment at the top. Returns 1 (consumed), or 0 only
 * when memory for the copy cannot be had (Paho keeps it and retries). */
static int on_arrived(void *ctx, char *topic, int topic_len, MQTTAsync_message *msg)
{
    struct cb_mqtt *m = ctx;
    int64_t wall = cb_wall_ms();
    size_t tl = topic_len > 0 ? (size_t)topic_len : strlen(topic);
    size_t len = msg->payloadlen > 0 ? (size_t)msg->payloadlen : 0;
    size_t size = tl + 1 + len;
    int qos = msg->qos;
    if (refuse_oversize(m, topic, tl, len))
        goto consumed;

    /* A QoS 0 message costs one lock and, once nodes circulate, no malloc.
     * Only this thread takes nodes, so at most one message lives outside the
     * bound (the one waiting for room). */
    pthread_mutex_lock(&m->lock);
    struct node *n = take_node(m, size);
    if (!n) {
        pthread_mutex_unlock(&m->lock);
        return 0;
    }
    /* before the journal, which keeps it (see ingest/stamp.c) */
    int64_t arrival = cb_stamps_take(m->stamps, topic, tl, wall);
    if (queue_full(m, size)) {
        if (qos == 0 && !m->stopping) {
            give_back_mine(m, n);
            pthread_mutex_unlock(&m->lock);
            STAT_ADD(m, dropped_qos0, 1);
            goto consumed;
        }
        STAT_ADD(m, deferred_qos1, 1);
        while (queue_full(m, size) && !m->stopping)
            pthread_cond_wait(&m->room, &m->lock);
    }
    m->count++;
    m->bytes += size;
    if (qos == 0) {
        fill_node(n, topic, tl, msg->payload, len, arrival, qos);
        return consumed_locked(m, append_locked(m, n), msg, topic);
    }
    pthread_mutex_unlock(&m->lock);
    fill_node(n, topic, tl, msg->payload, len, arrival, qos);
    /* Only what the broker gets an acknowledgement for is journaled: a QoS 0
     * message is at most once by contract, and its record would cost CPU and
     * bytes for nothing (about 8 % of the ingest CPU when each record was a
     * write(2); the mapped journal costs about half of that per record). */
    if (m->persist && qos > 0)
        journal_or_wait(m, n);

    pthread_mutex_lock(&m->lock);
    return consumed_locked(m, append_locked(m, n), msg, topic);
consumed:
    MQTTAsync_freeMessage(&msg);
    MQTTAsync_free(topic);
    return 1;
}

/* Asks the loop to schedule a reconnect (Paho thread). */
static void want_reconnect(struct cb_mqtt *m)
{
    pthread_mutex_lock(&m->lock);
    if (!m->stopping)
        m->need_reconnect = true;
    pthread_mutex_unlock(&m->lock);
    uv_async_send(&m->async);
}

static void on_connection_lost(void *ctx, char *cause)
{
    struct cb_mqtt *m = ctx;
    STAT_ADD(m, connection_lost, 1);
    cb_warn(MOD, "connection to %s lost%s%s", m->url, cause ? ": " : "", cause ? cause : "");
    set_state(m, CB_MQTT_DISCONNECTED);
    want_reconnect(m);
}

/* Keeps text as the last connection error (what /api/health shows). */
static void set_last_error(struct cb_mqtt *m, const char *text)
{
    pthread_mutex_lock(&m->lock);
    snprintf(m->last_error, sizeof m->last_error, "%s", text);
    pthread_mutex_unlock(&m->lock);
}

/* MQTT 5: the broker sent DISCONNECT with a reason (connectionLost follows). */
static void on_broker_disconnect(void *ctx, MQTTProperties *props, enum MQTTReasonCodes rc)
{
    (void)props;
    struct cb_mqtt *m = ctx;
    const char *words = ingest__reason_words(5, (int)rc);
    char text[400];
    snprintf(text, sizeof text, "the broker closed the connection: %s (reason code 0x%02x, %s)",
             words ? words : "no reason given", (unsigned)rc,
             MQTTReasonCode_toString(rc));
    cb_warn(MOD, "%s: %s", m->url, text);
    set_last_error(m, text);
}

static void subscribe_all(struct cb_mqtt *m);

/* Logs a refused subscription: code as the broker sent it in MQTT version. */
static void subscription_refused(struct cb_mqtt *m, int i, int version, int code)
{
    const char *words = ingest__reason_words(version, code);
    cb_error(MOD, "the broker refused the subscription to '%s': %s (code 0x%02x)", m->topics[i],
             words ? words
                   : (version == 5 ? MQTTReasonCode_toString((enum MQTTReasonCodes)code)
                                   : "failure"),
             (unsigned)code);
}

static void on_subscribed(void *ctx, MQTTAsync_successData *resp)
{
    struct cb_mqtt *m = ctx;
    for (int i = 0; i < m->ntopics; i++) {
        int granted = m->ntopics == 1 ? resp->alt.qos : resp->alt.qosList[i];
        if (granted == 0x80)
            subscription_refused(m, i, 4, granted);
        else
            cb_info(MOD, "subscribed to '%s' (QoS %d)", m->topics[i], granted);
    }
}

static void on_subscribed5(void *ctx, MQTTAsync_successData5 *resp)
{
    struct cb_mqtt *m = ctx;
    for (int i = 0; i < m->ntopics; i++) {
        int rc = m->ntopics == 1 ? (int)resp->reasonCode
                                 : (i < resp->alt.sub.reasonCodeCount
                                        ? (int)resp->alt.sub.reasonCodes[i]
                                        : 0x80);
        if (rc >= 0x80)
            subscription_refused(m, i, 5, rc);
        else
            cb_info(MOD, "subscribed to '%s' (QoS %d)", m->topics[i], rc);
    }
}

static void on_subscribe_failed(void *ctx, MQTTAsync_failureData *resp)
{
    struct cb_mqtt *m = ctx;
    cb_error(MOD, "subscribing failed (code %d%s%s)", resp ? resp->code : -1,
             resp && resp->message ? ": " : "", resp && resp->message ? resp->message : "");
    (void)m;
}

static void on_subscribe_failed5(void *ctx, MQTTAsync_failureData5 *resp)
{
    struct cb_mqtt *m = ctx;
    cb_error(MOD, "subscribing failed (code %d, %s)", resp ? resp->code : -1,
             resp ? MQTTReasonCode_toString(resp->reasonCode) : "?");
    (void)m;
}

/* Subscribes to every filter (Paho thread, from the connect callback). */
static void subscribe_all(struct cb_mqtt *m)
{
    MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
    ro.context = m;
    if (m->version == 5) {
        ro.onSuccess5 = on_subscribed5;
        ro.onFailure5 = on_subscribe_failed5;
    } else {
        ro.onSuccess = on_subscribed;
        ro.onFailure = on_subscribe_failed;
    }
    int rc = MQTTAsync_subscribeMany(m->client, m->ntopics, m->topics, m->qoss, &ro);
    if (rc != MQTTASYNC_SUCCESS)
        cb_error(MOD, "cannot subscribe: %s", MQTTAsync_strerror(rc));
}

static void disconnect_finished(struct cb_mqtt *m);
static void on_disconnect(void *ctx, MQTTAsync_successData *resp);
static void on_disconnect5(void *ctx, MQTTAsync_successData5 *resp);
static void on_disconnect_failed(void *ctx, MQTTAsync_failureData *resp);
static void on_disconnect_failed5(void *ctx, MQTTAsync_failureData5 *resp);

/* Disconnects (timeout_ms for in-flight work, 0 = Paho's default); the end
 * is reported through disconnect_finished, at once if Paho refuses. */
static void send_disconnect(struct cb_mqtt *m, int timeout_ms)
{
    MQTTAsync_disconnectOptions o = MQTTAsync_disconnectOptions_initializer;
    if (timeout_ms)
        o.timeout = timeout_ms;
    o.context = m;
    if (m->version == 5) {
        o.onSuccess5 = on_disconnect5;
        o.onFailure5 = on_disconnect_failed5;
    } else {
        o.onSuccess = on_disconnect;
        o.onFailure = on_disconnect_failed;
    }
    if (MQTTAsync_disconnect(m->client, &o) != MQTTASYNC_SUCCESS)
        disconnect_finished(m);
}

static void repost_held(struct cb_mqtt *m);

/* A connect succeeded (Paho's thread). The log names mqtt.broker as given:
 * with a list, Paho 1.3.12's serverURI in the connect's answer sometimes
 * names the first URL when the connection is to another one (seen with the
 * first broker dead), so it is not repeated as the truth. */
static void connected(struct cb_mqtt *m, int session_present)
{
    STAT_ADD(m, connects, 1);
    /* Alerts are small publishes: without this they wait for Nagle. */
    cb_net_tcp_nodelay_all();
    set_state(m, CB_MQTT_CONNECTED);
    cb_info(MOD, "connected to %s as '%s' (MQTT %s, session %s)", m->url, m->client_id,
            m->version == 5 ? "5" : "3.1.1", session_present ? "resumed" : "new");
    pthread_mutex_lock(&m->lock);
    m->backoff = m->backoff_min;
    m->last_error[0] = '\0';
    bool stopping = m->stopping;
    pthread_mutex_unlock(&m->lock);
    if (stopping) {
        /* A connect that completed after stop: leave at once, take nothing.
         * The stop's own disconnect may have raced this connect and lost its
         * callbacks, so this one reports the end of the connection too. */
        send_disconnect(m, 0);
        return;
    }
    subscribe_all(m);
    repost_held(m);
}

static void on_connect(void *ctx, MQTTAsync_successData *resp)
{
    connected(ctx, resp ? resp->alt.connect.sessionPresent : 0);
}

static void on_connect5(void *ctx, MQTTAsync_successData5 *resp)
{
    connected(ctx, resp ? resp->alt.connect.sessionPresent : 0);
}

static int post_simple(struct cb_mqtt *m, enum cmd_kind k);

/* A connect failed (Paho's thread, or the worker when Paho refused at
 * once): the worker says why in words (do_explain; it may probe the
 * network, which must not happen under Paho's lock), then the loop
 * schedules the reconnect. code and why as Paho gave them. */
static void connect_failed(struct cb_mqtt *m, int code, const char *why)
{
    pthread_mutex_lock(&m->lock);
    m->fail_code = code;
    snprintf(m->fail_message, sizeof m->fail_message, "%s", why ? why : "");
    pthread_mutex_unlock(&m->lock);
    set_state(m, CB_MQTT_DISCONNECTED);
    if (post_simple(m, CMD_EXPLAIN))
        cb_warn(MOD, "cannot connect to %s: %s (code %d)", m->url, why ? why : "no reason given",
                code);
    want_reconnect(m);
}

/* OpenSSL's error queue during a TLS connect (Paho's ssl_error_cb). */
static int on_ssl_error(const char *str, size_t len, void *u)
{
    struct cb_mqtt *m = u;
    pthread_mutex_lock(&m->lock);
    size_t have = strlen(m->tls_errors);
    if (have + 1 < sizeof m->tls_errors)
        snprintf(m->tls_errors + have, sizeof m->tls_errors - have, "%.*s", (int)len, str);
    pthread_mutex_unlock(&m->lock);
    return 1;
}

static void on_connect_failed(void *ctx, MQTTAsync_failureData *resp)
{
    connect_failed(ctx, resp ? resp->code : -1,
                   resp && resp->message ? resp->message
                                         : (resp ? MQTTAsync_strerror(resp->code) : NULL));
}

static void on_connect_failed5(void *ctx, MQTTAsync_failureData5 *resp)
{
    connect_failed(ctx, resp ? resp->code : -1,
                   resp && resp->message ? resp->message
                                         : (resp ? MQTTReasonCode_toString(resp->reasonCode)
                                                 : NULL));
}

static void disconnect_finished(struct cb_mqtt *m)
{
    pthread_mutex_lock(&m->lock);
    m->disconnected_final = true;
    pthread_mutex_unlock(&m->lock);
    uv_async_send(&m->async);
}

static void on_disconnect(void *ctx, MQTTAsync_successData *resp)
{
    (void)resp;
    disconnect_finished(ctx);
}
static void on_disconnect5(void *ctx, MQTTAsync_successData5 *resp)
{
    (void)resp;
    disconnect_finished(ctx);
}
static void on_disconnect_failed(void *ctx, MQTTAsync_failureData *resp)
{
    (void)resp;
    disconnect_finished(ctx);
}
static void on_disconnect_failed5(void *ctx, MQTTAsync_failureData5 *resp)
{
    (void)resp;
    disconnect_finished(ctx);
}

/* ---- worker thread: every Paho call after start ------------------------------------ */

/* The largest PUBLISH packet we take: fixed header (at most 5 bytes), topic
 * (2 + max_topic), packet id (2), properties, payload. PACKET_SLACK leaves
 * room for the properties a publisher may add (user properties, content
 * type); what is larger than the bounds by less than the slack still reaches
 * refuse_oversize and is counted there. */
#define PACKET_SLACK 4096

static uint64_t max_packet_size(const struct cb_mqtt *m)
{
    uint64_t n = 5 + 2 + (uint64_t)m->max_topic + 2 + PACKET_SLACK + (uint64_t)m->max_payload;
    return n > 268435460u ? 268435460u : n; /* the protocol's own limit */
}

static void do_connect(struct cb_mqtt *m)
{
    MQTTAsync_connectOptions o4 = MQTTAsync_connectOptions_initializer;
    MQTTAsync_connectOptions o5 = MQTTAsync_connectOptions_initializer5;
    MQTTAsync_connectOptions *o = m->version == 5 ? &o5 : &o4;
    MQTTAsync_SSLOptions ssl = MQTTAsync_SSLOptions_initializer;
    MQTTProperties props = MQTTProperties_initializer;
    o->keepAliveInterval = m->keepalive_s;
    o->connectTimeout = 10;
    o->automaticReconnect = 0;
    o->context = m;
    o->username = m->username;
    o->password = m->password;
    if (m->nuris > 1) {
        /* Paho tries them in this order within one connect: a dead broker
         * costs one failed TCP connect, then the next is tried. */
        o->serverURIs = m->uris;
        o->serverURIcount = m->nuris;
    }
    if (m->version == 5) {
        o->cleanstart = m->clean;
        o->onSuccess5 = on_connect5;
        o->onFailure5 = on_connect_failed5;
        MQTTProperty p;
        p.identifier = MQTTPROPERTY_CODE_SESSION_EXPIRY_INTERVAL;
        p.value.integer4 = m->clean ? 0 : (unsigned)m->session_expiry_s;
        MQTTProperties_add(&props, &p);
        p.identifier = MQTTPROPERTY_CODE_RECEIVE_MAXIMUM;
        p.value.integer2 = (unsigned short)m->max_inflight;
        MQTTProperties_add(&props, &p);
        /* The broker must not send a larger packet (MQTT 5, 3.1.2.11.4): it
         * drops such a message for us instead, so a giant payload is never
         * even read (see refuse_oversize for MQTT 3.1.1). */
        p.identifier = MQTTPROPERTY_CODE_MAXIMUM_PACKET_SIZE;
        p.value.integer4 = (unsigned)max_packet_size(m);
        MQTTProperties_add(&props, &p);
        o->connectProperties = &props;
    } else {
        o->cleansession = m->clean;
        o->onSuccess = on_connect;
        o->onFailure = on_connect_failed;
    }
    if (m->tls) {
        ssl.trustStore = m->ca_file;
        ssl.keyStore = m->cert_file;
        ssl.privateKey = m->key_file;
        ssl.enableServerCertAuth = m->tls_verify;
        ssl.verify = m->tls_verify;
        ssl.ssl_error_cb = on_ssl_error;
        ssl.ssl_error_context = m;
        o->ssl = &ssl;
    }
    pthread_mutex_lock(&m->lock);
    m->tls_errors[0] = '\0';
    pthread_mutex_unlock(&m->lock);
    set_state(m, CB_MQTT_CONNECTING);
    int rc = MQTTAsync_connect(m->client, o);
    MQTTProperties_free(&props);
    if (rc != MQTTASYNC_SUCCESS)
        connect_failed(m, rc, MQTTAsync_strerror(rc));
}

/* Logs why the last connect failed, in words with Paho's text and code,
 * probing the broker's port first when only that can tell (worker thread:
 * the probe blocks up to PROBE_TIMEOUT_MS per broker; none while stopping).
 * With a broker list Paho tried each one: each is explained in turn
 * ("tcp://a:1883: connection refused ...; tcp://b:1883: ..."). */
static void do_explain(struct cb_mqtt *m)
{
    char tls[sizeof m->tls_errors], message[sizeof m->fail_message];
    pthread_mutex_lock(&m->lock);
    int code = m->fail_code;
    bool stopping = m->stopping;
    memcpy(tls, m->tls_errors, sizeof tls);
    memcpy(message, m->fail_message, sizeof message);
    pthread_mutex_unlock(&m->lock);
    char words[400], text[sizeof m->last_error];
    size_t at = 0;
    text[0] = '\0';
    for (int i = 0; i < m->nuris && at < sizeof text; i++) {
        struct ingest_failure f = {.url = m->uris[i], .version = m->version, .code = code,
                                   .message = message, .tls_errors = tls,
                                   .ca_file = m->ca_file, .probe = INGEST_PROBE_NONE};
        if (ingest__failure_needs_probe(&f) && !stopping)
            f.probe = ingest__probe(m->uris[i], PROBE_TIMEOUT_MS);
        ingest__explain(&f, words, sizeof words);
        if (m->nuris == 1)
            at += (size_t)snprintf(text, sizeof text, "%s", words);
        else
            at += (size_t)snprintf(text + at, sizeof text - at, "%s%s: %s", i ? "; " : "",
                                   m->uris[i], words);
    }
    if (at < sizeof text)
        snprintf(text + at, sizeof text - at, " (%s, code %d)",
                 *message ? message : MQTTAsync_strerror(code), code);
    cb_warn(MOD, "cannot connect to %s: %s", m->url, text);
    set_last_error(m, text);
}

static int post(struct cb_mqtt *m, struct cmd *c);

/* Takes c off m->inflight (cmd_lock held). */
static void inflight_unlink(struct cb_mqtt *m, struct cmd *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        m->inflight = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->next = c->prev = NULL;
}

/* A QoS 1 publish Paho confirmed (Paho's thread): its record is freed. */
static void publish_done(struct cmd *c)
{
    struct cb_mqtt *m = c->m;
    pthread_mutex_lock(&m->cmd_lock);
    inflight_unlink(m, c);
    pthread_mutex_unlock(&m->cmd_lock);
    free(c);
}

/* A QoS 1 publish Paho failed (Paho's thread, or MQTTAsync_destroy's):
 * posted again unless the broker itself refused it (refused: an MQTT 5
 * reason code of 0x80 or above), or the client is closing (post refuses;
 * then it is counted as failed). */
static void publish_failed(struct cmd *c, int code, bool refused)
{
    static struct cb_ratelimit rl = {.burst = 5, .interval_ms = 10000};
    struct cb_mqtt *m = c->m;
    pthread_mutex_lock(&m->cmd_lock);
    inflight_unlink(m, c);
    pthread_mutex_unlock(&m->cmd_lock);
    if (refused) {
        cb_log_limited(&rl, CB_LOG_WARN, MOD, "the broker refused a publish to '%s' (code %d)",
                       c->topic, code);
        STAT_ADD(m, publish_failed, 1);
        free(c);
        return;
    }
    cb_log_limited(&rl, CB_LOG_INFO, MOD,
                   "Paho failed a QoS 1 publish to '%s' (code %d, the session was lost): "
                   "publishing it again",
                   c->topic, code);
    if (post(m, c)) { /* frees c */
        STAT_ADD(m, publish_failed, 1);
        return;
    }
    STAT_ADD(m, republished, 1);
}

static void on_published(void *ctx, MQTTAsync_successData *resp)
{
    (void)resp;
    publish_done(ctx);
}
static void on_published5(void *ctx, MQTTAsync_successData5 *resp)
{
    (void)resp;
    publish_done(ctx);
}
static void on_publish_failed(void *ctx, MQTTAsync_failureData *resp)
{
    publish_failed(ctx, resp ? resp->code : -1, false);
}
static void on_publish_failed5(void *ctx, MQTTAsync_failureData5 *resp)
{
    publish_failed(ctx, resp ? resp->code : -1, resp && resp->reasonCode >= 0x80);
}

/* Hands a publish to Paho (worker thread). A QoS 1 publish goes on
 * m->inflight first (Paho may confirm it before sendMessage returns) and
 * stays there until a callback above takes it: returns 1 then (the worker
 * must not free c). Refused at once, it waits on m->held for the next
 * connect. QoS 0 is fire and forget: returns 0 (c is the caller's). */
static int do_publish(struct cb_mqtt *m, struct cmd *c)
{
    MQTTAsync_message msg = MQTTAsync_message_initializer;
    msg.payload = c->data;
    msg.payloadlen = (int)c->len;
    msg.qos = c->qos;
    msg.retained = c->retained;
    MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
    bool track = c->qos > 0;
    if (track) {
        c->m = m;
        c->attempts++;
        ro.context = c;
        if (m->version == 5) {
            ro.onSuccess5 = on_published5;
            ro.onFailure5 = on_publish_failed5;
        } else {
            ro.onSuccess = on_published;
            ro.onFailure = on_publish_failed;
        }
        pthread_mutex_lock(&m->cmd_lock);
        c->prev = NULL;
        c->next = m->inflight;
        if (m->inflight)
            m->inflight->prev = c;
        m->inflight = c;
        pthread_mutex_unlock(&m->cmd_lock);
    }
    bool first = c->attempts <= 1;
    int rc = MQTTAsync_sendMessage(m->client, c->topic, &msg, &ro);
    if (rc == MQTTASYNC_SUCCESS) {
        /* c may be gone already: Paho's callback frees or posts it */
        if (first)
            STAT_ADD(m, published, 1);
        return track;
    }
    cb_debug(MOD, "publish to '%s' failed: %s", c->topic, MQTTAsync_strerror(rc));
    if (!track) {
        STAT_ADD(m, publish_failed, 1);
        return 0;
    }
    pthread_mutex_lock(&m->cmd_lock);
    inflight_unlink(m, c);
    c->next = m->held;
    m->held = c;
    pthread_mutex_unlock(&m->cmd_lock);
    return 1;
}

/* Posts the publishes Paho refused at once again (Paho's thread, on a
 * connect): they go behind what is already queued. */
static void repost_held(struct cb_mqtt *m)
{
    pthread_mutex_lock(&m->cmd_lock);
    struct cmd *c = m->held;
    m->held = NULL;
    pthread_mutex_unlock(&m->cmd_lock);
    while (c) {
        struct cmd *next = c->next;
        if (post(m, c))
            STAT_ADD(m, publish_failed, 1);
        else
            STAT_ADD(m, republished, 1);
        c = next;
    }
}

static void do_disconnect(struct cb_mqtt *m)
{
    /* A callback waiting for the journal holds Paho's lock: the stop has
     * woken it for one more try; wait for the outcome. Abandoned, it holds
     * the lock for good, and any Paho call would block this thread with it. */
    pthread_mutex_lock(&m->lock);
    while (m->journal == JOURNAL_WAITING)
        pthread_cond_wait(&m->journal_cv, &m->lock);
    bool abandoned = m->journal == JOURNAL_ABANDONED;
    pthread_mutex_unlock(&m->lock);
    if (abandoned) {
        disconnect_finished(m);
        return;
    }
    if (!MQTTAsync_isConnected(m->client)) {
        disconnect_finished(m);
        return;
    }
    send_disconnect(m, 2000);
}

static void *worker_main(void *arg)
{
    pthread_setname_np(pthread_self(), "cb-mqtt-calls"); /* for top -H and perf */
    struct cb_mqtt *m = arg;
    pthread_mutex_lock(&m->cmd_lock);
    for (;;) {
        while (!m->cmd_head && !m->worker_quit)
            pthread_cond_wait(&m->cmd_cond, &m->cmd_lock);
        if (!m->cmd_head && m->worker_quit)
            break;
        struct cmd *c = m->cmd_head;
        m->cmd_head = c->next;
        if (!m->cmd_head)
            m->cmd_tail = NULL;
        m->ncmds--;
        pthread_mutex_unlock(&m->cmd_lock);
        switch (c->kind) {
        case CMD_CONNECT: do_connect(m); break;
        case CMD_PUBLISH:
            if (do_publish(m, c))
                c = NULL; /* in flight, or held: see do_publish */
            break;
        case CMD_DISCONNECT: do_disconnect(m); break;
        case CMD_EXPLAIN: do_explain(m); break;
        }
        free(c);
        pthread_mutex_lock(&m->cmd_lock);
    }
    pthread_mutex_unlock(&m->cmd_lock);
    return NULL;
}

/* Appends a command for the worker (which then owns it). Publishes beyond
 * OUTBOUND_MAX waiting are refused, and every command once the worker was
 * told to quit (a Paho callback racing cb_mqtt_close): -1, c freed. */
static int post(struct cb_mqtt *m, struct cmd *c)
{
    pthread_mutex_lock(&m->cmd_lock);
    if ((c->kind == CMD_PUBLISH && m->ncmds >= OUTBOUND_MAX) || m->worker_quit) {
        pthread_mutex_unlock(&m->cmd_lock);
        free(c);
        return -1;
    }
    c->next = NULL;
    if (m->cmd_tail)
        m->cmd_tail->next = c;
    else
        m->cmd_head = c;
    m->cmd_tail = c;
    m->ncmds++;
    pthread_cond_signal(&m->cmd_cond);
    pthread_mutex_unlock(&m->cmd_lock);
    return 0;
}

static int post_simple(struct cb_mqtt *m, enum cmd_kind k)
{
    struct cmd *c = calloc(1, sizeof *c);
    if (!c)
        return -1;
    c->kind = k;
    return post(m, c);
}

/* ---- loop side ------------------------------------------------------------------------ */

static uint64_t next_random(struct cb_mqtt *m)
{
    /* xorshift64*: jitter only, not security. */
    m->rng ^= m->rng >> 12;
    m->rng ^= m->rng << 25;
    m->rng ^= m->rng >> 27;
    return m->rng * 2685821657736338717ULL;
}

/* A stop whose disconnect never reported back (Paho can drop the callbacks
 * of a disconnect that races a connect): give up waiting, so shutdown never
 * hangs on the broker; cb_mqtt_close destroys the client all the same. */
#define STOP_DEADLINE_MS 3000

static void maybe_done(struct cb_mqtt *m);

static void on_stop_deadline(struct cb_mqtt *m)
{
    pthread_mutex_lock(&m->lock);
    bool late = !m->disconnected_final;
    m->disconnected_final = true;
    pthread_mutex_unlock(&m->lock);
    if (late)
        cb_warn(MOD, "no answer to the disconnect from %s after %d ms; stopping anyway", m->url,
                STOP_DEADLINE_MS);
    maybe_done(m);
}

static void on_timer(uv_timer_t *t)
{
    struct cb_mqtt *m = t->data;
    if (m->stop_called) {
        on_stop_deadline(m);
        return;
    }
    if (post_simple(m, CMD_CONNECT))
        cb_error(MOD, "out of memory scheduling a reconnect");
}

static void schedule_reconnect(struct cb_mqtt *m)
{
    pthread_mutex_lock(&m->lock);
    int64_t b = m->backoff;
    m->backoff = b * 2 > m->backoff_max ? m->backoff_max : b * 2;
    pthread_mutex_unlock(&m->lock);
    int64_t half = b / 2;
    int64_t delay = half + (half > 0 ? (int64_t)(next_random(m) % (uint64_t)(half + 1)) : 0);
    cb_info(MOD, "reconnecting to %s in %lld ms", m->url, (long long)delay);
    uv_timer_start(&m->timer, on_timer, (uint64_t)delay, 0);
}

static void maybe_done(struct cb_mqtt *m)
{
    if (!m->stop_called || m->done_called)
        return;
    pthread_mutex_lock(&m->lock);
    bool ready = m->disconnected_final && m->head == NULL;
    pthread_mutex_unlock(&m->lock);
    if (!ready)
        return;
    m->done_called = true;
    uv_timer_stop(&m->timer);
    uv_timer_stop(&m->poll);
    set_state(m, CB_MQTT_STOPPED);
    if (m->done)
        m->done(m->done_ctx);
}

/* Coalescing, in the manner of Linux's NAPI. Below ingest.coalesce_above
 * msg/s each message that finds the queue empty wakes the loop at once (an
 * alert is never held back on a quiet stream). Above it, a wake-up per
 * message cost two context switches and an eventfd write each, about a fifth
 * of citybrain's CPU at 80k msg/s on two cores (perf), so the loop stops
 * being woken and collects the queue on a 1 ms tick instead, until the rate
 * falls below half the threshold. The rate is measured over windows of at
 * least 10 ms of the loop's drains. */
#define POLL_TICK_MS 1
#define RATE_WINDOW_NS 10000000ull

static void on_poll(uv_timer_t *t);

static void set_polling(struct cb_mqtt *m, bool on)
{
    pthread_mutex_lock(&m->lock);
    m->polling = on;
    /* What was appended while the flag was still set woke nobody. */
    bool pending = !on && m->head != NULL;
    pthread_mutex_unlock(&m->lock);
    if (on) {
        uv_timer_start(&m->poll, on_poll, POLL_TICK_MS, POLL_TICK_MS);
    } else {
        uv_timer_stop(&m->poll);
        if (pending)
            uv_async_send(&m->async);
    }
    STAT_ADD(m, coalesce_switches, 1);
}

/* Counts n drained messages into the rate window; switches mode when a
 * window closes on the other side of the threshold. */
static void pace(struct cb_mqtt *m, size_t n)
{
    if (m->coalesce_above <= 0 || m->stop_called)
        return;
    uint64_t now = uv_hrtime();
    m->win_msgs += n;
    uint64_t span = now - m->win_start_ns;
    if (span < RATE_WINDOW_NS)
        return;
    double rate = (double)m->win_msgs * 1e9 / (double)span;
    m->win_start_ns = now;
    m->win_msgs = 0;
    if (!m->polling && rate >= (double)m->coalesce_above)
        set_polling(m, true);
    else if (m->polling && rate < (double)m->coalesce_above / 2)
        set_polling(m, false);
}

/* Takes the whole queue under the lock, hands every message to on_message
 * without it, gives the room back; again until the queue is empty. Returns
 * the number of messages handled. */
static size_t drain(struct cb_mqtt *m)
{
    size_t total = 0;
    for (;;) {
        pthread_mutex_lock(&m->lock);
        struct node *list = m->head;
        m->head = m->tail = NULL;
        bool reconnect = m->need_reconnect;
        m->need_reconnect = false;
        pthread_mutex_unlock(&m->lock);
        if (!list) {
            if (reconnect && !m->stop_called)
                schedule_reconnect(m);
            break;
        }
        size_t n = 0, bytes = 0, nsmall = 0;
        struct node *small = NULL, *small_tail = NULL;
        while (list) {
            struct node *next = list->next;
            struct cb_message msg = {.topic = list->data,
                                     .topic_len = list->topic_len,
                                     .payload = list->data + list->topic_len + 1,
                                     .len = list->len,
                                     .arrival_ms = list->arrival_ms,
                                     .qos = list->qos,
                                     .journal_pos = list->journal_pos};
            m->on_message(m->ctx, &msg);
            n++;
            bytes += list->topic_len + 1 + list->len;
            if (list->cap == NODE_SMALL) {
                list->next = small;
                small = list;
                if (!small_tail)
                    small_tail = list;
                nsmall++;
            } else {
                free(list);
            }
            list = next;
        }
        STAT_ADD(m, received, n);
        total += n;
        pthread_mutex_lock(&m->lock);
        if (small && m->nspare + nsmall <= SPARE_MAX) {
            small_tail->next = m->spare;
            m->spare = small;
            m->nspare += nsmall;
            small = NULL;
        }
        m->count -= n;
        m->bytes -= bytes;
        STAT_SET(m, queue_depth, m->count);
        STAT_SET(m, queue_bytes, m->bytes);
        pthread_cond_broadcast(&m->room);
        pthread_mutex_unlock(&m->lock);
        free_list(small); /* more than SPARE_MAX are waiting */
        if (reconnect && !m->stop_called)
            schedule_reconnect(m);
        /* Go round again: what arrived while we processed is drained now,
         * and a stop sees an empty queue. */
    }
    return total;
}

/* The loop's wake-up (a message on an empty queue, or a state change). */
static void on_async(uv_async_t *a)
{
    struct cb_mqtt *m = a->data;
    pace(m, drain(m));
    maybe_done(m);
}

/* The collection tick while coalescing. */
static void on_poll(uv_timer_t *t)
{
    struct cb_mqtt *m = t->data;
    pace(m, drain(m));
    maybe_done(m);
}

int ingest__broker_first(const char *client_id, int n, int rotate)
{
    if (n <= 1 || !rotate)
        return 0;
    uint32_t h = 2166136261u; /* FNV-1a: stable across runs and machines */
    for (const unsigned char *p = (const unsigned char *)client_id; *p; p++)
        h = (h ^ *p) * 16777619u;
    return (int)(h % (uint32_t)n);
}

/* Fills m->uris from mqtt.broker's list, rotated to start where
 * mqtt.broker_start says (ingest__broker_first), and m->tls. Returns 0, -1
 * on OOM, -2 for a list with no URL (what was taken is freed by free_owned). */
static int take_brokers(struct cb_mqtt *m, const struct cb_config *cfg)
{
    struct cb_strlist l;
    if (cb_config_brokers(cfg->mqtt_broker, &l))
        return -1;
    m->uris = l.items;
    m->nuris = (int)l.n;
    if (m->nuris == 0)
        return -2;
    int first = ingest__broker_first(m->client_id, m->nuris,
                                     cfg->mqtt_broker_start == CB_BROKER_START_ROTATE);
    char *rot[m->nuris];
    for (int i = 0; i < m->nuris; i++)
        rot[i] = m->uris[(first + i) % m->nuris];
    for (int i = 0; i < m->nuris; i++) {
        m->uris[i] = rot[i];
        if (!strncmp(rot[i], "ssl://", 6) || !strncmp(rot[i], "mqtts://", 8))
            m->tls = true;
    }
    return 0;
}

struct cb_mqtt *cb_mqtt_new(uv_loop_t *loop, const struct cb_config *cfg, cb_message_fn on_message,
                            void *ctx, char *err, size_t errlen)
{
    struct cb_mqtt *m = calloc(1, sizeof *m);
    if (!m) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    m->loop = loop;
    m->on_message = on_message;
    m->ctx = ctx;
    pthread_mutex_init(&m->lock, NULL);
    pthread_cond_init(&m->room, NULL);
    pthread_cond_init(&m->journal_cv, NULL);
    pthread_mutex_init(&m->cmd_lock, NULL);
    pthread_cond_init(&m->cmd_cond, NULL);
    m->version = cfg->mqtt_version == 5 ? 5 : 4;
    m->url = strdup(cfg->mqtt_broker);
    m->client_id = cb_config_client_id(cfg);
    if (!m->url || !m->client_id)
        goto oom;
    int brc = take_brokers(m, cfg);
    if (brc == -2) {
        snprintf(err, errlen, "no broker URL in mqtt.broker '%s'", cfg->mqtt_broker);
        goto fail;
    }
    if (brc)
        goto oom;
    m->username = dup_or_null(cfg->mqtt_username);
    m->password = dup_or_null(cfg->mqtt_password);
    m->ca_file = dup_or_null(cfg->mqtt_ca_file);
    m->cert_file = dup_or_null(cfg->mqtt_cert_file);
    m->key_file = dup_or_null(cfg->mqtt_key_file);
    /* mqtt.topic, or a cluster partition's districts and the alert feed */
    struct cb_strlist subs;
    if (cb_config_subscriptions(cfg, &subs))
        goto oom;
    m->ntopics = (int)subs.n;
    m->topics = subs.items; /* taken: freed with the client */
    m->qoss = calloc(subs.n + 1, sizeof *m->qoss);
    if (!m->url || !m->client_id || (subs.n && !m->topics) || !m->qoss)
        goto oom;
    for (int i = 0; i < m->ntopics; i++)
        m->qoss[i] = (int)cfg->mqtt_qos;
    m->qos = (int)cfg->mqtt_qos;
    m->clean = cfg->mqtt_clean_session ? 1 : 0;
    m->tls_verify = cfg->mqtt_tls_verify ? 1 : 0;
    m->keepalive_s = (int)(cfg->mqtt_keepalive_ms / 1000);
    if (m->keepalive_s < 1)
        m->keepalive_s = 1;
    m->session_expiry_s = cfg->mqtt_session_expiry_ms / 1000;
    m->max_inflight = (int)cfg->mqtt_max_inflight;
    m->backoff_min = cfg->mqtt_reconnect_min_ms;
    m->backoff_max = cfg->mqtt_reconnect_max_ms;
    m->backoff = m->backoff_min;
    m->max_topic = (size_t)cfg->ingest_max_topic_length;
    m->max_payload = (size_t)cfg->ingest_max_payload;
    m->max_count = (size_t)cfg->ingest_queue_max_messages;
    m->max_bytes = (size_t)cfg->ingest_queue_max_bytes;
    m->coalesce_above = cfg->ingest_coalesce_above;
    m->stamps = m->own_stamps = cb_stamps_new();
    if (!m->stamps)
        goto oom;
    m->rng = (uint64_t)cb_mono_us() * 0x9E3779B97F4A7C15ULL | 1;
    if (m->ntopics == 0) {
        snprintf(err, errlen, "no topic filter to subscribe to");
        goto fail;
    }

    MQTTAsync_createOptions co = MQTTAsync_createOptions_initializer;
    co.MQTTVersion = m->version == 5 ? MQTTVERSION_5 : MQTTVERSION_3_1_1;
    co.sendWhileDisconnected = 1; /* alerts published during a reconnect wait in Paho */
    /* Beyond the buffer Paho refuses a publish at once (never drops the
     * oldest in silence): a QoS 1 one is held and posted again on connect. */
    co.maxBufferedMessages = OUTBOUND_MAX;
    co.deleteOldestMessages = 0;
    int rc = MQTTAsync_createWithOptions(&m->client, m->uris[0], m->client_id,
                                         MQTTCLIENT_PERSISTENCE_NONE, NULL, &co);
    if (rc != MQTTASYNC_SUCCESS) {
        snprintf(err, errlen, "cannot create the MQTT client for %s: %s", m->url,
                 MQTTAsync_strerror(rc));
        goto fail;
    }
    m->client_created = true;
    rc = MQTTAsync_setCallbacks(m->client, m, on_connection_lost, on_arrived, NULL);
    if (rc == MQTTASYNC_SUCCESS && m->version == 5)
        rc = MQTTAsync_setDisconnected(m->client, m, on_broker_disconnect);
    if (rc != MQTTASYNC_SUCCESS) {
        snprintf(err, errlen, "cannot set the MQTT callbacks: %s", MQTTAsync_strerror(rc));
        goto fail;
    }
    if (uv_async_init(loop, &m->async, on_async)) {
        snprintf(err, errlen, "cannot create the loop's wake-up handle");
        goto fail;
    }
    m->async.data = m;
    m->open_handles++;
    uv_timer_init(loop, &m->timer);
    m->timer.data = m;
    m->open_handles++;
    uv_timer_init(loop, &m->poll);
    m->poll.data = m;
    m->open_handles++;
    m->win_start_ns = uv_hrtime();
    return m;
oom:
    snprintf(err, errlen, "out of memory");
fail:
    if (m->client_created)
        MQTTAsync_destroy(&m->client);
    free_owned(m);
    pthread_mutex_destroy(&m->lock);
    pthread_cond_destroy(&m->room);
    pthread_cond_destroy(&m->journal_cv);
    pthread_mutex_destroy(&m->cmd_lock);
    pthread_cond_destroy(&m->cmd_cond);
    free(m);
    return NULL;
}

void cb_mqtt_set_persist(struct cb_mqtt *m, cb_persist_fn fn, void *ctx)
{
    m->persist = fn;
    m->persist_ctx = ctx;
}

void cb_mqtt_set_stamps(struct cb_mqtt *m, struct cb_stamps *s)
{
    if (!m->started)
        m->stamps = s;
}

int cb_mqtt_add_topic(struct cb_mqtt *m, const char *filter, int qos)
{
    if (m->started)
        return -1;
    char *copy = strdup(filter);
    char **topics = copy ? realloc(m->topics, (size_t)(m->ntopics + 2) * sizeof *topics) : NULL;
    if (!topics) {
        free(copy);
        return -1;
    }
    m->topics = topics;
    int *qoss = realloc(m->qoss, (size_t)(m->ntopics + 2) * sizeof *qoss);
    if (!qoss) {
        free(copy);
        return -1;
    }
    m->qoss = qoss;
    m->topics[m->ntopics] = copy;
    m->qoss[m->ntopics] = qos;
    m->ntopics++;
    return 0;
}

void cb_mqtt_set_refused(struct cb_mqtt *m, cb_refused_fn fn, void *ctx)
{
    m->refused = fn;
    m->refused_ctx = ctx;
}

int cb_mqtt_start(struct cb_mqtt *m)
{
    if (m->started || m->stop_called)
        return -1;
    if (pthread_create(&m->worker, NULL, worker_main, m) != 0) {
        cb_error(MOD, "cannot start the MQTT worker thread");
        return -1;
    }
    m->worker_started = true;
    m->started = true;
    cb_info(MOD, "starting: %s, client id '%s', %d filter(s), QoS %d, %s session", m->url,
            m->client_id, m->ntopics, m->qos, m->clean ? "clean" : "persistent");
    return post_simple(m, CMD_CONNECT);
}

int cb_mqtt_publish(struct cb_mqtt *m, const char *topic, const void *payload, size_t len,
                    int qos, int retained)
{
    size_t tl = strlen(topic);
    struct cmd *c = malloc(sizeof *c + len + tl + 1);
    if (!c) {
        STAT_ADD(m, publish_failed, 1);
        return -1;
    }
    c->kind = CMD_PUBLISH;
    c->m = m;
    c->prev = NULL;
    c->attempts = 0;
    c->qos = qos;
    c->retained = retained;
    c->len = len;
    if (len)
        memcpy(c->data, payload, len);
    c->topic = c->data + len;
    memcpy(c->topic, topic, tl + 1);
    if (!m->worker_started || m->stop_called || post(m, c)) {
        if (!m->worker_started || m->stop_called)
            free(c);
        STAT_ADD(m, publish_failed, 1);
        return -1;
    }
    return 0;
}

void cb_mqtt_stop(struct cb_mqtt *m, void (*done)(void *ctx), void *ctx)
{
    if (m->stop_called)
        return;
    m->stop_called = true;
    m->done = done;
    m->done_ctx = ctx;
    /* The reconnect timer becomes the stop's deadline (see on_timer). */
    uv_timer_start(&m->timer, on_timer, STOP_DEADLINE_MS, 0);
    pthread_mutex_lock(&m->lock);
    m->stopping = true;
    m->need_reconnect = false;
    pthread_cond_broadcast(&m->room);
    pthread_cond_broadcast(&m->journal_cv);
    if (!m->worker_started)
        m->disconnected_final = true;
    pthread_mutex_unlock(&m->lock);
    if (m->polling)
        set_polling(m, false);
    cb_info(MOD, "stopping: disconnecting from %s", m->url);
    if (m->worker_started && post_simple(m, CMD_DISCONNECT)) {
        pthread_mutex_lock(&m->lock);
        m->disconnected_final = true;
        pthread_mutex_unlock(&m->lock);
    }
    /* done is always called from the loop, never from inside stop. */
    uv_async_send(&m->async);
}

static void on_handle_closed(uv_handle_t *h)
{
    struct cb_mqtt *m = h->data;
    if (--m->open_handles > 0 || m->abandoned)
        return;
    free_owned(m);
    pthread_mutex_destroy(&m->lock);
    pthread_cond_destroy(&m->room);
    pthread_cond_destroy(&m->journal_cv);
    pthread_mutex_destroy(&m->cmd_lock);
    pthread_cond_destroy(&m->cmd_cond);
    free(m);
}

void cb_mqtt_close(struct cb_mqtt *m)
{
    if (!m || m->closing)
        return;
    m->closing = true;
    pthread_mutex_lock(&m->lock);
    bool abandoned = m->journal == JOURNAL_ABANDONED;
    pthread_mutex_unlock(&m->lock);
    if (abandoned) {
        /* The Paho thread is parked inside a callback, holding Paho's lock,
         * with a message that must not be acknowledged (see the top):
         * destroying the client or joining the worker (which may be waiting
         * for that lock) would never return, and the parked thread still
         * uses this struct. All three are left to the process's exit, which
         * closes the connection without the PUBACK. */
        if (m->worker_started)
            pthread_detach(m->worker);
        m->worker_started = false;
        m->client_created = false;
        m->abandoned = true;
    }
    if (m->worker_started) {
        pthread_mutex_lock(&m->cmd_lock);
        m->worker_quit = true;
        pthread_cond_signal(&m->cmd_cond);
        pthread_mutex_unlock(&m->cmd_lock);
        pthread_join(m->worker, NULL);
        m->worker_started = false;
    }
    /* Unsent commands (publishes after the disconnect) are dropped. */
    while (m->cmd_head) {
        struct cmd *c = m->cmd_head;
        m->cmd_head = c->next;
        if (c->kind == CMD_PUBLISH)
            STAT_ADD(m, publish_failed, 1);
        free(c);
    }
    m->cmd_tail = NULL;
    /* Paho's threads stop calling us once the client is destroyed. */
    if (m->client_created) {
        MQTTAsync_destroy(&m->client);
        m->client_created = false;
        /* QoS 1 publishes never confirmed: lost with this run (counted). */
        struct cmd *lists[] = {m->inflight, m->held};
        m->inflight = m->held = NULL;
        for (int i = 0; i < 2; i++) {
            while (lists[i]) {
                struct cmd *c = lists[i];
                lists[i] = c->next;
                STAT_ADD(m, publish_failed, 1);
                free(c);
            }
        }
    }
    /* Anything still queued (close without stop) is dropped. */
    free_list(m->head);
    m->head = m->tail = NULL;
    free_list(m->spare);
    free_list(m->mine);
    m->spare = m->mine = NULL;
    uv_close((uv_handle_t *)&m->async, on_handle_closed);
    uv_close((uv_handle_t *)&m->timer, on_handle_closed);
    uv_close((uv_handle_t *)&m->poll, on_handle_closed);
}

int cb_mqtt_last_error(struct cb_mqtt *m, char *buf, size_t len)
{
    pthread_mutex_lock(&m->lock);
    int have = m->last_error[0] != '\0';
    if (len)
        snprintf(buf, len, "%s", m->last_error);
    pthread_mutex_unlock(&m->lock);
    return have;
}

void cb_mqtt_get_stats(struct cb_mqtt *m, struct cb_mqtt_stats *out)
{
    out->received = STAT_GET(m, received);
    out->dropped_qos0 = STAT_GET(m, dropped_qos0);
    out->deferred_qos1 = STAT_GET(m, deferred_qos1);
    out->journal_waits = STAT_GET(m, journal_waits);
    out->journal_errno = STAT_GET(m, journal_errno);
    out->refused_topic = STAT_GET(m, refused_topic);
    out->refused_payload = STAT_GET(m, refused_payload);
    out->connects = STAT_GET(m, connects);
    out->connection_lost = STAT_GET(m, connection_lost);
    out->published = STAT_GET(m, published);
    out->publish_failed = STAT_GET(m, publish_failed);
    out->republished = STAT_GET(m, republished);
    out->queue_depth = STAT_GET(m, queue_depth);
    out->queue_bytes = STAT_GET(m, queue_bytes);
    out->coalesce_switches = STAT_GET(m, coalesce_switches);
    out->state = STAT_GET(m, state);
}
