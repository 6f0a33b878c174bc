/* count_sub: the baseline of the ingest benchmark. A Paho MQTTAsync subscriber
 * that does nothing with a message but count it, so its throughput is what
 * the broker and the client library give on this machine; citybrain's is
 * compared with it.
 *
 *   count_sub --broker URL --topic FILTER --qos 0|1 --count N [--timeout S]
 *             [--ready FILE] [--idle S]
 *
 * Touches FILE once subscribed (so the driver knows when to publish), then
 * waits for N messages, at most --timeout seconds overall and --idle seconds
 * without a message once the first arrived. Prints `key value` lines:
 * received, first_to_last_s, seconds (from the ready file to the Nth
 * message), rate, cpu_us_per_msg, last_unix_s (wall-clock time of the Nth
 * message, so the driver can time from the publisher's start as it does for
 * citybrain). Exit 0 when all N arrived, 1 otherwise. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "bench/mqtt_sub.h"

static uint64_t received;
static int64_t first_ns, last_ns, last_wall_ns;
static int lost;

static int64_t mono_ns(void) { return bench_clock_ns(CLOCK_MONOTONIC); }

static int on_message(void *ctx, char *topic, int tlen, MQTTAsync_message *m)
{
    (void)ctx;
    (void)tlen;
    int64_t now = mono_ns();
    if (__atomic_fetch_add(&received, 1, __ATOMIC_RELAXED) == 0)
        __atomic_store_n(&first_ns, now, __ATOMIC_RELAXED);
    __atomic_store_n(&last_ns, now, __ATOMIC_RELAXED);
    __atomic_store_n(&last_wall_ns, bench_clock_ns(CLOCK_REALTIME), __ATOMIC_RELAXED);
    MQTTAsync_freeMessage(&m);
    MQTTAsync_free(topic);
    return 1;
}

static void on_lost(void *ctx, char *cause)
{
    (void)ctx;
    (void)cause;
    __atomic_store_n(&lost, 1, __ATOMIC_RELAXED);
}

static double cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

int main(int argc, char **argv)
{
    const char *broker = NULL, *topic = "city/#", *ready = NULL;
    int qos = 0;
    uint64_t count = 0;
    double timeout = 60, idle = 5;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--broker"))
            broker = argv[i + 1];
        else if (!strcmp(argv[i], "--topic"))
            topic = argv[i + 1];
        else if (!strcmp(argv[i], "--qos"))
            qos = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--count"))
            count = strtoull(argv[i + 1], NULL, 10);
        else if (!strcmp(argv[i], "--timeout"))
            timeout = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "--idle"))
            idle = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "--ready"))
            ready = argv[i + 1];
        else {
            fprintf(stderr, "count_sub: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    if (!broker || !count) {
        fprintf(stderr, "usage: count_sub --broker URL --count N [--topic F] [--qos Q] "
                        "[--timeout S] [--idle S] [--ready FILE]\n");
        return 2;
    }
    MQTTAsync c;
    if (bench_sub_open(&c, "count_sub", broker, topic, ready, qos, 1000, 0, on_message, on_lost))
        return 1;
    double cpu0 = cpu_s();
    int64_t t0 = mono_ns();
    bench_sub_wait(&received, &last_ns, &lost, count, timeout, idle);
    double cpu = cpu_s() - cpu0;
    uint64_t n = __atomic_load_n(&received, __ATOMIC_RELAXED);
    double f2l = n > 1 ? (double)(last_ns - first_ns) / 1e9 : 0;
    double secs = n ? (double)(last_ns - t0) / 1e9 : 0;
    printf("received %llu\n", (unsigned long long)n);
    printf("first_to_last_s %.4f\n", f2l);
    printf("seconds %.4f\n", secs);
    printf("rate %.0f\n", secs > 0 ? (double)n / secs : 0.0);
    printf("cpu_us_per_msg %.2f\n", n ? cpu * 1e6 / (double)n : 0.0);
    printf("last_unix_s %.6f\n", (double)__atomic_load_n(&last_wall_ns, __ATOMIC_RELAXED) / 1e9);
    fflush(stdout);
    bench_sub_close(&c);
    return n >= count ? 0 : 1;
}
