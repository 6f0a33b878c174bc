/* The event loop's lag: how late the loop runs what is due. One repeating uv
 * timer (every CB_LOOPLAG_INTERVAL_MS) measures its own lateness, from the
 * moment it was due to the moment it runs: a callback that keeps the loop
 * busy for a second makes the next run a second late, whatever module it was
 * in. Each lateness goes into a histogram (/metrics), and the largest of the
 * last CB_LOOPLAG_WINDOW_MS is kept for /api/health, which calls the engine
 * degraded while it is over CB_LOOPLAG_DEGRADED_MS.
 *
 * Loop thread only, except the histogram (atomic, read when /metrics is
 * rendered). Handles live start -> close(cb); the struct is freed in the
 * close callback. */
#ifndef CB_BASE_LOOPLAG_H
#define CB_BASE_LOOPLAG_H

#include <stdint.h>
#include <uv.h>

#include "base/metrics.h"

#define CB_LOOPLAG_INTERVAL_MS 100
#define CB_LOOPLAG_WINDOW_MS 10000
#define CB_LOOPLAG_DEGRADED_MS 1000

struct cb_looplag;

/* Creates the monitor. `h` (may be NULL) receives every lateness in seconds.
 * Nothing runs until cb_looplag_start. NULL on OOM. */
struct cb_looplag *cb_looplag_new(uv_loop_t *loop, struct cb_histogram *h);
/* Arms the timer (first run CB_LOOPLAG_INTERVAL_MS from now). */
void cb_looplag_start(struct cb_looplag *l);
/* Stops the timer and closes its handle; the struct is freed in the close
 * callback (after this, l must not be used). NULL is allowed. */
void cb_looplag_close(struct cb_looplag *l);

/* Records one lateness of late_ms, measured at now_ms (monotonic): what the
 * timer does on each run; tests call it with times of their own. */
void cb_looplag_observe(struct cb_looplag *l, int64_t late_ms, int64_t now_ms);
/* The largest lateness recorded in the CB_LOOPLAG_WINDOW_MS before now_ms
 * (0 when none). */
int64_t cb_looplag_recent_max(const struct cb_looplag *l, int64_t now_ms);
/* The last lateness recorded, ms. */
int64_t cb_looplag_last(const struct cb_looplag *l);

#endif
