/* The harness itself: a private broker, a publisher and a subscriber, a
 * restart that keeps a persistent session, a process's exit status. */
#include <signal.h>
#include <sqlite3.h>
#include <string.h>

#include "tests/support/harness.h"

static void test_pub_sub_and_restart(void)
{
    struct cb_h_broker *b = cb_h_broker_start(NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    struct cb_h_mqtt_opts so = {.client_id = "h-persistent-sub", .persistent = 1};
    struct cb_h_sub *s = cb_h_sub_start(cb_h_broker_url(b), "t/#", 1, &so);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    struct cb_h_pub *p = cb_h_pub_connect(cb_h_broker_url(b), NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    CU_ASSERT_EQUAL(cb_h_pub_str(p, "t/a", "one", 1), 0);
    CU_ASSERT_EQUAL(cb_h_pub_str(p, "x/a", "other", 0), 0);
    CU_ASSERT_TRUE(cb_h_sub_wait_count(s, 1, 5000));
    struct cb_h_msg m;
    CU_ASSERT_EQUAL_FATAL(cb_h_sub_get(s, 0, &m), 0);
    CU_ASSERT_STRING_EQUAL(m.topic, "t/a");
    CU_ASSERT_STRING_EQUAL(m.payload, "one");
    CU_ASSERT_EQUAL(m.qos, 1);

    /* The session survives a broker restart: a message published while the
     * subscriber is away is delivered when it comes back. */
    cb_h_sub_stop(s);
    CU_ASSERT_EQUAL_FATAL(cb_h_broker_restart(b), 0);
    CU_ASSERT_EQUAL(cb_h_publish(cb_h_broker_url(b), "t/b", "two", 3, 1), 0);
    struct cb_h_sub *s2 = cb_h_sub_start(cb_h_broker_url(b), "t/#", 1, &so);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s2);
    CU_ASSERT_TRUE(cb_h_sub_wait_count(s2, 1, 5000));
    CU_ASSERT_EQUAL_FATAL(cb_h_sub_get(s2, 0, &m), 0);
    CU_ASSERT_STRING_EQUAL(m.topic, "t/b");
}

static void test_process_exit_status(void)
{
    const char *argv[] = {"/bin/sh", "-c", "echo oops >&2; exit 3", NULL};
    struct cb_h_proc *p = cb_h_spawn("sh", "/bin/sh", argv, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    CU_ASSERT_EQUAL(cb_h_proc_wait(p, 5000), 3);
    CU_ASSERT_STRING_EQUAL(cb_h_proc_stderr(p), "oops\n");
    const char *argv2[] = {"/bin/sleep", "30", NULL};
    struct cb_h_proc *q = cb_h_spawn("sleep", "/bin/sleep", argv2, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(q);
    CU_ASSERT_EQUAL(cb_h_proc_wait(q, 50), -1);
    CU_ASSERT_EQUAL(cb_h_proc_signal(q, SIGTERM), 0);
    CU_ASSERT_EQUAL(cb_h_proc_wait(q, 5000), 128 + SIGTERM);
}

static void test_sqlite_scalar(void)
{
    const char *path = cb_h_pathf("x.db");
    sqlite3 *db = NULL;
    CU_ASSERT_EQUAL_FATAL(sqlite3_open(path, &db), SQLITE_OK);
    CU_ASSERT_EQUAL(sqlite3_exec(db, "CREATE TABLE t(a); INSERT INTO t VALUES (1),(2),(5);",
                                 NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    CU_ASSERT_EQUAL(cb_h_sql_count(path, "t", NULL), 3);
    CU_ASSERT_EQUAL(cb_h_sql_count(path, "t", "a > 1"), 2);
    double s = 0;
    CU_ASSERT_EQUAL(cb_h_sql_double(path, &s, "SELECT sum(a) FROM t"), 0);
    CU_ASSERT_DOUBLE_EQUAL(s, 8.0, 1e-9);
    CU_ASSERT_EQUAL(cb_h_sql_count(cb_h_pathf("absent.db"), "t", NULL), -1);
}

void cb_test_suite_harness(void);
void cb_test_suite_harness(void)
{
    CU_pSuite s = cb_h_add_suite("harness");
    CU_add_test(s, "harness: broker restart keeps a persistent session", test_pub_sub_and_restart);
    CU_add_test(s, "harness: exit status, stderr capture, signal", test_process_exit_status);
    CU_add_test(s, "harness: scalar queries on a read-only SQLite file", test_sqlite_scalar);
}
