/* Silences: label matchers, their validation and matching, and the set of
 * silences the module holds (docs/alerts.md "Silences").
 *
 * A matcher is `name op value`: `=` equal, `!=` not equal, `=~` matches,
 * `!~` does not match, the last two a POSIX extended regular expression
 * anchored at both ends, as Alertmanager does. A missing label matches as
 * "", and the names `rule` and `id` stand for the rule name and the instance
 * id unless the instance has a label of that name. Every matcher of a
 * silence must match. Nothing here logs or touches the store: alerts.c
 * persists, audits and logs. */
#include "alerts/alerts_int.h"
#include "base/regex.h"

#include <cjson/cJSON.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The operators, in the order of enum match_op. */
enum match_op { OP_EQ, OP_NE, OP_RE, OP_NRE };
static const struct {
    const char *text;
    int negate, regex;
} ops[] = {{"=", 0, 0}, {"!=", 1, 0}, {"=~", 0, 1}, {"!~", 1, 1}};

struct matcher {
    char *name, *value;
    enum match_op op;
    regex_t re; /* =~ and !~ */
};

struct alerts__silence {
    int64_t id, starts, ends, created_at, expired_at;
    char *matchers_json; /* canonical: [{"name","op","value"}...] */
    char *comment, *created_by, *expired_by;
    struct matcher *m;
    size_t nm;
};

void alerts__silence_free(struct alerts__silence *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->nm; i++) {
        free(s->m[i].name);
        free(s->m[i].value);
        if (ops[s->m[i].op].regex)
            regfree(&s->m[i].re);
    }
    free(s->m);
    free(s->matchers_json);
    free(s->comment);
    free(s->created_by);
    free(s->expired_by);
    free(s);
}

/* Whether matcher m holds for value v. A regex must match the whole value:
 * POSIX matching is leftmost-longest, so a match of the whole string exists
 * exactly when the match found spans it. (Wrapping the text in ^(...)$
 * instead would let a value such as "a)|(.*" escape the anchors.) */
static int matcher_holds(const struct matcher *m, const char *v)
{
    int hit;
    if (ops[m->op].regex) {
        regmatch_t pm[1];
        hit = regexec(&m->re, v, 1, pm, 0) == 0 && pm[0].rm_so == 0 &&
              (size_t)pm[0].rm_eo == strlen(v);
    } else {
        hit = strcmp(m->value, v) == 0;
    }
    return hit != ops[m->op].negate;
}

static const char *label_of(const struct cb_transition *t, const char *name)
{
    for (size_t i = 0; i < t->nlabels; i++)
        if (!strcmp(t->labels[i].name, name))
            return t->labels[i].value;
    if (!strcmp(name, "rule"))
        return t->rule;
    if (!strcmp(name, "id"))
        return t->id;
    return "";
}

static int silence_matches(const struct alerts__silence *s, const struct cb_transition *t)
{
    for (size_t k = 0; k < s->nm; k++)
        if (!matcher_holds(&s->m[k], label_of(t, s->m[k].name)))
            return 0;
    return 1;
}

/* Compiles matcher number k (1-based, for messages) into m. Returns 0, or -1
 * with err saying what is wrong (m is then empty). */
static int matcher_init(struct matcher *m, size_t k, const struct cb_silence_matcher *in,
                        char *err, size_t errlen)
{
    memset(m, 0, sizeof *m);
    const char *op = in->op && *in->op ? in->op : "=";
    size_t o = 0;
    while (o < sizeof ops / sizeof ops[0] && strcmp(ops[o].text, op))
        o++;
    if (!in->name || !*in->name || !in->value) {
        snprintf(err, errlen, "matcher %zu: needs a \"name\" and a \"value\"", k);
        return -1;
    }
    if (o == sizeof ops / sizeof ops[0]) {
        snprintf(err, errlen, "matcher %zu: \"op\" must be =, !=, =~ or !~, not '%.32s'", k, op);
        return -1;
    }
    m->op = (enum match_op)o;
    if (ops[o].regex) {
        char why[160];
        if (cb_regex_compile(&m->re, in->value, REG_EXTENDED, why, sizeof why)) {
            snprintf(err, errlen, "matcher %zu: bad regular expression '%.80s': %s", k,
                     in->value, why);
            return -1;
        }
    }
    m->name = strdup(in->name);
    m->value = strdup(in->value);
    if (!m->name || !m->value) {
        free(m->name);
        free(m->value);
        if (ops[o].regex)
            regfree(&m->re);
        memset(m, 0, sizeof *m);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    return 0;
}

/* Appends the canonical matchers JSON: [{"name":N,"op":O,"value":V},...]. */
static void matchers_json(const struct cb_silence_matcher *m, size_t n, struct cb_strbuf *out)
{
    cb_strbuf_putc(out, '[');
    for (size_t i = 0; i < n; i++) {
        const char *op = m[i].op && *m[i].op ? m[i].op : "=";
        cb_strbuf_puts(out, i ? ",{\"name\":" : "{\"name\":");
        cb_strbuf_json_string(out, m[i].name, strlen(m[i].name));
        cb_strbuf_puts(out, ",\"op\":");
        cb_strbuf_json_string(out, op, strlen(op));
        cb_strbuf_puts(out, ",\"value\":");
        cb_strbuf_json_string(out, m[i].value, strlen(m[i].value));
        cb_strbuf_putc(out, '}');
    }
    cb_strbuf_putc(out, ']');
}

static int blank(const char *s)
{
    if (!s)
        return 1;
    while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r')
        s++;
    return *s == '\0';
}

int alerts__silence_new(const struct cb_silence_spec *spec, int64_t now,
                        struct alerts__silence **out, char *err, size_t errlen)
{
    struct alerts__silence *s = calloc(1, sizeof *s);
    struct cb_strbuf mj;
    cb_strbuf_init(&mj);
    *out = NULL;
    if (!s) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    if (!spec->nmatchers) {
        snprintf(err, errlen, "a silence needs at least one matcher");
        goto fail;
    }
    s->m = calloc(spec->nmatchers, sizeof *s->m);
    if (!s->m) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    for (; s->nm < spec->nmatchers; s->nm++)
        if (matcher_init(&s->m[s->nm], s->nm + 1, &spec->matchers[s->nm], err, errlen))
            goto fail;
    /* As Alertmanager: a silence whose every matcher matches the empty
     * string would hold the notifications of rules it does not name. */
    size_t k = 0;
    while (k < s->nm && matcher_holds(&s->m[k], ""))
        k++;
    if (k == s->nm) {
        snprintf(err, errlen, "every matcher also matches an empty or missing label, so the "
                              "silence would hold every alert; add one that names what to "
                              "silence (e.g. rule=~\".+\" to mean all rules)");
        goto fail;
    }
    if (blank(spec->created_by)) {
        snprintf(err, errlen, "\"created_by\" is required: who creates the silence");
        goto fail;
    }
    if (blank(spec->comment)) {
        snprintf(err, errlen, "\"comment\" is required: why the silence is needed");
        goto fail;
    }
    s->starts = spec->starts > now ? spec->starts : now; /* a past start counts from now */
    s->ends = spec->ends;
    if (s->ends <= now) {
        snprintf(err, errlen, "\"ends\" must be in the future");
        goto fail;
    }
    if (s->ends <= s->starts) {
        snprintf(err, errlen, "\"ends\" must be after \"starts\"");
        goto fail;
    }
    matchers_json(spec->matchers, spec->nmatchers, &mj);
    s->created_at = now;
    s->comment = strdup(spec->comment);
    s->created_by = strdup(spec->created_by);
    if (mj.oom || !s->comment || !s->created_by) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    s->matchers_json = mj.data;
    *out = s;
    return 0;
fail:
    cb_strbuf_free(&mj);
    alerts__silence_free(s);
    return -1;
}

/* Reads stored matchers JSON, including the forms older versions wrote
 * ({"name","value"} for equality, "regex":true for a regex), into an array
 * of matchers pointing into root. Returns the count, or 0 when unreadable. */
static size_t stored_matchers(const cJSON *root, struct cb_silence_matcher *m, size_t cap)
{
    size_t n = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, root)
    {
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(it, "name");
        const cJSON *value = cJSON_GetObjectItemCaseSensitive(it, "value");
        const cJSON *op = cJSON_GetObjectItemCaseSensitive(it, "op");
        if (n == cap || !cJSON_IsString(name) || !cJSON_IsString(value))
            return 0;
        m[n].name = name->valuestring;
        m[n].value = value->valuestring;
        m[n].op = cJSON_IsString(op) ? op->valuestring
                  : cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(it, "regex")) ? "=~"
                                                                                 : "=";
        n++;
    }
    return n;
}

int alerts__silence_load(const struct cb_silence_row *r, struct alerts__silence **out, char *err,
                         size_t errlen)
{
    *out = NULL;
    cJSON *root = cJSON_Parse(r->matchers ? r->matchers : "");
    int n = cJSON_GetArraySize(root);
    struct cb_silence_matcher *m = calloc(n > 0 ? (size_t)n : 1, sizeof *m);
    struct alerts__silence *s = NULL;
    int rc = -1;
    if (!m) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    /* Validated as at its creation, so one that has ended since (it is still
     * listed as expired) passes too; its stored start is kept as it is. */
    int64_t then = r->created_at < r->ends ? r->created_at : r->ends - 1;
    struct cb_silence_spec spec = {
        .matchers = m, .nmatchers = n > 0 ? stored_matchers(root, m, (size_t)n) : 0,
        .starts = then, .ends = r->ends, .comment = r->comment ? r->comment : "-",
        .created_by = r->created_by ? r->created_by : "-",
    };
    if (!spec.nmatchers) {
        snprintf(err, errlen, "unreadable matchers");
        goto out;
    }
    if (alerts__silence_new(&spec, then, &s, err, errlen))
        goto out;
    s->id = r->id;
    s->starts = r->starts;
    s->created_at = r->created_at;
    s->expired_at = r->expired_at;
    if (r->expired_by && !(s->expired_by = strdup(r->expired_by))) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    *out = s;
    s = NULL;
    rc = 0;
out:
    alerts__silence_free(s);
    free(m);
    cJSON_Delete(root);
    return rc;
}

void alerts__silence_row(const struct alerts__silence *s, struct cb_silence_row *out)
{
    *out = (struct cb_silence_row){
        .id = s->id, .matchers = s->matchers_json, .starts = s->starts, .ends = s->ends,
        .comment = s->comment, .created_by = s->created_by, .created_at = s->created_at,
        .expired_at = s->expired_at, .expired_by = s->expired_by,
    };
}

void alerts__silence_set_id(struct alerts__silence *s, int64_t id) { s->id = id; }

int alerts__silence_end(struct alerts__silence *s, int64_t now, const char *by)
{
    if (s->ends <= now)
        return 1;
    char *copy = strdup(by);
    if (!copy)
        return -1;
    free(s->expired_by);
    s->expired_by = copy;
    s->expired_at = now;
    s->ends = now;
    if (s->starts > now) /* a scheduled one never started */
        s->starts = now;
    return 0;
}

/* ---- the set ---- */

int alerts__silences_push(struct alerts__silences *set, struct alerts__silence *s)
{
    if (set->n == set->cap) {
        size_t cap = set->cap ? set->cap * 2 : 8;
        struct alerts__silence **v = realloc(set->v, cap * sizeof *v);
        if (!v)
            return -1;
        set->v = v;
        set->cap = cap;
    }
    set->v[set->n++] = s;
    return 0;
}

struct alerts__silence *alerts__silences_find(const struct alerts__silences *set, int64_t id)
{
    for (size_t i = 0; i < set->n; i++)
        if (set->v[i]->id == id)
            return set->v[i];
    return NULL;
}

int64_t alerts__silenced_by(const struct alerts__silences *set, const struct cb_transition *t,
                            int64_t now)
{
    for (size_t i = 0; i < set->n; i++) {
        const struct alerts__silence *s = set->v[i];
        if (now >= s->starts && now < s->ends && silence_matches(s, t))
            return s->id;
    }
    return 0;
}

void alerts__silences_sweep(struct alerts__silences *set, int64_t before)
{
    size_t k = 0;
    for (size_t i = 0; i < set->n; i++) {
        if (set->v[i]->ends <= before)
            alerts__silence_free(set->v[i]);
        else
            set->v[k++] = set->v[i];
    }
    set->n = k;
}

void alerts__silences_free(struct alerts__silences *set)
{
    for (size_t i = 0; i < set->n; i++)
        alerts__silence_free(set->v[i]);
    free(set->v);
    memset(set, 0, sizeof *set);
}

/* ---- JSON ---- */

const char *cb_alerts_silence_state(const struct cb_silence_row *r, int64_t now)
{
    return now >= r->ends ? "expired" : now < r->starts ? "scheduled" : "active";
}

void cb_alerts_silence_row_json(const struct cb_silence_row *r, int64_t now,
                                struct cb_strbuf *out)
{
    cb_strbuf_printf(out, "{\"id\":%lld,\"state\":\"%s\",\"matchers\":", (long long)r->id,
                     cb_alerts_silence_state(r, now));
    /* stored by an older version: shown in today's form */
    cJSON *root = cJSON_Parse(r->matchers ? r->matchers : "");
    int n = cJSON_GetArraySize(root);
    struct cb_silence_matcher *m = n > 0 ? calloc((size_t)n, sizeof *m) : NULL;
    size_t k = m ? stored_matchers(root, m, (size_t)n) : 0;
    if (k)
        matchers_json(m, k, out);
    else
        cb_strbuf_puts(out, "[]");
    free(m);
    cJSON_Delete(root);
    cb_strbuf_printf(out, ",\"starts\":%lld,\"ends\":%lld,\"comment\":", (long long)r->starts,
                     (long long)r->ends);
    cb_strbuf_json_string_or_null(out, r->comment);
    cb_strbuf_puts(out, ",\"created_by\":");
    cb_strbuf_json_string_or_null(out, r->created_by);
    cb_strbuf_printf(out, ",\"created_at\":%lld,\"expired_by\":", (long long)r->created_at);
    cb_strbuf_json_string_or_null(out, r->expired_by);
    cb_strbuf_puts(out, ",\"expired_at\":");
    if (r->expired_at)
        cb_strbuf_printf(out, "%lld}", (long long)r->expired_at);
    else
        cb_strbuf_puts(out, "null}");
}
