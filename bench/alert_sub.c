/* alert_sub: the receiving end of the publish-to-alert latency benchmark.
 * Subscribes to citybrain's alert topic and, for every firing transition whose
 * labels carry `"mark":"mSEQ"` (bench/rules/latency.rules), prints
 * `alert SEQ US` with the wall-clock receive time in microseconds. flood_pub
 * printed `mark SEQ US` when it sent mark SEQ; run.sh joins the two.
 *
 *   alert_sub --broker URL [--topic citybrain/alerts/#] --count N
 *             [--timeout S] [--idle S] [--ready FILE] */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench/mqtt_sub.h"

static uint64_t got;
static int64_t last_ns;

static int on_message(void *ctx, char *topic, int tlen, MQTTAsync_message *m)
{
    (void)ctx;
    (void)tlen;
    int64_t us = bench_clock_ns(CLOCK_REALTIME) / 1000;
    /* The payload is not NUL-terminated: copy what we need to search. */
    char buf[2048];
    size_t n = (size_t)m->payloadlen < sizeof buf - 1 ? (size_t)m->payloadlen : sizeof buf - 1;
    memcpy(buf, m->payload, n);
    buf[n] = '\0';
    const char *mk = strstr(buf, "\"mark\":\"m");
    if (mk && strstr(buf, "\"state\":\"firing\"")) {
        printf("alert %llu %lld\n", strtoull(mk + 9, NULL, 10), (long long)us);
        __atomic_fetch_add(&got, 1, __ATOMIC_RELAXED);
        __atomic_store_n(&last_ns, bench_clock_ns(CLOCK_MONOTONIC), __ATOMIC_RELAXED);
    }
    MQTTAsync_freeMessage(&m);
    MQTTAsync_free(topic);
    return 1;
}

int main(int argc, char **argv)
{
    const char *broker = NULL, *ready = NULL, *filter = "citybrain/alerts/#";
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
    MQTTAsync c;
    if (bench_sub_open(&c, "alert_sub", broker, filter, ready, 1, 0, 1, on_message, NULL))
        return 1;
    bench_sub_wait(&got, &last_ns, NULL, count, timeout, idle);
    fflush(stdout);
    bench_sub_close(&c);
    return __atomic_load_n(&got, __ATOMIC_RELAXED) >= count ? 0 : 1;
}
