/* Unit tests: topic patterns with captures, and the pattern index. */
#include "rules/rules.h"

#include <CUnit/CUnit.h>
#include <stdlib.h>
#include <string.h>

static struct cb_topic_pattern *compile(const char *s)
{
    char err[128];
    return cb_topic_pattern_compile(s, strlen(s), err, sizeof err, NULL);
}

static void test_captures(void)
{
    struct cb_topic_pattern *p = compile("city/{district}/river/{sensor}");
    struct cb_topic_capture c[4];
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    CU_ASSERT_EQUAL(cb_topic_pattern_label_count(p), 2);
    CU_ASSERT_EQUAL(cb_topic_pattern_match(p, "city/d07/river/s12", c, 4), 2);
    CU_ASSERT_STRING_EQUAL(c[0].name, "district");
    CU_ASSERT_EQUAL(c[0].len, 3);
    CU_ASSERT_EQUAL(strncmp(c[0].value, "d07", 3), 0);
    CU_ASSERT_STRING_EQUAL(c[1].name, "sensor");
    CU_ASSERT_EQUAL(strncmp(c[1].value, "s12", c[1].len), 0);
    CU_ASSERT_EQUAL(cb_topic_pattern_match(p, "city/d07/air/s12", c, 4), -1);
    CU_ASSERT_EQUAL(cb_topic_pattern_match(p, "city/d07/river", c, 4), -1);
    CU_ASSERT_EQUAL(cb_topic_pattern_match(p, "city/d07/river/s12/x", c, 4), -1);
    CU_ASSERT(cb_topic_pattern_binds(p, "district"));
    CU_ASSERT(!cb_topic_pattern_binds(p, "kind"));
    cb_topic_pattern_free(p);
}

static void test_wildcards(void)
{
    struct cb_topic_pattern *p = compile("city/+/{kind}/#");
    struct cb_topic_capture c[4];
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    CU_ASSERT_EQUAL(cb_topic_pattern_match(p, "city/d1/gas/g1", c, 4), 1);
    CU_ASSERT_EQUAL(strncmp(c[0].value, "gas", c[0].len), 0);
    CU_ASSERT_EQUAL(cb_topic_pattern_match(p, "city/d1/gas", c, 4), 1); /* # matches zero levels */
    CU_ASSERT_EQUAL(cb_topic_pattern_match(p, "city/d1/gas/a/b/c", c, 4), 1);
    CU_ASSERT_EQUAL(cb_topic_pattern_match(p, "town/d1/gas/g1", c, 4), -1);
    cb_topic_pattern_free(p);
}

static void test_bad_patterns(void)
{
    const char *bad[] = {"", "a/#/b", "a/b+/c", "a/{1x}/c", "a/{x}/{x}", "a/{}/b", "a/{x-y}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char err[128] = "";
        struct cb_topic_pattern *p = cb_topic_pattern_compile(bad[i], strlen(bad[i]), err, sizeof err, NULL);
        CU_ASSERT_PTR_NULL(p);
        CU_ASSERT(err[0] != 0);
        cb_topic_pattern_free(p);
    }
}

struct hits {
    uint32_t tags[64];
    size_t n;
};

static void collect(void *ctx, uint32_t tag)
{
    struct hits *h = ctx;
    if (h->n < 64)
        h->tags[h->n++] = tag;
}

static int has(const struct hits *h, uint32_t tag)
{
    for (size_t i = 0; i < h->n; i++)
        if (h->tags[i] == tag)
            return 1;
    return 0;
}

static void test_index(void)
{
    const char *pats[] = {"city/{district}/river/{sensor}", "city/+/+/+", "city/#", "city/d07/river/s12",
                          "city/d08/#", "town/{x}"};
    struct cb_topic_pattern *p[6];
    struct cb_topic_index *x = cb_topic_index_new();
    CU_ASSERT_PTR_NOT_NULL_FATAL(x);
    for (int i = 0; i < 6; i++) {
        p[i] = compile(pats[i]);
        CU_ASSERT_PTR_NOT_NULL_FATAL(p[i]);
        CU_ASSERT_EQUAL(cb_topic_index_add(x, p[i], (uint32_t)i), 0);
    }
    struct hits h = {0};
    CU_ASSERT_EQUAL(cb_topic_index_match(x, "city/d07/river/s12", collect, &h), 4);
    CU_ASSERT(has(&h, 0) && has(&h, 1) && has(&h, 2) && has(&h, 3));
    h.n = 0;
    CU_ASSERT_EQUAL(cb_topic_index_match(x, "city/d08/air/a1", collect, &h), 3);
    CU_ASSERT(has(&h, 1) && has(&h, 2) && has(&h, 4));
    h.n = 0;
    CU_ASSERT_EQUAL(cb_topic_index_match(x, "elsewhere/x", collect, &h), 0);
    /* the index agrees with matching each pattern on its own */
    const char *topics[] = {"city", "city/a", "city/a/b", "city/a/river/b", "town/q", "town/q/r", "city/d08"};
    for (size_t t = 0; t < sizeof topics / sizeof topics[0]; t++) {
        h.n = 0;
        cb_topic_index_match(x, topics[t], collect, &h);
        size_t want = 0;
        for (int i = 0; i < 6; i++) {
            int m = cb_topic_pattern_match(p[i], topics[t], NULL, 0) >= 0;
            want += m;
            CU_ASSERT_EQUAL(has(&h, (uint32_t)i), m);
        }
        CU_ASSERT_EQUAL(h.n, want);
    }
    cb_topic_index_free(x);
    for (int i = 0; i < 6; i++)
        cb_topic_pattern_free(p[i]);
}

static void test_index_many(void)
{
    /* 5000 literal patterns: a topic still finds exactly its own */
    enum { N = 5000 };
    struct cb_topic_pattern **p = calloc(N, sizeof *p);
    struct cb_topic_index *x = cb_topic_index_new();
    char buf[64];
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    for (int i = 0; i < N; i++) {
        snprintf(buf, sizeof buf, "city/d%d/river/{sensor}", i);
        p[i] = compile(buf);
        CU_ASSERT_EQUAL(cb_topic_index_add(x, p[i], (uint32_t)i), 0);
    }
    struct hits h = {0};
    CU_ASSERT_EQUAL(cb_topic_index_match(x, "city/d4321/river/s1", collect, &h), 1);
    CU_ASSERT_EQUAL(h.tags[0], 4321);
    cb_topic_index_free(x);
    for (int i = 0; i < N; i++)
        cb_topic_pattern_free(p[i]);
    free(p);
}

void cb_test_suite_topic(void);
void cb_test_suite_topic(void)
{
    CU_pSuite s = CU_add_suite("topic", NULL, NULL);
    CU_add_test(s, "topic: {name} levels bind labels, literals must match, level counts must agree", test_captures);
    CU_add_test(s, "topic: '+' matches one level, '#' the rest (zero or more)", test_wildcards);
    CU_add_test(s, "topic: malformed patterns are refused with a reason", test_bad_patterns);
    CU_add_test(s, "topic: the index returns exactly the patterns that match", test_index);
    CU_add_test(s, "topic: the index finds one pattern among 5000", test_index_many);
}
