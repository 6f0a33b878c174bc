/* The loop-lag monitor's bookkeeping, with times given by the test (the timer
 * itself only feeds it the clock). */
#include <CUnit/CUnit.h>
#include <string.h>
#include <uv.h>

#include "base/looplag.h"

void cb_test_suite_looplag(void);

static uv_loop_t loop;

static struct cb_looplag *new_lag(void)
{
    CU_ASSERT_EQUAL_FATAL(uv_loop_init(&loop), 0);
    struct cb_looplag *l = cb_looplag_new(&loop, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(l);
    return l;
}

static void close_lag(struct cb_looplag *l)
{
    cb_looplag_close(l);
    uv_run(&loop, UV_RUN_DEFAULT);
    CU_ASSERT_EQUAL(uv_loop_close(&loop), 0);
}

static void test_recent_max_window(void)
{
    struct cb_looplag *l = new_lag();
    int64_t t = 1000000; /* ms */
    CU_ASSERT_EQUAL(cb_looplag_recent_max(l, t), 0);
    cb_looplag_observe(l, 3, t);
    cb_looplag_observe(l, 1500, t + 100); /* a 1.5 s stall */
    cb_looplag_observe(l, 2, t + 1700);
    CU_ASSERT_EQUAL(cb_looplag_last(l), 2);
    CU_ASSERT_EQUAL(cb_looplag_recent_max(l, t + 1700), 1500);
    /* still within the window 9.9 s later, gone after it */
    CU_ASSERT_EQUAL(cb_looplag_recent_max(l, t + 9900), 1500);
    cb_looplag_observe(l, 4, t + 10000);
    CU_ASSERT_EQUAL(cb_looplag_recent_max(l, t + 10000), 4);
    /* a slot reused a window later starts from zero */
    cb_looplag_observe(l, 7, t + 20050);
    CU_ASSERT_EQUAL(cb_looplag_recent_max(l, t + 20050), 7);
    /* an early run counts as on time */
    cb_looplag_observe(l, -5, t + 20100);
    CU_ASSERT_EQUAL(cb_looplag_last(l), 0);
    close_lag(l);
}

static void test_histogram_gets_seconds(void)
{
    struct cb_histogram *h = cb_metrics_histogram("citybrain_test_lag_seconds", "", "test",
                                                  cb_metrics_latency_bounds,
                                                  cb_metrics_latency_nbounds);
    CU_ASSERT_PTR_NOT_NULL_FATAL(h);
    CU_ASSERT_EQUAL_FATAL(uv_loop_init(&loop), 0);
    struct cb_looplag *l = cb_looplag_new(&loop, h);
    cb_looplag_observe(l, 1500, 5000);
    struct cb_strbuf out;
    cb_strbuf_init(&out);
    cb_metrics_render(&out);
    CU_ASSERT_PTR_NOT_NULL(strstr(out.data, "citybrain_test_lag_seconds_bucket{le=\"1\"} 0"));
    CU_ASSERT_PTR_NOT_NULL(strstr(out.data, "citybrain_test_lag_seconds_bucket{le=\"2.5\"} 1"));
    CU_ASSERT_PTR_NOT_NULL(strstr(out.data, "citybrain_test_lag_seconds_sum 1.5"));
    cb_strbuf_free(&out);
    cb_metrics_free();
    close_lag(l);
}

void cb_test_suite_looplag(void)
{
    CU_pSuite s = CU_add_suite("looplag", NULL, NULL);
    CU_add_test(s, "looplag: the largest lateness of the last 10 s is kept, then forgotten",
                test_recent_max_window);
    CU_add_test(s, "looplag: each lateness goes into the histogram in seconds",
                test_histogram_gets_seconds);
}
