/* See mqtt_sub.h. */
#include "bench/mqtt_sub.h"

#include <stdio.h>
#include <unistd.h>

#include "base/net.h"

static int subscribed, failed, nodelay_on;
static MQTTAsync client;
static const char *sub_filter;
static int sub_qos;

int64_t bench_clock_ns(clockid_t c)
{
    struct timespec ts;
    clock_gettime(c, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void on_subscribed(void *ctx, MQTTAsync_successData *r)
{
    (void)ctx;
    (void)r;
    __atomic_store_n(&subscribed, 1, __ATOMIC_RELEASE);
}

static void on_fail(void *ctx, MQTTAsync_failureData *r)
{
    (void)ctx;
    (void)r;
    __atomic_store_n(&failed, 1, __ATOMIC_RELEASE);
}

static void on_connected(void *ctx, MQTTAsync_successData *r)
{
    (void)ctx;
    (void)r;
    if (nodelay_on)
        cb_net_tcp_nodelay_all();
    MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
    ro.onSuccess = on_subscribed;
    ro.onFailure = on_fail;
    if (MQTTAsync_subscribe(client, sub_filter, sub_qos, &ro) != MQTTASYNC_SUCCESS)
        __atomic_store_n(&failed, 1, __ATOMIC_RELEASE);
}

int bench_sub_open(MQTTAsync *c, const char *name, const char *broker, const char *filter,
                   const char *ready, int qos, int max_inflight, int nodelay, MQTTAsync_messageArrived *on_message,
                   MQTTAsync_connectionLost *on_lost)
{
    char id[64];
    snprintf(id, sizeof id, "%s-%ld", name, (long)getpid());
    sub_filter = filter;
    sub_qos = qos;
    nodelay_on = nodelay;
    if (MQTTAsync_create(&client, broker, id, MQTTCLIENT_PERSISTENCE_NONE, NULL) !=
        MQTTASYNC_SUCCESS) {
        fprintf(stderr, "%s: cannot create a client for %s\n", name, broker);
        return -1;
    }
    MQTTAsync_setCallbacks(client, NULL, on_lost, on_message, NULL);
    MQTTAsync_connectOptions co = MQTTAsync_connectOptions_initializer;
    co.cleansession = 1;
    co.keepAliveInterval = 30;
    co.onSuccess = on_connected;
    co.onFailure = on_fail;
    if (max_inflight > 0)
        co.maxInflight = max_inflight;
    int64_t t0 = bench_clock_ns(CLOCK_MONOTONIC);
    int ok = MQTTAsync_connect(client, &co) == MQTTASYNC_SUCCESS;
    while (ok && !__atomic_load_n(&subscribed, __ATOMIC_ACQUIRE)) {
        if (__atomic_load_n(&failed, __ATOMIC_ACQUIRE) ||
            bench_clock_ns(CLOCK_MONOTONIC) - t0 > 10000000000LL)
            ok = 0;
        else
            usleep(1000);
    }
    if (!ok) {
        fprintf(stderr, "%s: cannot subscribe to %s at %s\n", name, filter, broker);
        MQTTAsync_destroy(&client);
        return -1;
    }
    if (ready) {
        FILE *f = fopen(ready, "w");
        if (f)
            fclose(f);
    }
    *c = client;
    return 0;
}

void bench_sub_wait(const uint64_t *got, const int64_t *last_ns, const int *lost,
                    uint64_t count, double timeout, double idle)
{
    int64_t t0 = bench_clock_ns(CLOCK_MONOTONIC);
    for (;;) {
        int64_t now = bench_clock_ns(CLOCK_MONOTONIC);
        uint64_t n = __atomic_load_n(got, __ATOMIC_RELAXED);
        if (n >= count || (lost && __atomic_load_n(lost, __ATOMIC_RELAXED)))
            break;
        if ((double)(now - t0) / 1e9 > timeout)
            break;
        if (n > 0 && (double)(now - __atomic_load_n(last_ns, __ATOMIC_RELAXED)) / 1e9 > idle)
            break;
        usleep(500);
    }
}

void bench_sub_close(MQTTAsync *c)
{
    MQTTAsync_disconnectOptions d = MQTTAsync_disconnectOptions_initializer;
    d.timeout = 1000;
    MQTTAsync_disconnect(*c, &d);
    usleep(100000);
    MQTTAsync_destroy(c);
}
