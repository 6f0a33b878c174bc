/* Benchmark of the webhook outbox's scheduling: what queueing one more
 * notification costs the loop with N already queued, for N = 100 (the
 * baseline, in the same run), 10,000 and 100,000. Every row is its own alert
 * instance (its own lane: the case where a list scan is worst) and waits for
 * a retry an hour away, as rows do while the receiver is down, so nothing is
 * sent: the figure is the scheduling alone (the lane, the heap, the retry
 * timer). It should stay flat as N grows (O(log N)); the list scan it
 * replaced grew with N squared.
 *
 * Prints `key value [baseline]` lines. Usage: bench_outbox (no arguments;
 * BENCH_QUICK=1 stops at 10,000). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "alerts/alerts_int.h"
#include "base/clock.h"
#include "base/log.h"
#include "storage/alert_store.h"
#include "tests/support/store_fixture.h"

#define PROBE 2000 /* rows queued per measurement */

static int64_t next_seq = 1;

/* Queues n rows, each a new alert instance, due in an hour. */
static int queue_rows(struct alerts__webhook *w, long n, int64_t due)
{
    for (long i = 0; i < n; i++) {
        char id[48];
        int64_t seq = next_seq++;
        snprintf(id, sizeof id, "bench/n=%lld", (long long)seq);
        struct cb_outbox_row row = {.seq = seq, .channel = "hook", .transition_seq = seq,
                                    .alert_id = id, .content_type = "application/json",
                                    .body = "{\"state\":\"firing\"}", .next_attempt = due};
        if (alerts__webhook_queue(w, &row))
            return -1;
    }
    return 0;
}

/* Microseconds per queued row at the outbox's present size: the best of
 * three rounds of PROBE rows (a shared machine only ever slows a round). */
static double measure(struct alerts__webhook *w, int64_t due)
{
    double best = 1e30;
    for (int round = 0; round < 3; round++) {
        int64_t t0 = cb_mono_us();
        if (queue_rows(w, PROBE, due))
            return -1;
        double us = (double)(cb_mono_us() - t0) / PROBE;
        if (us < best)
            best = us;
    }
    return best;
}

static void on_closed(void *ctx) { *(int *)ctx = 1; }

int main(void)
{
    cb_log_threshold = CB_LOG_ERROR;
    int quick = getenv("BENCH_QUICK") && strcmp(getenv("BENCH_QUICK"), "1") == 0;
    char dir[] = "/tmp/cb_bench_outbox_XXXXXX", db[80], err[256] = "";
    if (!mkdtemp(dir))
        return 1;
    snprintf(db, sizeof db, "%s/a.db", dir);
    if (cb_t_create_schema(db))
        return 1;
    struct cb_alert_store *store = cb_alert_store_open(db, err, sizeof err);
    if (!store) {
        fprintf(stderr, "bench_outbox: %s\n", err);
        return 1;
    }
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct cb_channel chan = {.name = "hook", .type = CB_CHANNEL_WEBHOOK,
                              .format = CB_FORMAT_JSON, .url = "http://127.0.0.1:9/none"};
    uint64_t sent = 0, failed = 0;
    struct alerts__webhook_opts o = {.timeout_ms = 1000, .retry_min_ms = 1000,
                                     .retry_max_ms = 300000, .clock = &cb_clock_wall,
                                     .store = store, .channels = &chan, .nchannels = 1,
                                     .sent = &sent, .failed = &failed};
    struct alerts__webhook *w = alerts__webhook_new(&loop, &o, err, sizeof err);
    if (!w) {
        fprintf(stderr, "bench_outbox: %s\n", err);
        return 1;
    }
    int64_t due = cb_wall_ms() + 3600 * 1000;
    static const long sizes[] = {100, 10000, 100000};
    double us[3] = {0};
    int nsizes = quick ? 2 : 3;
    for (int i = 0; i < nsizes; i++) {
        long have = (long)alerts__webhook_pending(w);
        if (queue_rows(w, sizes[i] - have, due))
            return 1;
        us[i] = measure(w, due);
    }
    printf("outbox_schedule_us_at_100 %.3f\n", us[0]);
    for (int i = 1; i < nsizes; i++) {
        printf("outbox_schedule_us_at_%ld %.3f %.3f\n", sizes[i], us[i], us[0]);
        printf("outbox_schedule_%ld_vs_100_ratio %.2f\n", sizes[i], us[i] / us[0]);
    }
    printf("outbox_schedule_queued_at_end %zu\n", alerts__webhook_pending(w));
    int closed = 0;
    alerts__webhook_close(w, on_closed, &closed);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    cb_alert_store_close(store);
    cb_t_remove_dir(dir);
    return closed && sent == 0 ? 0 : 1;
}
