/* Arrival stamps (ingest/stamp.c): the event time of samples without one,
 * unique per topic so that none is taken for a redelivery of another. */
#include <CUnit/CUnit.h>
#include <stdio.h>
#include <string.h>

#include "ingest/ingest.h"

void cb_test_suite_stamps(void);

static int64_t take(struct cb_stamps *s, const char *topic, int64_t now)
{
    return cb_stamps_take(s, topic, strlen(topic), now);
}

static void test_same_millisecond_gets_consecutive(void)
{
    struct cb_stamps *s = cb_stamps_new();
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    for (int i = 0; i < 40; i++)
        CU_ASSERT_EQUAL(take(s, "city/d01/noise/n1", 1000), 1000 + i);
    /* ahead of the clock until the topic is quieter than the clock */
    CU_ASSERT_EQUAL(take(s, "city/d01/noise/n1", 1010), 1040);
    CU_ASSERT_EQUAL(take(s, "city/d01/noise/n1", 2000), 2000);
    CU_ASSERT_EQUAL(take(s, "city/d01/noise/n1", 2001), 2001);
    cb_stamps_free(s);
}

static void test_topics_are_independent(void)
{
    struct cb_stamps *s = cb_stamps_new();
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    CU_ASSERT_EQUAL(take(s, "a", 1000), 1000);
    CU_ASSERT_EQUAL(take(s, "b", 1000), 1000);
    CU_ASSERT_EQUAL(take(s, "a", 1000), 1001);
    CU_ASSERT_EQUAL(take(s, "ab", 1000), 1000);
    cb_stamps_free(s);
}

static void test_seen_stamps_are_not_given_again(void)
{
    struct cb_stamps *s = cb_stamps_new();
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    /* before start: a replayed record stamped ahead of the new clock */
    cb_stamps_seen(s, "a", 1, 5000);
    cb_stamps_seen(s, "a", 1, 4000); /* an older one changes nothing */
    CU_ASSERT_EQUAL(take(s, "a", 4990), 5001);
    CU_ASSERT_EQUAL(take(s, "b", 6000), 6000);
    cb_stamps_seen(s, "c", 1, 100); /* behind the clock: cannot collide */
    CU_ASSERT_EQUAL(take(s, "c", 6000), 6000);
    cb_stamps_free(s);
}

/* Many topics in one millisecond make the table grow and rebuild; every
 * topic keeps its last stamp through that, and old ones are forgotten only
 * once the clock has passed them. */
static void test_many_topics_keep_their_stamps(void)
{
    struct cb_stamps *s = cb_stamps_new();
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    char topic[32];
    int ok = 1;
    for (int round = 0; round < 3; round++)
        for (int i = 0; i < 5000; i++) {
            snprintf(topic, sizeof topic, "city/s%05d", i);
            ok &= take(s, topic, 1000) == 1000 + round;
        }
    CU_ASSERT(ok);
    /* the clock moves on: fresh stamps for all, then the same ms again */
    for (int round = 0; round < 2; round++)
        for (int i = 0; i < 5000; i++) {
            snprintf(topic, sizeof topic, "city/s%05d", i);
            ok &= take(s, topic, 9000) == 9000 + round;
        }
    CU_ASSERT(ok);
    cb_stamps_free(s);
}

void cb_test_suite_stamps(void)
{
    CU_pSuite s = CU_add_suite("stamps", NULL, NULL);
    CU_add_test(s, "stamps: messages of one topic in the same millisecond get consecutive ones",
                test_same_millisecond_gets_consecutive);
    CU_add_test(s, "stamps: each topic has its own stamps", test_topics_are_independent);
    CU_add_test(s, "stamps: a stamp seen before start (journal replay) is not given again",
                test_seen_stamps_are_not_given_again);
    CU_add_test(s, "stamps: 5,000 topics in one millisecond each keep their last stamp",
                test_many_topics_keep_their_stamps);
}
