/* Faults that must cost nothing, against the real daemon and a real broker:
 * a giant payload is refused before citybrain copies it (and, with MQTT 5,
 * never sent by the broker at all). */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tests/support/daemon_itest.h"

void cb_test_suite_faults(void);

#define MB (1024L * 1024L)

/* A "Vm...:" line of /proc/PID/status in bytes, or -1. */
static long proc_status_bytes(pid_t pid, const char *field)
{
    const char *text = cb_h_read_file(cb_h_strf("/proc/%d/status", (int)pid), NULL);
    const char *p = text ? strstr(text, field) : NULL;
    if (!p)
        return -1;
    return strtol(p + strlen(field) + 1, NULL, 10) * 1024L;
}

/* Bytes of the files in dir (the journal's segments). */
static long dir_bytes(const char *dir)
{
    long total = 0;
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        struct stat st;
        if (e->d_name[0] != '.' && stat(cb_h_strf("%s/%s", dir, e->d_name), &st) == 0)
            total += (long)st.st_size;
    }
    if (d)
        closedir(d);
    return total;
}

/* One daemon (MQTT version `version`) against broker b: a 50 MB QoS 1
 * payload goes by, and the engine's peak memory, its memory afterwards and
 * its journal stay within bounds while the next normal message is stored.
 * peak_bound: how much VmHWM may grow; rss_bound: how much VmRSS may have
 * grown once it is over (see the callers). */
static void giant_payload_round(struct cb_h_broker *b, const char *version, long peak_bound,
                                long rss_bound, int reaches_engine)
{
    const char *db = cb_h_pathf("giant-%s.db", version);
    int port = cb_h_free_port();
    const char *args[] = {"run", "--broker", cb_h_broker_url(b), "--db", db, "--client-id",
                          cb_h_strf("cb-itest-giant-%s", version), "--qos", "1", "--http",
                          cb_h_strf("127.0.0.1:%d", port), "--set",
                          cb_h_strf("mqtt.version=%s", version), "--set",
                          "storage.commit_interval=100ms", NULL};
    /* ASan keeps freed memory in a quarantine, which would read as a leak of
     * RSS here: freed memory goes back at once for this process. */
    const char *env[] = {"ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:halt_on_error=1:"
                         "quarantine_size_mb=0",
                         NULL};
    struct cb_h_proc *cb = cbd_start(args, env, port);
    CU_ASSERT_PTR_NOT_NULL_FATAL(cb);
    pid_t pid = cb_h_proc_pid(cb);
    struct cb_h_pub *pub = cb_h_pub_connect(cb_h_broker_url(b), NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(pub);
    const int64_t t0 = cb_h_now_ms() - 10000;
    /* warm up: a normal message through every stage */
    CU_ASSERT_EQUAL(cb_h_pub_str(pub, "city/d01/river/s01",
                                 cb_h_strf("{\"ts\":%lld,\"level\":1}", (long long)t0), 1),
                    0);
    CU_ASSERT_TRUE_FATAL(cbd_wait_rows(db, 1, CBD_TIMEOUT_MS));
    long hwm0 = proc_status_bytes(pid, "VmHWM:");
    long rss0 = proc_status_bytes(pid, "VmRSS:");
    CU_ASSERT_FATAL(hwm0 > 0 && rss0 > 0);

    size_t big = 50 * MB;
    char *payload = malloc(big);
    CU_ASSERT_PTR_NOT_NULL_FATAL(payload);
    memset(payload, '7', big);
    CU_ASSERT_EQUAL(cb_h_pub_send(pub, "city/d01/river/s01", payload, big, 1, 0), 0);
    free(payload);
    if (reaches_engine) /* MQTT 3.1.1: citybrain refuses it and counts it */
        CU_ASSERT_TRUE(cbd_wait_metric(
            port, "citybrain_ingest_rejected_total{reason=\"payload_too_large\"}", 1,
            CBD_TIMEOUT_MS));
    /* the engine keeps working: the next message is stored */
    CU_ASSERT_EQUAL(cb_h_pub_str(pub, "city/d01/river/s01",
                                 cb_h_strf("{\"ts\":%lld,\"level\":2}", (long long)t0 + 1), 1),
                    0);
    CU_ASSERT_TRUE(cbd_wait_rows(db, 2, CBD_TIMEOUT_MS));
    long hwm1 = proc_status_bytes(pid, "VmHWM:");
    long rss1 = proc_status_bytes(pid, "VmRSS:");
    long journal = dir_bytes(cb_h_strf("%s.journal", db));
    fprintf(stderr, " [MQTT %s: VmHWM %ld -> %ld MB, VmRSS %ld -> %ld MB, journal %ld bytes] ",
            version, hwm0 / MB, hwm1 / MB, rss0 / MB, rss1 / MB, journal);
    CU_ASSERT(hwm1 - hwm0 < peak_bound);
    CU_ASSERT(rss1 - rss0 < rss_bound);
    CU_ASSERT(journal < 64 * 1024);
    int64_t stored = cb_h_sql_count(db, "samples", NULL);
    CU_ASSERT_EQUAL(stored, 2);
    cb_h_pub_disconnect(pub);
    CU_ASSERT_EQUAL(cbd_stop(cb), 0);
}

static void test_giant_payload_refused_before_copies(void)
{
    struct cb_h_broker *b = cb_h_broker_start(NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    /* MQTT 3.1.1: Paho reads the packet and copies the payload once before
     * any callback (about 100 MB at the peak), and keeps its read buffer at
     * the largest packet it has read (50 MB afterwards, Paho's SocketBuffer).
     * citybrain's own copies (the hand-off node, the journal record, kept at
     * its largest) would add 100 MB to the peak and 50 MB afterwards. */
    giant_payload_round(b, "3.1.1", 130 * MB, 66 * MB, 1);
    /* MQTT 5: CONNECT announces the Maximum Packet Size; the broker drops the
     * message for us and nothing of it reaches the engine. */
    giant_payload_round(b, "5", 16 * MB, 16 * MB, 0);
}

void cb_test_suite_faults(void)
{
    CU_pSuite s = cb_h_add_suite("faults");
    CU_add_test(s, "faults: a 50 MB payload is refused before citybrain copies or journals it; "
                   "with MQTT 5 the broker never sends it",
                test_giant_payload_refused_before_copies);
}
