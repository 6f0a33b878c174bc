/* Sliding event-time windows and their aggregates.
 *
 * A window holds the samples of one series with ts in (now - width, now], in
 * time order, in a ring buffer of (int64 ts, double value): 16 bytes per
 * sample; it grows by half and shrinks by half when a quarter full, so the
 * slack stays small. min/max add two deques of 32-bit sequence numbers with
 * their own (power-of-two) capacity: on real data they stay far shorter than
 * the window (a monotonic run is the worst case). Each sample gets a sequence
 * number (seq0 + its offset in the ring); the deques hold sequence numbers,
 * truncated to 32 bits, which is exact while a window holds < 2^32 samples.
 *
 * In-order samples (the common case) are appended at the tail and every
 * accumulator is updated in O(1). A sample older than the tail is inserted at
 * its place (shifting the few newer samples) and the deques are rebuilt:
 * O(n), but out-of-order arrival is the exception. */
#include "rules/rules_int.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static inline uint32_t slot(const struct rules__window *w, uint32_t i)
{
    uint32_t x = w->head + i;
    return x >= w->cap ? x - w->cap : x;
}
#define AT(w, i) ((w)->buf[slot((w), (i))])

/* Ring offset of sequence number seq (truncated). */
static inline uint32_t off_of(const struct rules__window *w, uint32_t seq)
{
    return seq - (uint32_t)w->seq0;
}

/* ---- accumulators ----------------------------------------------------------- */

static void moments_add(struct rules__window *w, uint32_t seq, double v)
{
    (void)seq;
    if (w->n == 1) /* the first sample: shift by it, so sums stay small */
        w->shift = v, w->sum = 0, w->sumsq = 0;
    double d = v - w->shift;
    w->sum += d;
    w->sumsq += d * d;
}

static void moments_rebuild(struct rules__window *w)
{
    w->sum = w->sumsq = 0;
    w->removed = 0;
    if (w->n == 0)
        return;
    w->shift = AT(w, 0).v;
    for (uint32_t i = 0; i < w->n; i++) {
        double d = AT(w, i).v - w->shift;
        w->sum += d;
        w->sumsq += d * d;
    }
}

static void moments_remove(struct rules__window *w, uint32_t seq, double v)
{
    (void)seq;
    double d = v - w->shift;
    w->sum -= d;
    w->sumsq -= d * d;
    /* Subtraction accumulates rounding error: recompute from the ring now
     * and then, which costs O(1) amortised. */
    if (++w->removed >= 4096 || w->n <= 1)
        w->removed = 4096; /* rebuilt by window_remove_front once n is updated */
}

/* A deque of sequence numbers in a ring of w->cap entries. `keep(a, b)` says
 * whether an older value a stays ahead of a newer value b. */
static void deque_push(struct rules__window *w, uint32_t *dq, uint32_t *head, uint32_t *n,
                       uint32_t seq, double v, int is_min)
{
    while (*n > 0) {
        uint32_t last = dq[(*head + *n - 1) & (w->dcap - 1)];
        double lv = AT(w, off_of(w, last)).v;
        if (is_min ? lv < v : lv > v)
            break;
        (*n)--;
    }
    dq[(*head + *n) & (w->dcap - 1)] = seq;
    (*n)++;
}

static void deque_pop(struct rules__window *w, uint32_t *dq, uint32_t *head, uint32_t *n,
                      uint32_t seq)
{
    if (*n > 0 && dq[*head] == seq) {
        *head = (*head + 1) & (w->dcap - 1);
        (*n)--;
    }
}

static void min_add(struct rules__window *w, uint32_t seq, double v)
{
    deque_push(w, w->dmin, &w->dmin_head, &w->dmin_n, seq, v, 1);
}
static void max_add(struct rules__window *w, uint32_t seq, double v)
{
    deque_push(w, w->dmax, &w->dmax_head, &w->dmax_n, seq, v, 0);
}
static void min_remove(struct rules__window *w, uint32_t seq, double v)
{
    (void)v;
    deque_pop(w, w->dmin, &w->dmin_head, &w->dmin_n, seq);
}
static void max_remove(struct rules__window *w, uint32_t seq, double v)
{
    (void)v;
    deque_pop(w, w->dmax, &w->dmax_head, &w->dmax_n, seq);
}
static void min_rebuild(struct rules__window *w)
{
    w->dmin_head = w->dmin_n = 0;
    for (uint32_t i = 0; i < w->n; i++)
        min_add(w, (uint32_t)(w->seq0 + i), AT(w, i).v);
}
static void max_rebuild(struct rules__window *w)
{
    w->dmax_head = w->dmax_n = 0;
    for (uint32_t i = 0; i < w->n; i++)
        max_add(w, (uint32_t)(w->seq0 + i), AT(w, i).v);
}

static const struct rules__accvt accs[] = {
    {WF_MOMENTS, moments_add, moments_remove, moments_rebuild},
    {WF_MINMAX, min_add, min_remove, min_rebuild},
    {WF_MINMAX, max_add, max_remove, max_rebuild},
};
#define NACCS (sizeof accs / sizeof accs[0])

/* ---- aggregates ---------------------------------------------------------------- */

static double v_avg(const struct rules__window *w, double p, double *s)
{
    (void)p, (void)s;
    return w->n ? w->shift + w->sum / w->n : NAN;
}
static double v_sum(const struct rules__window *w, double p, double *s)
{
    (void)p, (void)s;
    return w->n ? w->shift * w->n + w->sum : NAN;
}
static double v_count(const struct rules__window *w, double p, double *s)
{
    (void)p, (void)s;
    return w->n ? (double)w->n : NAN;
}
static double v_min(const struct rules__window *w, double p, double *s)
{
    (void)p, (void)s;
    return w->n && w->dmin_n ? AT(w, off_of(w, w->dmin[w->dmin_head])).v : NAN;
}
static double v_max(const struct rules__window *w, double p, double *s)
{
    (void)p, (void)s;
    return w->n && w->dmax_n ? AT(w, off_of(w, w->dmax[w->dmax_head])).v : NAN;
}
static double v_first(const struct rules__window *w, double p, double *s)
{
    (void)p, (void)s;
    return w->n ? AT(w, 0).v : NAN;
}
static double v_last(const struct rules__window *w, double p, double *s)
{
    (void)p, (void)s;
    return w->n ? AT(w, w->n - 1).v : NAN;
}
static double v_stddev(const struct rules__window *w, double p, double *s)
{
    (void)p, (void)s;
    if (!w->n)
        return NAN;
    double m = w->sum / w->n;
    double var = w->sumsq / w->n - m * m;
    return var > 0 ? sqrt(var) : 0.0;
}
static double v_delta(const struct rules__window *w, double p, double *s)
{
    (void)p, (void)s;
    return w->n ? AT(w, w->n - 1).v - AT(w, 0).v : NAN;
}
static double v_rate(const struct rules__window *w, double p, double *s)
{
    (void)p, (void)s;
    if (w->n < 2)
        return NAN;
    int64_t dt = AT(w, w->n - 1).ts - AT(w, 0).ts;
    if (dt <= 0)
        return NAN;
    return (AT(w, w->n - 1).v - AT(w, 0).v) / ((double)dt / 1000.0);
}

/* k-th smallest of a[0..n) (quickselect, Hoare partition; a is reordered). */
static double select_kth(double *a, size_t n, size_t k)
{
    size_t lo = 0, hi = n - 1;
    while (lo < hi) {
        double pivot = a[lo + (hi - lo) / 2];
        size_t i = lo, j = hi;
        while (i <= j) {
            while (a[i] < pivot)
                i++;
            while (a[j] > pivot)
                j--;
            if (i <= j) {
                double t = a[i];
                a[i] = a[j];
                a[j] = t;
                i++;
                if (j == 0)
                    break;
                j--;
            }
        }
        if (k <= j)
            hi = j;
        else if (k >= i)
            lo = i;
        else
            return a[k];
    }
    return a[k];
}

/* Percentile P (0..100) with linear interpolation between closest ranks
 * (the "linear" method of numpy). */
static double v_percentile(const struct rules__window *w, double p, double *s)
{
    if (!w->n || !(p >= 0 && p <= 100))
        return NAN;
    for (uint32_t i = 0; i < w->n; i++)
        s[i] = AT(w, i).v;
    double rank = p / 100.0 * (w->n - 1);
    size_t lo = (size_t)floor(rank);
    double a = select_kth(s, w->n, lo);
    if (lo + 1 >= w->n || rank == (double)lo)
        return a;
    /* the next rank is the minimum of the upper part after selection */
    double b = s[lo + 1];
    for (size_t i = lo + 1; i < w->n; i++)
        if (s[i] < b)
            b = s[i];
    return a + (b - a) * (rank - (double)lo);
}

const struct rules__aggvt rules__aggs[AGG__COUNT] = {
    [AGG_AVG] = {"avg", WF_MOMENTS, v_avg},
    [AGG_MIN] = {"min", WF_MINMAX, v_min},
    [AGG_MAX] = {"max", WF_MINMAX, v_max},
    [AGG_SUM] = {"sum", WF_MOMENTS, v_sum},
    [AGG_COUNT] = {"count", 0, v_count},
    [AGG_FIRST] = {"first", 0, v_first},
    [AGG_LAST] = {"last", 0, v_last},
    [AGG_STDDEV] = {"stddev", WF_MOMENTS, v_stddev},
    [AGG_DELTA] = {"delta", 0, v_delta},
    [AGG_RATE] = {"rate", 0, v_rate},
    [AGG_PERCENTILE] = {"percentile", 0, v_percentile},
    [AGG_SHARE] = {"share", 0, NULL},
    [AGG_ANY] = {"any", 0, NULL},
    [AGG_ALL] = {"all", 0, NULL},
};

/* ---- the window ------------------------------------------------------------------ */

/* Creates an empty window. Returns NULL on OOM; free with rules__window_free. */
struct rules__window *rules__window_new(int64_t width_ms, unsigned flags)
{
    struct rules__window *w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    w->width_ms = width_ms;
    w->flags = flags;
    return w;
}

void rules__window_free(struct rules__window *w)
{
    if (!w)
        return;
    free(w->buf);
    free(w->dmin);
    free(w->dmax);
    free(w);
}

size_t rules__window_bytes(const struct rules__window *w)
{
    size_t b = sizeof *w + (size_t)w->cap * sizeof *w->buf;
    b += 2 * (size_t)w->dcap * sizeof(uint32_t);
    return b;
}

static void rebuild_all(struct rules__window *w)
{
    for (size_t i = 0; i < NACCS; i++)
        if (w->flags & accs[i].flag)
            accs[i].rebuild(w);
}

/* Re-lays the ring into `cap` slots. 0 or -1 on OOM.
 *
 * The free slots are written too. A large ring is a fresh mapping whose
 * pages become resident only as the head first reaches them: up to a third
 * of the ring, reached (cap - n) / rate seconds after the growth, half an
 * hour for a 30-minute window. The process's resident memory then creeps up
 * long after the windows are full and looks like a leak (the soak saw it);
 * written now, it is what the allocator holds from the start, for the same
 * O(cap) this copy costs anyway. */
static int resize(struct rules__window *w, uint32_t cap)
{
    struct rules__wpt *nb = malloc((size_t)cap * sizeof *nb);
    if (!nb)
        return -1;
    for (uint32_t i = 0; i < w->n; i++)
        nb[i] = AT(w, i);
    memset(nb + w->n, 0, (size_t)(cap - w->n) * sizeof *nb);
    free(w->buf);
    w->buf = nb;
    w->cap = cap;
    w->head = 0;
    return 0;
}

/* Re-lays both deques into dcap (a power of two) entries. 0 or -1 on OOM. */
static int resize_deques(struct rules__window *w, uint32_t dcap)
{
    uint32_t *nmin = malloc((size_t)dcap * sizeof *nmin);
    uint32_t *nmax = malloc((size_t)dcap * sizeof *nmax);
    if (!nmin || !nmax) {
        free(nmin);
        free(nmax);
        return -1;
    }
    for (uint32_t i = 0; i < w->dmin_n; i++)
        nmin[i] = w->dmin[(w->dmin_head + i) & (w->dcap - 1)];
    for (uint32_t i = 0; i < w->dmax_n; i++)
        nmax[i] = w->dmax[(w->dmax_head + i) & (w->dcap - 1)];
    free(w->dmin);
    free(w->dmax);
    w->dmin = nmin;
    w->dmax = nmax;
    w->dcap = dcap;
    w->dmin_head = w->dmax_head = 0;
    return 0;
}

/* Makes room for `need` entries in each deque (when min/max are kept). */
static int ensure_deques(struct rules__window *w, uint32_t need)
{
    if (!(w->flags & WF_MINMAX) || need <= w->dcap)
        return 0;
    uint32_t c = w->dcap ? w->dcap : 8;
    while (c < need)
        c *= 2;
    return resize_deques(w, c);
}

int rules__window_add_flags(struct rules__window *w, unsigned flags)
{
    if ((w->flags | flags) == w->flags)
        return 0;
    unsigned old = w->flags;
    w->flags |= flags;
    if ((flags & WF_MINMAX) && !(old & WF_MINMAX)) {
        w->dmin_n = w->dmax_n = 0;
        if (ensure_deques(w, w->n + 1) < 0) {
            w->flags = old;
            return -1;
        }
    }
    rebuild_all(w);
    return 0;
}

static void remove_front(struct rules__window *w)
{
    struct rules__wpt p = AT(w, 0);
    uint32_t seq = (uint32_t)w->seq0;
    for (size_t i = 0; i < NACCS; i++)
        if (w->flags & accs[i].flag)
            accs[i].remove(w, seq, p.v);
    w->head = w->head + 1 == w->cap ? 0 : w->head + 1;
    w->seq0++;
    w->n--;
    if ((w->flags & WF_MOMENTS) && w->removed >= 4096)
        moments_rebuild(w);
}

/* Drops the samples that left the window (ts <= now - width), and gives back
 * memory when the ring is mostly empty. */
void rules__window_expire(struct rules__window *w, int64_t now)
{
    int64_t edge = now - w->width_ms;
    while (w->n > 0 && AT(w, 0).ts <= edge)
        remove_front(w);
    /* failing to shrink is harmless */
    if (w->cap > 16 && w->n < w->cap / 4)
        (void)resize(w, w->cap / 2);
    if (w->dcap > 16 && w->dmin_n < w->dcap / 4 && w->dmax_n < w->dcap / 4)
        (void)resize_deques(w, w->dcap / 2);
}

/* Inserts (ts, v) in time order; a sample at the same ts as existing ones goes
 * after them. Samples already outside the window at `now` are ignored.
 * Returns 0, or -1 on OOM (the window is unchanged). */
int rules__window_insert(struct rules__window *w, int64_t ts, double v, int64_t now)
{
    if (ts <= now - w->width_ms)
        return 0;
    if (w->n == w->cap) {
        if (w->cap >= (1u << 30))
            return -1;
        if (resize(w, w->cap < 8 ? 8 : w->cap + w->cap / 2) < 0)
            return -1;
    }
    int in_order = w->n == 0 || AT(w, w->n - 1).ts <= ts;
    uint32_t dneed = in_order ? (w->dmin_n > w->dmax_n ? w->dmin_n : w->dmax_n) + 1 : w->n + 1;
    if (ensure_deques(w, dneed) < 0)
        return -1;
    if (in_order) {
        AT(w, w->n) = (struct rules__wpt){ts, v};
        w->n++;
        uint32_t seq = (uint32_t)(w->seq0 + w->n - 1);
        for (size_t i = 0; i < NACCS; i++)
            if (w->flags & accs[i].flag)
                accs[i].add(w, seq, v);
        return 0;
    }
    /* out of order: shift the newer samples one slot towards the tail */
    uint32_t i = w->n;
    while (i > 0 && AT(w, i - 1).ts > ts) {
        AT(w, i) = AT(w, i - 1);
        i--;
    }
    AT(w, i) = (struct rules__wpt){ts, v};
    w->n++;
    if (w->flags & WF_MOMENTS) {
        double d = v - w->shift;
        w->sum += d;
        w->sumsq += d * d;
    }
    if (w->flags & WF_MINMAX) {
        min_rebuild(w);
        max_rebuild(w);
    }
    return 0;
}
