/* alert_sub: the receiving end of the publish-to-alert latency benchmark.
 * Subscribes to citybrain's alert topic and, for every firing transition whose
 * labels carry `"mark":"mSEQ"` (bench/rules/latency.rules), prints
 * `alert SEQ US` with the wall-clock receive time in microseconds. flood_pub
 * printed `mark SEQ US` when it sent mark SEQ; run.sh joins the two.
 *
 *   alert_sub --broker URL [--topic citybrain/alerts/#] --count N
 *             [--timeout S] [--idle S] [--ready FILE] */
#include <MQTTAsync.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/net.h"
#include "sim/sim.h"

static uint64_t got;
static int64_t last_ns;
static int subscribed, failed;
static MQTTAsync client;
static const char *filter = "citybrain/alerts/#";

static int64_t clock_ns(clockid_t c)
{
    struct timespec ts;
    clock_gettime(c, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int on_message(void *ctx, char *topic, int tlen, MQTTAsync_message *m)
{
    (void)ctx;
    (void)tlen;
    int64_t us = clock_ns(CLOCK_REALTIME) / 1000;
    /* The payload is not NUL-terminated: copy what we need to search. */
    char buf[2048];
    size_t n = (size_t)m->payloadlen < sizeof buf - 1 ? (size_t)m->payloadlen : sizeof buf - 1;
    memcpy(buf, m->payload, n);
    buf[n] = '\0';
    const char *mk = strstr(buf, "\"mark\":\"m");
    if (mk && strstr(buf, "\"state\":\"firing\"")) {
        printf("alert %llu %lld\n", strtoull(mk + 9, NULL, 10), (long long)us);
        __atomic_fetch_add(&got, 1, __ATOMIC_RELAXED);
        __atomic_store_n(&last_ns, clock_ns(CLOCK_MONOTONIC), __ATOMIC_RELAXED);
    }
    MQTTAsync_freeMessage(&m);
    MQTTAsync_free(topic);
    return 1;
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
    cb_net_tcp_nodelay_all();
    MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
    ro.onSuccess = on_subscribed;
    ro.onFailure = on_fail;
    if (MQTTAsync_subscribe(client, filter, 1, &ro) != MQTTASYNC_SUCCESS)
        __atomic_store_n(&failed, 1, __ATOMIC_RELEASE);
}

int main(int argc, char **argv)
{
    const char *broker = NULL, *ready = NULL;
    uint64_t count = 0;
    double timeout = 60, idle = 5;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--broker"))
            broker = argv[i + 1];
        else if (!strcmp(argv[i], "--topic"))
            filter = argv[i + 1];
        else if (!strcmp(argv[i], "--count"))
            count = strtoull(argv[i + 1], NULL, 10);
        else if (!strcmp(argv[i], "--timeout"))
            timeout = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "--idle"))
            idle = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "--ready"))
            ready = argv[i + 1];
        else {
            fprintf(stderr, "alert_sub: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    if (!broker || !count) {
        fprintf(stderr, "usage: alert_sub --broker URL --count N [--topic F] [--ready FILE]\n");
        return 2;
    }
    char id[64];
    snprintf(id, sizeof id, "alert-sub-%ld", (long)getpid());
    if (MQTTAsync_create(&client, broker, id, MQTTCLIENT_PERSISTENCE_NONE, NULL) !=
        MQTTASYNC_SUCCESS)
        return 2;
    MQTTAsync_setCallbacks(client, NULL, NULL, on_message, NULL);
    MQTTAsync_connectOptions co = MQTTAsync_connectOptions_initializer;
    co.cleansession = 1;
    co.onSuccess = on_connected;
    co.onFailure = on_fail;
    if (MQTTAsync_connect(client, &co) != MQTTASYNC_SUCCESS)
        return 1;
    int64_t t0 = clock_ns(CLOCK_MONOTONIC);
    while (!__atomic_load_n(&subscribed, __ATOMIC_ACQUIRE)) {
        if (__atomic_load_n(&failed, __ATOMIC_ACQUIRE) ||
            clock_ns(CLOCK_MONOTONIC) - t0 > 10000000000LL) {
            fprintf(stderr, "alert_sub: cannot subscribe at %s\n", broker);
            return 1;
        }
        usleep(1000);
    }
    if (ready) {
        FILE *f = fopen(ready, "w");
        if (f)
            fclose(f);
    }
    t0 = clock_ns(CLOCK_MONOTONIC);
    for (;;) {
        int64_t now = clock_ns(CLOCK_MONOTONIC);
        uint64_t n = __atomic_load_n(&got, __ATOMIC_RELAXED);
        if (n >= count || (double)(now - t0) / 1e9 > timeout)
            break;
        if (n > 0 && (double)(now - __atomic_load_n(&last_ns, __ATOMIC_RELAXED)) / 1e9 > idle)
            break;
        usleep(1000);
    }
    fflush(stdout);
    MQTTAsync_disconnectOptions d = MQTTAsync_disconnectOptions_initializer;
    d.timeout = 1000;
    MQTTAsync_disconnect(client, &d);
    usleep(100000);
    MQTTAsync_destroy(&client);
    return __atomic_load_n(&got, __ATOMIC_RELAXED) >= count ? 0 : 1;
}
