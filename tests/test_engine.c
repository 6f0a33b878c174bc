/* Unit tests: the engine's state machine over a manual clock. */
#include "rules/rules.h"

#include <CUnit/CUnit.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define T0 1700000000000LL

struct rec {
    char lines[64][256];
    int n;
    int all; /* also record pending/inactive */
};

static void on_t(void *ctx, const struct cb_transition *t)
{
    struct rec *r = ctx;
    if (!r->all && !cb_transition_is_event(t))
        return;
    if (r->n < 64)
        snprintf(r->lines[r->n++], 256, "%s %s %s +%llds%s%s%s%s%s", cb_alert_state_name(t->state),
                 t->id, cb_severity_name(t->severity), (long long)((t->at - T0) / 1000),
                 t->message ? " " : "", t->message ? t->message : "", t->reason ? " [" : "",
                 t->reason ? t->reason : "", t->reason ? "]" : "");
}

struct fx {
    struct cb_ruleset *rs;
    struct cb_engine *e;
    struct cb_clock clock;
    int64_t now;
    struct rec rec;
};

/* Compiles src and starts an engine on it whose transitions go to fn(ctx). */
static void fx_init_fn(struct fx *f, const char *src, cb_transition_fn fn, void *ctx)
{
    struct cb_diags d = {0};
    memset(f, 0, sizeof *f);
    f->rs = cb_ruleset_compile_source("t.rules", src, strlen(src), &d);
    if (!f->rs) {
        struct cb_strbuf b;
        cb_strbuf_init(&b);
        cb_diags_render_text(&d, &b);
        fprintf(stderr, "%s", b.data);
        cb_strbuf_free(&b);
    }
    CU_ASSERT_PTR_NOT_NULL_FATAL(f->rs);
    cb_diags_free(&d);
    f->now = T0;
    f->clock.now = cb_clock_manual_now;
    f->clock.ctx = &f->now;
    f->e = cb_engine_new(f->rs, &f->clock, NULL, fn, ctx ? ctx : &f->rec);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f->e);
}

static void fx_init(struct fx *f, const char *src) { fx_init_fn(f, src, on_t, NULL); }

static void fx_free(struct fx *f)
{
    cb_engine_free(f->e);
    cb_ruleset_release(f->rs);
}

/* Sends metric=v on topic at T0 + sec, ticking each second on the way. */
static void at(struct fx *f, int sec)
{
    while (f->now < T0 + sec * 1000LL) {
        f->now += 1000;
        cb_engine_tick(f->e);
    }
}

static enum cb_sample_verdict send(struct fx *f, int sec, const char *topic, const char *metric, double v)
{
    at(f, sec);
    struct cb_sample s = {metric, T0 + sec * 1000LL, v};
    enum cb_sample_verdict vd;
    CU_ASSERT_EQUAL(cb_engine_offer(f->e, topic, NULL, &s, 1, &vd, NULL), 0);
    return vd;
}

static void expect(struct fx *f, int i, const char *line)
{
    CU_ASSERT_FATAL(i < f->rec.n);
    if (strcmp(f->rec.lines[i], line))
        fprintf(stderr, "\n got: %s\nwant: %s\n", f->rec.lines[i], line);
    CU_ASSERT_STRING_EQUAL(f->rec.lines[i], line);
}

#define RIVER "  match \"city/{district}/river/{sensor}\"\n"

static void test_for(void)
{
    struct fx f;
    fx_init(&f, "rule hi {\n" RIVER "  when level > 3\n  for 60s\n}\n");
    f.rec.all = 1;
    send(&f, 0, "city/d1/river/s1", "level", 4);
    expect(&f, 0, "pending hi/city/d1/river/s1 major +0s");
    send(&f, 30, "city/d1/river/s1", "level", 2); /* breaks the for */
    expect(&f, 1, "inactive hi/city/d1/river/s1 major +30s");
    send(&f, 40, "city/d1/river/s1", "level", 5);
    at(&f, 99);
    CU_ASSERT_EQUAL(f.rec.n, 3);
    at(&f, 100); /* held 60 s at every evaluation (ticks included) */
    expect(&f, 3, "firing hi/city/d1/river/s1 major +100s");
    fx_free(&f);
}

static void test_clear_for_and_default_clear(void)
{
    struct fx f;
    fx_init(&f, "rule hi {\n" RIVER "  when level > 3\n  clear level < 2 for 30s\n}\n"
                "rule lo {\n" RIVER "  when level > 3\n}\n");
    send(&f, 0, "city/d1/river/s1", "level", 4);
    CU_ASSERT_EQUAL(f.rec.n, 2);
    send(&f, 10, "city/d1/river/s1", "level", 2.5); /* lo clears at once, hi needs < 2 */
    CU_ASSERT_EQUAL(f.rec.n, 3);
    expect(&f, 2, "resolved lo/city/d1/river/s1 major +10s");
    send(&f, 20, "city/d1/river/s1", "level", 1);
    send(&f, 40, "city/d1/river/s1", "level", 2.5); /* interrupted: the clear for restarts */
    send(&f, 45, "city/d1/river/s1", "level", 1);
    at(&f, 74);
    CU_ASSERT_EQUAL(f.rec.n, 3);
    at(&f, 75);
    expect(&f, 3, "resolved hi/city/d1/river/s1 major +75s");
    fx_free(&f);
}

static void test_missing_data_keeps_state(void)
{
    struct fx f;
    fx_init(&f, "rule hi {\n" RIVER "  when avg(level, 1m) > 3\n}\n");
    send(&f, 0, "city/d1/river/s1", "level", 4);
    expect(&f, 0, "firing hi/city/d1/river/s1 major +0s");
    at(&f, 600); /* the window is empty: no value, neither when nor clear holds */
    CU_ASSERT_EQUAL(f.rec.n, 1);
    send(&f, 601, "city/d1/river/s1", "level", 1);
    expect(&f, 1, "resolved hi/city/d1/river/s1 major +601s");
    fx_free(&f);
}

struct listed_state {
    enum cb_alert_state state;
};

static void see_state(void *ctx, const struct cb_transition *t)
{
    ((struct listed_state *)ctx)->state = t->state;
}

static void test_escalation(void)
{
    struct fx f;
    fx_init(&f, "rule hi {\n" RIVER "  when level > 3\n  severity warning\n"
                "  escalate major when level > 5\n  escalate critical after 2m unacked\n}\n");
    send(&f, 0, "city/d1/river/s1", "level", 4);
    expect(&f, 0, "firing hi/city/d1/river/s1 warning +0s");
    send(&f, 10, "city/d1/river/s1", "level", 6);
    expect(&f, 1, "escalated hi/city/d1/river/s1 major +10s");
    send(&f, 20, "city/d1/river/s1", "level", 4); /* severity does not go down while firing */
    at(&f, 119);
    CU_ASSERT_EQUAL(f.rec.n, 2);
    at(&f, 120);
    expect(&f, 2, "escalated hi/city/d1/river/s1 critical +120s");
    /* the listing shows it escalated (GET /api/alerts?state=escalated) */
    struct listed_state ls = {CB_ALERT_INACTIVE};
    cb_engine_foreach_instance(f.e, see_state, &ls);
    CU_ASSERT_EQUAL(ls.state, CB_ALERT_ESCALATED);
    fx_free(&f);
}

/* Found by make soak: windows were trimmed only when read, so a window read
 * only by escalate or message (evaluated while the alert fires) grew with
 * every sample while the alert stayed quiet: river_flood's rate(level, 30m)
 * held every sample of every gauge since the start. */
static void test_unread_window_stays_bounded(void)
{
    struct fx f;
    fx_init(&f, "rule hi {\n" RIVER "  when level > 100\n  severity warning\n"
                "  escalate major when rate(level, 1m) > 1\n"
                "  message \"{max(level, 2m)}\"\n}\n");
    for (int sec = 0; sec < 600; sec++)
        send(&f, sec, "city/d1/river/s1", "level", 1 + sec % 7);
    CU_ASSERT_EQUAL(f.rec.n, 0);
    struct cb_engine_stats st;
    cb_engine_get_stats(f.e, &st);
    /* at most the last minute (1m) and the last two (2m), one sample a second */
    CU_ASSERT(st.window_samples <= 60 + 120);
    CU_ASSERT(st.window_samples >= 59 + 119);
    fx_free(&f);
}

static void test_ack_stops_unacked_escalation(void)
{
    struct fx f;
    fx_init(&f, "rule hi {\n" RIVER "  when level > 3\n  escalate critical after 2m unacked\n}\n");
    send(&f, 0, "city/d1/river/s1", "level", 4);
    at(&f, 30);
    CU_ASSERT_EQUAL(cb_engine_ack(f.e, "hi/city/d1/river/s1", "ana", "on it"), 0);
    expect(&f, 1, "acknowledged hi/city/d1/river/s1 major +30s");
    CU_ASSERT_EQUAL(cb_engine_ack(f.e, "hi/city/d1/river/s1", "ana", NULL), 1); /* idempotent */
    CU_ASSERT_EQUAL(cb_engine_ack(f.e, "nope", "ana", NULL), -1);
    at(&f, 300);
    CU_ASSERT_EQUAL(f.rec.n, 2);
    fx_free(&f);
}

static void test_cooldown(void)
{
    struct fx f;
    fx_init(&f, "rule hi {\n" RIVER "  when level > 3\n  cooldown 5m\n}\n");
    send(&f, 0, "city/d1/river/s1", "level", 4);
    send(&f, 10, "city/d1/river/s1", "level", 1);
    send(&f, 20, "city/d1/river/s1", "level", 4); /* within the cooldown: stays quiet */
    CU_ASSERT_EQUAL(f.rec.n, 2);
    at(&f, 309);
    CU_ASSERT_EQUAL(f.rec.n, 2);
    at(&f, 310);
    expect(&f, 2, "firing hi/city/d1/river/s1 major +310s");
    fx_free(&f);
}

static void test_deadman(void)
{
    struct fx f;
    fx_init(&f, "rule silent {\n" RIVER "  when age() > 10m\n  severity warning\n"
                "  message \"{sensor} silent for {age():.0f} s\"\n}\n");
    send(&f, 0, "city/d1/river/s1", "level", 2);
    at(&f, 600);
    CU_ASSERT_EQUAL(f.rec.n, 0);
    at(&f, 601);
    expect(&f, 0, "firing silent/city/d1/river/s1 warning +601s s1 silent for 601 s");
    send(&f, 700, "city/d1/river/s1", "flow", 9); /* any metric counts */
    expect(&f, 1, "resolved silent/city/d1/river/s1 warning +700s s1 silent for 0 s");
    fx_free(&f);
}

static void test_group_rule(void)
{
    struct fx f;
    fx_init(&f, "rule flood {\n" RIVER "  per district\n"
                "  when count(sensors: avg(level, 5m) > 3.2) >= 2\n"
                "  message \"{district}: {count(sensors: avg(level, 5m) > 3.2)} of "
                "{count(sensors: age() >= 0)}, max {max(sensors: last(level, 5m)):.1f}\"\n}\n");
    send(&f, 0, "city/d7/river/a", "level", 3.5);
    send(&f, 0, "city/d7/river/b", "level", 1.0);
    send(&f, 0, "city/d8/river/c", "level", 3.5);
    CU_ASSERT_EQUAL(f.rec.n, 0);
    send(&f, 5, "city/d7/river/b", "level", 6.0); /* avg of b: 3.5 */
    expect(&f, 0, "firing flood/district=d7 major +5s d7: 2 of 2, max 6.0");
    send(&f, 6, "city/d8/river/d", "level", 9.0);
    expect(&f, 1, "firing flood/district=d8 major +6s d8: 2 of 2, max 9.0");
    fx_free(&f);
}

/* The `when` values of the transitions (NaN: unknown), in order, and of the
 * instances a listing shows. */
struct values {
    double v[16];
    int n;
};

static void on_value(void *ctx, const struct cb_transition *t)
{
    struct values *vs = ctx;
    if (cb_transition_is_event(t) && vs->n < 16)
        vs->v[vs->n++] = t->value;
}

/* The `when` value of the one instance a listing shows now. */
static double listed_value(struct fx *f)
{
    struct values vs = {0};
    cb_engine_foreach_instance(f->e, on_value, &vs);
    CU_ASSERT_EQUAL_FATAL(vs.n, 1);
    return vs.v[0];
}

static void test_when_value_tracked_per_instance(void)
{
    struct fx f;
    struct values vs = {0};
    /* A compound condition: its value is the first comparison's left side. */
    fx_init_fn(&f, "rule hi {\n" RIVER "  when level * 2 > 6 and flow > 1\n}\n", on_value, &vs);
    send(&f, 0, "city/d1/river/s1", "flow", 2);
    send(&f, 1, "city/d1/river/s1", "level", 4);
    CU_ASSERT_EQUAL_FATAL(vs.n, 1); /* firing, at level 4 */
    CU_ASSERT_DOUBLE_EQUAL(vs.v[0], 8, 0);
    send(&f, 2, "city/d1/river/s1", "level", 5); /* no transition, a new evaluation */
    CU_ASSERT_EQUAL(vs.n, 1);
    CU_ASSERT_DOUBLE_EQUAL(listed_value(&f), 10, 0);
    send(&f, 3, "city/d1/river/s1", "level", 1); /* resolved, at level 1 */
    CU_ASSERT_EQUAL_FATAL(vs.n, 2);
    CU_ASSERT_DOUBLE_EQUAL(vs.v[1], 2, 0);
    fx_free(&f);

    /* A group rule: the aggregate over the instance's sensors. */
    vs.n = 0;
    fx_init_fn(&f, "rule flood {\n" RIVER "  per district\n"
                   "  when count(sensors: level > 3) >= 2\n}\n", on_value, &vs);
    send(&f, 0, "city/d7/river/a", "level", 4);
    send(&f, 1, "city/d7/river/b", "level", 5);
    CU_ASSERT_EQUAL_FATAL(vs.n, 1);
    CU_ASSERT_DOUBLE_EQUAL(vs.v[0], 2, 0);
    send(&f, 2, "city/d7/river/c", "level", 6);
    CU_ASSERT_DOUBLE_EQUAL(listed_value(&f), 3, 0);
    fx_free(&f);
}

static void test_when_value_unknown_is_nan(void)
{
    struct fx f;
    struct values vs = {0};
    /* The first comparison's left side has no sample: fired by flow, value unknown. */
    fx_init_fn(&f, "rule hi {\n" RIVER "  when level > 3 or flow > 1\n}\n", on_value, &vs);
    send(&f, 0, "city/d1/river/s1", "flow", 2);
    CU_ASSERT_EQUAL_FATAL(vs.n, 1);
    CU_ASSERT(isnan(vs.v[0]));
    send(&f, 1, "city/d1/river/s1", "level", 4); /* known from now on */
    CU_ASSERT_DOUBLE_EQUAL(listed_value(&f), 4, 0);
    fx_free(&f);

    /* No comparison at all: no value. */
    vs.n = 0;
    fx_init_fn(&f, "rule any_high {\n" RIVER "  per district\n"
                   "  when any(sensors: level > 3)\n}\n", on_value, &vs);
    send(&f, 0, "city/d7/river/a", "level", 4);
    CU_ASSERT_EQUAL_FATAL(vs.n, 1);
    CU_ASSERT(isnan(vs.v[0]));
    fx_free(&f);
}

static void test_verdicts(void)
{
    struct fx f;
    fx_init(&f, "rule hi {\n" RIVER "  valid level in 0 .. 15\n  when level > 3\n}\n");
    at(&f, 1000);
    CU_ASSERT_EQUAL(send(&f, 1000, "city/d1/river/s1", "level", 2), CB_SAMPLE_ACCEPTED);
    CU_ASSERT_EQUAL(send(&f, 1000, "city/d1/river/s1", "level", 99), CB_SAMPLE_QUARANTINED);
    CU_ASSERT_EQUAL(f.rec.n, 0); /* the quarantined 99 was never evaluated */
    struct cb_sample late = {"level", T0 + 1000000 - 301000, 9};
    struct cb_sample future = {"level", T0 + 1000000 + 61000, 9};
    enum cb_sample_verdict v[2];
    const char *q[2];
    CU_ASSERT_EQUAL(cb_engine_offer(f.e, "city/d1/river/s1", NULL, &late, 1, v, q), 0);
    CU_ASSERT_EQUAL(v[0], CB_SAMPLE_LATE);
    CU_ASSERT_EQUAL(cb_engine_offer(f.e, "city/d1/river/s1", NULL, &future, 1, v, q), 0);
    CU_ASSERT_EQUAL(v[0], CB_SAMPLE_FUTURE);
    CU_ASSERT_EQUAL(f.rec.n, 0);
    struct cb_engine_stats st;
    cb_engine_get_stats(f.e, &st);
    CU_ASSERT_EQUAL(st.late, 1);
    CU_ASSERT_EQUAL(st.future, 1);
    CU_ASSERT_EQUAL(st.quarantined, 1);
    fx_free(&f);
}

static void test_swap_keeps_state(void)
{
    struct fx f;
    const char *a = "rule keep {\n" RIVER "  when level > 3\n  for 1m\n}\n"
                    "rule gone {\n" RIVER "  when level > 3\n}\n";
    fx_init(&f, a);
    send(&f, 0, "city/d1/river/s1", "level", 4);
    expect(&f, 0, "firing gone/city/d1/river/s1 major +0s");
    at(&f, 30);
    /* same text for keep (comments and layout do not matter), gone removed, new added */
    const char *b = "# reloaded\nrule keep {\n" RIVER "  when   level > 3   # same\n  for 1m\n}\n"
                    "rule fresh {\n" RIVER "  when avg(level, 1m) > 3\n}\n";
    struct cb_diags d = {0};
    struct cb_ruleset *rs = cb_ruleset_compile_source("b.rules", b, strlen(b), &d);
    CU_ASSERT_PTR_NOT_NULL_FATAL(rs);
    CU_ASSERT_EQUAL(cb_engine_swap(f.e, rs), 0);
    cb_ruleset_release(rs);
    expect(&f, 1, "resolved gone/city/d1/river/s1 major +30s [rule removed]");
    at(&f, 60); /* keep was pending since 0: it fires at 60 without a new sample */
    expect(&f, 2, "firing keep/city/d1/river/s1 major +60s");
    send(&f, 61, "city/d1/river/s1", "level", 4);
    expect(&f, 3, "firing fresh/city/d1/river/s1 major +61s");
    cb_diags_free(&d);
    fx_free(&f);
}


/* The engine with rs swapped in for the current rules (compiled from src). */
static void swap_to(struct fx *f, const char *src)
{
    struct cb_diags d = {0};
    struct cb_ruleset *rs = cb_ruleset_compile_source("b.rules", src, strlen(src), &d);
    CU_ASSERT_PTR_NOT_NULL_FATAL(rs);
    CU_ASSERT_EQUAL(cb_engine_swap(f->e, rs), 0);
    cb_ruleset_release(rs);
    cb_diags_free(&d);
}

struct acked {
    const char *id;
    const char *by;
    enum cb_severity sev;
    char msg[128];
};
static void find_acked(void *ctx, const struct cb_transition *t)
{
    struct acked *a = ctx;
    if (strcmp(t->id, a->id) == 0) {
        a->by = t->acked_by;
        a->sev = t->severity;
        snprintf(a->msg, sizeof a->msg, "%s", t->message ? t->message : "");
    }
}

/* rules.md: a reload keeps an instance, its state and its ack while the
 * rule's identity (name, match, per, when, for, clear) is unchanged; its new
 * presentation applies to the live instance; a changed identity resolves it
 * with the reason. */
static void test_swap_presentation_keeps_ack(void)
{
    struct fx f;
    fx_init(&f, "rule hi {\n" RIVER "  when level > 3\n  severity warning\n"
                "  message \"old {level:.0f}\"\n}\n");
    send(&f, 0, "city/d1/river/s1", "level", 4);
    expect(&f, 0, "firing hi/city/d1/river/s1 warning +0s old 4");
    at(&f, 10);
    CU_ASSERT_EQUAL(cb_engine_ack(f.e, "hi/city/d1/river/s1", "ana", NULL), 0);
    CU_ASSERT_EQUAL(f.rec.n, 2); /* the acknowledgement */
    /* new title, message and a higher severity, clauses reordered: the
     * instance stays, acknowledged; the severity change escalates it */
    swap_to(&f, "rule hi {\n  title \"High\"\n  when level > 3  # same\n" RIVER
                "  severity major\n  message \"new {level:.1f}\"\n}\n");
    expect(&f, 2, "escalated hi/city/d1/river/s1 major +10s new 4.0");
    CU_ASSERT_EQUAL(f.rec.n, 3);
    struct acked a = {"hi/city/d1/river/s1", NULL, CB_SEV_INFO, ""};
    cb_engine_foreach_instance(f.e, find_acked, &a);
    CU_ASSERT_PTR_NOT_NULL(a.by);
    CU_ASSERT_STRING_EQUAL(a.by ? a.by : "", "ana");
    CU_ASSERT_STRING_EQUAL(a.msg, "new 4.0");
    /* a lower base severity applies to an instance at its base severity,
     * without an event (an engineer's correction, not the data's) */
    swap_to(&f, "rule hi {\n" RIVER "  when level > 3\n  severity info\n}\n");
    cb_engine_foreach_instance(f.e, find_acked, &a);
    CU_ASSERT_EQUAL(a.sev, CB_SEV_INFO);
    CU_ASSERT_EQUAL(f.rec.n, 3);
    /* a changed `when` is a new rule: resolved with the reason */
    swap_to(&f, "rule hi {\n" RIVER "  when level > 3.5\n}\n");
    expect(&f, 3, "resolved hi/city/d1/river/s1 info +10s [rule changed]");
    CU_ASSERT_EQUAL(f.rec.n, 4);
    fx_free(&f);
}


/* docs/rules.md, "Missing data": an instance without evidence stays as it is
 * until an operator closes it by hand; one with evidence cannot be closed. */
static void test_close_by_hand(void)
{
    struct fx f;
    fx_init(&f, "rule hi {\n" RIVER "  when level > 3\n}\n");
    send(&f, 0, "city/d1/river/s1", "level", 4);
    expect(&f, 0, "firing hi/city/d1/river/s1 major +0s");
    CU_ASSERT_EQUAL(cb_engine_close(f.e, "hi/city/d1/river/s1", "ana", "gauge removed"), 1);
    CU_ASSERT_EQUAL(cb_engine_close(f.e, "no/such", "ana", "x"), -1);
    at(&f, 700); /* silent past stale_after (10 min): `level` is unknown, stale */
    CU_ASSERT_EQUAL(f.rec.n, 1);
    CU_ASSERT_EQUAL(cb_engine_close(f.e, "hi/city/d1/river/s1", "ana", "gauge removed"), 0);
    expect(&f, 1, "resolved hi/city/d1/river/s1 major +700s [closed by hand]");
    CU_ASSERT_EQUAL(cb_engine_close(f.e, "hi/city/d1/river/s1", "ana", "again"), -1);
    fx_free(&f);
}

static void test_restore(void)
{
    struct fx f;
    fx_init(&f, "rule hi {\n" RIVER "  when level > 3\n  escalate critical after 2m unacked\n}\n");
    struct cb_label l[2] = {{"district", "d1"}, {"sensor", "s1"}};
    struct cb_transition saved = {.id = "hi/city/d1/river/s1", .rule = "hi", .state = CB_ALERT_FIRING,
                                  .severity = CB_SEV_MAJOR, .labels = l, .nlabels = 2,
                                  .at = T0 - 60000, .since = T0 - 60000};
    CU_ASSERT_EQUAL(cb_engine_restore(f.e, &saved, 0, 0), 0);
    /* a stored instance of a rule that is gone ends at the first tick, with
     * its reason; one of a rule whose identity changed likewise */
    saved.id = "removed/city/d1/river/s1";
    saved.rule = "removed";
    CU_ASSERT_EQUAL(cb_engine_restore(f.e, &saved, 0, 0), 1);
    saved.id = "hi/city/d2/river/s1";
    saved.rule = "hi";
    saved.rule_key = "hi\nwhen level > 2";
    CU_ASSERT_EQUAL(cb_engine_restore(f.e, &saved, 0, 0), 1);
    CU_ASSERT_EQUAL(f.rec.n, 0);
    send(&f, 1, "city/d1/river/s1", "level", 4); /* still firing: no new firing event */
    expect(&f, 0, "resolved removed/city/d1/river/s1 major +1s [rule removed]");
    expect(&f, 1, "resolved hi/city/d2/river/s1 major +1s [rule changed]");
    CU_ASSERT_EQUAL(f.rec.n, 2);
    at(&f, 60);
    expect(&f, 2, "escalated hi/city/d1/river/s1 critical +60s");
    fx_free(&f);
}

/* The listed message of one instance (NULL when none or not listed). */
struct listed {
    const char *id;
    char msg[128];
    int found;
};
static void find_listed(void *ctx, const struct cb_transition *t)
{
    struct listed *l = ctx;
    if (strcmp(t->id, l->id) == 0) {
        l->found = 1;
        snprintf(l->msg, sizeof l->msg, "%s", t->message ? t->message : "");
    }
}

static void test_version(void)
{
    struct fx f;
    fx_init(&f, "rule hi {\n" RIVER "  when last(level, 1m) > 3\n  for 10s\n"
                "  message \"{last(level, 1m):.1f} m\"\n}\n");
    uint64_t v0 = cb_engine_version(f.e);
    send(&f, 0, "city/d1/river/s1", "level", 2); /* nothing happens */
    CU_ASSERT_EQUAL(cb_engine_version(f.e), v0);
    send(&f, 1, "city/d1/river/s1", "level", 4); /* pending: listed, so it counts */
    uint64_t v1 = cb_engine_version(f.e);
    CU_ASSERT(v1 != v0);
    at(&f, 11); /* firing */
    uint64_t v2 = cb_engine_version(f.e);
    CU_ASSERT(v2 != v1);
    struct listed l = {"hi/city/d1/river/s1", "", 0};
    cb_engine_foreach_instance(f.e, find_listed, &l);
    CU_ASSERT(l.found);
    CU_ASSERT_STRING_EQUAL(l.msg, "4.0 m");
    /* a new value without a transition: the listing, and the version, stay */
    send(&f, 12, "city/d1/river/s1", "level", 5);
    CU_ASSERT_EQUAL(cb_engine_version(f.e), v2);
    cb_engine_foreach_instance(f.e, find_listed, &l);
    CU_ASSERT_STRING_EQUAL(l.msg, "4.0 m");
    /* acknowledging changes it, the message too (as of the ack) */
    CU_ASSERT_EQUAL(cb_engine_ack(f.e, l.id, "ana", NULL), 0);
    uint64_t v3 = cb_engine_version(f.e);
    CU_ASSERT(v3 != v2);
    cb_engine_foreach_instance(f.e, find_listed, &l);
    CU_ASSERT_STRING_EQUAL(l.msg, "5.0 m");
    CU_ASSERT_EQUAL(cb_engine_ack(f.e, l.id, "ana", NULL), 1); /* idempotent: no change */
    CU_ASSERT_EQUAL(cb_engine_version(f.e), v3);
    /* a swap changes it even when nothing is emitted */
    struct cb_diags d = {0};
    const char *b = "rule other {\n" RIVER "  when level > 30\n}\n";
    struct cb_ruleset *rs = cb_ruleset_compile_source("b.rules", b, strlen(b), &d);
    CU_ASSERT_PTR_NOT_NULL_FATAL(rs);
    CU_ASSERT_EQUAL(cb_engine_swap(f.e, rs), 0);
    cb_ruleset_release(rs);
    uint64_t v4 = cb_engine_version(f.e);
    CU_ASSERT(v4 != v3);
    l.found = 0;
    cb_engine_foreach_instance(f.e, find_listed, &l);
    CU_ASSERT_FALSE(l.found);
    cb_diags_free(&d);
    fx_free(&f);
}

static void test_transition_json(void)
{
    struct cb_label l = {"district", "d07"};
    struct cb_transition t = {.id = "river_flood/district=d07", .rule = "river_flood",
                              .state = CB_ALERT_FIRING, .severity = CB_SEV_MAJOR, .labels = &l,
                              .nlabels = 1, .at = 1732400120000, .since = 1732400000000,
                              .message = "d07: 2 gauges above 3.2 m"};
    struct cb_strbuf b;
    cb_strbuf_init(&b);
    cb_transition_to_json(&t, &b);
    CU_ASSERT_STRING_EQUAL(b.data,
                           "{\"id\":\"river_flood/district=d07\",\"rule\":\"river_flood\",\"state\":\"firing\","
                           "\"severity\":\"major\",\"labels\":{\"district\":\"d07\"},\"at\":1732400120000,"
                           "\"since\":1732400000000,\"message\":\"d07: 2 gauges above 3.2 m\"}");
    cb_strbuf_free(&b);
}

struct stale_seen {
    int stale;
    int64_t last_sample;
};

static void see_stale(void *ctx, const struct cb_transition *t)
{
    struct stale_seen *s = ctx;
    s->stale = t->stale;
    s->last_sample = t->last_sample;
}

static void test_silent_sensor_marks_alert_stale(void)
{
    struct fx f;
    fx_init(&f, "rule hi {\n" RIVER "  when level > 3\n}\n");
    send(&f, 0, "city/d1/river/s1", "level", 4);
    expect(&f, 0, "firing hi/city/d1/river/s1 major +0s");
    struct stale_seen seen = {-1, 0};
    cb_engine_foreach_instance(f.e, see_stale, &seen);
    CU_ASSERT_EQUAL(seen.stale, 0);
    CU_ASSERT_EQUAL(seen.last_sample, T0);
    uint64_t v = cb_engine_version(f.e);
    at(&f, 600); /* silent exactly stale_after (10 min): not yet */
    cb_engine_foreach_instance(f.e, see_stale, &seen);
    CU_ASSERT_EQUAL(seen.stale, 0);
    at(&f, 601);
    cb_engine_foreach_instance(f.e, see_stale, &seen);
    CU_ASSERT_EQUAL(seen.stale, 1);          /* stays firing, marked stale */
    CU_ASSERT_EQUAL(f.rec.n, 1);             /* no transition for it */
    CU_ASSERT(cb_engine_version(f.e) != v);  /* but the listing changed */
    send(&f, 700, "city/d1/river/s1", "level", 5); /* the sensor is back */
    at(&f, 701);
    cb_engine_foreach_instance(f.e, see_stale, &seen);
    CU_ASSERT_EQUAL(seen.stale, 0);
    CU_ASSERT_EQUAL(f.rec.n, 1);
    fx_free(&f);
}

struct msg_seen {
    char listed[128];   /* the listing's message */
    char progress[128]; /* the message of the last PROGRESS record */
    char progress_zh[128];
    char ack[128];      /* the message of the acknowledgement */
    char esc[128];      /* the message of the escalation */
    char esc_zh[128];
};

static void see_message(void *ctx, const struct cb_transition *t)
{
    struct msg_seen *m = ctx;
    snprintf(m->listed, sizeof m->listed, "%s", t->message ? t->message : "(none)");
}

static void on_progress(void *ctx, const struct cb_transition *t)
{
    struct msg_seen *m = ctx;
    if (t->state == CB_ALERT_ACKNOWLEDGED)
        snprintf(m->ack, sizeof m->ack, "%s", t->message ? t->message : "(none)");
    if (t->state == CB_ALERT_ESCALATED) {
        snprintf(m->esc, sizeof m->esc, "%s", t->message ? t->message : "(none)");
        snprintf(m->esc_zh, sizeof m->esc_zh, "%s",
                 t->messages[CB_LANG_ZH] ? t->messages[CB_LANG_ZH] : "(none)");
    }
    if (t->state != CB_ALERT_PROGRESS)
        return;
    snprintf(m->progress, sizeof m->progress, "%s", t->message ? t->message : "(none)");
    snprintf(m->progress_zh, sizeof m->progress_zh, "%s",
             t->messages[CB_LANG_ZH] ? t->messages[CB_LANG_ZH] : "(none)");
}

/* Marked stale, the alert keeps the message of its firing: the stale sensor's
 * unknown value ("n/a") replaces it neither in the listing nor in the
 * PROGRESS record the store keeps (in every language), nor when it is
 * acknowledged while stale. */
static void test_stale_mark_keeps_the_message(void)
{
    struct fx f;
    struct msg_seen m = {"", "", "", "", "", ""};
    fx_init_fn(&f, "rule hi {\n" RIVER "  when level > 3\n  message \"{sensor}: {level}\"\n"
                   "  message zh \"{sensor}：水位 {level}\"\n}\n", on_progress, &m);
    send(&f, 0, "city/d1/river/s1", "level", 4);
    at(&f, 601); /* silent past stale_after: stale, `level` unknown */
    cb_engine_foreach_instance(f.e, see_message, &m);
    CU_ASSERT_STRING_EQUAL(m.listed, "s1: 4");
    CU_ASSERT_STRING_EQUAL(m.progress, "s1: 4");
    CU_ASSERT_STRING_EQUAL(m.progress_zh, "s1：水位 4");
    /* acknowledged while stale: the acknowledgement carries it too */
    CU_ASSERT_EQUAL(cb_engine_ack(f.e, "hi/city/d1/river/s1", "ana", NULL), 0);
    CU_ASSERT_STRING_EQUAL(m.ack, "s1: 4");
    cb_engine_foreach_instance(f.e, see_message, &m);
    CU_ASSERT_STRING_EQUAL(m.listed, "s1: 4");
    fx_free(&f);
}

/* Escalated by the clock ("after 15m unacked") while its sensor is silent,
 * the alert keeps the message of its firing in every language: the
 * escalation has no new evidence to tell. An escalation on evidence (`when`)
 * renders anew with the value that raised it. */
static void test_stale_escalation_keeps_the_message(void)
{
    struct fx f;
    struct msg_seen m = {"", "", "", "", "", ""};
    fx_init_fn(&f, "rule hi {\n" RIVER "  when level > 3\n  message \"{sensor}: {level}\"\n"
                   "  message zh \"{sensor}：水位 {level}\"\n  escalate critical after 15m unacked\n}\n",
               on_progress, &m);
    send(&f, 0, "city/d1/river/s1", "level", 4);
    at(&f, 900); /* stale since 601 s, unacked for 15 min: escalates */
    CU_ASSERT_STRING_EQUAL(m.esc, "s1: 4");
    CU_ASSERT_STRING_EQUAL(m.esc_zh, "s1：水位 4");
    cb_engine_foreach_instance(f.e, see_message, &m);
    CU_ASSERT_STRING_EQUAL(m.listed, "s1: 4");
    fx_free(&f);

    fx_init_fn(&f, "rule hi {\n" RIVER "  when level > 3\n  message \"{sensor}: {level}\"\n"
                   "  escalate critical when level > 5\n}\n",
               on_progress, &m);
    send(&f, 0, "city/d1/river/s1", "level", 4);
    send(&f, 10, "city/d1/river/s1", "level", 6);
    CU_ASSERT_STRING_EQUAL(m.esc, "s1: 6");
    fx_free(&f);
}

/* A bare {NAME}: the label's value, or the latest value of a metric the rule
 * uses (here only inside a window: the latest sample, not the average), with
 * up to 6 significant digits; a metric with no sample yet prints n/a. */
static void test_template_bare_names_render(void)
{
    struct fx f;
    fx_init(&f, "rule hi {\n" RIVER "  valid flow in 0 .. 1000\n  when avg(level, 5m) > 3\n"
                "  message \"{sensor} in {district} at {level} m, flow {flow}\"\n}\n");
    send(&f, 0, "city/d1/river/s1", "level", 3.25);
    expect(&f, 0, "firing hi/city/d1/river/s1 major +0s s1 in d1 at 3.25 m, flow n/a");
    send(&f, 10, "city/d1/river/s1", "flow", 41.5);
    send(&f, 20, "city/d1/river/s1", "level", 1.0 / 3.0); /* avg 1.79: resolves */
    expect(&f, 1, "resolved hi/city/d1/river/s1 major +20s s1 in d1 at 0.333333 m, flow 41.5");
    fx_free(&f);
}

struct json_rec {
    char json[4][1024];
    int n;
};

static void on_json(void *ctx, const struct cb_transition *t)
{
    struct json_rec *r = ctx;
    if (!cb_transition_is_event(t) || r->n >= 4)
        return;
    struct cb_strbuf b;
    cb_strbuf_init(&b);
    cb_transition_to_json(t, &b);
    snprintf(r->json[r->n++], sizeof r->json[0], "%s", b.data ? b.data : "");
    cb_strbuf_free(&b);
}

/* Each language's template is rendered at the transition, with the value of
 * that moment, and the JSON carries "titles" and "messages" by language tag;
 * a rule with plain clauses only keeps the rules.md object as it was. */
static void test_messages_per_language(void)
{
    const char *src =
        "rule gas {\n"
        "  title    \"Methane leak\"\n"
        "  title zh \"燃气泄漏\"\n"
        "  match    \"city/{district}/gas/{sensor}\"\n"
        "  when     ch4 >= 10\n"
        "  message  \"{district}: methane {ch4:.0f}% LEL ({title})\"\n"
        "  message zh \"{district}：甲烷 {ch4:.0f}% LEL（{title}）\"\n"
        "}\n"
        "rule plain {\n"
        "  title    \"Level\"\n"
        "  match    \"city/{district}/river/{sensor}\"\n"
        "  when     level > 3\n"
        "  message  \"{sensor} at {level:.1f} m\"\n"
        "}\n";
    struct json_rec rec = {0};
    struct fx f;
    fx_init_fn(&f, src, on_json, &rec);
    struct cb_engine *e = f.e;
    struct cb_sample s1 = {"ch4", T0, 12.0}, s2 = {"level", T0, 3.5};
    cb_engine_offer(e, "city/d03/gas/s02", NULL, &s1, 1, NULL, NULL);
    cb_engine_offer(e, "city/d01/river/s01", NULL, &s2, 1, NULL, NULL);
    CU_ASSERT_EQUAL_FATAL(rec.n, 2);
    CU_ASSERT_PTR_NOT_NULL(strstr(rec.json[0], "\"message\":\"d03: methane 12% LEL (Methane leak)\""));
    CU_ASSERT_PTR_NOT_NULL(strstr(rec.json[0],
        "\"titles\":{\"en-US\":\"Methane leak\",\"zh-CN\":\"燃气泄漏\"}"));
    CU_ASSERT_PTR_NOT_NULL(strstr(rec.json[0],
        "\"messages\":{\"en-US\":\"d03: methane 12% LEL (Methane leak)\","
        "\"zh-CN\":\"d03：甲烷 12% LEL（燃气泄漏）\"}"));
    CU_ASSERT_PTR_NULL(strstr(rec.json[1], "\"messages\""));
    CU_ASSERT_PTR_NULL(strstr(rec.json[1], "\"titles\""));
    /* the listing keeps each language's message of the last transition */
    struct cb_strbuf rules;
    cb_strbuf_init(&rules);
    cb_engine_rules_json(e, &rules);
    CU_ASSERT_PTR_NOT_NULL(strstr(rules.data, "\"metrics\":[\"ch4\"]"));
    cb_strbuf_free(&rules);
    fx_free(&f);
}

void cb_test_suite_engine(void);
void cb_test_suite_engine(void)
{
    CU_pSuite s = CU_add_suite("engine", NULL, NULL);
    CU_add_test(s, "engine: each language's message is rendered at the transition and carried "
                   "as titles and messages by language tag",
                test_messages_per_language);
    CU_add_test(s, "engine: 'for' needs the condition at every evaluation, ticks included", test_for);
    CU_add_test(s, "engine: 'clear ... for' is hysteresis; the default clear is 'not when', at once", test_clear_for_and_default_clear);
    CU_add_test(s, "engine: an empty window leaves a firing alert as it is", test_missing_data_keeps_state);
    CU_add_test(s, "engine: escalate by condition, then after an unacked time; never down", test_escalation);
    CU_add_test(s, "engine: a window only escalate and message read holds no more than its width", test_unread_window_stays_bounded);
    CU_add_test(s, "engine: acknowledgement is idempotent and stops 'after ... unacked'", test_ack_stops_unacked_escalation);
    CU_add_test(s, "engine: cooldown holds back a new firing of the same instance", test_cooldown);
    CU_add_test(s, "engine: deadman with age() fires on ticks and resolves on any sample", test_deadman);
    CU_add_test(s, "engine: group rules count sensors per label value", test_group_rule);
    CU_add_test(s, "engine: each instance keeps the when value (the first comparison's left side, "
                   "the aggregate of a group rule) from every evaluation and gives it on its "
                   "transitions and in a listing",
                test_when_value_tracked_per_instance);
    CU_add_test(s, "engine: the when value is unknown (NaN) when its left side has no evidence "
                   "or the condition has no comparison",
                test_when_value_unknown_is_nan);
    CU_add_test(s, "engine: late, future and quarantined samples are not evaluated", test_verdicts);
    CU_add_test(s, "engine: swap keeps unchanged rules' state and resolves removed rules", test_swap_keeps_state);
    CU_add_test(s, "engine: a reload that changes only presentation keeps the instance and its "
                   "ack and restyles it; a changed identity resolves it",
                test_swap_presentation_keeps_ack);
    CU_add_test(s, "engine: a stale instance can be closed by hand, one with evidence cannot",
                test_close_by_hand);
    CU_add_test(s, "engine: a restored firing instance goes on escalating; one whose rule is gone "
                   "or changed ends at the first tick",
                test_restore);
    CU_add_test(s, "engine: transition JSON is exactly the rules.md object", test_transition_json);
    CU_add_test(s, "engine: the version changes with every transition, ack and swap, and only then; "
                   "a listing shows the message of the last transition", test_version);
    CU_add_test(s, "engine: a firing alert whose sensor goes silent stays firing, marked stale",
                test_silent_sensor_marks_alert_stale);
    CU_add_test(s, "engine: a stale alert keeps the message of the last transition, in every "
                   "language and when acknowledged, instead of rendering unknown values",
                test_stale_mark_keeps_the_message);
    CU_add_test(s, "engine: an alert escalated by the clock while stale keeps the message of the "
                   "last transition; one escalated on evidence renders anew",
                test_stale_escalation_keeps_the_message);
    CU_add_test(s, "engine: a bare {NAME} in the message prints the label, or the latest value of "
                   "the metric (n/a before its first sample)", test_template_bare_names_render);
}
