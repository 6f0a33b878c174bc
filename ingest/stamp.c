/* Arrival stamps: the event time of a sample that carries none.
 *
 * Samples are keyed by (series, ts) in the store, and a second sample with
 * the same key is taken for a redelivery and dropped. A time the engine
 * assigned is never a redelivery, so no two messages of one topic may get
 * the same stamp: a message is stamped max(now, the topic's last stamp + 1).
 * A burst of n messages on one topic within a millisecond is stamped n
 * consecutive milliseconds (running ahead of the clock by at most n - 1 ms,
 * caught up as soon as the topic is quieter than 1,000 messages a second).
 *
 * The stamp is given on Paho's thread before the message is journaled, and
 * the journal keeps it: replaying a record gives the very stamp it had, so a
 * record replayed after its rows were committed is still recognised as a
 * duplicate and not stored twice, and a burst cut by a crash keeps distinct
 * stamps on both sides of the cut.
 *
 * Only topics stamped at or after the current millisecond matter (an older
 * last stamp yields `now` anyway), so the table forgets the others: all at
 * once (a new generation) when the clock has passed every stamp in it, and
 * in a rebuild when it fills. It holds about the topics of the current
 * millisecond, however many sensors there are. Keys are 64-bit hashes of the
 * topic; two topics with the same hash only space each other's stamps a
 * millisecond apart. */
#include "ingest/ingest.h"

#include <stdlib.h>
#include <string.h>

struct slot {
    uint64_t key;
    int64_t last;
    uint64_t gen; /* the slot is empty unless gen is the table's */
};

struct cb_stamps {
    struct slot *v;
    size_t cap, used; /* cap: a power of two, 0 before the first use */
    uint64_t gen;     /* emptying the table is gen++ */
    int64_t now;      /* the newest `now` given: older stamps are forgotten */
    int64_t max_last; /* the newest stamp in the table */
};

struct cb_stamps *cb_stamps_new(void)
{
    struct cb_stamps *s = calloc(1, sizeof *s);
    if (s) {
        s->gen = 1;
        s->max_last = INT64_MIN;
    }
    return s;
}

void cb_stamps_free(struct cb_stamps *s)
{
    if (!s)
        return;
    free(s->v);
    free(s);
}

/* A 64-bit hash of the topic, eight bytes a step (this runs for every
 * message on Paho's thread; byte-wise FNV-1a took most of a stamp's time),
 * mixed at the end so the low bits (the table index) depend on all of it. */
static uint64_t topic_key(const char *topic, size_t len)
{
    uint64_t h = 1469598103934665603ULL ^ len, w;
    for (; len >= 8; topic += 8, len -= 8) {
        memcpy(&w, topic, 8);
        h = (h ^ w) * 1099511628211ULL;
    }
    w = 0;
    memcpy(&w, topic, len);
    h = (h ^ w) * 1099511628211ULL;
    h ^= h >> 32; /* the murmur3 finaliser */
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 29;
    return h ? h : 1;
}

/* Whether slot e holds a stamp that still matters (at or after s->now). */
static int live(const struct cb_stamps *s, const struct slot *e)
{
    return e->gen == s->gen && e->last >= s->now;
}

/* Rebuilds the table with its live stamps, doubling it when they fill more
 * than a quarter. Returns 0, or -1 when memory is short (the table stays as
 * it was). */
static int rebuild(struct cb_stamps *s)
{
    size_t n = 0;
    for (size_t i = 0; i < s->cap; i++)
        n += live(s, &s->v[i]);
    size_t cap = s->cap ? s->cap : 256;
    while (n * 4 >= cap)
        cap *= 2;
    struct slot *v = calloc(cap, sizeof *v);
    if (!v)
        return -1;
    for (size_t i = 0; i < s->cap; i++) {
        if (!live(s, &s->v[i]))
            continue;
        size_t j = s->v[i].key & (cap - 1);
        while (v[j].gen == s->gen)
            j = (j + 1) & (cap - 1);
        v[j] = s->v[i];
    }
    free(s->v);
    s->v = v;
    s->cap = cap;
    s->used = n;
    return 0;
}

/* The slot of topic's key, inserted with last = INT64_MIN when new; NULL
 * when the table is full and cannot grow. */
static struct slot *slot_for(struct cb_stamps *s, const char *topic, size_t len)
{
    if (s->now > s->max_last && s->used) {
        s->gen++; /* every stamp is behind the clock: forget them all at once */
        s->used = 0;
    }
    if ((s->used + 1) * 2 > s->cap && rebuild(s) < 0 && s->used + 1 >= s->cap)
        return NULL;
    uint64_t key = topic_key(topic, len);
    size_t i = key & (s->cap - 1);
    while (s->v[i].gen == s->gen && s->v[i].key != key)
        i = (i + 1) & (s->cap - 1);
    if (s->v[i].gen != s->gen) {
        s->v[i] = (struct slot){key, INT64_MIN, s->gen};
        s->used++;
    }
    return &s->v[i];
}

int64_t cb_stamps_take(struct cb_stamps *s, const char *topic, size_t topic_len, int64_t now_ms)
{
    if (now_ms > s->now)
        s->now = now_ms;
    struct slot *e = slot_for(s, topic, topic_len);
    if (!e)
        return now_ms; /* out of memory: unique only by luck */
    int64_t stamp = e->last != INT64_MIN && e->last >= now_ms ? e->last + 1 : now_ms;
    e->last = stamp;
    if (stamp > s->max_last)
        s->max_last = stamp;
    return stamp;
}

void cb_stamps_seen(struct cb_stamps *s, const char *topic, size_t topic_len, int64_t ms)
{
    if (ms < s->now)
        return; /* cannot collide with a stamp given from now on */
    struct slot *e = slot_for(s, topic, topic_len);
    if (e && (e->last == INT64_MIN || ms > e->last))
        e->last = ms;
    if (e && ms > s->max_last)
        s->max_last = ms;
}
