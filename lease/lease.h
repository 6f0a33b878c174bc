/* The partition's lease: which twin speaks (docs/cluster.md "The lease").
 *
 * The lease is a primitive of the broker, not a protocol of ours: one token
 * message in a RabbitMQ quorum queue with a single active consumer, consumed
 * over AMQP with prefetch 1 and never acknowledged. The twin the broker delivered it to holds the lease for
 * as long as its AMQP connection lives; when that connection dies (the twin is
 * killed, its broker node is killed, heartbeats stop), the broker returns the
 * token to the queue and delivers it to the waiting twin. The queue's
 * x-delivery-count header, which grows with every return, is the fencing
 * epoch: a later holder always has a larger one.
 *
 * Threads: librabbitmq blocks, so the AMQP client runs on the module's own
 * thread. Changes of state cross to the loop through one uv_async (habit 10):
 * the on_change callback runs on the loop thread, always with the latest
 * state (intermediate states may be folded into one call). cb_lease_get may be
 * called from any thread. A twin counts as holder only while its connection
 * is up: the moment the client sees an error it reports standby, before it
 * tries to reconnect, so the two twins speak at once only while the broker
 * has not yet noticed a dead connection that the holder has not noticed
 * either (a network partition: up to two heartbeat intervals). */
#ifndef CB_LEASE_LEASE_H
#define CB_LEASE_LEASE_H

#include <stdint.h>
#include <uv.h>

#include "base/config.h"

enum cb_lease_state {
    CB_LEASE_OFF,        /* no cluster.partition: the engine always speaks */
    CB_LEASE_CONNECTING, /* no AMQP connection (yet, or lost): silent */
    CB_LEASE_STANDBY,    /* connected, waiting for the token: silent */
    CB_LEASE_HOLDER,     /* holds the token: speaks */
};

struct cb_lease_status {
    enum cb_lease_state state;
    int64_t epoch;       /* x-delivery-count of the token held or last held; -1: never */
    int64_t since_ms;    /* wall clock of the last change of state */
    uint64_t gained;     /* times the token was received */
    uint64_t lost;       /* times the lease ended (connection lost while holding) */
    uint64_t connects;   /* AMQP connections established */
    char broker[128];    /* host:port of the current or last connection */
    char error[160];     /* the last connection error, "" when none */
};

/* "off", "connecting", "standby", "holder". */
const char *cb_lease_state_name(enum cb_lease_state s);

struct cb_lease;
typedef void (*cb_lease_change_fn)(void *ctx, const struct cb_lease_status *st);

/* Creates the lease client of cfg's partition (cluster.lease URLs, tried in
 * turn from cluster.twin's position so twins start on different nodes;
 * cluster.lease_queue; cluster.lease_heartbeat). on_change runs on the loop
 * thread at each change of state. Nothing connects until cb_lease_start.
 * Returns NULL with err filled (a bad URL names it; out of memory). */
struct cb_lease *cb_lease_new(uv_loop_t *loop, const struct cb_config *cfg,
                              cb_lease_change_fn on_change, void *ctx, char *err, size_t errlen);
/* Starts the client thread. 0, or -1 when the thread cannot start. */
int cb_lease_start(struct cb_lease *l);
/* Whether this twin may hold the lease: a twin that cannot speak (its MQTT
 * connection is down) must not keep the voice from the other. Not eligible,
 * the client gives the token back (closes its connection) and waits until
 * eligible again. Starts not eligible. Any thread. */
void cb_lease_set_eligible(struct cb_lease *l, int eligible);
/* The current state, from any thread. */
void cb_lease_get(struct cb_lease *l, struct cb_lease_status *out);
/* Stops the thread (closing the connection, so a held token goes at once to
 * the other twin), closes the async handle, frees l in its close callback
 * and then calls done(ctx) on the loop. Waits for the thread: at most about
 * the AMQP RPC timeout (5 s) when a broker does not answer the close. */
void cb_lease_close(struct cb_lease *l, void (*done)(void *ctx), void *ctx);

#endif
