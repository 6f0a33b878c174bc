/* The event loop's lag (looplag.h). The recent maximum is kept per second in
 * a ring of CB_LOOPLAG_WINDOW_MS / 1000 slots, each stamped with its second,
 * so reading it costs ten compares and nothing has to expire. */
#include "base/looplag.h"

#include <stdlib.h>

#define SLOTS (CB_LOOPLAG_WINDOW_MS / 1000)

struct cb_looplag {
    uv_timer_t timer; /* first: the close callback gets the handle */
    struct cb_histogram *h;
    int64_t due_ms;   /* monotonic time the armed run is due */
    int64_t last_ms;
    struct {
        int64_t second; /* now_ms / 1000 of the slot's lateness, -1 when empty */
        int64_t max_ms;
    } slot[SLOTS];
};

struct cb_looplag *cb_looplag_new(uv_loop_t *loop, struct cb_histogram *h)
{
    struct cb_looplag *l = calloc(1, sizeof *l);
    if (!l)
        return NULL;
    l->h = h;
    for (int i = 0; i < SLOTS; i++)
        l->slot[i].second = -1;
    uv_timer_init(loop, &l->timer);
    l->timer.data = l;
    return l;
}

void cb_looplag_observe(struct cb_looplag *l, int64_t late_ms, int64_t now_ms)
{
    if (late_ms < 0)
        late_ms = 0;
    l->last_ms = late_ms;
    cb_histogram_observe(l->h, (double)late_ms / 1000.0);
    int64_t sec = now_ms / 1000;
    int i = (int)(sec % SLOTS);
    if (l->slot[i].second != sec) {
        l->slot[i].second = sec;
        l->slot[i].max_ms = 0;
    }
    if (late_ms > l->slot[i].max_ms)
        l->slot[i].max_ms = late_ms;
}

int64_t cb_looplag_recent_max(const struct cb_looplag *l, int64_t now_ms)
{
    int64_t sec = now_ms / 1000, max = 0;
    for (int i = 0; i < SLOTS; i++)
        if (l->slot[i].second > sec - SLOTS && l->slot[i].second <= sec &&
            l->slot[i].max_ms > max)
            max = l->slot[i].max_ms;
    return max;
}

int64_t cb_looplag_last(const struct cb_looplag *l) { return l->last_ms; }

/* Arms the next run. Its due moment is the one libuv computes, from the
 * loop's cached time. */
static void on_timer(uv_timer_t *t);
static void arm(struct cb_looplag *l)
{
    l->due_ms = (int64_t)uv_now(l->timer.loop) + CB_LOOPLAG_INTERVAL_MS;
    uv_timer_start(&l->timer, on_timer, CB_LOOPLAG_INTERVAL_MS, 0);
}

/* One run: how late it is against its due moment, read on the clock (the
 * loop's cached time is as late as the loop), then the next. */
static void on_timer(uv_timer_t *t)
{
    struct cb_looplag *l = t->data;
    int64_t now = (int64_t)(uv_hrtime() / 1000000);
    cb_looplag_observe(l, now - l->due_ms, now);
    arm(l);
}

void cb_looplag_start(struct cb_looplag *l) { arm(l); }

static void on_closed(uv_handle_t *h) { free(h->data); }

void cb_looplag_close(struct cb_looplag *l)
{
    if (!l)
        return;
    uv_timer_stop(&l->timer);
    uv_close((uv_handle_t *)&l->timer, on_closed);
}
