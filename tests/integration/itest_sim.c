/* Integration tests of `citybrain sim` against a real mosquitto: the rate it
 * keeps, and that its --out stream is valid replay input. */
#include <CUnit/CUnit.h>
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ingest/ingest.h"
#include "tests/support/harness.h"

void cb_test_suite_sim(void);

static int64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* 4000 messages asked at 2000 msg/s: the subscriber sees them arrive at that
 * rate within 5 %, measured from the first to the last arrival. */
static void test_rate_within_five_percent(void)
{
    const size_t n = 4000;
    struct cb_h_broker *b = cb_h_broker_start(NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    struct cb_h_sub *sub = cb_h_sub_start(cb_h_broker_url(b), "city/#", 0, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(sub);
    const char *args[] = {"sim", "--broker", cb_h_broker_url(b), "--rate", "2000", "--count",
                          "4000", "--districts", "10", "--sensors", "5", NULL};
    struct cb_h_proc *p = cb_h_citybrain(args, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    /* Poll the arrival count closely (the process is external: no window). */
    int64_t first = 0, last = 0, limit = mono_us() + 20000000;
    while (mono_us() < limit) {
        size_t c = cb_h_sub_count(sub);
        if (c >= 1 && !first)
            first = mono_us();
        if (c >= n) {
            last = mono_us();
            break;
        }
        usleep(200);
    }
    CU_ASSERT_EQUAL(cb_h_proc_wait(p, 10000), 0);
    CU_ASSERT_EQUAL_FATAL(cb_h_sub_count(sub), n);
    CU_ASSERT_FATAL(first > 0 && last > first);
    double rate = (double)(n - 1) / ((double)(last - first) / 1e6);
    fprintf(stderr, " [%.0f msg/s] ", rate);
    CU_ASSERT(rate > 2000 * 0.95 && rate < 2000 * 1.05);
    /* Every topic is a city sensor topic. */
    struct cb_h_msg m;
    CU_ASSERT_EQUAL(cb_h_sub_get(sub, 0, &m), 0);
    CU_ASSERT_STRING_EQUAL(m.topic, "city/d01/river/s01");
}

/* Every line of --out is JSON with a topic, a payload the ingest decoder
 * accepts, and a ts that advances by 1000 / rate ms per slot. */
static void test_out_is_valid_replay_input(void)
{
    const char *out = cb_h_pathf("sim.jsonl");
    const char *scn = cb_h_pathf("incidents.scn");
    const char *text = "at 1s for 5s gas_leak d01 ramp=1s\nat 2s for 3s gateway_down d02\n";
    CU_ASSERT_EQUAL_FATAL(cb_h_write_file(scn, text, strlen(text)), 0);
    const char *args[] = {"sim", "--out", out, "--count", "900", "--rate", "100",
                          "--districts", "2", "--sensors", "2", "--format", "mixed",
                          "--scenario", scn, "--start", "1732400000000", NULL};
    struct cb_h_proc *p = cb_h_citybrain(args, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    CU_ASSERT_EQUAL_FATAL(cb_h_proc_wait(p, 20000), 0);
    size_t len;
    const char *data = cb_h_read_file(out, &len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(data);

    struct cb_decode_limits lim = {65536, 256, 8, 256};
    struct cb_decoder *dec = cb_decoder_new(&lim);
    CU_ASSERT_PTR_NOT_NULL_FATAL(dec);
    char *copy = strdup(data), *save = NULL;
    size_t lines = 0, bad = 0, senml = 0, bare = 0, d02_silent = 0;
    int64_t prev_ts = 0;
    for (char *l = strtok_r(copy, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        lines++;
        cJSON *j = cJSON_Parse(l);
        cJSON *topic = cJSON_GetObjectItemCaseSensitive(j, "topic");
        cJSON *payload = cJSON_GetObjectItemCaseSensitive(j, "payload");
        cJSON *ts = cJSON_GetObjectItemCaseSensitive(j, "ts");
        if (!cJSON_IsString(topic) || !payload || !cJSON_IsNumber(ts)) {
            bad++;
            cJSON_Delete(j);
            continue;
        }
        int64_t t = (int64_t)ts->valuedouble;
        if (t < prev_ts || (t - 1732400000000) % 10 != 0)
            bad++;
        prev_ts = t;
        if (strstr(topic->valuestring, "/d02/") && t >= 1732400002000 && t < 1732400005000)
            d02_silent++;
        char *raw = cJSON_IsString(payload) ? strdup(payload->valuestring)
                                            : cJSON_PrintUnformatted(payload);
        senml += cJSON_IsArray(payload);
        bare += cJSON_IsString(payload);
        struct cb_decoded d;
        enum cb_reject r = cb_decode(dec, topic->valuestring, raw, strlen(raw), t, &d);
        if (r != CB_REJECT_NONE || d.n == 0) {
            fprintf(stderr, "\n  rejected (%s): %s\n", cb_reject_name(r), l);
            bad++;
        } else if (d.samples[0].ts_ms != t) {
            fprintf(stderr, "\n  event time %lld != %lld: %s\n", (long long)d.samples[0].ts_ms,
                    (long long)t, l);
            bad++;
        }
        free(raw);
        cJSON_Delete(j);
    }
    free(copy);
    cb_decoder_free(dec);
    /* 900 slots minus d02's 18 sensors silent for 3 s (each reports every 0.36 s). */
    CU_ASSERT(lines > 700 && lines < 900);
    CU_ASSERT_EQUAL(bad, 0);
    CU_ASSERT(senml > 0);
    CU_ASSERT(bare > 0);
    CU_ASSERT_EQUAL(d02_silent, 0);
}

/* Bad invocations exit 2 with a message; a bad scenario names its line. */
static void test_usage_errors(void)
{
    const char *a1[] = {"sim", "--out", cb_h_pathf("x.jsonl"), NULL};
    struct cb_h_proc *p = cb_h_citybrain(a1, NULL);
    CU_ASSERT_EQUAL(cb_h_proc_wait(p, 10000), 2);
    CU_ASSERT_PTR_NOT_NULL(strstr(cb_h_proc_stderr(p), "--count"));
    const char *scn = cb_h_pathf("bad.scn");
    CU_ASSERT_EQUAL_FATAL(cb_h_write_file(scn, "\nat 1m for 2m flood d01\n", 24), 0);
    const char *a2[] = {"sim", "--out", "-", "--count", "5", "--scenario", scn, NULL};
    p = cb_h_citybrain(a2, NULL);
    CU_ASSERT_EQUAL(cb_h_proc_wait(p, 10000), 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(cb_h_proc_stderr(p), "bad.scn:2: unknown incident 'flood'"));
}

void cb_test_suite_sim(void)
{
    CU_pSuite s = cb_h_add_suite("sim");
    CU_add_test(s, "sim: publishes at the asked rate within 5 % (2000 msg/s)",
                test_rate_within_five_percent);
    CU_add_test(s, "sim: --out writes replay input the decoder accepts, silences included",
                test_out_is_valid_replay_input);
    CU_add_test(s, "sim: usage errors exit 2; scenario errors name file and line",
                test_usage_errors);
}
