/* flood_pub: publishes N messages over 10,000 city topics, each a ~100-byte
 * JSON payload, as fast as possible (or at --rate), QoS 0 or 1. The load of
 * the ingest benchmark; the same stream goes to citybrain and the baseline.
 *
 *   flood_pub --broker URL --count N [--qos Q] [--rate R] [--topics T]
 *             [--prefix city] [--mark-every K --mark-prefix bench/mark] [--window W]
 *             [--bare 1 | --history S --pack P [--history-start UNIX_S] [--skip K]]
 *
 * The steady-state benchmark's two payloads (bench/steady.sh): --bare 1 sends
 * one bare number per message (one sample of metric "value", stamped with
 * its arrival); --history S --pack P sends S seconds of 1 Hz history ending
 * now, P samples of one topic per message as a SenML pack (metric "value",
 * absolute bt), message i carrying seconds [(i / T) * P, (i / T + 1) * P) of
 * topic i % T, so every series gets its history in time order and N should
 * be T * S / P. The history ends now unless --history-start gives its first
 * second; --skip K starts at message K (with a fixed start, history can be
 * sent block by block: --skip b*T --count T sends block b).
 *
 * Topics: PREFIX/dNN/KIND/sNNN over 20 districts x 9 kinds x 56 sensors
 * (10,080 topics, --topics caps them). With --mark-every K, every K-th message
 * instead goes to MARK_PREFIX/mSEQ with {"ts":...,"v":1}, and its wall-clock
 * send time in microseconds is printed to stdout as `mark SEQ US` (for the
 * latency benchmark). At most W messages are unconfirmed at a time (default
 * 20,000 at QoS 0, 1,000 at QoS 1). Prints `sent N`, `seconds S`, `rate R`
 * at the end. */
#include <MQTTAsync.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/net.h"

static uint64_t done, failed;
static int connected, lost;

static int64_t clock_ns(clockid_t c)
{
    struct timespec ts;
    clock_gettime(c, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void on_connect(void *ctx, MQTTAsync_successData *r)
{
    (void)ctx;
    (void)r;
    cb_net_tcp_nodelay_all();
    __atomic_store_n(&connected, 1, __ATOMIC_RELEASE);
}
static void on_connect_fail(void *ctx, MQTTAsync_failureData *r)
{
    (void)ctx;
    (void)r;
    __atomic_store_n(&connected, -1, __ATOMIC_RELEASE);
}
static void on_sent(void *ctx, MQTTAsync_successData *r)
{
    (void)ctx;
    (void)r;
    __atomic_fetch_add(&done, 1, __ATOMIC_RELAXED);
}
static void on_send_fail(void *ctx, MQTTAsync_failureData *r)
{
    (void)ctx;
    (void)r;
    __atomic_fetch_add(&failed, 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(&done, 1, __ATOMIC_RELAXED);
}
static void on_lost(void *ctx, char *cause)
{
    (void)ctx;
    (void)cause;
    __atomic_store_n(&lost, 1, __ATOMIC_RELEASE);
}
static int on_arrived(void *ctx, char *t, int tl, MQTTAsync_message *m)
{
    (void)ctx;
    (void)tl;
    MQTTAsync_freeMessage(&m);
    MQTTAsync_free(t);
    return 1;
}

static const char *const kinds[9] = {"river", "rain", "air", "gas", "bridge",
                                     "traffic", "manhole", "underpass", "noise"};
static const char *const fields[9] = {"level", "mm_h", "pm25", "ch4", "accel",
                                      "speed", "tilt", "water_depth", "db"};
static const double normal[9] = {1.6, 0.0, 18, 0.8, 0.08, 50, 0.4, 0.0, 58};

/* A SenML pack of n 1 Hz samples from bt (seconds) on: the first record
 * carries bt, each later one t = its offset; values drift in hundredths
 * around base, as a sensor's readings do. Returns the length written. */
static int senml_pack(char *out, size_t cap, long long bt, int n, double base)
{
    int len = snprintf(out, cap, "[{\"bt\":%lld,\"v\":%.2f}", bt, base);
    for (int r = 1; r < n && len > 0 && (size_t)len < cap; r++)
        len += snprintf(out + len, cap - (size_t)len, ",{\"t\":%d,\"v\":%.2f}", r,
                        base + (double)((bt + r) % 11) * 0.01);
    if (len > 0 && (size_t)len + 1 < cap) {
        out[len++] = ']';
        out[len] = '\0';
    }
    return len;
}

int main(int argc, char **argv)
{
    const char *broker = NULL, *prefix = "city", *mark_prefix = "bench/mark";
    uint64_t count = 0, topics = 10080, mark_every = 0, window = 0, history = 0, pack = 60;
    uint64_t skip = 0;
    long long history_start_s = 0;
    int qos = 0, bare = 0;
    double rate = 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *a = argv[i], *v = argv[i + 1];
        if (!strcmp(a, "--broker"))
            broker = v;
        else if (!strcmp(a, "--count"))
            count = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--qos"))
            qos = atoi(v);
        else if (!strcmp(a, "--rate"))
            rate = atof(v);
        else if (!strcmp(a, "--topics"))
            topics = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--prefix"))
            prefix = v;
        else if (!strcmp(a, "--mark-every"))
            mark_every = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--window"))
            window = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--mark-prefix"))
            mark_prefix = v;
        else if (!strcmp(a, "--bare"))
            bare = atoi(v);
        else if (!strcmp(a, "--history"))
            history = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--pack"))
            pack = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--history-start"))
            history_start_s = strtoll(v, NULL, 10);
        else if (!strcmp(a, "--skip"))
            skip = strtoull(v, NULL, 10);
        else {
            fprintf(stderr, "flood_pub: unknown option %s\n", a);
            return 2;
        }
    }
    if (!broker || !count || !topics || topics > 10080 || !pack || pack > 200) {
        fprintf(stderr, "usage: flood_pub --broker URL --count N [--qos Q] [--rate R] "
                        "[--topics T<=10080] [--prefix P] [--mark-every K] [--window W]\n");
        return 2;
    }
    /* At QoS 1 every unacknowledged message sits in Paho's lists, and Paho
     * scans three of them linearly for a free message id on each publish
     * (MQTTAsync_assignMsgId): with 20,000 in flight the publisher spent
     * 36-72 us of CPU per message and was the slowest party of the benchmark,
     * so the subscribers' rates measured its share of the cores. 1,000 is
     * the broker's and citybrain's own in-flight window; 30 us per message. */
    if (!window)
        window = qos ? 1000 : 20000;
    MQTTAsync c;
    char id[64];
    snprintf(id, sizeof id, "flood-pub-%ld", (long)getpid());
    if (MQTTAsync_create(&c, broker, id, MQTTCLIENT_PERSISTENCE_NONE, NULL) != MQTTASYNC_SUCCESS)
        return 2;
    MQTTAsync_setCallbacks(c, NULL, on_lost, on_arrived, NULL);
    MQTTAsync_connectOptions co = MQTTAsync_connectOptions_initializer;
    co.cleansession = 1;
    co.onSuccess = on_connect;
    co.onFailure = on_connect_fail;
    if (MQTTAsync_connect(c, &co) != MQTTASYNC_SUCCESS)
        return 1;
    for (int w = 0; !__atomic_load_n(&connected, __ATOMIC_ACQUIRE) && w < 10000; w++)
        usleep(1000);
    if (__atomic_load_n(&connected, __ATOMIC_ACQUIRE) != 1) {
        fprintf(stderr, "flood_pub: cannot connect to %s\n", broker);
        return 1;
    }
    MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
    ro.onSuccess = on_sent;
    ro.onFailure = on_send_fail;
    char topic[128], payload[8192];
    uint64_t sent = 0, marks = 0;
    int64_t t0 = clock_ns(CLOCK_MONOTONIC);
    if (!history_start_s)
        history_start_s = (long long)(clock_ns(CLOCK_REALTIME) / 1000000000) - (long long)history;
    double period = rate > 0 ? 1e9 / rate : 0;
    for (uint64_t i = 0; i < count; i++) {
        if (__atomic_load_n(&lost, __ATOMIC_ACQUIRE)) {
            fprintf(stderr, "flood_pub: connection lost\n");
            break;
        }
        if (period > 0) {
            int64_t due = t0 + (int64_t)floor((double)i * period);
            struct timespec ts = {.tv_sec = due / 1000000000, .tv_nsec = due % 1000000000};
            if (due > clock_ns(CLOCK_MONOTONIC))
                while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
                    ;
        }
        while (sent - __atomic_load_n(&done, __ATOMIC_RELAXED) >= window)
            usleep(100);
        int64_t wall_us = clock_ns(CLOCK_REALTIME) / 1000;
        int plen;
        if (mark_every && i % mark_every == mark_every - 1) {
            snprintf(topic, sizeof topic, "%s/m%llu", mark_prefix, (unsigned long long)marks);
            plen = snprintf(payload, sizeof payload, "{\"ts\":%lld,\"v\":1,\"seq\":%llu}",
                            (long long)(wall_us / 1000), (unsigned long long)marks);
            printf("mark %llu %lld\n", (unsigned long long)marks, (long long)wall_us);
            marks++;
        } else {
            uint64_t t = (i + skip) % topics;
            int k = (int)(t % 9), d = (int)((t / 9) % 20) + 1, s = (int)(t / 180) + 1;
            snprintf(topic, sizeof topic, "%s/d%02d/%s/s%03d", prefix, d, kinds[k], s);
            double level = normal[k] + (double)(t % 13) * 0.1;
            if (history) {
                long long bt = history_start_s + (long long)(((i + skip) / topics) * pack);
                plen = senml_pack(payload, sizeof payload, bt, (int)pack, level);
            } else if (bare) {
                plen = snprintf(payload, sizeof payload, "%.2f",
                                level + (double)(i / topics % 7) * 0.01);
            } else {
                /* ~100 bytes: the reading plus what real devices send beside it. */
                plen = snprintf(payload, sizeof payload,
                                "{\"ts\":%lld,\"%s\":%.3f,\"battery\":%.2f,\"rssi\":%d,"
                                "\"seq\":%llu,\"fw\":\"2.4.1\"}",
                                (long long)(wall_us / 1000), fields[k],
                                normal[k] + (double)(i % 7) * 0.01, 3.3 + (double)(i % 50) * 0.01,
                                -60 - (int)(i % 30), (unsigned long long)i);
            }
        }
        if (MQTTAsync_send(c, topic, plen, payload, qos, 0, &ro) != MQTTASYNC_SUCCESS) {
            fprintf(stderr, "flood_pub: send failed\n");
            break;
        }
        sent++;
    }
    for (int w = 0; w < 60000 && __atomic_load_n(&done, __ATOMIC_RELAXED) < sent; w++)
        usleep(1000);
    double secs = (double)(clock_ns(CLOCK_MONOTONIC) - t0) / 1e9;
    printf("sent %llu\nfailed %llu\nseconds %.4f\nrate %.0f\n", (unsigned long long)sent,
           (unsigned long long)__atomic_load_n(&failed, __ATOMIC_RELAXED), secs,
           secs > 0 ? (double)sent / secs : 0.0);
    fflush(stdout);
    MQTTAsync_disconnectOptions dopt = MQTTAsync_disconnectOptions_initializer;
    dopt.timeout = 1000;
    MQTTAsync_disconnect(c, &dopt);
    usleep(100000);
    MQTTAsync_destroy(&c);
    return sent == count ? 0 : 1;
}
