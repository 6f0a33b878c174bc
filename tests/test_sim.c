/* Unit tests of the simulator: scenario files, the city model, payloads. */
#include <CUnit/CUnit.h>
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sim/sim.h"

void cb_test_suite_sim(void);

static const int64_t T0 = 1732406400000; /* 2024-11-24 00:00 UTC */

static struct cb_sim *make(int districts, int sensors, double rate, enum cb_sim_format f,
                           const char *scenario)
{
    struct cb_sim_scenario scn = {0};
    char err[256];
    if (scenario && cb_sim_scenario_parse(&scn, scenario, strlen(scenario), err, sizeof err)) {
        fprintf(stderr, "scenario: %s\n", err);
        return NULL;
    }
    struct cb_sim_options o = {districts, sensors, f, 7, T0, rate};
    struct cb_sim *s = cb_sim_new(&o, &scn, err, sizeof err);
    cb_sim_scenario_free(&scn);
    return s;
}

/* The first metric value of a JSON payload {"ts":..,"M":v,...}. */
static double json_metric(const char *payload, const char *metric)
{
    cJSON *j = cJSON_Parse(payload);
    cJSON *v = cJSON_GetObjectItemCaseSensitive(j, metric);
    double x = cJSON_IsNumber(v) ? v->valuedouble : NAN;
    cJSON_Delete(j);
    return x;
}

static void test_scenario_parses_named_incidents(void)
{
    const char *text = "# a comment\n"
                       "\n"
                       "at 2m for 20m river_rise d02   # trailing comment\n"
                       "at 90s for 10m gas_leak d03 s02 ch4=40 ramp=30s\n"
                       "at 1h for 5m ramp d01 s01 kind=noise db=95\n"
                       "at 0s for 1m gateway_down d04\n";
    struct cb_sim_scenario s;
    char err[256] = "";
    CU_ASSERT_EQUAL_FATAL(cb_sim_scenario_parse(&s, text, strlen(text), err, sizeof err), 0);
    CU_ASSERT_EQUAL_FATAL(s.n, 4);
    CU_ASSERT_STRING_EQUAL(s.items[0].name, "river_rise");
    CU_ASSERT_EQUAL(s.items[0].kind, CB_SIM_RIVER);
    CU_ASSERT_EQUAL(s.items[0].district, 2);
    CU_ASSERT_EQUAL(s.items[0].sensor, 0);
    CU_ASSERT_EQUAL(s.items[0].at_ms, 120000);
    CU_ASSERT_EQUAL(s.items[0].for_ms, 1200000);
    CU_ASSERT_EQUAL(s.items[0].nmetrics, 2);
    CU_ASSERT_EQUAL(s.items[0].line, 3);
    CU_ASSERT_EQUAL(s.items[1].sensor, 2);
    CU_ASSERT_DOUBLE_EQUAL(s.items[1].peak[0], 40.0, 1e-9);
    CU_ASSERT_EQUAL(s.items[1].ramp_ms, 30000);
    CU_ASSERT_EQUAL(s.items[2].kind, CB_SIM_NOISE);
    CU_ASSERT_DOUBLE_EQUAL(s.items[2].peak[0], 95.0, 1e-9);
    CU_ASSERT_EQUAL(s.items[3].effect, CB_SIM_EFFECT_SILENT);
    CU_ASSERT_EQUAL(s.items[3].kind, -1);
    cb_sim_scenario_free(&s);
}

static void expect_error(const char *text, const char *fragment)
{
    struct cb_sim_scenario s;
    char err[256] = "";
    CU_ASSERT_EQUAL(cb_sim_scenario_parse(&s, text, strlen(text), err, sizeof err), -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, fragment));
    if (!strstr(err, fragment))
        fprintf(stderr, "\n  got '%s', wanted '%s'\n", err, fragment);
    CU_ASSERT_EQUAL(s.n, 0);
}

static void test_scenario_errors_name_the_line(void)
{
    expect_error("at 1m for 5m river_rise d01\nat 1m for 5m river_rsie d01\n",
                 "2: unknown incident 'river_rsie'");
    expect_error("at 1m for 5m river_rise x01\n", "1: bad district 'x01'");
    expect_error("at 1x for 5m river_rise d01\n", "1: bad offset '1x'");
    expect_error("\n\nat 1m for 5m gas_leak d01 level=3\n", "3: gas sensors have no metric 'level'");
    expect_error("at 1m for 5m ramp d01 db=90\n", "'ramp' needs kind=KIND");
    expect_error("at 1m for 5m gas_leak d01 kind=river\n", "gas_leak acts on gas sensors");
    expect_error("at 1m river_rise d01\n", "expected 'at OFFSET for DURATION");
    expect_error("at 1m for 0s river_rise d01\n", "bad duration '0s'");
}

static void test_slots_cycle_every_sensor_and_space_time(void)
{
    struct cb_sim *s = make(2, 2, 100, CB_SIM_JSON, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    CU_ASSERT_EQUAL(cb_sim_sensor_count(s), 2 * 2 * 9);
    struct cb_sim_msg m;
    char seen[36][64];
    for (int i = 0; i < 36; i++) {
        CU_ASSERT_EQUAL(cb_sim_next(s, (uint64_t)i, &m), 1);
        CU_ASSERT_EQUAL(m.ts_ms, T0 + i * 10);
        snprintf(seen[i], sizeof seen[i], "%s", m.topic);
        for (int k = 0; k < i; k++)
            CU_ASSERT_STRING_NOT_EQUAL(seen[k], seen[i]);
    }
    CU_ASSERT_EQUAL(cb_sim_next(s, 36, &m), 1);
    CU_ASSERT_STRING_EQUAL(m.topic, seen[0]);
    CU_ASSERT_STRING_EQUAL(seen[0], "city/d01/river/s01");
    CU_ASSERT_STRING_EQUAL(seen[9], "city/d02/river/s01");
    CU_ASSERT_STRING_EQUAL(seen[18], "city/d01/river/s02");
    cb_sim_free(s);
}

/* A normal day must stay well inside every example rule's threshold, or the
 * demo would raise alerts nobody scripted. */
static void test_normal_day_stays_calm(void)
{
    struct cb_sim *s = make(3, 3, 1.0 / 60.0 * 81, CB_SIM_JSON, NULL); /* each sensor once a minute */
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    struct {
        const char *metric;
        double lo, hi;
    } bounds[] = {{"level", 0.5, 2.6}, {"flow", 5, 80},  {"mm_h", 0, 2},      {"pm25", 0, 60},
                  {"pm10", 0, 100},    {"ch4", 0, 3},    {"accel", 0, 0.3},   {"speed", 20, 80},
                  {"tilt", 0, 2},      {"water_depth", 0, 3}, {"db", 30, 85}};
    struct cb_sim_msg m;
    for (uint64_t i = 0; i < 81 * 60 * 24; i++) { /* one day */
        CU_ASSERT_EQUAL_FATAL(cb_sim_next(s, i, &m), 1);
        for (size_t b = 0; b < sizeof bounds / sizeof bounds[0]; b++) {
            double v = json_metric(m.payload, bounds[b].metric);
            if (isnan(v))
                continue;
            if (v < bounds[b].lo || v > bounds[b].hi) {
                fprintf(stderr, "\n  %s %s = %g\n", m.topic, bounds[b].metric, v);
                CU_FAIL("normal value outside its calm range");
                cb_sim_free(s);
                return;
            }
        }
    }
    cb_sim_free(s);
}

static void test_river_rise_lifts_only_its_district(void)
{
    struct cb_sim *s = make(2, 2, 36.0, CB_SIM_JSON, "at 1m for 10m river_rise d02 ramp=2m\n");
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    struct cb_sim_msg m;
    double d1_max = 0, d2_at_5m_min = 1e9, d2_after = 0;
    for (uint64_t i = 0; i < 36 * 60 * 20; i++) { /* 20 minutes, each sensor once a second */
        CU_ASSERT_EQUAL_FATAL(cb_sim_next(s, i, &m), 1);
        if (!strstr(m.topic, "/river/"))
            continue;
        double lv = json_metric(m.payload, "level");
        int64_t t = m.ts_ms - T0;
        if (strstr(m.topic, "/d01/") && lv > d1_max)
            d1_max = lv;
        if (strstr(m.topic, "/d02/") && t >= 3 * 60000 && t < 11 * 60000 && lv < d2_at_5m_min)
            d2_at_5m_min = lv;
        if (strstr(m.topic, "/d02/") && t >= 13 * 60000 + 1000 && lv > d2_after)
            d2_after = lv;
    }
    CU_ASSERT(d1_max < 2.6);
    CU_ASSERT(d2_at_5m_min > 4.0);  /* at the peak (4.2) while it holds */
    CU_ASSERT(d2_after < 2.6);      /* back to normal after the ramp down */
    cb_sim_free(s);
}

static void test_gateway_down_silences_one_district_for_its_window(void)
{
    struct cb_sim *s = make(2, 1, 18.0, CB_SIM_JSON, "at 10s for 20s gateway_down d02\n");
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    struct cb_sim_msg m;
    int silent_in = 0, published_d2_in = 0, published_d1_in = 0, silent_out = 0;
    for (uint64_t i = 0; i < 18 * 60; i++) {
        int r = cb_sim_next(s, i, &m);
        int64_t t = cb_sim_slot_ts(s, i) - T0;
        int in = t >= 10000 && t < 30000;
        if (r == 0)
            *(in ? &silent_in : &silent_out) += 1;
        else if (in && strstr(m.topic, "/d02/"))
            published_d2_in++;
        else if (in && strstr(m.topic, "/d01/"))
            published_d1_in++;
    }
    CU_ASSERT_EQUAL(silent_in, 20 * 9);   /* every d02 sensor, once a second, 20 s */
    CU_ASSERT_EQUAL(published_d2_in, 0);
    CU_ASSERT_EQUAL(published_d1_in, 20 * 9);
    CU_ASSERT_EQUAL(silent_out, 0);
    cb_sim_free(s);
}

static void test_formats_json_senml_and_bare(void)
{
    struct cb_sim *s = make(1, 1, 1000, CB_SIM_MIXED, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    struct cb_sim_msg m;
    for (uint64_t i = 0; i < 9; i++) {
        CU_ASSERT_EQUAL_FATAL(cb_sim_next(s, i, &m), 1);
        if (strstr(m.topic, "/noise/")) {
            CU_ASSERT_EQUAL(m.payload_is_json, 0);
            char *end;
            strtod(m.payload, &end);
            CU_ASSERT_EQUAL(*end, '\0');
            continue;
        }
        cJSON *j = cJSON_Parse(m.payload);
        CU_ASSERT_PTR_NOT_NULL_FATAL(j);
        if (strstr(m.topic, "/air/")) {
            CU_ASSERT(cJSON_IsArray(j));
            cJSON *r0 = cJSON_GetArrayItem(j, 0);
            CU_ASSERT_STRING_EQUAL(cJSON_GetObjectItem(r0, "n")->valuestring, "pm25");
            CU_ASSERT_DOUBLE_EQUAL(cJSON_GetObjectItem(r0, "bt")->valuedouble * 1000.0,
                                   (double)m.ts_ms, 0.5);
            CU_ASSERT_STRING_EQUAL(cJSON_GetObjectItem(cJSON_GetArrayItem(j, 1), "n")->valuestring,
                                   "pm10");
        } else {
            CU_ASSERT(cJSON_IsObject(j));
            CU_ASSERT_DOUBLE_EQUAL(cJSON_GetObjectItem(j, "ts")->valuedouble, (double)m.ts_ms, 0.5);
        }
        cJSON_Delete(j);
    }
    cb_sim_free(s);
}

static void test_replay_line_shapes(void)
{
    struct cb_strbuf b;
    cb_strbuf_init(&b);
    struct cb_sim_msg json = {"city/d01/gas/s01", 16, "{\"ts\":5,\"ch4\":1}", 16, 1, 1732400000000};
    cb_sim_replay_line(&b, &json);
    CU_ASSERT_STRING_EQUAL(b.data, "{\"topic\":\"city/d01/gas/s01\",\"payload\":{\"ts\":5,\"ch4\":1},"
                                   "\"ts\":1732400000000}");
    cb_strbuf_reset(&b);
    struct cb_sim_msg bare = {"city/d01/noise/s01", 18, "63.5", 4, 0, 1732400002000};
    cb_sim_replay_line(&b, &bare);
    CU_ASSERT_STRING_EQUAL(b.data, "{\"topic\":\"city/d01/noise/s01\",\"payload\":\"63.5\","
                                   "\"ts\":1732400002000}");
    cb_strbuf_free(&b);
}

static void test_same_seed_same_stream(void)
{
    const char *scn = "at 10s for 1m gas_leak d01\n";
    struct cb_sim *a = make(2, 2, 50, CB_SIM_MIXED, scn), *b = make(2, 2, 50, CB_SIM_MIXED, scn);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    struct cb_sim_msg ma, mb;
    int same = 1;
    for (uint64_t i = 0; i < 5000 && same; i++) {
        int ra = cb_sim_next(a, i, &ma), rb = cb_sim_next(b, i, &mb);
        same = ra == rb && (ra == 0 || (strcmp(ma.topic, mb.topic) == 0 &&
                                          strcmp(ma.payload, mb.payload) == 0));
    }
    CU_ASSERT(same);
    cb_sim_free(a);
    cb_sim_free(b);
}

static void test_bad_options_are_refused(void)
{
    char err[128];
    struct cb_sim_options o = {0, 1, CB_SIM_JSON, 1, T0, 10};
    CU_ASSERT_PTR_NULL(cb_sim_new(&o, NULL, err, sizeof err));
    o.districts = 1;
    o.rate = 0;
    CU_ASSERT_PTR_NULL(cb_sim_new(&o, NULL, err, sizeof err));
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "rate"));
}

void cb_test_suite_sim(void)
{
    CU_pSuite s = CU_add_suite("sim", NULL, NULL);
    CU_add_test(s, "sim: scenario parses named incidents, sensors, peaks and ramps",
                test_scenario_parses_named_incidents);
    CU_add_test(s, "sim: scenario errors name the line and the problem",
                test_scenario_errors_name_the_line);
    CU_add_test(s, "sim: slots cycle through every sensor, spaced by the rate",
                test_slots_cycle_every_sensor_and_space_time);
    CU_add_test(s, "sim: a normal day stays inside calm ranges", test_normal_day_stays_calm);
    CU_add_test(s, "sim: river_rise lifts its district to the peak and back, no other",
                test_river_rise_lifts_only_its_district);
    CU_add_test(s, "sim: gateway_down silences one district for its window only",
                test_gateway_down_silences_one_district_for_its_window);
    CU_add_test(s, "sim: mixed format gives JSON, SenML with bt, and bare numbers",
                test_formats_json_senml_and_bare);
    CU_add_test(s, "sim: replay lines carry the payload as JSON or as a string, and ts",
                test_replay_line_shapes);
    CU_add_test(s, "sim: the same seed and scenario give the same stream",
                test_same_seed_same_stream);
    CU_add_test(s, "sim: bad options are refused", test_bad_options_are_refused);
}
