/* The evaluation engine: sensors, their series and windows, alert instances
 * and their state machine, ticks, acknowledgement, hot swap and restore.
 *
 * A sensor (a distinct topic) is bound, on first sight, to every rule whose
 * match pattern its topic matches (the ruleset's topic index answers that), so
 * a message costs in proportion to the rules that match its topic. A binding
 * resolves the rule's window and series references to the sensor's windows
 * once; one window serves every rule needing the same (metric, width).
 *
 * Values are doubles; NaN means "no value". Comparisons with no value give no
 * value, `and`/`or`/`not` follow three-valued logic, and a condition holds only
 * when its value is true: so a comparison with no value is false in `when`
 * and in `clear` alike, and the default clear (`not WHEN`) does not hold
 * either: a silent sensor leaves its alert as it is.
 *
 * Group rules: a `sensors:` aggregate would evaluate its inner expression for
 * every member sensor on every evaluation (hundreds of sensors per district).
 * Instead each instance keeps, per `sensors:` aggregate, every member's last
 * inner value and the event time until which that value cannot change (its
 * `until`): the earliest time a sample leaves one of the windows it read, or
 * the time a comparison on age() flips; infinity when only a new sample can
 * change it. A sample of a sensor resets its members' until (feed), and an
 * evaluation at now recomputes just the members whose until <= now, taken
 * from a min-heap, keeping counts of true and valued members up to date. The
 * windows are expired at the same evaluations as before (a member whose until
 * is later has no sample to expire), so every value is the one a full
 * recompute gives. Time going backwards falls back to the full recompute. */
#include "rules/rules_int.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { ST_INACTIVE = 0, ST_PENDING, ST_FIRING };

struct series {
    char *metric;
    int64_t last_ts;
    double last_v;
    int has;
    struct rules__window **wins;
    size_t nwins, capwins;
};

struct binding;

struct sensor {
    char *topic;
    char *device;
    int64_t last_ts;
    int has;
    struct series **series;
    size_t nseries, capseries;
    struct binding **b;
    size_t nb;
};

struct binding {
    struct sensor *s;
    const struct rules__rule *rule;
    struct inst *inst;
    struct rules__window **wins; /* per rule window reference */
    struct series **ser;         /* per rule series reference */
    uint32_t mi;                 /* index in inst->mv */
};

/* One member's cached inner value in one `sensors:` aggregate. */
struct gslot {
    double v;
    int64_t until; /* recompute when now >= until; INT64_MIN: dirty */
    uint32_t hpos; /* position in the heap */
};

/* The cache of one `sensors:` aggregate of one group instance: slots indexed
 * like inst->mv, a min-heap of member indices on until, and the counts of
 * the cached values. min/max/sum/avg are reduced over the slots when a value
 * changed (in member order, as a full recompute adds them). */
struct gcache {
    uint32_t op;       /* index of its OP_SENSORS op in rule->ops */
    uint32_t n, cap;
    struct gslot *m;
    uint32_t *heap;
    uint32_t ntrue;    /* members whose value is true */
    uint32_t nval;     /* members with a value */
    int changed;       /* a value changed since the reduction */
    double red;        /* the reduction (min/max/sum/avg) */
};

struct inst {
    char *id;
    const struct rules__rule *rule;
    struct cb_label *labels; /* names and values owned */
    size_t nlabels;
    int state;
    enum cb_severity sev;
    int64_t since, fired_at, clear_since, cooldown_until, acked_at;
    int has_clear_since, acked, stale;
    int unknown; /* the last verdict had no evidence either way */
    double value;  /* the `when` value at the last evaluation (cb_transition.value), NaN: unknown */
    const struct rules__rule *was; /* during a swap: the rule it had (old ruleset) */
    char *acked_by, *ack_note;
    char *msg[CB_LANGS]; /* per language, the message of the last transition with one
                            (firing, escalated, ack) */
    struct binding **mv;  /* members */
    uint32_t nmv;
    size_t capmv;
    struct gcache *gc;    /* group rules: one per `sensors:` aggregate evaluated */
    uint32_t ngc;
    size_t pos; /* in e->insts */
};

/* A stored instance whose rule is gone or changed identity since it was
 * stored: it is ended (resolved, or made inactive when pending) with the
 * reason at the next tick, when the daemon's outputs are up. */
struct orphan {
    char *id, *rule, *message;
    struct cb_label *labels;
    size_t nlabels;
    enum cb_alert_state state; /* what it ends as: RESOLVED or INACTIVE */
    enum cb_severity sev;
    int64_t since;
    const char *reason;        /* static text */
};

struct cb_engine {
    struct cb_ruleset *rs;
    const struct cb_clock *clock;
    struct cb_engine_options opts;
    cb_transition_fn fn;
    void *ctx;
    struct rules__map sensors; /* topic -> sensor */
    struct sensor **sensv;
    size_t nsens, capsens;
    struct rules__map insts;   /* id -> inst */
    struct inst **instv;
    size_t ninst, capinst;
    struct rules__map rulemap; /* name -> rule index + 1 */
    struct cb_engine_stats st;
    double *scratch;
    size_t nscratch;
    struct cb_strbuf msg[CB_LANGS]; /* render()'s buffers, one per language */
    uint64_t version; /* changes with the set of instances a listing shows */
    uint32_t *tags;
    size_t ntags, captags;
    size_t nwindows;
    int64_t hi_now;            /* the latest now windows were fed or expired at */
    int no_group_cache;        /* tests: every sensors: aggregate recomputes every member */
    const char *reason;        /* the reason of the transition being emitted, or NULL */
    const char *closed_by, *close_note; /* likewise, for a close by hand */
    int by_clock;              /* the escalation being emitted is "after ... unacked" */
    struct orphan *orphans;    /* restored instances to end at the next tick */
    size_t norphans;
};

static double run(struct cb_engine *e, const struct rules__rule *r, struct rules__code c,
                  struct inst *in, struct binding *b, int64_t now);
static void emit(struct cb_engine *e, struct inst *in, enum cb_alert_state state, int64_t now);

/* ---- names ------------------------------------------------------------------------ */

const char *cb_alert_state_name(enum cb_alert_state s)
{
    static const char *const n[] = {"inactive", "pending",      "firing",  "escalated",
                                    "resolved", "acknowledged", "progress"};
    return (unsigned)s < sizeof n / sizeof n[0] ? n[s] : "unknown";
}

const char *cb_lang_tag(enum cb_lang l)
{
    static const char *const tags[CB_LANGS] = {"en-US", "zh-CN"};
    return (unsigned)l < CB_LANGS ? tags[l] : NULL;
}

int cb_lang_texts_json(const char *const *texts, struct cb_strbuf *out)
{
    int n = 0;
    for (int l = 0; l < CB_LANGS; l++) {
        if (!texts[l])
            continue;
        cb_strbuf_putc(out, n++ ? ',' : '{');
        cb_strbuf_printf(out, "\"%s\":", cb_lang_tag((enum cb_lang)l));
        cb_strbuf_json_string(out, texts[l], strlen(texts[l]));
    }
    if (n)
        cb_strbuf_putc(out, '}');
    return n;
}

/* Appends ,"key":{"en-US":…,"zh-CN":…} for the languages that have a text;
 * nothing when none has. */
static void lang_object(struct cb_strbuf *out, const char *key, const char *const *texts)
{
    for (int l = 0; l < CB_LANGS; l++)
        if (texts[l]) {
            cb_strbuf_printf(out, ",\"%s\":", key);
            cb_lang_texts_json(texts, out);
            return;
        }
}

const char *cb_severity_name(enum cb_severity s)
{
    static const char *const n[] = {"info", "warning", "major", "critical"};
    return (unsigned)s < 4 ? n[s] : "unknown";
}

int cb_severity_parse(const char *name, enum cb_severity *out)
{
    for (int i = 0; i < 4; i++)
        if (name && strcmp(name, cb_severity_name((enum cb_severity)i)) == 0) {
            *out = (enum cb_severity)i;
            return 0;
        }
    return -1;
}

int cb_transition_is_event(const struct cb_transition *t)
{
    return t->state == CB_ALERT_FIRING || t->state == CB_ALERT_ESCALATED ||
           t->state == CB_ALERT_RESOLVED || t->state == CB_ALERT_ACKNOWLEDGED;
}

void cb_transition_to_json(const struct cb_transition *t, struct cb_strbuf *out)
{
    cb_strbuf_puts(out, "{\"id\":");
    cb_strbuf_json_string(out, t->id, strlen(t->id));
    cb_strbuf_puts(out, ",\"rule\":");
    cb_strbuf_json_string(out, t->rule, strlen(t->rule));
    cb_strbuf_printf(out, ",\"state\":\"%s\",\"severity\":\"%s\",\"labels\":{",
                     cb_alert_state_name(t->state), cb_severity_name(t->severity));
    for (size_t i = 0; i < t->nlabels; i++) {
        if (i)
            cb_strbuf_putc(out, ',');
        cb_strbuf_json_string(out, t->labels[i].name, strlen(t->labels[i].name));
        cb_strbuf_putc(out, ':');
        cb_strbuf_json_string(out, t->labels[i].value, strlen(t->labels[i].value));
    }
    cb_strbuf_printf(out, "},\"at\":%lld", (long long)t->at);
    if (t->since)
        cb_strbuf_printf(out, ",\"since\":%lld", (long long)t->since);
    if (t->message) {
        cb_strbuf_puts(out, ",\"message\":");
        cb_strbuf_json_string(out, t->message, strlen(t->message));
    }
    lang_object(out, "titles", t->titles);
    lang_object(out, "messages", t->messages);
    if (t->stale)
        cb_strbuf_puts(out, ",\"stale\":true");
    if (t->reason) {
        cb_strbuf_puts(out, ",\"reason\":");
        cb_strbuf_json_string(out, t->reason, strlen(t->reason));
    }
    const char *by = t->state == CB_ALERT_ACKNOWLEDGED ? t->acked_by
                     : t->state == CB_ALERT_RESOLVED   ? t->closed_by
                                                       : NULL;
    const char *note = t->state == CB_ALERT_ACKNOWLEDGED ? t->ack_note : t->close_note;
    if (by) {
        cb_strbuf_puts(out, ",\"by\":");
        cb_strbuf_json_string(out, by, strlen(by));
        if (note) {
            cb_strbuf_puts(out, ",\"note\":");
            cb_strbuf_json_string(out, note, strlen(note));
        }
    }
    cb_strbuf_putc(out, '}');
}

/* ---- sensors, series, windows ------------------------------------------------------------ */

static struct series *find_series(const struct sensor *s, const char *metric)
{
    for (size_t i = 0; i < s->nseries; i++)
        if (strcmp(s->series[i]->metric, metric) == 0)
            return s->series[i];
    return NULL;
}

static struct series *get_series(struct sensor *s, const char *metric)
{
    struct series *x = find_series(s, metric);
    if (x)
        return x;
    if (rules__grow(&s->series, &s->capseries, s->nseries + 1, sizeof *s->series) < 0)
        return NULL;
    x = calloc(1, sizeof *x);
    if (!x || !(x->metric = rules__strdup(metric))) {
        free(x);
        return NULL;
    }
    s->series[s->nseries++] = x;
    return x;
}

static struct rules__window *get_window(struct cb_engine *e, struct series *x, int64_t width,
                                        unsigned flags)
{
    for (size_t i = 0; i < x->nwins; i++)
        if (x->wins[i]->width_ms == width) {
            if (rules__window_add_flags(x->wins[i], flags) < 0)
                return NULL;
            return x->wins[i];
        }
    if (rules__grow(&x->wins, &x->capwins, x->nwins + 1, sizeof *x->wins) < 0)
        return NULL;
    struct rules__window *w = rules__window_new(width, flags);
    if (!w)
        return NULL;
    x->wins[x->nwins++] = w;
    e->nwindows++;
    return w;
}

/* Frees windows no binding uses any more. */
static void drop_unused_windows(struct cb_engine *e, struct sensor *s)
{
    for (size_t i = 0; i < s->nseries; i++) {
        struct series *x = s->series[i];
        size_t k = 0;
        for (size_t j = 0; j < x->nwins; j++) {
            if (x->wins[j]->refs > 0) {
                x->wins[k++] = x->wins[j];
            } else {
                rules__window_free(x->wins[j]);
                e->nwindows--;
            }
        }
        x->nwins = k;
    }
}

/* Packs n labels (names[i] NUL-terminated, vals[i] of vlens[i] bytes) into
 * one allocation: the array, then the strings. NULL on OOM; free with
 * label_free. (One block instead of 2n + 1: an instance's labels cost about
 * a quarter of what they did, and there is one instance per sensor and rule.) */
static struct cb_label *labels_pack(const char *const *names, const char *const *vals,
                                    const size_t *vlens, size_t n)
{
    size_t slots = n ? n : 1, sz = slots * sizeof(struct cb_label);
    for (size_t i = 0; i < n; i++)
        sz += strlen(names[i]) + 1 + vlens[i] + 1;
    struct cb_label *l = malloc(sz);
    if (!l)
        return NULL;
    char *p = (char *)(l + slots);
    for (size_t i = 0; i < n; i++) {
        size_t nl = strlen(names[i]);
        memcpy(p, names[i], nl + 1);
        l[i].name = p;
        p += nl + 1;
        memcpy(p, vals[i], vlens[i]);
        p[vlens[i]] = '\0';
        l[i].value = p;
        p += vlens[i] + 1;
    }
    return l;
}

static void label_free(struct cb_label *l, size_t n)
{
    (void)n; /* one block (labels_pack) */
    free(l);
}

static void gcache_free(struct inst *in)
{
    for (uint32_t i = 0; i < in->ngc; i++) {
        free(in->gc[i].m);
        free(in->gc[i].heap);
    }
    free(in->gc);
    in->gc = NULL;
    in->ngc = 0;
}

static void msgs_free(struct inst *in)
{
    for (int l = 0; l < CB_LANGS; l++) {
        free(in->msg[l]);
        in->msg[l] = NULL;
    }
}

static void inst_free(struct inst *in)
{
    if (!in)
        return;
    gcache_free(in);
    free(in->mv);
    free(in->id);
    label_free(in->labels, in->nlabels);
    free(in->acked_by);
    free(in->ack_note);
    msgs_free(in);
    free(in);
}

static void inst_remove(struct cb_engine *e, struct inst *in)
{
    rules__map_del(&e->insts, in->id);
    e->instv[in->pos] = e->instv[--e->ninst];
    e->instv[in->pos]->pos = in->pos;
    inst_free(in);
}

/* Builds the instance id and labels of binding b, whose topic matched with
 * captures caps[0..ncaps), into *id (caller frees) and *labels (caller frees
 * with label_free). 0 or -1 (OOM). */
static int instance_key(const struct binding *b, const struct cb_topic_capture *caps, int ncaps,
                        char **id, struct cb_label **labels, size_t *nl)
{
    const struct rules__rule *r = b->rule;
    struct cb_strbuf buf;
    size_t n = r->nper ? r->nper : (size_t)ncaps;
    const char *names[CB_TOPIC_MAX_LEVELS], *vals[CB_TOPIC_MAX_LEVELS];
    size_t vlens[CB_TOPIC_MAX_LEVELS];
    struct cb_label *l = NULL;
    cb_strbuf_init(&buf);
    if (n > CB_TOPIC_MAX_LEVELS)
        goto fail;
    cb_strbuf_puts(&buf, r->name);
    cb_strbuf_putc(&buf, '/');
    if (!r->nper)
        cb_strbuf_puts(&buf, b->s->topic);
    for (size_t i = 0; i < n; i++) {
        const char *name = r->nper ? r->per[i] : caps[i].name;
        const char *v = "";
        size_t vl = 0;
        for (int k = 0; k < ncaps; k++)
            if (strcmp(caps[k].name, name) == 0) {
                v = caps[k].value;
                vl = caps[k].len;
            }
        names[i] = name;
        vals[i] = v;
        vlens[i] = vl;
        if (r->nper) {
            if (i)
                cb_strbuf_putc(&buf, ',');
            cb_strbuf_printf(&buf, "%s=%.*s", name, (int)vl, v);
        }
    }
    if (buf.oom || !(l = labels_pack(names, vals, vlens, n)))
        goto fail;
    *id = cb_strbuf_steal(&buf, NULL);
    *labels = l;
    *nl = n;
    return 0;
fail:
    if (l)
        label_free(l, n);
    cb_strbuf_free(&buf);
    return -1;
}

static struct inst *inst_get(struct cb_engine *e, const struct rules__rule *r, char *id,
                             struct cb_label *labels, size_t nl)
{
    struct inst *in = rules__map_get(&e->insts, id);
    if (in) {
        free(id);
        label_free(labels, nl);
        return in;
    }
    in = calloc(1, sizeof *in);
    if (!in || rules__grow(&e->instv, &e->capinst, e->ninst + 1, sizeof *e->instv) < 0)
        goto fail;
    in->id = id;
    in->rule = r;
    in->labels = labels;
    in->nlabels = nl;
    in->sev = r->severity;
    in->value = NAN;
    if (rules__map_put(&e->insts, in->id, in) < 0)
        goto fail;
    in->pos = e->ninst;
    e->instv[e->ninst++] = in;
    return in;
fail:
    free(in);
    free(id);
    label_free(labels, nl);
    return NULL;
}

static void binding_free(struct binding *b)
{
    if (!b)
        return;
    for (size_t i = 0; i < b->rule->nwins; i++)
        if (b->wins && b->wins[i])
            b->wins[i]->refs--;
    free(b);
}

/* ---- the member caches of group instances ------------------------------------------------ */

static inline int truthy(double v)
{
    return v == v && v != 0.0;
}

static inline int64_t until_of(const struct gcache *g, uint32_t hpos)
{
    return g->m[g->heap[hpos]].until;
}

static void heap_set(struct gcache *g, uint32_t hpos, uint32_t mi)
{
    g->heap[hpos] = mi;
    g->m[mi].hpos = hpos;
}

static void sift_up(struct gcache *g, uint32_t i)
{
    uint32_t mi = g->heap[i];
    int64_t u = g->m[mi].until;
    while (i > 0 && until_of(g, (i - 1) / 2) > u) {
        heap_set(g, i, g->heap[(i - 1) / 2]);
        i = (i - 1) / 2;
    }
    heap_set(g, i, mi);
}

static void sift_down(struct gcache *g, uint32_t i)
{
    uint32_t mi = g->heap[i];
    int64_t u = g->m[mi].until;
    for (;;) {
        uint32_t c = 2 * i + 1;
        if (c >= g->n)
            break;
        if (c + 1 < g->n && until_of(g, c + 1) < until_of(g, c))
            c++;
        if (until_of(g, c) >= u)
            break;
        heap_set(g, i, g->heap[c]);
        i = c;
    }
    heap_set(g, i, mi);
}

/* Replaces member mi's cached value by v, keeping the counts. */
static void gslot_set(struct gcache *g, uint32_t mi, double v)
{
    double o = g->m[mi].v;
    if ((o == v && signbit(o) == signbit(v)) || (o != o && v != v))
        return;
    g->ntrue += (uint32_t)truthy(v) - (uint32_t)truthy(o);
    g->nval += (uint32_t)(v == v) - (uint32_t)(o == o);
    g->m[mi].v = v;
    g->changed = 1;
}

/* Marks member mi for recomputation at the next evaluation. */
static void gslot_dirty(struct gcache *g, uint32_t mi)
{
    if (g->m[mi].until == INT64_MIN)
        return;
    g->m[mi].until = INT64_MIN;
    sift_up(g, g->m[mi].hpos);
}

/* Appends member mi (== g->n) with no value, dirty. 0 or -1 (OOM). */
static int gslot_add(struct gcache *g)
{
    if (g->n == g->cap) {
        uint32_t c = g->cap ? g->cap * 2 : 8;
        struct gslot *m = realloc(g->m, (size_t)c * sizeof *m);
        if (!m)
            return -1;
        g->m = m;
        uint32_t *h = realloc(g->heap, (size_t)c * sizeof *h);
        if (!h)
            return -1;
        g->heap = h;
        g->cap = c;
    }
    uint32_t mi = g->n++;
    g->m[mi] = (struct gslot){NAN, INT64_MIN, mi};
    g->heap[mi] = mi;
    sift_up(g, mi);
    return 0;
}

/* Removes member mi; the last member takes its index (as in inst->mv). */
static void gslot_remove(struct gcache *g, uint32_t mi)
{
    gslot_set(g, mi, NAN);
    g->changed = 1;
    /* out of the heap: the heap's last entry takes its place */
    uint32_t h = g->m[mi].hpos, moved = g->heap[g->n - 1];
    g->n--;
    if (h != g->n) {
        heap_set(g, h, moved);
        sift_down(g, h);
        sift_up(g, g->m[moved].hpos);
    }
    /* the last member (index g->n now) moves to index mi */
    if (mi != g->n) {
        g->m[mi] = g->m[g->n];
        g->heap[g->m[mi].hpos] = mi;
    }
}

/* Adds binding b as a member of in. 0 or -1 (OOM: b is not a member). */
static int link_member(struct inst *in, struct binding *b)
{
    if (rules__grow(&in->mv, &in->capmv, (size_t)in->nmv + 1, sizeof *in->mv) < 0)
        return -1;
    b->inst = in;
    b->mi = in->nmv;
    in->mv[in->nmv++] = b;
    for (uint32_t i = 0; i < in->ngc; i++)
        if (gslot_add(&in->gc[i]) < 0) {
            gcache_free(in); /* rebuilt on the next evaluation */
            break;
        }
    return 0;
}

static void unlink_member(struct binding *b)
{
    struct inst *in = b->inst;
    if (!in)
        return;
    uint32_t mi = b->mi, last = in->nmv - 1;
    for (uint32_t i = 0; i < in->ngc; i++)
        gslot_remove(&in->gc[i], mi);
    in->mv[mi] = in->mv[last];
    in->mv[mi]->mi = mi;
    in->nmv--;
    b->inst = NULL;
}

struct match_ctx {
    struct cb_engine *e;
};

static void collect_tag(void *ctx, uint32_t tag)
{
    struct cb_engine *e = ctx;
    if (rules__grow(&e->tags, &e->captags, e->ntags + 1, sizeof *e->tags) == 0)
        e->tags[e->ntags++] = tag;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* Binds sensor s to every rule of the current ruleset its topic matches
 * (first matching pattern of each rule). Returns 0, or -1 on OOM. */
static int sensor_bind(struct cb_engine *e, struct sensor *s)
{
    const struct cb_ruleset *rs = e->rs;
    struct cb_topic_capture caps[CB_TOPIC_MAX_LEVELS];
    e->ntags = 0;
    cb_topic_index_match(rs->index, s->topic, collect_tag, e);
    qsort(e->tags, e->ntags, sizeof *e->tags, cmp_u32);
    size_t nrules = 0;
    for (size_t i = 0; i < e->ntags; i++)
        if (i == 0 || (e->tags[i] >> 8) != (e->tags[i - 1] >> 8))
            nrules++;
    s->b = nrules ? calloc(nrules, sizeof *s->b) : NULL;
    s->nb = 0;
    if (nrules && !s->b)
        return -1;
    for (size_t i = 0; i < e->ntags; i++) {
        if (i && (e->tags[i] >> 8) == (e->tags[i - 1] >> 8))
            continue;
        const struct rules__rule *r = &rs->rules[e->tags[i] >> 8];
        /* one block: the binding, then its window and series references */
        struct binding *b = calloc(1, sizeof *b + (r->nwins + r->nseries) * sizeof(void *));
        if (!b)
            return -1;
        b->wins = (struct rules__window **)(b + 1);
        b->ser = (struct series **)(b->wins + r->nwins);
        b->s = s;
        b->rule = r;
        s->b[s->nb++] = b;
        int ncaps = cb_topic_pattern_match(r->pats[e->tags[i] & 0xff], s->topic, caps,
                                           CB_TOPIC_MAX_LEVELS);
        if (ncaps < 0)
            ncaps = 0;
        for (size_t k = 0; k < r->nwins; k++) {
            struct series *x = get_series(s, r->wins[k].metric);
            struct rules__window *w = x ? get_window(e, x, r->wins[k].width_ms, r->wins[k].flags) : NULL;
            if (!w)
                return -1;
            w->refs++;
            b->wins[k] = w;
        }
        for (size_t k = 0; k < r->nseries; k++)
            if (!(b->ser[k] = get_series(s, r->series[k])))
                return -1;
        char *id;
        struct cb_label *labels;
        size_t nl;
        if (instance_key(b, caps, ncaps, &id, &labels, &nl) < 0)
            return -1;
        struct inst *in = inst_get(e, r, id, labels, nl);
        if (!in || link_member(in, b) < 0)
            return -1;
    }
    return 0;
}

static void sensor_free(struct cb_engine *e, struct sensor *s)
{
    for (size_t i = 0; i < s->nb; i++) {
        unlink_member(s->b[i]);
        binding_free(s->b[i]);
    }
    free(s->b);
    for (size_t i = 0; i < s->nseries; i++) {
        struct series *x = s->series[i];
        for (size_t j = 0; j < x->nwins; j++) {
            rules__window_free(x->wins[j]);
            e->nwindows--;
        }
        free(x->wins);
        free(x->metric);
        free(x);
    }
    free(s->series);
    free(s->topic);
    free(s->device);
    free(s);
}

/* The sensor of topic, created and bound on first sight; NULL when no rule
 * matches the topic (nothing is kept for it) or on OOM (*oom set). */
static struct sensor *sensor_for(struct cb_engine *e, const char *topic, int *oom)
{
    struct sensor *s = rules__map_get(&e->sensors, topic);
    *oom = 0;
    if (s)
        return s;
    e->ntags = 0;
    if (!cb_topic_index_match(e->rs->index, topic, collect_tag, e))
        return NULL;
    s = calloc(1, sizeof *s);
    if (!s || !(s->topic = rules__strdup(topic)) ||
        rules__grow(&e->sensv, &e->capsens, e->nsens + 1, sizeof *e->sensv) < 0)
        goto fail;
    if (sensor_bind(e, s) < 0 || rules__map_put(&e->sensors, s->topic, s) < 0)
        goto fail;
    e->sensv[e->nsens++] = s;
    return s;
fail:
    if (s) {
        if (s->topic)
            sensor_free(e, s);
        else
            free(s);
    }
    *oom = 1;
    return NULL;
}

/* ---- evaluation -------------------------------------------------------------------------- */

/* rules.md, "Missing data": a metric of a silent (stale) sensor has no value,
 * latest or windowed; only age() still speaks of it. */
static inline int sensor_fresh(const struct cb_engine *e, const struct sensor *s, int64_t now)
{
    return s->has && now - s->last_ts <= e->opts.stale_after_ms;
}

static double window_value(struct cb_engine *e, struct rules__window *w, uint8_t agg, double k,
                           int64_t now)
{
    if (now > e->hi_now)
        e->hi_now = now;
    rules__window_expire(w, now);
    if (agg == AGG_PERCENTILE && w->n > e->nscratch) {
        double *p = realloc(e->scratch, w->n * sizeof *p);
        if (!p)
            return NAN;
        e->scratch = p;
        e->nscratch = w->n;
    }
    return rules__aggs[agg].value(w, k, e->scratch);
}

/* A value as the rules see it: an interval [lo, hi] of what it can be.
 * lo == hi is a known value; a comparison that can go either way is the
 * interval [0, 1] (unknown); [-inf, +inf] is no value at all (an empty window,
 * a silent sensor). Only `sensors:` aggregates over some unknown members give
 * the bounded intervals in between (rules.md, "Missing data"):
 * count(sensors: C) with 2 true, 1 false and 1 unknown member is [2, 3], so
 * `>= 2` is true and `== 0` is false, while `>= 3` stays unknown. */
struct iv {
    double lo, hi;
};

static const struct iv IV_NONE = {-INFINITY, INFINITY};
static const struct iv IV_UNKNOWN_BOOL = {0.0, 1.0};

static inline struct iv iv_of(double v)
{
    return v == v && isfinite(v) ? (struct iv){v, v} : IV_NONE;
}

static inline int iv_known(struct iv x)
{
    return x.lo == x.hi;
}

/* The scalar face of an interval: the value when known, NaN otherwise. */
static inline double iv_scalar(struct iv x)
{
    return iv_known(x) ? x.lo : NAN;
}

enum tri { TRI_FALSE = 0, TRI_TRUE = 1, TRI_UNKNOWN = 2 };

/* Truth of a value: true when it cannot be 0, false when it is 0, unknown
 * when 0 is one of the values it can take. */
static inline enum tri iv_truth(struct iv x)
{
    if (x.lo > 0.0 || x.hi < 0.0)
        return TRI_TRUE;
    if (x.lo == 0.0 && x.hi == 0.0)
        return TRI_FALSE;
    return TRI_UNKNOWN;
}

static inline struct iv iv_bool(enum tri t)
{
    return t == TRI_UNKNOWN ? IV_UNKNOWN_BOOL : (struct iv){(double)t, (double)t};
}

/* What `agg(sensors: ...)` gives over nmembers members, ntrue of them true,
 * nval of them with a value (the others unknown), red the min/max/sum of the
 * values: an interval that holds whatever the unknown members turn out to be
 * (docs/rules.md, "Missing data", has the table). */
static struct iv reduce(uint8_t agg, size_t nmembers, size_t ntrue, size_t nval, double red)
{
    size_t nunk = nmembers - nval, nfalse = nval - ntrue;
    switch (agg) {
    case AGG_COUNT: return (struct iv){(double)ntrue, (double)(ntrue + nunk)};
    case AGG_SHARE:
        if (!nmembers)
            return IV_NONE;
        return (struct iv){(double)ntrue / (double)nmembers,
                           (double)(ntrue + nunk) / (double)nmembers};
    case AGG_ANY: return iv_bool(ntrue ? TRI_TRUE : nunk ? TRI_UNKNOWN : TRI_FALSE);
    case AGG_ALL:
        if (!nmembers || nfalse)
            return iv_bool(TRI_FALSE);
        return iv_bool(nunk ? TRI_UNKNOWN : TRI_TRUE);
    case AGG_MIN:
        if (!nval)
            return IV_NONE;
        return nunk ? (struct iv){-INFINITY, red} : iv_of(red);
    case AGG_MAX:
        if (!nval)
            return IV_NONE;
        return nunk ? (struct iv){red, INFINITY} : iv_of(red);
    case AGG_SUM: return nval && !nunk ? iv_of(red) : IV_NONE;
    case AGG_AVG: return nval && !nunk ? iv_of(red / (double)nval) : IV_NONE;
    }
    return IV_NONE;
}

/* Folds v into red, the min/max (nval values so far) or the sum (from 0). */
static inline double fold(uint8_t agg, double red, size_t nval, double v)
{
    switch (agg) {
    case AGG_MIN: return !nval || v < red ? v : red;
    case AGG_MAX: return !nval || v > red ? v : red;
    default: return red + v;
    }
}

/* The full recompute: runs the inner code for every member at now. Used when
 * the cache cannot be (time went backwards, out of memory), and by the tests
 * as the reference. */
static struct iv sensors_full(struct cb_engine *e, const struct rules__rule *r,
                              struct rules__code c, uint8_t agg, struct inst *in, int64_t now)
{
    size_t ntrue = 0, nval = 0;
    double red = 0;
    for (uint32_t i = in->nmv; i-- > 0;) {
        double v = run(e, r, c, in, in->mv[i], now);
        ntrue += (size_t)truthy(v);
        if (v == v)
            red = fold(agg, red, nval++, v);
    }
    return reduce(agg, in->nmv, ntrue, nval, red);
}

static double run_until(struct cb_engine *e, const struct rules__rule *r, struct rules__code c,
                        struct binding *b, int64_t now, int64_t *until);

/* The cache of the OP_SENSORS op at index op of in's rule, created (every
 * member dirty) on first use. NULL on OOM. */
static struct gcache *gcache_of(struct inst *in, uint32_t op)
{
    for (uint32_t i = 0; i < in->ngc; i++)
        if (in->gc[i].op == op)
            return &in->gc[i];
    struct gcache *gc = realloc(in->gc, ((size_t)in->ngc + 1) * sizeof *gc);
    if (!gc)
        return NULL;
    in->gc = gc;
    struct gcache *g = &gc[in->ngc];
    memset(g, 0, sizeof *g);
    g->op = op;
    for (uint32_t i = 0; i < in->nmv; i++)
        if (gslot_add(g) < 0) {
            free(g->m);
            free(g->heap);
            return NULL;
        }
    in->ngc++;
    return g;
}

/* `agg(sensors: c)` of instance in at now, the OP_SENSORS op being at index
 * op: recomputes the members whose cached value may have changed by now
 * (dirty, or a window sample or an age() threshold passed), then reads the
 * counts. Gives what sensors_full gives. */
static struct iv sensors_agg(struct cb_engine *e, const struct rules__rule *r,
                             struct rules__code c, uint8_t agg, struct inst *in, uint32_t op,
                             int64_t now)
{
    if (!in)
        return IV_NONE;
    struct gcache *g = now >= e->hi_now && !e->no_group_cache ? gcache_of(in, op) : NULL;
    if (!g)
        return sensors_full(e, r, c, agg, in, now);
    while (g->n && g->m[g->heap[0]].until <= now) {
        uint32_t mi = g->heap[0];
        int64_t until;
        gslot_set(g, mi, run_until(e, r, c, in->mv[mi], now, &until));
        g->m[mi].until = until > now ? until : now + 1;
        sift_down(g, 0);
    }
    if (g->changed && agg != AGG_COUNT && agg != AGG_SHARE && agg != AGG_ANY && agg != AGG_ALL) {
        size_t nval = 0;
        double red = 0;
        for (uint32_t i = g->n; i-- > 0;) {
            double v = g->m[i].v;
            if (v == v)
                red = fold(agg, red, nval++, v);
        }
        g->red = red;
        g->changed = 0;
    }
    return reduce(agg, g->n, g->ntrue, g->nval, g->red);
}

/* x OP y for the binary operators: NaN is "no value" (three-valued logic for
 * and/or), division by zero and overflow give no value. */
static inline double binop(uint8_t opcode, double x, double y)
{
    switch ((enum rules__opcode)opcode) {
    case OP_ADD: x = x + y; break;
    case OP_SUB: x = x - y; break;
    case OP_MUL: x = x * y; break;
    case OP_DIV: x = y == 0.0 ? NAN : x / y; break;
    case OP_GT: x = (x != x || y != y) ? NAN : (double)(x > y); break;
    case OP_GE: x = (x != x || y != y) ? NAN : (double)(x >= y); break;
    case OP_LT: x = (x != x || y != y) ? NAN : (double)(x < y); break;
    case OP_LE: x = (x != x || y != y) ? NAN : (double)(x <= y); break;
    case OP_EQ: x = (x != x || y != y) ? NAN : (double)(x == y); break;
    case OP_NE: x = (x != x || y != y) ? NAN : (double)(x != y); break;
    case OP_AND: x = (x == 0.0 || y == 0.0) ? 0.0 : (x != x || y != y) ? NAN : 1.0; break;
    case OP_OR: x = (truthy(x) || truthy(y)) ? 1.0 : (x != x || y != y) ? NAN : 0.0; break;
    default: x = NAN; break;
    }
    if (!isfinite(x) && x == x)
        x = NAN; /* overflow to infinity: no meaningful value */
    return x;
}

static inline double min4(double a, double b, double c, double d)
{
    double x = a < b ? a : b, y = c < d ? c : d;
    return x < y ? x : y;
}

static inline double max4(double a, double b, double c, double d)
{
    double x = a > b ? a : b, y = c > d ? c : d;
    return x > y ? x : y;
}

/* x OP y over intervals: every value the result can take for some x and y
 * in theirs. Comparisons and and/or give three-valued truth (rules.md:
 * false and unknown is false, true or unknown is true). As with known
 * values, division by an interval that holds 0 and any overflow of known
 * values give no value. */
static struct iv iv_binop(uint8_t opcode, struct iv x, struct iv y)
{
    struct iv r;
    switch ((enum rules__opcode)opcode) {
    case OP_ADD: r = (struct iv){x.lo + y.lo, x.hi + y.hi}; break;
    case OP_SUB: r = (struct iv){x.lo - y.hi, x.hi - y.lo}; break;
    case OP_MUL:
        r = (struct iv){min4(x.lo * y.lo, x.lo * y.hi, x.hi * y.lo, x.hi * y.hi),
                        max4(x.lo * y.lo, x.lo * y.hi, x.hi * y.lo, x.hi * y.hi)};
        break;
    case OP_DIV:
        if (y.lo <= 0.0 && y.hi >= 0.0)
            return IV_NONE;
        r = (struct iv){min4(x.lo / y.lo, x.lo / y.hi, x.hi / y.lo, x.hi / y.hi),
                        max4(x.lo / y.lo, x.lo / y.hi, x.hi / y.lo, x.hi / y.hi)};
        break;
    case OP_GT: return iv_bool(x.lo > y.hi ? TRI_TRUE : x.hi <= y.lo ? TRI_FALSE : TRI_UNKNOWN);
    case OP_GE: return iv_bool(x.lo >= y.hi ? TRI_TRUE : x.hi < y.lo ? TRI_FALSE : TRI_UNKNOWN);
    case OP_LT: return iv_bool(x.hi < y.lo ? TRI_TRUE : x.lo >= y.hi ? TRI_FALSE : TRI_UNKNOWN);
    case OP_LE: return iv_bool(x.hi <= y.lo ? TRI_TRUE : x.lo > y.hi ? TRI_FALSE : TRI_UNKNOWN);
    case OP_EQ:
    case OP_NE: {
        enum tri eq = iv_known(x) && iv_known(y) && x.lo == y.lo ? TRI_TRUE
                      : x.hi < y.lo || y.hi < x.lo              ? TRI_FALSE
                                                                : TRI_UNKNOWN;
        if (opcode == OP_NE && eq != TRI_UNKNOWN)
            eq = eq == TRI_TRUE ? TRI_FALSE : TRI_TRUE;
        return iv_bool(eq);
    }
    case OP_AND: {
        enum tri a = iv_truth(x), b = iv_truth(y);
        return iv_bool(a == TRI_FALSE || b == TRI_FALSE ? TRI_FALSE
                       : a == TRI_TRUE && b == TRI_TRUE ? TRI_TRUE
                                                        : TRI_UNKNOWN);
    }
    case OP_OR: {
        enum tri a = iv_truth(x), b = iv_truth(y);
        return iv_bool(a == TRI_TRUE || b == TRI_TRUE ? TRI_TRUE
                       : a == TRI_FALSE && b == TRI_FALSE ? TRI_FALSE
                                                          : TRI_UNKNOWN);
    }
    default: return IV_NONE;
    }
    if (r.lo != r.lo || r.hi != r.hi)
        return IV_NONE; /* inf - inf, 0 * inf: nothing can be said */
    if (iv_known(x) && iv_known(y) && !(isfinite(r.lo) && isfinite(r.hi)))
        return IV_NONE; /* overflow of known values: no meaningful value */
    return r;
}

/* Runs compiled code c of rule r for instance in; b is the sensor in context
 * (NULL in a group rule outside sensors:). Returns what the value can be
 * (struct iv). When lhs is not NULL, *lhs is set to the left operand of the
 * first comparison the code computes outside a `sensors:` inner expression
 * (postfix order: the leftmost innermost one, A of `A > B and C < D`), and
 * stays IV_NONE when it computes none. The stack lives on the C stack:
 * nothing is allocated per evaluation. */
static struct iv run_iv(struct cb_engine *e, const struct rules__rule *r, struct rules__code c,
                        struct inst *in, struct binding *b, int64_t now, struct iv *lhs)
{
    int have_lhs = 0;
    if (lhs)
        *lhs = IV_NONE;
    struct iv st[RULES_STACK_MAX + 1];
    int sp = 0;
    const struct rules__op *op = r->ops + c.start, *end = op + c.len;
    if (c.len == 0)
        return IV_NONE;
    for (; op < end; op++) {
        struct iv x, y;
        switch ((enum rules__opcode)op->op) {
        case OP_CONST:
            st[sp++] = iv_of(op->k);
            break;
        case OP_LATEST: {
            const struct series *s = b ? b->ser[op->slot] : NULL;
            st[sp++] = s && s->has && sensor_fresh(e, b->s, now) ? iv_of(s->last_v) : IV_NONE;
            break;
        }
        case OP_AGE:
            st[sp++] = b && b->s->has ? iv_of((double)(now - b->s->last_ts) / 1000.0) : IV_NONE;
            break;
        case OP_AGE_M: {
            const struct series *s = b ? b->ser[op->slot] : NULL;
            st[sp++] = s && s->has ? iv_of((double)(now - s->last_ts) / 1000.0) : IV_NONE;
            break;
        }
        case OP_WIN:
            st[sp++] = b && sensor_fresh(e, b->s, now)
                           ? iv_of(window_value(e, b->wins[op->slot], op->agg, op->k, now))
                           : IV_NONE;
            break;
        case OP_SENSORS: {
            struct rules__code inner = {(uint32_t)(op - r->ops) + 1, op->len};
            st[sp++] = sensors_agg(e, r, inner, op->agg, in, (uint32_t)(op - r->ops), now);
            op += op->len;
            break;
        }
        case OP_NEG:
            x = st[sp - 1];
            st[sp - 1] = (struct iv){-x.hi, -x.lo};
            break;
        case OP_NOT: {
            enum tri t = iv_truth(st[sp - 1]);
            st[sp - 1] = iv_bool(t == TRI_UNKNOWN ? t : t == TRI_TRUE ? TRI_FALSE : TRI_TRUE);
            break;
        }
        default:
            if (lhs && !have_lhs && op->op >= OP_GT && op->op <= OP_NE) {
                *lhs = st[sp - 2];
                have_lhs = 1;
            }
            y = st[--sp];
            st[sp - 1] = iv_binop(op->op, st[sp - 1], y);
            break;
        }
    }
    return sp ? st[sp - 1] : IV_NONE;
}

/* The scalar face of run_iv: the value, or NaN when it is not known. A
 * member's inner expression of a `sensors:` aggregate is always known or
 * not at all, so this is what the member caches store. */
static double run(struct cb_engine *e, const struct rules__rule *r, struct rules__code c,
                  struct inst *in, struct binding *b, int64_t now)
{
    return iv_scalar(run_iv(e, r, c, in, b, now, NULL));
}

/* A value of run_until's stack: the value at now, how fast it changes with
 * time (per ms: age() and what is linear in it), and the time until which it
 * cannot change otherwise (INT64_MAX: only a new sample changes it). */
struct tval {
    double v, slope;
    int64_t until;
};

/* The earliest time after now at which a comparison of a (changing at
 * d.slope per ms) with 0 can flip, or INT64_MAX. Rounded down and one ms
 * early, so it is never late. */
static int64_t crossing(double d, double slope, int64_t now)
{
    if (d != d || slope == 0.0)
        return INT64_MAX;
    double dt = -d / slope; /* when d + slope * dt == 0 */
    if (dt < 0)
        return INT64_MAX;  /* moving away from the threshold */
    if (dt > 1e15)
        return INT64_MAX;
    return now + (int64_t)floor(dt) - 1;
}

/* Runs the inner code c of a `sensors:` aggregate for member b at now, as run()
 * does (the same ops, the same arithmetic), and sets *until to the earliest
 * time its value may differ without a new sample of b: a window's oldest
 * sample leaving, or a comparison on age() flipping. Values that change with
 * time themselves (age() returned as is) give until <= now: recompute always. */
static double run_until(struct cb_engine *e, const struct rules__rule *r, struct rules__code c,
                        struct binding *b, int64_t now, int64_t *until)
{
    struct tval st[RULES_STACK_MAX + 1];
    int sp = 0;
    const struct rules__op *op = r->ops + c.start, *end = op + c.len;
    *until = INT64_MAX;
    if (c.len == 0)
        return NAN;
    for (; op < end; op++) {
        struct tval x = {NAN, 0.0, INT64_MAX}, y;
        switch ((enum rules__opcode)op->op) {
        case OP_CONST:
            x.v = op->k;
            break;
        case OP_LATEST: {
            const struct series *s = b->ser[op->slot];
            if (s->has && sensor_fresh(e, b->s, now)) {
                x.v = s->last_v;
                x.until = b->s->last_ts + e->opts.stale_after_ms + 1; /* it goes stale then */
            }
            break;
        }
        case OP_AGE:
            if (b->s->has)
                x.v = (double)(now - b->s->last_ts) / 1000.0, x.slope = 1.0 / 1000.0;
            break;
        case OP_AGE_M: {
            const struct series *s = b->ser[op->slot];
            if (s->has)
                x.v = (double)(now - s->last_ts) / 1000.0, x.slope = 1.0 / 1000.0;
            break;
        }
        case OP_WIN: {
            if (!sensor_fresh(e, b->s, now))
                break;
            struct rules__window *w = b->wins[op->slot];
            x.v = window_value(e, w, op->agg, op->k, now);
            x.until = b->s->last_ts + e->opts.stale_after_ms + 1;
            if (w->n && w->buf[w->head].ts + w->width_ms < x.until)
                x.until = w->buf[w->head].ts + w->width_ms; /* the oldest sample leaves */
            break;
        }
        case OP_NEG:
            x = st[--sp];
            x.v = -x.v;
            x.slope = -x.slope;
            break;
        case OP_NOT:
            x = st[--sp];
            x.v = x.v != x.v ? NAN : (x.v == 0.0 ? 1.0 : 0.0);
            if (x.slope != 0.0)
                x.until = now, x.slope = 0.0;
            break;
        default:
            y = st[--sp];
            x = st[--sp];
            double v = binop(op->op, x.v, y.v), slope = 0.0;
            int64_t u = x.until < y.until ? x.until : y.until;
            if (x.slope != 0.0 || y.slope != 0.0) {
                switch ((enum rules__opcode)op->op) {
                case OP_ADD: slope = x.slope + y.slope; break;
                case OP_SUB: slope = x.slope - y.slope; break;
                case OP_MUL:
                    if (x.slope == 0.0 || y.slope == 0.0)
                        slope = x.slope * y.v + y.slope * x.v;
                    else
                        u = now;
                    break;
                case OP_DIV:
                    if (y.slope == 0.0)
                        slope = x.slope / y.v;
                    else
                        u = now;
                    break;
                case OP_GT:
                case OP_GE:
                case OP_LT:
                case OP_LE:
                case OP_EQ:
                case OP_NE: {
                    int64_t t = crossing(x.v - y.v, x.slope - y.slope, now);
                    if (t < u)
                        u = t;
                    break;
                }
                default: u = now; break; /* and/or on a value changing with time */
                }
                if (v != v || !isfinite(slope))
                    slope = 0.0, u = u < now ? u : now;
            }
            x = (struct tval){v, v == v ? slope : 0.0, u};
            break;
        }
        st[sp++] = x;
    }
    struct tval res = sp ? st[sp - 1] : (struct tval){NAN, 0.0, INT64_MAX};
    *until = res.slope != 0.0 ? now : res.until;
    return res.v;
}

static struct binding *context_of(const struct inst *in)
{
    return in->rule->nper || !in->nmv ? NULL : in->mv[0];
}

static void render_number(struct cb_strbuf *out, const struct rules__tpl_part *p, double v)
{
    if (p->fmt == 'd')
        cb_strbuf_printf(out, "%.0f", v);
    else if (p->fmt)
        cb_strbuf_printf(out, p->fmt == 'f' ? "%.*f" : p->fmt == 'e' ? "%.*e" : "%.*g",
                         p->prec < 0 ? 6 : p->prec, v);
    else
        cb_strbuf_printf(out, "%.6g", v);
}

/* A template value: the number when known; what is known of it otherwise
 * ("2..3" for a count with an unknown sensor, ">=3.4" or "<=1.2" for a max or
 * min over some unknown sensors), "n/a" when nothing is. */
static void render_value(struct cb_strbuf *out, const struct rules__tpl_part *p, struct iv v)
{
    if (iv_known(v)) {
        render_number(out, p, v.lo);
    } else if (isfinite(v.lo) && isfinite(v.hi)) {
        render_number(out, p, v.lo);
        cb_strbuf_puts(out, "..");
        render_number(out, p, v.hi);
    } else if (isfinite(v.lo)) {
        cb_strbuf_puts(out, ">=");
        render_number(out, p, v.lo);
    } else if (isfinite(v.hi)) {
        cb_strbuf_puts(out, "<=");
        render_number(out, p, v.hi);
    } else {
        cb_strbuf_puts(out, "n/a");
    }
}

/* Renders the message template of language lang of the instance at now into
 * e->msg[lang] (NULL when the rule has no message in that language, or on
 * OOM). Called at transitions only: the hot path renders nothing. */
static const char *render(struct cb_engine *e, struct inst *in, int64_t now, int lang)
{
    const struct rules__rule *r = in->rule;
    const struct rules__text *x = &r->lang[lang];
    struct cb_strbuf *b = &e->msg[lang];
    if (!x->has_msg)
        return NULL;
    cb_strbuf_reset(b);
    const char *title = x->title ? x->title : r->title ? r->title : r->name;
    for (size_t i = 0; i < x->nmsg; i++) {
        const struct rules__tpl_part *p = &x->msg[i];
        switch (p->kind) {
        case TPL_TEXT: cb_strbuf_puts(b, p->text); break;
        case TPL_RULE: cb_strbuf_puts(b, r->name); break;
        case TPL_SEVERITY: cb_strbuf_puts(b, cb_severity_name(in->sev)); break;
        case TPL_TITLE: cb_strbuf_puts(b, title); break;
        case TPL_ID: cb_strbuf_puts(b, in->id); break;
        case TPL_LABEL:
            for (size_t k = 0; k < in->nlabels; k++)
                if (strcmp(in->labels[k].name, p->text) == 0)
                    cb_strbuf_puts(b, in->labels[k].value);
            break;
        case TPL_EXPR:
            render_value(b, p, run_iv(e, r, p->code, in, context_of(in), now, NULL));
            break;
        }
    }
    return b->oom ? NULL : b->data;
}

/* Fills the transition's texts from the rule and the per-language messages
 * msgs (rendered now, or kept from the last transition): message is the
 * first language's with one; titles and messages per language only for a
 * rule that gives languages (cb_transition). */
static void set_texts(struct cb_transition *t, const struct rules__rule *r,
                      const char *const *msgs)
{
    t->title = r->title;
    t->message = r->msg_lang >= 0 ? msgs[r->msg_lang] : NULL;
    for (int l = 0; l < CB_LANGS; l++) {
        t->titles[l] = r->tagged ? r->lang[l].title : NULL;
        t->messages[l] = r->tagged ? msgs[l] : NULL;
    }
}

/* The newest sample time of the instance's sensors (0 when none). */
static int64_t inst_last_sample(const struct inst *in)
{
    int64_t last = 0;
    for (uint32_t i = 0; i < in->nmv; i++) {
        const struct sensor *sn = in->mv[i]->s;
        if (sn->has && sn->last_ts > last)
            last = sn->last_ts;
    }
    return last;
}

/* rules.md: an alert whose verdict is unknown, or whose sensors all went
 * silent, stays as it is and is marked stale. A change is a change of the
 * listing, so it moves the version (the API's cache) and is persisted (a
 * PROGRESS record), without being an event. */
static void update_stale(struct cb_engine *e, struct inst *in, int64_t now)
{
    int stale = 0;
    if (in->state == ST_FIRING) {
        int64_t last = inst_last_sample(in);
        stale = in->unknown || last == 0 || now - last > e->opts.stale_after_ms;
    }
    if (stale != in->stale) {
        in->stale = stale;
        e->version++;
        if (in->state == ST_FIRING)
            emit(e, in, CB_ALERT_PROGRESS, now);
    }
}

/* Records whether the instance's last verdict was unknown (no evidence
 * either way), which marks a firing instance stale. */
static void set_unknown(struct cb_engine *e, struct inst *in, int unknown, int64_t now)
{
    if (unknown == in->unknown)
        return;
    in->unknown = unknown;
    int was = in->stale;
    update_stale(e, in, now);
    if (in->stale == was && in->state == ST_FIRING)
        emit(e, in, CB_ALERT_PROGRESS, now); /* a restart must know it too */
}

static void describe(struct cb_engine *e, struct inst *in, enum cb_alert_state state, int64_t now,
                     struct cb_transition *t, int with_message)
{
    const struct rules__rule *r = in->rule;
    memset(t, 0, sizeof *t);
    t->id = in->id;
    t->rule = r->name;
    t->state = state;
    t->severity = in->sev;
    t->labels = in->labels;
    t->nlabels = in->nlabels;
    t->at = now;
    t->since = in->since;
    const char *msgs[CB_LANGS] = {0};
    for (int l = 0; with_message && l < CB_LANGS; l++)
        msgs[l] = render(e, in, now, l);
    set_texts(t, r, msgs);
    t->notify = (const char *const *)r->notify;
    t->nnotify = r->nnotify;
    t->acked_by = in->acked ? in->acked_by : NULL;
    t->ack_note = in->acked ? in->ack_note : NULL;
    t->cooldown_until = in->cooldown_until;
    t->stale = in->state == ST_FIRING && in->stale;
    t->last_sample = inst_last_sample(in);
    t->fired_at = in->state == ST_FIRING ? in->fired_at : 0;
    t->clear_since = in->state == ST_FIRING && in->has_clear_since ? in->clear_since : 0;
    t->unknown = in->state == ST_FIRING && in->unknown;
    t->value = in->value;
    t->rule_key = r->key;
    t->reason = e->reason;
    t->closed_by = e->closed_by;
    t->close_note = e->close_note;
}

static void emit(struct cb_engine *e, struct inst *in, enum cb_alert_state state, int64_t now)
{
    struct cb_transition t;
    int event = state != CB_ALERT_PENDING && state != CB_ALERT_INACTIVE;
    /* A PROGRESS record (stale marked, clear progress), and what an operator
     * or the engine does to a stale instance (an acknowledgement, a close by
     * hand, a rule removed, an escalation "after ... unacked" that only the
     * clock brought) render nothing: they keep the texts of the last
     * transition, which the unknown values of silent sensors ("n/a") must not
     * replace. Transitions on evidence render anew. */
    int by_hand = state == CB_ALERT_ACKNOWLEDGED || (state == CB_ALERT_RESOLVED && e->reason) ||
                  (state == CB_ALERT_ESCALATED && e->by_clock);
    int keep = state == CB_ALERT_PROGRESS || (by_hand && in->state == ST_FIRING && in->stale);
    describe(e, in, state, now, &t, event && !keep);
    if (keep)
        set_texts(&t, in->rule, (const char *const *)in->msg);
    e->st.transitions++;
    e->version++;
    /* The listing shows an instance as its last transition told it, so a
     * listing changes only with a transition (cb_engine_version). On OOM the
     * previous message stays. */
    for (int l = 0; event && !keep && state != CB_ALERT_RESOLVED && l < CB_LANGS; l++) {
        const char *text = l == in->rule->msg_lang ? t.message : t.messages[l];
        char *m = text ? rules__strdup(text) : NULL;
        if (m) {
            free(in->msg[l]);
            in->msg[l] = m;
        }
    }
    if (e->fn)
        e->fn(e->ctx, &t);
}

/* Resolves a firing instance: on evidence (reason NULL), or because the
 * engine or an operator ended it (the reason is in the transition). */
static void resolve(struct cb_engine *e, struct inst *in, int64_t now, const char *reason)
{
    in->cooldown_until = in->rule->cooldown_ms ? now + in->rule->cooldown_ms : 0;
    e->reason = reason;
    emit(e, in, CB_ALERT_RESOLVED, now);
    e->reason = NULL;
    in->state = ST_INACTIVE;
    in->sev = in->rule->severity;
    in->since = in->fired_at = 0;
    in->has_clear_since = 0;
    in->stale = in->unknown = 0;
    in->acked = 0;
    free(in->acked_by);
    free(in->ack_note);
    in->acked_by = in->ack_note = NULL;
    msgs_free(in);
}

/* Raises the severity of a firing instance to the highest escalation that
 * applies now; severities never go down before the alert resolves. */
static void escalate(struct cb_engine *e, struct inst *in, int64_t now)
{
    const struct rules__rule *r = in->rule;
    enum cb_severity best = in->sev;
    int by_clock = 0; /* the highest applies by time alone, with no evidence */
    for (size_t i = 0; i < r->nesc; i++) {
        const struct rules__escalation *x = &r->esc[i];
        if (x->level <= best)
            continue;
        if (x->after ? (!in->acked && now - in->fired_at >= x->after_ms)
                     : iv_truth(run_iv(e, r, x->cond, in, context_of(in), now, NULL)) == TRI_TRUE) {
            best = x->level;
            by_clock = x->after;
        }
    }
    if (best > in->sev) {
        in->sev = best;
        e->by_clock = by_clock;
        emit(e, in, CB_ALERT_ESCALATED, now);
        e->by_clock = 0;
    }
}

/* The state machine of one instance at now: inactive -> pending -> firing ->
 * resolved (inactive), with escalation while firing. Only evidence moves it
 * (rules.md, "Missing data"): it fires when `when` is true and resolves when
 * its clear condition is true; an unknown verdict keeps it as it is and marks
 * it unknown (shown as stale). Two choices where rules.md is silent, both
 * made so no alert is missed and no all-clear is given without evidence: an
 * unknown `when` keeps a pending instance's `for` progress (it was never seen
 * false), while an unknown clear condition restarts `clear ... for` (the
 * all-clear needs the whole span of evidence). */
static void evaluate(struct cb_engine *e, struct inst *in, int64_t now)
{
    const struct rules__rule *r = in->rule;
    struct binding *b = context_of(in);
    struct iv lhs;
    enum tri w = iv_truth(run_iv(e, r, r->when, in, b, now, &lhs));
    in->value = iv_scalar(lhs);
    if (in->state != ST_FIRING) {
        set_unknown(e, in, w == TRI_UNKNOWN, now);
        if (w != TRI_TRUE) {
            if (w == TRI_FALSE && in->state == ST_PENDING) {
                in->state = ST_INACTIVE;
                emit(e, in, CB_ALERT_INACTIVE, now);
                in->since = 0;
            }
            return;
        }
        if (in->cooldown_until && now < in->cooldown_until)
            return;
        if (in->state == ST_INACTIVE) {
            in->state = ST_PENDING;
            in->since = now;
            if (r->for_ms > 0) {
                emit(e, in, CB_ALERT_PENDING, now);
                return;
            }
        }
        if (now - in->since < r->for_ms)
            return;
        in->state = ST_FIRING;
        in->fired_at = now;
        in->has_clear_since = 0;
        in->acked = 0;
        in->sev = r->severity;
        emit(e, in, CB_ALERT_FIRING, now);
        escalate(e, in, now);
        return;
    }
    enum tri clear;
    if (r->has_clear)
        clear = iv_truth(run_iv(e, r, r->clear, in, b, now, NULL));
    else
        clear = w == TRI_UNKNOWN ? TRI_UNKNOWN : w == TRI_TRUE ? TRI_FALSE : TRI_TRUE;
    set_unknown(e, in, clear == TRI_UNKNOWN, now);
    if (clear == TRI_TRUE) {
        if (!in->has_clear_since) {
            in->has_clear_since = 1;
            in->clear_since = now;
            if (r->clear_for_ms > 0)
                emit(e, in, CB_ALERT_PROGRESS, now);
        }
        if (now - in->clear_since >= r->clear_for_ms) {
            resolve(e, in, now, NULL);
            return;
        }
    } else if (in->has_clear_since) {
        in->has_clear_since = 0;
        emit(e, in, CB_ALERT_PROGRESS, now);
    }
    escalate(e, in, now);
}

/* ---- restored instances whose rule is gone or changed ---------------------------------- */

/* A copy of saved's labels (names and values packed in one block). */
static struct cb_label *labels_copy(const struct cb_transition *saved)
{
    size_t n = saved->nlabels;
    const char **names = calloc(n ? 2 * n : 1, sizeof *names);
    size_t *vlens = calloc(n ? n : 1, sizeof *vlens);
    struct cb_label *l = NULL;
    if (names && vlens) {
        for (size_t i = 0; i < n; i++) {
            names[i] = saved->labels[i].name;
            names[n + i] = saved->labels[i].value;
            vlens[i] = strlen(saved->labels[i].value);
        }
        l = labels_pack(names, names + n, vlens, n);
    }
    free(names);
    free(vlens);
    return l;
}

static void orphan_free(struct orphan *o)
{
    free(o->id);
    free(o->rule);
    free(o->message);
    free(o->labels);
}

/* Queues the end of a stored instance whose rule is gone or changed. 0 or -1. */
static int orphan_add(struct cb_engine *e, const struct cb_transition *saved, const char *reason)
{
    struct orphan *v = realloc(e->orphans, (e->norphans + 1) * sizeof *v);
    if (!v)
        return -1;
    e->orphans = v;
    struct orphan *o = &v[e->norphans];
    *o = (struct orphan){
        .id = rules__strdup(saved->id), .rule = rules__strdup(saved->rule),
        .message = saved->message ? rules__strdup(saved->message) : NULL,
        .labels = labels_copy(saved), .nlabels = saved->nlabels,
        .state = saved->state == CB_ALERT_PENDING ? CB_ALERT_INACTIVE : CB_ALERT_RESOLVED,
        .sev = saved->severity, .since = saved->since, .reason = reason,
    };
    if (!o->id || !o->rule || !o->labels || (saved->message && !o->message)) {
        orphan_free(o);
        return -1;
    }
    e->norphans++;
    return 0;
}

/* Ends the queued orphans: each is one transition with its reason. */
static void end_orphans(struct cb_engine *e, int64_t now)
{
    for (size_t i = 0; i < e->norphans; i++) {
        struct orphan *o = &e->orphans[i];
        struct cb_transition t = {
            .id = o->id, .rule = o->rule, .state = o->state, .severity = o->sev,
            .labels = o->labels, .nlabels = o->nlabels, .at = now, .since = o->since,
            .message = o->message, .reason = o->reason, .value = NAN,
        };
        e->st.transitions++;
        e->version++;
        if (e->fn)
            e->fn(e->ctx, &t);
        orphan_free(o);
    }
    free(e->orphans);
    e->orphans = NULL;
    e->norphans = 0;
}

/* ---- the public engine --------------------------------------------------------------------- */

static int build_rulemap(struct cb_engine *e)
{
    rules__map_free(&e->rulemap);
    for (size_t i = 0; i < e->rs->nrules; i++)
        if (rules__map_put(&e->rulemap, e->rs->rules[i].name, (void *)(uintptr_t)(i + 1)) < 0)
            return -1;
    return 0;
}

struct cb_engine *cb_engine_new(struct cb_ruleset *rs, const struct cb_clock *clock,
                                const struct cb_engine_options *opts,
                                cb_transition_fn on_transition, void *ctx)
{
    struct cb_engine *e = calloc(1, sizeof *e);
    if (!e)
        return NULL;
    e->rs = rs;
    rs->refs++;
    e->clock = clock;
    e->opts.max_skew_ms = opts && opts->max_skew_ms ? opts->max_skew_ms : 60000;
    e->opts.lateness_ms = opts && opts->lateness_ms ? opts->lateness_ms : 300000;
    e->opts.stale_after_ms = opts && opts->stale_after_ms ? opts->stale_after_ms : 600000;
    e->fn = on_transition;
    e->ctx = ctx;
    for (int l = 0; l < CB_LANGS; l++)
        cb_strbuf_init(&e->msg[l]);
    if (build_rulemap(e) < 0) {
        cb_engine_free(e);
        return NULL;
    }
    return e;
}

void cb_engine_free(struct cb_engine *e)
{
    if (!e)
        return;
    for (size_t i = 0; i < e->nsens; i++)
        sensor_free(e, e->sensv[i]);
    free(e->sensv);
    for (size_t i = 0; i < e->ninst; i++)
        inst_free(e->instv[i]);
    free(e->instv);
    rules__map_free(&e->sensors);
    rules__map_free(&e->insts);
    rules__map_free(&e->rulemap);
    for (size_t i = 0; i < e->norphans; i++)
        orphan_free(&e->orphans[i]);
    free(e->orphans);
    free(e->scratch);
    free(e->tags);
    for (int l = 0; l < CB_LANGS; l++)
        cb_strbuf_free(&e->msg[l]);
    cb_ruleset_release(e->rs);
    free(e);
}

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Feeds one accepted sample into the sensor's series and windows, and marks
 * the sensor dirty in the caches of its group instances. */
static int feed(struct cb_engine *e, struct sensor *s, const struct cb_sample *x, int64_t now)
{
    if (now > e->hi_now)
        e->hi_now = now;
    for (size_t i = 0; i < s->nb; i++) {
        struct binding *b = s->b[i];
        if (b->inst)
            for (uint32_t k = 0; k < b->inst->ngc; k++)
                gslot_dirty(&b->inst->gc[k], b->mi);
    }
    if (!s->has || x->ts_ms >= s->last_ts) {
        s->last_ts = x->ts_ms;
        s->has = 1;
    }
    struct series *ser = find_series(s, x->metric);
    if (!ser)
        return 0;
    if (!ser->has || x->ts_ms >= ser->last_ts) {
        ser->last_ts = x->ts_ms;
        ser->last_v = x->value;
        ser->has = 1;
    }
    for (size_t i = 0; i < ser->nwins; i++) {
        if (rules__window_insert(ser->wins[i], x->ts_ms, x->value, now) < 0)
            return -1;
        /* Trim here too, not only when read: a window that only escalate or
         * message read (evaluated while the alert fires) would otherwise keep
         * every sample while the alert stays quiet. A read at a later now
         * would drop these samples anyway. */
        rules__window_expire(ser->wins[i], now);
    }
    return 0;
}

int cb_engine_offer(struct cb_engine *e, const char *topic, const char *device,
                    const struct cb_sample *samples, size_t n, enum cb_sample_verdict *verdicts,
                    const char **quarantine_rule)
{
    int64_t t0 = mono_ns();
    int64_t now = cb_clock_now(e->clock);
    int oom = 0;
    size_t accepted = 0;
    e->st.samples += n;
    struct sensor *s = sensor_for(e, topic, &oom);
    if (oom)
        return -1;
    if (s && device && (!s->device || strcmp(s->device, device) != 0)) {
        char *d = rules__strdup(device);
        if (d) {
            free(s->device);
            s->device = d;
        }
    }
    for (size_t i = 0; i < n; i++) {
        const struct cb_sample *x = &samples[i];
        enum cb_sample_verdict v = CB_SAMPLE_ACCEPTED;
        const char *qr = NULL;
        if (x->ts_ms > now + e->opts.max_skew_ms) {
            v = CB_SAMPLE_FUTURE;
            e->st.future++;
        } else if (x->ts_ms < now - e->opts.lateness_ms) {
            v = CB_SAMPLE_LATE;
            e->st.late++;
        } else if (s) {
            for (size_t k = 0; k < s->nb && !qr; k++) {
                const struct rules__rule *r = s->b[k]->rule;
                if (!isfinite(x->value))
                    qr = r->name;
                for (size_t j = 0; j < r->nvalid && !qr; j++)
                    if (strcmp(r->valid[j].metric, x->metric) == 0 &&
                        !(x->value >= r->valid[j].lo && x->value <= r->valid[j].hi))
                        qr = r->name;
            }
            if (qr) {
                v = CB_SAMPLE_QUARANTINED;
                e->st.quarantined++;
            } else if (feed(e, s, x, now) < 0) {
                oom = 1;
            } else {
                accepted++;
            }
        }
        if (verdicts)
            verdicts[i] = v;
        if (quarantine_rule)
            quarantine_rule[i] = qr;
    }
    if (s && accepted) {
        for (size_t k = 0; k < s->nb; k++)
            evaluate(e, s->b[k]->inst, now);
        e->st.evaluated += accepted * s->nb;
    }
    e->st.eval_ns += (uint64_t)(mono_ns() - t0);
    return oom ? -1 : 0;
}

void cb_engine_tick(struct cb_engine *e)
{
    int64_t now = cb_clock_now(e->clock);
    e->st.ticks++;
    if (e->norphans)
        end_orphans(e, now);
    /* evaluate() never adds or removes instances, so the vector is stable */
    for (size_t i = 0; i < e->ninst; i++) {
        evaluate(e, e->instv[i], now);
        update_stale(e, e->instv[i], now);
    }
}

int cb_engine_ack(struct cb_engine *e, const char *id, const char *by, const char *note)
{
    struct inst *in = rules__map_get(&e->insts, id);
    if (!in || in->state != ST_FIRING)
        return -1;
    if (in->acked)
        return 1;
    char *b = rules__strdup(by ? by : "");
    char *n = note ? rules__strdup(note) : NULL;
    if (!b || (note && !n)) {
        free(b);
        free(n);
        return -1;
    }
    in->acked = 1;
    in->acked_by = b;
    in->ack_note = n;
    in->acked_at = cb_clock_now(e->clock);
    emit(e, in, CB_ALERT_ACKNOWLEDGED, in->acked_at);
    return 0;
}

/* A firing instance kept across a swap takes its rule's new presentation:
 * a base severity raised above its own escalates it (an event), one lowered
 * applies when it was not escalated (recorded, no event: severities go down
 * only when the alert resolves, and this is the engineer's own correction);
 * the listing's message is rendered again from the new template. */
static void restyle(struct cb_engine *e, struct inst *in, const struct rules__rule *old_rule,
                    int64_t now)
{
    const struct rules__rule *r = in->rule;
    if (r->severity > in->sev) {
        in->sev = r->severity;
        emit(e, in, CB_ALERT_ESCALATED, now);
    } else if (r->severity < in->sev && in->sev == old_rule->severity) {
        in->sev = r->severity;
        emit(e, in, CB_ALERT_PROGRESS, now);
    }
    for (int l = 0; l < CB_LANGS; l++) {
        const char *m = render(e, in, now, l);
        char *copy = m ? rules__strdup(m) : NULL;
        if (copy || !r->lang[l].has_msg) {
            free(in->msg[l]);
            in->msg[l] = copy;
        }
    }
    e->version++;
}

/* Ends an instance whose rule is gone or changed: a firing one resolves with
 * the reason (an event, notified); a pending one becomes inactive. */
static void end_instance(struct cb_engine *e, struct inst *in, int64_t now, const char *reason)
{
    if (in->state == ST_FIRING) {
        resolve(e, in, now, reason);
    } else if (in->state == ST_PENDING) {
        in->state = ST_INACTIVE;
        e->reason = reason;
        emit(e, in, CB_ALERT_INACTIVE, now);
        e->reason = NULL;
    }
}

int cb_engine_close(struct cb_engine *e, const char *id, const char *by, const char *note)
{
    struct inst *in = rules__map_get(&e->insts, id);
    if (!in || in->state != ST_FIRING)
        return -1;
    if (!in->stale)
        return 1;
    e->closed_by = by;
    e->close_note = note;
    resolve(e, in, cb_clock_now(e->clock), "closed by hand");
    e->closed_by = e->close_note = NULL;
    return 0;
}

int cb_engine_swap(struct cb_engine *e, struct cb_ruleset *rs)
{
    struct cb_ruleset *old = e->rs;
    struct rules__map names = {0};
    int64_t now = cb_clock_now(e->clock);
    for (size_t i = 0; i < rs->nrules; i++)
        if (rules__map_put(&names, rs->rules[i].name, (void *)(uintptr_t)(i + 1)) < 0) {
            rules__map_free(&names);
            return -1;
        }
    /* instances: keep those whose rule's identity is unchanged (and apply
     * its new presentation); resolve and drop the others */
    for (size_t i = e->ninst; i-- > 0;) {
        struct inst *in = e->instv[i];
        uintptr_t k = (uintptr_t)rules__map_get(&names, in->rule->name);
        const struct rules__rule *nr = k ? &rs->rules[k - 1] : NULL;
        if (nr && strcmp(nr->key, in->rule->key) == 0) {
            const struct rules__rule *old_rule = in->rule;
            in->rule = nr;
            in->nmv = 0; /* the sensors bind again below */
            gcache_free(in);
            if (in->state == ST_FIRING)
                in->was = old_rule; /* restyled once its sensors are bound again */
            continue;
        }
        end_instance(e, in, now, nr ? "rule changed" : "rule removed");
        inst_remove(e, in);
    }
    rules__map_free(&names);
    /* sensors: bind again against the new rules; windows of the same
     * (metric, width) survive with their samples */
    rs->refs++;
    e->rs = rs;
    int rc = 0;
    size_t k = 0;
    for (size_t i = 0; i < e->nsens; i++) {
        struct sensor *s = e->sensv[i];
        struct binding **oldb = s->b;
        size_t oldn = s->nb;
        s->b = NULL;
        s->nb = 0;
        if (sensor_bind(e, s) < 0)
            rc = -1;
        for (size_t j = 0; j < oldn; j++)
            binding_free(oldb[j]);
        free(oldb);
        drop_unused_windows(e, s);
        if (s->nb == 0) {
            rules__map_del(&e->sensors, s->topic);
            sensor_free(e, s);
        } else {
            e->sensv[k++] = s;
        }
    }
    e->nsens = k;
    if (build_rulemap(e) < 0)
        rc = -1;
    for (size_t i = 0; i < e->ninst; i++)
        if (e->instv[i]->was) {
            restyle(e, e->instv[i], e->instv[i]->was, now);
            e->instv[i]->was = NULL;
        }
    cb_ruleset_release(old);
    e->version++; /* pending instances may be gone without a transition */
    return rc;
}

int cb_engine_restore(struct cb_engine *e, const struct cb_transition *saved, int acked,
                      int64_t acked_at)
{
    uintptr_t k = (uintptr_t)rules__map_get(&e->rulemap, saved->rule);
    const struct rules__rule *r = k ? &e->rs->rules[k - 1] : NULL;
    /* a row written before identity keys were stored (NULL) keeps its state */
    if (!r || (saved->rule_key && strcmp(saved->rule_key, r->key) != 0)) {
        if (saved->state == CB_ALERT_RESOLVED)
            return 1; /* a cooldown of a rule that is no more */
        return orphan_add(e, saved, r ? "rule changed" : "rule removed") ? -1 : 1;
    }
    char *id = rules__strdup(saved->id);
    struct cb_label *l = labels_copy(saved);
    if (!id || !l) {
        free(id);
        free(l);
        return -1;
    }
    struct inst *in = inst_get(e, r, id, l, saved->nlabels);
    if (!in)
        return -1;
    switch (saved->state) {
    case CB_ALERT_PENDING:
        in->state = ST_PENDING;
        in->since = saved->since ? saved->since : saved->at;
        break;
    case CB_ALERT_FIRING:
    case CB_ALERT_ESCALATED:
    case CB_ALERT_ACKNOWLEDGED:
        in->state = ST_FIRING;
        in->sev = saved->severity;
        in->since = saved->since ? saved->since : saved->at;
        in->fired_at = saved->fired_at       ? saved->fired_at
                       : saved->state == CB_ALERT_FIRING ? saved->at
                                                         : in->since;
        in->has_clear_since = saved->clear_since != 0;
        in->clear_since = saved->clear_since;
        in->stale = saved->stale != 0;
        in->unknown = saved->unknown != 0;
        if (acked) {
            in->acked = 1;
            in->acked_at = acked_at;
            in->acked_by = rules__strdup(saved->acked_by ? saved->acked_by : "");
            in->ack_note = saved->ack_note ? rules__strdup(saved->ack_note) : NULL;
        }
        /* Every language's message of the last transition (schema step 7);
         * a row written before that step has only the first language's. */
        msgs_free(in);
        for (int g = 0; g < CB_LANGS; g++) {
            const char *m = saved->messages[g];
            if (!m && g == in->rule->msg_lang)
                m = saved->message;
            if (m && !(in->msg[g] = rules__strdup(m)))
                return -1;
        }
        break;
    case CB_ALERT_RESOLVED:
        in->cooldown_until = saved->cooldown_until;
        break;
    default:
        break;
    }
    e->version++;
    return 0;
}

uint64_t cb_engine_version(const struct cb_engine *e) { return e->version; }

int cb_engine_prime(struct cb_engine *e, const char *topic, const struct cb_sample *x)
{
    int oom;
    struct sensor *s = sensor_for(e, topic, &oom);
    if (!s)
        return oom ? -1 : 0;
    return feed(e, s, x, cb_clock_now(e->clock));
}

int cb_engine_prime_latest(struct cb_engine *e, const char *topic, const struct cb_sample *x)
{
    int oom;
    struct sensor *s = sensor_for(e, topic, &oom);
    if (!s)
        return oom ? -1 : 0;
    if (!s->has || x->ts_ms > s->last_ts) {
        s->last_ts = x->ts_ms;
        s->has = 1;
    }
    struct series *ser = find_series(s, x->metric);
    if (ser && (!ser->has || x->ts_ms > ser->last_ts)) {
        ser->last_ts = x->ts_ms;
        ser->last_v = x->value;
        ser->has = 1;
    }
    return 0;
}

int64_t cb_engine_max_window_ms(const struct cb_engine *e)
{
    return e->rs->max_width_ms;
}

void cb_engine_get_stats(const struct cb_engine *e, struct cb_engine_stats *out)
{
    *out = e->st;
    out->instances = e->ninst;
    out->windows = e->nwindows;
    out->window_samples = 0;
    out->window_bytes = 0;
    for (size_t i = 0; i < e->nsens; i++) {
        const struct sensor *s = e->sensv[i];
        for (size_t j = 0; j < s->nseries; j++)
            for (size_t k = 0; k < s->series[j]->nwins; k++) {
                const struct rules__window *w = s->series[j]->wins[k];
                out->window_samples += w->n;
                out->window_bytes += rules__window_bytes(w);
            }
    }
}

void cb_engine_foreach_instance(const struct cb_engine *e, cb_transition_fn fn, void *ctx)
{
    struct cb_engine *me = (struct cb_engine *)e; /* rendering uses the message buffer */
    for (size_t i = 0; i < e->ninst; i++) {
        struct inst *in = e->instv[i];
        if (in->state == ST_INACTIVE)
            continue;
        struct cb_transition t;
        /* A firing instance raised above its rule's severity is listed as
         * escalated, so GET /api/alerts?state=escalated finds it. */
        enum cb_alert_state st = in->state == ST_PENDING      ? CB_ALERT_PENDING
                                 : in->sev > in->rule->severity ? CB_ALERT_ESCALATED
                                                                : CB_ALERT_FIRING;
        describe(me, in, st, in->state == ST_FIRING ? in->fired_at : in->since, &t, 0);
        if (in->state == ST_FIRING)
            set_texts(&t, in->rule, (const char *const *)in->msg);
        fn(ctx, &t);
    }
}

/* Appends the distinct metrics rule r reads (valid, latest values and age,
 * windows), as JSON strings separated by commas. */
static void rule_metrics_json(const struct rules__rule *r, struct cb_strbuf *out)
{
    size_t total = r->nvalid + r->nseries + r->nwins, n = 0;
    for (size_t i = 0; i < total; i++) {
        const char *m = i < r->nvalid                ? r->valid[i].metric
                        : i < r->nvalid + r->nseries ? r->series[i - r->nvalid]
                                                     : r->wins[i - r->nvalid - r->nseries].metric;
        int seen = 0;
        for (size_t k = 0; k < i && !seen; k++) {
            const char *o = k < r->nvalid                ? r->valid[k].metric
                            : k < r->nvalid + r->nseries ? r->series[k - r->nvalid]
                                                         : r->wins[k - r->nvalid - r->nseries].metric;
            seen = !strcmp(o, m);
        }
        if (seen)
            continue;
        if (n++)
            cb_strbuf_putc(out, ',');
        cb_strbuf_json_string(out, m, strlen(m));
    }
}

void cb_engine_rules_json(const struct cb_engine *e, struct cb_strbuf *out)
{
    const struct cb_ruleset *rs = e->rs;
    size_t *counts = calloc(rs->nrules * 2 + 1, sizeof *counts);
    if (counts)
        for (size_t i = 0; i < e->ninst; i++) {
            size_t k = (size_t)(e->instv[i]->rule - rs->rules);
            counts[2 * k]++;
            counts[2 * k + 1] += e->instv[i]->state == ST_FIRING;
        }
    cb_strbuf_putc(out, '[');
    for (size_t i = 0; i < rs->nrules; i++) {
        const struct rules__rule *r = &rs->rules[i];
        if (i)
            cb_strbuf_putc(out, ',');
        cb_strbuf_puts(out, "{\"name\":");
        cb_strbuf_json_string(out, r->name, strlen(r->name));
        cb_strbuf_puts(out, ",\"title\":");
        if (r->title)
            cb_strbuf_json_string(out, r->title, strlen(r->title));
        else
            cb_strbuf_puts(out, "null");
        if (r->tagged) {
            const char *titles[CB_LANGS];
            for (int l = 0; l < CB_LANGS; l++)
                titles[l] = r->lang[l].title;
            lang_object(out, "titles", titles);
        }
        /* the metrics the rule reads: the console shows their latest values
         * beside an alert's message */
        cb_strbuf_puts(out, ",\"metrics\":[");
        rule_metrics_json(r, out);
        cb_strbuf_puts(out, "],\"file\":");
        cb_strbuf_json_string(out, r->file, strlen(r->file));
        cb_strbuf_printf(out, ",\"line\":%d,\"match\":[", r->line);
        for (size_t k = 0; k < r->npats; k++) {
            const char *t = cb_topic_pattern_text(r->pats[k]);
            if (k)
                cb_strbuf_putc(out, ',');
            cb_strbuf_json_string(out, t, strlen(t));
        }
        cb_strbuf_puts(out, "],\"per\":[");
        for (size_t k = 0; k < r->nper; k++) {
            if (k)
                cb_strbuf_putc(out, ',');
            cb_strbuf_json_string(out, r->per[k], strlen(r->per[k]));
        }
        cb_strbuf_printf(out, "],\"severity\":\"%s\",\"instances\":%zu,\"firing\":%zu}",
                         cb_severity_name(r->severity), counts ? counts[2 * i] : 0,
                         counts ? counts[2 * i + 1] : 0);
    }
    cb_strbuf_putc(out, ']');
    free(counts);
}

size_t cb_engine_rule_count(const struct cb_engine *e) { return e->rs->nrules; }

int cb_engine_has_rule(const struct cb_engine *e, const char *name)
{
    return rules__map_get(&e->rulemap, name) != NULL;
}

void rules__engine_set_group_cache(struct cb_engine *e, int on)
{
    e->no_group_cache = !on;
}

size_t rules__engine_check_groups(struct cb_engine *e, size_t *compared)
{
    int64_t now = cb_clock_now(e->clock);
    size_t bad = 0, n = 0;
    for (size_t i = 0; i < e->ninst; i++) {
        struct inst *in = e->instv[i];
        const struct rules__rule *r = in->rule;
        for (uint32_t k = 0; k < in->ngc; k++) {
            const struct rules__op *op = &r->ops[in->gc[k].op];
            struct rules__code inner = {in->gc[k].op + 1, op->len};
            struct iv a = sensors_agg(e, r, inner, op->agg, in, in->gc[k].op, now);
            struct iv b = sensors_full(e, r, inner, op->agg, in, now);
            n++;
            if (!(a.lo == b.lo && a.hi == b.hi && signbit(a.lo) == signbit(b.lo) &&
                  signbit(a.hi) == signbit(b.hi)))
                bad++;
        }
    }
    if (compared)
        *compared = n;
    return bad;
}
