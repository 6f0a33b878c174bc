/* `citybrain sim`: publishes the simulator's stream to a broker at a given
 * rate (Paho MQTTAsync), or writes it as replay JSON Lines (--out).
 *
 * Pacing: slot i is due at t0 + i / rate on the monotonic clock. The loop
 * sends every slot already due, then sleeps until the next one with an
 * absolute deadline, so sleeping late never accumulates into drift. The
 * number of sends Paho has not yet completed is bounded (a window), so a
 * broker slower than the rate slows the publisher instead of filling memory;
 * the final report says how far behind the schedule it ended. */
#include "base/net.h"
#include "cmd/commands.h"
#include "base/clock.h"
#include "base/strbuf.h"
#include "sim/sim.h"

#include <MQTTAsync.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define WINDOW 20000 /* sends queued in Paho, not yet written (QoS 0) or acked (QoS 1) */

static volatile sig_atomic_t stop_flag;

static void on_signal(int sig)
{
    (void)sig;
    stop_flag = 1;
}

/* Counters shared with Paho's threads. */
struct pub {
    MQTTAsync client;
    int connected;     /* 1 ok, -1 failed */
    int lost;
    int disconnected;
    uint64_t done;     /* sends completed */
    uint64_t failed;   /* sends that failed */
};

static void on_connect(void *ctx, MQTTAsync_successData *r)
{
    (void)r;
    cb_net_tcp_nodelay_all();
    __atomic_store_n(&((struct pub *)ctx)->connected, 1, __ATOMIC_RELEASE);
}

static void on_connect_fail(void *ctx, MQTTAsync_failureData *r)
{
    (void)r;
    __atomic_store_n(&((struct pub *)ctx)->connected, -1, __ATOMIC_RELEASE);
}

static void on_lost(void *ctx, char *cause)
{
    (void)cause;
    __atomic_store_n(&((struct pub *)ctx)->lost, 1, __ATOMIC_RELEASE);
}

static int on_arrived(void *ctx, char *topic, int tlen, MQTTAsync_message *m)
{
    (void)ctx;
    (void)tlen;
    MQTTAsync_freeMessage(&m);
    MQTTAsync_free(topic);
    return 1;
}

static void on_sent(void *ctx, MQTTAsync_successData *r)
{
    (void)r;
    __atomic_fetch_add(&((struct pub *)ctx)->done, 1, __ATOMIC_RELAXED);
}

static void on_send_fail(void *ctx, MQTTAsync_failureData *r)
{
    (void)r;
    struct pub *p = ctx;
    __atomic_fetch_add(&p->failed, 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(&p->done, 1, __ATOMIC_RELAXED);
}

static void on_disconnected(void *ctx, MQTTAsync_successData *r)
{
    (void)r;
    __atomic_store_n(&((struct pub *)ctx)->disconnected, 1, __ATOMIC_RELEASE);
}

static void sleep_until_ns(int64_t deadline_ns)
{
    struct timespec ts = {.tv_sec = deadline_ns / 1000000000,
                          .tv_nsec = deadline_ns % 1000000000};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR && !stop_flag)
        ;
}

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void usage(FILE *out)
{
    fprintf(out,
            "usage: citybrain sim --broker URL [options]\n"
            "       citybrain sim --out FILE (--count N | --duration D) [options]\n\n"
            "Publishes telemetry of a synthetic city: DISTRICTS x SENSORS sensors of each\n"
            "kind (river, rain, air, gas, bridge, traffic, manhole, underpass, noise) on\n"
            "topics city/dNN/KIND/sNN, with daily patterns, noise and scripted incidents.\n\n"
            "options:\n"
            "  --broker URL        tcp://host:port of the broker to publish to\n"
            "  --rate MSG_PER_S    messages per second (default 100; 0 = as fast as possible)\n"
            "  --duration D        run this long (90s, 10m, 1h); the default is until Ctrl-C\n"
            "  --count N           publish N schedule slots, then stop\n"
            "  --districts N       districts d01..dNN (default 4)\n"
            "  --sensors N         sensors per district and kind, s01..sNN (default 3)\n"
            "  --scenario FILE     scripted incidents (docs/sim.md, bench/scenarios/*.scn)\n"
            "  --format F          json (default), senml, or mixed (air as SenML, noise as\n"
            "                      a bare number, the rest JSON)\n"
            "  --out FILE          write replay JSON Lines to FILE ('-' for stdout) instead\n"
            "                      of publishing; event times advance by the schedule\n"
            "  --qos 0|1           publish QoS (default 0)\n"
            "  --seed N            noise seed (default 1): same seed, same stream\n"
            "  --start MS          event time of the first slot, ms since the epoch\n"
            "                      (default now)\n"
            "  --quiet             no summary line on stderr\n");
}

static int parse_i64(const char *s, int64_t lo, int64_t hi, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (end == s || *end || errno || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

/* Publishes [0, slots) (slots 0 = until stopped). Returns the exit code. */
static int publish(struct cb_sim *sim, const char *broker, int qos, double rate, uint64_t slots,
                   int quiet)
{
    struct pub p = {0};
    char client_id[64];
    int rc = 1, created = 0;
    uint64_t sent = 0, silent = 0, i = 0;

    snprintf(client_id, sizeof client_id, "citybrain-sim-%ld", (long)getpid());
    if (MQTTAsync_create(&p.client, broker, client_id, MQTTCLIENT_PERSISTENCE_NONE, NULL) !=
        MQTTASYNC_SUCCESS) {
        fprintf(stderr, "citybrain sim: bad broker URL '%s'\n", broker);
        return 2;
    }
    created = 1;
    MQTTAsync_setCallbacks(p.client, &p, on_lost, on_arrived, NULL);
    MQTTAsync_connectOptions co = MQTTAsync_connectOptions_initializer;
    co.keepAliveInterval = 30;
    co.cleansession = 1;
    co.onSuccess = on_connect;
    co.onFailure = on_connect_fail;
    co.context = &p;
    co.connectTimeout = 5;
    if (MQTTAsync_connect(p.client, &co) != MQTTASYNC_SUCCESS) {
        fprintf(stderr, "citybrain sim: cannot connect to %s\n", broker);
        goto out;
    }
    for (int waited = 0; !__atomic_load_n(&p.connected, __ATOMIC_ACQUIRE); waited++) {
        if (stop_flag || waited > 10000)
            break;
        usleep(1000);
    }
    if (__atomic_load_n(&p.connected, __ATOMIC_ACQUIRE) != 1) {
        fprintf(stderr, "citybrain sim: cannot connect to %s\n", broker);
        goto out;
    }

    MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
    ro.onSuccess = on_sent;
    ro.onFailure = on_send_fail;
    ro.context = &p;
    const int64_t t0 = mono_ns();
    const double period_ns = rate > 0 ? 1e9 / rate : 0.0;
    int64_t behind_ns = 0;
    while (!stop_flag && (slots == 0 || i < slots)) {
        if (__atomic_load_n(&p.lost, __ATOMIC_ACQUIRE)) {
            fprintf(stderr, "citybrain sim: connection to %s lost\n", broker);
            goto out;
        }
        int64_t due = t0 + (int64_t)floor((double)i * period_ns);
        int64_t now = mono_ns();
        if (due > now) {
            sleep_until_ns(due);
            continue;
        }
        behind_ns = now - due;
        /* Window full: wait for Paho to catch up (this is where a slow broker
         * slows us down). */
        if (sent - __atomic_load_n(&p.done, __ATOMIC_RELAXED) >= WINDOW) {
            usleep(200);
            continue;
        }
        struct cb_sim_msg m;
        int g = cb_sim_next(sim, i, &m);
        i++;
        if (g < 0) {
            fprintf(stderr, "citybrain sim: out of memory\n");
            goto out;
        }
        if (g == 0) {
            silent++;
            continue;
        }
        int src = MQTTAsync_send(p.client, m.topic, (int)m.payload_len, m.payload, qos, 0, &ro);
        if (src != MQTTASYNC_SUCCESS) {
            fprintf(stderr, "citybrain sim: publish failed (%d)\n", src);
            goto out;
        }
        sent++;
    }
    /* Let every queued send complete (bounded: 30 s). */
    for (int w = 0; w < 30000 && __atomic_load_n(&p.done, __ATOMIC_RELAXED) < sent; w++) {
        if (__atomic_load_n(&p.lost, __ATOMIC_ACQUIRE))
            break;
        usleep(1000);
    }
    double secs = (double)(mono_ns() - t0) / 1e9;
    uint64_t done = __atomic_load_n(&p.done, __ATOMIC_RELAXED);
    uint64_t failed = __atomic_load_n(&p.failed, __ATOMIC_RELAXED);
    if (!quiet)
        fprintf(stderr,
                "sim: %llu messages published (%llu silent slots, %llu failed) in %.3f s: "
                "%.0f msg/s; %.1f ms behind schedule at the last slot\n",
                (unsigned long long)done, (unsigned long long)silent,
                (unsigned long long)failed, secs, secs > 0 ? (double)done / secs : 0.0,
                (double)behind_ns / 1e6);
    rc = (done == sent && failed == 0) ? 0 : 1;
    if (rc)
        fprintf(stderr, "citybrain sim: %llu of %llu messages not delivered to the broker\n",
                (unsigned long long)(sent - done + failed), (unsigned long long)sent);
    MQTTAsync_disconnectOptions dopt = MQTTAsync_disconnectOptions_initializer;
    dopt.timeout = 2000;
    dopt.onSuccess = on_disconnected;
    dopt.context = &p;
    if (MQTTAsync_disconnect(p.client, &dopt) == MQTTASYNC_SUCCESS)
        for (int w = 0; w < 3000 && !__atomic_load_n(&p.disconnected, __ATOMIC_ACQUIRE); w++)
            usleep(1000);
out:
    if (created)
        MQTTAsync_destroy(&p.client);
    return rc;
}

/* Writes [0, slots) as replay JSON Lines to path. Returns the exit code. */
static int write_replay(struct cb_sim *sim, const char *path, uint64_t slots)
{
    FILE *f = strcmp(path, "-") == 0 ? stdout : fopen(path, "w");
    struct cb_strbuf line;
    int rc = 1;
    if (!f) {
        fprintf(stderr, "citybrain sim: %s: %s\n", path, strerror(errno));
        return 1;
    }
    cb_strbuf_init(&line);
    for (uint64_t i = 0; i < slots && !stop_flag; i++) {
        struct cb_sim_msg m;
        int g = cb_sim_next(sim, i, &m);
        if (g < 0)
            goto out;
        if (g == 0)
            continue;
        cb_strbuf_reset(&line);
        cb_sim_replay_line(&line, &m);
        cb_strbuf_putc(&line, '\n');
        if (line.oom || fwrite(line.data, 1, line.len, f) != line.len)
            goto out;
    }
    rc = 0;
out:
    if (f != stdout) {
        if (fclose(f) != 0)
            rc = 1;
    } else if (fflush(f) != 0) {
        rc = 1;
    }
    if (rc)
        fprintf(stderr, "citybrain sim: cannot write %s\n", path);
    cb_strbuf_free(&line);
    return rc;
}

int cb_cmd_sim(int argc, char **argv)
{
    const char *broker = NULL, *scenario = NULL, *out = NULL;
    double rate = 100.0;
    int64_t duration_ms = -1, count = -1, districts = 4, sensors = 3, qos = 0, seed = 1;
    int64_t start_ms = INT64_MIN;
    int quiet = 0;
    enum cb_sim_format format = CB_SIM_JSON;
    char err[512];

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        }
        if (!strcmp(a, "--quiet")) {
            quiet = 1;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "citybrain sim: %s needs a value (see --help)\n", a);
            return 2;
        }
        const char *v = argv[++i];
        int bad = 0;
        if (!strcmp(a, "--broker")) {
            broker = v;
        } else if (!strcmp(a, "--rate")) {
            char *end;
            rate = strtod(v, &end);
            bad = end == v || *end || !(rate >= 0) || rate > 1e7;
        } else if (!strcmp(a, "--duration")) {
            bad = cb_sim_parse_duration(v, &duration_ms);
        } else if (!strcmp(a, "--count")) {
            bad = parse_i64(v, 0, INT64_MAX, &count);
        } else if (!strcmp(a, "--districts")) {
            bad = parse_i64(v, 1, 999, &districts);
        } else if (!strcmp(a, "--sensors")) {
            bad = parse_i64(v, 1, 999, &sensors);
        } else if (!strcmp(a, "--scenario")) {
            scenario = v;
        } else if (!strcmp(a, "--format")) {
            if (!strcmp(v, "json"))
                format = CB_SIM_JSON;
            else if (!strcmp(v, "senml"))
                format = CB_SIM_SENML;
            else if (!strcmp(v, "mixed"))
                format = CB_SIM_MIXED;
            else
                bad = 1;
        } else if (!strcmp(a, "--out")) {
            out = v;
        } else if (!strcmp(a, "--qos")) {
            bad = parse_i64(v, 0, 1, &qos);
        } else if (!strcmp(a, "--seed")) {
            bad = parse_i64(v, 0, INT64_MAX, &seed);
        } else if (!strcmp(a, "--start")) {
            bad = parse_i64(v, 0, INT64_MAX / 2, &start_ms);
        } else {
            fprintf(stderr, "citybrain sim: unknown option '%s' (see --help)\n", a);
            return 2;
        }
        if (bad) {
            fprintf(stderr, "citybrain sim: bad value '%s' for %s (see --help)\n", v, a);
            return 2;
        }
    }
    if (!broker == !out) {
        fprintf(stderr, "citybrain sim: give exactly one of --broker URL and --out FILE\n");
        return 2;
    }
    if (duration_ms >= 0 && count >= 0) {
        fprintf(stderr, "citybrain sim: give --duration or --count, not both\n");
        return 2;
    }
    if (out && duration_ms < 0 && count < 0) {
        fprintf(stderr, "citybrain sim: --out needs --count N or --duration D\n");
        return 2;
    }
    if (out && rate == 0) {
        fprintf(stderr, "citybrain sim: --out needs a positive --rate (it sets the event times)\n");
        return 2;
    }
    if (duration_ms >= 0 && rate == 0) {
        fprintf(stderr, "citybrain sim: --duration needs a positive --rate; use --count\n");
        return 2;
    }

    struct cb_sim_scenario scn = {0};
    if (scenario && cb_sim_scenario_load(&scn, scenario, err, sizeof err)) {
        fprintf(stderr, "citybrain sim: %s\n", err);
        return 1;
    }
    struct cb_sim_options opt = {
        .districts = (int)districts,
        .sensors = (int)sensors,
        .format = format,
        .seed = (uint64_t)seed,
        .start_ms = start_ms != INT64_MIN ? start_ms : cb_wall_ms(),
        /* At "as fast as possible" the event times still need a spacing:
         * 1 ms per slot keeps them distinct and ordered. */
        .rate = rate > 0 ? rate : 1000.0,
    };
    struct cb_sim *sim = cb_sim_new(&opt, &scn, err, sizeof err);
    cb_sim_scenario_free(&scn);
    if (!sim) {
        fprintf(stderr, "citybrain sim: %s\n", err);
        return 2;
    }
    uint64_t slots = 0;
    if (count >= 0)
        slots = (uint64_t)count;
    else if (duration_ms >= 0)
        slots = (uint64_t)floor((double)duration_ms * rate / 1000.0);
    int rc;
    if ((count == 0 || (duration_ms >= 0 && slots == 0))) {
        rc = out ? write_replay(sim, out, 0) : 0;
        cb_sim_free(sim);
        return rc;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    if (out)
        rc = write_replay(sim, out, slots);
    else
        rc = publish(sim, broker, (int)qos, rate, slots, quiet);
    cb_sim_free(sim);
    return rc;
}
