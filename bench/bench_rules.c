/* Rule engine benchmark. Prints `key value` lines:
 *   rules_eval_ns_per_sample_rule   cost of one (decoded sample x matching rule) evaluation
 *   rules_msgs_per_s_10_rules       messages/s with 10 rules loaded, all 10 matching
 *   rules_msgs_per_s_10000_rules    messages/s with 10,000 rules loaded, 10 matching
 *   rules_scaling_ratio             the second over the first (goal >= 0.9)
 *   rules_replay_samples_per_s      `citybrain replay` end to end (JSON lines in, transitions out)
 *   rules_window_bytes_per_sample   memory held by windows per sample they hold (goal <= 24)
 *   rules_city_us_per_msg           etc/rules + 100 generated rules (bench/gen_rules.sh), the
 *                                   ingest benchmark's stream: 10,080 topics over 20 districts
 *   rules_city_bytes_per_sensor     heap the engine holds per sensor after that stream
 *   rules_city_bytes_per_instance   the same per alert instance
 *   rules_city_window_bytes         memory per window (struct, ring, deques)
 * Time is a manual clock: 100 sensors, one message per sensor per second (the
 * city section: 20,000 messages per second of event time, as flood_pub sends).
 * `bench_rules city` runs the city section alone (for perf). */
#include "base/clock.h"
#include "cmd/commands.h"
#include "rules/rules.h"

#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define SENSORS 100

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* The 10 rules every message matches: a realistic mix of aggregates. */
static void matching_rules(struct cb_strbuf *b)
{
    const char *when[10] = {
        "avg(level, 5m) > 3.2",
        "max(level, 10m) > 4 and count(level, 10m) >= 3",
        "rate(level, 30m) * 3600 > 0.3",
        "level > 3.5",
        "stddev(level, 5m) > 0.5",
        "min(level, 1m) > 3",
        "delta(level, 15m) > 0.5",
        "age() > 10m",
        "sum(flow, 5m) / 300 > 50",
        "avg(level, 5m) > 3 and avg(flow, 5m) > 40",
    };
    for (int i = 0; i < 10; i++)
        cb_strbuf_printf(b, "rule m%d {\n  match \"city/{district}/river/{sensor}\"\n  when %s\n  for 1m\n"
                            "  message \"{sensor} {level:.2f}\"\n}\n", i, when[i]);
}

static struct cb_ruleset *ruleset(int extra)
{
    struct cb_strbuf b;
    struct cb_diags d = {0};
    cb_strbuf_init(&b);
    matching_rules(&b);
    /* rules on other districts: never match the benchmark's topics */
    for (int i = 0; i < extra; i++)
        cb_strbuf_printf(&b, "rule x%d {\n  match \"city/x%d/river/{sensor}\"\n  when avg(level, 5m) > 3.2\n}\n", i, i);
    struct cb_ruleset *rs = cb_ruleset_compile_source("bench.rules", b.data, b.len, &d);
    if (!rs)
        fprintf(stderr, "bench_rules: compile failed (%zu errors)\n", d.errors);
    cb_diags_free(&d);
    cb_strbuf_free(&b);
    return rs;
}

static void count(void *ctx, const struct cb_transition *t)
{
    (void)t;
    (*(long *)ctx)++;
}

/* Offers `seconds` x SENSORS messages of two samples; returns messages/s and
 * the engine's stats. */
static double run(struct cb_ruleset *rs, int seconds, struct cb_engine_stats *st)
{
    int64_t now = 1700000000000;
    struct cb_clock clock = {cb_clock_manual_now, &now};
    long transitions = 0;
    struct cb_engine *e = cb_engine_new(rs, &clock, NULL, count, &transitions);
    char topics[SENSORS][64];
    for (int s = 0; s < SENSORS; s++)
        snprintf(topics[s], sizeof topics[s], "city/d%02d/river/s%03d", s % 10, s);
    unsigned seed = 1;
    double t0 = now_s();
    for (int sec = 0; sec < seconds; sec++) {
        now += 1000;
        for (int s = 0; s < SENSORS; s++) {
            seed = seed * 1103515245 + 12345;
            double level = 2.5 + (seed >> 16) % 1000 / 1000.0;
            struct cb_sample x[2] = {{"level", now, level}, {"flow", now, 40 + (seed >> 20) % 10}};
            cb_engine_offer(e, topics[s], NULL, x, 2, NULL, NULL);
        }
        cb_engine_tick(e);
    }
    double dt = now_s() - t0;
    cb_engine_get_stats(e, st);
    cb_engine_free(e);
    return seconds * SENSORS / dt;
}

static double replay(void)
{
    char in[] = "/tmp/bench_rules_XXXXXX";
    int fd = mkstemp(in);
    if (fd < 0)
        return 0;
    FILE *f = fdopen(fd, "w");
    char rules[] = "/tmp/bench_rules_r_XXXXXX";
    int rfd = mkstemp(rules);
    struct cb_strbuf b;
    cb_strbuf_init(&b);
    matching_rules(&b);
    if (rfd < 0 || write(rfd, b.data, b.len) != (ssize_t)b.len) {
        fclose(f);
        unlink(in);
        return 0;
    }
    close(rfd);
    cb_strbuf_free(&b);
    const int seconds = 600;
    for (int sec = 0; sec < seconds; sec++)
        for (int s = 0; s < SENSORS; s++)
            fprintf(f, "{\"topic\":\"city/d%02d/river/s%03d\",\"payload\":{\"ts\":%lld,\"level\":%.3f,\"flow\":%d}}\n",
                    s % 10, s, 1700000000000LL + sec * 1000LL, 2.5 + ((sec * 31 + s * 17) % 1000) / 1000.0,
                    40 + s % 10);
    fclose(f);
    char rulesarg[64], inarg[64];
    snprintf(rulesarg, sizeof rulesarg, "%s", rules);
    snprintf(inarg, sizeof inarg, "%s", in);
    char *argv[] = {"replay", "--rules", rulesarg, "--input", inarg, NULL};
    fflush(stdout);
    int saved = dup(1);
    FILE *null = freopen("/dev/null", "w", stdout);
    (void)null;
    double t0 = now_s();
    cb_cmd_replay(5, argv);
    double dt = now_s() - t0;
    fflush(stdout);
    dup2(saved, 1);
    close(saved);
    unlink(in);
    unlink(rules);
    return seconds * SENSORS * 2 / dt;
}

/* ---- the city stream: etc/rules + 100 generated rules over 10,080 topics ---- */

static const char *const kinds[9] = {"river", "rain", "air", "gas", "bridge",
                                     "traffic", "manhole", "underpass", "noise"};
static const char *const fields[9] = {"level", "mm_h", "pm25", "ch4", "accel",
                                      "speed", "tilt", "water_depth", "db"};
static const double normal[9] = {1.6, 0.0, 18, 0.8, 0.08, 50, 0.4, 0.0, 58};

/* Compiles etc/rules and `bench/gen_rules.sh 100` (written to a temporary
 * file). NULL when either is missing or does not compile. */
static struct cb_ruleset *city_ruleset(void)
{
    char gen[] = "/tmp/bench_rules_gen_XXXXXX.rules";
    int fd = mkstemps(gen, 6);
    if (fd < 0)
        return NULL;
    close(fd);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "bash %s/bench/gen_rules.sh 100 > %s", CB_SOURCE_DIR, gen);
    struct cb_ruleset *rs = NULL;
    if (system(cmd) == 0) {
        const char *paths[2] = {CB_SOURCE_DIR "/etc/rules", gen};
        struct cb_diags d = {0};
        rs = cb_ruleset_compile(paths, 2, &d);
        if (!rs)
            fprintf(stderr, "bench_rules: city rules do not compile (%zu errors)\n", d.errors);
        cb_diags_free(&d);
    }
    unlink(gen);
    return rs;
}

static size_t heap_used(void)
{
    struct mallinfo2 mi = mallinfo2();
    return mi.uordblks + mi.hblkhd;
}

/* Offers n messages of the flood_pub stream (one sample each, 20 per ms of
 * event time, a tick every second) and prints the city figures. */
static int city(long n)
{
    struct cb_ruleset *rs = city_ruleset();
    if (!rs)
        return 1;
    int64_t now = 1700000000000;
    struct cb_clock clock = {cb_clock_manual_now, &now};
    long transitions = 0;
    size_t h0 = heap_used();
    struct cb_engine *e = cb_engine_new(rs, &clock, NULL, count, &transitions);
    char topic[64];
    double t0 = now_s();
    int64_t next_tick = now + 1000;
    for (long i = 0; i < n; i++) {
        long t = i % 10080;
        int k = (int)(t % 9), d = (int)((t / 9) % 20) + 1, s = (int)(t / 180) + 1;
        snprintf(topic, sizeof topic, "city/d%02d/%s/s%03d", d, kinds[k], s);
        if (i % 20 == 0)
            now++;
        struct cb_sample x = {fields[k], now, normal[k] + (double)(i % 7) * 0.01};
        cb_engine_offer(e, topic, NULL, &x, 1, NULL, NULL);
        if (now >= next_tick) {
            cb_engine_tick(e);
            next_tick += 1000;
        }
    }
    double dt = now_s() - t0;
    struct cb_engine_stats st;
    cb_engine_get_stats(e, &st);
    size_t held = heap_used() - h0;
    printf("rules_city_rules %zu\n", cb_engine_rule_count(e));
    printf("rules_city_us_per_msg %.2f\n", dt * 1e6 / (double)n);
    printf("rules_city_msgs_per_s %.0f\n", (double)n / dt);
    printf("rules_city_evaluations_per_msg %.1f\n", (double)st.evaluated / (double)n);
    printf("rules_city_heap_mb %.1f\n", (double)held / 1048576.0);
    printf("rules_city_bytes_per_sensor %.0f\n", (double)held / 10080.0);
    printf("rules_city_instances %zu\n", st.instances);
    printf("rules_city_bytes_per_instance %.0f\n",
           st.instances ? (double)(held - st.window_bytes) / (double)st.instances : 0.0);
    printf("rules_city_windows %zu\n", st.windows);
    printf("rules_city_window_bytes %.0f\n",
           st.windows ? (double)st.window_bytes / (double)st.windows : 0.0);
    printf("rules_city_transitions %ld\n", transitions);
    fflush(stdout);
    cb_engine_free(e);
    cb_ruleset_release(rs);
    return 0;
}

int main(int argc, char **argv)
{
    const char *q = getenv("BENCH_QUICK");
    long ncity = q && strcmp(q, "1") == 0 ? 50000 : 200000;
    if (argc > 1 && strcmp(argv[1], "city") == 0)
        return city(argc > 2 ? atol(argv[2]) : ncity);
    struct cb_ruleset *r10 = ruleset(0), *r10k = ruleset(9990);
    struct cb_engine_stats st10, st10k;
    if (!r10 || !r10k)
        return 1;
    run(r10, 30, &st10); /* warm-up */
    double m10 = run(r10, 1800, &st10);
    double m10k = run(r10k, 1800, &st10k);
    printf("rules_eval_ns_per_sample_rule %.1f\n", (double)st10.eval_ns / (double)st10.evaluated);
    printf("rules_msgs_per_s_10_rules %.0f\n", m10);
    printf("rules_msgs_per_s_10000_rules %.0f\n", m10k);
    printf("rules_scaling_ratio %.2f\n", m10k / m10);
    printf("rules_window_bytes_per_sample %.1f\n",
           st10.window_samples ? (double)st10.window_bytes / (double)st10.window_samples : 0.0);
    printf("rules_window_samples %zu\n", st10.window_samples);
    fflush(stdout);
    printf("rules_replay_samples_per_s %.0f\n", replay());
    fflush(stdout);
    city(ncity);
    cb_ruleset_release(r10);
    cb_ruleset_release(r10k);
    return 0;
}
