/* The lease client: librabbitmq on its own thread; see lease.h.
 *
 * The thread's life: connect to the next URL (each twin starts at a
 * different one), log in with heartbeats, declare the lease queue (quorum,
 * x-single-active-consumer: of the twins consuming, the broker delivers to
 * one only, and to the next when that one's connection dies), seed the token
 * when the queue holds none and has no consumer, then consume with prefetch 1
 * and no acknowledgement. A delivery is the lease; any error
 * ends the connection, the lease with it, and the thread tries the next URL
 * after a pause (250 ms doubling to 5 s). */
#include "lease/lease.h"
#include "base/clock.h"
#include "base/log.h"

#include <amqp.h>
#include <amqp_tcp_socket.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MOD "lease"
#define RPC_TIMEOUT_S 5
#define POLL_MS 200

struct cb_lease {
    uv_loop_t *loop;
    uv_async_t async;
    cb_lease_change_fn on_change;
    void *ctx;
    char **urls;
    size_t nurls, next;
    char *queue;
    int heartbeat_s;

    pthread_t thread;
    int started;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    int stop;       /* under lock */
    int ineligible; /* under lock: cb_lease_set_eligible(0) */
    struct cb_lease_status st; /* under lock */

    void (*done)(void *);
    void *done_ctx;
};

const char *cb_lease_state_name(enum cb_lease_state s)
{
    static const char *const names[] = {"off", "connecting", "standby", "holder"};
    return (unsigned)s < 4 ? names[s] : "?";
}

/* ---- the client thread ------------------------------------------------------ */

/* Publishes a change of state to the loop. */
static void set_state(struct cb_lease *l, enum cb_lease_state s, int64_t epoch, const char *error)
{
    pthread_mutex_lock(&l->lock);
    if (s == CB_LEASE_HOLDER) {
        l->st.gained++;
        l->st.epoch = epoch;
    }
    if (l->st.state == CB_LEASE_HOLDER && s != CB_LEASE_HOLDER)
        l->st.lost++;
    if (s == CB_LEASE_STANDBY && l->st.state == CB_LEASE_CONNECTING)
        l->st.connects++;
    if (l->st.state != s)
        l->st.since_ms = cb_wall_ms();
    l->st.state = s;
    if (error)
        snprintf(l->st.error, sizeof l->st.error, "%s", error);
    pthread_mutex_unlock(&l->lock);
    uv_async_send(&l->async);
}

static int stopping(struct cb_lease *l)
{
    pthread_mutex_lock(&l->lock);
    int s = l->stop;
    pthread_mutex_unlock(&l->lock);
    return s;
}

/* Stopping, or not eligible: the connection must end. */
static int must_leave(struct cb_lease *l)
{
    pthread_mutex_lock(&l->lock);
    int s = l->stop || l->ineligible;
    pthread_mutex_unlock(&l->lock);
    return s;
}

/* Sleeps ms unless stopped meanwhile. */
static void pause_ms(struct cb_lease *l, int64_t ms)
{
    struct timespec ts = cb_deadline_in_ms(ms);
    pthread_mutex_lock(&l->lock);
    while (!l->stop && pthread_cond_timedwait(&l->wake, &l->lock, &ts) == 0)
        ;
    pthread_mutex_unlock(&l->lock);
}

/* Why an RPC failed, in words. */
static void reply_text(amqp_rpc_reply_t r, const char *what, char *out, size_t n)
{
    switch (r.reply_type) {
    case AMQP_RESPONSE_NORMAL: snprintf(out, n, "%s: ok", what); break;
    case AMQP_RESPONSE_NONE: snprintf(out, n, "%s: no reply", what); break;
    case AMQP_RESPONSE_LIBRARY_EXCEPTION:
        snprintf(out, n, "%s: %s", what, amqp_error_string2(r.library_error));
        break;
    case AMQP_RESPONSE_SERVER_EXCEPTION:
        if (r.reply.id == AMQP_CONNECTION_CLOSE_METHOD || r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
            amqp_connection_close_t *c = r.reply.decoded; /* same layout as channel.close */
            snprintf(out, n, "%s: broker said %u %.*s", what, c->reply_code,
                     (int)c->reply_text.len, (const char *)c->reply_text.bytes);
        } else {
            snprintf(out, n, "%s: broker error (method 0x%08x)", what, r.reply.id);
        }
        break;
    }
}

/* The fencing epoch of a delivery: its x-delivery-count header (0 on the
 * first delivery, when the header is absent). */
static int64_t delivery_count(const amqp_envelope_t *env)
{
    const amqp_basic_properties_t *p = &env->message.properties;
    if (!(p->_flags & AMQP_BASIC_HEADERS_FLAG))
        return 0;
    for (int i = 0; i < p->headers.num_entries; i++) {
        const amqp_table_entry_t *e = &p->headers.entries[i];
        if (e->key.len != 16 || memcmp(e->key.bytes, "x-delivery-count", 16))
            continue;
        switch (e->value.kind) {
        case AMQP_FIELD_KIND_I8: return e->value.value.i8;
        case AMQP_FIELD_KIND_U8: return e->value.value.u8;
        case AMQP_FIELD_KIND_I16: return e->value.value.i16;
        case AMQP_FIELD_KIND_U16: return e->value.value.u16;
        case AMQP_FIELD_KIND_I32: return e->value.value.i32;
        case AMQP_FIELD_KIND_U32: return e->value.value.u32;
        case AMQP_FIELD_KIND_I64: return e->value.value.i64;
        case AMQP_FIELD_KIND_U64: return (int64_t)e->value.value.u64;
        default: return 0;
        }
    }
    return 0;
}

/* Publishes the token with a publisher confirm. Two twins that start at
 * the same moment may both see an empty queue and both seed: harmless, as
 * the queue has a single active consumer, which alone receives (and holds)
 * a token; the others wait in the queue. Returns 0 when the broker
 * confirmed, 1 when it refused, -1 on an error. */
static int seed_token(struct cb_lease *l, amqp_connection_state_t c, char *why, size_t n)
{
    amqp_confirm_select(c, 1);
    amqp_rpc_reply_t r = amqp_get_rpc_reply(c);
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        reply_text(r, "confirm.select", why, n);
        return -1;
    }
    amqp_basic_properties_t props = {._flags = AMQP_BASIC_DELIVERY_MODE_FLAG,
                                     .delivery_mode = 2};
    if (amqp_basic_publish(c, 1, amqp_empty_bytes, amqp_cstring_bytes(l->queue), 0, 0, &props,
                           amqp_cstring_bytes("lease")) != AMQP_STATUS_OK) {
        snprintf(why, n, "publishing the token failed");
        return -1;
    }
    struct timeval tv = {RPC_TIMEOUT_S, 0};
    amqp_frame_t f;
    for (;;) {
        int rc = amqp_simple_wait_frame_noblock(c, &f, &tv);
        if (rc != AMQP_STATUS_OK) {
            snprintf(why, n, "waiting for the token's confirm: %s", amqp_error_string2(rc));
            return -1;
        }
        if (f.frame_type != AMQP_FRAME_METHOD)
            continue;
        if (f.payload.method.id == AMQP_BASIC_ACK_METHOD)
            return 0;
        if (f.payload.method.id == AMQP_BASIC_NACK_METHOD)
            return 1;
        snprintf(why, n, "unexpected answer to the token (method 0x%08x)", f.payload.method.id);
        return -1;
    }
}

/* One connection's life, from connect to its end. Returns when the
 * connection failed or the module stops; why says what ended it. */
static void session(struct cb_lease *l, const char *url, char *why, size_t n)
{
    char *copy = strdup(url);
    struct amqp_connection_info ci;
    amqp_connection_state_t c = NULL;
    amqp_rpc_reply_t r;
    if (!copy || amqp_parse_url(copy, &ci) != AMQP_STATUS_OK) {
        snprintf(why, n, "'%s' is not an AMQP URL", url);
        goto out;
    }
    pthread_mutex_lock(&l->lock);
    snprintf(l->st.broker, sizeof l->st.broker, "%s:%d", ci.host, ci.port);
    pthread_mutex_unlock(&l->lock);
    c = amqp_new_connection();
    amqp_socket_t *sock = c ? amqp_tcp_socket_new(c) : NULL;
    if (!sock) {
        snprintf(why, n, "out of memory");
        goto out;
    }
    struct timeval tv = {RPC_TIMEOUT_S, 0};
    amqp_set_rpc_timeout(c, &tv);
    amqp_set_handshake_timeout(c, &tv);
    int rc = amqp_socket_open_noblock(sock, ci.host, ci.port, &tv);
    if (rc != AMQP_STATUS_OK) {
        snprintf(why, n, "connect to %s:%d: %s", ci.host, ci.port, amqp_error_string2(rc));
        goto out;
    }
    /* "amqp://host:port/" names the empty vhost; nobody means that */
    r = amqp_login(c, *ci.vhost ? ci.vhost : "/", 0, AMQP_DEFAULT_FRAME_SIZE, l->heartbeat_s,
                   AMQP_SASL_METHOD_PLAIN, ci.user, ci.password);
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        reply_text(r, "login", why, n);
        goto close;
    }
    amqp_channel_open(c, 1);
    if ((r = amqp_get_rpc_reply(c)).reply_type != AMQP_RESPONSE_NORMAL) {
        reply_text(r, "channel.open", why, n);
        goto close;
    }
    amqp_table_entry_t args[2] = {
        {.key = amqp_cstring_bytes("x-queue-type"),
         .value = {.kind = AMQP_FIELD_KIND_UTF8, .value.bytes = amqp_cstring_bytes("quorum")}},
        {.key = amqp_cstring_bytes("x-single-active-consumer"),
         .value = {.kind = AMQP_FIELD_KIND_BOOLEAN, .value.boolean = 1}},
    };
    amqp_table_t table = {.num_entries = 2, .entries = args};
    amqp_queue_declare_ok_t *ok =
        amqp_queue_declare(c, 1, amqp_cstring_bytes(l->queue), 0, 1, 0, 0, table);
    if (!ok) {
        reply_text(amqp_get_rpc_reply(c), "declaring the lease queue", why, n);
        goto close;
    }
    if (ok->message_count == 0 && ok->consumer_count == 0) {
        int s = seed_token(l, c, why, n);
        if (s < 0)
            goto close;
        if (s == 0)
            cb_info(MOD, "queue %s had no token: seeded one", l->queue);
    }
    amqp_basic_qos(c, 1, 0, 1, 0);
    if ((r = amqp_get_rpc_reply(c)).reply_type != AMQP_RESPONSE_NORMAL) {
        reply_text(r, "basic.qos", why, n);
        goto close;
    }
    amqp_basic_consume(c, 1, amqp_cstring_bytes(l->queue), amqp_empty_bytes, 0, 0, 0,
                       amqp_empty_table);
    if ((r = amqp_get_rpc_reply(c)).reply_type != AMQP_RESPONSE_NORMAL) {
        reply_text(r, "basic.consume", why, n);
        goto close;
    }
    set_state(l, CB_LEASE_STANDBY, 0, "");
    cb_info(MOD, "waiting for the lease on %s (queue %s)", l->st.broker, l->queue);
    int holding = 0;
    while (!must_leave(l)) {
        amqp_envelope_t env;
        struct timeval poll = {0, POLL_MS * 1000};
        amqp_maybe_release_buffers(c);
        r = amqp_consume_message(c, &env, &poll, 0);
        if (r.reply_type == AMQP_RESPONSE_NORMAL) {
            int64_t epoch = delivery_count(&env);
            amqp_destroy_envelope(&env);
            if (!holding) { /* never acknowledged: it is ours while we live */
                holding = 1;
                set_state(l, CB_LEASE_HOLDER, epoch, NULL);
                cb_info(MOD, "holding the lease of queue %s (epoch %lld)", l->queue,
                        (long long)epoch);
            }
            continue;
        }
        if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION && r.library_error == AMQP_STATUS_TIMEOUT)
            continue;
        reply_text(r, "waiting for the token", why, n);
        if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
            r.library_error == AMQP_STATUS_UNEXPECTED_STATE) {
            amqp_frame_t f; /* a channel.close or basic.cancel: read it for the log */
            if (amqp_simple_wait_frame_noblock(c, &f, &poll) == AMQP_STATUS_OK &&
                f.frame_type == AMQP_FRAME_METHOD)
                snprintf(why, n, "the broker ended the consumer (method 0x%08x)",
                         f.payload.method.id);
        }
        break;
    }
    if (!*why)
        snprintf(why, n, stopping(l) ? "stopped" : "not eligible (MQTT is not connected)");
close:
    /* Falls silent first: the token may already be on its way to the twin. */
    set_state(l, CB_LEASE_CONNECTING, 0, why);
    amqp_channel_close(c, 1, AMQP_REPLY_SUCCESS);
    amqp_connection_close(c, AMQP_REPLY_SUCCESS);
out:
    if (c)
        amqp_destroy_connection(c);
    free(copy);
}

static void *run(void *arg)
{
    struct cb_lease *l = arg;
    int64_t backoff = 250;
    while (!stopping(l)) {
        pthread_mutex_lock(&l->lock);
        while (l->ineligible && !l->stop)
            pthread_cond_wait(&l->wake, &l->lock);
        pthread_mutex_unlock(&l->lock);
        if (stopping(l))
            break;
        const char *url = l->urls[l->next];
        l->next = (l->next + 1) % l->nurls;
        char why[160] = "";
        uint64_t before = l->st.connects;
        session(l, url, why, sizeof why);
        set_state(l, CB_LEASE_CONNECTING, 0, why);
        if (stopping(l))
            break;
        if (must_leave(l)) {
            cb_info(MOD, "lease given up: %s", why);
            continue;
        }
        cb_warn(MOD, "lease connection: %s", why);
        if (l->st.connects != before)
            backoff = 250; /* it had worked: retry soon, on the next node */
        pause_ms(l, backoff);
        backoff = backoff * 2 > 5000 ? 5000 : backoff * 2;
    }
    return NULL;
}

/* ---- the loop side -------------------------------------------------------- */

static void on_async(uv_async_t *h)
{
    struct cb_lease *l = h->data;
    struct cb_lease_status st;
    cb_lease_get(l, &st);
    if (l->on_change)
        l->on_change(l->ctx, &st);
}

static void free_lease(struct cb_lease *l)
{
    for (size_t i = 0; l->urls && i < l->nurls; i++)
        free(l->urls[i]);
    free(l->urls);
    free(l->queue);
    pthread_mutex_destroy(&l->lock);
    pthread_cond_destroy(&l->wake);
    free(l);
}

struct cb_lease *cb_lease_new(uv_loop_t *loop, const struct cb_config *cfg,
                              cb_lease_change_fn on_change, void *ctx, char *err, size_t errlen)
{
    struct cb_lease *l = calloc(1, sizeof *l);
    if (!l) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&l->lock, NULL);
    pthread_cond_init(&l->wake, NULL);
    l->loop = loop;
    l->on_change = on_change;
    l->ctx = ctx;
    l->st.state = CB_LEASE_CONNECTING;
    l->st.epoch = -1;
    l->ineligible = 1; /* until the daemon sees its MQTT connection up */
    l->st.since_ms = cb_wall_ms();
    l->heartbeat_s = (int)(cfg->cluster_lease_heartbeat_ms / 1000);
    if (l->heartbeat_s < 1)
        l->heartbeat_s = 1;
    l->nurls = cfg->cluster_lease.n;
    l->urls = calloc(l->nurls ? l->nurls : 1, sizeof *l->urls);
    l->queue = cb_config_lease_queue(cfg);
    if (!l->urls || !l->queue)
        goto oom;
    if (!l->nurls) {
        snprintf(err, errlen, "cluster.lease: no AMQP URL");
        goto fail;
    }
    for (size_t i = 0; i < l->nurls; i++) {
        struct amqp_connection_info ci;
        if (!(l->urls[i] = strdup(cfg->cluster_lease.items[i])))
            goto oom;
        char *probe = strdup(l->urls[i]);
        if (!probe)
            goto oom;
        int bad = amqp_parse_url(probe, &ci) != AMQP_STATUS_OK;
        free(probe);
        if (bad) {
            snprintf(err, errlen, "cluster.lease: '%s' is not an AMQP URL", l->urls[i]);
            goto fail;
        }
    }
    /* Twins start on different nodes: the twin's name picks the first. */
    unsigned h = 5381;
    for (const char *p = cfg->cluster_twin; *p; p++)
        h = h * 33 + (unsigned char)*p;
    l->next = h % l->nurls;
    if (uv_async_init(loop, &l->async, on_async))
        goto oom;
    l->async.data = l;
    return l;
oom:
    snprintf(err, errlen, "out of memory");
fail:
    free_lease(l);
    return NULL;
}

int cb_lease_start(struct cb_lease *l)
{
    if (pthread_create(&l->thread, NULL, run, l))
        return -1;
    l->started = 1;
    return 0;
}

void cb_lease_set_eligible(struct cb_lease *l, int eligible)
{
    pthread_mutex_lock(&l->lock);
    l->ineligible = !eligible;
    pthread_cond_broadcast(&l->wake);
    pthread_mutex_unlock(&l->lock);
}

void cb_lease_get(struct cb_lease *l, struct cb_lease_status *out)
{
    pthread_mutex_lock(&l->lock);
    *out = l->st;
    pthread_mutex_unlock(&l->lock);
}

static void on_closed(uv_handle_t *h)
{
    struct cb_lease *l = h->data;
    void (*done)(void *) = l->done;
    void *ctx = l->done_ctx;
    free_lease(l);
    if (done)
        done(ctx);
}

void cb_lease_close(struct cb_lease *l, void (*done)(void *ctx), void *ctx)
{
    pthread_mutex_lock(&l->lock);
    l->stop = 1;
    pthread_cond_broadcast(&l->wake);
    pthread_mutex_unlock(&l->lock);
    if (l->started)
        pthread_join(l->thread, NULL);
    l->done = done;
    l->done_ctx = ctx;
    uv_close((uv_handle_t *)&l->async, on_closed);
}
