/* Payload decoding: JSON objects, SenML packs, bare numbers, every ts form,
 * every rejection reason, the limits. */
#include <CUnit/CUnit.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ingest/ingest.h"

#define ARRIVAL 1700000000000LL /* 2023-11-14T22:13:20Z */

static struct cb_decode_limits default_limits(void)
{
    struct cb_decode_limits l = {.max_payload = 64 * 1024,
                                 .max_topic_length = 256,
                                 .max_json_depth = 8,
                                 .max_fields = 256};
    return l;
}

static struct cb_decoder *dec;
static struct cb_decoded out;

static int setup(void)
{
    struct cb_decode_limits l = default_limits();
    dec = cb_decoder_new(&l);
    return dec ? 0 : 1;
}

static int teardown(void)
{
    cb_decoder_free(dec);
    dec = NULL;
    return 0;
}

static enum cb_reject run(const char *payload)
{
    return cb_decode(dec, "city/d1/s1", payload, strlen(payload), ARRIVAL, &out);
}

static enum cb_reject run_replay(const char *payload)
{
    return cb_decode(dec, "city/d1/s1", payload, strlen(payload), CB_DECODE_NO_ARRIVAL, &out);
}

/* The sample named metric in out, or NULL. */
static const struct cb_sample *find(const char *metric)
{
    for (size_t i = 0; i < out.n; i++)
        if (strcmp(out.samples[i].metric, metric) == 0)
            return &out.samples[i];
    return NULL;
}

#define ASSERT_SAMPLE(metric, ts, v)                                                      \
    do {                                                                                  \
        const struct cb_sample *s_ = find(metric);                                        \
        CU_ASSERT_PTR_NOT_NULL_FATAL(s_);                                                 \
        CU_ASSERT_EQUAL(s_->ts_ms, (int64_t)(ts));                                        \
        CU_ASSERT_DOUBLE_EQUAL(s_->value, (v), 1e-9);                                     \
    } while (0)

#define ASSERT_REJECT(payload, reason)                                                    \
    do {                                                                                  \
        enum cb_reject r_ = run(payload);                                                 \
        if (r_ != (reason))                                                               \
            fprintf(stderr, "\n  %s: got %s, want %s\n", #payload, cb_reject_name(r_),     \
                    cb_reject_name(reason));                                              \
        CU_ASSERT_EQUAL(r_, (reason));                                                    \
        CU_ASSERT_EQUAL(out.n, 0);                                                        \
    } while (0)

/* ---- JSON objects ---------------------------------------------------------------- */

static void test_json_flat_object(void)
{
    CU_ASSERT_EQUAL_FATAL(run("{\"level\": 3.27, \"battery\": 88, \"neg\": -1.5e2}"), CB_REJECT_NONE);
    CU_ASSERT_EQUAL(out.n, 3);
    CU_ASSERT_PTR_NULL(out.device);
    ASSERT_SAMPLE("level", ARRIVAL, 3.27);
    ASSERT_SAMPLE("battery", ARRIVAL, 88);
    ASSERT_SAMPLE("neg", ARRIVAL, -150);
    /* Document order. */
    CU_ASSERT_STRING_EQUAL(out.samples[0].metric, "level");
    CU_ASSERT_STRING_EQUAL(out.samples[2].metric, "neg");
}

static void test_json_nested_flatten_bools(void)
{
    CU_ASSERT_EQUAL_FATAL(
        run("{\"air\":{\"pm25\":4,\"no2\":{\"ppb\":12}},\"door_open\":true,\"alarm\":false}"),
        CB_REJECT_NONE);
    CU_ASSERT_EQUAL(out.n, 4);
    ASSERT_SAMPLE("air.pm25", ARRIVAL, 4);
    ASSERT_SAMPLE("air.no2.ppb", ARRIVAL, 12);
    ASSERT_SAMPLE("door_open", ARRIVAL, 1);
    ASSERT_SAMPLE("alarm", ARRIVAL, 0);
}

static void test_json_strings_arrays_null_skipped(void)
{
    CU_ASSERT_EQUAL_FATAL(run("{\"id\":\"pump-7\",\"fw\":\"1.2\",\"temp\":21.5,\"hist\":[1,2,3],"
                              "\"x\":null,\"\":5,\"gps\":{\"ts\":12,\"name\":\"n\"}}"),
                          CB_REJECT_NONE);
    CU_ASSERT_EQUAL(out.n, 2);
    ASSERT_SAMPLE("temp", ARRIVAL, 21.5);
    /* A nested ts is an ordinary metric. */
    ASSERT_SAMPLE("gps.ts", ARRIVAL, 12);
    CU_ASSERT_PTR_NULL(find("hist"));
    CU_ASSERT_PTR_NULL(find("id"));
}

static void test_json_no_numbers(void)
{
    ASSERT_REJECT("{\"temp\":\"21.5\"}", CB_REJECT_STRING_VALUE);
    ASSERT_REJECT("{}", CB_REJECT_NO_SAMPLES);
    ASSERT_REJECT("{\"a\":[1,2],\"b\":null}", CB_REJECT_NO_SAMPLES);
    ASSERT_REJECT("{\"ts\":1700000000}", CB_REJECT_NO_SAMPLES);
    ASSERT_REJECT("\"21.5\"", CB_REJECT_STRING_VALUE);
    ASSERT_REJECT("null", CB_REJECT_NO_SAMPLES);
}

/* ---- ts ------------------------------------------------------------------------- */

static void test_ts_forms(void)
{
    CU_ASSERT_EQUAL(run("{\"v\":1,\"ts\":1700000000123}"), CB_REJECT_NONE);
    ASSERT_SAMPLE("v", 1700000000123LL, 1);
    CU_ASSERT_PTR_NULL(find("ts"));
    CU_ASSERT_EQUAL(run("{\"v\":1,\"ts\":1700000000}"), CB_REJECT_NONE);
    ASSERT_SAMPLE("v", 1700000000000LL, 1);
    CU_ASSERT_EQUAL(run("{\"v\":1,\"ts\":1700000000.25}"), CB_REJECT_NONE);
    ASSERT_SAMPLE("v", 1700000000250LL, 1);
    /* The threshold: 1e11 is milliseconds, just below it seconds. */
    CU_ASSERT_EQUAL(run("{\"v\":1,\"ts\":100000000000}"), CB_REJECT_NONE);
    ASSERT_SAMPLE("v", 100000000000LL, 1);
    CU_ASSERT_EQUAL(run("{\"v\":1,\"ts\":99999999999}"), CB_REJECT_NONE);
    ASSERT_SAMPLE("v", 99999999999000LL, 1);
    CU_ASSERT_EQUAL(run("{\"v\":1,\"ts\":\"2023-11-14T22:13:20Z\"}"), CB_REJECT_NONE);
    ASSERT_SAMPLE("v", 1700000000000LL, 1);
    CU_ASSERT_EQUAL(run("{\"v\":1,\"ts\":\"2023-11-14T22:13:20.5Z\"}"), CB_REJECT_NONE);
    ASSERT_SAMPLE("v", 1700000000500LL, 1);
    CU_ASSERT_EQUAL(run("{\"v\":1,\"ts\":\"2023-11-15T06:13:20.123+08:00\"}"), CB_REJECT_NONE);
    ASSERT_SAMPLE("v", 1700000000123LL, 1);
    CU_ASSERT_EQUAL(run("{\"v\":1,\"ts\":\"2023-11-14T17:13:20-05:00\"}"), CB_REJECT_NONE);
    ASSERT_SAMPLE("v", 1700000000000LL, 1);
}

static void test_rfc3339_parser(void)
{
    int64_t t;
    CU_ASSERT_EQUAL(cb_parse_rfc3339("1970-01-01T00:00:00Z", 20, &t), 0);
    CU_ASSERT_EQUAL(t, 0);
    const char *s = "2024-02-29T12:00:00.123456789z";
    CU_ASSERT_EQUAL(cb_parse_rfc3339(s, strlen(s), &t), 0); /* leap day, nanoseconds */
    CU_ASSERT_EQUAL(t, 1709208000123LL);
    s = "2024-11-24 01:33:20+00:00";
    CU_ASSERT_EQUAL(cb_parse_rfc3339(s, strlen(s), &t), 0);
    CU_ASSERT_EQUAL(t, 1732412000000LL);
    s = "2016-12-31T23:59:60Z"; /* leap second */
    CU_ASSERT_EQUAL(cb_parse_rfc3339(s, strlen(s), &t), 0);
    CU_ASSERT_EQUAL(t, 1483228799000LL);
    static const char *const bad[] = {
        "2023-02-29T00:00:00Z", "2023-13-01T00:00:00Z", "2023-11-14T24:00:00Z",
        "2023-11-14T22:13:20",  "2023-11-14T22:13:20+8:00", "2023-11-14",
        "2023-11-14T22:13:20.Z", "2023-11-14T22:13:20Zjunk", "20231114T221320Z",
        "1969-12-31T23:59:59Z", "",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = cb_parse_rfc3339(bad[i], strlen(bad[i]), &t);
        if (rc != -1)
            fprintf(stderr, "\n  accepted '%s'\n", bad[i]);
        CU_ASSERT_EQUAL(rc, -1);
    }
}

static void test_bad_ts(void)
{
    ASSERT_REJECT("{\"v\":1,\"ts\":\"yesterday\"}", CB_REJECT_BAD_TS);
    ASSERT_REJECT("{\"v\":1,\"ts\":true}", CB_REJECT_BAD_TS);
    ASSERT_REJECT("{\"v\":1,\"ts\":null}", CB_REJECT_BAD_TS);
    ASSERT_REJECT("{\"v\":1,\"ts\":{}}", CB_REJECT_BAD_TS);
    ASSERT_REJECT("{\"v\":1,\"ts\":-5}", CB_REJECT_BAD_TS);
    ASSERT_REJECT("{\"v\":1,\"ts\":1e999}", CB_REJECT_BAD_TS);
    ASSERT_REJECT("{\"v\":1,\"ts\":1e300}", CB_REJECT_BAD_TS);
}

static void test_replay_requires_event_time(void)
{
    CU_ASSERT_EQUAL(run_replay("{\"v\":1}"), CB_REJECT_MISSING_TS);
    CU_ASSERT_EQUAL(out.n, 0);
    CU_ASSERT_EQUAL(run_replay("3.5"), CB_REJECT_MISSING_TS);
    CU_ASSERT_EQUAL(run_replay("[{\"n\":\"a\",\"v\":1}]"), CB_REJECT_MISSING_TS);
    CU_ASSERT_EQUAL(run_replay("[{\"n\":\"a\",\"v\":1,\"t\":-5}]"), CB_REJECT_MISSING_TS);
    CU_ASSERT_EQUAL(run_replay("{\"v\":1,\"ts\":1700000000}"), CB_REJECT_NONE);
    ASSERT_SAMPLE("v", 1700000000000LL, 1);
    CU_ASSERT_EQUAL(run_replay("[{\"bt\":1700000000,\"n\":\"a\",\"v\":1}]"), CB_REJECT_NONE);
    ASSERT_SAMPLE("a", 1700000000000LL, 1);
}

/* ---- bare numbers ------------------------------------------------------------------ */

static void test_bare_numbers(void)
{
    CU_ASSERT_EQUAL_FATAL(run("3.27"), CB_REJECT_NONE);
    CU_ASSERT_EQUAL(out.n, 1);
    ASSERT_SAMPLE("value", ARRIVAL, 3.27);
    CU_ASSERT_EQUAL(run("  -12\n"), CB_REJECT_NONE);
    ASSERT_SAMPLE("value", ARRIVAL, -12);
    CU_ASSERT_EQUAL(run("6.02e23"), CB_REJECT_NONE);
    ASSERT_SAMPLE("value", ARRIVAL, 6.02e23);
    CU_ASSERT_EQUAL(run("1e-999"), CB_REJECT_NONE); /* underflow: nearest double */
    ASSERT_SAMPLE("value", ARRIVAL, 0);
    CU_ASSERT_EQUAL(run("true"), CB_REJECT_NONE);
    ASSERT_SAMPLE("value", ARRIVAL, 1);
    ASSERT_REJECT("1e999", CB_REJECT_OVERFLOW);
    ASSERT_REJECT("-1e999", CB_REJECT_OVERFLOW);
    ASSERT_REJECT("NaN", CB_REJECT_NOT_FINITE);
    ASSERT_REJECT("nan", CB_REJECT_NOT_FINITE);
    ASSERT_REJECT("-Infinity", CB_REJECT_NOT_FINITE);
    ASSERT_REJECT("inf", CB_REJECT_NOT_FINITE);
    ASSERT_REJECT("0x1p3", CB_REJECT_MALFORMED);
    ASSERT_REJECT("3.2.1", CB_REJECT_MALFORMED);
    ASSERT_REJECT("12 13", CB_REJECT_MALFORMED);
    ASSERT_REJECT("3,5", CB_REJECT_MALFORMED);
    ASSERT_REJECT("info", CB_REJECT_MALFORMED);
    ASSERT_REJECT("", CB_REJECT_MALFORMED);
    ASSERT_REJECT("   ", CB_REJECT_MALFORMED);
}

/* ---- junk ------------------------------------------------------------------------- */

static void test_malformed_and_non_finite_json(void)
{
    ASSERT_REJECT("{\"v\":1", CB_REJECT_MALFORMED);
    ASSERT_REJECT("{\"v\":1}}", CB_REJECT_MALFORMED);
    ASSERT_REJECT("{v:1}", CB_REJECT_MALFORMED);
    ASSERT_REJECT("{\"v\":1,}", CB_REJECT_MALFORMED);
    ASSERT_REJECT("hello", CB_REJECT_MALFORMED);
    ASSERT_REJECT("{\"v\":NaN}", CB_REJECT_NOT_FINITE);
    ASSERT_REJECT("{\"a\":1,\"v\": -Infinity}", CB_REJECT_NOT_FINITE);
    ASSERT_REJECT("{\"v\":Infinity}", CB_REJECT_NOT_FINITE);
    ASSERT_REJECT("[{\"n\":\"a\",\"v\":NaN}]", CB_REJECT_NOT_FINITE);
    ASSERT_REJECT("{\"v\":1e999}", CB_REJECT_OVERFLOW);
    ASSERT_REJECT("{\"a\":{\"b\":-1e400}}", CB_REJECT_OVERFLOW);
    /* A number written with 100 digits is read whole. */
    char longnum[200] = "{\"v\":1";
    for (int i = 0; i < 100; i++)
        strcat(longnum, "0");
    strcat(longnum, "}");
    CU_ASSERT_EQUAL(run(longnum), CB_REJECT_NONE);
    ASSERT_SAMPLE("v", ARRIVAL, 1e100);
}

static void test_binary_bytes(void)
{
    static const unsigned char nul[] = {'{', '"', 'v', '"', ':', '1', 0, '}'};
    CU_ASSERT_EQUAL(cb_decode(dec, "t", nul, sizeof nul, ARRIVAL, &out), CB_REJECT_MALFORMED);
    static const unsigned char bad_utf8[] = "{\"v\xff\":1}";
    CU_ASSERT_EQUAL(cb_decode(dec, "t", bad_utf8, sizeof bad_utf8 - 1, ARRIVAL, &out),
                    CB_REJECT_MALFORMED);
    static const unsigned char overlong[] = "{\"\xc0\xaf\":1}";
    CU_ASSERT_EQUAL(cb_decode(dec, "t", overlong, sizeof overlong - 1, ARRIVAL, &out),
                    CB_REJECT_MALFORMED);
    static const unsigned char surrogate[] = "{\"\xed\xa0\x80\":1}";
    CU_ASSERT_EQUAL(cb_decode(dec, "t", surrogate, sizeof surrogate - 1, ARRIVAL, &out),
                    CB_REJECT_MALFORMED);
    static const unsigned char truncated[] = "{\"v\":1,\"\xe2\x82";
    CU_ASSERT_EQUAL(cb_decode(dec, "t", truncated, sizeof truncated - 1, ARRIVAL, &out),
                    CB_REJECT_MALFORMED);
    /* Valid UTF-8 in names is kept. */
    static const char utf8[] = "{\"d\xc3\xa9\x62it\":2,\"\xf0\x9f\x8c\xa7\":1}";
    CU_ASSERT_EQUAL(cb_decode(dec, "t", utf8, sizeof utf8 - 1, ARRIVAL, &out), CB_REJECT_NONE);
    ASSERT_SAMPLE("d\xc3\xa9" "bit", ARRIVAL, 2);
    /* Random bytes: never a crash, never a sample. */
    unsigned char junk[4096];
    unsigned x = 12345;
    for (int round = 0; round < 200; round++) {
        size_t n = 1 + (size_t)(x % sizeof junk);
        for (size_t i = 0; i < n; i++) {
            x = x * 1103515245u + 12345u;
            junk[i] = (unsigned char)(x >> 16);
        }
        enum cb_reject r = cb_decode(dec, "t", junk, n, ARRIVAL, &out);
        if (r != CB_REJECT_NONE)
            CU_ASSERT_EQUAL(out.n, 0);
        for (size_t i = 0; i < out.n; i++)
            CU_ASSERT_TRUE(isfinite(out.samples[i].value));
    }
}

/* ---- limits ------------------------------------------------------------------------ */

static void test_limits(void)
{
    struct cb_decode_limits l = default_limits();
    l.max_payload = 100;
    l.max_topic_length = 10;
    l.max_json_depth = 3;
    l.max_fields = 3;
    struct cb_decoder *d = cb_decoder_new(&l);
    CU_ASSERT_PTR_NOT_NULL_FATAL(d);
    const char *ok = "{\"a\":1}";
    CU_ASSERT_EQUAL(cb_decode(d, "0123456789", ok, strlen(ok), ARRIVAL, &out), CB_REJECT_NONE);
    CU_ASSERT_EQUAL(cb_decode(d, "0123456789x", ok, strlen(ok), ARRIVAL, &out),
                    CB_REJECT_TOPIC_TOO_LONG);
    char big[102];
    memset(big, ' ', sizeof big);
    big[0] = '1';
    CU_ASSERT_EQUAL(cb_decode(d, "t", big, 100, ARRIVAL, &out), CB_REJECT_NONE);
    CU_ASSERT_EQUAL(cb_decode(d, "t", big, 101, ARRIVAL, &out), CB_REJECT_PAYLOAD_TOO_LARGE);
    const char *depth3 = "{\"a\":{\"b\":{\"c\":1}}}";
    CU_ASSERT_EQUAL(cb_decode(d, "t", depth3, strlen(depth3), ARRIVAL, &out), CB_REJECT_NONE);
    CU_ASSERT_STRING_EQUAL(out.samples[0].metric, "a.b.c");
    const char *depth4 = "{\"a\":{\"b\":{\"c\":{\"d\":1}}}}";
    CU_ASSERT_EQUAL(cb_decode(d, "t", depth4, strlen(depth4), ARRIVAL, &out), CB_REJECT_TOO_DEEP);
    /* Brackets inside strings do not count. */
    const char *str = "{\"a\":\"[[[[{{{{\",\"b\":2}";
    CU_ASSERT_EQUAL(cb_decode(d, "t", str, strlen(str), ARRIVAL, &out), CB_REJECT_NONE);
    const char *f3 = "{\"a\":1,\"b\":2,\"c\":3}";
    CU_ASSERT_EQUAL(cb_decode(d, "t", f3, strlen(f3), ARRIVAL, &out), CB_REJECT_NONE);
    CU_ASSERT_EQUAL(out.n, 3);
    const char *f4 = "{\"a\":1,\"b\":2,\"c\":3,\"d\":4}";
    CU_ASSERT_EQUAL(cb_decode(d, "t", f4, strlen(f4), ARRIVAL, &out), CB_REJECT_TOO_MANY_FIELDS);
    CU_ASSERT_EQUAL(out.n, 0);
    const char *s4 = "[{\"n\":\"a\",\"v\":1},{\"n\":\"b\",\"v\":1},{\"n\":\"c\",\"v\":1},"
                     "{\"n\":\"d\",\"v\":1}]";
    CU_ASSERT_EQUAL(cb_decode(d, "t", s4, strlen(s4), ARRIVAL, &out), CB_REJECT_TOO_MANY_FIELDS);
    cb_decoder_free(d);
}

static void test_deep_nesting_is_refused_before_parsing(void)
{
    /* 100,000 opening brackets: refused by the pre-scan, no recursion. */
    size_t n = 100000;
    char *p = malloc(n);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    memset(p, '[', n);
    struct cb_decode_limits l = default_limits();
    l.max_payload = 1 << 20;
    struct cb_decoder *d = cb_decoder_new(&l);
    CU_ASSERT_EQUAL(cb_decode(d, "t", p, n, ARRIVAL, &out), CB_REJECT_TOO_DEEP);
    memset(p, '{', n);
    CU_ASSERT_EQUAL(cb_decode(d, "t", p, n, ARRIVAL, &out), CB_REJECT_TOO_DEEP);
    cb_decoder_free(d);
    free(p);
}

static void test_large_string_field(void)
{
    size_t n = 500 * 1024;
    char *p = malloc(n + 64);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    strcpy(p, "{\"level\":2.5,\"blob\":\"");
    size_t k = strlen(p);
    memset(p + k, 'x', n);
    strcpy(p + k + n, "\"}");
    /* Default limits: too large. */
    CU_ASSERT_EQUAL(cb_decode(dec, "t", p, strlen(p), ARRIVAL, &out), CB_REJECT_PAYLOAD_TOO_LARGE);
    /* With room for it: the string is skipped, the number kept. */
    struct cb_decode_limits l = default_limits();
    l.max_payload = 1 << 20;
    struct cb_decoder *d = cb_decoder_new(&l);
    CU_ASSERT_EQUAL(cb_decode(d, "t", p, strlen(p), ARRIVAL, &out), CB_REJECT_NONE);
    CU_ASSERT_EQUAL(out.n, 1);
    ASSERT_SAMPLE("level", ARRIVAL, 2.5);
    cb_decoder_free(d);
    free(p);
}

static void test_long_names(void)
{
    char p[700];
    char key[300];
    memset(key, 'k', 255);
    key[255] = '\0';
    snprintf(p, sizeof p, "{\"%s\":1}", key);
    CU_ASSERT_EQUAL(run(p), CB_REJECT_NONE);
    CU_ASSERT_EQUAL(strlen(out.samples[0].metric), 255);
    key[255] = 'k';
    key[256] = '\0';
    snprintf(p, sizeof p, "{\"%s\":1}", key);
    ASSERT_REJECT(p, CB_REJECT_MALFORMED);
    memset(key, 'k', 200);
    key[200] = '\0';
    snprintf(p, sizeof p, "{\"%s\":{\"%s\":1}}", key, key);
    ASSERT_REJECT(p, CB_REJECT_MALFORMED);
}

/* ---- SenML -------------------------------------------------------------------------- */

static void test_senml_rfc_example(void)
{
    /* RFC 8428 section 5.1.2, with the base values carried across records. */
    const char *pack = "[{\"bn\":\"urn:dev:ow:10e2073a01080063:\",\"bt\":1.320067464e+09,"
                       "\"bu\":\"%RH\",\"v\":20},"
                       "{\"u\":\"lon\",\"v\":24.30621},"
                       "{\"u\":\"lat\",\"v\":60.07965},"
                       "{\"t\":60,\"v\":20.3},"
                       "{\"u\":\"lon\",\"t\":60,\"v\":24.30622},"
                       "{\"u\":\"lat\",\"t\":60,\"v\":60.07965},"
                       "{\"t\":120,\"v\":20.7}]";
    CU_ASSERT_EQUAL_FATAL(run(pack), CB_REJECT_NONE);
    CU_ASSERT_EQUAL(out.n, 7);
    CU_ASSERT_STRING_EQUAL(out.device, "urn:dev:ow:10e2073a01080063:");
    CU_ASSERT_STRING_EQUAL(out.samples[0].metric, "value");
    CU_ASSERT_EQUAL(out.samples[0].ts_ms, 1320067464000LL);
    CU_ASSERT_EQUAL(out.samples[3].ts_ms, 1320067524000LL);
    CU_ASSERT_DOUBLE_EQUAL(out.samples[3].value, 20.3, 1e-9);
    CU_ASSERT_EQUAL(out.samples[6].ts_ms, 1320067584000LL);
}

static void test_senml_base_values_carry(void)
{
    const char *pack = "[{\"bn\":\"dev1\",\"bt\":1700000000,\"bv\":100,\"n\":\"temp\",\"v\":1.5},"
                       "{\"n\":\"hum\",\"v\":-10,\"t\":2.5},"
                       "{\"bv\":0,\"n\":\"door\",\"vb\":true},"
                       "{\"n\":\"label\",\"vs\":\"hello\"},"
                       "{\"n\":\"raw\",\"vd\":\"aGk=\"},"
                       "{\"bs\":10,\"n\":\"rain\",\"s\":2},"
                       "{\"bt\":1700000100,\"n\":\"p\",\"v\":3,\"ut\":60,\"bver\":10}]";
    CU_ASSERT_EQUAL_FATAL(run(pack), CB_REJECT_NONE);
    CU_ASSERT_EQUAL(out.n, 5);
    CU_ASSERT_STRING_EQUAL(out.device, "dev1");
    ASSERT_SAMPLE("temp", 1700000000000LL, 101.5);
    ASSERT_SAMPLE("hum", 1700000002500LL, 90);
    ASSERT_SAMPLE("door", 1700000000000LL, 1);
    ASSERT_SAMPLE("rain.sum", 1700000000000LL, 12);
    ASSERT_SAMPLE("p", 1700000100000LL, 3);
    CU_ASSERT_PTR_NULL(find("label"));
    CU_ASSERT_PTR_NULL(find("raw"));
}

static void test_senml_relative_times(void)
{
    /* No bt, small t: relative to now (arrival). */
    CU_ASSERT_EQUAL_FATAL(run("[{\"n\":\"a\",\"v\":1,\"t\":-5},{\"n\":\"b\",\"v\":2}]"), CB_REJECT_NONE);
    ASSERT_SAMPLE("a", ARRIVAL - 5000, 1);
    ASSERT_SAMPLE("b", ARRIVAL, 2);
    CU_ASSERT_PTR_NULL(out.device);
    /* 2^28 seconds is absolute. */
    CU_ASSERT_EQUAL(run("[{\"n\":\"a\",\"v\":1,\"t\":268435456}]"), CB_REJECT_NONE);
    ASSERT_SAMPLE("a", 268435456000LL, 1);
    CU_ASSERT_EQUAL(run("[{\"n\":\"a\",\"v\":1,\"t\":268435455.5}]"), CB_REJECT_NONE);
    ASSERT_SAMPLE("a", ARRIVAL + 268435455500LL, 1);
}

static void test_senml_rejections(void)
{
    ASSERT_REJECT("[{\"n\":\"a\",\"v\":1,\"foo_\":1}]", CB_REJECT_SENML);
    ASSERT_REJECT("[{\"n\":\"a\",\"v\":1},{\"n\":\"b\",\"v\":2,\"x_\":\"y\"}]", CB_REJECT_SENML);
    ASSERT_REJECT("[{\"n\":\"a\",\"v\":1},3]", CB_REJECT_SENML);
    ASSERT_REJECT("[1,2,3]", CB_REJECT_SENML);
    ASSERT_REJECT("[{\"n\":5,\"v\":1}]", CB_REJECT_SENML);
    ASSERT_REJECT("[{\"bn\":7,\"v\":1}]", CB_REJECT_SENML);
    ASSERT_REJECT("[{\"n\":\"a\",\"v\":1,\"vs\":\"x\"}]", CB_REJECT_SENML);
    ASSERT_REJECT("[{\"n\":\"a\",\"v\":null}]", CB_REJECT_SENML);
    ASSERT_REJECT("[{\"n\":\"a\",\"vb\":1}]", CB_REJECT_SENML);
    ASSERT_REJECT("[{\"bver\":11,\"n\":\"a\",\"v\":1}]", CB_REJECT_SENML);
    ASSERT_REJECT("[{\"bn\":\"d1\",\"n\":\"a\",\"v\":1},{\"bn\":\"d2\",\"n\":\"a\",\"v\":1}]",
                  CB_REJECT_SENML);
    ASSERT_REJECT("[{\"n\":\"a\",\"u\":5,\"v\":1}]", CB_REJECT_SENML);
    ASSERT_REJECT("[{\"n\":\"a\",\"v\":\"3.5\"}]", CB_REJECT_STRING_VALUE);
    ASSERT_REJECT("[{\"n\":\"a\",\"v\":1,\"t\":\"now\"}]", CB_REJECT_BAD_TS);
    ASSERT_REJECT("[{\"bt\":\"2023-01-01\",\"n\":\"a\",\"v\":1}]", CB_REJECT_BAD_TS);
    ASSERT_REJECT("[{\"bt\":-1e12,\"n\":\"a\",\"v\":1}]", CB_REJECT_BAD_TS);
    ASSERT_REJECT("[{\"n\":\"a\",\"v\":1e999}]", CB_REJECT_OVERFLOW);
    ASSERT_REJECT("[{\"bv\":1.7e308,\"n\":\"a\",\"v\":1.7e308}]", CB_REJECT_OVERFLOW);
    ASSERT_REJECT("[]", CB_REJECT_NO_SAMPLES);
    ASSERT_REJECT("[{\"bn\":\"d\",\"bt\":1700000000}]", CB_REJECT_NO_SAMPLES);
    ASSERT_REJECT("[{\"n\":\"a\",\"vs\":\"only text\"}]", CB_REJECT_NO_SAMPLES);
    /* Unknown labels without the trailing underscore are ignored. */
    CU_ASSERT_EQUAL(run("[{\"n\":\"a\",\"v\":1,\"foo\":{\"x\":1}}]"), CB_REJECT_NONE);
    CU_ASSERT_EQUAL(out.n, 1);
}

/* ---- reuse ---------------------------------------------------------------------------- */

static void test_decoder_reuse_keeps_results_apart(void)
{
    CU_ASSERT_EQUAL(run("[{\"bn\":\"dev9\",\"n\":\"a\",\"v\":1,\"t\":1700000000}]"), CB_REJECT_NONE);
    CU_ASSERT_STRING_EQUAL(out.device, "dev9");
    CU_ASSERT_EQUAL(run("{\"b\":2}"), CB_REJECT_NONE);
    CU_ASSERT_PTR_NULL(out.device);
    CU_ASSERT_EQUAL(out.n, 1);
    CU_ASSERT_STRING_EQUAL(out.samples[0].metric, "b");
    /* A failed decode leaves an empty result, then the next one is whole. */
    CU_ASSERT_EQUAL(run("{\"a\":1,\"b\":\"x\",\"c\":NaN}"), CB_REJECT_NOT_FINITE);
    CU_ASSERT_EQUAL(out.n, 0);
    CU_ASSERT_PTR_NULL(out.samples);
    /* Many fields: the arena grows and names stay intact after the move. */
    char p[8192] = "{";
    for (int i = 0; i < 200; i++) {
        char f[40];
        snprintf(f, sizeof f, "%s\"metric_number_%03d\":%d", i ? "," : "", i, i);
        strcat(p, f);
    }
    strcat(p, "}");
    CU_ASSERT_EQUAL_FATAL(run(p), CB_REJECT_NONE);
    CU_ASSERT_EQUAL(out.n, 200);
    ASSERT_SAMPLE("metric_number_000", ARRIVAL, 0);
    ASSERT_SAMPLE("metric_number_199", ARRIVAL, 199);
}

void cb_test_suite_decode(void);
void cb_test_suite_decode(void)
{
    CU_pSuite s = CU_add_suite("decode", setup, teardown);
    CU_add_test(s, "decode: a flat JSON object gives one sample per number", test_json_flat_object);
    CU_add_test(s, "decode: nested objects flatten with dots, booleans are 0/1",
                test_json_nested_flatten_bools);
    CU_add_test(s, "decode: strings, arrays, null and empty keys are skipped",
                test_json_strings_arrays_null_skipped);
    CU_add_test(s, "decode: an object without numbers is string_value or no_samples",
                test_json_no_numbers);
    CU_add_test(s, "decode: ts in ms, in seconds with fractions, RFC 3339 with Z and offsets",
                test_ts_forms);
    CU_add_test(s, "decode: the RFC 3339 parser refuses impossible dates", test_rfc3339_parser);
    CU_add_test(s, "decode: a ts of the wrong type or range is bad_ts", test_bad_ts);
    CU_add_test(s, "decode: replay without an event time is missing_ts",
                test_replay_requires_event_time);
    CU_add_test(s, "decode: bare numbers are metric value; overflow and NaN are refused",
                test_bare_numbers);
    CU_add_test(s, "decode: malformed JSON, NaN and 1e999 inside JSON are refused",
                test_malformed_and_non_finite_json);
    CU_add_test(s, "decode: NUL bytes, invalid UTF-8 and random bytes are refused",
                test_binary_bytes);
    CU_add_test(s, "decode: topic, payload, depth and field limits", test_limits);
    CU_add_test(s, "decode: 100k brackets are too_deep before any parsing",
                test_deep_nesting_is_refused_before_parsing);
    CU_add_test(s, "decode: a 500 KB string field", test_large_string_field);
    CU_add_test(s, "decode: metric names longer than 255 bytes are refused", test_long_names);
    CU_add_test(s, "decode: SenML RFC 8428 example pack", test_senml_rfc_example);
    CU_add_test(s, "decode: SenML base values carry across records", test_senml_base_values_carry);
    CU_add_test(s, "decode: SenML times below 2^28 are relative to now", test_senml_relative_times);
    CU_add_test(s, "decode: SenML packs violating RFC 8428 are refused whole",
                test_senml_rejections);
    CU_add_test(s, "decode: a reused decoder keeps each result apart",
                test_decoder_reuse_keeps_results_apart);
}
