/* Unit tests: group rules' member caches give what a full recompute gives.
 * Random streams (seeded, bounded) drive three engines over the same rules:
 * one with the caches and one recomputing every member at every evaluation,
 * whose transitions, messages included, must match byte for byte; and a third
 * with the caches, where every cached `sensors:` aggregate must equal its full
 * recompute after every step (that check expires every window at every step,
 * which moves the rounding of stddev's moments: hence its own engine). */
#include "rules/rules.h"
#include "rules/rules_int.h"

#include <CUnit/CUnit.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define T0 1700000000000LL

/* Every kind of `sensors:` aggregate, over windows, latest values, age()
 * (compared, scaled, negated, returned as is) and three-valued logic; the
 * thresholds suit values in 0..10 so that alerts come and go. */
static const char RULES[] =
    "rule cnt {\n"
    "  match \"c/{d}/k/{s}\"\n"
    "  per d\n"
    "  when count(sensors: avg(v, 20s) > 5) >= 3 and share(sensors: age() > 8s) < 0.5\n"
    "  clear count(sensors: avg(v, 20s) > 4) <= 1\n"
    "  escalate critical when max(sensors: rate(v, 30s)) > 0.2\n"
    "  message \"{count(sensors: avg(v, 20s) > 5)} {share(sensors: age() > 8s):.4f} "
    "{min(sensors: min(v, 10s)):.17g} {max(sensors: max(w, 15s)):.17g} "
    "{sum(sensors: last(v, 1m) - 5):.17g} {avg(sensors: v * 2 + w):.17g} "
    "{any(sensors: age(w) / 2 > 7)} {all(sensors: v > 1 or age() >= 3s)} "
    "{max(sensors: age()):.17g} {sum(sensors: stddev(v, 40s)):.17g}\"\n"
    "}\n"
    "rule quiet {\n"
    "  match \"c/{d}/k/{s}\"\n"
    "  per d\n"
    "  when any(sensors: age(w) > 12s) and not all(sensors: age() < 5s)\n"
    "  message \"{avg(sensors: count(v, 30s)):.17g} {min(sensors: 10 - age()):.17g} "
    "{count(sensors: age() * 1000 >= 6000 and v < 5)}\"\n"
    "}\n"
    "rule mix {\n"
    "  match \"c/{d}/k/{s}\"\n"
    "  per d\n"
    "  when all(sensors: -age() > -9s or not (w > 2)) and avg(sensors: percentile(v, 1m, 90)) > 6\n"
    "  for 5s\n"
    "}\n"
    "rule one {\n"
    "  match \"c/{d}/k/{s}\"\n"
    "  when avg(v, 10s) > 7\n"
    "}\n";

struct side {
    struct cb_ruleset *rs;
    struct cb_engine *e;
    struct cb_strbuf log;
    long n;
};

static void record(void *ctx, const struct cb_transition *t)
{
    struct side *s = ctx;
    cb_transition_to_json(t, &s->log);
    cb_strbuf_putc(&s->log, '\n');
    s->n++;
}

static void side_init(struct side *s, const struct cb_clock *clock, int cache)
{
    struct cb_diags d = {0};
    memset(s, 0, sizeof *s);
    cb_strbuf_init(&s->log);
    s->rs = cb_ruleset_compile_source("groups.rules", RULES, strlen(RULES), &d);
    if (!s->rs) {
        struct cb_strbuf b;
        cb_strbuf_init(&b);
        cb_diags_render_text(&d, &b);
        fprintf(stderr, "%s", b.data);
        cb_strbuf_free(&b);
    }
    cb_diags_free(&d);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s->rs);
    s->e = cb_engine_new(s->rs, clock, NULL, record, s);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s->e);
    rules__engine_set_group_cache(s->e, cache);
}

static void side_free(struct side *s)
{
    cb_engine_free(s->e);
    cb_ruleset_release(s->rs);
    cb_strbuf_free(&s->log);
}

static unsigned rnd(unsigned *seed)
{
    *seed = *seed * 1103515245u + 12345u;
    return (*seed >> 16) & 0x7fff;
}

/* Runs `steps` random steps with the given seed; `backwards` lets the clock
 * step back now and then (the caches must then fall back). */
static void random_stream(unsigned seed, int steps, int backwards)
{
    int64_t now = T0;
    struct cb_clock clock = {cb_clock_manual_now, &now};
    struct side a, b, c;
    side_init(&a, &clock, 1);
    side_init(&b, &clock, 0);
    side_init(&c, &clock, 1);
    int64_t next_tick = T0 + 1000;
    size_t compared = 0, bad = 0;
    for (int i = 0; i < steps; i++) {
        unsigned r = rnd(&seed);
        now += r % 700; /* 0..0.7 s between messages */
        if (backwards && r % 53 == 0)
            now -= 1500;
        while (now >= next_tick) {
            int64_t save = now;
            now = next_tick;
            cb_engine_tick(a.e);
            cb_engine_tick(b.e);
            cb_engine_tick(c.e);
            now = save;
            next_tick += 1000;
        }
        /* 3 districts x 8 sensors; sensors 6 and 7 are mostly silent */
        int d = (int)(rnd(&seed) % 3), sn = (int)(rnd(&seed) % 8);
        if (sn >= 6 && rnd(&seed) % 8 != 0)
            sn = (int)(rnd(&seed) % 6);
        char topic[32];
        snprintf(topic, sizeof topic, "c/d%d/k/s%d", d, sn);
        struct cb_sample x[2];
        size_t nx = 0;
        int64_t ts = now - (int64_t)(rnd(&seed) % 4 == 0 ? rnd(&seed) % 5000 : 0); /* out of order */
        if (rnd(&seed) % 4 != 0)
            x[nx++] = (struct cb_sample){"v", ts, (double)(rnd(&seed) % 1001) / 100.0};
        if (rnd(&seed) % 3 == 0)
            x[nx++] = (struct cb_sample){"w", ts, (double)(rnd(&seed) % 501) / 100.0};
        if (nx == 0)
            x[nx++] = (struct cb_sample){"other", ts, 1.0}; /* age() only */
        CU_ASSERT_EQUAL(cb_engine_offer(a.e, topic, NULL, x, nx, NULL, NULL), 0);
        CU_ASSERT_EQUAL(cb_engine_offer(b.e, topic, NULL, x, nx, NULL, NULL), 0);
        CU_ASSERT_EQUAL(cb_engine_offer(c.e, topic, NULL, x, nx, NULL, NULL), 0);
        size_t k = 0;
        bad += rules__engine_check_groups(c.e, &k);
        compared += k;
    }
    CU_ASSERT_EQUAL(bad, 0);
    CU_ASSERT(compared > (size_t)steps); /* the caches were used */
    CU_ASSERT(a.n > 20);                 /* alerts came and went */
    CU_ASSERT_EQUAL(a.n, b.n);
    CU_ASSERT_STRING_EQUAL(a.log.data ? a.log.data : "", b.log.data ? b.log.data : "");
    if (a.log.data && b.log.data && strcmp(a.log.data, b.log.data) != 0) {
        size_t k = 0;
        while (a.log.data[k] && a.log.data[k] == b.log.data[k])
            k++;
        while (k > 0 && a.log.data[k - 1] != '\n')
            k--;
        fprintf(stderr, "\nseed %u: first difference:\n cached: %.300s\n full:   %.300s\n", seed,
                a.log.data + k, b.log.data + k);
    }
    side_free(&a);
    side_free(&b);
    side_free(&c);
}

static void test_random_equals_full(void)
{
    for (unsigned seed = 1; seed <= 6; seed++)
        random_stream(seed, 3000, 0);
}

static void test_random_backwards_clock(void)
{
    for (unsigned seed = 11; seed <= 13; seed++)
        random_stream(seed, 2000, 1);
}

/* A member whose only change is time passing: age() > 10s flips exactly at
 * 10 s after its sample, at the tick, without any message. */
static void test_age_threshold_flips_on_time(void)
{
    int64_t now = T0;
    struct cb_clock clock = {cb_clock_manual_now, &now};
    struct side a;
    side_init(&a, &clock, 1);
    struct cb_sample x = {"v", T0, 1.0};
    CU_ASSERT_EQUAL(cb_engine_offer(a.e, "c/d0/k/s0", NULL, &x, 1, NULL, NULL), 0);
    x.ts_ms = T0 + 3000;
    now = T0 + 3000;
    CU_ASSERT_EQUAL(cb_engine_offer(a.e, "c/d0/k/s1", NULL, &x, 1, NULL, NULL), 0);
    size_t compared = 0;
    for (int ms = 3000; ms <= 16000; ms += 250) {
        now = T0 + ms;
        cb_engine_tick(a.e);
        size_t c;
        CU_ASSERT_EQUAL(rules__engine_check_groups(a.e, &c), 0);
        compared += c;
    }
    CU_ASSERT(compared > 0);
    /* `quiet` needs any(age(w) > 12s): w never came, so it never fires */
    CU_ASSERT_EQUAL(a.n, 0);
    side_free(&a);
}

/* Sensors that disappear on a swap leave the caches consistent. */
static void test_swap_drops_members(void)
{
    int64_t now = T0;
    struct cb_clock clock = {cb_clock_manual_now, &now};
    struct side a;
    side_init(&a, &clock, 1);
    for (int i = 0; i < 40; i++) {
        char topic[32];
        snprintf(topic, sizeof topic, "c/d%d/k/s%d", i % 2, i);
        struct cb_sample x = {"v", now, (double)(i % 10)};
        now += 100;
        CU_ASSERT_EQUAL(cb_engine_offer(a.e, topic, NULL, &x, 1, NULL, NULL), 0);
    }
    CU_ASSERT_EQUAL(rules__engine_check_groups(a.e, NULL), 0);
    /* the same rules: state and members kept, caches rebuilt */
    struct cb_diags d = {0};
    struct cb_ruleset *rs = cb_ruleset_compile_source("groups.rules", RULES, strlen(RULES), &d);
    CU_ASSERT_PTR_NOT_NULL_FATAL(rs);
    CU_ASSERT_EQUAL(cb_engine_swap(a.e, rs), 0);
    cb_ruleset_release(rs);
    cb_diags_free(&d);
    now += 5000;
    cb_engine_tick(a.e);
    size_t c = 0;
    CU_ASSERT_EQUAL(rules__engine_check_groups(a.e, &c), 0);
    CU_ASSERT(c > 0);
    side_free(&a);
}

void cb_test_suite_groups(void);
void cb_test_suite_groups(void)
{
    CU_pSuite s = CU_add_suite("groups", NULL, NULL);
    CU_add_test(s, "groups: cached sensors: aggregates equal a full recompute on random data", test_random_equals_full);
    CU_add_test(s, "groups: a clock stepping back falls back to the full recompute, same results", test_random_backwards_clock);
    CU_add_test(s, "groups: age() thresholds flip with time alone, as a full recompute sees", test_age_threshold_flips_on_time);
    CU_add_test(s, "groups: a swap rebuilds the caches over the members that remain", test_swap_drops_members);
}
